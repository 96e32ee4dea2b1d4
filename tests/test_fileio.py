"""Atomic replacement: the old file or the new one, never a temp file left behind."""

from __future__ import annotations

import os

import pytest

from kzguard.fileio import remove_file, replace_file


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


def test_failure_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("old")
    os.mkdir(f"{path}.kzguard-tmp-{os.getpid()}")  # the temp name is taken: open fails
    with pytest.raises(OSError):
        replace_file(str(path), "new")
    assert path.read_text() == "old"
