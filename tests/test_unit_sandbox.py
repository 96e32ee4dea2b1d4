"""The service sees what it judges: the daemon's check, run inside a mount namespace made from
``units/kzguard.service``'s own sandbox settings.

systemd cannot be PID 1 here, so the namespace is built with bubblewrap from what systemd 252's
``namespace.c`` sets up for those settings (systemd.exec(5)); each is read from the unit file:

==========================  ============================================================
unit setting                in the namespace
==========================  ============================================================
ProtectSystem=strict        ``/`` and every mount below it read-only, except /proc, /sys,
                            /dev and the home directories (left to their own settings);
                            ``yes``: /usr, /boot, /efi; ``full``: /etc too
ReadWritePaths=,            writable again, each a mount of its own; the ``*Directory=``
StateDirectory= ...         settings mean /var/lib, /var/cache, /var/log or /run + name
ReadOnlyPaths=              read-only
InaccessiblePaths=          an empty mode-000 directory (or file) over the path
ProtectKernelModules=yes    /usr/lib/modules (and /lib/modules, split-usr) inaccessible
ProtectHome=yes             /home, /root, /run/user inaccessible (``read-only``, ``tmpfs``)
ProtectKernelTunables=yes   /proc/sys, /sys and a few /proc files read-only;
                            /proc/kallsyms, /proc/kcore inaccessible
ProtectKernelLogs=yes       /proc/kmsg, /dev/kmsg inaccessible
ProtectControlGroups=yes    /sys/fs/cgroup read-only
PrivateTmp=yes              a fresh /tmp and /var/tmp
PrivateDevices=yes          a fresh /dev (null, zero, random, tty...); BindPaths= into it
TemporaryFileSystem=        a tmpfs (``:ro`` read-only)
BindPaths=, BindReadOnly..  bind mounts (``-``: skipped when the source is missing)
ProtectProc=, ProcSubset=   a fresh /proc in a PID namespace; ``subset=pid`` hides /proc/sys
CapabilityBoundingSet=      the capabilities root keeps (none of CAP_DAC_*: a mode-000
                            directory stays closed to it, as under systemd)
==========================  ============================================================

For one path the first of systemd's mount modes wins (inaccessible before bind before ... before
read-only before read-write); entries under an inaccessible path are dropped; each mount is
read-only when the nearest entry at or above it says so. Settings that would change the view and
are not modelled (RootDirectory=, User=, DynamicUser=, ...) fail the test rather than pass it.

The host is a tree from the test builders, put where kzguard reads: the namespace is this
machine's ``/`` with the tree's /etc, /var, /boot (and /efi) instead of this machine's, its
kernels on /usr/lib/modules, its /usr/src, /sys/firmware and /proc/sys/kernel/osrelease; so the
check judges a known host. kzguard runs as its package runs it, under /usr/bin/python3 (the venv's
interpreter lives under /root, which ProtectHome=yes hides), from the checkout and the venv's
site-packages bound read-only at a top-level directory no setting touches. Inside, the daemon's
own :class:`~kzguard.service.core.Core` is built as ``kzguard daemon`` builds it and checks once.
"""

from __future__ import annotations

import enum
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import pytest

from devtools import bootfiles as bf
from tests import scenarios as sc
from tests.tools import need

TOP = Path(__file__).resolve().parent.parent
UNIT = TOP / "units" / "kzguard.service"
PYTHON = "/usr/bin/python3"  # the interpreter of the distributions' packages
PROGRAM = "/kzguard-under-test"  # where kzguard's code is bound in the namespace
NEW = "6.12.11-200.fc41.x86_64"  # installed, its DKMS zfs.ko missing: unsafe
KERNELS = {sc.FEDORA_OLD: "safe", sc.FEDORA_RUNNING: "safe", NEW: "unsafe"}
CONFIG = "modules: [zfs]\nmetrics:\n  listen: ''\n"
TIMEOUT = 60.0


class SandboxError(Exception):
    """The unit asks for something this model does not reproduce, or systemd would refuse."""


# --- the unit file, as systemd's parser reads it ------------------------------------------------


class UnitFile:
    """Sections of ``key=value`` assignments in file order (a key may repeat).

    Comments start with ``#`` or ``;``; a line ending in a backslash goes on with the next
    (comment lines inside are skipped). :meth:`words` gives a list setting: each assignment
    adds its words, an empty one resets the list; :meth:`value` gives the last assignment.
    """

    def __init__(self, text: str):
        self.sections: dict[str, list[tuple[str, str]]] = {}
        section: Optional[str] = None
        pending: Optional[str] = None
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if pending is not None and line.startswith(("#", ";")):
                continue
            if line.endswith("\\"):
                pending = (pending or "") + line[:-1] + " "
                continue
            line, pending = (pending or "") + line, None
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                self.sections.setdefault(section, [])
                continue
            key, sep, value = line.partition("=")
            if not sep or section is None:
                raise SandboxError(f"line {number}: not an assignment in a section: {raw!r}")
            self.sections[section].append((key.strip(), value.strip()))

    def assignments(self, key: str, section: str = "Service") -> list[str]:
        return [v for k, v in self.sections.get(section, []) if k == key]

    def value(self, key: str, section: str = "Service") -> Optional[str]:
        """The last assignment; None when there is none or it is empty (the default)."""
        found = self.assignments(key, section)
        return found[-1] if found and found[-1] else None

    def words(self, key: str, section: str = "Service") -> list[str]:
        found: list[str] = []
        for value in self.assignments(key, section):
            if not value:
                found = []
                continue
            if "%" in value:
                raise SandboxError(f"{key}={value}: specifiers are not modelled")
            found.extend(shlex.split(value))
        return found

    def boolean(self, key: str, section: str = "Service") -> bool:
        value = self.value(key, section)
        if value is None or value.lower() in ("0", "no", "n", "false", "f", "off"):
            return False
        if value.lower() in ("1", "yes", "y", "true", "t", "on"):
            return True
        raise SandboxError(f"{key}={value} is not a boolean")


def with_settings(text: str, *lines: str) -> str:
    """The unit with ``lines`` added at the end of its [Service] section."""
    head, sep, tail = text.partition("\n[Install]")
    return head.rstrip("\n") + "\n" + "".join(f"{line}\n" for line in lines) + "\n" + sep + tail


# --- what systemd mounts for it ------------------------------------------------------------------


class Mode(enum.IntEnum):
    """systemd 252's MountMode, in its order: for one path, the first one wins."""

    INACCESSIBLE = 0
    BIND = 3
    PRIVATE_TMP = 5
    PRIVATE_DEV = 7
    READONLY = 12
    READWRITE = 13
    TMPFS = 16
    READWRITE_IMPLICIT = 21


REPLACING = (Mode.INACCESSIBLE, Mode.BIND, Mode.PRIVATE_TMP, Mode.PRIVATE_DEV, Mode.TMPFS)
RO, RW, RWI, HIDE = Mode.READONLY, Mode.READWRITE, Mode.READWRITE_IMPLICIT, Mode.INACCESSIBLE


@dataclass(frozen=True)
class Entry:
    """One of systemd's mount entries: ``path`` in the namespace, ``ignore`` when missing."""

    path: str
    mode: Mode
    ignore: bool = False
    why: str = ""
    source: Optional[str] = None  # BIND: the path on the host
    read_only: bool = False  # BIND, TMPFS
    perms: str = "0755"  # TMPFS


def _table(why: str, rows: Iterable[tuple[str, Mode, bool]]) -> list[Entry]:
    return [Entry(path, mode, ignore, why) for path, mode, ignore in rows]


# namespace.c's tables (systemd 252; 255 dropped split-usr, and with it /lib/modules).
PROTECT_SYSTEM = {
    "yes": [("/usr", RO, False), ("/boot", RO, True), ("/efi", RO, True)],
    "full": [("/usr", RO, False), ("/boot", RO, True), ("/efi", RO, True), ("/etc", RO, False)],
    "strict": [
        ("/", RO, False),
        ("/proc", RWI, False),  # ProtectKernelTunables=
        ("/sys", RWI, False),  # ProtectKernelTunables=
        ("/dev", RWI, False),  # PrivateDevices=
        ("/home", RWI, True),  # ProtectHome=
        ("/run/user", RWI, True),
        ("/root", RWI, True),
    ],
}
PROTECT_HOME = {
    "yes": [("/home", HIDE, True), ("/run/user", HIDE, True), ("/root", HIDE, True)],
    "read-only": [("/home", RO, True), ("/run/user", RO, True), ("/root", RO, True)],
}
KERNEL_TUNABLES = [
    *((f"/proc/{name}", RO, True) for name in ("acpi", "apm", "asound", "bus", "fs", "irq")),
    ("/proc/kallsyms", HIDE, True),
    ("/proc/kcore", HIDE, True),
    *((f"/proc/{name}", RO, True) for name in ("latency_stats", "mtrr", "scsi")),
    ("/proc/sys", RO, False),
    ("/proc/sysrq-trigger", RO, True),
    ("/proc/timer_stats", RO, True),
    ("/sys", RO, False),
    ("/sys/fs/bpf", RO, True),
    ("/sys/fs/cgroup", RWI, False),  # RO is ProtectControlGroups='s
    ("/sys/fs/selinux", RWI, True),
    ("/sys/kernel/debug", RO, True),
    ("/sys/kernel/tracing", RO, True),
]
KERNEL_MODULES = [("/usr/lib/modules", HIDE, True), ("/lib/modules", HIDE, True)]
KERNEL_LOGS = [("/proc/kmsg", HIDE, True), ("/dev/kmsg", HIDE, True)]
EXEC_DIRECTORIES = {
    "StateDirectory": "/var/lib",
    "CacheDirectory": "/var/cache",
    "LogsDirectory": "/var/log",
    "RuntimeDirectory": "/run",
}
# Settings that change what the service sees and are not modelled here.
NOT_MODELLED = (
    "RootDirectory",
    "RootImage",
    "MountImages",
    "ExtensionImages",
    "ExtensionDirectories",
    "DynamicUser",
    "User",
    "PrivateUsers",
    "MountAPIVFS",
)


def sandbox_entries(unit: UnitFile) -> list[Entry]:
    """The mount entries systemd builds from the unit's settings, unsorted."""
    for key in NOT_MODELLED:
        if unit.value(key) is not None:
            raise SandboxError(f"{key}= is set: the sandbox model does not reproduce it")
    found: list[Entry] = []
    system = _tristate(unit, "ProtectSystem", ("full", "strict"))
    if system != "no":
        found += _table(f"ProtectSystem={system}", PROTECT_SYSTEM[system])
    home = _tristate(unit, "ProtectHome", ("read-only", "tmpfs"))
    if home == "tmpfs":
        found += [
            Entry(p, Mode.TMPFS, True, "ProtectHome=tmpfs", read_only=True)
            for p in ("/home", "/run/user", "/root")
        ]
    elif home in PROTECT_HOME:
        found += _table(f"ProtectHome={home}", PROTECT_HOME[home])
    if unit.boolean("ProtectKernelTunables"):
        found += _table("ProtectKernelTunables=yes", KERNEL_TUNABLES)
    if unit.boolean("ProtectKernelModules"):
        found += _table("ProtectKernelModules=yes", KERNEL_MODULES)
    if unit.boolean("ProtectKernelLogs"):
        found += _table("ProtectKernelLogs=yes", KERNEL_LOGS)
    if unit.boolean("ProtectControlGroups"):
        found += _table("ProtectControlGroups=yes", [("/sys/fs/cgroup", RO, False)])
    if unit.boolean("PrivateTmp"):
        private = Mode.PRIVATE_TMP
        found += _table("PrivateTmp=yes", [("/tmp", private, False), ("/var/tmp", private, False)])
    if unit.boolean("PrivateDevices"):
        found += _table("PrivateDevices=yes", [("/dev", Mode.PRIVATE_DEV, False)])
    if (unit.value("ProcSubset") or "all") == "pid":
        found += _table("ProcSubset=pid", [("/proc/sys", HIDE, False)])
    for key, mode in (("ReadWritePaths", RW), ("ReadOnlyPaths", RO), ("InaccessiblePaths", HIDE)):
        for word in unit.words(key):
            path = word.lstrip("-+")
            found.append(Entry(path, mode, word.startswith("-"), f"{key}={word}"))
    for key, base in EXEC_DIRECTORIES.items():
        for name in unit.words(key):
            found.append(Entry(f"{base}/{name}", RW, False, f"{key}={name}"))
    for word in unit.words("TemporaryFileSystem"):
        path, _, options = word.partition(":")
        flags = [o for o in options.split(",") if o]
        perms = [o[5:] for o in flags if o.startswith("mode=")]
        unknown = [o for o in flags if o not in ("ro", "rw") and not o.startswith("mode=")]
        if unknown:
            raise SandboxError(f"TemporaryFileSystem={word}: options {unknown} are not modelled")
        found.append(
            Entry(
                path,
                Mode.TMPFS,
                why=f"TemporaryFileSystem={word}",
                read_only="ro" in flags,
                perms=perms[-1] if perms else "0755",
            )
        )
    for key in ("BindPaths", "BindReadOnlyPaths"):
        for word in unit.words(key):
            source, _, rest = word.lstrip("-").partition(":")
            target = rest.partition(":")[0] or source
            found.append(
                Entry(
                    target,
                    Mode.BIND,
                    word.startswith("-"),
                    f"{key}={word}",
                    source=source,
                    read_only=key == "BindReadOnlyPaths",
                )
            )
    return found


def _tristate(unit: UnitFile, key: str, words: tuple[str, ...]) -> str:
    """A boolean or one of ``words``: ``no``, ``yes`` or the word."""
    value = unit.value(key)
    if value in words:
        return value
    return "yes" if unit.boolean(key) else "no"


def _key(path: str) -> tuple[str, ...]:
    """Sort key: a directory before what is below it."""
    return tuple(p for p in path.split("/") if p)


def _below(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top + "/")


def normalized(entries: Sequence[Entry]) -> dict[str, Entry]:
    """systemd's order and pruning: sorted, the first mode for one path wins (read-only
    carried over), nothing under an inaccessible path, no entry that repeats its parent's mode."""
    kept: list[Entry] = []
    for entry in sorted(entries, key=lambda e: (_key(e.path), e.mode)):
        if kept and kept[-1].path == entry.path:
            if entry.mode in (HIDE, RO) or entry.read_only:
                kept[-1] = replace(kept[-1], read_only=True)
            continue
        kept.append(entry)
    hidden = [e.path for e in kept if e.mode is HIDE]
    kept = [e for e in kept if not any(_below(e.path, h) and e.path != h for h in hidden)]
    result: dict[str, Entry] = {}
    for entry in kept:
        parent = _nearest(result, entry.path, strict=True)
        if entry.mode in (RO, RW, RWI) and parent is not None and parent.mode is entry.mode:
            continue
        result[entry.path] = entry
    return result


def _nearest(entries: Mapping[str, Entry], path: str, *, strict: bool = False) -> Optional[Entry]:
    probe = path
    while True:
        if not (strict and probe == path) and probe in entries:
            return entries[probe]
        if probe == "/":
            return None
        probe = os.path.dirname(probe)


def read_only(entries: Mapping[str, Entry], path: str) -> bool:
    """What the nearest entry at or above ``path`` makes of it."""
    entry = _nearest(entries, path)
    if entry is None:
        return False
    if entry.mode in (HIDE, RO):
        return True
    return entry.mode in (Mode.BIND, Mode.TMPFS) and entry.read_only


def access(entries: Mapping[str, Entry], path: str) -> str:
    """``hidden``, ``read-only`` or ``read-write``: the unit's settings alone, for ``path``."""
    entry = _nearest(entries, path)
    if entry is not None and entry.mode is HIDE:
        return "hidden"
    fresh = (Mode.PRIVATE_TMP, Mode.PRIVATE_DEV, Mode.TMPFS)
    if entry is not None and entry.mode in fresh and entry.path != path:
        return "hidden"  # the host's files under a fresh /tmp, /dev or tmpfs are out of sight
    return "read-only" if read_only(entries, path) else "read-write"


# --- the host the service sees, and the namespace -----------------------------------------------


@dataclass(frozen=True)
class Mount:
    """A mount of the host view: ``kind`` bind, dev-bind, proc or symlink."""

    path: str
    kind: str
    source: str = ""


# Top-level directories the test's host tree provides instead of this machine's.
FROM_TREE = ("etc", "var", "boot", "efi")


def host_view(tree: Path, scratch: Path) -> dict[str, Mount]:
    """This machine's ``/`` with the tree where kzguard reads, and kzguard's code.

    Every file of the tree must land somewhere, or the check would judge less than the tree.
    """
    view: dict[str, Mount] = {}
    for entry in sorted(os.scandir("/"), key=lambda e: e.name):
        if entry.name in ("proc", "dev", *FROM_TREE):
            continue
        if entry.is_symlink():
            view[f"/{entry.name}"] = Mount(f"/{entry.name}", "symlink", os.readlink(entry.path))
        else:
            view[f"/{entry.name}"] = Mount(f"/{entry.name}", "bind", entry.path)
    view["/proc"] = Mount("/proc", "proc")  # a fresh procfs, as systemd mounts for the unit
    view["/dev"] = Mount("/dev", "dev-bind", "/dev")
    placed = [name for name in FROM_TREE if (tree / name).is_dir()]
    for name in placed:
        view[f"/{name}"] = Mount(f"/{name}", "bind", str(tree / name))
    empty = scratch / "empty"
    empty.mkdir(exist_ok=True)
    modules = [p for p in ("lib/modules", "usr/lib/modules") if (tree / p).is_dir()]
    if len(modules) > 1:
        raise SandboxError(f"the tree has both {modules}: which is the modules directory?")
    nested = {
        # where /lib/modules lands on this machine (/usr/lib/modules with a merged /usr)
        os.path.realpath("/lib/modules"): tree / modules[0] if modules else empty,
        "/usr/src": tree / "usr/src" if (tree / "usr/src").is_dir() else empty,
        "/sys/firmware": tree / "sys/firmware" if (tree / "sys/firmware").is_dir() else empty,
        "/proc/sys/kernel/osrelease": tree / "proc/sys/kernel/osrelease",
    }
    for path, source in nested.items():
        if not os.path.lexists(path):
            pytest.skip(f"this machine has no {path} to put the test's host tree on")
        if not source.exists():
            raise SandboxError(f"the tree has no {source.relative_to(tree)}")
        view[path] = Mount(path, "bind", str(source))
    covered = [*placed, *modules, "usr/src", "sys/firmware", "proc/sys/kernel/osrelease"]
    for path in tree.rglob("*"):
        inner = path.relative_to(tree).as_posix()
        if not path.is_dir() and not any(_below(inner, top) for top in covered):
            raise SandboxError(f"the tree's /{inner} is not put in the namespace")
    view[f"{PROGRAM}/kzguard"] = Mount(f"{PROGRAM}/kzguard", "bind", str(TOP / "kzguard"))
    view[f"{PROGRAM}/site"] = Mount(f"{PROGRAM}/site", "bind", sysconfig.get_paths()["purelib"])
    return view


def outside(view: Mapping[str, Mount], path: str) -> Optional[str]:
    """Where the namespace's ``path`` is on this machine (None: only in the namespace)."""
    for probe in sorted((p for p in view if _below(path, p)), key=len, reverse=True):
        mount = view[probe]
        if mount.kind == "symlink":
            return None
        base = "/proc" if mount.kind == "proc" else mount.source
        return base + path[len(probe) :]
    return None


def canonical(view: Mapping[str, Mount], path: str) -> str:
    """``path`` with the namespace's symlinks resolved (``/lib`` -> ``usr/lib``...)."""
    parts, done, hops = list(_key(path)), "", 0
    while parts:
        name = parts.pop(0)
        if name in (".", ".."):
            done = done.rsplit("/", 1)[0] if name == ".." else done
            continue
        candidate = f"{done}/{name}"
        mount, target = view.get(candidate), None
        if mount is not None and mount.kind == "symlink":
            target = mount.source
        elif mount is None:
            host = outside(view, candidate)
            if host is not None and os.path.islink(host):
                target = os.readlink(host)
        if target is None:
            done = candidate
            continue
        hops += 1
        if hops > 40:
            raise SandboxError(f"too many symlinks in {path}")
        parts = list(_key(target)) + parts
        done = "" if target.startswith("/") else done
    return done or "/"


def _exists(view: Mapping[str, Mount], path: str) -> bool:
    host = outside(view, path)
    return path == "/" or path in view or (host is not None and os.path.lexists(host))


def bwrap_argv(
    unit: UnitFile, view: Mapping[str, Mount], scratch: Path
) -> tuple[list[str], dict[str, Entry]]:
    """bubblewrap's options for the unit's namespace over ``view``, and the entries applied."""
    entries: list[Entry] = []
    for entry in sandbox_entries(unit):
        path = canonical(view, entry.path)
        if entry.mode is Mode.BIND:
            source = canonical(view, entry.source or path)
            if not _exists(view, source):
                if entry.ignore:
                    continue
                raise SandboxError(f"{entry.why}: {source} is missing: the unit would not start")
            entries.append(replace(entry, path=path, source=source))
        elif _exists(view, path):
            entries.append(replace(entry, path=path))
        elif not entry.ignore:
            raise SandboxError(f"{entry.why}: {path} is missing: the unit would not start")
    applied = normalized(entries)
    hidden = scratch / "inaccessible"
    (hidden / "dir").mkdir(parents=True, exist_ok=True)
    (hidden / "reg").touch()
    for node in (hidden / "dir", hidden / "reg"):
        node.chmod(0)
    argv: list[str] = []
    late: list[str] = []  # read-only once everything below is mounted
    replacing = {p: e for p, e in applied.items() if e.mode in REPLACING}
    for path in sorted(set(view) | set(applied), key=_key):
        entry, mount = applied.get(path), view.get(path)
        over = _nearest(replacing, path, strict=True)
        if over is not None and (entry is None or entry.mode is not Mode.BIND):
            # Under a fresh or hidden directory the host's mounts are gone, and so is a path
            # an entry names (a BIND makes its own mount point there).
            if entry is not None and not entry.ignore:
                raise SandboxError(f"{entry.why}: {path} is under {over.why}")
            continue
        ro = read_only(applied, path)
        if entry is not None and entry.mode is HIDE:
            kind = "dir" if os.path.isdir(outside(view, path) or "") else "reg"
            argv += ["--ro-bind", str(hidden / kind), path]
        elif entry is not None and entry.mode is Mode.BIND:
            source = outside(view, entry.source or path) or ""
            device = source.startswith("/dev/") and not os.path.isdir(source)
            argv += ["--dev-bind" if device else "--ro-bind" if ro else "--bind", source, path]
            if device and ro:
                late.append(path)
        elif entry is not None and entry.mode is Mode.TMPFS:
            argv += ["--perms", entry.perms, "--tmpfs", path]
            if ro:
                late.append(path)
        elif entry is not None and entry.mode is Mode.PRIVATE_TMP:
            argv += ["--perms", "1777", "--tmpfs", path]
        elif entry is not None and entry.mode is Mode.PRIVATE_DEV:
            argv += ["--dev", path]
        elif mount is not None and mount.kind == "symlink":
            argv += ["--symlink", mount.source, path]
        elif mount is not None and mount.kind == "proc":
            argv += ["--proc", path]
        elif mount is not None and mount.kind == "dev-bind":
            argv += ["--dev-bind", mount.source, path]
            if ro:
                late.append(path)
        elif path != "/":  # a host mount, or a path made a mount of its own (RO, RW entries)
            source = mount.source if mount is not None else outside(view, path)
            argv += ["--ro-bind" if ro else "--bind", str(source), path]
    if read_only(applied, "/"):
        late.append("/")
    for path in late:
        argv += ["--remount-ro", path]
    if (unit.value("ProtectProc") or "default") != "default" or (
        unit.value("ProcSubset") or "all"
    ) != "all":
        argv.append("--unshare-pid")  # other processes out of sight (hidepid=)
    argv += _capabilities(unit)
    return argv, applied


def _capabilities(unit: UnitFile) -> list[str]:
    """CapabilityBoundingSet= as systemd merges it: a list replaces the initial (full) set
    or adds to a list; ``~`` removes."""
    state: Optional[tuple[bool, frozenset[str]]] = None  # (inverted, names); None: all
    for value in unit.assignments("CapabilityBoundingSet"):
        inverted = value.startswith("~")
        names = frozenset(value.lstrip("~").split())
        if state is None or not names:
            state = (inverted, names)
        elif inverted:
            state = (True, state[1] | names) if state[0] else (False, state[1] - names)
        else:
            state = (True, state[1] - names) if state[0] else (False, state[1] | names)
    if state is None:
        return []
    if state[0]:
        return [arg for name in sorted(state[1]) for arg in ("--cap-drop", name)]
    return ["--cap-drop", "ALL", *(arg for name in sorted(state[1]) for arg in ("--cap-add", name))]


# --- the check, inside ---------------------------------------------------------------------------

# What ``kzguard daemon`` does before READY=1, then a look at the paths named on the command line.
CHECK = """
import json, os, sys
from kzguard.root import Root, Runner
from kzguard.service.core import Core
from kzguard.service.daemon import SYSTEMD_VARIABLES, summary

env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARIABLES}
snapshot = Core(Root.open("/"), None, runner=Runner(dry_run=False, env=env)).check()

def look(path):
    if not os.path.lexists(path):
        return {"exists": False}
    seen = {"exists": True, "write": os.access(path, os.W_OK)}
    try:
        if os.path.isdir(path):
            seen["entries"] = sorted(os.listdir(path))
        else:
            with open(path, "rb") as f:
                f.read(1)
        seen["read"] = True
    except OSError as exc:
        seen["read"] = False
        seen["error"] = exc.strerror
    return seen

print(json.dumps({
    "report": snapshot.report.to_dict(),
    "status": summary(snapshot),
    "view": {p: look(p) for p in sys.argv[1:]},
}))
"""
LOOK = (
    "/usr/lib/modules",
    "/lib/modules",
    "/usr/src",
    "/var/lib/dkms",
    "/var/lib/kzguard",
    "/boot",
    "/etc",
    "/sys/firmware/efi/efivars",
    "/proc/sys/kernel/osrelease",
    "/tmp",
    "/root",
)


def run_check(unit_text: str, tree: Path, scratch: Path) -> dict:
    """The daemon's check in the namespace the unit (as ``unit_text``) gives it, over ``tree``."""
    unit = UnitFile(unit_text)
    view = host_view(tree, scratch)
    options, _ = bwrap_argv(unit, view, scratch)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",  # systemd's, for services
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{PROGRAM}:{PROGRAM}/site",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    argv = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--clearenv", "--chdir", "/"]
    argv += [arg for k, v in env.items() for arg in ("--setenv", k, v)]
    argv += [*options, "--", PYTHON, "-c", CHECK, *LOOK]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise AssertionError(
            f"the check in the namespace failed ({proc.returncode}):\n{proc.stderr}\n"
            f"bwrap {shlex.join(options)}"
        )
    return json.loads(proc.stdout)


def judged(report: Mapping) -> dict[str, str]:
    """Verdicts on kernels that were seen (a kernel it could not read is not judged)."""
    return {
        k["release"]: k["verdict"]
        for k in report["kernels"]
        if "kernel-unreadable" not in k["reasons"]  # reason codes
    }


# --- the tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fedora(tmp_path_factory) -> Path:
    """Fedora 41 with zfs-dkms 2.2.7: two good kernels and NEW, whose zfs.ko DKMS has not
    installed; BLS entries with grubenv's saved_entry on the running kernel; EFI, Secure Boot
    off. /var/tmp and the StateDirectory exist, as systemd needs and makes them."""
    need("grub-editenv")
    tree = sc.fedora_dkms(tmp_path_factory.mktemp("sandbox") / "root")
    tree.config(CONFIG)
    tree.kernel(NEW)
    tree.dkms("zfs", "2.2.7", NEW)
    tree.remove(f"/lib/modules/{NEW}/extra/zfs.ko")
    for release in KERNELS:
        tree.boot_kernel(release)
        tree.write(*bf.bls_entry(release))
    tree.write("/boot/grub2/grub.cfg", 'set default="${saved_entry}"\nblscfg\n')
    tree.grubenv("/boot/grub2/grubenv", saved_entry=f"{bf.MACHINE_ID}-{sc.FEDORA_RUNNING}")
    tree.secure_boot(False)
    for inner in ("/var/tmp", "/var/lib/kzguard"):
        tree.host(inner).mkdir(parents=True, exist_ok=True)
    return tree.path


def _need_sandbox() -> None:
    need("bwrap")
    if os.geteuid() != 0:
        pytest.skip("bwrap sets up the unit's mounts as root (the service runs as root)")
    if not os.access(PYTHON, os.X_OK):
        pytest.skip(f"{PYTHON} (a packaged kzguard's interpreter) is not installed")
    probe = subprocess.run(
        [PYTHON, "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    if probe.stdout.split() != [str(n) for n in sys.version_info[:2]]:
        pytest.skip(f"{PYTHON} is {probe.stdout.strip()}: the venv's compiled modules need 3.11")


@pytest.mark.real  # bubblewrap
def test_the_service_judges_the_kernels_it_is_given(fedora, tmp_path):
    _need_sandbox()
    seen = run_check(UNIT.read_text(), fedora, tmp_path)
    report, view = seen["report"], seen["view"]
    assert judged(report) == KERNELS, report["kernels"]
    assert seen["status"] == (
        f"3 kernels, next boot {sc.FEDORA_RUNNING} safe; 1 more is not safe: {NEW}"
    )
    host = report["host"]
    assert host["running_kernel"] == sc.FEDORA_RUNNING  # /proc/sys/kernel/osrelease
    assert report["next_boot"]["source"] == "grub-bls: grubenv saved_entry"  # /boot
    assert host["zfs"] and host["dkms"]  # /usr/src/zfs-2.2.7/META, /var/lib/dkms
    assert host["secure_boot"]["efi"] is True  # /sys/firmware/efi/efivars
    assert host["secure_boot"]["secure_boot"] is False
    # The namespace is the unit's: read-only but for what it writes, /tmp its own, /root hidden.
    assert view["/usr/lib/modules"]["entries"] == sorted(KERNELS)
    assert view["/lib/modules"]["entries"] == sorted(KERNELS)
    readable = {p for p, v in view.items() if v.get("read")}
    writable = {p for p, v in view.items() if v.get("write")}
    assert readable == set(LOOK) - {"/root"}, view
    assert writable == {"/var/lib/kzguard", "/boot", "/sys/firmware/efi/efivars", "/tmp"}, view
    assert view["/tmp"]["entries"] == []


@pytest.mark.real  # bubblewrap
def test_protect_kernel_modules_would_leave_it_blind(fedora, tmp_path):
    """Why the unit does without ProtectKernelModules=yes: with it the check judges nothing
    (or says the kernels are unreadable) though the host is unchanged."""
    _need_sandbox()
    text = with_settings(UNIT.read_text(), "ProtectKernelModules=yes")
    seen = run_check(text, fedora, tmp_path)
    assert judged(seen["report"]) == {}, seen["report"]["kernels"]
    assert seen["view"]["/usr/lib/modules"]["read"] is False
    assert seen["view"]["/lib/modules"]["read"] is False


# --- the model itself, without a namespace ------------------------------------------------------


def _inputs() -> set[str]:
    """What kzguard reads, from its own constants where it has them."""
    from kzguard.facts import bootloader, mounts, osrelease, secureboot
    from kzguard.service.core import WATCHED

    return {
        *WATCHED,
        *bootloader.MODULE_ROOTS,
        *bootloader.ESPS,
        secureboot.EFIVARS,
        secureboot.MOKVARS,
        *osrelease.OS_RELEASE_PATHS,
        osrelease.RUNNING_RELEASE_PATH,
        *mounts.MOUNTS,
        "/var/lib/dpkg/status",
        "/var/cache/apt",
        "/var/cache/pacman",
        "/var/lib/pacman/local",
        "/var/lib/shim-signed/mok",
        "/etc/pki/akmods/certs",
        "/dev/zfs",
    }


@pytest.mark.parametrize(
    ("extra", "hidden"),
    [
        ((), set()),
        (("ProtectKernelModules=yes",), {"/lib/modules", "/usr/lib/modules"}),
        (("ProcSubset=pid",), {"/proc/sys/kernel/osrelease"}),
        (("InaccessiblePaths=-/boot",), {p for p in _inputs() if _below(p, "/boot")}),
    ],
    ids=["as-shipped", "ProtectKernelModules", "ProcSubset", "InaccessiblePaths"],
)
def test_what_the_settings_alone_hide(extra, hidden):
    unit = UnitFile(with_settings(UNIT.read_text(), *extra))
    entries = normalized(sandbox_entries(unit))
    seen = {path: access(entries, path) for path in _inputs()}
    assert {p for p, how in seen.items() if how == "hidden"} == hidden
    if not extra:  # read-only through ProtectSystem=strict; written: what ReadWritePaths= opens
        assert seen["/usr/lib/modules"] == seen["/lib/modules"] == "read-only"
        assert {p for p, how in seen.items() if how == "read-write"} >= {
            "/boot",
            "/var/lib/kzguard",
            "/sys/firmware/efi/efivars",
        }


def test_the_parser_reads_systemd_syntax():
    unit = UnitFile(
        "[Service]\n"
        "ReadWritePaths=/a -/b\n"
        "; a comment\n"
        "ReadWritePaths=/c \\\n"
        "# inside a continuation\n"
        "  /d\n"
        "ProtectHome=yes\n"
        "ProtectHome=\n"
        "InaccessiblePaths=/x\n"
        "InaccessiblePaths=\n"
        "InaccessiblePaths=/y\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    assert unit.words("ReadWritePaths") == ["/a", "-/b", "/c", "/d"]
    assert unit.value("ProtectHome") is None  # an empty assignment: back to the default
    assert unit.words("InaccessiblePaths") == ["/y"]
    assert unit.value("WantedBy", "Install") == "multi-user.target"
    entries = normalized(sandbox_entries(unit))
    assert entries["/b"].ignore and not entries["/a"].ignore
    assert access(entries, "/y/z") == "hidden" and access(entries, "/x") == "read-write"


def test_paths_are_resolved_in_the_namespace():
    view = {
        "/lib": Mount("/lib", "symlink", "usr/lib"),
        "/usr": Mount("/usr", "bind", "/usr"),
        "/proc": Mount("/proc", "proc"),
    }
    assert canonical(view, "/lib/modules") == "/usr/lib/modules"
    assert canonical(view, "/usr/../lib/./modules") == "/usr/lib/modules"
    assert outside(view, "/usr/lib/modules") == "/usr/lib/modules"
    assert outside(view, "/proc/sys/kernel/osrelease") == "/proc/sys/kernel/osrelease"
    assert outside(view, "/nowhere") is None


def test_the_first_mode_wins_and_nothing_lives_under_a_hidden_path():
    unit = UnitFile(
        "[Service]\nProtectSystem=strict\nProtectHome=yes\nProtectKernelTunables=yes\n"
        "ReadWritePaths=/root/x /srv\nReadOnlyPaths=/srv\n"
    )
    entries = normalized(sandbox_entries(unit))
    assert entries["/root"].mode is HIDE and "/root/x" not in entries
    assert access(entries, "/srv") == "read-only"  # read-only before read-write
    assert "/srv" not in entries  # and then no more than what / says (systemd's drop_nop)
    assert access(entries, "/sys/kernel") == "read-only"  # over ProtectSystem='s implicit rw
    assert access(entries, "/proc/sys/kernel/osrelease") == "read-only"
    assert access(entries, "/home/user") == "hidden"


def test_capability_bounding_sets_merge_as_systemd_merges_them():
    def caps(*lines: str) -> list[str]:
        return _capabilities(UnitFile("[Service]\n" + "".join(f"{x}\n" for x in lines)))

    assert caps() == []
    assert caps("CapabilityBoundingSet=CAP_A", "CapabilityBoundingSet=CAP_B") == [
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CAP_A",
        "--cap-add",
        "CAP_B",
    ]
    assert caps("CapabilityBoundingSet=~CAP_A") == ["--cap-drop", "CAP_A"]
    assert caps("CapabilityBoundingSet=CAP_A CAP_B", "CapabilityBoundingSet=~CAP_B") == [
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CAP_A",
    ]
    assert caps("CapabilityBoundingSet=CAP_A", "CapabilityBoundingSet=") == ["--cap-drop", "ALL"]
