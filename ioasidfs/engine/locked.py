"""Locked-memory accounting: the part of ``mm->locked_vm`` our emulated pins stand for.

The kernel charges pinned DMA pages to the pinning process's ``mm->locked_vm`` -- the counter
mlock() also uses, shown as VmLck -- and refuses a pin that would push it past RLIMIT_MEMLOCK
unless the process has CAP_IPC_LOCK (mm/util.c:__account_locked_vm). The counter is per
process, not per container: two containers, or the same page mapped at two IOVAs, add up.

Our pins are not real, so the process's real VmLck does not see them. This ledger holds what
they add, per process, for the whole engine (every container, and later both personalities);
the process's real VmLck (``Caller.locked_pages``) is added on top when checking the limit.
A mapping remembers its owner and how much it charged; removing it gives that back, whether or
not the owner still exists -- for a vanished owner the kernel skips the decrement, and a
ledger entry nobody can look up any more is just as harmless.
"""
from __future__ import annotations

import errno

from ..errors import KernelError
from .caller import PAGE_SHIFT, Caller, ProcessKey


class LockedMemory:
    """Pages charged by our pins, per process."""

    def __init__(self) -> None:
        self._pages: dict[ProcessKey, int] = {}

    def pages_of(self, owner: ProcessKey) -> int:
        return self._pages.get(owner, 0)

    def total(self) -> int:
        """Every page charged, all processes together (for invariants and diagnostics)."""
        return sum(self._pages.values())

    def charge(self, caller: Caller, pages: int) -> ProcessKey:
        """Charge ``pages`` to the caller's process, as __account_locked_vm(inc) does for the
        current task: ENOMEM when ``locked_vm + pages`` would exceed RLIMIT_MEMLOCK (in pages,
        rounded down) and the caller lacks CAP_IPC_LOCK. Returns the owner it charged."""
        owner = caller.process_key()
        if pages == 0:
            return owner
        limit_bytes = caller.memlock_limit()
        if limit_bytes >= 0 and not caller.can_lock_memory():
            locked = caller.locked_pages() + self.pages_of(owner)
            if locked + pages > limit_bytes >> PAGE_SHIFT:
                raise KernelError(errno.ENOMEM, f"RLIMIT_MEMLOCK ({limit_bytes}) exceeded: "
                                                f"{locked} pages locked, {pages} more requested")
        self._pages[owner] = self.pages_of(owner) + pages
        return owner

    def charge_pinned(self, owner: ProcessKey, pages: int, limit_bytes: int, own_pages: int) -> None:
        """iommufd's MM-mode charge (pages.c:update_mm_locked_vm): __account_locked_vm with
        ``bypass_rlim`` false, so there is no CAP_IPC_LOCK exception here -- a process holding
        it never reaches this mode (its pins are not accounted at all). ``limit_bytes`` is
        the owner's RLIMIT_MEMLOCK (-1 = unlimited), ``own_pages`` its own VmLck."""
        if pages == 0:
            return
        if limit_bytes >= 0:
            locked = own_pages + self.pages_of(owner)
            if locked + pages > limit_bytes >> PAGE_SHIFT:
                raise KernelError(errno.ENOMEM, f"RLIMIT_MEMLOCK ({limit_bytes}) exceeded: "
                                                f"{locked} pages locked, {pages} more requested")
        self._pages[owner] = self.pages_of(owner) + pages

    def uncharge(self, owner: ProcessKey, pages: int) -> None:
        """Give back what a mapping charged (the decrement never fails)."""
        if pages == 0:
            return
        left = self.pages_of(owner) - pages
        assert left >= 0, f"{owner} uncharged more than it was charged"
        if left:
            self._pages[owner] = left
        else:
            del self._pages[owner]


class UserLockedMemory:
    """Pages charged per *user* (``user_struct->locked_vm``), iommufd's default accounting.

    iommufd (pages.c:incr_user_locked_vm, the scheme io_uring uses) charges pins to the
    mapping user's counter, shared by all of that user's processes, and checks it against the
    mapping process's RLIMIT_MEMLOCK. CAP_IPC_LOCK is not consulted here: a process holding it
    was given the "no accounting" mode when it mapped. The real counter may also hold io_uring
    buffers we cannot see; we start it at zero.
    """

    def __init__(self) -> None:
        self._pages: dict[int, int] = {}

    def pages_of(self, uid: int) -> int:
        return self._pages.get(uid, 0)

    def total(self) -> int:
        return sum(self._pages.values())

    def charge(self, uid: int, pages: int, limit_bytes: int) -> None:
        """ENOMEM when the user's counter would pass ``limit_bytes`` (-1 = unlimited)."""
        if pages == 0:
            return
        current = self.pages_of(uid)
        if limit_bytes >= 0 and current + pages > limit_bytes >> PAGE_SHIFT:
            raise KernelError(errno.ENOMEM, f"RLIMIT_MEMLOCK ({limit_bytes}) exceeded: user {uid} "
                                            f"has {current} pages pinned, {pages} more requested")
        self._pages[uid] = current + pages

    def uncharge(self, uid: int, pages: int) -> None:
        if pages == 0:
            return
        left = self.pages_of(uid) - pages
        assert left >= 0, f"user {uid} uncharged more than it was charged"
        if left:
            self._pages[uid] = left
        else:
            del self._pages[uid]
