"""The physical config space of a PCI function: the type 0 header, BAR sizing, the capability
list, MSI's register semantics and INTx, as QEMU's PCI core presents them (the edu device's
layout is checked byte for byte against what ``lspci -xxx`` shows for QEMU's edu)."""
from __future__ import annotations

import pytest

from ioasidfs.config import BarConfig
from ioasidfs.devices import pci as P
from ioasidfs.devices.edu import EduDevice
from ioasidfs.devices.pci import (Bar, BarKind, Capability, Identity, InterruptLog,
                                  MsiCapability, PciFunction, bar_size_from_readback, decode_bar)


class Plain(PciFunction):
    """A function with no registers of its own: reads 0, writes vanish."""

    def _bar_read(self, bar: int, offset: int, size: int) -> int:
        return 0

    def _bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        pass


def plain(bars: list[Bar] | None = None, *, msi: MsiCapability | None = None,
          pin: int = 1) -> tuple[Plain, InterruptLog]:
    sink = InterruptLog()
    fn = Plain("0000:00:05.0", Identity(0x1B36, 0x0005, 0x028000, 3, 0x1AF4, 0x1100),
               bars if bars is not None else [Bar(0, 4096)], interrupt_pin=pin, msi=msi,
               sink=sink)
    return fn, sink


def sized(fn: PciFunction, index: int) -> int:
    """What a driver reads back from BAR ``index`` after writing all ones (then restores)."""
    at = P.BASE_ADDRESS_0 + 4 * index
    saved = fn.config_read(at, 4)
    fn.config_write(at, 4, 0xFFFFFFFF)
    value = fn.config_read(at, 4)
    fn.config_write(at, 4, saved)
    return value


def test_edu_header_is_qemus() -> None:
    edu = EduDevice()
    c = edu.config_read
    assert (c(P.VENDOR_ID, 2), c(P.DEVICE_ID, 2)) == (0x1234, 0x11E8)
    assert c(P.REVISION_ID, 1) == 0x10
    assert c(P.CLASS_PROG, 1) == 0 and c(P.CLASS_DEVICE, 2) == 0x00FF
    assert (c(P.SUBSYSTEM_VENDOR_ID, 2), c(P.SUBSYSTEM_ID, 2)) == (0x1AF4, 0x1100)
    assert c(P.HEADER_TYPE, 1) == 0
    assert c(P.COMMAND, 2) == 0                       # nothing decoded at power-on
    assert c(P.STATUS, 2) == P.STATUS_CAP_LIST
    assert c(P.INTERRUPT_PIN, 1) == 1 and c(P.INTERRUPT_LINE, 1) == 0
    assert c(P.BASE_ADDRESS_0, 4) == 0                # mem32, not prefetchable, not placed
    assert [c(P.BASE_ADDRESS_0 + 4 * i, 4) for i in range(1, 6)] == [0] * 5
    assert c(P.ROM_ADDRESS, 4) == 0
    assert c(P.CAPABILITY_LIST, 1) == 0x40
    # msi_init(pdev, 0, 1, true, false): ID 5, end of list, 64-bit, one vector, 14 bytes.
    assert (c(0x40, 1), c(0x41, 1), c(0x42, 2)) == (P.CAP_ID_MSI, 0, 0x0080)
    assert edu.capabilities() == [Capability(P.CAP_ID_MSI, 0x40, 0x0E)]
    assert edu.config.snapshot()[:4] == bytes([0x34, 0x12, 0xE8, 0x11])


def test_bar_sizing_with_all_ones() -> None:
    fn, _ = plain([Bar(0, 1 << 20), Bar(1, 256, BarKind.IO),
                   Bar(2, 64 << 10, BarKind.MEM64, prefetchable=True),
                   Bar(4, 16)])
    assert sized(fn, 0) == 0xFFF00000
    assert sized(fn, 1) == 0xFFFFFF01                 # I/O: bit 0 set, 32 address bits (QEMU)
    assert sized(fn, 2) == 0xFFFF000C                 # 64-bit prefetchable: type bits stay
    assert sized(fn, 3) == 0xFFFFFFFF                 # upper half: all 64-bit address bits
    assert sized(fn, 4) == 0xFFFFFFF0
    assert sized(fn, 5) == 0                          # unimplemented: reads 0 whatever is written
    assert bar_size_from_readback(0xFFF00000) == 1 << 20
    assert bar_size_from_readback(0xFFFFFF01) == 256
    assert bar_size_from_readback(0x0000FF01) == 256     # a 16-bit I/O decoder sizes the same
    assert bar_size_from_readback(0xFFFF000C, 0xFFFFFFFF) == 64 << 10
    assert bar_size_from_readback(0) == 0


def test_a_large_64_bit_bar_sizes_through_its_upper_half() -> None:
    fn, _ = plain([Bar(0, 1 << 34, BarKind.MEM64)])
    fn.config_write(0x10, 4, 0xFFFFFFFF)
    fn.config_write(0x14, 4, 0xFFFFFFFF)
    low, high = fn.config_read(0x10, 4), fn.config_read(0x14, 4)
    assert (low, high) == (0x00000004, 0xFFFFFFFC)
    assert bar_size_from_readback(low, high) == 1 << 34


def test_bar_addresses_stick_and_decode() -> None:
    fn, _ = plain([Bar(0, 4096), Bar(2, 1 << 20, BarKind.MEM64, True), Bar(5, 32, BarKind.IO)])
    fn.config_write(0x10, 4, 0xFEA01234)              # low bits below the size are not writable
    assert fn.config_read(0x10, 4) == 0xFEA01000
    fn.config_write(0x18, 4, 0xC0000000)
    fn.config_write(0x1C, 4, 0x80)
    d = decode_bar(fn.config_read(0x18, 4), fn.config_read(0x1C, 4))
    assert (d.io, d.is_64, d.prefetchable, d.address) == (False, True, True, 0x80_C0000000)
    fn.config_write(0x24, 4, 0xC040)
    d = decode_bar(fn.config_read(0x24, 4))
    assert (d.io, d.address) == (True, 0xC040)
    d = decode_bar(0x000F0002)
    assert (d.io, d.mem_type, d.is_64) == (False, P.BAR_MEM_TYPE_1M, False)


def test_bar_descriptions_are_validated() -> None:
    with pytest.raises(ValueError):
        Bar(0, 3000)
    with pytest.raises(ValueError):
        Bar(0, 8)                                     # memory BARs are at least 16 bytes
    Bar(0, 4, BarKind.IO)
    with pytest.raises(ValueError):
        Bar(5, 4096, BarKind.MEM64)
    with pytest.raises(ValueError):
        Bar(0, 1 << 32)                               # 32-bit BAR
    with pytest.raises(ValueError):
        plain([Bar(0, 4096, BarKind.MEM64), Bar(1, 4096)])   # BAR1 is BAR0's upper half
    b = Bar.from_config(BarConfig(2, 1 << 16, 64, True, False))
    assert (b.kind, b.prefetchable, b.slots, b.flags) == (BarKind.MEM64, True, (2, 3), 0x0C)
    assert Bar.from_config(BarConfig(1, 64, io=True)).flags == P.BAR_SPACE_IO


def test_read_only_registers_ignore_writes() -> None:
    fn, _ = plain()
    before = fn.config.snapshot()
    for offset in (P.VENDOR_ID, P.DEVICE_ID, P.REVISION_ID, P.CLASS_PROG, P.CLASS_DEVICE,
                   P.HEADER_TYPE, P.SUBSYSTEM_VENDOR_ID, P.SUBSYSTEM_ID, P.CAPABILITY_LIST,
                   P.INTERRUPT_PIN, P.ROM_ADDRESS, P.CARDBUS_CIS):
        fn.config_write(offset & ~3, 4, 0xFFFFFFFF) if offset % 4 == 0 else \
            fn.config_write(offset, 1, 0xFF)
    after = fn.config.snapshot()
    changed = [i for i in range(64) if before[i] != after[i]]
    # What did change: the writable parts of the header only (command, BAR0).
    assert set(changed) <= {0x04, 0x05, 0x10, 0x11, 0x12, 0x13}


def test_command_register_bits() -> None:
    fn, _ = plain()
    fn.config_write(P.COMMAND, 2, 0xFFFF)
    assert fn.config_read(P.COMMAND, 2) == 0x0507     # IO MEM MASTER SERR INTX_DISABLE
    assert fn.bus_master and fn.memory_enabled and fn.io_enabled
    fn.config_write(P.COMMAND, 2, 0)
    assert not fn.bus_master
    fn.host_enable_device()                           # memory BAR only: memory decode only
    assert fn.config_read(P.COMMAND, 2) == P.COMMAND_MEMORY


def test_status_error_bits_are_write_one_to_clear() -> None:
    fn, _ = plain()
    fn.config.set(P.STATUS, 2, fn.config.get(P.STATUS, 2) | P.STATUS_REC_MASTER_ABORT
                  | P.STATUS_DETECTED_PARITY)
    fn.config_write(P.STATUS, 2, P.STATUS_REC_MASTER_ABORT | P.STATUS_CAP_LIST)
    assert fn.config_read(P.STATUS, 2) == P.STATUS_DETECTED_PARITY   # no caps: CAP_LIST 0
    fn.config_write(P.STATUS, 2, 0xFFFF)
    assert fn.config_read(P.STATUS, 2) == 0


def test_byte_and_word_accesses_compose() -> None:
    edu = EduDevice()
    dword = edu.config_read(0, 4)
    assert dword == 0x11E81234
    assert [edu.config_read(i, 1) for i in range(4)] == [0x34, 0x12, 0xE8, 0x11]
    assert edu.config_read(2, 2) == 0x11E8
    edu.config_write(P.CACHE_LINE_SIZE, 1, 0x10)
    edu.config_write(P.INTERRUPT_LINE, 1, 11)
    assert edu.config_read(0x0C, 4) & 0xFF == 0x10
    assert edu.config_read(0x3C, 4) == 0x0000010B      # line 11, pin A
    for offset, size in ((1, 2), (2, 4), (0x100, 1), (0xFE, 4), (0, 3), (-1, 1)):
        with pytest.raises(ValueError):
            edu.config_read(offset, size)


def test_device_specific_area_is_scratch_except_capabilities() -> None:
    edu = EduDevice()
    edu.config_write(0x80, 4, 0xDEADBEEF)             # QEMU: bytes after the header are RW
    assert edu.config_read(0x80, 4) == 0xDEADBEEF
    edu.config_write(0x40, 2, 0xFFFF)                 # capability ID and next: read-only
    assert edu.config_read(0x40, 2) == 0x0005
    edu.config_write(0x4C, 2, 0x1234)                 # MSI data: writable
    assert edu.config_read(0x4C, 2) == 0x1234
    edu.config_write(0x4E, 2, 0xABCD)                 # just after the 14-byte MSI capability
    assert edu.config_read(0x4E, 2) == 0xABCD


def test_capability_chain_walk() -> None:
    fn, _ = plain(msi=MsiCapability(0x50, 4, False, True))
    assert fn.capabilities() == [Capability(P.CAP_ID_MSI, 0x50, 0x14)]
    fn2, _ = plain(pin=0)
    assert fn2.capabilities() == [] and fn2.config_read(P.STATUS, 2) & P.STATUS_CAP_LIST == 0
    assert fn2.config_read(P.INTERRUPT_PIN, 1) == 0
    with pytest.raises(ValueError):
        plain(msi=MsiCapability(0x3C, 1))              # inside the header
    with pytest.raises(ValueError):
        MsiCapability(0x40, 3)


def test_msi_control_register() -> None:
    fn, sink = plain(msi=MsiCapability(0x40, 4, True, False))
    flags = 0x40 + P.MSI_FLAGS
    assert fn.config_read(flags, 2) == 0x0084          # 64-bit, capable of 4 (log2 2)
    fn.config_write(flags, 2, 0xFFFF)
    # Enable and Multiple Message Enable are writable; MME is clamped to what is capable.
    assert fn.config_read(flags, 2) == 0x00A5
    assert fn.msi_enabled and fn.msi_vectors_enabled == 4
    fn.config_write(flags, 2, 0x0010)
    assert not fn.msi_enabled and fn.msi_vectors_enabled == 0
    fn.config_write(0x44, 4, 0xFEE00003)                # address: dword aligned
    assert fn.config_read(0x44, 4) == 0xFEE00000


def test_msi_delivery_needs_enable_bus_master_and_a_valid_vector() -> None:
    fn, sink = plain(msi=MsiCapability(0x40, 4, True, False))
    assert not fn.msi_notify(0)                         # disabled
    fn.host_enable_msi(2)
    assert fn.msi_vectors_enabled == 2
    assert fn.config_read(0x44, 4) == P.X86_MSI_ADDRESS
    assert not fn.msi_notify(0)                         # bus mastering off: the write is lost
    fn.config_write(P.COMMAND, 2, P.COMMAND_MASTER)
    assert fn.msi_notify(1) and not fn.msi_notify(2)    # 2 is beyond Multiple Message Enable
    assert sink.take() == [("msi", 1)]
    fn.host_disable_msi()
    assert not fn.msi_enabled and not fn.msi_notify(0)


def test_msi_per_vector_mask_holds_messages_pending() -> None:
    fn, sink = plain(msi=MsiCapability(0x40, 2, True, True))
    assert fn.msi is not None and fn.msi.mask_offset == 0x50 and fn.msi.pending_offset == 0x54
    fn.config_write(P.COMMAND, 2, P.COMMAND_MASTER)
    fn.host_enable_msi(2)
    fn.config_write(0x50, 4, 0xFFFFFFFF)
    assert fn.config_read(0x50, 4) == 0b11               # only implemented vectors mask
    assert not fn.msi_notify(1)
    assert fn.config_read(0x54, 4) == 0b10 and sink.take() == []
    fn.config_write(0x54, 4, 0)                          # pending bits are read-only
    assert fn.config_read(0x54, 4) == 0b10
    fn.config_write(0x50, 4, 0b01)                       # unmask vector 1: it fires
    assert sink.take() == [("msi", 1)] and fn.config_read(0x54, 4) == 0


def test_intx_level_status_bit_and_interrupt_disable() -> None:
    fn, sink = plain()
    fn.set_intx_level(True)
    assert fn.intx_asserted and fn.config_read(P.STATUS, 2) & P.STATUS_INTERRUPT
    assert sink.take() == [("intx", 1)]
    fn.config_write(P.COMMAND, 2, P.COMMAND_INTX_DISABLE)   # the line drops, status stays
    assert not fn.intx_asserted and fn.config_read(P.STATUS, 2) & P.STATUS_INTERRUPT
    assert sink.take() == [("intx", 0)]
    fn.config_write(P.COMMAND, 2, 0)
    assert sink.take() == [("intx", 1)]
    fn.set_intx_level(True)                               # no change, no event
    assert sink.take() == []
    fn.set_intx_level(False)
    assert sink.take() == [("intx", 0)]
    assert fn.config_read(P.STATUS, 2) & P.STATUS_INTERRUPT == 0


def test_enabling_msi_deasserts_intx() -> None:
    fn, sink = plain(msi=MsiCapability(0x40, 1))
    fn.set_intx_level(True)
    fn.host_enable_msi(1)
    assert not fn.intx_asserted and sink.take() == [("intx", 1), ("intx", 0)]


def test_no_pin_means_no_intx() -> None:
    fn, sink = plain(pin=0)
    fn.set_intx_level(True)
    assert not fn.intx_asserted and sink.events == []


def test_attach_replays_the_line() -> None:
    fn, sink = plain()
    fn.set_intx_level(True)
    other = InterruptLog()
    fn.attach(other)
    assert other.events == [("intx", 1)]
    fn.attach(None)
    fn.set_intx_level(False)
    assert other.events == [("intx", 1)]


def test_bar_access_rules() -> None:
    fn, _ = plain([Bar(0, 4096), Bar(1, 16, BarKind.IO)])
    assert fn.mmio_read(0, 0, 4) == 0xFFFFFFFF          # memory decode off: master abort
    assert fn.mmio_read(1, 0, 2) == 0xFFFF
    fn.host_enable_device()
    assert fn.config_read(P.COMMAND, 2) == P.COMMAND_MEMORY | P.COMMAND_IO
    assert fn.mmio_read(0, 8, 8) == 0
    for bar, offset, size in ((2, 0, 4), (0, 4096, 4), (0, 4094, 4), (0, 2, 4), (0, 0, 3)):
        with pytest.raises(ValueError):
            fn.mmio_read(bar, offset, size)


def test_reset_restores_the_power_on_image() -> None:
    fn, sink = plain([Bar(0, 4096)], msi=MsiCapability(0x40, 1))
    image = fn.config.snapshot()
    fn.config_write(0x10, 4, 0xFEA00000)
    fn.config_write(P.COMMAND, 2, 0x0507)
    fn.config_write(0x80, 4, 1)
    fn.set_intx_level(True)
    fn.config_write(P.COMMAND, 2, 0x0007)
    fn.host_enable_msi(1)
    fn.reset()
    assert fn.config.snapshot() == image
    assert not fn.intx_asserted and not fn.msi_enabled
