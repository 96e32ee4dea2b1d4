"""Shared fixtures: the fake ``zfs`` at the command boundary."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FAKEBIN = Path(__file__).resolve().parent.parent / "devtools" / "fakebin"


class FakeZfs:
    """Where the fake ``zfs`` logs its calls and keeps its snapshots."""

    def __init__(self, tmp: Path):
        self.log = tmp / "zfs-calls.jsonl"
        self.state = tmp / "zfs-state.json"

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{FAKEBIN}:{os.environ['PATH']}",
            "KZGUARD_FAKE_ZFS_LOG": str(self.log),
            "KZGUARD_FAKE_ZFS_STATE": str(self.state),
        }

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def snapshots(self) -> list[dict]:
        if not self.state.exists():
            return []
        return json.loads(self.state.read_text())["snapshots"]


@pytest.fixture
def fake_zfs(tmp_path, monkeypatch) -> FakeZfs:
    """Put the fake ``zfs`` first on PATH for this test (and the processes it starts)."""
    fake = FakeZfs(tmp_path)
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    return fake
