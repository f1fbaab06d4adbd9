"""The type1 IOMMU backend: GET_INFO, MAP_DMA, UNMAP_DMA, DIRTY_PAGES, UPDATE_VADDR, accounting.

Every expectation here is the kernel's (shared/spec/vfio-legacy.md §2.1-§2.2, checked against
upstream vfio_iommu_type1.c); rows marked "VM" were also observed on the reference 6.1 VM with a
probe program. Errors must leave the caller's memory untouched, so every helper compares the
argument bytes before and after.
"""
from __future__ import annotations

import dataclasses
import errno
import struct
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ioasidfs.config import load_config
from ioasidfs.engine import Caller, Engine, FakeMemory, FileKind
from ioasidfs.engine.caller import PinScan
from ioasidfs.engine.type1 import ContainerFile, Type1Iommu
from ioasidfs.errors import KernelError
from ioasidfs.uapi import vfio as V

PAGE = 4096
BUF = 0x10000  # where ioctl arguments live
BITMAP = 0x20000  # a user dirty bitmap
RAM = 0x40000000  # the caller's DMA buffer
RAM_PAGES = 64
R, W, RW = V.VFIO_DMA_MAP_FLAG_READ, V.VFIO_DMA_MAP_FLAG_WRITE, 3
VADDR = V.VFIO_DMA_MAP_FLAG_VADDR
GET_DIRTY, ALL, INVALIDATE = (V.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, V.VFIO_DMA_UNMAP_FLAG_ALL,
                              V.VFIO_DMA_UNMAP_FLAG_VADDR)
START, STOP, GET_BITMAP = (V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START, V.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
                           V.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)
MSI = 0xFEE00000
APERTURE_END = 1 << 39  # the default config's 39-bit intel-iommu


class Process:
    """One client process: its memory, credentials and the Caller the daemon would build."""

    def __init__(self, env: Env, pid: int, memlock: int = -1, cap: bool = False) -> None:
        self.memory = FakeMemory()
        self.memory.map(BUF, 2 * PAGE)
        self.memory.map(BITMAP, PAGE)
        self.memory.map(RAM, RAM_PAGES * PAGE)
        self.memlock = memlock
        self.cap = cap
        self.vmlck = 0  # pages the process mlock()ed itself
        self.caller = Caller(pid=pid, memory=self.memory, resolve_fd=env.resolve,
                             can_lock_memory=lambda: self.cap, memlock_limit=lambda: self.memlock,
                             check_user_range=self.memory.scan_pin, locked_pages=lambda: self.vmlck,
                             start_time=lambda: 1000 + pid)


class Env:
    """An engine with one container holding group 1, set to type1 (v1) or type1v2."""

    def __init__(self, v2: bool = True, *, dma_entry_limit: int | None = None,
                 memlock: int = -1, cap: bool = False, address_width: int | None = None) -> None:
        config = load_config(None)
        iommu = config.iommu
        if dma_entry_limit is not None:
            iommu = dataclasses.replace(iommu, dma_entry_limit=dma_entry_limit)
        if address_width is not None:
            iommu = dataclasses.replace(iommu, address_width=address_width)
        config = dataclasses.replace(config, iommu=iommu)
        self.engine = Engine(config, still_open=lambda f: True)
        self.fds: dict[int, object] = {}
        self.proc = Process(self, 100, memlock, cap)
        self.container = self.open(FileKind.CONTAINER)
        self.group = self.open(FileKind.GROUP, 1)
        self.attach(self.group)
        self.ioctl(self.container, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU if v2 else V.VFIO_TYPE1_IOMMU)

    # ---- plumbing
    def resolve(self, fd: int) -> object:
        if fd not in self.fds:
            raise KernelError(errno.EBADF, "closed")
        return self.fds[fd]

    def open(self, kind: FileKind, key: object = None) -> Any:
        file = self.engine.open(kind, key, self.proc.caller)
        self.fds[len(self.fds) + 3] = file
        return file

    def fd_of(self, file: object) -> int:
        return next(fd for fd, f in self.fds.items() if f is file)

    def ioctl(self, file: Any, cmd: int, arg: int = 0, proc: Process | None = None) -> int:
        return int(file.ioctl((proc or self.proc).caller, cmd, arg))

    def call(self, file: Any, cmd: int, arg: int = 0, proc: Process | None = None) -> int:
        """0 (or the return value) on success, else the errno."""
        try:
            return self.ioctl(file, cmd, arg, proc)
        except KernelError as e:
            return -e.errno

    def attach(self, group: Any, container: Any = None) -> int:
        self.proc.memory.write(BUF, struct.pack("<i", self.fd_of(container or self.container)))
        return self.call(group, V.VFIO_GROUP_SET_CONTAINER, BUF)

    @property
    def iommu(self) -> Type1Iommu:
        assert isinstance(self.container, ContainerFile)
        iommu = self.container.container.iommu
        assert iommu is not None
        return iommu

    # ---- the ioctls, with their argument bytes checked
    def map(self, iova: int, size: int, vaddr: int = RAM, flags: int = RW, *, argsz: int = 32,
            proc: Process | None = None) -> int:
        proc = proc or self.proc
        arg = V.DMA_MAP.pack(argsz=argsz, flags=flags, vaddr=vaddr, iova=iova, size=size)
        proc.memory.write(BUF, arg)
        result = self.call(self.container, V.VFIO_IOMMU_MAP_DMA, BUF, proc)
        assert proc.memory.read(BUF, 32) == arg, "MAP_DMA writes nothing back"
        return result

    def unmap(self, iova: int, size: int, flags: int = 0, *, argsz: int = 24,
              bitmap: tuple[int, int, int] | None = None, proc: Process | None = None) -> tuple[int, int]:
        """(result, bytes unmapped as written back); on failure the struct must be unchanged."""
        proc = proc or self.proc
        arg = V.DMA_UNMAP.pack(argsz=argsz, flags=flags, iova=iova, size=size)
        if bitmap is not None:
            arg += V.BITMAP.pack(pgsize=bitmap[0], size=bitmap[1], data=bitmap[2])
        proc.memory.write(BUF, arg)
        result = self.call(self.container, V.VFIO_IOMMU_UNMAP_DMA, BUF, proc)
        after = proc.memory.read(BUF, len(arg))
        if result < 0:
            assert after == arg, "a failed UNMAP_DMA writes nothing back"
        else:
            assert after[:16] == arg[:16] and after[24:] == arg[24:], "only size is written back"
        return result, struct.unpack_from("<Q", after, 16)[0]

    def get_info(self, argsz: int, fill: int = 0xA5) -> tuple[int, bytes]:
        self.proc.memory.write(BUF, bytes([fill]) * 160)
        self.proc.memory.write(BUF, struct.pack("<I", argsz))
        return self.call(self.container, V.VFIO_IOMMU_GET_INFO, BUF), self.proc.memory.read(BUF, 160)

    def dirty(self, flags: int, *, argsz: int = 8, get: tuple[int, int, int, int, int] | None = None) -> int:
        arg = V.DIRTY_BITMAP.pack(argsz=argsz, flags=flags)
        if get is not None:
            iova, size, pgsize, bm_size, data = get
            arg += V.DIRTY_BITMAP_GET.pack(iova=iova, size=size, bitmap_pgsize=pgsize,
                                           bitmap_size=bm_size, bitmap_data=data)
        self.proc.memory.write(BUF, arg)
        result = self.call(self.container, V.VFIO_IOMMU_DIRTY_PAGES, BUF)
        assert self.proc.memory.read(BUF, len(arg)) == arg, "DIRTY_PAGES writes nothing into its struct"
        return result

    def get_bitmap(self, iova: int, size: int, bm_size: int = 16, pgsize: int = PAGE) -> int:
        return self.dirty(GET_BITMAP, argsz=48, get=(iova, size, pgsize, bm_size, BITMAP))

    def bitmap_words(self, n: int = 3) -> list[int]:
        return list(struct.unpack(f"<{n}Q", self.proc.memory.read(BITMAP, 8 * n)))

    def set_bitmap_words(self, *words: int) -> None:
        self.proc.memory.write(BITMAP, bytes(PAGE))
        self.proc.memory.write(BITMAP, struct.pack(f"<{len(words)}Q", *words))

    def charged(self, proc: Process | None = None) -> int:
        return self.engine.locked_memory.pages_of((proc or self.proc).caller.process_key())


# ============================================================================ GET_INFO

def _info_header(argsz: int, cap_offset: int = 0) -> bytes:
    return struct.pack("<IIQII", argsz, 3, 0x40201000, cap_offset, 0)


def _info_chain(dma_avail: int = 0xFFFF) -> bytes:
    """The upstream chain at offset 24: MIGRATION @24, DMA_AVAIL @56 (12 bytes padded to 16),
    IOVA_RANGE @72 with the two ranges around the MSI window; 96 bytes, 120 in all."""
    return (struct.pack("<HHIIIQQ", 2, 1, 56, 0, 0, 0x1000, 0x10000000)
            + struct.pack("<HHII4x", 3, 1, 72, dma_avail)
            + struct.pack("<HHIII", 1, 1, 0, 2, 0)
            + struct.pack("<QQQQ", 0, 0xFEDFFFFF, 0xFEF00000, APERTURE_END - 1))


@pytest.mark.parametrize("argsz, written", [
    (16, _info_header(120)[:16]),  # grown; only 16 bytes fit
    (20, _info_header(120)[:20]),
    (24, _info_header(120)),
    (119, _info_header(120)),  # one byte short: grown, chain not copied
    (120, _info_header(120, 24) + _info_chain()),
    (130, _info_header(130, 24) + _info_chain()),  # argsz echoed; bytes past the chain untouched
])
def test_get_info_bytes(argsz: int, written: bytes) -> None:
    env = Env()
    assert env.get_info(argsz) == (0, written + b"\xa5" * (160 - len(written)))


def test_get_info_reports_dma_avail_and_errors() -> None:
    env = Env(v2=False)
    assert env.map(0x1000, PAGE) == 0
    assert env.get_info(120)[1][:120] == _info_header(120, 24) + _info_chain(0xFFFE)
    assert env.call(env.container, V.VFIO_IOMMU_GET_INFO, 0) == -errno.EFAULT
    assert env.get_info(15) == (-errno.EINVAL, struct.pack("<I", 15) + b"\xa5" * 156)


def test_get_info_chain_that_cannot_be_copied_fails_before_the_header() -> None:
    env = Env()
    env.proc.memory.unmap(BUF)
    env.proc.memory.map(BUF, 64)  # room for the header, not for the chain
    env.proc.memory.write(BUF, struct.pack("<I", 120) + b"\xa5" * 60)
    assert env.call(env.container, V.VFIO_IOMMU_GET_INFO, BUF) == -errno.EFAULT
    assert env.proc.memory.read(BUF, 64) == struct.pack("<I", 120) + b"\xa5" * 60


# ============================================================================ MAP_DMA

@pytest.mark.parametrize("row", [
    # (what, iova, size, vaddr, flags, argsz, errno)
    ("classic read-write map", 0x100000, 0x4000, RAM, RW, 32, 0),
    ("write-only is legal", 0x100000, PAGE, RAM, W, 32, 0),
    ("read-only", 0x100000, PAGE, RAM, R, 32, 0),
    ("argsz below 32", 0x100000, PAGE, RAM, RW, 31, errno.EINVAL),
    ("unknown flag", 0x100000, PAGE, RAM, RW | 8, 32, errno.EINVAL),
    ("neither READ nor WRITE", 0x100000, PAGE, RAM, 0, 32, errno.EINVAL),
    ("VADDR with READ", 0x100000, PAGE, RAM, VADDR | R, 32, errno.EINVAL),
    ("size 0", 0x100000, 0, RAM, RW, 32, errno.EINVAL),
    ("size not page aligned", 0x100000, 0x800, RAM, RW, 32, errno.EINVAL),
    ("iova not page aligned", 0x100800, PAGE, RAM, RW, 32, errno.EINVAL),
    ("vaddr not page aligned", 0x100000, PAGE, RAM + 0x10, RW, 32, errno.EINVAL),
    # >= 6.18: size 0 and overflow come first, overflow is EOVERFLOW (6.1: EINVAL, after prot)
    ("iova wraps", 0xFFFFFFFFFFFFF000, 0x2000, RAM, RW, 32, errno.EOVERFLOW),
    ("vaddr wraps", 0x100000, 0x2000, 0xFFFFFFFFFFFFF000, RW, 32, errno.EOVERFLOW),
    ("size wraps", 0x110000, 0xFFFFFFFFFFFFF000, RAM, RW, 32, errno.EOVERFLOW),
    ("wraps, and no READ/WRITE", 0xFFFFFFFFFFFFF000, 0x2000, RAM, 0, 32, errno.EOVERFLOW),
    ("wraps, and unaligned", 0xFFFFFFFFFFFFF800, 0x1000, RAM, RW, 32, errno.EOVERFLOW),
    ("size 0 and no READ/WRITE", 0x100000, 0, RAM, 0, 32, errno.EINVAL),
    ("ends at 2^64, outside the aperture", 0xFFFFFFFFFFFFF000, 0x1000, RAM, RW, 32, errno.EINVAL),
    ("inside the MSI window", MSI, PAGE, RAM, RW, 32, errno.EINVAL),
    ("across the MSI window's start", MSI - PAGE, 2 * PAGE, RAM, RW, 32, errno.EINVAL),
    ("past the aperture", APERTURE_END, PAGE, RAM, RW, 32, errno.EINVAL),
    ("last page of the aperture", APERTURE_END - PAGE, PAGE, RAM, RW, 32, 0),
    ("vaddr not mapped", 0x100000, PAGE, 0x7000000, RW, 32, errno.EFAULT),
    ("vaddr runs off the buffer", 0x100000, (RAM_PAGES + 1) * PAGE, RAM, RW, 32, errno.EFAULT),
])
def test_map_dma_validation(row: tuple[str, int, int, int, int, int, int]) -> None:
    _, iova, size, vaddr, flags, argsz, err = row
    env = Env()
    assert env.map(iova, size, vaddr, flags, argsz=argsz) == -err
    assert len(env.iommu.mappings) == (1 if err == 0 else 0)
    assert env.iommu.dma_avail == 65535 - (1 if err == 0 else 0)


@pytest.mark.parametrize("prot, kind, flags, err, charged", [
    ("r", "ram", W, errno.EFAULT, 0),  # WRITE pin of a read-only VMA (VM)
    ("r", "ram", R, 0, 1),
    ("", "ram", R, errno.EFAULT, 0),  # PROT_NONE (VM)
    ("w", "ram", W, 0, 1),  # a WRITE pin needs only VM_WRITE
    ("rw", "untouched", R, 0, 0),  # the shared zero page is not charged (VM)
    ("rw", "untouched", RW, 0, 1),  # a write pin faults a real page in (VM)
    ("rw", "pfnmap", RW, 0, 0),  # a BAR mmap: mapped, never charged
    ("r", "pfnmap", W, errno.EFAULT, 0),
    ("rw", "io", R, errno.EFAULT, 0),
    ("rw", "dirty-tracked-file", RW, errno.EFAULT, 0),  # >= 6.5: no long-term writable file pins
    ("rw", "dirty-tracked-file", R, 0, 1),
])
def test_map_dma_pins_by_memory_kind(prot: str, kind: Any, flags: int, err: int, charged: int) -> None:
    env = Env()
    env.proc.memory.map(0x50000000, PAGE, prot=prot, kind=kind)
    assert env.map(0x100000, PAGE, 0x50000000, flags) == -err
    assert env.charged() == charged


def test_map_dma_with_a_null_argument_is_efault() -> None:
    env = Env()
    assert env.call(env.container, V.VFIO_IOMMU_MAP_DMA, 0) == -errno.EFAULT


def test_map_dma_check_order_eexist_enospc_einval_efault() -> None:
    """With dma_entry_limit=2 and two mappings (VM, module parameter set to 2): an overlap is
    EEXIST; anything else is ENOSPC, even outside the IOVA ranges or from an unmapped vaddr.
    With room again, the IOVA range check (EINVAL) comes before pinning (EFAULT)."""
    env = Env(dma_entry_limit=2)
    assert env.map(0x1000, PAGE) == 0
    assert env.map(0x2000, PAGE) == 0
    assert env.map(0x2000, PAGE) == -errno.EEXIST
    assert env.map(0x3000, PAGE) == -errno.ENOSPC
    assert env.map(MSI, PAGE) == -errno.ENOSPC
    assert env.map(0x5000, PAGE, vaddr=0x7000000) == -errno.ENOSPC
    assert env.unmap(0, 0, ALL) == (0, 0x2000)
    assert env.map(MSI, PAGE, vaddr=0x7000000) == -errno.EINVAL
    assert env.map(0x5000, PAGE, vaddr=0x7000000) == -errno.EFAULT
    assert env.map(0x2000, 0x800) == -errno.EINVAL  # alignment before overlap


def test_adjacent_maps_are_never_merged() -> None:
    env = Env()
    assert env.map(0x1000, PAGE) == 0
    assert env.map(0x2000, PAGE, RAM + PAGE) == 0
    assert [(m.iova, m.size) for m in env.iommu.mappings] == [(0x1000, PAGE), (0x2000, PAGE)]
    assert env.iommu.dma_avail == 65533
    assert env.map(0x1000, 0x2000) == -errno.EEXIST
    assert env.map(0, 0x10000) == -errno.EEXIST


# ============================================================================ accounting

def test_memlock_limit_counts_pages_and_the_zero_page_is_free() -> None:
    """RLIMIT_MEMLOCK 32 KiB without CAP_IPC_LOCK (VM): 8 pages fit, a 9th is ENOMEM, a
    read-only pin of never-written memory (the zero page) still succeeds."""
    env = Env(memlock=8 * PAGE)
    assert env.map(0x100000, 8 * PAGE) == 0
    assert env.charged() == 8
    assert env.map(0x200000, PAGE, RAM + 8 * PAGE) == -errno.ENOMEM
    env.proc.memory.map(0x50000000, PAGE, kind="untouched")
    assert env.map(0x300000, PAGE, 0x50000000, R) == 0
    assert env.charged() == 8
    env.proc.memlock = 0
    env.proc.memory.map(0x51000000, PAGE, kind="untouched")
    assert env.map(0x400000, PAGE, 0x51000000, R) == 0  # nothing to charge: limit 0 is fine


@pytest.mark.parametrize("hole, err", [(10, errno.ENOMEM), (3, errno.EFAULT), (8, errno.EFAULT)])
def test_memlock_versus_unpinnable_page_order(hole: int, err: int) -> None:
    """Pages are pinned and charged in address order (VM): the limit (8 pages) is crossed at
    the 9th page, so a hole after it gives ENOMEM and a hole before or at it EFAULT."""
    env = Env(memlock=8 * PAGE)
    env.proc.memory.unmap(RAM)
    env.proc.memory.map(RAM, hole * PAGE)
    env.proc.memory.map(RAM + (hole + 1) * PAGE, (20 - hole) * PAGE)
    assert env.map(0x100000, 11 * PAGE) == -err
    assert env.charged() == 0
    assert env.iommu.dma_avail == 65535 and len(env.iommu.mappings) == 0


def test_cap_ipc_lock_and_unlimited_bypass_the_limit() -> None:
    env = Env(memlock=0, cap=True)
    assert env.map(0x100000, 16 * PAGE) == 0
    assert env.charged() == 16  # still charged, just not limited
    env.proc.cap, env.proc.memlock = False, -1
    assert env.map(0x200000, 16 * PAGE) == 0
    assert env.charged() == 32


def test_same_page_twice_and_two_containers_count_twice() -> None:
    env = Env(memlock=6 * PAGE)
    assert env.map(0x100000, 2 * PAGE) == 0
    assert env.map(0x200000, 2 * PAGE) == 0  # same pages, another IOVA
    assert env.charged() == 4
    container2 = env.open(FileKind.CONTAINER)
    assert env.attach(env.open(FileKind.GROUP, 2), container2) == 0
    assert env.ioctl(container2, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU) == 0
    env.proc.memory.write(BUF, V.DMA_MAP.pack(argsz=32, flags=RW, vaddr=RAM, iova=0x100000, size=3 * PAGE))
    assert env.call(container2, V.VFIO_IOMMU_MAP_DMA, BUF) == -errno.ENOMEM
    env.proc.memory.write(BUF, V.DMA_MAP.pack(argsz=32, flags=RW, vaddr=RAM, iova=0x100000, size=2 * PAGE))
    assert env.call(container2, V.VFIO_IOMMU_MAP_DMA, BUF) == 0
    assert env.charged() == 6


def test_mlocked_pages_count_toward_the_limit() -> None:
    env = Env(memlock=8 * PAGE)
    env.proc.vmlck = 6
    assert env.map(0x100000, 3 * PAGE) == -errno.ENOMEM
    assert env.map(0x100000, 2 * PAGE) == 0


def test_charges_are_per_process_and_given_back() -> None:
    env = Env(memlock=4 * PAGE)
    other = Process(env, 200, memlock=4 * PAGE)
    assert env.map(0x100000, 4 * PAGE) == 0
    assert env.map(0x200000, 4 * PAGE, proc=other) == 0  # its own budget
    assert (env.charged(), env.charged(other)) == (4, 4)
    assert env.unmap(0x200000, 4 * PAGE, proc=env.proc) == (0, 4 * PAGE)  # anyone may unmap...
    assert (env.charged(), env.charged(other)) == (4, 0)  # ...the owner gets the pages back
    assert env.ioctl(env.group, V.VFIO_GROUP_UNSET_CONTAINER) == 0  # the last group leaves
    assert env.engine.locked_memory.total() == 0


def test_a_reused_pid_does_not_inherit_a_charge() -> None:
    env = Env(memlock=4 * PAGE)
    assert env.map(0x100000, 4 * PAGE) == 0
    reborn = Process(env, 100, memlock=4 * PAGE)
    reborn.caller.start_time = lambda: 5000
    assert env.map(0x200000, 4 * PAGE, proc=reborn) == 0


# ============================================================================ UNMAP_DMA

A, B = (0x1000, 0x2000), (0x3000, 0x2000)  # the spec's worked example: two adjacent mappings


@pytest.mark.parametrize("iova, size, flags, v1, v2", [
    (0x1000, 0x2000, 0, (0, 0x2000), (0, 0x2000)),
    (0x1000, 0x1000, 0, (0, 0x2000), (-errno.EINVAL, 0x1000)),  # v1 unmaps all of A
    (0x2000, 0x3000, 0, (0, 0), (-errno.EINVAL, 0x3000)),  # v1 stops at A: nothing
    (0x0, 0x10000, 0, (0, 0x4000), (0, 0x4000)),
    (0x10000, 0x1000, 0, (0, 0), (0, 0)),
    (0, 0, ALL, (0, 0x4000), (0, 0x4000)),
    (0x2000, 0x10000, 0, (0, 0), (-errno.EINVAL, 0x10000)),  # v1: starting inside A skips B too
    (0x0, 0x4000, 0, (0, 0x4000), (-errno.EINVAL, 0x4000)),  # v1 removes B whole
])
def test_unmap_worked_examples_v1_and_v2(iova: int, size: int, flags: int, v1: tuple[int, int],
                                         v2: tuple[int, int]) -> None:
    """VM: the same table on the 6.1 kernel, written-back size included."""
    for is_v2, expected in ((False, v1), (True, v2)):
        env = Env(v2=is_v2)
        assert env.map(*A) == 0 and env.map(B[0], B[1], RAM + 0x2000) == 0
        assert env.unmap(iova, size, flags) == expected
        assert env.iommu.dma_avail + len(env.iommu.mappings) == 65535
        assert env.charged() == sum(m.size for m in env.iommu.mappings) // PAGE


@pytest.mark.parametrize("row", [
    ("argsz below 24", dict(iova=0x1000, size=PAGE, argsz=23), -errno.EINVAL),
    ("unknown flag", dict(iova=0x1000, size=PAGE, flags=8), -errno.EINVAL),
    ("GET_DIRTY_BITMAP with ALL", dict(iova=0, size=0, flags=GET_DIRTY | ALL), -errno.EINVAL),
    ("GET_DIRTY_BITMAP with VADDR", dict(iova=0, size=PAGE, flags=GET_DIRTY | INVALIDATE), -errno.EINVAL),
    ("iova not aligned", dict(iova=0x1800, size=PAGE), -errno.EINVAL),
    ("size 0", dict(iova=0x1000, size=0), -errno.EINVAL),
    ("size not aligned", dict(iova=0x1000, size=0x800), -errno.EINVAL),
    ("wraps", dict(iova=0xFFFFFFFFFFFFF000, size=0x2000), -errno.EOVERFLOW),  # >= 6.18
    ("wraps, size unaligned", dict(iova=0xFFFFFFFFFFFFF000, size=0x2800), -errno.EINVAL),
    ("ends at 2^64 exactly", dict(iova=0xFFFFFFFFFFFFF000, size=0x1000), 0),
    ("ALL with an iova", dict(iova=0x1000, size=0, flags=ALL), -errno.EINVAL),
    ("ALL with a size", dict(iova=0, size=PAGE, flags=ALL), -errno.EINVAL),
    ("VADDR|ALL", dict(iova=0, size=0, flags=INVALIDATE | ALL), 0),
])
def test_unmap_dma_validation(row: tuple[str, dict[str, Any], int]) -> None:
    _, kwargs, expected = row
    env = Env()
    assert env.map(0x1000, PAGE) == 0
    result, _ = env.unmap(**kwargs)
    assert result == expected


@pytest.mark.parametrize("bitmap, argsz, err", [
    ((PAGE, 8, BITMAP), 47, errno.EINVAL),  # no room for the vfio_bitmap
    ((PAGE, 0, BITMAP), 48, errno.EINVAL),  # empty bitmap
    ((PAGE, 8, 1 << 47), 48, errno.EINVAL),  # not user memory (access_ok)
    ((PAGE, 0x10000008, BITMAP), 48, errno.EINVAL),  # above max_dirty_bitmap_size
    ((1 << 20, 8, BITMAP), 48, errno.EINVAL),  # npages = size >> 20 = 0
    ((0x2000, 8, BITMAP), 48, errno.EINVAL),  # not the IOMMU's page size
    ((PAGE, 8, BITMAP), 48, errno.EINVAL),  # dirty tracking is off
])
def test_unmap_get_dirty_bitmap_validation(bitmap: tuple[int, int, int], argsz: int, err: int) -> None:
    env = Env()
    assert env.map(0x1000, PAGE) == 0
    assert env.unmap(0x1000, PAGE, GET_DIRTY, argsz=argsz, bitmap=bitmap)[0] == -err
    assert len(env.iommu.mappings) == 1


def test_unmap_get_dirty_bitmap_struct_unreadable_is_efault() -> None:
    env = Env()
    env.proc.memory.write(BUF + 2 * PAGE - 24, V.DMA_UNMAP.pack(argsz=48, flags=GET_DIRTY, iova=0, size=PAGE))
    assert env.call(env.container, V.VFIO_IOMMU_UNMAP_DMA, BUF + 2 * PAGE - 24) == -errno.EFAULT


def test_unmap_on_v1_with_get_dirty_bitmap_is_einval() -> None:
    env = Env(v2=False)
    assert env.unmap(0x1000, PAGE, GET_DIRTY, argsz=48, bitmap=(PAGE, 8, BITMAP))[0] == -errno.EINVAL


def test_unmap_whose_write_back_faults_has_still_unmapped() -> None:
    """The kernel unmaps first and copies the size out last: EFAULT, yet the mapping is gone."""
    env = Env()
    assert env.map(0x1000, PAGE) == 0
    env.proc.memory.map(0x60000000, PAGE, prot="r")
    env.proc.memory.regions[0x60000000].data[:24] = V.DMA_UNMAP.pack(argsz=24, flags=0, iova=0x1000, size=PAGE)
    assert env.call(env.container, V.VFIO_IOMMU_UNMAP_DMA, 0x60000000) == -errno.EFAULT
    assert len(env.iommu.mappings) == 0 and env.charged() == 0


def test_unmap_null_is_efault() -> None:
    env = Env()
    assert env.call(env.container, V.VFIO_IOMMU_UNMAP_DMA, 0) == -errno.EFAULT


# ============================================================================ UPDATE_VADDR

def test_update_vaddr_protocol() -> None:
    """The VM's sequence: invalidate, refuse a second invalidation (undoing this call's marks),
    keep normal maps working, re-map only an exact invalid mapping, never check the new vaddr."""
    env = Env()
    assert env.map(0x1000, 0x2000) == 0
    assert env.map(0x3000, 0x2000, RAM + 0x2000) == 0
    assert env.map(0x8000, 0x1000, RAM + 0x4000) == 0
    assert env.unmap(0x1000, 0x2000, INVALIDATE) == (0, 0x2000)
    assert env.unmap(0x1000, 0x4000, INVALIDATE) == (-errno.EINVAL, 0x4000)  # A already invalid
    assert env.unmap(0x3000, 0x2000, INVALIDATE) == (0, 0x2000)  # B was not left marked
    assert env.unmap(0x3000, 0x2000, INVALIDATE) == (-errno.EINVAL, 0x2000)
    assert env.unmap(0x1000, 0x4000, INVALIDATE) == (-errno.EINVAL, 0x4000)
    assert env.iommu.vaddr_invalid_count == 2
    assert env.map(0x10000, 0x1000, RAM + 0x5000) == 0  # normal maps still work
    assert env.map(0x20000, 0x1000, RAM, VADDR) == -errno.ENOENT
    assert env.map(0x1000, 0x1000, RAM, VADDR) == -errno.EINVAL  # not the mapping's size
    assert env.map(0x8000, 0x1000, RAM, VADDR) == -errno.EINVAL  # its vaddr is valid
    assert env.map(0x1000, 0x2000, RAM + 0x6000, VADDR) == 0
    assert env.map(0x3000, 0x2000, 1 << 40, VADDR) == 0  # the new vaddr is not even mapped
    assert env.iommu.vaddr_invalid_count == 0
    assert env.unmap(0, 0, INVALIDATE | ALL) == (0, 0x6000)
    assert env.unmap(0x1000, 0x2000) == (0, 0x2000)  # a normal unmap removes an invalid one
    assert env.iommu.vaddr_invalid_count == 3
    assert env.unmap(0, 0, ALL) == (0, 0x4000)
    assert env.iommu.vaddr_invalid_count == 0
    assert env.charged() == 0


def test_v1_invalidation_starting_inside_a_mapping_does_nothing() -> None:
    env = Env(v2=False)
    assert env.map(0x1000, 0x2000) == 0
    assert env.unmap(0x2000, 0x2000, INVALIDATE) == (0, 0)
    assert env.iommu.vaddr_invalid_count == 0


def test_group_attach_is_ebusy_while_a_vaddr_is_invalid() -> None:
    env = Env()
    assert env.map(0x1000, 0x2000) == 0
    assert env.unmap(0x1000, 0x2000, INVALIDATE) == (0, 0x2000)
    group2 = env.open(FileKind.GROUP, 2)
    assert env.attach(group2) == -errno.EBUSY
    env.proc.memory.write(BUF, struct.pack("<II", 8, 0))
    env.ioctl(group2, V.VFIO_GROUP_GET_STATUS, BUF)
    assert env.proc.memory.read(BUF, 8) == struct.pack("<II", 8, V.VFIO_GROUP_FLAGS_VIABLE)
    assert env.map(0x1000, 0x2000, RAM, VADDR) == 0
    assert env.attach(group2) == 0


def test_vaddr_remap_from_another_process_moves_the_charge() -> None:
    env = Env(memlock=4 * PAGE)
    heir = Process(env, 300, memlock=2 * PAGE)
    assert env.map(0x1000, 3 * PAGE) == 0
    assert env.unmap(0x1000, 3 * PAGE, INVALIDATE) == (0, 3 * PAGE)
    assert env.map(0x1000, 3 * PAGE, RAM, VADDR, proc=heir) == -errno.ENOMEM  # 3 > 2 pages
    assert env.iommu.vaddr_invalid_count == 1 and env.charged() == 3
    heir.memlock = 3 * PAGE
    assert env.map(0x1000, 3 * PAGE, RAM, VADDR, proc=heir) == 0
    assert (env.charged(), env.charged(heir)) == (0, 3)
    assert env.unmap(0x1000, 3 * PAGE) == (0, 3 * PAGE)
    assert env.charged(heir) == 0


# ============================================================================ DIRTY_PAGES

def test_dirty_pages_on_v1_is_eacces_before_reading_anything() -> None:
    env = Env(v2=False)
    assert env.call(env.container, V.VFIO_IOMMU_DIRTY_PAGES, 0) == -errno.EACCES


@pytest.mark.parametrize("flags, argsz, err", [
    (0, 8, errno.EINVAL), (START | STOP, 8, errno.EINVAL), (8, 8, errno.EINVAL),
    (START, 7, errno.EINVAL), (START, 8, 0), (STOP, 8, 0), (GET_BITMAP, 8, errno.EINVAL),
    (GET_BITMAP, 47, errno.EINVAL),
])
def test_dirty_pages_flags(flags: int, argsz: int, err: int) -> None:
    env = Env()
    assert env.dirty(flags, argsz=argsz) == -err
    assert env.call(env.container, V.VFIO_IOMMU_DIRTY_PAGES, 0) == -errno.EFAULT


def test_dirty_bitmap_reports_every_page_with_the_kernels_word_quirks() -> None:
    """The VM's sequence, word for word: mappings at pages 3-7 and 66-68. A mapping starting
    inside a word ORs the caller's whole first word in, and those bits stay in its bitmap."""
    env = Env()
    assert env.get_bitmap(0, 0x80000) == -errno.EINVAL  # tracking is off
    assert env.map(0x3000, 0x5000) == 0
    assert env.map(0x42000, 0x3000) == 0
    assert env.dirty(START) == 0 and env.dirty(START) == 0
    env.set_bitmap_words(0x8000000000000001, 0xF0)
    assert env.get_bitmap(0, 0x80000) == 0
    assert env.bitmap_words() == [0x80000000000000F9, 0xFC, 0]
    env.set_bitmap_words(0, 0)
    assert env.get_bitmap(0, 0x80000) == 0
    assert env.bitmap_words() == [0x7F8, 0x3FC, 0]
    env.set_bitmap_words(0, 0)
    assert env.get_bitmap(0x2000, 0x80000) == 0
    assert env.bitmap_words() == [0xFFE, 0x3FF, 0]
    env.set_bitmap_words(0, 0)
    assert env.get_bitmap(0x3000, 0x5000, 8) == 0
    assert env.bitmap_words(2) == [0xFFF, 0]
    assert env.get_bitmap(0x4000, 0x5000, 8) == -errno.EINVAL  # starts inside a mapping
    assert env.get_bitmap(0x3000, 0x4000, 8) == -errno.EINVAL  # ends inside one
    assert env.get_bitmap(0, 0x80000, 8) == -errno.EINVAL  # 128 pages need 16 bytes
    assert env.get_bitmap(0x800, 0x80000) == -errno.EINVAL
    assert env.get_bitmap(0, 0x80000, pgsize=0x2000) == -errno.EINVAL
    env.set_bitmap_words(5, 0)
    assert env.unmap(0, 0x80000, GET_DIRTY, argsz=48, bitmap=(PAGE, 16, BITMAP)) == (0, 0x8000)
    assert env.bitmap_words() == [0x7FFD, 0xFFC, 0]
    assert env.dirty(STOP) == 0 and env.dirty(STOP) == 0
    assert env.get_bitmap(0, 0x80000) == -errno.EINVAL


@pytest.mark.parametrize("get, err", [
    ((0xFFFFFFFFFFFFF000, 0x2000, PAGE, 8, BITMAP), errno.EOVERFLOW),  # >= 6.18 (6.1: EINVAL)
    ((0xFFFFFFFFFFFFF000, 0x1000, PAGE, 8, BITMAP), 0),  # ends at 2^64: fine since 6.18
    ((0xFFFFFFFFFFFFF000, 0x2000, 0, 0, 1 << 47), errno.EOVERFLOW),  # before the bitmap checks
    ((0, PAGE, PAGE, 8, 1 << 47), errno.EINVAL),  # access_ok
    ((0, PAGE, PAGE, 0, BITMAP), errno.EINVAL),
    ((0, 0, PAGE, 8, BITMAP), errno.EINVAL),  # size 0: npages 0
    ((0, 0x800, 0x800, 8, BITMAP), errno.EINVAL),  # not the IOMMU page size
    ((0, 0x10000, PAGE, 8, BITMAP), 0),  # no mapping in range: nothing written
])
def test_get_bitmap_validation(get: tuple[int, int, int, int, int], err: int) -> None:
    env = Env()
    assert env.dirty(START) == 0
    env.set_bitmap_words(0xAA)
    assert env.dirty(GET_BITMAP, argsz=48, get=get) == -err
    assert env.bitmap_words(1) == [0xAA]


def test_get_bitmap_that_cannot_be_written_is_efault() -> None:
    env = Env()
    assert env.map(0x1000, PAGE) == 0
    assert env.dirty(START) == 0
    assert env.dirty(GET_BITMAP, argsz=48, get=(0, 0x10000, PAGE, 8, 0x7000000)) == -errno.EFAULT


def test_mappings_made_while_tracking_are_reported() -> None:
    env = Env()
    assert env.dirty(START) == 0
    assert env.map(0x40000, 2 * PAGE) == 0
    env.set_bitmap_words(0)
    assert env.get_bitmap(0x40000, 0x40000, 8) == 0
    assert env.bitmap_words(1) == [0b11]


def test_a_mapping_may_end_at_the_top_of_a_64_bit_aperture() -> None:
    """>= 6.18 compares inclusive ends: the last page of a 64-bit address space can be mapped,
    found, reported and unmapped (before, iova + size wrapped to 0 and unmap missed it)."""
    env = Env(address_width=64)
    top = (1 << 64) - PAGE
    assert env.map(top, PAGE) == 0
    assert env.map(top, PAGE) == -errno.EEXIST
    assert env.dirty(START) == 0
    env.set_bitmap_words(0)
    assert env.get_bitmap(top, PAGE, 8) == 0
    assert env.bitmap_words(1) == [1]
    assert env.unmap(top, PAGE) == (0, PAGE)
    assert env.map(top, PAGE) == 0
    assert env.unmap(0, 0, ALL) == (0, PAGE)


# ============================================================================ lifetime

def test_closing_the_container_unmaps_nothing_the_last_group_unmaps_all() -> None:
    env = Env()
    assert env.map(0x1000, 4 * PAGE) == 0
    iommu = env.iommu
    env.engine.release(env.container)
    assert len(iommu.mappings) == 1 and env.charged() == 4
    env.engine.release(env.group)  # the group fd closes: it detaches
    assert len(iommu.mappings) == 0 and env.charged() == 0
    assert iommu.dma_avail == 65535


def test_only_the_last_group_leaving_tears_down() -> None:
    env = Env()
    group2 = env.open(FileKind.GROUP, 2)
    assert env.attach(group2) == 0
    assert env.map(0x1000, PAGE) == 0
    assert env.ioctl(env.group, V.VFIO_GROUP_UNSET_CONTAINER) == 0
    assert len(env.iommu.mappings) == 1
    assert env.ioctl(group2, V.VFIO_GROUP_UNSET_CONTAINER) == 0
    assert env.engine.locked_memory.total() == 0


# ============================================================================ state machine

MAX_PAGES = 48  # IOVA space of the model: pages 0..47
LIMIT = 6  # dma_entry_limit
MEMLOCK = 24  # pages


class Type1Model(RuleBasedStateMachine):
    """Random map / unmap / unmap-all / get-info against a model of the kernel's rules.

    The model is a dict {first page: page count}; the engine must agree with it on every
    result, on the bytes it writes back, and on its invariants: sorted, non-overlapping
    mappings; dma_avail + live mappings == the limit; charged pages == pinned pages.
    """

    v2 = True

    @initialize()
    def setup(self) -> None:
        self.env = Env(v2=self.v2, dma_entry_limit=LIMIT, memlock=MEMLOCK * PAGE)
        self.model: dict[int, int] = {}

    @rule(first=st.integers(0, MAX_PAGES - 1), count=st.integers(1, 8), offset=st.integers(0, 8))
    def map(self, first: int, count: int, offset: int) -> None:
        result = self.env.map(first * PAGE, count * PAGE, RAM + offset * PAGE)
        if any(f < first + count and first < f + c for f, c in self.model.items()):
            assert result == -errno.EEXIST
        elif len(self.model) == LIMIT:
            assert result == -errno.ENOSPC
        elif sum(self.model.values()) + count > MEMLOCK:
            assert result == -errno.ENOMEM
        else:
            assert result == 0
            self.model[first] = count

    @rule(first=st.integers(0, MAX_PAGES), count=st.integers(1, 16))
    def unmap(self, first: int, count: int) -> None:
        end = first + count
        inside = sorted(f for f, c in self.model.items() if f < end and f + c > first)
        result, size = self.env.unmap(first * PAGE, count * PAGE)
        if self.v2:
            if any(f < first < f + c or f < end < f + c for f, c in self.model.items()):
                assert result == -errno.EINVAL and size == count * PAGE
                return
        elif inside and inside[0] < first:
            inside = []  # v1 stops at a mapping that starts below the request
        expected = sum(self.model.pop(f) for f in inside)
        assert (result, size) == (0, expected * PAGE)

    @rule()
    def unmap_all(self) -> None:
        expected = sum(self.model.values())
        assert self.env.unmap(0, 0, ALL) == (0, expected * PAGE)
        self.model.clear()

    @rule(argsz=st.sampled_from([16, 24, 119, 120, 200]))
    def get_info(self, argsz: int) -> None:
        result, data = self.env.get_info(argsz)
        assert result == 0
        assert struct.unpack_from("<I", data)[0] == max(argsz, 120)
        if argsz >= 120:
            assert struct.unpack_from("<I", data, 64)[0] == LIMIT - len(self.model)

    @invariant()
    def engine_agrees_with_model(self) -> None:
        if not hasattr(self, "env"):
            return
        iommu = self.env.iommu
        mappings = list(iommu.mappings)
        assert [(m.iova // PAGE, m.size // PAGE) for m in mappings] == sorted(self.model.items())
        assert all(a.end <= b.iova for a, b in zip(mappings, mappings[1:]))
        assert iommu.dma_avail + len(mappings) == LIMIT
        assert self.env.charged() == sum(m.locked_pages for m in mappings) == sum(self.model.values())


class Type1v1Model(Type1Model):
    v2 = False


TestType1v2StateMachine = Type1Model.TestCase
TestType1v1StateMachine = Type1v1Model.TestCase
TestType1v2StateMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestType1v1StateMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


def test_pin_scan_default_charges_every_page() -> None:
    caller = Caller(pid=1, memory=FakeMemory())
    assert caller.check_user_range(0, 3 * PAGE, True) == PinScan(3)
