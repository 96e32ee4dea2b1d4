"""The state file ``<root>/var/lib/kzguard/state.json``: pins, overrides, recorded defaults, events.

Every change happens under an exclusive ``flock`` on ``state.lock`` (a separate file, so the
rename that replaces ``state.json`` never drops the lock) and is written atomically: a temp
file in the same directory, fsync, rename, fsync of the directory. A file that does not parse
is moved aside (``state.json.corrupt-<UTC time>``) with a warning and a fresh state is started:
never silently lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time

from kzguard.base.errors import EXIT_USAGE, FactError, KzguardError
from kzguard.base.fileio import replace_file
from kzguard.root import Root

TYPE_CHECKING = False  # typing costs 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Optional

STATE_DIR = "/var/lib/kzguard"
STATE_FILE = f"{STATE_DIR}/state.json"
LOCK_FILE = f"{STATE_DIR}/state.lock"
FORMAT = 1
MAX_EVENTS = 200


class StateError(KzguardError):
    """The state file could not be read, locked or written (permission, read-only, disk full):
    the host refused the change, so the CLI exits 2, not 3 (docs/cli.md)."""

    name = "state"
    exit_code = EXIT_USAGE


def empty() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "pins": {},
        "allow": {},
        "boot": {},
        "last_good": None,
        "events": [],
        "counters": {},  # monotonic: {"blocked": {manager: n}, "snapshot_last_success": t}
    }


def count_blocked(data: dict[str, Any], manager: str) -> None:
    """One more refused transaction for ``manager`` (the metrics' counter never goes down)."""
    blocked = data.setdefault("counters", {}).setdefault("blocked", {})
    blocked[manager] = int(blocked.get(manager, 0)) + 1


class State:
    """An open, locked state: change ``data`` and call :meth:`save` (or leave it unchanged)."""

    def __init__(self, root: Root, data: dict[str, Any], *, dry_run: bool):
        self.root = root
        self.data = data
        self.dry_run = dry_run
        self.notes: list[str] = []
        self._saved = _dump(data)

    def event(self, kind: str, message: str, **fields: Any) -> None:
        """Append a recent event (the newest MAX_EVENTS are kept)."""
        entry = {"time": _utc(), "kind": kind, "message": message, **fields}
        self.data["events"] = [*self.data.get("events", []), entry][-MAX_EVENTS:]

    def save(self) -> None:
        """Write the state if it changed (nothing under ``--dry-run``)."""
        text = _dump(self.data)
        if self.dry_run or (text == self._saved and not self.notes):
            return
        _write_atomically(self.root.host_path(STATE_FILE), text)
        self._saved = text


@contextlib.contextmanager
def locked(root: Root, *, dry_run: bool = False) -> Iterator[State]:
    """Open the state under an exclusive lock; the caller saves what it changed."""
    try:
        directory = root.host_path(STATE_DIR)
        state_path = root.host_path(STATE_FILE)
    except FactError as exc:  # a link loop where the state lives
        raise StateError(f"cannot open the state: {exc}") from exc
    if dry_run and not os.path.isdir(directory):
        yield State(root, empty(), dry_run=True)
        return
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd = os.open(root.host_path(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StateError(f"cannot open the state lock in {directory}: {exc.strerror}") from exc
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        state = State(root, {}, dry_run=dry_run)
        state.data = _load(state_path, state, dry_run)
        state._saved = _dump(state.data)
        yield state
    finally:
        os.close(fd)


def read(root: Root) -> dict[str, Any]:
    """The state as it is now, without locking (for display); a corrupt file reads as empty."""
    try:
        return _validated(_parse(root.host_path(STATE_FILE)))
    except (OSError, ValueError, RecursionError, FactError):
        return empty()


MAX_STATE_BYTES = 16 * 1024 * 1024


def _parse(path: str) -> Any:
    """The state file's JSON: a regular file (a FIFO is refused, not waited on) of at most
    MAX_STATE_BYTES; nesting too deep for the decoder is a ValueError like any other damage."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        data = handle.read(MAX_STATE_BYTES + 1)
    if len(data) > MAX_STATE_BYTES:
        raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc


def _load(path: str, state: State, dry_run: bool) -> dict[str, Any]:
    try:
        return _validated(_parse(path))
    except FileNotFoundError:
        return empty()
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        aside = f"{path}.corrupt-{_utc().replace(':', '')}"
        if not dry_run:
            try:
                os.replace(path, aside)
            except OSError as move:
                raise StateError(f"{path} is corrupt and cannot be moved aside: {move}") from exc
        state.notes.append(f"{path} was corrupt ({exc}); kept as {aside}, starting afresh")
        from kzguard.base import journal

        journal.event("state-corrupt", state.notes[-1], priority=journal.WARNING)
        return empty()


def _validated(data: Any) -> dict[str, Any]:
    """The state's data when every part kzguard reads has the shape it writes; otherwise a
    ValueError, and the file is treated as corrupt (kept aside, never half-used)."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a kzguard state file of format 1")
    base = empty()
    for key, value in base.items():
        if not isinstance(data.get(key, value), type(value)) and value is not None:
            raise ValueError(f"{key} has the wrong type")
    for key in ("pins", "allow"):
        for name, entry in data.get(key, {}).items():
            if not isinstance(entry, dict):
                raise ValueError(f"{key}[{name!r}] is not a mapping")
            codes = entry.get("codes", [])
            if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
                raise ValueError(f"{key}[{name!r}].codes is not a list of strings")
    counters = data.get("counters", {})
    blocked = counters.get("blocked", {})
    if not isinstance(blocked, dict) or not all(
        isinstance(n, (int, float)) and not isinstance(n, bool) for n in blocked.values()
    ):
        raise ValueError("counters.blocked is not a mapping of counts")
    last = counters.get("snapshot_last_success")
    if last is not None and not isinstance(last, (int, float)):
        raise ValueError("counters.snapshot_last_success is not a time")
    if not all(isinstance(e, dict) for e in data.get("events", [])):
        raise ValueError("events holds something that is not a mapping")
    good = data.get("last_good")
    if good is not None and not isinstance(good, str):
        raise ValueError("last_good is not a kernel release")
    return {**base, **data}


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _write_atomically(path: str, text: str) -> None:
    try:
        replace_file(path, text)
    except OSError as exc:
        raise StateError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _utc(now: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
