"""Atomic replacement: the old file or the new one, never a temp file left behind."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from kzguard.base.fileio import (
    TMP_MARK,
    UnsafeDirectory,
    check_directory,
    remove_file,
    replace_file,
)


def test_replace_and_remove(tmp_path):
    path = tmp_path / "etc/apt/preferences.d/kzguard"
    replace_file(str(path), "one\n")
    replace_file(str(path), "two\n", mode=0o640)
    assert path.read_text() == "two\n"
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.listdir(path.parent) == ["kzguard"]
    remove_file(str(path))
    remove_file(str(path))  # already gone: fine
    assert not path.exists()


def test_failure_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_text("old")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        replace_file(str(path), "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_planted_link_is_never_written_through(tmp_path):
    victim = tmp_path / "root-only"
    victim.write_text("secret\n")
    collector = tmp_path / "textfile"
    collector.mkdir()
    target = collector / "kzguard.prom"
    # every name a writer could pick that an attacker can predict: the pid-based ones
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        os.symlink(victim, f"{target}{TMP_MARK}{pid}")
    replace_file(str(target), "metrics\n")
    assert victim.read_text() == "secret\n"
    assert target.read_text() == "metrics\n" and not target.is_symlink()


def test_temps_a_killed_writer_left_are_removed_by_the_next_write(tmp_path):
    path = tmp_path / "state.json"
    child = subprocess.Popen(["sleep", "60"])
    try:
        leftover = tmp_path / f"state.json{TMP_MARK}999999999-abcdef"
        live = tmp_path / f"state.json{TMP_MARK}{child.pid}-abcdef"
        leftover.write_text("half")
        live.write_text("being written")
        replace_file(str(path), "new")
        assert not leftover.exists() and live.exists()
    finally:
        child.kill()
        child.wait(timeout=10)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_directory_others_can_write_is_refused(tmp_path, mode):
    directory = tmp_path / "collector"
    directory.mkdir()
    os.chmod(directory, mode)
    with pytest.raises(UnsafeDirectory):
        check_directory(str(directory))
    os.chmod(directory, mode | 0o1000)  # sticky and root's, like /tmp: fine
    check_directory(str(directory))
