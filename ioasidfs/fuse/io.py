"""The thin trio I/O layer: read requests from /dev/fuse, hand them to the session, write replies.

It holds no policy. The session says, per request, how it may run:

* LOCK_FREE requests are answered on the spot, on the reader task. The daemon's private identity
  ioctl is one: a worker thread that resolves a client fd issues it on our own file while it
  holds the engine lock, so it must never wait for that lock.
* INLINE requests run on the reader task too, unless the engine lock is taken; then they queue
  behind it in arrival order (trio.Lock is fair), so a slow request never reorders the others.
* WORKER requests take the engine lock and run in a worker thread, so the reader keeps serving
  while they block (for example on a FUSE round trip to our own file — doing that on the reader
  would deadlock, see shared/spec/platform.md).

The engine is touched only by whoever holds the lock, so it needs no locking of its own.
Once a request has been read it is always answered: a client cannot even be killed until it is.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Protocol

import trio

from ..errors import ProtocolError
from .codec import Request
from .session import Dispatch

log = logging.getLogger("ioasidfs.fuse")


class Session(Protocol):
    """What the I/O layer needs from the sans-I/O protocol session."""

    @property
    def read_buffer_size(self) -> int: ...

    def parse(self, data: bytes) -> Request: ...

    def reject(self, error: ProtocolError) -> bytes | None: ...

    def classify(self, request: Request) -> Dispatch: ...

    def handle(self, request: Request) -> bytes | None: ...


def _write_reply(fd: int, reply: bytes) -> None:
    try:
        os.write(fd, reply)
    except OSError as e:
        # ENOENT: the request was interrupted or aborted meanwhile; nobody waits for the answer.
        if e.errno != errno.ENOENT:
            log.warning("cannot write a FUSE reply: %s", e)


async def serve(fd: int, session: Session, engine_lock: trio.Lock) -> None:
    """Serve the FUSE connection on ``fd`` until it is unmounted (ENODEV) or we are cancelled.

    ``engine_lock`` is shared with every other source of engine calls (the seccomp supervisor of
    ``ioasidfs run``), so that exactly one call touches the engine at a time.
    """
    os.set_blocking(fd, False)
    buf = bytearray(session.read_buffer_size)
    view = memoryview(buf)

    def run(request: Request) -> None:
        reply = session.handle(request)  # never raises: the session maps every failure
        if reply is not None:
            _write_reply(fd, reply)

    async def run_locked(request: Request, in_thread: bool) -> None:
        async with engine_lock:
            if in_thread:
                await trio.to_thread.run_sync(run, request)
            else:
                run(request)

    async with trio.open_nursery() as nursery:
        while True:
            try:
                n = os.readv(fd, [buf])
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.EINTR):
                    continue  # the request vanished (interrupted) before we read it
                if e.errno == errno.ENODEV:
                    break  # unmounted, or the connection was aborted
                raise
            try:
                request = session.parse(bytes(view[:n]))
            except ProtocolError as error:
                reply = session.reject(error)
                if reply is not None:
                    _write_reply(fd, reply)
                continue
            how = session.classify(request)
            if how is Dispatch.LOCK_FREE or (how is Dispatch.INLINE and not engine_lock.locked()):
                run(request)
            else:
                nursery.start_soon(run_locked, request, how is Dispatch.WORKER)
            if nursery.child_tasks:
                # Let the queued and threaded requests make progress; a busy connection must
                # not starve them (reading alone never yields while requests keep coming).
                await trio.sleep(0)
        nursery.cancel_scope.deadline = trio.current_time() + 5
