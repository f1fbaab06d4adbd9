"""Device DMA: the one place where an emulated device reads or writes the client's memory.

A device model never touches process memory directly. It calls :func:`dma_read` /
:func:`dma_write` with an IOVA, exactly as hardware puts an IOVA on the bus, and the access goes
through the IOMMU: the address space's translation table (``ioasidfs.engine.translate``) turns
the range into (owner, vaddr, length) segments, and the bytes move with process_vm_readv/writev
over all segments of an owner in one vectored call (``ioasidfs.client.process_vm_transfer``).

An access the IOMMU would block is an **IOMMU fault**: an unmapped IOVA, a missing permission, or
memory whose owner has exited (or whose backing pages the owner has since unmapped). It is
appended to the space's :class:`FaultLog`, which the daemon exposes to the user, and never takes
the daemon down. Two granularities:

* :func:`dma_write` / :func:`dma_read_into` are one transaction: faults are checked before any
  byte moves, so a blocked write writes nothing and a blocked read returns nothing; the device
  model gets :class:`~ioasidfs.errors.IommuFault`.
* :func:`dma_write_pages` / :func:`dma_read_pages_into` are what a DMA engine moving a buffer
  does: page-sized transactions, each translated alone, so the mapped pages of a partly mapped
  range move and only the blocked pages are lost (reads of them give zeros). The edu's DMA
  engine uses these: the reference VM showed exactly that (tests/expected/edu_driver.notes.md).

Two limits of emulation, stated rather than hidden:

* Real hardware DMA into pinned pages still works after the process munmap()s them (the IOMMU
  maps physical pages); ours reaches the process's *virtual* memory, so it faults instead
  (``OWNER_MEMORY``) -- except for pinned shared memory, which the engine keeps through a
  window of its own (``ioasidfs.engine.kept``) and translates there. If the remote range
  becomes inaccessible halfway through a transfer, the bytes before that point have been
  copied (process_vm_* never rolls back); the fault is still raised and, for a write, the
  whole range is marked dirty so dirty tracking never under-reports.
* Translation and copy are two steps: an UNMAP racing with a DMA may let that DMA complete into
  memory that was just unmapped, as an in-flight DMA can on real hardware before the IOTLB
  flush. The caller (the daemon's engine lock) decides how strictly to serialise the two.

The permission rule is hardware's: a device read needs PROT_READ, a device write needs
PROT_WRITE. (The kernel's software path for mdev devices, vfio_dma_rw, additionally requires
PROT_READ for writes; emulated PCI devices DMA through the IOMMU, so the hardware rule applies.)
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import select
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

# The module, not the name: client imports the engine, whose Engine imports this module.
from .. import client
from ..engine.caller import ProcessKey
from ..engine.translate import (ACCESS_READ, ACCESS_WRITE, Fault, FaultReason, Segment,
                                TranslationTable)
from ..errors import IommuFault

log = logging.getLogger("ioasidfs.dma")

_U64 = 1 << 64
_PAGE = 4096  # the IOMMU's smallest page: the unit a blocked transaction loses


# --------------------------------------------------------------------------- fault log

@dataclass(frozen=True)
class FaultRecord:
    """One blocked DMA: what a user debugging their driver needs to find the bug.

    ``seq`` numbers faults from 1 in the order they happened (gaps never occur, but old records
    are dropped once the log is full: ``FaultLog.dropped`` counts them).
    """

    seq: int
    time: float
    iova: int
    device: str
    access: str
    reason: FaultReason
    length: int
    detail: str = ""

    def line(self) -> str:
        """One line of text, as a file in the mount or a log shows it."""
        text = (f"{self.seq} {self.time:.6f} {self.device or '-'} {self.access} "
                f"iova={self.iova:#x} len={self.length:#x} {self.reason.value}")
        return f"{text} ({self.detail})" if self.detail else text


class FaultLog:
    """The IOMMU's fault record: a bounded, thread-safe queue of the most recent faults.

    Interface for the daemon (a later issue wires it into a file in the mount and the trace):

    * ``records()`` -- a snapshot, oldest first; ``since(seq)`` -- only the newer ones, so a reader
      polling the log (``tail -f`` on a file) gets each fault once;
    * ``subscribe(callback)`` -- called with each new record as it is appended (the trace);
      returns a function that unsubscribes. Callbacks run on the DMA's thread and must not raise
      (an exception is logged and swallowed: a broken observer must not break DMA);
    * ``total`` faults ever, ``dropped`` faults no longer held, ``clear()``.
    """

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError("a fault log holds at least one record")
        self._records: collections.deque[FaultRecord] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._total = 0
        self._subscribers: list[Callable[[FaultRecord], None]] = []

    def record(self, when: float, iova: int, device: str, access: str, reason: FaultReason,
               length: int, detail: str = "") -> FaultRecord:
        with self._lock:
            self._total += 1
            rec = FaultRecord(self._total, when, iova, device, access, reason, length, detail)
            self._records.append(rec)
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(rec)
            except Exception:  # noqa: BLE001 - an observer's bug must not break DMA
                log.exception("fault log subscriber failed")
        return rec

    def records(self) -> list[FaultRecord]:
        with self._lock:
            return list(self._records)

    def since(self, seq: int) -> list[FaultRecord]:
        """The records numbered above ``seq`` that are still held."""
        with self._lock:
            return [r for r in self._records if r.seq > seq]

    @property
    def total(self) -> int:
        with self._lock:
            return self._total

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._total - len(self._records)

    def clear(self) -> None:
        """Forget the held records (numbering continues)."""
        with self._lock:
            self._records.clear()

    def subscribe(self, callback: Callable[[FaultRecord], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
        return unsubscribe

    def __iter__(self) -> Iterator[FaultRecord]:
        return iter(self.records())

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


# --------------------------------------------------------------------------- the space

@dataclass
class DmaSpace:
    """What a device's DMA goes through: one I/O address space.

    ``table`` translates IOVAs; ``owners`` says which process an owner token of the table stands
    for (``OwnerRegistry.key`` of the engine; None when unknown); ``faults`` records what was
    blocked (one log may be shared by every space of a daemon). ``blocked`` is set (to why) for
    the empty space of a device attached to no address space; it becomes each fault's detail.
    """

    table: TranslationTable
    owners: Callable[[int], ProcessKey | None]
    faults: FaultLog
    blocked: str = ""


# --------------------------------------------------------------------------- processes

def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19])


class _Target:
    """A live handle on one owner process: its pid and a pidfd that becomes readable when it
    exits, so that liveness costs one poll() and a reused pid can never receive our writes."""

    __slots__ = ("pid", "pidfd", "poller")

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.poller = select.poll()
        self.poller.register(pidfd, select.POLLIN)

    def alive(self) -> bool:
        return not self.poller.poll(0)

    def close(self) -> None:
        os.close(self.pidfd)


class _Processes:
    """Owner processes by ProcessKey, opened on first DMA and closed once seen dead."""

    PRUNE_AT = 64

    def __init__(self) -> None:
        self._targets: dict[ProcessKey, _Target] = {}
        self._lock = threading.Lock()

    def get(self, key: ProcessKey) -> _Target | None:
        """The live process ``key`` names, or None if it has exited (or the pid names another)."""
        with self._lock:
            target = self._targets.get(key)
            if target is not None:
                if target.alive():
                    return target
                del self._targets[key]
                target.close()
                return None
            target = self._open(key)
            if target is not None:
                if len(self._targets) >= self.PRUNE_AT:
                    self._prune()
                self._targets[key] = target
            return target

    @staticmethod
    def _open(key: ProcessKey) -> _Target | None:
        pid, start = key
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        # The pidfd was opened first: if the start time still matches, it is the same process
        # (a pid reused in between would show a later start time).
        if start and _start_time(pid) != start:
            os.close(pidfd)
            return None
        target = _Target(pid, pidfd)
        if not target.alive():
            target.close()
            return None
        return target

    def _prune(self) -> None:
        for key, target in list(self._targets.items()):
            if not target.alive():
                del self._targets[key]
                target.close()

    def forget(self, key: ProcessKey) -> None:
        with self._lock:
            target = self._targets.pop(key, None)
            if target is not None:
                target.close()


_processes = _Processes()


def forget_process(key: ProcessKey) -> None:
    """Close our handle on a process the daemon no longer maps memory of."""
    _processes.forget(key)


# --------------------------------------------------------------------------- DMA

def _fault(space: DmaSpace, iova: int, device: str, access: str, reason: FaultReason,
           length: int, detail: str = "") -> IommuFault:
    space.faults.record(time.time(), iova, device, access, reason, length, detail)
    return IommuFault(iova, device, access, reason, detail)


def _plan(space: DmaSpace, iova: int, length: int, device: str, access: str,
          ) -> list[tuple[_Target, int, list[tuple[int, int]]]]:
    """Translate and resolve owners: [(process, offset in the buffer, remote pieces)], one entry
    per run of consecutive segments of one owner. Raises the fault (recorded) if any part of
    the access would be blocked, before anything moves."""
    if iova < 0 or iova + length > _U64:
        raise _fault(space, iova, device, access, FaultReason.NOT_MAPPED, length,
                     "outside the 64-bit IOVA space")
    result = space.table.translate(iova, length,
                                   ACCESS_WRITE if access == "write" else ACCESS_READ)
    if isinstance(result, Fault):
        raise _fault(space, result.iova, device, access, result.reason, length, space.blocked)
    plan: list[tuple[_Target, int, list[tuple[int, int]]]] = []
    seg_iova = iova
    offset = 0
    targets: dict[int, _Target] = {}
    segments: list[Segment] = result
    for seg in segments:
        target = targets.get(seg.owner)
        if target is None:
            key = space.owners(seg.owner)
            found = _processes.get(key) if key is not None else None
            if found is None:
                raise _fault(space, seg_iova, device, access, FaultReason.OWNER_EXITED, length,
                             f"owner {key if key is not None else seg.owner} has exited")
            target = targets[seg.owner] = found
        if plan and plan[-1][0] is target:
            plan[-1][2].append((seg.vaddr, seg.length))
        else:
            plan.append((target, offset, [(seg.vaddr, seg.length)]))
        offset += seg.length
        seg_iova += seg.length
    return plan


def _transfer(space: DmaSpace, iova: int, buffer: bytes | bytearray | memoryview, device: str,
              access: str) -> None:
    length = len(buffer)
    plan = _plan(space, iova, length, device, access)
    view = memoryview(buffer).cast("B") if len(plan) > 1 else None
    write = access == "write"
    moved = 0   # the bytes before this offset have been transferred
    try:
        for target, offset, pieces in plan:
            size = pieces[0][1] if len(pieces) == 1 else sum(n for _addr, n in pieces)
            part = buffer if view is None else view[offset:offset + size]
            try:
                done = client.process_vm_transfer(target.pid, part, pieces, write=write)
            except OSError as e:
                gone = e.errno == errno.ESRCH or not target.alive()
                raise _fault(space, iova + offset, device, access,
                             FaultReason.OWNER_EXITED if gone else FaultReason.OWNER_MEMORY,
                             length, os.strerror(e.errno or errno.EFAULT)) from None
            moved = offset + done
            if done != size:
                raise _fault(space, iova + offset + done, device, access,
                             FaultReason.OWNER_MEMORY, length,
                             f"only {done} of {size} bytes of pid {target.pid} are accessible")
    finally:
        if write and moved:
            # Even when a later piece failed, the bytes before it reached memory: they are
            # dirty (dirty tracking must never miss a page a device wrote).
            space.table.mark_dirty(iova, moved)


def dma_write(space: DmaSpace, iova: int, data: bytes | bytearray | memoryview, *,
              device: str = "") -> None:
    """The device writes ``data`` to memory at ``iova`` (needs PROT_WRITE on every byte).

    Raises :class:`~ioasidfs.errors.IommuFault` (recorded in ``space.faults``) and writes
    nothing if any byte of the range is unmapped, read-only, or owned by an exited process.
    The written pages are marked dirty for dirty tracking.
    """
    if len(data) == 0:
        return
    _transfer(space, iova, data, device, "write")


def dma_read_into(space: DmaSpace, iova: int, buffer: bytearray | memoryview, *,
                  device: str = "") -> None:
    """The device reads ``len(buffer)`` bytes of memory at ``iova`` into ``buffer`` (needs
    PROT_READ). On a fault nothing is read: ``buffer`` is left as it was (unless the owner's
    memory vanished mid-transfer, see the module's notes) and IommuFault is raised."""
    if len(buffer) == 0:
        return
    if memoryview(buffer).readonly:
        raise ValueError("dma_read_into needs a writable buffer")
    _transfer(space, iova, buffer, device, "read")


def _transfer_by_page(space: DmaSpace, iova: int, buffer: bytes | bytearray | memoryview,
                      device: str, access: str) -> IommuFault | None:
    """A transfer as a DMA engine issues it: bus transactions that never cross a page, each
    translated on its own. The mapped pages move; every blocked page is dropped (a write) or
    reads as zeros (a read: what QEMU's vIOMMU gives a device, which the reference VM showed),
    and is recorded once in the fault log. Returns the first fault, or None."""
    view = memoryview(buffer).cast("B")
    length = len(view)
    first: IommuFault | None = None
    pos = 0
    while pos < length:
        try:
            _transfer(space, iova + pos, view[pos:], device, access)
            break
        except IommuFault as fault:
            first = first or fault
            bad = max(pos, min(length, fault.iova - iova))
        if bad > pos:
            # Everything before the fault translated; move it (a fault now is a race with an
            # unmap: it is recorded and that part is lost, as on hardware).
            try:
                _transfer(space, iova + pos, view[pos:bad], device, access)
            except IommuFault:
                pass
        end = min(length, ((iova + bad) // _PAGE + 1) * _PAGE - iova)
        if access == "read":
            view[bad:end] = bytes(end - bad)
        pos = end
    return first


def dma_write_pages(space: DmaSpace, iova: int, data: bytes | bytearray | memoryview, *,
                    device: str = "") -> IommuFault | None:
    """The device writes ``data`` at ``iova`` page by page, as a DMA engine does: blocked pages
    are dropped (and recorded), the others written. Returns the first fault, or None."""
    if len(data) == 0:
        return None
    return _transfer_by_page(space, iova, data, device, "write")


def dma_read_pages_into(space: DmaSpace, iova: int, buffer: bytearray | memoryview, *,
                        device: str = "") -> IommuFault | None:
    """The device reads memory at ``iova`` into ``buffer`` page by page: blocked pages read as
    zeros (and are recorded), the others are read. Returns the first fault, or None."""
    if len(buffer) == 0:
        return None
    if memoryview(buffer).readonly:
        raise ValueError("dma_read_pages_into needs a writable buffer")
    return _transfer_by_page(space, iova, buffer, device, "read")


def dma_read(space: DmaSpace, iova: int, length: int, *, device: str = "") -> bytearray:
    """The device reads ``length`` bytes of memory at ``iova`` (needs PROT_READ): a fresh buffer,
    or IommuFault (recorded) and no data."""
    if length < 0:
        raise ValueError(f"negative DMA length {length}")
    buffer = _unfilled_bytearray(length)
    dma_read_into(space, iova, buffer, device=device)
    return buffer


def _resize_bytearray() -> Callable[[bytearray, int], int] | None:
    try:
        import ctypes
        resize = ctypes.pythonapi.PyByteArray_Resize
    except (ImportError, AttributeError):  # not CPython
        return None
    resize.argtypes = [ctypes.py_object, ctypes.c_ssize_t]
    resize.restype = ctypes.c_int
    return resize  # type: ignore[no-any-return]


_RESIZE_BYTEARRAY = _resize_bytearray()


def _unfilled_bytearray(length: int) -> bytearray:
    """A bytearray of ``length`` bytes whose contents are left as the allocator gave them
    (CPython's PyByteArray_Resize does not clear). :func:`dma_read` hands it out only once the
    transfer has written every byte -- any fault raises instead -- and skipping the zero fill
    saves ~13 us per MiB, about 15% of a 1 MiB transfer."""
    buffer = bytearray()
    if length and (_RESIZE_BYTEARRAY is None or _RESIZE_BYTEARRAY(buffer, length) != 0):
        return bytearray(length)
    return buffer
