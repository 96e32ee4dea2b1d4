"""The registry of package managers: the one list the CLI, pins, cleanup, metrics, the
watcher and the pending-kernel facts read instead of naming a manager.

Each name is a module ``kzguard.managers.<name>`` whose ``ADAPTER`` implements
:class:`kzguard.managers.base.Manager`; it is imported on first use only, so the apt hook
loads the apt adapter and nothing else. Adding a manager: CONTRIBUTING.md.
"""

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from kzguard.managers.base import Manager
    from kzguard.root import Root

# name, whether ``kzguard hook <name>`` reads its protocol on stdin (dnf4's plugin runs in
# dnf's own Python instead), whether ``kzguard hook post-transaction <name>`` is its
# end-of-transaction check; in the order pending kernels are asked for (the first wins).
# Plain data, so the CLI reads it without importing any adapter.
REGISTRY = (
    ("dnf", False, True),
    ("dnf5", True, True),
    ("apt", True, True),
    ("pacman", True, False),
)
NAMES = tuple(name for name, _, _ in REGISTRY)
STDIN_HOOKS = tuple(name for name, stdin, _ in REGISTRY if stdin)
END_CHECKS = tuple(name for name, _, end in REGISTRY if end)


def get(name: str) -> "Manager":
    """The adapter of manager ``name`` (``KeyError`` for a name not registered)."""
    if name not in NAMES:
        raise KeyError(name)
    module = __import__(f"{__name__}.{name}", fromlist=("ADAPTER",))  # importlib costs 1 ms
    return module.ADAPTER  # type: ignore[no-any-return]


def every() -> "list[Manager]":
    """Every registered manager's adapter, in registry order."""
    return [get(name) for name in NAMES]


def on(root: "Root") -> "list[Manager]":
    """The managers whose databases are on ``root``."""
    return [manager for manager in every() if manager.present(root)]
