"""The OpenZFS ``META`` inside a package file, read before the package is installed.

A transaction that brings a new ZFS is best judged by the range the new source itself states
(``usr/src/zfs-<version>/META``: ``Linux-Minimum``, ``Linux-Maximum``), not by the built-in
table. The package managers hand their hooks the package files: apt's Pre-Install-Pkgs
stream names each ``.deb``; dnf has downloaded the ``.rpm`` by ``pre_transaction``; pacman
keeps ``<name>-<version>-<arch>.pkg.tar.*`` in its CacheDir. :func:`read_meta` opens one
and returns the META as a :class:`~kzguard.facts.zfs.ZfsSource` whose path is
``META in <file name>``, or a note saying why it could not (the caller then falls back to
the table and says so):

- ``.deb``: an ``ar`` archive (read here, bounded) whose ``data.tar`` member is compressed
  with xz, zstd, gzip or bzip2 (or not at all);
- ``.rpm``: the lead, the signature header, the header (its ``PAYLOADCOMPRESSOR`` tag names
  the compression: zstd, xz, lzma, gzip or bzip2) and a ``newc`` cpio payload, all parsed
  here: ``rpm2cpio`` is not on Debian or Arch hosts, and inside dnf an extra process for
  what the header says in a few bytes buys nothing;
- ``.pkg.tar.zst`` / ``.xz`` / ``.gz`` / ``.pkg.tar``: a tar.

zstd comes from the optional ``zstandard`` module, else ``zstd -dc`` through the Runner (as
:mod:`kzguard.facts.modinfo` does). Every read is bounded (archive size, decompressed bytes,
member count, META size); nothing is extracted to disk and no link is followed; a malformed
archive is a note, never an exception.
"""

from __future__ import annotations

import os
import stat
import struct

from kzguard.base.errors import KzguardError
from kzguard.facts import Pattern

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    import tarfile
    from typing import IO, Optional

    from kzguard.facts.zfs import ZfsSource
    from kzguard.root import Runner

MAX_ARCHIVE = 512 * 1024 * 1024  # a package file larger than this is not read
MAX_UNPACKED = 1024 * 1024 * 1024  # decompressed bytes scanned for META
MAX_COMMAND_OUTPUT = 256 * 1024 * 1024  # what `zstd -dc` may return (it is held in memory)
MAX_MEMBERS = 200_000  # tar or cpio members looked at
MAX_AR_MEMBERS = 16
MAX_META = 64 * 1024
MAX_RPM_HEADER = 64 * 1024 * 1024
_META = Pattern(r"(?:\./|/)?usr/src/zfs-[^/]+/META\Z")
_CHUNK = 1024 * 1024


class ArchiveError(KzguardError):
    """A package file kzguard cannot read META from: the reason is the message."""

    name = "package-archive"


class MetaResult(tuple):
    """``(source, note)``: the META found (``None`` if none), and what to tell the admin."""

    __slots__ = ()

    def __new__(cls, source: Optional[ZfsSource], note: Optional[str] = None) -> MetaResult:
        return tuple.__new__(cls, (source, note))

    @property
    def source(self) -> Optional[ZfsSource]:
        return self[0]

    @property
    def note(self) -> Optional[str]:
        return self[1]


def origin(path: str) -> str:
    """How a range from this file is named in messages: ``META in zfs-dkms_2.3.2-1_all.deb``."""
    return f"META in {os.path.basename(path)}"


def read_meta(path: str, runner: Optional[Runner] = None) -> MetaResult:
    """The ZFS META inside the package file at ``path`` (a host path)."""
    name = os.path.basename(path)
    try:
        text = _meta_text(path, runner)
    except ArchiveError as exc:
        return MetaResult(None, f"cannot read META from {name}: {exc}")
    except Exception as exc:  # noqa: BLE001 - any damage (lzma, zstd, tar...) is a note, said
        return MetaResult(None, f"cannot read META from {name}: {type(exc).__name__}: {exc}")
    if text is None:
        return MetaResult(None, f"{name} holds no usr/src/zfs-*/META")
    from kzguard.facts.zfs import meta_source

    source = meta_source(origin(path), text)
    if source.error:
        return MetaResult(None, f"the META in {name} is not usable: {source.error}")
    return MetaResult(source)


def _meta_text(path: str, runner: Optional[Runner]) -> Optional[str]:
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise ArchiveError(exc.strerror or str(exc)) from exc
    if size > MAX_ARCHIVE:
        raise ArchiveError(f"{size} bytes, more than the {MAX_ARCHIVE} kzguard reads")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)  # a FIFO is refused below, never waited on
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArchiveError("not a regular file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as handle:
        head = handle.read(8)
        handle.seek(0)
        if head == b"!<arch>\n":
            return _deb(handle, runner)
        if head[:4] == b"\xed\xab\xee\xdb":
            return _rpm(handle, runner)
        return _tar(handle, None, runner)  # a .pkg.tar.*: the compression from its magic


# --- .deb: ar, then data.tar.* ----------------------------------------------------------------


def _deb(handle: IO[bytes], runner: Optional[Runner]) -> Optional[str]:
    handle.seek(8)
    for _ in range(MAX_AR_MEMBERS):
        header = handle.read(60)
        if not header:
            raise ArchiveError("no data.tar member in the ar archive")
        if len(header) != 60 or header[58:60] != b"`\n":
            raise ArchiveError("not a valid ar archive (bad member header)")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise ArchiveError("not a valid ar archive (bad member size)") from exc
        if size < 0 or size > MAX_ARCHIVE:
            raise ArchiveError(f"ar member {name!r} claims {size} bytes")
        if name.startswith("data.tar"):
            return _tar(_Slice(handle, handle.tell(), size), name[len("data.tar") :], runner)
        handle.seek(size + (size & 1), 1)
    raise ArchiveError(f"more than {MAX_AR_MEMBERS} ar members")


# --- .rpm: lead, signature, header, cpio payload ---------------------------------------------

_HEADER_MAGIC = b"\x8e\xad\xe8\x01"
_PAYLOADFORMAT, _PAYLOADCOMPRESSOR = 1124, 1125


def _rpm(handle: IO[bytes], runner: Optional[Runner]) -> Optional[str]:
    lead = handle.read(96)
    if len(lead) != 96:
        raise ArchiveError("truncated rpm lead")
    _header(handle, pad=True)  # the signature
    tags = _header(handle, pad=False)
    payload_format = tags.get(_PAYLOADFORMAT, "cpio")
    if payload_format != "cpio":
        raise ArchiveError(f"rpm payload format {payload_format!r} (not cpio)")
    compressor = tags.get(_PAYLOADCOMPRESSOR, "gzip")
    suffix = {"zstd": ".zst", "xz": ".xz", "lzma": ".lzma", "gzip": ".gz", "bzip2": ".bz2"}
    if compressor not in suffix:
        raise ArchiveError(f"rpm payload compressor {compressor!r} is not known")
    start = handle.tell()
    end = os.fstat(handle.fileno()).st_size
    stream = _decompressed(_Slice(handle, start, end - start), suffix[compressor], runner)
    return _cpio(stream)


def _header(handle: IO[bytes], *, pad: bool) -> dict[int, str]:
    """One rpm header structure; the string tags kzguard needs from it."""
    intro = handle.read(16)
    if len(intro) != 16 or intro[:4] != _HEADER_MAGIC:
        raise ArchiveError("not an rpm header where one belongs")
    count, size = struct.unpack(">II", intro[8:16])
    if count > 100_000 or size > MAX_RPM_HEADER:
        raise ArchiveError(f"rpm header of {count} entries and {size} bytes")
    index = handle.read(16 * count)
    data = handle.read(size)
    if len(index) != 16 * count or len(data) != size:
        raise ArchiveError("truncated rpm header")
    tags: dict[int, str] = {}
    for number in range(count):
        tag, kind, offset, _ = struct.unpack(">iiii", index[16 * number : 16 * number + 16])
        if tag in (_PAYLOADFORMAT, _PAYLOADCOMPRESSOR) and kind == 6 and 0 <= offset < size:
            end = data.find(b"\0", offset)
            tags[tag] = data[offset : end if end >= 0 else size].decode("ascii", "replace")
    if pad:
        handle.read((8 - size % 8) % 8)
    return tags


def _cpio(stream: IO[bytes]) -> Optional[str]:
    """The META in a ``newc`` cpio stream (``070701``/``070702``), or ``None``."""
    for _ in range(MAX_MEMBERS):
        header = _exactly(stream, 110)
        magic = header[:6]
        if magic not in (b"070701", b"070702"):
            raise ArchiveError(f"not a newc cpio payload (magic {magic!r})")
        try:
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise ArchiveError("bad cpio header") from exc
        mode, size, namesize = fields[1], fields[6], fields[11]
        if namesize > 4096 or size > MAX_UNPACKED:
            raise ArchiveError("cpio member too large")
        name = _exactly(stream, namesize).rstrip(b"\0").decode("utf-8", "replace")
        _exactly(stream, (4 - (110 + namesize) % 4) % 4)
        if name == "TRAILER!!!":
            return None
        padding = (4 - size % 4) % 4
        if _META.match(name):
            if mode & 0o170000 != 0o100000:
                raise ArchiveError(f"{name} is not a regular file in the archive (not followed)")
            if size > MAX_META:
                raise ArchiveError(f"{name} is {size} bytes")
            return _exactly(stream, size).decode("utf-8", "replace")
        _skip(stream, size + padding)
    raise ArchiveError(f"more than {MAX_MEMBERS} cpio members")


# --- tar (.pkg.tar.*, data.tar.*) ------------------------------------------------------------


def _tar(raw: IO[bytes], suffix: Optional[str], runner: Optional[Runner]) -> Optional[str]:
    import tarfile

    stream = _decompressed(raw, suffix, runner)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
            return _tar_meta(archive)
    except tarfile.TarError as exc:
        raise ArchiveError(f"broken tar archive: {exc}") from exc


def _tar_meta(archive: tarfile.TarFile) -> Optional[str]:
    for count, member in enumerate(archive):
        if count >= MAX_MEMBERS:
            raise ArchiveError(f"more than {MAX_MEMBERS} tar members")
        if not _META.match(member.name):
            continue
        if not member.isreg():
            raise ArchiveError(f"{member.name} is a link in the archive (not followed)")
        if member.size > MAX_META:
            raise ArchiveError(f"{member.name} is {member.size} bytes")
        found = archive.extractfile(member)
        return found.read(MAX_META).decode("utf-8", "replace") if found else None
    return None


def _decompressed(raw: IO[bytes], suffix: Optional[str], runner: Optional[Runner]) -> IO[bytes]:
    """A bounded stream of ``raw`` decompressed; ``suffix`` (``.xz``...) or the magic says how."""
    if suffix is None:
        magic = raw.read(6)
        raw.seek(0)
        suffix = _by_magic(magic)
    if suffix in ("", None):
        return _Bounded(raw)
    if suffix == ".xz" or suffix == ".lzma":
        import lzma

        fmt = lzma.FORMAT_XZ if suffix == ".xz" else lzma.FORMAT_ALONE
        return _Bounded(lzma.LZMAFile(raw, format=fmt))  # type: ignore[arg-type]
    if suffix == ".gz":
        import gzip

        return _Bounded(gzip.GzipFile(fileobj=raw))  # type: ignore[arg-type]
    if suffix == ".bz2":
        import bz2

        return _Bounded(bz2.BZ2File(raw))  # type: ignore[arg-type]
    if suffix == ".zst":
        return _unzstd(raw, runner)
    raise ArchiveError(f"compression {suffix!r} is not known")


def _by_magic(magic: bytes) -> str:
    if magic.startswith(b"\xfd7zXZ\x00"):
        return ".xz"
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        return ".zst"
    if magic.startswith(b"\x1f\x8b"):
        return ".gz"
    if magic.startswith(b"BZh"):
        return ".bz2"
    return ""


def _unzstd(raw: IO[bytes], runner: Optional[Runner]) -> IO[bytes]:
    try:
        import zstandard
    except ImportError:
        return _unzstd_command(raw, runner)
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return _Bounded(reader)


def _unzstd_command(raw: IO[bytes], runner: Optional[Runner]) -> IO[bytes]:
    """``zstd -dc`` through the Runner (its output is held in memory: a smaller cap)."""
    import io

    from kzguard.base.errors import CommandError

    data = raw.read(MAX_ARCHIVE + 1)
    try:
        if runner is None:
            raise ArchiveError("zstd data, no zstandard module, and no command may run here")
        proc = runner.run_bytes(["zstd", "-dc"], input=data, max_output=MAX_COMMAND_OUTPUT)
    except (CommandError, OSError) as exc:
        raise ArchiveError(f"zstd data, no zstandard module, and `zstd -dc`: {exc}") from exc
    if len(proc.stdout) > MAX_COMMAND_OUTPUT:
        raise ArchiveError(f"more than {MAX_COMMAND_OUTPUT} bytes once decompressed")
    return _Bounded(io.BytesIO(proc.stdout))


# --- bounded streams ------------------------------------------------------------------------


class _Slice:
    """``size`` bytes of ``handle`` from ``start``: a read-only, seekable window."""

    def __init__(self, handle: IO[bytes], start: int, size: int):
        self.handle, self.start, self.size, self.pos = handle, start, size, 0

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.pos
        n = left if n is None or n < 0 else min(n, left)
        if n <= 0:
            return b""
        self.handle.seek(self.start + self.pos)
        data = self.handle.read(n)
        self.pos += len(data)
        return data

    def readinto(self, buffer: bytearray) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(0, min(self.size, base + offset))
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return False


class _Bounded:
    """A forward-only stream that refuses to give more than :data:`MAX_UNPACKED` bytes."""

    def __init__(self, inner: IO[bytes]):
        self.inner, self.count = inner, 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = MAX_UNPACKED + 1 - self.count
        data = self.inner.read(min(n, _CHUNK * 16))
        self.count += len(data)
        if self.count > MAX_UNPACKED:
            raise ArchiveError(f"more than {MAX_UNPACKED} bytes once decompressed")
        return data


def _exactly(stream: IO[bytes], size: int) -> bytes:
    chunks, left = [], size
    while left > 0:
        data = stream.read(min(left, _CHUNK))
        if not data:
            raise ArchiveError("truncated archive")
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


def _skip(stream: IO[bytes], size: int) -> None:
    while size > 0:
        data = stream.read(min(size, _CHUNK))
        if not data:
            raise ArchiveError("truncated archive")
        size -= len(data)


def sources_for(
    files: list[str], version: Optional[str], runner: Optional[Runner] = None
) -> tuple[tuple[ZfsSource, ...], tuple[str, ...]]:
    """The METAs of the package ``files`` a transaction installs, and notes: a file that
    cannot be read means the ZFS ``version`` is judged by the built-in table, and says so."""
    from kzguard.facts.zfs import normalize_version

    sources: list[ZfsSource] = []
    notes: list[str] = []
    for path in files:
        found = read_meta(path, runner)
        if found.source is None:
            fallback = f"ZFS {version} is judged by the built-in table" if version else ""
            notes.append("; ".join(n for n in (found.note, fallback) if n))
            continue
        sources.append(found.source)
        if version and found.source.version != normalize_version(version):
            notes.append(
                f"the {origin(path)} is for ZFS {found.source.version}, the package is "
                f"{version}: ZFS {version} is judged by the built-in table"
            )
    return tuple(sources), tuple(notes)
