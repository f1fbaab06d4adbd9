"""The iommufd context (drivers/iommu/iommufd/main.c) and its VFIO container compatibility
(drivers/iommu/iommufd/vfio_compat.c): what /dev/iommu and /dev/ioasid answer.

Dispatch follows iommufd_fops_ioctl: the command's nr byte alone decides whether the native table
(nr 0x80 and up) or the VFIO compat switch answers. For a native nr, the u32 ``size`` is read
*first* (so a NULL pointer is EFAULT even for a hole in the table), then the whole command must
match the table entry (ENOTTY), ``size`` must reach the minimum (EINVAL), and any bytes past the
kernel's struct must be zero (E2BIG) — the copy_struct_from_user protocol that lets old and new
programs share one ABI.

The IOAS model itself (areas, reservations, domains, pinning) is ``ioas.py``; this module owns
the objects table, the compat IOAS selection, devices and their automatic domains, and the
argument handling of each ioctl.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import Callable, Protocol, TYPE_CHECKING, TypeVar

from ..config import IommuConfig
from ..errors import KernelError
from ..uapi import iommufd as I
from ..uapi import vfio as V
from ..uapi.ioctl import ioc_nr
from ..uapi.layout import Layout
from .argsz import copy_in, copy_out, int_field, read_argsz_struct, read_u32, ucmd_respond
from .caller import CAP_SYS_RESOURCE, Caller
from .capchain import CAP_ALIGNMENT
from .files import FileKind, OpenFile
from .ioas import (IOMMU_READ, IOMMU_WRITE, U64_MAX, Accounting, Domain, Ioas, UnmapError,
                   change_process)
from .translate import OwnerRegistry

if TYPE_CHECKING:
    from .group import Group
    from .iommufd_mock import MockSelftest

log = logging.getLogger("ioasidfs.engine")

_Obj = TypeVar("_Obj")

IommufdHandler = Callable[["IommufdContext", Caller, bytearray, int], int]


@dataclass(frozen=True)
class NativeIoctl:
    """One slot of iommufd_ioctl_ops: the command, its struct and the handler."""

    cmd: int
    layout: Layout
    handler: IommufdHandler | None = None


def _slot(cmd: int, layout: Layout, handler: IommufdHandler | None = None) -> tuple[int, NativeIoctl]:
    return ioc_nr(cmd), NativeIoctl(cmd, layout, handler)


def _destroy(ctx: "IommufdContext", caller: Caller, data: bytearray, arg: int) -> int:
    """IOMMU_DESTROY: remove any object by id (ENOENT if there is none)."""
    object_id = int(I.DESTROY.unpack(data)["id"])
    ctx.destroy(object_id)
    return 0


# The table of a kernel without CONFIG_IOMMUFD_TEST: nr 0x80..0x94, no holes.
NATIVE_IOCTLS: dict[int, NativeIoctl] = dict([
    _slot(I.IOMMU_DESTROY, I.DESTROY, _destroy),
    _slot(I.IOMMU_IOAS_ALLOC, I.IOAS_ALLOC, lambda c, caller, d, a: c.ioas_alloc(caller, d, a)),
    _slot(I.IOMMU_IOAS_ALLOW_IOVAS, I.IOAS_ALLOW_IOVAS,
          lambda c, caller, d, a: c.ioas_allow_iovas(caller, d, a)),
    _slot(I.IOMMU_IOAS_COPY, I.IOAS_COPY, lambda c, caller, d, a: c.ioas_copy(caller, d, a)),
    _slot(I.IOMMU_IOAS_IOVA_RANGES, I.IOAS_IOVA_RANGES,
          lambda c, caller, d, a: c.ioas_iova_ranges(caller, d, a)),
    _slot(I.IOMMU_IOAS_MAP, I.IOAS_MAP, lambda c, caller, d, a: c.ioas_map(caller, d, a)),
    _slot(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, lambda c, caller, d, a: c.ioas_unmap(caller, d, a)),
    _slot(I.IOMMU_OPTION, I.OPTION, lambda c, caller, d, a: c.option(caller, d, a)),
    _slot(I.IOMMU_VFIO_IOAS, I.VFIO_IOAS, lambda c, caller, d, a: c.vfio_ioas(caller, d, a)),
    _slot(I.IOMMU_HWPT_ALLOC, I.HWPT_ALLOC, lambda c, caller, d, a: c.hwpt_alloc(caller, d, a)),
    _slot(I.IOMMU_GET_HW_INFO, I.HW_INFO, lambda c, caller, d, a: c.get_hw_info(caller, d, a)),
    _slot(I.IOMMU_HWPT_SET_DIRTY_TRACKING, I.HWPT_SET_DIRTY_TRACKING,
          lambda c, caller, d, a: c.hwpt_set_dirty_tracking(caller, d, a)),
    _slot(I.IOMMU_HWPT_GET_DIRTY_BITMAP, I.HWPT_GET_DIRTY_BITMAP,
          lambda c, caller, d, a: c.hwpt_get_dirty_bitmap(caller, d, a)),
    _slot(I.IOMMU_HWPT_INVALIDATE, I.HWPT_INVALIDATE,
          lambda c, caller, d, a: c.hwpt_invalidate(caller, d, a)),
    _slot(I.IOMMU_FAULT_QUEUE_ALLOC, I.FAULT_ALLOC, lambda c, caller, d, a: c.fault_alloc(caller, d, a)),
    _slot(I.IOMMU_IOAS_MAP_FILE, I.IOAS_MAP_FILE, lambda c, caller, d, a: c.ioas_map_file(caller, d, a)),
    _slot(I.IOMMU_VIOMMU_ALLOC, I.VIOMMU_ALLOC,
          lambda c, caller, d, a: c.viommu_alloc(caller, d, a)),
    _slot(I.IOMMU_VDEVICE_ALLOC, I.VDEVICE_ALLOC,
          lambda c, caller, d, a: c.vdevice_alloc(caller, d, a)),
    _slot(I.IOMMU_IOAS_CHANGE_PROCESS, I.IOAS_CHANGE_PROCESS,
          lambda c, caller, d, a: c.ioas_change_process(caller, d, a)),
    _slot(I.IOMMU_VEVENTQ_ALLOC, I.VEVENTQ_ALLOC,
          lambda c, caller, d, a: c.veventq_alloc(caller, d, a)),
    _slot(I.IOMMU_HW_QUEUE_ALLOC, I.HW_QUEUE_ALLOC,
          lambda c, caller, d, a: c.hw_queue_alloc(caller, d, a)),
])
_NATIVE_END = max(NATIVE_IOCTLS) + 1
_TEST_CMD_NR = ioc_nr(I.IOMMU_TEST_CMD)
"""IOMMU_TEST_CMD's slot: with CONFIG_IOMMUFD_TEST the table reaches it, holes in between."""
_COMPAT_INFO_MINSZ = V.TYPE1_INFO.field_end("iova_pgsizes")
_COMPAT_MAP_FLAGS = V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE
_IOAS_MAP_FLAGS = I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_WRITEABLE | I.IOMMU_IOAS_MAP_READABLE
_U32_MAX = 0xFFFFFFFF
"""DMA_AVAIL on iommufd: no entry limit (s390 QEMU needs more than type1's U16_MAX)."""


def copy_struct_from_user(caller: Caller, arg: int, user_size: int, ksize: int) -> bytearray:
    """The kernel's copy_struct_from_user: a shorter struct is zero-extended; a longer one is
    accepted only when every byte past ``ksize`` is zero (E2BIG otherwise)."""
    if user_size > ksize:
        tail = caller.memory.read(arg + ksize, user_size - ksize)
        if any(tail):
            raise KernelError(errno.E2BIG, f"non-zero bytes past the {ksize}-byte struct")
    data = bytearray(caller.memory.read(arg, min(user_size, ksize)))
    data.extend(bytes(ksize - len(data)))
    return data


class Hwpt:
    """``struct iommufd_hw_pagetable``, what paging and nested HWPTs share: the devices
    attached to it, the fault object it reports I/O page faults to (FAULT_ID_VALID; it holds a
    reference on it), and the IOAS its translation ends in."""

    auto = False

    def __init__(self, ioas: Ioas) -> None:
        self.ioas = ioas
        self.devices: list[BoundDevice] = []
        self.fault: ContextObject | None = None
        #: ``hwpt->pasid_compat``: allocated with IOMMU_HWPT_ALLOC_PASID (never an automatic one)
        self.pasid_compat = False


class HwptPaging(Hwpt):
    """An IOMMUFD_OBJ_HWPT_PAGING: one IOMMU domain built on an IOAS, shared by the devices
    attached to it. ``auto`` ones are created by attaching a device to an IOAS and die with
    their last device (device.c:iommufd_device_auto_get_domain). ``owner`` names the IOMMU
    driver whose domain it is (``domain->owner``)."""

    def __init__(self, ioas: Ioas, domain: Domain, *, auto: bool, owner: str = "") -> None:
        super().__init__(ioas)
        self.domain = domain
        self.auto = auto
        self.owner = owner


class NestedDomain(Protocol):
    """An IOMMU_DOMAIN_NESTED of a driver: its ``cache_invalidate_user`` op, which returns how
    many requests it handled and the error that stopped it (None when all were)."""

    def cache_invalidate_user(self, caller: Caller, data_type: int, uptr: int, entry_len: int,
                              entry_num: int) -> tuple[int, KernelError | None]: ...


class HwptNested(Hwpt):
    """An IOMMUFD_OBJ_HWPT_NESTED (hw_pagetable.c:iommufd_hwpt_nested_alloc): a stage-1
    domain of the device's driver on a NEST_PARENT paging HWPT, which it holds (IOMMU_DESTROY
    of the parent is EBUSY). Devices attach to it like to a paging HWPT; it is never
    automatic, and it is not a paging HWPT for the ioctls that want one (ENOENT). One made on
    a vIOMMU (iommufd_viommu_alloc_hwpt_nested) holds the ``viommu`` instead; its ``parent``
    is the vIOMMU's HWPT."""

    def __init__(self, parent: UserHwpt, domain: NestedDomain) -> None:
        super().__init__(parent.ioas)
        self.parent = parent
        self.domain = domain
        self.viommu: ContextObject | None = None


class BoundDevice:
    """An IOMMUFD_OBJ_DEVICE: a device bound to the context, by a VFIO group's first open of it
    (vfio_iommufd_bind) or by VFIO_DEVICE_BIND_IOMMUFD on its cdev (vfio_iommufd_physical_bind).
    Its driver holds it, so IOMMU_DESTROY of it is always EBUSY.

    ``group`` is the device's IOMMU group: iommufd attaches groups, not devices
    (``struct iommufd_group``), so the devices of one group bound to one context always share
    one HWPT; None stands for a group of its own."""

    #: Whether the binding holds the context alive (iommufd_ctx_get in iommufd_device_bind):
    #: true for VFIO devices, false for the selftest's mock devices (iommufd_mock.py).
    holds_context = True

    def __init__(self, name: str, group: int | None = None) -> None:
        self.name = name
        self.group = group
        self.hwpt: Hwpt | None = None
        #: What the device is attached to at each PASID (``igroup->pasid_attach`` other than
        #: IOMMU_NO_PASID, this device's entries): each holds the HWPT and the device.
        self.pasids: dict[int, Hwpt] = {}

    def new_domain(self, iommu: IommuConfig) -> Domain:
        """The paging domain the device's IOMMU driver allocates for an automatic HWPT: ours is
        the configured IOMMU's (the mock IOMMU's devices override this)."""
        return Domain.from_config(iommu)

    def iommu_driver(self, ctx: IommufdContext) -> IommuDriver:
        """The IOMMU driver behind the device (``dev->iommu->ops``): the machine's VT-d for
        every configured device; the selftest's mock devices have the mock IOMMU."""
        return ctx.vtd

    def check_attach(self, hwpt: Hwpt) -> None:
        """What the driver's attach_dev refuses. The VT-d driver refuses only a domain with a
        fault queue (FAULT_ID_VALID): enabling I/O page faults needs a device with ATS and PRI
        (intel_iommu_enable_iopf: ENODEV), which ours lack."""
        if hwpt.fault is not None:
            raise KernelError(errno.ENODEV, f"{self.name} has no PRI for I/O page faults")

    def set_dev_pasid(self, hwpt: Hwpt | None, pasid: int, old: Hwpt | None) -> None:
        """The driver's ``set_dev_pasid`` of ``hwpt``'s domain (None: the blocked domain, a
        detach). Reached only for a PASID below the device's width, which is 0 for our VT-d
        devices, so the VT-d driver is never asked."""


class IommuDriver(Protocol):
    """What the iommufd core asks a device's IOMMU driver (``struct iommu_ops``):
    capable(DIRTY_TRACKING), whether NEST_PARENT domains can be made, hw_info and its type,
    and the device's PASID width."""

    @property
    def dirty_tracking(self) -> bool: ...

    @property
    def nesting(self) -> bool: ...

    @property
    def hw_info_type(self) -> int: ...

    @property
    def max_pasid_log2(self) -> int: ...

    @property
    def owner(self) -> str:
        """Which driver's domains these are (``domain->owner``, the ops)."""
        ...

    def hw_info(self) -> bytes: ...

    def domain_alloc_nested(self, caller: Caller, parent: UserHwpt, flags: int, data_type: int,
                            data_len: int, uptr: int) -> NestedDomain:
        """``ops->domain_alloc_nested`` with FAULT_ID_VALID already taken out of ``flags``."""
        ...


class ContextObject:
    """An object of a kind another module owns (the selftest's IOMMUFD_OBJ_SELFTEST and
    IOMMUFD_OBJ_ACCESS): the objects table holds it, and IOMMU_DESTROY or the context's release
    call :meth:`destroy`. What else holds it, what it holds, and whether it keeps the context
    alive, it says itself."""

    #: Whether the object holds a reference on the context (an access: iommufd_ctx_get).
    holds_context = False

    def extra_users(self) -> int:
        """References on the object besides the objects table's (its driver's, for instance)."""
        return 0

    def holds(self, obj: object) -> bool:
        """Whether the object holds a reference on ``obj`` (an access on its IOAS)."""
        return False

    def destroy(self, ctx: IommufdContext) -> None:
        """The object's destructor (the kernel's ``iommufd_object_ops.destroy``)."""


class IommufdContext:
    """``struct iommufd_ctx``: the objects of one open /dev/iommu file.

    ``as_vfio_container`` is set when the context was opened through /dev/vfio/vfio on a kernel
    built with CONFIG_IOMMUFD_VFIO_CONTAINER: locked memory is then accounted per process, as
    type1 does (main.c:iommufd_fops_open), instead of per user.

    The context lives while its file is open, a VFIO group is attached to it, or a device is
    bound to it (each holds a reference, main.c:iommufd_ctx_get); then every object is
    destroyed and every pin given back (iommufd_fops_release).
    """

    def __init__(self, iommu: IommuConfig, accounting: Accounting | None = None, *,
                 as_vfio_container: bool = False, owners: OwnerRegistry | None = None,
                 test_cmd: bool = False) -> None:
        self.iommu_config = iommu
        self.accounting = accounting if accounting is not None else Accounting()
        # Who each IOAS's translation-table entries belong to (engine-wide, shared with type1).
        self.owners = owners if owners is not None else OwnerRegistry()
        self.as_vfio_container = as_vfio_container
        self.account_mm = as_vfio_container
        self.objects: dict[int, object] = {}
        self.compat: Ioas | None = None
        self.hwpts: list[HwptPaging] = []  # creation order: the order auto domains are tried
        self.groups: list[Group] = []
        self.devices: list[BoundDevice] = []
        self.file_open = True
        # The IOMMU every device sits behind, as the intel driver sees it (GET_HW_INFO, the
        # flags HWPT_ALLOC accepts).
        self.vtd = (VtdIommu.with_dirty_tracking(iommu.address_width) if iommu.dirty_tracking
                    else VtdIommu.qemu(iommu.address_width))
        # IOMMU_TEST_CMD (CONFIG_IOMMUFD_TEST): its slot exists only with a handler.
        self.selftest: MockSelftest | None = None
        if test_cmd:
            from .iommufd_mock import MockSelftest
            self.selftest = MockSelftest()

    # ---- object ids: the lowest free id in [1, 2^31-1], reused as soon as it is freed
    def allocate_id(self, obj: object) -> int:
        new_id = 1
        while new_id in self.objects:
            new_id += 1
        self.objects[new_id] = obj
        return new_id

    def id_of(self, obj: object) -> int:
        return next(i for i, o in self.objects.items() if o is obj)

    def users(self, obj: object) -> int:
        """The object's reference count (spec §2.2 O3): the table's, plus what holds it."""
        if isinstance(obj, Ioas):
            return (1 + sum(1 for h in self.hwpts if h.ioas is obj)
                    + sum(1 for o in self.objects.values() if isinstance(o, ContextObject) and o.holds(obj)))
        if isinstance(obj, Hwpt):
            return 1 + len(obj.devices) + sum(
                1 for o in self.objects.values()
                if (isinstance(o, HwptNested) and o.parent is obj and o.viommu is None)
                or (isinstance(o, ContextObject) and o.holds(obj))  # a vIOMMU on its parent
            ) + sum(1 for d in self.devices for h in d.pasids.values() if h is obj)
        if isinstance(obj, BoundDevice):
            # the table, its driver, its attachments (iommufd_device_attach, per PASID too)
            return 2 + (obj.hwpt is not None) + len(obj.pasids)
        if isinstance(obj, ContextObject):
            return 1 + obj.extra_users() + sum(
                1 for o in self.objects.values() if isinstance(o, Hwpt) and o.fault is obj)
        return 1

    def get_object(self, object_id: int, kind: type[_Obj], what: str) -> _Obj:
        """iommufd_get_object(ictx, id, type): ENOENT for a missing id or another type."""
        obj = self.objects.get(object_id)
        if not isinstance(obj, kind):
            raise KernelError(errno.ENOENT, f"no {what} {object_id}")
        return obj

    def get_ioas(self, object_id: int) -> Ioas:
        """iommufd_get_ioas."""
        return self.get_object(object_id, Ioas, "IOAS")

    def destroy(self, object_id: int) -> None:
        """IOMMU_DESTROY (iommufd_object_remove): ENOENT, EBUSY while anything holds it."""
        obj = self.objects.get(object_id)
        if obj is None:
            raise KernelError(errno.ENOENT, f"no object {object_id}")
        if self.users(obj) > 1:
            raise KernelError(errno.EBUSY, f"object {object_id} is in use")
        del self.objects[object_id]
        self._destructor(obj)

    def abort_and_destroy(self, object_id: int) -> None:
        """iommufd_object_abort_and_destroy: an object whose ioctl failed after its id was
        allocated (typically writing the id back) loses the id and is destroyed."""
        self._destructor(self.objects.pop(object_id))

    def _destructor(self, obj: object) -> None:
        if isinstance(obj, Ioas):
            obj.destroy()
            if obj is self.compat:
                self.compat = None  # destroying the compat IOAS unselects it
        elif isinstance(obj, HwptPaging):
            self.hwpts.remove(obj)
            obj.ioas.remove_domain(obj.domain)
            self._sync_dirty_tracking(obj.ioas)  # a tracking domain went with it
        elif isinstance(obj, HwptNested):
            pass  # iommufd_hwpt_nested_destroy: its references on the parent and fault go
        elif isinstance(obj, ContextObject):
            obj.destroy(self)

    # ---- lifetime
    def close_file(self) -> None:
        """The iommufd file's last close. Attached groups and bound devices keep the context."""
        self.file_open = False
        self._release_if_unused()

    def release_if_unused(self) -> None:
        """Something that held the context let go of it (a fault queue's fd closed)."""
        self._release_if_unused()

    def _release_if_unused(self) -> None:
        if self.file_open or self.groups or any(d.holds_context for d in self.devices) or any(
                isinstance(o, ContextObject) and o.holds_context for o in self.objects.values()):
            return
        # iommufd_fops_release: passes in id order over the objects only the table holds.
        while self.objects:
            freed = [i for i in sorted(self.objects) if self.users(self.objects[i]) == 1]
            if not freed:
                log.warning("iommufd release: objects %s still referenced", sorted(self.objects))
                break
            for object_id in freed:
                obj = self.objects.pop(object_id)
                self._destructor(obj)

    def drop_object(self, obj: ContextObject) -> None:
        """An object its owner destroyed itself (an access whose fd was closed): it leaves the
        table, and the context goes if that was the last thing holding it."""
        del self.objects[self.id_of(obj)]
        self._release_if_unused()

    # ---- the compat IOAS (vfio_compat.c)
    def compat_ioas(self) -> Ioas:
        """get_compat_ioas: the IOAS the VFIO ioctls act on; ENODEV without one."""
        if self.compat is None:
            raise KernelError(errno.ENODEV, "no compat IOAS: no VFIO group attached and none selected")
        return self.compat

    def ensure_compat_ioas(self) -> Ioas:
        """iommufd_vfio_compat_ioas_create: the selected IOAS, else a new ordinary IOAS object
        (the next free id), selected."""
        if self.compat is None:
            ioas = Ioas(self.accounting, self.owners)
            self.allocate_id(ioas)
            self.compat = ioas
        return self.compat

    def attach_group(self, group: Group) -> None:
        """VFIO_GROUP_SET_CONTAINER(iommufd): the group holds the context; no domain yet (that
        comes with the first device the group opens)."""
        self.ensure_compat_ioas()
        self.groups.append(group)

    def detach_group(self, group: Group) -> None:
        """The mappings live in the IOAS, not with the groups: nothing is torn down."""
        self.groups.remove(group)
        self._release_if_unused()

    # ---- devices (device.c: bind, attach, replace, detach, unbind; for both VFIO paths)
    def bind_device(self, name: str, group: int | None = None) -> BoundDevice:
        """iommufd_device_bind: a DEVICE object (the next free id) that holds the context
        until it is unbound; not attached to anything, so the device's DMA is blocked. The
        DMA-ownership check across contexts (EBUSY) is the caller's: it needs every context."""
        return self.bind(BoundDevice(name, group))

    def bind(self, device: BoundDevice) -> BoundDevice:
        """Bind a device object made by its driver (a mock device): the next free id."""
        self.allocate_id(device)
        self.devices.append(device)
        return device

    def bind_group_device(self, name: str, group: int | None = None) -> BoundDevice:
        """A VFIO group's first open of device ``name``: bind it (a DEVICE object, next id),
        then attach it to the compat IOAS (ENODEV if that was cleared or destroyed) through an
        automatic domain (vfio_iommufd_compat_attach_ioas). Any failure unbinds; the caller
        reports the errno."""
        device = self.bind_device(name, group)
        try:
            self.attach_device(device, self.compat_ioas())
        except KernelError:
            self.unbind_device(device)
            raise
        return device

    def attach_device(self, device: BoundDevice, ioas: Ioas) -> HwptPaging:
        """iommufd_device_attach to an IOAS: an automatic domain of it (shared if one fits,
        else a new one). Failure leaves no trace."""
        hwpt, _ = self._auto_domain(device, ioas, replace=False)
        return hwpt

    def attach_pt(self, device: BoundDevice, pt_id: int) -> int:
        """vfio_iommufd_physical_attach_ioas: iommufd_device_attach, or iommufd_device_replace
        when the device is attached already (a second ATTACH replaces). ``pt_id`` names an IOAS
        (an automatic domain is used) or a paging HWPT (used as is); returns the id of the HWPT
        the device is now attached to. ENOENT for no such object, EINVAL for another type of
        object or a HWPT its IOMMU group cannot join; on failure nothing changed
        (iommufd_device_change_pt)."""
        obj = self.objects.get(pt_id)
        if obj is None:
            raise KernelError(errno.ENOENT, f"no object {pt_id}")
        replace = device.hwpt is not None
        if isinstance(obj, Hwpt):
            old = self._replace(device, obj) if replace else self._attach(device, obj)
            hwpt = obj
        elif isinstance(obj, Ioas):
            hwpt, old = self._auto_domain(device, obj, replace=replace)
        else:
            raise KernelError(errno.EINVAL, f"object {pt_id} is neither an IOAS nor a HWPT")
        if old is not None:
            self._hwpt_put(old)
        return self.id_of(hwpt)

    def _group_hwpt(self, device: BoundDevice) -> Hwpt | None:
        """``igroup->hwpt``: what the device's IOMMU group is attached to in this context."""
        for other in self.devices:
            if other.hwpt is not None and (other is device or (
                    device.group is not None and other.group == device.group)):
                return other.hwpt
        return None

    def _group_attached(self, device: BoundDevice, hwpt: Hwpt) -> list[BoundDevice]:
        """``igroup->device_list``: the devices of ``device``'s group attached to ``hwpt``."""
        return [d for d in hwpt.devices
                if d is device or (device.group is not None and d.group == device.group)]

    def _attach(self, device: BoundDevice, hwpt: Hwpt) -> Hwpt | None:
        """iommufd_hw_pagetable_attach: the group may not be on another HWPT (EINVAL); the
        device's reserved regions are reserved in the HWPT's IOAS (EADDRINUSE). Returns
        None: unlike a replace, nothing is left for the caller to put."""
        current = self._group_hwpt(device)
        if current is not None and current is not hwpt:
            raise KernelError(errno.EINVAL, "the device's IOMMU group is attached to another HWPT")
        if current is None:
            self._pasid_compat(device, hwpt, None)
        device.check_attach(hwpt)
        hwpt.ioas.reserve_device_regions(self.iommu_config.reserved_regions, device)
        hwpt.devices.append(device)
        device.hwpt = hwpt
        return None

    def _replace(self, device: BoundDevice, hwpt: Hwpt) -> Hwpt | None:
        """iommufd_device_do_replace: the whole group moves to ``hwpt`` (EINVAL if the device
        is not attached); the same HWPT is a no-op. The devices' reserved regions move when
        the IOAS changes (EADDRINUSE leaves everything as it was). Returns the old HWPT, which
        the caller puts (an automatic one dies with its last device)."""
        old = self._group_hwpt(device)
        if old is None or device.hwpt is None:
            raise KernelError(errno.EINVAL, "the device is not attached")
        if hwpt is old:
            return None
        members = self._group_attached(device, old)
        self._pasid_compat(device, hwpt, None)
        for member in members:
            member.check_attach(hwpt)
        regions = self.iommu_config.reserved_regions
        if hwpt.ioas is not old.ioas:
            done: list[BoundDevice] = []
            try:
                for member in members:
                    hwpt.ioas.reserve_device_regions(regions, member)
                    done.append(member)
            except KernelError:
                for member in done:
                    hwpt.ioas.remove_reserved(member)
                raise
            for member in members:
                old.ioas.remove_reserved(member)
        for member in members:
            old.devices.remove(member)
            hwpt.devices.append(member)
            member.hwpt = hwpt
            _auto_respond_faults(old, member)
        return old

    def _auto_domain(self, device: BoundDevice, ioas: Ioas, *,
                     replace: bool) -> tuple[HwptPaging, Hwpt | None]:
        """iommufd_device_auto_get_domain: the IOAS's automatic HWPTs in creation order (one
        the group cannot join, EINVAL, is skipped; any other error fails), else a new one
        (iommufd_hwpt_paging_alloc): its id is taken first; for an attach the device is
        attached before the domain joins the IOAS, for a replace after (EINVAL, EADDRINUSE,
        EFAULT, ENOMEM; a failure frees the id). Returns the HWPT and the one replaced."""
        for hwpt in list(self.hwpts):
            if hwpt.ioas is not ioas or not hwpt.auto:
                continue
            try:
                old = self._replace(device, hwpt) if replace else self._attach(device, hwpt)
            except KernelError as e:
                if e.errno == errno.EINVAL:
                    continue
                raise
            return hwpt, old
        hwpt = HwptPaging(ioas, device.new_domain(self.iommu_config), auto=True)
        hwpt_id = self.allocate_id(hwpt)
        old = None
        try:
            if replace:
                ioas.add_domain(hwpt.domain)
                try:
                    old = self._replace(device, hwpt)
                except KernelError:
                    ioas.remove_domain(hwpt.domain)
                    raise
            else:
                self._attach(device, hwpt)
                try:
                    ioas.add_domain(hwpt.domain)
                except KernelError:
                    self._detach(device)
                    raise
        except KernelError:
            del self.objects[hwpt_id]
            raise
        self.hwpts.append(hwpt)
        return hwpt, old

    def _detach(self, device: BoundDevice) -> Hwpt | None:
        """iommufd_hw_pagetable_detach: the device leaves its HWPT and gives back its
        reservations (and its unanswered page faults are answered INVALID); returns the HWPT
        for the caller to put."""
        hwpt = device.hwpt
        if hwpt is None:
            return None
        hwpt.devices.remove(device)
        device.hwpt = None
        hwpt.ioas.remove_reserved(device)
        _auto_respond_faults(hwpt, device)
        return hwpt

    def _hwpt_put(self, hwpt: Hwpt) -> None:
        """iommufd_hw_pagetable_put: an automatic HWPT goes with its last device (unpinning
        everything if it was the IOAS's last domain); a manual one stays."""
        if isinstance(hwpt, HwptPaging) and hwpt.auto and not hwpt.devices and hwpt in self.hwpts:
            del self.objects[self.id_of(hwpt)]
            self._destructor(hwpt)

    def detach_device(self, device: BoundDevice) -> None:
        """iommufd_device_detach (vfio_iommufd_physical_detach_ioas; nothing if not attached):
        the device's DMA is blocked again."""
        hwpt = self._detach(device)
        if hwpt is not None:
            self._hwpt_put(hwpt)

    # ---- PASID attachments (device.c with a pasid other than IOMMU_NO_PASID; iommu.c:
    # iommu_attach_device_pasid, iommu_replace_device_pasid, iommu_detach_device_pasid)
    def _group_members(self, device: BoundDevice) -> list[BoundDevice]:
        """The devices of ``device``'s IOMMU group bound to this context."""
        return [d for d in self.devices
                if d is device or (device.group is not None and d.group == device.group)]

    def _group_pasid_hwpt(self, device: BoundDevice, pasid: int) -> Hwpt | None:
        """``igroup->pasid_attach[pasid]->hwpt``: what the group is attached to at ``pasid``."""
        for other in self._group_members(device):
            if pasid in other.pasids:
                return other.pasids[pasid]
        return None

    def _pasid_compat(self, device: BoundDevice, hwpt: Hwpt, pasid: int | None) -> None:
        """iommufd_hwpt_pasid_compat (EINVAL). For the RID (``pasid`` None): a HWPT not
        allocated with IOMMU_HWPT_ALLOC_PASID while the group has anything attached at a
        PASID. At a PASID: such a HWPT, or a RID attached to one."""
        if pasid is None:
            if not hwpt.pasid_compat and any(d.pasids for d in self._group_members(device)):
                raise KernelError(errno.EINVAL, "a PASID is attached: the RID needs a "
                                                "PASID-compatible HWPT")
            return
        if not hwpt.pasid_compat:
            raise KernelError(errno.EINVAL, "the HWPT was not allocated IOMMU_HWPT_ALLOC_PASID")
        rid = self._group_hwpt(device)
        if rid is not None and not rid.pasid_compat:
            raise KernelError(errno.EINVAL, "the RID is attached to a HWPT that is not "
                                            "PASID-compatible")

    def _domain_owner_check(self, device: BoundDevice, hwpt: Hwpt) -> None:
        """iommu_attach/replace_device_pasid: a domain of another driver (``domain->owner``
        other than the device's ops) is EINVAL."""
        paging = hwpt.parent if isinstance(hwpt, HwptNested) else hwpt
        owner = getattr(paging, "owner", "")
        if owner and owner != device.iommu_driver(self).owner:
            raise KernelError(errno.EINVAL, "a domain of another IOMMU driver")

    def _set_group_pasid(self, device: BoundDevice, hwpt: Hwpt, pasid: int,
                         old: Hwpt | None) -> None:
        """__iommu_set_group_pasid: each device of the group with a PASID width gets the
        driver's set_dev_pasid; a failure reverts the devices done before it (to ``old``, or
        blocked) but not the failing one, and is returned."""
        done: list[BoundDevice] = []
        for member in self._group_members(device):
            if not self._max_pasids(member):
                continue
            try:
                member.set_dev_pasid(hwpt, pasid, old)
            except KernelError:
                for prev in done:
                    prev.set_dev_pasid(old, pasid, hwpt)
                raise
            done.append(member)

    def _max_pasids(self, device: BoundDevice) -> int:
        """``dev->iommu->max_pasids``: 1 << the driver's PASID width, 0 without PASID support."""
        log2 = device.iommu_driver(self).max_pasid_log2
        return 1 << log2 if log2 else 0

    def _pasid_do_attach(self, device: BoundDevice, pasid: int, hwpt: Hwpt) -> Hwpt | None:
        """iommufd_hw_pagetable_attach at a PASID: the device already attached there is EBUSY
        (its slot in the attach's device array), the group at another HWPT EINVAL; no reserved
        regions. The group's first attach then goes to the hardware
        (iommufd_hwpt_attach_device): iommufd_hwpt_pasid_compat (EINVAL), then
        iommu_attach_device_pasid: a domain of another driver (EINVAL), a PASID at or past the
        width of the device, or of a group device with a width (EINVAL), then the driver's
        set_dev_pasid. Returns None (nothing to put)."""
        current = self._group_pasid_hwpt(device, pasid)
        if pasid in device.pasids:
            raise KernelError(errno.EBUSY, f"{device.name} is already attached at PASID {pasid}")
        if current is not None and current is not hwpt:
            raise KernelError(errno.EINVAL, f"the group is attached to another HWPT at PASID {pasid}")
        if current is None:
            self._pasid_compat(device, hwpt, pasid)
            self._domain_owner_check(device, hwpt)
            widths = [self._max_pasids(d) for d in self._group_members(device)]
            if pasid >= self._max_pasids(device) or any(w and pasid >= w for w in widths):
                raise KernelError(errno.EINVAL, f"PASID {pasid} is past the device's PASID width")
            self._set_group_pasid(device, hwpt, pasid, None)
        device.pasids[pasid] = hwpt
        return None

    def _pasid_do_replace(self, device: BoundDevice, pasid: int, hwpt: Hwpt) -> Hwpt | None:
        """iommufd_device_do_replace at a PASID: nothing attached there (EINVAL), this device
        not attached there (EINVAL), the same HWPT (a no-op); then iommufd_hwpt_replace_device:
        iommufd_hwpt_pasid_compat (EINVAL), iommu_replace_device_pasid (a domain of another
        driver EINVAL; the driver's set_dev_pasid for the group, whose failure leaves the old
        HWPT). Every device of the group at that PASID moves; returns the old HWPT to put.
        (The kernel answers pending faults of the *new* HWPT for the old handle here, i.e.
        none: the old HWPT's stay queued.)"""
        old = self._group_pasid_hwpt(device, pasid)
        if old is None or pasid not in device.pasids:
            raise KernelError(errno.EINVAL, f"{device.name} is not attached at PASID {pasid}")
        if hwpt is old:
            return None
        self._pasid_compat(device, hwpt, pasid)
        self._domain_owner_check(device, hwpt)
        self._set_group_pasid(device, hwpt, pasid, old)
        for member in self._group_members(device):
            if member.pasids.get(pasid) is old:
                member.pasids[pasid] = hwpt
        return old

    def _pasid_change_pt(self, device: BoundDevice, pasid: int, pt_id: int, *,
                         replace: bool) -> int:
        """iommufd_device_change_pt at a PASID: the object (ENOENT); a HWPT (paging or nested)
        is used as is; an IOAS goes through iommufd_device_auto_get_domain: its automatic
        HWPTs (EINVAL skips one), else a new automatic domain -- never PASID-compatible, so the
        attach or replace fails with the same checks (EINVAL) and the new HWPT is freed again;
        any other object EINVAL. Returns the HWPT id now attached."""
        obj = self.objects.get(pt_id)
        if obj is None:
            raise KernelError(errno.ENOENT, f"no object {pt_id}")
        do = self._pasid_do_replace if replace else self._pasid_do_attach
        if isinstance(obj, Hwpt):
            old = do(device, pasid, obj)
            if old is not None:
                self._hwpt_put(old)
            return pt_id
        if not isinstance(obj, Ioas):
            raise KernelError(errno.EINVAL, f"object {pt_id} is neither an IOAS nor a HWPT")
        for hwpt in list(self.hwpts):
            if hwpt.ioas is not obj or not hwpt.auto:
                continue
            try:
                old = do(device, pasid, hwpt)
            except KernelError as e:
                if e.errno == errno.EINVAL:
                    continue
                raise
            if old is not None:
                self._hwpt_put(old)
            return self.id_of(hwpt)
        hwpt = HwptPaging(obj, device.new_domain(self.iommu_config), auto=True)
        hwpt_id = self.allocate_id(hwpt)
        try:
            if replace:  # not immediate: the domain joins the IOAS first
                obj.add_domain(hwpt.domain)
                try:
                    do(device, pasid, hwpt)
                finally:
                    obj.remove_domain(hwpt.domain)
            else:
                do(device, pasid, hwpt)
        finally:
            del self.objects[hwpt_id]
        raise AssertionError("an automatic HWPT is never PASID-compatible")  # pragma: no cover

    def attach_pasid(self, device: BoundDevice, pasid: int, pt_id: int) -> int:
        """iommufd_device_attach with a PASID; returns the HWPT id."""
        return self._pasid_change_pt(device, pasid, pt_id, replace=False)

    def replace_pasid(self, device: BoundDevice, pasid: int, pt_id: int) -> int:
        """iommufd_device_replace with a PASID; returns the HWPT id."""
        return self._pasid_change_pt(device, pasid, pt_id, replace=True)

    def detach_pasid(self, device: BoundDevice, pasid: int) -> None:
        """iommufd_device_detach with a PASID (iommufd_hw_pagetable_detach): nothing if not
        attached there. The group's last device there leaves the hardware
        (iommu_detach_device_pasid: the blocked domain's set_dev_pasid for each group device
        with a PASID width) and its pending page faults are answered INVALID."""
        hwpt = device.pasids.pop(pasid, None)
        if hwpt is None:
            return
        if self._group_pasid_hwpt(device, pasid) is None:
            for member in self._group_members(device):
                if self._max_pasids(member):
                    member.set_dev_pasid(None, pasid, hwpt)
            _auto_respond_faults(hwpt, device)
        self._hwpt_put(hwpt)

    def unbind_device(self, device: BoundDevice, *, release: bool = True) -> None:
        """vfio_iommufd_physical_unbind: detach, then destroy the DEVICE object; the device's
        reference on the context goes with it. ``release=False`` from a destructor that the
        context's release itself runs. PASID attachments still there (a driver bug the kernel
        WARNs about) are detached first."""
        for pasid in list(device.pasids):
            self.detach_pasid(device, pasid)
        from .iommufd_viommu import remove_vdevice
        remove_vdevice(self, device)
        self.detach_device(device)
        del self.objects[self.id_of(device)]
        self.devices.remove(device)
        if release:
            self._release_if_unused()

    # ---- dispatch
    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        nr = ioc_nr(cmd)
        end = _NATIVE_END if self.selftest is None else _TEST_CMD_NR + 1
        if nr < I.IOMMUFD_CMD_BASE or nr >= end:
            return self.vfio_ioctl(caller, cmd, arg)
        user_size = read_u32(caller, arg)
        if nr == _TEST_CMD_NR and self.selftest is not None:  # the table's last slot
            selftest = self.selftest
            op: NativeIoctl | None = NativeIoctl(
                I.IOMMU_TEST_CMD, I.TEST_CMD, lambda c, caller, d, a: selftest.ioctl(c, caller, d, a))
        else:
            op = NATIVE_IOCTLS.get(nr)
        if op is None or op.cmd != cmd:
            raise KernelError(errno.ENOTTY, f"iommufd has no ioctl {cmd:#x}")
        if user_size < op.layout.min_size:
            raise KernelError(errno.EINVAL, f"size {user_size} is below the minimum {op.layout.min_size}")
        data = copy_struct_from_user(caller, arg, user_size, op.layout.size)
        if op.handler is None:
            log.warning("iommufd ioctl %#x is not emulated yet; answering ENOTTY", cmd)
            raise KernelError(errno.ENOTTY, "not emulated yet")
        return op.handler(self, caller, data, arg)

    def vfio_ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        """iommufd_vfio_ioctl: the legacy container ioctls on an iommufd."""
        if cmd == V.VFIO_GET_API_VERSION:
            return V.VFIO_API_VERSION
        if cmd == V.VFIO_CHECK_EXTENSION:
            return self.check_extension(arg)
        if cmd == V.VFIO_SET_IOMMU:
            return self.set_iommu(arg)
        if cmd == V.VFIO_IOMMU_GET_INFO:
            return self.vfio_get_info(caller, arg)
        if cmd == V.VFIO_IOMMU_MAP_DMA:
            return self.vfio_map_dma(caller, arg)
        if cmd == V.VFIO_IOMMU_UNMAP_DMA:
            return self.vfio_unmap_dma(caller, arg)
        raise KernelError(errno.ENOTTY, f"iommufd has no VFIO compat ioctl {cmd:#x}")

    def check_extension(self, arg: int) -> int:
        """iommufd_vfio_check_extension: fixed answers, except DMA_CC_IOMMU, which asks the
        compat IOAS (ENODEV without one) whether all its domains enforce cache coherency."""
        if arg in (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU, V.VFIO_UNMAP_ALL):
            return 1
        if arg == V.VFIO_DMA_CC_IOMMU:
            return 1 if self.compat_ioas().enforces_cache_coherency() else 0
        # NOIOMMU needs CONFIG_VFIO_NOIOMMU (off); UPDATE_VADDR is deliberately unsupported.
        return 0

    def set_iommu(self, arg: int) -> int:
        """iommufd_vfio_set_iommu: type1 or type1v2 (EINVAL), a compat IOAS (ENODEV); type1
        (v1) turns large pages off so that any page can later be unmapped out of a mapping.
        Repeatable; nothing else is recorded."""
        if arg not in (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU):
            raise KernelError(errno.EINVAL, f"VFIO_SET_IOMMU: iommufd emulates only type1, not {arg}")
        ioas = self.compat_ioas()
        if arg == V.VFIO_TYPE1_IOMMU:
            ioas.disable_large_pages()
        return 0

    def vfio_get_info(self, caller: Caller, arg: int) -> int:
        """iommufd_vfio_iommu_get_info. Unlike type1, each capability is written as far as
        the buffer reaches: DMA_AVAIL (12 bytes, slot padded to 16) when it fits whole, each
        IOVA range that fits, the IOVA_RANGE header only when all ranges fit, DMA_AVAIL's
        ``next`` once the second capability's slot begins inside ``argsz``. ``argsz`` always
        becomes the full size; ``cap_offset`` is set only when everything fitted."""
        _, fields = read_argsz_struct(caller, arg, V.TYPE1_INFO, _COMPAT_INFO_MINSZ, "VFIO_IOMMU_GET_INFO")
        argsz = int_field(fields, "argsz")
        write_back = min(argsz, V.TYPE1_INFO.size)
        ioas = self.compat_ioas()
        pgsizes = ioas.vfio_pgsizes()
        total = V.TYPE1_INFO.size
        dma_avail = V.CAP_DMA_AVAIL.pack(id=V.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version=1, next=0,
                                         avail=_U32_MAX)
        if argsz - total >= len(dma_avail):
            copy_out(caller, arg + total, dma_avail)
        dma_avail_at = total
        total += _cap_slot(len(dma_avail))
        ranges = ioas.iova_ranges()
        avail = argsz - total if argsz > total else 0
        for k, (start, last) in enumerate(ranges):
            if avail >= V.CAP_IOVA_RANGE.size + V.IOVA_RANGE.size * (k + 1):
                copy_out(caller, arg + total + V.CAP_IOVA_RANGE.size + V.IOVA_RANGE.size * k,
                         V.IOVA_RANGE.pack(start=start, end=last))
        iova_cap_size = V.CAP_IOVA_RANGE.size + V.IOVA_RANGE.size * len(ranges)
        if avail >= iova_cap_size:
            copy_out(caller, arg + total, V.CAP_IOVA_RANGE.pack(
                id=V.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, version=1, next=0,
                nr_iovas=len(ranges), reserved=0))
        if argsz >= total:
            copy_out(caller, arg + dma_avail_at + V.INFO_CAP_HEADER.offset("next"),
                     total.to_bytes(4, "little"))
        total += _cap_slot(iova_cap_size)
        info = V.TYPE1_INFO.pack(argsz=total, flags=V.VFIO_IOMMU_INFO_PGSIZES | V.VFIO_IOMMU_INFO_CAPS,
                                 iova_pgsizes=pgsizes,
                                 cap_offset=V.TYPE1_INFO.size if argsz >= total else 0, pad=0)
        copy_out(caller, arg, info[:write_back])
        return 0

    def vfio_map_dma(self, caller: Caller, arg: int) -> int:
        """iommufd_vfio_map_dma: a FIXED_IOVA IOAS map of ``vaddr``. READ/WRITE only (VADDR is
        EINVAL), neither is fine; no entry limit. Nothing is written back."""
        _, fields = read_argsz_struct(caller, arg, V.DMA_MAP, V.DMA_MAP.size, "VFIO_IOMMU_MAP_DMA")
        flags = int_field(fields, "flags")
        if flags & ~_COMPAT_MAP_FLAGS:
            raise KernelError(errno.EINVAL, "iommufd's VFIO compat supports only READ|WRITE map flags")
        ioas = self.compat_ioas()
        # READ and WRITE have IOMMU_READ's and IOMMU_WRITE's values.
        ioas.map_user(caller, int_field(fields, "iova"), int_field(fields, "vaddr"), int_field(fields, "size"),
                      flags, account_mm=self.account_mm)
        return 0

    def vfio_unmap_dma(self, caller: Caller, arg: int) -> int:
        """iommufd_vfio_unmap_dma. After the argument checks and the v1 cuts, the 24 bytes are
        written back with ``size`` = the bytes actually unmapped -- also when the unmap
        failed, reporting what was removed before the failure."""
        raw, fields = read_argsz_struct(caller, arg, V.DMA_UNMAP, V.DMA_UNMAP.size, "VFIO_IOMMU_UNMAP_DMA")
        flags, iova, size = int_field(fields, "flags"), int_field(fields, "iova"), int_field(fields, "size")
        if flags & ~V.VFIO_DMA_UNMAP_FLAG_ALL:
            raise KernelError(errno.EINVAL, "iommufd's VFIO compat supports only the ALL unmap flag")
        ioas = self.compat_ioas()
        failure: KernelError | None = None
        unmapped = 0
        if flags & V.VFIO_DMA_UNMAP_FLAG_ALL:
            if iova or size:
                raise KernelError(errno.EINVAL, "UNMAP_DMA(ALL): iova and size must be 0")
            try:
                unmapped = ioas.unmap_all()
            except UnmapError as e:
                failure, unmapped = e, e.unmapped
        else:
            if ioas.large_pages_disabled:
                # Cut at the range's last byte and just before its first (none before IOVA 0),
                # computed in 64-bit arithmetic as the kernel does.
                cuts = [(iova + size - 1) & U64_MAX, (iova - 1) & U64_MAX]
                ioas.cut(cuts if iova else cuts[:1])
            try:
                unmapped = ioas.unmap_iova(iova, size)
            except UnmapError as e:
                failure, unmapped = e, e.unmapped
        V.DMA_UNMAP.write_fields(raw, size=unmapped)
        copy_out(caller, arg, bytes(raw))
        if failure is not None:
            raise failure
        return 0

    # ---- native IOAS ioctls (ioas.c)
    def ioas_alloc(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_ioas_alloc_ioctl: a fresh IOAS; if the id cannot be written back the IOAS is
        destroyed again and its id freed."""
        if I.IOAS_ALLOC.unpack(data)["flags"]:
            raise KernelError(errno.EOPNOTSUPP, "IOAS_ALLOC: flags")
        ioas = Ioas(self.accounting, self.owners)
        ioas_id = self.allocate_id(ioas)
        I.IOAS_ALLOC.write_fields(data, out_ioas_id=ioas_id)
        try:
            ucmd_respond(caller, arg, data)
        except KernelError:
            del self.objects[ioas_id]
            raise
        return 0

    def ioas_iova_ranges(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_ioas_iova_ranges: as many ranges as ``num_iovas`` allows, then the total
        and the alignment; EMSGSIZE (after the write-back) when the array was too short."""
        fields = I.IOAS_IOVA_RANGES.unpack(data)
        if fields["reserved"]:
            raise KernelError(errno.EOPNOTSUPP, "IOAS_IOVA_RANGES: __reserved")
        ioas = self.get_ioas(int_field(fields, "ioas_id"))
        room, array = int_field(fields, "num_iovas"), int_field(fields, "allowed_iovas")
        ranges = ioas.iova_ranges()
        for k, (start, last) in enumerate(ranges[:room]):
            copy_out(caller, array + k * I.IOVA_RANGE.size, I.IOVA_RANGE.pack(start=start, last=last))
        I.IOAS_IOVA_RANGES.write_fields(data, num_iovas=len(ranges), out_iova_alignment=ioas.iova_alignment)
        ucmd_respond(caller, arg, data)
        if len(ranges) > room:
            raise KernelError(errno.EMSGSIZE, f"{len(ranges)} ranges, room for {room}")
        return 0

    def ioas_allow_iovas(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_ioas_allow_iovas: read every range (EFAULT; EINVAL for one shorter than two
        bytes or overlapping an earlier one), then replace the list (EADDRINUSE if reserved)."""
        fields = I.IOAS_ALLOW_IOVAS.unpack(data)
        if fields["reserved"]:
            raise KernelError(errno.EOPNOTSUPP, "IOAS_ALLOW_IOVAS: __reserved")
        ioas = self.get_ioas(int_field(fields, "ioas_id"))
        array = int_field(fields, "allowed_iovas")
        ranges: list[tuple[int, int]] = []
        for k in range(int_field(fields, "num_iovas")):
            entry = I.IOVA_RANGE.unpack(copy_in(caller, array + k * I.IOVA_RANGE.size, I.IOVA_RANGE.size))
            start, last = int_field(entry, "start"), int_field(entry, "last")
            if start >= last:
                raise KernelError(errno.EINVAL, f"allowed range {k} is shorter than two bytes")
            if any(a <= last and start <= b for a, b in ranges):
                raise KernelError(errno.EINVAL, f"allowed range {k} overlaps an earlier one")
            ranges.append((start, last))
        ioas.set_allowed(ranges)
        return 0

    def ioas_map(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_ioas_map: flags and __reserved (EOPNOTSUPP), 64-bit limits (EOVERFLOW, even
        without FIXED_IOVA), a permission (EINVAL), the IOAS (ENOENT), then the map; the chosen
        IOVA is written back (a failed write-back leaves the mapping in place)."""
        fields = I.IOAS_MAP.unpack(data)
        flags = int_field(fields, "flags")
        if flags & ~_IOAS_MAP_FLAGS or fields["reserved"]:
            raise KernelError(errno.EOPNOTSUPP, "IOAS_MAP: unknown flags or __reserved")
        iova, length = int_field(fields, "iova"), int_field(fields, "length")
        if iova >= U64_MAX or length >= U64_MAX:
            raise KernelError(errno.EOVERFLOW, "IOAS_MAP: iova or length is 2^64-1")
        prot = _map_prot(flags)
        ioas = self.get_ioas(int_field(fields, "ioas_id"))
        fixed = bool(flags & I.IOMMU_IOAS_MAP_FIXED_IOVA)
        iova = ioas.map_user(caller, iova if fixed else None, int_field(fields, "user_va"), length, prot,
                             account_mm=self.account_mm)
        I.IOAS_MAP.write_fields(data, iova=iova)
        ucmd_respond(caller, arg, data)
        return 0

    def ioas_unmap(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_ioas_unmap: the IOAS first (the struct has no flags); iova 0 with length
        2^64-1 means everything (even nothing); a range with nothing in it is ENOENT. Errors
        write nothing back, even after a partial unmap."""
        fields = I.IOAS_UNMAP.unpack(data)
        ioas = self.get_ioas(int_field(fields, "ioas_id"))
        iova, length = int_field(fields, "iova"), int_field(fields, "length")
        if iova == 0 and length == U64_MAX:
            unmapped = ioas.unmap_all()
        else:
            if iova >= U64_MAX or length >= U64_MAX:
                raise KernelError(errno.EOVERFLOW, "IOAS_UNMAP: iova or length is 2^64-1")
            unmapped = ioas.unmap_iova(iova, length)
            if not unmapped:
                # Only the compat UNMAP_DMA accepts an empty range (afb47765f923, 6.18).
                raise KernelError(errno.ENOENT, f"IOAS_UNMAP: nothing mapped in [{iova:#x}, +{length:#x})")
        I.IOAS_UNMAP.write_fields(data, length=unmapped)
        ucmd_respond(caller, arg, data)
        return 0

    def vfio_ioas(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_vfio_ioas: GET (ENODEV without a compat IOAS), SET (any IOAS; no reference
        is taken), CLEAR (the IOAS itself stays)."""
        fields = I.VFIO_IOAS.unpack(data)
        if fields["reserved"]:
            raise KernelError(errno.EOPNOTSUPP, "VFIO_IOAS: __reserved")
        op = int_field(fields, "op")
        if op == I.IOMMU_VFIO_IOAS_GET:
            I.VFIO_IOAS.write_fields(data, ioas_id=self.id_of(self.compat_ioas()))
            ucmd_respond(caller, arg, data)
        elif op == I.IOMMU_VFIO_IOAS_SET:
            self.compat = self.get_ioas(int_field(fields, "ioas_id"))
        elif op == I.IOMMU_VFIO_IOAS_CLEAR:
            self.compat = None
        else:
            raise KernelError(errno.EOPNOTSUPP, f"VFIO_IOAS: op {op}")
        return 0

    # ---- native ioctls of the io page tables (ioas.c, hw_pagetable.c, device.c, main.c)
    def ioas_copy(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_ioas_copy: flags (EOPNOTSUPP), 64-bit limits (EOVERFLOW), a permission
        (EINVAL), the source IOAS (ENOENT) and its pages (iopt_get_pages: EINVAL, EOVERFLOW,
        ENOENT for a gap), the destination IOAS (ENOENT), then one new area per source piece
        sharing the source's pages (no second pin or charge; pinned now, from the process that
        mapped them, if the destination has domains). ``dst_iova`` is written back; a failed
        write-back leaves the copy in place."""
        fields = I.IOAS_COPY.unpack(data)
        flags = int_field(fields, "flags")
        if flags & ~_IOAS_MAP_FLAGS:
            raise KernelError(errno.EOPNOTSUPP, "IOAS_COPY: unknown flags")
        length = int_field(fields, "length")
        src_iova, dst_iova = int_field(fields, "src_iova"), int_field(fields, "dst_iova")
        if length >= U64_MAX or src_iova >= U64_MAX or dst_iova >= U64_MAX:
            raise KernelError(errno.EOVERFLOW, "IOAS_COPY: length or an IOVA is 2^64-1")
        prot = _map_prot(flags)
        segments = self.get_ioas(int_field(fields, "src_ioas_id")).get_pages(src_iova, length)
        dst = self.get_ioas(int_field(fields, "dst_ioas_id"))
        iova = dst.map_segments(segments, length,
                                dst_iova if flags & I.IOMMU_IOAS_MAP_FIXED_IOVA else None, prot)
        I.IOAS_COPY.write_fields(data, dst_iova=iova)
        ucmd_respond(caller, arg, data)
        return 0

    def ioas_map_file(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_ioas_map_file + iopt_map_file_pages: flags (EOPNOTSUPP; offset 12 is the fd,
        not a reserved word), 64-bit limits (EOVERFLOW), a permission (EINVAL), the IOAS
        (ENOENT), length 0 (EINVAL) and start+length-1 past 2^64 (EOVERFLOW), the fd (EBADF),
        then the file's own checks (EPERM: a writable map of a file not open for writing or
        sealed) and the map. Whether the file can be pinned at all (a memfd/shmem or hugetlbfs
        file, the range inside it: EINVAL) is checked only when pages are pinned, i.e. now if
        the IOAS has a domain, else when one comes."""
        fields = I.IOAS_MAP_FILE.unpack(data)
        flags = int_field(fields, "flags")
        if flags & ~_IOAS_MAP_FLAGS:
            raise KernelError(errno.EOPNOTSUPP, "IOAS_MAP_FILE: unknown flags")
        iova, length = int_field(fields, "iova"), int_field(fields, "length")
        if iova >= U64_MAX or length >= U64_MAX:
            raise KernelError(errno.EOVERFLOW, "IOAS_MAP_FILE: iova or length is 2^64-1")
        prot = _map_prot(flags)
        ioas = self.get_ioas(int_field(fields, "ioas_id"))
        start = int_field(fields, "start")
        if not length:
            raise KernelError(errno.EINVAL, "IOAS_MAP_FILE: length 0")
        if start + length - 1 > U64_MAX:
            raise KernelError(errno.EOVERFLOW, f"IOAS_MAP_FILE: {start:#x} + {length:#x} runs past 2^64")
        file = caller.file(int_field(fields, "fd"))
        iova = ioas.map_file(caller, file, iova if flags & I.IOMMU_IOAS_MAP_FIXED_IOVA else None,
                             start, length, prot, account_mm=self.account_mm)
        I.IOAS_MAP_FILE.write_fields(data, iova=iova)
        ucmd_respond(caller, arg, data)
        return 0

    def ioas_change_process(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_ioas_change_process: __reserved (EOPNOTSUPP), then the pins of every IOAS of
        the context move to the calling process (ioas.change_process: EINVAL unless every area
        is a MAP_FILE one, ENOMEM over the caller's RLIMIT_MEMLOCK, nothing changed on either).
        Nothing is written back."""
        if I.IOAS_CHANGE_PROCESS.unpack(data)["reserved"]:
            raise KernelError(errno.EOPNOTSUPP, "IOAS_CHANGE_PROCESS: __reserved")
        change_process([obj for _, obj in sorted(self.objects.items()) if isinstance(obj, Ioas)],
                       caller, self.accounting)
        return 0

    def option(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_option: __reserved (EOPNOTSUPP), then per option (unknown: EOPNOTSUPP).
        Success writes back ``val64`` alone (8 bytes at offset 16), for SET too."""
        fields = I.OPTION.unpack(data)
        if fields["reserved"]:
            raise KernelError(errno.EOPNOTSUPP, "IOMMU_OPTION: __reserved")
        option_id, op = int_field(fields, "option_id"), int_field(fields, "op")
        val64 = int_field(fields, "val64")
        if option_id == I.IOMMU_OPTION_RLIMIT_MODE:
            val64 = self._option_rlimit_mode(caller, op, int_field(fields, "object_id"), val64)
        elif option_id == I.IOMMU_OPTION_HUGE_PAGES:
            val64 = self._option_huge_pages(op, int_field(fields, "object_id"), val64)
        else:
            raise KernelError(errno.EOPNOTSUPP, f"IOMMU_OPTION: option {option_id}")
        copy_out(caller, arg + I.OPTION.offset("val64"), val64.to_bytes(8, "little"))
        return 0

    def _option_rlimit_mode(self, caller: Caller, op: int, object_id: int, val64: int) -> int:
        """iommufd_option_rlimit_mode: global (an object id is EOPNOTSUPP). GET: 1 when pins are
        charged to the mapping process's mm. SET: CAP_SYS_RESOURCE (EPERM), only while the
        context holds no object at all (EBUSY), 0 or 1 (EINVAL)."""
        if object_id:
            raise KernelError(errno.EOPNOTSUPP, "RLIMIT_MODE takes no object id")
        if op == I.IOMMU_OPTION_OP_GET:
            return int(self.account_mm)
        if op != I.IOMMU_OPTION_OP_SET:
            raise KernelError(errno.EOPNOTSUPP, f"RLIMIT_MODE: op {op}")
        if not caller.has_capability(CAP_SYS_RESOURCE):
            raise KernelError(errno.EPERM, "RLIMIT_MODE SET needs CAP_SYS_RESOURCE")
        if self.objects:
            raise KernelError(errno.EBUSY, "RLIMIT_MODE: the context already holds objects")
        if val64 not in (0, 1):
            raise KernelError(errno.EINVAL, f"RLIMIT_MODE: value {val64}")
        self.account_mm = bool(val64)
        return val64

    def _option_huge_pages(self, op: int, object_id: int, val64: int) -> int:
        """iommufd_ioas_option: the IOAS first (ENOENT, also for GET and for object id 0).
        GET: 1 unless large pages are disabled. SET 0: iopt_disable_large_pages (EINVAL once
        domains hold mappings, EADDRINUSE for a misaligned area); SET 1 always works; any other
        value EINVAL, any other op EOPNOTSUPP."""
        ioas = self.get_ioas(object_id)
        if op == I.IOMMU_OPTION_OP_GET:
            return int(not ioas.large_pages_disabled)
        if op != I.IOMMU_OPTION_OP_SET:
            raise KernelError(errno.EOPNOTSUPP, f"HUGE_PAGES: op {op}")
        if val64 == 0:
            ioas.disable_large_pages()
        elif val64 == 1:
            ioas.enable_large_pages()
        else:
            raise KernelError(errno.EINVAL, f"HUGE_PAGES: value {val64}")
        return val64

    def get_device(self, object_id: int) -> BoundDevice:
        """iommufd_get_device."""
        return self.get_object(object_id, BoundDevice, "device")

    # ---------------------------------------------------------------- vIOMMU objects
    # The object model and its rules are engine/iommufd_viommu.py's (viommu.c, eventq.c); only
    # a driver with vIOMMU ops makes one: the selftest's mock IOMMU, never our VT-d.

    def viommu_alloc(self, caller: Caller, data: bytearray, arg: int) -> int:
        """IOMMU_VIOMMU_ALLOC (``iommufd_viommu.viommu_alloc``)."""
        from .iommufd_viommu import viommu_alloc
        return viommu_alloc(self, caller, data, arg)

    def vdevice_alloc(self, caller: Caller, data: bytearray, arg: int) -> int:
        """IOMMU_VDEVICE_ALLOC (``iommufd_viommu.vdevice_alloc``)."""
        from .iommufd_viommu import vdevice_alloc
        return vdevice_alloc(self, caller, data, arg)

    def veventq_alloc(self, caller: Caller, data: bytearray, arg: int) -> int:
        """IOMMU_VEVENTQ_ALLOC (``iommufd_viommu.veventq_alloc``): the answer is a new file,
        like FAULT_QUEUE_ALLOC's."""
        from .iommufd_viommu import veventq_alloc
        return veventq_alloc(self, caller, data, arg)  # type: ignore[return-value]

    def hw_queue_alloc(self, caller: Caller, data: bytearray, arg: int) -> int:
        """IOMMU_HW_QUEUE_ALLOC (``iommufd_viommu.hw_queue_alloc``)."""
        from .iommufd_viommu import hw_queue_alloc
        return hw_queue_alloc(self, caller, data, arg)

    def get_hwpt_paging(self, object_id: int) -> HwptPaging:
        """iommufd_get_hwpt_paging."""
        return self.get_object(object_id, HwptPaging, "paging HWPT")

    def get_hw_info(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_get_hw_info + intel_iommu_hw_info: flags other than INPUT_TYPE and non-zero
        __reserved bytes are EOPNOTSUPP; without INPUT_TYPE the requested type is DEFAULT; the
        device (ENOENT); a requested type other than DEFAULT or INTEL_VTD is EOPNOTSUPP. The
        driver's 24-byte ``iommu_hw_info_vtd`` goes to ``data_uptr``, cut to ``data_len`` or
        followed by zeros up to it (EFAULT); then ``data_len`` = 24, ``out_data_type`` =
        INTEL_VTD, the capabilities (DIRTY_TRACKING when the IOMMU has second-level A/D bits in
        scalable mode) and ``out_max_pasid_log2`` = 0 (no PASID on our devices); respond."""
        fields = I.HW_INFO.unpack(data)
        flags = int_field(fields, "flags")
        if flags & ~I.IOMMU_HW_INFO_FLAG_INPUT_TYPE:
            raise KernelError(errno.EOPNOTSUPP, "GET_HW_INFO: unknown flags")
        if any(bytes(fields["reserved"])):  # type: ignore[arg-type]
            raise KernelError(errno.EOPNOTSUPP, "GET_HW_INFO: __reserved")
        in_type = int_field(fields, "out_data_type") if flags & I.IOMMU_HW_INFO_FLAG_INPUT_TYPE else 0
        driver = self.get_device(int_field(fields, "dev_id")).iommu_driver(self)
        if in_type not in (I.IOMMU_HW_INFO_TYPE_DEFAULT, driver.hw_info_type):
            raise KernelError(errno.EOPNOTSUPP, f"GET_HW_INFO: the driver has no info type {in_type}")
        blob = driver.hw_info()
        user_len, uptr = int_field(fields, "data_len"), int_field(fields, "data_uptr")
        copy_len = min(user_len, len(blob))
        copy_out(caller, uptr, blob[:copy_len])
        if copy_len < user_len:
            copy_out(caller, uptr + copy_len, bytes(user_len - copy_len))
        I.HW_INFO.write_fields(data, data_len=len(blob), out_data_type=driver.hw_info_type,
                               out_max_pasid_log2=driver.max_pasid_log2,
                               out_capabilities=I.IOMMU_HW_CAP_DIRTY_TRACKING if driver.dirty_tracking else 0)
        ucmd_respond(caller, arg, data)
        return 0

    def hwpt_alloc(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_hwpt_alloc: __reserved (EOPNOTSUPP); data_type and data_len must agree
        (EINVAL); the device (ENOENT); ``pt_id`` names anything at all (else EINVAL, not
        ENOENT). On an IOAS, a paging HWPT (iommufd_hwpt_paging_alloc): unknown flags and
        DIRTY_TRACKING without the IOMMU's dirty capability are EOPNOTSUPP before the id is
        taken; the VT-d driver (intel_iommu_domain_alloc_paging_flags) then refuses
        NEST_PARENT without nesting and any driver data (EOPNOTSUPP); the domain joins the IOAS
        (EINVAL, EADDRINUSE, EFAULT, ENOMEM). The device is not attached, and the HWPT is never
        picked as an automatic domain. On a
        paging HWPT, a nested one (iommufd_hwpt_nested_alloc): flags other than FAULT_ID_VALID
        and PASID, or no data (EOPNOTSUPP); an automatic or non-NEST_PARENT parent, or one of
        another driver (EINVAL); then the id is taken, the parent held, and the driver's
        domain_alloc_nested answers (the mock's: :class:`~.iommufd_mock.MockIommu`; no VT-d
        parent can exist here). On a vIOMMU, a nested one of its driver
        (iommufd_viommu.viommu_alloc_hwpt_nested). Any other object, a nested HWPT too:
        EINVAL. FAULT_ID_VALID needs a FAULT object (ENOENT), which the HWPT then holds.
        ``out_hwpt_id`` is written back; if that fails the HWPT is destroyed again."""
        fields = I.HWPT_ALLOC.unpack(data)
        if fields["reserved"]:
            raise KernelError(errno.EOPNOTSUPP, "HWPT_ALLOC: __reserved")
        data_type, data_len = int_field(fields, "data_type"), int_field(fields, "data_len")
        if (data_type == I.IOMMU_HWPT_DATA_NONE) != (data_len == 0):
            raise KernelError(errno.EINVAL, "HWPT_ALLOC: data_type and data_len disagree")
        device = self.get_device(int_field(fields, "dev_id"))
        pt = self.objects.get(int_field(fields, "pt_id"))
        if pt is None:
            raise KernelError(errno.EINVAL, f"HWPT_ALLOC: no object {int_field(fields, 'pt_id')}")
        flags = int_field(fields, "flags")
        hwpt: Hwpt
        if isinstance(pt, Ioas):
            hwpt = self._hwpt_paging_alloc(pt, flags, data_len, device)
        elif isinstance(pt, HwptPaging):
            hwpt = self._hwpt_nested_alloc(caller, pt, device, flags, data_type, data_len,
                                           int_field(fields, "data_uptr"))
        else:
            from .iommufd_viommu import UserData, Viommu, viommu_alloc_hwpt_nested
            if not isinstance(pt, Viommu):
                raise KernelError(errno.EINVAL, "HWPT_ALLOC: pt_id is no IOAS, paging HWPT or vIOMMU")
            hwpt = viommu_alloc_hwpt_nested(self, caller, pt, device, flags, UserData(
                data_type, int_field(fields, "data_uptr"), data_len))
        hwpt_id = self.id_of(hwpt)
        try:
            if flags & I.IOMMU_HWPT_FAULT_ID_VALID:
                from .iommufd_fault import get_fault
                hwpt.fault = get_fault(self, int_field(fields, "fault_id"))
            I.HWPT_ALLOC.write_fields(data, out_hwpt_id=hwpt_id)
            ucmd_respond(caller, arg, data)
        except KernelError:
            self.abort_and_destroy(hwpt_id)
            raise
        return 0

    def _hwpt_paging_alloc(self, ioas: Ioas, flags: int, data_len: int,
                           device: BoundDevice) -> UserHwpt:
        """iommufd_hwpt_paging_alloc without immediate attach, and the device's driver's
        domain_alloc_paging_flags (VT-d's; the mock IOMMU's for a selftest device)."""
        driver = device.iommu_driver(self)
        if flags & ~_HWPT_PAGING_FLAGS:
            raise KernelError(errno.EOPNOTSUPP, f"HWPT_ALLOC: flags {flags:#x}")
        if flags & I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING and not driver.dirty_tracking:
            raise KernelError(errno.EOPNOTSUPP, "the IOMMU cannot track dirty pages")
        if flags & I.IOMMU_HWPT_FAULT_ID_VALID and flags & I.IOMMU_HWPT_ALLOC_NEST_PARENT:
            raise KernelError(errno.EOPNOTSUPP, "a NEST_PARENT HWPT takes no fault queue")
        hwpt = UserHwpt(ioas, device.new_domain(self.iommu_config), flags, owner=driver.owner)
        hwpt_id = self.allocate_id(hwpt)
        try:
            if hwpt.nest_parent and not driver.nesting:
                raise KernelError(errno.EOPNOTSUPP, "the IOMMU cannot nest")
            if data_len:
                raise KernelError(errno.EOPNOTSUPP, "the VT-d driver takes no data for a paging domain")
            ioas.add_domain(hwpt.domain)
        except KernelError:
            del self.objects[hwpt_id]
            raise
        self.hwpts.append(hwpt)
        return hwpt

    def _hwpt_nested_alloc(self, caller: Caller, parent: HwptPaging, device: BoundDevice,
                           flags: int, data_type: int, data_len: int, uptr: int) -> HwptNested:
        """iommufd_hwpt_nested_alloc: flags other than FAULT_ID_VALID and PASID, or no driver
        data (EOPNOTSUPP); an automatic parent, one not allocated NEST_PARENT, or a domain of
        another driver (EINVAL); then the id is taken (freed again on failure) and the driver's
        domain_alloc_nested gets the flags without FAULT_ID_VALID."""
        driver = device.iommu_driver(self)
        if flags & ~(I.IOMMU_HWPT_FAULT_ID_VALID | I.IOMMU_HWPT_ALLOC_PASID) or not data_len:
            raise KernelError(errno.EOPNOTSUPP, "nested HWPT: unknown flags or no driver data")
        if (not isinstance(parent, UserHwpt) or not parent.nest_parent
                or parent.owner != driver.owner):
            raise KernelError(errno.EINVAL, "nested HWPT: the parent is not a NEST_PARENT HWPT "
                                            "of the device's IOMMU driver")
        hwpt_id = self.allocate_id(None)
        try:
            domain = driver.domain_alloc_nested(caller, parent, flags & ~I.IOMMU_HWPT_FAULT_ID_VALID,
                                                data_type, data_len, uptr)
        except KernelError:
            del self.objects[hwpt_id]
            raise
        hwpt = HwptNested(parent, domain)
        hwpt.pasid_compat = bool(flags & I.IOMMU_HWPT_ALLOC_PASID)
        self.objects[hwpt_id] = hwpt
        return hwpt

    def hwpt_invalidate(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_hwpt_invalidate: __reserved (EOPNOTSUPP); entries without an array pointer
        or an entry length (EINVAL); the object (ENOENT); a nested HWPT's driver walks the
        array (cache_invalidate_user; the mock's iotlb), a vIOMMU's driver too (cache_invalidate;
        the mock's device caches, iommufd_viommu), and any other object is EINVAL. Whatever
        the outcome, ``entry_num`` becomes the number of requests handled and is written back
        (a failed write-back is EFAULT)."""
        fields = I.HWPT_INVALIDATE.unpack(data)
        entry_num, entry_len = int_field(fields, "entry_num"), int_field(fields, "entry_len")
        uptr = int_field(fields, "data_uptr")
        done = 0
        error: KernelError | None = None
        if int_field(fields, "reserved"):
            error = KernelError(errno.EOPNOTSUPP, "HWPT_INVALIDATE: __reserved")
        elif entry_num and (not uptr or not entry_len):
            error = KernelError(errno.EINVAL, "HWPT_INVALIDATE: entries without an array")
        else:
            obj = self.objects.get(int_field(fields, "hwpt_id"))
            if obj is None:
                error = KernelError(errno.ENOENT, f"no object {int_field(fields, 'hwpt_id')}")
            elif isinstance(obj, HwptNested):
                done, error = obj.domain.cache_invalidate_user(
                    caller, int_field(fields, "data_type"), uptr, entry_len, entry_num)
            else:
                from .iommufd_viommu import UserDataArray, Viommu, viommu_cache_invalidate
                if isinstance(obj, Viommu):
                    done, error = viommu_cache_invalidate(caller, obj, UserDataArray(
                        int_field(fields, "data_type"), uptr, entry_len, entry_num))
                else:
                    error = KernelError(errno.EINVAL, "HWPT_INVALIDATE: not a nested HWPT or vIOMMU")
        I.HWPT_INVALIDATE.write_fields(data, entry_num=done)
        try:
            ucmd_respond(caller, arg, data)
        except KernelError:
            raise KernelError(errno.EFAULT, "HWPT_INVALIDATE: cannot write entry_num back") from None
        if error is not None:
            raise error
        return 0

    def fault_alloc(self, caller: Caller, data: bytearray, arg: int) -> int:
        """IOMMU_FAULT_QUEUE_ALLOC (``iommufd_fault.fault_alloc``): the answer is a new file,
        not a number, like IOMMU_TEST_CMD's CREATE_ACCESS."""
        from .iommufd_fault import fault_alloc
        return fault_alloc(self, caller, data, arg)  # type: ignore[return-value]

    def hwpt_set_dirty_tracking(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_hwpt_set_dirty_tracking: flags (EOPNOTSUPP; __reserved is not checked), a
        paging HWPT (ENOENT), one allocated with DIRTY_TRACKING (no dirty ops: EOPNOTSUPP).
        Enabling first clears every recorded dirty bit of the IOAS (a clean snapshot), even when
        tracking was on already; nothing is written back."""
        fields = I.HWPT_SET_DIRTY_TRACKING.unpack(data)
        flags = int_field(fields, "flags")
        if flags & ~I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE:
            raise KernelError(errno.EOPNOTSUPP, "SET_DIRTY_TRACKING: unknown flags")
        hwpt = self.get_hwpt_paging(int_field(fields, "hwpt_id"))
        if not isinstance(hwpt, UserHwpt) or not hwpt.dirty_ops:
            raise KernelError(errno.EOPNOTSUPP, "the HWPT was not allocated with DIRTY_TRACKING")
        if flags & I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE:
            hwpt.ioas.start_dirty_tracking()
            hwpt.dirty_enabled = True
        else:
            hwpt.dirty_enabled = False
            self._sync_dirty_tracking(hwpt.ioas)
        return 0

    def _sync_dirty_tracking(self, ioas: Ioas) -> None:
        """The IOAS's table records device writes while any of its HWPTs tracks them."""
        if ioas.table.dirty_tracking and not any(
                isinstance(h, UserHwpt) and h.dirty_enabled for h in self.hwpts if h.ioas is ioas):
            ioas.stop_dirty_tracking()

    def hwpt_get_dirty_bitmap(self, caller: Caller, data: bytearray, arg: int) -> int:
        """iommufd_hwpt_get_dirty_bitmap + iopt_read_and_clear_dirty_data: flags other than
        NO_CLEAR or __reserved (EOPNOTSUPP), a paging HWPT (ENOENT), the range
        (iommufd_check_iova_range: EOVERFLOW past 2^64; EINVAL unless iova and iova+length are
        multiples of the IOAS's alignment and of ``page_size``, and for page_size 0), a domain
        with dirty ops (EOPNOTSUPP). Then the mapped areas from ``iova`` on, up to the first
        hole, are walked: each dirty IOMMU page sets its bits (bit (addr - iova) >> log2 of
        page_size's lowest bit, in u64 words at ``data``; existing bits are kept, never
        cleared) and is cleaned unless NO_CLEAR. Problems inside the walk -- a hole, tracking
        off, a bitmap the kernel cannot pin -- end it silently: the ioctl still returns 0.
        Nothing is written back to the struct."""
        fields = I.HWPT_GET_DIRTY_BITMAP.unpack(data)
        flags = int_field(fields, "flags")
        if flags & ~I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR or fields["reserved"]:
            raise KernelError(errno.EOPNOTSUPP, "GET_DIRTY_BITMAP: unknown flags or __reserved")
        hwpt = self.get_hwpt_paging(int_field(fields, "hwpt_id"))
        iova, length = int_field(fields, "iova"), int_field(fields, "length")
        page_size = int_field(fields, "page_size")
        last = iova + ((length - 1) & U64_MAX)
        if last > U64_MAX:
            raise KernelError(errno.EOVERFLOW, f"GET_DIRTY_BITMAP: {iova:#x} + {length:#x} runs past 2^64")
        end = (last + 1) & U64_MAX
        alignment = hwpt.ioas.iova_alignment
        if (iova | end) & (alignment - 1):
            raise KernelError(errno.EINVAL, f"GET_DIRTY_BITMAP: range not {alignment:#x}-aligned")
        if not page_size:
            raise KernelError(errno.EINVAL, "GET_DIRTY_BITMAP: page_size 0")
        if (iova | end) & (page_size - 1) & U64_MAX:
            raise KernelError(errno.EINVAL, f"GET_DIRTY_BITMAP: range not {page_size:#x}-aligned")
        if not isinstance(hwpt, UserHwpt) or not hwpt.dirty_ops:
            raise KernelError(errno.EOPNOTSUPP, "the HWPT was not allocated with DIRTY_TRACKING")
        if not hwpt.dirty_enabled:
            return 0  # intel_iommu_read_and_clear_dirty: EINVAL inside the walk, ignored
        clear = not flags & I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR
        # The domain's IOPTEs, each whole: what its dirty bits cover.
        dirty = hwpt.ioas.read_dirty(iova, last, clear=False, domain=hwpt.domain)
        if not dirty:
            return 0
        shift = (page_size & -page_size).bit_length() - 1
        bits = [(max(page, iova) - iova) >> shift for page, _ in dirty]
        ends = [(min(page + size - 1, last) - iova) >> shift for page, size in dirty]
        first_byte, last_byte = bits[0] // 8, ends[-1] // 8
        uptr = int_field(fields, "data")
        try:
            bitmap = bytearray(caller.memory.read(uptr + first_byte, last_byte - first_byte + 1))
        except KernelError:
            return 0  # iova_bitmap could not pin the user's bitmap: the walk ends, 0
        for lo, hi in zip(bits, ends):
            for bit in range(lo, hi + 1):
                bitmap[bit // 8 - first_byte] |= 1 << (bit % 8)
        if clear:
            hwpt.ioas.read_dirty(iova, last, clear=True, domain=hwpt.domain)
        try:
            caller.memory.write(uptr + first_byte, bytes(bitmap))
        except KernelError:
            pass
        return 0


def _auto_respond_faults(hwpt: Hwpt, device: BoundDevice) -> None:
    """iommufd_auto_response_faults: a device leaving a HWPT with a fault queue has its pending
    page faults answered INVALID."""
    if hwpt.fault is not None:
        respond = getattr(hwpt.fault, "auto_respond", None)
        if respond is not None:
            respond(device, hwpt)


def _cap_slot(size: int) -> int:
    """Room a capability takes in the chain: padded to 8 bytes (>= 6.6)."""
    return -(-size // CAP_ALIGNMENT) * CAP_ALIGNMENT



def _map_prot(flags: int) -> int:
    """conv_iommu_prot for MAP, MAP_FILE and COPY: READABLE and WRITEABLE, one needed (EINVAL)."""
    if not flags & (I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE):
        raise KernelError(errno.EINVAL, "neither READABLE nor WRITEABLE")
    return (IOMMU_READ if flags & I.IOMMU_IOAS_MAP_READABLE else 0) | (
        IOMMU_WRITE if flags & I.IOMMU_IOAS_MAP_WRITEABLE else 0)


_HWPT_PAGING_FLAGS = (I.IOMMU_HWPT_ALLOC_NEST_PARENT | I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
                      | I.IOMMU_HWPT_FAULT_ID_VALID | I.IOMMU_HWPT_ALLOC_PASID)
"""iommufd_hwpt_paging_alloc's valid_flags (PASID since ~6.15)."""


class UserHwpt(HwptPaging):
    """A paging HWPT made by IOMMU_HWPT_ALLOC: never automatic, and it keeps the flags it was
    allocated with -- NEST_PARENT (may parent nested HWPTs) and DIRTY_TRACKING (the VT-d
    driver gives such a domain dirty ops; any other domain answers dirty ioctls EOPNOTSUPP).
    ``dirty_enabled`` is the domain's tracking switch (SET_DIRTY_TRACKING); the dirty bits
    themselves live in the IOAS's translation table, where device writes mark them."""

    def __init__(self, ioas: Ioas, domain: Domain, flags: int, owner: str = "") -> None:
        super().__init__(ioas, domain, auto=False, owner=owner)
        self.nest_parent = bool(flags & I.IOMMU_HWPT_ALLOC_NEST_PARENT)
        self.dirty_ops = bool(flags & I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)
        self.dirty_enabled = False
        self.pasid_compat = bool(flags & I.IOMMU_HWPT_ALLOC_PASID)


# VT-d capability bits the emulation derives its answers from (VT-d spec 11.4.2-11.4.3; QEMU's
# hw/i386/intel_iommu_internal.h names the same bits).
_VTD_CAP_FRO = 0x220 << 20        # fault recording registers at 0x220
_VTD_CAP_ND_64K = 6               # 16-bit domain ids
_VTD_CAP_SAGAW_39 = 0x2 << 8      # 3-level page tables
_VTD_CAP_SAGAW_48 = 0x4 << 8      # 4-level page tables
_VTD_CAP_SLLPS = 0x3 << 34        # 2 MiB and 1 GiB second-level pages
_VTD_CAP_PSI = 1 << 39            # page-selective invalidation
_VTD_CAP_MAMV = 18 << 48
_VTD_CAP_DRAIN = 0x3 << 54        # read and write draining
_VTD_CAP_ESRTPS = 1 << 63
_VTD_ECAP_QI = 1 << 1             # queued invalidation
_VTD_ECAP_PT = 1 << 6             # pass-through
_VTD_ECAP_IRO = 0xF0 << 4         # IOTLB registers at 0xF0
_VTD_ECAP_NEST = 1 << 26
_VTD_ECAP_SMTS = 1 << 43          # scalable mode
_VTD_ECAP_SLADS = 1 << 45         # second-level accessed/dirty bits
_VTD_ECAP_SLTS = 1 << 46          # second-level translation in scalable mode


@dataclass(frozen=True)
class VtdIommu:
    """The emulated Intel IOMMU as the Linux intel driver sees it: its CAP and ECAP registers,
    from which the driver derives everything iommufd reports (GET_HW_INFO passes them through
    raw) or allows (dirty tracking: intel/iommu.h ssads_supported = scalable mode and SLADS;
    nesting: nested_supported = scalable mode and NEST).

    :meth:`qemu` is QEMU's ``-device intel-iommu`` with its defaults (legacy mode, no interrupt
    remapping, pass-through and DMA draining on): no scalable mode, so no dirty tracking and no
    nesting -- which is what the default configuration emulates. :meth:`with_dirty_tracking`
    adds what a scalable-mode host IOMMU with A/D bits (Sapphire Rapids and later) reports, for
    exercising the dirty-tracking ioctls; ``[iommu] dirty_tracking = true`` selects it."""

    cap_reg: int
    ecap_reg: int

    hw_info_type = I.IOMMU_HW_INFO_TYPE_INTEL_VTD
    max_pasid_log2 = 0  # no PASID on our devices
    owner = "intel-iommu"

    @classmethod
    def qemu(cls, address_width: int) -> VtdIommu:
        """hw/i386/intel_iommu.c:vtd_cap_init with the defaults and ``aw-bits`` = the config's
        address width."""
        cap = (_VTD_CAP_FRO | _VTD_CAP_ND_64K | _VTD_CAP_MAMV | _VTD_CAP_PSI | _VTD_CAP_SLLPS
               | _VTD_CAP_ESRTPS | ((address_width - 1) & 0x3F) << 16 | _VTD_CAP_DRAIN)
        if address_width >= 39:
            cap |= _VTD_CAP_SAGAW_39
        if address_width >= 48:
            cap |= _VTD_CAP_SAGAW_48
        return cls(cap, _VTD_ECAP_QI | _VTD_ECAP_IRO | _VTD_ECAP_PT)

    @classmethod
    def with_dirty_tracking(cls, address_width: int) -> VtdIommu:
        """The same IOMMU in scalable mode with second-level A/D bits."""
        base = cls.qemu(address_width)
        return cls(base.cap_reg, base.ecap_reg | _VTD_ECAP_SMTS | _VTD_ECAP_SLTS | _VTD_ECAP_SLADS)

    @property
    def scalable_mode(self) -> bool:
        return bool(self.ecap_reg & _VTD_ECAP_SMTS)

    @property
    def dirty_tracking(self) -> bool:
        """IOMMU_CAP_DIRTY_TRACKING (intel_iommu_capable: ssads_supported)."""
        return self.scalable_mode and bool(self.ecap_reg & _VTD_ECAP_SLADS)

    @property
    def nesting(self) -> bool:
        return self.scalable_mode and bool(self.ecap_reg & _VTD_ECAP_NEST)

    def hw_info(self) -> bytes:
        """intel_iommu_hw_info: the SPR17 erratum flag is always set (the driver cannot tell),
        then the raw registers."""
        return I.HW_INFO_VTD.pack(flags=I.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, reserved=0,
                                  cap_reg=self.cap_reg, ecap_reg=self.ecap_reg)

    def domain_alloc_nested(self, caller: Caller, parent: UserHwpt, flags: int, data_type: int,
                            data_len: int, uptr: int) -> NestedDomain:
        """intel_iommu_domain_alloc_nested exists, but is never reached: the core first wants
        a NEST_PARENT VT-d HWPT, which an IOMMU without nesting (QEMU's) refuses to make."""
        raise KernelError(errno.EOPNOTSUPP, "nested (VTD_S1) domains are not emulated")


class IommufdFile(OpenFile):
    kind = FileKind.IOMMUFD

    def __init__(self, context: IommufdContext) -> None:
        self.context = context

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        return self.context.ioctl(caller, cmd, arg)

    def release(self) -> None:
        # Groups attached to the context and devices bound to it keep it alive (and their
        # mappings pinned) past this close; the last of them releases it.
        self.context.close_file()
