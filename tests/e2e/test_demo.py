"""The demo's driver (scripts/examples/edu_dma.c), unmodified, under `ioasidfs run` with the
embedded default machine: what `scripts/demo` shows must keep working."""
from __future__ import annotations

from pathlib import Path

from support import ROOT, require_root, run_ioasidfs


def test_the_demo_driver_runs_end_to_end(compile_c) -> None:  # type: ignore[no-untyped-def]
    require_root()
    program: Path = compile_c("edu_dma", source=ROOT / "scripts" / "examples" / "edu_dma.c")
    result = run_ioasidfs(["run", "--trace", "-", "--", str(program)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "0000:00:01.0 is in IOMMU group 1",
        "mapped 8192 bytes at IOVA 0x100000",
        "device fd 5: 9 regions, 5 irqs",
        "identification 0x010000ed, liveness(~0x12345678) 0xedcba987",
        "DMA RAM -> device: 1 interrupt(s)",
        "DMA device -> RAM: 1 interrupt(s)",
        "the copy matches the pattern",
        "DMA to unmapped IOVA 0x300000: 1 interrupt(s), memory untouched (IOMMU fault)",
        "unmapped 0x2000 bytes; done",
    ]
    # The blocked DMA is in the trace, where it happened.
    assert "0000:00:01.0 write iova=0x300000 len=0x100 not-mapped" in result.stderr
