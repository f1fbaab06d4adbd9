"""The seccomp supervisor of ``ioasidfs run``: answers the ioctls the filter traps.

PROGRAM runs under a filter (:mod:`ioasidfs.seccomp`) that stops it inside the few ioctl()
calls FUSE cannot answer like the kernel (:mod:`ioasidfs.vfs`), inside
VFIO_GROUP_GET_DEVICE_FD, inside every mmap() of a file (FUSE answers mmap of our files
itself, not as the kernel's nodes do), and with ``--transport cuse`` inside every
pread64/pwrite64 (CUSE drops the position). For each one this trio task:

1. receives the notification (ENOENT: the caller was killed meanwhile — normal);
2. asks the handler whether the fd may be one of ours, from /proc alone (cheap, no lock). Most
   trapped calls are FIONREAD on pipes and sockets, or mmap() of shared libraries and other
   files: those get CONTINUE, the real syscall runs;
3. otherwise runs the handler in a worker thread holding the engine lock (finding which of our
   files the fd is issues a FUSE ioctl on our own file: never on the thread reading /dev/fuse),
   which answers None (not ours after all: CONTINUE), a value, an errno, or a new file;
4. checks the notification is still valid (a dead caller's pid may be reused: what we read about
   "pid" is about the caller only if it is still waiting), and answers. A new file is opened by
   us from a worker thread (that open is a FUSE request the reader must serve), installed in
   the caller with ADDFD|SEND (atomically the ioctl's return value) and closed on our side.

One notification at a time: the engine serialises everything anyway, and answering in order
keeps a multi-threaded program's calls in order. Nothing here raises out of the loop: a failure
is logged and, if the caller still waits, answered EIO.
"""
from __future__ import annotations

import errno
import logging
import os
import select
from functools import partial
from typing import Callable, Protocol

import trio

from . import seccomp
from .errors import KernelError

log = logging.getLogger("ioasidfs.seccomp")


class NewFile(Protocol):
    """A trapped ioctl's answer that is a new open file (e.g. ``devfs.StagedFile``)."""

    def open(self) -> int:
        """Open it in this process and return our fd. Worker thread, engine lock NOT held."""
        ...

    def abandon(self) -> None:
        """It could not be opened: drop it. Engine lock held."""
        ...

    # Optional: ``installed(fd) -> int``, called (engine lock held) once the file is ``fd`` in
    # the caller, returns the ioctl's value -- for an ioctl that reports the new fd inside its
    # struct (IOMMU_TEST_CMD's CREATE_ACCESS) rather than as its return value.


class TrapHandler(Protocol):
    """What the supervisor needs from the filesystem (``devfs.DevFs``)."""

    def may_be_ours(self, pid: int, fd: int) -> bool:
        """Cheap and non-blocking (trio thread): False means surely not one of our files."""
        ...

    def trapped_ioctl(self, pid: int, fd: int, cmd: int, arg: int) -> int | NewFile | None:
        """The answer; None when the fd is not ours; KernelError for an errno.
        Worker thread, engine lock held."""
        ...

    def trapped_rw(self, pid: int, fd: int, write: bool, buf: int, count: int,
                   offset: int) -> int | None:
        """The answer to pread64 (``write`` False) or pwrite64(fd, buf, count, offset): the
        byte count, having moved the data through the caller's memory itself; None to let the
        real syscall run; KernelError for an errno. Worker thread, engine lock held."""
        ...

    def trapped_mmap(self, pid: int, fd: int, length: int, prot: int, flags: int,
                     offset: int) -> int | None:
        """The answer to mmap(addr, length, prot, flags, fd, offset) on one of our files: a
        value (the mapping's address), None to let the real syscall run (not ours, or a file
        whose real mmap() is the right answer); KernelError for an errno.
        Worker thread, engine lock held."""
        ...


async def supervise(listener: int, handler: TrapHandler, engine_lock: trio.Lock) -> None:
    """Answer every notification on ``listener`` until no filtered task is left (POLLHUP) or we
    are cancelled. Takes ownership of ``listener`` and closes it: a caller still waiting then
    gets ENOSYS instead of hanging."""
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    try:
        while True:
            await trio.lowlevel.wait_readable(listener)
            events = dict(poller.poll(0)).get(listener, 0)
            if not events & select.POLLIN:
                if events & (select.POLLHUP | select.POLLERR):
                    return  # every task running under the filter has exited
                continue
            try:
                notification = seccomp.recv(listener)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.EINTR):
                    continue  # the caller died before we received its notification
                log.error("cannot receive seccomp notifications (%s); trapped ioctls now fail ENOSYS", e)
                return
            await answer(listener, notification, handler, engine_lock)
    finally:
        os.close(listener)


async def answer(listener: int, notification: seccomp.Notification, handler: TrapHandler,
                 engine_lock: trio.Lock) -> None:
    """Answer one notification; never raises (except trio's Cancelled)."""
    nid = notification.id
    owed = True
    try:
        pid = notification.pid
        call: Callable[[], int | NewFile | None]
        if notification.is_x86_64_ioctl:
            fd, cmd, arg = notification.ioctl_args
            call = partial(handler.trapped_ioctl, pid, fd, cmd, arg)
        elif notification.is_x86_64_mmap:
            _addr, length, prot, flags, fd, offset = notification.mmap_args
            call = partial(handler.trapped_mmap, pid, fd, length, prot, flags, offset)
        elif notification.is_x86_64_pread or notification.is_x86_64_pwrite:
            fd, buf, count, offset = notification.rw_args
            call = partial(handler.trapped_rw, pid, fd, notification.is_x86_64_pwrite, buf,
                           count, offset)
        else:
            fd = -1
        if fd < 0 or pid == 0 or fd > 0x7FFF_FFFF or not handler.may_be_ours(pid, fd):
            owed = False
            seccomp.send_continue(listener, nid)
            return
        try:
            async with engine_lock:
                result = await trio.to_thread.run_sync(call)
        except KernelError as error:
            owed = False
            if seccomp.id_valid(listener, nid):
                seccomp.send(listener, nid, error=_usable_errno(error))
            return
        if result is None:
            owed = False
            seccomp.send_continue(listener, nid)
            return
        if not seccomp.id_valid(listener, nid):
            owed = False  # the caller is gone; it would never see the answer
            if not isinstance(result, int):
                async with engine_lock:
                    result.abandon()
            return
        if isinstance(result, int):
            owed = False
            seccomp.send(listener, nid, val=result)
            return
        owed = False
        await _install(listener, nid, result, engine_lock)
    except Exception:
        log.exception("trapped syscall %s of pid %d: answering EIO", _describe(notification),
                      notification.pid)
        if owed:
            try:
                seccomp.send(listener, nid, error=errno.EIO)
            except OSError:
                pass


async def _install(listener: int, nid: int, new: NewFile, engine_lock: trio.Lock) -> None:
    """Make ``new`` the caller's new fd and the trapped ioctl's return value."""
    try:
        ours = await trio.to_thread.run_sync(new.open)
    except (OSError, KernelError) as error:
        async with engine_lock:
            new.abandon()
        log.warning("cannot open the new file for the caller: %s", error)
        seccomp.send(listener, nid, error=error.errno or errno.EIO)
        return
    try:
        # O_CLOEXEC, as the kernel's get_unused_fd_flags(O_CLOEXEC) for a device fd.
        installed = seccomp.add_fd(listener, nid, ours, send_reply=False, cloexec=True)
    except OSError as error:
        # Ours is the last reference: closing it sends the RELEASE that gives the file back to
        # the engine (from a thread: the reader must be free to serve it).
        await trio.to_thread.run_sync(os.close, ours)
        # ENOENT: the caller is gone. Anything else (EMFILE: its fd table is full) is the
        # errno the kernel would have given when it allocated the fd.
        if error.errno != errno.ENOENT:
            seccomp.send(listener, nid, error=error.errno or errno.EIO)
        return
    # Drop our reference *before* the caller resumes: its close() must be the last one, so
    # that the file is released when it closes it, as the kernel's device fd is. (ADDFD with
    # FLAG_SEND would resume the caller first and leave the release to our close.) The
    # caller holds the file now, so no RELEASE follows; but beside CUSE nodes a device fd's
    # close() sends FLUSH and waits for it (devfs.DevFs.flush): close from a thread, so that
    # the readers on this one stay free to answer.
    await trio.to_thread.run_sync(os.close, ours)
    value = installed
    report: Callable[[int], int] | None = getattr(new, "installed", None)
    try:
        if report is not None:
            async with engine_lock:
                value = await trio.to_thread.run_sync(report, installed)
    except KernelError as error:
        # The ioctl reports the fd in its struct and could not write it (EFAULT): the kernel
        # would not have installed it; ours stays open in the caller.
        seccomp.send(listener, nid, error=_usable_errno(error))
        return
    seccomp.send(listener, nid, val=value)


def _usable_errno(error: KernelError) -> int:
    if 0 < error.errno < 4096:
        return error.errno
    log.error("errno %d (%s) cannot be returned; answering EIO", error.errno, error.reason)
    return errno.EIO


def _describe(notification: seccomp.Notification) -> str:
    if notification.is_x86_64_pread or notification.is_x86_64_pwrite:
        fd, buf, count, offset = notification.rw_args
        name = "pwrite64" if notification.is_x86_64_pwrite else "pread64"
        return f"{name}({fd}, {buf:#x}, {count:#x}, {offset:#x})"
    if notification.is_x86_64_mmap:
        addr, length, prot, flags, fd, offset = notification.mmap_args
        return f"mmap({addr:#x}, {length:#x}, {prot:#x}, {flags:#x}, {fd}, {offset:#x})"
    fd, cmd, arg = notification.ioctl_args
    return f"ioctl({fd}, {cmd:#x}, {arg:#x})"
