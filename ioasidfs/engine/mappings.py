"""The DMA mappings of one type1 container: ``struct vfio_dma`` and the tree that holds them.

The kernel keeps mappings in an rb-tree keyed by IOVA and never lets two overlap, so "the
mapping containing X" and "the mappings in [A, B)" are all it ever asks. This store answers
exactly those questions over sorted blocks of start addresses (bisect: O(log n) lookups; an
insertion or removal moves at most one block). The interface is deliberately small -- insert,
remove, find one overlapping a range, iterate a range -- so that a faster translation
structure can replace it without touching the ioctl code.

Addresses are exact integers, so a mapping may end exactly at 2^64: since 6.18 the kernel
compares inclusive ends for that reason (before, ``iova + size`` wrapped to 0 there).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Iterator

from .caller import ProcessKey


@dataclass(eq=False)
class DmaMapping:
    """One successful VFIO_IOMMU_MAP_DMA (``struct vfio_dma``).

    ``owner`` is the process charged for ``locked_pages`` (the kernel's ``dma->mm`` and
    ``dma->locked_vm``): the mapper, or the last process that supplied a new vaddr.
    ``dirty_bitmap`` exists while dirty tracking is on: bit i is page i of the mapping, kept as
    the kernel keeps its ``unsigned long`` array, stale bits included (see ``dirty.py``).
    Mappings compare by identity: two mappings are never the same one.
    """

    iova: int
    size: int
    vaddr: int
    prot: int
    owner: ProcessKey
    locked_pages: int
    vaddr_invalid: bool = False
    dirty_bitmap: int | None = None

    @property
    def end(self) -> int:
        """One past the last IOVA byte."""
        return self.iova + self.size

    def contains(self, iova: int) -> bool:
        return self.iova <= iova < self.end


class MappingStore:
    """Non-overlapping mappings ordered by IOVA.

    Kept as :class:`~ioasidfs.engine.ioas.AreaTree` keeps areas: a list of sorted blocks of at
    most ``2 * LOAD`` mappings (with each block's start IOVAs in a parallel list, and each
    block's first IOVA in a top-level list, for bisecting). Lookups are O(log n); an insert or
    removal moves at most one block's worth of pointers, so a map at the bottom of 60k
    mappings costs about what it costs in an empty container.
    """

    LOAD = 256

    def __init__(self) -> None:
        self._firsts: list[int] = []                # first IOVA of each block
        self._starts: list[list[int]] = []          # per block: the mappings' IOVAs
        self._blocks: list[list[DmaMapping]] = []   # per block: the mappings, ascending
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[DmaMapping]:
        """A snapshot, ascending: the caller may change the store while walking it."""
        return iter([mapping for block in self._blocks for mapping in block])

    def insert(self, mapping: DmaMapping) -> None:
        """Add ``mapping``; the caller has checked that nothing overlaps it."""
        iova = mapping.iova
        if not self._blocks:
            self._firsts.append(iova)
            self._starts.append([iova])
            self._blocks.append([mapping])
            self._len = 1
            return
        b = max(bisect.bisect_right(self._firsts, iova) - 1, 0)
        block, starts = self._blocks[b], self._starts[b]
        i = bisect.bisect_left(starts, iova)
        if i < len(block):
            assert starts[i] >= mapping.end, "overlap"
        elif b + 1 < len(self._blocks):
            assert self._firsts[b + 1] >= mapping.end, "overlap"
        assert i == 0 or block[i - 1].end <= iova, "overlap"
        block.insert(i, mapping)
        starts.insert(i, iova)
        self._len += 1
        self._firsts[b] = starts[0]
        if len(block) > 2 * self.LOAD:
            half = self.LOAD
            self._blocks[b:b + 1] = [block[:half], block[half:]]
            self._starts[b:b + 1] = [starts[:half], starts[half:]]
            self._firsts[b:b + 1] = [starts[0], starts[half]]

    def remove(self, mapping: DmaMapping) -> None:
        b = max(bisect.bisect_right(self._firsts, mapping.iova) - 1, 0)
        if b >= len(self._blocks):
            raise IndexError("not in this store")
        block, starts = self._blocks[b], self._starts[b]
        i = bisect.bisect_left(starts, mapping.iova)
        if i == len(block):
            if b + 1 == len(self._blocks):
                raise IndexError("not in this store")
            assert self._blocks[b + 1][0] is mapping, "not in this store"
        assert block[i] is mapping, "not in this store"
        del block[i]
        del starts[i]
        self._len -= 1
        if block:
            self._firsts[b] = starts[0]
        else:
            del self._blocks[b]
            del self._starts[b]
            del self._firsts[b]

    def _locate(self, iova: int) -> tuple[int, int]:
        """(block, index) of the first mapping whose end is above ``iova``; the end position
        is (len(blocks), 0)."""
        b = bisect.bisect_right(self._firsts, iova) - 1
        if b < 0:
            return 0, 0
        block = self._blocks[b]
        i = bisect.bisect_right(self._starts[b], iova) - 1
        if block[i].end > iova:
            return b, i
        return (b, i + 1) if i + 1 < len(block) else (b + 1, 0)

    def find_overlapping(self, iova: int, size: int) -> DmaMapping | None:
        """The lowest mapping sharing a byte with ``[iova, iova+size)``, or None (size >= 1).

        ``find_overlapping(x, 1)`` is the mapping containing ``x``.
        """
        b, i = self._locate(iova)
        if b < len(self._blocks) and self._starts[b][i] < iova + size:
            return self._blocks[b][i]
        return None

    def iterate(self, start: int, end: int) -> list[DmaMapping]:
        """The mappings sharing a byte with ``[start, end)``, ascending; a snapshot, so the
        caller may remove them while walking it."""
        b, i = self._locate(start)
        found: list[DmaMapping] = []
        while b < len(self._blocks):
            block = self._blocks[b]
            j = bisect.bisect_left(self._starts[b], end, lo=i)
            found.extend(block[i:j])
            if j < len(block):
                break
            b, i = b + 1, 0
        return found
