"""Non-overlapping intervals ordered by start: the one sorted structure the engine's pure-Python
address-space bookkeeping shares (type1's mappings, the reference translation table).

The kernel keeps such things in rb-trees (``struct vfio_dma``) or interval trees (iopt areas);
all it ever asks is "the interval containing X", "the intervals meeting [A, B]", insert and
remove. Here they are kept as a list of sorted blocks of at most ``2 * LOAD`` items, with each
block's start addresses in a parallel list and each block's first start in a top-level list,
so every question is two ``bisect`` calls (O(log n)) and an insertion or removal moves at most
one block's worth of pointers: a map at the bottom of 60k mappings costs about what it costs
in an empty container (a flat sorted list would move all 60k).

Items are the caller's objects; :class:`IntervalBlocks` reads their bounds through the two
functions it is given (inclusive ``last``, so an interval may end at 2^64 - 1) and never
changes them. The caller keeps the rule that intervals do not overlap and that a stored
item's start does not change; shrinking an item's end is fine (that is how a split is done:
shrink, then insert the cut-off piece).
"""
from __future__ import annotations

import bisect
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class IntervalBlocks(Generic[T]):
    """Non-overlapping intervals ``[start_of(item), last_of(item)]``, ascending."""

    LOAD = 256

    def __init__(self, start_of: Callable[[T], int], last_of: Callable[[T], int]) -> None:
        self._start_of = start_of
        self._last_of = last_of
        self._firsts: list[int] = []         # first start of each block
        self._starts: list[list[int]] = []   # per block: the items' starts
        self._blocks: list[list[T]] = []     # per block: the items, ascending
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[T]:
        """A snapshot, ascending: the caller may change the structure while walking it."""
        return iter(self.items())

    def items(self) -> list[T]:
        return [item for block in self._blocks for item in block]

    def containing(self, x: int) -> T | None:
        """The item whose interval holds ``x``, or None."""
        b = bisect.bisect_right(self._firsts, x) - 1
        if b >= 0:
            item = self._blocks[b][bisect.bisect_right(self._starts[b], x) - 1]
            if x <= self._last_of(item):
                return item
        return None

    def _locate(self, x: int) -> tuple[int, int]:
        """(block, index) of the first item whose last address is at or above ``x``; the end
        position is (len(blocks), 0)."""
        b = bisect.bisect_right(self._firsts, x) - 1
        if b < 0:
            return 0, 0
        block = self._blocks[b]
        i = bisect.bisect_right(self._starts[b], x) - 1
        if self._last_of(block[i]) >= x:
            return b, i
        return (b, i + 1) if i + 1 < len(block) else (b + 1, 0)

    def first_overlapping(self, first: int, last: int) -> T | None:
        """The lowest item sharing an address with ``[first, last]``, or None."""
        b, i = self._locate(first)
        if b < len(self._blocks) and self._starts[b][i] <= last:
            return self._blocks[b][i]
        return None

    def overlapping(self, first: int, last: int) -> list[T]:
        """The items sharing an address with ``[first, last]``, ascending (a snapshot)."""
        b, i = self._locate(first)
        found: list[T] = []
        while b < len(self._blocks):
            block = self._blocks[b]
            j = bisect.bisect_right(self._starts[b], last, lo=i)
            found.extend(block[i:j])
            if j < len(block):
                break
            b, i = b + 1, 0
        return found

    def iter_from(self, x: int) -> Iterator[T]:
        """The items ending at or after ``x``, ascending, lazily (a caller that stops early
        pays only for what it looked at). Do not change the structure while walking it."""
        b, i = self._locate(x)
        while b < len(self._blocks):
            yield from self._blocks[b][i:]
            b, i = b + 1, 0

    def insert(self, item: T) -> None:
        """Add ``item``; the caller has made sure that nothing overlaps it."""
        start = self._start_of(item)
        if not self._blocks:
            self._firsts.append(start)
            self._starts.append([start])
            self._blocks.append([item])
            self._len = 1
            return
        b = max(bisect.bisect_right(self._firsts, start) - 1, 0)
        block, starts = self._blocks[b], self._starts[b]
        i = bisect.bisect_left(starts, start)
        assert i == 0 or self._last_of(block[i - 1]) < start, "overlap"
        block.insert(i, item)
        starts.insert(i, start)
        self._len += 1
        self._settle(b)

    def _settle(self, b: int) -> None:
        """Refresh block ``b``'s first start; split the block once it holds over twice the
        load (a replace may have grown it by many)."""
        block, starts = self._blocks[b], self._starts[b]
        self._firsts[b] = starts[0]
        if len(block) > 2 * self.LOAD:
            size = -(-len(block) // (len(block) // self.LOAD))   # near-equal parts of ~LOAD
            cuts = range(0, len(block), size)
            self._blocks[b:b + 1] = [block[c:c + size] for c in cuts]
            self._starts[b:b + 1] = [starts[c:c + size] for c in cuts]
            self._firsts[b:b + 1] = [starts[c] for c in cuts]

    def replace(self, old: T, new: list[T]) -> None:
        """Put ``new`` (ascending, covering no more than ``old`` did) in ``old``'s place: a
        split of one item into pieces, in one step."""
        start = self._start_of(old)
        b = max(bisect.bisect_right(self._firsts, start) - 1, 0)
        i = bisect.bisect_left(self._starts[b], start)
        if i == len(self._blocks[b]) or self._blocks[b][i] is not old:
            raise IndexError("not stored here")
        self._blocks[b][i:i + 1] = new
        self._starts[b][i:i + 1] = [self._start_of(item) for item in new]
        self._len += len(new) - 1
        if not self._blocks[b]:
            del self._blocks[b]
            del self._starts[b]
            del self._firsts[b]
            return
        self._settle(b)

    def remove_run(self, first: T, count: int) -> None:
        """Take out ``count`` consecutive items, the first of them ``first``."""
        b, i = self._locate(self._start_of(first))
        if b >= len(self._blocks) or self._blocks[b][i] is not first:
            raise IndexError("not stored here")
        while count:
            taken = min(count, len(self._blocks[b]) - i)
            emptied = i == 0 and taken == len(self._blocks[b])
            self._delete(b, i, i + taken)
            count -= taken
            b, i = (b if emptied else b + 1), 0

    def remove(self, item: T) -> None:
        """Take out ``item`` itself (by identity); IndexError if it is not stored."""
        start = self._start_of(item)
        b = max(bisect.bisect_right(self._firsts, start) - 1, 0)
        if b >= len(self._blocks):
            raise IndexError("not stored here")
        i = bisect.bisect_left(self._starts[b], start)
        if i == len(self._blocks[b]) or self._blocks[b][i] is not item:
            raise IndexError("not stored here")
        self._delete(b, i, i + 1)

    def remove_overlapping(self, first: int, last: int) -> list[T]:
        """Take out every item sharing an address with ``[first, last]``; returns them,
        ascending. (Items straddling an end go whole: split them first to keep a part.)"""
        removed: list[T] = []
        b, i = self._locate(first)
        while b < len(self._blocks):
            block = self._blocks[b]
            j = bisect.bisect_right(self._starts[b], last, lo=i)
            removed.extend(block[i:j])
            reached_end = j == len(block)
            emptied = i == 0 and reached_end
            self._delete(b, i, j)
            if not reached_end:
                break
            b, i = (b if emptied else b + 1), 0
        return removed

    def _delete(self, b: int, i: int, j: int) -> None:
        block, starts = self._blocks[b], self._starts[b]
        del block[i:j]
        del starts[i:j]
        self._len -= j - i
        if block:
            self._firsts[b] = starts[0]
        else:
            del self._blocks[b]
            del self._starts[b]
            del self._firsts[b]
