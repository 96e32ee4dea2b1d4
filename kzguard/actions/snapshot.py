"""Snapshot the running boot environment (the ZFS dataset mounted at ``/``) before a change.

Snapshots are named ``<dataset>@kzguard-<UTC time>-<reason>`` and carry the user properties
``org.kzguard:manager``, ``org.kzguard:kernels`` and ``org.kzguard:reason``. Retention destroys
the oldest of kzguard's own snapshots (both the name prefix and the manager property must be
there) beyond ``keep``; nobody else's snapshot is ever touched. A root that is not on ZFS is a
logged no-op. Everything runs ``zfs`` through the :class:`~kzguard.root.Runner` (``--dry-run``
runs nothing that changes the pool).
"""

from __future__ import annotations

import re
import time

from kzguard.base import journal
from kzguard.base.errors import CommandError
from kzguard.base.record import Record
from kzguard.facts.mounts import root_dataset
from kzguard.root import Root, Runner

TYPE_CHECKING = False  # typing costs 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Optional

PREFIX = "kzguard-"
PROP_MANAGER = "org.kzguard:manager"
PROP_KERNELS = "org.kzguard:kernels"
PROP_REASON = "org.kzguard:reason"
TAKEN, SKIPPED, FAILED = "taken", "skipped", "failed"


class SnapshotResult(Record):
    status: str  # taken, skipped or failed
    message: str
    name: Optional[str] = None
    destroyed: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status == FAILED


def snapshot_name(dataset: str, reason: str, now: Optional[float] = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    slug = re.sub(r"[^a-z0-9_.:-]+", "-", reason.lower()).strip("-")[:48] or "change"
    return f"{dataset}@{PREFIX}{stamp}-{slug}"


def take(
    root: Root,
    runner: Runner,
    *,
    dataset: str = "auto",
    keep: int = 5,
    manager: str,
    kernels: Sequence[str],
    reason: str,
    now: Optional[float] = None,
) -> SnapshotResult:
    """Snapshot the boot environment and prune kzguard's old snapshots beyond ``keep``."""
    target = root_dataset(root) if dataset == "auto" else dataset
    if target is None:
        message = "the root file system is not on ZFS: no snapshot taken"
        journal.event("snapshot-taken", message, manager=manager, kernels=kernels)
        return SnapshotResult(SKIPPED, message)
    name = snapshot_name(target, reason, now)
    props = {PROP_MANAGER: manager, PROP_KERNELS: ",".join(kernels) or "-", PROP_REASON: reason}
    argv = ["zfs", "snapshot"]
    for key, value in props.items():
        argv += ["-o", f"{key}={value}"]
    try:
        runner.run([*argv, name], changes=True)
    except CommandError as exc:
        message = f"snapshot {name} failed: {exc}"
        journal.event("snapshot-failed", message, priority=journal.ERROR, shown=True, snapshot=name)
        return SnapshotResult(FAILED, message, name)
    verb = "would take" if runner.dry_run else "took"
    journal.event(
        "snapshot-taken", f"{verb} {name}", snapshot=name, manager=manager, kernels=kernels
    )
    destroyed = prune(runner, target, keep)
    return SnapshotResult(TAKEN, f"{verb} snapshot {name}", name, destroyed)


def ours(runner: Runner, dataset: str) -> list[str]:
    """kzguard's snapshots of ``dataset``, oldest first."""
    columns = f"name,{PROP_MANAGER}"
    argv = ["zfs", "list", "-H", "-p", "-t", "snapshot", "-d", "1", "-s", "creation"]
    proc = runner.run([*argv, "-o", columns, dataset])
    found = []
    for line in proc.stdout.splitlines():
        name, _, manager = line.partition("\t")
        if name.startswith(f"{dataset}@{PREFIX}") and manager.strip() not in ("", "-"):
            found.append(name)
    return found


def prune(runner: Runner, dataset: str, keep: int) -> tuple[str, ...]:
    """Destroy kzguard's snapshots of ``dataset`` beyond the newest ``keep``."""
    try:
        old = ours(runner, dataset)[:-keep] if keep > 0 else []
        for name in old:
            runner.run(["zfs", "destroy", name], changes=True)
    except CommandError as exc:
        message = f"pruning {dataset} failed: {exc}"
        journal.event("snapshot-failed", message, priority=journal.WARNING)
        return ()
    if old:
        journal.event("snapshot-pruned", f"destroyed {', '.join(old)}", dataset=dataset)
    return tuple(old)
