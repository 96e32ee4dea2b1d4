"""OpenZFS versions on the host and the Linux range each supports.

The range comes, in order of trust, from the META file of the ZFS source DKMS builds
(``/usr/src/zfs-<ver>/META``: ``Linux-Minimum``/``Linux-Maximum``), then from the built-in
table of OpenZFS releases (``kzguard/data/openzfs-linux-ranges.tsv``), then from the config's
``zfs_ranges``. ``Linux-Maximum`` is a ``MAJOR.MINOR``: 6.12 admits every 6.12.y.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re

from kzguard.base.errors import FactError
from kzguard.base.kernelrelease import KernelRelease, parse_linux_version
from kzguard.base.record import Record
from kzguard.facts import Pattern
from kzguard.root import Root

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Optional

SOURCE_GLOB = "/usr/src/zfs-*/META"
TABLE_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "openzfs-linux-ranges.tsv"
)
_META_LINE = Pattern(r"([A-Za-z][A-Za-z0-9_-]*):[ \t]+(\S.*)$")
_VERSION = Pattern(r"\d+\.\d+(\.\d+)?([-.~]?rc\d+)?\Z")


class LinuxRange(Record):
    """The kernels one ZFS version supports, and where that fact came from."""

    zfs_version: str
    linux_min: str
    linux_max: str
    source: str  # "meta", "table" or "config"
    origin: str  # the META path, "built-in table" or the config file

    def judge(self, kernel: KernelRelease) -> Optional[str]:
        """``kernel-too-new``, ``kernel-too-old`` or ``None`` when the kernel is in range."""
        if kernel.series > parse_linux_version(self.linux_max)[:2]:
            return "kernel-too-new"
        if kernel.upstream < parse_linux_version(self.linux_min):
            return "kernel-too-old"
        return None

    def to_dict(self) -> dict[str, str]:
        return {
            "zfs_version": self.zfs_version,
            "min": self.linux_min,
            "max": self.linux_max,
            "source": self.source,
            "origin": self.origin,
        }


class ZfsSource(Record):
    """A ZFS source tree under /usr/src as DKMS sees it, with its META facts."""

    path: str
    version: Optional[str]
    linux_min: Optional[str] = None
    linux_max: Optional[str] = None
    error: Optional[str] = None

    def range(self) -> Optional[LinuxRange]:
        if self.version and self.linux_min and self.linux_max and not self.error:
            return LinuxRange(self.version, self.linux_min, self.linux_max, "meta", self.path)
        return None

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "version": self.version,
            "linux_min": self.linux_min,
            "linux_max": self.linux_max,
            "error": self.error,
        }


def normalize_version(text: str) -> str:
    """``zfs-2.2.7`` / ``2.2.7-1`` / ``2.2.7-1.fc41`` -> ``2.2.7``; ``2.3.0-rc1`` stays."""
    text = text.strip()
    if text.startswith("zfs-"):
        text = text[4:]
    match = re.match(r"(\d+\.\d+(?:\.\d+)?)(?:[-.~_]?(rc\d+))?", text)
    if not match:
        return text
    return match.group(1) + (f"-{match.group(2)}" if match.group(2) else "")


def parse_meta(text: str) -> dict[str, str]:
    """Parse an OpenZFS META file the way its configure does.

    ``KEY:`` then spaces or tabs then the value; leading spaces ignored; the first of
    duplicate keys wins; other lines are not fields.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        match = _META_LINE.match(line.lstrip(" "))
        if match and match.group(1) not in fields:
            fields[match.group(1)] = match.group(2).strip()
    return fields


def meta_source(path: str, text: str) -> ZfsSource:
    """The ZfsSource for one META file; a garbage META gives a source with ``error`` set."""
    try:
        fields = parse_meta(text)
        if fields.get("Name", "zfs").lower() != "zfs":
            raise FactError(f"Name is {fields.get('Name')!r}, not zfs")
        version = fields.get("Version")
        if not version or not _VERSION.match(normalize_version(version)):
            raise FactError(f"no usable Version ({version!r})")
        release = fields.get("Release", "")
        if re.fullmatch(r"rc\d+", release):
            version = f"{version}-{release}"
        low, high = fields.get("Linux-Minimum"), fields.get("Linux-Maximum")
        if not low or not high:
            raise FactError("Linux-Minimum or Linux-Maximum is missing")
        parse_linux_version(low)
        parse_linux_version(high)
    except (FactError, ValueError) as exc:
        return ZfsSource(path=path, version=_version_from_path(path), error=str(exc))
    return ZfsSource(path, normalize_version(version), low, high)


def _version_from_path(path: str) -> Optional[str]:
    match = re.search(r"/zfs-([^/]+)/META$", path)
    return normalize_version(match.group(1)) if match else None


def read_sources(root: Root) -> list[ZfsSource]:
    """Every ``/usr/src/zfs-*/META`` in the root, newest version first; one that cannot be
    read (a link loop on the way) and a ``/usr/src`` that cannot be listed are sources with an
    ``error``, never left out."""
    paths, problem = _meta_paths(root)
    sources = [ZfsSource(SOURCE_GLOB, None, error=problem)] if problem else []
    for path in paths:
        try:
            sources.append(meta_source(path, root.read_text(path)))
        except FactError as exc:
            sources.append(ZfsSource(path, _version_from_path(path), error=str(exc)))
    order = newest_first(s.version or "" for s in sources)
    return sorted(sources, key=lambda s: order.index(s.version or ""))


def _meta_paths(root: Root) -> tuple[list[str], Optional[str]]:
    """``/usr/src/zfs-*/META`` paths that exist or cannot be looked at (a link loop on the way:
    reading them says so), and why ``/usr/src`` cannot be listed, if it cannot."""
    base = posixpath.dirname(posixpath.dirname(SOURCE_GLOB))
    names, problem = root.scan_dir(base)
    found = []
    for name in names:
        path = f"{base}/{name}/META"
        if not name.startswith("zfs-"):
            continue
        try:
            if root.exists(path) or root.is_symlink(path):
                found.append(path)
        except FactError:
            found.append(path)
    return found, problem


@functools.lru_cache(maxsize=1)
def release_table() -> dict[str, tuple[str, str]]:
    """The built-in OpenZFS release table: version -> (Linux-Minimum, Linux-Maximum)."""
    table: dict[str, tuple[str, str]] = {}
    with open(TABLE_PATH, encoding="utf-8") as handle:
        lines = handle.read().splitlines()[1:]
    for line in lines:
        cols = line.split("\t")
        if len(cols) >= 4:
            table[normalize_version(cols[0])] = (cols[2], cols[3])
    return table


def range_for(
    version: str,
    sources: list[ZfsSource],
    config_ranges: Mapping[str, tuple[str, str]],
    config_origin: str = "config",
    table: Optional[Mapping[str, tuple[str, str]]] = None,
) -> Optional[LinuxRange]:
    """The supported range of ``version``: META first, then the release ``table`` (a fact
    the host carries; pure: nothing is read here), then config."""
    wanted = normalize_version(version)
    for source in sources:
        found = source.range()
        if found and source.version == wanted:
            return found
    table = table or {}
    if wanted in table:
        low, high = table[wanted]
        return LinuxRange(wanted, low, high, "table", "built-in table")
    for key, (low, high) in config_ranges.items():
        if normalize_version(key) == wanted:
            return LinuxRange(wanted, low, high, "config", config_origin)
    return None


def version_key(version: str) -> tuple[object, ...]:
    """A sort key for ZFS versions (``packaging`` ordering, rc before the release)."""
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(normalize_version(version).replace("-", "")))
    except InvalidVersion:
        return (0, version)


def newest_first(versions: Iterable[str]) -> list[str]:
    """Distinct versions, newest first (``packaging`` is imported only to order several)."""
    found = list(dict.fromkeys(versions))
    return sorted(found, key=version_key, reverse=True) if len(found) > 1 else found
