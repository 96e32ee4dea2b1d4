"""The configuration file, validated against one schema table.

kzguard reads ``/etc/kzguard/kzguard.yaml`` inside the root, or the host file ``--config``
names. :data:`SCHEMA` drives validation, the defaults, the :class:`Config` attributes and
``docs/config.md`` (:func:`render_docs`). The document is composed into YAML nodes, so every
error names the file, the dotted key and the line.

The dnf plugin imports this package, so importing it stays cheap: ``yaml`` is imported only
when a file is parsed, value patterns are compiled on first use, and the docs module only
when :func:`render_docs` is asked for.

Modules: ``nodes`` (reading YAML nodes, the Invalid error), ``validators`` (one check per
kind of value), ``schema`` (Setting, SCHEMA), ``model`` (the Config records), ``load``
(reading and composing the file), ``docs`` (render_docs).
"""

from __future__ import annotations

from kzguard.config.load import DEFAULT_PATH, load_config, loads
from kzguard.config.model import DEFAULTS_SOURCE, Config, MetricsConfig, SnapshotsConfig
from kzguard.config.schema import SCHEMA, Setting

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Any

    from kzguard.config.docs import render_docs
    from kzguard.config.schema import Check

__all__ = [
    "DEFAULTS_SOURCE",
    "DEFAULT_PATH",
    "SCHEMA",
    "Check",
    "Config",
    "MetricsConfig",
    "Setting",
    "SnapshotsConfig",
    "load_config",
    "loads",
    "render_docs",
]


def __getattr__(name: str) -> Any:
    """``render_docs``, importing the docs module on first use, and ``Check``, the type of a
    setting's check (made from :mod:`typing` only when asked for)."""
    if name == "render_docs":
        from kzguard.config.docs import render_docs

        return render_docs
    if name == "Check":
        from kzguard.config import schema

        return schema.Check
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
