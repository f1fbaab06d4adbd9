"""`ioasidfs run` answers mmap() of our nodes as the kernel's character devices do (seccomp).

FUSE answers mmap of our direct-io files itself: ENODEV for MAP_SHARED, and a page-cache mapping
for MAP_PRIVATE. The kernel's nodes say ENODEV (the container and groups have no .mmap), EINVAL
(vfio_device_fops_mmap on a cdev not bound to an iommufd) or, upstream, iommufd's own answers
(EINVAL for a private mapping, ENXIO where nothing was allocated). Every other mmap -- a regular
file, anonymous memory, the program's own shared libraries -- must still work.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable

import pytest

from support import require_root, run_ioasidfs

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def root() -> None:
    require_root()


MMAP_PROGRAM = r"""
    #define _GNU_SOURCE
    #include <errno.h>
    #include <fcntl.h>
    #include <stdio.h>
    #include <string.h>
    #include <sys/mman.h>
    #include <unistd.h>

    static void try_map(const char *what, int fd, int flags, int prot) {
        errno = 0;
        void *p = mmap(NULL, 4096, prot, flags, fd, 0);
        if (p == MAP_FAILED) {
            printf("%s: %s = -1 %s\n", what, flags & MAP_SHARED ? "MAP_SHARED" : "MAP_PRIVATE",
                   strerrorname_np(errno));
        } else {
            printf("%s: %s = mapped\n", what, flags & MAP_SHARED ? "MAP_SHARED" : "MAP_PRIVATE");
            munmap(p, 4096);
        }
    }

    int main(int argc, char **argv) {
        static const char *nodes[] = {"/dev/vfio/vfio", "/dev/vfio/1", "/dev/iommu",
                                      "/dev/ioasid", "/dev/vfio/devices/vfio0"};
        for (unsigned i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
            int fd = open(nodes[i], O_RDWR);
            if (fd < 0) {
                printf("%s: open: %s\n", nodes[i], strerrorname_np(errno));
                continue;
            }
            try_map(nodes[i], fd, MAP_SHARED, PROT_READ | PROT_WRITE);
            try_map(nodes[i], fd, MAP_PRIVATE, PROT_READ | PROT_WRITE);
            close(fd);
        }
        /* A read-only open: a writable shared map is EACCES before any driver is asked. */
        int ro = open("/dev/vfio/vfio", O_RDONLY);
        try_map("/dev/vfio/vfio read-only", ro, MAP_SHARED, PROT_READ | PROT_WRITE);
        close(ro);

        /* A regular file: shared and private maps still work and see the file. */
        int f = open(argv[1], O_RDWR);
        char *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
        char *private = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, f, 0);
        if (shared == MAP_FAILED || private == MAP_FAILED) {
            printf("file: mmap failed: %s\n", strerrorname_np(errno));
            return 1;
        }
        memcpy(shared, "written", 7);
        char back[8] = {0};
        pread(f, back, 7, 0);
        printf("file: MAP_SHARED wrote \"%s\", MAP_PRIVATE sees \"%.7s\"\n", back, private);
        /* A bad fd is still the kernel's EBADF. */
        errno = 0;
        if (mmap(NULL, 4096, PROT_READ, MAP_SHARED, 77, 0) == MAP_FAILED)
            printf("fd 77: %s\n", strerrorname_np(errno));
        /* Anonymous memory, with and without an fd of ours in the (ignored) fd argument. */
        int container = open("/dev/vfio/vfio", O_RDWR);
        char *a = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        char *b = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, container, 0);
        if (a == MAP_FAILED || b == MAP_FAILED) {
            printf("anonymous: mmap failed: %s\n", strerrorname_np(errno));
            return 1;
        }
        a[8191] = 1;
        b[0] = 2;
        printf("anonymous: %d %d\n", a[8191], b[0]);
        return 0;
    }
"""


def test_mmap_of_our_nodes_gets_the_kernels_answers(
        tmp_path: Path, compile_c: Callable[..., Path]) -> None:
    source = tmp_path / "mmap_nodes.c"
    source.write_text(textwrap.dedent(MMAP_PROGRAM))
    program = compile_c("mmap_nodes", source=source)
    data = tmp_path / "data"
    data.write_bytes(b"original" + bytes(4096))
    result = run_ioasidfs(["-v", "run", "--", str(program), str(data)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "/dev/vfio/vfio: MAP_SHARED = -1 ENODEV",  # vfio_fops: no .mmap
        "/dev/vfio/vfio: MAP_PRIVATE = -1 ENODEV",  # (FUSE would have mapped the page cache)
        "/dev/vfio/1: MAP_SHARED = -1 ENODEV",  # vfio_group_fops: no .mmap
        "/dev/vfio/1: MAP_PRIVATE = -1 ENODEV",
        "/dev/iommu: MAP_SHARED = -1 ENXIO",  # iommufd_fops_mmap (6.16+): nothing allocated
        "/dev/iommu: MAP_PRIVATE = -1 EINVAL",  # ... and MAP_SHARED only
        "/dev/ioasid: MAP_SHARED = -1 ENXIO",
        "/dev/ioasid: MAP_PRIVATE = -1 EINVAL",
        "/dev/vfio/devices/vfio0: MAP_SHARED = -1 EINVAL",  # vfio_device_fops_mmap: not bound
        "/dev/vfio/devices/vfio0: MAP_PRIVATE = -1 EINVAL",
        "/dev/vfio/vfio read-only: MAP_SHARED = -1 EACCES",  # do_mmap, before the driver
        'file: MAP_SHARED wrote "written", MAP_PRIVATE sees "written"',
        "fd 77: EBADF",
        "anonymous: 1 2",
    ]
    # -v says why each one was refused.
    assert "mmap(/dev/vfio/1, 0x1000, prot=0x3, flags=0x2, off=0x0) = -1 ENODEV" in result.stderr
    assert "mmap(/dev/vfio/devices/vfio0, 0x1000, prot=0x3, flags=0x1, off=0x0) = -1 EINVAL" \
        in result.stderr
