"""Proxmox VE: the zfs module ships in the proxmox-kernel package; proxmox-boot-tool or GRUB."""

from __future__ import annotations

from kzguard.distros.base import PREBUILT
from kzguard.distros.debian import Debian


class Proxmox(Debian):
    family = "proxmox"
    zfs_delivery = PREBUILT

    def hold_command(self, release: str) -> str:
        return (
            f"proxmox-boot-tool kernel pin <good-release> && apt-mark hold proxmox-kernel-{release}"
        )

    def rebuild_command(self, release: str) -> str:
        return f"apt install --reinstall proxmox-kernel-{release}"

    def upgrade_zfs_command(self) -> str:
        return "apt install zfsutils-linux"
