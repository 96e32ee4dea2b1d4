"""dnf and dnf5 on fake packages: real dnf transactions with the plugin, dnf5's actions file run
as the libdnf5 actions plugin runs it.

dnf 4: rpms built with rpmbuild, repositories made with createrepo_c, ``dnf --installroot``
with ``hooks/dnf`` as its plugin path; the installroot is a Fedora ZFS host laid out with
:class:`~devtools.hostbuilder.HostTree` (kernel 6.12.9 with zfs and spl modules, zfs-dkms 2.2.7
whose META stops at Linux 6.12) and its own rpmdb, which starts empty.

dnf5 is not in Debian 12: :class:`ActionsPlugin` parses ``hooks/dnf5/*.actions`` and runs each
command the way ``libdnf5-plugin-actions`` does in plain mode (its ``actions.cpp``: colon
fields, arguments split on unescaped spaces, ``${...}`` substituted per package, then
unescaped, duplicates dropped, ``tmp.`` output lines kept for later commands, ``raise_error``),
so the shell in the file and the lines it feeds ``kzguard hook dnf5`` are the real ones.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import NamedTuple, Optional

import pytest

from devtools.hostbuilder import HostTree
from kzguard.context import Context
from kzguard.managers import dnf5
from kzguard.managers.dnf import Package, build_transaction, kernel_release
from kzguard.root import Root

try:
    import tomllib
except ImportError:  # Python < 3.11: the test extra installs the tomli backport
    import tomli as tomllib

TOP = Path(__file__).resolve().parents[2]
RUNNING = "6.12.9-200.fc41.x86_64"
NEXT = "6.12.10-200.fc41.x86_64"
NEW = "6.13.2-200.fc41.x86_64"
MAIN_ACTIONS = TOP / "hooks" / "dnf5" / "kzguard.actions"
LEGACY_ACTIONS = TOP / "hooks" / "dnf5" / "legacy" / "kzguard.actions"
SITE = sysconfig.get_paths()["purelib"]  # yaml and packaging for dnf's own Python

_TOOLS = ("dnf", "rpm", "rpmbuild", "createrepo_c")
_MISSING = [t for t in _TOOLS if shutil.which(t) is None]
needs_dnf = pytest.mark.skipif(
    bool(_MISSING) or os.geteuid() != 0,
    reason=f"needs root and {', '.join(_MISSING) or 'nothing'} (.ci/run installs them)",
)
needs_rpm = pytest.mark.skipif(
    shutil.which("rpmbuild") is None or shutil.which("createrepo_c") is None,
    reason="needs rpmbuild and createrepo_c",
)

SPEC = """Name: {name}
Version: {version}
Release: {release}
Summary: kzguard lab package
License: MIT
BuildArch: {arch}
%description
A package for kzguard's dnf tests.
%install
cp -a {tree}/. %{{buildroot}}/
%files
{files}
"""

META = """Meta:          1
Name:          zfs
Branch:        1.0
Version:       {version}
Release:       1
Release-Tags:  relext
License:       CDDL
Author:        OpenZFS
Linux-Maximum: {linux_max}
Linux-Minimum: 4.18
"""


def kernel(version: str) -> tuple:
    files = {f"/lib/modules/{version}-200.fc41.x86_64/vmlinuz": "kernel\n"}
    return ("kernel-core", version, "200.fc41", "x86_64", files)


ZFS_META = {"/usr/src/zfs-2.3.1/META": META.format(version="2.3.1", linux_max="6.13")}
PACKAGES = {
    "kernel-core-6.12.9": kernel("6.12.9"),
    "kernel-core-6.12.10": kernel("6.12.10"),
    "kernel-core-6.13.2": kernel("6.13.2"),
    "zfs-dkms-2.3.1": ("zfs-dkms", "2.3.1", "1.fc41", "noarch", ZFS_META),
    "zfs-2.3.1": ("zfs", "2.3.1", "1.fc41", "x86_64", {"/usr/share/doc/zfs/lab": "zfs\n"}),
    "tool-1.0": ("tool", "1.0", "1.fc41", "noarch", {"/usr/share/tool/version": "1.0\n"}),
    "tool-1.1": ("tool", "1.1", "1.fc41", "noarch", {"/usr/share/tool/version": "1.1\n"}),
}  # fmt: skip
REPOS = {
    "lab": ("kernel-core-6.12.10", "kernel-core-6.13.2", "zfs-dkms-2.3.1", "zfs-2.3.1", "tool-1.0"),
    "old": ("kernel-core-6.12.9", "tool-1.0"),
    "new": ("kernel-core-6.13.2", "tool-1.1"),
}


def build_rpm(top: Path, name: str, version: str, release: str, arch: str, files: dict) -> Path:
    """One rpm holding ``files`` (in-root path -> text; or a Path: that directory's tree),
    built by rpmbuild."""
    tree = top / "trees" / f"{name}-{version}"
    for inner, text in files.items():
        target = tree / inner.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, Path):
            shutil.copytree(text, target, symlinks=True)
        else:
            target.write_text(text)
    spec = top / f"{name}-{version}.spec"
    listed = "\n".join(files)
    spec.write_text(
        SPEC.format(name=name, version=version, release=release, arch=arch, tree=tree, files=listed)
    )
    defines = {"_topdir": top / "build", "_build_id_links": "none"}
    args = [a for k, v in defines.items() for a in ("--define", f"{k} {v}")]
    subprocess.run(["rpmbuild", "-bb", "--quiet", *args, spec], check=True, capture_output=True)
    return top / "build" / "RPMS" / arch / f"{name}-{version}-{release}.{arch}.rpm"


def fedora_zfs_host(path: Path) -> HostTree:
    """Fedora 41 on kernel 6.12.9 with zfs-dkms 2.2.7 (Linux up to 6.12) built for it."""
    tree = HostTree(path).os_release("fedora41").running(RUNNING)
    tree.zfs_source("2.2.7", "4.18", "6.12")
    tree.kernel(RUNNING)
    for name in ("zfs", "spl"):
        tree.module(RUNNING, name, "2.2.7-1", location="extra", compression="xz")
    tree.dkms("zfs", "2.2.7", RUNNING)
    return tree


class DnfLab:
    """Packages, repositories and a host template built once; one installroot per test."""

    def __init__(self, base: Path):
        self.base = base
        self.template = base / "template"
        fedora_zfs_host(self.template)
        self.plugins = base / "plugins"
        self.plugins.mkdir()
        conf = (TOP / "hooks" / "dnf" / "kzguard.conf").read_text()
        libdir = os.pathsep.join([str(TOP), str(SITE)])
        (self.plugins / "kzguard.conf").write_text(f"{conf}libdir = {libdir}\n")
        built = {key: build_rpm(base / "rpm", *spec) for key, spec in PACKAGES.items()}
        self.repos = {}
        for repo, keys in REPOS.items():
            directory = base / "repos" / repo
            directory.mkdir(parents=True)
            for key in keys:
                shutil.copy(built[key], directory)
            subprocess.run(["createrepo_c", "--quiet", directory], check=True)
            self.repos[repo] = directory

    def root(self, tmp_path: Path) -> HostTree:
        target = tmp_path / "root"
        shutil.copytree(self.template, target, symlinks=True)
        return HostTree(target)

    def dnf(self, root: HostTree, repo: str, *args: str, env: Optional[dict] = None):
        argv = [
            "dnf", "-y", f"--installroot={root.path}", "--releasever=41", "--disablerepo=*",
            f"--repofrompath={repo},{self.repos[repo]}", f"--setopt={repo}.gpgcheck=0",
            f"--setopt={repo}.metadata_expire=0", f"--setopt=pluginpath={TOP / 'hooks' / 'dnf'}",
            f"--setopt=pluginconfpath={self.plugins}", *args,
        ]  # fmt: skip
        environ = {**os.environ, **(env or {})}
        proc = subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=120)
        proc.output = proc.stdout + proc.stderr
        return proc


def installed(root: HostTree) -> set[str]:
    out = subprocess.run(
        ["rpm", "--root", str(root.path), "-qa", "--qf", "%{NAME}-%{VERSION}\n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


@pytest.fixture(scope="module")
def dnf_lab(tmp_path_factory) -> DnfLab:
    if _MISSING or os.geteuid() != 0:
        pytest.skip("needs root, dnf, rpm, rpmbuild and createrepo_c")
    return DnfLab(tmp_path_factory.mktemp("dnf-lab"))


# ---- dnf 4: real transactions -----------------------------------------------------------


@pytest.mark.real
@needs_dnf
def test_unsupported_kernel_is_refused_before_anything_is_installed(dnf_lab, tmp_path):
    root = dnf_lab.root(tmp_path)
    proc = dnf_lab.dnf(root, "lab", "install", "kernel-core-6.13.2")
    assert proc.returncode == 1, proc.output
    assert f"Error: kzguard: refusing kernel {NEW} (unsafe)" in proc.stderr
    assert "ZFS 2.2.7 supports Linux 4.18 to 6.12.x (/usr/src/zfs-2.2.7/META)" in proc.stderr
    assert "way out: upgrade ZFS" in proc.stderr
    assert f"kzguard allow {NEW}" in proc.stderr
    assert "kernel-core-6.13.2" not in installed(root)
    assert not root.host(f"/lib/modules/{NEW}").exists()


@pytest.mark.real
@needs_dnf
def test_supported_kernel_goes_through(dnf_lab, tmp_path):
    root = dnf_lab.root(tmp_path)
    proc = dnf_lab.dnf(root, "lab", "install", "kernel-core-6.12.10")
    assert proc.returncode == 0, proc.output
    assert "kernel-core-6.12.10" in installed(root)
    assert "the root file system is not on ZFS: no snapshot taken" in proc.output


@pytest.mark.real
@needs_dnf
def test_hold_mode_skips_only_the_kernel(dnf_lab, tmp_path):
    root = dnf_lab.root(tmp_path)
    setup = dnf_lab.dnf(root, "old", "install", "kernel-core-6.12.9", "tool-1.0")
    assert setup.returncode == 0, setup.output
    root.config("on_unsupported_kernel: hold\n")
    proc = dnf_lab.dnf(root, "new", "upgrade")
    assert proc.returncode == 0, proc.output
    assert f"kzguard: holding back kernel {NEW}: Linux 6.13 is newer than ZFS 2.2.7" in proc.output
    assert installed(root) >= {"tool-1.1", "kernel-core-6.12.9"}
    assert "kernel-core-6.13.2" not in installed(root)


@pytest.mark.real
@needs_dnf
def test_a_kernel_pinned_in_the_state_file_is_never_offered(dnf_lab, tmp_path):
    root = dnf_lab.root(tmp_path)
    state = {"format": 1, "pins": {NEXT: {"by": "admin"}}, "allow": {}, "boot": {}, "events": []}
    root.write("/var/lib/kzguard/state.json", json.dumps(state))
    proc = dnf_lab.dnf(root, "lab", "install", "kernel-core-6.12.10")
    assert proc.returncode == 1, proc.output
    assert f"kzguard: holding back kernel {NEXT}: pinned by kzguard" in proc.output
    assert "kernel-core-6.12.10" not in installed(root)


@pytest.mark.real
@needs_dnf
def test_kernel_with_a_zfs_that_supports_it_goes_through(dnf_lab, tmp_path):
    root = dnf_lab.root(tmp_path)
    proc = dnf_lab.dnf(root, "lab", "install", "kernel-core-6.13.2", "zfs-dkms-2.3.1", "zfs-2.3.1")
    assert proc.returncode == 0, proc.output
    assert installed(root) >= {"kernel-core-6.13.2", "zfs-dkms-2.3.1", "zfs-2.3.1"}


@pytest.mark.real
@needs_dnf
def test_kzguard_allow_lets_a_kernel_through_once(dnf_lab, tmp_path):
    root = dnf_lab.root(tmp_path)
    proc = dnf_lab.dnf(root, "lab", "install", "kernel-core-6.13.2", env={"KZGUARD_ALLOW": NEW})
    assert proc.returncode == 0, proc.output
    assert f"letting {NEW} through by an admin's override" in proc.output
    assert "kernel-core-6.13.2" in installed(root)


@pytest.mark.real
@needs_dnf
def test_snapshot_of_the_root_dataset_before_the_change(dnf_lab, tmp_path, fake_zfs):
    root = dnf_lab.root(tmp_path)
    root.write("/proc/self/mounts", "rpool/ROOT/fedora / zfs rw,relatime,xattr,posixacl 0 0\n")
    proc = dnf_lab.dnf(root, "lab", "install", "kernel-core-6.12.10")
    assert proc.returncode == 0, proc.output
    snapshot = fake_zfs.calls()[0]
    assert snapshot[:7] == [
        "snapshot",
        "-o",
        "org.kzguard:manager=dnf",
        "-o",
        f"org.kzguard:kernels={NEXT}",
        "-o",
        f"org.kzguard:reason=dnf-{NEXT}",
    ]
    assert re.fullmatch(rf"rpool/ROOT/fedora@kzguard-\d{{8}}T\d{{6}}Z-dnf-{NEXT}", snapshot[7])
    assert fake_zfs.calls()[1][:2] == ["list", "-H"]
    assert f"took snapshot {snapshot[7]}" in proc.output
    assert "kernel-core-6.12.10" in installed(root)


@pytest.mark.real
@needs_dnf
def test_broken_config_blocks_kernels_by_default_but_not_other_packages(dnf_lab, tmp_path):
    root = dnf_lab.root(tmp_path)
    root.config("on_unsupported_kernel: [hold\n")
    proc = dnf_lab.dnf(root, "lab", "install", "kernel-core-6.12.10")
    assert proc.returncode == 1, proc.output
    assert "kzguard failed inside the dnf hook (ConfigError:" in proc.stderr
    assert "refusing the transaction (the default, as the configuration could not be read" in (
        proc.stderr
    )
    assert "kernel-core-6.12.10" not in installed(root)
    other = dnf_lab.dnf(root, "lab", "install", "tool-1.0")
    assert other.returncode == 0, other.output
    assert "tool-1.0" in installed(root)


@pytest.mark.real
@needs_dnf
def test_internal_failure_with_on_error_allow_goes_through_with_a_warning(dnf_lab, tmp_path):
    root = dnf_lab.root(tmp_path)
    root.config("on_error: allow\n")
    root.write("/var/lib/kzguard", "not a directory\n")  # the state file cannot be opened
    proc = dnf_lab.dnf(root, "lab", "install", "kernel-core-6.12.10")
    assert proc.returncode == 0, proc.output
    assert "kzguard failed inside the dnf hook (StateError:" in proc.output
    assert "letting the transaction through (on_error = allow)" in proc.output
    assert "kernel-core-6.12.10" in installed(root)


# ---- dnf 4: the post-install verdict on the end state (the plugin's transaction()) --------


@pytest.fixture(scope="module")
def fix_repo(dnf_lab) -> str:
    """A repo whose zfs-dkms 2.3.1 brings what DKMS builds for kernel 6.12.10 (its modules,
    its DKMS entry), as its scriptlets would."""
    stage = HostTree(dnf_lab.base / "fix-stage").os_release("fedora41")
    stage.zfs_source("2.3.1", "4.18", "6.13")
    for name in ("zfs", "spl"):
        stage.module(NEXT, name, "2.3.1-1", location="extra", compression="xz")
    stage.dkms("zfs", "2.3.1", NEXT)
    files = {
        "/usr/src/zfs-2.3.1": stage.host("/usr/src/zfs-2.3.1"),
        f"/lib/modules/{NEXT}/extra": stage.host(f"/lib/modules/{NEXT}/extra"),
        "/var/lib/dkms/zfs": stage.host("/var/lib/dkms/zfs"),  # 2.3.1/ and the kernel-* link
    }
    built = build_rpm(dnf_lab.base / "rpm-fix", "zfs-dkms", "2.3.1", "1.fc41", "noarch", files)
    directory = dnf_lab.base / "repos" / "fix"
    directory.mkdir(parents=True)
    shutil.copy(built, directory)
    subprocess.run(["createrepo_c", "--quiet", directory], check=True, timeout=60)
    dnf_lab.repos["fix"] = directory
    return "fix"


def _pinned_next(root: HostTree) -> None:
    """Kernel 6.12.10 installed, its module missing: the post-install check pinned it."""
    from kzguard.actions import pin
    from kzguard.config import load_config
    from kzguard.guard import postinstall
    from kzguard.root import Runner

    root.kernel(NEXT)
    config = load_config(Root(root.path), None)
    postinstall.check(Context(Root(root.path), Runner(), config=config), NEXT)
    assert NEXT in pin.current(Root(root.path))


def _state(root: HostTree) -> dict:
    return json.loads(root.host("/var/lib/kzguard/state.json").read_text())


@pytest.mark.real
@needs_dnf
def test_transaction_hook_lifts_a_pin_the_new_zfs_fixed(dnf_lab, fix_repo, tmp_path):
    root = dnf_lab.root(tmp_path)
    _pinned_next(root)
    proc = dnf_lab.dnf(root, fix_repo, "install", "zfs-dkms-2.3.1")
    assert proc.returncode == 0, proc.output
    # the gate lifts the pin for the new ZFS; the end state confirms it
    assert f"kzguard: lifted the pin on kernel {NEXT}: a new check finds it safe" in proc.output
    final = proc.output.index(f"kzguard: dnf has finished: the final post-install check of {NEXT}")
    assert (
        f"kzguard: kernel {NEXT} passed the post-install check: zfs 2.3.1-1"
        in (proc.output[final:])
    )
    state = _state(root)
    assert state["pins"] == {} and "transaction" not in state


@pytest.mark.real
@needs_dnf
def test_transaction_hook_keeps_a_pin_the_end_state_does_not_fix(dnf_lab, tmp_path):
    root = dnf_lab.root(tmp_path)
    _pinned_next(root)
    proc = dnf_lab.dnf(root, "lab", "install", "zfs-dkms-2.3.1")  # no module for 6.12.10
    assert proc.returncode == 0, proc.output
    # the gate lifted the pin for the new ZFS, which DKMS did not build for 6.12.10: pinned again
    final = proc.output.index(f"kzguard: dnf has finished: the final post-install check of {NEXT}")
    assert f"kzguard: kernel {NEXT} failed the post-install check" in proc.output[final:]
    state = _state(root)
    assert state["pins"][NEXT]["auto"] is True and "transaction" not in state


@pytest.mark.real
@needs_dnf
def test_pre_transaction_records_and_transaction_clears(dnf_lab, tmp_path):
    """A kernel transaction is recorded before rpm runs (kernel-install, run by rpm, would
    find its token in the environment and only queue), and the record is gone at the end."""
    root = dnf_lab.root(tmp_path)
    proc = dnf_lab.dnf(root, "lab", "-v", "install", "kernel-core-6.12.10")
    assert proc.returncode == 0, proc.output
    events = _state(root)
    assert "transaction" not in events
    assert "kernel-core-6.12.10" in installed(root)


# ---- the adapter's reading of a transaction ------------------------------------------------


def test_kernel_packages_are_grouped_by_release_and_zfs_version_is_the_module_package():
    tx = build_transaction(
        [
            Package("kernel-core", "6.13.2", "200.fc41", "x86_64"),
            Package("kernel-modules", "6.13.2", "200.fc41", "x86_64"),
            Package("kernel-devel", "6.13.2", "200.fc41", "x86_64"),
            Package("kernel-debug-core", "6.13.2", "200.fc41", "x86_64"),
            Package("kernel-headers", "6.13.2", "200.fc41", "x86_64"),
            Package("zfs", "2.3.1", "1.fc41", "x86_64"),
            Package("zfs-dkms", "2.3.1", "1.fc41", "noarch"),
        ],
        [
            Package("kernel-core", "6.11.10", "300.fc41", "x86_64"),
            Package("zfs-dkms", "2.2.7", "1.fc41", "noarch"),
        ],
    )
    assert tx.install == (NEW, f"{NEW}+debug")
    assert tx.packages_of(NEW) == ("kernel-core", "kernel-modules", "kernel-devel")
    assert tx.remove == ("6.11.10-300.fc41.x86_64",)
    assert tx.zfs_version == "2.3.1"
    assert set(tx.zfs_packages) == {"zfs", "zfs-dkms"}


def test_the_sack_hook_reads_the_configuration_file_kzguard_loads():
    from kzguard.config.load import DEFAULT_PATH
    from kzguard.managers.dnf import CONFIG_FILE

    assert CONFIG_FILE == DEFAULT_PATH


def test_a_reinstalled_kernel_is_not_removed_and_other_packages_are_not_relevant():
    same = Package("kernel-core", "6.12.9", "200.fc41", "x86_64")
    tx = build_transaction([same], [same])
    assert (tx.install, tx.remove) == ((RUNNING,), ())
    assert not build_transaction([Package("tool", "1.1", "1", "noarch")], []).relevant
    assert kernel_release("kernel-tools", "6.13.2", "200.fc41", "x86_64") is None


# ---- dnf5: the actions file run as libdnf5's actions plugin runs it ----------------------


class Action(NamedTuple):
    hook: str
    filter: str
    direction: str
    options: dict
    args: list


class Pkg(NamedTuple):
    action: str
    name: str
    version: str
    release: str
    arch: str


class ActionError(Exception):
    """What ``raise_error=1`` throws out of the plugin: dnf5 stops."""


# hooks and options by actions plugin version (libdnf5-plugins/actions/actions.cpp)
_HOOKS_1_2 = (
    "pre_base_setup",
    "post_base_setup",
    "repos_configured",
    "repos_loaded",
    "pre_add_cmdline_packages",
    "post_add_cmdline_packages",
    "pre_transaction",
    "post_transaction",
)
_GRAMMAR = {
    "1.2.0": (_HOOKS_1_2, ("enabled", "mode")),
    "1.4.0": ((*_HOOKS_1_2, "goal_resolved"), ("enabled", "mode", "raise_error")),
}


def _split(text: str) -> list[str]:
    """Arguments split on spaces that are not escaped (``split`` in actions.cpp)."""
    out, current, escape = [], "", False
    for char in text:
        if char == " " and not escape:
            if current:
                out.append(current)
            current = ""
            continue
        escape = not escape and char == "\\"
        current += char
    return [*out, current] if current else out


def _unescape(text: str) -> str:
    table = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    out, escape = "", False
    for char in text:
        if escape:
            out += table.get(char, char)
            escape = False
        elif char == "\\":
            escape = True
        else:
            out += char
    return out


def parse_actions(text: str, version: str) -> list[Action]:
    hooks, options = _GRAMMAR[version]
    actions = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        hook, flt, direction, opts, command = line.split(":", 4)
        if hook not in hooks:
            raise ValueError(f"line {number}: Unknown hook {hook!r}")
        parsed = {}
        for opt in _split(opts):
            key, _, value = opt.partition("=")
            if key not in options:
                raise ValueError(f"line {number}: Unknown option {opt!r}")
            parsed[key] = value
        if flt and hook not in ("pre_transaction", "post_transaction", "goal_resolved"):
            raise ValueError(f"line {number}: package filter in {hook}")
        assert direction in ("", "in", "out") and (flt or not direction)
        actions.append(Action(hook, flt, direction, parsed, _split(command)))
    return actions


class ActionsPlugin:
    """The plain communication mode of the libdnf5 actions plugin, for one dnf5 process."""

    def __init__(self, path: Path, *, version: str, installroot: Path, env: dict):
        self.actions = parse_actions(path.read_text(), version)
        self.version = version
        self.conf = {"installroot": str(installroot)}
        self.env = env
        self.tmp: dict[str, str] = {}
        self.stderr = ""

    def run(self, hook: str, packages: tuple[Pkg, ...] = ()) -> None:
        seen: set[tuple[str, ...]] = set()
        for action in (a for a in self.actions if a.hook == hook):
            commands = []
            if not action.filter:
                args = self._substitute(action, None)
                commands = [args] if args is not None else []
            else:
                for pkg in packages:
                    if not fnmatch.fnmatchcase(pkg.name, action.filter):
                        continue
                    if action.direction and (pkg.action in "IUDR") != (action.direction == "in"):
                        continue
                    args = self._substitute(action, pkg)
                    if args is None:
                        break
                    commands.append(args)
            for args in commands:
                if tuple(args) not in seen:
                    seen.add(tuple(args))
                    self._execute(action, args)

    def _substitute(self, action: Action, pkg: Optional[Pkg]) -> Optional[list[str]]:
        def value(name: str) -> str:
            if name == "plugin.version":
                return self.version
            if name.startswith("conf."):
                return self.conf[name[5:]]
            if name.startswith("tmp."):
                return self.tmp[name[4:]]
            if name.startswith("pkg.") and pkg is not None:
                return getattr(pkg, name[4:])
            raise KeyError(name)

        try:
            return [
                _unescape(re.sub(r"\$\{([^}]*)\}", lambda m: value(m[1]), arg))
                for arg in action.args
            ]
        except KeyError:
            return None  # logged by the plugin, the command is not run

    def _execute(self, action: Action, args: list[str]) -> None:
        proc = subprocess.run(
            args, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=self.env
        )
        self.stderr += proc.stderr
        raise_error = action.options.get("raise_error") == "1"
        for line in proc.stdout.splitlines():
            name, eq, val = line.partition("=")
            if name.startswith("tmp."):
                if eq:
                    self.tmp[name[4:]] = val
                else:
                    self.tmp.pop(name[4:], None)
            elif raise_error:
                raise ActionError(f"Action output line: {line}")
        if proc.returncode != 0 and raise_error:
            raise ActionError(f"Exit code: {proc.returncode}")


@pytest.fixture(scope="module")
def dnf5_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dnf5") / "template"
    fedora_zfs_host(path)
    return path


@pytest.fixture
def dnf5_root(dnf5_template, tmp_path) -> HostTree:
    shutil.copytree(dnf5_template, tmp_path / "root", symlinks=True)
    return HostTree(tmp_path / "root")


@pytest.fixture
def kzguard_bin(tmp_path) -> dict:
    """``kzguard`` on PATH through a wrapper that keeps what it was fed on stdin."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fed = tmp_path / "kzguard-stdin"
    wrapper = bindir / "kzguard"
    wrapper.write_text(
        f'#!/bin/sh\ntee -a {fed} | {Path(sys.executable).parent / "kzguard"} "$@"\n'
    )
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "KZGUARD_TEST_FED": str(fed)}
    env.pop("KZGUARD_ALLOW", None)
    return env


def fed(env: dict) -> list[str]:
    path = Path(env["KZGUARD_TEST_FED"])
    return path.read_text().splitlines() if path.exists() else []


def _plugin(root: HostTree, env: dict, *, legacy: bool = False) -> ActionsPlugin:
    path, version = (LEGACY_ACTIONS, "1.2.0") if legacy else (MAIN_ACTIONS, "1.4.0")
    return ActionsPlugin(path, version=version, installroot=root.path, env=env)


KERNEL_IN = (
    Pkg("I", "kernel-core", "6.13.2", "200.fc41", "x86_64"),
    Pkg("I", "kernel-modules", "6.13.2", "200.fc41", "x86_64"),
    Pkg("U", "bash", "5.2.37", "1.fc41", "x86_64"),
    Pkg("E", "bash", "5.2.32", "1.fc41", "x86_64"),
)
ZFS_UP = (
    Pkg("U", "zfs-dkms", "2.3.1", "1.fc41", "noarch"),
    Pkg("E", "zfs-dkms", "2.2.7", "1.fc41", "noarch"),
)


def test_actions_files_parse_for_the_plugin_versions_they_are_for():
    main = parse_actions(MAIN_ACTIONS.read_text(), "1.4.0")
    assert {a.hook for a in main} == {"goal_resolved", "post_transaction"}
    assert [a.options for a in main if not a.filter and a.hook == "goal_resolved"] == [
        {"raise_error": "1"},
        {"raise_error": "1"},
    ]
    legacy = parse_actions(LEGACY_ACTIONS.read_text(), "1.2.0")
    assert {a.hook for a in legacy} == {"repos_configured", "pre_transaction", "post_transaction"}
    with pytest.raises(ValueError, match="Unknown"):  # why dnf5 < 5.2.11 needs its own file
        parse_actions(MAIN_ACTIONS.read_text(), "1.2.0")


def test_dnf5_refuses_an_unsupported_kernel_at_goal_resolved(dnf5_root, kzguard_bin):
    plugin = _plugin(dnf5_root, kzguard_bin)
    with pytest.raises(ActionError, match="Exit code: 1"):
        plugin.run("goal_resolved", KERNEL_IN)
    assert fed(kzguard_bin) == [
        "kzguard-dnf5 1",
        "plugin 1.4.0",
        "hook goal_resolved",
        f"installroot {dnf5_root.path}",
        "I kernel-core 6.13.2 200.fc41 x86_64",
        "I kernel-modules 6.13.2 200.fc41 x86_64",
    ]
    assert f"kzguard: refusing kernel {NEW} (unsafe)" in plugin.stderr
    assert "ZFS 2.2.7 supports Linux 4.18 to 6.12.x" in plugin.stderr
    assert not Path(plugin.tmp["kzguard_dir"]).exists()


def test_dnf5_lets_a_kernel_through_with_the_zfs_that_supports_it(dnf5_root, kzguard_bin):
    plugin = _plugin(dnf5_root, kzguard_bin)
    plugin.run("goal_resolved", KERNEL_IN + ZFS_UP)
    assert "U zfs-dkms 2.3.1 1.fc41 noarch" in fed(kzguard_bin)
    assert "refusing" not in plugin.stderr
    plugin.run("post_transaction", KERNEL_IN + ZFS_UP)  # nothing held: nothing to do
    assert not dnf5_root.host(dnf5.VERSIONLOCK).exists()


def test_dnf5_transaction_without_kernel_or_zfs_does_not_start_kzguard(dnf5_root, kzguard_bin):
    plugin = _plugin(dnf5_root, kzguard_bin)
    plugin.run("goal_resolved", KERNEL_IN[2:])
    plugin.run("post_transaction", KERNEL_IN[2:])
    assert fed(kzguard_bin) == []
    assert not Path(plugin.tmp["kzguard_dir"]).exists()


def test_kzguard_hook_dnf5_reads_the_stream_and_applies_on_error(dnf5_root):
    stream = "\n".join(
        [dnf5.PROTOCOL, "plugin 1.4.0", "hook goal_resolved", f"installroot {dnf5_root.path}"]
    )
    kzguard = [sys.executable, "-m", "kzguard", "hook", "dnf5"]
    ok = subprocess.run(kzguard, input=stream + "\nI kernel-core 6.12.10 200.fc41 x86_64\n",
                        capture_output=True, text=True)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(kzguard, input=stream + "\nI kernel-core 6.13.2\n", capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 1
    assert "kzguard failed inside the dnf5 hook (Dnf5Error: line 5: expected" in bad.stderr


def test_dnf5_hold_writes_versionlock_and_lifts_it_once_zfs_supports_the_kernel(
    dnf5_root, kzguard_bin
):
    dnf5_root.config("on_unsupported_kernel: hold\n")
    admin = (
        'version = "1.0"\n\n# keep bash where it is\n[[packages]]\nname = "bash"\n'
        'comment = "the admin\'s"\n[[packages.conditions]]\nkey = "evr"\ncomparator = "="\n'
        'value = "0:5.2.32-1.fc41"\n'
    )
    dnf5_root.write(dnf5.VERSIONLOCK, admin)
    plugin = _plugin(dnf5_root, kzguard_bin)
    with pytest.raises(ActionError):
        plugin.run("goal_resolved", KERNEL_IN)
    assert f"kzguard: holding {NEW} back in {dnf5.VERSIONLOCK}" in plugin.stderr
    assert "run the same command again" in plugin.stderr
    text = dnf5_root.host(dnf5.VERSIONLOCK).read_text()
    assert text.startswith(admin)
    entries = tomllib.loads(text)["packages"]
    assert entries[0]["name"] == "bash"
    ours = {e["name"]: e["conditions"] for e in entries[1:]}
    assert set(ours) == {"kernel", "kernel-core", "kernel-modules*", "kernel-devel*"}
    assert ours["kernel-core"] == [{"key": "evr", "comparator": "!=", "value": "6.13.2-200.fc41"}]
    assert all(e["comment"].startswith(f"kzguard: holds {NEW}") for e in entries[1:])

    # zfs-dkms 2.3.1 (Linux up to 6.13) installed and built: the hold is no longer needed
    dnf5_root.zfs_source("2.3.1", "4.18", "6.13")
    dnf5_root.dkms("zfs", "2.3.1", RUNNING)
    plugin.run("post_transaction", ZFS_UP)
    assert f"kzguard: lifted the hold on {NEW}" in plugin.stderr
    assert dnf5_root.host(dnf5.VERSIONLOCK).read_text() == admin


@needs_rpm
def test_dnf5_legacy_holds_a_pending_kernel_before_the_goal_is_resolved(dnf5_root, kzguard_bin):
    from devtools.pkgmeta import dnf_cache

    dnf_cache(dnf5_root.path, "fedora", [("kernel-core", "6.13.2", "200.fc41")],
              cache="var/cache/libdnf5")  # fmt: skip
    plugin = _plugin(dnf5_root, kzguard_bin, legacy=True)
    plugin.run("repos_configured")  # on_unsupported_kernel: block, which this dnf5 cannot do
    text = dnf5_root.host(dnf5.VERSIONLOCK).read_text()
    assert 'name = "kernel-core"' in text and 'value = "6.13.2-200.fc41"' in text
    assert dnf5.Versionlock.load(Root(dnf5_root.path)).held() == [NEW]
    # should the kernel come anyway (a cache older than the repository): a warning, no stop
    plugin.run("pre_transaction", KERNEL_IN)
    assert f"kzguard: refusing kernel {NEW}" in plugin.stderr
    assert "cannot stop a transaction" in plugin.stderr


def test_versionlock_hold_leaves_names_an_admin_entry_covers_alone(dnf5_root):
    from kzguard.root import Runner

    admin = (
        'version = "1.0"\n[[packages]]\nname = "kernel*"\n[[packages.conditions]]\n'
        'key = "evr"\ncomparator = "="\nvalue = "6.12.9-200.fc41"\n'
    )
    dnf5_root.write(dnf5.VERSIONLOCK, admin)
    root = Root(dnf5_root.path)
    lock = dnf5.Versionlock.load(root)
    lines = lock.write(root, Runner(), [NEW])
    assert len(lines) == 4 and all("already locks 'kernel*'" in line for line in lines)
    assert lock.holding == set()
    assert dnf5_root.host(dnf5.VERSIONLOCK).read_text() == admin
