"""Tests of the sans-I/O FuseSession / CuseSession: request bytes in, reply bytes out."""
from __future__ import annotations

from collections.abc import Iterable
import errno
import logging
import struct

import pytest

from ioasidfs.errors import KernelError, ProtocolError
from ioasidfs.fuse import abi, codec
from ioasidfs.fuse.codec import Attr, DirEntry, FsStats
from ioasidfs.fuse.session import (
    CuseSession, Dispatch, FuseSession, IoctlReply, OpenReply, RequestContext, SessionState)

IN_HEADER = "<IIQQIIIHH"
OUT_HEADER = "<IiQ"
INIT_OUT = "<IIIIHHIIHHII24x"

ROOT, VFIO_DIR, CONTAINER, IOASID, LINK = 1, 2, 3, 4, 5
IDENTITY_IOCTL, BLOCKING_IOCTL, PLAIN_IOCTL, FAILING_IOCTL = 0xC0083B99, 0x3B6A, 0x3B64, 0x3B00
KERNEL_FLAGS = (abi.InitFlag.ASYNC_READ | abi.InitFlag.BIG_WRITES | abi.InitFlag.DO_READDIRPLUS
                | abi.InitFlag.MAX_PAGES | abi.InitFlag.INIT_EXT
                | abi.InitFlag.DIRECT_IO_ALLOW_MMAP)


class FakeFilesystem:
    """A two-directory tree that records calls; behaviour switches live in attributes."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.failure: BaseException | None = None
        self.read_data = b"data"
        self.ioctl_data = b""
        self.link_target = b"../vfio"

    def _call(self, *call: object) -> None:
        self.calls.append(call)
        if self.failure is not None:
            raise self.failure

    def lookup(self, ctx: RequestContext, parent_ino: int, name: bytes) -> Attr:
        self._call("lookup", parent_ino, name)
        children = {(ROOT, b"vfio"): VFIO_DIR, (ROOT, b"ioasid"): IOASID,
                    (VFIO_DIR, b"vfio"): CONTAINER}
        if (parent_ino, name) not in children:
            raise KernelError(errno.ENOENT, "no such node")
        return self.getattr(ctx, children[parent_ino, name])

    def forget(self, ino: int, nlookup: int) -> None:
        self._call("forget", ino, nlookup)

    def getattr(self, ctx: RequestContext, ino: int) -> Attr:
        is_dir = ino in (ROOT, VFIO_DIR)
        return Attr(ino=ino, mode=0o40755 if is_dir else 0o100666, nlink=2 if is_dir else 1)

    def setattr(self, ctx: RequestContext, ino: int, mode: int | None, uid: int | None,
                gid: int | None) -> Attr:
        self._call("setattr", ino, mode, uid, gid)
        return Attr(ino=ino, mode=mode or 0o100666, uid=uid or 0, gid=gid or 0)

    def open(self, ctx: RequestContext, ino: int, flags: int) -> OpenReply:
        self._call("open", ctx, ino, flags)
        return OpenReply(fh=10 + ino, direct_io=True, noflush=True)

    def read(self, ctx: RequestContext, ino: int, fh: int, offset: int, size: int) -> bytes:
        self._call("read", ino, fh, offset, size)
        return self.read_data

    def write(self, ctx: RequestContext, ino: int, fh: int, offset: int, data: bytes) -> int:
        self._call("write", ino, fh, offset, data)
        return len(data)

    def flush(self, ctx: RequestContext, ino: int, fh: int) -> None:
        self._call("flush", ino, fh)

    def release(self, ctx: RequestContext, ino: int, fh: int) -> None:
        self._call("release", ctx.pid, ino, fh)

    def ioctl(self, ctx: RequestContext, ino: int, fh: int, cmd: int, arg: int,
              in_data: bytes, out_size: int) -> IoctlReply:
        self._call("ioctl", ctx, ino, fh, cmd, arg, in_data, out_size)
        return IoctlReply(result=5, data=self.ioctl_data)

    def poll(self, ctx: RequestContext, ino: int, fh: int, kh: int, events: int) -> int:
        self._call("poll", ino, fh, kh, events)
        return events & 0x1

    def opendir(self, ctx: RequestContext, ino: int) -> int:
        self._call("opendir", ino)
        return 100 + ino

    def readdir(self, ctx: RequestContext, ino: int, fh: int, offset: int) -> Iterable[DirEntry]:
        self._call("readdir", ino, fh, offset)
        entries = [DirEntry(ROOT, b".", abi.DirentType.DIR, 1),
                   DirEntry(ROOT, b"..", abi.DirentType.DIR, 2),
                   DirEntry(VFIO_DIR, b"vfio", abi.DirentType.DIR, 3),
                   DirEntry(IOASID, b"ioasid", abi.DirentType.REG, 4)]
        return entries[offset:]

    def releasedir(self, ctx: RequestContext, ino: int, fh: int) -> None:
        self._call("releasedir", ino, fh)

    def readlink(self, ctx: RequestContext, ino: int) -> bytes:
        self._call("readlink", ino)
        if ino != LINK:
            raise KernelError(errno.EINVAL, "not a symbolic link")
        return self.link_target

    def statfs(self, ctx: RequestContext) -> FsStats:
        self._call("statfs")
        return FsStats()

    def access(self, ctx: RequestContext, ino: int, mask: int) -> None:
        self._call("access", ino, mask)
        if mask & 2:
            raise KernelError(errno.EACCES, "read-only for this test")

    def ioctl_needs_worker(self, ino: int, cmd: int) -> bool:
        if cmd == FAILING_IOCTL:
            raise RuntimeError("classifier bug")
        return cmd == BLOCKING_IOCTL

    def ioctl_lock_free(self, ctx: RequestContext, ino: int, cmd: int) -> bool:
        return cmd == IDENTITY_IOCTL

    def destroy(self) -> None:
        self._call("destroy")


# --------------------------------------------------------------------------- helpers
def kernel_request(opcode: int, body: bytes = b"", *, unique: int = 7, nodeid: int = ROOT,
                   pid: int = 4242) -> bytes:
    return struct.pack(IN_HEADER, 40 + len(body), opcode, unique, nodeid, 1000, 100, pid, 0,
                       0) + body


def init_request(minor: int = 45, flags: int = KERNEL_FLAGS, major: int = 7,
                 unique: int = 1) -> bytes:
    body = struct.pack("<IIIII44x", major, minor, 131072, flags & 0xFFFF_FFFF, flags >> 32)
    return kernel_request(abi.Opcode.INIT, body, unique=unique, nodeid=0)


def ioctl_request(cmd: int, in_data: bytes = b"", out_size: int = 0, *, nodeid: int = CONTAINER,
                  unique: int = 7) -> bytes:
    body = struct.pack("<QIIQII", 13, 0, cmd, 0x1000, len(in_data), out_size) + in_data
    return kernel_request(abi.Opcode.IOCTL, body, nodeid=nodeid, unique=unique)


def out_header(reply: bytes | None) -> tuple[int, int, int]:
    assert reply is not None
    length, error, unique = struct.unpack_from(OUT_HEADER, reply)
    assert length == len(reply)
    return length, error, unique


def error_of(reply: bytes | None) -> int:
    return -out_header(reply)[1]


def body_of(reply: bytes | None) -> bytes:
    assert out_header(reply)[1] == 0
    assert reply is not None
    return reply[16:]


def exchange(session: FuseSession | CuseSession, buf: bytes) -> bytes | None:
    return session.handle(session.parse(buf))


@pytest.fixture
def fs() -> FakeFilesystem:
    return FakeFilesystem()


@pytest.fixture
def session(fs: FakeFilesystem) -> FuseSession:
    """A session INIT has already been negotiated on."""
    session = FuseSession(fs, want_flags=abi.InitFlag.ASYNC_READ | abi.InitFlag.DO_READDIRPLUS)
    assert error_of(exchange(session, init_request())) == 0
    return session


# =========================================================================== INIT
def test_init_negotiates_version_pages_and_flags(fs: FakeFilesystem) -> None:
    session = FuseSession(fs)
    reply = exchange(session, init_request(minor=45))
    (major, minor, readahead, flags, _background, _congestion, max_write, time_gran, max_pages,
     _alignment, flags2, _stack) = struct.unpack(INIT_OUT, body_of(reply))
    assert (major, minor, readahead, max_write, max_pages, time_gran) == (7, 41, 131072, 131072,
                                                                          32, 1)
    assert flags == abi.InitFlag.ASYNC_READ | abi.InitFlag.BIG_WRITES | abi.InitFlag.MAX_PAGES
    assert flags2 == 0
    assert session.state is SessionState.RUNNING
    assert session.negotiated_minor == 41
    assert session.negotiated_flags == flags


def test_init_keeps_an_older_kernel_minor(fs: FakeFilesystem) -> None:
    session = FuseSession(fs)
    minor = struct.unpack_from("<II", body_of(exchange(session, init_request(minor=37))))[1]
    assert minor == 37 == session.negotiated_minor


def test_init_without_max_pages_offered(fs: FakeFilesystem) -> None:
    session = FuseSession(fs)
    reply = exchange(session, init_request(flags=abi.InitFlag.ASYNC_READ))
    flags = struct.unpack(INIT_OUT, body_of(reply))[3]
    assert flags == abi.InitFlag.ASYNC_READ


def test_init_high_flags_travel_in_flags2_with_init_ext(fs: FakeFilesystem) -> None:
    session = FuseSession(fs, want_flags=abi.InitFlag.DIRECT_IO_ALLOW_MMAP
                          | abi.InitFlag.PASSTHROUGH)
    fields = struct.unpack(INIT_OUT, body_of(exchange(session, init_request())))
    flags, flags2 = fields[3], fields[10]
    assert flags == abi.InitFlag.MAX_PAGES | abi.InitFlag.INIT_EXT
    assert flags2 == abi.InitFlag.DIRECT_IO_ALLOW_MMAP >> 32  # PASSTHROUGH was not offered
    assert session.negotiated_flags == (abi.InitFlag.MAX_PAGES | abi.InitFlag.INIT_EXT
                                        | abi.InitFlag.DIRECT_IO_ALLOW_MMAP)


def test_init_of_a_future_major_asks_for_ours_and_waits_for_a_second_init(
        fs: FakeFilesystem) -> None:
    session = FuseSession(fs)
    reply = exchange(session, init_request(major=8))
    assert body_of(reply) == struct.pack("<II", 7, abi.OUR_MAX_MINOR)
    assert session.state is SessionState.AWAITING_INIT
    assert session.negotiated_minor is None
    assert error_of(exchange(session, init_request(unique=2))) == 0
    assert session.negotiated_minor == 41


@pytest.mark.parametrize(("major", "minor"), [(7, 30), (6, 45)])
def test_init_of_an_unsupported_version_is_refused(fs: FakeFilesystem, major: int,
                                                   minor: int) -> None:
    session = FuseSession(fs)
    assert error_of(exchange(session, init_request(major=major, minor=minor))) == errno.EPROTO
    assert session.state is SessionState.AWAITING_INIT


def test_second_init_is_refused(session: FuseSession) -> None:
    assert error_of(exchange(session, init_request(unique=9))) == errno.EIO
    assert session.state is SessionState.RUNNING


def test_requests_before_init_get_eio_without_the_filesystem(fs: FakeFilesystem) -> None:
    session = FuseSession(fs)
    request = session.parse(kernel_request(abi.Opcode.LOOKUP, b"vfio\0"))
    assert session.classify(request) is Dispatch.LOCK_FREE
    assert error_of(session.handle(request)) == errno.EIO
    assert exchange(session, kernel_request(abi.Opcode.FORGET, struct.pack("<Q", 1))) is None
    assert fs.calls == []


def test_read_buffer_size(fs: FakeFilesystem) -> None:
    assert FuseSession(fs).read_buffer_size == 131072 + 80
    assert FuseSession(fs, max_write=4096).read_buffer_size == 8192


@pytest.mark.parametrize("max_write", [0, 5000, 0x10000 * 4096])
def test_max_write_must_be_whole_pages_within_max_pages(fs: FakeFilesystem,
                                                        max_write: int) -> None:
    with pytest.raises(ValueError):
        FuseSession(fs, max_write=max_write)


def test_parse_uses_the_negotiated_minor(fs: FakeFilesystem) -> None:
    session = FuseSession(fs)
    exchange(session, init_request(minor=38))
    buf = bytearray(kernel_request(abi.Opcode.LOOKUP, b"vfio\0" + bytes(3) + bytes(8)))
    struct.pack_into("<H", buf, 36, 1)  # one 8-byte extension word after the name
    request = session.parse(buf)
    assert isinstance(request, codec.Lookup) and request.name == b"vfio"


# =========================================================================== errors
def test_unknown_opcodes_get_enosys(session: FuseSession) -> None:
    assert error_of(exchange(session, kernel_request(abi.Opcode.GETXATTR, b"\0" * 16))) == \
        errno.ENOSYS
    assert error_of(exchange(session, kernel_request(999))) == errno.ENOSYS


def test_cuse_init_on_a_fuse_session_gets_enosys(session: FuseSession) -> None:
    reply = exchange(session, kernel_request(abi.Opcode.CUSE_INIT, struct.pack("<4I", 7, 38,
                                                                               0, 0)))
    assert error_of(reply) == errno.ENOSYS


def test_kernel_error_becomes_its_errno(session: FuseSession) -> None:
    reply = exchange(session, kernel_request(abi.Opcode.LOOKUP, b"nothing\0", unique=33))
    assert out_header(reply) == (16, -errno.ENOENT, 33)


@pytest.mark.parametrize("bad_errno", [0, -5, 4096])
def test_unusable_errno_becomes_eio(session: FuseSession, fs: FakeFilesystem,
                                    bad_errno: int) -> None:
    fs.failure = KernelError(bad_errno, "bug")
    assert error_of(exchange(session, kernel_request(abi.Opcode.OPEN, struct.pack("<II", 0, 0),
                                                     nodeid=CONTAINER))) == errno.EIO


def test_any_other_exception_becomes_eio_and_a_traceback(session: FuseSession,
                                                         fs: FakeFilesystem,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    fs.failure = ZeroDivisionError("engine bug")
    with caplog.at_level(logging.ERROR, logger="ioasidfs.fuse"):
        reply = exchange(session, kernel_request(abi.Opcode.OPEN, struct.pack("<II", 0, 0),
                                                 nodeid=CONTAINER, unique=44))
    assert out_header(reply) == (16, -errno.EIO, 44)
    [record] = caplog.records
    assert "OPEN" in record.getMessage() and record.exc_info is not None


def test_a_failing_forget_is_logged_and_unanswered(session: FuseSession, fs: FakeFilesystem,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    fs.failure = RuntimeError("bug")
    with caplog.at_level(logging.ERROR, logger="ioasidfs.fuse"):
        assert exchange(session, kernel_request(abi.Opcode.FORGET, struct.pack("<Q", 1))) is None
    assert caplog.records


def test_reject_answers_a_malformed_request_with_eio(session: FuseSession) -> None:
    with pytest.raises(ProtocolError) as caught:
        session.parse(kernel_request(abi.Opcode.IOCTL, b"\0" * 8, unique=55))
    assert out_header(session.reject(caught.value)) == (16, -errno.EIO, 55)


def test_reject_stays_silent_without_a_header_or_for_forget(session: FuseSession) -> None:
    assert session.reject(ProtocolError("short read")) is None
    with pytest.raises(ProtocolError) as caught:
        session.parse(kernel_request(abi.Opcode.FORGET, b"\0" * 4))
    assert session.reject(caught.value) is None


# =========================================================================== operations
def test_lookup_replies_with_an_entry(session: FuseSession) -> None:
    reply = exchange(session, kernel_request(abi.Opcode.LOOKUP, b"vfio\0", nodeid=ROOT))
    nodeid, generation, entry_valid, attr_valid = struct.unpack_from("<QQQQ", body_of(reply))
    assert (nodeid, generation, entry_valid, attr_valid) == (VFIO_DIR, 0, 1, 1)
    assert len(body_of(reply)) == 128


def test_forget_and_batch_forget_call_the_filesystem_without_reply(session: FuseSession,
                                                                   fs: FakeFilesystem) -> None:
    assert exchange(session, kernel_request(abi.Opcode.FORGET, struct.pack("<Q", 2),
                                            nodeid=CONTAINER)) is None
    body = struct.pack("<II", 2, 0) + struct.pack("<QQQQ", IOASID, 1, VFIO_DIR, 3)
    assert exchange(session, kernel_request(abi.Opcode.BATCH_FORGET, body, nodeid=0)) is None
    assert fs.calls == [("forget", CONTAINER, 2), ("forget", IOASID, 1),
                        ("forget", VFIO_DIR, 3)]


def test_interrupt_gets_no_reply(session: FuseSession) -> None:
    assert exchange(session, kernel_request(abi.Opcode.INTERRUPT, struct.pack("<Q", 6))) is None


def test_getattr(session: FuseSession) -> None:
    reply = exchange(session, kernel_request(abi.Opcode.GETATTR, struct.pack("<IIQ", 0, 0, 0),
                                             nodeid=IOASID))
    body = body_of(reply)
    assert len(body) == 104
    assert struct.unpack_from("<Q", body, 16)[0] == IOASID
    assert struct.unpack_from("<I", body, 16 + 60)[0] == 0o100666


def test_setattr_passes_ownership_and_mode_only(session: FuseSession, fs: FakeFilesystem) -> None:
    valid = abi.SetattrValid.MODE | abi.SetattrValid.SIZE
    body = struct.pack("<IIQQQQQQIIIIIIII", valid, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0o100600, 0,
                       0, 0, 0)
    reply = exchange(session, kernel_request(abi.Opcode.SETATTR, body, nodeid=CONTAINER))
    assert fs.calls == [("setattr", CONTAINER, 0o100600, None, None)]
    assert struct.unpack_from("<I", body_of(reply), 16 + 60)[0] == 0o100600


def test_open_maps_the_reply_to_fopen_flags(session: FuseSession, fs: FakeFilesystem) -> None:
    reply = exchange(session, kernel_request(abi.Opcode.OPEN, struct.pack("<II", 0o2, 0),
                                             nodeid=CONTAINER, pid=77))
    assert body_of(reply) == struct.pack("<QIi", 10 + CONTAINER,
                                         abi.FopenFlag.DIRECT_IO | abi.FopenFlag.NOFLUSH, 0)
    [(_, ctx, ino, flags)] = fs.calls
    assert ctx == RequestContext(pid=77, uid=1000, gid=100, unique=7)
    assert (ino, flags) == (CONTAINER, 0o2)


def test_read_and_write(session: FuseSession, fs: FakeFilesystem) -> None:
    read = struct.pack("<QQIIQII", 13, 1 << 40, 16, 0, 0, 0, 0)
    assert body_of(exchange(session, kernel_request(abi.Opcode.READ, read,
                                                    nodeid=CONTAINER))) == b"data"
    write = struct.pack("<QQIIQII", 13, 8, 3, 0, 0, 0, 0) + b"abc"
    reply = exchange(session, kernel_request(abi.Opcode.WRITE, write, nodeid=CONTAINER))
    assert body_of(reply) == struct.pack("<II", 3, 0)
    assert fs.calls == [("read", CONTAINER, 13, 1 << 40, 16), ("write", CONTAINER, 13, 8, b"abc")]


def test_read_returning_too_much_is_eio(session: FuseSession, fs: FakeFilesystem) -> None:
    fs.read_data = b"x" * 17
    read = struct.pack("<QQIIQII", 13, 0, 16, 0, 0, 0, 0)
    assert error_of(exchange(session, kernel_request(abi.Opcode.READ, read))) == errno.EIO


def test_flush_release_access(session: FuseSession, fs: FakeFilesystem) -> None:
    handle_body = struct.pack("<QIIQ", 13, 0, 0, 0)
    assert body_of(exchange(session, kernel_request(abi.Opcode.FLUSH, handle_body,
                                                    nodeid=CONTAINER))) == b""
    assert body_of(exchange(session, kernel_request(abi.Opcode.RELEASE, handle_body,
                                                    nodeid=CONTAINER, pid=0))) == b""
    assert body_of(exchange(session, kernel_request(abi.Opcode.ACCESS,
                                                    struct.pack("<II", 4, 0)))) == b""
    assert error_of(exchange(session, kernel_request(abi.Opcode.ACCESS,
                                                     struct.pack("<II", 2, 0)))) == errno.EACCES
    assert fs.calls == [("flush", CONTAINER, 13), ("release", 0, CONTAINER, 13),
                        ("access", ROOT, 4), ("access", ROOT, 2)]


def test_readlink_replies_with_the_target(session: FuseSession, fs: FakeFilesystem) -> None:
    reply = exchange(session, kernel_request(abi.Opcode.READLINK, nodeid=LINK))
    assert out_header(reply) == (16 + 7, 0, 7)
    assert body_of(reply) == b"../vfio"
    assert error_of(exchange(session, kernel_request(abi.Opcode.READLINK,
                                                     nodeid=IOASID))) == errno.EINVAL
    assert fs.calls == [("readlink", LINK), ("readlink", IOASID)]


@pytest.mark.parametrize("target", [b"", b"x" * 4096, b"a\0b"])
def test_readlink_target_the_kernel_cannot_take_is_eio(session: FuseSession, fs: FakeFilesystem,
                                                      target: bytes) -> None:
    fs.link_target = target
    assert error_of(exchange(session, kernel_request(abi.Opcode.READLINK,
                                                     nodeid=LINK))) == errno.EIO


def test_ioctl_result_and_data(session: FuseSession, fs: FakeFilesystem) -> None:
    fs.ioctl_data = b"12345678"
    reply = exchange(session, ioctl_request(IDENTITY_IOCTL, b"abcdefgh", 8))
    assert body_of(reply) == struct.pack("<iIII", 5, 0, 0, 0) + b"12345678"
    [(_, ctx, ino, fh, cmd, arg, in_data, out_size)] = fs.calls
    assert (ino, fh, cmd, arg, in_data, out_size) == (CONTAINER, 13, IDENTITY_IOCTL, 0x1000,
                                                      b"abcdefgh", 8)


def test_ioctl_data_beyond_out_size_is_eio(session: FuseSession, fs: FakeFilesystem) -> None:
    fs.ioctl_data = b"123456789"
    assert error_of(exchange(session, ioctl_request(IDENTITY_IOCTL, b"", 8))) == errno.EIO


def test_ioctl_enosys_is_what_the_kernel_turns_into_enotty(session: FuseSession,
                                                           fs: FakeFilesystem) -> None:
    fs.failure = KernelError(errno.ENOSYS, "unknown ioctl")
    assert error_of(exchange(session, ioctl_request(PLAIN_IOCTL))) == errno.ENOSYS


def test_poll(session: FuseSession) -> None:
    reply = exchange(session, kernel_request(abi.Opcode.POLL, struct.pack("<QQII", 13, 9, 1, 5),
                                             nodeid=CONTAINER))
    assert body_of(reply) == struct.pack("<II", 1, 0)


def test_directory_listing(session: FuseSession, fs: FakeFilesystem) -> None:
    fh = struct.unpack_from("<Q", body_of(exchange(
        session, kernel_request(abi.Opcode.OPENDIR, struct.pack("<II", 0, 0)))))[0]
    read = struct.pack("<QQIIQII", fh, 2, 4096, 0, 0, 0, 0)
    listing = body_of(exchange(session, kernel_request(abi.Opcode.READDIR, read)))
    names = []
    while listing:
        _ino, _next, namelen, _type = struct.unpack_from("<QQII", listing)
        names.append(listing[24:24 + namelen])
        listing = listing[(24 + namelen + 7) & ~7:]
    assert names == [b"vfio", b"ioasid"]
    release = struct.pack("<QIIQ", fh, 0, 0, 0)
    assert body_of(exchange(session, kernel_request(abi.Opcode.RELEASEDIR, release))) == b""
    assert fs.calls[-1] == ("releasedir", ROOT, fh)


def test_readdirplus_looks_up_real_entries_only(session: FuseSession, fs: FakeFilesystem) -> None:
    read = struct.pack("<QQIIQII", 101, 0, 4096, 0, 0, 0, 0)
    listing = body_of(exchange(session, kernel_request(abi.Opcode.READDIRPLUS, read)))
    assert [c for c in fs.calls if c[0] == "lookup"] == [("lookup", ROOT, b"vfio"),
                                                          ("lookup", ROOT, b"ioasid")]
    assert struct.unpack_from("<Q", listing)[0] == 0  # "." carries no entry
    assert len(listing) == 4 * 160


def test_readdirplus_lists_a_vanished_entry_without_attributes(session: FuseSession,
                                                              fs: FakeFilesystem) -> None:
    read = struct.pack("<QQIIQII", 101, 3, 4096, 0, 0, 0, 0)
    listing = body_of(exchange(session, kernel_request(abi.Opcode.READDIRPLUS, read,
                                                       nodeid=VFIO_DIR)))
    assert fs.calls[-1] == ("lookup", VFIO_DIR, b"ioasid")  # the fake has no such child
    assert struct.unpack_from("<Q", listing)[0] == 0
    assert listing[152:152 + 6] == b"ioasid"


def test_readdirplus_not_negotiated_is_enosys(fs: FakeFilesystem) -> None:
    session = FuseSession(fs)
    exchange(session, init_request())
    read = struct.pack("<QQIIQII", 101, 0, 4096, 0, 0, 0, 0)
    assert error_of(exchange(session, kernel_request(abi.Opcode.READDIRPLUS, read))) == \
        errno.ENOSYS


def test_statfs(session: FuseSession) -> None:
    body = body_of(exchange(session, kernel_request(abi.Opcode.STATFS)))
    assert len(body) == 80 and struct.unpack_from("<5QII", body)[5:] == (4096, 255)


def test_destroy_finishes_the_session(session: FuseSession, fs: FakeFilesystem) -> None:
    assert body_of(exchange(session, kernel_request(abi.Opcode.DESTROY, unique=90))) == b""
    assert fs.calls == [("destroy",)]
    assert session.state is SessionState.FINISHED
    assert error_of(exchange(session, kernel_request(abi.Opcode.STATFS))) == errno.EIO
    assert error_of(exchange(session, init_request())) == errno.EIO


# =========================================================================== classify
@pytest.mark.parametrize(("buf", "dispatch"), [
    (init_request(), Dispatch.LOCK_FREE),
    (kernel_request(abi.Opcode.FORGET, struct.pack("<Q", 1)), Dispatch.LOCK_FREE),
    (kernel_request(abi.Opcode.INTERRUPT, struct.pack("<Q", 1)), Dispatch.LOCK_FREE),
    (kernel_request(abi.Opcode.STATFS), Dispatch.LOCK_FREE),
    (kernel_request(abi.Opcode.GETXATTR, bytes(8)), Dispatch.LOCK_FREE),
    (ioctl_request(IDENTITY_IOCTL, bytes(8), 8), Dispatch.LOCK_FREE),
    (ioctl_request(BLOCKING_IOCTL), Dispatch.WORKER),
    (ioctl_request(PLAIN_IOCTL), Dispatch.INLINE),
    (kernel_request(abi.Opcode.LOOKUP, b"vfio\0"), Dispatch.LOCK_FREE),  # metadata: no engine
    (kernel_request(abi.Opcode.GETATTR, bytes(16)), Dispatch.LOCK_FREE),
    (kernel_request(abi.Opcode.READLINK), Dispatch.LOCK_FREE),
    (kernel_request(abi.Opcode.OPEN, struct.pack("<II", 0, 0)), Dispatch.INLINE),
    (kernel_request(abi.Opcode.DESTROY), Dispatch.INLINE),
])
def test_classify(session: FuseSession, buf: bytes, dispatch: Dispatch) -> None:
    assert session.classify(session.parse(buf)) is dispatch


def test_classify_falls_back_to_a_worker_when_the_filesystem_fails(
        session: FuseSession, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="ioasidfs.fuse"):
        assert session.classify(session.parse(ioctl_request(FAILING_IOCTL))) is Dispatch.WORKER
    assert caplog.records


# =========================================================================== CUSE
def cuse_init_request(minor: int = 38) -> bytes:
    return kernel_request(abi.Opcode.CUSE_INIT, struct.pack("<IIII", 7, minor, 0, 1), nodeid=0)


def test_cuse_init_names_the_device(fs: FakeFilesystem) -> None:
    session = CuseSession(fs, device_ino=CONTAINER, devname="vfio/vfio", dev_minor=5)
    reply = exchange(session, cuse_init_request())
    assert body_of(reply) == (struct.pack("<8I40x", 7, 38, 0, 0, 131072, 131072, 0, 5)
                              + b"DEVNAME=vfio/vfio\0")
    assert session.state is SessionState.RUNNING and session.negotiated_minor == 38


def test_cuse_operations_reach_the_device_inode(fs: FakeFilesystem) -> None:
    session = CuseSession(fs, device_ino=CONTAINER, devname="vfio/vfio")
    exchange(session, cuse_init_request())
    reply = exchange(session, kernel_request(abi.Opcode.OPEN, struct.pack("<II", 2, 0),
                                             nodeid=0))
    assert struct.unpack_from("<Q", body_of(reply))[0] == 10 + CONTAINER
    assert session.classify(session.parse(ioctl_request(BLOCKING_IOCTL, nodeid=0))) is \
        Dispatch.WORKER
    exchange(session, ioctl_request(PLAIN_IOCTL, nodeid=0))
    assert [call[2] for call in fs.calls] == [CONTAINER, CONTAINER]


def test_cuse_has_no_tree(fs: FakeFilesystem) -> None:
    session = CuseSession(fs, device_ino=CONTAINER, devname="ioasid")
    exchange(session, cuse_init_request())
    assert error_of(exchange(session, kernel_request(abi.Opcode.LOOKUP, b"x\0"))) == errno.ENOSYS
    assert session.classify(session.parse(kernel_request(abi.Opcode.LOOKUP, b"x\0"))) is \
        Dispatch.LOCK_FREE


def test_cuse_refuses_fuse_init_and_old_kernels(fs: FakeFilesystem) -> None:
    session = CuseSession(fs, device_ino=CONTAINER, devname="ioasid")
    assert error_of(exchange(session, init_request())) == errno.EIO
    assert error_of(exchange(session, cuse_init_request(minor=11))) == errno.EPROTO
    assert session.state is SessionState.AWAITING_INIT


@pytest.mark.parametrize("devname", ["", "/dev/vfio/1", "a\0b"])
def test_cuse_device_name_must_be_relative(fs: FakeFilesystem, devname: str) -> None:
    with pytest.raises(ValueError):
        CuseSession(fs, device_ino=CONTAINER, devname=devname)


def test_cuse_unrestricted_ioctl_is_asked_for_when_wanted(fs: FakeFilesystem) -> None:
    session = CuseSession(fs, device_ino=CONTAINER, devname="vfio/vfio", unrestricted_ioctl=True)
    reply = exchange(session, cuse_init_request())
    assert struct.unpack_from("<4I", body_of(reply))[3] == abi.CuseInitFlag.UNRESTRICTED_IOCTL


def test_cuse_unrestricted_ioctl_not_offered_is_eproto(fs: FakeFilesystem) -> None:
    session = CuseSession(fs, device_ino=CONTAINER, devname="vfio/vfio", unrestricted_ioctl=True)
    request = kernel_request(abi.Opcode.CUSE_INIT, struct.pack("<IIII", 7, 38, 0, 0), nodeid=0)
    assert error_of(exchange(session, request)) == errno.EPROTO
    assert session.state is SessionState.AWAITING_INIT
