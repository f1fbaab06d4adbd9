"""IntervalBlocks against a plain sorted list, with tiny blocks so that splits, emptied blocks
and ranges running across several blocks happen in every few operations."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ioasidfs.engine.intervals import IntervalBlocks

TOP = (1 << 64) - 1


@dataclass(eq=False)
class Iv:
    start: int
    last: int


class TinyBlocks(IntervalBlocks[Iv]):
    LOAD = 2


def _tree() -> TinyBlocks:
    return TinyBlocks(lambda i: i.start, lambda i: i.last)


addr = st.one_of(st.integers(0, 80), st.integers(TOP - 10, TOP))


class Model(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tree = _tree()
        self.model: list[Iv] = []

    def _meets(self, first: int, last: int) -> list[Iv]:
        return [i for i in self.model if i.start <= last and first <= i.last]

    @rule(start=addr, length=st.integers(1, 6))
    def insert(self, start: int, length: int) -> None:
        last = min(start + length - 1, TOP)
        if self._meets(start, last):
            return
        item = Iv(start, last)
        self.tree.insert(item)
        self.model = sorted(self.model + [item], key=lambda i: i.start)

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        if self.model:
            item = data.draw(st.sampled_from(self.model))
            self.tree.remove(item)
            self.model.remove(item)
        with pytest.raises(IndexError):
            self.tree.remove(Iv(3, 3))

    @rule(first=addr, length=st.integers(1, 40))
    def remove_overlapping(self, first: int, length: int) -> None:
        last = min(first + length - 1, TOP)
        want = self._meets(first, last)
        assert self.tree.remove_overlapping(first, last) == want
        self.model = [i for i in self.model if i not in want]

    @rule(data=st.data())
    def shrink(self, data: st.DataObject) -> None:
        """A split as the translation table does it: shrink an item, insert the cut-off piece."""
        wide = [i for i in self.model if i.last > i.start]
        if wide:
            item = data.draw(st.sampled_from(wide))
            piece = Iv(item.last, item.last)
            item.last -= 1
            self.tree.insert(piece)
            self.model = sorted(self.model + [piece], key=lambda i: i.start)

    @rule(data=st.data(), pieces=st.integers(1, 7))
    def replace(self, data: st.DataObject, pieces: int) -> None:
        """One item replaced by up to 7 pieces of it, in one step (a block may overflow)."""
        wide = [i for i in self.model if i.last - i.start + 1 >= pieces]
        if wide:
            old = data.draw(st.sampled_from(wide))
            size = (old.last - old.start + 1) // pieces
            new = [Iv(old.start + k * size, old.start + (k + 1) * size - 1) for k in range(pieces)]
            new[-1].last = old.last
            self.tree.replace(old, new)
            self.model = sorted([i for i in self.model if i is not old] + new, key=lambda i: i.start)

    @rule(first=addr, length=st.integers(1, 40))
    def remove_run(self, first: int, length: int) -> None:
        last = min(first + length - 1, TOP)
        run = self._meets(first, last)
        if run:
            self.tree.remove_run(run[0], len(run))
            self.model = [i for i in self.model if i not in run]

    @rule(x=addr)
    def iter_from(self, x: int) -> None:
        assert list(self.tree.iter_from(x)) == [i for i in self.model if i.last >= x]

    @rule(x=addr)
    def containing(self, x: int) -> None:
        want = self._meets(x, x)
        assert self.tree.containing(x) is (want[0] if want else None)

    @rule(first=addr, length=st.integers(1, 40))
    def overlapping(self, first: int, length: int) -> None:
        last = min(first + length - 1, TOP)
        want = self._meets(first, last)
        assert self.tree.overlapping(first, last) == want
        assert self.tree.first_overlapping(first, last) is (want[0] if want else None)

    @invariant()
    def same(self) -> None:
        assert self.tree.items() == self.model
        assert len(self.tree) == len(self.model)


TestIntervalBlocks = Model.TestCase
TestIntervalBlocks.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


def test_blocks_split_and_merge_away() -> None:
    tree = _tree()
    items = [Iv(10 * k, 10 * k + 4) for k in range(50)]
    for item in reversed(items):
        tree.insert(item)
    assert list(tree) == items
    assert tree.overlapping(13, 36) == items[1:4]
    assert tree.remove_overlapping(5, 444) == items[1:45]
    assert list(tree) == items[:1] + items[45:]
