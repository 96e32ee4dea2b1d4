"""Read-only probes of a root (:mod:`kzguard.facts.host` gathers them), and two helpers
they share, kept here so that they cost no module of their own to import:

- path helpers for reading many files in few directories quickly. Every path is still
  resolved by :class:`~kzguard.root.Root`; :func:`host_path` is :meth:`Root.resolve` as a
  string, without importing :mod:`pathlib` (about 5 ms with what it pulls in), and
  :class:`Listing` answers for the entries of one directory the root resolved: an entry that
  is not a symlink resolves to itself (the root follows links only), so its type needs no
  further ``stat`` and its path no resolution;
- :class:`Pattern`, a regular expression compiled on first use: a module-level
  ``re.compile`` runs on every import, and the fact modules are imported by every check
  whatever the host holds (a DKMS tokenizer on a host without DKMS, a cpio header pattern
  where the root is not on ZFS).
"""

from __future__ import annotations

import os
import stat

from kzguard.base.errors import FactError

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    import re
    from typing import Any, Optional

    from kzguard.root import Root

LINK, DIR, FILE, OTHER = "link", "dir", "file", "other"


def host_path(root: Root, inner: str, *, follow_last: bool = True) -> str:
    """The host path of an in-root path, links followed inside the root (a :class:`FactError`
    for a link loop), as :meth:`Root.resolve` gives it but as a string."""
    return root._host(inner, follow_last)


def read_file(host: str, inner: str) -> bytes:
    """:meth:`Root.read_bytes` of ``inner`` (no limit), whose host path ``host`` the root
    resolved already: a regular file's bytes, anything else a :class:`FactError`."""
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FactError(f"cannot read {inner}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FactError(f"cannot read {inner}: not a regular file")
        chunks = []
        size = max(info.st_size + 1, 1 << 16)  # the whole file in the first read
        while True:
            chunk = os.read(fd, size)
            if not chunk:
                break
            chunks.append(chunk)
            size = 1 << 20
        return b"".join(chunks)
    except OSError as exc:
        raise FactError(f"cannot read {inner}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def kind(entry: os.DirEntry) -> str:
    """``link``, ``dir``, ``file`` (regular) or ``other``, from the listing (``lstat`` only
    where the file system gives no type)."""
    try:
        if entry.is_symlink():
            return LINK
        if entry.is_dir(follow_symlinks=False):
            return DIR
        if entry.is_file(follow_symlinks=False):
            return FILE
    except OSError:
        pass
    return OTHER


def scan(host_dir: str) -> Optional[dict[str, str]]:
    """Entry name -> :func:`kind` of the directory at host path ``host_dir``, in listing
    order; ``None`` when it cannot be listed (missing, not a directory, unreadable)."""
    try:
        with os.scandir(host_dir) as entries:
            return {entry.name: kind(entry) for entry in entries}
    except OSError:
        return None


def scan_dir(root: Root, inner: str) -> tuple[str, dict[str, str], Optional[str]]:
    """:meth:`Root.scan_dir` with the entries' kinds: ``(host path, name -> kind, problem)``;
    a missing directory lists empty, one that cannot be listed says why."""
    try:
        host = host_path(root, inner)
        with os.scandir(host) as entries:
            return host, {entry.name: kind(entry) for entry in entries}, None
    except FileNotFoundError:
        return "", {}, None
    except OSError as exc:
        return "", {}, f"cannot list {inner}: {exc.strerror or exc}"
    except FactError as exc:
        return "", {}, str(exc)


_UNLISTED: dict[str, str] = {}  # a Listing not scanned yet (compared by identity)
_SPECIAL_NAMES = (".", "..", "")


class Listing:
    """A directory of the root, resolved once; what it says of its entries.

    An entry that is a directory, a regular file or anything else but a link is answered from
    the directory (one ``scandir`` when its names are asked for, else one ``lstat`` per name
    asked about); a link is asked of the root (which follows it inside the root), and so is
    everything when the directory could not be listed. A child directory reached through no
    link is resolved by appending its name.
    """

    def __init__(self, root: Root, inner: str, host: Optional[str] = None):
        self.root = root
        self.inner = inner.rstrip("/") or "/"
        self.host = host_path(root, inner) if host is None else host  # FactError: a link loop
        self._kinds: Optional[dict[str, str]] = _UNLISTED
        self._looked: dict[str, Optional[str]] = {}

    @property
    def kinds(self) -> Optional[dict[str, str]]:
        """Name -> kind of every entry (one ``scandir``), ``None`` when it cannot be listed."""
        if self._kinds is _UNLISTED:
            self._kinds = scan(self.host)
        return self._kinds

    def path(self, name: str) -> str:
        return f"{self.inner}/{name}" if self.inner != "/" else f"/{name}"

    def names(self) -> list[str]:
        """Sorted entry names (what :meth:`Root.listdir` gives: none when it cannot list)."""
        kinds = self.kinds
        return sorted(kinds) if kinds is not None else []

    def kind(self, name: str) -> Optional[str]:
        """The entry's kind, ``None`` when there is none (or the directory is unlisted)."""
        if name in _SPECIAL_NAMES or "/" in name:
            return LINK  # not an entry of this directory: the root resolves it
        if self._kinds is not _UNLISTED:
            return self._kinds.get(name) if self._kinds is not None else None
        if name not in self._looked:
            try:
                mode = os.lstat(f"{self.host}/{name}").st_mode
            except OSError:  # the root's lstat fails alike: a missing component
                self._looked[name] = None
            else:
                self._looked[name] = (
                    LINK
                    if stat.S_ISLNK(mode)
                    else DIR
                    if stat.S_ISDIR(mode)
                    else FILE
                    if stat.S_ISREG(mode)
                    else OTHER
                )
        return self._looked[name]

    def child(self, name: str) -> Listing:
        """The listing of entry ``name`` (a :class:`FactError` for a link loop)."""
        if self.kind(name) == DIR:
            return Listing(self.root, self.path(name), f"{self.host}/{name}")
        return Listing(self.root, self.path(name))

    def read_bytes(self, name: str) -> bytes:
        """:meth:`Root.read_bytes` of entry ``name``."""
        if self.kind(name) == FILE:
            return read_file(f"{self.host}/{name}", self.path(name))
        return self.root.read_bytes(self.path(name))

    def exists(self, name: str) -> bool:
        kind = self._known(name)
        return self.root.exists(self.path(name)) if kind == LINK else kind is not None

    def is_dir(self, name: str) -> bool:
        kind = self._known(name)
        return self.root.is_dir(self.path(name)) if kind == LINK else kind == DIR

    def is_file(self, name: str) -> bool:
        kind = self._known(name)
        return self.root.is_file(self.path(name)) if kind == LINK else kind == FILE

    def is_symlink(self, name: str) -> bool:
        if self._kinds is None or name in _SPECIAL_NAMES or "/" in name:
            return self.root.is_symlink(self.path(name))
        return self.kind(name) == LINK

    def _known(self, name: str) -> Optional[str]:
        """The entry's kind; ``link`` (ask the root) when the directory was not listed."""
        if self._kinds is None:
            return LINK
        return self.kind(name)


class Pattern:
    """``re.compile(pattern, flags)``, done on first use."""

    __slots__ = ("_compiled", "_flags", "_pattern")

    def __init__(self, pattern: Any, flags: int = 0):
        self._pattern = pattern
        self._flags = flags
        self._compiled: Optional[re.Pattern] = None

    @property
    def compiled(self) -> re.Pattern:
        if self._compiled is None:
            import re  # not at import: the hooks that judge nothing never load re

            self._compiled = re.compile(self._pattern, self._flags)
        return self._compiled

    @property
    def pattern(self) -> Any:
        return self._pattern

    def match(self, *args: Any) -> Optional[re.Match]:
        return self.compiled.match(*args)

    def fullmatch(self, *args: Any) -> Optional[re.Match]:
        return self.compiled.fullmatch(*args)

    def search(self, *args: Any) -> Optional[re.Match]:
        return self.compiled.search(*args)

    def finditer(self, *args: Any) -> Any:
        return self.compiled.finditer(*args)

    def findall(self, *args: Any) -> list[Any]:
        return self.compiled.findall(*args)

    def sub(self, *args: Any) -> Any:
        return self.compiled.sub(*args)

    def split(self, *args: Any) -> list[Any]:
        return self.compiled.split(*args)

    def __repr__(self) -> str:
        return f"Pattern({self._pattern!r}, {self._flags!r})"
