"""Atomic file replacement: the one way kzguard writes a file that others rely on."""

from __future__ import annotations

import contextlib
import os


def replace_file(path: str, text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically: a temp file in the same directory, fsync, rename,
    fsync of the directory. Readers see the old file or the new one, never half of one.
    Raises OSError; the temp file never stays behind."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = f"{path}.kzguard-tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sync_directory(directory)


def replace_or_remove(path: str, text: str) -> None:
    """:func:`replace_file`, or :func:`remove_file` when nothing is left to write."""
    if text:
        replace_file(path, text)
    else:
        remove_file(path)


def remove_file(path: str) -> None:
    """Remove ``path`` if it exists, durably."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        sync_directory(os.path.dirname(path) or ".")


def sync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
