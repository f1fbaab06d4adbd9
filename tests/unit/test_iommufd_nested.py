"""Nested HWPTs of the selftest's mock IOMMU, IOMMU_HWPT_INVALIDATE and IOMMU_FAULT_QUEUE_ALLOC,
one rule per test (hw_pagetable.c: iommufd_hwpt_alloc, iommufd_hwpt_nested_alloc,
iommufd_hwpt_invalidate; selftest.c: the mock's nested domain, MD_CHECK_IOTLB, TRIGGER_IOPF;
eventq.c: the fault object and its fd). The kernel's alloc_hwpt_nested selftest runs the same
rules end to end (scripts/kernel_selftest)."""
from __future__ import annotations

import errno
import struct
from typing import Any

from ioasidfs.engine.iommufd import HwptNested
from ioasidfs.engine.iommufd_fault import FaultFile, FaultQueue
from ioasidfs.errors import KernelError
from ioasidfs.uapi import iommufd as I
from test_iommufd_compat import HOLE
from test_iommufd_mock import ARRAY, Mock

NEST = I.IOMMU_HWPT_ALLOC_NEST_PARENT
FAULT = I.IOMMU_HWPT_FAULT_ID_VALID
SELFTEST = I.IOMMU_HWPT_DATA_SELFTEST
INV = I.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST
DEFAULT = I.IOMMU_TEST_IOTLB_DEFAULT
REQS = ARRAY + 0x100
FAULT_FD = 11


class Nested(Mock):
    """An IOAS with one mock device on it (ids: IOAS 1, selftest 2, device 3, HWPT 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.ioas_id = self.ioas()
        result, out = self.mock_domain(self.ioas_id)
        assert result == 0
        self.stdev, self.dev = int(out["out_stdev_id"]), int(out["out_idev_id"])

    def alloc(self, pt_id: int, flags: int = 0, data_type: int = 0, data_len: int = 0,
              uptr: int = 0, fault_id: int = 0, dev_id: int | None = None) -> tuple[int, int]:
        result, out = self.native(I.IOMMU_HWPT_ALLOC, I.HWPT_ALLOC, flags=flags,
                                  dev_id=self.dev if dev_id is None else dev_id, pt_id=pt_id,
                                  data_type=data_type, data_len=data_len, data_uptr=uptr,
                                  fault_id=fault_id)
        return result, int(out["out_hwpt_id"])

    def nested(self, parent: int, iotlb: int = DEFAULT, **kw: Any) -> tuple[int, int]:
        self.proc.memory.write(ARRAY, struct.pack("<I", iotlb))
        return self.alloc(parent, data_type=SELFTEST, data_len=4, uptr=ARRAY, **kw)

    def parent(self) -> int:
        result, hwpt = self.alloc(self.ioas_id, NEST)
        assert result == 0
        return hwpt

    def invalidate(self, hwpt: int, reqs: list[tuple[int, int]], data_type: int = INV,
                   entry_len: int = 8, num: int | None = None,
                   uptr: int = REQS) -> tuple[int, int]:
        self.proc.memory.write(REQS, b"".join(struct.pack("<II", f, i) for f, i in reqs) + bytes(8))
        result, out = self.native(I.IOMMU_HWPT_INVALIDATE, I.HWPT_INVALIDATE, hwpt_id=hwpt,
                                  data_uptr=uptr, data_type=data_type, entry_len=entry_len,
                                  entry_num=len(reqs) if num is None else num)
        return result, int(out["entry_num"])

    def iotlb(self, hwpt: int) -> list[int]:
        values = []
        for index in range(I.MOCK_NESTED_DOMAIN_IOTLB_NUM):
            for value in (0, DEFAULT):
                if self.test(I.IOMMU_TEST_OP_MD_CHECK_IOTLB, id=hwpt, iotlb_id=index,
                             iotlb=value)[0] == 0:
                    values.append(value)
                    break
            else:
                values.append(-1)
        return values

    def fault_alloc(self) -> tuple[int, FaultFile]:
        self.proc.memory.write(ARRAY + 0x800, I.FAULT_ALLOC.pack(size=16))
        result = self.call(I.IOMMU_FAULT_QUEUE_ALLOC, ARRAY + 0x800)
        assert isinstance(result, FaultFile)
        assert result.fd_installed(FAULT_FD) == 0  # what the launcher does after ADDFD
        out = I.FAULT_ALLOC.unpack(self.proc.memory.read(ARRAY + 0x800, 16))
        assert out["out_fault_fd"] == FAULT_FD
        return int(out["out_fault_id"]), result


# ----------------------------------------------------------------------------- HWPT_ALLOC

def test_nested_hwpt_checks_in_the_kernels_order() -> None:
    m = Nested()
    parent = m.parent()
    plain = m.alloc(m.ioas_id)[1]
    assert m.alloc(m.ioas_id, NEST | FAULT)[0] == -errno.EOPNOTSUPP  # no faults on a parent
    assert m.alloc(parent, data_type=0, data_len=4, uptr=ARRAY)[0] == -errno.EINVAL
    m.proc.memory.write(ARRAY, struct.pack("<I", DEFAULT))
    assert m.alloc(parent, data_type=SELFTEST + 1, data_len=4, uptr=ARRAY)[0] == -errno.EOPNOTSUPP
    assert m.alloc(parent, data_type=SELFTEST, data_len=3, uptr=ARRAY)[0] == -errno.EINVAL
    assert m.alloc(parent, data_type=SELFTEST, data_len=5, uptr=ARRAY)[0] == -errno.EINVAL
    assert m.alloc(parent, data_type=SELFTEST, data_len=4, uptr=HOLE)[0] == -errno.EFAULT
    assert m.nested(parent, flags=NEST)[0] == -errno.EOPNOTSUPP  # core flags before the parent
    assert m.nested(plain)[0] == -errno.EINVAL  # not NEST_PARENT
    assert m.nested(4)[0] == -errno.EINVAL  # the automatic HWPT
    # Every failure freed the id it took: the next HWPT gets the next free one.
    result, first = m.nested(parent)
    assert result == 0 and first == plain + 1 and isinstance(m.ctx.objects[first], HwptNested)
    assert m.nested(first)[0] == -errno.EINVAL  # no nesting on a nested HWPT
    assert m.iotlb(first) == [DEFAULT] * 4


def test_nested_hwpt_holds_its_parent_and_attached_devices_hold_it() -> None:
    m = Nested()
    parent = m.parent()
    first, second = m.nested(parent)[1], m.nested(parent)[1]
    assert m.destroy(parent) == -errno.EBUSY
    assert m.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id=m.stdev, pt_id=first)[1]["pt_id"] == first
    assert m.destroy(first) == -errno.EBUSY
    assert m.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id=m.stdev, pt_id=second)[0] == 0
    assert m.destroy(first) == 0
    assert m.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id=m.stdev, pt_id=parent)[0] == 0
    assert m.destroy(second) == 0
    assert m.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id=m.stdev, pt_id=m.ioas_id)[0] == 0
    assert m.destroy(parent) == 0


def test_a_nested_hwpt_is_not_a_paging_one() -> None:
    m = Nested()
    nested = m.nested(m.parent())[1]
    result, _ = m.native(I.IOMMU_HWPT_SET_DIRTY_TRACKING, I.HWPT_SET_DIRTY_TRACKING,
                         hwpt_id=nested, flags=0)
    assert result == -errno.ENOENT
    assert m.test(I.IOMMU_TEST_OP_MD_CHECK_IOTLB, id=4, iotlb_id=0, iotlb=DEFAULT)[0] == -errno.ENOENT


def test_vtd_devices_still_refuse_nesting() -> None:
    m = Nested()
    ctx = m.ctx
    vtd = ctx.bind_device("0000:00:05.0")
    parent = m.parent()
    assert m.nested(parent, dev_id=ctx.id_of(vtd))[0] == -errno.EINVAL  # another driver's parent
    assert m.alloc(m.ioas_id, NEST, dev_id=ctx.id_of(vtd))[0] == -errno.EOPNOTSUPP


def test_a_vtd_device_cannot_attach_a_hwpt_with_a_fault_queue() -> None:
    m = Nested()
    vtd = m.ctx.bind_device("0000:00:05.0")
    fault_id, _ = m.fault_alloc()
    result, hwpt = m.alloc(m.ioas_id, FAULT, fault_id=fault_id, dev_id=m.ctx.id_of(vtd))
    assert result == 0  # the allocation does not ask the device
    try:
        m.ctx.attach_pt(vtd, hwpt)
        raise AssertionError("ENODEV expected")
    except KernelError as e:
        assert e.errno == errno.ENODEV  # intel_iommu_enable_iopf: no ATS/PRI
    assert vtd.hwpt is None


# ----------------------------------------------------------------------------- HWPT_INVALIDATE

def test_invalidate_argument_checks_write_back_zero() -> None:
    m = Nested()
    parent = m.parent()
    nested = m.nested(parent)[1]
    assert m.invalidate(parent, [(0, 0)]) == (-errno.EINVAL, 0)  # not nested
    assert m.invalidate(HOLE & 0xFFFF, [(0, 0)]) == (-errno.ENOENT, 0)
    assert m.invalidate(nested, [(0, 0)], uptr=0) == (-errno.EINVAL, 0)
    assert m.invalidate(nested, [(0, 0)], entry_len=0) == (-errno.EINVAL, 0)
    assert m.invalidate(nested, []) == (0, 0)  # an empty array checks the type only
    assert m.invalidate(nested, [], data_type=INV + 1) == (-errno.EINVAL, 0)
    assert m.invalidate(nested, [(0, 0)], data_type=I.IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID) == (
        -errno.EINVAL, 0)
    assert m.invalidate(nested, [(0, 0)], entry_len=9) == (-errno.EINVAL, 0)
    assert m.invalidate(nested, [(0, 0)], entry_len=1) == (-errno.EINVAL, 0)
    assert m.invalidate(nested, [(0, 0)], uptr=HOLE) == (-errno.EFAULT, 0)
    assert m.iotlb(nested) == [DEFAULT] * 4


def test_invalidate_walks_until_the_first_bad_entry() -> None:
    m = Nested()
    nested = m.nested(m.parent())[1]
    assert m.invalidate(nested, [(0, 0), (0xFFFFFFFF, 1)]) == (-errno.EOPNOTSUPP, 1)
    assert m.iotlb(nested) == [0, DEFAULT, DEFAULT, DEFAULT]
    assert m.invalidate(nested, [(0, 2), (0, 4)]) == (-errno.EINVAL, 1)
    assert m.iotlb(nested) == [0, DEFAULT, 0, DEFAULT]
    # The iotlb_id is checked even when FLAG_ALL ignores it.
    assert m.invalidate(nested, [(I.IOMMU_TEST_INVALIDATE_FLAG_ALL, 4)]) == (-errno.EINVAL, 0)
    assert m.invalidate(nested, [(I.IOMMU_TEST_INVALIDATE_FLAG_ALL, 3)]) == (0, 1)
    assert m.iotlb(nested) == [0] * 4


def test_check_iotlb_index_and_value() -> None:
    m = Nested()
    nested = m.nested(m.parent(), iotlb=7)[1]
    check = I.IOMMU_TEST_OP_MD_CHECK_IOTLB
    assert m.test(check, id=nested, iotlb_id=3, iotlb=7)[0] == 0
    assert m.test(check, id=nested, iotlb_id=4, iotlb=7)[0] == -errno.EINVAL
    assert m.test(check, id=nested, iotlb_id=0, iotlb=8)[0] == -errno.EINVAL


# ----------------------------------------------------------------------------- fault queues

def test_fault_alloc_flags_and_plain_mount() -> None:
    m = Nested()
    m.proc.memory.write(ARRAY, I.FAULT_ALLOC.pack(size=16, flags=1))
    assert m.call(I.IOMMU_FAULT_QUEUE_ALLOC, ARRAY) == -errno.EOPNOTSUPP
    m.proc.memory.write(ARRAY, I.FAULT_ALLOC.pack(size=16))
    file = m.call(I.IOMMU_FAULT_QUEUE_ALLOC, ARRAY)
    assert isinstance(file, FaultFile) and isinstance(m.ctx.objects[5], FaultQueue)
    file.release()  # never installed (a plain mount refuses it): the object goes too
    assert 5 not in m.ctx.objects


def test_fault_id_valid_needs_a_fault_object_which_the_hwpt_holds() -> None:
    m = Nested()
    parent = m.parent()
    fault_id, file = m.fault_alloc()
    assert m.nested(parent, flags=FAULT, fault_id=0xFFFFFFFF)[0] == -errno.ENOENT
    assert m.nested(parent, flags=FAULT, fault_id=parent)[0] == -errno.ENOENT
    result, hwpt = m.nested(parent, flags=FAULT, fault_id=fault_id)
    assert result == 0 and hwpt == fault_id + 1  # the failures freed their ids
    assert m.destroy(fault_id) == -errno.EBUSY  # the fd and the HWPT hold it
    file.release()
    assert m.destroy(fault_id) == -errno.EBUSY
    assert m.destroy(hwpt) == 0
    assert m.destroy(fault_id) == 0


def test_the_fault_fd_holds_the_context() -> None:
    m = Nested()
    fault_id, file = m.fault_alloc()
    m.file.release()
    assert m.ctx.objects  # the fd keeps the context and its objects
    file.release()
    assert not m.ctx.objects


def test_trigger_iopf_reaches_the_fault_fd_and_a_response_answers_it() -> None:
    m = Nested()
    parent = m.parent()
    fault_id, file = m.fault_alloc()
    hwpt = m.nested(parent, flags=FAULT, fault_id=fault_id)[1]
    trigger = dict(dev_id=m.dev, pasid=1, grpid=2, perm=3, addr=0xDEADBEAF)
    # Not attached to the fault HWPT yet: the fault is dropped.
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_IOPF, **trigger)[0] == 0
    assert file.read(m.proc.caller, 0, 40) == b""
    assert m.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id=m.stdev, pt_id=hwpt)[0] == 0
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_IOPF, **trigger)[0] == 0
    try:
        file.read(m.proc.caller, 0, 41)
        raise AssertionError("ESPIPE expected")
    except KernelError as e:
        assert e.errno == errno.ESPIPE
    assert file.read(m.proc.caller, 0, 0) == b""  # no room for the group
    fault = I.HWPT_PGFAULT.unpack(file.read(m.proc.caller, 0, 80))
    assert (fault["flags"], fault["dev_id"], fault["pasid"], fault["grpid"], fault["perm"],
            fault["addr"], fault["length"], fault["cookie"]) == (
        I.IOMMU_PGFAULT_FLAGS_PASID_VALID | I.IOMMU_PGFAULT_FLAGS_LAST_PAGE, m.dev, 1, 2, 3,
        0xDEADBEAF, 0, 1)
    bad_code = I.HWPT_PAGE_RESPONSE.pack(cookie=1, code=2)
    for data, err in ((bad_code, errno.EINVAL), (I.HWPT_PAGE_RESPONSE.pack(cookie=2, code=0), errno.EINVAL),
                      (b"\0" * 7, errno.ESPIPE)):
        try:
            file.write(m.proc.caller, 0, data)
            raise AssertionError("error expected")
        except KernelError as e:
            assert e.errno == err
    ok = I.HWPT_PAGE_RESPONSE.pack(cookie=1, code=I.IOMMUFD_PAGE_RESP_SUCCESS)
    assert file.write(m.proc.caller, 0, ok + bad_code) == 8  # the good one counts
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_IOPF, **trigger)[0] == 0
    # Leaving the HWPT answers its pending faults.
    assert m.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id=m.stdev, pt_id=parent)[0] == 0
    assert file.read(m.proc.caller, 0, 40) == b""
