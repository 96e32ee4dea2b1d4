"""Measure ``kzguard daemon`` on a root with 10 kernels: memory, idle cost, scrapes, reaction.

The root is the one ``bench/dkms_vs_check.py`` builds (Debian 12, zfs-dkms 2.2.7, each kernel
with an installed DKMS ``zfs``/``spl``), with ``metrics.listen`` on a free loopback port and
``metrics.textfile`` in the root. The daemon runs as ``<python> -m kzguard --root R daemon
--bus none`` (``--bus ADDRESS``: a private bus) with ``NOTIFY_SOCKET`` on a datagram socket
that a thread of this script reads, as systemd would (READY=1 is the start). Printed:

- RSS (``VmRSS``, and PSS from ``smaps_rollup``) after the start, and after ``--scrapes``
  scrapes of ``http://127.0.0.1:<port>/metrics`` (loopback only), with their p50 and p99;
- CPU time (utime + stime of every thread, ``/proc/<pid>/stat``) and context switches
  (voluntary + involuntary, every thread's ``/proc/<pid>/task/*/status``: wakeups) over
  ``--seconds`` of idling, without and then with a watchdog (``WATCHDOG_USEC``);
- the time from a module file appearing (the newest kernel's ``zfs.ko`` written back after
  it was removed) to ``kzguard_kernel_safe{release=...}`` turning 1 in the textfile, median
  and max of ``--reactions`` runs (the textfile is polled every 2 ms).

Nothing is asserted. Usage: python bench/service.py [--seconds 60] [--scrapes 1000]
[--reactions 10] [--kernels 10] [--debounce 500ms] [--bus ADDRESS]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dkms_vs_check import build_root, interpreter, kernels

from devtools.hostbuilder import HostTree

TEXTFILE = "/var/lib/node_exporter/textfile_collector/kzguard.prom"
TICK = os.sysconf("SC_CLK_TCK")
DEADLINE = 30.0


class Service:
    """The daemon process and its notify socket."""

    def __init__(self, root: Path, debounce: str, bus: str, watchdog_usec: Optional[int] = None):
        self.address = f"@kzguard-bench-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        env.update(NOTIFY_SOCKET=self.address, LC_ALL="C")
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        argv = [interpreter(), "-m", "kzguard", "--root", str(root), "daemon", "--bus", bus]
        argv += ["--debounce", debounce]
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()  # systemd reads the socket as messages come; so does this
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:  # shut down
                return
            if b"READY=1" in data:
                self.ready.set()

    def wait_ready(self) -> float:
        start = time.perf_counter()
        if not self.ready.wait(DEADLINE):
            raise RuntimeError("no READY=1")
        return time.perf_counter() - start

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(DEADLINE)
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        return code

    def rss_mib(self) -> float:
        return _status_field(f"/proc/{self.pid}/status", "VmRSS") / 1024

    def pss_mib(self) -> float:
        """Proportional set size: shared libraries counted by their share."""
        return _status_field(f"/proc/{self.pid}/smaps_rollup", "Pss") / 1024

    def memory(self) -> str:
        return f"RSS {self.rss_mib():.1f} MiB (PSS {self.pss_mib():.1f} MiB)"

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (every thread, live and exited)."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def switches(self) -> dict[str, int]:
        """Context switches per thread (name:tid), voluntary + involuntary."""
        counts = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            path = f"/proc/{self.pid}/task/{tid}"
            try:
                with open(f"{path}/comm") as fh:
                    name = fh.read().strip()
                total = _status_field(f"{path}/status", "voluntary_ctxt_switches")
                total += _status_field(f"{path}/status", "nonvoluntary_ctxt_switches")
            except OSError:
                continue
            counts[f"{name}:{tid}"] = total
        return counts


def _status_field(path: str, name: str) -> int:
    with open(path) as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def idle(service: Service, seconds: float) -> tuple[float, dict[str, int]]:
    cpu, before = service.cpu_seconds(), service.switches()
    time.sleep(seconds)  # the measurement itself: the daemon is left alone
    after = service.switches()
    return service.cpu_seconds() - cpu, {k: after[k] - before.get(k, 0) for k in after}


def print_idle(label: str, seconds: float, cpu: float, switches: dict[str, int]) -> None:
    total = sum(switches.values())
    per_thread = ", ".join(f"{k} {v}" for k, v in sorted(switches.items()))
    print(
        f"{label}: CPU {cpu * 1000:.0f} ms over {seconds:.0f} s; "
        f"context switches {total} ({total / seconds:.2f}/s: {per_thread})"
    )


def scrape(url: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        times.append(time.perf_counter() - start)
    return times


def metric(path: Path, sample: str) -> Optional[float]:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_metric(path: Path, sample: str, value: float) -> float:
    """Poll the textfile until ``sample`` reads ``value``; the time it took."""
    start = time.perf_counter()
    while metric(path, sample) != value:
        if time.perf_counter() - start > DEADLINE:
            raise RuntimeError(f"{sample} never became {value} in {path}")
        time.sleep(0.002)
    return time.perf_counter() - start


def reactions(tree: HostTree, release: str, runs: int) -> list[float]:
    module = tree.host(f"/lib/modules/{release}/updates/dkms/zfs.ko")
    data = module.read_bytes()
    textfile = tree.host(TEXTFILE)
    sample = f'kzguard_kernel_safe{{release="{release}"}}'
    times = []
    for _ in range(runs):
        module.unlink()
        wait_metric(textfile, sample, 0.0)
        start = time.perf_counter()
        module.write_bytes(data)
        wait_metric(textfile, sample, 1.0)
        times.append(time.perf_counter() - start)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="idle time measured")
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--reactions", type=int, default=10)
    parser.add_argument("--kernels", type=int, default=10)
    parser.add_argument("--debounce", default="500ms", help="the daemon's --debounce")
    parser.add_argument(
        "--bus", default="none", help="the daemon's --bus (a private bus's address, or none)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kzguard-bench-") as tmp:
        releases = kernels(args.kernels)
        root = build_root(Path(tmp) / "root", releases)
        tree = HostTree(root)
        port = free_port()
        tree.config(f"metrics:\n  listen: 127.0.0.1:{port}\n  textfile: {TEXTFILE}\n")
        tree.host(TEXTFILE).parent.mkdir(parents=True)
        print(f"root: {args.kernels} kernels x (zfs, spl), Debian 12, zfs-dkms 2.2.7")

        service = Service(root, args.debounce, args.bus)
        try:
            print(f"start to READY=1: {ms(service.wait_ready())}")
            print(f"after start: {service.memory()}")
            times = scrape(f"http://127.0.0.1:{port}/metrics", args.scrapes)
            quantiles = statistics.quantiles(times, n=100)
            print(
                f"{args.scrapes} scrapes: p50 {ms(statistics.median(times))}, "
                f"p99 {ms(quantiles[98])}, max {ms(max(times))}"
            )
            print(f"after {args.scrapes} scrapes: {service.memory()}")
            cpu, switches = idle(service, args.seconds)
            print_idle("idle, no watchdog", args.seconds, cpu, switches)
            times = reactions(tree, releases[-1], args.reactions)
            print(
                f"module appears -> textfile says safe ({args.reactions} runs, debounce "
                f"{args.debounce}): median {ms(statistics.median(times))}, "
                f"min {ms(min(times))}, max {ms(max(times))}"
            )
        finally:
            print(f"exit: {service.stop()}")

        service = Service(
            root, args.debounce, args.bus, watchdog_usec=60_000_000
        )  # WatchdogSec=60s
        try:
            service.wait_ready()
            cpu, switches = idle(service, args.seconds)
            print_idle("idle, WatchdogSec=60s (keep-alive every 30 s)", args.seconds, cpu, switches)
        finally:
            service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
