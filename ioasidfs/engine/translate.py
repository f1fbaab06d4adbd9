"""The translation structure of one I/O address space: IOVA -> (owner, vaddr, prot).

This is what an IOMMU consults on every device access, and what the emulated devices' DMA
(``ioasidfs.devices.dma``) goes through. It knows nothing of type1 or iommufd rules (which unmaps
are legal, apertures, entry limits, locked-memory accounting): those stay in the engine, which
keeps one table per container or IOAS and asks it only structural questions. Everything here is
pure and synchronous.

Two implementations of one interface (:class:`TranslationTable`):

* :class:`CTranslationTable` -- cext/iova_table.c through cffi: a treap of non-overlapping
  entries (O(log n) map, unmap, lookup; a 1 GiB map or unmap is one tree operation, no per-page
  work) plus a flat sorted index built after enough lookups without a change, so lookup-heavy
  phases binary-search contiguous arrays.
* :class:`PyTranslationTable` -- the reference: sorted lists and ``bisect``. It is the semantics;
  hypothesis tests drive both with the same random operations and require identical answers. It
  also is the fallback when the extension was not built (see :data:`BACKEND`).

:func:`new_table` picks C when it is importable, unless ``IOASIDFS_PURE_PYTHON=1``.

Semantics shared by both (all addresses are unsigned 64-bit; lengths are in bytes):

* ``map`` adds an entry; its IOVA and length are multiples of the page size; it must not overlap
  an existing entry (EEXIST). Adjacent entries stay separate entries (as ``struct vfio_dma`` do).
* ``unmap(iova, length)`` removes exactly the mapped bytes of the range -- an entry straddling an
  end is split, the outside part stays mapped -- and returns the removed pieces. Whether a
  partial unmap is *allowed* is the caller's rule (type1 v2 and iommufd refuse it; check with
  ``mappings`` first).
* ``translate`` returns the segments covering a range, merged where consecutive pieces have the
  same owner and contiguous vaddrs, or the first faulting IOVA and why.
* Dirty tracking follows drivers/vfio/vfio_iommu_type1.c; see :meth:`TranslationTable.read_dirty`.

Errors are :class:`~ioasidfs.errors.KernelError` with the errno the kernel uses for the same
condition (EINVAL for malformed ranges, EEXIST for overlap, EPERM for a pin without permission).
"""
from __future__ import annotations

import array
import enum
import errno
import importlib
import logging
import os
from typing import Any, NamedTuple, Protocol, Sequence

from ..errors import KernelError
from .caller import ProcessKey
from .intervals import IntervalBlocks

log = logging.getLogger("ioasidfs.engine")

PROT_READ = 1
"""The device may read the memory (VFIO_DMA_MAP_FLAG_READ, IOMMU_IOAS_MAP_READABLE)."""
PROT_WRITE = 2
"""The device may write the memory (VFIO_DMA_MAP_FLAG_WRITE, IOMMU_IOAS_MAP_WRITEABLE)."""
ACCESS_READ = PROT_READ
"""A device read of memory: needs PROT_READ."""
ACCESS_WRITE = PROT_WRITE
"""A device write to memory: needs PROT_WRITE."""

DEFAULT_PAGE_SIZE = 4096
DIRTY_PAGES_MAX = (1 << 31) - 1
"""The kernel's DIRTY_BITMAP_PAGES_MAX (INT_MAX): the most pages one mapping may have while dirty
tracking is on, and the most pages one bitmap query may cover."""

_U64 = 1 << 64
_U64_MAX = _U64 - 1
_PROT_ALL = PROT_READ | PROT_WRITE


class FaultReason(enum.Enum):
    """Why an access was blocked. Translation yields the first two; the DMA layer adds the others."""

    NOT_MAPPED = "not-mapped"
    """No mapping covers the IOVA (a real IOMMU: no PTE -> DMA remapping fault)."""
    NO_PERMISSION = "no-permission"
    """Mapped, but without the permission the access needs (read-only page written...)."""
    OWNER_EXITED = "owner-exited"
    """The process whose memory backs the mapping has exited."""
    OWNER_MEMORY = "owner-memory"
    """The backing virtual memory is no longer accessible in the owner (unmapped, protected)."""


class Segment(NamedTuple):
    """``length`` bytes of ``owner``'s memory at ``vaddr``: one piece of a translated range."""

    owner: int
    vaddr: int
    length: int


class Fault(NamedTuple):
    """A translation that failed: the first IOVA of the range that may not be accessed, and why."""

    iova: int
    reason: FaultReason


class Lookup(NamedTuple):
    """Where one mapped IOVA goes: its owner, the virtual address of that byte, the prot bits."""

    owner: int
    vaddr: int
    prot: int


class Mapping(NamedTuple):
    """One entry (or, from ``unmap``, the removed piece of one)."""

    iova: int
    length: int
    vaddr: int
    prot: int
    owner: int

    @property
    def end(self) -> int:
        """One past the last IOVA byte."""
        return self.iova + self.length


class TranslationTable(Protocol):
    """The interface both implementations provide. ``owner`` is an opaque u64 chosen by the
    caller (an index into its own table of processes); the table only stores and returns it.

    Tables are meant to be used by one thread at a time (the daemon's engine lock serialises
    them); the C implementation also locks internally, so misuse cannot corrupt its memory.
    """

    @property
    def page_size(self) -> int: ...

    @property
    def dirty_page_size(self) -> int:
        """What dirty bits and pins count in: the page size, or (an iommufd IOAS, which maps
        bytes but tracks IOMMU pages) a multiple of it. While tracking is on, every entry is
        aligned to it: a map or an unmap cut finer than that is EINVAL."""
        ...

    def __len__(self) -> int: ...

    def map(self, iova: int, length: int, vaddr: int, prot: int, owner: int) -> None:
        """Add ``[iova, iova+length)`` -> ``vaddr``. EINVAL: length 0, IOVA or length not a multiple
        of the page size, a range or vaddr range past 2^64, prot outside READ|WRITE, owner not a
        u64, or (while dirty tracking) more than DIRTY_PAGES_MAX pages. EEXIST: overlap."""
        ...

    def unmap(self, iova: int, length: int) -> list[Mapping]:
        """Remove every mapped byte of the range (page-aligned, non-empty: else EINVAL); entries
        straddling its ends are split. Returns the removed pieces, ascending; pins and dirty
        bits of the range go with them."""
        ...

    def mappings(self, iova: int = 0, length: int = _U64) -> list[Mapping]:
        """The whole entries sharing a byte with the range, ascending (nothing changes)."""
        ...

    def lookup(self, iova: int) -> Lookup | None:
        """Where ``iova`` goes, or None when it is not mapped."""
        ...

    def count_mapped(self, iovas: Sequence[int]) -> int:
        """How many of ``iovas`` are mapped: many lookups in one call (one crossing into C, where
        independent searches are interleaved). An ``array('Q')`` is read in place."""
        ...

    def lookup_into(self, iovas: array.array[int], owners: array.array[int],
                    vaddrs: array.array[int], prots: array.array[int]) -> int:
        """Full lookups of many IOVAs in one call, results in place: for each i, ``owners[i]``,
        ``vaddrs[i]``, ``prots[i]`` of ``iovas[i]``, or 0, 0, -1 when it is not mapped. Arrays of
        typecode 'Q' (iovas, owners, vaddrs) and 'b' (prots), the outputs at least as long as
        ``iovas`` (else ValueError). Returns how many were mapped. What a device model walking
        a descriptor ring or scatter list of many IOVAs uses: one crossing into C for all."""
        ...

    def translate(self, iova: int, length: int, access: int) -> list[Segment] | Fault:
        """The segments covering ``[iova, iova+length)`` for an access needing ``access``
        (ACCESS_READ / ACCESS_WRITE bits), or the first faulting IOVA. Byte granular; length 0
        gives ``[]``; a range past 2^64 is EINVAL."""
        ...

    @property
    def dirty_tracking(self) -> bool: ...

    def start_dirty_tracking(self) -> None:
        """VFIO_IOMMU_DIRTY_PAGES_FLAG_START: no-op when already on; otherwise every entry gets a
        clean bitmap with its pinned pages set. EINVAL if an entry has more than DIRTY_PAGES_MAX
        pages (vfio_dma_bitmap_alloc)."""
        ...

    def stop_dirty_tracking(self) -> None:
        """VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP: every dirty bit is dropped."""
        ...

    def mark_dirty(self, iova: int, length: int) -> None:
        """A device wrote these bytes: mark every mapped page they touch (vfio_dma_rw's rule:
        pages from ``iova`` to ``iova+length-1`` inclusive). No-op while tracking is off."""
        ...

    def read_dirty(self, iova: int, length: int, *, clear: bool = True,
                   all_mapped: bool = False) -> bytes:
        """The dirty bitmap of a page-aligned range: bit i (of little-endian u64 words) is the page
        at ``iova + i*page_size``; unmapped pages read 0.

        The kernel's rules (vfio_iova_dirty_bitmap / update_user_bitmap):

        * a page is dirty if a device wrote it (:meth:`mark_dirty`) or it was pinned
          (:meth:`pin`) since tracking started or since the last clearing read;
        * with ``all_mapped`` every mapped page is reported: type1 does this when some group's
          devices cannot report dirty pages (``num_non_pinned_groups``) and the mapping is pinned
          and mapped into an IOMMU domain (``iommu_mapped``) -- the caller decides that;
        * with ``clear`` the range's bits are reset to exactly its currently pinned pages, so a
          page still pinned stays dirty for the next read, an unpinned one does not.

        EINVAL: tracking off, a misaligned or empty range, more than DIRTY_PAGES_MAX pages.
        Bitmaps of partial mappings are allowed here; type1's "must not bisect a mapping" rule
        and the merging into the user's buffer are the caller's.
        """
        ...

    def pin(self, iova: int, length: int, access: int) -> None:
        """vfio_pin_pages: take one pin on every page of the range. Every page must be mapped
        (EINVAL) with ``access`` (EPERM), checked in address order; on error nothing is pinned.
        While tracking, the pinned pages become dirty."""
        ...

    def unpin(self, iova: int, length: int) -> None:
        """Drop one pin of every pinned page of the range; unpinned pages are ignored."""
        ...

    def pin_count(self, iova: int) -> int:
        """Pins held on the page containing ``iova``."""
        ...


# --------------------------------------------------------------------------- argument checks
# One set of checks for both implementations, so their errors agree by construction.

def _check_page_size(page_size: int) -> None:
    if page_size <= 0 or page_size & (page_size - 1) or page_size >= _U64:
        raise ValueError(f"page size {page_size} is not a power of two below 2^64")


def _dirty_unit(page_size: int, dirty_page_size: int | None) -> int:
    """The dirty page size: the page size unless given; a power of two, at least the page
    size (ValueError otherwise)."""
    _check_page_size(page_size)
    unit = page_size if dirty_page_size is None else dirty_page_size
    _check_page_size(unit)
    if unit < page_size:
        raise ValueError(f"dirty page size {unit} is below the page size {page_size}")
    return unit


def _tracking_alignment(iova: int, length: int, unit: int, what: str) -> None:
    """While tracking, entries stay aligned to the dirty page size (one bit per dirty page
    cannot be split between two entries): EINVAL otherwise."""
    if (iova | length) & (unit - 1):
        raise KernelError(errno.EINVAL, f"{what}: [{iova:#x}, +{length:#x}) is not aligned to the "
                                        f"{unit:#x}-byte dirty page while dirty tracking is on")


def _aligned_span(iova: int, length: int, page_size: int, what: str) -> int:
    """The last byte of a non-empty, page-aligned range inside the u64 space (else EINVAL)."""
    if length <= 0 or iova < 0 or iova + length > _U64:
        raise KernelError(errno.EINVAL, f"{what}: [{iova:#x}, +{length:#x}) is empty or not in the "
                                        "64-bit IOVA space")
    if (iova | length) & (page_size - 1):
        raise KernelError(errno.EINVAL, f"{what}: {iova:#x}+{length:#x} is not aligned to the "
                                        f"{page_size:#x}-byte page")
    return iova + length - 1


def _byte_span(iova: int, length: int, what: str) -> int:
    """The last byte of a range inside the u64 space; -1 for an empty one (else EINVAL)."""
    if length < 0 or iova < 0 or iova + length > _U64 or (length == 0 and iova >= _U64):
        raise KernelError(errno.EINVAL, f"{what}: [{iova:#x}, +{length:#x}) is not in the 64-bit "
                                        "IOVA space")
    return iova + length - 1


def _check_map(iova: int, length: int, vaddr: int, prot: int, owner: int, page_size: int) -> int:
    last = _aligned_span(iova, length, page_size, "map")
    if vaddr < 0 or vaddr + length > _U64:
        raise KernelError(errno.EINVAL, f"map: vaddr range {vaddr:#x}+{length:#x} wraps")
    if prot < 0 or prot & ~_PROT_ALL:
        raise KernelError(errno.EINVAL, f"map: prot {prot:#x} is not READ|WRITE")
    if owner < 0 or owner >= _U64:
        raise KernelError(errno.EINVAL, f"map: owner {owner} is not a u64")
    return last


def _check_access(access: int, what: str) -> None:
    if access < 0 or access & ~_PROT_ALL:
        raise KernelError(errno.EINVAL, f"{what}: access {access:#x} is not READ|WRITE")


def _check_lookup_arrays(iovas: array.array[int], owners: array.array[int],
                         vaddrs: array.array[int], prots: array.array[int]) -> None:
    for name, arr, code in (("iovas", iovas, "Q"), ("owners", owners, "Q"),
                            ("vaddrs", vaddrs, "Q"), ("prots", prots, "b")):
        if not isinstance(arr, array.array) or arr.typecode != code:
            raise ValueError(f"lookup_into: {name} must be an array('{code}')")
        if len(arr) < len(iovas):
            raise ValueError(f"lookup_into: {name} holds {len(arr)} items, {len(iovas)} needed")


def _bitmap_pages(iova: int, length: int, page_size: int) -> int:
    _aligned_span(iova, length, page_size, "dirty bitmap")
    pages = length // page_size
    if pages > DIRTY_PAGES_MAX:
        raise KernelError(errno.EINVAL, f"dirty bitmap of {pages} pages exceeds {DIRTY_PAGES_MAX}")
    return pages


# --------------------------------------------------------------------------- pure Python

class _Entry:
    """One mapping of the reference implementation; ``dirty`` is its bitmap (bit i = page i)
    while tracking is on."""

    __slots__ = ("iova", "last", "vaddr", "prot", "owner", "dirty")

    def __init__(self, iova: int, last: int, vaddr: int, prot: int, owner: int,
                 dirty: int | None) -> None:
        self.iova = iova
        self.last = last
        self.vaddr = vaddr
        self.prot = prot
        self.owner = owner
        self.dirty = dirty

    def mapping(self) -> Mapping:
        return Mapping(self.iova, self.last - self.iova + 1, self.vaddr, self.prot, self.owner)


def _entry_iova(e: _Entry) -> int:
    return e.iova


def _entry_last(e: _Entry) -> int:
    return e.last


class PyTranslationTable:
    """The reference implementation: entries in the engine's sorted-interval structure
    (:class:`~.intervals.IntervalBlocks`: sorted blocks, found with ``bisect``). Lookups are
    O(log n); a map, split or unmap moves at most one block's worth of pointers, so a map at the
    bottom of 60k entries costs about what it costs in an empty table.
    """

    def __init__(self, page_size: int = DEFAULT_PAGE_SIZE,
                 dirty_page_size: int | None = None) -> None:
        self._dirty_page_size = _dirty_unit(page_size, dirty_page_size)
        self._page_size = page_size
        self._shift = self._dirty_page_size.bit_length() - 1   # dirty pages and pins
        self._tree: IntervalBlocks[_Entry] = IntervalBlocks(_entry_iova, _entry_last)
        self._find = self._tree.containing
        self._overlapping = self._tree.overlapping
        self._tracking = False
        self._pins: dict[int, int] = {}   # page number -> count

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def dirty_page_size(self) -> int:
        return self._dirty_page_size

    def __len__(self) -> int:
        return len(self._tree)

    def _entries(self) -> list[_Entry]:
        """Every entry, ascending (a snapshot)."""
        return self._tree.items()

    def _npages(self, e: _Entry) -> int:
        return ((e.last - e.iova) >> self._shift) + 1

    def map(self, iova: int, length: int, vaddr: int, prot: int, owner: int) -> None:
        last = _check_map(iova, length, vaddr, prot, owner, self._page_size)
        if self._tree.first_overlapping(iova, last) is not None:
            raise KernelError(errno.EEXIST, f"map: [{iova:#x}, {last:#x}] overlaps a mapping")
        dirty = None
        if self._tracking:
            if length >> self._shift > DIRTY_PAGES_MAX:
                raise KernelError(errno.EINVAL, "map: too many pages for a dirty bitmap")
            _tracking_alignment(iova, length, self._dirty_page_size, "map")
            dirty = 0
        self._tree.insert(_Entry(iova, last, vaddr, prot, owner, dirty))

    def _cut(self, x: int) -> None:
        """Split the entry containing x so that a piece starts exactly at x."""
        e = self._find(x)
        if e is None or e.iova == x:
            return
        off = (x - e.iova) >> self._shift
        dirty = None
        if e.dirty is not None:
            dirty = e.dirty >> off
            e.dirty &= (1 << off) - 1
        piece = _Entry(x, e.last, e.vaddr + (x - e.iova), e.prot, e.owner, dirty)
        e.last = x - 1
        self._tree.insert(piece)

    def unmap(self, iova: int, length: int) -> list[Mapping]:
        last = _aligned_span(iova, length, self._page_size, "unmap")
        if self._tree.first_overlapping(iova, last) is None:
            return []
        if self._tracking:
            for x in (iova, last + 1):
                e = self._find(x) if x <= _U64_MAX else None
                if e is not None and e.iova != x:
                    _tracking_alignment(x, 0, self._dirty_page_size, "unmap")
        self._cut(iova)
        if last < _U64_MAX:
            self._cut(last + 1)
        removed = [e.mapping() for e in self._tree.remove_overlapping(iova, last)]
        p0, p1 = iova >> self._shift, last >> self._shift
        for page in [p for p in self._pins if p0 <= p <= p1]:
            del self._pins[page]
        return removed

    def mappings(self, iova: int = 0, length: int = _U64) -> list[Mapping]:
        last = _byte_span(iova, length, "mappings")
        if length == 0:
            return []
        return [e.mapping() for e in self._overlapping(iova, last)]

    def lookup(self, iova: int) -> Lookup | None:
        e = self._find(iova)
        if e is None:
            return None
        return Lookup(e.owner, e.vaddr + (iova - e.iova), e.prot)

    def count_mapped(self, iovas: Sequence[int]) -> int:
        find = self._find
        return sum(1 for iova in iovas if find(iova) is not None)

    def lookup_into(self, iovas: array.array[int], owners: array.array[int],
                    vaddrs: array.array[int], prots: array.array[int]) -> int:
        _check_lookup_arrays(iovas, owners, vaddrs, prots)
        find = self._find
        found = 0
        for i, iova in enumerate(iovas):
            e = find(iova)
            if e is None:
                owners[i] = vaddrs[i] = 0
                prots[i] = -1
            else:
                owners[i], vaddrs[i], prots[i] = e.owner, e.vaddr + (iova - e.iova), e.prot
                found += 1
        return found

    def translate(self, iova: int, length: int, access: int) -> list[Segment] | Fault:
        last = _byte_span(iova, length, "translate")
        _check_access(access, "translate")
        segments: list[Segment] = []
        cursor = iova
        while cursor <= last:
            e = self._find(cursor)
            if e is None:
                return Fault(cursor, FaultReason.NOT_MAPPED)
            if e.prot & access != access:
                return Fault(cursor, FaultReason.NO_PERMISSION)
            end = min(e.last, last)
            vaddr = e.vaddr + (cursor - e.iova)
            if segments:
                prev = segments[-1]
                if prev.owner == e.owner and prev.vaddr + prev.length == vaddr:
                    segments[-1] = Segment(prev.owner, prev.vaddr, prev.length + end - cursor + 1)
                    cursor = end + 1
                    continue
            segments.append(Segment(e.owner, vaddr, end - cursor + 1))
            cursor = end + 1
        return segments

    @property
    def dirty_tracking(self) -> bool:
        return self._tracking

    def start_dirty_tracking(self) -> None:
        if self._tracking:
            return
        unit = self._dirty_page_size
        if any(self._npages(e) > DIRTY_PAGES_MAX or (e.iova | (e.last + 1)) & (unit - 1)
               for e in self._entries()):
            raise KernelError(errno.EINVAL, "a mapping has too many pages for a dirty bitmap, or "
                                            "is not aligned to the dirty page size")
        for e in self._entries():
            e.dirty = 0
            self._populate(e, e.iova, e.last)
        self._tracking = True

    def stop_dirty_tracking(self) -> None:
        for e in self._entries():
            e.dirty = None
        self._tracking = False

    def _set_pages(self, e: _Entry, s: int, end: int) -> None:
        """Set the bits of the pages of [s, end] (inside e) in e's bitmap."""
        p0 = (s - e.iova) >> self._shift
        p1 = (end - e.iova) >> self._shift
        assert e.dirty is not None
        e.dirty |= ((1 << (p1 - p0 + 1)) - 1) << p0

    def _populate(self, e: _Entry, s: int, end: int) -> None:
        p0, p1 = s >> self._shift, end >> self._shift
        assert e.dirty is not None
        for page in self._pins:
            if p0 <= page <= p1:
                e.dirty |= 1 << (page - (e.iova >> self._shift))

    def _walk(self, iova: int, last: int) -> list[tuple[_Entry, int, int]]:
        """(entry, first byte, last byte) of every piece of [iova, last] that is mapped."""
        return [(e, max(e.iova, iova), min(e.last, last)) for e in self._overlapping(iova, last)]

    def mark_dirty(self, iova: int, length: int) -> None:
        last = _byte_span(iova, length, "mark_dirty")
        if not self._tracking or length == 0:
            return
        for e, s, end in self._walk(iova, last):
            self._set_pages(e, s, end)

    def read_dirty(self, iova: int, length: int, *, clear: bool = True,
                   all_mapped: bool = False) -> bytes:
        if not self._tracking:
            raise KernelError(errno.EINVAL, "dirty bitmap requested while tracking is off")
        pages = _bitmap_pages(iova, length, self._dirty_page_size)
        last = iova + length - 1
        bits = 0
        for e, s, end in self._walk(iova, last):
            src = (s - e.iova) >> self._shift
            cnt = ((end - s) >> self._shift) + 1
            dst = (s - iova) >> self._shift
            mask = (1 << cnt) - 1
            assert e.dirty is not None
            piece = mask if all_mapped else (e.dirty >> src) & mask
            bits |= piece << dst
            if clear:
                e.dirty &= ~(mask << src)
                self._populate(e, s, end)
        return bits.to_bytes(8 * ((pages + 63) // 64), "little")

    def pin(self, iova: int, length: int, access: int) -> None:
        last = _aligned_span(iova, length, self._dirty_page_size, "pin")
        _check_access(access, "pin")
        cursor = iova
        while True:
            e = self._find(cursor)
            if e is None:
                raise KernelError(errno.EINVAL, f"pin: {cursor:#x} is not mapped")
            if e.prot & access != access:
                raise KernelError(errno.EPERM, f"pin: {cursor:#x} is not mapped for {access:#x}")
            if e.last >= last:
                break
            cursor = e.last + 1
        for page in range(iova >> self._shift, (last >> self._shift) + 1):
            self._pins[page] = self._pins.get(page, 0) + 1
        if self._tracking:
            for e, s, end in self._walk(iova, last):
                self._set_pages(e, s, end)

    def unpin(self, iova: int, length: int) -> None:
        last = _aligned_span(iova, length, self._dirty_page_size, "unpin")
        p0, p1 = iova >> self._shift, last >> self._shift
        for page in [p for p in self._pins if p0 <= p <= p1]:
            if self._pins[page] == 1:
                del self._pins[page]
            else:
                self._pins[page] -= 1

    def pin_count(self, iova: int) -> int:
        return self._pins.get(iova >> self._shift, 0)


# --------------------------------------------------------------------------- C (cffi)

_FAULT_REASONS = {1: FaultReason.NOT_MAPPED, 2: FaultReason.NO_PERMISSION}
_TRANSLATE_FAULT = -1000


def _raise_errno(ret: int, what: str) -> None:
    err = -ret
    raise KernelError(err, f"{what}: {os.strerror(err)}")


class CTranslationTable:
    """The same interface over cext/iova_table.c. Arguments are checked here with the reference
    implementation's checks (so errors agree by construction); the C side re-checks them anyway.
    Output buffers are kept per table and grown on demand; the C call reports how many items it
    needs and changes nothing when the buffer is too small."""

    def __init__(self, page_size: int = DEFAULT_PAGE_SIZE,
                 dirty_page_size: int | None = None) -> None:
        if _C is None:
            raise RuntimeError("the C translation extension is not available")
        self._dirty_page_size = _dirty_unit(page_size, dirty_page_size)
        self._ffi: Any = _C.ffi
        self._lib: Any = _C.lib
        table = self._lib.iova_table_new(page_size, self._dirty_page_size)
        if table == self._ffi.NULL:
            raise MemoryError("iova_table_new")
        self._t: Any = self._ffi.gc(table, self._lib.iova_table_free)
        self._page_size = page_size
        self._hit: Any = self._ffi.new("struct iova_hit *")
        self._fault: Any = self._ffi.new("struct iova_fault *")
        self._segs: Any = self._ffi.new("struct iova_segment[]", 16)
        self._maps: Any = self._ffi.new("struct iova_mapping[]", 16)

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def dirty_page_size(self) -> int:
        return self._dirty_page_size

    def __len__(self) -> int:
        return int(self._lib.iova_table_count(self._t))

    def map(self, iova: int, length: int, vaddr: int, prot: int, owner: int) -> None:
        last = _check_map(iova, length, vaddr, prot, owner, self._page_size)
        ret = self._lib.iova_table_map(self._t, iova, last, vaddr, prot, owner)
        if ret:
            if ret == -errno.EEXIST:
                raise KernelError(errno.EEXIST, f"map: [{iova:#x}, {last:#x}] overlaps a mapping")
            if ret == -errno.EINVAL:
                raise KernelError(errno.EINVAL, "map: too many pages for a dirty bitmap, or not "
                                                "aligned to the dirty page size while tracking")
            _raise_errno(ret, "map")

    def _mapping_list(self, fn: Any, iova: int, last: int, what: str) -> list[Mapping]:
        buf = self._maps
        while True:
            n = int(fn(self._t, iova, last, buf, len(buf)))
            if n < 0:
                _raise_errno(n, what)
            if n <= len(buf):
                break
            buf = self._maps = self._ffi.new("struct iova_mapping[]", n + n // 2)
        return [Mapping(m.iova, m.last - m.iova + 1, m.vaddr, m.prot, m.owner)
                for m in buf[0:n]]

    def unmap(self, iova: int, length: int) -> list[Mapping]:
        last = _aligned_span(iova, length, self._page_size, "unmap")
        return self._mapping_list(self._lib.iova_table_unmap, iova, last, "unmap")

    def mappings(self, iova: int = 0, length: int = _U64) -> list[Mapping]:
        last = _byte_span(iova, length, "mappings")
        if length == 0:
            return []
        return self._mapping_list(self._lib.iova_table_mappings, iova, last, "mappings")

    def lookup(self, iova: int) -> Lookup | None:
        if not 0 <= iova <= _U64_MAX:
            return None
        hit = self._hit
        if self._lib.iova_table_lookup(self._t, iova, hit):
            return Lookup(hit.owner, hit.vaddr, hit.prot)
        return None

    def count_mapped(self, iovas: Sequence[int]) -> int:
        if isinstance(iovas, array.array) and iovas.typecode == "Q":
            # Already u64s in a packed buffer (say, a PRP list read from memory): no copy.
            buf = self._ffi.from_buffer("uint64_t[]", iovas)
            return int(self._lib.iova_table_count_mapped(self._t, buf, len(iovas)))
        inside = [i for i in iovas if 0 <= i <= _U64_MAX]
        arr = self._ffi.new("uint64_t[]", inside)
        return int(self._lib.iova_table_count_mapped(self._t, arr, len(inside)))

    def lookup_into(self, iovas: array.array[int], owners: array.array[int],
                    vaddrs: array.array[int], prots: array.array[int]) -> int:
        _check_lookup_arrays(iovas, owners, vaddrs, prots)
        if not iovas:
            return 0
        ffi = self._ffi
        return int(self._lib.iova_table_lookup_many(
            self._t, ffi.from_buffer("uint64_t[]", iovas), len(iovas),
            ffi.from_buffer("uint64_t[]", owners), ffi.from_buffer("uint64_t[]", vaddrs),
            ffi.from_buffer("int8_t[]", prots)))

    def translate(self, iova: int, length: int, access: int) -> list[Segment] | Fault:
        last = _byte_span(iova, length, "translate")
        _check_access(access, "translate")
        if length == 0:
            return []
        buf = self._segs
        fault = self._fault
        while True:
            n = int(self._lib.iova_table_translate(self._t, iova, last, access, buf, len(buf),
                                                   fault))
            if n == _TRANSLATE_FAULT:
                return Fault(int(fault.iova), _FAULT_REASONS[fault.reason])
            if n < 0:
                _raise_errno(n, "translate")
            if n <= len(buf):
                break
            buf = self._segs = self._ffi.new("struct iova_segment[]", n + n // 2)
        return [Segment(s.owner, s.vaddr, s.vlast - s.vaddr + 1) for s in buf[0:n]]

    @property
    def dirty_tracking(self) -> bool:
        return bool(self._lib.iova_table_dirty_tracking(self._t))

    def start_dirty_tracking(self) -> None:
        ret = self._lib.iova_table_start_dirty(self._t)
        if ret:
            if ret == -errno.EINVAL:
                raise KernelError(errno.EINVAL, "a mapping has too many pages for a dirty bitmap")
            _raise_errno(ret, "start dirty tracking")

    def stop_dirty_tracking(self) -> None:
        self._lib.iova_table_stop_dirty(self._t)

    def mark_dirty(self, iova: int, length: int) -> None:
        last = _byte_span(iova, length, "mark_dirty")
        if length:
            self._lib.iova_table_mark_dirty(self._t, iova, last)

    def read_dirty(self, iova: int, length: int, *, clear: bool = True,
                   all_mapped: bool = False) -> bytes:
        if not self._lib.iova_table_dirty_tracking(self._t):
            raise KernelError(errno.EINVAL, "dirty bitmap requested while tracking is off")
        pages = _bitmap_pages(iova, length, self._dirty_page_size)
        nwords = (pages + 63) // 64
        words = self._ffi.new("uint64_t[]", nwords)
        ret = self._lib.iova_table_read_dirty(self._t, iova, iova + length - 1, int(clear),
                                              int(all_mapped), words, nwords)
        if ret:
            _raise_errno(ret, "read dirty bitmap")
        # u64 words in host order; x86-64 (the only host ioasidfs runs on) is little-endian.
        return bytes(self._ffi.buffer(words))

    def pin(self, iova: int, length: int, access: int) -> None:
        last = _aligned_span(iova, length, self._dirty_page_size, "pin")
        _check_access(access, "pin")
        ret = self._lib.iova_table_pin(self._t, iova, last, access)
        if ret == -errno.EINVAL:
            raise KernelError(errno.EINVAL, "pin: a page of the range is not mapped")
        if ret == -errno.EPERM:
            raise KernelError(errno.EPERM, f"pin: a page of the range is not mapped for {access:#x}")
        if ret:
            _raise_errno(ret, "pin")

    def unpin(self, iova: int, length: int) -> None:
        last = _aligned_span(iova, length, self._dirty_page_size, "unpin")
        ret = self._lib.iova_table_unpin(self._t, iova, last)
        if ret:
            _raise_errno(ret, "unpin")

    def pin_count(self, iova: int) -> int:
        if not 0 <= iova <= _U64_MAX:
            return 0
        return int(self._lib.iova_table_pin_count(self._t, iova))


# --------------------------------------------------------------------------- owners

class OwnerRegistry:
    """Owner tokens: the tables store a u64 per mapping; this says which process it stands for.

    The engine names processes by :data:`~ioasidfs.engine.caller.ProcessKey` (tgid, start time);
    a table cannot store a tuple, so each key gets a small integer token, stable while the key is
    registered. Pure bookkeeping: whether the process still exists is the DMA layer's question.
    """

    def __init__(self) -> None:
        self._tokens: dict[ProcessKey, int] = {}
        self._keys: dict[int, ProcessKey] = {}
        self._next = 1

    def token(self, key: ProcessKey) -> int:
        """The token of ``key``, registering it on first use."""
        token = self._tokens.get(key)
        if token is None:
            token = self._next
            self._next += 1
            self._tokens[key] = token
            self._keys[token] = key
        return token

    def key(self, token: int) -> ProcessKey | None:
        """The process a token stands for (None: unknown or forgotten)."""
        return self._keys.get(token)

    def forget(self, key: ProcessKey) -> None:
        """Drop ``key`` once no mapping uses its token any more (the token is never reused)."""
        token = self._tokens.pop(key, None)
        if token is not None:
            del self._keys[token]


# --------------------------------------------------------------------------- choice

def _load_c() -> tuple[Any, str | None]:
    """The compiled module, or None and why not."""
    try:
        return importlib.import_module("ioasidfs._iova_table"), None
    except ImportError as e:
        return None, str(e)


_PURE = os.environ.get("IOASIDFS_PURE_PYTHON", "") not in ("", "0")
_C, _C_ERROR = _load_c()

C_AVAILABLE = _C is not None
"""Whether the C extension was built and imports (independent of IOASIDFS_PURE_PYTHON)."""

BACKEND = "python" if _PURE or _C is None else "c"
"""What :func:`new_table` builds by default: ``"c"`` or ``"python"``."""

if _C is None and not _PURE:
    # Said once, at import (start-up): everything works, only slower.
    log.warning("the C translation extension is unavailable (%s); using the pure-Python "
                "implementation", _C_ERROR)


def new_table(page_size: int = DEFAULT_PAGE_SIZE, *, dirty_page_size: int | None = None,
              backend: str | None = None) -> TranslationTable:
    """A new, empty table of :data:`BACKEND` (or of ``backend``: ``"c"`` or ``"python"``)."""
    chosen = backend or BACKEND
    if chosen == "c":
        return CTranslationTable(page_size, dirty_page_size)
    if chosen == "python":
        return PyTranslationTable(page_size, dirty_page_size)
    raise ValueError(f"unknown translation backend {chosen!r}")
