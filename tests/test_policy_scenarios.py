"""Scenario tests: build a root tree in real formats, gather facts, judge, assert verdicts."""

from __future__ import annotations

import pytest

from kzguard.base.transaction import Transaction
from kzguard.facts.host import gather
from kzguard.judge.policy import judge
from kzguard.root import Root
from tests import scenarios as sc

pytestmark = pytest.mark.real  # modules are built with gcc


def verdicts(path, **kwargs):
    report = judge(gather(Root(path)), kwargs.pop("zfs_ranges", {}), **kwargs)
    return report, {k.release: k for k in report.kernels}


def codes(kernel):
    return sorted(r.code for r in kernel.reasons)


def test_fedora_good_host_is_safe_and_boots_the_newest(tmp_path):
    sc.fedora_dkms(tmp_path)
    report, kernels = verdicts(tmp_path)
    assert {r: k.verdict for r, k in kernels.items()} == {
        sc.FEDORA_OLD: "safe",
        sc.FEDORA_RUNNING: "safe",
    }
    assert kernels[sc.FEDORA_RUNNING].states == ("running", "installed")
    assert kernels[sc.FEDORA_RUNNING].zfs_range.source == "meta"
    assert report.host.delivery == "dkms"
    assert (report.next_boot.release, report.next_boot.safe) == (sc.FEDORA_RUNNING, True)
    assert report.exit_code == 0


def test_a_kernel_newer_than_meta_allows_is_unsafe_before_install(tmp_path):
    sc.fedora_dkms(tmp_path)
    report, kernels = verdicts(tmp_path, kernels=[sc.FEDORA_NEW])
    new = kernels[sc.FEDORA_NEW]
    assert (new.verdict, codes(new)) == ("unsafe", ["kernel-too-new"])
    assert "up to 6.12" in new.reasons[0].message
    assert "/usr/src/zfs-2.2.7/META" in new.reasons[0].message
    assert report.exit_code == 1


def test_zfs_version_override_judges_the_upgrade_together(tmp_path):
    sc.fedora_dkms(tmp_path)
    _, kernels = verdicts(tmp_path, kernels=[sc.FEDORA_NEW], zfs_version="2.3.1")
    new = kernels[sc.FEDORA_NEW]
    assert new.verdict == "safe"
    assert (new.zfs_range.zfs_version, new.zfs_range.linux_max, new.zfs_range.source) == (
        "2.3.1",
        "6.13",
        "table",
    )
    _, kernels = verdicts(tmp_path, kernels=[sc.FEDORA_NEW], zfs_version="2.3.0")
    assert codes(kernels[sc.FEDORA_NEW]) == ["kernel-too-new"]


def test_transaction_kernels_are_judged_with_the_zfs_they_bring(tmp_path):
    sc.fedora_dkms(tmp_path)
    tx = Transaction("dnf", install=(sc.FEDORA_NEW,), zfs_version="2.3.1")
    report, kernels = verdicts(tmp_path, transaction=tx)
    assert kernels[sc.FEDORA_NEW].states == ("transaction",)
    assert kernels[sc.FEDORA_NEW].verdict == "safe"
    assert report.next_boot.release == sc.FEDORA_NEW


def test_installed_kernel_whose_dkms_build_failed(tmp_path):
    tree = sc.fedora_dkms(tmp_path)
    tree.kernel(sc.FEDORA_NEW)  # installed, DKMS could not build: no module, no DKMS entry
    report, kernels = verdicts(tmp_path)
    assert codes(kernels[sc.FEDORA_NEW]) == [
        "dkms-not-installed",
        "kernel-too-new",
        "module-missing",
        "module-missing",
    ]
    assert (report.next_boot.release, report.next_boot.safe) == (sc.FEDORA_NEW, False)


def test_debian_backports_kernel_in_range_but_build_failed(tmp_path):
    tree = sc.debian_dkms(tmp_path)
    tree.kernel(sc.DEBIAN_BPO)
    tree.dkms("zfs", "2.2.7", sc.DEBIAN_BPO, state="added")
    _, kernels = verdicts(tmp_path)
    bpo = kernels[sc.DEBIAN_BPO]
    assert bpo.verdict == "unsafe"
    assert set(codes(bpo)) == {"module-missing", "dkms-not-installed"}
    assert kernels[sc.DEBIAN_RUNNING].verdict == "safe"


def test_module_built_for_another_kernel_is_a_vermagic_mismatch(tmp_path):
    tree = sc.debian_dkms(tmp_path)
    tree.kernel(sc.DEBIAN_BPO)
    for name in ("zfs", "spl"):
        tree.module(sc.DEBIAN_BPO, name, "2.2.7-1", built_for=sc.DEBIAN_RUNNING)
    tree.dkms("zfs", "2.2.7", sc.DEBIAN_BPO)
    _, kernels = verdicts(tmp_path)
    bpo = kernels[sc.DEBIAN_BPO]
    assert codes(bpo) == ["vermagic-mismatch", "vermagic-mismatch"]
    assert bpo.reasons[0].details["vermagic_release"] == sc.DEBIAN_RUNNING


def test_el9_weak_updates_module_is_accepted_for_a_newer_minor_kernel(tmp_path):
    sc.el9_kmod(tmp_path)
    report, kernels = verdicts(tmp_path)
    assert report.host.family == "el" and report.host.delivery == "kmod"
    newer = kernels[sc.EL_NEWER]
    assert newer.verdict == "safe"
    zfs = dict(newer.modules)["zfs"]
    assert zfs.kabi_tracked and zfs.link_target.endswith(f"{sc.EL_BUILT}/extra/zfs/zfs.ko")
    assert any("kABI-tracked" in n for n in newer.notes)


def test_el9_dangling_weak_link_is_module_missing(tmp_path):
    tree = sc.el9_kmod(tmp_path)
    tree.remove(f"/lib/modules/{sc.EL_BUILT}/extra/zfs/zfs.ko")
    _, kernels = verdicts(tmp_path)
    assert codes(kernels[sc.EL_NEWER]) == ["module-missing"]


def test_ubuntu_prebuilt_module_is_not_judged_by_upstream_range(tmp_path):
    tree = sc.ubuntu_prebuilt(tmp_path)
    report, kernels = verdicts(tmp_path)
    assert report.host.delivery == "prebuilt"
    assert all(k.verdict == "safe" and k.zfs_range is None for k in kernels.values())
    tree.kernel("6.11.0-9-generic")  # an HWE kernel installed without linux-modules-extra
    _, kernels = verdicts(tmp_path)
    assert codes(kernels["6.11.0-9-generic"]) == ["module-missing", "module-missing"]


def test_garbage_module_is_unknown_not_a_crash(tmp_path):
    tree = sc.debian_dkms(tmp_path)
    tree.write(f"/lib/modules/{sc.DEBIAN_RUNNING}/updates/dkms/zfs.ko", b"\x7fELF garbage")
    report, kernels = verdicts(tmp_path)
    running = kernels[sc.DEBIAN_RUNNING]
    assert (running.verdict, codes(running)) == ("unknown", ["module-unreadable"])
    assert report.exit_code == 1


def test_zfs_version_in_no_source_is_unknown_until_config_names_its_range(tmp_path):
    from devtools.dkmstree import make_dkms_entry

    tree = sc.debian_dkms(tmp_path)
    tree.remove("/usr/src/zfs-2.2.7")
    tree.remove("/var/lib/dkms/zfs/2.2.7")  # zfs-dkms 2.2.7 purged, 2.9.9 registered instead
    make_dkms_entry(tmp_path, "zfs", "2.9.9", state="added")
    tree.write("/usr/src/zfs-2.9.9/META", "garbage\n")
    _, kernels = verdicts(tmp_path, kernels=["6.14.1-amd64"])
    assert codes(kernels["6.14.1-amd64"]) == ["zfs-version-unknown"]
    assert kernels["6.14.1-amd64"].verdict == "unknown"
    _, kernels = verdicts(
        tmp_path, kernels=["6.14.1-amd64"], zfs_ranges={"2.9.9": ("4.18", "6.14")}
    )
    assert kernels["6.14.1-amd64"].verdict == "safe"
    assert kernels["6.14.1-amd64"].zfs_range.source == "config"


def test_host_without_zfs_is_unknown(tmp_path):
    from devtools.hostbuilder import HostTree

    HostTree(tmp_path).os_release("debian12").kernel(sc.DEBIAN_RUNNING)
    _, kernels = verdicts(tmp_path)
    assert codes(kernels[sc.DEBIAN_RUNNING]) == ["zfs-not-found"]


def test_odd_kernel_directories(tmp_path):
    tree = sc.debian_dkms(tmp_path)
    tree.write("/lib/modules/custom-build/modules.order", "")
    tree.write("/lib/modules/6.0.0-old-amd64/updates/dkms/zfs.ko", b"leftover")
    _, kernels = verdicts(tmp_path)
    assert "6.0.0-old-amd64" not in kernels  # a leftover directory is not a kernel
    assert codes(kernels["custom-build"]) == ["release-unparsable"]


def test_usrmerge_host_lists_each_kernel_once(tmp_path):
    from devtools.hostbuilder import HostTree

    tree = HostTree(tmp_path).os_release("arch").running("6.12.4-arch1-1")
    tree.symlink("/lib", "usr/lib")
    tree.kernel("6.12.4-arch1-1", modules_root="/usr/lib/modules")
    for name in ("zfs", "spl"):
        tree.module(
            "6.12.4-arch1-1",
            name,
            "2.2.7-1",
            location="extra",
            compression="zst",
            modules_root="/usr/lib/modules",
        )
    report, kernels = verdicts(tmp_path)
    assert list(kernels) == ["6.12.4-arch1-1"]
    assert report.host.delivery == "package"
    assert kernels["6.12.4-arch1-1"].verdict == "safe"
