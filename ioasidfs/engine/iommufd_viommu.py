"""vIOMMU objects of the iommufd core (drivers/iommu/iommufd/viommu.c, eventq.c's vEVENTQ,
driver.c, hw_pagetable.c's vIOMMU branches): IOMMUFD_OBJ_VIOMMU, IOMMUFD_OBJ_VDEVICE,
IOMMUFD_OBJ_VEVENTQ and IOMMUFD_OBJ_HW_QUEUE, with the ioctls that make them.

A vIOMMU is a slice of a device's physical IOMMU for one VM, built on a NEST_PARENT paging HWPT
(which it holds). Only a driver with vIOMMU ops can make one (``ops->get_viommu_size`` and
``ops->viommu_init``): of the IOMMUs emulated here that is the selftest's mock IOMMU
(:class:`~.iommufd_mock.MockViommu` is its ``struct iommufd_viommu_ops``); QEMU's VT-d in legacy
mode has none, so for a VFIO device VIOMMU_ALLOC stays EOPNOTSUPP. On a vIOMMU live:

* **vDEVICEs** (:class:`VDevice`): a bound device's virtual id (vSID, vRID...) in that vIOMMU,
  one per device; the driver translates ids in guest invalidations and events through them.
* **Nested HWPTs** made with ``pt_id`` = the vIOMMU (the driver's ``alloc_domain_nested``);
  they hold the vIOMMU rather than the parent HWPT.
* **vEVENTQs** (:class:`VEventQueue`): one per event type, each with an fd that read() drains
  (``struct iommufd_vevent_header`` + the driver's event data per event), at most ``depth``
  events queued, an overflow recorded as a trailing LOST_EVENTS header.
* **HW queues** (:class:`HwQueue`): a guest queue in the nesting parent's IOVA space, whose
  pages an internal access pins (an ACCESS object of its own) so they cannot be unmapped.

Every object takes the next free id like any other (``IommufdContext.allocate_id``) and is
undone, id freed, when its ioctl fails after that (``_iommufd_object_alloc_ucmd``).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from ..errors import KernelError
from ..uapi import iommufd as I
from ..uapi.layout import Layout
from .argsz import copy_out, int_field, ucmd_respond
from .caller import PAGE_SIZE, Caller
from .files import VEVENTQ_NODE_KEY, FileKind, OpenFile
from .ioas import U64_MAX, FilePages
from .iommufd import (BoundDevice, ContextObject, HwptNested, IommufdContext, NestedDomain,
                      UserHwpt, copy_struct_from_user)
from .iommufd_fault import EventQueue, EventQueueFile
from .iommufd_mock import Access

if TYPE_CHECKING:
    from .ioas import Pages

INT_MAX = 0x7FFFFFFF
KMALLOC_MAX_SIZE = 1 << 22
"""The largest kmalloc (x86_64, MAX_PAGE_ORDER 10): bigger kzalloc/kcalloc requests fail ENOMEM."""
KVMALLOC_MAX_SIZE = INT_MAX
"""kvmalloc refuses anything above INT_MAX bytes (ENOMEM)."""
LARGE_PAGE_SIZES = (1 << 21, 1 << 30)
"""The x86_64 huge page (THP, hugetlb) sizes whose frames are contiguous by construction."""


# ------------------------------------------------------------------------------ driver data

@dataclass(frozen=True)
class UserData:
    """``struct iommu_user_data``: a driver's data type, user pointer and length."""

    type: int
    uptr: int
    len: int


@dataclass(frozen=True)
class UserDataArray:
    """``struct iommu_user_data_array``: HWPT_INVALIDATE's request array."""

    type: int
    uptr: int
    entry_len: int
    entry_num: int


def copy_driver_struct_from_user(caller: Caller, layout: Layout, data: UserData, data_type: int,
                                 min_last: str) -> dict[str, int | bytes]:
    """iommu_copy_struct_from_user: another data type, or a length below the end of
    ``min_last`` or above the kernel's struct, is EINVAL; then copy_struct_from_user
    (EFAULT; a shorter struct is zero-extended)."""
    if data.type != data_type:
        raise KernelError(errno.EINVAL, f"driver data of type {data.type:#x}, not {data_type:#x}")
    if data.len < layout.field_end(min_last) or data.len > layout.size:
        raise KernelError(errno.EINVAL, f"{data.len} bytes of {layout.name}")
    return layout.unpack(bytes(copy_struct_from_user(caller, data.uptr, data.len, layout.size)))


def copy_driver_struct_to_user(caller: Caller, data: UserData, payload: bytes, data_type: int,
                               min_last_end: int) -> None:
    """iommu_copy_struct_to_user: the same type and length rules, then min(len, struct size)
    bytes go back (copy_struct_to_user: EFAULT)."""
    if data.type != data_type:
        raise KernelError(errno.EINVAL, f"driver data of type {data.type:#x}, not {data_type:#x}")
    if data.len < min_last_end or data.len > len(payload):
        raise KernelError(errno.EINVAL, f"{data.len} bytes of driver data")
    copy_out(caller, data.uptr, payload[:data.len])


def copy_driver_array_from_user(caller: Caller, layout: Layout, array: UserDataArray,
                                data_type: int) -> list[dict[str, int | bytes]]:
    """iommu_copy_struct_from_full_user_array: another type EINVAL, no entries EINVAL; an
    entry length equal to the struct's reads the whole array at once (EFAULT); then every
    entry is copy_struct_from_user'd from ``uptr + entry_len * i`` (EFAULT; a longer entry
    with non-zero bytes past the struct E2BIG)."""
    if array.type != data_type:
        raise KernelError(errno.EINVAL, f"request array of type {array.type:#x}, not {data_type:#x}")
    if not array.entry_num:
        raise KernelError(errno.EINVAL, "an empty request array")
    if array.entry_len == layout.size:
        caller.memory.read(array.uptr, array.entry_num * array.entry_len)
    return [layout.unpack(bytes(copy_struct_from_user(
        caller, array.uptr + array.entry_len * i, array.entry_len, layout.size)))
        for i in range(array.entry_num)]


# ------------------------------------------------------------------------------ driver ops

class ViommuOps(Protocol):
    """A driver's ``struct iommufd_viommu_ops`` for one vIOMMU (set by its viommu_init)."""

    def destroy(self) -> None: ...

    def alloc_domain_nested(self, caller: Caller, flags: int, data: UserData) -> NestedDomain:
        """``alloc_domain_nested`` with FAULT_ID_VALID already taken out of ``flags``."""
        ...

    def cache_invalidate(self, caller: Caller,
                         array: UserDataArray) -> tuple[int, KernelError | None]:
        """``cache_invalidate``: how many requests were handled, and what stopped it."""
        ...

    def hw_queue_supported(self, queue_type: int) -> bool:
        """``get_hw_queue_size`` answers non-zero for ``queue_type``."""
        ...

    def hw_queue_init_phys(self, queue: HwQueue, index: int) -> None:
        """``hw_queue_init_phys`` (the queue's pages are pinned and contiguous by now); on
        success the queue's ``destroy`` hook is the driver's."""
        ...


@runtime_checkable
class ViommuDriver(Protocol):
    """An IOMMU driver with vIOMMU support (``ops->get_viommu_size`` and ``ops->viommu_init``)."""

    owner: str

    def viommu_supported(self, viommu_type: int) -> bool:
        """``get_viommu_size`` answers non-zero for ``viommu_type``."""
        ...

    def viommu_init(self, caller: Caller, viommu: Viommu, data: UserData | None) -> ViommuOps:
        """``viommu_init``; returns the ops it sets (``viommu->ops``)."""
        ...


# ------------------------------------------------------------------------------ objects

class Viommu(ContextObject):
    """``struct iommufd_viommu``: its type, the NEST_PARENT HWPT it holds, the physical IOMMU
    it is a slice of (``iommu_dev``: our drivers' ``owner``), its vDEVICEs by virtual id
    (``vdevs``) and its vEVENTQs. Everything made on it holds it."""

    def __init__(self, ctx: IommufdContext, viommu_type: int, hwpt: UserHwpt, iommu_dev: str) -> None:
        self.ctx = ctx
        self.type = viommu_type
        self.hwpt = hwpt
        self.iommu_dev = iommu_dev
        self.ops: ViommuOps | None = None
        self.vdevs: dict[int, VDevice] = {}
        self.veventqs: list[VEventQueue] = []

    def holds(self, obj: object) -> bool:
        return obj is self.hwpt

    def extra_users(self) -> int:
        return sum(1 for o in self.ctx.objects.values()
                   if (isinstance(o, ContextObject) and o.holds(self))
                   or (isinstance(o, HwptNested) and o.viommu is self))

    def destroy(self, ctx: IommufdContext) -> None:
        """iommufd_viommu_destroy: the driver's destroy; the HWPT reference goes with it."""
        if self.ops is not None:
            self.ops.destroy()

    # ---- driver.c, what drivers call
    def find_dev(self, virt_id: int) -> BoundDevice | None:
        """iommufd_viommu_find_dev: the device of the vDEVICE at ``virt_id``."""
        vdev = self.vdevs.get(virt_id)
        return vdev.device if vdev is not None else None

    def get_vdev_id(self, device: BoundDevice) -> int:
        """iommufd_viommu_get_vdev_id: the device's virtual id here; ENOENT without one."""
        for virt_id, vdev in self.vdevs.items():
            if vdev.device is device:
                return virt_id
        raise KernelError(errno.ENOENT, f"{device.name} has no vDEVICE on this vIOMMU")

    def report_event(self, event_type: int, data: bytes) -> None:
        """iommufd_viommu_report_event: the vEVENTQ of ``event_type`` (EOPNOTSUPP without one)
        queues the event; a full queue (``depth`` events unread) records a lost event instead."""
        veventq = next((q for q in self.veventqs if q.type == event_type), None)
        if veventq is None:
            raise KernelError(errno.EOPNOTSUPP, f"no vEVENTQ of type {event_type:#x}")
        veventq.report(data)


class VDevice(ContextObject):
    """``struct iommufd_vdevice``: ``device`` is ``virt_id`` on ``viommu`` (which it holds)."""

    def __init__(self, viommu: Viommu, device: BoundDevice, virt_id: int) -> None:
        self.viommu = viommu
        self.device = device
        self.virt_id = virt_id

    def holds(self, obj: object) -> bool:
        return obj is self.viommu

    def destroy(self, ctx: IommufdContext) -> None:
        """iommufd_vdevice_abort: out of the vIOMMU's table (if it got in), the device has no
        vDEVICE any more."""
        if self.viommu.vdevs.get(self.virt_id) is self:
            del self.viommu.vdevs[self.virt_id]


@dataclass(frozen=True)
class VEvent:
    """``struct iommufd_vevent`` on a vEVENTQ: its header's sequence number and the driver's
    event data; ``lost`` marks the LOST_EVENTS header an overflow leaves (no data)."""

    sequence: int
    data: bytes = b""
    lost: bool = False


class VEventQueue(EventQueue):
    """``struct iommufd_veventq``: events waiting for read() (``deliver``), how many real ones
    (``num_events``, at most ``depth``) and the next sequence number ([0, INT_MAX], wrapping).

    Like a fault queue, its fd holds it (IOMMU_DESTROY EBUSY while open) and the context."""

    def __init__(self, ctx: IommufdContext, viommu: Viommu, event_type: int, depth: int) -> None:
        super().__init__(ctx)
        self.viommu = viommu
        self.type = event_type
        self.depth = depth
        self.deliver: list[VEvent] = []
        self.num_events = 0
        self.sequence = 0

    def holds(self, obj: object) -> bool:
        return obj is self.viommu

    def destroy(self, ctx: IommufdContext) -> None:
        """iommufd_veventq_abort: queued events are dropped; off the vIOMMU's list."""
        self.deliver.clear()
        if self in self.viommu.veventqs:
            self.viommu.veventqs.remove(self)

    def report(self, data: bytes) -> None:
        """iommufd_viommu_report_event + iommufd_vevent_handler: with ``depth`` events unread
        the event is lost -- the LOST_EVENTS header takes the next sequence number -- else it is
        queued. A LOST_EVENTS header at the tail is replaced by whatever comes next, so it only
        ever trails the queue."""
        lost = self.num_events == self.depth
        if not lost:
            self.num_events += 1
        if self.deliver and self.deliver[-1].lost:
            self.deliver.pop()
        self.deliver.append(VEvent(self.sequence, b"" if lost else data, lost))
        self.sequence = (self.sequence + 1) & INT_MAX

    def read(self, count: int) -> bytes:
        """iommufd_veventq_fops_read: from the head, while the header (and for a real event its
        data) fits in what is left of ``count``: the 8-byte header, then the data. Nothing
        fitting: 0 bytes."""
        out = bytearray()
        header = I.VEVENT_HEADER.size
        while self.deliver:
            event = self.deliver[0]
            room = count - len(out)
            if room < header or (not event.lost and header + len(event.data) > room):
                break
            self.deliver.pop(0)
            flags = I.IOMMU_VEVENTQ_FLAG_LOST_EVENTS if event.lost else 0
            out += I.VEVENT_HEADER.pack(flags=flags, sequence=event.sequence) + event.data
            if not event.lost:
                self.num_events -= 1
        return bytes(out)


class VEventQueueFile(EventQueueFile):
    """The vEVENTQ's fd (``[iommufd-viommu-event]``): read only (no .write: EINVAL), no ioctl."""

    kind = FileKind.VEVENTQ
    node_key = VEVENTQ_NODE_KEY
    alloc_layout = I.VEVENTQ_ALLOC
    fd_field = "out_veventq_fd"

    def __init__(self, veventq: VEventQueue, caller: Caller, arg: int, data: bytearray) -> None:
        super().__init__(veventq, caller, arg, data)
        self.veventq = veventq

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        # As for the fault fd: the kernel's position never moves, FUSE's does; not looked at.
        return self.veventq.read(size)


class HwQueueAccess(Access):
    """The internal access a HW queue pins its pages with (iommufd_access_create_internal): an
    ACCESS object of its own (the next id; IOMMU_DESTROY of it is EBUSY, the creator holds it)
    that holds the IOAS but not the context, needs PAGE_SIZE alignment, and *locks* the areas
    it pins: an unmap reaching them is EBUSY (iopt_unmap_iova_range: ``area->num_locks``)
    instead of asking it to let go."""

    holds_context = False

    def __init__(self, ctx: IommufdContext) -> None:
        super().__init__(ctx, needs_pin_pages=True)
        self.runs: list[tuple[Pages, int, int]] = []
        self.pinned: tuple[int, int] | None = None

    def locks(self, iova: int, last: int) -> bool:
        """The areas it pinned are locked: an unmap reaching them is EBUSY before it could ask
        this access to let go (iopt_unmap_iova_range checks ``num_locks`` first)."""
        return self.pinned is not None and iova <= self.pinned[1] and self.pinned[0] <= last

    def unmap(self, iova: int, last: int) -> None:
        """Never asked about its own pages (they are locked); other areas are not its."""

    def pin(self, iova: int, length: int) -> None:
        """iommufd_access_pin_pages without WRITE (Access.pin_pages' rules and errnos)."""
        self.runs = self.pin_pages(iova, length, False)
        self.pinned = (iova, iova + length - 1)

    def physically_contiguous(self) -> bool:
        """Whether the pinned pages are consecutive frames (iommufd_hw_queue_alloc_phys's
        page_to_pfn walk). One page always is. More are known to be only when they lie in one
        run of user memory inside a single huge page (THP or hugetlb) that the mapping process
        backs with one aligned, contiguous block (``Caller.contiguous_blocks``); a MAP_FILE
        area's pages, or pages across huge pages, are not known to be, as frame numbers
        themselves are not ours to read."""
        if sum(last - first + 1 for _, first, last in self.runs) <= 1:
            return True
        if len(self.runs) != 1:
            return False
        pages, first, last = self.runs[0]
        if isinstance(pages, FilePages):
            return False
        start, end = pages.uptr + first * PAGE_SIZE, pages.uptr + last * PAGE_SIZE
        for size in LARGE_PAGE_SIZES:
            block = start - start % size
            if end - end % size == block:
                try:
                    return block in pages.source.contiguous_blocks(block, 1, size)
                except KernelError:
                    return False  # the mapping process has gone
        return False

    def destroy_internal(self) -> None:
        """Unpin, detach (iommufd_access_detach_internal), and the object goes
        (iommufd_access_destroy_internal)."""
        for pages, first, last in self.runs:
            pages.unpin(first, last, self.ctx.accounting)
        self.runs, self.pinned = [], None
        if self.ioas is not None:
            self.ioas.remove_access(self)
            self.ioas = None
        if any(o is self for o in self.ctx.objects.values()):
            del self.ctx.objects[self.ctx.id_of(self)]


class HwQueue(ContextObject):
    """``struct iommufd_hw_queue``: a queue of ``length`` bytes at ``base_addr`` in the nesting
    parent's IOVA space, on ``viommu`` (held), its pages pinned by ``access``. The driver may
    make it depend on another queue (``prev``, held: iommufd_hw_queue_depend), and sets
    ``driver_destroy`` once its init succeeded."""

    def __init__(self, ctx: IommufdContext, viommu: Viommu, queue_type: int, base_addr: int,
                 length: int) -> None:
        self.ctx = ctx
        self.viommu = viommu
        self.type = queue_type
        self.base_addr = base_addr
        self.length = length
        self.index = 0
        self.access: HwQueueAccess | None = None
        self.prev: HwQueue | None = None
        self.driver_destroy: Callable[[HwQueue], None] | None = None

    def holds(self, obj: object) -> bool:
        return obj is self.viommu or (self.prev is not None and obj is self.prev)

    def extra_users(self) -> int:
        return sum(1 for o in self.ctx.objects.values() if isinstance(o, HwQueue) and o.prev is self)

    def destroy(self, ctx: IommufdContext) -> None:
        """iommufd_hw_queue_destroy: the driver's destroy, then the access (unpinned, detached,
        destroyed); the vIOMMU reference goes with it."""
        if self.driver_destroy is not None:
            self.driver_destroy(self)
        if self.access is not None:
            self.access.destroy_internal()
            self.access = None


# ------------------------------------------------------------------------------ ioctls

def get_viommu(ctx: IommufdContext, object_id: int) -> Viommu:
    """iommufd_get_viommu: ENOENT for anything else."""
    return ctx.get_object(object_id, Viommu, "vIOMMU")


def _viommu_driver(device: BoundDevice, ctx: IommufdContext) -> ViommuDriver | None:
    driver = device.iommu_driver(ctx)
    return driver if isinstance(driver, ViommuDriver) else None


def viommu_alloc(ctx: IommufdContext, caller: Caller, data: bytearray, arg: int) -> int:
    """iommufd_viommu_alloc_ioctl: flags or the DEFAULT type EOPNOTSUPP; the device (ENOENT);
    a driver without vIOMMU ops, or whose get_viommu_size knows not the type, EOPNOTSUPP (a
    VT-d device always: the intel driver has none); the HWPT must be a paging one (ENOENT)
    allocated NEST_PARENT (EINVAL). Then the object (next id, holding the HWPT) and the driver's
    viommu_init with the driver data if ``data_len`` is non-zero; ``out_viommu_id`` is written
    back. Any failure from the object on frees it and its id."""
    fields = I.VIOMMU_ALLOC.unpack(data)
    viommu_type = int_field(fields, "type")
    if int_field(fields, "flags") or viommu_type == I.IOMMU_VIOMMU_TYPE_DEFAULT:
        raise KernelError(errno.EOPNOTSUPP, "VIOMMU_ALLOC: flags, or the DEFAULT type")
    device = ctx.get_device(int_field(fields, "dev_id"))
    driver = _viommu_driver(device, ctx)
    if driver is None or not driver.viommu_supported(viommu_type):
        raise KernelError(errno.EOPNOTSUPP, f"VIOMMU_ALLOC: {device.name}'s IOMMU driver has no "
                                            f"vIOMMU of type {viommu_type:#x}")
    hwpt = ctx.get_hwpt_paging(int_field(fields, "hwpt_id"))
    if not isinstance(hwpt, UserHwpt) or not hwpt.nest_parent:
        raise KernelError(errno.EINVAL, "VIOMMU_ALLOC: the HWPT is not a NEST_PARENT one")
    viommu = Viommu(ctx, viommu_type, hwpt, driver.owner)
    viommu_id = ctx.allocate_id(viommu)
    try:
        data_len = int_field(fields, "data_len")
        user = UserData(viommu_type, int_field(fields, "data_uptr"), data_len) if data_len else None
        viommu.ops = driver.viommu_init(caller, viommu, user)
        I.VIOMMU_ALLOC.write_fields(data, out_viommu_id=viommu_id)
        ucmd_respond(caller, arg, data)
    except KernelError:
        ctx.abort_and_destroy(viommu_id)
        raise
    return 0


def vdevice_alloc(ctx: IommufdContext, caller: Caller, data: bytearray, arg: int) -> int:
    """iommufd_vdevice_alloc_ioctl: the vIOMMU (ENOENT), the device (ENOENT), the device behind
    another physical IOMMU than the vIOMMU's (EINVAL), a device that has a vDEVICE already,
    here or on another vIOMMU (EEXIST); then the object (next id) and its virtual id in the
    vIOMMU's table (taken: EEXIST, the object freed again); ``out_vdevice_id`` is written back
    (EFAULT undoes it). (``virt_id`` > ULONG_MAX, EINVAL in the kernel, cannot happen on a
    64-bit kernel.)"""
    fields = I.VDEVICE_ALLOC.unpack(data)
    viommu = get_viommu(ctx, int_field(fields, "viommu_id"))
    device = ctx.get_device(int_field(fields, "dev_id"))
    if viommu.iommu_dev != device.iommu_driver(ctx).owner:
        raise KernelError(errno.EINVAL, f"{device.name} is not behind the vIOMMU's IOMMU")
    if vdevice_of(ctx, device) is not None:
        raise KernelError(errno.EEXIST, f"{device.name} has a vDEVICE already")
    virt_id = int_field(fields, "virt_id")
    vdev = VDevice(viommu, device, virt_id)
    vdev_id = ctx.allocate_id(vdev)
    try:
        if virt_id in viommu.vdevs:
            raise KernelError(errno.EEXIST, f"virtual id {virt_id:#x} is taken on the vIOMMU")
        viommu.vdevs[virt_id] = vdev
        I.VDEVICE_ALLOC.write_fields(data, out_vdevice_id=vdev_id)
        ucmd_respond(caller, arg, data)
    except KernelError:
        ctx.abort_and_destroy(vdev_id)
        raise
    return 0


def vdevice_of(ctx: IommufdContext, device: BoundDevice) -> VDevice | None:
    """``idev->vdev``."""
    return next((o for o in ctx.objects.values() if isinstance(o, VDevice) and o.device is device),
                None)


def remove_vdevice(ctx: IommufdContext, device: BoundDevice) -> None:
    """iommufd_device_remove_vdev, as the device is unbound: its vDEVICE is destroyed and
    leaves a tombstone -- its id stays taken (never reused, IOMMU_DESTROY ENOENT) until the
    context goes (iommufd_object_tombstone_user)."""
    vdev = vdevice_of(ctx, device)
    if vdev is not None:
        ctx.objects[ctx.id_of(vdev)] = None
        vdev.destroy(ctx)


def veventq_alloc(ctx: IommufdContext, caller: Caller, data: bytearray, arg: int) -> OpenFile:
    """iommufd_veventq_alloc: flags, __reserved or the DEFAULT type EOPNOTSUPP (any other type
    is taken as is), depth 0 EINVAL, the vIOMMU (ENOENT), a vEVENTQ of that type there already
    (EEXIST); then the object (next id) and its fd. The new file goes back to the launcher,
    which installs it and writes its number (with the id) into the struct."""
    fields = I.VEVENTQ_ALLOC.unpack(data)
    event_type = int_field(fields, "type")
    if (int_field(fields, "flags") or int_field(fields, "reserved")
            or event_type == I.IOMMU_VEVENTQ_TYPE_DEFAULT):
        raise KernelError(errno.EOPNOTSUPP, "VEVENTQ_ALLOC: flags, __reserved or DEFAULT type")
    depth = int_field(fields, "veventq_depth")
    if not depth:
        raise KernelError(errno.EINVAL, "VEVENTQ_ALLOC: depth 0")
    viommu = get_viommu(ctx, int_field(fields, "viommu_id"))
    if any(q.type == event_type for q in viommu.veventqs):
        raise KernelError(errno.EEXIST, f"the vIOMMU has a vEVENTQ of type {event_type:#x}")
    veventq = VEventQueue(ctx, viommu, event_type, depth)
    veventq_id = ctx.allocate_id(veventq)
    viommu.veventqs.append(veventq)
    I.VEVENTQ_ALLOC.write_fields(data, out_veventq_id=veventq_id)
    return VEventQueueFile(veventq, caller, arg, data)


def hw_queue_alloc(ctx: IommufdContext, caller: Caller, data: bytearray, arg: int) -> int:
    """iommufd_hw_queue_alloc_ioctl: flags or the DEFAULT type EOPNOTSUPP, length 0 EINVAL, a
    queue running past 2^64 EOVERFLOW; the vIOMMU (ENOENT); a driver without HW queues of the
    type (get_hw_queue_size: EOPNOTSUPP). Then the object (next id) and
    iommufd_hw_queue_alloc_phys: the page-aligned span (ERANGE if rounding it up overflows;
    ENOMEM for a page array kvcalloc refuses), an internal access (the next id) attached to
    the parent HWPT's IOAS (EADDRINUSE) pinning the span (ENOENT, EINVAL, EPERM, EFAULT...),
    whose pages must be physically contiguous (EFAULT); then the driver's hw_queue_init_phys
    and ``out_hw_queue_id``. Failure undoes it all, both ids freed."""
    fields = I.HW_QUEUE_ALLOC.unpack(data)
    queue_type = int_field(fields, "type")
    if int_field(fields, "flags") or queue_type == I.IOMMU_HW_QUEUE_TYPE_DEFAULT:
        raise KernelError(errno.EOPNOTSUPP, "HW_QUEUE_ALLOC: flags, or the DEFAULT type")
    length = int_field(fields, "length")
    if not length:
        raise KernelError(errno.EINVAL, "HW_QUEUE_ALLOC: length 0")
    base = int_field(fields, "nesting_parent_iova")
    if base + length - 1 > U64_MAX:
        raise KernelError(errno.EOVERFLOW, "HW_QUEUE_ALLOC: the queue runs past 2^64")
    viommu = get_viommu(ctx, int_field(fields, "viommu_id"))
    if viommu.ops is None or not viommu.ops.hw_queue_supported(queue_type):
        raise KernelError(errno.EOPNOTSUPP, f"the vIOMMU has no HW queue of type {queue_type:#x}")
    queue = HwQueue(ctx, viommu, queue_type, base, length)
    queue_id = ctx.allocate_id(queue)
    try:
        queue.access = _hw_queue_pin(ctx, viommu, base, length)
        viommu.ops.hw_queue_init_phys(queue, int_field(fields, "index"))
        I.HW_QUEUE_ALLOC.write_fields(data, out_hw_queue_id=queue_id)
        ucmd_respond(caller, arg, data)
    except KernelError:
        ctx.abort_and_destroy(queue_id)
        raise
    return 0


def _hw_queue_pin(ctx: IommufdContext, viommu: Viommu, base: int, length: int) -> HwQueueAccess:
    """iommufd_hw_queue_alloc_phys (contiguity: :meth:`HwQueueAccess.physically_contiguous`)."""
    offset = base % PAGE_SIZE
    span = offset + length + PAGE_SIZE - 1
    if span > U64_MAX:
        raise KernelError(errno.ERANGE, "HW_QUEUE_ALLOC: the page-rounded span overflows")
    npages = span // PAGE_SIZE
    if npages * 8 > KVMALLOC_MAX_SIZE:
        raise KernelError(errno.ENOMEM, f"HW_QUEUE_ALLOC: a {npages}-page array")
    access = HwQueueAccess(ctx)
    ctx.allocate_id(access)
    try:
        access.attach(viommu.hwpt.ioas)
        access.pin(base - offset, npages * PAGE_SIZE)
        if not access.physically_contiguous():
            raise KernelError(errno.EFAULT, "HW_QUEUE_ALLOC: the queue's pages are not known "
                                            "to be physically contiguous")
    except KernelError:
        access.destroy_internal()
        raise
    return access


def viommu_alloc_hwpt_nested(ctx: IommufdContext, caller: Caller, viommu: Viommu,
                             device: BoundDevice, flags: int, data: UserData) -> HwptNested:
    """IOMMU_HWPT_ALLOC on a vIOMMU (iommufd_hwpt_alloc, iommufd_viommu_alloc_hwpt_nested): the
    device behind another IOMMU (EINVAL); flags other than FAULT_ID_VALID and PASID, no driver
    data, or no alloc_domain_nested (EOPNOTSUPP); then the id is taken and the driver's
    alloc_domain_nested answers (id freed on failure). The HWPT holds the vIOMMU (not the
    parent, though ``parent`` is the vIOMMU's HWPT, as find_hwpt_paging sees it)."""
    if viommu.iommu_dev != device.iommu_driver(ctx).owner:
        raise KernelError(errno.EINVAL, f"{device.name} is not behind the vIOMMU's IOMMU")
    if flags & ~(I.IOMMU_HWPT_FAULT_ID_VALID | I.IOMMU_HWPT_ALLOC_PASID):
        raise KernelError(errno.EOPNOTSUPP, f"nested HWPT on a vIOMMU: flags {flags:#x}")
    if not data.len or viommu.ops is None:
        raise KernelError(errno.EOPNOTSUPP, "nested HWPT on a vIOMMU: no driver data or op")
    hwpt_id = ctx.allocate_id(None)
    try:
        domain = viommu.ops.alloc_domain_nested(caller, flags & ~I.IOMMU_HWPT_FAULT_ID_VALID, data)
    except KernelError:
        del ctx.objects[hwpt_id]
        raise
    hwpt = HwptNested(viommu.hwpt, domain)
    hwpt.viommu = viommu
    hwpt.pasid_compat = bool(flags & I.IOMMU_HWPT_ALLOC_PASID)
    ctx.objects[hwpt_id] = hwpt
    return hwpt


def viommu_cache_invalidate(caller: Caller, viommu: Viommu,
                            array: UserDataArray) -> tuple[int, KernelError | None]:
    """IOMMU_HWPT_INVALIDATE on a vIOMMU: its driver's cache_invalidate (none: EOPNOTSUPP)."""
    if viommu.ops is None:
        return 0, KernelError(errno.EOPNOTSUPP, "the vIOMMU has no cache_invalidate")
    return viommu.ops.cache_invalidate(caller, array)


