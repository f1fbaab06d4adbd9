"""QEMU's educational PCI device (hw/misc/edu.c, docs/specs/edu.rst), register for register.

A driver written against ``-device edu`` in a QEMU guest must run unchanged against this model,
so every behaviour below is QEMU's, including its oddities:

* BAR0 is 1 MiB of 32-bit non-prefetchable MMIO. Below 0x80 only 4-byte accesses work, from 0x80
  4- and 8-byte ones; other sizes get all ones back (edu_mmio_read) and writes are dropped. 1- and
  2-byte accesses do not even reach edu: QEMU's memory core rejects them (``.valid`` 4..8) and a
  rejected read returns 0. Unknown offsets read all ones and ignore writes. The DMA buffer at
  0x40000 is *not* visible through MMIO: only the DMA engine reaches it.
* 0x00 identification 0x010000ed; 0x04 liveness: reads the inverse of the last value written
  (0 after power-on); 0x08 factorial: a write starts a computation unless one is running (then
  the write is dropped), the result is the 32-bit wrapped product; 0x20 status: bit 0 computing
  (read-only), bit 7 raise interrupt 0x1 when the factorial is done; 0x24 interrupt status; 0x60
  raise (ORs the value in); 0x64 acknowledge (clears it).
* Interrupts: MSI vector 0 when the function's MSI is enabled, else INTx pin A. Every raise with
  a non-zero status sends one more MSI; INTx is a level held while the status is non-zero. The
  acknowledge lowers INTx only when MSI is off (edu_lower_irq).
* DMA: 0x80 source, 0x88 destination, 0x90 count (64-bit registers; a 4-byte write sets the low
  half and clears the high half, the high half has no 4-byte alias), 0x98 command: bit 0 start,
  bit 1 direction (0 RAM to edu, 1 edu to RAM), bit 2 raise interrupt 0x100 when done. While a
  transfer runs, writes to all four registers are ignored; a command write without bit 0 is
  ignored. The RAM-side address is masked with ``dma_mask`` (28 bits by default: edu "supports
  only 256 MiB"); an address above it is silently *clamped* (QEMU logs "clamping DMA"), not
  refused. The edu-side address must lie in the 4 KiB buffer at 0x40000.

Where QEMU has undefined behaviour or no hardware equivalent, this model chooses, and records
what happened in :attr:`EduDevice.errors` (QEMU only logs):

* A buffer-side range outside 0x40000..0x40fff: QEMU logs and then reads/writes past its buffer
  (memory corruption). Here the transfer is dropped; the command still completes.
* An IOMMU fault: the transfer moves page by page as under QEMU with a vIOMMU (the reference
  VM): mapped pages move, blocked pages are lost -- not written to RAM, read as zeros into the
  buffer -- and each is in the space's fault log. No address space attached, or Bus Master
  Enable off: nothing moves at all. Either way the command completes (RUN clears, the
  interrupt is raised if asked): edu has no error status, so a driver sees a completed DMA.
* Reset: QEMU's edu has no reset handler (its registers survive a system reset). A function
  level reset here restores everything to power-on values, as FLR does on real hardware.

Asynchrony without time: a factorial or DMA started by an MMIO write is *pending* (status bit 0,
command bit 0 read back as set) until :meth:`EduDevice.tick` runs it. The daemon ticks right after
the write that queued the work, so a polling driver sees completion on its next read; a test
ticks when it wants. Jobs run in the order they were started. No timers, no threads: the same
inputs give the same register values, memory contents and interrupts every time.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Deque

from ..config import EDU_DEVICE, EDU_VENDOR, BarConfig, DeviceConfig
from ..errors import IommuFault
from .dma import DmaSpace, dma_read_pages_into, dma_write_pages
from .pci import Bar, BarKind, Identity, InterruptSink, MsiCapability, PciFunction

log = logging.getLogger("ioasidfs.devices.edu")

EDU_ID = 0x010000ED
EDU_BAR_SIZE = 1 << 20
EDU_REVISION = 0x10
EDU_CLASS = 0x00FF00                # PCI_CLASS_OTHERS
EDU_MSI_OFFSET = 0x40               # msi_init(pdev, 0, ...) takes the first free config bytes

REG_ID = 0x00
REG_LIVENESS = 0x04
REG_FACTORIAL = 0x08
REG_STATUS = 0x20
REG_IRQ_STATUS = 0x24
REG_IRQ_RAISE = 0x60
REG_IRQ_ACK = 0x64
REG_DMA_SRC = 0x80
REG_DMA_DST = 0x88
REG_DMA_COUNT = 0x90
REG_DMA_CMD = 0x98

STATUS_COMPUTING = 0x01
STATUS_IRQFACT = 0x80

FACT_IRQ = 0x00000001
DMA_IRQ = 0x00000100

DMA_CMD_RUN = 0x1
DMA_CMD_TO_RAM = 0x2                # direction bit: 1 = edu to RAM (EDU_DMA_TO_PCI)
DMA_CMD_IRQ = 0x4

DMA_START = 0x40000
DMA_SIZE = 4096
DEFAULT_DMA_MASK = (1 << 28) - 1

_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1


def factorial32(n: int) -> int:
    """n! in uint32_t arithmetic, as edu_fact_thread computes it (``ret *= val--``). From 34!
    on the product has 32 factors of two, so it wraps to 0: no need to loop 4 billion times."""
    if n >= 34:
        return 0
    result = 1
    while n > 0:
        result = (result * n) & _U32
        n -= 1
    return result


@dataclass(frozen=True)
class EduDmaError:
    """A DMA that did not move data. ``kind``: "iommu-fault" (``fault`` says where and why),
    "buffer-range" (the edu-side range left 0x40000..0x40fff), "bus-master-disabled",
    "no-address-space"."""

    kind: str
    src: int
    dst: int
    count: int
    cmd: int
    fault: IommuFault | None = None


def edu_config(bdf: str = "0000:00:01.0", group: int = 1) -> DeviceConfig:
    """The DeviceConfig of an edu device (what config.py produces for ``model = "edu"``)."""
    return DeviceConfig(bdf, group, "edu", EDU_VENDOR, EDU_DEVICE, EDU_CLASS, 0x1AF4, 0x1100,
                        EDU_REVISION, (BarConfig(0, EDU_BAR_SIZE),), True, 1, 0)


class EduDevice(PciFunction):
    """The edu model. ``dma`` is the I/O address space its DMA goes through (the one its group
    is attached to; None while it is attached to none, when every DMA is blocked)."""

    def __init__(self, config: DeviceConfig | None = None, *, dma: DmaSpace | None = None,
                 sink: InterruptSink | None = None, dma_mask: int = DEFAULT_DMA_MASK,
                 error_capacity: int = 64) -> None:
        config = config if config is not None else edu_config()
        identity = Identity(config.vendor, config.device, config.class_code, config.revision,
                            config.subsystem_vendor, config.subsystem_device)
        # edu's realize: pin A, msi_init(nr_vectors 1, 64-bit, no per-vector mask), BAR0 mem32.
        super().__init__(config.bdf, identity, [Bar(0, EDU_BAR_SIZE, BarKind.MEM32)],
                         interrupt_pin=1, msi=MsiCapability(EDU_MSI_OFFSET, 1, True, False),
                         sink=sink)
        self.dma_space = dma
        self.dma_mask = dma_mask
        self.errors: Deque[EduDmaError] = collections.deque(maxlen=error_capacity)
        self._power_on_state()

    def _power_on_state(self) -> None:
        self.addr4 = 0
        self.fact = 0
        self.status = 0
        self.irq_status = 0
        self.dma_src = 0
        self.dma_dst = 0
        self.dma_count = 0
        self.dma_cmd = 0
        self.buffer = bytearray(DMA_SIZE)
        self._jobs: Deque[str] = collections.deque()

    # ----------------------------------------------------------------- wiring

    def attach_dma(self, space: DmaSpace | None) -> None:
        """Set the address space DMA goes through (None: detached, DMA blocked)."""
        with self.lock:
            self.dma_space = space

    @property
    def work_pending(self) -> bool:
        with self.lock:
            return bool(self._jobs)

    @property
    def dma_buffer(self) -> bytes:
        """The 4 KiB buffer's contents (for tests and debugging: drivers reach it by DMA only)."""
        with self.lock:
            return bytes(self.buffer)

    # ----------------------------------------------------------------- MMIO

    def _bar_read(self, bar: int, offset: int, size: int) -> int:
        if size not in (4, 8):
            return 0                  # rejected by the memory core: unassigned_mem_read
        if offset < 0x80 and size != 4:
            return _U64
        if offset == REG_ID:
            return EDU_ID
        if offset == REG_LIVENESS:
            return self.addr4
        if offset == REG_FACTORIAL:
            return self.fact
        if offset == REG_STATUS:
            return self.status
        if offset == REG_IRQ_STATUS:
            return self.irq_status
        if offset == REG_DMA_SRC:
            return self.dma_src
        if offset == REG_DMA_DST:
            return self.dma_dst
        if offset == REG_DMA_COUNT:
            return self.dma_count
        if offset == REG_DMA_CMD:
            return self.dma_cmd
        return _U64

    def _bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        if size not in (4, 8) or (offset < 0x80 and size != 4):
            return
        if offset == REG_LIVENESS:
            self.addr4 = ~value & _U32
        elif offset == REG_FACTORIAL:
            if self.status & STATUS_COMPUTING:
                return
            self.fact = value & _U32
            self.status |= STATUS_COMPUTING
            self._queue("fact")
        elif offset == REG_STATUS:
            if value & STATUS_IRQFACT:
                self.status |= STATUS_IRQFACT
            else:
                self.status &= ~STATUS_IRQFACT
        elif offset == REG_IRQ_RAISE:
            self._raise_irq(value & _U32)
        elif offset == REG_IRQ_ACK:
            self._lower_irq(value & _U32)
        elif offset in (REG_DMA_SRC, REG_DMA_DST, REG_DMA_COUNT, REG_DMA_CMD):
            if self.dma_cmd & DMA_CMD_RUN:
                return                # dma_rw: registers are frozen while a transfer runs
            if offset == REG_DMA_SRC:
                self.dma_src = value
            elif offset == REG_DMA_DST:
                self.dma_dst = value
            elif offset == REG_DMA_COUNT:
                self.dma_count = value
            elif value & DMA_CMD_RUN:
                self.dma_cmd = value
                self._queue("dma")

    def _queue(self, job: str) -> None:
        self._jobs.append(job)
        self._work_queued()

    # ----------------------------------------------------------------- interrupts

    def _raise_irq(self, value: int) -> None:
        """edu_raise_irq: OR into the status; a non-zero status sends an MSI (each time) or
        holds INTx asserted."""
        self.irq_status |= value
        if self.irq_status:
            if self.msi_enabled:
                self.msi_notify(0)
            else:
                self.set_intx_level(True)

    def _lower_irq(self, value: int) -> None:
        """edu_lower_irq: clear bits; INTx drops when nothing is left and MSI is off."""
        self.irq_status &= ~value & _U32
        if not self.irq_status and not self.msi_enabled:
            self.set_intx_level(False)

    # ----------------------------------------------------------------- work

    def tick(self) -> bool:
        """Complete every started job, oldest first: factorials (then the interrupt if status
        bit 7 asks for it) and DMA transfers (then interrupt 0x100 if the command asked)."""
        with self.lock:
            did = bool(self._jobs)
            while self._jobs:
                job = self._jobs.popleft()
                if job == "fact":
                    self._finish_factorial()
                else:
                    self._run_dma()
            return did

    def _finish_factorial(self) -> None:
        self.fact = factorial32(self.fact)
        self.status &= ~STATUS_COMPUTING
        if self.status & STATUS_IRQFACT:
            self._raise_irq(FACT_IRQ)

    def _clamp(self, addr: int) -> int:
        clamped = addr & self.dma_mask
        if clamped != addr:
            log.info("%s: clamping DMA %#018x to %#018x", self.name, addr, clamped)
        return clamped

    def _run_dma(self) -> None:
        """edu_dma_timer."""
        cmd = self.dma_cmd
        if not cmd & DMA_CMD_RUN:
            return
        to_ram = bool(cmd & DMA_CMD_TO_RAM)
        count = self.dma_count
        buffer_addr = self.dma_src if to_ram else self.dma_dst
        error: EduDmaError | None = None
        xfer_end = buffer_addr + count
        if not (buffer_addr >= DMA_START and xfer_end <= DMA_START + DMA_SIZE and xfer_end <= _U64):
            log.warning("%s: DMA range %#018x-%#018x out of bounds (%#x-%#x)", self.name,
                        buffer_addr, (xfer_end - 1) & _U64, DMA_START, DMA_START + DMA_SIZE - 1)
            error = self._error("buffer-range")
        elif self.dma_space is None:
            error = self._error("no-address-space")
        elif not self.bus_master:
            error = self._error("bus-master-disabled")
        else:
            start = buffer_addr - DMA_START
            if to_ram:
                fault = dma_write_pages(self.dma_space, self._clamp(self.dma_dst),
                                        bytes(self.buffer[start:start + count]), device=self.name)
            else:
                fault = dma_read_pages_into(self.dma_space, self._clamp(self.dma_src),
                                            memoryview(self.buffer)[start:start + count],
                                            device=self.name)
            if fault is not None:
                error = self._error("iommu-fault", fault)
        if error is not None:
            self.errors.append(error)
        self.dma_cmd &= ~DMA_CMD_RUN
        if self.dma_cmd & DMA_CMD_IRQ:
            self._raise_irq(DMA_IRQ)

    def _error(self, kind: str, fault: IommuFault | None = None) -> EduDmaError:
        if fault is None:
            log.warning("%s: DMA not performed: %s", self.name, kind)
        return EduDmaError(kind, self.dma_src, self.dma_dst, self.dma_count, self.dma_cmd, fault)

    # ----------------------------------------------------------------- reset

    def _reset_device(self) -> None:
        self._power_on_state()
