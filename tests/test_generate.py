"""What the generator makes (kzguard/cli/generate.py) is what is committed: man pages, completions
and the hook files' package lists; real tools accept them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kzguard.cli import generate as manpages

TOP = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rel", sorted(manpages.OUTPUTS))
def test_committed_file_is_current(rel: str) -> None:
    committed = (TOP / rel).read_text(encoding="utf-8")
    assert committed == manpages.OUTPUTS[rel](), (
        f"{rel} is stale: run python -m kzguard.cli.generate"
    )


def test_every_command_and_key_is_documented() -> None:
    from kzguard.config import SCHEMA

    page8 = manpages.render_kzguard8()
    for name in ("status", "check", "doctor", "hook", "allow", "snapshot", "daemon"):
        assert f".SS {name}\n" in page8
    assert ".SS pin add\n" in page8 and ".SS boot keep\n" in page8
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "EXIT STATUS", "FILES", "SEE ALSO"):
        assert f".SH {section}\n" in page8
    assert "/etc/kzguard/kzguard.yaml" in page8 and "/var/lib/kzguard/state.json" in page8
    assert "05\\-kzguard\\-pre.hook" in page8 and "80kzguard" in page8
    page5 = manpages.render_kzguard_yaml5()
    for setting in SCHEMA:
        assert f"\\fB{manpages._esc(setting.name)}\\fR" in page5


@pytest.mark.parametrize("page", ["man/kzguard.8", "man/kzguard.yaml.5"])
def test_groff_renders_without_warnings(page: str) -> None:
    if not shutil.which("groff"):
        pytest.skip("groff is not installed")
    done = subprocess.run(
        ["groff", "-ww", "-man", "-Tutf8", str(TOP / page)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    text = re.sub(".\b", "", done.stdout)  # grotty's overstriking for bold and underline
    assert "SEE ALSO" in text


def test_bash_completion_parses() -> None:
    subprocess.run(["bash", "-n", str(TOP / "completions/kzguard.bash")], check=True)


def test_zsh_completion_parses() -> None:
    if not shutil.which("zsh"):
        pytest.skip("zsh is not installed")
    subprocess.run(["zsh", "-n", str(TOP / "completions/_kzguard")], check=True)


def _complete(*words: str) -> list[str]:
    script = (
        f"source {TOP / 'completions/kzguard.bash'}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _kzguard\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script, "bash", *words],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def test_bash_completes_commands_and_options() -> None:
    assert _complete("kzguard", "ch") == ["check"]
    assert _complete("kzguard", "pin", "a") == ["add"]
    assert "--kernel" in _complete("kzguard", "--json", "check", "--")
    assert _complete("kzguard", "--root", "/tmp", "boot", "k") == ["keep"]
