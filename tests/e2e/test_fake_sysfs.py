"""The fake sysfs from a program's point of view: under `ioasidfs run` (bound over /sys in the
namespace, as root and as nobody) and under `ioasidfs mount` (at MOUNTPOINT/sys), read with the
calls real drivers use: fopen of attributes, pread of config, readlink, realpath, readdir."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from support import IOASIDFS, ROOT, ioasidfs_mounts, require_root, run_ioasidfs

PROBE = r"""
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *root;  /* "" under ioasidfs run, MOUNTPOINT under ioasidfs mount */

static const char *p(const char *path)
{
	static char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s%s", root, path);
	return buf;
}

static void attr(const char *path)
{
	char line[256] = "";
	FILE *f = fopen(p(path), "r");
	if (!f || !fgets(line, sizeof(line), f))
		printf("%s: -1 %d\n", path, errno);
	else
		printf("%s: %s", path, line);
	if (f)
		fclose(f);
}

static void link_(const char *path)
{
	char target[PATH_MAX], real[PATH_MAX];
	struct stat st;
	ssize_t n = readlink(p(path), target, sizeof(target) - 1);
	if (n < 0 || lstat(p(path), &st) || !realpath(p(path), real)) {
		printf("%s: -1 %d\n", path, errno);
		return;
	}
	target[n] = 0;
	printf("%s -> %s = %s (lnk %d size %lld)\n", path, target, real + strlen(root),
	       S_ISLNK(st.st_mode), (long long)st.st_size);
}

static void dir(const char *path)
{
	struct dirent *de;
	DIR *d = opendir(p(path));
	printf("%s:", path);
	if (!d) {
		printf(" -1 %d\n", errno);
		return;
	}
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			printf(" %s/%d", de->d_name, de->d_type);
	printf("\n");
	closedir(d);
}

int main(int argc, char **argv)
{
	unsigned char cfg[512];
	ssize_t n;
	int fd;

	root = argc > 1 ? argv[1] : "";
	attr("/sys/bus/pci/devices/0000:00:01.0/vendor");
	attr("/sys/bus/pci/devices/0000:00:01.0/class");
	attr("/sys/bus/pci/devices/0000:00:01.0/numa_node");
	link_("/sys/bus/pci/devices/0000:00:01.0");
	link_("/sys/bus/pci/devices/0000:00:01.0/iommu_group");
	link_("/sys/bus/pci/devices/0000:00:01.0/driver");
	link_("/sys/bus/pci/drivers/vfio-pci/0000:00:01.0");
	link_("/sys/kernel/iommu_groups/3/devices/0000:00:03.1");
	dir("/sys/kernel/iommu_groups/3/devices");
	dir("/sys/bus/pci/devices/0000:00:01.0/vfio-dev");
	attr("/sys/kernel/iommu_groups/1/reserved_regions");
	attr("/sys/kernel/iommu_groups/1/type");
	fd = open(p("/sys/bus/pci/devices/0000:00:01.0/config"), O_RDONLY);
	n = pread(fd, cfg, sizeof(cfg), 0);
	printf("config: %zd bytes, %02x %02x %02x %02x\n", n, cfg[0], cfg[1], cfg[2], cfg[3]);
	close(fd);
	fd = open(p("/sys/bus/pci/devices/0000:00:01.0/vendor"), O_WRONLY);
	printf("write open of vendor: %d %d\n", fd < 0 ? -1 : 0, fd < 0 ? errno : 0);
	return 0;
}
"""


def expected(config_bytes: int) -> list[str]:
    dev = "/sys/devices/pci0000:00/0000:00:01.0"
    return [
        "/sys/bus/pci/devices/0000:00:01.0/vendor: 0x1234",
        "/sys/bus/pci/devices/0000:00:01.0/class: 0x00ff00",
        "/sys/bus/pci/devices/0000:00:01.0/numa_node: -1",
        f"/sys/bus/pci/devices/0000:00:01.0 -> ../../../devices/pci0000:00/0000:00:01.0 = {dev} "
        "(lnk 1 size 40)",
        "/sys/bus/pci/devices/0000:00:01.0/iommu_group -> ../../../kernel/iommu_groups/1 = "
        "/sys/kernel/iommu_groups/1 (lnk 1 size 30)",
        "/sys/bus/pci/devices/0000:00:01.0/driver -> ../../../bus/pci/drivers/vfio-pci = "
        "/sys/bus/pci/drivers/vfio-pci (lnk 1 size 33)",
        "/sys/bus/pci/drivers/vfio-pci/0000:00:01.0 -> ../../../../devices/pci0000:00/0000:00:01.0"
        f" = {dev} (lnk 1 size 43)",
        "/sys/kernel/iommu_groups/3/devices/0000:00:03.1 -> ../../../../devices/pci0000:00/"
        "0000:00:03.1 = /sys/devices/pci0000:00/0000:00:03.1 (lnk 1 size 43)",
        "/sys/kernel/iommu_groups/3/devices: 0000:00:03.0/10 0000:00:03.1/10",
        "/sys/bus/pci/devices/0000:00:01.0/vfio-dev: vfio0/4",
        "/sys/kernel/iommu_groups/1/reserved_regions: 0x00000000fee00000 0x00000000feefffff msi",
        "/sys/kernel/iommu_groups/1/type: DMA",
        f"config: {config_bytes} bytes, 34 12 e8 11",
        "write open of vendor: -1 13",  # EACCES, even for root
    ]


@pytest.fixture
def probe(tmp_path: Path, compile_c) -> Path:  # type: ignore[no-untyped-def]
    source = tmp_path / "sysfs_probe.c"
    source.write_text(PROBE)
    binary: Path = compile_c("sysfs_probe", source=source)
    return binary


def test_run_binds_the_fake_sysfs_over_sys(probe: Path) -> None:
    require_root()
    before = _sys_mounts()
    result = run_ioasidfs(["run", "--", str(probe)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected(256)
    assert _sys_mounts() == before  # the binds lived in the namespace only


def _sys_mounts() -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line for line in f if line.split()[1].startswith("/sys")]


def test_run_as_nobody_sees_64_bytes_of_config(tmp_path: Path, probe: Path) -> None:
    require_root()
    from test_rootless import SYSTEM_PYTHON, _world_readable_copy
    if shutil.which("setpriv") is None or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs setpriv and the system's python3")
    shared = Path("/tmp") / f"ioasidfs-sysfs-{os.getpid()}"
    shared.mkdir(mode=0o755)
    try:
        shared.chmod(0o755)
        site = _world_readable_copy(shared / "copy")
        program = shared / "sysfs_probe"
        shutil.copy(probe, program)
        program.chmod(0o755)
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             SYSTEM_PYTHON, "-m", "ioasidfs", "run", "--", str(program)],
            capture_output=True, text=True, timeout=120, cwd=shared,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(site)})
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == expected(64)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    require_root()
    path = tmp_path / "mnt"
    path.mkdir()
    try:
        yield path
    finally:
        if any(line.split()[1] == str(path) for line in ioasidfs_mounts()):
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_mount_shows_the_fake_sysfs_under_sys(mountpoint: Path, probe: Path) -> None:
    proc = subprocess.Popen([*IOASIDFS, "mount", str(mountpoint)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not any(line.split()[1] == str(mountpoint) for line in ioasidfs_mounts()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        result = subprocess.run([str(probe), str(mountpoint)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == expected(256)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


FALLBACK = """
import os, sys
from ioasidfs.fuse.mount import CLONE_NEWNS, MS_PRIVATE, MS_REC, sys_mount, unshare
from ioasidfs.namespace import bind_sysfs
unshare(CLONE_NEWNS)
sys_mount("none", "/", None, MS_REC | MS_PRIVATE)
base = sys.argv[1]
bound = bind_sysfs(base + "/staging", ("devices/pci0000:00", "bus/pci/devices",
                                       "bus/pci/drivers", "kernel/iommu_groups"),
                   root=base + "/sys")
print(sorted(os.path.relpath(b, base) for b in bound))
print(sorted(os.listdir(base + "/sys/kernel")))
print(os.listdir(base + "/sys/kernel/iommu_groups"), os.listdir(base + "/sys/bus/pci/drivers"))
print(open(base + "/sys/kernel/mm/keep").read())
"""


def test_missing_mountpoints_get_a_tmpfs_over_their_parent(tmp_path: Path) -> None:
    """A machine without /sys/kernel/iommu_groups (or without a PCI bus): the parent is
    covered by a tmpfs holding its original entries and ours; nothing is created in it."""
    require_root()
    fake = tmp_path / "sys"
    (fake / "devices" / "pci0000:00").mkdir(parents=True)
    (fake / "bus" / "pci" / "devices").mkdir(parents=True)  # no drivers/
    (fake / "kernel" / "mm").mkdir(parents=True)
    (fake / "kernel" / "mm" / "keep").write_text("original")
    (fake / "kernel" / "notes").write_text("")
    staging = tmp_path / "staging" / "sys"
    for path in ("devices/pci0000:00/x", "bus/pci/devices/x", "bus/pci/drivers/vfio-pci",
                 "kernel/iommu_groups/1"):
        (staging / path).mkdir(parents=True)
    result = subprocess.run([sys.executable, "-c", FALLBACK, str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "['sys/bus/pci/devices', 'sys/bus/pci/drivers', 'sys/devices/pci0000:00', "
        "'sys/kernel/iommu_groups']",
        "['iommu_groups', 'mm', 'notes']",
        "['1'] ['vfio-pci']",
        "original",
    ]
    # outside that namespace nothing changed
    assert sorted(os.listdir(fake / "kernel")) == ["mm", "notes"]
    assert sorted(os.listdir(fake / "bus" / "pci")) == ["devices"]
