"""One hook invocation, as a process the package manager runs: the adapter reads the manager's
protocol, a transaction without kernels or ZFS ends there (no facts, policy or configuration
are loaded for it), any other goes through :func:`kzguard.guard.gate.run_gate`. The decision is
printed for the admin and mapped to the manager's way of saying no (an exit code), and
``on_error`` applies when kzguard itself fails (:func:`error_outcome`, also for the hooks that
run inside the manager's own Python).
"""

import sys

from kzguard.base.errors import EXIT_SAFE, EXIT_UNSAFE

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Callable, Optional, TextIO

    from kzguard.base.transaction import Transaction
    from kzguard.context import Context
    from kzguard.judge.decision import Decision
    from kzguard.managers.base import HookInput


def hook_main(
    manager: str,
    read: "Callable[[TextIO, Context], HookInput]",
    *,
    stdin: "TextIO",
    root_option: "Optional[str]" = None,
    config_path: "Optional[str]" = None,
    dry_run: bool = False,
    on_hold: "Optional[Callable[[Context, Decision, Transaction], list[str]]]" = None,
    maintain: "Optional[Callable[[Context, HookInput], list[str]]]" = None,
    env: "Optional[Mapping[str, str]]" = None,
) -> int:
    """Run the gate for one hook invocation; return the exit code the manager acts on.

    ``maintain`` (the adapter's upkeep, e.g. lifting holds that are no longer needed) runs on
    every invocation, before a transaction without kernels or ZFS ends the hook, so it must
    return at once when it has nothing to do; its lines are shown to the admin.
    """
    from kzguard.base.deadline import overall
    from kzguard.context import Context

    root_path = root_option or "/"
    try:
        with overall() as limit:
            ctx = Context.open(
                root_path,
                dry_run=dry_run,
                config_path=config_path,
                overall=limit,
                env=env,
                must_exist=False,
            )
            return _hook(manager, ctx, read, stdin, bool(root_option), on_hold, maintain)
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        return _on_error(manager, exc, root_path, config_path)


def _hook(
    manager: str,
    ctx: "Context",
    read: "Callable[[TextIO, Context], HookInput]",
    stdin: "TextIO",
    root_given: bool,
    on_hold: "Optional[Callable[[Context, Decision, Transaction], list[str]]]",
    maintain: "Optional[Callable[[Context, HookInput], list[str]]]",
) -> int:
    """:func:`hook_main` inside its overall deadline, on the hook's one context."""
    try:
        hook_input = read(stdin, ctx)
        if not root_given and hook_input.root:  # the root the manager works on
            ctx.move_to(hook_input.root)
        for line in maintain(ctx, hook_input) if maintain else []:
            print(line, file=sys.stderr)
        if not hook_input.transaction.relevant:
            return EXIT_SAFE
        ctx.require_root()  # a missing root is an error from here on
        in_flight = None
        if hook_input.final_check:
            from kzguard.guard.inflight import manager_process

            in_flight = manager_process()
        from kzguard.guard.gate import run_gate
        from kzguard.judge.decision import BLOCK, HOLD

        decision = run_gate(
            ctx, hook_input.transaction, command=hook_input.command, in_flight=in_flight
        )
        if decision.action == HOLD and on_hold is not None:
            held = on_hold(ctx, decision, hook_input.transaction)
            decision = decision._replace(lines=(*decision.lines, *held))
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        return _on_error(manager, exc, ctx.root.top, ctx.config_path)
    for line in decision.lines:
        print(line, file=sys.stderr)
    return EXIT_UNSAFE if decision.action in (BLOCK, HOLD) else EXIT_SAFE


def _on_error(manager: str, exc: Exception, root_path: str, config_path: "Optional[str]") -> int:
    refuse, message = error_outcome(manager, exc, root_path, config_path)
    print(f"kzguard: {message}", file=sys.stderr)
    return EXIT_UNSAFE if refuse else EXIT_SAFE


def error_outcome(
    manager: str,
    exc: Exception,
    root_path: str,
    config_path: "Optional[str]",
    *,
    outcomes: tuple[str, str] = ("refusing the transaction", "letting the transaction through"),
    kernel: "Optional[str]" = None,
) -> tuple[bool, str]:
    """Apply ``on_error`` to a failure of kzguard inside a hook: whether to refuse the
    transaction, and the message saying so (also sent to the journal). When the configuration
    cannot be read, ``on_error`` is its default, ``block``. For hooks that run in-process (the
    dnf plugin) as well as for :func:`hook_main`; ``outcomes`` says what ``block`` and
    ``allow`` do in the caller's words."""
    policy, source = "block", "the default, as the configuration could not be read"
    try:
        from kzguard.context import Context

        policy = Context.open(root_path, config_path=config_path, must_exist=False).config.on_error
        source = "on_error"
    except Exception:  # noqa: BLE001 - keep the default
        pass
    outcome = outcomes[0] if policy == "block" else outcomes[1]
    message = (
        f"kzguard failed inside the {manager} hook ({type(exc).__name__}: {exc}); "
        f"{outcome} ({source} = {policy})"
    )
    from kzguard.base import journal

    journal.event(
        "hook-error", message, priority=journal.ERROR, shown=True, manager=manager, kernel=kernel
    )
    return policy == "block", message
