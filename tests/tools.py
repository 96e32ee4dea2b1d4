"""Running the real tools from tests: argv lists, LC_ALL=C, failures that show their output."""

from __future__ import annotations

import os
import subprocess

import pytest

from devtools import trust
from devtools.kobuild import ToolchainError


def run(*argv: object, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a real command; with ``check`` a failure is an AssertionError with its output."""
    env = {**os.environ, "LC_ALL": "C", **kwargs.pop("env", {})}
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def need(*tools: str) -> None:
    """Skip the calling test when a real tool is missing (``sign-file`` included).

    CI (``KZGUARD_REQUIRE_REAL=1``) turns the skip of a ``real`` test into a failure.
    """
    for name in tools:
        try:
            trust.tool(name)
        except ToolchainError as exc:
            pytest.skip(f"{exc} (scripts/setup-dev installs it)")


def alpm_sections(path) -> list[tuple[str, list[tuple[str, str]]]]:
    """An alpm hook file as libalpm reads it: sections of (key, value); keys may repeat."""
    from pathlib import Path

    sections: list[tuple[str, list[tuple[str, str]]]] = []
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            sections.append((line.strip("[]"), []))
        else:
            key, _, value = line.partition("=")
            sections[-1][1].append((key.strip(), value.strip()))
    return sections
