"""Pending kernels from dnf's and dnf5's cached repodata (``repomd.xml`` and ``primary.xml``).

Imported by :func:`kzguard.facts.packages.pending_kernels` only when a dnf cache exists.
Not modelled: excludes and versionlock.
"""

from __future__ import annotations

import configparser
import fnmatch
import lzma
import posixpath
import zlib
from xml.etree import ElementTree

from kzguard.base.errors import FactError
from kzguard.base.record import Record
from kzguard.facts.packages import ERRORS as _BASE_ERRORS
from kzguard.facts.packages import PendingKernel, _open_stream, _problem
from kzguard.facts.vercmp import rpmvercmp
from kzguard.root import Root

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Collection, Iterator
    from typing import IO, Optional

ERRORS = (*_BASE_ERRORS, lzma.LZMAError, zlib.error, ElementTree.ParseError)

_DNF_CACHES = (("dnf5", "/var/cache/libdnf5"), ("dnf", "/var/cache/dnf"))
# read in this order; dnf5's ``config-manager setopt`` writes repos.override.d (globs allowed)
_REPO_DIRS = (
    "/usr/share/dnf5/repos.d",
    "/etc/distro.repos.d",
    "/etc/yum.repos.d",
    "/etc/dnf/repos.override.d",
)
_REPO_NS = "{http://linux.duke.edu/metadata/repo}"
_COMMON_NS = "{http://linux.duke.edu/metadata/common}"
_RPM_KERNELS = ("kernel-core", "kernel")


class _Rpm(Record):
    name: str
    arch: str
    epoch: str
    ver: str
    rel: str
    manager: str
    source: str

    @property
    def release(self) -> str:
        return f"{self.ver}-{self.rel}.{self.arch}"


def _rpm_cmp(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Compare (epoch, version, release) or (version, release) tuples the rpm way."""
    for x, y in zip(a, b):
        rc = rpmvercmp(x, y)
        if rc:
            return rc
    return 0


def pending(root: Root, installed: Collection[str], problems: list[str]) -> list[PendingKernel]:
    """Newest ``kernel-core`` (or ``kernel`` where no repo has kernel-core) per architecture.

    Release: ``<ver>-<rel>.<arch>``. Kept only when newer than every installed release of
    that architecture (releases with a ``+variant`` such as ``+debug`` are another flavour),
    and only for architectures that have an installed kernel. Caches of repos that a
    ``.repo`` file disables are skipped.
    """
    switches = _repo_switches(root, problems)
    rpms: list[_Rpm] = []
    for manager, cache in _DNF_CACHES:
        for repomd in root.glob(f"{cache}/*/repodata/repomd.xml"):
            repoid = repomd[len(cache) + 1 :].split("/", 1)[0].rsplit("-", 1)[0]
            if not _repo_enabled(repoid, switches):
                continue
            try:
                rpms.extend(_repo_kernels(root, repomd, manager))
            except ERRORS as exc:
                problems.append(_problem(repomd, exc))
    name = next((n for n in _RPM_KERNELS if any(r.name == n for r in rpms)), None)
    newest: dict[str, _Rpm] = {}
    for rpm in rpms:
        best = newest.get(rpm.arch)
        key = (rpm.epoch, rpm.ver, rpm.rel)
        if rpm.name == name and (
            best is None or _rpm_cmp(key, (best.epoch, best.ver, best.rel)) > 0
        ):
            newest[rpm.arch] = rpm
    return [
        PendingKernel(rpm.release, rpm.name, f"{rpm.ver}-{rpm.rel}", rpm.manager, rpm.source)
        for arch, rpm in sorted(newest.items())
        if _newer_than_installed_rpm(rpm, arch, installed)
    ]


def _newer_than_installed_rpm(rpm: _Rpm, arch: str, installed: Collection[str]) -> bool:
    same = [_split_rpm_release(r) for r in installed]
    same = [vr for vr in same if vr and vr[2] == arch]
    return bool(same) and all(_rpm_cmp((rpm.ver, rpm.rel), vr[:2]) > 0 for vr in same)


def _split_rpm_release(release: str) -> Optional[tuple[str, str, str]]:
    """``6.13.2-200.fc41.x86_64`` -> (version, release, arch); None for other shapes."""
    if "+" in release:
        return None
    evr, _, arch = release.rpartition(".")
    ver, _, rel = evr.partition("-")
    return (ver, rel, arch) if ver and rel and arch else None


def _repo_switches(root: Root, problems: list[str]) -> list[tuple[str, bool]]:
    """(repo id or glob, enabled) from every ``.repo`` file, later ones taking precedence."""
    switches = []
    for path in [p for d in _REPO_DIRS for p in root.glob(f"{d}/*.repo")]:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string(root.read_text(path), source=path)
        except (configparser.Error, FactError) as exc:
            problems.append(_problem(path, exc))
            continue
        for section in parser.sections():
            value = parser.get(section, "enabled", fallback="").strip().lower()
            if value:
                switches.append((section, value not in ("0", "false", "no", "off")))
    return switches


def _repo_enabled(repoid: str, switches: list[tuple[str, bool]]) -> bool:
    """Whether the last ``enabled=`` that names ``repoid`` left it on (on by default)."""
    matching = [on for pattern, on in switches if fnmatch.fnmatchcase(repoid, pattern)]
    return matching[-1] if matching else True


def _repo_kernels(root: Root, repomd: str, manager: str) -> list[_Rpm]:
    """Kernel packages listed in the primary metadata that ``repomd`` points to."""
    doc = ElementTree.fromstring(root.read_bytes(repomd))
    href = None
    for data in doc.iter(f"{_REPO_NS}data"):
        location = data.find(f"{_REPO_NS}location")
        if data.get("type") == "primary" and location is not None:
            href = location.get("href")
    if not href:
        raise FactError("no primary metadata in repomd.xml")
    primary = posixpath.normpath(posixpath.join(posixpath.dirname(repomd), "..", href))
    try:
        with _open_stream(root, primary) as stream:
            return list(_primary_kernels(stream, manager, primary))
    except ERRORS as exc:
        raise FactError(f"{primary}: {exc}") from exc


def _primary_kernels(stream: IO[bytes], manager: str, source: str) -> Iterator[_Rpm]:
    """Stream ``primary.xml``, keeping only kernel packages and clearing the rest."""
    events = ElementTree.iterparse(stream, events=("start", "end"))
    _, top = next(events)
    for event, elem in events:
        if event != "end" or elem.tag != f"{_COMMON_NS}package":
            continue
        name = elem.findtext(f"{_COMMON_NS}name")
        version = elem.find(f"{_COMMON_NS}version")
        if name in _RPM_KERNELS and version is not None:
            yield _Rpm(
                name,
                elem.findtext(f"{_COMMON_NS}arch") or "",
                version.get("epoch") or "0",
                version.get("ver") or "",
                version.get("rel") or "",
                manager,
                source,
            )
        top.clear()
