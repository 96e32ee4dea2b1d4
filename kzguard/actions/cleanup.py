"""Take back everything kzguard wrote into the package managers' own configuration.

The packages call ``kzguard cleanup`` before kzguard is removed, so that no APT preferences
stanza or dnf5 versionlock entry of kzguard's outlives it and holds a kernel back with nothing
left to lift it. Stanzas and entries kzguard did not write are kept as they are.
"""

from __future__ import annotations

from kzguard.root import Root, Runner


def remove_manager_config(root: Root, runner: Runner) -> list[str]:
    """Remove kzguard's APT preferences stanzas and dnf5 versionlock entries; say what went."""
    from kzguard.actions import apt_hold, dnf5_hold

    lines: list[str] = []
    pins, _ = apt_hold.read(root)
    if pins:
        gone = apt_hold.remove(root, runner, [p.key for p in pins], record=False)
        verb = "would remove" if runner.dry_run else "removed"
        lines += [f"{verb} APT pin {p.key} ({apt_hold.PREFERENCES})" for p in gone]
    from kzguard.base.errors import Dnf5Error

    try:
        with dnf5_hold.locked(root, runner) as lock:
            if lock.held():
                lines += lock.write(root, runner, [])
    except Dnf5Error as exc:  # an admin's file that does not parse: left as it is, said
        lines.append(f"left {dnf5_hold.VERSIONLOCK} alone: {exc}")
    return lines
