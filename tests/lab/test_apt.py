"""Real apt-get transactions with kzguard's Pre-Install-Pkgs hook installed, in alternate roots.

Follows ../shared/lab/README.md: fake packages built by ``dpkg-deb --root-owner-group --build``,
a flat repo indexed by ``dpkg-scanpackages`` and ``apt-ftparchive release``, and ``APT_CONFIG``
pointing at a file that sends apt and dpkg into the root R (``Dir``, ``Dir::State::status``,
``DPkg::Options`` with ``--root``, ``--admindir``, ``--force-script-chrootless``, ``--log``).
The hook is ``hooks/apt/80kzguard`` copied into R's ``apt.conf.d`` with ``/usr/bin/kzguard``
rewritten to this venv's ``kzguard``; apt runs it on the host, and it finds R from the stream.

R looks like a Debian 12 ZFS host to kzguard (:func:`tests.scenarios.debian_dkms`: kernel
6.1.0-28-amd64 with its zfs and spl modules, ``/usr/src/zfs-2.2.7/META`` with Linux-Maximum
6.12, the DKMS entry) and dpkg's status says so too (zfs-dkms 2.2.7, the kernel and its meta
package). zfs-dkms 2.3.1 (Linux up to 6.13) waits in a ``NotAutomatic`` suite, as backports do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

from devtools import bootfiles
from devtools.hostbuilder import HostTree
from tests.scenarios import debian_dkms, ubuntu_prebuilt
from tests.tools import need
from tests.tools import run as _run

pytestmark = pytest.mark.real

TOP = Path(__file__).resolve().parents[2]
SNIPPET = TOP / "hooks" / "apt" / "80kzguard"
KZGUARD = Path(sys.executable).parent / "kzguard"
TOOLS = ("apt-get", "dpkg", "dpkg-deb", "dpkg-scanpackages", "apt-ftparchive")

OLD, GOOD, NEW = "6.1.0-28-amd64", "6.12.9-amd64", "6.13.2-amd64"
JOINT = "6.13.4-amd64"  # upgraded together with zfs-dkms, whose postinst builds its module
POSTINST_HOOK = TOP / "hooks" / "postinst.d" / "kzguard"
GRUBENV = "/boot/grub/grubenv"
UBUNTU_NEW = "6.8.0-50-generic"
MAINLINE = "6.8.12-060812-generic"  # a kernel.ubuntu.com build: its modules lack zfs
DATASET = "rpool/ROOT/debian"


class Deb:
    def __init__(
        self,
        name: str,
        version: str,
        depends: str = "",
        files: tuple[str, ...] = (),
        suite: str = "main",
        *,
        build: Optional[Callable[[HostTree], object]] = None,
        scripts: Optional[dict[str, str]] = None,
    ):
        self.name, self.version, self.depends, self.files, self.suite = (
            name,
            version,
            depends,
            files,
            suite,
        )
        self.build = build  # fills the package's tree beside ``files``
        self.scripts = scripts or {}  # maintainer scripts: preinst, postinst...


def _kernel(release: str, version: str) -> Deb:
    return Deb(f"linux-image-{release}", version, files=(f"/boot/vmlinuz-{release}",))


def _modules(release: str, version: str, *, zfs: bool) -> Deb:
    base = f"/lib/modules/{release}/kernel"
    files = (f"{base}/fs/ext4/ext4.ko.zst", *((f"{base}/zfs/zfs.ko.zst",) if zfs else ()))
    return Deb(f"linux-modules-{release}", version, files=files)


KERNEL_POSTINST = """#!/bin/sh
# as linux-image-*'s postinst: the kernel hooks, in dpkg's root (--force-script-chrootless)
set -e
[ "$1" = configure ] || exit 0
if [ -d "$DPKG_ROOT/etc/kernel/postinst.d" ]; then
    DEB_MAINT_PARAMS="$*" run-parts --report --exit-on-error --arg={release} \\
        --arg=/boot/vmlinuz-{release} "$DPKG_ROOT/etc/kernel/postinst.d"
fi
"""
ZFS_PREINST = """#!/bin/sh
# what upgrading zfs-dkms does at unpack (the old version's prerm: `dkms remove --all`):
# the old version's modules leave every kernel
set -e
rm -f "$DPKG_ROOT"/lib/modules/*/updates/dkms/zfs.ko "$DPKG_ROOT"/lib/modules/*/updates/dkms/spl.ko
rm -rf "$DPKG_ROOT/var/lib/dkms/zfs/2.2.7" "$DPKG_ROOT/usr/src/zfs-2.2.7"
"""
ZFS_POSTINST = """#!/bin/sh
# what DKMS does when zfs-dkms is configured: build and install the new version for every
# kernel it can (the builds are staged in the package, made by gcc when the repo was made)
set -e
[ "$1" = configure ] || exit 0
stage="$DPKG_ROOT/usr/lib/kzlab/zfs-{version}"
for built in "$stage"/lib/modules/*; do
    release="${{built##*/}}"
    [ -d "$DPKG_ROOT/lib/modules/$release/kernel" ] || continue
    cp -a "$built/." "$DPKG_ROOT/lib/modules/$release/"
    echo "zfs-dkms {version}: DKMS installed zfs for $release"
done
mkdir -p "$DPKG_ROOT/var/lib/dkms"
cp -a "$stage/var/lib/dkms/." "$DPKG_ROOT/var/lib/dkms/"
"""


def _joint_kernel(release: str, version: str) -> Deb:
    def build(tree: HostTree) -> None:
        tree.kernel(release)
        tree.boot_kernel(release, "initrd.img-{}")

    return Deb(
        f"linux-image-{release}",
        version,
        build=build,
        scripts={"postinst": KERNEL_POSTINST.format(release=release)},
    )


def _zfs_dkms(version: str, linux_max: str, built: tuple[str, ...], failed: tuple[str, ...]) -> Deb:
    """zfs-dkms ``version`` whose DKMS builds the module for ``built`` and fails for ``failed``;
    it depends on the joint kernel, so dpkg configures the kernel first (as the real order)."""

    def build(tree: HostTree) -> None:
        tree.zfs_source(version, "4.18", linux_max)
        stage = HostTree(tree.host(f"/usr/lib/kzlab/zfs-{version}")).os_release("debian12")
        stage.zfs_source(version, "4.18", linux_max)
        for release in built:
            for name in ("zfs", "spl"):
                stage.module(release, name, f"{version}-1")
            stage.dkms("zfs", version, release)
        for release in failed:
            stage.dkms("zfs", version, release, state="build-failed")

    return Deb(
        "zfs-dkms",
        f"{version}-1",
        f"linux-image-{JOINT}",
        suite="backports",
        build=build,
        scripts={"preinst": ZFS_PREINST, "postinst": ZFS_POSTINST.format(version=version)},
    )


DEBS = [
    _kernel(GOOD, "6.12.9-1"),
    _kernel(NEW, "6.13.2-1"),
    Deb("linux-image-amd64", "6.13.2-1", f"linux-image-{NEW} (= 6.13.2-1)"),
    Deb("foo", "2.0"),
    Deb("zfs-dkms", "2.3.1-1", files=("/usr/src/zfs-2.3.1/dkms.conf",), suite="backports"),
    _kernel(UBUNTU_NEW, "6.8.0-50.51"),
    _modules(UBUNTU_NEW, "6.8.0-50.51", zfs=True),
    Deb(f"linux-image-unsigned-{MAINLINE}", "6.8.12-060812.202405301241"),
    _modules(MAINLINE, "6.8.12-060812.202405301241", zfs=False),
    _joint_kernel(JOINT, "6.13.4-1"),
    _zfs_dkms("2.3.2", "6.14", built=(OLD, JOINT), failed=()),  # the end state is good
    _zfs_dkms("2.3.3", "6.15", built=(OLD,), failed=(JOINT,)),  # the build fails for JOINT
]
DEBIAN_STATUS = [
    ("dpkg", "1.21.22", ""),
    (f"linux-image-{OLD}", "6.1.119-1", ""),
    ("linux-image-amd64", "6.1.119-1", f"linux-image-{OLD} (= 6.1.119-1)"),
    ("zfs-dkms", "2.2.7-1~bpo12+1", ""),
    ("foo", "1.0", ""),
]
UBUNTU_STATUS = [("dpkg", "1.23.3ubuntu0.1", ""), ("foo", "1.0", "")]


def _build(deb: Deb, out: Path) -> None:
    work = out / "build" / deb.name
    tree = HostTree(work)
    md5 = []
    for inner in (*deb.files, f"/usr/share/doc/{deb.name}/copyright"):
        data = f"{deb.name} {inner}\n".encode()
        tree.write(inner, data)
        md5.append(f"{hashlib.md5(data).hexdigest()}  {inner.lstrip('/')}\n")
    control = (
        f"Package: {deb.name}\nVersion: {deb.version}\nArchitecture: amd64\n"
        "Maintainer: kzguard tests <tests@kzguard.invalid>\nDescription: a kzguard test package\n"
    )
    control += f"Depends: {deb.depends}\n" if deb.depends else ""
    if deb.build is not None:
        deb.build(tree)
    tree.write("/DEBIAN/control", control)
    tree.write("/DEBIAN/md5sums", "".join(md5))
    for script, body in deb.scripts.items():
        tree.write(f"/DEBIAN/{script}", body).chmod(0o755)
    target = out / deb.suite / f"{deb.name}_{deb.version}_amd64.deb"
    target.parent.mkdir(parents=True, exist_ok=True)
    _run("dpkg-deb", "--root-owner-group", "--build", work, target)
    shutil.rmtree(work)


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> Path:
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip(f"not installed: {' '.join(missing)}")
    out = tmp_path_factory.mktemp("apt-repos")
    for deb in DEBS:
        _build(deb, out)
    for suite in ("main", "backports"):
        repo = out / suite
        packages = _run("dpkg-scanpackages", "--multiversion", ".", cwd=repo).stdout
        (repo / "Packages").write_text(packages)
        opts = ["-o", f"APT::FTPArchive::Release::Suite={suite}"]
        if suite == "backports":
            opts += ["-o", "APT::FTPArchive::Release::NotAutomatic=yes"]
        release = _run("apt-ftparchive", *opts, "release", ".", cwd=repo).stdout
        (repo / "Release").write_text(release)
    return out


class Lab:
    """One root R with apt pointed at it and kzguard's hook installed."""

    def __init__(self, top: Path, tree: HostTree, repos: Path, status: list[tuple[str, ...]]):
        self.top = top
        self.tree = tree
        self.root = r = tree.path
        for sub in (
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/log",
        ):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        paragraphs = []
        for name, version, depends in status:
            text = f"Package: {name}\nStatus: install ok installed\nArchitecture: amd64\n"
            text += f"Version: {version}\nMaintainer: t <t@kzguard.invalid>\nDescription: t\n"
            paragraphs.append(text + (f"Depends: {depends}\n" if depends else ""))
            (self.root / f"var/lib/dpkg/info/{name}.list").write_text("")
        tree.write("/var/lib/dpkg/status", "\n".join(paragraphs))
        sources = "".join(f"deb [trusted=yes] file:{repos / s} ./\n" for s in ("main", "backports"))
        tree.write("/etc/apt/sources.list", sources)
        # this venv's kzguard, not the package's: no test for the package's file list, and the
        # end hook judges R (the Pre-Install-Pkgs hook records only then)
        snippet = re.sub(
            r'DPkg::Post-Invoke \{ "[^"]*"; \};',
            f'DPkg::Post-Invoke {{ "{KZGUARD} --root {r} hook post-transaction apt"; }};',
            SNIPPET.read_text(),
        )
        snippet = snippet.replace("/usr/bin/kzguard", str(KZGUARD))
        tree.write("/etc/apt/apt.conf.d/80kzguard", snippet)
        self.conf = top / "apt.conf"
        self.conf.write_text(
            f'Dir "{r}/";\nDir::State::status "{r}/var/lib/dpkg/status";\n'
            f'Dir::Etc::Parts "{r}/etc/apt/apt.conf.d";\nDir::Bin::dpkg "/usr/bin/dpkg";\n'
            'APT::Architecture "amd64";\n'
            f'DPkg::Options {{ "--root={r}"; "--admindir={r}/var/lib/dpkg"; '
            f'"--force-script-chrootless"; "--log={r}/var/log/dpkg.log"; }};\n'
        )
        self.apt("update")

    def apt(self, *args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
        return _run(
            "apt-get",
            "-y",
            "-q",
            *args,
            check=False,
            env={"APT_CONFIG": str(self.conf), **self.env, **(env or {})},
        )

    @property
    def env(self) -> dict[str, str]:
        """What the kernel hooks need: this venv's ``kzguard`` first on PATH."""
        return {"PATH": f"{KZGUARD.parent}:{os.environ['PATH']}", "PYTHONDONTWRITEBYTECODE": "1"}

    def kzguard(self, *args: str) -> subprocess.CompletedProcess:
        return _run(KZGUARD, "--root", self.root, *args, check=False)

    def installed(self) -> dict[str, str]:
        out = _run(
            "dpkg-query",
            f"--admindir={self.root}/var/lib/dpkg",
            "-W",
            "-f",
            "${Package} ${Version} ${db:Status-Abbrev}\n",
        ).stdout
        rows = [line.split() for line in out.splitlines()]
        return {row[0]: row[1] for row in rows if len(row) == 3 and row[2] == "ii"}

    @property
    def status(self) -> bytes:
        return (self.root / "var/lib/dpkg/status").read_bytes()

    @property
    def preferences(self) -> Path:
        return self.root / "etc/apt/preferences.d/kzguard"


def _out(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


@pytest.fixture
def debian(repos, tmp_path) -> Lab:
    return Lab(tmp_path, debian_dkms(tmp_path / "root"), repos, DEBIAN_STATUS)


@pytest.fixture
def ubuntu(repos, tmp_path) -> Lab:
    return Lab(tmp_path, ubuntu_prebuilt(tmp_path / "root"), repos, UBUNTU_STATUS)


def _refused(lab: Lab, proc: subprocess.CompletedProcess, before: bytes) -> str:
    out = _out(proc)
    assert proc.returncode == 100, out
    assert "Unpacking" not in out
    assert "returned an error code (1)" in out
    assert lab.status == before
    return out


# --- block (the default) -----------------------------------------------------------------------


def test_unsupported_kernel_is_refused_before_unpacking(debian):
    before = debian.status
    out = _refused(debian, debian.apt("install", f"linux-image-{NEW}"), before)
    assert f"refusing kernel {NEW} (unsafe)" in out
    assert "Linux 6.13 is newer than ZFS 2.2.7 supports (up to 6.12" in out
    assert "ZFS 2.2.7 supports Linux 4.18 to 6.12.x" in out
    assert f"`kzguard allow {NEW}` then run apt-get -y -q install linux-image-{NEW} again" in out
    assert f"linux-image-{NEW}" not in debian.installed()


def test_supported_kernel_goes_through(debian):
    proc = debian.apt("install", f"linux-image-{GOOD}")
    assert proc.returncode == 0, _out(proc)
    assert debian.installed()[f"linux-image-{GOOD}"] == "6.12.9-1"
    assert "refusing" not in _out(proc)
    assert "kzguard: the root file system is not on ZFS: no snapshot taken" in _out(proc)


def test_kernel_with_the_zfs_that_supports_it_goes_through(debian):
    proc = debian.apt("install", f"linux-image-{NEW}", "zfs-dkms=2.3.1-1")
    assert proc.returncode == 0, _out(proc)
    installed = debian.installed()
    assert installed[f"linux-image-{NEW}"] == "6.13.2-1"
    assert installed["zfs-dkms"] == "2.3.1-1"


def test_override_lets_one_kernel_through_once(debian):
    proc = debian.apt("install", f"linux-image-{NEW}", env={"KZGUARD_ALLOW": NEW})
    assert proc.returncode == 0, _out(proc)
    assert f"letting {NEW} through by an admin's override" in _out(proc)
    assert f"linux-image-{NEW}" in debian.installed()
    assert debian.apt("purge", f"linux-image-{NEW}").returncode == 0

    allow = debian.kzguard("allow", NEW)
    assert allow.returncode == 0, allow.stderr
    proc = debian.apt("install", f"linux-image-{NEW}")
    assert proc.returncode == 0, _out(proc)
    assert debian.kzguard("allow", "--list").stdout == ""  # used up
    assert debian.apt("purge", f"linux-image-{NEW}").returncode == 0

    before = debian.status
    _refused(debian, debian.apt("install", f"linux-image-{NEW}"), before)


def test_snapshot_before_the_kernel_goes_in(debian, fake_zfs):
    debian.tree.write("/proc/self/mounts", f"{DATASET} / zfs rw,relatime,xattr,noacl 0 0\n")
    proc = debian.apt("install", f"linux-image-{GOOD}")
    assert proc.returncode == 0, _out(proc)
    snap = [c for c in fake_zfs.calls() if c[0] == "snapshot"]
    assert len(snap) == 1
    *options, name = snap[0][1:]
    assert options == [
        "-o",
        "org.kzguard:manager=apt",
        "-o",
        f"org.kzguard:kernels={GOOD}",
        "-o",
        f"org.kzguard:reason=apt-{GOOD}",
    ]
    assert name.startswith(f"{DATASET}@kzguard-") and name.endswith(f"-apt-{GOOD}")
    assert [s["name"] for s in fake_zfs.snapshots()] == [name]
    assert f"took snapshot {name}" in _out(proc)


def test_transaction_without_kernel_or_zfs_runs_no_check(debian):
    debian.tree.config("on_unsupported_kernel: [\n")  # would refuse everything if it were read
    proc = debian.apt("-o", "Debug::RunScripts=true", "install", "foo")
    out = _out(proc)
    assert proc.returncode == 0, out
    assert f"Running external script with list of all .deb file: '{KZGUARD} hook apt'" in out
    assert debian.installed()["foo"] == "2.0"
    assert not (debian.root / "var/lib/kzguard").exists()
    assert "kzguard:" not in out


# --- hold --------------------------------------------------------------------------------------


def test_hold_pins_the_kernel_and_the_next_run_keeps_it_back(debian):
    debian.tree.config("on_unsupported_kernel: hold\n")
    before = debian.status
    out = _refused(debian, debian.apt("dist-upgrade"), before)
    assert f"holding back kernel {NEW} (unsafe)" in out
    assert "pinned Linux 6.13 kernels (linux-image-6.13.*" in out
    assert "run `apt upgrade` again: apt now keeps the pinned packages back" in out
    prefs = debian.preferences.read_text()
    assert prefs.startswith("# Owned by kzguard")
    assert f"Explanation: kzguard hold series 6.13 for {NEW} (kernel-too-new)" in prefs
    assert "Pin: version *\nPin-Priority: -1\n" in prefs
    pins = json.loads((debian.root / "var/lib/kzguard/state.json").read_text())["pins"]
    assert list(pins) == ["apt:series 6.13"]

    proc = debian.apt("dist-upgrade")
    assert proc.returncode == 0, _out(proc)
    assert "kept back" in proc.stdout and "linux-image-amd64" in proc.stdout
    installed = debian.installed()
    assert installed["foo"] == "2.0"
    assert installed["linux-image-amd64"] == "6.1.119-1"
    assert f"linux-image-{NEW}" not in installed
    assert debian.preferences.exists()

    # ZFS 2.3.1 supports Linux 6.13: the apt run that installs it lifts the pin
    proc = debian.apt("install", "zfs-dkms=2.3.1-1")
    assert proc.returncode == 0, _out(proc)
    assert "lifted the pin on Linux 6.13 kernels: 6.13.2-amd64 is supported now" in _out(proc)
    assert not debian.preferences.exists()
    state = json.loads((debian.root / "var/lib/kzguard/state.json").read_text())
    assert state["pins"] == {}
    assert [e["kind"] for e in state["events"]][-2:] == ["pin-added", "pin-removed"]
    simulated = debian.apt("-s", "dist-upgrade").stdout
    assert f"Inst linux-image-{NEW} " in simulated


# --- Ubuntu: the module ships prebuilt in linux-modules-<release> ----------------------------


def test_ubuntu_kernel_needs_its_modules_package(ubuntu):
    before = ubuntu.status
    out = _refused(ubuntu, ubuntu.apt("install", f"linux-image-{UBUNTU_NEW}"), before)
    assert f"refusing kernel {UBUNTU_NEW} (unsafe)" in out
    assert f"no package in the transaction ships a zfs module for {UBUNTU_NEW}" in out
    assert "way out: install it in one transaction with the package that ships its zfs" in out

    mainline = (f"linux-image-unsigned-{MAINLINE}", f"linux-modules-{MAINLINE}")
    out = _refused(ubuntu, ubuntu.apt("install", *mainline), before)
    assert f"refusing kernel {MAINLINE} (unsafe)" in out

    proc = ubuntu.apt("install", f"linux-image-{UBUNTU_NEW}", f"linux-modules-{UBUNTU_NEW}")
    assert proc.returncode == 0, _out(proc)
    installed = ubuntu.installed()
    assert f"linux-image-{UBUNTU_NEW}" in installed and f"linux-modules-{UBUNTU_NEW}" in installed


# --- the post-install verdict on the transaction's end state ------------------------------------


@pytest.fixture
def joint(repos, tmp_path) -> Lab:
    """The Debian lab with GRUB (``GRUB_DEFAULT=saved``, saved_entry on the joint kernel, as
    the admin's default would be once it is installed) and /etc/kernel/postinst.d/kzguard."""
    need("grub-editenv", "run-parts")
    tree = debian_dkms(tmp_path / "root")
    tree.boot_kernel(OLD, "initrd.img-{}")
    tree.write("/etc/default/grub", bootfiles.default_grub("saved"))
    tree.write("/boot/grub/grub.cfg", bootfiles.debian_grub_cfg([OLD, JOINT]))
    tree.grubenv(GRUBENV, saved_entry=bootfiles.debian_entry_id(JOINT))
    lab = Lab(tmp_path, tree, repos, DEBIAN_STATUS)
    # dpkg runs maintainer scripts with PATH=/usr/sbin:/usr/bin:/sbin:/bin: name this venv's
    # kzguard where the packaged hook names the one on PATH
    text = POSTINST_HOOK.read_text().replace("command -v kzguard", f"command -v {KZGUARD}")
    assert 'exec kzguard "$@"' in text
    tree.write("/etc/kernel/postinst.d/kzguard", text.replace("exec kzguard", f"exec {KZGUARD}"))
    tree.host("/etc/kernel/postinst.d/kzguard").chmod(0o755)
    return lab


def _saved_entry(lab: Lab) -> str:
    out = _run("grub-editenv", lab.tree.host(GRUBENV), "list").stdout
    return dict(line.split("=", 1) for line in out.splitlines())["saved_entry"]


def _state(lab: Lab) -> dict:
    return json.loads((lab.root / "var/lib/kzguard/state.json").read_text())


def test_joint_upgrade_is_judged_on_its_end_state(joint):
    """The order of the real bookworm-backports upgrade: the kernel is configured (its
    postinst.d runs) before zfs-dkms, whose postinst builds the module. The check inside the
    run fails; it only says so; the final check after dpkg passes: no pin, default kept."""
    proc = joint.apt("install", f"linux-image-{JOINT}", "zfs-dkms=2.3.2-1")
    out = _out(proc)
    assert proc.returncode == 0, out
    provisional = out.index(f"kzguard: provisional: kernel {JOINT} would fail the post-install")
    assert "apt is still configuring packages" in out
    assert "nothing changed yet; the final check runs when apt finishes" in out
    built = out.index(f"zfs-dkms 2.3.2: DKMS installed zfs for {JOINT}")
    final = out.index(f"kzguard: apt has finished: the final post-install check of {JOINT}")
    assert provisional < built < final
    passed = f"kzguard: kernel {JOINT} passed the post-install check: zfs 2.3.2-1, spl 2.3.2-1"
    assert passed in out[final:]
    assert "do not reboot" not in out and "pinned" not in out
    assert not joint.preferences.exists()
    state = _state(joint)
    assert state["pins"] == {} and "transaction" not in state
    assert state["last_good"] == JOINT
    assert _saved_entry(joint) == bootfiles.debian_entry_id(JOINT)  # not moved


def test_joint_upgrade_whose_end_state_is_bad_pins_and_keeps_the_default(joint):
    proc = joint.apt("install", f"linux-image-{JOINT}", "zfs-dkms=2.3.3-1")
    out = _out(proc)
    assert proc.returncode == 0, out
    final = out.index(f"kzguard: apt has finished: the final post-install check of {JOINT}")
    assert out.index(f"kzguard: provisional: kernel {JOINT} would fail") < final
    assert f"kzguard: kernel {JOINT} failed the post-install check (unsafe)" in out[final:]
    assert f"kzguard: kept {OLD} as the boot default" in out[final:]
    assert _saved_entry(joint) == bootfiles.debian_entry_id(OLD)
    assert f"linux-image-{JOINT}" in joint.preferences.read_text()
    state = _state(joint)
    assert state["pins"][JOINT]["auto"] is True and "transaction" not in state


def test_dpkg_without_apt_still_gets_a_check_that_acts(joint, repos):
    """No apt, so no end hook: the post-install hook acts at once and says that dpkg may still
    configure packages after it; a check by hand once dpkg is done lifts what it did."""
    debs = [
        repos / "main" / f"linux-image-{JOINT}_6.13.4-1_amd64.deb",
        repos / "backports" / "zfs-dkms_2.3.2-1_amd64.deb",
    ]
    r = joint.root
    proc = _run(
        "dpkg", f"--root={r}", f"--admindir={r}/var/lib/dpkg", "--force-script-chrootless",
        f"--log={r}/var/log/dpkg.log", "-i", *debs, check=False, env=joint.env,
    )  # fmt: skip
    out = _out(proc)
    assert proc.returncode == 0, out
    # zfs-dkms is unpacked (the old modules gone) but not configured: what the issue saw
    assert f"kzguard: kernel {JOINT} failed the post-install check (" in out
    assert "no other installed kernel passes the check" in out and "do not reboot" in out
    assert "provisional" not in out.split("failed the post-install check")[0]
    assert "kzguard: provisional: dpkg runs this without apt, and may still configure" in out
    assert f"pinned kernel {JOINT}" in out
    assert JOINT in _state(joint)["pins"]
    again = joint.kzguard("hook", "post-install", JOINT)
    assert again.returncode == 0, _out(again)
    assert f"kernel {JOINT} passed the post-install check" in again.stderr
    assert f"lifted the pin on kernel {JOINT}" in again.stderr
    assert _state(joint)["pins"] == {} and not joint.preferences.exists()
