"""DKMS state: ``parse_status`` on every format DKMS printed, ``read_tree`` on trees laid out by
``devtools.dkmstree``, and (``real``) both against the real ``dkms status`` on the same tree."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.dkmstree import make_dkms_entry, status_argv
from devtools.hostbuilder import HostTree
from kzguard.facts.dkms import (
    NOTE_DIFF,
    NOTE_ORIGINAL,
    DkmsEntry,
    find,
    parse_status,
    read_tree,
    versions,
)
from kzguard.root import Root, Runner

K1 = "6.1.0-56-amd64"
K2 = "6.12.6-amd64"
K3 = "6.1.0-40-amd64"
ARCH = "x86_64"
KV, KA = "6.8.0-45-generic", "x86_64"  # substituted for ${KERNEL_VER} / ${KERNEL_ARCH}

# Verbatim from dell/dkms run_test.sh (3.2.x), then DKMS 3.0.10 on Debian 12.
SAMPLE_LINES = [
    ("dkms_test/1.0: added", DkmsEntry("dkms_test", "1.0", None, None, "added")),
    (
        "dkms_test/1.0, ${KERNEL_VER}, ${KERNEL_ARCH}: built",
        DkmsEntry("dkms_test", "1.0", KV, KA, "built"),
    ),
    (
        "dkms_test/1.0, ${KERNEL_VER}, ${KERNEL_ARCH}: installed",
        DkmsEntry("dkms_test", "1.0", KV, KA, "installed"),
    ),
    (
        "dkms_noautoinstall_test/1.0, ${KERNEL_VER}, ${KERNEL_ARCH}: built",
        DkmsEntry("dkms_noautoinstall_test", "1.0", KV, KA, "built"),
    ),
    (
        "dkms_noautoinstall_test/1.0, ${KERNEL_VER}, ${KERNEL_ARCH}: installed",
        DkmsEntry("dkms_noautoinstall_test", "1.0", KV, KA, "installed"),
    ),
    (
        "dkms_dependencies_test/1.0, ${KERNEL_VER}, ${KERNEL_ARCH}: installed",
        DkmsEntry("dkms_dependencies_test", "1.0", KV, KA, "installed"),
    ),
    (
        "dkms_circular_dependencies_test/1.0, ${KERNEL_VER}, ${KERNEL_ARCH}: built",
        DkmsEntry("dkms_circular_dependencies_test", "1.0", KV, KA, "built"),
    ),
    (
        "dkms_replace_test/2.0, ${KERNEL_VER}, ${KERNEL_ARCH}: installed (Original modules exist)",
        DkmsEntry("dkms_replace_test", "2.0", KV, KA, "installed", ("Original modules exist",)),
    ),
    (
        "dkms_test/1.0, ${KERNEL_VER}, ${KERNEL_ARCH}: installed"
        " (Differences between built and installed modules)",
        DkmsEntry(
            "dkms_test",
            "1.0",
            KV,
            KA,
            "installed",
            ("Differences between built and installed modules",),
        ),
    ),
    (
        "dkms_build_exclusive_test/1.0: added",
        DkmsEntry("dkms_build_exclusive_test", "1.0", None, None, "added"),
    ),
    (
        "dkms_test/1.0, ${KERNEL_VER}, ${KERNEL_ARCH}: installed"
        " (Built modules are missing in the kernel modules folder)",
        DkmsEntry(
            "dkms_test",
            "1.0",
            KV,
            KA,
            "installed",
            ("Built modules are missing in the kernel modules folder",),
        ),
    ),
    (
        "dkms_test/1.0, ${KERNEL_VER}, ${KERNEL_ARCH}: built"
        " (Built modules are missing in the kernel modules folder)",
        DkmsEntry(
            "dkms_test",
            "1.0",
            KV,
            KA,
            "built",
            ("Built modules are missing in the kernel modules folder",),
        ),
    ),
    ("dkms_test/1.0: broken", DkmsEntry("dkms_test", "1.0", None, None, "broken")),
    (
        "zfs/2.2.7, 6.1.0-56-amd64, x86_64: installed",
        DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed"),
    ),
    ("zfs/2.2.6: added", DkmsEntry("zfs", "2.2.6", None, None, "added")),
    ("zfs/2.2.7: added", DkmsEntry("zfs", "2.2.7", None, None, "added")),
    (
        "zfs/2.2.7, 6.1.0-56-amd64, x86_64: installed (WARNING! Diff between built and installed"
        " module!) (WARNING! Diff between built and installed module!)",
        DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed", (NOTE_DIFF,)),
    ),
    # DKMS 2.x (Ubuntu 20.04 and older): comma-separated module and version.
    (
        "zfs, 0.8.3, 5.4.0-42-generic, x86_64: installed",
        DkmsEntry("zfs", "0.8.3", "5.4.0-42-generic", ARCH, "installed"),
    ),
    ("zfs, 0.8.3: added", DkmsEntry("zfs", "0.8.3", None, None, "added")),
    (
        "nvidia, 440.100, 5.4.0-42-generic, x86_64: installed (original_module exists)",
        DkmsEntry("nvidia", "440.100", "5.4.0-42-generic", ARCH, "installed", (NOTE_ORIGINAL,)),
    ),
    # Weak-installed (EL): installed for the first kernel, built for the one after "from".
    (
        "zfs, 2.2.7, 5.14.0-503.11.1.el9_5.x86_64, x86_64:"
        " installed-weak from 5.14.0-427.13.1.el9_4.x86_64",
        DkmsEntry(
            "zfs",
            "2.2.7",
            "5.14.0-503.11.1.el9_5.x86_64",
            ARCH,
            "installed",
            ("installed-weak from 5.14.0-427.13.1.el9_4.x86_64",),
        ),
    ),
]

STATUS_BLOCK = (
    "dkms_multiver_test/1.0: broken\n"
    "\n"
    "Error! dkms_multiver_test/1.0: Missing the module source directory or the symbolic link"
    " pointing to it.\n"
    "Manual intervention is required!\n"
    "dkms_multiver_test/2.0, ${KERNEL_VER}, ${KERNEL_ARCH}: built\n"
    "dkms_test/1.0, ${KERNEL_VER}, ${KERNEL_ARCH}: installed\n"
)


def subst(text: str) -> str:
    return text.replace("${KERNEL_VER}", KV).replace("${KERNEL_ARCH}", KA)


# --- parse_status ----------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), SAMPLE_LINES, ids=[s[0][:60] for s in SAMPLE_LINES])
def test_parse_status_sample_line(line: str, expected: DkmsEntry) -> None:
    assert parse_status(subst(line)) == [expected]


def test_parse_status_full_block_skips_errors_and_blank_lines() -> None:
    assert parse_status(subst(STATUS_BLOCK)) == [
        DkmsEntry("dkms_multiver_test", "1.0", None, None, "broken"),
        DkmsEntry("dkms_multiver_test", "2.0", KV, KA, "built"),
        DkmsEntry("dkms_test", "1.0", KV, KA, "installed"),
    ]


def test_parse_status_all_samples_at_once() -> None:
    text = "\n".join(subst(line) for line, _ in SAMPLE_LINES)
    assert parse_status(text) == [entry for _, entry in SAMPLE_LINES]


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Error! Could not locate dkms.conf file.",
        "File: /var/lib/dkms/zfs/2.2.7/source/dkms.conf does not exist.",
        "Manual intervention is required!",
        "Deprecated feature: REMAKE_INITRD (/usr/src/zfs-2.2.7/dkms.conf)",
        "Warning: something: installed",
        "Processing triggers for man-db (2.11.2-2) ...",
        "zfs/2.2.7: installed",  # installed needs a kernel
        "zfs/2.2.7, 6.1.0-56-amd64, x86_64: added",  # added has none
        "zfs/2.2.7, 6.1.0-56-amd64: built",  # kernel without arch
        "zfs/2.2.7, 6.1.0-56-amd64, x86_64: installedx",
        "# Format: <module>/<version>: added|broken",
    ],
)
def test_parse_status_skips_other_lines(line: str) -> None:
    assert parse_status(line) == []


def test_parse_status_keeps_distinct_notes_in_order() -> None:
    line = (
        f"zfs/2.2.7, {K1}, x86_64: installed (original_module exists)"
        " (WARNING! Diff between built and installed module!)"
    )
    assert parse_status(line)[0].notes == (NOTE_ORIGINAL, NOTE_DIFF)


def test_parse_status_tolerates_crlf_and_indent() -> None:
    assert parse_status(f"  zfs/2.2.7, {K1}, x86_64: installed\r\n") == [
        DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed")
    ]


@given(st.text())
def test_parse_status_never_raises(text: str) -> None:
    for entry in parse_status(text):
        assert entry.state in ("added", "built", "installed", "broken")


_word = st.text(
    st.characters(blacklist_categories=("Z", "C"), blacklist_characters=",:/()"), min_size=1
).filter(lambda w: not w.startswith("Error!"))


@given(_word, _word, _word, _word, st.sampled_from(["built", "installed"]))
def test_parse_status_reads_back_what_dkms_prints(
    m: str, v: str, k: str, a: str, state: str
) -> None:
    assert parse_status(f"{m}/{v}, {k}, {a}: {state}") == [DkmsEntry(m, v, k, a, state)]


# --- read_tree -------------------------------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> HostTree:
    return HostTree(tmp_path / "root").os_release("debian12")


def tree_of(host: HostTree) -> list[DkmsEntry]:
    return read_tree(Root(host.path))


@pytest.mark.parametrize("state", ["built", "installed", "build-failed"])
def test_read_tree_each_kernel_state(host: HostTree, state: str) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1, state=state)
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", K1, ARCH, state)]


@pytest.mark.parametrize("state", ["added", "broken"])
def test_read_tree_version_states(host: HostTree, state: str) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", state=state)
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", None, None, state)]


def test_read_tree_installs_zfs_and_spl_like_dkms(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1)
    for name in ("zfs", "spl"):
        assert (host.path / f"lib/modules/{K1}/updates/dkms/{name}.ko").is_file()
        assert (host.path / f"var/lib/dkms/zfs/2.2.7/{K1}/x86_64/module/{name}.ko").is_file()
    assert os.readlink(host.path / f"var/lib/dkms/zfs/kernel-{K1}-x86_64") == f"2.2.7/{K1}/x86_64"
    assert not (host.path / "var/lib/dkms/zfs/2.2.7/build").exists()


def test_read_tree_notes_diff_and_original_module(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1, installed_differs=True, original_module=True)
    assert tree_of(host) == [
        DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed", (NOTE_ORIGINAL, NOTE_DIFF))
    ]


def test_read_tree_missing_installed_copy_is_a_diff(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1)
    (host.path / f"lib/modules/{K1}/updates/dkms/spl.ko").unlink()
    assert tree_of(host)[0].notes == (NOTE_DIFF,)


def test_read_tree_accepts_copy_at_dest_module_location(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1, install_location="/extra")
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed")]


def test_read_tree_uses_the_distro_install_location(host: HostTree) -> None:
    host.os_release("fedora41")
    make_dkms_entry(
        host.path, "zfs", "2.2.7", K1, install_location="/updates/dkms", dest_location="/kernel/fs"
    )
    assert tree_of(host)[0].notes == (NOTE_DIFF,)  # Fedora's DKMS looks in /extra, then /kernel/fs


@pytest.mark.parametrize("compression", ["xz", "zst", "gz"])
def test_read_tree_compressed_modules(host: HostTree, compression: str) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1, compression=compression)
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed")]


def test_read_tree_missing_module_is_not_built(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1, state="built")
    (host.path / f"var/lib/dkms/zfs/2.2.7/{K1}/x86_64/module/spl.ko").unlink()
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", None, None, "added")]


def test_read_tree_many_entries_sorted_like_dkms(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K2, state="built")
    make_dkms_entry(host.path, "zfs", "2.2.7", K1)
    make_dkms_entry(host.path, "zfs", "2.2.8", K2, state="build-failed")
    make_dkms_entry(host.path, "zfs", "2.2.6", state="added")
    make_dkms_entry(host.path, "nvidia", "535.183.06", K1)
    assert tree_of(host) == [
        DkmsEntry("nvidia", "535.183.06", K1, ARCH, "installed"),
        DkmsEntry("zfs", "2.2.6", None, None, "added"),
        DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed"),
        DkmsEntry("zfs", "2.2.7", K2, ARCH, "built"),
        DkmsEntry("zfs", "2.2.8", K2, ARCH, "build-failed"),
    ]


def test_read_tree_failed_build_beside_built_kernels(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1)
    make_dkms_entry(host.path, "zfs", "2.2.7", K2, state="build-failed")
    assert [e.state for e in tree_of(host)] == ["installed", "build-failed"]


def test_read_tree_resolves_links_inside_the_root(host: HostTree) -> None:
    """Absolute links as DKMS writes them, a merged /usr and a relocated tree, all in-root."""
    make_dkms_entry(host.path, "zfs", "2.2.7", K1)
    host.symlink("/var/lib/dkms/zfs/2.2.7/source", "/usr/src/zfs-2.2.7")
    shutil.move(str(host.path / "lib"), str(host.path / "usr/lib"))
    host.symlink("/lib", "usr/lib")
    shutil.move(str(host.path / "var/lib/dkms"), str(host.path / "srv-dkms"))
    host.symlink("/var/lib/dkms", "/srv-dkms")
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed")]
    assert read_tree(Root(host.path), install_trees=("/usr/lib/modules",)) == tree_of(host)


def test_read_tree_uses_dkms_conf_names(host: HostTree) -> None:
    make_dkms_entry(host.path, "nvidia", "535", K1, modules=["nvidia", "nvidia-drm"])
    assert tree_of(host)[0].state == "installed"
    (host.path / f"var/lib/dkms/nvidia/535/{K1}/x86_64/module/nvidia-drm.ko").unlink()
    assert tree_of(host)[0].state == "added"


def test_read_tree_dkms_conf_with_variables_and_command_substitution(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1)
    host.write(
        "/usr/src/zfs-2.2.7/dkms.conf",
        'PACKAGE_NAME="zfs"\nPACKAGE_VERSION="2.2.7"\n'
        'PRE_BUILD="configure\n  --with-linux=$(\n'
        '    echo ${kernel_source_dir} # a comment\n  )\n"\n'
        'STRIP[0]="$( [[ -r x ]] && echo -n no )"\n'
        'BUILT_MODULE_NAME[0]="${PACKAGE_NAME}"\nBUILT_MODULE_LOCATION[0]="module/"\n'
        'DEST_MODULE_LOCATION[0]="/extra"\nBUILT_MODULE_NAME[1]="spl"\n'
        'BUILT_MODULE_LOCATION[1]="module/"\nDEST_MODULE_LOCATION[1]="/extra"\n',
    )
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed")]


@pytest.mark.parametrize(
    "conf",
    ["", 'PACKAGE_NAME="zfs\n', "BUILT_MODULE_NAME[0]=$(echo zfs)\n", "\0\xff garbage"],
)
def test_read_tree_unusable_dkms_conf_falls_back_to_module_files(host: HostTree, conf: str) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1)
    host.write("/usr/src/zfs-2.2.7/dkms.conf", conf)
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed")]


def test_read_tree_broken_source_beside_built_kernels(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", K1)
    shutil.rmtree(host.path / "usr/src/zfs-2.2.7")
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", None, None, "broken")]


def test_read_tree_missing_source_link_with_source_dir_is_broken(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", state="added")
    (host.path / "var/lib/dkms/zfs/2.2.7/source").unlink()
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", None, None, "broken")]


def test_read_tree_survives_weird_trees(host: HostTree) -> None:
    assert tree_of(host) == []
    make_dkms_entry(host.path, "zfs", "2.2.7", K1)
    host.write("/var/lib/dkms/mok.key", "key")
    host.write("/var/lib/dkms/zfs/notes.txt", "not a version")
    host.write("/var/lib/dkms/.hidden/1.0/source/dkms.conf", "")
    host.symlink("/var/lib/dkms/loop/1.0/source", "../../loop/1.0/source")
    host.symlink("/var/lib/dkms/zfs/kernel-6.99-amd64-x86_64", "2.2.7/6.99-amd64/x86_64")
    host.write("/var/lib/dkms/zfs/2.2.7/build/make.log", "\xff\x00 not a DKMS log")
    host.symlink(f"/lib/modules/{K3}", f"/lib/modules/{K3}")
    host.write("/var/lib/dkms/other/1.0/source", "a file, not a dir")
    entries = tree_of(host)
    assert DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed") in entries
    assert {e.module for e in entries} <= {"zfs", "loop", "other"}


def test_read_tree_failed_log_of_another_package_is_ignored(host: HostTree) -> None:
    make_dkms_entry(host.path, "zfs", "2.2.7", state="added")
    host.write(
        "/var/lib/dkms/zfs/2.2.7/build/make.log",
        f"DKMS make.log for spl-2.2.7 for kernel {K1} (x86_64)\n",
    )
    assert tree_of(host) == [DkmsEntry("zfs", "2.2.7", None, None, "added")]


def test_to_dict() -> None:
    entry = DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed", (NOTE_DIFF,))
    assert entry.to_dict() == {
        "module": "zfs",
        "version": "2.2.7",
        "kernel": K1,
        "arch": ARCH,
        "state": "installed",
        "notes": [NOTE_DIFF],
    }


# --- find / versions -------------------------------------------------------------------------

ENTRIES = [
    DkmsEntry("zfs", "2.2.6", None, None, "added"),
    DkmsEntry("zfs", "2.2.7", K1, ARCH, "installed"),
    DkmsEntry("zfs", "2.2.10", K1, ARCH, "built"),
    DkmsEntry("zfs", "2.2.10", K2, ARCH, "built"),
    DkmsEntry("zfs", "2.2.9", K2, ARCH, "built"),
    DkmsEntry("zfs", "git-abc", K3, ARCH, "built"),
    DkmsEntry("zfs", "2.0.0", K3, ARCH, "built"),
    DkmsEntry("nvidia", "535", K1, ARCH, "installed"),
    DkmsEntry("zfs", "2.3.0", None, None, "broken"),
]


def test_find_prefers_installed_then_newest() -> None:
    assert find(ENTRIES, "zfs", K1) == ENTRIES[1]
    assert find(ENTRIES, "zfs", K2) == ENTRIES[3]  # 2.2.10 > 2.2.9 as versions, not strings
    assert find(ENTRIES, "zfs", K3) == ENTRIES[6]  # a parsable version beats an unparsable one
    assert find(ENTRIES, "zfs", "7.0.0") is None
    assert find(ENTRIES, "spl", K1) is None


def test_versions_newest_first_without_broken() -> None:
    assert versions(ENTRIES, "zfs") == ["2.2.10", "2.2.9", "2.2.7", "2.2.6", "2.0.0", "git-abc"]
    assert versions(ENTRIES, "nvidia") == ["535"]
    assert versions(ENTRIES, "spl") == []
    assert "2.3.0" not in versions(ENTRIES, "zfs")  # broken: its source is gone


# --- against the real DKMS -------------------------------------------------------------------

needs_dkms = pytest.mark.skipif(shutil.which("dkms") is None, reason="dkms is not on PATH")


def dkms_status(root: Path) -> str:
    proc = Runner().run(status_argv(root))
    return proc.stdout + proc.stderr


def as_dkms_3_0(entries: list[DkmsEntry]) -> list[DkmsEntry]:
    """What DKMS 3.0.10 says instead of kzguard's two extra states.

    A failed last build leaves no mark in ``dkms status``, and a lost source shows as *added*
    (only while no kernel is built: otherwise 3.0.10 stops with an error).
    """
    out = [e for e in entries if e.state not in ("build-failed", "broken")]
    for e in entries:
        lost = e.state in ("build-failed", "broken")
        if lost and not any((o.module, o.version) == (e.module, e.version) for o in out):
            out.append(DkmsEntry(e.module, e.version, None, None, "added"))
    return sorted(
        out, key=lambda e: (f"{e.module}/{e.version}", f"{e.kernel}/{e.arch}" if e.kernel else "")
    )


def host_like(tmp_path: Path) -> HostTree:
    """A root whose os-release is the host's, so that DKMS and kzguard pick the same location."""
    tree = HostTree(tmp_path / "root")
    if Path("/etc/os-release").is_file():
        tree.write("/etc/os-release", Path("/etc/os-release").read_text())
    return tree


@pytest.mark.real
@needs_dkms
def test_read_tree_equals_real_dkms_status(tmp_path: Path) -> None:
    tree = host_like(tmp_path)
    r = tree.path
    make_dkms_entry(r, "zfs", "2.2.7", K1)
    make_dkms_entry(r, "zfs", "2.2.7", K2)
    make_dkms_entry(r, "zfs", "2.2.7", K3, state="built")
    make_dkms_entry(r, "zfs", "2.2.7", K3, arch="aarch64", state="built")
    make_dkms_entry(r, "zfs", "2.2.6", state="added")
    make_dkms_entry(r, "zfs", "2.2.8", K2, state="build-failed")
    make_dkms_entry(r, "zfs", "2.2.9", K3, state="build-failed")
    make_dkms_entry(r, "nvidia", "535.183.06", K1, installed_differs=True, original_module=True)
    make_dkms_entry(r, "nvidia", "535.183.06", K2, install_location="/extra")
    make_dkms_entry(r, "nvidia", "550.54", K3, modules=["nvidia", "nvidia-drm"], state="built")
    make_dkms_entry(r, "v4l2loopback", "0.12.7", K1)
    (r / f"lib/modules/{K1}/updates/dkms/v4l2loopback.ko").unlink()
    make_dkms_entry(r, "spl", "0.8.3", state="broken")

    real = parse_status(dkms_status(r))
    ours = read_tree(Root(r))
    assert as_dkms_3_0(ours) == real
    assert len(real) == 12
    assert {e.state for e in ours} == {"added", "built", "installed", "broken", "build-failed"}
    assert any(NOTE_DIFF in e.notes for e in real)


@pytest.mark.real
@needs_dkms
def test_dkms_add_leaves_the_layout_dkmstree_makes(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    make_dkms_entry(ours, "zfs", "2.2.7", state="added")
    theirs = tmp_path / "theirs"
    shutil.copytree(ours / "usr/src", theirs / "usr/src")
    (theirs / "var/lib/dkms").mkdir(parents=True)
    Runner().run(
        [
            "dkms",
            "add",
            "zfs/2.2.7",
            "--dkmstree",
            f"{theirs}/var/lib/dkms",
            "--sourcetree",
            f"{theirs}/usr/src",
        ]
    )

    def layout(base: Path) -> list[tuple[str, bool]]:
        top = base / "var/lib/dkms"
        return sorted((str(p.relative_to(top)), p.is_symlink()) for p in top.rglob("*"))

    assert layout(theirs) == layout(ours)
    link = theirs / "var/lib/dkms/zfs/2.2.7/source"
    assert os.readlink(link) == f"{theirs}/usr/src/zfs-2.2.7"  # DKMS writes absolute links
    assert read_tree(Root(ours)) == [DkmsEntry("zfs", "2.2.7", None, None, "added")]


def test_read_tree_a_link_loop_is_a_broken_registration_not_a_crash(host: HostTree) -> None:
    # found by tests/test_fuzz_files.py: Root.listdir raised FactError through read_tree (exit 3)
    make_dkms_entry(host.path, "zfs", "2.2.7", K1)
    shutil.rmtree(host.path / "var/lib/dkms/zfs")
    host.symlink("/var/lib/dkms/zfs", "zfs")
    [entry] = tree_of(host)
    assert (entry.module, entry.version, entry.state) == ("zfs", "?", "broken")
    assert "too many levels of symbolic links" in entry.notes[0]
    assert versions([entry], "zfs") == []
    shutil.rmtree(host.path / "var/lib/dkms")
    host.symlink("/var/lib/dkms", "/var/lib/dkms")
    assert [(e.module, e.state) for e in tree_of(host)] == [("zfs", "broken")]
