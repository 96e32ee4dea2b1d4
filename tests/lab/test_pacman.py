"""Real pacman transactions with kzguard's alpm hook installed, in alternate roots.

Packages are made by hand (a ``.PKGINFO`` and files, tarred by bsdtar, zstd-compressed) and
served from a local repo made by ``repo-add``. Each transaction runs as
``pacman --root R --dbpath R/var/lib/pacman --config R/etc/pacman.conf --hookdir DIR`` inside
``unshare -m``, where pacman runs the hook ``hooks/pacman/05-kzguard-pre.hook`` (unchanged)
chrooted into R. For that R is laid out as on Arch (``bin``, ``sbin`` -> ``usr/bin``, ``lib``,
``lib64`` -> ``usr/lib``), with the host's ``/usr`` bound read-only at ``/opt/hostusr`` and
only the dynamic loader and the multiarch library directory linked from R's ``usr/lib`` into it
(so the host's ``/lib/modules`` never shows up as kernels of R), and this checkout and its
Python bound read-only at the same paths as on the host. ``/usr/bin/kzguard`` in R is the
console script pip would write; the fake ``zfs`` is in ``/usr/local/bin``.

R looks like an Arch ZFS host: ``linux 6.12.4.arch1-1``, ``zfs-dkms`` and ``zfs-utils`` 2.2.7
installed by pacman, the zfs and spl modules DKMS built for that kernel, and ``/`` on ZFS.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

from devtools.hostbuilder import HostTree
from tests.tools import run as _run

pytestmark = pytest.mark.real

TOP = Path(__file__).resolve().parents[2]
HOOK = TOP / "hooks" / "pacman" / "05-kzguard-pre.hook"
FAKE_ZFS = TOP / "devtools" / "fakebin" / "zfs"
HOSTUSR = "/opt/hostusr"
OLD, OLD_VERSION = "6.12.4-arch1-1", "6.12.4.arch1-1"
MINOR, MINOR_VERSION = "6.12.10-arch1-1", "6.12.10.arch1-1"
NEW, NEW_VERSION = "6.13.1-arch1-1", "6.13.1.arch1-1"
DATASET = "rpool/ROOT/arch"
ZFS_LOG = "/tmp/zfs-calls.jsonl"  # inside R
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "PYTHONDONTWRITEBYTECODE": "1",
    "KZGUARD_FAKE_ZFS_LOG": ZFS_LOG,
    "KZGUARD_FAKE_ZFS_STATE": "/tmp/zfs-state.json",
}


def _need_tools() -> None:
    tools = ("pacman", "repo-add", "bsdtar", "zstd", "unshare")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        pytest.skip(f"not installed: {' '.join(missing)}")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not permitted here: {probe.stderr.strip()}")


# --- packages and the repo ---------------------------------------------------------------------


def _package(out: Path, name: str, version: str, build: Callable[[HostTree], object]) -> Path:
    """A pacman package made by hand: ``build(HostTree)`` fills it, then .PKGINFO and bsdtar."""
    work = out / f"build-{name}-{version}"
    tree = HostTree(work)
    build(tree)
    tree.write(
        "/.PKGINFO",
        f"pkgname = {name}\npkgbase = {name}\npkgver = {version}\npkgdesc = kzguard test\n"
        "url = https://example.org\nbuilddate = 1700000000\npackager = kzguard\n"
        "size = 1\narch = any\n",
    )
    pkg = out / f"{name}-{version}-any.pkg.tar.zst"
    files = sorted(p.name for p in work.iterdir() if p.name != ".PKGINFO")
    _run("bsdtar", "--zstd", "-cf", pkg, ".PKGINFO", *files, cwd=work)
    shutil.rmtree(work)
    return pkg


def _linux(out: Path, version: str, release: str) -> Path:
    return _package(
        out, "linux", version, lambda t: t.kernel(release, modules_root="/usr/lib/modules")
    )


def _zfs_dkms(out: Path, version: str, linux_max: str) -> Path:
    return _package(
        out, "zfs-dkms", f"{version}-1", lambda t: t.zfs_source(version, "4.18", linux_max)
    )


def _plain(out: Path, name: str, version: str) -> Path:
    return _package(out, name, version, lambda t: t.write(f"/usr/share/{name}/README", name))


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict[str, Path]:
    """The repo, the packages installed first, and a template root every test copies."""
    _need_tools()
    top = tmp_path_factory.mktemp("pacman-lab")
    repo, pkgs = top / "repo", top / "pkgs"
    repo.mkdir()
    pkgs.mkdir()
    synced = [
        _linux(repo, NEW_VERSION, NEW),
        _zfs_dkms(repo, "2.3.1", "6.13"),
        _plain(repo, "zfs-utils", "2.3.1-1"),
        _plain(repo, "hello", "1.0-1"),
    ]
    _run("repo-add", "-q", repo / "core.db.tar.gz", *synced)
    base = [
        _linux(pkgs, OLD_VERSION, OLD),
        _package(pkgs, "dkms", "3.1.8-1", lambda t: t.arch_dkms_hook()),
        _zfs_dkms(pkgs, "2.2.7", "6.12"),
        _plain(pkgs, "zfs-utils", "2.2.7-1"),
    ]
    template = top / "template"
    _arch_layout(template)
    _write_conf(template, repo)
    for args in (["-U", *base], ["-Sy"]):
        proc = _pacman(template, *args, hookdir=top / "no-hooks")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    _zfs_host(template)
    return {"template": template, "repo": repo, "minor": _linux(pkgs, MINOR_VERSION, MINOR)}


# --- the root --------------------------------------------------------------------------------


def _binds() -> list[str]:
    """Host directories the chrooted hook needs at the same path: the checkout and Python."""
    wanted = [TOP, Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent]
    found: list[str] = []
    for path in sorted({str(p) for p in wanted}, key=len):
        if path == "/usr" or path.startswith("/usr/"):
            continue  # reached through /opt/hostusr (see _python_links)
        if not any(path == b or path.startswith(b + "/") for b in found):
            found.append(path)
    return found


def _arch_layout(root: Path) -> None:
    """Arch's usrmerge layout, with what a host binary needs linked to the host's /usr."""
    tree = HostTree(root)
    for inner in ("/usr/bin", "/usr/lib", "/usr/local/bin", "/var/lib/pacman", "/tmp", HOSTUSR):
        tree.host(inner).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/bin"), ("lib", "usr/lib")):
        tree.symlink(f"/{link}", target)
    tree.symlink("/lib64", "usr/lib")
    for host_dir in ("/lib64", "/lib"):  # the dynamic loader named in every host binary
        for loader in Path(host_dir).glob("ld-linux*.so*"):
            tree.symlink(f"/usr/lib/{loader.name}", _via_hostusr(os.path.realpath(loader)))
    for multiarch in Path("/usr/lib").glob("*-linux-gnu*"):
        tree.symlink(f"/usr/lib/{multiarch.name}", _via_hostusr(str(multiarch)))
    for path in _binds():
        tree.host(path).mkdir(parents=True, exist_ok=True)
    _python_links(tree)
    python = sys.executable
    tree.write(
        "/usr/bin/kzguard",
        f"#!{python}\nimport sys\nsys.path.insert(0, {str(TOP)!r})\n"
        "from kzguard.cli import main\nsys.exit(main())\n",
    ).chmod(0o755)
    fake = FAKE_ZFS.read_text().split("\n", 1)[1]
    tree.write("/usr/local/bin/zfs", f"#!{python}\n{fake}").chmod(0o755)


def _via_hostusr(path: str) -> str:
    assert path.startswith("/usr/"), path
    return HOSTUSR + path[len("/usr") :]


def _python_links(tree: HostTree) -> None:
    """A Python under the host's /usr (no pyenv) is reached through a link in R's /usr."""
    path = sys.executable
    for _ in range(40):
        if path.startswith("/usr/"):
            tree.symlink(path, _via_hostusr(path))
            return
        if not os.path.islink(path):
            return
        path = os.path.join(os.path.dirname(path), os.readlink(path))


def _write_conf(root: Path, repo: Path) -> None:
    HostTree(root).write(
        "/etc/pacman.conf",
        "[options]\nArchitecture = auto\nSigLevel = Never\nLocalFileSigLevel = Never\n"
        f"CacheDir = {root}/var/cache/pacman/pkg/\n\n[core]\nServer = file://{repo}\n",
    )


def _zfs_host(root: Path) -> None:
    """What pacman did not install: os-release, DKMS's modules and tree, / on ZFS."""
    tree = HostTree(root).os_release("arch").running(OLD)
    for name in ("zfs", "spl"):
        tree.module(OLD, name, "2.2.7-1", location="updates/dkms", modules_root="/usr/lib/modules")
    tree.dkms("zfs", "2.2.7", OLD)
    tree.write("/proc/self/mounts", f"{DATASET} / zfs rw,relatime,xattr,posixacl 0 0\n")


def _pacman(root: Path, *args: object, hookdir: Path, env: Optional[dict] = None):
    """pacman on ``root`` inside ``unshare -m`` with the host's /usr, checkout and Python bound."""
    hookdir.mkdir(exist_ok=True)
    mounts = [(os.path.realpath("/usr"), f"{root}{HOSTUSR}")]
    mounts += [(path, f"{root}{path}") for path in _binds()]
    script = "set -e\n" + "".join(
        f"mount --bind -o ro {shlex.quote(src)} {shlex.quote(dest)}\n" for src, dest in mounts
    )
    script += 'exec pacman "$@"\n'
    argv = ["--root", root, "--dbpath", f"{root}/var/lib/pacman", "--config"]
    argv += [f"{root}/etc/pacman.conf", "--hookdir", hookdir, "--noconfirm", "--noprogressbar"]
    python_home = {"PYTHONHOME": HOSTUSR} if sys.base_prefix.startswith("/usr") else {}
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "pacman", *map(str, argv), *map(str, args)],
        capture_output=True,
        text=True,
        env={**ENV, **python_home, **(env or {})},
        timeout=120,
    )


def _query(root: Path, name: str) -> str:
    argv = ["pacman", "--root", root, "--dbpath", f"{root}/var/lib/pacman"]
    argv += ["--config", f"{root}/etc/pacman.conf", "-Q", name]
    return _run(*argv, check=False).stdout.strip()


# --- the tests ---------------------------------------------------------------------------------


class Host:
    """One test's copy of the template root, with kzguard's hook installed."""

    def __init__(self, lab: dict[str, Path], path: Path):
        self.root = path / "root"
        shutil.copytree(lab["template"], self.root, symlinks=True)
        _write_conf(self.root, lab["repo"])
        self.hookdir = path / "hooks"
        self.hookdir.mkdir()
        shutil.copy(HOOK, self.hookdir / HOOK.name)

    def pacman(self, *args: object, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        return _pacman(self.root, *args, hookdir=self.hookdir, env=env)

    def query(self, name: str) -> str:
        return _query(self.root, name)

    def vmlinuz(self, release: str) -> bool:
        return (self.root / f"usr/lib/modules/{release}/vmlinuz").is_file()

    def zfs_calls(self) -> list[list[str]]:
        log = self.root / ZFS_LOG.lstrip("/")
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def state(self) -> dict:
        return json.loads((self.root / "var/lib/kzguard/state.json").read_text())


@pytest.fixture
def host(lab, tmp_path) -> Host:
    return Host(lab, tmp_path)


def test_a_kernel_newer_than_zfs_supports_is_refused(host):
    proc = host.pacman("-S", "linux")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "failed to run transaction hooks" in out
    assert f"kzguard: refusing kernel {NEW} (unsafe)" in out
    assert "ZFS 2.2.7 supports Linux 4.18 to 6.12.x" in out
    # nothing changed: pacman's database and the files
    assert host.query("linux") == f"linux {OLD_VERSION}"
    assert host.vmlinuz(OLD) and not host.vmlinuz(NEW)
    assert not (host.root / f"usr/lib/modules/{NEW}").exists()
    assert host.zfs_calls() == []  # no snapshot for a refused transaction
    (event,) = [e for e in host.state()["events"] if e["kind"] == "transaction-blocked"]
    assert event["kernels"] == [NEW] and event["manager"] == "pacman"


def test_a_supported_kernel_goes_through_after_a_snapshot(host, lab):
    proc = host.pacman("-U", lab["minor"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert host.query("linux") == f"linux {MINOR_VERSION}"
    assert host.vmlinuz(MINOR) and not host.vmlinuz(OLD)
    snapshot, listing = host.zfs_calls()
    reason = f"pacman-{MINOR}"
    assert snapshot[:-1] == [
        "snapshot",
        "-o",
        "org.kzguard:manager=pacman",
        "-o",
        f"org.kzguard:kernels={MINOR},{OLD}",
        "-o",
        f"org.kzguard:reason={reason}",
    ]
    assert re.fullmatch(rf"{DATASET}@kzguard-\d{{8}}T\d{{6}}Z-{reason}", snapshot[-1])
    assert listing[:2] == ["list", "-H"] and listing[-1] == DATASET
    assert f"took snapshot {snapshot[-1]}" in out


def test_a_new_kernel_with_the_zfs_that_supports_it_goes_through(host):
    proc = host.pacman("-S", "linux", "zfs-dkms", "zfs-utils")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert host.query("linux") == f"linux {NEW_VERSION}"
    assert host.query("zfs-dkms") == "zfs-dkms 2.3.1-1"
    assert host.vmlinuz(NEW)
    assert (host.root / "usr/src/zfs-2.3.1/META").is_file()
    (snapshot, *_) = host.zfs_calls()
    assert f"org.kzguard:kernels={NEW},{OLD}" in snapshot


def test_kzguard_allow_in_the_environment_lets_the_kernel_through_once(host):
    proc = host.pacman("-S", "linux", env={"KZGUARD_ALLOW": NEW})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"letting {NEW} through by an admin's override" in out
    assert host.query("linux") == f"linux {NEW_VERSION}"
    assert host.vmlinuz(NEW)


def test_kzguard_allow_in_the_state_file_is_used_up(host):
    allow = _run(sys.executable, "-m", "kzguard", "--root", host.root, "allow", NEW, cwd=TOP)
    assert "will let" in allow.stdout
    proc = host.pacman("-S", "linux")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert host.query("linux") == f"linux {NEW_VERSION}"
    assert host.state()["allow"] == {}


def test_hold_refuses_the_transaction_and_says_how_to_ignore_the_kernel(host):
    HostTree(host.root).config("on_unsupported_kernel: hold\n")
    proc = host.pacman("-S", "linux")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "failed to run transaction hooks" in out
    assert "pacman -Syu --ignore linux" in out and "IgnorePkg = linux" in out
    assert host.query("linux") == f"linux {OLD_VERSION}"
    assert not host.vmlinuz(NEW)


def test_removing_a_kernel_runs_the_same_hook_and_snapshots_first(host):
    proc = host.pacman("-R", "linux")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert host.query("linux") == ""
    assert not host.vmlinuz(OLD)
    (snapshot, _listing) = host.zfs_calls()
    assert f"org.kzguard:kernels={OLD}" in snapshot
    assert snapshot[-1].endswith(f"-pacman-{OLD}")


def test_a_transaction_without_kernel_or_zfs_does_not_run_the_hook(host):
    proc = host.pacman("-S", "hello")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert host.query("hello") == "hello 1.0-1"
    assert "kzguard" not in out
    assert not (host.root / "var/lib/kzguard").exists()
    assert host.zfs_calls() == []
