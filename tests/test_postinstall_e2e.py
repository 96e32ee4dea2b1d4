"""The post-install hook files end to end, on root trees, with the real bootloader tools.

- Debian: ``hooks/postinst.d/kzguard <release>`` (as run-parts runs it) on a root whose new
  kernel has no zfs module after DKMS, with a real grubenv (``grub-editenv``) whose
  ``saved_entry`` already names the new kernel, and a grub.cfg as update-grub writes it.
- Fedora: ``hooks/kernel-install/60-kzguard.install add <release> ...`` on a BLS root, with
  ``grubby`` faked at the command boundary (devtools/fakebin/grubby).
- Arch: the real pacman with both alpm hooks, through tests/lab/test_pacman.py's lab.

The hooks find kzguard on PATH (this checkout's venv) and the root in ``KZGUARD_ROOT``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from devtools import bootfiles
from devtools.hostbuilder import HostTree
from kzguard.actions import apt_hold
from kzguard.managers import dnf
from kzguard.root import Root
from tests import scenarios as sc
from tests.lab.test_pacman import MINOR, Host, lab  # noqa: F401 - lab is a fixture
from tests.tools import need, run

pytestmark = pytest.mark.real

TOP = Path(__file__).resolve().parent.parent
POSTINST = TOP / "hooks" / "postinst.d" / "kzguard"
KERNEL_INSTALL = TOP / "hooks" / "kernel-install" / "60-kzguard.install"
POST_HOOK = TOP / "hooks" / "pacman" / "95-kzguard-post.hook"
FAKEBIN = TOP / "devtools" / "fakebin"
BIN = Path(sys.executable).parent  # the venv's kzguard console script
OLD, NEW = sc.DEBIAN_RUNNING, sc.DEBIAN_BPO
GRUBENV = "/boot/grub/grubenv"
entry_id = bootfiles.debian_entry_id


def grubenv(path: Path) -> dict[str, str]:
    """``grub-editenv FILE list``, the real tool."""
    out = run("grub-editenv", path / GRUBENV.lstrip("/"), "list").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def debian_root(path: Path, *, module: bool) -> HostTree:
    """Debian 12 with zfs-dkms 2.2.7 and GRUB_DEFAULT=saved; the new backports kernel is
    installed, update-grub's grub.cfg lists it first and saved_entry names it (as a kernel
    hook that moves the default leaves it). DKMS built its module, or left none (``module``)."""
    need("grub-editenv")
    tree = sc.debian_new_kernel(path, NEW, module=module, failed="build-failed")
    for release in (OLD, NEW):
        tree.boot_kernel(release, "initrd.img-{}")
    tree.write("/etc/default/grub", bootfiles.default_grub("saved"))
    tree.write("/boot/grub/grub.cfg", bootfiles.debian_grub_cfg([OLD, NEW]))
    tree.grubenv(GRUBENV, saved_entry=entry_id(NEW))
    return tree


def hook_env(root: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": f"{BIN}:{FAKEBIN}:{os.environ['PATH']}",
        "KZGUARD_ROOT": str(root),
        "PYTHONDONTWRITEBYTECODE": "1",
        **extra,
    }


def postinst(root: Path, release: str = NEW, **env: str):
    """Run /etc/kernel/postinst.d as the kernel package's postinst does (the real run-parts),
    with our hook between a ``dkms`` script and a ``zz-update-grub`` that notes the
    saved_entry it finds (update-grub reads the default kzguard left)."""
    scripts = root.parent / f"{root.name}-postinst.d"
    if not scripts.exists():
        scripts.mkdir()
        shutil.copy(POSTINST, scripts / "kzguard")
        grubenv_path = root / GRUBENV.lstrip("/")
        for name, body in (
            ("dkms", "true"),
            (
                "zz-update-grub",
                f'grub-editenv "{grubenv_path}" list >> "{scripts}/update-grub.log"',
            ),
        ):
            (scripts / name).write_text(f"#!/bin/sh\n{body}\n")
            (scripts / name).chmod(0o755)
    extra = {"DEB_MAINT_PARAMS": "configure 6.12.9-1~bpo12+1", **env}
    argv = ["run-parts", "--report", "--exit-on-error", f"--arg={release}"]
    argv += [f"--arg=/boot/vmlinuz-{release}", scripts]
    return run(*argv, check=False, env=hook_env(root, **extra))


def update_grub_saw(root: Path) -> list[str]:
    """The saved_entry values zz-update-grub found, one a run."""
    log = root.parent / f"{root.name}-postinst.d" / "update-grub.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split("=", 1)[1] for line in lines if line.startswith("saved_entry=")]


def kzguard(root: Path, *argv: str):
    return run(BIN / "kzguard", "--root", root, *argv, check=False)


def state(root: Path) -> dict:
    path = root / "var/lib/kzguard/state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_debian_failed_module_keeps_the_old_kernel_and_pins_the_new_one(tmp_path):
    debian_root(tmp_path, module=False)
    proc = postinst(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"kernel {NEW} failed the post-install check (unsafe)" in out
    assert grubenv(tmp_path)["saved_entry"] == entry_id(OLD)
    assert update_grub_saw(tmp_path) == [entry_id(OLD)]  # settled before update-grub ran
    pins = state(tmp_path)["pins"]
    assert pins[NEW]["auto"] is True and pins[NEW]["manager"] == "apt"
    assert pins[NEW]["reason"].startswith("pinned by kzguard after a failed post-install check")
    prefs = (tmp_path / apt_hold.PREFERENCES.lstrip("/")).read_text()
    assert f"Explanation: kzguard hold pin {NEW} for {NEW}" in prefs
    assert f"linux-image-{NEW} " in prefs and "Pin-Priority: -1" in prefs
    show = kzguard(tmp_path, "boot", "show", "--json")
    assert show.returncode == 0, show.stderr
    data = json.loads(show.stdout)
    assert data["next"]["kernel"] == OLD and data["next"]["safe"] is True, data


def test_debian_good_module_leaves_the_default_on_the_new_kernel(tmp_path):
    debian_root(tmp_path, module=True)
    before = (tmp_path / GRUBENV.lstrip("/")).read_bytes()
    proc = postinst(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"kernel {NEW} passed the post-install check" in proc.stderr
    assert (tmp_path / GRUBENV.lstrip("/")).read_bytes() == before
    assert grubenv(tmp_path)["saved_entry"] == entry_id(NEW)
    assert update_grub_saw(tmp_path) == [entry_id(NEW)]
    data = state(tmp_path)
    assert data["pins"] == {} and data["last_good"] == NEW
    assert not (tmp_path / apt_hold.PREFERENCES.lstrip("/")).exists()


def test_debian_fail_policy_exits_1(tmp_path):
    debian_root(tmp_path, module=False).config("on_module_failure: fail\n")
    proc = postinst(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "run-parts: " in proc.stderr and "exited with return code 1" in proc.stderr
    assert update_grub_saw(tmp_path) == []  # --exit-on-error: the package stays unconfigured
    assert grubenv(tmp_path)["saved_entry"] == entry_id(OLD)
    assert NEW in state(tmp_path)["pins"]


@pytest.mark.parametrize("how", ["warn", "dry-run"])
def test_debian_warn_and_dry_run_change_nothing(tmp_path, how):
    tree = debian_root(tmp_path, module=False)
    env = {}
    if how == "warn":
        tree.config("on_module_failure: warn\n")
    else:
        env["KZGUARD_DRY_RUN"] = "1"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    proc = postinst(tmp_path, **env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"kernel {NEW} failed the post-install check" in out
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    if how == "warn":  # the state file records the event; nothing else changes
        assert after.pop(tmp_path / "var/lib/kzguard/state.json")
        assert state(tmp_path)["pins"] == {}
        after.pop(tmp_path / "var/lib/kzguard/state.lock", None)
    assert after == before
    assert grubenv(tmp_path)["saved_entry"] == entry_id(NEW)


def test_debian_pin_lifts_itself_after_zfs_is_upgraded(tmp_path):
    tree = debian_root(tmp_path, module=False)
    assert postinst(tmp_path).returncode == 0
    assert NEW in state(tmp_path)["pins"]
    # zfs-dkms 2.3.1 arrives and DKMS builds it for the new kernel
    tree.zfs_source("2.3.1", "4.18", "6.13")
    for name in ("zfs", "spl"):
        tree.module(NEW, name, "2.3.1-1")
    tree.dkms("zfs", "2.3.1", NEW)
    proc = postinst(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"lifted the pin on kernel {NEW}: a new check finds it safe" in out
    data = state(tmp_path)
    assert data["pins"] == {} and data["last_good"] == NEW
    assert not (tmp_path / apt_hold.PREFERENCES.lstrip("/")).exists()
    assert [e["kind"] for e in data["events"]].count("pin-removed") == 1
    # nothing is pinned any more: the boot default goes back to where kzguard found it
    assert f"restored the boot default {entry_id(NEW)}" in out
    assert grubenv(tmp_path)["saved_entry"] == entry_id(NEW) and data["boot"] == {}


# --- Fedora: the kernel-install plugin, grubby faked ----------------------------------------

MACHINE_ID = bootfiles.MACHINE_ID
F_GOOD, F_NEW = sc.FEDORA_RUNNING, sc.FEDORA_NEW


def fedora_root(path: Path) -> HostTree:
    """Fedora 41 with zfs-dkms 2.2.7 (Linux up to 6.12) and a 6.13 kernel that a front end
    without the dnf plugin installed: DKMS could not build zfs for it. 20-grub has already
    made its BLS entry the default (grubenv saved_entry), as kernel-install does."""
    need("grub-editenv")
    tree = sc.fedora_dkms(path)
    tree.host("/var/lib/rpm").mkdir(parents=True)
    tree.write("/usr/sbin/grubby", "")  # grubby is installed: kzguard sets the default with it
    tree.kernel(F_NEW)
    for release in (sc.FEDORA_OLD, F_GOOD, F_NEW):
        tree.write(*bootfiles.bls_entry(release))
        tree.boot_kernel(release)
    tree.write("/etc/default/grub", "GRUB_DEFAULT=saved\nGRUB_ENABLE_BLSCFG=true\n")
    tree.write("/boot/grub2/grub.cfg", 'set default="${saved_entry}"\nblscfg\n')
    tree.grubenv("/boot/grub2/grubenv", saved_entry=f"{MACHINE_ID}-{F_NEW}")
    return tree


def test_fedora_kernel_install_plugin_moves_the_default_back_with_grubby(tmp_path):
    fedora_root(tmp_path)
    log = tmp_path / "grubby.jsonl"
    env = hook_env(tmp_path, KZGUARD_FAKE_GRUBBY_LOG=str(log))
    argv = ["add", F_NEW, f"/boot/{MACHINE_ID}/{F_NEW}", f"/lib/modules/{F_NEW}/vmlinuz"]
    proc = run(KERNEL_INSTALL, *argv, check=False, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"kernel {F_NEW} failed the post-install check (unsafe)" in out
    assert "Linux 6.13 is newer than ZFS 2.2.7 supports" in out
    env_file = tmp_path / "boot/grub2/grubenv"
    listed = run("grub-editenv", env_file, "list").stdout
    assert f"saved_entry={MACHINE_ID}-{F_GOOD}\n" in listed
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [f"--set-default=/boot/vmlinuz-{F_GOOD}", f"--env={env_file}"] == calls[-1][:2]
    pins = state(tmp_path)["pins"]
    assert pins[F_NEW]["manager"] == "dnf" and pins[F_NEW]["codes"][0] == "kernel-too-new"
    assert "dnf: the kzguard plugin keeps the packages" in out
    # the dnf plugin's sack() excludes what the state file pins
    assert [h.release for h in dnf.pinned(Root(tmp_path))] == [F_NEW]


# --- Arch: the real pacman runs both hooks --------------------------------------------------


def test_pacman_post_hook_pins_a_kernel_without_module_and_the_pre_hook_refuses_it(
    request, tmp_path
):
    """The lab's linux upgrade leaves no zfs module (no DKMS build there): the PostTransaction
    hook pins it; installing it again is refused by the PreTransaction hook."""
    built = request.getfixturevalue("lab")
    host = Host(built, tmp_path)
    shutil.copy(POST_HOOK, host.hookdir / POST_HOOK.name)
    proc = host.pacman("-U", built["minor"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"kzguard: kernel {MINOR} failed the post-install check (unsafe)" in out
    assert "no other installed kernel passes the check" in out  # the old one was replaced
    pins = host.state()["pins"]
    assert pins[MINOR]["manager"] == "pacman" and pins[MINOR]["auto"] is True
    again = host.pacman("-U", built["minor"])
    out = again.stdout + again.stderr
    assert again.returncode == 1, out
    assert "failed to run transaction hooks" in out
    assert f"kzguard: refusing kernel {MINOR}: pinned by kzguard after a failed post-install" in out
