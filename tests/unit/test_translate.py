"""The translation table: the C implementation (cext/) against the pure-Python reference.

Hypothesis drives both with the same random operation sequences and requires identical answers
(values and errnos); the unit tests pin down the interface's meaning on both: segments across
adjacent mappings, permission faults, partial unmaps, and the kernel's dirty bitmap layout and
rules (drivers/vfio/vfio_iommu_type1.c).
"""
from __future__ import annotations

import array
import errno
from typing import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ioasidfs.engine import translate as T
from ioasidfs.engine.translate import (ACCESS_READ, ACCESS_WRITE, PROT_READ, PROT_WRITE, Fault,
                                       FaultReason, Lookup, Mapping, Segment, TranslationTable)
from ioasidfs.errors import KernelError

PG = 4096
RW = PROT_READ | PROT_WRITE
TOP = 1 << 64
NO_C = "the C extension is not built (pip install -e . compiles it); only the Python one is tested"

BACKENDS = [
    "python",
    pytest.param("c", marks=pytest.mark.skipif(not T.C_AVAILABLE, reason=NO_C)),
]


@pytest.fixture(params=BACKENDS)
def table(request: pytest.FixtureRequest) -> TranslationTable:
    return T.new_table(PG, backend=request.param)


@pytest.fixture(params=BACKENDS)
def table_factory(request: pytest.FixtureRequest) -> Callable[..., TranslationTable]:
    return lambda page_size, **kw: T.new_table(page_size, backend=request.param, **kw)


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(KernelError) as info:
        fn()
    return info.value.errno


def words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 8], "little") for i in range(0, len(data), 8)]


# --------------------------------------------------------------------------- map / lookup

def test_map_lookup_and_bounds(table: TranslationTable) -> None:
    table.map(0x10000, 0x3000, 0x7f0000001000, RW, 5)
    assert len(table) == 1
    assert table.lookup(0x10000) == Lookup(5, 0x7f0000001000, RW)
    assert table.lookup(0x12fff) == Lookup(5, 0x7f0000003fff, RW)
    assert table.lookup(0x13000) is None
    assert table.lookup(0xffff) is None
    assert table.lookup(-1) is None and table.lookup(TOP) is None


def test_map_rejects_what_the_kernel_rejects(table: TranslationTable) -> None:
    table.map(0x10000, 0x2000, 0, RW, 1)
    assert errno_of(lambda: table.map(0x11000, 0x2000, 0, RW, 1)) == errno.EEXIST
    assert errno_of(lambda: table.map(0xf000, 0x2000, 0, RW, 1)) == errno.EEXIST
    assert errno_of(lambda: table.map(0x20000, 0, 0, RW, 1)) == errno.EINVAL
    assert errno_of(lambda: table.map(0x20800, 0x1000, 0, RW, 1)) == errno.EINVAL
    assert errno_of(lambda: table.map(0x20000, 0x800, 0, RW, 1)) == errno.EINVAL
    assert errno_of(lambda: table.map(TOP - PG, 2 * PG, 0, RW, 1)) == errno.EINVAL
    assert errno_of(lambda: table.map(0x20000, PG, TOP - 1, RW, 1)) == errno.EINVAL
    assert errno_of(lambda: table.map(0x20000, PG, 0, 4, 1)) == errno.EINVAL
    assert errno_of(lambda: table.map(0x20000, PG, 0, RW, -1)) == errno.EINVAL
    assert len(table) == 1


def test_top_of_the_space_and_unmap_all(table: TranslationTable) -> None:
    table.map(TOP - 2 * PG, 2 * PG, 0x1000, PROT_READ, 1)
    table.map(0, PG, 0x9000, PROT_READ, 2)
    assert table.lookup(TOP - 1) == Lookup(1, 0x1000 + 2 * PG - 1, PROT_READ)
    assert table.translate(TOP - PG, PG, ACCESS_READ) == [Segment(1, 0x2000, PG)]
    removed = table.unmap(0, TOP)
    assert removed == [Mapping(0, PG, 0x9000, PROT_READ, 2),
                       Mapping(TOP - 2 * PG, 2 * PG, 0x1000, PROT_READ, 1)]
    assert len(table) == 0 and table.mappings() == []


# --------------------------------------------------------------------------- translate

def test_segments_merge_across_adjacent_contiguous_mappings(table: TranslationTable) -> None:
    table.map(0x10000, 0x1000, 0x50000, RW, 1)
    table.map(0x11000, 0x1000, 0x51000, RW, 1)   # contiguous vaddr, same owner: one segment
    table.map(0x12000, 0x1000, 0x90000, RW, 1)   # jumps in vaddr: a new segment
    table.map(0x13000, 0x1000, 0x91000, RW, 2)   # contiguous but another owner: a new segment
    assert len(table) == 4
    assert table.translate(0x10800, 0x3000, ACCESS_WRITE) == [
        Segment(1, 0x50800, 0x1800), Segment(1, 0x90000, 0x1000), Segment(2, 0x91000, 0x800)]
    assert table.translate(0x11fff, 2, ACCESS_READ) == [Segment(1, 0x51fff, 1),
                                                         Segment(1, 0x90000, 1)]
    assert table.translate(0x10000, 0, ACCESS_READ) == []


def test_translate_faults_at_the_first_bad_byte(table: TranslationTable) -> None:
    table.map(0x10000, 0x1000, 0x50000, RW, 1)
    table.map(0x11000, 0x1000, 0x51000, PROT_READ, 1)
    table.map(0x13000, 0x1000, 0x53000, PROT_WRITE, 1)
    assert table.translate(0x10f00, 0x200, ACCESS_WRITE) == Fault(0x11000, FaultReason.NO_PERMISSION)
    assert table.translate(0x10f00, 0x200, ACCESS_READ) == [Segment(1, 0x50f00, 0x200)]
    assert table.translate(0x11800, 0x1000, ACCESS_READ) == Fault(0x12000, FaultReason.NOT_MAPPED)
    assert table.translate(0x13000, 8, ACCESS_READ) == Fault(0x13000, FaultReason.NO_PERMISSION)
    assert table.translate(0x13000, 8, ACCESS_WRITE) == [Segment(1, 0x53000, 8)]
    assert table.translate(0x0, 1, ACCESS_READ) == Fault(0, FaultReason.NOT_MAPPED)
    assert errno_of(lambda: table.translate(TOP - 1, 2, ACCESS_READ)) == errno.EINVAL
    assert errno_of(lambda: table.translate(0x10000, 1, 4)) == errno.EINVAL


def test_translate_many_segments_grows_its_buffers(table: TranslationTable) -> None:
    for i in range(200):
        table.map(i * PG, PG, 0x100000 + 2 * i * PG, RW, 1)
    segs = table.translate(0, 200 * PG, ACCESS_READ)
    assert isinstance(segs, list) and len(segs) == 200
    assert segs[199] == Segment(1, 0x100000 + 398 * PG, PG)
    assert len(table.mappings(0, 200 * PG)) == 200
    assert len(table.unmap(0, 200 * PG)) == 200


# --------------------------------------------------------------------------- unmap

def test_partial_unmap_splits_and_returns_the_removed_piece(table: TranslationTable) -> None:
    table.map(0x10000, 0x8000, 0x50000, RW, 3)
    assert table.unmap(0x12000, 0x2000) == [Mapping(0x12000, 0x2000, 0x52000, RW, 3)]
    assert table.mappings() == [Mapping(0x10000, 0x2000, 0x50000, RW, 3),
                                Mapping(0x14000, 0x4000, 0x54000, RW, 3)]
    assert table.lookup(0x12000) is None
    assert table.lookup(0x14000) == Lookup(3, 0x54000, RW)
    # A range over holes and two entries removes only what is mapped, each piece separately.
    assert table.unmap(0x11000, 0x4000) == [Mapping(0x11000, 0x1000, 0x51000, RW, 3),
                                            Mapping(0x14000, 0x1000, 0x54000, RW, 3)]
    assert table.unmap(0x30000, 0x1000) == []
    assert errno_of(lambda: table.unmap(0x10000, 0)) == errno.EINVAL
    assert errno_of(lambda: table.unmap(0x10001, 0x1000)) == errno.EINVAL
    assert table.mappings(0x10fff, 1) == [Mapping(0x10000, 0x1000, 0x50000, RW, 3)]


def test_a_1GiB_mapping_is_one_entry(table: TranslationTable) -> None:
    gib = 1 << 30
    table.map(gib, gib, 0x7f0000000000, RW, 1)
    assert table.translate(gib + 4096, gib - 8192, ACCESS_READ) == [
        Segment(1, 0x7f0000001000, gib - 8192)]
    assert table.unmap(gib, gib) == [Mapping(gib, gib, 0x7f0000000000, RW, 1)]


def test_count_mapped(table: TranslationTable) -> None:
    table.map(0x10000, 0x2000, 0, RW, 1)
    probes = [0, 0x10000, 0x11fff, 0x12000, -5, TOP + 3]
    assert table.count_mapped(probes) == 2
    assert table.count_mapped(array.array("Q", [0x10000, 0x10001, 0x9000])) == 2
    # Enough probes to switch C to its flat index and batched descents, odd count for the tail.
    for i in range(1, 301):
        table.map(0x100000 + i * 3 * PG, i % 3 * PG + PG, 0, RW, 1)
    import random
    rng = random.Random(3)
    probes = [rng.randrange(0, 0x100000 + 1000 * PG) for _ in range(5001)]
    assert table.count_mapped(probes) == sum(table.lookup(p) is not None for p in probes)
    assert table.count_mapped(probes) == table.count_mapped(array.array("Q", probes))


def _lookup_into(table: TranslationTable, probes: list[int]) -> tuple[int, list[int], list[int],
                                                                    list[int]]:
    n = len(probes)
    owners, vaddrs, prots = array.array("Q", [7] * n), array.array("Q", [7] * n), array.array("b", [7] * n)
    found = table.lookup_into(array.array("Q", probes), owners, vaddrs, prots)
    return found, list(owners), list(vaddrs), list(prots)


def test_lookup_into_is_lookup_for_many(table: TranslationTable) -> None:
    table.map(0x10000, 0x2000, 0x70000, PROT_READ, 4)
    assert _lookup_into(table, [0x10000, 0x11fff, 0x12000]) == (
        2, [4, 4, 0], [0x70000, 0x71fff, 0], [PROT_READ, PROT_READ, -1])
    assert _lookup_into(table, []) == (0, [], [], [])
    for i in range(1, 301):
        table.map(0x100000 + i * 3 * PG, i % 3 * PG + PG, i * PG, RW if i % 2 else PROT_READ, i)
    import random
    rng = random.Random(5)
    probes = [rng.randrange(0, 0x100000 + 1000 * PG) for _ in range(5003)]  # batches and a tail
    found, owners, vaddrs, prots = _lookup_into(table, probes)
    hits = [table.lookup(p) for p in probes]
    assert found == sum(h is not None for h in hits)
    assert [(o, v, p) for o, v, p in zip(owners, vaddrs, prots)] == [
        (h.owner, h.vaddr, h.prot) if h is not None else (0, 0, -1) for h in hits]
    q = array.array("Q", [0x10000] * 4)
    with pytest.raises(ValueError):  # an output shorter than the input
        table.lookup_into(q, array.array("Q", [0] * 4), array.array("Q", [0] * 3), array.array("b", [0] * 4))
    with pytest.raises(ValueError):  # prots must be signed bytes
        table.lookup_into(q, array.array("Q", [0] * 4), array.array("Q", [0] * 4), array.array("B", [0] * 4))


# --------------------------------------------------------------------------- dirty tracking

def test_dirty_bitmap_layout(table: TranslationTable) -> None:
    table.map(0, 200 * PG, 0x100000, RW, 1)
    assert errno_of(lambda: table.read_dirty(0, 200 * PG)) == errno.EINVAL  # tracking off
    table.mark_dirty(0, 1)   # ignored while off
    table.start_dirty_tracking()
    for page in (0, 63, 64, 130):
        table.mark_dirty(page * PG + 5, 1)
    data = table.read_dirty(0, 256 * PG, clear=False)
    assert len(data) == 32   # 256 pages: four little-endian u64 words
    assert words(data) == [1 | 1 << 63, 1, 1 << 2, 0]
    # Bit i is page base+i: a base one page up shifts everything down by one.
    assert words(table.read_dirty(PG, 128 * PG, clear=False)) == [1 << 62 | 1 << 63, 0]
    assert words(table.read_dirty(0, 256 * PG)) == [1 | 1 << 63, 1, 1 << 2, 0]  # and clears
    assert words(table.read_dirty(0, 256 * PG)) == [0, 0, 0, 0]
    # A write crossing a page boundary dirties both pages (vfio_dma_rw's rule).
    table.mark_dirty(5 * PG - 1, 2)
    assert words(table.read_dirty(0, 64 * PG)) == [1 << 4 | 1 << 5]
    # all_mapped: every mapped page, nothing beyond the mapping.
    assert words(table.read_dirty(192 * PG, 64 * PG, all_mapped=True)) == [(1 << 8) - 1]
    assert errno_of(lambda: table.read_dirty(1, PG)) == errno.EINVAL
    assert errno_of(lambda: table.read_dirty(0, 0)) == errno.EINVAL
    table.stop_dirty_tracking()
    assert not table.dirty_tracking


def test_pinned_pages_are_dirty_while_pinned(table: TranslationTable) -> None:
    table.map(0, 64 * PG, 0x100000, PROT_READ, 1)
    table.pin(3 * PG, PG, ACCESS_READ)            # pinned before tracking starts
    table.start_dirty_tracking()
    assert words(table.read_dirty(0, 64 * PG)) == [1 << 3]
    assert words(table.read_dirty(0, 64 * PG)) == [1 << 3]   # still pinned: still dirty
    table.pin(7 * PG, 2 * PG, ACCESS_READ)
    table.unpin(7 * PG, PG)                       # pinned then unpinned before the read
    assert words(table.read_dirty(0, 64 * PG)) == [1 << 3 | 1 << 7 | 1 << 8]
    assert words(table.read_dirty(0, 64 * PG)) == [1 << 3 | 1 << 8]
    assert table.pin_count(3 * PG + 17) == 1 and table.pin_count(7 * PG) == 0
    assert errno_of(lambda: table.pin(0, PG, ACCESS_WRITE)) == errno.EPERM
    assert errno_of(lambda: table.pin(63 * PG, 2 * PG, ACCESS_READ)) == errno.EINVAL
    assert table.pin_count(63 * PG) == 0          # all or nothing
    table.unmap(0, 8 * PG)                        # pins go with the mapping
    assert table.pin_count(3 * PG) == 0 and table.pin_count(8 * PG) == 1


def test_dirty_bits_follow_a_split(table: TranslationTable) -> None:
    table.map(0, 16 * PG, 0x100000, RW, 1)
    table.start_dirty_tracking()
    table.mark_dirty(2 * PG, 1)
    table.mark_dirty(12 * PG, 1)
    table.unmap(4 * PG, 4 * PG)
    assert words(table.read_dirty(0, 16 * PG)) == [1 << 2 | 1 << 12]
    table.map(4 * PG, 4 * PG, 0x200000, RW, 1)    # mapped while tracking: starts clean
    assert words(table.read_dirty(0, 16 * PG)) == [0]


def test_dirty_bitmap_size_limit(table: TranslationTable) -> None:
    huge = (T.DIRTY_PAGES_MAX + 1) * PG
    table.map(0, huge, 0, RW, 1)
    assert errno_of(table.start_dirty_tracking) == errno.EINVAL
    assert not table.dirty_tracking
    table.unmap(0, huge)
    table.start_dirty_tracking()
    assert errno_of(lambda: table.map(0, huge, 0, RW, 1)) == errno.EINVAL
    assert errno_of(lambda: table.read_dirty(0, huge)) == errno.EINVAL


# --------------------------------------------------------------------------- C == Python

PAGES = 48
OWNERS = st.sampled_from([1, 1, 1, 2, 0])
PROTS = st.sampled_from([RW, RW, RW, PROT_READ, PROT_WRITE, 0])
ACCESS = st.sampled_from([ACCESS_READ, ACCESS_WRITE, ACCESS_READ | ACCESS_WRITE, 0])


def iova_st() -> st.SearchStrategy[int]:
    """Page-aligned IOVAs: mostly a small window (so operations collide), sometimes the top."""
    return st.integers(0, PAGES + 4).map(
        lambda p: p * PG if p < PAGES else TOP - (p - PAGES + 1) * PG)


def byte_st() -> st.SearchStrategy[int]:
    return st.integers(0, (PAGES + 8) * PG).map(
        lambda b: b if b <= (PAGES + 1) * PG else TOP - (b - (PAGES + 1) * PG) - 1)


def outcome(fn: Callable[[], object]) -> object:
    try:
        return ("ok", fn())
    except KernelError as e:
        return ("errno", e.errno)


class SameAnswers(RuleBasedStateMachine):
    """Every operation on both implementations; every answer must be the same."""

    @initialize(layout=st.lists(st.tuples(st.integers(0, PAGES - 1), st.integers(1, 6),
                                          st.sampled_from([0, 0, 1, 1000]), OWNERS, PROTS),
                                min_size=2, max_size=24))
    def tables(self, layout: list[tuple[int, int, int, int, int]]) -> None:
        """Both tables start with the same few mappings (those that fit), often adjacent."""
        self.py = T.new_table(PG, backend="python")
        self.c = T.new_table(PG, backend="c")
        for page, pages, delta, owner, prot in layout:
            self.both(lambda t: t.map(page * PG, pages * PG, (page + delta) * PG, prot, owner))

    def both(self, op: Callable[[TranslationTable], object]) -> object:
        a, b = outcome(lambda: op(self.py)), outcome(lambda: op(self.c))
        assert a == b
        return a

    @rule(iova=iova_st(), pages=st.integers(0, 8), delta=st.sampled_from([0, 0, 1, 1000]),
          prot=PROTS, owner=OWNERS, odd=st.booleans())
    def map(self, iova: int, pages: int, delta: int, prot: int, owner: int, odd: bool) -> None:
        """vaddr = iova + delta pages: equal deltas make neighbours contiguous in vaddr too."""
        length = pages * PG + (1 if odd and pages == 1 else 0)
        self.both(lambda t: t.map(iova, length, (iova + delta * PG) % TOP, prot, owner))

    @rule(iova=iova_st(), pages=st.integers(0, 4))
    def unmap(self, iova: int, pages: int) -> None:
        self.both(lambda t: t.unmap(iova, pages * PG))

    @rule(iova=byte_st())
    def lookup(self, iova: int) -> None:
        self.both(lambda t: t.lookup(iova))

    @rule(iova=byte_st(), length=st.integers(0, 10 * PG), access=ACCESS)
    def translate(self, iova: int, length: int, access: int) -> None:
        self.both(lambda t: t.translate(iova, length, access))

    @rule(iova=byte_st(), length=st.integers(0, 12 * PG))
    def mappings(self, iova: int, length: int) -> None:
        self.both(lambda t: t.mappings(iova, length))

    @rule(probes=st.lists(byte_st(), max_size=20))
    def count_mapped(self, probes: list[int]) -> None:
        self.both(lambda t: t.count_mapped(probes))

    @rule(probes=st.lists(byte_st(), max_size=20))
    def lookup_into(self, probes: list[int]) -> None:
        inside = [p for p in probes if 0 <= p < TOP]
        self.both(lambda t: _lookup_into(t, inside))

    @rule(on=st.sampled_from([True, True, True, False]))
    def tracking(self, on: bool) -> None:
        self.both(lambda t: t.start_dirty_tracking() if on else t.stop_dirty_tracking())

    @rule(iova=byte_st(), length=st.integers(0, 3 * PG))
    def mark_dirty(self, iova: int, length: int) -> None:
        self.both(lambda t: t.mark_dirty(iova, length))

    @rule(iova=iova_st(), pages=st.integers(0, 70), clear=st.booleans(), every=st.booleans())
    def read_dirty(self, iova: int, pages: int, clear: bool, every: bool) -> None:
        self.both(lambda t: t.read_dirty(iova, pages * PG, clear=clear, all_mapped=every))

    @rule(iova=iova_st(), pages=st.integers(0, 4), access=ACCESS)
    def pin(self, iova: int, pages: int, access: int) -> None:
        self.both(lambda t: t.pin(iova, pages * PG, access))

    @rule(iova=iova_st(), pages=st.integers(0, 4))
    def unpin(self, iova: int, pages: int) -> None:
        self.both(lambda t: t.unpin(iova, pages * PG))

    # Operations aimed at what is mapped now: random ranges mostly fault or miss, and a fault
    # says little about segment merging, bitmaps or pins.

    def _inside(self, data: st.DataObject) -> int | None:
        """A page-aligned IOVA inside a current mapping, or None when nothing is mapped."""
        maps = self.py.mappings()
        if not maps:
            return None
        m = data.draw(st.sampled_from(maps))
        return m.iova + data.draw(st.integers(0, max(m.length // PG - 1, 0))) * PG

    @rule(data=st.data(), pages=st.integers(1, 4), same=st.booleans(), prot=PROTS)
    def map_next_to(self, data: st.DataObject, pages: int, same: bool, prot: int) -> None:
        """Map right after an existing entry: continuing its vaddr and owner (so translations
        merge across the boundary) or not."""
        maps = self.py.mappings()
        if maps:
            m = data.draw(st.sampled_from(maps))
            vaddr = (m.vaddr + m.length if same else m.vaddr + 1000 * PG) % TOP
            owner = m.owner if same else m.owner + 1
            self.both(lambda t: t.map(m.end % TOP, pages * PG, vaddr, prot, owner))

    @rule(data=st.data(), length=st.integers(1, 10 * PG), access=ACCESS, offset=st.integers(0, 99))
    def translate_mapped(self, data: st.DataObject, length: int, access: int, offset: int) -> None:
        iova = self._inside(data)
        if iova is not None:
            self.both(lambda t: t.translate(iova + offset, min(length, TOP - iova - offset), access))

    @rule(data=st.data(), length=st.one_of(st.integers(1, 3 * PG), st.sampled_from([1, 2, PG + 1])),
          offset=st.one_of(st.integers(0, PG - 1), st.sampled_from([0, PG - 1])))
    def mark_dirty_mapped(self, data: st.DataObject, length: int, offset: int) -> None:
        iova = self._inside(data)
        if iova is not None:
            self.both(lambda t: t.mark_dirty(iova + offset, min(length, TOP - iova - offset)))

    @rule(data=st.data(), before=st.integers(0, 3), pages=st.integers(1, 12), clear=st.booleans(),
          every=st.booleans())
    def read_dirty_mapped(self, data: st.DataObject, before: int, pages: int, clear: bool,
                          every: bool) -> None:
        iova = self._inside(data)
        if iova is not None:
            base = max(0, iova - before * PG)
            self.both(lambda t: t.read_dirty(base, min(pages * PG, TOP - base), clear=clear,
                                             all_mapped=every))

    @rule(data=st.data(), pages=st.integers(1, 3), access=ACCESS, unpin=st.booleans())
    def pin_mapped(self, data: st.DataObject, pages: int, access: int, unpin: bool) -> None:
        iova = self._inside(data)
        if iova is not None:
            length = min(pages * PG, TOP - iova)
            self.both(lambda t: t.unpin(iova, length) if unpin else t.pin(iova, length, access))

    @rule(data=st.data(), pages=st.integers(1, 3), before=st.integers(0, 2))
    def unmap_mapped(self, data: st.DataObject, pages: int, before: int) -> None:
        iova = self._inside(data)
        if iova is not None:
            base = max(0, iova - before * PG)
            self.both(lambda t: t.unmap(base, min(pages * PG, TOP - base)))

    @invariant()
    def same_state(self) -> None:
        if hasattr(self, "py"):
            assert self.py.mappings() == self.c.mappings()
            assert len(self.py) == len(self.c)
            assert self.py.dirty_tracking == self.c.dirty_tracking
            for page in range(PAGES):
                assert self.py.pin_count(page * PG) == self.c.pin_count(page * PG)


SameAnswers.TestCase.settings = settings(max_examples=200, stateful_step_count=80, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestSameAnswers = pytest.mark.skipif(not T.C_AVAILABLE, reason=NO_C)(SameAnswers.TestCase)


class SameAnswersByteMapped(SameAnswers):
    """An iommufd IOAS's table: byte-granular mappings, dirty bits and pins per 4 KiB page, so
    unaligned entries meet dirty tracking (refused while tracking: EINVAL in both)."""

    @initialize(layout=st.lists(st.tuples(st.integers(0, PAGES - 1), st.integers(1, 6),
                                          st.sampled_from([0, 0, 1, 1000]), OWNERS, PROTS),
                                min_size=2, max_size=24))
    def tables(self, layout: list[tuple[int, int, int, int, int]]) -> None:
        self.py = T.new_table(1, dirty_page_size=PG, backend="python")
        self.c = T.new_table(1, dirty_page_size=PG, backend="c")
        assert self.py.dirty_page_size == self.c.dirty_page_size == PG
        for page, pages, delta, owner, prot in layout:
            self.both(lambda t: t.map(page * PG, pages * PG, (page + delta) * PG, prot, owner))

    @rule(iova=iova_st(), shift=st.sampled_from([1, 100, PG // 2]), pages=st.integers(0, 3),
          tail=st.sampled_from([0, 0, 7, PG - 1]))
    def map_unaligned(self, iova: int, shift: int, pages: int, tail: int) -> None:
        start = (iova + shift) % TOP
        self.both(lambda t: t.map(start, min(pages * PG + tail, TOP - start), start, RW, 1))

    @rule(iova=iova_st(), shift=st.sampled_from([0, 1, 100, PG // 2]), length=st.integers(1, 3 * PG))
    def unmap_unaligned(self, iova: int, shift: int, length: int) -> None:
        start = (iova + shift) % TOP
        self.both(lambda t: t.unmap(start, min(length, TOP - start)))


SameAnswersByteMapped.TestCase.settings = SameAnswers.TestCase.settings
TestSameAnswersByteMapped = pytest.mark.skipif(not T.C_AVAILABLE, reason=NO_C)(
    SameAnswersByteMapped.TestCase)


def test_byte_mapped_table_tracks_dirty_pages(table_factory: Callable[..., TranslationTable]) -> None:
    """A 3 GiB area of a byte-granular table is tracked in 4 KiB pages (no 2^31-unit limit)."""
    t = table_factory(1, dirty_page_size=PG)
    gib = 1 << 30
    t.map(0x1000, 3 * gib, 0x7f0000000000, RW, 1)
    t.map(0x300, 0x100, 0x1000, RW, 2)                        # a byte-granular area
    assert errno_of(t.start_dirty_tracking) == errno.EINVAL     # not page-aligned
    t.unmap(0x300, 0x100)
    t.start_dirty_tracking()
    t.mark_dirty(0x1000 + 5 * PG + 17, 1)
    t.mark_dirty(0x1000 + 2 * gib, PG + 1)
    bits = int.from_bytes(t.read_dirty(0x1000, 3 * gib), "little")
    assert bits == (1 << 5) | (3 << (2 * gib // PG))
    assert errno_of(lambda: t.map(0x10, 0x20, 0, RW, 1)) == errno.EINVAL
    assert errno_of(lambda: t.unmap(0x1000 + 100, PG)) == errno.EINVAL   # would cut a page
    assert len(t) == 1
    assert errno_of(lambda: t.read_dirty(0x1000, 100)) == errno.EINVAL


@pytest.mark.skipif(not T.C_AVAILABLE, reason=NO_C)
def test_many_random_mappings_agree() -> None:
    """A larger, denser run than hypothesis explores: thousands of entries, the flat index
    built and invalidated repeatedly on the C side."""
    import random
    rng = random.Random(7)
    py, c = T.new_table(PG, backend="python"), T.new_table(PG, backend="c")
    for step in range(6000):
        iova = rng.randrange(0, 4096) * PG
        if rng.random() < 0.7:
            length = rng.randrange(1, 4) * PG
            op: Callable[[TranslationTable], object] = (
                lambda t, i=iova, n=length: t.map(i, n, i, RW, 1))
        else:
            length = rng.randrange(1, 64) * PG
            op = lambda t, i=iova, n=length: t.unmap(i, n)  # noqa: E731
        assert outcome(lambda: op(py)) == outcome(lambda: op(c))
        if step % 500 == 0:
            probes = [rng.randrange(0, 4200 * PG) for _ in range(3000)]
            assert py.count_mapped(probes) == c.count_mapped(probes)
            assert _lookup_into(py, probes) == _lookup_into(c, probes)
            assert [py.lookup(p) for p in probes[:300]] == [c.lookup(p) for p in probes[:300]]
    assert py.mappings() == c.mappings()


def _iter_backends() -> Iterator[str]:
    yield "python"
    if T.C_AVAILABLE:
        yield "c"


def test_factory_and_backend_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert T.BACKEND in ("c", "python")
    for name in _iter_backends():
        assert isinstance(T.new_table(backend=name), (T.PyTranslationTable, T.CTranslationTable))
    with pytest.raises(ValueError):
        T.new_table(backend="fortran")
    with pytest.raises(ValueError):
        T.new_table(3000)
