"""Render a :class:`~kzguard.judge.policy.Report` for people (a table and what to do) or as JSON."""

from __future__ import annotations

try:  # json's C accelerator itself: importing the json package costs 1.5 ms (its decoder)
    from _json import encode_basestring_ascii as _string
    from _json import make_encoder as _c_make_encoder
except ImportError:  # pragma: no cover - a Python without it: json's own, in Python
    from json.encoder import py_encode_basestring_ascii as _string

    _c_make_encoder = None

from kzguard.distros.base import DKMS, KMOD, NONE, PACKAGE, PREBUILT
from kzguard.facts.zfs import normalize_version
from kzguard.judge.policy import KernelVerdict, Report
from kzguard.judge.reasons import SAFE

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Callable

    from kzguard.judge.doctor import Advice

DELIVERY_LABELS = {
    DKMS: "DKMS",
    KMOD: "kABI-tracked kmod",
    PREBUILT: "prebuilt with the kernel",
    PACKAGE: "per-kernel package",
    NONE: "not found",
}


def to_json(report: Report) -> str:
    """The report as JSON, indented by two spaces: ``json.dumps(..., indent=2)`` exactly."""
    return dumps_indented(report.to_dict()) + "\n"


def dumps_indented(value: object) -> str:
    """``json.dumps(value, indent=2)``, byte for byte, in a fraction of its time.

    ``json`` encodes with its C accelerator only without ``indent``; with it, a generator per
    level yields every token. Here a container whose items are all plain values (strings,
    numbers, booleans, ``None``, empty containers), most of a report, goes to the C encoder
    with separators that carry its indentation; the rest is walked once. Output, types and
    errors are the ``json`` module's (a value it cannot encode raises ``TypeError``).
    """
    out: list[str] = []
    _encode(value, out, "\n")
    return "".join(out)


_PLAIN = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({list, tuple, dict})
_FLAT_ENCODERS: dict[str, Callable[[object, int], Sequence[str]]] = {}


def _flat_encoder(inner: str) -> Callable[[object, int], Sequence[str]]:
    """json's C encoder with the item separator of one indentation level."""
    encoder = _FLAT_ENCODERS.get(inner)
    if encoder is None:
        if _c_make_encoder is None:  # a Python without the accelerator
            return _python_flat
        encoder = _c_make_encoder(
            None, _unencodable, _string, None, ": ", "," + inner, False, False, True
        )
        _FLAT_ENCODERS[inner] = encoder
    return encoder


def _python_flat(value: object, level: int) -> Sequence[str]:
    """The stand-in for the C encoder where there is none (never called: see _encode)."""
    raise NotImplementedError


def _unencodable(value: object) -> object:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _flat(items: Iterable[object]) -> bool:
    """Every item a plain value or an empty list, tuple or dict (of exactly those types)."""
    for item in items:
        kind = type(item)
        if kind not in _PLAIN and (kind not in _CONTAINERS or item):  # type: ignore[truthy-bool]
            return False
    return True


def _encode(value: object, out: list[str], newline: str) -> None:
    """Append ``value`` encoded at the indentation ``newline`` ends with."""
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        if not value:  # type: ignore[truthy-bool]
            out.append("{}" if kind is dict else "[]")
            return
        inner = newline + "  "
        items = value.values() if kind is dict else value  # type: ignore[union-attr]
        if _flat(items) and (kind is not dict or all(type(k) is str for k in value)):
            encoder = _flat_encoder(inner)
            if encoder is not _python_flat:
                chunks = encoder(value, 0)
                opening = "{" if kind is dict else "["
                out.append(opening + inner + "".join(chunks)[1:-1] + newline + chunks[-1][-1])
                return
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        separator = "{" + inner
        for key, item in value.items():
            out.append(separator + _encode_key(key) + ": ")
            separator = "," + inner
            _encode(item, out, inner)
        out.append(newline + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        separator = "[" + inner
        for item in value:
            out.append(separator)
            _encode(item, out, inner)
            separator = "," + inner
        out.append(newline + "]")
    else:
        out.append(_scalar(value))


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == float("inf"):
        return "Infinity"
    if value == -float("inf"):
        return "-Infinity"
    return float.__repr__(value)


def _encode_key(key: object) -> str:
    """A dict key as ``json`` writes it: strings as they are; floats, ``True``, ``False``,
    ``None`` and ints converted; anything else a ``TypeError``."""
    if isinstance(key, str):
        return _string(key)
    if isinstance(key, float):
        return _string(_float(key))
    if key is True:
        return '"true"'
    if key is False:
        return '"false"'
    if key is None:
        return '"null"'
    if isinstance(key, int):
        return _string(int.__repr__(key))
    raise TypeError(f"keys must be str, int, float, bool or None, not {key.__class__.__name__}")


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
        from kzguard.judge.doctor import advise  # only when there is something to do

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
