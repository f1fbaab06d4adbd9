"""`ioasidfs mount` and `ioasidfs umount`: a foreground daemon that never leaves a stale mount."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from support import IOASIDFS, ROOT, ioasidfs_mounts, require_root, run_ioasidfs

VFIO_GET_API_VERSION = 0x3B64
VFIO_CHECK_EXTENSION = 0x3B65


def _mounted(path: Path) -> bool:
    return any(line.split()[1] == str(path) for line in ioasidfs_mounts())


def _wait_for(condition, what: str, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    require_root()
    path = tmp_path / "mnt"
    path.mkdir()
    try:
        yield path
    finally:
        if _mounted(path):
            subprocess.run(["umount", "-l", str(path)], check=False)


def _start(mountpoint: Path, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*IOASIDFS, "mount", *extra, str(mountpoint)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    _wait_for(lambda: _mounted(mountpoint) or proc.poll() is not None, "the mount")
    assert proc.poll() is None, proc.communicate()
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_mount_serves_ioctls_and_sigterm_unmounts(mountpoint: Path) -> None:
    proc = _start(mountpoint)
    try:
        fd = os.open(mountpoint / "vfio" / "vfio", os.O_RDWR)
        try:
            assert fcntl.ioctl(fd, VFIO_GET_API_VERSION) == 0
            assert fcntl.ioctl(fd, VFIO_CHECK_EXTENSION, 1) == 1
            with pytest.raises(OSError) as excinfo:
                os.read(fd, 8)
            assert excinfo.value.errno == 22  # EINVAL: the container has no read
        finally:
            os.close(fd)
        # devfds/ carries device fds, sys/ is the fake sysfs: neither is bound into /dev by run.
        assert sorted(os.listdir(mountpoint)) == ["devfds", "faults", "ioasid", "iommu", "sys", "vfio"]
        # The IOMMU fault log: read-only text, empty while no device DMA was blocked.
        assert (mountpoint / "faults").read_bytes() == b""
        assert (mountpoint / "faults").stat().st_mode & 0o777 == 0o444
        with pytest.raises(PermissionError):
            os.open(mountpoint / "faults", os.O_WRONLY)
        assert sorted(os.listdir(mountpoint / "vfio")) == ["1", "2", "3", "devices", "vfio"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.communicate()
        assert not _mounted(mountpoint)
    finally:
        _stop(proc)


def test_killed_daemon_leaves_no_mount(mountpoint: Path) -> None:
    proc = _start(mountpoint)
    try:
        proc.kill()  # SIGKILL to the daemon alone: its watchdog must take the mount down
        proc.wait()
        _wait_for(lambda: not _mounted(mountpoint), "the watchdog to unmount")
    finally:
        _stop(proc)


def test_umount_cleans_up_after_daemon_and_watchdog_are_killed(mountpoint: Path) -> None:
    proc = _start(mountpoint)
    watchdogs = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                 text=True).stdout.split()]
    try:
        for pid in watchdogs + [proc.pid]:
            os.kill(pid, signal.SIGKILL)  # the watchdog runs in a session of its own
        proc.wait()
        time.sleep(0.2)
        assert _mounted(mountpoint), "nothing was left to clean up"
        result = run_ioasidfs(["umount", str(mountpoint)])
        assert result.returncode == 0, result.stderr
        assert not _mounted(mountpoint)
    finally:
        _stop(proc)


def test_umount_refuses_what_is_not_ours(tmp_path: Path) -> None:
    require_root()
    result = run_ioasidfs(["umount", str(tmp_path)])
    assert result.returncode == 1
    assert "not an ioasidfs mount" in result.stderr
