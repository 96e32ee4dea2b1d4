"""What a package-manager transaction will change, in the terms the policy needs."""

from __future__ import annotations

from typing import Optional

from kzguard.record import Record


class Transaction(Record):
    """Kernels a transaction installs or removes, and the ZFS version it leaves behind.

    ``zfs_version`` is ``None`` when the transaction does not change ZFS.
    """

    manager: str
    install: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    zfs_version: Optional[str] = None

    def to_dict(self) -> dict[str, object]:
        return {
            "manager": self.manager,
            "install": list(self.install),
            "remove": list(self.remove),
            "zfs_version": self.zfs_version,
        }
