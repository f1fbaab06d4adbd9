"""IOMMUFD_OBJ_FAULT: the fault queue of IOMMU_FAULT_QUEUE_ALLOC and its fd
(drivers/iommu/iommufd/eventq.c; fault.c before 6.14).

A HWPT allocated with IOMMU_HWPT_FAULT_ID_VALID names a fault object; I/O page faults on its
domain (``iommufd_fault_iopf_handler``: here only the selftest's TRIGGER_IOPF makes them) are
queued on the object, read() of the fd hands them out as ``struct iommu_hwpt_pgfault`` (each
group gets a cookie), and write() of ``struct iommu_hwpt_page_response`` answers a group by its
cookie.

References: the fd holds the object (IOMMU_DESTROY of it is EBUSY while the fd is open) and the
context (closing /dev/iommu keeps everything while a fault fd is open); every HWPT allocated
with the fault holds it too. Closing the fd only drops those references: the object stays until
IOMMU_DESTROY or the context's release.

The fd reaches the caller as CREATE_ACCESS's does: under ``ioasidfs run`` the command is trapped,
the file (node ``devfds/iommufd_fault``) is installed with ADDFD and its number written into
``out_fault_fd`` (:meth:`FaultFile.fd_installed`); over a plain mount it is EOPNOTSUPP.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import KernelError
from ..uapi import iommufd as I
from ..uapi.layout import Layout
from .argsz import int_field, ucmd_respond
from .caller import Caller
from .files import FAULT_QUEUE_NODE_KEY, FileKind, OpenFile
from .iommufd import BoundDevice, ContextObject, Hwpt, IommufdContext

_FAULT_SIZE = I.HWPT_PGFAULT.size
_RESPONSE_SIZE = I.HWPT_PAGE_RESPONSE.size
_XA_LIMIT_32B = 0xFFFFFFFF


@dataclass
class PageRequest:
    """One ``struct iommu_fault`` page request (``fault.prm``)."""

    flags: int
    pasid: int
    grpid: int
    perm: int
    addr: int


@dataclass
class FaultGroup:
    """``struct iopf_group``: the page requests of one group, the device and HWPT (attach
    handle) they came through, and the cookie read() gave it."""

    device: BoundDevice
    hwpt: Hwpt
    faults: list[PageRequest] = field(default_factory=list)
    cookie: int = 0


class EventQueue(ContextObject):
    """``struct iommufd_eventq``: what a fault queue and a vEVENTQ share (eventq.c). Its fd
    holds the object (IOMMU_DESTROY EBUSY while open) and the context (iommufd_eventq_init:
    iommufd_ctx_get); ``file_open`` says whether that fd still exists."""

    def __init__(self, ctx: IommufdContext) -> None:
        self.ctx = ctx
        self.file_open = True

    @property
    def holds_context(self) -> bool:  # type: ignore[override]
        """The fd's reference on the context."""
        return self.file_open

    def extra_users(self) -> int:
        return 1 if self.file_open else 0  # the fd's reference on the object


class EventQueueFile(OpenFile):
    """The fd of an :class:`EventQueue`, installed by the launcher: :meth:`fd_installed`
    writes its number into the alloc struct (field ``fd_field`` of ``alloc_layout``) and
    responds (iommufd_ucmd_respond: EFAULT); the ioctl returns 0. Its release drops the fd's
    references; a file that never reached the caller (over a plain mount, or an install that
    failed) takes the object with it, as the kernel's error path destroys it. No ioctls."""

    alloc_layout: ClassVar[Layout]
    fd_field: ClassVar[str]

    def __init__(self, queue: EventQueue, caller: Caller, arg: int, data: bytearray) -> None:
        self.queue = queue
        self._respond: tuple[Caller, int, bytearray] | None = (caller, arg, data)

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        raise KernelError(errno.ENOTTY, f"{type(self).__name__}: event queue fds have no ioctls")

    def fd_installed(self, fd: int) -> int:
        if self._respond is not None:
            caller, arg, data = self._respond
            self._respond = None
            self.alloc_layout.write_fields(data, **{self.fd_field: fd})
            ucmd_respond(caller, arg, data)
        return 0

    def release(self) -> None:
        queue = self.queue
        queue.file_open = False
        ctx = queue.ctx
        if self._respond is not None:  # never reached the caller: the object goes too
            self._respond = None
            if any(o is queue for o in ctx.objects.values()):
                ctx.drop_object(queue)
                queue.destroy(ctx)
            return
        ctx.release_if_unused()


class FaultQueue(EventQueue):
    """``struct iommufd_fault``: groups waiting to be read (``deliver``, in order) and groups
    read and waiting for a response (``response``, by cookie)."""

    def __init__(self, ctx: IommufdContext) -> None:
        super().__init__(ctx)
        self.deliver: list[FaultGroup] = []
        self.response: dict[int, FaultGroup] = {}

    def destroy(self, ctx: IommufdContext) -> None:
        """iommufd_fault_destroy: every pending group is answered INVALID and freed."""
        self.deliver.clear()
        self.response.clear()

    # ---- iommufd_fault_iopf_handler
    def report(self, group: FaultGroup) -> None:
        self.deliver.append(group)

    def auto_respond(self, device: BoundDevice, hwpt: Hwpt) -> None:
        """iommufd_auto_response_faults: the device leaves ``hwpt``: its groups, read or not,
        are answered INVALID and dropped."""
        self.deliver = [g for g in self.deliver if not (g.device is device and g.hwpt is hwpt)]
        for cookie, group in list(self.response.items()):
            if group.device is device and group.hwpt is hwpt:
                del self.response[cookie]

    # ---- the fd's read and write (iommufd_fault_fops_read/_write)
    def read(self, count: int) -> bytes:
        """``count`` must be a multiple of 40 (ESPIPE). Whole groups while they fit, each
        getting the lowest free cookie >= 1; nothing queued: 0 bytes."""
        if count % _FAULT_SIZE:
            raise KernelError(errno.ESPIPE, f"fault read of {count} bytes: not whole faults")
        out = bytearray()
        while self.deliver:
            group = self.deliver[0]
            if len(out) >= count or len(group.faults) * _FAULT_SIZE > count - len(out):
                break
            cookie = 1
            while cookie in self.response:
                cookie += 1
            if cookie > _XA_LIMIT_32B:
                break
            self.deliver.pop(0)
            group.cookie = cookie
            self.response[cookie] = group
            dev_id = self.ctx.id_of(group.device) if group.device in self.ctx.devices else 0
            for fault in group.faults:
                out += I.HWPT_PGFAULT.pack(flags=fault.flags, dev_id=dev_id, pasid=fault.pasid,
                                           grpid=fault.grpid, perm=fault.perm, reserved=0,
                                           addr=fault.addr, length=0, cookie=cookie)
        return bytes(out)

    def write(self, data: bytes) -> int:
        """``len(data)`` a multiple of 8 (ESPIPE); per response: a code other than SUCCESS or
        INVALID, or a cookie no read group has, stops with EINVAL -- the bytes of the responses
        before it count as written."""
        if len(data) % _RESPONSE_SIZE:
            raise KernelError(errno.ESPIPE, f"fault write of {len(data)} bytes: not whole responses")
        done = 0
        error: KernelError | None = None
        while done < len(data):
            fields = I.HWPT_PAGE_RESPONSE.unpack(data[done:done + _RESPONSE_SIZE])
            code, cookie = int_field(fields, "code"), int_field(fields, "cookie")
            if code not in (I.IOMMUFD_PAGE_RESP_SUCCESS, I.IOMMUFD_PAGE_RESP_INVALID):
                error = KernelError(errno.EINVAL, f"page response code {code}")
                break
            if self.response.pop(cookie, None) is None:
                error = KernelError(errno.EINVAL, f"no fault group has cookie {cookie}")
                break
            done += _RESPONSE_SIZE  # iopf_group_response: the mock driver's page_response is a no-op
        if done == 0 and error is not None:
            raise error
        return done


class FaultFile(EventQueueFile):
    """The fault queue's fd (``[iommufd-pgfault]``): read and write, no ioctl, no mmap."""

    kind = FileKind.FAULT_QUEUE
    node_key = FAULT_QUEUE_NODE_KEY
    alloc_layout = I.FAULT_ALLOC
    fd_field = "out_fault_fd"

    def __init__(self, fault: FaultQueue, caller: Caller, arg: int, data: bytearray) -> None:
        super().__init__(fault, caller, arg, data)
        self.fault = fault

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        # The kernel's read never moves the file position (a non-zero one is ESPIPE); FUSE
        # advances its own after each read, so the offset is not looked at.
        return self.fault.read(size)

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        return self.fault.write(data)


def fault_alloc(ctx: IommufdContext, caller: Caller, data: bytearray, arg: int) -> OpenFile:
    """iommufd_fault_alloc: flags (EOPNOTSUPP), the FAULT object (its id), the fd; the new file
    goes back to the launcher, which installs it and writes its number (with the id) into the
    struct."""
    fields = I.FAULT_ALLOC.unpack(data)
    if int_field(fields, "flags"):
        raise KernelError(errno.EOPNOTSUPP, "FAULT_QUEUE_ALLOC: flags")
    fault = FaultQueue(ctx)
    fault_id = ctx.allocate_id(fault)
    I.FAULT_ALLOC.write_fields(data, out_fault_id=fault_id)
    return FaultFile(fault, caller, arg, data)


def get_fault(ctx: IommufdContext, object_id: int) -> FaultQueue:
    """iommufd_get_fault."""
    return ctx.get_object(object_id, FaultQueue, "fault queue")
