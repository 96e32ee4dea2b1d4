"""The root object keeps every path inside the root, the way chroot would."""

from __future__ import annotations

import os

import pytest

from kzguard.base.errors import CommandError, FactError, UsageError
from kzguard.root import Root, Runner


def test_absolute_symlink_resolves_inside_the_root(tmp_path):
    (tmp_path / "usr/lib/modules/6.1.0-1").mkdir(parents=True)
    (tmp_path / "usr/lib/modules/6.1.0-1/x").write_text("inside")
    os.symlink("/usr/lib", tmp_path / "lib")
    root = Root(tmp_path)
    assert root.read_text("/lib/modules/6.1.0-1/x") == "inside"
    assert root.resolve("/lib/modules") == tmp_path / "usr/lib/modules"


def test_dotdot_and_links_never_climb_above_the_root(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root-tree")
    os.symlink("../../../../etc/passwd", tmp_path / "escape")
    root = Root(tmp_path)
    assert root.read_text("/escape") == "root-tree"
    assert root.read_text("/../../etc/passwd") == "root-tree"


def test_link_loops_are_a_fact_error(tmp_path):
    os.symlink("/b", tmp_path / "a")
    os.symlink("/a", tmp_path / "b")
    with pytest.raises(FactError):
        Root(tmp_path).read_bytes("/a")


def test_missing_files_read_as_errors_or_defaults(tmp_path):
    root = Root(tmp_path)
    with pytest.raises(FactError, match="cannot read /nope"):
        root.read_text("/nope")
    assert root.read_text_or("/nope") is None
    assert root.listdir("/nope") == []


def test_glob_one_level_per_slash(tmp_path):
    for v in ("2.2.7", "2.3.1"):
        (tmp_path / f"usr/src/zfs-{v}").mkdir(parents=True)
        (tmp_path / f"usr/src/zfs-{v}/META").write_text("x")
    (tmp_path / "usr/src/spl-0.7").mkdir()
    assert Root(tmp_path).glob("/usr/src/zfs-*/META") == [
        "/usr/src/zfs-2.2.7/META",
        "/usr/src/zfs-2.3.1/META",
    ]


def test_open_rejects_a_root_that_is_not_a_directory(tmp_path):
    with pytest.raises(UsageError):
        Root.open(tmp_path / "missing")


def test_runner_reports_failures_with_argv_and_stderr():
    runner = Runner()
    with pytest.raises(CommandError) as info:
        runner.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert info.value.returncode == 3
    assert "oops" in str(info.value)
    with pytest.raises(CommandError, match="command not found"):
        runner.run(["/nonexistent/kzguard-test-binary"])


def test_runner_dry_run_skips_changing_commands(tmp_path):
    marker = tmp_path / "marker"
    Runner(dry_run=True).run(["touch", str(marker)], changes=True)
    assert not marker.exists()
    assert Runner(dry_run=True).run(["echo", "hi"]).stdout == "hi\n"


def test_links_in_parents_are_resolved_once_and_still_inside_the_root(tmp_path):
    (tmp_path / "usr/lib/modules/6.1.0-1/extra").mkdir(parents=True)
    (tmp_path / "usr/lib/modules/6.1.0-1/extra/zfs.ko").write_text("a")
    (tmp_path / "usr/lib/modules/6.1.0-1/extra/spl.ko").write_text("b")
    os.symlink("/usr/lib", tmp_path / "lib")
    root = Root(tmp_path)
    assert root.read_text("/lib/modules/6.1.0-1/extra/zfs.ko") == "a"
    assert root.read_text("/lib/modules/6.1.0-1/extra/spl.ko") == "b"
    assert root.read_text("/lib/modules/6.1.0-1/extra/../extra/zfs.ko") == "a"
    os.symlink(
        "/usr/lib/modules/6.1.0-1/extra/zfs.ko", tmp_path / "usr/lib/modules/6.1.0-1/extra/w.ko"
    )
    assert root.read_text("/lib/modules/6.1.0-1/extra/w.ko") == "a"
    assert root.is_symlink("/lib/modules/6.1.0-1/extra/w.ko")
