"""Pending kernels from apt's lists (``Packages`` and ``Release`` files) and dpkg's status.

Imported by :func:`kzguard.facts.packages.pending_kernels` only when apt's lists exist.
Not modelled: preferences files (only the archive priorities 500, 100 and 1 that
``NotAutomatic``/``ButAutomaticUpgrades`` give). Lists compressed with lz4
(``Acquire::GzipIndexes``) are reported as problems.
"""

from __future__ import annotations

import lzma
import posixpath
import re
import zlib
from functools import cmp_to_key

from kzguard.base.record import Record
from kzguard.facts import Pattern
from kzguard.facts.packages import ERRORS as _BASE_ERRORS
from kzguard.facts.packages import PendingKernel, _open_stream, _problem
from kzguard.facts.vercmp import dpkg_vercmp, split_dpkg_version
from kzguard.root import Root

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator
    from typing import Optional

ERRORS = (*_BASE_ERRORS, lzma.LZMAError, zlib.error)

_LISTS = "/var/lib/apt/lists"
_STATUS = "/var/lib/dpkg/status"
_LIST_SUFFIXES = ("", ".gz", ".xz", ".bz2", ".zst", ".lz4")
_DEB_FIELDS = ("Package", "Version", "Architecture", "Depends", "Pre-Depends", "Status")
_DEB_PREFIXES = ("linux-", "proxmox-", "pve-")
_DEB_IMAGE = Pattern(
    r"(?:linux-image|proxmox-kernel|pve-kernel)-"
    r"(?P<release>(?P<upstream>\d+\.\d+[0-9a-z.+~]*)(?:-(?P<abi>\d+))?"
    r"-(?P<flavour>[a-z][a-z0-9.+-]*?))(?:-signed)?"
)
_DEB_NOT_IMAGE = ("-dbg", "-dbgsym", "-unsigned")
_META_DEPTH = 4


class _Deb(Record):
    name: str
    version: str
    arch: str
    depends: str
    source: str
    priority: int


def _deb_image_release(name: str) -> Optional[str]:
    """The kernel release a kernel image package installs, None for anything else."""
    if name.endswith(_DEB_NOT_IMAGE):
        return None
    match = _DEB_IMAGE.fullmatch(name)
    return match.group("release") if match else None


def _deb_release_cmp(a: str, b: str) -> int:
    """Order two Debian-family releases: upstream version (dpkg's order), then ABI number."""
    ma = _DEB_IMAGE.fullmatch(f"linux-image-{a}")
    mb = _DEB_IMAGE.fullmatch(f"linux-image-{b}")
    if not (ma and mb):
        return 0
    rc = dpkg_vercmp(ma.group("upstream"), mb.group("upstream"))
    return rc or int(ma.group("abi") or 0) - int(mb.group("abi") or 0)


def _deb_flavour(release: Optional[str]) -> Optional[str]:
    """``generic`` for 6.8.0-47-generic, ``cloud-amd64`` for 6.1.0-28-cloud-amd64."""
    match = _DEB_IMAGE.fullmatch(f"linux-image-{release}") if release else None
    return match.group("flavour") if match else None


def _paragraphs(lines: Iterable[str], keep: Collection[str]) -> Iterator[dict[str, str]]:
    """Split deb822 text into paragraphs, keeping only the fields named in ``keep``.

    Raises :class:`ValueError` on a line that is neither a field, a continuation nor blank.
    """
    fields: dict[str, str] = {}
    key: Optional[str] = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line[0] in " \t":
            if key in fields:
                fields[key] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            key = name.strip()
            if key in keep:
                fields[key] = value.strip()
        else:
            raise ValueError(f"line {number}: not a deb822 field: {line[:40]!r}")
    if fields:
        yield fields


def _read_debs(root: Root, path: str, problems: list[str]) -> list[dict[str, str]]:
    """The kernel-related paragraphs of one Packages or status file (and dpkg's own).

    A paragraph whose version dpkg would reject is dropped and named in ``problems``.
    """
    kept = []
    with _open_stream(root, path) as stream:
        lines = (raw.decode("utf-8", "replace") for raw in stream)
        for fields in _paragraphs(lines, _DEB_FIELDS):
            name = fields.get("Package", "")
            if not (name.startswith(_DEB_PREFIXES) or name == "dpkg"):
                continue
            try:
                split_dpkg_version(fields.get("Version", ""))
            except ValueError as exc:
                problems.append(_problem(path, exc))
                continue
            kept.append(fields)
    return kept


def _release_priority(root: Root, packages_file: str, problems: list[str]) -> int:
    """apt's default pin priority of the archive a Packages file came from (500, 100 or 1)."""
    name = posixpath.basename(packages_file)
    matches = []
    for release in root.glob(f"{_LISTS}/*Release"):
        base = posixpath.basename(release)
        prefix = base.rsplit("_", 1)[0] + "_"
        if base.endswith(("_Release", "_InRelease")) and name.startswith(prefix):
            matches.append((len(prefix), base.endswith("_InRelease"), release))
    if not matches:
        return 500
    path = max(matches)[2]
    try:
        text = root.read_text(path)
        if text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
            text = text.split("\n\n", 1)[-1].split("\n-----BEGIN PGP SIGNATURE-----")[0]
        fields = next(_paragraphs(text.splitlines(), ("NotAutomatic", "ButAutomaticUpgrades")), {})
    except ERRORS as exc:
        problems.append(_problem(path, exc))
        return 500
    if fields.get("NotAutomatic", "").lower() != "yes":
        return 500
    return 100 if fields.get("ButAutomaticUpgrades", "").lower() == "yes" else 1


def _first_choices(depends: str) -> Iterator[list[str]]:
    """Each comma-separated dependency as its list of alternative package names."""
    for clause in depends.split(","):
        names = [re.split(r"[\s(:\[<]", alt.strip(), maxsplit=1)[0] for alt in clause.split("|")]
        names = [n for n in names if n]
        if names:
            yield names


class _AptState:
    """dpkg's installed packages and the lists' available versions of kernel packages."""

    def __init__(self, root: Root, problems: list[str]):
        self.installed: dict[str, tuple[_Deb, str]] = {}  # name -> (package, want)
        self.available: dict[str, list[_Deb]] = {}
        self._read_status(root, problems)
        dpkg = self.installed.get("dpkg")
        self.native = dpkg[0].arch if dpkg else None
        self._read_lists(root, problems)

    def _read_status(self, root: Root, problems: list[str]) -> None:
        try:
            if not root.exists(_STATUS):
                return
            paragraphs = _read_debs(root, _STATUS, problems)
        except ERRORS as exc:
            problems.append(_problem(_STATUS, exc))
            return
        for fields in paragraphs:
            want, _, state = ([*fields.get("Status", "").split(), "", "", ""])[:3]
            if state == "installed":
                self.installed[fields["Package"]] = (_deb(fields, _STATUS, 100), want)

    def _read_lists(self, root: Root, problems: list[str]) -> None:
        for path in root.glob(f"{_LISTS}/*_Packages*"):
            if not path.endswith(tuple(f"_Packages{s}" for s in _LIST_SUFFIXES)):
                continue
            try:
                paragraphs = _read_debs(root, path, problems)
            except ERRORS as exc:
                problems.append(_problem(path, exc))
                continue
            priority = _release_priority(root, path, problems)
            for fields in paragraphs:
                if "Package" in fields and "Version" in fields:
                    deb = _deb(fields, path, priority)
                    self.available.setdefault(deb.name, []).append(deb)

    def candidate(self, name: str, arch: Optional[str]) -> Optional[_Deb]:
        """apt's candidate: highest priority among versions not below the installed one."""
        current = self.installed.get(name)
        arches = {arch or self.native, "all"} if (arch or self.native) else None
        versions = [d for d in self.available.get(name, []) if arches is None or d.arch in arches]
        if current:
            same = [d.priority for d in versions if dpkg_vercmp(d.version, current[0].version) == 0]
            versions.append(current[0]._replace(priority=max([100, *same])))
        versions.sort(key=cmp_to_key(lambda x, y: dpkg_vercmp(x.version, y.version)), reverse=True)
        best: Optional[_Deb] = None
        for deb in versions:
            if best is None or deb.priority > best.priority:
                best = deb
            if current and dpkg_vercmp(deb.version, current[0].version) <= 0:
                break
        return best if best and best.priority > 0 else None


def _deb(fields: dict[str, str], source: str, priority: int) -> _Deb:
    depends = ", ".join(fields[k] for k in ("Pre-Depends", "Depends") if fields.get(k))
    return _Deb(
        fields.get("Package", ""),
        fields.get("Version", ""),
        fields.get("Architecture", ""),
        depends,
        source,
        priority,
    )


def pending(root: Root, installed: Collection[str], problems: list[str]) -> list[PendingKernel]:
    """Kernel images that an installed meta package's candidate would pull in.

    Meta packages are installed ``linux-*``, ``proxmox-*`` and ``pve-*`` packages that are
    not held; their candidate's ``Depends`` is followed through packages of those families
    (``proxmox-default-kernel`` -> ``proxmox-kernel-6.8`` -> the image) to kernel image
    packages (``linux-image-<release>``, ``proxmox-kernel-<release>[-signed]``,
    ``pve-kernel-<release>``). When no installed package depends on a kernel image at all
    (kernels installed by hand), the fallback is the newest available image of each
    installed flavour that is newer than every installed release of that flavour.
    """
    if not root.glob(f"{_LISTS}/*_Packages*"):
        return []
    state = _AptState(root, problems)
    have = set(installed) | {
        rel for name in state.installed if (rel := _deb_image_release(name)) is not None
    }
    flavours = {_deb_flavour(rel) for rel in have} - {None}
    pulled, has_meta = _pulled_images(state)
    if not has_meta:
        pulled = _newest_images(state, have, flavours)
    return [
        PendingKernel(rel, deb.name, deb.version, "apt", deb.source)
        for deb in pulled
        if (rel := _deb_image_release(deb.name)) not in have and _deb_flavour(rel) in flavours
    ]


def _pulled_images(state: _AptState) -> tuple[list[_Deb], bool]:
    """Image packages the candidates of installed, unheld meta packages pull in.

    Also says whether any installed package depends on a kernel image (a meta exists).
    """
    metas = {
        name: entry
        for name, entry in state.installed.items()
        if name.startswith(_DEB_PREFIXES) and _deb_image_release(name) is None
    }
    has_meta = any(
        _deb_image_release(n)
        for deb, _ in metas.values()
        for names in _first_choices(deb.depends)
        for n in names
    )
    queue = [(name, deb.arch, 0) for name, (deb, want) in metas.items() if want == "install"]
    seen = set(metas)
    pulled: dict[str, _Deb] = {}
    while queue:
        name, arch, depth = queue.pop()
        meta = state.candidate(name, None if arch == "all" else arch)
        for names in _first_choices(meta.depends if meta else ""):
            if any(n in state.installed for n in names):
                continue  # already satisfied: apt installs nothing for it
            chosen = next((n for n in names if n in state.available), None)
            if chosen is None:
                continue
            if _deb_image_release(chosen):
                image = state.candidate(chosen, None if arch == "all" else arch)
                if image:
                    pulled[chosen] = image
            elif chosen.startswith(_DEB_PREFIXES) and depth < _META_DEPTH and chosen not in seen:
                seen.add(chosen)
                queue.append((chosen, arch, depth + 1))
    return list(pulled.values()), has_meta


def _newest_images(
    state: _AptState, have: Collection[str], flavours: Collection[str]
) -> list[_Deb]:
    """Per installed flavour, the newest available image newer than every installed one."""
    best: dict[str, tuple[str, _Deb]] = {}
    for name in state.available:
        release = _deb_image_release(name)
        flavour = _deb_flavour(release)
        if not release or flavour not in flavours:
            continue
        mine = [r for r in have if _deb_flavour(r) == flavour]
        if any(_deb_release_cmp(release, r) <= 0 for r in mine):
            continue
        image = state.candidate(name, None)
        current = best.get(flavour)
        if image and (current is None or _deb_release_cmp(release, current[0]) > 0):
            best[flavour] = (release, image)
    return [image for _, image in best.values()]
