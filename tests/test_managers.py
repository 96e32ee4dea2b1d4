"""The managers' registry and their one interface (kzguard/managers/__init__.py, base.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devtools.hostbuilder import HostTree
from kzguard import managers
from kzguard.managers.base import Manager
from kzguard.root import Root

TOP = Path(__file__).resolve().parents[1]


def test_every_registered_name_is_an_adapter_module_of_that_name():
    modules = {p.stem for p in (TOP / "kzguard/managers").glob("*.py")} - {
        "__init__",
        "base",
        "hookfiles",
    }
    assert set(managers.NAMES) == modules
    for name in managers.NAMES:
        adapter = managers.get(name)
        assert isinstance(adapter, Manager) and adapter.name == name


def test_an_unknown_manager_is_a_key_error():
    with pytest.raises(KeyError):
        managers.get("zypper")


def test_the_stdin_hooks_are_the_adapters_that_read_a_protocol():
    for name in managers.NAMES:
        reads = type(managers.get(name)).read is not Manager.read
        assert reads == (name in managers.STDIN_HOOKS), name


def test_pending_kernels_are_read_for_every_manager_with_caches():
    readers = {m.name: m.pending_facts for m in managers.every() if m.pending_facts}
    assert readers == {
        "dnf": "kzguard.facts.pending_dnf",
        "apt": "kzguard.facts.pending_apt",
        "pacman": "kzguard.facts.pending_pacman",
    }


@pytest.mark.parametrize(
    ("paths", "found"),
    [
        (["/var/lib/dpkg/status"], ["apt"]),
        (["/var/lib/rpm/rpmdb.sqlite"], ["dnf"]),
        (["/usr/lib/sysimage/rpm/rpmdb.sqlite", "/usr/bin/dnf5"], ["dnf", "dnf5"]),
        (["/var/lib/pacman/local/ALPM_DB_VERSION"], ["pacman"]),
        ([], []),
    ],
)
def test_managers_are_found_by_their_databases(tmp_path, paths, found):
    tree = HostTree(tmp_path)
    for inner in paths:
        tree.write(inner, "")
    assert [m.name for m in managers.on(Root(tmp_path))] == found


def test_the_apt_hook_loads_the_apt_adapter_and_no_other():
    code = (
        "import io, sys; from kzguard import cli;"
        "sys.stdin = io.TextIOWrapper(io.BytesIO(b'VERSION 3\\nDir=/\\n\\n'));"
        "rc = cli.main(['hook', 'apt']);"
        "print(rc, sorted(m for m in sys.modules if m.startswith('kzguard.managers.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(None, 1) == ["0", "['kzguard.managers.apt', 'kzguard.managers.base']\n"]
