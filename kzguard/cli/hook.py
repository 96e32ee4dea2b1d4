"""``kzguard hook``: the package-manager hooks' entry point. ``hook <manager>`` and ``hook
post-transaction <manager>`` run inside every transaction, most of them with nothing to do, so
:func:`fast_hook` dispatches them without argparse; the parser's ``hook`` subcommand ends in
:func:`cmd_hook` for the rest (``post-install``, and any command line the fast path declines).
"""

import sys

from kzguard import managers
from kzguard.base.errors import UsageError

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Optional

POST_INSTALL = "post-install"
POST_TRANSACTION = "post-transaction"  # apt's DPkg::Post-Invoke: the end-state check


def fast_hook(argv: "Sequence[str]") -> "Optional[int]":
    """``[--root DIR] [--config FILE] [--dry-run] hook MANAGER`` for a manager with a stdin
    protocol, and ``... hook post-transaction MANAGER`` (which apt runs after every dpkg run),
    without building the parser: these run inside every package-manager transaction, most of
    them with nothing to do. ``None`` for any other command line (the parser takes it)."""
    options: dict[str, object] = {"--root": None, "--config": None, "--dry-run": False}
    words = list(argv)
    rest: list[str] = []
    while words:
        word = words.pop(0)
        key, eq, value = word.partition("=")
        if key in ("--root", "--config") and (eq or words):
            options[key] = value if eq else words.pop(0)
        elif word == "--dry-run":
            options[word] = True
        else:
            rest.append(word)
    root = options["--root"]
    config = options["--config"]
    dry_run = bool(options["--dry-run"])
    if len(rest) == 2 and rest[0] == "hook" and rest[1] in managers.STDIN_HOOKS:
        return stdin_hook(rest[1], root, config, dry_run)  # type: ignore[arg-type]
    if len(rest) != 3 or rest[:2] != ["hook", POST_TRANSACTION]:
        return None
    if rest[2] not in managers.END_CHECKS:
        return None
    from kzguard.guard import end_check

    return end_check.finish_main(
        rest[2],
        root_option=root,  # type: ignore[arg-type]
        config_path=config,  # type: ignore[arg-type]
        dry_run=dry_run,
    )


def stdin_hook(manager: str, root: "Optional[str]", config: "Optional[str]", dry_run: bool) -> int:
    """``kzguard hook MANAGER``: the adapter reads its protocol, the gate answers."""
    from kzguard.guard.hook_process import hook_main

    adapter = managers.get(manager)
    return hook_main(
        manager,
        adapter.read,
        stdin=sys.stdin,
        root_option=root,
        config_path=config,
        dry_run=dry_run,
        on_hold=adapter.hold,
        maintain=adapter.maintain,
    )


def cmd_hook(args: "argparse.Namespace") -> int:
    """Read the manager's protocol on stdin, run the gate, answer with an exit code."""
    if args.manager == POST_INSTALL:
        return _post_install(args)
    if args.manager == POST_TRANSACTION:
        return _post_transaction(args)
    if args.release or args.targets:
        raise UsageError(f"hook {args.manager} takes no release and no --targets")
    return stdin_hook(args.manager, args.root, args.config, args.dry_run)


def _post_install(args: "argparse.Namespace") -> int:
    """The post-install check of one kernel (or of pacman's targets on stdin)."""
    from kzguard.guard import postinstall

    if bool(args.release) == bool(args.targets):
        raise UsageError("hook post-install takes a kernel release or --targets (not both)")
    return postinstall.hook_main(
        [args.release] if args.release else [],
        root_option=args.root,
        config_path=args.config,
        dry_run=args.dry_run,
        targets=sys.stdin if args.targets else None,
    )


def _post_transaction(args: "argparse.Namespace") -> int:
    """The final post-install check of the transaction that just ended."""
    from kzguard.guard import end_check

    if args.release not in managers.END_CHECKS or args.targets:
        raise UsageError(
            f"hook post-transaction takes the manager whose transaction ended "
            f"({', '.join(managers.END_CHECKS)}), not {args.release!r}"
        )
    return end_check.finish_main(
        args.release, root_option=args.root, config_path=args.config, dry_run=args.dry_run
    )
