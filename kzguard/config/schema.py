"""The schema table: one :class:`Setting` per key, driving validation, defaults and the docs.

A dotted name is a nested mapping in the file and an attribute path on
:class:`~kzguard.config.model.Config`.
"""

from __future__ import annotations

from kzguard.base.record import Record
from kzguard.config import validators

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Any, Callable, Union

    from yaml.nodes import Node

    Check = Union[tuple[str, ...], Callable[["Node"], Any]]


def __getattr__(name: str) -> Any:
    """``Check`` (the type of :attr:`Setting.check`), built from :mod:`typing` on first use:
    subscripting ``Union`` costs a millisecond at import."""
    if name == "Check":
        from typing import Any, Callable, Union

        return Union[tuple[str, ...], Callable[["Node"], Any]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            return validators.choice(node, self.check)
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
        validators.boolean,
        "Snapshot the root dataset before a transaction that installs a kernel.",
    ),
    Setting(
        "snapshots.dataset",
        "dataset name",
        "auto",
        validators.dataset,
        "The dataset to snapshot; `auto` is the dataset mounted at `/`.",
    ),
    Setting(
        "snapshots.keep",
        "integer >= 1",
        5,
        validators.positive_int,
        "How many kzguard snapshots to keep; older ones are destroyed.",
    ),
    Setting(
        "snapshots.required",
        "boolean",
        False,
        validators.boolean,
        "Block the transaction when the snapshot cannot be taken.",
    ),
    Setting(
        "metrics.listen",
        "`host:port` or empty",
        "127.0.0.1:9737",
        validators.listen,
        "Where the daemon serves Prometheus metrics (`[::1]:9737` for IPv6); empty disables.",
    ),
    Setting(
        "metrics.textfile",
        "absolute path or null",
        None,
        validators.textfile,
        "A node_exporter textfile (`*.prom`) that hooks and the daemon write; null writes none.",
        example="/var/lib/node_exporter/textfile_collector/kzguard.prom",
    ),
    Setting(
        "modules",
        "list of module names",
        ("zfs", "spl"),
        validators.modules,
        "Kernel modules to guard (`-` is read as `_`, as the kernel does); "
        "modules other than zfs get the module checks but no kernel range.",
        example=["zfs", "spl", "nvidia"],
    ),
    Setting(
        "zfs_ranges",
        "mapping",
        {},
        validators.zfs_ranges,
        "Supported kernels per OpenZFS version, `linux_min` and `linux_max` as quoted "
        "`MAJOR.MINOR[.PATCH]` strings; the last source, after the DKMS META file and the "
        "built-in table.",
        example={"2.4.5": {"linux_min": "4.18", "linux_max": "6.18"}},
    ),
    Setting(
        "require_signature",
        "string",
        "auto",
        ("auto", "always", "never"),
        "Whether a module must carry a valid signature by an enrolled key: `auto` when Secure "
        "Boot enforces module signatures (EFI Secure Boot on, shim validation on), `always`, "
        "or `never` (signatures are still reported).",
    ),
    Setting(
        "trusted_certificates",
        "list of absolute paths",
        (),
        validators.absolute_paths,
        "Extra X.509 certificates (PEM or DER) to trust besides the MOK list, for keys the "
        "kernel carries built in (a distro's or your own kernel's signing key).",
        example=["/etc/pki/kzguard/distro-kernel-signing.pem"],
    ),
    Setting(
        "hook_timeout",
        "integer (seconds)",
        30,
        validators.positive_int,
        "The longest a package-manager hook may take in all (commands, reads, the snapshot); "
        "past it the hook stops, kills what it started and follows `on_error`.",
    ),
)

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SCHEMA}
SECTIONS = frozenset(setting.name.rsplit(".", 1)[0] for setting in SCHEMA if "." in setting.name)
