"""ioasidfs.client.contiguous_blocks against this test process's own memory: which blocks the
kernel's IOMMU code would map with one large IOPTE (physically contiguous from an aligned
frame), read from /proc/self/pagemap.

Frame numbers need CAP_SYS_ADMIN; hugetlb memory comes from conftest's ``huge_pages``.
"""
from __future__ import annotations

import ctypes
import os

import pytest

from ioasidfs.client import contiguous_blocks

PAGE = 4096
MIB = 1 << 20
HUGE = 2 * MIB
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_POPULATE, MAP_HUGETLB = 0x01, 0x02, 0x20, 0x8000, 0x40000
PID = os.getpid()


def _mmap(size: int, flags: int) -> int:
    addr = _libc.mmap(None, size, 3, flags | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    return int(addr)


def test_hugetlb_pages_are_contiguous_blocks(huge_pages: None) -> None:
    addr = _mmap(2 * HUGE, MAP_SHARED | MAP_HUGETLB)
    try:
        assert addr % HUGE == 0
        assert contiguous_blocks(PID, addr, 2, HUGE) == [addr, addr + HUGE]
        # Smaller blocks inside a huge page are contiguous too, from any block-aligned start.
        assert contiguous_blocks(PID, addr + MIB, 2, MIB) == [addr + MIB, addr + 2 * MIB]
        # A block straddling nothing aligned: the first frame is not 2 MiB-aligned.
        assert contiguous_blocks(PID, addr + PAGE, 1, HUGE) == []
        # Past the end of the mapping: the rest of the 1 GiB block has no frames.
        assert contiguous_blocks(PID, addr, 1, 1 << 30) == []
    finally:
        _libc.munmap(addr, 2 * HUGE)


def test_present_pages_and_holes() -> None:
    if os.geteuid() != 0:
        pytest.skip("frame numbers in /proc/PID/pagemap need CAP_SYS_ADMIN")
    populated = _mmap(4 * PAGE, MAP_PRIVATE)
    untouched = _libc.mmap(None, 4 * PAGE, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    try:
        # A one-page block is always contiguous and aligned, once the page is there.
        assert contiguous_blocks(PID, populated, 4, PAGE) == [populated + i * PAGE for i in range(4)]
        # Never-touched private memory has no frames yet: nothing could be mapped large.
        assert contiguous_blocks(PID, untouched, 4, PAGE) == []
        assert contiguous_blocks(PID, untouched, 1, 4 * PAGE) == []
    finally:
        _libc.munmap(populated, 4 * PAGE)
        _libc.munmap(untouched, 4 * PAGE)


def test_a_gone_process_has_no_blocks() -> None:
    assert contiguous_blocks(2**22 + 12345, 0x10000, 4, MIB) == []
