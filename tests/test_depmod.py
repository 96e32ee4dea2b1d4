"""Module resolution (kzguard/facts/depmod.py, kernels.py) against the real depmod and modprobe.

Each layout is one an admin meets and nobody here chose: OpenZFS 2.1-era kmods in per-module
subdirectories, ZFS built into a custom kernel's tree (copy-builtin), an old ``make install``
copy beside DKMS's, weak-updates links in per-module subdirectories, depmod.d ``search`` and
``override`` lines. The real ``depmod -b`` writes modules.dep for the tree; kzguard must judge
the file modprobe would load (``modprobe --show-depends``), both with that modules.dep and,
where depmod's choice is not a tie, without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from devtools.hostbuilder import HostTree
from kzguard.facts import depmod
from kzguard.facts.host import gather
from kzguard.facts.kernels import BY_MODULES_DEP, BY_SEARCH, read_installed
from kzguard.judge.policy import judge
from kzguard.root import Root
from tests import tools

pytestmark = pytest.mark.real  # modules are built with gcc; depmod and modprobe are real

REL = "6.1.0-26-amd64"
ROOTS = ("/lib/modules", "/usr/lib/modules")


def _depmod(root: Path, conf: Path | None = None) -> None:
    tools.need("depmod")
    argv = ["depmod", "-b", root, REL]
    if conf is not None:
        argv[1:1] = ["-C", conf]
    else:  # keep the host's own /etc/depmod.d out of it
        empty = root / ".no-depmod.d"
        empty.mkdir(exist_ok=True)
        argv[1:1] = ["-C", empty]
    tools.run(*argv)


def _modprobe_path(root: Path, name: str) -> str:
    """The file the real modprobe would insmod for ``name``, relative to the modules dir."""
    tools.need("modprobe")
    out = tools.run("modprobe", "-d", root, "-S", REL, "--show-depends", name).stdout
    last = out.strip().splitlines()[-1].split()[1]
    return os.path.relpath(last, root / "lib/modules" / REL)


def _tree(tmp_path: Path, layout: dict[str, list[str]]) -> HostTree:
    tree = HostTree(tmp_path).os_release("debian12").running(REL).kernel(REL)
    for location, names in layout.items():
        for name in names:
            tree.module(REL, name, "2.1.11-1", location=location)
    return tree


def _located(tmp_path: Path, name: str = "zfs"):
    kernel = read_installed(Root(tmp_path), ROOTS, ["zfs", "spl"])[0]
    return kernel, kernel.module(name)


LAYOUTS = {
    "openzfs-2.1-kmod": {"extra/zfs": ["zfs"], "extra/spl": ["spl"]},
    "copy-builtin": {"kernel/fs/zfs": ["zfs", "spl"]},
    "make-install-beside-dkms": {"extra": ["zfs", "spl"], "updates/dkms": ["zfs", "spl"]},
    "dkms-beside-in-tree": {"kernel/fs/zfs": ["zfs", "spl"], "updates/dkms": ["zfs", "spl"]},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_module_judged_is_the_one_modprobe_loads(tmp_path, layout):
    _tree(tmp_path, LAYOUTS[layout])
    _depmod(tmp_path)
    for name in ("zfs", "spl"):
        kernel, module = _located(tmp_path, name)
        assert module is not None and module.found_by == BY_MODULES_DEP
        assert module.path == f"/lib/modules/{REL}/{_modprobe_path(tmp_path, name)}"
        assert module.indexed is True
    # without modules.dep (a kernel still being installed) depmod's order gives the same file
    chosen = {n: _located(tmp_path, n)[1].path for n in ("zfs", "spl")}
    (tmp_path / f"lib/modules/{REL}/modules.dep").unlink()
    for name in ("zfs", "spl"):
        kernel, module = _located(tmp_path, name)
        assert (module.path, module.found_by, module.indexed) == (chosen[name], BY_SEARCH, None)
        assert not module.ambiguous
        assert kernel.modules_dep == "missing"


def test_search_and_override_lines_decide_like_depmod(tmp_path):
    _tree(tmp_path, {"extra": ["zfs"], "weak-updates/zfs": ["zfs"], "kernel/fs/zfs": ["zfs"]})
    conf = tmp_path / "etc/depmod.d"
    for text in (
        "search weak-updates extra built-in\n",
        "search extra built-in weak-updates\n",
        "search extra\noverride zfs * kernel/fs/zfs\n",
        "# comment\nsearch \\\n  built-in\n",
    ):
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "zz-test.conf").write_text(text)
        _depmod(tmp_path, conf)
        expected = f"/lib/modules/{REL}/{_modprobe_path(tmp_path, 'zfs')}"
        os.rename(tmp_path / f"lib/modules/{REL}/modules.dep", tmp_path / "modules.dep.saved")
        _, by_search = _located(tmp_path)
        os.rename(tmp_path / "modules.dep.saved", tmp_path / f"lib/modules/{REL}/modules.dep")
        _, by_dep = _located(tmp_path)
        assert by_dep.path == expected, text
        if not by_search.ambiguous:
            assert by_search.path == expected, text


def test_a_tie_without_modules_dep_is_said_to_be_ambiguous(tmp_path):
    _tree(tmp_path, {"extra": ["zfs"], "kernel/fs/zfs": ["zfs"]})  # both "built-in" priority
    _, module = _located(tmp_path)
    assert module.ambiguous and module.others
    report = judge(gather(Root(tmp_path)), {})
    assert any("same depmod priority" in n for n in report.host.notes)


def test_a_module_modules_dep_does_not_list_is_unsafe(tmp_path):
    tree = _tree(tmp_path, {"updates/dkms": ["spl"]})
    _depmod(tmp_path)  # indexes spl only
    tree.module(REL, "zfs", "2.1.11-1", location="updates/dkms")  # depmod not run since
    _, module = _located(tmp_path)
    assert (module.found_by, module.indexed) == (BY_SEARCH, False)
    verdict = judge(gather(Root(tmp_path)), {}, kernels=[REL]).kernels[0]
    assert verdict.verdict == "unsafe"
    assert "module-not-indexed" in [r.code for r in verdict.reasons]


def test_a_stale_entry_falls_back_to_search_and_is_flagged(tmp_path):
    _tree(tmp_path, {"extra": ["zfs", "spl"]})
    _depmod(tmp_path)
    shutil.move(tmp_path / f"lib/modules/{REL}/extra", tmp_path / f"lib/modules/{REL}/updates")
    _, module = _located(tmp_path)
    assert module.path == f"/lib/modules/{REL}/updates/zfs.ko"
    assert (module.found_by, module.indexed) == (BY_SEARCH, False)


def test_a_missing_dependency_from_modules_dep_is_module_missing(tmp_path):
    _tree(tmp_path, {"extra": ["zfs", "spl"]})
    moddir = tmp_path / f"lib/modules/{REL}"
    (moddir / "modules.dep").write_text("extra/zfs.ko: extra/spl.ko extra/znvpair.ko\n")
    _, module = _located(tmp_path)
    assert module.deps == (
        f"/lib/modules/{REL}/extra/spl.ko",
        f"/lib/modules/{REL}/extra/znvpair.ko",
    )
    assert module.missing_deps == (f"/lib/modules/{REL}/extra/znvpair.ko",)
    verdict = judge(gather(Root(tmp_path)), {}, kernels=[REL]).kernels[0]
    missing = [r for r in verdict.reasons if r.code == "module-missing"]
    assert missing and missing[0].details["dependency"].endswith("znvpair.ko")


def test_weak_updates_links_in_per_module_subdirectories(tmp_path):
    built = "5.14.0-427.13.1.el9_4.x86_64"
    newer = "5.14.0-503.11.1.el9_5.x86_64"
    tree = HostTree(tmp_path).os_release("rocky9").running(newer)
    for release in (built, newer):
        tree.kernel(release)
    for name, sub in (("zfs", "zfs"), ("spl", "spl")):
        tree.module(built, name, "2.1.16-1", location=f"extra/{sub}")
        tree.symlink(
            f"/lib/modules/{newer}/weak-updates/{sub}/{name}.ko",
            f"/lib/modules/{built}/extra/{sub}/{name}.ko",
        )
    kernels = {k.release: k for k in read_installed(Root(tmp_path), ROOTS, ["zfs", "spl"])}
    module = kernels[newer].module("zfs")
    assert module.path == f"/lib/modules/{newer}/weak-updates/zfs/zfs.ko"
    assert module.kabi_tracked and module.link_target == f"/lib/modules/{built}/extra/zfs/zfs.ko"


@pytest.mark.parametrize(
    "text",
    [
        "garbage without colon\n: \n\x00\x01\nextra/zfs.ko extra/spl.ko\n",
        "extra/zfs.ko: ../../../../etc/shadow\n",
        "",
    ],
)
def test_a_broken_modules_dep_never_crashes_and_never_calls_a_module_safe(tmp_path, text):
    _tree(tmp_path, {"extra": ["spl"]})
    (tmp_path / f"lib/modules/{REL}/modules.dep").write_text(text)
    verdict = judge(gather(Root(tmp_path)), {}, kernels=[REL]).kernels[0]
    assert verdict.verdict != "safe"


def test_depmod_config_lines_with_garbage_are_problems_not_crashes(tmp_path):
    tree = HostTree(tmp_path)
    tree.write("/etc/depmod.d/a.conf", "search\noverride zfs\n\xff\xfe junk\nsearch extra\n")
    tree.write("/lib/depmod.d/a.conf", "search weak-updates\n")  # hidden by /etc's a.conf
    config = depmod.read_config(Root(tmp_path))
    assert config.search == ("extra",)
    assert len(config.problems) == 2


def test_a_fifo_as_modules_dep_is_unreadable_not_a_hang(tmp_path):
    _tree(tmp_path, {"updates/dkms": ["zfs", "spl"]})
    os.mkfifo(tmp_path / f"lib/modules/{REL}/modules.dep")
    kernel, module = _located(tmp_path)
    assert "not a regular file" in (kernel.modules_dep or "")
    assert module is not None and module.found_by == BY_SEARCH


def test_a_nul_in_a_modules_dep_line_skips_the_line_not_the_check(tmp_path):
    # found by tests/test_fuzz_files.py: a NUL in a path reached os.lstat (ValueError, exit 3)
    _tree(tmp_path, {"updates/dkms": ["zfs", "spl"]})
    (tmp_path / f"lib/modules/{REL}/modules.dep").write_bytes(
        b"\0updates/dkms/zfs.ko: updates/dkms/spl.ko\nupdates/dkms/spl.ko:\n"
        b"updates/dkms/zfs.ko: updates/dkms/s\0pl.ko\n"
    )
    kernel, module = _located(tmp_path)
    assert module is not None and module.indexed is False
    assert kernel.module("spl").found_by == BY_MODULES_DEP


def test_a_link_loop_as_modules_dep_is_unreadable_like_a_fifo(tmp_path):
    # found by tests/test_fuzz_files.py: Root.exists raised FactError out of the check (exit 3)
    _tree(tmp_path, {"updates/dkms": ["zfs", "spl"]})
    os.symlink("modules.dep", tmp_path / f"lib/modules/{REL}/modules.dep")
    kernel, module = _located(tmp_path)
    assert "too many levels of symbolic links" in (kernel.modules_dep or "")
    assert module is not None and module.found_by == BY_SEARCH


def test_a_depmod_d_directory_behind_a_link_loop_is_a_problem(tmp_path):
    # found by tests/test_fuzz_files.py: Root.listdir raised FactError out of read_config (exit 3)
    tree = HostTree(tmp_path)
    tree.write("/etc/depmod.d/a.conf", "search extra\n")
    tree.symlink("/usr/lib/depmod.d", "depmod.d")
    config = depmod.read_config(Root(tmp_path))
    assert config.search == ("extra",)
    assert len(config.problems) == 1 and "too many levels" in config.problems[0]
