"""kill -9 at any moment of kzguard's writes: every file still parses, no pin is lost, state and
the managers' files agree after the next run, and no temp file outlives it.

A worker process pins kernel after kernel (state file first, then APT's preferences file or
dnf5's versionlock) and records one-shot overrides; it says ``ready`` once imported and
``done R`` after each pin returns. The test kills it with SIGKILL at a random moment (the
random delay is the fault injected, not a wait for something), over and over, then runs one
more ``pin add`` and reads every file back.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.hostbuilder import HostTree
from kzguard.actions import apt_hold, pin
from kzguard.context import Context
from kzguard.root import Root, Runner

WORKER = """
import sys
from kzguard.actions import pin
from kzguard.actions import state
from kzguard.root import Root, Runner
from kzguard.context import Context
root, prefix, start = Root(sys.argv[1]), sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
for n in range(start, start + 1000):
    release = f"6.13.{n}-{prefix}"
    pin.add(Context(root, Runner()), release, reason="kill test", who="t", auto=True)
    print("done", release, flush=True)
    with state.locked(root) as st:
        st.data["allow"][release] = {"time": "t", "by": "t"}
        st.save()
"""


def _kill_loop(top: Path, prefix: str, kills: int, seed: int) -> list[str]:
    """Kill a fresh worker ``kills`` times; the releases it said were pinned."""
    rng = random.Random(seed)
    done: list[str] = []
    start = 0
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(top), prefix, str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.06))  # the moment of the fault, not a synchronisation
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        lines = out.splitlines()
        done += [line.split()[1] for line in lines if line.startswith("done ")]
        start += len(lines) + 1  # never reuse a release a killed run may have half-written
    return done


def _temps(top: Path) -> list[Path]:
    return [p for p in top.rglob("*") if ".kzguard-tmp-" in p.name]


def test_kills_during_apt_pins_lose_nothing(tmp_path):
    tree = HostTree(tmp_path).os_release("debian12")
    tree.write("/var/lib/dpkg/status", "")
    done = _kill_loop(tmp_path, "amd64", kills=150, seed=1)
    root = Root(tmp_path)
    pin.add(Context(root, Runner()), "6.14.0-amd64", reason="after", who="t")  # the next run
    data = json.loads((tmp_path / "var/lib/kzguard/state.json").read_text())
    pins = {r for r in data["pins"] if ":" not in r}
    stanzas, foreign = apt_hold.read(root)
    assert foreign == []
    assert pins == {s.subject for s in stanzas if s.kind == apt_hold.PIN}
    assert set(done) <= pins, "a pin reported done was lost"
    assert not list(tmp_path.rglob("state.json.corrupt-*"))
    assert _temps(tmp_path) == []
    assert len(done) > 20  # the kills landed among writes, not all before the first


def test_kills_during_dnf5_pins_lose_nothing(tmp_path):
    pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    from kzguard.actions.dnf5_hold import Versionlock

    tree = HostTree(tmp_path).os_release("fedora41")
    tree.write("/usr/lib/sysimage/rpm/rpmdb.sqlite", "")
    tree.write("/usr/bin/dnf5", "")
    done = _kill_loop(tmp_path, "200.fc41.x86_64", kills=100, seed=2)
    root = Root(tmp_path)
    pin.add(Context(root, Runner()), "6.14.0-200.fc41.x86_64", reason="after", who="t")
    data = json.loads((tmp_path / "var/lib/kzguard/state.json").read_text())
    pins = {r for r in data["pins"] if ":" not in r}
    held = set(Versionlock.load(root).held())  # parses, or this raises
    assert pins <= held
    assert set(done) <= pins
    assert _temps(tmp_path / "var/lib/kzguard") == [] and _temps(tmp_path / "etc") == []
    assert os.path.exists(tmp_path / "etc/dnf/versionlock.toml")
