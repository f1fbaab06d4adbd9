"""Helpers shared by the end-to-end tests (importable as ``support``: tests/ is on sys.path)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

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
