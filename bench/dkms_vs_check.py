"""``kzguard check --json`` against the real ``dkms status`` on the same tree, and its scaling.

The roots (built in a temp dir): Debian 12 os-release, the running kernel in
``/proc/sys/kernel/osrelease``, ``/usr/src/zfs-2.2.7/META``, and for each kernel its modules
dir and a DKMS ``zfs/2.2.7`` entry, installed (real ELF ``zfs.ko`` and ``spl.ko``).

kzguard is installed non-editable into a fresh venv (``bench/harness.py``) and runs as the
packages install it (``packaging/kzguard``); an exit code of 0 or 1 means it ran. First the
DKMS tree kzguard reads (``read_tree``) is checked against what the real ``dkms status`` says.

Part 1, ratio: ``dkms status`` and ``kzguard --root R check --json`` on 10 kernels x (zfs,
spl), interleaved run by run, wall and CPU. Goal (issue 13, P3): dkms / kzguard >= 30x on both.

Part 2, scaling: ``kzguard check --json`` on roots of 10, 50, 100 and 200 kernels (each built
once), interleaved; every point is printed with the least-squares slope of the medians and the
residual of each point from that line. Goal: <= 0.5 ms per extra kernel (wall and CPU).

Exit 1 when a goal is missed.

Usage: python bench/dkms_vs_check.py [--runs N] [--scale-runs N] [--python PATH] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))
sys.path.insert(0, str(TOP / "bench"))

from harness import Case, Goal, Samples, how, install, interleave, ms, report, which  # noqa: E402

from devtools.dkmstree import make_dkms_entry, status_argv  # noqa: E402
from devtools.hostbuilder import HostTree  # noqa: E402
from kzguard.facts.dkms import parse_status, read_tree  # noqa: E402
from kzguard.root import Root  # noqa: E402

ZFS_VERSION = "2.2.7"
RATIO_KERNELS = 10
SCALE_KERNELS = (10, 50, 100, 200)
SLOPE_GOAL_MS = 0.5
GOALS = (
    Goal("P3 wall", "dkms status", "kzguard check --json", at_least=30),
    Goal("P3 cpu", "dkms status", "kzguard check --json", at_least=30, clock="cpu"),
)


def kernels(count: int) -> list[str]:
    """Debian 12 kernel releases, oldest first (6.1.0-1-amd64 ...); a root of ``n`` kernels
    holds the first ``n``, so the module objects of smaller roots come from kobuild's cache."""
    return [f"6.1.0-{n}-amd64" for n in range(1, count + 1)]


def build_root(path: Path, releases: Sequence[str]) -> Path:
    """Lay out the benchmark root under ``path`` and return it."""
    tree = HostTree(path).os_release("debian12").running(releases[-1])
    tree.zfs_source(ZFS_VERSION, linux_min="4.18", linux_max="6.12")
    for release in releases:
        tree.kernel(release)
        make_dkms_entry(tree.path, "zfs", ZFS_VERSION, release)
    return tree.path


def check_agreement(root: Path) -> bool:
    """``read_tree`` must say what the real ``dkms status`` says on the same tree."""
    proc = subprocess.run(status_argv(root), capture_output=True, text=True, check=True)
    real = parse_status(proc.stdout)
    ours = read_tree(Root(root))
    agree = real == ours
    print(f"dkms status entries: {len(real)}; read_tree agrees: {agree}")
    return agree


def check_case(installed, root: Path) -> Case:
    return Case(installed.argv("--root", str(root), "check", "--json"), ok=(0, 1))


def slope(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept of ``(kernels, seconds)``."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    k = sum((x - mx) * (y - my) for x, y in points) / sxx
    return k, my - k * mx


def scaling_report(samples: Mapping[str, Samples], counts: Sequence[int]) -> bool:
    """Print each point, the slope per extra kernel and the residuals; True when within goal."""
    ok = True
    for clock in ("wall", "cpu"):
        points = [(n, statistics.median(getattr(samples[f"{n} kernels"], clock))) for n in counts]
        k, b = slope(points)
        end_to_end = (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
        met = k * 1000 <= SLOPE_GOAL_MS and end_to_end * 1000 <= SLOPE_GOAL_MS
        ok &= met
        line = ", ".join(
            f"{n}: {ms(y)} ms (fit {ms(b + k * n)}, {1000 * (y - b - k * n):+.1f})"
            for n, y in points
        )
        print(f"  {clock}: {line}")
        print(
            f"  {clock}: slope {k * 1000:.3f} ms per extra kernel (least squares on medians), "
            f"{end_to_end * 1000:.3f} ms ((t{counts[-1]}-t{counts[0]})/"
            f"{counts[-1] - counts[0]}); intercept {ms(b)} ms; goal <= {SLOPE_GOAL_MS} ms: "
            f"{'met' if met else 'MISSED'}"
        )
    return ok


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="rounds of part 1 (ratio)")
    parser.add_argument("--scale-runs", type=int, default=30, help="rounds of part 2 (scaling)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to install for")
    parser.add_argument("--keep", type=Path, help="build the roots and venv here and keep them")
    parser.add_argument("--no-scaling", action="store_true", help="part 1 only")
    args = parser.parse_args(argv)
    which("dkms")
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="kzguard-bench-")
    base = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    base.mkdir(parents=True, exist_ok=True)
    try:
        installed = install(base, args.python)
        counts = () if args.no_scaling else SCALE_KERNELS
        roots = {}
        for n in sorted({RATIO_KERNELS, *counts}):
            path = base / f"root-{n}"
            if path.exists():
                shutil.rmtree(path)
            start = time.perf_counter()
            roots[n] = build_root(path, kernels(n))
            print(
                f"root {roots[n]}: {n} kernels x (zfs, spl), built in "
                f"{time.perf_counter() - start:.1f} s"
            )
        agree = check_agreement(roots[RATIO_KERNELS])

        cases = {
            "dkms status": Case(status_argv(roots[RATIO_KERNELS])),
            "kzguard check --json": check_case(installed, roots[RATIO_KERNELS]),
            "python -c pass": Case([installed.python, "-c", "pass"]),
        }
        samples = interleave(cases, args.runs)
        print()
        print(
            how(
                args.runs,
                installed,
                f"part 1: {RATIO_KERNELS} kernels x (zfs, spl), dkms {_dkms_version()}",
            )
        )
        ok = report(samples, GOALS, clocks=("wall", "cpu"))
        if counts:
            scale = interleave(
                {f"{n} kernels": check_case(installed, roots[n]) for n in counts}, args.scale_runs
            )
            print()
            print(
                how(
                    args.scale_runs,
                    installed,
                    "part 2: kzguard check --json on " + ", ".join(map(str, counts)) + " kernels",
                )
            )
            report(scale, (), clocks=("wall", "cpu"))
            ok &= scaling_report(scale, counts)
        ok &= agree
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0 if ok else 1


def _dkms_version() -> str:
    proc = subprocess.run(["dkms", "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.strip().split()[-1] if proc.stdout.strip() else "?"


if __name__ == "__main__":
    raise SystemExit(main())
