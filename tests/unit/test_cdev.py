"""The device cdev flow (drivers/vfio/device_cdev.c, vfio_main.c, drivers/iommu/iommufd/device.c),
one rule per test, through OpenFile.ioctl as the daemon calls it.

The caller is this process (process_vm_* to oneself), so the IOAS mappings are of real memory
and the edu's DMA, started by BAR writes on the cdev, lands in a buffer the test can read.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import struct

import pytest

from ioasidfs.config import load_config
from ioasidfs.devices.dma import dma_read, dma_write
from ioasidfs.engine import Engine, FileKind, OpenFile
from ioasidfs.engine.device import CdevFile
from ioasidfs.errors import IommuFault, KernelError
from ioasidfs.uapi import iommufd as I
from ioasidfs.uapi import vfio as V
from support import Buffer, this_process_caller

PG = 4096
EDU = "0000:00:01.0"
BAR0 = V.VFIO_PCI_BAR0_REGION_INDEX << 40
CFG = V.VFIO_PCI_CONFIG_REGION_INDEX << 40
IOVA = 0x100000
RW = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE | I.IOMMU_IOAS_MAP_FIXED_IOVA


class World:
    """An engine, this process as its caller, an fd table and a 256-byte argument area."""

    def __init__(self) -> None:
        self.open_files: set[int] = set()  # ids of files the "program" still holds
        self.engine = Engine(load_config(None), still_open=lambda f: id(f) in self.open_files)
        self.fds: dict[int, OpenFile] = {}
        self.caller = this_process_caller(self._resolve)
        self.arg = ctypes.create_string_buffer(256)
        self.argp = ctypes.addressof(self.arg)

    def _resolve(self, fd: int) -> object:
        if fd not in self.fds:
            raise KernelError(errno.EBADF, "closed")
        return self.fds[fd]

    def open(self, kind: FileKind, key: object = None) -> OpenFile:
        file = self.engine.open(kind, key, self.caller)
        self.fds[max(self.fds, default=2) + 1] = file
        self.open_files.add(id(file))
        return file

    def fd_of(self, file: OpenFile) -> int:
        return next(fd for fd, f in self.fds.items() if f is file)

    def close(self, file: OpenFile, *, release: bool = True) -> None:
        """close(); ``release=False`` leaves FUSE's RELEASE on its way (not delivered yet)."""
        del self.fds[self.fd_of(file)]
        self.open_files.discard(id(file))
        if release:
            file.release()

    def call(self, file: OpenFile, cmd: int, data: bytes | None = None, arg: int = 0) -> int:
        if data is not None:
            ctypes.memmove(self.argp, data, len(data))
            arg = self.argp
        return file.ioctl(self.caller, cmd, arg)

    def err(self, file: OpenFile, cmd: int, data: bytes | None = None, arg: int = 0) -> int:
        with pytest.raises(KernelError) as excinfo:
            self.call(file, cmd, data, arg)
        return excinfo.value.errno

    def out(self, offset: int) -> int:
        return int.from_bytes(self.arg.raw[offset:offset + 4], "little")

    # ---- the steps of the flow
    def bind(self, cdev: OpenFile, iommufd: OpenFile) -> int:
        assert self.call(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(self.fd_of(iommufd))) == 0
        return self.out(12)

    def ioas(self, iommufd: OpenFile) -> int:
        assert self.call(iommufd, I.IOMMU_IOAS_ALLOC, struct.pack("<III", 12, 0, 0)) == 0
        return self.out(8)

    def map(self, iommufd: OpenFile, ioas: int, iova: int, vaddr: int, length: int) -> None:
        data = I.IOAS_MAP.pack(size=I.IOAS_MAP.size, flags=RW, ioas_id=ioas, reserved=0,
                               user_va=vaddr, length=length, iova=iova)
        assert self.call(iommufd, I.IOMMU_IOAS_MAP, data) == 0

    def attach(self, cdev: OpenFile, pt_id: int) -> int:
        assert self.call(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, struct.pack("<III", 12, 0, pt_id)) == 0
        return self.out(8)

    def destroy(self, iommufd: OpenFile, object_id: int) -> int:
        try:
            return self.call(iommufd, I.IOMMU_DESTROY, struct.pack("<II", 8, object_id))
        except KernelError as e:
            return -e.errno


def bind_arg(iommufd: int, argsz: int = 16, flags: int = 0, tail: bytes = b"") -> bytes:
    return struct.pack("<IIiI", argsz, flags, iommufd, 0xFFFFFFFF) + tail


def bound(w: World) -> tuple[OpenFile, OpenFile]:
    iommufd = w.open(FileKind.IOMMUFD)
    cdev = w.open(FileKind.CDEV, EDU)
    assert w.bind(cdev, iommufd) == 1
    return cdev, iommufd


# ---------------------------------------------------------------------------- before BIND
def test_an_unbound_cdev_refuses_device_ioctls_reads_and_writes_with_einval() -> None:
    w = World()
    cdev = w.open(FileKind.CDEV, EDU)
    for cmd in (V.VFIO_DEVICE_GET_INFO, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                V.VFIO_DEVICE_DETACH_IOMMUFD_PT, V.VFIO_DEVICE_FEATURE, 0x5401):
        assert w.err(cdev, cmd, arg=0) == errno.EINVAL
    for access in (lambda: cdev.read(w.caller, BAR0, 4), lambda: cdev.write(w.caller, BAR0, b"1234")):
        with pytest.raises(KernelError) as excinfo:
            access()
        assert excinfo.value.errno == errno.EINVAL


def test_bind_argument_checks_in_upstream_order() -> None:
    w = World()
    iommufd = w.open(FileKind.IOMMUFD)
    cdev = w.open(FileKind.CDEV, EDU)
    fd = w.fd_of(iommufd)
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, arg=0) == errno.EFAULT  # argsz read first
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(fd, argsz=15)) == errno.EINVAL
    # copy_struct_from_user against the 24-byte struct: a non-zero byte past it is E2BIG.
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD,
                 bind_arg(fd, argsz=32, tail=bytes(8) + b"\x01" + bytes(7))) == errno.E2BIG
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(-1)) == errno.EINVAL
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(fd, flags=2)) == errno.EINVAL
    # The VF token: its UUID is read (EFAULT), then refused (the edu is neither PF nor VF).
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD,
                 bind_arg(fd, argsz=24, flags=1, tail=struct.pack("<Q", 8))) == errno.EFAULT
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD,
                 bind_arg(fd, argsz=24, flags=1, tail=struct.pack("<Q", w.argp))) == errno.EINVAL
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(99)) == errno.EBADF
    group = w.engine.groups[1]
    assert group.cdev_files == []  # every failure unblocked the group again
    # A zero tail past the struct is fine; out_devid is the DEVICE object's id.
    assert w.call(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(fd, argsz=32, tail=bytes(16))) == 0
    assert w.out(12) == 1
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(fd)) == errno.EINVAL  # bound twice


def test_bind_to_something_that_is_not_an_iommufd_is_ebadfd() -> None:
    w = World()
    container = w.open(FileKind.CONTAINER)
    cdev = w.open(FileKind.CDEV, EDU)
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(w.fd_of(container))) == errno.EBADFD


def test_a_group_path_device_fd_refuses_bind_and_does_not_know_attach() -> None:
    w = World()
    iommufd = w.open(FileKind.IOMMUFD)
    group = w.open(FileKind.GROUP, 1)
    assert w.call(group, V.VFIO_GROUP_SET_CONTAINER, struct.pack("<i", w.fd_of(iommufd))) == 0
    device = group.ioctl(w.caller, V.VFIO_GROUP_GET_DEVICE_FD, _string(w, EDU))  # type: ignore[func-returns-value]
    assert isinstance(device, OpenFile)
    assert w.err(device, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(w.fd_of(iommufd))) == errno.EINVAL
    assert w.err(device, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, struct.pack("<III", 12, 0, 1)) == errno.ENOTTY
    assert w.err(device, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, struct.pack("<II", 8, 0)) == errno.ENOTTY


def _string(w: World, text: str) -> int:
    ctypes.memmove(w.argp, text.encode() + b"\0", len(text) + 1)
    return w.argp


# ---------------------------------------------------------------------------- bound
def test_a_bound_cdev_answers_the_vfio_pci_ioctls_and_reaches_the_bars() -> None:
    w = World()
    cdev, _ = bound(w)
    assert w.call(cdev, V.VFIO_DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0)) == 0
    assert struct.unpack("<IIII", w.arg.raw[:16]) == (16, V.VFIO_DEVICE_FLAGS_PCI, 9, 5)
    data = V.REGION_INFO.pack(argsz=32, flags=0, index=0, cap_offset=0, size=0, offset=0)
    assert w.call(cdev, V.VFIO_DEVICE_GET_REGION_INFO, data) == 0
    assert V.REGION_INFO.unpack(w.arg.raw[:32])["size"] == 1 << 20
    assert cdev.read(w.caller, CFG, 4) == struct.pack("<HH", 0x1234, 0x11E8)
    cdev.write(w.caller, CFG + 4, struct.pack("<H", 0x6))  # memory decode, bus master
    assert cdev.read(w.caller, BAR0, 4) == struct.pack("<I", 0x010000ED)
    assert w.err(cdev, 0x5401, arg=0) == errno.ENOTTY  # bound: vfio-pci's answer
    # A zero-length hot-reset list is for cdev-opened devices (then: no reset, ENODEV); a
    # non-empty one is refused on the cdev path.
    assert w.err(cdev, V.VFIO_DEVICE_PCI_HOT_RESET, struct.pack("<III", 12, 0, 0)) == errno.ENODEV
    assert w.err(cdev, V.VFIO_DEVICE_PCI_HOT_RESET, struct.pack("<IIIi", 16, 0, 1, 3)) == errno.EINVAL


def test_attach_gives_the_auto_hwpt_a_second_attach_replaces_detach_blocks(buf: Buffer) -> None:
    w = World()
    cdev, iommufd = bound(w)
    ioas = w.ioas(iommufd)
    assert ioas == 2
    assert w.err(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, struct.pack("<III", 12, 0, 77)) == errno.ENOENT
    assert w.err(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, struct.pack("<III", 12, 0, 1)) == errno.EINVAL
    assert w.err(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, struct.pack("<III", 8, 0, ioas)) == errno.EINVAL
    assert w.err(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, struct.pack("<III", 12, 2, ioas)) == errno.EINVAL
    hwpt = w.attach(cdev, ioas)
    assert hwpt == 3  # the automatic HWPT, the next free id
    assert w.destroy(iommufd, ioas) == -errno.EBUSY  # its HWPT holds the IOAS
    assert w.destroy(iommufd, hwpt) == -errno.EBUSY  # the device holds its HWPT
    assert w.destroy(iommufd, 1) == -errno.EBUSY  # the driver holds the DEVICE
    assert w.attach(cdev, ioas) == hwpt  # the same IOAS again: the same HWPT
    other = w.ioas(iommufd)
    assert other == 4
    assert w.attach(cdev, other) == 5  # replaced: a new automatic HWPT...
    assert w.destroy(iommufd, hwpt) == -errno.ENOENT  # ...and the old one is gone
    assert w.attach(cdev, 5) == 5  # a HWPT id is used as is
    assert w.destroy(iommufd, ioas) == 0
    assert w.call(cdev, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, struct.pack("<II", 8, 0)) == 0
    assert w.destroy(iommufd, 5) == -errno.ENOENT  # detached: the auto HWPT went with it
    assert w.call(cdev, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, struct.pack("<II", 8, 0)) == 0  # again: 0
    assert w.err(cdev, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, struct.pack("<II", 4, 0)) == errno.EINVAL
    assert w.err(cdev, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, struct.pack("<II", 8, 2)) == errno.EINVAL
    assert w.destroy(iommufd, other) == 0


def test_attach_writes_back_pt_id_and_a_failed_write_back_detaches() -> None:
    w = World()
    cdev, iommufd = bound(w)
    ioas = w.ioas(iommufd)
    binding = cdev.binding  # type: ignore[attr-defined]
    w.attach(cdev, ioas)
    other = w.ioas(iommufd)
    # The struct on a read-only page: read fine, pt_id's write-back fails (EFAULT) -- and
    # vfio_df_ioctl_attach_pt then detaches, even from the HWPT of the first attach.
    page = mmap.mmap(-1, PG)
    page[:12] = struct.pack("<III", 12, 0, other)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(addr), PG, mmap.PROT_READ) == 0
    try:
        with pytest.raises(KernelError) as excinfo:
            cdev.ioctl(w.caller, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, addr)
        assert excinfo.value.errno == errno.EFAULT
        assert binding.hwpt is None
        assert w.destroy(iommufd, ioas) == 0 and w.destroy(iommufd, other) == 0
    finally:
        libc.mprotect(ctypes.c_void_p(addr), PG, mmap.PROT_READ | mmap.PROT_WRITE)
        del addr
        import gc
        gc.collect()
        page.close()


@pytest.mark.parametrize("iova", [0xFEE00000, 1 << 39])
def test_attach_to_an_ioas_mapping_what_the_domain_must_reserve_is_eaddrinuse(
        buf: Buffer, iova: int) -> None:
    """The MSI window is reserved in the IOAS for the attached device, the aperture's outside
    for the new domain: an area already there makes the attach fail, and the automatic HWPT's
    id is freed again."""
    w = World()
    cdev, iommufd = bound(w)
    ioas = w.ioas(iommufd)
    w.map(iommufd, ioas, iova, buf.addr, PG)
    assert w.err(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                 struct.pack("<III", 12, 0, ioas)) == errno.EADDRINUSE
    assert cdev.binding.hwpt is None  # type: ignore[attr-defined]
    assert set(cdev.context.objects) == {1, ioas}  # type: ignore[attr-defined]
    data = I.IOAS_UNMAP.pack(size=I.IOAS_UNMAP.size, ioas_id=ioas, iova=iova, length=PG)
    assert w.call(iommufd, I.IOMMU_IOAS_UNMAP, data) == 0
    assert w.attach(cdev, ioas) == 3
    # The same as a replace: it fails and the device stays where it was.
    other = w.ioas(iommufd)
    w.map(iommufd, other, iova, buf.addr, PG)
    assert w.err(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                 struct.pack("<III", 12, 0, other)) == errno.EADDRINUSE
    assert cdev.context.id_of(cdev.binding.hwpt) == 3  # type: ignore[attr-defined]
    assert set(cdev.context.objects) == {1, ioas, 3, other}  # type: ignore[attr-defined]


def test_pasid_attach_and_detach() -> None:
    w = World()
    cdev, iommufd = bound(w)
    ioas = w.ioas(iommufd)
    flag = V.VFIO_DEVICE_ATTACH_PASID
    assert w.err(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, struct.pack("<III", 12, flag, ioas)) == errno.EINVAL
    assert w.err(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, struct.pack("<IIII", 16, flag, 99, 1)) == errno.ENOENT
    assert w.err(cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, struct.pack("<IIII", 16, flag, ioas, 1)) == errno.EINVAL
    assert w.err(cdev, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, struct.pack("<II", 8, flag)) == errno.EINVAL
    assert w.call(cdev, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, struct.pack("<III", 12, flag, 1)) == 0


# ---------------------------------------------------------------------------- DMA
def test_dma_is_blocked_until_attach_goes_through_the_ioas_and_is_blocked_after_detach(
        buf: Buffer) -> None:
    w = World()
    cdev, iommufd = bound(w)
    space = lambda: w.engine.device_dma_space(EDU)  # noqa: E731
    with pytest.raises(IommuFault):
        dma_write(space(), IOVA, b"x", device=EDU)
    assert "bound through its cdev but not attached" in w.engine.faults.records()[-1].detail
    ioas = w.ioas(iommufd)
    w.map(iommufd, ioas, IOVA, buf.addr, 2 * PG)
    with pytest.raises(IommuFault):
        dma_write(space(), IOVA, b"x", device=EDU)  # mapped, but not attached yet
    w.attach(cdev, ioas)
    dma_write(space(), IOVA + 16, b"through the IOAS", device=EDU)
    assert buf.map[16:32] == b"through the IOAS"
    assert dma_read(space(), IOVA + 16, 7, device=EDU) == b"through"
    assert w.call(cdev, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, struct.pack("<II", 8, 0)) == 0
    with pytest.raises(IommuFault):
        dma_read(space(), IOVA + 16, 7, device=EDU)


def test_the_edu_dma_started_through_the_cdev_moves_through_the_attached_ioas(buf: Buffer) -> None:
    w = World()
    cdev, iommufd = bound(w)
    ioas = w.ioas(iommufd)
    w.map(iommufd, ioas, IOVA, buf.addr, 2 * PG)
    w.attach(cdev, ioas)
    buf.map[0:0x100] = bytes(range(256))
    cdev.write(w.caller, CFG + 4, struct.pack("<H", 0x6))

    def reg(offset: int, value: int) -> None:
        cdev.write(w.caller, BAR0 + offset, struct.pack("<Q", value))

    for src, dst, cmd in ((IOVA, 0x40000, 1), (0x40000, IOVA + PG, 3)):
        reg(0x80, src)
        reg(0x88, dst)
        reg(0x90, 0x100)
        reg(0x98, cmd)
    assert buf.map[PG:PG + 0x100] == bytes(range(256))
    assert w.engine.faults.records() == []


# ---------------------------------------------------------------------------- busy, both ways
def test_a_bound_cdev_makes_the_group_node_busy_until_it_is_closed() -> None:
    w = World()
    cdev, iommufd = bound(w)
    with pytest.raises(KernelError) as excinfo:
        w.open(FileKind.GROUP, 1)
    assert excinfo.value.errno == errno.EBUSY
    w.open(FileKind.GROUP, 2)  # another group is not affected
    w.close(cdev, release=False)  # closed, its RELEASE still on its way
    group = w.open(FileKind.GROUP, 1)
    assert w.engine.groups[1].opened is group


def test_an_open_group_node_makes_bind_busy() -> None:
    w = World()
    iommufd = w.open(FileKind.IOMMUFD)
    group = w.open(FileKind.GROUP, 1)
    cdev = w.open(FileKind.CDEV, EDU)  # the cdev itself always opens
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(w.fd_of(iommufd))) == errno.EBUSY
    # EBUSY comes before the "already bound" and iommufd checks, after the argument's.
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(99)) == errno.EBUSY
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(-1)) == errno.EINVAL
    w.close(group, release=False)
    assert w.bind(cdev, iommufd) == 1


def test_a_device_is_bound_by_one_cdev_fd_at_a_time() -> None:
    w = World()
    cdev, iommufd = bound(w)
    second = w.open(FileKind.CDEV, EDU)
    assert w.err(second, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(w.fd_of(iommufd))) == errno.EINVAL
    w.close(cdev, release=False)
    assert w.bind(second, iommufd) == 1  # the old DEVICE object is gone: id 1 again


def test_devices_of_one_group_share_its_hwpt_and_its_iommufd() -> None:
    w = World()
    a, b = w.engine.groups[3].devices
    first = w.open(FileKind.IOMMUFD)
    other = w.open(FileKind.IOMMUFD)
    cdev_a = w.open(FileKind.CDEV, a)
    cdev_b = w.open(FileKind.CDEV, b)
    assert w.bind(cdev_a, first) == 1
    # iommu_device_claim_dma_owner: the group is owned by the first context (EPERM).
    assert w.err(cdev_b, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(w.fd_of(other))) == errno.EPERM
    assert w.bind(cdev_b, first) == 2
    ioas1, ioas2 = w.ioas(first), w.ioas(first)
    hwpt = w.attach(cdev_a, ioas1)
    assert w.attach(cdev_b, ioas1) == hwpt  # the same automatic domain
    # Replacing b moves the whole group (a too); the old automatic HWPT goes.
    new = w.attach(cdev_b, ioas2)
    assert cdev_a.binding.hwpt is cdev_b.binding.hwpt  # type: ignore[attr-defined]
    assert w.destroy(first, hwpt) == -errno.ENOENT
    assert w.call(cdev_b, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, struct.pack("<II", 8, 0)) == 0
    # a is still on the group's HWPT; b may only join that one (EINVAL for another IOAS).
    assert w.err(cdev_b, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, struct.pack("<III", 12, 0, ioas1)) == errno.EINVAL
    assert w.attach(cdev_b, ioas2) == new


def test_bind_in_a_group_a_host_driver_shares_is_eperm() -> None:
    """A group that is not viable has a device whose host driver uses the DMA API: it holds the
    group's DMA ownership (owner NULL), so iommu_device_claim_dma_owner refuses iommufd."""
    w = World()
    group = w.engine.groups[2]
    group.viable = False
    iommufd = w.open(FileKind.IOMMUFD)
    cdev = w.open(FileKind.CDEV, group.devices[0])
    assert w.err(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, bind_arg(w.fd_of(iommufd))) == errno.EPERM
    assert group.cdev_files == [] and w.engine.devices[group.devices[0]].open_count == 0
    assert iommufd.context.objects == {}  # type: ignore[attr-defined]


def test_the_group_path_on_an_iommufd_binds_the_same_way() -> None:
    """GROUP_GET_DEVICE_FD on an iommufd binds through iommufd_device_bind too: EPERM in a
    group that is not viable, nothing left bound."""
    w = World()
    group = w.engine.groups[2]
    group.viable = False
    iommufd = w.open(FileKind.IOMMUFD)
    node = w.open(FileKind.GROUP, 2)
    assert w.call(node, V.VFIO_GROUP_SET_CONTAINER, struct.pack("<i", w.fd_of(iommufd))) == 0
    assert w.err(node, V.VFIO_GROUP_GET_DEVICE_FD, arg=_string(w, group.devices[0])) == errno.EPERM
    assert iommufd.context.devices == []  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- lifetime
@pytest.mark.parametrize("device_first", [True, False])
def test_closing_in_either_order_leaves_nothing_behind(buf: Buffer, device_first: bool) -> None:
    w = World()
    cdev, iommufd = bound(w)
    ioas = w.ioas(iommufd)
    w.map(iommufd, ioas, IOVA, buf.addr, 2 * PG)
    w.attach(cdev, ioas)
    context = cdev.context  # type: ignore[attr-defined]
    assert context.objects
    if device_first:
        w.close(cdev)
        assert w.engine.devices[EDU].open_count == 0
        assert context.objects.keys() == {ioas}  # the DEVICE and its auto HWPT are gone
        w.close(iommufd)
    else:
        w.close(iommufd)
        # The bound device holds the context: its DMA still goes through the IOAS.
        dma_write(w.engine.device_dma_space(EDU), IOVA, b"still", device=EDU)
        assert buf.map[:5] == b"still"
        w.close(cdev)
    assert context.objects == {}
    assert context.devices == [] and context.hwpts == []
    device = w.engine.devices[EDU]
    assert device.open_count == 0 and device.cdev is None and device.iommufd_binding is None
    assert w.engine.groups[1].cdev_files == []
    with pytest.raises(IommuFault):
        dma_write(w.engine.device_dma_space(EDU), IOVA, b"x", device=EDU)
    # Everything can start again: the group node, then (once it is closed) a new binding.
    group = w.open(FileKind.GROUP, 1)
    w.close(group)
    again = w.open(FileKind.CDEV, EDU)
    assert w.bind(again, w.open(FileKind.IOMMUFD)) == 1
    assert isinstance(again, CdevFile)


def test_attach_to_a_hwpt_from_hwpt_alloc_which_outlives_the_attachment(buf: Buffer) -> None:
    """A manual HWPT (IOMMU_HWPT_ALLOC) is attached as is, held while attached, never picked as
    an automatic domain, and not destroyed when its device leaves (unlike an automatic one)."""
    w = World()
    cdev, iommufd = bound(w)
    ioas = w.ioas(iommufd)
    w.map(iommufd, ioas, IOVA, buf.addr, 2 * PG)
    data = I.HWPT_ALLOC.pack(size=I.HWPT_ALLOC.size, flags=0, dev_id=1, pt_id=ioas, out_hwpt_id=0,
                             reserved=0, data_type=0, data_len=0, data_uptr=0, fault_id=0,
                             reserved2=0)
    assert w.call(iommufd, I.IOMMU_HWPT_ALLOC, data) == 0
    manual = w.out(16)
    assert manual == 3
    assert w.attach(cdev, manual) == manual
    dma_write(w.engine.device_dma_space(EDU), IOVA, b"manual", device=EDU)
    assert buf.map[:6] == b"manual"
    assert w.destroy(iommufd, manual) == -errno.EBUSY
    # Replacing by the IOAS makes an automatic HWPT: the manual one is not a candidate.
    auto = w.attach(cdev, ioas)
    assert auto == 4
    assert w.destroy(iommufd, manual) == 0  # left alone by the replace, and free now
    assert w.attach(cdev, ioas) == auto
    assert w.call(cdev, V.VFIO_DEVICE_DETACH_IOMMUFD_PT, struct.pack("<II", 8, 0)) == 0
    assert w.destroy(iommufd, auto) == -errno.ENOENT
    assert w.destroy(iommufd, ioas) == 0


def test_edu_writes_through_a_cdev_attached_dirty_tracking_hwpt_show_in_its_bitmap(buf: Buffer) -> None:
    """The cdev path feeds the other HWPT features: a device attached through its cdev to a
    DIRTY_TRACKING HWPT marks the pages it writes (on an IOMMU with second-level A/D bits)."""
    from ioasidfs.engine.iommufd import VtdIommu

    w = World()
    cdev, iommufd = bound(w)
    iommufd.context.vtd = VtdIommu.with_dirty_tracking(39)  # type: ignore[attr-defined]
    ioas = w.ioas(iommufd)
    w.map(iommufd, ioas, IOVA, buf.addr, 4 * PG)
    data = I.HWPT_ALLOC.pack(size=I.HWPT_ALLOC.size, flags=I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                             dev_id=1, pt_id=ioas, out_hwpt_id=0, reserved=0, data_type=0,
                             data_len=0, data_uptr=0, fault_id=0, reserved2=0)
    assert w.call(iommufd, I.IOMMU_HWPT_ALLOC, data) == 0
    hwpt = w.out(16)
    assert w.attach(cdev, hwpt) == hwpt
    assert w.call(iommufd, I.IOMMU_HWPT_SET_DIRTY_TRACKING, I.HWPT_SET_DIRTY_TRACKING.pack(
        size=16, flags=I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE, hwpt_id=hwpt, reserved=0)) == 0
    dma_write(w.engine.device_dma_space(EDU), IOVA + 2 * PG + 5, b"dirty", device=EDU)
    bitmap = ctypes.create_string_buffer(8)
    assert w.call(iommufd, I.IOMMU_HWPT_GET_DIRTY_BITMAP, I.HWPT_GET_DIRTY_BITMAP.pack(
        size=48, hwpt_id=hwpt, flags=0, reserved=0, iova=IOVA, length=4 * PG, page_size=PG,
        data=ctypes.addressof(bitmap))) == 0
    assert bitmap.raw[0] == 0b100  # the third page, and only it


@pytest.mark.parametrize("iommufd_first", [True, False])
def test_unset_container_leaves_the_group_paths_open_device_attached(buf: Buffer,
                                                                     iommufd_first: bool) -> None:
    """VFIO_GROUP_UNSET_CONTAINER on an iommufd only drops the group's reference on the
    context (vfio_group_ioctl_unset_container: no EBUSY for open devices on this path), even
    with the iommufd closed first: the device GROUP_GET_DEVICE_FD bound stays bound (its DEVICE
    holds the context, iommufd_device_bind) and attached, so its DMA still reaches the IOAS.
    Closing the device fd unbinds it from that context (vfio_df_close uses the df's iommufd,
    not the group's), and then nothing is left."""
    w = World()
    iommufd = w.open(FileKind.IOMMUFD)
    node = w.open(FileKind.GROUP, 1)
    assert w.call(node, V.VFIO_GROUP_SET_CONTAINER, struct.pack("<i", w.fd_of(iommufd))) == 0
    device = node.ioctl(w.caller, V.VFIO_GROUP_GET_DEVICE_FD, _string(w, EDU))  # type: ignore[func-returns-value]
    assert isinstance(device, OpenFile)
    w.fds[max(w.fds) + 1] = device
    w.open_files.add(id(device))
    context = iommufd.context  # type: ignore[attr-defined]
    w.map(iommufd, 1, IOVA, buf.addr, 2 * PG)  # the compat IOAS is object 1
    if iommufd_first:
        w.close(iommufd)
    assert w.call(node, V.VFIO_GROUP_UNSET_CONTAINER) == 0
    assert w.err(node, V.VFIO_GROUP_GET_DEVICE_FD, arg=_string(w, EDU)) == errno.EINVAL
    dma_write(w.engine.device_dma_space(EDU), IOVA, b"still", device=EDU)
    assert buf.map[:5] == b"still"
    w.close(node)  # held by the device fd until it is closed
    w.close(device)
    device_state = w.engine.devices[EDU]
    assert device_state.iommufd_binding is None and device_state.iommufd_context is None
    assert context.devices == [] and context.hwpts == []
    if iommufd_first:
        assert context.objects == {}  # the last reference went with the device
    else:
        assert list(context.objects) == [1]  # the compat IOAS stays with the open iommufd
        w.close(iommufd)
        assert context.objects == {}
    with pytest.raises(IommuFault):
        dma_write(w.engine.device_dma_space(EDU), IOVA, b"x", device=EDU)
