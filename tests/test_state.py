"""The state file: atomic writes under a lock, corrupt files kept aside, no lost updates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kzguard.actions import state
from kzguard.root import Root


def test_missing_state_reads_as_empty_and_saves_atomically(tmp_path):
    root = Root(tmp_path)
    with state.locked(root) as st:
        assert st.data == state.empty()
        st.data["allow"]["6.13.2-amd64"] = {"by": "root"}
        st.save()
    saved = json.loads((tmp_path / "var/lib/kzguard/state.json").read_text())
    assert saved["allow"] == {"6.13.2-amd64": {"by": "root"}}
    leftovers = [p.name for p in (tmp_path / "var/lib/kzguard").iterdir()]
    assert sorted(leftovers) == ["state.json", "state.lock"]


@pytest.mark.parametrize("garbage", [b"{not json", b"[]", b'{"format": 99}', b"\xff\xfe", b""])
def test_corrupt_state_is_kept_aside_never_lost(tmp_path, garbage):
    path = tmp_path / "var/lib/kzguard/state.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(garbage)
    with state.locked(Root(tmp_path)) as st:
        assert st.data["pins"] == {}
        assert st.notes and "corrupt" in st.notes[0]
        st.save()
    aside = list(path.parent.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert json.loads(path.read_text())["format"] == state.FORMAT


def test_dry_run_writes_nothing(tmp_path):
    with state.locked(Root(tmp_path), dry_run=True) as st:
        st.data["allow"]["x"] = {}
        st.save()
    assert not (tmp_path / "var").exists()


def test_events_are_bounded(tmp_path):
    with state.locked(Root(tmp_path)) as st:
        for i in range(state.MAX_EVENTS + 5):
            st.event("transaction-blocked", f"event {i}")
        st.save()
    events = state.read(Root(tmp_path))["events"]
    assert len(events) == state.MAX_EVENTS
    assert events[-1]["message"] == f"event {state.MAX_EVENTS + 4}"


WRITER = """
import sys
from kzguard.actions import state
from kzguard.root import Root
root, name, count = Root(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(count):
    with state.locked(root) as st:
        st.data["pins"][f"{name}-{i}"] = {"n": i}
        st.save()
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    """Real processes racing on the state file: every change survives."""
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{n}", "40"])
        for n in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    pins = state.read(Root(tmp_path))["pins"]
    assert len(pins) == 4 * 40


def test_unchanged_state_is_not_rewritten(tmp_path):
    root = Root(tmp_path)
    with state.locked(root) as st:
        st.save()
    assert not (tmp_path / "var/lib/kzguard/state.json").exists()
    with state.locked(root) as st:
        st.data["pins"]["a"] = {}
        st.save()
    path = tmp_path / "var/lib/kzguard/state.json"
    before = path.stat().st_mtime_ns
    path.touch()
    touched = path.stat().st_mtime_ns
    with state.locked(root) as st:
        st.save()
    assert path.stat().st_mtime_ns == touched and touched >= before
