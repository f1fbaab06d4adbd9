"""The engine's view of the process that made a call: its memory, its fds, its credentials.

The engine never performs I/O itself. Everything it needs from the caller comes through this
small interface; the daemon passes the real thing (``ioasidfs.client``), unit tests pass
:class:`FakeMemory` and a dict of fds, so every kernel rule is testable without a mount.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..errors import KernelError


class ClientMemory(Protocol):
    """The caller's address space; any unreadable/unwritable byte fails the whole call (EFAULT)."""

    def read(self, addr: int, size: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...


class ForeignFile:
    """An fd of the caller that is not one of our files (a pipe, an eventfd, /dev/null...)."""

    def __repr__(self) -> str:
        return "ForeignFile()"


FOREIGN = ForeignFile()


@dataclass
class Caller:
    """One ioctl's caller.

    ``resolve_fd`` maps an fd number in the caller's table to our open-file object, or to
    :data:`FOREIGN`; it raises KernelError(EBADF) for a closed fd. It may block (a FUSE round trip
    to our own file), which is why ioctls that carry fds run in a worker thread.
    ``can_lock_memory`` tells whether the caller holds CAP_IPC_LOCK; ``memlock_limit`` is its
    RLIMIT_MEMLOCK in bytes (-1 = unlimited). Both are looked up lazily: most calls need neither.
    """

    pid: int
    memory: ClientMemory
    resolve_fd: Callable[[int], object] = field(default=lambda fd: _no_fds(fd))
    tgid: Callable[[], int] | None = None
    can_lock_memory: Callable[[], bool] = field(default=lambda: True)
    memlock_limit: Callable[[], int] = field(default=lambda: -1)

    def process(self) -> int:
        """The caller's thread group (process) id: what the kernel calls current->mm's owner."""
        return self.tgid() if self.tgid is not None else self.pid


def _no_fds(fd: int) -> object:
    raise KernelError(errno.EBADF, f"fd {fd} is not open")


class FakeMemory:
    """An in-memory address space for tests: a few mapped ranges, EFAULT everywhere else."""

    def __init__(self) -> None:
        self.regions: dict[int, bytearray] = {}

    def map(self, addr: int, size_or_data: int | bytes) -> int:
        data = bytearray(size_or_data) if isinstance(size_or_data, int) else bytearray(size_or_data)
        self.regions[addr] = data
        return addr

    def _find(self, addr: int, size: int) -> tuple[bytearray, int]:
        for base, data in self.regions.items():
            if base <= addr and addr + size <= base + len(data):
                return data, addr - base
        raise KernelError(errno.EFAULT, f"{size} bytes at {addr:#x} are not mapped")

    def read(self, addr: int, size: int) -> bytes:
        if size == 0:
            return b""
        data, off = self._find(addr, size)
        return bytes(data[off:off + size])

    def write(self, addr: int, data: bytes) -> None:
        if not data:
            return
        region, off = self._find(addr, len(data))
        region[off:off + len(data)] = data
