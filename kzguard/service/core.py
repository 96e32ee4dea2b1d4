"""The service's core: the current judgement of the host, and the admin actions, without a bus.

:class:`Core` holds the configuration and the last :class:`CheckResult` (every kernel's verdict,
the next boot, counters read from the state file). ``check()`` judges the host again and tells
its listeners when a verdict changed; the daemon calls it from the watcher and the periodic
timer, the metrics collector and the D-Bus object read ``last``. Nothing here imports dbus or
prometheus_client (firewalld's core/server split): the core runs and is tested without a daemon.
"""

from __future__ import annotations

import time

from kzguard.base.record import Record
from kzguard.root import Root, Runner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

    from kzguard.config import Config
    from kzguard.context import Context
    from kzguard.judge.policy import Report

# What the watcher watches, in-root: kernels, modules, DKMS, bootloader, package metadata,
# kzguard's own configuration and state. Missing ones are skipped.
WATCHED = (
    "/lib/modules",
    "/usr/lib/modules",
    "/var/lib/dkms",
    "/usr/src",
    "/boot",
    "/boot/loader/entries",
    "/boot/grub",
    "/boot/grub2",
    "/etc/kzguard",
    "/etc/default/grub",
    "/var/cache/dnf",
    "/var/cache/libdnf5",
    "/var/lib/apt/lists",
    "/var/lib/pacman/sync",
    "/var/lib/kzguard",
)


class CheckResult(Record):
    """One full judgement of the host, and what the state file counts."""

    report: Report
    taken_at: float  # time.time() when the check finished
    duration: float  # seconds the check took
    blocked: dict[str, int]  # transactions refused so far, by manager (from state events)
    snapshot_success: Optional[float] = None  # time of the newest kzguard snapshot taken

    def verdicts(self) -> dict[str, str]:
        return {k.release: k.verdict for k in self.report.kernels}


class Core:
    """The host as the service sees it. Not thread-safe: the daemon's main loop owns it."""

    def __init__(self, root: Root, config_path: Optional[str] = None, *, runner: Runner):
        from kzguard.config import load_config

        self.root = root
        self.config_path = config_path
        self.runner = runner
        self.config: Config = load_config(root, config_path)
        self.last: Optional[CheckResult] = None
        self._error: Optional[str] = None
        self.errors = 0  # failed checks so far (the metric kzguard_check_errors_total)
        self._listeners: list[Callable[[Optional[CheckResult], CheckResult], None]] = []

    @property
    def error(self) -> Optional[str]:
        """The last check's failure, if it failed; setting one counts it in ``errors``."""
        return self._error

    @error.setter
    def error(self, message: Optional[str]) -> None:
        if message is not None:
            self.errors += 1
        self._error = message

    def add_listener(self, listener: Callable[[Optional[CheckResult], CheckResult], None]) -> None:
        """Call ``listener(old, new)`` after each check whose verdicts differ from the last."""
        self._listeners.append(listener)

    def context(self) -> Context:
        """One check's (one tick's) context: a fresh view of the root (nothing cached from
        the last check), the service's runner and configuration."""
        from kzguard.context import Context

        return Context(
            self.root.fresh(), self.runner, config_path=self.config_path, config=self.config
        )

    def check(self) -> CheckResult:
        """Judge every installed and pending kernel again, on a fresh context."""
        from kzguard.judge.policy import judge

        started = time.monotonic()
        ctx = self.context()
        report = judge(ctx.host, self.config.zfs_ranges, ranges_origin=self.config.source)
        blocked, snapped = _counters(ctx.root)
        new = CheckResult(report, time.time(), time.monotonic() - started, blocked, snapped)
        old, self.last, self.error = self.last, new, None
        if old is None or old.verdicts() != new.verdicts() or _next(old) != _next(new):
            for listener in self._listeners:
                listener(old, new)
        return new

    def reload(self) -> Optional[str]:
        """Re-read the configuration; a bad one keeps the old and returns why."""
        from kzguard.base.errors import ConfigError
        from kzguard.config import load_config

        try:
            self.config = load_config(self.root.fresh(), self.config_path)
        except ConfigError as exc:
            return f"configuration not reloaded, keeping the old one: {exc}"
        return None

    # --- admin actions (the D-Bus object authorises; these only act) ---------------------

    def pin(self, release: str, who: str) -> list[str]:
        from kzguard.actions import pin

        return pin.add(self.context(), release, reason=f"pinned by {who}", who=who)

    def unpin(self, release: str, who: str) -> list[str]:
        from kzguard.actions import pin

        return pin.remove(self.context(), release, why=f"unpinned by {who}")

    def boot_keep(self, release: str, who: str) -> str:
        """Keep the boot default on ``release``; a guard that cannot act is an error."""
        from kzguard.actions import boot
        from kzguard.base.errors import KzguardError

        change = boot.keep(self.root, self.runner, release, reason=f"kept by {who}")
        if change.failed:
            raise KzguardError(change.message)
        return change.message

    def boot_release(self) -> str:
        from kzguard.actions import boot

        return boot.release(self.root, self.runner).message

    def snapshot(self, reason: str) -> str:
        from kzguard.actions import snapshot

        snap = self.config.snapshots
        result = snapshot.take(
            self.root,
            self.runner,
            dataset=snap.dataset,
            keep=snap.keep,
            manager="kzguard",
            kernels=(),
            reason=reason,
        )
        return result.message

    def shutdown_check(self) -> str:
        """The last check before a shutdown or reboot: if the next boot is unsafe, move the
        default back to the last good kernel. Returns what was found and done."""
        from kzguard.actions import boot
        from kzguard.guard.postinstall import last_good

        report = self.check().report
        nb = report.next_boot
        if nb is None or nb.safe:
            return f"next boot {nb.release if nb else 'unknown'} is safe"
        good = last_good(self.root, report, nb.release)
        if good is None:
            return f"next boot {nb.release} is {nb.verdict}, and no installed kernel is safe"
        change = boot.keep(self.root, self.runner, good, reason=f"shutdown: {nb.release} unsafe")
        return f"next boot {nb.release} is {nb.verdict}: {change.message}"


def _next(result: CheckResult) -> Optional[tuple[str, bool]]:
    nb = result.report.next_boot
    return (nb.release, nb.safe) if nb else None


def _counters(root: Root) -> tuple[dict[str, int], Optional[float]]:
    """Refused transactions per manager and the last snapshot's time (state file counters)."""
    from kzguard.actions import state

    counters = state.read(root).get("counters", {})
    blocked = {str(k): int(v) for k, v in dict(counters.get("blocked", {})).items()}
    snapped = counters.get("snapshot_last_success")
    return blocked, float(snapped) if isinstance(snapped, (int, float)) else None
