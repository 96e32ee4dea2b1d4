"""kABI: will a module built for one kernel load into another? (EL kmods in ``weak-updates``)

A module built with ``CONFIG_MODVERSIONS`` records the CRC of every symbol it imports: in
``__versions`` (``struct modversion_info {unsigned long crc; char name[64 - sizeof(unsigned
long)];}`` entries, in the object's word size and byte order) and, since Linux 6.14 with
``CONFIG_EXTENDED_MODVERSIONS``, in ``__version_ext_crcs`` (``u32`` each) with the names
NUL-terminated and concatenated in ``__version_ext_names``. A kernel's exported CRCs are in its
``Module.symvers`` (``/boot/symvers-<release>.gz`` on EL). :func:`check` compares the two the
way the kernel's loader does (``kernel/module/version.c``):

- a symbol whose CRC differs is refused (``disagrees about version of symbol``);
- a symbol the kernel does not export cannot be resolved (``Unknown symbol``), unless a
  companion module loaded with it exports it (``spl`` for ``zfs``: pass its exports as
  ``provided``);
- a ``GPL``-only export is not resolved for a module whose licence is not GPL-compatible;
- ``module_layout`` is not an import: ``check_modstruct_version`` compares its CRC when both
  sides have it and lets it pass when either lacks it;
- a kernel built without modversions (every CRC 0 in its symvers) compares no CRCs.
"""

from __future__ import annotations

import struct

from kzguard.base.errors import FactError
from kzguard.base.record import Record
from kzguard.facts.elf import find_section
from kzguard.root import Root

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import Any, Optional

COMPATIBLE, INCOMPATIBLE, UNKNOWN = "compatible", "incompatible", "unknown"
MODULE_LAYOUT = "module_layout"
VERSIONS_ENTRY = 64  # sizeof(struct modversion_info) on every word size
SYMVERS_PATHS = (
    "/boot/symvers-{release}.gz",  # EL kernel-core
    "/boot/symvers-{release}",
    "/lib/modules/{release}/symvers.gz",  # Fedora / EL kernel-core, newer
    "/lib/modules/{release}/build/Module.symvers",
    "/usr/src/kernels/{release}/Module.symvers",  # EL kernel-devel
    "/usr/src/linux-headers-{release}/Module.symvers",  # Debian / Ubuntu headers
)
MAX_SYMVERS_SIZE = 64 * 1024 * 1024
"""Decompressed size above which a symvers file is refused (a real one is about 2 MiB)."""

# include/linux/license.h: license_is_gpl_compatible()
GPL_COMPATIBLE = frozenset(
    ("GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL")
)


# --- the module's side -----------------------------------------------------------------------


def module_crcs(module: bytes) -> dict[str, int]:
    """Symbol -> CRC the module was built against, from an uncompressed module's bytes.

    The extended tables win when present (the kernel then ignores ``__versions``). ``{}`` when
    the module has no version tables; :class:`FactError` when they are malformed. Where a name
    repeats, the first entry counts, as in the kernel's lookup. A module file is read and
    decompressed by :func:`kzguard.facts.modinfo.load_module`.
    """
    ext_crcs = find_section(module, "__version_ext_crcs")
    ext_names = find_section(module, "__version_ext_names")
    order = "<" if module[5] == 1 else ">"  # find_section checked the header
    if ext_crcs is not None or ext_names is not None:
        return _extended(ext_crcs, ext_names, order)
    section = find_section(module, "__versions")
    if section is None:
        return {}
    return _basic(section, order, 4 if module[4] == 1 else 8)


def _basic(section: bytes, order: str, word: int) -> dict[str, int]:
    if len(section) % VERSIONS_ENTRY:
        raise FactError(f"malformed __versions section: {len(section)} bytes")
    fmt = f"{order}{'I' if word == 4 else 'Q'}{VERSIONS_ENTRY - word}s"
    found: dict[str, int] = {}
    for crc, raw in struct.iter_unpack(fmt, section):
        end = raw.find(b"\0")
        if end <= 0:
            raise FactError("malformed __versions section: empty or unterminated name")
        found.setdefault(raw[:end].decode("utf-8", "replace"), crc)
    return found


def _extended(crcs: Optional[bytes], names: Optional[bytes], order: str) -> dict[str, int]:
    if crcs is None or names is None:
        raise FactError("malformed module: __version_ext_crcs or _names without the other")
    if len(crcs) % 4:
        raise FactError(f"malformed __version_ext_crcs section: {len(crcs)} bytes")
    values = [crc for (crc,) in struct.iter_unpack(order + "I", crcs)]
    words = names.split(b"\0")[:-1]  # what follows the last NUL is not a name
    if len(words) < len(values):
        raise FactError("malformed module: more extended version CRCs than names")
    found: dict[str, int] = {}
    for raw, crc in zip(words, values):
        if not raw:
            raise FactError("malformed __version_ext_names section: empty name")
        found.setdefault(raw.decode("utf-8", "replace"), crc)
    return found


def module_exports(module: bytes) -> frozenset[str]:
    """The names a module exports (``__ksymtab_strings``; also holds namespace names).

    What a companion module (``spl`` for ``zfs``) provides: pass it to :func:`check`.
    """
    section = find_section(module, "__ksymtab_strings") or b""
    return frozenset(w.decode("utf-8", "replace") for w in section.split(b"\0") if w)


# --- the kernel's side -----------------------------------------------------------------------


class Symvers(Record):
    """A kernel's exported symbol CRCs, read from ``path`` (in-root)."""

    path: str
    crcs: dict  # symbol -> CRC
    gpl_only: frozenset = frozenset()  # symbols exported with EXPORT_SYMBOL_GPL
    problems: int = 0  # lines that were not a symbol entry

    @property
    def has_crcs(self) -> bool:
        """False for a kernel built without modversions (it writes every CRC as 0)."""
        return any(self.crcs.values())

    def __repr__(self) -> str:
        return f"Symvers(path={self.path!r}, symbols={len(self.crcs)}, problems={self.problems})"

    def __hash__(self) -> int:
        return hash((self.path, len(self.crcs), self.problems))


def read_symvers(root: Root, release: str) -> Optional[Symvers]:
    """The exported CRCs of kernel ``release``, from the first of :data:`SYMVERS_PATHS` there.

    ``None`` when there is none. A file that cannot be read or holds no entry is passed over
    for the next; :class:`FactError` when every one present failed.
    """
    if not release or "/" in release or release in (".", ".."):
        raise FactError(f"bad kernel release {release!r}")
    failed = []
    for template in SYMVERS_PATHS:
        inner = template.format(release=release)
        if not root.is_file(inner):
            continue
        try:
            return parse_symvers(_read(root, inner), inner)
        except FactError as exc:
            failed.append(f"{inner}: {exc}")
    if failed:
        raise FactError("; ".join(failed))
    return None


def _read(root: Root, inner: str) -> str:
    data = root.read_bytes(inner)
    if inner.endswith(".gz"):
        import zlib

        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflate.decompress(data, MAX_SYMVERS_SIZE + 1)
        except zlib.error as exc:
            raise FactError(f"cannot decompress gz data: {exc}") from exc
        if len(data) > MAX_SYMVERS_SIZE:
            raise FactError(f"decompressed symvers exceeds {MAX_SYMVERS_SIZE >> 20} MiB")
        if not inflate.eof:
            raise FactError("cannot decompress gz data: truncated")
    elif len(data) > MAX_SYMVERS_SIZE:
        raise FactError(f"symvers exceeds {MAX_SYMVERS_SIZE >> 20} MiB")
    return data.decode("utf-8", "replace")


def parse_symvers(text: str, path: str = "") -> Symvers:
    """Parse ``Module.symvers`` text: ``0xCRC<TAB>symbol<TAB>module<TAB>EXPORT_…[<TAB>ns]``.

    Also the 5.4-5.9 order (namespace third) and the older 3- and 4-column files. A line that is
    not an entry counts in ``problems``; a text with no entry at all is a :class:`FactError`.
    """
    crcs: dict[str, int] = {}
    gpl = []
    problems = 0
    for line in text.split("\n"):
        fields = line.split("\t")
        if len(fields) < 2 or fields[0][:2] != "0x" or not fields[1]:
            if line.strip():
                problems += 1
            continue
        symbol = fields[1]
        if symbol in crcs:
            continue
        try:
            crcs[symbol] = int(fields[0], 16)
        except ValueError:
            problems += 1
            continue
        # EXPORT_SYMBOL[_GPL] is the 4th field, the 5th in 5.4-5.9 (there the namespace is 3rd)
        export = fields[3] if len(fields) > 3 and fields[3][:7] == "EXPORT_" else fields[-1]
        if export[:7] == "EXPORT_" and export[-4:] == "_GPL":
            gpl.append(symbol)
    if not crcs:
        raise FactError(f"no symbol entries ({problems} other lines)")
    return Symvers(path, crcs, frozenset(gpl), problems)


# --- the comparison --------------------------------------------------------------------------


class KabiResult(Record):
    """Whether a module's recorded CRCs fit a kernel's exports (symbol names sorted)."""

    status: str  # compatible, incompatible or unknown
    source: Optional[str] = None  # the symvers file judged against
    missing: tuple[str, ...] = ()  # imports the kernel does not export
    changed: tuple[str, ...] = ()  # imports whose CRC differs
    gpl_only: tuple[str, ...] = ()  # GPL-only exports a non-GPL module cannot use
    checked: int = 0  # symbols compared
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "source": self.source,
            "missing": list(self.missing),
            "changed": list(self.changed),
            "gpl_only": list(self.gpl_only),
            "checked": self.checked,
            "message": self.message,
        }


def check(
    module_crcs: dict[str, int],
    symvers: Optional[Symvers],
    *,
    provided: Collection[str] = (),
    license: Optional[str] = None,
) -> KabiResult:
    """Judge a module's recorded CRCs (:func:`module_crcs`) against a kernel's exports.

    ``provided``: symbols companion modules export (they need not be in the kernel);
    ``license``: the module's ``.modinfo`` licence, to refuse GPL-only exports to a non-GPL one.
    """
    if symvers is None:
        return KabiResult(UNKNOWN, message="no symvers file for this kernel")
    if not module_crcs:
        message = "the module records no symbol versions (built without modversions)"
        return KabiResult(UNKNOWN, symvers.path, message=message)
    exported = symvers.crcs
    compare = symvers.has_crcs
    gpl_ok = license is None or license in GPL_COMPATIBLE
    missing, changed, gpl_only = [], [], []
    checked = 0
    for name, crc in module_crcs.items():
        if name in provided:
            continue
        checked += 1
        kernel = exported.get(name)
        if kernel is None:
            if name != MODULE_LAYOUT:
                missing.append(name)
            continue
        if compare and kernel != crc:
            changed.append(name)
        if not gpl_ok and name != MODULE_LAYOUT and name in symvers.gpl_only:
            gpl_only.append(name)
    status = INCOMPATIBLE if missing or changed or gpl_only else COMPATIBLE
    return KabiResult(
        status,
        symvers.path,
        tuple(sorted(missing)),
        tuple(sorted(changed)),
        tuple(sorted(gpl_only)),
        checked,
        _message(status, missing, changed, gpl_only, checked, symvers.path),
    )


def _message(
    status: str,
    missing: list[str],
    changed: list[str],
    gpl_only: list[str],
    checked: int,
    path: str,
) -> str:
    if status == COMPATIBLE:
        return f"all {checked} symbol versions match {path}"
    parts = []
    for what, names in (
        ("not exported", missing),
        ("changed", changed),
        ("GPL-only", gpl_only),
    ):
        if names:
            shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
            parts.append(f"{len(names)} {what} ({shown})")
    return f"{'; '.join(parts)} against {path}"
