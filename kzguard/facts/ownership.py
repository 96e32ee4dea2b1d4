"""Which package owns a module file: the evidence for how ZFS was delivered.

Read from the package databases under the root, running nothing:

- dpkg: ``/var/lib/dpkg/info/<package>[:<arch>].list``, one path a line;
- pacman: ``/var/lib/pacman/local/<name>-<version>-<rel>/files`` after ``%FILES%``, paths
  without the leading ``/``;
- rpm: the sqlite database (``/var/lib/rpm/rpmdb.sqlite``, rpm 4.16 and later, the default
  on Fedora 33+ and EL9), through its ``Basenames`` and ``Dirnames`` indexes.

Only the lists of packages that can own a kernel's modules are opened (a name holding the
kernel release, ``zfs``, ``spl``, or, on pacman, a ``linux`` kernel package): a module no
such package owns was put there by DKMS, weak-modules or by hand. Paths under ``/lib`` and
``/usr/lib`` are compared as one (usrmerge). Every read is bounded; a database that cannot be
read is a problem, never an owner.
"""

from __future__ import annotations

import posixpath

from kzguard.base.errors import FactError
from kzguard.base.record import Record
from kzguard.root import Root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Optional

DPKG_INFO = "/var/lib/dpkg/info"
PACMAN_LOCAL = "/var/lib/pacman/local"
RPMDB = "/var/lib/rpm/rpmdb.sqlite"
MAX_LIST_BYTES = 32 * 1024 * 1024
_HINTS = ("zfs", "spl")


class Owner(Record):
    """The package that installed a file, and which database said so."""

    package: str
    manager: str  # "dpkg", "pacman" or "rpm"

    def to_dict(self) -> dict[str, str]:
        return {"package": self.package, "manager": self.manager}


def canonical(path: str) -> str:
    """One spelling for a path that usrmerge makes reachable two ways."""
    path = "/" + path.lstrip("/")
    return path[4:] if path.startswith("/usr/lib/") else path


def owners(
    root: Root, paths: Sequence[str], releases: Iterable[str] = ()
) -> tuple[dict[str, Owner], list[str]]:
    """In-root ``paths`` -> the package owning each one a database lists, and problems."""
    spellings: dict[str, list[str]] = {}
    for path in paths:
        spellings.setdefault(canonical(path), []).append(path)
    found: dict[str, Owner] = {}
    problems: list[str] = []
    hints = (*_HINTS, *releases)
    for reader in (_dpkg, _pacman, _rpm):
        left = {k: v[0] for k, v in spellings.items() if v[0] not in found}
        if not left:
            break
        for path, owner in reader(root, left, hints, problems):
            for spelling in spellings[canonical(path)]:
                found[spelling] = owner
    return found, problems


def _dpkg(root: Root, wanted: dict[str, str], hints: Sequence[str], problems: list[str]):
    for name in _names(root, DPKG_INFO, problems):
        if not name.endswith(".list"):
            continue
        package = name[: -len(".list")].partition(":")[0]
        if not any(h in package for h in hints):
            continue
        text = _read(root, f"{DPKG_INFO}/{name}", problems)
        for line in text.splitlines() if text else ():
            key = canonical(line.strip())
            if key in wanted:
                yield wanted[key], Owner(package, "dpkg")


def _pacman(root: Root, wanted: dict[str, str], hints: Sequence[str], problems: list[str]):
    for entry in _names(root, PACMAN_LOCAL, problems):
        package = entry.rsplit("-", 2)[0]
        if not (package.startswith("linux") or any(h in package for h in hints)):
            continue
        text = _read(root, f"{PACMAN_LOCAL}/{entry}/files", problems)
        in_files = False
        for line in text.splitlines() if text else ():
            if line.startswith("%"):
                in_files = line == "%FILES%"
                continue
            key = canonical(line.strip()) if in_files and line.strip() else None
            if key in wanted:
                yield wanted[key], Owner(package, "pacman")


def _rpm(root: Root, wanted: dict[str, str], hints: Sequence[str], problems: list[str]):
    try:
        if not root.is_file(RPMDB):
            return
    except FactError as exc:
        problems.append(str(exc))
        return
    import sqlite3

    try:
        uri = f"file:{root.resolve(RPMDB)}?immutable=1"
        with sqlite3.connect(uri, uri=True, timeout=1.0) as db:
            for key, inner in wanted.items():
                for variant in dict.fromkeys((inner, key, "/usr" + key)):
                    name = _rpm_owner(db, variant)
                    if name:
                        yield inner, Owner(name, "rpm")
                        break
    except (sqlite3.Error, FactError) as exc:
        problems.append(f"cannot read {RPMDB}: {exc}")


def _rpm_owner(db, path: str) -> Optional[str]:
    directory, base = posixpath.split(path)
    row = db.execute(
        "SELECT n.key FROM Basenames b JOIN Dirnames d ON d.hnum = b.hnum "
        "JOIN Name n ON n.hnum = b.hnum WHERE b.key = ? AND d.key = ? LIMIT 1",
        (base, directory.rstrip("/") + "/"),
    ).fetchone()
    return str(row[0]) if row else None


def _names(root: Root, inner: str, problems: list[str]) -> list[str]:
    """A database directory's entries; one that cannot be listed (a link loop) is a problem."""
    names, problem = root.scan_dir(inner)
    if problem is not None:
        problems.append(problem)
    return names


def _read(root: Root, inner: str, problems: list[str]) -> Optional[str]:
    try:
        return root.read_text(inner, limit=MAX_LIST_BYTES)
    except FactError as exc:
        problems.append(str(exc))
        return None


__all__ = ["Owner", "canonical", "owners"]
