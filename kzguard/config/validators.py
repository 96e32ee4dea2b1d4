"""One check per kind of value: a YAML node in, the Python value out, or :class:`Invalid`.

Patterns are plain strings that ``re`` compiles (and caches) on first use, so importing the
package or loading the defaults compiles none of them.
"""

from __future__ import annotations

import re

from kzguard.config.nodes import (
    KINDS,
    Invalid,
    construct,
    expected,
    key_name,
    kind_of,
    pairs,
    short,
    suggest,
    under,
)

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Optional

    from yaml.nodes import Node

RANGE_KEYS = ("linux_min", "linux_max")
_MODULE = r"[A-Za-z0-9_-]+"
_DATASET = r"[A-Za-z][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.: -]+)*"
_LISTEN = r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})"
_IPV4 = r"[0-9.]+"
_HOSTNAME = r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?"
_ZFS_VERSION = r"[0-9]+\.[0-9]+\.[0-9]+(-[A-Za-z0-9.]+)?"
_LINUX_VERSION = r"[0-9]+\.[0-9]+(\.[0-9]+)?"


def choice(node: Node, choices: Sequence[str]) -> str:
    listed = ", ".join(choices)
    if node.id != "scalar" or kind_of(node) == "null" or kind_of(node) not in KINDS:
        raise expected(f"one of {listed}", node)
    if kind_of(node) == "str" and node.value in choices:
        return str(node.value)
    value = str(node.value)
    raise Invalid(f"{short(value)!r} is not one of {listed}{suggest(value, choices)}", node)


def boolean(node: Node) -> bool:
    if kind_of(node) != "bool":
        raise expected("true or false", node)
    return bool(construct(node, "boolean"))


def positive_int(node: Node) -> int:
    if kind_of(node) != "int":
        raise expected("an integer", node)
    value = int(construct(node, "integer"))
    if value < 1:
        raise Invalid(f"must be at least 1, got {value}", node)
    return value


def _string(node: Node, what: str = "a string") -> str:
    if kind_of(node) != "str":
        raise expected(what, node, quote=True)
    return str(node.value)


def dataset(node: Node) -> str:
    name = _string(node, "a dataset name or auto")
    if name != "auto" and not re.fullmatch(_DATASET, name):
        raise Invalid(f"{short(name)!r} is not a dataset name like rpool/ROOT/debian", node)
    return name


def listen(node: Node) -> str:
    if kind_of(node) == "null":
        return ""
    text = _string(node, "a string host:port, or '' to disable")
    if not text:
        return ""
    problem = _listen_problem(text)
    if problem:
        raise Invalid(f"{short(text)!r} {problem}", node)
    return text


def _listen_problem(text: str) -> str:
    """Why ``text`` is not ``host:port`` (``''`` when it is)."""
    import ipaddress

    form = "is not host:port (e.g. 127.0.0.1:9737, [::1]:9737; '' disables)"
    match = re.fullmatch(_LISTEN, text)
    if not match:
        return form
    if not 1 <= int(match["port"]) <= 65535:
        return "has a port outside 1-65535"
    host = match["v6"] or match["host"]
    try:
        if match["v6"]:
            ipaddress.IPv6Address(host)
        elif re.fullmatch(_IPV4, host):
            ipaddress.IPv4Address(host)
        elif not re.fullmatch(_HOSTNAME, host):
            return form
    except ValueError:
        return f"has an invalid IP address {short(host)!r}"
    return ""


def textfile(node: Node) -> Optional[str]:
    if kind_of(node) == "null":
        return None
    path = _string(node, "an absolute path ending in .prom")
    if not path:
        return None
    if not path.startswith("/"):
        raise Invalid(f"{short(path)!r} is not an absolute path", node)
    if not path.endswith(".prom"):
        message = f"{short(path)!r} must end in .prom (node_exporter reads only *.prom files)"
        raise Invalid(message, node)
    return path


def _absolute_path(node: Node) -> str:
    path = _string(node, "an absolute path")
    if not path.startswith("/"):
        raise Invalid(f"{short(path)!r} is not an absolute path", node)
    return path


def absolute_paths(node: Node) -> tuple[str, ...]:
    if node.id != "sequence":
        raise expected("a list of absolute paths", node)
    paths = [under(index, _absolute_path, item) for index, item in enumerate(node.value)]
    return tuple(dict.fromkeys(paths))


def _module_name(node: Node) -> str:
    name = _string(node, "a module name")
    if not re.fullmatch(_MODULE, name):
        raise Invalid(f"{short(name)!r} is not a module name (letters, digits, _ and -)", node)
    return name.replace("-", "_")


def modules(node: Node) -> tuple[str, ...]:
    if node.id != "sequence":
        raise expected("a list of module names", node)
    if not node.value:
        raise Invalid("an empty list guards nothing; remove the key to guard zfs and spl", node)
    names = [under(index, _module_name, item) for index, item in enumerate(node.value)]
    return tuple(dict.fromkeys(names))


def _linux_version(node: Node) -> str:
    if kind_of(node) == "float":
        value = node.value
        message = f"{value} is read as a number (6.10 would become 6.1); quote it: '{value}'"
        raise Invalid(message, node)
    text = _string(node, "a kernel version string like '6.12'")
    if not re.fullmatch(_LINUX_VERSION, text):
        raise Invalid(f"{short(text)!r} is not a kernel version like 6.12 or 4.18.0", node)
    return text


def _linux_range(node: Node) -> tuple[str, str]:
    found: dict[str, str] = {}
    for name, key_node, value in pairs(node, "a mapping with linux_min and linux_max"):
        if name not in RANGE_KEYS:
            message = f"unknown key{suggest(name, RANGE_KEYS)}"
            raise Invalid(message, key_node, [name])
        found[name] = under(name, _linux_version, value)
    missing = [name for name in RANGE_KEYS if name not in found]
    if missing:
        raise Invalid(f"missing {' and '.join(missing)}", node)
    low, high = found["linux_min"], found["linux_max"]
    if _major_minor(low) > _major_minor(high):
        raise Invalid(f"linux_min {low} is above linux_max {high}", node)
    return low, high


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _zfs_version(node: Node) -> str:
    version = key_name(node)
    if not re.fullmatch(_ZFS_VERSION, version):
        message = f"{short(version)!r} is not an OpenZFS version like '2.2.7'"
        raise Invalid(message, node, [version])
    return version


def zfs_ranges(node: Node) -> dict[str, tuple[str, str]]:
    ranges: dict[str, tuple[str, str]] = {}
    for _name, key_node, value in pairs(node, "a mapping of OpenZFS version to range"):
        version = _zfs_version(key_node)
        ranges[version] = under(version, _linux_range, value)
    return ranges
