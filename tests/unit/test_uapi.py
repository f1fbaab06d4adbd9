"""Tests of ioasidfs.uapi: numbers and layouts against the C header and the spec tables.

VFIO facts are checked against the machine's real ``/usr/include/linux/vfio.h`` (a 6.1 header)
by compiling a program that prints every constant, ``sizeof`` and ``offsetof``.  Our layouts
follow the *current upstream* header, so each known 6.1-vs-upstream difference is listed here
and asserted explicitly rather than skipped.  iommufd has no header on this machine: its facts
are checked against tables copied from ``/work/shared/spec/iommufd.md`` §1.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioasidfs.uapi import (
    IOCTLS,
    IO,
    IOR,
    IOW,
    IOWR,
    ArgKind,
    Field,
    FieldKind,
    IocDir,
    Layout,
    NodeKind,
    by_name,
    decode_cmd,
    format_cmd,
    ioctls_for,
    iommufd,
    lookup,
    name_of,
    vfio,
)
from ioasidfs.uapi.layout import BYTES, PTR, S32, U8, U16, U32, U64

VFIO_HEADER = Path("/usr/include/linux/vfio.h")

# ------------------------------------------------------------------------------------------
# Documented differences between the local 6.1 header and the upstream facts we encode.

UPSTREAM_ONLY_CONSTANTS = {
    # device cdev / iommufd binding (6.6+)
    "VFIO_DEVICE_BIND_IOMMUFD",
    "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
    "VFIO_DEVICE_DETACH_IOMMUFD_PT",
    "VFIO_DEVICE_BIND_FLAG_TOKEN",
    "VFIO_DEVICE_ATTACH_PASID",
    "VFIO_DEVICE_DETACH_PASID",
    # device info
    "VFIO_DEVICE_FLAGS_CDX",
    "VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP",
    "VFIO_PCI_ATOMIC_COMP32",
    "VFIO_PCI_ATOMIC_COMP64",
    "VFIO_PCI_ATOMIC_COMP128",
    # device features
    "VFIO_DEVICE_FEATURE_MIG_DATA_SIZE",
    "VFIO_DEVICE_FEATURE_BUS_MASTER",
    # hot reset by iommufd dev id
    "VFIO_PCI_HOT_RESET_FLAG_DEV_ID",
    "VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED",
}
RENAMED_UPSTREAM = {"VFIO_TYPE1_NESTING_IOMMU"}  # __VFIO_RESERVED_TYPE1_NESTING_IOMMU in 6.13+

# C enumerators cannot be tested with #ifdef; they exist in every header we care about.
ENUM_CONSTANT = re.compile(r"VFIO_PCI_(\w+_(REGION|IRQ)_INDEX|NUM_REGIONS|NUM_IRQS)")

# Whole structs that a 6.1 header lacks, with the macro that proves a header has them.
STRUCT_GUARDS = {
    "vfio_device_info_cap_pci_atomic_comp": "VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP",
    "vfio_device_bind_iommufd": "VFIO_DEVICE_BIND_IOMMUFD",
    "vfio_device_attach_iommufd_pt": "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
    "vfio_device_detach_iommufd_pt": "VFIO_DEVICE_DETACH_IOMMUFD_PT",
}
# Members added later than the struct itself.  Those guarded by a macro are compared when the
# header has them; the explicit tail fields below have no macro and get their own tests.
FIELD_GUARDS = {
    ("vfio_device_bind_iommufd", "token_uuid_ptr"): "VFIO_DEVICE_BIND_FLAG_TOKEN",
    ("vfio_device_attach_iommufd_pt", "pasid"): "VFIO_DEVICE_ATTACH_PASID",
    ("vfio_device_detach_iommufd_pt", "pasid"): "VFIO_DEVICE_DETACH_PASID",
}
UNGUARDED_NEW_FIELDS = {
    ("vfio_device_info", "pad"),  # 6.1: struct ends at 20; upstream: 24
    ("vfio_iommu_type1_info", "pad"),  # 6.1: implicit tail padding, same size 24
    ("vfio_device_ioeventfd", "reserved"),  # 6.1: implicit tail padding, same size 32
}

# Our layouts flatten nested structs/unions; this maps a flat name to the C member path.
NESTED_MEMBER = {
    "vfio_iommu_type1_dirty_bitmap_get": {
        "bitmap_pgsize": "bitmap.pgsize",
        "bitmap_size": "bitmap.size",
        "bitmap_data": "bitmap.data",
    },
    "vfio_eeh_pe_op": {
        "err_type": "err.type",
        "err_func": "err.func",
        "err_addr": "err.addr",
        "err_mask": "err.mask",
    },
}


def c_member(layout: Layout, field_name: str) -> str:
    """C designator of one of our flat fields (capabilities embed a `header` struct)."""
    nested = NESTED_MEMBER.get(layout.name, {})
    if field_name in nested:
        return nested[field_name]
    is_capability = layout.name != "vfio_info_cap_header" and layout.names[:3] == (
        "id",
        "version",
        "next",
    )
    if is_capability and field_name in ("id", "version", "next"):
        return f"header.{field_name}"
    return field_name


def vfio_int_constants() -> dict[str, int]:
    """Every module-level VFIO_* integer of ioasidfs.uapi.vfio (the header mirror)."""
    return {
        name: value
        for name, value in vars(vfio).items()
        if name.startswith("VFIO_") and isinstance(value, int) and not isinstance(value, bool)
    }


def build_probe_program() -> str:
    """C source printing `const NAME value`, `absent NAME`, `sizeof S n`, `offsetof S F n`."""
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <linux/vfio.h>",
        "#define CONST(n) printf(\"const %s %llu\\n\", #n, (unsigned long long)(unsigned int)(n))",
        "int main(void) {",
    ]
    for name in sorted(vfio_int_constants()):
        if ENUM_CONSTANT.fullmatch(name):
            lines.append(f"    CONST({name});")
        else:
            lines.append(f"#ifdef {name}\n    CONST({name});\n#else\n"
                         f"    puts(\"absent {name}\");\n#endif")
    for layout in vfio.LAYOUTS.values():
        body = [
            f"    printf(\"sizeof {layout.name} %zu\\n\", sizeof(struct {layout.name}));"
        ]
        for member in layout.fields:
            if (layout.name, member.name) in UNGUARDED_NEW_FIELDS:
                continue
            statement = (
                f"    printf(\"offsetof {layout.name} {member.name} %zu\\n\", "
                f"offsetof(struct {layout.name}, {c_member(layout, member.name)}));"
            )
            guard = FIELD_GUARDS.get((layout.name, member.name))
            if guard:
                statement = f"#ifdef {guard}\n{statement}\n#endif"
            body.append(statement)
        struct_guard = STRUCT_GUARDS.get(layout.name)
        if struct_guard:
            lines.append(f"#ifdef {struct_guard}")
            lines.extend(body)
            lines.append(f"#else\n    puts(\"nostruct {layout.name}\");\n#endif")
        else:
            lines.extend(body)
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


class HeaderFacts:
    """What the compiled probe printed."""

    def __init__(self, output: str) -> None:
        self.constants: dict[str, int] = {}
        self.absent: set[str] = set()
        self.missing_structs: set[str] = set()
        self.sizes: dict[str, int] = {}
        self.offsets: dict[tuple[str, str], int] = {}
        for line in output.splitlines():
            words = line.split()
            if words[0] == "const":
                self.constants[words[1]] = int(words[2])
            elif words[0] == "absent":
                self.absent.add(words[1])
            elif words[0] == "nostruct":
                self.missing_structs.add(words[1])
            elif words[0] == "sizeof":
                self.sizes[words[1]] = int(words[2])
            elif words[0] == "offsetof":
                self.offsets[(words[1], words[2])] = int(words[3])


@pytest.fixture(scope="module")
def header(tmp_path_factory: pytest.TempPathFactory) -> HeaderFacts:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: cannot compile the vfio.h probe")
    if not VFIO_HEADER.exists():
        pytest.skip(f"{VFIO_HEADER} is missing: no kernel headers to compare with")
    workdir = tmp_path_factory.mktemp("vfio_probe")
    source = workdir / "probe.c"
    binary = workdir / "probe"
    source.write_text(build_probe_program())
    compiled = subprocess.run(
        [gcc, "-std=gnu11", "-Wall", "-Werror", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
    )
    if compiled.returncode != 0:
        pytest.fail(f"the vfio.h probe ({source}) does not compile:\n{compiled.stderr}")
    result = subprocess.run([str(binary)], check=True, capture_output=True, text=True)
    return HeaderFacts(result.stdout)


# ------------------------------------------------------------------------------------------
# (1a) VFIO against the compiled header


def test_every_vfio_constant_matches_the_header(header: HeaderFacts) -> None:
    ours = vfio_int_constants()
    mismatches = {
        name: (ours[name], value)
        for name, value in header.constants.items()
        if ours[name] & 0xFFFF_FFFF != value
    }
    assert mismatches == {}
    assert all(0 <= value <= 0xFFFF_FFFF for value in ours.values())
    assert set(header.constants) | header.absent == set(ours)


def test_only_documented_constants_are_missing_from_the_header(header: HeaderFacts) -> None:
    undocumented = header.absent - UPSTREAM_ONLY_CONSTANTS - RENAMED_UPSTREAM
    assert undocumented == set()


def test_the_local_header_is_the_documented_6_1_vintage(header: HeaderFacts) -> None:
    """The differences we document are real on this machine (they are not dead entries)."""
    if "VFIO_DEVICE_BIND_IOMMUFD" in header.constants:
        pytest.skip("header is newer than 6.1; the 6.1 differences cannot be observed")
    assert header.absent >= UPSTREAM_ONLY_CONSTANTS
    assert header.missing_structs == set(STRUCT_GUARDS)


def test_vfio_ioctl_numbers_match_the_header(header: HeaderFacts) -> None:
    for definition in IOCTLS:
        if not definition.name.startswith("VFIO_"):
            continue
        assert definition.cmd == getattr(vfio, definition.name)
        if definition.name in header.constants:
            assert definition.cmd == header.constants[definition.name], definition.name
        else:
            assert definition.name in UPSTREAM_ONLY_CONSTANTS, definition.name


@pytest.mark.parametrize("layout", list(vfio.LAYOUTS.values()), ids=lambda layout: layout.name)
def test_vfio_layout_matches_the_header(header: HeaderFacts, layout: Layout) -> None:
    if layout.name in header.missing_structs:
        assert layout.name in STRUCT_GUARDS
        return  # values are checked against the spec table in test_cdev_layouts_match_spec
    for member in layout.fields:
        key = (layout.name, member.name)
        if key in UNGUARDED_NEW_FIELDS or key not in header.offsets:
            assert key in UNGUARDED_NEW_FIELDS or key in FIELD_GUARDS, key
            continue
        assert member.offset == header.offsets[key], key
    if layout.name in ("vfio_device_info",):
        return  # size differs by version; see test_device_info_pad_is_the_only_difference
    assert layout.size == header.sizes[layout.name]


def test_device_info_pad_is_the_only_difference(header: HeaderFacts) -> None:
    layout = vfio.DEVICE_INFO
    c_size = header.sizes["vfio_device_info"]
    assert layout.size == 24
    assert layout.offset("pad") == vfio.DEVICE_INFO_SIZE_6_1 == 20
    assert c_size in (vfio.DEVICE_INFO_SIZE_6_1, layout.size)
    # In 6.1 the struct ends exactly where upstream's pad begins.
    assert header.offsets[("vfio_device_info", "cap_offset")] + 4 == layout.offset("pad")
    assert layout.min_size == 16  # minsz = offsetofend(num_irqs), same in every version


@pytest.mark.parametrize(
    ("layout", "field_name", "previous"),
    [(vfio.TYPE1_INFO, "pad", "cap_offset"), (vfio.DEVICE_IOEVENTFD, "reserved", "fd")],
    ids=lambda value: value.name if isinstance(value, Layout) else str(value),
)
def test_upstream_tail_field_occupies_the_6_1_padding(
    header: HeaderFacts, layout: Layout, field_name: str, previous: str
) -> None:
    """Upstream names 4 bytes that 6.1 leaves as implicit padding: same size, same offsets."""
    assert header.sizes[layout.name] == layout.size
    assert header.offsets[(layout.name, previous)] + 4 == layout.offset(field_name)
    assert layout.field_end(field_name) == layout.size


def test_type1_info_and_ioeventfd_min_sizes() -> None:
    assert vfio.TYPE1_INFO.min_size == 16  # offsetofend(iova_pgsizes)
    assert vfio.DEVICE_IOEVENTFD.min_size == 28  # offsetofend(fd): reserved is optional


# ------------------------------------------------------------------------------------------
# (1b) VFIO against the spec table (vfio-legacy.md §1.1), including the cdev numbers


VFIO_SPEC_NUMBERS = [
    (0x3B64, "VFIO_GET_API_VERSION", "container"),
    (0x3B65, "VFIO_CHECK_EXTENSION", "container"),
    (0x3B66, "VFIO_SET_IOMMU", "container"),
    (0x3B67, "VFIO_GROUP_GET_STATUS", "group"),
    (0x3B68, "VFIO_GROUP_SET_CONTAINER", "group"),
    (0x3B69, "VFIO_GROUP_UNSET_CONTAINER", "group"),
    (0x3B6A, "VFIO_GROUP_GET_DEVICE_FD", "group"),
    (0x3B6B, "VFIO_DEVICE_GET_INFO", "device"),
    (0x3B6C, "VFIO_DEVICE_GET_REGION_INFO", "device"),
    (0x3B6D, "VFIO_DEVICE_GET_IRQ_INFO", "device"),
    (0x3B6E, "VFIO_DEVICE_SET_IRQS", "device"),
    (0x3B6F, "VFIO_DEVICE_RESET", "device"),
    (0x3B70, "VFIO_IOMMU_GET_INFO", "container"),
    (0x3B70, "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", "device"),
    (0x3B71, "VFIO_IOMMU_MAP_DMA", "container"),
    (0x3B71, "VFIO_DEVICE_PCI_HOT_RESET", "device"),
    (0x3B72, "VFIO_IOMMU_UNMAP_DMA", "container"),
    (0x3B72, "VFIO_DEVICE_QUERY_GFX_PLANE", "device"),
    (0x3B73, "VFIO_IOMMU_ENABLE", "container"),
    (0x3B73, "VFIO_DEVICE_GET_GFX_DMABUF", "device"),
    (0x3B74, "VFIO_IOMMU_DISABLE", "container"),
    (0x3B74, "VFIO_DEVICE_IOEVENTFD", "device"),
    (0x3B75, "VFIO_IOMMU_DIRTY_PAGES", "container"),
    (0x3B75, "VFIO_DEVICE_FEATURE", "device"),
    (0x3B76, "VFIO_DEVICE_BIND_IOMMUFD", "cdev"),
    (0x3B77, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", "cdev"),
    (0x3B78, "VFIO_DEVICE_DETACH_IOMMUFD_PT", "cdev"),
    (0x3B79, "VFIO_EEH_PE_OP", "container"),
]


@pytest.mark.parametrize(("cmd", "name", "node"), VFIO_SPEC_NUMBERS)
def test_vfio_numbers_match_spec_table(cmd: int, name: str, node: str) -> None:
    assert getattr(vfio, name) == cmd
    definition = lookup(node, cmd)
    assert definition is not None and definition.name == name


def test_vfio_spec_constants() -> None:
    assert vfio.VFIO_API_VERSION == 0
    assert [int(e) for e in vfio.Extension] == list(range(1, 11))
    assert int(vfio.Extension.UPDATE_VADDR) == vfio.VFIO_UPDATE_VADDR == 10
    assert vfio.PCI_OFFSET_SHIFT == 40
    assert vfio.region_offset(vfio.PciRegion.CONFIG) == 7 << 40
    assert vfio.split_region_offset((7 << 40) + 0x3C) == (7, 0x3C)
    assert int(vfio.VFIO_PCI_NUM_REGIONS) == len(vfio.PciRegion) == 9
    assert int(vfio.VFIO_PCI_NUM_IRQS) == len(vfio.PciIrq) == 5
    assert vfio.IrqSetFlag.ACTION_TRIGGER | vfio.IrqSetFlag.DATA_EVENTFD == 0x24
    assert vfio.DeviceInfoFlag.CDX == 1 << 8
    assert vfio.DeviceFeatureFlag.PROBE == 1 << 18


# Offsets written from vfio-legacy.md §1.2 (offset:size; size 4 unless given).
VFIO_SPEC_LAYOUTS = {
    "vfio_info_cap_header": (8, "0:2 id, 2:2 version, 4 next"),
    "vfio_group_status": (8, "0 argsz, 4 flags"),
    "vfio_device_info": (24, "0 argsz, 4 flags, 8 num_regions, 12 num_irqs, 16 cap_offset, 20 pad"),
    "vfio_device_info_cap_pci_atomic_comp": (
        16, "0:2 id, 2:2 version, 4 next, 8 flags, 12 reserved"
    ),
    "vfio_region_info": (32, "0 argsz, 4 flags, 8 index, 12 cap_offset, 16:8 size, 24:8 offset"),
    "vfio_region_info_cap_sparse_mmap": (
        16, "0:2 id, 2:2 version, 4 next, 8 nr_areas, 12 reserved"
    ),
    "vfio_region_sparse_mmap_area": (16, "0:8 offset, 8:8 size"),
    "vfio_region_info_cap_type": (16, "0:2 id, 2:2 version, 4 next, 8 type, 12 subtype"),
    "vfio_irq_info": (16, "0 argsz, 4 flags, 8 index, 12 count"),
    "vfio_irq_set": (20, "0 argsz, 4 flags, 8 index, 12 start, 16 count"),
    "vfio_iommu_type1_info": (24, "0 argsz, 4 flags, 8:8 iova_pgsizes, 16 cap_offset, 20 pad"),
    "vfio_iommu_type1_info_cap_iova_range": (
        16, "0:2 id, 2:2 version, 4 next, 8 nr_iovas, 12 reserved"
    ),
    "vfio_iova_range": (16, "0:8 start, 8:8 end"),
    "vfio_iommu_type1_info_cap_migration": (
        32, "0:2 id, 2:2 version, 4 next, 8 flags, 16:8 pgsize_bitmap, 24:8 max_dirty_bitmap_size"
    ),
    "vfio_iommu_type1_info_dma_avail": (12, "0:2 id, 2:2 version, 4 next, 8 avail"),
    "vfio_iommu_type1_dma_map": (32, "0 argsz, 4 flags, 8:8 vaddr, 16:8 iova, 24:8 size"),
    "vfio_bitmap": (24, "0:8 pgsize, 8:8 size, 16:8 data"),
    "vfio_iommu_type1_dma_unmap": (24, "0 argsz, 4 flags, 8:8 iova, 16:8 size"),
    "vfio_iommu_type1_dirty_bitmap": (8, "0 argsz, 4 flags"),
    "vfio_iommu_type1_dirty_bitmap_get": (
        40, "0:8 iova, 8:8 size, 16:8 bitmap_pgsize, 24:8 bitmap_size, 32:8 bitmap_data"
    ),
    "vfio_pci_hot_reset_info": (12, "0 argsz, 4 flags, 8 count"),
    "vfio_pci_dependent_device": (8, "0 group_id, 4:2 segment, 6:1 bus, 7:1 devfn"),
    "vfio_pci_hot_reset": (12, "0 argsz, 4 flags, 8 count"),
    "vfio_device_ioeventfd": (32, "0 argsz, 4 flags, 8:8 offset, 16:8 data, 24 fd, 28 reserved"),
    "vfio_device_feature": (8, "0 argsz, 4 flags"),
    # iommufd.md §1.5 (cdev)
    "vfio_device_bind_iommufd": (
        24, "0 argsz, 4 flags, 8 iommufd, 12 out_devid, 16:8 token_uuid_ptr"
    ),
    "vfio_device_attach_iommufd_pt": (16, "0 argsz, 4 flags, 8 pt_id, 12 pasid"),
    "vfio_device_detach_iommufd_pt": (12, "0 argsz, 4 flags, 8 pasid"),
}


def parse_spec_fields(text: str) -> Iterator[tuple[str, int, int]]:
    """`"0 size, 16:8 iova"` → ("size", 0, 4), ("iova", 16, 8)."""
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?::(\d+))?\s+(\w+)\s*", item)
        assert match, item
        yield match.group(3), int(match.group(1)), int(match.group(2) or 4)


def assert_layout_matches_spec(layout: Layout, size: int, fields_text: str) -> None:
    assert layout.size == size, layout.name
    expected = list(parse_spec_fields(fields_text))
    actual = [(m.name, m.offset, m.size) for m in layout.fields]
    assert actual == expected, layout.name


@pytest.mark.parametrize("struct_name", sorted(VFIO_SPEC_LAYOUTS))
def test_vfio_layouts_match_spec(struct_name: str) -> None:
    size, fields_text = VFIO_SPEC_LAYOUTS[struct_name]
    assert_layout_matches_spec(vfio.LAYOUTS[struct_name], size, fields_text)


def test_cdev_layouts_match_spec() -> None:
    """iommufd.md §1.5: min argsz 16 / 12 / 8 (the PASID field only with its flag)."""
    assert vfio.DEVICE_BIND_IOMMUFD.min_size == 16
    assert vfio.DEVICE_ATTACH_IOMMUFD_PT.min_size == 12
    assert vfio.DEVICE_DETACH_IOMMUFD_PT.min_size == 8
    assert vfio.VFIO_DEVICE_BIND_FLAG_TOKEN == 1
    assert vfio.VFIO_DEVICE_ATTACH_PASID == vfio.VFIO_DEVICE_DETACH_PASID == 1
    assert vfio.DEVICE_BIND_IOMMUFD.field("iommufd").kind is S32


@pytest.mark.parametrize(
    ("layout", "min_size"),
    [
        (vfio.GROUP_STATUS, 8),
        (vfio.DEVICE_INFO, 16),
        (vfio.REGION_INFO, 32),
        (vfio.IRQ_INFO, 16),
        (vfio.IRQ_SET, 20),
        (vfio.TYPE1_INFO, 16),
        (vfio.DMA_MAP, 32),
        (vfio.DMA_UNMAP, 24),
        (vfio.DIRTY_BITMAP, 8),
        (vfio.PCI_HOT_RESET_INFO, 12),
        (vfio.PCI_HOT_RESET, 12),
        (vfio.DEVICE_IOEVENTFD, 28),
        (vfio.DEVICE_FEATURE, 8),
    ],
    ids=lambda value: value.name if isinstance(value, Layout) else str(value),
)
def test_vfio_min_sizes_are_the_kernel_minsz(layout: Layout, min_size: int) -> None:
    assert layout.min_size == min_size


# ------------------------------------------------------------------------------------------
# (1c) iommufd against the spec tables (iommufd.md §1.1 and §1.2)

# nr, name, layout, ksize (current), min size — §1.1
IOMMUFD_SPEC_TABLE = [
    (0x80, "IOMMU_DESTROY", iommufd.DESTROY, 8, 8),
    (0x81, "IOMMU_IOAS_ALLOC", iommufd.IOAS_ALLOC, 12, 12),
    (0x82, "IOMMU_IOAS_ALLOW_IOVAS", iommufd.IOAS_ALLOW_IOVAS, 24, 24),
    (0x83, "IOMMU_IOAS_COPY", iommufd.IOAS_COPY, 40, 40),
    (0x84, "IOMMU_IOAS_IOVA_RANGES", iommufd.IOAS_IOVA_RANGES, 32, 32),
    (0x85, "IOMMU_IOAS_MAP", iommufd.IOAS_MAP, 40, 40),
    (0x86, "IOMMU_IOAS_UNMAP", iommufd.IOAS_UNMAP, 24, 24),
    (0x87, "IOMMU_OPTION", iommufd.OPTION, 24, 24),
    (0x88, "IOMMU_VFIO_IOAS", iommufd.VFIO_IOAS, 12, 12),
    (0x89, "IOMMU_HWPT_ALLOC", iommufd.HWPT_ALLOC, 48, 24),
    (0x8A, "IOMMU_GET_HW_INFO", iommufd.HW_INFO, 40, 32),
    (0x8B, "IOMMU_HWPT_SET_DIRTY_TRACKING", iommufd.HWPT_SET_DIRTY_TRACKING, 16, 16),
    (0x8C, "IOMMU_HWPT_GET_DIRTY_BITMAP", iommufd.HWPT_GET_DIRTY_BITMAP, 48, 48),
    (0x8D, "IOMMU_HWPT_INVALIDATE", iommufd.HWPT_INVALIDATE, 32, 32),
    (0x8E, "IOMMU_FAULT_QUEUE_ALLOC", iommufd.FAULT_ALLOC, 16, 16),
    (0x8F, "IOMMU_IOAS_MAP_FILE", iommufd.IOAS_MAP_FILE, 40, 40),
    (0x90, "IOMMU_VIOMMU_ALLOC", iommufd.VIOMMU_ALLOC, 40, 24),
    (0x91, "IOMMU_VDEVICE_ALLOC", iommufd.VDEVICE_ALLOC, 24, 24),
    (0x92, "IOMMU_IOAS_CHANGE_PROCESS", iommufd.IOAS_CHANGE_PROCESS, 8, 8),
    # The spec leaves these two minimum sizes unverified; 28/40 come from upstream main.c.
    (0x93, "IOMMU_VEVENTQ_ALLOC", iommufd.VEVENTQ_ALLOC, 32, 28),
    (0x94, "IOMMU_HW_QUEUE_ALLOC", iommufd.HW_QUEUE_ALLOC, 40, 40),
    (0xA0, "IOMMU_TEST_CMD", iommufd.TEST_CMD, 72, 68),
]


@pytest.mark.parametrize(
    ("nr", "name", "layout", "ksize", "min_size"),
    IOMMUFD_SPEC_TABLE,
    ids=[row[1] for row in IOMMUFD_SPEC_TABLE],
)
def test_iommufd_ioctls_match_spec_table(
    nr: int, name: str, layout: Layout, ksize: int, min_size: int
) -> None:
    cmd = 0x3B00 | nr
    assert getattr(iommufd, name) == cmd
    assert decode_cmd(cmd) == (IocDir.NONE, ord(";"), nr, 0)
    definition = lookup("iommufd", cmd)
    assert definition is not None
    assert definition.name == name and definition.layout is layout
    assert definition.arg is ArgKind.STRUCT
    assert (layout.size, layout.min_size) == (ksize, min_size)
    assert layout.names[0] == "size"


def test_iommufd_table_is_complete() -> None:
    ours = {d.name for d in IOCTLS if d.name.startswith("IOMMU_")}
    assert ours == {row[1] for row in IOMMUFD_SPEC_TABLE}
    # Slots 0x95-0x9F are holes.
    for nr in range(0x95, 0xA0):
        assert lookup("iommufd", 0x3B00 | nr) is None


def test_iommufd_older_ksizes_match_spec() -> None:
    """§1.1's per-version ksizes are prefixes of today's struct."""
    assert iommufd.HWPT_ALLOC_SIZE_6_6 == 24 == iommufd.HWPT_ALLOC.field_end("reserved")
    assert iommufd.HWPT_ALLOC_SIZE_6_7 == 40 == iommufd.HWPT_ALLOC.field_end("data_uptr")
    assert iommufd.HW_INFO_SIZE_6_6 == 32 == iommufd.HW_INFO.offset("out_capabilities")
    assert iommufd.VIOMMU_ALLOC_SIZE_6_13 == 24 == iommufd.VIOMMU_ALLOC.offset("data_len")
    assert (iommufd.TEST_CMD_SIZE_6_6, iommufd.TEST_CMD_MIN_SIZE_6_6) == (56, 52)


# §1.2, with the kernel's `__reserved` spelled `reserved` (Python keyword-friendly).
IOMMUFD_SPEC_LAYOUTS = {
    "iommu_destroy": (8, "0 size, 4 id"),
    "iommu_ioas_alloc": (12, "0 size, 4 flags, 8 out_ioas_id"),
    "iommu_iova_range": (16, "0:8 start, 8:8 last"),
    "iommu_ioas_iova_ranges": (
        32,
        "0 size, 4 ioas_id, 8 num_iovas, "
        "12 reserved, 16:8 allowed_iovas, 24:8 out_iova_alignment",
    ),
    "iommu_ioas_allow_iovas": (
        24, "0 size, 4 ioas_id, 8 num_iovas, 12 reserved, 16:8 allowed_iovas"
    ),
    "iommu_ioas_map": (
        40, "0 size, 4 flags, 8 ioas_id, 12 reserved, 16:8 user_va, 24:8 length, 32:8 iova"
    ),
    "iommu_ioas_map_file": (
        40, "0 size, 4 flags, 8 ioas_id, 12 fd, 16:8 start, 24:8 length, 32:8 iova"
    ),
    "iommu_ioas_copy": (
        40,
        "0 size, 4 flags, 8 dst_ioas_id, "
        "12 src_ioas_id, 16:8 length, 24:8 dst_iova, 32:8 src_iova",
    ),
    "iommu_ioas_unmap": (24, "0 size, 4 ioas_id, 8:8 iova, 16:8 length"),
    "iommu_option": (24, "0 size, 4 option_id, 8:2 op, 10:2 reserved, 12 object_id, 16:8 val64"),
    "iommu_vfio_ioas": (12, "0 size, 4 ioas_id, 8:2 op, 10:2 reserved"),
    "iommu_hwpt_alloc": (
        48,
        "0 size, 4 flags, 8 dev_id, 12 pt_id, 16 out_hwpt_id, 20 reserved, 24 data_type, "
        "28 data_len, 32:8 data_uptr, 40 fault_id, 44 reserved2",
    ),
    "iommu_hw_info": (
        40,
        "0 size, 4 flags, 8 dev_id, 12 data_len, 16:8 data_uptr, 24 out_data_type, "
        "28:1 out_max_pasid_log2, 29:3 reserved, 32:8 out_capabilities",
    ),
    "iommu_hwpt_set_dirty_tracking": (16, "0 size, 4 flags, 8 hwpt_id, 12 reserved"),
    "iommu_hwpt_get_dirty_bitmap": (
        48,
        "0 size, 4 hwpt_id, 8 flags, 12 reserved, 16:8 iova, 24:8 length, 32:8 page_size, "
        "40:8 data",
    ),
    "iommu_hwpt_invalidate": (
        32,
        "0 size, 4 hwpt_id, 8:8 data_uptr, "
        "16 data_type, 20 entry_len, 24 entry_num, 28 reserved",
    ),
    "iommu_fault_alloc": (16, "0 size, 4 flags, 8 out_fault_id, 12 out_fault_fd"),
    "iommu_viommu_alloc": (
        40,
        "0 size, 4 flags, 8 type, 12 dev_id, 16 hwpt_id, 20 out_viommu_id, 24 data_len, "
        "28 reserved, 32:8 data_uptr",
    ),
    "iommu_vdevice_alloc": (24, "0 size, 4 viommu_id, 8 dev_id, 12 out_vdevice_id, 16:8 virt_id"),
    "iommu_ioas_change_process": (8, "0 size, 4 reserved"),
    "iommu_veventq_alloc": (
        32,
        "0 size, 4 flags, 8 viommu_id, 12 type, 16 veventq_depth, 20 out_veventq_id, "
        "24 out_veventq_fd, 28 reserved",
    ),
    "iommu_hw_queue_alloc": (
        40,
        "0 size, 4 flags, 8 viommu_id, 12 type, 16 index, 20 out_hw_queue_id, "
        "24:8 nesting_parent_iova, 32:8 length",
    ),
    "iommu_test_cmd": (72, "0 size, 4 op, 8 id, 12 reserved, 16:48 union, 64 last"),
}


@pytest.mark.parametrize("struct_name", sorted(IOMMUFD_SPEC_LAYOUTS))
def test_iommufd_layouts_match_spec(struct_name: str) -> None:
    size, fields_text = IOMMUFD_SPEC_LAYOUTS[struct_name]
    assert_layout_matches_spec(iommufd.LAYOUTS[struct_name], size, fields_text)


def test_iommufd_layouts_cover_every_struct() -> None:
    assert set(iommufd.LAYOUTS) == set(IOMMUFD_SPEC_LAYOUTS)


# §5.2 union members (offsets from the start of iommu_test_cmd).
TEST_OP_SPEC = {
    iommufd.TestOp.ADD_RESERVED: "16:8 start, 24:8 length",
    iommufd.TestOp.MOCK_DOMAIN: "16 out_stdev_id, 20 out_hwpt_id, 24 out_idev_id",
    iommufd.TestOp.MOCK_DOMAIN_FLAGS: (
        "16 out_stdev_id, 20 out_hwpt_id, 24 out_idev_id, 28 dev_flags"
    ),
    iommufd.TestOp.MOCK_DOMAIN_REPLACE: "16 pt_id",
    iommufd.TestOp.MD_CHECK_MAP: "16:8 iova, 24:8 length, 32:8 uptr",
    iommufd.TestOp.MD_CHECK_REFS: "16:8 length, 24:8 uptr, 32 refs",
    iommufd.TestOp.MD_CHECK_IOTLB: "16 iotlb_id, 20 iotlb",
    iommufd.TestOp.DEV_CHECK_CACHE: "16 cache_id, 20 cache",
    iommufd.TestOp.CREATE_ACCESS: "16 out_access_fd, 20 flags",
    iommufd.TestOp.ACCESS_REPLACE_IOAS: "16 ioas_id",
    iommufd.TestOp.ACCESS_PAGES: (
        "16 flags, 20 out_access_pages_id, 24:8 iova, 32:8 length, 40:8 uptr"
    ),
    iommufd.TestOp.DESTROY_ACCESS_PAGES: "16 access_pages_id",
    iommufd.TestOp.ACCESS_RW: "16:8 iova, 24:8 length, 32:8 uptr, 40 flags",
    iommufd.TestOp.SET_TEMP_MEMORY_LIMIT: "16 limit",
    iommufd.TestOp.DIRTY: (
        "16 flags, 24:8 iova, 32:8 length, 40:8 page_size, 48:8 uptr, 56:8 out_nr_dirty"
    ),
    iommufd.TestOp.TRIGGER_IOPF: "16 dev_id, 20 pasid, 24 grpid, 28 perm, 32:8 addr",
}


@pytest.mark.parametrize("op", sorted(TEST_OP_SPEC), ids=lambda op: op.name)
def test_test_cmd_ops_match_spec(op: iommufd.TestOp) -> None:
    layout = iommufd.TEST_CMD_BY_OP[op]
    expected = "0 size, 4 op, 8 id, 12 reserved, " + TEST_OP_SPEC[op] + ", 64 last"
    assert_layout_matches_spec(layout, 72, expected)
    assert layout.min_size == 68


def test_iommufd_constants_match_spec() -> None:
    assert (iommufd.IoasMapFlag.FIXED_IOVA, iommufd.IoasMapFlag.WRITEABLE) == (1, 2)
    assert int(iommufd.IoasMapFlag.READABLE) == 4
    assert (iommufd.OptionId.RLIMIT_MODE, iommufd.OptionId.HUGE_PAGES) == (0, 1)
    assert (iommufd.OptionOp.SET, iommufd.OptionOp.GET) == (0, 1)
    assert [int(op) for op in iommufd.VfioIoasOp] == [0, 1, 2]
    assert [int(flag) for flag in iommufd.HwptAllocFlag] == [1, 2, 4, 8]
    assert int(iommufd.HwptDataType.SELFTEST) == 0xDEAD
    assert int(iommufd.HwInfoType.SELFTEST) == 0xFEEDBEEF
    assert int(iommufd.HwInfoType.TEGRA241_CMDQV) == 3
    assert [int(cap) for cap in iommufd.HwCapability] == [1, 2, 4]
    assert iommufd.IOMMU_HW_INFO_FLAG_INPUT_TYPE == 1
    assert iommufd.IOMMU_HWPT_DIRTY_TRACKING_ENABLE == 1
    assert iommufd.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR == 1
    assert iommufd.IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 == 0
    assert iommufd.IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 == 1
    assert iommufd.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST == 0xDEADBEEF
    assert (iommufd.MOCK_APERTURE_START, iommufd.MOCK_APERTURE_LAST) == (1 << 24, 2**31 - 1)


def test_hw_info_in_data_type_is_a_union_alias() -> None:
    layout = iommufd.HW_INFO
    assert layout.offset("in_data_type") == layout.offset("out_data_type") == 24
    assert layout.unpack(layout.pack(in_data_type=7))["out_data_type"] == 7


# ------------------------------------------------------------------------------------------
# (2) Layout behaviour


def test_pack_unpack_round_trip() -> None:
    layout = vfio.DMA_MAP
    raw = layout.pack(argsz=32, flags=3, vaddr=0x7F00_0000_1000, iova=0x1000, size=0x2000)
    assert raw == bytes.fromhex(
        "20000000 03000000 00100000007f0000 0010000000000000 0020000000000000"
    )
    assert layout.unpack(raw) == {
        "argsz": 32,
        "flags": 3,
        "vaddr": 0x7F00_0000_1000,
        "iova": 0x1000,
        "size": 0x2000,
    }


def test_unset_fields_pack_as_zero() -> None:
    assert vfio.REGION_INFO.pack() == bytes(32)
    assert vfio.REGION_INFO.pack(index=7)[8:12] == b"\x07\x00\x00\x00"


def test_short_input_decodes_only_complete_fields() -> None:
    raw = vfio.DMA_MAP.pack(argsz=20, flags=1, vaddr=5, iova=6, size=7)
    assert vfio.DMA_MAP.unpack(raw[:20]) == {"argsz": 20, "flags": 1, "vaddr": 5}
    assert vfio.DMA_MAP.unpack(raw[:23]) == {"argsz": 20, "flags": 1, "vaddr": 5}
    assert vfio.DMA_MAP.unpack(raw[:24]) == {"argsz": 20, "flags": 1, "vaddr": 5, "iova": 6}
    assert vfio.DMA_MAP.unpack(raw[:3]) == {}
    assert vfio.DMA_MAP.unpack(b"") == {}


def test_short_input_skips_gaps_correctly() -> None:
    """A field after padding is decoded from its own offset, not the previous field's end."""
    raw = vfio.EEH_PE_OP.pack(argsz=40, flags=0, op=9, err_type=1, err_func=2, err_addr=3)
    assert vfio.EEH_PE_OP.unpack(raw[:32]) == {
        "argsz": 40, "flags": 0, "op": 9, "err_type": 1, "err_func": 2, "err_addr": 3,
    }


def test_longer_input_ignores_the_tail_and_offset_reads_inside_buffers() -> None:
    raw = b"\xaa" * 8 + vfio.IRQ_INFO.pack(argsz=16, flags=1, index=2, count=3) + b"\xff" * 9
    assert vfio.IRQ_INFO.unpack(raw, 8) == {"argsz": 16, "flags": 1, "index": 2, "count": 3}
    assert vfio.IRQ_INFO.unpack(bytearray(raw), 8)["count"] == 3
    assert vfio.IRQ_INFO.unpack(memoryview(raw), 8 + 4) == {
        "argsz": 1, "flags": 2, "index": 3, "count": 0xFFFFFFFF
    }
    with pytest.raises(ValueError):
        vfio.IRQ_INFO.unpack(raw, -1)


def test_offsets_and_field_ends() -> None:
    layout = vfio.TYPE1_INFO
    assert layout.offset("iova_pgsizes") == 8
    assert layout.field_end("iova_pgsizes") == 16
    assert layout.field("cap_offset") == Field("cap_offset", 16, U32, 4)
    assert "pad" in layout and "bogus" not in layout
    with pytest.raises(KeyError):
        layout.offset("bogus")


def test_signed_and_pointer_fields() -> None:
    raw = vfio.DEVICE_IOEVENTFD.pack(argsz=32, flags=4, offset=1 << 40, data=0xDEAD, fd=-1)
    decoded = vfio.DEVICE_IOEVENTFD.unpack(raw)
    assert decoded["fd"] == -1
    assert raw[24:28] == b"\xff\xff\xff\xff"
    assert vfio.DMA_MAP.field("vaddr").kind is FieldKind.PTR


def test_bad_values_name_the_field() -> None:
    with pytest.raises(ValueError, match="flags"):
        vfio.DMA_MAP.pack(flags=-1)
    with pytest.raises(ValueError, match="argsz"):
        vfio.DMA_MAP.pack(argsz=1 << 32)
    with pytest.raises(KeyError, match="bogus"):
        vfio.DMA_MAP.pack(bogus=1)
    with pytest.raises(ValueError, match="reserved"):
        iommufd.HW_INFO.pack(reserved=b"1234")


def test_aliases_resolve_to_one_field() -> None:
    layout = vfio.PCI_DEPENDENT_DEVICE
    assert layout.pack(devid=5) == layout.pack(group_id=5)
    with pytest.raises(ValueError, match="twice"):
        layout.pack(devid=5, group_id=6)
    assert layout.names == ("group_id", "segment", "bus", "devfn")


def test_write_fields_keeps_the_callers_other_bytes() -> None:
    """The kernel's working copy echoes input; only output fields change."""
    user = bytearray(vfio.REGION_INFO.pack(argsz=32, index=2, cap_offset=0x1234))
    vfio.REGION_INFO.write_fields(user, flags=7, size=0x1000, offset=vfio.region_offset(2))
    assert vfio.REGION_INFO.unpack(user) == {
        "argsz": 32, "flags": 7, "index": 2, "cap_offset": 0x1234,
        "size": 0x1000, "offset": 2 << 40,
    }
    with pytest.raises(KeyError):
        vfio.REGION_INFO.write_fields(user, nope=1)
    with pytest.raises(ValueError):
        vfio.REGION_INFO.write_fields(bytearray(8), size=1)  # buffer too short


def test_a_field_called_offset_does_not_clash_with_the_position_argument() -> None:
    buffer = bytearray(40)
    vfio.REGION_INFO.pack_into(buffer, 8, offset=5)
    assert vfio.REGION_INFO.unpack(buffer, 8)["offset"] == 5
    vfio.REGION_INFO.write_fields(buffer, 8, offset=6)
    assert vfio.REGION_INFO.unpack(buffer, 8)["offset"] == 6
    assert vfio.REGION_INFO.pack(offset=7) == vfio.REGION_INFO.pack(offset=7, size=0)


def test_flattened_unmap_with_bitmap_matches_the_nested_structs() -> None:
    flat = vfio.DMA_UNMAP_WITH_BITMAP
    for member in vfio.DMA_UNMAP.fields:
        assert flat.field(member.name) == member
    for member in vfio.BITMAP.fields:
        nested = flat.field("bitmap_" + member.name)
        assert (nested.offset, nested.kind) == (vfio.DMA_UNMAP.size + member.offset, member.kind)
    assert flat.size == 48  # the kernel's argsz minimum with GET_DIRTY_BITMAP


def test_pack_into_writes_whole_struct_at_offset() -> None:
    buffer = bytearray(b"\xee" * 40)
    vfio.GROUP_STATUS.pack_into(buffer, 4, argsz=8, flags=vfio.GroupStatusFlag.VIABLE)
    assert buffer[:4] == b"\xee" * 4
    assert buffer[4:12] == vfio.GROUP_STATUS.pack(argsz=8, flags=1)
    assert buffer[12:] == b"\xee" * 28


def test_unpack_array_stops_at_incomplete_entries() -> None:
    ranges = [(0, 0xFEDFFFFF), (0xFEF00000, (1 << 48) - 1)]
    raw = b"".join(vfio.IOVA_RANGE.pack(start=s, end=e) for s, e in ranges)
    assert vfio.IOVA_RANGE.unpack_array(raw, 2) == [
        {"start": s, "end": e} for s, e in ranges
    ]
    assert len(vfio.IOVA_RANGE.unpack_array(raw[:-1], 2)) == 1
    assert vfio.IOVA_RANGE.unpack_array(raw, 1) == [{"start": 0, "end": 0xFEDFFFFF}]


def test_describe_formats_for_traces() -> None:
    layout = vfio.DMA_MAP
    text = layout.describe(layout.unpack(layout.pack(argsz=32, flags=3, vaddr=4096)[:16]))
    assert text == "{argsz=32, flags=0x3, vaddr=0x1000}"


def test_natural_layout_checks_documented_size_and_alignment() -> None:
    with pytest.raises(ValueError, match="expected 12"):
        Layout.natural("s", [("a", U32), ("b", U64)], size=12)
    assert Layout.natural("s", [("a", U8), ("b", U16), ("c", S32), ("d", PTR)]).size == 16
    with pytest.raises(ValueError, match="misaligned"):
        Layout("s", [Field("a", 2, U32)], 8)
    with pytest.raises(ValueError, match="overlaps"):
        Layout("s", [Field("a", 0, U64), Field("b", 4, U32)], 8)
    with pytest.raises(ValueError, match="size"):
        Field("x", 0, BYTES)
    layout = Layout.natural("s", [("a", U32), ("b", U32)], min_through="a")
    assert (layout.min_size, layout.min_field) == (4, "a")


@given(
    argsz=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 2**32 - 1),
    iova=st.integers(0, 2**64 - 1),
    size=st.integers(0, 2**64 - 1),
    cut=st.integers(0, 40),
)
def test_unmap_round_trip_and_prefix_property(
    argsz: int, flags: int, iova: int, size: int, cut: int
) -> None:
    layout = vfio.DMA_UNMAP
    values = {"argsz": argsz, "flags": flags, "iova": iova, "size": size}
    raw = layout.pack(**values)
    assert layout.unpack(raw) == values
    partial = layout.unpack(raw[:cut])
    assert partial == {k: v for k, v in values.items() if layout.field_end(k) <= cut}


@pytest.mark.parametrize(
    "layout",
    list(vfio.LAYOUTS.values()) + list(iommufd.LAYOUTS.values()),
    ids=lambda layout: layout.name,
)
def test_every_layout_round_trips_distinct_values(layout: Layout) -> None:
    values: dict[str, int | bytes] = {}
    for index, member in enumerate(layout.fields, start=1):
        if member.kind is BYTES:
            values[member.name] = bytes([index]) * member.size
        else:
            values[member.name] = index
    raw = layout.pack(**values)
    assert len(raw) == layout.size
    assert layout.unpack(raw) == values


# ------------------------------------------------------------------------------------------
# ioctl number encoding


def test_ioctl_encoding_matches_well_known_numbers() -> None:
    assert IO("T", 1) == 0x5401  # TCGETS
    assert IOR("f", 1, 8) == 0x80086601  # FS_IOC_GETFLAGS
    assert IOW("f", 2, 8) == 0x40086602  # FS_IOC_SETFLAGS
    assert IOWR("V", 4, 208) == 0xC0D05604  # VIDIOC_G_FMT
    assert IO(";", 100) == IO(0x3B, 100) == 0x3B64


def test_ioctl_decoding_and_sign_extension() -> None:
    assert decode_cmd(0xC0D05604) == (IocDir.READ | IocDir.WRITE, ord("V"), 4, 208)
    negative = 0x80086601 - (1 << 32)  # as a C int
    assert decode_cmd(negative) == decode_cmd(0x80086601)
    assert format_cmd(0x80086601) == "_IOR('f', 1, 8)"
    assert format_cmd(IO(";", 130)) == "_IO(';', 130)"
    with pytest.raises(ValueError):
        IO(";", 256)
    with pytest.raises(ValueError):
        IOR(";", 1, 1 << 14)


def test_every_vfio_and_iommufd_ioctl_is_plain_io() -> None:
    for definition in IOCTLS:
        direction, type_code, nr, size = decode_cmd(definition.cmd)
        assert (direction, type_code, size) == (IocDir.NONE, ord(";"), 0), definition.name
        assert 100 <= nr <= 121 or 0x80 <= nr <= 0x94 or nr == 0xA0, definition.name


# ------------------------------------------------------------------------------------------
# (3) Registry: per-node resolution and names


@pytest.mark.parametrize(
    ("cmd", "container_name", "device_name"),
    [
        (0x3B70, "VFIO_IOMMU_GET_INFO", "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO"),
        (0x3B71, "VFIO_IOMMU_MAP_DMA", "VFIO_DEVICE_PCI_HOT_RESET"),
        (0x3B72, "VFIO_IOMMU_UNMAP_DMA", "VFIO_DEVICE_QUERY_GFX_PLANE"),
        (0x3B73, "VFIO_IOMMU_ENABLE", "VFIO_DEVICE_GET_GFX_DMABUF"),
        (0x3B74, "VFIO_IOMMU_DISABLE", "VFIO_DEVICE_IOEVENTFD"),
        (0x3B75, "VFIO_IOMMU_DIRTY_PAGES", "VFIO_DEVICE_FEATURE"),
    ],
)
def test_shared_numbers_resolve_by_node_kind(
    cmd: int, container_name: str, device_name: str
) -> None:
    container = lookup("container", cmd)
    device = lookup("device", cmd)
    cdev = lookup("cdev", cmd)
    assert container is not None and container.name == container_name
    assert device is not None and device.name == device_name
    assert cdev is device
    assert lookup("group", cmd) is None


def test_iommufd_answers_exactly_the_vfio_compat_subset() -> None:
    vfio_on_iommufd = {d.name for d in ioctls_for("iommufd").values() if d.name.startswith("VFIO_")}
    assert vfio_on_iommufd == {
        "VFIO_GET_API_VERSION",
        "VFIO_CHECK_EXTENSION",
        "VFIO_SET_IOMMU",
        "VFIO_IOMMU_GET_INFO",
        "VFIO_IOMMU_MAP_DMA",
        "VFIO_IOMMU_UNMAP_DMA",
    }
    for cmd in (vfio.VFIO_IOMMU_ENABLE, vfio.VFIO_IOMMU_DISABLE, vfio.VFIO_IOMMU_DIRTY_PAGES):
        assert lookup("iommufd", cmd) is None
    assert lookup("container", iommufd.IOMMU_IOAS_MAP) is None


def test_cdev_adds_bind_attach_detach_to_the_device_ioctls() -> None:
    device = set(ioctls_for("device"))
    cdev = set(ioctls_for("cdev"))
    assert cdev - device == {
        vfio.VFIO_DEVICE_BIND_IOMMUFD,
        vfio.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
        vfio.VFIO_DEVICE_DETACH_IOMMUFD_PT,
    }
    assert device <= cdev


def test_argument_kinds_and_fd_carrying_ioctls() -> None:
    assert by_name("VFIO_CHECK_EXTENSION").arg is ArgKind.VALUE
    assert by_name("VFIO_SET_IOMMU").arg is ArgKind.VALUE
    assert by_name("VFIO_GET_API_VERSION").arg is ArgKind.NONE
    assert by_name("VFIO_GROUP_GET_DEVICE_FD").arg is ArgKind.STRING
    assert by_name("VFIO_GROUP_SET_CONTAINER").arg is ArgKind.INT_PTR
    assert by_name("VFIO_IOMMU_MAP_DMA").layout is vfio.DMA_MAP
    with_fds = {d.name for d in IOCTLS if d.takes_fds}
    assert with_fds >= {
        "VFIO_GROUP_SET_CONTAINER",
        "VFIO_DEVICE_SET_IRQS",
        "VFIO_DEVICE_PCI_HOT_RESET",
        "VFIO_DEVICE_IOEVENTFD",
        "VFIO_DEVICE_BIND_IOMMUFD",
        "IOMMU_IOAS_MAP_FILE",
    }
    assert not by_name("VFIO_IOMMU_MAP_DMA").takes_fds
    assert by_name("VFIO_GROUP_GET_DEVICE_FD").creates_fd
    for definition in IOCTLS:
        if definition.arg is ArgKind.STRUCT:
            assert definition.layout is not None
            assert definition.layout.names[0] in ("argsz", "size"), definition.name


def test_lookup_normalises_the_command_and_rejects_unknown_nodes() -> None:
    sign_extended = vfio.VFIO_IOMMU_MAP_DMA | 0xFFFF_FFFF_0000_0000
    definition = lookup("container", sign_extended)
    assert definition is not None and definition.name == "VFIO_IOMMU_MAP_DMA"
    assert lookup(NodeKind.CONTAINER, vfio.VFIO_IOMMU_MAP_DMA) is definition
    with pytest.raises(ValueError):
        lookup("socket", 0x3B64)
    with pytest.raises(TypeError):
        ioctls_for("container")[0x1234] = definition  # type: ignore[index]


def test_name_of_known_and_fallbacks() -> None:
    assert name_of("container", 0x3B71) == "VFIO_IOMMU_MAP_DMA"
    assert name_of("device", 0x3B71) == "VFIO_DEVICE_PCI_HOT_RESET"
    assert name_of("iommufd", 0x3B85) == "IOMMU_IOAS_MAP"
    # Unambiguous elsewhere: named after what the caller meant, though this node rejects it.
    assert name_of("device", vfio.VFIO_DEVICE_BIND_IOMMUFD) == "VFIO_DEVICE_BIND_IOMMUFD"
    assert name_of("container", iommufd.IOMMU_DESTROY) == "IOMMU_DESTROY"
    # Ambiguous (two meanings, neither on this node) or unknown VFIO-type numbers.
    assert name_of("group", 0x3B71) == "_IO(';', 113)"
    assert name_of("iommufd", 0x3B00 | 130) == "IOMMU_IOAS_ALLOW_IOVAS"
    assert name_of("iommufd", 0x3B00 | 0x95) == "_IO(';', 149)"
    assert name_of("container", IOR(";", 100, 4)) == "_IOR(';', 100, 4)"
    # Foreign numbers: plain hex.
    assert name_of("container", 0x5401) == "0x5401"
    assert name_of("device", 0x80086601) == "0x80086601"
