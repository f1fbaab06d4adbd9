"""The native iommufd ioctls beyond IOAS_ALLOC/MAP/UNMAP: IOAS_COPY, IOAS_MAP_FILE, OPTION,
GET_HW_INFO, HWPT_ALLOC, HWPT_SET_DIRTY_TRACKING, HWPT_GET_DIRTY_BITMAP and IOAS_CHANGE_PROCESS.

Every expectation is the upstream kernel's (drivers/iommu/iommufd/{ioas,io_pagetable,pages,
hw_pagetable,device,main}.c and drivers/iommu/intel/iommu.c; shared/spec/iommufd.md §2.8, §2.9,
§2.12, §2.15-§2.17 with the corrections noted in the engine's docstrings). The environment is
test_iommufd_compat's: an engine, /dev/iommu open, group 1 attached, its device bound through the
group path (``device=True``: the compat IOAS has an automatic domain). Device writes go through
``ioasidfs.devices.dma`` into a :class:`FakeFile`'s buffer, which lives in this process, so DMA
into a MAP_FILE area is real.
"""
from __future__ import annotations

import dataclasses
import errno
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ioasidfs.devices.dma import DmaSpace, FaultLog, dma_write
from ioasidfs.engine.caller import CAP_SYS_RESOURCE, CallerFile, FakeFile
from ioasidfs.engine.ioas import U64_MAX, Domain, Ioas, Pages
from ioasidfs.engine.ioas import change_process as ioas_change_process
from ioasidfs.engine.iommufd import HwptPaging, UserHwpt, VtdIommu
from ioasidfs.errors import IommuFault, KernelError
from ioasidfs.uapi import iommufd as I
from test_iommufd_compat import BUF, HOLE, PAGE, RAM, RO, Env, Process

ARG = BUF
DATA = BUF + 0x800  # GET_HW_INFO blobs, dirty bitmaps (inside BUF's 2 pages)
RW = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE
FIXED = I.IOMMU_IOAS_MAP_FIXED_IOVA
DIRTY = I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
MEMFD = 40  # fd numbers the fake process has files at
RDONLY_FILE = 41
PIPE = 42
SEALED = 43


# ----------------------------------------------------------------------------- plumbing

class Native:
    """An Env plus files behind fds and the ioctls' argument handling."""

    def __init__(self, *, device: bool = True, dirty: bool = False, cap_sys_resource: bool = True,
                 attach: bool = True, file_size: int = 16 * PAGE) -> None:
        self.env = Env(device=device, attach=attach)
        if dirty:
            self.env.ctx.vtd = VtdIommu.with_dirty_tracking(39)
        self.files: dict[int, FakeFile] = {
            MEMFD: FakeFile(file_size),
            RDONLY_FILE: FakeFile(file_size, writable=False),
            PIPE: FakeFile(file_size, pinnable=False),
            SEALED: FakeFile(file_size, write_sealed=True),
        }
        self.taken: list[FakeFile] = []
        self.cap_sys_resource = cap_sys_resource
        proc = self.env.proc
        proc.caller = dataclasses.replace(proc.caller, file=self._file,
                                          has_capability=self._capable)

    def _file(self, fd: int) -> CallerFile:
        if fd not in self.files:
            raise KernelError(errno.EBADF, f"fd {fd} is not open")
        # fget: a reference of our own to the same file (same buffer, its own close()).
        shared = self.files[fd]
        ref = FakeFile(0, writable=shared.writable, pinnable=shared.pinnable,
                       write_sealed=shared.write_sealed)
        ref._buffer, ref._size = shared._buffer, shared._size  # noqa: SLF001 - same file
        ref.size = shared.size  # type: ignore[method-assign]
        self.taken.append(ref)
        return ref

    def _capable(self, cap: int) -> bool:
        assert cap == CAP_SYS_RESOURCE
        return self.cap_sys_resource

    @property
    def ctx(self) -> Any:
        return self.env.ctx

    @property
    def mem(self) -> Any:
        return self.env.proc.memory

    def call(self, cmd: int, layout: Any, size: int | None = None, **fields: int) -> tuple[int, dict[str, Any]]:
        raw = layout.pack(size=layout.size if size is None else size, **fields)
        self.mem.write(ARG, raw)
        result = self.env.call(self.env.iommufd, cmd, ARG)
        return result, layout.unpack(self.mem.read(ARG, layout.size))

    def ioas_alloc(self) -> int:
        result, out = self.call(I.IOMMU_IOAS_ALLOC, I.IOAS_ALLOC)
        assert result == 0
        return int(out["out_ioas_id"])

    def map(self, ioas: int, iova: int, length: int, va: int = RAM, flags: int = RW | FIXED) -> int:
        result, out = self.call(I.IOMMU_IOAS_MAP, I.IOAS_MAP, flags=flags, ioas_id=ioas, user_va=va,
                                length=length, iova=iova)
        return result if result else int(out["iova"])

    def map_file(self, ioas: int, fd: int, start: int, length: int, iova: int = 0,
                 flags: int = RW | FIXED) -> int:
        result, out = self.call(I.IOMMU_IOAS_MAP_FILE, I.IOAS_MAP_FILE, flags=flags, ioas_id=ioas,
                                fd=fd, start=start, length=length, iova=iova)
        return result if result else int(out["iova"])

    def copy(self, dst: int, src: int, src_iova: int, length: int, dst_iova: int = 0,
             flags: int = RW | FIXED) -> int:
        result, out = self.call(I.IOMMU_IOAS_COPY, I.IOAS_COPY, flags=flags, dst_ioas_id=dst,
                                src_ioas_id=src, length=length, dst_iova=dst_iova, src_iova=src_iova)
        return result if result else int(out["dst_iova"])

    def unmap(self, ioas: int, iova: int, length: int) -> int:
        result, _ = self.call(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, ioas_id=ioas, iova=iova, length=length)
        return result

    def hwpt_alloc(self, pt_id: int, flags: int = 0, dev_id: int | None = None, **extra: int) -> int:
        if dev_id is None:
            dev_id = self.dev_id
        result, out = self.call(I.IOMMU_HWPT_ALLOC, I.HWPT_ALLOC, flags=flags, dev_id=dev_id,
                                pt_id=pt_id, **extra)
        return result if result else int(out["out_hwpt_id"])

    def set_dirty(self, hwpt: int, flags: int = I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE, **extra: int) -> int:
        result, _ = self.call(I.IOMMU_HWPT_SET_DIRTY_TRACKING, I.HWPT_SET_DIRTY_TRACKING, flags=flags,
                              hwpt_id=hwpt, **extra)
        return result

    def bitmap(self, hwpt: int, iova: int, length: int, page_size: int = PAGE, flags: int = 0,
               fill: bytes = b"", nbytes: int = 8, **extra: int) -> tuple[int, bytes]:
        self.mem.write(DATA, fill.ljust(64, b"\0"))
        result, _ = self.call(I.IOMMU_HWPT_GET_DIRTY_BITMAP, I.HWPT_GET_DIRTY_BITMAP, hwpt_id=hwpt,
                              flags=flags, iova=iova, length=length, page_size=page_size, data=DATA,
                              **extra)
        return result, self.mem.read(DATA, nbytes)

    def destroy(self, object_id: int) -> int:
        result, _ = self.call(I.IOMMU_DESTROY, I.DESTROY, id=object_id)
        return result

    @property
    def dev_id(self) -> int:
        assert self.env.device is not None
        return int(self.ctx.id_of(self.env.device))

    @property
    def compat_id(self) -> int:
        return int(self.ctx.id_of(self.env.ioas))

    def ioas(self, ioas_id: int) -> Ioas:
        ioas = self.ctx.objects[ioas_id]
        assert isinstance(ioas, Ioas)
        return ioas

    def areas(self, ioas_id: int) -> list[tuple[int, int]]:
        return [(a.iova, a.length) for a in self.ioas(ioas_id).areas]

    def dma(self, ioas_id: int, iova: int, data: bytes) -> None:
        """A device write through the IOAS's translation table (what an attached device does)."""
        space = DmaSpace(self.ioas(ioas_id).table, self.ctx.owners.key, FaultLog())
        dma_write(space, iova, data, device="test")


def bits(raw: bytes) -> list[int]:
    """The set bits of a little-endian bitmap, ascending."""
    value = int.from_bytes(raw, "little")
    return [i for i in range(len(raw) * 8) if value >> i & 1]


# ----------------------------------------------------------------------------- IOAS_COPY

def test_copy_shares_the_source_pages_without_a_second_charge() -> None:
    n = Native()
    src = n.compat_id  # has the automatic domain: pinned and charged at MAP time
    assert n.map(src, 0x100000, 4 * PAGE) == 0x100000
    charged = n.env.charged()
    assert charged == 4
    dst = n.ioas_alloc()
    assert n.copy(dst, src, 0x100000, 4 * PAGE, dst_iova=0x200000) == 0x200000
    assert n.areas(dst) == [(0x200000, 4 * PAGE)]
    # A domain on the destination loads the shared pages: no new pins, no new charge.
    assert n.hwpt_alloc(dst) > 0
    assert n.env.charged() == charged
    assert n.ioas(dst).areas.first_overlapping(0x200000, 0x200000).pages is \
        n.ioas(src).areas.first_overlapping(0x100000, 0x100000).pages
    # The source goes; the copy still holds the pages (pinned by the destination's domain).
    assert n.unmap(src, 0x100000, 4 * PAGE) == 0
    assert n.env.charged() == 4
    assert n.unmap(dst, 0x200000, 4 * PAGE) == 0
    assert n.env.charged() == 0


def test_copy_of_any_byte_range_across_areas() -> None:
    n = Native(device=False)
    src, dst = n.ioas_alloc(), n.ioas_alloc()  # no domains: byte-granular
    assert n.map(src, 0x10000, 2 * PAGE, RAM) == 0x10000
    assert n.map(src, 0x12000, PAGE, RAM + 0x8000) == 0x12000
    # 511-byte steps (selftest copy_sweep): any sub-range, spanning the two areas.
    assert n.copy(dst, src, 0x10000 + 511, 2 * PAGE, dst_iova=0x40000 + 511) == 0x40000 + 511
    assert n.areas(dst) == [(0x40000 + 511, 2 * PAGE - 511), (0x42000, 511)]
    dst_areas = list(n.ioas(dst).areas)
    assert dst_areas[0].vaddr == RAM + 511 and dst_areas[1].vaddr == RAM + 0x8000


@pytest.mark.parametrize("flags, src_iova, length, dst_iova, errno_", [
    (RW | FIXED | 8, 0x10000, PAGE, 0x40000, errno.EOPNOTSUPP),
    (RW | FIXED, U64_MAX, PAGE, 0x40000, errno.EOVERFLOW),
    (RW | FIXED, 0x10000, U64_MAX, 0x40000, errno.EOVERFLOW),
    (RW | FIXED, 0x10000, PAGE, U64_MAX, errno.EOVERFLOW),
    (FIXED, 0x10000, PAGE, 0x40000, errno.EINVAL),          # neither READABLE nor WRITEABLE
    (RW | FIXED, 0x10000, 0, 0x40000, errno.EINVAL),        # iopt_get_pages: length 0
    (RW | FIXED, 0x10000, 3 * PAGE, 0x40000, errno.ENOENT),  # runs into a hole
    (RW | FIXED, 0xF000, 2 * PAGE, 0x40000, errno.ENOENT),  # starts in a hole
    (RW | FIXED, U64_MAX - 1, 2 * PAGE, 0x40000, errno.EOVERFLOW),
    (RW | FIXED, 0x10000, PAGE, 0x40001, errno.EINVAL),     # destination alignment (domain)
    (RW | FIXED, 0x10000, PAGE, 0xFEE00000, errno.EINVAL),  # reserved MSI window
])
def test_copy_errors(flags: int, src_iova: int, length: int, dst_iova: int, errno_: int) -> None:
    n = Native()
    src = n.ioas_alloc()
    assert n.map(src, 0x10000, 2 * PAGE) == 0x10000
    dst = n.compat_id  # the domain: 4 KiB alignment, the MSI reservation
    assert n.copy(dst, src, src_iova, length, dst_iova, flags) == -errno_
    assert n.areas(dst) == []


def test_copy_checks_the_source_before_the_destination() -> None:
    n = Native()
    src = n.ioas_alloc()
    assert n.map(src, 0x10000, PAGE) == 0x10000
    assert n.copy(99, 98, 0x10000, PAGE) == -errno.ENOENT
    assert n.copy(99, src, 0x20000, PAGE) == -errno.ENOENT  # src pages first: ENOENT either way
    assert n.copy(99, src, 0x10000, 0) == -errno.EINVAL      # the source's EINVAL wins
    assert n.copy(99, src, 0x10000, PAGE) == -errno.ENOENT   # then the destination


def test_copy_writeable_of_read_only_source_is_eperm() -> None:
    n = Native(device=False)
    src, dst = n.ioas_alloc(), n.ioas_alloc()
    assert n.map(src, 0x10000, PAGE, RO, I.IOMMU_IOAS_MAP_READABLE | FIXED) == 0x10000
    assert n.copy(dst, src, 0x10000, PAGE, 0x40000) == -errno.EPERM
    assert n.copy(dst, src, 0x10000, PAGE, 0x40000, I.IOMMU_IOAS_MAP_READABLE | FIXED) == 0x40000


def test_copy_allocates_from_the_source_address() -> None:
    n = Native(device=False)
    src, dst = n.ioas_alloc(), n.ioas_alloc()
    assert n.map(src, 0x10000, PAGE, RAM + 0x3000) == 0x10000
    # Hint = the first piece's user address (RAM + 0x3000): 4 KiB-aligned, so 0x1000 fits.
    assert n.copy(dst, src, 0x10000, PAGE, flags=RW) == 0x1000
    assert n.map(src, 0x20000, 0x100, RAM + 0x10) == 0x20000
    # Byte offset 0x10 kept; alignment min(roundup(0x100), lowbit(RAM+0x10)) = 0x10.
    assert n.copy(dst, src, 0x20000, 0x100, flags=RW) == 0x2010


def test_copy_into_a_domain_pins_from_the_mapping_process() -> None:
    n = Native()
    src = n.ioas_alloc()  # no domain: MAP is lazy, nothing checked
    assert n.map(src, 0x10000, 2 * PAGE, HOLE) == 0x10000
    assert n.copy(n.compat_id, src, 0x10000, 2 * PAGE, 0x40000) == -errno.EFAULT
    assert n.map(src, 0x20000, 2 * PAGE, RAM) == 0x20000
    assert n.copy(n.compat_id, src, 0x20000, 2 * PAGE, 0x40000) == 0x40000
    assert n.env.charged() == 2


# ----------------------------------------------------------------------------- IOAS_MAP_FILE

def test_map_file_without_a_domain_is_lazy() -> None:
    n = Native(device=False)
    ioas = n.ioas_alloc()
    # Not a memfd, not in the file: nothing is pinned, so nothing is checked yet.
    assert n.map_file(ioas, PIPE, 0, 4 * PAGE, 0x10000) == 0x10000
    assert n.map_file(ioas, MEMFD, 64 * PAGE, 4 * PAGE, 0x20000) == 0x20000
    assert n.env.charged() == 0


@pytest.mark.parametrize("fd, start, length, flags, errno_", [
    (MEMFD, 0, PAGE, RW | FIXED | 8, errno.EOPNOTSUPP),
    (MEMFD, 0, U64_MAX, RW | FIXED, errno.EOVERFLOW),
    (MEMFD, 0, PAGE, FIXED, errno.EINVAL),
    (99, 0, 0, RW | FIXED, errno.EINVAL),                 # length 0 before the fd
    (99, U64_MAX - 10, 2 * PAGE, RW | FIXED, errno.EOVERFLOW),  # start + length before the fd
    (99, 0, PAGE, RW | FIXED, errno.EBADF),
    (-1, 0, PAGE, RW | FIXED, errno.EBADF),
    (RDONLY_FILE, 0, PAGE, RW | FIXED, errno.EPERM),      # WRITEABLE needs FMODE_WRITE
    (SEALED, 0, PAGE, RW | FIXED, errno.EPERM),           # mapping_map_writable
    (MEMFD, 0, 100, RW | FIXED, errno.EINVAL),            # the domain's alignment
    (PIPE, 0, PAGE, RW | FIXED, errno.EINVAL),            # memfd_pin_folios: not shmem
    (MEMFD, 15 * PAGE, 2 * PAGE, RW | FIXED, errno.EINVAL),  # past the end of the file
])
def test_map_file_errors(fd: int, start: int, length: int, flags: int, errno_: int) -> None:
    n = Native()  # the compat IOAS has a domain: pages are pinned at MAP time
    assert n.map_file(n.compat_id, fd, start, length, 0x10000, flags) == -errno_
    assert n.areas(n.compat_id) == []
    assert all(f.closed for f in n.taken), "a failed MAP_FILE keeps no file reference"


def test_map_file_of_a_read_only_file_for_reading() -> None:
    n = Native()
    assert n.map_file(n.compat_id, RDONLY_FILE, 0, PAGE, 0x10000, I.IOMMU_IOAS_MAP_READABLE | FIXED) == 0x10000


def test_map_file_enoent_and_checks_before_the_ioas() -> None:
    n = Native()
    assert n.map_file(77, MEMFD, 0, PAGE) == -errno.ENOENT
    assert n.map_file(77, 99, 0, PAGE) == -errno.ENOENT   # the IOAS before the fd
    assert n.map_file(77, MEMFD, 0, PAGE, flags=FIXED) == -errno.EINVAL


def test_map_file_allocates_from_the_file_offset_and_charges_the_mapper() -> None:
    n = Native()
    iova = n.map_file(n.compat_id, MEMFD, 3 * PAGE, 2 * PAGE, flags=RW)
    # Hint = the file offset 0x3000: alignment min(roundup(0x2000), 0x1000) = 0x1000.
    assert iova == 0x1000
    assert n.env.charged() == 2
    assert n.unmap(n.compat_id, iova, 2 * PAGE) == 0
    assert n.env.charged() == 0


def test_device_writes_reach_the_file_and_the_reference_goes_with_the_last_area() -> None:
    n = Native()
    ioas = n.compat_id
    assert n.map_file(ioas, MEMFD, PAGE, 2 * PAGE, 0x10000) == 0x10000
    ref = n.taken[-1]
    n.dma(ioas, 0x10000 + 8, b"written by the device")
    assert n.files[MEMFD].data[PAGE + 8:PAGE + 29] == b"written by the device"
    # A copy shares the file's pages: the reference stays until both areas are gone.
    other = n.ioas_alloc()
    assert n.copy(other, ioas, 0x10000, 2 * PAGE, 0x50000) == 0x50000
    n.dma(other, 0x50000 + PAGE, b"via the copy")
    assert n.files[MEMFD].data[2 * PAGE:2 * PAGE + 12] == b"via the copy"
    assert n.unmap(ioas, 0x10000, 2 * PAGE) == 0
    assert not ref.closed and ref.windows
    assert n.unmap(other, 0x50000, 2 * PAGE) == 0
    assert ref.closed and not ref.windows
    with pytest.raises(IommuFault):
        n.dma(other, 0x50000, b"x")


def test_map_file_read_only_area_blocks_device_writes() -> None:
    n = Native()
    assert n.map_file(n.compat_id, MEMFD, 0, PAGE, 0x10000, I.IOMMU_IOAS_MAP_READABLE | FIXED) == 0x10000
    with pytest.raises(IommuFault):
        n.dma(n.compat_id, 0x10000, b"x")
    assert n.files[MEMFD].data[:1] == b"\0"


def test_map_file_pin_checks_come_when_a_domain_does() -> None:
    n = Native()
    ioas = n.ioas_alloc()
    assert n.map_file(ioas, MEMFD, 0, 4 * PAGE, 0x10000) == 0x10000
    n.files[MEMFD].truncate(2 * PAGE)  # ftruncate after MAP: the pin now fails
    assert n.hwpt_alloc(ioas) == -errno.EINVAL
    n.files[MEMFD].truncate(16 * PAGE)
    assert n.hwpt_alloc(ioas) > 0
    assert n.env.charged() == 4


# ----------------------------------------------------------------------------- IOMMU_OPTION

def option(n: Native, option_id: int, op: int, object_id: int = 0, val64: int = 0,
           **extra: int) -> tuple[int, int, bytes]:
    """(result, val64 afterwards, the 16 bytes before val64 afterwards)."""
    raw = I.OPTION.pack(size=24, option_id=option_id, op=op, object_id=object_id, val64=val64, **extra)
    n.mem.write(ARG, raw)
    result = n.env.call(n.env.iommufd, I.IOMMU_OPTION, ARG)
    after = n.mem.read(ARG, 24)
    assert after[:16] == raw[:16], "only val64 is written back"
    return result, struct.unpack_from("<Q", after, 16)[0], after


def test_option_rlimit_mode() -> None:
    n = Native(device=False, attach=False)  # a fresh context: no object yet
    R, GET, SET = I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_OP_GET, I.IOMMU_OPTION_OP_SET
    assert option(n, R, GET, val64=7)[:2] == (0, 0)
    assert option(n, R, GET, object_id=1)[:2] == (-errno.EOPNOTSUPP, 0)
    assert option(n, R, 2)[:2] == (-errno.EOPNOTSUPP, 0)
    assert option(n, R, SET, val64=2)[:2] == (-errno.EINVAL, 2)
    assert option(n, R, SET, val64=1)[:2] == (0, 1)   # SET writes val64 back too
    assert option(n, R, GET)[:2] == (0, 1)
    ioas = n.ioas_alloc()
    assert option(n, R, SET, val64=0)[:2] == (-errno.EBUSY, 0)
    # MM mode: the next map is charged to the process, not the user.
    assert n.map(ioas, 0x10000, PAGE) == 0x10000
    assert n.ioas(ioas).areas.first_overlapping(0x10000, 0x10000).pages.mode.value == "mm"
    n.cap_sys_resource = False
    assert n.destroy(ioas) == 0
    assert option(n, R, SET, val64=0)[:2] == (-errno.EPERM, 0)  # EPERM before EBUSY/EINVAL


def test_option_huge_pages() -> None:
    n = Native(device=False)
    H, GET, SET = I.IOMMU_OPTION_HUGE_PAGES, I.IOMMU_OPTION_OP_GET, I.IOMMU_OPTION_OP_SET
    ioas = n.ioas_alloc()
    assert option(n, H, GET)[:2] == (-errno.ENOENT, 0)           # object 0 is no IOAS
    assert option(n, H, GET, object_id=ioas)[:2] == (0, 1)
    assert option(n, H, SET, object_id=ioas, val64=2)[:2] == (-errno.EINVAL, 2)
    assert option(n, H, 3, object_id=ioas)[:2] == (-errno.EOPNOTSUPP, 0)
    assert n.map(ioas, 0x10000, 0x100) == 0x10000                 # byte-granular area
    assert option(n, H, SET, object_id=ioas, val64=0)[:2] == (-errno.EADDRINUSE, 0)
    assert n.unmap(ioas, 0x10000, 0x100) == 0
    assert option(n, H, SET, object_id=ioas, val64=0)[:2] == (0, 0)
    assert option(n, H, GET, object_id=ioas)[:2] == (0, 0)
    assert n.ioas(ioas).iova_alignment == PAGE
    assert option(n, H, SET, object_id=ioas, val64=1)[:2] == (0, 1)
    assert n.ioas(ioas).iova_alignment == 1


def test_option_huge_pages_refused_once_domains_hold_mappings() -> None:
    n = Native()
    H, SET = I.IOMMU_OPTION_HUGE_PAGES, I.IOMMU_OPTION_OP_SET
    assert n.map(n.compat_id, 0x10000, PAGE) == 0x10000
    assert option(n, H, SET, object_id=n.compat_id, val64=0)[:2] == (-errno.EINVAL, 0)


def test_option_argument_checks() -> None:
    n = Native()
    assert option(n, 2, I.IOMMU_OPTION_OP_GET)[:2] == (-errno.EOPNOTSUPP, 0)
    assert option(n, I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_OP_GET, reserved=1)[:2] == \
        (-errno.EOPNOTSUPP, 0)


# ----------------------------------------------------------------------------- GET_HW_INFO

def hw_info(n: Native, data_len: int = 24, **fields: int) -> tuple[int, dict[str, Any], bytes]:
    n.mem.write(DATA, b"\xa5" * 64)
    fields.setdefault("dev_id", n.dev_id)
    fields.setdefault("data_uptr", DATA)
    result, out = n.call(I.IOMMU_GET_HW_INFO, I.HW_INFO, data_len=data_len, **fields)
    return result, out, n.mem.read(DATA, 64)


def test_hw_info_of_qemus_intel_iommu() -> None:
    n = Native()
    result, out, blob = hw_info(n)
    assert result == 0
    assert out["out_data_type"] == I.IOMMU_HW_INFO_TYPE_INTEL_VTD
    assert out["data_len"] == 24 and out["out_capabilities"] == 0 and out["out_max_pasid_log2"] == 0
    vtd = I.HW_INFO_VTD.unpack(blob[:24])
    assert vtd["flags"] == I.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 and vtd["reserved"] == 0
    cap, ecap = vtd["cap_reg"], vtd["ecap_reg"]
    assert (cap >> 16) & 0x3F == 38                 # MGAW: 39-bit guest addresses
    assert (cap >> 8) & 0x1F == 0x2                 # SAGAW: 3-level tables only
    assert (cap >> 34) & 3 == 3                     # 2 MiB and 1 GiB pages
    assert not ecap >> 43 & 1                       # legacy mode: no scalable mode
    assert blob[24:] == b"\xa5" * 40


@pytest.mark.parametrize("data_len, copied, zeroed", [(0, 0, 0), (8, 8, 0), (30, 24, 6)])
def test_hw_info_copy_and_zero_fill(data_len: int, copied: int, zeroed: int) -> None:
    n = Native()
    result, out, blob = hw_info(n, data_len)
    assert result == 0 and out["data_len"] == 24
    assert blob[:copied] == n.ctx.vtd.hw_info()[:copied]
    assert blob[copied:copied + zeroed] == bytes(zeroed)
    assert blob[copied + zeroed:] == b"\xa5" * (64 - copied - zeroed)


def test_hw_info_reports_dirty_tracking_of_a_capable_iommu() -> None:
    n = Native(dirty=True)
    result, out, _ = hw_info(n)
    assert result == 0 and out["out_capabilities"] == I.IOMMU_HW_CAP_DIRTY_TRACKING


def test_hw_info_argument_checks() -> None:
    n = Native()
    assert hw_info(n, flags=2)[0] == -errno.EOPNOTSUPP
    n.mem.write(ARG, I.HW_INFO.pack(size=40, dev_id=n.dev_id, data_len=0, data_uptr=0,
                                    reserved=b"\0\1\0"))
    assert n.env.call(n.env.iommufd, I.IOMMU_GET_HW_INFO, ARG) == -errno.EOPNOTSUPP
    assert hw_info(n, dev_id=n.compat_id)[0] == -errno.ENOENT   # an IOAS is no device
    assert hw_info(n, dev_id=99)[0] == -errno.ENOENT
    # Without INPUT_TYPE the input type is ignored; with it only DEFAULT and INTEL_VTD work.
    assert hw_info(n, out_data_type=I.IOMMU_HW_INFO_TYPE_ARM_SMMUV3)[0] == 0
    assert hw_info(n, flags=I.IOMMU_HW_INFO_FLAG_INPUT_TYPE,
                   out_data_type=I.IOMMU_HW_INFO_TYPE_ARM_SMMUV3)[0] == -errno.EOPNOTSUPP
    assert hw_info(n, flags=I.IOMMU_HW_INFO_FLAG_INPUT_TYPE,
                   out_data_type=I.IOMMU_HW_INFO_TYPE_INTEL_VTD)[0] == 0
    assert hw_info(n, data_uptr=HOLE)[0] == -errno.EFAULT


def test_hw_info_short_struct_gets_no_capabilities() -> None:
    n = Native()
    n.mem.write(ARG, I.HW_INFO.pack(size=32, dev_id=n.dev_id, data_len=0, data_uptr=0)[:32] + b"\xa5" * 8)
    assert n.env.call(n.env.iommufd, I.IOMMU_GET_HW_INFO, ARG) == 0
    assert I.HW_INFO.unpack(n.mem.read(ARG, 40))["out_data_type"] == I.IOMMU_HW_INFO_TYPE_INTEL_VTD
    assert n.mem.read(ARG + 32, 8) == b"\xa5" * 8   # a 6.6-sized struct: nothing past 32


# ----------------------------------------------------------------------------- HWPT_ALLOC

def test_hwpt_alloc_makes_a_manual_paging_domain() -> None:
    n = Native()
    ioas = n.ioas_alloc()
    assert n.map(ioas, 0x10000, 2 * PAGE) == 0x10000
    hwpt = n.hwpt_alloc(ioas)
    assert hwpt == ioas + 1
    obj = n.ctx.objects[hwpt]
    assert isinstance(obj, UserHwpt) and not obj.auto and obj.devices == []
    assert n.ioas(ioas).iova_alignment == PAGE and n.env.charged() == 2
    assert n.env.device is not None and n.env.device.hwpt is not obj  # not attached
    assert n.destroy(ioas) == -errno.EBUSY
    assert n.destroy(hwpt) == 0
    assert n.env.charged() == 0 and n.ioas(ioas).iova_alignment == 1
    assert n.destroy(ioas) == 0


@pytest.mark.parametrize("fields, errno_", [
    (dict(reserved=1), errno.EOPNOTSUPP),
    (dict(data_len=4), errno.EINVAL),                                # NONE with data
    (dict(data_type=I.IOMMU_HWPT_DATA_VTD_S1), errno.EINVAL),        # a type without data
    (dict(dev_id=99), errno.ENOENT),
    (dict(pt_id=99), errno.EINVAL),                                  # not ENOENT
    (dict(flags=1 << 4), errno.EOPNOTSUPP),
    (dict(flags=DIRTY), errno.EOPNOTSUPP),                           # QEMU: no SLADS
    (dict(flags=I.IOMMU_HWPT_ALLOC_NEST_PARENT), errno.EOPNOTSUPP),  # QEMU: no nesting
    (dict(data_type=I.IOMMU_HWPT_DATA_VTD_S1, data_len=8), errno.EOPNOTSUPP),
    (dict(flags=I.IOMMU_HWPT_FAULT_ID_VALID, fault_id=5), errno.ENOENT),
])
def test_hwpt_alloc_errors(fields: dict[str, int], errno_: int) -> None:
    n = Native()
    ioas = n.ioas_alloc()
    before = dict(n.ctx.objects)
    args = dict(pt_id=ioas, flags=0, dev_id=n.dev_id)
    args.update(fields)
    result, _ = n.call(I.IOMMU_HWPT_ALLOC, I.HWPT_ALLOC, **args)
    assert result == -errno_
    assert n.ctx.objects == before and n.ioas(ioas).domains == []
    assert n.hwpt_alloc(ioas) == ioas + 1   # the id was not leaked


def test_hwpt_alloc_on_other_objects() -> None:
    n = Native()
    auto = n.env.device.hwpt if n.env.device else None
    assert isinstance(auto, HwptPaging)
    auto_id = n.ctx.id_of(auto)
    assert n.hwpt_alloc(n.dev_id) == -errno.EINVAL                  # a device is no page table
    # On a paging HWPT: a nested one. Without data: EOPNOTSUPP; an automatic parent: EINVAL.
    assert n.hwpt_alloc(auto_id) == -errno.EOPNOTSUPP
    assert n.hwpt_alloc(auto_id, data_type=I.IOMMU_HWPT_DATA_VTD_S1, data_len=8) == -errno.EINVAL
    manual = n.hwpt_alloc(n.ioas_alloc())
    assert n.hwpt_alloc(manual, data_type=I.IOMMU_HWPT_DATA_VTD_S1, data_len=8) == -errno.EINVAL


def test_hwpt_alloc_pins_like_a_domain_and_fails_without_trace() -> None:
    n = Native()
    ioas = n.ioas_alloc()
    assert n.map(ioas, 0x10000, 2 * PAGE, HOLE) == 0x10000   # lazy: unpinnable
    assert n.hwpt_alloc(ioas) == -errno.EFAULT
    assert n.ioas(ioas).domains == [] and n.ioas(ioas).reserved == []
    assert n.unmap(ioas, 0x10000, 2 * PAGE) == 0
    assert n.map(ioas, 0x10000, 0x800) == 0x10000            # not 4 KiB aligned
    assert n.hwpt_alloc(ioas) == -errno.EADDRINUSE
    assert n.unmap(ioas, 0x10000, 0x800) == 0
    assert n.map(ioas, 1 << 40, PAGE) == 1 << 40              # outside the 39-bit aperture
    assert n.hwpt_alloc(ioas) == -errno.EADDRINUSE


def test_manual_hwpt_is_never_an_automatic_domain() -> None:
    n = Native(device=False)
    ioas = n.compat_id
    manual = n.hwpt_alloc(ioas, dev_id=n.ctx.id_of(n.ctx.bind_device("0000:00:02.0", 2)))
    assert manual > 0
    assert n.env.open_device() == 0
    assert n.env.device is not None and n.env.device.hwpt is not n.ctx.objects[manual]
    assert n.env.device.hwpt.auto


# ----------------------------------------------------------------------------- dirty tracking

def dirty_env(file_pages: int = 16) -> tuple[Native, int, int]:
    """A dirty-capable IOMMU, an IOAS with a DIRTY_TRACKING HWPT, 8 pages of the memfd mapped
    at 0x100000 (file page 0 on)."""
    n = Native(dirty=True, file_size=file_pages * PAGE)
    ioas = n.ioas_alloc()
    hwpt = n.hwpt_alloc(ioas, DIRTY)
    assert hwpt > 0
    assert n.map_file(ioas, MEMFD, 0, 8 * PAGE, 0x100000) == 0x100000
    return n, ioas, hwpt


def test_dirty_bitmap_reports_device_writes() -> None:
    n, ioas, hwpt = dirty_env()
    assert n.set_dirty(hwpt) == 0
    n.dma(ioas, 0x100000 + 10, b"a")                    # page 0
    n.dma(ioas, 0x100000 + 3 * PAGE - 1, b"bc")        # pages 2 and 3
    assert n.files[MEMFD].data[3 * PAGE - 1:3 * PAGE + 1] == b"bc"
    assert bits(n.bitmap(hwpt, 0x100000, 8 * PAGE)[1]) == [0, 2, 3]
    assert bits(n.bitmap(hwpt, 0x100000, 8 * PAGE)[1]) == []         # read and cleared


def test_dirty_bitmap_no_clear_and_bits_only_set() -> None:
    n, ioas, hwpt = dirty_env()
    assert n.set_dirty(hwpt) == 0
    n.dma(ioas, 0x100000 + 5 * PAGE, b"x")
    no_clear = I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
    assert bits(n.bitmap(hwpt, 0x100000, 8 * PAGE, flags=no_clear)[1]) == [5]
    # The user's own bits are never cleared (the kernel only sets bits).
    assert bits(n.bitmap(hwpt, 0x100000, 8 * PAGE, fill=b"\x81")[1]) == [0, 5, 7]
    assert bits(n.bitmap(hwpt, 0x100000, 8 * PAGE)[1]) == []


@pytest.mark.parametrize("page_size, iova, length, expected", [
    (2 * PAGE, 0x100000, 8 * PAGE, [0, 2]),            # pages 1 and 5: bit = page // 2
    (PAGE // 2, 0x100000, 8 * PAGE, [2, 3, 10, 11]),   # a 4 KiB IOPTE sets each 2 KiB bit it covers
    (PAGE, 0x100000 + PAGE, 7 * PAGE, [0, 4]),         # bits count from the bitmap's iova
    # page_size need not be a power of two: the shift is its lowest bit's (4 KiB here), and
    # the alignment checks use page_size - 1 as a mask (0x104000 & 0x2fff == 0).
    (3 * PAGE, 0x100000, 4 * PAGE, [1]),
])
def test_dirty_bitmap_layout(page_size: int, iova: int, length: int, expected: list[int]) -> None:
    n, ioas, hwpt = dirty_env()
    assert n.set_dirty(hwpt) == 0
    n.dma(ioas, 0x100000 + PAGE, b"x")
    n.dma(ioas, 0x100000 + 5 * PAGE + 100, b"y")
    result, raw = n.bitmap(hwpt, iova, length, page_size)
    assert result == 0
    assert bits(raw) == expected


@pytest.mark.parametrize("iova, length, page_size, errno_", [
    (U64_MAX - PAGE + 1, 2 * PAGE, PAGE, errno.EOVERFLOW),
    (1, PAGE, PAGE, errno.EINVAL),                # not IOAS-aligned (4 KiB with the domain)
    (0x100000, 0x800, PAGE // 2, errno.EINVAL),   # end not IOAS-aligned
    (0x100000, PAGE, 0, errno.EINVAL),
    (0x100000, PAGE, 2 * PAGE, errno.EINVAL),     # end not page_size-aligned
    (0x101000, 2 * PAGE, 2 * PAGE, errno.EINVAL),  # iova not page_size-aligned
])
def test_dirty_bitmap_range_checks(iova: int, length: int, page_size: int, errno_: int) -> None:
    n, _, hwpt = dirty_env()
    assert n.set_dirty(hwpt) == 0
    assert n.bitmap(hwpt, iova, length, page_size)[0] == -errno_


def test_dirty_walk_stops_at_the_first_hole() -> None:
    n, ioas, hwpt = dirty_env()
    assert n.map_file(ioas, MEMFD, 8 * PAGE, 2 * PAGE, 0x100000 + 10 * PAGE) == 0x100000 + 10 * PAGE
    assert n.set_dirty(hwpt) == 0
    n.dma(ioas, 0x100000, b"a")
    n.dma(ioas, 0x100000 + 10 * PAGE, b"b")
    # The walk covers the first area, then meets the hole at +8 pages: the second is not read.
    result, raw = n.bitmap(hwpt, 0x100000, 12 * PAGE, nbytes=2)
    assert result == 0 and bits(raw) == [0]
    # Starting in the hole: nothing at all, still 0.
    result, raw = n.bitmap(hwpt, 0x100000 + 8 * PAGE, 4 * PAGE)
    assert result == 0 and bits(raw) == []
    assert bits(n.bitmap(hwpt, 0x100000 + 10 * PAGE, 2 * PAGE)[1]) == [0]


def test_enabling_clears_earlier_writes_and_disabled_reads_nothing() -> None:
    n, ioas, hwpt = dirty_env()
    n.dma(ioas, 0x100000, b"before tracking")       # not tracked at all
    assert n.set_dirty(hwpt) == 0
    n.dma(ioas, 0x100000 + PAGE, b"tracked")
    assert n.set_dirty(hwpt) == 0                   # enabling again: a clean snapshot
    n.dma(ioas, 0x100000 + 2 * PAGE, b"after")
    assert bits(n.bitmap(hwpt, 0x100000, 8 * PAGE)[1]) == [2]
    assert n.set_dirty(hwpt, 0) == 0
    assert not n.ioas(ioas).table.dirty_tracking
    n.dma(ioas, 0x100000, b"off")
    result, raw = n.bitmap(hwpt, 0x100000, 8 * PAGE, fill=b"\x10")
    assert result == 0 and raw[:1] == b"\x10"      # the bitmap is left alone


HUGE_VA = 0x80000000   # a fake hugetlb mapping: 2 MiB pages, physically contiguous each
MIB = 1 << 20


def huge_env(iova: int, *, large_pages: bool = True) -> tuple[Native, int, int]:
    """dirty_env's HWPT over 4 MiB of hugetlb memory (two 2 MiB pages) mapped at ``iova``."""
    n = Native(dirty=True)
    n.mem.map(HUGE_VA, 4 * MIB, page_size=2 * MIB)
    ioas = n.ioas_alloc()
    if not large_pages:
        assert option(n, I.IOMMU_OPTION_HUGE_PAGES, I.IOMMU_OPTION_OP_SET, ioas, 0)[0] == 0
    hwpt = n.hwpt_alloc(ioas, DIRTY)
    assert hwpt > 0
    assert n.map(ioas, iova, 4 * MIB, HUGE_VA) == iova
    assert n.set_dirty(hwpt) == 0
    return n, ioas, hwpt


def test_a_large_iopte_is_dirty_as_a_whole() -> None:
    """2 MiB-aligned IOVAs over 2 MiB pages: VT-d maps them with 2 MiB IOPTEs (iommu_pgsize),
    so one written byte dirties 512 bits of 4 KiB, and reading clears the whole IOPTE."""
    n, ioas, hwpt = huge_env(0x40000000)
    n.ioas(ioas).table.mark_dirty(0x40000000 + 2 * MIB + 0x1234, 1)   # in the second page
    result, raw = n.bitmap(hwpt, 0x40000000, 4 * MIB, nbytes=128, fill=bytes(128))
    assert result == 0 and bits(raw) == list(range(512, 1024))
    assert bits(n.bitmap(hwpt, 0x40000000, 4 * MIB, nbytes=128, fill=bytes(128))[1]) == []
    # A bitmap over part of the IOPTE gets the part it covers; the read still clears it all.
    n.ioas(ioas).table.mark_dirty(0x40000000 + 5, 1)
    assert bits(n.bitmap(hwpt, 0x40000000 + MIB, MIB, nbytes=32, fill=bytes(128))[1]) == list(range(256))
    assert bits(n.bitmap(hwpt, 0x40000000, 4 * MIB, nbytes=128, fill=bytes(128))[1]) == []


@pytest.mark.parametrize("iova, large_pages", [
    (0x40000000 + PAGE, True),   # IOVA and physical address disagree mod 2 MiB: 4 KiB IOPTEs
    (0x40000000, False),         # OPTION HUGE_PAGES=0: batch_iommu_map_small, 4 KiB IOPTEs
])
def test_small_ioptes_over_hugetlb_memory(iova: int, large_pages: bool) -> None:
    n, ioas, hwpt = huge_env(iova, large_pages=large_pages)
    n.ioas(ioas).table.mark_dirty(iova + 2 * MIB + 3 * PAGE, 1)
    assert bits(n.bitmap(hwpt, iova, 4 * MIB, nbytes=128, fill=bytes(128))[1]) == [512 + 3]


def test_ioptes_keep_the_size_they_were_mapped_with() -> None:
    """Enabling large pages again (iopt_enable_large_pages) remaps nothing: the HWPT that
    loaded the area with large pages off keeps 4 KiB IOPTEs, a HWPT allocated afterwards gets
    2 MiB ones over the same area."""
    n, ioas, small = huge_env(0x40000000, large_pages=False)
    assert option(n, I.IOMMU_OPTION_HUGE_PAGES, I.IOMMU_OPTION_OP_SET, ioas, 1)[0] == 0
    large = n.hwpt_alloc(ioas, DIRTY)
    assert large > 0 and n.set_dirty(large) == 0
    n.ioas(ioas).table.mark_dirty(0x40000000 + 3 * PAGE, 1)
    assert bits(n.bitmap(small, 0x40000000, 4 * MIB, nbytes=128, fill=bytes(128),
                         flags=I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)[1]) == [3]
    assert bits(n.bitmap(large, 0x40000000, 4 * MIB, nbytes=128, fill=bytes(128))[1]) == list(range(512))


def test_large_ioptes_need_contiguous_memory() -> None:
    """Ordinary 4 KiB memory gives 4 KiB IOPTEs whatever the IOVA alignment."""
    n = Native(dirty=True)
    n.mem.map(HUGE_VA, 4 * MIB)
    ioas = n.ioas_alloc()
    hwpt = n.hwpt_alloc(ioas, DIRTY)
    assert n.map(ioas, 0x40000000, 4 * MIB, HUGE_VA) == 0x40000000
    assert n.set_dirty(hwpt) == 0
    n.ioas(ioas).table.mark_dirty(0x40000000 + 7 * PAGE, 1)
    assert bits(n.bitmap(hwpt, 0x40000000, 4 * MIB, nbytes=128, fill=bytes(128))[1]) == [7]


def test_dirty_ioctl_object_and_flag_checks() -> None:
    n, ioas, hwpt = dirty_env()
    plain = n.hwpt_alloc(ioas)
    auto = n.ctx.id_of(n.env.device.hwpt) if n.env.device and n.env.device.hwpt else 0
    assert n.set_dirty(hwpt, flags=2) == -errno.EOPNOTSUPP
    assert n.set_dirty(hwpt, reserved=7) == 0        # __reserved is not checked
    assert n.set_dirty(99) == -errno.ENOENT
    assert n.set_dirty(ioas) == -errno.ENOENT        # an IOAS is no HWPT
    assert n.set_dirty(plain) == -errno.EOPNOTSUPP   # allocated without DIRTY_TRACKING
    assert n.set_dirty(auto) == -errno.EOPNOTSUPP
    assert n.bitmap(hwpt, 0x100000, PAGE, flags=2)[0] == -errno.EOPNOTSUPP
    assert n.bitmap(hwpt, 0x100000, PAGE, reserved=1)[0] == -errno.EOPNOTSUPP
    assert n.bitmap(99, 0x100000, PAGE)[0] == -errno.ENOENT
    assert n.bitmap(plain, 0x100000, PAGE)[0] == -errno.EOPNOTSUPP
    assert n.bitmap(plain, 1, PAGE)[0] == -errno.EINVAL   # the range is checked first


def test_destroying_the_tracking_hwpt_stops_the_tables_tracking() -> None:
    n, ioas, hwpt = dirty_env()
    assert n.set_dirty(hwpt) == 0
    assert n.ioas(ioas).table.dirty_tracking
    assert n.destroy(hwpt) == 0
    assert not n.ioas(ioas).table.dirty_tracking


def test_bitmap_the_kernel_cannot_pin_is_ignored() -> None:
    n, ioas, hwpt = dirty_env()
    assert n.set_dirty(hwpt) == 0
    n.dma(ioas, 0x100000, b"a")
    result, _ = n.call(I.IOMMU_HWPT_GET_DIRTY_BITMAP, I.HWPT_GET_DIRTY_BITMAP, hwpt_id=hwpt,
                       iova=0x100000, length=8 * PAGE, page_size=PAGE, data=HOLE)
    assert result == 0
    assert bits(n.bitmap(hwpt, 0x100000, 8 * PAGE)[1]) == [0]   # nothing was cleared


# ----------------------------------------------------------------------------- state sequences

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["map_file", "copy", "unmap", "domain", "write"]),
                          st.integers(0, 3), st.integers(0, 1)), max_size=25))
def test_file_references_pins_and_dirty_bits_follow_the_areas(ops: list[tuple[str, int, int]]) -> None:
    """Random MAP_FILE / COPY / UNMAP / HWPT_ALLOC / device-write sequences over two IOASes
    whose areas are 2-page slots side by side: a file reference is held exactly while an area
    uses its pages, the user's charge is the pages pinned (each shared page once), and the
    next bitmap of the tracked IOAS shows the written slots of the run of mapped slots from
    the first (the walk stops at the first hole)."""
    n = Native(dirty=True)
    ioases = [n.ioas_alloc(), n.ioas_alloc()]
    hwpt = n.hwpt_alloc(ioases[0], DIRTY)
    assert n.set_dirty(hwpt) == 0
    slot_size = 2 * PAGE
    written: set[int] = set()
    for op, slot, which in ops:
        ioas = ioases[which]
        iova = 0x100000 + slot * slot_size
        if op == "map_file":
            n.map_file(ioas, MEMFD, slot * PAGE, slot_size, iova)
        elif op == "copy":
            n.copy(ioases[1 - which], ioas, iova, slot_size, iova)
        elif op == "unmap":
            if n.unmap(ioas, iova, slot_size) == 0 and which == 0:
                written.discard(slot)  # the area's dirty state goes with it
        elif op == "domain":
            n.hwpt_alloc(ioas)
        elif op == "write":
            try:
                n.dma(ioas, iova + PAGE, b"w")
            except IommuFault:
                continue
            if which == 0:
                written.add(slot)
        areas = [a for i in ioases for a in n.ioas(i).areas]
        open_refs = [f for f in n.taken if not f.closed]
        assert len(open_refs) == len({id(a.pages) for a in areas})
        pinned = {id(a.pages): a.pages.npinned for a in areas}
        assert n.env.charged() == sum(pinned.values())
    result, raw = n.bitmap(hwpt, 0x100000, 4 * slot_size, page_size=slot_size, nbytes=1)
    assert result == 0
    run = 0
    while n.ioas(ioases[0]).areas.first_overlapping(0x100000 + run * slot_size,
                                                     0x100000 + run * slot_size) and run < 4:
        run += 1
    assert set(bits(raw)) == {s for s in written if s < run}


# ----------------------------------------------------------------------------- the real fget

def test_process_file_is_the_memfd_and_its_window_reaches_the_pages() -> None:
    """client.ProcessFile on a memfd of this very process: what MAP_FILE checks, and a device
    write through the window (process_vm_writev to the daemon itself) lands in the file."""
    import os

    from ioasidfs.client import ProcessFds, ProcessFile, process_vm_transfer

    fd = os.memfd_create("ioasidfs-test", os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, 4 * PAGE)
        file = ProcessFile.take(ProcessFds(os.getpid()), fd)
        assert file.writable and file.pinnable and not file.write_sealed
        assert file.size() == 4 * PAGE
        owner, base = file.window(PAGE, 2 * PAGE)
        assert owner[0] == os.getpid() and base
        assert process_vm_transfer(os.getpid(), b"dma!", [(base + 8, 4)], write=True) == 4
        assert os.pread(fd, 4, PAGE + 8) == b"dma!"
        file.unmap_window(base, 2 * PAGE)
        file.close()
        import fcntl
        fcntl.fcntl(fd, 1033, 0x0008)  # F_ADD_SEALS(F_SEAL_WRITE)
        sealed = ProcessFile.take(ProcessFds(os.getpid()), fd)
        assert sealed.write_sealed
        sealed.close()
    finally:
        os.close(fd)
    r, w = os.pipe()
    try:
        pipe = ProcessFile.take(ProcessFds(os.getpid()), r)
        assert not pipe.pinnable and not pipe.writable
        assert pipe.window(0, PAGE)[1] == 0
        pipe.close()
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(KernelError) as e:
        ProcessFile.take(ProcessFds(os.getpid()), -1)
    assert e.value.errno == errno.EBADF


def test_vtd_registers_follow_the_address_width() -> None:
    """QEMU's vtd_cap_init: MGAW = aw-1, SAGAW 39-bit (3-level) and, from 48 bits, 4-level."""
    for width, sagaw in ((39, 0x2), (48, 0x6)):
        vtd = VtdIommu.qemu(width)
        assert (vtd.cap_reg >> 16) & 0x3F == width - 1 and (vtd.cap_reg >> 8) & 0x1F == sagaw
        assert not vtd.dirty_tracking and not vtd.nesting and not vtd.scalable_mode
    assert VtdIommu.with_dirty_tracking(39).dirty_tracking


# ----------------------------------------------------------------------------- vIOMMU objects

def viommu_call(n: Native, cmd: int, layout: Any, **fields: Any) -> int:
    n.mem.write(ARG, layout.pack(size=layout.size, **fields))
    return int(n.env.call(n.env.iommufd, cmd, ARG))


def test_viommu_objects_cannot_exist_and_say_so_in_the_kernels_order() -> None:
    """No emulated IOMMU has vIOMMU ops (viommu.c, eventq.c): each ioctl answers its own
    checks, then the first lookup or driver question that needs a vIOMMU."""
    n = Native()
    alloc = dict(dev_id=n.dev_id, hwpt_id=0, data_len=0, data_uptr=0)
    assert viommu_call(n, I.IOMMU_VIOMMU_ALLOC, I.VIOMMU_ALLOC, flags=1, type=1, **alloc) == -errno.EOPNOTSUPP
    assert viommu_call(n, I.IOMMU_VIOMMU_ALLOC, I.VIOMMU_ALLOC, flags=0, type=0, **alloc) == -errno.EOPNOTSUPP
    alloc["dev_id"] = 99
    assert viommu_call(n, I.IOMMU_VIOMMU_ALLOC, I.VIOMMU_ALLOC, flags=0, type=1, **alloc) == -errno.ENOENT
    alloc["dev_id"] = n.dev_id
    assert viommu_call(n, I.IOMMU_VIOMMU_ALLOC, I.VIOMMU_ALLOC, flags=0, type=1, **alloc) == -errno.EOPNOTSUPP
    assert viommu_call(n, I.IOMMU_VDEVICE_ALLOC, I.VDEVICE_ALLOC, viommu_id=0, dev_id=n.dev_id,
                       virt_id=0x99) == -errno.ENOENT
    q = dict(viommu_id=0, out_veventq_id=0, out_veventq_fd=0)
    assert viommu_call(n, I.IOMMU_VEVENTQ_ALLOC, I.VEVENTQ_ALLOC, flags=0, reserved=0, type=0,
                       veventq_depth=2, **q) == -errno.EOPNOTSUPP
    assert viommu_call(n, I.IOMMU_VEVENTQ_ALLOC, I.VEVENTQ_ALLOC, flags=0, reserved=1, type=1,
                       veventq_depth=2, **q) == -errno.EOPNOTSUPP
    assert viommu_call(n, I.IOMMU_VEVENTQ_ALLOC, I.VEVENTQ_ALLOC, flags=0, reserved=0, type=1,
                       veventq_depth=0, **q) == -errno.EINVAL
    assert viommu_call(n, I.IOMMU_VEVENTQ_ALLOC, I.VEVENTQ_ALLOC, flags=0, reserved=0, type=1,
                       veventq_depth=2, **q) == -errno.ENOENT
    hq = dict(viommu_id=0, index=0, out_hw_queue_id=0)
    assert viommu_call(n, I.IOMMU_HW_QUEUE_ALLOC, I.HW_QUEUE_ALLOC, flags=0, type=0,
                       nesting_parent_iova=0, length=4096, **hq) == -errno.EOPNOTSUPP
    assert viommu_call(n, I.IOMMU_HW_QUEUE_ALLOC, I.HW_QUEUE_ALLOC, flags=0, type=1,
                       nesting_parent_iova=0, length=0, **hq) == -errno.EINVAL
    assert viommu_call(n, I.IOMMU_HW_QUEUE_ALLOC, I.HW_QUEUE_ALLOC, flags=0, type=1,
                       nesting_parent_iova=(1 << 64) - 4096, length=8192, **hq) == -errno.EOVERFLOW
    assert viommu_call(n, I.IOMMU_HW_QUEUE_ALLOC, I.HW_QUEUE_ALLOC, flags=0, type=1,
                       nesting_parent_iova=0, length=4096, **hq) == -errno.ENOENT


# ----------------------------------------------------------------------------- IOAS_CHANGE_PROCESS

def change_process(n: Native, proc: Process | None = None, size: int = 8, reserved: int = 0) -> int:
    """IOMMU_IOAS_CHANGE_PROCESS called by ``proc`` (default: the process that mapped);
    asserts that nothing is written back."""
    proc = proc or n.env.proc
    raw = I.IOAS_CHANGE_PROCESS.pack(size=size, reserved=reserved)
    proc.memory.write(ARG, raw)
    result = n.env.call(n.env.iommufd, I.IOMMU_IOAS_CHANGE_PROCESS, ARG, proc)
    assert proc.memory.read(ARG, 8) == raw
    return int(result)


def file_pages(n: Native, ioas: int, iova: int) -> Pages:
    area = n.ioas(ioas).areas.first_overlapping(iova, iova)
    assert area is not None
    return area.pages


def mm_mode(n: Native) -> None:
    """RLIMIT_MODE 1 on the fresh context, then the group attached and its device opened."""
    assert option(n, I.IOMMU_OPTION_RLIMIT_MODE, I.IOMMU_OPTION_OP_SET, val64=1)[0] == 0
    assert n.env.attach() == 0 and n.env.open_device() == 0


def test_change_process_argument_checks() -> None:
    n = Native()
    assert change_process(n, reserved=1) == -errno.EOPNOTSUPP
    assert change_process(n, size=4) == -errno.EINVAL   # below __reserved's end
    assert change_process(n, size=16) == 0              # zero tail: accepted
    assert change_process(n) == 0                       # no area at all: nothing to move


def test_change_process_needs_every_area_of_every_ioas_file_backed() -> None:
    n = Native()
    other = Process(n.env, 200)
    assert n.map_file(n.compat_id, MEMFD, 0, 2 * PAGE, 0x10000) == 0x10000
    lazy = n.ioas_alloc()  # no domain: its user-memory area pins nothing, and still counts
    assert n.map(lazy, 0x10000, PAGE) == 0x10000
    before = file_pages(n, n.compat_id, 0x10000).source
    assert change_process(n) == -errno.EINVAL           # the mapping process itself too
    assert change_process(n, other) == -errno.EINVAL
    assert file_pages(n, n.compat_id, 0x10000).source is before
    assert n.env.charged() == 2
    assert n.unmap(lazy, 0x10000, PAGE) == 0
    assert change_process(n, other) == 0


def test_change_process_in_the_same_process_changes_nothing() -> None:
    n = Native()
    assert n.map_file(n.compat_id, MEMFD, 0, 4 * PAGE, 0x10000) == 0x10000
    assert change_process(n) == 0
    assert n.env.charged() == 4
    assert file_pages(n, n.compat_id, 0x10000).source is n.env.proc.caller


def test_change_process_moves_the_user_charge_and_the_owner() -> None:
    n = Native()
    other = Process(n.env, 200, uid=2000, memlock=8 * PAGE)
    assert n.map_file(n.compat_id, MEMFD, 0, 4 * PAGE, 0x10000) == 0x10000
    assert change_process(n, other) == 0
    assert (n.env.charged(), n.env.charged(other)) == (0, 4)
    pages = file_pages(n, n.compat_id, 0x10000)
    assert pages.source is other.caller and pages.mm == other.caller.process_key()
    assert pages.uid == 2000
    # DMA is unaffected: the area still reaches the file's pages.
    n.dma(n.compat_id, 0x10000, b"after the move")
    assert n.files[MEMFD].data[:14] == b"after the move"
    # The pins are now the new process's: the unmap uncharges its user.
    assert n.unmap(n.compat_id, 0x10000, 4 * PAGE) == 0
    assert (n.env.charged(), n.env.charged(other)) == (0, 0)


def test_change_process_enomem_over_the_new_limit_changes_nothing() -> None:
    n = Native()
    other = Process(n.env, 200, uid=2000, memlock=3 * PAGE)
    assert n.map_file(n.compat_id, MEMFD, 0, 4 * PAGE, 0x10000) == 0x10000
    assert change_process(n, other) == -errno.ENOMEM
    assert (n.env.charged(), n.env.charged(other)) == (4, 0)
    pages = file_pages(n, n.compat_id, 0x10000)
    assert pages.source is n.env.proc.caller and pages.uid == n.env.proc.uid
    assert pages.last_npinned == pages.npinned == 4
    other.memlock = 4 * PAGE
    assert change_process(n, other) == 0
    assert (n.env.charged(), n.env.charged(other)) == (0, 4)


def test_change_process_same_user_needs_room_for_both_charges() -> None:
    """charge_current comes before the old charge is given back: another process of the same
    user moves 4 pages only if the user's counter can hold 8 for a moment."""
    n = Native()
    sibling = Process(n.env, 200, memlock=7 * PAGE)  # uid 1000, as the mapper
    assert n.map_file(n.compat_id, MEMFD, 0, 4 * PAGE, 0x10000) == 0x10000
    assert change_process(n, sibling) == -errno.ENOMEM
    sibling.memlock = 8 * PAGE
    assert change_process(n, sibling) == 0
    assert n.env.charged() == 4
    assert file_pages(n, n.compat_id, 0x10000).mm == sibling.caller.process_key()


def test_change_process_counts_shared_pages_once_and_moves_lazy_ones() -> None:
    n = Native()
    other = Process(n.env, 200, uid=2000, memlock=4 * PAGE)
    assert n.map_file(n.compat_id, MEMFD, 0, 4 * PAGE, 0x10000) == 0x10000
    copy = n.ioas_alloc()
    assert n.copy(copy, n.compat_id, 0x10000, 4 * PAGE, 0x80000) == 0x80000
    lazy = n.ioas_alloc()  # no domain: nothing pinned, nothing to charge, owner moves all the same
    assert n.map_file(lazy, MEMFD, 8 * PAGE, 2 * PAGE, 0x10000) == 0x10000
    assert change_process(n, other) == 0
    assert (n.env.charged(), n.env.charged(other)) == (0, 4)
    assert file_pages(n, lazy, 0x10000).source is other.caller
    # A later pin of the lazy area is the new owner's, against its limit (4 pages used).
    assert n.hwpt_alloc(lazy) == -errno.ENOMEM
    other.memlock = 6 * PAGE
    assert n.hwpt_alloc(lazy) > 0
    assert (n.env.charged(), n.env.charged(other)) == (0, 6)


def test_change_process_moves_the_mm_charge() -> None:
    n = Native(device=False, attach=False)
    mm_mode(n)
    other = Process(n.env, 200, memlock=4 * PAGE)
    other.vmlck = 1  # its own mlock()ed page counts against its limit
    assert n.map_file(n.compat_id, MEMFD, 0, 4 * PAGE, 0x10000) == 0x10000
    assert (n.env.charged(), n.env.charged_mm()) == (0, 4)
    assert change_process(n, other) == -errno.ENOMEM
    assert (n.env.charged_mm(), n.env.charged_mm(other)) == (4, 0)
    other.vmlck = 0
    assert change_process(n, other) == 0
    assert (n.env.charged_mm(), n.env.charged_mm(other), n.env.charged(other)) == (0, 4, 0)
    assert n.unmap(n.compat_id, 0x10000, 4 * PAGE) == 0
    assert n.env.charged_mm(other) == 0


def test_change_process_mm_mode_after_the_mapper_exited() -> None:
    """The old mm has no users: its uncharge fails (EINVAL), the move is done anyway, and the
    pages' last_npinned stays 0, so the unmap does not uncharge the new process."""
    n = Native(device=False, attach=False)
    mm_mode(n)
    other = Process(n.env, 200)
    assert n.map_file(n.compat_id, MEMFD, 0, 4 * PAGE, 0x10000) == 0x10000
    old_key = n.env.proc.caller.process_key()

    def gone() -> int:
        raise KernelError(errno.ESRCH, "exited")

    n.env.proc.caller.start_time = gone
    assert change_process(n, other) == -errno.EINVAL
    pages = file_pages(n, n.compat_id, 0x10000)
    assert pages.source is other.caller and pages.last_npinned == 0
    assert n.env.charged_mm(other) == 4
    assert n.env.engine.locked_memory.pages_of(old_key) == 4  # never given back
    assert n.unmap(n.compat_id, 0x10000, 4 * PAGE) == 0
    assert n.env.charged_mm(other) == 4


def test_change_process_unaccounted_pages_move_without_a_charge() -> None:
    n = Native()
    n.env.proc.cap = True  # CAP_IPC_LOCK at MAP time: IOPT_PAGES_ACCOUNT_NONE
    other = Process(n.env, 200, uid=2000, memlock=0)
    assert n.map_file(n.compat_id, MEMFD, 0, 4 * PAGE, 0x10000) == 0x10000
    assert change_process(n, other) == 0
    assert (n.env.charged(), n.env.charged(other)) == (0, 0)
    assert file_pages(n, n.compat_id, 0x10000).source is other.caller


def test_change_process_rolls_back_the_user_charge_when_the_mm_charge_fails() -> None:
    """charge_current charges user mode before mm mode and undoes it when mm fails (one
    context never holds both, so this is the engine function on two IOASes)."""
    env = Env()
    accounting = env.engine.pin_accounting
    old, new = env.proc, Process(env, 200, uid=2000, memlock=6 * PAGE)
    user_ioas, mm_ioas = Ioas(accounting), Ioas(accounting)
    for ioas in (user_ioas, mm_ioas):
        ioas.add_domain(Domain(PAGE, 0, U64_MAX, True))
    user_ioas.map_file(old.caller, FakeFile(4 * PAGE), 0x10000, 0, 4 * PAGE, 3, account_mm=False)
    mm_ioas.map_file(old.caller, FakeFile(4 * PAGE), 0x10000, 0, 4 * PAGE, 3, account_mm=True)
    new.vmlck = 3
    with pytest.raises(KernelError) as e:
        ioas_change_process([user_ioas, mm_ioas], new.caller, accounting)
    assert e.value.errno == errno.ENOMEM
    assert (env.charged(old), env.charged(new), env.charged_mm(old), env.charged_mm(new)) == (4, 0, 4, 0)
    new.vmlck = 2
    ioas_change_process([user_ioas, mm_ioas], new.caller, accounting)
    assert (env.charged(old), env.charged(new), env.charged_mm(old), env.charged_mm(new)) == (0, 4, 0, 4)
