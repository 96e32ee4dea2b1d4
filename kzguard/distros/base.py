"""What every distro family answers: how ZFS reaches a kernel, where modules live, what to run."""

from __future__ import annotations

# How the zfs module reaches a kernel.
DKMS = "dkms"  # built on the host by DKMS from /usr/src/zfs-<ver>
KMOD = "kmod"  # kABI-tracked kmod package, linked into new kernels by weak-modules (EL)
PREBUILT = "prebuilt"  # ships with the kernel package (Ubuntu, Proxmox): no upstream range
PACKAGE = "package"  # a per-kernel package built from upstream OpenZFS (archzfs zfs-linux)
NONE = "none"  # no ZFS found on the host


class Distro:
    """A distro family. Leaves override class attributes and the advice methods."""

    family = "unknown"
    zfs_delivery = DKMS
    module_roots: tuple[str, ...] = ("/lib/modules", "/usr/lib/modules")
    # Files whose presence means the distro's DKMS integration builds every
    # /usr/src/<module>-<version> with a dkms.conf without a `dkms add` (Arch's alpm hook).
    dkms_autoregister: tuple[str, ...] = ()

    def hold_command(self, release: str) -> str:
        """How an admin keeps this kernel from being installed."""
        return f"kzguard pin add {release}"

    def rebuild_command(self, release: str) -> str:
        """How an admin rebuilds the zfs module for this kernel."""
        return f"dkms autoinstall -k {release}"

    def upgrade_zfs_command(self) -> str:
        """How an admin upgrades ZFS to a release that supports newer kernels."""
        return "upgrade the zfs packages"

    def headers_command(self, release: str) -> str:
        """How an admin installs the headers DKMS needs to build for this kernel."""
        return f"install the kernel headers for {release}"

    def zfs_initramfs_hint(self) -> str:
        """How an admin makes sure the initramfs generator includes ZFS."""
        return "install your distro's ZFS initramfs integration"

    def initramfs_command(self, release: str) -> str:
        """How an admin rebuilds this kernel's initramfs."""
        return f"dracut --force --kver {release}"

    # Where DKMS (or the distro's module signing) keeps the certificate it signs with.
    signing_certificates: tuple[str, ...] = ("/var/lib/dkms/mok.pub",)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} family={self.family}>"
