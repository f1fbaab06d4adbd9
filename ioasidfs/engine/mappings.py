"""The DMA mappings of one type1 container: ``struct vfio_dma`` and the tree that holds them.

The kernel keeps mappings in an rb-tree keyed by IOVA and never lets two overlap, so "the
mapping containing X" and "the mappings in [A, B)" are all it ever asks. This store answers
exactly those questions over a sorted list of start addresses (bisect: O(log n) lookups,
insertions and removals are a memmove). The interface is deliberately small -- insert, remove,
find one overlapping a range, iterate a range -- so that a faster translation structure can
replace it without touching the ioctl code.

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
    """Non-overlapping mappings ordered by IOVA."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._mappings: list[DmaMapping] = []

    def __len__(self) -> int:
        return len(self._mappings)

    def __iter__(self) -> Iterator[DmaMapping]:
        return iter(list(self._mappings))

    def insert(self, mapping: DmaMapping) -> None:
        """Add ``mapping``; the caller has checked that nothing overlaps it."""
        index = bisect.bisect_left(self._starts, mapping.iova)
        assert index == len(self._starts) or self._starts[index] >= mapping.end, "overlap"
        assert index == 0 or self._mappings[index - 1].end <= mapping.iova, "overlap"
        self._starts.insert(index, mapping.iova)
        self._mappings.insert(index, mapping)

    def remove(self, mapping: DmaMapping) -> None:
        index = bisect.bisect_left(self._starts, mapping.iova)
        assert self._mappings[index] is mapping, "not in this store"
        del self._starts[index]
        del self._mappings[index]

    def _first_index_ending_after(self, iova: int) -> int:
        """Index of the first mapping whose end is above ``iova`` (len() if none)."""
        index = bisect.bisect_right(self._starts, iova)
        if index > 0 and self._mappings[index - 1].end > iova:
            return index - 1
        return index

    def find_overlapping(self, iova: int, size: int) -> DmaMapping | None:
        """The lowest mapping sharing a byte with ``[iova, iova+size)``, or None (size >= 1).

        ``find_overlapping(x, 1)`` is the mapping containing ``x``.
        """
        index = self._first_index_ending_after(iova)
        if index < len(self._mappings) and self._mappings[index].iova < iova + size:
            return self._mappings[index]
        return None

    def iterate(self, start: int, end: int) -> list[DmaMapping]:
        """The mappings sharing a byte with ``[start, end)``, ascending; a snapshot, so the
        caller may remove them while walking it."""
        first = self._first_index_ending_after(start)
        last = bisect.bisect_left(self._starts, end, lo=first)
        return self._mappings[first:last]
