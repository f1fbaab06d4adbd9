"""The one error hierarchy of ioasidfs.

Every failure the daemon can meet is one of these, so the I/O layer has exactly one place
where it turns an exception into a reply (an errno) or a log line, and never crashes.
"""
from __future__ import annotations

import errno as _errno


class IoasidfsError(Exception):
    """Base of every error ioasidfs raises on purpose."""


class KernelError(IoasidfsError):
    """An operation fails the way the kernel would fail it: with this errno.

    ``reason`` is for the log and the trace only; the client sees nothing but the errno,
    exactly as with the real kernel.
    """

    def __init__(self, errno: int, reason: str = "") -> None:
        self.errno = errno
        self.reason = reason
        super().__init__(f"{_errno.errorcode.get(errno, str(errno))}: {reason}" if reason
                         else _errno.errorcode.get(errno, str(errno)))


class ProtocolError(IoasidfsError):
    """The kernel sent bytes that do not parse as the FUSE protocol we negotiated."""


class ConfigError(IoasidfsError):
    """A configuration file is wrong; names the file, line and key so the user can fix it."""

    def __init__(self, file: str, line: int | None, key: str, message: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")
