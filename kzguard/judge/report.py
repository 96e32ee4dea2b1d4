"""Render a :class:`~kzguard.judge.policy.Report` for people (a table and what to do) or as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from kzguard.distros.base import DKMS, KMOD, NONE, PACKAGE, PREBUILT
from kzguard.facts.zfs import normalize_version
from kzguard.judge.doctor import Advice, advise
from kzguard.judge.policy import KernelVerdict, Report
from kzguard.judge.reasons import SAFE

DELIVERY_LABELS = {
    DKMS: "DKMS",
    KMOD: "kABI-tracked kmod",
    PREBUILT: "prebuilt with the kernel",
    PACKAGE: "per-kernel package",
    NONE: "not found",
}


def to_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n"


def render(report: Report, *, header: bool = True) -> str:
    """The human view: host summary, one line per kernel, then each problem with its fix."""
    lines: list[str] = []
    if header:
        lines += _header(report)
        lines.append("")
    if report.kernels:
        lines += _table(report.kernels)
    for reason in report.host_reasons:
        lines.append(f"NOT SAFE: kzguard could not see the kernels: {reason.message}")
    if report.host_reasons and not any(k.verdict != SAFE for k in report.kernels):
        lines += ["", "What to do: `kzguard doctor` explains it; run kzguard where it can read"]
        lines += ["the kernels' module directories (as root, outside a sandbox that hides them)."]
    problems = [k for k in report.kernels if k.verdict != SAFE]
    if problems:
        advice = advise(report)
        lines += ["", "What to do (`kzguard doctor` explains each step)"]
        for kernel in problems:
            lines += _problem(report, kernel, advice)
    if header and report.host.notes:
        lines += ["", "Notes"]
        lines += [f"  {n}" for n in report.host.notes]
    if header and report.host.problems:
        lines += ["", "Facts kzguard could not read"]
        lines += [f"  {p}" for p in report.host.problems]
    return "\n".join(lines) + "\n"


def _header(report: Report) -> list[str]:
    host = report.host
    name = host.os.pretty_name or host.os.id or "unknown OS"
    lines = [
        f"Host       {name} (family {host.family}, root {host.root})",
        f"Running    {host.running or 'unknown'}",
        f"ZFS        {_zfs_summary(report)}",
        f"Secure Boot {_secure_boot_summary(report)}",
    ]
    if report.transaction:
        t = report.transaction
        lines.append(
            f"Change     {t.manager}: install {', '.join(t.install) or 'no kernel'}"
            + (f", ZFS -> {t.zfs_version}" if t.zfs_version else "")
        )
    nb = report.next_boot
    if nb:
        how = "newest installed" if nb.source == "newest-installed" else nb.source
        lines.append(f"Next boot  {nb.release}  {_verdict_label(nb.verdict)}  ({how})")
    else:
        lines.append("Next boot  no installed kernel found")
    return lines


def _secure_boot_summary(report: Report) -> str:
    host = report.host
    boot = host.secure_boot
    if not boot.efi:
        state = "not an EFI system"
    elif boot.secure_boot is None:
        state = "unknown (SecureBoot variable not readable)"
    elif not boot.secure_boot:
        state = "off"
    elif boot.mok_validation is False:
        state = "on, but shim validation is disabled"
    else:
        state = "on"
    if host.signatures_required:
        keys = "" if host.certificates is None else f" ({len(host.certificates)} key(s) enrolled)"
        return f"{state}: modules must carry a valid signature by an enrolled key{keys}"
    return f"{state}: module signatures are reported, not required"


def _zfs_summary(report: Report) -> str:
    host = report.host
    label = DELIVERY_LABELS.get(host.delivery, host.delivery)
    if report.zfs_override:
        return f"judged as ZFS {report.zfs_override} (--zfs-version), now via {label}"
    if host.delivery == NONE:
        return "not found (no /usr/src/zfs-*, DKMS entry or zfs module)"
    versions = host.dkms_versions() or host.module_versions()
    ranged = next((k for k in report.kernels if k.zfs_range), None)
    text = f"{normalize_version(versions[0]) if versions else '?'} via {label}"
    if ranged and ranged.zfs_range:
        r = ranged.zfs_range
        text += f"; supports Linux {r.linux_min} to {r.linux_max}.x ({r.origin})"
    return text


def _table(kernels: Sequence[KernelVerdict]) -> list[str]:
    rows = [("KERNEL", "UPSTREAM", "STATE", "ZFS MODULE", "VERDICT")]
    for k in kernels:
        verdict = _verdict_label(k.verdict)
        if k.reasons:
            verdict += "  " + ",".join(dict.fromkeys(r.code for r in k.reasons))
        rows.append((k.release, k.upstream or "?", ",".join(k.states), _module_cell(k), verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in rows
    ]


def _module_cell(kernel: KernelVerdict) -> str:
    module = dict(kernel.modules).get("zfs") if kernel.modules else None
    if module is None:
        return "missing" if kernel.modules else "-"
    if module.error:
        return "unreadable"
    return f"{module.version or '?'} {module.location}"


def _verdict_label(verdict: str) -> str:
    return "safe" if verdict == SAFE else verdict.upper()


def _problem(report: Report, kernel: KernelVerdict, advice: list[Advice]) -> list[str]:
    lines = ["", f"  {kernel.release}  {_verdict_label(kernel.verdict)}"]
    for reason in kernel.reasons:
        lines.append(f"    {reason.code}: {reason.message}")
    commands = [c for item in advice if item.kernel == kernel.release for c in item.commands]
    lines += [f"    # {c}" if c.startswith("(") else f"    $ {c}" for c in dict.fromkeys(commands)]
    return lines
