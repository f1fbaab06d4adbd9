"""Configuration: the embedded default machine, and errors that name file, line and key."""
from __future__ import annotations

import pytest

from ioasidfs.config import load_config, parse_config, parse_size
from ioasidfs.errors import ConfigError


def test_default_is_a_q35_guest_with_an_intel_iommu() -> None:
    config = load_config(None)
    assert config.iommu.pgsize_bitmap == 0x40201000
    assert config.iommu.address_width == 39
    assert config.iommu.dma_entry_limit == 65535
    assert config.iommu.iova_ranges() == ((0, 0xFEDFFFFF), (0xFEF00000, (1 << 39) - 1))
    assert config.container_personality == "type1"
    edu = config.devices[0]
    assert (edu.bdf, edu.group, edu.model, edu.vendor, edu.device) == ("0000:00:01.0", 1, "edu", 0x1234, 0x11E8)
    assert [(g.id, g.devices) for g in config.groups] == [
        (1, ("0000:00:01.0",)), (2, ("0000:00:02.0",)), (3, ("0000:00:03.0", "0000:00:03.1"))]


def test_reserved_regions_split_the_aperture() -> None:
    config = parse_config("""
[iommu]
address_width = 48
reserved_regions = [ { start = 0xfee00000, end = 0xfeefffff, type = "msi" },
                     { start = 0xfd00000000, end = 0xffffffffff } ]
""", "x.toml")
    assert config.iommu.iova_ranges() == (
        (0, 0xFEDFFFFF), (0xFEF00000, 0xFCFFFFFFFF), (0x10000000000, (1 << 48) - 1))


@pytest.mark.parametrize("size, value", [(4096, 4096), ("4K", 4096), ("2M", 2 << 20), ("1GiB", 1 << 30)])
def test_sizes(size: object, value: int) -> None:
    assert parse_size(size) == value


@pytest.mark.parametrize("text, line, key", [
    ('[iommu]\naddress_width = 39\npage_sizes = ["4K", "3K"]\n', 3, "iommu.page_sizes"),
    ('[iommu]\naddress_width = 99\n', 2, "iommu.address_width"),
    ('[container]\npersonality = "spapr"\n', 2, "container.personality"),
    ('[[device]]\nbdf = "0000:00:01.0"\ngroup = 1\nmodel = "edu"\n\n[[device]]\nbdf = "0000:00:02.0"\n'
     'group = 2\nmodel = "generic"\nvendr = 1\n', 10, "device[1].vendr"),
    ('[[device]]\nbdf = "00:01.0"\ngroup = 1\nmodel = "edu"\n', 2, "device[0].bdf"),
    ('[groups.7]\nviable = false\n', 1, "groups.7"),
    ('[iommu\n', 1, ""),
])
def test_errors_name_file_line_and_key(text: str, line: int, key: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_config(text, "machine.toml")
    error = excinfo.value
    assert (error.file, error.line, error.key) == ("machine.toml", line, key)
    assert str(error).startswith(f"machine.toml:{line}: ")


def test_missing_file_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "absent.toml"))


def test_non_viable_group() -> None:
    config = parse_config('[[device]]\nbdf = "0000:00:01.0"\ngroup = 4\nmodel = "edu"\n[groups.4]\nviable = false\n', "x")
    assert config.groups[0].viable is False


def test_default_edu_is_where_the_reference_vms_firmware_put_it() -> None:
    edu = load_config(None).devices[0]
    assert edu.bars[0].address == 0xFEA00000 and edu.bars[0].size == 1 << 20
    assert edu.interrupt_line == 10
    assert all(d.interrupt_line is None for d in load_config(None).devices[1:])


def test_bar_address_and_interrupt_line_of_a_generic_device() -> None:
    config = parse_config('[[device]]\nbdf = "0000:00:02.0"\ngroup = 2\nmodel = "generic"\n'
                          'vendor = 1\ndevice = 2\ninterrupt_line = 0xff\n'
                          'bars = [ { index = 0, size = "4K", address = 0xfe001000 },\n'
                          '         { index = 2, size = "8G", bits = 64, address = 0x400000000 },\n'
                          '         { index = 4, size = 256, io = true, address = 0xd000 },\n'
                          '         { index = 5, size = 16 } ]\n', "x")
    bars = config.devices[0].bars
    assert [b.address for b in bars] == [0xFE001000, 0x400000000, 0xD000, None]
    assert config.devices[0].interrupt_line == 0xFF


_EDU = '[[device]]\nbdf = "0000:00:01.0"\ngroup = 1\nmodel = "edu"\n'
_GEN = '[[device]]\nbdf = "0000:00:02.0"\ngroup = 2\nmodel = "generic"\nvendor = 1\ndevice = 2\n'


@pytest.mark.parametrize("text, line, key, message", [
    (_EDU + 'bars = [ { index = 0, address = 0xfea80000 } ]\n', 5, "device[0].bars[0].address",
     "not a non-zero multiple"),
    (_EDU + 'bars = [ { index = 0, address = 0 } ]\n', 5, "device[0].bars[0].address",
     "not a non-zero multiple"),
    (_EDU + 'bars = [ { index = 1, address = 0xfea00000 } ]\n', 5, "device[0].bars[0].index",
     "expected one of 0"),
    (_EDU + 'bars = [ { index = 0, size = "1M" } ]\n', 5, "device[0].bars[0].size",
     "unknown key"),
    (_EDU + 'bars = [ 7 ]\n', 5, "device[0].bars[0]", "must be a table"),
    (_EDU + 'interrupt_line = 256\n', 5, "device[0].interrupt_line", "out of range"),
    (_GEN + 'bars = [ { index = 0, size = "4K", address = 0xfffff000 } ]\n', 7,
     "device[0].bars[0].address", None),
    (_GEN + 'bars = [ { index = 0, size = "8K", address = 0xfffff000 } ]\n', 7,
     "device[0].bars[0].address", "not a non-zero multiple"),
    (_GEN + 'bars = [ { index = 0, size = "4K", address = 0x100000000 } ]\n', 7,
     "device[0].bars[0].address", "does not fit in 32 bits"),
    (_GEN + 'bars = [ { index = 0, size = 256, io = true, address = 0x10000 } ]\n', 7,
     "device[0].bars[0].address", "64 KiB I/O space"),
    (_GEN + 'bars = [ { index = 0, size = 256, address = true } ]\n', 7,
     "device[0].bars[0].address", "expected an integer address"),
    (_EDU + 'bars = [ { index = 0, address = 0xfea00000 } ]\n' + _GEN
     + 'bars = [ { index = 0, size = "4K", address = 0xfeaff000 } ]\n', 12,
     "device[1].bars[0].address", "overlaps 0000:00:01.0 BAR0"),
])
def test_bar_address_and_interrupt_line_errors(text: str, line: int, key: str,
                                               message: str | None) -> None:
    if message is None:       # the control: a good address in the same shape parses
        parse_config(text, "machine.toml")
        return
    with pytest.raises(ConfigError, match=message) as excinfo:
        parse_config(text, "machine.toml")
    assert (excinfo.value.line, excinfo.value.key) == (line, key)


def test_io_and_memory_bars_may_share_numbers() -> None:
    config = parse_config(_GEN + 'bars = [ { index = 0, size = 256, io = true, address = 0xd000 },'
                          ' { index = 1, size = "4K", address = 0xd000 } ]\n', "x")
    assert [b.address for b in config.devices[0].bars] == [0xD000, 0xD000]


def test_iommu_dirty_tracking_selects_a_scalable_mode_vtd() -> None:
    from ioasidfs.engine.iommufd import IommufdContext
    default = load_config(None)
    assert not default.iommu.dirty_tracking
    assert not IommufdContext(default.iommu).vtd.dirty_tracking   # QEMU's intel-iommu
    config = parse_config('[iommu]\ndirty_tracking = true\n[[device]]\nbdf = "0000:00:01.0"\n'
                          'group = 1\nmodel = "edu"\n', "t.toml")
    assert config.iommu.dirty_tracking
    assert IommufdContext(config.iommu).vtd.dirty_tracking
    with pytest.raises(ConfigError, match="iommu.dirty_tracking"):
        parse_config('[iommu]\ndirty_tracking = "yes"\n', "t.toml")
