"""dnf5: what ``hooks/dnf5/*.actions`` feed ``kzguard hook dnf5``, and when to hold in versionlock.

dnf5 has no Python plugins; its actions plugin (``libdnf5-plugin-actions``) runs commands at
libdnf5 hooks, once per matching package, with ``${pkg.*}`` and ``${conf.*}`` substituted
(see ``man libdnf5-actions``). The actions file collects one line per kernel or ZFS package
into a private directory and then pipes them, after a small header, into
``kzguard hook dnf5``. The stream (protocol 1)::

    kzguard-dnf5 1                      <- always first
    plugin 1.4.0                        <- ${plugin.version}: the actions plugin's version
    hook goal_resolved                  <- the libdnf5 hook it runs at
    installroot /                       <- ${conf.installroot}: the root kzguard judges
    I kernel-core 6.13.2 200.fc41 x86_64   <- ${pkg.action} ${pkg.name} ${pkg.version}
    U zfs-dkms 2.3.1 1.fc41 noarch         <- ${pkg.release} ${pkg.arch}, one per package
    E zfs-dkms 2.2.7 1.fc41 noarch

Actions ``I`` (install), ``U`` (upgrade), ``D`` (downgrade) and ``R`` (reinstall) bring a
package in; ``E`` (erased: removed, upgraded, downgraded, reinstalled) and ``O`` (obsoleted)
take one out; ``?`` (a reason change) changes nothing. Unknown header keys are ignored.

How much kzguard can do depends on the actions plugin (``docs/dnf5.md``): from version 1.4.0
(dnf5 5.2.11) ``raise_error=1`` makes a non-zero exit stop dnf5 at ``goal_resolved``, before
anything is downloaded. Older versions only log the exit code, so there kzguard keeps
unsupported kernels out with ``/etc/dnf/versionlock.toml`` conditions written before the
goal is resolved (:func:`maintain` at ``repos_configured``, from the cached repodata).

Holds: a plain action cannot drop a package from a resolved goal, so ``on_unsupported_kernel:
hold`` refuses the run and :func:`hold` writes exclude conditions (``evr != <version>-<release>``
on ``kernel``, ``kernel-core``, ``kernel-modules*``, ``kernel-devel*``) into the root's
``/etc/dnf/versionlock.toml``; the same command run again goes on without the kernel.
:func:`maintain` lifts them once they are no longer needed. The file itself is read and
changed only by :mod:`kzguard.actions.dnf5_hold` (imported when a hold is made or checked);
``Versionlock``, ``VERSIONLOCK`` and ``MARK`` are still reachable here through it.
"""

from __future__ import annotations

from kzguard.base.errors import Dnf5Error
from kzguard.managers.base import HookInput, Manager, PinForm
from kzguard.managers.dnf import Package, build_transaction

TYPE_CHECKING = False  # typing costs 2 ms to import: the registry loads every adapter
if TYPE_CHECKING:
    from typing import Any, TextIO

    from kzguard.base.transaction import Transaction
    from kzguard.context import Context
    from kzguard.judge.decision import Decision
    from kzguard.root import Root

MANAGER = "dnf5"
PROTOCOL = "kzguard-dnf5 1"
RAISE_ERROR_SINCE = (1, 4, 0)  # actions plugin version with raise_error=1 (dnf5 5.2.11)
INCOMING, OUTGOING, UNCHANGED = "IUDR", "EO", "?"
GATE_HOOKS = ("goal_resolved", "pre_transaction")
UPKEEP_HOOKS = ("repos_configured", "post_transaction")
# names kept here for callers, served by kzguard.actions.dnf5_hold (see __getattr__)
_FROM_ACTION = ("Versionlock", "VERSIONLOCK", "MARK")


class Dnf5Input(HookInput):
    """A HookInput with what the actions file says about where it runs."""

    hook: str = "goal_resolved"
    plugin: str = ""  # the actions plugin's version

    @property
    def can_refuse(self) -> bool:
        """Whether a non-zero exit stops dnf5 (``raise_error=1``, actions plugin >= 1.4.0)."""
        return plugin_version(self.plugin) >= RAISE_ERROR_SINCE


def plugin_version(text: str) -> tuple[int, ...]:
    import re

    parts = re.findall(r"\d+", text)[:3]
    return tuple(int(p) for p in parts) if parts else (0,)


def read(stdin: TextIO) -> Dnf5Input:
    """Parse the stream of protocol 1 (see the module docstring)."""
    header: dict[str, str] = {}
    incoming: list[Package] = []
    outgoing: list[Package] = []
    first = True
    from kzguard.base.transaction import stdin_lines

    for number, raw in enumerate(stdin_lines(stdin), 1):
        line = raw.strip()
        if not line:
            continue
        if first:
            if line != PROTOCOL:
                raise Dnf5Error(f"line {number}: expected {PROTOCOL!r}, got {line!r}")
            first = False
            continue
        key, _, value = line.partition(" ")
        if len(key) > 1:
            header[key] = value.strip()
            continue
        fields = line.split()
        if len(fields) != 5 or key not in INCOMING + OUTGOING + UNCHANGED:
            raise Dnf5Error(
                f"line {number}: expected 'ACTION NAME VERSION RELEASE ARCH', got {line!r}"
            )
        package = Package(*fields[1:])
        if key in INCOMING:
            incoming.append(package)
        elif key in OUTGOING:
            outgoing.append(package)
    if first:
        raise Dnf5Error(f"no input: expected {PROTOCOL!r} on the first line")
    hook = header.get("hook", "goal_resolved")
    return Dnf5Input(
        build_transaction(incoming, outgoing, MANAGER),
        header.get("installroot") or "/",
        "",
        # post_transaction runs the final check (maintain); every actions file has it
        hook in GATE_HOOKS,
        hook=hook,
        plugin=header.get("plugin", ""),
    )


def hold(ctx: Context, decision: Decision, transaction: Transaction) -> list[str]:
    """Write versionlock conditions keeping ``decision.held`` out of the next runs."""
    from kzguard.actions.dnf5_hold import MARK, VERSIONLOCK, add

    lines, missing = add(ctx.root, ctx.runner, decision.held)
    if missing:
        lines.append(
            f"kzguard: {', '.join(missing)} could not be held back in {VERSIONLOCK}; keep the "
            "current kernel (e.g. `dnf5 upgrade --exclude='kernel*'`) or upgrade ZFS first"
        )
        return lines
    lines.append(
        "kzguard: dnf5 had already resolved the transaction when kzguard ran; from the next run "
        f"on it leaves {', '.join(decision.held)} out: run the same command again to go on "
        "with the rest"
    )
    lines.append(
        f"kzguard: kzguard lifts the hold once the installed ZFS supports it; by hand, delete "
        f"the entries whose comment starts with {MARK!r} from {VERSIONLOCK}"
    )
    return lines


def maintain(ctx: Context, hook_input: HookInput) -> list[str]:
    """Keep kzguard's versionlock holds right, at ``repos_configured`` and ``post_transaction``.

    At ``post_transaction`` it first runs the final post-install check of the transaction
    (:func:`kzguard.guard.end_check.finish_main`: the kernels kernel-install queued during it).
    Holds still needed stay; those whose kernel is now supported, installed, let through by
    an admin, or no longer wanted by the policy are lifted, except the holds of pinned kernels
    (:mod:`kzguard.actions.pin` lifts those). Where dnf5 cannot refuse a
    transaction (actions plugin < 1.4.0), at ``repos_configured`` (before the goal is
    resolved) the kernels pending in the root's dnf caches are judged and the unsupported ones
    held, for ``on_unsupported_kernel`` ``hold`` and ``block`` alike. Returns at once at the
    gate's hooks.
    """
    if not isinstance(hook_input, Dnf5Input) or hook_input.hook not in UPKEEP_HOOKS:
        return []
    if hook_input.hook == "post_transaction":  # the end state: the final post-install check
        from kzguard.guard.end_check import finish_main

        finish_main(
            MANAGER, root_option=ctx.root.top, config_path=ctx.config_path, dry_run=ctx.dry_run
        )
        ctx.refresh()
    from kzguard.actions.dnf5_hold import Versionlock, locked

    ctx.require_root()
    add_pending = hook_input.hook == "repos_configured" and not hook_input.can_refuse
    if not add_pending and not Versionlock.load(ctx.root).held():
        return []  # nothing to keep up: no lock taken, nothing written
    with locked(ctx.root, ctx.runner) as lock:  # one read-modify-write under its lock
        return _upkeep(ctx, hook_input, lock)


def _upkeep(ctx: Context, hook_input: Dnf5Input, lock: Any) -> list[str]:
    """The holds dnf5's upkeep wants, written through ``lock`` (held by the caller)."""
    add_pending = hook_input.hook == "repos_configured" and not hook_input.can_refuse
    current = lock.held()
    if not current and not add_pending:
        return []
    from kzguard.judge.holds import hold_for_next_run
    from kzguard.managers.dnf import unsupported

    wanted: list[str] = []
    if hold_for_next_run(ctx.config.on_unsupported_kernel, can_refuse=hook_input.can_refuse):
        candidates = set(current)
        if add_pending:
            candidates.update(p.release for p in ctx.host.pending)
        wanted = [h.release for h in unsupported(ctx, candidates)]
    from kzguard.actions import pin

    wanted += [r for r in pin.current(ctx.root) if r in current]  # kzguard pin's holds stay
    if sorted(set(wanted)) == sorted(current):
        return []
    return lock.write(ctx.root, ctx.runner, sorted(set(wanted)))


class Dnf5(Manager):
    """dnf5: the libdnf5 actions file pipes its packages into ``kzguard hook dnf5``; holds
    and pins are versionlock entries in ``/etc/dnf/versionlock.toml``."""

    name = MANAGER
    # the packages the actions files pipe into the hook (one generated line per glob and hook)
    guarded = ("kernel*", "zfs*", "kmod-zfs*", "libzfs*")
    markers = ("/usr/bin/dnf5", "/usr/lib/sysimage/libdnf5")

    def read(self, stdin: TextIO, ctx: Context) -> HookInput:
        return read(stdin)

    def hold(self, ctx: Context, decision: Decision, transaction: Transaction) -> list[str]:
        return hold(ctx, decision, transaction)

    def maintain(self, ctx: Context, hook_input: HookInput) -> list[str]:
        return maintain(ctx, hook_input)

    def pin(self, ctx: Context, release: str, codes: tuple[str, ...]) -> list[str]:
        return _versionlock(ctx, release, adding=True)

    def unpin(self, ctx: Context, release: str) -> list[str]:
        from kzguard.actions.dnf5_hold import VERSIONLOCK

        if not ctx.root.exists(VERSIONLOCK):
            return []
        return _versionlock(ctx, release, adding=False)

    def pinned(self, root: Root) -> dict[str, PinForm]:
        from kzguard.actions.dnf5_hold import Versionlock

        return {r: PinForm(r) for r in Versionlock.load(root).held()}

    def cleanup(self, ctx: Context) -> list[str]:
        from kzguard.actions import dnf5_hold

        try:
            with dnf5_hold.locked(ctx.root, ctx.runner) as lock:
                if lock.held():
                    return lock.write(ctx.root, ctx.runner, [])
        except Dnf5Error as exc:  # an admin's file that does not parse: left as it is, said
            return [f"left {dnf5_hold.VERSIONLOCK} alone: {exc}"]
        return []


def _versionlock(ctx: Context, release: str, *, adding: bool) -> list[str]:
    """Add or lift the versionlock entry of ``release``, read-modify-write under the lock."""
    from kzguard.actions.dnf5_hold import locked

    with locked(ctx.root, ctx.runner) as lock:
        held = lock.held()
        if adding == (release in held):
            return []
        wanted = [*held, release] if adding else [r for r in held if r != release]
        lines = lock.write(ctx.root, ctx.runner, wanted)
    return [line.replace("kzguard: ", "kzguard: dnf5: ", 1) for line in lines]


ADAPTER = Dnf5()


def __getattr__(name: str) -> Any:
    """``Versionlock``, ``VERSIONLOCK`` and ``MARK`` from the action, imported on first use."""
    if name in _FROM_ACTION:
        from kzguard.actions import dnf5_hold

        return getattr(dnf5_hold, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
