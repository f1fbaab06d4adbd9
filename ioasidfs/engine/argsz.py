"""Copying ioctl arguments in and out the way the kernel's handlers do.

VFIO structs start with ``argsz``: the handler copies ``minsz`` bytes (EFAULT), then rejects
``argsz < minsz`` (EINVAL); the rest depends on the ioctl. Keeping the two steps here, in the
kernel's order, keeps every handler's first lines identical to the kernel's.
"""
from __future__ import annotations

import errno
import struct
from typing import Mapping

from ..errors import KernelError
from ..uapi.layout import FieldValue, Layout
from .caller import Caller

_U32 = struct.Struct("<I")
_S32 = struct.Struct("<i")


def copy_in(caller: Caller, arg: int, size: int) -> bytes:
    """copy_from_user of ``size`` bytes; EFAULT if any byte is unreadable."""
    return caller.memory.read(arg, size)


def copy_out(caller: Caller, arg: int, data: bytes) -> None:
    caller.memory.write(arg, data)


def ucmd_respond(caller: Caller, arg: int, data: bytes | bytearray) -> None:
    """iommufd_ucmd_respond: an iommufd command's struct goes back as min(the size word the
    caller gave, the kernel's size) bytes (EFAULT)."""
    user_size = int.from_bytes(data[:4], "little")
    copy_out(caller, arg, bytes(data[:min(user_size, len(data))]))


def read_u32(caller: Caller, arg: int) -> int:
    value: int = _U32.unpack(caller.memory.read(arg, 4))[0]
    return value


def read_s32(caller: Caller, arg: int) -> int:
    """get_user of an ``int`` (an fd number, for instance)."""
    value: int = _S32.unpack(caller.memory.read(arg, 4))[0]
    return value


def int_field(fields: Mapping[str, FieldValue], name: str) -> int:
    """A numeric field of a decoded struct (Layout.unpack gives ints for every non-bytes field)."""
    value = fields[name]
    assert isinstance(value, int)
    return value


def read_argsz_struct(caller: Caller, arg: int, layout: Layout, minsz: int,
                      what: str) -> tuple[bytearray, dict[str, FieldValue]]:
    """Copy in the first ``minsz`` bytes of a VFIO argsz struct and check ``argsz >= minsz``.

    Returns the raw bytes (the kernel's working copy, to be written back) and the decoded fields.
    """
    raw = bytearray(copy_in(caller, arg, minsz))
    fields = layout.unpack(raw)
    argsz = int_field(fields, "argsz")
    if argsz < minsz:
        raise KernelError(errno.EINVAL, f"{what}: argsz {argsz} is below the minimum {minsz}")
    return raw, fields


def read_user_string(caller: Caller, arg: int, limit: int) -> bytes:
    """strndup_user(arg, limit): the NUL-terminated string at ``arg`` without its NUL.

    EFAULT when the first byte is unreadable or the string runs into unreadable memory; EINVAL
    when no NUL comes within ``limit`` bytes. Reads page by page, never past what it needs.
    """
    out = b""
    addr = arg
    while len(out) < limit:
        chunk = min(4096 - addr % 4096, limit - len(out))
        data = caller.memory.read(addr, chunk)
        end = data.find(b"\0")
        if end >= 0:
            return out + data[:end]
        out += data
        addr += chunk
    raise KernelError(errno.EINVAL, f"string at {arg:#x} has no NUL within {limit} bytes")
