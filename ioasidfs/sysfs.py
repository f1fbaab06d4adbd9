"""The fake sysfs: what VFIO userspace drivers read to discover a device, laid out as the kernel
lays it out, so that the kernel's relative symbolic links resolve exactly as on a real machine.

Everything lives under the tree's root directory ``sys`` (never bound into /dev). ``ioasidfs
mount`` shows it at ``MOUNTPOINT/sys/...``; ``ioasidfs run`` binds its four subtrees over the
machine's (:data:`BIND_TARGETS`, :func:`ioasidfs.namespace.bind_sysfs`)::

    sys/devices/pci0000:00/<bdf>/                     0755 one per configured device
        vendor device subsystem_vendor subsystem_device    0444 "0x%04x\\n"
        revision                                        0444 "0x%02x\\n"
        class                                           0444 "0x%06x\\n"
        config                                          0644 the physical config space, live
        irq                                             0444 "%u\\n": the Interrupt Line register
        numa_node                                       0444 "-1\\n"
        local_cpulist                                   0444 the machine's online CPUs
        modalias                                        0444 "pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X\\n"
        resource                                        0444 13 lines "0x%016llx 0x%016llx 0x%016llx\\n"
        uevent                                          0444 DRIVER, PCI_CLASS, PCI_ID, ...
        iommu_group -> ../../../kernel/iommu_groups/<N>
        driver -> ../../../bus/pci/drivers/vfio-pci
        subsystem -> ../../../bus/pci
        vfio-dev/vfio<I>/                              0755 I: the device's index, as /dev/vfio/devices/vfioI
            device -> ../../../<bdf>
    sys/bus/pci/devices/<bdf> -> ../../../devices/pci0000:00/<bdf>
    sys/bus/pci/drivers/vfio-pci/<bdf> -> ../../../../devices/pci0000:00/<bdf>
    sys/kernel/iommu_groups/<N>/
        devices/<bdf> -> ../../../../devices/pci0000:00/<bdf>
        reserved_regions                                0444 "0x%016llx 0x%016llx %s\\n" per region
        type                                            0644 "DMA\\n"

Formats are the kernel's (drivers/pci/pci-sysfs.c, drivers/iommu/iommu.c). ``config`` reads as
the kernel's bin attribute does: 256 bytes for root, the first 64 for anyone else (the kernel
asks for CAP_SYS_ADMIN when the file was opened; we look at the reader's uid on its first read),
split into naturally aligned 1/2/4-byte physical reads; root may write it (physical writes,
behind vfio-pci's back, as on a real machine). ``type`` is what the kernel shows for the
default domain of a group behind QEMU's intel-iommu, which forces strict invalidation (caching
mode): ``DMA``, not ``DMA-FQ``; writing it fails EPERM (a driver owns the group) or EINVAL.
Read-only attributes refuse a write open with EACCES, even for root (kernfs_fop_open).

Not there: the device's ``enable`` (it changes with vfio-pci's opens), ``driver_override``,
``dma_mask_bits``, ``local_cpus``, ``power/``, ``msi_irqs/``, ``resourceN`` files (no mmap),
the driver's ``bind``/``unbind``/``new_id``, ``vfio-dev/vfioN/dev`` (our nodes are not character
devices), ``/sys/class/vfio-dev``. Every device is shown bound to vfio-pci, also in a group the
configuration marks not viable.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, Callable

from .config import Config, DeviceConfig, GroupConfig, ReservedRegion
from .devices.pci import (BASE_ADDRESS_0, BAR_SPACE_IO, CONFIG_SPACE_SIZE, INTERRUPT_LINE,
                          decode_bar)
from .engine.caller import Caller
from .engine.files import FileKind, OpenFile
from .errors import KernelError

if TYPE_CHECKING:
    from .devtree import DevTree, Node
    from .engine import Engine

SYSFS_DIR = "sys"
"""The root-level directory of the tree that holds the fake sysfs."""

PCI_ROOT = "devices/pci0000:00"
DRIVER = "vfio-pci"

BIND_TARGETS = ("devices/pci0000:00", "bus/pci/devices", "bus/pci/drivers", "kernel/iommu_groups")
"""The subtrees ``ioasidfs run`` binds over the machine's ``/sys/<path>`` in its namespace."""

ATTRIBUTE_SIZE = 4096
"""st_size of every sysfs attribute (a page), whatever it shows."""

UNPRIVILEGED_CONFIG_SIZE = 64
"""How much of ``config`` a reader without CAP_SYS_ADMIN sees (pci_read_config)."""

PCI_NUM_RESOURCES = 13
"""Lines of ``resource`` for a device that is not a bridge: 6 BARs, the ROM, 6 SR-IOV BARs
(PCI_BRIDGE_RESOURCES with CONFIG_PCI_IOV, as every distribution kernel has)."""

# include/linux/ioport.h
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
IORESOURCE_PREFETCH = 0x2000
IORESOURCE_SIZEALIGN = 0x40000
IORESOURCE_MEM_64 = 0x100000

GROUP_TYPE = "DMA"
"""What iommu_group_show_type prints for a DMA default domain (strict: QEMU's intel-iommu has
caching mode, which makes the kernel use strict invalidation, so not ``DMA-FQ``)."""
GROUP_TYPES = frozenset({"identity", "DMA", "DMA-FQ", "auto"})
"""What iommu_group_store_type accepts."""


# =========================================================================== open files
class SysfsFile(OpenFile):
    """An open attribute: its text as it was at open (a sysfs show() runs on the first read of
    an open file; ours never change while a device is bound anyway)."""

    kind = FileKind.SYSFS

    def __init__(self, text: bytes, store: "Callable[[Caller, bytes], None] | None" = None) -> None:
        self.text = text
        self.store = store

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        raise KernelError(errno.ENOTTY, "sysfs attributes have no ioctls")

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        if offset < 0:
            raise KernelError(errno.EINVAL, f"offset {offset}")
        return self.text[offset:offset + size]

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        if self.store is None:  # unreachable through an open: write opens are refused
            raise KernelError(errno.EACCES, "read-only sysfs attribute")
        self.store(caller, data)
        return len(data)


class ConfigFile(OpenFile):
    """An open ``config``: the function's physical config space, read and written live, in the
    naturally aligned 1/2/4-byte accesses pci_read_config / pci_write_config make."""

    kind = FileKind.SYSFS

    def __init__(self, read: Callable[[int, int], int], write: Callable[[int, int, int], None],
                 size: int = CONFIG_SPACE_SIZE) -> None:
        self._read = read
        self._write = write
        self.size = size
        self._visible: int | None = None  # decided on the first read, from the reader's uid

    def ioctl(self, caller: Caller, cmd: int, arg: int) -> int:
        raise KernelError(errno.ENOTTY, "sysfs attributes have no ioctls")

    def read(self, caller: Caller, offset: int, size: int) -> bytes:
        if offset < 0:
            raise KernelError(errno.EINVAL, f"offset {offset}")
        if self._visible is None:
            self._visible = self.size if caller.uid() == 0 else UNPRIVILEGED_CONFIG_SIZE
        end = min(offset + size, self._visible)
        out = bytearray()
        for at, width in _accesses(offset, end):
            out += self._read(at, width).to_bytes(width, "little")
        return bytes(out)

    def write(self, caller: Caller, offset: int, data: bytes) -> int:
        if offset < 0:
            raise KernelError(errno.EINVAL, f"offset {offset}")
        end = min(offset + len(data), self.size)
        for at, width in _accesses(offset, end):
            self._write(at, width, int.from_bytes(data[at - offset:at - offset + width], "little"))
        return max(end - offset, 0)


def _accesses(start: int, end: int) -> list[tuple[int, int]]:
    """(offset, width) of the accesses pci_read_config makes for [start, end): a byte to reach
    an even offset, a word to reach a dword boundary, dwords, then a word and a byte."""
    accesses = []
    at = start
    if at < end and at & 1:
        accesses.append((at, 1))
        at += 1
    if at + 2 <= end and at & 3:
        accesses.append((at, 2))
        at += 2
    while at + 4 <= end:
        accesses.append((at, 4))
        at += 4
    if at + 2 <= end:
        accesses.append((at, 2))
        at += 2
    if at < end:
        accesses.append((at, 1))
    return accesses


# =========================================================================== node keys
class Attribute:
    """The key of a ``FileKind.SYSFS`` node: what an open of it gives (``Engine.open`` calls
    :meth:`open`). ``size`` is its st_size; ``writable`` says whether a write open is allowed
    (the node's mode then has a write bit)."""

    size = ATTRIBUTE_SIZE
    writable = False

    def open(self, engine: "Engine") -> OpenFile:
        raise NotImplementedError


class TextAttribute(Attribute):
    """A text attribute; ``show`` renders it from the engine at each open."""

    def __init__(self, show: "Callable[[Engine], str]",
                 store: "Callable[[Caller, bytes], None] | None" = None) -> None:
        self.show = show
        self.store = store
        self.writable = store is not None

    def open(self, engine: "Engine") -> OpenFile:
        return SysfsFile(self.show(engine).encode(), self.store)


class ConfigAttribute(Attribute):
    """A device's ``config``."""

    size = CONFIG_SPACE_SIZE
    writable = True

    def __init__(self, bdf: str) -> None:
        self.bdf = bdf

    def open(self, engine: "Engine") -> OpenFile:
        function = engine.devices[self.bdf].function
        return ConfigFile(function.config_read, function.config_write)


def _static(text: str) -> TextAttribute:
    return TextAttribute(lambda engine: text)


# =========================================================================== contents
def modalias(device: DeviceConfig) -> str:
    cls = device.class_code
    return (f"pci:v{device.vendor:08X}d{device.device:08X}sv{device.subsystem_vendor:08X}"
            f"sd{device.subsystem_device:08X}bc{cls >> 16 & 0xFF:02X}sc{cls >> 8 & 0xFF:02X}"
            f"i{cls & 0xFF:02X}")


def uevent(device: DeviceConfig) -> str:
    """dev_uevent (DRIVER) then pci_uevent's variables."""
    return (f"DRIVER={DRIVER}\n"
            f"PCI_CLASS={device.class_code:04X}\n"
            f"PCI_ID={device.vendor:04X}:{device.device:04X}\n"
            f"PCI_SUBSYS_ID={device.subsystem_vendor:04X}:{device.subsystem_device:04X}\n"
            f"PCI_SLOT_NAME={device.bdf}\n"
            f"MODALIAS={modalias(device)}\n")


def resource(read: Callable[[int, int], int], sizes: dict[int, int]) -> str:
    """resource_show: start, end and flags of the 6 BARs, the ROM and the SR-IOV BARs, from
    the BAR registers as they are now. ``sizes``: BAR index -> size of the implemented BARs."""
    lines = []
    index = 0
    while index < PCI_NUM_RESOURCES:
        start = end = flags = 0
        size = sizes.get(index) if index < 6 else None
        step = 1
        if size is not None:
            low = read(BASE_ADDRESS_0 + 4 * index, 4)
            bar = decode_bar(low, read(BASE_ADDRESS_0 + 4 * index + 4, 4) if index < 5 else 0)
            start, end = bar.address, bar.address + size - 1
            if bar.io:
                flags = IORESOURCE_IO | IORESOURCE_SIZEALIGN | (low & 0x3)
            else:
                flags = IORESOURCE_MEM | IORESOURCE_SIZEALIGN | (low & 0xF)
                if bar.prefetchable:
                    flags |= IORESOURCE_PREFETCH
                if bar.is_64:
                    flags |= IORESOURCE_MEM_64
                    step = 2  # the upper half's resource stays empty
        lines.append(f"0x{start:016x} 0x{end:016x} 0x{flags:016x}\n")
        for _ in range(step - 1):
            lines.append(f"0x{0:016x} 0x{0:016x} 0x{0:016x}\n")
        index += step
    return "".join(lines)


def reserved_regions(regions: tuple[ReservedRegion, ...]) -> str:
    """iommu_group_show_resv_regions: one line per region, by start (inclusive ends)."""
    return "".join(f"0x{r.start:016x} 0x{r.end:016x} {r.type}\n"
                   for r in sorted(regions, key=lambda r: (r.start, r.end)))


def _store_group_type(caller: Caller, data: bytes) -> None:
    if caller.uid() != 0:
        raise KernelError(errno.EACCES, "changing a group's domain type needs CAP_SYS_ADMIN")
    if data.decode(errors="replace").strip() not in GROUP_TYPES:
        raise KernelError(errno.EINVAL, f"unknown domain type {data!r}")
    raise KernelError(errno.EPERM, "vfio-pci owns the group's devices")


def _online_cpus() -> str:
    try:
        with open("/sys/devices/system/cpu/online") as f:
            return f.read().strip() + "\n"
    except OSError:
        return f"0-{(os.cpu_count() or 1) - 1}\n"


def _irq_of(bdf: str) -> Callable[["Engine"], str]:
    return lambda engine: f"{engine.devices[bdf].function.config_read(INTERRUPT_LINE, 1)}\n"


def _resource_of(device: DeviceConfig) -> Callable[["Engine"], str]:
    sizes = {bar.index: bar.size for bar in device.bars}
    return lambda engine: resource(engine.devices[device.bdf].function.config_read, sizes)


# =========================================================================== the tree
def build_sysfs(tree: "DevTree", config: Config) -> "Node":
    """Add the ``sys`` directory with every device, its driver and its group; returns it."""
    root = _dir(tree, tree.root, SYSFS_DIR)
    pci_root = _mkdirs(tree, root, PCI_ROOT)
    bus_devices = _mkdirs(tree, root, "bus/pci/devices")
    driver = _mkdirs(tree, root, f"bus/pci/drivers/{DRIVER}")
    groups = _mkdirs(tree, root, "kernel/iommu_groups")
    cpus = _online_cpus()
    for index, device in enumerate(config.devices):
        _device_dir(tree, pci_root, device, index, cpus)
        _link(tree, bus_devices, device.bdf, f"../../../{PCI_ROOT}/{device.bdf}")
        _link(tree, driver, device.bdf, f"../../../../{PCI_ROOT}/{device.bdf}")
    for group in sorted(config.groups, key=lambda g: g.id):
        _group_dir(tree, groups, group, config)
    return root


def _device_dir(tree: "DevTree", parent: "Node", device: DeviceConfig, index: int,
                cpus: str) -> None:
    bdf = device.bdf
    node = _dir(tree, parent, bdf)
    for name, text in (("class", f"0x{device.class_code:06x}\n"),
                       ("device", f"0x{device.device:04x}\n"),
                       ("local_cpulist", cpus),
                       ("modalias", modalias(device) + "\n"),
                       ("numa_node", "-1\n"),
                       ("revision", f"0x{device.revision:02x}\n"),
                       ("subsystem_device", f"0x{device.subsystem_device:04x}\n"),
                       ("subsystem_vendor", f"0x{device.subsystem_vendor:04x}\n"),
                       ("uevent", uevent(device)),
                       ("vendor", f"0x{device.vendor:04x}\n")):
        _file(tree, node, name, _static(text), 0o444)
    _file(tree, node, "config", ConfigAttribute(bdf), 0o644)
    _file(tree, node, "irq", TextAttribute(_irq_of(bdf)), 0o444)
    _file(tree, node, "resource", TextAttribute(_resource_of(device)), 0o444)
    _link(tree, node, "driver", f"../../../bus/pci/drivers/{DRIVER}")
    _link(tree, node, "iommu_group", f"../../../kernel/iommu_groups/{device.group}")
    _link(tree, node, "subsystem", "../../../bus/pci")
    cdev = _mkdirs(tree, node, f"vfio-dev/vfio{index}")
    _link(tree, cdev, "device", f"../../../{bdf}")


def _group_dir(tree: "DevTree", parent: "Node", group: GroupConfig, config: Config) -> None:
    node = _dir(tree, parent, str(group.id))
    devices = _dir(tree, node, "devices")
    members = [d.bdf for d in config.devices if d.group == group.id] or list(group.devices)
    for bdf in sorted(set(members)):
        _link(tree, devices, bdf, f"../../../../{PCI_ROOT}/{bdf}")
    _file(tree, node, "reserved_regions",
          _static(reserved_regions(config.iommu.reserved_regions)), 0o444)
    _file(tree, node, "type", TextAttribute(lambda engine: GROUP_TYPE + "\n",
                                            _store_group_type), 0o644)


# --------------------------------------------------------------------------- node helpers
def _dir(tree: "DevTree", parent: "Node", name: str) -> "Node":
    existing = parent.children.get(name)
    if existing is not None:
        return existing
    return tree._add(name, None, 0o755, parent)


def _mkdirs(tree: "DevTree", parent: "Node", path: str) -> "Node":
    for name in path.split("/"):
        parent = _dir(tree, parent, name)
    return parent


def _file(tree: "DevTree", parent: "Node", name: str, key: Attribute, mode: int) -> "Node":
    return tree._add(name, FileKind.SYSFS, mode, parent, key=key)


def _link(tree: "DevTree", parent: "Node", name: str, target: str) -> "Node":
    node = tree._add(name, None, 0o777, parent)
    node.target = target
    node.mode = stat.S_IFLNK | 0o777
    return node
