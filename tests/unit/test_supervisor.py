"""The supervisor against a real seccomp filter, with a fake handler instead of the filesystem.

A forked child installs a filter (NO_NEW_PRIVS: no root needed) trapping a few private ioctl
numbers, FIONREAD and mmap() of files, issues them, and reports what its calls returned. Every
kind of answer is exercised: a value, an errno, CONTINUE (the fd is not ours, or the handler
says so), a new fd (ADDFD|SEND, O_CLOEXEC), a handler crash (EIO), and the end of supervision
when the last filtered task exits.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import json
import os
import socket
from pathlib import Path
from typing import Callable

import pytest
import trio

from ioasidfs import seccomp
from ioasidfs.client import ProcessMemory
from ioasidfs.errors import KernelError
from ioasidfs.supervisor import NewFile, supervise
from ioasidfs.uapi.ioctl import IO

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 only")

T_VALUE = IO("Z", 1)
T_ERRNO = IO("Z", 2)
T_NEWFD = IO("Z", 3)
T_CRASH = IO("Z", 4)
T_UNOPENABLE = IO("Z", 5)
FIONREAD = 0x541B
MAPPED_ADDRESS = 0x5000_0000_0000


class FakeNewFile:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.abandoned = False

    def open(self) -> int:
        if self.path is None:
            raise KernelError(errno.ENXIO, "cannot open")
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)

    def abandon(self) -> None:
        self.abandoned = True


class FakeHandler:
    def __init__(self, ours: int, new_file_path: str, ours_file: int = -1) -> None:
        self.ours = ours
        self.ours_file = ours_file
        self.new_file_path = new_file_path
        self.calls: list[tuple[int, int, int, int]] = []
        self.mmaps: list[tuple[int, int, int, int, int, int]] = []
        self.unopenable = FakeNewFile(None)

    def may_be_ours(self, pid: int, fd: int) -> bool:
        return fd in (self.ours, self.ours_file)

    def trapped_mmap(self, pid: int, fd: int, length: int, prot: int, flags: int,
                     offset: int) -> int | None:
        self.mmaps.append((pid, fd, length, prot, flags, offset))
        if length == 0x1000:
            raise KernelError(errno.ENODEV, "no mmap")
        if length == 0x3000:
            return MAPPED_ADDRESS
        return None  # the real mmap() runs

    def trapped_ioctl(self, pid: int, fd: int, cmd: int, arg: int) -> int | NewFile | None:
        self.calls.append((pid, fd, cmd, arg))
        if cmd == T_VALUE:
            return 42 + arg
        if cmd == T_ERRNO:
            raise KernelError(errno.ENOTTY, "no such ioctl")
        if cmd == T_NEWFD:
            return FakeNewFile(self.new_file_path)
        if cmd == T_UNOPENABLE:
            return self.unopenable
        if cmd == T_CRASH:
            raise RuntimeError("a bug in the handler")
        return None  # FIONREAD: "not ours after all"


def _child(ours: int, other: int, report: int, sock: socket.socket, ours_file: int,
           other_file: int) -> None:  # pragma: no cover
    results: dict[str, object] = {}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]

    def map_(name: str, fd: int, length: int, flags: int) -> None:
        address = libc.mmap(None, length, mmap.PROT_READ, flags, fd, 0)
        if address == 2**64 - 1:
            results[name] = errno.errorcode[ctypes.get_errno()]
        elif address == MAPPED_ADDRESS:
            results[name] = "our value"  # nothing is mapped there: never touch it
        else:
            results[name] = ctypes.string_at(address, 4).decode()

    def call(name: str, fd: int, cmd: int, arg: int | bytearray = 0) -> None:
        try:
            if isinstance(arg, bytearray):
                fcntl.ioctl(fd, cmd, arg, True)
                results[name] = int.from_bytes(arg[:4], "little")
            else:
                results[name] = fcntl.ioctl(fd, cmd, arg)
        except OSError as e:
            results[name] = errno.errorcode[e.errno or 0]

    try:
        seccomp.set_no_new_privs()
        listener = seccomp.install_filter(seccomp.build_filter(
            [T_VALUE, T_ERRNO, T_NEWFD, T_CRASH, T_UNOPENABLE, FIONREAD], trap_file_mmap=True))
        socket.send_fds(sock, [b"L"], [listener])
        os.close(listener)
        call("value", ours, T_VALUE, 5)
        call("errno", ours, T_ERRNO)
        call("not-ours", other, T_VALUE)  # CONTINUE: a pipe knows no such ioctl
        call("fionread-continued", ours, FIONREAD, bytearray(4))  # handler says None
        call("crash", ours, T_CRASH)
        call("unopenable", ours, T_UNOPENABLE)
        call("newfd", ours, T_NEWFD)
        map_("mmap-errno", ours_file, 0x1000, mmap.MAP_SHARED)
        map_("mmap-continued", ours_file, 0x2000, mmap.MAP_PRIVATE)
        map_("mmap-value", ours_file, 0x3000, mmap.MAP_SHARED)
        map_("mmap-not-ours", other_file, 0x1000, mmap.MAP_SHARED)  # never reaches the handler
        map_("mmap-anonymous", -1, 0x1000, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # not trapped
        newfd = results["newfd"]
        if isinstance(newfd, int):
            results["newfd-cloexec"] = bool(fcntl.fcntl(newfd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
            results["newfd-content"] = os.read(newfd, 100).decode()
            results["lowest-free"] = os.dup(0) - 1 == newfd
        os.write(report, json.dumps(results).encode())
    finally:
        os._exit(0)


def test_every_kind_of_answer(tmp_path: Path) -> None:
    content = tmp_path / "device"
    content.write_text("the new file")
    (tmp_path / "ours").write_bytes(b"OURS")
    (tmp_path / "other").write_bytes(b"OTHR")
    ours_file = os.open(tmp_path / "ours", os.O_RDONLY)
    other_file = os.open(tmp_path / "other", os.O_RDONLY)
    ours_r, ours_w = os.pipe()
    os.write(ours_w, b"12345")
    other_r, other_w = os.pipe()
    report_r, report_w = os.pipe()
    parent_sock, child_sock = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        _child(ours_r, other_r, report_w, child_sock, ours_file, other_file)
    child_sock.close()
    os.close(report_w)
    handler = FakeHandler(ours_r, str(content), ours_file)
    try:
        _, fds, _, _ = socket.recv_fds(parent_sock, 16, 1)
        assert len(fds) == 1

        async def main() -> None:
            with trio.fail_after(20):
                # Returns by itself once the child (the only filtered task) has exited.
                await supervise(fds[0], handler, trio.Lock())

        trio.run(main)
        results = json.loads(os.read(report_r, 65536))
    finally:
        _, status = os.waitpid(pid, 0)
        for fd in (ours_r, ours_w, other_r, other_w, report_r, ours_file, other_file):
            os.close(fd)
        parent_sock.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert results == {
        "value": 47,
        "errno": "ENOTTY",
        "not-ours": "ENOTTY",
        "fionread-continued": 5,  # the real FIONREAD ran on the pipe
        "crash": "EIO",
        "unopenable": "ENXIO",
        "newfd": results["newfd"],
        "newfd-cloexec": True,
        "newfd-content": "the new file",
        "lowest-free": True,
        "mmap-errno": "ENODEV",
        "mmap-continued": "OURS",  # the real mmap() of the file ran
        "mmap-value": "our value",
        "mmap-not-ours": "OTHR",
        "mmap-anonymous": "\0\0\0\0",
    }
    assert isinstance(results["newfd"], int) and results["newfd"] > 2
    assert handler.unopenable.abandoned
    # The handler saw the caller's thread id and the raw arguments; "not-ours" never reached it.
    assert [(fd, cmd, arg) for _, fd, cmd, arg in handler.calls] == [
        (ours_r, T_VALUE, 5), (ours_r, T_ERRNO, 0), (ours_r, FIONREAD, handler.calls[2][3]),
        (ours_r, T_CRASH, 0), (ours_r, T_UNOPENABLE, 0), (ours_r, T_NEWFD, 0)]
    assert {call_pid for call_pid, _, _, _ in handler.calls} == {pid}
    # mmap: the raw arguments, the fd's low half; anonymous and foreign maps never reached it.
    assert [m[1:] for m in handler.mmaps] == [
        (ours_file, 0x1000, mmap.PROT_READ, mmap.MAP_SHARED, 0),
        (ours_file, 0x2000, mmap.PROT_READ, mmap.MAP_PRIVATE, 0),
        (ours_file, 0x3000, mmap.PROT_READ, mmap.MAP_SHARED, 0)]
    assert {m[0] for m in handler.mmaps} == {pid}


class RwHandler:
    """pread64/pwrite64 (``run --transport cuse``): the handler moves the data itself."""

    def __init__(self, ours: int) -> None:
        self.ours = ours
        self.writes: list[tuple[int, bytes]] = []

    def may_be_ours(self, pid: int, fd: int) -> bool:
        return fd == self.ours

    def trapped_ioctl(self, pid: int, fd: int, cmd: int, arg: int) -> int | NewFile | None:
        return None

    def trapped_mmap(self, pid: int, fd: int, length: int, prot: int, flags: int,
                     offset: int) -> int | None:
        return None

    def trapped_rw(self, pid: int, fd: int, write: bool, buf: int, count: int,
                   offset: int) -> int | None:
        memory = ProcessMemory(pid)
        if offset == 0:
            return None  # the real syscall
        if offset == 2 << 40:
            raise KernelError(errno.EINVAL, "no such region")
        if write:
            self.writes.append((offset, memory.read(buf, count)))
            return count
        memory.write(buf, b"ABCD"[:count])
        return min(count, 4)


def _rw_child(ours: int, other: int, report: int, sock: socket.socket) -> None:  # pragma: no cover
    results: dict[str, object] = {}

    def attempt(name: str, call: Callable[[], object]) -> None:
        try:
            value = call()
            results[name] = value.decode() if isinstance(value, bytes) else value
        except OSError as e:
            results[name] = errno.errorcode[e.errno or 0]

    try:
        seccomp.set_no_new_privs()
        listener = seccomp.install_filter(seccomp.build_filter(
            [T_VALUE], syscalls=(seccomp.NR_PREAD64, seccomp.NR_PWRITE64)))
        socket.send_fds(sock, [b"L"], [listener])
        os.close(listener)
        attempt("pread-answered", lambda: os.pread(ours, 4, 1 << 40))
        attempt("pread-continued", lambda: os.pread(ours, 4, 0))
        attempt("pread-errno", lambda: os.pread(ours, 4, 2 << 40))
        attempt("pwrite-answered", lambda: os.pwrite(ours, b"xyz", 7 << 40))
        attempt("pread-not-ours", lambda: os.pread(other, 4, 0))
        attempt("read-untrapped", lambda: os.read(other, 4))  # read(), not pread64
        os.write(report, json.dumps(results).encode())
    finally:
        os._exit(0)


def test_pread_and_pwrite_are_answered_with_the_position(tmp_path: Path) -> None:
    (tmp_path / "ours").write_bytes(b"OURS")
    (tmp_path / "other").write_bytes(b"OTHR")
    ours = os.open(tmp_path / "ours", os.O_RDWR)
    other = os.open(tmp_path / "other", os.O_RDONLY)
    report_r, report_w = os.pipe()
    parent_sock, child_sock = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        _rw_child(ours, other, report_w, child_sock)
    child_sock.close()
    os.close(report_w)
    handler = RwHandler(ours)
    try:
        _, fds, _, _ = socket.recv_fds(parent_sock, 16, 1)

        async def main() -> None:
            with trio.fail_after(20):
                await supervise(fds[0], handler, trio.Lock())

        trio.run(main)
        results = json.loads(os.read(report_r, 65536))
    finally:
        _, status = os.waitpid(pid, 0)
        for fd in (ours, other, report_r):
            os.close(fd)
        parent_sock.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert results == {"pread-answered": "ABCD", "pread-continued": "OURS",
                       "pread-errno": "EINVAL", "pwrite-answered": 3, "pread-not-ours": "OTHR",
                       "read-untrapped": "OTHR"}
    assert handler.writes == [(7 << 40, b"xyz")]
    assert (tmp_path / "ours").read_bytes() == b"OURS"  # the answered pwrite wrote nothing
