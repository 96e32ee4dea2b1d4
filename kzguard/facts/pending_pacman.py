"""Pending kernels from pacman's local database and its sync databases (compressed tars).

Imported by :func:`kzguard.facts.packages.pending_kernels` only when pacman's local database
exists. Not modelled: ``IgnoreGroup``. Sync databases compressed with zstd need the
``zstandard`` module; without it they are reported as problems.
"""

from __future__ import annotations

import fnmatch
import lzma
import posixpath
import re
import tarfile
import zlib

from kzguard.base.errors import FactError
from kzguard.facts import Pattern
from kzguard.facts.packages import ERRORS as _BASE_ERRORS
from kzguard.facts.packages import PendingKernel, _open_stream, _problem
from kzguard.facts.vercmp import alpm_vercmp
from kzguard.root import Root

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import Optional

ERRORS = (*_BASE_ERRORS, lzma.LZMAError, zlib.error, tarfile.TarError)

_PACMAN_DB = "/var/lib/pacman"
_PACMAN_CONF = "/etc/pacman.conf"
_PACMAN_KERNELS = ("linux", "linux-lts", "linux-zen", "linux-hardened", "linux-rt", "linux-rt-lts")
_VMLINUZ = Pattern(r"^usr/lib/modules/([^/\s]+)/vmlinuz$", re.MULTILINE)


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


def pending(root: Root, installed: Collection[str], problems: list[str]) -> list[PendingKernel]:
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
        except ERRORS as exc:
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
