"""What a package-manager hook does with a judged transaction: pure, from verdicts and policy.

Each kernel the transaction installs is judged (:func:`kzguard.judge.policy.judge`); when the
transaction changes ZFS, every kernel that stays installed is judged against the new ZFS too.
An ``unsafe`` kernel gets ``on_unsupported_kernel`` (block, hold or warn), an ``unknown`` one
``on_unknown`` (block or warn); an admin's one-shot override lets a named kernel through.
A kernel the transaction installs that is pinned (:mod:`kzguard.actions.pin`) is refused
whatever its verdict, unless an admin's override lets it through.
"""

from __future__ import annotations

from kzguard.base.record import Record
from kzguard.judge.reasons import SAFE, UNSAFE

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:  # the policy (and the facts it imports) loads only when a hook judges
    from collections.abc import Collection, Mapping
    from typing import Optional

    from kzguard.judge.policy import KernelVerdict, Report

ALLOW, WARN, HOLD, BLOCK = "allow", "warn", "hold", "block"
_RANK = {ALLOW: 0, WARN: 1, HOLD: 2, BLOCK: 3}

ALLOW_ENV = "KZGUARD_ALLOW"


def allowed_from_env(env: Mapping[str, str]) -> set[str]:
    """Kernel releases named in ``KZGUARD_ALLOW`` (comma or space separated)."""
    import re

    return {word for word in re.split(r"[\s,]+", env.get(ALLOW_ENV, "")) if word}


class Decision(Record):
    """The hook's answer: the overall action and, per kernel, why."""

    action: str
    blocked: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    warned: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()
    codes: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (release, reason codes) if not safe

    @property
    def blocks(self) -> bool:
        return self.action == BLOCK

    def with_block(self, line: str) -> Decision:
        """This decision turned into a block for a reason outside the verdicts."""
        return self._replace(action=BLOCK, lines=(*self.lines, line))

    def with_line(self, line: str) -> Decision:
        return self._replace(lines=(*self.lines, line))

    def to_dict(self) -> dict[str, object]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._asdict().items()}


def concerned(report: Report) -> list[KernelVerdict]:
    """The verdicts a transaction answers for: its kernels, and with a ZFS change every kernel
    that stays installed."""
    from kzguard.judge.policy import INSTALLED, TRANSACTION

    zfs_change = report.transaction is not None and report.transaction.zfs_version is not None
    return [
        k
        for k in report.kernels
        if TRANSACTION in k.states or (zfs_change and INSTALLED in k.states)
    ]


def decide(
    report: Report,
    *,
    on_unsupported: str,
    on_unknown: str,
    allowed: Collection[str] = (),
    command: str = "",
    pinned: Optional[Mapping[str, str]] = None,
) -> Decision:
    """Turn the verdicts on a transaction's kernels into one action with explanations.

    ``pinned`` maps a pinned kernel release to why it is pinned: the transaction may not
    install it (a ``block``, code ``pinned``) unless it is ``allowed``.
    """
    groups: dict[str, list[str]] = {BLOCK: [], HOLD: [], WARN: [], ALLOW: []}
    lines: list[str] = []
    codes: list[tuple[str, tuple[str, ...]]] = []
    installing = set(report.transaction.install) if report.transaction else set()
    for kernel in concerned(report):
        pin = (pinned or {}).get(kernel.release) if kernel.release in installing else None
        if kernel.verdict == SAFE and pin is None:
            continue
        codes.append(
            (kernel.release, (*(r.code for r in kernel.reasons), *(("pinned",) if pin else ())))
        )
        wanted = on_unsupported if kernel.verdict == UNSAFE else on_unknown
        if kernel.release in allowed:
            groups[ALLOW].append(kernel.release)
            what = f"it is {kernel.verdict}: {_why(kernel)}" if kernel.verdict != SAFE else ""
            what = "; ".join(w for w in (f"{pin}" if pin else "", what) if w)
            lines.append(
                f"kzguard: letting {kernel.release} through by an admin's override although {what}"
            )
            continue
        if pin is not None:
            groups[BLOCK].append(kernel.release)
            lines += _explain_pinned(kernel, pin, command)
            continue
        groups[wanted].append(kernel.release)
        lines += _explain(kernel, wanted, command)
    action = max((a for a, releases in groups.items() if releases), key=_RANK.get, default=ALLOW)
    if action == ALLOW and groups[ALLOW]:
        action = WARN
    return Decision(
        action,
        tuple(groups[BLOCK]),
        tuple(groups[HOLD]),
        tuple(groups[WARN]),
        tuple(groups[ALLOW]),
        tuple(lines),
        tuple(codes),
    )


def _why(kernel: KernelVerdict) -> str:
    return "; ".join(r.message for r in kernel.reasons) or kernel.verdict


def _explain_pinned(kernel: KernelVerdict, pin: str, command: str) -> list[str]:
    release = kernel.release
    lines = [f"kzguard: refusing kernel {release}: {pin}"]
    if kernel.verdict != SAFE:
        lines.append(f"kzguard: {release} is {kernel.verdict}: {_why(kernel)}")
    lines.append(
        f"kzguard: way out: fix what the check found (`kzguard doctor`); the pin lifts itself "
        f"once a check finds {release} safe, or lift it with `kzguard pin remove {release}`"
    )
    again = f" {command}" if command else " <the same command>"
    lines.append(
        f"kzguard: to install it anyway, once: `kzguard allow {release}` then run{again} "
        f"again (or set KZGUARD_ALLOW={release} for that command)"
    )
    return lines


def _explain(kernel: KernelVerdict, action: str, command: str) -> list[str]:
    verb = {BLOCK: "refusing", HOLD: "holding back", WARN: "warning about"}[action]
    lines = [f"kzguard: {verb} kernel {kernel.release} ({kernel.verdict}): {_why(kernel)}"]
    if action == WARN:
        return lines
    if kernel.zfs_range is not None:
        rng = kernel.zfs_range
        lines.append(
            f"kzguard: ZFS {rng.zfs_version} supports Linux {rng.linux_min} to "
            f"{rng.linux_max}.x ({rng.origin})"
        )
    if any(r.code == "module-missing" for r in kernel.reasons):
        way = "install it in one transaction with the package that ships its zfs module"
    else:
        way = (
            "upgrade ZFS to a release that supports this kernel first (or in the same transaction)"
        )
    lines.append(f"kzguard: way out: {way}, or keep the current kernel")
    again = f" {command}" if command else " <the same command>"
    lines.append(
        f"kzguard: to install it anyway, once: `kzguard allow {kernel.release}` then run"
        f"{again} again (or set KZGUARD_ALLOW={kernel.release} for that command)"
    )
    return lines
