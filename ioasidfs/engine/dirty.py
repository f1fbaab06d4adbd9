"""Dirty-page bitmaps of type1 (vfio_iommu_type1.c: verify_bitmap_size, update_user_bitmap).

A user bitmap is an array of little-endian u64 words; bit i stands for the page at
``base_iova + i * pgsize``. The kernel fills it one mapping at a time from the mapping's own
bitmap (an ``unsigned long`` array with one spare word), and the way it does so is visible:

* A mapping that starts inside a word is shifted into place, and the caller's whole first word
  is read back and ORed in, so bits the caller had there survive -- and also stay in the
  mapping's bitmap, which is cleared afterwards only over the mapping's own length. They come
  back in later reports at other offsets.
* Whole words are written, from the mapping's first word to its last.

Which pages are dirty is decided before a report (type1.py): the pages devices wrote or pinned
(the translation table records them, ``TranslationTable.read_dirty``) are ORed into the
mapping's bitmap, and while some attached group's devices sit behind a real IOMMU and so may
write any page unseen (``num_non_pinned_groups``), every page of every mapping is reported
dirty (``all_dirty``). The per-mapping bitmap is a Python int here; the word operations below
reproduce the kernel's on it exactly, stale bits included.
"""
from __future__ import annotations

import errno

from ..errors import KernelError
from .caller import PAGE_SIZE, Caller
from .mappings import DmaMapping

U64_MASK = (1 << 64) - 1
BITS_PER_WORD = 64
DIRTY_BITMAP_PAGES_MAX = (1 << 31) - 1
"""bitmap_set() takes an int count: a mapping may have at most INT_MAX pages to be tracked."""
USER_ADDRESS_LIMIT = (1 << 47) - PAGE_SIZE
"""x86-64 TASK_SIZE_MAX with 4-level paging: access_ok() rejects ranges ending above it."""


def dirty_bitmap_bytes(npages: int) -> int:
    """DIRTY_BITMAP_BYTES: whole u64 words, in u64 arithmetic as the macro computes it."""
    return ((npages + BITS_PER_WORD - 1) & U64_MASK & ~(BITS_PER_WORD - 1)) // 8


DIRTY_BITMAP_SIZE_MAX = dirty_bitmap_bytes(DIRTY_BITMAP_PAGES_MAX)
"""0x10000000: the largest user bitmap accepted, also reported as max_dirty_bitmap_size."""


def lowest_bit_shift(value: int) -> int:
    """__ffs(value); for 0 (undefined in C) the x86 TZCNT answer, 64."""
    return (value & -value).bit_length() - 1 if value else 64


def pages_in(size: int, pgsize: int) -> int:
    """``size >> __ffs(pgsize)`` as x86 computes it (the shift count is taken modulo 64)."""
    return size >> (lowest_bit_shift(pgsize) & 63)


def access_ok(addr: int, size: int) -> bool:
    """x86-64 access_ok(): the range neither wraps nor ends above the user address space."""
    end = addr + size
    return end <= U64_MASK and end <= USER_ADDRESS_LIMIT


def verify_bitmap_size(npages: int, bitmap_size: int) -> None:
    """EINVAL unless a bitmap of ``bitmap_size`` bytes is non-empty, at most the maximum and
    large enough for ``npages`` pages."""
    if (not npages or not bitmap_size or bitmap_size > DIRTY_BITMAP_SIZE_MAX
            or bitmap_size < dirty_bitmap_bytes(npages)):
        raise KernelError(errno.EINVAL, f"a {bitmap_size}-byte bitmap cannot hold {npages} pages")


def update_user_bitmap(caller: Caller, bitmap_addr: int, mapping: DmaMapping, base_iova: int,
                       pgshift: int, *, all_dirty: bool) -> None:
    """Report ``mapping``'s pages into the user bitmap at ``bitmap_addr`` (base ``base_iova``).

    Follows update_user_bitmap step by step, including the state the mapping's bitmap is left
    in when copying from or to the user faults (EFAULT).
    """
    assert mapping.dirty_bitmap is not None, "dirty tracking is off"
    nbits = mapping.size >> pgshift
    bit_offset = (mapping.iova - base_iova) >> pgshift
    word_addr = (bitmap_addr + 8 * (bit_offset // BITS_PER_WORD)) & U64_MASK
    shift = bit_offset % BITS_PER_WORD
    bitmap = mapping.dirty_bitmap
    if all_dirty:
        # A device behind a real IOMMU may have written anywhere: every page is dirty.
        bitmap |= (1 << nbits) - 1
    nbytes = dirty_bitmap_bytes(nbits + shift)
    if shift:
        # bitmap_shift_left over the words covering nbits + shift bits; higher words keep
        # whatever they held, the bits shifted out of the top word are lost.
        covered = (1 << (8 * nbytes)) - 1
        bitmap = (bitmap & ~covered) | ((bitmap << shift) & covered)
        mapping.dirty_bitmap = bitmap
        leftover = int.from_bytes(caller.memory.read(word_addr, 8), "little")
        bitmap |= leftover  # bitmap_or over ceil(shift / 64) = 1 whole word
    mapping.dirty_bitmap = bitmap
    caller.memory.write(word_addr, (bitmap & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"))


def clear_reported(mapping: DmaMapping, pgshift: int) -> None:
    """bitmap_clear(bitmap, 0, npages) after a report: only the mapping's own length."""
    assert mapping.dirty_bitmap is not None
    mapping.dirty_bitmap &= ~((1 << (mapping.size >> pgshift)) - 1)
