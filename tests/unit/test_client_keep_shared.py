"""ioasidfs.client.keep_shared against a real forked child: what a pin of its memory keeps
(a reference through /proc/PID/map_files and a window of our own) outlives the child for
shared memory -- MAP_SHARED|MAP_ANONYMOUS, a memfd at an offset, hugetlbfs -- and keeps
nothing of private memory. Needs CAP_SYS_ADMIN for map_files (root, as the daemon runs)."""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from typing import Iterator

import pytest

from ioasidfs.client import keep_shared
from ioasidfs.engine.caller import PAGE_SIZE, SharedPin
from ioasidfs.errors import KernelError

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_HUGETLB = 0x01, 0x02, 0x20, 0x40000
RW = mmap.PROT_READ | mmap.PROT_WRITE
HUGE = 2 << 20


def _child_maps(flags: int, size: int, *, memfd_offset: int | None = None) -> Iterator[tuple[int, int]]:
    """Fork a child that maps ``size`` bytes (a memfd from ``memfd_offset`` if given), fills
    them with b"child!", and reports the address. Yields (pid, address) while it lives; the
    child exits (and is reaped) when the generator resumes, before any assertion after it."""
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(go_w)
            os.close(report_r)
            fd = -1
            if memfd_offset is not None:
                fd = os.memfd_create("keep-shared")
                os.ftruncate(fd, memfd_offset + size)
            addr = _libc.mmap(None, size, RW, flags, fd, memfd_offset or 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                os.write(report_w, struct.pack("Q", 0))
            else:
                ctypes.memmove(addr, b"child!" * (size // 6), size // 6 * 6)
                os.write(report_w, struct.pack("Q", addr))
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(report_w)
    os.close(go_r)
    try:
        (addr,) = struct.unpack("Q", os.read(report_r, 8))
        yield pid, addr
    finally:
        os.close(go_w)  # the child's read returns: it exits
        os.close(report_r)
        os.waitpid(pid, 0)


def _release(pins: list[SharedPin], windows: list[tuple[SharedPin, int]]) -> None:
    for pin, window in windows:
        pin.file.unmap_window(window, pin.end - pin.start)
    for pin in pins:
        pin.file.close()


def test_shared_anonymous_memory_is_kept_after_the_child_exits() -> None:
    child = _child_maps(MAP_SHARED | MAP_ANONYMOUS, 4 * PAGE_SIZE)
    pid, addr = next(child)
    pins = keep_shared(pid, addr + PAGE_SIZE, addr + 3 * PAGE_SIZE)
    windows = []
    try:
        assert [(p.start, p.end, p.offset) for p in pins] == [
            (addr + PAGE_SIZE, addr + 3 * PAGE_SIZE, PAGE_SIZE)]
        owner, window = pins[0].file.window(pins[0].offset, 2 * PAGE_SIZE)
        windows.append((pins[0], window))
        assert owner[0] == os.getpid() and window
        next(child, None)  # the child exits and is reaped
        with pytest.raises(KernelError) as gone:
            keep_shared(pid, addr, addr + PAGE_SIZE)
        assert gone.value.errno == errno.ESRCH
        # Page 1 of the mapping: "child!" repeated from byte 0 of the mapping on.
        assert ctypes.string_at(window, 6) == (b"child!" * 2000)[PAGE_SIZE:PAGE_SIZE + 6]
        ctypes.memmove(window, b"device", 6)
        assert ctypes.string_at(window, 6) == b"device"
    finally:
        next(child, None)
        _release(pins, windows)


def test_a_memfd_mapping_is_kept_at_its_file_offset() -> None:
    child = _child_maps(MAP_SHARED, 2 * PAGE_SIZE, memfd_offset=3 * PAGE_SIZE)
    pid, addr = next(child)
    pins = keep_shared(pid, addr, addr + 2 * PAGE_SIZE)
    windows = []
    try:
        assert [(p.start, p.end, p.offset) for p in pins] == [(addr, addr + 2 * PAGE_SIZE,
                                                               3 * PAGE_SIZE)]
        _owner, window = pins[0].file.window(pins[0].offset, 2 * PAGE_SIZE)
        windows.append((pins[0], window))
        next(child, None)
        assert ctypes.string_at(window, 12) == b"child!child!"
    finally:
        next(child, None)
        _release(pins, windows)


def test_private_memory_keeps_nothing() -> None:
    child = _child_maps(MAP_PRIVATE | MAP_ANONYMOUS, 2 * PAGE_SIZE)
    pid, addr = next(child)
    try:
        assert keep_shared(pid, addr, addr + 2 * PAGE_SIZE) == []
    finally:
        next(child, None)


def test_a_hugetlb_mapping_is_kept_in_whole_huge_pages(huge_pages: None) -> None:
    child = _child_maps(MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, 2 * HUGE)
    pid, addr = next(child)
    pins: list[SharedPin] = []
    windows = []
    try:
        assert addr, "the child could not map two reserved huge pages"
        pins = keep_shared(pid, addr + HUGE + PAGE_SIZE, addr + HUGE + 2 * PAGE_SIZE)
        assert [(p.start, p.end, p.offset) for p in pins] == [(addr + HUGE, addr + 2 * HUGE, HUGE)]
        _owner, window = pins[0].file.window(pins[0].offset, HUGE)
        windows.append((pins[0], window))
        next(child, None)
        assert window and ctypes.string_at(window, 6) == (b"child!" * 800000)[HUGE:HUGE + 6]
    finally:
        next(child, None)
        _release(pins, windows)
