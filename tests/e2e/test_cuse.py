"""CUSE: `ioasidfs cuse` and `ioasidfs run --transport cuse`, against real character devices.

This machine's kernel may have no CUSE: then everything runs in one boot of
``run-in-vm --no-vfio`` (Debian 6.1 with CUSE; found through $IOASIDFS_VM, else
../shared/vm/run-in-vm next to the repository, else /work/shared/vm/run-in-vm). Where /dev/cuse
exists (and /dev/vfio/vfio does not), it runs natively. Either way one script -- this file run as
``python test_cuse.py --guest BUILD_DIR plain=P,... run=P,...`` -- does everything and prints
delimited sections that the tests below compare:

* ``ioasidfs cuse``: node modes, the programs that need neither a device fd nor the mmap trap
  (there is no seccomp filter), a second daemon refused, --prefix, teardown by SIGTERM;
* ``ioasidfs run --transport cuse``: every fidelity program in one run (device fds, the mmap
  trap, the fake sysfs, the trace), teardown when a forwarded SIGTERM ends PROGRAM, no stray
  process;
* last (it loads the real vfio module): a real driver's /dev/vfio/vfio is refused by both, and
  ``run --transport cuse --prefix`` shows PROGRAM ours at /dev/vfio/vfio all the same.

Expected output is the FUSE tests' (tests/expected/NAME.txt). A line in NAME.pending may match
or not here: some FUSE-only differences vanish on a real character device. NAME.cuse.pending
would list lines CUSE cannot match although FUSE does, with the reason (none at the moment).
"""
from __future__ import annotations

import json
import os
import shlex
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
PLAIN_PROGRAMS = ["container_basics", "type1_flow", "type1_lifetime"]
"""Under plain ``ioasidfs cuse``: the programs that need neither a device fd nor the mmap trap."""
RUNS = [["container_basics", "type1_flow", "type1_lifetime", "ioasid_basics", "type1_limits",
         "ioasid_container"], ["edu_driver"], ["device_ioctls"], ["cdev_flow"], ["edu_eventfds"],
        ["ioasid_native"]]
"""Under ``ioasidfs run --transport cuse``: every fidelity program, in six runs (in the VM a
daemon's start costs seconds). Programs that program the device each get a fresh machine, as in
test_fidelity.py: the device's registers outlive a device fd, as on real hardware, and the
expected outputs were recorded on a freshly booted one. The last run also waits for SIGTERM
after its programs: their output must fit in the pipe (64 KiB) meanwhile."""
PROGRAMS = [name for run in RUNS for name in run]
NATIVE_ONLY = {"type1_limits": "it maps 65,535 pages one ioctl at a time: ~20 s natively, many "
                               "minutes in the emulated (TCG) VM; test_fidelity.py runs it on FUSE"}
"""Programs too slow for the VM: run only where this kernel has CUSE itself."""
EDU = "0000:00:01.0"


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


def _strays() -> list[str]:
    """Command lines of ioasidfs processes still alive (ours are all finished by now)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"ioasidfs" in argv:
            found.append(" ".join(a.decode(errors="replace") for a in argv))
    return found


_logs: dict[int, str] = {}


def _start(*args: str, command: str = "cuse",
           stdout: int | None = None) -> subprocess.Popen[bytes]:
    """``ioasidfs COMMAND ARGS``, its stderr in a file (a pipe nobody reads could block it)."""
    log = f"/tmp/ioasidfs-cuse-{len(_logs)}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ioasidfs", command, *args], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=err)
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


def _run_cuse(*args: str, script: str, timeout: float = 600,
              while_running: Callable[[subprocess.Popen[bytes]], None] | None = None,
              ) -> tuple[int, str, str]:
    """``ioasidfs run --transport cuse ARGS -- sh -c SCRIPT``: status, stdout, stderr.
    ``while_running(proc)``, if given, is called once SCRIPT has created /tmp/ioasidfs-ready
    (or the run ended)."""
    ready = "/tmp/ioasidfs-ready"
    if os.path.exists(ready):
        os.unlink(ready)
    proc = _start("--transport", "cuse", *args, "--", "sh", "-c", script, command="run",
                  stdout=subprocess.PIPE)
    try:
        if while_running is not None:
            assert proc.stdout is not None
            # The pipe must not fill up meanwhile: SCRIPT writes little before it is ready.
            _wait(lambda: os.path.exists(ready) or proc.poll() is not None, timeout)
            while_running(proc)
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(errors="replace"), _log(proc)


def _programs_script(build_dir: str, programs: list[str]) -> str:
    """Each program between markers (its output, then its status), for :func:`_sections`."""
    return "; ".join(f"echo '{MARK} run program {name}'; {shlex.quote(os.path.join(build_dir, name))}; "
                     f"echo '{MARK} run rc {name}='$?" for name in programs)


def plain_cuse(build_dir: str, programs: list[str]) -> None:
    """``ioasidfs cuse``: nodes, programs, a conflicting daemon, --prefix, teardown."""
    t0 = time.monotonic()
    daemon = _start()
    line = _ready(daemon)
    _say("ready", f"{line}\nstartup {time.monotonic() - t0:.2f}s")
    if daemon.poll() is not None:
        return
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
        # Without the supervisor a cdev's pread cannot have its position (CUSE drops it): a
        # refusal, not BAR0's bytes for the config space.
        result = subprocess.run([os.path.join(build_dir, "cdev_flow")], capture_output=True,
                                text=True, timeout=120)
        _say(f"plain cdev rc={result.returncode}", "\n".join(
            line for line in result.stdout.splitlines()
            if line.startswith(("unbound: p", "device: p")) and "(config" in line
            or "BAR0" in line and line.startswith("device: pread")))
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


def run_cuse(build_dir: str, runs: list[list[str]]) -> None:
    """``ioasidfs run --transport cuse``: each list of programs in one run, the first run also
    showing what PROGRAM sees of /dev and /sys; one trace for all. The last run's PROGRAM then
    waits for a SIGTERM, forwarded by ``ioasidfs run``."""
    trace = "/tmp/ioasidfs-run-cuse.jsonl"
    inside = (f"echo '{MARK} run inside'; stat -c '%n %F %a' /dev/vfio/vfio /dev/vfio/1 "
              f"/dev/vfio/devices/vfio0 /dev/ioasid /dev/iommu; "
              f"readlink /sys/bus/pci/devices/{EDU}/driver; "
              f"cat /sys/bus/pci/devices/{EDU}/vendor; ls -A /dev/vfio; ")
    # The last run also checks the teardown: its PROGRAM then waits for SIGTERM, which
    # `ioasidfs run` forwards; the nodes exist meanwhile (for every process) and go with it.
    wait_for_term = ("trap 'echo got TERM; exit 3' TERM; touch /tmp/ioasidfs-ready; "
                     "while :; do sleep 0.1; done")
    during: list[str] = []

    def terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            during.append(_describe(_nodes()))
            proc.send_signal(signal.SIGTERM)

    for index, names in enumerate(runs):
        last = index == len(runs) - 1
        t = time.monotonic()
        script = ((inside if index == 0 else "") + _programs_script(build_dir, names)
                  + (f"; echo '{MARK} run sigterm'; {wait_for_term}" if last else ""))
        rc, out, err = _run_cuse("--trace", trace, script=script,
                                 while_running=terminate if last else None)
        _say(f"run {'+'.join(names)} rc={rc if not last else 'see sigterm'} "
             f"seconds={time.monotonic() - t:.2f}", err)
        print(out.rstrip("\n"), flush=True)
        if last:
            gone = _wait(lambda: not _nodes(), 5)
            _say(f"run sigterm rc={rc} gone={gone} left={_nodes()}", "\n".join(during))
    records = []
    if os.path.exists(trace):
        with open(trace) as f:
            records = [json.loads(line) for line in f if line.strip()]
    wanted = {"VFIO_GROUP_GET_DEVICE_FD", "VFIO_DEVICE_GET_INFO"}
    _say(f"run trace records={len(records)}", "\n".join(
        f"{r['node']} {r['name']} {r['result']} {r['errno']}" for r in records
        if r.get("name") in wanted and r["result"] >= 0)[:4000])
    _say(f"strays {_strays()}")


def real_driver(build_dir: str) -> None:
    """With the real vfio module loaded (its /dev/vfio/vfio is the misc device 10:196)."""
    # Only in the throw-away VM: never load a module on the machine itself.
    if os.environ.get("ORACLE_GUEST") != "1" or \
            subprocess.run(["modprobe", "vfio"], capture_output=True).returncode != 0 or \
            not os.path.exists("/dev/vfio/vfio"):
        return
    rc, err = _finish(_start())
    _say(f"real driver rc={rc}", err)
    rc, out, err = _run_cuse(script="true")
    _say(f"real driver run rc={rc}", err)
    real = os.stat("/dev/vfio/vfio").st_rdev
    script = (f"echo '{MARK} run stat'; stat -c '%t:%T' /dev/vfio/vfio; " +
              _programs_script(build_dir, ["container_basics"]))
    rc, out, err = _run_cuse("--prefix", "alt", script=script)
    _say(f"real driver prefix rc={rc} real={os.major(real):x}:{os.minor(real):x} "
         f"left={_nodes('alt')}", err)
    print(out.rstrip("\n").replace(f"{MARK} run ", f"{MARK} prefix run "), flush=True)


def guest_main(build_dir: str, plain: list[str], runs: list[list[str]]) -> int:
    t0 = time.monotonic()
    plain_cuse(build_dir, plain)
    t1 = time.monotonic()
    run_cuse(build_dir, runs)
    t2 = time.monotonic()
    real_driver(build_dir)
    _say(f"end seconds={time.monotonic() - t0:.2f} cuse={t1 - t0:.2f} run={t2 - t1:.2f}")
    return 0


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == GUEST:
    lists = dict(arg.split("=", 1) for arg in sys.argv[3:])
    sys.exit(guest_main(sys.argv[2], [p for p in lists.get("plain", "").split(",") if p],
                        [run.split(",") for run in lists.get("run", "").split("/") if run]))


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
    runs = [[p for p in run if native or p not in NATIVE_ONLY] for run in RUNS]
    guest = [sys.executable, str(Path(__file__).resolve()), GUEST, build_dir,
             "plain=" + ",".join(PLAIN_PROGRAMS), "run=" + "/".join(",".join(r) for r in runs)]
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



def _compare(name: str, out: str) -> None:
    """``out`` against the kernel's output of ``name``, line for line; NAME.pending lines may
    match or not (FUSE-only differences may vanish on a char device), NAME.cuse.pending lines
    must still differ."""
    expected = (EXPECTED_DIR / f"{name}.txt").read_text().splitlines()
    got = out.splitlines()
    assert len(got) == len(expected), f"{len(got)} lines printed, the kernel printed {len(expected)}"
    tolerated = pending_lines(name) | CUSE_PENDING.get(name, {})
    mismatches = [f"line {n}: kernel {want!r}, ours {have!r}"
                  for n, (want, have) in enumerate(zip(expected, got), 1)
                  if want != have and want not in tolerated]
    fixed = [f"line {n} now matches under CUSE, remove it from {name}.cuse.pending: {want}"
             for n, (want, have) in enumerate(zip(expected, got), 1)
             if want == have and want in CUSE_PENDING.get(name, {})]
    assert not mismatches, "\n".join(mismatches)
    assert not fixed, "\n".join(fixed)


# ------------------------------------------------------------------ ioasidfs cuse
def test_nodes_are_char_devices_with_the_kernels_modes(cuse_run: dict[str, str]) -> None:
    assert "serving /dev/vfio/vfio" in cuse_run["ready"], cuse_run["ready"]
    modes = {line.split()[0]: line.split()[1] for line in cuse_run["nodes"].splitlines()}
    assert modes["/dev/vfio/vfio"] == "crw-rw-rw-"
    assert modes["/dev/ioasid"] == modes["/dev/iommu"] == "crw-rw----"
    assert modes["/dev/vfio/1"] == "crw-------"
    assert modes["/dev/vfio/devices/vfio0"] == "crw-------"


@pytest.mark.parametrize("name", PLAIN_PROGRAMS)
def test_program_output_matches_the_kernel(name: str, cuse_run: dict[str, str]) -> None:
    """Plain ``ioasidfs cuse``, no seccomp filter: the programs that need no device fd."""
    title, out = _section(cuse_run, f"program {name} ")
    assert " rc=0 " in title, f"{title}\n{cuse_run.get(f'stderr {name}', '')}"
    _compare(name, out)


def test_a_cdev_read_without_its_position_is_refused(cuse_run: dict[str, str]) -> None:
    """Plain ``ioasidfs cuse``: CUSE sends every pread with offset 0, so a bound cdev's pread
    is EINVAL (and logged) rather than the wrong region's bytes."""
    _, lines = _section(cuse_run, "plain cdev ")
    assert lines.splitlines() == [
        "unbound: pread(config, 4) = -1 EINVAL",  # as the kernel says
        "device: pread(config, 4) = -1 EINVAL",  # the kernel: 4 (run --transport cuse: 4)
        "device: pwrite(config COMMAND, MEM|MASTER) = -1 EINVAL",
        "device: pread(BAR0 ID) = -1 EINVAL",
    ], lines


def test_a_taken_name_is_refused_with_a_hint(cuse_run: dict[str, str]) -> None:
    title, err = _section(cuse_run, "conflict ")
    assert title == "conflict rc=1", err
    assert "/dev/vfio/vfio" in err and "--prefix" in err, err


def test_a_real_drivers_node_is_refused(cuse_run: dict[str, str]) -> None:
    if not any(k.startswith("real driver") for k in cuse_run):
        pytest.skip("could not load the real vfio module")
    title, err = _section(cuse_run, "real driver rc=")
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


# ------------------------------------------------------------------ ioasidfs run --transport cuse
@pytest.mark.parametrize("name", PROGRAMS)
def test_run_program_output_matches_the_kernel(name: str, cuse_run: dict[str, str]) -> None:
    """Under ``run --transport cuse``: device fds (GET_DEVICE_FD through the seccomp trap,
    regions, interrupts, DMA) and the mmap trap on real char devices."""
    if name in NATIVE_ONLY and f"run program {name}" not in cuse_run:
        pytest.skip(f"{name} runs only where this kernel has CUSE: {NATIVE_ONLY[name]}")
    run = next(r for r in RUNS if name in r)
    title, err = _section(cuse_run, f"run {'+'.join(p for p in run if f'run program {p}' in cuse_run)} rc=")
    assert f"run program {name}" in cuse_run and f"run rc {name}=0" in cuse_run, f"{title}\n{err}"
    assert " rc=0 " in title or " rc=see sigterm " in title, f"{title}\n{err}"
    _compare(name, cuse_run[f"run program {name}"])


def test_run_shows_char_devices_and_the_fake_sysfs(cuse_run: dict[str, str]) -> None:
    assert "run inside" in cuse_run, list(cuse_run)
    assert cuse_run["run inside"].splitlines() == [
        "/dev/vfio/vfio character special file 666",
        "/dev/vfio/1 character special file 600",
        "/dev/vfio/devices/vfio0 character special file 600",
        "/dev/ioasid character special file 660",
        "/dev/iommu character special file 660",
        "../../../bus/pci/drivers/vfio-pci",  # ours: the VM's real edu is bound to nothing
        "0x1234",
        "1", "2", "3", "devices", "vfio",  # nothing hidden of ours in /dev/vfio
    ]


def test_run_traces_device_fds_like_fuse(cuse_run: dict[str, str]) -> None:
    title, lines = _section(cuse_run, "run trace ")
    assert int(title.split("records=")[1]) > 1000, title
    assert "/dev/vfio/1 VFIO_GROUP_GET_DEVICE_FD" in lines, lines
    assert "VFIO_DEVICE_GET_INFO 0 None" in lines, lines


def test_run_teardown_leaves_no_node_and_no_process(cuse_run: dict[str, str]) -> None:
    assert cuse_run.get("run sigterm", "").strip() == "got TERM", cuse_run.get("run sigterm")
    title, during = _section(cuse_run, "run sigterm rc=")
    assert title == "run sigterm rc=3 gone=True left=[]", during
    assert "/dev/vfio/vfio crw-rw-rw-" in during, during  # while PROGRAM ran, for every process
    assert "strays []" in cuse_run


def test_run_refuses_a_real_driver_and_prefix_shadows_it(cuse_run: dict[str, str]) -> None:
    if not any(k.startswith("real driver") for k in cuse_run):
        pytest.skip("could not load the real vfio module")
    title, err = _section(cuse_run, "real driver run rc=")
    assert title == "real driver run rc=1", err
    assert "/dev/vfio/vfio already exists" in err and "--prefix" in err, err
    title, err = _section(cuse_run, "real driver prefix ")
    assert title == "real driver prefix rc=0 real=a:c4 left=[]", err
    assert cuse_run["prefix run stat"] != "a:c4", "PROGRAM saw the real /dev/vfio/vfio"
    assert "prefix run rc container_basics=0" in cuse_run, err
    _compare("container_basics", cuse_run["prefix run program container_basics"])


@pytest.mark.skipif(os.path.exists("/dev/cuse"), reason="this kernel has CUSE")
@pytest.mark.parametrize("command", [["cuse"], ["run", "--transport", "cuse", "--", "true"]],
                         ids=["cuse", "run"])
def test_without_cuse_one_line_and_exit_2(command: list[str]) -> None:
    require_root()
    if subprocess.run(["modprobe", "-n", "-q", "cuse"], capture_output=True).returncode == 0:
        pytest.skip("`modprobe cuse` would load CUSE here")
    result = subprocess.run([sys.executable, "-m", "ioasidfs", *command], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and "no CUSE" in result.stderr, result.stderr
    assert not os.path.exists("/dev/cuse")
