"""``kzguard daemon`` as a real process: sd_notify on a real datagram socket, the watchdog,
SIGHUP and SIGTERM, and inotify on a root tree (a module appears, the verdict changes).

Nothing here sleeps to synchronise: every wait is on the notify socket, on a file or on the
process, each with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

import pytest

from devtools.hostbuilder import HostTree
from kzguard.root import Root
from kzguard.service.watch import targets
from tests import scenarios as sc

pytestmark = pytest.mark.real  # gcc-built modules in the root trees

TOP = Path(__file__).resolve().parent.parent
NEW = "6.12.11-200.fc41.x86_64"  # supported by zfs 2.2.7 (Linux up to 6.12)
NEWER = "6.12.12-200.fc41.x86_64"
DEADLINE = 15.0
CONFIG = "modules: [zfs]\nmetrics:\n  listen: ''\n"
TEXTFILE = "/var/lib/node_exporter/textfile_collector/kzguard.prom"


class Daemon:
    """A ``kzguard daemon`` process and the notify socket it talks to."""

    def __init__(
        self,
        root: Path,
        log: Path,
        *args: str,
        watchdog_usec: Optional[int] = None,
        env: Optional[dict[str, str]] = None,
        wrapper: tuple[str, ...] = (),
    ):
        self.address = f"@kzguard-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind("\0" + self.address[1:])
        self.messages: list[dict[str, str]] = []
        full_env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        full_env.update(NOTIFY_SOCKET=self.address, **(env or {}))
        if watchdog_usec:
            full_env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log = log
        argv = [*wrapper, sys.executable, "-m", "kzguard", "--root", str(root), "daemon", *args]
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                argv, cwd=TOP, env=full_env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )

    def wait_for(self, match: Callable[[dict[str, str]], bool], what: str) -> dict[str, str]:
        """The next message (after those already read) that ``match``es."""
        deadline = time.monotonic() + DEADLINE
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(
                    f"no {what} within {DEADLINE}s (exit {self.proc.poll()}); got "
                    f"{self.messages[-5:]}\nstderr:\n{self.log.read_text()}"
                )
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            message = _parse(data)
            self.messages.append(message)
            if match(message):
                return message

    def status(self, needle: str) -> str:
        """Wait for a STATUS= containing ``needle``."""
        found = self.wait_for(lambda m: needle in m.get("STATUS", ""), f"STATUS with {needle!r}")
        return found["STATUS"]

    def ready(self) -> dict[str, str]:
        return self.wait_for(lambda m: m.get("READY") == "1", "READY=1")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the daemon, wait for its exit and read what it said on the way out."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        code = self.proc.wait(DEADLINE)
        self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            self.messages.append(_parse(data))
        self.sock.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()  # closing twice is fine


def _parse(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().splitlines() if line)


@pytest.fixture
def start(tmp_path):
    started: list[Daemon] = []

    def _start(root: Path, *args: str, **kwargs) -> Daemon:
        daemon = Daemon(root, tmp_path / f"daemon{len(started)}.log", *args, **kwargs)
        started.append(daemon)
        return daemon

    yield _start
    for daemon in started:
        daemon.kill()


def host(tmp_path: Path, config: str = CONFIG) -> HostTree:
    """Fedora with zfs-dkms 2.2.7, two good kernels and NEW, whose DKMS zfs.ko is missing
    from /lib/modules (the next boot: NEW, unsafe)."""
    tree = sc.fedora_dkms(tmp_path / "root")
    tree.config(config)
    tree.kernel(NEW)
    tree.dkms("zfs", "2.2.7", NEW)
    tree.remove(f"/lib/modules/{NEW}/extra/zfs.ko")
    return tree


def test_ready_after_the_first_check_then_a_clean_stop(tmp_path, start):
    tree = host(tmp_path)
    daemon = start(tree.path, "--bus", "none")
    ready = daemon.ready()
    assert ready["STATUS"] == f"3 kernels, next boot {NEW} unsafe"
    assert daemon.stop() == 0
    assert daemon.messages[-1].get("STOPPING") == "1"


def test_sigint_stops_cleanly_too(tmp_path, start):
    daemon = start(host(tmp_path).path, "--bus", "none")
    daemon.ready()
    assert daemon.stop(signal.SIGINT) == 0
    assert daemon.messages[-1].get("STOPPING") == "1"


def test_watchdog_keepalives_come_from_the_main_loop(tmp_path, start):
    daemon = start(host(tmp_path).path, "--bus", "none", watchdog_usec=400_000)
    daemon.ready()
    stamps = []
    for _ in range(5):
        daemon.wait_for(lambda m: m.get("WATCHDOG") == "1", "WATCHDOG=1")
        stamps.append(time.monotonic())
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert 0.1 < statistics.median(gaps) < 0.4, gaps  # every 200 ms: half of WATCHDOG_USEC
    assert daemon.stop() == 0


def test_no_keepalives_for_another_process(tmp_path, start):
    """WATCHDOG_PID names the process systemd watches; another one sends nothing."""
    env = {"WATCHDOG_PID": "1"}
    tree = host(tmp_path)
    daemon = start(tree.path, "--bus", "none", watchdog_usec=100_000, env=env)
    daemon.ready()
    tree.module(NEW, "zfs", "2.2.7-1", location="extra")  # a debounce (500 ms) later: a check
    daemon.status(f"next boot {NEW} safe")
    assert daemon.stop() == 0
    assert not [m for m in daemon.messages if "WATCHDOG" in m]


def test_a_receiver_that_stops_reading_does_not_hang_the_daemon(tmp_path, start):
    """A full notify queue makes a datagram wait; the daemon gives up on it after a timeout
    and still stops on SIGTERM."""
    daemon = start(host(tmp_path).path, "--bus", "none", watchdog_usec=2_000)  # every 1 ms
    daemon.ready()  # and nothing read from now on: the queue fills
    deadline = time.monotonic() + DEADLINE
    while "not sent" not in daemon.log.read_text():
        assert time.monotonic() < deadline, daemon.log.read_text()
        time.sleep(0.05)  # polling a log file: there is nothing to wait on
    assert daemon.stop() == 0


def test_sighup_with_a_bad_config_keeps_the_old_one(tmp_path, start):
    tree = host(tmp_path)
    daemon = start(tree.path, "--bus", "none")
    daemon.ready()
    tree.config(CONFIG + "on_unsupported_kernel: sometimes\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda m: m.get("RELOADING") == "1", "RELOADING=1")
    ready = daemon.ready()
    assert "keeping the old one" in ready["STATUS"] and "on_unsupported_kernel" in ready["STATUS"]
    assert ready["STATUS"].startswith(f"3 kernels, next boot {NEW} unsafe")
    assert "on_unsupported_kernel" in daemon.log.read_text()  # and the journal (stderr) says why
    tree.config(CONFIG)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda m: m.get("RELOADING") == "1", "RELOADING=1")
    assert daemon.ready()["STATUS"] == f"3 kernels, next boot {NEW} unsafe"
    assert daemon.stop() == 0


def test_a_bad_config_at_start_is_a_usage_error(tmp_path, start):
    tree = host(tmp_path, config="on_unsupported_kernel: sometimes\n")
    daemon = start(tree.path, "--bus", "none")
    assert daemon.proc.wait(DEADLINE) == 2
    assert "on_unsupported_kernel" in daemon.log.read_text()
    assert not daemon.messages


def test_a_bad_interval_is_a_usage_error(tmp_path, start):
    daemon = start(host(tmp_path).path, "--bus", "none", "--interval", "soon")
    assert daemon.proc.wait(DEADLINE) == 2
    assert "--interval 'soon' is not a duration" in daemon.log.read_text()


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("500ms", 0.5), ("15m", 900.0), ("6h", 21600.0)]
)
def test_durations(text, seconds):
    from kzguard.service.daemon import parse_duration

    assert parse_duration(text, "--interval") == seconds


def test_a_module_appearing_changes_the_verdict(tmp_path, start):
    tree = host(tmp_path)
    daemon = start(tree.path, "--bus", "none")
    daemon.ready()
    tree.module(NEW, "zfs", "2.2.7-1", location="extra")
    assert daemon.status(f"next boot {NEW} safe") == f"3 kernels, next boot {NEW} safe"
    tree.remove(f"/lib/modules/{NEW}/extra/zfs.ko")
    daemon.status(f"next boot {NEW} unsafe")
    assert daemon.stop() == 0


def test_a_new_kernel_directory_is_watched_too(tmp_path, start):
    """A kernel that appears after the start: its directory, then DKMS's module in a new
    ``extra/`` and its DKMS tree entry (the watches are re-armed for them)."""
    tree = host(tmp_path)
    tree.module(NEW, "zfs", "2.2.7-1", location="extra")
    daemon = start(tree.path, "--bus", "none")
    assert daemon.ready()["STATUS"] == f"3 kernels, next boot {NEW} safe"
    tree.kernel(NEWER)
    assert daemon.status("4 kernels") == f"4 kernels, next boot {NEWER} unsafe"
    tree.dkms("zfs", "2.2.7", NEWER)
    daemon.status(f"next boot {NEWER} safe")
    assert daemon.stop() == 0


def test_the_textfile_follows_a_module_appearing(tmp_path, start):
    pytest.importorskip("prometheus_client")
    tree = host(tmp_path, config=CONFIG + f"  textfile: {TEXTFILE}\n")
    tree.host(TEXTFILE).parent.mkdir(parents=True)
    daemon = start(tree.path, "--bus", "none")
    daemon.ready()
    sample = f'kzguard_kernel_safe{{release="{NEW}"}}'
    assert _metric(tree.host(TEXTFILE), sample, lambda v: v is not None) == 0.0
    tree.module(NEW, "zfs", "2.2.7-1", location="extra")
    assert _metric(tree.host(TEXTFILE), sample, lambda v: v == 1.0) == 1.0
    assert daemon.stop() == 0


def test_without_a_bus_it_says_so_and_goes_on(tmp_path, start):
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"}
    daemon = start(host(tmp_path).path, env=env)  # --bus system (the default)
    assert "next boot" in daemon.ready()["STATUS"]
    assert daemon.stop() == 0
    assert "going on without it" in daemon.log.read_text()


def test_it_runs_without_writable_executable_memory(tmp_path, start):
    """What MemoryDenyWriteExecute= in units/kzguard.service asks, with the kernel's own
    PR_SET_MDWE (Linux 6.3+): the daemon starts, reacts to a change and stops."""
    probe = subprocess.run([sys.executable, "-c", _MDWE, "/bin/true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"PR_SET_MDWE is not available: {probe.stderr.decode().strip()}")
    tree = host(tmp_path)
    daemon = start(tree.path, "--bus", "none", wrapper=(sys.executable, "-c", _MDWE))
    daemon.ready()
    tree.module(NEW, "zfs", "2.2.7-1", location="extra")
    daemon.status(f"next boot {NEW} safe")
    assert daemon.stop() == 0


_MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    raise SystemExit(os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
"""


def _metric(path: Path, sample: str, done: Callable[[Optional[float]], bool]) -> Optional[float]:
    """Read ``sample``'s value from a textfile until ``done(value)`` (polled, with a deadline)."""
    deadline = time.monotonic() + DEADLINE
    value: Optional[float] = None
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(sample)]
        value = float(values[0]) if values else None
        if done(value):
            return value
        time.sleep(0.02)  # polling a file's content: there is nothing to wait on
    raise AssertionError(f"{sample} in {path} stayed {value}")


# --- what is watched (no main loop needed) --------------------------------------------------------


def test_targets_cover_module_dirs_dkms_and_missing_paths(tmp_path):
    tree = host(tmp_path)
    found = targets(Root(tree.path))
    top = str(tree.path)
    kernel = f"{top}/lib/modules/{NEW}"
    assert found[kernel] is None and found[f"{kernel}/extra"] is None
    # updates/ does not exist: the kernel directory stands in for it
    assert f"{kernel}/updates" not in found
    assert found[f"{top}/var/lib/dkms/zfs/2.2.7/{NEW}/x86_64/module"] is None
    assert found[f"{top}/usr/src/zfs-2.2.7"] is None
    # /var/lib/apt/lists is missing: /var/lib watches the way to it, nothing else
    assert found[f"{top}/var/lib"] >= {"apt", "pacman"}
    assert found[f"{top}/var/lib"] is not None and "kzguard" in found[f"{top}/var/lib"]
    assert not any(p.startswith(f"{top}/usr/src/zfs-2.2.7/") for p in found)  # sources: META only


def test_the_watcher_folds_a_burst_into_one_call_and_skips_what_does_not_count(tmp_path):
    from gi.repository import GLib

    from kzguard.service.watch import Watcher

    tree = host(tmp_path)
    top = str(tree.path)
    own = f"{top}/var/lib/dkms/kzguard.prom"
    calls: list[list[str]] = []
    loop = GLib.MainLoop()

    def changed(paths: list[str]) -> None:
        calls.append(paths)
        loop.quit()

    watcher = Watcher(Root(tree.path), changed, debounce=0.2, ignore=[own])
    try:
        watcher.arm()
        tree.write(f"{own}.1234.5678", "# the daemon's own temp file\n")
        tree.write("/var/lib/unrelated", "not on the way to a watched path\n")
        for n in range(20):
            tree.write(f"/lib/modules/{NEW}/extra/burst{n}.ko", b"x")
        tree.write("/var/lib/kzguard/state.json", "{}\n")  # a missing watched path appears
        timeout = GLib.timeout_add_seconds(int(DEADLINE), loop.quit)
        loop.run()
        GLib.source_remove(timeout)
    finally:
        watcher.close()
    assert len(calls) == 1, calls
    paths = set(calls[0])
    assert {f"{top}/lib/modules/{NEW}/extra/burst{n}.ko" for n in range(20)} <= paths
    assert f"{top}/var/lib/kzguard" in paths
    assert not any("unrelated" in p or "kzguard.prom" in p for p in paths)


def test_a_failed_check_is_counted_and_the_status_says_so(tmp_path, monkeypatch):
    from kzguard.root import Runner
    from kzguard.service.core import Core
    from kzguard.service.daemon import Daemon as Loop
    from kzguard.service.daemon import Notifier

    tree = host(tmp_path)
    core = Core(Root(tree.path), runner=Runner())
    loop = Loop(core, Notifier({}), bus="none")
    real = core.check

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(core, "check", broken)
    assert loop.check("test") is None
    assert core.errors == 1
    assert loop.status_line() == (
        "last check failed: RuntimeError: boom; no check has succeeded yet; 1 failed check so far"
    )
    monkeypatch.setattr(core, "check", real)
    assert loop.check("test") is not None
    assert loop.status_line() == f"3 kernels, next boot {NEW} unsafe; 1 failed check so far"


def test_the_status_line_names_what_is_wrong_briefly():
    from types import SimpleNamespace as NS

    from kzguard.service.daemon import summary

    def kernel(release, verdict, *states):
        return NS(release=release, verdict=verdict, safe=verdict == "safe", states=states)

    report = NS(
        kernels=(
            kernel("6.11.10-300.fc41.x86_64", "unsafe", "installed"),
            kernel("6.12.9-200.fc41.x86_64", "safe", "running", "installed"),
            kernel("6.13.2-200.fc41.x86_64", "unsafe", "pending"),
        ),
        next_boot=NS(release="6.12.9-200.fc41.x86_64", verdict="safe"),
    )
    assert summary(NS(report=report)) == (
        "2 kernels, next boot 6.12.9-200.fc41.x86_64 safe; "
        "1 more is not safe: 6.11.10-300.fc41.x86_64; "
        "1 pending unsupported: 6.13.2-200.fc41.x86_64"
    )


def test_a_check_from_elsewhere_is_published_too(tmp_path):
    """The D-Bus CheckNow and the shutdown check call the core directly: the daemon's
    listener updates the status line (and the textfile) when a verdict changed."""
    from kzguard.root import Runner
    from kzguard.service.core import Core
    from kzguard.service.daemon import Daemon as Loop
    from kzguard.service.daemon import Notifier

    class Recorder(Notifier):
        def __init__(self):
            super().__init__({})
            self.sent: list[tuple[str, ...]] = []

        def send(self, *lines: str) -> bool:
            self.sent.append(lines)
            return True

    tree = host(tmp_path)
    core = Core(Root(tree.path), runner=Runner())
    recorder = Recorder()
    loop = Loop(core, recorder, bus="none")
    loop.check("start")
    assert recorder.sent == [(f"STATUS=3 kernels, next boot {NEW} unsafe",)]
    tree.module(NEW, "zfs", "2.2.7-1", location="extra")
    core.check()  # as CheckNow does
    assert recorder.sent[-1] == (f"STATUS=3 kernels, next boot {NEW} safe",)
