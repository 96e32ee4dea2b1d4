"""What a package-manager transaction will change, in the terms the policy needs."""

from kzguard.base.record import Record

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Optional, TextIO

    from kzguard.facts.zfs import ZfsSource

# Package names (any manager) whose change is a ZFS change.
ZFS_PACKAGES = frozenset(
    {
        "zfs",
        "zfs-dkms",
        "zfs-kmod",
        "kmod-zfs",
        "zfsutils-linux",
        "zfs-linux",
        "zfs-linux-lts",
        "zfs-utils",
        "zfs-zed",
        "libzfs4",
        "libzfs5",
        "libzfs6",
    }
)


class Transaction(Record):
    """Kernels a transaction installs or removes, and the ZFS it leaves behind.

    ``zfs_version`` is the version of ZFS after the transaction when the transaction changes
    it, else ``None``; ``zfs_packages`` names the ZFS packages it touches (installs, upgrades or
    removes). ``packages`` maps each installed kernel release to its package names, which is
    what a hold excludes. ``no_module`` names kernel releases it installs that come with no
    package shipping their zfs module (the apt adapter fills it in; the policy reads it only
    where the module ships prebuilt with the kernel, as on Ubuntu and Proxmox).
    ``zfs_sources`` are the ZFS METAs read from the package files the transaction installs
    (:mod:`kzguard.facts.package_meta`; path ``META in <file>``): the policy prefers them to
    the built-in table. ``notes`` say what the adapter could not read (then the table is used).
    """

    manager: str
    install: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    zfs_version: "Optional[str]" = None
    zfs_packages: tuple[str, ...] = ()
    packages: tuple[tuple[str, tuple[str, ...]], ...] = ()
    no_module: tuple[str, ...] = ()
    zfs_sources: "tuple[ZfsSource, ...]" = ()
    notes: tuple[str, ...] = ()

    @property
    def touches_kernel(self) -> bool:
        return bool(self.install or self.remove)

    @property
    def touches_zfs(self) -> bool:
        return bool(self.zfs_packages or self.zfs_version)

    @property
    def relevant(self) -> bool:
        """Whether kzguard has anything to judge or snapshot for this transaction."""
        return self.touches_kernel or self.touches_zfs

    def packages_of(self, release: str) -> tuple[str, ...]:
        return dict(self.packages).get(release, ())

    def to_dict(self) -> dict[str, object]:
        return {
            "manager": self.manager,
            "install": list(self.install),
            "remove": list(self.remove),
            "zfs_version": self.zfs_version,
            "zfs_packages": list(self.zfs_packages),
            "packages": {release: list(names) for release, names in self.packages},
            "no_module": list(self.no_module),
            "zfs_sources": [s.to_dict() for s in self.zfs_sources],
            "notes": list(self.notes),
        }


def stdin_lines(stdin: "TextIO") -> list[str]:
    """The lines of a hook's stdin; bytes that are not UTF-8 (file names may hold any)
    survive as surrogates instead of failing the hook."""
    raw = getattr(stdin, "buffer", None)
    text = raw.read().decode("utf-8", "surrogateescape") if raw is not None else stdin.read()
    return text.splitlines(keepends=True)
