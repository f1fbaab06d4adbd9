"""The shape of the fake /dev tree: which nodes exist, their inode numbers, modes and owners.

Paths and modes mirror what the kernel and udev create on a machine with VFIO and iommufd::

    vfio/            0755
      vfio           0666  the container (drivers/vfio/container.c: misc device mode 0666)
      <group>        0600  one per IOMMU group (vfio class devnode, default mode)
      devices/       0755
        vfioN        0600  one cdev per device (vfio_device_devnode, default mode)
    ioasid           0660  iommufd (drivers/iommu/iommufd/main.c: misc device mode 0660)
    iommu            0660  the kernel's name for the same thing
    faults           0444  ours, not the kernel's: the IOMMU fault log (never bound into /dev)
    devfds/          0755  ours: what device fds are opened through (never bound into /dev)
      <bdf>          0600  one per device; only VFIO_GROUP_GET_DEVICE_FD opens it
    sys/             0755  the fake sysfs (ioasidfs.sysfs; never bound into /dev: ``run`` binds
                           its subtrees over /sys)

Nodes are regular files: FUSE cannot serve character devices (their opens would go to the real
driver by rdev). Metadata only: what an open of a node *does* is the engine's business.
"""
from __future__ import annotations

import stat
import time
from dataclasses import dataclass, field

from .config import Config
from .engine.files import ACCESS_NODE_KEY, FAULT_QUEUE_NODE_KEY, VEVENTQ_NODE_KEY, FileKind
from .sysfs import build_sysfs


@dataclass
class Node:
    ino: int
    name: str
    kind: FileKind | None  # None for a directory
    mode: int
    parent: "Node | None"
    uid: int = 0
    gid: int = 0
    ctime: float = 0.0
    key: object = None  # group id for GROUP, device BDF for CDEV and DEVICE
    target: str | None = None  # a symbolic link's target (the node is then a link, kind None)
    children: dict[str, "Node"] = field(default_factory=dict)

    @property
    def path(self) -> str:
        parts = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/dev/" + "/".join(reversed(parts))

    @property
    def is_dir(self) -> bool:
        return self.kind is None and self.target is None

    @property
    def is_symlink(self) -> bool:
        return self.target is not None


ROOT_INO = 1
DEVICE_FDS_DIR = "devfds"


class DevTree:
    """All nodes, by inode number, built once from the configuration."""

    def __init__(self, config: Config) -> None:
        self.nodes: dict[int, Node] = {}
        self._created = time.time()
        self.root = self._add("", None, 0o755, None)
        vfio = self._add("vfio", None, 0o755, self.root)
        self._add("vfio", FileKind.CONTAINER, 0o666, vfio)
        for group in config.groups:
            self._add(str(group.id), FileKind.GROUP, 0o600, vfio, key=group.id)
        devices = self._add("devices", None, 0o755, vfio)
        for index, device in enumerate(config.devices):
            self._add(f"vfio{index}", FileKind.CDEV, 0o600, devices, key=device.bdf)
        self._add("ioasid", FileKind.IOMMUFD, 0o660, self.root)
        self._add("iommu", FileKind.IOMMUFD, 0o660, self.root)
        self._add("faults", FileKind.FAULTS, 0o444, self.root)
        # The kernel's device fds are anonymous inodes; ours must be files of the mount. The
        # seccomp supervisor opens these for VFIO_GROUP_GET_DEVICE_FD (devfs.StagedFile).
        self.device_fds = self._add(DEVICE_FDS_DIR, None, 0o755, self.root)
        for device in config.devices:
            self._add(device.bdf, FileKind.DEVICE, 0o600, self.device_fds, key=device.bdf)
        # ...and this one for the selftest's access fds (IOMMU_TEST_CMD CREATE_ACCESS).
        self._add(ACCESS_NODE_KEY, FileKind.ACCESS, 0o600, self.device_fds, key=ACCESS_NODE_KEY)
        # ...and the fault queues' fds (IOMMU_FAULT_QUEUE_ALLOC).
        self._add(FAULT_QUEUE_NODE_KEY, FileKind.FAULT_QUEUE, 0o600, self.device_fds,
                  key=FAULT_QUEUE_NODE_KEY)
        # ...and the vIOMMU event queues' fds (IOMMU_VEVENTQ_ALLOC).
        self._add(VEVENTQ_NODE_KEY, FileKind.VEVENTQ, 0o600, self.device_fds, key=VEVENTQ_NODE_KEY)
        self.sysfs = build_sysfs(self, config)

    def _add(self, name: str, kind: FileKind | None, mode: int, parent: Node | None, key: object = None) -> Node:
        ino = len(self.nodes) + ROOT_INO
        fmt = stat.S_IFDIR if kind is None else stat.S_IFREG
        node = Node(ino, name, kind, fmt | mode, parent, ctime=self._created, key=key)
        self.nodes[ino] = node
        if parent is not None:
            parent.children[name] = node
        return node

    def set_owner(self, uid: int, gid: int) -> None:
        """Rootless runs: the invoking user owns every node, as a udev rule granting access would."""
        for node in self.nodes.values():
            node.uid, node.gid = uid, gid

    def _dev_nodes(self) -> list[Node]:
        """The root's children that stand for /dev entries (not the fault log, not the
        carriers of device fds, not the sysfs)."""
        return [n for n in self.root.children.values()
                if n.kind is not FileKind.FAULTS and n is not self.device_fds
                and n is not self.sysfs]

    def device_fd_node(self, bdf: str) -> Node:
        """The node a device fd of ``bdf`` is opened through."""
        return self.device_fds.children[bdf]

    def top_level_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self._dev_nodes())

    def top_level_split(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(directories, files) directly under the root: what ``run`` binds into /dev."""
        dirs = tuple(n.name for n in self._dev_nodes() if n.is_dir)
        files = tuple(n.name for n in self._dev_nodes() if not n.is_dir)
        return dirs, files
