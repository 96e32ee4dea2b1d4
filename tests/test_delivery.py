"""How ZFS is delivered, from evidence (kzguard/facts/ownership.py, host.py), and what kzguard
says when it cannot see: a broken DKMS registration, an unreadable or empty root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devtools.dkmstree import make_dkms_entry
from devtools.hostbuilder import HostTree
from kzguard.facts.host import gather
from kzguard.facts.ownership import owners
from kzguard.judge.policy import judge
from kzguard.root import Root
from tests import scenarios as sc
from tests import tools

pytestmark = pytest.mark.real  # modules are built with gcc

PVE = "6.8.12-4-pve"
UBUNTU = "6.8.0-45-generic"
KZGUARD = shutil.which("kzguard") or str(Path(__file__).resolve().parents[1] / ".venv/bin/kzguard")


def report_of(path: Path, **kwargs):
    return judge(gather(Root(path)), {}, **kwargs)


def codes(verdict) -> list[str]:
    return sorted(r.code for r in verdict.reasons)


def dpkg_owns(tree: HostTree, package: str, *paths: str) -> None:
    """``/var/lib/dpkg/info/<package>.list`` as dpkg writes it (every parent dir, then files)."""
    lines = sorted({p for path in paths for p in _parents(path)} | set(paths))
    tree.write(f"/var/lib/dpkg/info/{package}.list", "".join(f"{p}\n" for p in lines))


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:n]) for n in range(1, len(parts))] or ["/."]


def proxmox_host(path: Path) -> HostTree:
    """Proxmox VE 8: zfs ships in proxmox-kernel-<k>-signed; an old `apt install zfs-dkms`
    attempt left /usr/src/zfs-2.2.0 behind (never registered with DKMS)."""
    tree = HostTree(path).os_release("debian12").running(PVE).kernel(PVE)
    tree.write("/usr/share/doc/pve-manager/README", "pve\n")
    for name in ("zfs", "spl"):
        tree.module(PVE, name, "2.2.6-pve1", location="zfs")
    dpkg_owns(
        tree,
        f"proxmox-kernel-{PVE}-signed",
        f"/lib/modules/{PVE}/zfs/zfs.ko",
        f"/lib/modules/{PVE}/zfs/spl.ko",
    )
    tree.zfs_source("2.2.0", "3.10", "6.5")  # leftover: META says 6.5, the kernel is 6.8
    return tree


def test_a_leftover_zfs_source_never_changes_a_kernel_shipped_module(tmp_path):
    proxmox_host(tmp_path)
    report = report_of(tmp_path)
    assert report.host.delivery == "prebuilt"
    verdict = report.kernels[0]
    assert (verdict.release, verdict.verdict) == (PVE, "safe")
    owner = verdict.modules[0][1].owner
    assert (owner.package, owner.manager) == (f"proxmox-kernel-{PVE}-signed", "dpkg")
    assert any("/usr/src/zfs-2.2.0 is not registered with DKMS" in n for n in report.host.notes)


def test_ubuntu_module_owned_by_linux_modules_under_usrmerge(tmp_path):
    tree = HostTree(tmp_path).os_release("ubuntu2404").running(UBUNTU)
    tree.kernel(UBUNTU, modules_root="/usr/lib/modules")
    tree.symlink("/lib", "usr/lib")
    for name in ("zfs", "spl"):
        tree.module(
            UBUNTU, name, "2.2.2-0ubuntu9", location="kernel/zfs", modules_root="/usr/lib/modules"
        )
    dpkg_owns(tree, f"linux-modules-{UBUNTU}", f"/lib/modules/{UBUNTU}/kernel/zfs/zfs.ko")
    tree.zfs_source("2.1.5", "3.10", "5.19")  # leftover, unregistered
    report = report_of(tmp_path)
    assert report.host.delivery == "prebuilt"
    assert report.kernels[0].verdict == "safe"


def test_pacman_ownership_makes_archzfs_a_package(tmp_path):
    release = "6.12.4-arch1-1"
    tree = HostTree(tmp_path).os_release("arch").running(release)
    tree.kernel(release, modules_root="/usr/lib/modules")
    for name in ("zfs", "spl"):
        tree.module(release, name, "2.2.7-1", location="extra", modules_root="/usr/lib/modules")
    files = "".join(f"usr/lib/modules/{release}/extra/{n}.ko\n" for n in ("spl", "zfs"))
    tree.write(
        "/var/lib/pacman/local/zfs-linux-2.2.7_6.12.4.arch1.1-1/files", f"%FILES%\n{files}\n"
    )
    report = report_of(tmp_path)
    assert report.host.delivery == "package"
    assert report.kernels[0].modules[0][1].owner.package == "zfs-linux"


def test_rpm_ownership_read_from_the_real_rpm_database(tmp_path):
    tools.need("rpm", "rpmbuild")
    from tests.lab.test_dnf import build_rpm

    release = "5.14.0-503.11.1.el9_5.x86_64"
    path = f"/lib/modules/{release}/extra/zfs/zfs.ko"
    rpm = build_rpm(tmp_path / "rpm", "kmod-zfs", "2.2.7", "1.el9", "x86_64", {path: "x\n"})
    root = tmp_path / "root"
    tools.run("rpm", "--root", root, "--dbpath", "/var/lib/rpm", "--initdb")
    tools.run("rpm", "--root", root, "--dbpath", "/var/lib/rpm", "-i", "--justdb", "--nodeps", rpm)
    found, problems = owners(Root(root), [path, f"/usr{path}", "/lib/modules/x/zfs.ko"])
    assert problems == []
    assert {p: o.package for p, o in found.items()} == {path: "kmod-zfs", f"/usr{path}": "kmod-zfs"}


def test_dangling_dkms_source_makes_every_kernel_without_a_module_unsafe(tmp_path):
    """The false SAFE: the source was deleted, so DKMS can build nothing for a new kernel."""
    tree = sc.debian_dkms(tmp_path)
    shutil.rmtree(tmp_path / "usr/src/zfs-2.2.7")
    tree.kernel("6.12.9-amd64")  # installed, DKMS never built for it
    report = report_of(tmp_path, kernels=[sc.DEBIAN_RUNNING, "6.12.9-amd64", "6.12.10-amd64"])
    verdicts = {k.release: k for k in report.kernels}
    assert verdicts[sc.DEBIAN_RUNNING].verdict == "safe"  # its module was built before
    for release in ("6.12.9-amd64", "6.12.10-amd64"):  # installed without, and pending
        assert verdicts[release].verdict == "unsafe"
        assert "dkms-broken" in codes(verdicts[release])
    proc = tools.run(KZGUARD, "--root", tmp_path, "doctor", check=False)
    assert "dkms remove zfs/2.2.7 --all" in proc.stdout


def test_a_source_without_dkms_conf_is_broken(tmp_path):
    sc.debian_dkms(tmp_path)
    os.unlink(tmp_path / "usr/src/zfs-2.2.7/dkms.conf")
    report = report_of(tmp_path, kernels=["6.12.10-amd64"])
    assert "dkms-broken" in codes(report.kernels[0])


def test_one_broken_and_one_working_registration_is_not_broken(tmp_path):
    sc.debian_dkms(tmp_path)
    make_dkms_entry(tmp_path, "zfs", "2.1.11", state="broken")
    report = report_of(tmp_path, kernels=["6.12.10-amd64"])
    assert report.kernels[0].verdict == "safe"  # DKMS builds 2.2.7, which supports 6.12


def _cli(root: Path, *args: str, drop_caps: bool = False) -> subprocess.CompletedProcess:
    argv = [KZGUARD, "--root", str(root), *args]
    if drop_caps:  # root without CAP_DAC_*: what the service's capability set leaves it
        tools.need("setpriv")
        argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *argv]
    return tools.run(*argv, check=False)


def test_an_unreadable_modules_directory_is_never_safe(tmp_path):
    tree = sc.debian_dkms(tmp_path)
    os.chmod(tree.host("/lib/modules"), 0)
    try:
        check = _cli(tmp_path, "--json", "check", drop_caps=True)
        status = _cli(tmp_path, "status", drop_caps=True)
        doctor = _cli(tmp_path, "doctor", drop_caps=True)
    finally:
        os.chmod(tree.host("/lib/modules"), 0o755)
    assert check.returncode == 1, check.stderr
    data = json.loads(check.stdout)
    assert [(k["release"], k["verdict"], k["reasons"]) for k in data["kernels"]] == [
        (sc.DEBIAN_RUNNING, "unknown", ["kernel-unreadable"])
    ]
    assert data["host_reasons"][0]["code"] == "kernel-unreadable"
    assert "Permission denied" in status.stdout and "NOT SAFE" in status.stdout
    assert "cannot see" in doctor.stdout and "nothing to fix" not in doctor.stdout


def test_one_unreadable_kernel_is_unknown_and_the_others_are_judged(tmp_path):
    tree = sc.debian_dkms(tmp_path)
    tree.kernel("6.12.9-amd64")
    os.chmod(tree.host("/lib/modules/6.12.9-amd64"), 0)
    try:
        check = _cli(tmp_path, "--json", "check", drop_caps=True)
    finally:
        os.chmod(tree.host("/lib/modules/6.12.9-amd64"), 0o755)
    verdicts = {k["release"]: k for k in json.loads(check.stdout)["kernels"]}
    assert verdicts["6.12.9-amd64"]["reasons"] == ["kernel-unreadable"]
    assert verdicts[sc.DEBIAN_RUNNING]["verdict"] == "safe"
    assert check.returncode == 1


def test_a_link_loop_under_a_kernel_makes_only_that_kernel_unknown(tmp_path):
    tree = sc.debian_dkms(tmp_path)
    tree.kernel("6.12.9-amd64")
    tree.symlink("/lib/modules/6.12.9-amd64/updates/dkms/zfs.ko", "zfs.ko")
    report = report_of(tmp_path)
    verdicts = {k.release: k for k in report.kernels}
    assert verdicts["6.12.9-amd64"].verdict == "unknown"
    assert verdicts[sc.DEBIAN_RUNNING].verdict == "safe"


def test_an_empty_root_is_not_all_safe(tmp_path):
    check = _cli(tmp_path, "check")
    doctor = _cli(tmp_path, "doctor")
    assert check.returncode == 1
    assert "NOT SAFE" in check.stdout
    assert "nothing to fix" not in doctor.stdout


def test_a_package_database_behind_a_link_loop_is_a_problem_not_a_crash(tmp_path):
    # found by tests/test_fuzz_files.py: Root.listdir raised FactError out of owners() (exit 3)
    tree = sc.debian_dkms(tmp_path)
    module = f"/lib/modules/{sc.DEBIAN_RUNNING}/updates/dkms/zfs.ko"
    tree.symlink("/var/lib/dpkg/info", "info")
    tree.symlink("/var/lib/pacman/local", "/var/lib/pacman/local")
    tree.symlink("/var/lib/rpm", "rpm")
    found, problems = owners(Root(tmp_path), [module])
    assert found == {}
    assert len(problems) == 3 and all("too many levels" in p for p in problems)
    assert judge(gather(Root(tmp_path)), {}).exit_code == 0  # DKMS's module, judged as before


def test_a_kernel_directory_named_in_bytes_that_are_not_utf8_is_unreadable_and_printable(
    tmp_path,
):
    # found by tests/test_fuzz_files.py: `status` printed the surrogate os.listdir gave for the
    # byte and died (UnicodeEncodeError, exit 3)
    sc.debian_dkms(tmp_path)
    (tmp_path / "lib/modules").joinpath(os.fsdecode(b"6.1\xff-amd64"), "kernel").mkdir(parents=True)
    utf8 = {"LC_ALL": "C.UTF-8"}  # stdout strict UTF-8, as under any UTF-8 locale
    status = tools.run(KZGUARD, "--root", tmp_path, "status", check=False, env=utf8)
    check = _cli(tmp_path, "--json", "check")
    assert status.returncode == 0, status.stderr
    assert "6.1\\xff-amd64" in status.stdout
    verdicts = {k["release"]: k["verdict"] for k in json.loads(check.stdout)["kernels"]}
    assert verdicts == {"6.1\\xff-amd64": "unknown", sc.DEBIAN_RUNNING: "safe"}
    assert check.returncode == 1
