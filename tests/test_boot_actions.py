"""Keeping and releasing the boot default on every backend: the real grub-editenv on real
grubenv files, grubby and bootctl faked at the command boundary with their real syntax, the fake
zfs for ZFSBootMenu, loader.conf edited atomically; and ``kzguard boot`` through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import bootfiles as bf
from devtools.hostbuilder import HostTree
from kzguard.actions import boot as guard
from kzguard.actions import state
from kzguard.base import journal
from kzguard.facts import bootloader as bl
from kzguard.root import Root, Runner
from tests import scenarios as sc
from tests.test_bootloader import (
    ARCH,
    ARCH_LTS,
    DEB_NEW,
    DEB_OLD,
    FC_NEW,
    FC_OLD,
    arch_sd,
    debian,
    entry_id,
    fedora,
    zbm,
)
from tests.tools import need, run

FAKEBIN = Path(__file__).resolve().parent.parent / "devtools" / "fakebin"
GRUBENV = "/boot/grub/grubenv"


class Fakes:
    """The fake grubby and bootctl on PATH, acting on one root, logging their argv."""

    def __init__(self, tmp: Path, root: Path):
        self.grubby_log = tmp / "grubby-calls.jsonl"
        self.bootctl_log = tmp / "bootctl-calls.jsonl"
        self.env = {
            "PATH": f"{FAKEBIN}:{os.environ['PATH']}",
            "KZGUARD_FAKE_GRUBBY_ROOT": str(root),
            "KZGUARD_FAKE_GRUBBY_LOG": str(self.grubby_log),
            "KZGUARD_FAKE_BOOTCTL_ROOT": str(root),
            "KZGUARD_FAKE_BOOTCTL_LOG": str(self.bootctl_log),
        }

    @staticmethod
    def _calls(log: Path) -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def grubby(self) -> list[list[str]]:
        return self._calls(self.grubby_log)

    def bootctl(self) -> list[list[str]]:
        return self._calls(self.bootctl_log)


@pytest.fixture
def fakes(tmp_path, monkeypatch) -> Fakes:
    root = tmp_path / "root"
    root.mkdir()
    found = Fakes(tmp_path, root)
    for key, value in found.env.items():
        monkeypatch.setenv(key, value)
    return found


@pytest.fixture
def events(monkeypatch) -> list[tuple[str, dict]]:
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(journal, "event", lambda kind, message, **f: sent.append((kind, f)))
    return sent


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the root with its bytes (links as their targets)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = os.readlink(path).encode()
        elif path.is_file():
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


def record(root: Path) -> dict:
    return state.read(Root(root))["boot"]


# --- GRUB (Debian) -------------------------------------------------------------------------


@pytest.mark.real
def test_grub_keep_and_release_round_trip(tmp_path, events):
    root = tmp_path / "root"
    debian(root)
    grubenv = (root / GRUBENV.lstrip("/")).read_bytes()
    change = guard.keep(Root(root), Runner(), DEB_OLD, reason="dkms left no module")
    assert (change.changed, change.loader, change.before, change.after, change.failed) == (
        True,
        "grub",
        None,
        entry_id(DEB_OLD),
        False,
    ), change
    assert change.message.startswith(f"kept {DEB_OLD} as the boot default")
    env = run("grub-editenv", root / GRUBENV.lstrip("/"), "list").stdout
    assert env == f"saved_entry={entry_id(DEB_OLD)}\n"
    boot = bl.read_boot(Root(root), Runner())
    assert (boot.next.kernel, boot.source) == (DEB_OLD, "grubenv saved_entry")
    kept = record(root)
    assert kept["loader"] == "grub" and kept["original"] is None and kept["kept"] == DEB_OLD
    assert kept["reason"] == "dkms left no module" and kept["time"].endswith("Z")
    assert (kept["method"], kept["file"]) == ("grub-editenv", GRUBENV)
    assert events[-1][0] == "boot-default-kept"
    assert events[-1][1]["kernel"] == DEB_OLD
    undo = guard.release(Root(root), Runner())
    assert (undo.changed, undo.before, undo.after, undo.failed) == (
        True,
        entry_id(DEB_OLD),
        None,
        False,
    )
    assert (root / GRUBENV.lstrip("/")).read_bytes() == grubenv  # byte for byte
    assert record(root) == {}
    assert events[-1][0] == "boot-default-released"
    assert guard.release(Root(root), Runner()).message == "nothing to release"


@pytest.mark.real
def test_grub_release_restores_a_saved_entry_that_was_set(tmp_path):
    root = tmp_path / "root"
    debian(root, saved_entry=entry_id(DEB_NEW), menu_auto_hide="1")
    grubenv = (root / GRUBENV.lstrip("/")).read_bytes()
    assert guard.keep(Root(root), Runner(), DEB_OLD, reason="r").before == entry_id(DEB_NEW)
    assert guard.release(Root(root), Runner()).after == entry_id(DEB_NEW)
    assert (root / GRUBENV.lstrip("/")).read_bytes() == grubenv


@pytest.mark.real
def test_dry_run_changes_nothing(tmp_path, events):
    root = tmp_path / "root"
    debian(root)
    before = snapshot(root)
    change = guard.keep(Root(root), Runner(dry_run=True), DEB_OLD, reason="r")
    assert change.changed and change.message.startswith(f"would keep {DEB_OLD}")
    assert snapshot(root) == before  # no state file, no grubenv change
    guard.keep(Root(root), Runner(), DEB_OLD, reason="r")
    before = snapshot(root)
    undo = guard.release(Root(root), Runner(dry_run=True))
    assert undo.changed and "would release" in undo.message
    assert snapshot(root) == before


@pytest.mark.real
def test_keep_is_idempotent_and_keeps_the_first_original(tmp_path):
    root = tmp_path / "root"
    tree = debian(root, releases=(DEB_OLD, DEB_NEW, "6.1.0-26-amd64"), saved_entry="0")
    grubenv = (root / GRUBENV.lstrip("/")).read_bytes()
    guard.keep(Root(root), Runner(), DEB_OLD, reason="first")
    state_file = root / "var/lib/kzguard/state.json"
    saved = state_file.read_bytes()
    again = guard.keep(Root(root), Runner(), DEB_OLD, reason="again")
    assert (again.changed, again.failed, again.message) == (
        False,
        False,
        f"{DEB_OLD} is already kept",
    )
    assert state_file.read_bytes() == saved  # not even the time moves
    moved = guard.keep(Root(root), Runner(), "6.1.0-26-amd64", reason="second")
    assert (moved.changed, moved.before) == (True, entry_id(DEB_OLD))
    kept = record(root)
    assert (kept["original"], kept["kept"], kept["reason"]) == ("0", "6.1.0-26-amd64", "second")
    guard.release(Root(root), Runner())
    assert (root / GRUBENV.lstrip("/")).read_bytes() == grubenv
    # a default that already is the kernel's entry: nothing changes, the guard is recorded
    tree.grubenv(GRUBENV, saved_entry=entry_id(DEB_NEW))
    same = guard.keep(Root(root), Runner(), DEB_NEW, reason="r")
    assert (same.changed, same.failed) == (False, False)
    assert "already the boot default" in same.message
    assert record(root)["original"] == entry_id(DEB_NEW)
    assert guard.release(Root(root), Runner()).changed is False
    assert record(root) == {}


@pytest.mark.real
def test_grub_default_not_saved_is_reported_not_edited(tmp_path, events):
    root = tmp_path / "root"
    debian(root, grub_default="0")
    before = snapshot(root)
    change = guard.keep(Root(root), Runner(), DEB_OLD, reason="r")
    assert change.failed and not change.changed
    assert "GRUB_DEFAULT=0 (/etc/default/grub)" in change.message
    assert "needs GRUB_DEFAULT=saved" in change.message
    assert snapshot(root) == before  # /etc/default/grub untouched, nothing recorded
    assert events[-1][0] == "boot-default-failed"


@pytest.mark.real
def test_no_entry_or_no_bootloader_fails_without_recording(tmp_path):
    root = tmp_path / "root"
    debian(root)
    change = guard.keep(Root(root), Runner(), "6.1.0-99-amd64", reason="r")
    assert change.failed and "grub has no boot entry for 6.1.0-99-amd64" in change.message
    bare = tmp_path / "bare"
    HostTree(bare).os_release("debian12")
    change = guard.keep(Root(bare), Runner(), DEB_OLD, reason="r")
    assert (change.failed, change.loader) == (True, "unknown")
    assert not (root / "var/lib/kzguard/state.json").exists()


@pytest.mark.real
def test_a_failing_tool_rolls_the_record_back(tmp_path):
    root = tmp_path / "root"
    debian(root)
    runner = Runner(env={**os.environ, "PATH": str(tmp_path / "empty")})
    change = guard.keep(Root(root), runner, DEB_OLD, reason="r")
    assert change.failed and "command not found" in change.message
    assert record(root) == {}
    events = state.read(Root(root))["events"]
    assert [e["kind"] for e in events] == ["boot-default-kept"]  # recorded before the change


@pytest.mark.real
def test_release_leaves_a_default_changed_since_alone(tmp_path):
    root = tmp_path / "root"
    tree = debian(root)
    guard.keep(Root(root), Runner(), DEB_OLD, reason="r")
    tree.grubenv(GRUBENV, saved_entry=entry_id(DEB_NEW))  # the admin chose another default
    change = guard.release(Root(root), Runner())
    assert (change.changed, change.failed) == (False, False)
    assert "changed since" in change.message
    assert bl.read_boot(Root(root), Runner()).default.kernel == DEB_NEW
    assert record(root) == {}


# --- GRUB with BLS (Fedora/EL) -------------------------------------------------------------


@pytest.mark.real
def test_bls_without_grubby_uses_grub_editenv(tmp_path):
    root = tmp_path / "root"
    fedora(root, saved_entry=f"{bf.MACHINE_ID}-{FC_NEW}")
    grubenv = (root / "boot/grub2/grubenv").read_bytes()
    change = guard.keep(Root(root), Runner(), FC_OLD, reason="r")
    assert (change.loader, change.after) == ("grub-bls", f"{bf.MACHINE_ID}-{FC_OLD}")
    assert record(root)["method"] == "grub-editenv"
    guard.release(Root(root), Runner())
    assert (root / "boot/grub2/grubenv").read_bytes() == grubenv


@pytest.mark.real
def test_bls_with_grubby_runs_grubby_with_its_real_syntax(tmp_path, fakes):
    root = tmp_path / "root"
    tree = fedora(root)
    tree.write("/usr/sbin/grubby", "#!/bin/bash\n")  # the root has grubby: the host's one runs
    grubenv = (root / "boot/grub2/grubenv").read_bytes()
    change = guard.keep(Root(root), Runner(), FC_OLD, reason="r")
    assert change.after == f"{bf.MACHINE_ID}-{FC_OLD}", change
    assert fakes.grubby() == [
        [
            f"--set-default=/boot/vmlinuz-{FC_OLD}",
            f"--env={root}/boot/grub2/grubenv",
            f"--bls-directory={root}/boot/loader/entries",
        ]
    ]
    # grubby and kzguard agree on the default
    out = run("grubby", "--default-kernel").stdout.strip()
    assert out == f"/boot/vmlinuz-{FC_OLD}"
    assert run("grubby", "--default-index").stdout.strip() == "1"
    info = run("grubby", "--info=ALL").stdout
    assert f'id="{bf.MACHINE_ID}-{FC_OLD}"' in info and "index=2" in info
    assert record(root)["method"] == "grubby"
    guard.release(Root(root), Runner())
    assert (root / "boot/grub2/grubenv").read_bytes() == grubenv  # unset: grub-editenv
    assert len(fakes.grubby()) == 4  # release did not need grubby for an unset original


@pytest.mark.real
def test_grubenv_symlinked_into_the_esp_stays_a_link(tmp_path):
    root = tmp_path / "root"
    tree = fedora(root, grubenv="/boot/efi/EFI/fedora/grubenv", saved_entry="")
    tree.symlink("/boot/grub2/grubenv", "/boot/efi/EFI/fedora/grubenv")  # absolute in the root
    target = root / "boot/efi/EFI/fedora/grubenv"
    original = target.read_bytes()
    guard.keep(Root(root), Runner(), FC_OLD, reason="r")
    assert (root / "boot/grub2/grubenv").is_symlink()
    assert f"saved_entry={bf.MACHINE_ID}-{FC_OLD}".encode() in target.read_bytes()
    assert len(target.read_bytes()) == 1024
    guard.release(Root(root), Runner())
    assert target.read_bytes() == original
    assert os.readlink(root / "boot/grub2/grubenv") == "/boot/efi/EFI/fedora/grubenv"


# --- systemd-boot --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "conf",
    [
        "timeout 3\nconsole-mode max\neditor no\n",
        "timeout 3\n#default arch.conf\ndefault  arch.conf\r\neditor no\n",
        "timeout 3\neditor no",  # no final newline
        "",
    ],
)
def test_loader_conf_round_trip(tmp_path, conf, events):
    root = tmp_path / "root"
    tree = arch_sd(root)
    path = root / "boot/loader/loader.conf"
    path.write_bytes(conf.encode())
    change = guard.keep(Root(root), Runner(), ARCH_LTS, reason="r")
    assert (change.changed, change.after) == (True, "arch-lts.conf"), change
    text = path.read_bytes().decode()
    assert "default arch-lts.conf" in text
    others = [line for line in conf.splitlines() if not line.startswith("default")]
    assert [line for line in text.splitlines() if not line.startswith("default")] == others
    boot = bl.read_boot(Root(root), Runner())
    assert boot.default.kernel == ARCH_LTS
    assert guard.keep(Root(root), Runner(), ARCH_LTS, reason="r").changed is False
    guard.release(Root(root), Runner())
    assert path.read_bytes() == conf.encode()  # byte for byte
    assert tree.host("/boot/loader").is_dir()
    assert [kind for kind, _ in events] == [
        "boot-default-kept",
        "boot-default-released",
    ]


def test_a_loader_conf_kzguard_created_goes_again(tmp_path):
    """systemd-boot told by LoaderInfo, no loader.conf, no LoaderEntryDefault."""
    root = tmp_path / "root"
    tree = arch_sd(root)
    tree.remove("/boot/loader/loader.conf")
    tree.loader_efivar("LoaderInfo", "systemd-boot 257.2-2-arch")
    before = snapshot(root)
    assert guard.keep(Root(root), Runner(), ARCH_LTS, reason="r").changed
    assert (root / "boot/loader/loader.conf").read_text() == "default arch-lts.conf\n"
    guard.release(Root(root), Runner())
    after = {k: v for k, v in snapshot(root).items() if not k.startswith("var/lib/kzguard")}
    assert after == before
    assert not (root / "boot/loader/loader.conf").exists()


def test_loader_conf_dry_run_writes_nothing(tmp_path):
    root = tmp_path / "root"
    arch_sd(root)
    before = snapshot(root)
    assert guard.keep(Root(root), Runner(dry_run=True), ARCH_LTS, reason="r").changed
    assert snapshot(root) == before


def test_the_efi_variable_is_set_with_bootctl(tmp_path, fakes):
    root = tmp_path / "root"
    tree = arch_sd(root)
    tree.write("/boot/loader/loader.conf", "default arch-lts.conf\n")
    var = tree.loader_efivar("LoaderEntryDefault", "arch.conf")
    original, conf = var.read_bytes(), (root / "boot/loader/loader.conf").read_bytes()
    change = guard.keep(Root(root), Runner(), ARCH_LTS, reason="r")
    assert (change.before, change.after) == ("arch.conf", "arch-lts.conf")
    assert fakes.bootctl() == [["set-default", "arch-lts.conf"]]
    assert var.read_bytes() == b"\x07\0\0\0" + "arch-lts.conf\0".encode("utf-16-le")
    assert (root / "boot/loader/loader.conf").read_bytes() == conf  # the variable wins
    assert record(root)["method"] == "bootctl"
    guard.release(Root(root), Runner())
    assert fakes.bootctl()[-1] == ["set-default", "arch.conf"]
    assert var.read_bytes() == original
    # a dry run runs no bootctl
    guard.keep(Root(root), Runner(dry_run=True), ARCH_LTS, reason="r")
    assert len(fakes.bootctl()) == 2


def test_a_one_shot_entry_is_mentioned(tmp_path):
    root = tmp_path / "root"
    tree = arch_sd(root)
    tree.write("/boot/loader/loader.conf", "default arch-lts*\n")
    tree.loader_efivar("LoaderEntryOneShot", "arch.conf")
    change = guard.keep(Root(root), Runner(), ARCH_LTS, reason="r")
    assert "the next boot only uses arch.conf" in change.message


# --- ZFSBootMenu ---------------------------------------------------------------------------


def test_zfsbootmenu_property_round_trip(tmp_path, fake_zfs):
    root = tmp_path / "root"
    zbm(root)
    change = guard.keep(Root(root), Runner(), DEB_OLD, reason="r")
    assert (change.loader, change.before, change.after) == ("zfsbootmenu", None, DEB_OLD)
    assert ["set", f"org.zfsbootmenu:kernel={DEB_OLD}", "rpool/ROOT/debian"] in fake_zfs.calls()
    assert bl.read_boot(Root(root), Runner()).next.kernel == DEB_OLD
    assert record(root)["dataset"] == "rpool/ROOT/debian"
    guard.release(Root(root), Runner())
    assert fake_zfs.calls()[-2] == ["inherit", "org.zfsbootmenu:kernel", "rpool/ROOT/debian"]
    out = run(
        "zfs", "get", "-H", "-o", "value,source", "org.zfsbootmenu:kernel", "rpool/ROOT/debian"
    )
    assert out.stdout == "-\t-\n"
    # a local value comes back as it was
    run("zfs", "set", "org.zfsbootmenu:kernel=6.1", "rpool/ROOT/debian")
    guard.keep(Root(root), Runner(), DEB_OLD, reason="r")
    guard.release(Root(root), Runner())
    assert (
        run("zfs", "get", "-H", "-o", "value", "org.zfsbootmenu:kernel", "rpool/ROOT/debian").stdout
        == "6.1\n"
    )
    # a dry run sets nothing
    calls = len(fake_zfs.calls())
    guard.keep(Root(root), Runner(dry_run=True), DEB_OLD, reason="r")
    assert not [c for c in fake_zfs.calls()[calls:] if c[0] in ("set", "inherit")]


def test_zfsbootmenu_without_a_zfs_command_fails_cleanly(tmp_path):
    root = tmp_path / "root"
    zbm(root)
    runner = Runner(env={"PATH": str(tmp_path / "empty")})
    boot = bl.read_boot(Root(root), runner)
    assert boot.next.kernel == DEB_NEW
    assert "cannot read org.zfsbootmenu:kernel" in boot.problems[0]
    change = guard.keep(Root(root), runner, DEB_OLD, reason="r")
    assert change.failed and "command not found" in change.message
    assert record(root) == {}


def test_zfsbootmenu_keeps_an_arch_kernel_by_file_name(tmp_path, fake_zfs):
    root = tmp_path / "root"
    tree = HostTree(root).os_release("arch").zfs_root("zroot/ROOT/arch")
    tree.write("/etc/zfsbootmenu/config.yaml", "Global: {}\n")
    for release, base in ((ARCH, "linux"), (ARCH_LTS, "linux-lts")):
        tree.kernel(release, modules_root="/usr/lib/modules")
        tree.write(f"/usr/lib/modules/{release}/pkgbase", base + "\n")
        tree.boot_kernel(base)  # /boot/vmlinuz-linux, /boot/initramfs-linux.img
    change = guard.keep(Root(root), Runner(), ARCH_LTS, reason="r")
    assert change.after == "vmlinuz-linux-lts"  # the release is not in the file name
    assert bl.read_boot(Root(root), Runner()).next.kernel == ARCH_LTS


# --- the CLI -------------------------------------------------------------------------------


def cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kzguard", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def debian_failed_module(path: Path) -> HostTree:
    """Debian 12 where dkms built zfs for the running kernel and left nothing for the new one;
    update-grub has listed both, GRUB_DEFAULT=saved."""
    tree = sc.debian_dkms(path)
    tree.kernel(sc.DEBIAN_BPO)
    tree.dkms("zfs", "2.2.7", sc.DEBIAN_BPO, state="built")
    releases = (sc.DEBIAN_RUNNING, sc.DEBIAN_BPO)
    for release in releases:
        tree.boot_kernel(release, "initrd.img-{}")
    tree.write("/boot/grub/grub.cfg", bf.debian_grub_cfg(releases))
    tree.write("/etc/default/grub", bf.default_grub("saved"))
    tree.grubenv(GRUBENV)
    return tree


@pytest.mark.real
def test_cli_boot_show_keep_release(tmp_path):
    need("grub-editenv", "gcc")
    root = tmp_path / "root"
    debian_failed_module(root)
    grubenv = (root / GRUBENV.lstrip("/")).read_bytes()

    shown = cli("--root", str(root), "boot", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["loader"] == "grub"
    assert data["next"]["kernel"] == sc.DEBIAN_BPO
    assert (data["next"]["safe"], data["next"]["verdict"]) == (False, "unsafe")
    assert data["guard"] is None
    by_id = {e["id"]: e for e in data["entries"]}
    assert by_id[entry_id(sc.DEBIAN_RUNNING)]["safe"] is True
    assert by_id["uefi-firmware"]["verdict"] is None

    refused = cli("--root", str(root), "boot", "keep", sc.DEBIAN_BPO)
    assert refused.returncode == 1
    assert f"refusing to keep {sc.DEBIAN_BPO}" in refused.stderr
    assert "--force" in refused.stderr
    missing = cli("--root", str(root), "boot", "keep", "6.1.0-99-amd64")
    assert missing.returncode == 2 and "has no boot entry" in missing.stderr
    dry = cli("boot", "keep", sc.DEBIAN_RUNNING, "--root", str(root), "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("kzguard: would keep")
    assert (root / GRUBENV.lstrip("/")).read_bytes() == grubenv

    kept = cli("--root", str(root), "boot", "keep", sc.DEBIAN_RUNNING, "--reason", "zfs failed")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith(f"kzguard: kept {sc.DEBIAN_RUNNING} as the boot default")
    shown = json.loads(cli("--root", str(root), "boot", "show", "--json").stdout)
    assert (shown["next"]["kernel"], shown["next"]["safe"]) == (sc.DEBIAN_RUNNING, True)
    assert shown["guard"]["kept"] == sc.DEBIAN_RUNNING
    assert shown["guard"]["reason"].endswith(": zfs failed")
    status = json.loads(cli("--root", str(root), "status", "--json").stdout)
    assert status["next_boot"] == {
        "release": sc.DEBIAN_RUNNING,
        "safe": True,
        "verdict": "safe",
        "source": "grub: grubenv saved_entry",
    }
    assert status["host"]["boot"]["default"]["id"] == entry_id(sc.DEBIAN_RUNNING)
    text = cli("--root", str(root), "boot", "show").stdout
    assert f"Next boot   {sc.DEBIAN_RUNNING}  safe" in text
    assert f"Guard       kzguard keeps {sc.DEBIAN_RUNNING}" in text

    released = cli("--root", str(root), "boot", "release", "--json")
    assert released.returncode == 0
    assert json.loads(released.stdout)["changed"] is True
    assert (root / GRUBENV.lstrip("/")).read_bytes() == grubenv
    forced = cli("--root", str(root), "boot", "keep", sc.DEBIAN_BPO, "--force")
    assert forced.returncode == 0, forced.stderr


@pytest.mark.real
def test_cli_keep_reports_why_the_guard_cannot_act(tmp_path):
    need("grub-editenv", "gcc")
    root = tmp_path / "root"
    tree = debian_failed_module(root)
    tree.write("/etc/default/grub", bf.default_grub("0"))
    proc = cli("--root", str(root), "boot", "keep", sc.DEBIAN_RUNNING)
    assert proc.returncode == 1
    assert "needs GRUB_DEFAULT=saved" in proc.stderr


BOOT_RACER = """
import sys
from kzguard.actions import boot
from kzguard.root import Root, Runner
root, releases = Root(sys.argv[1]), sys.argv[2:]
for release in releases:
    change = boot.keep(root, Runner(), release, reason="race")
    assert not change.failed, change.message
"""


@pytest.mark.real
def test_twenty_racing_keeps_lose_neither_the_original_nor_grubenv(tmp_path):
    """20 processes move GRUB's default at once: grubenv stays whole, the state records the
    true original, and one release puts it back byte for byte."""
    import sys

    root = tmp_path / "root"
    releases = (DEB_OLD, DEB_NEW, "6.1.0-26-amd64")
    debian(root, releases=releases, saved_entry="0")
    grubenv = (root / GRUBENV.lstrip("/")).read_bytes()
    procs = [
        subprocess.Popen([sys.executable, "-c", BOOT_RACER, str(root), *releases[n % 2 :]])
        for n in range(20)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * 20
    kept = record(root)
    assert kept["original"] == "0" and kept["kept"] in releases
    env = run("grub-editenv", root / GRUBENV.lstrip("/"), "list").stdout
    assert env == f"saved_entry={entry_id(kept['kept'])}\n"
    assert guard.release(Root(root), Runner()).changed
    assert (root / GRUBENV.lstrip("/")).read_bytes() == grubenv
