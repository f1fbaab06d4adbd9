"""Capability chains of the VFIO INFO ioctls (vfio_main.c: vfio_info_cap_add, _cap_shift).

An INFO ioctl may append capabilities after its fixed struct. Each starts with a
``vfio_info_cap_header`` whose ``next`` is the offset of the following one *from the start of
the info struct* (0 ends the chain). Since 6.6 every capability is padded with zeros to a
multiple of 8 bytes ("vfio: align capability structures"); 6.1 packed them, which moved every
capability after an odd-sized one (type1's DMA_AVAIL is 12 bytes). We follow upstream.

What to do when the user's buffer is too small (grow ``argsz``, set the CAPS flag anyway) is
the handler's part of the protocol; this module only lays the chain out.
"""
from __future__ import annotations

from ..uapi import vfio as V

CAP_ALIGNMENT = 8


class CapChain:
    """Capabilities in the order they were added, laid out as the kernel's buffer."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._headers: list[int] = []

    def add(self, cap: bytes) -> None:
        """Append one capability, header included (its ``next`` is filled in by ``build``)."""
        self._headers.append(len(self._buffer))
        padded = -(-len(cap) // CAP_ALIGNMENT) * CAP_ALIGNMENT
        self._buffer += cap + bytes(padded - len(cap))

    def __len__(self) -> int:
        """Bytes the chain occupies (``caps.size``), padding included."""
        return len(self._buffer)

    def build(self, offset: int) -> bytes:
        """The chain as copied to the user at ``offset`` bytes into the info struct."""
        out = bytearray(self._buffer)
        for this, following in zip(self._headers, self._headers[1:] + [None]):
            V.INFO_CAP_HEADER.write_fields(out, this, next=0 if following is None else offset + following)
        return bytes(out)
