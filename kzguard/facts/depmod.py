"""Which module file modprobe would load: ``modules.dep`` and the ``depmod.d`` search order.

modprobe resolves a module name through the kernel's ``modules.dep``, which depmod wrote after
choosing one file per name. depmod's choice (kmod 30, checked against the real ``depmod -b``):

- an ``override MODULE KERNELVERSION SUBDIR`` line wins for that module when the file lies
  directly in ``SUBDIR``;
- otherwise the earliest ``search`` entry whose directory holds the file (a prefix, so
  ``search extra`` covers ``extra/zfs/``); ``built-in`` stands for every directory no other
  entry names; with no ``search`` line at all the order is ``updates built-in``;
- two files of the same priority are a tie that depmod breaks by directory order, which
  nothing here can predict: kzguard picks the first by path and says it is ambiguous.

Configuration comes from ``*.conf`` in ``/etc/depmod.d``, ``/run/depmod.d``,
``/usr/local/lib/depmod.d``, ``/usr/lib/depmod.d`` and ``/lib/depmod.d``, in file-name order,
a name in an earlier directory hiding the same name in a later one. Everything here reads
files under the root and runs nothing.
"""

from __future__ import annotations

import posixpath
from fnmatch import fnmatchcase

from kzguard.base.errors import FactError
from kzguard.base.record import Record
from kzguard.facts.modinfo import COMPRESSION_SUFFIXES as MODULE_SUFFIXES
from kzguard.root import Root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Optional

CONFIG_DIRS = (
    "/etc/depmod.d",
    "/run/depmod.d",
    "/usr/local/lib/depmod.d",
    "/usr/lib/depmod.d",
    "/lib/depmod.d",
)
BUILTIN = "built-in"
DEFAULT_SEARCH = ("updates", BUILTIN)
MAX_CONFIG_FILES = 256
MAX_CONFIG_BYTES = 64 * 1024
MAX_MODULES_DEP_BYTES = 64 * 1024 * 1024
MODULES_DEP = "modules.dep"


def module_name(filename: str) -> Optional[str]:
    """The module name of a file name (``zfs.ko.zst`` -> ``zfs``; ``-`` reads as ``_``)."""
    base = posixpath.basename(filename)
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)].replace("-", "_")
    return None


class DepmodConfig(Record):
    """The parts of depmod.d that decide which copy of a module depmod indexes."""

    search: tuple[str, ...] = DEFAULT_SEARCH
    overrides: tuple[tuple[str, str, str], ...] = ()  # (module, kernel version pattern, subdir)
    files: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def override_for(self, name: str, release: str) -> Optional[str]:
        """The subdirectory an ``override`` line names for ``name`` on ``release``."""
        chosen = None
        for module, kversion, subdir in self.overrides:
            if module.replace("-", "_") == name and (
                kversion == "*" or fnmatchcase(release, kversion)
            ):
                chosen = subdir
        return chosen

    def priority(self, name: str, release: str, relpath: str) -> int:
        """Lower is preferred: 0 for an override, then 1 + the index of the search entry."""
        directory = posixpath.dirname(relpath)
        override = self.override_for(name, release)
        if override is not None and directory == override.strip("/"):
            return 0
        builtin = len(self.search)
        found = None
        for index, entry in enumerate(self.search):
            if entry == BUILTIN:
                builtin = index
            elif directory == entry or directory.startswith(entry + "/"):
                found = index  # like depmod, the last matching entry counts
        return 1 + (found if found is not None else builtin)


def read_config(root: Root) -> DepmodConfig:
    """depmod.d as depmod reads it; unreadable files and bad lines become problems."""
    chosen: dict[str, str] = {}
    problems: list[str] = []
    for directory in CONFIG_DIRS:
        names, problem = root.scan_dir(directory)
        if problem is not None:  # a link loop: what it says is not known
            problems.append(problem)
        for name in names:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = f"{directory}/{name}"
    search: list[str] = []
    overrides: list[tuple[str, str, str]] = []
    files = [chosen[name] for name in sorted(chosen)][:MAX_CONFIG_FILES]
    if len(chosen) > MAX_CONFIG_FILES:
        problems.append(f"more than {MAX_CONFIG_FILES} depmod.d files: the rest are not read")
    for inner in files:
        try:
            text = root.read_text(inner, limit=MAX_CONFIG_BYTES)
        except FactError as exc:
            problems.append(str(exc))
            continue
        for number, words in _lines(text):
            command, args = words[0], words[1:]
            if command == "search" and args:
                search += [a.strip("/") for a in args if a.strip("/")]
            elif command == "override" and len(args) >= 3:
                overrides.append((args[0], args[1], args[2].strip("/")))
            elif command in ("search", "override"):
                problems.append(f"{inner}:{number}: {command} needs arguments")
    return DepmodConfig(
        tuple(dict.fromkeys(search)) if search else DEFAULT_SEARCH,
        tuple(overrides),
        tuple(files),
        tuple(problems),
    )


def _lines(text: str) -> Iterable[tuple[int, list[str]]]:
    """Non-empty, non-comment lines split into words, with ``\\`` continuations joined."""
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        words = line.split()
        if words and not words[0].startswith("#"):
            yield start, words


class DepEntry(Record):
    """One line of ``modules.dep``: a module's file and the files it depends on."""

    path: str  # relative to the kernel's modules directory, or absolute (external dirs)
    deps: tuple[str, ...]


class ModulesDep(Record):
    """A kernel's ``modules.dep``, indexed by module name (only the names asked for)."""

    path: str
    entries: dict[str, DepEntry]
    mtime: float = 0.0

    def get(self, name: str) -> Optional[DepEntry]:
        return self.entries.get(name.replace("-", "_"))


def read_modules_dep(
    root: Root, modules_dir: str, names: Sequence[str]
) -> tuple[Optional[ModulesDep], Optional[str]]:
    """The entries of ``modules_dir/modules.dep`` for ``names`` and, recursively, their
    dependencies: ``(None, None)`` when there is no modules.dep, ``(None, problem)`` when it
    cannot be read. A line that does not parse is skipped (modprobe skips it too)."""
    inner = f"{modules_dir}/{MODULES_DEP}"
    try:
        if not root.exists(inner) and not root.is_symlink(inner):
            return None, None
        text = root.read_text(inner, limit=MAX_MODULES_DEP_BYTES)
        mtime = root.mtime(inner)
    except FactError as exc:
        return None, str(exc)
    lines: dict[str, str] = {}
    for line in text.splitlines():
        if "\0" in line:  # no path holds a NUL: the line is garbage
            continue
        head, sep, _ = line.partition(":")
        name = module_name(head.strip()) if sep else None
        if name and name not in lines:
            lines[name] = line
    entries: dict[str, DepEntry] = {}
    todo = [n.replace("-", "_") for n in names]
    while todo:
        name = todo.pop()
        if name in entries or name not in lines:
            continue
        head, _, rest = lines[name].partition(":")
        entry = DepEntry(head.strip(), tuple(rest.split()))
        entries[name] = entry
        todo += [d for d in (module_name(p) for p in entry.deps) if d and d not in entries]
    return ModulesDep(inner, entries, mtime), None


def choose(
    candidates: Sequence[str], name: str, release: str, config: DepmodConfig
) -> tuple[Optional[str], tuple[str, ...]]:
    """The candidate depmod would index for ``name`` (relative paths), and the others of the
    same priority when the choice is a tie."""
    if not candidates:
        return None, ()
    ranked = sorted(candidates, key=lambda p: (config.priority(name, release, p), p))
    best = config.priority(name, release, ranked[0])
    ties = tuple(p for p in ranked[1:] if config.priority(name, release, p) == best)
    return ranked[0], ties


__all__ = [
    "BUILTIN",
    "CONFIG_DIRS",
    "DEFAULT_SEARCH",
    "MODULES_DEP",
    "DepEntry",
    "DepmodConfig",
    "ModulesDep",
    "choose",
    "module_name",
    "read_config",
    "read_modules_dep",
]
