"""`ioasidfs run` without root: a user namespace mapping only the caller's uid.

The suite runs as root, so this test drops to `nobody` with setpriv. Our interpreter and venv may
live where `nobody` cannot read (under /root), so it gets a world-readable copy of the package
and of trio's pure-Python dependencies, run by the system's python3.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from support import ROOT, ioasidfs_mounts, require_root

SYSTEM_PYTHON = "/usr/bin/python3"
PURE_PYTHON_DEPS = ["trio", "attr", "attrs", "sortedcontainers", "idna", "outcome", "sniffio"]


def _world_readable_copy(dest: Path) -> Path:
    site = dest / "site"
    shutil.copytree(ROOT / "ioasidfs", site / "ioasidfs",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name in PURE_PYTHON_DEPS:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        shutil.copytree(Path(spec.origin).parent, site / name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return site


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory other users can reach (pytest's own is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="ioasidfs-rootless-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_run_as_an_unprivileged_user(shared_tmp: Path, compile_c) -> None:  # type: ignore[no-untyped-def]
    require_root()
    tmp_path = shared_tmp
    if shutil.which("setpriv") is None or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs setpriv and the system's python3")
    version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 11))"],
                             capture_output=True, text=True).stdout.strip()
    if version != "True":
        pytest.skip("the system's python3 is older than 3.11")
    site = _world_readable_copy(tmp_path / "copy")
    program = tmp_path / "api_probe"
    shutil.copy(compile_c("api_probe"), program)
    program.chmod(0o755)
    for parent in [tmp_path, *tmp_path.parents]:
        if not os.stat(parent).st_mode & 0o001:
            pytest.skip(f"{parent} is not searchable by other users")
    script = f"id -u; stat -c '%U %a' /dev/vfio/vfio /dev/vfio/1; {program}"
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         SYSTEM_PYTHON, "-m", "ioasidfs", "run", "--", "sh", "-c", script],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "65534",  # the program keeps its own uid
        "nobody 666", "nobody 600",  # the nodes belong to the user who ran it
        "fd=3", "api=0", "type1v2=1", "ioasid_api=0",
    ]


def test_mount_as_an_unprivileged_user_through_fusermount3(shared_tmp: Path) -> None:
    require_root()
    if shutil.which("setpriv") is None or shutil.which("fusermount3") is None:
        pytest.skip("needs setpriv and fusermount3 (Debian: fuse3; scripts/test installs it)")
    site = _world_readable_copy(shared_tmp / "copy")
    mountpoint = shared_tmp / "mnt"
    mountpoint.mkdir()
    os.chown(mountpoint, 65534, 65534)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SYSTEM_PYTHON]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site)}
    daemon = subprocess.Popen([*as_nobody, "-m", "ioasidfs", "mount", str(mountpoint)], env=env,
                              cwd=shared_tmp, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not any(line.split()[1] == str(mountpoint) for line in ioasidfs_mounts()):
            assert daemon.poll() is None and time.monotonic() < deadline, daemon.communicate()
            time.sleep(0.05)
        probe = ("import os, fcntl, struct\n"
                 f"g = os.open('{mountpoint}/vfio/1', os.O_RDWR)\n"
                 "buf = bytearray(struct.pack('<II', 8, 0))\n"
                 "fcntl.ioctl(g, 0x3B67, buf)\n"
                 f"print(os.stat('{mountpoint}/vfio/1').st_uid, struct.unpack('<II', buf)[1])\n")
        result = subprocess.run([*as_nobody, "-c", probe], env=env, capture_output=True, text=True,
                                timeout=60, cwd=shared_tmp)
        assert (result.returncode, result.stdout) == (0, "65534 1\n"), result.stderr
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert not any(line.split()[1] == str(mountpoint) for line in ioasidfs_mounts())
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
