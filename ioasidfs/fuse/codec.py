"""Bytes <-> typed FUSE messages, with no I/O and no policy.

``parse_request`` turns one read from /dev/fuse into a frozen request object; the ``*_reply``
functions turn answers into the exact bytes of one write to /dev/fuse. Deciding *what* to answer
is ``session``'s job; doing the reads and writes is the I/O layer's.

Parsing is on the path of every ioctl, so it does one header unpack, one dictionary lookup and
one body unpack per request, with every ``struct.Struct`` compiled at import time. Parsed objects
own their bytes (names, write data and ioctl input are copied out), so the caller may reuse its
read buffer as soon as ``parse_request`` returns.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
import struct
from typing import Final, TypeAlias

from ioasidfs.errors import ProtocolError
from ioasidfs.fuse import abi

ReadBuffer: TypeAlias = bytes | bytearray | memoryview
"""What one read from /dev/fuse may be handed over as."""

NAME_MAX: Final = 1024
"""Longest name the kernel accepts in a dirent (FUSE_NAME_MAX); longer ones fail the readdir."""

_HEADER_SIZE: Final = abi.IN_HEADER.size
_NO_REPLY_OPCODES: Final = frozenset({abi.Opcode.FORGET, abi.Opcode.BATCH_FORGET,
                                      abi.Opcode.INTERRUPT})


# =========================================================================== requests
@dataclass(frozen=True, slots=True)
class RequestHeader:
    """The fields of fuse_in_header every handler may need.

    ``pid`` is the calling *thread* id (0 for RELEASE, which the kernel sends from its own
    context); ``nodeid`` is the inode the request is about (0 for CUSE, which has no inodes).
    """

    length: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int


@dataclass(frozen=True, slots=True)
class Init:
    """FUSE_INIT. ``flags`` already has ``flags2 << 32`` merged in when the kernel sent it."""

    header: RequestHeader
    major: int
    minor: int
    max_readahead: int
    flags: int


@dataclass(frozen=True, slots=True)
class CuseInit:
    """CUSE_INIT: the first request on /dev/cuse, answered with the device's identity."""

    header: RequestHeader
    major: int
    minor: int
    flags: int


@dataclass(frozen=True, slots=True)
class Lookup:
    """Resolve ``name`` in directory ``header.nodeid``; a success adds one to its lookup count."""

    header: RequestHeader
    name: bytes


@dataclass(frozen=True, slots=True)
class Forget:
    """The kernel drops ``nlookup`` references to ``header.nodeid``. Never answered."""

    header: RequestHeader
    nlookup: int


@dataclass(frozen=True, slots=True)
class BatchForget:
    """Several FORGETs at once, as ``(nodeid, nlookup)`` pairs. Never answered."""

    header: RequestHeader
    items: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class GetAttr:
    """stat(). ``fh`` is set when the kernel asks through an open file (fstat)."""

    header: RequestHeader
    fh: int | None


@dataclass(frozen=True, slots=True)
class SetAttr:
    """chmod/chown/truncate/utimes. Each optional field is None unless ``valid`` marks it.

    Times are nanoseconds since the epoch; ``valid`` still carries ATIME_NOW / MTIME_NOW.
    """

    header: RequestHeader
    valid: int
    fh: int | None
    size: int | None
    mode: int | None
    uid: int | None
    gid: int | None
    atime_ns: int | None
    mtime_ns: int | None


@dataclass(frozen=True, slots=True)
class Open:
    """open() of a non-directory; ``flags`` are the caller's O_* flags."""

    header: RequestHeader
    flags: int


@dataclass(frozen=True, slots=True)
class Read:
    """read()/pread(); ``flags`` are the O_* flags of the open file."""

    header: RequestHeader
    fh: int
    offset: int
    size: int
    flags: int


@dataclass(frozen=True, slots=True)
class Write:
    """write()/pwrite(); ``flags`` are the O_* flags of the open file."""

    header: RequestHeader
    fh: int
    offset: int
    data: bytes
    flags: int


@dataclass(frozen=True, slots=True)
class Flush:
    """Sent on every close() of every duplicate of an open file (unless FOPEN_NOFLUSH)."""

    header: RequestHeader
    fh: int
    lock_owner: int


@dataclass(frozen=True, slots=True)
class Release:
    """The last reference to an open file is gone (asynchronously on plain FUSE mounts)."""

    header: RequestHeader
    fh: int
    flags: int
    release_flags: int
    lock_owner: int


@dataclass(frozen=True, slots=True)
class Ioctl:
    """ioctl(). In restricted mode ``arg`` is the caller's raw third argument and ``in_data``
    holds ``in_size`` bytes the kernel copied in for a sized (_IOW/_IOWR) command; the reply
    may carry at most ``out_size`` bytes back."""

    header: RequestHeader
    fh: int
    flags: int
    cmd: int
    arg: int
    in_data: bytes
    in_size: int
    out_size: int


@dataclass(frozen=True, slots=True)
class Poll:
    """poll()/select()/epoll on an open file; ``kh`` identifies it for a later NOTIFY_POLL."""

    header: RequestHeader
    fh: int
    kh: int
    flags: int
    events: int


@dataclass(frozen=True, slots=True)
class OpenDir:
    """opendir(); ``flags`` are the caller's O_* flags."""

    header: RequestHeader
    flags: int


@dataclass(frozen=True, slots=True)
class ReadDir:
    """getdents(): entries from ``offset`` on, at most ``size`` bytes of them."""

    header: RequestHeader
    fh: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class ReadDirPlus:
    """Like ReadDir, but every entry also carries a lookup result (only if negotiated)."""

    header: RequestHeader
    fh: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class ReleaseDir:
    """closedir() of the last reference to an open directory."""

    header: RequestHeader
    fh: int


@dataclass(frozen=True, slots=True)
class ReadLink:
    """readlink() of the symbolic link ``header.nodeid`` (also sent when a path walk follows
    it). No body; answered with the target's bytes."""

    header: RequestHeader


@dataclass(frozen=True, slots=True)
class StatFs:
    """statfs() on the mount."""

    header: RequestHeader


@dataclass(frozen=True, slots=True)
class Access:
    """access()/faccessat() with R_OK/W_OK/X_OK bits in ``mask``."""

    header: RequestHeader
    mask: int


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The caller of request ``target_unique`` got a signal. Never answered itself."""

    header: RequestHeader
    target_unique: int


@dataclass(frozen=True, slots=True)
class Destroy:
    """The connection is being shut down (not sent on plain ``fuse`` mounts)."""

    header: RequestHeader


@dataclass(frozen=True, slots=True)
class Unknown:
    """Any opcode we do not implement; it is answered with ENOSYS, which makes the kernel
    stop sending e.g. GETXATTR, FSYNC or FLUSH and behave as if they succeeded."""

    header: RequestHeader
    opcode: int
    body: bytes


Request: TypeAlias = (Init | CuseInit | Lookup | Forget | BatchForget | GetAttr | SetAttr | Open
                      | Read | Write | Flush | Release | Ioctl | Poll | OpenDir | ReadDir
                      | ReadDirPlus | ReleaseDir | ReadLink | StatFs | Access | Interrupt
                      | Destroy | Unknown)


class MalformedRequest(ProtocolError):
    """A request whose header parsed but whose body did not.

    The request was still read from the kernel, so its caller is blocked until it gets an answer;
    ``header`` lets the session send one (EIO) instead of leaving the caller hung.
    """

    def __init__(self, header: RequestHeader, message: str) -> None:
        super().__init__(f"opcode {header.opcode} unique {header.unique}: {message}")
        self.header = header

    @property
    def expects_reply(self) -> bool:
        """False for the opcodes the kernel never waits an answer for."""
        return self.header.opcode not in _NO_REPLY_OPCODES


# --------------------------------------------------------------------------- body parsers
# Each parser gets the header, the whole buffer and the end of the body (extensions excluded);
# parse_request has already checked that the fixed part of the body is present.
_BodyParser: TypeAlias = Callable[[RequestHeader, ReadBuffer, int], Request]


def _parse_init(header: RequestHeader, buf: ReadBuffer, end: int) -> Init:
    major, minor, max_readahead, flags = abi.INIT_IN.unpack_from(buf, _HEADER_SIZE)
    flags2_at = _HEADER_SIZE + abi.INIT_IN.size
    if flags & abi.InitFlag.INIT_EXT and flags2_at + abi.INIT_IN_FLAGS2.size <= end:
        (flags2,) = abi.INIT_IN_FLAGS2.unpack_from(buf, flags2_at)
        flags |= flags2 << 32
    return Init(header, major, minor, max_readahead, flags)


def _parse_cuse_init(header: RequestHeader, buf: ReadBuffer, end: int) -> CuseInit:
    major, minor, _unused, flags = abi.CUSE_INIT_IN.unpack_from(buf, _HEADER_SIZE)
    return CuseInit(header, major, minor, flags)


def _parse_lookup(header: RequestHeader, buf: ReadBuffer, end: int) -> Lookup:
    body = bytes(buf[_HEADER_SIZE:end])
    name_end = body.find(0)
    if name_end <= 0:
        raise MalformedRequest(header, "name is empty or not NUL-terminated")
    return Lookup(header, body[:name_end])


def _parse_forget(header: RequestHeader, buf: ReadBuffer, end: int) -> Forget:
    (nlookup,) = abi.FORGET_IN.unpack_from(buf, _HEADER_SIZE)
    return Forget(header, nlookup)


def _parse_batch_forget(header: RequestHeader, buf: ReadBuffer, end: int) -> BatchForget:
    count, _dummy = abi.BATCH_FORGET_IN.unpack_from(buf, _HEADER_SIZE)
    start = _HEADER_SIZE + abi.BATCH_FORGET_IN.size
    stop = start + count * abi.FORGET_ONE.size
    if stop > end:
        raise MalformedRequest(header, f"{count} forget records do not fit in the body")
    items = tuple(abi.FORGET_ONE.iter_unpack(buf[start:stop]))
    return BatchForget(header, items)


def _parse_getattr(header: RequestHeader, buf: ReadBuffer, end: int) -> GetAttr:
    getattr_flags, _dummy, fh = abi.GETATTR_IN.unpack_from(buf, _HEADER_SIZE)
    return GetAttr(header, fh if getattr_flags & abi.GetattrFlag.FH else None)


def _parse_setattr(header: RequestHeader, buf: ReadBuffer, end: int) -> SetAttr:
    (valid, fh, size, _lock_owner, atime, mtime, _ctime, atimensec, mtimensec, _ctimensec,
     mode, uid, gid) = abi.SETATTR_IN.unpack_from(buf, _HEADER_SIZE)
    flag = abi.SetattrValid
    return SetAttr(
        header, valid,
        fh=fh if valid & flag.FH else None,
        size=size if valid & flag.SIZE else None,
        mode=mode if valid & flag.MODE else None,
        uid=uid if valid & flag.UID else None,
        gid=gid if valid & flag.GID else None,
        atime_ns=atime * 1_000_000_000 + atimensec if valid & flag.ATIME else None,
        mtime_ns=mtime * 1_000_000_000 + mtimensec if valid & flag.MTIME else None,
    )


def _parse_open(header: RequestHeader, buf: ReadBuffer, end: int) -> Open:
    flags, _open_flags = abi.OPEN_IN.unpack_from(buf, _HEADER_SIZE)
    return Open(header, flags)


def _parse_opendir(header: RequestHeader, buf: ReadBuffer, end: int) -> OpenDir:
    flags, _open_flags = abi.OPEN_IN.unpack_from(buf, _HEADER_SIZE)
    return OpenDir(header, flags)


def _parse_read(header: RequestHeader, buf: ReadBuffer, end: int) -> Read:
    fh, offset, size, _read_flags, _lock_owner, flags = abi.READ_IN.unpack_from(buf, _HEADER_SIZE)
    return Read(header, fh, offset, size, flags)


def _parse_readdir(header: RequestHeader, buf: ReadBuffer, end: int) -> ReadDir:
    fh, offset, size, _read_flags, _lock_owner, _flags = abi.READ_IN.unpack_from(buf, _HEADER_SIZE)
    return ReadDir(header, fh, offset, size)


def _parse_readdirplus(header: RequestHeader, buf: ReadBuffer, end: int) -> ReadDirPlus:
    fh, offset, size, _read_flags, _lock_owner, _flags = abi.READ_IN.unpack_from(buf, _HEADER_SIZE)
    return ReadDirPlus(header, fh, offset, size)


def _parse_write(header: RequestHeader, buf: ReadBuffer, end: int) -> Write:
    fh, offset, size, _write_flags, _lock_owner, flags = abi.WRITE_IN.unpack_from(
        buf, _HEADER_SIZE)
    start = _HEADER_SIZE + abi.WRITE_IN.size
    if start + size != end:
        raise MalformedRequest(header, f"write of {size} bytes carries {end - start}")
    return Write(header, fh, offset, bytes(buf[start:end]), flags)


def _parse_flush(header: RequestHeader, buf: ReadBuffer, end: int) -> Flush:
    fh, lock_owner = abi.FLUSH_IN.unpack_from(buf, _HEADER_SIZE)
    return Flush(header, fh, lock_owner)


def _parse_release(header: RequestHeader, buf: ReadBuffer, end: int) -> Release:
    fh, flags, release_flags, lock_owner = abi.RELEASE_IN.unpack_from(buf, _HEADER_SIZE)
    return Release(header, fh, flags, release_flags, lock_owner)


def _parse_releasedir(header: RequestHeader, buf: ReadBuffer, end: int) -> ReleaseDir:
    fh, _flags, _release_flags, _lock_owner = abi.RELEASE_IN.unpack_from(buf, _HEADER_SIZE)
    return ReleaseDir(header, fh)


def _parse_ioctl(header: RequestHeader, buf: ReadBuffer, end: int) -> Ioctl:
    fh, flags, cmd, arg, in_size, out_size = abi.IOCTL_IN.unpack_from(buf, _HEADER_SIZE)
    start = _HEADER_SIZE + abi.IOCTL_IN.size
    if start + in_size != end:
        raise MalformedRequest(header, f"ioctl in_size {in_size} but {end - start} bytes follow")
    return Ioctl(header, fh, flags, cmd, arg, bytes(buf[start:end]), in_size, out_size)


def _parse_poll(header: RequestHeader, buf: ReadBuffer, end: int) -> Poll:
    fh, kh, flags, events = abi.POLL_IN.unpack_from(buf, _HEADER_SIZE)
    return Poll(header, fh, kh, flags, events)


def _parse_readlink(header: RequestHeader, buf: ReadBuffer, end: int) -> ReadLink:
    return ReadLink(header)


def _parse_statfs(header: RequestHeader, buf: ReadBuffer, end: int) -> StatFs:
    return StatFs(header)


def _parse_access(header: RequestHeader, buf: ReadBuffer, end: int) -> Access:
    (mask,) = abi.ACCESS_IN.unpack_from(buf, _HEADER_SIZE)
    return Access(header, mask)


def _parse_interrupt(header: RequestHeader, buf: ReadBuffer, end: int) -> Interrupt:
    (target_unique,) = abi.INTERRUPT_IN.unpack_from(buf, _HEADER_SIZE)
    return Interrupt(header, target_unique)


def _parse_destroy(header: RequestHeader, buf: ReadBuffer, end: int) -> Destroy:
    return Destroy(header)


_BODY_PARSERS: Final[dict[int, tuple[int, _BodyParser]]] = {
    # opcode: (fixed body size the parser may unpack without further checks, parser)
    abi.Opcode.INIT: (abi.INIT_IN.size, _parse_init),
    abi.Opcode.CUSE_INIT: (abi.CUSE_INIT_IN.size, _parse_cuse_init),
    abi.Opcode.LOOKUP: (0, _parse_lookup),
    abi.Opcode.FORGET: (abi.FORGET_IN.size, _parse_forget),
    abi.Opcode.BATCH_FORGET: (abi.BATCH_FORGET_IN.size, _parse_batch_forget),
    abi.Opcode.GETATTR: (abi.GETATTR_IN.size, _parse_getattr),
    abi.Opcode.SETATTR: (abi.SETATTR_IN.size, _parse_setattr),
    abi.Opcode.OPEN: (abi.OPEN_IN.size, _parse_open),
    abi.Opcode.READ: (abi.READ_IN.size, _parse_read),
    abi.Opcode.WRITE: (abi.WRITE_IN.size, _parse_write),
    abi.Opcode.FLUSH: (abi.FLUSH_IN.size, _parse_flush),
    abi.Opcode.RELEASE: (abi.RELEASE_IN.size, _parse_release),
    abi.Opcode.IOCTL: (abi.IOCTL_IN.size, _parse_ioctl),
    abi.Opcode.POLL: (abi.POLL_IN.size, _parse_poll),
    abi.Opcode.OPENDIR: (abi.OPEN_IN.size, _parse_opendir),
    abi.Opcode.READDIR: (abi.READ_IN.size, _parse_readdir),
    abi.Opcode.READDIRPLUS: (abi.READ_IN.size, _parse_readdirplus),
    abi.Opcode.RELEASEDIR: (abi.RELEASE_IN.size, _parse_releasedir),
    abi.Opcode.READLINK: (0, _parse_readlink),
    abi.Opcode.STATFS: (0, _parse_statfs),
    abi.Opcode.ACCESS: (abi.ACCESS_IN.size, _parse_access),
    abi.Opcode.INTERRUPT: (abi.INTERRUPT_IN.size, _parse_interrupt),
    abi.Opcode.DESTROY: (0, _parse_destroy),
}


def parse_request(buf: ReadBuffer, minor: int) -> Request:
    """Parse exactly one request as read from /dev/fuse (or /dev/cuse).

    ``minor`` is the protocol minor negotiated at INIT (0 before it): from 7.38 the kernel may
    append extensions to a body and counts them in the header, older kernels left that field
    as padding. Raises ``ProtocolError`` when even the header is unusable, and its subclass
    ``MalformedRequest`` (carrying the header, so the request can still be answered) when
    the body is wrong.
    """
    try:
        (length, opcode, unique, nodeid, uid, gid, pid, extension_words,
         _padding) = abi.IN_HEADER.unpack_from(buf)
    except struct.error as error:
        raise ProtocolError(f"request of {len(buf)} bytes has no complete header") from error
    if length != len(buf):
        raise ProtocolError(f"header says {length} bytes but the read returned {len(buf)}")
    header = RequestHeader(length, opcode, unique, nodeid, uid, gid, pid)
    end = length - extension_words * 8 if minor >= abi.MIN_EXTLEN_MINOR else length
    if end < _HEADER_SIZE:
        raise MalformedRequest(header, f"{extension_words} extension words exceed the request")
    entry = _BODY_PARSERS.get(opcode)
    if entry is None:
        return Unknown(header, opcode, bytes(buf[_HEADER_SIZE:end]))
    fixed_size, parser = entry
    if end - _HEADER_SIZE < fixed_size:
        raise MalformedRequest(header, f"body of {end - _HEADER_SIZE} bytes, need {fixed_size}")
    return parser(header, buf, end)


# =========================================================================== reply values
@dataclass(frozen=True, slots=True)
class Attr:
    """What stat() shows for one inode. Times are whole seconds; ``blocks`` is derived."""

    ino: int
    mode: int
    size: int = 0
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    atime: int = 0
    mtime: int = 0
    ctime: int = 0
    blksize: int = abi.PAGE_SIZE
    rdev: int = 0


@dataclass(frozen=True, slots=True)
class EntryParams:
    """How long (seconds) the kernel may cache a name lookup and an inode's attributes.

    Longer means fewer LOOKUP/GETATTR round trips; shorter means a change made behind the
    kernel's back (not through SETATTR, whose reply refreshes the cache) shows sooner.
    """

    entry_timeout: float = 1.0
    attr_timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class FsStats:
    """The statfs() numbers; zero everywhere but sizes suits a tree of device nodes."""

    blocks: int = 0
    bfree: int = 0
    bavail: int = 0
    files: int = 0
    ffree: int = 0
    bsize: int = abi.PAGE_SIZE
    namelen: int = 255
    frsize: int = abi.PAGE_SIZE


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One directory entry. ``next_offset`` is the offset a later READDIR resumes from to get
    the entry *after* this one; it must never be 0, which means "start of the directory"."""

    ino: int
    name: bytes
    type: int
    next_offset: int

    def __post_init__(self) -> None:
        # The kernel fails the whole readdir (EIO) on such a name; fail early, with a reason.
        if not 0 < len(self.name) <= NAME_MAX or b"/" in self.name or b"\0" in self.name:
            raise ValueError(f"invalid directory entry name {self.name!r}")
        if self.next_offset <= 0:
            raise ValueError(f"directory entry {self.name!r} has next_offset {self.next_offset}")


# =========================================================================== reply encoders
def _header_and(body: struct.Struct) -> struct.Struct:
    """fuse_out_header followed by a fixed body, packed in one call (both are '<', unaligned)."""
    return struct.Struct(abi.OUT_HEADER.format + body.format.lstrip("<"))


_ENTRY_REPLY: Final = _header_and(struct.Struct(abi.ENTRY_OUT.format + abi.ATTR.format[1:]))
_ATTR_REPLY: Final = _header_and(struct.Struct(abi.ATTR_OUT.format + abi.ATTR.format[1:]))
_OPEN_REPLY: Final = _header_and(abi.OPEN_OUT)
_WRITE_REPLY: Final = _header_and(abi.WRITE_OUT)
_STATFS_REPLY: Final = _header_and(abi.STATFS_OUT)
_IOCTL_REPLY: Final = _header_and(abi.IOCTL_OUT)
_POLL_REPLY: Final = _header_and(abi.POLL_OUT)
_INIT_REPLY: Final = _header_and(abi.INIT_OUT)
_INIT_VERSION_REPLY: Final = _header_and(abi.INIT_OUT_VERSION_ONLY)
_CUSE_INIT_REPLY_HEAD: Final = _header_and(abi.CUSE_INIT_OUT)
_DIRENTPLUS_HEAD: Final = struct.Struct(abi.ENTRY_OUT.format + abi.ATTR.format[1:]
                                        + abi.DIRENT.format[1:])
_NO_ENTRY: Final = bytes(abi.ENTRY_OUT.size + abi.ATTR.size)
_PADDING: Final = bytes(abi.DIRENT_ALIGN)
_LOW_32: Final = 0xFFFF_FFFF


def _seconds_and_nanoseconds(timeout: float) -> tuple[int, int]:
    whole = int(timeout)
    return whole, int((timeout - whole) * 1_000_000_000)


def _attr_fields(attr: Attr) -> tuple[int, ...]:
    blocks = (attr.size + 511) // 512
    return (attr.ino, attr.size, blocks, attr.atime, attr.mtime, attr.ctime, 0, 0, 0,
            attr.mode, attr.nlink, attr.uid, attr.gid, attr.rdev, attr.blksize, 0)


def _entry_fields(attr: Attr, params: EntryParams) -> tuple[int, ...]:
    entry_sec, entry_nsec = _seconds_and_nanoseconds(params.entry_timeout)
    attr_sec, attr_nsec = _seconds_and_nanoseconds(params.attr_timeout)
    return (attr.ino, 0, entry_sec, attr_sec, entry_nsec, attr_nsec) + _attr_fields(attr)


def error_reply(unique: int, errno: int) -> bytes:
    """A failed request: the caller sees -1 with this errno (ENOSYS on ioctl becomes ENOTTY)."""
    if not 0 < errno <= abi.MAX_ERRNO:
        raise ValueError(f"errno {errno} is outside 1..{abi.MAX_ERRNO}; the kernel rejects it")
    return abi.OUT_HEADER.pack(abi.OUT_HEADER.size, -errno, unique)


def empty_reply(unique: int) -> bytes:
    """Success with no body (FLUSH, RELEASE, ACCESS, DESTROY, ...)."""
    return abi.OUT_HEADER.pack(abi.OUT_HEADER.size, 0, unique)


def data_reply(unique: int, data: bytes) -> bytes:
    """Success followed by raw bytes (READ)."""
    return abi.OUT_HEADER.pack(abi.OUT_HEADER.size + len(data), 0, unique) + data


def entry_reply(unique: int, attr: Attr, params: EntryParams) -> bytes:
    """LOOKUP success: fuse_entry_out naming ``attr.ino`` (generation 0) with its attributes."""
    return _ENTRY_REPLY.pack(_ENTRY_REPLY.size, 0, unique, *_entry_fields(attr, params))


def attr_reply(unique: int, attr: Attr, params: EntryParams) -> bytes:
    """GETATTR/SETATTR success: fuse_attr_out."""
    attr_sec, attr_nsec = _seconds_and_nanoseconds(params.attr_timeout)
    return _ATTR_REPLY.pack(_ATTR_REPLY.size, 0, unique, attr_sec, attr_nsec,
                            *_attr_fields(attr))


def readlink_reply(unique: int, target: bytes) -> bytes:
    """READLINK success: the link's target, without a terminating NUL. The kernel takes 1 to
    ``abi.READLINK_MAX`` bytes (one page less its NUL) and fails the readlink otherwise."""
    if not 0 < len(target) <= abi.READLINK_MAX or b"\0" in target:
        raise ValueError(f"symbolic link target of {len(target)} bytes is empty, longer than "
                         f"{abi.READLINK_MAX} or holds a NUL")
    return data_reply(unique, target)


def open_reply(unique: int, fh: int, open_flags: int) -> bytes:
    """OPEN/OPENDIR success: the handle the kernel quotes back and FOPEN_* behaviour bits."""
    return _OPEN_REPLY.pack(_OPEN_REPLY.size, 0, unique, fh, open_flags, 0)


def write_reply(unique: int, written: int) -> bytes:
    """WRITE success: how many bytes were consumed."""
    return _WRITE_REPLY.pack(_WRITE_REPLY.size, 0, unique, written)


def statfs_reply(unique: int, stats: FsStats) -> bytes:
    """STATFS success."""
    return _STATFS_REPLY.pack(_STATFS_REPLY.size, 0, unique, stats.blocks, stats.bfree,
                              stats.bavail, stats.files, stats.ffree, stats.bsize,
                              stats.namelen, stats.frsize, 0)


def ioctl_reply(unique: int, result: int, data: bytes) -> bytes:
    """IOCTL success: ``result`` is ioctl()'s return value, ``data`` is copied to the caller
    (never more than the request's ``out_size``; the kernel rejects a longer reply)."""
    return _IOCTL_REPLY.pack(_IOCTL_REPLY.size + len(data), 0, unique, result, 0, 0, 0) + data


def poll_reply(unique: int, revents: int) -> bytes:
    """POLL success: the currently ready POLL* events."""
    return _POLL_REPLY.pack(_POLL_REPLY.size, 0, unique, revents)


def init_reply(unique: int, *, minor: int, max_readahead: int, flags: int, max_write: int,
               max_pages: int, time_gran: int = 1) -> bytes:
    """FUSE_INIT success. ``flags`` is the 64-bit set; its upper half goes to ``flags2``,
    which the kernel reads only if ``flags`` includes INIT_EXT (the caller's duty).
    max_background and congestion_threshold are 0, which keeps the kernel's defaults."""
    return _INIT_REPLY.pack(_INIT_REPLY.size, 0, unique, abi.FUSE_KERNEL_VERSION, minor,
                            max_readahead, flags & _LOW_32, 0, 0, max_write, time_gran,
                            max_pages, 0, flags >> 32, 0)


def init_version_reply(unique: int) -> bytes:
    """The answer to an INIT of a foreign major: our version only, so the kernel can retry."""
    return _INIT_VERSION_REPLY.pack(_INIT_VERSION_REPLY.size, 0, unique,
                                    abi.FUSE_KERNEL_VERSION, abi.OUR_MAX_MINOR)


def cuse_init_reply(unique: int, *, minor: int, flags: int, max_read: int, max_write: int,
                    dev_major: int, dev_minor: int, info: bytes) -> bytes:
    """CUSE_INIT success. ``info`` is NUL-separated ``KEY=value`` pairs; ``DEVNAME=name`` is
    required and creates /dev/<name>. A 0 ``dev_major`` asks for a dynamic major."""
    if len(info) > abi.CUSE_INIT_INFO_MAX:
        raise ValueError(f"CUSE device info is {len(info)} bytes, "
                         f"the kernel takes at most {abi.CUSE_INIT_INFO_MAX}")
    return _CUSE_INIT_REPLY_HEAD.pack(
        _CUSE_INIT_REPLY_HEAD.size + len(info), 0, unique, abi.FUSE_KERNEL_VERSION, minor, 0,
        flags, max_read, max_write, dev_major, dev_minor) + info


def _padding_for(record_size: int) -> bytes:
    return _PADDING[:-record_size % abi.DIRENT_ALIGN]


def readdir_reply(unique: int, entries: Iterable[DirEntry], size: int) -> bytes:
    """READDIR success: as many whole 8-byte-aligned fuse_dirent records as fit in ``size``.

    Entries that do not fit are left out; the kernel asks again from the last entry's
    ``next_offset``. An empty body tells it the directory has no more entries.
    """
    parts: list[bytes] = []
    used = 0
    for entry in entries:
        record_size = abi.DIRENT.size + len(entry.name)
        padding = _padding_for(record_size)
        used += record_size + len(padding)
        if used > size:
            break
        parts += (abi.DIRENT.pack(entry.ino, entry.next_offset, len(entry.name), entry.type),
                  entry.name, padding)
    return data_reply(unique, b"".join(parts))


def readdirplus_reply(unique: int, entries: Iterable[DirEntry], size: int,
                      attr_of: Callable[[DirEntry], Attr | None], params: EntryParams) -> bytes:
    """READDIRPLUS success: like ``readdir_reply`` with an entry_out + attr before each dirent.

    The kernel counts every entry with a non-zero node id as a lookup (later balanced by a
    FORGET), so ``attr_of`` is called only for entries that fit; returning None sends a zero
    node id, which is what "." and ".." need (the kernel never links those).
    """
    parts: list[bytes] = []
    used = 0
    for entry in entries:
        record_size = _DIRENTPLUS_HEAD.size + len(entry.name)
        padding = _padding_for(record_size)
        used += record_size + len(padding)
        if used > size:
            break
        attr = attr_of(entry)
        dirent = abi.DIRENT.pack(entry.ino, entry.next_offset, len(entry.name), entry.type)
        if attr is None:
            parts += (_NO_ENTRY, dirent, entry.name, padding)
        else:
            parts += (_DIRENTPLUS_HEAD.pack(*_entry_fields(attr, params), entry.ino,
                                            entry.next_offset, len(entry.name), entry.type),
                      entry.name, padding)
    return data_reply(unique, b"".join(parts))
