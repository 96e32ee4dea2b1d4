"""The pre-transaction gate every package-manager hook goes through.

``run_gate`` judges a transaction, applies the policy and the admin's one-shot overrides,
refuses kernels pinned after a failed post-install check (and first lifts kzguard's pins on
kernels now judged safe against the ZFS the transaction leaves), snapshots the boot
environment before a kernel or ZFS change, and records what it decided.
:mod:`kzguard.guard.hook_process` wraps it for a hook process.
"""

from __future__ import annotations

import time

from kzguard.base import journal
from kzguard.base.transaction import Transaction
from kzguard.judge.decision import ALLOW, ALLOW_ENV, BLOCK, HOLD, WARN, Decision, allowed_from_env

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Optional

    from kzguard.actions.pin import Lifted
    from kzguard.actions.state import State
    from kzguard.context import Context
    from kzguard.guard.inflight import Process


def run_gate(
    ctx: Context,
    transaction: Transaction,
    *,
    command: str = "",
    in_flight: Optional[Process] = None,
    token: Optional[str] = None,
    lifted_into: Optional[list[str]] = None,
) -> Decision:
    """Judge ``transaction`` on the context's root and decide; snapshot first when it goes
    ahead.

    With ``in_flight`` (the manager's process, whose end hook runs the final post-install
    check) a transaction that goes ahead is recorded in the state file, in the same write.
    ``lifted_into`` receives the kernels whose pins were lifted (the dnf plugin records them
    at ``pre_transaction``, for the end hook to check again).
    """
    from kzguard.actions import state
    from kzguard.judge.decision import decide
    from kzguard.judge.policy import judge

    root, runner = ctx.root, ctx.runner
    config = ctx.config
    report = judge(
        ctx.host, config.zfs_ranges, transaction=transaction, ranges_origin=config.source
    )
    lifted = _lift_pins(ctx, transaction)
    if lifted_into is not None:
        lifted_into.extend(lifted.releases)
    from_env = allowed_from_env(ctx.env)
    with state.locked(root, dry_run=runner.dry_run) as state_file:
        stored = set(state_file.data["allow"])
        decision = decide(
            report,
            on_unsupported=config.on_unsupported_kernel,
            on_unknown=config.on_unknown,
            allowed=from_env | stored,
            command=command,
            pinned={
                r: why for r, why in _pinned(state_file.data).items() if r not in lifted.releases
            },
        )
        if lifted.lines:
            decision = decision._replace(lines=(*lifted.lines, *decision.lines))
        if transaction.zfs_sources or transaction.notes:
            decision = decision._replace(lines=(*_zfs_lines(transaction), *decision.lines))
        for release in decision.allowed:
            how = ALLOW_ENV if release in from_env else "kzguard allow"
            if release not in from_env:
                del state_file.data["allow"][release]
            journal.event(
                "override-used",
                f"{release} let through {transaction.manager} by {how}",
                priority=journal.WARNING,
                shown=True,
                kernel=release,
                manager=transaction.manager,
            )
        if decision.action in (ALLOW, WARN) and config.snapshots.enabled:  # it goes ahead
            decision = _snapshot(ctx, transaction, decision, state_file)
        _record(state_file, transaction, decision)
        if in_flight is not None and decision.action in (ALLOW, WARN):
            from kzguard.guard import inflight

            inflight.begin(
                state_file.data,
                transaction.manager,
                in_flight,
                kernels=transaction.install,
                zfs=transaction.touches_zfs,
                token=token,
                lifted=lifted.releases,
            )
        state_file.save()
    ctx.refresh()
    if not runner.dry_run:  # the service re-checks now rather than at its next look
        from kzguard.service.notify import notify_change

        notify_change("transaction", root=root.top, manager=transaction.manager)
    return decision


def recheck(
    ctx: Context,
    transaction: Transaction,
    *,
    allowed: frozenset[str] = frozenset(),
    command: str = "",
) -> Decision:
    """Judge ``transaction`` again and decide, changing nothing (no snapshot, no record, no
    override used up): the dnf plugin's second look at ``pre_transaction``, once the package
    files are downloaded and their META can be read. ``allowed`` are the kernels the first
    decision let through by an admin's override."""
    from kzguard.judge.decision import decide
    from kzguard.judge.holds import allowed_kernels
    from kzguard.judge.policy import judge

    config = ctx.config
    report = judge(
        ctx.host, config.zfs_ranges, transaction=transaction, ranges_origin=config.source
    )
    data = ctx.state
    decision = decide(
        report,
        on_unsupported=config.on_unsupported_kernel,
        on_unknown=config.on_unknown,
        allowed=set(allowed) | allowed_kernels(ctx.env, data),
        command=command,
        pinned=_pinned(data),
    )
    return decision._replace(lines=(*_zfs_lines(transaction), *decision.lines))


def _lift_pins(ctx: Context, transaction: Transaction) -> Lifted:
    """Lift kzguard's pins on kernels now safe with the ZFS the transaction leaves (one
    ``stat`` when nothing is pinned)."""
    from kzguard.actions import pin

    if not ctx.state["pins"]:  # read() is empty for a missing, corrupt or looping file
        return pin.Lifted()
    from kzguard.judge.holds import liftable

    pins = pin.from_state(ctx.state).values()  # the state already read, not a second read
    lifts = liftable(ctx.host, ctx.config, pins, zfs_version=transaction.zfs_version)
    return pin.lift(ctx, lifts)


def _zfs_lines(transaction: Transaction) -> list[str]:
    """Which range the incoming ZFS was judged by: its own META (named), or the table (why)."""
    lines = [
        f"kzguard: ZFS {s.version} supports Linux {s.linux_min} to {s.linux_max}.x ({s.path})"
        for s in transaction.zfs_sources
    ]
    return lines + [f"kzguard: {note}" for note in transaction.notes]


def _pinned(data: Mapping[str, object]) -> dict[str, str]:
    if not data.get("pins"):
        return {}
    from kzguard.actions import pin

    return pin.refusals(data)


def _snapshot(
    ctx: Context, transaction: Transaction, decision: Decision, state_file: State
) -> Decision:
    from kzguard.actions import snapshot

    kernels = [*transaction.install, *transaction.remove]
    what = kernels[0] if kernels else "zfs"
    config, runner = ctx.config, ctx.runner
    result = snapshot.take(
        ctx.root,
        runner,
        dataset=config.snapshots.dataset,
        keep=config.snapshots.keep,
        manager=transaction.manager,
        kernels=kernels,
        reason=f"{transaction.manager}-{what}",
    )
    decision = decision.with_line(f"kzguard: {result.message}")
    if result.status == snapshot.TAKEN and not runner.dry_run:
        state_file.data.setdefault("counters", {})["snapshot_last_success"] = time.time()
    if result.failed and config.snapshots.required:
        return decision.with_block(
            "kzguard: refusing the transaction: the snapshot failed and snapshots.required is true"
        )
    return decision


_EVENT_KINDS = {BLOCK: "transaction-blocked", HOLD: "transaction-held", WARN: "transaction-warned"}


def _record(state_file: State, transaction: Transaction, decision: Decision) -> None:
    kind = _EVENT_KINDS.get(decision.action)
    if kind is None:
        return
    kernels = [*decision.blocked, *decision.held, *decision.warned]
    message = f"{transaction.manager}: {decision.action} {', '.join(kernels) or 'transaction'}"
    state_file.event(kind, message, manager=transaction.manager, kernels=kernels)
    if decision.action == BLOCK:
        from kzguard.actions import state

        state.count_blocked(state_file.data, transaction.manager)
    priority = journal.WARNING if decision.action == WARN else journal.ERROR
    journal.event(
        kind, message, priority=priority, shown=True, manager=transaction.manager, kernel=kernels
    )
