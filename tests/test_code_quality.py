"""Checks that prove code standards: ruff clean, and Python 3.9 for what package managers import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run scripts/setup-dev")
    return found


def test_ruff_is_clean():
    paths = [str(TOP / p) for p in ("kzguard", "devtools", "tests", "bench", "examples")]
    paths = [p for p in paths if Path(p).exists()]
    result = subprocess.run([_tool("ruff"), "check", *paths], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(
        [_tool("ruff"), "format", "--check", *paths], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_library_runs_on_python_39():
    """vermin finds every construct that needs a newer Python than EL9's 3.9."""
    result = subprocess.run(
        [
            _tool("vermin"),
            "--target=3.9-",
            "--violations",
            "--eval-annotations",
            "--no-tips",
            str(TOP / "kzguard"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_importing_the_cli_loads_no_heavy_modules():
    """The package manager's path stays lazy: parsing arguments imports no parser libraries."""
    code = (
        "import sys, kzguard.cli; kzguard.cli.build_parser();"
        "heavy = {'yaml', 'elftools', 'packaging', 'zstandard', 'dataclasses', 'logging',"
        " 'subprocess', 'kzguard.facts.host'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
