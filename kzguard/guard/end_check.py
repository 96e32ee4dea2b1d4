"""``kzguard hook post-transaction MANAGER``: the end-of-transaction check, which apt runs after
every dpkg run. Most runs have nothing recorded, so this looks at the state file's text first
and returns without loading the post-install check (:mod:`kzguard.guard.postinstall`), JSON or
the state module.
"""

import sys

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Optional, TextIO

    from kzguard.root import Root

STATE_FILE = "/var/lib/kzguard/state.json"  # kzguard.actions.state.STATE_FILE, not imported for it


def finish_main(
    manager: str,
    *,
    root_option: "Optional[str]" = None,
    config_path: "Optional[str]" = None,
    dry_run: bool = False,
    out: "Optional[TextIO]" = None,
    env: "Optional[Mapping[str, str]]" = None,
) -> int:
    """``kzguard hook post-transaction MANAGER``: the final check of the transaction this end
    hook closes (recorded by ``MANAGER``, whose process is this hook's ancestor or whose token
    is in its environment), or of a stale one. Returns at once when nothing is recorded."""
    from kzguard.context import Context

    out = out or sys.stderr
    root_path = root_option or "/"
    try:
        ctx = Context.open(
            root_path, dry_run=dry_run, config_path=config_path, env=env, must_exist=False
        )
        if not _may_hold_a_record(ctx.root):
            return 0  # the usual apt run: one read, no JSON, no state module
        from kzguard.actions import state
        from kzguard.guard import inflight

        record = inflight.record_of(state.read(ctx.root))
        if record is None:
            return 0
        ours = inflight.is_end_of(record, manager, env)
        if not ours and inflight.inside(record, env) != inflight.STALE:
            return 0  # another run's transaction, still going
        ctx.require_root()
        ctx.config  # noqa: B018 - a configuration that does not load meets on_error here
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        from kzguard.guard.postinstall import _on_error

        return _on_error(exc, root_path, config_path, None, out)
    from kzguard.guard.postinstall import finish

    return finish(ctx, record, out, ended=ours)


def _may_hold_a_record(root: "Root") -> bool:
    """Whether the state file may hold a transaction record (its key is in the text)."""
    from kzguard.base.errors import FactError

    try:
        return b'"transaction"' in root.read_bytes(STATE_FILE)  # a FIFO is refused, not waited on
    except FactError:
        return False
