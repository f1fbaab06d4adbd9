"""Configuration: the IOMMU, the container personality and the devices behind the groups.

A TOML file (read with tomllib) describes what the fake machine has. When none is given the
embedded ``default.toml`` is used: a QEMU q35 guest with an Intel IOMMU. Every value is checked
here, once, and a mistake is reported as one :class:`ConfigError` naming the file, the line and the
key, because a user who mistypes a key deserves better than a traceback or a silent default.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Mapping, TypeVar

from .errors import ConfigError

DEFAULT_CONFIG_NAME = "<embedded default>"

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_BDF_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")

EDU_VENDOR, EDU_DEVICE = 0x1234, 0x11E8


@dataclass(frozen=True)
class ReservedRegion:
    """An IOVA range the IOMMU will not translate (inclusive end), e.g. the MSI window."""

    start: int
    end: int
    type: str


@dataclass(frozen=True)
class IommuConfig:
    """The emulated IOMMU's geometry, shared by the type1 container and iommufd."""

    page_sizes: tuple[int, ...]
    address_width: int
    dma_entry_limit: int
    reserved_regions: tuple[ReservedRegion, ...]
    # Whether IOMMU domains enforce cache coherency (Intel snoop control). QEMU's intel-iommu
    # does not offer it, so VFIO_DMA_CC_IOMMU answers 0 once domains exist.
    enforce_cache_coherency: bool = False
    # Whether the IOMMU tracks dirty pages itself (a scalable-mode VT-d with second-level A/D
    # bits): iommufd then offers HWPT dirty tracking. QEMU's intel-iommu (legacy mode) does not.
    dirty_tracking: bool = False

    @property
    def pgsize_bitmap(self) -> int:
        bitmap = 0
        for size in self.page_sizes:
            bitmap |= size
        return bitmap

    @property
    def min_page_size(self) -> int:
        return min(self.page_sizes)

    @property
    def aperture_end(self) -> int:
        return (1 << self.address_width) - 1

    def iova_ranges(self) -> tuple[tuple[int, int], ...]:
        """The usable IOVA ranges (inclusive): the aperture minus the reserved regions.

        This is what the kernel derives in vfio_iommu_aper_resize / vfio_iommu_resv_exclude and
        reports in the IOVA_RANGE capability, so both front ends compute it from here.
        """
        ranges = [(0, self.aperture_end)]
        for region in sorted(self.reserved_regions, key=lambda r: r.start):
            kept: list[tuple[int, int]] = []
            for start, end in ranges:
                if region.end < start or region.start > end:
                    kept.append((start, end))
                    continue
                if start < region.start:
                    kept.append((start, region.start - 1))
                if region.end < end:
                    kept.append((region.end + 1, end))
            ranges = kept
        return tuple(ranges)


@dataclass(frozen=True)
class BarConfig:
    """One PCI BAR of a device model."""

    index: int
    size: int
    bits: int = 32
    prefetchable: bool = False
    io: bool = False
    # Where firmware put the BAR (None: allocated automatically, see devices/firmware.py).
    address: int | None = None


@dataclass(frozen=True)
class DeviceConfig:
    """One PCI function behind an IOMMU group."""

    bdf: str
    group: int
    model: str
    vendor: int
    device: int
    class_code: int
    subsystem_vendor: int
    subsystem_device: int
    revision: int
    bars: tuple[BarConfig, ...]
    intx: bool
    msi_vectors: int
    msix_vectors: int
    # The interrupt line firmware programmed (None: derived from slot and pin, firmware.py).
    interrupt_line: int | None = None


@dataclass(frozen=True)
class GroupConfig:
    """An IOMMU group; ``viable`` False models a device still bound to a host kernel driver.

    ``dirty_scope`` is what type1 dirty tracking can know about the group's DMA (the kernel's
    ``pinned_page_dirty_scope``): ``"all"`` -- a device behind a real IOMMU, which may write any
    mapped page unseen, so every mapped page is reported dirty (vfio-pci, the default);
    ``"pinned"`` -- the group's driver reaches memory only through pages it pins or through
    vfio_dma_rw (an mdev-style driver), so reports show exactly the pages its device wrote.
    """

    id: int
    viable: bool
    devices: tuple[str, ...]
    dirty_scope: str = "all"


@dataclass(frozen=True)
class Config:
    source: str
    iommu: IommuConfig
    container_personality: str
    devices: tuple[DeviceConfig, ...]
    groups: tuple[GroupConfig, ...] = field(default=())
    # ``[iommufd] test_cmd``: answer IOMMU_TEST_CMD with the mock domains and devices of
    # drivers/iommu/iommufd/selftest.c, as a kernel built with CONFIG_IOMMUFD_TEST does. Off by
    # default because production kernels are built without it (the ioctl is then ENOTTY);
    # scripts/kernel_selftest turns it on to run the kernel's own selftest.
    iommufd_test_cmd: bool = False

    def group(self, group_id: int) -> GroupConfig | None:
        for group in self.groups:
            if group.id == group_id:
                return group
        return None


def parse_size(value: object) -> int:
    """``4096``, ``"4K"``, ``"2M"``, ``"1GiB"`` -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    raise ValueError(f"expected a size such as 4096 or \"4K\", got {value!r}")


def load_config(path: str | None) -> Config:
    """Load and validate ``path``, or the embedded default when ``path`` is None."""
    if path is None:
        text = resources.files("ioasidfs").joinpath("default.toml").read_text()
        return parse_config(text, DEFAULT_CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, None, "", f"cannot read: {e.strerror}") from None
    return parse_config(text, path)


def parse_config(text: str, source: str) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        line = _decode_error_line(str(e))
        raise ConfigError(source, line, "", f"not valid TOML: {e}") from None
    return _Validator(text, source).config(data)


def _decode_error_line(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


T = TypeVar("T")
Path = tuple[str | int, ...]


class _Validator:
    """Turns the parsed TOML into a :class:`Config`, one checked key at a time."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source

    def fail(self, path: Path, message: str) -> ConfigError:
        return ConfigError(self.source, _line_of(self.text, path), _dotted(path), message)

    def table(self, data: Mapping[str, Any], path: Path, allowed: set[str]) -> Mapping[str, Any]:
        for key in data:
            if key not in allowed:
                raise self.fail(path + (key,), f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return data

    def get(self, data: Mapping[str, Any], path: Path, key: str, convert: Callable[[object], T],
            default: T | None = None) -> T:
        if key not in data:
            if default is None:
                raise self.fail(path, f"missing required key {key!r}")
            return default
        try:
            return convert(data[key])
        except (ValueError, TypeError) as e:
            raise self.fail(path + (key,), str(e)) from None

    def config(self, data: Mapping[str, Any]) -> Config:
        self.table(data, (), {"iommu", "container", "device", "groups", "iommufd"})
        iommu = self.iommu(_subtable(data, "iommu", self, ()))
        container = self.table(_subtable(data, "container", self, ()), ("container",), {"personality"})
        personality = self.get(container, ("container",), "personality", _choice("type1", "iommufd"), "type1")
        raw_devices = data.get("device", [])
        if not isinstance(raw_devices, list):
            raise self.fail(("device",), "must be an array of tables ([[device]])")
        devices = tuple(self.device(d, ("device", i)) for i, d in enumerate(raw_devices))
        seen: set[str] = set()
        for i, dev in enumerate(devices):
            if dev.bdf in seen:
                raise self.fail(("device", i, "bdf"), f"duplicate device {dev.bdf}")
            seen.add(dev.bdf)
        self.check_bar_overlaps(devices)
        groups = self.groups(_subtable(data, "groups", self, ()), devices)
        iommufd = self.table(_subtable(data, "iommufd", self, ()), ("iommufd",), {"test_cmd"})
        test_cmd = self.get(iommufd, ("iommufd",), "test_cmd", _bool, False)
        return Config(self.source, iommu, personality, devices, groups, iommufd_test_cmd=test_cmd)

    def check_bar_overlaps(self, devices: tuple[DeviceConfig, ...]) -> None:
        """Two explicit BAR addresses of the same space (memory or I/O) may not overlap."""
        placed: list[tuple[int, int, bool, str]] = []
        for i, dev in enumerate(devices):
            for j, bar in enumerate(dev.bars):
                if bar.address is None:
                    continue
                end = bar.address + bar.size
                for start, other_end, io, owner in placed:
                    if io == bar.io and bar.address < other_end and end > start:
                        raise self.fail(("device", i, "bars", j, "address"),
                                        f"{bar.address:#x}+{bar.size:#x} overlaps {owner}")
                placed.append((bar.address, end, bar.io, f"{dev.bdf} BAR{bar.index}"))

    def iommu(self, data: Mapping[str, Any]) -> IommuConfig:
        path: Path = ("iommu",)
        self.table(data, path, {"page_sizes", "address_width", "dma_entry_limit", "reserved_regions",
                                "enforce_cache_coherency", "dirty_tracking"})
        default_sizes: tuple[int, ...] = (4096, 2 << 20, 1 << 30)
        page_sizes = self.get(data, path, "page_sizes", _list_of(_page_size), default_sizes)
        if not page_sizes:
            raise self.fail(path + ("page_sizes",), "needs at least one page size")
        width = self.get(data, path, "address_width", _int_range(12, 64), 39)
        limit = self.get(data, path, "dma_entry_limit", _int_range(0, 0xFFFFFFFF), 65535)
        regions_raw = data.get("reserved_regions", [{"start": 0xFEE00000, "end": 0xFEEFFFFF, "type": "msi"}])
        if not isinstance(regions_raw, list):
            raise self.fail(path + ("reserved_regions",), "must be an array of {start, end, type}")
        regions = []
        for i, raw in enumerate(regions_raw):
            rpath = path + ("reserved_regions", i)
            if not isinstance(raw, dict):
                raise self.fail(rpath, "must be a table {start, end, type}")
            self.table(raw, rpath, {"start", "end", "type"})
            start = self.get(raw, rpath, "start", _int_range(0, (1 << 64) - 1))
            end = self.get(raw, rpath, "end", _int_range(0, (1 << 64) - 1))
            if end < start:
                raise self.fail(rpath + ("end",), "end is below start (ends are inclusive)")
            kind = self.get(raw, rpath, "type", _choice("msi", "direct", "reserved"), "reserved")
            regions.append(ReservedRegion(start, end, kind))
        coherent = self.get(data, path, "enforce_cache_coherency", _bool, False)
        dirty = self.get(data, path, "dirty_tracking", _bool, False)
        return IommuConfig(tuple(sorted(set(page_sizes))), width, limit, tuple(regions), coherent,
                           dirty)

    def device(self, raw: object, path: Path) -> DeviceConfig:
        if not isinstance(raw, dict):
            raise self.fail(path, "must be a table")
        model = self.get(raw, path, "model", _choice("edu", "generic"))
        common = {"bdf", "group", "model", "bars", "interrupt_line"}
        if model == "edu":
            self.table(raw, path, common)
        else:
            self.table(raw, path, common | {"vendor", "device", "class", "subsystem_vendor",
                                            "subsystem_device", "revision", "bars", "intx",
                                            "msi_vectors", "msix_vectors"})
        bdf = self.get(raw, path, "bdf", _bdf)
        group = self.get(raw, path, "group", _int_range(0, 0x7FFFFFFF))
        line = self.get(raw, path, "interrupt_line", _int_range(0, 0xFF), -1)
        interrupt_line = None if line == -1 else line
        bars_raw = raw.get("bars", [])
        if not isinstance(bars_raw, list):
            raise self.fail(path + ("bars",), "must be an array of {index, size, ...}")
        if model == "edu":
            # QEMU's edu: 1234:11e8 rev 0x10, class 0x00ff00, BAR0 1 MiB MMIO, INTx and one MSI.
            # Only where firmware put BAR0 can be chosen.
            bar0 = BarConfig(0, 1 << 20)
            for i, b in enumerate(bars_raw):
                bar0 = self.edu_bar(b, path + ("bars", i), bar0)
            return DeviceConfig(bdf, group, model, EDU_VENDOR, EDU_DEVICE, 0x00FF00, 0x1AF4, 0x1100,
                                0x10, (bar0,), True, 1, 0, interrupt_line)
        u16 = _int_range(0, 0xFFFF)
        bars = tuple(self.bar(b, path + ("bars", i)) for i, b in enumerate(bars_raw))
        return DeviceConfig(
            bdf, group, model,
            vendor=self.get(raw, path, "vendor", u16),
            device=self.get(raw, path, "device", u16),
            class_code=self.get(raw, path, "class", _int_range(0, 0xFFFFFF), 0xFF0000),
            subsystem_vendor=self.get(raw, path, "subsystem_vendor", u16, 0x1AF4),
            subsystem_device=self.get(raw, path, "subsystem_device", u16, 0x1100),
            revision=self.get(raw, path, "revision", _int_range(0, 0xFF), 0),
            bars=bars,
            intx=self.get(raw, path, "intx", _bool, True),
            msi_vectors=self.get(raw, path, "msi_vectors", _choice(0, 1, 2, 4, 8, 16, 32), 0),
            msix_vectors=self.get(raw, path, "msix_vectors", _int_range(0, 2048), 0),
            interrupt_line=interrupt_line,
        )

    def edu_bar(self, raw: object, path: Path, bar0: BarConfig) -> BarConfig:
        """An edu ``bars`` entry: ``{ index = 0, address = ... }``, nothing else (edu's BAR is
        fixed by the model)."""
        if not isinstance(raw, dict):
            raise self.fail(path, "must be a table {index = 0, address = ...}")
        self.table(raw, path, {"index", "address"})
        self.get(raw, path, "index", _choice(0))
        if "address" not in raw:
            return bar0
        address = self.get(raw, path, "address", _bar_address(bar0.size, 32, False))
        return BarConfig(0, bar0.size, address=address)

    def bar(self, raw: object, path: Path) -> BarConfig:
        if not isinstance(raw, dict):
            raise self.fail(path, "must be a table {index, size, ...}")
        self.table(raw, path, {"index", "size", "bits", "prefetchable", "io", "address"})
        index = self.get(raw, path, "index", _int_range(0, 5))
        size = self.get(raw, path, "size", _bar_size)
        bits = self.get(raw, path, "bits", _choice(32, 64), 32)
        if bits == 64 and index == 5:
            raise self.fail(path + ("bits",), "a 64-bit BAR needs the next BAR slot; BAR5 has none")
        io = self.get(raw, path, "io", _bool, False)
        address = None
        if "address" in raw:
            address = self.get(raw, path, "address", _bar_address(size, bits, io))
        return BarConfig(index, size, bits, self.get(raw, path, "prefetchable", _bool, False),
                         io, address)

    def groups(self, data: Mapping[str, Any], devices: tuple[DeviceConfig, ...]) -> tuple[GroupConfig, ...]:
        ids = sorted({d.group for d in devices})
        for key, raw in data.items():
            path: Path = ("groups", key)
            if not key.isdigit() or int(key) not in ids:
                raise self.fail(path, "names no group that a [[device]] is in")
            if not isinstance(raw, dict):
                raise self.fail(path, "must be a table")
            self.table(raw, path, {"viable", "dirty_scope"})
        result = []
        for gid in ids:
            settings = data.get(str(gid), {})
            viable = self.get(settings, ("groups", str(gid)), "viable", _bool, True)
            scope = self.get(settings, ("groups", str(gid)), "dirty_scope", _choice("all", "pinned"), "all")
            result.append(GroupConfig(gid, viable, tuple(d.bdf for d in devices if d.group == gid),
                                      scope))
        return tuple(result)


def _subtable(data: Mapping[str, Any], key: str, v: _Validator, path: Path) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise v.fail(path + (key,), "must be a table")
    return value


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _int_range(lo: int, hi: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if not lo <= value <= hi:
            raise ValueError(f"{value:#x} is out of range [{lo:#x}, {hi:#x}]")
        return value
    return convert


def _choice(*allowed: T) -> Callable[[object], T]:
    def convert(value: object) -> T:
        for choice in allowed:
            if value == choice and type(value) is type(choice):
                return choice
        raise ValueError(f"expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return convert


def _list_of(item: Callable[[object], T]) -> Callable[[object], tuple[T, ...]]:
    def convert(value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise ValueError(f"expected an array, got {value!r}")
        return tuple(item(v) for v in value)
    return convert


def _page_size(value: object) -> int:
    size = parse_size(value)
    if size < 4096 or size & (size - 1):
        raise ValueError(f"page size {value!r} is not a power of two of at least 4K")
    return size


def _bar_size(value: object) -> int:
    size = parse_size(value)
    if size < 16 or size & (size - 1):
        raise ValueError(f"BAR size {value!r} is not a power of two of at least 16 bytes")
    return size


def _bar_address(size: int, bits: int, io: bool) -> Callable[[object], int]:
    """A BAR address: non-zero (0 is an unassigned BAR), aligned to the BAR's size, and
    reachable by the BAR (32 bits, 64 bits, or the 64 KiB x86 I/O space)."""
    limit = 1 << (16 if io else bits)

    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer address, got {value!r}")
        if value <= 0 or value % size:
            raise ValueError(f"BAR address {value:#x} is not a non-zero multiple of its size "
                             f"{size:#x}")
        if value + size > limit:
            raise ValueError(f"BAR address {value:#x} + {size:#x} does not fit in "
                             f"{'the 64 KiB I/O space' if io else f'{bits} bits'}")
        return value
    return convert


def _bdf(value: object) -> str:
    if not isinstance(value, str) or not _BDF_RE.match(value):
        raise ValueError(f"expected a PCI address like \"0000:00:01.0\" (lower-case hex), got {value!r}")
    return value


_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


def _line_of(text: str, path: Path) -> int | None:
    """The 1-based line where ``path`` (e.g. ("device", 2, "vendor")) is written, or its table.

    tomllib reports lines only for syntax errors, so semantic errors find their key here with a
    light scan of table headers and ``key =`` lines; inline tables fall back to their parent key.
    """
    array_counts: dict[str, int] = {}
    table: Path = ()
    best: int | None = None
    best_len = -1
    for lineno, line in enumerate(text.splitlines(), 1):
        header = _HEADER_RE.match(line)
        if header:
            name = tuple(p.strip().strip('"') for p in header.group(2).split("."))
            if header.group(1) == "[[":
                key = ".".join(name)
                index = array_counts.get(key, -1) + 1
                array_counts[key] = index
                table = name + (index,)
            else:
                table = name
            candidate = table
        else:
            key_match = _KEY_RE.match(line)
            if not key_match:
                continue
            candidate = table + (key_match.group(1).strip('"\''),)
        matched = _common_prefix(candidate, path)
        if matched == len(candidate) and matched > best_len:
            best, best_len = lineno, matched
    return best


def _common_prefix(a: Path, b: Path) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
