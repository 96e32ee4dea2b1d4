"""One run's context (kzguard/context.py): what it reads it reads once, until told to forget."""

from __future__ import annotations

import argparse

import pytest

from kzguard.actions import state
from kzguard.base.deadline import Overall
from kzguard.base.errors import UsageError
from kzguard.context import Context
from tests import scenarios


def test_configuration_host_and_state_are_read_once(tmp_path):
    scenarios.fedora_dkms(tmp_path)
    ctx = Context.open(str(tmp_path))
    config, host, data = ctx.config, ctx.host, ctx.state
    (tmp_path / "etc/kzguard").mkdir(parents=True, exist_ok=True)
    (tmp_path / "etc/kzguard/kzguard.yaml").write_text("on_unsupported_kernel: warn\n")
    with state.locked(ctx.root) as st:
        st.data["allow"]["6.13.2-200.fc41.x86_64"] = {"time": "t", "by": "t"}
        st.save()
    assert ctx.config is config and ctx.host is host and ctx.state is data
    assert config.on_unsupported_kernel == "block"
    ctx.refresh()  # an action changed the host: facts and state are read again
    assert ctx.host is not host and "6.13.2-200.fc41.x86_64" in ctx.state["allow"]
    assert ctx.config is config  # the configuration stays the run's


def test_moving_to_another_root_forgets_what_was_read(tmp_path):
    scenarios.fedora_dkms(tmp_path / "a")
    scenarios.debian_dkms(tmp_path / "b")
    ctx = Context.open(str(tmp_path / "a"), must_exist=False)
    assert ctx.host.family == "fedora"
    ctx.move_to(str(tmp_path / "b"))
    assert ctx.host.family == "debian"


def test_a_missing_root_is_a_usage_error_when_it_must_exist(tmp_path):
    with pytest.raises(UsageError, match="is not a directory"):
        Context.open(str(tmp_path / "missing"))
    ctx = Context.open(str(tmp_path / "missing"), must_exist=False)  # a hook's upkeep first
    with pytest.raises(UsageError):
        ctx.require_root()


def test_a_command_context_carries_its_global_options(tmp_path):
    options = argparse.Namespace(root=str(tmp_path), dry_run=True, config="/etc/x.yaml")
    ctx = Context.of_command(options)
    assert (ctx.root.top, ctx.dry_run, ctx.config_path) == (str(tmp_path), True, "/etc/x.yaml")
    assert ctx.runner.dry_run


def test_the_configuration_rearms_the_hook_deadline(tmp_path):
    (tmp_path / "etc/kzguard").mkdir(parents=True)
    (tmp_path / "etc/kzguard/kzguard.yaml").write_text("hook_timeout: 7\n")
    limit = Overall(30)
    ctx = Context.open(str(tmp_path), overall=limit)
    assert limit.seconds == 30
    ctx.config  # noqa: B018 - reading it is the point
    assert limit.seconds == 7
