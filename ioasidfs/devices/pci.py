"""A conventional PCI function as hardware presents it: its 256-byte type 0 configuration space,
its BARs and its interrupt machinery (INTx, MSI, MSI-X).

This module is the *physical* layer only: "what the hardware has". vfio-pci's virtualisation
(virtual BARs, the virtual command register, the config map that decides which bytes pass
through) is a separate layer in the engine that sits on top and calls :meth:`PciFunction.config_read`
/ :meth:`PciFunction.config_write` exactly where the kernel would call
``pci_user_read_config_*`` / ``pci_user_write_config_*`` on the real device. Keeping the two
apart is what lets the emulation answer both views correctly: sysfs ``config`` and the host's
own accesses see the hardware, the VFIO user sees what vfio-pci makes of it.

Register behaviour follows QEMU's PCI core (hw/pci/pci.c, hw/pci/msi.c, hw/pci/msix.c), because
the reference device (edu) is a QEMU device and a driver tested against QEMU must see the same
bits here: a write-mask per byte (``wmask``), write-1-to-clear bits (``w1cmask``) in the status
register, BAR sizing through the write mask (``~(size - 1)``), the device-specific area
0x40..0xff writable except where a capability lives, MSI's Multiple Message Enable clamped to
what the function is capable of, INTx deasserted when MSI is enabled.

The interface the engine uses (all methods are thread-safe; a model's own lock serialises them):

* ``config_read(offset, size)`` / ``config_write(offset, size, value)``: physical config access,
  size 1, 2 or 4, naturally aligned (the vfio layer splits user accesses the way
  ``vfio_config_do_rw`` does);
* ``mmio_read(bar, offset, size)`` / ``mmio_write(bar, offset, size, value)``: a BAR access of
  1, 2, 4 or 8 bytes, naturally aligned (``vfio_pci_core_do_io_rw`` splits pread/pwrite so),
  little-endian values;
* ``tick()``: run the work the device has started (DMA, computations) to completion; the daemon
  calls it right after an access that queued work (``work_pending``, ``on_work``);
* ``attach(sink)``: where interrupts go (:class:`InterruptSink`);
* ``reset()``: function level reset;
* ``host_enable_device`` / ``host_enable_msi`` / ``host_enable_msix`` / ``host_disable_*``: what
  the Linux PCI core does to the physical function when vfio-pci enables it or allocates vectors.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Callable, Protocol

from ..config import BarConfig

if TYPE_CHECKING:
    from .dma import DmaSpace

log = logging.getLogger("ioasidfs.devices")

# --------------------------------------------------------------------------- register map
# Offsets and bits as in include/uapi/linux/pci_regs.h.

CONFIG_SPACE_SIZE = 256
HEADER_SIZE = 0x40

VENDOR_ID = 0x00
DEVICE_ID = 0x02
COMMAND = 0x04
STATUS = 0x06
REVISION_ID = 0x08
CLASS_PROG = 0x09
CLASS_DEVICE = 0x0A
CACHE_LINE_SIZE = 0x0C
LATENCY_TIMER = 0x0D
HEADER_TYPE = 0x0E
BIST = 0x0F
BASE_ADDRESS_0 = 0x10
CARDBUS_CIS = 0x28
SUBSYSTEM_VENDOR_ID = 0x2C
SUBSYSTEM_ID = 0x2E
ROM_ADDRESS = 0x30
CAPABILITY_LIST = 0x34
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D
MIN_GNT = 0x3E
MAX_LAT = 0x3F

COMMAND_IO = 0x0001
COMMAND_MEMORY = 0x0002
COMMAND_MASTER = 0x0004
COMMAND_SERR = 0x0100
COMMAND_INTX_DISABLE = 0x0400

STATUS_INTERRUPT = 0x0008
STATUS_CAP_LIST = 0x0010
STATUS_PARITY = 0x0100
STATUS_SIG_TARGET_ABORT = 0x0800
STATUS_REC_TARGET_ABORT = 0x1000
STATUS_REC_MASTER_ABORT = 0x2000
STATUS_SIG_SYSTEM_ERROR = 0x4000
STATUS_DETECTED_PARITY = 0x8000
STATUS_W1C = (STATUS_PARITY | STATUS_SIG_TARGET_ABORT | STATUS_REC_TARGET_ABORT
              | STATUS_REC_MASTER_ABORT | STATUS_SIG_SYSTEM_ERROR | STATUS_DETECTED_PARITY)

BAR_SPACE_IO = 0x01
BAR_MEM_TYPE_MASK = 0x06
BAR_MEM_TYPE_32 = 0x00
BAR_MEM_TYPE_1M = 0x02
BAR_MEM_TYPE_64 = 0x04
BAR_MEM_PREFETCH = 0x08
BAR_MEM_MASK = ~0x0F & 0xFFFFFFFF
BAR_IO_MASK = ~0x03 & 0xFFFFFFFF

CAP_ID_PM = 0x01
CAP_ID_MSI = 0x05
CAP_ID_EXP = 0x10
CAP_ID_MSIX = 0x11

MSI_FLAGS = 2
MSI_FLAGS_ENABLE = 0x0001
MSI_FLAGS_QMASK = 0x000E       # Multiple Message Capable (log2), read-only
MSI_FLAGS_QSIZE = 0x0070       # Multiple Message Enable (log2)
MSI_FLAGS_64BIT = 0x0080
MSI_FLAGS_MASKBIT = 0x0100
MSI_ADDRESS_LO = 4

MSIX_FLAGS = 2
MSIX_FLAGS_QSIZE = 0x07FF
MSIX_FLAGS_MASKALL = 0x4000
MSIX_FLAGS_ENABLE = 0x8000
MSIX_TABLE = 4
MSIX_PBA = 8
MSIX_BIR_MASK = 0x7
MSIX_ENTRY_SIZE = 16
MSIX_ENTRY_LOWER_ADDR = 0
MSIX_ENTRY_UPPER_ADDR = 4
MSIX_ENTRY_DATA = 8
MSIX_ENTRY_VECTOR_CTRL = 12
MSIX_ENTRY_CTRL_MASKBIT = 0x1
MSIX_CAP_SIZE = 12

# The MSI window of x86; what the host kernel programs into MSI address registers. The engine
# never delivers through memory, but a value in the register is what real hardware shows.
X86_MSI_ADDRESS = 0xFEE00000


def _mask(size: int) -> int:
    return (1 << (8 * size)) - 1


# --------------------------------------------------------------------------- BARs

class BarKind(Enum):
    MEM32 = "mem32"
    MEM64 = "mem64"
    IO = "io"


@dataclass(frozen=True)
class Bar:
    """One implemented BAR: its slot, size (a power of two) and type.

    A 64-bit BAR occupies ``index`` and ``index + 1``; the upper slot has no Bar of its own (as
    in the kernel, which reports it as a zero-size region).
    """

    index: int
    size: int
    kind: BarKind = BarKind.MEM32
    prefetchable: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 5:
            raise ValueError(f"BAR index {self.index} is not 0..5")
        if self.size & (self.size - 1) or self.size < (4 if self.kind is BarKind.IO else 16):
            raise ValueError(f"BAR{self.index} size {self.size:#x} is not a power of two "
                             f"of at least {4 if self.kind is BarKind.IO else 16} bytes")
        if self.kind is BarKind.MEM64 and self.index == 5:
            raise ValueError("a 64-bit BAR in slot 5 has no slot for its upper half")
        if self.kind is not BarKind.MEM64 and self.size > 1 << 31:
            raise ValueError(f"BAR{self.index}: a 32-bit BAR cannot be {self.size:#x} bytes")
        if self.kind is BarKind.IO and self.prefetchable:
            raise ValueError(f"BAR{self.index}: an I/O BAR cannot be prefetchable")

    @classmethod
    def from_config(cls, bar: BarConfig) -> Bar:
        kind = BarKind.IO if bar.io else (BarKind.MEM64 if bar.bits == 64 else BarKind.MEM32)
        return cls(bar.index, bar.size, kind, bar.prefetchable)

    @property
    def is_io(self) -> bool:
        return self.kind is BarKind.IO

    @property
    def is_64(self) -> bool:
        return self.kind is BarKind.MEM64

    @property
    def slots(self) -> tuple[int, ...]:
        return (self.index, self.index + 1) if self.is_64 else (self.index,)

    @property
    def flags(self) -> int:
        """The read-only low bits of the BAR register (space, type, prefetchable)."""
        if self.is_io:
            return BAR_SPACE_IO
        return (BAR_MEM_TYPE_64 if self.is_64 else BAR_MEM_TYPE_32) | (
            BAR_MEM_PREFETCH if self.prefetchable else 0)

    @property
    def write_mask(self) -> int:
        """The address bits software can set (64 bits wide for a 64-bit BAR): what an all-ones
        write reads back, minus the flag bits. QEMU's pci_register_bar: ``~(size - 1)``."""
        return ~(self.size - 1) & _mask(8 if self.is_64 else 4)


@dataclass(frozen=True)
class BarDecode:
    """What a BAR register value says (PCI Local Bus spec 6.2.5.1), e.g. for the vfio layer's
    virtual BARs and for sysfs ``resource``."""

    io: bool
    mem_type: int            # BAR_MEM_TYPE_32 / _1M / _64 (0 for I/O)
    prefetchable: bool
    address: int

    @property
    def is_64(self) -> bool:
        return not self.io and self.mem_type == BAR_MEM_TYPE_64


def decode_bar(low: int, high: int = 0) -> BarDecode:
    """Decode a BAR register (``high`` is the next dword, used only by a 64-bit memory BAR)."""
    low &= 0xFFFFFFFF
    if low & BAR_SPACE_IO:
        return BarDecode(True, 0, False, low & BAR_IO_MASK)
    mem_type = low & BAR_MEM_TYPE_MASK
    address = low & BAR_MEM_MASK
    if mem_type == BAR_MEM_TYPE_64:
        address |= (high & 0xFFFFFFFF) << 32
    return BarDecode(False, mem_type, bool(low & BAR_MEM_PREFETCH), address)


def bar_size_from_readback(low: int, high: int = 0xFFFFFFFF) -> int:
    """The size a driver computes after writing all ones to a BAR (and to its upper half) and
    reading it back: the lowest address bit that stuck. 0 for an unimplemented BAR. ``high``
    matters for a 64-bit memory BAR only. Works for I/O BARs that implement only 16 bits."""
    decoded = decode_bar(low, high)
    mask = (low & BAR_IO_MASK) if decoded.io else decoded.address
    return mask & -mask


# --------------------------------------------------------------------------- capabilities

@dataclass(frozen=True)
class Capability:
    """A capability in the standard list: its ID, where it is, how many bytes it covers."""

    id: int
    offset: int
    length: int


def msi_cap_length(flags: int) -> int:
    """The size of an MSI capability from its Message Control word (QEMU msi_cap_sizeof;
    vfio_msi_cap_len computes the same)."""
    if flags & MSI_FLAGS_64BIT:
        return 0x18 if flags & MSI_FLAGS_MASKBIT else 0x0E
    return 0x14 if flags & MSI_FLAGS_MASKBIT else 0x0A


@dataclass(frozen=True)
class MsiCapability:
    """Where the MSI registers of a function are (their layout depends on 64-bit/per-vector
    masking, so consumers ask here rather than recomputing)."""

    offset: int
    vectors: int                 # Multiple Message Capable, as a count (1..32)
    is_64: bool = True
    per_vector_mask: bool = False

    def __post_init__(self) -> None:
        if self.vectors not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"MSI supports 1, 2, 4, ... 32 vectors, not {self.vectors}")

    @property
    def flags_offset(self) -> int:
        return self.offset + MSI_FLAGS

    @property
    def address_lo_offset(self) -> int:
        return self.offset + MSI_ADDRESS_LO

    @property
    def address_hi_offset(self) -> int | None:
        return self.offset + 8 if self.is_64 else None

    @property
    def data_offset(self) -> int:
        return self.offset + (12 if self.is_64 else 8)

    @property
    def mask_offset(self) -> int | None:
        return (self.offset + (16 if self.is_64 else 12)) if self.per_vector_mask else None

    @property
    def pending_offset(self) -> int | None:
        return (self.offset + (20 if self.is_64 else 16)) if self.per_vector_mask else None

    @property
    def initial_flags(self) -> int:
        return ((self.vectors.bit_length() - 1) << 1
                | (MSI_FLAGS_64BIT if self.is_64 else 0)
                | (MSI_FLAGS_MASKBIT if self.per_vector_mask else 0))

    @property
    def length(self) -> int:
        return msi_cap_length(self.initial_flags)


@dataclass(frozen=True)
class MsixCapability:
    """An MSI-X capability and where its table and pending bit array live in BAR space."""

    offset: int
    vectors: int                 # table size, 1..2048
    table_bar: int
    table_offset: int
    pba_bar: int
    pba_offset: int

    def __post_init__(self) -> None:
        if not 1 <= self.vectors <= 2048:
            raise ValueError(f"MSI-X supports 1..2048 vectors, not {self.vectors}")
        if self.table_offset & 7 or self.pba_offset & 7:
            raise ValueError("MSI-X table and PBA offsets must be 8-byte aligned")

    @property
    def length(self) -> int:
        return MSIX_CAP_SIZE

    @property
    def table_size(self) -> int:
        return self.vectors * MSIX_ENTRY_SIZE

    @property
    def pba_size(self) -> int:
        """Bytes of the PBA: one bit per vector, in whole qwords."""
        return (self.vectors + 63) // 64 * 8

    def in_table(self, bar: int, offset: int, size: int) -> bool:
        return (bar == self.table_bar and offset < self.table_offset + self.table_size
                and offset + size > self.table_offset)

    def in_pba(self, bar: int, offset: int, size: int) -> bool:
        return (bar == self.pba_bar and offset < self.pba_offset + self.pba_size
                and offset + size > self.pba_offset)


def msix_exclusive_bar(vectors: int) -> tuple[int, int, int]:
    """(BAR size, table offset, PBA offset) for an MSI-X table alone in its own BAR, laid out as
    QEMU's msix_init_exclusive_bar does: the table at 0, the PBA in the upper half of a 4 KiB
    BAR, both pushed out (and the BAR grown to a power of two) when the table is larger."""
    bar_size = 4096
    pba_offset = bar_size // 2
    pba_size = (vectors + 63) // 64 * 8
    if vectors * MSIX_ENTRY_SIZE > pba_offset:
        pba_offset = vectors * MSIX_ENTRY_SIZE
    if pba_offset + pba_size > 4096:
        bar_size = pba_offset + pba_size
    return 1 << (bar_size - 1).bit_length(), 0, pba_offset


# --------------------------------------------------------------------------- config space

class ConfigSpace:
    """256 bytes of registers with QEMU's per-byte write semantics and nothing else.

    ``wmask`` marks the bits software may change, ``w1cmask`` the bits a written 1 clears.
    ``set*`` are the hardware's own stores (they ignore the masks): how a device model changes
    read-only bits such as the interrupt status. Little-endian, like PCI.
    """

    def __init__(self) -> None:
        self.data = bytearray(CONFIG_SPACE_SIZE)
        self.wmask = bytearray(CONFIG_SPACE_SIZE)
        self.w1cmask = bytearray(CONFIG_SPACE_SIZE)

    @staticmethod
    def check(offset: int, size: int) -> None:
        """A config cycle is 1, 2 or 4 bytes within one dword (naturally aligned)."""
        if size not in (1, 2, 4) or offset % size or not 0 <= offset <= CONFIG_SPACE_SIZE - size:
            raise ValueError(f"bad config access: {size} bytes at {offset:#x}")

    def read(self, offset: int, size: int) -> int:
        self.check(offset, size)
        return int.from_bytes(self.data[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        """A software write: writable bits take the new value, written 1s clear W1C bits."""
        self.check(offset, size)
        raw = (value & _mask(size)).to_bytes(size, "little")
        for i, byte in enumerate(raw):
            at = offset + i
            wmask, w1c = self.wmask[at], self.w1cmask[at]
            self.data[at] = ((self.data[at] & ~wmask) | (byte & wmask)) & ~(byte & w1c) & 0xFF

    def get(self, offset: int, size: int) -> int:
        return int.from_bytes(self.data[offset:offset + size], "little")

    def set(self, offset: int, size: int, value: int) -> None:
        self.data[offset:offset + size] = (value & _mask(size)).to_bytes(size, "little")

    def set_wmask(self, offset: int, size: int, value: int) -> None:
        self.wmask[offset:offset + size] = (value & _mask(size)).to_bytes(size, "little")

    def set_w1cmask(self, offset: int, size: int, value: int) -> None:
        self.w1cmask[offset:offset + size] = (value & _mask(size)).to_bytes(size, "little")

    def snapshot(self) -> bytes:
        return bytes(self.data)


# --------------------------------------------------------------------------- interrupts

class InterruptSink(Protocol):
    """Where a function's interrupts go. The engine implements it by signalling the eventfds
    the client registered with VFIO_DEVICE_SET_IRQS (and applying INTx automasking).

    Calls are made with the model's lock held, from whatever thread drove the model (an MMIO
    write, a tick): an implementation must not block and must not call back into the model
    from another thread while waiting.
    """

    def intx(self, asserted: bool) -> None:
        """The INTx line (pin A) changed level: True asserted, False deasserted. Called only
        on a change of the line as it leaves the function (INTx Disable applied)."""

    def msi(self, vector: int) -> None:
        """An MSI message for ``vector`` was sent (edge: each call is one interrupt)."""

    def msix(self, vector: int) -> None:
        """An MSI-X message for table entry ``vector`` was sent."""


class NullSink:
    """The sink of a function nobody listens to: interrupts go nowhere, like an unbound device."""

    def intx(self, asserted: bool) -> None:
        pass

    def msi(self, vector: int) -> None:
        pass

    def msix(self, vector: int) -> None:
        pass


class InterruptLog:
    """A sink that remembers what it was told, in order: for tests and for tracing.

    ``events`` holds ("intx", 1/0), ("msi", vector) and ("msix", vector) tuples.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.line = False

    def intx(self, asserted: bool) -> None:
        self.line = asserted
        self.events.append(("intx", int(asserted)))

    def msi(self, vector: int) -> None:
        self.events.append(("msi", vector))

    def msix(self, vector: int) -> None:
        self.events.append(("msix", vector))

    def take(self) -> list[tuple[str, int]]:
        """The events since the last take."""
        events, self.events = self.events, []
        return events


# --------------------------------------------------------------------------- the function

@dataclass(frozen=True)
class Identity:
    """The read-only identification registers of a function."""

    vendor: int
    device: int
    class_code: int
    revision: int = 0
    subsystem_vendor: int = 0
    subsystem_device: int = 0


class PciFunction:
    """The physical PCI function a device model builds on: config space, BARs, interrupts.

    Subclasses implement :meth:`_bar_read` / :meth:`_bar_write` (their registers), and may
    override :meth:`tick`, :meth:`_reset_device` and :meth:`_config_written`.
    """

    #: The name the function's DMA is recorded under (its PCI address).
    name: str

    def __init__(self, name: str, identity: Identity, bars: list[Bar] | tuple[Bar, ...],
                 *, interrupt_pin: int = 1, msi: MsiCapability | None = None,
                 msix: MsixCapability | None = None, sink: InterruptSink | None = None) -> None:
        self.name = name
        self.lock = threading.RLock()
        self.sink: InterruptSink = sink if sink is not None else NullSink()
        self.on_work: Callable[[], None] | None = None
        self.identity = identity
        self.bars: dict[int, Bar] = {}
        used: set[int] = set()
        for bar in bars:
            if used & set(bar.slots):
                raise ValueError(f"{name}: BAR{bar.index} overlaps another BAR's slot")
            used |= set(bar.slots)
            self.bars[bar.index] = bar
        if interrupt_pin not in (0, 1, 2, 3, 4):
            raise ValueError(f"{name}: interrupt pin {interrupt_pin} is not 0 (none) or 1..4")
        self.interrupt_pin = interrupt_pin
        self.msi = msi
        self.msix = msix
        if msix is not None:
            for bar_index, start, length in ((msix.table_bar, msix.table_offset, msix.table_size),
                                             (msix.pba_bar, msix.pba_offset, msix.pba_size)):
                holder = self.bars.get(bar_index)
                if holder is None or holder.is_io or start + length > holder.size:
                    raise ValueError(f"{name}: the MSI-X table or PBA does not fit in memory "
                                     f"BAR{bar_index}")
        self.config = ConfigSpace()
        self._claimed = bytearray(CONFIG_SPACE_SIZE)    # bytes owned by a capability
        self._build_config()
        self._power_on = bytes(self.config.data)
        self._intx_level = False       # the function's own INTx request, before INTx Disable
        self._line = False             # the line as it leaves the function
        self._msi_pending = 0          # MSI vectors held back by per-vector masking
        self._msix_table = bytearray()
        self._msix_pba = 0
        self._reset_msix_table()

    # ----------------------------------------------------------------- layout

    def _build_config(self) -> None:
        c = self.config
        ident = self.identity
        c.set(VENDOR_ID, 2, ident.vendor)
        c.set(DEVICE_ID, 2, ident.device)
        c.set(REVISION_ID, 1, ident.revision)
        c.set(CLASS_PROG, 3, ident.class_code)
        c.set(HEADER_TYPE, 1, 0x00)
        c.set(SUBSYSTEM_VENDOR_ID, 2, ident.subsystem_vendor)
        c.set(SUBSYSTEM_ID, 2, ident.subsystem_device)
        c.set(INTERRUPT_PIN, 1, self.interrupt_pin)
        # QEMU pci_init_wmask / pci_init_w1cmask (command_serr_enable defaults on).
        c.set_wmask(CACHE_LINE_SIZE, 1, 0xFF)
        c.set_wmask(INTERRUPT_LINE, 1, 0xFF)
        c.set_wmask(COMMAND, 2, COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER | COMMAND_SERR
                    | COMMAND_INTX_DISABLE)
        c.set_w1cmask(STATUS, 2, STATUS_W1C)
        c.wmask[HEADER_SIZE:] = b"\xff" * (CONFIG_SPACE_SIZE - HEADER_SIZE)
        for bar in self.bars.values():
            at = BASE_ADDRESS_0 + 4 * bar.index
            c.set(at, 4, bar.flags)
            c.set_wmask(at, 8 if bar.is_64 else 4, bar.write_mask)
        caps: list[tuple[int, int]] = []
        if self.msi is not None:
            caps.append((CAP_ID_MSI, self.msi.offset))
            self._build_msi(self.msi)
        if self.msix is not None:
            caps.append((CAP_ID_MSIX, self.msix.offset))
            self._build_msix(self.msix)
        self._link_capabilities(caps)

    def _claim(self, offset: int, length: int) -> None:
        """Make a capability's bytes read-only (its own fields then open what they need)."""
        if offset < HEADER_SIZE or offset & 3 or offset + length > CONFIG_SPACE_SIZE:
            raise ValueError(f"{self.name}: capability at {offset:#x} does not fit")
        if any(self._claimed[offset:offset + length]):
            raise ValueError(f"{self.name}: capability at {offset:#x} overlaps another")
        self._claimed[offset:offset + length] = b"\x01" * length
        self.config.wmask[offset:offset + length] = bytes(length)

    def _build_msi(self, msi: MsiCapability) -> None:
        c = self.config
        self._claim(msi.offset, msi.length)
        c.set(msi.flags_offset, 2, msi.initial_flags)
        c.set_wmask(msi.flags_offset, 2, MSI_FLAGS_QSIZE | MSI_FLAGS_ENABLE)
        c.set_wmask(msi.address_lo_offset, 4, 0xFFFFFFFC)
        if msi.address_hi_offset is not None:
            c.set_wmask(msi.address_hi_offset, 4, 0xFFFFFFFF)
        c.set_wmask(msi.data_offset, 2, 0xFFFF)
        if msi.mask_offset is not None:
            c.set_wmask(msi.mask_offset, 4, 0xFFFFFFFF >> (32 - msi.vectors))

    def _build_msix(self, msix: MsixCapability) -> None:
        c = self.config
        self._claim(msix.offset, msix.length)
        c.set(msix.offset + MSIX_FLAGS, 2, msix.vectors - 1)
        c.set_wmask(msix.offset + MSIX_FLAGS, 2, MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL)
        c.set(msix.offset + MSIX_TABLE, 4, msix.table_offset | msix.table_bar)
        c.set(msix.offset + MSIX_PBA, 4, msix.pba_offset | msix.pba_bar)

    def _link_capabilities(self, caps: list[tuple[int, int]]) -> None:
        c = self.config
        if not caps:
            return
        c.set(STATUS, 2, c.get(STATUS, 2) | STATUS_CAP_LIST)
        # Like QEMU's pci_add_capability, each new capability goes to the head of the list.
        head = 0
        for cap_id, offset in caps:
            c.set(offset, 1, cap_id)
            c.set(offset + 1, 1, head)
            head = offset
        c.set(CAPABILITY_LIST, 1, head)

    def capabilities(self) -> list[Capability]:
        """The capability list, walked from 0x34 as a driver walks it (loops cut)."""
        caps: list[Capability] = []
        if not self.config.get(STATUS, 2) & STATUS_CAP_LIST:
            return caps
        offset = self.config.get(CAPABILITY_LIST, 1) & ~3
        seen: set[int] = set()
        while offset and offset not in seen:
            seen.add(offset)
            cap_id = self.config.get(offset, 1)
            length = {CAP_ID_MSI: lambda: msi_cap_length(self.config.get(offset + 2, 2)),
                      CAP_ID_MSIX: lambda: MSIX_CAP_SIZE}.get(cap_id, lambda: 2)()
            caps.append(Capability(cap_id, offset, length))
            offset = self.config.get(offset + 1, 1) & ~3
        return caps

    # ----------------------------------------------------------------- state shortcuts

    @property
    def command(self) -> int:
        return self.config.get(COMMAND, 2)

    @property
    def bus_master(self) -> bool:
        """Bus Master Enable: without it the function can neither DMA nor send MSI/MSI-X."""
        return bool(self.command & COMMAND_MASTER)

    @property
    def memory_enabled(self) -> bool:
        return bool(self.command & COMMAND_MEMORY)

    @property
    def io_enabled(self) -> bool:
        return bool(self.command & COMMAND_IO)

    @property
    def msi_enabled(self) -> bool:
        return self.msi is not None and bool(self.config.get(self.msi.flags_offset, 2)
                                             & MSI_FLAGS_ENABLE)

    @property
    def msi_vectors_enabled(self) -> int:
        """How many MSI vectors the Multiple Message Enable field grants (0 when disabled)."""
        if self.msi is None or not self.msi_enabled:
            return 0
        return 1 << ((self.config.get(self.msi.flags_offset, 2) & MSI_FLAGS_QSIZE) >> 4)

    @property
    def msix_enabled(self) -> bool:
        return self.msix is not None and bool(
            self.config.get(self.msix.offset + MSIX_FLAGS, 2) & MSIX_FLAGS_ENABLE)

    @property
    def intx_asserted(self) -> bool:
        """The line as it leaves the function (its request, unless INTx Disable is set)."""
        return self._line

    @property
    def work_pending(self) -> bool:
        """True when :meth:`tick` has something to do. Devices without work say False."""
        return False

    # ----------------------------------------------------------------- config access

    def config_read(self, offset: int, size: int) -> int:
        """A physical config read (1/2/4 bytes, naturally aligned)."""
        with self.lock:
            return self.config.read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        """A physical config write, with the side effects the hardware has (QEMU's
        pci_default_write_config followed by msi/msix_write_config)."""
        with self.lock:
            old_command = self.command
            old_msi_flags = self.config.get(self.msi.flags_offset, 2) if self.msi else 0
            old_msi_mask = self._msi_mask()
            old_msix_flags = (self.config.get(self.msix.offset + MSIX_FLAGS, 2)
                              if self.msix else 0)
            self.config.write(offset, size, value)
            end = offset + size
            if offset < COMMAND + 2 and end > COMMAND:
                if (old_command ^ self.command) & COMMAND_INTX_DISABLE:
                    self._update_line()
            if self.msi is not None and offset < self.msi.offset + self.msi.length \
                    and end > self.msi.offset:
                self._msi_config_written(old_msi_flags, old_msi_mask)
            if self.msix is not None and offset < self.msix.offset + MSIX_CAP_SIZE \
                    and end > self.msix.offset:
                self._msix_config_written(old_msix_flags)
            self._config_written(offset, size)

    def _config_written(self, offset: int, size: int) -> None:
        """Hook for models that react to config writes (after the generic effects)."""

    def _msi_mask(self) -> int:
        if self.msi is None or self.msi.mask_offset is None:
            return 0
        return self.config.get(self.msi.mask_offset, 4)

    def _msi_config_written(self, old_flags: int, old_mask: int) -> None:
        assert self.msi is not None
        at = self.msi.flags_offset
        flags = self.config.get(at, 2)
        # Multiple Message Enable may not exceed Multiple Message Capable (msi_write_config).
        capable = (flags & MSI_FLAGS_QMASK) >> 1
        if (flags & MSI_FLAGS_QSIZE) >> 4 > capable:
            flags = (flags & ~MSI_FLAGS_QSIZE) | (capable << 4)
            self.config.set(at, 2, flags)
        if not flags & MSI_FLAGS_ENABLE:
            return
        if not old_flags & MSI_FLAGS_ENABLE:
            # PCI 6.8.3.3: while MSI is enabled the function may not use INTx.
            self._set_request(False)
        # Deliver what was held back by a mask that is now clear.
        if self.msi.per_vector_mask and self._msi_pending:
            ready = self._msi_pending & ~self._msi_mask()
            for vector in range(self.msi.vectors):
                if ready & (1 << vector):
                    self._msi_pending &= ~(1 << vector)
                    self._send_msi(vector)

    def _msix_config_written(self, old_flags: int) -> None:
        assert self.msix is not None
        flags = self.config.get(self.msix.offset + MSIX_FLAGS, 2)
        if flags & MSIX_FLAGS_ENABLE and not old_flags & MSIX_FLAGS_ENABLE:
            self._set_request(False)
        self._msix_deliver_pending()

    # ----------------------------------------------------------------- BAR access

    def _check_bar(self, bar: int, offset: int, size: int) -> Bar:
        found = self.bars.get(bar)
        if found is None:
            raise ValueError(f"{self.name}: BAR{bar} is not implemented")
        if size not in (1, 2, 4, 8) or offset % size or not 0 <= offset <= found.size - size:
            raise ValueError(f"{self.name}: bad BAR{bar} access: {size} bytes at {offset:#x}")
        return found

    def _decodes(self, bar: Bar) -> bool:
        return self.io_enabled if bar.is_io else self.memory_enabled

    def mmio_read(self, bar: int, offset: int, size: int) -> int:
        """A read of ``size`` bytes at ``offset`` in BAR ``bar`` (I/O BARs too). With decoding
        of that space disabled in the command register the function does not claim the cycle
        and the read completes with all ones, as a master abort does."""
        with self.lock:
            found = self._check_bar(bar, offset, size)
            if not self._decodes(found):
                return _mask(size)
            if self.msix is not None:
                if self.msix.in_table(bar, offset, size):
                    return self._msix_table_read(offset - self.msix.table_offset, size)
                if self.msix.in_pba(bar, offset, size):
                    return ((self._msix_pba >> (8 * (offset - self.msix.pba_offset)))
                            & _mask(size))
            return self._bar_read(bar, offset, size) & _mask(size)

    def mmio_write(self, bar: int, offset: int, size: int, value: int) -> None:
        """A write of ``size`` bytes; dropped when the space is not decoded."""
        with self.lock:
            found = self._check_bar(bar, offset, size)
            if not self._decodes(found):
                return
            value &= _mask(size)
            if self.msix is not None:
                if self.msix.in_table(bar, offset, size):
                    self._msix_table_write(offset - self.msix.table_offset, size, value)
                    return
                if self.msix.in_pba(bar, offset, size):
                    return          # the PBA is read-only
            self._bar_write(bar, offset, size, value)

    def _bar_read(self, bar: int, offset: int, size: int) -> int:
        raise NotImplementedError

    def _bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------- work and reset

    def tick(self) -> bool:
        """Run started work to completion. Returns whether anything was done."""
        return False

    def attach_dma(self, space: "DmaSpace | None") -> None:
        """Set the I/O address space the function's DMA goes through (None: blocked).
        Functions that never master the bus ignore it."""

    def _work_queued(self) -> None:
        callback = self.on_work
        if callback is not None:
            callback()

    def attach(self, sink: InterruptSink | None) -> None:
        """Route interrupts to ``sink`` (None: nowhere). The current line level is replayed so
        the new sink starts in step with the function."""
        with self.lock:
            self.sink = sink if sink is not None else NullSink()
            if self._line:
                self.sink.intx(True)

    def reset(self) -> None:
        """Function level reset: config space back to its power-on image (command 0 so no
        decoding, no bus mastering; BARs 0; MSI/MSI-X disabled), INTx deasserted, MSI-X table
        masked, then the model's own state (:meth:`_reset_device`). vfio-pci saves and
        restores the config around its reset; that is the engine's part."""
        with self.lock:
            self._reset_device()
            self.config.data[:] = self._power_on
            self._msi_pending = 0
            self._reset_msix_table()
            self._set_request(False)

    def _reset_device(self) -> None:
        """Hook: reset the model's registers and cancel its pending work."""

    # ----------------------------------------------------------------- INTx

    def set_intx_level(self, asserted: bool) -> None:
        """The function's INTx request (level-triggered). The Interrupt Status bit follows the
        request; the line reaches the sink unless Interrupt Disable is set (pci_irq_handler)."""
        with self.lock:
            if self.interrupt_pin == 0:
                return
            self._set_request(asserted)

    def _set_request(self, asserted: bool) -> None:
        self._intx_level = asserted
        status = self.config.get(STATUS, 2)
        self.config.set(STATUS, 2, (status | STATUS_INTERRUPT) if asserted
                        else (status & ~STATUS_INTERRUPT))
        self._update_line()

    def _update_line(self) -> None:
        line = self._intx_level and not self.command & COMMAND_INTX_DISABLE
        if line != self._line:
            self._line = line
            self.sink.intx(line)

    # ----------------------------------------------------------------- MSI

    def msi_notify(self, vector: int) -> bool:
        """Send MSI ``vector`` (msi_notify). Returns whether it left the function: not when MSI
        is disabled or the vector is beyond Multiple Message Enable (ignored), masked (held
        pending), or bus mastering is off (the memory write cannot be issued; lost)."""
        with self.lock:
            if self.msi is None or not self.msi_enabled or vector >= self.msi_vectors_enabled:
                return False
            if self.msi.per_vector_mask and self._msi_mask() & (1 << vector):
                self._msi_pending |= 1 << vector
                self._sync_msi_pending()
                return False
            return self._send_msi(vector)

    def _sync_msi_pending(self) -> None:
        if self.msi is not None and self.msi.pending_offset is not None:
            self.config.set(self.msi.pending_offset, 4, self._msi_pending)

    def _send_msi(self, vector: int) -> bool:
        self._sync_msi_pending()
        if not self.bus_master:
            log.debug("%s: MSI %d dropped: bus mastering is disabled", self.name, vector)
            return False
        self.sink.msi(vector)
        return True

    # ----------------------------------------------------------------- MSI-X

    def _reset_msix_table(self) -> None:
        if self.msix is None:
            return
        entry = bytearray(MSIX_ENTRY_SIZE)
        entry[MSIX_ENTRY_VECTOR_CTRL] = MSIX_ENTRY_CTRL_MASKBIT   # masked at reset
        self._msix_table = entry * self.msix.vectors
        self._msix_pba = 0

    def _msix_table_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self._msix_table[offset:offset + size], "little")

    def _msix_table_write(self, offset: int, size: int, value: int) -> None:
        self._msix_table[offset:offset + size] = value.to_bytes(size, "little")
        self._msix_deliver_pending()

    def msix_vector_masked(self, vector: int) -> bool:
        at = vector * MSIX_ENTRY_SIZE + MSIX_ENTRY_VECTOR_CTRL
        return bool(self._msix_table[at] & MSIX_ENTRY_CTRL_MASKBIT)

    def _msix_function_masked(self) -> bool:
        assert self.msix is not None
        return bool(self.config.get(self.msix.offset + MSIX_FLAGS, 2) & MSIX_FLAGS_MASKALL)

    def msix_notify(self, vector: int) -> bool:
        """Send MSI-X ``vector`` (msix_notify): pending while masked (entry or function mask),
        lost without bus mastering, ignored when MSI-X is disabled or the vector is out of
        the table."""
        with self.lock:
            if self.msix is None or not self.msix_enabled or not 0 <= vector < self.msix.vectors:
                return False
            if self._msix_function_masked() or self.msix_vector_masked(vector):
                self._msix_pba |= 1 << vector
                return False
            return self._send_msix(vector)

    def _send_msix(self, vector: int) -> bool:
        if not self.bus_master:
            log.debug("%s: MSI-X %d dropped: bus mastering is disabled", self.name, vector)
            return False
        self.sink.msix(vector)
        return True

    def _msix_deliver_pending(self) -> None:
        if self.msix is None or not self._msix_pba or not self.msix_enabled \
                or self._msix_function_masked():
            return
        for vector in range(self.msix.vectors):
            if self._msix_pba & (1 << vector) and not self.msix_vector_masked(vector):
                self._msix_pba &= ~(1 << vector)
                self._send_msix(vector)

    # ----------------------------------------------------------------- the host kernel's part

    def host_enable_device(self) -> None:
        """pci_enable_device: turn on decoding of the spaces the function has BARs in (vfio-pci
        does this at open; its virtual command register is what the user sees)."""
        with self.lock:
            bits = 0
            for bar in self.bars.values():
                bits |= COMMAND_IO if bar.is_io else COMMAND_MEMORY
            self.config_write(COMMAND, 2, self.command | bits)

    def host_enable_msi(self, vectors: int, address: int = X86_MSI_ADDRESS,
                        data: int = 0x4000) -> None:
        """pci_alloc_irq_vectors(MSI): program address/data, Multiple Message Enable for
        ``vectors`` (rounded up to a power of two), then set MSI Enable."""
        with self.lock:
            if self.msi is None:
                raise ValueError(f"{self.name} has no MSI capability")
            if not 1 <= vectors <= self.msi.vectors:
                raise ValueError(f"{self.name}: {vectors} MSI vectors, capable of "
                                 f"{self.msi.vectors}")
            log2 = (vectors - 1).bit_length()
            self.config_write(self.msi.address_lo_offset, 4, address & 0xFFFFFFFC)
            if self.msi.address_hi_offset is not None:
                self.config_write(self.msi.address_hi_offset, 4, address >> 32)
            self.config_write(self.msi.data_offset, 2, data)
            flags = self.config.get(self.msi.flags_offset, 2) & ~MSI_FLAGS_QSIZE
            self.config_write(self.msi.flags_offset, 2, flags | (log2 << 4))
            self.config_write(self.msi.flags_offset, 2, flags | (log2 << 4) | MSI_FLAGS_ENABLE)

    def host_disable_msi(self) -> None:
        """pci_free_irq_vectors(MSI): the IRQ domain deactivates each vector, writing an
        all-zero message (msi_domain_deactivate), then MSI Enable and Multiple Message Enable
        go off. The zeros stay: the next open's virtual config starts from them (the reference
        VM shows zeros after an earlier session programmed MSI)."""
        with self.lock:
            if self.msi is None:
                return
            self.config_write(self.msi.address_lo_offset, 4, 0)
            if self.msi.address_hi_offset is not None:
                self.config_write(self.msi.address_hi_offset, 4, 0)
            self.config_write(self.msi.data_offset, 2, 0)
            flags = self.config.get(self.msi.flags_offset, 2)
            self.config_write(self.msi.flags_offset, 2,
                              flags & ~(MSI_FLAGS_ENABLE | MSI_FLAGS_QSIZE))

    def host_enable_msix(self, vectors: int, address: int = X86_MSI_ADDRESS,
                         data: int = 0x4000) -> None:
        """pci_alloc_irq_vectors(MSI-X): enable with the function masked, program and unmask the
        first ``vectors`` entries, then unmask the function (msix_setup_msi_irqs order)."""
        with self.lock:
            if self.msix is None:
                raise ValueError(f"{self.name} has no MSI-X capability")
            if not 1 <= vectors <= self.msix.vectors:
                raise ValueError(f"{self.name}: {vectors} MSI-X vectors, table of "
                                 f"{self.msix.vectors}")
            at = self.msix.offset + MSIX_FLAGS
            flags = self.config.get(at, 2)
            self.config_write(at, 2, flags | MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL)
            for vector in range(vectors):
                base = vector * MSIX_ENTRY_SIZE
                self._msix_table[base:base + 12] = (
                    (address & 0xFFFFFFFF).to_bytes(4, "little")
                    + (address >> 32).to_bytes(4, "little")
                    + (data + vector).to_bytes(4, "little"))
                self._msix_table[base + MSIX_ENTRY_VECTOR_CTRL] &= ~MSIX_ENTRY_CTRL_MASKBIT
            self.config_write(at, 2, (flags | MSIX_FLAGS_ENABLE) & ~MSIX_FLAGS_MASKALL)

    def host_disable_msix(self) -> None:
        """pci_free_irq_vectors(MSI-X): every entry masked and, as msi_domain_deactivate does
        for the vectors that were set up, its message zeroed; then the function disabled."""
        with self.lock:
            if self.msix is None:
                return
            at = self.msix.offset + MSIX_FLAGS
            for vector in range(self.msix.vectors):
                base = vector * MSIX_ENTRY_SIZE
                self._msix_table[base:base + 12] = bytes(12)
                self._msix_table[base + MSIX_ENTRY_VECTOR_CTRL] |= MSIX_ENTRY_CTRL_MASKBIT
            self.config_write(at, 2, self.config.get(at, 2)
                              & ~(MSIX_FLAGS_ENABLE | MSIX_FLAGS_MASKALL))
