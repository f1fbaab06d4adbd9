"""The DMA mappings of one type1 container: ``struct vfio_dma`` and the tree that holds them.

The kernel keeps mappings in an rb-tree keyed by IOVA and never lets two overlap, so "the
mapping containing X" and "the mappings in [A, B)" are all it ever asks. This store answers
exactly those questions, through the engine's one sorted-interval structure
(``intervals.py``). The interface is deliberately small -- insert, remove, find one
overlapping a range, iterate a range.

Addresses are exact integers, so a mapping may end exactly at 2^64: since 6.18 the kernel
compares inclusive ends for that reason (before, ``iova + size`` wrapped to 0 there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .caller import ProcessKey
from .kept import KeptShared
from .intervals import IntervalBlocks


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
    # What the pin holds of shared memory (``kept.py``), in terms of ``vaddr``.
    kept: list[KeptShared] = field(default_factory=list)

    @property
    def end(self) -> int:
        """One past the last IOVA byte."""
        return self.iova + self.size

    def contains(self, iova: int) -> bool:
        return self.iova <= iova < self.end


class MappingStore:
    """Non-overlapping mappings ordered by IOVA (an :class:`~.intervals.IntervalBlocks`):
    O(log n) lookups; an insert or removal moves at most one block's worth of pointers, so a
    map at the bottom of 60k mappings costs about what it costs in an empty container."""

    def __init__(self) -> None:
        self._tree: IntervalBlocks[DmaMapping] = IntervalBlocks(_start, _last)

    def __len__(self) -> int:
        return len(self._tree)

    def __iter__(self) -> Iterator[DmaMapping]:
        """A snapshot, ascending: the caller may change the store while walking it."""
        return iter(self._tree)

    def insert(self, mapping: DmaMapping) -> None:
        """Add ``mapping``; the caller has checked that nothing overlaps it."""
        self._tree.insert(mapping)

    def remove(self, mapping: DmaMapping) -> None:
        self._tree.remove(mapping)

    def find_overlapping(self, iova: int, size: int) -> DmaMapping | None:
        """The lowest mapping sharing a byte with ``[iova, iova+size)``, or None (size >= 1).

        ``find_overlapping(x, 1)`` is the mapping containing ``x``.
        """
        return self._tree.first_overlapping(iova, iova + size - 1)

    def iterate(self, start: int, end: int) -> list[DmaMapping]:
        """The mappings sharing a byte with ``[start, end)``, ascending; a snapshot, so the
        caller may remove them while walking it."""
        return self._tree.overlapping(start, end - 1)


def _start(mapping: DmaMapping) -> int:
    return mapping.iova


def _last(mapping: DmaMapping) -> int:
    return mapping.iova + mapping.size - 1
