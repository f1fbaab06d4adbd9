"""Which ioctl a command number means on which kind of file, and how its argument looks.

The same number means different things on different files: VFIO numbers 12-17 are type1
container ioctls on ``/dev/vfio/vfio`` and device ioctls on a device fd, and the iommufd fd
answers a subset of the VFIO container numbers besides its own.  The engine dispatches and the
tracer names commands through :func:`lookup`, which resolves a number *per node kind*; nothing
else in the project should hard-code that mapping.

Node kinds:

``container``  ``/dev/vfio/vfio`` backed by the legacy type1 container.
``group``      ``/dev/vfio/<N>``.
``device``     a device fd obtained with VFIO_GROUP_GET_DEVICE_FD.
``cdev``       ``/dev/vfio/devices/vfioN``: the device ioctls plus BIND/ATTACH/DETACH.
``iommufd``    ``/dev/iommu`` (alias ``/dev/ioasid``): IOMMU_* plus VFIO container compat.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from . import iommufd, vfio
from .ioctl import format_cmd, ioc_type, normalize_cmd
from .layout import Layout

__all__ = [
    "NodeKind",
    "ArgKind",
    "IoctlDef",
    "IOCTLS",
    "lookup",
    "name_of",
    "by_name",
    "ioctls_for",
]


class NodeKind(enum.StrEnum):
    """Kind of emulated file an ioctl arrives on (plain strings compare equal)."""

    CONTAINER = "container"
    GROUP = "group"
    DEVICE = "device"
    CDEV = "cdev"
    IOMMUFD = "iommufd"
    ACCESS = "access"  # an IOMMU_TEST_CMD access fd: answers no ioctl
    FAULT_QUEUE = "fault_queue"  # an IOMMU_FAULT_QUEUE_ALLOC fd: answers no ioctl
    VEVENTQ = "veventq"  # an IOMMU_VEVENTQ_ALLOC fd: answers no ioctl
    FAULTS = "faults"  # the fault log file: answers no ioctl
    SYSFS = "sysfs"  # a fake sysfs file: answers no ioctl


class ArgKind(enum.Enum):
    """How to treat the third ioctl argument, which VFIO/iommufd never size-encode.

    It decides whether the daemon may dereference the argument at all: a VALUE is a plain
    integer (CHECK_EXTENSION's extension id) and must never be read as a pointer.
    """

    NONE = "none"
    """Ignored by the kernel."""
    VALUE = "value"
    """An integer passed by value."""
    STRUCT = "struct"
    """Pointer to a struct whose first u32 is its size (``argsz`` / ``size``)."""
    INT_PTR = "int_ptr"
    """Pointer to a single ``int`` / ``__u32`` (an fd number, or a dmabuf id)."""
    STRING = "string"
    """Pointer to a NUL-terminated string (GET_DEVICE_FD's device name)."""


@dataclass(frozen=True, slots=True)
class IoctlDef:
    """One ioctl as seen on the node kinds that answer it.

    ``takes_fds``: the argument (possibly only for some flags/ops) carries fd numbers that
    belong to the *caller's* fd table and must be resolved there (pidfd_getfd).
    ``creates_fd``: success hands a new fd to the caller (return value or output field),
    which a FUSE reply cannot do by itself.
    """

    name: str
    cmd: int
    nodes: frozenset[str]
    arg: ArgKind
    layout: Layout | None = None
    takes_fds: bool = False
    creates_fd: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.nodes) - {kind.value for kind in NodeKind}
        if unknown:
            raise ValueError(f"{self.name}: unknown node kinds {sorted(unknown)}")
        if (self.arg in (ArgKind.STRUCT, ArgKind.INT_PTR)) != (self.layout is not None):
            raise ValueError(f"{self.name}: a layout is required exactly for pointer arguments")


def _nodes(*kinds: NodeKind) -> frozenset[str]:
    return frozenset(kind.value for kind in kinds)


# Who answers what (spec vfio-legacy §1.1, iommufd §1.1/§1.4/§1.5).
_CONTAINER: Final = _nodes(NodeKind.CONTAINER)
_CONTAINER_AND_IOMMUFD: Final = _nodes(NodeKind.CONTAINER, NodeKind.IOMMUFD)
_GROUP: Final = _nodes(NodeKind.GROUP)
_ANY_DEVICE: Final = _nodes(NodeKind.DEVICE, NodeKind.CDEV)
_CDEV: Final = _nodes(NodeKind.CDEV)
_IOMMUFD: Final = _nodes(NodeKind.IOMMUFD)

_STRUCT: Final = ArgKind.STRUCT

IOCTLS: Final[tuple[IoctlDef, ...]] = (
    # -- VFIO container (and the iommufd compat subset) --
    IoctlDef(
        "VFIO_GET_API_VERSION", vfio.VFIO_GET_API_VERSION, _CONTAINER_AND_IOMMUFD,
        ArgKind.NONE,
    ),
    IoctlDef(
        "VFIO_CHECK_EXTENSION", vfio.VFIO_CHECK_EXTENSION, _CONTAINER_AND_IOMMUFD,
        ArgKind.VALUE,
    ),
    IoctlDef("VFIO_SET_IOMMU", vfio.VFIO_SET_IOMMU, _CONTAINER_AND_IOMMUFD, ArgKind.VALUE),
    IoctlDef(
        "VFIO_IOMMU_GET_INFO", vfio.VFIO_IOMMU_GET_INFO, _CONTAINER_AND_IOMMUFD,
        _STRUCT, vfio.TYPE1_INFO,
    ),
    IoctlDef(
        "VFIO_IOMMU_MAP_DMA", vfio.VFIO_IOMMU_MAP_DMA, _CONTAINER_AND_IOMMUFD,
        _STRUCT, vfio.DMA_MAP,
    ),
    IoctlDef(
        "VFIO_IOMMU_UNMAP_DMA", vfio.VFIO_IOMMU_UNMAP_DMA, _CONTAINER_AND_IOMMUFD,
        _STRUCT, vfio.DMA_UNMAP,
    ),
    IoctlDef("VFIO_IOMMU_ENABLE", vfio.VFIO_IOMMU_ENABLE, _CONTAINER, ArgKind.NONE),
    IoctlDef("VFIO_IOMMU_DISABLE", vfio.VFIO_IOMMU_DISABLE, _CONTAINER, ArgKind.NONE),
    IoctlDef(
        "VFIO_IOMMU_DIRTY_PAGES", vfio.VFIO_IOMMU_DIRTY_PAGES, _CONTAINER,
        _STRUCT, vfio.DIRTY_BITMAP,
    ),
    IoctlDef("VFIO_EEH_PE_OP", vfio.VFIO_EEH_PE_OP, _CONTAINER, _STRUCT, vfio.EEH_PE_OP),
    # -- VFIO group --
    IoctlDef(
        "VFIO_GROUP_GET_STATUS", vfio.VFIO_GROUP_GET_STATUS, _GROUP,
        _STRUCT, vfio.GROUP_STATUS,
    ),
    IoctlDef(
        "VFIO_GROUP_SET_CONTAINER", vfio.VFIO_GROUP_SET_CONTAINER, _GROUP, ArgKind.INT_PTR,
        vfio.INT_FD, takes_fds=True,
    ),
    IoctlDef("VFIO_GROUP_UNSET_CONTAINER", vfio.VFIO_GROUP_UNSET_CONTAINER, _GROUP, ArgKind.NONE),
    IoctlDef(
        "VFIO_GROUP_GET_DEVICE_FD", vfio.VFIO_GROUP_GET_DEVICE_FD, _GROUP, ArgKind.STRING,
        creates_fd=True,
    ),
    # -- VFIO device (group path and cdev) --
    IoctlDef(
        "VFIO_DEVICE_GET_INFO", vfio.VFIO_DEVICE_GET_INFO, _ANY_DEVICE,
        _STRUCT, vfio.DEVICE_INFO,
    ),
    IoctlDef(
        "VFIO_DEVICE_GET_REGION_INFO", vfio.VFIO_DEVICE_GET_REGION_INFO, _ANY_DEVICE, _STRUCT,
        vfio.REGION_INFO,
    ),
    IoctlDef(
        "VFIO_DEVICE_GET_IRQ_INFO", vfio.VFIO_DEVICE_GET_IRQ_INFO, _ANY_DEVICE, _STRUCT,
        vfio.IRQ_INFO,
    ),
    IoctlDef(
        "VFIO_DEVICE_SET_IRQS", vfio.VFIO_DEVICE_SET_IRQS, _ANY_DEVICE, _STRUCT, vfio.IRQ_SET,
        takes_fds=True,  # DATA_EVENTFD: data[] holds eventfds
    ),
    IoctlDef("VFIO_DEVICE_RESET", vfio.VFIO_DEVICE_RESET, _ANY_DEVICE, ArgKind.NONE),
    IoctlDef(
        "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", vfio.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
        _ANY_DEVICE, _STRUCT, vfio.PCI_HOT_RESET_INFO,
    ),
    IoctlDef(
        "VFIO_DEVICE_PCI_HOT_RESET", vfio.VFIO_DEVICE_PCI_HOT_RESET, _ANY_DEVICE, _STRUCT,
        vfio.PCI_HOT_RESET, takes_fds=True,  # group_fds[]
    ),
    IoctlDef(
        "VFIO_DEVICE_QUERY_GFX_PLANE", vfio.VFIO_DEVICE_QUERY_GFX_PLANE, _ANY_DEVICE, _STRUCT,
        vfio.GFX_PLANE_INFO,
    ),
    IoctlDef(
        "VFIO_DEVICE_GET_GFX_DMABUF", vfio.VFIO_DEVICE_GET_GFX_DMABUF, _ANY_DEVICE,
        ArgKind.INT_PTR, vfio.GFX_DMABUF_ID, creates_fd=True,
    ),
    IoctlDef(
        "VFIO_DEVICE_IOEVENTFD", vfio.VFIO_DEVICE_IOEVENTFD, _ANY_DEVICE, _STRUCT,
        vfio.DEVICE_IOEVENTFD, takes_fds=True,
    ),
    IoctlDef(
        "VFIO_DEVICE_FEATURE", vfio.VFIO_DEVICE_FEATURE, _ANY_DEVICE, _STRUCT, vfio.DEVICE_FEATURE,
        # Feature-dependent: LOW_POWER_ENTRY_WITH_WAKEUP passes an eventfd, MIG_DEVICE_STATE
        # returns a data fd.
        takes_fds=True, creates_fd=True,
    ),
    # -- VFIO device cdev only --
    IoctlDef(
        "VFIO_DEVICE_BIND_IOMMUFD", vfio.VFIO_DEVICE_BIND_IOMMUFD, _CDEV, _STRUCT,
        vfio.DEVICE_BIND_IOMMUFD, takes_fds=True,
    ),
    IoctlDef(
        "VFIO_DEVICE_ATTACH_IOMMUFD_PT", vfio.VFIO_DEVICE_ATTACH_IOMMUFD_PT, _CDEV, _STRUCT,
        vfio.DEVICE_ATTACH_IOMMUFD_PT,
    ),
    IoctlDef(
        "VFIO_DEVICE_DETACH_IOMMUFD_PT", vfio.VFIO_DEVICE_DETACH_IOMMUFD_PT, _CDEV, _STRUCT,
        vfio.DEVICE_DETACH_IOMMUFD_PT,
    ),
    # -- iommufd --
    IoctlDef("IOMMU_DESTROY", iommufd.IOMMU_DESTROY, _IOMMUFD, _STRUCT, iommufd.DESTROY),
    IoctlDef("IOMMU_IOAS_ALLOC", iommufd.IOMMU_IOAS_ALLOC, _IOMMUFD, _STRUCT, iommufd.IOAS_ALLOC),
    IoctlDef(
        "IOMMU_IOAS_ALLOW_IOVAS", iommufd.IOMMU_IOAS_ALLOW_IOVAS, _IOMMUFD, _STRUCT,
        iommufd.IOAS_ALLOW_IOVAS,
    ),
    IoctlDef("IOMMU_IOAS_COPY", iommufd.IOMMU_IOAS_COPY, _IOMMUFD, _STRUCT, iommufd.IOAS_COPY),
    IoctlDef(
        "IOMMU_IOAS_IOVA_RANGES", iommufd.IOMMU_IOAS_IOVA_RANGES, _IOMMUFD, _STRUCT,
        iommufd.IOAS_IOVA_RANGES,
    ),
    IoctlDef("IOMMU_IOAS_MAP", iommufd.IOMMU_IOAS_MAP, _IOMMUFD, _STRUCT, iommufd.IOAS_MAP),
    IoctlDef("IOMMU_IOAS_UNMAP", iommufd.IOMMU_IOAS_UNMAP, _IOMMUFD, _STRUCT, iommufd.IOAS_UNMAP),
    IoctlDef("IOMMU_OPTION", iommufd.IOMMU_OPTION, _IOMMUFD, _STRUCT, iommufd.OPTION),
    IoctlDef("IOMMU_VFIO_IOAS", iommufd.IOMMU_VFIO_IOAS, _IOMMUFD, _STRUCT, iommufd.VFIO_IOAS),
    IoctlDef("IOMMU_HWPT_ALLOC", iommufd.IOMMU_HWPT_ALLOC, _IOMMUFD, _STRUCT, iommufd.HWPT_ALLOC),
    IoctlDef("IOMMU_GET_HW_INFO", iommufd.IOMMU_GET_HW_INFO, _IOMMUFD, _STRUCT, iommufd.HW_INFO),
    IoctlDef(
        "IOMMU_HWPT_SET_DIRTY_TRACKING", iommufd.IOMMU_HWPT_SET_DIRTY_TRACKING, _IOMMUFD,
        _STRUCT, iommufd.HWPT_SET_DIRTY_TRACKING,
    ),
    IoctlDef(
        "IOMMU_HWPT_GET_DIRTY_BITMAP", iommufd.IOMMU_HWPT_GET_DIRTY_BITMAP, _IOMMUFD, _STRUCT,
        iommufd.HWPT_GET_DIRTY_BITMAP,
    ),
    IoctlDef(
        "IOMMU_HWPT_INVALIDATE", iommufd.IOMMU_HWPT_INVALIDATE, _IOMMUFD, _STRUCT,
        iommufd.HWPT_INVALIDATE,
    ),
    IoctlDef(
        "IOMMU_FAULT_QUEUE_ALLOC", iommufd.IOMMU_FAULT_QUEUE_ALLOC, _IOMMUFD, _STRUCT,
        iommufd.FAULT_ALLOC, creates_fd=True,
    ),
    IoctlDef(
        "IOMMU_IOAS_MAP_FILE", iommufd.IOMMU_IOAS_MAP_FILE, _IOMMUFD, _STRUCT,
        iommufd.IOAS_MAP_FILE, takes_fds=True,
    ),
    IoctlDef(
        "IOMMU_VIOMMU_ALLOC", iommufd.IOMMU_VIOMMU_ALLOC, _IOMMUFD, _STRUCT, iommufd.VIOMMU_ALLOC,
    ),
    IoctlDef(
        "IOMMU_VDEVICE_ALLOC", iommufd.IOMMU_VDEVICE_ALLOC, _IOMMUFD, _STRUCT,
        iommufd.VDEVICE_ALLOC,
    ),
    IoctlDef(
        "IOMMU_IOAS_CHANGE_PROCESS", iommufd.IOMMU_IOAS_CHANGE_PROCESS, _IOMMUFD, _STRUCT,
        iommufd.IOAS_CHANGE_PROCESS,
    ),
    IoctlDef(
        "IOMMU_VEVENTQ_ALLOC", iommufd.IOMMU_VEVENTQ_ALLOC, _IOMMUFD, _STRUCT,
        iommufd.VEVENTQ_ALLOC, creates_fd=True,
    ),
    IoctlDef(
        "IOMMU_HW_QUEUE_ALLOC", iommufd.IOMMU_HW_QUEUE_ALLOC, _IOMMUFD, _STRUCT,
        iommufd.HW_QUEUE_ALLOC,
    ),
    IoctlDef(
        "IOMMU_TEST_CMD", iommufd.IOMMU_TEST_CMD, _IOMMUFD, _STRUCT, iommufd.TEST_CMD,
        # Op-dependent: the access ops name an access *fd* in `id`; CREATE_ACCESS returns one.
        takes_fds=True, creates_fd=True,
    ),
)
"""Every ioctl the project knows, in header order."""


def _index(definitions: Iterable[IoctlDef]) -> tuple[
    Mapping[str, Mapping[int, IoctlDef]], Mapping[str, IoctlDef], Mapping[int, tuple[IoctlDef, ...]]
]:
    """Build the lookup tables, refusing two meanings for one number on one node kind."""
    per_node: dict[str, dict[int, IoctlDef]] = {kind.value: {} for kind in NodeKind}
    named: dict[str, IoctlDef] = {}
    by_cmd: dict[int, list[IoctlDef]] = {}
    for definition in definitions:
        if definition.name in named:
            raise ValueError(f"ioctl {definition.name} defined twice")
        named[definition.name] = definition
        by_cmd.setdefault(definition.cmd, []).append(definition)
        for node in definition.nodes:
            clash = per_node[node].get(definition.cmd)
            if clash is not None:
                raise ValueError(
                    f"{node}: {definition.name} and {clash.name} share {definition.cmd:#x}"
                )
            per_node[node][definition.cmd] = definition
    return (
        {node: MappingProxyType(table) for node, table in per_node.items()},
        named,
        {cmd: tuple(defs) for cmd, defs in by_cmd.items()},
    )


_TABLES: Final = _index(IOCTLS)
_BY_NODE: Final = _TABLES[0]
_BY_NAME: Final = _TABLES[1]
_BY_CMD: Final = _TABLES[2]

_VFIO_TYPE_BYTE: Final = vfio.VFIO_TYPE


def lookup(node_kind: str, cmd: int) -> IoctlDef | None:
    """The ioctl ``cmd`` means on a file of kind ``node_kind``, or ``None`` (→ ENOTTY).

    ``cmd`` may be sign-extended or 64-bit; only its low 32 bits count, as in the kernel.
    An unknown ``node_kind`` is a programming error and raises ``ValueError``.
    """
    table = _BY_NODE.get(node_kind)
    if table is None:
        raise ValueError(f"unknown node kind {node_kind!r}")
    return table.get(normalize_cmd(cmd))


def name_of(node_kind: str, cmd: int) -> str:
    """Name ``cmd`` for a trace line on a ``node_kind`` file.

    Resolution order: the ioctl this node answers; else, if the number has exactly one
    meaning anywhere (say BIND_IOMMUFD sent to a group-path device fd), that name, which is
    what the caller meant even though this node rejects it; else the C spelling for VFIO-type
    numbers (``_IO(';', 113)``: e.g. a shared number 12-17 on a group fd) and plain hex for
    foreign ones (``0x5401``).
    """
    definition = lookup(node_kind, cmd)
    if definition is not None:
        return definition.name
    cmd = normalize_cmd(cmd)
    candidates = _BY_CMD.get(cmd, ())
    if len(candidates) == 1:
        return candidates[0].name
    if ioc_type(cmd) == _VFIO_TYPE_BYTE:
        return format_cmd(cmd)
    return f"{cmd:#06x}"


def by_name(name: str) -> IoctlDef:
    """The definition called ``name`` (e.g. ``"VFIO_IOMMU_MAP_DMA"``); ``KeyError`` if none."""
    return _BY_NAME[name]


def ioctls_for(node_kind: str) -> Mapping[int, IoctlDef]:
    """All ioctls a ``node_kind`` file answers, keyed by command number (read-only view)."""
    table = _BY_NODE.get(node_kind)
    if table is None:
        raise ValueError(f"unknown node kind {node_kind!r}")
    return table
