"""`ioasidfs run`: unmodified programs see the fake tree as /dev, and nothing else changes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support import IOASIDFS, ROOT, ioasidfs_mounts, require_root, run_ioasidfs

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture
def root() -> None:
    require_root()


@pytest.mark.parametrize("flags", [(), ("-static",)], ids=["dynamic", "static"])
def test_unmodified_program_sees_the_tree_at_the_kernel_paths(compile_c, flags) -> None:  # type: ignore[no-untyped-def]
    result = run_ioasidfs(["run", "--", str(compile_c("api_probe", *flags))])
    assert result.returncode == 0, result.stderr
    # fd 3: the program inherited no fd of ours.
    assert result.stdout.splitlines() == ["fd=3", "api=0", "type1v2=1", "ioasid_api=0"]


def test_nodes_have_the_kernels_modes_and_the_rest_of_dev_is_kept() -> None:
    script = ("stat -c '%n %a %F' /dev/vfio /dev/vfio/vfio /dev/vfio/1 /dev/vfio/2 /dev/vfio/3 "
              "/dev/vfio/devices/vfio0 /dev/ioasid /dev/iommu && test -c /dev/null && "
              "echo ok > /dev/null && ls /dev/vfio/devices")
    result = run_ioasidfs(["run", "--", "sh", "-c", script])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:8] == [
        "/dev/vfio 755 directory",
        "/dev/vfio/vfio 666 regular empty file",
        "/dev/vfio/1 600 regular empty file",
        "/dev/vfio/2 600 regular empty file",
        "/dev/vfio/3 600 regular empty file",
        "/dev/vfio/devices/vfio0 600 regular empty file",
        "/dev/ioasid 660 regular empty file",
        "/dev/iommu 660 regular empty file",
    ]
    assert lines[8:] == ["vfio0", "vfio1", "vfio2", "vfio3"]


def test_chmod_of_a_node_is_kept_for_the_run() -> None:
    result = run_ioasidfs(["run", "--", "sh", "-c", "chmod 0640 /dev/vfio/1 && stat -c %a /dev/vfio/1"])
    assert (result.returncode, result.stdout) == (0, "640\n"), result.stderr


def test_exit_status_stdin_and_stdout_pass_through() -> None:
    result = run_ioasidfs(["run", "--", "sh", "-c", "cat; exit 7"], input="hello\n")
    assert (result.returncode, result.stdout) == (7, "hello\n")


def test_killed_program_gives_128_plus_signal() -> None:
    result = run_ioasidfs(["run", "--", "sh", "-c", "kill -KILL $$"])
    assert result.returncode == 128 + signal.SIGKILL


def test_missing_program_is_127() -> None:
    result = run_ioasidfs(["run", "--", "/nonexistent/program"])
    assert result.returncode == 127
    assert "not found" in result.stderr


def test_signals_are_forwarded_and_nothing_shows_on_the_host(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    mounts_before = ioasidfs_mounts()
    script = f"trap 'echo got TERM; exit 3' TERM; touch {marker}; while :; do sleep 0.1; done"
    proc = subprocess.Popen([*IOASIDFS, "run", "--", "sh", "-c", script], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the program never started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        # The mount lives in the run's private namespace only.
        assert ioasidfs_mounts() == mounts_before
        assert not os.path.exists("/dev/ioasid")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    assert out == "got TERM\n"


def test_json_trace_decodes_each_ioctl(tmp_path: Path, compile_c) -> None:  # type: ignore[no-untyped-def]
    trace = tmp_path / "trace.jsonl"
    result = run_ioasidfs(["run", "--trace", str(trace), "--", str(compile_c("api_probe"))])
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(r["node"], r["name"], r["input"], r["result"], r["errno"]) for r in records] == [
        ("/dev/vfio/vfio", "VFIO_GET_API_VERSION", None, 0, None),
        ("/dev/vfio/vfio", "VFIO_CHECK_EXTENSION", 3, 1, None),
        ("/dev/ioasid", "VFIO_GET_API_VERSION", None, 0, None),
    ]
    for record in records:
        assert record["pid"] > 0 and record["usec"] >= 0 and record["time"] > 1.7e9


def test_text_trace_shows_decoded_structs_and_errnos(compile_c) -> None:  # type: ignore[no-untyped-def]
    result = run_ioasidfs(["run", "--trace", "-", "--", str(compile_c("container_basics"))])
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert any("/dev/vfio/1 VFIO_GROUP_GET_STATUS({argsz=8, flags=0xa5a5a5a5}) = 0 => {argsz=8, flags=1}" in l
               for l in lines), "\n".join(lines[:40])
    assert any("/dev/vfio/vfio VFIO_SET_IOMMU(0) = -1 ENODEV" in l for l in lines)


def test_bad_config_names_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[iommu]\naddress_width = 39\npage_sizes = ["4K", "3K"]\n')
    result = run_ioasidfs(["run", "--config", str(config), "--", "true"])
    assert result.returncode == 2
    assert f"{config}:3: iommu.page_sizes:" in result.stderr


@pytest.mark.parametrize("personality, expected", [
    ("type1", ["CHECK_EXTENSION(DMA_CC) = 0", "SET_IOMMU(TYPE1v2) without a group = -1 EINVAL",
               "SET_IOMMU(42) without a group = -1 EINVAL"]),
    ("iommufd", ["CHECK_EXTENSION(DMA_CC) = -1 ENODEV", "SET_IOMMU(TYPE1v2) without a group = -1 ENODEV",
                 "SET_IOMMU(42) without a group = -1 EINVAL"]),
])
def test_container_personality_switch(tmp_path: Path, compile_c, personality: str,  # type: ignore[no-untyped-def]
                                      expected: list[str]) -> None:
    config = tmp_path / "machine.toml"
    config.write_text(f'[container]\npersonality = "{personality}"\n\n'
                      '[[device]]\nbdf = "0000:00:01.0"\ngroup = 1\nmodel = "edu"\n')
    result = run_ioasidfs(["run", "--config", str(config), "--", str(compile_c("personality_probe"))])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_prefix_needs_the_cuse_transport() -> None:
    """Over FUSE nothing is created in /dev, so there is nothing to put under a prefix: a usage
    error, said in one line, before any daemon starts."""
    result = run_ioasidfs(["run", "--prefix", "alt", "--", "true"])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ioasidfs run: --prefix needs --transport cuse (over FUSE nothing is created in /dev)"]
