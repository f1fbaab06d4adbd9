"""VFIO devices as seen through their cdev, /dev/vfio/devices/vfioN (drivers/vfio/device_cdev.c,
vfio_main.c:vfio_device_fops_unl_ioctl).

A cdev fd grants no access until VFIO_DEVICE_BIND_IOMMUFD: every other ioctl, and read/write,
fail EINVAL on an unbound fd.
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
from .argsz import read_argsz_struct
from .caller import Caller
from .files import FileKind, OpenFile
from .iommufd import BoundDevice, IommufdFile
from .vfio_pci import DmaSpaceOf, VfioPciDevice

if TYPE_CHECKING:
    from .group import GroupFile

log = logging.getLogger("ioasidfs.engine")

_BIND_MINSZ = V.DEVICE_BIND_IOMMUFD.field_end("out_devid")


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
        self.iommufd_binding: BoundDevice | None = None

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
    """The first steps of vfio_df_ioctl_bind_iommufd, common to every device fd; returns the
    struct's fields as copied in."""
    _, fields = read_argsz_struct(caller, arg, V.DEVICE_BIND_IOMMUFD, _BIND_MINSZ,
                                  "VFIO_DEVICE_BIND_IOMMUFD")
    if int(fields["flags"]) & ~V.VFIO_DEVICE_BIND_FLAG_TOKEN or int(fields["iommufd"]) < 0:
        raise KernelError(errno.EINVAL, "bad flags or negative iommufd")
    return fields


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
        """vfio_device_fops_unl_ioctl: BIND_IOMMUFD is for cdev fds; every other ioctl first
        takes a runtime-PM reference (which may wake the device), then FEATURE is the core's
        and the rest vfio-pci's."""
        if cmd == V.VFIO_DEVICE_BIND_IOMMUFD:
            check_bind_args(caller, arg)
            raise KernelError(errno.EINVAL, "BIND_IOMMUFD is only for device cdev fds")
        self.vfio.runtime_resume()
        if cmd == V.VFIO_DEVICE_FEATURE:
            return self.vfio.feature(caller, arg)
        handler = _DEVICE_IOCTLS.get(cmd)
        if handler is None:
            raise KernelError(errno.ENOTTY, f"vfio-pci has no ioctl {cmd:#x}")
        return handler(self.vfio, caller, arg)

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
    kind = FileKind.CDEV

    def __init__(self, device: Device) -> None:
        self.device = device
        self.bound = False

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        if cmd == V.VFIO_DEVICE_BIND_IOMMUFD:
            return self.bind_iommufd(caller, arg)
        if not self.bound:
            raise KernelError(errno.EINVAL, f"{self.device.cdev_name} is not bound to an iommufd")
        raise KernelError(errno.ENOTTY, f"vfio-pci has no ioctl {cmd:#x}")

    def bind_iommufd(self, caller: Caller, arg: int) -> int:
        """vfio_df_ioctl_bind_iommufd, in the kernel's order, up to the bind itself."""
        fields = check_bind_args(caller, arg)
        if self.bound:
            raise KernelError(errno.EINVAL, f"{self.device.cdev_name} is already bound")
        iommufd = int(fields["iommufd"])
        target = caller.resolve_fd(iommufd)
        if not isinstance(target, IommufdFile):
            raise KernelError(errno.EBADFD, f"fd {iommufd} is not an iommufd")
        log.warning("VFIO_DEVICE_BIND_IOMMUFD is not emulated yet; answering ENOTTY")
        raise KernelError(errno.ENOTTY, "VFIO_DEVICE_BIND_IOMMUFD is not emulated yet")

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        if not self.bound:
            raise KernelError(errno.EINVAL, f"{self.device.cdev_name} is not bound to an iommufd")
        raise KernelError(errno.EINVAL, "device regions are not emulated yet")

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        if not self.bound:
            raise KernelError(errno.EINVAL, f"{self.device.cdev_name} is not bound to an iommufd")
        raise KernelError(errno.EINVAL, "device regions are not emulated yet")
