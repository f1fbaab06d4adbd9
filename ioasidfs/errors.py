"""The one error hierarchy of ioasidfs.

Every failure the daemon can meet is one of these, so the I/O layer has exactly one place
where it turns an exception into a reply (an errno) or a log line, and never crashes.
"""
from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine.translate import FaultReason


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


class IommuFault(IoasidfsError):
    """An emulated device's DMA was blocked, as an IOMMU blocks it: nothing was written, nothing
    was read. The device model sees this exception (and reports an error the way its hardware
    would: a failed completion, an error status); the fault is also recorded in the fault log.

    ``reason`` is an ``ioasidfs.engine.translate.FaultReason``: the IOVA was not mapped, was
    mapped without the needed permission, or the process whose memory backs it is gone.
    ``iova`` is the first faulting address, ``access`` is ``"read"`` or ``"write"`` (from the
    device's side: a write stores into memory).
    """

    def __init__(self, iova: int, device: str, access: str, reason: FaultReason,
                 detail: str = "") -> None:
        self.iova = iova
        self.device = device
        self.access = access
        self.reason = reason
        self.detail = detail
        text = f"IOMMU fault: {device or 'device'} {access} at IOVA {iova:#x}: {reason.value}"
        super().__init__(f"{text} ({detail})" if detail else text)
