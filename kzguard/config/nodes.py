"""Reading composed YAML nodes: their kind, how to describe them, and the :class:`Invalid` error.

Every check works on nodes rather than Python values, so an error keeps the node's line and a
key path that :func:`render_key` turns into ``zfs_ranges['2.4.5'].linux_min``.
"""

from __future__ import annotations

import re

from kzguard.base.errors import ConfigError

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any, Callable, Union

    from yaml.nodes import Node

TAG = "tag:yaml.org,2002:"
KINDS = {
    "str": "a string",
    "int": "an integer",
    "bool": "a boolean",
    "float": "a number",
    "null": "nothing",
    "timestamp": "a date",
    "binary": "binary data",
    "seq": "a list",
    "map": "a mapping",
}
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


class Invalid(Exception):
    """A value broke the schema; ``parts`` is its key path relative to the node checked."""

    def __init__(self, message: str, node: Node, parts: Sequence[Union[str, int]] = ()):
        super().__init__(message)
        self.message = message
        self.node = node
        self.parts: list[Union[str, int]] = list(parts)

    def error(self, source: str) -> ConfigError:
        return ConfigError(
            self.message, path=source, key=render_key(self.parts), line=line_of(self.node)
        )


def line_of(node: Node) -> int:
    """The 1-based line the node starts on."""
    return node.start_mark.line + 1


def kind_of(node: Node) -> str:
    """``map``, ``seq``, or a scalar's resolved tag without the YAML prefix (``int``, ...)."""
    if node.id == "mapping":
        return "map"
    if node.id == "sequence":
        return "seq"
    tag = str(node.tag)
    return tag[len(TAG) :] if tag.startswith(TAG) else tag


def short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(node: Node) -> str:
    """``a string '5'``, ``a boolean true``, ``a list``: what the file gave."""
    kind = kind_of(node)
    text = KINDS.get(kind, f"a value tagged {short(str(node.tag))}")
    if node.id == "scalar" and kind != "null":
        value = short(node.value)
        text = f"{text} {value!r}" if kind == "str" else f"{text} {value}"
    return text


def expected(what: str, node: Node, *, quote: bool = False) -> Invalid:
    """``expected WHAT, got ...``; ``quote`` hints at quoting a scalar YAML typed otherwise."""
    quote = quote and node.id == "scalar" and kind_of(node) not in ("str", "null")
    hint = "; quote it to make it a string" if quote else ""
    return Invalid(f"expected {what}, got {describe(node)}{hint}", node)


def construct(node: Node, kind: str) -> Any:
    """The Python value of a scalar already known to be of ``kind``."""
    import yaml
    from yaml.constructor import SafeConstructor

    try:
        return SafeConstructor().construct_object(node, deep=True)
    except (ValueError, KeyError, TypeError, yaml.YAMLError):
        raise Invalid(f"{short(node.value)!r} is not a valid {kind}", node) from None


def key_name(node: Node) -> str:
    """A mapping key as a string; any other scalar, a collection or ``<<`` is an error."""
    if kind_of(node) == "str":
        return str(node.value)
    if node.id != "scalar":
        raise Invalid(f"keys must be strings, got {describe(node)}", node)
    if kind_of(node) == "merge":
        raise Invalid("merge keys (<<) are not supported; write the keys out", node)
    error = expected("a string key", node, quote=True)
    error.parts.append(str(node.value))
    raise error


def pairs(node: Node, what: str) -> Iterator[tuple[str, Node, Node]]:
    """``(name, key node, value node)`` of a mapping (nothing for a null); rejects duplicates."""
    if kind_of(node) == "null":
        return
    if node.id != "mapping":
        raise expected(what, node)
    seen: dict[str, int] = {}
    for key_node, value in node.value:
        name = key_name(key_node)
        if name in seen:
            message = (
                f"duplicate key: given on line {seen[name]} and again on line {line_of(key_node)}"
            )
            raise Invalid(message, key_node, [name])
        seen[name] = line_of(key_node)
        yield name, key_node, value


def under(part: Union[str, int], check: Callable[[Node], Any], node: Node) -> Any:
    """``check(node)``, with ``part`` put in front of the key path of any error."""
    try:
        return check(node)
    except Invalid as exc:
        exc.parts.insert(0, part)
        raise


def render_key(parts: Sequence[Union[str, int]]) -> str:
    """``snapshots.keep``, ``modules[2]``, ``zfs_ranges['2.4.5'].linux_min``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(_IDENT, part):
            out += f".{part}" if out else part
        else:
            out += f"[{short(part)!r}]"
    return out


def suggest(word: str, choices: Sequence[str]) -> str:
    """``; did you mean 'keep'?`` for the nearest of ``choices``, or ``''``."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
