"""The real pinning checks of ioasidfs.client, run against this test process's own memory.

They read /proc/self/{maps,smaps,pagemap,mountinfo,status,stat}, so they need nothing but Linux.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
from typing import Iterator

import pytest

from ioasidfs.client import locked_pages, start_time, user_range_ok
from ioasidfs.engine.caller import PinScan

PAGE = 4096
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
PID = os.getpid()


@pytest.fixture
def mapper() -> Iterator[object]:
    made: list[tuple[int, int]] = []

    def mmap_(pages: int, prot: int = mmap.PROT_READ | mmap.PROT_WRITE,
              flags: int = MAP_PRIVATE | MAP_ANONYMOUS, fd: int = -1) -> int:
        addr = _libc.mmap(None, pages * PAGE, prot, flags, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value)
        made.append((addr, pages * PAGE))
        return int(addr)

    yield mmap_
    for addr, size in made:
        _libc.munmap(addr, size)


def test_private_anonymous_memory(mapper) -> None:  # type: ignore[no-untyped-def]
    addr = mapper(8)
    assert user_range_ok(PID, addr, 8 * PAGE, False) == PinScan(0)  # all zero page
    assert user_range_ok(PID, addr, 8 * PAGE, True) == PinScan(8)
    ctypes.memset(addr, 1, PAGE)  # page 0 written
    ctypes.string_at(addr + 2 * PAGE, 1)  # page 2 read-faulted: the zero page
    assert user_range_ok(PID, addr, 8 * PAGE, False) == PinScan(1)


@pytest.mark.parametrize("prot, write, expected", [
    (mmap.PROT_READ, True, PinScan(0, errno.EFAULT)),
    (mmap.PROT_READ, False, PinScan(0)),
    (0, False, PinScan(0, errno.EFAULT)),  # PROT_NONE
    (mmap.PROT_WRITE, True, PinScan(1)),  # a WRITE pin needs only VM_WRITE
])
def test_protections(mapper, prot: int, write: bool, expected: PinScan) -> None:  # type: ignore[no-untyped-def]
    assert user_range_ok(PID, mapper(1, prot), PAGE, write) == expected


def test_hole_stops_the_walk_after_charging_what_came_before(mapper) -> None:  # type: ignore[no-untyped-def]
    addr = mapper(4)
    ctypes.memset(addr, 1, 4 * PAGE)
    _libc.munmap(addr + 2 * PAGE, PAGE)
    assert user_range_ok(PID, addr, 4 * PAGE, False) == PinScan(2, errno.EFAULT)


def test_shared_memfd_may_be_pinned_for_writing(mapper) -> None:  # type: ignore[no-untyped-def]
    fd = os.memfd_create("pin-test")
    try:
        os.ftruncate(fd, 2 * PAGE)
        addr = mapper(2, flags=MAP_SHARED, fd=fd)
        assert user_range_ok(PID, addr, 2 * PAGE, True) == PinScan(2, shared=True)
    finally:
        os.close(fd)


def test_locked_pages_follow_mlock_and_start_time_is_stable(mapper) -> None:  # type: ignore[no-untyped-def]
    before = locked_pages(PID)
    addr = mapper(2)
    if _libc.mlock(addr, 2 * PAGE) != 0:
        pytest.skip("mlock refused (RLIMIT_MEMLOCK)")
    try:
        assert locked_pages(PID) == before + 2
    finally:
        _libc.munlock(addr, 2 * PAGE)
    assert start_time(PID) == start_time(PID) > 0


def test_shared_mappings_name_the_file_and_offset_of_shared_file_pages() -> None:
    import ctypes
    import mmap as mmap_mod
    from ioasidfs.client import shared_mappings
    fd = os.memfd_create("ioasidfs-test")
    try:
        os.ftruncate(fd, 4 * 4096)
        shared = mmap_mod.mmap(fd, 2 * 4096, mmap_mod.MAP_SHARED, offset=2 * 4096)
        private = mmap_mod.mmap(-1, 4096, mmap_mod.MAP_PRIVATE)
        try:
            addr = ctypes.addressof(ctypes.c_char.from_buffer(shared))
            st = os.fstat(fd)
            found = shared_mappings(os.getpid(), addr, addr + 2 * 4096)
            assert found == [(addr, addr + 2 * 4096,
                              (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino), 2 * 4096)]
            paddr = ctypes.addressof(ctypes.c_char.from_buffer(private))
            assert shared_mappings(os.getpid(), paddr, paddr + 4096) == []   # anonymous, private
        finally:
            import gc
            gc.collect()
            shared.close()
            private.close()
    finally:
        os.close(fd)
