"""Holds for apt: kzguard's own APT preferences file ``/etc/apt/preferences.d/kzguard``.

Each stanza pins packages to ``Pin-Priority: -1``, so apt's resolver never picks them: a
kernel the installed ZFS does not support (every package of its Linux series for a range
reason, the one release for a missing module), or the ZFS version that would leave an
installed kernel without a module. Its ``Explanation`` field records what it holds and why,
so a later run can judge again and lift it::

    Explanation: kzguard hold series 6.13 for 6.13.2-amd64 (kernel-too-new) since 2026-...Z
    Package: linux-image-6.13.* linux-image-6.13-* linux-headers-6.13.* ...
    Pin: version *
    Pin-Priority: -1

The file is written atomically (temp file, fsync, rename) under the state lock, each pin is
recorded in the state file (``pins["apt:<kind> <subject>"]``) before the file changes, and
the file is removed when its last stanza goes. Stanzas kzguard did not write are kept.

A ``pin`` stanza (``kzguard hold pin <release> ...``) is a kernel pinned by
:mod:`kzguard.actions.pin` (after a failed post-install check, or ``kzguard pin add``): that
module records it in the state file under the release and lifts it; an apt run leaves it alone.
"""

from __future__ import annotations

import re
import time

from kzguard.base import journal
from kzguard.base.errors import KzguardError
from kzguard.base.fileio import replace_or_remove
from kzguard.base.kernelrelease import try_parse_release
from kzguard.base.record import Record

TYPE_CHECKING = False  # typing costs 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Optional

    from kzguard.base.transaction import Transaction
    from kzguard.judge.decision import Decision
    from kzguard.root import Root, Runner

PREFERENCES = "/etc/apt/preferences.d/kzguard"
SERIES, KERNEL, ZFS, PIN = "series", "kernel", "zfs", "pin"
RANGE_CODES = frozenset({"kernel-too-new", "kernel-too-old"})
HEADER = """\
# Owned by kzguard, which writes and removes its stanzas here (changes to them are lost).
# Each keeps apt from installing a kernel the installed ZFS cannot load, or a ZFS that an
# installed kernel cannot load (Pin-Priority -1). An apt run lifts a stanza once it is no
# longer needed; to lift one by hand, delete it (its Explanation line to the next blank line).
"""
# what apt calls the packages of one kernel release, by family: "<prefix><release>"
_KERNEL_PREFIXES = (
    "linux-image-",
    "linux-image-unsigned-",
    "linux-modules-",
    "linux-modules-extra-",
    "linux-headers-",
    "proxmox-kernel-",
    "proxmox-headers-",
    "pve-kernel-",
    "pve-headers-",
)
_EXPLANATION = re.compile(
    r"kzguard hold (?P<kind>series|kernel|zfs|pin) (?P<subject>\S+) for (?P<release>\S+) "
    r"\((?P<codes>[^)]*)\) since (?P<since>\S+)\Z"
)


class HoldError(KzguardError):
    """The preferences file could not be read or written."""

    name = "hold"


class Pin(Record):
    """One stanza: what it holds (``kind``, ``subject``), for which release, and why."""

    kind: str  # SERIES ("6.13"), KERNEL or PIN (a release), or ZFS (an upstream version)
    subject: str
    release: str  # the kernel judged to lift it; for ZFS the kernels it would break
    codes: tuple[str, ...]
    packages: tuple[str, ...]
    version: str = "*"  # the Pin: version glob
    since: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind} {self.subject}"

    def stanza(self) -> str:
        return (
            f"Explanation: kzguard hold {self.key} for {self.release} "
            f"({','.join(self.codes) or '-'}) since {self.since or _utc()}\n"
            f"Package: {' '.join(self.packages)}\n"
            f"Pin: version {self.version}\n"
            "Pin-Priority: -1\n"
        )


def kernel_packages(release: str) -> tuple[str, ...]:
    """Every name apt gives a package of exactly this kernel release."""
    return (
        *(prefix + release for prefix in _KERNEL_PREFIXES),
        f"linux-image-{release}-unsigned",
        f"proxmox-kernel-{release}-signed",
    )


def release_pin(release: str, codes: Sequence[str] = ()) -> Pin:
    """The stanza that pins every package of one kernel release for :mod:`kzguard.actions.pin`."""
    return Pin(PIN, release, release, tuple(codes), kernel_packages(release))


def series_packages(series: str) -> tuple[str, ...]:
    """Globs for the packages of every kernel release of one Linux series (``6.13``)."""
    return tuple(f"{p}{series}{sep}*" for p in _KERNEL_PREFIXES for sep in (".", "-"))


def pins_for(decision: Decision, tx: Transaction) -> list[Pin]:
    """The pins that keep the decision's held kernels out of the next apt run.

    A kernel the transaction installs is held by its series when only range reasons speak
    against it, else by its release (with the packages the transaction brought for it). An
    installed kernel is held because the transaction's new ZFS would break it: then the
    transaction's ZFS packages are pinned at that version instead.
    """
    codes = dict(decision.codes)
    pins: dict[str, Pin] = {}
    for release in decision.held:
        why = codes.get(release, ())
        parsed = try_parse_release(release)
        if release not in tx.install:
            if tx.zfs_version and tx.zfs_packages:
                old = pins.get(f"{ZFS} {tx.zfs_version}")
                broken = f"{old.release},{release}" if old else release
                pin = Pin(ZFS, tx.zfs_version, broken, why, tx.zfs_packages, f"{tx.zfs_version}-*")
                pins[pin.key] = pin
        elif parsed and why and set(why) <= RANGE_CODES:
            series = f"{parsed.major}.{parsed.minor}"
            pins.setdefault(f"{SERIES} {series}", Pin(SERIES, series, release, why, ()))
        else:
            names = (*kernel_packages(release), *tx.packages_of(release))
            pin = Pin(KERNEL, release, release, why, tuple(dict.fromkeys(names)))
            pins.setdefault(pin.key, pin)
    return [p._replace(packages=p.packages or series_packages(p.subject)) for p in pins.values()]


def describe(pin: Pin, *, lifted: bool = False, dry_run: bool = False) -> str:
    """One line for the admin about a pin written or lifted."""
    what = {
        SERIES: f"Linux {pin.subject} kernels",
        KERNEL: f"kernel {pin.subject}",
        PIN: f"kernel {pin.subject}",
        ZFS: f"ZFS {pin.subject} ({', '.join(pin.packages)})",
    }[pin.kind]
    if lifted:
        verb = "would lift" if dry_run else "lifted"
        if pin.kind == ZFS:
            return f"{verb} the pin on {what}: no installed kernel needs it any more"
        if pin.kind == PIN:
            return f"{verb} the pin on {what} in {PREFERENCES}"
        return (
            f"{verb} the pin on {what}: {pin.release} is supported now, "
            "the next `apt upgrade` installs it"
        )
    verb = "would pin" if dry_run else "pinned"
    names = ", ".join(pin.packages[:3]) + (", ..." if len(pin.packages) > 3 else "")
    why = f"{pin.release} would not load ZFS ({', '.join(pin.codes) or 'unsafe'})"
    return f"{verb} {what} ({names}) with Pin-Priority -1 in {PREFERENCES}: {why}"


# --- the file ----------------------------------------------------------------------------------


def read(root: Root) -> tuple[list[Pin], list[str]]:
    """kzguard's pins in the file, and the text of stanzas kzguard did not write."""
    text = root.read_text_or(PREFERENCES)
    if text is None:
        return [], []
    pins: list[Pin] = []
    foreign: list[str] = []
    for block in re.split(r"\n[ \t]*\n", text):
        lines = [ln for ln in block.strip("\n").split("\n") if not ln.lstrip().startswith("#")]
        if not any(ln.strip() for ln in lines):
            continue
        pin = _parse_stanza(lines)
        if pin is None:
            foreign.append("\n".join(lines) + "\n")
        else:
            pins.append(pin)
    return pins, foreign


def _parse_stanza(lines: Sequence[str]) -> Optional[Pin]:
    fields: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if not sep or line[:1] in " \t":
            return None
        fields[key.strip().lower()] = value.strip()
    match = _EXPLANATION.match(fields.get("explanation", ""))
    if not match or fields.get("pin-priority") != "-1" or not fields.get("package"):
        return None
    version = fields.get("pin", "")
    if not version.startswith("version "):
        return None
    codes = tuple(c for c in match.group("codes").split(",") if c and c != "-")
    return Pin(
        match.group("kind"),
        match.group("subject"),
        match.group("release"),
        codes,
        tuple(fields["package"].split()),
        version[len("version ") :].strip(),
        match.group("since"),
    )


def render(pins: Iterable[Pin], foreign: Sequence[str] = ()) -> str:
    stanzas = [pin.stanza() for pin in pins] + list(foreign)
    return HEADER + "".join(f"\n{s}" for s in stanzas) if stanzas else ""


def add(root: Root, runner: Runner, pins: Sequence[Pin], *, record: bool = True) -> list[Pin]:
    """Write ``pins`` (those not there yet); record each in the state file first (unless
    ``record`` is false: the caller records and journals them itself)."""
    from kzguard.actions import state

    with state.locked(root, dry_run=runner.dry_run) as state_file:
        current, foreign = read(root)
        have = {p.key for p in current}
        new = [p._replace(since=p.since or _utc()) for p in pins if p.key not in have]
        if not new:
            return []
        for pin in new if record else ():
            state_file.data["pins"][f"apt:{pin.key}"] = _record(pin)
            state_file.event("pin-added", describe(pin), manager="apt", kernel=pin.release)
        state_file.save()
        _write(root, runner, render([*current, *new], foreign))
    for pin in new if record else ():
        journal.event("pin-added", describe(pin), priority=journal.NOTICE, kernel=pin.release)
    return new


def remove(root: Root, runner: Runner, keys: Iterable[str], *, record: bool = True) -> list[Pin]:
    """Remove the pins with these keys; the file goes with the last stanza (``record``: as
    for :func:`add`)."""
    from kzguard.actions import state

    wanted = set(keys)
    if not wanted:
        return []
    with state.locked(root, dry_run=runner.dry_run) as state_file:
        current, foreign = read(root)
        gone = [p for p in current if p.key in wanted]
        if not gone:
            return []
        for pin in gone if record else ():
            state_file.data["pins"].pop(f"apt:{pin.key}", None)
            state_file.event(
                "pin-removed", describe(pin, lifted=True), manager="apt", kernel=pin.release
            )
        state_file.save()
        _write(root, runner, render([p for p in current if p.key not in wanted], foreign))
    for pin in gone if record else ():
        journal.event("pin-removed", describe(pin, lifted=True), kernel=pin.release)
    return gone


def _record(pin: Pin) -> dict[str, object]:
    return {
        "manager": "apt",
        "file": PREFERENCES,
        "release": pin.release,
        "codes": list(pin.codes),
        "packages": list(pin.packages),
        "version": pin.version,
        "time": pin.since,
    }


def _write(root: Root, runner: Runner, text: str) -> None:
    """Replace the file atomically with ``text``, or remove it when ``text`` is empty."""
    if runner.dry_run:
        return
    path = root.host_path(PREFERENCES)
    try:
        replace_or_remove(path, text)
    except OSError as exc:
        raise HoldError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _utc(now: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
