"""Engine rules of the container, group, iommufd and cdev nodes, without any mount.

Each row is a rule of the kernel (see shared/spec/vfio-legacy.md §2.1, §2.3 and iommufd.md
§2.1, §3.2, §4.1) checked through the same entry point the daemon uses: OpenFile.ioctl.
"""
from __future__ import annotations

import errno
import struct

import pytest

from ioasidfs.config import load_config, parse_config
from ioasidfs.engine import FOREIGN, Caller, Engine, FakeMemory, FileKind
from ioasidfs.engine.group import match_pci_name
from ioasidfs.errors import KernelError
from ioasidfs.uapi import iommufd as I
from ioasidfs.uapi import vfio as V

BUF = 0x10000


class World:
    """An engine, a caller with some memory, and an fd table the caller's fds resolve in."""

    def __init__(self, text: str | None = None) -> None:
        config = load_config(None) if text is None else parse_config(text, "test.toml")
        self.engine = Engine(config, still_open=lambda f: True)
        self.memory = FakeMemory()
        self.memory.map(BUF, 8192)
        self.fds: dict[int, object] = {}
        self.caller = Caller(pid=1, memory=self.memory, resolve_fd=self._resolve)

    def _resolve(self, fd: int) -> object:
        if fd not in self.fds:
            raise KernelError(errno.EBADF, "closed")
        return self.fds[fd]

    def open(self, kind: FileKind, key: object = None) -> object:
        file = self.engine.open(kind, key, self.caller)
        self.fds[len(self.fds) + 3] = file
        return file

    def fd_of(self, file: object) -> int:
        return next(fd for fd, f in self.fds.items() if f is file)

    def ioctl(self, file, cmd: int, arg: int = 0) -> int:  # type: ignore[no-untyped-def]
        return file.ioctl(self.caller, cmd, arg)

    def errno_of(self, file, cmd: int, arg: int = 0) -> int:  # type: ignore[no-untyped-def]
        with pytest.raises(KernelError) as excinfo:
            file.ioctl(self.caller, cmd, arg)
        return excinfo.value.errno

    def attach(self, group, container) -> None:  # type: ignore[no-untyped-def]
        self.memory.write(BUF, struct.pack("<i", self.fd_of(container)))
        assert self.ioctl(group, V.VFIO_GROUP_SET_CONTAINER, BUF) == 0


BEFORE = {1: 1, 3: 1, 9: 1, 4: 0, 6: 0, 8: 0, 10: 0, 0: 0, 2: 0, 1000: 0}
AFTER = {1: 1, 3: 1, 9: 1, 10: 1, 4: 0, 6: 0, 8: 0, 0: 0, 2: 0, 1000: 0}


def test_container_extensions_before_and_after_set_iommu() -> None:
    w = World()
    container = w.open(FileKind.CONTAINER)
    assert w.ioctl(container, V.VFIO_GET_API_VERSION) == 0
    assert {a: w.ioctl(container, V.VFIO_CHECK_EXTENSION, a) for a in BEFORE} == BEFORE
    group = w.open(FileKind.GROUP, 1)
    w.attach(group, container)
    assert {a: w.ioctl(container, V.VFIO_CHECK_EXTENSION, a) for a in BEFORE} == BEFORE
    assert w.ioctl(container, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU) == 0
    assert {a: w.ioctl(container, V.VFIO_CHECK_EXTENSION, a) for a in AFTER} == AFTER
    # The last group leaving destroys the IOMMU instance: back to polling the drivers.
    assert w.ioctl(group, V.VFIO_GROUP_UNSET_CONTAINER) == 0
    assert {a: w.ioctl(container, V.VFIO_CHECK_EXTENSION, a) for a in BEFORE} == BEFORE
    assert w.errno_of(container, V.VFIO_IOMMU_GET_INFO, BUF) == errno.EINVAL


@pytest.mark.parametrize("arg, err", [(0, errno.ENODEV), (2, errno.ENODEV), (4, errno.ENODEV),
                                      (6, errno.ENODEV), (8, errno.ENODEV), (9, errno.EINVAL),
                                      (10, errno.ENODEV), (1000, errno.ENODEV)])
def test_set_iommu_errors(arg: int, err: int) -> None:
    w = World()
    container = w.open(FileKind.CONTAINER)
    assert w.errno_of(container, V.VFIO_SET_IOMMU, V.VFIO_TYPE1_IOMMU) == errno.EINVAL  # no group
    w.attach(w.open(FileKind.GROUP, 1), container)
    assert w.errno_of(container, V.VFIO_SET_IOMMU, arg) == err
    assert w.ioctl(container, V.VFIO_SET_IOMMU, V.VFIO_TYPE1_IOMMU) == 0
    assert w.errno_of(container, V.VFIO_SET_IOMMU, V.VFIO_TYPE1_IOMMU) == errno.EINVAL  # twice


def test_container_unknown_ioctls_einval_before_and_enotty_after() -> None:
    w = World()
    container = w.open(FileKind.CONTAINER)
    for cmd in (0x5401, 0x3B80, V.VFIO_DEVICE_RESET):
        assert w.errno_of(container, cmd, 0) == errno.EINVAL
    w.attach(w.open(FileKind.GROUP, 1), container)
    w.ioctl(container, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    for cmd in (0x5401, 0x3B80, V.VFIO_DEVICE_RESET, V.VFIO_IOMMU_ENABLE):
        assert w.errno_of(container, cmd, 0) == errno.ENOTTY


def test_group_status_and_attach_rules() -> None:
    w = World()
    group = w.open(FileKind.GROUP, 1)
    w.memory.write(BUF, struct.pack("<II", 8, 0xA5A5A5A5))
    assert w.ioctl(group, V.VFIO_GROUP_GET_STATUS, BUF) == 0
    assert w.memory.read(BUF, 8) == struct.pack("<II", 8, V.VFIO_GROUP_FLAGS_VIABLE)
    w.memory.write(BUF, struct.pack("<II", 7, 0))
    assert w.errno_of(group, V.VFIO_GROUP_GET_STATUS, BUF) == errno.EINVAL
    assert w.errno_of(group, V.VFIO_GROUP_GET_STATUS, 0) == errno.EFAULT
    assert w.errno_of(group, V.VFIO_GROUP_SET_CONTAINER, 0) == errno.EFAULT
    w.memory.write(BUF, struct.pack("<i", -1))
    assert w.errno_of(group, V.VFIO_GROUP_SET_CONTAINER, BUF) == errno.EBADF
    w.fds[99] = FOREIGN
    w.memory.write(BUF, struct.pack("<i", 99))
    assert w.errno_of(group, V.VFIO_GROUP_SET_CONTAINER, BUF) == errno.EBADFD
    assert w.errno_of(group, V.VFIO_GROUP_UNSET_CONTAINER) == errno.EINVAL
    container = w.open(FileKind.CONTAINER)
    w.attach(group, container)
    w.memory.write(BUF, struct.pack("<II", 8, 0))
    w.ioctl(group, V.VFIO_GROUP_GET_STATUS, BUF)
    assert w.memory.read(BUF, 8) == struct.pack("<II", 8, 3)
    w.memory.write(BUF, struct.pack("<i", w.fd_of(container)))
    assert w.errno_of(group, V.VFIO_GROUP_SET_CONTAINER, BUF) == errno.EINVAL  # already attached
    assert w.errno_of(group, 0x3B64) == errno.ENOTTY


def test_group_open_is_exclusive_until_released() -> None:
    w = World()
    first = w.open(FileKind.GROUP, 1)
    with pytest.raises(KernelError) as excinfo:
        w.open(FileKind.GROUP, 1)
    assert excinfo.value.errno == errno.EBUSY
    w.engine.release(first)
    w.open(FileKind.GROUP, 1)


def test_closed_group_whose_release_is_pending_can_be_reopened() -> None:
    w = World()
    w.engine.still_open = lambda f: False  # closed by its holder; FUSE's RELEASE still queued
    old = w.open(FileKind.GROUP, 1)
    container = w.open(FileKind.CONTAINER)
    w.attach(old, container)
    new = w.open(FileKind.GROUP, 1)
    assert container.container.groups == []  # type: ignore[attr-defined]
    w.attach(new, container)
    w.engine.release(old)  # the late RELEASE must not undo the new open's state
    assert container.container.groups == [new.group]  # type: ignore[attr-defined]


def test_non_viable_group_cannot_join() -> None:
    w = World('[[device]]\nbdf = "0000:00:01.0"\ngroup = 4\nmodel = "edu"\n[groups.4]\nviable = false\n')
    group = w.open(FileKind.GROUP, 4)
    w.memory.write(BUF, struct.pack("<II", 8, 0))
    w.ioctl(group, V.VFIO_GROUP_GET_STATUS, BUF)
    assert w.memory.read(BUF, 8) == struct.pack("<II", 8, 0)
    container = w.open(FileKind.CONTAINER)
    w.memory.write(BUF, struct.pack("<i", w.fd_of(container)))
    assert w.errno_of(group, V.VFIO_GROUP_SET_CONTAINER, BUF) == errno.EPERM


@pytest.mark.parametrize("name, result", [
    (b"0000:00:01.0", True), (b"0000:00:01.0 ", True), (b"0000:00:01.00", False),
    (b"0000:00:01", False), (b"0000:00:02.0", False), (b"0000:00:01.0 bogus", errno.EINVAL),
    (b"0000:00:01.0 vf_token=12345678-1234-1234-1234-123456789abc", errno.EINVAL),
])
def test_vfio_pci_name_matching(name: bytes, result: object) -> None:
    if isinstance(result, bool):
        assert match_pci_name("0000:00:01.0", name) is result
    else:
        with pytest.raises(KernelError) as excinfo:
            match_pci_name("0000:00:01.0", name)
        assert excinfo.value.errno == result


def test_get_device_fd_checks_in_kernel_order() -> None:
    w = World()
    group = w.open(FileKind.GROUP, 1)
    assert w.errno_of(group, V.VFIO_GROUP_GET_DEVICE_FD, 0) == errno.EFAULT
    w.memory.write(BUF, b"nonexistent\0")
    assert w.errno_of(group, V.VFIO_GROUP_GET_DEVICE_FD, BUF) == errno.ENODEV
    w.memory.write(BUF, b"0000:00:01.0\0")
    assert w.errno_of(group, V.VFIO_GROUP_GET_DEVICE_FD, BUF) == errno.EINVAL  # no container
    w.memory.write(BUF, b"x" * 4096)
    w.memory.map(BUF + 8192, 4096)
    assert w.errno_of(group, V.VFIO_GROUP_GET_DEVICE_FD, BUF) == errno.EINVAL  # no NUL in 4096


def test_iommufd_dispatch_rules() -> None:
    w = World()
    iommufd = w.open(FileKind.IOMMUFD)
    assert w.ioctl(iommufd, V.VFIO_GET_API_VERSION) == 0
    assert [w.ioctl(iommufd, V.VFIO_CHECK_EXTENSION, a) for a in (1, 3, 9, 6, 8, 10)] == [1, 1, 1, 0, 0, 0]
    assert w.errno_of(iommufd, V.VFIO_CHECK_EXTENSION, 4) == errno.ENODEV  # no compat IOAS
    assert w.errno_of(iommufd, V.VFIO_SET_IOMMU, 3) == errno.ENODEV
    assert w.errno_of(iommufd, V.VFIO_SET_IOMMU, 9) == errno.EINVAL
    assert w.errno_of(iommufd, 0x5401, BUF) == errno.ENOTTY  # nr < 0x80: compat switch
    assert w.errno_of(iommufd, I.IOMMU_DESTROY, 0) == errno.EFAULT  # size read first
    assert w.errno_of(iommufd, 0x3B95, 0) == errno.ENOTTY  # past the table: compat switch
    w.memory.write(BUF, struct.pack("<II", 8, 0))
    assert w.errno_of(iommufd, 0x80043B80, BUF) == errno.ENOTTY  # right nr, wrong cmd
    w.memory.write(BUF, struct.pack("<II", 4, 0))
    assert w.errno_of(iommufd, I.IOMMU_DESTROY, BUF) == errno.EINVAL  # below min size
    w.memory.write(BUF, struct.pack("<IIII", 16, 1, 0, 1))
    assert w.errno_of(iommufd, I.IOMMU_DESTROY, BUF) == errno.E2BIG  # non-zero tail
    w.memory.write(BUF, struct.pack("<IIII", 16, 1, 0, 0))
    assert w.errno_of(iommufd, I.IOMMU_DESTROY, BUF) == errno.ENOENT


def test_group_joins_an_iommufd_and_gets_a_compat_ioas() -> None:
    w = World()
    iommufd = w.open(FileKind.IOMMUFD)
    group = w.open(FileKind.GROUP, 1)
    w.attach(group, iommufd)
    assert w.ioctl(iommufd, V.VFIO_SET_IOMMU, 3) == 0
    assert w.ioctl(iommufd, V.VFIO_SET_IOMMU, 1) == 0  # may be repeated
    assert w.ioctl(iommufd, V.VFIO_CHECK_EXTENSION, 4) == 1  # no device, so no domain yet
    w.memory.write(BUF, struct.pack("<II", 8, 1))  # the compat IOAS is object 1
    assert w.ioctl(iommufd, I.IOMMU_DESTROY, BUF) == 0
    assert w.errno_of(iommufd, V.VFIO_CHECK_EXTENSION, 4) == errno.ENODEV


def test_unbound_cdev_answers_einval() -> None:
    w = World()
    cdev = w.open(FileKind.CDEV, "0000:00:01.0")
    for cmd in (V.VFIO_DEVICE_GET_INFO, V.VFIO_DEVICE_RESET, 0x5401):
        assert w.errno_of(cdev, cmd, 0) == errno.EINVAL
    assert w.errno_of(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, 0) == errno.EFAULT
    w.memory.write(BUF, struct.pack("<IIiI", 16, 0, -1, 0))
    assert w.errno_of(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, BUF) == errno.EINVAL
    w.fds[50] = FOREIGN
    w.memory.write(BUF, struct.pack("<IIiI", 16, 0, 50, 0))
    assert w.errno_of(cdev, V.VFIO_DEVICE_BIND_IOMMUFD, BUF) == errno.EBADFD
    with pytest.raises(KernelError) as excinfo:
        cdev.read(w.caller, 0, 8)  # type: ignore[attr-defined]
    assert excinfo.value.errno == errno.EINVAL
