"""Unmodified C programs under `ioasidfs run`, compared line for line with the real kernel.

tests/expected/NAME.txt is what the kernel printed (the 6.1 VM's output, adjusted to upstream
where upstream differs: see NAME.notes.md). A line we do not match yet is listed, with the
reason and the issue that fixes it, in NAME.pending; such a line must still differ (so a fix
shows up as a failure here until its entry is removed), and every other line must be identical.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import EXPECTED_DIR, pending_lines, require_root, run_ioasidfs

PROGRAMS = ["container_basics", "ioasid_basics", "type1_flow", "type1_limits", "ioasid_container", "type1_lifetime",
            "edu_driver", "device_ioctls", "cdev_flow", "edu_eventfds", "ioasid_native"]


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_output_matches_the_kernel(name: str, compile_c) -> None:  # type: ignore[no-untyped-def]
    require_root()
    compare_with_the_kernel(name, compile_c(name))


def test_a_static_binary_gets_device_fds_without_libc(compile_c) -> None:  # type: ignore[no-untyped-def]
    """The whole edu driver, linked statically: no dynamic loader, no LD_PRELOAD-style
    interposition is possible, and GET_DEVICE_FD, SET_IRQS, region access and DMA still work,
    because ioasidfs answers at the syscall level (FUSE, and seccomp for the new fd)."""
    require_root()
    program: Path = compile_c("edu_driver", "-static")
    assert b"ld-linux" not in program.read_bytes()[:4096]  # no program interpreter
    compare_with_the_kernel("edu_driver", program)


def test_ioasid_natives_blocked_transfers_are_iommu_faults(compile_c, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """ioasid_native's two transfers to and from the IOVA IOMMU_IOAS_UNMAP removed are IOMMU
    faults there, a write then a read, and nothing else the program does faults. The program
    itself cannot see them (the kernel only logs them: "DMAR: [DMA Write NO_PASID] ... fault
    addr 0x2000"); the trace does."""
    require_root()
    trace = tmp_path / "trace.json"
    result = run_ioasidfs(["run", "--trace", str(trace), "--", str(compile_c("ioasid_native"))])
    assert result.returncode == 0, result.stderr
    faults = [json.loads(line) for line in trace.read_text().splitlines() if '"iommu_fault"' in line]
    assert [(f["device"], f["access"], f["iova"], f["length"], f["reason"]) for f in faults] == [
        ("0000:00:01.0", "write", 0x2000, 0x800, "not-mapped"),
        ("0000:00:01.0", "read", 0x2000, 0x800, "not-mapped"),
    ]


def compare_with_the_kernel(name: str, program: Path) -> None:
    result = run_ioasidfs(["run", "--", str(program)])
    assert result.returncode == 0, result.stderr
    expected = (EXPECTED_DIR / f"{name}.txt").read_text().splitlines()
    got = result.stdout.splitlines()
    assert len(got) == len(expected), f"{len(got)} lines printed, the kernel printed {len(expected)}"
    pending = pending_lines(name)
    mismatches = []
    fixed = []
    for number, (want, have) in enumerate(zip(expected, got), 1):
        if want in pending:
            if want == have:
                fixed.append(f"line {number} now matches, remove it from {name}.pending: {want}")
        elif want != have:
            mismatches.append(f"line {number}: kernel {want!r}, ours {have!r}")
    assert not mismatches, "\n".join(mismatches)
    assert not fixed, "\n".join(fixed)
