"""The iommufd context (drivers/iommu/iommufd/main.c) and its VFIO container compatibility
(drivers/iommu/iommufd/vfio_compat.c): what /dev/iommu and /dev/ioasid answer.

Dispatch follows iommufd_fops_ioctl: the command's nr byte alone decides whether the native table
(nr 0x80 and up) or the VFIO compat switch answers. For a native nr, the u32 ``size`` is read
*first* (so a NULL pointer is EFAULT even for a hole in the table), then the whole command must
match the table entry (ENOTTY), ``size`` must reach the minimum (EINVAL), and any bytes past the
kernel's struct must be zero (E2BIG) — the copy_struct_from_user protocol that lets old and new
programs share one ABI.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..config import IommuConfig
from ..errors import KernelError
from ..uapi import iommufd as I
from ..uapi import vfio as V
from ..uapi.ioctl import ioc_nr
from ..uapi.layout import Layout
from .argsz import read_argsz_struct, read_u32
from .caller import Caller
from .files import FileKind, OpenFile

if TYPE_CHECKING:
    from .group import Group

log = logging.getLogger("ioasidfs.engine")

IommufdHandler = Callable[["IommufdContext", Caller, bytearray, int], int]


@dataclass(frozen=True)
class NativeIoctl:
    """One slot of iommufd_ioctl_ops: the command, its struct and the handler."""

    cmd: int
    layout: Layout
    handler: IommufdHandler | None = None


def _slot(cmd: int, layout: Layout, handler: IommufdHandler | None = None) -> tuple[int, NativeIoctl]:
    return ioc_nr(cmd), NativeIoctl(cmd, layout, handler)


def _destroy(ctx: "IommufdContext", caller: Caller, data: bytearray, arg: int) -> int:
    """IOMMU_DESTROY: remove any object by id (ENOENT if there is none)."""
    object_id = int(I.DESTROY.unpack(data)["id"])
    ctx.destroy(object_id)
    return 0


# The table of a kernel without CONFIG_IOMMUFD_TEST: nr 0x80..0x94, no holes.
NATIVE_IOCTLS: dict[int, NativeIoctl] = dict([
    _slot(I.IOMMU_DESTROY, I.DESTROY, _destroy),
    _slot(I.IOMMU_IOAS_ALLOC, I.IOAS_ALLOC),
    _slot(I.IOMMU_IOAS_ALLOW_IOVAS, I.IOAS_ALLOW_IOVAS),
    _slot(I.IOMMU_IOAS_COPY, I.IOAS_COPY),
    _slot(I.IOMMU_IOAS_IOVA_RANGES, I.IOAS_IOVA_RANGES),
    _slot(I.IOMMU_IOAS_MAP, I.IOAS_MAP),
    _slot(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP),
    _slot(I.IOMMU_OPTION, I.OPTION),
    _slot(I.IOMMU_VFIO_IOAS, I.VFIO_IOAS),
    _slot(I.IOMMU_HWPT_ALLOC, I.HWPT_ALLOC),
    _slot(I.IOMMU_GET_HW_INFO, I.HW_INFO),
    _slot(I.IOMMU_HWPT_SET_DIRTY_TRACKING, I.HWPT_SET_DIRTY_TRACKING),
    _slot(I.IOMMU_HWPT_GET_DIRTY_BITMAP, I.HWPT_GET_DIRTY_BITMAP),
    _slot(I.IOMMU_HWPT_INVALIDATE, I.HWPT_INVALIDATE),
    _slot(I.IOMMU_FAULT_QUEUE_ALLOC, I.FAULT_ALLOC),
    _slot(I.IOMMU_IOAS_MAP_FILE, I.IOAS_MAP_FILE),
    _slot(I.IOMMU_VIOMMU_ALLOC, I.VIOMMU_ALLOC),
    _slot(I.IOMMU_VDEVICE_ALLOC, I.VDEVICE_ALLOC),
    _slot(I.IOMMU_IOAS_CHANGE_PROCESS, I.IOAS_CHANGE_PROCESS),
    _slot(I.IOMMU_VEVENTQ_ALLOC, I.VEVENTQ_ALLOC),
    _slot(I.IOMMU_HW_QUEUE_ALLOC, I.HW_QUEUE_ALLOC),
])
_NATIVE_END = max(NATIVE_IOCTLS) + 1
_COMPAT_INFO_MINSZ = V.TYPE1_INFO.field_end("iova_pgsizes")


def copy_struct_from_user(caller: Caller, arg: int, user_size: int, ksize: int) -> bytearray:
    """The kernel's copy_struct_from_user: a shorter struct is zero-extended; a longer one is
    accepted only when every byte past ``ksize`` is zero (E2BIG otherwise)."""
    if user_size > ksize:
        tail = caller.memory.read(arg + ksize, user_size - ksize)
        if any(tail):
            raise KernelError(errno.E2BIG, f"non-zero bytes past the {ksize}-byte struct")
    data = bytearray(caller.memory.read(arg, min(user_size, ksize)))
    data.extend(bytes(ksize - len(data)))
    return data


class IommufdContext:
    """``struct iommufd_ctx``: the objects of one open /dev/iommu file.

    ``as_vfio_container`` is set when the context was opened through /dev/vfio/vfio on a kernel
    built with CONFIG_IOMMUFD_VFIO_CONTAINER (locked memory is then accounted per mm, as type1).
    """

    def __init__(self, iommu: IommuConfig, *, as_vfio_container: bool = False) -> None:
        self.iommu_config = iommu
        self.as_vfio_container = as_vfio_container
        self.objects: dict[int, object] = {}
        self.compat_ioas_id: int | None = None
        self.groups: list[Group] = []

    # ---- object ids: the lowest free id in [1, 2^31-1], reused as soon as it is freed
    def allocate_id(self, obj: object) -> int:
        new_id = 1
        while new_id in self.objects:
            new_id += 1
        self.objects[new_id] = obj
        return new_id

    def destroy(self, object_id: int) -> None:
        if object_id not in self.objects:
            raise KernelError(errno.ENOENT, f"no object {object_id}")
        del self.objects[object_id]
        if object_id == self.compat_ioas_id:
            self.compat_ioas_id = None

    def compat_ioas(self) -> int:
        if self.compat_ioas_id is None:
            raise KernelError(errno.ENODEV, "no compat IOAS: no VFIO group attached and none selected")
        return self.compat_ioas_id

    def ensure_compat_ioas(self) -> int:
        """iommufd_vfio_compat_ioas_create: the compat IOAS is a normal IOAS object."""
        if self.compat_ioas_id is None:
            self.compat_ioas_id = self.allocate_id(CompatIoasPlaceholder())
        return self.compat_ioas_id

    def attach_group(self, group: Group) -> None:
        self.ensure_compat_ioas()
        self.groups.append(group)

    def detach_group(self, group: Group) -> None:
        # The mappings live in the IOAS, not with the groups: nothing is torn down.
        self.groups.remove(group)

    # ---- dispatch
    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        nr = ioc_nr(cmd)
        if nr < I.IOMMUFD_CMD_BASE or nr >= _NATIVE_END:
            return self.vfio_ioctl(caller, cmd, arg)
        user_size = read_u32(caller, arg)
        op = NATIVE_IOCTLS.get(nr)
        if op is None or op.cmd != cmd:
            raise KernelError(errno.ENOTTY, f"iommufd has no ioctl {cmd:#x}")
        if user_size < op.layout.min_size:
            raise KernelError(errno.EINVAL, f"size {user_size} is below the minimum {op.layout.min_size}")
        data = copy_struct_from_user(caller, arg, user_size, op.layout.size)
        if op.handler is None:
            log.warning("iommufd ioctl %#x is not emulated yet; answering ENOTTY", cmd)
            raise KernelError(errno.ENOTTY, "not emulated yet")
        return op.handler(self, caller, data, arg)

    def vfio_ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        """iommufd_vfio_ioctl: the legacy container ioctls on an iommufd."""
        if cmd == V.VFIO_GET_API_VERSION:
            return V.VFIO_API_VERSION
        if cmd == V.VFIO_CHECK_EXTENSION:
            return self.check_extension(arg)
        if cmd == V.VFIO_SET_IOMMU:
            return self.set_iommu(arg)
        if cmd == V.VFIO_IOMMU_GET_INFO:
            read_argsz_struct(caller, arg, V.TYPE1_INFO, _COMPAT_INFO_MINSZ, "VFIO_IOMMU_GET_INFO")
            self.compat_ioas()
            return self._compat_not_emulated(cmd)
        if cmd == V.VFIO_IOMMU_MAP_DMA:
            _, fields = read_argsz_struct(caller, arg, V.DMA_MAP, V.DMA_MAP.size, "VFIO_IOMMU_MAP_DMA")
            if int(fields["flags"]) & ~(V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE):
                raise KernelError(errno.EINVAL, "iommufd's VFIO compat supports only READ|WRITE map flags")
            self.compat_ioas()
            return self._compat_not_emulated(cmd)
        if cmd == V.VFIO_IOMMU_UNMAP_DMA:
            _, fields = read_argsz_struct(caller, arg, V.DMA_UNMAP, V.DMA_UNMAP.size, "VFIO_IOMMU_UNMAP_DMA")
            if int(fields["flags"]) & ~V.VFIO_DMA_UNMAP_FLAG_ALL:
                raise KernelError(errno.EINVAL, "iommufd's VFIO compat supports only the ALL unmap flag")
            self.compat_ioas()
            return self._compat_not_emulated(cmd)
        raise KernelError(errno.ENOTTY, f"iommufd has no VFIO compat ioctl {cmd:#x}")

    def _compat_not_emulated(self, cmd: int) -> int:
        log.warning("VFIO compat ioctl %#x on an iommufd is not emulated yet; answering ENOTTY", cmd)
        raise KernelError(errno.ENOTTY, "not emulated yet")

    def check_extension(self, arg: int) -> int:
        if arg in (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU, V.VFIO_UNMAP_ALL):
            return 1
        if arg == V.VFIO_DMA_CC_IOMMU:
            self.compat_ioas()  # ENODEV without one
            return 1 if self.iommu_config.enforce_cache_coherency else 0
        # NOIOMMU needs CONFIG_VFIO_NOIOMMU (off); UPDATE_VADDR is deliberately unsupported.
        return 0

    def set_iommu(self, arg: int) -> int:
        if arg not in (V.VFIO_TYPE1_IOMMU, V.VFIO_TYPE1v2_IOMMU):
            raise KernelError(errno.EINVAL, f"VFIO_SET_IOMMU: iommufd emulates only type1, not {arg}")
        self.compat_ioas()
        return 0


class CompatIoasPlaceholder:
    """Stands for the compat IOAS object until IOAS objects are emulated."""


class IommufdFile(OpenFile):
    kind = FileKind.IOMMUFD

    def __init__(self, context: IommufdContext) -> None:
        self.context = context

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        return self.context.ioctl(caller, cmd, arg)
