"""Atomic file replacement: the one way kzguard writes a file that others rely on.

A temp file is created beside the target with ``O_CREAT|O_EXCL|O_NOFOLLOW`` under an
unpredictable name, so a link planted in the directory is never written through; it is
fsynced, renamed over the target, and the directory is fsynced. Temp files a killed writer
left (``<name>.kzguard-tmp-<pid>-<random>`` whose pid is gone) are removed by the next write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

TMP_MARK = ".kzguard-tmp-"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Optional


class UnsafeDirectory(OSError):
    """A directory another user can write (and that is not sticky and root's)."""


def replace_file(path: str, text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically: readers see the old file or the new one, never
    half of one. Raises OSError; the temp file never stays behind."""
    replace_bytes(path, text.encode("utf-8"), mode=mode)


def replace_bytes(path: str, data: bytes, *, mode: int = 0o644) -> None:
    """:func:`replace_file` for bytes."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    remove_stale_temps(path)
    tmp = f"{path}{TMP_MARK}{os.getpid()}-{os.urandom(6).hex()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(tmp, flags, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
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


def remove_stale_temps(path: str) -> list[str]:
    """Remove the temp files of ``path`` whose writer is no longer running; their names."""
    directory = os.path.dirname(path) or "."
    prefix = os.path.basename(path) + TMP_MARK
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        pid = _pid_of(name[len(prefix) :])
        if pid is not None and pid != os.getpid() and _running(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def _pid_of(tail: str) -> Optional[int]:
    head = tail.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def exclusive(lock_path: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created 0600, never through a link) for
    the block: the one lock discipline for a read-modify-write of a file others also write."""
    import fcntl

    os.makedirs(os.path.dirname(lock_path) or ".", mode=0o755, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(lock_path, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_directory(directory: str) -> None:
    """Refuse (``UnsafeDirectory``) a directory another user could plant a file or link in: one
    that is group- or world-writable and not sticky, or owned by another non-root user."""
    info = os.stat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(errno.ENOTDIR, "not a directory", directory)
    uid = os.geteuid()
    if info.st_uid not in (0, uid):
        raise UnsafeDirectory(
            errno.EPERM,
            f"owned by uid {info.st_uid}, not root: another user controls it",
            directory,
        )
    others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if others_write and not (info.st_mode & stat.S_ISVTX and info.st_uid == 0):
        raise UnsafeDirectory(
            errno.EPERM,
            f"mode {stat.S_IMODE(info.st_mode):o}: other users can write it and it is not sticky",
            directory,
        )
