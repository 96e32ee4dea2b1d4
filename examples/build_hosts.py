"""Build the example hosts under ``examples/hosts/`` from real formats.

Modules are ELF objects made by gcc (``.modinfo`` as the kernel lays it out), META files as
OpenZFS ships them, DKMS trees as DKMS leaves them, dnf metadata made by rpmbuild and
createrepo_c. Run ``python examples/build_hosts.py`` (after ``scripts/setup-dev``) to rebuild.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.hostbuilder import HostTree
from devtools.pkgmeta import dnf_cache

HOSTS = Path(__file__).resolve().parent / "hosts"
EL_KABI = {"module_layout": 0x6E55BD45, "_printk": 0x92997ED8, "kfree": 0x037A0CBA}


def fedora_dkms_pending(tree: HostTree) -> None:
    """Fedora 41, zfs-dkms 2.2.7 (Linux up to 6.12); dnf's cache offers kernel 6.13.2."""
    tree.os_release("fedora41").running("6.12.9-200.fc41.x86_64")
    tree.zfs_source("2.2.7", "4.18", "6.12")
    for release in ("6.11.10-300.fc41.x86_64", "6.12.9-200.fc41.x86_64"):
        tree.kernel(release)
        tree.dkms("zfs", "2.2.7", release)
        for name in ("zfs", "spl"):
            tree.remove(f"/lib/modules/{release}/extra/{name}.ko")
            tree.module(release, name, "2.2.7-1", location="extra", compression="xz")
    dnf_cache(
        tree.path,
        "updates",
        [("kernel-core", "6.12.9", "200.fc41"), ("kernel-core", "6.13.2", "200.fc41")],
    )


def debian_dkms_failed(tree: HostTree) -> None:
    """Debian 12 with a backports kernel installed whose zfs DKMS build failed."""
    tree.os_release("debian12").running("6.1.0-28-amd64")
    tree.zfs_source("2.2.7", "4.18", "6.12")
    tree.kernel("6.1.0-28-amd64")
    tree.dkms("zfs", "2.2.7", "6.1.0-28-amd64")
    tree.kernel("6.12.9+bpo-amd64")
    tree.dkms("zfs", "2.2.7", "6.12.9+bpo-amd64", state="build-failed")


def el9_kmod(tree: HostTree) -> None:
    """Rocky 9.5, kABI-tracked kmod-zfs 2.2.7 built for 503.11.1, linked into 503.14.1; both
    kernels export the symbols it imports with the same CRCs (/boot/symvers-*.gz)."""
    built, newer = "5.14.0-503.11.1.el9_5.x86_64", "5.14.0-503.14.1.el9_5.x86_64"
    tree.os_release("rocky9").running(newer)
    for release in (built, newer):
        tree.kernel(release)
        tree.symvers(release, EL_KABI)
    for name in ("zfs", "spl"):
        tree.module(built, name, "2.2.7-1", location="extra/zfs", versions=tuple(EL_KABI.items()))
        tree.weak_link(newer, name, built)


def ubuntu_prebuilt(tree: HostTree) -> None:
    """Ubuntu 24.04: zfs 2.2.2 ships in linux-modules for each kernel."""
    tree.os_release("ubuntu2404").running("6.8.0-45-generic")
    for release in ("6.8.0-45-generic", "6.8.0-47-generic"):
        tree.kernel(release)
        for name in ("zfs", "spl"):
            tree.module(release, name, "2.2.2-0ubuntu9", location="kernel/zfs", compression="zst")


EXAMPLES = {
    "fedora-dkms-pending": fedora_dkms_pending,
    "debian-dkms-failed": debian_dkms_failed,
    "el9-kmod": el9_kmod,
    "ubuntu-prebuilt": ubuntu_prebuilt,
}


def main() -> int:
    for name, build in EXAMPLES.items():
        target = HOSTS / name
        if target.exists():
            shutil.rmtree(target)
        build(HostTree(target))
        print(f"built {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
