"""An I/O address space (IOAS): iommufd's ``io_pagetable`` (drivers/iommu/iommufd/
io_pagetable.c, pages.c, ioas.c), the state that both the native IOMMU_IOAS_* ioctls and the
VFIO container compatibility layer (``iommufd.py``) act on.

What an IOAS holds, and why each part is here:

* **Areas**: non-overlapping IOVA ranges ``[iova, last]`` (inclusive ends, so an area may end
  at 2^64-1), each a byte slice of a :class:`Pages` object -- the user memory a MAP named,
  page-aligned down -- with the IOMMU permissions asked for. Several areas may share one
  Pages object (after a type1-v1 split, or IOAS_COPY): pins are per Pages page, not per area.
* **Reserved ranges**, each tagged with its owner: a domain's outside-of-aperture ranges
  (S3), an attached device's reserved regions (S5: for our emulated IOMMU the configured MSI
  window and the other ``reserved_regions``). They are what IOVA_RANGES and the compat
  IOVA_RANGE capability report the holes of; a MAP may not touch them (EINVAL).
* **Allowed ranges** (IOAS_ALLOW_IOVAS): only steer the IOVA allocator and block new
  reservations.
* **Domains** (:class:`Domain`): the IOMMU page tables built on the IOAS, one per
  HWPT_PAGING. With no domain the IOAS is a software table: MAP pins nothing and accepts any
  user address, the alignment is 1 byte. The first domain pins every area (EFAULT/ENOMEM).
  Ours model the configured IOMMU (VT-d under QEMU): page sizes and aperture from the
  config, no cache-coherency enforcement unless configured, and no PTE without R or W.
* ``iova_alignment`` (S1) and ``large_pages_disabled`` (the type1 v1 emulation: PAGE_SIZE
  IOPTEs only, so that any page-aligned range can later be split out of an area).
* **The translation table** (``ioasidfs.engine.translate``): what a device access through this
  IOAS reaches, one entry per mapped range, owner token from the engine-wide owner registry.
  Byte-granular (page size 1), as the areas are: with no domain an area may start and end at
  any byte; once a domain exists every area is aligned anyway. Kept in step by map and unmap
  (one O(log n) call each); a cut changes no translation, so it leaves the table alone.

Pinning is modelled, not performed: pinning a range asks the mapping process's
:class:`~ioasidfs.engine.caller.Caller` what GUP would meet (``check_user_range``) and charges
the pages to the ledger the Pages object's accounting mode names (pages.c:do_update_pinned):
nothing for a CAP_IPC_LOCK mapper, the mapping user's counter by default, the mapping
process's ``locked_vm`` in the VFIO-container mode. Unlike type1, iommufd pins a whole area and
charges afterwards, so an unpinnable page (EFAULT) always wins over RLIMIT_MEMLOCK (ENOMEM),
and every page counts, the shared zero page included. Known gap: GUP refuses VM_PFNMAP
memory (a device BAR mmap) where type1 falls back to follow_pfn; the Caller's pin scan reports
such memory as pinnable, so iommufd accepts it here where the kernel says EFAULT.

Everything here raises :class:`~ioasidfs.errors.KernelError` with the errno of the kernel
function named in each docstring, checks in the kernel's order, and leaves the IOAS unchanged
on failure unless the kernel does not (unmap is not atomic, cuts persist).
"""
from __future__ import annotations

import enum
import errno
import heapq
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Protocol

from ..config import IommuConfig, ReservedRegion
from ..errors import KernelError
from .caller import PAGE_SIZE, Caller, CallerFile, FileIdentity, ProcessKey
from .kept import KeptShared, keep_shared, reach
from .locked import LockedMemory, UserLockedMemory
from .intervals import IntervalBlocks
from .translate import OwnerRegistry, TranslationTable, new_table

U64_MAX = (1 << 64) - 1
HPAGE_SIZE = 2 << 20
DIRTY_GRANULE = PAGE_SIZE // 2
"""What the IOAS's dirty bits count: the smallest IOPTE of any IOMMU emulated here (the
kernel selftest's mock domain, PAGE_SIZE / 2; VT-d's are PAGE_SIZE)."""
"""THP size: the IOVA allocator never aligns beyond it (CONFIG_TRANSPARENT_HUGEPAGE, as on every
distribution kernel)."""

IOMMU_READ = 1
"""The device may read (IOMMU_READ; VFIO_DMA_MAP_FLAG_READ has the same value)."""
IOMMU_WRITE = 2
"""The device may write (IOMMU_WRITE; VFIO_DMA_MAP_FLAG_WRITE has the same value)."""


def last_byte(start: int, length: int) -> int | None:
    """check_add_overflow(start, length - 1): the inclusive end, or None past 2^64-1."""
    last = start + length - 1
    return last if last <= U64_MAX else None


class AccountMode(enum.Enum):
    """How a Pages object charges its pins (``iopt_pages.account_mode``), fixed at MAP time."""

    NONE = "none"  # the mapper had CAP_IPC_LOCK
    USER = "user"  # the mapping user's counter (iommufd's default)
    MM = "mm"  # the mapping process's locked_vm (contexts opened as /dev/vfio/vfio)


@dataclass
class Accounting:
    """The engine-wide ledgers pins are charged to: per process (shared with type1, both are
    ``mm->locked_vm``) and per user."""

    locked: LockedMemory = field(default_factory=LockedMemory)
    users: UserLockedMemory = field(default_factory=UserLockedMemory)


@dataclass(frozen=True, eq=False)
class Domain:
    """An IOMMU domain as its IOAS sees it: page sizes, aperture, cache coherency. Compared by
    identity: two domains with the same geometry are still two page tables."""

    pgsize_bitmap: int
    aperture_start: int
    aperture_last: int
    enforce_cache_coherency: bool
    # The page table cannot hold an entry with neither read nor write permission: VT-d's
    # __domain_mapping (and the ARM io-pgtables) fail such an iommu_map with EINVAL.
    requires_access: bool = True

    @classmethod
    def from_config(cls, iommu: IommuConfig) -> Domain:
        """The paging domain our emulated IOMMU gives every device (all devices sit behind the
        same IOMMU, so they could share one)."""
        return cls(iommu.pgsize_bitmap, 0, iommu.aperture_end, iommu.enforce_cache_coherency)

    @property
    def min_page_size(self) -> int:
        return self.pgsize_bitmap & -self.pgsize_bitmap


class UnmapError(KernelError):
    """An unmap failed part way; ``unmapped`` bytes were removed before the failure and stay
    removed (iopt_unmap_iova_range is not atomic). The VFIO compat UNMAP_DMA reports them."""

    def __init__(self, errno_: int, reason: str, unmapped: int) -> None:
        super().__init__(errno_, reason)
        self.unmapped = unmapped


# ------------------------------------------------------------------------------ Pages

class Pages:
    """``struct iopt_pages``: a page-aligned range of the mapping process's memory.

    ``source`` is the Caller that mapped it: a later pin (a domain added after a lazy MAP)
    reads *that* process's memory and limits, as the kernel reads ``pages->source_mm``; if that
    process is gone the pin fails EFAULT. ``_pinned`` lists the page-index ranges of the areas
    currently loaded into domains (a multiset: a page stays pinned, and charged once, while
    any of them covers it).

    A pin of *shared* memory holds what the kernel's pin holds, the file's pages, beyond the
    process (``ioasidfs.engine.kept``): pinning pages no pin covered yet keeps each shared
    mapping there, and :meth:`reach` sends the pinned pages' bytes through the kept window --
    after the mapping process has exited or remapped those addresses, as the kernel's pinned
    folios are still reached. A reference goes when none of its pages is pinned any more.
    Private memory keeps nothing: DMA to it fails once its process is gone.
    """

    def __init__(self, source: Caller, uptr: int, length: int, writable: bool,
                 mode: AccountMode) -> None:
        self.source = source
        # Whose address space the translation table reads the pages from (for user memory the
        # mapping process; a file's window is the daemon's, see FilePages).
        self.source_key: ProcessKey = source.process_key()
        # pages->source_mm and source_user: who the pins are charged to. Only
        # IOMMU_IOAS_CHANGE_PROCESS moves them (change_mm), together with ``source``.
        self.mm: ProcessKey = self.source_key
        self.uid = source.uid() if mode is AccountMode.USER else -1
        self.uptr = uptr - uptr % PAGE_SIZE
        self.npages = -(-(length + uptr % PAGE_SIZE) // PAGE_SIZE)
        self.writable = writable
        self.mode = mode
        self._pinned: list[tuple[int, int]] = []
        self.npinned = 0
        # What the ledgers hold for these pages (pages->last_npinned): npinned, except after
        # an IOAS_CHANGE_PROCESS whose uncharge of the old mm failed (see change_process).
        self.last_npinned = 0
        # Areas using these pages (the kernel's kref, counted per area): the last one to go
        # releases what the pages hold (a file reference and its DMA window).
        self.users = 0
        # What the pins hold of shared memory, oldest first (see _keep_shared).
        self._kept: list[KeptShared] = []

    @property
    def hint_base(self) -> int:
        """What the IOVA allocator keeps the alignment of, for byte 0 of page 0
        (iopt_alloc_area_pages: the user address, or the file offset for a file)."""
        return self.uptr

    def release(self) -> None:
        """iopt_release_pages: the last area went. User memory holds nothing of ours."""

    def _uncovered(self, first: int, last: int) -> list[tuple[int, int]]:
        """The sub-ranges of page indexes [first, last] no pinned area covers."""
        runs = [(first, last)]
        for lo, hi in self._pinned:
            cut: list[tuple[int, int]] = []
            for a, b in runs:
                if hi < a or lo > b:
                    cut.append((a, b))
                    continue
                if a < lo:
                    cut.append((a, lo - 1))
                if hi < b:
                    cut.append((hi + 1, b))
            runs = cut
        return runs

    def pin(self, first: int, last: int, accounting: Accounting, load: Callable[[], None]) -> None:
        """Pin page indexes [first, last] for an area being loaded into the domains
        (iopt_area_fill_domain[s]): GUP every page not pinned yet (EFAULT on the first it
        cannot pin), ``load`` them into the domains (its errors), then charge the new pins all
        at once (ENOMEM, pfn_reader_update_pinned). Failure leaves nothing pinned."""
        runs = self._uncovered(first, last)
        shared_runs = [(lo, hi) for lo, hi in runs if self._check_source(lo, hi)]
        load()
        count = sum(hi - lo + 1 for lo, hi in runs)
        npinned = self.npinned + count
        # pfn_reader_update_pinned: the difference to what is charged (last_npinned).
        if npinned > self.last_npinned:
            self._charge(npinned - self.last_npinned, accounting)
        elif npinned < self.last_npinned:
            self._uncharge(self.last_npinned - npinned, accounting)
        self.last_npinned = npinned
        self._pinned.append((first, last))
        self.npinned = npinned
        for lo, hi in shared_runs:
            self._keep_shared(lo, hi)

    def unpin(self, first: int, last: int, accounting: Accounting) -> None:
        """The area covering [first, last] leaves the domains: unpin and uncharge the pages no
        other pinned area still holds (update_unpinned: nothing when more pages stay pinned
        than are charged)."""
        self._pinned.remove((first, last))
        count = sum(hi - lo + 1 for lo, hi in self._uncovered(first, last))
        self.npinned -= count
        if self.npinned <= self.last_npinned:
            self._uncharge(self.last_npinned - self.npinned, accounting)
            self.last_npinned = self.npinned
        self._release_unpinned()

    def _keep_shared(self, first: int, last: int) -> None:
        """Newly pinned pages [first, last]: keep the shared memory among them."""
        self._kept += keep_shared(self.source, self.uptr + first * PAGE_SIZE,
                                  self.uptr + (last + 1) * PAGE_SIZE)

    def _kept_pages(self, kept: KeptShared) -> tuple[int, int]:
        """The page indexes [first, last] ``kept`` covers."""
        return (kept.start - self.uptr) // PAGE_SIZE, (kept.end - 1 - self.uptr) // PAGE_SIZE

    def _release_unpinned(self) -> None:
        """Drop the references none of whose pages any pin still covers (the pin went)."""
        for kept in list(self._kept):
            first, last = self._kept_pages(kept)
            if self._uncovered(first, last) == [(first, last)]:
                self._kept.remove(kept)
                kept.release()

    def kept_file_page(self, vaddr: int) -> tuple[FileIdentity, int] | None:
        """The file and offset of the page a kept reference holds for the mapping process's
        address ``vaddr`` (the pinned page itself, whatever that process does or did since),
        or None when no pin keeps it or the file is unknown."""
        for kept in reversed(self._kept):
            if kept.start <= vaddr < kept.end:
                identity = kept.pin.file.identity
                return None if identity is None else (identity, kept.pin.offset + vaddr - kept.pin.start)
        return None

    def keeps(self, first: int, last: int) -> bool:
        """Whether any of pages [first, last] is reached through a kept reference."""
        return any(kept.start < self.uptr + (last + 1) * PAGE_SIZE
                   and self.uptr + first * PAGE_SIZE < kept.end for kept in self._kept)

    def reach(self, start_byte: int, length: int) -> list[tuple[ProcessKey, int, int]]:
        """Where bytes [start_byte, start_byte+length) of the span (offsets from page 0) are
        reached now: (owner, vaddr, length) pieces, through kept windows where pins keep the
        pages, else through the mapping process (``source_key``)."""
        return reach(self._kept, self.source_key, self.uptr + start_byte, length)

    def is_pinned(self, index: int) -> bool:
        """Whether page ``index`` is pinned (some loaded area covers it)."""
        return any(lo <= index <= hi for lo, hi in self._pinned)

    def repin(self, old: tuple[int, int], new: Iterable[tuple[int, int]]) -> None:
        """A pinned area was split: its halves hold the same pages (no pin changes)."""
        self._pinned.remove(old)
        self._pinned.extend(new)

    def _check_source(self, first: int, last: int) -> bool:
        """What pin_user_pages(FOLL_LONGTERM [| FOLL_WRITE]) would meet on the source range;
        True when it holds shared memory, which the pin may keep (PinScan.shared)."""
        vaddr = self.uptr + first * PAGE_SIZE
        size = (last - first + 1) * PAGE_SIZE
        try:
            if self.source.process_key() != self.source_key:
                raise KernelError(errno.ESRCH, "the pid now names another process")
            scan = self.source.check_user_range(vaddr, size, self.writable)
        except KernelError as e:
            if e.errno != errno.ESRCH:
                raise
            # mmget_not_zero(source_mm) failed: the mapping process has exited.
            raise KernelError(errno.EFAULT, f"the process that mapped {vaddr:#x} has exited") from None
        if scan.fault is not None:
            raise KernelError(scan.fault, f"cannot pin {size:#x} bytes at {vaddr:#x}"
                                          f"{' for writing' if self.writable else ''}")
        return scan.shared

    def _charge(self, count: int, accounting: Accounting) -> None:
        _charge_to(self.source, self.mode, self.uid, self.mm, count, accounting)

    def _uncharge(self, count: int, accounting: Accounting) -> None:
        _uncharge_from(self.mode, self.uid, self.mm, count, accounting)

    # ---- IOMMU_IOAS_CHANGE_PROCESS (ioas.c)
    @property
    def is_file(self) -> bool:
        """pages->type == IOPT_ADDRESS_FILE: only such pages can change process."""
        return False

    def needs_charge_update(self, caller: Caller) -> bool:
        """need_charge_update: never for unaccounted pages; per mm when the mm differs; per
        user when the user *or* the mm differs (the mm's pinned_vm moves too)."""
        if self.mode is AccountMode.NONE:
            return False
        if self.mode is AccountMode.MM:
            return self.mm != caller.process_key()
        return self.uid != caller.uid() or self.mm != caller.process_key()

    def uncharge_old(self, accounting: Accounting) -> bool:
        """iopt_pages_update_pinned(pages, npinned, false) for the old owner; False when it
        fails: in MM mode the old mm must still have users (mmget_not_zero, EINVAL once the
        mapping process has exited), and then last_npinned stays 0."""
        if self.mode is AccountMode.MM and not self._source_alive():
            return False
        self._uncharge(self.npinned, accounting)
        self.last_npinned = self.npinned
        return True

    def _source_alive(self) -> bool:
        try:
            return self.source.process_key() == self.mm
        except KernelError as e:
            if e.errno != errno.ESRCH:
                raise
            return False

    def change_mm(self, caller: Caller) -> None:
        """change_mm: the pages now belong to the calling process -- its mm, task (whose
        RLIMIT_MEMLOCK later pins are checked against) and user."""
        self.source = caller
        self.mm = caller.process_key()
        self.uid = caller.uid() if self.mode is AccountMode.USER else -1


def _charge_to(caller: Caller, mode: AccountMode, uid: int, mm: ProcessKey, count: int,
               accounting: Accounting) -> None:
    """iopt_pages_update_pinned(inc): the user's counter (incr_user_locked_vm) or the mm's
    locked_vm (__account_locked_vm without bypass), against ``caller``'s RLIMIT_MEMLOCK
    (ENOMEM); nothing for unaccounted pages."""
    if count == 0 or mode is AccountMode.NONE:
        return
    limit = caller.memlock_limit()
    if mode is AccountMode.USER:
        accounting.users.charge(uid, count, limit)
    else:
        accounting.locked.charge_pinned(mm, count, limit, caller.locked_pages())


def _uncharge_from(mode: AccountMode, uid: int, mm: ProcessKey, count: int,
                   accounting: Accounting) -> None:
    if mode is AccountMode.USER:
        accounting.users.uncharge(uid, count)
    elif mode is AccountMode.MM:
        accounting.locked.uncharge(mm, count)


class FilePages(Pages):
    """``iopt_pages`` of type IOPT_ADDRESS_FILE (IOMMU_IOAS_MAP_FILE): pages of a file, not of
    an address space.

    The kernel pins the file's folios (memfd_pin_folios), so the mapping process's address
    space plays no part after MAP: its exit, munmap or mprotect change nothing. We reproduce
    that by translating the area through a window the *daemon* maps (MAP_SHARED) over the
    same file pages (``CallerFile.window``): the translation table's owner is then our own
    process, which outlives every client, and a device write lands in the file's page cache,
    visible through every other mapping of the memfd. The window covers the page-aligned span
    at MAP time, whether or not the file is that long yet (pinning checks the size).

    Charging is as for user memory: the mapping process's user (or mm, or nothing with
    CAP_IPC_LOCK), against its RLIMIT_MEMLOCK.
    """

    def __init__(self, source: Caller, file: CallerFile, start: int, length: int,
                 writable: bool, mode: AccountMode) -> None:
        start_byte = start % PAGE_SIZE
        npages = -(-(length + start_byte) // PAGE_SIZE)
        owner, base = file.window(start - start_byte, npages * PAGE_SIZE)
        super().__init__(source, start, length, writable, mode)
        self.uptr = base  # the window: page 0 of the span, in the owner's address space
        self.npages = npages
        self.source_key = owner
        self.file = file
        self.start = start - start_byte  # pages->start: the file offset of page 0

    @property
    def hint_base(self) -> int:
        return self.start

    @property
    def is_file(self) -> bool:
        return True

    def release(self) -> None:
        self.file.unmap_window(self.uptr, self.npages * PAGE_SIZE)
        self.file.close()

    def _check_source(self, first: int, last: int) -> bool:
        """memfd_pin_folios: only shmem and hugetlbfs files (EINVAL), and only pages below the
        file's size (shmem refuses to read a folio past EOF: EINVAL). Nothing more to keep: the
        file reference and its window already are the pin's."""
        if not self.file.pinnable:
            raise KernelError(errno.EINVAL, "only memfd/shmem or hugetlbfs files can be pinned")
        offset = self.start + last * PAGE_SIZE
        size = self.file.size()
        if offset >= size:
            raise KernelError(errno.EINVAL, f"file offset {offset:#x} is past the file's end {size:#x}")
        return False


# ------------------------------------------------------------------------------ areas

class Area:
    """``struct iopt_area``: IOVA ``[iova, last]`` backed by ``pages`` from ``start_byte``.
    ``pinned`` is true while the area is loaded into the IOAS's domains; ``contiguous`` then
    caches, per large page size, which of its blocks the pinned pages back contiguously (see
    :meth:`Ioas.large_ioptes`)."""

    __slots__ = ("iova", "last", "pages", "start_byte", "prot", "pinned", "contiguous",
                 "small_ioptes")

    def __init__(self, iova: int, last: int, pages: Pages, start_byte: int, prot: int) -> None:
        self.iova = iova
        self.last = last
        self.pages = pages
        self.start_byte = start_byte
        self.prot = prot
        self.pinned = False
        self.contiguous: dict[int, list[int]] = {}
        self.small_ioptes: set[Domain] = set()   # domains that loaded it with large pages off

    @property
    def length(self) -> int:
        return self.last - self.iova + 1

    @property
    def page_offset(self) -> int:
        return self.start_byte % PAGE_SIZE

    @property
    def index(self) -> int:
        """First page index of ``pages`` this area uses."""
        return self.start_byte // PAGE_SIZE

    @property
    def last_index(self) -> int:
        return (self.start_byte + self.length - 1) // PAGE_SIZE

    @property
    def vaddr(self) -> int:
        """The user address of the first byte (what a DMA to ``iova`` reaches)."""
        return self.pages.uptr + self.start_byte

    def start_byte_at(self, iova: int) -> int:
        """iopt_area_start_byte: the offset into ``pages`` of IOVA ``iova``."""
        return self.start_byte + (iova - self.iova)

    def __repr__(self) -> str:
        return f"Area([{self.iova:#x}, {self.last:#x}] <- {self.vaddr:#x}, prot {self.prot})"


class AreaTree(IntervalBlocks["Area"]):
    """Areas sorted by IOVA (the kernel's ``area_itree``), answering only what the IOAS asks --
    which areas intersect a range, which one contains an IOVA, in order -- through the engine's
    one sorted-interval structure (``intervals.py``): O(log n) lookups, and an insert or removal
    moves at most one block's worth of pointers, so a map at the bottom of 60k areas costs what
    it costs in an empty IOAS."""

    def __init__(self) -> None:
        super().__init__(_iova_of, _last_of)


def _iova_of(area: Area) -> int:
    return area.iova


def _last_of(area: Area) -> int:
    return area.last


@dataclass(frozen=True)
class Reserved:
    """One reserved IOVA range and who reserved it (a Domain, a device, or anything else)."""

    start: int
    last: int
    owner: object


def _merged(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping or touching intervals joined (the kernel's span iterators
    treat touching nodes as one used span)."""
    out: list[tuple[int, int]] = []
    for start, last in sorted(intervals):
        if out and start <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((start, last))
    return out


def _holes(used: Iterable[tuple[int, int]], lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """The maximal sub-ranges of [lo, hi] not covered by ``used`` (sorted by start)."""
    cursor = lo
    for start, last in used:
        if last < cursor:
            continue
        if start > hi:
            break
        if start > cursor:
            yield cursor, start - 1
        if last >= hi:
            return
        cursor = last + 1
    yield cursor, hi


def _fit(start: int, last: int, length: int, align: int, page_offset: int) -> int | None:
    """__alloc_iova_check_range, literally: round ``start`` up to ``align``, OR in the page
    offset, and require the result below ``last`` with ``length`` bytes to spare."""
    aligned = start + align - 1
    if aligned > U64_MAX:
        return None
    aligned = (aligned - aligned % align) | page_offset
    if aligned >= last or last - aligned < length - 1:
        return None
    return aligned


# ------------------------------------------------------------------------------ the IOAS

class IoasAccess(Protocol):
    """An in-kernel user of an IOAS (``struct iommufd_access``): the IOVA alignment it needs
    (PAGE_SIZE for one that pins pages, else 1) and its ``ops->unmap``, called with each
    area's [iova, last] before the area is unmapped, which must drop every pin inside."""

    iova_alignment: int

    def unmap(self, iova: int, last: int) -> None: ...

    def locks(self, iova: int, last: int) -> bool:
        """Whether it locks an area covering [iova, last] (``area->num_locks``: an internal
        access of a HW queue), which makes an unmap reaching that area EBUSY."""
        ...


class Ioas:
    """``struct io_pagetable`` (and the IOAS object's state around it)."""

    def __init__(self, accounting: Accounting | None = None,
                 owners: OwnerRegistry | None = None) -> None:
        self.accounting = accounting if accounting is not None else Accounting()
        self.owners = owners if owners is not None else OwnerRegistry()
        # Byte-granular mappings (an area may start at any byte without a domain); dirty bits
        # per DIRTY_GRANULE, read out per IOPTE of the domain asking.
        self.table: TranslationTable = new_table(1, dirty_page_size=DIRTY_GRANULE)
        self.areas = AreaTree()
        self.reserved: list[Reserved] = []
        # In-kernel users reading this IOAS by IOVA (``iommufd_access``, the selftest's): they
        # raise the alignment (S1) and must let go of IOVAs before they are unmapped.
        self.accesses: list[IoasAccess] = []
        self.allowed: list[tuple[int, int]] = []
        self.domains: list[Domain] = []
        self.large_pages_disabled = False
        # Software tables can use the whole size_t IOVA space, at any byte alignment.
        self.iova_alignment = 1

    # ---------------------------------------------------------------- alignment (S1, S2)
    def _wanted_alignment(self) -> int:
        """iopt_calculate_iova_alignment: PAGE_SIZE with large pages off (batch_iommu_map_small
        maps PAGE_SIZE units), raised to every domain's smallest page size."""
        alignment = PAGE_SIZE if self.large_pages_disabled else 1
        for domain in self.domains:
            alignment = max(alignment, domain.min_page_size)
        for access in self.accesses:
            alignment = max(alignment, access.iova_alignment)
        return alignment

    def _check_alignment(self, alignment: int) -> None:
        """iopt_check_iova_alignment: every area must already conform (EADDRINUSE)."""
        mask = alignment - 1
        for area in self.areas:
            if (area.iova | area.length | area.page_offset) & mask:
                raise KernelError(errno.EADDRINUSE, f"{area!r} is not {alignment:#x}-aligned")

    def _recalculate_alignment(self) -> None:
        alignment = self._wanted_alignment()
        if alignment > self.iova_alignment:
            self._check_alignment(alignment)
        self.iova_alignment = alignment

    def disable_large_pages(self) -> None:
        """iopt_disable_large_pages (VFIO_SET_IOMMU(TYPE1), OPTION HUGE_PAGES=0): refused
        (EINVAL) once a domain holds mappings -- they may already use large IOPTEs."""
        if self.large_pages_disabled:
            return
        if self.domains and len(self.areas):
            raise KernelError(errno.EINVAL, "cannot disable large pages: domains already hold mappings")
        self.large_pages_disabled = True
        try:
            self._recalculate_alignment()
        except KernelError:
            self.large_pages_disabled = False
            raise

    def enable_large_pages(self) -> None:
        """iopt_enable_large_pages: always succeeds (the alignment can only shrink)."""
        self.large_pages_disabled = False
        self._recalculate_alignment()

    # ---------------------------------------------------------------- reservations (S5, S6)
    def reserve(self, start: int, last: int, owner: object) -> None:
        """iopt_reserve_iova: a reservation may not cover a mapped or an allowed IOVA."""
        if self.areas.first_overlapping(start, last) is not None or any(
                a <= last and start <= b for a, b in self.allowed):
            raise KernelError(errno.EADDRINUSE, f"[{start:#x}, {last:#x}] is mapped or allowed")
        self.reserved.append(Reserved(start, last, owner))

    def remove_reserved(self, owner: object) -> None:
        self.reserved = [r for r in self.reserved if r.owner is not owner]

    def reserve_device_regions(self, regions: Iterable[ReservedRegion], owner: object) -> None:
        """iopt_table_enforce_dev_resv_regions: a device attaching to a paging domain of this
        IOAS reserves its reserved regions (all of ours are hard reservations; the kernel only
        skips "direct-relaxable" ones). All or nothing (EADDRINUSE)."""
        try:
            for region in regions:
                self.reserve(region.start, region.end, owner)
        except KernelError:
            self.remove_reserved(owner)
            raise

    def _reserved_intersecting(self, start: int, last: int) -> bool:
        return any(r.start <= last and start <= r.last for r in self.reserved)

    def iova_ranges(self) -> list[tuple[int, int]]:
        """The usable IOVA ranges: the holes of the reserved set over [0, 2^64-1], ascending
        (what IOAS_IOVA_RANGES and the compat IOVA_RANGE capability report)."""
        used = _merged((r.start, r.last) for r in self.reserved)
        return list(_holes(used, 0, U64_MAX))

    def set_allowed(self, ranges: list[tuple[int, int]]) -> None:
        """iopt_set_allow_iova: the new list replaces the old unless one of its ranges
        touches a reservation (EADDRINUSE, old list kept). Areas are not checked."""
        for start, last in ranges:
            if self._reserved_intersecting(start, last):
                raise KernelError(errno.EADDRINUSE, f"allowed [{start:#x}, {last:#x}] is reserved")
        self.allowed = sorted(ranges)

    # ---------------------------------------------------------------- accesses
    def add_access(self, access: IoasAccess) -> None:
        """iopt_add_access: the alignment rises to the access's (EADDRINUSE for a misaligned
        area: not added)."""
        self.accesses.append(access)
        try:
            self._recalculate_alignment()
        except KernelError:
            self.accesses.remove(access)
            raise

    def remove_access(self, access: IoasAccess) -> None:
        """iopt_remove_access: the alignment may shrink again."""
        self.accesses.remove(access)
        self._recalculate_alignment()

    # ---------------------------------------------------------------- domains (S3, S4)
    def add_domain(self, domain: Domain) -> None:
        """iopt_table_add_domain: raise the alignment (EINVAL above PAGE_SIZE, EADDRINUSE for a
        misaligned area), reserve what lies outside the aperture (EADDRINUSE), then pin and
        load every area (EFAULT, ENOMEM). Any failure undoes everything."""
        assert domain not in self.domains
        alignment = max(domain.min_page_size, self.iova_alignment)
        if alignment > PAGE_SIZE:
            raise KernelError(errno.EINVAL, f"domain page size {alignment:#x} exceeds PAGE_SIZE")
        if alignment != self.iova_alignment:
            self._check_alignment(alignment)
        try:
            if domain.aperture_start != 0:
                self.reserve(0, domain.aperture_start - 1, domain)
            if domain.aperture_last != U64_MAX:
                self.reserve(domain.aperture_last + 1, U64_MAX, domain)
            self._fill_all(domain)
        except KernelError:
            self.remove_reserved(domain)
            raise
        self.iova_alignment = alignment
        self.domains.append(domain)

    def remove_domain(self, domain: Domain) -> None:
        """iopt_table_remove_domain: the last domain leaving unpins every area; its aperture
        reservations go and the alignment is recomputed (it may shrink)."""
        self.domains.remove(domain)
        if not self.domains:
            for area in self.areas:
                self._unpin_translated(area)
        self.remove_reserved(domain)
        self._recalculate_alignment()

    def _fill_all(self, domain: Domain) -> None:
        """iopt_fill_domain: load every area into a new domain, in IOVA order, pinning the
        ones no domain holds yet; the first failure undoes the areas done before it."""
        done: list[Area] = []
        try:
            for area in self.areas:
                if area.pinned:
                    self._load(area, [domain])
                else:
                    self._pin(area, [domain])
                    done.append(area)
                    if area.pages.keeps(area.index, area.last_index):
                        self._retranslate(area)
        except KernelError:
            for area in done:
                self._unpin_translated(area)
            raise

    def _pin(self, area: Area, domains: list[Domain]) -> None:
        """Pin ``area`` and load it into ``domains`` (iopt_area_fill_domain[s])."""
        area.pages.pin(area.index, area.last_index, self.accounting, lambda: self._load(area, domains))
        area.pinned = True

    def _load(self, area: Area, domains: list[Domain]) -> None:
        """batch_to_domain -> iommu_map: what a domain's page table refuses. With large pages
        disabled at this moment the domains get small IOPTEs only (batch_iommu_map_small), and
        keep them if large pages are enabled later."""
        if not area.prot & (IOMMU_READ | IOMMU_WRITE) and any(d.requires_access for d in domains):
            raise KernelError(errno.EINVAL, f"{area!r}: the IOMMU cannot map a page with neither "
                                            "read nor write permission")
        if self.large_pages_disabled:
            area.small_ioptes.update(domains)
        else:
            area.small_ioptes.difference_update(domains)

    def _translate(self, area: Area) -> None:
        """Enter ``area`` in the translation table: where a pin keeps its shared pages, through
        the kept window (Pages.reach); an area no domain holds is reached through the mapping
        process, so the table never points at a window its own pin does not hold."""
        if area.pinned:
            pieces = area.pages.reach(area.start_byte, area.length)
        else:
            pieces = [(area.pages.source_key, area.vaddr, area.length)]
        iova = area.iova
        for owner, vaddr, length in pieces:
            # IOMMU_READ/IOMMU_WRITE have PROT_READ's and PROT_WRITE's values.
            self.table.map(iova, length, vaddr, area.prot, self.owners.token(owner))
            iova += length

    def _retranslate(self, area: Area) -> None:
        """The pins of an area in the table changed: enter it anew."""
        self.table.unmap(area.iova, area.length)
        self._translate(area)

    def _unpin_translated(self, area: Area) -> None:
        """Unpin an area that stays in the table, re-entering it if it was reached through a
        kept window (which its pin may have been the last to hold)."""
        kept = area.pinned and area.pages.keeps(area.index, area.last_index)
        self._unpin(area)
        if kept:
            self._retranslate(area)

    def _unpin(self, area: Area) -> None:
        if area.pinned:
            area.pages.unpin(area.index, area.last_index, self.accounting)
            area.pinned = False
            area.contiguous = {}   # a later pin may get other physical pages
            area.small_ioptes.clear()

    def enforces_cache_coherency(self) -> bool:
        """Every paging domain enforces coherency (vacuously true without any)."""
        return all(d.enforce_cache_coherency for d in self.domains)

    def vfio_pgsizes(self) -> int:
        """iommufd_get_pagesizes: the page sizes every domain supports (all-ones without a
        domain), sub-page sizes folded into PAGE_SIZE, at least the IOVA alignment."""
        bitmap = U64_MAX
        for domain in self.domains:
            bitmap &= domain.pgsize_bitmap
        if bitmap & (PAGE_SIZE - 1):
            bitmap = (bitmap & ~(PAGE_SIZE - 1)) | PAGE_SIZE
        return max(bitmap, self.iova_alignment)

    # ---------------------------------------------------------------- map (M5-M9, A1-A6)
    def map_user(self, caller: Caller, iova: int | None, uptr: int, length: int, prot: int,
                 *, account_mm: bool) -> int:
        """iopt_map_user_pages: map ``length`` bytes of the caller's memory at ``uptr`` to
        ``iova`` (None: let the allocator choose). Returns the IOVA.

        ``account_mm`` is the context's RLIMIT_MODE (per process when opened as
        /dev/vfio/vfio or after IOMMU_OPTION): a mapper without CAP_IPC_LOCK is charged per
        user otherwise, a mapper with it not at all."""
        if uptr + length > U64_MAX:  # iopt_alloc_user_pages (>= 6.13)
            raise KernelError(errno.EOVERFLOW, f"{uptr:#x} + {length:#x} runs past 2^64")
        if length == 0 or length > U64_MAX - PAGE_SIZE:  # iopt_alloc_pages
            raise KernelError(errno.EINVAL, f"length {length:#x}")
        pages = Pages(caller, uptr, length, bool(prot & IOMMU_WRITE),
                      self._account_mode(caller, account_mm))
        return self.map_pages(pages, uptr % PAGE_SIZE, length, iova, prot, hint=uptr)

    def map_pages(self, pages: Pages, start_byte: int, length: int, iova: int | None,
                  prot: int, *, hint: int) -> int:
        """iopt_map_common: one area of ``pages`` from ``start_byte``. ``hint`` is the address
        the allocator keeps the alignment of (A1)."""
        return self.map_segments([(pages, start_byte, length)], length, iova, prot, hint=hint)

    def map_segments(self, segments: list[tuple[Pages, int, int]], length: int, iova: int | None,
                     prot: int, *, hint: int | None = None) -> int:
        """iopt_map_pages: one new area per (pages, start_byte, length) segment, laid out from
        one IOVA (given, or chosen by the allocator from ``hint``, by default the first
        segment's own address: iopt_alloc_area_pages). Checks in the kernel's order: the total
        length's alignment (EINVAL), the IOVA (EINVAL/EOVERFLOW/EEXIST/ENOSPC), then per
        segment a writable mapping of read-only pages (EPERM) and the segment's page offset
        (EINVAL); then every area is pinned into the domains (EFAULT/ENOMEM/EINVAL), undoing
        the earlier ones on failure. Nothing is left behind on failure."""
        if length & (self.iova_alignment - 1) or not length:
            raise KernelError(errno.EINVAL, f"length {length:#x} is not a multiple of the IOVA "
                                            f"alignment {self.iova_alignment:#x}")
        if iova is None:
            first_pages, first_byte, _ = segments[0]
            iova = self.alloc_iova(hint if hint is not None else first_pages.hint_base + first_byte,
                                   length)
        else:
            self.check_iova(iova, length)
        areas: list[Area] = []
        cursor = iova
        for pages, start_byte, seg_length in segments:
            if prot & IOMMU_WRITE and not pages.writable:
                raise KernelError(errno.EPERM, "writable mapping of read-only pages")
            if (start_byte % PAGE_SIZE) & (self.iova_alignment - 1):
                raise KernelError(errno.EINVAL, f"page offset {start_byte % PAGE_SIZE:#x} is not "
                                                f"{self.iova_alignment:#x}-aligned")
            areas.append(Area(cursor, cursor + seg_length - 1, pages, start_byte, prot))
            cursor += seg_length
        done: list[Area] = []
        try:
            for area in areas:
                if self.domains:
                    self._pin(area, self.domains)
                self._translate(area)
                done.append(area)
        except KernelError:
            if done:
                self.table.unmap(done[0].iova, done[-1].last - done[0].iova + 1)
            for area in done + [areas[len(done)]]:
                self._unpin(area)
            raise
        for area in areas:
            self.areas.insert(area)
            area.pages.users += 1
        return iova

    def map_file(self, caller: Caller, file: CallerFile, iova: int | None, start: int, length: int,
                 prot: int, *, account_mm: bool) -> int:
        """iopt_map_file_pages after fget: ``length`` bytes of ``file`` from offset ``start``.
        Takes over the file reference: it is dropped when the last area of the pages goes, or
        right away if the map fails. Checks: length 0 (EINVAL) and start+length-1 past 2^64
        (EOVERFLOW) before anything else (the ioctl layer checks them before fget), a writable
        mapping of a file not open for writing or sealed against writes (EPERM), the length
        limit of iopt_alloc_pages (EINVAL), then the map itself."""
        writable = bool(prot & IOMMU_WRITE)
        if writable and (not file.writable or file.write_sealed):
            file.close()
            raise KernelError(errno.EPERM, "writable map of a file not open for writing, or sealed")
        if length > U64_MAX - PAGE_SIZE:
            file.close()
            raise KernelError(errno.EINVAL, f"length {length:#x}")
        try:
            pages = FilePages(caller, file, start, length, writable,
                              self._account_mode(caller, account_mm))
        except KernelError:
            file.close()
            raise
        try:
            return self.map_segments([(pages, start % PAGE_SIZE, length)], length, iova, prot)
        except KernelError:
            pages.release()
            raise

    @staticmethod
    def _account_mode(caller: Caller, account_mm: bool) -> AccountMode:
        """iopt_alloc_pages + iopt_map_common: NONE with CAP_IPC_LOCK, else per user, promoted
        to the mm when the context accounts per process."""
        if caller.can_lock_memory():
            return AccountMode.NONE
        return AccountMode.MM if account_mm else AccountMode.USER

    def get_pages(self, iova: int, length: int) -> list[tuple[Pages, int, int]]:
        """iopt_get_pages (IOAS_COPY's source): the (pages, start_byte, length) pieces of the
        areas covering [iova, iova+length-1], which must be covered without a gap from its
        first byte (ENOENT); any byte sub-range of an area is fine. EINVAL for length 0,
        EOVERFLOW past 2^64."""
        if not length:
            raise KernelError(errno.EINVAL, "length 0")
        last = last_byte(iova, length)
        if last is None:
            raise KernelError(errno.EOVERFLOW, f"{iova:#x} + {length:#x} runs past 2^64")
        pieces: list[tuple[Pages, int, int]] = []
        cursor = iova
        for area in self.areas.iter_from(iova):
            if area.iova > cursor:
                break
            end = min(last, area.last)
            pieces.append((area.pages, area.start_byte_at(cursor), end - cursor + 1))
            if end == last:
                return pieces
            cursor = end + 1
        raise KernelError(errno.ENOENT, f"[{iova:#x}, {last:#x}] is not mapped without a gap")

    def check_iova(self, iova: int, length: int) -> None:
        """iopt_check_iova for a FIXED_IOVA map: alignment, overflow, reserved, overlap."""
        if iova & (self.iova_alignment - 1):
            raise KernelError(errno.EINVAL, f"IOVA {iova:#x} is not {self.iova_alignment:#x}-aligned")
        last = last_byte(iova, length)
        if last is None:
            raise KernelError(errno.EOVERFLOW, f"IOVA {iova:#x} + {length:#x} runs past 2^64")
        if self._reserved_intersecting(iova, last):
            raise KernelError(errno.EINVAL, f"[{iova:#x}, {last:#x}] touches a reserved range")
        existing = self.areas.first_overlapping(iova, last)
        if existing is not None:
            raise KernelError(errno.EEXIST, f"[{iova:#x}, {last:#x}] overlaps {existing!r}")

    def alloc_iova(self, addr: int, length: int) -> int:
        """iopt_alloc_iova: the lowest free IOVA, aligned like ``addr`` (or like the length
        when ``addr`` is 0) up to 2 MiB, that keeps ``addr``'s offset in its page. Never 0:
        the search starts at PAGE_SIZE, inside the allowed ranges if any."""
        page_offset = addr % PAGE_SIZE
        if length == 0 or length >= U64_MAX // 2:
            raise KernelError(errno.EOVERFLOW, f"length {length:#x} is too large to place")
        align = 1 << (length - 1).bit_length()
        if addr:
            align = min(align, addr & -addr)
        if align >= HPAGE_SIZE:
            align = HPAGE_SIZE
        if align < self.iova_alignment:
            raise KernelError(errno.EINVAL, f"{addr:#x} allows only {align:#x} alignment, the IOAS "
                                            f"needs {self.iova_alignment:#x}")
        low, high = PAGE_SIZE, U64_MAX - PAGE_SIZE
        if self.allowed:
            windows = [(max(s, low), min(e, high)) for s, e in _merged(self.allowed)
                       if s <= high and e >= low]
        else:
            windows = [(low, high)]
        for window_start, window_last in windows:
            start = _fit(window_start, window_last, length, align, page_offset)
            if start is None:
                continue
            for hole_start, hole_last in _holes(self._used_from(start), start, window_last):
                found = _fit(hole_start, hole_last, length, align, page_offset)
                if found is not None:
                    return found
        raise KernelError(errno.ENOSPC, f"no free {length:#x}-byte IOVA range")

    def _used_from(self, start: int) -> Iterator[tuple[int, int]]:
        """Reserved ranges and areas from ``start`` up, merged into one ascending stream."""
        reserved = sorted((r.start, r.last) for r in self.reserved if r.last >= start)
        areas = ((a.iova, a.last) for a in self.areas.iter_from(start))
        return heapq.merge(reserved, areas)

    # ---------------------------------------------------------------- unmap (U3-U7)
    def unmap_iova(self, iova: int, length: int) -> int:
        """iopt_unmap_iova: remove the areas inside [iova, iova+length-1]; returns the bytes
        removed (0 when nothing was mapped there: success since the late-2025 change)."""
        if not length:
            raise UnmapError(errno.EINVAL, "length 0", 0)
        last = last_byte(iova, length)
        if last is None:
            raise UnmapError(errno.EOVERFLOW, f"{iova:#x} + {length:#x} runs past 2^64", 0)
        return self._unmap_range(iova, last)

    def unmap_all(self) -> int:
        """iopt_unmap_all: everything; succeeds on an empty IOAS."""
        return self._unmap_range(0, U64_MAX)

    def _unmap_range(self, start: int, last: int) -> int:
        """iopt_unmap_iova_range: ascending, each intersecting area in turn must not be locked
        (EBUSY) and must lie wholly inside (ENOENT); areas removed before a failure stay
        removed. The removable areas are consecutive, so the removal is one block delete."""
        doomed = self.areas.overlapping(start, last)
        failure: UnmapError | None = None
        for index, area in enumerate(doomed):
            if any(access.locks(area.iova, area.last) for access in self.accesses):
                failure = UnmapError(errno.EBUSY, f"{area!r} is locked by a HW queue", 0)
            elif area.iova < start or area.last > last:
                failure = UnmapError(errno.ENOENT, f"{area!r} is not wholly inside "
                                                   f"[{start:#x}, {last:#x}]", 0)
            if failure is not None:
                del doomed[index:]
                break
        if self.accesses:  # the accesses drop their pins first (area->num_accesses)
            for area in doomed:
                for access in list(self.accesses):
                    access.unmap(area.iova, area.last)
        if doomed:
            self.areas.remove_run(doomed[0], len(doomed))
            # The run is consecutive: one table call removes exactly its areas.
            self.table.unmap(doomed[0].iova, doomed[-1].last - doomed[0].iova + 1)
        unmapped = 0
        for area in doomed:
            self._unpin(area)
            unmapped += area.length
            area.pages.users -= 1
            if not area.pages.users:
                area.pages.release()
        if failure is not None:
            failure.unmapped = unmapped
            raise failure
        return unmapped

    # ---------------------------------------------------------------- type1 v1 emulation
    def cut(self, iovas: list[int]) -> None:
        """iopt_cut_iova: split the area containing each IOVA so that the IOVA becomes an
        area's last byte. Stops at the first failure; earlier cuts persist."""
        for iova in iovas:
            area = self.areas.first_overlapping(iova, iova)
            if area is not None:
                self._split(area, iova)

    def _split(self, area: Area, iova: int) -> None:
        """iopt_area_split: both halves keep the same pages; nothing is re-pinned."""
        if iova in (area.iova, area.last):
            return
        new_start = iova + 1
        mask = self.iova_alignment - 1
        if new_start & mask or area.start_byte_at(new_start) & mask:
            raise KernelError(errno.EINVAL, f"cannot cut {area!r} at {new_start:#x}: misaligned")
        if area.pinned and not self.large_pages_disabled:
            raise KernelError(errno.EINVAL, f"{area!r} may be mapped with large IOPTEs")
        lhs = Area(area.iova, iova, area.pages, area.start_byte, area.prot)
        rhs = Area(new_start, area.last, area.pages, area.start_byte_at(new_start), area.prot)
        if area.pinned:
            area.pages.repin((area.index, area.last_index),
                             [(lhs.index, lhs.last_index), (rhs.index, rhs.last_index)])
            lhs.pinned = rhs.pinned = True
            lhs.small_ioptes, rhs.small_ioptes = set(area.small_ioptes), set(area.small_ioptes)
        self.areas.replace(area, [lhs, rhs])
        area.pages.users += 1

    # ---------------------------------------------------------------- dirty tracking
    # The IOAS's translation table is the one place dirty bits live: device writes mark it
    # (devices/dma.py), the HWPT ioctls read it through these. Its dirty bits count
    # DIRTY_GRANULE units; a domain reads them per IOPTE of its smallest page (VT-d: 4 KiB, the
    # selftest's mock: 2 KiB): an IOPTE is dirty when any byte of it was written. Tracking needs
    # a domain, and with a domain every area is aligned to its pages, as the table requires.

    def start_dirty_tracking(self) -> None:
        """Tracking on, every page clean (also when it was on: iopt_set_dirty_tracking clears
        all recorded state before enabling)."""
        if self.table.dirty_tracking:
            for area in self.areas:
                self._read_dirty_ioptes(area.iova, area.last, clear=True, granule=PAGE_SIZE)
        else:
            self.table.start_dirty_tracking()

    def stop_dirty_tracking(self) -> None:
        self.table.stop_dirty_tracking()

    def read_dirty(self, iova: int, last: int, *, clear: bool,
                   domain: Domain | None = None) -> list[tuple[int, int]]:
        """The dirty IOPTEs of ``domain`` (without one: PAGE_SIZE units) in the areas covering
        [iova, last] without a gap from ``iova`` (__iommu_read_and_clear_dirty walks contiguous
        areas and stops at the first hole), as (IOVA, size), ascending; their dirty state is
        cleared unless ``clear`` is false (IOMMU_DIRTY_NO_CLEAR). An IOPTE is whole: one written
        byte dirties all of a large one, and reading clears all of it. Nothing when tracking
        is off (the driver refuses the walk and the refusal is ignored)."""
        if not self.table.dirty_tracking:
            return []
        dirty: list[tuple[int, int]] = []
        cursor = iova
        for area in self.areas.iter_from(iova):
            if area.iova > cursor:
                break
            end = min(last, area.last)
            if domain is None:
                dirty.extend(self._read_dirty_ioptes(cursor, end, clear=clear, granule=PAGE_SIZE))
            else:
                dirty.extend(self._read_dirty_ioptes(cursor, end, clear=clear,
                                                     granule=domain.min_page_size,
                                                     large=self.large_ioptes(area, domain)))
            if end >= last:
                break
            cursor = end + 1
        return dirty

    def _read_dirty_ioptes(self, start: int, last: int, *, clear: bool, granule: int,
                           large: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
        """The dirty IOPTEs (IOVA, size; ascending) over one mapped run [start, last]: the
        ``large`` ones (ascending, disjoint) where they are, ``granule``-sized ones between,
        each widened to the whole IOPTE."""
        pieces: list[tuple[int, int, int]] = []   # [lo, hi) read in IOPTEs of a size
        cursor = start - start % granule
        for block, size in large:
            if block + size <= start or block > last:
                continue
            if cursor < block:
                pieces.append((cursor, block, granule))
            pieces.append((block, block + size, size))
            cursor = block + size
        end = last - last % granule + granule
        if cursor < end:
            pieces.append((cursor, end, granule))
        dirty: list[tuple[int, int]] = []
        for lo, hi, size in pieces:
            bits = int.from_bytes(self.table.read_dirty(lo, hi - lo, clear=clear), "little")
            units = size // DIRTY_GRANULE
            while bits:
                unit = (bits & -bits).bit_length() - 1
                dirty.append((lo + unit // units * size, size))
                bits &= ~(((1 << units) - 1) << (unit - unit % units))   # the rest of that IOPTE
        return dirty

    def large_ioptes(self, area: Area, domain: Domain) -> list[tuple[int, int]]:
        """The IOPTEs larger than its smallest page that ``domain`` holds for ``area``, as
        (IOVA, size), ascending. iommu_map picks, at each IOVA, the largest of the domain's
        page sizes to which the IOVA and the physical address are both aligned and that the
        physically contiguous run still covers (iommu_pgsize); so a large IOPTE needs a block
        of the area whose pinned pages are contiguous from an aligned frame (hugetlb or THP
        memory). None in a domain that loaded the area while large pages were disabled
        (batch_iommu_map_small), and none for a file's pages (their window is the daemon's,
        whose frames we do not ask for)."""
        if domain in area.small_ioptes or area.pages.is_file:
            return []
        sizes = [1 << bit for bit in range(domain.pgsize_bitmap.bit_length() - 1, -1, -1)
                 if domain.pgsize_bitmap >> bit & 1 and 1 << bit > domain.min_page_size]
        chosen: dict[int, set[int]] = {}   # per size, the IOVAs of its IOPTEs
        for size in sizes:
            first = area.iova + (-area.iova) % size
            count = (area.last + 1 - first) // size
            if count <= 0:
                continue
            if size not in area.contiguous:
                area.contiguous[size] = self._contiguous_blocks(area, first, count, size)
            blocks = chosen.setdefault(size, set())
            for vaddr in area.contiguous[size]:
                block = area.iova + (vaddr - area.vaddr)
                # Inside a larger IOPTE already (sizes are powers of two, blocks aligned)?
                if not any(block - block % larger in chosen[larger] for larger in chosen
                           if larger > size):
                    blocks.add(block)
        return sorted((block, size) for size, blocks in chosen.items() for block in blocks)

    @staticmethod
    def _contiguous_blocks(area: Area, first: int, count: int, size: int) -> list[int]:
        """The user addresses of the ``count`` size-blocks from IOVA ``first`` that the mapping
        process backs contiguously (none once it has gone: its pages were pinned, but which
        frames they were is no longer ours to ask)."""
        try:
            return area.pages.source.contiguous_blocks(area.vaddr + (first - area.iova), count, size)
        except KernelError:
            return []

    # ---------------------------------------------------------------- lifetime
    def destroy(self) -> None:
        """iommufd_ioas_destroy: unmap (unpin, uncharge) everything, forget the allowed list.
        Domains and their reservations are gone already (their HWPTs held the IOAS)."""
        self.unmap_all()
        self.allowed = []
        self.reserved = []

    def pinned_pages(self) -> int:
        """Pages pinned for this IOAS's areas (each Pages object counted once)."""
        seen: dict[int, Pages] = {id(a.pages): a.pages for a in self.areas}
        return sum(p.npinned for p in seen.values())


# ------------------------------------------------------------------------------ change process

_CHARGE_ORDER = (AccountMode.USER, AccountMode.MM)
"""charge_current's order: the account modes by value (NONE = 0 is never charged)."""


def change_process(ioases: Iterable[Ioas], caller: Caller, accounting: Accounting) -> None:
    """ioas.c:iommufd_ioas_change_process after the __reserved check, over every IOAS of the
    context (``ioases``, in object id order):

    1. every area must be backed by a file (IOAS_MAP_FILE), else EINVAL and nothing changes
       -- also when the caller is the process that mapped them;
    2. the pins of every Pages object whose charge must move (need_charge_update: accounted,
       and the caller's mm -- or, per user, its user or mm -- differs) are added up per account
       mode, each Pages object once;
    3. charge_current: the sums are charged to the caller -- its user's counter or its mm's
       locked_vm, against *its* RLIMIT_MEMLOCK -- user mode first; a failure (ENOMEM) undoes
       the modes charged before it and nothing changes. The new charge comes before the old one
       is given back, so moving to another process of the same user needs room for both;
    4. the old owners are uncharged and every Pages object (charged or not) now belongs to the
       caller (change_mm): later pins are charged to it and checked against its limit. In MM
       mode the old mm must still have users: if the mapping process has exited its uncharge
       fails, the ioctl says EINVAL, yet the move is done and those pages' last_npinned stays 0
       (later unpins do not uncharge them, the next pin charges them all again).

    The translation of a file area is the daemon's window onto the file, whoever owns the
    pages, so DMA is unaffected."""
    ioases = list(ioases)
    for ioas in ioases:
        for area in ioas.areas:
            if not area.pages.is_file:
                raise KernelError(errno.EINVAL, f"{area!r} is not backed by a file (IOAS_MAP_FILE)")
    seen: set[int] = set()
    moving: list[Pages] = []
    for ioas in ioases:
        for area in ioas.areas:
            pages = area.pages
            if id(pages) not in seen:
                seen.add(id(pages))
                moving.append(pages)
    key, uid = caller.process_key(), caller.uid()
    totals = {mode: sum(p.last_npinned for p in moving
                        if p.mode is mode and p.needs_charge_update(caller))
              for mode in _CHARGE_ORDER}
    charged: list[AccountMode] = []
    try:
        for mode in _CHARGE_ORDER:
            _charge_to(caller, mode, uid, key, totals[mode], accounting)
            charged.append(mode)
    except KernelError:
        for mode in reversed(charged):
            _uncharge_from(mode, uid, key, totals[mode], accounting)
        for pages in moving:  # "fix last_npinned and bail": every Pages object, as counted
            pages.last_npinned = pages.npinned
        raise
    failed = False
    for pages in moving:
        if pages.needs_charge_update(caller):
            pages.last_npinned = 0  # counted into the new owner's charge above
            if not pages.uncharge_old(accounting):
                failed = True
        pages.change_mm(caller)
    if failed:
        raise KernelError(errno.EINVAL, "the old mm has no users left: its pins were not uncharged "
                                        "(the charges and the pages moved all the same)")
