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
from .argsz import read_argsz_struct, read_s32
from .caller import Caller
from .files import FileKind, OpenFile
from .iommufd import IommufdContext, IommufdFile
from .type1 import ContainerFile, Type1Container

log = logging.getLogger("ioasidfs.engine")

_STATUS_MINSZ = V.GROUP_STATUS.field_end("flags")


class Group:
    """``struct vfio_group``: which file has it open and what it is attached to."""

    def __init__(self, config: GroupConfig) -> None:
        self.id = config.id
        self.viable = config.viable
        self.devices = config.devices
        self.opened: GroupFile | None = None
        self.container: Type1Container | None = None
        self.iommufd: IommufdContext | None = None
        # 1 while attached to a container, plus one per open device fd (UNSET -> EBUSY).
        self.container_users = 0

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
            raise KernelError(errno.EBUSY, f"group {group.id} still has open device fds")
        group.detach()
        return 0

    def release(self) -> None:
        # Device fds hold the group file, so this runs only once they are all closed. A file
        # already replaced by a newer open (its RELEASE came late) has nothing left to undo.
        if self.group.opened is self:
            self.group.detach()
            self.group.opened = None


_GROUP_IOCTLS: dict[int, Callable[[GroupFile, Caller, int], int]] = {
    V.VFIO_GROUP_GET_STATUS: GroupFile.get_status,
    V.VFIO_GROUP_SET_CONTAINER: GroupFile.set_container,
    V.VFIO_GROUP_UNSET_CONTAINER: lambda f, c, a: f.unset_container(c, a),
}
