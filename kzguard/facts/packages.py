"""Pending kernels: what an upgrade would install, read from the package managers' caches.

Nothing here runs a package manager or touches the network: dnf's and dnf5's cached repodata,
apt's lists and dpkg's status, pacman's sync and local databases are read as files through
:class:`~kzguard.root.Root`. A file that cannot be read or parsed is skipped and named in a
problem string; it never raises.

Not modelled: dnf excludes and versionlock, apt preferences files (only the archive
priorities 500, 100 and 1 that ``NotAutomatic``/``ButAutomaticUpgrades`` give), pacman
``IgnoreGroup``. Indexes compressed with lz4 (apt with ``Acquire::GzipIndexes``) or with zstd
when the ``zstandard`` module is missing are reported as problems.
"""

from __future__ import annotations

import bz2
import configparser
import contextlib
import dataclasses
import fnmatch
import gzip
import lzma
import posixpath
import re
import tarfile
import zlib
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from functools import cmp_to_key
from typing import IO, Any, Optional
from xml.etree import ElementTree

from kzguard.errors import FactError
from kzguard.facts.vercmp import alpm_vercmp, dpkg_vercmp, rpmvercmp, split_dpkg_version
from kzguard.root import Root

_ERRORS: tuple[type, ...] = (
    OSError,
    EOFError,
    ValueError,
    LookupError,
    lzma.LZMAError,
    zlib.error,
    ElementTree.ParseError,
    tarfile.TarError,
    FactError,
)


@dataclass(frozen=True)
class PendingKernel:
    """A kernel an upgrade would install that is not installed yet."""

    release: str  # as ``uname -r`` will print it
    package: str
    version: str  # the package's version string
    manager: str  # "dnf", "dnf5", "apt" or "pacman"
    source: str  # in-root path of the metadata file it came from

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def pending_kernels(
    root: Root, installed_releases: Collection[str]
) -> tuple[list[PendingKernel], list[str]]:
    """Kernels that dnf, dnf5, apt or pacman would install, and problems met reading caches.

    Each manager is asked only when its cache exists. A release that is already installed
    or was found earlier (dnf5 before dnf, then apt, then pacman) is not repeated.
    """
    problems: list[str] = []
    installed = set(installed_releases)
    found: list[PendingKernel] = []
    for manager, probe in (
        ("dnf", _dnf_pending),
        ("apt", _apt_pending),
        ("pacman", _pacman_pending),
    ):
        try:
            found += probe(root, installed, problems)
        except _ERRORS as exc:  # a path the probe did not expect (a symlink loop, ...)
            problems.append(f"{manager}: {exc}")
    result: list[PendingKernel] = []
    seen = set(installed)
    for kernel in found:
        if kernel.release not in seen:
            seen.add(kernel.release)
            result.append(kernel)
    return result, problems


# --- reading possibly compressed files ------------------------------------------------


@contextlib.contextmanager
def _open_stream(root: Root, path: str) -> Iterator[IO[bytes]]:
    """Open an in-root file, decompressing gzip, xz, bzip2 or zstd by its magic bytes."""
    with open(root.resolve(path), "rb") as raw:
        magic = raw.read(6)
        raw.seek(0)
        if magic.startswith(b"\x1f\x8b"):
            with gzip.GzipFile(fileobj=raw) as stream:
                yield stream
        elif magic.startswith(b"\xfd7zXZ\x00"):
            with lzma.LZMAFile(raw) as stream:
                yield stream
        elif magic.startswith(b"BZh"):
            with bz2.BZ2File(raw) as stream:
                yield stream
        elif magic.startswith(b"\x28\xb5\x2f\xfd"):
            zstd = _zstandard()
            if zstd is None:
                raise FactError("zstd-compressed and the zstandard module is not installed")
            try:
                with zstd.ZstdDecompressor().stream_reader(raw) as stream:
                    yield stream
            except zstd.ZstdError as exc:
                raise FactError(f"zstd: {exc}") from exc
        elif magic.startswith(b"\x04\x22\x4d\x18"):
            raise FactError("lz4-compressed, which kzguard cannot read")
        else:
            yield raw


def _zstandard() -> Any:
    """The optional ``zstandard`` module, imported only when zstd data turns up."""
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def _problem(path: str, exc: BaseException) -> str:
    return f"{path}: {exc}"


# --- dnf and dnf5 ---------------------------------------------------------------------

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


@dataclass(frozen=True)
class _Rpm:
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


def _dnf_pending(
    root: Root, installed: Collection[str], problems: list[str]
) -> list[PendingKernel]:
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
            except _ERRORS as exc:
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
    except _ERRORS as exc:
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


# --- apt ------------------------------------------------------------------------------

_LISTS = "/var/lib/apt/lists"
_STATUS = "/var/lib/dpkg/status"
_LIST_SUFFIXES = ("", ".gz", ".xz", ".bz2", ".zst", ".lz4")
_DEB_FIELDS = ("Package", "Version", "Architecture", "Depends", "Pre-Depends", "Status")
_DEB_PREFIXES = ("linux-", "proxmox-", "pve-")
_DEB_IMAGE = re.compile(
    r"(?:linux-image|proxmox-kernel|pve-kernel)-"
    r"(?P<release>(?P<upstream>\d+\.\d+[0-9a-z.+~]*)(?:-(?P<abi>\d+))?"
    r"-(?P<flavour>[a-z][a-z0-9.+-]*?))(?:-signed)?"
)
_DEB_NOT_IMAGE = ("-dbg", "-dbgsym", "-unsigned")
_META_DEPTH = 4


@dataclass(frozen=True)
class _Deb:
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
    except _ERRORS as exc:
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
        except _ERRORS as exc:
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
            except _ERRORS as exc:
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
            versions.append(dataclasses.replace(current[0], priority=max([100, *same])))
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


def _apt_pending(
    root: Root, installed: Collection[str], problems: list[str]
) -> list[PendingKernel]:
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


# --- pacman ---------------------------------------------------------------------------

_PACMAN_DB = "/var/lib/pacman"
_PACMAN_CONF = "/etc/pacman.conf"
_PACMAN_KERNELS = ("linux", "linux-lts", "linux-zen", "linux-hardened", "linux-rt", "linux-rt-lts")
_VMLINUZ = re.compile(r"^usr/lib/modules/([^/\s]+)/vmlinuz$", re.MULTILINE)


def pacman_kernel_release(pkgname: str, version: str) -> Optional[str]:
    """The ``uname -r`` of an Arch kernel package version, or None when it has no x.y start.

    The rule of Arch's kernel PKGBUILDs: the leading numeric dot-parts of pkgver are the
    kernel version (``.0`` added to a bare x.y), each further dot-part becomes a ``-``
    part, then ``-<pkgrel>``, then the package name after ``linux``:
    ``linux 6.12.4.arch1-1`` -> ``6.12.4-arch1-1``, ``linux 6.13.arch1-1`` -> ``6.13.0-arch1-1``,
    ``linux-lts 6.6.63-1`` -> ``6.6.63-1-lts``, ``linux-zen 6.12.10.zen1-1`` ->
    ``6.12.10-zen1-1-zen``, ``linux-rt 6.12.0.rt5-1`` -> ``6.12.0-rt5-1-rt``.
    """
    if not pkgname.startswith("linux"):
        return None
    pkgver, _, pkgrel = version.rpartition(":")[2].rpartition("-")
    parts = pkgver.split(".")
    count = 0
    while count < min(3, len(parts)) and parts[count].isascii() and parts[count].isdigit():
        count += 1
    if count < 2 or not pkgrel or not all(parts):
        return None
    upstream = ".".join(parts[:count] + ["0"] * (3 - count))
    return "-".join([upstream, *parts[count:], pkgrel]) + pkgname[len("linux") :]


def _desc_fields(text: str) -> dict[str, list[str]]:
    """The ``%KEY%`` blocks of a pacman ``desc`` file."""
    fields: dict[str, list[str]] = {}
    key: Optional[str] = None
    for line in text.splitlines():
        if len(line) > 2 and line.startswith("%") and line.endswith("%"):
            key = line[1:-1]
            fields[key] = []
        elif line and key is not None:
            fields[key].append(line)
        else:
            key = None
    return fields


def _pacman_pending(
    root: Root, installed: Collection[str], problems: list[str]
) -> list[PendingKernel]:
    """Installed kernel packages whose version in the first sync db that has them is newer.

    Kernel packages: ``linux``, ``linux-lts``, ``linux-zen``, ``linux-hardened``,
    ``linux-rt``, ``linux-rt-lts`` and any ``linux-*`` whose files include
    ``usr/lib/modules/*/vmlinuz``. Packages matching ``IgnorePkg`` are skipped. When the
    installed package's files show a release that :func:`pacman_kernel_release` would not
    give, the new release is not guessed: a problem is recorded instead.
    """
    local = _pacman_local_kernels(root, problems)
    if not local:
        return []
    repos, ignored = _pacman_conf(root)
    sync = _sync_versions(root, _sync_dbs(root, repos), set(local), problems)
    pending = []
    for name, (version, files_release) in sorted(local.items()):
        if name not in sync or any(fnmatch.fnmatchcase(name, pat) for pat in ignored):
            continue
        new_version, db = sync[name]
        release = pacman_kernel_release(name, new_version)
        if alpm_vercmp(new_version, version) <= 0 or not release:
            continue
        expected = pacman_kernel_release(name, version)
        if files_release and files_release != expected:
            problems.append(
                f"{name} {version} installs {files_release}, not {expected}: "
                f"the release of {new_version} is unknown"
            )
            continue
        pending.append(PendingKernel(release, name, new_version, "pacman", db))
    return pending


def _pacman_local_kernels(root: Root, problems: list[str]) -> dict[str, tuple[str, Optional[str]]]:
    """Installed kernel packages: name -> (version, release its files install or None)."""
    found: dict[str, tuple[str, Optional[str]]] = {}
    for entry in root.listdir(f"{_PACMAN_DB}/local"):
        name = entry.rsplit("-", 2)[0]
        if not name.startswith("linux") or name.endswith(("-headers", "-docs")):
            continue
        base = f"{_PACMAN_DB}/local/{entry}"
        try:
            desc = _desc_fields(root.read_text(f"{base}/desc"))
        except FactError as exc:
            problems.append(str(exc))
            continue
        name, version = (desc.get("NAME") or [""])[0], (desc.get("VERSION") or [""])[0]
        if not (name and version):
            problems.append(f"{base}/desc: no %NAME% or %VERSION%")
            continue
        match = _VMLINUZ.search(root.read_text_or(f"{base}/files", "") or "")
        if name in _PACMAN_KERNELS or (name.startswith("linux-") and match):
            found[name] = (version, match.group(1) if match else None)
    return found


def _pacman_conf(root: Root) -> tuple[list[str], list[str]]:
    """Repository order and ``IgnorePkg`` patterns of pacman.conf.

    Read line by line because pacman repeats keys (``Include``, ``IgnorePkg``) that
    configparser would collapse.
    """
    repos: list[str] = []
    ignored: list[str] = []
    section = None
    for raw in (root.read_text_or(_PACMAN_CONF, "") or "").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            if section != "options":
                repos.append(section)
        elif section == "options" and line.partition("=")[0].strip() == "IgnorePkg":
            ignored.extend(line.partition("=")[2].split())
    return repos, ignored


def _sync_dbs(root: Root, repos: list[str]) -> list[str]:
    """Sync databases in pacman's order; all of them when pacman.conf names no repo."""
    dbs = {posixpath.basename(p)[: -len(".db")]: p for p in root.glob(f"{_PACMAN_DB}/sync/*.db")}
    if not repos:
        return [dbs[name] for name in sorted(dbs)]
    return [dbs[name] for name in repos if name in dbs]


def _sync_versions(
    root: Root, dbs: list[str], wanted: Collection[str], problems: list[str]
) -> dict[str, tuple[str, str]]:
    """name -> (version, db) from the first database that has the package."""
    found: dict[str, tuple[str, str]] = {}
    for db in dbs:
        try:
            versions = _sync_db_versions(root, db, wanted)
        except _ERRORS as exc:
            problems.append(_problem(db, exc))
            continue
        for name, version in versions.items():
            found.setdefault(name, (version, db))
    return found


def _sync_db_versions(root: Root, db: str, wanted: Collection[str]) -> dict[str, str]:
    """Versions of the ``wanted`` packages in one sync database (a possibly compressed tar)."""
    found: dict[str, str] = {}
    with _open_stream(root, db) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            entry, _, base = member.name.lstrip("./").partition("/")
            if base != "desc" or entry.rsplit("-", 2)[0] not in wanted:
                continue
            handle = tar.extractfile(member)
            desc = _desc_fields(handle.read().decode("utf-8", "replace")) if handle else {}
            name, version = (desc.get("NAME") or [""])[0], (desc.get("VERSION") or [""])[0]
            if name in wanted and version:
                found[name] = version
    return found
