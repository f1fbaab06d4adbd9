"""``ioasidfs run``: serve the fake tree in a private mount namespace and run PROGRAM inside it.

The daemon and PROGRAM share one mount namespace made for this run, so nothing is ever mounted
on the machine and nothing can be left behind: when the last process of the namespace exits, the
mounts go with it. PROGRAM is started with posix_spawn (safe in a threaded process), with no fd
of ours (its first open gets fd 3), the default signal mask, and stdin/stdout/stderr passed
through. Signals sent to us are forwarded to it; those a terminal sends to its whole foreground
process group (Ctrl-C) reach PROGRAM directly and are not sent a second time. We exit with its
status, 128+N when signal N killed it.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import sys
import threading
from typing import Sequence

import trio

from .daemon import Daemon
from .fuse.mount import mount_fuse
from .namespace import bind_into_dev, enter_private_namespace, replace_dev

log = logging.getLogger("ioasidfs.run")

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
SI_KERNEL = 0x80  # si_code of signals the kernel generates, e.g. a terminal's Ctrl-C


def run_program(daemon: Daemon, argv: Sequence[str]) -> int:
    """Run ``argv`` against ``daemon``'s tree; returns the exit status for ``ioasidfs run``."""
    program = shutil.which(argv[0]) if "/" not in argv[0] else argv[0]
    if program is None or not os.path.exists(program):
        print(f"ioasidfs: {argv[0]}: command not found", file=sys.stderr)
        return 127
    # Block the forwarded signals before any thread exists, so that every thread inherits the
    # mask and only the forwarder thread (sigtimedwait) ever receives them.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    rootless = enter_private_namespace()
    if rootless:
        daemon.tree.set_owner(os.getuid(), os.getgid())
    staging = replace_dev(daemon.tree.top_level_names())
    fuse_fd = mount_fuse(staging, use_fusermount=False)
    daemon.mounted_at(staging)
    return trio.run(_serve_and_run, daemon, fuse_fd, staging, program, list(argv))


async def _serve_and_run(daemon: Daemon, fuse_fd: int, staging: str, program: str, argv: list[str]) -> int:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.serve, fuse_fd)
        dirs, files = daemon.tree.top_level_split()
        await trio.to_thread.run_sync(bind_into_dev, staging, dirs, files)
        try:
            pid = _spawn(program, argv)
        except OSError as e:
            print(f"ioasidfs: {argv[0]}: {e.strerror}", file=sys.stderr)
            nursery.cancel_scope.cancel()
            return 126 if e.errno in (errno.EACCES, errno.ENOEXEC) else 127
        forwarder = _SignalForwarder(pid)
        forwarder.start()
        try:
            status = await _wait_child(pid)
        finally:
            forwarder.stop()
        nursery.cancel_scope.cancel()
    return status


def _spawn(program: str, argv: list[str]) -> int:
    close_ours = [(os.POSIX_SPAWN_CLOSE, fd) for fd in _open_fds() if fd > 2]
    return os.posix_spawn(program, argv, os.environ, file_actions=close_ours, setsigmask=(),
                          setsigdef=FORWARDED_SIGNALS + (signal.SIGPIPE, signal.SIGXFSZ))


def _open_fds() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/fd")]


async def _wait_child(pid: int) -> int:
    pidfd = os.pidfd_open(pid)
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


class _SignalForwarder:
    """Receives the blocked signals with sigtimedwait and sends them on to PROGRAM."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ioasidfs-signals", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            info = signal.sigtimedwait(FORWARDED_SIGNALS, 0.1)
            if info is None or info.si_code == SI_KERNEL:
                continue  # the terminal signalled the whole process group: PROGRAM has it too
            try:
                os.kill(self.pid, info.si_signo)
            except ProcessLookupError:
                return
