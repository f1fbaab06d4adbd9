"""Linux ioctl command-number encoding (``<asm-generic/ioctl.h>``) in Python.

Every VFIO and iommufd command is ``_IO(';', nr)``: no direction and no size bits, because
their argument size travels inside the argument (``argsz`` / ``size``).  The encoder is still
general, because the project's own private ioctls and the tracer's view of foreign commands
(``TCGETS`` from a shell, ``FIONREAD`` ...) use the sized forms.

The kernel spells the macros ``_IOC``, ``_IO``, ``_IOR``, ``_IOW`` and ``_IOWR``.  A leading
underscore means "private" in Python, so the functions here drop it and keep the rest of the
name, which keeps them recognisable next to the C header.
"""
from __future__ import annotations

import enum
from typing import Final, NamedTuple

__all__ = [
    "IOC_NRBITS",
    "IOC_TYPEBITS",
    "IOC_SIZEBITS",
    "IOC_DIRBITS",
    "IOC_NRSHIFT",
    "IOC_TYPESHIFT",
    "IOC_SIZESHIFT",
    "IOC_DIRSHIFT",
    "IocDir",
    "IOC",
    "IO",
    "IOR",
    "IOW",
    "IOWR",
    "ioc_dir",
    "ioc_type",
    "ioc_nr",
    "ioc_size",
    "DecodedCmd",
    "decode_cmd",
    "format_cmd",
    "normalize_cmd",
]

# Field widths and positions of the generic (x86, arm64, ...) encoding:
#   bits 0-7 nr, 8-15 type, 16-29 size, 30-31 direction.
IOC_NRBITS: Final = 8
IOC_TYPEBITS: Final = 8
IOC_SIZEBITS: Final = 14
IOC_DIRBITS: Final = 2

IOC_NRSHIFT: Final = 0
IOC_TYPESHIFT: Final = IOC_NRSHIFT + IOC_NRBITS
IOC_SIZESHIFT: Final = IOC_TYPESHIFT + IOC_TYPEBITS
IOC_DIRSHIFT: Final = IOC_SIZESHIFT + IOC_SIZEBITS

_NR_MASK: Final = (1 << IOC_NRBITS) - 1
_TYPE_MASK: Final = (1 << IOC_TYPEBITS) - 1
_SIZE_MASK: Final = (1 << IOC_SIZEBITS) - 1
_DIR_MASK: Final = (1 << IOC_DIRBITS) - 1

# The kernel's ioctl() takes an ``unsigned int`` command; anything above is dropped.
_CMD_MASK: Final = 0xFFFF_FFFF


class IocDir(enum.IntFlag):
    """Direction bits, seen from userspace: WRITE = user writes to the kernel."""

    NONE = 0
    WRITE = 1
    READ = 2


def _type_code(ioctl_type: int | str) -> int:
    """Accept the type as the C character literal (``';'``) or its byte value."""
    if isinstance(ioctl_type, str):
        if len(ioctl_type) != 1:
            raise ValueError(f"ioctl type must be a single character, got {ioctl_type!r}")
        return ord(ioctl_type)
    return ioctl_type


def IOC(direction: int, ioctl_type: int | str, nr: int, size: int) -> int:  # noqa: N802
    """Encode a command like the kernel's ``_IOC``; rejects values that do not fit their bits.

    The kernel macro silently overflows into neighbouring fields; here that is a programming
    error worth an exception, since a wrong number means an ioctl nobody answers.
    """
    type_code = _type_code(ioctl_type)
    for label, value, mask in (
        ("direction", direction, _DIR_MASK),
        ("type", type_code, _TYPE_MASK),
        ("nr", nr, _NR_MASK),
        ("size", size, _SIZE_MASK),
    ):
        if not 0 <= value <= mask:
            raise ValueError(f"ioctl {label} {value} does not fit in its field (max {mask})")
    return (
        (direction << IOC_DIRSHIFT)
        | (type_code << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | (size << IOC_SIZESHIFT)
    )


def IO(ioctl_type: int | str, nr: int) -> int:  # noqa: N802
    """``_IO``: no argument size, no direction (every VFIO and iommufd command)."""
    return IOC(IocDir.NONE, ioctl_type, nr, 0)


def IOR(ioctl_type: int | str, nr: int, size: int) -> int:  # noqa: N802
    """``_IOR``: the kernel writes ``size`` bytes back to userspace."""
    return IOC(IocDir.READ, ioctl_type, nr, size)


def IOW(ioctl_type: int | str, nr: int, size: int) -> int:  # noqa: N802
    """``_IOW``: userspace passes ``size`` bytes to the kernel."""
    return IOC(IocDir.WRITE, ioctl_type, nr, size)


def IOWR(ioctl_type: int | str, nr: int, size: int) -> int:  # noqa: N802
    """``_IOWR``: ``size`` bytes travel both ways."""
    return IOC(IocDir.READ | IocDir.WRITE, ioctl_type, nr, size)


def normalize_cmd(cmd: int) -> int:
    """Reduce a command to the 32 bits the kernel looks at.

    Callers may hold a command as a sign-extended C ``int`` (e.g. ``_IOR`` numbers with bit 31
    set read back as negative) or as a 64-bit ``unsigned long``; both name the same ioctl.
    """
    return cmd & _CMD_MASK


def ioc_dir(cmd: int) -> IocDir:
    """Direction bits of ``cmd`` (``_IOC_DIR``)."""
    return IocDir((normalize_cmd(cmd) >> IOC_DIRSHIFT) & _DIR_MASK)


def ioc_type(cmd: int) -> int:
    """Type byte of ``cmd`` (``_IOC_TYPE``), e.g. ``ord(';')`` for VFIO/iommufd."""
    return (normalize_cmd(cmd) >> IOC_TYPESHIFT) & _TYPE_MASK


def ioc_nr(cmd: int) -> int:
    """Sequence number of ``cmd`` (``_IOC_NR``)."""
    return (normalize_cmd(cmd) >> IOC_NRSHIFT) & _NR_MASK


def ioc_size(cmd: int) -> int:
    """Argument size encoded in ``cmd`` (``_IOC_SIZE``); 0 for every VFIO/iommufd command."""
    return (normalize_cmd(cmd) >> IOC_SIZESHIFT) & _SIZE_MASK


class DecodedCmd(NamedTuple):
    """The four fields of an ioctl command."""

    direction: IocDir
    type: int
    nr: int
    size: int


def decode_cmd(cmd: int) -> DecodedCmd:
    """Split ``cmd`` into direction, type, nr and size."""
    return DecodedCmd(ioc_dir(cmd), ioc_type(cmd), ioc_nr(cmd), ioc_size(cmd))


_MACRO_BY_DIRECTION: Final = {
    IocDir.NONE: "_IOC_NONE",
    IocDir.WRITE: "_IOW",
    IocDir.READ: "_IOR",
    IocDir.READ | IocDir.WRITE: "_IOWR",
}


def _type_literal(type_code: int) -> str:
    char = chr(type_code)
    if char.isprintable() and char.isascii() and char not in "'\\":
        return f"'{char}'"
    return f"{type_code:#04x}"


def format_cmd(cmd: int) -> str:
    """Spell ``cmd`` the way the C header would write it, e.g. ``_IO(';', 130)``.

    Used for numbers nobody in our tables knows, so a trace still shows the type and nr a
    client used instead of an opaque integer.  A sized command with no direction (which no
    header defines) is spelled with ``_IOC`` in full so nothing is hidden.
    """
    direction, type_code, nr, size = decode_cmd(cmd)
    literal = _type_literal(type_code)
    if direction == IocDir.NONE:
        if size == 0:
            return f"_IO({literal}, {nr})"
        return f"_IOC(_IOC_NONE, {literal}, {nr}, {size})"
    return f"{_MACRO_BY_DIRECTION[direction]}({literal}, {nr}, {size})"
