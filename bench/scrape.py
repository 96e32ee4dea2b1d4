"""Scrape latency of the installed ``kzguard daemon``'s metrics endpoint, from another process.

kzguard is installed non-editable from a wheel of this tree with its ``service`` extras
(:func:`harness.install`); that install's daemon runs on a root of ``--kernels`` kernels (as
``bench/service.py`` sets it up: ``bench/dkms_vs_check.py``'s ``build_root``, metrics on a free
loopback port, D-Bus on a private ``dbus-daemon``). A separate process scrapes
``/metrics`` over HTTP, one new connection per scrape, each timed from connect to the last
byte: first ``--scrapes`` plain scrapes (no ``Accept`` header, as curl or node_exporter-style
tools ask), then ``--scrapes`` as a Prometheus 2.x server asks (OpenMetrics 1.0.0 preferred,
gzip), then as Prometheus 3.x asks (OpenMetrics with ``escaping=allow-utf-8``, gzip), with the
daemon's RSS after each. p50, p99 and max are printed against the goals (p99 <= 5 ms for each;
the daemon's largest RSS after them <= 32 MiB, both at 50 kernels); a missed goal prints
MISSED and the command exits 1.

Usage: python bench/scrape.py [--scrapes 1000] [--kernels 50] [--python PYTHON] [--keep DIR]
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import service as bench  # bench/service.py: the rig

# What a Prometheus 3.x server sends (its default scrape protocols, UTF-8 names allowed).
PROMETHEUS_3_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,"
    "*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=1000)
    parser.add_argument("--kernels", type=int, default=50)
    parser.add_argument("--python", default=bench.base_python(), help="the venv's interpreter")
    parser.add_argument("--keep", type=Path, help="work (venv, root, logs) here and keep it")
    args = parser.parse_args(argv)
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="kzguard-bench-")
    base = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    if args.keep and base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True, exist_ok=True)
    goals = bench.Goals()
    try:
        installed, took = bench.install(base, args.python)
        root, port, _ = bench.setup(base, args.kernels)
        bus = bench.Bus()
        atexit.register(bus.stop)
        print(bench.how(installed, args.python, took, args.kernels, port))
        service = bench.Service(installed, root, bus.address, base / "daemon.log")
        try:
            print(f"start to READY=1: {bench.ms(service.wait_ready())}")
            print(f"daemon RSS before any scrape: {service.memory()['rss']:.1f} MiB")
            largest = 0.0
            for label, headers in (
                ("plain (no Accept header)", None),
                ("as Prometheus 2 asks (OpenMetrics, gzip)", bench.PROMETHEUS_HEADERS),
                ("as Prometheus 3 asks (OpenMetrics, allow-utf-8, gzip)", PROMETHEUS_3_HEADERS),
            ):
                times, size = bench.scrape(port, args.scrapes, headers=headers)
                line, p99 = bench.describe_scrapes(times, size)
                memory = service.memory()
                largest = max(largest, memory["rss"])
                print(
                    f"{label}: {line}; daemon RSS after: {memory['rss']:.1f} MiB "
                    f"(PSS {memory['pss']:.1f}, anonymous {memory['anon']:.1f})"
                )
                goals.add(
                    f"scrape p99 <= {bench.GOAL_P99_MS:.0f} ms at {args.kernels} kernels, {label}",
                    f"{p99:.2f} ms",
                    p99 <= bench.GOAL_P99_MS,
                )
            goals.add(
                f"daemon RSS <= {bench.GOAL_RSS_MIB:.0f} MiB at {args.kernels} kernels after "
                "every kind of scrape",
                f"largest {largest:.1f} MiB",
                largest <= bench.GOAL_RSS_MIB,
            )
        finally:
            service.stop()
        print("goals:")
        print("\n".join(goals.lines))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0 if goals.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
