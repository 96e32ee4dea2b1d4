"""The commands of ``kzguard``: the parser and one function per subcommand (output only; the
work is in the layers below). Imported only for a command line the hook fast path in
:mod:`kzguard.cli` does not take.
"""

from __future__ import annotations

import os
import sys

from kzguard import __version__, managers
from kzguard.base.errors import EXIT_INTERNAL, EXIT_SAFE, EXIT_UNSAFE, KzguardError, UsageError
from kzguard.cli.hook import POST_INSTALL, POST_TRANSACTION, cmd_hook

TYPE_CHECKING = False  # typing costs 2 ms to import
if TYPE_CHECKING:  # argparse (7 ms) loads only when the parser is built
    import argparse
    from collections.abc import Sequence
    from typing import Optional

    from kzguard.context import Context
    from kzguard.judge.policy import Report

_ZFS_VERSION = r"(zfs-)?\d+\.\d+(\.\d+)?(-rc\d+)?(-\d+)?\Z"  # compiled where it is used


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Global options, accepted before and after the subcommand."""
    import argparse

    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--root", metavar="DIR", default=default, help="system root to judge (default /)"
    )
    parser.add_argument(
        "--config", metavar="FILE", default=default, help="configuration file (host path)"
    )
    parser.add_argument(
        "--json", action="store_true", default=default if suppress else False, help="JSON output"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=default if suppress else False,
        help="change nothing; say what would be done",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default if suppress else 0,
        help="more logging (twice for debug)",
    )


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter with the width found without importing shutil (the hook budget)."""
    import argparse

    try:
        width = int(os.environ.get("COLUMNS") or os.get_terminal_size(2).columns)
    except (OSError, ValueError):
        width = 80
    return argparse.HelpFormatter(prog, width=max(width - 2, 40))


def _subparser(**kwargs: object) -> argparse.ArgumentParser:
    import argparse

    return argparse.ArgumentParser(formatter_class=_formatter, **kwargs)  # type: ignore[arg-type]


def plain_check(argv: Sequence[str]) -> Optional[argparse.Namespace]:
    """``[--root DIR] [--config FILE] [--json] check [--json] [--kernel RELEASE]...`` as the
    parser would read it, without building the parser (monitoring runs ``check`` often);
    ``None`` for any other command line, which the parser takes (and explains when bad)."""
    values: dict[str, object] = {"root": None, "config": None, "json": False, "kernel": []}
    words = list(argv)
    seen_check = False
    while words:
        word = words.pop(0)
        key, eq, value = word.partition("=")
        if key in ("--root", "--config") or (key == "--kernel" and seen_check):
            if not eq:
                if not words or words[0].startswith("-"):
                    return None
                value = words.pop(0)
            if not value:
                return None
            if key == "--kernel":
                values["kernel"].append(value)  # type: ignore[union-attr]
            else:
                values[key[2:]] = value
        elif word == "--json":
            values["json"] = True
        elif word == "check" and not seen_check:
            seen_check = True
        else:
            return None
    if not seen_check:
        return None
    from types import SimpleNamespace

    return SimpleNamespace(  # type: ignore[return-value]
        command="check", func=cmd_check, dry_run=False, verbose=0, zfs_version=None, **values
    )


def build_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="kzguard",
        description="Keep the next boot off kernels that cannot load the ZFS module.",
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"kzguard {__version__}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False, formatter_class=_formatter)
    _global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_subparser)
    sub.required = True

    status = sub.add_parser(
        "status", parents=[common], help="the host, every kernel's verdict and the next boot"
    )
    status.set_defaults(func=cmd_status)

    check = sub.add_parser(
        "check",
        parents=[common],
        help="judge kernels; exit 0 all safe, 1 any unsafe or unknown",
    )
    check.add_argument(
        "--kernel",
        metavar="RELEASE",
        action="append",
        default=[],
        help="a kernel release to judge (repeatable; default: installed and pending kernels)",
    )
    check.add_argument(
        "--zfs-version", metavar="V", help="judge as if ZFS V were installed (e.g. 2.3.1)"
    )
    check.set_defaults(func=cmd_check)

    doctor = sub.add_parser(
        "doctor",
        parents=[common],
        help="for every problem, what is wrong and the commands that fix it on this distro",
    )
    doctor.set_defaults(func=cmd_doctor)

    hook = sub.add_parser(
        "hook",
        parents=[common],
        help="the package-manager hooks' entry point (reads the manager's protocol on stdin)",
    )
    hook.add_argument(
        "manager",
        choices=(*managers.STDIN_HOOKS, POST_INSTALL, POST_TRANSACTION),
        help="the manager calling",
    )
    hook.add_argument(
        "release",
        nargs="?",
        help="post-install: the kernel release just installed; post-transaction: the manager "
        "whose transaction just ended (apt)",
    )
    hook.add_argument(
        "--targets",
        action="store_true",
        help="post-install: read the releases from pacman's NeedsTargets paths on stdin",
    )
    hook.set_defaults(func=cmd_hook)

    pin = sub.add_parser(
        "pin",
        parents=[common],
        help="keep a kernel release out of every package manager (list, add, remove)",
    )
    pin_sub = pin.add_subparsers(dest="pin_command", metavar="ACTION", parser_class=_subparser)
    pin_sub.required = True
    pin_list = pin_sub.add_parser("list", parents=[common], help="show the pinned kernels")
    pin_list.set_defaults(func=cmd_pin_list)
    pin_add = pin_sub.add_parser("add", parents=[common], help="pin a kernel release")
    pin_add.add_argument("release", help="the kernel release (as uname -r prints it)")
    pin_add.add_argument("--reason", default="", help="why, for the state file and the journal")
    pin_add.set_defaults(func=cmd_pin_add)
    pin_remove = pin_sub.add_parser("remove", parents=[common], help="lift a pin")
    pin_remove.add_argument("release", help="the kernel release")
    pin_remove.set_defaults(func=cmd_pin_remove)

    allow = sub.add_parser(
        "allow",
        parents=[common],
        help="let one kernel through the next transaction that would refuse it (one-shot)",
    )
    allow.add_argument("release", nargs="?", help="the kernel release to let through")
    allow.add_argument("--list", action="store_true", help="show pending overrides")
    allow.add_argument("--remove", action="store_true", help="withdraw the override")
    allow.set_defaults(func=cmd_allow)

    cleanup = sub.add_parser(
        "cleanup",
        parents=[common],
        help="remove every APT pin and dnf5 versionlock entry kzguard wrote (before uninstalling)",
    )
    cleanup.set_defaults(func=cmd_cleanup)

    snapshot = sub.add_parser(
        "snapshot", parents=[common], help="snapshot the boot environment now (as a hook would)"
    )
    snapshot.add_argument("--reason", default="manual", help="the reason in the snapshot name")
    snapshot.set_defaults(func=cmd_snapshot)

    daemon = sub.add_parser(
        "daemon",
        parents=[common],
        help="the service: watch the host, check on changes, metrics, D-Bus (systemd Type=notify)",
    )
    daemon.add_argument(
        "--interval", default="6h", help="full check at least this often (e.g. 30m, 6h; default 6h)"
    )
    daemon.add_argument(
        "--debounce", default="500ms", help="wait this long after the last change (default 500ms)"
    )
    daemon.add_argument(
        "--bus",
        default="system",
        metavar="system|none|ADDRESS",
        help="the D-Bus to serve org.kzguard.Guard1 on (default: the system bus)",
    )
    daemon.set_defaults(func=cmd_daemon)

    from kzguard.cli import boot as cli_boot  # kzguard boot show|keep|release

    cli_boot.add_parser(sub, common, _subparser)
    return parser


def context(args: argparse.Namespace) -> Context:
    """The command's one context: ``--root``, ``--config`` and ``--dry-run`` as given."""
    from kzguard.context import Context

    return Context.of_command(args)


def _report(
    args: argparse.Namespace,
    kernels: Sequence[str] = (),
    zfs_version: Optional[str] = None,
    *,
    verify_signatures: bool = False,
) -> Report:
    from kzguard.facts.host import gather_for
    from kzguard.judge.policy import judge

    ctx = context(args)
    config = ctx.config
    host = gather_for(ctx.root, config, verify_signatures=verify_signatures, runner=ctx.runner)
    return judge(
        host,
        config.zfs_ranges,
        kernels=kernels,
        zfs_version=zfs_version,
        ranges_origin=config.source,
    )


def _emit(args: argparse.Namespace, report: Report, *, header: bool = True) -> int:
    from kzguard.judge import report as render

    if args.json:
        sys.stdout.write(render.to_json(report))
    else:
        sys.stdout.write(render.render(report, header=header))
    return report.exit_code


def cmd_status(args: argparse.Namespace) -> int:
    """Show the host; exit 0 whatever the verdicts (``check`` is the command that tests)."""
    _emit(args, _report(args))
    return EXIT_SAFE


def cmd_doctor(args: argparse.Namespace) -> int:
    """Verify everything (signatures too, enforced or not) and explain each problem."""
    import json

    from kzguard.judge import doctor

    report = _report(args, verify_signatures=True)
    advice = doctor.advise(report)
    if args.json:
        sys.stdout.write(json.dumps([a.to_dict() for a in advice], indent=2) + "\n")
    else:
        sys.stdout.write(doctor.render(advice))
    return EXIT_SAFE if not advice else EXIT_UNSAFE


def cmd_check(args: argparse.Namespace) -> int:
    import re

    from kzguard.base.kernelrelease import parse_release

    for release in args.kernel:
        parse_release(release)
    if args.zfs_version is not None and not re.match(_ZFS_VERSION, args.zfs_version):
        raise UsageError(f"--zfs-version {args.zfs_version!r} is not a ZFS version (like 2.3.1)")
    report = _report(args, tuple(dict.fromkeys(args.kernel)), args.zfs_version)
    return _emit(args, report, header=not args.kernel)


def _who() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())


def cmd_pin_list(args: argparse.Namespace) -> int:
    import json

    from kzguard.actions import pin

    pins = pin.current(context(args).root)
    if args.json:
        sys.stdout.write(json.dumps([p.to_dict() for p in pins.values()], indent=2) + "\n")
        return 0
    if not pins:
        print("kzguard: no kernel is pinned")
    for info in pins.values():
        lifts = "lifts itself once a check finds it safe" if info.auto else "until `pin remove`"
        print(
            f"{info.release}  since {info.time or '?'} by {info.who or '?'} "
            f"({info.manager or 'state file only'}; {lifts}): {info.reason}"
        )
    return 0


def cmd_pin_add(args: argparse.Namespace) -> int:
    from kzguard.actions import pin
    from kzguard.base.kernelrelease import parse_release

    parse_release(args.release)
    who = _who()
    reason = f"pinned by {who} with `kzguard pin add`" + (f": {args.reason}" if args.reason else "")
    for line in pin.add(context(args), args.release, reason=reason, who=who):
        print(line)
    return 0


def cmd_pin_remove(args: argparse.Namespace) -> int:
    from kzguard.actions import pin

    why = f"removed by {_who()} with `kzguard pin remove`"
    for line in pin.remove(context(args), args.release, why=why):
        print(line)
    return 0


def cmd_allow(args: argparse.Namespace) -> int:
    """Record, list or withdraw a one-shot override in the state file."""
    import time

    from kzguard.actions import state
    from kzguard.base import journal
    from kzguard.base.kernelrelease import parse_release

    root = context(args).root
    if args.list or not args.release:
        for release, info in sorted(state.read(root)["allow"].items()):
            print(f"{release}  (added {info.get('time', '?')} by {info.get('by', '?')})")
        return 0
    parse_release(args.release)
    who = _who()
    with state.locked(root, dry_run=args.dry_run) as state_file:
        if args.remove:
            removed = state_file.data["allow"].pop(args.release, None) is not None
        else:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            state_file.data["allow"][args.release] = {"time": when, "by": who}
            state_file.event(
                "allow-added", f"{who} allowed {args.release} once", kernel=args.release
            )
        state_file.save()
    # said only once the state file holds it (a failed write raised above: nothing is claimed)
    if args.remove:
        print(f"kzguard: override for {args.release} " + ("withdrawn" if removed else "not found"))
        return 0
    if not args.dry_run:
        journal.event(
            "allow-added",
            f"{who} allowed {args.release} through the next transaction",
            priority=journal.NOTICE,
            kernel=args.release,
        )
    verb = "would let" if args.dry_run else "will let"
    print(f"kzguard: the next transaction {verb} {args.release} through once")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Take back kzguard's entries in the package managers' configuration."""
    from kzguard.actions.cleanup import remove_manager_config

    lines = remove_manager_config(context(args))
    for line in lines or ["nothing of kzguard's in the package managers' configuration"]:
        print(f"kzguard: {line}")
    return EXIT_SAFE


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Snapshot the boot environment with the configured dataset and retention."""
    from kzguard.actions import snapshot

    ctx = context(args)
    config = ctx.config
    result = snapshot.take(
        ctx.root,
        ctx.runner,
        dataset=config.snapshots.dataset,
        keep=config.snapshots.keep,
        manager="kzguard",
        kernels=(),
        reason=args.reason,
    )
    print(f"kzguard: {result.message}")
    for name in result.destroyed:
        print(f"kzguard: destroyed old snapshot {name}")
    return EXIT_INTERNAL if result.failed else EXIT_SAFE


def cmd_daemon(args: argparse.Namespace) -> int:
    """Run the service until SIGTERM (GLib main loop, sd_notify, inotify)."""
    try:
        from kzguard.service import daemon
    except ImportError as exc:
        raise KzguardError(f"the daemon needs PyGObject (kzguard[service]): {exc}") from exc

    return daemon.main(
        args.root or "/",
        args.config,
        interval=args.interval,
        debounce=args.debounce,
        bus=args.bus,
        dry_run=args.dry_run,
        verbosity=args.verbose,
    )


def setup_logging(verbosity: int) -> None:
    """Log to stderr; logging is imported only when asked for (it costs the hooks 2 ms)."""
    if verbosity:
        import logging

        level = logging.WARNING - 10 * min(verbosity, 2)
        logging.basicConfig(level=level, format="kzguard: %(levelname)s: %(message)s")
