"""The daemon's half of the kernel's virqfds: wait for the eventfds the engine listens to, and
act when one is signalled (``ioasidfs.engine.watches`` says which and what to do).

One trio task. It snapshots the watches under the engine lock, waits until one of their
eventfds is readable (or until :meth:`EventfdWatcher.kick` says the set may have grown), and
then, under the engine lock again: checks that the watch is still registered, consumes the
counter as virqfd_wakeup does (``eventfd_ctx_do_read``: the user sees it drop to 0), and runs the
handler. An eventfd that was unregistered meanwhile is neither consumed nor acted on, as on the
kernel, where virqfd_disable has removed the wait-queue entry.

It waits on its own duplicates of the engine's eventfd references, so the engine may close a
reference at any time (an ioctl unregistering it) without the number being reused under a
pending wait. Reads use RWF_NOWAIT: the user's file may be blocking (its O_NONBLOCK is theirs),
and someone else may have drained the counter between the wake-up and the read.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Callable, Iterable

import trio

from .engine.device import Device
from .engine.watches import Watch, eventfd_watches, still_watched

log = logging.getLogger("ioasidfs.eventfd")


def signal_fd(watch: Watch) -> int | None:
    """The fd behind a watch's eventfd reference (the daemon's ProcessEventfd copy); None for
    a reference without one (a test's FakeEventfd), which cannot be waited for."""
    fd = getattr(watch.signal, "fd", None)
    return fd if isinstance(fd, int) else None


def consume(fd: int) -> bool:
    """Read the counter without ever blocking; False when it was already 0."""
    try:
        os.preadv(fd, [bytearray(8)], -1, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    except OSError as e:
        log.warning("cannot read a watched eventfd: %s", os.strerror(e.errno or errno.EIO))
        return False
    return True


class EventfdWatcher:
    """Runs the handlers of signalled ioeventfds and INTx unmask eventfds (see module doc)."""

    def __init__(self, devices: Callable[[], Iterable[Device]], engine_lock: trio.Lock) -> None:
        self._devices = devices
        self._lock = engine_lock
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.fired = 0
        """Handlers run so far (tests and logs)."""

    def kick(self) -> None:
        """The set of watches may have changed (an eventfd reference was taken): look again.
        Safe from any thread."""
        try:
            os.eventfd_write(self._wake, 1)
        except BlockingIOError:
            pass  # already pending

    def close(self) -> None:
        os.close(self._wake)

    async def run(self) -> None:
        """Serve until cancelled."""
        while True:
            async with self._lock:
                watches = eventfd_watches(self._devices())
            dups: list[tuple[int, Watch]] = []
            try:
                for watch in watches:
                    fd = signal_fd(watch)
                    if fd is not None:
                        dups.append((os.dup(fd), watch))
                ready = await self._wait(dups)
                if ready is not None:
                    await self._handle(*ready)
            finally:
                for fd, _watch in dups:
                    os.close(fd)

    async def _wait(self, dups: list[tuple[int, Watch]]) -> tuple[int, Watch] | None:
        """The first readable watched eventfd, or None when kicked."""
        ready: list[tuple[int, Watch]] = []

        async def one(fd: int, watch: Watch, scope: trio.CancelScope) -> None:
            await trio.lowlevel.wait_readable(fd)
            ready.append((fd, watch))
            scope.cancel()

        async def kicked(scope: trio.CancelScope) -> None:
            await trio.lowlevel.wait_readable(self._wake)
            consume(self._wake)
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(kicked, nursery.cancel_scope)
            for fd, watch in dups:
                nursery.start_soon(one, fd, watch, nursery.cancel_scope)
        return ready[0] if ready else None

    async def _handle(self, fd: int, watch: Watch) -> None:
        async with self._lock:
            current = still_watched(self._devices(), watch)
            if current is None or not consume(fd):
                return  # unregistered meanwhile, or drained by someone else
            log.debug("%s signalled", current.what)
            try:
                current.fire()
            except Exception:  # a handler bug must not take the daemon down
                log.exception("handling %s failed", current.what)
            self.fired += 1
