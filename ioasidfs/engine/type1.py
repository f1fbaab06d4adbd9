"""The VFIO container (drivers/vfio/container.c) with the type1 IOMMU backend
(drivers/vfio/vfio_iommu_type1.c).

A container starts empty: no groups, no IOMMU driver. Groups join it (VFIO_GROUP_SET_CONTAINER);
VFIO_SET_IOMMU then opens a backend instance and attaches every group. Until then the container
answers only its three own ioctls and fails everything else with EINVAL; afterwards unknown
commands reach the backend, which says ENOTTY. When the last group leaves, the backend instance
is destroyed with all its state and the container is empty again.
"""
from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

from ..config import IommuConfig
from ..errors import KernelError
from ..uapi import vfio as V
from .caller import Caller
from .files import FileKind, OpenFile

if TYPE_CHECKING:
    from .group import Group

log = logging.getLogger("ioasidfs.engine")

# The IOMMU drivers a kernel registers, in registration order: type1, then vfio-noiommu
# (CONFIG_VFIO_NOIOMMU, whose noiommu module option is off, so it never says yes).
_TYPE1_TYPES = (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU)


class Type1Iommu:
    """One opened type1 backend instance (``struct vfio_iommu``)."""

    def __init__(self, iommu: IommuConfig, v2: bool) -> None:
        self.config = iommu
        self.v2 = v2
        self.dma_avail = iommu.dma_entry_limit
        self.groups: list[Group] = []

    def check_extension(self, arg: int) -> int:
        return type1_check_extension(self, arg)

    def attach_group(self, group: Group) -> None:
        self.groups.append(group)

    def detach_group(self, group: Group) -> None:
        self.groups.remove(group)

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        if cmd == V.VFIO_CHECK_EXTENSION:
            return self.check_extension(arg)
        raise KernelError(errno.ENOTTY, f"type1 has no ioctl {cmd:#x}")

    def release(self) -> None:
        """The backend instance is destroyed: every mapping goes with it."""


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

    def __init__(self, iommu: IommuConfig) -> None:
        self.iommu_config = iommu
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
        instance = Type1Iommu(self.iommu_config, v2=arg != V.VFIO_TYPE1_IOMMU)
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
