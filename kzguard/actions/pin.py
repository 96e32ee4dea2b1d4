"""Pins: keep one kernel release out of every package manager on the root, reversibly.

A pin lives in the state file, ``pins[<release>]`` (why, since when, who, which managers),
and in each package manager's own form, written after the state records it:

- apt (``/var/lib/dpkg/status``): a ``Pin-Priority: -1`` stanza for the release's packages in
  ``/etc/apt/preferences.d/kzguard`` (:func:`kzguard.actions.apt_hold.release_pin`);
- dnf (an rpm database or ``/etc/dnf``): nothing more, the dnf plugin excludes the kernels
  pinned in the state file from the sack;
- dnf5 (``/usr/bin/dnf5`` or its state under ``/usr/lib/sysimage/libdnf5``): a versionlock
  exclude in ``/etc/dnf/versionlock.toml`` (:mod:`kzguard.actions.dnf5_hold`);
- pacman (``/var/lib/pacman/local``): nothing more, the pre-transaction gate refuses a pinned
  kernel (:func:`refusals`), as it does for every manager.

A pin kzguard makes itself (``auto``: after a failed post-install check) lifts itself when a
later check finds the kernel safe (:func:`lift_safe`: the post-install hook, the
pre-transaction gate); a pin an admin makes with ``kzguard pin add`` stays until ``kzguard
pin remove``. Pins made by apt's ``hold`` policy (``pins["apt:..."]``) are
:mod:`~kzguard.actions.apt_hold`'s and are not listed here. Every change goes to the journal
(``pin-added``, ``pin-removed``) and honours ``--dry-run``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

from kzguard.base import journal
from kzguard.base.record import Record

if TYPE_CHECKING:
    from kzguard.base.transaction import Transaction
    from kzguard.config import Config
    from kzguard.facts.host import Host
    from kzguard.root import Root, Runner

APT, DNF, DNF5, PACMAN = "apt", "dnf", "dnf5", "pacman"
POST_INSTALL_REASON = "pinned by kzguard after a failed post-install check"
_MARKERS = (
    (APT, ("/var/lib/dpkg/status",)),
    (DNF, ("/var/lib/rpm", "/usr/lib/sysimage/rpm", "/var/lib/dnf", "/etc/dnf")),
    (DNF5, ("/usr/bin/dnf5", "/usr/lib/sysimage/libdnf5")),
    (PACMAN, ("/var/lib/pacman/local",)),
)
RANGE_CODES = frozenset({"kernel-too-new", "kernel-too-old"})


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
    """The pins :func:`lift_safe` lifted (or would lift, under ``--dry-run``) and what to say."""

    releases: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()


def managers_in(root: Root) -> list[str]:
    """The package managers whose databases are in ``root``."""
    return [name for name, paths in _MARKERS if any(root.exists(p) for p in paths)]


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
    root: Root,
    runner: Runner,
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

    reconcile(root, runner)  # an earlier run killed half-way is finished first
    managers = managers_in(root)
    pin = PinInfo(release, reason, _utc(), who, ",".join(managers), tuple(codes), auto)
    verb = "would pin" if runner.dry_run else "pinned"
    with state.locked(root, dry_run=runner.dry_run) as st:
        old = from_state(st.data).get(release)
        if old is None:
            st.data["pins"][release] = pin.to_state()
            message = f"{verb} kernel {release}: {reason}"
            st.event("pin-added", message, kernel=release, manager=managers, who=who)
            st.save()
    if old is not None:
        lines = [f"kzguard: {release} stays pinned ({old.reason}, since {old.time})"]
        return lines + _apply(root, runner, old._replace(codes=pin.codes), managers, adding=True)
    until = "a check finds it safe" if auto else f"`kzguard pin remove {release}`"
    lines = [
        f"kzguard: {verb} kernel {release}: no package manager installs it again until {until}"
    ]
    lines += _apply(root, runner, pin, managers, adding=True)
    if not runner.dry_run:
        journal.event(
            "pin-added",
            message,
            priority=journal.NOTICE,
            kernel=release,
            manager=managers,
            codes=list(codes),
        )
    return lines


def remove(root: Root, runner: Runner, release: str, *, why: str) -> list[str]:
    """Lift the pin on ``release`` everywhere it lives; ``why`` says who or what lifted it."""
    from kzguard.actions import state

    reconcile(root, runner, adopt=False)  # an orphan stanza is what this removes
    verb = "would lift" if runner.dry_run else "lifted"
    with state.locked(root, dry_run=runner.dry_run) as st:
        pin = from_state(st.data).get(release)
        if pin is not None:
            del st.data["pins"][release]
            message = f"{verb} the pin on kernel {release}: {why}"
            st.event("pin-removed", message, kernel=release, manager=pin.managers)
            st.save()
    if pin is None:  # a manager's form may be left without its state entry (a lost state file)
        found = _apply(root, runner, PinInfo(release, ""), [APT, DNF5], adding=False)
        return found or [f"kzguard: {release} is not pinned"]
    # every form a pin can take here, in case a manager was installed or removed since
    lines = [f"kzguard: {message}"]
    lines += _apply(root, runner, pin, [APT, DNF5], adding=False)
    if not runner.dry_run:
        journal.event("pin-removed", message, kernel=release, manager=pin.managers)
    return lines


def _apply(
    root: Root, runner: Runner, pin: PinInfo, managers: Sequence[str], *, adding: bool
) -> list[str]:
    """Write or lift the managers' own forms of ``pin``; the lines say what happened."""
    lines: list[str] = []
    release = pin.release
    dry = runner.dry_run
    for manager in managers:
        if manager == APT:
            from kzguard.actions import apt_hold

            stanza = apt_hold.release_pin(release, pin.codes)
            if adding and apt_hold.add(root, runner, [stanza], record=False):
                names = ", ".join(stanza.packages[:2])
                lines.append(
                    f"kzguard: apt: {'would pin' if dry else 'pinned'} the packages of {release} "
                    f"({names}, ...) with Pin-Priority -1 in {apt_hold.PREFERENCES}"
                )
            elif not adding and apt_hold.remove(root, runner, [stanza.key], record=False):
                lines.append(f"kzguard: apt: {apt_hold.describe(stanza, lifted=True, dry_run=dry)}")
        elif manager == DNF5:
            lines += _dnf5(root, runner, release, adding=adding)
        elif manager == DNF and adding:
            lines.append(
                f"kzguard: dnf: the kzguard plugin keeps the packages of {release} out of "
                "every transaction while it is pinned"
            )
        elif manager == PACMAN and adding:
            lines.append(
                f"kzguard: pacman: the kzguard pre-transaction hook refuses {release} while it "
                "is pinned"
            )
    if adding and not managers:
        lines.append(
            "kzguard: no package manager database found on this root: the pin is in the state "
            "file only"
        )
    return lines


def _dnf5(root: Root, runner: Runner, release: str, *, adding: bool) -> list[str]:
    from kzguard.actions.dnf5_hold import VERSIONLOCK, locked

    if not adding and not root.exists(VERSIONLOCK):
        return []
    with locked(root, runner) as lock:  # read-modify-write under kzguard's lock for the file
        held = lock.held()
        if adding == (release in held):
            return []
        wanted = [*held, release] if adding else [r for r in held if r != release]
        lines = lock.write(root, runner, wanted)
    return [line.replace("kzguard: ", "kzguard: dnf5: ", 1) for line in lines]


# --- replaying an interrupted change -----------------------------------------------------------


def reconcile(root: Root, runner: Runner, *, adopt: bool = True) -> list[str]:
    """Make the state file and the managers' forms agree after a run killed between them.

    The state is written first, so a pin there without its APT stanza or dnf5 hold gets it
    now. An APT ``pin`` stanza the state does not record (its entry lost, or a ``pin remove``
    killed half-way) is adopted back into the state with ``adopt``: a pin is never dropped
    on a guess, and ``kzguard pin remove`` lifts it. dnf5 holds without a pin are the dnf5
    upkeep's (hold mode owns them)."""
    from kzguard.actions import apt_hold, state

    pins = current(root)
    managers = managers_in(root)
    lines: list[str] = []
    if APT in managers:
        stanzas, _ = apt_hold.read(root)
        ours = {p.subject: p for p in stanzas if p.kind == apt_hold.PIN}
        missing = [apt_hold.release_pin(r, pins[r].codes) for r in sorted(set(pins) - set(ours))]
        if missing and apt_hold.add(root, runner, missing, record=False):
            done = ", ".join(p.subject for p in missing)
            lines.append(f"kzguard: apt: wrote the pins of {done}, recorded but not written")
        orphans = sorted(set(ours) - set(pins)) if adopt else []
        if orphans:
            with state.locked(root, dry_run=runner.dry_run) as st:
                for release in orphans:
                    found = PinInfo(
                        release,
                        "recovered from the APT preferences file (its state entry was lost)",
                        ours[release].since,
                        "kzguard",
                        APT,
                        ours[release].codes,
                        auto=False,
                    )
                    st.data["pins"].setdefault(release, found.to_state())
                st.save()
            lines.append(
                f"kzguard: recorded the pins found only in APT's file: {', '.join(orphans)}"
            )
    if DNF5 in managers and pins:
        from kzguard.actions.dnf5_hold import locked

        with locked(root, runner) as lock:
            held = lock.held()
            missing_holds = [r for r in pins if r not in held]
            if missing_holds:
                lines += lock.write(root, runner, [*held, *missing_holds])
    return lines


# --- lifting ----------------------------------------------------------------------------------


def lift_safe(
    root: Root,
    runner: Runner,
    host: Host,
    config: Config,
    *,
    transaction: Optional[Transaction] = None,
    only: Optional[Sequence[str]] = None,
) -> Lifted:
    """Lift kzguard's own pins on kernels a check now finds safe: judged with every check when
    installed, against the ZFS ``transaction`` leaves (the installed one without it).

    A kernel that is not installed is judged by range only, which clears a pin only when the
    pin was for a range, or when the transaction changes ZFS (the post-install check then
    judges the rebuilt module and pins it again if it fails). ``only`` limits the releases
    looked at.
    """
    pins = current(root)
    candidates = [p for p in pins.values() if p.auto and (only is None or p.release in only)]
    if not candidates:
        return Lifted()
    from kzguard.judge.policy import judge

    zfs_version = transaction.zfs_version if transaction else None
    report = judge(
        host,
        config.zfs_ranges,
        kernels=[p.release for p in candidates],
        zfs_version=zfs_version,
        ranges_origin=config.source,
    )
    verdicts = {k.release: k for k in report.kernels}
    lifted = Lifted()
    for pin in candidates:
        verdict = verdicts.get(pin.release)
        if verdict is None or not verdict.safe:
            continue
        installed = host.installed_kernel(pin.release) is not None
        if not (installed or zfs_version or (pin.codes and set(pin.codes) <= RANGE_CODES)):
            continue
        with_zfs = f" with ZFS {zfs_version}" if zfs_version else ""
        why = f"a new check finds it safe{with_zfs}"
        lines = remove(root, runner, pin.release, why=why)
        lifted = Lifted((*lifted.releases, pin.release), (*lifted.lines, *lines))
    return lifted


def _utc(now: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
