"""The edu model against QEMU's hw/misc/edu.c: registers, access sizes, factorial, interrupts
(INTx and MSI), and real DMA into this process's memory through an IOVA translation table,
including the IOMMU fault of a DMA to an unmapped IOVA. Work is driven synchronously with
tick(): no sleeps, no threads."""
from __future__ import annotations

import ctypes
import os

import pytest

from ioasidfs.devices import pci as P
from ioasidfs.devices.edu import (DMA_CMD_IRQ, DMA_CMD_RUN, DMA_CMD_TO_RAM, DMA_IRQ, DMA_START,
                                  EDU_ID, FACT_IRQ, REG_DMA_CMD, REG_DMA_COUNT, REG_DMA_DST,
                                  REG_DMA_SRC, REG_FACTORIAL, REG_ID, REG_IRQ_ACK, REG_IRQ_RAISE,
                                  REG_IRQ_STATUS, REG_LIVENESS, REG_STATUS, STATUS_COMPUTING,
                                  STATUS_IRQFACT, EduDevice, edu_config, factorial32)
from ioasidfs.devices.dma import DmaSpace, FaultLog
from ioasidfs.devices.pci import InterruptLog
from ioasidfs.engine import translate as T
from ioasidfs.engine.translate import PROT_READ, PROT_WRITE, FaultReason, OwnerRegistry

PG = 4096
RW = PROT_READ | PROT_WRITE
BACKENDS = [
    "python",
    pytest.param("c", marks=pytest.mark.skipif(not T.C_AVAILABLE, reason="C extension not built")),
]


class Rig:
    """An edu device whose DMA goes through a table mapping IOVAs onto 64 KiB of this process's
    memory, with an interrupt log; enabled the way vfio-pci + a driver enable it (memory decode
    and bus mastering on)."""

    def __init__(self, backend: str = "python") -> None:
        self.table = T.new_table(PG, backend=backend)
        self.owners = OwnerRegistry()
        self.me = self.owners.token((os.getpid(), 0))
        self.faults = FaultLog(capacity=8)
        self.space = DmaSpace(self.table, self.owners.key, self.faults)
        self.mem = ctypes.create_string_buffer(16 * PG)
        self.base = ctypes.addressof(self.mem)
        self.irq = InterruptLog()
        self.edu = EduDevice(edu_config("0000:00:01.0"), dma=self.space, sink=self.irq)
        self.edu.host_enable_device()
        self.edu.config_write(P.COMMAND, 2, self.edu.command | P.COMMAND_MASTER)

    def r32(self, offset: int) -> int:
        return self.edu.mmio_read(0, offset, 4)

    def w32(self, offset: int, value: int) -> None:
        self.edu.mmio_write(0, offset, 4, value)

    def r64(self, offset: int) -> int:
        return self.edu.mmio_read(0, offset, 8)

    def w64(self, offset: int, value: int) -> None:
        self.edu.mmio_write(0, offset, 8, value)

    def dma(self, src: int, dst: int, count: int, cmd: int) -> None:
        self.w64(REG_DMA_SRC, src)
        self.w64(REG_DMA_DST, dst)
        self.w64(REG_DMA_COUNT, count)
        self.w64(REG_DMA_CMD, cmd)

    def at(self, offset: int, n: int) -> bytes:
        return self.mem.raw[offset:offset + n]


@pytest.fixture(params=BACKENDS)
def rig(request: pytest.FixtureRequest) -> Rig:
    return Rig(request.param)


# --------------------------------------------------------------------------- registers

def test_identification_and_liveness(rig: Rig) -> None:
    assert rig.r32(REG_ID) == EDU_ID == 0x010000ED
    assert rig.r32(REG_LIVENESS) == 0                   # addr4 starts at 0
    rig.w32(REG_LIVENESS, 0x12345678)
    assert rig.r32(REG_LIVENESS) == 0xEDCBA987
    rig.w32(REG_ID, 0)                                  # read-only
    assert rig.r32(REG_ID) == EDU_ID


def test_access_sizes_as_qemu(rig: Rig) -> None:
    # Below 0x80 only 4 bytes: an 8-byte read is answered by edu with all ones ...
    assert rig.r64(REG_ID) == 0xFFFFFFFF_FFFFFFFF
    rig.w64(REG_LIVENESS & ~7, 0)                       # ... and an 8-byte write is dropped
    assert rig.r32(REG_LIVENESS) == 0
    # 1- and 2-byte accesses never reach edu: the memory core rejects them, a read gives 0.
    assert rig.edu.mmio_read(0, REG_ID, 1) == 0
    assert rig.edu.mmio_read(0, REG_ID, 2) == 0
    rig.edu.mmio_write(0, REG_LIVENESS, 2, 0xFFFF)
    assert rig.r32(REG_LIVENESS) == 0
    # From 0x80, 4 and 8 bytes; the DMA registers are 64-bit.
    rig.w64(REG_DMA_SRC, 0x1_2345_6789)
    assert rig.r64(REG_DMA_SRC) == 0x1_2345_6789
    assert rig.r32(REG_DMA_SRC) == 0x2345_6789
    assert rig.r32(REG_DMA_SRC + 4) == 0xFFFFFFFF        # no alias for the high half
    rig.w32(REG_DMA_SRC, 0xABC)                         # a 4-byte write clears the high half
    assert rig.r64(REG_DMA_SRC) == 0xABC


def test_unknown_offsets_and_the_buffer_are_not_mmio(rig: Rig) -> None:
    for offset in (0x0C, 0x10, 0x28, 0x60, 0x64, 0xA0, 0x1000, DMA_START, (1 << 20) - 4):
        assert rig.r32(offset) == 0xFFFFFFFF
    rig.w32(DMA_START, 0x11223344)                      # the DMA buffer is reachable by DMA only
    assert rig.edu.dma_buffer == bytes(4096)


def test_factorial_is_asynchronous_until_ticked(rig: Rig) -> None:
    works: list[int] = []
    rig.edu.on_work = lambda: works.append(1)
    rig.w32(REG_FACTORIAL, 10)
    assert works == [1] and rig.edu.work_pending
    assert rig.r32(REG_STATUS) == STATUS_COMPUTING
    assert rig.r32(REG_FACTORIAL) == 10                 # not computed yet
    rig.w32(REG_FACTORIAL, 5)                           # dropped while computing
    assert rig.edu.tick() is True
    assert rig.r32(REG_STATUS) == 0 and rig.r32(REG_FACTORIAL) == 3628800
    assert rig.edu.tick() is False and not rig.edu.work_pending
    assert rig.irq.events == []                         # status bit 7 was not set
    rig.w32(REG_STATUS, 0xFFFFFFFF)                     # only bit 7 is writable
    assert rig.r32(REG_STATUS) == STATUS_IRQFACT
    rig.w32(REG_FACTORIAL, 13)
    assert rig.r32(REG_STATUS) == STATUS_IRQFACT | STATUS_COMPUTING
    rig.edu.tick()
    assert rig.r32(REG_FACTORIAL) == 6227020800 & 0xFFFFFFFF     # uint32_t wraps
    assert rig.r32(REG_IRQ_STATUS) == FACT_IRQ and rig.irq.take() == [("intx", 1)]
    rig.w32(REG_STATUS, 0)
    assert rig.r32(REG_STATUS) == 0


def test_factorial32() -> None:
    assert [factorial32(n) for n in range(6)] == [1, 1, 2, 6, 24, 120]
    assert factorial32(12) == 479001600
    product = 1
    for n in range(1, 40):
        product *= n
        assert factorial32(n) == product & 0xFFFFFFFF
    assert factorial32(0xFFFFFFFF) == 0


# --------------------------------------------------------------------------- interrupts

def test_intx_raise_and_acknowledge(rig: Rig) -> None:
    rig.w32(REG_IRQ_RAISE, 0x5)
    assert rig.r32(REG_IRQ_STATUS) == 0x5
    assert rig.edu.intx_asserted and rig.irq.take() == [("intx", 1)]
    assert rig.edu.config_read(P.STATUS, 2) & P.STATUS_INTERRUPT
    rig.w32(REG_IRQ_RAISE, 0x10)                        # already asserted: level, no new event
    assert rig.irq.take() == []
    rig.w32(REG_IRQ_ACK, 0x4)
    assert rig.r32(REG_IRQ_STATUS) == 0x11 and rig.edu.intx_asserted
    rig.w32(REG_IRQ_ACK, 0xFFFFFFFF)
    assert rig.r32(REG_IRQ_STATUS) == 0
    assert not rig.edu.intx_asserted and rig.irq.take() == [("intx", 0)]
    rig.w32(REG_IRQ_RAISE, 0)                           # nothing raised, nothing signalled
    assert rig.irq.take() == []


def test_msi_replaces_intx_once_enabled(rig: Rig) -> None:
    rig.w32(REG_IRQ_RAISE, 1)
    assert rig.irq.take() == [("intx", 1)]
    rig.edu.host_enable_msi(1)                          # what SET_IRQS(MSI) makes the kernel do
    assert rig.irq.take() == [("intx", 0)]              # MSI enable deasserts INTx
    rig.w32(REG_IRQ_RAISE, 2)
    rig.w32(REG_IRQ_RAISE, 0)                           # status still non-zero: another MSI
    assert rig.irq.take() == [("msi", 0), ("msi", 0)]
    rig.w32(REG_IRQ_ACK, 3)                             # acknowledging sends nothing
    assert rig.r32(REG_IRQ_STATUS) == 0 and rig.irq.take() == []
    rig.edu.host_disable_msi()
    rig.w32(REG_IRQ_RAISE, 8)
    assert rig.irq.take() == [("intx", 1)]


def test_msi_without_bus_mastering_is_lost(rig: Rig) -> None:
    rig.edu.host_enable_msi(1)
    rig.edu.config_write(P.COMMAND, 2, P.COMMAND_MEMORY)
    rig.w32(REG_IRQ_RAISE, 1)
    assert rig.irq.take() == [] and rig.r32(REG_IRQ_STATUS) == 1


def test_intx_disable_masks_the_line(rig: Rig) -> None:
    rig.edu.config_write(P.COMMAND, 2, rig.edu.command | P.COMMAND_INTX_DISABLE)
    rig.w32(REG_IRQ_RAISE, 1)
    assert rig.irq.take() == [] and rig.edu.config_read(P.STATUS, 2) & P.STATUS_INTERRUPT
    rig.edu.config_write(P.COMMAND, 2, rig.edu.command & ~P.COMMAND_INTX_DISABLE)
    assert rig.irq.take() == [("intx", 1)]


# --------------------------------------------------------------------------- DMA

def test_dma_ram_to_device_to_ram(rig: Rig) -> None:
    rig.table.map(0x100000, 2 * PG, rig.base, RW, rig.me)
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(1000))
    rig.mem[100:1100] = pattern
    rig.edu.host_enable_msi(1)
    rig.dma(0x100000 + 100, DMA_START + 16, len(pattern), DMA_CMD_RUN | DMA_CMD_IRQ)
    assert rig.r64(REG_DMA_CMD) == DMA_CMD_RUN | DMA_CMD_IRQ     # running until ticked
    rig.w64(REG_DMA_SRC, 0)                             # frozen while running
    rig.w64(REG_DMA_CMD, DMA_CMD_RUN | DMA_CMD_TO_RAM)
    assert rig.r64(REG_DMA_SRC) == 0x100000 + 100
    assert rig.edu.dma_buffer == bytes(4096)            # nothing moved yet
    assert rig.edu.tick() is True
    assert rig.edu.dma_buffer[16:1016] == pattern
    assert rig.r64(REG_DMA_CMD) == DMA_CMD_IRQ          # RUN cleared, the rest stays
    assert rig.r32(REG_IRQ_STATUS) == DMA_IRQ and rig.irq.take() == [("msi", 0)]
    rig.w32(REG_IRQ_ACK, DMA_IRQ)
    # And back, to the second page, without an interrupt.
    rig.dma(DMA_START + 16, 0x101000 + 8, len(pattern), DMA_CMD_RUN | DMA_CMD_TO_RAM)
    rig.edu.tick()
    assert rig.at(PG + 8, len(pattern)) == pattern
    assert rig.r32(REG_IRQ_STATUS) == 0 and rig.irq.take() == []
    assert rig.faults.records() == [] and list(rig.edu.errors) == []


def test_command_without_run_bit_is_ignored(rig: Rig) -> None:
    rig.w64(REG_DMA_CMD, DMA_CMD_IRQ | DMA_CMD_TO_RAM)
    assert rig.r64(REG_DMA_CMD) == 0 and not rig.edu.work_pending


def test_dma_to_an_unmapped_iova_faults_and_writes_nothing(rig: Rig) -> None:
    rig.table.map(0x100000, PG, rig.base, RW, rig.me)
    rig.mem[0:64] = b"\xAA" * 64
    rig.dma(0x100000, DMA_START, 64, DMA_CMD_RUN)
    rig.edu.tick()
    before = rig.mem.raw
    rig.dma(DMA_START, 0x200000, 64, DMA_CMD_RUN | DMA_CMD_TO_RAM | DMA_CMD_IRQ)
    rig.edu.tick()
    assert rig.mem.raw == before
    [error] = rig.edu.errors
    assert error.kind == "iommu-fault" and error.fault is not None
    assert (error.fault.iova, error.fault.access, error.fault.reason) == (
        0x200000, "write", FaultReason.NOT_MAPPED)
    [rec] = rig.faults.records()
    assert (rec.iova, rec.device, rec.access) == (0x200000, "0000:00:01.0", "write")
    # edu has no error status: the command completes and the interrupt is still raised.
    assert rig.r64(REG_DMA_CMD) & DMA_CMD_RUN == 0
    assert rig.r32(REG_IRQ_STATUS) == DMA_IRQ


def test_dma_read_fault_leaves_the_buffer(rig: Rig) -> None:
    rig.table.map(0x100000, PG, rig.base, PROT_WRITE, rig.me)   # device may not read it
    rig.dma(0x100000, DMA_START, 32, DMA_CMD_RUN)
    rig.edu.tick()
    assert rig.edu.dma_buffer == bytes(4096)
    assert rig.edu.errors[-1].fault is not None
    assert rig.edu.errors[-1].fault.reason is FaultReason.NO_PERMISSION


def test_ram_addresses_are_clamped_to_the_dma_mask(rig: Rig) -> None:
    rig.table.map(0x100000, PG, rig.base, RW, rig.me)
    rig.mem[0:4] = b"edu!"
    rig.dma(0x7_1010_0000, DMA_START, 4, DMA_CMD_RUN)  # 28-bit mask: reads IOVA 0x100000
    rig.edu.tick()
    assert rig.edu.dma_buffer[:4] == b"edu!" and list(rig.edu.errors) == []
    wide = EduDevice(dma=rig.space, dma_mask=(1 << 64) - 1)
    wide.host_enable_device()
    wide.config_write(P.COMMAND, 2, wide.command | P.COMMAND_MASTER)
    for reg, value in ((REG_DMA_SRC, 0x1000_0000 + 0x100000), (REG_DMA_DST, DMA_START),
                       (REG_DMA_COUNT, 4), (REG_DMA_CMD, DMA_CMD_RUN)):
        wide.mmio_write(0, reg, 8, value)
    wide.tick()
    assert wide.errors[-1].kind == "iommu-fault"        # not clamped: 0x10100000 is unmapped


def test_buffer_range_is_checked(rig: Rig) -> None:
    rig.table.map(0x100000, 2 * PG, rig.base, RW, rig.me)
    before = rig.mem.raw
    for src, count in ((DMA_START + 4000, 200), (DMA_START - 8, 16), (DMA_START, (1 << 64) - 1)):
        rig.dma(src, 0x100000, count, DMA_CMD_RUN | DMA_CMD_TO_RAM | DMA_CMD_IRQ)
        rig.edu.tick()
        assert rig.edu.errors[-1].kind == "buffer-range"
        assert rig.r64(REG_DMA_CMD) & DMA_CMD_RUN == 0
    assert rig.mem.raw == before and rig.faults.records() == []
    rig.dma(DMA_START + 4000, 0x100000, 96, DMA_CMD_RUN | DMA_CMD_TO_RAM)   # ends at the end
    rig.edu.tick()
    assert len(rig.edu.errors) == 3


def test_dma_needs_bus_mastering_and_an_address_space(rig: Rig) -> None:
    rig.table.map(0x100000, PG, rig.base, RW, rig.me)
    rig.mem[0:8] = b"12345678"
    rig.edu.config_write(P.COMMAND, 2, P.COMMAND_MEMORY)
    rig.dma(0x100000, DMA_START, 8, DMA_CMD_RUN)
    rig.edu.tick()
    assert rig.edu.errors[-1].kind == "bus-master-disabled" and rig.edu.dma_buffer == bytes(4096)
    rig.edu.config_write(P.COMMAND, 2, P.COMMAND_MEMORY | P.COMMAND_MASTER)
    rig.edu.attach_dma(None)
    rig.dma(0x100000, DMA_START, 8, DMA_CMD_RUN)
    rig.edu.tick()
    assert rig.edu.errors[-1].kind == "no-address-space"
    rig.edu.attach_dma(rig.space)
    rig.dma(0x100000, DMA_START, 8, DMA_CMD_RUN)
    rig.edu.tick()
    assert rig.edu.dma_buffer[:8] == b"12345678"


def test_jobs_complete_in_the_order_started(rig: Rig) -> None:
    rig.table.map(0x100000, PG, rig.base, RW, rig.me)
    rig.edu.host_enable_msi(1)
    rig.w32(REG_STATUS, STATUS_IRQFACT)
    rig.dma(0x100000, DMA_START, 8, DMA_CMD_RUN | DMA_CMD_IRQ)
    rig.w32(REG_FACTORIAL, 4)
    rig.edu.tick()
    assert rig.r32(REG_IRQ_STATUS) == DMA_IRQ | FACT_IRQ
    assert rig.irq.take() == [("msi", 0), ("msi", 0)]
    assert rig.r32(REG_FACTORIAL) == 24


def test_memory_decode_off_hides_the_registers(rig: Rig) -> None:
    rig.edu.config_write(P.COMMAND, 2, P.COMMAND_MASTER)
    assert rig.r32(REG_ID) == 0xFFFFFFFF
    rig.w32(REG_LIVENESS, 1)
    rig.edu.config_write(P.COMMAND, 2, P.COMMAND_MASTER | P.COMMAND_MEMORY)
    assert rig.r32(REG_LIVENESS) == 0


def test_reset(rig: Rig) -> None:
    rig.table.map(0x100000, PG, rig.base, RW, rig.me)
    rig.w32(REG_LIVENESS, 7)
    rig.w32(REG_STATUS, STATUS_IRQFACT)
    rig.w32(REG_IRQ_RAISE, 0x20)
    rig.dma(0x100000, DMA_START, 8, DMA_CMD_RUN)        # started, not run
    rig.w32(REG_FACTORIAL, 3)
    rig.edu.reset()
    assert rig.irq.take() == [("intx", 1), ("intx", 0)]
    assert not rig.edu.work_pending and rig.edu.tick() is False
    assert rig.edu.command == 0                          # decoding off again, BAR0 cleared
    assert rig.edu.config_read(P.BASE_ADDRESS_0, 4) == 0
    rig.edu.host_enable_device()
    assert [rig.r32(r) for r in (REG_LIVENESS, REG_FACTORIAL, REG_STATUS, REG_IRQ_STATUS)] == \
        [0, 0, 0, 0]
    assert [rig.r64(r) for r in (REG_DMA_SRC, REG_DMA_DST, REG_DMA_COUNT, REG_DMA_CMD)] == \
        [0, 0, 0, 0]
    assert rig.edu.dma_buffer == bytes(4096) and rig.r32(REG_ID) == EDU_ID


def test_deterministic() -> None:
    def run() -> tuple[list[tuple[str, int]], list[int], bytes]:
        rig = Rig()
        rig.table.map(0x100000, PG, rig.base, RW, rig.me)
        rig.mem[0:256] = bytes(range(256))
        rig.w32(REG_STATUS, STATUS_IRQFACT)
        rig.w32(REG_FACTORIAL, 9)
        rig.dma(0x100000, DMA_START, 256, DMA_CMD_RUN | DMA_CMD_IRQ)
        rig.edu.tick()
        rig.dma(DMA_START, 0x100800, 256, DMA_CMD_RUN | DMA_CMD_TO_RAM | DMA_CMD_IRQ)
        rig.edu.tick()
        regs = [rig.r32(r) for r in (REG_FACTORIAL, REG_STATUS, REG_IRQ_STATUS)]
        return rig.irq.events, regs, rig.at(0x800, 256)
    assert run() == run()


def test_freeing_msi_vectors_zeroes_the_message(rig: Rig) -> None:
    """msi_domain_deactivate writes an all-zero message when the host frees its vectors: the
    reference VM's next session reads zeros at 0x44.. (edu_driver then device_ioctls, one boot)."""
    msi = rig.edu.msi
    assert msi is not None
    rig.edu.host_enable_msi(1)
    assert rig.edu.config_read(msi.address_lo_offset, 4) == 0xFEE00000
    assert rig.edu.config_read(msi.data_offset, 2) == 0x4000
    rig.edu.host_disable_msi()
    assert rig.edu.config_read(msi.address_lo_offset, 4) == 0
    assert rig.edu.config_read(msi.data_offset, 2) == 0
    assert rig.edu.config_read(msi.flags_offset, 2) & 0x71 == 0   # enable, multiple message
