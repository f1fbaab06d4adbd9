"""Shared fixtures: C programs compiled at test time; no test may leave a mount behind."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from support import C_DIR, Buffer, ioasidfs_mounts


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cbuild")


@pytest.fixture(scope="session")
def compile_c(build_dir: Path) -> Callable[..., Path]:
    """Compile tests/c/NAME.c (or a given source) with gcc -Wall -Werror; returns the binary."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (scripts/test installs it)")
    built: dict[tuple[str, tuple[str, ...]], Path] = {}

    def compile_(name: str, *flags: str, source: Path | None = None) -> Path:
        key = (name, flags)
        if key not in built:
            src = source or C_DIR / f"{name}.c"
            out = build_dir / (name + ("-" + "-".join(f.strip("-") for f in flags) if flags else ""))
            subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(out), str(src), *flags],
                           check=True)
            built[key] = out
        return built[key]

    return compile_



@pytest.fixture(autouse=True)
def no_stale_mounts() -> Iterator[None]:
    """Every test must leave the machine's mount table as it found it (only mounts the tests
    made count: mountpoints under pytest's temporary directories)."""
    before = ioasidfs_mounts()
    yield
    after = ioasidfs_mounts()
    leaked = [m for m in after if m not in before and "/pytest-of-" in m.split()[1]]
    for line in leaked:
        subprocess.run(["umount", "-l", line.split()[1]], check=False)
    assert not leaked, f"a test left ioasidfs mounts behind: {leaked}"



NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


def _free_huge_pages() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                return int(line.split()[1])
    return 0


@pytest.fixture
def huge_pages() -> Iterator[None]:
    """Two free 2 MiB huge pages for the test's duration: vm.nr_hugepages is raised when fewer
    are free (root only) and put back afterwards."""
    if os.geteuid() != 0:
        pytest.skip("reserving huge pages (vm.nr_hugepages) needs root")
    with open(NR_HUGEPAGES) as f:
        before = int(f.read())
    wanted = before + max(0, 2 - _free_huge_pages())
    if wanted != before:
        with open(NR_HUGEPAGES, "w") as f:
            f.write(str(wanted))
    try:
        if _free_huge_pages() < 2:
            pytest.skip("the kernel could not reserve two huge pages")
        yield
    finally:
        if wanted != before:
            with open(NR_HUGEPAGES, "w") as f:
                f.write(str(before))


@pytest.fixture
def buf() -> Iterator[Buffer]:
    """Four pages of this process's memory (support.Buffer), unmapped after the test."""
    b = Buffer(4)
    yield b
    b.close()
