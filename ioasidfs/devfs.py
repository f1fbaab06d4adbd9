"""The filesystem the FUSE (and later CUSE) session serves: the fake /dev tree over the engine.

It turns protocol-level operations into engine calls: an open of a node creates the engine's
open file, an ioctl becomes a call with a :class:`Caller` that reaches into the calling process,
a release drops the file. It also owns the two things only a filesystem can know:

* **fd identity.** An ioctl such as VFIO_GROUP_SET_CONTAINER names an fd of the caller. We copy
  it (pidfd_getfd); if the copy lives on our mount, we ask *it* which open file it is, with a
  private sized ioctl the daemon answers with the file handle the kernel gives it. That ioctl is
  issued from a worker thread holding the engine lock, so it is answered lock-free.
* **ioctls FUSE cannot answer like a char device.** ``ioasidfs run`` traps them with seccomp
  (:mod:`ioasidfs.supervisor`); :meth:`DevFs.trapped_ioctl` answers them through the same
  (traced) path as a FUSE ioctl, or as the VFS would for a char device (:mod:`ioasidfs.vfs`),
  and may answer with a new open file for the caller (:class:`StagedFile`).
* **whether a file is still held.** FUSE sends RELEASE asynchronously after the last close(); the
  kernel's VFIO has released a group before close() returns. Before an exclusive open says EBUSY
  we look for an fd of the holder's node in /proc (fdinfo: inode and mount id; reading it never
  calls back into FUSE).

Over CUSE (``ioasidfs cuse``, ``ioasidfs run --transport cuse``) the nodes are character devices:
our files are recognised by their device number (fstat of a char device never calls into CUSE),
and RELEASE is synchronous (sent before close() returns), so a file whose RELEASE has not come is
still held. ``run --transport cuse`` serves both transports from this one filesystem: the /dev
nodes over CUSE, and over a private FUSE mount the fake sysfs and the device fds (``devfds/``:
CUSE ignores the file position of read()/write(), and regions live at ``index << 40``). Which
rule applies is decided per file: a file of our FUSE mount is known by its mount id, one of our
CUSE devices by its rdev, and only the nodes served over CUSE have a synchronous RELEASE.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Union

from . import vfs
from .client import (CAP_IPC_LOCK, CAP_SYS_ADMIN, ProcessEventfd, ProcessFds, ProcessFile,
                     ProcessMemory, contiguous_blocks, locked_pages, memlock_limit, read_status,
                     keep_shared, shared_mappings, start_time, user_range_ok)
from .engine import FOREIGN, Caller, ClientMemory, Engine, FileKind, OpenFile
from .devtree import DEVICE_FDS_DIR, DevTree, Node
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

IoctlResult = Union[int, OpenFile]
"""What a driver's ioctl gives: a value, or (VFIO_GROUP_GET_DEVICE_FD) a new open file."""


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
        # CUSE: the inodes served as CUSE devices, their device numbers, and the st_dev of the
        # filesystem(s) the kernel made their nodes on (devtmpfs).
        self._cuse_inodes: frozenset[int] = frozenset()
        self._cuse_rdevs: frozenset[int] = frozenset()
        self._cuse_filesystems: frozenset[int] = frozenset()
        self._started = int(time.time())
        # Trapped ioctls: what the VFS would say about /dev's filesystem (set by ``ioasidfs
        # run``), and the new files waiting to be opened by one of our threads (by thread id).
        self.dev_filesystem = vfs.DevFilesystem()
        self._staged: dict[int, StagedFile] = {}
        self._own_mount_ids: set[int] = set()
        self.device_fds_dir: int | None = None  # O_PATH fd of devfds/ (``ioasidfs run``)
        # Called whenever the engine takes a reference on a client's eventfd: the daemon's
        # eventfd watcher looks again at what it must wait for (ioeventfds, INTx unmask).
        self.eventfd_taken: Callable[[], None] = lambda: None
        engine.still_open = self._still_open

    def mounted(self, device: str, mount_id: int | None = None) -> None:
        """Tell the filesystem the "major:minor" of its mount (from /proc/self/mountinfo) and
        its mount id: ``ioasidfs run`` detaches that mount once pieces of it are bound into
        /dev, and files opened through it (device fds) keep its id, which the mount table no
        longer lists."""
        major, minor = device.split(":")
        self._fuse_device = (int(major), int(minor))
        if mount_id is not None:
            self._own_mount_ids.add(mount_id)

    def serving_cuse(self, inodes: Iterable[int]) -> None:
        """The nodes ``inodes`` are served as CUSE devices: their RELEASE is synchronous, so an
        open file of theirs whose RELEASE has not come is still held (no /proc scan). Called
        before the kernel sends the first request."""
        self._cuse_inodes = frozenset(inodes)

    def cuse_devices_created(self, rdevs: Iterable[int], filesystems: Iterable[int]) -> None:
        """The kernel made our CUSE devices: their device numbers ``rdevs`` (what identifies a
        file as ours), on the filesystems ``filesystems`` (st_dev of their nodes: which mounts
        may hold one, for the supervisor's cheap first look)."""
        self._cuse_rdevs = frozenset(rdevs)
        self._cuse_filesystems = frozenset(filesystems)

    # ------------------------------------------------------------------ metadata
    def _node(self, ino: int) -> Node:
        node = self.tree.nodes.get(ino)
        if node is None:
            raise KernelError(errno.ENOENT, f"no inode {ino}")
        return node

    def _attr(self, node: Node) -> Attr:
        nlink = 2 + sum(1 for c in node.children.values() if c.is_dir) if node.is_dir else 1
        t = int(node.ctime) or self._started
        # A symbolic link's size is its target's length; a sysfs file's is what sysfs shows
        # (4096 for an attribute, the config space's size for `config`).
        size = (len(os.fsencode(node.target)) if node.target is not None
                else getattr(node.key, "size", 0) if node.kind is FileKind.SYSFS else 0)
        return Attr(ino=node.ino, mode=node.mode, size=size, nlink=nlink, uid=node.uid,
                    gid=node.gid, atime=t, mtime=t, ctime=t)

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
        entries: list[tuple[int, str, int]] = [(node.ino, ".", abi.DirentType.DIR),
                                               (parent.ino, "..", abi.DirentType.DIR)]
        entries += [(c.ino, c.name, _dirent_type(c)) for c in node.children.values()]
        return [DirEntry(i, os.fsencode(name), kind, index + 1)
                for index, (i, name, kind) in enumerate(entries) if index >= offset]

    def readlink(self, ctx: RequestContext, ino: int) -> bytes:
        node = self._node(ino)
        if node.target is None:
            raise KernelError(errno.EINVAL, "not a symbolic link")
        return os.fsencode(node.target)

    def releasedir(self, ctx: RequestContext, ino: int, fh: int) -> None:
        pass

    # ------------------------------------------------------------------ files
    def caller(self, ctx: RequestContext) -> Caller:
        return self._caller_for(ctx.pid)

    def _caller_for(self, pid: int, memory: ClientMemory | None = None) -> Caller:
        """The engine's view of thread ``pid``: everything is looked up lazily, on first use,
        because most ioctls need nothing but the caller's memory."""
        tgid_cache: list[int] = []

        def tgid() -> int:
            # The process, not the thread: accounting and start time belong to the mm.
            if not tgid_cache:
                tgid_cache.append(read_status(pid).tgid)
            return tgid_cache[0]

        return Caller(pid=pid, memory=memory if memory is not None else self.memory(pid),
                      resolve_fd=lambda fd: self._resolve_fd(pid, fd), tgid=tgid,
                      can_lock_memory=lambda: read_status(pid).has_capability(CAP_IPC_LOCK),
                      memlock_limit=lambda: memlock_limit(tgid()),
                      check_user_range=lambda vaddr, size, write: user_range_ok(pid, vaddr, size, write),
                      locked_pages=lambda: locked_pages(pid),
                      start_time=lambda: start_time(tgid()),
                      uid=lambda: read_status(pid).uid,
                      eventfd=lambda fd: self._take_eventfd(pid, fd),
                      file=lambda fd: ProcessFile.take(ProcessFds(_tgid_of(pid)), fd),
                      has_capability=lambda cap: read_status(pid).has_capability(cap),
                      shared_mappings=lambda start, end: shared_mappings(_tgid_of(pid), start, end),
                      contiguous_blocks=lambda first, count, size: contiguous_blocks(
                          _tgid_of(pid), first, count, size),
                      keep_shared=lambda start, end: keep_shared(_tgid_of(pid), start, end))

    def _take_eventfd(self, pid: int, fd: int) -> ProcessEventfd:
        taken = ProcessEventfd.take(ProcessFds(_tgid_of(pid)), fd)
        self.eventfd_taken()
        return taken

    def open(self, ctx: RequestContext, ino: int, flags: int) -> OpenReply:
        node = self._node(ino)
        if node.kind is None:
            raise KernelError(errno.EISDIR, "is a directory")
        if node.kind is FileKind.FAULTS and flags & os.O_ACCMODE != os.O_RDONLY:
            raise KernelError(errno.EACCES, "the fault log is read-only")
        if (node.kind is FileKind.SYSFS and flags & os.O_ACCMODE != os.O_RDONLY
                and not getattr(node.key, "writable", False)):
            # kernfs_fop_open: EACCES for a write open of a file without a store, even for root.
            raise KernelError(errno.EACCES, "read-only sysfs attribute")
        staged = self._staged.get(ctx.pid)
        if staged is not None and staged.node is node and not staged.claimed:
            staged.claimed = True  # our supervisor opening a file the engine already made
            file = staged.file
        else:
            file = self.engine.open(node.kind, node.key, self.caller(ctx))
        fh = self._next_fh
        self._next_fh += 1
        self.opens[fh] = _Open(file, node)
        # direct_io: every read/write reaches us, at any offset (device regions live at
        # index << 40). noflush: closing the copies we make of client fds sends nothing,
        # except for a device fd beside CUSE nodes (see flush()).
        return OpenReply(fh, direct_io=True, noflush=not self._flush_on_close(node))

    def _flush_on_close(self, node: Node) -> bool:
        """Whether close() of this node's files must reach us (FLUSH, which close() waits for):
        for a device fd or a selftest access fd of ``run --transport cuse`` (FUSE files beside
        CUSE nodes).

        The kernel releases a device fd before close() returns, and what the program does
        next on its other fds (CHECK_EXTENSION on the iommufd, UNSET_CONTAINER) sees it gone.
        FUSE's RELEASE is asynchronous; over FUSE alone it still comes first, queued on the
        one connection ahead of the program's next request. Beside CUSE the next request
        comes on another connection and may overtake it, so we look at FLUSH instead."""
        return (node.kind in (FileKind.DEVICE, FileKind.ACCESS, FileKind.FAULT_QUEUE,
                              FileKind.VEVENTQ)
                and bool(self._cuse_inodes))

    def _open(self, fh: int) -> _Open:
        entry = self.opens.get(fh)
        if entry is None:
            raise KernelError(errno.EBADF, f"no open file {fh}")
        return entry

    def read(self, ctx: RequestContext, ino: int, fh: int, offset: int, size: int) -> bytes:
        entry = self._open(fh)
        self._require_position(ctx, entry, "read")
        return entry.file.read(self.caller(ctx), offset, size)

    def write(self, ctx: RequestContext, ino: int, fh: int, offset: int, data: bytes) -> int:
        entry = self._open(fh)
        self._require_position(ctx, entry, "write")
        return entry.file.write(self.caller(ctx), offset, data)

    def _require_position(self, ctx: RequestContext, entry: _Open, what: str) -> None:
        """EINVAL for a read or write of a device cdev that came over CUSE.

        CUSE sends every READ and WRITE with offset 0 (``cuse_read_iter``/``cuse_write_iter``
        drop the position), and a cdev's regions live at ``index << 40``: answering would hand
        out BAR0's bytes for a config-space pread, silently. Under ``run --transport cuse`` the
        program's pread64/pwrite64 never get here (the supervisor answers them with their
        position, :meth:`trapped_rw`); what does is read()/write()/preadv() or a process
        outside the run (``ioasidfs cuse`` has no filter at all). The other CUSE nodes have no
        position-dependent read: their driver answers as it would at any offset."""
        node = entry.node
        if node.kind is FileKind.CDEV and node.ino in self._cuse_inodes:
            log.warning("pid %d: %s of %s over CUSE, which drops the file position: EINVAL "
                        "(use pread/pwrite under `ioasidfs run --transport cuse`)",
                        ctx.pid, what, node.path)
            raise KernelError(errno.EINVAL, f"{what} over CUSE has no file position")

    def flush(self, ctx: RequestContext, ino: int, fh: int) -> None:
        """A close() of a device fd beside CUSE nodes (:meth:`_flush_on_close`): if that was the
        last fd of the file anywhere (the closed one has already left its fd table), release
        it now, as the kernel would have; the RELEASE that follows finds nothing to do."""
        entry = self.opens.get(fh)
        if entry is None or not self._flush_on_close(entry.node) or self._still_open(entry.file):
            return
        del self.opens[fh]
        self.engine.release(entry.file)

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
            identity = _IDENTIFY_REPLY.pack(self._token, fh)
            if out_size < len(identity):  # CUSE's unrestricted ioctl: nothing is copied for us
                self.memory(ctx.pid).write(arg, identity)
                return IoctlReply(0)
            return IoctlReply(0, identity)
        entry = self._open(fh)
        file = entry.file
        result = self._call(ctx.pid, entry, cmd, arg, lambda caller: file.ioctl(caller, cmd, arg))
        if isinstance(result, OpenFile):
            # Only a trapped ioctl can hand the caller a new fd (FUSE can return a number only).
            self.engine.release(result)
            raise KernelError(errno.EOPNOTSUPP, "a new fd for the caller needs `ioasidfs run`")
        return IoctlReply(result)

    def _call(self, pid: int, entry: _Open, cmd: int, arg: int,
              run: Callable[[Caller], IoctlResult]) -> IoctlResult:
        """Run one ioctl on ``entry`` for thread ``pid``, traced when tracing is on.

        The one path of every ioctl on our files, whether FUSE or the seccomp supervisor
        brought it: ``run`` is the driver (the engine file's ioctl) or the VFS's answer.
        """
        if self.tracer is None:
            try:
                return run(self._caller_for(pid))
            except KernelError as e:
                # The program sees only the errno; the log (-v) says why, as the trace does.
                log.info("pid %d: %s %s: %s", pid, entry.node.path, _name(entry, cmd), e)
                raise
        memory = RecordingMemory(self.memory(pid))
        started = time.time()
        t0 = time.perf_counter()
        result: IoctlResult = 0
        error = None
        try:
            result = run(self._caller_for(pid, memory))
        except KernelError as e:
            error = e
        usec = (time.perf_counter() - t0) * 1e6
        kind = entry.node.kind.value if entry.node.kind is not None else "container"
        definition = registry.lookup(kind, cmd)
        before, after = _decode_arg(definition, memory, arg)
        name = _name(entry, cmd)
        if isinstance(result, OpenFile):
            after = {"new_fd": result.kind.value}
        self.tracer.record(IoctlRecord(
            time=started, pid=pid, node=entry.node.path, name=name,
            cmd=cmd, arg=arg, input=before, output=after,
            result=-1 if error else (result if isinstance(result, int) else 0),
            errno=errno.errorcode.get(error.errno, str(error.errno)) if error else None,
            usec=round(usec, 1), reason=error.reason if error and error.reason else None))
        if error is not None:
            raise error
        return result

    # ------------------------------------------------------------------ trapped ioctls
    def may_be_ours(self, pid: int, fd: int) -> bool:
        """Whether thread ``pid``'s ``fd`` may be one of our files, judged from /proc alone.

        The seccomp supervisor asks this first for every trapped ioctl, without the engine lock
        or a thread: most trapped calls (FIONREAD on a socket...) are on foreign fds and must
        stay cheap. Reading fdinfo never calls into FUSE, so this is safe on the reader thread.
        A closed fd is "not ours": the real syscall then fails EBADF, as it should.

        A file of our FUSE mount is known by its mount id. A CUSE node may be ours when its
        mount is of the filesystem the kernel made our nodes on (the mount table says, no
        stat()); the worker then compares rdevs. A mount our namespace does not list (the
        program made a namespace of its own) counts as not ours.
        """
        info = _read_fdinfo(pid, fd)
        if info is None:
            return False
        mount_id = _fdinfo_field(info, b"mnt_id:")
        if self._fuse_device is not None and mount_id in self._mount_ids():
            return True
        if self._cuse_filesystems and mount_id is not None:
            device = _mounts().get(mount_id)
            return device is not None and os.makedev(*device) in self._cuse_filesystems
        return False

    def trapped_ioctl(self, pid: int, fd: int, cmd: int, arg: int) -> "int | StagedFile | None":
        """Answer ioctl(fd, cmd, arg) of thread ``pid``, trapped by seccomp (:mod:`ioasidfs.vfs`
        says which commands and why): the value to return, a new file to install as a new fd,
        or None when ``fd`` is not one of ours (then the real syscall must run). Raises
        KernelError for an errno.

        Runs in a worker thread holding the engine lock, like a FUSE ioctl that resolves fds:
        finding which open file ``fd`` is issues IDENTIFY on our own file.
        """
        try:
            entry = self._identify(pid, fd)
        except KernelError:
            return None  # closed meanwhile, or the caller is gone: let the kernel answer
        if entry is None:
            return None
        file = entry.file
        trap = vfs.TRAPPED.get(cmd)
        if trap is not None and trap.route is vfs.Route.VFS and entry.node.ino in self._cuse_inodes:
            # A real character device: the kernel's VFS gives its own answer for it, the
            # very one chardev_ioctl imitates for our FUSE files.
            return None

        def run(caller: Caller) -> IoctlResult:
            if trap is not None and trap.route is vfs.Route.VFS:
                return vfs.chardev_ioctl(cmd, arg, self._chardev_context(pid, caller.memory))
            vfs.driver_precheck(cmd, arg, caller.memory)
            return file.ioctl(caller, cmd, arg)

        result = self._call(pid, entry, cmd, arg, run)
        if isinstance(result, OpenFile):
            return StagedFile(self, result, self._node_for_new_file(result))
        return result

    def trapped_mmap(self, pid: int, fd: int, length: int, prot: int, flags: int,
                     offset: int) -> int | None:
        """Answer mmap(addr, length, prot, flags, fd, offset) of thread ``pid``, trapped by
        seccomp because FUSE answers mmap() of our direct-io files itself (ENODEV for MAP_SHARED,
        a page-cache mapping for MAP_PRIVATE). None when ``fd`` is not one of ours, or is a file
        whose real mmap() is the answer (``OpenFile.mmap_passthrough``); otherwise the kernel's
        answer for its node, as an errno (KernelError): first the VFS's checks
        (:func:`vfs_mmap_checks`), then the driver (``OpenFile.mmap``). Nothing is ever mapped.

        Runs in a worker thread holding the engine lock, like :meth:`trapped_ioctl`.
        """
        try:
            entry = self._identify(pid, fd)
        except KernelError:
            return None
        if entry is None or entry.file.mmap_passthrough:
            return None
        info = _read_fdinfo(pid, fd)
        if info is None:
            return None  # closed meanwhile: the real syscall says EBADF
        accmode = _fdinfo_flags(info) & os.O_ACCMODE
        caller = self._caller_for(pid)
        call = f"mmap({entry.node.path}, {length:#x}, prot={prot:#x}, flags={flags:#x}, off={offset:#x})"
        try:
            length, flags = vfs_mmap_checks(
                length, prot, flags, offset, caller,
                readable=accmode in (os.O_RDONLY, os.O_RDWR),
                writable=accmode in (os.O_WRONLY, os.O_RDWR))
            entry.file.mmap(caller, length, prot, flags, offset >> 12)
        except KernelError as e:
            log.info("pid %d: %s = -1 %s: %s", pid, call, errno.errorcode.get(e.errno, e.errno), e)
            raise
        # No driver of ours maps anything; a driver that returns has nothing to offer the
        # caller either (we cannot map into it): say so rather than pretend.
        log.warning("pid %d: %s: the driver accepted a mapping we cannot make; ENODEV", pid, call)
        raise KernelError(errno.ENODEV, "mappings of our files cannot be made")

    def trapped_rw(self, pid: int, fd: int, write: bool, buf: int, count: int,
                   offset: int) -> int | None:
        """Answer pread64/pwrite64(fd, buf, count, offset) of thread ``pid`` on one of our CUSE
        nodes (``run --transport cuse`` traps them): CUSE drops the position (``cuse_read_iter``
        and ``cuse_write_iter`` pass pos 0), and a device cdev's regions live at
        ``index << 40``. The VFS's checks first (vfs_read/vfs_write: open mode EBADF, a buffer
        outside user space EFAULT, a range past LLONG_MAX EINVAL, MAX_RW_COUNT), then the
        driver, with the data moved through process_vm_* (EFAULT as copy_*_user).

        None (the real syscall runs) for every other fd: a negative offset (EINVAL for any fd,
        before the fd is even looked up), foreign files, our FUSE files (FUSE keeps the
        position). Worker thread, engine lock held."""
        if offset < 0:
            return None
        try:
            entry = self._identify(pid, fd)
        except KernelError:
            return None
        if entry is None or entry.node.ino not in self._cuse_inodes:
            return None
        info = _read_fdinfo(pid, fd)
        if info is None:
            return None  # closed meanwhile: the real syscall says EBADF
        accmode = _fdinfo_flags(info) & os.O_ACCMODE
        if accmode not in ((os.O_WRONLY, os.O_RDWR) if write else (os.O_RDONLY, os.O_RDWR)):
            raise KernelError(errno.EBADF, f"{'write' if write else 'read'} of a file not open for it")
        if buf + count > _TASK_SIZE:  # access_ok(): the range ends within TASK_SIZE_MAX
            raise KernelError(errno.EFAULT, f"buffer {buf:#x}+{count:#x} is not user memory")
        if offset + count > _LLONG_MAX:
            raise KernelError(errno.EINVAL, f"range {offset:#x}+{count:#x} beyond LLONG_MAX")
        count = min(count, _MAX_RW_COUNT)
        caller = self._caller_for(pid)
        # In pieces of FUSE's max_write, as a device fd's FUSE reads and writes arrive: never
        # the whole (up to 2 GiB) buffer in memory; a short piece ends the call, and a failure
        # after some bytes moved is the count moved so far (as the kernel's partial copies).
        done = 0
        while done < count:
            size = min(count - done, _RW_PIECE)
            try:
                if write:
                    moved = entry.file.write(caller, offset + done, caller.memory.read(buf + done, size))
                else:
                    data = entry.file.read(caller, offset + done, size)
                    caller.memory.write(buf + done, data)
                    moved = len(data)
            except KernelError:
                if done:
                    return done
                raise
            done += moved
            if moved < size:
                break
        return done

    def pin_device_fds_dir(self, mountpoint: str) -> None:
        """Keep a handle on ``devfds/`` under ``mountpoint`` before that mount is detached
        (``ioasidfs run`` binds pieces of it into /dev and drops the mount itself): device fds
        are opened relative to it. Does a FUSE lookup: never call it on the reader thread."""
        self.device_fds_dir = os.open(os.path.join(mountpoint, DEVICE_FDS_DIR),
                                      os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def open_new_file(self, node: Node) -> int:
        """Open ``node`` for a new file we hand to a client (O_CLOEXEC: it must not leak into a
        program we start): a device fd through the pinned ``devfds/``, anything else by its
        /dev path."""
        flags = os.O_RDWR | os.O_CLOEXEC
        if self.device_fds_dir is not None and node.parent is self.tree.device_fds:
            return os.open(node.name, flags, dir_fd=self.device_fds_dir)
        return os.open(node.path, flags)

    def _node_for_new_file(self, file: OpenFile) -> Node:
        """The node through which a new ``file`` reaches the caller: the node of its kind whose
        key is the file's ``node_key`` (a device fd: ``devfds/<bdf>``). The kernel's device
        fds are anonymous inodes; ours must be files of the mount, opened by us and installed
        in the caller. EOPNOTSUPP when the tree has no such node."""
        node = next((n for n in self.tree.nodes.values()
                     if n.kind is file.kind and file.node_key is not None
                     and n.key == file.node_key), None)
        if node is None:
            self.engine.release(file)
            raise KernelError(errno.EOPNOTSUPP, f"no node can carry a new {file.kind.value} file")
        return node

    def _chardev_context(self, pid: int, memory: ClientMemory) -> vfs.CharDevContext:
        return vfs.CharDevContext(memory=memory, dev=self.dev_filesystem,
                                  source=lambda fd: self._clone_source(pid, fd),
                                  can_admin=lambda: self._can_admin_dev(pid))

    def _clone_source(self, pid: int, fd: int) -> vfs.Source:
        """Where the caller's ``fd`` lives, for FICLONE, without ever stat()ing a file of ours
        (that would send GETATTR while we hold the engine lock): our files are known from their
        mount id and inode, anything else from the mount table and, for /dev's own filesystem
        (never FUSE), stat()."""
        info = _read_fdinfo(pid, fd)
        if info is None:
            raise KernelError(errno.EBADF, f"fd {fd} is not open")
        mounts = _mounts()
        device = mounts.get(_fdinfo_field(info, b"mnt_id:") or -1)
        if device is None:  # pipes, sockets...: internal mounts are not in the table
            return vfs.Source.OTHER_FS
        if self._fuse_device is not None and device == self._fuse_device:
            node = self.tree.nodes.get(_fdinfo_field(info, b"ino:") or -1)
            return vfs.Source.DEV_DIR if node is not None and node.is_dir else vfs.Source.DEV_OTHER
        if os.makedev(*device) not in self.dev_filesystem.devices:
            return vfs.Source.OTHER_FS
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            raise KernelError(errno.EBADF, f"fd {fd} is not open") from None
        return vfs.source_of(st.st_mode, st.st_dev, self.dev_filesystem)

    def _can_admin_dev(self, pid: int) -> bool:
        """ns_capable(/dev's superblock's user namespace, CAP_SYS_ADMIN) for thread ``pid``."""
        user_ns = self.dev_filesystem.user_ns
        if user_ns is None:
            return False
        try:
            if os.readlink(f"/proc/{pid}/ns/user") != user_ns:
                return False
        except OSError:
            return False
        return read_status(pid).has_capability(CAP_SYS_ADMIN)

    # ------------------------------------------------------------------ fd identity
    def _resolve_fd(self, pid: int, fd: int) -> object:
        """The open file behind the caller's ``fd``: ours, or FOREIGN. Runs in a worker thread."""
        entry = self._identify(pid, fd)
        return entry.file if entry is not None else FOREIGN

    def _identify(self, pid: int, fd: int) -> _Open | None:
        """Our open file behind thread ``pid``'s ``fd``, or None for a foreign one; KernelError
        (EBADF, ESRCH) when there is no such fd. Runs in a worker thread with the engine lock."""
        copy = ProcessFds(_tgid_of(pid)).copy(fd)
        try:
            if not self._is_ours(copy):
                return None
            me = threading.get_native_id()
            self._identifying.add(me)
            try:
                reply = bytearray(_IDENTIFY_REPLY.size)
                fcntl.ioctl(copy, IDENTIFY, reply, True)
            except OSError:
                return None
            finally:
                self._identifying.discard(me)
            token, fh = _IDENTIFY_REPLY.unpack(reply)
            return self.opens.get(fh) if token == self._token else None
        finally:
            if self._cuse_inodes:
                # If the client closed its fd meanwhile, ours is the last reference, and CUSE
                # sends RELEASE before close() returns: the reader would queue it behind the
                # engine lock we hold. Close from a thread that holds nothing.
                threading.Thread(target=os.close, args=(copy,), daemon=True).start()
            else:
                os.close(copy)

    def _mount_ids(self) -> set[int]:
        """Every mount id a file of ours can carry: the mounts of our connection in the table,
        and the mount we were served on even once detached."""
        assert self._fuse_device is not None
        return _mount_ids_of(self._fuse_device) | self._own_mount_ids

    def _is_ours(self, fd: int) -> bool:
        """Whether our copy ``fd`` is a file of our mount: its fdinfo's mount id is one of ours.

        Not fstat(): that sends GETATTR for a FUSE file, a round trip we would rather not make
        while holding the engine lock. Over CUSE, fstat() of a char device stays in the VFS:
        ours are the char devices with our device numbers; it runs only for files that are not
        of our FUSE mount (``run --transport cuse`` has both), so it never reaches our server.
        """
        if self._fuse_device is not None:
            info = _read_fdinfo("self", fd)
            if info is not None and _fdinfo_field(info, b"mnt_id:") in self._mount_ids():
                return True
        if self._cuse_inodes:
            st = os.fstat(fd)
            return stat.S_ISCHR(st.st_mode) and st.st_rdev in self._cuse_rdevs
        return False

    # ------------------------------------------------------------------ still open?
    def _still_open(self, file: OpenFile) -> bool:
        node = next((e.node for e in self.opens.values() if e.file is file), None)
        if node is not None and node.ino in self._cuse_inodes:
            return True  # CUSE's RELEASE is synchronous: not seen yet means still open
        if node is None or self._fuse_device is None:
            return False
        mount_ids = self._mount_ids()
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


# ---------------------------------------------------------------------------- mmap
# <asm-generic/mman-common.h>, <linux/mman.h> (x86_64), as do_mmap uses them
_PAGE_SIZE = 4096
_TASK_SIZE = (1 << 47) - _PAGE_SIZE
"""x86_64 with 4-level paging; with 5-level paging (la57) it is 2^56 - 4K, and only a length
between the two would be answered differently (ENOMEM here, the driver's errno there)."""
_PROT_WRITE = 0x2
_LLONG_MAX = (1 << 63) - 1
_MAX_RW_COUNT = 0x7FFFF000
"""``MAX_RW_COUNT``: INT_MAX & PAGE_MASK, what one read()/write() moves at most."""
_RW_PIECE = 128 * 1024
"""A trapped pread/pwrite is moved in pieces of this size: FUSE's max_write (the session's
DEFAULT_MAX_WRITE), how a device fd's reads and writes reach the driver over FUSE."""
_MAP_SHARED = 0x01
_MAP_PRIVATE = 0x02
_MAP_SHARED_VALIDATE = 0x03
_MAP_TYPE = 0x0F
_MAP_LOCKED = 0x2000
_MAP_HUGETLB = 0x40000
_LEGACY_MAP_MASK = (_MAP_SHARED | _MAP_PRIVATE | 0x10 | 0x20 | 0x800 | 0x1000 | 0x4000000
                    | 0x100 | _MAP_LOCKED | 0x4000 | 0x8000 | 0x10000 | 0x20000 | _MAP_HUGETLB)
"""FIXED ANONYMOUS DENYWRITE EXECUTABLE UNINITIALIZED GROWSDOWN LOCKED NORESERVE POPULATE
NONBLOCK STACK HUGETLB: what MAP_SHARED_VALIDATE accepts from a file whose file_operations
have no ``mmap_supported_flags`` (none of the kernel's VFIO/iommufd nodes has)."""


def vfs_mmap_checks(length: int, prot: int, flags: int, offset: int, caller: Caller, *,
                    readable: bool, writable: bool) -> tuple[int, int]:
    """The checks x86_64's mmap() makes, in the kernel's order, before a character device's
    driver is asked (arch/x86/kernel/sys_x86_64.c sys_mmap, mm/mmap.c ksys_mmap_pgoff and
    do_mmap, upstream and 6.1 alike), as far as they depend on the arguments, the open file's
    mode and the caller's RLIMIT_MEMLOCK. Returns the page-aligned length and the flags with
    their map type as the driver sees it: MAP_SHARED when the VMA is VM_SHARED (do_mmap drops
    VM_SHARED for a file not open for writing), else MAP_PRIVATE. Raises KernelError.

    Not reproduced (they need the caller's address space): ``vm.max_map_count`` (ENOMEM), no
    room for ``length`` (ENOMEM), MAP_FIXED's address checks (EINVAL, ENOMEM), and that the
    kernel has already unmapped a MAP_FIXED range when the driver refuses; MAP_FIXED_NOREPLACE
    over a mapping (EEXIST); mlockall(MCL_FUTURE); RLIMIT_AS and overcommit (ENOMEM, checked
    after the ENODEV of a node without .mmap but before a driver's .mmap); LSMs; a noexec /dev
    (EPERM for PROT_EXEC; devtmpfs is normally mounted exec)."""
    if offset & (_PAGE_SIZE - 1):
        raise KernelError(errno.EINVAL, f"mmap offset {offset:#x} is not page aligned")
    if flags & _MAP_HUGETLB:
        raise KernelError(errno.EINVAL, "MAP_HUGETLB of a file outside hugetlbfs")
    if length == 0:
        raise KernelError(errno.EINVAL, "mmap of length 0")
    aligned = (length + _PAGE_SIZE - 1) & ~(_PAGE_SIZE - 1) & (2**64 - 1)
    if aligned == 0:
        raise KernelError(errno.ENOMEM, f"mmap length {length:#x} overflows")
    if aligned > _TASK_SIZE:
        raise KernelError(errno.ENOMEM, f"mmap length {length:#x} exceeds the address space")
    if flags & _MAP_LOCKED:
        limit = caller.memlock_limit()
        if limit == 0 and not caller.can_lock_memory():
            raise KernelError(errno.EPERM, "MAP_LOCKED with RLIMIT_MEMLOCK 0")
        if limit >= 0 and caller.locked_pages() + aligned // _PAGE_SIZE > limit // _PAGE_SIZE \
                and not caller.can_lock_memory():
            raise KernelError(errno.EAGAIN, "MAP_LOCKED beyond RLIMIT_MEMLOCK")
    # file_mmap_ok for a character device: no position beyond ULONG_MAX (FUSE's regular files
    # stop at LLONG_MAX instead).
    if offset // _PAGE_SIZE > (2**64 - 1 - aligned) >> 12:
        raise KernelError(errno.EOVERFLOW, f"mmap range at {offset:#x} overflows")
    map_type = flags & _MAP_TYPE
    if map_type not in (_MAP_SHARED, _MAP_SHARED_VALIDATE, _MAP_PRIVATE):
        raise KernelError(errno.EINVAL, f"mmap type {map_type:#x}")
    shared = map_type != _MAP_PRIVATE
    if shared:
        if map_type == _MAP_SHARED_VALIDATE and flags & ~_LEGACY_MAP_MASK:
            raise KernelError(errno.EOPNOTSUPP,
                              f"MAP_SHARED_VALIDATE with flags {flags & ~_LEGACY_MAP_MASK:#x}")
        if prot & _PROT_WRITE and not writable:
            raise KernelError(errno.EACCES, "writable MAP_SHARED of a file not open for writing")
        shared = writable
    if not readable:
        raise KernelError(errno.EACCES, "mmap of a file not open for reading")
    return aligned, flags & ~_MAP_TYPE | (_MAP_SHARED if shared else _MAP_PRIVATE)


def _fdinfo_flags(info: bytes) -> int:
    """The ``flags:`` of an fdinfo (octal, the file's f_flags)."""
    for line in info.splitlines():
        if line.startswith(b"flags:"):
            return int(line.split()[1], 8)
    return 0


class StagedFile:
    """A new open file the engine made for a trapped ioctl's caller (VFIO_GROUP_GET_DEVICE_FD).

    FUSE can return a number but not create an fd; seccomp can install one of *our* fds in the
    caller (SECCOMP_IOCTL_NOTIF_ADDFD). So the supervisor calls :meth:`open` from a worker thread
    without the engine lock: we open ``node`` ourselves, and :meth:`DevFs.open`, recognising our
    thread, attaches ``file`` to that open instead of asking the engine for a new one. The
    supervisor installs the fd in the caller and closes ours; from then on it is an ordinary
    open file of ours, released by the RELEASE that follows the caller's last close.
    """

    def __init__(self, fs: DevFs, file: OpenFile, node: Node) -> None:
        self.fs = fs
        self.file = file
        self.node = node
        self.claimed = False  # set by DevFs.open once the open carries the file

    def open(self) -> int:
        """Open our fd for the file (O_CLOEXEC: it must not leak into a program we start)."""
        me = threading.get_native_id()
        self.fs._staged[me] = self
        try:
            fd = self.fs.open_new_file(self.node)
        finally:
            self.fs._staged.pop(me, None)
        if not self.claimed:  # reached some other file: not what we meant to hand out
            os.close(fd)
            raise KernelError(errno.EIO, f"opening {self.node.path} did not carry the new file")
        return fd

    def installed(self, fd: int) -> int:
        """The caller has it as ``fd``: what the ioctl returns (the file decides). Needs the
        engine lock."""
        return self.file.fd_installed(fd)

    def abandon(self) -> None:
        """It could not be opened: release the engine's file. Needs the engine lock."""
        if not self.claimed:
            self.claimed = True
            self.fs.engine.release(self.file)


def _dirent_type(node: Node) -> int:
    if node.is_symlink:
        return abi.DirentType.LNK
    return abi.DirentType.DIR if node.is_dir else abi.DirentType.REG


def _tgid_of(tid: int) -> int:
    """The process (thread group) of thread ``tid``: ESRCH when it has gone. Reads only the
    head of /proc/TID/status, where Tgid is (read_status parses it all: 5x slower)."""
    try:
        handle = os.open(f"/proc/{tid}/status", os.O_RDONLY | os.O_CLOEXEC)
        try:
            head = os.read(handle, 512)
        finally:
            os.close(handle)
        start = head.index(b"\nTgid:") + 6
        return int(head[start:head.index(b"\n", start)])
    except (OSError, ValueError):
        raise KernelError(errno.ESRCH, f"caller {tid} has gone") from None


def _read_fdinfo(pid: int | str, fd: int) -> bytes | None:
    """/proc/PID/fdinfo/FD (pos, flags, mnt_id, ino), or None when there is no such fd.
    Plain os calls: the supervisor reads one per trapped ioctl."""
    try:
        handle = os.open(f"/proc/{pid}/fdinfo/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(handle, 4096)
    except OSError:
        return None
    finally:
        os.close(handle)


class _MountTable:
    """Our namespace's mount table (mount id -> device), re-read only when it changes.

    /proc/self/mountinfo costs ~150 us to read here, and the fd checks of every trapped ioctl
    need it. poll() on an open mountinfo reports POLLPRI once after any mount or unmount in the
    namespace, so one poll(0) per use tells whether the copy is stale.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd = -1
        self._poller = select.poll()
        self._mounts: dict[int, tuple[int, int]] = {}

    def get(self) -> dict[int, tuple[int, int]]:
        with self._lock:
            if self._fd < 0:
                self._fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
                self._poller.register(self._fd, select.POLLPRI)
                self._mounts = self._read()
            elif self._poller.poll(0):
                self._mounts = self._read()
            return self._mounts

    def _read(self) -> dict[int, tuple[int, int]]:
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._fd, 65536):
            chunks.append(chunk)
        mounts = {}
        for line in b"".join(chunks).splitlines():
            fields = line.split(maxsplit=3)
            major, minor = fields[2].split(b":")
            mounts[int(fields[0])] = (int(major), int(minor))
        return mounts


_MOUNTS = _MountTable()


def _mounts() -> dict[int, tuple[int, int]]:
    """Mount id -> (major, minor) of every mount in our namespace."""
    return _MOUNTS.get()


def _name(entry: _Open, cmd: int) -> str:
    """The ioctl's name for logs and traces, as seen on ``entry``'s node."""
    kind = entry.node.kind.value if entry.node.kind is not None else "container"
    trap = vfs.TRAPPED.get(cmd)
    if trap is not None and registry.lookup(kind, cmd) is None:
        return trap.name
    return registry.name_of(kind, cmd)


def _fdinfo_field(info: bytes, name: bytes) -> int | None:
    for line in info.splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    return None


def _mount_ids_of(device: tuple[int, int]) -> set[int]:
    return {mount_id for mount_id, dev in _mounts().items() if dev == device}


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
