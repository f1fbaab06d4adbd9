"""What a pin of shared memory holds beyond the process that mapped it.

The kernel pins pages, not addresses: a pinned folio of a MAP_SHARED mapping (shmem, shared
anonymous memory, a memfd, hugetlbfs, a file) belongs to the file's page cache and stays
reachable by the device after the mapping process has exited, unmapped or remapped the
addresses (selftest iommufd_ioas.*.fork_gone; a VFIO client whose helper process mapped the
memory). We reach client memory through the client's address space, so a pin of shared memory
also takes a reference on the file behind the mapping (``Caller.keep_shared``) and a window of
ours over it (``CallerFile.window``), and the pinned bytes are translated through that window
until the pin goes. Private memory has no such object: its pages are reached through the
process, and DMA to them fails once it has gone. Both iommufd's pages (``ioas.Pages``) and
type1's mappings (``type1``) pin, and both keep through here.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import KernelError
from .caller import Caller, ProcessKey, SharedPin


@dataclass
class KeptShared:
    """One kept reference: the mapping process's addresses [start, end) (inside what was
    pinned) are reached through ``window`` in ``owner``'s address space, a mapping of the
    pin's file whose first byte stands for the address ``origin`` (``pin.start`` until the
    mapping is given a new address, :meth:`rebase`)."""

    start: int
    end: int
    pin: SharedPin
    owner: ProcessKey
    window: int
    origin: int

    def address(self, vaddr: int) -> int:
        """The window address of the mapping process's address ``vaddr``."""
        return self.window + vaddr - self.origin

    def rebase(self, delta: int) -> None:
        """The pinned pages are now named ``delta`` bytes further on (type1's
        VFIO_DMA_MAP_FLAG_VADDR): the same pages, new addresses."""
        self.start += delta
        self.end += delta
        self.origin += delta

    def release(self) -> None:
        self.pin.file.unmap_window(self.window, self.pin.end - self.pin.start)
        self.pin.file.close()


def keep_shared(source: Caller, start: int, end: int) -> list[KeptShared]:
    """Pinned [start, end) of ``source``'s memory: keep each shared mapping there. A reference
    whose window cannot be made is dropped (those bytes stay reached through the process); a
    process gone since the pin's check keeps nothing."""
    try:
        pins = source.keep_shared(start, end)
    except KernelError:
        return []
    kept = []
    for pin in pins:
        owner, window = pin.file.window(pin.offset, pin.end - pin.start)
        if not window:
            pin.file.close()
            continue
        kept.append(KeptShared(max(start, pin.start), min(end, pin.end), pin, owner, window,
                               pin.start))
    return kept


def reach(kept: list[KeptShared], source: ProcessKey, vaddr: int,
          length: int) -> list[tuple[ProcessKey, int, int]]:
    """Where the mapping process's bytes [vaddr, vaddr+length) are reached now, as (owner,
    address, length) pieces in order: through the newest kept reference covering a byte (the
    list is oldest first), else through the process ``source`` itself."""
    end = vaddr + length
    if not kept:
        return [(source, vaddr, length)]
    cuts = {vaddr, end}
    for k in kept:
        for cut in (k.start, k.end):
            if vaddr < cut < end:
                cuts.add(cut)
    bounds = sorted(cuts)
    pieces: list[tuple[ProcessKey, int, int]] = []
    for lo, hi in zip(bounds, bounds[1:]):
        covering = [k for k in kept if k.start <= lo < k.end]
        owner, address = ((covering[-1].owner, covering[-1].address(lo)) if covering
                          else (source, lo))
        if pieces and pieces[-1][0] == owner and pieces[-1][1] + pieces[-1][2] == address:
            pieces[-1] = (owner, pieces[-1][1], pieces[-1][2] + hi - lo)
        else:
            pieces.append((owner, address, hi - lo))
    return pieces
