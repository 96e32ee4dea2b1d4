"""kzguard cleanup: what kzguard wrote into APT and dnf5 configuration goes; nothing else."""

from __future__ import annotations

import subprocess
import sys

from devtools.hostbuilder import HostTree
from kzguard.actions import apt_hold, dnf5_hold
from kzguard.root import Root, Runner

ADMIN_PIN = "Package: nvidia-driver\nPin: version 535.*\nPin-Priority: 1001\n"
ADMIN_LOCK = (
    '[[packages]]\nname = "firefox"\n'
    '[packages.cond]\nkey = "evr"\ncomparator = "="\nvalue = "1.0-1"\n'
)


def test_cleanup_takes_back_only_kzguards_entries(tmp_path):
    tree = HostTree(tmp_path)
    tree.write(apt_hold.PREFERENCES, ADMIN_PIN)
    tree.write(dnf5_hold.VERSIONLOCK, ADMIN_LOCK)
    root = Root(tmp_path)
    apt_hold.add(root, Runner(), [apt_hold.release_pin("6.13.2-amd64")], record=False)
    dnf5_hold.add(root, Runner(), ["6.13.2-200.fc41.x86_64"])
    assert "6.13.2-amd64" in (tmp_path / apt_hold.PREFERENCES.lstrip("/")).read_text()
    assert "kzguard:" in (tmp_path / dnf5_hold.VERSIONLOCK.lstrip("/")).read_text()

    dry = subprocess.run(
        [sys.executable, "-m", "kzguard", "--root", str(tmp_path), "--dry-run", "cleanup"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "would remove APT pin" in dry.stdout
    assert "6.13.2-amd64" in (tmp_path / apt_hold.PREFERENCES.lstrip("/")).read_text()

    proc = subprocess.run(
        [sys.executable, "-m", "kzguard", "--root", str(tmp_path), "cleanup"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "removed APT pin" in proc.stdout
    preferences = (tmp_path / apt_hold.PREFERENCES.lstrip("/")).read_text()
    assert "6.13.2" not in preferences and "nvidia-driver" in preferences
    versionlock = (tmp_path / dnf5_hold.VERSIONLOCK.lstrip("/")).read_text()
    assert "kzguard:" not in versionlock and 'name = "firefox"' in versionlock

    again = subprocess.run(
        [sys.executable, "-m", "kzguard", "--root", str(tmp_path), "cleanup"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "nothing of kzguard's" in again.stdout
