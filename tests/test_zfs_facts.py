"""ZFS versions on the host and their supported Linux ranges."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.hostbuilder import HostTree
from kzguard.base.kernelrelease import parse_release
from kzguard.facts.zfs import (
    TABLE_PATH,
    meta_source,
    normalize_version,
    parse_meta,
    range_for,
    read_sources,
    release_table,
)
from kzguard.root import Root


def test_table_has_every_release_in_the_shared_data():
    table = release_table()
    assert table["2.2.7"] == ("4.18", "6.12")
    assert table["2.3.0-rc1"] == ("4.18", "6.11")
    assert table["0.8.6"] == ("2.6.32", "5.9")
    rows = Path(TABLE_PATH).read_text().count("\n") - 1
    assert len(table) == rows == 98


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2.2.7", "2.2.7"),
        ("2.2.7-1", "2.2.7"),
        ("zfs-2.2.7", "2.2.7"),
        ("2.3.0-rc1", "2.3.0-rc1"),
        ("2.2.2-0ubuntu9", "2.2.2"),
        ("2.2.7-1.fc41", "2.2.7"),
    ],
)
def test_normalize_version(text, want):
    assert normalize_version(text) == want


def test_meta_parsed_like_configure_first_match_wins():
    text = " Version:  2.2.7\nVersion: 9.9.9\nnot a field\nLinux-Maximum:\t6.12\n"
    assert parse_meta(text) == {"Version": "2.2.7", "Linux-Maximum": "6.12"}


def test_maximum_admits_every_patch_of_its_series():
    rng = range_for("2.2.7", [], {}, table=release_table())
    assert rng is not None and rng.source == "table"
    assert rng.judge(parse_release("6.12.99-amd64")) is None
    assert rng.judge(parse_release("6.13.0-amd64")) == "kernel-too-new"
    assert rng.judge(parse_release("4.17.0-1")) == "kernel-too-old"
    assert rng.judge(parse_release("4.18.0-1")) is None


def test_meta_on_host_wins_over_table_and_table_over_config(tmp_path):
    tree = HostTree(tmp_path)
    tree.zfs_source("2.2.7", "4.18", "6.13")  # a patched META on the host says 6.13
    sources = read_sources(Root(tmp_path))
    ranges = {"2.2.7": ("3.10", "6.1"), "2.9.0": ("5.10", "7.5")}
    rng = range_for("2.2.7-1", sources, ranges, "/etc/kzguard/kzguard.yaml", release_table())
    assert (rng.source, rng.linux_max, rng.origin) == ("meta", "6.13", "/usr/src/zfs-2.2.7/META")
    assert range_for("2.2.6", sources, ranges, table=release_table()).source == "table"
    cfg = range_for("2.9.0", sources, ranges, "/etc/kzguard/kzguard.yaml", release_table())
    assert (cfg.source, cfg.linux_max, cfg.origin) == ("config", "7.5", "/etc/kzguard/kzguard.yaml")
    assert range_for("2.9.1", sources, ranges, table=release_table()) is None


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x7fELF\x00\x00\xff\xfe binary",
        b"Version: 2.2.7\n",  # no Linux-Maximum
        b"Name: spl\nVersion: 2.2.7\nLinux-Minimum: 4.18\nLinux-Maximum: 6.12\n",
        b"Version: banana\nLinux-Minimum: 4.18\nLinux-Maximum: 6.12\n",
        b"Version: 2.2.7\nLinux-Minimum: 4.18\nLinux-Maximum: 6.x\n",
    ],
)
def test_garbage_meta_is_an_error_fact_and_falls_back_to_the_table(tmp_path, garbage):
    tree = HostTree(tmp_path)
    tree.write("/usr/src/zfs-2.2.7/META", garbage)
    (source,) = read_sources(Root(tmp_path))
    assert source.error
    assert source.version == "2.2.7"  # from the directory name
    assert range_for("2.2.7", [source], {}, table=release_table()).source == "table"


def test_rc_release_in_meta_is_part_of_the_version():
    source = meta_source(
        "/usr/src/zfs-2.3.0/META",
        "Version: 2.3.0\nRelease: rc1\nLinux-Minimum: 4.18\nLinux-Maximum: 6.11\n",
    )
    assert source.version == "2.3.0-rc1"
    assert source.range().linux_max == "6.11"


def test_sources_sorted_newest_first(tmp_path):
    tree = HostTree(tmp_path)
    for version in ("2.2.10", "2.2.9", "2.3.0"):
        tree.zfs_source(version, "4.18", "6.17")
    assert [s.version for s in read_sources(Root(tmp_path))] == ["2.3.0", "2.2.10", "2.2.9"]


def test_a_source_behind_a_link_loop_is_a_source_with_an_error(tmp_path: Path) -> None:
    # found by tests/test_fuzz_files.py: Root.glob raised FactError out of the check (exit 3)
    tree = HostTree(tmp_path)
    tree.zfs_source("2.2.7", "4.18", "6.12")
    tree.symlink("/usr/src/zfs-2.3.1", "zfs-2.3.1")
    sources = {s.path: s for s in read_sources(Root(tmp_path))}
    assert sources["/usr/src/zfs-2.2.7/META"].range() is not None
    looped = sources["/usr/src/zfs-2.3.1/META"]
    assert looped.version == "2.3.1" and looped.range() is None
    assert "too many levels of symbolic links" in (looped.error or "")


def test_an_unlistable_usr_src_is_said_not_silently_empty(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.symlink("/usr/src", "/usr/src")
    [source] = read_sources(Root(tmp_path))
    assert source.version is None and "too many levels" in (source.error or "")
