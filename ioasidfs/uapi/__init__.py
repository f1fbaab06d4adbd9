"""The VFIO and iommufd userspace ABI: ioctl numbers, struct layouts, flags.

This package is the single source of truth for those facts; the engine, the tracer and the
tests import them from here instead of writing numbers of their own.

* :mod:`.ioctl`    — ``_IO``-style encoding and decoding of command numbers.
* :mod:`.layout`   — :class:`Layout`, a typed C-struct description that packs/unpacks bytes.
* :mod:`.vfio`     — VFIO numbers, constants, flags and layouts (``linux/vfio.h``).
* :mod:`.iommufd`  — iommufd numbers, constants, flags and layouts (``linux/iommufd.h``).
* :mod:`.registry` — which ioctl a number means on which node kind (:func:`lookup`).

Typical use::

    from ioasidfs.uapi import lookup, vfio
    definition = lookup("container", vfio.VFIO_IOMMU_MAP_DMA)
    fields = definition.layout.unpack(raw_bytes)      # same object as vfio.DMA_MAP
"""
from __future__ import annotations

from . import iommufd, vfio
from .ioctl import (
    IO,
    IOC,
    IOR,
    IOW,
    IOWR,
    DecodedCmd,
    IocDir,
    decode_cmd,
    format_cmd,
    ioc_dir,
    ioc_nr,
    ioc_size,
    ioc_type,
    normalize_cmd,
)
from .layout import Field, FieldKind, FieldValue, Layout, TrailingArray
from .registry import (
    IOCTLS,
    ArgKind,
    IoctlDef,
    NodeKind,
    by_name,
    ioctls_for,
    lookup,
    name_of,
)

__all__ = [
    "vfio",
    "iommufd",
    "IOC",
    "IO",
    "IOR",
    "IOW",
    "IOWR",
    "IocDir",
    "DecodedCmd",
    "decode_cmd",
    "format_cmd",
    "ioc_dir",
    "ioc_nr",
    "ioc_size",
    "ioc_type",
    "normalize_cmd",
    "Field",
    "FieldKind",
    "FieldValue",
    "Layout",
    "TrailingArray",
    "IOCTLS",
    "ArgKind",
    "IoctlDef",
    "NodeKind",
    "by_name",
    "ioctls_for",
    "lookup",
    "name_of",
]
