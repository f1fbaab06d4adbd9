"""A pin of shared memory outlives the process that mapped it (ioasidfs.engine.ioas.Pages).

The kernel pins the folios of a MAP_SHARED mapping; once pinned they are reached without the
mapping process (selftest iommufd_ioas.*.fork_gone). The engine keeps a reference on the file
behind the mapping while the pin lasts and translates the pinned pages through its window.
Here the mapping process is an in-memory fake; the file is a FakeFile whose bytes live in this
process, so the DMA below really moves bytes (process_vm_* to ourselves)."""
from __future__ import annotations

import errno
import os
import struct
from typing import Any

import pytest

from ioasidfs.config import load_config
from ioasidfs.devices import dma
from ioasidfs.engine import Engine, FileKind
from ioasidfs.engine.caller import PAGE_SIZE, Caller, FakeFile, FakeMemory
from ioasidfs.engine.ioas import Domain, Ioas, U64_MAX
from ioasidfs.engine.iommufd_mock import PageIdentities, iopte
from ioasidfs.engine.translate import FaultReason
from ioasidfs.engine.type1 import Type1Iommu
from ioasidfs.uapi import vfio as V
from ioasidfs.errors import IommuFault, KernelError

RW = 3
SHARED = 0x10_0000      # the mapper's MAP_SHARED mapping of ``file``: 4 pages
PRIVATE = SHARED + 4 * PAGE_SIZE  # right after it: 4 pages of private memory
IOVA = 0x40_0000
FILE = (0, 1, 4242)  # the shmem file's (device major, minor, inode)
NO_SUCH_PID = 0x7FFF_FFF0  # beyond any pid_max: pidfd_open fails, the DMA layer sees it gone


class Mapper:
    """The process that maps: alive until ``exit()``, then every look at it is ESRCH."""

    def __init__(self) -> None:
        self.memory = FakeMemory()
        self.file = FakeFile(8 * PAGE_SIZE, identity=FILE)
        self.memory.map_shared(SHARED, self.file, PAGE_SIZE, 4 * PAGE_SIZE)
        self.memory.map(PRIVATE, 4 * PAGE_SIZE)
        self.alive = True
        self.caller = Caller(pid=NO_SUCH_PID, memory=self.memory,
                             start_time=self._checked(lambda: 1),
                             check_user_range=self._checked(self.memory.scan_pin),
                             keep_shared=self._checked(self.memory.keep_shared),
                             can_lock_memory=lambda: True)

    def _checked(self, look):  # type: ignore[no-untyped-def]
        def checked(*args):  # type: ignore[no-untyped-def]
            if not self.alive:
                raise KernelError(errno.ESRCH, "the mapper has exited")
            return look(*args)
        return checked

    def exit(self) -> None:
        self.alive = False

    def open_references(self) -> list[FakeFile]:
        return [ref for ref in self.file.references if not ref.closed]


def _domain() -> Domain:
    return Domain(PAGE_SIZE, 0, U64_MAX, True)


def _space(ioas: Ioas) -> dma.DmaSpace:
    return dma.DmaSpace(ioas.table, ioas.owners.key, dma.FaultLog())


def test_a_pinned_shared_mapping_is_reached_after_its_mapper_exits() -> None:
    mapper = Mapper()
    ioas = Ioas()
    ioas.add_domain(_domain())
    ioas.map_user(mapper.caller, IOVA, SHARED, 4 * PAGE_SIZE, RW, account_mm=False)
    mapper.exit()
    ioas.add_domain(_domain())  # already pinned: nothing to pin from the gone process
    space = _space(ioas)
    dma.dma_write(space, IOVA + PAGE_SIZE + 5, b"pinned")
    # The file's bytes, at the mapping's offset (one page into the file).
    assert mapper.file.data[2 * PAGE_SIZE + 5:2 * PAGE_SIZE + 11] == b"pinned"
    assert bytes(dma.dma_read(space, IOVA + PAGE_SIZE + 5, 6)) == b"pinned"
    assert len(mapper.open_references()) == 1


def test_private_memory_of_an_exited_mapper_still_faults() -> None:
    """One area over the shared mapping and the private memory after it: the shared half is
    kept, the private half dies with the process (reached through it: OWNER_EXITED)."""
    mapper = Mapper()
    ioas = Ioas()
    ioas.add_domain(_domain())
    ioas.map_user(mapper.caller, IOVA, SHARED, 8 * PAGE_SIZE, RW, account_mm=False)
    mapper.exit()
    space = _space(ioas)
    dma.dma_write(space, IOVA, b"ok")
    with pytest.raises(IommuFault) as fault:
        dma.dma_read(space, IOVA + 4 * PAGE_SIZE, 8)
    assert fault.value.reason is FaultReason.OWNER_EXITED
    with pytest.raises(IommuFault):  # a read across both halves is one blocked transaction
        dma.dma_read(space, IOVA + 4 * PAGE_SIZE - 4, 8)


def test_without_a_domain_nothing_is_pinned_and_the_exited_mapper_cannot_be() -> None:
    """fork_gone without a domain: MAP pins nothing, so nothing is kept, and the first domain
    must pin pages of a process that has gone: EFAULT."""
    mapper = Mapper()
    ioas = Ioas()
    ioas.map_user(mapper.caller, IOVA, SHARED, 4 * PAGE_SIZE, RW, account_mm=False)
    assert mapper.file.references == []
    mapper.exit()
    with pytest.raises(KernelError) as error:
        ioas.add_domain(_domain())
    assert error.value.errno == errno.EFAULT
    assert mapper.file.references == [] and ioas.domains == []


def test_the_reference_goes_with_the_pin() -> None:
    mapper = Mapper()
    ioas = Ioas()
    domain = _domain()
    ioas.map_user(mapper.caller, IOVA, SHARED, 4 * PAGE_SIZE, RW, account_mm=False)
    ioas.add_domain(domain)  # the pin: a reference and its window
    (reference,) = mapper.open_references()
    assert reference.windows == [(PAGE_SIZE, 4 * PAGE_SIZE)]
    assert ioas.owners.key(ioas.table.lookup(IOVA).owner) == (os.getpid(), 0)  # type: ignore[union-attr]
    ioas.remove_domain(domain)  # unpinned: released, reached through the process again
    assert reference.closed and reference.windows == []
    assert ioas.owners.key(ioas.table.lookup(IOVA).owner) == (NO_SUCH_PID, 1)  # type: ignore[union-attr]
    ioas.add_domain(domain)
    assert len(mapper.open_references()) == 1
    ioas.unmap_all()
    assert mapper.open_references() == [] and len(mapper.file.references) == 2


def test_pages_shared_by_two_ioases_stay_kept_until_both_unpin() -> None:
    """IOAS_COPY: one pages object, pinned by an area in each IOAS; the reference is the
    pages', taken once and dropped when the last pin goes."""
    mapper = Mapper()
    first, second = Ioas(), Ioas()
    first.add_domain(_domain())
    second.add_domain(_domain())
    first.map_user(mapper.caller, IOVA, SHARED, 4 * PAGE_SIZE, RW, account_mm=False)
    second.map_segments(first.get_pages(IOVA, 4 * PAGE_SIZE), 4 * PAGE_SIZE, IOVA, RW)
    assert len(mapper.file.references) == 1
    mapper.exit()
    first.unmap_all()
    assert len(mapper.open_references()) == 1
    dma.dma_write(_space(second), IOVA, b"copy")
    assert mapper.file.data[PAGE_SIZE:PAGE_SIZE + 4] == b"copy"
    second.unmap_all()
    assert mapper.open_references() == []


def test_a_failed_pin_keeps_nothing() -> None:
    """A pin that fails (a page past the mapping: EFAULT) takes no reference."""
    mapper = Mapper()
    ioas = Ioas()
    ioas.add_domain(_domain())
    with pytest.raises(KernelError) as error:
        ioas.map_user(mapper.caller, IOVA, SHARED, 9 * PAGE_SIZE, RW, account_mm=False)
    assert error.value.errno == errno.EFAULT
    assert mapper.file.references == [] and len(ioas.table) == 0


def test_a_kept_page_is_still_the_files_for_the_selftests_page_checks() -> None:
    """MD_CHECK_MAP after fork_gone: the parent's buffer and the exited child's pinned pages
    are the same shmem pages (the kernel compares struct pages); private ones stay the
    child's."""
    mapper = Mapper()
    ioas = Ioas()
    ioas.add_domain(_domain())
    ioas.map_user(mapper.caller, IOVA, SHARED, 8 * PAGE_SIZE, RW, account_mm=False)
    mapper.exit()
    parent = Caller(pid=os.getpid(), memory=FakeMemory(),
                    shared_mappings=lambda start, end: [(SHARED, PRIVATE, FILE, PAGE_SIZE)])
    identities = PageIdentities()
    assert iopte(ioas, IOVA + 2 * PAGE_SIZE + 8, identities) == (FILE, 3 * PAGE_SIZE + 8) \
        == identities.of_caller(parent, SHARED + 2 * PAGE_SIZE + 8)
    assert iopte(ioas, IOVA + 4 * PAGE_SIZE, identities) == ((NO_SUCH_PID, 1), PRIVATE)


# ---------------------------------------------------------------- type1 (VFIO_IOMMU_MAP_DMA)

ARG = 0x1000  # where the helper's ioctl arguments live


def _type1_with_a_helper_mapping() -> tuple[Mapper, Engine, Any, Type1Iommu]:
    """A type1v2 container holding group 1, and a helper process (the Mapper) that maps its
    shared + private memory at IOVA with MAP_DMA; the container's fds are the helper's."""
    mapper = Mapper()
    mapper.memory.map(ARG, PAGE_SIZE)
    engine = Engine(load_config(None), still_open=lambda f: True)
    fds: dict[int, object] = {}
    mapper.caller.resolve_fd = fds.__getitem__
    container = engine.open(FileKind.CONTAINER, None, mapper.caller)
    group = engine.open(FileKind.GROUP, 1, mapper.caller)
    fds[3] = container
    mapper.memory.write(ARG, struct.pack("<i", 3))
    group.ioctl(mapper.caller, V.VFIO_GROUP_SET_CONTAINER, ARG)
    container.ioctl(mapper.caller, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    mapper.memory.write(ARG, V.DMA_MAP.pack(argsz=32, flags=RW, vaddr=SHARED, iova=IOVA,
                                            size=8 * PAGE_SIZE))
    container.ioctl(mapper.caller, V.VFIO_IOMMU_MAP_DMA, ARG)
    iommu = container.container.iommu
    assert isinstance(iommu, Type1Iommu)
    return mapper, engine, container, iommu


def test_type1_dma_reaches_a_helpers_shared_memory_after_it_exits() -> None:
    mapper, engine, container, iommu = _type1_with_a_helper_mapping()
    (reference,) = mapper.open_references()
    mapper.exit()
    space = engine.dma_space(1)
    dma.dma_write(space, IOVA + 8, b"type1")
    assert mapper.file.data[PAGE_SIZE + 8:PAGE_SIZE + 13] == b"type1"
    with pytest.raises(IommuFault) as fault:  # its private memory went with it
        dma.dma_read(space, IOVA + 4 * PAGE_SIZE, 8)
    assert fault.value.reason is FaultReason.OWNER_EXITED
    iommu.release()  # the container goes: the pin, and the reference with it
    assert reference.closed and reference.windows == []
