"""Read a kernel module's ``.modinfo`` section (name, version, vermagic, depends, ...).

A module file is a relocatable ELF object, optionally compressed (``.ko.xz``, ``.ko.zst``,
``.ko.gz``). Its ``.modinfo`` section holds NUL-separated ``key=value`` strings, exactly as the
kernel's ``MODULE_INFO()`` emits them; the section is found by :mod:`kzguard.facts.elf`.
"""

from __future__ import annotations

from kzguard import facts as _fs
from kzguard.base.errors import CommandError, FactError
from kzguard.base.record import Record
from kzguard.facts.elf import find_section
from kzguard.root import Root, Runner

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Any, BinaryIO, Optional

COMPRESSION_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
MAX_MODULE_SIZE = 256 * 1024 * 1024
"""Decompressed size above which a module is refused (a decompression bomb guard)."""

_READ_CHUNK = 1024 * 1024
_ZSTD_STEP = 4096  # compressed bytes fed per call: bounds the overshoot past the cap


def compression_of(filename: str) -> Optional[str]:
    """``"xz"``, ``"zst"`` or ``"gz"`` for a compressed module file name, else ``None``."""
    for suffix in COMPRESSION_SUFFIXES[1:]:
        if filename.endswith(suffix):
            return suffix.rsplit(".", 1)[1]
    return None


def module_name_of(filename: str) -> str:
    """The module name of a file name or path: ``"extra/zfs.ko.zst"`` -> ``"zfs"``."""
    base = filename.rsplit("/", 1)[-1]
    for suffix in COMPRESSION_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


# --- decompression ---------------------------------------------------------------------------


def decompress(
    data: bytes, compression: Optional[str], *, runner: Optional[Runner] = None
) -> bytes:
    """Decompress a module file's bytes; ``compression`` is what :func:`compression_of` returns.

    Output above :data:`MAX_MODULE_SIZE` is refused. ``runner`` runs ``zstd -dc`` when the
    ``zstandard`` package is not installed.
    """
    if compression is None:
        return data
    import gzip
    import io
    import lzma
    import zlib

    try:
        if compression == "xz":
            return _read_capped(lzma.LZMAFile(io.BytesIO(data)))
        if compression == "gz":
            return _read_capped(gzip.GzipFile(fileobj=io.BytesIO(data)))
        if compression == "zst":
            return _unzstd(data, runner)
    except FactError:
        raise
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError, CommandError) as exc:
        raise FactError(f"cannot decompress {compression} data: {_reason(exc)}") from exc
    raise ValueError(f"unknown compression {compression!r}")


def _read_capped(stream: BinaryIO) -> bytes:
    out = bytearray()
    while True:
        chunk = stream.read(_READ_CHUNK)
        if not chunk:
            return bytes(out)
        out += chunk
        _check_size(len(out))


def _check_size(size: int) -> None:
    if size > MAX_MODULE_SIZE:
        raise FactError(f"decompressed module exceeds {MAX_MODULE_SIZE >> 20} MiB")


def _unzstd(data: bytes, runner: Optional[Runner]) -> bytes:
    try:
        import zstandard
    except ImportError:
        if runner is None:
            raise FactError("zst data, no zstandard module, and no command may run here") from None
        return _unzstd_command(data, runner)
    try:
        return _unzstd_frames(zstandard, data)
    except zstandard.ZstdError as exc:
        raise FactError(f"cannot decompress zst data: {_reason(exc)}") from exc


def _unzstd_frames(zstandard: Any, data: bytes) -> bytes:
    """Decompress every frame, fed in small steps so a bomb stops near the cap."""
    out = bytearray()
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        dobj = zstandard.ZstdDecompressor().decompressobj()
        while not dobj.eof:
            if pos >= len(data):
                raise FactError("cannot decompress zst data: truncated frame")
            chunk = view[pos : pos + _ZSTD_STEP]
            pos += len(chunk)
            out += dobj.decompress(chunk)
            _check_size(len(out))
        pos -= len(dobj.unused_data)
    return bytes(out)


def _unzstd_command(data: bytes, runner: Runner) -> bytes:
    proc = runner.run_bytes(["zstd", "-dc"], input=data, max_output=MAX_MODULE_SIZE)
    _check_size(len(proc.stdout))
    return proc.stdout


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# --- the .modinfo section --------------------------------------------------------------------


class ModInfo(Record):
    """The ``key=value`` fields of a ``.modinfo`` section, in file order (keys repeat)."""

    fields: tuple[tuple[str, str], ...] = ()

    def get(self, key: str) -> Optional[str]:
        """The first value of ``key``, or ``None``."""
        return next((v for k, v in self.fields if k == key), None)

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key`` in file order (``alias``, ``parm``, ...)."""
        return [v for k, v in self.fields if k == key]

    @property
    def name(self) -> Optional[str]:
        return self.get("name")

    @property
    def version(self) -> Optional[str]:
        return self.get("version")

    @property
    def vermagic(self) -> Optional[str]:
        return self.get("vermagic")

    @property
    def srcversion(self) -> Optional[str]:
        return self.get("srcversion")

    @property
    def depends(self) -> list[str]:
        """The modules this one needs: ``depends=spl,zcommon`` -> ``["spl", "zcommon"]``."""
        return [d for d in (self.get("depends") or "").split(",") if d]

    @property
    def vermagic_release(self) -> Optional[str]:
        """The kernel release the module was built for (vermagic's first word)."""
        words = (self.vermagic or "").split()
        return words[0] if words else None

    def to_dict(self) -> dict[str, Any]:
        """The main fields as a JSON-friendly dict."""
        return {
            "name": self.name,
            "version": self.version,
            "vermagic": self.vermagic,
            "vermagic_release": self.vermagic_release,
            "srcversion": self.srcversion,
            "depends": self.depends,
            "license": self.get("license"),
        }


def parse_modinfo_section(section: bytes) -> ModInfo:
    """Parse NUL-separated ``key=value`` strings; padding and entries without ``=`` are skipped."""
    fields = []
    for raw in section.split(b"\0"):
        key, sep, value = raw.decode("utf-8", errors="replace").partition("=")
        if sep:
            fields.append((key, value))
    return ModInfo(tuple(fields))


def read_modinfo(data: bytes) -> ModInfo:
    """The ``.modinfo`` of an uncompressed module's bytes (ELF32/64, either byte order)."""
    section = find_section(data, ".modinfo")
    if section is None:
        raise FactError("no .modinfo section")
    return parse_modinfo_section(section)


# --- through a root --------------------------------------------------------------------------


def load_module(
    root: Root, inner: str, *, runner: Optional[Runner] = None, host: Optional[str] = None
) -> bytes:
    """A module file's ELF bytes, read through ``root`` and decompressed by its suffix
    (``host``: its host path, when the root resolved it already)."""
    data = root.read_bytes(inner) if host is None else _fs.read_file(host, inner)
    try:
        return decompress(data, compression_of(inner), runner=runner)
    except FactError as exc:
        raise FactError(f"{inner}: {exc}") from exc


def module_modinfo(root: Root, inner: str, *, runner: Optional[Runner] = None) -> ModInfo:
    """The ``.modinfo`` of the module file at ``inner`` in ``root``."""
    data = load_module(root, inner, runner=runner)
    try:
        return read_modinfo(data)
    except FactError as exc:
        raise FactError(f"{inner}: {exc}") from exc
