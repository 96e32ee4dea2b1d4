"""Pending kernels: what an upgrade would install, read from the package managers' caches.

Nothing here runs a package manager or touches the network: cached metadata is read as files
through :class:`~kzguard.root.Root`. A file that cannot be read or parsed is skipped and named
in a problem string; it never raises. Each manager's reader lives in its own module
(:mod:`~kzguard.facts.pending_dnf`, :mod:`~kzguard.facts.pending_apt`,
:mod:`~kzguard.facts.pending_pacman`), imported only when that manager's metadata directory
exists, so this module stays cheap to import.
"""

from __future__ import annotations

from kzguard.base.errors import FactError
from kzguard.base.record import Record
from kzguard.root import Root

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Collection, Iterator
    from contextlib import AbstractContextManager
    from typing import IO, Any

# what any reader may raise on bad input; each manager module adds its parsers' errors
ERRORS: tuple[type, ...] = (OSError, EOFError, ValueError, LookupError, FactError)


class PendingKernel(Record):
    """A kernel an upgrade would install that is not installed yet."""

    release: str  # as ``uname -r`` will print it
    package: str
    version: str  # the package's version string
    manager: str  # "dnf", "dnf5", "apt" or "pacman"
    source: str  # in-root path of the metadata file it came from

    def to_dict(self) -> dict[str, str]:
        return self._asdict()


def pending_kernels(
    root: Root, installed_releases: Collection[str]
) -> tuple[list[PendingKernel], list[str]]:
    """Kernels that dnf, dnf5, apt or pacman would install, and problems met reading caches.

    Each manager is asked only when its cache exists. A release that is already installed
    or was found earlier (dnf5 before dnf, then apt, then pacman) is not repeated.
    """
    problems: list[str] = []
    installed = set(installed_releases)
    found: list[PendingKernel] = []
    for manager, dirs, module_name in _readers():
        errors = ERRORS  # widened to the reader's own errors once it is imported
        try:
            if not any(root.is_dir(d) for d in dirs):
                continue
            module = __import__(module_name, fromlist=("pending",))  # importlib costs 1 ms
            errors = module.ERRORS
            found += module.pending(root, installed, problems)
        except errors as exc:  # a path the reader did not expect (a symlink loop, ...)
            problems.append(f"{manager}: {exc}")
    result: list[PendingKernel] = []
    seen = set(installed)
    for kernel in found:
        if kernel.release not in seen:
            seen.add(kernel.release)
            result.append(kernel)
    return result, problems


def _readers() -> list[tuple[str, tuple[str, ...], str]]:
    """(manager, in-root directories any of which means it has metadata, facts module reading
    them), from the registry, in its order: an earlier manager's release wins. pacman's local
    db is read even without sync dbs, so that a broken ``desc`` there is still reported."""
    from kzguard import managers

    table = getattr(managers, "PENDING", None)  # the registry's plain data: no adapter imported
    if table is not None:
        return [(name, tuple(caches), facts) for name, caches, facts in table]
    return [(m.name, m.caches, m.pending_facts) for m in managers.every() if m.pending_facts]


_STREAM: Any = None  # contextlib.contextmanager(_stream), made on first use (contextlib: 1 ms)


def _open_stream(root: Root, path: str) -> AbstractContextManager[IO[bytes]]:
    """Open an in-root file, decompressing gzip, xz, bzip2 or zstd by its magic bytes."""
    global _STREAM
    if _STREAM is None:
        import contextlib

        _STREAM = contextlib.contextmanager(_stream)
    return _STREAM(root, path)  # type: ignore[no-any-return]


def _stream(root: Root, path: str) -> Iterator[IO[bytes]]:
    """The generator behind :func:`_open_stream`."""
    with root.open_regular(path) as raw:
        magic = raw.read(6)
        raw.seek(0)
        if magic.startswith(b"\x1f\x8b"):
            import gzip

            with gzip.GzipFile(fileobj=raw) as stream:
                yield stream
        elif magic.startswith(b"\xfd7zXZ\x00"):
            import lzma

            with lzma.LZMAFile(raw) as stream:
                yield stream
        elif magic.startswith(b"BZh"):
            import bz2

            with bz2.BZ2File(raw) as stream:
                yield stream
        elif magic.startswith(b"\x28\xb5\x2f\xfd"):
            zstd = _zstandard()
            if zstd is None:
                raise FactError("zstd-compressed and the zstandard module is not installed")
            try:
                with zstd.ZstdDecompressor().stream_reader(raw) as stream:
                    yield stream
            except zstd.ZstdError as exc:
                raise FactError(f"zstd: {exc}") from exc
        elif magic.startswith(b"\x04\x22\x4d\x18"):
            raise FactError("lz4-compressed, which kzguard cannot read")
        else:
            yield raw


def _zstandard() -> Any:
    """The optional ``zstandard`` module, imported only when zstd data turns up."""
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def _problem(path: str, exc: BaseException) -> str:
    return f"{path}: {exc}"
