"""Device DMA through the engine: the translation tables the containers and IOASes keep in step
with their mappings, reached through ``Engine.dma_space``, into this test process's own memory.

No FakeMemory: the caller is this process as the daemon sees a client (its memory read and
written with process_vm_readv/writev, its pages checked in /proc), so the ioctl arguments, the
mapped buffers and the DMA all live in real memory (process_vm_* to oneself needs no privilege).
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import io
import json
import os

import pytest

from ioasidfs.client import ProcessMemory
from ioasidfs.config import load_config
from ioasidfs.devices.dma import DmaSpace, dma_read, dma_write
from ioasidfs.devtree import DevTree
from ioasidfs.engine import Caller, Engine, FileKind, OpenFile
from ioasidfs.engine.engine import FaultsFile
from ioasidfs.engine.translate import FaultReason
from ioasidfs.errors import IommuFault, KernelError
from ioasidfs.trace import JsonLinesTracer, TextTracer
from ioasidfs.uapi import vfio as V
from support import Buffer, this_process_caller

PG = 4096
IOVA = 0x100000
RW = V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE


class Self:
    """An engine and this process as its caller, with an fd table and an ioctl argument area."""

    def __init__(self, personality: str = "type1", scopes: dict[int, str] | None = None) -> None:
        config = dataclasses.replace(load_config(None), container_personality=personality)
        groups = tuple(dataclasses.replace(g, dirty_scope=(scopes or {}).get(g.id, g.dirty_scope))
                       for g in config.groups)
        config = dataclasses.replace(config, groups=groups)
        self.engine = Engine(config, still_open=lambda f: True)
        self.fds: dict[int, OpenFile] = {}
        self.caller = this_process_caller(self._resolve)
        self.arg = ctypes.create_string_buffer(256)
        self.argp = ctypes.addressof(self.arg)
        self.group_id = 1
        self.device = self.engine.groups[1].devices[0]

    def _resolve(self, fd: int) -> object:
        if fd not in self.fds:
            raise KernelError(errno.EBADF, "closed")
        return self.fds[fd]

    def open(self, kind: FileKind, key: object = None) -> OpenFile:
        file = self.engine.open(kind, key, self.caller)
        self.fds[len(self.fds) + 3] = file
        return file

    def ioctl(self, file: OpenFile, cmd: int, data: bytes | None = None, arg: int = 0) -> int:
        if data is not None:
            ctypes.memmove(self.argp, data, len(data))
            arg = self.argp
        return file.ioctl(self.caller, cmd, arg)

    def attach(self, group: OpenFile, container: OpenFile) -> None:
        fd = next(fd for fd, f in self.fds.items() if f is container)
        assert self.ioctl(group, V.VFIO_GROUP_SET_CONTAINER, fd.to_bytes(4, "little")) == 0

    def map(self, container: OpenFile, iova: int, vaddr: int, size: int, flags: int = RW) -> None:
        data = V.DMA_MAP.pack(argsz=V.DMA_MAP.size, flags=flags, vaddr=vaddr, iova=iova, size=size)
        assert self.ioctl(container, V.VFIO_IOMMU_MAP_DMA, data) == 0

    def unmap(self, container: OpenFile, iova: int, size: int, flags: int = 0) -> None:
        data = V.DMA_UNMAP.pack(argsz=V.DMA_UNMAP.size, flags=flags, iova=iova, size=size)
        assert self.ioctl(container, V.VFIO_IOMMU_UNMAP_DMA, data) == 0

    def space(self) -> DmaSpace:
        return self.engine.dma_space(self.group_id)


def _type1(w: Self, v2: bool = True) -> OpenFile:
    container = w.open(FileKind.CONTAINER)
    group = w.open(FileKind.GROUP, w.group_id)
    w.attach(group, container)
    assert w.ioctl(container, V.VFIO_SET_IOMMU,
                   arg=V.VFIO_TYPE1v2_IOMMU if v2 else V.VFIO_TYPE1_IOMMU) == 0
    return container


def test_type1_dma_lands_in_the_mapped_buffer_and_faults_once_unmapped(buf: Buffer) -> None:
    w = Self()
    container = _type1(w)
    w.map(container, IOVA, buf.addr, 4 * PG)
    dma_write(w.space(), IOVA + PG + 8, b"device was here", device=w.device)
    assert buf.at(PG + 8, 15) == b"device was here"
    assert dma_read(w.space(), IOVA + PG + 8, 6, device=w.device) == b"device"
    assert w.engine.faults.records() == []

    w.unmap(container, IOVA, 4 * PG)
    before = buf.at(0, 4 * PG)
    with pytest.raises(IommuFault) as info:
        dma_write(w.space(), IOVA + 8, b"too late", device=w.device)
    assert (info.value.iova, info.value.reason) == (IOVA + 8, FaultReason.NOT_MAPPED)
    assert buf.at(0, 4 * PG) == before
    [rec] = w.engine.faults.records()
    assert (rec.iova, rec.device, rec.access, rec.reason, rec.length) == (
        IOVA + 8, w.device, "write", FaultReason.NOT_MAPPED, 8)

    # The same log is what /faults shows.
    text = FaultsFile(w.engine.faults).read(w.caller, 0, 1 << 16).decode()
    assert text == rec.line() + "\n"
    assert f"iova={IOVA + 8:#x}" in text and "not-mapped" in text and w.device in text


def test_type1_table_follows_mappings_and_prot(buf: Buffer) -> None:
    w = Self()
    container = _type1(w, v2=False)
    w.map(container, IOVA, buf.addr, PG, flags=V.VFIO_DMA_MAP_FLAG_READ)
    w.map(container, IOVA + PG, buf.addr + PG, PG, flags=V.VFIO_DMA_MAP_FLAG_WRITE)
    w.map(container, IOVA + 2 * PG, buf.addr + 2 * PG, 2 * PG)
    iommu = container.container.iommu  # type: ignore[attr-defined]
    assert len(iommu.table) == len(iommu.mappings) == 3
    with pytest.raises(IommuFault) as info:
        dma_write(w.space(), IOVA, b"x")                      # read-only to the device
    assert info.value.reason is FaultReason.NO_PERMISSION
    with pytest.raises(IommuFault) as info:
        dma_read(w.space(), IOVA + PG, 1)                     # write-only
    assert info.value.reason is FaultReason.NO_PERMISSION
    dma_write(w.space(), IOVA + PG, b"w")
    assert buf.at(PG, 1) == b"w"
    # v1: an unmap inside the last mapping removes all of it, in the table too.
    w.unmap(container, IOVA + 2 * PG, PG)
    assert len(iommu.table) == len(iommu.mappings) == 2
    with pytest.raises(IommuFault):
        dma_read(w.space(), IOVA + 3 * PG, 1)
    # UNMAP_ALL empties both.
    w.unmap(container, 0, 0, flags=V.VFIO_DMA_UNMAP_FLAG_ALL)
    assert len(iommu.table) == len(iommu.mappings) == 0


def test_update_vaddr_keeps_the_old_pages_until_the_new_vaddr(buf: Buffer) -> None:
    w = Self()
    container = _type1(w)
    w.map(container, IOVA, buf.addr, PG)
    w.unmap(container, IOVA, PG, flags=V.VFIO_DMA_UNMAP_FLAG_VADDR)
    dma_write(w.space(), IOVA, b"old")                        # vaddr invalid: old pages still
    assert buf.at(0, 3) == b"old"
    w.map(container, IOVA, buf.addr + 2 * PG, PG, flags=V.VFIO_DMA_MAP_FLAG_VADDR)
    dma_write(w.space(), IOVA, b"new")
    assert buf.at(2 * PG, 3) == b"new" and buf.at(0, 3) == b"old"
    # The prot is the mapping's, unchanged by the vaddr update.
    assert dma_read(w.space(), IOVA, 3) == b"new"


# ----------------------------------------------------------------- dirty pages of device writes
def _dirty(w: Self, container: OpenFile, flags: int) -> None:
    data = V.DIRTY_BITMAP.pack(argsz=V.DIRTY_BITMAP.size, flags=flags)
    assert w.ioctl(container, V.VFIO_IOMMU_DIRTY_PAGES, data) == 0


def _bitmap(w: Self, container: OpenFile, iova: int, size: int) -> int:
    """VFIO_IOMMU_DIRTY_PAGES(GET_BITMAP) into a real bitmap of this process: bit i = page i."""
    bitmap = ctypes.create_string_buffer(8)
    data = V.DIRTY_BITMAP.pack(argsz=V.DIRTY_BITMAP.size + V.DIRTY_BITMAP_GET.size,
                               flags=V.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)
    data += V.DIRTY_BITMAP_GET.pack(iova=iova, size=size, bitmap_pgsize=PG, bitmap_size=8,
                                    bitmap_data=ctypes.addressof(bitmap))
    assert w.ioctl(container, V.VFIO_IOMMU_DIRTY_PAGES, data) == 0
    return int.from_bytes(bitmap.raw, "little")


def _unmap_bitmap(w: Self, container: OpenFile, iova: int, size: int) -> int:
    """UNMAP_DMA with GET_DIRTY_BITMAP: the unmapped range's last report."""
    bitmap = ctypes.create_string_buffer(8)
    data = V.DMA_UNMAP.pack(argsz=V.DMA_UNMAP.size + V.BITMAP.size,
                            flags=V.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, iova=iova, size=size)
    data += V.BITMAP.pack(pgsize=PG, size=8, data=ctypes.addressof(bitmap))
    assert w.ioctl(container, V.VFIO_IOMMU_UNMAP_DMA, data) == 0
    return int.from_bytes(bitmap.raw, "little")


def _bits(*pages: int) -> int:
    return sum(1 << p for p in set(pages))


def test_pinned_scope_reports_exactly_the_pages_devices_wrote() -> None:
    b = Buffer(16)
    w = Self(scopes={1: "pinned"})
    container = _type1(w)
    w.map(container, IOVA, b.addr, 8 * PG)
    w.map(container, IOVA + 8 * PG, b.addr + 8 * PG, 8 * PG)
    dma_write(w.space(), IOVA, b"before tracking")            # not tracked: forgotten
    _dirty(w, container, V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
    assert _bitmap(w, container, IOVA, 16 * PG) == 0
    dma_write(w.space(), IOVA + 3 * PG + 10, b"x")
    dma_write(w.space(), IOVA + 6 * PG - 1, b"ab")           # straddles pages 5 and 6
    dma_write(w.space(), IOVA + 9 * PG, bytes(PG + 1))       # pages 9 and 10, second mapping
    dma_read(w.space(), IOVA + 12 * PG, 64)                   # a read dirties nothing
    assert _bitmap(w, container, IOVA, 16 * PG) == _bits(3, 5, 6, 9, 10)
    assert _bitmap(w, container, IOVA, 8 * PG) == 0           # a report clears what it reported
    # ... over the mapping's own length only: the second mapping was shifted 8 bits into
    # place, and its shifted copy stays in its bitmap (update_user_bitmap), so the kernel
    # reports pages 9 and 10 again, shifted once more: bits 17 and 18.
    assert _bitmap(w, container, IOVA, 16 * PG) == _bits(17, 18)
    # Only the mapping asked about is reported and cleared.
    dma_write(w.space(), IOVA + 1 * PG, b"1")
    dma_write(w.space(), IOVA + 15 * PG, b"f")
    assert _unmap_bitmap(w, container, IOVA, 8 * PG) == _bits(1)
    # STOP forgets (stale bits and the unreported page 15 too), START begins clean.
    dma_write(w.space(), IOVA + 14 * PG, b"e")
    _dirty(w, container, V.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP)
    _dirty(w, container, V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
    assert _bitmap(w, container, IOVA + 8 * PG, 8 * PG) == 0
    dma_write(w.space(), IOVA + 8 * PG, b"8")
    assert _unmap_bitmap(w, container, IOVA + 8 * PG, 8 * PG) == _bits(0)


def test_a_group_behind_a_real_iommu_makes_every_mapped_page_dirty() -> None:
    """The kernel cannot see what a device behind an IOMMU wrote (num_non_pinned_groups): while
    such a group is attached every page is reported, as the reference VM shows for vfio-pci."""
    b = Buffer(8)
    w = Self(scopes={1: "pinned", 2: "all"})
    container = _type1(w)
    other = w.open(FileKind.GROUP, 2)
    w.attach(other, container)
    w.map(container, IOVA, b.addr, 4 * PG)
    _dirty(w, container, V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
    dma_write(w.space(), IOVA + 2 * PG, b"2")
    assert _bitmap(w, container, IOVA, 4 * PG) == _bits(0, 1, 2, 3)
    assert _bitmap(w, container, IOVA, 4 * PG) == _bits(0, 1, 2, 3)
    assert w.ioctl(other, V.VFIO_GROUP_UNSET_CONTAINER) == 0  # only the pinned-scope group left
    assert _bitmap(w, container, IOVA, 4 * PG) == 0
    dma_write(w.space(), IOVA + 3 * PG, b"3")
    assert _bitmap(w, container, IOVA, 4 * PG) == _bits(3)


def test_default_scope_is_all_and_update_vaddr_keeps_written_pages() -> None:
    b = Buffer(4)
    w = Self()
    assert w.engine.groups[1].dirty_scope == "all"
    container = _type1(w)
    w.map(container, IOVA, b.addr, 4 * PG)
    _dirty(w, container, V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
    assert _bitmap(w, container, IOVA, 4 * PG) == _bits(0, 1, 2, 3)
    w2 = Self(scopes={1: "pinned"})
    container2 = _type1(w2)
    w2.map(container2, IOVA, b.addr, 4 * PG)
    _dirty(w2, container2, V.VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
    dma_write(w2.space(), IOVA + 2 * PG, b"old pages")
    w2.unmap(container2, IOVA, 4 * PG, flags=V.VFIO_DMA_UNMAP_FLAG_VADDR)
    w2.map(container2, IOVA, b.addr, 4 * PG, flags=V.VFIO_DMA_MAP_FLAG_VADDR)
    dma_write(w2.space(), IOVA, b"new")
    assert _bitmap(w2, container2, IOVA, 4 * PG) == _bits(0, 2)


def test_dma_is_blocked_until_attached_and_after_the_group_leaves(buf: Buffer) -> None:
    w = Self()
    with pytest.raises(IommuFault) as info:
        dma_read(w.space(), IOVA, 4, device=w.device)
    assert info.value.reason is FaultReason.NOT_MAPPED
    assert "not attached" in info.value.detail
    container = w.open(FileKind.CONTAINER)
    group = w.open(FileKind.GROUP, w.group_id)
    w.attach(group, container)
    with pytest.raises(IommuFault):                           # no IOMMU set yet
        dma_read(w.space(), IOVA, 4)
    assert w.ioctl(container, V.VFIO_SET_IOMMU, arg=V.VFIO_TYPE1v2_IOMMU) == 0
    w.map(container, IOVA, buf.addr, PG)
    space = w.space()
    dma_write(space, IOVA, b"ok")
    assert w.ioctl(group, V.VFIO_GROUP_UNSET_CONTAINER) == 0
    # The last group left: the instance and its mappings are gone, a stale space included.
    for s in (space, w.space()):
        with pytest.raises(IommuFault):
            dma_write(s, IOVA, b"no")
    assert buf.at(0, 2) == b"ok"
    assert w.engine.faults.total == 4
    with pytest.raises(KeyError):
        w.engine.dma_space(999)


@pytest.mark.parametrize("via", ["container-personality", "iommufd"])
def test_iommufd_compat_ioas_dma(buf: Buffer, via: str) -> None:
    w = Self("iommufd" if via == "container-personality" else "type1")
    fd = w.open(FileKind.CONTAINER if via == "container-personality" else FileKind.IOMMUFD)
    group = w.open(FileKind.GROUP, w.group_id)
    w.attach(group, fd)
    w.map(fd, IOVA, buf.addr, 2 * PG)
    dma_write(w.engine.device_dma_space(w.device), IOVA + PG - 2, b"span")
    assert buf.at(PG - 2, 4) == b"span"
    w.unmap(fd, IOVA, 2 * PG)
    with pytest.raises(IommuFault) as info:
        dma_write(w.space(), IOVA, b"gone")
    assert info.value.reason is FaultReason.NOT_MAPPED
    assert buf.at(0, 4) == bytes(4)


def test_faults_reach_the_trace() -> None:
    from ioasidfs.daemon import Daemon
    out = io.StringIO()
    daemon = Daemon(load_config(None), JsonLinesTracer(out))
    with pytest.raises(IommuFault):
        dma_write(daemon.engine.dma_space(2), 0x4000, b"x", device="0000:00:02.0")
    [event] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert event["event"] == "iommu_fault"
    assert (event["iova"], event["device"], event["access"], event["reason"]) == (
        0x4000, "0000:00:02.0", "write", "not-mapped")
    assert event["time"] > 0
    text = io.StringIO()
    TextTracer(text).fault(daemon.engine.faults.records()[0])
    assert text.getvalue().startswith("[iommu fault] 1 ")


def test_faults_file_is_in_the_mount_but_not_bound_into_dev() -> None:
    tree = DevTree(load_config(None))
    node = tree.root.children["faults"]
    assert node.kind is FileKind.FAULTS and node.mode & 0o777 == 0o444
    assert "faults" not in tree.top_level_names()
    assert "faults" not in sum(tree.top_level_split(), ())
    engine = Engine(load_config(None))
    for i in range(3):
        engine.faults.record(float(i), i * PG, "dev", "read", FaultReason.NOT_MAPPED, 1)
    file = engine.open(FileKind.FAULTS, None, Caller(pid=1, memory=ProcessMemory(os.getpid())))
    engine.faults.record(9.0, 0, "dev", "read", FaultReason.NOT_MAPPED, 1)  # after open
    text = file.read(Caller(pid=1, memory=ProcessMemory(os.getpid())), 0, 1 << 20)
    assert len(text.splitlines()) == 3
    assert file.read(Caller(pid=1, memory=ProcessMemory(os.getpid())), 5, 4) == text[5:9]
    with pytest.raises(KernelError) as info:
        file.ioctl(Caller(pid=1, memory=ProcessMemory(os.getpid())), 0x3B64, 0)
    assert info.value.errno == errno.ENOTTY
