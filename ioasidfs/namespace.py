"""A private mount namespace in which the fake tree *is* /dev/vfio, /dev/ioasid and /dev/iommu.

Unmodified programs hard-code ``/dev/vfio/vfio``; so ``ioasidfs run`` gives them a mount namespace
of their own in which those paths are our FUSE files, while the rest of /dev stays the machine's:
a tmpfs is stacked on /dev and every original entry is bound back into it (writing into the
shared devtmpfs instead would show our nodes on the host). Without root, a user namespace that maps
only the caller's own uid gives us the right to do this; the program still runs as that uid.

The fake sysfs is bound the same way over the machine's ``/sys/devices/pci0000:00``,
``/sys/bus/pci/devices``, ``/sys/bus/pci/drivers`` and ``/sys/kernel/iommu_groups``
(:func:`bind_sysfs`), in the namespace only.
"""
from __future__ import annotations

import logging
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


log = logging.getLogger("ioasidfs.run")

STAGING = "/dev/.ioasidfs"


def replace_dev(ours: tuple[str, ...]) -> str:
    """Stack a tmpfs on /dev holding every original entry except ``ours``; return a staging dir.

    The staging directory (inside the new tmpfs, so nothing appears on the machine) is where the
    FUSE filesystem gets mounted before its nodes are bound into place by :func:`bind_into_dev`.
    """
    # A real /dev/vfio (machine with VFIO) is shadowed by ours on purpose.
    _cover("/dev", "ioasidfs-dev", skip=ours)
    os.mkdir(STAGING, 0o700)
    return STAGING


def bind_into_dev(source: str, directories: tuple[str, ...], files: tuple[str, ...]) -> None:
    """Bind ``source/<name>`` onto ``/dev/<name>`` (/dev must be our tmpfs: :func:`replace_dev`).

    ``source`` is the FUSE staging mount (``ioasidfs run``), or ``/dev/PREFIX`` where CUSE made
    our nodes (``run --transport cuse --prefix PREFIX``). Over FUSE this runs while the server is
    already serving: binding a path inside the mount looks it up, and lookups wait for the
    server. Call it from a worker thread, never from the reader. The binds keep the filesystem
    alive after the staging mount is detached (:func:`drop_staging`).
    """
    for name in directories:
        os.mkdir(os.path.join("/dev", name), 0o755)
        sys_mount(os.path.join(source, name), os.path.join("/dev", name), None, MS_BIND | MS_REC)
    for name in files:
        _touch(os.path.join("/dev", name))
        sys_mount(os.path.join(source, name), os.path.join("/dev", name), None, MS_BIND)


def drop_staging(staging: str) -> None:
    """Detach the staging mount and remove its directory, once everything the program needs
    from it is bound elsewhere (files opened through it keep working)."""
    sys_umount(staging, MNT_DETACH)
    os.rmdir(staging)


def private_staging() -> str:
    """A directory to mount the FUSE tree on when /dev is not covered (``run --transport
    cuse`` without ``--prefix``: the nodes are real, /dev stays the machine's). The directory
    is made in /tmp; the mount on it exists in our namespace only, and :func:`drop_staging`
    removes both before PROGRAM starts."""
    return tempfile.mkdtemp(prefix="ioasidfs-staging-")


def bind_sysfs(staging: str, subtrees: tuple[str, ...], *, sysfs_dir: str = "sys",
               root: str = "/sys") -> list[str]:
    """Bind ``staging/<sysfs_dir>/<path>`` over ``<root>/<path>`` for each of ``subtrees``.

    Runs, like :func:`bind_into_dev` and before it, from a worker thread while the FUSE server
    serves. Nothing is created in the machine's sysfs: when ``<root>/<path>`` does not exist
    (no PCI bus, a kernel without IOMMU groups), its deepest existing ancestor (``root`` at
    most) is covered by a tmpfs holding its original entries bound back, as /dev is, and the
    missing directories are made in that tmpfs. A subtree that cannot be bound (no ``root``, a
    mount refused) is skipped with a warning: the program then sees the machine's. Returns the
    mount points bound.
    """
    bound = []
    covered: list[str] = []  # directories we stacked a tmpfs on: writable for us
    for path in subtrees:
        source = os.path.join(staging, sysfs_dir, path)
        target = os.path.join(root, path)
        try:
            if not os.path.isdir(target):
                _make_mountpoint(root, target, covered)
            sys_mount(source, target, None, MS_BIND | MS_REC)
        except OSError as e:
            log.warning("fake sysfs: cannot bind %s (%s); the program sees the machine's",
                        target, e.strerror or e)
            continue
        bound.append(target)
    return bound


def _make_mountpoint(root: str, target: str, covered: list[str]) -> None:
    """Make directory ``target`` (under ``root``) exist without writing into sysfs."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} does not exist")
    ancestor = target
    while not os.path.isdir(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not any(ancestor == c or ancestor.startswith(c + "/") for c in covered):
        _cover(ancestor)
        covered.append(ancestor)
        log.info("fake sysfs: %s has no %s; a tmpfs on it holds the original entries and ours",
                 ancestor, os.path.relpath(target, ancestor))
    os.makedirs(target, 0o755, exist_ok=True)


def _cover(directory: str, source: str = "ioasidfs-sys", skip: tuple[str, ...] = ()) -> None:
    """Stack a tmpfs (named ``source``) on ``directory`` holding its original entries, bound
    back, except those in ``skip``."""
    old = tempfile.mkdtemp(prefix="ioasidfs-old-")
    try:
        sys_mount(directory, old, None, MS_BIND | MS_REC)
        sys_mount(source, directory, "tmpfs", MS_NOSUID, "mode=755")
        for entry in sorted(os.listdir(old)):
            if entry not in skip:
                _rebind(os.path.join(old, entry), os.path.join(directory, entry))
    finally:
        try:
            sys_umount(old, MNT_DETACH)
        except OSError:
            pass
        os.rmdir(old)


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
