"""Time ``dkms status`` against ``kzguard check --json`` on a root with 10 kernels.

The root (built in a temp dir): Debian 12 os-release, the running kernel in
``/proc/sys/kernel/osrelease``, ``/usr/src/zfs-2.2.7/META``, and for each kernel its modules
dir and a DKMS ``zfs/2.2.7`` entry, installed (real ELF ``zfs.ko`` and ``spl.ko``).

Both commands run 5 times; the median and minimum wall times are printed with their ratio.
kzguard's modules are byte-compiled first, as an installed package ships them.
kzguard runs as ``<python> -m kzguard`` with the interpreter binary running this script
(never a pyenv shim); an exit code of 0 or 1 means it ran. Nothing about time is asserted.

Usage: python bench/dkms_vs_check.py [--runs N] [--kernels N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.dkmstree import make_dkms_entry, status_argv
from devtools.hostbuilder import HostTree
from kzguard.facts.dkms import parse_status, read_tree
from kzguard.root import Root

ZFS_VERSION = "2.2.7"


def kernels(count: int) -> list[str]:
    """Debian 12 kernel releases, oldest first (6.1.0-47-amd64 ...)."""
    return [f"6.1.0-{n}-amd64" for n in range(57 - count, 57)]


def build_root(path: Path, releases: Sequence[str]) -> Path:
    """Lay out the benchmark root under ``path`` and return it."""
    tree = HostTree(path).os_release("debian12").running(releases[-1])
    tree.zfs_source(ZFS_VERSION, linux_min="4.18", linux_max="6.12")
    for release in releases:
        tree.kernel(release)
        make_dkms_entry(tree.path, "zfs", ZFS_VERSION, release)
    return tree.path


def interpreter() -> str:
    """This interpreter's binary. ``sys.executable`` is already past any pyenv shim (a shim
    execs the real binary); it is not resolved further, since a venv's ``bin/python`` link
    is what makes the venv's packages importable."""
    with open(sys.executable, "rb") as fh:
        if fh.read(2) == b"#!":
            raise SystemExit(f"{sys.executable} is a script, not an interpreter binary")
    return sys.executable


def kzguard_argv(root: Path) -> list[str]:
    return [interpreter(), "-m", "kzguard", "--root", str(root), "check", "--json"]


def run(argv: Sequence[str], ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode not in ok:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc


def timed(argv: Sequence[str], runs: int, ok: Sequence[int] = (0,)) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(argv, ok)
        times.append(time.perf_counter() - start)
    return times


def report(label: str, times: Sequence[float]) -> float:
    median = statistics.median(times)
    print(f"{label:<28} median {median * 1000:8.1f} ms   min {min(times) * 1000:8.1f} ms")
    return median


def check_agreement(root: Path) -> None:
    """``read_tree`` must say what the real ``dkms status`` says on the same tree."""
    real = parse_status(run(status_argv(root)).stdout)
    ours = read_tree(Root(root))
    print(f"dkms status entries: {len(real)}; read_tree agrees: {real == ours}")


def kzguard_runs(root: Path) -> Optional[str]:
    """Why ``kzguard check`` cannot be timed yet, or ``None`` when it runs."""
    proc = run(kzguard_argv(root), ok=range(256))
    if proc.returncode in (0, 1):
        return None
    return f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kernels", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="build the root here and keep it")
    args = parser.parse_args(argv)
    if shutil.which("dkms") is None:
        print("dkms is not on PATH", file=sys.stderr)
        return 2
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="kzguard-bench-")
    base = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    try:
        start = time.perf_counter()
        root = build_root(base / "root", kernels(args.kernels))
        print(
            f"root {root}: {args.kernels} kernels x (zfs, spl), built in "
            f"{time.perf_counter() - start:.1f} s"
        )
        check_agreement(root)
        dkms_median = report("dkms status", timed(status_argv(root), args.runs))
        start = time.perf_counter()
        read_tree(Root(root))
        print(f"{'read_tree (in process)':<28} {(time.perf_counter() - start) * 1000:8.1f} ms")
        # Installed packages ship byte-compiled modules (and PYTHONDONTWRITEBYTECODE may be set).
        compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "kzguard"), quiet=1)
        reason = kzguard_runs(root)
        if reason:
            print(f"kzguard check --json: not timed ({reason})")
            return 0
        ours = report("kzguard check --json", timed(kzguard_argv(root), args.runs, ok=(0, 1)))
        bare = report("python -c pass", timed([kzguard_argv(root)[0], "-c", "pass"], args.runs))
        ratio = dkms_median / ours
        print(f"ratio dkms/kzguard: {ratio:.1f}x  (interpreter start {bare * 1000:.0f} ms)")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
