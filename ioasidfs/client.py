"""The calling process, as the kernel sees it: its memory, its fd table, its credentials.

VFIO and iommufd ioctls are ``_IO()``: FUSE hands us the raw third argument and nothing else, so
every struct is read from and written to the caller's memory here, with process_vm_readv/writev
and the thread id from the FUSE request header. An unreadable pointer becomes EFAULT, exactly as
copy_from_user fails in the kernel; a partial transfer counts as a failure, as it does there.

An fd number inside an argument lives in the caller's fd table: it is copied with pidfd_getfd.
Whether the copy is one of *our* files is answered by the filesystem itself (ioasidfs.devfs),
which is why resolving an fd may block and must never run on the thread that reads /dev/fuse.

This is the only module that touches another process; the engine sees it through the small
``ClientMemory`` / ``ClientFds`` interfaces (``ioasidfs.engine.caller``), so every rule stays
unit-testable with an in-memory fake.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import itertools
import mmap
import os
import resource
import stat
import struct
from dataclasses import dataclass
from typing import Any, Sequence, cast

from .engine.caller import PAGE_SIZE, FileIdentity, PinScan, SharedMapping, SharedPin
from .errors import KernelError

_libc = ctypes.CDLL(None, use_errno=True)

SYS_pidfd_getfd = 438
PIDFD_THREAD = os.O_EXCL  # pidfd_open flag (6.9+): the pid is a thread id
CAP_IPC_LOCK = 14
CAP_SYS_RAWIO = 17
CAP_SYS_ADMIN = 21


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_ulong,
                                   ctypes.POINTER(_IoVec), ctypes.c_ulong, ctypes.c_ulong]
_libc.process_vm_readv.restype = ctypes.c_ssize_t
_libc.process_vm_writev.argtypes = _libc.process_vm_readv.argtypes
_libc.process_vm_writev.restype = ctypes.c_ssize_t
_libc.syscall.restype = ctypes.c_long

_ADDR_LIMIT = 1 << 64


class ProcessMemory:
    """Reads and writes one process's memory; every failure is EFAULT, as in copy_*_user."""

    __slots__ = ("pid",)

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def read(self, addr: int, size: int) -> bytes:
        if size == 0:
            return b""
        if addr < 0 or addr + size > _ADDR_LIMIT:
            raise KernelError(errno.EFAULT, f"read of {size} bytes at {addr:#x} is outside the address space")
        buf = ctypes.create_string_buffer(size)
        local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
        remote = _IoVec(addr, size)
        n = _libc.process_vm_readv(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if n != size:
            err = ctypes.get_errno() if n < 0 else errno.EFAULT
            raise KernelError(errno.EFAULT, f"cannot read {size} bytes at {addr:#x} of pid {self.pid}: "
                                            f"{os.strerror(err)}")
        return buf.raw

    def write(self, addr: int, data: bytes) -> None:
        size = len(data)
        if size == 0:
            return
        if addr < 0 or addr + size > _ADDR_LIMIT:
            raise KernelError(errno.EFAULT, f"write of {size} bytes at {addr:#x} is outside the address space")
        buf = ctypes.create_string_buffer(bytes(data), size)
        local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), size)
        remote = _IoVec(addr, size)
        n = _libc.process_vm_writev(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if n != size:
            err = ctypes.get_errno() if n < 0 else errno.EFAULT
            raise KernelError(errno.EFAULT, f"cannot write {size} bytes at {addr:#x} of pid {self.pid}: "
                                            f"{os.strerror(err)}")


@dataclass(frozen=True)
class ProcessStatus:
    """What /proc/TID/status tells about the caller that the kernel would know directly."""

    tgid: int
    uid: int
    cap_effective: int

    def has_capability(self, cap: int) -> bool:
        return bool(self.cap_effective >> cap & 1)


def read_status(tid: int) -> ProcessStatus:
    """Thread group, real uid and effective capabilities of thread ``tid``."""
    tgid = uid = caps = -1
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    tgid = int(line.split()[1])
                elif line.startswith(b"Uid:"):
                    uid = int(line.split()[1])
                elif line.startswith(b"CapEff:"):
                    caps = int(line.split()[1], 16)
    except OSError:
        raise KernelError(errno.ESRCH, f"caller {tid} has gone") from None
    if tgid < 0:
        raise KernelError(errno.ESRCH, f"caller {tid} has no status")
    return ProcessStatus(tgid, uid, caps)


def memlock_limit(pid: int) -> int:
    """The caller's RLIMIT_MEMLOCK soft limit in bytes (RLIM_INFINITY as -1)."""
    try:
        soft, _hard = resource.prlimit(pid, resource.RLIMIT_MEMLOCK)
    except (OSError, ProcessLookupError):
        raise KernelError(errno.ESRCH, f"caller {pid} has gone") from None
    return soft


def locked_pages(pid: int) -> int:
    """The process's own ``mm->locked_vm`` in pages: VmLck of /proc/PID/status (mlock()ed memory
    and real pins), which RLIMIT_MEMLOCK covers together with the pages our pins charge."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmLck:"):
                    return int(line.split()[1]) * 1024 // PAGE_SIZE
    except OSError:
        raise KernelError(errno.ESRCH, f"caller {pid} has gone") from None
    return 0  # a kernel thread has no mm


def start_time(pid: int) -> int:
    """When the process started (clock ticks since boot, /proc/PID/stat field 22): with the
    pid, a name no later process can have."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        raise KernelError(errno.ESRCH, f"caller {pid} has gone") from None
    # The command name (field 2) may hold spaces and parentheses: count from its last ')'.
    return int(stat[stat.rindex(b")") + 2:].split()[19])


# ------------------------------------------------------------------------------------------
# Pinning: what get_user_pages(FOLL_LONGTERM) would make of a range of the caller's memory.

@dataclass(frozen=True)
class Vma:
    """One line of /proc/PID/maps."""

    start: int
    end: int
    perms: str  # "rwxp" / "rw-s"
    device: tuple[int, int]  # of the file's filesystem (major, minor)
    inode: int
    name: str
    offset: int = 0  # in the file, of the VMA's start

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"

    @property
    def private_anonymous(self) -> bool:
        """Anonymous private memory, where a read fault maps the shared zero page."""
        return self.inode == 0 and not self.shared and (
            self.name in ("", "[heap]", "[stack]") or self.name.startswith("[anon:"))

    @property
    def maybe_special(self) -> bool:
        """Could be VM_PFNMAP or VM_IO (a device mmap, vvar...): only smaps can tell."""
        return self.name.startswith(("/dev/", "anon_inode:")) or (
            self.name.startswith("[") and not self.private_anonymous)


def _vmas(pid: int, start: int, end: int) -> list[Vma]:
    """The VMAs of ``pid`` overlapping [start, end), ascending (/proc/PID/maps is sorted)."""
    found = []
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            for line in f:
                fields = line.split(None, 5)
                low, high = (int(x, 16) for x in fields[0].split(b"-"))
                if high <= start:
                    continue
                if low >= end:
                    break
                major, minor = (int(x, 16) for x in fields[3].split(b":"))
                name = fields[5].strip().decode(errors="replace") if len(fields) > 5 else ""
                found.append(Vma(low, high, fields[1].decode(), (major, minor), int(fields[4]), name,
                                 int(fields[2], 16)))
    except OSError:
        raise KernelError(errno.ESRCH, f"caller {pid} has gone") from None
    return found


def shared_mappings(pid: int, start: int, end: int) -> list[SharedMapping]:
    """The MAP_SHARED file mappings (shmem included) of ``pid`` overlapping [start, end), with
    the file offset of each one's start: the kernel's answer to "which physical page" for them
    (the file's page cache page). ESRCH when the process has gone."""
    return [(v.start, v.end, (*v.device, v.inode), v.offset)
            for v in _vmas(pid, start, end) if v.shared and v.inode]


def _vm_flags(pid: int, vma: Vma) -> set[str]:
    """The VmFlags of one VMA from /proc/PID/smaps (read only up to that VMA: smaps walks the
    page tables of every entry it prints)."""
    header = f"{vma.start:x}-{vma.end:x} ".encode()
    try:
        with open(f"/proc/{pid}/smaps", "rb") as f:
            inside = False
            for line in f:
                if line.startswith(header):
                    inside = True
                elif inside and line.startswith(b"VmFlags:"):
                    return set(line.decode().split()[1:])
    except OSError:
        raise KernelError(errno.ESRCH, f"caller {pid} has gone") from None
    return set()


# Filesystems whose shared mappings need no dirty tracking (no page_mkwrite, no writeback):
# a long-term writable pin of them is fine. Everything else is refused (>= 6.5).
_NO_WRITEBACK_FILESYSTEMS = frozenset({"tmpfs", "ramfs", "hugetlbfs", "devtmpfs"})


def _filesystem_type(pid: int, device: tuple[int, int]) -> str | None:
    """fstype of the caller's mount with this device number; None for internal mounts (shmem
    behind memfd or MAP_SHARED|MAP_ANONYMOUS, SysV shm...)."""
    wanted = f"{device[0]}:{device[1]}".encode()
    try:
        with open(f"/proc/{pid}/mountinfo", "rb") as f:
            for line in f:
                fields = line.split()
                if fields[2] == wanted:
                    return fields[fields.index(b"-") + 1].decode()
    except OSError:
        raise KernelError(errno.ESRCH, f"caller {pid} has gone") from None
    return None


_PM_PRESENT = 1 << 63
_PM_SWAPPED = 1 << 62
_PM_FILE = 1 << 61
_PM_EXCLUSIVE = 1 << 56
_PM_PFN = (1 << 55) - 1


def _zero_pages(pid: int, start: int, end: int) -> int:
    """How many pages of [start, end) (private anonymous memory) a read-only pin would find
    backed by the shared zero page: never written and not swapped out, or mapped to a page that
    is neither file-backed nor exclusively this process's (the zero page after a read fault).
    Without access to /proc/PID/pagemap, 0 (every page charged)."""
    count = (end - start) // PAGE_SIZE
    try:
        with open(f"/proc/{pid}/pagemap", "rb") as f:
            f.seek(start // PAGE_SIZE * 8)
            entries = f.read(count * 8)
    except OSError:
        return 0
    zero = 0
    for (entry,) in struct.iter_unpack("<Q", entries):
        if entry & _PM_PRESENT:
            zero += not entry & (_PM_FILE | _PM_EXCLUSIVE)
        else:
            zero += not entry & _PM_SWAPPED
    return zero


def contiguous_blocks(pid: int, first: int, count: int, size: int) -> list[int]:
    """The addresses of the ``count`` blocks of ``size`` bytes from ``first`` whose pages are
    present, physically contiguous and start at a size-aligned frame, read from
    /proc/PID/pagemap: what the kernel's IOMMU code maps with one large IOPTE (a hugetlb or THP
    page, in practice). Frame numbers need CAP_SYS_ADMIN; without them (all read as 0), or
    when the process has gone, no block qualifies."""
    frames = size // PAGE_SIZE
    found: list[int] = []
    try:
        with open(f"/proc/{pid}/pagemap", "rb") as f:
            for addr in range(first, first + count * size, size):
                f.seek(addr // PAGE_SIZE * 8)
                raw_head = f.read(8)
                if len(raw_head) != 8:
                    continue
                (head,) = struct.unpack("<Q", raw_head)
                pfn = head & _PM_PFN
                # Most blocks fail here, on their first frame, without reading the rest.
                if not head & _PM_PRESENT or not pfn or pfn % frames:
                    continue
                f.seek(addr // PAGE_SIZE * 8)
                entries = f.read(frames * 8)
                if len(entries) == frames * 8 and all(
                        entry & _PM_PRESENT and entry & _PM_PFN == pfn + i
                        for i, (entry,) in enumerate(struct.iter_unpack("<Q", entries))):
                    found.append(addr)
    except OSError:
        return []
    return found


def user_range_ok(pid: int, vaddr: int, size: int, write: bool) -> PinScan:
    """What pinning [vaddr, vaddr+size) of process ``pid`` for VFIO_IOMMU_MAP_DMA would meet,
    page by page in address order (vfio_iommu_type1.c:vaddr_get_pfns, mm/gup.c:check_vma_flags).

    * No VMA, or a VMA without the needed permission (VM_WRITE for a WRITE pin, VM_READ for a
      read-only one): EFAULT. PROT_NONE is a VMA with neither.
    * VM_PFNMAP areas (device BAR mmaps): pinnable, not charged. VM_IO without VM_PFNMAP: EFAULT.
    * A WRITE pin of a MAP_SHARED file on a filesystem that tracks dirty pages: EFAULT.
    * A read-only pin of never-written private anonymous memory gets the shared zero page,
      which is not charged. Every other page is charged once per pin.

    Known gaps: a THP-enabled area's huge zero page (the kernel charges it), fs-dax
    (EOPNOTSUPP), and a WRITE pin's side effect of faulting pages in (we do not populate the
    caller's memory, so a later read-only pin of those pages may be charged less).
    """
    end = vaddr + size
    charged = 0
    shared = False
    addr = vaddr
    needed = "w" if write else "r"
    for vma in _vmas(pid, vaddr, end):
        if vma.start > addr or needed not in vma.perms:
            return PinScan(charged, errno.EFAULT)
        stop = min(vma.end, end)
        pages = (stop - addr) // PAGE_SIZE
        if vma.maybe_special:
            flags = _vm_flags(pid, vma)
            if "pf" in flags:
                addr = stop
                continue
            if "io" in flags:
                return PinScan(charged, errno.EFAULT)
        if write and vma.shared and vma.inode and \
                _filesystem_type(pid, vma.device) not in _NO_WRITEBACK_FILESYSTEMS | {None}:
            return PinScan(charged, errno.EFAULT)
        if vma.private_anonymous and not write:
            pages -= _zero_pages(pid, addr, stop)
        charged += pages
        shared = shared or bool(vma.shared and vma.inode)   # what keep_shared may keep
        addr = stop
        if addr >= end:
            return PinScan(charged, shared=shared)
    return PinScan(charged, errno.EFAULT) if addr < end else PinScan(charged, shared=shared)


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    r = _libc.syscall(SYS_pidfd_getfd, pidfd, fd, 0)
    if r < 0:
        raise OSError(ctypes.get_errno(), "pidfd_getfd")
    return int(r)


class ProcessFds:
    """Copies fds out of one process's fd table (pidfd_getfd needs ptrace rights: root or parent)."""

    __slots__ = ("tgid",)

    def __init__(self, tgid: int) -> None:
        self.tgid = tgid

    def copy(self, fd: int) -> int:
        """A new fd in this process referring to the caller's open file ``fd``; EBADF if none.

        The caller must close it. The kernel's fdget() fails EBADF for a negative or closed fd.
        """
        if fd < 0:
            raise KernelError(errno.EBADF, f"fd {fd} is negative")
        try:
            pidfd = os.pidfd_open(self.tgid)
        except OSError:
            raise KernelError(errno.ESRCH, f"caller {self.tgid} has gone") from None
        try:
            return _pidfd_getfd(pidfd, fd)
        except OSError as e:
            if e.errno == errno.EBADF:
                raise KernelError(errno.EBADF, f"fd {fd} is not open in pid {self.tgid}") from None
            raise KernelError(e.errno or errno.EBADF, f"pidfd_getfd({self.tgid}, {fd}): {os.strerror(e.errno or 0)}") from None
        finally:
            os.close(pidfd)



class ProcessEventfd:
    """Our reference to an eventfd of a client (the kernel's ``eventfd_ctx``): a copy of its fd,
    so it outlives the client's own close, as the kernel's reference does. Implements the
    engine's ``EventSignal``."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def take(cls, fds: ProcessFds, fd: int) -> ProcessEventfd:
        """eventfd_ctx_fdget: EBADF for a closed fd, EINVAL for an fd that is not an eventfd."""
        copy = fds.copy(fd)
        try:
            target = os.readlink(f"/proc/self/fd/{copy}")
        except OSError:
            target = ""
        if target != "anon_inode:[eventfd]":
            os.close(copy)
            raise KernelError(errno.EINVAL, f"fd {fd} is not an eventfd ({target or 'unknown'})")
        return cls(copy)

    def signal(self) -> None:
        """eventfd_signal: add 1. Never blocks (O_NONBLOCK is the client's flag on the shared
        file, so an overflowing counter -- 2^64-2 signals -- fails EAGAIN instead; the kernel
        saturates there too)."""
        try:
            os.write(self.fd, _ONE)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


_ONE = (1).to_bytes(8, "little")
_ONE = (1).to_bytes(8, "little")

# The file behind an fd, for IOMMU_IOAS_MAP_FILE.
TMPFS_MAGIC = 0x01021994       # memfd_create, tmpfs, /dev/shm: shmem
HUGETLBFS_MAGIC = 0x958458F6   # memfd_create(MFD_HUGETLB), hugetlbfs
F_GET_SEALS = 1034
F_SEAL_WRITE = 0x0008
F_SEAL_FUTURE_WRITE = 0x0010
_STATFS_SIZE = 120             # struct statfs on x86-64; f_type is its first long
_MAP_FAILED = ctypes.c_void_p(-1).value
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def _fs_type(fd: int) -> int:
    """statfs f_type of the filesystem ``fd`` lives on (0 if unknown)."""
    buf = ctypes.create_string_buffer(_STATFS_SIZE)
    if _libc.fstatfs(fd, buf) != 0:
        return 0
    return int(struct.unpack_from("q", buf.raw)[0]) & 0xFFFFFFFF


class ProcessFile:
    """Our reference to the open file behind a client's fd (the kernel's ``fget``), for
    IOMMU_IOAS_MAP_FILE: a copy of the fd (pidfd_getfd), so it outlives the client's close as
    the kernel's reference does. Implements the engine's ``CallerFile``.

    Device DMA into a file-backed area must reach the file's pages whatever the client does
    with its own mappings (the kernel pins the folios). So :meth:`window` maps the file
    MAP_SHARED into *our* process and the area's translation points there, owned by us: a
    device write lands in the file's page cache, seen by every mapping of the memfd. Only
    shmem and hugetlbfs files are mapped (nothing else can be pinned, so no DMA can reach
    them); a window that cannot be made (a hugetlbfs offset that is not huge-page aligned) is
    address 0, and DMA through it faults."""

    __slots__ = ("fd", "writable", "write_sealed", "pinnable", "_maps")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        self.writable = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
        try:
            seals = fcntl.fcntl(fd, F_GET_SEALS)
        except OSError:
            seals = 0  # not a memfd: no seals
        self.write_sealed = bool(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
        self.pinnable = (stat.S_ISREG(os.fstat(fd).st_mode)
                         and _fs_type(fd) in (TMPFS_MAGIC, HUGETLBFS_MAGIC))
        self._maps: dict[int, int] = {}

    @property
    def identity(self) -> FileIdentity:
        st = os.fstat(self.fd)
        return os.major(st.st_dev), os.minor(st.st_dev), st.st_ino

    @classmethod
    def take(cls, fds: ProcessFds, fd: int) -> ProcessFile:
        """fget: EBADF for a closed or negative fd."""
        return cls(fds.copy(fd))

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def window(self, offset: int, length: int) -> tuple[tuple[int, int], int]:
        if not self.pinnable:
            return (os.getpid(), start_time(os.getpid())), 0
        return self._map_window(offset, length)

    def _map_window(self, offset: int, length: int) -> tuple[tuple[int, int], int]:
        owner = (os.getpid(), start_time(os.getpid()))
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if self.writable else 0)
        addr = _libc.mmap(None, length, prot, mmap.MAP_SHARED, self.fd, offset)
        if addr is None or addr == _MAP_FAILED:
            return owner, 0
        self._maps[int(addr)] = length
        return owner, int(addr)

    def unmap_window(self, vaddr: int, length: int) -> None:
        if self._maps.pop(vaddr, None) is not None:
            _libc.munmap(vaddr, length)

    def close(self) -> None:
        for vaddr, length in list(self._maps.items()):
            self.unmap_window(vaddr, length)
        os.close(self.fd)

class MappingFile(ProcessFile):
    """A pin's reference on the file behind a client's MAP_SHARED mapping (``SharedPin``),
    opened through /proc/PID/map_files. Its window maps whatever file that is (shmem, hugetlbfs,
    or a file on disk): the pin held the file's own pages, whatever its filesystem."""

    __slots__ = ()

    def window(self, offset: int, length: int) -> tuple[tuple[int, int], int]:
        return self._map_window(offset, length)


# Internal mounts (_filesystem_type None: shmem behind MAP_SHARED|MAP_ANONYMOUS, memfd, SysV
# shm), tmpfs and hugetlbfs: the memory files a name under /dev/ or none may stand for.
_MEMORY_FILESYSTEMS = frozenset({"tmpfs", "hugetlbfs", None})


def keep_shared(pid: int, start: int, end: int) -> list[SharedPin]:
    """What pinning [start, end) of process ``pid`` holds beyond the process: a reference
    (``MappingFile``) on the file of each MAP_SHARED mapping there, opened through
    /proc/PID/map_files (needs CAP_SYS_ADMIN), clipped to the range and widened to whole pages
    of the file (hugetlbfs: huge pages). Left out: private memory (no file outlives the
    process), device and anon_inode mmaps (VM_PFNMAP/VM_IO or a driver's own pages, and
    opening them again could reach our own filesystem), and any mapping whose file cannot be
    opened. ESRCH when the process has gone."""
    pins: list[SharedPin] = []
    for vma in _vmas(pid, start, end):
        if not vma.shared or not vma.inode or vma.name.startswith("anon_inode:"):
            continue
        if vma.maybe_special and _filesystem_type(pid, vma.device) not in _MEMORY_FILESYSTEMS:
            continue
        path = f"/proc/{pid}/map_files/{vma.start:x}-{vma.end:x}"
        try:
            fd = os.open(path, os.O_RDWR if "w" in vma.perms else os.O_RDONLY)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                continue
            file = MappingFile(fd)
        except OSError:
            os.close(fd)
            continue
        page = info.st_blksize if _fs_type(fd) == HUGETLBFS_MAGIC else PAGE_SIZE
        low = vma.start + (max(vma.start, start) - vma.start) // page * page
        high = min(vma.end, vma.start + -(-(min(vma.end, end) - vma.start) // page) * page)
        pins.append(SharedPin(low, high, file, vma.offset + low - vma.start))
    return pins


IOV_MAX = 1024
"""Most iovecs one process_vm_readv/writev call takes (UIO_MAXIOV)."""

# The same two syscalls with untyped pointers, for process_vm_transfer: its iovec arrays are
# packed with struct (much cheaper than building ctypes arrays on every DMA) and passed as bytes.
_VM_CALL = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong,
                            ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong, use_errno=True)
_vm_writev = _VM_CALL(("process_vm_writev", _libc))
_vm_readv = _VM_CALL(("process_vm_readv", _libc))


def _address_of(data: bytes) -> int:
    """Where a bytes object keeps its contents (ctypes converts bytes to a char pointer to
    them without copying; typeshed does not list bytes among cast()'s arguments)."""
    return ctypes.cast(cast(Any, data), ctypes.c_void_p).value or 0


def process_vm_transfer(pid: int, buffer: bytes | bytearray | memoryview,
                        remote: Sequence[tuple[int, int]], *, write: bool) -> int:
    """Copy between ``buffer`` (ours) and the pieces ``remote`` = [(vaddr, length), ...] of
    process ``pid``'s memory, in order, with as few vectored syscalls as possible (one unless
    there are more than IOV_MAX pieces). ``write`` copies buffer -> pid (process_vm_writev), else
    pid -> buffer, which must then be writable. ``buffer`` must be exactly as long as the pieces.

    Returns the bytes transferred: less than asked when a remote page is not accessible (the
    kernel stops at the first failing iovec and never splits one). Raises OSError when nothing
    could be done (ESRCH: the process is gone; EFAULT; EPERM: no ptrace rights over it). This is
    the device-DMA path: unlike :class:`ProcessMemory` it reports rather than interprets
    failures, so the caller can tell an exited process from a bad address.
    """
    total = remote[0][1] if len(remote) == 1 else sum(length for _addr, length in remote)
    if len(buffer) != total:
        raise ValueError(f"buffer of {len(buffer)} bytes for {total} bytes of remote memory")
    if total == 0:
        return 0
    anchor: object = buffer   # keeps the memory behind ``base`` alive and in place
    if type(buffer) is bytes:
        # Immutable, so its storage never moves: its address is usable as is.
        base = _address_of(buffer)
    else:
        view = memoryview(buffer)
        if view.readonly:
            if not write:
                raise ValueError("cannot read process memory into a read-only buffer")
            anchor = bytes(view)
            base = _address_of(anchor)
        else:
            anchor = ctypes.c_char.from_buffer(view.cast("B"))
            base = ctypes.addressof(anchor)
    call = _vm_writev if write else _vm_readv
    done = 0
    for start in range(0, len(remote), IOV_MAX):
        chunk = remote[start:start + IOV_MAX]
        size = chunk[0][1] if len(chunk) == 1 else sum(length for _addr, length in chunk)
        flat = struct.pack(f"{2 * len(chunk)}Q", *itertools.chain.from_iterable(chunk))
        n = call(pid, struct.pack("QQ", base + done, size), 1, flat, len(chunk), 0)
        if n < 0:
            err = ctypes.get_errno()
            if done:
                break
            raise OSError(err, f"process_vm_{'writev' if write else 'readv'}({pid}): "
                               f"{os.strerror(err)}")
        done += n
        if n != size:
            break
    del anchor
    return done
