"""vfio-pci's config-space layer against the reference VM: every config line of
tests/expected/device_ioctls.txt and edu_driver.txt is replayed with the C programs' accesses,
then each rule of the permission tables is checked on its own."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest

import ioasidfs.engine  # noqa: F401  (first: devices.edu alone hits the engine<->dma import cycle)
from ioasidfs.config import load_config
from ioasidfs.devices.edu import EduDevice
from ioasidfs.devices.firmware import firmware_init
from ioasidfs.devices.generic import GenericDevice
from ioasidfs.devices.pci import (BASE_ADDRESS_0, COMMAND, COMMAND_INTX_DISABLE, COMMAND_MASTER,
                                  COMMAND_MEMORY, STATUS, Bar, BarKind, Identity, MsiCapability,
                                  PciFunction)
from ioasidfs.config import BarConfig, DeviceConfig
from ioasidfs.engine.vconfig import (MAP_UNASSIGNED, HostResource, SavedState, VirtualConfig,
                                     capability_length, reset_function, vfio_pci_disable,
                                     vfio_pci_enable)
from ioasidfs.errors import KernelError

EXPECTED = Path(__file__).resolve().parents[1] / "expected"


class FakeIrqs:
    """IrqConfigHooks for tests: records INTx-disable changes, MSI/MSI-X state is settable."""

    def __init__(self) -> None:
        self.intx_changes: list[bool] = []
        self.msi = False
        self.msix = False

    def config_intx_disable(self, disabled: bool) -> None:
        self.intx_changes.append(disabled)

    def msi_enabled(self) -> bool:
        return self.msi

    def msix_enabled(self) -> bool:
        return self.msix


def open_edu() -> tuple[EduDevice, VirtualConfig, FakeIrqs]:
    """The default machine's edu as vfio-pci opens it in the reference VM."""
    config = load_config(None).devices[0]
    edu = EduDevice(config)
    firmware_init(edu, config)
    vfio_pci_enable(edu, reset_works=False)
    hooks = FakeIrqs()
    return edu, VirtualConfig(edu, hooks), hooks


def u(vc: VirtualConfig, offset: int, count: int) -> int:
    return int.from_bytes(vc.read(offset, count), "little")


def w(vc: VirtualConfig, offset: int, count: int, value: int) -> int:
    return vc.write(offset, value.to_bytes(8, "little")[:count])


# --------------------------------------------------------------------------- the oracle

class Probe:
    """The output helpers of tests/c/device_ioctls.c (rd, rdv, wrv, config_dump, uniq) over a
    VirtualConfig; BAR0 accesses go through the EIO rule of vfio_pci_bar_rw."""

    def __init__(self, vc: VirtualConfig, edu: EduDevice, seen: dict[str, int]) -> None:
        self.vc, self.edu, self.seen, self.lines = vc, edu, seen, []  # type: list[str]

    def uniq(self, label: str) -> str:
        n = self.seen.get(label, 0) + 1
        self.seen[label] = n
        return label if n == 1 else f"{label} #{n}"

    def access(self, region: str, pos: int, count: int, data: bytes | None) -> bytes | int:
        if region == "CONFIG":
            return self.vc.read(pos, count) if data is None else self.vc.write(pos, data)
        if not self.vc.memory_enabled:
            raise KernelError(errno.EIO, "memory decode off")
        if data is None:
            return self.edu.mmio_read(0, pos, count).to_bytes(count, "little")
        self.edu.mmio_write(0, pos, count, int.from_bytes(data, "little"))
        return count

    def rd(self, region: str, pos: int, count: int) -> None:
        label = self.uniq(f"pread({region}+{pos:#x},{count})")
        try:
            data = self.access(region, pos, count, None)
        except KernelError as e:
            self.lines.append(f"{label} = -1 {errno.errorcode[e.errno]}")
            return
        assert isinstance(data, bytes)
        self.lines.append(f"{label} = {len(data)} [{' '.join(f'{b:02x}' for b in data[:8])}]")

    def rdv(self, region: str, pos: int, count: int) -> int:
        label = self.uniq(f"cfg: pread({region}+{pos:#x},{count})")
        data = self.access(region, pos, count, None)
        assert isinstance(data, bytes)
        value = int.from_bytes(data, "little")
        self.lines.append(f"{label} = {count} value={value:#x}")
        return value

    def wrv(self, region: str, pos: int, count: int, value: int) -> None:
        label = self.uniq(f"cfg: pwrite({region}+{pos:#x},{count},{value:#x})")
        try:
            result = self.access(region, pos, count, value.to_bytes(8, "little")[:count])
        except KernelError as e:
            self.lines.append(f"{label} = -1 {errno.errorcode[e.errno]}")
            return
        self.lines.append(f"{label} = {result}")

    def dump(self, prefix: str) -> None:
        data = self.vc.read(0, 256)
        self.lines.append(self.uniq(f"{prefix}: pread(CONFIG+0x0,256)") + " = 256")
        for row in range(16):
            hexrow = " ".join(f"{b:02x}" for b in data[16 * row:16 * row + 16])
            self.lines.append(self.uniq(f"{prefix}: config[0x{16 * row:02x}]") + f" = {hexrow}")


def _label(line: str) -> str:
    label = line.split(" = ")[0]
    head, sep, tail = label.rpartition(" #")
    return head if sep and tail.isdigit() else label


def test_device_ioctls_config_section_matches_the_kernel() -> None:
    expected = (EXPECTED / "device_ioctls.txt").read_text().splitlines()
    first = expected.index("cfg(open): pread(CONFIG+0x0,256) = 256")
    last = first + max(i for i, line in enumerate(expected[first:])
                       if line.startswith("cfg(after): config[0xf0]"))
    seen: dict[str, int] = {}
    for line in expected[:first]:
        seen[_label(line)] = seen.get(_label(line), 0) + 1
    edu, vc, _ = open_edu()
    p = Probe(vc, edu, seen)
    # The access sequence of tests/c/device_ioctls.c, "config space".
    p.dump("cfg(open)")
    for pos, count in ((0, 0), (0, 1), (0, 2), (0, 4), (0, 8), (1, 4), (3, 2), (0x3e, 4),
                       (0xfc, 4), (0xfd, 4), (0xff, 1), (0x100, 1), (0x100, 0), (0x1000, 4),
                       (0xffffffffff, 1), (0, 4096)):
        p.rd("CONFIG", pos, count)
    p.wrv("CONFIG", 0x100, 4, 0)
    p.wrv("CONFIG", 0xfe, 4, 0)
    p.wrv("CONFIG", 0x50, 0, 0)
    for pos, count, value in ((0x00, 4, 0x12345678), (0x08, 4, 0xffffffff),
                              (0x0c, 4, 0xffffffff), (0x2c, 4, 0xffffffff), (0x34, 1, 0x80)):
        p.wrv("CONFIG", pos, count, value)
        p.rdv("CONFIG", pos, count)
    p.wrv("CONFIG", 0x3c, 1, 0x55)
    p.rdv("CONFIG", 0x3c, 2)
    p.wrv("CONFIG", 0x3d, 1, 0x04)
    p.rdv("CONFIG", 0x3c, 2)
    p.wrv("CONFIG", 0x3c, 4, 0xffffffff)
    p.rdv("CONFIG", 0x3c, 4)
    cmd = p.rdv("CONFIG", 0x04, 2)
    p.rdv("CONFIG", 0x06, 2)
    p.wrv("CONFIG", 0x04, 2, 0x0000)
    p.rdv("CONFIG", 0x04, 2)
    p.rd("BAR0", 0, 4)
    p.wrv("BAR0", 4, 4, 0x1)
    p.wrv("CONFIG", 0x04, 2, 0xffff)
    p.rdv("CONFIG", 0x04, 2)
    p.wrv("CONFIG", 0x04, 2, 0x0002)
    p.rdv("CONFIG", 0x04, 2)
    p.rd("BAR0", 0, 4)
    p.wrv("CONFIG", 0x06, 2, 0xffff)
    p.rdv("CONFIG", 0x06, 2)
    p.wrv("CONFIG", 0x04, 2, cmd)
    p.rdv("CONFIG", 0x04, 2)
    bar0 = p.rdv("CONFIG", 0x10, 4)
    p.wrv("CONFIG", 0x10, 4, 0xffffffff)
    p.rdv("CONFIG", 0x10, 4)
    p.wrv("CONFIG", 0x10, 4, 0x12345678)
    p.rdv("CONFIG", 0x10, 4)
    p.wrv("CONFIG", 0x10, 4, bar0)
    p.rdv("CONFIG", 0x10, 4)
    for i in range(1, 6):
        p.wrv("CONFIG", 0x10 + 4 * i, 4, 0xffffffff)
        p.rdv("CONFIG", 0x10 + 4 * i, 4)
    p.wrv("CONFIG", 0x30, 4, 0xffffffff)
    p.rdv("CONFIG", 0x30, 4)
    p.wrv("CONFIG", 0x30, 4, 0xfffff801)
    p.rdv("CONFIG", 0x30, 4)
    p.wrv("CONFIG", 0x30, 4, 0)
    p.wrv("CONFIG", 0x0c, 1, 0x10)
    p.wrv("CONFIG", 0x0d, 1, 0x40)
    p.rdv("CONFIG", 0x0c, 4)
    p.rdv("CONFIG", 0x40, 4)
    p.wrv("CONFIG", 0x40, 1, 0x11)
    p.wrv("CONFIG", 0x41, 1, 0x80)
    p.rdv("CONFIG", 0x40, 2)
    p.wrv("CONFIG", 0x42, 2, 0xffff)
    p.rdv("CONFIG", 0x42, 2)
    p.wrv("CONFIG", 0x42, 2, 0x0000)
    p.rdv("CONFIG", 0x42, 2)
    p.wrv("CONFIG", 0x44, 4, 0xffffffff)
    p.rdv("CONFIG", 0x44, 4)
    p.wrv("CONFIG", 0x48, 4, 0xffffffff)
    p.rdv("CONFIG", 0x48, 4)
    p.wrv("CONFIG", 0x4c, 2, 0xffff)
    p.rdv("CONFIG", 0x4c, 4)
    p.wrv("CONFIG", 0x44, 4, 0xfee00000)
    p.wrv("CONFIG", 0x48, 4, 0)
    p.wrv("CONFIG", 0x4c, 2, 0x4041)
    p.rdv("CONFIG", 0x44, 4)
    p.rdv("CONFIG", 0x4c, 2)
    p.rdv("CONFIG", 0x50, 4)
    p.wrv("CONFIG", 0x50, 4, 0xffffffff)
    p.rdv("CONFIG", 0x50, 4)
    p.wrv("CONFIG", 0xfc, 4, 0xffffffff)
    p.rdv("CONFIG", 0xfc, 4)
    p.dump("cfg(after)")
    assert p.lines == expected[first:last + 1]


def test_edu_driver_config_lines_match_the_kernel() -> None:
    expected = [line for line in (EXPECTED / "edu_driver.txt").read_text().splitlines()
                if line.startswith("config:")]
    edu, vc, hooks = open_edu()
    lines: list[str] = []
    seen: dict[str, int] = {}

    def note(label: str, text: str) -> None:
        n = seen[label] = seen.get(label, 0) + 1
        lines.append(f"{label if n == 1 else f'{label} #{n}'} = {text}")

    def cfg_read(off: int, size: int, name: str) -> int:
        value = u(vc, off, size)
        note(f"config: {name} (0x{off:02x}/{size})", f"0x{value:0{2 * size}x}")
        return value

    def cfg_write(off: int, size: int, value: int, name: str) -> None:
        note(f"config: write {name} (0x{off:02x}/{size}) 0x{value:0{2 * size}x}",
             str(w(vc, off, size, value)))

    for off, size, name in ((0, 2, "vendor"), (2, 2, "device"), (4, 2, "command"),
                            (6, 2, "status"), (8, 1, "revision"), (9, 1, "prog-if"),
                            (0xa, 2, "class"), (0xe, 1, "header type"), (0x10, 4, "BAR0"),
                            (0x14, 4, "BAR1"), (0x2c, 2, "subsystem vendor"),
                            (0x2e, 2, "subsystem device"), (0x3c, 1, "interrupt line"),
                            (0x3d, 1, "interrupt pin")):
        cfg_read(off, size, name)
    cmd = u(vc, 4, 2)
    pos = cfg_read(0x34, 1, "capability pointer")
    msi_pos = 0
    for i in range(4):
        if not pos:
            note(f"config: capability {i}", "end")
            continue
        cap_id, following = vc.read(pos, 2)
        note(f"config: capability {i}", f"id 0x{cap_id:02x} at 0x{pos:02x}, next 0x{following:02x}")
        msi_pos = pos if cap_id == 5 else msi_pos
        pos = following
    note("config: MSI control", f"0x{u(vc, msi_pos + 2, 2):04x}")
    bar0 = cfg_read(0x10, 4, "BAR0")
    cfg_write(0x10, 4, 0xffffffff, "BAR0")
    cfg_read(0x10, 4, "BAR0 (sizing)")
    cfg_write(0x10, 4, bar0, "BAR0")
    cfg_read(0x10, 4, "BAR0")
    cfg_write(0x04, 2, cmd | 0x6, "command")
    cfg_read(0x04, 2, "command")
    # SET_IRQS(MSI) enables MSI on the device; the user's virtual control word is unchanged.
    edu.host_enable_msi(1)
    hooks.msi = True
    vc.msi_vectors_enabled(1)
    cfg_read(0x42, 2, "MSI control")
    # The INTx part: MSI off, INTx masked on the device (the irqs layer's physical bit).
    edu.host_disable_msi()
    hooks.msi = False
    edu.config_write(COMMAND, 2, edu.command | COMMAND_INTX_DISABLE)
    cfg_read(0x04, 2, "command")
    cfg_write(0x04, 2, cmd & 0xffff & ~0x4, "command")
    assert lines == expected
    assert edu.command == 0x0503 and hooks.intx_changes == []


# --------------------------------------------------------------------------- open

def test_open_turns_bus_mastering_off_and_clears_the_physical_intx_disable() -> None:
    config = load_config(None).devices[0]
    edu = EduDevice(config)
    firmware_init(edu, config)
    edu.config_write(COMMAND, 2, edu.command | COMMAND_MASTER | COMMAND_INTX_DISABLE)
    saved = vfio_pci_enable(edu, reset_works=False)
    assert edu.command == 0x0103
    assert saved.header[1] & 0xFFFF == 0x0503     # saved before INTx Disable is cleared


def test_open_time_physical_intx_disable_is_hidden_and_never_written() -> None:
    edu, vc, hooks = open_edu()
    edu.config_write(COMMAND, 2, edu.command | COMMAND_INTX_DISABLE)   # the irqs layer masks
    assert u(vc, COMMAND, 2) == 0x0103
    w(vc, COMMAND, 2, 0x0107)
    assert edu.command & COMMAND_INTX_DISABLE                          # kept, not the user's
    assert hooks.intx_changes == []
    w(vc, COMMAND, 2, 0x0507)
    assert hooks.intx_changes == [True]
    edu.config_write(COMMAND, 2, edu.command & ~COMMAND_INTX_DISABLE)
    assert u(vc, COMMAND, 2) == 0x0507                                 # the user's bit
    assert not edu.command & COMMAND_INTX_DISABLE
    w(vc, COMMAND + 1, 1, 0x04)            # a byte write of the upper half acts as well
    assert hooks.intx_changes == [True]
    w(vc, COMMAND + 1, 1, 0x00)
    assert hooks.intx_changes == [True, False]


# --------------------------------------------------------------------------- splitting, errors

def test_reads_and_writes_split_like_vfio_config_do_rw() -> None:
    edu, vc, _ = open_edu()
    log: list[tuple[str, int, int]] = []
    real_read, real_write = edu.config_read, edu.config_write
    edu.config_read = lambda o, s: log.append(("r", o, s)) or real_read(o, s)  # type: ignore
    edu.config_write = lambda o, s, v: log.append(("w", o, s)) or real_write(o, s, v)  # type: ignore
    assert vc.read(0x4d, 7) == bytes([0, 0, 0, 0, 0, 0, 0])
    # 0x4d is the last MSI byte (data high, virtual), 0x4e-0x4f raw, then a dword at 0x50.
    assert log == [("r", 0x4e, 2), ("r", 0x50, 4)]
    log.clear()
    assert w(vc, 0x51, 7, 0xAABBCCDDEEFF11) == 7
    assert log == [("w", 0x51, 1), ("w", 0x52, 2), ("w", 0x54, 4)]
    assert u(vc, 0x50, 8) == 0xAABBCCDDEEFF1100
    with pytest.raises(KernelError) as e:
        vc.write(0xff, b"\x00\x00")
    assert e.value.errno == errno.EFAULT
    assert vc.read(0x100, 0) == b"" and vc.write(0x200, b"") == 0


def test_status_write_one_to_clear_bits_are_not_writable() -> None:
    edu, vc, _ = open_edu()
    edu.config.set(STATUS, 2, edu.config.get(STATUS, 2) | 0x8000)   # detected parity error
    w(vc, STATUS, 2, 0xffff)
    assert u(vc, STATUS, 2) == 0x8010


# --------------------------------------------------------------------------- command and BARs

def test_memory_enabled_follows_the_virtual_command_register() -> None:
    edu, vc, _ = open_edu()
    assert vc.memory_enabled and vc.io_enabled
    w(vc, COMMAND, 2, 0x0000)
    assert not vc.memory_enabled and not vc.io_enabled and not edu.memory_enabled
    # A write of the upper byte alone does not update the remembered decode bits.
    w(vc, COMMAND + 1, 1, 0x01)
    assert not vc.memory_enabled
    w(vc, COMMAND, 1, 0x02)
    assert vc.memory_enabled and edu.memory_enabled


def test_a_backdoor_reset_is_repaired_when_the_user_next_writes_the_command() -> None:
    edu, vc, _ = open_edu()
    edu.reset()                                   # vfio-pci did not see this one
    assert edu.config_read(BASE_ADDRESS_0, 4) == 0
    assert u(vc, BASE_ADDRESS_0, 4) == 0xfea00000  # the virtual BAR is unaffected
    w(vc, COMMAND, 2, 0x0103)
    assert edu.config_read(BASE_ADDRESS_0, 4) == 0xfea00000
    assert edu.memory_enabled


def _generic(bars: tuple[BarConfig, ...], **kw: int) -> DeviceConfig:
    return DeviceConfig("0000:00:05.0", 5, "generic", 0x1b36, 0x0005, 0xff00, 0x1af4, 0x1100,
                        0, bars, True, kw.get("msi", 0), kw.get("msix", 0))


def test_64_bit_prefetchable_and_io_bar_sizing() -> None:
    config = _generic((BarConfig(0, 0x100, io=True), BarConfig(2, 1 << 33, 64, True)))
    dev = GenericDevice(config)
    firmware_init(dev, config)
    vfio_pci_enable(dev, reset_works=False)
    vc = VirtualConfig(dev, FakeIrqs())
    assert u(vc, 0x10, 4) == 0xc001
    assert u(vc, 0x18, 8) == 0x8_0000_0000 | 0xc
    w(vc, 0x10, 4, 0xffffffff)
    w(vc, 0x18, 4, 0xffffffff)
    w(vc, 0x1c, 4, 0xffffffff)
    assert u(vc, 0x10, 4) == 0xffffff01
    assert u(vc, 0x18, 4) == 0x0000000c
    assert u(vc, 0x1c, 4) == 0xfffffffe
    assert u(vc, 0x14, 4) == 0 and u(vc, 0x20, 8) == 0


def test_a_bar_the_host_left_unassigned_reads_zero() -> None:
    config = load_config(None).devices[0]
    edu = EduDevice(config)
    vc = VirtualConfig(edu, FakeIrqs())            # no firmware: BAR0 is 0
    assert vc.resources == {}
    w(vc, 0x10, 4, 0xffffffff)
    assert u(vc, 0x10, 4) == 0
    resource = HostResource(0xfea00000, 1 << 20, False, False, True)
    vc = VirtualConfig(edu, FakeIrqs(), {0: resource})
    w(vc, 0x10, 4, 0xffffffff)
    assert u(vc, 0x10, 4) == 0xfff00008


# --------------------------------------------------------------------------- MSI

def test_msi_enable_reaches_the_device_only_when_set_irqs_enabled_msi() -> None:
    edu, vc, hooks = open_edu()
    w(vc, 0x42, 2, 0x0001)
    assert not edu.msi_enabled and u(vc, 0x42, 2) == 0x0000
    hooks.msi = True
    w(vc, 0x42, 2, 0x0081)
    assert edu.msi_enabled and u(vc, 0x42, 2) == 0x0081


def test_msi_queue_size_is_clamped_to_msi_qmax() -> None:
    config = _generic((BarConfig(0, 0x1000),), msi=4)
    dev = GenericDevice(config)
    firmware_init(dev, config)
    vfio_pci_enable(dev, reset_works=False)
    vc = VirtualConfig(dev, FakeIrqs())
    assert u(vc, 0x42, 2) == 0x0084                 # 64-bit, 4 vectors capable
    w(vc, 0x42, 1, 0x74)                            # the whole low byte is the user's
    assert u(vc, 0x42, 2) == 0x0004
    w(vc, 0x42, 1, 0xf4)
    assert u(vc, 0x42, 2) == 0x0084
    vc.msi_vectors_enabled(3)                       # fls(5) - 1 = 2
    assert vc.msi_qmax == 2
    w(vc, 0x42, 1, 0xf4)
    assert u(vc, 0x42, 2) == 0x00a4
    assert dev.config_read(0x42, 2) == 0x00a4       # written to the device too
    dev.config_write(0x42, 2, 0x0084)
    w(vc, 0x41, 1, 0x00)                            # the next pointer's piece reaches the flags
    assert dev.config_read(0x42, 2) == 0x00a4
    with pytest.raises(ValueError):
        vc.msi_vectors_enabled(0)


def test_msi_qmax_lands_in_the_capability_id_byte_of_vconfig() -> None:
    edu, vc, _ = open_edu()
    vc.msi_vectors_enabled(2)
    vc.read(0x42, 2)
    assert vc.vconfig[0x40] == 0x05 & ~0x0e | 0x02
    assert vc.read(0x40, 1) == b"\x05"              # the ID itself comes from the device


def test_per_vector_mask_bits_are_written_to_the_device() -> None:
    identity = Identity(0x1b36, 0x0005, 0xff00)
    fn = PciFunction("0000:00:06.0", identity, [Bar(0, 0x1000, BarKind.MEM32)],
                     msi=MsiCapability(0x40, 4, False, True))
    vc = VirtualConfig(fn, FakeIrqs())
    assert vc.map[0x40 + 19] == 5 and vc.map[0x40 + 20] == MAP_UNASSIGNED
    w(vc, 0x4c, 4, 0xffffffff)                      # mask (32-bit layout): 4 vectors
    assert fn.config_read(0x4c, 4) == 0xf and u(vc, 0x4c, 4) == 0xf
    w(vc, 0x48, 2, 0x1234)                          # data, virtual
    assert u(vc, 0x48, 2) == 0x1234 and fn.config_read(0x48, 2) == 0


# --------------------------------------------------------------------------- capabilities

def test_msix_capability_is_read_only_and_shows_the_device() -> None:
    config = _generic((BarConfig(0, 0x1000),), msix=4)
    dev = GenericDevice(config)
    firmware_init(dev, config)
    vfio_pci_enable(dev, reset_works=False)
    vc = VirtualConfig(dev, FakeIrqs())
    assert vc.read(0x40, 4) == bytes([0x11, 0x00, 0x03, 0x00])
    w(vc, 0x42, 2, 0xc003)
    assert not dev.msix_enabled and u(vc, 0x42, 2) == 0x0003
    dev.host_enable_msix(1)
    assert u(vc, 0x42, 2) == 0x8003


def _with_caps(*caps: tuple[int, int, int]) -> PciFunction:
    """A function whose list holds (id, offset, next) capabilities written straight into its
    config space (what a device with other capabilities would present)."""
    fn = PciFunction("0000:00:07.0", Identity(0x1b36, 0x0005, 0xff00), [])
    fn.config.set(STATUS, 2, 0x10)
    fn.config.set(0x34, 1, caps[0][1])
    for cap_id, offset, following in caps:
        fn.config.set(offset, 1, cap_id)
        fn.config.set(offset + 1, 1, following)
    return fn


def test_unknown_capabilities_are_unlinked_and_vendor_ones_pass_writes() -> None:
    fn = _with_caps((0x0f, 0x40, 0x50), (0x09, 0x50, 0x60), (0x04, 0x60, 0x00))
    fn.config.set(0x52, 1, 8)                       # vendor capability of 8 bytes
    vc = VirtualConfig(fn, FakeIrqs())
    assert u(vc, 0x34, 1) == 0x50
    assert vc.read(0x50, 2) == b"\x09\x00"          # next virtual: the hidden 0x60 unlinked
    assert vc.read(0x51, 1) == b"\x00"
    assert fn.config_read(0x51, 1) == 0x60
    w(vc, 0x54, 4, 0x12345678)                      # vendor: raw write
    assert fn.config_read(0x54, 4) == 0x12345678
    assert vc.map[0x40] == MAP_UNASSIGNED           # the hidden capability's bytes are raw
    fn2 = _with_caps((0x0f, 0x40, 0x00))
    vc2 = VirtualConfig(fn2, FakeIrqs())
    assert u(vc2, STATUS, 2) == 0                   # nothing left: Capabilities List cleared
    assert u(vc2, 0x34, 1) == 0                     # the hidden first one unlinked too


def test_known_fixed_length_capability_drops_writes() -> None:
    fn = _with_caps((0x01, 0x40, 0x00))             # power management, 8 bytes
    vc = VirtualConfig(fn, FakeIrqs())
    assert all(b == 1 for b in vc.map[0x40:0x48]) and vc.map[0x48] == MAP_UNASSIGNED
    w(vc, 0x44, 4, 0xffffffff)
    assert fn.config_read(0x44, 4) == 0
    assert capability_length(fn, 0x00, 0x40) == 0
    with pytest.raises(ValueError):
        capability_length(_with_caps((0x10, 0x40, 0x00)), 0x10, 0x40)


# --------------------------------------------------------------------------- reset and close

def test_reset_function_restores_the_config_and_host_msi() -> None:
    config = _generic((BarConfig(0, 0x1000, address=0xfe000000),), msi=1)
    dev = GenericDevice(config)
    firmware_init(dev, config)
    vfio_pci_enable(dev, reset_works=True)
    vc = VirtualConfig(dev, FakeIrqs())
    dev.host_enable_msi(1, data=0x4055)
    w(vc, COMMAND, 2, 0x0107)
    reset_function(dev)
    assert dev.config_read(0x10, 4) == 0xfe000000 and dev.command == 0x0107
    assert dev.msi_enabled and dev.config_read(0x4c, 2) == 0x4055
    assert u(vc, 0x42, 2) == 0x0080                 # vconfig untouched


def test_close_restores_the_state_of_open() -> None:
    edu, vc, _ = open_edu()
    saved = SavedState.capture(edu)
    w(vc, COMMAND, 2, 0x0507)
    w(vc, 0x0c, 1, 0x40)
    w(vc, 0x50, 4, 0xffffffff)
    vfio_pci_disable(edu, saved, reset_works=False)
    assert edu.command == 0x0103 and edu.config_read(0x0c, 1) == 0
    assert edu.config_read(0x50, 4) == 0xffffffff   # beyond the header: not saved
    edu.config_write(COMMAND, 2, 0x0107)
    vfio_pci_disable(edu, saved, reset_works=True)
    assert edu.command == 0x0103 and edu.config_read(0x50, 4) == 0
