"""Helpers shared by the tests (importable as ``support``: tests/ is on sys.path)."""
from __future__ import annotations

import ctypes
import mmap
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytest

from ioasidfs.client import ProcessMemory, locked_pages, memlock_limit, start_time, user_range_ok
from ioasidfs.engine import Caller

PAGE = 4096
ROOT = Path(__file__).resolve().parent.parent
C_DIR = ROOT / "tests" / "c"
EXPECTED_DIR = ROOT / "tests" / "expected"
IOASIDFS = [sys.executable, "-m", "ioasidfs"]


def ioasidfs_mounts() -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line for line in f if line.split()[2] == "fuse.ioasidfs"]


def run_ioasidfs(args: Sequence[str], *, timeout: float = 120, input: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ioasidfs ARGS`` to completion, capturing text output."""
    return subprocess.run([*IOASIDFS, *args], capture_output=True, text=True, timeout=timeout,
                          input=input, cwd=ROOT, env=env)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mount(2) and mount namespaces)")


def pending_lines(name: str, transport: str = "") -> dict[str, str]:
    """tests/expected/NAME.pending (NAME.cuse.pending with ``transport="cuse"``): expected
    lines we do not match yet -> why (one per line: `<expected line>  # reason`; `#` lines are
    comments)."""
    path = EXPECTED_DIR / (f"{name}.{transport}.pending" if transport else f"{name}.pending")
    pending: dict[str, str] = {}
    if path.exists():
        for raw in path.read_text().splitlines():
            if raw.strip() and not raw.startswith("#"):
                line, _, why = raw.partition("  # ")
                pending[line] = why
    return pending


def this_process_caller(resolve_fd: Callable[[int], object]) -> Caller:
    """This test process as the daemon sees a client: its memory through process_vm_readv/
    writev, its pages, limits and start time from /proc (so ioctl arguments, mapped buffers
    and device DMA all live in real memory; process_vm_* to oneself needs no privilege)."""
    pid = os.getpid()
    return Caller(pid=pid, memory=ProcessMemory(pid), resolve_fd=resolve_fd,
                  memlock_limit=lambda: memlock_limit(pid),
                  check_user_range=lambda v, n, w: user_range_ok(pid, v, n, w),
                  locked_pages=lambda: locked_pages(pid),
                  start_time=lambda: start_time(pid), uid=os.getuid)


class Buffer:
    """Page-aligned anonymous memory of this process, and its address: what a test maps into
    an IOAS or a container so that device DMA lands in real memory (``buf`` in conftest)."""

    def __init__(self, pages: int) -> None:
        self.map = mmap.mmap(-1, pages * PAGE)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))

    def at(self, offset: int, n: int) -> bytes:
        return self.map[offset:offset + n]

    def close(self) -> None:
        """Drop the ctypes view first: mmap refuses to close while a buffer export lives."""
        del self.addr
        import gc
        gc.collect()
        self.map.close()
