"""Loading the file: read it through the root, compose it into YAML nodes, validate each key.

``yaml`` is imported only when there is text to parse; every problem becomes a
:class:`~kzguard.base.errors.ConfigError` naming the file, the dotted key and the line.
"""

from __future__ import annotations

import functools
import re

from kzguard.base.errors import ConfigError, FactError
from kzguard.config.model import Config, build
from kzguard.config.nodes import Invalid, describe, kind_of, line_of, pairs, short, suggest, under
from kzguard.config.schema import BY_NAME, SCHEMA, SECTIONS
from kzguard.root import Root

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Any, Optional, Union

    from yaml.nodes import Node

DEFAULT_PATH = "/etc/kzguard/kzguard.yaml"


def load_config(root: Root, path: Optional[str] = None) -> Config:
    """Load ``path`` (a host path) or, without it, ``DEFAULT_PATH`` inside ``root``.

    A missing default file gives the defaults; every other problem is a ConfigError.
    """
    if path is not None:
        return loads(_read_host(path), path)
    try:
        data = root.read_bytes(DEFAULT_PATH)
    except FactError as exc:
        cause = exc.__cause__
        if isinstance(cause, FileNotFoundError):
            return Config.defaults()
        reason = getattr(cause, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read: {reason}", path=_in_root(root)) from exc
    return loads(data, _in_root(root))


def _in_root(root: Root) -> str:
    """The default file's host path, for messages (``pathlib`` is not needed for the defaults)."""
    return str(root.path.joinpath(DEFAULT_PATH.lstrip("/")))


def _read_host(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=path) from exc


def loads(data: Union[str, bytes], source: str = "<string>") -> Config:
    """Parse and validate configuration text; ``source`` names it in errors and on the Config."""
    text = _decode(data, source) if isinstance(data, bytes) else data
    node = _compose(text, source)
    values: dict[str, Any] = {}
    if node is not None and kind_of(node) != "null":
        if node.id != "mapping":
            message = f"expected a mapping of settings, got {describe(node)}"
            raise ConfigError(message, path=source, line=line_of(node))
        try:
            _collect(node, "", values)
        except Invalid as exc:
            raise exc.error(source) from None
    return build(values, source)


def _collect(node: Node, section: str, values: dict[str, Any]) -> None:
    """Validate the mapping at dotted ``section`` into ``values`` by dotted name."""
    for name, key_node, value in pairs(node, "a mapping"):
        dotted = f"{section}.{name}" if section else name
        if "." in name or (dotted not in BY_NAME and dotted not in SECTIONS):
            raise Invalid(_unknown(name, section), key_node, [name])
        if dotted in SECTIONS:
            under(name, functools.partial(_collect, section=dotted, values=values), value)
        else:
            values[dotted] = under(name, BY_NAME[dotted].validate, value)


def _children(section: str) -> list[str]:
    """The key names allowed directly in ``section`` (``""`` is the document)."""
    prefix = f"{section}." if section else ""
    names = [s.name[len(prefix) :].split(".")[0] for s in SCHEMA if s.name.startswith(prefix)]
    return list(dict.fromkeys(names))


def _unknown(name: str, section: str) -> str:
    """The message for an unknown key, with the nearest known one."""
    dotted = f"{section}.{name}" if section else name
    children = _children(section)
    hint = "" if dotted in BY_NAME else suggest(name, children)
    if hint:
        return f"unknown key{hint}"
    for setting in SCHEMA:
        if setting.name == dotted or setting.name.rsplit(".", 1)[-1] == name:
            parent, _, leaf = setting.name.rpartition(".")
            where = f"indented under '{parent}:'" if parent else "at the top level"
            return f"unknown key; {setting.name!r} is written as {leaf!r} {where}"
    return f"unknown key (known here: {', '.join(children)})"


def _decode(data: bytes, source: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column}"
        raise ConfigError(message, path=source, line=line) from None


MAX_CONFIG_CHARS = 1 << 20
MAX_FLOW_DEPTH = 32
_FLOW = r"[\[\]{}'\"#\n]"  # compiled (and cached by re) when a file is read


def _flow_depth(text: str) -> int:
    """How deep ``[``/``{`` nest outside quotes and comments (a linear scan): YAML parsers
    recurse per level, and a deep enough file overflows the C stack of some Pythons."""
    depth = deepest = 0
    quote = ""
    comment = False
    for match in re.finditer(_FLOW, text):
        char, at = match.group(), match.start()
        if comment:
            comment = char != "\n"
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (at == 0 or text[at - 1] in " \t\n"):
            comment = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
    return deepest


MAX_BLOCK_DEPTH = 256
_BLOCK_ITEMS = r"[ \t]*((?:[-?:][ \t]+)*)"


def _block_depth(text: str) -> int:
    """The deepest block nesting a line could open: its indentation plus two columns per
    leading ``- ``/``? `` item (``- - - x`` nests three sequences on one line)."""
    deepest = 0
    items_at = re.compile(_BLOCK_ITEMS).match
    for line in text.splitlines():
        match = items_at(line)
        if match is not None:
            items = match.group(1)
            depth = match.start(1) + 2 * (items.count("-") + items.count("?") + items.count(":"))
            deepest = max(deepest, depth)
    return deepest


def _compose(text: str, source: str) -> Optional[Node]:
    """The single YAML document's root node (None for an empty stream)."""
    import yaml

    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigError(f"more than {MAX_CONFIG_CHARS} characters", path=source)
    if _flow_depth(text) > MAX_FLOW_DEPTH:
        raise ConfigError(f"[ ] or {{ }} nested more than {MAX_FLOW_DEPTH} levels", path=source)
    if _block_depth(text) > MAX_BLOCK_DEPTH:
        raise ConfigError("nested too deeply (indentation or '- ' items)", path=source)
    loader = None
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
        node = loader.get_node() if loader.check_node() else None
        if node is not None and loader.check_node():
            line = _next_document_line(text, node.end_mark.line)
            message = "more than one YAML document (a second '---'); keep one"
            raise ConfigError(message, path=source, line=line)
        return node
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, source) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(text.find(chr(exc.character)), 0)) + 1
        message = f"character U+{exc.character:04X} is not allowed in YAML: {exc.reason}"
        raise ConfigError(message, path=source, line=line) from None
    except (yaml.YAMLError, UnicodeError, RecursionError) as exc:
        raise ConfigError(f"cannot parse: {short(str(exc), 200)}", path=source) from None
    finally:
        if loader is not None:
            loader.dispose()


def _next_document_line(text: str, after: int) -> int:
    """The 1-based line of the first ``---`` marker from 0-based line ``after`` on."""
    lines = re.split(r"\r\n|[\r\n\x85\u2028\u2029]", text)
    for number in range(after, len(lines)):
        if re.match(r"---(\s|$)", lines[number]):
            return number + 1
    return after + 1


def _syntax_error(exc: Any, source: str) -> ConfigError:
    """A ConfigError with the line and column of a YAML scanner, parser or composer error."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if exc.context and exc.context_mark is not None and exc.context_mark is not mark:
        problem = f"{problem} ({exc.context} on line {exc.context_mark.line + 1})"
    elif exc.context:
        problem = f"{problem} ({exc.context})"
    if mark is None:
        return ConfigError(f"YAML syntax error: {problem}", path=source)
    message = f"YAML syntax error at column {mark.column + 1}: {problem}"
    return ConfigError(message, path=source, line=mark.line + 1)
