"""The fake sysfs (ioasidfs.sysfs): layout, link targets, the kernel's formats, `config` reads."""
from __future__ import annotations

import errno
import os
import posixpath
import stat

import pytest

from ioasidfs import sysfs
from ioasidfs.config import load_config, parse_config
from ioasidfs.devfs import DevFs
from ioasidfs.devtree import DevTree, Node
from ioasidfs.engine import Caller, Engine, FakeMemory, FileKind
from ioasidfs.errors import KernelError
from ioasidfs.fuse import abi
from ioasidfs.fuse.session import RequestContext

EDU = "0000:00:01.0"
ROOT_CTX = RequestContext(pid=1, uid=0, gid=0, unique=1)

MACHINE = """
[iommu]
reserved_regions = [ { start = 0xfee00000, end = 0xfeefffff, type = "msi" },
                     { start = 0x1000, end = 0x1fff, type = "direct" } ]

[[device]]
bdf = "0000:00:04.0"
group = 7
model = "generic"
vendor = 0x8086
device = 0x10d3
class = 0x020000
subsystem_vendor = 0x8086
subsystem_device = 0xa01f
revision = 3
bars = [ { index = 0, size = "128K" }, { index = 2, size = "16K", bits = 64, prefetchable = true },
         { index = 4, size = "32", io = true } ]
"""


class World:
    def __init__(self, text: str | None = None) -> None:
        config = parse_config(text, "machine.toml") if text else load_config(None)
        self.tree = DevTree(config)
        self.engine = Engine(config, still_open=lambda f: True)
        self.fs = DevFs(self.tree, self.engine, memory=lambda pid: FakeMemory())

    def node(self, path: str) -> Node:
        node = self.tree.sysfs
        for name in path.split("/"):
            node = node.children[name]
        return node

    def resolve(self, path: str) -> Node:
        """Follow symbolic links as a path walk does, within the tree's ``sys``."""
        parts = path.split("/")
        done: list[str] = []
        while parts:
            done.append(parts.pop(0))
            node = self.node("/".join(done))
            if node.target is not None:
                joined = posixpath.normpath(posixpath.join("/".join(done[:-1]), node.target))
                assert not joined.startswith(".."), f"{path}: {node.target} leaves sys"
                parts = joined.split("/") + parts
                done = []
        return self.node("/".join(done))

    def read(self, path: str, uid: int = 0, offset: int = 0, size: int = 4096) -> bytes:
        node = self.node(path)
        assert node.kind is FileKind.SYSFS
        caller = Caller(pid=1, memory=FakeMemory(), uid=lambda: uid)
        return self.engine.open(node.kind, node.key, caller).read(caller, offset, size)

    def text(self, path: str) -> str:
        return self.read(path).decode()


def test_links_resolve_as_on_a_real_machine() -> None:
    w = World()
    device = w.node(f"devices/pci0000:00/{EDU}")
    assert w.resolve(f"bus/pci/devices/{EDU}") is device
    assert w.resolve(f"bus/pci/drivers/vfio-pci/{EDU}") is device
    assert w.resolve(f"kernel/iommu_groups/1/devices/{EDU}") is device
    assert w.resolve(f"bus/pci/devices/{EDU}/iommu_group") is w.node("kernel/iommu_groups/1")
    assert w.resolve(f"bus/pci/devices/{EDU}/driver") is w.node("bus/pci/drivers/vfio-pci")
    assert w.resolve(f"bus/pci/devices/{EDU}/vfio-dev/vfio0/device") is device
    assert w.node(f"devices/pci0000:00/{EDU}/iommu_group").target == \
        "../../../kernel/iommu_groups/1"
    assert w.node(f"devices/pci0000:00/{EDU}/driver").target == \
        "../../../bus/pci/drivers/vfio-pci"
    assert sorted(w.node("kernel/iommu_groups/3/devices").children) == \
        ["0000:00:03.0", "0000:00:03.1"]
    # vfio-dev/vfioN: N is the device's index, as /dev/vfio/devices/vfioN
    assert list(w.node("devices/pci0000:00/0000:00:03.1/vfio-dev").children) == ["vfio3"]


def test_sys_is_not_bound_into_dev() -> None:
    w = World()
    assert "sys" in w.tree.root.children
    assert "sys" not in w.tree.top_level_names()
    assert w.tree.top_level_split() == (("vfio",), ("ioasid", "iommu"))


def test_modes() -> None:
    w = World()
    base = f"devices/pci0000:00/{EDU}"
    assert w.node(base).mode == stat.S_IFDIR | 0o755
    assert w.node(f"{base}/vendor").mode == stat.S_IFREG | 0o444
    assert w.node(f"{base}/config").mode == stat.S_IFREG | 0o644
    assert w.node(f"{base}/iommu_group").mode == stat.S_IFLNK | 0o777
    assert w.node("kernel/iommu_groups/1/type").mode == stat.S_IFREG | 0o644


def test_edu_attributes_match_the_kernel() -> None:
    w = World()
    base = f"devices/pci0000:00/{EDU}"
    assert [w.text(f"{base}/{name}") for name in ("vendor", "device", "class", "subsystem_vendor",
                                                   "subsystem_device", "revision")] == \
        ["0x1234\n", "0x11e8\n", "0x00ff00\n", "0x1af4\n", "0x1100\n", "0x10\n"]
    assert w.text(f"{base}/numa_node") == "-1\n"
    assert w.read(f"{base}/config", size=4) == bytes.fromhex("3412e811")
    assert w.text("kernel/iommu_groups/1/reserved_regions") == \
        "0x00000000fee00000 0x00000000feefffff msi\n"
    assert w.text("kernel/iommu_groups/1/type") == "DMA\n"
    assert w.read(f"{base}/vendor", offset=2) == b"1234\n"


def test_configured_device_formats() -> None:
    w = World(MACHINE)
    base = "devices/pci0000:00/0000:00:04.0"
    assert w.text(f"{base}/class") == "0x020000\n"
    assert w.text(f"{base}/revision") == "0x03\n"
    assert w.text(f"{base}/modalias") == "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00\n"
    assert w.text(f"{base}/uevent") == (
        "DRIVER=vfio-pci\nPCI_CLASS=20000\nPCI_ID=8086:10D3\nPCI_SUBSYS_ID=8086:A01F\n"
        "PCI_SLOT_NAME=0000:00:04.0\n"
        "MODALIAS=pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00\n")
    lines = w.text(f"{base}/resource").splitlines()
    assert len(lines) == 13
    # BARs as the firmware placed them (ioasidfs.devices.firmware): 32-bit memory downward
    # from 0xfec00000, 64-bit from 32 GiB up, I/O from 0xc000.
    assert lines[0] == "0x00000000febe0000 0x00000000febfffff 0x0000000000040200"
    assert lines[1] == "0x0000000000000000 0x0000000000000000 0x0000000000000000"
    assert lines[2] == "0x0000000800000000 0x0000000800003fff 0x000000000014220c"
    assert lines[3] == lines[1]
    assert lines[4] == "0x000000000000c000 0x000000000000c01f 0x0000000000040101"
    assert set(lines[5:]) == {lines[1]}
    # the group's regions, sorted by start, inclusive ends
    assert w.text("kernel/iommu_groups/7/reserved_regions") == (
        "0x0000000000001000 0x0000000000001fff direct\n"
        "0x00000000fee00000 0x00000000feefffff msi\n")


def test_resource_follows_the_bar_registers() -> None:
    w = World(MACHINE)
    function = w.engine.devices["0000:00:04.0"].function
    function.config_write(0x10, 4, 0xFEA00000)
    function.config_write(0x18, 4, 0xC0000000)
    function.config_write(0x1C, 4, 0x1)
    lines = w.text("devices/pci0000:00/0000:00:04.0/resource").splitlines()
    assert lines[0] == "0x00000000fea00000 0x00000000fea1ffff 0x0000000000040200"
    assert lines[2] == "0x00000001c0000000 0x00000001c0003fff 0x000000000014220c"


def test_config_is_the_physical_space_read_live() -> None:
    w = World()
    path = f"devices/pci0000:00/{EDU}/config"
    full = w.read(path)
    assert len(full) == 256
    function = w.engine.devices[EDU].function
    assert full == bytes(function.config_read(i, 1) for i in range(256))
    function.config_write(0x3C, 1, 0x0A)
    assert w.read(path, offset=0x3C, size=1) == b"\x0a"
    assert w.text(f"devices/pci0000:00/{EDU}/irq") == "10\n"
    assert w.read(path, offset=250, size=100) == full[250:]
    assert w.read(path, offset=256) == b""
    assert w.read(path, offset=300) == b""


def test_config_shows_64_bytes_to_non_root() -> None:
    w = World()
    path = f"devices/pci0000:00/{EDU}/config"
    assert w.read(path, uid=1000) == w.read(path)[:64]
    assert w.read(path, uid=1000, offset=60, size=8) == w.read(path)[60:64]
    assert w.read(path, uid=1000, offset=64) == b""


def test_config_accesses_are_naturally_aligned() -> None:
    seen: list[tuple[int, int]] = []

    def read(offset: int, size: int) -> int:
        seen.append((offset, size))
        return 0

    file = sysfs.ConfigFile(read, lambda offset, size, value: None)
    caller = Caller(pid=1, memory=FakeMemory())
    assert len(file.read(caller, 1, 10)) == 10
    assert seen == [(1, 1), (2, 2), (4, 4), (8, 2), (10, 1)]
    assert sysfs._accesses(3, 4) == [(3, 1)]
    assert sysfs._accesses(2, 4) == [(2, 2)]
    assert sysfs._accesses(0, 0) == []


def test_config_writes_reach_the_function() -> None:
    writes: list[tuple[int, int, int]] = []
    file = sysfs.ConfigFile(lambda o, s: 0, lambda o, s, v: writes.append((o, s, v)))
    caller = Caller(pid=1, memory=FakeMemory())
    assert file.write(caller, 4, b"\x07\x01") == 2
    assert writes == [(4, 2, 0x0107)]
    assert file.write(caller, 255, b"\x01\x02") == 1
    assert file.write(caller, 300, b"\x01") == 0


def test_attributes_refuse_ioctls_and_writes() -> None:
    w = World()
    node = w.node(f"devices/pci0000:00/{EDU}/vendor")
    caller = Caller(pid=1, memory=FakeMemory())
    file = w.engine.open(FileKind.SYSFS, node.key, caller)
    with pytest.raises(KernelError) as info:
        file.ioctl(caller, 0x5401, 0)
    assert info.value.errno == errno.ENOTTY
    with pytest.raises(KernelError) as info:
        file.write(caller, 0, b"1")
    assert info.value.errno == errno.EACCES


@pytest.mark.parametrize(("uid", "data", "error"), [
    (1000, b"identity\n", errno.EACCES), (0, b"bogus\n", errno.EINVAL),
    (0, b"identity\n", errno.EPERM)])
def test_group_type_cannot_be_changed(uid: int, data: bytes, error: int) -> None:
    w = World()
    node = w.node("kernel/iommu_groups/1/type")
    caller = Caller(pid=1, memory=FakeMemory(), uid=lambda: uid)
    file = w.engine.open(FileKind.SYSFS, node.key, caller)
    with pytest.raises(KernelError) as info:
        file.write(caller, 0, data)
    assert info.value.errno == error


# --------------------------------------------------------------------------- through DevFs
def test_devfs_refuses_write_opens_of_read_only_attributes() -> None:
    w = World()
    vendor = w.node(f"devices/pci0000:00/{EDU}/vendor")
    for flags in (os.O_WRONLY, os.O_RDWR):
        with pytest.raises(KernelError) as info:
            w.fs.open(ROOT_CTX, vendor.ino, flags)
        assert info.value.errno == errno.EACCES
    w.fs.open(ROOT_CTX, vendor.ino, os.O_RDONLY)
    w.fs.open(ROOT_CTX, w.node(f"devices/pci0000:00/{EDU}/config").ino, os.O_RDWR)


def test_devfs_shows_symlinks() -> None:
    w = World()
    link = w.node(f"devices/pci0000:00/{EDU}/iommu_group")
    attr = w.fs.getattr(ROOT_CTX, link.ino)
    assert stat.S_ISLNK(attr.mode) and attr.size == len(link.target or "")
    assert w.fs.readlink(ROOT_CTX, link.ino) == b"../../../kernel/iommu_groups/1"
    device = w.node(f"devices/pci0000:00/{EDU}")
    with pytest.raises(KernelError) as info:
        w.fs.readlink(ROOT_CTX, device.ino)
    assert info.value.errno == errno.EINVAL
    types = {e.name: e.type for e in w.fs.readdir(ROOT_CTX, device.ino, 0, 0)}
    assert types[b"iommu_group"] == abi.DirentType.LNK
    assert types[b"vfio-dev"] == abi.DirentType.DIR
    assert types[b"config"] == abi.DirentType.REG
    lookup = w.fs.lookup(ROOT_CTX, device.ino, b"driver")
    assert stat.S_ISLNK(lookup.mode)
    assert w.fs.getattr(ROOT_CTX, w.node(f"devices/pci0000:00/{EDU}/config").ino).size == 256
    assert w.fs.getattr(ROOT_CTX, w.node(f"devices/pci0000:00/{EDU}/vendor").ino).size == 4096
