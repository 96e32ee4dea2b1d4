"""EL 8/9 (RHEL, Rocky, Alma, CentOS Stream): kABI-tracked zfs-kmod (weak-updates) or zfs-dkms."""

from __future__ import annotations

from kzguard.distros.base import KMOD
from kzguard.distros.fedora import Fedora


class EL(Fedora):
    family = "el"
    zfs_delivery = KMOD

    def rebuild_command(self, release: str) -> str:
        return f"dnf reinstall kmod-zfs && weak-modules --add-kernel {release}"
