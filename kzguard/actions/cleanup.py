"""Take back everything kzguard wrote into the package managers' own configuration.

The packages call ``kzguard cleanup`` before kzguard is removed, so that no APT preferences
stanza or dnf5 versionlock entry of kzguard's outlives it and holds a kernel back with nothing
left to lift it. Stanzas and entries kzguard did not write are kept as they are. What each
manager wrote is its adapter's to take back (:meth:`kzguard.managers.base.Manager.cleanup`).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kzguard.context import Context


def remove_manager_config(ctx: Context) -> list[str]:
    """Remove what kzguard wrote into every registered manager's files; say what went."""
    return [line for manager in ctx.all_managers for line in manager.cleanup(ctx)]
