"""Build real kernel-module-shaped ELF objects (``.ko``, ``.ko.xz``, ``.ko.zst``, ``.ko.gz``).

Each ``.modinfo`` field is a ``static const char`` array in section ``.modinfo``, the shape
the kernel's ``MODULE_INFO()`` gives it, and ``.gnu.linkonce.this_module`` holds the module
name where ``struct module`` keeps it. Symbol versions (``versions``) go in ``__versions`` as
the ``struct modversion_info`` array modpost writes into ``<module>.mod.c``, and with
``extended_versions`` also in ``__version_ext_crcs``/``__version_ext_names`` (Linux 6.14+).
One ``gcc -c`` per distinct module; objects are cached by the hash of their C source in a
private directory under the system temp dir.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from kzguard.root import Runner

CFLAGS = (
    "-c",
    "-O0",
    "-g0",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fno-ident",
    "-fno-toplevel-reorder",
    "-fno-pic",
    "-ffreestanding",
    "-nostdinc",
    "-x",
    "c",
)
COMPRESSORS = {
    "xz": ("xz", "--check=crc32", "--lzma2=dict=1MiB", "-q", "-f"),
    "zst": ("zstd", "-q", "--rm", "-f"),
    "gz": ("gzip", "-n", "-f"),
}
MODULE_NAME_LEN = 56
_CACHE_ENV = "KOBUILD_CACHE"  # a directory, or "0" to disable the object cache


class ToolchainError(RuntimeError):
    """The compiler or a compression tool is missing."""


def vermagic_for(release: str, flags: str = "SMP preempt mod_unload modversions") -> str:
    """A vermagic string as the kernel writes it (note the trailing space)."""
    return f"{release} {flags} "


def default_srcversion(*parts: str) -> str:
    """24 upper-case hex digits derived from ``parts`` (the shape of a real srcversion)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24].upper()


def modinfo_fields(
    *,
    name: str,
    version: str,
    vermagic: str,
    srcversion: Optional[str] = None,
    extra: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """The ``.modinfo`` fields :func:`build_module` writes, in order."""
    extra = list(extra)
    if srcversion is None:
        srcversion = default_srcversion(name, version, vermagic, repr(extra))
    fields = [
        ("name", name),
        ("version", version),
        ("srcversion", srcversion),
        ("vermagic", vermagic),
        ("license", "CDDL"),
    ]
    if not any(key == "depends" for key, _ in extra):
        fields.append(("depends", ""))
    return fields + extra


def c_string(text: str) -> str:
    """A C string literal for ``text`` (UTF-8; every non-printable byte as a 3-digit octal)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if 0x20 <= byte < 0x7F and char not in '"\\?':
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def versions_source(
    versions: Sequence[tuple[str, int]], *, extended: bool = False, swap_crcs: bool = False
) -> list[str]:
    """C lines for the symbol version tables modpost writes (empty when ``versions`` is).

    ``__versions`` holds ``struct modversion_info {unsigned long crc; char name[64 -
    sizeof(unsigned long)];}`` entries; with ``extended`` the ``u32`` CRCs and the concatenated
    NUL-terminated names follow in ``__version_ext_crcs`` and ``__version_ext_names``, and a
    name too long for ``__versions`` is left out of it, as modpost does. ``swap_crcs`` stores
    each CRC byte-swapped, for an object :func:`convert_object` turns into the other byte
    order (objcopy rewrites the ELF headers, not the data).
    """
    if not versions:
        return []
    for symbol, crc in versions:
        if not symbol or "\0" in symbol or not 0 <= crc < 1 << 32:
            raise ValueError(f"bad symbol version {symbol!r}={crc!r}")
    lines = [
        "struct modversion_info { unsigned long crc; char name[64 - sizeof(unsigned long)]; };",
        "static const struct modversion_info ____versions[]",
        '    __attribute__((used, section("__versions"))) = {',
    ]
    for symbol, crc in versions:
        if len(symbol.encode()) >= MODULE_NAME_LEN:
            if extended:
                continue
            raise ValueError(f"symbol name too long for __versions: {symbol!r}")
        value = f"{crc:#010x}ul"
        if swap_crcs:
            value = (
                f"(sizeof(unsigned long) == 8 ? __builtin_bswap64({value})"
                f" : __builtin_bswap32({value}))"
            )
        lines.append(f"    {{ {value}, {c_string(symbol)} }},")
    lines.append("};")
    if extended:
        lines += [
            "static const unsigned int ____version_ext_crcs[]",
            '    __attribute__((used, section("__version_ext_crcs"))) = {',
            *(f"    {_u32(crc, swap_crcs)}," for _, crc in versions),
            "};",
            "static const char ____version_ext_names[]",
            '    __attribute__((used, section("__version_ext_names"))) =',
            *(f"    {c_string(symbol + chr(0))}" for symbol, _ in versions),
            "    ;",
        ]
    return lines


def _u32(crc: int, swap: bool) -> str:
    return f"__builtin_bswap32({crc:#010x}u)" if swap else f"{crc:#010x}u"


def module_source(
    name: str,
    fields: Sequence[tuple[str, str]],
    versions: Sequence[tuple[str, int]] = (),
    *,
    extended_versions: bool = False,
    swap_crcs: bool = False,
) -> str:
    """The C source of a module object carrying ``fields`` in ``.modinfo``.

    ``versions`` (symbol, CRC) pairs become the symbol version tables; see
    :func:`versions_source`.
    """
    if len(name.encode()) >= MODULE_NAME_LEN or "\0" in name:
        raise ValueError(f"bad module name {name!r}")
    lines = []
    for n, (key, value) in enumerate(fields):
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ValueError(f"bad modinfo field {key!r}={value!r}")
        ident = re.sub(r"\W", "_", key, flags=re.ASCII)
        lines.append(
            f"static const char __UNIQUE_ID_{ident}{n}[]"
            ' __attribute__((used, section(".modinfo"), aligned(1)))'
            f" = {c_string(f'{key}={value}')};"
        )
    lines += [
        f"struct module {{ unsigned int state; void *list[2]; char name[{MODULE_NAME_LEN}]; }};",
        "struct module __this_module",
        '    __attribute__((used, section(".gnu.linkonce.this_module")))',
        f"    = {{ .name = {c_string(name)} }};",
        *versions_source(versions, extended=extended_versions, swap_crcs=swap_crcs),
        "",
    ]
    return "\n".join(lines)


def build_module(
    dest_dir: Path,
    *,
    name: str,
    version: str,
    vermagic: str,
    srcversion: Optional[str] = None,
    extra: Sequence[tuple[str, str]] = (),
    compression: Optional[str] = None,
    cc: str = "gcc",
    versions: Sequence[tuple[str, int]] = (),
    extended_versions: bool = False,
) -> Path:
    """Compile a module object into ``dest_dir/<name>.ko[.xz|.zst|.gz]`` and return its path.

    ``versions``: the (symbol, CRC) pairs modpost would record for the symbols it imports.
    """
    if compression is not None and compression not in COMPRESSORS:
        raise ValueError(f"unknown compression {compression!r}")
    fields = modinfo_fields(
        name=name, version=version, vermagic=vermagic, srcversion=srcversion, extra=extra
    )
    source = module_source(name, fields, versions, extended_versions=extended_versions)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kobuild-") as tmp:
        obj = Path(tmp, f"{name}.ko")
        compile_c(source, obj, cc=cc)
        if compression:
            obj = compress(obj, compression)
        final = dest_dir / obj.name
        shutil.move(str(obj), str(final))
    return final


def compile_c(source: str, out: Path, *, cc: str = "gcc", cflags: Sequence[str] = ()) -> Path:
    """Compile C ``source`` into the object file ``out`` (served from the cache when it can)."""
    argv = [_tool(cc), *CFLAGS, *cflags]
    key = hashlib.sha256("\0".join([*argv, source]).encode()).hexdigest()
    cache = _cache_dir()
    cached = cache / f"{key}.o" if cache else None
    if cached and cached.is_file():
        shutil.copyfile(cached, out)
        return out
    src = out.with_suffix(".c")
    src.write_text(source)
    Runner().run([*argv, str(src), "-o", str(out)])
    src.unlink()
    if cached:
        _store(out, cached)
    return out


def compress(path: Path, compression: str) -> Path:
    """Compress ``path`` in place with the real tool; returns the new path (the old is gone)."""
    tool, *args = COMPRESSORS[compression]
    Runner().run([_tool(tool), *args, str(path)])
    return path.with_name(f"{path.name}.{compression}")


def convert_object(src: Path, dest: Path, target: str) -> Path:
    """Rewrite an object in another BFD target (``elf32-i386``, ``elf64-powerpc``, ...).

    GNU objcopy cannot change byte order, so llvm-objcopy is tried when it fails.
    """
    errors = []
    for tool in ("objcopy", "llvm-objcopy"):
        if not shutil.which(tool):
            continue
        proc = Runner().run([tool, "-O", target, str(src), str(dest)], check=False)
        if proc.returncode == 0:
            return dest
        errors.append(proc.stderr.strip())
    raise ToolchainError(f"cannot convert {src} to {target}: {'; '.join(errors) or 'no objcopy'}")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolchainError(f"{name} not found on PATH; it is needed to build test modules")
    return path


def _cache_dir() -> Optional[Path]:
    """A private per-user cache directory, or ``None`` when caching is off or unsafe."""
    setting = os.environ.get(_CACHE_ENV)
    if setting == "0":
        return None
    path = Path(setting or Path(tempfile.gettempdir(), f"kzguard-kobuild-{os.getuid()}"))
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError:
        return None
    private = stat.S_ISDIR(info.st_mode) and not info.st_mode & 0o022
    return path if private and info.st_uid == os.getuid() else None


def _store(obj: Path, cached: Path) -> None:
    """Copy ``obj`` into the cache atomically, so parallel builders never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(obj, tmp)
        os.replace(tmp, cached)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
