"""VFIO devices and the files that reach them: device fds from VFIO_GROUP_GET_DEVICE_FD (the
group path, drivers/vfio/group.c) and the device cdevs /dev/vfio/devices/vfioN
(drivers/vfio/device_cdev.c), both answered by vfio_main.c:vfio_device_fops.

A cdev fd grants no access until VFIO_DEVICE_BIND_IOMMUFD: every other ioctl, and read/write,
fail EINVAL on an unbound fd. Once bound it is a device fd like the group path's (same vfio-pci
state, same ioctls) plus ATTACH/DETACH_IOMMUFD_PT, which choose the io address space its DMA
goes through. The two paths exclude each other per IOMMU group: a bound cdev makes the group
node unopenable, an open group node makes BIND fail (both EBUSY).
"""
from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Callable

from ..config import DeviceConfig
from ..devices.pci import PciFunction
from ..errors import KernelError
from ..uapi import vfio as V
from ..uapi.layout import FieldValue
from .argsz import copy_in, copy_out, int_field, read_argsz_struct, read_u32
from .caller import Caller
from .files import FileKind, OpenFile
from .iommufd import BoundDevice, IommufdContext, IommufdFile, copy_struct_from_user
from .vfio_pci import DmaSpaceOf, VfioPciDevice

if TYPE_CHECKING:
    from .group import Group, GroupFile

log = logging.getLogger("ioasidfs.engine")

_BIND_MINSZ = V.DEVICE_BIND_IOMMUFD.field_end("out_devid")
_ATTACH_MINSZ = V.DEVICE_ATTACH_IOMMUFD_PT.field_end("pt_id")
_ATTACH_PASID_MINSZ = V.DEVICE_ATTACH_IOMMUFD_PT.field_end("pasid")
_DETACH_MINSZ = V.DEVICE_DETACH_IOMMUFD_PT.field_end("flags")
_DETACH_PASID_MINSZ = V.DEVICE_DETACH_IOMMUFD_PT.field_end("pasid")
_UUID_SIZE = 16


class Device:
    """One emulated PCI function bound to vfio-pci: ``function`` is the hardware (its model,
    ioasidfs.devices), the rest is what vfio-pci keeps about it."""

    def __init__(self, config: DeviceConfig, index: int, function: PciFunction,
                 dma_space: DmaSpaceOf) -> None:
        """``function`` is the model (ioasidfs.devices.create_device); ``dma_space`` gives,
        per transfer, the address space the device's group is attached to
        (Engine.device_dma_space)."""
        self.config = config
        self.function = function
        self.dma_space = dma_space
        self.name = config.bdf
        self.cdev_name = f"vfio{index}"
        # vfio-pci's state while some fd has the device open (vfio_pci_core_device).
        self.vfio: VfioPciDevice | None = None
        # Its IOMMUFD_OBJ_DEVICE while bound to an iommufd (either path), and the cdev file
        # that bound it (cdev path only; ``device->cdev_opened``).
        self.iommufd_binding: BoundDevice | None = None
        self.cdev: CdevFile | None = None
        # The context a group-path open bound it to (``df->iommufd``): the device fd, not the
        # group, holds that binding, so it outlives UNSET_CONTAINER and is undone there.
        self.iommufd_context: IommufdContext | None = None

    @property
    def open_count(self) -> int:
        return self.vfio.open_count if self.vfio is not None else 0

    def open(self) -> VfioPciDevice:
        """vfio_df_open: the first open enables the device for vfio-pci; later ones share it."""
        if self.vfio is None:
            self.vfio = VfioPciDevice(self.function, self.dma_space)
        self.vfio.open_count += 1
        return self.vfio

    def close(self) -> bool:
        """vfio_df_close; True when that was the last open (vfio_pci_core_disable ran)."""
        vfio = self.vfio
        assert vfio is not None and vfio.open_count > 0
        vfio.open_count -= 1
        if vfio.open_count:
            return False
        vfio.release()
        self.vfio = None
        return True


def check_bind_args(caller: Caller, arg: int) -> dict[str, FieldValue]:
    """The first steps of vfio_df_ioctl_bind_iommufd, common to every device fd (upstream
    >= 6.18 with its stable fix): ``argsz`` alone is read (EFAULT) and must reach
    ``out_devid`` (EINVAL), then the struct is copied with copy_struct_from_user against its
    24 bytes (E2BIG for a non-zero tail), then a negative iommufd or an unknown flag is
    EINVAL. Returns the fields as copied in."""
    argsz = read_u32(caller, arg)
    if argsz < _BIND_MINSZ:
        raise KernelError(errno.EINVAL, f"VFIO_DEVICE_BIND_IOMMUFD: argsz {argsz} is below {_BIND_MINSZ}")
    data = copy_struct_from_user(caller, arg, argsz, V.DEVICE_BIND_IOMMUFD.size)
    fields = V.DEVICE_BIND_IOMMUFD.unpack(data)
    if int_field(fields, "iommufd") < 0 or int_field(fields, "flags") & ~V.VFIO_DEVICE_BIND_FLAG_TOKEN:
        raise KernelError(errno.EINVAL, "bad flags or negative iommufd")
    return fields


def device_ioctl(vfio: VfioPciDevice, caller: Caller, cmd: int, arg: int) -> int:
    """The part of vfio_device_fops_unl_ioctl both kinds of device fd share, once access is
    granted: a runtime-PM reference (which may wake the device), then FEATURE is the core's
    and everything else vfio-pci's (ENOTTY for what it does not know)."""
    vfio.runtime_resume()
    if cmd == V.VFIO_DEVICE_FEATURE:
        return vfio.feature(caller, arg)
    handler = _DEVICE_IOCTLS.get(cmd)
    if handler is None:
        raise KernelError(errno.ENOTTY, f"vfio-pci has no ioctl {cmd:#x}")
    return handler(vfio, caller, arg)


class DeviceFile(OpenFile):
    """A device fd from VFIO_GROUP_GET_DEVICE_FD (the kernel's ``vfio_device_file`` opened
    through a group): every vfio-pci ioctl, and pread/pwrite of its regions.

    It keeps its group file alive (the kernel's device fd holds a reference on it) and counts
    as a user of the group's container (UNSET_CONTAINER says EBUSY while it is open)."""

    kind = FileKind.DEVICE

    def __init__(self, device: Device, group_file: "GroupFile", vfio: VfioPciDevice) -> None:
        self.device = device
        self.group_file = group_file
        self.vfio = vfio
        self.node_key = device.name
        self._released = False

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        """vfio_device_fops_unl_ioctl on a group-path fd: BIND_IOMMUFD is for cdev fds (its
        argument is still checked first); the rest is :func:`device_ioctl`."""
        if cmd == V.VFIO_DEVICE_BIND_IOMMUFD:
            check_bind_args(caller, arg)
            raise KernelError(errno.EINVAL, "BIND_IOMMUFD is only for device cdev fds")
        # ATTACH/DETACH_IOMMUFD_PT are cdev-only: here they reach vfio-pci, which says ENOTTY.
        return device_ioctl(self.vfio, caller, cmd, arg)

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        return self.vfio.read(offset, size)

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        return self.vfio.write(offset, data)

    def release(self) -> None:
        """The device fd's last close: vfio_df_close, then the group's references."""
        if self._released:
            return
        self._released = True
        self.device.close()
        self.group_file.device_closed(self, self.device)


_DEVICE_IOCTLS: dict[int, Callable[[VfioPciDevice, Caller, int], int]] = {
    V.VFIO_DEVICE_GET_INFO: VfioPciDevice.get_info,
    V.VFIO_DEVICE_GET_REGION_INFO: VfioPciDevice.get_region_info,
    V.VFIO_DEVICE_GET_IRQ_INFO: VfioPciDevice.get_irq_info,
    V.VFIO_DEVICE_SET_IRQS: VfioPciDevice.set_irqs,
    V.VFIO_DEVICE_RESET: VfioPciDevice.reset,
    V.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: VfioPciDevice.get_pci_hot_reset_info,
    V.VFIO_DEVICE_PCI_HOT_RESET: VfioPciDevice.pci_hot_reset,
    V.VFIO_DEVICE_IOEVENTFD: VfioPciDevice.ioeventfd,
}


class CdevFile(OpenFile):
    """An open /dev/vfio/devices/vfioN (vfio_device_fops_cdev_open: it always opens). Nothing
    is granted until VFIO_DEVICE_BIND_IOMMUFD binds the device to an iommufd
    (``df->access_granted``); from then on the fd holds the device open, its DEVICE object,
    a reference on the iommufd context and a block on the group node, until it is closed."""

    kind = FileKind.CDEV

    def __init__(self, device: Device, group: "Group") -> None:
        self.device = device
        self.group = group
        self.bound = False  # df->access_granted
        self.context: IommufdContext | None = None
        self.binding: BoundDevice | None = None
        self.vfio: VfioPciDevice | None = None

    def _not_bound(self) -> KernelError:
        return KernelError(errno.EINVAL, f"{self.device.cdev_name} is not bound to an iommufd")

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        """vfio_device_fops_unl_ioctl: BIND first (any state), then EINVAL until bound, then
        the cdev-only ATTACH/DETACH (after the runtime-PM reference, like every ioctl), then
        what every device fd answers."""
        if cmd == V.VFIO_DEVICE_BIND_IOMMUFD:
            return self.bind_iommufd(caller, arg)
        if not self.bound or self.vfio is None:
            raise self._not_bound()
        if cmd == V.VFIO_DEVICE_ATTACH_IOMMUFD_PT:
            self.vfio.runtime_resume()
            return self.attach_pt(caller, arg)
        if cmd == V.VFIO_DEVICE_DETACH_IOMMUFD_PT:
            self.vfio.runtime_resume()
            return self.detach_pt(caller, arg)
        return device_ioctl(self.vfio, caller, cmd, arg)

    def bind_iommufd(self, caller: Caller, arg: int) -> int:
        """vfio_df_ioctl_bind_iommufd, in the kernel's order: the argument
        (:func:`check_bind_args`), the group node open (EBUSY, vfio_device_block_group), this
        fd bound already (EINVAL), the VF token (EFAULT, then EINVAL: ours are neither PFs nor
        VFs), the iommufd (EBADF, EBADFD), then vfio_df_open: the device open elsewhere
        (EINVAL: the cdev path opens a device once), the DMA ownership of its IOMMU group held
        by a host driver or another iommufd (EPERM, iommu_device_claim_dma_owner), the DEVICE
        object, the vfio-pci open; last ``out_devid`` is written (EFAULT undoes it all)."""
        fields = check_bind_args(caller, arg)
        device, group = self.device, self.group
        group.block_group(self)
        try:
            if self.bound:
                raise KernelError(errno.EINVAL, f"{device.cdev_name} is already bound")
            if int_field(fields, "flags") & V.VFIO_DEVICE_BIND_FLAG_TOKEN:
                copy_in(caller, int_field(fields, "token_uuid_ptr"), _UUID_SIZE)
                raise KernelError(errno.EINVAL, "VF token given for a device that is not a PF or VF")
            iommufd = int_field(fields, "iommufd")
            target = caller.resolve_fd(iommufd)  # EBADF for a closed fd
            if not isinstance(target, IommufdFile):
                raise KernelError(errno.EBADFD, f"fd {iommufd} is not an iommufd")
            context = target.context
            if device.open_count:
                group.reap_closed_cdevs()  # a bound cdev closed, its RELEASE still on its way
            if device.open_count:
                raise KernelError(errno.EINVAL, f"{device.name} is already open")
            # iommu_device_claim_dma_owner: the group's DMA is owned already by someone else --
            # a host driver of another device in it (a group that is not viable) or another
            # iommufd a sibling is bound to -- EPERM.
            if not group.viable:
                raise KernelError(errno.EPERM, f"a host driver owns DMA in group {group.id}")
            for sibling in group.members.values():
                other = sibling.cdev
                if other is not None and other is not self and other.context is not context:
                    raise KernelError(errno.EPERM, f"group {group.id} is owned by another iommufd")
            binding = context.bind_device(device.name, group.id)
            vfio = device.open()
            try:
                copy_out(caller, arg + V.DEVICE_BIND_IOMMUFD.offset("out_devid"),
                         context.id_of(binding).to_bytes(4, "little"))
            except KernelError:
                device.close()
                context.unbind_device(binding)
                raise
        except KernelError:
            group.unblock_group(self)
            raise
        vfio.cdev_opened = True
        device.iommufd_binding, device.cdev = binding, self
        self.context, self.binding, self.vfio, self.bound = context, binding, vfio, True
        return 0

    def attach_pt(self, caller: Caller, arg: int) -> int:
        """vfio_df_ioctl_attach_pt: 12 bytes (EFAULT, EINVAL), flags (EINVAL), a PASID's 4
        more; then vfio_iommufd_physical_attach_ioas (attach, or replace when attached) and
        ``pt_id`` written back: the HWPT now used (the automatic one for an IOAS). A failed
        write-back detaches the device, even from what it was attached to before."""
        raw, fields = read_argsz_struct(caller, arg, V.DEVICE_ATTACH_IOMMUFD_PT, _ATTACH_MINSZ,
                                        "VFIO_DEVICE_ATTACH_IOMMUFD_PT")
        assert self.context is not None and self.binding is not None
        if _pasid_requested(caller, arg, fields, V.VFIO_DEVICE_ATTACH_PASID, _ATTACH_MINSZ,
                            _ATTACH_PASID_MINSZ, "ATTACH_IOMMUFD_PT"):
            # vfio_iommufd_physical_pasid_attach_ioas -> iommufd_device_attach(pasid): the
            # object is looked up first; no HWPT of ours is PASID-capable (no model has the
            # PASID capability, and HWPT_ALLOC_PASID domains are not emulated).
            pt_id = int_field(fields, "pt_id")
            if pt_id not in self.context.objects:
                raise KernelError(errno.ENOENT, f"no object {pt_id}")
            raise KernelError(errno.EINVAL, f"{self.device.name} cannot attach a PASID")
        pt_id = self.context.attach_pt(self.binding, int_field(fields, "pt_id"))
        try:
            copy_out(caller, arg + V.DEVICE_ATTACH_IOMMUFD_PT.offset("pt_id"),
                     pt_id.to_bytes(4, "little"))
        except KernelError:
            self.context.detach_device(self.binding)
            raise
        return 0

    def detach_pt(self, caller: Caller, arg: int) -> int:
        """vfio_df_ioctl_detach_pt: 8 bytes (EFAULT, EINVAL), flags (EINVAL), a PASID's 4
        more; then the device's DMA is blocked again. Detaching what is not attached is 0."""
        _, fields = read_argsz_struct(caller, arg, V.DEVICE_DETACH_IOMMUFD_PT, _DETACH_MINSZ,
                                      "VFIO_DEVICE_DETACH_IOMMUFD_PT")
        assert self.context is not None and self.binding is not None
        if _pasid_requested(caller, arg, fields, V.VFIO_DEVICE_DETACH_PASID, _DETACH_MINSZ,
                            _DETACH_PASID_MINSZ, "DETACH_IOMMUFD_PT"):
            return 0  # no PASID is ever attached (vfio_iommufd_physical_pasid_detach_ioas)
        self.context.detach_device(self.binding)
        return 0

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        if not self.bound or self.vfio is None:
            raise self._not_bound()
        return self.vfio.read(offset, size)

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        if not self.bound or self.vfio is None:
            raise self._not_bound()
        return self.vfio.write(offset, data)

    def release(self) -> None:
        """vfio_device_fops_release -> vfio_df_unbind_iommufd: vfio-pci's close, then the
        device is detached and unbound (its id freed, an automatic HWPT gone with it), the
        context reference dropped (the context goes if nothing else holds it) and the group
        node unblocked. An unbound cdev leaves nothing to undo."""
        if not self.bound:
            return
        self.bound = False
        device = self.device
        assert self.vfio is not None and self.context is not None and self.binding is not None
        self.vfio.cdev_opened = False
        device.close()
        self.context.unbind_device(self.binding)
        device.iommufd_binding, device.cdev = None, None
        self.group.unblock_group(self)
        self.vfio = None


def _pasid_requested(caller: Caller, arg: int, fields: dict[str, FieldValue], pasid_flag: int,
                     minsz: int, pasid_minsz: int, what: str) -> bool:
    """ATTACH/DETACH_IOMMUFD_PT's flags: only the PASID flag is known (EINVAL); with it, argsz
    must cover the 4-byte pasid (EINVAL) and it is copied in (EFAULT)."""
    flags = int_field(fields, "flags")
    if flags & ~pasid_flag:
        raise KernelError(errno.EINVAL, f"{what}: unknown flags {flags:#x}")
    if not flags & pasid_flag:
        return False
    if int_field(fields, "argsz") < pasid_minsz:
        raise KernelError(errno.EINVAL, f"{what}(PASID): argsz below {pasid_minsz}")
    copy_in(caller, arg + minsz, pasid_minsz - minsz)
    return True
