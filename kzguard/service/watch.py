"""Watching the facts for changes: inotify through ``Gio.FileMonitor``, with a debounce.

:func:`targets` works out what to watch in a root: the service core's ``WATCHED`` paths, each
installed kernel's modules directory and the directories in it where out-of-tree modules appear
(``updates/dkms``, ``extra``, ``weak-updates``... as :data:`kzguard.facts.kernels.MODULE_DIRS`
lists them), the DKMS tree a few levels down, the ZFS sources' META files, the package
managers' metadata and the boot loader's entry directories. A path that does not exist yet is
covered by a watch on its nearest existing ancestor that only counts events on the way to it,
so a new kernel directory or a first ``updates/dkms`` is seen; :meth:`Watcher.arm` works the
targets out again (the daemon calls it before each check) and adds and drops monitors.

Events only schedule: a check runs ``debounce`` seconds after the last event (and at most
``max_delay`` after the first of a burst), so a package transaction that writes hundreds of
files costs one check. Idle, nothing here wakes up: inotify is read by GLib only when the
kernel has something to say.
"""

from __future__ import annotations

import logging
import os
import posixpath
import time

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

from kzguard.facts.kernels import KERNEL_MARKERS, MODULE_DIRS  # noqa: E402
from kzguard.root import Root  # noqa: E402
from kzguard.service.core import WATCHED  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Callable, Optional

    # host path -> the child names that count (None: every event counts)
    Targets = dict[str, Optional[frozenset[str]]]

MODULE_ROOTS = ("/lib/modules", "/usr/lib/modules")
# Directories watched with some levels below them, and how deep. Not watched below them: DKMS's
# build/ (a whole source tree being compiled: its appearing and going are seen, and the module
# it installs), the source link and the build logs.
TREES = {
    "/var/lib/dkms": 5,  # <module>/<version>/<kernel>/<arch>/module
    "/var/cache/dnf": 2,  # <repo>/repodata/repomd.xml
    "/var/cache/libdnf5": 2,
}
SKIP = frozenset({"build", "source", "log"})
# More directories whose direct entries matter (beyond the core's WATCHED).
EXTRA = (
    "/var/lib/dpkg",  # status: installed kernels on Debian and Ubuntu
    "/var/lib/pacman/local",
    "/etc/depmod.d",  # search/override lines change which module file modprobe loads
    "/usr/lib/depmod.d",
    "/lib/depmod.d",
    "/etc/yum.repos.d",
    "/efi/loader",
    "/efi/loader/entries",
    "/boot/efi/loader",
    "/boot/efi/loader/entries",
    "/boot/loader",
)
ZFS_SOURCES = "/usr/src/zfs-*"
EFIVARS = "/sys/firmware/efi/efivars"  # LoaderEntryDefault (bootctl set-default); only if there
PSEUDO = ("/proc", "/sys", "/dev", "/run")  # never watched as a missing path's ancestor
MAX_WATCHES = 4000
# Events that say nothing about content (a touch, a chmod, an unmount notice).
_QUIET = frozenset(
    {
        Gio.FileMonitorEvent.ATTRIBUTE_CHANGED,
        Gio.FileMonitorEvent.PRE_UNMOUNT,
        Gio.FileMonitorEvent.UNMOUNTED,
    }
)


def targets(root: Root, base: Sequence[str] = WATCHED) -> Targets:
    """Every host path to watch in ``root``, and for an ancestor standing in for a missing
    path, the child names that lead to it. Nothing is read beyond directory listings."""
    root = root.fresh()  # resolved parents are cached per object
    resolve = _Resolver(root)
    found: Targets = {}
    wanted: list[str] = [*base, *EXTRA, *root.glob(ZFS_SOURCES)]
    for modules_root in MODULE_ROOTS:
        for name in root.listdir(modules_root):
            kernel = f"{modules_root}/{name}"
            if os.path.isdir(resolve(kernel)) and any(
                os.path.exists(resolve(f"{kernel}/{m}")) for m in KERNEL_MARKERS
            ):
                wanted.append(kernel)
                wanted.extend(f"{kernel}/{location}" for location in MODULE_DIRS)
    for inner in wanted:
        _want(resolve, inner, found)
    for inner, depth in TREES.items():
        if _want(resolve, inner, found):
            _walk(resolve(inner), depth, found)
    if os.path.isdir(resolve(EFIVARS)):
        found[resolve(EFIVARS)] = None
    return found


class _Resolver:
    """``root.resolve(inner).as_posix()``, remembered per path: a path whose last component
    is no link is its parent's resolution and its name; a link is resolved by the root (so
    the dozens of paths under each kernel cost one ``lstat`` each, not one per component)."""

    def __init__(self, root: Root):
        self.root = root
        self.cache: dict[str, str] = {}

    def __call__(self, inner: str) -> str:
        parts = [p for p in inner.split("/") if p and p != "."]
        key = "/" + "/".join(parts)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        if not parts or ".." in parts:
            host = self.root.resolve(key).as_posix()
        else:
            parent = self("/" + "/".join(parts[:-1]))
            candidate = posixpath.join(parent, parts[-1])
            host = self.root.resolve(key).as_posix() if os.path.islink(candidate) else candidate
        self.cache[key] = host
        return host


def _want(resolve: _Resolver, inner: str, found: Targets) -> bool:
    """Watch ``inner`` when it exists, else its nearest existing ancestor for the way to it.
    Says whether ``inner`` itself is watched."""
    host = resolve(inner)
    if os.path.exists(host):
        found[host] = None
        return True
    parts = [p for p in inner.split("/") if p]
    for depth in range(len(parts) - 1, -1, -1):
        parent = "/" + "/".join(parts[:depth])
        if any(parent == p or parent.startswith(p + "/") for p in PSEUDO):
            return False
        parent_host = resolve(parent)
        if os.path.isdir(parent_host):
            names = found.get(parent_host, frozenset())
            if names is not None:
                found[parent_host] = names | {parts[depth]}
            return False
    return False


def _walk(host: str, depth: int, found: Targets) -> None:
    """Add the directories below ``host`` down to ``depth`` levels (links not followed)."""
    if depth <= 0 or len(found) >= MAX_WATCHES:
        return
    try:
        entries = list(os.scandir(host))
    except OSError:
        return
    for entry in entries:
        if entry.name not in SKIP and entry.is_dir(follow_symlinks=False):
            found[entry.path] = None
            _walk(entry.path, depth - 1, found)


class _Watch:
    """One Gio monitor and what counts on it."""

    def __init__(self, monitor: Gio.FileMonitor, names: Optional[frozenset[str]], handler: int):
        self.monitor = monitor
        self.names = names
        self.handler = handler

    def cancel(self) -> None:
        self.monitor.disconnect(self.handler)
        self.monitor.cancel()


class Watcher:
    """Monitors on a root's :func:`targets`; calls ``on_change(paths)`` once a burst is over.

    ``ignore``: host paths (and their temp siblings, ``<path>.*``) whose changes are the
    daemon's own, such as the metrics textfile. Runs on the thread-default GLib main context.
    """

    def __init__(
        self,
        root: Root,
        on_change: Callable[[list[str]], None],
        *,
        base: Sequence[str] = WATCHED,
        debounce: float = 0.5,
        max_delay: float = 5.0,
        ignore: Iterable[str] = (),
    ):
        self.root = root
        self.base = tuple(base)
        self.on_change = on_change
        self.debounce = debounce
        self.max_delay = max(max_delay, debounce)
        self.ignore = tuple(ignore)
        self._watches: dict[str, _Watch] = {}
        self._pending: dict[str, None] = {}  # ordered set of changed paths
        self._first: Optional[float] = None
        self._source: Optional[int] = None

    @property
    def paths(self) -> list[str]:
        """The host paths watched now."""
        return sorted(self._watches)

    def arm(self) -> int:
        """Watch what :func:`targets` finds now; drop watches on what is gone. Returns how
        many paths are watched."""
        wanted = targets(self.root, self.base)
        if len(wanted) >= MAX_WATCHES:
            _log().warning("watching only %d paths (MAX_WATCHES)", len(wanted))
        for path in [p for p, w in self._watches.items() if wanted.get(p, ()) != w.names]:
            self._watches.pop(path).cancel()
        for path, names in wanted.items():
            if path not in self._watches:
                watch = self._monitor(path, names)
                if watch is not None:
                    self._watches[path] = watch
        return len(self._watches)

    def close(self) -> None:
        """Cancel every monitor and a pending check."""
        for watch in self._watches.values():
            watch.cancel()
        self._watches.clear()
        if self._source is not None:
            GLib.source_remove(self._source)
            self._source = None
        self._pending.clear()

    def _monitor(self, path: str, names: Optional[frozenset[str]]) -> Optional[_Watch]:
        gfile = Gio.File.new_for_path(path)
        flags = Gio.FileMonitorFlags.WATCH_MOVES
        try:
            if os.path.isdir(path):
                monitor = gfile.monitor_directory(flags, None)
            else:
                monitor = gfile.monitor_file(flags, None)
        except GLib.Error as exc:
            _log().warning("cannot watch %s: %s", path, exc.message)
            return None
        handler = monitor.connect("changed", self._changed, path)
        return _Watch(monitor, names, handler)

    def _changed(
        self,
        _monitor: Gio.FileMonitor,
        gfile: Gio.File,
        other: Optional[Gio.File],
        event: Gio.FileMonitorEvent,
        watched: str,
    ) -> None:
        if event in _QUIET:
            return
        paths = [p for p in (gfile.get_path(), other.get_path() if other else None) if p]
        watch = self._watches.get(watched)
        if watch is not None and watch.names is not None:
            paths = [p for p in paths if _child(watched, p) in watch.names]
        paths = [p for p in paths if not self._ignored(p)]
        if paths:
            self.note(paths)

    def _ignored(self, path: str) -> bool:
        return any(path == p or path.startswith(p + ".") for p in self.ignore)

    def note(self, paths: Sequence[str]) -> None:
        """Count ``paths`` as changed and (re)start the debounce."""
        now = time.monotonic()
        for path in paths:
            self._pending[path] = None
        if self._first is None:
            self._first = now
        if self._source is not None:
            GLib.source_remove(self._source)
        delay = max(0.0, min(self.debounce, self._first + self.max_delay - now))
        self._source = GLib.timeout_add(int(delay * 1000), self._fire)

    def _fire(self) -> bool:
        paths = list(self._pending)
        self._pending.clear()
        self._first = None
        self._source = None
        self.on_change(paths)
        return False  # GLib.SOURCE_REMOVE


def _child(directory: str, path: str) -> Optional[str]:
    """The first component of ``path`` below ``directory`` (None for the directory itself)."""
    rel = posixpath.relpath(path, directory)
    return None if rel in (".", "") or rel.startswith("..") else rel.split("/", 1)[0]


def _log() -> logging.Logger:
    return logging.getLogger("kzguard.watch")
