"""The daemon: one configuration, one engine, one tree, served over one FUSE connection.

``ioasidfs mount`` serves it on a mountpoint of the machine until Ctrl-C/SIGTERM; ``ioasidfs run``
(launcher.py) serves it inside a private mount namespace. Either way the mount must not outlive
the daemon: a killed daemon's mount is taken down by a watchdog process that holds nothing but a
pipe, whose end of file tells it the daemon is gone.
"""
from __future__ import annotations

import logging
import os
import signal
import sys

import trio

from .config import Config
from .devfs import DevFs
from .devtree import DevTree
from .engine import Engine
from .eventfd_watch import EventfdWatcher
from .fuse import io
from .fuse.mount import abort_connection, find_mount, is_our_mount, mount_fuse, unmount
from .fuse.session import FuseSession
from .trace import Tracer

log = logging.getLogger("ioasidfs")


class Daemon:
    def __init__(self, config: Config, tracer: Tracer | None = None) -> None:
        self.config = config
        self.tracer = tracer
        self.tree = DevTree(config)
        self.engine = Engine(config)
        if tracer is not None:
            # Every IOMMU fault becomes a trace record too (the log itself is /faults).
            self.engine.faults.subscribe(tracer.fault)
        self.fs = DevFs(self.tree, self.engine, tracer=tracer)
        self.session = FuseSession(self.fs)
        # Serialises every engine call, whatever its source (FUSE requests, trapped syscalls).
        self.engine_lock = trio.Lock()
        # The kernel's virqfds: ioeventfds and the INTx unmask eventfd act when signalled.
        self.eventfds = EventfdWatcher(lambda: self.engine.devices.values(), self.engine_lock)
        self.fs.eventfd_taken = self.eventfds.kick

    def mounted_at(self, mountpoint: str) -> None:
        entry = find_mount(mountpoint)
        if entry is None:
            raise RuntimeError(f"{mountpoint} is not mounted")
        self.fs.mounted(entry.device, entry.mount_id)

    async def serve(self, fuse_fd: int) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.eventfds.run)
                await io.serve(fuse_fd, self.session, self.engine_lock)
                nursery.cancel_scope.cancel()
        finally:
            if self.tracer is not None:
                self.tracer.close()


def mount_and_serve(daemon: Daemon, mountpoint: str) -> int:
    """``ioasidfs mount``: serve on ``mountpoint`` in the foreground; 0 after a clean unmount."""
    mountpoint = os.path.abspath(mountpoint)
    if not os.path.isdir(mountpoint):
        print(f"ioasidfs: {mountpoint}: not a directory", file=sys.stderr)
        return 2
    if is_our_mount(find_mount(mountpoint)):
        print(f"ioasidfs: {mountpoint} already has an ioasidfs mount "
              f"(stale? run: ioasidfs umount {mountpoint})", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        # Mounted through fusermount3 for this user: the nodes are theirs, as a udev rule
        # granting them the devices would make them.
        daemon.tree.set_owner(os.getuid(), os.getgid())
    try:
        fuse_fd = mount_fuse(mountpoint)
    except OSError as e:
        print(f"ioasidfs: cannot mount on {mountpoint}: {e.strerror}", file=sys.stderr)
        return 1
    daemon.mounted_at(mountpoint)
    entry = find_mount(mountpoint)
    assert entry is not None
    keepalive = _start_watchdog(mountpoint, entry.device, fuse_fd)
    print(f"ioasidfs: serving {mountpoint} (Ctrl-C or SIGTERM unmounts)", file=sys.stderr, flush=True)
    try:
        trio.run(_serve_until_signalled, daemon, fuse_fd, mountpoint, entry.device)
    finally:
        os.close(fuse_fd)
        os.close(keepalive)
    return 0


async def _serve_until_signalled(daemon: Daemon, fuse_fd: int, mountpoint: str, device: str) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async def unmount_on_signal() -> None:
                count = 0
                async for signum in signals:
                    count += 1
                    if count == 1:
                        log.info("%s: unmounting %s", signal.Signals(signum).name, mountpoint)
                        try:
                            unmount(mountpoint)
                        except OSError as e:
                            log.warning("unmount failed: %s", e)
                        # Lazy unmount: we keep serving until the last open file is closed.
                        nursery.cancel_scope.deadline = trio.current_time() + 10
                    else:
                        log.info("second signal: aborting the connection")
                        abort_connection(device)
                        nursery.cancel_scope.cancel()

            nursery.start_soon(unmount_on_signal)
            await daemon.serve(fuse_fd)
            nursery.cancel_scope.cancel()


def _start_watchdog(mountpoint: str, device: str, fuse_fd: int) -> int:
    """Fork a process that unmounts ``mountpoint`` when we die; returns our end of its pipe.

    It must hold no fd of the connection: a /dev/fuse fd kept open elsewhere keeps a dead
    daemon's connection alive, and its clients hang instead of failing.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the watchdog process
        try:
            os.setsid()  # no terminal signals: Ctrl-C is for the daemon
            for fd in range(0, 3):
                os.dup2(os.open(os.devnull, os.O_RDWR), fd)
            os.closerange(3, read_end)
            os.closerange(read_end + 1, 1 << 16)
            while os.read(read_end, 1):
                pass
            entry = find_mount(mountpoint)
            if entry is not None and entry.device == device:
                abort_connection(device)
                unmount(mountpoint)
        finally:
            os._exit(0)
    os.close(read_end)
    return write_end


def unmount_command(mountpoint: str, abort: bool) -> int:
    """``ioasidfs umount``: remove an ioasidfs mount, e.g. one left by a killed daemon."""
    mountpoint = os.path.abspath(mountpoint)
    entry = find_mount(mountpoint)
    if not is_our_mount(entry):
        print(f"ioasidfs: {mountpoint} is not an ioasidfs mount", file=sys.stderr)
        return 1
    assert entry is not None
    if abort and not abort_connection(entry.device):
        print("ioasidfs: could not abort the connection (needs root and fusectl)", file=sys.stderr)
    try:
        unmount(mountpoint)
    except OSError as e:
        print(f"ioasidfs: cannot unmount {mountpoint}: {e.strerror}", file=sys.stderr)
        return 1
    return 0
