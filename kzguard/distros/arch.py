"""Arch: zfs-linux from archzfs (built for one exact kernel) or zfs-dkms; pacman."""

from __future__ import annotations

from kzguard.distros.base import PACKAGE, Distro


class Arch(Distro):
    family = "arch"
    zfs_delivery = PACKAGE
    module_roots = ("/usr/lib/modules", "/lib/modules")
    # The dkms package's hook runs `dkms install` for every /usr/src/*/dkms.conf.
    dkms_autoregister = ("/usr/share/libalpm/hooks/70-dkms-install.hook",)

    def hold_command(self, release: str) -> str:
        return "add the kernel package to IgnorePkg in /etc/pacman.conf"

    def rebuild_command(self, release: str) -> str:
        return f"dkms autoinstall -k {release}  (zfs-dkms) or pacman -S zfs-linux (archzfs)"

    def headers_command(self, release: str) -> str:
        return "pacman -S --needed linux-headers  (the headers package of this kernel)"

    def zfs_initramfs_hint(self) -> str:
        return "(add zfs to HOOKS in /etc/mkinitcpio.conf, before filesystems)"

    def initramfs_command(self, release: str) -> str:
        return "mkinitcpio -P"

    def upgrade_zfs_command(self) -> str:
        return "pacman -Syu zfs-utils zfs-linux (or zfs-dkms)"
