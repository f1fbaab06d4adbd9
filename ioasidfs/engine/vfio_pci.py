"""vfio-pci's core: what a device fd answers (drivers/vfio/pci/vfio_pci_core.c, vfio_pci_rdwr.c,
and the device part of drivers/vfio/vfio_main.c).

One :class:`VfioPciDevice` exists per device while any fd has it open (the kernel's
``vfio_pci_core_device`` between the first open and the last close): the config-space
virtualisation (:mod:`.vconfig`), the interrupt layer (:mod:`.irqs`), the ioeventfds and the
runtime power state. The physical function (``ioasidfs.devices``) lives as long as the daemon;
this layer is made at the first open (vfio_pci_core_enable) and undone at the last close
(vfio_pci_core_disable), so a new user starts from what the kernel would give it.

Regions: BAR0-5, ROM, CONFIG, VGA at ``index << 40``. BARs are reported READ|WRITE but never
MMAP: a FUSE file cannot be mapped with register semantics (every load and store reaching the
device model), so a driver must use pread/pwrite, which is what the kernel expects of a region
without the flag. The edu and generic models have no ROM; VGA is never present.
"""
from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..devices.pci import Bar, PciFunction
from ..errors import KernelError
from ..uapi import vfio as V
from .argsz import int_field, read_argsz_struct, read_s32
from .caller import Caller, EventSignal
from .irqs import VfioPciIrqs
from .vconfig import VirtualConfig, vfio_pci_disable, vfio_pci_enable

log = logging.getLogger("ioasidfs.engine")

_INFO_MINSZ = V.DEVICE_INFO.field_end("num_irqs")
_REGION_MINSZ = V.REGION_INFO.size
_HOT_RESET_INFO_MINSZ = V.PCI_HOT_RESET_INFO.field_end("count")
_HOT_RESET_MINSZ = V.PCI_HOT_RESET.field_end("count")
_IOEVENTFD_MINSZ = V.DEVICE_IOEVENTFD.field_end("fd")
_FEATURE_MINSZ = V.DEVICE_FEATURE.size
_WAKEUP_ENTRY_SIZE = 8  # struct vfio_device_low_power_entry_with_wakeup: s32 fd, u32 reserved
_IOEVENTFD_MAX = 1000  # VFIO_PCI_IOEVENTFD_MAX
_FEATURE_FLAGS = (V.VFIO_DEVICE_FEATURE_MASK | V.VFIO_DEVICE_FEATURE_GET
                  | V.VFIO_DEVICE_FEATURE_SET | V.VFIO_DEVICE_FEATURE_PROBE)
_RW = V.VFIO_REGION_INFO_FLAG_READ | V.VFIO_REGION_INFO_FLAG_WRITE

if TYPE_CHECKING:
    from ..devices.dma import DmaSpace

# A string: the DMA layer imports the client layer, which imports this package.
DmaSpaceOf = Callable[[], "DmaSpace"]


def region_offset(index: int) -> int:
    """VFIO_PCI_INDEX_TO_OFFSET."""
    return index << V.PCI_OFFSET_SHIFT


@dataclass(frozen=True)
class IoEventFd:
    """One VFIO_DEVICE_IOEVENTFD registration: when ``trigger`` is signalled, write ``data``
    (``count`` bytes) at ``pos`` of BAR ``bar``."""

    bar: int
    pos: int
    data: int
    count: int


class VfioPciDevice:
    """vfio-pci's state of one device while it is open (``vfio_pci_core_device``).

    ``dma_space`` gives the address space the device's DMA goes through right now (the engine
    asks its group's attachment per transfer); ``release`` undoes vfio_pci_core_enable.
    """

    def __init__(self, function: PciFunction, dma_space: DmaSpaceOf) -> None:
        self.function = function
        self.dma_space = dma_space
        self.open_count = 0
        # vfio_pci_core_enable: the physical steps, then vfio_config_init's virtual view.
        self._saved = vfio_pci_enable(function, reset_works=self.reset_works)
        self.irqs = VfioPciIrqs(function)
        self.config = VirtualConfig(function, self.irqs)
        self.irqs.on_msi_vectors = self.config.msi_vectors_enabled
        self.ioeventfds: dict[IoEventFd, EventSignal] = {}
        self.pm_engaged = False
        self.pm_wakeup: EventSignal | None = None
        # vfio_device_cdev_opened(): bound through its cdev (set by device.CdevFile).
        self.cdev_opened = False

    def release(self) -> None:
        """vfio_pci_core_disable at the last close: interrupts torn down (their eventfd
        references dropped), ioeventfds and the wakeup eventfd dropped, then the function's
        open-time state restored with bus mastering off."""
        self.irqs.release()
        for trigger in self.ioeventfds.values():
            trigger.close()
        self.ioeventfds.clear()
        self._pm_exit()
        vfio_pci_disable(self.function, self._saved, reset_works=self.reset_works)

    # ------------------------------------------------------------------ info
    reset_works = False
    """Whether a function reset works (VFIO_DEVICE_FLAGS_RESET): none of our models has
    FLR, PM reset or a bus reset (the edu has none either: the VM says flags 0x2)."""

    def get_info(self, caller: Caller, arg: int) -> int:
        """vfio_pci_ioctl_get_info: no capabilities; writes back min(argsz, 24) bytes (6.1
        wrote 16 or 20: see tests/expected/device_ioctls.notes.md)."""
        raw, fields = read_argsz_struct(caller, arg, V.DEVICE_INFO, _INFO_MINSZ,
                                        "VFIO_DEVICE_GET_INFO")
        argsz = int_field(fields, "argsz")
        flags = V.VFIO_DEVICE_FLAGS_PCI | (V.VFIO_DEVICE_FLAGS_RESET if self.reset_works else 0)
        info = V.DEVICE_INFO.pack(argsz=argsz, flags=flags, num_regions=V.VFIO_PCI_NUM_REGIONS,
                                  num_irqs=V.VFIO_PCI_NUM_IRQS, cap_offset=0, pad=0)
        caller.memory.write(arg, info[:min(argsz, V.DEVICE_INFO.size)])
        return 0

    def _bar(self, index: int) -> Bar | None:
        return self.function.bars.get(index)

    def get_region_info(self, caller: Caller, arg: int) -> int:
        """vfio_pci_ioctl_get_region_info: 32 bytes in; argsz, index and cap_offset echoed."""
        raw, fields = read_argsz_struct(caller, arg, V.REGION_INFO, _REGION_MINSZ,
                                        "VFIO_DEVICE_GET_REGION_INFO")
        index = int_field(fields, "index")
        if index == V.VFIO_PCI_CONFIG_REGION_INDEX:
            size, flags = 256, _RW  # a conventional PCI function: no extended config space
        elif index <= V.VFIO_PCI_BAR5_REGION_INDEX:
            bar = self._bar(index)
            size = bar.size if bar is not None else 0
            flags = _RW if size else 0
        elif index == V.VFIO_PCI_ROM_REGION_INDEX:
            size, flags = 0, 0  # no option ROM
        else:
            # VGA only for a VGA-class device with VGA support; device-specific regions: none.
            raise KernelError(errno.EINVAL, f"no region {index}")
        V.REGION_INFO.write_fields(raw, flags=flags, size=size, offset=region_offset(index))
        caller.memory.write(arg, bytes(raw))
        return 0

    def get_irq_info(self, caller: Caller, arg: int) -> int:
        return self.irqs.get_irq_info(caller, arg)

    def set_irqs(self, caller: Caller, arg: int) -> int:
        return self.irqs.set_irqs(caller, arg)

    def reset(self, caller: Caller, arg: int) -> int:
        """vfio_pci_ioctl_reset: EINVAL without a working function reset, which is every
        model here (a model with FLR would go through vconfig.reset_function)."""
        raise KernelError(errno.EINVAL, f"{self.function.name} has no function reset")

    def get_pci_hot_reset_info(self, caller: Caller, arg: int) -> int:
        """No slot or bus reset: our functions sit on the root bus (as the edu does in the VM)."""
        read_argsz_struct(caller, arg, V.PCI_HOT_RESET_INFO, _HOT_RESET_INFO_MINSZ,
                          "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO")
        raise KernelError(errno.ENODEV, f"{self.function.name}: no slot or bus reset")

    def pci_hot_reset(self, caller: Caller, arg: int) -> int:
        """vfio_pci_ioctl_pci_hot_reset: a zero count (the devices of the iommufd) is for a
        device opened through its cdev and required there; then no reset exists (ENODEV)."""
        _, fields = read_argsz_struct(caller, arg, V.PCI_HOT_RESET, _HOT_RESET_MINSZ,
                                      "VFIO_DEVICE_PCI_HOT_RESET")
        if int_field(fields, "flags"):
            raise KernelError(errno.EINVAL, "VFIO_DEVICE_PCI_HOT_RESET: flags must be 0")
        if (int_field(fields, "count") != 0) == self.cdev_opened:
            raise KernelError(errno.EINVAL, "a zero-length group list is for cdev-opened devices"
                              " (and only for them)")
        raise KernelError(errno.ENODEV, f"{self.function.name}: no slot or bus reset")

    # ------------------------------------------------------------------ ioeventfd
    def ioeventfd(self, caller: Caller, arg: int) -> int:
        """vfio_pci_ioctl_ioeventfd + vfio_pci_ioeventfd (upstream: 8-byte ones refused)."""
        _, fields = read_argsz_struct(caller, arg, V.DEVICE_IOEVENTFD, _IOEVENTFD_MINSZ,
                                      "VFIO_DEVICE_IOEVENTFD")
        flags = int_field(fields, "flags")
        if flags & ~V.VFIO_DEVICE_IOEVENTFD_SIZE_MASK:
            raise KernelError(errno.EINVAL, f"unknown ioeventfd flags {flags:#x}")
        count = flags & V.VFIO_DEVICE_IOEVENTFD_SIZE_MASK
        if bin(count).count("1") != 1:
            raise KernelError(errno.EINVAL, f"ioeventfd size bits {count:#x} are not one size")
        fd = int_field(fields, "fd")
        if fd < -1:
            raise KernelError(errno.EINVAL, f"ioeventfd fd {fd}")
        offset = int_field(fields, "offset")
        index, pos = offset >> V.PCI_OFFSET_SHIFT, offset & V.PCI_OFFSET_MASK
        if index > V.VFIO_PCI_BAR5_REGION_INDEX:
            raise KernelError(errno.EINVAL, "ioeventfds only go into BARs")
        bar = self._bar(index)
        if pos + count > (bar.size if bar is not None else 0):
            raise KernelError(errno.EINVAL, f"{count} bytes at {pos:#x} are beyond BAR{index}")
        msix = self.function.msix
        if msix is not None and index == msix.table_bar and \
                not (pos + count <= msix.table_offset or pos >= msix.table_offset + msix.table_size):
            raise KernelError(errno.EINVAL, "an ioeventfd may not write the MSI-X table")
        if count == 8:
            raise KernelError(errno.EINVAL, "8-byte ioeventfds are refused (upstream >= 6.14)")
        key = IoEventFd(index, pos, int_field(fields, "data"), count)
        existing = self.ioeventfds.get(key)
        if existing is not None:
            if fd != -1:
                raise KernelError(errno.EEXIST, "that ioeventfd is already registered")
            existing.close()
            del self.ioeventfds[key]
            return 0
        if fd < 0:
            raise KernelError(errno.ENODEV, "no such ioeventfd to remove")
        if len(self.ioeventfds) >= _IOEVENTFD_MAX:
            raise KernelError(errno.ENOSPC, f"{_IOEVENTFD_MAX} ioeventfds already")
        self.ioeventfds[key] = caller.eventfd(fd)
        return 0

    def fire_ioeventfd(self, key: IoEventFd) -> None:
        """The eventfd of ``key`` was signalled: do its write (vfio_pci_ioeventfd_handler;
        dropped while memory decode is off)."""
        if key not in self.ioeventfds or not self.config.memory_enabled:
            return
        self.function.mmio_write(key.bar, key.pos, key.count, key.data)
        self.run_device_work()

    # ------------------------------------------------------------------ features
    def feature(self, caller: Caller, arg: int) -> int:
        """vfio_ioctl_device_feature (vfio_main.c) and vfio_pci_core_ioctl_feature."""
        _, fields = read_argsz_struct(caller, arg, V.DEVICE_FEATURE, _FEATURE_MINSZ,
                                      "VFIO_DEVICE_FEATURE")
        argsz, flags = int_field(fields, "argsz"), int_field(fields, "flags")
        if flags & ~_FEATURE_FLAGS:
            raise KernelError(errno.EINVAL, f"VFIO_DEVICE_FEATURE: unknown flags {flags:#x}")
        both = V.VFIO_DEVICE_FEATURE_GET | V.VFIO_DEVICE_FEATURE_SET
        if not flags & V.VFIO_DEVICE_FEATURE_PROBE and flags & both == both:
            raise KernelError(errno.EINVAL, "GET and SET together need PROBE")
        index = flags & V.VFIO_DEVICE_FEATURE_MASK
        data = arg + _FEATURE_MINSZ
        size = argsz - _FEATURE_MINSZ
        if index == V.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY:
            if not _check_feature(flags, size, V.VFIO_DEVICE_FEATURE_SET, 0):
                return 0
            return self._pm_entry(None)
        if index == V.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP:
            if not _check_feature(flags, size, V.VFIO_DEVICE_FEATURE_SET, _WAKEUP_ENTRY_SIZE):
                return 0
            wakeup_fd = read_s32(caller, data)
            if wakeup_fd < 0:
                raise KernelError(errno.EINVAL, f"wakeup eventfd {wakeup_fd}")
            wakeup = caller.eventfd(wakeup_fd)
            try:
                return self._pm_entry(wakeup)
            except KernelError:
                wakeup.close()
                raise
        if index == V.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT:
            if not _check_feature(flags, size, V.VFIO_DEVICE_FEATURE_SET, 0):
                return 0
            self._pm_exit()
            return 0
        # VF token (not an SR-IOV PF), migration, dirty logging, bus master (CDX only)...
        raise KernelError(errno.ENOTTY, f"vfio-pci has no device feature {index} for this device")

    def _pm_entry(self, wakeup: EventSignal | None) -> int:
        if self.pm_engaged:
            raise KernelError(errno.EINVAL, "the device is already in low power")
        self.pm_engaged = True
        self.pm_wakeup = wakeup
        return 0

    def _pm_exit(self) -> None:
        self.pm_engaged = False
        if self.pm_wakeup is not None:
            self.pm_wakeup.close()
            self.pm_wakeup = None

    def runtime_resume(self) -> None:
        """Every ioctl takes a runtime-PM reference (vfio_device_pm_runtime_get): a device
        that entered low power with a wakeup eventfd is resumed, which signals the eventfd and
        leaves low power (vfio_pci_core_runtime_resume). The kernel suspends after a delay;
        here the device counts as suspended at once, so the answer never depends on timing."""
        if self.pm_engaged and self.pm_wakeup is not None:
            self.pm_wakeup.signal()
            self._pm_exit()

    # ------------------------------------------------------------------ regions
    def read(self, offset: int, size: int) -> bytes:
        index, pos = offset >> V.PCI_OFFSET_SHIFT, offset & V.PCI_OFFSET_MASK
        if index == V.VFIO_PCI_CONFIG_REGION_INDEX:
            return self.config.read(pos, size)
        if index <= V.VFIO_PCI_BAR5_REGION_INDEX:
            return self._bar_rw(index, pos, size, None)
        raise KernelError(errno.EINVAL, f"region {index} cannot be read")

    def write(self, offset: int, data: bytes) -> int:
        index, pos = offset >> V.PCI_OFFSET_SHIFT, offset & V.PCI_OFFSET_MASK
        if index == V.VFIO_PCI_CONFIG_REGION_INDEX:
            done = self.config.write(pos, data)
        elif index <= V.VFIO_PCI_BAR5_REGION_INDEX:
            done = len(self._bar_rw(index, pos, len(data), data))
        else:
            raise KernelError(errno.EINVAL, f"region {index} cannot be written")
        self.run_device_work()
        return done

    def _bar_rw(self, index: int, pos: int, count: int, data: bytes | None) -> bytes:
        """vfio_pci_bar_rw + do_io_rw: count cut at the BAR's end, then naturally aligned
        pieces of 8 (memory BARs, upstream >= 6.14), 4, 2 or 1 bytes; the MSI-X table range
        reads as 0xff and drops writes; memory decode off in the *virtual* command register
        fails EIO. Returns the bytes read, or for a write the bytes consumed."""
        bar = self._bar(index)
        if bar is None:
            raise KernelError(errno.EINVAL, f"BAR{index} is not implemented")
        if pos >= bar.size:
            raise KernelError(errno.EINVAL, f"offset {pos:#x} is beyond BAR{index}")
        count = min(count, bar.size - pos)
        x_start = x_end = 0
        msix = self.function.msix
        if msix is not None and msix.table_bar == index:
            x_start, x_end = msix.table_offset, msix.table_offset + msix.table_size
        widest = 4 if bar.is_io else 8
        out = bytearray()
        done = 0
        while done < count:
            off = pos + done
            if off < x_start:
                fillable = min(count - done, x_start - off)
            elif off >= x_end:
                fillable = count - done
            else:
                fillable = 0
            if fillable == 0:
                filled = min(count - done, x_end - off)
                if data is None:
                    out += b"\xff" * filled
                done += filled
                continue
            width = next(w for w in (8, 4, 2, 1) if w <= widest and fillable >= w and off % w == 0)
            if not bar.is_io and not self.config.memory_enabled:
                raise KernelError(errno.EIO, f"BAR{index} access with memory decode disabled")
            if data is None:
                out += self.function.mmio_read(index, off, width).to_bytes(width, "little")
            else:
                value = int.from_bytes(data[done:done + width], "little")
                self.function.mmio_write(index, off, width, value)
            done += width
        return bytes(out) if data is None else bytes(count)

    def run_device_work(self) -> None:
        """Let the device finish what an access started (a DMA, a computation) before the
        access returns: status bits and interrupts are then as a polling driver will find them,
        with no sleeps. DMA goes through the address space the group is attached to now."""
        if self.function.work_pending:
            self.function.attach_dma(self.dma_space())
            self.function.tick()


def _check_feature(flags: int, argsz: int, supported: int, minsz: int) -> bool:
    """vfio_check_feature: False for a successful PROBE (answer 0), True to go on; EINVAL for
    an unsupported GET/SET, neither of them without PROBE, or a short payload."""
    wanted = flags & (V.VFIO_DEVICE_FEATURE_GET | V.VFIO_DEVICE_FEATURE_SET)
    if wanted & ~supported:
        raise KernelError(errno.EINVAL, "the feature does not support that operation")
    if flags & V.VFIO_DEVICE_FEATURE_PROBE:
        return False
    if not wanted:
        raise KernelError(errno.EINVAL, "neither GET nor SET")
    if argsz < minsz:
        raise KernelError(errno.EINVAL, f"feature payload of {argsz} bytes, {minsz} needed")
    return True
