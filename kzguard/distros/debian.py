"""Debian: zfs-dkms from contrib; apt; GRUB with saved_entry."""

from __future__ import annotations

from kzguard.distros.base import DKMS, Distro


class Debian(Distro):
    family = "debian"
    zfs_delivery = DKMS

    def hold_command(self, release: str) -> str:
        return f"apt-mark hold linux-image-{release}"

    def upgrade_zfs_command(self) -> str:
        return "apt install -t stable-backports zfs-dkms zfsutils-linux"

    def headers_command(self, release: str) -> str:
        return f"apt install linux-headers-{release}"

    def zfs_initramfs_hint(self) -> str:
        return "apt install zfs-initramfs"

    def initramfs_command(self, release: str) -> str:
        return f"update-initramfs -u -k {release}"
