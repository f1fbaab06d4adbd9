"""The emulated kernel: every group, device and open file, built from the configuration.

Pure and synchronous. The daemon calls it with a :class:`Caller` and gets a result or a
KernelError; nothing here knows about FUSE, threads or syscalls. Who may touch it when is the
I/O layer's business (one request at a time, under its engine lock).

Device DMA goes through one place: :meth:`Engine.dma_space` gives the DmaSpace (translation table,
owner registry, the engine-wide fault log) of the I/O address space a group is attached to.
"""
from __future__ import annotations

import errno
import logging
from typing import Callable

from ..config import Config
# The module, not its names: devices.dma imports client, which imports engine.caller and so this
# package; binding names here would fail when devices.dma is the first module imported.
from ..devices import dma
from ..errors import KernelError
from .caller import Caller
from .device import CdevFile, Device
from .files import FileKind, OpenFile
from .group import Group, GroupFile
from .iommufd import IommufdContext, IommufdFile
from .ioas import Accounting
from .locked import LockedMemory, UserLockedMemory
from .translate import OwnerRegistry, TranslationTable, new_table
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
        # Imported here: the device models import the DMA layer, which imports the client
        # layer, which imports this package -- a cycle when a model is the first import.
        from ..devices.firmware import firmware_init_machine
        from ..devices.generic import create_device
        functions = [(create_device(d), d) for d in config.devices]
        firmware_init_machine(functions)  # what the BIOS left in each function
        self.devices = {d.bdf: Device(d, i, function, self._dma_space_of(d.bdf))
                        for i, (function, d) in enumerate(functions)}
        for group in self.groups.values():
            group.members = {bdf: self.devices[bdf] for bdf in group.devices}
            group.still_open = lambda file: self.still_open(file)
        # Pinned pages count against each process's RLIMIT_MEMLOCK across all its containers.
        self.locked_memory = LockedMemory()
        # iommufd charges pins per user by default (user_struct->locked_vm), per process -- the
        # same counter as type1 -- when opened as /dev/vfio/vfio.
        self.pin_accounting = Accounting(self.locked_memory, UserLockedMemory())
        # Every translation table (one per type1 IOMMU instance, one per IOAS) names the process
        # behind a mapping by a token of this registry; the DMA layer turns it back into a pid.
        self.owners = OwnerRegistry()
        # Every blocked device access of every address space, for the user (``/faults``, trace).
        self.faults = dma.FaultLog()
        # What a group attached to nothing translates through: nothing is ever mapped in it.
        self._blocked: TranslationTable = new_table()

    def open(self, kind: FileKind, key: object, caller: Caller) -> OpenFile:
        if kind is FileKind.CONTAINER:
            if self.config.container_personality == "iommufd":
                return IommufdFile(IommufdContext(self.config.iommu, self.pin_accounting,
                                                  as_vfio_container=True, owners=self.owners))
            return ContainerFile(Type1Container(self.config.iommu, self.locked_memory, self.owners))
        if kind is FileKind.IOMMUFD:
            return IommufdFile(IommufdContext(self.config.iommu, self.pin_accounting,
                                              owners=self.owners,
                                              test_cmd=self.config.iommufd_test_cmd))
        if kind is FileKind.FAULTS:
            return FaultsFile(self.faults)
        if kind is FileKind.SYSFS:
            # The node's key knows what its file shows (ioasidfs.sysfs): sysfs is a view of
            # the engine's devices and groups, not kernel state of its own.
            return key.open(self)  # type: ignore[attr-defined, no-any-return]
        if kind is FileKind.GROUP:
            assert isinstance(key, int)
            return self._open_group(self.groups[key])
        if kind is FileKind.CDEV:
            assert isinstance(key, str)
            device = self.devices[key]
            return CdevFile(device, self.groups[device.config.group])
        raise KernelError(errno.ENODEV, f"no node of kind {kind}")

    def _open_group(self, group: Group) -> GroupFile:
        group.check_open()
        opened = GroupFile(group)
        group.opened = opened
        return opened

    def release(self, file: OpenFile) -> None:
        file.release()

    # ------------------------------------------------------------------ device DMA
    def dma_space(self, group_id: int) -> dma.DmaSpace:
        """What a device of group ``group_id`` DMAs through, as of now: the translation table of
        the io address space the group is attached to --

        * on the group path, its type1 container's IOMMU instance (after VFIO_SET_IOMMU), or on
          an iommufd the IOAS its devices are attached to (still after UNSET_CONTAINER while
          a device fd is open: the bound device keeps its domain), else the compat IOAS;
        * on the cdev path (devices bound with VFIO_DEVICE_BIND_IOMMUFD), the IOAS of the HWPT
          the group's devices are attached to (iommufd attaches the whole IOMMU group, so every
          device of it translates through that domain); bound but not attached, or detached
          again, the group sits in the blocking domain.

        A group attached to none of these has its DMA blocked: the space is empty and every
        access faults NOT_MAPPED (recorded, like every fault, in :attr:`faults`).

        Ask per transfer (it is a few attribute lookups): a space is a snapshot of the
        attachment, and a group may change containers between two transfers. Raises KeyError
        for a group the configuration does not have."""
        group = self.groups[group_id]
        table: TranslationTable | None = None
        # A device bound to an iommufd (either path; every binding is its Device's
        # iommufd_binding) keeps its attachment whatever the group node does: UNSET_CONTAINER
        # with a device fd open only drops the group's reference on the context
        # (vfio_group_ioctl_unset_container), the domain stays.
        hwpts = [d.iommufd_binding.hwpt for d in group.members.values()
                 if d.iommufd_binding is not None and d.iommufd_binding.hwpt is not None]
        if hwpts:
            table = hwpts[0].ioas.table
        elif group.container is not None:
            if group.container.iommu is not None:
                table = group.container.iommu.table
        elif group.iommufd is not None:
            # No device of the group is attached: its compat IOAS, if one exists.
            if group.iommufd.compat is not None:
                table = group.iommufd.compat.table
        if table is not None:
            return dma.DmaSpace(table, self.owners.key, self.faults)
        if any(d.cdev is not None and d.iommufd_binding is not None
               for d in group.members.values()):
            blocked = (f"group {group_id}: its device is bound through its cdev but not "
                       "attached to an IOAS or HWPT (blocking domain)")
        else:
            blocked = f"group {group_id} is not attached to an IOMMU"
        return dma.DmaSpace(self._blocked, self.owners.key, self.faults, blocked=blocked)

    def _dma_space_of(self, bdf: str) -> Callable[[], dma.DmaSpace]:
        return lambda: self.device_dma_space(bdf)

    def device_dma_space(self, bdf: str) -> dma.DmaSpace:
        """:meth:`dma_space` of the group of device ``bdf`` (KeyError for an unknown device)."""
        return self.dma_space(self.devices[bdf].config.group)


class FaultsFile(OpenFile):
    """An open ``/faults`` (the mount's root): the fault log as text, one fault per line
    (:meth:`FaultRecord.line`), oldest first, as it was when the file was opened -- reads at any
    offset see one consistent snapshot, as a seq_file gives. Read-only: no ioctls (ENOTTY),
    no writes. A line ``# N earlier faults dropped`` comes first once the bounded log has
    overflowed."""

    kind = FileKind.FAULTS

    def __init__(self, log: dma.FaultLog) -> None:
        records = log.records()
        lines = [rec.line() for rec in records]
        dropped = records[0].seq - 1 if records else log.dropped
        if dropped:
            lines.insert(0, f"# {dropped} earlier faults dropped")
        self.text = "".join(line + "\n" for line in lines).encode()

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        raise KernelError(errno.ENOTTY, "the fault log has no ioctls")

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        if offset < 0:
            raise KernelError(errno.EINVAL, f"offset {offset}")
        return self.text[offset:offset + size]

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        raise KernelError(errno.EBADF, "the fault log is read-only")

