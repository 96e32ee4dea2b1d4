"""Pins: keep one kernel release out of every package manager on the root, reversibly.

A pin lives in the state file, ``pins[<release>]`` (why, since when, who, which managers),
and in each package manager's own form, written after the state records it. The forms are
the managers' (:meth:`kzguard.managers.base.Manager.pin`), handed in by the run's context:

- apt: a ``Pin-Priority: -1`` stanza for the release's packages in
  ``/etc/apt/preferences.d/kzguard``;
- dnf: nothing more, the dnf plugin excludes the kernels pinned in the state file;
- dnf5: a versionlock exclude in ``/etc/dnf/versionlock.toml``;
- pacman: nothing more, the pre-transaction gate refuses a pinned kernel (:func:`refusals`),
  as it does for every manager.

A pin kzguard makes itself (``auto``: after a failed post-install check) is lifted when a
later check finds the kernel safe: the judge names those (:func:`kzguard.judge.holds.liftable`)
and :func:`lift` carries it out. A pin an admin makes with ``kzguard pin add`` stays until
``kzguard pin remove``. Pins made by apt's ``hold`` policy (``pins["apt:..."]``) are
:mod:`~kzguard.actions.apt_hold`'s and are not listed here. Every change goes to the journal
(``pin-added``, ``pin-removed``) and honours ``--dry-run``.
"""

from __future__ import annotations

import time

from kzguard.base import journal
from kzguard.base.record import Record

TYPE_CHECKING = False  # typing costs 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Optional

    from kzguard.context import Context
    from kzguard.managers.base import Manager
    from kzguard.root import Root

POST_INSTALL_REASON = "pinned by kzguard after a failed post-install check"


class PinInfo(Record):
    """One pin as the state file keeps it."""

    release: str
    reason: str
    time: str = ""
    who: str = ""
    manager: str = ""  # the managers that keep it out, comma separated
    codes: tuple[str, ...] = ()
    auto: bool = False  # made by kzguard: lifts itself when a check finds the kernel safe

    @classmethod
    def from_state(cls, release: str, data: Mapping[str, Any]) -> PinInfo:
        return cls(
            release,
            str(data.get("reason") or "pinned by kzguard"),
            str(data.get("time") or ""),
            str(data.get("who") or data.get("by") or ""),
            str(data.get("manager") or ""),
            tuple(str(c) for c in data.get("codes") or ()),
            bool(data.get("auto", False)),
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "time": self.time,
            "who": self.who,
            "manager": self.manager,
            "codes": list(self.codes),
            "auto": self.auto,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"release": self.release, **self.to_state()}

    @property
    def managers(self) -> list[str]:
        return [m for m in self.manager.split(",") if m]


class Lifted(Record):
    """The pins :func:`lift` lifted (or would lift, under ``--dry-run``) and what to say."""

    releases: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()


def from_state(data: Mapping[str, Any]) -> dict[str, PinInfo]:
    """The kernel pins in a state file's data, by release (apt hold entries left out)."""
    pins = data.get("pins") or {}
    return {
        release: PinInfo.from_state(release, value)
        for release, value in sorted(pins.items())
        if ":" not in release and isinstance(value, dict)
    }


def current(root: Root) -> dict[str, PinInfo]:
    """The pins on ``root`` now (read without the lock, for display and quick checks)."""
    from kzguard.actions import state
    from kzguard.base.errors import FactError

    try:
        if not root.exists(state.STATE_FILE):
            return {}
    except FactError:  # a link loop: state.read says empty, and locked() refuses it
        return {}
    return from_state(state.read(root))


def refusals(data: Mapping[str, Any]) -> dict[str, str]:
    """release -> why a transaction that installs it is refused (for the gate's decision)."""
    return {release: pin.reason for release, pin in from_state(data).items()}


# --- adding and removing ----------------------------------------------------------------------


def add(
    ctx: Context,
    release: str,
    *,
    reason: str,
    who: str,
    codes: Sequence[str] = (),
    auto: bool = False,
) -> list[str]:
    """Pin ``release``: the state file first, then each manager's own form. Returns the lines
    that say what was (or, under ``--dry-run``, would be) done. Pinning a pinned kernel keeps
    the pin as it is (an admin's stays an admin's) and only writes a missing manager form."""
    from kzguard.actions import state

    root, runner = ctx.root, ctx.runner
    reconcile(ctx)  # an earlier run killed half-way is finished first
    present = ctx.managers
    names = [m.name for m in present]
    pin = PinInfo(release, reason, _utc(), who, ",".join(names), tuple(codes), auto)
    verb = "would pin" if runner.dry_run else "pinned"
    with state.locked(root, dry_run=runner.dry_run) as state_file:
        old = from_state(state_file.data).get(release)
        if old is None:
            state_file.data["pins"][release] = pin.to_state()
            message = f"{verb} kernel {release}: {reason}"
            state_file.event("pin-added", message, kernel=release, manager=names, who=who)
            state_file.save()
    ctx.refresh()
    if old is not None:
        lines = [f"kzguard: {release} stays pinned ({old.reason}, since {old.time})"]
        return lines + _write_forms(ctx, present, release, pin.codes)
    until = "a check finds it safe" if auto else f"`kzguard pin remove {release}`"
    lines = [
        f"kzguard: {verb} kernel {release}: no package manager installs it again until {until}"
    ]
    lines += _write_forms(ctx, present, release, pin.codes)
    if not runner.dry_run:
        journal.event(
            "pin-added",
            message,
            priority=journal.NOTICE,
            kernel=release,
            manager=names,
            codes=list(codes),
        )
    return lines


def remove(ctx: Context, release: str, *, why: str) -> list[str]:
    """Lift the pin on ``release`` everywhere it lives; ``why`` says who or what lifted it."""
    from kzguard.actions import state

    root, runner = ctx.root, ctx.runner
    reconcile(ctx, adopt=False)  # an orphan stanza is what this removes
    verb = "would lift" if runner.dry_run else "lifted"
    with state.locked(root, dry_run=runner.dry_run) as state_file:
        pin = from_state(state_file.data).get(release)
        if pin is not None:
            del state_file.data["pins"][release]
            message = f"{verb} the pin on kernel {release}: {why}"
            state_file.event("pin-removed", message, kernel=release, manager=pin.managers)
            state_file.save()
    ctx.refresh()
    # every form a pin can take, in case a manager was installed or removed since
    found = [line for m in ctx.all_managers for line in m.unpin(ctx, release)]
    if pin is None:  # a manager's form may be left without its state entry (a lost state file)
        return found or [f"kzguard: {release} is not pinned"]
    if not runner.dry_run:
        journal.event("pin-removed", message, kernel=release, manager=pin.managers)
    return [f"kzguard: {message}", *found]


def _write_forms(
    ctx: Context, present: Sequence[Manager], release: str, codes: Sequence[str]
) -> list[str]:
    """Each present manager's own form of the pin on ``release``; the lines say what happened."""
    lines = [line for m in present for line in m.pin(ctx, release, tuple(codes))]
    if not present:
        lines.append(
            "kzguard: no package manager database found on this root: the pin is in the state "
            "file only"
        )
    return lines


# --- replaying an interrupted change -----------------------------------------------------------


def reconcile(ctx: Context, *, adopt: bool = True) -> list[str]:
    """Make the state file and the managers' forms agree after a run killed between them.

    The state is written first, so a pin there without its manager form gets it now. A form
    the state does not record (its entry lost, or a ``pin remove`` killed half-way) is
    adopted back into the state with ``adopt`` where the manager says its forms are only
    pins (apt): a pin is never dropped on a guess, and ``kzguard pin remove`` lifts it.
    dnf5 holds without a pin are the dnf5 upkeep's (hold mode owns them)."""
    from kzguard.actions import state

    pins = current(ctx.root)
    lines: list[str] = []
    for manager in ctx.managers:
        adopting = adopt and manager.adopts
        if not pins and not adopting:
            continue  # nothing to write and nothing to adopt: its file is not even read
        forms = manager.pinned(ctx.root)
        if forms is None:  # nothing of its own to bring in line
            continue
        for release in sorted(set(pins) - set(forms)):
            lines += manager.pin(ctx, release, pins[release].codes)
        orphans = sorted(set(forms) - set(pins)) if adopting else []
        if not orphans:
            continue
        with state.locked(ctx.root, dry_run=ctx.dry_run) as state_file:
            for release in orphans:
                found = PinInfo(
                    release,
                    f"recovered from {manager.name}'s own file (its state entry was lost)",
                    forms[release].since,
                    "kzguard",
                    manager.name,
                    forms[release].codes,
                    auto=False,
                )
                state_file.data["pins"].setdefault(release, found.to_state())
            state_file.save()
        ctx.refresh()
        lines.append(
            f"kzguard: recorded the pins found only in {manager.name}'s file: {', '.join(orphans)}"
        )
    return lines


# --- lifting ----------------------------------------------------------------------------------


def lift(ctx: Context, lifts: Sequence[tuple[str, str]]) -> Lifted:
    """Lift the pins the judge named (release, why); what was (or would be) lifted."""
    lifted = Lifted()
    for release, why in lifts:
        lines = remove(ctx, release, why=why)
        lifted = Lifted((*lifted.releases, release), (*lifted.lines, *lines))
    return lifted


def _utc(now: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
