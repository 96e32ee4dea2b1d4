"""``kzguard boot show|keep|release``: argument parsing and output; the work is in
:mod:`kzguard.facts.bootloader` (reading), :mod:`kzguard.judge.policy` (judging) and
:mod:`kzguard.actions.boot` (the only code that changes the boot default).

Exit codes: ``show`` 0 when it reported; ``keep`` 0 when the default is kept, 1 when the
kernel is not judged safe (without ``--force``) or the guard could not act, 2 when the release
has no boot entry; ``release`` 0, or 1 when the original default could not be restored.
"""

from __future__ import annotations

import sys

from kzguard.base.errors import EXIT_SAFE, EXIT_UNSAFE, UsageError

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    import argparse
    from typing import Any, Optional

    from kzguard.actions.boot import BootChange
    from kzguard.facts.bootloader import BootEntry, BootState
    from kzguard.judge.policy import KernelVerdict


def add_parser(sub: Any, common: argparse.ArgumentParser, parser_class: Any) -> None:
    """Register ``boot`` and its actions under the ``kzguard`` subcommands ``sub``."""
    boot = sub.add_parser(
        "boot",
        parents=[common],
        help="the boot default guard: what the next boot uses, keep it on a kernel, release",
    )
    actions = boot.add_subparsers(dest="boot_command", metavar="ACTION", parser_class=parser_class)
    actions.required = True
    show = actions.add_parser(
        "show",
        parents=[common],
        help="the bootloader's entries, its default and next boot, each kernel's verdict",
    )
    show.set_defaults(func=cmd_show)
    keep = actions.add_parser(
        "keep",
        parents=[common],
        help="make RELEASE's entry the persistent boot default (the original is recorded)",
    )
    keep.add_argument("release", help="the kernel release (as uname -r prints it)")
    keep.add_argument("--force", action="store_true", help="keep it even if not judged safe")
    keep.add_argument("--reason", default="", help="why, for the state file and the journal")
    keep.set_defaults(func=cmd_keep)
    release = actions.add_parser(
        "release", parents=[common], help="restore the boot default kzguard recorded"
    )
    release.set_defaults(func=cmd_release)


def _facts(args: argparse.Namespace, kernels: list[str]) -> tuple[Any, BootState, dict]:
    """The run's context, its bootloader and the verdicts on ``kernels`` (plus the entries'
    kernels)."""
    from kzguard.context import Context
    from kzguard.facts.bootloader import read_boot
    from kzguard.judge.policy import judge

    ctx = Context.of_command(args)
    config, host = ctx.config, ctx.host
    boot = host.boot or read_boot(ctx.root, ctx.runner)
    wanted = [*kernels, *(e.kernel for e in (*boot.entries, boot.next) if e and e.kernel)]
    verdicts: dict[str, KernelVerdict] = {}
    if wanted:
        report = judge(
            host,
            config.zfs_ranges,
            kernels=tuple(dict.fromkeys(wanted)),
            ranges_origin=config.source,
        )
        verdicts = {k.release: k for k in report.kernels}
    return ctx, boot, verdicts


def cmd_show(args: argparse.Namespace) -> int:
    import json

    ctx, boot, verdicts = _facts(args, [])
    guard = ctx.state.get("boot") or None
    if args.json:
        data = {
            "loader": boot.loader,
            "source": boot.source,
            "next": _entry(boot.next, boot, verdicts),
            "default": _entry(boot.default, boot, verdicts),
            "entries": [_entry(e, boot, verdicts) for e in boot.entries],
            "guard": guard,
            "problems": list(boot.problems),
        }
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return EXIT_SAFE
    sys.stdout.write(_render(boot, verdicts, guard))
    return EXIT_SAFE


def cmd_keep(args: argparse.Namespace) -> int:
    from kzguard.actions import boot as guard
    from kzguard.base.kernelrelease import parse_release

    parse_release(args.release)
    ctx, boot, verdicts = _facts(args, [args.release])
    if boot.entry_for(args.release) is None:
        raise UsageError(
            f"{args.release} has no boot entry ({boot.loader}: "
            f"{', '.join(sorted({e.kernel for e in boot.entries if e.kernel})) or 'no kernels'})"
        )
    verdict = verdicts.get(args.release)
    if verdict is not None and not verdict.safe and not args.force:
        why = ", ".join(dict.fromkeys(r.code for r in verdict.reasons)) or verdict.verdict
        print(
            f"kzguard: refusing to keep {args.release}: it is judged {verdict.verdict} ({why}); "
            "--force keeps it anyway",
            file=sys.stderr,
        )
        return EXIT_UNSAFE
    who = _who()
    reason = f"kept by {who} with `kzguard boot keep`" + (f": {args.reason}" if args.reason else "")
    change = guard.keep(ctx.root, ctx.runner, args.release, reason=reason)
    return _emit_change(args, change)


def cmd_release(args: argparse.Namespace) -> int:
    from kzguard.actions import boot as guard
    from kzguard.context import Context

    ctx = Context.of_command(args)
    return _emit_change(args, guard.release(ctx.root, ctx.runner))


def _emit_change(args: argparse.Namespace, change: BootChange) -> int:
    import json

    if args.json:
        sys.stdout.write(json.dumps(change.to_dict(), indent=2) + "\n")
    else:
        print(f"kzguard: {change.message}", file=sys.stderr if change.failed else sys.stdout)
    return EXIT_UNSAFE if change.failed else EXIT_SAFE


def _entry(
    entry: Optional[BootEntry], boot: BootState, verdicts: dict[str, KernelVerdict]
) -> Optional[dict[str, object]]:
    if entry is None:
        return None
    verdict = verdicts.get(entry.kernel) if entry.kernel else None
    return {
        **entry.to_dict(),
        "verdict": verdict.verdict if verdict else None,
        "safe": verdict.safe if verdict else None,
        "default": entry == boot.default,
        "next": entry == boot.next,
    }


def _render(boot: BootState, verdicts: dict[str, KernelVerdict], guard: Optional[dict]) -> str:
    def judged(entry: Optional[BootEntry]) -> str:
        if entry is None:
            return "none"
        verdict = verdicts.get(entry.kernel) if entry.kernel else None
        label = "kernel unknown" if not entry.kernel else entry.kernel
        if verdict is not None:
            codes = ",".join(dict.fromkeys(r.code for r in verdict.reasons))
            label += "  " + ("safe" if verdict.safe else verdict.verdict.upper())
            label += f"  {codes}" if codes else ""
        return f"{label}  ({entry.id})"

    lines = [
        f"Bootloader  {boot.loader}",
        f"Next boot   {judged(boot.next)}",
        f"            from {boot.source}",
    ]
    if boot.default != boot.next:
        lines.append(f"Default     {judged(boot.default)}")
    if guard:
        lines.append(
            f"Guard       kzguard keeps {guard.get('kept')} since {guard.get('time')} "
            f"({guard.get('reason')}); `kzguard boot release` restores "
            f"{guard.get('original') or 'the unset default'}"
        )
    if boot.entries:
        rows = [("", "KERNEL", "VERDICT", "ENTRY", "TITLE")]
        for e in boot.entries:
            mark = ("N" if e == boot.next else "") + ("D" if e == boot.default else "")
            verdict = verdicts.get(e.kernel) if e.kernel else None
            label = "-" if verdict is None else "safe" if verdict.safe else verdict.verdict.upper()
            rows.append((mark, e.kernel or "-", label, e.id, e.title))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines.append("")
        lines += [
            "  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:4])) + "  " + r[4] for r in rows
        ]
        lines.append("(N: the next boot, D: the persistent default)")
    if boot.problems:
        lines += ["", "Problems", *(f"  {p}" for p in boot.problems)]
    return "\n".join(lines) + "\n"


def _who() -> str:
    import os

    return os.environ.get("SUDO_USER") or os.environ.get("USER") or str(os.getuid())
