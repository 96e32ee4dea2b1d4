"""The ``kzguard`` command's entry point. ``kzguard hook <manager>`` and ``kzguard hook
post-transaction <manager>`` run inside every package-manager transaction, most of them with
nothing to do, so :mod:`kzguard.cli.hook` dispatches them without argparse; every other
command line goes to the parser in :mod:`kzguard.cli.commands`.

Exit codes of ``check``: 0 every judged kernel is safe, 1 any is unsafe or unknown; of every
command: 2 usage or configuration error, 3 internal error. ``status`` exits 0 when it reported.
"""

import os
import sys

from kzguard.base.errors import EXIT_INTERNAL, EXIT_USAGE, KzguardError
from kzguard.cli.hook import fast_hook

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    import argparse
    from typing import Optional


def build_parser() -> "argparse.ArgumentParser":
    """The whole command line's parser (:func:`kzguard.cli.commands.build_parser`)."""
    from kzguard.cli.commands import build_parser

    return build_parser()


_WRITE_FAILURES = {
    "EACCES": "permission denied (run as root)",
    "EPERM": "operation not permitted (run as root)",
    "EROFS": "read-only file system",
    "ENOSPC": "no space left on the device",
    "EDQUOT": "disk quota exceeded",
}


def write_failure(exc: OSError) -> "Optional[str]":
    """One line for a change the host refused (permission, read-only, disk full); ``None``
    for any other OSError, which stays an internal error."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    what = _WRITE_FAILURES.get(name)
    if what is None:
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return f"cannot change the host{where}: {what}; nothing was reported as done"


def main(argv: "Optional[list[str]]" = None) -> int:
    try:
        fast = fast_hook(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        print("kzguard: interrupted", file=sys.stderr)
        return EXIT_INTERNAL
    if fast is not None:
        return fast
    from kzguard.cli import commands

    words = sys.argv[1:] if argv is None else argv
    args = commands.plain_check(words)  # `check` as monitoring runs it: no argparse (10 ms)
    if args is None:
        args = commands.build_parser().parse_args(argv)
    commands.setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except KzguardError as exc:
        print(f"kzguard: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kzguard: interrupted", file=sys.stderr)
        return EXIT_INTERNAL
    except OSError as exc:
        message = write_failure(exc)
        if message is None:
            print(f"kzguard: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_INTERNAL
        print(f"kzguard: {message}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_INTERNAL
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 3
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"kzguard: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
