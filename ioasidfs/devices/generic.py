"""The generic PCI device: whatever the configuration describes, with RAM behind its BARs.

Users describe the function their driver expects (IDs, class, BAR sizes and types, INTx, MSI and
MSI-X vector counts) and get a device that enumerates like it: sizing, capability walk, interrupt
setup all work; BAR registers read back what was written (memory, not side-effecting registers),
which is enough to test a driver's probe path, its register accessors and its interrupt plumbing.

Layout choices (deterministic, QEMU-like):

* MSI, when ``msi_vectors`` > 0, at 0x40: 64-bit, no per-vector masking (as most QEMU devices).
* MSI-X, when ``msix_vectors`` > 0, at 0x50 (0x40 without MSI), with its table and PBA alone in the
  first BAR slot the configuration leaves free, laid out as QEMU's msix_init_exclusive_bar (a
  32-bit memory BAR of at least 4 KiB, table at 0, PBA in the upper half). A configuration that
  uses all six slots cannot have MSI-X: ValueError.
* BAR RAM is allocated a page at a time on first write, so a 16 GiB BAR costs nothing until
  used; unwritten bytes read as zero.

The device never starts work of its own; :meth:`PciFunction.msi_notify`,
:meth:`PciFunction.msix_notify` and :meth:`PciFunction.set_intx_level` let a test (or a future
doorbell) raise its interrupts. :func:`create_device` builds the model a DeviceConfig names.
"""
from __future__ import annotations

from ..config import DeviceConfig
from .dma import DmaSpace
from .edu import EduDevice
from .pci import (Bar, BarKind, Identity, InterruptSink, MsiCapability, MsixCapability,
                  PciFunction, msix_exclusive_bar)

_PAGE = 4096
GENERIC_MSI_OFFSET = 0x40


class SparseMemory:
    """Zero-filled memory of any size, backed page by page as it is written."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pages: dict[int, bytearray] = {}

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"read of {length} bytes at {offset:#x} outside {self.size:#x}")
        out = bytearray()
        while length:
            page, inner = divmod(offset, _PAGE)
            n = min(length, _PAGE - inner)
            data = self._pages.get(page)
            out += data[inner:inner + n] if data is not None else bytes(n)
            offset += n
            length -= n
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"write of {len(data)} bytes at {offset:#x} outside {self.size:#x}")
        done = 0
        while done < len(data):
            page, inner = divmod(offset + done, _PAGE)
            n = min(len(data) - done, _PAGE - inner)
            store = self._pages.get(page)
            if store is None:
                store = self._pages[page] = bytearray(_PAGE)
            store[inner:inner + n] = data[done:done + n]
            done += n

    def clear(self) -> None:
        self._pages.clear()

    @property
    def resident(self) -> int:
        """Bytes actually allocated."""
        return len(self._pages) * _PAGE


class GenericDevice(PciFunction):
    """A configured PCI function with RAM-backed BARs."""

    def __init__(self, config: DeviceConfig, *, sink: InterruptSink | None = None) -> None:
        bars = [Bar.from_config(b) for b in config.bars]
        used = {slot for bar in bars for slot in bar.slots}
        msi = (MsiCapability(GENERIC_MSI_OFFSET, config.msi_vectors, True, False)
               if config.msi_vectors else None)
        msix = None
        if config.msix_vectors:
            free = [i for i in range(6) if i not in used]
            if not free:
                raise ValueError(f"{config.bdf}: MSI-X needs a free BAR slot for its table")
            bar_size, table_offset, pba_offset = msix_exclusive_bar(config.msix_vectors)
            msix_bar = Bar(free[0], bar_size, BarKind.MEM32)
            bars.append(msix_bar)
            msix = MsixCapability(GENERIC_MSI_OFFSET + (0x10 if msi else 0), config.msix_vectors,
                                  msix_bar.index, table_offset, msix_bar.index, pba_offset)
        identity = Identity(config.vendor, config.device, config.class_code, config.revision,
                            config.subsystem_vendor, config.subsystem_device)
        super().__init__(config.bdf, identity, bars, interrupt_pin=1 if config.intx else 0,
                         msi=msi, msix=msix, sink=sink)
        self.device_config = config
        self.msix_bar = msix.table_bar if msix is not None else None
        self.memory = {bar.index: SparseMemory(bar.size) for bar in bars}

    def _bar_read(self, bar: int, offset: int, size: int) -> int:
        return int.from_bytes(self.memory[bar].read(offset, size), "little")

    def _bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        self.memory[bar].write(offset, value.to_bytes(size, "little"))

    def _reset_device(self) -> None:
        """BAR memory is device RAM: a reset clears it, as a reset device reinitialises."""
        for memory in self.memory.values():
            memory.clear()


def create_device(config: DeviceConfig, *, dma: DmaSpace | None = None,
                  sink: InterruptSink | None = None) -> PciFunction:
    """The model ``config.model`` names, ready to attach to the engine. ``dma`` is only used
    by models that master the bus (edu)."""
    if config.model == "edu":
        return EduDevice(config, dma=dma, sink=sink)
    if config.model == "generic":
        return GenericDevice(config, sink=sink)
    raise ValueError(f"{config.bdf}: no device model {config.model!r}")
