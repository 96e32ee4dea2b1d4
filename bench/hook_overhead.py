"""What a package-manager hook adds to a transaction, as a ratio to the bare interpreter start.

``kzguard hook apt``, run as the installed console script runs it, is fed a real APT
``Pre-Install-Pkgs`` version 3 stream twice: one without any kernel or ZFS package (the
common case: the hook must get out of the way), and one
installing a supported kernel on a Debian ZFS host root (10 ms of judging). Each is compared
with ``python -c pass`` on the same interpreter in the same run. The root is not on ZFS, so no
snapshot is taken (the issue excludes it). Goals: <= 1.5x without a kernel, <= 3x with one.

Usage: python bench/hook_overhead.py [--runs N]
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))

from tests import scenarios  # noqa: E402 - after the path is set

HEADER = "VERSION 3\nAPT::Architecture=amd64\nDir=/\nDPkg::Pre-Install-Pkgs::=kzguard hook apt\n\n"
PLAIN = "nano 7.2-1 amd64 same < 7.2-1+deb12u1 amd64 same /var/cache/apt/archives/nano.deb\n"
KERNEL = (
    "linux-image-6.12.9-amd64 - - none < 6.12.9-1 amd64 same "
    "/var/cache/apt/archives/linux-image-6.12.9-amd64_6.12.9-1_amd64.deb\n"
)


CONSOLE_SCRIPT = "import sys\nfrom kzguard.cli import main\nsys.exit(main())\n"


def timed(argv: list[str], stdin: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    compileall.compile_dir(str(TOP / "kzguard"), quiet=1)  # packages ship byte-compiled code
    with tempfile.TemporaryDirectory(prefix="kzguard-hookbench-") as tmp:
        root = Path(tmp) / "root"
        scenarios.debian_dkms(root)
        script = Path(tmp) / "kzguard"  # what pip and the packages install as /usr/bin/kzguard
        script.write_text(CONSOLE_SCRIPT)
        hook = [sys.executable, str(script), "hook", "apt", "--root", str(root)]
        cases = {
            "bare": ([sys.executable, "-c", "pass"], ""),
            "plain": (hook, HEADER + PLAIN),
            "kernel": (hook, HEADER + PLAIN + KERNEL),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):  # interleaved, so drift on the machine hits all three alike
            for name, (argv, stdin) in cases.items():
                times[name] += timed(argv, stdin, 1)
        bare, plain, kernel = (statistics.median(times[n]) for n in ("bare", "plain", "kernel"))
    print(f"python -c pass               median {bare * 1000:7.1f} ms")
    print(f"hook, no kernel in the stream median {plain * 1000:6.1f} ms  {plain / bare:4.2f}x")
    print(f"hook, one kernel to judge     median {kernel * 1000:6.1f} ms  {kernel / bare:4.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
