"""`ioasidfs cuse`: the same C programs as test_fidelity.py, against real CUSE character devices.

This machine's kernel may have no CUSE: then everything runs in one boot of
``run-in-vm --no-vfio`` (Debian 6.1 with CUSE; found through $IOASIDFS_VM, else
../shared/vm/run-in-vm next to the repository, else /work/shared/vm/run-in-vm). Where /dev/cuse
exists (and /dev/vfio/vfio does not), it runs natively. Either way one script -- this file run as
``python test_cuse.py --guest BUILD_DIR PROGRAM...`` -- starts ``ioasidfs cuse``, runs every
program against /dev/vfio/..., checks --prefix, the refusal of a name someone else owns and the
teardown, and prints delimited sections that the tests below compare.

Expected output is the FUSE tests' (tests/expected/NAME.txt). A line in NAME.pending may match
or not here: some FUSE-only differences vanish on a real character device. CUSE_PENDING lists the
lines CUSE cannot match (yet) although FUSE does, with the reason.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent.parent
GUEST = "--guest"
MARK = "=====ioasidfs-cuse"
PROGRAMS = ["container_basics", "ioasid_basics", "type1_flow", "type1_limits", "ioasid_container",
            "type1_lifetime"]
NATIVE_ONLY = {"type1_limits": "it maps 65,535 pages one ioctl at a time: ~20 s natively, many "
                               "minutes in the emulated (TCG) VM; test_fidelity.py runs it on FUSE"}
"""Programs too slow for the VM: run only where this kernel has CUSE itself."""


# =========================================================================== guest side
def _say(section: str, text: str = "") -> None:
    print(f"{MARK} {section}", flush=True)
    if text:
        print(text.rstrip("\n"), flush=True)


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _nodes(prefix: str = "") -> list[str]:
    base = Path("/dev") / prefix if prefix else Path("/dev")
    paths = [base / "vfio" / "vfio", base / "ioasid", base / "iommu"]
    for sub in ("vfio", "vfio/devices"):
        d = base / sub
        if d.is_dir():
            paths += [p for p in sorted(d.iterdir()) if not p.is_dir() and p.name != "vfio"]
    return [str(p) for p in paths if os.path.lexists(p)]


def _describe(paths: list[str]) -> str:
    lines = []
    for p in paths:
        st = os.stat(p)
        lines.append(f"{p} {stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}")
    return "\n".join(lines)


_logs: dict[int, str] = {}


def _start(*args: str) -> subprocess.Popen[bytes]:
    """``ioasidfs cuse ARGS``, its stderr in a file (a pipe nobody reads could block it)."""
    log = f"/tmp/ioasidfs-cuse-{len(_logs)}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ioasidfs", "cuse", *args], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stderr=err)
    _logs[proc.pid] = log
    return proc


def _log(proc: subprocess.Popen[bytes]) -> str:
    with open(_logs[proc.pid], errors="replace") as f:
        return f.read()


def _ready(proc: subprocess.Popen[bytes]) -> str:
    """The daemon's "serving ..." line, or its stderr up to its exit."""
    _wait(lambda: " serving " in _log(proc) or proc.poll() is not None, 120)
    serving = [line for line in _log(proc).splitlines() if " serving " in line]
    return serving[0] if serving else _log(proc)


def _finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode, _log(proc)


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    return _finish(proc, 30)


def guest_main(build_dir: str, programs: list[str]) -> int:
    t0 = time.monotonic()
    daemon = _start()
    line = _ready(daemon)
    _say("ready", f"{line}\nstartup {time.monotonic() - t0:.2f}s")
    if daemon.poll() is not None:
        _say("end")
        return 1
    try:
        _say("nodes", _describe(_nodes()))
        for name in programs:
            t = time.monotonic()
            result = subprocess.run([os.path.join(build_dir, name)], capture_output=True,
                                    text=True, timeout=120)
            _say(f"program {name} rc={result.returncode} "
                 f"seconds={time.monotonic() - t:.2f}", result.stdout)
            if result.stderr:
                _say(f"stderr {name}", result.stderr)
        # A second daemon for the same names must refuse and suggest --prefix.
        rc, err = _finish(_start())
        _say(f"conflict rc={rc}", err)
        # --prefix: the same tree under /dev/alt, alongside the first.
        alt = _start("--prefix", "alt")
        line = _ready(alt)
        _say("prefix nodes", f"{line}\n{_describe(_nodes('alt'))}")
        rc, err = _stop(alt)
        _say(f"prefix stopped rc={rc} left={_nodes('alt')} dir={os.path.exists('/dev/alt')}", err)
    finally:
        rc, err = _stop(daemon)
    gone = _wait(lambda: not _nodes(), 5)
    _say(f"teardown rc={rc} left={_nodes()}"
         f" vfio_dir={os.path.exists('/dev/vfio')} gone={gone}", err)
    # A real driver's node: load vfio (its /dev/vfio/vfio is the misc device 10:196). Only in
    # the throw-away VM: never load a module on the machine itself.
    if os.environ.get("ORACLE_GUEST") == "1" and \
            subprocess.run(["modprobe", "vfio"], capture_output=True).returncode == 0 and \
            os.path.exists("/dev/vfio/vfio"):
        rc, err = _finish(_start())
        _say(f"real driver rc={rc}", err)
    _say(f"end seconds={time.monotonic() - t0:.2f}")
    return 0


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == GUEST:
    sys.exit(guest_main(sys.argv[2], sys.argv[3:]))


# =========================================================================== host side
import pytest  # noqa: E402  (the guest side above needs nothing but the standard library)

sys.path.insert(0, str(ROOT / "tests"))
from support import EXPECTED_DIR, pending_lines, require_root  # noqa: E402

CUSE_PENDING: dict[str, dict[str, str]] = {name: pending_lines(name, "cuse") for name in PROGRAMS}
"""Expected lines CUSE does not match although FUSE does: program -> {line: reason}
(tests/expected/NAME.cuse.pending)."""


def find_vm() -> Path | None:
    """run-in-vm: $IOASIDFS_VM, else ../shared/vm/run-in-vm beside the repository, else
    /work/shared/vm/run-in-vm."""
    configured = os.environ.get("IOASIDFS_VM")
    candidates = [Path(configured)] if configured else [
        ROOT.parent / "shared" / "vm" / "run-in-vm", Path("/work/shared/vm/run-in-vm")]
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def _vm_unusable_reason() -> str | None:
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is missing (run ../shared/vm/install-deps.sh)"
    if not list(Path("/boot").glob("vmlinuz-6.1.*")):
        return "no /boot/vmlinuz-6.1.* guest kernel (run ../shared/vm/install-deps.sh)"
    return None


def _sections(output: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    title = None
    body: list[str] = []
    for line in output.splitlines():
        if line.startswith(MARK + " "):
            if title is not None:
                sections[title] = "\n".join(body)
            title, body = line[len(MARK) + 1:], []
        else:
            body.append(line)
    if title is not None:
        sections[title] = "\n".join(body)
    return sections


@pytest.fixture(scope="module")
def cuse_run(compile_c) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """Every program's output and the daemon checks, from one native run or one VM boot."""
    require_root()
    binaries = [compile_c(name) for name in PROGRAMS]
    build_dir = str(binaries[0].parent)
    native = os.path.exists("/dev/cuse")
    programs = [p for p in PROGRAMS if native or p not in NATIVE_ONLY]
    guest = [sys.executable, str(Path(__file__).resolve()), GUEST, build_dir, *programs]
    if native:
        if os.path.lexists("/dev/vfio/vfio") or os.path.lexists("/dev/ioasid"):
            pytest.skip("/dev/vfio/vfio or /dev/ioasid exists here: the programs need those names")
        result = subprocess.run(guest, capture_output=True, text=True, cwd=ROOT, timeout=600)
    else:
        vm = find_vm()
        if vm is None:
            pytest.skip("no /dev/cuse here and no run-in-vm (set IOASIDFS_VM, or check out "
                        "the repository next to shared/vm)")
        reason = _vm_unusable_reason()
        if reason is not None:
            pytest.skip(f"no /dev/cuse here and the VM cannot run: {reason}")
        result = subprocess.run([str(vm), "--no-vfio", "-q", "-t", "300", "--", *guest],
                                capture_output=True, text=True, cwd=ROOT, timeout=420)
        assert result.returncode not in (124, 125), \
            f"run-in-vm failed ({result.returncode}):\n{result.stderr[-4000:]}"
    sections = _sections(result.stdout)
    assert any(k.startswith("end") for k in sections), \
        f"the guest script did not finish (rc {result.returncode}):\n{result.stdout[-4000:]}" \
        f"\n{result.stderr[-4000:]}"
    yield sections


def _section(sections: dict[str, str], prefix: str) -> tuple[str, str]:
    title = next((k for k in sections if k.startswith(prefix)), None)
    assert title is not None, f"no {prefix!r} section in {list(sections)}"
    return title, sections[title]



def test_nodes_are_char_devices_with_the_kernels_modes(cuse_run: dict[str, str]) -> None:
    assert "serving /dev/vfio/vfio" in cuse_run["ready"], cuse_run["ready"]
    modes = {line.split()[0]: line.split()[1] for line in cuse_run["nodes"].splitlines()}
    assert modes["/dev/vfio/vfio"] == "crw-rw-rw-"
    assert modes["/dev/ioasid"] == modes["/dev/iommu"] == "crw-rw----"
    assert modes["/dev/vfio/1"] == "crw-------"
    assert modes["/dev/vfio/devices/vfio0"] == "crw-------"


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_output_matches_the_kernel(name: str, cuse_run: dict[str, str]) -> None:
    if name in NATIVE_ONLY and not any(k.startswith(f"program {name} ") for k in cuse_run):
        pytest.skip(f"{name} runs only where this kernel has CUSE: {NATIVE_ONLY[name]}")
    title, out = _section(cuse_run, f"program {name} ")
    assert " rc=0 " in title, f"{title}\n{cuse_run.get(f'stderr {name}', '')}"
    expected = (EXPECTED_DIR / f"{name}.txt").read_text().splitlines()
    got = out.splitlines()
    assert len(got) == len(expected), f"{len(got)} lines printed, the kernel printed {len(expected)}"
    # FUSE-only pending lines may match on a real char device: either way is fine here.
    tolerated = pending_lines(name) | CUSE_PENDING.get(name, {})
    mismatches = [f"line {n}: kernel {want!r}, ours {have!r}"
                  for n, (want, have) in enumerate(zip(expected, got), 1)
                  if want != have and want not in tolerated]
    fixed = [f"line {n} now matches under CUSE, remove it from CUSE_PENDING: {want}"
             for n, (want, have) in enumerate(zip(expected, got), 1)
             if want == have and want in CUSE_PENDING.get(name, {})]
    assert not mismatches, "\n".join(mismatches)
    assert not fixed, "\n".join(fixed)


def test_a_taken_name_is_refused_with_a_hint(cuse_run: dict[str, str]) -> None:
    title, err = _section(cuse_run, "conflict ")
    assert title == "conflict rc=1", err
    assert "/dev/vfio/vfio" in err and "--prefix" in err, err


def test_a_real_drivers_node_is_refused(cuse_run: dict[str, str]) -> None:
    if not any(k.startswith("real driver") for k in cuse_run):
        pytest.skip("could not load the real vfio module")
    title, err = _section(cuse_run, "real driver ")
    assert title == "real driver rc=1", err
    assert "/dev/vfio/vfio already exists" in err and "--prefix" in err, err


def test_prefix_serves_the_tree_under_dev_name(cuse_run: dict[str, str]) -> None:
    lines = cuse_run["prefix nodes"].splitlines()
    assert "serving /dev/alt/vfio/vfio" in lines[0], lines
    modes = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert modes["/dev/alt/vfio/vfio"] == "crw-rw-rw-"
    assert modes["/dev/alt/ioasid"] == "crw-rw----"
    title, err = _section(cuse_run, "prefix stopped ")
    assert title == "prefix stopped rc=0 left=[] dir=False", err


def test_sigterm_removes_every_node(cuse_run: dict[str, str]) -> None:
    title, err = _section(cuse_run, "teardown ")
    assert title == "teardown rc=0 left=[] vfio_dir=False gone=True", err


@pytest.mark.skipif(os.path.exists("/dev/cuse"), reason="this kernel has CUSE")
def test_without_cuse_one_line_and_exit_2() -> None:
    require_root()
    if subprocess.run(["modprobe", "-n", "-q", "cuse"], capture_output=True).returncode == 0:
        pytest.skip("`modprobe cuse` would load CUSE here")
    result = subprocess.run([sys.executable, "-m", "ioasidfs", "cuse"], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "no CUSE" in result.stderr, result.stderr
    assert not os.path.exists("/dev/cuse")
