"""Command line: ``ioasidfs mount | run | cuse | umount``.

    ioasidfs mount [--config FILE] [--trace FILE] MOUNTPOINT      foreground daemon; Ctrl-C unmounts
    ioasidfs run   [--config FILE] [--trace FILE] [--transport fuse|cuse [--prefix NAME]] -- PROGRAM [ARGS...]
    ioasidfs cuse  [--config FILE] [--trace FILE] [--prefix NAME] the nodes as CUSE char devices in /dev
    ioasidfs umount [--abort] MOUNTPOINT                           clean up a mount left by a killed daemon

Exit status: ``run`` exits with PROGRAM's status (128+N when signal N killed it); a bad
configuration or usage is 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from .config import load_config
from .errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ioasidfs",
        description="A fake /dev/vfio and /dev/ioasid tree answering VFIO and iommufd ioctls "
                    "like the Linux kernel, for running VFIO programs without an IOMMU.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (repeat for debug output)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def daemon_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE",
                       help="TOML configuration (default: the embedded q35 + Intel IOMMU machine)")
        p.add_argument("--trace", metavar="FILE",
                       help="write every ioctl, decoded, as JSON lines to FILE; '-' prints "
                            "strace-like lines to stderr")

    mount = sub.add_parser("mount", help="serve the tree on MOUNTPOINT until Ctrl-C or SIGTERM")
    daemon_options(mount)
    mount.add_argument("mountpoint", metavar="MOUNTPOINT")

    run = sub.add_parser("run", help="run PROGRAM with the fake tree as its /dev/vfio, /dev/ioasid, /dev/iommu")
    daemon_options(run)
    run.add_argument("--transport", choices=("fuse", "cuse"), default="fuse",
                     help="fuse (default): the nodes are FUSE files bound into PROGRAM's /dev; "
                          "cuse: real character devices in /dev, one CUSE device per node (root, "
                          "a kernel with CUSE)")
    run.add_argument("--prefix", metavar="NAME",
                     help="with --transport cuse: create the nodes under /dev/NAME/ (e.g. when a "
                          "real VFIO driver owns /dev/vfio); PROGRAM still finds them at /dev/vfio")
    run.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS...]")

    cuse = sub.add_parser("cuse", help="serve every node as a real character device in /dev "
                                       "over CUSE until Ctrl-C or SIGTERM (root)")
    daemon_options(cuse)
    cuse.add_argument("--prefix", metavar="NAME",
                      help="create the nodes under /dev/NAME/ (e.g. /dev/NAME/vfio/vfio) instead "
                           "of /dev, e.g. when a real VFIO driver owns /dev/vfio")

    umount = sub.add_parser("umount", help="remove an ioasidfs mount (e.g. one left by a killed daemon)")
    umount.add_argument("--abort", action="store_true",
                        help="also abort the FUSE connection, releasing processes stuck on it")
    umount.add_argument("mountpoint", metavar="MOUNTPOINT")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="ioasidfs: %(levelname)s: %(name)s: %(message)s")

    if args.command == "umount":
        from .daemon import unmount_command
        return unmount_command(args.mountpoint, args.abort)

    cuse = args.command == "cuse" or (args.command == "run" and args.transport == "cuse")
    if args.command == "run" and args.prefix is not None and not cuse:
        print("ioasidfs run: --prefix needs --transport cuse (over FUSE nothing is created in "
              "/dev)", file=sys.stderr)
        return 2
    if cuse:
        # Before the daemon exists: a kernel without CUSE gets one line, nothing else.
        from .cuse import preflight
        problem = preflight(args.prefix)
        if problem is not None:
            print(f"ioasidfs: {problem}", file=sys.stderr)
            return 2

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"ioasidfs: bad configuration: {e}", file=sys.stderr)
        return 2

    from .daemon import Daemon
    from .trace import open_tracer
    try:
        tracer = open_tracer(args.trace)
    except OSError as e:
        print(f"ioasidfs: cannot open trace file {args.trace}: {e.strerror}", file=sys.stderr)
        return 2
    daemon = Daemon(config, tracer)

    if args.command == "mount":
        from .daemon import mount_and_serve
        return mount_and_serve(daemon, args.mountpoint)
    if args.command == "cuse":
        from .cuse import cuse_command
        return cuse_command(daemon, args.prefix)

    program = list(args.program)
    if program and program[0] == "--":
        program = program[1:]
    if not program:
        print("ioasidfs run: missing PROGRAM (usage: ioasidfs run [OPTIONS] -- PROGRAM [ARGS...])",
              file=sys.stderr)
        return 2
    if args.transport == "cuse":
        from .launcher import run_program_cuse
        return run_program_cuse(daemon, program, args.prefix)
    from .launcher import run_program
    return run_program(daemon, program)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
