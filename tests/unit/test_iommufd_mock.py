"""IOMMU_TEST_CMD: the selftest mock (engine/iommufd_mock.py), one rule per test.

Every expectation is drivers/iommu/iommufd/selftest.c's (and main.c's dispatch for the ioctl's
slot); the kernel's own tools/testing/selftests/iommu/iommufd.c exercises the same rules end to
end (scripts/kernel_selftest). The environment is an engine with ``[iommufd] test_cmd`` on,
/dev/iommu open and one fake process (test_iommufd_compat's)."""
from __future__ import annotations

import dataclasses
import errno
import struct
from typing import Any

import pytest

from ioasidfs.config import load_config
from ioasidfs.engine import Engine, FileKind
from ioasidfs.engine.iommufd import IommufdFile
from ioasidfs.engine.iommufd_mock import MOCK_IO_PAGE_SIZE, AccessFile, MockDevice, SelftestObject
from ioasidfs.errors import KernelError
from ioasidfs.uapi import iommufd as I
from ioasidfs.uapi.ioctl import IO
from test_iommufd_compat import BUF, HOLE, PAGE, RAM, Process

ARRAY = 0x20000
START = I.MOCK_APERTURE_START
RW = I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE
FIXED = I.IOMMU_IOAS_MAP_FIXED_IOVA
ACCESS_FD = 9


class Mock:
    """An engine (test_cmd on unless told otherwise), /dev/iommu open, one process."""

    def __init__(self, *, test_cmd: bool = True) -> None:
        config = dataclasses.replace(load_config(None), iommufd_test_cmd=test_cmd)
        self.engine = Engine(config, still_open=lambda f: True)
        self.fds: dict[int, object] = {}
        self.proc = Process(self, 100)  # type: ignore[arg-type]  # only .resolve is used
        self.file: IommufdFile = self.engine.open(FileKind.IOMMUFD, None, self.proc.caller)  # type: ignore[assignment]
        self.ctx = self.file.context

    def resolve(self, fd: int) -> object:
        if fd not in self.fds:
            raise KernelError(errno.EBADF, "closed")
        return self.fds[fd]

    def call(self, cmd: int, arg: int = BUF) -> Any:
        """The ioctl's result (an int, or a new file), or minus its errno."""
        try:
            return self.file.ioctl(self.proc.caller, cmd, arg)
        except KernelError as e:
            return -e.errno

    def test(self, op: int, **fields: int) -> tuple[Any, dict[str, Any]]:
        layout = I.TEST_CMD_BY_OP[op]
        self.proc.memory.write(BUF, layout.pack(size=layout.size, op=op, **fields))
        result = self.call(I.IOMMU_TEST_CMD)
        return result, layout.unpack(self.proc.memory.read(BUF, layout.size))

    def native(self, cmd: int, layout: Any, **fields: int) -> tuple[int, dict[str, Any]]:
        self.proc.memory.write(BUF, layout.pack(size=layout.size, **fields))
        result = self.call(cmd)
        return result, layout.unpack(self.proc.memory.read(BUF, layout.size))

    def ioas(self) -> int:
        result, out = self.native(I.IOMMU_IOAS_ALLOC, I.IOAS_ALLOC)
        assert result == 0
        return int(out["out_ioas_id"])

    def mock_domain(self, pt_id: int, flags: int | None = None) -> tuple[int, dict[str, Any]]:
        if flags is None:
            return self.test(I.IOMMU_TEST_OP_MOCK_DOMAIN, id=pt_id)
        return self.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, id=pt_id, dev_flags=flags)

    def map(self, ioas: int, iova: int, length: int, vaddr: int = RAM) -> int:
        result, _ = self.native(I.IOMMU_IOAS_MAP, I.IOAS_MAP, flags=FIXED | RW, ioas_id=ioas,
                                user_va=vaddr, length=length, iova=iova)
        return result

    def destroy(self, object_id: int) -> int:
        return self.native(I.IOMMU_DESTROY, I.DESTROY, id=object_id)[0]

    def ranges(self, ioas: int) -> tuple[list[tuple[int, int]], int]:
        result, out = self.native(I.IOMMU_IOAS_IOVA_RANGES, I.IOAS_IOVA_RANGES, ioas_id=ioas,
                                  num_iovas=4, allowed_iovas=ARRAY)
        assert result == 0
        raw = self.proc.memory.read(ARRAY, 16 * int(out["num_iovas"]))
        pairs = struct.unpack(f"<{2 * int(out['num_iovas'])}Q", raw)
        return list(zip(pairs[::2], pairs[1::2])), int(out["out_iova_alignment"])


# ----------------------------------------------------------------------------- the slot

def test_without_the_option_the_command_does_not_exist() -> None:
    m = Mock(test_cmd=False)
    assert m.test(I.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, limit=65536)[0] == -errno.ENOTTY
    # Past the production table the VFIO compat switch answers, without reading anything.
    assert m.call(I.IOMMU_TEST_CMD, 0) == -errno.ENOTTY


def test_with_the_option_the_table_reaches_the_test_slot_with_holes() -> None:
    m = Mock()
    hole = IO(I.IOMMUFD_TYPE, 0x95)
    assert m.call(hole, 0) == -errno.EFAULT  # size read first, as for any native nr
    assert m.call(hole) == -errno.ENOTTY
    assert m.call(I.IOMMU_TEST_CMD, 0) == -errno.EFAULT
    m.proc.memory.write(BUF, struct.pack("<II", 67, I.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT))
    assert m.call(I.IOMMU_TEST_CMD) == -errno.EINVAL  # min size: offsetofend(last) = 68
    m.proc.memory.write(BUF, struct.pack("<II", 72, 999))
    assert m.call(I.IOMMU_TEST_CMD) == -errno.EOPNOTSUPP  # an unknown op


def test_memory_limit_must_hold_one_batch_element() -> None:
    m = Mock()
    assert m.test(I.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, limit=11)[0] == -errno.EINVAL
    assert m.test(I.IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, limit=12)[0] == 0


# ----------------------------------------------------------------------------- mock devices

def test_mock_domain_ids_in_the_kernels_order_and_the_mock_geometry() -> None:
    m = Mock()
    ioas = m.ioas()
    assert m.ranges(ioas) == ([(0, (1 << 64) - 1)], 1)
    result, out = m.mock_domain(ioas)
    assert result == 0
    assert (ioas, out["out_stdev_id"], out["out_idev_id"], out["out_hwpt_id"]) == (1, 2, 3, 4)
    assert m.ranges(ioas) == ([(START, I.MOCK_APERTURE_LAST)], MOCK_IO_PAGE_SIZE)
    assert isinstance(m.ctx.objects[2], SelftestObject) and isinstance(m.ctx.objects[3], MockDevice)


def test_unknown_device_flags_are_einval_and_free_the_ids() -> None:
    m = Mock()
    ioas = m.ioas()
    assert m.mock_domain(ioas, 1 << 3)[0] == -errno.EINVAL
    assert m.mock_domain(ioas, 0)[1]["out_stdev_id"] == 2
    assert m.mock_domain(HOLE)[0] == -errno.ENOENT  # no such pt: undone as well
    assert sorted(m.ctx.objects) == [1, 2, 3, 4]


def test_a_mock_domain_on_a_hwpt_uses_it() -> None:
    m = Mock()
    ioas = m.ioas()
    hwpt = m.mock_domain(ioas)[1]["out_hwpt_id"]
    result, out = m.mock_domain(hwpt)
    assert result == 0 and out["out_hwpt_id"] == hwpt
    assert m.mock_domain(int(out["out_idev_id"]))[0] == -errno.EINVAL  # a device is no pt


def test_destroying_the_selftest_object_unbinds_and_drops_the_auto_domain() -> None:
    m = Mock()
    ioas = m.ioas()
    out = m.mock_domain(ioas)[1]
    assert m.destroy(ioas) == -errno.EBUSY
    assert m.destroy(out["out_idev_id"]) == -errno.EBUSY  # its driver holds the device
    assert m.destroy(out["out_stdev_id"]) == 0
    assert sorted(m.ctx.objects) == [ioas] and not m.ctx.devices and not m.ctx.hwpts
    assert m.ranges(ioas) == ([(0, (1 << 64) - 1)], 1)
    assert m.destroy(ioas) == 0


def test_replace_moves_the_device_and_puts_the_old_auto_domain() -> None:
    m = Mock()
    first, second = m.ioas(), m.ioas()
    out = m.mock_domain(first)[1]
    result, after = m.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id=out["out_stdev_id"], pt_id=second)
    assert result == 0 and after["pt_id"] not in (0, out["out_hwpt_id"])
    assert out["out_hwpt_id"] not in m.ctx.objects
    assert m.test(I.IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id=out["out_idev_id"],
                  pt_id=first)[0] == -errno.ENOENT  # the id must be a selftest object


def test_mock_devices_do_not_keep_the_context_alive() -> None:
    m = Mock()
    ioas = m.ioas()
    m.mock_domain(ioas)
    assert m.map(ioas, START, 2 * PAGE) == 0
    m.file.release()
    assert not m.ctx.objects and not m.ctx.devices
    assert m.engine.pin_accounting.users.pages_of(m.proc.uid) == 0


def test_dev_check_cache() -> None:
    m = Mock()
    idev = m.mock_domain(m.ioas())[1]["out_idev_id"]
    ok = m.test(I.IOMMU_TEST_OP_DEV_CHECK_CACHE, id=idev, cache_id=3, cache=I.IOMMU_TEST_DEV_CACHE_DEFAULT)
    assert ok[0] == 0
    assert m.test(I.IOMMU_TEST_OP_DEV_CHECK_CACHE, id=idev, cache_id=4,
                  cache=I.IOMMU_TEST_DEV_CACHE_DEFAULT)[0] == -errno.EINVAL
    assert m.test(I.IOMMU_TEST_OP_DEV_CHECK_CACHE, id=idev, cache_id=0, cache=0)[0] == -errno.EINVAL
    assert m.test(I.IOMMU_TEST_OP_DEV_CHECK_CACHE, id=HOLE, cache_id=0, cache=0)[0] == -errno.ENOENT


# ----------------------------------------------------------------------------- checks

def test_check_map_compares_the_pages_behind_each_iova() -> None:
    m = Mock()
    ioas = m.ioas()
    hwpt = m.mock_domain(ioas)[1]["out_hwpt_id"]
    assert m.map(ioas, START, 4 * PAGE) == 0
    check = I.IOMMU_TEST_OP_MD_CHECK_MAP
    assert m.test(check, id=hwpt, iova=START + PAGE, length=PAGE, uptr=RAM + PAGE)[0] == 0
    assert m.test(check, id=hwpt, iova=START, length=PAGE, uptr=RAM + PAGE)[0] == -errno.EINVAL
    assert m.test(check, id=hwpt, iova=START + 8 * PAGE, length=PAGE, uptr=RAM)[0] == -errno.EINVAL
    assert m.test(check, id=hwpt, iova=START + 1, length=PAGE, uptr=RAM)[0] == -errno.EINVAL
    assert m.test(check, id=hwpt, iova=START, length=PAGE, uptr=HOLE)[0] == -errno.EFAULT
    assert m.test(check, id=ioas, iova=START, length=PAGE, uptr=RAM)[0] == -errno.ENOENT


def test_check_refs_counts_one_pin_per_pages_object() -> None:
    m = Mock()
    ioas = m.ioas()
    refs = I.IOMMU_TEST_OP_MD_CHECK_REFS
    assert m.map(ioas, START, 2 * PAGE) == 0  # no domain: nothing pinned
    assert m.test(refs, length=2 * PAGE, uptr=RAM, refs=0)[0] == 0
    m.mock_domain(ioas)
    m.mock_domain(ioas)  # a second domain pins nothing more
    assert m.test(refs, length=2 * PAGE, uptr=RAM, refs=1)[0] == 0
    assert m.map(ioas, START + 4 * PAGE, PAGE) == 0  # another MAP of the same page
    assert m.test(refs, length=PAGE, uptr=RAM, refs=2)[0] == 0
    assert m.test(refs, length=PAGE, uptr=RAM + PAGE, refs=2)[0] == -errno.EIO
    assert m.test(refs, length=PAGE, uptr=RAM + 1, refs=0)[0] == -errno.EINVAL
    assert m.test(refs, length=PAGE, uptr=HOLE, refs=0)[0] == -errno.EFAULT


def test_add_reserved_stays_reserved() -> None:
    m = Mock()
    ioas = m.ioas()
    assert m.test(I.IOMMU_TEST_OP_ADD_RESERVED, id=ioas, start=PAGE, length=PAGE)[0] == 0
    assert m.map(ioas, PAGE, PAGE) == -errno.EINVAL
    assert m.map(ioas, 4 * PAGE, PAGE) == 0
    assert m.test(I.IOMMU_TEST_OP_ADD_RESERVED, id=ioas, start=4 * PAGE, length=PAGE)[0] == -errno.EADDRINUSE
    assert m.test(I.IOMMU_TEST_OP_ADD_RESERVED, id=HOLE, start=0, length=PAGE)[0] == -errno.ENOENT
    assert m.ranges(ioas)[0][:2] == [(0, PAGE - 1), (2 * PAGE, (1 << 64) - 1)]


# ----------------------------------------------------------------------------- accesses

def create_access(m: Mock, ioas: int, flags: int = I.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) -> AccessFile:
    result, _ = m.test(I.IOMMU_TEST_OP_CREATE_ACCESS, id=ioas, flags=flags)
    assert isinstance(result, AccessFile)
    assert result.fd_installed(ACCESS_FD) == 0  # what the launcher does after ADDFD
    m.fds[ACCESS_FD] = result
    layout = I.TEST_CMD_BY_OP[I.IOMMU_TEST_OP_CREATE_ACCESS]
    assert layout.unpack(m.proc.memory.read(BUF, layout.size))["out_access_fd"] == ACCESS_FD
    return result


def test_create_access_checks_flags_and_the_ioas() -> None:
    m = Mock()
    assert m.test(I.IOMMU_TEST_OP_CREATE_ACCESS, id=m.ioas(), flags=2)[0] == -errno.EOPNOTSUPP
    assert m.test(I.IOMMU_TEST_OP_CREATE_ACCESS, id=HOLE, flags=0)[0] == -errno.ENOENT
    assert sorted(m.ctx.objects) == [1]  # the access's id was taken and freed


def test_an_access_holds_its_ioas_and_the_context_until_its_fd_goes() -> None:
    m = Mock()
    ioas = m.ioas()
    access = create_access(m, ioas)
    access_id = m.ctx.id_of(access.access)
    assert m.destroy(ioas) == -errno.EBUSY
    assert m.destroy(access_id) == -errno.EBUSY  # its driver holds it
    m.file.release()
    assert ioas in m.ctx.objects  # the access keeps the context
    access.release()
    assert not m.ctx.objects


def test_access_pages_pins_items_that_an_unmap_drops() -> None:
    m = Mock()
    ioas = m.ioas()
    assert m.map(ioas, START, 4 * PAGE) == 0
    create_access(m, ioas)
    pages = I.IOMMU_TEST_OP_ACCESS_PAGES
    result, out = m.test(pages, id=ACCESS_FD, iova=START + PAGE, length=2 * PAGE, uptr=RAM + PAGE)
    assert result == 0 and out["out_access_pages_id"] == 0
    refs = I.IOMMU_TEST_OP_MD_CHECK_REFS
    assert m.test(refs, length=PAGE, uptr=RAM + PAGE, refs=1)[0] == 0
    assert m.test(refs, length=PAGE, uptr=RAM, refs=0)[0] == 0
    assert m.test(pages, id=ACCESS_FD, iova=START, length=PAGE, uptr=RAM + PAGE)[0] == -errno.EBADE
    assert m.test(pages, id=ACCESS_FD, iova=START + 1, length=PAGE, uptr=0)[0] == -errno.EINVAL
    assert m.test(pages, id=ACCESS_FD, iova=START, length=8 * PAGE, uptr=0)[0] == -errno.ENOENT
    assert m.test(pages, id=ACCESS_FD + 1, iova=START, length=PAGE, uptr=0)[0] == -errno.EBADFD
    # The unmap makes the driver drop the item first.
    assert m.native(I.IOMMU_IOAS_UNMAP, I.IOAS_UNMAP, ioas_id=ioas, iova=START, length=4 * PAGE)[0] == 0
    assert m.test(refs, length=PAGE, uptr=RAM + PAGE, refs=0)[0] == 0
    assert m.test(I.IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, id=ACCESS_FD,
                  access_pages_id=0)[0] == -errno.ENOENT


def test_access_pages_needs_a_pinning_access() -> None:
    m = Mock()
    ioas = m.ioas()
    assert m.map(ioas, START, PAGE) == 0
    create_access(m, ioas, flags=0)
    assert m.test(I.IOMMU_TEST_OP_ACCESS_PAGES, id=ACCESS_FD, iova=START, length=PAGE,
                  uptr=0)[0] == -errno.EOPNOTSUPP
    assert m.test(I.IOMMU_TEST_OP_ACCESS_PAGES, id=ACCESS_FD, iova=START, length=(16 << 20) + 1,
                  uptr=0)[0] == -errno.ENOMEM


def test_replace_ioas_drops_the_items_and_moves_the_reference() -> None:
    m = Mock()
    first, second = m.ioas(), m.ioas()
    assert m.map(first, START, PAGE) == 0
    access = create_access(m, first)
    assert m.test(I.IOMMU_TEST_OP_ACCESS_PAGES, id=ACCESS_FD, iova=START, length=PAGE, uptr=RAM)[0] == 0
    assert m.test(I.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, id=ACCESS_FD, ioas_id=HOLE)[0] == -errno.ENOENT
    assert m.test(I.IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, id=ACCESS_FD, ioas_id=second)[0] == 0
    assert not access.access.items
    assert m.destroy(first) == 0 and m.destroy(second) == -errno.EBUSY


def test_nested_and_viommu_checks_find_nothing() -> None:
    m = Mock()
    out = m.mock_domain(m.ioas())[1]
    assert m.test(I.IOMMU_TEST_OP_MD_CHECK_IOTLB, id=out["out_hwpt_id"], iotlb_id=0,
                  iotlb=I.IOMMU_TEST_IOTLB_DEFAULT)[0] == -errno.ENOENT  # not a nested HWPT
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_VEVENT, dev_id=out["out_idev_id"])[0] == -errno.ENOENT
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_IOPF, dev_id=out["out_idev_id"])[0] == 0
    assert m.test(I.IOMMU_TEST_OP_TRIGGER_IOPF, dev_id=HOLE)[0] == -errno.ENOENT


def test_a_pinning_access_needs_page_alignment() -> None:
    m = Mock()
    ioas = m.ioas()
    assert m.map(ioas, START + 1, PAGE) == 0  # no domain: any byte
    assert m.test(I.IOMMU_TEST_OP_CREATE_ACCESS, id=ioas,
                  flags=I.MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)[0] == -errno.EADDRINUSE
    other = m.ioas()
    access = create_access(m, other)
    assert m.ranges(other)[1] == PAGE
    access.release()
    assert m.ranges(other)[1] == 1
    plain = m.test(I.IOMMU_TEST_OP_CREATE_ACCESS, id=ioas, flags=0)[0]
    assert isinstance(plain, AccessFile) and m.ranges(ioas)[1] == 1


def test_shared_file_pages_are_the_same_page_through_any_mapping() -> None:
    m = Mock()
    shm = (0, 1, 77)  # MAP_SHARED memory: a shmem file, mapped twice

    def shared(start: int, end: int) -> list[Any]:
        return [(RAM, RAM + 4 * PAGE, shm, 0), (RAM + 8 * PAGE, RAM + 12 * PAGE, shm, 0)]

    m.proc.caller = dataclasses.replace(m.proc.caller, shared_mappings=shared)
    ioas = m.ioas()
    hwpt = m.mock_domain(ioas)[1]["out_hwpt_id"]
    assert m.map(ioas, START, 2 * PAGE) == 0
    check = I.IOMMU_TEST_OP_MD_CHECK_MAP
    assert m.test(check, id=hwpt, iova=START + PAGE, length=PAGE, uptr=RAM + 9 * PAGE)[0] == 0
    assert m.test(check, id=hwpt, iova=START, length=PAGE, uptr=RAM + 9 * PAGE)[0] == -errno.EINVAL
    refs = I.IOMMU_TEST_OP_MD_CHECK_REFS
    assert m.test(refs, length=2 * PAGE, uptr=RAM + 8 * PAGE, refs=1)[0] == 0


# ----------------------------------------------------------------------------- the mock IOMMU

def test_hw_info_of_a_mock_device_is_the_selftest_type() -> None:
    m = Mock()
    idev = m.mock_domain(m.ioas(), I.MOCK_FLAGS_DEVICE_PASID)[1]["out_idev_id"]
    result, out = m.native(I.IOMMU_GET_HW_INFO, I.HW_INFO, dev_id=idev, data_len=16, data_uptr=ARRAY)
    assert result == 0
    assert (out["out_data_type"], out["data_len"], out["out_max_pasid_log2"]) == (0xFEEDBEEF, 8, 20)
    assert out["out_capabilities"] == I.IOMMU_HW_CAP_DIRTY_TRACKING
    assert m.proc.memory.read(ARRAY, 16) == struct.pack("<II", 0, 0xDEADBEEF) + bytes(8)


def test_dirty_tracking_domains_of_the_mock_iommu() -> None:
    m = Mock()
    ioas = m.ioas()
    out = m.mock_domain(ioas)[1]
    alloc = {"dev_id": out["out_idev_id"], "pt_id": ioas}
    result, hwpt = m.native(I.IOMMU_HWPT_ALLOC, I.HWPT_ALLOC,
                            flags=I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING | I.IOMMU_HWPT_ALLOC_NEST_PARENT, **alloc)
    assert result == 0
    hwpt_id = int(hwpt["out_hwpt_id"])
    assert m.mock_domain(hwpt_id, I.MOCK_FLAGS_DEVICE_NO_DIRTY)[0] == -errno.EINVAL  # attach_dev
    no_dirty = m.mock_domain(m.ioas(), I.MOCK_FLAGS_DEVICE_NO_DIRTY)[1]["out_idev_id"]
    assert m.native(I.IOMMU_HWPT_ALLOC, I.HWPT_ALLOC, flags=I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                    dev_id=no_dirty, pt_id=ioas)[0] == -errno.EOPNOTSUPP
    assert m.map(ioas, START, 2 * PAGE) == 0
    m.proc.memory.write(ARRAY, bytes([0b0101]))
    dirty = {"id": hwpt_id, "iova": START, "length": 4 * MOCK_IO_PAGE_SIZE,
             "page_size": MOCK_IO_PAGE_SIZE, "uptr": ARRAY}
    assert m.test(I.IOMMU_TEST_OP_DIRTY, **dirty)[0] == -errno.EINVAL  # not tracking yet
    assert m.native(I.IOMMU_HWPT_SET_DIRTY_TRACKING, I.HWPT_SET_DIRTY_TRACKING, hwpt_id=hwpt_id,
                    flags=I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE)[0] == 0
    result, after = m.test(I.IOMMU_TEST_OP_DIRTY, **dirty)
    assert result == 0 and after["out_nr_dirty"] == 2

    def bitmap(page_size: int, flags: int = I.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) -> int:
        out = ARRAY + 0x100
        m.proc.memory.write(out, bytes(8))
        assert m.native(I.IOMMU_HWPT_GET_DIRTY_BITMAP, I.HWPT_GET_DIRTY_BITMAP, hwpt_id=hwpt_id,
                        flags=flags, iova=START, length=2 * PAGE, page_size=page_size,
                        data=out)[0] == 0
        return int.from_bytes(m.proc.memory.read(out, 8), "little")

    # The mock domain's dirty bits are per 2 KiB IOPTE: IOPTEs 0 and 2 are dirty.
    assert bitmap(MOCK_IO_PAGE_SIZE) == 0b0101
    assert bitmap(PAGE) == 0b11                    # one bit per 4 KiB: both pages
    assert bitmap(MOCK_IO_PAGE_SIZE // 2) == 0b00110011   # an IOPTE covers two 1 KiB bits
    assert bitmap(MOCK_IO_PAGE_SIZE, flags=0) == 0b0101   # read and cleared
    assert bitmap(MOCK_IO_PAGE_SIZE) == 0


@pytest.mark.parametrize("device_flags, hugetlb, dirty_bits", [
    (I.MOCK_FLAGS_DEVICE_HUGE_IOVA, True, list(range(512))),   # one 1 MiB IOPTE: 512 2 KiB bits
    (I.MOCK_FLAGS_DEVICE_HUGE_IOVA, False, [0]),   # 4 KiB pages: no contiguous 1 MiB run
    (0, True, [0]),                                # a domain without the 1 MiB page size
])
def test_huge_iova_mock_domains_track_dirty_per_large_iopte(device_flags: int, hugetlb: bool,
                                                            dirty_bits: list[int]) -> None:
    """MOCK_FLAGS_DEVICE_HUGE_IOVA adds MOCK_HUGE_PAGE_SIZE to the domain's page sizes: over
    hugetlb memory the core maps 1 MiB IOPTEs, and marking one 2 KiB entry dirty (TEST_OP_DIRTY
    addresses the IOPTE holding it) dirties the whole IOPTE."""
    m = Mock()
    huge_va, mib = 0x80000000, 1 << 20
    m.proc.memory.map(huge_va, 2 * mib, page_size=2 * mib if hugetlb else PAGE)
    ioas = m.ioas()
    idev = m.mock_domain(m.ioas(), device_flags)[1]["out_idev_id"]
    result, hwpt = m.native(I.IOMMU_HWPT_ALLOC, I.HWPT_ALLOC, flags=I.IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
                            dev_id=idev, pt_id=ioas)
    assert result == 0
    hwpt_id = int(hwpt["out_hwpt_id"])
    assert m.map(ioas, START, 2 * mib, huge_va) == 0
    assert m.native(I.IOMMU_HWPT_SET_DIRTY_TRACKING, I.HWPT_SET_DIRTY_TRACKING, hwpt_id=hwpt_id,
                    flags=I.IOMMU_HWPT_DIRTY_TRACKING_ENABLE)[0] == 0
    m.proc.memory.write(ARRAY, bytes([1]))
    result, after = m.test(I.IOMMU_TEST_OP_DIRTY, id=hwpt_id, iova=START, length=8 * MOCK_IO_PAGE_SIZE,
                           page_size=MOCK_IO_PAGE_SIZE, uptr=ARRAY)
    assert result == 0 and after["out_nr_dirty"] == 1
    out = ARRAY + 0x100
    m.proc.memory.write(out, bytes(128))
    assert m.native(I.IOMMU_HWPT_GET_DIRTY_BITMAP, I.HWPT_GET_DIRTY_BITMAP, hwpt_id=hwpt_id,
                    iova=START, length=2 * mib, page_size=MOCK_IO_PAGE_SIZE, data=out)[0] == 0
    value = int.from_bytes(m.proc.memory.read(out, 128), "little")
    assert [bit for bit in range(1024) if value >> bit & 1] == dirty_bits


def test_pasid_ops_with_nothing_attached_at_the_pasid() -> None:
    m = Mock()
    out = m.mock_domain(m.ioas(), I.MOCK_FLAGS_DEVICE_PASID)[1]
    stdev, hwpt = out["out_stdev_id"], out["out_hwpt_id"]
    assert m.test(I.IOMMU_TEST_OP_PASID_DETACH, id=stdev, pasid=100)[0] == 0
    assert m.test(I.IOMMU_TEST_OP_PASID_DETACH, id=hwpt, pasid=100)[0] == -errno.ENOENT
    check = I.IOMMU_TEST_OP_PASID_CHECK_HWPT
    assert m.test(check, id=stdev, pasid=100, hwpt_id=0)[0] == 0
    assert m.test(check, id=stdev, pasid=100, hwpt_id=hwpt)[0] == -errno.EINVAL
    assert m.test(check, id=stdev, pasid=100, hwpt_id=HOLE)[0] == -errno.ENOENT
    # The RID's automatic HWPT is not PASID-compatible (test_iommufd_pasid.py has the rest).
    assert m.test(I.IOMMU_TEST_OP_PASID_ATTACH, id=stdev, pasid=100, pt_id=hwpt)[0] == -errno.EINVAL
