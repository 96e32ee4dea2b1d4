"""The pre-transaction gate every package-manager hook goes through.

``run_gate`` judges a transaction, applies the policy and the admin's one-shot overrides,
refuses kernels pinned after a failed post-install check (and first lifts kzguard's pins on
kernels now judged safe against the ZFS the transaction leaves), snapshots the boot
environment before a kernel or ZFS change, and records what it decided.
``hook_main`` wraps it for a hook process: it prints the decision for the admin, maps it to
the manager's way of saying no (an exit code), and applies ``on_error`` when kzguard itself
fails.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping

from kzguard.base import journal
from kzguard.base.record import Record
from kzguard.base.transaction import Transaction
from kzguard.judge.decision import ALLOW, BLOCK, HOLD, WARN, Decision
from kzguard.root import Root, Runner

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Callable, Optional, TextIO

    from kzguard.actions.pin import Lifted
    from kzguard.actions.state import State
    from kzguard.base.deadline import Overall
    from kzguard.config import Config
    from kzguard.facts.host import Host
    from kzguard.guard.inflight import Process

ALLOW_ENV = "KZGUARD_ALLOW"
EXIT_REFUSE = 1


class HookInput(Record):
    """What an adapter read from its manager: the transaction and the root it works on."""

    transaction: Transaction
    root: Optional[str] = None
    command: str = ""
    # the manager runs ``kzguard hook post-transaction`` (or the like) on this root at the end,
    # so a transaction that goes ahead is recorded and the post-install hooks inside it only
    # queue their kernels (kzguard.guard.inflight)
    final_check: bool = False


def allowed_from_env(env: Mapping[str, str]) -> set[str]:
    """Kernel releases named in ``KZGUARD_ALLOW`` (comma or space separated)."""
    return {word for word in re.split(r"[\s,]+", env.get(ALLOW_ENV, "")) if word}


def run_gate(
    root: Root,
    transaction: Transaction,
    *,
    config_path: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    runner: Optional[Runner] = None,
    command: str = "",
    in_flight: Optional[Process] = None,
    token: Optional[str] = None,
    lifted_into: Optional[list[str]] = None,
) -> Decision:
    """Judge ``transaction`` on ``root`` and decide; snapshot first when it goes ahead.

    With ``in_flight`` (the manager's process, whose end hook runs the final post-install
    check) a transaction that goes ahead is recorded in the state file, in the same write.
    ``lifted_into`` receives the kernels whose pins were lifted (the dnf plugin records them
    at ``pre_transaction``, for the end hook to check again).
    """
    from kzguard.actions import state
    from kzguard.config import load_config
    from kzguard.facts.host import gather_for
    from kzguard.judge.decision import decide
    from kzguard.judge.policy import judge

    runner = runner or Runner()
    env = os.environ if env is None else env
    config = load_config(root, config_path)
    if runner.overall is not None:  # the hook's deadline, as the configuration sets it
        runner.overall.rearm(config.hook_timeout)
    host = gather_for(root, config)
    report = judge(host, config.zfs_ranges, transaction=transaction, ranges_origin=config.source)
    lifted = _lift_pins(root, runner, host, config, transaction)
    if lifted_into is not None:
        lifted_into.extend(lifted.releases)
    from_env = allowed_from_env(env)
    with state.locked(root, dry_run=runner.dry_run) as st:
        stored = set(st.data["allow"])
        decision = decide(
            report,
            on_unsupported=config.on_unsupported_kernel,
            on_unknown=config.on_unknown,
            allowed=from_env | stored,
            command=command,
            pinned={r: why for r, why in _pinned(st.data).items() if r not in lifted.releases},
        )
        if lifted.lines:
            decision = decision._replace(lines=(*lifted.lines, *decision.lines))
        if transaction.zfs_sources or transaction.notes:
            decision = decision._replace(lines=(*_zfs_lines(transaction), *decision.lines))
        for release in decision.allowed:
            how = ALLOW_ENV if release in from_env else "kzguard allow"
            if release not in from_env:
                del st.data["allow"][release]
            journal.event(
                "override-used",
                f"{release} let through {transaction.manager} by {how}",
                priority=journal.WARNING,
                shown=True,
                kernel=release,
                manager=transaction.manager,
            )
        if decision.action in (ALLOW, WARN) and config.snapshots.enabled:  # it goes ahead
            decision = _snapshot(root, runner, config, transaction, decision, st)
        _record(st, transaction, decision)
        if in_flight is not None and decision.action in (ALLOW, WARN):
            from kzguard.guard import inflight

            inflight.begin(
                st.data,
                transaction.manager,
                in_flight,
                kernels=transaction.install,
                zfs=transaction.touches_zfs,
                token=token,
                lifted=lifted.releases,
            )
        st.save()
    if not runner.dry_run:  # the service re-checks now rather than at its next look
        from kzguard.service.notify import notify_change

        notify_change("transaction", root=root.top, manager=transaction.manager)
    return decision


def recheck(
    root: Root,
    transaction: Transaction,
    *,
    config_path: Optional[str] = None,
    allowed: frozenset[str] = frozenset(),
    env: Optional[Mapping[str, str]] = None,
    command: str = "",
) -> Decision:
    """Judge ``transaction`` again and decide, changing nothing (no snapshot, no record, no
    override used up): the dnf plugin's second look at ``pre_transaction``, once the package
    files are downloaded and their META can be read. ``allowed`` are the kernels the first
    decision let through by an admin's override."""
    from kzguard.actions import state
    from kzguard.config import load_config
    from kzguard.facts.host import gather_for
    from kzguard.judge.decision import decide
    from kzguard.judge.policy import judge

    env = os.environ if env is None else env
    config = load_config(root, config_path)
    host = gather_for(root, config)
    report = judge(host, config.zfs_ranges, transaction=transaction, ranges_origin=config.source)
    data = state.read(root)
    decision = decide(
        report,
        on_unsupported=config.on_unsupported_kernel,
        on_unknown=config.on_unknown,
        allowed=set(allowed) | allowed_from_env(env) | set(data["allow"]),
        command=command,
        pinned=_pinned(data),
    )
    return decision._replace(lines=(*_zfs_lines(transaction), *decision.lines))


def _lift_pins(
    root: Root, runner: Runner, host: Host, config: Config, transaction: Transaction
) -> Lifted:
    """Lift kzguard's pins on kernels now safe with the ZFS the transaction leaves (one
    ``stat`` when nothing is pinned)."""
    from kzguard.actions import pin, state

    if not state.read(root)["pins"]:  # read() is empty for a missing, corrupt or looping file
        return pin.Lifted()
    return pin.lift_safe(root, runner, host, config, transaction=transaction)


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
    root: Root,
    runner: Runner,
    config: Config,
    transaction: Transaction,
    decision: Decision,
    st: State,
) -> Decision:
    from kzguard.actions import snapshot

    kernels = [*transaction.install, *transaction.remove]
    what = kernels[0] if kernels else "zfs"
    result = snapshot.take(
        root,
        runner,
        dataset=config.snapshots.dataset,
        keep=config.snapshots.keep,
        manager=transaction.manager,
        kernels=kernels,
        reason=f"{transaction.manager}-{what}",
    )
    decision = decision.with_line(f"kzguard: {result.message}")
    if result.status == snapshot.TAKEN and not runner.dry_run:
        st.data.setdefault("counters", {})["snapshot_last_success"] = time.time()
    if result.failed and config.snapshots.required:
        return decision.with_block(
            "kzguard: refusing the transaction: the snapshot failed and snapshots.required is true"
        )
    return decision


_EVENT_KINDS = {BLOCK: "transaction-blocked", HOLD: "transaction-held", WARN: "transaction-warned"}


def _record(st: State, transaction: Transaction, decision: Decision) -> None:
    kind = _EVENT_KINDS.get(decision.action)
    if kind is None:
        return
    kernels = [*decision.blocked, *decision.held, *decision.warned]
    message = f"{transaction.manager}: {decision.action} {', '.join(kernels) or 'transaction'}"
    st.event(kind, message, manager=transaction.manager, kernels=kernels)
    if decision.action == BLOCK:
        from kzguard.actions import state

        state.count_blocked(st.data, transaction.manager)
    priority = journal.WARNING if decision.action == WARN else journal.ERROR
    journal.event(
        kind, message, priority=priority, shown=True, manager=transaction.manager, kernel=kernels
    )


def hook_main(
    manager: str,
    read: Callable[[TextIO], HookInput],
    *,
    stdin: TextIO,
    root_option: Optional[str] = None,
    config_path: Optional[str] = None,
    dry_run: bool = False,
    on_hold: Optional[Callable[[Root, Runner, Decision, Transaction], list[str]]] = None,
    maintain: Optional[Callable[[str, Runner, HookInput, Optional[str]], list[str]]] = None,
) -> int:
    """Run the gate for one hook invocation; return the exit code the manager acts on.

    ``maintain`` (the adapter's upkeep, e.g. lifting holds that are no longer needed) runs on
    every invocation, before a transaction without kernels or ZFS ends the hook, so it must
    return at once when it has nothing to do; its lines are shown to the admin.
    """
    from kzguard.base.deadline import overall

    root_path = root_option or "/"
    try:
        with overall() as limit:
            return _hook(
                manager, read, stdin, root_option, config_path, dry_run, on_hold, maintain, limit
            )
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        return _on_error(manager, exc, root_path, config_path)


def _hook(
    manager: str,
    read: Callable[[TextIO], HookInput],
    stdin: TextIO,
    root_option: Optional[str],
    config_path: Optional[str],
    dry_run: bool,
    on_hold: Optional[Callable[[Root, Runner, Decision, Transaction], list[str]]],
    maintain: Optional[Callable[[str, Runner, HookInput, Optional[str]], list[str]]],
    limit: Overall,
) -> int:
    """:func:`hook_main` inside its overall deadline."""
    root_path = root_option or "/"
    try:
        hook_input = read(stdin)
        root_path = root_option or hook_input.root or "/"
        runner = Runner(dry_run=dry_run, overall=limit)
        upkeep = maintain(root_path, runner, hook_input, config_path) if maintain else []
        for line in upkeep:
            print(line, file=sys.stderr)
        if not hook_input.transaction.relevant:
            return 0
        root = Root.open(root_path)
        in_flight = None
        if hook_input.final_check:
            from kzguard.guard.inflight import manager_process

            in_flight = manager_process()
        decision = run_gate(
            root,
            hook_input.transaction,
            config_path=config_path,
            runner=runner,
            command=hook_input.command,
            in_flight=in_flight,
        )
        if decision.action == HOLD and on_hold is not None:
            decision = decision._replace(
                lines=(*decision.lines, *on_hold(root, runner, decision, hook_input.transaction))
            )
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        return _on_error(manager, exc, root_path, config_path)
    for line in decision.lines:
        print(line, file=sys.stderr)
    return EXIT_REFUSE if decision.action in (BLOCK, HOLD) else 0


def _on_error(manager: str, exc: Exception, root_path: str, config_path: Optional[str]) -> int:
    refuse, message = error_outcome(manager, exc, root_path, config_path)
    print(f"kzguard: {message}", file=sys.stderr)
    return EXIT_REFUSE if refuse else 0


def error_outcome(
    manager: str,
    exc: Exception,
    root_path: str,
    config_path: Optional[str],
    *,
    outcomes: tuple[str, str] = ("refusing the transaction", "letting the transaction through"),
    kernel: Optional[str] = None,
) -> tuple[bool, str]:
    """Apply ``on_error`` to a failure of kzguard inside a hook: whether to refuse the
    transaction, and the message saying so (also sent to the journal). When the configuration
    cannot be read, ``on_error`` is its default, ``block``. For hooks that run in-process (the
    dnf plugin) as well as for :func:`hook_main`; ``outcomes`` says what ``block`` and
    ``allow`` do in the caller's words."""
    policy, source = "block", "the default, as the configuration could not be read"
    try:
        from kzguard.config import load_config

        policy = load_config(Root(root_path), config_path).on_error
        source = "on_error"
    except Exception:  # noqa: BLE001 - keep the default
        pass
    outcome = outcomes[0] if policy == "block" else outcomes[1]
    message = (
        f"kzguard failed inside the {manager} hook ({type(exc).__name__}: {exc}); "
        f"{outcome} ({source} = {policy})"
    )
    journal.event(
        "hook-error", message, priority=journal.ERROR, shown=True, manager=manager, kernel=kernel
    )
    return policy == "block", message
