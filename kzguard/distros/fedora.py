"""Fedora: zfs-dkms from the OpenZFS repository; dnf4 or dnf5; GRUB with BLS entries."""

from __future__ import annotations

from kzguard.distros.base import DKMS, Distro


class Fedora(Distro):
    family = "fedora"
    zfs_delivery = DKMS
    signing_certificates = ("/var/lib/dkms/mok.pub", "/etc/pki/akmods/certs/public_key.der")

    def hold_command(self, release: str) -> str:
        version = release.rsplit(".", 1)[0]
        return f"dnf versionlock exclude 'kernel*-{version}'"

    def upgrade_zfs_command(self) -> str:
        return "dnf upgrade zfs zfs-dkms"

    def headers_command(self, release: str) -> str:
        return f"dnf install kernel-devel-{release.rsplit('.', 1)[0]}"

    def zfs_initramfs_hint(self) -> str:
        return "dnf install zfs-dracut"
