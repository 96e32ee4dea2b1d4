"""Package-manager adapters: each turns its manager's protocol into a Transaction.

An adapter module ``kzguard.managers.<name>`` (``kzguard hook <name>`` imports it) provides:

- ``read(stdin: TextIO) -> kzguard.guard.gate.HookInput``: the transaction (kernel releases
  installed and removed, ZFS packages touched and the ZFS version after it), the root the
  manager works on when its protocol says so, and the command to suggest re-running. It must
  be fast and import little: a transaction without kernels or ZFS ends right there.
- optionally ``hold(root, runner, decision, transaction) -> list[str]``: what to do when the
  policy is ``hold`` and the manager can only hold back a kernel for the *next* run (an APT
  preferences pin, a dnf5 versionlock condition); returns lines for the admin.
- optionally ``maintain(root_path, runner, hook_input, config_path) -> list[str]``: upkeep on
  every run, before a transaction without kernels or ZFS ends it (lifting holds no longer
  needed); it must return at once when there is nothing to do (apt: one ``stat``).

The dnf4 plugin (``hooks/dnf/kzguard.py``) calls :mod:`kzguard.managers.dnf` in-process instead.
"""
