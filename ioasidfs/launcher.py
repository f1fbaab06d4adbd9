"""``ioasidfs run``: serve the fake tree in a private mount namespace and run PROGRAM inside it.

The daemon and PROGRAM share one mount namespace made for this run, so nothing is ever mounted
on the machine and nothing can be left behind: when the last process of the namespace exits, the
mounts go with it.

PROGRAM runs under a seccomp filter that hands us the few ioctls FUSE cannot answer like the
kernel's character devices (:mod:`ioasidfs.vfs`, :mod:`ioasidfs.supervisor`), and mmap() of
files. A filter can only
be installed by the process itself, before exec, so PROGRAM's process is forked early: right
after the namespace is made, while we are still single-threaded (fork and threads do not mix;
trio and the signal forwarder start later). The child waits on a pipe until /dev is in place,
then resets its signal mask and dispositions, installs the filter, sends us the listener fd over
a socketpair, closes every fd but 0, 1 and 2 (PROGRAM's first open gets fd 3) and execs.

Signals sent to us are forwarded to PROGRAM; those a terminal sends to its whole foreground
process group (Ctrl-C) reach PROGRAM directly and are not sent a second time. We exit with its
status, 128+N when signal N killed it; 127 if it cannot be found, 126 if it cannot be executed.

``--transport cuse`` (:func:`run_program_cuse`): the /dev nodes are real character devices,
one CUSE device per node (:mod:`ioasidfs.cuse`), made in the machine's /dev before PROGRAM
starts and removed by the kernel when we exit (however we exit). The rest is the same: the
namespace (for the fake sysfs over /sys), the early fork, the seccomp filter (with two more
syscalls, below) and supervisor, the same engine, dispatch and trace. What differs and why:

* /dev is not covered: the nodes are real. Only with ``--prefix NAME`` (a real VFIO driver owns
  /dev/vfio) is a tmpfs stacked on /dev, as over FUSE, and /dev/NAME/vfio, ioasid and iommu are
  bound onto /dev/vfio, /dev/ioasid and /dev/iommu in PROGRAM's namespace.
* A private FUSE mount of the same tree still exists, mounted on a staging directory, bound
  nowhere but over /sys (the fake sysfs), then detached: it carries the fake sysfs and the
  device fds. A device fd is ``devfds/<bdf>`` of that mount, opened through a pinned handle
  and installed by ADDFD exactly as over FUSE, not a CUSE device: CUSE ignores the file
  position of read() and write() (``cuse_read_iter`` passes pos 0), and device regions live at
  ``index << 40``; the kernel's device fd is an anonymous inode, not a /dev node, anyway.
* The filter is the FUSE one, because device fds are FUSE files, plus pread64/pwrite64
  (:func:`seccomp_filter_cuse`): a device cdev is a CUSE node, whose regions need the position
  CUSE drops. On the CUSE nodes a trapped command the VFS answers for a char device gets the
  real syscall (``DevFs.trapped_ioctl``); mmap() is trapped for them too: CUSE has no
  ``.mmap`` (ENODEV), while device cdevs and /dev/iommu answer EINVAL/EPERM/ENXIO.
* CUSE needs root (``/dev/cuse`` is root's); ``cli`` refuses a kernel without CUSE with one
  line and status 2 before anything starts.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import NoReturn, Sequence

import trio

from . import cuse, seccomp, vfs
from .daemon import Daemon
from .fuse import io
from .fuse.mount import mount_fuse
from .namespace import (bind_into_dev, bind_sysfs, drop_staging, enter_private_namespace,
                        private_staging, replace_dev)
from .supervisor import supervise
from .sysfs import BIND_TARGETS, SYSFS_DIR
from .uapi.iommufd import IOMMU_FAULT_QUEUE_ALLOC, IOMMU_TEST_CMD, IOMMU_VEVENTQ_ALLOC
from .uapi.vfio import VFIO_GROUP_GET_DEVICE_FD, VFIO_TYPE

log = logging.getLogger("ioasidfs.run")

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
SI_KERNEL = 0x80  # si_code of signals the kernel generates, e.g. a terminal's Ctrl-C

TRAPPED_COMMANDS = frozenset(vfs.TRAPPED) | {VFIO_GROUP_GET_DEVICE_FD, IOMMU_TEST_CMD,
                                             IOMMU_FAULT_QUEUE_ALLOC, IOMMU_VEVENTQ_ALLOC}
"""What PROGRAM's filter hands to the supervisor: the commands the VFS answers differently for
a regular file (see ioasidfs.vfs for each one's reason), and the ioctls whose answer may be a
new fd (IOMMU_TEST_CMD's CREATE_ACCESS, the command being ENOTTY unless configured;
IOMMU_FAULT_QUEUE_ALLOC, whose fd goes into ``out_fault_fd``; IOMMU_VEVENTQ_ALLOC, whose fd
goes into ``out_veventq_fd``)."""
SECCOMP_FILTER = seccomp.build_filter(TRAPPED_COMMANDS, sized_type=VFIO_TYPE, trap_file_mmap=True)
"""The filter also traps every sized VFIO-type command (``_IOR(';', ...)`` and kin): no kernel
node defines one, FUSE would copy its argument before asking us (EFAULT on a bad pointer), and
the kernel's nodes answer them without touching the argument (ENOTTY, or EINVAL). And every
mmap() of a file: FUSE answers mmap of our direct-io files itself (ENODEV for MAP_SHARED, a
page-cache mapping for MAP_PRIVATE), the kernel's nodes with ENODEV (no .mmap) or their
driver's errno; mmap of any other file gets CONTINUE (one /proc read per call)."""

_GO = b"g"


def run_program(daemon: Daemon, argv: Sequence[str]) -> int:
    """Run ``argv`` against ``daemon``'s tree; returns the exit status for ``ioasidfs run``."""
    program = find_program(argv[0])
    if program is None:
        print(f"ioasidfs: {argv[0]}: command not found", file=sys.stderr)
        return 127
    # Block the forwarded signals before any thread or child exists: every thread inherits the
    # mask, so only the forwarder thread (sigtimedwait) receives them; the child unblocks them
    # just before exec, after resetting their dispositions.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    started_in = os.readlink("/proc/self/ns/user")
    rootless = enter_private_namespace()
    if rootless:
        daemon.tree.set_owner(os.getuid(), os.getgid())
    # What the VFS says about the machine's /dev, read before our tmpfs covers it. Freezing it
    # takes CAP_SYS_ADMIN in the namespace we started in, which a rootless run never has.
    dev_filesystem = vfs.DevFilesystem.probe("/dev", user_ns=None if rootless else started_in)
    child = _Child.fork(program, list(argv), no_new_privs=rootless)
    try:
        staging = replace_dev(daemon.tree.top_level_names())
        daemon.fs.dev_filesystem = dev_filesystem.with_device(os.stat("/dev").st_dev)
        fuse_fd = mount_fuse(staging, use_fusermount=False)
        daemon.mounted_at(staging)
        return trio.run(_serve_and_run, daemon, fuse_fd, staging, child)
    finally:
        child.reap()


def find_program(name: str) -> str | None:
    """The file execvp would run for ``name``: the first executable match in PATH, else the
    first existing one (exec then fails EACCES: 126, as in a shell); None when there is none."""
    if "/" in name:
        return name if os.path.exists(name) else None
    found = None
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path):
            if os.access(path, os.X_OK):
                return path
            found = found or path
    return found


async def _serve_and_run(daemon: Daemon, fuse_fd: int, staging: str, child: "_Child") -> int:
    forwarder = _SignalForwarder(child.pid)
    forwarder.start()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.serve, fuse_fd)
            dirs, files = daemon.tree.top_level_split()
            # The fake sysfs and the devfds/ handle before the staging mount is dropped.
            await trio.to_thread.run_sync(functools.partial(bind_sysfs, staging, BIND_TARGETS,
                                                            sysfs_dir=SYSFS_DIR))
            # Device fds are opened through devfds/, which is not bound anywhere: keep a handle.
            await trio.to_thread.run_sync(daemon.fs.pin_device_fds_dir, staging)
            await trio.to_thread.run_sync(bind_into_dev, staging, dirs, files)
            await trio.to_thread.run_sync(drop_staging, staging)
            status = await _start_and_supervise(daemon, child)
            nursery.cancel_scope.cancel()
    finally:
        forwarder.stop()
    return status


async def _start_and_supervise(daemon: Daemon, child: "_Child") -> int:
    """/dev and /sys are in place: let PROGRAM start, answer its trapped calls until it exits,
    and return its status."""
    child.go()
    listener = await child.receive_listener()
    # The supervisor gets a scope of its own: when PROGRAM exits it is stopped first, and
    # finishes the call it is answering while the readers still serve (that call may be
    # waiting for one of our own FUSE or CUSE requests).
    async with trio.open_nursery() as supervising:
        if listener is not None:
            supervising.start_soon(supervise, listener, daemon.fs, daemon.engine_lock)
        status = await child.wait()
        supervising.cancel_scope.cancel()
    return status


def seccomp_filter_cuse() -> bytes:
    """PROGRAM's filter over CUSE: the FUSE transport's (device fds are FUSE files), plus every
    pread64/pwrite64, because CUSE drops their position (``cuse_read_iter`` and
    ``cuse_write_iter`` pass pos 0) and a device cdev's regions live at ``index << 40``
    (``DevFs.trapped_rw`` answers them for our CUSE nodes; any other fd gets the real syscall,
    after one fdinfo read: the price of the CUSE transport for programs that pread a lot)."""
    return seccomp.build_filter(TRAPPED_COMMANDS, sized_type=VFIO_TYPE, trap_file_mmap=True,
                                syscalls=(seccomp.NR_PREAD64, seccomp.NR_PWRITE64))


def run_program_cuse(daemon: Daemon, argv: Sequence[str], prefix: str | None) -> int:
    """``ioasidfs run --transport cuse``: the nodes as CUSE devices in the machine's /dev (or
    /dev/PREFIX, bound onto /dev in PROGRAM's namespace), then as :func:`run_program`.
    ``cli`` has checked that the kernel has CUSE (:func:`cuse.preflight`)."""
    program = find_program(argv[0])
    if program is None:
        print(f"ioasidfs: {argv[0]}: command not found", file=sys.stderr)
        return 127
    if os.geteuid() != 0:
        print("ioasidfs: --transport cuse needs root (/dev/cuse is root's); without root use "
              "the default FUSE transport", file=sys.stderr)
        return 2
    devices = cuse.devices_of(daemon, prefix)
    taken = cuse.conflicts(devices)
    if taken:
        print(cuse.conflict_message(taken), file=sys.stderr)
        return 1
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    started_in = os.readlink("/proc/self/ns/user")
    enter_private_namespace()
    # Read before a tmpfs may cover /dev (--prefix): FICLONE and friends on device fds.
    dev_filesystem = vfs.DevFilesystem.probe("/dev", user_ns=started_in)
    child = _Child.fork(program, list(argv), no_new_privs=False,
                        filter_program=seccomp_filter_cuse())
    fds: list[int] = []
    try:
        problem = cuse.open_connections(daemon, devices)
        if problem is not None:
            print(problem, file=sys.stderr)
            return 1
        return trio.run(_serve_cuse_and_run, daemon, devices, prefix, dev_filesystem, child, fds)
    finally:
        # Close the connections before reaping: a PROGRAM still waiting in one of our requests
        # (we failed) then gets ENODEV instead of waiting forever for a dead server.
        cuse.close_connections(devices)
        for fd in fds:
            os.close(fd)
        child.reap()
        if daemon.tracer is not None:
            daemon.tracer.close()


async def _serve_cuse_and_run(daemon: Daemon, devices: list[cuse.CuseDevice], prefix: str | None,
                              dev_filesystem: vfs.DevFilesystem, child: "_Child",
                              fds: list[int]) -> int:
    forwarder = _SignalForwarder(child.pid)
    forwarder.start()
    status = 1
    try:
        async with trio.open_nursery() as nursery:
            def dropped(device: cuse.CuseDevice) -> None:
                # PROGRAM cannot work without the node; the child is killed on our way out.
                print(cuse.dropped_message(device), file=sys.stderr)
                nursery.cancel_scope.cancel()

            problem = await cuse.bring_up(daemon, devices, nursery, dropped)
            if problem is not None:
                print(problem, file=sys.stderr)
                nursery.cancel_scope.cancel()
                return 1
            try:
                await _cuse_namespace(daemon, prefix, dev_filesystem, nursery, fds)
            except OSError as e:
                print(f"ioasidfs: cannot prepare PROGRAM's /dev and /sys: {e}", file=sys.stderr)
                nursery.cancel_scope.cancel()
                return 1
            log.info("serving %s over CUSE for %s", ", ".join(d.path for d in devices), child.pid)
            status = await _start_and_supervise(daemon, child)
            nursery.cancel_scope.cancel()
    finally:
        forwarder.stop()
    return status


async def _cuse_namespace(daemon: Daemon, prefix: str | None, dev_filesystem: vfs.DevFilesystem,
                          nursery: trio.Nursery,
                          fds: list[int]) -> None:
    """The CUSE nodes exist: mount the tree over FUSE on a staging directory (served in
    ``nursery``; its fd goes to ``fds``), bind its sysfs over /sys, pin its devfds/, drop the
    staging mount and, with ``prefix``, bind /dev/PREFIX's nodes onto the kernel's paths.
    OSError when a step fails; the staging directory is removed whatever happens."""
    dirs, files = daemon.tree.top_level_split()
    if prefix is not None:
        staging = await trio.to_thread.run_sync(replace_dev, daemon.tree.top_level_names())
    else:
        staging = private_staging()
    staged = True
    try:
        daemon.fs.dev_filesystem = dev_filesystem.with_device(os.stat("/dev").st_dev)
        # The tree over FUSE too, for the fake sysfs and the device fds (devfds/).
        fuse_fd = mount_fuse(staging, use_fusermount=False)
        fds.append(fuse_fd)
        daemon.mounted_at(staging)
        nursery.start_soon(io.serve, fuse_fd, daemon.session, daemon.engine_lock)
        await trio.to_thread.run_sync(functools.partial(bind_sysfs, staging, BIND_TARGETS,
                                                        sysfs_dir=SYSFS_DIR))
        await trio.to_thread.run_sync(daemon.fs.pin_device_fds_dir, staging)
        await trio.to_thread.run_sync(drop_staging, staging)
        staged = False
    finally:
        if staged:
            # Lookups under it may wait for the FUSE reader: from a thread, and never raise.
            await trio.to_thread.run_sync(_remove_staging, staging)
    if prefix is not None:
        # CUSE made the nodes under /dev/PREFIX; PROGRAM finds them at the kernel's paths.
        await trio.to_thread.run_sync(bind_into_dev, f"/dev/{prefix}", dirs, files)


def _remove_staging(staging: str) -> None:
    try:
        drop_staging(staging)
    except OSError:
        try:
            os.rmdir(staging)  # nothing was mounted on it
        except OSError as e:
            log.warning("cannot remove %s: %s", staging, e)


@dataclass
class _Child:
    """PROGRAM's process, forked before trio; it execs once told /dev is ready."""

    pid: int
    go_write: int
    sock: socket.socket
    reaped: bool = False
    status: int | None = None

    @classmethod
    def fork(cls, program: str, argv: list[str], *, no_new_privs: bool,
             filter_program: bytes | None = None) -> "_Child":
        """Fork PROGRAM's process; it will install ``filter_program`` (default: the FUSE
        transport's :data:`SECCOMP_FILTER`) before it execs."""
        assert threading.active_count() == 1, "fork() must happen before any thread starts"
        go_read, go_write = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        filter_program = SECCOMP_FILTER if filter_program is None else filter_program
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            os.close(go_write)
            ours.close()
            _child_main(program, argv, go_read, theirs, filter_program, no_new_privs)
        os.close(go_read)
        theirs.close()
        ours.setblocking(False)
        return cls(pid, go_write, ours)

    def go(self) -> None:
        """/dev is in place: let the child install its filter and exec."""
        os.write(self.go_write, _GO)
        os.close(self.go_write)
        self.go_write = -1

    async def receive_listener(self) -> int | None:
        """The listener fd the child sends before it execs; None if it sent none (it could not
        install the filter, or died first)."""
        while True:
            try:
                _, fds, _, _ = socket.recv_fds(self.sock, 16, 1)
                break
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)
            except InterruptedError:
                continue
        self.sock.close()
        return fds[0] if fds else None

    async def wait(self) -> int:
        """PROGRAM's exit status, the shell's way: 128+N when signal N killed it."""
        pidfd = os.pidfd_open(self.pid)
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.reaped = True
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.waitstatus_to_exitcode(status)

    def reap(self) -> None:
        """Leave no child behind: one never told to go exits when its pipe closes; PROGRAM
        itself, still running only if we failed, cannot work without us and is killed."""
        if self.go_write >= 0:
            os.close(self.go_write)  # end of file: the child exits without running PROGRAM
            self.go_write = -1
        elif not self.reaped:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.sock.close()
        if not self.reaped:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.reaped = True


PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(signum: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        _say(f"cannot set the parent-death signal: {os.strerror(ctypes.get_errno())}")


def _child_main(program: str, argv: list[str], go_read: int, sock: socket.socket,
                filter_program: bytes, no_new_privs: bool) -> NoReturn:  # pragma: no cover
    """The forked child: wait for /dev, install the filter, exec PROGRAM. Never returns."""
    try:
        if os.read(go_read, 1) != _GO:
            os._exit(1)  # the launcher gave up before PROGRAM could start
        os.close(go_read)
        _reset_signals()
        # If the launcher dies (even SIGKILL), PROGRAM goes too: its /dev/vfio is gone with the
        # daemon, and an orphan nobody waits for would outlive every cleanup.
        _set_parent_death_signal(signal.SIGKILL)
        listener = -1
        try:
            # Root has CAP_SYS_ADMIN, which allows the filter without NO_NEW_PRIVS; setting it
            # anyway would stop setuid programs PROGRAM may run from gaining their privileges.
            if no_new_privs:
                seccomp.set_no_new_privs()
            listener = seccomp.install_filter(filter_program)
        except OSError as e:
            _say(f"cannot install the seccomp filter ({e.strerror}): FIONREAD and other "
                 "VFS-answered ioctls will get the regular-file answers")
        if listener >= 0:
            socket.send_fds(sock, [b"L"], [listener])
            os.close(listener)
        sock.close()
        # PROGRAM inherits nothing of ours: its first open gets fd 3.
        for fd in _open_fds():
            if fd > 2:
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            os.execv(program, argv)
        except OSError as e:
            _say(f"{argv[0]}: {e.strerror}")
            os._exit(127 if e.errno == errno.ENOENT else 126)
    except BaseException as e:
        _say(f"cannot start {argv[0]}: {e}")
    os._exit(126)


def _reset_signals() -> None:  # pragma: no cover - runs in the child
    """Default dispositions, then an empty mask: PROGRAM starts as if exec'd by a shell.
    Dispositions first, so that a forwarded signal already pending acts by default."""
    for signum in range(1, signal.NSIG):
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if signal.getsignal(signum) != signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # numbers the C library reserves for itself
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _say(message: str) -> None:
    os.write(2, f"ioasidfs: {message}\n".encode(errors="replace"))


def _open_fds() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/fd")]


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
