"""Device DMA into real process memory: this test process's own (process_vm_writev to oneself
works without privileges), through IOVA mappings of both table implementations.

Covers what an IOMMU guarantees: translated writes land where the mappings say, across mapping
boundaries; a blocked access writes nothing and reads nothing; every fault is recorded; memory of
an exited process is a fault, never a crash.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import sys
from typing import Iterator

import pytest

from ioasidfs.devices.dma import (DmaSpace, FaultLog, FaultRecord, dma_read, dma_read_into,
                                  dma_read_pages_into, dma_write, dma_write_pages)
from ioasidfs.engine import translate as T
from ioasidfs.engine.translate import PROT_READ, PROT_WRITE, FaultReason, OwnerRegistry
from ioasidfs.errors import IommuFault, IoasidfsError

PG = 4096
RW = PROT_READ | PROT_WRITE
BACKENDS = [
    "python",
    pytest.param("c", marks=pytest.mark.skipif(not T.C_AVAILABLE, reason="C extension not built")),
]


class World:
    """A table, an owner registry with this process in it, a fault log and 64 KiB of memory."""

    def __init__(self, backend: str) -> None:
        self.table = T.new_table(PG, backend=backend)
        self.owners = OwnerRegistry()
        self.me = self.owners.token((os.getpid(), 0))
        self.faults = FaultLog(capacity=8)
        self.space = DmaSpace(self.table, self.owners.key, self.faults)
        self.mem = ctypes.create_string_buffer(16 * PG)
        self.base = ctypes.addressof(self.mem)

    def at(self, offset: int, n: int) -> bytes:
        return self.mem.raw[offset:offset + n]


@pytest.fixture(params=BACKENDS)
def w(request: pytest.FixtureRequest) -> World:
    return World(request.param)


def test_write_and_read_through_a_mapping(w: World) -> None:
    w.table.map(0x100000, 4 * PG, w.base + PG, RW, w.me)
    dma_write(w.space, 0x100010, b"hello, memory", device="nic0")
    assert w.at(PG + 0x10, 13) == b"hello, memory"
    assert dma_read(w.space, 0x100010, 13, device="nic0") == b"hello, memory"
    into = bytearray(5)
    dma_read_into(w.space, 0x100010, into)
    assert into == b"hello"
    assert w.faults.records() == []


def test_a_transfer_across_mappings_follows_each(w: World) -> None:
    # Two adjacent IOVA pages backed by non-adjacent memory, in reverse order: one DMA, two
    # segments, one vectored syscall.
    w.table.map(0x200000, PG, w.base + 5 * PG, RW, w.me)
    w.table.map(0x201000, PG, w.base + 2 * PG, RW, w.me)
    data = bytes(range(256)) * 16 * 2        # 8 KiB
    dma_write(w.space, 0x200000 + 100, data[:PG])
    assert w.at(5 * PG + 100, PG - 100) == data[:PG - 100]
    assert w.at(2 * PG, 100) == data[PG - 100:PG]
    assert dma_read(w.space, 0x200000 + 100, PG) == data[:PG]


def test_a_large_transfer(w: World) -> None:
    big = mmap.mmap(-1, 1 << 20)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(big))
    try:
        w.table.map(1 << 30, 1 << 20, addr, RW, w.me)
        payload = os.urandom(1 << 20)
        dma_write(w.space, 1 << 30, payload)
        assert big[:] == payload
        assert dma_read(w.space, 1 << 30, 1 << 20) == payload
    finally:
        del addr
        import gc
        gc.collect()
        big.close()


def test_unmapped_iova_faults_and_writes_nothing(w: World) -> None:
    w.table.map(0x100000, 2 * PG, w.base, RW, w.me)
    before = w.mem.raw
    with pytest.raises(IommuFault) as info:
        dma_write(w.space, 0x101000, b"x" * (2 * PG), device="ssd")   # runs off the end
    fault = info.value
    assert isinstance(fault, IoasidfsError)
    assert (fault.iova, fault.device, fault.access, fault.reason) == (
        0x102000, "ssd", "write", FaultReason.NOT_MAPPED)
    assert w.mem.raw == before                  # not even the mapped first page
    [rec] = w.faults.records()
    assert (rec.seq, rec.iova, rec.device, rec.access, rec.reason, rec.length) == (
        1, 0x102000, "ssd", "write", FaultReason.NOT_MAPPED, 2 * PG)
    assert rec.time > 0 and "not-mapped" in rec.line()


def test_page_wise_transfers_lose_only_the_blocked_pages(w: World) -> None:
    """What a DMA engine does (and the reference VM's edu showed): each page is a transaction of
    its own. A write across mapped, unmapped and read-only pages writes the mapped writable ones;
    a read gets zeros for the blocked pages. One fault record per blocked page."""
    w.table.map(0x100000, PG, w.base, RW, w.me)
    w.table.map(0x102000, PG, w.base + 2 * PG, RW, w.me)
    w.table.map(0x103000, PG, w.base + 3 * PG, PROT_READ, w.me)
    data = bytes(range(256)) * 16 * 4  # four pages, starting half way into the first
    fault = dma_write_pages(w.space, 0x100800, data[:3 * PG + 0x800], device="edu")
    assert fault is not None and (fault.iova, fault.reason) == (0x101000, FaultReason.NOT_MAPPED)
    assert w.at(0x800, 0x800) == data[:0x800]
    assert w.at(PG, PG) == bytes(PG)  # the unmapped IOVA page: nothing of it anywhere
    assert w.at(2 * PG, PG) == data[0x1800:0x2800]
    assert w.at(3 * PG, PG) == bytes(PG)  # read-only for the device
    assert [(r.iova, r.reason) for r in w.faults.records()] == [
        (0x101000, FaultReason.NOT_MAPPED), (0x103000, FaultReason.NO_PERMISSION)]
    w.mem[3 * PG:4 * PG] = b"\x77" * PG
    into = bytearray(b"\xee" * (3 * PG + 0x800))
    fault = dma_read_pages_into(w.space, 0x100800, into)
    assert fault is not None and fault.iova == 0x101000
    assert into == data[:0x800] + bytes(PG) + data[0x1800:0x2800] + b"\x77" * PG
    assert dma_write_pages(w.space, 0x102000, b"ok") is None and w.at(2 * PG, 2) == b"ok"


def test_permission_faults_block_the_whole_access(w: World) -> None:
    w.table.map(0x100000, PG, w.base, RW, w.me)
    w.table.map(0x101000, PG, w.base + PG, PROT_READ, w.me)    # device may only read it
    w.table.map(0x102000, PG, w.base + 2 * PG, PROT_WRITE, w.me)
    before = w.mem.raw
    with pytest.raises(IommuFault) as info:
        dma_write(w.space, 0x100ff0, b"y" * 32)
    assert (info.value.iova, info.value.reason) == (0x101000, FaultReason.NO_PERMISSION)
    assert w.mem.raw == before
    buffer = bytearray(b"untouched")
    with pytest.raises(IommuFault) as info:
        dma_read_into(w.space, 0x102000, buffer)
    assert (info.value.access, info.value.reason) == ("read", FaultReason.NO_PERMISSION)
    assert buffer == b"untouched"
    dma_write(w.space, 0x102000, b"ok")                        # write-only allows writes
    assert [r.reason for r in w.faults] == [FaultReason.NO_PERMISSION] * 2


def test_iova_outside_the_space_is_a_fault(w: World) -> None:
    with pytest.raises(IommuFault) as info:
        dma_read(w.space, (1 << 64) - 2, 4)
    assert info.value.reason is FaultReason.NOT_MAPPED


def test_device_writes_are_dirty_reads_are_not(w: World) -> None:
    w.table.map(0, 8 * PG, w.base, RW, w.me)
    w.table.start_dirty_tracking()
    dma_write(w.space, 3 * PG - 2, b"abcd")                    # straddles pages 2 and 3
    dma_read(w.space, 6 * PG, 10)
    assert w.table.read_dirty(0, 8 * PG) == (0b1100).to_bytes(8, "little")
    with pytest.raises(IommuFault):
        dma_write(w.space, 7 * PG, b"z" * (2 * PG))            # faults: nothing written
    assert w.table.read_dirty(0, 8 * PG) == bytes(8)


def _exited_child(reap: bool) -> tuple[int, int]:
    """(pid, start time) of a child that has exited: reaped, or left a zombie. posix_spawn, not
    subprocess, so that nothing reaps the zombie behind the test's back."""
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], dict(os.environ))
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    start = int(stat[stat.rindex(b")") + 2:].split()[19])
    if reap:
        os.waitpid(pid, 0)
    else:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)      # exited, not reaped
        with open(f"/proc/{pid}/stat", "rb") as f:
            assert f.read().split(b") ")[1][:1] == b"Z"
    return pid, start


@pytest.fixture
def zombie() -> Iterator[tuple[int, int]]:
    pid, start = _exited_child(reap=False)
    yield pid, start
    os.waitpid(pid, 0)


@pytest.mark.parametrize("backend", ["python"] + (["c"] if T.C_AVAILABLE else []))
def test_memory_of_an_exited_process_is_a_fault(backend: str, zombie: tuple[int, int]) -> None:
    w = World(backend)
    gone = w.owners.token(_exited_child(reap=True))
    undead = w.owners.token(zombie)
    w.table.map(0x100000, PG, 0x10000, RW, gone)
    w.table.map(0x200000, PG, 0x10000, RW, undead)
    for iova in (0x100000, 0x200000):
        with pytest.raises(IommuFault) as info:
            dma_write(w.space, iova, b"late", device="gpu")
        assert info.value.reason is FaultReason.OWNER_EXITED
        with pytest.raises(IommuFault):
            dma_read(w.space, iova, 4, device="gpu")
    assert [r.reason for r in w.faults] == [FaultReason.OWNER_EXITED] * 4


def test_a_reused_pid_is_not_the_owner(w: World) -> None:
    """The owner is (pid, start time): the same pid with another start time is someone else."""
    impostor = w.owners.token((os.getpid(), 1))
    w.table.map(0x100000, PG, w.base, RW, impostor)
    with pytest.raises(IommuFault) as info:
        dma_write(w.space, 0x100000, b"x")
    assert info.value.reason is FaultReason.OWNER_EXITED
    assert w.mem.raw == bytes(16 * PG)


def test_backing_memory_gone_from_the_owner(w: World) -> None:
    hole = mmap.mmap(-1, PG)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(hole))
    import gc
    gc.collect()
    hole.close()                                               # munmap: the vaddr is now a hole
    w.table.map(0x100000, PG, addr, RW, w.me)
    with pytest.raises(IommuFault) as info:
        dma_write(w.space, 0x100000, b"x" * 16)
    assert info.value.reason is FaultReason.OWNER_MEMORY


def test_fault_log_interface() -> None:
    log = FaultLog(capacity=2)
    seen: list[FaultRecord] = []
    unsubscribe = log.subscribe(seen.append)
    log.subscribe(lambda rec: 1 / 0)                           # a broken observer is tolerated
    for i in range(3):
        log.record(float(i), 0x1000 * i, "dev", "read", FaultReason.NOT_MAPPED, 4)
    assert [r.seq for r in log.records()] == [2, 3]
    assert (log.total, log.dropped, len(log)) == (3, 1, 2)
    assert [r.seq for r in log.since(2)] == [3]
    assert [r.seq for r in seen] == [1, 2, 3]
    unsubscribe()
    log.record(9.0, 0, "dev", "write", FaultReason.NO_PERMISSION, 1, "detail")
    assert len(seen) == 3
    assert log.records()[-1].line().endswith("no-permission (detail)")
    log.clear()
    assert log.records() == [] and log.total == 4
