"""The hook's overall deadline (kzguard/deadline.py): it ends a hung read or command in time."""

from __future__ import annotations

import os
import signal
import time

import pytest

from kzguard.deadline import DeadlineExceeded, overall
from kzguard.errors import CommandError
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
    from kzguard.errors import FactError

    with pytest.raises(FactError, match="not a regular file"):
        Root(tmp_path).read_text("/os-release")
