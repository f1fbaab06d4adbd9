"""What the VFS answers for a character device, for the commands ioasidfs traps.

Expected values are the ones measured on this machine's kernel (6.18) against devtmpfs char
devices (/dev/null, /dev/net/tun) with the probe in tests/e2e/test_seccomp_trap.py.
"""
from __future__ import annotations

import errno
import struct

import pytest

from ioasidfs import vfs
from ioasidfs.engine import FakeMemory
from ioasidfs.errors import KernelError

BUF = 0x10000
UUID = bytes([16]) + bytes(range(1, 17))


def test_command_numbers_are_the_kernels() -> None:
    # x86_64 values, as printed by a C program including <linux/fs.h>.
    assert vfs.FIONREAD == 0x541B and vfs.FIOQSIZE == 0x5460
    assert (vfs.FIBMAP, vfs.FIGETBSZ) == (1, 2)
    assert (vfs.FIFREEZE, vfs.FITHAW) == (0xC0045877, 0xC0045878)
    assert (vfs.FICLONE, vfs.FICLONERANGE, vfs.FIDEDUPERANGE) == (0x40049409, 0x4020940D, 0xC0189436)
    assert (vfs.FS_IOC_GETFLAGS, vfs.FS_IOC_SETFLAGS) == (0x80086601, 0x40086602)
    assert (vfs.FS_IOC_FSGETXATTR, vfs.FS_IOC_FSSETXATTR) == (0x801C581F, 0x401C5820)
    assert (vfs.FS_IOC_GETFSUUID, vfs.FS_IOC_GETFSSYSFSPATH) == (0x80111500, 0x80811501)
    assert (vfs.FS_IOC_RESVSP, vfs.FS_IOC_UNRESVSP, vfs.FS_IOC_RESVSP64, vfs.FS_IOC_UNRESVSP64,
            vfs.FS_IOC_ZERO_RANGE) == (0x40305828, 0x40305829, 0x4030582A, 0x4030582B, 0x40305839)
    assert vfs.FS_IOC_FIEMAP == 0xC020660B


def test_the_trapped_set() -> None:
    driver = {c for c, t in vfs.TRAPPED.items() if t.route is vfs.Route.DRIVER}
    answered = {c for c, t in vfs.TRAPPED.items() if t.route is vfs.Route.VFS}
    assert driver == {vfs.FIONREAD, vfs.FIBMAP, vfs.FS_IOC_RESVSP, vfs.FS_IOC_RESVSP64,
                      vfs.FS_IOC_UNRESVSP, vfs.FS_IOC_UNRESVSP64, vfs.FS_IOC_ZERO_RANGE,
                      vfs.FS_IOC_GETFLAGS, vfs.FS_IOC_SETFLAGS, vfs.FS_IOC_FSGETXATTR,
                      vfs.FS_IOC_FSSETXATTR}
    assert answered == {vfs.FIOQSIZE, vfs.FICLONE, vfs.FICLONERANGE, vfs.FIDEDUPERANGE,
                        vfs.FS_IOC_GETFSUUID, vfs.FS_IOC_GETFSSYSFSPATH, vfs.FIFREEZE, vfs.FITHAW}
    assert not set(vfs.NOT_TRAPPED) & set(vfs.TRAPPED)


class Ctx:
    def __init__(self, *, sources: dict[int, vfs.Source] | None = None, admin: bool = True,
                 dev: vfs.DevFilesystem = vfs.DevFilesystem(uuid=UUID)) -> None:
        self.memory = FakeMemory()
        self.memory.map(BUF, 8192)
        self.sources = sources or {}
        self.context = vfs.CharDevContext(self.memory, dev, self.source, lambda: admin)

    def source(self, fd: int) -> vfs.Source:
        if fd not in self.sources:
            raise KernelError(errno.EBADF, "closed")
        return self.sources[fd]

    def errno_of(self, cmd: int, arg: int = BUF) -> int:
        with pytest.raises(KernelError) as info:
            vfs.chardev_ioctl(cmd, arg, self.context)
        return info.value.errno


def test_fioqsize_is_enotty_without_touching_memory() -> None:
    assert Ctx().errno_of(vfs.FIOQSIZE, 0) == errno.ENOTTY


@pytest.mark.parametrize("admin, freeze, thaw", [(True, errno.EOPNOTSUPP, errno.EINVAL),
                                                 (False, errno.EPERM, errno.EPERM)])
def test_freeze_and_thaw(admin: bool, freeze: int, thaw: int) -> None:
    ctx = Ctx(admin=admin)
    assert (ctx.errno_of(vfs.FIFREEZE, 0), ctx.errno_of(vfs.FITHAW, 0)) == (freeze, thaw)


def test_fsuuid_is_dev_s_and_written_whole() -> None:
    ctx = Ctx()
    assert vfs.chardev_ioctl(vfs.FS_IOC_GETFSUUID, BUF, ctx.context) == 0
    assert ctx.memory.read(BUF, 17) == UUID
    assert ctx.errno_of(vfs.FS_IOC_GETFSUUID, 8) == errno.EFAULT
    assert Ctx(dev=vfs.DevFilesystem()).errno_of(vfs.FS_IOC_GETFSUUID) == errno.ENOTTY


def test_sysfs_path() -> None:
    assert Ctx().errno_of(vfs.FS_IOC_GETFSSYSFSPATH) == errno.ENOTTY
    path = bytes([9]) + b"tmpfs/abc".ljust(128, b"\0")
    ctx = Ctx(dev=vfs.DevFilesystem(sysfs_path=path))
    assert vfs.chardev_ioctl(vfs.FS_IOC_GETFSSYSFSPATH, BUF, ctx.context) == 0
    assert ctx.memory.read(BUF, 129) == path


@pytest.mark.parametrize("src, expected", [
    (None, errno.EBADF), (vfs.Source.OTHER_FS, errno.EXDEV), (vfs.Source.DEV_DIR, errno.EISDIR),
    (vfs.Source.DEV_OTHER, errno.EINVAL)])
def test_ficlone(src: vfs.Source | None, expected: int) -> None:
    ctx = Ctx(sources={} if src is None else {7: src})
    assert ctx.errno_of(vfs.FICLONE, 7) == expected


def test_ficlone_takes_the_low_32_bits_of_the_fd() -> None:
    ctx = Ctx(sources={7: vfs.Source.DEV_OTHER})
    assert ctx.errno_of(vfs.FICLONE, (1 << 32) + 7) == errno.EINVAL
    assert ctx.errno_of(vfs.FICLONE, 0xFFFF_FFFF) == errno.EBADF  # fd -1


def test_ficlonerange_order_of_checks() -> None:
    ctx = Ctx(sources={7: vfs.Source.OTHER_FS})

    def clone_range(src_fd: int, src_offset: int, length: int, dest_offset: int) -> int:
        ctx.memory.write(BUF, struct.pack("<qQQQ", src_fd, src_offset, length, dest_offset))
        return ctx.errno_of(vfs.FICLONERANGE)

    assert ctx.errno_of(vfs.FICLONERANGE, 0) == errno.EFAULT
    assert clone_range(8, 0, 0, 0) == errno.EBADF  # fdget first
    assert clone_range(7, 2**64 - 1, 0, 0) == errno.EINVAL  # negative source offset
    assert clone_range(7, 0, 0, 2**63) == errno.EINVAL  # negative target offset
    assert clone_range(7, 2**62, 2**62, 0) == errno.EINVAL  # pos + len overflows loff_t
    assert clone_range(7, 4096, 4096, 0) == errno.EXDEV  # then the superblock


def test_fideduperange() -> None:
    ctx = Ctx()
    assert ctx.errno_of(vfs.FIDEDUPERANGE, 0) == errno.EFAULT
    ctx.memory.write(BUF + 16, struct.pack("<H", 200))
    assert ctx.errno_of(vfs.FIDEDUPERANGE) == errno.ENOMEM  # 24 + 32 * 200 > PAGE_SIZE
    near_end = BUF + 8192 - 100
    ctx.memory.write(near_end + 16, struct.pack("<H", 127))
    assert ctx.errno_of(vfs.FIDEDUPERANGE, near_end) == errno.EFAULT  # memdup_user of 4088 bytes
    ctx.memory.write(BUF + 16, struct.pack("<H", 127))
    assert ctx.errno_of(vfs.FIDEDUPERANGE) == errno.EINVAL


def test_driver_precheck() -> None:
    memory = FakeMemory()
    memory.map(BUF, 64)
    for cmd in (vfs.FS_IOC_SETFLAGS, vfs.FS_IOC_FSSETXATTR):
        with pytest.raises(KernelError) as info:
            vfs.driver_precheck(cmd, 0, memory)
        assert info.value.errno == errno.EFAULT
    memory.write(BUF, struct.pack("<I", 0x20000))  # not in FS_XFLAGS_MASK
    with pytest.raises(KernelError) as info:
        vfs.driver_precheck(vfs.FS_IOC_FSSETXATTR, BUF, memory)
    assert info.value.errno == errno.EOPNOTSUPP
    memory.write(BUF, struct.pack("<I", 0x10000 | 0x80000000))  # COWEXTSIZE | HASATTR: known
    vfs.driver_precheck(vfs.FS_IOC_FSSETXATTR, BUF, memory)
    for cmd in (vfs.FIONREAD, vfs.FS_IOC_GETFLAGS, vfs.FS_IOC_RESVSP):
        vfs.driver_precheck(cmd, 0, memory)  # the driver gets them untouched


def test_source_of() -> None:
    dev = vfs.DevFilesystem(devices=frozenset({5, 6}))
    assert vfs.source_of(0o040755, 5, dev) is vfs.Source.DEV_DIR
    assert vfs.source_of(0o020666, 6, dev) is vfs.Source.DEV_OTHER
    assert vfs.source_of(0o100644, 7, dev) is vfs.Source.OTHER_FS


def test_probe_reads_dev() -> None:
    dev = vfs.DevFilesystem.probe("/dev", user_ns="user:[1]")
    assert dev.user_ns == "user:[1]" and len(dev.devices) == 1
    assert dev.uuid is None or (len(dev.uuid) == 17 and 0 < dev.uuid[0] <= 16)
