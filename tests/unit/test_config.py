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
