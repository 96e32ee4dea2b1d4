"""Scrape latency of kzguard's metrics endpoint on a root with 10 kernels.

The root is built as ``bench/dkms_vs_check.py`` builds it (Debian 12, ZFS 2.2.7 via DKMS, each
kernel with real ``zfs.ko`` and ``spl.ko``). A :class:`~kzguard.service.core.Core` checks it once,
then :func:`kzguard.service.metrics.serve` serves it on loopback, in this process, as the daemon
does. The scrapes come from another process (as Prometheus's would), one new connection per
scrape, each timed from connect to the last byte. p50, p99 and max are printed against the goal
(p99 <= 10 ms), with the in-process cost of one exposition for comparison.

Usage: python bench/scrape.py [--scrapes N] [--kernels N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dkms_vs_check import build_root, interpreter, kernels

from kzguard.root import Root, Runner
from kzguard.service import metrics
from kzguard.service.core import Core

GOAL_P99_MS = 10.0
WARMUP = 20

CLIENT = """
import http.client, json, sys, time
host, port, count, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
times, size = [], 0
for n in range(warmup + count):
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/metrics")
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


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def scrape(server: metrics.MetricsServer, count: int) -> tuple[list[float], int]:
    host, port = server.address
    argv = [interpreter(), "-c", CLIENT, host, str(port), str(count), str(WARMUP)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"scrape client failed: {proc.stderr.strip()[-500:]}")
    data = json.loads(proc.stdout)
    return data["times"], data["size"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--kernels", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="build the root here and keep it")
    args = parser.parse_args(argv)
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="kzguard-bench-")
    base = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    try:
        start = time.perf_counter()
        root = build_root(base / "root", kernels(args.kernels))
        print(f"root {root}: {args.kernels} kernels, built in {time.perf_counter() - start:.1f} s")
        core = Core(Root(root), runner=Runner())
        snapshot = core.check()
        print(f"check: {snapshot.duration * 1000:.1f} ms, {len(snapshot.report.kernels)} kernels")
        runs = [time.perf_counter()]
        for _ in range(100):
            metrics.exposition(core)
            runs.append(time.perf_counter())
        collect = statistics.median(b - a for a, b in zip(runs, runs[1:]))
        print(f"exposition in process: median {collect * 1000:.2f} ms")
        server = metrics.serve(core, "127.0.0.1:0")
        try:
            times, size = scrape(server, args.scrapes)
        finally:
            server.shutdown()
        p50, p99 = percentile(times, 0.50) * 1000, percentile(times, 0.99) * 1000
        print(
            f"{len(times)} scrapes of {size} bytes over loopback: p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms, max {max(times) * 1000:.2f} ms"
        )
        verdict = "met" if p99 <= GOAL_P99_MS else "NOT met"
        print(f"goal p99 <= {GOAL_P99_MS:.0f} ms: {verdict}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
