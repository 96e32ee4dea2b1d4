"""The ZFS META read from inside package files built by the real tools, and the verdict it gives.

Archives are made by ``dpkg-deb`` (xz, gzip, zstd, none), ``rpmbuild`` (zstd, xz, gzip
payloads), ``bsdtar`` (a .pkg.tar.zst / .xz as makepkg makes them) and ``repo-add``. Each
carries ``usr/src/zfs-2.3.2/META`` saying Linux-Maximum 6.13, where the built-in table says
ZFS 2.3.2 supports 6.14: a 6.14 kernel is refused by the archive's META and let through by
the table.
"""

from __future__ import annotations

import io
import shutil
import sys
import types
from pathlib import Path

import pytest

from devtools.hostbuilder import META_TEMPLATE, HostTree
from kzguard.context import Context
from kzguard.facts import package_meta
from kzguard.facts.zfs import release_table
from kzguard.guard.gate import run_gate
from kzguard.managers import apt, dnf, pacman
from kzguard.root import Root, Runner
from tests.scenarios import debian_dkms
from tests.tools import run

pytestmark = pytest.mark.real

META = META_TEMPLATE.format(version="2.3.2", release="1", linux_min="4.18", linux_max="6.13")
KERNEL = "6.14.1-amd64"


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {' '.join(missing)}")


def _tree(path: Path, meta: str = META, *, link: bool = False) -> Path:
    tree = HostTree(path)
    tree.write("/usr/src/zfs-2.3.2/dkms.conf", 'PACKAGE_NAME="zfs"\n')
    if link:
        tree.write("/usr/share/zfs/META", meta)
        tree.symlink("/usr/src/zfs-2.3.2/META", "../../share/zfs/META")
    else:
        tree.write("/usr/src/zfs-2.3.2/META", meta)
    tree.write("/usr/share/doc/zfs-dkms/copyright", "CDDL\n")
    return path


def deb(tmp: Path, compression: str = "xz", **kwargs) -> Path:
    _need("dpkg-deb")
    work = _tree(tmp / f"deb-{compression}", **kwargs)
    HostTree(work).write(
        "/DEBIAN/control",
        "Package: zfs-dkms\nVersion: 2.3.2-1\nArchitecture: all\n"
        "Maintainer: t <t@kzguard.invalid>\nDescription: t\n",
    )
    out = tmp / f"{compression}" / "zfs-dkms_2.3.2-1_all.deb"
    out.parent.mkdir(parents=True, exist_ok=True)
    run("dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", work, out)
    return out


def rpm(tmp: Path, payload: str) -> Path:
    _need("rpmbuild")
    tree = _tree(tmp / f"rpm-tree-{payload}")
    spec = tmp / f"zfs-dkms-{payload}.spec"
    spec.write_text(
        "Name: zfs-dkms\nVersion: 2.3.2\nRelease: 1.fc41\nSummary: t\nLicense: CDDL\n"
        f"BuildArch: noarch\n%description\nt\n%install\ncp -a {tree}/. %{{buildroot}}/\n"
        "%files\n/usr/src/zfs-2.3.2\n/usr/share/doc/zfs-dkms\n"
    )
    top = tmp / f"rpmbuild-{payload}"
    defines = {"_topdir": top, "_binary_payload": payload, "_build_id_links": "none"}
    args = [a for k, v in defines.items() for a in ("--define", f"{k} {v}")]
    run("rpmbuild", "-bb", "--quiet", *args, spec, timeout=120)
    return top / "RPMS" / "noarch" / "zfs-dkms-2.3.2-1.fc41.noarch.rpm"


def pkg(tmp: Path, flag: str = "--zstd", suffix: str = "zst", **kwargs) -> Path:
    _need("bsdtar")
    work = _tree(tmp / f"pkg-{suffix}", **kwargs)
    HostTree(work).write("/.PKGINFO", "pkgname = zfs-dkms\npkgver = 2.3.2-1\narch = any\n")
    out = tmp / f"zfs-dkms-2.3.2-1-any.pkg.tar.{suffix}"
    run("bsdtar", flag, "-cf", out, "-C", work, ".PKGINFO", "usr")
    return out


def _says_613(result: package_meta.MetaResult, name: str) -> None:
    assert result.note is None, result.note
    source = result.source
    assert (source.version, source.linux_min, source.linux_max) == ("2.3.2", "4.18", "6.13")
    assert source.path == f"META in {name}"
    assert release_table()["2.3.2"][1] == "6.14"  # the table would say otherwise


# --- the readers -----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_deb(tmp_path, compression):
    path = deb(tmp_path, compression)
    _says_613(package_meta.read_meta(str(path)), path.name)


@pytest.mark.parametrize("payload", ["w19.zstdio", "w2.xzdio", "w9.gzdio"])
def test_rpm(tmp_path, payload):
    path = rpm(tmp_path, payload)
    _says_613(package_meta.read_meta(str(path)), path.name)


@pytest.mark.parametrize(("flag", "suffix"), [("--zstd", "zst"), ("--xz", "xz")])
def test_pacman_package(tmp_path, flag, suffix):
    path = pkg(tmp_path, flag, suffix)
    _says_613(package_meta.read_meta(str(path)), path.name)


def test_zstd_without_the_module_runs_the_zstd_command(tmp_path, monkeypatch):
    _need("zstd")
    path = pkg(tmp_path)
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard raises ImportError
    _says_613(package_meta.read_meta(str(path), Runner()), path.name)
    path = deb(tmp_path, "zstd")
    _says_613(package_meta.read_meta(str(path), Runner()), path.name)


def test_broken_archives_are_notes_never_exceptions(tmp_path):
    good = deb(tmp_path)
    cut = tmp_path / "zfs-dkms_cut.deb"
    cut.write_bytes(good.read_bytes()[:700])
    garbage = tmp_path / "zfs-dkms_garbage.deb"
    garbage.write_bytes(b"!<arch>\nnot really an ar archive at all, just bytes" * 3)
    cases = {
        cut: "cannot read META from zfs-dkms_cut.deb",
        garbage: "cannot read META from zfs-dkms_garbage.deb: not a valid ar archive",
        tmp_path / "missing.deb": "cannot read META from missing.deb",
        pkg(tmp_path, link=True): "is a link in the archive (not followed)",
        deb(tmp_path, "gzip", meta="Name: zfs\nVersion: 2.3.2\n"): "Linux-Minimum or Linux-Max",
    }
    empty = tmp_path / "empty.pkg.tar.xz"
    run("bsdtar", "--xz", "-cf", empty, "-C", _tree(tmp_path / "e"), "usr/share")
    cases[empty] = "empty.pkg.tar.xz holds no usr/src/zfs-*/META"
    for path, note in cases.items():
        result = package_meta.read_meta(str(path))
        assert result.source is None and note in result.note, (path, result.note)


def test_a_huge_archive_is_not_read(tmp_path, monkeypatch):
    path = deb(tmp_path)
    monkeypatch.setattr(package_meta, "MAX_ARCHIVE", 100)
    assert "more than the 100 kzguard reads" in package_meta.read_meta(str(path)).note
    monkeypatch.setattr(package_meta, "MAX_ARCHIVE", 10**9)
    monkeypatch.setattr(package_meta, "MAX_UNPACKED", 1000)
    assert "once decompressed" in package_meta.read_meta(str(path)).note


# --- the verdict follows the archive's META ------------------------------------------------


def _apt_stream(deb_path: Path, root: Path) -> str:
    return (
        f"VERSION 3\nDir={root}/\n\n"
        f"linux-image-{KERNEL} - - none < 6.14.1-1 amd64 none /var/cache/k.deb\n"
        f"zfs-dkms 2.2.7-1 all none < 2.3.2-1 all none {deb_path}\n"
    )


def test_apt_judges_the_new_zfs_by_the_meta_in_its_deb(tmp_path):
    root = debian_dkms(tmp_path / "root").path
    good = deb(tmp_path)
    hook_input = apt.read(io.StringIO(_apt_stream(good, root)))
    tx = hook_input.transaction
    assert [s.path for s in tx.zfs_sources] == [f"META in {good.name}"]
    decision = run_gate(Context(Root(root), Runner(), env={}), tx)
    text = "\n".join(decision.lines)
    assert decision.action == "block", text
    assert f"kzguard: ZFS 2.3.2 supports Linux 4.18 to 6.13.x (META in {good.name})" in text
    why = f"Linux 6.14 is newer than ZFS 2.3.2 supports (up to 6.13, from META in {good.name})"
    assert why in text

    broken = tmp_path / "broken" / good.name
    broken.parent.mkdir()
    broken.write_bytes(good.read_bytes()[:300])
    tx = apt.read(io.StringIO(_apt_stream(broken, root))).transaction
    assert tx.zfs_sources == ()
    decision = run_gate(Context(Root(root), Runner(), env={}), tx)
    text = "\n".join(decision.lines)
    assert decision.action == "allow", text  # the table: 2.3.2 supports 6.14
    assert f"kzguard: cannot read META from {good.name}:" in text
    assert "ZFS 2.3.2 is judged by the built-in table" in text


def test_pacman_finds_the_package_in_its_cache_dir(tmp_path):
    _need("repo-add", "bsdtar")
    tree = HostTree(tmp_path / "root").os_release("arch").running("6.12.4-arch1-1")
    tree.kernel("6.12.4-arch1-1", modules_root="/usr/lib/modules")
    package = pkg(tmp_path)
    cache = tree.host("/var/cache/pacman/pkg")
    cache.mkdir(parents=True)
    shutil.copy(package, cache)
    sync = tree.host("/var/lib/pacman/sync")
    sync.mkdir(parents=True)
    run("repo-add", "-q", sync / "core.db.tar.gz", cache / package.name)
    (sync / "core.db").unlink()
    shutil.copy(sync / "core.db.tar.gz", sync / "core.db")
    tree.write("/etc/pacman.conf", "[options]\nCacheDir = /srv/elsewhere/\n[core]\n")
    targets = ["usr/src/zfs-2.3.2/META", "zfs-dkms", f"usr/lib/modules/{'6.14.1-arch1-1'}/vmlinuz"]
    tx = pacman.transaction(Root(tree.path), targets)
    assert tx.zfs_version == "2.3.2" and tx.notes == ()
    assert [(s.path, s.linux_max) for s in tx.zfs_sources] == [(f"META in {package.name}", "6.13")]
    (cache / package.name).unlink()
    tx = pacman.transaction(Root(tree.path), targets)
    assert tx.zfs_sources == ()
    assert tx.notes == (
        "no package file of zfs-dkms 2.3.2-1 in pacman's CacheDir: ZFS 2.3.2 is judged by the "
        "built-in table",
    )


class _Rpm:
    def __init__(self, path: str):
        self.name, self.version, self.release, self.arch = "zfs-dkms", "2.3.2", "1.fc41", "noarch"
        self.path = path

    def localPkg(self) -> str:
        return self.path


def test_dnf_reads_cached_rpms_at_resolved_and_the_rest_before_rpm_runs(tmp_path):
    built = rpm(tmp_path, "w19.zstdio")
    later = tmp_path / "cache" / built.name
    transaction = types.SimpleNamespace(install_set=[_Rpm(str(later))], remove_set=[])
    tx = dnf.from_dnf(transaction)
    waiting_tx, waiting = dnf.with_archives(tx, transaction, downloaded=False)
    assert waiting and waiting_tx.zfs_sources == ()
    assert (
        "is not downloaded yet: ZFS 2.3.2 is judged by the built-in table now"
        in (waiting_tx.notes[0])
    )
    later.parent.mkdir()
    shutil.copy(built, later)  # dnf downloads it
    read, waiting = dnf.with_archives(tx, transaction, downloaded=True)
    assert not waiting and [s.linux_max for s in read.zfs_sources] == ["6.13"]
