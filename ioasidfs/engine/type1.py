"""The VFIO container (drivers/vfio/container.c) with the type1 IOMMU backend
(drivers/vfio/vfio_iommu_type1.c).

A container starts empty: no groups, no IOMMU driver. Groups join it (VFIO_GROUP_SET_CONTAINER);
VFIO_SET_IOMMU then opens a backend instance and attaches every group. Until then the container
answers only its three own ioctls and fails everything else with EINVAL; afterwards unknown
commands reach the backend, which says ENOTTY. When the last group leaves, the backend instance
is destroyed with all its state and the container is empty again.

The backend answers VFIO_IOMMU_GET_INFO, MAP_DMA, UNMAP_DMA and DIRTY_PAGES with every check in
vfio_iommu_type1.c's order, because when two checks fail at once the kernel's first one is what
a program sees. Mappings live in ``mappings.py``, the pages they charge against RLIMIT_MEMLOCK
in the engine-wide ``locked.py`` ledger, dirty bitmaps in ``dirty.py``.
"""
from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

from ..config import IommuConfig
from ..errors import KernelError
from ..uapi import vfio as V
from .argsz import copy_in, copy_out, int_field, read_argsz_struct
from .caller import Caller, PinScan, ProcessKey
from .capchain import CapChain
from .dirty import (DIRTY_BITMAP_PAGES_MAX, DIRTY_BITMAP_SIZE_MAX, access_ok, clear_reported,
                    lowest_bit_shift, pages_in, update_user_bitmap, verify_bitmap_size)
from .files import FileKind, OpenFile
from .locked import LockedMemory
from .kept import keep_shared, reach
from .mappings import DmaMapping, MappingStore
from .translate import OwnerRegistry, TranslationTable, new_table

if TYPE_CHECKING:
    from .group import Group

log = logging.getLogger("ioasidfs.engine")

# The IOMMU drivers a kernel registers, in registration order: type1, then vfio-noiommu
# (CONFIG_VFIO_NOIOMMU, whose noiommu module option is off, so it never says yes).
_TYPE1_TYPES = (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU)


_U64_LIMIT = 1 << 64
_MAP_FLAGS = V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE | V.VFIO_DMA_MAP_FLAG_VADDR
_PROT_FLAGS = V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE
_UNMAP_FLAGS = (V.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | V.VFIO_DMA_UNMAP_FLAG_ALL
                | V.VFIO_DMA_UNMAP_FLAG_VADDR)
_DIRTY_FLAGS = (V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START | V.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP
                | V.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)
_INFO_MINSZ = V.TYPE1_INFO.field_end("iova_pgsizes")
_MAP_MINSZ = V.DMA_MAP.field_end("size")
_UNMAP_MINSZ = V.DMA_UNMAP.field_end("size")
_DIRTY_MINSZ = V.DIRTY_BITMAP.field_end("flags")


class Type1Iommu:
    """One opened type1 backend instance (``struct vfio_iommu``).

    Every group of the container shares one IOMMU domain (same driver, same cache coherency),
    so the geometry -- page sizes, valid IOVA ranges -- is the configuration's, and a later
    group joins that domain without replaying anything. The mappings and their accounting
    live until the instance is released, which the container does when its last group leaves.

    ``table`` is what the IOMMU consults on a device access (``ioasidfs.devices.dma``): one
    entry per mapping, kept in step with ``mappings`` (map, unmap, release, UPDATE_VADDR), its
    owner token taken from the engine-wide ``owners``. Each change is one O(log n) table call.
    """

    def __init__(self, iommu: IommuConfig, v2: bool, locked: LockedMemory,
                 owners: OwnerRegistry | None = None) -> None:
        self.config = iommu
        self.v2 = v2
        self.locked = locked
        self.owners = owners if owners is not None else OwnerRegistry()
        self.dma_avail = iommu.dma_entry_limit
        self.groups: list[Group] = []
        self.mappings = MappingStore()
        self.pgsize_bitmap = iommu.pgsize_bitmap
        self.pgshift = lowest_bit_shift(self.pgsize_bitmap)
        self.pgsize = 1 << self.pgshift
        self.iova_ranges = iommu.iova_ranges()
        self.vaddr_invalid_count = 0
        self.dirty_tracking = False
        self.table: TranslationTable = new_table(self.pgsize)

    def check_extension(self, arg: int) -> int:
        return type1_check_extension(self, arg)

    def attach_group(self, group: Group) -> None:
        """vfio_iommu_type1_attach_group for a group joining the existing domain."""
        if self.vaddr_invalid_count:
            # Attaching could need pinning, impossible while a vaddr is invalid (>= 6.3; 6.2
            # and older blocked until the vaddr came back).
            raise KernelError(errno.EBUSY, f"group {group.id}: {self.vaddr_invalid_count} "
                                           "mapping(s) wait for VFIO_DMA_MAP_FLAG_VADDR")
        if group in self.groups:
            raise KernelError(errno.EINVAL, f"group {group.id} is already attached")
        self.groups.append(group)

    def detach_group(self, group: Group) -> None:
        self.groups.remove(group)

    @property
    def all_pages_dirty(self) -> bool:
        """update_user_bitmap's "num_non_pinned_groups && iommu_mapped": some attached group
        may DMA anywhere unseen (dirty scope "all"), so every mapped page counts as dirty.
        Every mapping is IOMMU-mapped here: all our groups have a real IOMMU domain."""
        return any(group.dirty_scope == "all" for group in self.groups)

    def _gather_dirty(self, mapping: DmaMapping) -> None:
        """Move the pages devices wrote (or hold pinned) since the last report from the
        translation table into the mapping's bitmap (vfio_dma_rw's and vfio_pin_pages' bits);
        the table keeps only the still-pinned ones (vfio_dma_populate_bitmap)."""
        assert mapping.dirty_bitmap is not None
        written = self.table.read_dirty(mapping.iova, mapping.size, clear=True)
        mapping.dirty_bitmap |= int.from_bytes(written, "little")

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        """vfio_iommu_type1_ioctl."""
        if cmd == V.VFIO_CHECK_EXTENSION:
            return self.check_extension(arg)
        if cmd == V.VFIO_IOMMU_GET_INFO:
            return self.get_info(caller, arg)
        if cmd == V.VFIO_IOMMU_MAP_DMA:
            return self.map_dma(caller, arg)
        if cmd == V.VFIO_IOMMU_UNMAP_DMA:
            return self.unmap_dma(caller, arg)
        if cmd == V.VFIO_IOMMU_DIRTY_PAGES:
            return self.dirty_pages(caller, arg)
        raise KernelError(errno.ENOTTY, f"type1 has no ioctl {cmd:#x}")

    def release(self) -> None:
        """The backend instance is destroyed: every mapping goes with it, unpinned and
        uncharged (vfio_iommu_unmap_unpin_all)."""
        for mapping in self.mappings:
            self._remove(mapping)

    # ------------------------------------------------------------------ GET_INFO
    def info_caps(self) -> CapChain:
        """The capabilities of VFIO_IOMMU_GET_INFO, in the kernel's order."""
        caps = CapChain()
        caps.add(V.CAP_MIGRATION.pack(
            id=V.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, version=1, flags=0,
            pgsize_bitmap=self.pgsize, max_dirty_bitmap_size=DIRTY_BITMAP_SIZE_MAX))
        caps.add(V.CAP_DMA_AVAIL.pack(id=V.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version=1,
                                      avail=self.dma_avail))
        if self.iova_ranges:  # empty only for a container of emulated-IOMMU (mdev) groups
            caps.add(V.CAP_IOVA_RANGE.pack(id=V.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, version=1,
                                           nr_iovas=len(self.iova_ranges))
                     + b"".join(V.IOVA_RANGE.pack(start=start, end=end)
                                for start, end in self.iova_ranges))
        return caps

    def get_info(self, caller: Caller, arg: int) -> int:
        """vfio_iommu_type1_get_info: a too-small buffer succeeds with ``argsz`` grown."""
        _, fields = read_argsz_struct(caller, arg, V.TYPE1_INFO, _INFO_MINSZ, "VFIO_IOMMU_GET_INFO")
        argsz = fields["argsz"]
        assert isinstance(argsz, int)
        write_back = min(argsz, V.TYPE1_INFO.size)  # decided before argsz may grow
        flags = V.VFIO_IOMMU_INFO_PGSIZES
        cap_offset = 0
        caps = self.info_caps()
        if len(caps):
            flags |= V.VFIO_IOMMU_INFO_CAPS
            if argsz < V.TYPE1_INFO.size + len(caps):
                argsz = V.TYPE1_INFO.size + len(caps)
            else:
                copy_out(caller, arg + V.TYPE1_INFO.size, caps.build(V.TYPE1_INFO.size))
                cap_offset = V.TYPE1_INFO.size
        info = V.TYPE1_INFO.pack(argsz=argsz, flags=flags, iova_pgsizes=self.pgsize_bitmap,
                                 cap_offset=cap_offset)
        copy_out(caller, arg, info[:write_back])
        return 0

    # ------------------------------------------------------------------ MAP_DMA
    def map_dma(self, caller: Caller, arg: int) -> int:
        """vfio_iommu_type1_map_dma + vfio_dma_do_map. Nothing is ever written back."""
        _, fields = read_argsz_struct(caller, arg, V.DMA_MAP, _MAP_MINSZ, "VFIO_IOMMU_MAP_DMA")
        flags, vaddr, iova, size = (int_field(fields, name) for name in ("flags", "vaddr", "iova", "size"))
        if flags & ~_MAP_FLAGS:
            raise KernelError(errno.EINVAL, f"MAP_DMA: unknown flags {flags & ~_MAP_FLAGS:#x}")
        # Since 6.18 ("vfio: handle DMA map/unmap up to the addressable limit") size 0 and
        # overflow are checked before anything else, overflow with EOVERFLOW (EINVAL before).
        if not size:
            raise KernelError(errno.EINVAL, "MAP_DMA: size 0")
        if _last_byte(iova, size) is None or _last_byte(vaddr, size) is None:
            raise KernelError(errno.EOVERFLOW, "MAP_DMA: the range runs past 2^64")
        prot = flags & _PROT_FLAGS
        set_vaddr = bool(flags & V.VFIO_DMA_MAP_FLAG_VADDR)
        if bool(prot) == set_vaddr:
            raise KernelError(errno.EINVAL, "MAP_DMA: VADDR takes no READ/WRITE; a mapping needs one")
        if (size | iova | vaddr) & (self.pgsize - 1):
            raise KernelError(errno.EINVAL, f"MAP_DMA: iova {iova:#x}, vaddr {vaddr:#x}, size "
                                            f"{size:#x} must be multiples of {self.pgsize:#x}")
        existing = self.mappings.find_overlapping(iova, size)
        if set_vaddr:
            return self._update_vaddr(caller, existing, iova, size, vaddr)
        if existing is not None:
            raise KernelError(errno.EEXIST, f"MAP_DMA: [{iova:#x}, {iova + size:#x}) overlaps "
                                            f"[{existing.iova:#x}, {existing.end:#x})")
        if not self.dma_avail:
            raise KernelError(errno.ENOSPC, f"MAP_DMA: {self.config.dma_entry_limit} mappings "
                                            "exist (dma_entry_limit)")
        if not self._in_one_iova_range(iova, iova + size - 1):
            raise KernelError(errno.EINVAL, f"MAP_DMA: [{iova:#x}, {iova + size:#x}) is not inside "
                                            "one valid IOVA range")
        owner, scan = self._pin(caller, vaddr, size, write=bool(prot & V.VFIO_DMA_MAP_FLAG_WRITE))
        charged = scan.charged_pages
        if self.dirty_tracking and size >> self.pgshift > DIRTY_BITMAP_PAGES_MAX:
            self.locked.uncharge(owner, charged)
            raise KernelError(errno.EINVAL, "MAP_DMA: too many pages to track dirty pages of")
        mapping = DmaMapping(iova, size, vaddr, prot, owner, charged,
                             kept=keep_shared(caller, vaddr, vaddr + size) if scan.shared else [])
        if self.dirty_tracking:
            mapping.dirty_bitmap = 0
        try:
            self._translate(mapping)
        except KernelError:
            self.table.unmap(iova, size)
            self._release_kept(mapping)
            self.locked.uncharge(owner, charged)
            raise
        self.mappings.insert(mapping)
        self.dma_avail -= 1
        return 0

    def _in_one_iova_range(self, first: int, last: int) -> bool:
        """vfio_iommu_iova_dma_valid: the whole mapping inside a single valid range."""
        return any(start <= first and last <= end for start, end in self.iova_ranges) \
            or not self.iova_ranges

    def _pin(self, caller: Caller, vaddr: int, size: int, write: bool) -> tuple[ProcessKey, PinScan]:
        """vfio_pin_map_dma, as far as it shows: pages are pinned and charged in address order,
        so RLIMIT_MEMLOCK (ENOMEM) wins over an unpinnable page (EFAULT) only when the limit is
        crossed before that page. On failure nothing stays charged."""
        scan = caller.check_user_range(vaddr, size, write)
        owner = self.locked.charge(caller, scan.charged_pages)
        if scan.fault is not None:
            self.locked.uncharge(owner, scan.charged_pages)
            raise KernelError(scan.fault, f"MAP_DMA: cannot pin {size:#x} bytes at {vaddr:#x}"
                                          f"{' for writing' if write else ''}")
        return owner, scan

    def _update_vaddr(self, caller: Caller, mapping: DmaMapping | None, iova: int, size: int,
                      vaddr: int) -> int:
        """MAP_DMA with VADDR: give an invalidated mapping its new vaddr. Nothing is pinned or
        checked at the new address; the charge moves to the caller if it is another process
        (vfio_change_dma_owner, >= 6.3)."""
        if mapping is None:
            raise KernelError(errno.ENOENT, f"MAP_DMA(VADDR): no mapping at {iova:#x}")
        if not mapping.vaddr_invalid or mapping.iova != iova or mapping.size != size:
            raise KernelError(errno.EINVAL, "MAP_DMA(VADDR): needs exactly one mapping, "
                                            "with its vaddr invalidated")
        new_owner = caller.process_key()
        if new_owner != mapping.owner:
            self.locked.charge(caller, mapping.locked_pages)
            self.locked.uncharge(mapping.owner, mapping.locked_pages)
            mapping.owner = new_owner
        # While the vaddr was invalid, devices kept reaching the old pages (the kernel keeps
        # them pinned and mapped): the entry changes only now, to the new vaddr and owner.
        if self.dirty_tracking:
            self._gather_dirty(mapping)  # what devices wrote survives the new entry
        self.table.unmap(mapping.iova, mapping.size)
        for kept in mapping.kept:  # still the pages pinned at MAP_DMA
            kept.rebase(vaddr - mapping.vaddr)
        mapping.vaddr = vaddr
        self._translate(mapping)
        mapping.vaddr_invalid = False
        self.vaddr_invalid_count -= 1
        return 0

    # ------------------------------------------------------------------ UNMAP_DMA
    def unmap_dma(self, caller: Caller, arg: int) -> int:
        """vfio_iommu_type1_unmap_dma + vfio_dma_do_unmap. On success the 24-byte header is
        written back with ``size`` = bytes unmapped (or invalidated); on failure nothing."""
        raw, fields = read_argsz_struct(caller, arg, V.DMA_UNMAP, _UNMAP_MINSZ, "VFIO_IOMMU_UNMAP_DMA")
        argsz, flags, iova, size = (int_field(fields, name) for name in ("argsz", "flags", "iova", "size"))
        if flags & ~_UNMAP_FLAGS:
            raise KernelError(errno.EINVAL, f"UNMAP_DMA: unknown flags {flags & ~_UNMAP_FLAGS:#x}")
        get_bitmap = bool(flags & V.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)
        unmap_all = bool(flags & V.VFIO_DMA_UNMAP_FLAG_ALL)
        invalidate_vaddr = bool(flags & V.VFIO_DMA_UNMAP_FLAG_VADDR)
        if get_bitmap and (unmap_all or invalidate_vaddr):
            raise KernelError(errno.EINVAL, "UNMAP_DMA: GET_DIRTY_BITMAP excludes ALL and VADDR")
        bitmap_pgsize = bitmap_data = 0
        if get_bitmap:
            if argsz < _UNMAP_MINSZ + V.BITMAP.size:
                raise KernelError(errno.EINVAL, f"UNMAP_DMA: argsz {argsz} has no room for the bitmap")
            bitmap = V.BITMAP.unpack(copy_in(caller, arg + _UNMAP_MINSZ, V.BITMAP.size))
            bitmap_pgsize, bitmap_size, bitmap_data = (int_field(bitmap, n) for n in ("pgsize", "size", "data"))
            if not access_ok(bitmap_data, bitmap_size):
                raise KernelError(errno.EINVAL, "UNMAP_DMA: the bitmap is not user memory")
            verify_bitmap_size(pages_in(size, bitmap_pgsize), bitmap_size)
        if iova & (self.pgsize - 1):
            raise KernelError(errno.EINVAL, f"UNMAP_DMA: iova {iova:#x} is not page aligned")
        if unmap_all:
            if iova or size:
                raise KernelError(errno.EINVAL, "UNMAP_DMA(ALL): iova and size must be 0")
            last = _U64_LIMIT - 1
        else:
            if not size or size & (self.pgsize - 1):
                raise KernelError(errno.EINVAL, f"UNMAP_DMA: bad size {size:#x}")
            last_byte = _last_byte(iova, size)
            if last_byte is None:
                raise KernelError(errno.EOVERFLOW, "UNMAP_DMA: the range runs past 2^64")
            last = last_byte
        if get_bitmap and (not self.dirty_tracking or bitmap_pgsize != self.pgsize):
            raise KernelError(errno.EINVAL, "UNMAP_DMA: dirty tracking is off or the bitmap's "
                                            "page size is not the IOMMU's smallest")
        if self.v2 and not unmap_all:
            self._refuse_bisection(iova, last, "UNMAP_DMA")
        unmapped = 0
        candidates = self.mappings.iterate(iova, last + 1)
        for index, mapping in enumerate(candidates):
            if not self.v2 and iova > mapping.iova:
                break  # v1: a request starting inside a mapping unmaps nothing from there on
            if invalidate_vaddr:
                if mapping.vaddr_invalid:
                    for marked in candidates[:index]:
                        marked.vaddr_invalid = False
                    self.vaddr_invalid_count -= index
                    raise KernelError(errno.EINVAL, f"UNMAP_DMA(VADDR): the vaddr of "
                                                    f"{mapping.iova:#x} is already invalid")
                mapping.vaddr_invalid = True
                self.vaddr_invalid_count += 1
                unmapped += mapping.size
                continue
            if get_bitmap:
                self._gather_dirty(mapping)
                update_user_bitmap(caller, bitmap_data, mapping, iova, self.pgshift,
                                   all_dirty=self.all_pages_dirty)
            unmapped += mapping.size
            self._remove(mapping)
        V.DMA_UNMAP.write_fields(raw, size=unmapped)
        copy_out(caller, arg, bytes(raw))
        return 0

    def _refuse_bisection(self, iova: int, last: int, what: str) -> None:
        """v2: the range [iova, last] may cover mappings whole, never cut one (EINVAL)."""
        first = self.mappings.find_overlapping(iova, 1)
        if first is not None and first.iova != iova:
            raise KernelError(errno.EINVAL, f"{what}: {iova:#x} is inside [{first.iova:#x}, "
                                            f"{first.end:#x})")
        final = self.mappings.find_overlapping(last, 1)
        if final is not None and final.end != last + 1:
            raise KernelError(errno.EINVAL, f"{what}: {last + 1:#x} is inside [{final.iova:#x}, "
                                            f"{final.end:#x})")

    def _translate(self, mapping: DmaMapping) -> None:
        """Enter ``mapping`` in the table: through the windows its pin keeps of shared memory
        (``kept.py``: reached after the mapper has gone, as the kernel's pinned pages are),
        through the owner's address space elsewhere."""
        iova = mapping.iova
        for owner, vaddr, length in reach(mapping.kept, mapping.owner, mapping.vaddr, mapping.size):
            # READ/WRITE have PROT_READ's and PROT_WRITE's values.
            self.table.map(iova, length, vaddr, mapping.prot, self.owners.token(owner))
            iova += length

    @staticmethod
    def _release_kept(mapping: DmaMapping) -> None:
        """The pin goes: so do its references on shared memory (after the table let go)."""
        for kept in mapping.kept:
            kept.release()
        mapping.kept = []

    def _remove(self, mapping: DmaMapping) -> None:
        """vfio_remove_dma: unmap, unpin, give the charge back to the owner, free the slot."""
        self.mappings.remove(mapping)
        self.table.unmap(mapping.iova, mapping.size)
        self._release_kept(mapping)
        self.locked.uncharge(mapping.owner, mapping.locked_pages)
        if mapping.vaddr_invalid:
            self.vaddr_invalid_count -= 1
        self.dma_avail += 1

    # ------------------------------------------------------------------ DIRTY_PAGES
    def dirty_pages(self, caller: Caller, arg: int) -> int:
        """vfio_iommu_type1_dirty_pages: v2 only; exactly one of START, STOP, GET_BITMAP."""
        if not self.v2:
            raise KernelError(errno.EACCES, "DIRTY_PAGES needs a TYPE1v2 container")
        _, fields = read_argsz_struct(caller, arg, V.DIRTY_BITMAP, _DIRTY_MINSZ, "VFIO_IOMMU_DIRTY_PAGES")
        argsz, flags = int_field(fields, "argsz"), int_field(fields, "flags")
        if flags & ~_DIRTY_FLAGS or flags & (flags - 1):
            raise KernelError(errno.EINVAL, f"DIRTY_PAGES: flags {flags:#x} are not one known flag")
        if flags == V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START:
            self._start_dirty_tracking()
            return 0
        if flags == V.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP:
            self.dirty_tracking = False
            self.table.stop_dirty_tracking()
            for mapping in self.mappings:
                mapping.dirty_bitmap = None
            return 0
        if flags == V.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP:
            return self._get_dirty_bitmap(caller, arg, argsz)
        raise KernelError(errno.EINVAL, "DIRTY_PAGES: no flag")

    def _start_dirty_tracking(self) -> None:
        """Give every mapping an empty bitmap; a mapping too large to track fails it (EINVAL)."""
        if self.dirty_tracking:
            return
        mappings = list(self.mappings)
        if any(m.size >> self.pgshift > DIRTY_BITMAP_PAGES_MAX for m in mappings):
            raise KernelError(errno.EINVAL, "DIRTY_PAGES(START): a mapping has too many pages")
        for mapping in mappings:
            mapping.dirty_bitmap = 0
        self.table.start_dirty_tracking()
        self.dirty_tracking = True

    def _get_dirty_bitmap(self, caller: Caller, arg: int, argsz: int) -> int:
        """GET_BITMAP: report the mappings inside [iova, iova+size) into the user's bitmap.
        Nothing is written into the ioctl's own struct."""
        if argsz - _DIRTY_MINSZ < V.DIRTY_BITMAP_GET.size:
            raise KernelError(errno.EINVAL, f"DIRTY_PAGES(GET_BITMAP): argsz {argsz} is too small")
        request = V.DIRTY_BITMAP_GET.unpack(copy_in(caller, arg + _DIRTY_MINSZ, V.DIRTY_BITMAP_GET.size))
        iova, size, pgsize, bitmap_size, bitmap_data = (
            int_field(request, n) for n in ("iova", "size", "bitmap_pgsize", "bitmap_size", "bitmap_data"))
        if not size:
            raise KernelError(errno.EINVAL, "DIRTY_PAGES(GET_BITMAP): size 0")
        last = _last_byte(iova, size)
        if last is None:
            raise KernelError(errno.EOVERFLOW, "DIRTY_PAGES(GET_BITMAP): the range runs past 2^64")
        if not access_ok(bitmap_data, bitmap_size):
            raise KernelError(errno.EINVAL, "DIRTY_PAGES(GET_BITMAP): the bitmap is not user memory")
        verify_bitmap_size(pages_in(size, pgsize), bitmap_size)
        if pgsize != self.pgsize:
            raise KernelError(errno.EINVAL, f"DIRTY_PAGES(GET_BITMAP): page size {pgsize:#x} is not "
                                            f"{self.pgsize:#x}")
        if iova & (self.pgsize - 1) or size & (self.pgsize - 1):
            raise KernelError(errno.EINVAL, "DIRTY_PAGES(GET_BITMAP): iova or size not page aligned")
        if not self.dirty_tracking:
            raise KernelError(errno.EINVAL, "DIRTY_PAGES(GET_BITMAP): dirty tracking is off")
        self._refuse_bisection(iova, last, "DIRTY_PAGES(GET_BITMAP)")
        all_dirty = self.all_pages_dirty
        for mapping in self.mappings.iterate(iova, last + 1):
            self._gather_dirty(mapping)
            update_user_bitmap(caller, bitmap_data, mapping, iova, self.pgshift,
                               all_dirty=all_dirty)
            clear_reported(mapping, self.pgshift)
        return 0


def _last_byte(start: int, size: int) -> int | None:
    """check_add_overflow(start, size - 1): the range's last byte, or None past 2^64 - 1.
    Inclusive ends let a range end exactly at the top of the address space (>= 6.18)."""
    last = start + size - 1
    return last if last < _U64_LIMIT else None



def type1_check_extension(iommu: Type1Iommu | None, arg: int) -> int:
    """vfio_iommu_type1_check_extension, with or without an instance."""
    if arg in (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU, V.VFIO_UNMAP_ALL):
        return 1
    if arg == V.VFIO_UPDATE_VADDR:
        # Off before SET_IOMMU (>= 6.3) and with emulated (mdev) groups, which we never have.
        return 1 if iommu is not None else 0
    if arg == V.VFIO_DMA_CC_IOMMU:
        # 1 only when every domain enforces cache coherency (vacuously true without domains).
        if iommu is None:
            return 0
        return 1 if (iommu.config.enforce_cache_coherency or not iommu.groups) else 0
    # NESTING (6) was dropped in 6.13; every other value is unknown to type1.
    return 0


class Type1Container:
    """``struct vfio_container``: the groups in it and the IOMMU driver instance, if any."""

    def __init__(self, iommu: IommuConfig, locked: LockedMemory,
                 owners: OwnerRegistry | None = None) -> None:
        self.iommu_config = iommu
        self.locked = locked
        self.owners = owners if owners is not None else OwnerRegistry()
        self.groups: list[Group] = []
        self.iommu: Type1Iommu | None = None

    def check_extension(self, arg: int) -> int:
        if self.iommu is None:
            # Poll every registered driver without an instance: type1, then noiommu (always 0).
            return type1_check_extension(None, arg)
        return self.iommu.check_extension(arg)

    def set_iommu(self, arg: int) -> int:
        if not self.groups:
            raise KernelError(errno.EINVAL, "VFIO_SET_IOMMU: the container holds no group yet")
        if self.iommu is not None:
            raise KernelError(errno.EINVAL, "VFIO_SET_IOMMU: an IOMMU driver is already set")
        if type1_check_extension(None, arg) <= 0:
            raise KernelError(errno.ENODEV, f"VFIO_SET_IOMMU: no IOMMU driver supports type {arg}")
        if arg not in _TYPE1_TYPES:
            raise KernelError(errno.EINVAL, f"VFIO_SET_IOMMU: type1 cannot be opened as type {arg}")
        instance = Type1Iommu(self.iommu_config, v2=arg != V.VFIO_TYPE1_IOMMU, locked=self.locked,
                              owners=self.owners)
        for group in self.groups:
            instance.attach_group(group)
        self.iommu = instance
        return 0

    def attach_group(self, group: Group) -> None:
        """vfio_container_attach_group, after the group side's checks."""
        if not group.viable:
            raise KernelError(errno.EPERM, f"group {group.id} is not viable: a host driver owns a device")
        if self.iommu is not None:
            self.iommu.attach_group(group)
        self.groups.append(group)

    def detach_group(self, group: Group) -> None:
        """vfio_group_detach_container: the last group out destroys the IOMMU instance."""
        if self.iommu is not None:
            self.iommu.detach_group(group)
        self.groups.remove(group)
        if not self.groups and self.iommu is not None:
            self.iommu.release()
            self.iommu = None

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        if cmd == V.VFIO_GET_API_VERSION:
            return V.VFIO_API_VERSION
        if cmd == V.VFIO_CHECK_EXTENSION:
            return self.check_extension(arg)
        if cmd == V.VFIO_SET_IOMMU:
            return self.set_iommu(arg)
        if self.iommu is None:
            raise KernelError(errno.EINVAL, f"ioctl {cmd:#x} before VFIO_SET_IOMMU")
        return self.iommu.ioctl(caller, cmd, arg)


class ContainerFile(OpenFile):
    """An open /dev/vfio/vfio: a fresh, empty container per open()."""

    kind = FileKind.CONTAINER

    def __init__(self, container: Type1Container) -> None:
        self.container = container

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        return self.container.ioctl(caller, cmd, arg)

    def release(self) -> None:
        # Groups hold their own reference: closing the container fd unmaps nothing.
        pass
