"""The engine's view of the process that made a call: its memory, its fds, its credentials.

The engine never performs I/O itself. Everything it needs from the caller comes through this
small interface; the daemon passes the real thing (``ioasidfs.client``), unit tests pass
:class:`FakeMemory` and a dict of fds, so every kernel rule is testable without a mount.
"""
from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field
from typing import Callable, Literal, Protocol

from ..errors import KernelError

PAGE_SIZE = 4096
"""x86-64 base page: the unit of pinning and of RLIMIT_MEMLOCK accounting (PAGE_SHIFT 12)."""
PAGE_SHIFT = 12

ProcessKey = tuple[int, int]
"""Who owns locked memory: (tgid, start time). The kernel charges an ``mm_struct``; a pid alone
could be reused by a later process, which must not inherit a dead process's charge."""


@dataclass(frozen=True)
class PinScan:
    """What pinning ``[vaddr, vaddr+size)`` page by page would meet (the kernel's
    vaddr_get_pfns walk), without pinning anything.

    The kernel charges pages as it pins them, in address order, and stops at the first page it
    cannot pin. So two numbers decide the outcome: how many pages before the stop would be
    charged to ``locked_vm`` (ordinary RAM; not the shared zero page, not VM_PFNMAP areas), and
    the errno of the stop, if any (EFAULT: hole, PROT_NONE, missing permission; EOPNOTSUPP:
    fs-dax). Whether RLIMIT_MEMLOCK or the fault wins is then the engine's business.

    ``shared`` says whether the walk met a MAP_SHARED file mapping (shmem included): only then
    can a pin keep anything beyond the process (:attr:`Caller.keep_shared`), so a pin of
    private memory need not ask -- the same walk answers both.
    """

    charged_pages: int
    fault: int | None = None
    shared: bool = False


class ClientMemory(Protocol):
    """The caller's address space; any unreadable/unwritable byte fails the whole call (EFAULT)."""

    def read(self, addr: int, size: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...


class EventSignal(Protocol):
    """An eventfd of the caller, kept by the engine to signal interrupts through (SET_IRQS,
    IOEVENTFD, low-power wakeup): the kernel's ``struct eventfd_ctx`` reference.

    The daemon's implementation holds a copy of the caller's eventfd (pidfd_getfd), so it stays
    valid after the caller closes its fd, as the kernel's reference does; tests use
    :class:`FakeEventfd`. ``signal`` adds 1 to the counter (eventfd_signal); ``close`` drops the
    reference (eventfd_ctx_put) and must be called exactly once.
    """

    def signal(self) -> None: ...

    def close(self) -> None: ...


class FakeEventfd:
    """An eventfd for tests: counts signals; ``closed`` once the engine let go of it."""

    def __init__(self) -> None:
        self.count = 0
        self.closed = False

    def signal(self) -> None:
        assert not self.closed, "signal() on a released eventfd"
        self.count += 1

    def close(self) -> None:
        assert not self.closed, "close() twice"
        self.closed = True

    def take(self) -> int:
        """The counter's value, reset to 0 (what a read() of an eventfd does)."""
        value, self.count = self.count, 0
        return value


class CallerFile(Protocol):
    """The open file behind one of the caller's fds, as IOMMU_IOAS_MAP_FILE takes it (``fget``):
    our own reference, valid after the caller closes its fd, as the kernel's ``struct file``
    reference is. ``close`` drops it and must be called exactly once.

    What the kernel looks at, and when:

    * ``writable``: opened for writing (FMODE_WRITE); a WRITEABLE map of a file without it is
      EPERM at MAP time (iopt_alloc_file_pages, late 2025).
    * ``write_sealed``: a memfd sealed against writes (F_SEAL_WRITE / F_SEAL_FUTURE_WRITE):
      mapping_map_writable refuses a writable mapping, EPERM at MAP time.
    * ``pinnable``: what memfd_pin_folios accepts -- a shmem (memfd, tmpfs, /dev/shm) or
      hugetlbfs file; anything else is EINVAL, but only when pages are pinned (a domain).
    * ``size()``: the file's size now; pinning pages past it is EINVAL.
    * ``window(offset, length)``: where the file's bytes ``[offset, offset+length)`` can be
      reached by device DMA: (owner, vaddr) in the translation table's terms. The daemon maps the
      file shared into its own address space (see ``ioasidfs.client.ProcessFile``): the mapping
      is of the file's pages, so a device write reaches every other mapping of the memfd, as a
      DMA into the pinned folios does. ``unmap_window`` releases it.
    """

    @property
    def writable(self) -> bool: ...

    @property
    def write_sealed(self) -> bool: ...

    @property
    def pinnable(self) -> bool: ...

    def size(self) -> int: ...

    def window(self, offset: int, length: int) -> tuple[ProcessKey, int]: ...

    def unmap_window(self, vaddr: int, length: int) -> None: ...

    def close(self) -> None: ...

    @property
    def identity(self) -> FileIdentity | None:
        """Which file it is (device, inode), for telling its pages from others' (the
        selftest's page checks); None when unknown."""
        ...


class FakeFile:
    """A memfd-like file for tests. Its contents are a ctypes buffer in *this* process, so a
    device's DMA through the translation table (process_vm_writev to our own pid) really lands
    in ``data``. ``owner`` is this process's ProcessKey as the DMA layer resolves it."""

    def __init__(self, size: int, *, writable: bool = True, pinnable: bool = True,
                 write_sealed: bool = False, owner: ProcessKey | None = None,
                 buffer: ctypes.Array[ctypes.c_char] | None = None,
                 identity: FileIdentity | None = None) -> None:
        self._buffer = buffer if buffer is not None else ctypes.create_string_buffer(max(size, 1))
        self._size = size
        self.writable = writable
        self.pinnable = pinnable
        self.write_sealed = write_sealed
        self.owner: ProcessKey = owner if owner is not None else (os.getpid(), 0)
        self.windows: list[tuple[int, int]] = []
        self.closed = False
        self.references: list[FakeFile] = []
        self._identity = identity

    @property
    def base(self) -> int:
        return ctypes.addressof(self._buffer)

    @property
    def data(self) -> bytes:
        return self._buffer.raw[:self._size]

    def truncate(self, size: int) -> None:
        """ftruncate: only the reported size changes (the buffer keeps its room)."""
        self._size = size

    def size(self) -> int:
        return self._size

    def window(self, offset: int, length: int) -> tuple[ProcessKey, int]:
        assert not self.closed
        self.windows.append((offset, length))
        return self.owner, self.base + offset

    def unmap_window(self, vaddr: int, length: int) -> None:
        self.windows.remove((vaddr - self.base, length))

    def close(self) -> None:
        assert not self.closed, "close() twice"
        self.closed = True

    def reopen(self) -> FakeFile:
        """Another reference to the same file (the same bytes), as opening it again gives;
        each is listed in ``references`` so a test can see them all closed."""
        other = FakeFile(self._size, writable=self.writable, pinnable=self.pinnable,
                         write_sealed=self.write_sealed, owner=self.owner, buffer=self._buffer,
                         identity=self._identity)
        self.references.append(other)
        return other

    def view(self, offset: int, size: int) -> memoryview:
        """Bytes [offset, offset+size) of the file, writable in place (a shared mapping's)."""
        return memoryview(self._buffer).cast("B")[offset:offset + size]

    @property
    def identity(self) -> FileIdentity | None:
        return self._identity


class ForeignFile:
    """An fd of the caller that is not one of our files (a pipe, an eventfd, /dev/null...)."""

    def __repr__(self) -> str:
        return "ForeignFile()"


FOREIGN = ForeignFile()


@dataclass
class Caller:
    """One ioctl's caller.

    ``resolve_fd`` maps an fd number in the caller's table to our open-file object, or to
    :data:`FOREIGN`; it raises KernelError(EBADF) for a closed fd. It may block (a FUSE round trip
    to our own file), which is why ioctls that carry fds run in a worker thread.
    ``can_lock_memory`` tells whether the caller holds CAP_IPC_LOCK; ``memlock_limit`` is its
    RLIMIT_MEMLOCK in bytes (-1 = unlimited). Both are looked up lazily: most calls need neither.

    What VFIO_IOMMU_MAP_DMA needs to pin memory the way the kernel would:

    * ``check_user_range(vaddr, size, write)`` walks the caller's mappings as pinning would
      (FOLL_WRITE when ``write``) and returns a :class:`PinScan`. It must not change anything.
    * ``locked_pages()`` is the caller's own ``mm->locked_vm`` in pages (VmLck: its mlock()ed
      memory and any real pins), to which the engine adds the pages it charged itself; the sum
      is what RLIMIT_MEMLOCK is checked against.
    * ``start_time()`` (clock ticks since boot, /proc/PID/stat field 22) tells one process from
      a later one with the same pid; see :data:`ProcessKey`.
    * ``uid()`` is the caller's real uid: iommufd charges pins per user (``current_user()``)
      unless the context accounts per process.

    ``eventfd(fd)`` takes a reference to the caller's eventfd ``fd`` (eventfd_ctx_fdget): an
    :class:`EventSignal`, or KernelError EBADF for a closed/negative fd and EINVAL for an fd that
    is not an eventfd. Like ``resolve_fd`` it may block, so ioctls that take eventfds run in a
    worker thread (``IoctlDef.takes_fds``).

    ``file(fd)`` takes a reference to the open file behind ``fd`` (fget): a
    :class:`CallerFile`, or KernelError EBADF for a closed or negative fd. ``has_capability(cap)``
    is ``capable(cap)`` for the caller's effective set (IOMMU_OPTION's RLIMIT_MODE needs
    CAP_SYS_RESOURCE).

    The defaults describe a caller whose every page is pinnable and charged, with nothing
    locked yet and no limit: right for tests that do not care, wrong for a real process.
    """

    pid: int
    memory: ClientMemory
    resolve_fd: Callable[[int], object] = field(default=lambda fd: _no_fds(fd))
    tgid: Callable[[], int] | None = None
    can_lock_memory: Callable[[], bool] = field(default=lambda: True)
    memlock_limit: Callable[[], int] = field(default=lambda: -1)
    check_user_range: Callable[[int, int, bool], PinScan] = field(
        default=lambda vaddr, size, write: PinScan(size // PAGE_SIZE))
    locked_pages: Callable[[], int] = field(default=lambda: 0)
    start_time: Callable[[], int] = field(default=lambda: 0)
    uid: Callable[[], int] = field(default=lambda: 0)
    eventfd: Callable[[int], EventSignal] = field(default=lambda fd: _no_eventfds(fd))
    file: Callable[[int], CallerFile] = field(default=lambda fd: _no_files(fd))
    # No capability unless the daemon says so: a default that granted CAP_SYS_RESOURCE would
    # let any caller switch RLIMIT_MODE.
    has_capability: Callable[[int], bool] = field(default=lambda cap: False)
    # The caller's shared file mappings (shmem included) in [start, end): what physical pages
    # its addresses reach there (see :data:`SharedMapping`); the selftest mock's page checks.
    shared_mappings: Callable[[int, int], list[SharedMapping]] = field(
        default=lambda start, end: [])
    # contiguous_blocks(first, count, size): of the ``count`` blocks of ``size`` bytes (a power
    # of two) starting at ``first``, the addresses of those backed by physically contiguous
    # memory that starts at a size-aligned physical address -- what an IOMMU can map with one
    # large IOPTE (hugetlb and THP pages, in practice). Default: none, every IOPTE is small.
    contiguous_blocks: Callable[[int, int, int], list[int]] = field(
        default=lambda first, count, size: [])
    # keep_shared(start, end): what a pin of [start, end) holds beyond the process -- a
    # :class:`SharedPin` for each shared mapping in it; private memory is left out. Called
    # when pages are pinned; the engine releases each reference when its pages are unpinned.
    # Default: nothing, every page is reached through the process.
    keep_shared: Callable[[int, int], list[SharedPin]] = field(
        default=lambda start, end: [])

    def process(self) -> int:
        """The caller's thread group (process) id: what the kernel calls current->mm's owner."""
        return self.tgid() if self.tgid is not None else self.pid

    def process_key(self) -> ProcessKey:
        """The owner of what this caller locks: its mm, named so a reused pid cannot inherit it."""
        return (self.process(), self.start_time())


@dataclass(frozen=True)
class SharedPin:
    """A pin's reference on the memory object behind one MAP_SHARED mapping of the mapping
    process (shmem, MAP_SHARED|MAP_ANONYMOUS memory, a memfd, hugetlbfs, a shared file).

    The kernel pins such pages: the pinned folios belong to the file's page cache and outlive
    the process that mapped them, so a device (or an access) keeps reaching them after that
    process has exited or unmapped them. We keep them the same way: ``file`` is our own
    reference to the file (as MAP_FILE's :class:`CallerFile`), and the pages are reached
    through its ``window``. [``start``, ``end``) are the mapping process's addresses the
    reference covers (page aligned, within one mapping; possibly wider than asked, e.g. whole
    huge pages), ``offset`` the file offset at ``start``. Private memory has no such object:
    its pages die with the process here, so nothing is kept for it."""

    start: int
    end: int
    file: CallerFile
    offset: int


FileIdentity = tuple[int, int, int]
"""A file as the kernel's page cache knows it: (device major, device minor, inode)."""

SharedMapping = tuple[int, int, FileIdentity, int]
"""A MAP_SHARED mapping of a file (or of shmem: MAP_SHARED|MAP_ANONYMOUS memory is a file too):
[start, end) of the caller's addresses, the file, and the file offset at ``start``. Such pages
are the file's, whoever maps them; a private mapping's pages belong to its process."""


def _no_fds(fd: int) -> object:
    raise KernelError(errno.EBADF, f"fd {fd} is not open")


def _no_eventfds(fd: int) -> EventSignal:
    raise KernelError(errno.EBADF, f"fd {fd} is not open")


def _no_files(fd: int) -> CallerFile:
    raise KernelError(errno.EBADF, f"fd {fd} is not open")


CAP_SYS_RESOURCE = 24
"""linux/capability.h: the capability IOMMU_OPTION's RLIMIT_MODE SET asks :attr:`Caller.has_capability` for."""


MemoryKind = Literal["ram", "untouched", "pfnmap", "io", "dirty-tracked-file"]
"""What backs a :class:`FakeMemory` region, as far as pinning cares:

* ``ram``: ordinary pages (anonymous, shmem, hugetlbfs...): pinnable, each charged.
* ``untouched``: private anonymous memory never written: a read-only pin gets the shared zero
  page (not charged); a WRITE pin faults real pages in (charged).
* ``pfnmap``: a VM_PFNMAP area such as a device BAR mmap: pinnable, never charged.
* ``io``: VM_IO without VM_PFNMAP: GUP refuses it and nothing catches it, EFAULT.
* ``dirty-tracked-file``: a MAP_SHARED file on a filesystem that tracks dirty pages (ext4...):
  read pins work, FOLL_LONGTERM|FOLL_WRITE pins fail EFAULT (>= 6.5).
"""


@dataclass
class FakeRegion:
    """One mapping of a :class:`FakeMemory`: bytes, protections (``"r"``, ``"w"``) and kind."""

    data: bytearray | memoryview
    prot: str = "rw"
    kind: MemoryKind = "ram"
    # The size of the region's pages: above PAGE_SIZE a hugetlb mapping, each page physically
    # contiguous and aligned to its size (the region's base address is taken to be aligned).
    page_size: int = PAGE_SIZE
    # A MAP_SHARED mapping: the file and the file offset of the region's first byte.
    shared: tuple[FakeFile, int] | None = None


class FakeMemory:
    """An in-memory address space for tests: a few mapped ranges, EFAULT everywhere else.

    ``read``/``write`` are copy_from_user/copy_to_user and honour the regions' protections;
    ``scan_pin`` is the :class:`Caller` ``check_user_range`` of this address space.
    """

    def __init__(self) -> None:
        self.regions: dict[int, FakeRegion] = {}

    def map(self, addr: int, size_or_data: int | bytes, *, prot: str = "rw",
            kind: MemoryKind = "ram", page_size: int = PAGE_SIZE) -> int:
        data = bytearray(size_or_data) if isinstance(size_or_data, int) else bytearray(size_or_data)
        self.regions[addr] = FakeRegion(data, prot, kind, page_size)
        return addr

    def map_shared(self, addr: int, file: FakeFile, offset: int, size: int, *,
                   prot: str = "rw") -> int:
        """mmap(MAP_SHARED) of ``file`` from ``offset``: the region's bytes are the file's."""
        self.regions[addr] = FakeRegion(file.view(offset, size), prot, shared=(file, offset))
        return addr

    def unmap(self, addr: int) -> None:
        del self.regions[addr]

    def keep_shared(self, start: int, end: int) -> list[SharedPin]:
        """:attr:`Caller.keep_shared` of this address space: a new reference to the file of
        each shared region overlapping [start, end), clipped to it."""
        pins = []
        for base, region in sorted(self.regions.items()):
            low, high = max(base, start), min(base + len(region.data), end)
            if region.shared is None or low >= high:
                continue
            file, offset = region.shared
            pins.append(SharedPin(low, high, file.reopen(), offset + low - base))
        return pins

    def _region_at(self, addr: int) -> tuple[int, FakeRegion] | None:
        for base, region in self.regions.items():
            if base <= addr < base + len(region.data):
                return base, region
        return None

    def _find(self, addr: int, size: int, access: str) -> tuple[bytearray | memoryview, int]:
        for base, region in self.regions.items():
            if base <= addr and addr + size <= base + len(region.data) and access in region.prot:
                return region.data, addr - base
        raise KernelError(errno.EFAULT, f"{size} bytes at {addr:#x} are not mapped {access}")

    def read(self, addr: int, size: int) -> bytes:
        if size == 0:
            return b""
        data, off = self._find(addr, size, "r")
        return bytes(data[off:off + size])

    def write(self, addr: int, data: bytes) -> None:
        if not data:
            return
        region, off = self._find(addr, len(data), "w")
        region[off:off + len(data)] = data

    def contiguous_blocks(self, first: int, count: int, size: int) -> list[int]:
        """:attr:`Caller.contiguous_blocks` of this address space: a block is contiguous when
        it is size-aligned and lies in one region whose pages are at least that large."""
        found = []
        for addr in range(first, first + count * size, size):
            region = self._region_at(addr)
            if (region is not None and addr % size == 0 and region[1].page_size >= size
                    and addr + size <= region[0] + len(region[1].data)):
                found.append(addr)
        return found

    def scan_pin(self, vaddr: int, size: int, write: bool) -> PinScan:
        """Pinning's page walk over this address space (see :class:`MemoryKind`)."""
        charged = 0
        shared = False
        for page in range(vaddr, vaddr + size, PAGE_SIZE):
            found = self._region_at(page)
            if found is None:
                return PinScan(charged, errno.EFAULT)
            region = found[1]
            needed = "w" if write else "r"
            if needed not in region.prot or region.kind == "io":
                return PinScan(charged, errno.EFAULT)
            if region.kind == "dirty-tracked-file" and write:
                return PinScan(charged, errno.EFAULT)
            if region.kind == "ram" or region.kind == "dirty-tracked-file" or (
                    region.kind == "untouched" and write):
                charged += 1
            shared = shared or region.shared is not None
        return PinScan(charged, shared=shared)
