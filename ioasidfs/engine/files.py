"""Open files of the emulated kernel: what a process holds when it has one of our nodes open.

One object per open (a ``struct file``): dups and forked children share it, as they share the
kernel's. Each kind of node answers its own ioctls; what a node does with a command it does not
know differs from node to node (the container says EINVAL until an IOMMU driver is set, a group
says ENOTTY, an unbound device cdev says EINVAL), so the fallback lives with each kind.
"""
from __future__ import annotations

import enum
import errno

from ..errors import KernelError
from .caller import Caller


class FileKind(enum.Enum):
    """What a node is; the values are the node-kind names of ``ioasidfs.uapi.registry``."""

    CONTAINER = "container"  # /dev/vfio/vfio
    GROUP = "group"  # /dev/vfio/<N>
    CDEV = "cdev"  # /dev/vfio/devices/vfioN
    IOMMUFD = "iommufd"  # /dev/iommu, /dev/ioasid
    DEVICE = "device"  # an fd from VFIO_GROUP_GET_DEVICE_FD
    ACCESS = "access"  # an fd from IOMMU_TEST_CMD(CREATE_ACCESS): the selftest's iommufd_access
    FAULT_QUEUE = "fault_queue"  # an fd from IOMMU_FAULT_QUEUE_ALLOC: an iommufd fault object
    VEVENTQ = "veventq"  # an fd from IOMMU_VEVENTQ_ALLOC: a vIOMMU's event queue
    FAULTS = "faults"  # /faults at the mount's root: the IOMMU fault log (read-only text)
    SYSFS = "sysfs"  # a file of the fake sysfs (attributes, config space)


ACCESS_NODE_KEY = "iommufd_access"
"""The key of the node access files are opened through (``devfds/iommufd_access``)."""
FAULT_QUEUE_NODE_KEY = "iommufd_fault"
"""The key of the node fault queue files are opened through (``devfds/iommufd_fault``)."""
VEVENTQ_NODE_KEY = "iommufd_veventq"
"""The key of the node vEVENTQ files are opened through (``devfds/iommufd_veventq``)."""


class OpenFile:
    """Base of every open file. Subclasses override what their kernel file_operations define."""

    kind: FileKind
    #: Which node of its kind a new file (one a trapped ioctl hands out) is opened through:
    #: the device BDF of a device fd. None for files that are only ever opened by path.
    node_key: object = None

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        raise NotImplementedError

    def fd_installed(self, fd: int) -> int:
        """This new file (an ioctl's answer) is now ``fd`` in the caller: what the ioctl
        returns. Most ioctls return the fd itself (VFIO_GROUP_GET_DEVICE_FD); one that reports
        it inside its struct writes it there and returns 0."""
        return fd

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        # No .read/.read_iter in the file_operations: vfs_read fails with EINVAL.
        raise KernelError(errno.EINVAL, f"{self.kind.value} files cannot be read")

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        raise KernelError(errno.EINVAL, f"{self.kind.value} files cannot be written")

    @property
    def mmap_passthrough(self) -> bool:
        """True for files that stand for no kernel node (``/faults``, the fake sysfs): the real
        mmap() of our FUSE file is their answer, and :meth:`mmap` is never asked."""
        return self.kind in _MMAP_PASSTHROUGH

    def mmap(self, caller: Caller, length: int, prot: int, flags: int, pgoff: int) -> None:
        """mmap() of this file, from where the VFS hands over to the driver: ``length`` is page
        aligned and every check of do_mmap before ``if (!file->f_op->mmap) return -ENODEV``
        has passed (:func:`ioasidfs.devfs.vfs_mmap_checks`). ``flags``'s map type is
        MAP_SHARED exactly when the VMA would be VM_SHARED (MAP_SHARED or MAP_SHARED_VALIDATE on
        a file open for writing), else MAP_PRIVATE. Raises KernelError with the errno.

        We never map anything: no node of ours has a region userspace may map. The answer
        depends on the kind of node (:data:`_MMAP_BY_KIND`); a driver class that learns to
        refuse differently overrides this (keep the ENODEV / VM_GROWSDOWN steps)."""
        driver = _MMAP_BY_KIND.get(self.kind)
        if driver is None:  # no .mmap in the file_operations
            raise KernelError(errno.ENODEV, f"{self.kind.value} files have no mmap")
        if flags & MAP_GROWSDOWN:  # do_mmap: VM_GROWSDOWN on a file mapping, before .mmap
            raise KernelError(errno.EINVAL, "MAP_GROWSDOWN on a file mapping")
        driver(self, length, prot, flags, pgoff)

    def release(self) -> None:
        """The last reference is gone (the kernel's .release)."""


# ---------------------------------------------------------------------------- mmap
# <asm-generic/mman-common.h>, <linux/mman.h> (x86_64)
PROT_EXEC = 0x4
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_TYPE = 0x0F
MAP_GROWSDOWN = 0x0100

VFIO_PCI_OFFSET_SHIFT = 40  # vfio_pci_core: region index = offset >> 40


def _iommufd_mmap(file: OpenFile, length: int, prot: int, flags: int, pgoff: int) -> None:
    """iommufd_fops_mmap (upstream, 6.16+; 6.1 has no .mmap: ENODEV). Userspace may map only
    what a driver allocated in ``ictx->mt_mmap`` (a vIOMMU's HW queue page, offset handed out
    by IOMMU_HW_QUEUE_ALLOC/VIOMMU_ALLOC); we allocate nothing, so every offset is ENXIO.
    /dev/vfio/vfio under the iommufd personality is the same file (iommufd_fops)."""
    if flags & MAP_TYPE != MAP_SHARED:
        raise KernelError(errno.EINVAL, "iommufd maps MAP_SHARED (writable) only")
    if prot & PROT_EXEC:
        raise KernelError(errno.EPERM, "iommufd mappings may not be executable")
    raise KernelError(errno.ENXIO, f"no iommufd mmap region at offset {pgoff << 12:#x}")


def _vfio_device_mmap(file: OpenFile, length: int, prot: int, flags: int, pgoff: int) -> None:
    """vfio_device_fops_mmap -> vfio_pci_core_mmap: EINVAL for an unbound cdev, for a private
    mapping, and for a region that is not a BAR or has no VFIO_REGION_INFO_FLAG_MMAP -- which
    is every region we report."""
    if file.kind is FileKind.CDEV and not getattr(file, "bound", False):
        raise KernelError(errno.EINVAL, "the device cdev is not bound to an iommufd")
    if flags & MAP_TYPE != MAP_SHARED:
        raise KernelError(errno.EINVAL, "vfio-pci maps regions MAP_SHARED (writable) only")
    index = pgoff >> (VFIO_PCI_OFFSET_SHIFT - 12)
    raise KernelError(errno.EINVAL, f"region {index} is not mmap-capable")


_MMAP_BY_KIND = {
    FileKind.IOMMUFD: _iommufd_mmap,
    FileKind.CDEV: _vfio_device_mmap,
    FileKind.DEVICE: _vfio_device_mmap,
}
"""The drivers' .mmap, by kind of node. Not here: the container (vfio_fops) and groups
(vfio_group_fops), which have no .mmap (ENODEV)."""

_MMAP_PASSTHROUGH = frozenset({FileKind.FAULTS, FileKind.SYSFS})
