"""``docs/config.md``, generated from :data:`~kzguard.config.SCHEMA` by :func:`render_docs`.

Imported only to write the docs (``python -m kzguard.config``), never to load a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from kzguard.config.load import DEFAULT_PATH
from kzguard.config.nodes import TAG
from kzguard.config.schema import SCHEMA, Setting

_DOCS_HEAD = """\
<!-- Generated from the SCHEMA table in kzguard/config/schema.py by render_docs(); do not edit.
     Regenerate with: python -m kzguard.config > docs/config.md -->
# Configuration

kzguard reads `{path}` inside the root it works on (`--root`),
or the host file `--config FILE` names. When `{path}` does not
exist, or is empty, every key has its default. The file is one YAML mapping; dotted
keys below are nested mappings (`snapshots.keep` is `keep:` indented under `snapshots:`).

The file is validated when it is loaded. An unknown key (with the nearest known one),
a wrong type (`keep: "5"`, `keep: true`), a value outside its choices, a duplicate key,
a syntax error, more than one document or bytes that are not UTF-8 are all errors that
name the file, the line and the key, for example

    {path}:7: on_unsupported_kernel: 'blok' is not one of block, hold, warn; did you mean 'block'?

and make every command exit with status 2.

Kernel versions in `zfs_ranges` must be quoted: YAML reads `6.10` as the number 6.1.

## Keys

| Key | Type | Default | Meaning |
|---|---|---|---|
"""


def render_docs() -> str:
    """The text of docs/config.md, generated from :data:`SCHEMA`."""
    rows = [_doc_row(setting) for setting in SCHEMA]
    example = "\n".join(_example_lines())
    return (
        _DOCS_HEAD.format(path=DEFAULT_PATH)
        + "\n".join(rows)
        + "\n\n## Example\n\nEvery key at its default; commented lines show other values.\n\n"
        + f"```yaml\n{example}\n```\n"
    )


def _doc_row(setting: Setting) -> str:
    kind = setting.type
    if isinstance(setting.check, tuple):
        kind = "one of " + ", ".join(f"`{choice}`" for choice in setting.check)
    return f"| `{setting.name}` | {kind} | `{_flow(setting.default)}` | {setting.doc} |"


def _example_lines() -> Iterator[str]:
    import textwrap

    opened = set()
    for setting in SCHEMA:
        *parents, leaf = setting.name.split(".")
        for depth, parent in enumerate(parents):
            if tuple(parents[: depth + 1]) not in opened:
                opened.add(tuple(parents[: depth + 1]))
                yield "  " * depth + f"{parent}:"
        indent = "  " * len(parents)
        for line in textwrap.wrap(setting.doc.replace("`", ""), 88 - len(indent)):
            yield f"{indent}# {line}"
        if setting.example is not None:
            yield f"{indent}# {leaf}: {_flow(setting.example)}"
        yield f"{indent}{leaf}: {_flow(setting.default)}"


def _flow(value: Any) -> str:
    """``value`` as a YAML flow scalar, list or mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    return _flow_str(str(value))


def _flow_str(text: str) -> str:
    import json

    from yaml.nodes import ScalarNode
    from yaml.resolver import Resolver

    plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", text) is not None
    if plain and Resolver().resolve(ScalarNode, text, (True, False)) == TAG + "str":
        return text
    return json.dumps(text)
