"""The post-install check: verdicts to actions by on_module_failure, on_error, the hook files.

The boot default guard is replaced here by a recorder (its own tests drive the bootloaders);
tests/test_postinstall_e2e.py runs the hook files against real grubenv files and BLS entries.
"""

from __future__ import annotations

import io
import subprocess
import sys
import types
from pathlib import Path

import pytest

import kzguard.actions
from devtools.hostbuilder import HostTree
from kzguard.actions import apt_hold, pin, state
from kzguard.base.errors import CommandError
from kzguard.config import load_config
from kzguard.context import Context
from kzguard.guard import postinstall
from kzguard.root import Root, Runner
from tests import scenarios as sc
from tests.tools import alpm_sections, run

pytestmark = pytest.mark.real  # root trees hold gcc-built modules

TOP = Path(__file__).resolve().parent.parent
OLD, NEW = sc.DEBIAN_RUNNING, sc.DEBIAN_BPO  # 6.1.0-28-amd64, 6.12.9+bpo-amd64
MIDDLE = "6.10.11+bpo-amd64"


class BootRecorder:
    """Stands in for kzguard.actions.boot: records keep() calls, or fails with ``error``."""

    def __init__(self):
        self.calls: list[tuple[str, str, bool]] = []
        self.released = 0
        self.error = None
        self.failed = False

    def module(self) -> types.ModuleType:
        fake = types.ModuleType("kzguard.actions.boot")

        def keep(root, runner, release, *, reason):
            if self.error:
                raise self.error
            self.calls.append((release, reason, runner.dry_run))
            if self.failed:
                message = f"cannot keep {release} as the boot default: GRUB_DEFAULT=0"
            else:
                message = f"kept the boot default on {release}"
            return types.SimpleNamespace(
                changed=not self.failed,
                loader="grub",
                before="new",
                after=release,
                message=message,
                failed=self.failed,
            )

        def release(root, runner):
            self.released += 1
            return types.SimpleNamespace(changed=True, message="released the guard")

        fake.keep = keep
        fake.release = release
        return fake


@pytest.fixture
def boot(monkeypatch) -> BootRecorder:
    recorder = BootRecorder()
    fake = recorder.module()
    monkeypatch.setitem(sys.modules, "kzguard.actions.boot", fake)
    monkeypatch.setattr(kzguard.actions, "boot", fake, raising=False)
    return recorder


def debian(path: Path, *, module: bool) -> HostTree:
    """Debian 12 with zfs-dkms 2.2.7, the running kernel good, and a new backports kernel whose
    DKMS build left a module (``module``) or did not (DKMS says built, nothing installed)."""
    return sc.debian_new_kernel(path, NEW, module=module)


def check(path: Path, release: str = NEW, *, dry_run: bool = False) -> postinstall.Outcome:
    root = Root(path)
    config = load_config(root, None)
    return postinstall.check(Context(root, Runner(dry_run=dry_run), config=config), release)


def test_a_good_kernel_becomes_the_last_good_one(tmp_path, boot):
    debian(tmp_path, module=True)
    outcome = check(tmp_path)
    assert (outcome.verdict, outcome.action, outcome.exit_code) == ("safe", "recorded", 0)
    assert (
        outcome.lines[0]
        == f"kzguard: kernel {NEW} passed the post-install check: zfs 2.2.7-1, spl 2.2.7-1"
    )
    assert outcome.lines[1] == f"kzguard: recorded {NEW} as the last good kernel"
    data = state.read(Root(tmp_path))
    assert data["last_good"] == NEW and data["pins"] == {}
    assert boot.calls == []


def test_a_failed_module_keeps_the_default_and_pins_the_kernel(tmp_path, boot):
    debian(tmp_path, module=False)
    outcome = check(tmp_path)
    assert (outcome.verdict, outcome.action, outcome.exit_code) == ("unsafe", "keep-default", 0)
    text = "\n".join(outcome.lines)
    assert outcome.lines[0].startswith(
        f"kzguard: kernel {NEW} failed the post-install check (unsafe): no zfs.ko"
    )
    assert "DKMS zfs for 6.12.9+bpo-amd64: built" in outcome.lines[0]
    assert f"kzguard: kept the boot default on {OLD}" in text
    assert f"kzguard: pinned kernel {NEW}: no package manager installs it again" in text
    assert "what to do" in text and f"kzguard check --kernel {NEW}" in text
    assert f"`kzguard pin remove {NEW}` and `kzguard boot release`" in text
    (call,) = boot.calls
    assert call[0] == OLD and NEW in call[1] and call[2] is False
    root = Root(tmp_path)
    info = pin.current(root)[NEW]
    assert info.auto and info.codes == ("module-missing", "dkms-not-installed")
    assert info.reason == f"{pin.POST_INSTALL_REASON} (module-missing, dkms-not-installed)"
    assert [p.kind for p in apt_hold.read(root)[0]] == ["pin"]
    kinds = [e["kind"] for e in state.read(root)["events"]]
    assert kinds == ["pin-added", "post-install-failed"]


def test_fail_does_the_same_and_exits_1(tmp_path, boot):
    tree = debian(tmp_path, module=False)
    tree.config("on_module_failure: fail\n")
    outcome = check(tmp_path)
    assert (outcome.action, outcome.exit_code) == ("fail", 1)
    assert [c[0] for c in boot.calls] == [OLD] and NEW in pin.current(Root(tmp_path))


def test_warn_only_reports(tmp_path, boot):
    tree = debian(tmp_path, module=False)
    tree.config("on_module_failure: warn\n")
    outcome = check(tmp_path)
    assert (outcome.action, outcome.exit_code) == ("warn", 0)
    assert "on_module_failure is warn: nothing changed" in outcome.lines[1]
    assert boot.calls == [] and pin.current(Root(tmp_path)) == {}
    assert not (tmp_path / apt_hold.PREFERENCES.lstrip("/")).exists()


def test_dry_run_changes_nothing(tmp_path, boot):
    debian(tmp_path, module=False)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    outcome = check(tmp_path, dry_run=True)
    assert outcome.exit_code == 0
    assert f"kzguard: would pin kernel {NEW}" in "\n".join(outcome.lines)
    assert [c[2] for c in boot.calls] == [True]  # the guard was asked under --dry-run
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_the_recorded_last_good_kernel_wins_while_it_is_safe(tmp_path, boot):
    tree = debian(tmp_path, module=False)
    tree.kernel(MIDDLE)
    for name in ("zfs", "spl"):
        tree.module(MIDDLE, name, "2.2.7-1")
    tree.dkms("zfs", "2.2.7", MIDDLE)
    with state.locked(Root(tmp_path)) as st:
        st.data["last_good"] = OLD
        st.save()
    check(tmp_path)
    assert boot.calls[-1][0] == OLD
    with state.locked(Root(tmp_path)) as st:  # gone: the newest safe kernel
        st.data["last_good"] = "6.1.0-20-amd64"
        st.save()
    pin.remove(Context(Root(tmp_path), Runner()), NEW, why="test")
    check(tmp_path)
    assert boot.calls[-1][0] == MIDDLE


def test_without_a_good_kernel_nothing_is_kept_but_the_kernel_is_pinned(tmp_path, boot):
    tree = HostTree(tmp_path).os_release("debian12").running(NEW)
    tree.zfs_source("2.2.7", "4.18", "6.12")
    tree.kernel(NEW)
    outcome = check(tmp_path)
    assert "no other installed kernel passes the check" in outcome.lines[1]
    assert "do not reboot" in outcome.lines[1]
    assert boot.calls == [] and NEW in pin.current(Root(tmp_path))
    assert outcome.exit_code == 0 and outcome.error is None


def test_a_guard_that_fails_still_pins_and_meets_on_error(tmp_path, boot, capsys):
    tree = debian(tmp_path, module=False)
    boot.error = CommandError(["grub-editenv", "/boot/grub/grubenv", "set"], 1, "", "no space")
    code = postinstall.hook_main([NEW], root_option=str(tmp_path))
    err = capsys.readouterr().err
    assert code == 1  # on_error: block, the default
    assert f"could not keep the boot default on {OLD}: grub-editenv" in err
    assert f"pinned kernel {NEW}" in err
    assert "exiting 1 so that the package manager reports" in err and "(on_error = block)" in err
    tree.config("on_error: allow\n")
    pin.remove(Context(Root(tmp_path), Runner()), NEW, why="test")
    assert postinstall.hook_main([NEW], root_option=str(tmp_path)) == 0
    assert f"kernel {NEW} stays installed unchecked" in capsys.readouterr().err


def test_a_guard_that_cannot_act_here_is_a_warning_not_an_error(tmp_path, boot, capsys):
    debian(tmp_path, module=False)
    boot.failed = True
    assert postinstall.hook_main([NEW], root_option=str(tmp_path)) == 0
    err = capsys.readouterr().err
    assert f"kzguard: WARNING: cannot keep {OLD} as the boot default: GRUB_DEFAULT=0" in err
    assert f"WARNING: the next boot may use {NEW}, whose zfs module will not load" in err
    assert NEW in pin.current(Root(tmp_path)) and "failed inside" not in err


def test_the_guard_goes_once_the_pinned_kernel_passes_unless_an_admin_set_it(tmp_path, boot):
    tree = debian(tmp_path, module=False)
    check(tmp_path)
    with state.locked(Root(tmp_path)) as st:  # what boot.keep records
        st.data["boot"] = {"loader": "grub", "kept": OLD, "reason": boot.calls[0][1]}
        st.save()
    for name in ("zfs", "spl"):
        tree.module(NEW, name, "2.2.7-1")
    tree.dkms("zfs", "2.2.7", NEW)
    outcome = check(tmp_path)
    assert boot.released == 1 and "kzguard: released the guard" in outcome.lines
    # an admin's `kzguard boot keep` is not the post-install check's to release
    tree.remove(f"/lib/modules/{NEW}/updates")
    check(tmp_path)
    with state.locked(Root(tmp_path)) as st:
        st.data["boot"] = {"loader": "grub", "kept": OLD, "reason": "kept by root"}
        st.save()
    for name in ("zfs", "spl"):
        tree.module(NEW, name, "2.2.7-1")
    check(tmp_path)
    assert boot.released == 1 and pin.current(Root(tmp_path)) == {}


def test_a_kernel_that_is_not_installed_meets_on_error(tmp_path, boot, capsys):
    tree = debian(tmp_path, module=True)
    assert postinstall.hook_main(["6.13.1-amd64"], root_option=str(tmp_path)) == 1
    assert "kernel 6.13.1-amd64 is not installed" in capsys.readouterr().err
    tree.config("on_error: allow\n")
    assert postinstall.hook_main(["6.13.1-amd64"], root_option=str(tmp_path)) == 0


def test_a_bad_configuration_meets_the_default_on_error(tmp_path, boot, capsys):
    debian(tmp_path, module=True).config("on_module_failure: maybe\n")
    assert postinstall.hook_main([NEW], root_option=str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "kzguard failed inside the post-install hook" in err
    assert (
        "on_module_failure" in err and "the default, as the configuration could not be read" in err
    )


def test_a_pin_lifts_itself_once_zfs_is_upgraded(tmp_path, boot):
    """The kernel failed with ZFS 2.2.7; ZFS 2.3.1 comes and DKMS builds it for the kernel."""
    tree = debian(tmp_path, module=False)
    check(tmp_path)
    assert NEW in pin.current(Root(tmp_path))
    tree.zfs_source("2.3.1", "4.18", "6.13")
    for name in ("zfs", "spl"):
        tree.module(NEW, name, "2.3.1-1")
    tree.dkms("zfs", "2.3.1", NEW)
    outcome = check(tmp_path)
    assert outcome.verdict == "safe"
    assert f"kzguard: lifted the pin on kernel {NEW}: a new check finds it safe" in outcome.lines
    assert pin.current(Root(tmp_path)) == {}
    assert not (tmp_path / apt_hold.PREFERENCES.lstrip("/")).exists()
    assert state.read(Root(tmp_path))["last_good"] == NEW


def test_releases_from_pacman_targets(tmp_path):
    tree = HostTree(tmp_path)
    for release in ("6.12.4-arch1-1", "6.6.63-1-lts"):
        tree.kernel(release, modules_root="/usr/lib/modules")
    root = Root(tmp_path)
    lines = ["usr/lib/modules/6.12.10-arch1-1/vmlinuz\n", "linux\n", ""]
    assert postinstall.releases_from_targets(root, lines) == ["6.12.10-arch1-1"]
    pin.add(Context(root, Runner()), "6.6.63-1-lts", reason="r", who="t", auto=True)
    pin.add(
        Context(root, Runner()), "6.12.4-arch1-1", reason="admin", who="root"
    )  # manual: not rechecked
    pin.add(
        Context(root, Runner()), "6.14.1-arch1-1", reason="r", who="t", auto=True
    )  # not installed
    lines = ["usr/lib/modules/6.12.10-arch1-1/vmlinuz", "usr/src/zfs-2.3.1/META"]
    assert postinstall.releases_from_targets(root, lines) == ["6.12.10-arch1-1", "6.6.63-1-lts"]


def test_the_cli_reads_targets_on_stdin(tmp_path, boot, capsys, monkeypatch):
    debian(tmp_path, module=True)
    from kzguard import cli

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"usr/lib/modules/{NEW}/vmlinuz\n"))
    assert cli.main(["--root", str(tmp_path), "hook", "post-install", "--targets"]) == 0
    assert f"kernel {NEW} passed the post-install check" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["hook", "post-install"], ["hook", "apt", NEW], ["hook", "post-install", NEW, "--targets"]],
)
def test_cli_usage_errors(argv, capsys):
    from kzguard import cli

    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith("kzguard: hook ")


# --- the hook files ----------------------------------------------------------------------------

POSTINST = TOP / "hooks" / "postinst.d" / "kzguard"
KERNEL_INSTALL = TOP / "hooks" / "kernel-install" / "60-kzguard.install"
ALPM_HOOK = TOP / "hooks" / "pacman" / "95-kzguard-post.hook"


def test_run_parts_runs_kzguard_after_dkms_and_initramfs_and_before_grub(tmp_path):
    """Debian's run-parts, on the scripts a ZFS host has in /etc/kernel/postinst.d."""
    scripts = tmp_path / "postinst.d"
    scripts.mkdir()
    names = ["apt-auto-removal", "dkms", "initramfs-tools", "unattended-upgrades"]
    names += ["xx-update-initrd-links", "zz-proxmox-boot", "zz-update-grub", POSTINST.name]
    for name in names:
        (scripts / name).write_text("#!/bin/sh\n")
        (scripts / name).chmod(0o755)
    order = [Path(line).name for line in run("run-parts", "--test", scripts).stdout.split()]
    assert POSTINST.name in order  # a valid run-parts name (no dots)
    here = order.index("kzguard")
    assert order.index("dkms") < here and order.index("initramfs-tools") < here
    assert here < order.index("zz-update-grub") and here < order.index("zz-proxmox-boot")
    assert here < order.index("xx-update-initrd-links")


def test_the_kernel_install_plugin_sorts_after_dkms_and_dracut():
    plugins = ["20-grub.install", "40-dkms.install", "50-depmod.install", "50-dracut.install"]
    plugins += ["51-dracut-rescue.install", "90-loaderentry.install", KERNEL_INSTALL.name]
    order = sorted(plugins)
    assert order.index(KERNEL_INSTALL.name) == order.index("51-dracut-rescue.install") + 1
    assert KERNEL_INSTALL.stat().st_mode & 0o111 and POSTINST.stat().st_mode & 0o111


def fake_kzguard(tmp_path: Path) -> dict[str, str]:
    """A ``kzguard`` on PATH that prints its arguments, one a line."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "kzguard"
    script.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    script.chmod(0o755)
    return {"PATH": f"{bindir}:/usr/bin:/bin"}


@pytest.mark.parametrize(
    ("hook", "args", "env", "expected"),
    [
        (
            KERNEL_INSTALL,
            ["add", NEW, "/boot/x", "/lib/modules/x/vmlinuz"],
            {},
            ["hook", "post-install", NEW],
        ),
        (KERNEL_INSTALL, ["remove", NEW], {}, []),
        (POSTINST, [NEW, f"/boot/vmlinuz-{NEW}"], {}, ["hook", "post-install", NEW]),
        (
            POSTINST,
            [NEW],
            {"DEB_MAINT_PARAMS": "configure 6.12.9-1"},
            ["hook", "post-install", NEW],
        ),
        (POSTINST, [NEW], {"DEB_MAINT_PARAMS": "abort-upgrade 1"}, []),
        (
            POSTINST,
            [NEW],
            {"KZGUARD_ROOT": "/srv/a root", "KZGUARD_DRY_RUN": "1"},
            ["--root", "/srv/a root", "--dry-run", "hook", "post-install", NEW],
        ),
    ],
)
def test_hook_scripts_call_kzguard(tmp_path, hook, args, env, expected):
    proc = run("sh", hook, *args, env={**fake_kzguard(tmp_path), **env})
    assert proc.stdout.splitlines() == expected


def test_hook_scripts_do_nothing_without_kzguard(tmp_path):
    env = {"PATH": str(tmp_path)}
    assert run("/bin/sh", POSTINST, NEW, env=env).returncode == 0
    assert run("/bin/sh", KERNEL_INSTALL, "add", NEW, env=env).returncode == 0


def test_the_alpm_hook_runs_after_dkms_and_mkinitcpio(tmp_path):
    sections = alpm_sections(ALPM_HOOK)
    assert [name for name, _ in sections] == ["Trigger", "Action"]
    trigger, action = sections[0][1], dict(sections[1][1])
    assert action["When"] == "PostTransaction" and "NeedsTargets" in action
    assert "AbortOnFail" not in action  # PreTransaction only
    assert action["Exec"] == "/usr/bin/kzguard hook post-install --targets"
    assert (
        sorted([ALPM_HOOK.name, "70-dkms-install.hook", "90-mkinitcpio-install.hook"])[-1]
        == ALPM_HOOK.name
    )
    assert {v for k, v in trigger if k == "Operation"} == {"Install", "Upgrade"}
    targets = [v for k, v in trigger if k == "Target"]
    assert targets == ["usr/lib/modules/*/vmlinuz", "usr/src/zfs-*/META"]
    root = Root(tmp_path)
    examples = [t.replace("*", "6.12.10-arch1-1", 1) for t in targets[:1]]
    assert postinstall.releases_from_targets(root, examples) == ["6.12.10-arch1-1"]


def test_importing_the_cli_for_a_post_install_hook_stays_light():
    code = (
        "import sys, kzguard.cli; kzguard.cli.build_parser();"
        "heavy = {'yaml', 'kzguard.facts.host', 'kzguard.guard.postinstall'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
