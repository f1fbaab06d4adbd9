"""VFIO devices as seen through their cdev, /dev/vfio/devices/vfioN (drivers/vfio/device_cdev.c,
vfio_main.c:vfio_device_fops_unl_ioctl).

A cdev fd grants no access until VFIO_DEVICE_BIND_IOMMUFD: every other ioctl, and read/write,
fail EINVAL on an unbound fd.
"""
from __future__ import annotations

import errno
import logging

from ..config import DeviceConfig
from ..devices.generic import create_device
from ..devices.pci import PciFunction
from ..errors import KernelError
from ..uapi import vfio as V
from .argsz import read_argsz_struct
from .caller import Caller
from .files import FileKind, OpenFile
from .iommufd import IommufdFile

log = logging.getLogger("ioasidfs.engine")

_BIND_MINSZ = V.DEVICE_BIND_IOMMUFD.field_end("out_devid")


class Device:
    """One emulated PCI function bound to vfio-pci: ``function`` is the hardware (its model,
    ioasidfs.devices), the rest is what vfio-pci keeps about it."""

    def __init__(self, config: DeviceConfig, index: int) -> None:
        self.config = config
        self.name = config.bdf
        self.cdev_name = f"vfio{index}"
        self.function: PciFunction = create_device(config)


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
        _, fields = read_argsz_struct(caller, arg, V.DEVICE_BIND_IOMMUFD, _BIND_MINSZ,
                                      "VFIO_DEVICE_BIND_IOMMUFD")
        if int(fields["flags"]) & ~V.VFIO_DEVICE_BIND_FLAG_TOKEN or int(fields["iommufd"]) < 0:
            raise KernelError(errno.EINVAL, "bad flags or negative iommufd")
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
