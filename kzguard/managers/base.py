"""The one interface every package manager implements, and what its hook hands the gate.

A manager module ``kzguard.managers.<name>`` defines ``ADAPTER``, an instance of a
:class:`Manager` subclass. What it knows about its manager lives there and nowhere else:
its name, the package names its hook files watch (they are generated from ``guarded``), how its
database and its caches are found on a root, the facts module that reads kernels pending in
those caches, how its hook input becomes a :class:`~kzguard.base.transaction.Transaction`,
its own form of a hold or a pin (add, remove, list, cleanup) and its per-run upkeep.
Everything else asks :mod:`kzguard.managers` (the registry) instead of naming a manager.
"""

from kzguard.base.record import Record
from kzguard.base.transaction import Transaction

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Optional, TextIO

    from kzguard.context import Context
    from kzguard.judge.decision import Decision
    from kzguard.root import Root


class HookInput(Record):
    """What an adapter read from its manager: the transaction and the root it works on."""

    transaction: "Transaction"
    root: "Optional[str]" = None
    command: str = ""
    # the manager runs ``kzguard hook post-transaction`` (or the like) on this root at the end,
    # so a transaction that goes ahead is recorded and the post-install hooks inside it only
    # queue their kernels (kzguard.guard.inflight)
    final_check: bool = False


class PinForm(Record):
    """A pin as a manager's own file keeps it (an APT stanza, a dnf5 versionlock entry)."""

    release: str
    since: str = ""
    codes: tuple[str, ...] = ()


class Manager:
    """One package manager as kzguard sees it; the defaults are "nothing to do"."""

    name = ""
    # package names or globs whose change makes the hook run (the generated hook files' lists)
    guarded: tuple[str, ...] = ()
    # in-root paths, any of which means this manager's database is on a root
    markers: tuple[str, ...] = ()
    # in-root directories of its package metadata, and the facts module reading pending kernels
    caches: tuple[str, ...] = ()
    pending_facts = ""
    # a pin found only in its own file (its state entry lost) is recorded back, never dropped;
    # False where the form is also used for other holds (dnf5's hold mode owns those)
    adopts = False

    def present(self, root: "Root") -> bool:
        """Whether this manager's database is on ``root``."""
        return any(root.exists(path) for path in self.markers)

    def read(self, stdin: "TextIO") -> "HookInput":
        """The transaction its hook announces on ``stdin``: fast, importing little."""
        raise NotImplementedError(f"{self.name} has no stdin protocol")

    def hold(self, ctx: "Context", decision: "Decision", transaction: "Transaction") -> list[str]:
        """Keep ``decision.held`` out of the *next* runs (``on_unsupported_kernel: hold``)
        where this run cannot drop them itself; lines for the admin."""
        return []

    def maintain(self, ctx: "Context", hook_input: "HookInput") -> list[str]:
        """Upkeep on every hook run (lift holds no longer needed); returns at once when there
        is nothing to do."""
        return []

    def pin(self, ctx: "Context", release: str, codes: tuple[str, ...]) -> list[str]:
        """Write this manager's own form of kzguard's pin on ``release``."""
        return []

    def unpin(self, ctx: "Context", release: str) -> list[str]:
        """Lift this manager's form of the pin on ``release``, if it has one."""
        return []

    def pinned(self, root: "Root") -> "Optional[dict[str, PinForm]]":
        """The releases this manager's own file holds back for kzguard, by release; ``None``
        where a pin has no form of its own (dnf's plugin and pacman's hook read the state)."""
        return None

    def cleanup(self, ctx: "Context") -> list[str]:
        """Take back everything kzguard wrote into this manager's configuration."""
        return []
