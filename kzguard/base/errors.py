"""Named errors, each mapped once to a CLI exit code.

Exit codes (a contract, see docs/cli.md): 0 all safe, 1 any kernel unsafe or unknown,
2 usage or configuration error, 3 internal error.
"""

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import, collections.abc 1 ms
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Optional

EXIT_SAFE = 0
EXIT_UNSAFE = 1  # check: a kernel is not safe; a hook: the transaction is refused, or fails
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class KzguardError(Exception):
    """Base of every error kzguard raises on purpose."""

    name = "internal"
    exit_code = EXIT_INTERNAL


class UsageError(KzguardError):
    """Bad command-line input: an unparsable release, a missing root."""

    name = "usage"
    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """The configuration file is unreadable or invalid; names the key and line."""

    name = "config"

    def __init__(
        self, message: str, *, path: str = "", key: str = "", line: "Optional[int]" = None
    ):
        self.path = path
        self.key = key
        self.line = line
        where = path
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        if key:
            where = f"{where}: {key}" if where else key
        super().__init__(f"{where}: {message}" if where else message)


class FactError(KzguardError):
    """A fact on the host could not be read or parsed (a garbage META, a broken module).

    Probes catch it and turn it into an ``unknown`` verdict with a reason; it only
    escapes as an internal error when nothing else can be done.
    """

    name = "fact"


class CommandError(KzguardError):
    """An external command failed, timed out or was missing."""

    name = "command"

    def __init__(
        self,
        argv: "Sequence[str]",
        returncode: "Optional[int]",
        stdout: str = "",
        stderr: str = "",
        reason: str = "",
    ):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = reason or (stderr.strip().splitlines() or [""])[-1]
        status = "not run" if returncode is None else f"exit {returncode}"
        super().__init__(f"{' '.join(self.argv)}: {status}" + (f": {detail}" if detail else ""))


class Dnf5Error(KzguardError):
    """The stream from the actions file or the versionlock file is not what kzguard expects
    (bad input, exit 2; a hook meets it through ``on_error``)."""

    name = "dnf5"
    exit_code = EXIT_USAGE
