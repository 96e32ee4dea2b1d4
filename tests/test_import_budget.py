"""The import budget of the hooks that run in every transaction.

apt runs ``kzguard hook apt`` before and ``kzguard hook post-transaction apt`` after every dpkg
run, most of them without a kernel or ZFS package. Each module costs a hook start-up time
(``re`` with ``enum`` 5 ms, ``typing`` 2 ms, ``pathlib`` 5 ms, each small kzguard module about
0.1 ms: bench/hook_overhead.py), so these runs may load exactly the modules listed here and the
ones ``site`` loads anyway. A module added to the list is a decision, made here.

The interpreter runs with ``-S`` (the development venv's editable-install finder would load
``re`` and ``enum`` itself); what ``site`` imports is measured and allowed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent

APT_STREAM = (
    "VERSION 3\nAPT::Architecture=amd64\nDir=/\nCommandLine::AsString=apt-get%20install%20nano\n\n"
    "nano 7.2-1 amd64 same < 7.2-1+deb12u1 amd64 same /var/cache/apt/archives/nano.deb\n"
)
ENTRY = ("kzguard", "kzguard.base", "kzguard.base.errors", "kzguard.cli", "kzguard.cli.hook")
ROOT = ("kzguard.context", "kzguard.root", "kzguard.managers")
BUDGETS = {
    "hook apt": (
        *ENTRY,
        *ROOT,
        "kzguard.base.deadline",
        "kzguard.base.record",
        "kzguard.base.transaction",
        "kzguard.guard",
        "kzguard.guard.hook_process",
        "kzguard.managers.apt",
        "kzguard.managers.base",
    ),
    "hook post-transaction apt": (*ENTRY, *ROOT, "kzguard.guard", "kzguard.guard.end_check"),
}
NEVER = {"re", "enum", "typing", "pathlib", "json", "argparse", "__future__", "functools"}

PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
from kzguard.cli import main
rc = main(sys.argv[2:])
print(rc, " ".join(sorted(set(sys.modules) - before)))
"""


def _site_modules() -> set[str]:
    code = "import sys; b = set(sys.modules); import site; print(' '.join(set(sys.modules) - b))"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split()) | {"site"}


@pytest.mark.parametrize("command", sorted(BUDGETS))
def test_a_run_with_nothing_to_do_loads_only_its_budget(command, tmp_path):
    argv = [sys.executable, "-S", "-c", PROBE, str(TOP), "--root", str(tmp_path), *command.split()]
    proc = subprocess.run(argv, input=APT_STREAM, capture_output=True, text=True, check=False)
    assert proc.stderr == ""
    rc, _, loaded = proc.stdout.strip().partition(" ")
    assert rc == "0"
    modules = set(loaded.split())
    assert modules & NEVER == set()
    assert modules - _site_modules() == set(BUDGETS[command])


def test_the_probe_sees_a_heavy_import(tmp_path):
    """The probe is not blind: a kernel in the stream loads the facts, and re with them."""
    stream = APT_STREAM + (
        "linux-image-6.12.9-amd64 - - none < 6.12.9-1 amd64 same /var/cache/apt/archives/l.deb\n"
    )
    argv = [sys.executable, "-S", "-c", PROBE, str(TOP), "--root", str(tmp_path), "hook", "apt"]
    proc = subprocess.run(argv, input=stream, capture_output=True, text=True, check=False)
    modules = set(proc.stdout.strip().partition(" ")[2].split())
    assert "re" in modules
    assert "kzguard.managers.apt" in modules
