"""The hook's overall deadline (kzguard/base/deadline.py): a hung read or command ends in time."""

from __future__ import annotations

import os
import signal
import time

import pytest

from kzguard.base.deadline import DeadlineExceeded, overall
from kzguard.base.errors import CommandError
from kzguard.root import Root, Runner


def test_a_fifo_read_and_a_hung_command_end_at_the_deadline(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded), overall(0.5), open(fifo, "rb") as handle:
        handle.read()  # open blocks until the alarm: what a naive reader of a FIFO does
    assert time.monotonic() - started < 5
    with pytest.raises((DeadlineExceeded, CommandError)), overall(0.5) as limit:
        Runner(deadline=limit.at).run(["sleep", "30"])
    assert time.monotonic() - started < 10
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL  # put back


def test_rearm_counts_from_the_start_and_a_finished_hook_disarms():
    with overall(30) as limit:
        limit.rearm(60)
        assert 59 < limit.left() <= 60
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with pytest.raises(DeadlineExceeded), overall(30) as limit:
        limit.rearm(0)  # already past


def test_a_handler_someone_else_installed_is_left_alone():
    def theirs(signum, frame):
        raise AssertionError("not ours")

    old = signal.signal(signal.SIGALRM, theirs)
    try:
        with overall(0.1) as limit:
            assert limit.left() > 0
        assert signal.getsignal(signal.SIGALRM) is theirs
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, old)


def test_root_reads_never_wait_on_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "os-release")
    from kzguard.base.errors import FactError

    with pytest.raises(FactError, match="not a regular file"):
        Root(tmp_path).read_text("/os-release")


def test_a_hung_snapshot_ends_the_apt_hook_within_hook_timeout(tmp_path, monkeypatch):
    """`zfs snapshot` hangs (and leaves a child): the hook stops at hook_timeout, kills both,
    and follows on_error, saying so."""
    import io

    from kzguard.base.transaction import Transaction
    from kzguard.guard.hook_process import hook_main
    from kzguard.managers.base import HookInput
    from tests import scenarios as sc

    sc.fedora_dkms(tmp_path)
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mounts").write_text("rpool/ROOT/fedora / zfs rw 0 0\n")
    (tmp_path / "etc/kzguard").mkdir(parents=True)
    (tmp_path / "etc/kzguard/kzguard.yaml").write_text("hook_timeout: 2\non_error: allow\n")
    bin_dir = tmp_path / "hung-bin"
    bin_dir.mkdir()
    pidfile = tmp_path / "child.pid"
    (bin_dir / "zfs").write_text(f"#!/bin/sh\nsleep 300 & echo $! > {pidfile}\nwait\n")
    (bin_dir / "zfs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    tx = Transaction("apt", install=("6.12.11-200.fc41.x86_64",))
    started = time.monotonic()
    code = hook_main("apt", lambda stdin, ctx: HookInput(tx, str(tmp_path)), stdin=io.StringIO())
    elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed
    assert code == 0  # on_error: allow
    assert "deadline" in err.getvalue() and "on_error" in err.getvalue()
    from tests.test_runner import _alive

    assert not _alive(int(pidfile.read_text()))
