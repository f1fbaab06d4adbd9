"""The eventfd watcher (the daemon's virqfd): real eventfds signalled by "the user" make the
engine act -- an ioeventfd's BAR write, an INTx unmask -- exactly once per signal, and only
while registered. Same scenario as tests/c/edu_eventfds.c, at the engine level."""
from __future__ import annotations

import os
import struct
from typing import Awaitable, Callable

import pytest
import trio

from ioasidfs.client import ProcessEventfd
from ioasidfs.engine.caller import EventSignal
from ioasidfs.eventfd_watch import EventfdWatcher
from ioasidfs.errors import KernelError
from ioasidfs.uapi import vfio as V

from test_device_fd import BAR0, CONFIG, World, ioeventfd

LIVENESS = 0x04


class RealWorld(World):
    """World whose eventfd references are real (a dup of the test's own eventfd, as the daemon
    keeps a pidfd_getfd copy), so the watcher can wait for them."""

    def __init__(self) -> None:
        self.real: dict[int, int] = {}
        self.kicks: list[EventfdWatcher] = []
        super().__init__()

    def _eventfd(self, fd: int) -> EventSignal:  # type: ignore[override]
        if fd not in self.real:
            raise KernelError(9, "closed")
        for watcher in self.kicks:
            watcher.kick()
        return ProcessEventfd(os.dup(self.real[fd]))

    def new_eventfd(self, number: int) -> int:
        fd = os.eventfd(0, os.EFD_NONBLOCK)
        self.real[number] = fd
        self.fds[number] = object()
        return fd


def counter(fd: int) -> int:
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


async def eventually(check: Callable[[], bool], seconds: float = 2.0) -> bool:
    with trio.move_on_after(seconds):
        while not check():
            await trio.sleep(0.005)
        return True
    return False


def run_with_watcher(w: RealWorld, body: Callable[[EventfdWatcher], Awaitable[None]]) -> EventfdWatcher:
    lock = trio.Lock()
    watcher = EventfdWatcher(lambda: w.engine.devices.values(), lock)
    w.kicks.append(watcher)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.run)
            await body(watcher)
            nursery.cancel_scope.cancel()
    try:
        trio.run(main)
    finally:
        watcher.close()
    return watcher


def test_ioeventfd_writes_the_bar_once_per_signal_while_registered() -> None:
    w = RealWorld()
    dev = w.get_device_fd()
    dev.write(w.caller, CONFIG + 4, struct.pack("<H", 0x0102))   # memory decode on
    efd = w.new_eventfd(5)

    def liveness() -> int:
        return int.from_bytes(dev.read(w.caller, BAR0 + LIVENESS, 4), "little")

    async def body(watcher: EventfdWatcher) -> None:
        dev.write(w.caller, BAR0 + LIVENESS, struct.pack("<I", 0))
        assert w.ioctl(dev, V.VFIO_DEVICE_IOEVENTFD, ioeventfd(32, 4, LIVENESS, 0x12345678, 5)) == 0
        await trio.sleep(0.05)
        assert liveness() == 0xFFFFFFFF and watcher.fired == 0     # registered, not signalled
        os.eventfd_write(efd, 1)
        assert await eventually(lambda: liveness() == 0xEDCBA987)
        assert counter(efd) == 0                                   # consumed, as virqfd does
        assert watcher.fired == 1
        # Memory decode off: the write is dropped, the counter still consumed.
        dev.write(w.caller, BAR0 + LIVENESS, struct.pack("<I", 0))
        dev.write(w.caller, CONFIG + 4, struct.pack("<H", 0x0100))
        os.eventfd_write(efd, 1)
        assert await eventually(lambda: watcher.fired == 2)
        dev.write(w.caller, CONFIG + 4, struct.pack("<H", 0x0102))
        assert liveness() == 0xFFFFFFFF and counter(efd) == 0
        # Unregistered: a signal stays in the counter and nothing is written.
        assert w.ioctl(dev, V.VFIO_DEVICE_IOEVENTFD, ioeventfd(32, 4, LIVENESS, 0x12345678, -1)) == 0
        os.eventfd_write(efd, 1)
        await trio.sleep(0.2)
        assert liveness() == 0xFFFFFFFF and watcher.fired == 2
        assert counter(efd) == 1

    run_with_watcher(w, body)


def set_intx_fd(w: RealWorld, dev: object, action: int, fd: int) -> None:
    data = struct.pack("<IIIIIi", 24, V.VFIO_IRQ_SET_DATA_EVENTFD | action,
                       V.VFIO_PCI_INTX_IRQ_INDEX, 0, 1, fd)
    assert w.ioctl(dev, V.VFIO_DEVICE_SET_IRQS, data) == 0  # type: ignore[arg-type]


def test_intx_unmask_eventfd_unmasks_and_reasserts() -> None:
    w = RealWorld()
    dev = w.get_device_fd()
    dev.write(w.caller, CONFIG + 4, struct.pack("<H", 0x0102))
    trigger, unmask = w.new_eventfd(5), w.new_eventfd(6)

    def raise_irq(bits: int) -> None:
        dev.write(w.caller, BAR0 + 0x60, struct.pack("<I", bits))

    def ack() -> None:
        status = dev.read(w.caller, BAR0 + 0x24, 4)
        dev.write(w.caller, BAR0 + 0x64, status)

    async def body(watcher: EventfdWatcher) -> None:
        set_intx_fd(w, dev, V.VFIO_IRQ_SET_ACTION_TRIGGER, 5)
        set_intx_fd(w, dev, V.VFIO_IRQ_SET_ACTION_UNMASK, 6)
        raise_irq(1)
        assert counter(trigger) == 1                                 # fired and automasked
        ack()
        raise_irq(2)
        assert counter(trigger) == 0                                 # masked
        os.eventfd_write(unmask, 1)                                  # unmask, line asserted
        assert await eventually(lambda: watcher.fired == 1)
        assert counter(trigger) == 1 and counter(unmask) == 0
        ack()
        os.eventfd_write(unmask, 1)                                  # unmask, line low
        assert await eventually(lambda: watcher.fired == 2)
        assert counter(trigger) == 0
        raise_irq(4)
        assert counter(trigger) == 1
        ack()
        set_intx_fd(w, dev, V.VFIO_IRQ_SET_ACTION_UNMASK, -1)        # removed
        raise_irq(1)
        os.eventfd_write(unmask, 1)
        await trio.sleep(0.2)
        assert counter(trigger) == 0 and watcher.fired == 2 and counter(unmask) == 1

    run_with_watcher(w, body)


def test_a_handler_error_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    w = RealWorld()
    dev = w.get_device_fd()
    dev.write(w.caller, CONFIG + 4, struct.pack("<H", 0x0102))
    efd = w.new_eventfd(5)
    vfio = w.engine.devices["0000:00:01.0"].vfio
    assert vfio is not None

    def broken(*args: object) -> None:
        raise RuntimeError("model bug")

    async def body(watcher: EventfdWatcher) -> None:
        assert w.ioctl(dev, V.VFIO_DEVICE_IOEVENTFD, ioeventfd(32, 4, LIVENESS, 1, 5)) == 0
        vfio.fire_ioeventfd = broken  # type: ignore[method-assign,assignment]
        os.eventfd_write(efd, 1)
        assert await eventually(lambda: watcher.fired == 1)
        os.eventfd_write(efd, 1)
        assert await eventually(lambda: watcher.fired == 2)         # still serving

    run_with_watcher(w, body)
    assert "model bug" in caplog.text
