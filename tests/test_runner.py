"""The runner (kzguard/root.py): every command bounded in time, and nothing it started left
running after a timeout or an interrupted wait."""

from __future__ import annotations

import os
import select
import signal
import time

import pytest

from kzguard.base.errors import CommandError
from kzguard.root import Runner


def _alive(pid: int, grace: float = 10.0) -> bool:
    """Whether ``pid`` still runs ``grace`` seconds from now: a SIGKILLed process dies when it is
    next scheduled, so the test waits on a pidfd (readable once the process has exited) instead
    of looking once."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return not poller.poll(grace * 1000)
    finally:
        os.close(fd)


def _grandchild(tmp_path, seconds: int = 60) -> list[str]:
    """A shell that starts a background sleeper, records its pid, and then waits."""
    pidfile = tmp_path / "grandchild.pid"
    return ["sh", "-c", f"sleep {seconds} & echo $! > {pidfile}; wait", str(pidfile)]


def _read_pid(tmp_path) -> int:
    return int((tmp_path / "grandchild.pid").read_text())


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out"):
        Runner(timeout=0.5).run(_grandchild(tmp_path)[:3])
    assert time.monotonic() - started < 10
    assert not _alive(_read_pid(tmp_path))


def test_timeouts_do_not_add_up_past_the_deadline(tmp_path):
    runner = Runner(timeout=60, deadline=time.monotonic() + 1.0)
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out"):
        runner.run(["sleep", "30"])
    with pytest.raises(CommandError, match="deadline has passed"):
        runner.run(["sleep", "30"])
    assert time.monotonic() - started < 10


def test_an_interrupted_wait_kills_the_group_too(tmp_path):
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            Runner(timeout=60).run(_grandchild(tmp_path)[:3])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not _alive(_read_pid(tmp_path))


def test_output_input_and_exit_codes_are_as_before():
    runner = Runner()
    assert runner.run(["cat"], input="hello\n").stdout == "hello\n"
    proc = runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandError, match="exit 3"):
        runner.run(["sh", "-c", "exit 3"])
    with pytest.raises(CommandError, match="command not found"):
        runner.run(["/nonexistent/kzguard-test"])
    assert runner.run_bytes(["cat"], input=b"\x00\x01").stdout == b"\x00\x01"
