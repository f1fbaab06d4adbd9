"""Bytes-level tests of ioasidfs.fuse.codec and abi.

Requests are built the way the kernel builds them, with struct formats written out here
independently of ``abi``, so a wrong layout in ``abi`` shows up as a failing test rather than
as two identical mistakes agreeing with each other.
"""
from __future__ import annotations

import struct

import pytest

from ioasidfs.errors import ProtocolError
from ioasidfs.fuse import abi, codec
from ioasidfs.fuse.codec import Attr, DirEntry, EntryParams, FsStats, MalformedRequest

IN_HEADER = "<IIQQIIIHH"
OUT_HEADER = "<IiQ"
ATTR = "<QQQQQQIIIIIIIIII"
LATEST_MINOR = 45


def kernel_request(opcode: int, body: bytes = b"", *, unique: int = 7, nodeid: int = 1,
                   uid: int = 1000, gid: int = 100, pid: int = 4242,
                   extension: bytes = b"") -> bytes:
    """One request as read from /dev/fuse: header, body, then any 8-byte-unit extensions."""
    assert len(extension) % 8 == 0
    length = 40 + len(body) + len(extension)
    header = struct.pack(IN_HEADER, length, opcode, unique, nodeid, uid, gid, pid,
                         len(extension) // 8, 0)
    return header + body + extension


def parse(buf: bytes | bytearray | memoryview, minor: int = LATEST_MINOR) -> codec.Request:
    return codec.parse_request(buf, minor)


def out(unique: int, body: bytes = b"", error: int = 0) -> bytes:
    return struct.pack(OUT_HEADER, 16 + len(body), error, unique) + body


def attr_bytes(ino: int, mode: int, size: int = 0, nlink: int = 1, uid: int = 0, gid: int = 0,
               times: tuple[int, int, int] = (0, 0, 0), rdev: int = 0,
               blksize: int = 4096) -> bytes:
    return struct.pack(ATTR, ino, size, (size + 511) // 512, *times, 0, 0, 0, mode, nlink, uid,
                       gid, rdev, blksize, 0)


# =========================================================================== abi
@pytest.mark.parametrize(("layout", "kernel_sizeof"), [
    (abi.IN_HEADER, 40), (abi.OUT_HEADER, 16), (abi.CUSE_INIT_IN, 16), (abi.INIT_OUT, 64),
    (abi.CUSE_INIT_OUT, 72), (abi.SETATTR_IN, 88), (abi.ATTR, 88), (abi.ENTRY_OUT, 128 - 88),
    (abi.ATTR_OUT, 104 - 88), (abi.STATFS_OUT, 80), (abi.READ_IN, 40), (abi.WRITE_IN, 40),
    (abi.FLUSH_IN, 24), (abi.RELEASE_IN, 24), (abi.IOCTL_IN, 32), (abi.IOCTL_OUT, 16),
    (abi.POLL_IN, 24), (abi.POLL_OUT, 8), (abi.DIRENT, 24), (abi.GETATTR_IN, 16),
    (abi.OPEN_IN, 8), (abi.OPEN_OUT, 16), (abi.WRITE_OUT, 8), (abi.ACCESS_IN, 8),
    (abi.FORGET_ONE, 16), (abi.BATCH_FORGET_IN, 8), (abi.INTERRUPT_IN, 8),
])
def test_struct_sizes_match_the_kernel(layout: struct.Struct, kernel_sizeof: int) -> None:
    assert layout.size == kernel_sizeof


def test_opcode_numbers() -> None:
    assert [abi.Opcode.INIT.value, abi.Opcode.IOCTL.value, abi.Opcode.READDIRPLUS.value,
            abi.Opcode.CUSE_INIT.value] == [26, 39, 44, 4096]


def test_init_flags_span_64_bits() -> None:
    assert abi.InitFlag.MAX_PAGES == 1 << 22
    assert abi.InitFlag.INIT_EXT == 1 << 30
    assert abi.InitFlag.DIRECT_IO_ALLOW_MMAP == 1 << 36
    assert abi.FopenFlag.NOFLUSH == 1 << 5


# =========================================================================== header
def test_header_fields() -> None:
    request = parse(kernel_request(abi.Opcode.STATFS, unique=99, nodeid=5, uid=1, gid=2, pid=3))
    assert request == codec.StatFs(codec.RequestHeader(40, abi.Opcode.STATFS, 99, 5, 1, 2, 3))


def test_truncated_header_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse(kernel_request(abi.Opcode.STATFS)[:39])


def test_length_mismatch_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(kernel_request(abi.Opcode.STATFS) + b"\0" * 8)
    assert not isinstance(caught.value, MalformedRequest)


def test_short_body_is_malformed_and_keeps_the_header() -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse(kernel_request(abi.Opcode.IOCTL, b"\0" * 31, unique=11))
    assert caught.value.header.unique == 11
    assert caught.value.expects_reply


def test_malformed_forget_expects_no_reply() -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse(kernel_request(abi.Opcode.FORGET, b"\0" * 4))
    assert not caught.value.expects_reply


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_accepts_any_buffer_and_copies_out_of_it(wrap: type) -> None:
    raw = bytearray(kernel_request(abi.Opcode.WRITE, struct.pack("<QQIIQII", 1, 0, 3, 0, 0, 2, 0)
                                   + b"abc"))
    request = parse(wrap(raw))
    raw[-3:] = b"xyz"  # the I/O layer reuses its buffer for the next read
    assert isinstance(request, codec.Write) and request.data == b"abc"


def test_extensions_are_stripped_from_7_38() -> None:
    body = b"name\0"
    buf = kernel_request(abi.Opcode.LOOKUP, body, extension=b"\xff" * 16)
    request = parse(buf, minor=38)
    assert isinstance(request, codec.Lookup) and request.name == b"name"
    assert request.header.length == len(buf)


def test_extension_field_is_padding_before_7_38() -> None:
    body = struct.pack("<QQIIQII", 1, 0, 4, 0, 0, 0, 0) + b"data"
    buf = bytearray(kernel_request(abi.Opcode.WRITE, body))
    struct.pack_into("<H", buf, 36, 0xFFFF)  # garbage in what was padding
    request = parse(buf, minor=37)
    assert isinstance(request, codec.Write) and request.data == b"data"


def test_extensions_longer_than_the_request_are_malformed() -> None:
    buf = bytearray(kernel_request(abi.Opcode.STATFS))
    struct.pack_into("<H", buf, 36, 1)
    with pytest.raises(MalformedRequest):
        parse(buf, minor=38)


# =========================================================================== bodies
def test_init_with_flags2() -> None:
    flags = int(abi.InitFlag.INIT_EXT | abi.InitFlag.MAX_PAGES)
    body = struct.pack("<IIIII44x", 7, 45, 131072, flags, 1 << 4)
    request = parse(kernel_request(abi.Opcode.INIT, body), minor=0)
    assert request == codec.Init(request.header, 7, 45, 131072,
                                 flags | int(abi.InitFlag.DIRECT_IO_ALLOW_MMAP))


def test_init_without_init_ext_ignores_flags2() -> None:
    body = struct.pack("<IIIII44x", 7, 45, 0, int(abi.InitFlag.MAX_PAGES), 0xFFFF)
    request = parse(kernel_request(abi.Opcode.INIT, body), minor=0)
    assert isinstance(request, codec.Init) and request.flags == abi.InitFlag.MAX_PAGES


def test_init_of_an_old_kernel_has_no_flags2() -> None:
    body = struct.pack("<IIII", 7, 31, 4096, int(abi.InitFlag.INIT_EXT))
    request = parse(kernel_request(abi.Opcode.INIT, body), minor=0)
    assert isinstance(request, codec.Init)
    assert (request.minor, request.flags) == (31, abi.InitFlag.INIT_EXT)


def test_cuse_init() -> None:
    request = parse(kernel_request(abi.Opcode.CUSE_INIT, struct.pack("<IIII", 7, 38, 0, 1)),
                    minor=0)
    assert request == codec.CuseInit(request.header, 7, 38, 1)


def test_lookup() -> None:
    request = parse(kernel_request(abi.Opcode.LOOKUP, b"vfio\0", nodeid=1))
    assert request == codec.Lookup(request.header, b"vfio")


@pytest.mark.parametrize("body", [b"vfio", b"\0", b""])
def test_lookup_without_a_terminated_name_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse(kernel_request(abi.Opcode.LOOKUP, body))


def test_forget() -> None:
    request = parse(kernel_request(abi.Opcode.FORGET, struct.pack("<Q", 3), nodeid=9))
    assert request == codec.Forget(request.header, 3)


def test_batch_forget() -> None:
    body = struct.pack("<II", 2, 0) + struct.pack("<QQ", 5, 1) + struct.pack("<QQ", 6, 2)
    request = parse(kernel_request(abi.Opcode.BATCH_FORGET, body, nodeid=0))
    assert request == codec.BatchForget(request.header, ((5, 1), (6, 2)))


def test_batch_forget_with_missing_records_is_malformed() -> None:
    body = struct.pack("<II", 3, 0) + struct.pack("<QQ", 5, 1)
    with pytest.raises(MalformedRequest):
        parse(kernel_request(abi.Opcode.BATCH_FORGET, body))


@pytest.mark.parametrize(("getattr_flags", "fh"), [(0, None), (1, 77)])
def test_getattr(getattr_flags: int, fh: int | None) -> None:
    request = parse(kernel_request(abi.Opcode.GETATTR, struct.pack("<IIQ", getattr_flags, 0, 77)))
    assert request == codec.GetAttr(request.header, fh)


def setattr_body(valid: int) -> bytes:
    return struct.pack("<IIQQQQQQIIIIIIII", valid, 0, 12, 4096, 0, 10, 20, 30, 1, 2, 3,
                       0o100600, 0, 1000, 100, 0)


def test_setattr_fields_present_only_when_valid() -> None:
    valid = abi.SetattrValid
    request = parse(kernel_request(abi.Opcode.SETATTR,
                                   setattr_body(valid.MODE | valid.GID | valid.MTIME)))
    assert request == codec.SetAttr(request.header, int(valid.MODE | valid.GID | valid.MTIME),
                                    fh=None, size=None, mode=0o100600, uid=None, gid=100,
                                    atime_ns=None, mtime_ns=20_000_000_002)


def test_setattr_everything() -> None:
    valid = 0x7FF
    request = parse(kernel_request(abi.Opcode.SETATTR, setattr_body(valid)))
    assert request == codec.SetAttr(request.header, valid, fh=12, size=4096, mode=0o100600,
                                    uid=1000, gid=100, atime_ns=10_000_000_001,
                                    mtime_ns=20_000_000_002)


def test_open_and_opendir() -> None:
    request = parse(kernel_request(abi.Opcode.OPEN, struct.pack("<II", 0o2, 0)))
    assert request == codec.Open(request.header, 0o2)
    request = parse(kernel_request(abi.Opcode.OPENDIR, struct.pack("<II", 0o200000, 0)))
    assert request == codec.OpenDir(request.header, 0o200000)


def test_read_readdir_readdirplus() -> None:
    body = struct.pack("<QQIIQII", 3, 1 << 40, 4096, 2, 0xAB, 0o2, 0)
    request = parse(kernel_request(abi.Opcode.READ, body))
    assert request == codec.Read(request.header, 3, 1 << 40, 4096, 0o2)
    request = parse(kernel_request(abi.Opcode.READDIR, body))
    assert request == codec.ReadDir(request.header, 3, 1 << 40, 4096)
    request = parse(kernel_request(abi.Opcode.READDIRPLUS, body))
    assert request == codec.ReadDirPlus(request.header, 3, 1 << 40, 4096)


def test_write() -> None:
    body = struct.pack("<QQIIQII", 4, 8, 5, 0, 0, 0o1, 0) + b"hello"
    request = parse(kernel_request(abi.Opcode.WRITE, body))
    assert request == codec.Write(request.header, 4, 8, b"hello", 0o1)


@pytest.mark.parametrize("data", [b"hell", b"hello!"])
def test_write_size_must_match_its_data(data: bytes) -> None:
    body = struct.pack("<QQIIQII", 4, 8, 5, 0, 0, 0o1, 0) + data
    with pytest.raises(MalformedRequest):
        parse(kernel_request(abi.Opcode.WRITE, body))


def test_flush_release_releasedir() -> None:
    request = parse(kernel_request(abi.Opcode.FLUSH, struct.pack("<QIIQ", 5, 0, 0, 0xDEAD)))
    assert request == codec.Flush(request.header, 5, 0xDEAD)
    body = struct.pack("<QIIQ", 5, 0o2, 1, 0xBEEF)
    request = parse(kernel_request(abi.Opcode.RELEASE, body, pid=0))
    assert request == codec.Release(request.header, 5, 0o2, 1, 0xBEEF)
    assert request.header.pid == 0
    request = parse(kernel_request(abi.Opcode.RELEASEDIR, body))
    assert request == codec.ReleaseDir(request.header, 5)


def test_restricted_ioctl_without_data() -> None:
    body = struct.pack("<QIIQII", 9, 0, 0x3B64, 0x7FFD_0000_1000, 0, 0)
    request = parse(kernel_request(abi.Opcode.IOCTL, body, pid=321))
    assert request == codec.Ioctl(request.header, 9, 0, 0x3B64, 0x7FFD_0000_1000, b"", 0, 0)


def test_sized_ioctl_carries_its_input() -> None:
    body = struct.pack("<QIIQII", 9, 0, 0xC0083B99, 0, 8, 8) + b"12345678"
    request = parse(kernel_request(abi.Opcode.IOCTL, body))
    assert isinstance(request, codec.Ioctl)
    assert (request.in_data, request.in_size, request.out_size) == (b"12345678", 8, 8)


def test_ioctl_in_size_must_match_its_data() -> None:
    body = struct.pack("<QIIQII", 9, 0, 0xC0083B99, 0, 8, 8) + b"1234"
    with pytest.raises(MalformedRequest):
        parse(kernel_request(abi.Opcode.IOCTL, body))


def test_poll_access_interrupt_destroy() -> None:
    request = parse(kernel_request(abi.Opcode.POLL, struct.pack("<QQII", 1, 2, 1, 0x41)))
    assert request == codec.Poll(request.header, 1, 2, 1, 0x41)
    request = parse(kernel_request(abi.Opcode.ACCESS, struct.pack("<II", 6, 0)))
    assert request == codec.Access(request.header, 6)
    request = parse(kernel_request(abi.Opcode.INTERRUPT, struct.pack("<Q", 6), unique=7))
    assert request == codec.Interrupt(request.header, 6)
    request = parse(kernel_request(abi.Opcode.DESTROY))
    assert request == codec.Destroy(request.header)


@pytest.mark.parametrize("opcode", [abi.Opcode.GETXATTR, abi.Opcode.FSYNC, 999])
def test_other_opcodes_are_unknown_with_their_body(opcode: int) -> None:
    request = parse(kernel_request(opcode, b"\1\2\3\4\5\6\7\0"))
    assert request == codec.Unknown(request.header, opcode, b"\1\2\3\4\5\6\7\0")


# =========================================================================== replies
def test_error_reply_is_negative_errno() -> None:
    assert codec.error_reply(5, 2) == struct.pack(OUT_HEADER, 16, -2, 5)


@pytest.mark.parametrize("errno", [0, -1, 512])
def test_error_reply_refuses_what_the_kernel_would_reject(errno: int) -> None:
    with pytest.raises(ValueError):
        codec.error_reply(5, errno)


def test_empty_and_data_replies() -> None:
    assert codec.empty_reply(3) == out(3)
    assert codec.data_reply(3, b"abc") == out(3, b"abc")


def test_entry_reply() -> None:
    attr = Attr(ino=4, mode=0o100666, size=1000, uid=1, gid=2, atime=10, mtime=20, ctime=30)
    reply = codec.entry_reply(8, attr, EntryParams(entry_timeout=2.5, attr_timeout=1.0))
    expected = (struct.pack("<QQQQII", 4, 0, 2, 1, 500_000_000, 0)
                + attr_bytes(4, 0o100666, size=1000, uid=1, gid=2, times=(10, 20, 30)))
    assert reply == out(8, expected)
    assert len(reply) == 16 + 128


def test_attr_reply() -> None:
    reply = codec.attr_reply(8, Attr(ino=1, mode=0o40755, nlink=2), EntryParams(attr_timeout=0.25))
    assert reply == out(8, struct.pack("<QII", 0, 250_000_000, 0)
                        + attr_bytes(1, 0o40755, nlink=2))


def test_fixed_replies() -> None:
    assert codec.open_reply(1, 42, 0x25) == out(1, struct.pack("<QIi", 42, 0x25, 0))
    assert codec.write_reply(1, 100) == out(1, struct.pack("<II", 100, 0))
    assert codec.poll_reply(1, 0x41) == out(1, struct.pack("<II", 0x41, 0))
    stats = FsStats(blocks=1, bfree=2, bavail=3, files=4, ffree=5, bsize=6, namelen=7, frsize=8)
    assert codec.statfs_reply(1, stats) == out(1, struct.pack("<QQQQQIIII24x", 1, 2, 3, 4, 5,
                                                             6, 7, 8, 0))


def test_readlink_request_has_no_body() -> None:
    request = parse(kernel_request(abi.Opcode.READLINK, nodeid=9))
    assert request == codec.ReadLink(codec.RequestHeader(40, 5, 7, 9, 1000, 100, 4242))


def test_readlink_reply_is_the_target_without_nul() -> None:
    target = b"../../../kernel/iommu_groups/1"
    assert codec.readlink_reply(4, target) == out(4, target)
    assert len(codec.readlink_reply(4, b"x" * 4095)) == 16 + 4095


@pytest.mark.parametrize("target", [b"", b"x" * 4096, b"a\0b"])
def test_readlink_reply_refuses_what_the_kernel_would_reject(target: bytes) -> None:
    with pytest.raises(ValueError):
        codec.readlink_reply(4, target)


def test_ioctl_reply() -> None:
    assert codec.ioctl_reply(2, 7, b"") == out(2, struct.pack("<iIII", 7, 0, 0, 0))
    assert codec.ioctl_reply(2, -1, b"xy") == out(2, struct.pack("<iIII", -1, 0, 0, 0) + b"xy")


def test_init_reply_splits_flags() -> None:
    flags = int(abi.InitFlag.MAX_PAGES | abi.InitFlag.INIT_EXT
                | abi.InitFlag.DIRECT_IO_ALLOW_MMAP)
    reply = codec.init_reply(1, minor=41, max_readahead=65536, flags=flags, max_write=131072,
                             max_pages=32)
    assert reply == out(1, struct.pack("<IIIIHHIIHHII24x", 7, 41, 65536, (1 << 22) | (1 << 30),
                                       0, 0, 131072, 1, 32, 0, 1 << 4, 0))
    assert len(reply) == 16 + 64


def test_init_version_reply_is_major_and_minor_only() -> None:
    assert codec.init_version_reply(1) == out(1, struct.pack("<II", 7, abi.OUR_MAX_MINOR))


def test_cuse_init_reply() -> None:
    reply = codec.cuse_init_reply(1, minor=38, flags=0, max_read=4096, max_write=8192,
                                  dev_major=0, dev_minor=3, info=b"DEVNAME=vfio/1\0")
    assert reply == out(1, struct.pack("<8I40x", 7, 38, 0, 0, 4096, 8192, 0, 3)
                        + b"DEVNAME=vfio/1\0")


def test_cuse_init_reply_refuses_oversized_info() -> None:
    with pytest.raises(ValueError):
        codec.cuse_init_reply(1, minor=38, flags=0, max_read=4096, max_write=4096, dev_major=0,
                              dev_minor=0, info=b"x" * 4097)


# =========================================================================== directories
def dirent(ino: int, next_offset: int, name: bytes, kind: int) -> bytes:
    record = struct.pack("<QQII", ino, next_offset, len(name), kind) + name
    return record + b"\0" * (-len(record) % 8)


ENTRIES = [DirEntry(1, b".", abi.DirentType.DIR, 1), DirEntry(1, b"..", abi.DirentType.DIR, 2),
           DirEntry(2, b"vfio", abi.DirentType.DIR, 3),
           DirEntry(3, b"ioasid", abi.DirentType.REG, 4)]


def test_readdir_packs_aligned_records() -> None:
    reply = codec.readdir_reply(1, ENTRIES, 4096)
    records = [dirent(e.ino, e.next_offset, e.name, e.type) for e in ENTRIES]
    assert reply == out(1, b"".join(records))
    assert [len(r) for r in records] == [32, 32, 32, 32]
    assert (len(reply) - 16) % 8 == 0


def test_readdir_leaves_out_entries_that_do_not_fit() -> None:
    assert codec.readdir_reply(1, ENTRIES, 64) == out(1, dirent(1, 1, b".", 4)
                                                      + dirent(1, 2, b"..", 4))
    assert codec.readdir_reply(1, ENTRIES, 95) == codec.readdir_reply(1, ENTRIES, 64)
    assert codec.readdir_reply(1, ENTRIES, 31) == out(1)


def test_readdir_exact_fit_of_a_name_of_eight() -> None:
    entry = DirEntry(9, b"12345678", abi.DirentType.REG, 1)
    assert codec.readdir_reply(1, [entry], 32) == out(1, dirent(9, 1, b"12345678", 8))


def test_readdirplus_looks_up_only_what_fits() -> None:
    looked_up: list[bytes] = []

    def attr_of(entry: DirEntry) -> Attr | None:
        looked_up.append(entry.name)
        return None if entry.name in (b".", b"..") else Attr(ino=entry.ino, mode=0o40755)

    params = EntryParams(entry_timeout=1.0, attr_timeout=2.0)
    reply = codec.readdirplus_reply(1, ENTRIES, 3 * 160, attr_of, params)
    assert looked_up == [b".", b"..", b"vfio"]
    no_entry = bytes(128)
    vfio_entry = struct.pack("<QQQQII", 2, 0, 1, 2, 0, 0) + attr_bytes(2, 0o40755)
    assert reply == out(1, no_entry + dirent(1, 1, b".", 4) + no_entry + dirent(1, 2, b"..", 4)
                        + vfio_entry + dirent(2, 3, b"vfio", 4))


@pytest.mark.parametrize("name", [b"", b"a/b", b"a\0b", b"x" * 1025])
def test_dir_entry_refuses_names_the_kernel_would_reject(name: bytes) -> None:
    with pytest.raises(ValueError):
        DirEntry(1, name, abi.DirentType.REG, 1)


def test_dir_entry_refuses_a_zero_next_offset() -> None:
    with pytest.raises(ValueError):
        DirEntry(1, b"a", abi.DirentType.REG, 0)
