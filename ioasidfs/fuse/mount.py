"""Mounting and unmounting a FUSE filesystem without libfuse.

As root (or root in a user namespace) we call mount(2) with an fd of /dev/fuse; otherwise we ask
the setuid ``fusermount3`` helper, which mounts and passes the fd back over a unix socket (the
protocol libfuse uses: ``_FUSE_COMMFD``). Unmounting is always lazy (MNT_DETACH): the filesystem
disappears from the tree at once and dies when its last user is gone.

A hung connection (a daemon killed while a request was in flight) is released by writing to
fusectl's ``abort`` file; fusectl is mounted for that in a throw-away mount namespace when the
machine has not mounted it.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass

log = logging.getLogger("ioasidfs.mount")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000

FS_NAME = "ioasidfs"
FS_TYPE = "fuse." + FS_NAME
FUSECTL_DIR = "/sys/fs/fuse/connections"


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def sys_mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), os.fsencode(target), fstype.encode() if fstype else None,
                       flags, data.encode() if data is not None else None),
           f"mount {source} on {target}")


def sys_umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(os.fsencode(target), flags), f"umount {target}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _mount_options(fd: int, uid: int, gid: int) -> str:
    # default_permissions: the kernel checks the mode bits we report, as it does for /dev nodes.
    # allow_other: other users' programs may open the nodes (the kernel's /dev/vfio/vfio is 0666).
    return f"fd={fd},rootmode=40000,user_id={uid},group_id={gid},default_permissions,allow_other"


def mount_fuse(target: str, *, use_fusermount: bool | None = None) -> int:
    """Mount a new FUSE connection on ``target``; returns the /dev/fuse fd to serve.

    ``use_fusermount`` None means: mount(2) when we hold CAP_SYS_ADMIN for this mount namespace
    (root, or root of a user namespace), fusermount3 otherwise.
    """
    if use_fusermount is None:
        use_fusermount = not _can_mount_directly()
    if use_fusermount:
        return _fusermount(target)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    try:
        sys_mount(FS_NAME, target, FS_TYPE, MS_NOSUID | MS_NODEV, _mount_options(fd, os.getuid(), os.getgid()))
    except OSError:
        os.close(fd)
        raise
    return fd


def _can_mount_directly() -> bool:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> 21 & 1)  # CAP_SYS_ADMIN
    except OSError:
        pass
    return os.geteuid() == 0


def _user_allow_other() -> bool:
    """fusermount3 lets users ask for allow_other only when /etc/fuse.conf says user_allow_other."""
    try:
        with open("/etc/fuse.conf") as f:
            return any(line.split("#")[0].strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def _fusermount(target: str) -> int:
    helper = shutil.which("fusermount3")
    if helper is None:
        raise OSError(errno.EPERM, "not root and fusermount3 is not installed (Debian: apt install fuse3)")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        opts = f"fsname={FS_NAME},subtype={FS_NAME},default_permissions,nosuid,nodev"
        if _user_allow_other():
            opts += ",allow_other"  # else only the user's own processes may open the nodes
        proc = subprocess.run([helper, "-o", opts, "--", target], env=env, pass_fds=(theirs.fileno(),),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        theirs.close()
        if proc.returncode != 0:
            raise OSError(errno.EPERM, f"fusermount3 failed: {proc.stderr.strip()}")
        _msg, fds, _flags, _addr = socket.recv_fds(ours, 16, 1)
        if not fds:
            raise OSError(errno.EIO, "fusermount3 sent no /dev/fuse fd")
        os.set_inheritable(fds[0], False)
        return fds[0]
    finally:
        ours.close()
        theirs.close()


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    device: str  # "major:minor"; the minor is the fusectl connection number
    mountpoint: str
    fstype: str


def find_mount(target: str) -> MountEntry | None:
    """The topmost mount at ``target`` in this mount namespace, from /proc/self/mountinfo.

    Never stats ``target``: a stat of a FUSE mount root waits for the server, which may be us.
    """
    target = os.path.normpath(os.path.abspath(target))
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            mountpoint = fields[4].encode().decode("unicode_escape")
            if mountpoint == target:
                found = MountEntry(int(fields[0]), fields[2], mountpoint, right.split()[0])
    return found


def is_our_mount(entry: MountEntry | None) -> bool:
    return entry is not None and entry.fstype == FS_TYPE


def unmount(target: str) -> None:
    """Lazily unmount ``target`` (root: umount2; otherwise fusermount3 -u -z)."""
    if _can_mount_directly():
        sys_umount(target)
        return
    helper = shutil.which("fusermount3")
    if helper is None:
        raise OSError(errno.EPERM, "not root and fusermount3 is not installed")
    proc = subprocess.run([helper, "-u", "-z", "--", target], capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(errno.EPERM, f"fusermount3 -u failed: {proc.stderr.strip()}")


def abort_connection(device: str) -> bool:
    """Abort the FUSE connection of a mount (``device`` "0:NN"): every waiting request fails.

    Returns False when it could not be done (not root, or no fusectl). Mounting fusectl happens
    in a child that first unshares its mount namespace, so the machine's mounts stay as they were.
    """
    minor = device.split(":")[1]
    abort_file = f"{FUSECTL_DIR}/{minor}/abort"
    if os.path.exists(abort_file):
        try:
            with open(abort_file, "w") as f:
                f.write("1")
            return True
        except OSError as e:
            log.warning("cannot abort FUSE connection %s: %s", minor, e)
            return False
    if not os.path.isdir(FUSECTL_DIR):
        return False
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            unshare(CLONE_NEWNS)
            sys_mount("none", "/", None, MS_REC | MS_PRIVATE)
            sys_mount("fusectl", FUSECTL_DIR, "fusectl", 0)
            with open(abort_file, "w") as f:
                f.write("1")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
