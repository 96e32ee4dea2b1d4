"""What every benchmark here shares: kzguard installed as a package installs it; interleaved runs.

- :func:`install` builds a wheel of this tree and installs it, non-editable, into a fresh venv
  made without pip or setuptools (so no ``.pth`` file or import finder is loaded at start-up,
  as in a distribution's site-packages). The venv's ``bin/kzguard`` is the script pip
  generates; :data:`PACKAGE_SCRIPT` is the one the .deb, .rpm and Arch packages install.
- :func:`interleave` runs the cases of a comparison one after the other, run by run, starting
  each round at the next case (so neither always goes first), and takes wall and CPU time of
  every run (CPU: the child's user + system time from ``wait4``).
- :func:`report` prints each case's median with min-max, and for every pair the ratio of the
  medians with the min-max of the per-round ratios, and whether a goal is met.

Nothing is asserted: a missed goal is printed as MISSED and the command exits 1.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

TOP = Path(__file__).resolve().parent.parent
PACKAGE_SCRIPT = TOP / "packaging" / "kzguard"


@dataclass(frozen=True)
class Installed:
    """A venv holding kzguard as a package installs it."""

    venv: Path

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def pip_script(self) -> str:
        """The console script pip generates (``pip install kzguard``)."""
        return str(self.venv / "bin" / "kzguard")

    @property
    def package_script(self) -> str:
        """``/usr/bin/kzguard`` of the .deb, .rpm and Arch packages, for this venv's python."""
        path = self.venv / "bin" / "kzguard-packaged"
        if not path.exists():
            body = PACKAGE_SCRIPT.read_text().split("\n", 1)[1]
            path.write_text(f"#!{self.python}\n{body}")
            path.chmod(0o755)
        return str(path)

    def argv(self, *args: str, script: Optional[str] = None) -> list[str]:
        return [self.python, script or self.package_script, *args]


def export(target: Path) -> Path:
    """The tree's files as git sees them (tracked, and untracked but not ignored), copied to
    ``target``: a wheel built there holds no stale ``build/`` leftovers and no caches."""
    listing = subprocess.run(
        ["git", "-C", str(TOP), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        src = TOP / name
        if not src.is_file():
            continue  # deleted in the work tree, not yet in the index
        dst = target / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return target


def install(workdir: Path, python: str = sys.executable, extras: str = "") -> Installed:
    """kzguard from this tree, non-editable, in a fresh venv under ``workdir``."""
    venv = workdir / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    wheels = workdir / "wheels"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    source = export(workdir / "source")
    subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wheel = next(wheels.glob("kzguard-*.whl"))
    target = f"{wheel}[{extras}]" if extras else str(wheel)
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", target],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    installed = Installed(venv)
    probe = subprocess.run(
        [installed.python, "-c", "import kzguard, sys; print(kzguard.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=workdir,
    ).stdout.strip()
    if not probe.startswith(str(venv)):
        raise SystemExit(f"kzguard imports from {probe}, not from the fresh venv {venv}")
    return installed


@dataclass(frozen=True)
class Case:
    """One command to time: argv, its stdin, the exit codes that mean it ran."""

    argv: Sequence[str]
    stdin: bytes = b""
    ok: tuple[int, ...] = (0,)
    env: Optional[Mapping[str, str]] = None
    cwd: Optional[str] = None


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``PYTHON*`` variables (``PYTHONDONTWRITEBYTECODE``,
    ``PYTHONUNBUFFERED``...), which a package manager's hook does not see, and ``LC_ALL=C``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(LC_ALL="C", **extra)
    return env


def _run(case: Case) -> tuple[float, float]:
    """Wall and CPU seconds of one run; CPU from the children's rusage around the wait."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        list(case.argv),
        input=case.stdin,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=clean_env() if case.env is None else dict(case.env),
        cwd=case.cwd or tempfile.gettempdir(),
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in case.ok:
        raise SystemExit(
            f"{' '.join(case.argv)} exited {proc.returncode}: {proc.stderr.decode()[-400:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def interleave(cases: Mapping[str, Case], runs: int, warmup: int = 2) -> dict[str, Samples]:
    """``runs`` rounds; each runs every case once, starting at a different case each round."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            _run(cases[name])
    samples = {name: Samples() for name in names}
    for round_ in range(runs):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = _run(cases[name])
            samples[name].wall.append(wall)
            samples[name].cpu.append(cpu)
    return samples


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def describe(samples: Samples, clock: str = "wall") -> str:
    values = getattr(samples, clock)
    return f"{ms(statistics.median(values))} ms ({ms(min(values))}-{ms(max(values))})"


@dataclass(frozen=True)
class Goal:
    """``numerator`` over ``denominator`` (medians) must be <= ``at_most`` or >= ``at_least``."""

    label: str
    numerator: str
    denominator: str
    at_most: Optional[float] = None
    at_least: Optional[float] = None
    clock: str = "wall"

    def ratios(self, samples: Mapping[str, Samples]) -> tuple[float, float, float]:
        top = getattr(samples[self.numerator], self.clock)
        bottom = getattr(samples[self.denominator], self.clock)
        per_round = [a / b for a, b in zip(top, bottom) if b > 0]
        return statistics.median(top) / statistics.median(bottom), min(per_round), max(per_round)

    def met(self, ratio: float) -> bool:
        if self.at_most is not None and ratio > self.at_most:
            return False
        return not (self.at_least is not None and ratio < self.at_least)

    def wanted(self) -> str:
        return f"<= {self.at_most}x" if self.at_most is not None else f">= {self.at_least}x"


def how(runs: int, installed: Optional[Installed] = None, extra: str = "") -> str:
    """The lines that say how a figure was measured."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load}; "
        f"{platform.python_implementation()} {platform.python_version()}",
        f"method: {runs} interleaved rounds (each case once per round, the first case rotating), "
        "after 2 warm-up rounds; wall clock from perf_counter around each run, CPU as the "
        "child's user+system time; medians with min-max",
    ]
    if installed is not None:
        lines.append(
            f"kzguard: installed non-editable from a wheel of this tree into {installed.venv} "
            "(a venv without pip or setuptools: no .pth file at start-up)"
        )
    if extra:
        lines.append(extra)
    return "\n".join(lines)


def report(samples: Mapping[str, Samples], goals: Sequence[Goal], clocks=("wall",)) -> bool:
    """Print every case and goal; True when every goal is met."""
    width = max(len(name) for name in samples)
    for name, values in samples.items():
        parts = [f"{clock} {describe(values, clock)}" for clock in clocks]
        print(f"  {name:<{width}}  " + "   ".join(parts))
    ok = True
    for goal in goals:
        ratio, low, high = goal.ratios(samples)
        met = goal.met(ratio)
        ok &= met
        print(
            f"  {goal.label}: {goal.numerator} / {goal.denominator} ({goal.clock}) = {ratio:.2f}x "
            f"(per round {low:.2f}-{high:.2f}); goal {goal.wanted()}: "
            f"{'met' if met else 'MISSED'}"
        )
    return ok


def which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"{tool} is not on PATH (scripts/setup-dev installs it)")
    return path
