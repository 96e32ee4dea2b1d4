"""Root trees for the scenario tests: one function per host shape, built in real formats."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from devtools.hostbuilder import HostTree

FEDORA_OLD = "6.11.10-300.fc41.x86_64"
FEDORA_RUNNING = "6.12.9-200.fc41.x86_64"
FEDORA_NEW = "6.13.2-200.fc41.x86_64"
DEBIAN_RUNNING = "6.1.0-28-amd64"
DEBIAN_BPO = "6.12.9+bpo-amd64"
EL_BUILT = "5.14.0-503.11.1.el9_5.x86_64"
EL_NEWER = "5.14.0-503.14.1.el9_5.x86_64"
UBUNTU_RUNNING = "6.8.0-45-generic"
UBUNTU_NEW = "6.8.0-47-generic"


def fedora_dkms(path: Path) -> HostTree:
    """Fedora 41, zfs-dkms 2.2.7 (Linux up to 6.12), two good kernels."""
    tree = HostTree(path).os_release("fedora41").running(FEDORA_RUNNING)
    tree.zfs_source("2.2.7", "4.18", "6.12")
    for release in (FEDORA_OLD, FEDORA_RUNNING):
        tree.kernel(release)
        for name in ("zfs", "spl"):
            tree.module(release, name, "2.2.7-1", location="extra", compression="xz")
        tree.dkms("zfs", "2.2.7", release)
    return tree


def debian_dkms(path: Path) -> HostTree:
    """Debian 12, zfs-dkms 2.2.7; the running kernel has its modules."""
    tree = HostTree(path).os_release("debian12").running(DEBIAN_RUNNING)
    tree.zfs_source("2.2.7", "4.18", "6.12")
    tree.kernel(DEBIAN_RUNNING)
    for name in ("zfs", "spl"):
        tree.module(DEBIAN_RUNNING, name, "2.2.7-1")
    tree.dkms("zfs", "2.2.7", DEBIAN_RUNNING)
    return tree


# Kernel symbols a kmod imports, with the CRCs EL's kABI keeps stable across a minor release.
EL_KABI = {"module_layout": 0x6E55BD45, "_printk": 0x92997ED8, "kfree": 0x037A0CBA}


def el9_kmod(path: Path, kabi: Mapping[str, int] = EL_KABI) -> HostTree:
    """Rocky 9.5 with kABI-tracked kmod-zfs 2.2.7 built for one kernel, linked into a newer one;
    both kernels ship /boot/symvers-<release>.gz with the same CRCs (``kabi``), which the
    modules record in ``__versions``."""
    tree = HostTree(path).os_release("rocky9").running(EL_NEWER)
    for release in (EL_BUILT, EL_NEWER):
        tree.kernel(release)
        tree.symvers(release, kabi)
    for name in ("zfs", "spl"):
        tree.module(
            EL_BUILT,
            name,
            "2.2.7-1",
            location="extra/zfs",
            built_for=EL_BUILT,
            versions=tuple(kabi.items()),
        )
        tree.weak_link(EL_NEWER, name, EL_BUILT)
    return tree


def ubuntu_prebuilt(path: Path) -> HostTree:
    """Ubuntu 24.04: zfs 2.2.2 ships in linux-modules (the upstream table says 2.2.2 <= 6.6)."""
    tree = HostTree(path).os_release("ubuntu2404").running(UBUNTU_RUNNING)
    for release in (UBUNTU_RUNNING, UBUNTU_NEW):
        tree.kernel(release)
        for name in ("zfs", "spl"):
            tree.module(release, name, "2.2.2-0ubuntu9", location="kernel/zfs", compression="zst")
    return tree


def debian_new_kernel(path: Path, release: str, *, module: bool, failed: str = "built") -> HostTree:
    """:func:`debian_dkms` plus an installed ``release`` whose DKMS build left its modules
    (``module``) or did not (DKMS state ``failed``), and an empty dpkg status."""
    tree = debian_dkms(path)
    tree.write("/var/lib/dpkg/status", "")
    tree.kernel(release)
    if module:
        for name in ("zfs", "spl"):
            tree.module(release, name, "2.2.7-1")
        tree.dkms("zfs", "2.2.7", release)
    else:
        tree.dkms("zfs", "2.2.7", release, state=failed)
    return tree
