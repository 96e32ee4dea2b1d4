"""Running the real tools from tests: argv lists, LC_ALL=C, failures that show their output."""

from __future__ import annotations

import os
import subprocess


def run(*argv: object, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a real command; with ``check`` a failure is an AssertionError with its output."""
    env = {**os.environ, "LC_ALL": "C", **kwargs.pop("env", {})}
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc
