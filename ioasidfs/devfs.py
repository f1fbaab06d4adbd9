"""The filesystem the FUSE (and later CUSE) session serves: the fake /dev tree over the engine.

It turns protocol-level operations into engine calls: an open of a node creates the engine's
open file, an ioctl becomes a call with a :class:`Caller` that reaches into the calling process,
a release drops the file. It also owns the two things only a filesystem can know:

* **fd identity.** An ioctl such as VFIO_GROUP_SET_CONTAINER names an fd of the caller. We copy
  it (pidfd_getfd); if the copy lives on our mount, we ask *it* which open file it is, with a
  private sized ioctl the daemon answers with the file handle the kernel gives it. That ioctl is
  issued from a worker thread holding the engine lock, so it is answered lock-free.
* **whether a file is still held.** FUSE sends RELEASE asynchronously after the last close(); the
  kernel's VFIO has released a group before close() returns. Before an exclusive open says EBUSY
  we look for an fd of the holder's node in /proc (fdinfo: inode and mount id; reading it never
  calls back into FUSE).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from .client import ProcessFds, ProcessMemory, memlock_limit, read_status, CAP_IPC_LOCK
from .engine import FOREIGN, Caller, ClientMemory, Engine, OpenFile
from .engine.files import FileKind
from .devtree import DevTree, Node
from .errors import KernelError
from .fuse import abi
from .fuse.codec import Attr, DirEntry, FsStats
from .fuse.session import IoctlReply, OpenReply, RequestContext
from .trace import IoctlRecord, RecordingMemory, Tracer
from .uapi import registry
from .uapi.ioctl import IOR
from .uapi.registry import ArgKind

log = logging.getLogger("ioasidfs")

IDENTIFY = IOR(0xA5, 0x1D, 16)
"""Private ioctl: "which open file are you?". Answered with (token, fh), only to our own threads."""
_IDENTIFY_REPLY = struct.Struct("<QQ")
_MAX_STRING = 4096


@dataclass
class _Open:
    file: OpenFile
    node: Node


class DevFs:
    """Implements ``ioasidfs.fuse.session.Filesystem`` for a :class:`DevTree` and an :class:`Engine`."""

    def __init__(self, tree: DevTree, engine: Engine, *, tracer: Tracer | None = None,
                 memory: Callable[[int], ClientMemory] = ProcessMemory) -> None:
        self.tree = tree
        self.engine = engine
        self.tracer = tracer
        self.memory = memory
        self.opens: dict[int, _Open] = {}
        self._next_fh = 1
        self._token = int.from_bytes(os.urandom(8), "little")
        self._identifying: set[int] = set()
        self._fuse_device: tuple[int, int] | None = None  # (major, minor) of our connection
        self._started = int(time.time())
        engine.still_open = self._still_open

    def mounted(self, device: str) -> None:
        """Tell the filesystem the "major:minor" of its mount (from /proc/self/mountinfo)."""
        major, minor = device.split(":")
        self._fuse_device = (int(major), int(minor))

    # ------------------------------------------------------------------ metadata
    def _node(self, ino: int) -> Node:
        node = self.tree.nodes.get(ino)
        if node is None:
            raise KernelError(errno.ENOENT, f"no inode {ino}")
        return node

    def _attr(self, node: Node) -> Attr:
        nlink = 2 + sum(1 for c in node.children.values() if c.is_dir) if node.is_dir else 1
        t = int(node.ctime) or self._started
        return Attr(ino=node.ino, mode=node.mode, nlink=nlink, uid=node.uid, gid=node.gid,
                    atime=t, mtime=t, ctime=t)

    def lookup(self, ctx: RequestContext, parent_ino: int, name: bytes) -> Attr:
        child = self._node(parent_ino).children.get(os.fsdecode(name))
        if child is None:
            raise KernelError(errno.ENOENT, f"no {name!r}")
        return self._attr(child)

    def forget(self, ino: int, nlookup: int) -> None:
        pass  # nodes live as long as the daemon

    def getattr(self, ctx: RequestContext, ino: int) -> Attr:
        return self._attr(self._node(ino))

    def setattr(self, ctx: RequestContext, ino: int, mode: int | None, uid: int | None,
                gid: int | None) -> Attr:
        # default_permissions: the kernel has already checked that the caller may do this.
        node = self._node(ino)
        if mode is not None:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(mode)
        if uid is not None:
            node.uid = uid
        if gid is not None:
            node.gid = gid
        return self._attr(node)

    def access(self, ctx: RequestContext, ino: int, mask: int) -> None:
        self._node(ino)

    def statfs(self, ctx: RequestContext) -> FsStats:
        return FsStats()

    def opendir(self, ctx: RequestContext, ino: int) -> int:
        if not self._node(ino).is_dir:
            raise KernelError(errno.ENOTDIR, "not a directory")
        return 0

    def readdir(self, ctx: RequestContext, ino: int, fh: int, offset: int) -> Iterable[DirEntry]:
        node = self._node(ino)
        parent = node.parent or node
        entries = [(node.ino, ".", True), (parent.ino, "..", True)]
        entries += [(c.ino, c.name, c.is_dir) for c in node.children.values()]
        return [DirEntry(i, os.fsencode(name), abi.DirentType.DIR if is_dir else abi.DirentType.REG, index + 1)
                for index, (i, name, is_dir) in enumerate(entries) if index >= offset]

    def releasedir(self, ctx: RequestContext, ino: int, fh: int) -> None:
        pass

    # ------------------------------------------------------------------ files
    def caller(self, ctx: RequestContext, memory: ClientMemory | None = None) -> Caller:
        pid = ctx.pid
        status_cache: list[object] = []

        def status() -> object:
            if not status_cache:
                status_cache.append(read_status(pid))
            return status_cache[0]

        def tgid() -> int:
            return read_status(pid).tgid

        return Caller(pid=pid, memory=memory if memory is not None else self.memory(pid),
                      resolve_fd=lambda fd: self._resolve_fd(pid, fd), tgid=tgid,
                      can_lock_memory=lambda: read_status(pid).has_capability(CAP_IPC_LOCK),
                      memlock_limit=lambda: memlock_limit(tgid()))

    def open(self, ctx: RequestContext, ino: int, flags: int) -> OpenReply:
        node = self._node(ino)
        if node.kind is None:
            raise KernelError(errno.EISDIR, "is a directory")
        file = self.engine.open(node.kind, node.key, self.caller(ctx))
        fh = self._next_fh
        self._next_fh += 1
        self.opens[fh] = _Open(file, node)
        # direct_io: every read/write reaches us, at any offset (device regions live at
        # index << 40). noflush: closing the copies we make of client fds sends nothing.
        return OpenReply(fh, direct_io=True, noflush=True)

    def _open(self, fh: int) -> _Open:
        entry = self.opens.get(fh)
        if entry is None:
            raise KernelError(errno.EBADF, f"no open file {fh}")
        return entry

    def read(self, ctx: RequestContext, ino: int, fh: int, offset: int, size: int) -> bytes:
        return self._open(fh).file.read(self.caller(ctx), offset, size)

    def write(self, ctx: RequestContext, ino: int, fh: int, offset: int, data: bytes) -> int:
        return self._open(fh).file.write(self.caller(ctx), offset, data)

    def flush(self, ctx: RequestContext, ino: int, fh: int) -> None:
        pass

    def release(self, ctx: RequestContext, ino: int, fh: int) -> None:
        entry = self.opens.pop(fh, None)
        if entry is not None:
            self.engine.release(entry.file)

    def poll(self, ctx: RequestContext, ino: int, fh: int, kh: int, events: int) -> int:
        # None of these files has a .poll: ENOSYS makes the kernel answer its default mask,
        # exactly what vfs_poll gives a file without one.
        raise KernelError(errno.ENOSYS, "no poll")

    def destroy(self) -> None:
        pass

    # ------------------------------------------------------------------ ioctl
    def ioctl_needs_worker(self, ino: int, cmd: int) -> bool:
        node = self.tree.nodes.get(ino)
        if node is None or node.kind is None:
            return False
        definition = registry.lookup(node.kind.value, cmd)
        return definition is not None and definition.takes_fds

    def ioctl_lock_free(self, ctx: RequestContext, ino: int, cmd: int) -> bool:
        return cmd == IDENTIFY and ctx.pid in self._identifying

    def ioctl(self, ctx: RequestContext, ino: int, fh: int, cmd: int, arg: int, in_data: bytes,
              out_size: int) -> IoctlReply:
        if cmd == IDENTIFY and ctx.pid in self._identifying:
            return IoctlReply(0, _IDENTIFY_REPLY.pack(self._token, fh))
        entry = self._open(fh)
        if self.tracer is None:
            return IoctlReply(entry.file.ioctl(self.caller(ctx), cmd, arg))
        return self._traced_ioctl(ctx, entry, cmd, arg)

    def _traced_ioctl(self, ctx: RequestContext, entry: _Open, cmd: int, arg: int) -> IoctlReply:
        assert self.tracer is not None
        memory = RecordingMemory(self.memory(ctx.pid))
        started = time.time()
        t0 = time.perf_counter()
        result, error = 0, None
        try:
            result = entry.file.ioctl(self.caller(ctx, memory), cmd, arg)
        except KernelError as e:
            error = e
        usec = (time.perf_counter() - t0) * 1e6
        kind = entry.node.kind.value if entry.node.kind is not None else "container"
        definition = registry.lookup(kind, cmd)
        before, after = _decode_arg(definition, memory, arg)
        self.tracer.record(IoctlRecord(
            time=started, pid=ctx.pid, node=entry.node.path, name=registry.name_of(kind, cmd),
            cmd=cmd, arg=arg, input=before, output=after, result=-1 if error else result,
            errno=errno.errorcode.get(error.errno, str(error.errno)) if error else None,
            usec=round(usec, 1), reason=error.reason if error and error.reason else None))
        if error is not None:
            raise error
        return IoctlReply(result)

    # ------------------------------------------------------------------ fd identity
    def _resolve_fd(self, pid: int, fd: int) -> object:
        """The open file behind the caller's ``fd``: ours, or FOREIGN. Runs in a worker thread."""
        copy = ProcessFds(read_status(pid).tgid).copy(fd)
        try:
            if not self._is_ours(copy):
                return FOREIGN
            me = threading.get_native_id()
            self._identifying.add(me)
            try:
                reply = bytearray(_IDENTIFY_REPLY.size)
                fcntl.ioctl(copy, IDENTIFY, reply, True)
            except OSError:
                return FOREIGN
            finally:
                self._identifying.discard(me)
            token, fh = _IDENTIFY_REPLY.unpack(reply)
            entry = self.opens.get(fh) if token == self._token else None
            return entry.file if entry is not None else FOREIGN
        finally:
            os.close(copy)

    def _is_ours(self, fd: int) -> bool:
        """Whether our copy ``fd`` is a file of our mount: its fdinfo's mount id is one of ours.

        Not fstat(): that sends GETATTR for a FUSE file, a round trip we would rather not make
        while holding the engine lock.
        """
        if self._fuse_device is None:
            return False
        try:
            with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
                mount_id = _fdinfo_field(f.read(), b"mnt_id:")
        except OSError:
            return False
        return mount_id in _mount_ids_of(self._fuse_device)

    # ------------------------------------------------------------------ still open?
    def _still_open(self, file: OpenFile) -> bool:
        node = next((e.node for e in self.opens.values() if e.file is file), None)
        if node is None or self._fuse_device is None:
            return False
        mount_ids = _mount_ids_of(self._fuse_device)
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                fdinfo = os.listdir(f"/proc/{pid}/fdinfo")
            except OSError:
                continue
            for fd in fdinfo:
                try:
                    with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
                        info = f.read()
                except OSError:
                    continue
                if _fdinfo_field(info, b"ino:") == node.ino and _fdinfo_field(info, b"mnt_id:") in mount_ids:
                    return True
        return False


def _fdinfo_field(info: bytes, name: bytes) -> int | None:
    for line in info.splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    return None


def _mount_ids_of(device: tuple[int, int]) -> set[int]:
    wanted = f"{device[0]}:{device[1]}"
    ids = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[2] == wanted:
                ids.add(int(fields[0]))
    return ids


def _decode_arg(definition: registry.IoctlDef | None, memory: RecordingMemory,
                arg: int) -> tuple[object, object]:
    """The argument as the program passed it and as we left it, decoded for the trace."""
    if definition is None:
        return {"arg": arg}, None
    if definition.arg is ArgKind.NONE:
        return None, None
    if definition.arg is ArgKind.VALUE:
        return arg, None
    before, after = memory.struct_at(arg)
    if definition.arg is ArgKind.STRING:
        return (before.split(b"\0")[0].decode(errors="replace") if before else {"arg": arg}), None
    if before is None or definition.layout is None:
        return {"arg": arg}, None
    layout = definition.layout
    return layout.unpack(before), (layout.unpack(after) if after is not None else None)
