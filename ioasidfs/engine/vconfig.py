"""vfio-pci's virtualised PCI config space: what a VFIO user reads and writes in the CONFIG region
of a device fd (drivers/vfio/pci/vfio_pci_config.c), on top of the physical function of
:mod:`ioasidfs.devices.pci`.

The user never sees the hardware directly. At open (``vfio_config_init``) vfio-pci copies the
standard header and every capability it knows into a *virtual* config space (``vconfig``) and
builds a map saying which capability owns each byte. Every access is then cut into naturally
aligned pieces of 1, 2 or 4 bytes that stay inside one dword and one capability
(``vfio_config_do_rw``) and each piece is handled by the permission table of its owner:

* a **virtual** bit is read from and written to ``vconfig`` only;
* a **writable, non-virtual** bit is read-modify-written on the device;
* any other bit reads from the device and ignores writes.

What follows from the tables, and what the reference VM showed (tests/expected/*.notes.md):

* IDs are virtual and read-only; class, revision, header type, subsystem IDs and the status
  register come from the device and cannot be written (not even the status register's
  write-1-to-clear bits); the capability pointer and the status register's Capabilities List bit
  are virtual, so capabilities vfio-pci does not know are unlinked from the list the user walks.
* The command register goes to the device, except INTx Disable, which is virtual in both
  directions: the user's bit drives :meth:`IrqConfigHooks.config_intx_disable` (vfio-pci masks
  INTx with the *physical* bit, which the interrupts layer owns) and the physical bit is never
  shown. The last Memory/I/O enable the user wrote is remembered in ``vconfig``; that is what
  :attr:`VirtualConfig.memory_enabled` reports and what the BAR access path tests.
* BARs and the ROM BAR are entirely virtual (``vfio_bar_fixup``): a read returns what the user
  wrote masked to the BAR's size with the host's flag bits, so all-ones sizing works without
  touching the device; a BAR the host did not assign (address 0) and the ROM (no model has one)
  read 0. A user write of the command register restores the physical BARs if the device lost
  them (``vfio_bar_restore``: a reset vfio-pci did not see).
* Cache line size, latency timer and BIST are written to the device (which decides what sticks:
  QEMU keeps the cache line size and drops the others); interrupt line is virtual and writable,
  interrupt pin virtual and read-only.
* MSI: the low byte of Message Control, address and data are virtual; a write of Message Control
  writes the flags back to the device with Enable cleared unless MSI is enabled through
  VFIO_DEVICE_SET_IRQS and the Multiple Message Enable clamped to ``msi_qmax``. The kernel's
  read-side update of Multiple Message Capable writes the *capability ID* byte of ``vconfig``
  (``vfio_msi_config_read`` indexes ``vconfig[start]``, not ``start + PCI_MSI_FLAGS``), so user
  writes of the capable bits stick: writing 0xffff reads back 0x8e. Reproduced on purpose.
* MSI-X and other known capabilities read from the device (ID and next pointer from ``vconfig``)
  and drop writes; vendor-specific capabilities pass writes through.
* Bytes no capability covers go to the device raw, both ways (some devices hide registers there).

Scope: conventional 256-byte config space (no extended capabilities: no model has PCIe). The
PM, VPD, PCI-X, PCIe and AF capabilities' write handlers are not emulated; no model has them, and
:func:`capability_length` refuses the variable-length ones it cannot size. The virtual config
space is per open (``vfio_config_init`` at ``vfio_pci_core_enable``); :class:`SavedState`,
:func:`reset_function`, :func:`vfio_pci_enable` and :func:`vfio_pci_disable` are the physical side
of open, close and VFIO_DEVICE_RESET (the latter leaves ``vconfig`` alone, as the kernel does).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Protocol

from ..devices.pci import (BAR_MEM_PREFETCH, BAR_MEM_TYPE_64, BAR_SPACE_IO, BASE_ADDRESS_0,
                           BIST, CACHE_LINE_SIZE, CAP_ID_MSI, CAP_ID_MSIX, CAPABILITY_LIST,
                           COMMAND, COMMAND_INTX_DISABLE, COMMAND_IO, COMMAND_MASTER,
                           COMMAND_MEMORY, CONFIG_SPACE_SIZE, DEVICE_ID, HEADER_SIZE,
                           INTERRUPT_LINE, INTERRUPT_PIN, LATENCY_TIMER, MSI_FLAGS,
                           MSI_FLAGS_64BIT, MSI_FLAGS_ENABLE, MSI_FLAGS_MASKBIT, MSI_FLAGS_QMASK,
                           MSI_FLAGS_QSIZE, ROM_ADDRESS, STATUS, STATUS_CAP_LIST, VENDOR_ID,
                           PciFunction, decode_bar)
from ..errors import KernelError

# --------------------------------------------------------------------------- the config map

#: The map's marker for the standard header (the kernel's fake PCI_CAP_ID_BASIC).
MAP_BASIC = 0
#: The map's marker for bytes no capability covers (PCI_CAP_ID_INVALID): raw access.
MAP_UNASSIGNED = 0xFF

_CAP_ID_PM = 0x01
_CAP_ID_AGP = 0x02
_CAP_ID_VPD = 0x03
_CAP_ID_PCIX = 0x07
_CAP_ID_HT = 0x08
_CAP_ID_VNDR = 0x09
_CAP_ID_EXP = 0x10
_CAP_ID_SATA = 0x12
_CAP_ID_AF = 0x13
_CAP_ID_MAX = 0x15             # PCI_CAP_ID_EA

#: pci_cap_length: how many bytes vfio-pci gives a capability; 0 hides it from the user's list,
#: None means "read the length from the capability" (variable). IDs not listed are hidden.
_FIXED_CAP_LENGTH: dict[int, int | None] = {
    _CAP_ID_PM: 8,                 # PCI_PM_SIZEOF
    _CAP_ID_AGP: 12,               # PCI_AGP_SIZEOF
    _CAP_ID_VPD: 8,                # PCI_CAP_VPD_SIZEOF
    CAP_ID_MSI: None,              # 10, 14, 20 or 24
    _CAP_ID_PCIX: None,
    _CAP_ID_HT: None,
    _CAP_ID_VNDR: None,            # its own length byte
    _CAP_ID_EXP: None,
    CAP_ID_MSIX: 12,               # PCI_CAP_MSIX_SIZEOF
    _CAP_ID_SATA: None,
    _CAP_ID_AF: 6,                 # PCI_CAP_AF_SIZEOF
}

_BAR_OFFSETS = tuple(BASE_ADDRESS_0 + 4 * i for i in range(6))
_ALL_ONES = 0xFFFFFFFF


def _is_bar(offset: int) -> bool:
    """The kernel's is_bar(): BAR0..BAR5 and the ROM BAR (offsets within the header)."""
    return BASE_ADDRESS_0 <= offset < BASE_ADDRESS_0 + 24 or ROM_ADDRESS <= offset < ROM_ADDRESS + 4


def _mask(count: int) -> int:
    return (1 << (8 * count)) - 1


def msi_cap_length_from_flags(flags: int) -> int:
    """vfio_msi_cap_len: 10 bytes, +4 with 64-bit addresses, +10 with per-vector masking."""
    return 10 + (4 if flags & MSI_FLAGS_64BIT else 0) + (10 if flags & MSI_FLAGS_MASKBIT else 0)


def capability_length(function: PciFunction, cap_id: int, pos: int) -> int:
    """How many config bytes vfio-pci assigns to capability ``cap_id`` at ``pos`` (0: hidden).

    ID 0 and IDs the kernel does not list are hidden; MSI and vendor-specific capabilities are
    sized from their own registers. PCI-X, HyperTransport, PCIe and SATA would need the
    kernel's per-version rules; no model has them, so they are refused rather than guessed.
    """
    if cap_id == 0 or cap_id > _CAP_ID_MAX or cap_id not in _FIXED_CAP_LENGTH:
        return 0
    fixed = _FIXED_CAP_LENGTH[cap_id]
    if fixed is not None:
        return fixed
    if cap_id == CAP_ID_MSI:
        return msi_cap_length_from_flags(function.config_read(pos + MSI_FLAGS, 2))
    if cap_id == _CAP_ID_VNDR:
        return function.config_read(pos + 2, 1)
    raise ValueError(f"{function.name}: capability {cap_id:#x} at {pos:#x} is not emulated "
                     f"by the vfio config layer")


# --------------------------------------------------------------------------- permission tables

class PermBits:
    """One capability's permission table: per byte, which bits are virtual (kept in vconfig) and
    which are writable. Sized in whole dwords, like alloc_perm_bits, so an access running past a
    capability's defined fields finds zeros (read from the device, not writable)."""

    def __init__(self, length: int) -> None:
        size = (length + 3) & ~3
        self.virt = bytearray(size)
        self.write = bytearray(size)

    def set(self, offset: int, size: int, virt: int, write: int) -> None:
        """p_setb / p_setw / p_setd."""
        self.virt[offset:offset + size] = (virt & _mask(size)).to_bytes(size, "little")
        self.write[offset:offset + size] = (write & _mask(size)).to_bytes(size, "little")

    def virt_bits(self, offset: int, count: int) -> int:
        return int.from_bytes(self.virt[offset:offset + count].ljust(count, b"\0"), "little")

    def write_bits(self, offset: int, count: int) -> int:
        return int.from_bytes(self.write[offset:offset + count].ljust(count, b"\0"), "little")


def _basic_perms() -> PermBits:
    """init_pci_cap_basic_perm."""
    perm = PermBits(HEADER_SIZE)
    perm.set(VENDOR_ID, 2, 0xFFFF, 0)
    perm.set(DEVICE_ID, 2, 0xFFFF, 0)
    perm.set(COMMAND, 2, COMMAND_INTX_DISABLE, 0xFFFF)
    perm.set(STATUS, 2, STATUS_CAP_LIST, 0)
    perm.set(CACHE_LINE_SIZE, 1, 0, 0xFF)
    perm.set(LATENCY_TIMER, 1, 0, 0xFF)
    perm.set(BIST, 1, 0, 0xFF)
    for offset in _BAR_OFFSETS + (ROM_ADDRESS,):
        perm.set(offset, 4, _ALL_ONES, _ALL_ONES)
    perm.set(CAPABILITY_LIST, 1, 0xFF, 0)
    perm.set(INTERRUPT_LINE, 1, 0xFF, 0xFF)
    perm.set(INTERRUPT_PIN, 1, 0xFF, 0)
    return perm


def _msi_perms(length: int, flags: int) -> PermBits:
    """init_pci_cap_msi_perm: next pointer virtual; the low byte of Message Control, address and
    data virtual and writable; mask and pending bits writable on the device."""
    perm = PermBits(length)
    perm.set(1, 1, 0xFF, 0)
    perm.set(MSI_FLAGS, 1, 0xFF, 0xFF)
    perm.set(4, 4, _ALL_ONES, _ALL_ONES)
    if flags & MSI_FLAGS_64BIT:
        perm.set(8, 4, _ALL_ONES, _ALL_ONES)
        perm.set(12, 2, 0xFFFF, 0xFFFF)
        if flags & MSI_FLAGS_MASKBIT:
            perm.set(16, 4, 0, _ALL_ONES)
            perm.set(20, 4, 0, _ALL_ONES)
    else:
        perm.set(8, 2, 0xFFFF, 0xFFFF)
        if flags & MSI_FLAGS_MASKBIT:
            perm.set(12, 4, 0, _ALL_ONES)
            perm.set(16, 4, 0, _ALL_ONES)
    return perm


_BASIC_PERMS = _basic_perms()


# --------------------------------------------------------------------------- interfaces

class IrqConfigHooks(Protocol):
    """What the config layer needs from the interrupts layer (engine/irqs.py, VfioPciIrqs)."""

    def config_intx_disable(self, disabled: bool) -> None:
        """The user set (True) or cleared (False) INTx Disable in the virtual command register:
        vfio_pci_intx_mask / vfio_pci_intx_unmask. Called on a change only."""

    def msi_enabled(self) -> bool:
        """MSI is enabled through VFIO_DEVICE_SET_IRQS (is_msi)."""

    def msix_enabled(self) -> bool:
        """MSI-X is enabled through VFIO_DEVICE_SET_IRQS (is_msix)."""


@dataclass(frozen=True)
class HostResource:
    """What the host kernel's pci_dev resource says about one BAR: where it put it, how big, and
    its flags. vfio_bar_fixup builds the virtual BAR from this, not from the register."""

    start: int
    size: int
    io: bool
    is_64: bool
    prefetchable: bool

    @property
    def flag_bits(self) -> int:
        """vfio_generate_bar_flags."""
        if self.io:
            return BAR_SPACE_IO
        return (BAR_MEM_PREFETCH if self.prefetchable else 0) | (BAR_MEM_TYPE_64 if self.is_64
                                                                 else 0)


def host_resources(function: PciFunction) -> dict[int, HostResource]:
    """The host's resources of ``function``'s BARs: each implemented BAR at the address in its
    physical register (the one firmware programmed and the host kept). A BAR whose register
    holds 0 is unassigned, and absent here."""
    resources: dict[int, HostResource] = {}
    for bar in function.bars.values():
        at = BASE_ADDRESS_0 + 4 * bar.index
        low = function.config_read(at, 4)
        high = function.config_read(at + 4, 4) if bar.is_64 else 0
        address = decode_bar(low, high).address
        if address:
            resources[bar.index] = HostResource(address, bar.size, bar.is_io, bar.is_64,
                                                bar.prefetchable)
    return resources


# --------------------------------------------------------------------------- the layer

class VirtualConfig:
    """The CONFIG region of one open vfio-pci device.

    ``read``/``write`` take an offset inside the region (the device fd's offset with the region
    index stripped, VFIO_PCI_OFFSET_MASK) and behave as vfio_pci_config_rw. The caller serialises
    access (the engine lock); the function's own lock guards each physical access.
    """

    def __init__(self, function: PciFunction, hooks: IrqConfigHooks,
                 resources: dict[int, HostResource] | None = None) -> None:
        """vfio_config_init. ``resources`` defaults to :func:`host_resources` of the function."""
        self.function = function
        self.hooks = hooks
        self.size = CONFIG_SPACE_SIZE
        self.resources = host_resources(function) if resources is None else resources
        self.vconfig = bytearray(CONFIG_SPACE_SIZE)
        self.map = bytearray([MAP_BASIC] * HEADER_SIZE
                             + [MAP_UNASSIGNED] * (CONFIG_SPACE_SIZE - HEADER_SIZE))
        #: virq_disabled: the user's INTx Disable as last acted upon.
        self.intx_disabled = False
        #: vdev->msi_qmax: log2 of the MSI vectors last enabled through SET_IRQS (see
        #: :meth:`msi_vectors_enabled`); bounds the Multiple Message Enable a user may write.
        self.msi_qmax = 0
        self._msi_perm: PermBits | None = None
        self._fill(0, HEADER_SIZE)
        self._bar_dirty = True
        #: vdev->rbar: the physical BARs and ROM BAR at open, restored after a hidden reset.
        self.saved_bars = tuple(self._vget(at, 4) for at in _BAR_OFFSETS + (ROM_ADDRESS,))
        self._init_capabilities()

    # ----------------------------------------------------------------- init

    def _vget(self, offset: int, size: int) -> int:
        return int.from_bytes(self.vconfig[offset:offset + size], "little")

    def _vset(self, offset: int, size: int, value: int) -> None:
        self.vconfig[offset:offset + size] = (value & _mask(size)).to_bytes(size, "little")

    def _fill(self, offset: int, size: int) -> None:
        """vfio_fill_vconfig_bytes: copy physical bytes in the largest aligned chunks."""
        end = offset + size
        while offset < end:
            left = end - offset
            step = 4 if left >= 4 and not offset % 4 else 2 if left >= 2 and not offset % 2 else 1
            self._vset(offset, step, self.function.config_read(offset, step))
            offset += step

    def _init_capabilities(self) -> None:
        """vfio_cap_init: walk the physical list, size each capability, hide the unknown ones by
        relinking the previous next pointer in vconfig, mark the map, copy the bytes."""
        f = self.function
        if not f.config_read(STATUS, 2) & STATUS_CAP_LIST:
            return
        pos = f.config_read(CAPABILITY_LIST, 1)
        prev = CAPABILITY_LIST
        loops = (CONFIG_SPACE_SIZE - HEADER_SIZE) // 4
        found = 0
        while pos and loops:
            loops -= 1
            cap_id = f.config_read(pos, 1)
            following = f.config_read(pos + 1, 1) if pos + 1 < CONFIG_SPACE_SIZE else 0
            length = capability_length(f, cap_id, pos)
            if not length:
                self.vconfig[prev] = following
                pos = following
                continue
            # The kernel trusts the device not to run a capability past the end; we clip.
            length = min(length, CONFIG_SPACE_SIZE - pos)
            if cap_id == CAP_ID_MSI and self._msi_perm is None:
                flags = f.config_read(pos + MSI_FLAGS, 2)
                self._msi_perm = _msi_perms(msi_cap_length_from_flags(flags), flags)
            self.map[pos:pos + length] = bytes([cap_id]) * length
            self._fill(pos, length)
            prev = pos + 1
            pos = following
            found += 1
        if not found:
            self._vset(STATUS, 2, self._vget(STATUS, 2) & ~STATUS_CAP_LIST)

    # ----------------------------------------------------------------- state for other layers

    @property
    def memory_enabled(self) -> bool:
        """__vfio_pci_memory_enabled: the Memory Space bit of the *virtual* command register
        (the last one the user wrote, the physical one at open). vfio_pci_bar_rw and mmap
        faults of memory BARs (and the ROM) fail EIO without it. No power states are emulated,
        so the D3 half of the kernel's test is always satisfied."""
        return bool(self._vget(COMMAND, 2) & COMMAND_MEMORY)

    @property
    def io_enabled(self) -> bool:
        """The virtual I/O Space bit. The kernel tracks it for the hidden-reset check only; it
        does not gate I/O BAR accesses (vfio_pci_bar_rw tests memory BARs alone)."""
        return bool(self._vget(COMMAND, 2) & COMMAND_IO)

    def msi_vectors_enabled(self, vectors: int) -> None:
        """The interrupts layer enabled ``vectors`` MSI vectors (vfio_msi_enable sets
        ``msi_qmax = fls(nvec * 2 - 1) - 1``). It stays after MSI is disabled, as in the kernel."""
        if vectors < 1:
            raise ValueError("MSI needs at least one vector")
        self.msi_qmax = (vectors * 2 - 1).bit_length() - 1

    def capability_start(self, pos: int) -> int:
        """vfio_find_cap_start: the first byte of the capability owning ``pos`` (0 for the
        header)."""
        cap = self.map[pos]
        if cap == MAP_BASIC:
            return 0
        while pos - 1 >= HEADER_SIZE and self.map[pos - 1] == cap:
            pos -= 1
        return pos

    # ----------------------------------------------------------------- region access

    def read(self, offset: int, count: int) -> bytes:
        """pread of the CONFIG region: ``count`` bytes at ``offset``."""
        out = bytearray()
        while len(out) < count:
            out += self._do_rw(offset + len(out), count - len(out), None)
        return bytes(out)

    def write(self, offset: int, data: bytes) -> int:
        """pwrite of the CONFIG region; returns the bytes written (all of them)."""
        done = 0
        while done < len(data):
            done += len(self._do_rw(offset + done, len(data) - done, data[done:]))
        return done

    def _chunk(self, pos: int, count: int) -> int:
        """The piece vfio_config_do_rw handles next: within one dword and one capability
        (vfio_pci_cap_remaining_dword), then the largest naturally aligned 4, 2 or 1."""
        cap = self.map[pos]
        remaining = 1
        while (pos + remaining) % 4 and self.map[pos + remaining] == cap:
            remaining += 1
        count = min(count, remaining)
        if count >= 4 and not pos % 4:
            return 4
        if count >= 2 and not pos % 2:
            return 2
        return 1

    def _do_rw(self, pos: int, count: int, data: bytes | None) -> bytes:
        """One piece; returns the bytes read, or the bytes consumed by a write."""
        if pos < 0 or pos >= self.size or pos + count > self.size:
            raise KernelError(errno.EFAULT, f"config access of {count} bytes at {pos:#x} "
                              f"is outside the {self.size}-byte config space")
        count = self._chunk(pos, count)
        cap = self.map[pos]
        start = 0 if cap == MAP_BASIC else pos if cap == MAP_UNASSIGNED else \
            self.capability_start(pos)
        offset = pos - start
        if data is not None:
            value = int.from_bytes(data[:count], "little")
            if cap == MAP_BASIC:
                self._basic_write(pos, count, value)
            elif cap == MAP_UNASSIGNED or cap == _CAP_ID_VNDR:
                self.function.config_write(pos, count, value)
            elif cap == CAP_ID_MSI:
                self._msi_write(pos, count, offset, value)
            # Every other capability has no write handler: the write is dropped.
            return data[:count]
        if cap == MAP_BASIC:
            value = self._basic_read(pos, count)
        elif cap == MAP_UNASSIGNED:
            value = self.function.config_read(pos, count)
        elif cap == CAP_ID_MSI:
            value = self._msi_read(pos, count, offset)
        else:
            value = self._direct_read(pos, count, offset)
        return value.to_bytes(count, "little")

    # ----------------------------------------------------------------- default handlers

    def _default_read(self, pos: int, count: int, perm: PermBits, offset: int) -> int:
        """vfio_default_config_read: virtual bits from vconfig, the rest from the device (which
        is not read at all when every bit is virtual)."""
        value = self._vget(pos, count)
        virt = perm.virt_bits(offset, count)
        if virt != _mask(count):
            value = (self.function.config_read(pos, count) & ~virt) | (value & virt)
        return value

    def _default_write(self, pos: int, count: int, perm: PermBits, offset: int,
                       value: int) -> None:
        """vfio_default_config_write: writable virtual bits to vconfig, writable physical bits
        read-modify-written on the device; nothing writable, nothing happens."""
        write = perm.write_bits(offset, count)
        if not write:
            return
        virt = perm.virt_bits(offset, count)
        if write & virt:
            self._vset(pos, count, (self._vget(pos, count) & ~(write & virt))
                       | (value & write & virt))
        physical = write & ~virt & _mask(count)
        if physical:
            current = self.function.config_read(pos, count)
            self.function.config_write(pos, count, (current & ~physical) | (value & physical))

    def _direct_read(self, pos: int, count: int, offset: int) -> int:
        """vfio_direct_config_read: a capability read from the device, except its ID and next
        pointer, which come from vconfig (so hidden capabilities stay unlinked)."""
        value = self.function.config_read(pos, count)
        if pos >= HEADER_SIZE:
            if offset == 0 and count > 1:
                keep = min(2, count)
                value = (value & ~_mask(keep)) | self._vget(pos, keep)
            elif offset == 1:
                value = (value & ~0xFF) | self.vconfig[pos]
        return value

    # ----------------------------------------------------------------- the standard header

    def _bar_fixup(self) -> None:
        """vfio_bar_fixup: make the virtual BARs behave like hardware (sizing), from the host's
        resources; unassigned BARs and the ROM read 0. Runs only after a BAR write."""
        if not self._bar_dirty:
            return
        index = 0
        while index < 6:
            at = _BAR_OFFSETS[index]
            resource = self.resources.get(index)
            if resource is None:
                self._vset(at, 4, 0)
                index += 1
                continue
            mask = ~(resource.size - 1) & ((1 << 64) - 1)
            low = (self._vget(at, 4) & mask & _ALL_ONES) | resource.flag_bits
            self._vset(at, 4, low)
            if low & BAR_MEM_TYPE_64 and index < 5:
                self._vset(at + 4, 4, self._vget(at + 4, 4) & (mask >> 32))
                index += 1
            index += 1
        # PciFunction models have no expansion ROM (and no shadow ROM): the ROM BAR reads 0.
        self._vset(ROM_ADDRESS, 4, 0)
        self._bar_dirty = False

    def _basic_read(self, pos: int, count: int) -> int:
        """vfio_basic_config_read."""
        if _is_bar(pos):
            self._bar_fixup()
        return self._default_read(pos, count, _BASIC_PERMS, pos)

    def _needs_bar_restore(self) -> bool:
        """vfio_need_bar_restore: a BAR that had an address at open no longer holds it."""
        for index, saved in enumerate(self.saved_bars[:6]):
            if saved and self.function.config_read(_BAR_OFFSETS[index], 4) != saved:
                return True
        return False

    def _restore_bars(self) -> None:
        """vfio_bar_restore: write the BARs (and ROM BAR) of open time back to the device."""
        for at, saved in zip(_BAR_OFFSETS + (ROM_ADDRESS,), self.saved_bars):
            self.function.config_write(at, 4, saved)

    def _basic_write(self, pos: int, count: int, value: int) -> None:
        """vfio_basic_config_write."""
        new_command = 0
        if pos == COMMAND:
            physical = self.function.config_read(COMMAND, 2)
            virtual = self._vget(COMMAND, 2)
            new_command = value & 0xFFFF
            new_mem = bool(new_command & COMMAND_MEMORY)
            new_io = bool(new_command & COMMAND_IO)
            if ((new_mem and virtual & COMMAND_MEMORY and not physical & COMMAND_MEMORY)
                    or (new_io and virtual & COMMAND_IO and not physical & COMMAND_IO)
                    or self._needs_bar_restore()):
                self._restore_bars()
        self._default_write(pos, count, _BASIC_PERMS, pos, value)
        if pos == COMMAND:
            decode = COMMAND_MEMORY | COMMAND_IO
            self._vset(COMMAND, 2, (self._vget(COMMAND, 2) & ~decode) | (new_command & decode))
        if COMMAND <= pos <= COMMAND + 1:
            disabled = bool(self._vget(COMMAND, 2) & COMMAND_INTX_DISABLE)
            if disabled != self.intx_disabled:
                self.intx_disabled = disabled
                self.hooks.config_intx_disable(disabled)
        if _is_bar(pos):
            self._bar_dirty = True

    # ----------------------------------------------------------------- MSI

    def _msi_read(self, pos: int, count: int, offset: int) -> int:
        """vfio_msi_config_read, including its update of the wrong vconfig byte (see the module
        docstring): the capable bits the user reads are the ones in vconfig's flags."""
        assert self._msi_perm is not None
        if offset <= MSI_FLAGS <= offset + count:
            start = self.capability_start(pos)
            word = self._vget(start, 2)
            self._vset(start, 2, (word & ~MSI_FLAGS_QMASK) | (self.msi_qmax << 1))
        return self._default_read(pos, count, self._msi_perm, offset)

    def _msi_write(self, pos: int, count: int, offset: int, value: int) -> None:
        """vfio_msi_config_write: virtual write, then Message Control fixed up (Enable only if
        MSI is on through SET_IRQS, Multiple Message Enable at most msi_qmax) and written to
        both vconfig and the device whenever the piece reaches the flags."""
        assert self._msi_perm is not None
        self._default_write(pos, count, self._msi_perm, offset, value)
        if offset <= MSI_FLAGS <= offset + count:
            at = self.capability_start(pos) + MSI_FLAGS
            flags = self._vget(at, 2)
            if not self.hooks.msi_enabled():
                flags &= ~MSI_FLAGS_ENABLE
            if (flags & MSI_FLAGS_QSIZE) >> 4 > self.msi_qmax:
                flags = (flags & ~MSI_FLAGS_QSIZE) | (self.msi_qmax << 4)
            self._vset(at, 2, flags)
            self.function.config_write(at, 2, flags)


# --------------------------------------------------------------------------- physical side

_HEADER_DWORDS = HEADER_SIZE // 4


@dataclass(frozen=True)
class SavedState:
    """pci_save_state of a conventional function: the 16 header dwords, plus the MSI registers
    when the host has MSI enabled (pci_restore_msi_state reprograms them from the kernel's
    descriptors; the registers at save time are what those hold). MSI-X table entries live in
    BAR memory and are not saved: a reset with MSI-X enabled leaves the table masked."""

    header: tuple[int, ...]
    msi: tuple[int, int, int, int] | None = None   # flags, address low, address high, data

    @classmethod
    def capture(cls, function: PciFunction) -> SavedState:
        header = tuple(function.config_read(4 * i, 4) for i in range(_HEADER_DWORDS))
        msi = function.msi
        saved_msi = None
        if msi is not None and function.msi_enabled:
            high = function.config_read(msi.address_hi_offset, 4) \
                if msi.address_hi_offset is not None else 0
            saved_msi = (function.config_read(msi.flags_offset, 2),
                         function.config_read(msi.address_lo_offset, 4), high,
                         function.config_read(msi.data_offset, 2))
        return cls(header, saved_msi)

    def restore(self, function: PciFunction) -> None:
        """pci_restore_state: dwords 15..10, then the BARs 9..4, then 3..0 (so the command
        register comes after the BARs), each written only if it differs; then MSI."""
        for index in [*range(15, 9, -1), *range(9, 3, -1), *range(3, -1, -1)]:
            if function.config_read(4 * index, 4) != self.header[index]:
                function.config_write(4 * index, 4, self.header[index])
        msi = function.msi
        if self.msi is not None and msi is not None:
            flags, low, high, data = self.msi
            function.config_write(msi.flags_offset, 2, flags & ~MSI_FLAGS_ENABLE)
            function.config_write(msi.address_lo_offset, 4, low)
            if msi.address_hi_offset is not None:
                function.config_write(msi.address_hi_offset, 4, high)
            function.config_write(msi.data_offset, 2, data)
            function.config_write(msi.flags_offset, 2, flags)


def reset_function(function: PciFunction) -> None:
    """pci_try_reset_function of a function whose reset works (the caller checks that: edu has
    none, and VFIO_DEVICE_RESET is EINVAL for it): save, command = INTx Disable only, reset,
    restore. The virtual config space is not touched (vfio_pci_ioctl_reset)."""
    saved = SavedState.capture(function)
    function.config_write(COMMAND, 2, COMMAND_INTX_DISABLE)
    function.reset()
    saved.restore(function)


def vfio_pci_enable(function: PciFunction, *, reset_works: bool) -> SavedState:
    """The physical steps of vfio_pci_core_enable before vfio_config_init: bus mastering off
    ("don't allow our initial saved state to include busmaster"), pci_enable_device, a reset if
    the function has one, pci_save_state, and INTx Disable cleared (every model supports PCI 2.3
    INTx masking, so vfio-pci masks with that bit later). Returns the state to restore at close;
    construct the :class:`VirtualConfig` next."""
    function.config_write(COMMAND, 2, function.config_read(COMMAND, 2) & ~COMMAND_MASTER)
    function.host_enable_device()
    if reset_works:
        reset_function(function)
    saved = SavedState.capture(function)
    command = function.config_read(COMMAND, 2)
    if command & COMMAND_INTX_DISABLE:
        function.config_write(COMMAND, 2, command & ~COMMAND_INTX_DISABLE)
    return saved


def vfio_pci_disable(function: PciFunction, saved: SavedState, *, reset_works: bool) -> None:
    """The physical steps of vfio_pci_core_disable, after the interrupts layer has torn its
    interrupts down: bus mastering off, command = INTx Disable only, a reset if the function has
    one, the state of open time restored, then pci_disable_device (bus mastering off again)."""
    function.config_write(COMMAND, 2, function.config_read(COMMAND, 2) & ~COMMAND_MASTER)
    function.config_write(COMMAND, 2, COMMAND_INTX_DISABLE)
    if reset_works:
        function.reset()
    saved.restore(function)
    command = function.config_read(COMMAND, 2)
    if command & COMMAND_MASTER:
        function.config_write(COMMAND, 2, command & ~COMMAND_MASTER)
