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


# ---------------------------------------------------------------------------- trapped mmap
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
PROT_READ, PROT_WRITE, PROT_EXEC = 0x1, 0x2, 0x4


class MmapWorld(World):
    """Real fds of this process (/dev/null, opened with the mode under test) stand for the
    caller's: trapped_mmap reads the open mode from /proc/PID/fdinfo."""

    def __init__(self) -> None:
        super().__init__()
        self.fds: list[int] = []

    def give_open(self, path: str, mode: int = os.O_RDWR, file: OpenFile | None = None) -> int:
        fd = os.open("/dev/null", mode | os.O_CLOEXEC)
        self.fds.append(fd)
        self.give(fd, path, file)
        return fd

    def mmap(self, fd: int, flags: int, length: int = 4096, prot: int = PROT_READ | PROT_WRITE,
             offset: int = 0) -> int | None:
        return self.fs.trapped_mmap(os.getpid(), fd, length, prot, flags, offset)

    def mmap_errno(self, fd: int, flags: int, **kw: int) -> int:
        with pytest.raises(KernelError) as info:
            self.mmap(fd, flags, **kw)
        return info.value.errno

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@pytest.fixture
def mw():
    w = MmapWorld()
    yield w
    w.close()


@pytest.mark.parametrize("path", ["/dev/vfio/vfio", "/dev/vfio/1", "/dev/vfio/devices/vfio0",
                                  "/dev/iommu", "/dev/ioasid"])
def test_mmap_of_every_node_as_the_kernel_answers(mw: MmapWorld, path: str) -> None:
    fd = mw.give_open(path)
    if path in ("/dev/vfio/vfio", "/dev/vfio/1"):  # no .mmap
        assert mw.mmap_errno(fd, MAP_SHARED) == errno.ENODEV
        assert mw.mmap_errno(fd, MAP_PRIVATE) == errno.ENODEV
        assert mw.mmap_errno(fd, MAP_SHARED | 0x100) == errno.ENODEV  # MAP_GROWSDOWN: after ENODEV
    elif path == "/dev/vfio/devices/vfio0":  # vfio_device_fops_mmap: not bound
        assert mw.mmap_errno(fd, MAP_SHARED) == errno.EINVAL
        assert mw.mmap_errno(fd, MAP_PRIVATE) == errno.EINVAL
    else:  # iommufd_fops_mmap (upstream): nothing allocated at any offset
        assert mw.mmap_errno(fd, MAP_SHARED) == errno.ENXIO
        assert mw.mmap_errno(fd, MAP_SHARED, offset=0x10000) == errno.ENXIO
        assert mw.mmap_errno(fd, MAP_PRIVATE) == errno.EINVAL
        assert mw.mmap_errno(fd, MAP_SHARED, prot=PROT_READ | PROT_EXEC) == errno.EPERM
        assert mw.mmap_errno(fd, MAP_SHARED | 0x100) == errno.EINVAL  # VM_GROWSDOWN
    # The VFS's checks come first, whatever the node.
    assert mw.mmap_errno(fd, MAP_SHARED, offset=0x800) == errno.EINVAL
    assert mw.mmap_errno(fd, MAP_SHARED, length=0) == errno.EINVAL
    assert mw.mmap_errno(fd, MAP_SHARED, length=2**64 - 1) == errno.ENOMEM
    assert mw.mmap_errno(fd, 0) == errno.EINVAL  # no map type
    assert mw.mmap_errno(fd, 0x3 | 0x80000) == errno.EOPNOTSUPP  # SHARED_VALIDATE | MAP_SYNC
    assert mw.mmap_errno(fd, MAP_PRIVATE | 0x40000) == errno.EINVAL  # MAP_HUGETLB
    # A character device's range may reach 2^64 - 1 (not a regular file's 2^63)...
    assert mw.mmap_errno(fd, MAP_PRIVATE, offset=2**64 - 0x2000) == \
        (errno.ENODEV if path in ("/dev/vfio/vfio", "/dev/vfio/1") else errno.EINVAL)
    # ... but no further.
    assert mw.mmap_errno(fd, MAP_PRIVATE, offset=2**64 - 0x1000, length=0x2000) == errno.EOVERFLOW


def test_mmap_follows_the_open_mode(mw: MmapWorld) -> None:
    ro = mw.give_open("/dev/iommu", os.O_RDONLY)
    wo = mw.give_open("/dev/iommu", os.O_WRONLY)
    # A writable shared map of a read-only file: EACCES; a read-only one is shared in name only
    # (do_mmap drops VM_SHARED), so iommufd says EINVAL as for MAP_PRIVATE.
    assert mw.mmap_errno(ro, MAP_SHARED, prot=PROT_READ | PROT_WRITE) == errno.EACCES
    assert mw.mmap_errno(ro, MAP_SHARED, prot=PROT_READ) == errno.EINVAL
    assert mw.mmap_errno(wo, MAP_SHARED) == errno.EACCES  # not open for reading
    assert mw.mmap_errno(wo, MAP_PRIVATE) == errno.EACCES
    group = mw.give_open("/dev/vfio/1", os.O_RDONLY)
    assert mw.mmap_errno(group, MAP_SHARED, prot=PROT_WRITE) == errno.EACCES  # before ENODEV


def test_mmap_of_a_device_fd_is_einval(mw: MmapWorld) -> None:
    device = NewContainerFile()
    device.kind = FileKind.DEVICE
    fd = mw.give_open("/dev/vfio/1", file=device)
    assert mw.mmap_errno(fd, MAP_SHARED) == errno.EINVAL
    assert mw.mmap_errno(fd, MAP_PRIVATE) == errno.EINVAL
    assert mw.mmap_errno(fd, MAP_SHARED, offset=1 << 40) == errno.EINVAL  # region 1


def test_mmap_locked_needs_memlock(mw: MmapWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    fd = mw.give_open("/dev/vfio/vfio")
    limits = {"limit": 0, "cap": False, "locked": 0}

    def caller_for(pid: int, memory: object = None) -> Caller:
        return Caller(pid, w_memory, memlock_limit=lambda: limits["limit"],
                      can_lock_memory=lambda: limits["cap"], locked_pages=lambda: limits["locked"])

    w_memory = mw.memory
    monkeypatch.setattr(mw.fs, "_caller_for", caller_for)
    MAP_LOCKED = 0x2000
    assert mw.mmap_errno(fd, MAP_SHARED | MAP_LOCKED) == errno.EPERM
    limits["cap"] = True
    assert mw.mmap_errno(fd, MAP_SHARED | MAP_LOCKED) == errno.ENODEV
    limits.update(cap=False, limit=8192, locked=1)
    assert mw.mmap_errno(fd, MAP_SHARED | MAP_LOCKED, length=8192) == errno.EAGAIN
    assert mw.mmap_errno(fd, MAP_SHARED | MAP_LOCKED, length=4096) == errno.ENODEV
    limits["limit"] = -1  # RLIM_INFINITY
    assert mw.mmap_errno(fd, MAP_SHARED | MAP_LOCKED, length=1 << 30) == errno.ENODEV


def test_mmap_of_files_that_are_no_kernel_node_or_not_ours_runs_for_real(mw: MmapWorld) -> None:
    faults = mw.give_open("/dev/faults", os.O_RDONLY)
    assert mw.mmap(faults, MAP_SHARED) is None
    assert mw.mmap(faults, MAP_PRIVATE) is None
    sysfs = next(n for n in mw.tree.nodes.values() if n.kind is FileKind.SYSFS)
    fd = mw.give_open(sysfs.path, os.O_RDONLY)
    assert mw.mmap(fd, MAP_PRIVATE) is None
    assert mw.fs.trapped_mmap(os.getpid(), 1234, 4096, PROT_READ, MAP_SHARED, 0) is None  # foreign
    assert mw.fs.trapped_mmap(os.getpid(), 99, 4096, PROT_READ, MAP_SHARED, 0) is None  # closed


def test_a_refused_mmap_is_logged(mw: MmapWorld, caplog: pytest.LogCaptureFixture) -> None:
    fd = mw.give_open("/dev/vfio/1")
    with caplog.at_level("INFO", logger="ioasidfs"):
        mw.mmap_errno(fd, MAP_PRIVATE, offset=0x3000)
    assert "mmap(/dev/vfio/1, 0x1000, prot=0x3, flags=0x2, off=0x3000) = -1 ENODEV" in caplog.text


# ----------------------------------------------------------------- pread/pwrite of CUSE nodes

class Regions(OpenFile):
    """Stands for a bound device cdev: records where reads and writes land; ``fail_at`` makes
    the access at that offset fail (EIO) and ``short`` makes every read return that much."""

    kind = FileKind.CDEV

    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, bytes]] = []
        self.fail_at: int | None = None
        self.short: int | None = None

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        raise KernelError(errno.ENOTTY, "no ioctls here")

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        if offset == self.fail_at:
            raise KernelError(errno.EIO, "device gone")
        self.reads.append((offset, size))
        n = size if self.short is None else min(size, self.short)
        return bytes((offset + i) & 0xFF for i in range(n))

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        if offset == self.fail_at:
            raise KernelError(errno.EIO, "device gone")
        self.writes.append((offset, data))
        return len(data)


CFG_REGION = V.VFIO_PCI_CONFIG_REGION_INDEX << 40
BIG = 0x100000   # 1 MiB of fake client memory for the piecewise transfers
BIG_BUF = 0x1000000


def cdev_over_cuse(w: MmapWorld, mode: int = os.O_RDWR) -> tuple[int, Regions]:
    regions = Regions()
    fd = w.give_open("/dev/vfio/devices/vfio0", mode, regions)
    w.fs._cuse_inodes = frozenset({w.node("/dev/vfio/devices/vfio0").ino})
    return fd, regions


def rw(w: MmapWorld, fd: int, write: bool, count: int, offset: int, buf: int = BUF) -> int | None:
    return w.fs.trapped_rw(os.getpid(), fd, write, buf, count, offset)


def rw_errno(w: MmapWorld, fd: int, write: bool, count: int, offset: int, buf: int = BUF) -> int:
    with pytest.raises(KernelError) as info:
        rw(w, fd, write, count, offset, buf)
    return info.value.errno


def test_pread_pwrite_of_a_cuse_cdev_keep_their_position(mw: MmapWorld) -> None:
    fd, regions = cdev_over_cuse(mw)
    assert rw(mw, fd, False, 16, CFG_REGION + 0x40) == 16
    assert regions.reads == [(CFG_REGION + 0x40, 16)]
    assert mw.memory.read(BUF, 16) == bytes(range(0x40, 0x50))
    mw.memory.write(BUF, b"\x06\x01")
    assert rw(mw, fd, True, 2, CFG_REGION + 4) == 2
    assert regions.writes == [(CFG_REGION + 4, b"\x06\x01")]


def test_pread_pwrite_the_vfs_checks_first(mw: MmapWorld) -> None:
    fd, regions = cdev_over_cuse(mw, os.O_RDONLY)
    assert rw_errno(mw, fd, True, 4, 0) == errno.EBADF          # not open for writing
    wfd, _ = cdev_over_cuse(mw, os.O_WRONLY)
    assert rw_errno(mw, wfd, False, 4, 0) == errno.EBADF        # not open for reading
    assert rw_errno(mw, fd, False, 8, 0, buf=(1 << 47) - 4) == errno.EFAULT  # not user memory
    assert rw_errno(mw, fd, False, 16, (1 << 63) - 8) == errno.EINVAL        # past LLONG_MAX
    assert regions.reads == []


def test_pread_pwrite_of_other_files_run_for_real(mw: MmapWorld) -> None:
    fd, _ = cdev_over_cuse(mw)
    assert rw(mw, fd, False, 4, -1) is None                     # EINVAL for any fd: the kernel's
    assert rw(mw, 12345, False, 4, 0) is None                   # not one of ours
    fuse = mw.give_open("/dev/vfio/1")                          # ours, but FUSE keeps positions
    assert rw(mw, fuse, False, 4, 0) is None


def test_a_long_pread_moves_in_pieces_and_stops_short(mw: MmapWorld) -> None:
    fd, regions = cdev_over_cuse(mw)
    mw.memory.map(BIG_BUF, BIG)
    assert rw(mw, fd, False, 300 * 1024, 0, BIG_BUF) == 300 * 1024
    assert regions.reads == [(0, 128 * 1024), (128 * 1024, 128 * 1024), (256 * 1024, 44 * 1024)]
    regions.reads.clear()
    regions.short = 1000                                         # the driver moves less: done
    assert rw(mw, fd, False, 300 * 1024, 0, BIG_BUF) == 1000
    assert regions.reads == [(0, 128 * 1024)]


def test_a_failure_after_some_bytes_is_the_count_moved(mw: MmapWorld) -> None:
    fd, regions = cdev_over_cuse(mw)
    mw.memory.map(BIG_BUF, BIG)
    regions.fail_at = 128 * 1024
    assert rw(mw, fd, True, 200 * 1024, 0, BIG_BUF) == 128 * 1024
    regions.fail_at = 0
    assert rw_errno(mw, fd, True, 200 * 1024, 0, BIG_BUF) == errno.EIO
