"""Reason codes: stable strings that explain a verdict (documented in docs/reasons.md).

A reason is either *unsafe* (the kernel will not load the module) or *unknown* (kzguard could
not prove it will). A kernel's verdict is ``unsafe`` if any reason is unsafe, else ``unknown``
if any reason is unknown, else ``safe``.
"""

from __future__ import annotations

from kzguard.base.record import Factory, Record

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Optional

SAFE = "safe"
UNSAFE = "unsafe"
UNKNOWN = "unknown"


class ReasonCode(Record):
    code: str
    severity: str  # UNSAFE or UNKNOWN
    summary: str


CODES: tuple[ReasonCode, ...] = (
    ReasonCode("kernel-too-new", UNSAFE, "the kernel is newer than the ZFS version supports"),
    ReasonCode("kernel-too-old", UNSAFE, "the kernel is older than the ZFS version supports"),
    ReasonCode("module-missing", UNSAFE, "no module file for this kernel"),
    ReasonCode("vermagic-mismatch", UNSAFE, "the module was built for another kernel"),
    ReasonCode("dkms-not-installed", UNSAFE, "DKMS has not built and installed the module"),
    ReasonCode(
        "signature-missing", UNSAFE, "Secure Boot requires a signed module and this one is not"
    ),
    ReasonCode(
        "signer-not-enrolled",
        UNSAFE,
        "the module is signed by a key that is not enrolled (MOK list, trusted certificates)",
    ),
    ReasonCode(
        "signature-invalid",
        UNSAFE,
        "the signature does not verify: changed after signing, or a malformed signature",
    ),
    ReasonCode(
        "kabi-incompatible",
        UNSAFE,
        "a kABI-tracked module needs symbols the kernel no longer exports with the same CRC",
    ),
    ReasonCode(
        "initramfs-missing-module",
        UNSAFE,
        "the root is on ZFS and the kernel's initramfs is missing or holds no zfs module",
    ),
    ReasonCode(
        "module-not-indexed",
        UNSAFE,
        "the module file is on disk but the kernel's modules.dep does not list it (or lists a "
        "file that is gone): modprobe will not find it until depmod runs",
    ),
    ReasonCode(
        "dkms-broken",
        UNSAFE,
        "the DKMS registration of the module is broken (its source or dkms.conf is gone): DKMS "
        "cannot build it for this kernel",
    ),
    ReasonCode("module-unreadable", UNKNOWN, "the module file exists but cannot be read"),
    ReasonCode(
        "kernel-unreadable",
        UNKNOWN,
        "the kernel's modules directory (or every modules directory) cannot be read, or no "
        "kernel is found at all: nothing seen is never safe",
    ),
    ReasonCode(
        "kabi-unknown", UNKNOWN, "the kernel's symbol versions (symvers) are not on the host"
    ),
    ReasonCode("initramfs-unreadable", UNKNOWN, "the kernel's initramfs cannot be read"),
    ReasonCode("zfs-version-unknown", UNKNOWN, "no range source knows this ZFS version"),
    ReasonCode("zfs-not-found", UNKNOWN, "no ZFS source, package or module on the host"),
    ReasonCode("release-unparsable", UNKNOWN, "the kernel release cannot be parsed"),
)
BY_CODE: dict[str, ReasonCode] = {c.code: c for c in CODES}


class Reason(Record):
    """One reason on one kernel, with a message for people and details for machines."""

    code: str
    message: str
    module: Optional[str] = None
    details: dict[str, object] = Factory(dict)
    _uncompared = frozenset({"details"})

    @property
    def severity(self) -> str:
        return BY_CODE[self.code].severity

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"code": self.code, "severity": self.severity}
        out["message"] = self.message
        if self.module:
            out["module"] = self.module
        out.update(self.details)
        return out


def verdict_of(reasons: tuple[Reason, ...]) -> str:
    """Combine reasons into ``safe``, ``unsafe`` or ``unknown``."""
    severities = {r.severity for r in reasons}
    if UNSAFE in severities:
        return UNSAFE
    if UNKNOWN in severities:
        return UNKNOWN
    return SAFE


def render_docs() -> str:
    """docs/reasons.md, generated from CODES so the two never drift."""
    lines = [
        "# Reason codes",
        "",
        "Stable strings in `kzguard check --json`: `kernels[].reasons` lists them,",
        "`kernels[].details[]` adds a message, the module and facts for each.",
        "A kernel is `unsafe` if any reason is unsafe, else `unknown` if any is unknown.",
        "",
        "| code | verdict | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{c.code}` | {c.severity} | {c.summary} |" for c in CODES]
    return "\n".join(lines) + "\n"
