"""The eventfds the kernel would be *listening* to: what signalling them makes happen.

Most eventfds a VFIO user hands over are ours to signal (interrupt triggers). Two kinds work the
other way round: the kernel waits on them and acts when the user (or KVM) signals them, through
a virqfd (drivers/vfio/virqfd.c) whose wakeup consumes the counter and runs a handler:

* an ioeventfd (VFIO_DEVICE_IOEVENTFD): write ``data`` to the BAR at ``offset``
  (vfio_pci_ioeventfd_handler; dropped while memory decode is off);
* the INTx unmask eventfd (SET_IRQS INTX, EVENTFD|UNMASK): unmask INTx, signalling the trigger
  if the line is still asserted (vfio_pci_intx_unmask_handler).

The engine does no I/O, so it only says what is being listened to and what to do; the daemon
(``ioasidfs.eventfd_watch``) waits for the eventfds, consumes the counter, and calls ``fire``
under the engine lock -- after checking with a fresh :func:`eventfd_watches` that the watch is
still registered (an unregistered eventfd must neither be consumed nor act).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterable

from .caller import EventSignal
from .device import Device


@dataclass(frozen=True)
class Watch:
    """One eventfd the kernel would wait on: ``fire`` is its virqfd handler; ``what`` says it
    in a log line (``ioeventfd 0000:00:01.0 BAR0+0x4 <- 0x12345678 (4 bytes)``)."""

    signal: EventSignal
    fire: Callable[[], None]
    what: str


def eventfd_watches(devices: Iterable[Device]) -> list[Watch]:
    """Every eventfd currently listened to, over the devices that are open."""
    watches: list[Watch] = []
    for device in devices:
        vfio = device.vfio
        if vfio is None:
            continue
        bdf = device.config.bdf
        for key, signal in vfio.ioeventfds.items():
            watches.append(Watch(signal, partial(vfio.fire_ioeventfd, key),
                                 f"ioeventfd {bdf} BAR{key.bar}+{key.pos:#x} <- {key.data:#x} "
                                 f"({key.count} bytes)"))
        unmask = vfio.irqs.unmask_irqfd
        if unmask is not None:
            watches.append(Watch(unmask, vfio.irqs.unmask_irqfd_signalled,
                                 f"INTx unmask eventfd {bdf}"))
    return watches


def still_watched(devices: Iterable[Device], watch: Watch) -> Watch | None:
    """The current registration for ``watch``'s eventfd reference, or None once it is gone
    (the ioctl that removed it dropped the reference, as virqfd_disable does)."""
    for current in eventfd_watches(devices):
        if current.signal is watch.signal:
            return current
    return None
