"""The iommufd IOAS and the VFIO container ioctls it answers on /dev/iommu (/dev/ioasid).

Every expectation is the upstream kernel's (shared/spec/iommufd.md §2.3, §2.7, §2.10, §2.11,
§3; drivers/iommu/iommufd/{vfio_compat,io_pagetable,pages,ioas}.c). Rows marked "expected"
are lines of tests/expected/ioasid_container.txt, the kernel's answers to the C probe. A group
is attached with VFIO_GROUP_SET_CONTAINER; its device's first open (which needs a device fd,
not available at engine level) is ``IommufdContext.bind_group_device``, the very call the
group's GET_DEVICE_FD makes.
"""
from __future__ import annotations

import dataclasses
import errno
import struct
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ioasidfs.config import load_config
from ioasidfs.engine import Caller, Engine, FakeMemory, FileKind
from ioasidfs.engine.caller import PinScan
from ioasidfs.engine.ioas import (U64_MAX, Accounting, AccountMode, Area, AreaTree, Domain, Ioas, Pages,
                                  UnmapError)
from ioasidfs.engine.iommufd import BoundDevice, IommufdContext, IommufdFile
from ioasidfs.errors import KernelError
from ioasidfs.uapi import iommufd as I
from ioasidfs.uapi import vfio as V

PAGE = 4096
BUF = 0x10000  # ioctl arguments (2 pages)
ARRAY = 0x20000  # user arrays (IOVA ranges)
RAM = 0x40000000  # 64 pages, read-write ("buf")
RO = 0x50000000  # 2 pages, read-only
NONE = 0x51000000  # 2 pages, PROT_NONE
HALF = 0x52000000  # 1 page read-write, then 1 page PROT_NONE
BIG = 0x60000000  # 2 MiB, never touched
HOLE = 0x70000000  # nothing mapped
R, W, RW = 1, 2, 3
ALL = V.VFIO_DMA_UNMAP_FLAG_ALL
MSI = 0xFEE00000
TOP = (1 << 39) - 1  # the default config's 39-bit aperture
NO_DOMAIN_PGSIZES = 0xFFFFFFFFFFFFF000
DOMAIN_PGSIZES = 0x40201000
BDF = "0000:00:01.0"


class Process:
    """One client process: its memory, credentials and the Caller the daemon would build."""

    def __init__(self, env: Env, pid: int, *, memlock: int = -1, cap: bool = False,
                 uid: int = 1000) -> None:
        self.memory = FakeMemory()
        for addr, size, prot in ((BUF, 2 * PAGE, "rw"), (ARRAY, PAGE, "rw"), (RAM, 64 * PAGE, "rw"),
                                 (RO, 2 * PAGE, "r"), (NONE, 2 * PAGE, ""), (HALF, PAGE, "rw"),
                                 (HALF + PAGE, PAGE, "")):
            self.memory.map(addr, size, prot=prot)
        self.memory.map(BIG, 0x200000, kind="untouched")
        self.memlock, self.cap, self.uid, self.vmlck = memlock, cap, uid, 0
        self.alive = True
        self.caller = Caller(pid=pid, memory=self.memory, resolve_fd=env.resolve,
                             can_lock_memory=lambda: self.cap, memlock_limit=lambda: self.memlock,
                             check_user_range=self._scan, locked_pages=lambda: self.vmlck,
                             start_time=lambda: 1000 + pid, uid=lambda: self.uid,
                             contiguous_blocks=self.memory.contiguous_blocks)

    def _scan(self, vaddr: int, size: int, write: bool) -> PinScan:
        if not self.alive:
            raise KernelError(errno.ESRCH, "exited")
        return self.memory.scan_pin(vaddr, size, write)


class Env:
    """An engine, /dev/iommu open, group 1 open (attached unless ``attach=False``) and, with
    ``device=True``, its device opened (bound and attached: the IOMMU domain exists)."""

    def __init__(self, *, attach: bool = True, device: bool = False, memlock: int = -1,
                 cap: bool = False, container: bool = False, **iommu: Any) -> None:
        config = load_config(None)
        config = dataclasses.replace(config, iommu=dataclasses.replace(config.iommu, **iommu))
        if container:
            config = dataclasses.replace(config, container_personality="iommufd")
        self.engine = Engine(config, still_open=lambda f: True)
        self.fds: dict[int, object] = {}
        self.proc = Process(self, 100, memlock=memlock, cap=cap)
        self.iommufd: IommufdFile = self.open(FileKind.CONTAINER if container else FileKind.IOMMUFD)
        self.group = self.open(FileKind.GROUP, 1)
        self.device: BoundDevice | None = None
        if attach:
            assert self.attach() == 0
        if device:
            self.open_device()

    # ---- plumbing
    def resolve(self, fd: int) -> object:
        if fd not in self.fds:
            raise KernelError(errno.EBADF, "closed")
        return self.fds[fd]

    def open(self, kind: FileKind, key: object = None) -> Any:
        file = self.engine.open(kind, key, self.proc.caller)
        self.fds[len(self.fds) + 3] = file
        return file

    def call(self, file: Any, cmd: int, arg: int = 0, proc: Process | None = None) -> int:
        """The ioctl's result, or minus its errno."""
        try:
            return int(file.ioctl((proc or self.proc).caller, cmd, arg))
        except KernelError as e:
            return -e.errno

    def attach(self, group: Any = None) -> int:
        fd = next(fd for fd, f in self.fds.items() if f is self.iommufd)
        self.proc.memory.write(BUF, struct.pack("<i", fd))
        return self.call(group or self.group, V.VFIO_GROUP_SET_CONTAINER, BUF)

    def open_device(self) -> int:
        """The group's first open of its device: 0 or minus the errno GET_DEVICE_FD gives."""
        try:
            self.device = self.ctx.bind_group_device(BDF)
        except KernelError as e:
            return -e.errno
        return 0

    def close_device(self) -> None:
        assert self.device is not None
        self.ctx.unbind_device(self.device)
        self.device = None

    @property
    def ctx(self) -> IommufdContext:
        return self.iommufd.context

    @property
    def ioas(self) -> Ioas:
        return self.ctx.compat_ioas()

    def areas(self) -> list[tuple[int, int]]:
        return [(a.iova, a.length) for a in self.ioas.areas]

    def charged(self, proc: Process | None = None) -> int:
        """Pages charged to the process's user (iommufd's default accounting)."""
        return self.engine.pin_accounting.users.pages_of((proc or self.proc).uid)

    def charged_mm(self, proc: Process | None = None) -> int:
        return self.engine.locked_memory.pages_of((proc or self.proc).caller.process_key())

    # ---- the VFIO ioctls, their argument bytes checked
    def map(self, iova: int, size: int, vaddr: int = RAM, flags: int = RW, *, argsz: int = 32,
            proc: Process | None = None) -> int:
        proc = proc or self.proc
        arg = V.DMA_MAP.pack(argsz=argsz, flags=flags, vaddr=vaddr, iova=iova, size=size)
        proc.memory.write(BUF, arg)
        result = self.call(self.iommufd, V.VFIO_IOMMU_MAP_DMA, BUF, proc)
        assert proc.memory.read(BUF, 32) == arg, "MAP_DMA writes nothing back"
        return result

    def unmap(self, iova: int, size: int, flags: int = 0, *, argsz: int = 24) -> tuple[int, int]:
        """(result, the size field afterwards); nothing but ``size`` may change."""
        arg = V.DMA_UNMAP.pack(argsz=argsz, flags=flags, iova=iova, size=size)
        self.proc.memory.write(BUF, arg)
        result = self.call(self.iommufd, V.VFIO_IOMMU_UNMAP_DMA, BUF)
        after = self.proc.memory.read(BUF, 24)
        assert after[:16] == arg[:16]
        return result, struct.unpack_from("<Q", after, 16)[0]

    def get_info(self, argsz: int, at: int = BUF) -> tuple[int, bytes]:
        self.proc.memory.write(BUF, b"\xa5" * (2 * PAGE))
        self.proc.memory.write(at, struct.pack("<I", argsz))
        return self.call(self.iommufd, V.VFIO_IOMMU_GET_INFO, at), self.proc.memory.read(BUF, 128)

    def native(self, cmd: int, layout: Any, **fields: int) -> tuple[int, dict[str, Any]]:
        """A native iommufd ioctl with a full-size struct: (result, the struct afterwards)."""
        self.proc.memory.write(BUF, layout.pack(size=layout.size, **fields))
        result = self.call(self.iommufd, cmd, BUF)
        return result, layout.unpack(self.proc.memory.read(BUF, layout.size))


A5 = b"\xa5"


def _pad(data: bytes) -> bytes:
    return data + A5 * (128 - len(data))


# ============================================================================ GET_INFO

def _hdr(argsz: int, pgsizes: int, cap_offset: int = 0) -> bytes:
    return struct.pack("<IIQII", argsz, 3, pgsizes, cap_offset, 0)


DMA_AVAIL = struct.pack("<HHII", 3, 1, 0, 0xFFFFFFFF)
DMA_AVAIL_LINKED = struct.pack("<HHII", 3, 1, 40, 0xFFFFFFFF)


@pytest.mark.parametrize("argsz, written", [
    (16, _hdr(72, NO_DOMAIN_PGSIZES)[:16]),  # expected: cap_offset and u32@20 left alone
    (20, _hdr(72, NO_DOMAIN_PGSIZES)[:20]),
    (24, _hdr(72, NO_DOMAIN_PGSIZES)),  # expected: cap_offset 0, u32@20 0
    (35, _hdr(72, NO_DOMAIN_PGSIZES)),  # DMA_AVAIL (12 bytes) does not fit at 24
    (36, _hdr(72, NO_DOMAIN_PGSIZES) + DMA_AVAIL),  # it fits; next stays 0
    (39, _hdr(72, NO_DOMAIN_PGSIZES) + DMA_AVAIL),
    (40, _hdr(72, NO_DOMAIN_PGSIZES) + DMA_AVAIL_LINKED),  # IOVA_RANGE's slot begins: next = 40
    (71, _hdr(72, NO_DOMAIN_PGSIZES) + DMA_AVAIL_LINKED),  # expected: u32@24 = 0x10003
    (72, _hdr(72, NO_DOMAIN_PGSIZES, 24) + DMA_AVAIL_LINKED + A5 * 4  # the padding is not written
     + struct.pack("<HHIIIQQ", 1, 1, 0, 1, 0, 0, U64_MAX)),  # expected: cap_offset 0x18
    (4096, _hdr(72, NO_DOMAIN_PGSIZES, 24) + DMA_AVAIL_LINKED + A5 * 4
     + struct.pack("<HHIIIQQ", 1, 1, 0, 1, 0, 0, U64_MAX)),
])
def test_get_info_without_a_domain(argsz: int, written: bytes) -> None:
    env = Env()
    assert env.get_info(argsz) == (0, _pad(written))


RANGE0 = struct.pack("<QQ", 0, 0xFEDFFFFF)
RANGE1 = struct.pack("<QQ", 0xFEF00000, TOP)


@pytest.mark.parametrize("argsz, written", [
    (24, _hdr(88, DOMAIN_PGSIZES)),
    (71, _hdr(88, DOMAIN_PGSIZES) + DMA_AVAIL_LINKED),
    # Each range is written once it fits, the IOVA_RANGE header only once all of them do.
    (72, _hdr(88, DOMAIN_PGSIZES) + DMA_AVAIL_LINKED + A5 * 20 + RANGE0),
    (87, _hdr(88, DOMAIN_PGSIZES) + DMA_AVAIL_LINKED + A5 * 20 + RANGE0),
    (88, _hdr(88, DOMAIN_PGSIZES, 24) + DMA_AVAIL_LINKED + A5 * 4
     + struct.pack("<HHIII", 1, 1, 0, 2, 0) + RANGE0 + RANGE1),
])
def test_get_info_with_the_domain(argsz: int, written: bytes) -> None:
    env = Env(device=True)
    assert env.get_info(argsz) == (0, _pad(written))


def test_get_info_argument_checks() -> None:
    env = Env(attach=False)
    assert env.call(env.iommufd, V.VFIO_IOMMU_GET_INFO, 0) == -errno.EFAULT
    assert env.get_info(15)[0] == -errno.EINVAL
    assert env.get_info(16) == (-errno.ENODEV, _pad(struct.pack("<I", 16)))  # expected: detached


def test_get_info_faults_where_the_kernel_writes() -> None:
    """A buffer whose caps part is unwritable: DMA_AVAIL is copied first, so nothing is written
    and the ioctl fails EFAULT."""
    env = Env()
    at = BUF + 2 * PAGE - 24  # the last 24 bytes of the argument pages
    assert env.get_info(72, at=at)[0] == -errno.EFAULT
    assert env.proc.memory.read(at, 24) == struct.pack("<I", 72) + A5 * 20


def test_get_info_page_sizes_and_alignment() -> None:
    env = Env(page_sizes=(512, 4096, 2 << 20))  # sub-page sizes fold into PAGE_SIZE
    assert env.open_device() == 0
    assert env.ioas.vfio_pgsizes() == 0x201000
    env2 = Env()
    env2.ioas.disable_large_pages()  # type1 v1: alignment PAGE_SIZE, bitmap unchanged
    assert env2.ioas.vfio_pgsizes() == NO_DOMAIN_PGSIZES and env2.ioas.iova_alignment == PAGE


# ============================================================================ MAP_DMA

@pytest.mark.parametrize("iova, size, vaddr, flags, argsz, result", [
    (0x100000, PAGE, RAM, V.VFIO_DMA_MAP_FLAG_VADDR, 32, -errno.EINVAL),  # expected
    (0x100000, PAGE, RAM, RW | 8, 32, -errno.EINVAL),  # expected: 0xb
    (0x100000, PAGE, RAM, RW, 31, -errno.EINVAL),  # expected: argsz=31
    (0x110800, PAGE, RAM, RW, 32, -errno.EINVAL),  # expected: IOVA alignment
    (0x110000, 0x1800, RAM, RW, 32, -errno.EINVAL),  # expected: size alignment
    (0x110000, PAGE, RAM + 0x800, RW, 32, -errno.EINVAL),  # expected: vaddr's page offset
    (0x110000, 0, RAM, RW, 32, -errno.EINVAL),  # expected: size 0
    (MSI, PAGE, RAM, RW, 32, -errno.EINVAL),  # expected: the MSI window
    (MSI - PAGE, 2 * PAGE, RAM, RW, 32, -errno.EINVAL),  # expected: reaching into it
    (MSI - PAGE, 0x102000, BIG, RW, 32, -errno.EINVAL),  # expected: spanning it
    (MSI - PAGE, PAGE, RAM, RW, 32, 0),  # expected: just below it
    (TOP + 1, PAGE, RAM, RW, 32, -errno.EINVAL),  # expected: past the aperture
    (TOP + 1 - PAGE, 2 * PAGE, RAM, RW, 32, -errno.EINVAL),  # expected: across its end
    (TOP + 1 - PAGE, PAGE, RAM, RW, 32, 0),  # expected: its last page
    (U64_MAX - PAGE + 1, 2 * PAGE, RAM, RW, 32, -errno.EOVERFLOW),  # expected: IOVA wraps
    (U64_MAX - PAGE + 1, PAGE, RAM, RW, 32, -errno.EINVAL),  # expected: reserved, no wrap
    (0x110000, 2 * PAGE, U64_MAX - PAGE + 1, RW, 32, -errno.EOVERFLOW),  # expected: vaddr wraps
    (0x110000, PAGE, U64_MAX - PAGE + 1, RW, 32, -errno.EOVERFLOW),  # expected: ends at 2^64
    (0x120000, PAGE, HOLE, RW, 32, -errno.EFAULT),  # expected: nothing mapped
    (0x120000, 2 * PAGE, HALF, RW, 32, -errno.EFAULT),  # expected: second page PROT_NONE
    (0x120000, PAGE, NONE, RW, 32, -errno.EFAULT),  # expected
    (0x120000, PAGE, NONE, R, 32, -errno.EFAULT),  # expected: a read pin needs VM_READ
    (0x120000, 2 * PAGE, RO, RW, 32, -errno.EFAULT),  # expected
    (0x120000, 2 * PAGE, RO, W, 32, -errno.EFAULT),  # expected
    (0x120000, 2 * PAGE, RO, R, 32, 0),  # expected
    (0x130000, PAGE, PAGE, RW, 32, -errno.EFAULT),  # expected: vaddr 0x1000
    (0x140000, PAGE, RAM, 0, 32, -errno.EINVAL),  # expected: VT-d refuses a PTE without R/W
    (0x140000, PAGE, HOLE, 0, 32, -errno.EFAULT),  # ... after pinning
    (0x130000, PAGE, RAM, RW, 64, 0),  # a larger argsz is fine
])
def test_map_dma_with_the_domain(iova: int, size: int, vaddr: int, flags: int, argsz: int,
                                 result: int) -> None:
    env = Env(device=True)
    assert env.map(iova, size, vaddr, flags, argsz=argsz) == result
    assert env.areas() == ([(iova, size)] if result == 0 else [])
    assert env.charged() == (size // PAGE if result == 0 else 0)


def test_map_dma_overlaps_fail_eexist() -> None:
    env = Env(device=True)
    assert env.map(0x100000, 4 * PAGE) == 0
    assert env.map(0x100000, 4 * PAGE) == -errno.EEXIST  # expected
    assert env.map(0x101000, 2 * PAGE) == -errno.EEXIST  # expected: inside
    assert env.map(0xFF000, 2 * PAGE) == -errno.EEXIST  # expected: straddling the start
    assert env.map(MSI - 2 * PAGE, 0x102000 + PAGE) == -errno.EINVAL  # reserved wins over EEXIST
    assert env.map(MSI - PAGE, PAGE) == 0
    assert env.map(MSI - 2 * PAGE, 0x102000, BIG) == -errno.EINVAL  # expected: both; EINVAL first


def test_map_dma_without_a_domain_is_lazy() -> None:
    """No device open: alignment 1, nothing pinned, any user address (expected: nodev)."""
    env = Env()
    assert env.map(0x100000, PAGE, HOLE) == 0
    assert env.map(0x200000, PAGE, RAM, 0) == 0
    assert env.map(0x300800, 0x800, RAM + 0x800) == 0
    assert env.map(0x400001, 3, RAM + 5) == 0  # byte granular
    assert env.charged() == 0 and env.ioas.pinned_pages() == 0
    assert env.unmap(0, 0, ALL) == (0, 0x2803)


def test_map_dma_checks_before_the_compat_ioas() -> None:
    env = Env(attach=False)
    assert env.call(env.iommufd, V.VFIO_IOMMU_MAP_DMA, 0) == -errno.EFAULT
    assert env.map(0x100000, PAGE, argsz=31) == -errno.EINVAL
    assert env.map(0x100000, PAGE, flags=V.VFIO_DMA_MAP_FLAG_VADDR) == -errno.EINVAL
    assert env.map(0x100000, PAGE) == -errno.ENODEV  # expected: detached


# ============================================================================ UNMAP_DMA

A, B = (0x1000, 2 * PAGE), (0x3000, 2 * PAGE)


@pytest.mark.parametrize("iova, size, flags, result, written, left", [
    (0x1000, PAGE, 0, -errno.ENOENT, 0, [A, B]),  # expected: would bisect A (type1 v2: EINVAL)
    (0x2000, 0x3000, 0, -errno.ENOENT, 0, [A, B]),  # expected: starts inside A
    (0x1000, 0x3000, 0, -errno.ENOENT, 0x2000, [B]),  # expected: A goes, then B sticks out
    (0x1000, 0x4000, 0, 0, 0x4000, []),
    (0x0, 0x10000, 0, 0, 0x4000, []),  # expected: holes are fine
    (0x10000, PAGE, 0, 0, 0, [A, B]),  # expected: nothing there ([new]; [old] ENOENT)
    (0x3000, 0x2000, 0, 0, 0x2000, [A]),  # expected
    (0x1000, 0, 0, -errno.EINVAL, 0, [A, B]),  # expected: size 0, still written back
    (U64_MAX - PAGE + 1, 2 * PAGE, 0, -errno.EOVERFLOW, 0, [A, B]),  # expected
    (0, 0, ALL, 0, 0x4000, []),  # expected
    (0, PAGE, ALL, -errno.EINVAL, PAGE, [A, B]),  # expected: ALL with a size; no write-back
    (0x1000, 2 * PAGE, V.VFIO_DMA_UNMAP_FLAG_VADDR, -errno.EINVAL, 2 * PAGE, [A, B]),  # expected
    (0x1000, 2 * PAGE, V.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, -errno.EINVAL, 2 * PAGE, [A, B]),
])
def test_unmap_dma_v2(iova: int, size: int, flags: int, result: int, written: int,
                      left: list[tuple[int, int]]) -> None:
    env = Env(device=True)
    assert env.map(*A) == 0 and env.map(B[0], B[1], RAM + 0x2000) == 0
    assert env.unmap(iova, size, flags) == (result, written)
    assert env.areas() == left
    assert env.charged() == sum(n for _, n in left) // PAGE


def test_unmap_dma_argument_checks() -> None:
    env = Env(attach=False)
    assert env.call(env.iommufd, V.VFIO_IOMMU_UNMAP_DMA, 0) == -errno.EFAULT
    assert env.unmap(0x1000, PAGE, argsz=23) == (-errno.EINVAL, PAGE)
    assert env.unmap(0x100000, PAGE) == (-errno.ENODEV, PAGE)  # expected: detached, untouched
    assert env.unmap(0, 0, ALL) == (-errno.ENODEV, 0)


# ============================================================================ SET_IOMMU, type1 v1

def test_set_iommu_rules() -> None:
    env = Env(attach=False)
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 2) == -errno.EINVAL  # type checked first
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 3) == -errno.ENODEV  # expected: detached
    assert env.attach() == 0
    for bad in (0, 2, 6, 8, 9):  # expected: nodev
        assert env.call(env.iommufd, V.VFIO_SET_IOMMU, bad) == -errno.EINVAL
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 3) == 0
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 3) == 0  # repeatable
    assert not env.ioas.large_pages_disabled


def test_set_iommu_type1_disables_large_pages_unless_domains_hold_mappings() -> None:
    env = Env(device=True)
    assert env.map(0x1000, 2 * PAGE) == 0
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 1) == -errno.EINVAL  # expected
    assert env.unmap(0, 0, ALL) == (0, 2 * PAGE)
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 1) == 0  # expected
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 1) == 0
    assert env.ioas.large_pages_disabled


def test_set_iommu_type1_needs_page_aligned_areas() -> None:
    """No domain: areas may be byte-aligned, and raising the alignment refuses them."""
    env = Env()
    assert env.map(0x300800, 0x800, RAM + 0x800) == 0
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 1) == -errno.EADDRINUSE
    assert not env.ioas.large_pages_disabled and env.ioas.iova_alignment == 1


@pytest.mark.parametrize("mapped, iova, size, result, written, left", [
    ((0x1000, 2 * PAGE), 0x1000, PAGE, 0, PAGE, [(0x2000, PAGE)]),  # expected: type1
    ((0x1000, 4 * PAGE), 0x2000, PAGE, 0, PAGE, [(0x1000, PAGE), (0x3000, 2 * PAGE)]),  # expected
    ((0x1000, 4 * PAGE), 0x2000, 2 * PAGE, 0, 2 * PAGE, [(0x1000, PAGE), (0x4000, PAGE)]),
    ((0x1000, 4 * PAGE), 0x0, 0x2000, 0, PAGE, [(0x2000, 3 * PAGE)]),
    ((0x1000, 4 * PAGE), 0x1800, PAGE, -errno.EINVAL, 0x1000, [(0x1000, 4 * PAGE)]),  # cut misaligned
    ((0x1000, 4 * PAGE), 0x2000, 0, -errno.EINVAL, 0, [(0x1000, PAGE), (0x2000, 3 * PAGE)]),  # the cut stays
    ((0x1000, 4 * PAGE), 0x3000, 0x10000, 0, 2 * PAGE, [(0x1000, 2 * PAGE)]),
])
def test_type1_v1_unmap_splits_areas(mapped: tuple[int, int], iova: int, size: int, result: int,
                                     written: int, left: list[tuple[int, int]]) -> None:
    env = Env(device=True)
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 1) == 0
    assert env.map(*mapped) == 0
    assert env.unmap(iova, size) == (result, written)
    assert env.areas() == left
    assert env.charged() == sum(n for _, n in left) // PAGE


def test_type1_v1_split_halves_share_their_pins() -> None:
    env = Env(device=True)
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 1) == 0
    assert env.map(0x1000, 4 * PAGE) == 0
    assert env.unmap(0x2000, PAGE) == (0, PAGE)
    pages = {id(a.pages) for a in env.ioas.areas}
    assert len(pages) == 1 and env.charged() == 3
    env.close_device()  # the domain goes: every pin goes
    assert env.charged() == 0 and env.areas() == [(0x1000, PAGE), (0x3000, 2 * PAGE)]


# ============================================================================ DMA_CC, domains

def test_dma_cc_follows_the_domains() -> None:
    env = Env(attach=False)
    assert env.call(env.iommufd, V.VFIO_CHECK_EXTENSION, 4) == -errno.ENODEV  # expected: detached
    assert env.attach() == 0
    assert env.call(env.iommufd, V.VFIO_CHECK_EXTENSION, 4) == 1  # expected: nodev
    assert env.open_device() == 0
    assert env.call(env.iommufd, V.VFIO_CHECK_EXTENSION, 4) == 0  # expected: dev (no snoop control)
    env.close_device()
    assert env.call(env.iommufd, V.VFIO_CHECK_EXTENSION, 4) == 1  # expected: closed
    coherent = Env(device=True, enforce_cache_coherency=True)
    assert coherent.call(coherent.iommufd, V.VFIO_CHECK_EXTENSION, 4) == 1


@pytest.mark.parametrize("ext, answer", [(1, 1), (3, 1), (9, 1), (6, 0), (8, 0), (10, 0), (2, 0),
                                         (1000, 0), (U64_MAX, 0)])
def test_check_extension_fixed_answers(ext: int, answer: int) -> None:
    env = Env(device=True)
    assert env.call(env.iommufd, V.VFIO_CHECK_EXTENSION, ext) == answer


def test_device_open_pins_lazy_mappings_and_reserves() -> None:
    env = Env()
    assert env.map(0x1000, 2 * PAGE) == 0 and env.charged() == 0
    assert env.open_device() == 0
    assert env.charged() == 2 and env.ioas.iova_alignment == PAGE
    assert env.ioas.iova_ranges() == [(0, 0xFEDFFFFF), (0xFEF00000, TOP)]
    assert sorted(env.ctx.objects) == [1, 2, 3]  # IOAS, DEVICE, auto HWPT
    env.close_device()
    assert env.charged() == 0 and env.ioas.iova_ranges() == [(0, U64_MAX)]
    assert env.ioas.iova_alignment == 1 and sorted(env.ctx.objects) == [1]


@pytest.mark.parametrize("iova, size, vaddr, error", [
    (0x1000, PAGE, HOLE, errno.EFAULT),  # lazily mapped, unpinnable
    (0x1000, 0x800, RAM, errno.EADDRINUSE),  # below the domain's alignment
    (0x1001, PAGE, RAM + 1, errno.EADDRINUSE),
    (MSI, PAGE, RAM, errno.EADDRINUSE),  # where the device's MSI window goes
    (TOP + 1, PAGE, RAM, errno.EADDRINUSE),  # outside the aperture
])
def test_device_open_fails_when_the_ioas_cannot_take_the_domain(iova: int, size: int, vaddr: int,
                                                                error: int) -> None:
    env = Env()
    assert env.map(iova, size, vaddr) == 0
    assert env.open_device() == -error
    assert env.ioas.domains == [] and env.ioas.reserved == [] and sorted(env.ctx.objects) == [1]
    assert env.charged() == 0 and env.areas() == [(iova, size)]


def test_device_open_enomem_and_efault_order() -> None:
    """iommufd pins a whole area, then charges it: an unpinnable page beats RLIMIT_MEMLOCK."""
    env = Env(memlock=2 * PAGE)
    assert env.map(0x1000, 3 * PAGE) == 0
    assert env.open_device() == -errno.ENOMEM
    assert env.unmap(0, 0, ALL) == (0, 3 * PAGE)
    assert env.map(0x1000, PAGE) == 0 and env.map(0x2000, 3 * PAGE, HALF - 2 * PAGE) == 0
    assert env.open_device() == -errno.EFAULT  # HALF's second page; 4 pages would be ENOMEM too
    assert env.charged() == 0


def test_device_open_after_the_compat_ioas_went() -> None:
    env = Env()
    env.proc.memory.write(BUF, I.VFIO_IOAS.pack(size=12, ioas_id=0, op=I.IOMMU_VFIO_IOAS_CLEAR))
    assert env.call(env.iommufd, I.IOMMU_VFIO_IOAS, BUF) == 0
    assert env.open_device() == -errno.ENODEV
    assert sorted(env.ctx.objects) == [1]  # the DEVICE id was freed


# ============================================================================ accounting

def test_charges_go_to_the_user_across_processes_and_contexts() -> None:
    env = Env(device=True, memlock=6 * PAGE)
    other = Process(env, 200, memlock=6 * PAGE)  # same uid
    assert env.map(0x1000, 4 * PAGE) == 0
    assert env.map(0x10000, 2 * PAGE, proc=other) == 0
    assert env.charged() == 6 and env.charged_mm() == 0
    assert env.map(0x20000, PAGE, proc=other) == -errno.ENOMEM  # the user's counter is full
    stranger = Process(env, 300, memlock=6 * PAGE, uid=2000)
    assert env.map(0x20000, PAGE, proc=stranger) == 0


def test_same_memory_mapped_twice_is_charged_twice() -> None:
    env = Env(device=True)
    assert env.map(0x1000, 2 * PAGE) == 0 and env.map(0x10000, 2 * PAGE) == 0
    assert env.charged() == 4


def test_cap_ipc_lock_mappers_are_not_accounted() -> None:
    env = Env(device=True, memlock=0, cap=True)
    assert env.map(0x1000, 8 * PAGE) == 0
    assert env.charged() == 0 and env.charged_mm() == 0


def test_memlock_limit_counts_the_users_pins_not_vmlck() -> None:
    env = Env(device=True, memlock=4 * PAGE)
    env.proc.vmlck = 4  # mlock()ed memory is mm->locked_vm, a different counter
    assert env.map(0x1000, 4 * PAGE) == 0
    assert env.map(0x10000, PAGE) == -errno.ENOMEM


def test_vfio_container_personality_charges_the_process() -> None:
    """/dev/vfio/vfio served by iommufd: MM accounting, shared with type1, VmLck included."""
    env = Env(container=True, memlock=4 * PAGE)
    assert env.open_device() == 0
    env.proc.vmlck = 1
    assert env.map(0x1000, 3 * PAGE) == 0
    assert env.charged_mm() == 3 and env.charged() == 0
    assert env.map(0x10000, PAGE) == -errno.ENOMEM


def test_a_pin_after_the_mapper_exited_fails_efault() -> None:
    env = Env()
    child = Process(env, 200)
    assert env.map(0x1000, PAGE, proc=child) == 0  # lazy: nothing read yet
    child.alive = False
    assert env.open_device() == -errno.EFAULT


# ============================================================================ lifetime

def test_last_group_detach_tears_nothing_down() -> None:
    env = Env(device=True)
    assert env.map(0x100000, 2 * PAGE) == 0
    env.close_device()
    assert env.map(0x200000, PAGE, HOLE) == 0  # expected: closed, lazy again
    assert env.call(env.group, V.VFIO_GROUP_UNSET_CONTAINER) == 0
    assert env.call(env.group, V.VFIO_GROUP_UNSET_CONTAINER) == -errno.EINVAL  # expected
    assert env.call(env.iommufd, V.VFIO_CHECK_EXTENSION, 4) == 1  # expected: unset
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 3) == 0
    assert env.unmap(0, 0, ALL) == (0, 3 * PAGE)  # expected: unset


def test_destroying_the_compat_ioas_unselects_it() -> None:
    env = Env(device=True)
    assert env.map(0x1000, PAGE) == 0
    assert env.native(I.IOMMU_DESTROY, I.DESTROY, id=1)[0] == -errno.EBUSY  # the HWPT holds it
    assert env.native(I.IOMMU_DESTROY, I.DESTROY, id=2)[0] == -errno.EBUSY  # a DEVICE, always
    env.close_device()
    assert env.native(I.IOMMU_DESTROY, I.DESTROY, id=1)[0] == 0
    assert env.charged() == 0
    assert env.map(0x1000, PAGE) == -errno.ENODEV
    assert env.call(env.iommufd, V.VFIO_CHECK_EXTENSION, 4) == -errno.ENODEV


def test_the_context_outlives_its_file_while_a_group_or_device_holds_it() -> None:
    env = Env(device=True)
    assert env.map(0x1000, 4 * PAGE) == 0
    env.engine.release(env.iommufd)
    assert env.charged() == 4  # the device (and the group) still hold the context
    env.close_device()
    assert env.areas() == [(0x1000, 4 * PAGE)]
    env.engine.release(env.group)  # the group fd closes: the last holder
    assert env.ctx.objects == {} and env.engine.pin_accounting.users.total() == 0


def test_closing_the_file_of_an_unused_context_frees_everything() -> None:
    env = Env(device=True)
    assert env.map(0x1000, PAGE) == 0
    env.close_device()
    assert env.call(env.group, V.VFIO_GROUP_UNSET_CONTAINER) == 0
    env.engine.release(env.iommufd)
    assert env.ctx.objects == {} and env.charged() == 0


# ============================================================================ native ioctls

def test_ioas_alloc_map_unmap_and_ranges() -> None:
    env = Env(attach=False)
    result, out = env.native(I.IOMMU_IOAS_ALLOC, I.IOAS_ALLOC, flags=0, out_ioas_id=0)
    assert result == 0 and out["out_ioas_id"] == 1
    assert env.native(I.IOMMU_IOAS_ALLOC, I.IOAS_ALLOC, flags=1, out_ioas_id=0)[0] == -errno.EOPNOTSUPP
    mapping = dict(ioas_id=1, reserved=0, user_va=1 << 31, length=3 * PAGE, iova=0)
    flags = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE
    result, out = env.native(I.IOMMU_IOAS_MAP, I.IOAS_MAP, flags=flags, **mapping)
    assert (result, out["iova"]) == (0, 0x4000)  # no domain: any user_va; aligned to 16 KiB
    result, out = env.native(I.IOMMU_IOAS_MAP, I.IOAS_MAP, flags=flags, **mapping)
    assert (result, out["iova"]) == (0, 0x8000)
    assert env.native(I.IOMMU_IOAS_MAP, I.IOAS_MAP, flags=0, **mapping)[0] == -errno.EINVAL
    assert env.native(I.IOMMU_IOAS_MAP, I.IOAS_MAP, flags=8 | flags, **mapping)[0] == -errno.EOPNOTSUPP
    assert env.native(I.IOMMU_IOAS_MAP, I.IOAS_MAP, flags=flags,
                      **dict(mapping, ioas_id=7))[0] == -errno.ENOENT
    assert env.native(I.IOMMU_IOAS_MAP, I.IOAS_MAP, flags=flags,
                      **dict(mapping, iova=U64_MAX))[0] == -errno.EOVERFLOW  # even not FIXED
    result, out = env.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, ioas_id=1, iova=0x4000, length=PAGE)
    assert result == -errno.ENOENT and out["length"] == PAGE  # no write-back on failure
    result, out = env.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, ioas_id=1, iova=0, length=U64_MAX)
    assert (result, out["length"]) == (0, 6 * PAGE)
    result, out = env.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, ioas_id=1, iova=0, length=U64_MAX)
    assert (result, out["length"]) == (0, 0)  # everything, even nothing
    result, out = env.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, ioas_id=1, iova=0, length=PAGE)
    assert result == -errno.ENOENT  # an empty range: unlike the compat UNMAP_DMA
    result, out = env.native(I.IOMMU_IOAS_IOVA_RANGES, I.IOAS_IOVA_RANGES, ioas_id=1, num_iovas=1,
                             reserved=0, allowed_iovas=ARRAY, out_iova_alignment=0)
    assert (result, out["num_iovas"], out["out_iova_alignment"]) == (0, 1, 1)
    assert env.proc.memory.read(ARRAY, 16) == struct.pack("<QQ", 0, U64_MAX)


def test_iova_ranges_emsgsize_after_the_write_back() -> None:
    env = Env(device=True)
    env.proc.memory.write(ARRAY, b"\xa5" * 48)
    result, out = env.native(I.IOMMU_IOAS_IOVA_RANGES, I.IOAS_IOVA_RANGES, ioas_id=1, num_iovas=1,
                             reserved=0, allowed_iovas=ARRAY, out_iova_alignment=0)
    assert (result, out["num_iovas"], out["out_iova_alignment"]) == (-errno.EMSGSIZE, 2, PAGE)
    assert env.proc.memory.read(ARRAY, 32) == struct.pack("<QQ", 0, 0xFEDFFFFF) + A5 * 16


def test_vfio_ioas_get_set_clear() -> None:
    env = Env(attach=False)
    result, _ = env.native(I.IOMMU_VFIO_IOAS, I.VFIO_IOAS, ioas_id=0, op=0, reserved=0)
    assert result == -errno.ENODEV
    env.native(I.IOMMU_IOAS_ALLOC, I.IOAS_ALLOC, flags=0, out_ioas_id=0)
    env.native(I.IOMMU_IOAS_ALLOC, I.IOAS_ALLOC, flags=0, out_ioas_id=0)
    assert env.native(I.IOMMU_VFIO_IOAS, I.VFIO_IOAS, ioas_id=3, op=1, reserved=0)[0] == -errno.ENOENT
    assert env.native(I.IOMMU_VFIO_IOAS, I.VFIO_IOAS, ioas_id=2, op=1, reserved=0)[0] == 0
    assert env.native(I.IOMMU_VFIO_IOAS, I.VFIO_IOAS, ioas_id=0, op=0, reserved=0)[1]["ioas_id"] == 2
    assert env.attach() == 0  # the group uses the selected IOAS; no new one
    assert sorted(env.ctx.objects) == [1, 2] and env.ctx.compat is env.ctx.objects[2]
    assert env.native(I.IOMMU_VFIO_IOAS, I.VFIO_IOAS, ioas_id=0, op=2, reserved=0)[0] == 0
    assert env.map(0x1000, PAGE) == -errno.ENODEV
    assert env.native(I.IOMMU_VFIO_IOAS, I.VFIO_IOAS, ioas_id=0, op=3, reserved=0)[0] == -errno.EOPNOTSUPP
    assert env.native(I.IOMMU_VFIO_IOAS, I.VFIO_IOAS, ioas_id=0, op=0, reserved=1)[0] == -errno.EOPNOTSUPP


def test_compat_and_native_share_the_ioas() -> None:
    env = Env(device=True)
    assert env.map(0x1000, 2 * PAGE) == 0
    result, out = env.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, ioas_id=1, iova=0x1000, length=2 * PAGE)
    assert (result, out["length"]) == (0, 2 * PAGE)
    flags = I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_READABLE
    assert env.native(I.IOMMU_IOAS_MAP, I.IOAS_MAP, flags=flags, ioas_id=1, reserved=0, user_va=RO,
                      length=2 * PAGE, iova=0x5000)[0] == 0
    assert env.unmap(0x5000, 2 * PAGE) == (0, 2 * PAGE)


def test_allow_iovas_steer_the_allocator() -> None:
    env = Env(attach=False)
    env.native(I.IOMMU_IOAS_ALLOC, I.IOAS_ALLOC, flags=0, out_ioas_id=0)
    env.proc.memory.write(ARRAY, struct.pack("<QQQQ", 0x100000, 0x1FFFFF, 0x400000, 0x400000))
    allow = dict(ioas_id=1, reserved=0, allowed_iovas=ARRAY)
    assert env.native(I.IOMMU_IOAS_ALLOW_IOVAS, I.IOAS_ALLOW_IOVAS, num_iovas=2, **allow)[0] == -errno.EINVAL
    assert env.native(I.IOMMU_IOAS_ALLOW_IOVAS, I.IOAS_ALLOW_IOVAS, num_iovas=1, **allow)[0] == 0
    flags = I.IOMMU_IOAS_MAP_READABLE
    result, out = env.native(I.IOMMU_IOAS_MAP, I.IOAS_MAP, flags=flags, ioas_id=1, reserved=0,
                             user_va=RAM, length=PAGE, iova=0)
    assert (result, out["iova"]) == (0, 0x100000)
    ioas = env.ctx.get_ioas(1)
    with pytest.raises(KernelError) as excinfo:
        ioas.reserve(0x180000, 0x180FFF, "test")  # an allowed range blocks reservations
    assert excinfo.value.errno == errno.EADDRINUSE


# ============================================================================ the allocator

@pytest.mark.parametrize("addr, length, expected", [
    (1 << 31, 3 * PAGE, 0x4000),  # aligned to roundup_pow_of_two(length), 16 KiB
    (0, 5 * PAGE, 0x8000),  # addr 0: the length's alignment
    (RAM + 0x800, 0x800, 0x1800),  # the page offset is ORed in
    (1 << 40, 64 << 20, 2 << 20),  # capped at 2 MiB
    (RAM + PAGE, 8 * PAGE, PAGE),  # addr's lowest bit limits the alignment
])
def test_alloc_iova(addr: int, length: int, expected: int) -> None:
    assert Ioas().alloc_iova(addr, length) == expected


def test_alloc_iova_limits() -> None:
    ioas = Ioas()
    for length, error in ((0, errno.EOVERFLOW), (U64_MAX // 2, errno.EOVERFLOW)):
        with pytest.raises(KernelError) as excinfo:
            ioas.alloc_iova(RAM, length)
        assert excinfo.value.errno == error
    ioas.add_domain(Domain(0x1000, 0, (1 << 20) - 1, False))
    with pytest.raises(KernelError) as excinfo:
        ioas.alloc_iova(RAM + 0x800, 0x800)  # only 2 KiB alignment possible, 4 KiB needed
    assert excinfo.value.errno == errno.EINVAL
    ioas.reserve(0x80000, 0xFFFFF, "test")
    assert ioas.alloc_iova(0, 0x40000) == 0x40000
    with pytest.raises(KernelError) as excinfo:
        ioas.alloc_iova(0, 0x80000)
    assert excinfo.value.errno == errno.ENOSPC


# ============================================================================ §3.3: type1 vs iommufd

class Pair:
    """The same program against a type1v2 container and against the iommufd compat path."""

    def __init__(self, v2: bool = True) -> None:
        self.compat = Env(device=True)
        if not v2:
            assert self.compat.call(self.compat.iommufd, V.VFIO_SET_IOMMU, 1) == 0
        config = load_config(None)
        self.engine = Engine(config, still_open=lambda f: True)
        env = self.compat
        self.container = self.engine.open(FileKind.CONTAINER, None, env.proc.caller)
        self.group = self.engine.open(FileKind.GROUP, 1, env.proc.caller)
        env.fds[50] = self.container
        env.proc.memory.write(BUF, struct.pack("<i", 50))
        assert env.call(self.group, V.VFIO_GROUP_SET_CONTAINER, BUF) == 0
        assert env.call(self.container, V.VFIO_SET_IOMMU, 3 if v2 else 1) == 0

    def both(self, fn: Any) -> tuple[Any, Any]:
        """``fn(env)`` on the type1 container, then on the iommufd."""
        env = self.compat
        iommufd = env.iommufd
        env.iommufd = self.container
        try:
            type1 = fn(env)
        finally:
            env.iommufd = iommufd
        return type1, fn(env)


def test_diff_set_iommu() -> None:
    env = Env(attach=False)
    container = env.engine.open(FileKind.CONTAINER, None, env.proc.caller)
    assert env.call(container, V.VFIO_SET_IOMMU, 3) == -errno.EINVAL  # no group
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 3) == -errno.ENODEV
    env.fds[50] = container
    env.proc.memory.write(BUF, struct.pack("<i", 50))
    assert env.call(env.group, V.VFIO_GROUP_SET_CONTAINER, BUF) == 0
    group2 = env.open(FileKind.GROUP, 2)
    assert env.attach(group2) == 0
    assert env.call(container, V.VFIO_SET_IOMMU, 2) == -errno.ENODEV  # no driver for type 2
    assert env.call(env.iommufd, V.VFIO_SET_IOMMU, 2) == -errno.EINVAL
    pair = Pair()
    assert pair.both(lambda e: e.call(e.iommufd, V.VFIO_SET_IOMMU, 3)) == (-errno.EINVAL, 0)  # twice


def test_diff_before_set_iommu() -> None:
    env = Env()  # group attached, SET_IOMMU never called: the compat IOAS works anyway
    assert env.map(0x1000, PAGE) == 0 and env.get_info(16)[0] == 0


def test_diff_vaddr_and_update_vaddr() -> None:
    pair = Pair()
    assert pair.both(lambda e: e.call(e.iommufd, V.VFIO_CHECK_EXTENSION, V.VFIO_UPDATE_VADDR)) == (1, 0)
    assert pair.both(lambda e: e.map(0x1000, PAGE)) == (0, 0)
    assert pair.both(lambda e: e.unmap(0x1000, PAGE, V.VFIO_DMA_UNMAP_FLAG_VADDR)) == (
        (0, PAGE), (-errno.EINVAL, PAGE))


def test_diff_map_without_permission_and_alignment() -> None:
    pair = Pair()
    # Same errno, different reasons: type1 checks the flags, iommufd's VT-d domain the PTE.
    assert pair.both(lambda e: e.map(0x1000, PAGE, flags=0)) == (-errno.EINVAL, -errno.EINVAL)
    no_domain = Env()
    assert no_domain.map(0x1000, PAGE, flags=0) == 0  # expected: nodev
    assert no_domain.map(0x10001, 7, RAM + 1) == 0  # type1 always needs page alignment
    assert no_domain.open_device() == -errno.EADDRINUSE
    assert no_domain.unmap(0x10001, 7) == (0, 7)
    assert no_domain.open_device() == -errno.EINVAL  # the prot-0 area cannot be loaded


def test_diff_map_range_checks() -> None:
    pair = Pair()
    assert pair.both(lambda e: e.map(MSI - PAGE, PAGE)) == (0, 0)
    # Overlapping an existing mapping *and* the MSI window: type1 says EEXIST, iommufd EINVAL.
    assert pair.both(lambda e: e.map(MSI - PAGE, 2 * PAGE, RAM)) == (-errno.EEXIST, -errno.EINVAL)


def test_diff_entry_limit() -> None:
    compat = Env(device=True)
    for k in range(10):
        assert compat.map(k * PAGE, PAGE, RAM + k * PAGE) == 0
    result, data = compat.get_info(4096)
    assert struct.unpack_from("<I", data, 32)[0] == 0xFFFFFFFF  # DMA_AVAIL never shrinks


def test_diff_v2_bisect_and_v1_inside() -> None:
    pair = Pair()
    assert pair.both(lambda e: e.map(0x1000, 2 * PAGE)) == (0, 0)
    assert pair.both(lambda e: e.unmap(0x1000, PAGE)) == ((-errno.EINVAL, PAGE), (-errno.ENOENT, 0))
    v1 = Pair(v2=False)
    assert v1.both(lambda e: e.map(0x1000, 2 * PAGE)) == (0, 0)
    # type1 v1 unmaps whole mappings it starts at; iommufd cuts exactly.
    assert v1.both(lambda e: e.unmap(0x1000, PAGE)) == ((0, 2 * PAGE), (0, PAGE))


def test_diff_empty_unmap_and_error_write_back() -> None:
    pair = Pair()
    assert pair.both(lambda e: e.unmap(0x100000, PAGE)) == ((0, 0), (0, 0))
    assert pair.both(lambda e: e.map(0x1000, PAGE)) == (0, 0)
    assert pair.both(lambda e: e.map(0x2000, 2 * PAGE)) == (0, 0)
    assert pair.both(lambda e: e.unmap(0x1000, 2 * PAGE)) == (
        (-errno.EINVAL, 2 * PAGE), (-errno.ENOENT, PAGE))  # type1 writes nothing back


def test_diff_dirty_tracking() -> None:
    pair = Pair()
    dirty = V.DIRTY_BITMAP.pack(argsz=8, flags=V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START)

    def start(e: Env) -> int:
        e.proc.memory.write(BUF, dirty)
        return e.call(e.iommufd, V.VFIO_IOMMU_DIRTY_PAGES, BUF)
    assert pair.both(start) == (0, -errno.ENOTTY)


def test_diff_get_info_caps() -> None:
    pair = Pair()
    type1, compat = pair.both(lambda e: e.get_info(4096))
    assert struct.unpack_from("<HHI", type1[1], 24) == (2, 1, 56)  # MIGRATION first
    assert struct.unpack_from("<HHI", compat[1], 24) == (3, 1, 40)  # DMA_AVAIL, then IOVA_RANGE


def test_diff_last_group_detach() -> None:
    pair = Pair()
    assert pair.both(lambda e: e.map(0x1000, PAGE)) == (0, 0)
    env = pair.compat
    env.close_device()
    assert env.call(pair.group, V.VFIO_GROUP_UNSET_CONTAINER) == 0
    assert env.call(env.group, V.VFIO_GROUP_UNSET_CONTAINER) == 0
    assert pair.engine.locked_memory.total() == 0  # type1 tore its mapping down
    assert env.areas() == [(0x1000, PAGE)]  # the IOAS keeps it


def test_diff_accounting_per_process_vs_per_user() -> None:
    pair = Pair()
    assert pair.both(lambda e: e.map(0x1000, 2 * PAGE)) == (0, 0)
    env = pair.compat
    assert pair.engine.locked_memory.pages_of(env.proc.caller.process_key()) == 2
    assert env.charged() == 2 and env.charged_mm() == 0


# ============================================================================ state machine

SPACE = 64  # IOVA pages of the model
MEMLOCK = 24


class IoasModel(RuleBasedStateMachine):
    """Random maps, unmaps, v1 cuts and domain changes on one IOAS against a simple model.

    The model is {first page: (pages, ram page)}; the IOAS must agree on every result and keep
    its invariants: sorted, non-overlapping areas; every area pinned exactly while a domain
    exists; the user's ledger equal to the pages pinned; the alignment S1 asks for.
    """

    @initialize(v1=st.booleans())
    def setup(self, v1: bool) -> None:
        self.env = Env(memlock=MEMLOCK * PAGE)
        if v1:
            assert self.env.call(self.env.iommufd, V.VFIO_SET_IOMMU, 1) == 0
        self.v1 = v1
        self.model: dict[int, int] = {}
        self.domain = False

    def _overlaps(self, first: int, count: int) -> bool:
        return any(f < first + count and first < f + c for f, c in self.model.items())

    @rule(first=st.integers(0, SPACE - 1), count=st.integers(1, 8), ram=st.integers(0, 56))
    def map(self, first: int, count: int, ram: int) -> None:
        charged = self.env.charged()
        result = self.env.map(first * PAGE, count * PAGE, RAM + ram * PAGE)
        if self._overlaps(first, count):
            assert result == -errno.EEXIST
        elif self.domain and charged + count > MEMLOCK:
            assert result == -errno.ENOMEM
        else:
            assert result == 0
            self.model[first] = count

    @rule(first=st.integers(0, SPACE), count=st.integers(0, 16))
    def unmap(self, first: int, count: int) -> None:
        last = first + count - 1
        result, size = self.env.unmap(first * PAGE, count * PAGE)
        if count == 0:
            if self.v1 and first:
                self._cut(first - 1)
            assert (result, size) == (-errno.EINVAL, 0)
            return
        if self.v1:
            self._cut(last)
            if first:
                self._cut(first - 1)
        inside = sorted(f for f, c in self.model.items() if f <= last and f + c - 1 >= first)
        removed = 0
        for f in inside:
            if f < first or f + self.model[f] - 1 > last:
                assert (result, size) == (-errno.ENOENT, removed * PAGE)
                return
            removed += self.model.pop(f)
        assert (result, size) == (0, removed * PAGE)

    def _cut(self, page: int) -> None:
        """Model of iopt_cut_iova at the last byte of ``page``."""
        for f, c in list(self.model.items()):
            if f <= page < f + c - 1:
                self.model[f] = page - f + 1
                self.model[page + 1] = f + c - page - 1

    @rule()
    def unmap_all(self) -> None:
        assert self.env.unmap(0, 0, ALL) == (0, sum(self.model.values()) * PAGE)
        self.model.clear()

    @precondition(lambda self: not self.domain)
    @rule()
    def open_device(self) -> None:
        pinned = sum(self.model.values())
        result = self.env.open_device()
        if pinned > MEMLOCK:
            assert result == -errno.ENOMEM
        else:
            assert result == 0
            self.domain = True

    @precondition(lambda self: self.domain)
    @rule()
    def close_device(self) -> None:
        self.env.close_device()
        self.domain = False

    @invariant()
    def ioas_agrees_with_model(self) -> None:
        if not hasattr(self, "env"):
            return
        ioas = self.env.ioas
        areas = list(ioas.areas)
        assert [(a.iova // PAGE, a.length // PAGE) for a in areas] == sorted(self.model.items())
        assert all(a.last < b.iova for a, b in zip(areas, areas[1:]))
        assert all(a.pinned == self.domain for a in areas)
        assert self.env.charged() == ioas.pinned_pages() == (
            sum(self.model.values()) if self.domain else 0)
        assert ioas.iova_alignment == (PAGE if self.domain or self.v1 else 1)


TestIoasStateMachine = IoasModel.TestCase
TestIoasStateMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_unmap_error_carries_what_was_removed() -> None:
    accounting = Accounting()
    ioas = Ioas(accounting)
    proc = Process(Env(attach=False), 5)
    ioas.add_domain(Domain(0x1000, 0, U64_MAX, True))
    ioas.map_user(proc.caller, 0x1000, RAM, PAGE, RW, account_mm=False)
    ioas.map_user(proc.caller, 0x2000, RAM, 2 * PAGE, RW, account_mm=False)
    assert accounting.users.total() == 3
    with pytest.raises(UnmapError) as excinfo:
        ioas.unmap_iova(0x1000, 2 * PAGE)
    assert excinfo.value.errno == errno.ENOENT and excinfo.value.unmapped == PAGE
    assert accounting.users.total() == 2


# ============================================================================ the area store

class AreaTreeModel(RuleBasedStateMachine):
    """The blocked area store against a plain sorted list, with tiny blocks so that every
    split, merge-free removal and cross-block run is exercised."""

    def __init__(self) -> None:
        super().__init__()
        self.tree = AreaTree()
        self.tree.LOAD = 2  # type: ignore[misc]
        self.model: list[Area] = []
        self.pages = Pages(Process(Env(attach=False), 7).caller, RAM, PAGE, True, AccountMode.NONE)

    def _free(self, first: int, count: int) -> bool:
        return all(a.last < first or a.iova > first + count - 1 for a in self.model)

    @rule(first=st.integers(0, 200), count=st.integers(1, 6))
    def insert(self, first: int, count: int) -> None:
        if self._free(first, count):
            area = Area(first, first + count - 1, self.pages, 0, RW)
            self.tree.insert(area)
            self.model = sorted(self.model + [area], key=lambda a: a.iova)

    @rule(start=st.integers(0, 210), length=st.integers(1, 40))
    def remove_run(self, start: int, length: int) -> None:
        run = self.tree.overlapping(start, start + length - 1)
        assert run == [a for a in self.model if a.last >= start and a.iova <= start + length - 1]
        if run:
            self.tree.remove_run(run[0], len(run))
            self.model = [a for a in self.model if a not in run]

    @rule(index=st.integers(0, 100))
    def split(self, index: int) -> None:
        if self.model:
            old = self.model[index % len(self.model)]
            if old.iova < old.last:
                halves = [Area(old.iova, old.iova, self.pages, 0, RW),
                          Area(old.iova + 1, old.last, self.pages, 0, RW)]
                self.tree.replace(old, halves)
                self.model = sorted([a for a in self.model if a is not old] + halves, key=lambda a: a.iova)

    @rule(point=st.integers(0, 210))
    def lookups(self, point: int) -> None:
        containing = [a for a in self.model if a.iova <= point <= a.last]
        assert self.tree.first_overlapping(point, point) == (containing[0] if containing else None)
        assert list(self.tree.iter_from(point)) == [a for a in self.model if a.last >= point]

    @invariant()
    def same_areas(self) -> None:
        assert list(self.tree) == self.model and len(self.tree) == len(self.model)


TestAreaTree = AreaTreeModel.TestCase
TestAreaTree.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)
