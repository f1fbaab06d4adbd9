"""VFIO devices as seen through their cdev, /dev/vfio/devices/vfioN (drivers/vfio/device_cdev.c,
vfio_main.c:vfio_device_fops_unl_ioctl).

A cdev fd grants no access until VFIO_DEVICE_BIND_IOMMUFD: every other ioctl, and read/write,
fail EINVAL on an unbound fd.
"""
from __future__ import annotations

import errno
import logging

from ..config import DeviceConfig
from ..errors import KernelError
from ..uapi import vfio as V
from .caller import Caller
from .files import FileKind, OpenFile

log = logging.getLogger("ioasidfs.engine")


class Device:
    """One emulated PCI function."""

    def __init__(self, config: DeviceConfig, index: int) -> None:
        self.config = config
        self.name = config.bdf
        self.cdev_name = f"vfio{index}"


class CdevFile(OpenFile):
    kind = FileKind.CDEV

    def __init__(self, device: Device) -> None:
        self.device = device
        self.bound = False

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        if cmd == V.VFIO_DEVICE_BIND_IOMMUFD:
            log.warning("VFIO_DEVICE_BIND_IOMMUFD is not emulated yet; answering ENOTTY")
            raise KernelError(errno.ENOTTY, "VFIO_DEVICE_BIND_IOMMUFD is not emulated yet")
        if not self.bound:
            raise KernelError(errno.EINVAL, f"{self.device.cdev_name} is not bound to an iommufd")
        raise KernelError(errno.ENOTTY, f"vfio-pci has no ioctl {cmd:#x}")

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        if not self.bound:
            raise KernelError(errno.EINVAL, f"{self.device.cdev_name} is not bound to an iommufd")
        raise KernelError(errno.EINVAL, "device regions are not emulated yet")

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        if not self.bound:
            raise KernelError(errno.EINVAL, f"{self.device.cdev_name} is not bound to an iommufd")
        raise KernelError(errno.EINVAL, "device regions are not emulated yet")
