"""Type1 dirty tracking while the edu device really DMAs, under `ioasidfs run`.

tests/c/edu_dirty.c prints every dirty bitmap word a VMM's migration loop would see. With the
default configuration (vfio-pci behind an IOMMU) the output must be the reference VM's, line
for line (tests/expected/edu_dirty.txt): every mapped page reported dirty, the kernel's shift
quirk included. With ``dirty_scope = "pinned"`` the reports must name exactly the pages the
device wrote (tests/expected/edu_dirty.pinned.txt; edu_dirty.notes.md derives each line).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from support import EXPECTED_DIR, ROOT, require_root, run_ioasidfs


def _run(program: Path, *config: str) -> list[str]:
    result = run_ioasidfs(["run", *config, "--", str(program)])
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _compare(got: list[str], expected_name: str) -> None:
    expected = (EXPECTED_DIR / expected_name).read_text().splitlines()
    diffs = [f"line {n}: expected {want!r}, got {have!r}"
             for n, (want, have) in enumerate(zip(expected, got), 1) if want != have]
    assert len(got) == len(expected), f"{len(got)} lines printed, {len(expected)} expected"
    assert not diffs, "\n".join(diffs)


def test_vfio_pci_group_reports_every_mapped_page_like_the_kernel(compile_c) -> None:  # type: ignore[no-untyped-def]
    require_root()
    _compare(_run(compile_c("edu_dirty")), "edu_dirty.txt")


def test_pinned_scope_group_reports_the_pages_the_device_wrote(compile_c, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    require_root()
    config = tmp_path / "pinned.toml"
    config.write_text((ROOT / "ioasidfs" / "default.toml").read_text()
                      + '\n[groups.1]\ndirty_scope = "pinned"\n')
    got = _run(compile_c("edu_dirty"), "--config", str(config))
    _compare(got, "edu_dirty.pinned.txt")
    # The two configurations must really differ where device writes show.
    assert got != (EXPECTED_DIR / "edu_dirty.txt").read_text().splitlines()


@pytest.mark.parametrize("scope", ["some", ""])
def test_an_unknown_dirty_scope_is_a_configuration_error(scope: str, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text((ROOT / "ioasidfs" / "default.toml").read_text()
                      + f'\n[groups.1]\ndirty_scope = "{scope}"\n')
    result = run_ioasidfs(["run", "--config", str(config), "--", "true"])
    assert result.returncode == 2
    assert "groups.1.dirty_scope" in result.stderr, result.stderr
