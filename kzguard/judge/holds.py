"""Which holds and pins are still needed: the judge's answer, which actions carry out.

Each function judges kernels (or a ZFS version) against the host as it is and returns what
to hold, keep or lift; nothing here writes a pin, a stanza or a versionlock entry.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

from kzguard.base.record import Record
from kzguard.base.transaction import Transaction
from kzguard.judge.policy import judge
from kzguard.judge.reasons import SAFE, UNSAFE

if TYPE_CHECKING:
    from kzguard.config import Config
    from kzguard.facts.host import Host

RANGE_CODES = frozenset({"kernel-too-new", "kernel-too-old"})


class Held(Record):
    """A kernel release to keep out of a transaction, and why."""

    release: str
    why: str


def liftable(
    host: Host,
    config: Config,
    pins: Iterable[Any],
    *,
    zfs_version: Optional[str] = None,
    only: Optional[Collection[str]] = None,
) -> list[tuple[str, str]]:
    """The releases of kzguard's own ``pins`` (``auto``; each has ``release``, ``codes`` and
    ``auto``) on kernels a check now finds safe, with why: judged with every check when
    installed, against ``zfs_version`` (a transaction's incoming ZFS) or the installed ZFS.

    A kernel that is not installed is judged by range only, which clears a pin only when the
    pin was for a range, or when ``zfs_version`` is given (the post-install check then judges
    the rebuilt module and pins it again if it fails). ``only`` limits the releases looked at.
    """
    candidates = [p for p in pins if p.auto and (only is None or p.release in only)]
    if not candidates:
        return []
    report = judge(
        host,
        config.zfs_ranges,
        kernels=[p.release for p in candidates],
        zfs_version=zfs_version,
        ranges_origin=config.source,
    )
    verdicts = {k.release: k for k in report.kernels}
    with_zfs = f" with ZFS {zfs_version}" if zfs_version else ""
    lifts = []
    for pin in candidates:
        verdict = verdicts.get(pin.release)
        if verdict is None or not verdict.safe:
            continue
        installed = host.installed_kernel(pin.release) is not None
        if not (installed or zfs_version or (pin.codes and set(pin.codes) <= RANGE_CODES)):
            continue
        lifts.append((pin.release, f"a new check finds it safe{with_zfs}"))
    return lifts


def kernel_hold_needed(
    host: Host, config: Config, release: str, codes: Sequence[str], transaction: Transaction
) -> bool:
    """Whether a hold on kernel ``release`` still keeps back a kernel that would not load
    ZFS, judged as if it came now with the ZFS ``transaction`` leaves."""
    no_module = (release,) if "module-missing" in codes else ()
    probe = Transaction(
        transaction.manager,
        install=(release,),
        zfs_version=transaction.zfs_version,
        no_module=no_module,
    )
    return _any_unsafe(host, config, [release], probe)


def zfs_hold_needed(host: Host, config: Config, zfs_version: str, transaction: Transaction) -> bool:
    """Whether holding ZFS at ``zfs_version`` still keeps an installed kernel (one that stays
    after ``transaction``) from losing its module."""
    kernels = [k.release for k in host.installed if k.release not in transaction.remove]
    probe = Transaction(transaction.manager, zfs_version=zfs_version)
    return _any_unsafe(host, config, kernels, probe)


def _any_unsafe(host: Host, config: Config, kernels: list[str], probe: Transaction) -> bool:
    if not kernels:
        return False
    report = judge(
        host, config.zfs_ranges, kernels=kernels, transaction=probe, ranges_origin=config.source
    )
    return any(k.verdict != SAFE for k in report.kernels)


def unsupported(
    host: Host, config: Config, releases: Iterable[str], allowed: Collection[str]
) -> list[Held]:
    """The kernel ``releases`` (not installed yet) that the ZFS on the host does not support,
    less those an admin let through (``allowed``)."""
    installed = {k.release for k in host.installed}
    candidates = sorted({r for r in releases if r not in installed})
    if not candidates:
        return []
    report = judge(host, config.zfs_ranges, kernels=candidates, ranges_origin=config.source)
    return [
        Held(k.release, "; ".join(r.message for r in k.reasons) or k.verdict)
        for k in report.kernels
        if k.verdict == UNSAFE and k.release not in allowed
    ]


def allowed_kernels(env: Mapping[str, str], state: Mapping[str, object]) -> set[str]:
    """Kernel releases an admin let through: ``KZGUARD_ALLOW`` and ``kzguard allow``."""
    from kzguard.judge.decision import allowed_from_env

    stored = state.get("allow") or {}
    return allowed_from_env(env) | set(stored if isinstance(stored, Mapping) else ())


def hold_for_next_run(policy: str, *, can_refuse: bool) -> bool:
    """Whether unsupported kernels are held for the next runs (dnf5's versionlock): in
    ``hold`` mode, and in ``block`` mode where the manager cannot refuse this run."""
    return policy == "hold" or (policy == "block" and not can_refuse)
