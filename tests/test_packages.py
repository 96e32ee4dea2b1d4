"""Pending kernels from package manager caches built by the real tools.

``real`` tests build metadata with rpmbuild + createrepo_c (dnf); dpkg-deb,
dpkg-scanpackages and ``apt-get update`` of a ``copy:`` repo (apt); bsdtar, repo-add and
pacman (pacman). Where the manager can say what an upgrade would install
(``apt-get -s full-upgrade``, ``pacman -Sup``) our answer is checked against it. The rest
feeds garbage to every reader.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.pkgmeta import rpm_repo
from kzguard.facts import packages, pending_apt
from kzguard.facts.packages import PendingKernel, pending_kernels
from kzguard.facts.pending_pacman import pacman_kernel_release
from kzguard.root import Root
from tests.tools import run as _run


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {' '.join(missing)}")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _releases(root: Path, installed: list[str]) -> tuple[list[str], list[str]]:
    found, problems = pending_kernels(Root(root), installed)
    return sorted(k.release for k in found), problems


# --- dnf ---------------------------------------------------------------------------------

RPMS = {
    "f41": [("kernel-core", "6.12.10", "200.fc41"), ("kernel-core", "6.13.2", "200.fc41")],
    # Fedora's "kernel" meta package: ignored because kernel-core exists
    "f41-meta": [("kernel", "6.14.0", "1.fc41")],
    "testing": [("kernel-core", "6.14.0", "0.rc1.fc41")],
    "el7": [("kernel", "3.10.0", "1160.el7"), ("kernel", "3.10.0", "1160.119.1.el7")],
}


@pytest.fixture(scope="module")
def rpm_repos(tmp_path_factory) -> dict[str, Path]:
    """Repos (createrepo_c) of fake kernel rpms (rpmbuild), by name."""
    _need("rpmbuild", "createrepo_c")
    top = tmp_path_factory.mktemp("rpm")
    repos = {name: rpm_repo(top / "repos" / name, rpms) for name, rpms in RPMS.items()}
    return repos


def _dnf_cache(root: Path, repo: Path, repoid: str, cache: str = "var/cache/dnf") -> Path:
    """Lay out a repo's metadata the way dnf and dnf5 keep it: <cache>/<repoid>-<hash>/."""
    target = root / cache / f"{repoid}-35e3b677de9475f9" / "repodata"
    shutil.copytree(repo / "repodata", target)
    return target


def _recompress_primary(repodata: Path, suffix: str) -> None:
    """Rewrite primary.xml.gz as .zst or .xz (Fedora ships zst; createrepo_c 0.17 cannot)."""
    (gz,) = repodata.glob("*-primary.xml.gz")
    raw = gzip.decompress(gz.read_bytes())
    new = gz.with_name(gz.name.replace(".gz", suffix))
    if suffix == ".zst":
        import zstandard

        new.write_bytes(zstandard.ZstdCompressor().compress(raw))
    else:
        import lzma

        new.write_bytes(lzma.compress(raw))
    gz.unlink()
    repomd = repodata / "repomd.xml"
    repomd.write_text(repomd.read_text().replace(gz.name, new.name))


FEDORA_OLD = "6.12.10-200.fc41.x86_64"
FEDORA_NEW = "6.13.2-200.fc41.x86_64"


@pytest.mark.real
def test_fedora_newer_kernel_in_dnf_cache(rpm_repos, tmp_path):
    _dnf_cache(tmp_path, rpm_repos["f41"], "updates")
    _dnf_cache(tmp_path, rpm_repos["f41-meta"], "fedora")
    found, problems = pending_kernels(Root(tmp_path), [FEDORA_OLD])
    assert problems == []
    assert [k.release for k in found] == [FEDORA_NEW]
    kernel = found[0]
    assert (kernel.package, kernel.version, kernel.manager) == (
        "kernel-core",
        "6.13.2-200.fc41",
        "dnf",
    )
    assert re.fullmatch(r"/var/cache/dnf/updates-\w+/repodata/\w+-primary\.xml\.gz", kernel.source)
    assert kernel.to_dict()["release"] == FEDORA_NEW


@pytest.mark.real
def test_fedora_nothing_pending_when_newest_is_installed(rpm_repos, tmp_path):
    _dnf_cache(tmp_path, rpm_repos["f41"], "updates")
    assert _releases(tmp_path, [FEDORA_OLD, FEDORA_NEW]) == ([], [])
    # a newer installed kernel of the flavour also hides it; another flavour does not count
    assert _releases(tmp_path, ["6.14.1-100.fc41.x86_64"]) == ([], [])
    assert _releases(tmp_path, [f"{FEDORA_OLD}+debug"]) == ([], [])


@pytest.mark.real
def test_real_dnf_makecache_layout(rpm_repos, tmp_path):
    _need("dnf")
    _run(
        "dnf", "-q", "-y", f"--installroot={tmp_path}", "--releasever=41", "--disablerepo=*",
        f"--repofrompath=updates,{rpm_repos['f41']}", "--setopt=updates.gpgcheck=0",
        "--setopt=updates.metadata_expire=0", "makecache",
    )  # fmt: skip
    assert _releases(tmp_path, [FEDORA_OLD]) == ([FEDORA_NEW], [])


@pytest.mark.real
def test_dnf5_cache_with_zstd_and_xz_primary(rpm_repos, tmp_path):
    pytest.importorskip("zstandard")
    _recompress_primary(
        _dnf_cache(tmp_path, rpm_repos["f41"], "updates", "var/cache/libdnf5"), ".zst"
    )
    _recompress_primary(_dnf_cache(tmp_path, rpm_repos["testing"], "rawhide"), ".xz")
    found, problems = pending_kernels(Root(tmp_path), [FEDORA_OLD])
    assert problems == []
    assert [(k.release, k.manager) for k in found] == [("6.14.0-0.rc1.fc41.x86_64", "dnf")]
    (tmp_path / "var/cache/dnf").rename(tmp_path / "elsewhere")
    found, _ = pending_kernels(Root(tmp_path), [FEDORA_OLD])
    assert [(k.release, k.manager) for k in found] == [(FEDORA_NEW, "dnf5")]


@pytest.mark.real
def test_zstd_primary_without_zstandard_is_a_problem(rpm_repos, tmp_path, monkeypatch):
    pytest.importorskip("zstandard")
    _recompress_primary(_dnf_cache(tmp_path, rpm_repos["f41"], "updates"), ".zst")
    monkeypatch.setattr(packages, "_zstandard", lambda: None)
    found, problems = pending_kernels(Root(tmp_path), [FEDORA_OLD])
    assert found == []
    assert len(problems) == 1 and "zstandard module is not installed" in problems[0]


@pytest.mark.real
def test_disabled_repo_cache_is_ignored_until_enabled(rpm_repos, tmp_path):
    _dnf_cache(tmp_path, rpm_repos["f41"], "updates")
    _dnf_cache(tmp_path, rpm_repos["testing"], "updates-testing")
    _write(
        tmp_path / "etc/yum.repos.d/fedora-updates-testing.repo",
        "[updates-testing]\nname=t\nenabled=0\n",
    )
    assert _releases(tmp_path, [FEDORA_OLD]) == ([FEDORA_NEW], [])
    # dnf5 config-manager setopt updates-testing.enabled=1 writes an override
    _write(tmp_path / "etc/dnf/repos.override.d/99-config_manager.repo", "[*-testing]\nenabled=1\n")
    assert _releases(tmp_path, [FEDORA_OLD]) == (["6.14.0-0.rc1.fc41.x86_64"], [])


@pytest.mark.real
def test_el7_kernel_package_when_no_kernel_core(rpm_repos, tmp_path):
    _dnf_cache(tmp_path, rpm_repos["el7"], "updates")
    found, problems = pending_kernels(Root(tmp_path), ["3.10.0-1160.el7.x86_64"])
    assert problems == []
    assert [(k.release, k.package) for k in found] == [("3.10.0-1160.119.1.el7.x86_64", "kernel")]


# --- apt ---------------------------------------------------------------------------------

Deb = tuple  # (name, version, depends) or (name, version, depends, arch)


def _build_debs(repo: Path, debs: list[Deb]) -> None:
    for deb in debs:
        name, version, depends, arch = (*deb, "amd64")[:4]
        pkg = repo / "src" / f"{name}_{version}"
        control = f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        control += f"Depends: {depends}\n" if depends else ""
        _write(pkg / "DEBIAN/control", control + "Maintainer: t <t@example.org>\nDescription: t\n")
        _run(
            "dpkg-deb", "--root-owner-group", "--build", pkg, repo / f"{name}_{version}_{arch}.deb"
        )
        shutil.rmtree(pkg)


def _status(entries: list[tuple]) -> str:
    """A dpkg status file: (name, version, depends[, arch[, want]]) per installed package."""
    out = []
    for entry in [("dpkg", "1.21.22", ""), *entries]:
        name, version, depends, arch, want = (*entry, *("amd64", "install")[len(entry) - 3 :])
        text = f"Package: {name}\nStatus: {want} ok installed\nPriority: optional\n"
        text += f"Architecture: {arch}\nVersion: {version}\n"
        text += f"Depends: {depends}\n" if depends else ""
        out.append(text + "Maintainer: t <t@example.org>\nDescription: t\n multi-line\n .\n end\n")
    return "\n".join(out)


def _apt_root(
    tmp: Path, status: list[tuple], repos: dict[str, list[Deb]], backports: tuple = ()
) -> Path:
    """A root whose apt lists come from a real ``apt-get update`` of flat file: repos."""
    _need("dpkg-deb", "dpkg-scanpackages", "apt-ftparchive", "apt-get")
    root = tmp / "root"
    for sub in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _write(root / "var/lib/dpkg/status", _status(status))
    sources = []
    for label, debs in repos.items():
        repo = tmp / "repos" / label
        repo.mkdir(parents=True)
        _build_debs(repo, debs)
        _write(repo / "Packages", _run("dpkg-scanpackages", "--multiversion", ".", cwd=repo).stdout)
        opts = ["-o", "APT::FTPArchive::Release::Suite=" + label]
        if label in backports:
            opts += ["-o", "APT::FTPArchive::Release::NotAutomatic=yes"]
            opts += ["-o", "APT::FTPArchive::Release::ButAutomaticUpgrades=yes"]
        _write(repo / "Release", _run("apt-ftparchive", *opts, "release", ".", cwd=repo).stdout)
        sources.append(f"deb [trusted=yes] copy:{repo} ./\n")  # file: would symlink
    _write(root / "etc/apt/sources.list", "".join(sources))
    _write(
        tmp / "apt.conf",
        f'Dir "{root}/";\nDir::State::status "{root}/var/lib/dpkg/status";\n'
        f'Dir::Etc::Parts "{root}/etc/apt/apt.conf.d";\nAPT::Architecture "amd64";\n'
        'Acquire::GzipIndexes "false";\nDebug::NoLocking "true";\n',
    )
    _run("apt-get", "-q", "update", env={"APT_CONFIG": str(tmp / "apt.conf")})
    return root


def _apt_would_install(tmp: Path) -> list[str]:
    """Kernel releases the real ``apt-get -s full-upgrade`` would install on the root."""
    out = _run("apt-get", "-s", "full-upgrade", env={"APT_CONFIG": str(tmp / "apt.conf")}).stdout
    names = re.findall(r"^Inst (\S+)", out, re.MULTILINE)
    return sorted(r for r in map(pending_apt._deb_image_release, names) if r)


DEBIAN_STATUS = [
    ("linux-image-6.1.0-28-amd64", "6.1.119-1", ""),
    ("linux-image-amd64", "6.1.119-1", "linux-image-6.1.0-28-amd64 (= 6.1.119-1)"),
]
DEBIAN_MAIN = [
    ("linux-image-6.1.0-28-amd64", "6.1.119-1", ""),
    ("linux-image-6.1.0-30-amd64", "6.1.123-1", ""),
    ("linux-image-6.1.0-30-amd64-unsigned", "6.1.123-1", ""),
    ("linux-image-6.1.0-30-amd64-dbg", "6.1.123-1", ""),
    ("linux-image-6.1.0-31-cloud-amd64", "6.1.124-1", ""),
    ("linux-image-amd64", "6.1.123-1", "linux-image-6.1.0-30-amd64 (= 6.1.123-1)"),
]
DEBIAN_BACKPORTS = [
    ("linux-image-6.12.9+bpo-amd64", "6.12.9-1~bpo12+1", ""),
    ("linux-image-amd64", "6.12.9-1~bpo12+1", "linux-image-6.12.9+bpo-amd64 (= 6.12.9-1~bpo12+1)"),
]


@pytest.mark.real
def test_debian_meta_package_pulls_kernel_not_backports(tmp_path):
    repos = {"bookworm": DEBIAN_MAIN, "bookworm-backports": DEBIAN_BACKPORTS}
    root = _apt_root(tmp_path, DEBIAN_STATUS, repos, backports=("bookworm-backports",))
    found, problems = pending_kernels(Root(root), ["6.1.0-28-amd64"])
    assert problems == []
    assert [(k.release, k.package, k.version, k.manager) for k in found] == [
        ("6.1.0-30-amd64", "linux-image-6.1.0-30-amd64", "6.1.123-1", "apt")
    ]
    assert found[0].source.startswith("/var/lib/apt/lists/") and found[0].source.endswith(
        "_Packages"
    )
    assert _apt_would_install(tmp_path) == ["6.1.0-30-amd64"]


@pytest.mark.real
def test_debian_backports_meta_follows_backports(tmp_path):
    status = [
        ("linux-image-6.12.6+bpo-amd64", "6.12.6-1~bpo12+1", ""),
        ("linux-image-amd64", "6.12.6-1~bpo12+1", "linux-image-6.12.6+bpo-amd64"),
    ]
    repos = {"bookworm": DEBIAN_MAIN, "bookworm-backports": DEBIAN_BACKPORTS}
    root = _apt_root(tmp_path, status, repos, backports=("bookworm-backports",))
    assert _releases(root, []) == (["6.12.9+bpo-amd64"], [])
    assert _apt_would_install(tmp_path) == ["6.12.9+bpo-amd64"]


@pytest.mark.real
def test_debian_held_meta_pulls_nothing(tmp_path):
    status = [DEBIAN_STATUS[0], (*DEBIAN_STATUS[1], "amd64", "hold")]
    root = _apt_root(tmp_path, status, {"bookworm": DEBIAN_MAIN})
    assert _releases(root, ["6.1.0-28-amd64"]) == ([], [])
    assert _apt_would_install(tmp_path) == []


@pytest.mark.real
def test_debian_without_meta_falls_back_to_newest_of_flavour(tmp_path):
    root = _apt_root(
        tmp_path,
        DEBIAN_STATUS[:1],
        {"bookworm": [*DEBIAN_MAIN, ("linux-image-6.1.0-27-amd64", "6.1.118-1", "")]},
    )
    assert _releases(root, ["6.1.0-28-amd64"]) == (["6.1.0-30-amd64"], [])
    assert _apt_would_install(tmp_path) == []  # apt installs no new ABI without a meta package
    assert _releases(root, ["6.1.0-30-amd64"]) == ([], [])


UBUNTU_STATUS = [
    ("linux-image-6.8.0-45-generic", "6.8.0-45.45", ""),
    ("linux-image-generic", "6.8.0.45.45", "linux-image-6.8.0-45-generic"),
    ("linux-generic", "6.8.0.45.45", "linux-image-generic (= 6.8.0.45.45)"),
]
UBUNTU_REPO = [
    ("linux-image-6.8.0-47-generic", "6.8.0-47.47", ""),
    ("linux-image-unsigned-6.8.0-47-generic", "6.8.0-47.47", ""),
    ("linux-modules-extra-6.8.0-47-generic", "6.8.0-47.47", ""),
    (
        "linux-image-generic",
        "6.8.0.47.47",
        "linux-image-6.8.0-47-generic, linux-modules-extra-6.8.0-47-generic",
    ),
    ("linux-generic", "6.8.0.47.47", "linux-image-generic (= 6.8.0.47.47)"),
]


@pytest.mark.real
def test_ubuntu_generic_from_gzipped_list(tmp_path):
    root = _apt_root(tmp_path, UBUNTU_STATUS, {"noble-updates": UBUNTU_REPO})
    assert _apt_would_install(tmp_path) == ["6.8.0-47-generic"]
    for lst in (root / "var/lib/apt/lists").glob("*_Packages"):
        lst.with_name(lst.name + ".gz").write_bytes(gzip.compress(lst.read_bytes()))
        lst.unlink()
    found, problems = pending_kernels(Root(root), ["6.8.0-45-generic"])
    assert problems == []
    assert [(k.release, k.version) for k in found] == [("6.8.0-47-generic", "6.8.0-47.47")]
    assert found[0].source.endswith("_Packages.gz")


PVE_STATUS = [
    ("proxmox-kernel-6.8.12-2-pve-signed", "6.8.12-2", ""),
    (
        "proxmox-kernel-6.8",
        "6.8.12-2",
        "proxmox-kernel-6.8.12-2-pve-signed | proxmox-kernel-6.8.12-2-pve",
        "all",
    ),
    ("proxmox-default-kernel", "1.1.0", "proxmox-kernel-6.8", "all"),
]
PVE_REPO = [
    ("proxmox-kernel-6.8.12-4-pve-signed", "6.8.12-4", ""),
    (
        "proxmox-kernel-6.8",
        "6.8.12-4",
        "proxmox-kernel-6.8.12-4-pve-signed | proxmox-kernel-6.8.12-4-pve",
        "all",
    ),
    ("proxmox-kernel-6.11.0-2-pve-signed", "6.11.0-2", ""),
    (
        "proxmox-kernel-6.11",
        "6.11.0-2",
        "proxmox-kernel-6.11.0-2-pve-signed | proxmox-kernel-6.11.0-2-pve",
        "all",
    ),
    ("pve-kernel-5.15.158-2-pve", "5.15.158-2", ""),
]


@pytest.mark.real
def test_proxmox_series_meta_and_new_default_series(tmp_path):
    root = _apt_root(tmp_path, PVE_STATUS, {"pve": PVE_REPO})
    assert _releases(root, ["6.8.12-2-pve"]) == (["6.8.12-4-pve"], [])
    assert _apt_would_install(tmp_path) == ["6.8.12-4-pve"]
    # the default kernel moves to a new series: its meta is not installed yet, follow it
    repo = [*PVE_REPO, ("proxmox-default-kernel", "1.2.0", "proxmox-kernel-6.11", "all")]
    root = _apt_root(tmp_path / "new", PVE_STATUS, {"pve": repo})
    assert _releases(root, ["6.8.12-2-pve"]) == (["6.11.0-2-pve", "6.8.12-4-pve"], [])
    assert _apt_would_install(tmp_path / "new") == ["6.11.0-2-pve", "6.8.12-4-pve"]


@pytest.mark.real
def test_apt_lz4_list_is_a_problem(tmp_path):
    root = _apt_root(tmp_path, DEBIAN_STATUS, {"bookworm": DEBIAN_MAIN})
    (lst,) = (root / "var/lib/apt/lists").glob("*_Packages")
    lst.rename(lst.with_name(lst.name + ".lz4"))
    lst.with_name(lst.name + ".lz4").write_bytes(b"\x04\x22\x4d\x18" + b"\0" * 20)
    found, problems = pending_kernels(Root(root), ["6.1.0-28-amd64"])
    assert found == []
    assert len(problems) == 1 and "lz4" in problems[0]


# --- pacman ------------------------------------------------------------------------------


def _pacman_pkg(out: Path, name: str, version: str, release: Optional[str] = None) -> Path:
    """A package made by hand: .PKGINFO and a vmlinuz, tarred by bsdtar, zstd-compressed."""
    work = Path(tempfile.mkdtemp(dir=out))
    files = []
    if release:
        _write(work / f"usr/lib/modules/{release}/vmlinuz", "x")
        files = ["usr"]
    info = f"pkgname = {name}\npkgbase = {name}\npkgver = {version}\npkgdesc = t\n"
    info += (
        "url = https://example.org\nbuilddate = 1700000000\npackager = t\nsize = 1\narch = x86_64\n"
    )
    _write(work / ".PKGINFO", info)
    pkg = out / f"{name}-{version}-x86_64.pkg.tar.zst"
    _run("bsdtar", "--zstd", "-cf", pkg, ".PKGINFO", *files, cwd=work)
    shutil.rmtree(work)
    return pkg


def _pacman_root(
    tmp: Path, installed: list[tuple], repos: dict[str, list[tuple]], options: str = ""
) -> Path:
    """A root with pacman's local db (``pacman -U``) and sync dbs (``repo-add``, ``pacman -Sy``)."""
    _need("bsdtar", "zstd", "repo-add", "pacman")
    root = tmp / "root"
    (root / "var/lib/pacman").mkdir(parents=True)
    conf = f"[options]\nSigLevel = Never\nLocalFileSigLevel = Never\n{options}\n"
    for repo, pkgs in repos.items():
        out = tmp / "repos" / repo
        out.mkdir(parents=True)
        built = [_pacman_pkg(out, *pkg) for pkg in pkgs]
        _run("repo-add", "-q", out / f"{repo}.db.tar.zst", *built)
        conf += f"[{repo}]\nServer = file://{out}\n"
    _write(root / "etc/pacman.conf", conf)
    local = [_pacman_pkg(tmp, *pkg) for pkg in installed]
    _run(*_pacman_argv(root), "--noconfirm", "-U", *local)
    _run(*_pacman_argv(root), "-Sy")
    return root


def _pacman_argv(root: Path) -> list[str]:
    return [
        "pacman",
        "--root",
        str(root),
        "--dbpath",
        f"{root}/var/lib/pacman",
        "--config",
        f"{root}/etc/pacman.conf",
        "--noprogressbar",
    ]


def _pacman_would_install(root: Path) -> list[str]:
    """What the real ``pacman -Su`` would install, as (name, version) strings."""
    out = _run(*_pacman_argv(root), "-Sup", "--print-format", "%n %v").stdout
    return sorted(pacman_kernel_release(*line.split()) or line for line in out.splitlines() if line)


ARCH_INSTALLED = [
    ("linux", "6.12.4.arch1-1", "6.12.4-arch1-1"),
    ("linux-lts", "6.6.63-1", "6.6.63-1-lts"),
]
ARCH_CORE = [
    ("linux", "6.12.10.arch1-1", "6.12.10-arch1-1"),
    ("linux-lts", "6.6.65-1", "6.6.65-1-lts"),
    ("linux-headers", "6.12.10.arch1-1"),
]


@pytest.mark.real
def test_arch_linux_and_linux_lts(tmp_path):
    root = _pacman_root(tmp_path, ARCH_INSTALLED, {"core": ARCH_CORE})
    found, problems = pending_kernels(Root(root), ["6.12.4-arch1-1", "6.6.63-1-lts"])
    assert problems == []
    assert sorted((k.release, k.package, k.version) for k in found) == [
        ("6.12.10-arch1-1", "linux", "6.12.10.arch1-1"),
        ("6.6.65-1-lts", "linux-lts", "6.6.65-1"),
    ]
    assert {k.source for k in found} == {"/var/lib/pacman/sync/core.db"}
    assert _pacman_would_install(root) == ["6.12.10-arch1-1", "6.6.65-1-lts"]


@pytest.mark.real
def test_arch_repo_order_and_ignorepkg(tmp_path):
    testing = [
        ("linux", "6.13.1.arch1-1", "6.13.1-arch1-1"),
        ("linux-lts", "6.6.60-1", "6.6.60-1-lts"),
    ]
    repos = {"core-testing": testing, "core": ARCH_CORE}
    root = _pacman_root(tmp_path, ARCH_INSTALLED, repos, options="IgnorePkg = linux-lts")
    # the first repo that has a package wins, even with an older version; IgnorePkg holds
    assert _releases(root, []) == (["6.13.1-arch1-1"], [])
    assert _pacman_would_install(root) == ["6.13.1-arch1-1"]


@pytest.mark.real
def test_arch_custom_kernel_found_by_files_and_mapping_checked(tmp_path):
    installed = [
        ("linux-cachyos", "6.12.4-2", "6.12.4-2-cachyos"),
        ("linux-odd", "6.12.4-1", "6.12.4-odd"),
    ]
    repo = [
        ("linux-cachyos", "6.12.5-1", "6.12.5-1-cachyos"),
        ("linux-odd", "6.12.5-1", "6.12.5-odd"),
    ]
    root = _pacman_root(tmp_path, installed, {"extra": repo})
    found, problems = pending_kernels(Root(root), [])
    assert [k.release for k in found] == ["6.12.5-1-cachyos"]
    assert len(problems) == 1 and "linux-odd 6.12.4-1 installs 6.12.4-odd" in problems[0]


@pytest.mark.parametrize(
    ("name", "version", "release"),
    [
        ("linux", "6.12.4.arch1-1", "6.12.4-arch1-1"),
        ("linux", "6.13.arch1-1", "6.13.0-arch1-1"),
        ("linux-lts", "6.6.63-1", "6.6.63-1-lts"),
        ("linux-zen", "6.12.10.zen1-1", "6.12.10-zen1-1-zen"),
        ("linux-hardened", "6.12.4.hardened1-1", "6.12.4-hardened1-1-hardened"),
        ("linux-rt", "6.12.0.rt5-1", "6.12.0-rt5-1-rt"),
        ("linux-rt-lts", "6.6.58.rt45-1", "6.6.58-rt45-1-rt-lts"),
        ("linux", "1:6.12.4.arch1-1", "6.12.4-arch1-1"),
        ("linux", "arch1-1", None),
        ("linux", "6.12.4", None),
        ("zfs-linux", "2.2.7_6.12.4.arch1.1-1", None),
    ],
)
def test_pacman_kernel_release(name, version, release):
    assert pacman_kernel_release(name, version) == release


# --- garbage never raises -----------------------------------------------------------------

GARBAGE_PATHS = {
    "repomd": "var/cache/dnf/updates-0123456789abcdef/repodata/repomd.xml",
    "primary": "var/cache/dnf/updates-0123456789abcdef/repodata/p-primary.xml.gz",
    "packages": "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
    "status": "var/lib/dpkg/status",
    "inrelease": "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
    "sync": "var/lib/pacman/sync/core.db",
    "desc": "var/lib/pacman/local/linux-6.12.4.arch1-1/desc",
    "repo": "etc/yum.repos.d/fedora.repo",
    "pacman.conf": "etc/pacman.conf",
}
GOOD_REPOMD = (
    '<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary">'
    '<location href="repodata/p-primary.xml.gz"/></data></repomd>'
)
GOOD_DESC = "%NAME%\nlinux\n\n%VERSION%\n6.12.4.arch1-1\n"


def _garbage_root(top: Path, contents: dict[str, bytes]) -> Path:
    root = Path(tempfile.mkdtemp(dir=top))
    for key, data in contents.items():
        path = root / GARBAGE_PATHS[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for key, text in (("repomd", GOOD_REPOMD), ("desc", GOOD_DESC)):
        if key not in contents:
            _write(root / GARBAGE_PATHS[key], text)
    return root


@pytest.mark.parametrize(
    ("key", "data", "needle"),
    [
        ("repomd", b"<repomd><data", "repomd.xml"),
        ("repomd", b'<repomd xmlns="http://linux.duke.edu/metadata/repo"/>', "no primary"),
        (
            "primary",
            gzip.compress(b"<metadata><package><name>kernel-core")[:-8],
            "p-primary.xml.gz",
        ),
        ("primary", b"\x1f\x8b garbage", "p-primary.xml.gz"),
        ("packages", b"Package: linux-image-amd64\nthis is not deb822\n", "not a deb822 field"),
        ("packages", b"Package: linux-image-amd64\nVersion: x:1\n", "epoch"),
        ("sync", b"\x28\xb5\x2f\xfd garbage", "core.db"),
        ("sync", b"not a tar file at all" * 40, "core.db"),
        ("desc", b"\xff\xfe%NAME%\n", "no %NAME% or %VERSION%"),
        ("repo", b"no section header\n", "fedora.repo"),
    ],
)
def test_garbage_metadata_is_a_problem_not_an_exception(tmp_path, key, data, needle):
    root = _garbage_root(tmp_path, {key: data})
    found, problems = pending_kernels(Root(root), ["6.12.4-arch1-1"])
    assert found == []
    assert any(needle in p for p in problems), problems


def test_missing_caches_mean_nothing_pending(tmp_path):
    assert pending_kernels(Root(tmp_path), ["6.1.0-28-amd64"]) == ([], [])


def test_no_caches_import_no_parser(tmp_path):
    heavy = ["tarfile", "bz2", "xml.etree.ElementTree", "configparser", "kzguard.facts.vercmp"]
    heavy += [f"kzguard.facts.pending_{m}" for m in ("dnf", "apt", "pacman")]
    code = (
        "import sys\n"
        "from kzguard.facts.packages import pending_kernels\n"
        "from kzguard.root import Root\n"
        f"assert pending_kernels(Root({str(tmp_path)!r}), []) == ([], [])\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    top = Path(__file__).resolve().parents[1]  # ``-c`` imports from the working directory
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=top
    ).stdout
    assert out.strip() == "[]"


@given(st.dictionaries(st.sampled_from(sorted(GARBAGE_PATHS)), st.binary(max_size=300), min_size=1))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_bytes_anywhere_never_raise(tmp_path, contents):
    found, problems = pending_kernels(Root(_garbage_root(tmp_path, contents)), ["6.12.4-arch1-1"])
    assert all(isinstance(k, PendingKernel) for k in found)
    assert all(isinstance(p, str) for p in problems)
