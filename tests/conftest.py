"""Shared fixtures (the fake ``zfs`` at the command boundary) and the real-tools guard.

Tests marked ``real`` drive real tools (gcc, dkms, dnf, apt-get, pacman...) and skip where a
tool is missing. With ``KZGUARD_REQUIRE_REAL=1`` (CI sets it) such a skip is a failure, so a
machine that lacks a tool cannot pass by testing less.
"""

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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("KZGUARD_REQUIRE_REAL") == "1"
        and item.get_closest_marker("real") is not None
    ):
        report.outcome = "failed"
        report.longrepr = (
            f"a real-tool test was skipped but KZGUARD_REQUIRE_REAL=1: {report.longrepr}"
        )
