"""What a package-manager hook adds to a transaction, as a ratio to the bare interpreter start.

kzguard is installed non-editable into a fresh venv (``bench/harness.py``). ``kzguard hook apt``
runs as the packages install it (``packaging/kzguard``, the .deb's ``/usr/bin/kzguard``) and,
for comparison, as pip's generated console script, fed a real APT ``Pre-Install-Pkgs`` version 3
stream: one without any kernel or ZFS package (the common case: the hook must get out of the
way), and one installing a supported kernel on a Debian ZFS host root (the kernel is judged).
Each is compared with ``python -c pass`` on the same interpreter, interleaved run by run. The
root is not on ZFS, so no snapshot is taken (issue 13 excludes it).

Goals (issue 13): P1 <= 1.25x without a kernel, P2 <= 2.5x with one.

Usage: python bench/hook_overhead.py [--runs N] [--python PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))
sys.path.insert(0, str(TOP / "bench"))

from harness import Case, Goal, how, install, interleave, report  # noqa: E402

from tests import scenarios  # noqa: E402 - after the path is set

HEADER = "VERSION 3\nAPT::Architecture=amd64\nDir=/\nDPkg::Pre-Install-Pkgs::=kzguard hook apt\n\n"
PLAIN = "nano 7.2-1 amd64 same < 7.2-1+deb12u1 amd64 same /var/cache/apt/archives/nano.deb\n"
KERNEL = (
    "linux-image-6.12.9-amd64 - - none < 6.12.9-1 amd64 same "
    "/var/cache/apt/archives/linux-image-6.12.9-amd64_6.12.9-1_amd64.deb\n"
)
GOALS = (
    Goal("P1 hook, no kernel", "hook, no kernel", "python -c pass", at_most=1.25),
    Goal("P2 hook, one kernel", "hook, one kernel", "python -c pass", at_most=2.5),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--python", default=sys.executable, help="the interpreter to install for")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kzguard-hookbench-") as tmp:
        installed = install(Path(tmp), args.python)
        root = Path(tmp) / "root"
        scenarios.debian_dkms(root)
        hook = ("hook", "apt", "--root", str(root))
        plain = (HEADER + PLAIN).encode()
        kernel = (HEADER + PLAIN + KERNEL).encode()
        cases = {
            "python -c pass": Case([installed.python, "-c", "pass"]),
            "hook, no kernel": Case(installed.argv(*hook), plain),
            "hook, one kernel": Case(installed.argv(*hook), kernel),
            "pip script, no kernel": Case(
                installed.argv(*hook, script=installed.pip_script), plain
            ),
        }
        samples = interleave(cases, args.runs)
        print(how(args.runs, installed, f"root: {root} (Debian 12, zfs-dkms), not on ZFS"))
        ok = report(samples, GOALS, clocks=("wall", "cpu"))
        report(
            samples,
            (Goal("pip's script", "pip script, no kernel", "python -c pass", at_most=1.25),),
            clocks=(),
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
