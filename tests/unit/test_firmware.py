"""The state firmware leaves a function in (devices/firmware.py)."""
from __future__ import annotations

import pytest

import ioasidfs.engine  # noqa: F401  (first: devices.edu alone hits the engine<->dma import cycle)
from ioasidfs.config import BarConfig, DeviceConfig, load_config
from ioasidfs.devices.edu import EduDevice, edu_config
from ioasidfs.devices.firmware import (BarAllocator, default_interrupt_line, firmware_init,
                                       firmware_init_machine)
from ioasidfs.devices.generic import GenericDevice, create_device
from ioasidfs.devices.pci import Bar, BarKind, Identity, PciFunction, decode_bar


def _generic(bdf: str, bars: tuple[BarConfig, ...], *, intx: bool = True, msix: int = 0,
             line: int | None = None) -> DeviceConfig:
    return DeviceConfig(bdf, 5, "generic", 0x1b36, 0x0005, 0xff00, 0x1af4, 0x1100, 0, bars,
                        intx, 0, msix, line)


def _bar(fn: PciFunction, index: int) -> int:
    low = fn.config_read(0x10 + 4 * index, 4)
    high = fn.config_read(0x14 + 4 * index, 4) if fn.bars[index].is_64 else 0
    return decode_bar(low, high).address


def test_default_edu_matches_the_reference_vm() -> None:
    config = load_config(None).devices[0]
    edu = EduDevice(config)
    firmware_init(edu, config)
    assert edu.config_read(0x10, 4) == 0xfea00000
    assert edu.config_read(0x3c, 1) == 0x0a
    assert edu.command == 0x0103 and not edu.bus_master
    assert edu.mmio_read(0, 0, 4) == 0x010000ed          # decoding is on


def test_automatic_addresses_are_aligned_and_in_their_windows() -> None:
    config = _generic("0000:00:02.0", (BarConfig(0, 0x1000), BarConfig(1, 1 << 20),
                                       BarConfig(2, 1 << 33, 64, True),
                                       BarConfig(4, 0x100, io=True), BarConfig(5, 0x10, io=True)))
    dev = GenericDevice(config)
    firmware_init(dev, config)
    assert _bar(dev, 0) == 0xfebff000
    assert _bar(dev, 1) == 0xfea00000
    assert _bar(dev, 2) == 0x8_0000_0000 and dev.config_read(0x18, 4) & 0xf == 0xc
    assert _bar(dev, 4) == 0xc000 and _bar(dev, 5) == 0xc100
    assert dev.config_read(0x3c, 1) == 11                 # slot 2, pin A


def test_automatic_addresses_avoid_explicit_ones_of_every_device() -> None:
    edu_cfg = load_config(None).devices[0]
    edu = EduDevice(edu_cfg)
    other_cfg = _generic("0000:00:02.0", (BarConfig(0, 1 << 20), BarConfig(1, 0x1000)), msix=2)
    other = GenericDevice(other_cfg)
    firmware_init_machine([(other, other_cfg), (edu, edu_cfg)])
    assert _bar(edu, 0) == 0xfea00000
    assert _bar(other, 0) == 0xfeb00000                   # below 0xfec00000, above edu
    assert _bar(other, 1) == 0xfe9ff000                   # 0xfebff000 is inside BAR0
    assert other.msix_bar == 2 and _bar(other, 2) == 0xfe9fe000


def test_explicit_overlap_and_exhaustion_are_errors() -> None:
    a = _generic("0000:00:02.0", (BarConfig(0, 0x1000, address=0xfe000000),))
    b = _generic("0000:00:03.0", (BarConfig(0, 0x2000, address=0xfe000000),))
    with pytest.raises(ValueError, match="overlaps"):
        firmware_init_machine([(GenericDevice(a), a), (GenericDevice(b), b)])
    allocator = BarAllocator()
    with pytest.raises(ValueError, match="I/O space"):
        allocator.allocate(Bar(0, 0x8000, BarKind.IO))
        allocator.allocate(Bar(1, 0x8000, BarKind.IO))
    with pytest.raises(ValueError, match="no room"):
        allocator.allocate(Bar(0, 1 << 31, BarKind.MEM32))


def test_interrupt_line_explicit_default_and_none() -> None:
    config = _generic("0000:00:03.0", (BarConfig(0, 0x1000),), line=5)
    dev = GenericDevice(config)
    firmware_init(dev, config)
    assert dev.config_read(0x3c, 1) == 5
    config = _generic("0000:00:03.0", (BarConfig(0, 0x1000),), intx=False)
    dev = GenericDevice(config)
    firmware_init(dev, config)
    assert dev.config_read(0x3c, 1) == 0
    pinned = PciFunction("0000:00:04.0", Identity(1, 2, 3), [], interrupt_pin=2)
    assert default_interrupt_line(pinned, "0000:00:04.0") == 10      # (1 + 4) & 3 = 1
    assert default_interrupt_line(create_device(edu_config()), "0000:00:01.0") == 10


def test_edu_without_an_address_gets_one_allocated() -> None:
    config = edu_config()
    edu = EduDevice(config)
    firmware_init(edu, config)
    assert _bar(edu, 0) == 0xfeb00000
    assert edu.command == 0x0103
