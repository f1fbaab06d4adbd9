"""DevFs's side of trapped ioctls, without a mount: routing, the VFS pre-steps, new files.

Which open file a trapped fd is (``_identify``) needs a FUSE round trip and is covered end to end
(tests/e2e/test_seccomp_trap.py); here it is replaced by a table.
"""
from __future__ import annotations

import errno
import os
import struct

import pytest

from ioasidfs import vfs
from ioasidfs.config import load_config
from ioasidfs.devfs import DevFs, StagedFile, _Open
from ioasidfs.devtree import DevTree, Node
from ioasidfs.engine import Caller, Engine, FakeMemory, FileKind, OpenFile
from ioasidfs.errors import KernelError
from ioasidfs.fuse.session import RequestContext
from ioasidfs.uapi import vfio as V

BUF = 0x10000
PID = 4242


class NewContainerFile(OpenFile):
    """Stands in for a device file: a new file carried by the node of its kind and key."""

    kind = FileKind.GROUP
    node_key: object = 2

    def __init__(self) -> None:
        self.released = False

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        return 0

    def release(self) -> None:
        self.released = True


class MakesNewFiles(OpenFile):
    kind = FileKind.GROUP

    def __init__(self, kind: FileKind = FileKind.GROUP) -> None:
        self.made: list[NewContainerFile] = []
        self.new_kind = kind

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        new = NewContainerFile()
        new.kind = self.new_kind
        if self.new_kind is not FileKind.GROUP:
            new.node_key = None
        self.made.append(new)
        return new  # type: ignore[return-value]  # the devices work widens ioctl's result


class World:
    def __init__(self) -> None:
        config = load_config(None)
        self.tree = DevTree(config)
        self.engine = Engine(config, still_open=lambda f: True)
        self.memory = FakeMemory()
        self.memory.map(BUF, 4096)
        self.fs = DevFs(self.tree, self.engine, memory=lambda pid: self.memory)
        self.table: dict[int, _Open] = {}
        self.fs._identify = self._identify  # type: ignore[method-assign]

    def _identify(self, pid: int, fd: int) -> _Open | None:
        if fd == 99:
            raise KernelError(errno.EBADF, "closed")
        return self.table.get(fd)

    def node(self, path: str) -> Node:
        return next(n for n in self.tree.nodes.values() if n.path == path)

    def give(self, fd: int, path: str, file: OpenFile | None = None) -> _Open:
        node = self.node(path)
        if file is None:
            assert node.kind is not None
            file = self.engine.open(node.kind, node.key, Caller(PID, self.memory))
        self.table[fd] = _Open(file, node)
        return self.table[fd]

    def trapped(self, fd: int, cmd: int, arg: int = BUF) -> object:
        return self.fs.trapped_ioctl(PID, fd, cmd, arg)

    def errno_of(self, fd: int, cmd: int, arg: int = BUF) -> int:
        with pytest.raises(KernelError) as info:
            self.trapped(fd, cmd, arg)
        return info.value.errno


def test_foreign_or_closed_fds_are_left_to_the_kernel() -> None:
    w = World()
    assert w.trapped(5, vfs.FIONREAD) is None
    assert w.trapped(99, vfs.FIONREAD) is None


def test_driver_route_reaches_the_engine_like_a_fuse_ioctl() -> None:
    w = World()
    w.give(3, "/dev/vfio/vfio")
    w.give(4, "/dev/vfio/1")
    w.give(5, "/dev/iommu")
    assert w.errno_of(3, vfs.FIONREAD) == errno.EINVAL  # container before SET_IOMMU
    assert w.errno_of(4, vfs.FIONREAD) == errno.ENOTTY  # group
    assert w.errno_of(5, vfs.FIONREAD) == errno.ENOTTY  # iommufd
    assert w.errno_of(4, vfs.FS_IOC_GETFLAGS, 0) == errno.ENOTTY  # no memory access
    assert w.errno_of(4, vfs.FS_IOC_SETFLAGS, 0) == errno.EFAULT  # the VFS's get_user
    w.memory.write(BUF, struct.pack("<I", 1 << 2))
    assert w.errno_of(4, vfs.FS_IOC_FSSETXATTR) == errno.EOPNOTSUPP  # unknown xflag
    assert w.trapped(3, V.VFIO_GET_API_VERSION) == 0  # any command still reaches the driver


def test_vfs_route_never_reaches_the_engine() -> None:
    w = World()
    w.give(3, "/dev/vfio/1", MakesNewFiles())
    assert w.errno_of(3, vfs.FIOQSIZE) == errno.ENOTTY
    assert w.errno_of(3, vfs.FS_IOC_GETFSUUID) == errno.ENOTTY  # no /dev probed
    assert w.errno_of(3, vfs.FIFREEZE) == errno.EPERM  # nobody may freeze an unprobed /dev


def test_a_new_file_is_staged_and_carried_by_our_own_open() -> None:
    w = World()
    maker = MakesNewFiles()
    w.give(4, "/dev/vfio/1", maker)
    staged = w.trapped(4, V.VFIO_GROUP_GET_DEVICE_FD)
    assert isinstance(staged, StagedFile)
    assert staged.file is maker.made[0] and staged.node.path == "/dev/vfio/2"
    # Our worker thread's open of the node carries the staged file; anyone else's does not.
    w.fs._staged[777] = staged
    other = w.fs.open(RequestContext(pid=778, uid=0, gid=0, unique=1), staged.node.ino, os.O_RDWR)
    assert w.fs.opens[other.fh].file is not staged.file
    mine = w.fs.open(RequestContext(pid=777, uid=0, gid=0, unique=2), staged.node.ino, os.O_RDWR)
    assert w.fs.opens[mine.fh].file is staged.file and staged.claimed
    staged.abandon()  # too late: the open owns it now
    assert not maker.made[0].released


def test_an_unopened_new_file_is_released_when_abandoned() -> None:
    w = World()
    maker = MakesNewFiles()
    w.give(4, "/dev/vfio/1", maker)
    staged = w.trapped(4, V.VFIO_GROUP_GET_DEVICE_FD)
    assert isinstance(staged, StagedFile)
    staged.abandon()
    assert maker.made[0].released


def test_a_new_file_without_a_node_to_carry_it() -> None:
    w = World()
    maker = MakesNewFiles(FileKind.DEVICE)  # a device file that names no device
    w.give(4, "/dev/vfio/1", maker)
    assert w.errno_of(4, V.VFIO_GROUP_GET_DEVICE_FD) == errno.EOPNOTSUPP
    assert maker.made[0].released


def test_a_fuse_ioctl_cannot_hand_out_a_new_file() -> None:
    w = World()
    maker = MakesNewFiles()
    node = w.node("/dev/vfio/1")
    w.fs.opens[1] = _Open(maker, node)
    with pytest.raises(KernelError) as info:
        w.fs.ioctl(RequestContext(pid=PID, uid=0, gid=0, unique=1), node.ino, 1,
                   V.VFIO_GROUP_GET_DEVICE_FD, BUF, b"", 0)
    assert info.value.errno == errno.EOPNOTSUPP
    assert maker.made[0].released


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount in a private namespace")
def test_the_mount_table_cache_sees_mounts_and_unmounts() -> None:
    script = (
        "import subprocess\n"
        "from ioasidfs.devfs import _mounts\n"
        "before = set(_mounts())\n"
        "subprocess.run(['mount', '-t', 'tmpfs', 'none', '/mnt'], check=True)\n"
        "during = set(_mounts())\n"
        "subprocess.run(['umount', '/mnt'], check=True)\n"
        "after = set(_mounts())\n"
        "assert len(during - before) == 1 and after == before, (before, during, after)\n")
    import subprocess
    import sys
    from pathlib import Path
    result = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", script],
                            capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr
