"""vfio-pci's interrupt layer (ioasidfs.engine.irqs) against the real kernel's recorded answers.

``test_device_ioctls_irq_transcript`` ports the GET_IRQ_INFO / SET_IRQS part of
tests/c/device_ioctls.c line for line and compares what it prints with the lines the program
printed in the reference VM (tests/expected/device_ioctls.txt). The edu_driver tests replay the
interrupt part of tests/c/edu_driver.c with the edu model raising real interrupts through its
registers. The rest covers what those programs do not reach: several MSI vectors, MSI-X, ERR on
a PCI Express function, the virtual INTx Disable, the unmask eventfd, and teardown.
"""
from __future__ import annotations

import errno
import struct
from pathlib import Path
from typing import Callable

import pytest

# The engine first: importing a device model first runs into the devices <-> engine import
# cycle (ioasidfs.devices.dma imports the engine, which imports the device models).
from ioasidfs.engine.caller import Caller, EventSignal, FakeEventfd, FakeMemory  # isort: skip
from ioasidfs.config import BarConfig, DeviceConfig
from ioasidfs.devices import pci as P
from ioasidfs.devices.edu import REG_IRQ_ACK, REG_IRQ_RAISE, EduDevice, edu_config
from ioasidfs.devices.generic import GenericDevice
from ioasidfs.engine.irqs import VfioPciIrqs
from ioasidfs.errors import KernelError
from ioasidfs.uapi import vfio as V

EXPECTED = Path(__file__).resolve().parents[1] / "expected"
BUF = 0x10000              # the argument buffer (abuf)
EDGE = 0x40000             # a page whose successor is unmapped
PIPE, EFD, EFD2, CLOSED = 3, 5, 6, 1000    # the fds device_ioctls.c has

D_NONE, D_BOOL, D_EFD = V.VFIO_IRQ_SET_DATA_NONE, V.VFIO_IRQ_SET_DATA_BOOL, \
    V.VFIO_IRQ_SET_DATA_EVENTFD
A_MASK, A_UNMASK, A_TRIG = V.VFIO_IRQ_SET_ACTION_MASK, V.VFIO_IRQ_SET_ACTION_UNMASK, \
    V.VFIO_IRQ_SET_ACTION_TRIGGER
INTX, MSI, MSIX, ERR, REQ = 0, 1, 2, 3, 4


# --------------------------------------------------------------------------- eventfds

class Eventfd:
    """One eventfd of the client: a counter shared by every reference the engine takes."""

    def __init__(self) -> None:
        self.counter = 0
        self.refs: list[EventfdRef] = []

    def read(self) -> int:
        """read(2) on it: the counter, reset (0 means the C program's "empty")."""
        value, self.counter = self.counter, 0
        return value


class EventfdRef(FakeEventfd):
    """The engine's reference (eventfd_ctx): a FakeEventfd, so a double close or a signal
    after close fails the test, that also counts on the eventfd it refers to."""

    def __init__(self, eventfd: Eventfd) -> None:
        super().__init__()
        self.eventfd = eventfd
        eventfd.refs.append(self)

    def signal(self) -> None:
        super().signal()
        self.eventfd.counter += 1


class Client:
    """A caller with FakeMemory, a pipe at fd 3 and eventfds at 5 and 6; fd 1000 is closed."""

    def __init__(self) -> None:
        self.memory = FakeMemory()
        self.memory.map(BUF, 8192)
        self.memory.map(EDGE, 4096)
        self.eventfds = {EFD: Eventfd(), EFD2: Eventfd()}
        self.caller = Caller(pid=1, memory=self.memory, eventfd=self._eventfd)

    def _eventfd(self, fd: int) -> EventSignal:
        if fd in self.eventfds:
            return EventfdRef(self.eventfds[fd])
        if fd == PIPE:
            raise KernelError(errno.EINVAL, "a pipe is not an eventfd")
        raise KernelError(errno.EBADF, f"fd {fd} is not open")

    def new_eventfd(self, fd: int) -> Eventfd:
        self.eventfds[fd] = Eventfd()
        return self.eventfds[fd]

    def references(self) -> list[EventfdRef]:
        return [ref for efd in self.eventfds.values() for ref in efd.refs]

    def open_references(self) -> list[EventfdRef]:
        return [ref for ref in self.references() if not ref.closed]


def errno_of(call: Callable[[], int]) -> int:
    """0 for success, else the errno the call failed with."""
    try:
        assert call() == 0
    except KernelError as error:
        return error.errno
    return 0


# --------------------------------------------------------------------------- the rig

class Rig:
    """A device fd's interrupt layer over a function, and the client driving it."""

    def __init__(self, function: P.PciFunction) -> None:
        self.function = function
        function.host_enable_device()
        # The drivers turn bus mastering on (an MSI is a memory write).
        function.config_write(P.COMMAND, 2, function.command | P.COMMAND_MASTER)
        self.client = Client()
        self.irqs = VfioPciIrqs(function)

    @property
    def memory(self) -> FakeMemory:
        return self.client.memory

    def efd(self, fd: int = EFD) -> Eventfd:
        return self.client.eventfds[fd]

    def set_irqs_at(self, arg: int) -> int:
        return errno_of(lambda: self.irqs.set_irqs(self.client.caller, arg))

    def set_raw(self, flags: int, index: int, start: int, count: int, data: bytes = b"",
                argsz: int = 0) -> int:
        """device_ioctls.c set_irqs_raw: the buffer zeroed, header then data."""
        self.memory.write(BUF, bytes(4096))
        header = V.IRQ_SET.pack(argsz=argsz or 20 + len(data), flags=flags, index=index,
                                start=start, count=count)
        self.memory.write(BUF, header[:20] + data)
        return self.set_irqs_at(BUF)

    def none(self, action: int, index: int, start: int = 0, count: int = 1) -> int:
        return self.set_raw(D_NONE | action, index, start, count)

    def bool_(self, action: int, index: int, value: int) -> int:
        return self.set_raw(D_BOOL | action, index, 0, 1, bytes([value]))

    def fd(self, action: int, index: int, fd: int, start: int = 0) -> int:
        return self.set_raw(D_EFD | action, index, start, 1, struct.pack("<i", fd))

    def fds(self, action: int, index: int, start: int, fds: list[int]) -> int:
        return self.set_raw(D_EFD | action, index, start, len(fds),
                            struct.pack(f"<{len(fds)}i", *fds))


def edu_rig() -> Rig:
    return Rig(EduDevice(edu_config("0000:00:01.0")))


def generic_rig(*, intx: bool = True, msi: int = 0, msix: int = 0) -> Rig:
    config = DeviceConfig("0000:00:04.0", 4, "generic", 0x8086, 0x10D3, 0x020000, 0x8086,
                          0xA01F, 0, (BarConfig(0, 4096),), intx, msi, msix)
    return Rig(GenericDevice(config))


# --------------------------------------------------------------------------- the transcript

class Transcript:
    """labels.h: "<label> = <ret>" lines, a repeated label gets " #n"."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.seen: dict[str, int] = {}
        self.cur = ""

    def uniq(self, label: str) -> str:
        self.seen[label] = self.seen.get(label, 0) + 1
        n = self.seen[label]
        self.cur = label if n == 1 else f"{label} #{n}"
        return self.cur

    def report(self, label: str, err: int) -> None:
        self.uniq(label)
        self.lines.append(f"{self.cur} = " + (f"-1 {errno.errorcode[err]}" if err else "0"))

    def note(self, label: str, text: str) -> None:
        self.uniq(label)
        self.lines.append(f"{self.cur} = {text}")

    def out(self, text: str) -> None:
        self.lines.append(f"{self.cur}.out = {text}")


def _flag_names(flags: int) -> str:
    names = ["NONE", "BOOL", "EVENTFD", "MASK", "UNMASK", "TRIGGER"]
    parts = [name for bit, name in enumerate(names) if flags & (1 << bit)]
    if flags & ~0x3F:
        parts.append(f"0x{flags & ~0x3F:x}")
    return "|".join(parts) or "0"


def _index_name(index: int) -> str:
    return {0: "INTX", 1: "MSI", 2: "MSIX", 3: "ERR", 4: "REQ"}.get(index, f"index{index}")


def replay_device_ioctls(rig: Rig) -> list[str]:
    """The GET_IRQ_INFO and SET_IRQS part of device_ioctls.c main(), in its order."""
    t = Transcript()
    mem = rig.memory
    fd_names = {EFD: "efd", EFD2: "efd2", PIPE: "pipe", CLOSED: "1000 (closed)"}

    def rd32(off: int) -> int:
        value: int = struct.unpack("<I", mem.read(BUF + off, 4))[0]
        return value

    def irq_info(index: int, argsz: int) -> None:
        mem.write(BUF, b"\xa5" * 4096)
        mem.write(BUF, struct.pack("<I", argsz))
        mem.write(BUF + 8, struct.pack("<I", index))
        label = (f"GET_IRQ_INFO(index={index})" if argsz == 16
                 else f"GET_IRQ_INFO(index={index},argsz={argsz})")
        t.report(label, errno_of(lambda: rig.irqs.get_irq_info(rig.client.caller, BUF)))
        t.out(f"argsz={rd32(0)} flags=0x{rd32(4):x} index={rd32(8)} count=0x{rd32(12):x} "
              f"u32@16=0x{rd32(16):x}")

    def set_raw(p: str, argsz: int, flags: int, index: int, start: int, count: int,
                data: bytes = b"", desc: str | None = None) -> None:
        label = f"{p}: SET_IRQS({_index_name(index)},{_flag_names(flags)},start={start}," \
                f"count={count}"
        if desc:
            label += f",{desc}"
        if argsz:
            label += f",argsz={argsz}"
        t.report(label + ")", rig.set_raw(flags, index, start, count, data, argsz))

    def none(p: str, action: int, index: int, start: int, count: int) -> None:
        set_raw(p, 0, D_NONE | action, index, start, count)

    def bool_(p: str, action: int, index: int, value: int) -> None:
        set_raw(p, 0, D_BOOL | action, index, 0, 1, bytes([value]), f"bool={value}")

    def efd(p: str, action: int, index: int, fd: int) -> None:
        set_raw(p, 0, D_EFD | action, index, 0, 1, struct.pack("<i", fd),
                f"fd={fd_names.get(fd, str(fd))}")

    def check(p: str, fd: int) -> None:
        value = rig.efd(fd).read()
        t.note(f"{p}: read({fd_names[fd]})", str(value) if value else "empty")

    # ---- GET_IRQ_INFO ----
    t.report("GET_IRQ_INFO(NULL)", errno_of(lambda: rig.irqs.get_irq_info(rig.client.caller, 0)))
    for i in range(6):
        irq_info(i, 16)
    irq_info(0xFFFFFFFF, 16)
    irq_info(0, 15)
    irq_info(0, 0)
    irq_info(1, 4096)

    # ---- SET_IRQS: header, data and action validation ----
    p = "validate"
    t.report("validate: SET_IRQS(NULL)", rig.set_irqs_at(0))
    set_raw(p, 19, D_NONE | A_TRIG, 0, 0, 0)
    set_raw(p, 0xFFFFFFFF, D_NONE | A_TRIG, 0, 0, 0)
    none(p, A_TRIG, 5, 0, 0)
    none(p, A_TRIG, 0xFFFFFFFF, 0, 0)
    none(p, A_TRIG, 0, 0, 0xFFFFFFFF)
    none(p, A_TRIG, 0, 1, 0xFFFFFFFE)
    none(p, A_TRIG, 0, 2, 0xFFFFFFFD)
    none(p, A_TRIG, 0, 0xFFFFFFFF, 0)
    none(p, A_TRIG | 0x40, 0, 0, 0)
    none(p, A_TRIG | 0x80000000, 0, 0, 0)
    none(p, A_TRIG, 0, 1, 0)
    none(p, A_TRIG, 0, 0, 2)
    none(p, A_TRIG, 1, 1, 0)
    none(p, A_TRIG, 1, 0, 2)
    none(p, A_TRIG, 2, 0, 0)
    none(p, A_TRIG, 3, 0, 0)
    none(p, A_TRIG, 4, 1, 0)
    set_raw(p, 0, A_TRIG, 0, 0, 0, desc="no data type")
    set_raw(p, 0, D_NONE | D_BOOL | A_TRIG, 0, 0, 0)
    set_raw(p, 0, D_BOOL | D_EFD | A_TRIG, 0, 0, 1)
    set_raw(p, 20, D_BOOL | A_TRIG, 0, 0, 1, desc="no data")
    set_raw(p, 23, D_EFD | A_TRIG, 0, 0, 1, b"\xff\xff\xff", "3 bytes of fd")
    edge = EDGE + 4096 - 20      # the header fits, the fd after it is unmapped
    for flags, label in ((D_EFD | A_TRIG, "EVENTFD|TRIGGER"), (D_EFD, "EVENTFD")):
        mem.write(edge, V.IRQ_SET.pack(argsz=24, flags=flags, index=0, start=0, count=1)[:20])
        t.report(f"validate: SET_IRQS(INTX,{label},start=0,count=1,fd unreadable)",
                 rig.set_irqs_at(edge))
    none(p, 0, 0, 0, 0)
    none(p, 0, 0, 0, 1)
    none(p, A_MASK | A_UNMASK, 0, 0, 1)
    none(p, A_MASK | A_TRIG, 0, 0, 1)
    none(p, A_MASK | A_UNMASK | A_TRIG, 0, 0, 1)
    none(p, A_MASK, 1, 0, 1)
    none(p, A_UNMASK, 1, 0, 1)
    none(p, A_MASK, 4, 0, 1)
    none(p, A_UNMASK, 4, 0, 1)
    efd(p, A_MASK, 1, EFD)
    efd(p, A_MASK, 0, EFD)

    # ---- INTx ----
    p = "intx"
    none(p, A_TRIG, 0, 0, 0)
    none(p, A_TRIG, 0, 0, 1)
    bool_(p, A_TRIG, 0, 1)
    none(p, A_MASK, 0, 0, 1)
    none(p, A_UNMASK, 0, 0, 1)
    efd(p, A_UNMASK, 0, EFD2)
    efd(p, A_TRIG, 0, PIPE)
    efd(p, A_TRIG, 0, CLOSED)
    efd(p, A_TRIG, 0, -2)
    none(p, A_TRIG, 0, 0, 0)
    efd(p, A_TRIG, 0, -1)
    none(p, A_TRIG, 0, 0, 1)
    efd(p, A_TRIG, 0, EFD)
    none(p, A_TRIG, 0, 0, 1)
    check(p, EFD)
    bool_(p, A_TRIG, 0, 1)
    check(p, EFD)
    bool_(p, A_TRIG, 0, 0)
    check(p, EFD)
    none(p, A_TRIG, 0, 0, 2)
    set_raw(p, 0, D_EFD | A_TRIG, 0, 0, 0)
    efd(p, A_MASK, 0, EFD)
    none(p, A_MASK, 0, 0, 1)
    bool_(p, A_MASK, 0, 1)
    bool_(p, A_MASK, 0, 0)
    none(p, A_MASK, 0, 0, 0)
    none(p, A_TRIG, 0, 0, 1)
    check(p, EFD)
    none(p, A_UNMASK, 0, 0, 1)
    check(p, EFD)
    bool_(p, A_UNMASK, 0, 1)
    bool_(p, A_UNMASK, 0, 0)
    efd(p, A_UNMASK, 0, PIPE)
    efd(p, A_UNMASK, 0, CLOSED)
    efd(p, A_UNMASK, 0, EFD2)
    efd(p, A_UNMASK, 0, -1)
    efd(p, A_UNMASK, 0, -1)
    check(p, EFD2)
    efd(p, A_TRIG, 0, EFD2)
    none(p, A_TRIG, 0, 0, 1)
    check(p, EFD)
    check(p, EFD2)
    efd(p, A_TRIG, 0, PIPE)
    none(p, A_TRIG, 0, 0, 1)
    check(p, EFD2)
    efd(p, A_TRIG, 1, EFD)
    none(p, A_TRIG, 1, 0, 0)
    none(p, A_TRIG, 0, 0, 0)
    none(p, A_TRIG, 0, 0, 0)
    none(p, A_UNMASK, 0, 0, 1)

    # ---- MSI ----
    p = "msi"
    none(p, A_TRIG, 1, 0, 0)
    none(p, A_TRIG, 1, 0, 1)
    efd(p, A_TRIG, 1, PIPE)
    efd(p, A_TRIG, 1, CLOSED)
    none(p, A_TRIG, 1, 0, 0)
    efd(p, A_TRIG, 1, -1)
    none(p, A_TRIG, 1, 0, 1)
    efd(p, A_TRIG, 1, EFD)
    none(p, A_TRIG, 1, 0, 1)
    check(p, EFD)
    bool_(p, A_TRIG, 1, 1)
    check(p, EFD)
    bool_(p, A_TRIG, 1, 0)
    check(p, EFD)
    none(p, A_TRIG, 1, 0, 2)
    efd(p, A_TRIG, 1, PIPE)
    none(p, A_TRIG, 1, 0, 1)
    check(p, EFD)
    efd(p, A_TRIG, 1, EFD2)
    none(p, A_TRIG, 1, 0, 1)
    check(p, EFD)
    check(p, EFD2)
    efd(p, A_TRIG, 0, EFD)
    none(p, A_TRIG, 0, 0, 0)
    none(p, A_MASK, 0, 0, 1)
    none(p, A_TRIG, 2, 0, 0)
    none(p, A_TRIG, 1, 0, 0)
    none(p, A_TRIG, 1, 0, 0)
    none(p, A_TRIG, 1, 0, 1)

    # ---- ERR and REQ ----
    p = "err"
    efd(p, A_TRIG, 3, EFD)
    none(p, A_TRIG, 3, 0, 1)
    p = "req"
    none(p, A_TRIG, 4, 0, 0)
    none(p, A_TRIG, 4, 0, 1)
    set_raw(p, 0, D_BOOL | A_TRIG, 4, 0, 0)
    bool_(p, A_TRIG, 4, 1)
    set_raw(p, 0, D_EFD | A_TRIG, 4, 0, 0)
    efd(p, A_TRIG, 4, -1)
    efd(p, A_TRIG, 4, -2)
    efd(p, A_TRIG, 4, PIPE)
    efd(p, A_TRIG, 4, CLOSED)
    efd(p, A_TRIG, 4, EFD)
    none(p, A_TRIG, 4, 0, 1)
    check(p, EFD)
    bool_(p, A_TRIG, 4, 1)
    check(p, EFD)
    efd(p, A_TRIG, 4, -2)
    none(p, A_TRIG, 4, 0, 1)
    check(p, EFD)
    none(p, A_TRIG, 4, 0, 0)
    none(p, A_TRIG, 4, 0, 1)
    none(p, A_TRIG, 4, 0, 0)
    efd(p, A_TRIG, 4, EFD)
    efd(p, A_TRIG, 4, -1)
    none(p, A_TRIG, 4, 0, 1)
    check(p, EFD)
    return t.lines


def expected_section(name: str, first: str, last: str) -> list[str]:
    lines = (EXPECTED / name).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    end = next(i for i, line in enumerate(lines) if line.startswith(last))
    return lines[start:end + 1]


def test_device_ioctls_irq_transcript() -> None:
    """Every GET_IRQ_INFO / SET_IRQS line of device_ioctls.txt, in order: return values,
    errnos, written-back bytes and eventfd counts."""
    rig = edu_rig()
    expected = expected_section("device_ioctls.txt", "GET_IRQ_INFO(NULL)",
                                "req: read(efd) #4")
    assert replay_device_ioctls(rig) == expected
    # Nothing stays registered after the sequence but what device_ioctls left: no index
    # active, no REQ eventfd. Every reference taken so far was dropped exactly once.
    assert rig.irqs.irq_type == V.VFIO_PCI_NUM_IRQS
    assert rig.client.open_references() == []
    rig.irqs.release()


# --------------------------------------------------------------------------- edu_driver.c

def replay_edu_driver_interrupts(rig: Rig) -> list[str]:
    """The interrupt lines of edu_driver.c main(): the edu raises MSI and INTx through its
    own registers (raise 0x60, ack 0x64, factorial with STATUS_IRQFACT, DMA with the IRQ
    bit); every access is followed by tick(), as the daemon runs started work at once."""
    t = Transcript()
    edu = rig.function
    assert isinstance(edu, EduDevice)

    def w32(offset: int, value: int) -> None:
        edu.mmio_write(0, offset, 4, value)
        edu.tick()

    def wait(what: str) -> None:
        t.note(f"irq: {what}", "fired" if rig.efd().read() else "none")

    def set_irq(label: str, index: int, action: int, fd: int | None) -> None:
        """edu_driver.c set_irq: one eventfd, or DATA_NONE (count 0 for TRIGGER, else 1)."""
        if fd is None:
            err = rig.none(action, index, 0, 0 if action == A_TRIG else 1)
        else:
            err = rig.fd(action, index, fd)
        t.report(f"irq: {label}", err)

    def dma(cmd: int) -> None:
        """A transfer RAM -> device buffer; it completes (no address space is attached, so
        nothing moves: edu completes it anyway) and raises 0x100 when cmd has bit 2."""
        for reg, value in ((0x80, 0x100000), (0x88, 0x40000), (0x90, 0x100), (0x98, cmd)):
            w32(reg, value)

    t.note("irq: eventfd", "0")
    set_irq("SET_IRQS(MSI,EVENTFD|TRIGGER,efd)", MSI, A_TRIG, EFD)
    wait("after enabling MSI")
    w32(REG_IRQ_RAISE, 0x1)
    wait("MSI after raise 0x1")
    w32(REG_IRQ_RAISE, 0x12340000)
    wait("MSI after raise 0x12340000")
    w32(REG_IRQ_ACK, 0x12340000)
    w32(REG_IRQ_ACK, 0x1)
    wait("MSI after ack")
    w32(0x20, 0x80)                      # status: raise FACT_IRQ when done
    w32(0x08, 5)
    wait("MSI after factorial")
    w32(REG_IRQ_ACK, 0x1)
    w32(0x20, 0)
    dma(0x1)
    wait("MSI after DMA without IRQ flag")
    dma(0x5)
    wait("MSI after DMA")
    w32(REG_IRQ_ACK, 0x100)
    dma(0x5)
    wait("MSI after DMA to unmapped IOVA")
    w32(REG_IRQ_ACK, 0x100)
    dma(0x1)
    wait("MSI after faulted DMAs without IRQ flag")

    set_irq("SET_IRQS(MSI,NONE|TRIGGER,count=0)", MSI, A_TRIG, None)
    set_irq("SET_IRQS(INTX,EVENTFD|TRIGGER,efd)", INTX, A_TRIG, EFD)
    wait("after enabling INTx")
    w32(REG_IRQ_RAISE, 0x1)
    wait("INTx after raise 0x1")
    w32(REG_IRQ_RAISE, 0x2)
    wait("INTx after raise 0x2 (masked)")
    assert edu.mmio_read(0, 0x24, 4) == 0x3
    set_irq("SET_IRQS(INTX,NONE|UNMASK) while asserted", INTX, A_UNMASK, None)
    wait("INTx after unmask while asserted")
    w32(REG_IRQ_ACK, 0x3)
    set_irq("SET_IRQS(INTX,NONE|UNMASK) after ack", INTX, A_UNMASK, None)
    wait("INTx after unmask after ack")
    dma(0x5)
    wait("INTx after DMA")
    w32(REG_IRQ_ACK, 0x100)
    set_irq("SET_IRQS(INTX,NONE|UNMASK) after DMA", INTX, A_UNMASK, None)
    wait("INTx after unmask after DMA")
    set_irq("SET_IRQS(INTX,NONE|MASK)", INTX, A_MASK, None)
    w32(REG_IRQ_RAISE, 0x4)
    wait("INTx after raise while masked")
    set_irq("SET_IRQS(INTX,NONE|UNMASK) pending", INTX, A_UNMASK, None)
    wait("INTx after unmask of a pending line")
    w32(REG_IRQ_ACK, 0x4)
    set_irq("SET_IRQS(INTX,NONE|UNMASK) final", INTX, A_UNMASK, None)
    wait("INTx at the end")
    set_irq("SET_IRQS(INTX,NONE|TRIGGER,count=0)", INTX, A_TRIG, None)
    return t.lines


def test_edu_driver_interrupt_lines() -> None:
    """edu_driver.txt's irq: lines: MSI per raise, AUTOMASKED INTx, unmask of a line still
    asserted fires again at once, MASK holds a raise back until UNMASK."""
    rig = edu_rig()
    expected = [line for line in (EXPECTED / "edu_driver.txt").read_text().splitlines()
                if line.startswith("irq:")]
    assert replay_edu_driver_interrupts(rig) == expected
    assert rig.client.open_references() == []


def test_intx_automask_uses_the_physical_interrupt_disable_bit() -> None:
    """While automasked the function's INTx Disable is set (so the line is down); the user's
    UNMASK clears it once the line has been acknowledged."""
    rig = edu_rig()
    edu = rig.function
    assert rig.fd(A_TRIG, INTX, EFD) == 0
    assert not edu.command & P.COMMAND_INTX_DISABLE
    edu.mmio_write(0, REG_IRQ_RAISE, 4, 1)
    assert rig.efd().read() == 1
    assert edu.command & P.COMMAND_INTX_DISABLE and not edu.intx_asserted
    assert edu.config_read(P.STATUS, 2) & P.STATUS_INTERRUPT      # still requesting
    assert rig.none(A_UNMASK, INTX) == 0                          # pending: stays masked
    assert rig.efd().read() == 1
    assert edu.command & P.COMMAND_INTX_DISABLE
    edu.mmio_write(0, REG_IRQ_ACK, 4, 1)
    assert rig.none(A_UNMASK, INTX) == 0
    assert not edu.command & P.COMMAND_INTX_DISABLE
    assert rig.efd().read() == 0
    edu.set_intx_level(True)                                      # the next assertion
    assert rig.efd().read() == 1
    rig.irqs.release()


def test_intx_line_already_asserted_fires_when_intx_is_enabled() -> None:
    """Level-triggered: an assertion nobody handled (INTx not enabled) interrupts as soon as
    the handler is installed; with no trigger yet, the line is masked and nothing signals."""
    rig = edu_rig()
    edu = rig.function
    edu.mmio_write(0, REG_IRQ_RAISE, 4, 1)
    assert edu.intx_asserted
    assert rig.fd(A_TRIG, INTX, EFD) == 0
    assert rig.efd().read() == 1
    assert rig.none(A_TRIG, INTX, 0, 0) == 0
    # Enabled without a trigger: the handler masks, nothing to signal; a trigger attached
    # later sees nothing until the user unmasks.
    rig2 = edu_rig()
    rig2.function.mmio_write(0, REG_IRQ_RAISE, 4, 1)
    assert rig2.fd(A_TRIG, INTX, -1) == 0
    assert rig2.fd(A_TRIG, INTX, EFD) == 0
    assert rig2.efd().read() == 0
    assert rig2.none(A_UNMASK, INTX) == 0
    assert rig2.efd().read() == 1
    # Disabled while automasked, the function keeps INTx Disable set; enabling again clears
    # it, the line comes back up and fires at once.
    assert rig2.none(A_TRIG, INTX, 0, 0) == 0
    assert rig2.function.command & P.COMMAND_INTX_DISABLE
    assert rig2.fd(A_TRIG, INTX, EFD) == 0
    assert rig2.efd().read() == 1
    rig.irqs.release()
    rig2.irqs.release()


def test_virtual_intx_disable() -> None:
    """The config layer's hook (virq_disabled): masks INTx and suppresses every signal, even
    loopback; clearing it unmasks, firing at once for a line still asserted. Without INTx
    enabled the physical bit just follows, and INTx enabled later starts masked."""
    rig = edu_rig()
    edu, irqs = rig.function, rig.irqs
    irqs.config_intx_disable(True)
    assert edu.command & P.COMMAND_INTX_DISABLE
    irqs.config_intx_disable(False)
    assert not edu.command & P.COMMAND_INTX_DISABLE
    irqs.config_intx_disable(True)
    assert rig.fd(A_TRIG, INTX, EFD) == 0                     # starts masked
    assert edu.command & P.COMMAND_INTX_DISABLE
    edu.mmio_write(0, REG_IRQ_RAISE, 4, 1)
    assert rig.none(A_TRIG, INTX) == 0                        # loopback suppressed too
    assert rig.none(A_UNMASK, INTX) == 0                      # UNMASK cannot override it
    assert rig.efd().read() == 0
    irqs.config_intx_disable(True)                            # no change: nothing happens
    irqs.config_intx_disable(False)
    assert rig.efd().read() == 1                              # the pending line, at once
    assert irqs.virq_disabled is False
    # Masked by the user's UNMASK-able automask and then by the virtual bit: clearing the
    # virtual bit after the ack unmasks for real.
    edu.mmio_write(0, REG_IRQ_ACK, 4, 1)
    irqs.config_intx_disable(True)
    irqs.config_intx_disable(False)
    assert not edu.command & P.COMMAND_INTX_DISABLE
    assert rig.efd().read() == 0
    irqs.config_intx_disable(True)
    irqs.release()                                            # forgets virq_disabled
    assert irqs.virq_disabled is False


def test_intx_unmask_eventfd() -> None:
    """EVENTFD|UNMASK registers an eventfd whose signal unmasks (the kernel's virqfd): a second
    one is EBUSY (its reference dropped), fd -1 removes it, disabling INTx drops it."""
    rig = edu_rig()
    edu, irqs = rig.function, rig.irqs
    assert rig.fd(A_TRIG, INTX, EFD) == 0
    assert irqs.unmask_irqfd is None
    assert rig.fd(A_UNMASK, INTX, EFD2) == 0
    registered = irqs.unmask_irqfd
    assert registered is not None
    assert rig.fd(A_UNMASK, INTX, EFD2) == errno.EBUSY
    assert irqs.unmask_irqfd is registered
    assert rig.fd(A_UNMASK, INTX, PIPE) == errno.EINVAL
    edu.mmio_write(0, REG_IRQ_RAISE, 4, 1)
    assert rig.efd().read() == 1
    irqs.unmask_irqfd_signalled()                             # still asserted: fires again
    assert rig.efd().read() == 1
    edu.mmio_write(0, REG_IRQ_ACK, 4, 1)
    irqs.unmask_irqfd_signalled()
    assert not edu.command & P.COMMAND_INTX_DISABLE
    assert rig.fd(A_UNMASK, INTX, -1) == 0
    assert irqs.unmask_irqfd is None
    irqs.unmask_irqfd_signalled()                             # nothing registered: no-op
    assert rig.fd(A_UNMASK, INTX, EFD2) == 0
    assert rig.none(A_TRIG, INTX, 0, 0) == 0                  # disable drops it
    assert irqs.unmask_irqfd is None
    assert rig.client.open_references() == []
    assert all(ref.closed for ref in rig.client.references())


def test_msi_vectors() -> None:
    """A function capable of 4 MSI vectors: GET_IRQ_INFO count 4; enabling with start 1 count
    2 allocates 3 (MME 4) and attaches 1 and 2; vector 3 was not allocated (EINVAL, checked
    before the fd); a failing block detaches every vector it reached; the config layer hears
    of each allocation."""
    rig = generic_rig(msi=4)
    fn, irqs = rig.function, rig.irqs
    heard: list[int] = []
    irqs.on_msi_vectors = heard.append
    mem = rig.memory
    mem.write(BUF, V.IRQ_INFO.pack(argsz=16, index=MSI))
    assert irqs.get_irq_info(rig.client.caller, BUF) == 0
    assert V.IRQ_INFO.unpack(mem.read(BUF, 16))["count"] == 4
    efd3 = rig.client.new_eventfd(7)
    assert rig.fds(A_TRIG, MSI, 1, [EFD, EFD2]) == 0
    assert heard == [3]
    assert fn.msi_enabled and fn.msi_vectors_enabled == 4
    assert irqs.msi_enabled() and not irqs.msix_enabled()
    for vector, target in ((1, rig.efd()), (2, rig.efd(EFD2))):
        assert fn.msi_notify(vector)
        assert target.read() == 1
    assert fn.msi_notify(0) and fn.msi_notify(3)              # allocated-but-unused: dropped
    assert rig.efd().read() == 0 and rig.efd(EFD2).read() == 0
    assert rig.fd(A_TRIG, MSI, 7, start=0) == 0               # vector 0 was allocated
    assert fn.msi_notify(0) and efd3.read() == 1
    assert rig.fd(A_TRIG, MSI, CLOSED, start=3) == errno.EINVAL
    assert rig.fd(A_TRIG, MSI, -1, start=3) == 0
    # Loopback: NONE signals every selected vector with an eventfd, BOOL the true ones.
    assert rig.none(A_TRIG, MSI, 0, 4) == 0
    assert (efd3.read(), rig.efd().read(), rig.efd(EFD2).read()) == (1, 1, 1)
    assert rig.set_raw(D_BOOL | A_TRIG, MSI, 1, 2, bytes([0, 1])) == 0
    assert (rig.efd().read(), rig.efd(EFD2).read()) == (0, 1)
    assert rig.set_raw(D_BOOL | A_TRIG, MSI, 0, 0) == 0       # count 0: nothing to do
    # A block that fails at its second vector detaches both.
    assert rig.fds(A_TRIG, MSI, 1, [EFD, PIPE]) == errno.EINVAL
    assert rig.none(A_TRIG, MSI, 0, 4) == 0
    assert (efd3.read(), rig.efd().read(), rig.efd(EFD2).read()) == (1, 0, 0)
    assert rig.fds(A_TRIG, MSI, 2, []) == 0                   # EVENTFD count 0: a no-op
    assert rig.none(A_TRIG, MSI, 0, 0) == 0
    assert not fn.msi_enabled
    assert rig.client.open_references() == []
    # Enabling with start 0 count 0 asks pci_alloc_irq_vectors for 1..0 vectors: ERANGE.
    assert rig.fds(A_TRIG, MSI, 0, []) == errno.ERANGE
    assert not irqs.msi_enabled()
    # A failing enable is undone.
    assert rig.fds(A_TRIG, MSI, 0, [EFD, CLOSED]) == errno.EBADF
    assert not fn.msi_enabled and not irqs.msi_enabled()
    assert rig.client.open_references() == []


def test_msix() -> None:
    """MSI-X: count = table size, NORESIZE (no dynamic allocation), MASK/UNMASK ENOTTY,
    vectors signalled through msix_notify; excludes MSI and INTx while enabled."""
    rig = generic_rig(msi=1, msix=8)
    fn, irqs = rig.function, rig.irqs
    mem = rig.memory
    mem.write(BUF, V.IRQ_INFO.pack(argsz=16, index=MSIX))
    assert irqs.get_irq_info(rig.client.caller, BUF) == 0
    info = V.IRQ_INFO.unpack(mem.read(BUF, 16))
    assert (info["flags"], info["count"]) == (0x9, 8)
    assert rig.none(A_MASK, MSIX) == errno.ENOTTY
    assert rig.none(A_TRIG, MSIX, 0, 9) == errno.EINVAL
    assert rig.fds(A_TRIG, MSIX, 0, [-1, EFD]) == 0
    assert fn.msix_enabled and irqs.msix_enabled() and not irqs.msi_enabled()
    assert fn.msix_notify(1) and rig.efd().read() == 1
    assert fn.msix_notify(0) and rig.efd().read() == 0
    assert rig.fd(A_TRIG, MSI, EFD2) == errno.EINVAL
    assert rig.fd(A_TRIG, INTX, EFD2) == errno.EINVAL
    fn.msi_notify(0)                                          # MSI is off: nothing
    assert rig.none(A_TRIG, MSIX, 0, 2) == 0
    assert rig.efd().read() == 1
    assert rig.none(A_TRIG, MSIX, 0, 0) == 0
    assert not fn.msix_enabled
    assert rig.none(A_TRIG, MSIX, 0, 0) == errno.EINVAL
    rig.irqs.release()
    assert rig.client.open_references() == []


class PcieFunction(P.PciFunction):
    """A function with a PCI Express capability at 0x60 (in the list after MSI)."""

    def __init__(self) -> None:
        super().__init__("0000:00:05.0", P.Identity(0x1234, 0x11E8, 0xFF00),
                         [P.Bar(0, 4096)], msi=P.MsiCapability(0x40, 1))

    def _build_config(self) -> None:
        super()._build_config()
        c = self.config
        c.set(0x60, 1, P.CAP_ID_EXP)
        c.set(0x61, 1, c.get(P.CAPABILITY_LIST, 1))
        c.set(P.CAPABILITY_LIST, 1, 0x60)

    def _bar_read(self, bar: int, offset: int, size: int) -> int:
        return 0

    def _bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        pass


def test_err_on_pci_express() -> None:
    """ERR exists on PCI Express only: count 1, NORESIZE, the single-eventfd rules of REQ,
    signalled by signal_error; released at the last close."""
    rig = Rig(PcieFunction())
    irqs, mem = rig.irqs, rig.memory
    mem.write(BUF, V.IRQ_INFO.pack(argsz=16, index=ERR))
    assert irqs.get_irq_info(rig.client.caller, BUF) == 0
    info = V.IRQ_INFO.unpack(mem.read(BUF, 16))
    assert (info["flags"], info["count"]) == (0x9, 1)
    assert rig.none(A_TRIG, ERR) == errno.EINVAL              # nothing registered
    assert rig.none(A_MASK, ERR) == errno.ENOTTY
    assert not irqs.signal_error()
    assert rig.fd(A_TRIG, ERR, EFD) == 0
    assert irqs.signal_error() and rig.efd().read() == 1
    assert rig.fd(A_TRIG, ERR, EFD2) == 0                     # replaced: the old one dropped
    assert irqs.signal_error() and rig.efd(EFD2).read() == 1 and rig.efd().read() == 0
    assert rig.bool_(A_TRIG, ERR, 1) == 0 and rig.efd(EFD2).read() == 1
    irqs.release()
    assert rig.client.open_references() == []
    assert rig.function.sink is not irqs


def test_req_signal_request() -> None:
    """The host's request for the device signals the REQ eventfd."""
    rig = edu_rig()
    assert not rig.irqs.signal_request()
    assert rig.fd(A_TRIG, REQ, EFD) == 0
    assert rig.irqs.signal_request() and rig.efd().read() == 1
    rig.irqs.release()
    assert not rig.irqs.signal_request()
    assert rig.client.open_references() == []


def test_no_interrupt_pin_no_intx() -> None:
    """A function without an interrupt pin: INTx count 0, so every INTx SET_IRQS is EINVAL."""
    rig = generic_rig(intx=False, msi=1)
    rig.memory.write(BUF, V.IRQ_INFO.pack(argsz=16, index=INTX))
    assert rig.irqs.get_irq_info(rig.client.caller, BUF) == 0
    info = V.IRQ_INFO.unpack(rig.memory.read(BUF, 16))
    assert (info["flags"], info["count"]) == (0x7, 0)
    assert rig.fd(A_TRIG, INTX, EFD) == errno.EINVAL
    rig.irqs.release()


@pytest.mark.parametrize("active", ["intx", "msi", "none"])
def test_release_tears_everything_down(active: str) -> None:
    """vfio_pci_core_disable + close_device: the active index disabled (host MSI freed), the
    REQ eventfd dropped, every reference closed exactly once, the sink detached."""
    rig = edu_rig()
    edu, irqs = rig.function, rig.irqs
    assert rig.fd(A_TRIG, REQ, EFD2) == 0
    if active == "intx":
        assert rig.fd(A_TRIG, INTX, EFD) == 0
        assert rig.fd(A_UNMASK, INTX, EFD) == 0
    elif active == "msi":
        assert rig.fd(A_TRIG, MSI, EFD) == 0
        assert edu.msi_enabled
    irqs.release()
    assert irqs.irq_type == V.VFIO_PCI_NUM_IRQS
    assert not edu.msi_enabled
    assert edu.sink is not irqs
    refs = rig.client.references()
    assert refs and all(ref.closed for ref in refs)
    edu.mmio_write(0, REG_IRQ_RAISE, 4, 1)                    # reaches nobody now
    irqs.release()                                            # idempotent


def test_only_one_sink_detached() -> None:
    """A release of an old layer does not detach the one a later open attached."""
    edu = EduDevice(edu_config())
    old = VfioPciIrqs(edu)
    new = VfioPciIrqs(edu)
    old.release()
    assert edu.sink is new


def test_fake_client_eventfds() -> None:
    """The fake client behaves as eventfd_ctx_fdget does: EBADF, EINVAL for a pipe."""
    client = Client()
    with pytest.raises(KernelError) as info:
        client.caller.eventfd(CLOSED)
    assert info.value.errno == errno.EBADF
    with pytest.raises(KernelError) as info:
        client.caller.eventfd(PIPE)
    assert info.value.errno == errno.EINVAL
