"""seccomp user notification: a filter that hands chosen ioctls to us, and the listener's calls.

Why: our nodes are FUSE regular files, and FUSE can neither answer the ioctls the VFS answers for
regular files before any filesystem sees them (``FIONREAD`` ...; the list and its reasons are in
:mod:`ioasidfs.vfs`) nor create an fd in the caller (``VFIO_GROUP_GET_DEVICE_FD``), and it
answers mmap() of a direct-io file itself (ENODEV for MAP_SHARED, a page-cache mapping for
MAP_PRIVATE) where the kernel's nodes answer ENODEV or their driver's errno. A seccomp
filter with ``SECCOMP_RET_USER_NOTIF`` stops the caller inside exactly those calls and
lets a supervisor answer them: with a value, an errno, a new fd (``SECCOMP_IOCTL_NOTIF_ADDFD``),
or "run the real syscall" (``SECCOMP_USER_NOTIF_FLAG_CONTINUE``) when the fd is not ours.

This module has two halves:

* sans-I/O: the BPF program (:func:`build_filter`), the struct layouts and ioctl numbers of the
  listener interface, and a parser for notifications. Unit-testable anywhere.
* thin syscall wrappers (:func:`install_filter`, :func:`recv`, :func:`send`, :func:`id_valid`,
  :func:`add_fd`, ...). They do one syscall each and raise ``OSError``; policy lives in
  :mod:`ioasidfs.supervisor`.

Only x86_64 is filtered: the syscall numbers and the ``seccomp_data`` byte order below are
x86_64's, and a 32-bit (i386 or x32) ioctl on the same machine has another arch or syscall
number, which the filter lets through (ALLOW) rather than misreading.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from .uapi.ioctl import IOW, IOWR

# ---------------------------------------------------------------------------- constants
AUDIT_ARCH_X86_64 = 0xC000003E
"""``seccomp_data.arch`` of a native x86_64 syscall (EM_X86_64 | __AUDIT_ARCH_64BIT | LE)."""
NR_IOCTL = 16
"""x86_64 ``__NR_ioctl``. An x32 ioctl has bit 30 set in its number, so it does not match."""
NR_MMAP = 9
"""x86_64 ``__NR_mmap`` (x86_64 has no mmap2; an x32 mmap has bit 30 set, an i386 one another arch)."""
MAP_ANONYMOUS = 0x20
NR_PREAD64 = 17
"""x86_64 ``__NR_pread64``: ``run --transport cuse`` answers it for device cdevs (CUSE drops the
position of read(), see :mod:`ioasidfs.launcher`)."""
NR_PWRITE64 = 18
"""x86_64 ``__NR_pwrite64``."""
"""``<asm-generic/mman-common.h>``: the kernel ignores the fd of an anonymous mapping."""
NR_SECCOMP = 317
"""x86_64 ``__NR_seccomp``."""

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
"""5.19+: once we have received a notification, only a fatal signal interrupts the waiting
caller. Without it a signal makes the kernel drop the notification and restart the syscall,
so an ioctl with side effects could be answered twice; the kernel's own VFIO ioctls are never
interrupted half-way either."""

SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SETFD = 1 << 0
SECCOMP_ADDFD_FLAG_SEND = 1 << 1

PR_SET_NO_NEW_PRIVS = 38

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
SECCOMP_DATA_NR = 0
SECCOMP_DATA_ARCH = 4
SECCOMP_DATA_ARGS = 16


def seccomp_data_arg_low(index: int) -> int:
    """Offset of the low 32 bits of ``args[index]`` (little-endian: the first four bytes)."""
    return SECCOMP_DATA_ARGS + 8 * index


# ---------------------------------------------------------------------------- struct layouts
NOTIF = struct.Struct("<QIIiIQ6Q")
"""struct seccomp_notif: id, pid, flags, data = {nr, arch, instruction_pointer, args[6]}."""
NOTIF_RESP = struct.Struct("<QqiI")
"""struct seccomp_notif_resp: id, val, error (a negative errno or 0), flags."""
NOTIF_ADDFD = struct.Struct("<QIIII")
"""struct seccomp_notif_addfd: id, flags, srcfd, newfd, newfd_flags."""
NOTIF_SIZES = struct.Struct("<HHH")
"""struct seccomp_notif_sizes: seccomp_notif, seccomp_notif_resp, seccomp_data."""
SECCOMP_DATA_SIZE = 64

# include/uapi/linux/seccomp.h: SECCOMP_IOC_MAGIC '!'
SECCOMP_IOCTL_NOTIF_RECV = IOWR("!", 0, NOTIF.size)
SECCOMP_IOCTL_NOTIF_SEND = IOWR("!", 1, NOTIF_RESP.size)
SECCOMP_IOCTL_NOTIF_ID_VALID = IOW("!", 2, 8)
SECCOMP_IOCTL_NOTIF_ADDFD = IOW("!", 3, NOTIF_ADDFD.size)


@dataclass(frozen=True, slots=True)
class Notification:
    """One trapped syscall, as SECCOMP_IOCTL_NOTIF_RECV reports it.

    ``pid`` is the calling *thread*'s id in our pid namespace (0 if it has none there).
    """

    id: int
    pid: int
    flags: int
    nr: int
    arch: int
    instruction_pointer: int
    args: tuple[int, int, int, int, int, int]

    @classmethod
    def unpack(cls, data: bytes | bytearray) -> "Notification":
        nid, pid, flags, nr, arch, ip, *args = NOTIF.unpack(data)
        a0, a1, a2, a3, a4, a5 = args
        return cls(nid, pid, flags, nr, arch, ip, (a0, a1, a2, a3, a4, a5))

    def pack(self) -> bytes:
        return NOTIF.pack(self.id, self.pid, self.flags, self.nr, self.arch,
                          self.instruction_pointer, *self.args)

    @property
    def is_x86_64_ioctl(self) -> bool:
        return self.arch == AUDIT_ARCH_X86_64 and self.nr == NR_IOCTL

    @property
    def is_x86_64_mmap(self) -> bool:
        return self.arch == AUDIT_ARCH_X86_64 and self.nr == NR_MMAP

    @property
    def is_x86_64_pread(self) -> bool:
        return self.arch == AUDIT_ARCH_X86_64 and self.nr == NR_PREAD64

    @property
    def is_x86_64_pwrite(self) -> bool:
        return self.arch == AUDIT_ARCH_X86_64 and self.nr == NR_PWRITE64

    @property
    def rw_args(self) -> tuple[int, int, int, int]:
        """(fd, buf, count, offset) of pread64/pwrite64 as x86_64's ``ksys_pread64(unsigned
        int fd, char __user *buf, size_t count, loff_t pos)`` sees them: fd's low 32 bits, the
        offset signed (a negative one is EINVAL)."""
        fd, buf, count, offset = self.args[:4]
        return fd & 0xFFFF_FFFF, buf, count, offset - (1 << 64) if offset >> 63 else offset

    @property
    def mmap_args(self) -> tuple[int, int, int, int, int, int]:
        """(addr, length, prot, flags, fd, offset) as x86_64's ``sys_mmap`` sees them: every
        argument is an unsigned long, but the fd goes to ``fget(unsigned int)``: its low 32 bits."""
        addr, length, prot, flags, fd, offset = self.args
        return addr, length, prot, flags, fd & 0xFFFF_FFFF, offset

    @property
    def ioctl_args(self) -> tuple[int, int, int]:
        """(fd, cmd, arg) as the kernel's ``sys_ioctl(unsigned int, unsigned int, unsigned long)``
        sees them: fd and cmd are the low 32 bits of their registers."""
        return self.args[0] & 0xFFFF_FFFF, self.args[1] & 0xFFFF_FFFF, self.args[2]


# ---------------------------------------------------------------------------- classic BPF
BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = *(u32 *)(seccomp_data + k)
BPF_JMP_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K: pc += (A == k) ? jt : jf
BPF_RET_K = 0x06  # BPF_RET | BPF_K: return k
BPF_JMP_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K: pc += (A & k) ? jt : jf
BPF_ALU_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K: A &= k
_IOC_DIR_SIZE_MASK = 0xFFFF_0000
_IOC_TYPE_MASK = 0x0000_FF00
BPF_MAXINSNS = 4096
_INSN = struct.Struct("<HBBI")


class Insn(NamedTuple):
    """One ``struct sock_filter``."""

    code: int
    jt: int
    jf: int
    k: int

    def pack(self) -> bytes:
        return _INSN.pack(self.code, self.jt, self.jf, self.k)


def build_filter(commands: Iterable[int], sized_type: int | None = None, *,
                 trap_file_mmap: bool = False, syscalls: Iterable[int] = ()) -> bytes:
    """The BPF program: USER_NOTIF for an x86_64 ioctl() whose command is in ``commands`` or,
    when ``sized_type`` is given, whose type byte is ``sized_type`` and which has direction or
    size bits (a sized VFIO-type command: FUSE would copy its argument in, and fail EFAULT on a
    bad pointer, before we could answer as the kernel's driver does); with ``trap_file_mmap``,
    also for an x86_64 mmap() of a file: its fd is not -1 and MAP_ANONYMOUS is not set (FUSE
    answers mmap() of our files itself, unlike the kernel's character devices); and for every
    x86_64 syscall whose number is in ``syscalls``, whatever its arguments (the e numbers are
    checked right after ``nr`` is loaded; every index below moves by e).

    ::

        0      A = arch;           if A != AUDIT_ARCH_X86_64 goto ALLOW
        2      A = nr;             [if A == syscalls[j] goto NOTIFY]   (e of them)
        3      if A != __NR_ioctl  goto MMAP (ALLOW without mmap)
        4      A = low32(args[1])  (the kernel's ioctl takes an unsigned int command, so the
                                    high half of the register is ignored, by it and by us)
        5+i    if A == cmd[i] goto NOTIFY                     (one per command, sorted;
                                                              the last one: else goto ALLOW)
        [5+n   if !(A & 0xffff0000) goto ALLOW            (only with ``sized_type``)
         6+n   A &= 0xff00
         7+n   if A == sized_type << 8 goto NOTIFY else ALLOW]
        [5+n+m MMAP: if A != __NR_mmap goto ALLOW         (only with ``trap_file_mmap``;
         6+n+m A = low32(args[4])                          A still holds nr here)
         7+n+m if A == 0xffffffff goto ALLOW               (fd -1: fget(unsigned int) says EBADF)
         8+n+m A = low32(args[3])
         9+n+m if A & MAP_ANONYMOUS goto ALLOW else NOTIFY]
        5+n+m+k  ALLOW:  return SECCOMP_RET_ALLOW
        6+n+m+k  NOTIFY: return SECCOMP_RET_USER_NOTIF

    (m = 3 with ``sized_type``, k = 5 with ``trap_file_mmap``, else 0.) Without
    ``trap_file_mmap`` the program is what it always was: the last command's "else goto
    ALLOW" is the fall-through.

    A non-x86_64 arch is allowed, not killed: such a program (i386 on x86_64) simply runs with
    the FUSE answers. Jump offsets are 8 bits, which bounds the list to 250 commands (245 with
    ``trap_file_mmap``).
    """
    cmds = sorted({c & 0xFFFF_FFFF for c in commands})
    if not cmds:
        raise ValueError("a filter that traps nothing is pointless")
    extra = sorted({nr & 0xFFFF_FFFF for nr in syscalls} - {NR_IOCTL, NR_MMAP})
    e = len(extra)
    n = len(cmds)
    m = 3 if sized_type is not None else 0
    k = 5 if trap_file_mmap else 0
    if e + n + m + k + 3 > 255:
        raise ValueError(f"{n} commands do not fit in 8-bit BPF jump offsets")
    mmap = 5 + e + n + m
    allow = mmap + k
    notify = allow + 1

    def jeq(pc: int, k: int, jt_to: int | None, jf_to: int | None) -> Insn:
        return Insn(BPF_JMP_JEQ_K, 0 if jt_to is None else jt_to - pc - 1,
                    0 if jf_to is None else jf_to - pc - 1, k)

    program = [
        Insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),
        jeq(1, AUDIT_ARCH_X86_64, None, allow),
        Insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),
    ]
    program += [jeq(3 + j, nr, notify, None) for j, nr in enumerate(extra)]
    program += [
        jeq(3 + e, NR_IOCTL, None, mmap),
        Insn(BPF_LD_W_ABS, 0, 0, seccomp_data_arg_low(1)),
    ]
    program += [jeq(5 + e + i, cmd, notify, allow if i == n - 1 and sized_type is None else None)
                for i, cmd in enumerate(cmds)]
    if sized_type is not None:
        pc = 5 + e + n
        program += [
            Insn(BPF_JMP_JSET_K, 0, allow - pc - 1, _IOC_DIR_SIZE_MASK),
            Insn(BPF_ALU_AND_K, 0, 0, _IOC_TYPE_MASK),
            jeq(pc + 2, (sized_type & 0xFF) << 8, notify, allow),
        ]
    if trap_file_mmap:
        assert len(program) == mmap
        program += [
            jeq(mmap, NR_MMAP, None, allow),
            Insn(BPF_LD_W_ABS, 0, 0, seccomp_data_arg_low(4)),
            jeq(mmap + 2, 0xFFFF_FFFF, allow, None),
            Insn(BPF_LD_W_ABS, 0, 0, seccomp_data_arg_low(3)),
            Insn(BPF_JMP_JSET_K, allow - mmap - 5, notify - mmap - 5, MAP_ANONYMOUS),
        ]
    program += [Insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW), Insn(BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF)]
    assert len(program) == notify + 1
    return b"".join(insn.pack() for insn in program)


def decode_filter(program: bytes) -> list[Insn]:
    """The instructions of a packed program (for tests and debugging)."""
    if len(program) % _INSN.size:
        raise ValueError("a BPF program is a whole number of 8-byte instructions")
    return [Insn(*_INSN.unpack_from(program, off)) for off in range(0, len(program), _INSN.size)]


# ---------------------------------------------------------------------------- syscalls
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _require_x86_64() -> None:
    if os.uname().machine != "x86_64":
        raise OSError(errno.ENOSYS, "seccomp trapping is implemented for x86_64 only")


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS, 1): needed to install a filter without CAP_SYS_ADMIN."""
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


def install_filter(program: bytes, flags: int = SECCOMP_FILTER_FLAG_NEW_LISTENER
                   | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, program) on the calling thread; returns the
    listener fd (NEW_LISTENER is required in ``flags``). If the kernel predates
    WAIT_KILLABLE_RECV (EINVAL), installs without it."""
    _require_x86_64()
    if not flags & SECCOMP_FILTER_FLAG_NEW_LISTENER:
        raise ValueError("install_filter returns a listener: NEW_LISTENER is required")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // _INSN.size, ctypes.cast(buf, ctypes.c_void_p))
    fd = _libc.syscall(NR_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog))
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL and flags & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV:
            return install_filter(program, flags & ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
        raise OSError(err, f"seccomp(SET_MODE_FILTER): {os.strerror(err)}")
    return int(fd)


@dataclass(frozen=True, slots=True)
class NotifSizes:
    notif: int
    resp: int
    data: int


def notif_sizes() -> NotifSizes:
    """seccomp(SECCOMP_GET_NOTIF_SIZES): the kernel's struct sizes, to check our layouts."""
    _require_x86_64()
    buf = ctypes.create_string_buffer(NOTIF_SIZES.size)
    if _libc.syscall(NR_SECCOMP, SECCOMP_GET_NOTIF_SIZES, 0, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(GET_NOTIF_SIZES): {os.strerror(err)}")
    return NotifSizes(*NOTIF_SIZES.unpack(buf.raw))


def recv(listener: int) -> Notification:
    """SECCOMP_IOCTL_NOTIF_RECV. The buffer must be zeroed (the kernel refuses anything else).

    ENOENT means the notification vanished before we got it (its caller was killed): normal.
    """
    buf = bytearray(NOTIF.size)
    fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
    return Notification.unpack(buf)


def id_valid(listener: int, notif_id: int) -> bool:
    """SECCOMP_IOCTL_NOTIF_ID_VALID: is the caller still waiting for this answer?

    Whatever we read about the caller (its memory, its fds, /proc/PID) is only known to be about
    *that* caller if the notification is still valid afterwards: a dead caller's pid may be reused.
    """
    try:
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, struct.pack("<Q", notif_id))
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def send(listener: int, notif_id: int, *, val: int = 0, error: int = 0, flags: int = 0) -> bool:
    """SECCOMP_IOCTL_NOTIF_SEND. ``error`` is a positive errno (0 for success, then ``val`` is
    the syscall's return value). Returns False if the caller is gone (ENOENT)."""
    if error < 0:
        raise ValueError("pass a positive errno")
    resp = NOTIF_RESP.pack(notif_id, val, -error, flags)
    try:
        fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def send_continue(listener: int, notif_id: int) -> bool:
    """Let the kernel run the real syscall (the fd is not one of ours)."""
    return send(listener, notif_id, flags=SECCOMP_USER_NOTIF_FLAG_CONTINUE)


def add_fd(listener: int, notif_id: int, srcfd: int, *, send_reply: bool = True,
           cloexec: bool = True) -> int:
    """SECCOMP_IOCTL_NOTIF_ADDFD: install a copy of our ``srcfd`` in the caller at its lowest
    free number; returns that number. With ``send_reply`` (ADDFD_FLAG_SEND) the same call also
    answers the notification with it, atomically: the caller's ioctl() returns the new fd."""
    flags = SECCOMP_ADDFD_FLAG_SEND if send_reply else 0
    req = bytearray(NOTIF_ADDFD.pack(notif_id, flags, srcfd, 0, os.O_CLOEXEC if cloexec else 0))
    # A mutable buffer with mutate_flag: fcntl.ioctl then returns the syscall's result (the fd).
    return int(fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, req, True))
