"""vIOMMU objects on the selftest's mock IOMMU, one rule per test (viommu.c:
iommufd_viommu_alloc_ioctl, iommufd_vdevice_alloc_ioctl, iommufd_hw_queue_alloc_ioctl;
eventq.c: iommufd_veventq_alloc and its fd; hw_pagetable.c: HWPT_ALLOC and HWPT_INVALIDATE on
a vIOMMU; driver.c; selftest.c: the mock's vIOMMU ops and TRIGGER_VEVENT). The kernel's
iommufd_viommu selftests run the same rules end to end (scripts/kernel_selftest)."""
from __future__ import annotations

import errno
import struct

from ioasidfs.engine.iommufd_viommu import HwQueueAccess, VEventQueue, VEventQueueFile
from ioasidfs.uapi import iommufd as I
from test_iommufd_compat import HOLE, PAGE, RAM
from test_iommufd_mock import ARRAY, START
from test_iommufd_nested import DEFAULT, FAULT, NEST, SELFTEST, Nested

VTYPE = I.IOMMU_VIOMMU_TYPE_SELFTEST
QTYPE = I.IOMMU_HW_QUEUE_TYPE_SELFTEST
ETYPE = I.IOMMU_VEVENTQ_TYPE_SELFTEST
INV = I.IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST
CACHE = I.IOMMU_TEST_DEV_CACHE_DEFAULT
DATA = ARRAY + 0x400
REQS = ARRAY + 0x600
VEVENTQ_FD = 12


class V(Nested):
    """One mock device on IOAS 1 (selftest 2, device 3, HWPT 4), a NEST_PARENT HWPT 5."""

    def __init__(self) -> None:
        super().__init__()
        self.parent_id = self.parent()
        assert self.parent_id == 5

    def viommu(self, hwpt: int | None = None, *, dev: int | None = None, vtype: int = VTYPE,
               flags: int = 0, data_len: int = 0, uptr: int = 0) -> tuple[int, int]:
        result, out = self.native(I.IOMMU_VIOMMU_ALLOC, I.VIOMMU_ALLOC, flags=flags, type=vtype,
                                  dev_id=self.dev if dev is None else dev,
                                  hwpt_id=self.parent_id if hwpt is None else hwpt,
                                  data_len=data_len, data_uptr=uptr)
        return result, int(out["out_viommu_id"])

    def vdevice(self, viommu: int, virt_id: int, dev: int | None = None) -> tuple[int, int]:
        result, out = self.native(I.IOMMU_VDEVICE_ALLOC, I.VDEVICE_ALLOC, viommu_id=viommu,
                                  dev_id=self.dev if dev is None else dev, virt_id=virt_id)
        return result, int(out["out_vdevice_id"])

    def replace(self, pt_id: int, stdev: int | None = None) -> int:
        return int(self.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
                             id=self.stdev if stdev is None else stdev, pt_id=pt_id)[0])

    def cache(self, dev: int | None = None) -> list[int]:
        values = []
        for index in range(I.MOCK_DEV_CACHE_NUM):
            for value in (0, CACHE):
                if self.test(I.IOMMU_TEST_OP_DEV_CHECK_CACHE, id=self.dev if dev is None else dev,
                             cache_id=index, cache=value)[0] == 0:
                    values.append(value)
                    break
            else:
                values.append(-1)
        return values

    def invalidate_viommu(self, viommu: int, reqs: list[tuple[int, int, int]], *,
                          data_type: int = INV, entry_len: int = 12, num: int | None = None,
                          uptr: int = REQS, tail: bytes = bytes(12)) -> tuple[int, int]:
        self.proc.memory.write(REQS, b"".join(struct.pack("<III", *r) for r in reqs) + tail)
        result, out = self.native(I.IOMMU_HWPT_INVALIDATE, I.HWPT_INVALIDATE, hwpt_id=viommu,
                                  data_uptr=uptr, data_type=data_type, entry_len=entry_len,
                                  entry_num=len(reqs) if num is None else num)
        return result, int(out["entry_num"])

    def veventq(self, viommu: int, *, etype: int = ETYPE, depth: int = 2, flags: int = 0,
                reserved: int = 0) -> tuple[int, VEventQueueFile | None]:
        self.proc.memory.write(ARRAY + 0x800, I.VEVENTQ_ALLOC.pack(
            size=32, flags=flags, viommu_id=viommu, type=etype, veventq_depth=depth,
            reserved=reserved))
        result = self.call(I.IOMMU_VEVENTQ_ALLOC, ARRAY + 0x800)
        if not isinstance(result, VEventQueueFile):
            return result, None
        assert result.fd_installed(VEVENTQ_FD) == 0  # what the launcher does after ADDFD
        out = I.VEVENTQ_ALLOC.unpack(self.proc.memory.read(ARRAY + 0x800, 32))
        assert out["out_veventq_fd"] == VEVENTQ_FD
        return int(out["out_veventq_id"]), result

    def hw_queue(self, viommu: int, index: int, iova: int, length: int, *, qtype: int = QTYPE,
                 flags: int = 0) -> tuple[int, int]:
        result, out = self.native(I.IOMMU_HW_QUEUE_ALLOC, I.HW_QUEUE_ALLOC, flags=flags,
                                  viommu_id=viommu, type=qtype, index=index,
                                  nesting_parent_iova=iova, length=length)
        return result, int(out["out_hw_queue_id"])

    def vtd_device(self) -> int:
        """A VFIO device bound as the VT-d driver's (no vIOMMU ops)."""
        return self.ctx.id_of(self.ctx.bind_device("0000:00:03.0"))


def _events(raw: bytes) -> list[tuple[int, int, int | None]]:
    """(flags, sequence, virt_id or None) per event in a vEVENTQ read."""
    events, at = [], 0
    while at < len(raw):
        flags, seq = struct.unpack_from("<II", raw, at)
        at += 8
        virt = None
        if not flags & I.IOMMU_VEVENTQ_FLAG_LOST_EVENTS:
            (virt,) = struct.unpack_from("<I", raw, at)
            at += 4
        events.append((flags, seq, virt))
    return events


# ----------------------------------------------------------------------------- VIOMMU_ALLOC

def test_viommu_alloc_checks_in_the_kernels_order() -> None:
    m = V()
    plain = m.alloc(m.ioas_id)[1]
    assert m.viommu(flags=1)[0] == -errno.EOPNOTSUPP
    assert m.viommu(vtype=I.IOMMU_VIOMMU_TYPE_DEFAULT, dev=0)[0] == -errno.EOPNOTSUPP
    assert m.viommu(dev=0, hwpt=0)[0] == -errno.ENOENT  # the device before the type
    assert m.viommu(vtype=0xDEAD, hwpt=0)[0] == -errno.EOPNOTSUPP  # the type before the HWPT
    assert m.viommu(hwpt=0)[0] == -errno.ENOENT
    assert m.viommu(hwpt=m.ioas_id)[0] == -errno.ENOENT  # not a paging HWPT
    assert m.viommu(hwpt=plain)[0] == -errno.EINVAL  # not NEST_PARENT
    assert m.viommu() == (0, plain + 1)


def test_a_vtd_device_has_no_viommu() -> None:
    m = V()
    assert m.viommu(dev=m.vtd_device())[0] == -errno.EOPNOTSUPP


def test_viommu_driver_data_echoes_in_data() -> None:
    m = V()
    m.proc.memory.write(DATA, I.VIOMMU_SELFTEST.pack(in_data=0xBEEF, out_data=0))
    assert m.viommu(data_len=4, uptr=DATA)[0] == -errno.EINVAL  # below out_data's end
    assert m.viommu(data_len=12, uptr=DATA)[0] == -errno.EINVAL  # past the struct
    assert m.viommu(data_len=8, uptr=HOLE)[0] == -errno.EFAULT
    assert m.viommu(data_len=8, uptr=DATA) == (0, 6)  # the failures freed their ids
    assert I.VIOMMU_SELFTEST.unpack(m.proc.memory.read(DATA, 8))["out_data"] == 0xBEEF


def test_the_viommu_holds_its_parent_and_what_is_made_on_it_holds_it() -> None:
    m = V()
    viommu = m.viommu()[1]
    nested = m.nested(viommu)[1]
    assert m.destroy(m.parent_id) == -errno.EBUSY
    assert m.destroy(viommu) == -errno.EBUSY
    assert m.destroy(nested) == 0
    assert m.destroy(viommu) == 0
    assert m.destroy(m.parent_id) == 0


# ----------------------------------------------------------------------------- nested HWPTs

def test_hwpt_alloc_on_a_viommu() -> None:
    m = V()
    viommu = m.viommu()[1]
    vtd = m.vtd_device()
    fault_id, _ = m.fault_alloc()
    assert m.nested(viommu, dev_id=vtd)[0] == -errno.EINVAL  # another IOMMU
    assert m.nested(viommu, flags=FAULT | 1 << 31, fault_id=fault_id)[0] == -errno.EOPNOTSUPP
    assert m.alloc(viommu)[0] == -errno.EOPNOTSUPP  # no driver data
    assert m.alloc(viommu, data_type=SELFTEST + 1, data_len=4, uptr=ARRAY)[0] == -errno.EOPNOTSUPP
    assert m.alloc(viommu, data_type=SELFTEST, data_len=3, uptr=ARRAY)[0] == -errno.EINVAL
    assert m.nested(viommu, flags=FAULT, fault_id=0xFFFFFFFF)[0] == -errno.ENOENT
    result, hwpt = m.nested(viommu, flags=FAULT | I.IOMMU_HWPT_ALLOC_PASID, fault_id=fault_id)
    assert result == 0 and hwpt == fault_id + 1
    assert m.iotlb(hwpt) == [DEFAULT] * 4
    assert m.ctx.users(m.ctx.objects[m.parent_id]) == 2  # the vIOMMU's reference only


def test_attaching_a_viommu_nested_hwpt_needs_a_vdevice() -> None:
    m = V()
    viommu = m.viommu()[1]
    hwpt = m.nested(viommu)[1]
    assert m.replace(hwpt) == -errno.ENOENT
    assert m.vdevice(viommu, 0x99)[0] == 0
    assert m.replace(hwpt) == 0
    assert m.destroy(hwpt) == -errno.EBUSY


# ----------------------------------------------------------------------------- vDEVICEs

def test_vdevice_alloc_checks_in_the_kernels_order() -> None:
    m = V()
    viommu = m.viommu()[1]
    assert m.vdevice(0, 0x99, dev=0)[0] == -errno.ENOENT  # the vIOMMU first
    assert m.vdevice(viommu, 0x99, dev=0)[0] == -errno.ENOENT
    assert m.vdevice(viommu, 0x99, dev=m.vtd_device())[0] == -errno.EINVAL
    result, vdev = m.vdevice(viommu, 0x99)
    assert result == 0
    assert m.vdevice(viommu, 0x88)[0] == -errno.EEXIST  # one vDEVICE per device
    other = m.mock_domain(m.ioas_id)[1]
    assert m.vdevice(viommu, 0x99, dev=int(other["out_idev_id"]))[0] == -errno.EEXIST
    # Its selftest object and device took vdev+1 and vdev+2; the EEXIST freed vdev+3 again.
    assert m.vdevice(viommu, 0x77, dev=int(other["out_idev_id"]))[1] == vdev + 3
    assert m.destroy(viommu) == -errno.EBUSY
    assert m.destroy(vdev) == 0
    assert m.vdevice(viommu, 0x88) == (0, vdev)


def test_unbinding_the_device_leaves_a_vdevice_tombstone() -> None:
    m = V()
    viommu = m.viommu()[1]
    vdev = m.vdevice(viommu, 0x99)[1]
    assert m.destroy(m.stdev) == 0  # detach and unbind the mock device
    assert m.destroy(vdev) == -errno.ENOENT
    ids = [m.ioas() for _ in range(4)]  # the ids the device's objects freed, then past vdev
    assert vdev not in ids and ids[-1] == vdev + 1  # the id stays taken
    assert m.destroy(viommu) == 0  # the vDEVICE's reference went


# ----------------------------------------------------------------------------- invalidation

def test_viommu_invalidation_rules() -> None:
    m = V()
    viommu = m.viommu()[1]
    m.vdevice(viommu, 0x99)
    assert m.invalidate_viommu(viommu, [], num=0) == (0, 0)  # a type probe
    assert m.invalidate_viommu(viommu, [], num=0, data_type=INV + 1) == (-errno.EINVAL, 0)
    assert m.invalidate_viommu(viommu, [(0, 0x99, 0)], entry_len=0) == (-errno.EINVAL, 0)
    assert m.invalidate_viommu(viommu, [(0, 0x99, 0)], uptr=0) == (-errno.EINVAL, 0)
    assert m.invalidate_viommu(viommu, [(0, 0x99, 0)], uptr=HOLE) == (-errno.EFAULT, 0)
    assert m.invalidate_viommu(viommu, [(0, 0x99, 0)], entry_len=13,
                               tail=b"\1" + bytes(11)) == (-errno.E2BIG, 0)
    assert m.invalidate_viommu(viommu, [(2, 0x99, 0)]) == (-errno.EOPNOTSUPP, 0)
    assert m.invalidate_viommu(viommu, [(0, 0x99, 4)]) == (-errno.EINVAL, 0)
    assert m.invalidate_viommu(viommu, [(0, 0x9, 0)]) == (-errno.EINVAL, 0)
    assert m.cache() == [CACHE] * 4
    assert m.invalidate_viommu(viommu, [(0, 0x99, 0), (0xFFFFFFFF, 0x99, 1)]) == (
        -errno.EOPNOTSUPP, 1)
    assert m.cache() == [0, CACHE, CACHE, CACHE]
    assert m.invalidate_viommu(viommu, [(0, 0x99, 2), (0, 0x99, 3)]) == (0, 2)
    assert m.cache() == [0, CACHE, 0, 0]
    assert m.invalidate_viommu(viommu, [(1, 0x99, 0)]) == (0, 1)  # ALL ignores cache_id
    assert m.cache() == [0] * 4


# ----------------------------------------------------------------------------- vEVENTQs

def test_veventq_alloc_checks_in_the_kernels_order() -> None:
    m = V()
    viommu = m.viommu()[1]
    assert m.veventq(viommu, flags=1)[0] == -errno.EOPNOTSUPP
    assert m.veventq(viommu, reserved=1)[0] == -errno.EOPNOTSUPP
    assert m.veventq(0, etype=I.IOMMU_VEVENTQ_TYPE_DEFAULT, depth=0)[0] == -errno.EOPNOTSUPP
    assert m.veventq(0, depth=0)[0] == -errno.EINVAL  # the depth before the vIOMMU
    assert m.veventq(0)[0] == -errno.ENOENT
    veventq, file = m.veventq(viommu)
    assert veventq == viommu + 1 and isinstance(m.ctx.objects[veventq], VEventQueue)
    assert m.veventq(viommu)[0] == -errno.EEXIST  # one per type
    assert m.veventq(viommu, etype=ETYPE + 1)[0] == veventq + 1  # any other type is taken
    assert file is not None and file.read(m.proc.caller, 0, 64) == b""


def test_a_veventq_fd_never_installed_takes_the_object_with_it() -> None:
    m = V()
    viommu = m.viommu()[1]
    m.proc.memory.write(ARRAY, I.VEVENTQ_ALLOC.pack(size=32, viommu_id=viommu, type=ETYPE,
                                                    veventq_depth=1))
    file = m.call(I.IOMMU_VEVENTQ_ALLOC, ARRAY)
    assert isinstance(file, VEventQueueFile)
    file.release()  # a plain mount cannot hand it out
    assert viommu + 1 not in m.ctx.objects and m.destroy(viommu) == 0


def test_the_veventq_fd_holds_the_object_and_the_context() -> None:
    m = V()
    viommu = m.viommu()[1]
    veventq, file = m.veventq(viommu)
    assert file is not None
    assert m.destroy(veventq) == -errno.EBUSY and m.destroy(viommu) == -errno.EBUSY
    m.file.release()
    assert m.ctx.objects  # the fd keeps the context
    file.release()
    assert not m.ctx.objects


def test_trigger_vevent_needs_an_attachment_through_the_viommu_and_a_veventq() -> None:
    m = V()
    viommu = m.viommu()[1]
    hwpt = m.nested(viommu)[1]
    m.vdevice(viommu, 0x99)
    trigger = dict(dev_id=m.dev)
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_VEVENT, **trigger)[0] == -errno.ENOENT  # not attached
    assert m.replace(hwpt) == 0
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_VEVENT, **trigger)[0] == -errno.EOPNOTSUPP  # no vEVENTQ
    _, file = m.veventq(viommu)
    assert file is not None
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_VEVENT, **trigger)[0] == 0
    assert _events(file.read(m.proc.caller, 0, 12)) == [(0, 0, 0x99)]
    assert m.replace(m.ioas_id) == 0
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_VEVENT, **trigger)[0] == -errno.ENOENT


def test_a_full_veventq_records_lost_events_and_reads_whole_events() -> None:
    m = V()
    viommu = m.viommu()[1]
    hwpt = m.nested(viommu)[1]
    m.vdevice(viommu, 0x88)
    m.replace(hwpt)
    _, file = m.veventq(viommu, depth=2)
    assert file is not None
    for _ in range(4):
        assert m.test(I.IOMMU_TEST_OP_TRIGGER_VEVENT, dev_id=m.dev)[0] == 0
    assert file.read(m.proc.caller, 0, 11) == b""  # no room for header and data
    assert _events(file.read(m.proc.caller, 0, 12)) == [(0, 0, 0x88)]
    # Two events lost: one trailing LOST_EVENTS header with the last sequence number.
    assert _events(file.read(m.proc.caller, 0, 64)) == [
        (0, 1, 0x88), (I.IOMMU_VEVENTQ_FLAG_LOST_EVENTS, 3, None)]
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_VEVENT, dev_id=m.dev)[0] == 0
    assert _events(file.read(m.proc.caller, 0, 64)) == [(0, 4, 0x88)]


# ----------------------------------------------------------------------------- HW queues

def test_hw_queue_checks_in_the_kernels_order() -> None:
    m = V()
    viommu = m.viommu()[1]
    assert m.hw_queue(viommu, 0, START, PAGE, flags=1)[0] == -errno.EOPNOTSUPP
    assert m.hw_queue(0, 0, START, PAGE, qtype=I.IOMMU_HW_QUEUE_TYPE_DEFAULT)[0] == -errno.EOPNOTSUPP
    assert m.hw_queue(0, 0, START, 0)[0] == -errno.EINVAL
    assert m.hw_queue(0, 0, 2**64 - 1, PAGE)[0] == -errno.EOVERFLOW
    assert m.hw_queue(0, 0, START, PAGE)[0] == -errno.ENOENT
    assert m.hw_queue(viommu, 0, START, PAGE, qtype=QTYPE + 1)[0] == -errno.EOPNOTSUPP
    assert m.hw_queue(viommu, 0, 0, 2**64 - 1)[0] == -errno.ERANGE
    assert m.hw_queue(viommu, 0, START, PAGE)[0] == -errno.ENOENT  # nothing mapped there
    assert m.map(m.ioas_id, START, 2 * PAGE, RAM) == 0
    assert m.hw_queue(viommu, 1, START, PAGE)[0] == -errno.EIO  # queue 0 first
    assert m.hw_queue(viommu, I.IOMMU_TEST_HW_QUEUE_MAX, START, PAGE)[0] == -errno.EINVAL
    assert m.hw_queue(viommu, 0, START, 2 * PAGE)[0] == -errno.EFAULT  # not contiguous
    assert m.hw_queue(viommu, 0, START, PAGE) == (0, viommu + 1)  # the failures freed ids
    assert isinstance(m.ctx.objects[viommu + 2], HwQueueAccess)  # its access: the next id
    assert m.hw_queue(viommu, 0, START, PAGE)[0] == -errno.EEXIST


def test_a_hw_queue_of_several_pages_needs_them_in_one_contiguous_huge_page() -> None:
    m = V()
    viommu = m.viommu()[1]
    huge = 0x60000000  # 2 MiB aligned
    m.proc.memory.map(huge, 4 << 20, page_size=2 << 20)  # two huge pages
    assert m.map(m.ioas_id, START, 2 * PAGE, RAM) == 0
    assert m.map(m.ioas_id, START + (2 << 20), 4 * PAGE, huge + (2 << 20) - 2 * PAGE) == 0
    assert m.hw_queue(viommu, 0, START, 2 * PAGE)[0] == -errno.EFAULT  # 4 KiB pages
    assert m.hw_queue(viommu, 0, START + (2 << 20), 2 * PAGE)[0] == 0
    assert m.hw_queue(viommu, 1, START + (2 << 20) + PAGE, 2 * PAGE)[0] == -errno.EFAULT  # across two


def test_a_hw_queue_locks_its_pages_and_queues_depend_on_the_one_before() -> None:
    m = V()
    viommu = m.viommu()[1]
    assert m.map(m.ioas_id, START, PAGE, RAM) == 0
    assert m.map(m.ioas_id, START + PAGE, PAGE, RAM + PAGE) == 0
    q0 = m.hw_queue(viommu, 0, START, PAGE)[1]
    unmap = dict(ioas_id=m.ioas_id, length=PAGE)
    assert m.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, iova=START, **unmap)[0] == -errno.EBUSY
    assert m.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, iova=START + PAGE, **unmap)[0] == 0
    q1 = m.hw_queue(viommu, 1, START + PAGE // 2, PAGE // 2)[1]  # unaligned, same page
    assert m.destroy(q0 + 1) == -errno.EBUSY  # the internal access
    assert m.destroy(q0) == -errno.EBUSY  # queue 1 depends on it
    assert m.destroy(viommu) == -errno.EBUSY
    assert m.destroy(q1) == 0 and m.destroy(q0) == 0
    assert m.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, iova=START, **unmap)[0] == 0


def test_an_unmap_stops_at_a_locked_area_after_removing_the_ones_before() -> None:
    """iopt_unmap_iova_range takes the areas in turn: the lock check comes before the
    'wholly inside' one (EBUSY even for an area sticking out of the range), and the areas
    before the locked one are gone, their bytes reported."""
    m = V()
    viommu = m.viommu()[1]
    for i in range(3):
        assert m.map(m.ioas_id, START + i * PAGE, PAGE, RAM + i * PAGE) == 0
    assert m.hw_queue(viommu, 0, START + PAGE, PAGE)[0] == 0   # locks the middle area
    unmap = dict(ioas_id=m.ioas_id)
    # Starting inside the locked area: EBUSY, not ENOENT.
    assert m.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, iova=START + PAGE, length=PAGE // 2,
                    **unmap)[0] == -errno.EBUSY
    assert m.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, iova=START, length=3 * PAGE,
                    **unmap)[0] == -errno.EBUSY
    ioas = m.ctx.objects[m.ioas_id]
    assert [(a.iova - START) // PAGE for a in ioas.areas] == [1, 2]   # area 0 went first
    assert m.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, iova=START + 2 * PAGE, length=PAGE,
                    **unmap)[0] == 0


def test_closing_the_context_frees_every_viommu_object() -> None:
    m = V()
    viommu = m.viommu()[1]
    hwpt = m.nested(viommu)[1]
    m.vdevice(viommu, 0x99)
    m.replace(hwpt)
    m.map(m.ioas_id, START, PAGE, RAM)
    m.hw_queue(viommu, 0, START, PAGE)
    m.hw_queue(viommu, 1, START, PAGE)
    _, file = m.veventq(viommu)
    assert file is not None
    file.release()
    m.file.release()
    assert not m.ctx.objects

