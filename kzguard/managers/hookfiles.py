"""The package lists in the hook files each manager loads, generated from its adapter's
``guarded`` names (``python -m kzguard.cli.generate`` rewrites them; a test fails on drift).

Only the lists are generated; the rest of each file is written by hand:

- dnf5 actions files: each run of consecutive action lines that differ only in their package
  glob becomes one line per glob in :attr:`kzguard.managers.dnf5.Dnf5.guarded`;
- alpm hooks: the ``Target`` lines of a ``Type = Package`` trigger are
  :attr:`kzguard.managers.pacman.Pacman.guarded`;
- the dnf4 plugin: its ``_GUARDED_PREFIXES`` (what it refuses when kzguard cannot be
  imported) are :attr:`kzguard.managers.dnf.Dnf.guarded` without their ``*``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kzguard import managers

_ACTION = re.compile(r"(?P<hook>[a-z_]+):(?P<glob>[^:\s]+):(?P<rest>.*)\Z")
_PREFIXES = re.compile(r"^_GUARDED_PREFIXES = \(.*\)$", re.M)


def dnf5_actions(text: str, globs: Sequence[str]) -> str:
    """``text`` with each run of glob lines (same hook, same command) one line per glob."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        match = _ACTION.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        j = i + 1
        while j < len(lines):
            other = _ACTION.match(lines[j])
            if other is None or (other["hook"], other["rest"]) != (match["hook"], match["rest"]):
                break
            j += 1
        out += [f"{match['hook']}:{glob}:{match['rest']}" for glob in globs]
        i = j
    return "\n".join(out)


def alpm_hook(text: str, targets: Sequence[str]) -> str:
    """``text`` with the ``Target`` lines of its ``Type = Package`` trigger set to
    ``targets`` (written where the first one was)."""
    sections = re.split(r"(?m)^(?=\[)", text)
    for n, section in enumerate(sections):
        if not section.startswith("[Trigger]") or not re.search(
            r"(?m)^Type\s*=\s*Package\s*$", section
        ):
            continue
        kept: list[str] = []
        placed = False
        for line in section.split("\n"):
            if re.match(r"Target\s*=", line):
                if not placed:
                    kept += [f"Target = {target}" for target in targets]
                    placed = True
                continue
            kept.append(line)
        sections[n] = "\n".join(kept)
    return "".join(sections)


def dnf_plugin(text: str, globs: Sequence[str]) -> str:
    prefixes = ", ".join(f'"{g.rstrip("*")}"' for g in globs)
    return _PREFIXES.sub(f"_GUARDED_PREFIXES = ({prefixes})", text, count=1)


def render(rel: str, text: str) -> str:
    """The hook file ``rel`` (a path in the source tree) with its lists regenerated."""
    if rel.startswith("hooks/dnf5/"):
        return dnf5_actions(text, managers.get("dnf5").guarded)
    if rel.startswith("hooks/pacman/"):
        return alpm_hook(text, managers.get("pacman").guarded)
    if rel == "hooks/dnf/kzguard.py":
        return dnf_plugin(text, managers.get("dnf").guarded)
    raise KeyError(rel)


# the hook files whose package lists are generated (05 is the only alpm hook with a
# Package trigger; the post-transaction one triggers on paths)
FILES = (
    "hooks/dnf5/kzguard.actions",
    "hooks/dnf5/legacy/kzguard.actions",
    "hooks/pacman/05-kzguard-pre.hook",
    "hooks/dnf/kzguard.py",
)
