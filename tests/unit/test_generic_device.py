"""The generic PCI device: built from a DeviceConfig (the embedded default's 0000:00:02.0 and
hand-made ones), RAM-backed BARs, its MSI and MSI-X capabilities and the MSI-X table."""
from __future__ import annotations

import dataclasses

import pytest

from ioasidfs.config import BarConfig, DeviceConfig, load_config
from ioasidfs.devices import pci as P
from ioasidfs.devices.edu import EduDevice
from ioasidfs.devices.generic import GenericDevice, SparseMemory, create_device
from ioasidfs.devices.pci import Capability, InterruptLog, bar_size_from_readback


def config(**changes: object) -> DeviceConfig:
    base = DeviceConfig("0000:00:04.0", 4, "generic", 0x8086, 0x10D3, 0x020000, 0x8086, 0xA01F,
                        2, (BarConfig(0, 128 << 10), BarConfig(2, 32, io=True)), True, 0, 0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def enabled(dev: GenericDevice) -> GenericDevice:
    dev.host_enable_device()
    dev.config_write(P.COMMAND, 2, dev.command | P.COMMAND_MASTER)
    return dev


def sized(dev: GenericDevice, index: int) -> int:
    at = P.BASE_ADDRESS_0 + 4 * index
    dev.config_write(at, 4, 0xFFFFFFFF)
    return dev.config_read(at, 4)


def test_the_default_configs_devices() -> None:
    cfg = load_config(None)
    devices = [create_device(d) for d in cfg.devices]
    assert isinstance(devices[0], EduDevice)
    dev = devices[1]
    assert isinstance(dev, GenericDevice) and dev.name == "0000:00:02.0"
    assert (dev.config_read(0, 2), dev.config_read(2, 2)) == (0x1B36, 0x0005)
    assert dev.config_read(0x08, 4) == 0x00FF0000        # class 0x00ff00, revision 0
    assert dev.config_read(P.SUBSYSTEM_VENDOR_ID, 4) == 0x11001AF4
    assert sized(dev, 0) == 0xFFFFF000
    assert sized(dev, 2) == 0xFFFF000C and sized(dev, 3) == 0xFFFFFFFF
    assert bar_size_from_readback(0xFFFF000C, 0xFFFFFFFF) == 64 << 10
    assert [sized(dev, i) for i in (1, 4, 5)] == [0, 0, 0]
    assert dev.capabilities() == [Capability(P.CAP_ID_MSI, 0x40, 0x0E)]
    assert dev.config_read(P.INTERRUPT_PIN, 1) == 1


def test_identity_and_bars_from_config() -> None:
    dev = GenericDevice(config())
    assert dev.config_read(0, 4) == 0x10D38086
    assert dev.config_read(P.REVISION_ID, 1) == 2
    assert dev.config_read(P.CLASS_PROG, 1) == 0 and dev.config_read(P.CLASS_DEVICE, 2) == 0x0200
    assert dev.config_read(P.SUBSYSTEM_ID, 2) == 0xA01F
    assert sized(dev, 0) == 0xFFFE0000
    assert sized(dev, 2) == 0xFFFFFFE1                   # I/O, 32 bytes
    assert dev.capabilities() == []
    assert dev.config_read(P.STATUS, 2) & P.STATUS_CAP_LIST == 0
    nopin = GenericDevice(config(intx=False))
    assert nopin.config_read(P.INTERRUPT_PIN, 1) == 0


def test_bars_are_ram() -> None:
    dev = enabled(GenericDevice(config(bars=(BarConfig(0, 4096), BarConfig(1, 16, io=True),
                                             BarConfig(2, 1 << 34, 64, True)))))
    assert dev.mmio_read(0, 0x100, 8) == 0
    dev.mmio_write(0, 0x100, 8, 0x1122334455667788)
    assert dev.mmio_read(0, 0x100, 4) == 0x55667788
    assert dev.mmio_read(0, 0x104, 2) == 0x3344
    assert dev.mmio_read(0, 0x107, 1) == 0x11
    dev.mmio_write(0, 0x102, 2, 0xBEEF)
    assert dev.mmio_read(0, 0x100, 8) == 0x11223344BEEF7788
    dev.mmio_write(1, 12, 4, 0xCAFE)
    assert dev.mmio_read(1, 12, 4) == 0xCAFE
    top = (1 << 34) - 8                                   # 16 GiB BAR, allocated as touched
    dev.mmio_write(2, top, 8, 42)
    assert dev.mmio_read(2, top, 8) == 42
    assert dev.memory[2].resident == 4096
    with pytest.raises(ValueError):
        dev.mmio_read(3, 0, 4)                            # the upper half is not a BAR
    dev.reset()
    dev.host_enable_device()
    assert dev.mmio_read(0, 0x100, 8) == 0 and dev.memory[2].resident == 0


def test_sparse_memory_across_pages() -> None:
    mem = SparseMemory(3 * 4096)
    mem.write(4090, bytes(range(20)))
    assert mem.read(4088, 24) == b"\0\0" + bytes(range(20)) + b"\0\0"
    assert mem.resident == 2 * 4096
    with pytest.raises(ValueError):
        mem.write(3 * 4096 - 1, b"ab")


def test_msi_vectors_from_config() -> None:
    dev = enabled(GenericDevice(config(msi_vectors=8)))
    sink = InterruptLog()
    dev.attach(sink)
    assert dev.config_read(0x42, 2) == 0x0086             # 64-bit, capable of 8
    dev.host_enable_msi(8)
    assert all(dev.msi_notify(v) for v in range(8))
    assert sink.take() == [("msi", v) for v in range(8)]


def test_msix_capability_and_table() -> None:
    dev = enabled(GenericDevice(config(msi_vectors=1, msix_vectors=5)))
    sink = InterruptLog()
    dev.attach(sink)
    # MSI at 0x40, MSI-X at 0x50, newest first in the list (QEMU's pci_add_capability).
    assert dev.capabilities() == [Capability(P.CAP_ID_MSIX, 0x50, 12),
                                  Capability(P.CAP_ID_MSI, 0x40, 0x0E)]
    assert dev.msix is not None and dev.msix_bar == 1     # first free slot: BAR1
    assert dev.config_read(0x52, 2) == 4                  # table size - 1
    assert dev.config_read(0x54, 4) == 0x00000001         # table at 0 in BAR1
    assert dev.config_read(0x58, 4) == 0x00000801         # PBA at 2 KiB in BAR1
    assert sized(dev, 1) == 0xFFFFF000                    # a 4 KiB exclusive BAR
    # Entries power on masked.
    assert [dev.mmio_read(1, 16 * v + 12, 4) for v in range(5)] == [1] * 5
    assert not dev.msix_notify(0)                         # MSI-X not enabled
    dev.config_write(0x52, 2, P.MSIX_FLAGS_ENABLE)
    assert dev.msix_enabled
    assert not dev.msix_notify(3)                         # masked: pending
    assert dev.mmio_read(1, 0x800, 8) == 1 << 3
    dev.mmio_write(1, 0x800, 8, 0)                        # the PBA is read-only
    assert dev.mmio_read(1, 0x800, 8) == 1 << 3
    dev.mmio_write(1, 16 * 3 + 12, 4, 0)                  # unmask entry 3: delivered
    assert sink.take() == [("msix", 3)] and dev.mmio_read(1, 0x800, 8) == 0
    dev.config_write(0x52, 2, P.MSIX_FLAGS_ENABLE | P.MSIX_FLAGS_MASKALL)
    assert not dev.msix_notify(3)
    dev.config_write(0x52, 2, P.MSIX_FLAGS_ENABLE)        # function unmasked: delivered
    assert sink.take() == [("msix", 3)]
    assert not dev.msix_notify(5)                         # beyond the table


def test_host_msix_programming() -> None:
    dev = enabled(GenericDevice(config(msix_vectors=3)))
    sink = InterruptLog()
    dev.attach(sink)
    dev.set_intx_level(True)
    dev.host_enable_msix(2)
    assert dev.capabilities() == [Capability(P.CAP_ID_MSIX, 0x40, 12)]
    assert not dev.intx_asserted                          # MSI-X enable deasserts INTx
    assert dev.mmio_read(1, 0, 4) == P.X86_MSI_ADDRESS
    assert dev.mmio_read(1, 16 + 8, 4) == 0x4001
    assert [dev.msix_vector_masked(v) for v in range(3)] == [False, False, True]
    assert dev.msix_notify(1) and not dev.msix_notify(2)
    assert sink.take() == [("intx", 1), ("intx", 0), ("msix", 1)]
    dev.host_disable_msix()
    assert not dev.msix_enabled and not dev.msix_notify(1)


def test_msix_table_size_grows_the_bar() -> None:
    dev = GenericDevice(config(msix_vectors=2048))
    assert dev.msix is not None
    # 2048 entries * 16 = 32 KiB of table, PBA right after it, BAR rounded to 64 KiB.
    assert (dev.msix.table_offset, dev.msix.pba_offset) == (0, 0x8000)
    assert dev.bars[1].size == 0x10000


def test_msix_needs_a_free_slot() -> None:
    full = tuple(BarConfig(i, 4096) for i in range(6))
    with pytest.raises(ValueError):
        GenericDevice(config(bars=full, msix_vectors=1))
    with pytest.raises(ValueError):
        create_device(config(model="nvme"))
