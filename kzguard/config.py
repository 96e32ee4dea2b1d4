"""The configuration file, validated against one schema table.

kzguard reads ``/etc/kzguard/kzguard.yaml`` inside the root, or the host file ``--config``
names. :data:`SCHEMA` drives validation, the defaults, the :class:`Config` attributes and
``docs/config.md`` (:func:`render_docs`). The document is composed into YAML nodes, so every
error names the file, the dotted key and the line. ``yaml`` is imported only when a file is
parsed: the dnf plugin imports this module.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from kzguard.errors import ConfigError, FactError
from kzguard.record import Record
from kzguard.root import Root

if TYPE_CHECKING:
    from yaml.nodes import Node

DEFAULT_PATH = "/etc/kzguard/kzguard.yaml"
DEFAULTS_SOURCE = "defaults"

_TAG = "tag:yaml.org,2002:"
_KINDS = {
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
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE = re.compile(r"[A-Za-z0-9_-]+")
_DATASET = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.: -]+)*")
_LISTEN = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
_ZFS_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+(-[A-Za-z0-9.]+)?")
_LINUX_VERSION = re.compile(r"[0-9]+\.[0-9]+(\.[0-9]+)?")
_RANGE_KEYS = ("linux_min", "linux_max")


class _Invalid(Exception):
    """A value broke the schema; ``parts`` is its key path relative to the node checked."""

    def __init__(self, message: str, node: Node, parts: Sequence[Union[str, int]] = ()):
        super().__init__(message)
        self.message = message
        self.node = node
        self.parts: list[Union[str, int]] = list(parts)

    def error(self, source: str) -> ConfigError:
        return ConfigError(
            self.message, path=source, key=_render_key(self.parts), line=_line(self.node)
        )


# ---------------------------------------------------------------- node helpers


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _kind(node: Node) -> str:
    """``map``, ``seq``, or a scalar's resolved tag without the YAML prefix (``int``, ...)."""
    if node.id == "mapping":
        return "map"
    if node.id == "sequence":
        return "seq"
    tag = str(node.tag)
    return tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(node: Node) -> str:
    """``a string '5'``, ``a boolean true``, ``a list``: what the file gave."""
    kind = _kind(node)
    text = _KINDS.get(kind, f"a value tagged {_short(str(node.tag))}")
    if node.id == "scalar" and kind != "null":
        value = _short(node.value)
        text = f"{text} {value!r}" if kind == "str" else f"{text} {value}"
    return text


def _expected(what: str, node: Node, *, quote: bool = False) -> _Invalid:
    """``expected WHAT, got ...``; ``quote`` hints at quoting a scalar YAML typed otherwise."""
    quote = quote and node.id == "scalar" and _kind(node) not in ("str", "null")
    hint = "; quote it to make it a string" if quote else ""
    return _Invalid(f"expected {what}, got {_describe(node)}{hint}", node)


def _construct(node: Node, kind: str) -> Any:
    """The Python value of a scalar already known to be of ``kind``."""
    import yaml
    from yaml.constructor import SafeConstructor

    try:
        return SafeConstructor().construct_object(node, deep=True)
    except (ValueError, KeyError, TypeError, yaml.YAMLError):
        raise _Invalid(f"{_short(node.value)!r} is not a valid {kind}", node) from None


def _key_name(node: Node) -> str:
    if _kind(node) == "str":
        return str(node.value)
    if node.id != "scalar":
        raise _Invalid(f"keys must be strings, got {_describe(node)}", node)
    if _kind(node) == "merge":
        raise _Invalid("merge keys (<<) are not supported; write the keys out", node)
    error = _expected("a string key", node, quote=True)
    error.parts.append(str(node.value))
    raise error


def _pairs(node: Node, what: str) -> Iterator[tuple[str, Node, Node]]:
    """``(name, key node, value node)`` of a mapping (nothing for a null); rejects duplicates."""
    if _kind(node) == "null":
        return
    if node.id != "mapping":
        raise _expected(what, node)
    seen: dict[str, int] = {}
    for key_node, value in node.value:
        name = _key_name(key_node)
        if name in seen:
            message = (
                f"duplicate key: given on line {seen[name]} and again on line {_line(key_node)}"
            )
            raise _Invalid(message, key_node, [name])
        seen[name] = _line(key_node)
        yield name, key_node, value


def _under(part: Union[str, int], check: Callable[[Node], Any], node: Node) -> Any:
    """``check(node)``, with ``part`` put in front of the key path of any error."""
    try:
        return check(node)
    except _Invalid as exc:
        exc.parts.insert(0, part)
        raise


def _render_key(parts: Sequence[Union[str, int]]) -> str:
    """``snapshots.keep``, ``modules[2]``, ``zfs_ranges['2.4.5'].linux_min``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{_short(part)!r}]"
    return out


def _suggest(word: str, choices: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------- validators


def _choice(node: Node, choices: Sequence[str]) -> str:
    listed = ", ".join(choices)
    if node.id != "scalar" or _kind(node) == "null" or _kind(node) not in _KINDS:
        raise _expected(f"one of {listed}", node)
    if _kind(node) == "str" and node.value in choices:
        return str(node.value)
    value = str(node.value)
    raise _Invalid(f"{_short(value)!r} is not one of {listed}{_suggest(value, choices)}", node)


def _bool(node: Node) -> bool:
    if _kind(node) != "bool":
        raise _expected("true or false", node)
    return bool(_construct(node, "boolean"))


def _positive_int(node: Node) -> int:
    if _kind(node) != "int":
        raise _expected("an integer", node)
    value = int(_construct(node, "integer"))
    if value < 1:
        raise _Invalid(f"must be at least 1, got {value}", node)
    return value


def _string(node: Node, what: str = "a string") -> str:
    if _kind(node) != "str":
        raise _expected(what, node, quote=True)
    return str(node.value)


def _dataset(node: Node) -> str:
    name = _string(node, "a dataset name or auto")
    if name != "auto" and not _DATASET.fullmatch(name):
        raise _Invalid(f"{_short(name)!r} is not a dataset name like rpool/ROOT/debian", node)
    return name


def _listen(node: Node) -> str:
    if _kind(node) == "null":
        return ""
    text = _string(node, "a string host:port, or '' to disable")
    if not text:
        return ""
    problem = _listen_problem(text)
    if problem:
        raise _Invalid(f"{_short(text)!r} {problem}", node)
    return text


def _listen_problem(text: str) -> str:
    """Why ``text`` is not ``host:port`` (``''`` when it is)."""
    import ipaddress

    form = "is not host:port (e.g. 127.0.0.1:9737, [::1]:9737; '' disables)"
    match = _LISTEN.fullmatch(text)
    if not match:
        return form
    if not 1 <= int(match["port"]) <= 65535:
        return "has a port outside 1-65535"
    host = match["v6"] or match["host"]
    try:
        if match["v6"]:
            ipaddress.IPv6Address(host)
        elif re.fullmatch(r"[0-9.]+", host):
            ipaddress.IPv4Address(host)
        elif not _HOSTNAME.fullmatch(host):
            return form
    except ValueError:
        return f"has an invalid IP address {_short(host)!r}"
    return ""


def _textfile(node: Node) -> Optional[str]:
    if _kind(node) == "null":
        return None
    path = _string(node, "an absolute path ending in .prom")
    if not path:
        return None
    if not path.startswith("/"):
        raise _Invalid(f"{_short(path)!r} is not an absolute path", node)
    if not path.endswith(".prom"):
        message = f"{_short(path)!r} must end in .prom (node_exporter reads only *.prom files)"
        raise _Invalid(message, node)
    return path


def _module_name(node: Node) -> str:
    name = _string(node, "a module name")
    if not _MODULE.fullmatch(name):
        raise _Invalid(f"{_short(name)!r} is not a module name (letters, digits, _ and -)", node)
    return name.replace("-", "_")


def _modules(node: Node) -> tuple[str, ...]:
    if node.id != "sequence":
        raise _expected("a list of module names", node)
    if not node.value:
        raise _Invalid("an empty list guards nothing; remove the key to guard zfs and spl", node)
    names = [_under(index, _module_name, item) for index, item in enumerate(node.value)]
    return tuple(dict.fromkeys(names))


def _linux_version(node: Node) -> str:
    if _kind(node) == "float":
        value = node.value
        message = f"{value} is read as a number (6.10 would become 6.1); quote it: '{value}'"
        raise _Invalid(message, node)
    text = _string(node, "a kernel version string like '6.12'")
    if not _LINUX_VERSION.fullmatch(text):
        raise _Invalid(f"{_short(text)!r} is not a kernel version like 6.12 or 4.18.0", node)
    return text


def _linux_range(node: Node) -> tuple[str, str]:
    found: dict[str, str] = {}
    for name, key_node, value in _pairs(node, "a mapping with linux_min and linux_max"):
        if name not in _RANGE_KEYS:
            message = f"unknown key{_suggest(name, _RANGE_KEYS)}"
            raise _Invalid(message, key_node, [name])
        found[name] = _under(name, _linux_version, value)
    missing = [name for name in _RANGE_KEYS if name not in found]
    if missing:
        raise _Invalid(f"missing {' and '.join(missing)}", node)
    low, high = found["linux_min"], found["linux_max"]
    if _major_minor(low) > _major_minor(high):
        raise _Invalid(f"linux_min {low} is above linux_max {high}", node)
    return low, high


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _zfs_version(node: Node) -> str:
    version = _key_name(node)
    if not _ZFS_VERSION.fullmatch(version):
        message = f"{_short(version)!r} is not an OpenZFS version like '2.2.7'"
        raise _Invalid(message, node, [version])
    return version


def _zfs_ranges(node: Node) -> dict[str, tuple[str, str]]:
    ranges: dict[str, tuple[str, str]] = {}
    for _name, key_node, value in _pairs(node, "a mapping of OpenZFS version to range"):
        version = _zfs_version(key_node)
        ranges[version] = _under(version, _linux_range, value)
    return ranges


# ---------------------------------------------------------------- the schema table

Check = Union[tuple[str, ...], Callable[["Node"], Any]]


class Setting(Record):
    """One configuration key: everything validation, defaults and the docs need."""

    name: str  # dotted: a nested mapping in the file, an attribute path on Config
    type: str  # as the docs show it
    default: Any
    check: Check  # the allowed choices, or a validator of the value's YAML node
    doc: str  # one line for docs/config.md and the example file
    example: Any = None  # a value the example file shows commented out

    def validate(self, node: Node) -> Any:
        if isinstance(self.check, tuple):
            return _choice(node, self.check)
        return self.check(node)


SCHEMA: tuple[Setting, ...] = (
    Setting(
        "on_unsupported_kernel",
        "string",
        "block",
        ("block", "hold", "warn"),
        "What a package-manager hook does with a kernel the installed ZFS does not support: "
        "`block` the transaction, `hold` the kernel back and let the rest through, or `warn`.",
    ),
    Setting(
        "on_module_failure",
        "string",
        "keep-default",
        ("keep-default", "warn", "fail"),
        "What the post-install check does when the new kernel's module is bad: "
        "`keep-default` keeps the boot default on the last good kernel, `warn` only reports, "
        "`fail` exits non-zero.",
    ),
    Setting(
        "on_error",
        "string",
        "block",
        ("block", "allow"),
        "What a hook does when kzguard itself fails: `block` the transaction or `allow` it.",
    ),
    Setting(
        "on_unknown",
        "string",
        "warn",
        ("block", "warn"),
        "What a hook does with a kernel whose safety cannot be decided "
        "(e.g. a ZFS version missing from every range source): `block` or `warn`.",
    ),
    Setting(
        "snapshots.enabled",
        "boolean",
        True,
        _bool,
        "Snapshot the root dataset before a transaction that installs a kernel.",
    ),
    Setting(
        "snapshots.dataset",
        "dataset name",
        "auto",
        _dataset,
        "The dataset to snapshot; `auto` is the dataset mounted at `/`.",
    ),
    Setting(
        "snapshots.keep",
        "integer >= 1",
        5,
        _positive_int,
        "How many kzguard snapshots to keep; older ones are destroyed.",
    ),
    Setting(
        "snapshots.required",
        "boolean",
        False,
        _bool,
        "Block the transaction when the snapshot cannot be taken.",
    ),
    Setting(
        "metrics.listen",
        "`host:port` or empty",
        "127.0.0.1:9737",
        _listen,
        "Where the daemon serves Prometheus metrics (`[::1]:9737` for IPv6); empty disables.",
    ),
    Setting(
        "metrics.textfile",
        "absolute path or null",
        None,
        _textfile,
        "A node_exporter textfile (`*.prom`) that hooks and the daemon write; null writes none.",
        example="/var/lib/node_exporter/textfile_collector/kzguard.prom",
    ),
    Setting(
        "modules",
        "list of module names",
        ("zfs", "spl"),
        _modules,
        "Kernel modules to guard (`-` is read as `_`, as the kernel does); "
        "modules other than zfs get the module checks but no kernel range.",
        example=["zfs", "spl", "nvidia"],
    ),
    Setting(
        "zfs_ranges",
        "mapping",
        {},
        _zfs_ranges,
        "Supported kernels per OpenZFS version, `linux_min` and `linux_max` as quoted "
        "`MAJOR.MINOR[.PATCH]` strings; the last source, after the DKMS META file and the "
        "built-in table.",
        example={"2.4.5": {"linux_min": "4.18", "linux_max": "6.18"}},
    ),
)

_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SCHEMA}
_SECTIONS = frozenset(setting.name.rsplit(".", 1)[0] for setting in SCHEMA if "." in setting.name)


def _children(section: str) -> list[str]:
    """The key names allowed directly in ``section`` (``""`` is the document)."""
    prefix = f"{section}." if section else ""
    names = [s.name[len(prefix) :].split(".")[0] for s in SCHEMA if s.name.startswith(prefix)]
    return list(dict.fromkeys(names))


def _unknown(name: str, section: str) -> str:
    """The message for an unknown key, with the nearest known one."""
    dotted = f"{section}.{name}" if section else name
    children = _children(section)
    hint = "" if dotted in _BY_NAME else _suggest(name, children)
    if hint:
        return f"unknown key{hint}"
    for setting in SCHEMA:
        if setting.name == dotted or setting.name.rsplit(".", 1)[-1] == name:
            parent, _, leaf = setting.name.rpartition(".")
            where = f"indented under '{parent}:'" if parent else "at the top level"
            return f"unknown key; {setting.name!r} is written as {leaf!r} {where}"
    return f"unknown key (known here: {', '.join(children)})"


# ---------------------------------------------------------------- the Config object


class SnapshotsConfig(Record):
    """``snapshots:``: ZFS snapshots taken before a kernel transaction."""

    enabled: bool
    dataset: str
    keep: int
    required: bool


class MetricsConfig(Record):
    """``metrics:``: the Prometheus endpoint and textfile."""

    listen: str
    textfile: Optional[str]


_SECTION_TYPES: dict[str, Callable[..., Any]] = {
    "snapshots": SnapshotsConfig,
    "metrics": MetricsConfig,
}


class Config(Record):
    """The validated configuration; ``source`` is the file it came from, or ``defaults``."""

    on_unsupported_kernel: str
    on_module_failure: str
    on_error: str
    on_unknown: str
    snapshots: SnapshotsConfig
    metrics: MetricsConfig
    modules: tuple[str, ...]
    zfs_ranges: dict[str, tuple[str, str]]
    source: str = DEFAULTS_SOURCE
    _uncompared = frozenset({"source"})

    @classmethod
    def defaults(cls) -> Config:
        return _build({}, DEFAULTS_SOURCE)

    def get(self, name: str) -> Any:
        """The value of a dotted schema key, e.g. ``get("snapshots.keep")``."""
        if name not in _BY_NAME:
            raise KeyError(name)
        value: Any = self
        for part in name.split("."):
            value = getattr(value, part)
        return value

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data shaped like the file (lists, no tuples); loads back equal."""
        out: dict[str, Any] = {}
        for setting in SCHEMA:
            *parents, leaf = setting.name.split(".")
            target = out
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = _plain(setting.name, self.get(setting.name))
        return out


def _plain(name: str, value: Any) -> Any:
    if name == "zfs_ranges":
        return {v: dict(zip(_RANGE_KEYS, pair)) for v, pair in value.items()}
    return list(value) if isinstance(value, tuple) else value


def _fresh(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


def _build(values: Mapping[str, Any], source: str) -> Config:
    """A Config from validated values by dotted name; defaults fill the rest."""
    flat = {s.name: values[s.name] if s.name in values else _fresh(s.default) for s in SCHEMA}
    fields: dict[str, Any] = {name: value for name, value in flat.items() if "." not in name}
    for section, make in _SECTION_TYPES.items():
        prefix = f"{section}."
        members = {n[len(prefix) :]: v for n, v in flat.items() if n.startswith(prefix)}
        fields[section] = make(**members)
    return Config(source=source, **fields)


# ---------------------------------------------------------------- loading


def load_config(root: Optional[Root] = None, path: Optional[str] = None) -> Config:
    """Load ``path`` (a host path) or, without it, ``DEFAULT_PATH`` inside ``root``.

    A missing default file gives the defaults; every other problem is a ConfigError.
    """
    if path is not None:
        return loads(_read_host(path), path)
    root = root or Root("/")
    source = str(root.path.joinpath(DEFAULT_PATH.lstrip("/")))
    try:
        data = root.read_bytes(DEFAULT_PATH)
    except FactError as exc:
        cause = exc.__cause__
        if isinstance(cause, FileNotFoundError):
            return Config.defaults()
        reason = getattr(cause, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read: {reason}", path=source) from exc
    return loads(data, source)


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
    if node is not None and _kind(node) != "null":
        if node.id != "mapping":
            message = f"expected a mapping of settings, got {_describe(node)}"
            raise ConfigError(message, path=source, line=_line(node))
        try:
            _collect(node, "", values)
        except _Invalid as exc:
            raise exc.error(source) from None
    return _build(values, source)


def _collect(node: Node, section: str, values: dict[str, Any]) -> None:
    """Validate the mapping at dotted ``section`` into ``values`` by dotted name."""
    for name, key_node, value in _pairs(node, "a mapping"):
        dotted = f"{section}.{name}" if section else name
        if "." in name or (dotted not in _BY_NAME and dotted not in _SECTIONS):
            raise _Invalid(_unknown(name, section), key_node, [name])
        if dotted in _SECTIONS:
            _under(name, functools.partial(_collect, section=dotted, values=values), value)
        else:
            values[dotted] = _under(name, _BY_NAME[dotted].validate, value)


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


def _compose(text: str, source: str) -> Optional[Node]:
    """The single YAML document's root node (None for an empty stream)."""
    import yaml

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
        raise ConfigError(f"cannot parse: {_short(str(exc), 200)}", path=source) from None
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


# ---------------------------------------------------------------- docs/config.md

_DOCS_HEAD = """\
<!-- Generated from the SCHEMA table in kzguard/config.py by render_docs(); do not edit.
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
    if plain and Resolver().resolve(ScalarNode, text, (True, False)) == _TAG + "str":
        return text
    return json.dumps(text)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render_docs())
