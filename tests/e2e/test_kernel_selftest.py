"""The kernel's own iommufd selftest under `ioasidfs run` (scripts/kernel_selftest), on a quick
subset: every test listed here passed when it was written, and must keep passing.

The selftest source is not part of the repository: the test runs where a kernel source (or the
subset the README's "Kernel selftest" names) is found, in $IOASIDFS_KSRC or
/var/tmp/ksrc-upstream, and is skipped elsewhere. The full run (about two minutes) is
``scripts/kernel_selftest KSRC``.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support import ROOT, ioasidfs_mounts, require_root

KSRC = Path(os.environ.get("IOASIDFS_KSRC", "/var/tmp/ksrc-upstream"))

SUBSET = ["-f", "iommufd", "-f", "vfio_compat_mock_domain", "-f", "iommufd_viommu",
          "-f", "iommufd_device_pasid",
          "-v", "mock_domain", "-v", "one_domain", "-v", "domain_dirty16k",
          "-v", "one_domain_hugepage", "-v", "domain_dirty64M_huge"]
"""Fixtures and variants quick enough for the suite (the harness includes a test when any of
its fixture, variant or name is listed)."""

MUST_PASS = {
    # the ioctl protocol, the VFIO compat ioctls
    "iommufd.simple_close", "iommufd.cmd_fail", "iommufd.cmd_length", "iommufd.cmd_ex_fail",
    "iommufd.simple_ioctls", "iommufd.unmap_cmd", "iommufd.map_cmd", "iommufd.info_cmd",
    "iommufd.set_iommu_cmd", "iommufd.vfio_ioas",
    "vfio_compat_mock_domain.Ver1v2.get_info", "vfio_compat_mock_domain.Ver1v0.map",
    "vfio_compat_mock_domain.Ver1v2.option_huge_pages",
    # a mock domain: areas, ranges, reservations, copies, hw info, nesting parents
    "iommufd_ioas.mock_domain.area", "iommufd_ioas.mock_domain.area_auto_iova",
    "iommufd_ioas.mock_domain.area_allowed", "iommufd_ioas.mock_domain.iova_ranges",
    "iommufd_ioas.mock_domain.copy_sweep", "iommufd_ioas.mock_domain.get_hw_info",
    "iommufd_ioas.mock_domain.hwpt_attach", "iommufd_ioas.mock_domain.ioas_iova_alloc",
    # nested HWPTs, HWPT_INVALIDATE, a fault queue fd installed in the caller, TRIGGER_IOPF
    "iommufd_ioas.mock_domain.alloc_hwpt_nested",
    # access fds: pins, reads and writes through an IOAS, a live child's memory
    "iommufd_ioas.mock_domain.access_pin", "iommufd_ioas.mock_domain.access_pin_unmap",
    "iommufd_ioas.mock_domain.access_rw", "iommufd_ioas.mock_domain.access_rw_unaligned",
    "iommufd_ioas.mock_domain.fork_present", "iommufd_ioas.mock_domain.fork_gone",
    # page identities, replace, HWPT rotation, dirty-tracking domains
    "iommufd_mock_domain.one_domain.basic", "iommufd_mock_domain.one_domain.ro_unshare",
    "iommufd_mock_domain.one_domain.all_aligns", "iommufd_mock_domain.one_domain.user_copy",
    "iommufd_mock_domain.one_domain.replace", "iommufd_mock_domain.one_domain.alloc_hwpt",
    "iommufd_dirty_tracking.domain_dirty16k.enforce_dirty",
    "iommufd_dirty_tracking.domain_dirty16k.set_dirty_tracking",
    "iommufd_dirty_tracking.domain_dirty16k.device_dirty_capability",
    # MAP_HUGETLB memory (the script reserves huge pages for the run): 1 MiB mock IOPTEs,
    # each dirty as a whole
    "iommufd_mock_domain.one_domain_hugepage.basic",
    "iommufd_mock_domain.one_domain_hugepage.all_aligns",
    "iommufd_dirty_tracking.domain_dirty64M_huge.get_dirty_bitmap",
    "iommufd_dirty_tracking.domain_dirty64M_huge.get_dirty_bitmap_no_clear",
    # vIOMMU objects: vDEVICEs, nested HWPTs on a vIOMMU, a vEVENTQ fd, HW queues; PASIDs
    "iommufd_viommu.mock_viommu.viommu_auto_destroy",
    "iommufd_viommu.mock_viommu.viommu_negative_tests",
    "iommufd_viommu.mock_viommu.viommu_alloc_nested_iopf",
    "iommufd_viommu.mock_viommu.vdevice_alloc",
    "iommufd_viommu.mock_viommu.vdevice_cache",
    "iommufd_viommu.mock_viommu.hw_queue",
    "iommufd_device_pasid.has_pasid.pasid_attach",
}


def test_the_kernel_selftest_subset_passes() -> None:
    require_root()
    if not (KSRC / "tools/testing/selftests/iommu/iommufd.c").is_file():
        pytest.skip(f"no kernel selftest source in {KSRC} (set IOASIDFS_KSRC)")
    with open("/proc/sys/vm/nr_hugepages") as f:
        hugepages_before = int(f.read())
    result = subprocess.run([str(ROOT / "scripts" / "kernel_selftest"), str(KSRC), "--", *SUBSET],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    verdicts = re.findall(r"^  (pass|fail|skip)\s+(\S+)$", result.stdout, re.M)
    assert verdicts, result.stdout[-4000:]
    passed = {name for status, name in verdicts if status == "pass"}
    assert MUST_PASS <= passed, sorted(MUST_PASS - passed)
    assert re.search(r"^summary: selftest_pass=\d+ fail=\d+ skip=\d+ total=\d+$", result.stdout, re.M)
    assert not ioasidfs_mounts()
    with open("/proc/sys/vm/nr_hugepages") as f:
        assert int(f.read()) == hugepages_before, "the huge page reservation was not given back"
