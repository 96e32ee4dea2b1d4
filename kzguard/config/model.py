"""The validated configuration as immutable records, shaped by :data:`~kzguard.config.SCHEMA`."""

from __future__ import annotations

from kzguard.base.record import Record
from kzguard.config.schema import BY_NAME, SCHEMA
from kzguard.config.validators import RANGE_KEYS

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Callable, Optional

DEFAULTS_SOURCE = "defaults"


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
    require_signature: str
    trusted_certificates: tuple[str, ...]
    hook_timeout: int = 30
    source: str = DEFAULTS_SOURCE
    _uncompared = frozenset({"source"})

    @classmethod
    def defaults(cls) -> Config:
        return build({}, DEFAULTS_SOURCE)

    def get(self, name: str) -> Any:
        """The value of a dotted schema key, e.g. ``get("snapshots.keep")``."""
        if name not in BY_NAME:
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
        return {v: dict(zip(RANGE_KEYS, pair)) for v, pair in value.items()}
    return list(value) if isinstance(value, tuple) else value


def _fresh(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


def build(values: Mapping[str, Any], source: str) -> Config:
    """A Config from validated values by dotted name; defaults fill the rest."""
    flat = {s.name: values[s.name] if s.name in values else _fresh(s.default) for s in SCHEMA}
    fields: dict[str, Any] = {name: value for name, value in flat.items() if "." not in name}
    for section, make in _SECTION_TYPES.items():
        prefix = f"{section}."
        members = {n[len(prefix) :]: v for n, v in flat.items() if n.startswith(prefix)}
        fields[section] = make(**members)
    return Config(source=source, **fields)
