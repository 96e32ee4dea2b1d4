"""The pre-transaction gate: decisions by policy, overrides, snapshots, on_error."""

from __future__ import annotations

import io

import pytest

from kzguard.actions import state
from kzguard.base.transaction import Transaction
from kzguard.context import Context
from kzguard.facts.host import gather
from kzguard.guard.gate import run_gate
from kzguard.guard.hook_process import hook_main
from kzguard.judge.decision import allowed_from_env, decide
from kzguard.judge.policy import judge
from kzguard.managers.base import HookInput
from kzguard.root import Root, Runner
from tests import scenarios as sc

pytestmark = pytest.mark.real  # root trees hold gcc-built modules

NEW = sc.FEDORA_NEW  # 6.13: beyond zfs 2.2.7's Linux-Maximum 6.12
GOOD = "6.12.11-200.fc41.x86_64"


@pytest.fixture
def fedora(tmp_path):
    sc.fedora_dkms(tmp_path)
    return tmp_path


def report_for(path, tx):
    return judge(gather(Root(path)), {}, transaction=tx)


def test_decide_by_policy(fedora):
    report = report_for(fedora, Transaction("dnf", install=(NEW, GOOD)))
    for policy in ("block", "hold", "warn"):
        decision = decide(report, on_unsupported=policy, on_unknown="warn")
        assert decision.action == policy
        assert getattr(
            decision, {"block": "blocked", "hold": "held", "warn": "warned"}[policy]
        ) == (NEW,)
    blocked = decide(report, on_unsupported="block", on_unknown="warn", command="dnf upgrade")
    text = "\n".join(blocked.lines)
    assert NEW in text and "4.18 to 6.12.x" in text and "kzguard allow" in text
    assert "dnf upgrade" in text


def test_installed_kernels_count_only_when_zfs_changes(fedora):
    """An upgrade of ZFS alone must still leave every installed kernel supported."""
    assert (
        decide(
            report_for(fedora, Transaction("dnf", zfs_packages=("zfs",))),
            on_unsupported="block",
            on_unknown="warn",
        ).action
        == "allow"
    )
    old_zfs = Transaction("dnf", zfs_version="2.1.5", zfs_packages=("zfs-dkms",))  # Linux <= 5.18
    decision = decide(report_for(fedora, old_zfs), on_unsupported="block", on_unknown="warn")
    assert decision.action == "block"
    assert set(decision.blocked) == {sc.FEDORA_OLD, sc.FEDORA_RUNNING}


def test_override_lets_one_kernel_through(fedora):
    report = report_for(fedora, Transaction("dnf", install=(NEW,)))
    decision = decide(report, on_unsupported="block", on_unknown="warn", allowed={NEW})
    assert (decision.action, decision.allowed) == ("warn", (NEW,))


def test_allowed_from_env():
    assert allowed_from_env({"KZGUARD_ALLOW": "a, b c"}) == {"a", "b", "c"}
    assert allowed_from_env({}) == set()


def test_run_gate_blocks_and_records(fedora, fake_zfs):
    decision = run_gate(Context(Root(fedora), Runner(), env={}), Transaction("dnf", install=(NEW,)))
    assert decision.blocks
    events = state.read(Root(fedora))["events"]
    assert events[-1]["kind"] == "transaction-blocked" and events[-1]["kernels"] == [NEW]
    assert fake_zfs.calls() == []  # no snapshot before a refused transaction


def test_stored_override_is_one_shot(fedora, fake_zfs):
    root = Root(fedora)
    with state.locked(root) as st:
        st.data["allow"][NEW] = {"by": "admin"}
        st.save()
    tx = Transaction("dnf", install=(NEW,))
    assert run_gate(Context(root, Runner(), env={}), tx).action == "warn"
    assert state.read(root)["allow"] == {}
    assert run_gate(Context(root, Runner(), env={}), tx).blocks


def test_snapshot_before_a_kernel_change(fedora, fake_zfs):
    (fedora / "proc/self").mkdir(parents=True)
    (fedora / "proc/self/mounts").write_text("rpool/ROOT/fedora / zfs rw 0 0\n")
    decision = run_gate(
        Context(Root(fedora), Runner(), env={}), Transaction("dnf", install=(GOOD,))
    )
    assert decision.action == "allow"
    (call,) = fake_zfs.calls()[:1]
    assert call[:3] == ["snapshot", "-o", "org.kzguard:manager=dnf"]
    assert call[-1].startswith("rpool/ROOT/fedora@kzguard-") and call[-1].endswith(
        f"dnf-{GOOD.lower()}"
    )
    assert any("took snapshot" in line for line in decision.lines)


def test_required_snapshot_failure_blocks(fedora, fake_zfs, monkeypatch):
    (fedora / "proc/self").mkdir(parents=True)
    (fedora / "proc/self/mounts").write_text("rpool/ROOT/fedora / zfs rw 0 0\n")
    (fedora / "etc/kzguard").mkdir(parents=True)
    (fedora / "etc/kzguard/kzguard.yaml").write_text("snapshots:\n  required: true\n")
    monkeypatch.setenv("KZGUARD_FAKE_ZFS_FAIL", "snapshot")
    decision = run_gate(
        Context(Root(fedora), Runner(), env={}), Transaction("dnf", install=(GOOD,))
    )
    assert decision.blocks and "snapshots.required" in decision.lines[-1]


def reader(tx, root=None):
    return lambda stdin, ctx: HookInput(tx, root)


def test_hook_main_exit_codes(fedora, fake_zfs, capsys):
    assert hook_main("apt", reader(Transaction("apt")), stdin=io.StringIO()) == 0
    assert not (fedora / "var/lib/kzguard").exists()  # nothing relevant: nothing done
    code = hook_main(
        "apt", reader(Transaction("apt", install=(NEW,)), str(fedora)), stdin=io.StringIO()
    )
    assert code == 1
    assert f"refusing kernel {NEW}" in capsys.readouterr().err


@pytest.mark.parametrize(("on_error", "code"), [("block", 1), ("allow", 0)])
def test_internal_error_follows_on_error(fedora, on_error, code, capsys):
    (fedora / "etc/kzguard").mkdir(parents=True)
    (fedora / "etc/kzguard/kzguard.yaml").write_text(f"on_error: {on_error}\n")

    def broken(stdin, ctx):
        raise RuntimeError("parser exploded")

    assert hook_main("apt", broken, stdin=io.StringIO(), root_option=str(fedora)) == code
    err = capsys.readouterr().err
    assert "parser exploded" in err and f"on_error = {on_error}" in err


def test_unreadable_config_means_block(fedora, capsys):
    (fedora / "etc/kzguard").mkdir(parents=True)
    (fedora / "etc/kzguard/kzguard.yaml").write_text("on_error: [\n")
    tx = Transaction("apt", install=(GOOD,))
    assert hook_main("apt", reader(tx), stdin=io.StringIO(), root_option=str(fedora)) == 1
    assert "the default" in capsys.readouterr().err


def test_dry_run_gate_changes_nothing(fedora, fake_zfs):
    (fedora / "proc/self").mkdir(parents=True)
    (fedora / "proc/self/mounts").write_text("rpool/ROOT/fedora / zfs rw 0 0\n")
    run_gate(
        Context(Root(fedora), Runner(dry_run=True), env={}), Transaction("dnf", install=(GOOD,))
    )
    assert not (fedora / "var/lib/kzguard").exists()
    assert fake_zfs.snapshots() == []


def test_no_snapshot_when_the_kernel_is_held(fedora, fake_zfs):
    (fedora / "proc/self").mkdir(parents=True)
    (fedora / "proc/self/mounts").write_text("rpool/ROOT/fedora / zfs rw 0 0\n")
    (fedora / "etc/kzguard").mkdir(parents=True)
    (fedora / "etc/kzguard/kzguard.yaml").write_text("on_unsupported_kernel: hold\n")
    decision = run_gate(Context(Root(fedora), Runner(), env={}), Transaction("apt", install=(NEW,)))
    assert decision.action == "hold"
    assert fake_zfs.calls() == []
