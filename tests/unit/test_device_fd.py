"""Device fds from VFIO_GROUP_GET_DEVICE_FD, at the engine level: every answer below is the one
the 6.1 VM (adjusted to upstream) gave for QEMU's edu at 0000:00:01.0 -- see
tests/expected/device_ioctls.txt and its notes -- plus the lifetimes that tie device fds to
their group and container, and an edu DMA into this process's memory through a type1 mapping.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct

import pytest

from ioasidfs.client import ProcessMemory
from ioasidfs.config import load_config
from ioasidfs.engine import Caller, Engine, FakeEventfd, FakeMemory, FileKind, OpenFile
from ioasidfs.engine.device import DeviceFile
from ioasidfs.errors import KernelError
from ioasidfs.uapi import vfio as V

ARG = 0x10000
EDU = "0000:00:01.0"
BAR0 = 0
CONFIG = 7 << 40
GET, SET, PROBE = V.VFIO_DEVICE_FEATURE_GET, V.VFIO_DEVICE_FEATURE_SET, V.VFIO_DEVICE_FEATURE_PROBE


class World:
    """An engine, a caller with fake memory and an fd table, the edu's group in a type1v2
    container."""

    def __init__(self, personality: str = "type1") -> None:
        import dataclasses
        config = dataclasses.replace(load_config(None), container_personality=personality)
        self.engine = Engine(config, still_open=lambda f: True)
        self.memory = FakeMemory()
        self.memory.map(ARG, 8192)
        self.fds: dict[int, object] = {}
        self.eventfds: dict[int, FakeEventfd] = {}
        self.refs: list[FakeEventfd] = []
        self.caller = Caller(pid=1234, memory=self.memory, resolve_fd=self._resolve,
                             eventfd=self._eventfd)
        self.container = self.engine.open(FileKind.CONTAINER, None, self.caller)
        self.group = self.engine.open(FileKind.GROUP, 1, self.caller)
        self.fds[7] = self.container
        self.set_container(7)
        if personality == "type1":
            assert self.container.ioctl(self.caller, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU) == 0

    def _resolve(self, fd: int) -> object:
        if fd not in self.fds:
            raise KernelError(errno.EBADF, "closed")
        return self.fds[fd]

    def _eventfd(self, fd: int) -> FakeEventfd:
        if fd < 0 or fd not in self.fds:
            raise KernelError(errno.EBADF, "closed")
        if fd not in self.eventfds:
            raise KernelError(errno.EINVAL, "not an eventfd")
        made = FakeEventfd()  # one reference per call, as eventfd_ctx_fdget takes
        self.refs.append(made)
        return made

    def set_container(self, fd: int) -> int:
        self.memory.write(ARG, struct.pack("<i", fd))
        return self.group.ioctl(self.caller, V.VFIO_GROUP_SET_CONTAINER, ARG)

    def get_device_fd(self, name: bytes = EDU.encode()) -> DeviceFile:
        self.memory.write(ARG, name + b"\0")
        file = self.group.ioctl(self.caller, V.VFIO_GROUP_GET_DEVICE_FD, ARG)
        assert isinstance(file, DeviceFile)
        return file

    def ioctl(self, file: OpenFile, cmd: int, data: bytes = b"", arg: int = ARG) -> int:
        if data:
            self.memory.write(arg, data)
        return file.ioctl(self.caller, cmd, arg)

    def errno_of(self, file: OpenFile, cmd: int, data: bytes = b"", arg: int = ARG) -> int:
        with pytest.raises(KernelError) as info:
            self.ioctl(file, cmd, data, arg)
        return info.value.errno

    def out(self, n: int) -> bytes:
        return self.memory.read(ARG, n)


def filled(data: bytes, total: int) -> bytes:
    return data + b"\xa5" * (total - len(data))


def test_get_info_writes_min_argsz_24() -> None:
    w = World()
    dev = w.get_device_fd()
    assert w.errno_of(dev, V.VFIO_DEVICE_GET_INFO, arg=0) == errno.EFAULT
    assert w.errno_of(dev, V.VFIO_DEVICE_GET_INFO, filled(struct.pack("<I", 15), 32)) == errno.EINVAL
    for argsz, written in ((16, 16), (19, 19), (24, 24), (32, 24)):
        assert w.ioctl(dev, V.VFIO_DEVICE_GET_INFO, filled(struct.pack("<I", argsz), 32)) == 0
        want = struct.pack("<IIIIII", argsz, 0x2, 9, 5, 0, 0)[:written]
        assert w.out(32) == filled(want, 32), argsz


def test_region_info_as_vfio_pci_reports_the_edu() -> None:
    w = World()
    dev = w.get_device_fd()

    def region(index: int, argsz: int = 32, cap: int = 0x77) -> tuple[int, ...]:
        w.memory.write(ARG, struct.pack("<IIII", argsz, 0x5A5A5A5A, index, cap) + b"\xa5" * 20)
        dev.ioctl(w.caller, V.VFIO_DEVICE_GET_REGION_INFO, ARG)
        return struct.unpack("<IIIIQQI", w.out(36))

    # BAR0 without MMAP (ioasidfs cannot map registers; the VM says 0x7).
    assert region(0) == (32, 0x3, 0, 0x77, 0x100000, 0, 0xA5A5A5A5)
    assert region(1) == (32, 0x0, 1, 0x77, 0, 1 << 40, 0xA5A5A5A5)
    assert region(6)[1:6] == (0x0, 6, 0x77, 0, 6 << 40)
    assert region(7, cap=0xFFFFFFFF) == (32, 0x3, 7, 0xFFFFFFFF, 0x100, 7 << 40, 0xA5A5A5A5)
    assert region(0, argsz=4096)[0] == 4096
    for index in (8, 9, 0x7FFFFFFF):
        with pytest.raises(KernelError) as info:
            region(index)
        assert info.value.errno == errno.EINVAL
        assert w.out(8)[4:8] == b"\x5a" * 4  # nothing written
    with pytest.raises(KernelError) as info:
        region(0, argsz=31)
    assert info.value.errno == errno.EINVAL


def test_bar_access_splits_like_vfio_pci_and_needs_memory_decode() -> None:
    w = World()
    dev = w.get_device_fd()
    assert dev.read(w.caller, BAR0, 4) == bytes.fromhex("ed000001")
    assert dev.read(w.caller, BAR0, 2) == b"\0\0"  # edu refuses narrow accesses: 0
    assert dev.read(w.caller, BAR0 + 1, 4) == b"\0" * 4  # 1 + 2 + 1 bytes
    assert dev.read(w.caller, BAR0, 8) == b"\xff" * 8  # one 8-byte access below 0x80
    assert dev.read(w.caller, BAR0 + 0xFFFFC, 8) == b"\xff" * 4  # cut at the BAR's end
    assert dev.write(w.caller, BAR0 + 4, struct.pack("<I", 0x11223344)) == 4
    assert dev.read(w.caller, BAR0 + 4, 4) == struct.pack("<I", 0xEEDDCCBB)
    assert dev.write(w.caller, BAR0, struct.pack("<Q", 0x8877665544332211)) == 8
    assert dev.read(w.caller, BAR0 + 4, 4) == struct.pack("<I", 0xEEDDCCBB)  # ignored below 0x80
    assert dev.write(w.caller, BAR0 + 0x80, struct.pack("<Q", 0x100002000)) == 8
    assert dev.read(w.caller, BAR0 + 0x80, 8) == struct.pack("<Q", 0x100002000)
    assert dev.write(w.caller, BAR0 + 0xFFFFE, b"\0" * 4) == 2
    for offset in (BAR0 + 0x100000, 1 << 40, 6 << 40, 8 << 40, 9 << 40, 255 << 40):
        with pytest.raises(KernelError) as info:
            dev.read(w.caller, offset, 4)
        assert info.value.errno == errno.EINVAL, hex(offset)
    # Memory decode off in the virtual command register: EIO, on again: works.
    assert dev.write(w.caller, CONFIG + 4, struct.pack("<H", 0)) == 2
    with pytest.raises(KernelError) as info:
        dev.read(w.caller, BAR0, 4)
    assert info.value.errno == errno.EIO
    assert dev.write(w.caller, CONFIG + 4, struct.pack("<H", 0x2)) == 2
    assert dev.read(w.caller, BAR0, 4) == bytes.fromhex("ed000001")


def test_hot_reset_and_reset_have_nothing_to_reset() -> None:
    w = World()
    dev = w.get_device_fd()
    assert w.errno_of(dev, V.VFIO_DEVICE_RESET) == errno.EINVAL
    assert w.errno_of(dev, V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, filled(struct.pack("<I", 12), 16)) == errno.ENODEV
    assert w.out(12) == filled(struct.pack("<I", 12), 12)  # nothing written
    assert w.errno_of(dev, V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, filled(struct.pack("<I", 11), 16)) == errno.EINVAL
    assert w.errno_of(dev, V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, arg=0) == errno.EFAULT
    assert w.errno_of(dev, V.VFIO_DEVICE_PCI_HOT_RESET, struct.pack("<III", 11, 0, 1)) == errno.EINVAL
    assert w.errno_of(dev, V.VFIO_DEVICE_PCI_HOT_RESET, struct.pack("<III", 12, 1, 1)) == errno.EINVAL
    assert w.errno_of(dev, V.VFIO_DEVICE_PCI_HOT_RESET, struct.pack("<III", 12, 0, 0)) == errno.EINVAL
    assert w.errno_of(dev, V.VFIO_DEVICE_PCI_HOT_RESET, struct.pack("<IIIi", 12, 0, 1, 8)) == errno.ENODEV


def ioeventfd(argsz: int, flags: int, offset: int, data: int, fd: int) -> bytes:
    return struct.pack("<IIQQiI", argsz, flags, offset, data, fd, 0)


def test_ioeventfd_validation_and_registry() -> None:
    w = World()
    dev = w.get_device_fd()
    w.fds[5] = object()
    w.eventfds[5] = FakeEventfd()
    w.fds[3] = object()  # a pipe
    cmd = V.VFIO_DEVICE_IOEVENTFD
    assert w.errno_of(dev, cmd, arg=0) == errno.EFAULT
    assert w.errno_of(dev, cmd, ioeventfd(27, 4, 4, 0, 5)) == errno.EINVAL
    assert w.errno_of(dev, cmd, ioeventfd(28, 4, 4, 0, -1)) == errno.ENODEV
    for flags, offset, fd in ((0x14, 4, 5), (0, 4, 5), (3, 4, 5), (4, 4, -2), (4, CONFIG + 4, 5),
                              (4, 1 << 40, 5), (4, 6 << 40, 5), (4, 0xFFFFE, 5), (8, 0x80, 5),
                              (4, 4, 3)):
        assert w.errno_of(dev, cmd, ioeventfd(32, flags, offset, 0x1234, fd)) == errno.EINVAL, \
            (flags, offset, fd)
    assert w.errno_of(dev, cmd, ioeventfd(32, 4, 4, 0x1234, 1000)) == errno.EBADF
    assert w.ioctl(dev, cmd, ioeventfd(32, 4, 4, 0x1234, 5)) == 0
    assert w.errno_of(dev, cmd, ioeventfd(32, 4, 4, 0x1234, 5)) == errno.EEXIST
    assert w.ioctl(dev, cmd, ioeventfd(32, 4, 4, 0x1235, 5)) == 0
    assert w.ioctl(dev, cmd, ioeventfd(32, 2, 4, 0x1234, 5)) == 0
    assert w.ioctl(dev, cmd, ioeventfd(32, 4, 4, 0x1234, -1)) == 0
    assert w.errno_of(dev, cmd, ioeventfd(32, 4, 4, 0x1234, -1)) == errno.ENODEV
    open_refs = [r for r in w.refs if not r.closed]
    assert len(open_refs) == 2
    dev.release()  # the last close drops what is still registered
    assert all(r.closed for r in w.refs)


def feature(flags: int, argsz: int = 8, data: bytes = b"") -> bytes:
    return struct.pack("<II", argsz, flags) + data


def test_device_features_low_power_and_the_rest() -> None:
    w = World()
    dev = w.get_device_fd()
    w.fds[6] = object()
    w.eventfds[6] = FakeEventfd()
    w.fds[3] = object()
    cmd = V.VFIO_DEVICE_FEATURE
    assert w.errno_of(dev, cmd, arg=0) == errno.EFAULT
    assert w.errno_of(dev, cmd, feature(PROBE | GET | 3, argsz=7)) == errno.EINVAL
    assert w.errno_of(dev, cmd, feature(1 << 19 | PROBE | SET | 3)) == errno.EINVAL
    assert w.errno_of(dev, cmd, feature(GET | SET | 3)) == errno.EINVAL
    for index in (0, 1, 2, 6, 7, 8, 9, 10, 0xFFFF):
        for op in (GET, SET):
            assert w.errno_of(dev, cmd, feature(PROBE | op | index)) == errno.ENOTTY, index
    for index in (3, 4, 5):
        assert w.errno_of(dev, cmd, feature(PROBE | GET | index)) == errno.EINVAL
        assert w.ioctl(dev, cmd, feature(PROBE | SET | index)) == 0
    assert w.ioctl(dev, cmd, feature(PROBE | 3)) == 0
    assert w.errno_of(dev, cmd, feature(3)) == errno.EINVAL
    assert w.errno_of(dev, cmd, feature(SET | 4)) == errno.EINVAL
    assert w.errno_of(dev, cmd, feature(SET | 4, 12, struct.pack("<i", 6))) == errno.EINVAL
    assert w.errno_of(dev, cmd, feature(SET | 4, 16, struct.pack("<iI", -1, 0))) == errno.EINVAL
    assert w.errno_of(dev, cmd, feature(SET | 4, 16, struct.pack("<iI", 3, 0))) == errno.EINVAL
    assert w.errno_of(dev, cmd, feature(SET | 4, 16, struct.pack("<iI", 1000, 0))) == errno.EBADF
    assert w.ioctl(dev, cmd, feature(SET | 5)) == 0
    assert w.ioctl(dev, cmd, feature(SET | 3)) == 0
    assert w.errno_of(dev, cmd, feature(SET | 3)) == errno.EINVAL  # already in low power
    assert w.ioctl(dev, cmd, feature(SET | 5)) == 0
    assert w.ioctl(dev, cmd, feature(SET | 4, 16, struct.pack("<iI", 6, 0))) == 0
    wakeup = w.refs[-1]
    # The next ioctl resumes the device: the wakeup eventfd fires and low power is left.
    assert w.ioctl(dev, V.VFIO_DEVICE_GET_INFO, filled(struct.pack("<I", 16), 32)) == 0
    assert wakeup.count == 1 and wakeup.closed
    assert w.ioctl(dev, cmd, feature(SET | 5)) == 0


def test_device_fds_hold_their_group_and_container() -> None:
    w = World()
    with pytest.raises(KernelError) as info:
        w.get_device_fd(b"0000:00:01.1")
    assert info.value.errno == errno.ENODEV
    first = w.get_device_fd()
    second = w.get_device_fd(EDU.encode() + b"  ")
    assert first.device is second.device and first.vfio is second.vfio
    assert w.errno_of(w.group, V.VFIO_GROUP_UNSET_CONTAINER) == errno.EBUSY
    second.release()
    assert w.errno_of(w.group, V.VFIO_GROUP_UNSET_CONTAINER) == errno.EBUSY
    # Closing the group fd while a device fd is open releases nothing yet: still in the
    # container, and the group cannot be opened again.
    w.engine.release(w.group)
    assert w.engine.groups[1].container is not None
    with pytest.raises(KernelError) as info:
        w.engine.open(FileKind.GROUP, 1, w.caller)
    assert info.value.errno == errno.EBUSY
    first.release()
    assert w.engine.groups[1].container is None and w.engine.groups[1].opened is None
    assert w.engine.devices[EDU].vfio is None


def test_group_path_on_an_iommufd_keeps_the_device_bound_while_open() -> None:
    w = World(personality="iommufd")
    ctx = w.container.context  # type: ignore[attr-defined]
    dev = w.get_device_fd()
    assert len(ctx.devices) == 1
    again = w.get_device_fd()
    assert len(ctx.devices) == 1
    dev.release()
    assert len(ctx.devices) == 1
    again.release()
    assert not ctx.devices


def test_bind_iommufd_on_a_group_device_fd_is_refused() -> None:
    w = World()
    dev = w.get_device_fd()
    bind = struct.pack("<IIiII", 20, 0, -1, 0, 0)
    assert w.errno_of(dev, V.VFIO_DEVICE_BIND_IOMMUFD, bind) == errno.EINVAL
    assert w.errno_of(dev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT, bind) == errno.ENOTTY
    assert w.errno_of(dev, V.VFIO_GET_API_VERSION) == errno.ENOTTY


def test_edu_dma_reaches_this_process_through_a_type1_mapping() -> None:
    """RAM -> edu -> RAM through the container's mapping, the DMA-done MSI on an eventfd, and a
    DMA to an unmapped IOVA blocked (memory untouched) and logged."""
    config = load_config(None)
    engine = Engine(config, still_open=lambda f: False)
    pid = os.getpid()
    arg = ctypes.create_string_buffer(256)
    argp = ctypes.addressof(arg)
    fds: dict[int, object] = {}
    msi = FakeEventfd()
    caller = Caller(pid=pid, memory=ProcessMemory(pid), resolve_fd=lambda fd: fds[fd],
                    eventfd=lambda fd: msi)
    container = engine.open(FileKind.CONTAINER, None, caller)
    group = engine.open(FileKind.GROUP, 1, caller)
    fds[3] = container

    def call(file: OpenFile, cmd: int, data: bytes) -> int:
        ctypes.memmove(argp, data, len(data))
        return file.ioctl(caller, cmd, argp)

    assert call(group, V.VFIO_GROUP_SET_CONTAINER, struct.pack("<i", 3)) == 0
    assert container.ioctl(caller, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU) == 0
    buf = mmap.mmap(-1, 8192)
    vaddr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    rw = V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE
    assert call(container, V.VFIO_IOMMU_MAP_DMA, struct.pack("<IIQQQ", 32, rw, vaddr, 0x100000, 8192)) == 0
    ctypes.memmove(argp, EDU.encode() + b"\0", 13)
    dev = group.ioctl(caller, V.VFIO_GROUP_GET_DEVICE_FD, argp)
    assert isinstance(dev, DeviceFile)
    # Bus master + memory on, MSI through an eventfd.
    dev.write(caller, CONFIG + 4, struct.pack("<H", 0x0106))
    assert call(dev, V.VFIO_DEVICE_SET_IRQS, struct.pack("<IIIIIi", 24, V.VFIO_IRQ_SET_DATA_EVENTFD
                                                         | V.VFIO_IRQ_SET_ACTION_TRIGGER, 1, 0, 1, 9)) == 0
    pattern = bytes(range(256)) * 8
    buf[:2048] = pattern

    def dma(src: int, dst: int, count: int, cmd: int) -> None:
        for reg, value in ((0x80, src), (0x88, dst), (0x90, count), (0x98, cmd)):
            dev.write(caller, BAR0 + reg, struct.pack("<I", value))

    dma(0x100000, 0x40000, 2048, 0x1 | 0x4)  # RAM -> edu, interrupt when done
    assert msi.take() == 1
    dma(0x40000, 0x101000, 2048, 0x1 | 0x2 | 0x4)  # edu -> RAM
    assert msi.take() == 1
    assert buf[4096:4096 + 2048] == pattern
    before = bytes(buf)
    dma(0x40000, 0x300000, 256, 0x1 | 0x2 | 0x4)  # to an unmapped IOVA: blocked, logged
    assert msi.take() == 1 and bytes(buf) == before
    assert any(r.iova == 0x300000 for r in engine.faults.records())
    dev.release()
    engine.release(group)
    engine.release(container)
    buf.close()


def test_a_closed_device_fd_whose_release_is_late_does_not_hold_the_group() -> None:
    """FUSE sends RELEASE after close() returned; the kernel's device fd was gone by then. A
    device file no process holds any more is released when the group needs it to be."""
    w = World()
    held: set[int] = set()
    w.engine.still_open = lambda file: id(file) in held
    dev = w.get_device_fd()
    held.add(id(dev))
    assert w.errno_of(w.group, V.VFIO_GROUP_UNSET_CONTAINER) == errno.EBUSY
    held.discard(id(dev))  # closed; its RELEASE has not arrived
    assert w.ioctl(w.group, V.VFIO_GROUP_UNSET_CONTAINER) == 0
    assert w.engine.devices[EDU].vfio is None
    dev.release()  # the late RELEASE changes nothing
    assert w.engine.groups[1].container is None
