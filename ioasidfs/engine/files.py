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
    FAULTS = "faults"  # /faults at the mount's root: the IOMMU fault log (read-only text)
    SYSFS = "sysfs"  # a file of the fake sysfs (attributes, config space)


class OpenFile:
    """Base of every open file. Subclasses override what their kernel file_operations define."""

    kind: FileKind
    #: Which node of its kind a new file (one a trapped ioctl hands out) is opened through:
    #: the device BDF of a device fd. None for files that are only ever opened by path.
    node_key: object = None

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        raise NotImplementedError

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        # No .read/.read_iter in the file_operations: vfs_read fails with EINVAL.
        raise KernelError(errno.EINVAL, f"{self.kind.value} files cannot be read")

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        raise KernelError(errno.EINVAL, f"{self.kind.value} files cannot be written")

    def release(self) -> None:
        """The last reference is gone (the kernel's .release)."""
