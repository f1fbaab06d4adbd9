"""The calling process, as the kernel sees it: its memory, its fd table, its credentials.

VFIO and iommufd ioctls are ``_IO()``: FUSE hands us the raw third argument and nothing else, so
every struct is read from and written to the caller's memory here, with process_vm_readv/writev
and the thread id from the FUSE request header. An unreadable pointer becomes EFAULT, exactly as
copy_from_user fails in the kernel; a partial transfer counts as a failure, as it does there.

An fd number inside an argument lives in the caller's fd table: it is copied with pidfd_getfd.
Whether the copy is one of *our* files is answered by the filesystem itself (see ``FileIdentity``),
which is why resolving an fd may block and must never run on the thread that reads /dev/fuse.

This is the only module that touches another process; the engine sees it through the small
``ClientMemory`` / ``ClientFds`` interfaces (``ioasidfs.engine.caller``), so every rule stays
unit-testable with an in-memory fake.
"""
from __future__ import annotations

import ctypes
import errno
import os
import resource
from dataclasses import dataclass
from typing import Callable

from .errors import KernelError

_libc = ctypes.CDLL(None, use_errno=True)

SYS_pidfd_getfd = 438
PIDFD_THREAD = os.O_EXCL  # pidfd_open flag (6.9+): the pid is a thread id
CAP_IPC_LOCK = 14
CAP_SYS_RAWIO = 17


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                                   ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]
_libc.process_vm_readv.restype = ctypes.c_ssize_t
_libc.process_vm_writev.argtypes = _libc.process_vm_readv.argtypes
_libc.process_vm_writev.restype = ctypes.c_ssize_t
_libc.syscall.restype = ctypes.c_long

_ADDR_LIMIT = 1 << 64


class ProcessMemory:
    """Reads and writes one process's memory; every failure is EFAULT, as in copy_*_user."""

    __slots__ = ("pid",)

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def read(self, addr: int, size: int) -> bytes:
        if size == 0:
            return b""
        if addr < 0 or addr + size > _ADDR_LIMIT:
            raise KernelError(errno.EFAULT, f"read of {size} bytes at {addr:#x} is outside the address space")
        buf = ctypes.create_string_buffer(size)
        local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
        remote = _IoVec(addr, size)
        n = _libc.process_vm_readv(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if n != size:
            err = ctypes.get_errno() if n < 0 else errno.EFAULT
            raise KernelError(errno.EFAULT, f"cannot read {size} bytes at {addr:#x} of pid {self.pid}: "
                                            f"{os.strerror(err)}")
        return buf.raw

    def write(self, addr: int, data: bytes) -> None:
        size = len(data)
        if size == 0:
            return
        if addr < 0 or addr + size > _ADDR_LIMIT:
            raise KernelError(errno.EFAULT, f"write of {size} bytes at {addr:#x} is outside the address space")
        buf = ctypes.create_string_buffer(bytes(data), size)
        local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
        remote = _IoVec(addr, size)
        n = _libc.process_vm_writev(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if n != size:
            err = ctypes.get_errno() if n < 0 else errno.EFAULT
            raise KernelError(errno.EFAULT, f"cannot write {size} bytes at {addr:#x} of pid {self.pid}: "
                                            f"{os.strerror(err)}")


@dataclass(frozen=True)
class ProcessStatus:
    """What /proc/TID/status tells about the caller that the kernel would know directly."""

    tgid: int
    uid: int
    cap_effective: int

    def has_capability(self, cap: int) -> bool:
        return bool(self.cap_effective >> cap & 1)


def read_status(tid: int) -> ProcessStatus:
    """Thread group, real uid and effective capabilities of thread ``tid``."""
    tgid = uid = caps = -1
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    tgid = int(line.split()[1])
                elif line.startswith(b"Uid:"):
                    uid = int(line.split()[1])
                elif line.startswith(b"CapEff:"):
                    caps = int(line.split()[1], 16)
    except OSError:
        raise KernelError(errno.ESRCH, f"caller {tid} has gone") from None
    if tgid < 0:
        raise KernelError(errno.ESRCH, f"caller {tid} has no status")
    return ProcessStatus(tgid, uid, caps)


def memlock_limit(pid: int) -> int:
    """The caller's RLIMIT_MEMLOCK soft limit in bytes (RLIM_INFINITY as -1)."""
    try:
        soft, _hard = resource.prlimit(pid, resource.RLIMIT_MEMLOCK)
    except (OSError, ProcessLookupError):
        raise KernelError(errno.ESRCH, f"caller {pid} has gone") from None
    return soft


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    r = _libc.syscall(SYS_pidfd_getfd, pidfd, fd, 0)
    if r < 0:
        raise OSError(ctypes.get_errno(), "pidfd_getfd")
    return int(r)


class ProcessFds:
    """Copies fds out of one process's fd table (pidfd_getfd needs ptrace rights: root or parent)."""

    __slots__ = ("tgid",)

    def __init__(self, tgid: int) -> None:
        self.tgid = tgid

    def copy(self, fd: int) -> int:
        """A new fd in this process referring to the caller's open file ``fd``; EBADF if none.

        The caller must close it. The kernel's fdget() fails EBADF for a negative or closed fd.
        """
        if fd < 0:
            raise KernelError(errno.EBADF, f"fd {fd} is negative")
        try:
            pidfd = os.pidfd_open(self.tgid)
        except OSError:
            raise KernelError(errno.ESRCH, f"caller {self.tgid} has gone") from None
        try:
            return _pidfd_getfd(pidfd, fd)
        except OSError as e:
            if e.errno == errno.EBADF:
                raise KernelError(errno.EBADF, f"fd {fd} is not open in pid {self.tgid}") from None
            raise KernelError(e.errno or errno.EBADF, f"pidfd_getfd({self.tgid}, {fd}): {os.strerror(e.errno or 0)}") from None
        finally:
            os.close(pidfd)


FileIdentity = Callable[[int], object | None]
"""Given an fd of ours (a pidfd_getfd copy), return the daemon's open-file object it refers to,
or None when it is not one of our files. Provided by the filesystem layer."""
