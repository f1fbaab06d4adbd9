"""IOMMU_TEST_CMD: the mock IOMMU, mock devices and test operations of a kernel built with
CONFIG_IOMMUFD_TEST (drivers/iommu/iommufd/selftest.c), so that the kernel's own selftest
(tools/testing/selftests/iommu/iommufd.c) runs unmodified against our iommufd.

The ioctl exists only when the configuration says ``[iommufd] test_cmd = true``; a production
kernel has no such slot in its ioctl table (ENOTTY), which is our default.

What the mock is, as iommufd sees it (the facts come from selftest.c; the core rules of bind,
attach, replace and detach stay in ``iommufd.py``, used here through its public methods):

* **Mock devices** (:class:`MockDevice`): each its own IOMMU group behind the mock IOMMU,
  created by MOCK_DOMAIN[_FLAGS] and bound to the context like any device. Unlike a VFIO device
  a mock device holds no reference on the context (iommufd_device_bind skips
  iommufd_ctx_get for them), so closing /dev/iommu destroys everything.
* **Mock paging domains**: aperture [MOCK_APERTURE_START, MOCK_APERTURE_LAST] = [2^24, 2^31-1],
  IOPTEs of MOCK_IO_PAGE_SIZE = PAGE_SIZE/2 (plus 1 MiB ones for a HUGE_IOVA device): an IOAS
  with a mock domain has an IOVA alignment of 2 KiB. The mock driver maps any permission.
* **The SELFTEST object** (:class:`SelftestObject`): what MOCK_DOMAIN returns as ``stdev_id``;
  destroying it detaches and unbinds the device and deletes it.

The checking operations (MD_CHECK_MAP, MD_CHECK_REFS, ACCESS_PAGES's page check) compare
physical pages in the kernel. We compare what decides a physical page (:class:`PageIdentities`):
a file and an offset for shared file and shmem mappings and for MAP_FILE pages, a process and
an address for private memory.
"""
from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Callable

from ..config import IommuConfig
from ..errors import IommuFault, KernelError
from ..uapi import iommufd as I
from ..uapi.layout import Layout
from .argsz import copy_in, copy_out, int_field, ucmd_respond
from .caller import PAGE_SIZE, Caller, SharedMapping
from .files import ACCESS_NODE_KEY, FileKind, OpenFile
from .ioas import IOMMU_READ, IOMMU_WRITE, U64_MAX, Domain, FilePages, Ioas, Pages
from .iommufd import (BoundDevice, ContextObject, Hwpt, HwptNested, HwptPaging, IommufdContext,
                      UserHwpt)

if TYPE_CHECKING:
    from .iommufd_viommu import HwQueue, UserData, UserDataArray, Viommu

log = logging.getLogger("ioasidfs.engine")

MOCK_IO_PAGE_SIZE = PAGE_SIZE // 2
"""The mock domain's IOPTE size (selftest.c: PAGE_SIZE / 2)."""
MOCK_HUGE_PAGE_SIZE = 512 * MOCK_IO_PAGE_SIZE
"""The large IOPTE of a domain allocated for a MOCK_FLAGS_DEVICE_HUGE_IOVA device (1 MiB)."""
MOCK_DEV_CACHE_ID_MAX = I.MOCK_DEV_CACHE_NUM - 1
_DEVICE_FLAGS = (I.MOCK_FLAGS_DEVICE_NO_DIRTY | I.MOCK_FLAGS_DEVICE_HUGE_IOVA
                 | I.MOCK_FLAGS_DEVICE_PASID)
_MEMORY_LIMIT_MIN = 8 + 4
"""SET_TEMP_MEMORY_LIMIT: below sizeof(unsigned long) + sizeof(u32) the core's batches break."""
_DEFAULT_MEMORY_LIMIT = 65536



class MockDevice(BoundDevice):
    """``struct mock_dev`` bound to a context (``struct iommufd_device``): its flags, its
    four cache words (DEV_CHECK_CACHE), and the mock domains it gets."""

    holds_context = False  # iommufd_device_bind takes no context reference for a mock device

    def __init__(self, name: str, flags: int) -> None:
        super().__init__(name)
        self.flags = flags
        self.cache = [I.IOMMU_TEST_DEV_CACHE_DEFAULT] * I.MOCK_DEV_CACHE_NUM
        self.pasid_1024_fake_error = False
        #: ``mdev->viommu`` and ``mdev->vdev_id`` as the last attach left them, with the HWPT
        #: attached then (a detach, which attaches the blocking domain, clears them).
        self.viommu_attach: tuple[Hwpt, Viommu | None, int] | None = None

    def new_domain(self, iommu: IommuConfig) -> Domain:
        """mock_domain_alloc_paging_flags: the mock geometry whatever the machine's IOMMU is."""
        return mock_domain(self.flags)

    def iommu_driver(self, ctx: IommufdContext) -> MockIommu:
        return MockIommu(self.flags)

    def check_attach(self, hwpt: Hwpt) -> None:
        """mock_domain_nop_attach: a NO_DIRTY device cannot join a domain with dirty ops; a
        nested domain of a vIOMMU needs the device's vDEVICE there (ENOENT,
        iommufd_viommu_get_vdev_id), whose virtual id the device then reports events with."""
        if (self.flags & I.MOCK_FLAGS_DEVICE_NO_DIRTY and isinstance(hwpt, UserHwpt)
                and hwpt.dirty_ops):
            raise KernelError(errno.EINVAL, "a NO_DIRTY mock device on a dirty-tracking domain")
        viommu = hwpt.domain.viommu if (isinstance(hwpt, HwptNested) and isinstance(
            hwpt.domain, MockNestedDomain)) else None
        vdev_id = viommu.get_vdev_id(self) if viommu is not None else 0
        self.viommu_attach = (hwpt, viommu, vdev_id)

    def vevent_source(self) -> tuple[Viommu, int] | None:
        """``mdev->viommu`` and ``mdev->vdev_id`` while the device is still on the HWPT they
        were set for; None if either is unset."""
        if self.viommu_attach is None or self.viommu_attach[0] is not self.hwpt:
            return None
        _, viommu, vdev_id = self.viommu_attach
        return (viommu, vdev_id) if viommu is not None and vdev_id else None

    def set_dev_pasid(self, hwpt: Hwpt | None, pasid: int, old: Hwpt | None) -> None:
        """mock_domain_set_dev_pasid_nop: PASID 1024 fakes a driver failure to test the core's
        rollback -- the blocked domain (a detach) clears ``pasid_1024_fake_error``; otherwise a
        set flag is cleared and the call fails ENOMEM, an unset one is set."""
        if pasid != 1024:
            return
        if hwpt is None:
            self.pasid_1024_fake_error = False
        elif self.pasid_1024_fake_error:
            self.pasid_1024_fake_error = False
            raise KernelError(errno.ENOMEM, "mock: the faked failure at PASID 1024")
        else:
            self.pasid_1024_fake_error = True


class MockIommu:
    """The mock IOMMU as the iommufd core asks it (``mock_ops``), for a device with ``flags``:
    capable(DIRTY_TRACKING) unless NO_DIRTY; NEST_PARENT paging domains allowed; hw_info of
    type IOMMU_HW_INFO_TYPE_SELFTEST, ``{flags 0, test_reg 0xdeadbeef}``; a PASID width of
    MOCK_PASID_WIDTH for a PASID device ("pasid-num-bits"), else none."""

    nesting = True
    hw_info_type = I.IOMMU_HW_INFO_TYPE_SELFTEST
    owner = "mock"
    user_pasid_table = True  # mock_ops.user_pasid_table: faults at any PASID go to a nested RID domain

    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.dirty_tracking = not flags & I.MOCK_FLAGS_DEVICE_NO_DIRTY
        self.max_pasid_log2 = I.MOCK_PASID_WIDTH if flags & I.MOCK_FLAGS_DEVICE_PASID else 0

    def hw_info(self) -> bytes:
        return I.TEST_HW_INFO.pack(flags=0, test_reg=I.IOMMU_HW_INFO_SELFTEST_REGVAL)

    def viommu_supported(self, viommu_type: int) -> bool:
        """mock_get_viommu_size: IOMMU_VIOMMU_TYPE_SELFTEST only."""
        return viommu_type == I.IOMMU_VIOMMU_TYPE_SELFTEST

    def viommu_init(self, caller: Caller, viommu: Viommu, data: UserData | None) -> MockViommu:
        """mock_viommu_init: with driver data, ``struct iommu_viommu_selftest`` exactly (type
        and length: EINVAL; the copy: EFAULT), whose ``out_data`` is set to ``in_data`` and
        copied back (EFAULT). The nesting parent is the vIOMMU's HWPT."""
        if data is not None:
            from .iommufd_viommu import copy_driver_struct_from_user, copy_driver_struct_to_user
            layout = I.VIOMMU_SELFTEST
            fields = copy_driver_struct_from_user(caller, layout, data, I.IOMMU_VIOMMU_TYPE_SELFTEST,
                                                  "out_data")
            echoed = layout.pack(in_data=int_field(fields, "in_data"),
                                 out_data=int_field(fields, "in_data"))
            copy_driver_struct_to_user(caller, data, echoed, I.IOMMU_VIOMMU_TYPE_SELFTEST,
                                       layout.field_end("out_data"))
        return MockViommu(viommu, self)

    def domain_alloc_nested(self, caller: Caller, parent: UserHwpt, flags: int, data_type: int,
                            data_len: int, uptr: int) -> MockNestedDomain:
        """mock_domain_alloc_nested + __mock_domain_alloc_nested: flags other than PASID
        (EOPNOTSUPP; the parent is always a paging domain here), a data type other than
        IOMMU_HWPT_DATA_SELFTEST (EOPNOTSUPP), then iommu_copy_struct_from_user of
        ``struct iommu_hwpt_selftest``: a length other than its 4 bytes (EINVAL: shorter than
        ``iotlb``'s end, or longer than the kernel's struct), the copy (EFAULT). Every iotlb
        entry starts with the given value."""
        if flags & ~I.IOMMU_HWPT_ALLOC_PASID:
            raise KernelError(errno.EOPNOTSUPP, f"mock nested domain: flags {flags:#x}")
        if data_type != I.IOMMU_HWPT_DATA_SELFTEST:
            raise KernelError(errno.EOPNOTSUPP, f"mock nested domain: data type {data_type:#x}")
        size = I.HWPT_SELFTEST.size
        if data_len != size:
            raise KernelError(errno.EINVAL, f"mock nested domain: {data_len} bytes of data, not {size}")
        cfg = I.HWPT_SELFTEST.unpack(copy_in(caller, uptr, size))
        return MockNestedDomain(parent, int_field(cfg, "iotlb"))


class MockNestedDomain:
    """``struct mock_iommu_domain_nested``: its parent and its four iotlb words, which
    HWPT_INVALIDATE clears (mock_domain_cache_invalidate_user) and MD_CHECK_IOTLB reads."""

    def __init__(self, parent: UserHwpt, iotlb: int) -> None:
        self.parent = parent
        self.iotlb = [iotlb] * I.MOCK_NESTED_DOMAIN_IOTLB_NUM
        #: ``mock_nested->mock_viommu``: the vIOMMU that made it (mock_viommu_alloc_domain_nested)
        self.viommu: Viommu | None = None

    def cache_invalidate_user(self, caller: Caller, data_type: int, uptr: int, entry_len: int,
                              entry_num: int) -> tuple[int, KernelError | None]:
        """A data type other than IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: EINVAL, nothing done.
        Then per entry, in order: iommu_copy_struct_from_user_array (an entry length other
        than the 8-byte struct's: EINVAL; the copy: EFAULT), flags other than
        IOMMU_TEST_INVALIDATE_FLAG_ALL (EOPNOTSUPP), an iotlb_id past 3 (EINVAL); FLAG_ALL
        clears every entry, else the one named. The first error stops the walk; the count of
        entries handled before it is reported."""
        if data_type != I.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST:
            return 0, KernelError(errno.EINVAL, f"mock invalidation: data type {data_type:#x}")
        size = I.HWPT_INVALIDATE_SELFTEST.size
        for index in range(entry_num):
            try:
                if entry_len != size:
                    raise KernelError(errno.EINVAL, f"mock invalidation: entry length {entry_len}")
                request = I.HWPT_INVALIDATE_SELFTEST.unpack(
                    copy_in(caller, uptr + entry_len * index, size))
                flags, iotlb_id = int_field(request, "flags"), int_field(request, "iotlb_id")
                if flags & ~I.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                    raise KernelError(errno.EOPNOTSUPP, f"mock invalidation {index}: flags {flags:#x}")
                if iotlb_id > I.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX:
                    raise KernelError(errno.EINVAL, f"mock invalidation {index}: iotlb {iotlb_id}")
            except KernelError as error:
                return index, error
            if flags & I.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                self.iotlb = [0] * I.MOCK_NESTED_DOMAIN_IOTLB_NUM
            else:
                self.iotlb[iotlb_id] = 0
        return entry_num, None


class MockViommu:
    """``struct mock_viommu`` and ``mock_viommu_ops``: the mock driver's side of a vIOMMU --
    nested domains, invalidation of the devices' cache words, and up to
    IOMMU_TEST_HW_QUEUE_MAX HW queues of IOMMU_HW_QUEUE_TYPE_SELFTEST, each but the first
    depending on the one before."""

    def __init__(self, viommu: Viommu, iommu: MockIommu) -> None:
        self.viommu = viommu
        self.iommu = iommu
        self.hw_queue: list[HwQueue | None] = [None] * I.IOMMU_TEST_HW_QUEUE_MAX

    def destroy(self) -> None:
        """mock_viommu_destroy: nothing of ours outlives the vIOMMU."""

    def alloc_domain_nested(self, caller: Caller, flags: int, data: UserData) -> MockNestedDomain:
        """mock_viommu_alloc_domain_nested: flags other than PASID EOPNOTSUPP, then
        __mock_domain_alloc_nested's rules (:meth:`MockIommu.domain_alloc_nested`); the domain
        remembers the vIOMMU."""
        domain = self.iommu.domain_alloc_nested(caller, self.viommu.hwpt, flags, data.type,
                                                data.len, data.uptr)
        domain.viommu = self.viommu
        return domain

    def cache_invalidate(self, caller: Caller,
                         array: UserDataArray) -> tuple[int, KernelError | None]:
        """mock_viommu_cache_invalidate: an empty array of the right type is a 0 probe; else
        the whole array is copied first (iommu_copy_struct_from_full_user_array: type, empty,
        EFAULT, E2BIG -- nothing handled), then per request: flags other than FLAG_ALL
        EOPNOTSUPP, a cache index past 3 EINVAL, a virtual id with no vDEVICE EINVAL; FLAG_ALL
        zeroes every cache word of the device, else the one named. The count handled before
        the first error is reported."""
        from .iommufd_viommu import KMALLOC_MAX_SIZE, copy_driver_array_from_user
        layout = I.VIOMMU_INVALIDATE_SELFTEST
        if array.entry_num == 0 and array.type == I.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST:
            return 0, None
        if array.entry_num * layout.size > KMALLOC_MAX_SIZE:
            return 0, KernelError(errno.ENOMEM, f"{array.entry_num} requests")
        try:
            requests = copy_driver_array_from_user(caller, layout, array,
                                                   I.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST)
        except KernelError as error:
            return 0, error
        for index, request in enumerate(requests):
            flags, cache_id = int_field(request, "flags"), int_field(request, "cache_id")
            if flags & ~I.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                return index, KernelError(errno.EOPNOTSUPP, f"request {index}: flags {flags:#x}")
            if cache_id > MOCK_DEV_CACHE_ID_MAX:
                return index, KernelError(errno.EINVAL, f"request {index}: cache {cache_id}")
            device = self.viommu.find_dev(int_field(request, "vdev_id"))
            if not isinstance(device, MockDevice):
                return index, KernelError(errno.EINVAL, f"request {index}: no such vDEVICE")
            if flags & I.IOMMU_TEST_INVALIDATE_FLAG_ALL:
                device.cache = [0] * I.MOCK_DEV_CACHE_NUM
            else:
                device.cache[cache_id] = 0
        return len(requests), None

    def hw_queue_supported(self, queue_type: int) -> bool:
        """mock_viommu_get_hw_queue_size: IOMMU_HW_QUEUE_TYPE_SELFTEST only."""
        return queue_type == I.IOMMU_HW_QUEUE_TYPE_SELFTEST

    def hw_queue_init_phys(self, queue: HwQueue, index: int) -> None:
        """mock_hw_queue_init_phys: an index past the last EINVAL, one in use EEXIST, one whose
        predecessor is missing EIO; a queue after the first depends on (holds) the one before.
        (Its check that the core translated the base address right always holds here.)"""
        if index >= I.IOMMU_TEST_HW_QUEUE_MAX:
            raise KernelError(errno.EINVAL, f"HW queue index {index}")
        if self.hw_queue[index] is not None:
            raise KernelError(errno.EEXIST, f"HW queue {index} exists")
        prev = self.hw_queue[index - 1] if index else None
        if index and prev is None:
            raise KernelError(errno.EIO, f"HW queue {index - 1} does not exist")
        queue.index = index
        queue.prev = prev
        self.hw_queue[index] = queue
        queue.driver_destroy = self._hw_queue_destroy

    def _hw_queue_destroy(self, queue: HwQueue) -> None:
        """mock_hw_queue_destroy: out of the array; the dependency on the one before goes."""
        self.hw_queue[queue.index] = None
        queue.prev = None


def mock_domain(device_flags: int) -> Domain:
    """A mock paging domain for a device with ``device_flags``."""
    pgsize = MOCK_IO_PAGE_SIZE
    if device_flags & I.MOCK_FLAGS_DEVICE_HUGE_IOVA:
        pgsize |= MOCK_HUGE_PAGE_SIZE
    return Domain(pgsize, I.MOCK_APERTURE_START, I.MOCK_APERTURE_LAST,
                  enforce_cache_coherency=False, requires_access=False)


def is_mock_domain(domain: Domain) -> bool:
    """What get_md_pagetable asks (the domain's ops are the mock's)."""
    return (domain.aperture_start == I.MOCK_APERTURE_START
            and domain.aperture_last == I.MOCK_APERTURE_LAST
            and domain.min_page_size == MOCK_IO_PAGE_SIZE)


class SelftestObject(ContextObject):
    """IOMMUFD_OBJ_SELFTEST (TYPE_IDEV): the handle MOCK_DOMAIN returns as ``stdev_id``."""

    def __init__(self, device: MockDevice) -> None:
        self.device = device

    def destroy(self, ctx: IommufdContext) -> None:
        """iommufd_selftest_destroy: detach, unbind (the DEVICE object goes), delete the mock
        device. Also reached from the context's release, which must not be re-entered."""
        ctx.unbind_device(self.device, release=False)


class MockSelftest:
    """The IOMMU_TEST_CMD handler of one context (``iommufd_test``).

    ``memory_limit`` is iommufd_test_memory_limit, the core's batch size in tests: module-wide
    in the kernel, with no visible effect but the argument check."""

    def __init__(self) -> None:
        self.memory_limit = _DEFAULT_MEMORY_LIMIT
        self._next_mock_id = 0

    # ---- dispatch (the native ioctl path has read, size-checked and copied the struct)
    def ioctl(self, ctx: IommufdContext, caller: Caller, data: bytearray, arg: int) -> int:
        op = int_field(I.TEST_CMD.unpack(data), "op")
        layout = I.TEST_CMD_BY_OP.get(op)
        handler = _HANDLERS.get(op)
        if layout is None or handler is None:
            # Unknown ops are EOPNOTSUPP; known ones we do not model say so in the log.
            if layout is not None:
                log.warning("IOMMU_TEST_CMD op %d is not emulated; answering EOPNOTSUPP", op)
            raise KernelError(errno.EOPNOTSUPP, f"IOMMU_TEST_CMD: op {op}")
        return handler(self, ctx, caller, layout, data, arg)

    # ---- ADD_RESERVED
    def add_reserved(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                     data: bytearray, arg: int) -> int:
        """iommufd_test_add_reserved: the IOAS (ENOENT), then iopt_reserve_iova of
        [start, start+length-1] (wrapping as unsigned long) with no owner: kept until the IOAS
        goes (EADDRINUSE over a mapped or allowed IOVA)."""
        fields = layout.unpack(data)
        ioas = ctx.get_ioas(int_field(fields, "id"))
        start, length = int_field(fields, "start"), int_field(fields, "length")
        ioas.reserve(start, (start + length - 1) & U64_MAX, _TEST_RESERVATION)
        return 0

    # ---- MOCK_DOMAIN, MOCK_DOMAIN_FLAGS, MOCK_DOMAIN_REPLACE
    def mock_domain(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                    data: bytearray, arg: int) -> int:
        """iommufd_test_mock_domain: the SELFTEST object's id first, the mock device (unknown
        device flags: EINVAL), its bind (the DEVICE id), the attach to ``id`` (an IOAS: an
        automatic mock domain; a paging HWPT: that one; ENOENT, EINVAL, EADDRINUSE, EFAULT
        from the core), then the three ids are written back. Any failure undoes it all and
        frees the ids."""
        fields = layout.unpack(data)
        op = int_field(fields, "op")
        flags = int_field(fields, "dev_flags") if op == I.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS else 0
        sobj_id = ctx.allocate_id(None)  # the id is taken; the object comes at the end
        try:
            if flags & ~_DEVICE_FLAGS:
                raise KernelError(errno.EINVAL, f"mock device flags {flags:#x}")
            device = MockDevice(f"iommufd_mock{self._next_mock_id}", flags)
            self._next_mock_id += 1
            ctx.bind(device)
            try:
                hwpt_id = ctx.attach_pt(device, int_field(fields, "id"))
                layout.write_fields(data, out_stdev_id=sobj_id, out_hwpt_id=hwpt_id,
                                    out_idev_id=ctx.id_of(device))
                ucmd_respond(caller, arg, data)
            except KernelError:
                ctx.unbind_device(device)
                raise
        except KernelError:
            del ctx.objects[sobj_id]
            raise
        ctx.objects[sobj_id] = SelftestObject(device)
        return 0

    def mock_domain_replace(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                            data: bytearray, arg: int) -> int:
        """iommufd_test_mock_domain_replace: ``id`` must be a SELFTEST object (ENOENT), then
        iommufd_device_replace (the core's rules; attach if it was not attached), and the HWPT
        now used is written back in ``pt_id``."""
        fields = layout.unpack(data)
        sobj = _selftest_object(ctx, int_field(fields, "id"))
        hwpt_id = ctx.attach_pt(sobj.device, int_field(fields, "pt_id"))
        layout.write_fields(data, pt_id=hwpt_id)
        ucmd_respond(caller, arg, data)
        return 0

    # ---- checks
    def md_check_map(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                     data: bytearray, arg: int) -> int:
        """iommufd_test_md_check_pa: iova, length and uptr 2 KiB multiples and no overflow
        (EINVAL); ``id`` a paging HWPT (ENOENT) of a mock domain (EINVAL). Then per 2 KiB:
        the caller's page at uptr must be there (GUP: EFAULT), and the domain's IOPTE at iova
        must exist and hold that page (EINVAL)."""
        fields = layout.unpack(data)
        iova, length, uptr = (int_field(fields, "iova"), int_field(fields, "length"),
                              int_field(fields, "uptr"))
        if (iova | length | uptr) % MOCK_IO_PAGE_SIZE or uptr + length > U64_MAX:
            raise KernelError(errno.EINVAL, "MD_CHECK_MAP: misaligned or overflowing range")
        hwpt = _mock_hwpt(ctx, int_field(fields, "id"))
        pages = PageIdentities()
        for offset in range(0, length, MOCK_IO_PAGE_SIZE):
            _gup(caller, uptr + offset)
            target = iopte(hwpt.ioas, iova + offset, pages)
            if target is None or target != pages.of_caller(caller, uptr + offset):
                raise KernelError(errno.EINVAL, f"MD_CHECK_MAP: IOVA {iova + offset:#x} does not "
                                                f"map the caller's {uptr + offset:#x}")
        return 0

    def md_check_refs(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                      data: bytearray, arg: int) -> int:
        """iommufd_test_md_check_refs: length and uptr page multiples, no overflow (EINVAL);
        per page of the caller (GUP: EFAULT), its pin count must be ``refs`` (EIO).

        A page is pinned once per ``iopt_pages`` that holds it (however many domains or areas
        share it), which is what we count -- over this context's IOASes: pins live and die with
        their context, and the selftest checks refs of its own context (teardown: 0 after a
        close, through a new one)."""
        fields = layout.unpack(data)
        length, uptr, refs = (int_field(fields, "length"), int_field(fields, "uptr"),
                              int_field(fields, "refs"))
        if length % PAGE_SIZE or uptr % PAGE_SIZE or uptr + length > U64_MAX:
            raise KernelError(errno.EINVAL, "MD_CHECK_REFS: misaligned or overflowing range")
        if not length:
            return 0
        identities = PageIdentities()
        counts = pin_counts(ctx, identities)
        for page in range(uptr, uptr + length, PAGE_SIZE):
            _gup(caller, page)
            pins = counts.get(identities.of_caller(caller, page), 0)
            if pins != refs:
                raise KernelError(errno.EIO, f"MD_CHECK_REFS: {page:#x} is pinned {pins} times, "
                                             f"not {refs}")
        return 0

    def dev_check_cache(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                        data: bytearray, arg: int) -> int:
        """iommufd_test_dev_check_cache: ``id`` a DEVICE (ENOENT); the index at most 3 and the
        word equal (EINVAL)."""
        fields = layout.unpack(data)
        device = ctx.get_device(int_field(fields, "id"))
        cache_id, value = int_field(fields, "cache_id"), int_field(fields, "cache")
        if (not isinstance(device, MockDevice) or cache_id > MOCK_DEV_CACHE_ID_MAX
                or device.cache[cache_id] != value):
            raise KernelError(errno.EINVAL, f"DEV_CHECK_CACHE: cache[{cache_id}] is not {value:#x}")
        return 0

    def md_check_iotlb(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                       data: bytearray, arg: int) -> int:
        """iommufd_test_md_check_iotlb: ``id`` a nested HWPT (ENOENT) of the mock driver
        (get_md_pagetable_nested: EINVAL); an iotlb index past 3 or a different value EINVAL."""
        fields = layout.unpack(data)
        obj = ctx.objects.get(int_field(fields, "id"))
        if not isinstance(obj, HwptNested):
            raise KernelError(errno.ENOENT, f"no nested HWPT {int_field(fields, 'id')}")
        if not isinstance(obj.domain, MockNestedDomain):
            raise KernelError(errno.EINVAL, f"HWPT {int_field(fields, 'id')} is not a mock nested domain")
        iotlb_id, value = int_field(fields, "iotlb_id"), int_field(fields, "iotlb")
        if iotlb_id > I.MOCK_NESTED_DOMAIN_IOTLB_ID_MAX or obj.domain.iotlb[iotlb_id] != value:
            raise KernelError(errno.EINVAL, f"MD_CHECK_IOTLB: iotlb[{iotlb_id}] is not {value:#x}")
        return 0

    def set_temp_memory_limit(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                              data: bytearray, arg: int) -> int:
        """Below 12 bytes: EINVAL; else the new batch size (nothing written back)."""
        limit = int_field(layout.unpack(data), "limit")
        if limit < _MEMORY_LIMIT_MIN:
            raise KernelError(errno.EINVAL, f"SET_TEMP_MEMORY_LIMIT: {limit} is below {_MEMORY_LIMIT_MIN}")
        self.memory_limit = limit
        return 0

    def dirty(self, ctx: IommufdContext, caller: Caller, layout: Layout,
              data: bytearray, arg: int) -> int:
        """iommufd_test_dirty: page_size or length 0, iova or length not page_size multiples,
        uptr 0 (EINVAL); ``id`` a mock paging HWPT (ENOENT, EINVAL) with dirty tracking on
        (EINVAL); the ceil(n/8)-byte bitmap (EFAULT). For each set bit i, the IOPTE at index
        (iova + i*page_size) / page_size -- the mock indexes its 2 KiB entries so, whatever
        page_size is -- is marked dirty if it exists, and counted in ``out_nr_dirty``. The
        dirty bit lives where device writes put theirs: the IOAS's translation table."""
        fields = layout.unpack(data)
        iova, length = int_field(fields, "iova"), int_field(fields, "length")
        page_size, uptr = int_field(fields, "page_size"), int_field(fields, "uptr")
        if not page_size or not length or iova % page_size or length % page_size or not uptr:
            raise KernelError(errno.EINVAL, "DIRTY: bad range, page size or bitmap")
        hwpt = _mock_hwpt(ctx, int_field(fields, "id"))
        if not isinstance(hwpt, UserHwpt) or not hwpt.dirty_enabled:
            raise KernelError(errno.EINVAL, "DIRTY: the mock domain is not tracking")
        count = length // page_size
        bitmap = caller.memory.read(uptr, (count + 7) // 8)
        marked = 0
        for i in range(count):
            if not bitmap[i // 8] >> (i % 8) & 1:
                continue
            entry = (iova + i * page_size) // page_size * MOCK_IO_PAGE_SIZE
            if hwpt.ioas.areas.first_overlapping(entry, entry) is not None:
                hwpt.ioas.table.mark_dirty(entry, MOCK_IO_PAGE_SIZE)
                marked += 1
        layout.write_fields(data, out_nr_dirty=marked)
        ucmd_respond(caller, arg, data)
        return 0

    def trigger_iopf(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                     data: bytearray, arg: int) -> int:
        """iommufd_test_trigger_iopf: the device (ENOENT), then a last-page request (PASID_VALID
        unless ``pasid`` is 0) reported to the IOMMU core (iommu_report_device_fault ->
        find_fault_handler): at a PASID, the domain attached there, else, the mock driver
        having a user PASID table, a nested domain attached to the RID; without
        a PASID, the RID's domain. A domain with a fault queue (FAULT_ID_VALID) gets the group
        queued there for read(); otherwise it is dropped. Always 0."""
        fields = layout.unpack(data)
        device = ctx.get_device(int_field(fields, "dev_id"))
        pasid = int_field(fields, "pasid")
        flags = I.IOMMU_PGFAULT_FLAGS_LAST_PAGE
        hwpt = device.hwpt
        if pasid:
            flags |= I.IOMMU_PGFAULT_FLAGS_PASID_VALID
            at_pasid = ctx._group_pasid_hwpt(device, pasid)
            if at_pasid is not None:
                hwpt = at_pasid
            elif not getattr(device.iommu_driver(ctx), "user_pasid_table", False) or not isinstance(
                    hwpt, HwptNested):
                hwpt = None
        if hwpt is None or hwpt.fault is None:
            return 0
        from .iommufd_fault import FaultGroup, FaultQueue, PageRequest
        fault = hwpt.fault
        assert isinstance(fault, FaultQueue)
        fault.report(FaultGroup(device, hwpt, [PageRequest(
            flags=flags, pasid=pasid, grpid=int_field(fields, "grpid"),
            perm=int_field(fields, "perm"), addr=int_field(fields, "addr"))]))
        return 0

    def pasid_attach(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                     data: bytearray, arg: int) -> int:
        """iommufd_test_pasid_attach: the selftest object (ENOENT), then iommufd_device_attach
        at ``pasid`` to ``pt_id`` (the core's rules); nothing is written back."""
        fields = layout.unpack(data)
        sobj = _selftest_object(ctx, int_field(fields, "id"))
        ctx.attach_pasid(sobj.device, int_field(fields, "pasid"), int_field(fields, "pt_id"))
        return 0

    def pasid_replace(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                      data: bytearray, arg: int) -> int:
        """iommufd_test_pasid_replace: the selftest object (ENOENT), then
        iommufd_device_replace at ``pasid``; nothing is written back."""
        fields = layout.unpack(data)
        sobj = _selftest_object(ctx, int_field(fields, "id"))
        ctx.replace_pasid(sobj.device, int_field(fields, "pasid"), int_field(fields, "pt_id"))
        return 0

    def pasid_detach(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                     data: bytearray, arg: int) -> int:
        """iommufd_test_pasid_detach: the selftest object (ENOENT), then iommufd_device_detach
        of the PASID (nothing if not attached), which returns nothing: 0."""
        fields = layout.unpack(data)
        sobj = _selftest_object(ctx, int_field(fields, "id"))
        ctx.detach_pasid(sobj.device, int_field(fields, "pasid"))
        return 0

    def pasid_check_hwpt(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                         data: bytearray, arg: int) -> int:
        """iommufd_test_pasid_check_hwpt: the selftest object (ENOENT); ``hwpt_id`` 0 asks
        that nothing be attached at the PASID (EINVAL otherwise); else the HWPT (ENOENT; an
        object of another type EINVAL) must be the one attached there (EINVAL)."""
        fields = layout.unpack(data)
        sobj = _selftest_object(ctx, int_field(fields, "id"))
        attached = ctx._group_pasid_hwpt(sobj.device, int_field(fields, "pasid"))
        hwpt_id = int_field(fields, "hwpt_id")
        if not hwpt_id:
            if attached is not None:
                raise KernelError(errno.EINVAL, "something is attached at the PASID")
            return 0
        obj = ctx.objects.get(hwpt_id)
        if obj is None:
            raise KernelError(errno.ENOENT, f"no object {hwpt_id}")
        if not isinstance(obj, Hwpt) or obj is not attached:
            raise KernelError(errno.EINVAL, f"HWPT {hwpt_id} is not attached at the PASID")
        return 0

    def trigger_vevent(self, ctx: IommufdContext, caller: Caller, layout: Layout,
                       data: bytearray, arg: int) -> int:
        """iommufd_test_trigger_vevent: the device (ENOENT); one not attached to a vIOMMU's
        nested domain with a virtual id (``mdev->viommu``, ``mdev->vdev_id``) ENOENT; else an
        IOMMU_VEVENTQ_TYPE_SELFTEST event carrying the virtual id goes to the vIOMMU
        (iommufd_viommu_report_event: no such vEVENTQ EOPNOTSUPP)."""
        device = ctx.get_device(int_field(layout.unpack(data), "dev_id"))
        source = device.vevent_source() if isinstance(device, MockDevice) else None
        if source is None:
            raise KernelError(errno.ENOENT, "the mock device is not attached through a vIOMMU")
        viommu, vdev_id = source
        viommu.report_event(I.IOMMU_VEVENTQ_TYPE_SELFTEST,
                            I.VIOMMU_EVENT_SELFTEST.pack(virt_id=vdev_id))
        return 0


def _selftest_object(ctx: IommufdContext, object_id: int) -> SelftestObject:
    """iommufd_test_get_selftest_obj."""
    return ctx.get_object(object_id, SelftestObject, "selftest object")


def _mock_hwpt(ctx: IommufdContext, object_id: int) -> HwptPaging:
    """get_md_pagetable: a paging HWPT (ENOENT) whose domain is a mock one (EINVAL)."""
    hwpt = ctx.get_hwpt_paging(object_id)
    if not is_mock_domain(hwpt.domain):
        raise KernelError(errno.EINVAL, f"HWPT {object_id} is not a mock domain")
    return hwpt


def _gup(caller: Caller, vaddr: int) -> None:
    """get_user_pages_fast of the caller's page at ``vaddr`` (read): its errno, EFAULT."""
    page = vaddr - vaddr % PAGE_SIZE
    scan = caller.check_user_range(page, PAGE_SIZE, False)
    if scan.fault is not None:
        raise KernelError(scan.fault, f"the caller has no page at {page:#x}")


class PageIdentities:
    """Which physical page a byte is, for the checking operations, resolved once per ioctl:

    * in a MAP_SHARED mapping of a file (MAP_SHARED|MAP_ANONYMOUS memory is shmem, a file too):
      (the file, the byte's offset in it) -- the same for every process and every mapping;
    * in the pages of an IOMMU_IOAS_MAP_FILE: (the file, offset) likewise;
    * anywhere else (private memory): (the process, the address), as no other process or
      mapping can reach that page.

    A process that has gone keeps its private identities (its pages are still pinned); a
    pinned page of its shared memory stays the file's (``Pages.kept_file_page``)."""

    def __init__(self) -> None:
        self._shared: dict[object, list[SharedMapping]] = {}

    def of_caller(self, caller: Caller, addr: int) -> PageIdentity:
        return self._resolve(caller.process_key(), addr, lambda: caller.shared_mappings(0, U64_MAX))

    def of_pages(self, pages: Pages, addr: int) -> PageIdentity:
        """The byte at ``addr`` of ``pages``'s span (``pages.uptr`` is its page 0)."""
        if isinstance(pages, FilePages):
            identity = pages.file.identity
            if identity is not None:
                return identity, pages.start + addr - pages.uptr
            return pages.source_key, addr
        kept = pages.kept_file_page(addr)
        if kept is not None:
            return kept  # a pinned page of shared memory: the file's, even after its mapper exits
        source = pages.source

        def mappings() -> list[SharedMapping]:
            if source.process_key() != pages.source_key:
                return []  # the pid names another process now
            return source.shared_mappings(0, U64_MAX)

        return self._resolve(pages.source_key, addr, mappings)

    def _resolve(self, process: object, addr: int,
                 mappings: Callable[[], list[SharedMapping]]) -> PageIdentity:
        shared = self._shared.get(process)
        if shared is None:
            try:
                shared = mappings()
            except KernelError:
                shared = []  # the process has gone: only its private identities remain
            self._shared[process] = shared
        for start, end, file, offset in shared:
            if start <= addr < end:
                return file, offset + addr - start
        return process, addr


PageIdentity = tuple[object, int]
"""(a process or a file, an address in it or an offset in the file)."""


def iopte(ioas: Ioas, iova: int, identities: PageIdentities) -> PageIdentity | None:
    """What a domain of ``ioas`` maps IOVA ``iova`` to: the byte the area covering it comes
    from, or None when no area does. Every area of an IOAS is in every one of its domains."""
    area = ioas.areas.first_overlapping(iova, iova)
    if area is None:
        return None
    pages = area.pages
    return identities.of_pages(pages, pages.uptr + area.start_byte_at(iova))


def pin_counts(ctx: IommufdContext, identities: PageIdentities) -> dict[PageIdentity, int]:
    """How many times each page is pinned in ``ctx``: once per pages object holding it,
    whatever the number of its areas, domains and access items."""
    counts: dict[PageIdentity, int] = {}
    seen: set[int] = set()
    for obj in list(ctx.objects.values()):
        if not isinstance(obj, Ioas):
            continue
        for area in obj.areas:
            pages = area.pages
            if id(pages) in seen:
                continue
            seen.add(id(pages))
            for index in range(pages.npages):
                if pages.is_pinned(index):
                    key = identities.of_pages(pages, pages.uptr + index * PAGE_SIZE)
                    counts[key] = counts.get(key, 0) + 1
    return counts


class _TestReservation:
    """The owner of ADD_RESERVED's ranges (the kernel's NULL owner): never removed by owner."""

    def __repr__(self) -> str:
        return "<selftest reservation>"


_TEST_RESERVATION = _TestReservation()

_HANDLERS = {
    I.IOMMU_TEST_OP_ADD_RESERVED: MockSelftest.add_reserved,
    I.IOMMU_TEST_OP_MOCK_DOMAIN: MockSelftest.mock_domain,
    I.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: MockSelftest.mock_domain,
    I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: MockSelftest.mock_domain_replace,
    I.IOMMU_TEST_OP_MD_CHECK_MAP: MockSelftest.md_check_map,
    I.IOMMU_TEST_OP_MD_CHECK_REFS: MockSelftest.md_check_refs,
    I.IOMMU_TEST_OP_MD_CHECK_IOTLB: MockSelftest.md_check_iotlb,
    I.IOMMU_TEST_OP_DEV_CHECK_CACHE: MockSelftest.dev_check_cache,
    I.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: MockSelftest.set_temp_memory_limit,
    I.IOMMU_TEST_OP_TRIGGER_IOPF: MockSelftest.trigger_iopf,
    I.IOMMU_TEST_OP_DIRTY: MockSelftest.dirty,
    I.IOMMU_TEST_OP_PASID_ATTACH: MockSelftest.pasid_attach,
    I.IOMMU_TEST_OP_PASID_REPLACE: MockSelftest.pasid_replace,
    I.IOMMU_TEST_OP_PASID_DETACH: MockSelftest.pasid_detach,
    I.IOMMU_TEST_OP_PASID_CHECK_HWPT: MockSelftest.pasid_check_hwpt,
    I.IOMMU_TEST_OP_TRIGGER_VEVENT: MockSelftest.trigger_vevent,
}


# ------------------------------------------------------------------------------ accesses

class AccessItem:
    """``struct selftest_access_item``: one ACCESS_PAGES pin, [iova, iova+length-1], and the
    (pages, first, last) page-index runs it holds."""

    def __init__(self, item_id: int, iova: int, length: int,
                 runs: list[tuple[Pages, int, int]]) -> None:
        self.id = item_id
        self.iova = iova
        self.length = length
        self.runs = runs

    @property
    def last(self) -> int:
        return self.iova + self.length - 1


class Access(ContextObject):
    """IOMMUFD_OBJ_ACCESS with the selftest driver's state (``struct selftest_access``): an
    in-kernel user of an IOAS that reads and writes it by IOVA (ACCESS_RW) and, if created with
    NEEDS_PIN_PAGES, pins pages of it (ACCESS_PAGES items, numbered from 0).

    Its driver holds it (IOMMU_DESTROY of its id is EBUSY) and it holds the context
    (iommufd_access_create takes a context reference) and its IOAS (IOMMU_DESTROY of the IOAS is
    EBUSY while it is attached). It goes when its fd's last reference is closed
    (:class:`AccessFile`): every item unpinned, detached, its id freed. An unmap of IOVAs it
    pinned makes it drop those items first (ops->unmap)."""

    holds_context = True

    def __init__(self, ctx: IommufdContext, needs_pin_pages: bool) -> None:
        self.ctx = ctx
        self.needs_pin_pages = needs_pin_pages
        self.iova_alignment = PAGE_SIZE if needs_pin_pages else 1
        self.ioas: Ioas | None = None
        self.items: list[AccessItem] = []
        self.next_id = 0

    def extra_users(self) -> int:
        return 1  # the driver's reference, until iommufd_access_destroy

    def holds(self, obj: object) -> bool:
        return obj is self.ioas

    # ---- attachment (iommufd_access_attach / iommufd_access_change_ioas)
    def attach(self, ioas: Ioas) -> None:
        """iopt_add_access: a pinning access needs PAGE_SIZE alignment (EADDRINUSE)."""
        ioas.add_access(self)
        self.ioas = ioas

    def detach(self) -> None:
        """Every item is unpinned first (the driver's unmap of everything), then the IOAS
        reference goes."""
        if self.ioas is None:
            return
        self.unmap(0, U64_MAX)
        self.ioas.remove_access(self)
        self.ioas = None

    def replace(self, ioas: Ioas) -> None:
        """iommufd_access_replace: not attached: ENOENT (checked by the caller); the same IOAS:
        nothing; else join the new one (EADDRINUSE: nothing changed), drop every item, leave
        the old one."""
        if ioas is self.ioas:
            return
        ioas.add_access(self)
        old, self.ioas = self.ioas, ioas
        if old is not None:
            self.unmap(0, U64_MAX)
            old.remove_access(self)

    def close(self) -> None:
        """The fd's release: iommufd_test_staccess_release -> iommufd_access_destroy."""
        self.detach()
        self.ctx.drop_object(self)

    def locks(self, iova: int, last: int) -> bool:
        """A test access never locks what it pins (only a HW queue's internal access does)."""
        return False

    # ---- ops->unmap: iommufd_test_access_unmap
    def unmap(self, iova: int, last: int) -> None:
        for item in list(self.items):
            if iova > item.last or last < item.iova:
                continue
            self.items.remove(item)
            self._unpin(item)

    def _unpin(self, item: AccessItem) -> None:
        for pages, first, last in item.runs:
            pages.unpin(first, last, self.ctx.accounting)

    # ---- iommufd_access_pin_pages
    def pin_pages(self, iova: int, length: int, write: bool) -> list[tuple[Pages, int, int]]:
        """Pin [iova, iova+length-1]: length 0 (EINVAL), overflow (EOVERFLOW), not attached
        (ENOENT); then the areas covering it without a gap (ENOENT), each piece starting on a
        page and every piece but the last ending on one (EINVAL), writable areas for a WRITE
        pin and readable ones otherwise (EPERM); pinning itself (EFAULT, ENOMEM). Pages a
        domain already pinned are not pinned again. Undone on failure."""
        if not length:
            raise KernelError(errno.EINVAL, "ACCESS_PAGES: length 0")
        last = iova + length - 1
        if last > U64_MAX:
            raise KernelError(errno.EOVERFLOW, f"{iova:#x} + {length:#x} runs past 2^64")
        if self.ioas is None:
            raise KernelError(errno.ENOENT, "the access is not attached to an IOAS")
        runs: list[tuple[Pages, int, int]] = []
        try:
            cursor = iova
            for area in self.ioas.areas.iter_from(iova):
                if area.iova > cursor:
                    break
                end = min(last, area.last)
                start_byte = area.start_byte_at(cursor)
                if start_byte % PAGE_SIZE or (end < last and area.start_byte_at(area.last)
                                              % PAGE_SIZE != PAGE_SIZE - 1):
                    raise KernelError(errno.EINVAL, f"{area!r} is not page aligned at {cursor:#x}")
                wanted = IOMMU_WRITE if write else IOMMU_READ
                if not area.prot & wanted:
                    raise KernelError(errno.EPERM, f"{area!r} does not allow this access")
                first_index = start_byte // PAGE_SIZE
                last_index = area.start_byte_at(end) // PAGE_SIZE
                area.pages.pin(first_index, last_index, self.ctx.accounting, lambda: None)
                runs.append((area.pages, first_index, last_index))
                if end == last:
                    return runs
                cursor = end + 1
            raise KernelError(errno.ENOENT, f"[{iova:#x}, {last:#x}] is not mapped without a gap")
        except KernelError:
            for pages, first, last_index in runs:
                pages.unpin(first, last_index, self.ctx.accounting)
            raise

    # ---- iommufd_access_rw
    def rw(self, iova: int, length: int, data: bytes | None) -> bytes:
        """Read ``length`` bytes at ``iova`` (``data`` None) or write ``data`` there: length 0
        (EINVAL), overflow (EOVERFLOW), not attached (ENOENT), a gap (ENOENT), an area without
        the permission (EPERM); the bytes move through the IOAS's translation, as a device's
        would (a source process that has gone: EFAULT)."""
        if not length:
            raise KernelError(errno.EINVAL, "ACCESS_RW: length 0")
        last = iova + length - 1
        if last > U64_MAX:
            raise KernelError(errno.EOVERFLOW, f"{iova:#x} + {length:#x} runs past 2^64")
        if self.ioas is None:
            raise KernelError(errno.ENOENT, "the access is not attached to an IOAS")
        cursor = iova
        wanted = IOMMU_WRITE if data is not None else IOMMU_READ
        for area in self.ioas.areas.iter_from(iova):
            if area.iova > cursor:
                break
            if not area.prot & wanted:
                raise KernelError(errno.EPERM, f"{area!r} does not allow this access")
            if area.last >= last:
                cursor = last + 1
                break
            cursor = area.last + 1
        if cursor <= last:
            raise KernelError(errno.ENOENT, f"[{iova:#x}, {last:#x}] is not mapped without a gap")
        from ..devices import dma  # the data path devices use; imported late (import cycle)
        space = dma.DmaSpace(self.ioas.table, self.ctx.owners.key, dma.FaultLog())
        try:
            if data is not None:
                dma.dma_write(space, iova, data, device="iommufd_access")
                return b""
            return bytes(dma.dma_read(space, iova, length, device="iommufd_access"))
        except IommuFault as fault:
            raise KernelError(errno.EFAULT, f"access_rw: {fault}") from None


class AccessFile(OpenFile):
    """The access fd (``[iommufd_test_staccess]``): no ioctl, read, write or mmap; closing its
    last reference destroys the access. CREATE_ACCESS reports the fd number in its struct
    (written once the fd exists, :meth:`fd_installed`)."""

    kind = FileKind.ACCESS
    node_key = ACCESS_NODE_KEY

    def __init__(self, access: Access, caller: Caller, arg: int, data: bytearray) -> None:
        self.access = access
        self._respond: tuple[Caller, int, bytearray] | None = (caller, arg, data)

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        raise KernelError(errno.ENOTTY, "access fds have no ioctls")

    def fd_installed(self, fd: int) -> int:
        """CREATE_ACCESS: out_access_fd is written back (EFAULT), the ioctl returns 0."""
        if self._respond is not None:
            caller, arg, data = self._respond
            self._respond = None
            I.TEST_CMD_BY_OP[I.IOMMU_TEST_OP_CREATE_ACCESS].write_fields(data, out_access_fd=fd)
            ucmd_respond(caller, arg, data)
        return 0

    def release(self) -> None:
        self.access.close()


def _access_of(caller: Caller, fd: int) -> Access:
    """iommufd_access_get: the caller's ``fd`` must be an access fd (EBADFD otherwise, also for
    a closed fd)."""
    try:
        file = caller.resolve_fd(fd)
    except KernelError:
        raise KernelError(errno.EBADFD, f"fd {fd} is not open") from None
    if not isinstance(file, AccessFile):
        raise KernelError(errno.EBADFD, f"fd {fd} is not an access fd")
    return file.access


_ACCESS_MAX = 16 * 1024 * 1024
"""ACCESS_PAGES/ACCESS_RW refuse longer requests (ENOMEM) before looking at anything else."""


def create_access(self: MockSelftest, ctx: IommufdContext, caller: Caller, layout: Layout,
                  data: bytearray, arg: int) -> OpenFile:
    """iommufd_test_create_access: flags other than NEEDS_PIN_PAGES (EOPNOTSUPP); an fd
    (reserved first in the kernel, installed last); the ACCESS object (its id); the attach to
    IOAS ``id`` (ENOENT; undone on failure). The new file goes back to the launcher, which
    installs it and writes its number into ``out_access_fd``."""
    fields = layout.unpack(data)
    flags = int_field(fields, "flags")
    if flags & ~I.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES:
        raise KernelError(errno.EOPNOTSUPP, f"CREATE_ACCESS: flags {flags:#x}")
    access = Access(ctx, bool(flags & I.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES))
    access_id = ctx.allocate_id(access)
    try:
        access.attach(ctx.get_ioas(int_field(fields, "id")))
    except KernelError:
        del ctx.objects[access_id]
        raise
    return AccessFile(access, caller, arg, data)


def access_replace_ioas(self: MockSelftest, ctx: IommufdContext, caller: Caller, layout: Layout,
                        data: bytearray, arg: int) -> int:
    """iommufd_test_access_replace_ioas: the access fd (EBADFD), not attached (ENOENT), the new
    IOAS (ENOENT)."""
    fields = layout.unpack(data)
    access = _access_of(caller, int_field(fields, "id"))
    if access.ioas is None:
        raise KernelError(errno.ENOENT, "the access is not attached")
    access.replace(ctx.get_ioas(int_field(fields, "ioas_id")))
    return 0


def access_pages(self: MockSelftest, ctx: IommufdContext, caller: Caller, layout: Layout,
                 data: bytearray, arg: int) -> int:
    """iommufd_test_access_pages: length over 16 MiB (ENOMEM), unknown flags (EOPNOTSUPP), the
    access fd (EBADFD), an access without NEEDS_PIN_PAGES (EOPNOTSUPP), the pin; then, unless
    uptr is 0, every pinned page must be the caller's page at uptr (its GUP errno, else
    EBADE); the item gets the access's next id, written back."""
    fields = layout.unpack(data)
    iova, length, uptr = (int_field(fields, "iova"), int_field(fields, "length"),
                          int_field(fields, "uptr"))
    flags = int_field(fields, "flags")
    if length > _ACCESS_MAX:
        raise KernelError(errno.ENOMEM, f"ACCESS_PAGES: {length:#x} bytes")
    if flags & ~(I.MOCK_FLAGS_ACCESS_WRITE | I.MOCK_FLAGS_ACCESS_SYZ):
        raise KernelError(errno.EOPNOTSUPP, f"ACCESS_PAGES: flags {flags:#x}")
    access = _access_of(caller, int_field(fields, "id"))
    if not access.needs_pin_pages:
        raise KernelError(errno.EOPNOTSUPP, "the access was created without NEEDS_PIN_PAGES")
    runs = access.pin_pages(iova, length, bool(flags & I.MOCK_FLAGS_ACCESS_WRITE))
    item = AccessItem(access.next_id, iova, length, runs)
    try:
        if uptr:
            identities = PageIdentities()
            vaddr = uptr - iova % PAGE_SIZE
            for pages, first, last in runs:
                for index in range(first, last + 1):
                    _gup(caller, vaddr)
                    if (identities.of_pages(pages, pages.uptr + index * PAGE_SIZE)
                            != identities.of_caller(caller, vaddr - vaddr % PAGE_SIZE)):
                        raise KernelError(errno.EBADE, f"the page pinned at {vaddr:#x} is not the caller's")
                    vaddr += PAGE_SIZE
        access.next_id += 1
        layout.write_fields(data, out_access_pages_id=item.id)
        access.items.append(item)
        try:
            ucmd_respond(caller, arg, data)
        except KernelError:
            access.items.remove(item)
            raise
    except KernelError:
        access._unpin(item)
        raise
    return 0


def destroy_access_pages(self: MockSelftest, ctx: IommufdContext, caller: Caller, layout: Layout,
                         data: bytearray, arg: int) -> int:
    """iommufd_test_access_item_destroy: the access fd (EBADFD), the item (ENOENT), unpinned."""
    fields = layout.unpack(data)
    access = _access_of(caller, int_field(fields, "id"))
    item_id = int_field(fields, "access_pages_id")
    item = next((i for i in access.items if i.id == item_id), None)
    if item is None:
        raise KernelError(errno.ENOENT, f"no access item {item_id}")
    access.items.remove(item)
    access._unpin(item)
    return 0


def access_rw(self: MockSelftest, ctx: IommufdContext, caller: Caller, layout: Layout,
              data: bytearray, arg: int) -> int:
    """iommufd_test_access_rw: length over 16 MiB (ENOMEM), unknown flags (EOPNOTSUPP), the
    access fd (EBADFD); a WRITE reads the caller's buffer first (EFAULT) and stores it at the
    IOVA; a read loads and copies to the caller (EFAULT). No pinning capability needed."""
    fields = layout.unpack(data)
    iova, length, uptr = (int_field(fields, "iova"), int_field(fields, "length"),
                          int_field(fields, "uptr"))
    flags = int_field(fields, "flags")
    if length > _ACCESS_MAX:
        raise KernelError(errno.ENOMEM, f"ACCESS_RW: {length:#x} bytes")
    if flags & ~(I.MOCK_ACCESS_RW_WRITE | I.MOCK_ACCESS_RW_SLOW_PATH | I.MOCK_FLAGS_ACCESS_SYZ):
        raise KernelError(errno.EOPNOTSUPP, f"ACCESS_RW: flags {flags:#x}")
    access = _access_of(caller, int_field(fields, "id"))
    if flags & I.MOCK_ACCESS_RW_WRITE:
        payload = caller.memory.read(uptr, length) if length else b""
        access.rw(iova, length, payload)
    else:
        copy_out(caller, uptr, access.rw(iova, length, None))
    return 0


_HANDLERS.update({
    I.IOMMU_TEST_OP_CREATE_ACCESS: create_access,  # type: ignore[dict-item]  # returns a new file
    I.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: access_replace_ioas,
    I.IOMMU_TEST_OP_ACCESS_PAGES: access_pages,
    I.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: destroy_access_pages,
    I.IOMMU_TEST_OP_ACCESS_RW: access_rw,
})
