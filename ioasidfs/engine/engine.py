"""The emulated kernel: every group, device and open file, built from the configuration.

Pure and synchronous. The daemon calls it with a :class:`Caller` and gets a result or a
KernelError; nothing here knows about FUSE, threads or syscalls. Who may touch it when is the
I/O layer's business (one request at a time, under its engine lock).
"""
from __future__ import annotations

import errno
import logging
from typing import Callable

from ..config import Config
from ..errors import KernelError
from .caller import Caller
from .device import CdevFile, Device
from .files import FileKind, OpenFile
from .group import Group, GroupFile
from .iommufd import IommufdContext, IommufdFile
from .ioas import Accounting
from .locked import LockedMemory, UserLockedMemory
from .type1 import ContainerFile, Type1Container

log = logging.getLogger("ioasidfs.engine")

StillOpen = Callable[[OpenFile], bool]


class Engine:
    def __init__(self, config: Config, *, still_open: StillOpen = lambda f: True) -> None:
        """``still_open(file)`` answers whether some process still holds ``file``: a FUSE
        RELEASE arrives asynchronously after the last close(), while the kernel's VFIO has torn
        a group down before close() returns, so an exclusive open asks before saying EBUSY."""
        self.config = config
        self.still_open = still_open
        self.groups = {g.id: Group(g) for g in config.groups}
        self.devices = {d.bdf: Device(d, i) for i, d in enumerate(config.devices)}
        # Pinned pages count against each process's RLIMIT_MEMLOCK across all its containers.
        self.locked_memory = LockedMemory()
        # iommufd charges pins per user by default (user_struct->locked_vm), per process -- the
        # same counter as type1 -- when opened as /dev/vfio/vfio.
        self.pin_accounting = Accounting(self.locked_memory, UserLockedMemory())

    def open(self, kind: FileKind, key: object, caller: Caller) -> OpenFile:
        if kind is FileKind.CONTAINER:
            if self.config.container_personality == "iommufd":
                return IommufdFile(IommufdContext(self.config.iommu, self.pin_accounting,
                                                  as_vfio_container=True))
            return ContainerFile(Type1Container(self.config.iommu, self.locked_memory))
        if kind is FileKind.IOMMUFD:
            return IommufdFile(IommufdContext(self.config.iommu, self.pin_accounting))
        if kind is FileKind.GROUP:
            assert isinstance(key, int)
            return self._open_group(self.groups[key])
        if kind is FileKind.CDEV:
            assert isinstance(key, str)
            return CdevFile(self.devices[key])
        raise KernelError(errno.ENODEV, f"no node of kind {kind}")

    def _open_group(self, group: Group) -> GroupFile:
        holder = group.opened
        if holder is not None:
            if self.still_open(holder):
                raise KernelError(errno.EBUSY, f"group {group.id} is already open")
            # Closed, and its RELEASE is still on its way: release it now, as close() would have.
            log.debug("group %d: previous file closed, RELEASE pending; releasing it now", group.id)
            holder.release()
        opened = GroupFile(group)
        group.opened = opened
        return opened

    def release(self, file: OpenFile) -> None:
        file.release()
