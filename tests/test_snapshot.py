"""The snapshot action, against the fake zfs command (real syntax) at the command boundary."""

from __future__ import annotations

from devtools.hostbuilder import HostTree
from kzguard.actions import snapshot
from kzguard.root import Root, Runner

MOUNTS = "rpool/ROOT/debian / zfs rw,relatime,xattr,posixacl 0 0\n"


def zfs_root(path):
    tree = HostTree(path)
    tree.write("/proc/self/mounts", "proc /proc proc rw 0 0\n" + MOUNTS)
    return Root(path)


def test_root_dataset_from_the_mount_table(tmp_path):
    root = zfs_root(tmp_path)
    assert snapshot.root_dataset(root) == "rpool/ROOT/debian"
    HostTree(tmp_path).write("/proc/self/mounts", MOUNTS + "/dev/sda1 / ext4 rw 0 0\n")
    assert snapshot.root_dataset(Root(tmp_path)) is None  # the last mount on / wins


def test_snapshot_named_and_tagged(tmp_path, fake_zfs):
    result = snapshot.take(
        zfs_root(tmp_path),
        Runner(),
        manager="apt",
        kernels=["6.13.2-amd64"],
        reason="apt-6.13.2-amd64",
        now=1796000000,
    )
    assert result.status == "taken"
    name = "rpool/ROOT/debian@kzguard-20261130T005320Z-apt-6.13.2-amd64"
    assert result.name == name
    assert fake_zfs.calls()[0] == [
        "snapshot",
        "-o",
        "org.kzguard:manager=apt",
        "-o",
        "org.kzguard:kernels=6.13.2-amd64",
        "-o",
        "org.kzguard:reason=apt-6.13.2-amd64",
        name,
    ]


def test_retention_keeps_newest_and_never_touches_others(tmp_path, fake_zfs):
    root = zfs_root(tmp_path)
    runner = Runner()
    runner.run(["zfs", "snapshot", "rpool/ROOT/debian@before-upgrade"])
    runner.run(["zfs", "snapshot", "rpool/ROOT/debian@kzguard-by-hand"])  # no property: not ours
    for n in range(4):
        snapshot.take(
            root, runner, keep=2, manager="dnf", kernels=[], reason=f"r{n}", now=1796000000 + n
        )
    names = [s["name"] for s in fake_zfs.snapshots()]
    assert names == [
        "rpool/ROOT/debian@before-upgrade",
        "rpool/ROOT/debian@kzguard-by-hand",
        "rpool/ROOT/debian@kzguard-20261130T005322Z-r2",
        "rpool/ROOT/debian@kzguard-20261130T005323Z-r3",
    ]


def test_not_zfs_is_a_logged_no_op(tmp_path, fake_zfs):
    result = snapshot.take(Root(tmp_path), Runner(), manager="apt", kernels=[], reason="x")
    assert result.status == "skipped"
    assert fake_zfs.calls() == []


def test_failure_is_reported_not_raised(tmp_path, fake_zfs, monkeypatch):
    monkeypatch.setenv("KZGUARD_FAKE_ZFS_FAIL", "snapshot")
    result = snapshot.take(zfs_root(tmp_path), Runner(), manager="apt", kernels=[], reason="x")
    assert result.failed and "out of space" in result.message


def test_dry_run_changes_nothing(tmp_path, fake_zfs):
    result = snapshot.take(
        zfs_root(tmp_path), Runner(dry_run=True), manager="apt", kernels=[], reason="x"
    )
    assert result.status == "taken" and result.message.startswith("would take")
    assert all(call[0] != "snapshot" for call in fake_zfs.calls())
    assert fake_zfs.snapshots() == []
