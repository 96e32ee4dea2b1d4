"""Holds for dnf5: kzguard's entries in the root's ``/etc/dnf/versionlock.toml``.

A held kernel release is kept out by one ``[[packages]]`` entry per package name
(``kernel``, ``kernel-core``, ``kernel-modules*``, ``kernel-devel*``, per flavour) with an
exclude condition ``evr != <version>-<release>`` for each release held::

    [[packages]]
    # kzguard: a kernel the installed ZFS cannot load; kzguard lifts this when not needed
    name = "kernel-core"
    comment = "kzguard: holds 6.13.2-200.fc41.x86_64 (the installed ZFS cannot load it)"
    [[packages.conditions]]
    key = "evr"
    comparator = "!="
    value = "6.13.2-200.fc41"

kzguard's entries carry a ``comment`` starting ``kzguard:`` (``dnf5 versionlock`` keeps it
when it rewrites the file) and are the only ones kzguard ever changes; the rest of the text is
kept as it is, comments included. No hold is added for a name an admin's entry already covers
(two entries for one name would undo each other). The file is written atomically (temp file,
fsync, rename) and removed when nothing but its ``version`` line would be left; each hold added
or lifted goes to the journal; with ``--dry-run`` (the :class:`~kzguard.root.Runner`'s
``dry_run``) the lines say what would change and nothing does.
"""

from __future__ import annotations

import contextlib
import posixpath
import re

from kzguard.base import journal
from kzguard.base.errors import Dnf5Error

TYPE_CHECKING = False  # typing costs 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any, Optional

    from kzguard.root import Root, Runner

MANAGER = "dnf5"  # the name its journal events carry
VERSIONLOCK = "/etc/dnf/versionlock.toml"
MARK = "kzguard:"
_HOLDS = re.compile(r"kzguard: holds (?P<releases>[^()]*?)(?: \(|\Z)")
_TABLE = re.compile(r"\s*\[\[\s*packages\s*\]\]\s*(?:#.*)?\Z")


LOCK = "/var/lib/kzguard/versionlock.lock"


@contextlib.contextmanager
def locked(root: Root, runner: Runner) -> Iterator[Versionlock]:
    """The versionlock file loaded under kzguard's lock for it, held until the block's write
    is done: concurrent kzguard runs never lose each other's holds. Taken after the state
    lock when both are held, never before it."""
    from kzguard.base.fileio import exclusive

    if runner.dry_run and not root.is_dir(posixpath.dirname(LOCK)):
        yield Versionlock.load(root)
        return
    with exclusive(root.host_path(LOCK)):
        yield Versionlock.load(root)


def add(root: Root, runner: Runner, releases: Sequence[str]) -> tuple[list[str], list[str]]:
    """Hold ``releases`` besides what kzguard holds already: the lines say what changed, the
    list names the releases that could not be held."""
    with locked(root, runner) as lock:
        lines = lock.write(root, runner, sorted({*lock.held(), *releases}))
    return lines, [r for r in releases if r not in lock.holding]


class Versionlock:
    """The root's versionlock file: its text, its parsed entries, kzguard's among them.

    Only kzguard's own entries are ever removed or added; the rest of the text is kept as it
    is (comments included). An entry is kzguard's when its ``comment`` starts with ``kzguard:``.
    """

    def __init__(self, text: str, packages: Sequence[dict[str, Any]]):
        self.text = text
        self.packages = list(packages)
        self.holding: set[str] = set()  # what kzguard holds after write()

    @classmethod
    def load(cls, root: Root) -> Versionlock:
        text = root.read_text_or(VERSIONLOCK)
        if text is None or not text.strip():
            return cls("", [])
        if MARK not in text and "[[" not in text:
            return cls(text, [])
        try:
            data = _toml_loads(text)
        except (ValueError, RecursionError) as exc:
            raise Dnf5Error(f"{VERSIONLOCK} does not parse: {exc}") from exc
        packages = data.get("packages", [])
        if not isinstance(packages, list):
            raise Dnf5Error(f"{VERSIONLOCK}: 'packages' is not a list of tables")
        return cls(text, packages)

    def held(self) -> list[str]:
        """Kernel releases kzguard holds here."""
        found: dict[str, None] = {}
        for entry in self.packages:
            if _ours(entry):
                match = _HOLDS.match(str(entry.get("comment", "")))
                for release in match["releases"].split(", ") if match else ():
                    if release:
                        found[release] = None
        return list(found)

    def write(self, root: Root, runner: Runner, releases: Sequence[str]) -> list[str]:
        """Replace kzguard's entries with holds on ``releases``; the lines say what changed."""
        from kzguard.base.rpmnames import hold_names, split_release

        before = set(self.held())
        text = self._without_ours()
        lines: list[str] = []
        by_flavour: dict[str, list[tuple[str, str]]] = {}
        for release in releases:
            parts = split_release(release)
            if parts is None:
                lines.append(f"kzguard: cannot hold {release}: not an rpm kernel release")
                continue
            version, rel, _arch, flavour = parts
            by_flavour.setdefault(flavour, []).append((release, f"{version}-{rel}"))
        blocks: list[str] = []
        after: set[str] = set()
        for flavour, held in by_flavour.items():
            for name in hold_names(flavour):
                other = self._foreign_overlap(name)
                if other:
                    lines.append(
                        f"kzguard: {VERSIONLOCK} already locks {other!r}: kzguard adds no hold "
                        f"for {name!r} (two entries for one name would undo each other)"
                    )
                    continue
                blocks.append(_entry(name, held))
                after.update(release for release, _evr in held)
        if blocks:
            if not text.strip():
                text = 'version = "1.0"\n'
            text = text if text.endswith("\n") else text + "\n"
            text += "".join(blocks)
        elif text.strip() == 'version = "1.0"':
            text = ""
        self.holding = after
        dry = runner.dry_run
        added, lifted = sorted(after - before), sorted(before - after)
        for release in added:
            verb = "would hold" if dry else "holding"
            lines.append(f"kzguard: {verb} {release} back in {VERSIONLOCK}")
        for release in lifted:
            verb = "would lift" if dry else "lifted"
            lines.append(f"kzguard: {verb} the hold on {release} in {VERSIONLOCK}")
        if text != self.text and not dry:
            _write(root, text)
            _log(added, lifted)
        self.text = text
        return lines

    def _without_ours(self) -> str:
        if not any(_ours(p) for p in self.packages):
            return self.text
        lines = self.text.splitlines(keepends=True)
        starts = [i for i, line in enumerate(lines) if _TABLE.match(line)]
        if len(starts) != len(self.packages):
            raise Dnf5Error(
                f"{VERSIONLOCK}: cannot tell its [[packages]] tables apart; left unchanged"
            )
        drop: set[int] = set()
        for index, start in enumerate(starts):
            if _ours(self.packages[index]):
                end = starts[index + 1] if index + 1 < len(starts) else len(lines)
                drop.update(range(start, end))
        return "".join(line for i, line in enumerate(lines) if i not in drop)

    def _foreign_overlap(self, name: str) -> Optional[str]:
        import fnmatch

        for entry in self.packages:
            other = str(entry.get("name", ""))
            if (
                other
                and not _ours(entry)
                and (fnmatch.fnmatchcase(name, other) or fnmatch.fnmatchcase(other, name))
            ):
                return other
        return None


def _ours(entry: Any) -> bool:
    return isinstance(entry, dict) and str(entry.get("comment", "")).startswith(MARK)


def _entry(name: str, held: Iterable[tuple[str, str]]) -> str:
    import json

    held = list(held)
    releases = ", ".join(release for release, _evr in held)
    text = [
        "[[packages]]\n",
        "# kzguard: a kernel the installed ZFS cannot load; kzguard lifts this when not needed\n",
        f"name = {json.dumps(name)}\n",
        f"comment = {json.dumps(f'{MARK} holds {releases} (the installed ZFS cannot load it)')}\n",
    ]
    for _release, evr in held:
        text += [
            "[[packages.conditions]]\n",
            'key = "evr"\n',
            'comparator = "!="\n',
            f"value = {json.dumps(evr)}\n",
        ]
    return "".join(text) + "\n"


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib  # novermin - Python >= 3.11, what every dnf5 distribution ships
    except ImportError:
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError as exc:
            raise Dnf5Error(f"reading {VERSIONLOCK} needs Python 3.11 or tomli") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(str(exc)) from exc


def _write(root: Root, text: str) -> None:
    """Replace versionlock.toml atomically, or remove it when nothing is left in it."""
    from kzguard.base.fileio import replace_or_remove

    path = root.host_path(VERSIONLOCK)
    try:
        replace_or_remove(path, text)
    except OSError as exc:
        raise Dnf5Error(f"cannot write {path}: {exc.strerror or exc}") from exc


def _log(added: Iterable[str], lifted: Iterable[str]) -> None:
    """One journal event per hold added or lifted (after the file changed)."""
    for release in added:
        message = f"holding {release} back in {VERSIONLOCK}"
        journal.event(
            "pin-added", message, priority=journal.NOTICE, manager=MANAGER, kernel=release
        )
    for release in lifted:
        message = f"lifted the hold on {release} in {VERSIONLOCK}"
        journal.event("pin-removed", message, manager=MANAGER, kernel=release)
