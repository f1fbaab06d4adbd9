"""iommufd uAPI (``linux/iommufd.h``): ioctl numbers, struct layouts, constants.

Every iommufd command is ``_IO(';', nr)`` with nr 0x80..0x94 (0xA0 for the selftest command)
and a struct whose first u32 is ``size``.  The kernel accepts any ``size`` between the struct's
``min_size`` (end of the last mandatory field) and beyond its own ``ksize`` as long as the
extra tail is zero; each :class:`~ioasidfs.uapi.layout.Layout` here carries both numbers
(``layout.size`` is the current upstream ksize).

The machine's headers have no ``linux/iommufd.h``, so the facts come from
``/work/shared/spec/iommufd.md`` §1 and the upstream header; the unit test checks them against
a table written from the spec.  Field names drop the kernel's leading ``__`` (``__reserved`` →
``reserved``) so they can be passed as Python keyword arguments.
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

from .ioctl import IO
from .layout import BYTES, PTR, S32, U8, U16, U32, U64, Field, FieldSpec, Layout

IOMMUFD_TYPE: Final = ord(";")
IOMMUFD_CMD_BASE: Final = 0x80

# Command numbers (the nr byte).
IOMMUFD_CMD_DESTROY: Final = 0x80
IOMMUFD_CMD_IOAS_ALLOC: Final = 0x81
IOMMUFD_CMD_IOAS_ALLOW_IOVAS: Final = 0x82
IOMMUFD_CMD_IOAS_COPY: Final = 0x83
IOMMUFD_CMD_IOAS_IOVA_RANGES: Final = 0x84
IOMMUFD_CMD_IOAS_MAP: Final = 0x85
IOMMUFD_CMD_IOAS_UNMAP: Final = 0x86
IOMMUFD_CMD_OPTION: Final = 0x87
IOMMUFD_CMD_VFIO_IOAS: Final = 0x88
IOMMUFD_CMD_HWPT_ALLOC: Final = 0x89
IOMMUFD_CMD_GET_HW_INFO: Final = 0x8A
IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING: Final = 0x8B
IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP: Final = 0x8C
IOMMUFD_CMD_HWPT_INVALIDATE: Final = 0x8D
IOMMUFD_CMD_FAULT_QUEUE_ALLOC: Final = 0x8E
IOMMUFD_CMD_IOAS_MAP_FILE: Final = 0x8F
IOMMUFD_CMD_VIOMMU_ALLOC: Final = 0x90
IOMMUFD_CMD_VDEVICE_ALLOC: Final = 0x91
IOMMUFD_CMD_IOAS_CHANGE_PROCESS: Final = 0x92
IOMMUFD_CMD_VEVENTQ_ALLOC: Final = 0x93
IOMMUFD_CMD_HW_QUEUE_ALLOC: Final = 0x94
IOMMUFD_CMD_TEST: Final = IOMMUFD_CMD_BASE + 32  # 0xA0, only with CONFIG_IOMMUFD_TEST

IOMMU_DESTROY: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY)
IOMMU_IOAS_ALLOC: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC)
IOMMU_IOAS_ALLOW_IOVAS: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS)
IOMMU_IOAS_COPY: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY)
IOMMU_IOAS_IOVA_RANGES: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES)
IOMMU_IOAS_MAP: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP)
IOMMU_IOAS_UNMAP: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP)
IOMMU_OPTION: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION)
IOMMU_VFIO_IOAS: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS)
IOMMU_HWPT_ALLOC: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC)
IOMMU_GET_HW_INFO: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO)
IOMMU_HWPT_SET_DIRTY_TRACKING: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING)
IOMMU_HWPT_GET_DIRTY_BITMAP: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP)
IOMMU_HWPT_INVALIDATE: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_INVALIDATE)
IOMMU_FAULT_QUEUE_ALLOC: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC)
IOMMU_IOAS_MAP_FILE: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE)
IOMMU_VIOMMU_ALLOC: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_VIOMMU_ALLOC)
IOMMU_VDEVICE_ALLOC: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_VDEVICE_ALLOC)
IOMMU_IOAS_CHANGE_PROCESS: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_CHANGE_PROCESS)
IOMMU_VEVENTQ_ALLOC: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_VEVENTQ_ALLOC)
IOMMU_HW_QUEUE_ALLOC: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_HW_QUEUE_ALLOC)
IOMMU_TEST_CMD: Final = IO(IOMMUFD_TYPE, IOMMUFD_CMD_TEST)

# ---------------------------------------------------------------------------------------------
# Constants and flags (spec §1.3).

IOMMU_IOAS_MAP_FIXED_IOVA: Final = 1 << 0
IOMMU_IOAS_MAP_WRITEABLE: Final = 1 << 1
IOMMU_IOAS_MAP_READABLE: Final = 1 << 2


class IoasMapFlag(enum.IntFlag):
    """Flags of IOAS_MAP, IOAS_MAP_FILE and IOAS_COPY."""

    FIXED_IOVA = IOMMU_IOAS_MAP_FIXED_IOVA
    WRITEABLE = IOMMU_IOAS_MAP_WRITEABLE
    READABLE = IOMMU_IOAS_MAP_READABLE


IOMMU_OPTION_RLIMIT_MODE: Final = 0
IOMMU_OPTION_HUGE_PAGES: Final = 1
IOMMU_OPTION_OP_SET: Final = 0
IOMMU_OPTION_OP_GET: Final = 1


class OptionId(enum.IntEnum):
    """``iommu_option.option_id``."""

    RLIMIT_MODE = IOMMU_OPTION_RLIMIT_MODE
    HUGE_PAGES = IOMMU_OPTION_HUGE_PAGES


class OptionOp(enum.IntEnum):
    """``iommu_option.op``."""

    SET = IOMMU_OPTION_OP_SET
    GET = IOMMU_OPTION_OP_GET


IOMMU_VFIO_IOAS_GET: Final = 0
IOMMU_VFIO_IOAS_SET: Final = 1
IOMMU_VFIO_IOAS_CLEAR: Final = 2


class VfioIoasOp(enum.IntEnum):
    """``iommu_vfio_ioas.op``."""

    GET = IOMMU_VFIO_IOAS_GET
    SET = IOMMU_VFIO_IOAS_SET
    CLEAR = IOMMU_VFIO_IOAS_CLEAR


IOMMU_HWPT_ALLOC_NEST_PARENT: Final = 1 << 0
IOMMU_HWPT_ALLOC_DIRTY_TRACKING: Final = 1 << 1
IOMMU_HWPT_FAULT_ID_VALID: Final = 1 << 2  # >= 6.11
IOMMU_HWPT_ALLOC_PASID: Final = 1 << 3  # ~6.15


class HwptAllocFlag(enum.IntFlag):
    """``iommu_hwpt_alloc.flags``."""

    NEST_PARENT = IOMMU_HWPT_ALLOC_NEST_PARENT
    DIRTY_TRACKING = IOMMU_HWPT_ALLOC_DIRTY_TRACKING
    FAULT_ID_VALID = IOMMU_HWPT_FAULT_ID_VALID
    PASID = IOMMU_HWPT_ALLOC_PASID


IOMMU_HWPT_DATA_NONE: Final = 0
IOMMU_HWPT_DATA_VTD_S1: Final = 1
IOMMU_HWPT_DATA_ARM_SMMUV3: Final = 2
IOMMU_HWPT_DATA_SELFTEST: Final = 0xDEAD  # mock driver (iommufd_test.h)


class HwptDataType(enum.IntEnum):
    """``iommu_hwpt_alloc.data_type``."""

    NONE = IOMMU_HWPT_DATA_NONE
    VTD_S1 = IOMMU_HWPT_DATA_VTD_S1
    ARM_SMMUV3 = IOMMU_HWPT_DATA_ARM_SMMUV3
    SELFTEST = IOMMU_HWPT_DATA_SELFTEST


IOMMU_HW_INFO_TYPE_NONE: Final = 0
IOMMU_HW_INFO_TYPE_DEFAULT: Final = 0  # input meaning of the same value (>= ~6.17)
IOMMU_HW_INFO_TYPE_INTEL_VTD: Final = 1
IOMMU_HW_INFO_TYPE_ARM_SMMUV3: Final = 2
IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: Final = 3
IOMMU_HW_INFO_TYPE_SELFTEST: Final = 0xFEEDBEEF  # mock driver (iommufd_test.h)


class HwInfoType(enum.IntEnum):
    """``iommu_hw_info.out_data_type`` (NONE doubles as DEFAULT on input)."""

    NONE = IOMMU_HW_INFO_TYPE_NONE
    INTEL_VTD = IOMMU_HW_INFO_TYPE_INTEL_VTD
    ARM_SMMUV3 = IOMMU_HW_INFO_TYPE_ARM_SMMUV3
    TEGRA241_CMDQV = IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV
    SELFTEST = IOMMU_HW_INFO_TYPE_SELFTEST


IOMMU_HW_INFO_FLAG_INPUT_TYPE: Final = 1 << 0  # ~6.17

IOMMU_HW_CAP_DIRTY_TRACKING: Final = 1 << 0
IOMMU_HW_CAP_PCI_PASID_EXEC: Final = 1 << 1
IOMMU_HW_CAP_PCI_PASID_PRIV: Final = 1 << 2


class HwCapability(enum.IntFlag):
    """``iommu_hw_info.out_capabilities``."""

    DIRTY_TRACKING = IOMMU_HW_CAP_DIRTY_TRACKING
    PCI_PASID_EXEC = IOMMU_HW_CAP_PCI_PASID_EXEC
    PCI_PASID_PRIV = IOMMU_HW_CAP_PCI_PASID_PRIV


IOMMU_HWPT_DIRTY_TRACKING_ENABLE: Final = 1 << 0
IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: Final = 1 << 0

IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: Final = 0
IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: Final = 1
IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: Final = 0xDEADBEEF  # mock driver (iommufd_test.h)

IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID: Final = 0xDADBEEF  # iommufd_test.h
IOMMU_TEST_INVALIDATE_FLAG_ALL: Final = 1 << 0  # iommufd_test.h
MOCK_NESTED_DOMAIN_IOTLB_NUM: Final = 4  # iommufd_test.h
MOCK_NESTED_DOMAIN_IOTLB_ID_MAX: Final = MOCK_NESTED_DOMAIN_IOTLB_NUM - 1

IOMMU_PGFAULT_FLAGS_PASID_VALID: Final = 1 << 0
IOMMU_PGFAULT_FLAGS_LAST_PAGE: Final = 1 << 1
IOMMUFD_PAGE_RESP_SUCCESS: Final = 0
IOMMUFD_PAGE_RESP_INVALID: Final = 1

IOMMU_VIOMMU_TYPE_DEFAULT: Final = 0
IOMMU_VIOMMU_TYPE_ARM_SMMUV3: Final = 1
IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: Final = 2
IOMMU_VIOMMU_TYPE_SELFTEST: Final = 0xDEADBEEF  # mock driver (iommufd_test.h)

IOMMU_VEVENTQ_TYPE_DEFAULT: Final = 0
IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: Final = 1
IOMMU_HW_QUEUE_TYPE_DEFAULT: Final = 0
IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV: Final = 1
IOMMU_VEVENTQ_FLAG_LOST_EVENTS: Final = 1 << 0  # iommufd_vevent_header.flags

# The mock driver's vIOMMU (iommufd_test.h).
IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST: Final = 0xDEADBEEF
IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID: Final = 0xDADBEEF
IOMMU_VEVENTQ_TYPE_SELFTEST: Final = 0xBEEFBEEF
IOMMU_HW_QUEUE_TYPE_SELFTEST: Final = 0xDEADBEEF
IOMMU_TEST_HW_QUEUE_MAX: Final = 2

# ---------------------------------------------------------------------------------------------
# Struct layouts (spec §1.2).  ``min_through`` = the field named in the kernel's IOCTL_OP().

DESTROY: Final = Layout.natural(
    "iommu_destroy", [("size", U32), ("id", U32)], size=8, min_through="id"
)
IOAS_ALLOC: Final = Layout.natural(
    "iommu_ioas_alloc",
    [("size", U32), ("flags", U32), ("out_ioas_id", U32)],
    size=12,
    min_through="out_ioas_id",
)
IOVA_RANGE: Final = Layout.natural(
    "iommu_iova_range", [("start", U64), ("last", U64)], size=16, doc="`last` is inclusive."
)
IOAS_ALLOW_IOVAS: Final = Layout.natural(
    "iommu_ioas_allow_iovas",
    [
        ("size", U32),
        ("ioas_id", U32),
        ("num_iovas", U32),
        ("reserved", U32),
        ("allowed_iovas", PTR),
    ],
    size=24,
    min_through="allowed_iovas",
)
IOAS_COPY: Final = Layout.natural(
    "iommu_ioas_copy",
    [
        ("size", U32),
        ("flags", U32),
        ("dst_ioas_id", U32),
        ("src_ioas_id", U32),
        ("length", U64),
        ("dst_iova", U64),
        ("src_iova", U64),
    ],
    size=40,
    min_through="src_iova",
)
IOAS_IOVA_RANGES: Final = Layout.natural(
    "iommu_ioas_iova_ranges",
    [
        ("size", U32),
        ("ioas_id", U32),
        ("num_iovas", U32),
        ("reserved", U32),
        ("allowed_iovas", PTR),
        ("out_iova_alignment", U64),
    ],
    size=32,
    min_through="out_iova_alignment",
)
IOAS_MAP: Final = Layout.natural(
    "iommu_ioas_map",
    [
        ("size", U32),
        ("flags", U32),
        ("ioas_id", U32),
        ("reserved", U32),
        ("user_va", PTR),
        ("length", U64),
        ("iova", U64),
    ],
    size=40,
    min_through="iova",
)
IOAS_UNMAP: Final = Layout.natural(
    "iommu_ioas_unmap",
    [("size", U32), ("ioas_id", U32), ("iova", U64), ("length", U64)],
    size=24,
    min_through="length",
)
OPTION: Final = Layout.natural(
    "iommu_option",
    [
        ("size", U32),
        ("option_id", U32),
        ("op", U16),
        ("reserved", U16),
        ("object_id", U32),
        ("val64", U64),
    ],
    size=24,
    min_through="val64",
)
VFIO_IOAS: Final = Layout.natural(
    "iommu_vfio_ioas",
    [("size", U32), ("ioas_id", U32), ("op", U16), ("reserved", U16)],
    size=12,
    min_through="reserved",
)
HWPT_ALLOC: Final = Layout.natural(
    "iommu_hwpt_alloc",
    [
        ("size", U32),
        ("flags", U32),
        ("dev_id", U32),
        ("pt_id", U32),
        ("out_hwpt_id", U32),
        ("reserved", U32),
        ("data_type", U32),
        ("data_len", U32),
        ("data_uptr", PTR),
        ("fault_id", U32),
        ("reserved2", U32),
    ],
    size=48,
    min_through="reserved",
)
HWPT_ALLOC_SIZE_6_6: Final = 24
"""ksize of iommu_hwpt_alloc in 6.6 (no data_* fields)."""
HWPT_ALLOC_SIZE_6_7: Final = 40
"""ksize of iommu_hwpt_alloc in 6.7-6.10 (no fault_id)."""

HW_INFO: Final = Layout.natural(
    "iommu_hw_info",
    [
        ("size", U32),
        ("flags", U32),
        ("dev_id", U32),
        ("data_len", U32),
        ("data_uptr", PTR),
        ("out_data_type", U32),
        ("out_max_pasid_log2", U8),
        ("reserved", BYTES, 3),
        ("out_capabilities", U64),
    ],
    size=40,
    min_through="reserved",
    aliases={"in_data_type": "out_data_type"},
    doc="<= 6.14 bytes 28..31 were one u32 __reserved; the minimum size is 32 either way.",
)
HW_INFO_SIZE_6_6: Final = 32
"""ksize of iommu_hw_info in 6.6 (no out_capabilities)."""

IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: Final = 1 << 0
"""``iommu_hw_info_vtd.flags``: the IOMMU has erratum 772415 (SPR17: no read-only IOPTEs in
nested parents)."""

HW_INFO_VTD: Final = Layout.natural(
    "iommu_hw_info_vtd",
    [("flags", U32), ("reserved", U32), ("cap_reg", U64), ("ecap_reg", U64)],
    size=24,
    doc="IOMMU_GET_HW_INFO's data for IOMMU_HW_INFO_TYPE_INTEL_VTD: the raw VT-d CAP_REG and "
        "ECAP_REG (intel/iommu.c:intel_iommu_hw_info).",
)

HWPT_SET_DIRTY_TRACKING: Final = Layout.natural(
    "iommu_hwpt_set_dirty_tracking",
    [("size", U32), ("flags", U32), ("hwpt_id", U32), ("reserved", U32)],
    size=16,
    min_through="reserved",
)
HWPT_GET_DIRTY_BITMAP: Final = Layout.natural(
    "iommu_hwpt_get_dirty_bitmap",
    [
        ("size", U32),
        ("hwpt_id", U32),
        ("flags", U32),
        ("reserved", U32),
        ("iova", U64),
        ("length", U64),
        ("page_size", U64),
        ("data", PTR),
    ],
    size=48,
    min_through="data",
)
HWPT_INVALIDATE: Final = Layout.natural(
    "iommu_hwpt_invalidate",
    [
        ("size", U32),
        ("hwpt_id", U32),
        ("data_uptr", PTR),
        ("data_type", U32),
        ("entry_len", U32),
        ("entry_num", U32),
        ("reserved", U32),
    ],
    size=32,
    min_through="reserved",
)
FAULT_ALLOC: Final = Layout.natural(
    "iommu_fault_alloc",
    [("size", U32), ("flags", U32), ("out_fault_id", U32), ("out_fault_fd", U32)],
    size=16,
    min_through="out_fault_fd",
)
HWPT_SELFTEST: Final = Layout.natural("iommu_hwpt_selftest", [("iotlb", U32)])
"""The mock driver's IOMMU_HWPT_DATA_SELFTEST data for a nested HWPT (iommufd_test.h)."""
HWPT_INVALIDATE_SELFTEST: Final = Layout.natural(
    "iommu_hwpt_invalidate_selftest", [("flags", U32), ("iotlb_id", U32)])
"""One IOMMU_HWPT_INVALIDATE_DATA_SELFTEST request (iommufd_test.h)."""
HWPT_PGFAULT: Final = Layout.natural(
    "iommu_hwpt_pgfault",
    [("flags", U32), ("dev_id", U32), ("pasid", U32), ("grpid", U32), ("perm", U32),
     ("reserved", U32), ("addr", U64), ("length", U32), ("cookie", U32)],
    size=40,
)
"""What read() of a fault queue fd returns, one per fault."""
HWPT_PAGE_RESPONSE: Final = Layout.natural(
    "iommu_hwpt_page_response", [("cookie", U32), ("code", U32)], size=8)
"""What write() to a fault queue fd takes, one per fault group."""
IOAS_MAP_FILE: Final = Layout.natural(
    "iommu_ioas_map_file",
    [
        ("size", U32),
        ("flags", U32),
        ("ioas_id", U32),
        ("fd", S32),
        ("start", U64),
        ("length", U64),
        ("iova", U64),
    ],
    size=40,
    min_through="iova",
)
VIOMMU_ALLOC: Final = Layout.natural(
    "iommu_viommu_alloc",
    [
        ("size", U32),
        ("flags", U32),
        ("type", U32),
        ("dev_id", U32),
        ("hwpt_id", U32),
        ("out_viommu_id", U32),
        ("data_len", U32),
        ("reserved", U32),
        ("data_uptr", PTR),
    ],
    size=40,
    min_through="out_viommu_id",
)
VIOMMU_ALLOC_SIZE_6_13: Final = 24
"""ksize of iommu_viommu_alloc in 6.13 (no driver data)."""

VIOMMU_SELFTEST: Final = Layout.natural(
    "iommu_viommu_selftest", [("in_data", U32), ("out_data", U32)])
"""The mock driver's IOMMU_VIOMMU_TYPE_SELFTEST data: out_data echoes in_data (iommufd_test.h)."""
VIOMMU_INVALIDATE_SELFTEST: Final = Layout.natural(
    "iommu_viommu_invalidate_selftest", [("flags", U32), ("vdev_id", U32), ("cache_id", U32)])
"""One IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST request (iommufd_test.h)."""
VEVENT_HEADER: Final = Layout.natural(
    "iommufd_vevent_header", [("flags", U32), ("sequence", U32)])
"""What read() of a vEVENTQ fd returns before each event's data."""
VIOMMU_EVENT_SELFTEST: Final = Layout.natural("iommu_viommu_event_selftest", [("virt_id", U32)])
"""The mock's IOMMU_VEVENTQ_TYPE_SELFTEST event (iommufd_test.h)."""

VDEVICE_ALLOC: Final = Layout.natural(
    "iommu_vdevice_alloc",
    [("size", U32), ("viommu_id", U32), ("dev_id", U32), ("out_vdevice_id", U32), ("virt_id", U64)],
    size=24,
    min_through="virt_id",
)
IOAS_CHANGE_PROCESS: Final = Layout.natural(
    "iommu_ioas_change_process",
    [("size", U32), ("reserved", U32)],
    size=8,
    min_through="reserved",
)
VEVENTQ_ALLOC: Final = Layout.natural(
    "iommu_veventq_alloc",
    [
        ("size", U32),
        ("flags", U32),
        ("viommu_id", U32),
        ("type", U32),
        ("veventq_depth", U32),
        ("out_veventq_id", U32),
        ("out_veventq_fd", U32),
        ("reserved", U32),
    ],
    size=32,
    min_through="out_veventq_fd",
    doc="min size from upstream main.c IOCTL_OP (spec §1.1 leaves it unverified).",
)
HW_QUEUE_ALLOC: Final = Layout.natural(
    "iommu_hw_queue_alloc",
    [
        ("size", U32),
        ("flags", U32),
        ("viommu_id", U32),
        ("type", U32),
        ("index", U32),
        ("out_hw_queue_id", U32),
        ("nesting_parent_iova", U64),
        ("length", U64),
    ],
    size=40,
    min_through="length",
    doc="min size from upstream main.c IOCTL_OP (spec §1.1 leaves it unverified).",
)

# ---------------------------------------------------------------------------------------------
# IOMMU_TEST_CMD (selftest mock, spec §5): a 16-byte header, a 48-byte union at 16, `last` at 64.

IOMMU_TEST_OP_ADD_RESERVED: Final = 1
IOMMU_TEST_OP_MOCK_DOMAIN: Final = 2
IOMMU_TEST_OP_MD_CHECK_MAP: Final = 3
IOMMU_TEST_OP_MD_CHECK_REFS: Final = 4
IOMMU_TEST_OP_CREATE_ACCESS: Final = 5
IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: Final = 6
IOMMU_TEST_OP_ACCESS_PAGES: Final = 7
IOMMU_TEST_OP_ACCESS_RW: Final = 8
IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: Final = 9
IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: Final = 10
IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: Final = 11
IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: Final = 12
IOMMU_TEST_OP_DIRTY: Final = 13
IOMMU_TEST_OP_MD_CHECK_IOTLB: Final = 14
IOMMU_TEST_OP_TRIGGER_IOPF: Final = 15
IOMMU_TEST_OP_DEV_CHECK_CACHE: Final = 16
IOMMU_TEST_OP_TRIGGER_VEVENT: Final = 17
IOMMU_TEST_OP_PASID_ATTACH: Final = 18
IOMMU_TEST_OP_PASID_REPLACE: Final = 19
IOMMU_TEST_OP_PASID_DETACH: Final = 20
IOMMU_TEST_OP_PASID_CHECK_HWPT: Final = 21


class TestOp(enum.IntEnum):
    """``iommu_test_cmd.op``."""

    __test__ = False  # not a pytest test class, despite the name

    ADD_RESERVED = IOMMU_TEST_OP_ADD_RESERVED
    MOCK_DOMAIN = IOMMU_TEST_OP_MOCK_DOMAIN
    MD_CHECK_MAP = IOMMU_TEST_OP_MD_CHECK_MAP
    MD_CHECK_REFS = IOMMU_TEST_OP_MD_CHECK_REFS
    CREATE_ACCESS = IOMMU_TEST_OP_CREATE_ACCESS
    DESTROY_ACCESS_PAGES = IOMMU_TEST_OP_DESTROY_ACCESS_PAGES
    ACCESS_PAGES = IOMMU_TEST_OP_ACCESS_PAGES
    ACCESS_RW = IOMMU_TEST_OP_ACCESS_RW
    SET_TEMP_MEMORY_LIMIT = IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT
    MOCK_DOMAIN_REPLACE = IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE
    ACCESS_REPLACE_IOAS = IOMMU_TEST_OP_ACCESS_REPLACE_IOAS
    MOCK_DOMAIN_FLAGS = IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS
    DIRTY = IOMMU_TEST_OP_DIRTY
    MD_CHECK_IOTLB = IOMMU_TEST_OP_MD_CHECK_IOTLB
    TRIGGER_IOPF = IOMMU_TEST_OP_TRIGGER_IOPF
    DEV_CHECK_CACHE = IOMMU_TEST_OP_DEV_CHECK_CACHE
    TRIGGER_VEVENT = IOMMU_TEST_OP_TRIGGER_VEVENT
    PASID_ATTACH = IOMMU_TEST_OP_PASID_ATTACH
    PASID_REPLACE = IOMMU_TEST_OP_PASID_REPLACE
    PASID_DETACH = IOMMU_TEST_OP_PASID_DETACH
    PASID_CHECK_HWPT = IOMMU_TEST_OP_PASID_CHECK_HWPT


MOCK_APERTURE_START: Final = 1 << 24
MOCK_APERTURE_LAST: Final = (1 << 31) - 1
MOCK_FLAGS_ACCESS_WRITE: Final = 1 << 0
MOCK_FLAGS_ACCESS_SYZ: Final = 1 << 16
MOCK_ACCESS_RW_WRITE: Final = 1 << 0
MOCK_ACCESS_RW_SLOW_PATH: Final = 1 << 2
MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES: Final = 1 << 0
MOCK_FLAGS_DEVICE_NO_DIRTY: Final = 1 << 0
MOCK_FLAGS_DEVICE_HUGE_IOVA: Final = 1 << 1
MOCK_FLAGS_DEVICE_PASID: Final = 1 << 2
IOMMU_TEST_IOTLB_DEFAULT: Final = 0xBADBEEF
IOMMU_TEST_DEV_CACHE_DEFAULT: Final = 0xBADDAD
MOCK_DEV_CACHE_NUM: Final = 4
MOCK_PASID_WIDTH: Final = 20
IOMMU_HW_INFO_SELFTEST_REGVAL: Final = 0xDEADBEEF
TEST_HW_INFO: Final = Layout.natural("iommu_test_hw_info", [("flags", U32), ("test_reg", U32)])
"""The mock IOMMU's GET_HW_INFO blob (IOMMU_HW_INFO_TYPE_SELFTEST)."""

_TEST_UNION_OFFSET: Final = 16
_TEST_UNION_SIZE: Final = 48

TEST_CMD: Final = Layout(
    "iommu_test_cmd",
    [
        Field("size", 0, U32),
        Field("op", 4, U32),
        Field("id", 8, U32),
        Field("reserved", 12, U32),
        Field("union", _TEST_UNION_OFFSET, BYTES, _TEST_UNION_SIZE),
        Field("last", _TEST_UNION_OFFSET + _TEST_UNION_SIZE, U32),
    ],
    72,  # the union holds u64s, so the struct is 8-aligned: 68 bytes of fields + 4 padding
    min_through="last",
    doc="Generic view; TEST_CMD_BY_OP gives the union decoded per op.",
)
TEST_CMD_SIZE_6_6: Final = 56
"""ksize of iommu_test_cmd up to 6.6 (32-byte union)."""
TEST_CMD_MIN_SIZE_6_6: Final = 52
"""min size (end of ``last``) of iommu_test_cmd up to 6.6."""


def _test_cmd(op_name: str, union_specs: Sequence[FieldSpec]) -> Layout:
    """Whole-struct layout for one op: header, that op's union member, padding, ``last``."""
    union = Layout.natural(f"iommu_test_cmd.{op_name}", union_specs)
    if union.size > _TEST_UNION_SIZE:
        raise ValueError(f"test op {op_name} overflows the union")
    header = [
        Field("size", 0, U32),
        Field("op", 4, U32),
        Field("id", 8, U32),
        Field("reserved", 12, U32),
    ]
    members = [Field(f.name, _TEST_UNION_OFFSET + f.offset, f.kind, f.size) for f in union.fields]
    last = Field("last", _TEST_UNION_OFFSET + _TEST_UNION_SIZE, U32)
    return Layout(
        f"iommu_test_cmd.{op_name}",
        header + members + [last],
        TEST_CMD.size,
        min_through="last",
    )


TEST_CMD_BY_OP: Final[dict[int, Layout]] = {
    IOMMU_TEST_OP_ADD_RESERVED: _test_cmd("add_reserved", [("start", U64), ("length", U64)]),
    IOMMU_TEST_OP_MOCK_DOMAIN: _test_cmd(
        "mock_domain", [("out_stdev_id", U32), ("out_hwpt_id", U32), ("out_idev_id", U32)]
    ),
    IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: _test_cmd(
        "mock_domain_flags",
        [("out_stdev_id", U32), ("out_hwpt_id", U32), ("out_idev_id", U32), ("dev_flags", U32)],
    ),
    IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: _test_cmd("mock_domain_replace", [("pt_id", U32)]),
    IOMMU_TEST_OP_MD_CHECK_MAP: _test_cmd(
        "check_map", [("iova", U64), ("length", U64), ("uptr", PTR)]
    ),
    IOMMU_TEST_OP_MD_CHECK_REFS: _test_cmd(
        "check_refs", [("length", U64), ("uptr", PTR), ("refs", U32)]
    ),
    IOMMU_TEST_OP_CREATE_ACCESS: _test_cmd(
        "create_access", [("out_access_fd", U32), ("flags", U32)]
    ),
    IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: _test_cmd(
        "destroy_access_pages", [("access_pages_id", U32)]
    ),
    IOMMU_TEST_OP_ACCESS_PAGES: _test_cmd(
        "access_pages",
        [
            ("flags", U32),
            ("out_access_pages_id", U32),
            ("iova", U64),
            ("length", U64),
            ("uptr", PTR),
        ],
    ),
    IOMMU_TEST_OP_ACCESS_RW: _test_cmd(
        "access_rw", [("iova", U64), ("length", U64), ("uptr", PTR), ("flags", U32)]
    ),
    IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: _test_cmd("memory_limit", [("limit", U32)]),
    IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: _test_cmd("access_replace_ioas", [("ioas_id", U32)]),
    IOMMU_TEST_OP_DIRTY: _test_cmd(
        "dirty",
        [
            ("flags", U32),
            ("iova", U64),
            ("length", U64),
            ("page_size", U64),
            ("uptr", PTR),
            ("out_nr_dirty", U64),
        ],
    ),
    IOMMU_TEST_OP_MD_CHECK_IOTLB: _test_cmd("check_iotlb", [("iotlb_id", U32), ("iotlb", U32)]),
    IOMMU_TEST_OP_TRIGGER_IOPF: _test_cmd(
        "trigger_iopf",
        [("dev_id", U32), ("pasid", U32), ("grpid", U32), ("perm", U32), ("addr", U64)],
    ),
    IOMMU_TEST_OP_DEV_CHECK_CACHE: _test_cmd(
        "check_dev_cache", [("cache_id", U32), ("cache", U32)]
    ),
    IOMMU_TEST_OP_TRIGGER_VEVENT: _test_cmd("trigger_vevent", [("dev_id", U32)]),
    IOMMU_TEST_OP_PASID_ATTACH: _test_cmd("pasid_attach", [("pasid", U32), ("pt_id", U32)]),
    IOMMU_TEST_OP_PASID_REPLACE: _test_cmd("pasid_replace", [("pasid", U32), ("pt_id", U32)]),
    IOMMU_TEST_OP_PASID_DETACH: _test_cmd("pasid_detach", [("pasid", U32)]),
    IOMMU_TEST_OP_PASID_CHECK_HWPT: _test_cmd("pasid_check", [("pasid", U32), ("hwpt_id", U32)]),
}
"""Per-op views of iommu_test_cmd.  The union's inner ``id`` members of check_iotlb and
check_dev_cache are renamed ``iotlb_id``/``cache_id`` so they do not clash with the header's
``id``."""

LAYOUTS: Final[dict[str, Layout]] = {
    layout.name: layout
    for layout in (
        DESTROY,
        IOAS_ALLOC,
        IOVA_RANGE,
        IOAS_ALLOW_IOVAS,
        IOAS_COPY,
        IOAS_IOVA_RANGES,
        IOAS_MAP,
        IOAS_UNMAP,
        OPTION,
        VFIO_IOAS,
        HWPT_ALLOC,
        HW_INFO,
        HWPT_SET_DIRTY_TRACKING,
        HWPT_GET_DIRTY_BITMAP,
        HWPT_INVALIDATE,
        FAULT_ALLOC,
        IOAS_MAP_FILE,
        VIOMMU_ALLOC,
        VDEVICE_ALLOC,
        IOAS_CHANGE_PROCESS,
        VEVENTQ_ALLOC,
        HW_QUEUE_ALLOC,
        TEST_CMD,
    )
}
"""Every iommufd ioctl struct by its C name (driver data blobs: :data:`DRIVER_LAYOUTS`)."""

DRIVER_LAYOUTS: Final[dict[str, Layout]] = {HW_INFO_VTD.name: HW_INFO_VTD}
"""The IOMMU drivers' data structs that iommufd ioctls carry (GET_HW_INFO's blob)."""
