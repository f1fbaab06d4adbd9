"""PASID attach, replace and detach of the selftest's mock devices, one rule per test
(device.c: iommufd_device_attach/replace/detach with a pasid, iommufd_hw_pagetable_attach,
iommufd_hwpt_pasid_compat; iommu.c: iommu_attach/replace_device_pasid; selftest.c: the
PASID test ops and mock_domain_set_dev_pasid_nop). The kernel's iommufd_device_pasid
selftest runs the same rules end to end (scripts/kernel_selftest)."""
from __future__ import annotations

import errno

from ioasidfs.uapi import iommufd as I
from test_iommufd_nested import FAULT, Nested

PASID = I.IOMMU_HWPT_ALLOC_PASID


class Pasid(Nested):
    """An IOAS with one PASID-capable mock device on it."""

    def __init__(self, flags: int = I.MOCK_FLAGS_DEVICE_PASID) -> None:
        super(Nested, self).__init__()
        self.ioas_id = self.ioas()
        result, out = self.mock_domain(self.ioas_id, flags)
        assert result == 0
        self.stdev, self.dev = int(out["out_stdev_id"]), int(out["out_idev_id"])
        self.rid_hwpt = int(out["out_hwpt_id"])

    def s2(self) -> int:
        result, hwpt = self.alloc(self.ioas_id, PASID)
        assert result == 0
        return hwpt

    def attach(self, pasid: int, pt_id: int, stdev: int | None = None) -> int:
        return int(self.test(I.IOMMU_TEST_OP_PASID_ATTACH, id=self.stdev if stdev is None else stdev,
                             pasid=pasid, pt_id=pt_id)[0])

    def replace(self, pasid: int, pt_id: int) -> int:
        return int(self.test(I.IOMMU_TEST_OP_PASID_REPLACE, id=self.stdev, pasid=pasid,
                             pt_id=pt_id)[0])

    def detach(self, pasid: int) -> int:
        return int(self.test(I.IOMMU_TEST_OP_PASID_DETACH, id=self.stdev, pasid=pasid)[0])

    def check(self, pasid: int, hwpt: int) -> int:
        return int(self.test(I.IOMMU_TEST_OP_PASID_CHECK_HWPT, id=self.stdev, pasid=pasid,
                             hwpt_id=hwpt)[0])

    def rid(self, pt_id: int) -> int:
        return int(self.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id=self.stdev, pt_id=pt_id)[0])


def test_detach_of_an_unattached_pasid_is_0_and_check_reports_nothing() -> None:
    m = Pasid()
    assert m.detach(100) == 0
    assert m.check(100, 0) == 0
    assert m.check(100, m.rid_hwpt) == -errno.EINVAL
    assert m.check(100, 99) == -errno.ENOENT
    assert m.attach(100, m.s2(), stdev=99) == -errno.ENOENT


def test_attach_needs_a_pasid_compatible_hwpt_and_rid() -> None:
    m = Pasid()
    parent, s2 = m.parent(), m.s2()
    # The RID is on an automatic HWPT (never PASID-compatible): even s2 is refused.
    assert m.attach(100, s2) == -errno.EINVAL
    assert m.rid(s2) == 0
    assert m.attach(100, parent) == -errno.EINVAL  # not allocated IOMMU_HWPT_ALLOC_PASID
    assert m.attach(100, m.ioas_id) == -errno.EINVAL  # automatic domains never are
    assert m.check(100, 0) == 0
    assert m.attach(100, s2) == 0
    assert m.check(100, s2) == 0
    assert m.check(100, parent) == -errno.EINVAL


def test_rid_cannot_move_to_a_non_pasid_compatible_hwpt_while_a_pasid_is_attached() -> None:
    m = Pasid()
    parent, s2 = m.parent(), m.s2()
    assert m.rid(s2) == 0
    assert m.attach(100, s2) == 0
    assert m.rid(parent) == -errno.EINVAL
    assert m.rid(m.ioas_id) == -errno.EINVAL  # the automatic domains neither
    assert m.detach(100) == 0
    assert m.rid(parent) == 0


def test_nested_hwpts_attach_at_a_pasid() -> None:
    m = Pasid()
    parent, s2 = m.parent(), m.s2()
    nested = m.nested(parent, flags=PASID)[1]
    plain = m.nested(parent)[1]
    assert m.rid(s2) == 0
    assert m.attach(100, plain) == -errno.EINVAL
    assert m.attach(100, nested) == 0
    assert m.check(100, nested) == 0


def test_attach_over_an_attached_pasid_is_ebusy_even_with_the_same_hwpt() -> None:
    m = Pasid()
    s2 = m.s2()
    nested = m.nested(m.parent(), flags=PASID)[1]
    assert m.rid(s2) == 0
    assert m.attach(100, s2) == 0
    assert m.attach(100, nested) == -errno.EBUSY
    assert m.attach(100, s2) == -errno.EBUSY
    assert m.check(100, s2) == 0


def test_pasid_past_the_device_width_or_without_pasid_support_is_einval() -> None:
    m = Pasid()
    s2 = m.s2()
    assert m.rid(s2) == 0
    assert m.attach(1 << I.MOCK_PASID_WIDTH, s2) == -errno.EINVAL
    assert m.attach((1 << I.MOCK_PASID_WIDTH) - 1, s2) == 0
    plain = Pasid(flags=0)
    s2 = plain.s2()
    assert plain.rid(s2) == 0
    assert plain.attach(100, s2) == -errno.EINVAL


def test_replace_rules() -> None:
    m = Pasid()
    parent, s2 = m.parent(), m.s2()
    n0, n1 = m.nested(parent, flags=PASID)[1], m.nested(parent, flags=PASID)[1]
    assert m.rid(s2) == 0
    assert m.replace(200, s2) == -errno.EINVAL  # nothing attached there
    assert m.attach(200, s2) == 0
    assert m.replace(200, m.ioas_id) == -errno.EINVAL
    assert m.replace(200, parent) == -errno.EINVAL
    assert m.check(200, s2) == 0
    assert m.replace(200, s2) == 0  # the same HWPT: nothing to do
    assert m.replace(200, n0) == 0
    assert m.check(200, n0) == 0
    assert m.replace(200, n1) == 0
    assert m.check(200, n1) == 0
    assert m.replace(200, 99) == -errno.ENOENT
    assert m.detach(200) == 0
    assert m.check(200, 0) == 0


def test_mock_pasid_1024_fails_its_second_set_dev_pasid_and_the_old_hwpt_stays() -> None:
    m = Pasid()
    s2 = m.s2()
    nested = m.nested(m.parent(), flags=PASID)[1]
    assert m.rid(s2) == 0
    assert m.attach(1024, s2) == 0
    assert m.replace(1024, nested) == -errno.ENOMEM
    assert m.check(1024, s2) == 0
    assert m.replace(1024, nested) == 0  # the flag was cleared by the failure
    assert m.detach(1024) == 0  # the blocked domain clears it too
    assert m.attach(1024, s2) == 0


def test_destroy_is_ebusy_while_attached_at_a_pasid() -> None:
    m = Pasid()
    s2 = m.s2()
    nested = m.nested(m.parent(), flags=PASID)[1]
    assert m.rid(s2) == 0
    assert m.attach(100, nested) == 0
    assert m.destroy(nested) == -errno.EBUSY
    assert m.replace(100, s2) == 0
    assert m.destroy(nested) == 0
    assert m.destroy(m.ioas_id) == -errno.EBUSY
    assert m.rid(m.ioas_id) == -errno.EINVAL  # s2 is still at the PASID
    assert m.detach(100) == 0
    assert m.rid(m.ioas_id) == 0
    assert m.destroy(s2) == 0


def test_destroying_the_mock_device_drops_its_pasid_attachments() -> None:
    m = Pasid()
    s2 = m.s2()
    assert m.rid(s2) == 0
    assert m.attach(100, s2) == 0
    assert m.destroy(m.stdev) == 0
    assert m.destroy(s2) == 0


def test_iopf_at_a_pasid_reaches_the_hwpt_attached_there() -> None:
    m = Pasid()
    parent, s2 = m.parent(), m.s2()
    fault_id, file = m.fault_alloc()
    iopf = m.nested(parent, flags=FAULT | PASID, fault_id=fault_id)[1]
    assert m.rid(s2) == 0
    trigger = dict(dev_id=m.dev, pasid=2048, grpid=2, perm=3, addr=0x1000)
    assert m.attach(2048, iopf) == 0
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_IOPF, **trigger)[0] == 0
    fault = I.HWPT_PGFAULT.unpack(file.read(m.proc.caller, 0, 40))
    assert (fault["dev_id"], fault["pasid"]) == (m.dev, 2048)
    # Detaching answers the pending fault; nothing is left to read.
    assert m.detach(2048) == 0
    assert file.read(m.proc.caller, 0, 40) == b""
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_IOPF, **trigger)[0] == 0
    assert file.read(m.proc.caller, 0, 40) == b""
