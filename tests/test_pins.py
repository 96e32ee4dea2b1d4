"""Pins: the state file and each manager's own form, the gate's refusal, lifting, the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from devtools.hostbuilder import HostTree
from kzguard.actions import apt_hold, pin, state
from kzguard.base.transaction import Transaction
from kzguard.config import Config
from kzguard.context import Context
from kzguard.facts.host import gather
from kzguard.guard.gate import run_gate
from kzguard.guard.hook_process import hook_main
from kzguard.judge.decision import BLOCK, WARN, decide
from kzguard.judge.holds import liftable
from kzguard.judge.policy import judge
from kzguard.managers import apt, dnf, pacman
from kzguard.root import Root, Runner
from tests import scenarios as sc

DEB_NEW = "6.12.9+bpo-amd64"
ARCH_OLD, ARCH_NEW = "6.12.4-arch1-1", "6.12.10-arch1-1"
REASON = f"{pin.POST_INSTALL_REASON} (module-missing)"


def _pin_as_the_check_does(root: Root, release: str, code: str) -> list[str]:
    """The pin a failed post-install check makes (auto, with its reason code)."""
    return pin.add(
        Context(root, Runner()), release, reason=REASON, who="t", codes=[code], auto=True
    )


def pinned_state(tmp_path) -> dict:
    return json.loads((tmp_path / state.STATE_FILE.lstrip("/")).read_text())["pins"]


def debian_root(path) -> HostTree:
    tree = HostTree(path).os_release("debian12")
    tree.write("/var/lib/dpkg/status", "")
    return tree


# --- managers and the state file ---------------------------------------------------------------


def test_apt_pin_lives_in_the_state_and_the_preferences_file(tmp_path):
    debian_root(tmp_path)
    root = Root(tmp_path)
    lines = pin.add(
        Context(root, Runner()),
        DEB_NEW,
        reason=REASON,
        who="kzguard post-install",
        codes=["module-missing"],
        auto=True,
    )
    assert lines[0] == (
        f"kzguard: pinned kernel {DEB_NEW}: no package manager installs it again until a check "
        "finds it safe"
    )
    assert "Pin-Priority -1 in /etc/apt/preferences.d/kzguard" in lines[1]
    record = pinned_state(tmp_path)[DEB_NEW]
    assert record["reason"] == REASON and record["manager"] == "apt" and record["auto"] is True
    assert record["who"] == "kzguard post-install" and record["time"].endswith("Z")
    assert record["codes"] == ["module-missing"]
    (stanza,) = apt_hold.read(root)[0]
    assert (stanza.kind, stanza.subject, stanza.codes) == ("pin", DEB_NEW, ("module-missing",))
    assert f"linux-image-{DEB_NEW}" in stanza.packages
    assert [p.release for p in pin.current(root).values()] == [DEB_NEW]
    events = [e["kind"] for e in state.read(root)["events"]]
    assert events == ["pin-added"]
    # pinning again changes nothing
    again = pin.add(Context(root, Runner()), DEB_NEW, reason="other", who="x", auto=True)
    assert again == [f"kzguard: {DEB_NEW} stays pinned ({REASON}, since {record['time']})"]
    assert pinned_state(tmp_path)[DEB_NEW] == record

    lines = pin.remove(Context(root, Runner()), DEB_NEW, why="removed by root")
    assert lines[0] == f"kzguard: lifted the pin on kernel {DEB_NEW}: removed by root"
    assert "lifted the pin on kernel" in lines[1] and apt_hold.PREFERENCES in lines[1]
    assert pinned_state(tmp_path) == {}
    assert not (tmp_path / apt_hold.PREFERENCES.lstrip("/")).exists()
    assert pin.remove(Context(root, Runner()), DEB_NEW, why="x") == [
        f"kzguard: {DEB_NEW} is not pinned"
    ]
    # a stanza whose state entry was lost (a corrupt state file) still goes with `pin remove`
    pin.add(Context(root, Runner()), DEB_NEW, reason=REASON, who="t", auto=True)
    (tmp_path / state.STATE_FILE.lstrip("/")).unlink()
    (line,) = pin.remove(Context(root, Runner()), DEB_NEW, why="x")
    assert line.startswith(f"kzguard: apt: lifted the pin on kernel {DEB_NEW}")
    assert apt_hold.read(root) == ([], [])


def test_an_apt_run_does_not_lift_a_kernel_pin(tmp_path):
    """apt's own upkeep lifts the holds of its hold policy, never a post-install pin."""
    debian_root(tmp_path).kernel(sc.DEBIAN_RUNNING).zfs_source("2.2.7", "4.18", "6.12")
    root = Root(tmp_path)
    _pin_as_the_check_does(root, DEB_NEW, "module-missing")
    assert apt.lift_unneeded(Context(root, Runner()), Transaction("apt")) == []
    assert [p.kind for p in apt_hold.read(root)[0]] == ["pin"]
    assert DEB_NEW in pinned_state(tmp_path)


def test_apt_hold_entries_are_not_kernel_pins(tmp_path):
    data = {"pins": {"apt:series 6.13": {"release": "6.13.2-amd64"}, DEB_NEW: {"reason": "r"}}}
    assert list(pin.from_state(data)) == [DEB_NEW]
    assert pin.refusals(data) == {DEB_NEW: "r"}


def test_dry_run_changes_nothing(tmp_path):
    debian_root(tmp_path)
    root = Root(tmp_path)
    lines = pin.add(Context(root, Runner(dry_run=True)), DEB_NEW, reason=REASON, who="t", auto=True)
    assert lines[0].startswith(f"kzguard: would pin kernel {DEB_NEW}")
    assert "would pin the packages" in lines[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etc", "var"]
    assert not (tmp_path / "var/lib/kzguard/state.json").exists()
    assert not (tmp_path / apt_hold.PREFERENCES.lstrip("/")).exists()


def test_dnf5_pin_is_a_versionlock_exclude(tmp_path):
    pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    tree = HostTree(tmp_path)
    tree.write("/usr/lib/sysimage/rpm/rpmdb.sqlite", "")
    tree.write("/usr/bin/dnf5", "")
    root = Root(tmp_path)
    lines = pin.add(Context(root, Runner()), sc.FEDORA_NEW, reason=REASON, who="t", auto=True)
    assert any("dnf: the kzguard plugin keeps the packages" in line for line in lines)
    assert any(f"dnf5: holding {sc.FEDORA_NEW} back" in line for line in lines)
    text = (tmp_path / "etc/dnf/versionlock.toml").read_text()
    assert 'name = "kernel-core"' in text and 'value = "6.13.2-200.fc41"' in text
    # the dnf plugin's exclude list comes from the same state entry
    assert [h.release for h in dnf.pinned(root)] == [sc.FEDORA_NEW]
    pin.remove(Context(root, Runner()), sc.FEDORA_NEW, why="t")
    assert not (tmp_path / "etc/dnf/versionlock.toml").exists()
    assert dnf.pinned(root) == []


@pytest.mark.real  # gcc-built modules
def test_dnf5_upkeep_keeps_the_hold_of_a_pinned_kernel(tmp_path):
    pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    from kzguard.managers import dnf5

    sc.fedora_dkms(tmp_path)
    HostTree(tmp_path).write("/usr/bin/dnf5", "")
    root = Root(tmp_path)
    pin.add(Context(root, Runner()), sc.FEDORA_NEW, reason=REASON, who="t", auto=True)
    hook = dnf5.Dnf5Input(Transaction("dnf5"), hook="repos_configured", plugin="1.4.0")
    assert dnf5.maintain(Context(Root(tmp_path), Runner()), hook) == []
    assert "6.13.2-200.fc41" in (tmp_path / "etc/dnf/versionlock.toml").read_text()


def test_a_root_without_a_package_manager_keeps_the_pin_in_the_state(tmp_path):
    lines = pin.add(Context(Root(tmp_path), Runner()), DEB_NEW, reason="r", who="t")
    assert lines[-1].endswith("the pin is in the state file only")
    assert pinned_state(tmp_path)[DEB_NEW]["manager"] == ""


# --- the gate refuses a pinned kernel -----------------------------------------------------------


@pytest.mark.real  # gcc-built modules
def test_decide_refuses_a_pinned_kernel_even_when_it_is_safe(tmp_path):
    sc.fedora_dkms(tmp_path)
    good = "6.12.11-200.fc41.x86_64"
    report = judge(gather(Root(tmp_path)), {}, transaction=Transaction("dnf", install=(good,)))
    assert report.kernels[-1].safe
    pins = {good: REASON}
    decision = decide(report, on_unsupported="block", on_unknown="warn", pinned=pins)
    assert (decision.action, decision.blocked) == (BLOCK, (good,))
    assert decision.codes == ((good, ("pinned",)),)
    assert decision.lines[0] == f"kzguard: refusing kernel {good}: {REASON}"
    assert f"kzguard pin remove {good}" in decision.lines[1]
    assert f"kzguard allow {good}" in decision.lines[2]
    allowed = decide(report, on_unsupported="block", on_unknown="warn", pinned=pins, allowed={good})
    assert (allowed.action, allowed.allowed) == (WARN, (good,))
    # removing a pinned kernel is never refused
    removal = judge(gather(Root(tmp_path)), {}, transaction=Transaction("dnf", remove=(good,)))
    assert decide(removal, on_unsupported="block", on_unknown="warn", pinned=pins).action == "allow"


def arch_root(path) -> HostTree:
    """Arch with zfs-dkms 2.2.7 (Linux up to 6.12) built for the installed kernel."""
    tree = HostTree(path).os_release("arch").running(ARCH_OLD)
    tree.write("/var/lib/pacman/local/ALPM_DB_VERSION", "9\n")
    tree.kernel(ARCH_OLD, modules_root="/usr/lib/modules")
    for name in ("zfs", "spl"):
        tree.module(ARCH_OLD, name, "2.2.7-1", modules_root="/usr/lib/modules")
    tree.dkms("zfs", "2.2.7", ARCH_OLD)
    tree.zfs_source("2.2.7", "4.18", "6.12")
    return tree


@pytest.mark.real  # gcc-built modules
def test_the_pacman_hook_refuses_a_pinned_kernel(tmp_path, capsys, monkeypatch, fake_zfs):
    arch_root(tmp_path)
    root = Root(tmp_path)
    _pin_as_the_check_does(root, ARCH_NEW, "module-missing")
    targets = f"usr/lib/modules/{ARCH_NEW}/vmlinuz\n"
    monkeypatch.delenv("KZGUARD_ALLOW", raising=False)

    def hook() -> int:
        stdin = io.StringIO(targets)
        return hook_main("pacman", pacman.read, stdin=stdin, root_option=str(tmp_path))

    assert hook() == 1
    err = capsys.readouterr().err
    assert f"kzguard: refusing kernel {ARCH_NEW}: {pin.POST_INSTALL_REASON}" in err
    (event,) = [e for e in state.read(root)["events"] if e["kind"] == "transaction-blocked"]
    assert event["kernels"] == [ARCH_NEW]
    # an admin's one-shot override lets it through; the pin stays
    monkeypatch.setenv("KZGUARD_ALLOW", ARCH_NEW)
    assert hook() == 0
    assert f"letting {ARCH_NEW} through by an admin's override" in capsys.readouterr().err
    assert ARCH_NEW in pin.current(root)


@pytest.mark.real
def test_the_gate_lifts_a_pin_the_new_zfs_clears(tmp_path, fake_zfs):
    """A kernel pinned for its range goes through with the ZFS that supports it."""
    arch_root(tmp_path)
    root = Root(tmp_path)
    new = "6.13.1-arch1-1"
    pin.add(
        Context(root, Runner()), new, reason=REASON, who="t", codes=["kernel-too-new"], auto=True
    )
    pin.add(Context(root, Runner()), "6.13.2-arch1-1", reason="admin", who="root")  # manual: stays
    blocked = run_gate(Context(root, Runner(), env={}), Transaction("pacman", install=(new,)))
    assert blocked.blocks and new in pin.current(root)
    tx = Transaction("pacman", install=(new,), zfs_version="2.3.1", zfs_packages=("zfs-dkms",))
    decision = run_gate(Context(root, Runner(), env={}), tx)
    assert decision.action == "allow", decision.lines
    assert decision.lines[0] == (
        f"kzguard: lifted the pin on kernel {new}: a new check finds it safe with ZFS 2.3.1"
    )
    assert list(pin.current(root)) == ["6.13.2-arch1-1"]
    removed = [e for e in state.read(root)["events"] if e["kind"] == "pin-removed"]
    assert [e["kernel"] for e in removed] == [new]


@pytest.mark.real
def test_a_missing_module_pin_is_not_lifted_by_range(tmp_path):
    """An installed kernel without its module stays pinned when the transaction leaves the
    ZFS as it is."""
    tree = arch_root(tmp_path)
    tree.kernel(ARCH_NEW, modules_root="/usr/lib/modules")  # DKMS failed: no module
    root = Root(tmp_path)
    _pin_as_the_check_does(root, ARCH_NEW, "module-missing")
    host = gather(root)
    assert liftable(host, Config.defaults(), pin.current(root).values()) == []
    # a manual pin is never lifted by a check, even on a safe kernel
    pin.add(Context(root, Runner()), ARCH_OLD, reason="admin", who="root")
    assert liftable(host, Config.defaults(), pin.current(root).values()) == []
    assert sorted(pin.current(root)) == [ARCH_NEW, ARCH_OLD]


# --- the CLI -----------------------------------------------------------------------------------


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kzguard", *argv], capture_output=True, text=True, check=False
    )


def test_pin_commands(tmp_path):
    debian_root(tmp_path)
    root = str(tmp_path)
    assert cli("--root", root, "pin", "list").stdout == "kzguard: no kernel is pinned\n"
    dry = cli("pin", "add", DEB_NEW, "--root", root, "--dry-run")
    assert dry.returncode == 0 and "would pin kernel" in dry.stdout
    assert not (tmp_path / "var/lib/kzguard/state.json").exists()
    added = cli("--root", root, "pin", "add", DEB_NEW, "--reason", "bad wifi")
    assert added.returncode == 0, added.stderr
    assert (
        f"pinned kernel {DEB_NEW}: no package manager installs it again until `kzguard pin remove"
        in added.stdout
    )
    (event,) = [e for e in state.read(Root(tmp_path))["events"] if e["kind"] == "pin-added"]
    assert event["message"].startswith(f"pinned kernel {DEB_NEW}: pinned by ")
    assert event["message"].endswith(": bad wifi")
    listed = cli("--root", root, "pin", "list")
    assert (
        listed.stdout.startswith(f"{DEB_NEW}  since ")
        and "(apt; until `pin remove`)" in listed.stdout
    )
    (entry,) = json.loads(cli("--root", root, "pin", "list", "--json").stdout)
    assert entry["release"] == DEB_NEW and entry["auto"] is False and entry["manager"] == "apt"
    removed = cli("--root", root, "pin", "remove", DEB_NEW)
    assert f"lifted the pin on kernel {DEB_NEW}" in removed.stdout
    assert cli("--root", root, "pin", "list", "--json").stdout.strip() == "[]"
    assert cli("--root", root, "pin", "add", "not a release").returncode == 2


# --- the state file under hooks that race (issue item 4) ----------------------------------------

RACER = """
import sys
from kzguard.actions import pin
from kzguard.root import Root, Runner
from kzguard.context import Context
root, releases = Root(sys.argv[1]), sys.argv[2:]
for release in releases:
    pin.add(Context(root, Runner()), release, reason="race", who="t", auto=True)
"""


def test_racing_pins_lose_nothing_in_the_state_or_the_apt_file(tmp_path):
    """Real processes pin kernels at once: every pin is in the state and in the APT file."""
    debian_root(tmp_path)
    batches = [[f"6.12.{n * 10 + i}-amd64" for i in range(8)] for n in range(4)]
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), *batch]) for batch in batches
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * len(batches)
    wanted = sorted(r for batch in batches for r in batch)
    assert sorted(pinned_state(tmp_path)) == wanted
    assert sorted(p.subject for p in apt_hold.read(Root(tmp_path))[0]) == wanted


def _race(tmp_path, suffix: str, processes: int = 20, each: int = 5) -> list[str]:
    """``processes`` real processes at once, each pinning ``each`` kernels; the releases."""
    batches = [[f"6.13.{n * each + i}-{suffix}" for i in range(each)] for n in range(processes)]
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), *batch]) for batch in batches
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * len(batches)
    return sorted(r for batch in batches for r in batch)


def test_twenty_racing_processes_lose_no_dnf5_versionlock_entry(tmp_path):
    """The audit's case: 20 `pin add` at once on a dnf5 host lost 81 of 200 entries."""
    pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    from kzguard.actions.dnf5_hold import Versionlock

    tree = HostTree(tmp_path)
    tree.write("/usr/lib/sysimage/rpm/rpmdb.sqlite", "")
    tree.write("/usr/bin/dnf5", "")
    wanted = _race(tmp_path, "200.fc41.x86_64")
    assert sorted(pinned_state(tmp_path)) == wanted
    assert sorted(Versionlock.load(Root(tmp_path)).held()) == wanted
    assert not [p for p in (tmp_path / "etc/dnf").iterdir() if ".kzguard-tmp-" in p.name]


def test_twenty_racing_processes_lose_no_apt_pin(tmp_path):
    debian_root(tmp_path)
    wanted = _race(tmp_path, "amd64")
    assert sorted(pinned_state(tmp_path)) == wanted
    assert sorted(p.subject for p in apt_hold.read(Root(tmp_path))[0]) == wanted


def test_a_corrupt_state_is_kept_aside_with_a_journal_warning_and_rebuilt(tmp_path, monkeypatch):
    from kzguard.base import journal

    sent = []
    monkeypatch.setattr(journal, "_journal_send", lambda: lambda **f: sent.append(f))
    debian_root(tmp_path)
    path = tmp_path / state.STATE_FILE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1, "pins": []}')
    pin.add(Context(Root(tmp_path), Runner()), DEB_NEW, reason="r", who="t")
    (aside,) = path.parent.glob("state.json.corrupt-*")
    assert aside.read_text() == '{"format": 1, "pins": []}'
    assert list(pinned_state(tmp_path)) == [DEB_NEW]
    warning = next(f for f in sent if f["MESSAGE_ID"] == journal.MESSAGE_IDS["state-corrupt"])
    assert warning["PRIORITY"] == str(journal.WARNING) and "kept as" in warning["MESSAGE"]
