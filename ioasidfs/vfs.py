"""The ioctls the VFS answers differently for our nodes than for the kernel's character devices.

The kernel's /dev/vfio/vfio, /dev/vfio/N, /dev/vfio/devices/vfioN and /dev/iommu are character
devices on devtmpfs whose driver has ``unlocked_ioctl``. Ours are FUSE *regular files*, and
``sys_ioctl`` (fs/ioctl.c, ``do_vfs_ioctl`` and ``file_ioctl``; fs/file_attr.c for the
fileattr ioctls; fs/remap_range.c for clone/dedupe) looks at the file type before any driver or
filesystem is asked. Each command below was checked against that source (upstream, the
6.17+ layout with fs/file_attr.c and ``IS_ANON_FILE``) and measured on this machine: on a
devtmpfs char device with a driver (/dev/net/tun answers EBADFD to unknown commands, so a
driver answer is recognisable), and on our FUSE nodes.

Trapped, answered by the driver (our engine) as on a char device (:data:`Route.DRIVER`):

``FIONREAD``
    ``do_vfs_ioctl``: ``!S_ISREG`` → ``vfs_ioctl`` (the driver); a regular file gets
    ``i_size - f_pos`` = 0 written. The container says EINVAL before SET_IOMMU, ENOTTY after.
``FIBMAP``, ``FS_IOC_RESVSP``, ``FS_IOC_RESVSP64``, ``FS_IOC_UNRESVSP``, ``FS_IOC_UNRESVSP64``, ``FS_IOC_ZERO_RANGE``
    ``file_ioctl`` runs only for regular files (bmap, fallocate; FUSE sends BMAP / FALLOCATE);
    a char device's driver gets them.
``FS_IOC_GETFLAGS``, ``FS_IOC_FSGETXATTR``
    ``vfs_fileattr_get`` returns ENOIOCTLCMD when the inode has no ``fileattr_get`` (devtmpfs
    special inodes have none), so the driver gets them. FUSE regular files have one: it *opens
    the node again* (FUSE_OPEN: EBUSY on a group) and sends its own FUSE_IOCTL.
``FS_IOC_SETFLAGS``, ``FS_IOC_FSSETXATTR``
    Same, after the VFS read the argument: ``get_user`` (EFAULT) for SETFLAGS;
    ``copy_fsxattr_from_user`` (EFAULT, then EOPNOTSUPP for xflags outside ``FS_XFLAGS_MASK``)
    for FSSETXATTR. :func:`driver_precheck` does those steps; /dev is writable, so
    ``mnt_want_write_file`` passes.

Trapped, answered by the VFS for a char device without reaching the driver (:data:`Route.VFS`,
:func:`chardev_ioctl`):

``FIOQSIZE``
    ENOTTY for anything but a directory, regular file or symlink; a regular file gets its size.
``FICLONE``, ``FICLONERANGE``, ``FIDEDUPERANGE``
    ``vfs_clone_file_range`` / ``vfs_dedupe_file_range`` reject a non-regular file with EINVAL
    (EXDEV, EISDIR, EBADF, EFAULT, ENOMEM in their order first); FUSE has no
    ``remap_file_range``, so our regular files get EOPNOTSUPP.
``FS_IOC_GETFSUUID``, ``FS_IOC_GETFSSYSFSPATH``
    Describe the *superblock*: devtmpfs has a UUID (ours, FUSE, has none: ENOTTY). We answer
    with /dev's, read once at start-up (:class:`DevFilesystem`).
``FIFREEZE``, ``FITHAW``
    ``ns_capable(sb->s_user_ns, CAP_SYS_ADMIN)`` first: a rootless run's FUSE superblock belongs
    to our user namespace, devtmpfs to the initial one (EPERM). Then devtmpfs cannot freeze
    (EOPNOTSUPP; measured on tmpfs, which devtmpfs is) and was never frozen (thaw: EINVAL).

Plus ``VFIO_GROUP_GET_DEVICE_FD``, trapped for another reason: its answer is a new fd.

Not trapped, because the answer is the same for both file types: ``FIOCLEX``, ``FIONCLEX``,
``FIONBIO`` (fd/file flags only), ``FIOASYNC`` (neither VFIO's nor FUSE's file_operations have
``fasync``), ``FIGETBSZ`` (devtmpfs and FUSE both have ``s_blocksize`` = PAGE_SIZE),
``FS_IOC_FIEMAP`` (no ``i_op->fiemap`` on either: EOPNOTSUPP). The fs-verity, GETVERSION and
every other command reach the driver on both (FUSE passes them to us).

Known differences left: FUSE itself copies a sized (``_IOW``/``_IOR``) command's argument before
and after asking us, so a bad pointer gives EFAULT where a driver that ignores the command says
ENOTTY; and 32-bit (compat) callers are not filtered at all.
"""
from __future__ import annotations

import enum
import errno
import fcntl
import os
import stat
import struct
from dataclasses import dataclass
from typing import Callable, Mapping

from .engine.caller import ClientMemory
from .errors import KernelError
from .uapi.ioctl import IO, IOR, IOW, IOWR

# Command numbers, x86_64 (generic) encoding, from include/uapi/linux/fs.h and asm-generic/ioctls.h.
FIONREAD = 0x541B
FIONBIO = 0x5421
FIONCLEX = 0x5450
FIOCLEX = 0x5451
FIOASYNC = 0x5452
FIOQSIZE = 0x5460
FIBMAP = IO(0, 1)
FIGETBSZ = IO(0, 2)
FIFREEZE = IOWR("X", 119, 4)
FITHAW = IOWR("X", 120, 4)
FICLONE = IOW(0x94, 9, 4)
FICLONERANGE = IOW(0x94, 13, 32)  # struct file_clone_range
FIDEDUPERANGE = IOWR(0x94, 54, 24)  # struct file_dedupe_range (header)
FS_IOC_FIEMAP = IOWR("f", 11, 32)  # struct fiemap (header)
FS_IOC_GETFLAGS = IOR("f", 1, 8)  # long
FS_IOC_SETFLAGS = IOW("f", 2, 8)
FS_IOC_FSGETXATTR = IOR("X", 31, 28)  # struct fsxattr
FS_IOC_FSSETXATTR = IOW("X", 32, 28)
FS_IOC_GETFSUUID = IOR(0x15, 0, 17)  # struct fsuuid2
FS_IOC_GETFSSYSFSPATH = IOR(0x15, 1, 129)  # struct fs_sysfs_path
FS_IOC_RESVSP = IOW("X", 40, 48)  # struct space_resv
FS_IOC_UNRESVSP = IOW("X", 41, 48)
FS_IOC_RESVSP64 = IOW("X", 42, 48)
FS_IOC_UNRESVSP64 = IOW("X", 43, 48)
FS_IOC_ZERO_RANGE = IOW("X", 57, 48)

FS_XFLAGS_MASK = 0x8001FFFB
"""include/linux/fileattr.h: COMMON | RDONLY | VALUES | DIRONLY | MISC xflags (6.18)."""
_FSUUID2_SIZE = 17
_FS_SYSFS_PATH_SIZE = 129
_FSXATTR_SIZE = 28
_PAGE_SIZE = 4096
_CLONE_RANGE = struct.Struct("<qQQQ")  # src_fd, src_offset, src_length, dest_offset
_DEDUPE_HEADER = 24
_DEDUPE_INFO = 32
_LOFF_MAX = (1 << 63) - 1


class Route(enum.Enum):
    DRIVER = "driver"  # the char device's driver answers: run it through the engine
    VFS = "vfs"  # the VFS answers a char device itself: chardev_ioctl()


@dataclass(frozen=True)
class Trap:
    name: str
    route: Route


TRAPPED: Mapping[int, Trap] = {
    cmd: Trap(name, route) for cmd, name, route in [
        (FIONREAD, "FIONREAD", Route.DRIVER),
        (FIBMAP, "FIBMAP", Route.DRIVER),
        (FS_IOC_RESVSP, "FS_IOC_RESVSP", Route.DRIVER),
        (FS_IOC_RESVSP64, "FS_IOC_RESVSP64", Route.DRIVER),
        (FS_IOC_UNRESVSP, "FS_IOC_UNRESVSP", Route.DRIVER),
        (FS_IOC_UNRESVSP64, "FS_IOC_UNRESVSP64", Route.DRIVER),
        (FS_IOC_ZERO_RANGE, "FS_IOC_ZERO_RANGE", Route.DRIVER),
        (FS_IOC_GETFLAGS, "FS_IOC_GETFLAGS", Route.DRIVER),
        (FS_IOC_SETFLAGS, "FS_IOC_SETFLAGS", Route.DRIVER),
        (FS_IOC_FSGETXATTR, "FS_IOC_FSGETXATTR", Route.DRIVER),
        (FS_IOC_FSSETXATTR, "FS_IOC_FSSETXATTR", Route.DRIVER),
        (FIOQSIZE, "FIOQSIZE", Route.VFS),
        (FICLONE, "FICLONE", Route.VFS),
        (FICLONERANGE, "FICLONERANGE", Route.VFS),
        (FIDEDUPERANGE, "FIDEDUPERANGE", Route.VFS),
        (FS_IOC_GETFSUUID, "FS_IOC_GETFSUUID", Route.VFS),
        (FS_IOC_GETFSSYSFSPATH, "FS_IOC_GETFSSYSFSPATH", Route.VFS),
        (FIFREEZE, "FIFREEZE", Route.VFS),
        (FITHAW, "FITHAW", Route.VFS),
    ]
}
"""Every command the VFS answers differently for a FUSE regular file than for a char device."""

NOT_TRAPPED: Mapping[int, str] = {
    FIOCLEX: "FIOCLEX", FIONCLEX: "FIONCLEX", FIONBIO: "FIONBIO", FIOASYNC: "FIOASYNC",
    FIGETBSZ: "FIGETBSZ", FS_IOC_FIEMAP: "FS_IOC_FIEMAP",
}
"""Generic commands the VFS answers the same way for both file types (see the module docs)."""


# ---------------------------------------------------------------------------- /dev's filesystem
@dataclass(frozen=True)
class DevFilesystem:
    """What the VFS would say about the filesystem the kernel's nodes live on (/dev).

    ``uuid`` / ``sysfs_path``: the raw ``struct fsuuid2`` / ``struct fs_sysfs_path`` its
    superblock reports, None where it answers ENOTTY. ``devices``: the st_dev numbers that count
    as "the same filesystem as the nodes" for FICLONE (the machine's /dev and, in ``ioasidfs
    run``, the tmpfs stacked on it). ``user_ns``: the user namespace (``/proc/PID/ns/user`` link)
    whose CAP_SYS_ADMIN may freeze it, None for nobody (a rootless run: devtmpfs belongs to
    the initial namespace, which we are not in). An approximation: we take the namespace
    ioasidfs started in.
    """

    uuid: bytes | None = None
    sysfs_path: bytes | None = None
    devices: frozenset[int] = frozenset()
    user_ns: str | None = None

    @classmethod
    def probe(cls, path: str = "/dev", *, user_ns: str | None = None) -> "DevFilesystem":
        """Ask the superblock of ``path`` (read-only queries, harmless on the machine's /dev)."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return cls(uuid=_query(fd, FS_IOC_GETFSUUID, _FSUUID2_SIZE),
                       sysfs_path=_query(fd, FS_IOC_GETFSSYSFSPATH, _FS_SYSFS_PATH_SIZE),
                       devices=frozenset({os.fstat(fd).st_dev}), user_ns=user_ns)
        finally:
            os.close(fd)

    def with_device(self, dev: int) -> "DevFilesystem":
        return DevFilesystem(self.uuid, self.sysfs_path, self.devices | {dev}, self.user_ns)


def _query(fd: int, cmd: int, size: int) -> bytes | None:
    buf = bytearray(size)
    try:
        fcntl.ioctl(fd, cmd, buf, True)
    except OSError:
        return None
    return bytes(buf)


# ---------------------------------------------------------------------------- answers
class Source(enum.Enum):
    """Where FICLONE's source fd lives, which is all the VFS looks at for a char-device target."""

    OTHER_FS = "another filesystem"  # EXDEV
    DEV_DIR = "a directory of /dev's filesystem"  # EISDIR
    DEV_OTHER = "a non-directory of /dev's filesystem"  # EINVAL: the target is not regular


@dataclass
class CharDevContext:
    """What :func:`chardev_ioctl` needs from the caller and the machine.

    ``source(fd)`` classifies an fd of the caller, raising KernelError(EBADF) for a closed one;
    ``can_admin()`` is ``ns_capable(/dev's user namespace, CAP_SYS_ADMIN)``.
    """

    memory: ClientMemory
    dev: DevFilesystem
    source: Callable[[int], Source]
    can_admin: Callable[[], bool]


def chardev_ioctl(cmd: int, arg: int, ctx: CharDevContext) -> int:
    """``sys_ioctl`` for a :data:`Route.VFS` command on a char device: the value, or KernelError."""
    if cmd == FIOQSIZE:
        raise KernelError(errno.ENOTTY, "FIOQSIZE: not a directory, regular file or symlink")
    if cmd in (FIFREEZE, FITHAW):
        if not ctx.can_admin():
            raise KernelError(errno.EPERM, "freezing /dev's filesystem needs CAP_SYS_ADMIN over it")
        if cmd == FIFREEZE:
            raise KernelError(errno.EOPNOTSUPP, "devtmpfs cannot be frozen")
        raise KernelError(errno.EINVAL, "devtmpfs is not frozen")
    if cmd == FS_IOC_GETFSUUID:
        return _copy_out(ctx.memory, arg, ctx.dev.uuid, "filesystem UUID")
    if cmd == FS_IOC_GETFSSYSFSPATH:
        return _copy_out(ctx.memory, arg, ctx.dev.sysfs_path, "sysfs path")
    if cmd == FICLONE:
        return _clone(ctx, arg, 0, 0, 0)
    if cmd == FICLONERANGE:
        src_fd, src_offset, src_length, dest_offset = _CLONE_RANGE.unpack(
            ctx.memory.read(arg, _CLONE_RANGE.size))
        return _clone(ctx, src_fd, src_offset, src_length, dest_offset)
    if cmd == FIDEDUPERANGE:
        (count,) = struct.unpack("<H", ctx.memory.read(arg + 16, 2))
        size = _DEDUPE_HEADER + _DEDUPE_INFO * count
        if size > _PAGE_SIZE:
            raise KernelError(errno.ENOMEM, f"FIDEDUPERANGE: {count} destinations exceed a page")
        ctx.memory.read(arg, size)  # memdup_user
        raise KernelError(errno.EINVAL, "FIDEDUPERANGE: the source is not a regular file")
    raise KernelError(errno.ENOTTY, f"{cmd:#x} is not answered by the VFS")


def _copy_out(memory: ClientMemory, arg: int, data: bytes | None, what: str) -> int:
    if data is None:
        raise KernelError(errno.ENOTTY, f"/dev's filesystem has no {what}")
    memory.write(arg, data)
    return 0


def _clone(ctx: CharDevContext, src_fd: int, pos_in: int, length: int, pos_out: int) -> int:
    """ioctl_file_clone → vfs_clone_file_range → do_clone_file_range, for a char-device target."""
    fd = src_fd & 0xFFFF_FFFF  # fdget() takes an unsigned int
    if fd > 0x7FFF_FFFF:
        raise KernelError(errno.EBADF, f"fd {fd} cannot be open")
    source = ctx.source(fd)
    for pos in (pos_in, pos_out):  # remap_verify_area(), source then target, as loff_t
        pos_s, len_s = _loff(pos), _loff(length)
        if pos_s < 0 or len_s < 0 or pos_s + len_s > _LOFF_MAX:
            raise KernelError(errno.EINVAL, "clone range is negative or overflows")
    if source is Source.OTHER_FS:
        raise KernelError(errno.EXDEV, "the source is on another filesystem")
    if source is Source.DEV_DIR:
        raise KernelError(errno.EISDIR, "the source is a directory")
    raise KernelError(errno.EINVAL, "the target is a character device, not a regular file")


def _loff(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def driver_precheck(cmd: int, arg: int, memory: ClientMemory) -> None:
    """What the VFS does with a :data:`Route.DRIVER` command before the driver sees it."""
    if cmd == FS_IOC_SETFLAGS:
        memory.read(arg, 4)  # get_user(flags)
    elif cmd == FS_IOC_FSSETXATTR:
        (xflags,) = struct.unpack_from("<I", memory.read(arg, _FSXATTR_SIZE))
        if xflags & ~FS_XFLAGS_MASK:
            raise KernelError(errno.EOPNOTSUPP, f"FS_IOC_FSSETXATTR: unknown xflags {xflags:#x}")


def source_of(mode: int, dev: int, filesystem: DevFilesystem) -> Source:
    """Classify a foreign source fd from its st_mode and st_dev."""
    if dev not in filesystem.devices:
        return Source.OTHER_FS
    return Source.DEV_DIR if stat.S_ISDIR(mode) else Source.DEV_OTHER
