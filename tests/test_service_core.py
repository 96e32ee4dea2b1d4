"""The service core: judgements, change listeners, reload, counters; no bus, no daemon."""

from __future__ import annotations

import pytest

from kzguard.base.transaction import Transaction
from kzguard.context import Context
from kzguard.guard.gate import run_gate
from kzguard.root import Root, Runner
from kzguard.service.core import Core
from tests import scenarios as sc

pytestmark = pytest.mark.real  # gcc-built modules in the root trees


def test_check_and_listeners(tmp_path):
    tree = sc.fedora_dkms(tmp_path)
    core = Core(Root(tmp_path), runner=Runner())
    seen = []
    core.add_listener(lambda old, new: seen.append((old, new)))
    first = core.check()
    assert set(first.verdicts().values()) == {"safe"} and len(seen) == 1
    core.check()
    assert len(seen) == 1  # nothing changed: no call
    tree.kernel(sc.FEDORA_NEW)  # installed, no module: a verdict appears
    new = core.check()
    assert new.verdicts()[sc.FEDORA_NEW] == "unsafe" and len(seen) == 2


def test_reload_keeps_the_old_config_when_the_new_is_bad(tmp_path):
    tree = sc.fedora_dkms(tmp_path)
    tree.config("on_unsupported_kernel: hold\n")
    core = Core(Root(tmp_path), runner=Runner())
    tree.config("on_unsupported_kernel: sometimes\n")
    message = core.reload()
    assert message and "on_unsupported_kernel" in message
    assert core.config.on_unsupported_kernel == "hold"
    tree.config("on_unsupported_kernel: warn\n")
    assert core.reload() is None and core.config.on_unsupported_kernel == "warn"


def test_counters_come_from_the_state_file(tmp_path, fake_zfs):
    sc.fedora_dkms(tmp_path)
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mounts").write_text("rpool/ROOT/fedora / zfs rw 0 0\n")
    root = Root(tmp_path)
    run_gate(Context(root, Runner(), env={}), Transaction("dnf", install=(sc.FEDORA_NEW,)))
    run_gate(Context(root, Runner(), env={}), Transaction("apt", install=(sc.FEDORA_NEW,)))
    run_gate(
        Context(root, Runner(), env={}), Transaction("dnf", install=("6.12.11-200.fc41.x86_64",))
    )
    snapshot = Core(root, runner=Runner()).check()
    assert snapshot.blocked == {"dnf": 1, "apt": 1}
    assert snapshot.snapshot_success is not None
