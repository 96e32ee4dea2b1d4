"""Ubuntu: the zfs module ships prebuilt in linux-modules-<release>."""

from __future__ import annotations

from kzguard.distros.base import PREBUILT
from kzguard.distros.debian import Debian


class Ubuntu(Debian):
    family = "ubuntu"
    zfs_delivery = PREBUILT
    signing_certificates = ("/var/lib/shim-signed/mok/MOK.der", "/var/lib/dkms/mok.pub")

    def rebuild_command(self, release: str) -> str:
        return f"apt install --reinstall linux-modules-{release}"

    def upgrade_zfs_command(self) -> str:
        return "apt install zfsutils-linux"
