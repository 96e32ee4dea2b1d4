"""Measure ``kzguard daemon`` as users get it: memory, scrapes, reaction and idle wakeups.

kzguard is installed non-editable from a wheel of this tree with its ``service`` extras
(:func:`harness.install`), and that install's ``kzguard daemon`` runs (the script the packages
install) on a root of ``--kernels`` kernels (``bench/dkms_vs_check.py``'s ``build_root``:
Debian 12, zfs-dkms 2.2.7, each kernel with an installed DKMS ``zfs``/``spl``), with
``metrics.listen`` on a free loopback port, ``metrics.textfile`` in the root, and the D-Bus API
on a private ``dbus-daemon`` (``--bus ADDRESS``). ``NOTIFY_SOCKET`` is a datagram socket a
thread of this script reads, as systemd would: READY=1 is the start, WATCHDOG=1 counted.

Measured, and judged against the goals of issue 13 (P4):

- RSS (``VmRSS``; PSS and anonymous memory from ``smaps_rollup``) after the start, after the
  scrapes, after D-Bus calls (``dbus-send`` from another process) and after the reactions: the
  largest must be <= 32 MiB;
- ``--scrapes`` scrapes of ``/metrics`` over loopback by a separate process, a new connection
  each, timed from connect to the last byte: p99 <= 5 ms;
- from a module file appearing (the newest kernel's ``zfs.ko`` written back after it was
  removed) and from a new kernel's directories appearing (renamed into ``/lib/modules`` and
  ``/var/lib/dkms`` from a staging tree) to ``kzguard_kernel_safe{release=...} 1`` in the
  textfile (waited for with inotify on its directory): the slowest of ``--reactions`` runs of
  each must be <= 0.6 s (with the default ``--debounce 500ms``);
- wakeups (voluntary context switches of every thread, ``/proc/PID/task/*/status``) over
  ``--seconds`` of idling once the scrapes and D-Bus calls are answered: none without a
  watchdog, and with ``WATCHDOG_USEC`` (a second daemon) no more than one per ``WATCHDOG=1``
  it sent (and one for a keep-alive read after the window closed).

A missed goal prints MISSED and the command exits 1. Usage: python bench/service.py
[--kernels 50] [--seconds 20] [--scrapes 1000] [--reactions 5] [--debounce 500ms]
[--python PYTHON] [--keep DIR]
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import ctypes.util
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from dkms_vs_check import build_root, kernels  # noqa: E402

TEXTFILE = "/var/lib/node_exporter/textfile_collector/kzguard.prom"
TICK = os.sysconf("SC_CLK_TCK")
DEADLINE = 60.0  # seconds anything may take before the bench gives up
GOAL_RSS_MIB = 32.0
GOAL_P99_MS = 5.0
GOAL_REACTION_S = 0.6
WATCHDOG_USEC = 4_000_000  # WatchdogSec=4s: a keep-alive every 2 s
WARMUP_SCRAPES = 20

# --- the pieces ------------------------------------------------------------------------------


class Bus:
    """A private bus: ``dbus-daemon --session --nofork --print-address``."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [harness.which("dbus-daemon"), "--session", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # its one complaint: it may not raise its fd limit
            text=True,
        )
        self.address = self.proc.stdout.readline().strip()  # printed once it listens
        if not self.address:
            raise SystemExit(f"dbus-daemon printed no address (exit {self.proc.poll()})")

    def call(self, method: str) -> str:
        """``org.kzguard.Guard1.<method>`` from another process (``dbus-send``)."""
        argv = [
            harness.which("dbus-send"),
            f"--bus={self.address}",
            "--print-reply",
            "--reply-timeout=20000",
            "--dest=org.kzguard.Guard1",
            "/org/kzguard/Guard1",
            f"org.kzguard.Guard1.{method}",
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"D-Bus {method} failed: {proc.stderr.strip()}")
        return proc.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(DEADLINE)


class Service:
    """The installed daemon, its notify socket and its /proc figures."""

    def __init__(
        self,
        installed: harness.Installed,
        root: Path,
        bus: str,
        log: Path,
        *,
        debounce: str = "500ms",
        watchdog_usec: Optional[int] = None,
    ):
        self.address = f"@kzguard-bench-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "PYTHONPATH")}
        env.update(NOTIFY_SOCKET=self.address, LC_ALL="C")
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        argv = installed.argv("--root", str(root), "daemon", "--bus", bus, "--debounce", debounce)
        self.ready = threading.Event()
        self.keepalives: list[float] = []  # monotonic time of each WATCHDOG=1
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()  # systemd reads the socket as messages come; so does this
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stderr=err, cwd=tempfile.gettempdir()
            )
        self.pid = self.proc.pid
        self.started = time.perf_counter()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:  # shut down
                return
            if b"WATCHDOG=1" in data.split(b"\n"):
                self.keepalives.append(time.monotonic())
            if b"READY=1" in data.split(b"\n"):
                self.ready.set()

    def wait_ready(self) -> float:
        if not self.ready.wait(DEADLINE):
            raise SystemExit(f"no READY=1 from the daemon: {self.log.read_text()[-2000:]}")
        return time.perf_counter() - self.started

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(DEADLINE)
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        return code

    def memory(self) -> dict[str, float]:
        """MiB: rss (VmRSS), pss and anon (smaps_rollup)."""
        rollup = _fields(f"/proc/{self.pid}/smaps_rollup")
        return {
            "rss": _fields(f"/proc/{self.pid}/status")["VmRSS"] / 1024,
            "pss": rollup["Pss"] / 1024,
            "anon": rollup["Anonymous"] / 1024,
        }

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (every thread, live and exited)."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def switches(self) -> dict[str, int]:
        """Wakeups per thread (name:tid): voluntary context switches (the thread slept and
        was woken; an involuntary one is a preemption while it ran, not a wakeup)."""
        counts = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            path = f"/proc/{self.pid}/task/{tid}"
            try:
                with open(f"{path}/comm") as fh:
                    name = fh.read().strip()
                status = _fields(f"{path}/status")
            except OSError:
                continue
            counts[f"{name}:{tid}"] = status["voluntary_ctxt_switches"]
        return counts


def _fields(path: str) -> dict[str, int]:
    """``Name:   123 kB`` lines of a /proc file, as numbers."""
    out = {}
    with open(path) as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[name] = int(parts[0])
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def setup(base: Path, count: int) -> tuple[Path, int, list[str]]:
    """The root (``count`` kernels) with metrics configured; (root, port, releases)."""
    releases = kernels(count)
    root = build_root(base / "root", releases)
    port = free_port()
    config = root / "etc/kzguard/kzguard.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"metrics:\n  listen: 127.0.0.1:{port}\n  textfile: {TEXTFILE}\n")
    (root / TEXTFILE.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    return root, port, releases


def base_python() -> str:
    """The interpreter this one's venv was made from (a fresh venv is made from it)."""
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        path = Path(sys.base_prefix, "bin", name)
        if path.exists():
            return str(path)
    return sys.executable


def install(workdir: Path, python: str) -> tuple[harness.Installed, float]:
    start = time.perf_counter()
    installed = harness.install(workdir, python, extras="service")
    return installed, time.perf_counter() - start


# --- scrapes ---------------------------------------------------------------------------------

CLIENT = """
import http.client, json, sys, time
host, port, count, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
headers = json.loads(sys.argv[5])
times, size = [], 0
for n in range(warmup + count):
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/metrics", headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    elapsed = time.perf_counter() - start
    if response.status != 200:
        sys.exit(f"scrape {n}: HTTP {response.status}")
    if n >= warmup:
        times.append(elapsed)
    size = len(body)
print(json.dumps({"times": times, "size": size}))
"""


# What a Prometheus server (2.x) sends with each scrape.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def scrape(
    port: int, count: int, warmup: int = WARMUP_SCRAPES, headers: Optional[dict] = None
) -> tuple[list[float], int]:
    """``count`` timed scrapes (after ``warmup``) from a separate process; (seconds, bytes)."""
    argv = [sys.executable, "-c", CLIENT, "127.0.0.1", str(port), str(count), str(warmup)]
    argv.append(json.dumps(headers or {}))
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"scrape client failed: {proc.stderr.strip()[-500:]}")
    data = json.loads(proc.stdout)
    return data["times"], data["size"]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def describe_scrapes(times: Sequence[float], size: int) -> tuple[str, float]:
    p50, p99 = percentile(times, 0.50) * 1000, percentile(times, 0.99) * 1000
    line = (
        f"{len(times)} scrapes of {size} bytes, a new connection each: p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms, max {max(times) * 1000:.2f} ms"
    )
    return line, p99


# --- reactions -------------------------------------------------------------------------------


class Inotify:
    """An inotify watch on one directory (ctypes: the standard library has none), for waiting
    on a file there to be replaced without polling."""

    IN_CLOSE_WRITE, IN_MOVED_TO, IN_CLOEXEC = 0x8, 0x80, 0o2000000

    def __init__(self, directory: Path):
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = self.IN_CLOSE_WRITE | self.IN_MOVED_TO
        if self.libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch", str(directory))

    def wait(self, done: Callable[[], bool], deadline: float = DEADLINE) -> None:
        """Until ``done()``: it is asked first, then after each event in the directory."""
        end = time.monotonic() + deadline
        while not done():
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise SystemExit("the textfile never said what was waited for")
            os.read(self.fd, 65536)

    def close(self) -> None:
        os.close(self.fd)


def sample(path: Path, name: str) -> Optional[float]:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def safe_sample(release: str) -> str:
    return f'kzguard_kernel_safe{{release="{release}"}}'


def module_reactions(root: Path, release: str, runs: int, watch: Inotify) -> list[float]:
    """A module removed (waited until the metric says 0), then written back: the time until
    the metric says 1."""
    module = root / f"lib/modules/{release}/updates/dkms/zfs.ko"
    data = module.read_bytes()
    textfile = root / TEXTFILE.lstrip("/")
    name = safe_sample(release)
    times = []
    for _ in range(runs):
        module.unlink()
        watch.wait(lambda: sample(textfile, name) == 0.0)
        start = time.perf_counter()
        module.write_bytes(data)
        watch.wait(lambda: sample(textfile, name) == 1.0)
        times.append(time.perf_counter() - start)
    return times


def kernel_reactions(
    root: Path, base: Path, release: str, runs: int, watch: Inotify
) -> list[float]:
    """A new kernel (modules directory, DKMS entry) renamed into the root from a staging tree
    on the same file system: the time until the metric says 1; then it is taken away again
    (waited until its series is gone)."""
    staging = build_root(base / "staging", [release])
    moves = [  # the DKMS entry, then the kernel: both inside one debounce
        f"var/lib/dkms/zfs/2.2.7/{release}",
        f"var/lib/dkms/zfs/kernel-{release}-x86_64",
        f"lib/modules/{release}",
    ]
    textfile = root / TEXTFILE.lstrip("/")
    name = safe_sample(release)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for inner in moves:
            os.rename(staging / inner, root / inner)
        watch.wait(lambda: sample(textfile, name) == 1.0)
        times.append(time.perf_counter() - start)
        for inner in reversed(moves):
            os.rename(root / inner, staging / inner)
        watch.wait(lambda: sample(textfile, name) is None)
    return times


# --- idle ------------------------------------------------------------------------------------


def idle(service: Service, seconds: float) -> tuple[float, dict[str, int], int]:
    """CPU seconds, context switches per thread and keep-alives sent over ``seconds``."""
    cpu, before, sent = service.cpu_seconds(), service.switches(), len(service.keepalives)
    time.sleep(seconds)  # the measurement itself: the daemon is left alone
    after = service.switches()
    switches = {k: after[k] - before.get(k, 0) for k in after}
    return service.cpu_seconds() - cpu, switches, len(service.keepalives) - sent


def describe_idle(label: str, seconds: float, cpu: float, switches: dict[str, int]) -> str:
    total = sum(switches.values())
    per_thread = ", ".join(f"{k} {v}" for k, v in sorted(switches.items()))
    return f"{label}: CPU {cpu * 1000:.0f} ms over {seconds:.0f} s; wakeups {total} ({per_thread})"


# --- main ------------------------------------------------------------------------------------


class Goals:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ok = True

    def add(self, label: str, figure: str, met: bool) -> None:
        self.ok &= met
        self.lines.append(f"  {label}: {figure}: {'met' if met else 'MISSED'}")


def how(installed: harness.Installed, python: str, took: float, count: int, port: int) -> str:
    """How it was measured: the machine (``harness.how``'s first line), the install, the rig."""
    return "\n".join(
        [
            "how measured:",
            "  " + harness.how(0).splitlines()[0],
            f"  kzguard: installed non-editable from a wheel of this tree into {installed.venv} "
            f"(made from {python}, no pip or setuptools in it; the service extras from pip's "
            f"wheel cache; {took:.1f} s); the daemon runs as {installed.package_script}",
            f"  root: {count} kernels x (zfs, spl), Debian 12, zfs-dkms 2.2.7; D-Bus on a private "
            f"dbus-daemon (--bus ADDRESS); metrics on 127.0.0.1:{port} and a textfile",
            "  RSS: /proc/PID/status VmRSS (PSS, anonymous: smaps_rollup); scrapes: a separate "
            "process, a new connection each; reactions: inotify on the textfile's directory; "
            "wakeups: voluntary context switches of every thread (/proc/PID/task/*/status)",
        ]
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0, help="idle time measured")
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--reactions", type=int, default=5, help="runs of each reaction")
    parser.add_argument("--debounce", default="500ms", help="the daemon's --debounce")
    parser.add_argument("--python", default=base_python(), help="the venv's interpreter")
    parser.add_argument("--keep", type=Path, help="work (venv, root, logs) here and keep it")
    args = parser.parse_args(argv)
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="kzguard-bench-")
    base = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    if args.keep and base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True, exist_ok=True)
    goals = Goals()
    try:
        installed, took = install(base, args.python)
        root, port, releases = setup(base, args.kernels)
        newest, new = releases[-1], kernels(args.kernels + 1)[-1]
        bus = Bus()
        atexit.register(bus.stop)  # whatever happens below, the private bus goes too
        print(how(installed, args.python, took, args.kernels, port))
        service = Service(installed, root, bus.address, base / "daemon.log", debounce=args.debounce)
        watch = Inotify((root / TEXTFILE.lstrip("/")).parent)
        peaks = []
        try:
            print(f"start to READY=1: {ms(service.wait_ready())}")

            def memory(when: str) -> None:
                figures = service.memory()
                peaks.append(figures["rss"])
                print(
                    f"{when}: RSS {figures['rss']:.1f} MiB (PSS {figures['pss']:.1f}, "
                    f"anonymous {figures['anon']:.1f})"
                )

            memory("after start")
            times, size = scrape(port, args.scrapes)
            line, p99 = describe_scrapes(times, size)
            print(line)
            memory(f"after {args.scrapes} scrapes")
            answer = bus.call("GetNextBoot")
            print(f"D-Bus GetNextBoot: {' '.join(answer.split()[-3:])}")
            bus.call("GetVerdicts")
            bus.call("CheckNow")
            memory("after GetNextBoot, GetVerdicts, CheckNow over D-Bus")
            bus.call("GetNextBoot")  # answered: the main loop is done with the last call
            cpu, switches, _ = idle(service, args.seconds)
            print(describe_idle("idle, no watchdog", args.seconds, cpu, switches))
            module = module_reactions(root, newest, args.reactions, watch)
            kernel = kernel_reactions(root, base, new, args.reactions, watch)
            for label, values in (("module appears", module), ("new kernel appears", kernel)):
                print(
                    f"{label} -> textfile says safe ({len(values)} runs): median "
                    f"{ms(statistics.median(values))}, min {ms(min(values))}, "
                    f"max {ms(max(values))}"
                )
            memory("after the reactions")
        finally:
            code = service.stop()
            print(f"exit: {code}")
            if code != 0:
                print(service.log.read_text()[-2000:])

        dog = Service(
            installed,
            root,
            bus.address,
            base / "daemon-watchdog.log",
            debounce=args.debounce,
            watchdog_usec=WATCHDOG_USEC,
        )
        try:
            dog.wait_ready()
            bus.call("GetNextBoot")  # answered: the main loop is done with the start
            dog_cpu, dog_switches, sent = idle(dog, args.seconds)
            print(
                describe_idle(
                    f"idle, WatchdogSec={WATCHDOG_USEC // 1_000_000}s ({sent} keep-alives)",
                    args.seconds,
                    dog_cpu,
                    dog_switches,
                )
            )
        finally:
            dog.stop()
            watch.close()

        rss = max(peaks)
        goals.add(f"RSS <= {GOAL_RSS_MIB:.0f} MiB", f"largest {rss:.1f} MiB", rss <= GOAL_RSS_MIB)
        goals.add(f"scrape p99 <= {GOAL_P99_MS:.0f} ms", f"{p99:.2f} ms", p99 <= GOAL_P99_MS)
        slowest = max(module + kernel)
        goals.add(
            f"reaction <= {GOAL_REACTION_S} s",
            f"slowest {ms(slowest)} (module {ms(max(module))}, kernel {ms(max(kernel))})",
            slowest <= GOAL_REACTION_S,
        )
        total, dog_total = sum(switches.values()), sum(dog_switches.values())
        goals.add(
            "no wakeups idle but the watchdog",
            f"{total} without a watchdog, {dog_total} for {sent} keep-alives with one",
            total == 0 and sent > 0 and dog_total <= sent + 1,
        )
        print("goals:")
        print("\n".join(goals.lines))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0 if goals.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
