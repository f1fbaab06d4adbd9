"""The state firmware and the host kernel leave a PCI function in before vfio-pci opens it.

A function fresh from power-on has its BARs at 0, decoding off and no interrupt line. On the
reference machine (QEMU q35 with SeaBIOS, Linux host) the BIOS assigned addresses and an IRQ and
turned decoding on (SeaBIOS pci_bios_init_device / pci_region_map_entries), and Linux kept them.
vfio-pci's virtual view at open is a copy of that state, so the emulation must reproduce it:
edu reads command 0x0103, BAR0 0xfea00000 and interrupt line 0x0a in the VM.

What :func:`firmware_init` programs, deterministically:

* **BARs**: the configured ``address`` of a BAR when there is one; otherwise an address from a
  :class:`BarAllocator`: 32-bit memory BARs downward from 0xfec00000 (the IOAPIC; the q35 PCI
  hole ends there), each aligned to its size; 64-bit memory BARs upward from 32 GiB (our choice:
  always above 4 GiB, where a 64-bit hole would be); I/O BARs upward from 0xc000 (as SeaBIOS)
  below 0x10000. Explicit addresses are reserved before anything is allocated, so automatic
  BARs never overlap them. BARs the configuration does not list (a generic device's MSI-X BAR)
  are allocated too.
* **Command**: I/O Space, Memory Space and SERR# Enable (0x0103), what SeaBIOS sets on every
  device; bus mastering stays off (no driver asked for it).
* **Interrupt line**: the configured ``interrupt_line``; otherwise, for a function with an
  interrupt pin, SeaBIOS's q35/i440fx swizzle onto PIRQ links routed to IRQs 10, 10, 11, 11:
  ``(10, 10, 11, 11)[(pin - 1 + slot) & 3]`` (edu at slot 1, pin A: 10). No pin: left at 0.

Use :func:`firmware_init_machine` for all devices of a configuration at once (one allocator, so
devices do not overlap); :func:`firmware_init` alone reserves only the function's own explicit
addresses.
"""
from __future__ import annotations

from ..config import DeviceConfig
from .pci import (BASE_ADDRESS_0, COMMAND, COMMAND_IO, COMMAND_MEMORY, COMMAND_SERR,
                  INTERRUPT_LINE, Bar, PciFunction)

MEM32_TOP = 0xFEC00000          # 32-bit BARs are allocated downward from here (exclusive)
MEM32_BOTTOM = 0x80000000       # ... and not below the start of the q35 PCI hole
MEM64_BASE = 0x8_0000_0000      # 64-bit BARs are allocated upward from 32 GiB
IO_BASE = 0xC000                # I/O BARs upward from here (SeaBIOS)
IO_TOP = 0x10000

FIRMWARE_COMMAND = COMMAND_IO | COMMAND_MEMORY | COMMAND_SERR
PIRQ_IRQS = (10, 10, 11, 11)


class BarAllocator:
    """Hands out BAR addresses that overlap neither each other nor reserved (explicit) ones."""

    def __init__(self) -> None:
        self._used: list[tuple[int, int, bool]] = []      # (start, end exclusive, io)
        self._mem32_next = MEM32_TOP
        self._mem64_next = MEM64_BASE
        self._io_next = IO_BASE

    def reserve(self, start: int, size: int, io: bool) -> None:
        """Claim an explicit range; ValueError if it overlaps one already claimed."""
        if self._overlaps(start, size, io):
            raise ValueError(f"{'I/O' if io else 'memory'} range {start:#x}+{size:#x} overlaps "
                             f"another BAR")
        self._used.append((start, start + size, io))

    def _overlaps(self, start: int, size: int, io: bool) -> bool:
        return any(kind == io and start < end and start + size > begin
                   for begin, end, kind in self._used)

    def allocate(self, bar: Bar) -> int:
        """The next free, size-aligned address for ``bar`` in its window."""
        size = bar.size
        if bar.is_io:
            address = (self._io_next + size - 1) & ~(size - 1)
            while self._overlaps(address, size, True):
                address += size
            if address + size > IO_TOP:
                raise ValueError(f"BAR{bar.index}: no room for {size:#x} bytes of I/O space")
            self._io_next = address + size
        elif bar.is_64:
            address = (self._mem64_next + size - 1) & ~(size - 1)
            while self._overlaps(address, size, False):
                address += size
            self._mem64_next = address + size
        else:
            address = (self._mem32_next - size) & ~(size - 1)
            while address >= MEM32_BOTTOM and self._overlaps(address, size, False):
                address -= size
            if address < MEM32_BOTTOM:
                raise ValueError(f"BAR{bar.index}: no room for {size:#x} bytes below "
                                 f"{MEM32_TOP:#x}")
            self._mem32_next = address
        self._used.append((address, address + size, bar.is_io))
        return address


def _explicit_addresses(config: DeviceConfig) -> dict[int, int]:
    return {bar.index: bar.address for bar in config.bars if bar.address is not None}


def reserve_explicit(allocator: BarAllocator, function: PciFunction,
                     config: DeviceConfig) -> None:
    """Reserve the configured addresses of ``function``'s BARs in ``allocator``."""
    for index, address in _explicit_addresses(config).items():
        bar = function.bars.get(index)
        if bar is not None:
            allocator.reserve(address, bar.size, bar.is_io)


def default_interrupt_line(function: PciFunction, bdf: str) -> int:
    """SeaBIOS's line for a function on bus 0: its pin swizzled by slot onto IRQs 10/10/11/11;
    0 without a pin."""
    if not function.interrupt_pin:
        return 0
    slot = int(bdf.split(":")[2].split(".")[0], 16)
    return PIRQ_IRQS[(function.interrupt_pin - 1 + slot) & 3]


def firmware_init(function: PciFunction, config: DeviceConfig,
                  allocator: BarAllocator | None = None) -> None:
    """Program ``function`` as firmware left it: BAR addresses, interrupt line, command.
    With no ``allocator``, a private one holding this function's explicit addresses."""
    if allocator is None:
        allocator = BarAllocator()
        reserve_explicit(allocator, function, config)
    explicit = _explicit_addresses(config)
    for index in sorted(function.bars):
        bar = function.bars[index]
        address = explicit.get(index)
        if address is None:
            address = allocator.allocate(bar)
        at = BASE_ADDRESS_0 + 4 * index
        function.config_write(at, 4, address & 0xFFFFFFFF)
        if bar.is_64:
            function.config_write(at + 4, 4, address >> 32)
    line = config.interrupt_line if config.interrupt_line is not None \
        else default_interrupt_line(function, config.bdf)
    function.config_write(INTERRUPT_LINE, 1, line)
    function.config_write(COMMAND, 2, function.config_read(COMMAND, 2) | FIRMWARE_COMMAND)


def firmware_init_machine(devices: list[tuple[PciFunction, DeviceConfig]]) -> None:
    """Initialise every function of a machine with one allocator: all explicit addresses are
    reserved first (ValueError on an overlap), then the rest is allocated in list order."""
    allocator = BarAllocator()
    for function, config in devices:
        reserve_explicit(allocator, function, config)
    for function, config in devices:
        firmware_init(function, config, allocator)
