"""A kernel's initramfs, and whether a module (zfs) is in it: what a root-on-ZFS boot needs.

An initramfs is one or more ``newc`` cpio archives (magic ``070701``, or ``070702`` with
checksums) laid end to end, each either plain or compressed, with zero padding between them:
dracut and initramfs-tools put an uncompressed early-microcode archive first. This walks the
image the way the kernel's ``init/initramfs.c`` does: zero bytes are skipped, a ``0`` starts a
cpio archive, anything else must start a compressed stream (gzip, xz, lzma, bzip2, zstd or
legacy lz4, told by its magic) whose output is again whole archives, and ``TRAILER!!!`` ends
an archive. Only member names are kept: file contents are skipped as they stream past.

Decompressed output is capped at :data:`MAX_IMAGE_SIZE` for the whole image (a decompression
bomb guard). zstd needs the ``zstandard`` package, else the ``zstd`` command; lz4 always runs
the ``lz4`` command (there is no lz4 in the standard library), through the
:class:`~kzguard.root.Runner`. Anything malformed or truncated is a :class:`FactError`.
"""

from __future__ import annotations

from kzguard.base.errors import CommandError, FactError
from kzguard.facts import Pattern
from kzguard.root import Root, Runner

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any, Callable, Optional

MAX_IMAGE_SIZE = 1 << 30
"""Decompressed bytes above which an image is refused (real ones are 30-300 MiB)."""
MAX_NAME = 4096  # PATH_MAX: the kernel refuses a longer member name

_HEADER = Pattern(rb"07070[12][0-9A-Fa-f]{104}")
_NONZERO = Pattern(rb"[^\0]")
_TRAILER = b"TRAILER!!!"
_OUT_STEP = 1 << 20  # decompressed bytes asked for per call
_IN_STEP = 1 << 16  # compressed bytes fed per call
_ZSTD_STEP = 4096  # zstd has no output limit per call: small steps bound the overshoot
_LZ4_MAGIC = 0x184C2102
_LZ4_BLOCK = 8 << 20  # a legacy lz4 block decompresses to at most this
_LZ4_BOUND = _LZ4_BLOCK + _LZ4_BLOCK // 255 + 16  # LZ4_compressBound(8 MiB)

# lib/decompress.c: compressed_formats[] (lzo is there too; nobody ships it any more)
_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00", "lzma"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x89LZO", "lzo"),
)


# --- where the image is ----------------------------------------------------------------------


def image_for(root: Root, release: str) -> Optional[str]:
    """The in-root path of kernel ``release``'s initramfs, or ``None`` when there is none.

    Tried in order: dracut (``/boot/initramfs-<r>.img``), initramfs-tools
    (``/boot/initrd.img-<r>``), ``/boot/initrd-<r>``, mkinitcpio (``/boot/initramfs-<pkgbase>
    .img``, the name from ``/usr/lib/modules/<r>/pkgbase``), kernel-install's Type 1 layout
    (``{/boot,/efi,/boot/efi}/<entry token>/<r>/initrd``; the token from
    ``/etc/kernel/entry-token``, else ``/etc/machine-id``) and ``/usr/lib/modules/<r>/initrd``.
    """
    if not _plain_name(release):
        raise FactError(f"bad kernel release {release!r}")
    candidates = [
        f"/boot/initramfs-{release}.img",
        f"/boot/initrd.img-{release}",
        f"/boot/initrd-{release}",
    ]
    for base in ("/usr/lib/modules", "/lib/modules"):
        pkgbase = _first_line(root, f"{base}/{release}/pkgbase")
        if pkgbase:
            candidates.append(f"/boot/initramfs-{pkgbase}.img")
            break
    tokens = [_first_line(root, p) for p in ("/etc/kernel/entry-token", "/etc/machine-id")]
    for token in dict.fromkeys(t for t in tokens if t):
        candidates += [f"{esp}/{token}/{release}/initrd" for esp in ("/boot", "/efi", "/boot/efi")]
    candidates.append(f"/usr/lib/modules/{release}/initrd")
    return next((inner for inner in candidates if root.is_file(inner)), None)


def _first_line(root: Root, inner: str) -> Optional[str]:
    text = root.read_text_or(inner)
    if not text:
        return None
    line = text.strip().split("\n", 1)[0].strip()
    return line if _plain_name(line) else None


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


# --- what is in it ---------------------------------------------------------------------------


def contains_module(members: Iterable[str], release: str, name: str = "zfs") -> bool:
    """Whether ``members`` hold module ``name`` for ``release`` (``[usr/]lib/modules/<r>/…``)."""
    from kzguard.facts.modinfo import COMPRESSION_SUFFIXES

    wanted = {
        stem + suffix for stem in (name, name.replace("_", "-")) for suffix in COMPRESSION_SUFFIXES
    }
    prefixes = (f"usr/lib/modules/{release}/", f"lib/modules/{release}/")
    for member in members:
        path = _normal(member)
        if path.startswith(prefixes) and path.rsplit("/", 1)[-1] in wanted:
            return True
    return False


def list_members(data: bytes, *, runner: Optional[Runner] = None) -> list[str]:
    """Every path in an initramfs image, in archive order, without a leading ``./`` or ``/``.

    ``runner`` runs ``lz4`` (and ``zstd`` when the ``zstandard`` package is missing).
    """
    names: list[str] = []
    budget = _Budget(MAX_IMAGE_SIZE)
    view = memoryview(data)
    pos = 0
    archives = 0
    while True:
        found = _NONZERO.search(data, pos)
        if found is None:
            break
        pos = found.start()
        if data[pos] == 0x30:  # "0": a plain cpio archive
            stream = _Stream([view[pos:]])
            _archive(stream, names, f"the image at offset {pos}")
            pos += stream.offset
            archives += 1
            continue
        kind = next((k for magic, k in _MAGICS if data.startswith(magic, pos)), None)
        if kind is None:
            raise FactError(f"not a cpio archive or a known compression at offset {pos}")
        source = _Decompressed(kind, data, pos, budget, runner)
        stream = _Stream(source)
        archives += _compressed_archives(stream, names, f"the {kind} data at offset {pos}")
        if source.end <= pos:  # every decoder consumes its header at least; never loop
            raise FactError(f"{kind} data at offset {pos} is empty")
        pos = source.end
    if not archives:
        raise FactError("no cpio archive in the image")
    return names


def _normal(member: str) -> str:
    while member.startswith(("./", "/")):
        member = member[2:] if member.startswith("./") else member[1:]
    return member


class _Budget:
    """Decompressed bytes still allowed for the image."""

    def __init__(self, limit: int):
        self.limit = limit
        self.left = limit

    def take(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise FactError(f"decompressed initramfs exceeds {self.limit >> 20} MiB")


class _Stream:
    """Bytes from an iterable of chunks, read and skipped without copying what is skipped."""

    def __init__(self, chunks: Iterable[Any]):
        self._chunks = iter(chunks)
        self._buf = memoryview(b"")
        self.offset = 0  # bytes consumed

    def _more(self) -> bool:
        for chunk in self._chunks:
            if len(chunk):
                self._buf = memoryview(chunk)
                return True
        return False

    def at_end(self) -> bool:
        return not len(self._buf) and not self._more()

    def read(self, size: int) -> bytes:
        """``size`` bytes, or fewer at the end of the stream."""
        parts = []
        while size and not self.at_end():
            piece = self._buf[:size]
            self._buf = self._buf[len(piece) :]
            parts.append(piece.tobytes())
            size -= len(piece)
            self.offset += len(piece)
        return b"".join(parts)

    def skip(self, size: int) -> bool:
        """Skip ``size`` bytes; ``False`` when the stream ended first."""
        while size:
            if self.at_end():
                return False
            step = min(size, len(self._buf))
            self._buf = self._buf[step:]
            size -= step
            self.offset += step
        return True

    def skip_zeros(self) -> None:
        while not self.at_end():
            found = _NONZERO.search(self._buf)
            step = found.start() if found else len(self._buf)
            self._buf = self._buf[step:]
            self.offset += step
            if found:
                return

    def peek(self) -> int:
        """The next byte, or -1 at the end."""
        return -1 if self.at_end() else self._buf[0]


def _archive(stream: _Stream, names: list[str], where: str) -> None:
    """Walk one newc archive up to and including its ``TRAILER!!!`` entry.

    ``where`` names the stream in messages (offsets count from its start).
    """
    start = stream.offset
    while True:
        at = f"offset {stream.offset - start} of the archive in {where}"
        head = stream.read(110)
        if len(head) < 110:
            raise FactError(f"truncated cpio archive: {at}")
        if not _HEADER.match(head):
            if head.startswith(b"070707"):
                raise FactError("old-style (odc) cpio archive: the kernel reads only newc")
            raise FactError(f"malformed cpio header: {at}")
        filesize = int(head[54:62], 16)
        namesize = int(head[94:102], 16)
        if not 0 < namesize <= MAX_NAME:
            raise FactError(f"bad cpio name size {namesize}: {at}")
        raw = stream.read(namesize)
        if len(raw) < namesize or not stream.skip(-(110 + namesize) % 4):
            raise FactError(f"truncated cpio archive: {at}")
        if raw[-1] != 0:
            raise FactError(f"cpio member name not NUL-terminated: {at}")
        raw = raw[:-1]
        if not stream.skip(filesize + (-filesize % 4)):
            raise FactError(f"truncated cpio member data: {at}")
        if raw == _TRAILER:
            return
        name = _normal(raw.decode("utf-8", "replace"))
        if name and name != ".":
            names.append(name)


def _compressed_archives(stream: _Stream, names: list[str], where: str) -> int:
    """Walk the whole archives a decompressed stream holds; returns how many."""
    count = 0
    while True:
        stream.skip_zeros()
        first = stream.peek()
        if first == -1:
            return count
        if first != 0x30:
            raise FactError(f"junk after a cpio archive in {where}")
        _archive(stream, names, where)
        count += 1


# --- decompression ---------------------------------------------------------------------------


class _Decompressed:
    """One compressed stream starting at ``data[start]``, decompressed in bounded chunks.

    Iterating yields the output; afterwards ``end`` is the offset just past the stream.
    """

    def __init__(
        self, kind: str, data: bytes, start: int, budget: _Budget, runner: Optional[Runner]
    ):
        self.kind = kind
        self.data = data
        self.start = start
        self.budget = budget
        self.runner = runner
        self.end = len(data)

    def __iter__(self) -> Iterator[bytes]:
        if self.kind == "lzo":
            raise FactError("lzo-compressed initramfs is not supported")
        method: Callable[[], Iterator[bytes]] = getattr(self, f"_{self.kind}")
        for chunk in method():
            self.budget.take(len(chunk))
            yield chunk

    def _truncated(self) -> FactError:
        return FactError(f"truncated {self.kind} data at offset {self.start}")

    def _bad(self, exc: BaseException) -> FactError:
        detail = str(exc) or type(exc).__name__
        return FactError(f"cannot decompress {self.kind} data at offset {self.start}: {detail}")

    def _gzip(self) -> Iterator[bytes]:
        import zlib

        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        view = memoryview(self.data)
        pos = self.start
        try:
            while not inflate.eof:
                feed = inflate.unconsumed_tail
                if not feed:
                    if pos >= len(view):
                        raise self._truncated()
                    feed = view[pos : pos + _IN_STEP]
                    pos += len(feed)
                yield inflate.decompress(feed, _OUT_STEP)
        except zlib.error as exc:
            raise self._bad(exc) from exc
        self.end = pos - len(inflate.unused_data) - len(inflate.unconsumed_tail)

    def _xz(self) -> Iterator[bytes]:
        import lzma

        yield from self._bounded(lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), lzma.LZMAError)

    def _lzma(self) -> Iterator[bytes]:
        import lzma

        yield from self._bounded(lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE), lzma.LZMAError)

    def _bzip2(self) -> Iterator[bytes]:
        try:
            import bz2
        except ImportError as exc:  # a Python built without libbz2
            raise FactError("bzip2-compressed initramfs: Python has no bz2 module") from exc
        yield from self._bounded(bz2.BZ2Decompressor, OSError)

    def _bounded(self, make: Callable[[], Any], error: type[Exception]) -> Iterator[bytes]:
        """The lzma/bz2 decompressor protocol: ``needs_input``, ``max_length``, ``eof``."""
        decoder = make()
        view = memoryview(self.data)
        pos = self.start
        try:
            while not decoder.eof:
                feed = b""
                if decoder.needs_input:
                    if pos >= len(view):
                        raise self._truncated()
                    feed = view[pos : pos + _IN_STEP]
                    pos += len(feed)
                yield decoder.decompress(feed, _OUT_STEP)
        except (error, EOFError, ValueError) as exc:
            raise self._bad(exc) from exc
        self.end = pos - len(decoder.unused_data)

    def _zstd(self) -> Iterator[bytes]:
        try:
            import zstandard
        except ImportError:
            # the zstd command cannot say where the stream ends: it must run to the image's end
            yield self._command(["zstd", "-dc"], self.data[self.start :])
            return
        decoder = zstandard.ZstdDecompressor().decompressobj()
        view = memoryview(self.data)
        pos = self.start
        try:
            while not decoder.eof:
                if pos >= len(view):
                    raise self._truncated()
                feed = view[pos : pos + _ZSTD_STEP]
                pos += len(feed)
                yield decoder.decompress(feed)
        except zstandard.ZstdError as exc:
            raise self._bad(exc) from exc
        self.end = pos - len(decoder.unused_data)

    def _lz4(self) -> Iterator[bytes]:
        """Legacy lz4 (``lz4 -l``, the only lz4 the kernel unpacks), through the command.

        Blocks are ``<le32 size><data>``, each at most 8 MiB decompressed; the stream ends at
        the end of the image or at a zero size word (lib/decompress_unlz4.c), so its length and
        an upper bound of its output are known before the command runs.
        """
        data = self.data
        pos = self.start + 4
        blocks = 0
        while pos + 4 <= len(data):
            size = int.from_bytes(data[pos : pos + 4], "little")
            if size == _LZ4_MAGIC:  # another legacy stream follows on
                pos += 4
                continue
            if size == 0:
                break
            if size > _LZ4_BOUND or pos + 4 + size > len(data):
                raise FactError(f"malformed or truncated lz4 data at offset {self.start}")
            pos += 4 + size
            blocks += 1
        if blocks * _LZ4_BLOCK > self.budget.left:
            raise FactError(f"decompressed initramfs exceeds {self.budget.limit >> 20} MiB")
        self.end = pos
        yield self._command(["lz4", "-dc"], data[self.start : pos])

    def _command(self, argv: list[str], data: bytes) -> bytes:
        runner = self.runner
        if runner is None:
            raise FactError(f"{argv[0]} data: no command may run here to decompress it")
        try:
            proc = runner.run_bytes(argv, input=data, max_output=self.budget.left)
        except CommandError as exc:
            raise self._bad(exc) from exc
        return proc.stdout
