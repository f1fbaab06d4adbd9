"""IOMMU groups and their files (drivers/vfio/group.c).

A group is the unit of DMA isolation: it joins a container (or an iommufd) as a whole. Its node
may be open only once at a time, system-wide; the program shares that one fd instead.
"""
from __future__ import annotations

import errno
import logging
from typing import Callable

from ..config import GroupConfig
from ..errors import KernelError
from ..uapi import vfio as V
from .argsz import read_argsz_struct, read_s32, read_user_string
from .caller import Caller
from .device import Device, DeviceFile
from .files import FileKind, OpenFile
from .iommufd import IommufdContext, IommufdFile
from .type1 import ContainerFile, Type1Container

log = logging.getLogger("ioasidfs.engine")

_STATUS_MINSZ = V.GROUP_STATUS.field_end("flags")
_PAGE_SIZE = 4096
_UUID_STRING_LEN = 36


def match_pci_name(bdf: str, name: bytes) -> bool:
    """vfio_pci_core_match: True on a match, False for no match, KernelError for a bad option."""
    pci_name = bdf.encode()
    if not name.startswith(pci_name):
        return False
    rest = name[len(pci_name):]
    if rest and rest[:1] != b" ":
        return False
    vf_token = False
    while rest:
        if rest[:1] == b" ":
            rest = rest[1:]
            continue
        if not vf_token and rest.startswith(b"vf_token=") and len(rest) >= 9 + _UUID_STRING_LEN:
            if not _is_uuid(rest[9:9 + _UUID_STRING_LEN]):
                raise KernelError(errno.EINVAL, "vf_token is not a UUID")
            vf_token = True
            rest = rest[9 + _UUID_STRING_LEN:]
        else:
            raise KernelError(errno.EINVAL, f"unknown or duplicate option in {name!r}")
    if vf_token:
        # Our devices are neither SR-IOV PFs nor VFs: a token is "incorrectly provided".
        raise KernelError(errno.EINVAL, "vf_token given for a device that is not a PF or VF")
    return True


def _is_uuid(text: bytes) -> bool:
    hexdigits = b"0123456789abcdefABCDEF"
    return all((c == ord("-")) if i in (8, 13, 18, 23) else c in hexdigits for i, c in enumerate(text))


class Group:
    """``struct vfio_group``: which file has it open and what it is attached to."""

    def __init__(self, config: GroupConfig) -> None:
        self.id = config.id
        self.viable = config.viable
        self.devices = config.devices
        # "all": type1 reports every mapped page dirty while this group is attached (GroupConfig).
        self.dirty_scope = config.dirty_scope
        self.members: dict[str, Device] = {}  # set by the engine: the devices, by BDF
        # Set by the engine: whether some process still holds a file (FUSE's RELEASE comes
        # after close() has returned; the kernel's device fd is gone before that).
        self.still_open: Callable[[OpenFile], bool] = lambda file: True
        self.opened: GroupFile | None = None
        self.container: Type1Container | None = None
        self.iommufd: IommufdContext | None = None
        # 1 while attached to a container, plus one per open device fd (UNSET -> EBUSY).
        self.container_users = 0
        # The cdev files bound to an iommufd that hold one of our devices: the kernel's
        # cdev_device_open_cnt. While there is one the group node cannot be opened (EBUSY).
        self.cdev_files: list[OpenFile] = []

    def match_device(self, name: bytes) -> str:
        """vfio_device_get_from_name with vfio-pci's matcher: the BDF, optionally followed by
        space-separated options of which only one ``vf_token=<uuid>`` is allowed."""
        for bdf in self.devices:
            if match_pci_name(bdf, name):
                return bdf
        raise KernelError(errno.ENODEV, f"no device {name!r} in group {self.id}")

    def holder_alive(self) -> bool:
        """Whether the group node is open (``group->opened_file``). A holder that the program
        has closed although its RELEASE is still on its way (FUSE's RELEASE is asynchronous;
        the kernel's release has run when close() returns) is released now instead."""
        holder = self.opened
        if holder is None:
            return False
        holder.reap_closed_devices()
        if holder.device_files or self.still_open(holder):
            return True
        log.debug("group %d: previous file closed, RELEASE pending; releasing it now", self.id)
        holder.release()
        return False

    def reap_closed_cdevs(self) -> None:
        """Release bound cdev files the program has closed whose RELEASE has not arrived."""
        for file in list(self.cdev_files):
            if file in self.cdev_files and not self.still_open(file):
                log.debug("group %d: a bound cdev was closed, RELEASE pending; releasing it now",
                          self.id)
                file.release()

    def check_open(self) -> None:
        """vfio_group_fops_open's busy checks: a device of the group bound through its cdev
        (``cdev_device_open_cnt``), then the group node already open (``opened_file``): both
        EBUSY."""
        self.reap_closed_cdevs()
        if self.cdev_files:
            raise KernelError(errno.EBUSY, f"a device of group {self.id} is bound through its cdev")
        if self.holder_alive():
            raise KernelError(errno.EBUSY, f"group {self.id} is already open")

    def block_group(self, cdev: OpenFile) -> None:
        """vfio_device_block_group, from VFIO_DEVICE_BIND_IOMMUFD: EBUSY while the group node
        is open (a container user, device fds), else count the cdev until
        :meth:`unblock_group`."""
        if self.holder_alive():
            raise KernelError(errno.EBUSY, f"group {self.id} is open through /dev/vfio/{self.id}")
        self.cdev_files.append(cdev)

    def unblock_group(self, cdev: OpenFile) -> None:
        """vfio_device_unblock_group: the cdev's bind failed or it was unbound."""
        self.cdev_files.remove(cdev)

    @property
    def has_iommu(self) -> bool:
        return self.container is not None or self.iommufd is not None

    def detach(self) -> None:
        """Leave the container or iommufd (UNSET_CONTAINER, or the group file's release)."""
        if self.container is not None:
            self.container.detach_group(self)
            self.container = None
            self.container_users = 0
        if self.iommufd is not None:
            self.iommufd.detach_group(self)
            self.iommufd = None


class GroupFile(OpenFile):
    kind = FileKind.GROUP

    def __init__(self, group: Group) -> None:
        self.group = group
        # Device fds hold their group file: its release waits until the last one is closed.
        self.open_devices: list[OpenFile] = []
        self._release_pending = False

    @property
    def device_files(self) -> int:
        return len(self.open_devices)

    def reap_closed_devices(self) -> None:
        """Release device files whose RELEASE is still on its way although no process holds
        them any more: the kernel had released them when close() returned."""
        for file in list(self.open_devices):
            if file in self.open_devices and not self.group.still_open(file):
                log.debug("group %d: a device fd was closed, RELEASE pending; releasing it now",
                          self.group.id)
                file.release()

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        handler = _GROUP_IOCTLS.get(cmd)
        if handler is None:
            raise KernelError(errno.ENOTTY, f"groups have no ioctl {cmd:#x}")
        return handler(self, caller, arg)

    def get_status(self, caller: Caller, arg: int) -> int:
        raw, _ = read_argsz_struct(caller, arg, V.GROUP_STATUS, _STATUS_MINSZ, "VFIO_GROUP_GET_STATUS")
        group = self.group
        if group.has_iommu:
            flags = V.VFIO_GROUP_FLAGS_VIABLE | V.VFIO_GROUP_FLAGS_CONTAINER_SET
        elif group.viable:
            flags = V.VFIO_GROUP_FLAGS_VIABLE
        else:
            flags = 0
        V.GROUP_STATUS.write_fields(raw, flags=flags)
        caller.memory.write(arg, bytes(raw))
        return 0

    def set_container(self, caller: Caller, arg: int) -> int:
        fd = read_s32(caller, arg)
        target = caller.resolve_fd(fd)  # EBADF for a closed or negative fd
        group = self.group
        if group.has_iommu:
            raise KernelError(errno.EINVAL, f"group {group.id} is already in a container")
        if isinstance(target, ContainerFile):
            target.container.attach_group(group)
            group.container = target.container
            group.container_users = 1
            return 0
        if isinstance(target, IommufdFile):
            target.context.attach_group(group)
            group.iommufd = target.context
            return 0
        raise KernelError(errno.EBADFD, f"fd {fd} is neither a VFIO container nor an iommufd")

    def unset_container(self, caller: Caller, arg: int) -> int:
        group = self.group
        if not group.has_iommu:
            raise KernelError(errno.EINVAL, f"group {group.id} is not in a container")
        if group.container is not None and group.container_users != 1:
            self.reap_closed_devices()
        if group.container is not None and group.container_users != 1:
            raise KernelError(errno.EBUSY, f"group {group.id} still has open device fds")
        group.detach()
        return 0

    def get_device_fd(self, caller: Caller, arg: int) -> int:
        """vfio_group_ioctl_get_device_fd: a new device file, which only ``ioasidfs run`` can
        install as an fd in the caller (devfs.StagedFile); a FUSE ioctl releases it and fails."""
        name = read_user_string(caller, arg, _PAGE_SIZE)
        device_name = self.group.match_device(name)
        group = self.group
        if not group.has_iommu:
            raise KernelError(errno.EINVAL, f"group {group.id} is not in a container")
        if group.container is not None and group.container.iommu is None:
            raise KernelError(errno.EINVAL, "VFIO_SET_IOMMU has not been done on the container")
        device = group.members[device_name]
        if device.open_count == 0 and group.iommufd is not None:
            # vfio_df_group_open -> vfio_iommufd_bind, before the fd exists: its errors (EPERM,
            # ENODEV, EADDRINUSE, EFAULT, ENOMEM...) are what this ioctl answers. A host driver
            # in a group that is not viable owns its DMA: iommu_device_claim_dma_owner, EPERM.
            if not group.viable:
                raise KernelError(errno.EPERM, f"a host driver owns DMA in group {group.id}")
            device.iommufd_binding = group.iommufd.bind_group_device(device_name, group.id)
            device.iommufd_context = group.iommufd
        file = DeviceFile(device, self, device.open())
        self.open_devices.append(file)
        if group.container is not None:
            group.container_users += 1
        return file  # type: ignore[return-value]  # a new open file: devfs installs it as an fd

    def device_closed(self, file: OpenFile, device: Device) -> None:
        """A device fd of this group was released (vfio_df_group_close). The last close
        unbinds the device from the context it was bound to (vfio_df_close ->
        vfio_df_iommufd_unbind with ``df->iommufd``), which is still there after
        UNSET_CONTAINER: the binding holds it (iommufd_device_bind's iommufd_ctx_get)."""
        group = self.group
        if device.open_count == 0 and device.iommufd_binding is not None:
            if device.iommufd_context is not None:
                device.iommufd_context.unbind_device(device.iommufd_binding)
            device.iommufd_binding = None
            device.iommufd_context = None
        if group.container is not None and group.container_users > 1:
            group.container_users -= 1
        self.open_devices.remove(file)
        if not self.open_devices and self._release_pending:
            self.release()

    def release(self) -> None:
        # Device fds hold the group file, so this runs only once they are all closed. A file
        # already replaced by a newer open (its RELEASE came late) has nothing left to undo.
        if self.device_files:
            self._release_pending = True
            return
        if self.group.opened is self:
            self.group.detach()
            self.group.opened = None


_GROUP_IOCTLS: dict[int, Callable[[GroupFile, Caller, int], int]] = {
    V.VFIO_GROUP_GET_STATUS: GroupFile.get_status,
    V.VFIO_GROUP_SET_CONTAINER: GroupFile.set_container,
    V.VFIO_GROUP_UNSET_CONTAINER: GroupFile.unset_container,
    V.VFIO_GROUP_GET_DEVICE_FD: GroupFile.get_device_fd,
}
