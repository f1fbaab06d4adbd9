"""Decoded ioctl traces for people debugging their VFIO client.

Every ioctl on one of our nodes becomes one :class:`IoctlRecord`: who called, on which node, the
ioctl's name, the argument struct as the program passed it and as the kernel (we) left it, the
return value and errno, and how long it took. ``--trace FILE`` writes one JSON object per line;
``--trace -`` prints a strace-like line to stderr.

Blocked device DMA (IOMMU faults, ``ioasidfs.devices.dma``) goes to the same trace: the daemon
subscribes :meth:`Tracer.fault` to the engine's fault log. In JSON it is an object with
``"event": "iommu_fault"`` (ioctl records have no ``event`` key); as text, an
``[iommu fault]`` line.

The structs are captured, not re-read: the engine's memory accesses go through a
:class:`RecordingMemory`, so the input is exactly the bytes the engine read and the output is the
input overlaid with exactly the bytes it wrote back (re-reading afterwards would race with the
program and would show an output where the kernel wrote none).
"""
from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict, dataclass
from typing import IO, Protocol

from .devices.dma import FaultRecord
from .engine.caller import ClientMemory


@dataclass(frozen=True)
class IoctlRecord:
    time: float
    pid: int
    node: str
    name: str
    cmd: int
    arg: int
    input: object
    output: object
    result: int
    errno: str | None
    usec: float
    reason: str | None = None


def fault_event(rec: FaultRecord) -> dict[str, object]:
    """A fault as a JSON trace record."""
    return {"event": "iommu_fault", "time": rec.time, "seq": rec.seq, "iova": rec.iova,
            "device": rec.device, "access": rec.access, "reason": rec.reason.value,
            "length": rec.length, "detail": rec.detail}


class Tracer(Protocol):
    def record(self, rec: IoctlRecord) -> None: ...

    def fault(self, rec: FaultRecord) -> None: ...

    def close(self) -> None: ...


class RecordingMemory:
    """Wraps a ClientMemory and keeps every successful read and write, in order."""

    __slots__ = ("inner", "reads", "writes")

    def __init__(self, inner: ClientMemory) -> None:
        self.inner = inner
        self.reads: list[tuple[int, bytes]] = []
        self.writes: list[tuple[int, bytes]] = []

    def read(self, addr: int, size: int) -> bytes:
        data = self.inner.read(addr, size)
        self.reads.append((addr, data))
        return data

    def write(self, addr: int, data: bytes) -> None:
        self.inner.write(addr, data)
        self.writes.append((addr, bytes(data)))

    def struct_at(self, addr: int) -> tuple[bytes | None, bytes | None]:
        """(input, output) bytes of the struct at ``addr``: the longest read there, and that read
        overlaid with the writes that fall inside it (None when nothing was written)."""
        reads = [data for a, data in self.reads if a == addr]
        if not reads:
            return None, None
        before = max(reads, key=len)
        if not any(addr <= a < addr + len(before) for a, _ in self.writes):
            return before, None
        after = bytearray(before)
        for a, data in self.writes:
            offset = a - addr
            if 0 <= offset < len(after):
                after[offset:offset + len(data)] = data[:len(after) - offset]
        return before, bytes(after)


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class JsonLinesTracer:
    """One JSON object per ioctl, one per line, flushed at once (a crash loses nothing)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def record(self, rec: IoctlRecord) -> None:
        data = {k: _jsonable(v) for k, v in asdict(rec).items()}
        self._write(json.dumps(data, separators=(",", ":")))

    def fault(self, rec: FaultRecord) -> None:
        self._write(json.dumps(fault_event(rec), separators=(",", ":")))

    def _write(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.stream not in (sys.stdout, sys.stderr):
            self.stream.close()


def _format_value(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bytes):
        return '"' + value.hex() + '"'
    if isinstance(value, int):
        return str(value) if -10 < value < 10 else hex(value)
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


class TextTracer:
    """A readable strace-like line per ioctl, e.g.
    ``[pid 42] /dev/vfio/vfio VFIO_CHECK_EXTENSION(3) = 1 <9 us>``."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def record(self, rec: IoctlRecord) -> None:
        arg = "" if rec.input is None else _format_value(rec.input)
        line = f"[pid {rec.pid}] {rec.node} {rec.name}({arg})"
        if rec.errno:
            line += f" = -1 {rec.errno}"
            if rec.reason:
                line += f" ({rec.reason})"
        else:
            line += f" = {rec.result}"
        if rec.output is not None:
            line += f" => {_format_value(rec.output)}"
        line += f" <{rec.usec:.0f} us>"
        self._write(line)

    def fault(self, rec: FaultRecord) -> None:
        self._write(f"[iommu fault] {rec.line()}")

    def _write(self, line: str) -> None:
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        pass


def open_tracer(target: str | None) -> Tracer | None:
    """``None`` -> no tracing; ``-`` -> text on stderr; a path -> JSON lines appended to it."""
    if target is None:
        return None
    if target == "-":
        return TextTracer(sys.stderr)
    return JsonLinesTracer(open(target, "a", buffering=1, encoding="utf-8"))
