"""`ioasidfs run` traps the ioctls the VFS answers itself for a regular file (seccomp).

Our nodes are FUSE regular files; the kernel's are character devices whose driver sees e.g.
FIONREAD. Under `ioasidfs run` an unmodified program must get the char-device answers, while the
same ioctls on its other fds (a pipe) still run for real, and it inherits no fd of ours.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import ROOT, require_root, run_ioasidfs

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def root() -> None:
    require_root()


def compile_program(tmp_path: Path, name: str, source: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = tmp_path / f"{name}.c"
    src.write_text(textwrap.dedent(source))
    out = tmp_path / name
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(out), str(src)], check=True)
    return out


FIONREAD_PROGRAM = r"""
    #define _GNU_SOURCE
    #include <errno.h>
    #include <fcntl.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/ioctl.h>
    #include <unistd.h>

    static void report(const char *what, int fd) {
        int avail = -1;
        errno = 0;
        int r = ioctl(fd, FIONREAD, &avail);
        printf("%s: FIONREAD = %d %s avail=%d\n", what, r, r < 0 ? strerrorname_np(errno) : "-", avail);
    }

    int main(void) {
        int container = open("/dev/vfio/vfio", O_RDWR);
        printf("first open: fd %d\n", container);
        int group = open("/dev/vfio/1", O_RDWR);
        int iommu = open("/dev/iommu", O_RDWR);
        int p[2];
        if (group < 0 || iommu < 0 || pipe(p) || write(p[1], "hello", 5) != 5)
            return 1;
        report("container", container);
        report("group", group);
        report("iommu", iommu);
        report("pipe", p[0]);
        return 0;
    }
"""


def test_fionread_gets_the_char_device_answers(tmp_path: Path) -> None:
    program = compile_program(tmp_path, "fionread", FIONREAD_PROGRAM)
    result = run_ioasidfs(["run", "--", str(program)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "first open: fd 3",  # nothing of ours leaked into the program
        "container: FIONREAD = -1 EINVAL avail=-1",  # vfio_fops_unl_ioctl, no IOMMU driver yet
        "group: FIONREAD = -1 ENOTTY avail=-1",  # vfio_group_fops_unl_ioctl default
        "iommu: FIONREAD = -1 ENOTTY avail=-1",  # iommufd_fops_ioctl default
        "pipe: FIONREAD = 0 - avail=5",  # not ours: the real syscall ran (CONTINUE)
    ]


def test_trapped_ioctls_are_traced(tmp_path: Path) -> None:
    program = compile_program(tmp_path, "fionread", FIONREAD_PROGRAM)
    result = run_ioasidfs(["run", "--trace", "-", "--", str(program)])
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any("/dev/vfio/vfio FIONREAD(" in line and "= -1 EINVAL" in line for line in lines), lines
    assert any("/dev/vfio/1 FIONREAD(" in line and "= -1 ENOTTY" in line for line in lines), lines
    assert not any("FIONREAD" in line and "pipe" in line for line in lines)


# Every VFS-level command, with good and bad arguments, on any path given. /dev/null is a
# devtmpfs char device without ioctls (its driver answer is ENOTTY, like a group's or an
# iommufd's for these numbers), so on /dev/null and on our nodes the output must be identical.
PROBE_PROGRAM = r"""
    #define _GNU_SOURCE
    #include <errno.h>
    #include <fcntl.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <sys/ioctl.h>
    #include <unistd.h>
    #include <linux/fs.h>
    #include <linux/fiemap.h>

    struct resv { short type, whence; long long start, len; int sysid; unsigned pid; int pad[4]; };
    #define RESVSP _IOW('X', 40, struct resv)
    #define RESVSP64 _IOW('X', 42, struct resv)
    #define UNRESVSP _IOW('X', 41, struct resv)
    #define UNRESVSP64 _IOW('X', 43, struct resv)
    #define ZERO_RANGE _IOW('X', 57, struct resv)
    #define GETFSUUID _IOR(0x15, 0, char[17])
    #define GETFSSYSFSPATH _IOR(0x15, 1, char[129])
    #define QSIZE 0x5460

    static unsigned char buf[8192];
    static void show(const char *what, long r) {
        printf("%-28s = %ld %s", what, r, r < 0 ? strerrorname_np(errno) : "");
        if (r >= 0) { printf(" out="); for (int i = 0; i < 17; i++) printf("%02x", buf[i]); }
        printf("\n");
    }
    #define P(what, cmd, arg) do { memset(buf, 0, sizeof buf); prep; errno = 0; \
        show(what, ioctl(fd, cmd, arg)); } while (0)

    int main(int argc, char **argv) {
        for (int a = 1; a < argc; a++) {
            int fd = open(argv[a], O_RDWR);
            if (fd < 0) { perror(argv[a]); return 1; }
            printf("== %s\n", a == 1 ? "reference" : "ours");
            struct fsxattr *x = (void *)buf;
            struct file_clone_range *cr = (void *)buf;
            struct file_dedupe_range *dr = (void *)buf;
            #define prep
            P("FIOQSIZE", QSIZE, buf);
            P("FIGETBSZ", FIGETBSZ, buf);
            P("FS_IOC_FIEMAP", FS_IOC_FIEMAP, buf);
            P("FIONREAD", FIONREAD, buf);
            P("FIBMAP", FIBMAP, buf);
            P("GETFLAGS", FS_IOC_GETFLAGS, buf);
            P("GETFLAGS(NULL)", FS_IOC_GETFLAGS, NULL);
            P("SETFLAGS(NULL)", FS_IOC_SETFLAGS, NULL);
            P("SETFLAGS", FS_IOC_SETFLAGS, buf);
            P("FSGETXATTR", FS_IOC_FSGETXATTR, buf);
            P("FSSETXATTR(NULL)", FS_IOC_FSSETXATTR, NULL);
            P("FSSETXATTR(0)", FS_IOC_FSSETXATTR, buf);
            #undef prep
            #define prep x->fsx_xflags = 0x4
            P("FSSETXATTR(xflags=4)", FS_IOC_FSSETXATTR, buf);
            #undef prep
            #define prep
            P("GETFSUUID", GETFSUUID, buf);
            P("GETFSUUID(NULL)", GETFSUUID, NULL);
            P("GETFSSYSFSPATH", GETFSSYSFSPATH, buf);
            P("RESVSP", RESVSP, buf);
            P("RESVSP64", RESVSP64, buf);
            P("UNRESVSP", UNRESVSP, buf);
            P("UNRESVSP64", UNRESVSP64, buf);
            P("ZERO_RANGE", ZERO_RANGE, buf);
            P("FICLONE(self)", FICLONE, fd);
            P("FICLONE(-1)", FICLONE, -1);
            P("FICLONE(2^32+self)", FICLONE, (1UL << 32) + fd);
            P("FICLONE(pipe)", FICLONE, 0);  /* stdin: a pipe under subprocess */
            P("FICLONERANGE(NULL)", FICLONERANGE, NULL);
            #undef prep
            #define prep cr->src_fd = fd; cr->src_offset = -1
            P("FICLONERANGE(offset -1)", FICLONERANGE, buf);
            #undef prep
            #define prep cr->src_fd = fd
            P("FICLONERANGE(self)", FICLONERANGE, buf);
            #undef prep
            #define prep
            P("FIDEDUPERANGE(NULL)", FIDEDUPERANGE, NULL);
            #undef prep
            #define prep dr->dest_count = 200
            P("FIDEDUPERANGE(200)", FIDEDUPERANGE, buf);
            #undef prep
            #define prep dr->dest_count = 1; dr->info[0].dest_fd = fd
            P("FIDEDUPERANGE(1)", FIDEDUPERANGE, buf);
            #undef prep
            #define prep
            P("FIOASYNC(0)", FIOASYNC, buf);
            P("FIONBIO(0)", FIONBIO, buf);
            P("FIOCLEX", FIOCLEX, 0);
            close(fd);
        }
        return 0;
    }
"""


@pytest.mark.parametrize("node", ["/dev/vfio/1", "/dev/iommu"])
def test_vfs_answers_match_a_real_char_device(tmp_path: Path, node: str) -> None:
    program = compile_program(tmp_path, "vfsprobe", PROBE_PROGRAM)
    result = run_ioasidfs(["run", "--", str(program), "/dev/null", node], input="")
    assert result.returncode == 0, result.stderr
    out = result.stdout.split("== ours\n")
    assert len(out) == 2, result.stdout
    reference, ours = out[0].removeprefix("== reference\n"), out[1]
    assert ours.splitlines() == reference.splitlines()
    # The probe is only worth something if it tells the two file types apart:
    assert "FIONREAD                     = -1 ENOTTY" in ours
    assert "FIOQSIZE                     = -1 ENOTTY" in ours
    assert "FICLONE(self)                = -1 EINVAL" in ours
    assert "FICLONE(pipe)                = -1 EXDEV" in ours


CLONE_SOURCES = r"""
    #define _GNU_SOURCE
    #include <errno.h>
    #include <fcntl.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/ioctl.h>
    #include <unistd.h>
    #include <linux/fs.h>

    int main(int argc, char **argv) {
        int group = open("/dev/vfio/1", O_RDWR);
        const char *sources[] = { "/dev/vfio", "/dev/vfio/vfio", "/dev/null", argv[1] };
        for (int i = 0; i < 4; i++) {
            int src = open(sources[i], O_RDONLY);
            errno = 0;
            int r = ioctl(group, FICLONE, src);
            printf("%s: %d %s\n", i == 3 ? "tmpfile" : sources[i], r, strerrorname_np(errno));
            close(src);
        }
        errno = 0;
        int r = ioctl(group, FIFREEZE, 0);
        printf("FIFREEZE: %d %s\n", r, strerrorname_np(errno));
        errno = 0;
        r = ioctl(group, FITHAW, 0);
        printf("FITHAW: %d %s\n", r, strerrorname_np(errno));
        return 0;
    }
"""


def test_clone_sources_and_freezing(tmp_path: Path) -> None:
    program = compile_program(tmp_path, "clone_sources", CLONE_SOURCES)
    other = tmp_path / "file"
    other.write_text("x")
    result = run_ioasidfs(["run", "--", str(program), str(other)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "/dev/vfio: -1 EISDIR",  # our directory: on devtmpfs, like the target
        "/dev/vfio/vfio: -1 EINVAL",  # same filesystem, but a char device is not regular
        "/dev/null: -1 EINVAL",  # the machine's devtmpfs
        "tmpfile: -1 EXDEV",  # elsewhere
        "FIFREEZE: -1 EOPNOTSUPP",  # root may try; devtmpfs cannot freeze
        "FITHAW: -1 EINVAL",  # ... and is not frozen
    ]


def test_the_program_keeps_its_privileges(tmp_path: Path) -> None:
    # Root installs the filter with CAP_SYS_ADMIN, so no NO_NEW_PRIVS: setuid programs still work.
    result = run_ioasidfs(["run", "--", "grep", "-E", "^(NoNewPrivs|Seccomp):", "/proc/self/status"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NoNewPrivs:", "0", "Seccomp:", "2"]


def test_a_file_that_cannot_be_executed_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = run_ioasidfs(["run", "--", str(script)])
    assert result.returncode == 126
    assert "Permission denied" in result.stderr


GET_DEVICE_FD_PROGRAM = r"""
    #define _GNU_SOURCE
    #include <errno.h>
    #include <fcntl.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/ioctl.h>
    #include <unistd.h>
    #include <linux/vfio.h>

    int main(void) {
        int container = open("/dev/vfio/vfio", O_RDWR);
        int group = open("/dev/vfio/1", O_RDWR);
        ioctl(group, VFIO_GROUP_SET_CONTAINER, &container);
        ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
        errno = 0;
        int dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, "0000:00:01.0");
        printf("group=%d dev=%d %s\n", group, dev, dev < 0 ? strerrorname_np(errno) : "");
        if (dev < 0)
            return 1;
        char link[256] = {0}, path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", dev);
        readlink(path, link, sizeof link - 1);
        printf("cloexec=%d accmode=%d link=%s\n", !!(fcntl(dev, F_GETFD) & FD_CLOEXEC),
               fcntl(dev, F_GETFL) & O_ACCMODE, strrchr(link, '/') ? strrchr(link, '/') : link);
        struct vfio_device_info info = { .argsz = sizeof info };
        int r = ioctl(dev, VFIO_DEVICE_GET_INFO, &info);
        printf("info=%d flags=%#x regions=%u irqs=%u\n", r, info.flags, info.num_regions,
               info.num_irqs);
        errno = 0;
        r = ioctl(dev, FIONREAD, &r);
        printf("fionread=%d %s\n", r, strerrorname_np(errno));
        r = ioctl(group, VFIO_GROUP_UNSET_CONTAINER);
        printf("unset=%d %s\n", r, strerrorname_np(errno));
        close(dev);
        printf("unset=%d\n", ioctl(group, VFIO_GROUP_UNSET_CONTAINER));
        return 0;
    }
"""


def test_get_device_fd_installs_a_device_fd_in_the_caller(tmp_path: Path) -> None:
    """VFIO_GROUP_GET_DEVICE_FD is trapped, answered by the engine and the new file installed
    with SECCOMP_IOCTL_NOTIF_ADDFD: the ioctl itself returns the lowest free fd."""
    program = compile_program(tmp_path, "get_device_fd", GET_DEVICE_FD_PROGRAM)
    result = subprocess.run([sys.executable, "-m", "ioasidfs", "run", "--", str(program)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "group=4 dev=5 ",  # the lowest free fd, returned by the ioctl itself
        "cloexec=1 accmode=2 link=/0000:00:01.0",  # O_CLOEXEC and O_RDWR, as the kernel's
        "info=0 flags=0x2 regions=9 irqs=5",  # a vfio-pci device file, served over FUSE
        "fionread=-1 ENOTTY",  # and trapped like any other of ours
        "unset=-1 EBUSY",  # the device fd holds the container
        "unset=0",  # closed: released at once, as the kernel's close() does
    ]
    assert os.path.exists(program)
