"""The post-install verdict on the transaction's end state: the record, the queue, the end hook.

Processes are real (this test's own, a child ``sh``, a child that waits on a pipe, one that has
exited); the boot default guard is tests/test_postinstall.py's recorder.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kzguard.actions import pin, state
from kzguard.base.transaction import Transaction
from kzguard.context import Context
from kzguard.guard import end_check, inflight, postinstall
from kzguard.guard.gate import run_gate
from kzguard.managers import apt
from kzguard.root import Root, Runner
from tests.test_postinstall import NEW, OLD, BootRecorder, debian

pytestmark = pytest.mark.real  # root trees hold gcc-built modules

TOP = Path(__file__).resolve().parent.parent


@pytest.fixture
def boot(monkeypatch) -> BootRecorder:
    """tests/test_postinstall.py's recorder in place of kzguard.actions.boot."""
    import kzguard.actions

    recorder = BootRecorder()
    fake = recorder.module()
    monkeypatch.setitem(sys.modules, "kzguard.actions.boot", fake)
    monkeypatch.setattr(kzguard.actions, "boot", fake, raising=False)
    return recorder


def _record(path, process, *, queued=(), manager="apt", token=None) -> dict:
    with state.locked(Root(path)) as st:
        record = inflight.begin(st.data, manager, process, kernels=[NEW], token=token)
        record["queued"] = list(queued)
        st.save()
    return record


def _waiting_child():
    """A live process that is not our ancestor: it waits for its stdin to close."""
    return subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)


# --- the process facts -----------------------------------------------------------------------


def test_ancestors_and_the_manager_behind_a_shell():
    assert inflight.ancestors()[0].pid == os.getppid()
    code = "from kzguard.guard import inflight; print(inflight.manager_process().pid)"
    out = subprocess.run(
        ["sh", "-c", f'"$0" -c "{code}"; true', sys.executable],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(TOP)},
    )
    assert int(out.stdout) == os.getpid()  # the shell in between is skipped


def test_a_record_is_ours_running_or_stale():
    me = inflight.this_process()
    assert inflight.inside({"pid": me.pid, "start": me.start}, env={}) == inflight.OURS
    parent = inflight.ancestors()[0]
    assert inflight.inside({"pid": parent.pid, "start": parent.start}, env={}) == inflight.OURS
    # the same PID with another start time is another process: the recorded one is gone
    assert inflight.inside({"pid": me.pid, "start": me.start + 1}, env={}) == inflight.STALE
    child = _waiting_child()
    try:
        other = inflight.Process(child.pid, inflight.stat(child.pid)[2])
        record = {"pid": other.pid, "start": other.start, "token": "t1"}
        assert inflight.inside(record, env={}) == inflight.RUNNING
        assert inflight.inside(record, env={inflight.TOKEN_ENV: "t1"}) == inflight.OURS
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert inflight.inside(record, env={}) == inflight.STALE
    assert inflight.record_of({"transaction": {"pid": "x"}}) is None


# --- the gate records, the post-install hook queues ------------------------------------------


def test_the_gate_records_a_transaction_that_goes_ahead_only(tmp_path, boot):
    debian(tmp_path, module=True)
    root = Root(tmp_path)
    me = inflight.this_process()
    tx = Transaction("apt", install=("6.12.10-amd64",))
    run_gate(Context(root, Runner(), env={}), tx, in_flight=me)
    record = inflight.record_of(state.read(root))
    assert (record["manager"], record["pid"], record["start"]) == ("apt", me.pid, me.start)
    assert record["kernels"] == ["6.12.10-amd64"] and record["queued"] == []
    with state.locked(root) as st:
        del st.data["transaction"]
        st.save()
    run_gate(
        Context(root, Runner(), env={}), Transaction("apt", install=("6.14.1-amd64",)), in_flight=me
    )
    assert inflight.record_of(state.read(root)) is None  # refused: nothing runs


def test_inside_a_recorded_transaction_the_hook_only_queues(tmp_path, boot):
    debian(tmp_path, module=False)
    _record(tmp_path, inflight.this_process())
    out = io.StringIO()
    assert postinstall.hook_main([NEW], root_option=str(tmp_path), out=out, env={}) == 0
    text = out.getvalue()
    assert f"kzguard: provisional: kernel {NEW} would fail the post-install check now" in text
    assert "nothing changed yet; the final check runs when apt finishes" in text
    assert boot.calls == [] and pin.current(Root(tmp_path)) == {}
    assert inflight.record_of(state.read(Root(tmp_path)))["queued"] == [NEW]


def test_a_stale_record_is_cleared_and_its_kernels_checked_now(tmp_path, boot):
    debian(tmp_path, module=True)
    _record(tmp_path, inflight.Process(inflight.this_process().pid, 1), queued=[OLD])
    out = io.StringIO()
    assert postinstall.hook_main([NEW], root_option=str(tmp_path), out=out, env={}) == 0
    text = out.getvalue()
    assert f"ended without its final check; checking the kernels it configured now: {OLD}" in text
    assert f"kernel {OLD} passed the post-install check" in text
    assert f"kernel {NEW} passed the post-install check" in text
    data = state.read(Root(tmp_path))
    assert "transaction" not in data
    assert data["events"][0]["kind"] == "transaction-stale"


def test_a_live_record_of_another_process_is_left_alone(tmp_path, boot):
    """An admin runs the hook by hand while apt runs elsewhere: a full check, the record kept."""
    debian(tmp_path, module=False)
    child = _waiting_child()
    try:
        other = inflight.Process(child.pid, inflight.stat(child.pid)[2])
        _record(tmp_path, other)
        out = io.StringIO()
        postinstall.hook_main([NEW], root_option=str(tmp_path), out=out, env={})
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert f"kernel {NEW} failed the post-install check" in out.getvalue()
    assert NEW in pin.current(Root(tmp_path))
    assert inflight.record_of(state.read(Root(tmp_path)))["pid"] == other.pid


def test_under_dpkg_alone_the_check_acts_and_says_it_may_be_early(tmp_path, boot):
    debian(tmp_path, module=False)
    out = io.StringIO()
    env = {"DPKG_MAINTSCRIPT_NAME": "postinst"}
    postinstall.hook_main([NEW], root_option=str(tmp_path), out=out, env=env)
    text = out.getvalue()
    assert f"kernel {NEW} failed the post-install check" in text
    assert "kzguard: provisional: dpkg runs this without apt" in text
    assert NEW in pin.current(Root(tmp_path)) and [c[0] for c in boot.calls] == [OLD]


# --- the end hook ----------------------------------------------------------------------------


def test_without_a_record_the_end_hook_does_nothing(tmp_path):
    out = io.StringIO()
    assert end_check.finish_main("apt", root_option=str(tmp_path), out=out, env={}) == 0
    assert out.getvalue() == "" and not (tmp_path / "var").exists()


def test_the_end_hook_acts_on_the_end_state_and_clears_the_record(tmp_path, boot):
    debian(tmp_path, module=False)
    _record(tmp_path, inflight.this_process(), queued=[NEW, "6.14.9-amd64"])  # one removed since
    out = io.StringIO()
    assert end_check.finish_main("apt", root_option=str(tmp_path), out=out, env={}) == 0
    text = out.getvalue()
    assert text.startswith(f"kzguard: apt has finished: the final post-install check of {NEW}\n")
    assert f"kernel {NEW} failed the post-install check" in text
    assert [c[0] for c in boot.calls] == [OLD] and NEW in pin.current(Root(tmp_path))
    assert "transaction" not in state.read(Root(tmp_path))


def test_another_managers_end_hook_leaves_the_record(tmp_path, boot):
    debian(tmp_path, module=False)
    _record(tmp_path, inflight.this_process(), queued=[NEW], manager="dnf5")
    assert end_check.finish_main("apt", root_option=str(tmp_path), env={}) == 0
    assert inflight.record_of(state.read(Root(tmp_path)))["queued"] == [NEW]
    assert boot.calls == []


def test_the_end_hook_lifts_a_pin_a_new_zfs_fixed(tmp_path, boot):
    tree = debian(tmp_path, module=False)
    postinstall.check(Context(Root(tmp_path), Runner(), config=_config(tmp_path)), NEW)
    assert NEW in pin.current(Root(tmp_path))
    for name in ("zfs", "spl"):  # the transaction upgraded ZFS; DKMS built it for NEW
        tree.module(NEW, name, "2.2.7-1")
    tree.dkms("zfs", "2.2.7", NEW)
    _record(tmp_path, inflight.this_process())
    out = io.StringIO()
    assert end_check.finish_main("apt", root_option=str(tmp_path), out=out, env={}) == 0
    assert f"lifted the pin on kernel {NEW}: a new check finds it safe" in out.getvalue()
    assert pin.current(Root(tmp_path)) == {}


def test_a_pin_still_failing_stays_in_one_line(tmp_path, boot):
    debian(tmp_path, module=False)
    postinstall.check(Context(Root(tmp_path), Runner(), config=_config(tmp_path)), NEW)
    _record(tmp_path, inflight.this_process())
    out = io.StringIO()
    end_check.finish_main("apt", root_option=str(tmp_path), out=out, env={})
    assert out.getvalue().splitlines() == [
        f"kzguard: kernel {NEW} stays pinned: it still fails (module-missing, dkms-not-installed)"
    ]


def test_the_end_hook_meets_on_error(tmp_path, boot):
    tree = debian(tmp_path, module=False)
    _record(tmp_path, inflight.this_process(), queued=[NEW])
    tree.config("on_module_failure: maybe\n")
    out = io.StringIO()
    assert end_check.finish_main("apt", root_option=str(tmp_path), out=out, env={}) == 1
    assert "kzguard failed inside the post-install hook" in out.getvalue()
    assert inflight.record_of(state.read(Root(tmp_path))) is not None  # judged again later


def test_dry_run_end_hook_changes_nothing(tmp_path, boot):
    debian(tmp_path, module=False)
    _record(tmp_path, inflight.this_process(), queued=[NEW])
    before = (tmp_path / state.STATE_FILE.lstrip("/")).read_text()
    end_check.finish_main("apt", root_option=str(tmp_path), dry_run=True, env={})
    assert (tmp_path / state.STATE_FILE.lstrip("/")).read_text() == before
    assert json.loads(before)["transaction"]["queued"] == [NEW]


def _config(path):
    from kzguard.config import load_config

    return load_config(Root(path), None)


# --- apt: the Pre-Install-Pkgs hook records only when the Post-Invoke line is there ------------


@pytest.mark.parametrize(
    ("post_invoke", "root", "expected"),
    [
        (["/usr/bin/kzguard hook post-transaction apt"], "/", True),
        (["/usr/bin/kzguard hook post-transaction apt"], "/srv/r", False),
        (["/usr/bin/kzguard --root /srv/r hook post-transaction apt"], "/srv/r", True),
        (["kzguard hook post-transaction apt --root=/srv/r/"], "/srv/r", True),
        (["/usr/bin/kzguard hook apt"], "/", False),
        (
            ["if [ -e /nonexistent/kzguard.list ]; then kzguard hook post-transaction apt; fi"],
            "/",
            False,
        ),
        (["if [ -e / ]; then /usr/bin/kzguard hook post-transaction apt; fi"], "/", True),
        ([], "/", False),
    ],
)
def test_apt_records_when_its_end_hook_will_run(post_invoke, root, expected):
    lines = [f"DPkg::Post-Invoke::={c.replace(' ', '%20')}" for c in post_invoke]
    stream = apt.parse("VERSION 3\n" + "".join(f"{line}\n" for line in lines) + "\n")
    assert apt.final_check_of(stream, root) is expected


def test_cli_post_transaction_usage(capsys):
    from kzguard import cli

    assert cli.main(["hook", "post-transaction", "yum"]) == 2
    assert "takes the manager whose transaction ended" in capsys.readouterr().err


def test_the_end_hooks_quick_look_reads_the_state_file_kzguard_writes():
    assert end_check.STATE_FILE == state.STATE_FILE


def test_the_post_invoke_command_line_skips_the_parser(tmp_path, monkeypatch):
    from kzguard import cli

    called = {}
    monkeypatch.setattr(end_check, "finish_main", lambda m, **kw: called.update(m=m, **kw) or 0)
    argv = ["--root", str(tmp_path), "hook", "post-transaction", "apt", "--dry-run"]
    assert cli.main(argv) == 0
    assert called == {
        "m": "apt",
        "root_option": str(tmp_path),
        "config_path": None,
        "dry_run": True,
    }
    from kzguard.cli.hook import fast_hook

    assert fast_hook(["hook", "post-install", NEW]) is None


def test_a_manager_that_is_pid_1_is_found(tmp_path):
    """``unshare --pid --fork ... exec apt-get``: apt is PID 1 of its namespace."""
    proc = tmp_path / "proc"
    for pid, comm, ppid in ((1, "apt-get", 0), (40, "sh", 1), (41, "python3", 40)):
        fields = ["S", str(ppid)] + ["0"] * 17 + [str(1000 + pid)]
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    assert inflight.ancestors(41, str(proc)) == [(40, 1040), (1, 1001)]


def test_a_kernel_kzguard_cannot_read_is_still_a_target_of_the_end_check(tmp_path):
    """A queued kernel whose directory cannot be read (a link loop here) is checked, and so
    judged unknown, rather than dropped from the end check as if it had been removed."""
    from kzguard.facts.kernels import installed_releases
    from kzguard.guard import postinstall
    from kzguard.root import Root

    modules = tmp_path / "lib/modules"
    (modules / "6.1.0-28-amd64/kernel").mkdir(parents=True)
    (modules / "6.12.9-amd64").symlink_to("6.12.9-amd64")  # a loop
    root = Root(tmp_path)
    assert "6.12.9-amd64" not in installed_releases(root, ("/lib/modules",))
    releases, _ = postinstall._end_targets(root, ["6.12.9-amd64", "6.1.0-28-amd64"])
    assert releases == ["6.12.9-amd64", "6.1.0-28-amd64"]
