"""A private mount namespace in which the fake tree *is* /dev/vfio, /dev/ioasid and /dev/iommu.

Unmodified programs hard-code ``/dev/vfio/vfio``; so ``ioasidfs run`` gives them a mount namespace
of their own in which those paths are our FUSE files, while the rest of /dev stays the machine's:
a tmpfs is stacked on /dev and every original entry is bound back into it (writing into the
shared devtmpfs instead would show our nodes on the host). Without root, a user namespace that maps
only the caller's own uid gives us the right to do this; the program still runs as that uid.
"""
from __future__ import annotations

import os
import tempfile

from .fuse.mount import (CLONE_NEWNS, CLONE_NEWUSER, MNT_DETACH, MS_BIND, MS_NOSUID, MS_PRIVATE, MS_REC,
                         sys_mount, sys_umount, unshare)


def enter_private_namespace() -> bool:
    """Move this (still single-threaded) process into a new mount namespace.

    Returns True when a user namespace was needed (we are not root). Must run before any thread
    starts: unshare(CLONE_NEWUSER) refuses multi-threaded callers, and threads started later
    inherit the namespace.
    """
    rootless = os.geteuid() != 0
    if rootless:
        uid, gid = os.geteuid(), os.getegid()
        unshare(CLONE_NEWUSER | CLONE_NEWNS)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    else:
        unshare(CLONE_NEWNS)
    # Nothing we mount from here on may propagate back to the machine's namespace.
    sys_mount("none", "/", None, MS_REC | MS_PRIVATE)
    return rootless


STAGING = "/dev/.ioasidfs"


def replace_dev(ours: tuple[str, ...]) -> str:
    """Stack a tmpfs on /dev holding every original entry except ``ours``; return a staging dir.

    The staging directory (inside the new tmpfs, so nothing appears on the machine) is where the
    FUSE filesystem gets mounted before its nodes are bound into place by :func:`bind_into_dev`.
    """
    old = tempfile.mkdtemp(prefix="ioasidfs-olddev-")
    try:
        sys_mount("/dev", old, None, MS_BIND | MS_REC)
        sys_mount("ioasidfs-dev", "/dev", "tmpfs", MS_NOSUID, "mode=755")
        for entry in sorted(os.listdir(old)):
            if entry in ours:
                continue  # a real /dev/vfio (machine with VFIO) is shadowed by ours on purpose
            _rebind(os.path.join(old, entry), os.path.join("/dev", entry))
    finally:
        try:
            sys_umount(old, MNT_DETACH)
        except OSError:
            pass
        os.rmdir(old)
    os.mkdir(STAGING, 0o700)
    return STAGING


def bind_into_dev(staging: str, directories: tuple[str, ...], files: tuple[str, ...]) -> None:
    """Bind ``staging/<name>`` onto ``/dev/<name>``, then drop the staging mount itself.

    Runs while the FUSE server is already serving: binding a path inside ``staging`` looks it up,
    and lookups wait for the server. Call it from a worker thread, never from the reader. The
    binds keep the filesystem alive after the staging mount is detached.
    """
    for name in directories:
        os.mkdir(os.path.join("/dev", name), 0o755)
        sys_mount(os.path.join(staging, name), os.path.join("/dev", name), None, MS_BIND | MS_REC)
    for name in files:
        _touch(os.path.join("/dev", name))
        sys_mount(os.path.join(staging, name), os.path.join("/dev", name), None, MS_BIND)
    sys_umount(staging, MNT_DETACH)
    os.rmdir(staging)


def _rebind(source: str, target: str) -> None:
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
    elif os.path.isdir(source):
        os.mkdir(target, 0o755)
        sys_mount(source, target, None, MS_BIND | MS_REC)
    else:
        _touch(target)
        sys_mount(source, target, None, MS_BIND)


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
