"""The FUSE/CUSE protocol state machine, sans I/O: requests in, reply bytes out.

A session owns everything the protocol itself decides: INIT negotiation, which requests may be
answered before INIT, which opcodes exist (ENOSYS for the rest), turning filesystem failures into
errnos and never letting an exception escape. It performs no I/O and knows nothing of threads;
the I/O layer reads a request, calls ``parse``, asks ``classify`` where to run it, runs
``handle`` there and writes whatever bytes come back.

Threading contract: ``parse``, ``classify`` and the handling of INIT and DESTROY happen on the
one thread that reads the device (INIT is LOCK_FREE, DESTROY arrives last). Every other request
only reads session state, so ``handle`` may run for them on any thread, concurrently.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
import enum
import errno
import logging
from typing import Any, ClassVar, Final, Protocol, TypeAlias

from ioasidfs.errors import KernelError, ProtocolError
from ioasidfs.fuse import abi
from ioasidfs.fuse.codec import (
    Access, Attr, BatchForget, CuseInit, Destroy, DirEntry, EntryParams, Flush, Forget, FsStats,
    GetAttr, Init, Interrupt, Ioctl, Lookup, MalformedRequest, Open, OpenDir, Poll, Read,
    ReadBuffer, ReadDir, ReadDirPlus, ReadLink, Release, ReleaseDir, Request, RequestHeader,
    SetAttr, StatFs, Write, attr_reply, cuse_init_reply, data_reply, empty_reply, entry_reply,
    error_reply, init_reply, init_version_reply, ioctl_reply, open_reply, parse_request,
    poll_reply, readdir_reply, readdirplus_reply, readlink_reply, statfs_reply, write_reply)

log = logging.getLogger("ioasidfs.fuse")

DEFAULT_MAX_WRITE: Final = 128 * 1024
"""Largest WRITE the kernel may send; also sizes the read buffer (see ``read_buffer_size``)."""

DEFAULT_WANT_FLAGS: Final = abi.InitFlag.ASYNC_READ | abi.InitFlag.BIG_WRITES
"""INIT capabilities we ask for unless told otherwise. MAX_PAGES is always asked for (it is
what makes ``max_write`` above 128 KiB real) and INIT_EXT is added when needed."""

_MAX_MAX_WRITE: Final = 0xFFFF * abi.PAGE_SIZE
"""INIT's max_pages is 16 bits wide."""

_UNANSWERED: Final = frozenset({Forget, BatchForget, Interrupt})
"""Request types the kernel never waits an answer for: replying to them would be an error."""

_ALWAYS_LOCK_FREE: Final = frozenset({Init, CuseInit, Forget, BatchForget, Interrupt, StatFs,
                                      Lookup, GetAttr, SetAttr, Access, OpenDir, ReadDir,
                                      ReadDirPlus, ReleaseDir, ReadLink})
"""Request types answered on the reader thread whatever the engine is doing. Metadata requests
are among them: they only touch the tree, never the engine, and a worker that holds the engine
lock may itself cause one (an fstat() of a file of ours sends GETATTR), which must not wait."""


# =========================================================================== filesystem side
@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking. ``pid`` is the caller's thread id (0 for RELEASE); ``unique`` identifies
    the request, e.g. to match a later INTERRUPT."""

    pid: int
    uid: int
    gid: int
    unique: int


@dataclass(frozen=True, slots=True)
class OpenReply:
    """A successful open: the handle the kernel quotes in later requests, and how the kernel
    should treat the open file (see platform.md for why each matters to device nodes)."""

    fh: int
    direct_io: bool = False
    nonseekable: bool = False
    keep_cache: bool = False
    noflush: bool = False

    @property
    def open_flags(self) -> int:
        """The FOPEN_* bits these choices mean on the wire."""
        return ((abi.FopenFlag.DIRECT_IO if self.direct_io else 0)
                | (abi.FopenFlag.NONSEEKABLE if self.nonseekable else 0)
                | (abi.FopenFlag.KEEP_CACHE if self.keep_cache else 0)
                | (abi.FopenFlag.NOFLUSH if self.noflush else 0))


@dataclass(frozen=True, slots=True)
class IoctlReply:
    """ioctl()'s return value as the caller will see it, and bytes copied to its buffer."""

    result: int = 0
    data: bytes = b""


class Filesystem(Protocol):
    """What a session needs from the tree it serves. All methods are synchronous.

    Raise ``KernelError(errno, reason)`` to fail an operation with that errno; any other
    exception becomes EIO and a logged traceback. ``forget`` and ``statfs`` are answered on the
    reader thread and must never wait for the engine lock, nor must ``ioctl`` for a command
    ``ioctl_lock_free`` accepts. A CUSE session uses only open, read, write, flush, release,
    ioctl, poll, the two ioctl predicates and destroy, always with its device's inode number.
    """

    def lookup(self, ctx: RequestContext, parent_ino: int, name: bytes) -> Attr:
        """Find ``name`` in a directory; each success is one lookup reference on the result."""

    def forget(self, ino: int, nlookup: int) -> None:
        """The kernel dropped ``nlookup`` lookup references to ``ino``."""

    def getattr(self, ctx: RequestContext, ino: int) -> Attr:
        """stat()."""

    def setattr(self, ctx: RequestContext, ino: int, mode: int | None, uid: int | None,
                gid: int | None) -> Attr:
        """chmod/chown (None: unchanged); returns the attributes after the change."""

    def open(self, ctx: RequestContext, ino: int, flags: int) -> OpenReply:
        """open() with the caller's O_* flags."""

    def read(self, ctx: RequestContext, ino: int, fh: int, offset: int, size: int) -> bytes:
        """pread(); at most ``size`` bytes."""

    def write(self, ctx: RequestContext, ino: int, fh: int, offset: int, data: bytes) -> int:
        """pwrite(); returns how many bytes of ``data`` were consumed."""

    def flush(self, ctx: RequestContext, ino: int, fh: int) -> None:
        """close() of any duplicate of the open file; it does not tell whether it was the last."""

    def release(self, ctx: RequestContext, ino: int, fh: int) -> None:
        """The last reference to the open file is gone."""

    def ioctl(self, ctx: RequestContext, ino: int, fh: int, cmd: int, arg: int,
              in_data: bytes, out_size: int) -> IoctlReply:
        """ioctl(); ``arg`` is the caller's raw argument, ``in_data`` the inline input."""

    def poll(self, ctx: RequestContext, ino: int, fh: int, kh: int, events: int) -> int:
        """Returns the POLL* events ready now."""

    def readlink(self, ctx: RequestContext, ino: int) -> bytes:
        """The target of the symbolic link ``ino`` (1 to ``abi.READLINK_MAX`` bytes)."""

    def opendir(self, ctx: RequestContext, ino: int) -> int:
        """opendir(); returns a directory handle."""

    def readdir(self, ctx: RequestContext, ino: int, fh: int, offset: int) -> Iterable[DirEntry]:
        """The entries from ``offset`` on (0: from the start, "." and ".." included)."""

    def releasedir(self, ctx: RequestContext, ino: int, fh: int) -> None:
        """closedir() of the last reference."""

    def statfs(self, ctx: RequestContext) -> FsStats:
        """statfs() on the mount."""

    def access(self, ctx: RequestContext, ino: int, mask: int) -> None:
        """access(); raise KernelError(EACCES) to deny."""

    def ioctl_needs_worker(self, ino: int, cmd: int) -> bool:
        """True when the ioctl may block, e.g. because its handler touches our own files,
        which from the reader thread would deadlock."""

    def ioctl_lock_free(self, ctx: RequestContext, ino: int, cmd: int) -> bool:
        """True for ioctls that must be answered even while a worker holds the engine lock
        (the daemon's private identity query, issued by that very worker)."""

    def destroy(self) -> None:
        """The connection is shutting down."""


class FilesystemContractError(Exception):
    """The filesystem returned something the protocol cannot carry (e.g. more ioctl output
    than the caller's buffer holds). A bug on our side, answered with EIO and logged."""


# =========================================================================== session
class Dispatch(enum.Enum):
    """Where the I/O layer must run ``handle`` for a request."""

    LOCK_FREE = enum.auto()
    """On the reader thread, without waiting for the engine lock."""
    WORKER = enum.auto()
    """On a worker thread: the handler may block on our own files."""
    INLINE = enum.auto()
    """On the reader thread, holding the engine lock."""


class SessionState(enum.Enum):
    """AWAITING_INIT until INIT succeeds, RUNNING until DESTROY, then FINISHED."""

    AWAITING_INIT = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


_Handler: TypeAlias = Callable[[Any], bytes | None]


class BaseSession:
    """What FUSE and CUSE sessions share: the request life cycle and the file operations."""

    _init_type: ClassVar[type[Init] | type[CuseInit]]

    def __init__(self, filesystem: Filesystem, *, max_write: int) -> None:
        if not 0 < max_write <= _MAX_MAX_WRITE or max_write % abi.PAGE_SIZE:
            raise ValueError(f"max_write {max_write} is not a multiple of {abi.PAGE_SIZE} "
                             f"in 1..{_MAX_MAX_WRITE}")
        self._fs = filesystem
        self._max_write = max_write
        self._state = SessionState.AWAITING_INIT
        self._minor = 0
        self._handlers: dict[type[Request], _Handler] = self._operations()
        self._inline_types = frozenset(self._handlers) - _ALWAYS_LOCK_FREE

    # ------------------------------------------------------------------ public
    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def negotiated_minor(self) -> int | None:
        """The protocol minor in use, None before INIT."""
        return self._minor if self._state is not SessionState.AWAITING_INIT else None

    @property
    def max_write(self) -> int:
        return self._max_write

    @property
    def read_buffer_size(self) -> int:
        """The buffer every read from the device needs: the kernel refuses (EINVAL) a buffer
        smaller than a maximal WRITE with its headers, or smaller than 8 KiB."""
        return max(abi.MIN_READ_BUFFER,
                   abi.IN_HEADER.size + abi.WRITE_IN.size + self._max_write)

    def parse(self, buf: ReadBuffer) -> Request:
        """``codec.parse_request`` with the negotiated minor; raises ProtocolError (see
        ``reject``)."""
        return parse_request(buf, self._minor)

    def reject(self, error: ProtocolError) -> bytes | None:
        """The answer to a request ``parse`` refused: EIO when the header was readable and the
        opcode expects a reply (its caller is blocked until then), else nothing."""
        log.error("malformed request: %s", error)
        if isinstance(error, MalformedRequest) and error.expects_reply:
            return error_reply(error.header.unique, errno.EIO)
        return None

    def classify(self, request: Request) -> Dispatch:
        """Where ``handle(request)`` must run; see ``Dispatch``. Anything answered without the
        filesystem (before INIT, ENOSYS, ...) is LOCK_FREE."""
        if self._state is not SessionState.RUNNING:
            return Dispatch.LOCK_FREE
        if type(request) is Ioctl:
            return self._classify_ioctl(request)
        if type(request) in self._inline_types:
            return Dispatch.INLINE
        return Dispatch.LOCK_FREE

    def handle(self, request: Request) -> bytes | None:
        """Answer one request: the bytes of the one reply to write, or None when the protocol
        wants no reply. Never raises."""
        kind = type(request)
        unique = request.header.unique
        if self._state is not SessionState.RUNNING and kind is not self._init_type:
            if kind in _UNANSWERED:
                return None
            log.warning("%s while %s; answering EIO", _describe(request.header),
                        self._state.name)
            return error_reply(unique, errno.EIO)
        handler = self._handlers.get(kind)
        if handler is None:
            return error_reply(unique, errno.ENOSYS)
        try:
            return handler(request)
        except KernelError as error:
            if kind in _UNANSWERED:
                log.warning("%s failed: %s", _describe(request.header), error)
                return None
            if not 0 < error.errno <= abi.MAX_ERRNO:
                log.error("%s failed with unusable errno %d (%s); answering EIO",
                          _describe(request.header), error.errno, error.reason)
                return error_reply(unique, errno.EIO)
            return error_reply(unique, error.errno)
        except Exception:
            log.exception("%s failed; answering EIO", _describe(request.header))
            return None if kind in _UNANSWERED else error_reply(unique, errno.EIO)

    # ------------------------------------------------------------------ for subclasses
    def _operations(self) -> dict[type[Request], _Handler]:
        """Request type -> handler for every request this kind of session answers."""
        return {Open: self._open, Read: self._read, Write: self._write, Flush: self._flush,
                Release: self._release, Ioctl: self._ioctl, Poll: self._poll,
                Interrupt: self._interrupt, Destroy: self._destroy}

    def _ino(self, header: RequestHeader) -> int:
        """The inode the filesystem should see for a request."""
        return header.nodeid

    def _start(self, minor: int) -> None:
        self._minor = minor
        self._state = SessionState.RUNNING

    def _refuse_repeated_init(self, header: RequestHeader) -> bytes | None:
        """None if an init request is expected now, else the EIO answer to it."""
        if self._state is SessionState.AWAITING_INIT:
            return None
        log.error("%s while %s; answering EIO", _describe(header), self._state.name)
        return error_reply(header.unique, errno.EIO)

    # ------------------------------------------------------------------ shared operations
    def _classify_ioctl(self, request: Ioctl) -> Dispatch:
        ino = self._ino(request.header)
        try:
            if self._fs.ioctl_lock_free(_context(request.header), ino, request.cmd):
                return Dispatch.LOCK_FREE
            if self._fs.ioctl_needs_worker(ino, request.cmd):
                return Dispatch.WORKER
        except Exception:
            # A worker can do anything without hanging the reader thread: the safe default.
            log.exception("classifying ioctl %#x on inode %d failed; using a worker",
                          request.cmd, ino)
            return Dispatch.WORKER
        return Dispatch.INLINE

    def _open(self, request: Open) -> bytes:
        reply = self._fs.open(_context(request.header), self._ino(request.header),
                              request.flags)
        return open_reply(request.header.unique, reply.fh, reply.open_flags)

    def _read(self, request: Read) -> bytes:
        data = self._fs.read(_context(request.header), self._ino(request.header), request.fh,
                             request.offset, request.size)
        if len(data) > request.size:
            raise FilesystemContractError(f"read returned {len(data)} bytes for a read of "
                                          f"{request.size}")
        return data_reply(request.header.unique, data)

    def _write(self, request: Write) -> bytes:
        written = self._fs.write(_context(request.header), self._ino(request.header),
                                 request.fh, request.offset, request.data)
        if not 0 <= written <= len(request.data):
            raise FilesystemContractError(f"write of {len(request.data)} bytes claims "
                                          f"{written} written")
        return write_reply(request.header.unique, written)

    def _flush(self, request: Flush) -> bytes:
        self._fs.flush(_context(request.header), self._ino(request.header), request.fh)
        return empty_reply(request.header.unique)

    def _release(self, request: Release) -> bytes:
        self._fs.release(_context(request.header), self._ino(request.header), request.fh)
        return empty_reply(request.header.unique)

    def _ioctl(self, request: Ioctl) -> bytes:
        reply = self._fs.ioctl(_context(request.header), self._ino(request.header), request.fh,
                               request.cmd, request.arg, request.in_data, request.out_size)
        if len(reply.data) > request.out_size:
            raise FilesystemContractError(f"ioctl {request.cmd:#x} returned {len(reply.data)} "
                                          f"bytes for an output of {request.out_size}")
        return ioctl_reply(request.header.unique, reply.result, reply.data)

    def _poll(self, request: Poll) -> bytes:
        revents = self._fs.poll(_context(request.header), self._ino(request.header),
                                request.fh, request.kh, request.events)
        return poll_reply(request.header.unique, revents)

    def _interrupt(self, request: Interrupt) -> None:
        # The interrupted request still gets its own reply (EINTR or its real result); acting
        # on the interruption is the I/O layer's business, which sees this request too.
        log.debug("interrupt for unique %d", request.target_unique)

    def _destroy(self, request: Destroy) -> bytes:
        try:
            self._fs.destroy()
        finally:
            self._state = SessionState.FINISHED
        return empty_reply(request.header.unique)


class FuseSession(BaseSession):
    """A session on /dev/fuse serving a whole mounted tree."""

    _init_type = Init

    def __init__(self, filesystem: Filesystem, *, max_write: int = DEFAULT_MAX_WRITE,
                 want_flags: int = DEFAULT_WANT_FLAGS,
                 entry_params: EntryParams = EntryParams()) -> None:
        super().__init__(filesystem, max_write=max_write)
        # MAX_PAGES is what makes max_write real; INIT_EXT is added at INIT only when needed.
        wanted = int(want_flags) | int(abi.InitFlag.MAX_PAGES)
        self._want_flags = wanted & ~int(abi.InitFlag.INIT_EXT)
        self._entry_params = entry_params
        self._flags = 0

    @property
    def negotiated_flags(self) -> int:
        """The INIT capabilities both sides agreed on (0 before INIT)."""
        return self._flags

    def _operations(self) -> dict[type[Request], _Handler]:
        return super()._operations() | {
            Init: self._init, Lookup: self._lookup, Forget: self._forget,
            BatchForget: self._batch_forget, GetAttr: self._getattr, SetAttr: self._setattr,
            OpenDir: self._opendir, ReadDir: self._readdir, ReadDirPlus: self._readdirplus,
            ReleaseDir: self._releasedir, ReadLink: self._readlink, StatFs: self._statfs,
            Access: self._access}

    def _init(self, request: Init) -> bytes:
        unique = request.header.unique
        refusal = self._refuse_repeated_init(request.header)
        if refusal is not None:
            return refusal
        if request.major > abi.FUSE_KERNEL_VERSION:
            log.info("kernel offers FUSE %d.%d; asking for major %d", request.major,
                     request.minor, abi.FUSE_KERNEL_VERSION)
            return init_version_reply(unique)
        if request.major < abi.FUSE_KERNEL_VERSION or request.minor < abi.MIN_SUPPORTED_MINOR:
            log.error("kernel speaks FUSE %d.%d, we need 7.%d or later", request.major,
                      request.minor, abi.MIN_SUPPORTED_MINOR)
            return error_reply(unique, errno.EPROTO)
        minor = min(request.minor, abi.OUR_MAX_MINOR)
        flags = request.flags & self._want_flags
        if flags >> 32:
            flags |= int(abi.InitFlag.INIT_EXT)
        self._flags = flags
        self._start(minor)
        log.info("FUSE 7.%d negotiated (kernel 7.%d), max_write %d, flags %r", minor,
                 request.minor, self._max_write, abi.InitFlag(flags))
        return init_reply(unique, minor=minor, max_readahead=request.max_readahead,
                          flags=flags, max_write=self._max_write,
                          max_pages=self._max_write // abi.PAGE_SIZE)

    def _lookup(self, request: Lookup) -> bytes:
        attr = self._fs.lookup(_context(request.header), request.header.nodeid, request.name)
        return entry_reply(request.header.unique, attr, self._entry_params)

    def _forget(self, request: Forget) -> None:
        self._fs.forget(request.header.nodeid, request.nlookup)

    def _batch_forget(self, request: BatchForget) -> None:
        for ino, nlookup in request.items:
            self._fs.forget(ino, nlookup)

    def _getattr(self, request: GetAttr) -> bytes:
        attr = self._fs.getattr(_context(request.header), request.header.nodeid)
        return attr_reply(request.header.unique, attr, self._entry_params)

    def _setattr(self, request: SetAttr) -> bytes:
        # Only ownership and permissions mean something for a device node. A size (the
        # kernel sends one for open(O_TRUNC)) or times are accepted and ignored, as a real
        # character device ignores O_TRUNC.
        attr = self._fs.setattr(_context(request.header), request.header.nodeid, request.mode,
                                request.uid, request.gid)
        return attr_reply(request.header.unique, attr, self._entry_params)

    def _opendir(self, request: OpenDir) -> bytes:
        fh = self._fs.opendir(_context(request.header), request.header.nodeid)
        return open_reply(request.header.unique, fh, 0)

    def _readdir(self, request: ReadDir) -> bytes:
        entries = self._fs.readdir(_context(request.header), request.header.nodeid, request.fh,
                                   request.offset)
        return readdir_reply(request.header.unique, entries, request.size)

    def _readdirplus(self, request: ReadDirPlus) -> bytes:
        if not self._flags & abi.InitFlag.DO_READDIRPLUS:
            return error_reply(request.header.unique, errno.ENOSYS)
        ctx = _context(request.header)
        parent = request.header.nodeid
        entries = self._fs.readdir(ctx, parent, request.fh, request.offset)

        def attr_of(entry: DirEntry) -> Attr | None:
            if entry.name in (b".", b".."):
                return None
            try:
                return self._fs.lookup(ctx, parent, entry.name)
            except KernelError:
                # Gone since readdir listed it: list the name without attributes rather than
                # fail the whole listing; the kernel's own LOOKUP will then get the error.
                return None

        return readdirplus_reply(request.header.unique, entries, request.size, attr_of,
                                 self._entry_params)

    def _releasedir(self, request: ReleaseDir) -> bytes:
        self._fs.releasedir(_context(request.header), request.header.nodeid, request.fh)
        return empty_reply(request.header.unique)

    def _readlink(self, request: ReadLink) -> bytes:
        target = self._fs.readlink(_context(request.header), request.header.nodeid)
        if not 0 < len(target) <= abi.READLINK_MAX or b"\0" in target:
            raise FilesystemContractError(f"readlink returned a target of {len(target)} bytes "
                                          "(empty, too long, or with a NUL)")
        return readlink_reply(request.header.unique, target)

    def _statfs(self, request: StatFs) -> bytes:
        return statfs_reply(request.header.unique, self._fs.statfs(_context(request.header)))

    def _access(self, request: Access) -> bytes:
        self._fs.access(_context(request.header), request.header.nodeid, request.mask)
        return empty_reply(request.header.unique)


class CuseSession(BaseSession):
    """A session on /dev/cuse serving one character device, /dev/<devname>.

    CUSE requests carry no inode (nodeid 0), so every file operation reaches the filesystem
    with ``device_ino``, the inode the same device has in the FUSE tree. Ioctls stay
    restricted (no CUSE_UNRESTRICTED_IOCTL), so they arrive exactly as they do over FUSE,
    unless ``unrestricted_ioctl``: then the kernel copies nothing for a sized command either
    (``in_data`` empty, ``out_size`` 0) and the filesystem reaches the caller's memory itself;
    this session never asks for the iovec retry.
    """

    _init_type = CuseInit

    def __init__(self, filesystem: Filesystem, *, device_ino: int, devname: str,
                 dev_major: int = 0, dev_minor: int = 0,
                 max_write: int = DEFAULT_MAX_WRITE, unrestricted_ioctl: bool = False) -> None:
        super().__init__(filesystem, max_write=max_write)
        if not devname or "\0" in devname or devname.startswith("/"):
            raise ValueError(f"CUSE device name {devname!r} must be a relative path under /dev")
        self._device_ino = device_ino
        self._device_info = b"DEVNAME=" + devname.encode() + b"\0"
        self._dev_major = dev_major
        self._dev_minor = dev_minor
        self._cuse_flags = abi.CuseInitFlag.UNRESTRICTED_IOCTL if unrestricted_ioctl else 0

    def _operations(self) -> dict[type[Request], _Handler]:
        return super()._operations() | {CuseInit: self._cuse_init}

    def _ino(self, header: RequestHeader) -> int:
        return self._device_ino

    def _cuse_init(self, request: CuseInit) -> bytes:
        unique = request.header.unique
        refusal = self._refuse_repeated_init(request.header)
        if refusal is not None:
            return refusal
        if (request.major != abi.FUSE_KERNEL_VERSION
                or request.minor < abi.MIN_SUPPORTED_MINOR):
            log.error("kernel speaks CUSE %d.%d, we need 7.%d or later", request.major,
                      request.minor, abi.MIN_SUPPORTED_MINOR)
            return error_reply(unique, errno.EPROTO)
        minor = min(request.minor, abi.OUR_MAX_MINOR)
        flags = int(self._cuse_flags) & request.flags
        if flags != self._cuse_flags:
            log.error("the kernel does not offer CUSE flags %r", self._cuse_flags)
            return error_reply(unique, errno.EPROTO)
        self._start(minor)
        log.info("CUSE 7.%d negotiated for %r", minor, self._device_info)
        return cuse_init_reply(unique, minor=minor, flags=flags, max_read=self._max_write,
                               max_write=self._max_write, dev_major=self._dev_major,
                               dev_minor=self._dev_minor, info=self._device_info)


# =========================================================================== helpers
def _context(header: RequestHeader) -> RequestContext:
    return RequestContext(header.pid, header.uid, header.gid, header.unique)


def _describe(header: RequestHeader) -> str:
    """Opcode name and unique of a request, for log lines."""
    try:
        name = abi.Opcode(header.opcode).name
    except ValueError:
        name = f"opcode {header.opcode}"
    return f"{name} (unique {header.unique}, inode {header.nodeid})"
