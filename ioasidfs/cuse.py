"""``ioasidfs cuse``: the tree as real character devices, one CUSE device per node.

Each node of the tree (``vfio/vfio``, ``vfio/<group>``, ``vfio/devices/vfioN``, ``ioasid``,
``iommu``) gets its own connection on /dev/cuse, answered by a :class:`CuseSession` over the
daemon's one :class:`DevFs`, engine, tracer and engine lock: the same dispatch as FUSE, only the
init handshake differs. The kernel creates ``/dev/<DEVNAME>`` (``crw------- root``) while it
processes our CUSE_INIT reply; we then check that the node really is ours (a real driver's node
with the same name wins in devtmpfs) and give it the mode the kernel's driver would.

Teardown is the kernel's: closing a /dev/cuse fd unregisters its device and the node goes away,
so even a SIGKILLed daemon leaves nothing behind, and there is no helper process.

Two commands use this module: ``ioasidfs cuse`` (:func:`cuse_command`: the nodes, nothing else;
no seccomp filter, so VFIO_GROUP_GET_DEVICE_FD is EOPNOTSUPP and mmap() gets CUSE's ENODEV) and
``ioasidfs run --transport cuse`` (``launcher.run_program_cuse``: the same devices, brought up
with :func:`open_connections` and :func:`bring_up`, plus PROGRAM under the seccomp filter). How
our files are told from others over CUSE: by rdev (the ``dev`` of ``class/cuse/NAME`` checked
against each node's st_rdev at start-up; ``DevFs._is_ours``), never by path or mount. Device
fds are not CUSE devices: CUSE ignores the file position of read() and write(), and a device
fd's regions live at ``index << 40``, so ``run`` keeps them on a private FUSE mount (see
:mod:`ioasidfs.launcher`).
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import trio

from .fuse import io
from .fuse.session import CuseSession, SessionState

if TYPE_CHECKING:  # the engine is imported only once a daemon is built (after preflight)
    from .daemon import Daemon
    from .devtree import Node

log = logging.getLogger("ioasidfs.cuse")

CUSE_DEVICE = "/dev/cuse"
INIT_TIMEOUT = 10.0
"""Seconds the kernel gets to send CUSE_INIT on every connection and create the nodes."""


class CuseUnavailable(Exception):
    """This kernel has no CUSE (or we may not use it); the message says why, in one line."""


@dataclass
class CuseDevice:
    node: Node
    devname: str  # DEVNAME, relative to /dev
    fd: int = -1
    session: CuseSession | None = None
    rdev: int | None = None  # what CUSE registered, once verified

    @property
    def path(self) -> str:
        return "/dev/" + self.devname


def check_prefix(prefix: str | None) -> str | None:
    """Why ``--prefix`` is unusable, or None when it is fine (None too)."""
    if prefix is None:
        return None
    parts = prefix.split("/")
    if prefix.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in prefix:
        return f"--prefix {prefix!r}: give a relative name under /dev, such as 'fake'"
    return None


def devices_of(daemon: Daemon, prefix: str | None) -> list[CuseDevice]:
    """One CUSE device per file node of the tree, named as the kernel names the real one."""
    devices = []
    in_dev = set(daemon.tree.top_level_names())  # what `run` binds into /dev, no more
    for node in daemon.tree.nodes.values():
        name = node.path.removeprefix("/dev/")
        if node.is_dir or name.split("/")[0] not in in_dev:
            continue
        devices.append(CuseDevice(node, f"{prefix}/{name}" if prefix else name))
    return devices


def ensure_cuse() -> None:
    """Make /dev/cuse exist (``modprobe cuse`` if needed); CuseUnavailable if it cannot."""
    if os.path.exists(CUSE_DEVICE):
        return
    try:
        subprocess.run(["modprobe", "-q", "cuse"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30,
                       check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if not os.path.exists(CUSE_DEVICE):
        raise CuseUnavailable(f"this kernel has no CUSE ({CUSE_DEVICE} is missing and "
                              "`modprobe cuse` did not load it); use `ioasidfs mount`, or `ioasidfs run` "
                              "without --transport cuse (FUSE) instead")


def conflicts(devices: list[CuseDevice]) -> list[str]:
    """Paths of ``devices`` that something already owns."""
    return [d.path for d in devices if os.path.lexists(d.path)]


def sysfs_rdev(devname: str) -> int | None:
    """The device number CUSE registered for ``devname``: its class device's ``dev`` attribute
    (sysfs spells '/' in a name as '!'). None when sysfs does not say."""
    try:
        with open(f"/sys/class/cuse/{devname.replace('/', '!')}/dev") as f:
            major, minor = f.read().strip().split(":")
        return os.makedev(int(major), int(minor))
    except (OSError, ValueError):
        return None


def conflict_message(paths: list[str]) -> str:
    one = len(paths) == 1
    return (f"ioasidfs: {', '.join(paths)} already exist{'s' if one else ''} and "
            f"{'is' if one else 'are'} not ours (a real VFIO/iommufd driver, or another "
            "ioasidfs); use --prefix NAME to serve the tree under /dev/NAME/")


def preflight(prefix: str | None) -> str | None:
    """What makes ``ioasidfs cuse`` impossible before any daemon is built (exit 2), or None."""
    problem = check_prefix(prefix)
    if problem is not None:
        return problem
    try:
        ensure_cuse()
    except CuseUnavailable as e:
        return str(e)
    return None


def open_connections(daemon: Daemon, devices: list[CuseDevice]) -> str | None:
    """Open one /dev/cuse connection and make one session per device; an error message (the
    connections opened so far stay in ``devices`` for :func:`close_connections`) or None."""
    for device in devices:
        try:
            device.fd = os.open(CUSE_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            return (f"ioasidfs: cannot open {CUSE_DEVICE}: {e.strerror}"
                    f"{' (needs root)' if e.errno in (errno.EACCES, errno.EPERM) else ''}")
        # Unrestricted: in restricted mode the kernel copies a sized command's argument
        # before asking us, so a bad pointer is EFAULT where the kernel's VFIO nodes answer
        # EINVAL or ENOTTY without touching it. Unrestricted, every ioctl comes with the
        # raw pointer only and is answered through process_vm_*, as over FUSE.
        device.session = CuseSession(daemon.fs, device_ino=device.node.ino,
                                     devname=device.devname, unrestricted_ioctl=True)
    daemon.fs.serving_cuse(d.node.ino for d in devices)
    return None


def close_connections(devices: list[CuseDevice]) -> None:
    """Close every connection: the kernel unregisters each device and its node goes away."""
    for device in devices:
        if device.fd >= 0:
            os.close(device.fd)
            device.fd = -1


async def bring_up(daemon: Daemon, devices: list[CuseDevice], nursery: trio.Nursery,
                   dropped: Callable[[CuseDevice], None]) -> str | None:
    """Serve every connection in ``nursery``, wait until the kernel has made every node,
    check each is ours and give it its driver's mode and owner. An error message, or None.

    ``dropped(device)`` is called if the kernel ends a connection we did not close (a name
    another CUSE server registered first, or an aborted connection). The daemon's eventfd
    watcher runs in ``nursery`` too."""
    for device in devices:
        nursery.start_soon(_serve_one, daemon, device, dropped)
    nursery.start_soon(daemon.eventfds.run)  # the ioeventfds and INTx unmask eventfds
    problem = await _wait_until_created(devices)
    if problem is not None:
        return problem
    daemon.fs.cuse_devices_created({d.rdev for d in devices if d.rdev is not None},
                                   {os.stat(d.path).st_dev for d in devices})
    for device in devices:
        os.chmod(device.path, stat.S_IMODE(device.node.mode))
        os.chown(device.path, device.node.uid, device.node.gid)
    return None


def dropped_message(device: CuseDevice) -> str:
    return (f"ioasidfs: the kernel dropped CUSE device {device.path}"
            f"{'' if device.rdev else ' (its name is taken? try --prefix NAME)'}")


async def _serve_one(daemon: Daemon, device: CuseDevice,
                     dropped: Callable[[CuseDevice], None]) -> None:
    assert device.session is not None
    await io.serve(device.fd, device.session, daemon.engine_lock)
    dropped(device)  # ENODEV without our closing it (cancellation never gets here)


def cuse_command(daemon: Daemon, prefix: str | None) -> int:
    """``ioasidfs cuse``: serve every node as a CUSE device until SIGINT/SIGTERM/SIGHUP."""
    problem = preflight(prefix)
    if problem is not None:
        print(f"ioasidfs: {problem}", file=sys.stderr)
        return 2
    devices = devices_of(daemon, prefix)
    taken = conflicts(devices)
    if taken:
        print(conflict_message(taken), file=sys.stderr)
        return 1
    try:
        problem = open_connections(daemon, devices)
        if problem is not None:
            print(problem, file=sys.stderr)
            return 1
        return trio.run(_serve, daemon, devices)
    finally:
        close_connections(devices)
        if daemon.tracer is not None:
            daemon.tracer.close()


async def _serve(daemon: Daemon, devices: list[CuseDevice]) -> int:
    status = 0
    # The signal receiver must outlive the nursery: once the nodes exist, the main task waits
    # at the nursery's end, and a signal then must still stop us cleanly.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            def dropped(device: CuseDevice) -> None:
                nonlocal status
                print(dropped_message(device), file=sys.stderr)
                status = 1
                nursery.cancel_scope.cancel()

            async def stop_on_signal() -> None:
                async for signum in signals:
                    log.info("%s: removing the CUSE devices", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            problem = await bring_up(daemon, devices, nursery, dropped)
            if problem is not None:
                print(problem, file=sys.stderr)
                nursery.cancel_scope.cancel()
                return 1
            print(f"ioasidfs: serving {', '.join(d.path for d in devices)} over CUSE "
                  "(Ctrl-C or SIGTERM removes them)", file=sys.stderr, flush=True)
    return status


async def _wait_until_created(devices: list[CuseDevice]) -> str | None:
    """Wait for CUSE_INIT on every connection, then check each node is the device CUSE made
    for us. An error message, or None when all are ours (``rdev`` set)."""
    with trio.move_on_after(INIT_TIMEOUT):
        while any(d.session is not None and d.session.state is SessionState.AWAITING_INIT
                  for d in devices):
            await trio.sleep(0.005)
    late = [d.path for d in devices
            if d.session is None or d.session.state is SessionState.AWAITING_INIT]
    if late:
        return f"ioasidfs: the kernel sent no CUSE_INIT for {', '.join(late)}"
    foreign = []
    for device in devices:
        # The node is created while the kernel processes our CUSE_INIT reply, before our
        # write() of it returns; a real driver's node of the same name stays in its place.
        ours = sysfs_rdev(device.devname)
        try:
            st = os.stat(device.path)
        except OSError:
            st = None
        if ours is None or st is None or not stat.S_ISCHR(st.st_mode) or st.st_rdev != ours:
            foreign.append(device.path)
        else:
            device.rdev = ours
    if foreign:
        return conflict_message(foreign)
    return None
