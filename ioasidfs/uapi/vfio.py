"""VFIO uAPI: ioctl numbers, constants, flags and struct layouts (``linux/vfio.h``).

Naming rule: every module-level name starting with ``VFIO_`` is a value from the uAPI header,
spelled as the header spells it, so C and Python can be grepped side by side (the unit test
compiles the header and compares every such integer).  Values the header does not define
(region-offset arithmetic, 6.1-era sizes) carry no ``VFIO_`` prefix.  Flag sets are also
offered as ``IntFlag`` classes (``DmaMapFlag.READ``) whose members print by name in traces.

Layouts describe the *current upstream* struct; where the local 6.1 header differs the
difference is recorded next to the layout (see :data:`DEVICE_INFO_SIZE_6_1`).
Source of facts: ``/work/shared/spec/vfio-legacy.md`` §1 and the upstream header.
"""
from __future__ import annotations

import enum
from typing import Final

from .ioctl import IO
from .layout import PTR, S32, U8, U16, U32, U64, Field, Layout, TrailingArray

# ---------------------------------------------------------------------------------------------
# Ioctl numbers: _IO(';', 100 + n).  Numbers 12-17 exist twice (container and device meaning);
# the file they are issued on decides, see registry.lookup().

VFIO_API_VERSION: Final = 0
VFIO_TYPE: Final = ord(";")
VFIO_BASE: Final = 100

VFIO_GET_API_VERSION: Final = IO(VFIO_TYPE, VFIO_BASE + 0)
VFIO_CHECK_EXTENSION: Final = IO(VFIO_TYPE, VFIO_BASE + 1)
VFIO_SET_IOMMU: Final = IO(VFIO_TYPE, VFIO_BASE + 2)
VFIO_GROUP_GET_STATUS: Final = IO(VFIO_TYPE, VFIO_BASE + 3)
VFIO_GROUP_SET_CONTAINER: Final = IO(VFIO_TYPE, VFIO_BASE + 4)
VFIO_GROUP_UNSET_CONTAINER: Final = IO(VFIO_TYPE, VFIO_BASE + 5)
VFIO_GROUP_GET_DEVICE_FD: Final = IO(VFIO_TYPE, VFIO_BASE + 6)
VFIO_DEVICE_GET_INFO: Final = IO(VFIO_TYPE, VFIO_BASE + 7)
VFIO_DEVICE_GET_REGION_INFO: Final = IO(VFIO_TYPE, VFIO_BASE + 8)
VFIO_DEVICE_GET_IRQ_INFO: Final = IO(VFIO_TYPE, VFIO_BASE + 9)
VFIO_DEVICE_SET_IRQS: Final = IO(VFIO_TYPE, VFIO_BASE + 10)
VFIO_DEVICE_RESET: Final = IO(VFIO_TYPE, VFIO_BASE + 11)
VFIO_IOMMU_GET_INFO: Final = IO(VFIO_TYPE, VFIO_BASE + 12)
VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: Final = IO(VFIO_TYPE, VFIO_BASE + 12)
VFIO_IOMMU_MAP_DMA: Final = IO(VFIO_TYPE, VFIO_BASE + 13)
VFIO_DEVICE_PCI_HOT_RESET: Final = IO(VFIO_TYPE, VFIO_BASE + 13)
VFIO_IOMMU_UNMAP_DMA: Final = IO(VFIO_TYPE, VFIO_BASE + 14)
VFIO_DEVICE_QUERY_GFX_PLANE: Final = IO(VFIO_TYPE, VFIO_BASE + 14)
VFIO_IOMMU_ENABLE: Final = IO(VFIO_TYPE, VFIO_BASE + 15)
VFIO_DEVICE_GET_GFX_DMABUF: Final = IO(VFIO_TYPE, VFIO_BASE + 15)
VFIO_IOMMU_DISABLE: Final = IO(VFIO_TYPE, VFIO_BASE + 16)
VFIO_DEVICE_IOEVENTFD: Final = IO(VFIO_TYPE, VFIO_BASE + 16)
VFIO_IOMMU_DIRTY_PAGES: Final = IO(VFIO_TYPE, VFIO_BASE + 17)
VFIO_DEVICE_FEATURE: Final = IO(VFIO_TYPE, VFIO_BASE + 17)
# Device cdev (/dev/vfio/devices/vfioN) binding to iommufd; not in the 6.1 header.
VFIO_DEVICE_BIND_IOMMUFD: Final = IO(VFIO_TYPE, VFIO_BASE + 18)
VFIO_DEVICE_ATTACH_IOMMUFD_PT: Final = IO(VFIO_TYPE, VFIO_BASE + 19)
VFIO_DEVICE_DETACH_IOMMUFD_PT: Final = IO(VFIO_TYPE, VFIO_BASE + 20)
VFIO_EEH_PE_OP: Final = IO(VFIO_TYPE, VFIO_BASE + 21)

# ---------------------------------------------------------------------------------------------
# Extensions / IOMMU types: the by-value argument of CHECK_EXTENSION and SET_IOMMU.

VFIO_TYPE1_IOMMU: Final = 1
VFIO_SPAPR_TCE_IOMMU: Final = 2
VFIO_TYPE1v2_IOMMU: Final = 3
VFIO_DMA_CC_IOMMU: Final = 4
VFIO_EEH: Final = 5
VFIO_TYPE1_NESTING_IOMMU: Final = 6  # renamed __VFIO_RESERVED_TYPE1_NESTING_IOMMU in >= 6.13
VFIO_SPAPR_TCE_v2_IOMMU: Final = 7
VFIO_NOIOMMU_IOMMU: Final = 8
VFIO_UNMAP_ALL: Final = 9
VFIO_UPDATE_VADDR: Final = 10


class Extension(enum.IntEnum):
    """CHECK_EXTENSION / SET_IOMMU argument values, named for traces."""

    TYPE1_IOMMU = VFIO_TYPE1_IOMMU
    SPAPR_TCE_IOMMU = VFIO_SPAPR_TCE_IOMMU
    TYPE1v2_IOMMU = VFIO_TYPE1v2_IOMMU
    DMA_CC_IOMMU = VFIO_DMA_CC_IOMMU
    EEH = VFIO_EEH
    TYPE1_NESTING_IOMMU = VFIO_TYPE1_NESTING_IOMMU
    SPAPR_TCE_v2_IOMMU = VFIO_SPAPR_TCE_v2_IOMMU
    NOIOMMU_IOMMU = VFIO_NOIOMMU_IOMMU
    UNMAP_ALL = VFIO_UNMAP_ALL
    UPDATE_VADDR = VFIO_UPDATE_VADDR


# ---------------------------------------------------------------------------------------------
# Flags, by struct.

VFIO_GROUP_FLAGS_VIABLE: Final = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET: Final = 1 << 1


class GroupStatusFlag(enum.IntFlag):
    """``vfio_group_status.flags``."""

    VIABLE = VFIO_GROUP_FLAGS_VIABLE
    CONTAINER_SET = VFIO_GROUP_FLAGS_CONTAINER_SET


VFIO_DEVICE_FLAGS_RESET: Final = 1 << 0
VFIO_DEVICE_FLAGS_PCI: Final = 1 << 1
VFIO_DEVICE_FLAGS_PLATFORM: Final = 1 << 2
VFIO_DEVICE_FLAGS_AMBA: Final = 1 << 3
VFIO_DEVICE_FLAGS_CCW: Final = 1 << 4
VFIO_DEVICE_FLAGS_AP: Final = 1 << 5
VFIO_DEVICE_FLAGS_FSL_MC: Final = 1 << 6
VFIO_DEVICE_FLAGS_CAPS: Final = 1 << 7
VFIO_DEVICE_FLAGS_CDX: Final = 1 << 8  # not in 6.1


class DeviceInfoFlag(enum.IntFlag):
    """``vfio_device_info.flags``."""

    RESET = VFIO_DEVICE_FLAGS_RESET
    PCI = VFIO_DEVICE_FLAGS_PCI
    PLATFORM = VFIO_DEVICE_FLAGS_PLATFORM
    AMBA = VFIO_DEVICE_FLAGS_AMBA
    CCW = VFIO_DEVICE_FLAGS_CCW
    AP = VFIO_DEVICE_FLAGS_AP
    FSL_MC = VFIO_DEVICE_FLAGS_FSL_MC
    CAPS = VFIO_DEVICE_FLAGS_CAPS
    CDX = VFIO_DEVICE_FLAGS_CDX


VFIO_DEVICE_API_PCI_STRING: Final = "vfio-pci"

# Device-info capability ids.
VFIO_DEVICE_INFO_CAP_ZPCI_BASE: Final = 1
VFIO_DEVICE_INFO_CAP_ZPCI_GROUP: Final = 2
VFIO_DEVICE_INFO_CAP_ZPCI_UTIL: Final = 3
VFIO_DEVICE_INFO_CAP_ZPCI_PFIP: Final = 4
VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP: Final = 5  # not in 6.1

VFIO_PCI_ATOMIC_COMP32: Final = 1 << 0  # not in 6.1
VFIO_PCI_ATOMIC_COMP64: Final = 1 << 1  # not in 6.1
VFIO_PCI_ATOMIC_COMP128: Final = 1 << 2  # not in 6.1


class PciAtomicCompFlag(enum.IntFlag):
    """``vfio_device_info_cap_pci_atomic_comp.flags``: AtomicOp completer widths."""

    COMP32 = VFIO_PCI_ATOMIC_COMP32
    COMP64 = VFIO_PCI_ATOMIC_COMP64
    COMP128 = VFIO_PCI_ATOMIC_COMP128


VFIO_REGION_INFO_FLAG_READ: Final = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE: Final = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP: Final = 1 << 2
VFIO_REGION_INFO_FLAG_CAPS: Final = 1 << 3


class RegionInfoFlag(enum.IntFlag):
    """``vfio_region_info.flags``."""

    READ = VFIO_REGION_INFO_FLAG_READ
    WRITE = VFIO_REGION_INFO_FLAG_WRITE
    MMAP = VFIO_REGION_INFO_FLAG_MMAP
    CAPS = VFIO_REGION_INFO_FLAG_CAPS


# Region-info capability ids.
VFIO_REGION_INFO_CAP_SPARSE_MMAP: Final = 1
VFIO_REGION_INFO_CAP_TYPE: Final = 2
VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: Final = 3
VFIO_REGION_INFO_CAP_NVLINK2_SSATGT: Final = 4
VFIO_REGION_INFO_CAP_NVLINK2_LNKSPD: Final = 5

# Region types / subtypes carried by the TYPE capability.
VFIO_REGION_TYPE_PCI_VENDOR_TYPE: Final = 1 << 31
VFIO_REGION_TYPE_PCI_VENDOR_MASK: Final = 0xFFFF
VFIO_REGION_TYPE_GFX: Final = 1
VFIO_REGION_TYPE_CCW: Final = 2
VFIO_REGION_TYPE_MIGRATION_DEPRECATED: Final = 3
VFIO_REGION_SUBTYPE_INTEL_IGD_OPREGION: Final = 1
VFIO_REGION_SUBTYPE_INTEL_IGD_HOST_CFG: Final = 2
VFIO_REGION_SUBTYPE_INTEL_IGD_LPC_CFG: Final = 3
VFIO_REGION_SUBTYPE_GFX_EDID: Final = 1

VFIO_IRQ_INFO_EVENTFD: Final = 1 << 0
VFIO_IRQ_INFO_MASKABLE: Final = 1 << 1
VFIO_IRQ_INFO_AUTOMASKED: Final = 1 << 2
VFIO_IRQ_INFO_NORESIZE: Final = 1 << 3


class IrqInfoFlag(enum.IntFlag):
    """``vfio_irq_info.flags``."""

    EVENTFD = VFIO_IRQ_INFO_EVENTFD
    MASKABLE = VFIO_IRQ_INFO_MASKABLE
    AUTOMASKED = VFIO_IRQ_INFO_AUTOMASKED
    NORESIZE = VFIO_IRQ_INFO_NORESIZE


VFIO_IRQ_SET_DATA_NONE: Final = 1 << 0
VFIO_IRQ_SET_DATA_BOOL: Final = 1 << 1
VFIO_IRQ_SET_DATA_EVENTFD: Final = 1 << 2
VFIO_IRQ_SET_ACTION_MASK: Final = 1 << 3
VFIO_IRQ_SET_ACTION_UNMASK: Final = 1 << 4
VFIO_IRQ_SET_ACTION_TRIGGER: Final = 1 << 5
VFIO_IRQ_SET_DATA_TYPE_MASK: Final = (
    VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD
)
VFIO_IRQ_SET_ACTION_TYPE_MASK: Final = (
    VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER
)


class IrqSetFlag(enum.IntFlag):
    """``vfio_irq_set.flags``: exactly one DATA_* and one ACTION_* bit must be set."""

    DATA_NONE = VFIO_IRQ_SET_DATA_NONE
    DATA_BOOL = VFIO_IRQ_SET_DATA_BOOL
    DATA_EVENTFD = VFIO_IRQ_SET_DATA_EVENTFD
    ACTION_MASK = VFIO_IRQ_SET_ACTION_MASK
    ACTION_UNMASK = VFIO_IRQ_SET_ACTION_UNMASK
    ACTION_TRIGGER = VFIO_IRQ_SET_ACTION_TRIGGER


VFIO_IOMMU_INFO_PGSIZES: Final = 1 << 0
VFIO_IOMMU_INFO_CAPS: Final = 1 << 1


class Type1InfoFlag(enum.IntFlag):
    """``vfio_iommu_type1_info.flags``."""

    PGSIZES = VFIO_IOMMU_INFO_PGSIZES
    CAPS = VFIO_IOMMU_INFO_CAPS


# Type1 info capability ids (the third one really is spelled without "CAP_").
VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: Final = 1
VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: Final = 2
VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: Final = 3

VFIO_DMA_MAP_FLAG_READ: Final = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE: Final = 1 << 1
VFIO_DMA_MAP_FLAG_VADDR: Final = 1 << 2


class DmaMapFlag(enum.IntFlag):
    """``vfio_iommu_type1_dma_map.flags``."""

    READ = VFIO_DMA_MAP_FLAG_READ
    WRITE = VFIO_DMA_MAP_FLAG_WRITE
    VADDR = VFIO_DMA_MAP_FLAG_VADDR


VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: Final = 1 << 0
VFIO_DMA_UNMAP_FLAG_ALL: Final = 1 << 1
VFIO_DMA_UNMAP_FLAG_VADDR: Final = 1 << 2


class DmaUnmapFlag(enum.IntFlag):
    """``vfio_iommu_type1_dma_unmap.flags``."""

    GET_DIRTY_BITMAP = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP
    ALL = VFIO_DMA_UNMAP_FLAG_ALL
    VADDR = VFIO_DMA_UNMAP_FLAG_VADDR


VFIO_IOMMU_DIRTY_PAGES_FLAG_START: Final = 1 << 0
VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP: Final = 1 << 1
VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP: Final = 1 << 2


class DirtyPagesFlag(enum.IntFlag):
    """``vfio_iommu_type1_dirty_bitmap.flags``: exactly one must be set."""

    START = VFIO_IOMMU_DIRTY_PAGES_FLAG_START
    STOP = VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP
    GET_BITMAP = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP


VFIO_DEVICE_FEATURE_MASK: Final = 0xFFFF  # low 16 bits: feature index
VFIO_DEVICE_FEATURE_GET: Final = 1 << 16
VFIO_DEVICE_FEATURE_SET: Final = 1 << 17
VFIO_DEVICE_FEATURE_PROBE: Final = 1 << 18


class DeviceFeatureFlag(enum.IntFlag):
    """Operation bits of ``vfio_device_feature.flags`` (the low 16 bits are the index)."""

    GET = VFIO_DEVICE_FEATURE_GET
    SET = VFIO_DEVICE_FEATURE_SET
    PROBE = VFIO_DEVICE_FEATURE_PROBE


VFIO_DEVICE_FEATURE_PCI_VF_TOKEN: Final = 0
VFIO_DEVICE_FEATURE_MIGRATION: Final = 1
VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: Final = 2
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY: Final = 3
VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP: Final = 4
VFIO_DEVICE_FEATURE_LOW_POWER_EXIT: Final = 5
VFIO_DEVICE_FEATURE_DMA_LOGGING_START: Final = 6
VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP: Final = 7
VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: Final = 8
VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: Final = 9  # not in 6.1
VFIO_DEVICE_FEATURE_BUS_MASTER: Final = 10  # not in 6.1


class DeviceFeature(enum.IntEnum):
    """Feature index in the low 16 bits of ``vfio_device_feature.flags``."""

    PCI_VF_TOKEN = VFIO_DEVICE_FEATURE_PCI_VF_TOKEN
    MIGRATION = VFIO_DEVICE_FEATURE_MIGRATION
    MIG_DEVICE_STATE = VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE
    LOW_POWER_ENTRY = VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY
    LOW_POWER_ENTRY_WITH_WAKEUP = VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP
    LOW_POWER_EXIT = VFIO_DEVICE_FEATURE_LOW_POWER_EXIT
    DMA_LOGGING_START = VFIO_DEVICE_FEATURE_DMA_LOGGING_START
    DMA_LOGGING_STOP = VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP
    DMA_LOGGING_REPORT = VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT
    MIG_DATA_SIZE = VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
    BUS_MASTER = VFIO_DEVICE_FEATURE_BUS_MASTER


VFIO_DEVICE_IOEVENTFD_8: Final = 1 << 0
VFIO_DEVICE_IOEVENTFD_16: Final = 1 << 1
VFIO_DEVICE_IOEVENTFD_32: Final = 1 << 2
VFIO_DEVICE_IOEVENTFD_64: Final = 1 << 3
VFIO_DEVICE_IOEVENTFD_SIZE_MASK: Final = 0xF


class IoeventfdFlag(enum.IntFlag):
    """``vfio_device_ioeventfd.flags``: width of the watched write (exactly one bit)."""

    SIZE_8 = VFIO_DEVICE_IOEVENTFD_8
    SIZE_16 = VFIO_DEVICE_IOEVENTFD_16
    SIZE_32 = VFIO_DEVICE_IOEVENTFD_32
    SIZE_64 = VFIO_DEVICE_IOEVENTFD_64


# Hot-reset info flags of the cdev era (>= 6.5): entries carry iommufd dev ids.
VFIO_PCI_HOT_RESET_FLAG_DEV_ID: Final = 1 << 0  # not in 6.1
VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED: Final = 1 << 1  # not in 6.1

# Device cdev flags (newer than the cdev ioctls themselves).
VFIO_DEVICE_BIND_FLAG_TOKEN: Final = 1 << 0  # ~6.17
VFIO_DEVICE_ATTACH_PASID: Final = 1 << 0  # ~6.15
VFIO_DEVICE_DETACH_PASID: Final = 1 << 0  # ~6.15

VFIO_GFX_PLANE_TYPE_PROBE: Final = 1 << 0
VFIO_GFX_PLANE_TYPE_DMABUF: Final = 1 << 1
VFIO_GFX_PLANE_TYPE_REGION: Final = 1 << 2

# ---------------------------------------------------------------------------------------------
# vfio-pci fixed region and IRQ indexes (C enums in the header).

VFIO_PCI_BAR0_REGION_INDEX: Final = 0
VFIO_PCI_BAR1_REGION_INDEX: Final = 1
VFIO_PCI_BAR2_REGION_INDEX: Final = 2
VFIO_PCI_BAR3_REGION_INDEX: Final = 3
VFIO_PCI_BAR4_REGION_INDEX: Final = 4
VFIO_PCI_BAR5_REGION_INDEX: Final = 5
VFIO_PCI_ROM_REGION_INDEX: Final = 6
VFIO_PCI_CONFIG_REGION_INDEX: Final = 7
VFIO_PCI_VGA_REGION_INDEX: Final = 8
VFIO_PCI_NUM_REGIONS: Final = 9

VFIO_PCI_INTX_IRQ_INDEX: Final = 0
VFIO_PCI_MSI_IRQ_INDEX: Final = 1
VFIO_PCI_MSIX_IRQ_INDEX: Final = 2
VFIO_PCI_ERR_IRQ_INDEX: Final = 3
VFIO_PCI_REQ_IRQ_INDEX: Final = 4
VFIO_PCI_NUM_IRQS: Final = 5


class PciRegion(enum.IntEnum):
    """vfio-pci region index (``vfio_region_info.index``)."""

    BAR0 = VFIO_PCI_BAR0_REGION_INDEX
    BAR1 = VFIO_PCI_BAR1_REGION_INDEX
    BAR2 = VFIO_PCI_BAR2_REGION_INDEX
    BAR3 = VFIO_PCI_BAR3_REGION_INDEX
    BAR4 = VFIO_PCI_BAR4_REGION_INDEX
    BAR5 = VFIO_PCI_BAR5_REGION_INDEX
    ROM = VFIO_PCI_ROM_REGION_INDEX
    CONFIG = VFIO_PCI_CONFIG_REGION_INDEX
    VGA = VFIO_PCI_VGA_REGION_INDEX


class PciIrq(enum.IntEnum):
    """vfio-pci IRQ index (``vfio_irq_info.index`` / ``vfio_irq_set.index``)."""

    INTX = VFIO_PCI_INTX_IRQ_INDEX
    MSI = VFIO_PCI_MSI_IRQ_INDEX
    MSIX = VFIO_PCI_MSIX_IRQ_INDEX
    ERR = VFIO_PCI_ERR_IRQ_INDEX
    REQ = VFIO_PCI_REQ_IRQ_INDEX


# Region offsets within the device fd: index << 40 (vfio-pci's VFIO_PCI_OFFSET_SHIFT, a
# kernel-internal constant, hence no VFIO_ prefix here).
PCI_OFFSET_SHIFT: Final = 40
PCI_OFFSET_MASK: Final = (1 << PCI_OFFSET_SHIFT) - 1


def region_offset(index: int) -> int:
    """Device-fd file offset where region ``index`` starts (what REGION_INFO reports)."""
    return index << PCI_OFFSET_SHIFT


def split_region_offset(file_offset: int) -> tuple[int, int]:
    """Split a device-fd offset (pread/pwrite/mmap) into ``(region index, offset in region)``."""
    return file_offset >> PCI_OFFSET_SHIFT, file_offset & PCI_OFFSET_MASK


# ---------------------------------------------------------------------------------------------
# Struct layouts.  ``min_through`` is the field whose end is the kernel's ``minsz``.

INFO_CAP_HEADER: Final = Layout.natural(
    "vfio_info_cap_header", [("id", U16), ("version", U16), ("next", U32)], size=8
)
"""Header of every capability in an INFO chain; ``next`` is relative to the info struct."""

GROUP_STATUS: Final = Layout.natural(
    "vfio_group_status", [("argsz", U32), ("flags", U32)], size=8
)

DEVICE_INFO: Final = Layout.natural(
    "vfio_device_info",
    [
        ("argsz", U32),
        ("flags", U32),
        ("num_regions", U32),
        ("num_irqs", U32),
        ("cap_offset", U32),
        ("pad", U32),
    ],
    size=24,
    min_through="num_irqs",
    doc="Upstream adds an explicit `pad` (size 24); the 6.1 header ends at cap_offset (20).",
)
DEVICE_INFO_SIZE_6_1: Final = 20
"""``sizeof(struct vfio_device_info)`` with the 6.1 header (no ``pad``): caps start here."""

CAP_PCI_ATOMIC_COMP: Final = Layout.natural(
    "vfio_device_info_cap_pci_atomic_comp",
    [("id", U16), ("version", U16), ("next", U32), ("flags", U32), ("reserved", U32)],
    size=16,
)

REGION_INFO: Final = Layout.natural(
    "vfio_region_info",
    [
        ("argsz", U32),
        ("flags", U32),
        ("index", U32),
        ("cap_offset", U32),
        ("size", U64),
        ("offset", U64),
    ],
    size=32,
)

SPARSE_MMAP_AREA: Final = Layout.natural(
    "vfio_region_sparse_mmap_area", [("offset", U64), ("size", U64)], size=16
)
CAP_SPARSE_MMAP: Final = Layout.natural(
    "vfio_region_info_cap_sparse_mmap",
    [("id", U16), ("version", U16), ("next", U32), ("nr_areas", U32), ("reserved", U32)],
    size=16,
    trailing=TrailingArray("areas", SPARSE_MMAP_AREA),
)
CAP_TYPE: Final = Layout.natural(
    "vfio_region_info_cap_type",
    [("id", U16), ("version", U16), ("next", U32), ("type", U32), ("subtype", U32)],
    size=16,
)
CAP_MSIX_MAPPABLE: Final = INFO_CAP_HEADER
"""The MSIX_MAPPABLE region capability is a bare header (8 bytes)."""

IRQ_INFO: Final = Layout.natural(
    "vfio_irq_info", [("argsz", U32), ("flags", U32), ("index", U32), ("count", U32)], size=16
)

IRQ_SET: Final = Layout.natural(
    "vfio_irq_set",
    [("argsz", U32), ("flags", U32), ("index", U32), ("start", U32), ("count", U32)],
    size=20,
    trailing=TrailingArray("data"),
    doc="data[]: `count` u8 bools (DATA_BOOL) or s32 fds (DATA_EVENTFD), or nothing.",
)

PCI_DEPENDENT_DEVICE: Final = Layout.natural(
    "vfio_pci_dependent_device",
    [("group_id", U32), ("segment", U16), ("bus", U8), ("devfn", U8)],
    size=8,
    aliases={"devid": "group_id"},  # union: an iommufd dev id with FLAG_DEV_ID (>= 6.5)
)
PCI_HOT_RESET_INFO: Final = Layout.natural(
    "vfio_pci_hot_reset_info",
    [("argsz", U32), ("flags", U32), ("count", U32)],
    size=12,
    trailing=TrailingArray("devices", PCI_DEPENDENT_DEVICE),
)
INT_FD: Final = Layout.natural("int", [("fd", S32)], size=4)
"""A lone C ``int`` holding an fd: SET_CONTAINER's argument, one ``group_fds[]`` entry."""
PCI_HOT_RESET: Final = Layout.natural(
    "vfio_pci_hot_reset",
    [("argsz", U32), ("flags", U32), ("count", U32)],
    size=12,
    trailing=TrailingArray("group_fds", INT_FD),
)

GFX_PLANE_INFO: Final = Layout.natural(
    "vfio_device_gfx_plane_info",
    [
        ("argsz", U32),
        ("flags", U32),
        ("drm_plane_type", U32),
        ("drm_format", U32),
        ("drm_format_mod", U64),
        ("width", U32),
        ("height", U32),
        ("stride", U32),
        ("size", U32),
        ("x_pos", U32),
        ("y_pos", U32),
        ("x_hot", U32),
        ("y_hot", U32),
        ("region_index", U32),
    ],
    size=64,
    aliases={"dmabuf_id": "region_index"},
)
GFX_DMABUF_ID: Final = Layout.natural("dmabuf_id", [("dmabuf_id", U32)], size=4)
"""Argument of GET_GFX_DMABUF: a pointer to one ``__u32``."""

DEVICE_IOEVENTFD: Final = Layout.natural(
    "vfio_device_ioeventfd",
    [
        ("argsz", U32),
        ("flags", U32),
        ("offset", U64),
        ("data", U64),
        ("fd", S32),
        ("reserved", U32),
    ],
    size=32,
    min_through="fd",
)

DEVICE_FEATURE: Final = Layout.natural(
    "vfio_device_feature",
    [("argsz", U32), ("flags", U32)],
    size=8,
    trailing=TrailingArray("data"),
)

TYPE1_INFO: Final = Layout.natural(
    "vfio_iommu_type1_info",
    [("argsz", U32), ("flags", U32), ("iova_pgsizes", U64), ("cap_offset", U32), ("pad", U32)],
    size=24,
    min_through="iova_pgsizes",
    doc="`pad` is explicit upstream; in 6.1 the same 4 bytes are implicit tail padding.",
)

IOVA_RANGE: Final = Layout.natural("vfio_iova_range", [("start", U64), ("end", U64)], size=16)
CAP_IOVA_RANGE: Final = Layout.natural(
    "vfio_iommu_type1_info_cap_iova_range",
    [("id", U16), ("version", U16), ("next", U32), ("nr_iovas", U32), ("reserved", U32)],
    size=16,
    trailing=TrailingArray("iova_ranges", IOVA_RANGE),
)
CAP_MIGRATION: Final = Layout.natural(
    "vfio_iommu_type1_info_cap_migration",
    [
        ("id", U16),
        ("version", U16),
        ("next", U32),
        ("flags", U32),
        ("pgsize_bitmap", U64),
        ("max_dirty_bitmap_size", U64),
    ],
    size=32,
)
CAP_DMA_AVAIL: Final = Layout.natural(
    "vfio_iommu_type1_info_dma_avail",
    [("id", U16), ("version", U16), ("next", U32), ("avail", U32)],
    size=12,
)

DMA_MAP: Final = Layout.natural(
    "vfio_iommu_type1_dma_map",
    [("argsz", U32), ("flags", U32), ("vaddr", PTR), ("iova", U64), ("size", U64)],
    size=32,
)

BITMAP: Final = Layout.natural(
    "vfio_bitmap", [("pgsize", U64), ("size", U64), ("data", PTR)], size=24
)
DMA_UNMAP: Final = Layout.natural(
    "vfio_iommu_type1_dma_unmap",
    [("argsz", U32), ("flags", U32), ("iova", U64), ("size", U64)],
    size=24,
    trailing=TrailingArray("data", BITMAP),
    doc="data[] holds a vfio_bitmap when flags has GET_DIRTY_BITMAP.",
)
DMA_UNMAP_WITH_BITMAP: Final = Layout.natural(
    "vfio_iommu_type1_dma_unmap+vfio_bitmap",
    [
        ("argsz", U32),
        ("flags", U32),
        ("iova", U64),
        ("size", U64),
        ("bitmap_pgsize", U64),
        ("bitmap_size", U64),
        ("bitmap_data", PTR),
    ],
    size=48,
    doc="UNMAP_DMA with GET_DIRTY_BITMAP, flattened: the kernel requires argsz >= 48.",
)

DIRTY_BITMAP: Final = Layout.natural(
    "vfio_iommu_type1_dirty_bitmap",
    [("argsz", U32), ("flags", U32)],
    size=8,
    trailing=TrailingArray("data"),
    doc="data[] holds a vfio_iommu_type1_dirty_bitmap_get for GET_BITMAP.",
)
DIRTY_BITMAP_GET: Final = Layout.natural(
    "vfio_iommu_type1_dirty_bitmap_get",
    [
        ("iova", U64),
        ("size", U64),
        ("bitmap_pgsize", U64),
        ("bitmap_size", U64),
        ("bitmap_data", PTR),
    ],
    size=40,
    doc="The nested vfio_bitmap is flattened into bitmap_* fields (offset 16).",
)

EEH_PE_OP: Final = Layout(
    "vfio_eeh_pe_op",
    [
        Field("argsz", 0, U32),
        Field("flags", 4, U32),
        Field("op", 8, U32),
        # anonymous union { struct vfio_eeh_pe_err err; }, 8-aligned because of its u64s
        Field("err_type", 16, U32),
        Field("err_func", 20, U32),
        Field("err_addr", 24, U64),
        Field("err_mask", 32, U64),
    ],
    40,
    min_through="op",
    doc="sPAPR only; type1 answers ENOTTY.  The union's vfio_eeh_pe_err is flattened.",
)

DEVICE_BIND_IOMMUFD: Final = Layout.natural(
    "vfio_device_bind_iommufd",
    [
        ("argsz", U32),
        ("flags", U32),
        ("iommufd", S32),
        ("out_devid", U32),
        ("token_uuid_ptr", PTR),
    ],
    size=24,
    min_through="out_devid",
    doc="token_uuid_ptr (and size 24) since ~6.17; older kernels know 16 bytes.",
)
DEVICE_ATTACH_IOMMUFD_PT: Final = Layout.natural(
    "vfio_device_attach_iommufd_pt",
    [("argsz", U32), ("flags", U32), ("pt_id", U32), ("pasid", U32)],
    size=16,
    min_through="pt_id",
    doc="pasid (and size 16) since ~6.15; required only with VFIO_DEVICE_ATTACH_PASID.",
)
DEVICE_DETACH_IOMMUFD_PT: Final = Layout.natural(
    "vfio_device_detach_iommufd_pt",
    [("argsz", U32), ("flags", U32), ("pasid", U32)],
    size=12,
    min_through="flags",
    doc="pasid (and size 12) since ~6.15; required only with VFIO_DEVICE_DETACH_PASID.",
)

LAYOUTS: Final[dict[str, Layout]] = {
    layout.name: layout
    for layout in (
        INFO_CAP_HEADER,
        GROUP_STATUS,
        DEVICE_INFO,
        CAP_PCI_ATOMIC_COMP,
        REGION_INFO,
        SPARSE_MMAP_AREA,
        CAP_SPARSE_MMAP,
        CAP_TYPE,
        IRQ_INFO,
        IRQ_SET,
        PCI_DEPENDENT_DEVICE,
        PCI_HOT_RESET_INFO,
        PCI_HOT_RESET,
        GFX_PLANE_INFO,
        DEVICE_IOEVENTFD,
        DEVICE_FEATURE,
        TYPE1_INFO,
        IOVA_RANGE,
        CAP_IOVA_RANGE,
        CAP_MIGRATION,
        CAP_DMA_AVAIL,
        DMA_MAP,
        BITMAP,
        DMA_UNMAP,
        DIRTY_BITMAP,
        DIRTY_BITMAP_GET,
        EEH_PE_OP,
        DEVICE_BIND_IOMMUFD,
        DEVICE_ATTACH_IOMMUFD_PT,
        DEVICE_DETACH_IOMMUFD_PT,
    )
}
"""Every real VFIO struct by its C name (helper views like DMA_UNMAP_WITH_BITMAP excluded)."""
