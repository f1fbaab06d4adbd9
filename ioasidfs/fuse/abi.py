"""The FUSE and CUSE wire ABI as this kernel speaks it: numbers and byte layouts, nothing else.

Everything here is data. ``codec`` turns it into typed requests and replies, ``session`` decides
what to answer; keeping the layouts in one module means a kernel change touches one file.

All structures are little-endian with explicit padding (``x``) so that ``Struct.size`` equals the
kernel's ``sizeof``; the tests check those sizes against the numbers the kernel header implies.
"""
from __future__ import annotations

import enum
import struct
from typing import Final

FUSE_KERNEL_VERSION: Final = 7
"""The only protocol major there has ever been. An INIT of a higher major is answered with
ours (the kernel may retry); a lower one is refused."""

OUR_MAX_MINOR: Final = 41
"""Highest minor we speak. The session replies ``min(kernel minor, OUR_MAX_MINOR)``."""

MIN_SUPPORTED_MINOR: Final = 31
"""Oldest minor we accept. Every request body we parse has had its final size since 7.9 and
INIT has carried ``max_pages`` since 7.28, so above this floor no compatibility layouts are
needed; every kernel we run on is far newer (Debian's 6.1 speaks 7.37)."""

MIN_EXTLEN_MINOR: Final = 38
"""From 7.38 ``fuse_in_header.total_extlen`` counts request extensions (in 8-byte units) at the
end of a body; before that the field was padding and is ignored."""

ROOT_ID: Final = 1
"""Node id of the mount's root directory, fixed by the protocol."""

PAGE_SIZE: Final = 4096
"""Unit of INIT ``max_pages``; x86-64 only, which is all this project runs on."""

MIN_READ_BUFFER: Final = 8192
"""The kernel refuses a /dev/fuse read into a smaller buffer, even before INIT."""

MAX_ERRNO: Final = 511
"""The kernel rejects a reply whose negated ``error`` is outside 1..511 (``-512 < error``)."""

READLINK_MAX: Final = PAGE_SIZE - 1
"""Longest symbolic link target a READLINK reply may carry: the kernel reads the reply into one
page and keeps the last byte for the terminating NUL (fuse_readlink_page)."""

CUSE_INIT_INFO_MAX: Final = 4096
"""Maximum size of the ``KEY=value\\0`` device info that follows ``cuse_init_out``."""


class Opcode(enum.IntEnum):
    """Request opcodes (``fuse_in_header.opcode``); CUSE_INIT is the one CUSE-only request."""

    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SETUPMAPPING = 48
    REMOVEMAPPING = 49
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52
    COPY_FILE_RANGE_64 = 53
    CUSE_INIT = 4096


class InitFlag(enum.IntFlag):
    """INIT capability bits as one 64-bit value: ``flags | flags2 << 32``.

    The upper half travels in ``flags2`` and is only read by either side when ``INIT_EXT`` is
    set in the lower half, which is why the session adds ``INIT_EXT`` whenever it replies with
    any bit at or above 32.
    """

    ASYNC_READ = 1 << 0
    POSIX_LOCKS = 1 << 1
    FILE_OPS = 1 << 2
    ATOMIC_O_TRUNC = 1 << 3
    EXPORT_SUPPORT = 1 << 4
    BIG_WRITES = 1 << 5
    DONT_MASK = 1 << 6
    SPLICE_WRITE = 1 << 7
    SPLICE_MOVE = 1 << 8
    SPLICE_READ = 1 << 9
    FLOCK_LOCKS = 1 << 10
    HAS_IOCTL_DIR = 1 << 11
    AUTO_INVAL_DATA = 1 << 12
    DO_READDIRPLUS = 1 << 13
    READDIRPLUS_AUTO = 1 << 14
    ASYNC_DIO = 1 << 15
    WRITEBACK_CACHE = 1 << 16
    NO_OPEN_SUPPORT = 1 << 17
    PARALLEL_DIROPS = 1 << 18
    HANDLE_KILLPRIV = 1 << 19
    POSIX_ACL = 1 << 20
    ABORT_ERROR = 1 << 21
    MAX_PAGES = 1 << 22
    CACHE_SYMLINKS = 1 << 23
    NO_OPENDIR_SUPPORT = 1 << 24
    EXPLICIT_INVAL_DATA = 1 << 25
    MAP_ALIGNMENT = 1 << 26
    SUBMOUNTS = 1 << 27
    HANDLE_KILLPRIV_V2 = 1 << 28
    SETXATTR_EXT = 1 << 29
    INIT_EXT = 1 << 30
    INIT_RESERVED = 1 << 31
    SECURITY_CTX = 1 << 32
    HAS_INODE_DAX = 1 << 33
    CREATE_SUPP_GROUP = 1 << 34
    HAS_EXPIRE_ONLY = 1 << 35
    DIRECT_IO_ALLOW_MMAP = 1 << 36
    PASSTHROUGH = 1 << 37
    NO_EXPORT_SUPPORT = 1 << 38
    HAS_RESEND = 1 << 39
    ALLOW_IDMAP = 1 << 40
    OVER_IO_URING = 1 << 41
    REQUEST_TIMEOUT = 1 << 42


class CuseInitFlag(enum.IntFlag):
    """CUSE_INIT capability bits.

    Without ``UNRESTRICTED_IOCTL`` a CUSE ioctl arrives exactly like a FUSE one (restricted:
    raw ``arg``, inline data for sized commands), which lets both front ends share one engine.
    """

    UNRESTRICTED_IOCTL = 1 << 0


class FopenFlag(enum.IntFlag):
    """``fuse_open_out.open_flags``: how the kernel should treat one open file."""

    DIRECT_IO = 1 << 0
    KEEP_CACHE = 1 << 1
    NONSEEKABLE = 1 << 2
    CACHE_DIR = 1 << 3
    STREAM = 1 << 4
    NOFLUSH = 1 << 5
    PARALLEL_DIRECT_WRITES = 1 << 6
    PASSTHROUGH = 1 << 7


class SetattrValid(enum.IntFlag):
    """``fuse_setattr_in.valid``: which fields of a SETATTR request carry a new value."""

    MODE = 1 << 0
    UID = 1 << 1
    GID = 1 << 2
    SIZE = 1 << 3
    ATIME = 1 << 4
    MTIME = 1 << 5
    FH = 1 << 6
    ATIME_NOW = 1 << 7
    MTIME_NOW = 1 << 8
    LOCKOWNER = 1 << 9
    CTIME = 1 << 10
    KILL_SUIDGID = 1 << 11


class GetattrFlag(enum.IntFlag):
    """``fuse_getattr_in.getattr_flags``."""

    FH = 1 << 0


class ReleaseFlag(enum.IntFlag):
    """``fuse_release_in.release_flags``."""

    FLUSH = 1 << 0
    FLOCK_UNLOCK = 1 << 1


class IoctlFlag(enum.IntFlag):
    """``fuse_ioctl_in.flags`` / ``fuse_ioctl_out.flags``."""

    COMPAT = 1 << 0
    UNRESTRICTED = 1 << 1
    RETRY = 1 << 2
    BIT32 = 1 << 3
    DIR = 1 << 4
    COMPAT_X32 = 1 << 5


class PollFlag(enum.IntFlag):
    """``fuse_poll_in.flags``: SCHEDULE_NOTIFY asks for a NOTIFY_POLL wake-up on ``kh`` later."""

    SCHEDULE_NOTIFY = 1 << 0


class DirentType(enum.IntEnum):
    """``d_type`` values carried in ``fuse_dirent.type``; same numbers as ``DT_*`` in dirent.h."""

    UNKNOWN = 0
    FIFO = 1
    CHR = 2
    DIR = 4
    BLK = 6
    REG = 8
    LNK = 10
    SOCK = 12


# --------------------------------------------------------------------------- headers
IN_HEADER: Final = struct.Struct("<IIQQIIIHH")
"""fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding (40)."""

OUT_HEADER: Final = struct.Struct("<IiQ")
"""fuse_out_header: len, error (negative errno or 0), unique (16)."""

# --------------------------------------------------------------------------- request bodies
INIT_IN: Final = struct.Struct("<IIII")
"""fuse_init_in up to ``flags``: major, minor, max_readahead, flags (16)."""

INIT_IN_FLAGS2: Final = struct.Struct("<I")
"""fuse_init_in.flags2, right after INIT_IN, sent by kernels of 7.36 and later."""

CUSE_INIT_IN: Final = struct.Struct("<IIII")
"""cuse_init_in: major, minor, unused, flags (16)."""

FORGET_IN: Final = struct.Struct("<Q")
"""fuse_forget_in: nlookup (8)."""

BATCH_FORGET_IN: Final = struct.Struct("<II")
"""fuse_batch_forget_in: count, dummy (8); followed by ``count`` FORGET_ONE records."""

FORGET_ONE: Final = struct.Struct("<QQ")
"""fuse_forget_one: nodeid, nlookup (16)."""

GETATTR_IN: Final = struct.Struct("<IIQ")
"""fuse_getattr_in: getattr_flags, dummy, fh (16)."""

SETATTR_IN: Final = struct.Struct("<I4x6Q4I4xII4x")
"""fuse_setattr_in: valid, (padding), fh, size, lock_owner, atime, mtime, ctime,
atimensec, mtimensec, ctimensec, mode, (unused4), uid, gid, (unused5) (88)."""

OPEN_IN: Final = struct.Struct("<II")
"""fuse_open_in: flags, open_flags (8)."""

READ_IN: Final = struct.Struct("<QQIIQI4x")
"""fuse_read_in: fh, offset, size, read_flags, lock_owner, flags, padding (40).
READDIR and READDIRPLUS use the same body."""

WRITE_IN: Final = struct.Struct("<QQIIQI4x")
"""fuse_write_in: fh, offset, size, write_flags, lock_owner, flags, padding (40); data follows."""

FLUSH_IN: Final = struct.Struct("<Q8xQ")
"""fuse_flush_in: fh, (unused, padding), lock_owner (24)."""

RELEASE_IN: Final = struct.Struct("<QIIQ")
"""fuse_release_in: fh, flags, release_flags, lock_owner (24). RELEASEDIR uses it too."""

ACCESS_IN: Final = struct.Struct("<I4x")
"""fuse_access_in: mask, padding (8)."""

INTERRUPT_IN: Final = struct.Struct("<Q")
"""fuse_interrupt_in: unique of the request to interrupt (8)."""

IOCTL_IN: Final = struct.Struct("<QIIQII")
"""fuse_ioctl_in: fh, flags, cmd, arg, in_size, out_size (32); ``in_size`` bytes follow."""

POLL_IN: Final = struct.Struct("<QQII")
"""fuse_poll_in: fh, kh, flags, events (24)."""

# --------------------------------------------------------------------------- reply bodies
ATTR: Final = struct.Struct("<6Q10I")
"""fuse_attr: ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec, ctimensec,
mode, nlink, uid, gid, rdev, blksize, flags (88)."""

ENTRY_OUT: Final = struct.Struct("<QQQQII")
"""fuse_entry_out without its trailing fuse_attr: nodeid, generation, entry_valid,
attr_valid, entry_valid_nsec, attr_valid_nsec (40)."""

ATTR_OUT: Final = struct.Struct("<QI4x")
"""fuse_attr_out without its trailing fuse_attr: attr_valid, attr_valid_nsec, dummy (16)."""

OPEN_OUT: Final = struct.Struct("<QIi")
"""fuse_open_out: fh, open_flags, backing_id (16)."""

WRITE_OUT: Final = struct.Struct("<I4x")
"""fuse_write_out: size, padding (8)."""

STATFS_OUT: Final = struct.Struct("<5Q4I24x")
"""fuse_statfs_out (fuse_kstatfs): blocks, bfree, bavail, files, ffree, bsize, namelen,
frsize, padding, spare[6] (80)."""

IOCTL_OUT: Final = struct.Struct("<iIII")
"""fuse_ioctl_out: result, flags, in_iovs, out_iovs (16); output data follows."""

POLL_OUT: Final = struct.Struct("<I4x")
"""fuse_poll_out: revents, padding (8)."""

INIT_OUT: Final = struct.Struct("<IIIIHHIIHHII24x")
"""fuse_init_out: major, minor, max_readahead, flags, max_background, congestion_threshold,
max_write, time_gran, max_pages, map_alignment, flags2, max_stack_depth, reserved (64)."""

INIT_OUT_VERSION_ONLY: Final = struct.Struct("<II")
"""The first 8 bytes of fuse_init_out (major, minor): the whole reply to an INIT whose major
we do not speak, telling the kernel which major to retry with."""

CUSE_INIT_OUT: Final = struct.Struct("<IIIIIIII40x")
"""cuse_init_out: major, minor, unused, flags, max_read, max_write, dev_major, dev_minor,
spare[10] (72); the ``KEY=value\\0`` device info follows."""

DIRENT: Final = struct.Struct("<QQII")
"""fuse_dirent header: ino, off, namelen, type (24); the name follows, padded to 8 bytes."""

DIRENT_ALIGN: Final = 8
"""Every fuse_dirent / fuse_direntplus record is padded to a multiple of this."""
