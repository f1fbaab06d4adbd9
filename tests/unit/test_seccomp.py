"""The seccomp filter, run by a small classic-BPF interpreter; struct layouts against the kernel."""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioasidfs import seccomp, vfs
from ioasidfs.launcher import SECCOMP_FILTER, TRAPPED_COMMANDS
from ioasidfs.seccomp import (AUDIT_ARCH_X86_64, NR_IOCTL, NR_MMAP, SECCOMP_RET_ALLOW,
                              SECCOMP_RET_USER_NOTIF, Insn, Notification)
from ioasidfs.uapi.iommufd import IOMMU_FAULT_QUEUE_ALLOC, IOMMU_TEST_CMD, IOMMU_VEVENTQ_ALLOC
from ioasidfs.uapi.vfio import VFIO_GROUP_GET_DEVICE_FD

AUDIT_ARCH_I386 = 0x40000003
NR_IOCTL_I386 = 54
X32_SYSCALL_BIT = 0x40000000
FIONREAD = 0x541B
TCGETS = 0x5401
GET_DEVICE_FD = 0x3B6A
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20
NR_MMAP_I386 = 90  # old_mmap; 192 is mmap2


def seccomp_data(nr: int, arch: int, args: tuple[int, ...] = (), ip: int = 0x401000) -> bytes:
    """struct seccomp_data, as the kernel lays it out for the filter."""
    padded = (tuple(args) + (0,) * 6)[:6]
    return struct.pack("<iIQ6Q", nr, arch, ip, *padded)


def run_bpf(program: bytes, data: bytes) -> int:
    """Execute a classic BPF program the way the kernel's seccomp does, for the instructions a
    seccomp filter may use here (loads of 32-bit words from seccomp_data, JEQ, RET). Anything
    else is a failure: the filter must stay this simple."""
    insns = seccomp.decode_filter(program)
    assert 0 < len(insns) <= seccomp.BPF_MAXINSNS
    acc = 0
    pc = 0
    steps = 0
    while True:
        assert 0 <= pc < len(insns), f"pc {pc} ran off the program"
        steps += 1
        assert steps <= len(insns), "classic BPF only jumps forward"
        code, jt, jf, k = insns[pc]
        if code == seccomp.BPF_LD_W_ABS:
            assert k % 4 == 0 and k + 4 <= len(data), f"misaligned or out-of-range load at {k}"
            (acc,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif code == seccomp.BPF_JMP_JEQ_K:
            pc += 1 + (jt if acc == k else jf)
        elif code == seccomp.BPF_JMP_JSET_K:
            pc += 1 + (jt if acc & k else jf)
        elif code == seccomp.BPF_ALU_AND_K:
            acc &= k
            pc += 1
        elif code == seccomp.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")


PROGRAM = seccomp.build_filter({FIONREAD, GET_DEVICE_FD})


def mmap_data(flags: int, fd: int, nr: int = NR_MMAP, arch: int = AUDIT_ARCH_X86_64) -> bytes:
    """mmap(NULL, 4096, PROT_READ, flags, fd, 0): fd as a register holds it (an int, sign-extended)."""
    return seccomp_data(nr, arch, (0, 4096, 1, flags, fd & (2**64 - 1), 0))


@pytest.mark.parametrize("data, expected", [
    (seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (3, FIONREAD, 0x7FFF0000)), SECCOMP_RET_USER_NOTIF),
    (seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (4, GET_DEVICE_FD, 0)), SECCOMP_RET_USER_NOTIF),
    # The kernel's ioctl() takes an unsigned int command: garbage in the high half is ignored.
    (seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (3, 0xDEADBEEF_0000541B, 0)), SECCOMP_RET_USER_NOTIF),
    (seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (3, TCGETS, 0)), SECCOMP_RET_ALLOW),
    (seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (FIONREAD, TCGETS, FIONREAD)), SECCOMP_RET_ALLOW),
    (seccomp_data(0, AUDIT_ARCH_X86_64, (3, FIONREAD, 0)), SECCOMP_RET_ALLOW),  # read()
    (seccomp_data(NR_IOCTL | X32_SYSCALL_BIT, AUDIT_ARCH_X86_64, (3, FIONREAD)), SECCOMP_RET_ALLOW),
    (seccomp_data(NR_IOCTL_I386, AUDIT_ARCH_I386, (3, FIONREAD)), SECCOMP_RET_ALLOW),
    (seccomp_data(NR_IOCTL, AUDIT_ARCH_I386, (3, FIONREAD)), SECCOMP_RET_ALLOW),  # i386 nr 16: lchown
], ids=["fionread", "get-device-fd", "high-bits", "untrapped-cmd", "cmd-in-other-args", "read",
        "x32", "i386-ioctl", "i386-nr16"])
def test_filter_decisions(data: bytes, expected: int) -> None:
    assert run_bpf(PROGRAM, data) == expected


@given(commands=st.sets(st.integers(0, 2**32 - 1), min_size=1, max_size=40),
       arch=st.sampled_from([AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, 0xC00000B7]),
       nr=st.sampled_from([NR_IOCTL, 0, 1, 54, NR_IOCTL | X32_SYSCALL_BIT, 0xFFFFFFFF]),
       cmd=st.integers(0, 2**64 - 1), pick=st.booleans())
def test_filter_traps_exactly_x86_64_ioctls_with_a_listed_command(
        commands: set[int], arch: int, nr: int, cmd: int, pick: bool) -> None:
    if pick:  # make hits likely: a listed command with random high bits
        cmd = (cmd & ~0xFFFF_FFFF) | sorted(commands)[cmd % len(commands)]
    program = seccomp.build_filter(commands)
    trapped = arch == AUDIT_ARCH_X86_64 and nr == NR_IOCTL and cmd & 0xFFFF_FFFF in commands
    got = run_bpf(program, seccomp_data(nr if nr < 2**31 else nr - 2**32, arch, (5, cmd, 0)))
    assert got == (SECCOMP_RET_USER_NOTIF if trapped else SECCOMP_RET_ALLOW)


@given(cmd=st.integers(0, 2**32 - 1))
def test_sized_vfio_type_commands_are_trapped_and_plain_ones_are_not(cmd: int) -> None:
    program = seccomp.build_filter({FIONREAD}, sized_type=ord(";"))
    is_sized_vfio = (cmd >> 8) & 0xFF == ord(";") and cmd >> 16 != 0
    expected = SECCOMP_RET_USER_NOTIF if is_sized_vfio or cmd == FIONREAD else SECCOMP_RET_ALLOW
    assert run_bpf(program, seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (3, cmd, 0))) == expected


@pytest.mark.parametrize("cmd, trapped", [
    (0x3B64, False),  # VFIO_GET_API_VERSION: _IO, the FUSE fast path
    (0xC0143B6B, True),  # _IOWR(';', 107, 20)
    (0x80043B64, True),  # _IOR(';', 100, 4)
    (0x40087802, False),  # a sized command of another type
    (FIONREAD, True),
])
def test_sized_vfio_examples(cmd: int, trapped: bool) -> None:
    program = seccomp.build_filter({FIONREAD}, sized_type=ord(";"))
    got = run_bpf(program, seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (3, cmd, 0)))
    assert got == (SECCOMP_RET_USER_NOTIF if trapped else SECCOMP_RET_ALLOW)


def test_program_shape() -> None:
    insns = seccomp.decode_filter(seccomp.build_filter([GET_DEVICE_FD, FIONREAD, FIONREAD]))
    assert insns == [
        Insn(0x20, 0, 0, 4),  # A = arch
        Insn(0x15, 0, 5, AUDIT_ARCH_X86_64),  # != x86_64 -> ALLOW (index 7)
        Insn(0x20, 0, 0, 0),  # A = nr
        Insn(0x15, 0, 3, NR_IOCTL),  # != ioctl -> ALLOW
        Insn(0x20, 0, 0, 24),  # A = low 32 bits of args[1]
        Insn(0x15, 2, 0, GET_DEVICE_FD),  # sorted, deduplicated; == -> NOTIFY (index 8)
        Insn(0x15, 1, 0, FIONREAD),
        Insn(0x06, 0, 0, SECCOMP_RET_ALLOW),
        Insn(0x06, 0, 0, SECCOMP_RET_USER_NOTIF),
    ]


def test_the_launchers_filter_traps_its_commands_and_nothing_else() -> None:
    assert TRAPPED_COMMANDS == set(vfs.TRAPPED) | {VFIO_GROUP_GET_DEVICE_FD, IOMMU_TEST_CMD,
                                                   IOMMU_FAULT_QUEUE_ALLOC, IOMMU_VEVENTQ_ALLOC}
    program = SECCOMP_FILTER
    assert len(seccomp.decode_filter(program)) == 7 + len(TRAPPED_COMMANDS) + 3 + 5
    for cmd in TRAPPED_COMMANDS:
        assert run_bpf(program, seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (3, cmd))) == SECCOMP_RET_USER_NOTIF
    for cmd in (0x5451, 0x5450, 0x5421, 0x5452, 2, 0xC020660B, 0x3B64, 0x3B65):
        # FIOCLEX FIONCLEX FIONBIO FIOASYNC FIGETBSZ FS_IOC_FIEMAP, GET_API_VERSION, CHECK_EXTENSION
        assert run_bpf(program, seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (3, cmd))) == SECCOMP_RET_ALLOW
    # Sized VFIO-type commands are trapped too.
    assert run_bpf(program, seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (3, 0xC0143B6B))) == SECCOMP_RET_USER_NOTIF
    # And mmap() of a file, not anonymous memory.
    assert run_bpf(program, mmap_data(MAP_SHARED, 3)) == SECCOMP_RET_USER_NOTIF
    assert run_bpf(program, mmap_data(MAP_PRIVATE | MAP_ANONYMOUS, -1)) == SECCOMP_RET_ALLOW


def test_build_filter_rejects_nothing_and_too_much() -> None:
    with pytest.raises(ValueError):
        seccomp.build_filter([])
    with pytest.raises(ValueError):
        seccomp.build_filter(range(300))
    assert len(seccomp.decode_filter(seccomp.build_filter(range(252)))) == 259


def test_struct_layouts_and_ioctl_numbers() -> None:
    assert (seccomp.NOTIF.size, seccomp.NOTIF_RESP.size, seccomp.NOTIF_ADDFD.size) == (80, 24, 24)
    # include/uapi/linux/seccomp.h, as the kernel computes them on x86_64
    assert seccomp.SECCOMP_IOCTL_NOTIF_RECV == 0xC0502100
    assert seccomp.SECCOMP_IOCTL_NOTIF_SEND == 0xC0182101
    assert seccomp.SECCOMP_IOCTL_NOTIF_ID_VALID == 0x40082102
    assert seccomp.SECCOMP_IOCTL_NOTIF_ADDFD == 0x40182103


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 only")
def test_struct_sizes_match_the_running_kernel() -> None:
    sizes = seccomp.notif_sizes()
    assert sizes.notif == seccomp.NOTIF.size
    assert sizes.resp == seccomp.NOTIF_RESP.size
    assert sizes.data == seccomp.SECCOMP_DATA_SIZE


def test_notification_round_trip_and_ioctl_arguments() -> None:
    n = Notification(7, 1234, 0, NR_IOCTL, AUDIT_ARCH_X86_64, 0x401000,
                     (0xFFFFFFFF_00000003, 0xFFFFFFFF_0000541B, 0xFFFF_8000_0000_1000, 0, 0, 0))
    assert Notification.unpack(n.pack()) == n
    assert n.is_x86_64_ioctl
    assert n.ioctl_args == (3, FIONREAD, 0xFFFF_8000_0000_1000)


MMAP_PROGRAM = seccomp.build_filter({FIONREAD, GET_DEVICE_FD}, trap_file_mmap=True)
MMAP_SIZED_PROGRAM = seccomp.build_filter({FIONREAD}, sized_type=ord(";"), trap_file_mmap=True)


@pytest.mark.parametrize("program", [MMAP_PROGRAM, MMAP_SIZED_PROGRAM], ids=["plain", "sized"])
@pytest.mark.parametrize("data, expected", [
    (mmap_data(MAP_SHARED, 3), SECCOMP_RET_USER_NOTIF),
    (mmap_data(MAP_PRIVATE, 3), SECCOMP_RET_USER_NOTIF),
    (mmap_data(0x3, 5), SECCOMP_RET_USER_NOTIF),  # MAP_SHARED_VALIDATE
    (mmap_data(0, 3), SECCOMP_RET_USER_NOTIF),  # no map type: the kernel says EINVAL, we too
    # fd -1 in the low half only: fget(unsigned int) sees -1 as well, EBADF.
    (mmap_data(MAP_PRIVATE, -1), SECCOMP_RET_ALLOW),
    (seccomp_data(NR_MMAP, AUDIT_ARCH_X86_64, (0, 4096, 1, MAP_SHARED, 0x1_FFFF_FFFF, 0)),
     SECCOMP_RET_ALLOW),
    # High garbage around a real fd: the kernel takes the low 32 bits, so do we.
    (seccomp_data(NR_MMAP, AUDIT_ARCH_X86_64, (0, 4096, 1, MAP_SHARED, 0xFFFF_FFFF_0000_0003, 0)),
     SECCOMP_RET_USER_NOTIF),
    (mmap_data(MAP_PRIVATE | MAP_ANONYMOUS, -1), SECCOMP_RET_ALLOW),
    (mmap_data(MAP_SHARED | MAP_ANONYMOUS, 3), SECCOMP_RET_ALLOW),  # the fd is ignored
    (mmap_data(MAP_SHARED | MAP_ANONYMOUS | 0xFFFF_0000, 3), SECCOMP_RET_ALLOW),
    (mmap_data(MAP_SHARED, 3, nr=10), SECCOMP_RET_ALLOW),  # mprotect
    (mmap_data(MAP_SHARED, 3, nr=NR_MMAP | 0x40000000), SECCOMP_RET_ALLOW),  # x32
    (mmap_data(MAP_SHARED, 3, nr=192, arch=AUDIT_ARCH_I386), SECCOMP_RET_ALLOW),  # i386 mmap2
    (mmap_data(MAP_SHARED, 3, arch=AUDIT_ARCH_I386), SECCOMP_RET_ALLOW),  # i386 nr 9: link
    # The ioctl part is unchanged.
    (seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (3, FIONREAD, 0)), SECCOMP_RET_USER_NOTIF),
    (seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (3, TCGETS, 0)), SECCOMP_RET_ALLOW),
    # an ioctl whose arguments look like a file mmap's is still judged as an ioctl
    (seccomp_data(NR_IOCTL, AUDIT_ARCH_X86_64, (0, TCGETS, 1, MAP_SHARED, 3, 0)), SECCOMP_RET_ALLOW),
], ids=["shared", "private", "shared-validate", "no-type", "fd-minus-1", "fd-minus-1-low-half",
        "fd-high-garbage", "anonymous", "anonymous-with-fd", "anonymous-high-flag-bits", "mprotect",
        "x32", "i386-mmap2", "i386-nr9", "ioctl-trapped", "ioctl-allowed", "ioctl-not-mmap"])
def test_file_mmap_trapping(program: bytes, data: bytes, expected: int) -> None:
    assert run_bpf(program, data) == expected


@given(nr=st.sampled_from([NR_MMAP, 0, 10, 192, NR_MMAP | 0x40000000]),
       arch=st.sampled_from([AUDIT_ARCH_X86_64, AUDIT_ARCH_I386]),
       flags=st.integers(0, 2**64 - 1), fd=st.integers(0, 2**64 - 1), sized=st.booleans())
def test_file_mmap_trapped_exactly(nr: int, arch: int, flags: int, fd: int, sized: bool) -> None:
    program = MMAP_SIZED_PROGRAM if sized else MMAP_PROGRAM
    data = seccomp_data(nr, arch, (0, 4096, 3, flags, fd, 0))
    trapped = (arch == AUDIT_ARCH_X86_64 and nr == NR_MMAP and fd & 0xFFFF_FFFF != 0xFFFF_FFFF
               and not flags & MAP_ANONYMOUS)
    assert run_bpf(program, data) == (SECCOMP_RET_USER_NOTIF if trapped else SECCOMP_RET_ALLOW)


def test_program_shape_with_mmap() -> None:
    insns = seccomp.decode_filter(seccomp.build_filter([GET_DEVICE_FD, FIONREAD], trap_file_mmap=True))
    assert insns == [
        Insn(0x20, 0, 0, 4),  # A = arch
        Insn(0x15, 0, 10, AUDIT_ARCH_X86_64),  # != x86_64 -> ALLOW (index 12)
        Insn(0x20, 0, 0, 0),  # A = nr
        Insn(0x15, 0, 3, NR_IOCTL),  # != ioctl -> MMAP (index 7)
        Insn(0x20, 0, 0, 24),  # A = low 32 bits of args[1]
        Insn(0x15, 7, 0, GET_DEVICE_FD),  # == -> NOTIFY (index 13)
        Insn(0x15, 6, 5, FIONREAD),  # the last command: else -> ALLOW
        Insn(0x15, 0, 4, NR_MMAP),  # MMAP: A still holds nr; != mmap -> ALLOW
        Insn(0x20, 0, 0, 48),  # A = low 32 bits of args[4] (fd)
        Insn(0x15, 2, 0, 0xFFFFFFFF),  # fd -1 -> ALLOW
        Insn(0x20, 0, 0, 40),  # A = low 32 bits of args[3] (flags)
        Insn(0x45, 0, 1, MAP_ANONYMOUS),  # anonymous -> ALLOW, else NOTIFY
        Insn(0x06, 0, 0, SECCOMP_RET_ALLOW),
        Insn(0x06, 0, 0, SECCOMP_RET_USER_NOTIF),
    ]


def test_build_filter_bounds_with_mmap() -> None:
    assert len(seccomp.decode_filter(seccomp.build_filter(range(247), trap_file_mmap=True))) == 259
    with pytest.raises(ValueError):
        seccomp.build_filter(range(248), trap_file_mmap=True)


def test_mmap_notification_arguments() -> None:
    n = Notification(8, 1234, 0, NR_MMAP, AUDIT_ARCH_X86_64, 0x401000,
                     (0x7F00_0000_0000, 0x2000, 3, MAP_SHARED, 0xFFFFFFFF_00000004, 0x1000))
    assert n.is_x86_64_mmap and not n.is_x86_64_ioctl
    assert n.mmap_args == (0x7F00_0000_0000, 0x2000, 3, MAP_SHARED, 4, 0x1000)


RW_PROGRAM = seccomp.build_filter({FIONREAD}, sized_type=ord(";"), trap_file_mmap=True,
                                  syscalls=(seccomp.NR_PREAD64, seccomp.NR_PWRITE64))


@given(nr=st.sampled_from([seccomp.NR_PREAD64, seccomp.NR_PWRITE64, 0, 1, 19, 295, 296, NR_IOCTL,
                           NR_MMAP, seccomp.NR_PREAD64 | X32_SYSCALL_BIT]),
       arch=st.sampled_from([AUDIT_ARCH_X86_64, AUDIT_ARCH_I386]),
       args=st.tuples(*[st.integers(0, 2**64 - 1)] * 6))
def test_listed_syscalls_are_trapped_whatever_their_arguments(
        nr: int, arch: int, args: tuple[int, ...]) -> None:
    """``syscalls`` (pread64/pwrite64 for ``run --transport cuse``) adds whole syscalls and
    changes nothing else: ioctl and mmap are judged exactly as without it."""
    data = seccomp_data(nr, arch, args)
    if arch == AUDIT_ARCH_X86_64 and nr in (seccomp.NR_PREAD64, seccomp.NR_PWRITE64):
        assert run_bpf(RW_PROGRAM, data) == SECCOMP_RET_USER_NOTIF
    else:
        assert run_bpf(RW_PROGRAM, data) == run_bpf(MMAP_SIZED_PROGRAM, data)


def test_the_cuse_transports_filter_adds_pread_and_pwrite() -> None:
    from ioasidfs.launcher import seccomp_filter_cuse
    program = seccomp_filter_cuse()
    assert len(seccomp.decode_filter(program)) == len(seccomp.decode_filter(SECCOMP_FILTER)) + 2
    for nr in (seccomp.NR_PREAD64, seccomp.NR_PWRITE64):
        assert run_bpf(program, seccomp_data(nr, AUDIT_ARCH_X86_64, (3, 0, 4, 1 << 40))) == \
            SECCOMP_RET_USER_NOTIF
    assert run_bpf(program, seccomp_data(0, AUDIT_ARCH_X86_64, (3, 0, 4))) == SECCOMP_RET_ALLOW


def test_rw_notification_arguments() -> None:
    n = Notification(9, 1234, 0, seccomp.NR_PREAD64, AUDIT_ARCH_X86_64, 0x401000,
                     (0xFFFFFFFF_00000005, 0x7F00_0000_1000, 4, 7 << 40, 0, 0))
    assert n.is_x86_64_pread and not n.is_x86_64_pwrite and not n.is_x86_64_ioctl
    assert n.rw_args == (5, 0x7F00_0000_1000, 4, 7 << 40)
    negative = Notification(9, 1234, 0, seccomp.NR_PWRITE64, AUDIT_ARCH_X86_64, 0, (3, 0, 1, 2**64 - 1, 0, 0))
    assert negative.is_x86_64_pwrite and negative.rw_args[3] == -1
