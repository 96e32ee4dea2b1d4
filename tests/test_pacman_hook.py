"""The pacman adapter: the alpm hook's targets -> a Transaction, the hook file, hold's advice.

pacman's local database (``desc`` and ``files`` per package) and sync databases (a tar of
``desc`` files) are written here in their on-disk formats; tests/lab/test_pacman.py runs the
real pacman.
"""

from __future__ import annotations

import fnmatch
import io
import tarfile
from pathlib import Path
from typing import Optional

import pytest

from devtools.hostbuilder import HostTree
from kzguard.base.transaction import Transaction
from kzguard.context import Context
from kzguard.guard.gate import run_gate
from kzguard.guard.hook_process import hook_main
from kzguard.judge.decision import HOLD, Decision
from kzguard.managers import pacman
from kzguard.root import Root, Runner
from tests.tools import alpm_sections

HOOK = Path(__file__).resolve().parent.parent / "hooks" / "pacman" / "05-kzguard-pre.hook"
OLD, NEW = "6.12.4-arch1-1", "6.13.1-arch1-1"


def vmlinuz(release: str) -> str:
    return f"usr/lib/modules/{release}/vmlinuz"


def local_pkg(tree: HostTree, name: str, version: str, release: Optional[str] = None) -> None:
    """An installed package in pacman's local database, as ``pacman -U`` leaves it."""
    base = f"/var/lib/pacman/local/{name}-{version}"
    tree.write(f"{base}/desc", f"%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%ARCH%\nx86_64\n\n")
    files = "%FILES%\nusr/\n"
    if release:
        files += f"usr/lib/\nusr/lib/modules/\nusr/lib/modules/{release}/\n{vmlinuz(release)}\n"
    tree.write(f"{base}/files", files + "\n")


def sync_db(tree: HostTree, repo: str, packages: dict[str, str]) -> None:
    """A gzipped sync database with one ``desc`` per package, as ``repo-add`` writes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, version in packages.items():
            data = f"%FILENAME%\n{name}-{version}-x86_64.pkg.tar.zst\n\n%NAME%\n{name}\n\n"
            data += f"%VERSION%\n{version}\n\n"
            info = tarfile.TarInfo(f"{name}-{version}/desc")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data.encode()))
    tree.write(f"/var/lib/pacman/sync/{repo}.db", buffer.getvalue())


@pytest.fixture
def arch(tmp_path) -> HostTree:
    """linux and linux-lts installed; core and archzfs in pacman.conf."""
    tree = HostTree(tmp_path)
    local_pkg(tree, "linux", "6.12.4.arch1-1", OLD)
    local_pkg(tree, "linux-lts", "6.6.63-1", "6.6.63-1-lts")
    local_pkg(tree, "linux-firmware", "20241210-1")
    local_pkg(tree, "zfs-utils", "2.2.7-1")
    tree.write("/etc/pacman.conf", "[options]\nHoldPkg = pacman\n\n[core]\n[extra]\n[archzfs]\n")
    return tree


def parse(tree: HostTree, *targets: str) -> Transaction:
    return pacman.transaction(Root(tree.path), targets)


# --- kernels -----------------------------------------------------------------------------------


def test_an_upgrade_installs_the_written_release_and_removes_the_old_one(arch):
    tx = parse(arch, "linux", vmlinuz(NEW))
    assert (tx.install, tx.remove) == ((NEW,), (OLD,))
    assert tx.packages_of(NEW) == ("linux",)
    assert (tx.zfs_version, tx.zfs_packages) == (None, ())
    assert tx.manager == "pacman" and tx.relevant


def test_a_reinstall_removes_nothing(arch):
    tx = parse(arch, "linux", vmlinuz(OLD))
    assert (tx.install, tx.remove) == ((OLD,), ())


def test_a_removal_has_only_the_old_release(arch):
    tx = parse(arch, "linux-lts")
    assert (tx.install, tx.remove) == ((), ("6.6.63-1-lts",))
    assert tx.relevant


def test_two_kernels_each_get_their_package(arch):
    tx = parse(arch, "linux", "linux-lts", vmlinuz("6.6.65-1-lts"), vmlinuz(NEW))
    assert set(tx.install) == {NEW, "6.6.65-1-lts"}
    assert set(tx.remove) == {OLD, "6.6.63-1-lts"}
    assert tx.packages_of("6.6.65-1-lts") == ("linux-lts",)
    assert tx.packages_of(NEW) == ("linux",)


def test_the_path_wins_over_the_sync_database(arch):
    """``pacman -U`` of a file the sync database does not have."""
    sync_db(arch, "core", {"linux": "6.12.10.arch1-1"})
    tx = parse(arch, "linux", vmlinuz(NEW))
    assert tx.install == (NEW,)


def test_any_kernel_package_is_seen_by_its_vmlinuz(tmp_path):
    tx = parse(HostTree(tmp_path), vmlinuz("6.12.5-1-cachyos"))
    assert (tx.install, tx.remove, tx.packages) == (("6.12.5-1-cachyos",), (), ())


def test_a_new_kernel_package_without_a_vmlinuz_path_gets_its_sync_release(arch):
    """NoExtract on the vmlinuz: the release comes from the sync database version."""
    sync_db(arch, "extra", {"linux-zen": "6.12.10.zen1-1", "firefox": "133.0-1"})
    tx = parse(arch, "linux-zen")
    assert tx.install == ("6.12.10-zen1-1-zen",)
    assert tx.packages_of("6.12.10-zen1-1-zen") == ("linux-zen",)


def test_lines_that_are_not_targets_are_ignored(arch):
    tx = parse(arch, "", "  ", "usr/lib/modules/6.12.4-arch1-1/build/vmlinuz", "usr/src/x/META")
    assert not tx.relevant
    assert tx == Transaction("pacman")


# --- ZFS ---------------------------------------------------------------------------------------


def test_zfs_version_from_the_meta_path(arch):
    sync_db(arch, "archzfs", {"zfs-dkms": "2.3.0-1"})  # the path is what gets installed
    tx = parse(arch, "usr/src/zfs-2.3.1/META", "zfs-dkms", "zfs-utils")
    assert tx.zfs_version == "2.3.1"
    assert tx.zfs_packages == ("zfs-dkms", "zfs-utils")
    assert tx.touches_zfs and not tx.touches_kernel


def test_zfs_linux_version_from_the_sync_database(arch):
    sync_db(arch, "core", {"linux": "6.13.1.arch1-1"})
    sync_db(
        arch,
        "archzfs",
        {"zfs-linux": "2.3.1_6.13.1.arch1.1-1", "zfs-utils": "2.3.2-1"},
    )
    tx = parse(arch, "linux", "zfs-linux", "zfs-utils", vmlinuz(NEW))
    assert tx.zfs_version == "2.3.1"  # the module's version, not the tools'
    assert tx.zfs_packages == ("zfs-linux", "zfs-utils")
    assert (tx.install, tx.remove) == ((NEW,), (OLD,))


def test_zfs_utils_alone_epoch_dropped(arch):
    sync_db(arch, "archzfs", {"zfs-utils": "1:2.3.1-1"})
    assert parse(arch, "zfs-utils").zfs_version == "2.3.1"


def test_a_zfs_package_no_database_knows_changes_zfs_to_an_unknown_version(arch):
    tx = parse(arch, "zfs-utils")
    assert (tx.zfs_version, tx.zfs_packages, tx.relevant) == (None, ("zfs-utils",), True)


def test_read_takes_the_targets_from_stdin(arch):
    stdin = io.StringIO(f"linux\n{vmlinuz(NEW)}\n")
    hook_input = pacman.read(stdin, Root(arch.path))
    assert hook_input.transaction.install == (NEW,)
    assert hook_input.root is None  # the gate judges "/": pacman chroots the hook


# --- the gate, in-process ----------------------------------------------------------------------


def arch_zfs_host(tree: HostTree) -> HostTree:
    tree.os_release("arch").running(OLD).kernel(OLD, modules_root="/usr/lib/modules")
    tree.zfs_source("2.2.7", "4.18", "6.12")
    tree.arch_dkms_hook()  # zfs-dkms depends on dkms, whose hook builds every source
    return tree


def test_hook_refuses_a_kernel_the_installed_zfs_does_not_support(arch, capsys):
    root = str(arch_zfs_host(arch).path)

    code = hook_main(
        "pacman",
        pacman.ADAPTER.read,
        stdin=io.StringIO(f"linux\n{vmlinuz(NEW)}\n"),
        root_option=root,
    )
    assert code == 1
    assert f"refusing kernel {NEW} (unsafe)" in capsys.readouterr().err


def test_the_gate_lets_the_kernel_through_with_the_zfs_that_supports_it(arch):
    tree = arch_zfs_host(arch)
    tx = parse(tree, "linux", "usr/src/zfs-2.3.1/META", vmlinuz(NEW), "zfs-dkms")
    decision = run_gate(Context(Root(tree.path), Runner(dry_run=True), env={}), tx)
    assert decision.action == "allow", decision.lines


def test_an_empty_target_list_ends_the_hook_at_once(tmp_path):
    read = pacman.ADAPTER.read
    assert hook_main("pacman", read, stdin=io.StringIO(""), root_option=str(tmp_path)) == 0
    assert not (tmp_path / "var/lib/kzguard").exists()


# --- hold --------------------------------------------------------------------------------------


def test_hold_advises_ignoring_the_kernel_and_its_zfs_linux():
    tx = Transaction(
        "pacman",
        install=(NEW,),
        zfs_packages=("zfs-linux",),
        packages=((NEW, ("linux",)),),
    )
    decision = Decision(HOLD, held=(NEW,))
    lines = pacman.hold(Context(Root("/nonexistent"), Runner(dry_run=True)), decision, tx)
    assert "refuses the whole transaction like `block`" in lines[0]
    assert "pacman -Syu --ignore linux,zfs-linux" in lines[1]
    assert "IgnorePkg = linux zfs-linux" in lines[1]


def test_hold_without_a_known_package_names_the_release():
    tx = Transaction("pacman", install=("6.13.1-1-cachyos",))
    decision = Decision(HOLD, held=("6.13.1-1-cachyos",))
    lines = pacman.hold(Context(Root("/nonexistent"), Runner(dry_run=True)), decision, tx)
    assert "--ignore <the package of 6.13.1-1-cachyos>" in lines[1]


def test_hold_exits_non_zero_like_block(arch, capsys):
    """pacman cannot drop the kernel, so the hook refuses the transaction with hold's advice."""
    arch_zfs_host(arch).config("on_unsupported_kernel: hold\n")
    root = str(arch.path)

    stdin = io.StringIO(f"linux\n{vmlinuz(NEW)}\n")
    code = hook_main(
        "pacman", pacman.ADAPTER.read, stdin=stdin, root_option=root, on_hold=pacman.hold
    )
    assert code == 1
    err = capsys.readouterr().err
    assert f"holding back kernel {NEW}" in err and "pacman -Syu --ignore linux" in err


# --- the hook file -----------------------------------------------------------------------------


def hook_sections() -> list[tuple[str, list[tuple[str, str]]]]:
    return alpm_sections(HOOK)


def test_hook_file_runs_before_the_transaction_and_can_abort_it():
    sections = hook_sections()
    assert [name for name, _ in sections] == ["Trigger", "Trigger", "Action"]
    action = dict(sections[-1][1])
    assert action["When"] == "PreTransaction"
    assert action["Exec"] == "/usr/bin/kzguard hook pacman"
    assert "AbortOnFail" in action and "NeedsTargets" in action
    assert HOOK.name.startswith("05-")  # before 60-depmod, 70-dkms-*, 90-mkinitcpio


def test_every_hook_target_is_understood_by_the_adapter(tmp_path):
    triggers, operations = {}, {}
    for _, pairs in hook_sections()[:2]:
        kind = dict(pairs)["Type"]
        triggers[kind] = [value for key, value in pairs if key == "Target"]
        operations[kind] = {value for key, value in pairs if key == "Operation"}
    # paths: only what the transaction writes (a Remove match would look like an install)
    assert operations == {
        "Path": {"Install", "Upgrade"},
        "Package": {"Install", "Upgrade", "Remove"},
    }
    paths, names = triggers["Path"], triggers["Package"]
    examples = {
        "usr/lib/modules/*/vmlinuz": vmlinuz(NEW),
        "usr/src/zfs-*/META": "usr/src/zfs-2.3.1/META",
    }
    assert sorted(paths) == sorted(examples)
    for pattern, example in examples.items():
        assert fnmatch.fnmatchcase(example, pattern)
    tx = parse(HostTree(tmp_path), *examples.values())
    assert (tx.install, tx.zfs_version) == ((NEW,), "2.3.1")
    for name in names:
        concrete = name.replace("*", "-lts")
        assert name in pacman.KERNEL_PACKAGES or pacman.is_zfs_package(concrete), name
    assert set(pacman.KERNEL_PACKAGES) <= set(names)
