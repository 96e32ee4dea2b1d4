"""The root object (every path kzguard reads goes through it) and the command runner.

A :class:`Root` maps absolute in-root paths such as ``/lib/modules`` to files under the
root directory, resolving symlinks the way ``chroot`` would: an absolute link target is
taken from the root, and ``..`` never climbs above it. A test scenario is therefore just a
directory tree, and ``--root /`` is the live host.
"""

import os
import posixpath
import stat

from kzguard.base.errors import CommandError, FactError, UsageError

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    import logging
    import subprocess
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path
    from typing import Any, BinaryIO, Optional, Union

    from kzguard.base.deadline import Overall

    PathLike = Union[str, os.PathLike[str]]

_MAX_LINKS = 40


class Root:
    """A read-only view of a system tree rooted at ``path``."""

    def __init__(self, path: "PathLike" = "/"):
        self.top = os.path.abspath(os.fspath(path))
        self._top = self.top.rstrip("/") + "/"
        self._parents: dict[str, tuple[list[str], bool]] = {}

    @property
    def path(self) -> "Path":
        """The root directory as a :class:`~pathlib.Path`."""
        from pathlib import Path

        return Path(self.top)

    @classmethod
    def open(cls, path: "PathLike" = "/") -> "Root":
        """Return a root for ``path``, or raise :class:`UsageError` when it is not a directory."""
        if not os.path.isdir(path):
            raise UsageError(f"root {os.fspath(path)!r} is not a directory")
        return cls(path)

    def __repr__(self) -> str:
        return f"Root({self.top!r})"

    def fresh(self) -> "Root":
        """The same root without anything this object cached (resolved parents)."""
        return type(self)(self.top)

    @property
    def is_host(self) -> bool:
        return self.top == "/"

    def resolve(self, inner: str, *, follow_last: bool = True) -> "Path":
        """Map an in-root path to a host path, following links inside the root.

        Missing components are kept as they are (like ``realpath -m``).
        """
        from pathlib import Path

        return Path(self._host(inner, follow_last))

    def host_path(self, inner: str, *, follow_last: bool = True) -> str:
        """:meth:`resolve` as a string, without pathlib (which costs a hook 5 ms to import)."""
        return self._host(inner, follow_last)

    def _host(self, inner: str, follow_last: bool = True) -> str:
        """:meth:`resolve` as a string: one ``lstat`` per component, none past a missing one.

        Resolved parent directories are remembered for the life of this object (a check reads
        many files in few directories); make a new :class:`Root` to see a changed tree.
        """
        parts = [p for p in inner.split("/") if p and p != "."]
        if not parts or ".." in parts:
            done, _ = self._walk([], parts, follow_last, inner)
        else:
            key = "/".join(parts[:-1])
            parent = self._parents.get(key)
            if parent is None:
                parent = self._parents[key] = self._walk([], parts[:-1], True, inner)
            done, missing = parent
            if not missing:
                done, _ = self._walk(list(done), parts[-1:], follow_last, inner)
            else:
                done = [*done, parts[-1]]
        return (self._top + "/".join(done)).rstrip("/") or "/"

    def _walk(
        self, done: list[str], parts: list[str], follow_last: bool, inner: str
    ) -> tuple[list[str], bool]:
        """Resolve ``parts`` below the in-root components ``done``; say if one is missing."""
        top = self._top
        todo = list(reversed(parts))
        links = 0
        missing = False
        while todo:
            part = todo.pop()
            if part == "..":
                if done:
                    done.pop()
                missing = False
                continue
            if missing or not (todo or follow_last):
                done.append(part)
                continue
            current = top + "/".join(done) + ("/" if done else "") + part
            try:
                mode = os.lstat(current).st_mode
            except OSError:
                missing = True
                done.append(part)
                continue
            if not stat.S_ISLNK(mode):
                done.append(part)
                continue
            links += 1
            if links > _MAX_LINKS:
                raise FactError(f"too many levels of symbolic links in {inner}")
            target = os.readlink(current)
            if target.startswith("/"):
                done = []
            todo.extend(reversed([p for p in target.split("/") if p and p != "."]))
        return done, missing

    def to_inner(self, host_path: "PathLike") -> str:
        """Return the in-root path of a host path that lies under the root."""
        rel = os.path.relpath(os.fspath(host_path), self.top)
        if rel == ".":
            return "/"
        if rel.startswith(".."):
            raise FactError(f"{host_path} is outside root {self.top}")
        return "/" + rel

    def exists(self, inner: str) -> bool:
        return os.path.exists(self._host(inner))

    def is_dir(self, inner: str) -> bool:
        return os.path.isdir(self._host(inner))

    def is_file(self, inner: str) -> bool:
        return os.path.isfile(self._host(inner))

    def is_symlink(self, inner: str) -> bool:
        return os.path.islink(self._host(inner, follow_last=False))

    def readlink(self, inner: str) -> str:
        """The raw target of a symlink (as written, not re-rooted)."""
        return os.readlink(self._host(inner, follow_last=False))

    def read_bytes(self, inner: str, *, limit: "Optional[int]" = None) -> bytes:
        """The bytes of a regular file (a FIFO or device is refused, never waited on); with
        ``limit``, a larger file is refused too."""
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self._host(inner), flags)
        except OSError as exc:
            raise FactError(f"cannot read {inner}: {exc.strerror or exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FactError(f"cannot read {inner}: not a regular file")
            if limit is not None and info.st_size > limit:
                raise FactError(f"cannot read {inner}: larger than {limit} bytes")
            chunks = []
            left = -1 if limit is None else limit + 1
            while left:
                chunk = os.read(fd, 1 << 20 if left < 0 else min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left = left - len(chunk) if left > 0 else left
            data = b"".join(chunks)
        except OSError as exc:
            raise FactError(f"cannot read {inner}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        if limit is not None and len(data) > limit:
            raise FactError(f"cannot read {inner}: larger than {limit} bytes")
        return data

    def open_regular(self, inner: str) -> "BinaryIO":
        """A binary file object for a regular file under the root; a FIFO, device or socket
        is refused at once (an ``OSError``), never waited on."""
        fd = os.open(self._host(inner), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{inner}: not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def read_text(
        self, inner: str, *, errors: str = "replace", limit: "Optional[int]" = None
    ) -> str:
        return self.read_bytes(inner, limit=limit).decode("utf-8", errors=errors)

    def mtime(self, inner: str) -> float:
        """The file's modification time (links followed inside the root)."""
        try:
            return os.stat(self._host(inner)).st_mtime
        except OSError as exc:
            raise FactError(f"cannot stat {inner}: {exc.strerror or exc}") from exc

    def scan_dir(self, inner: str) -> "tuple[list[str], Optional[str]]":
        """Sorted entry names of a directory and, when it cannot be listed, why (a missing
        directory is an empty one)."""
        try:
            return sorted(os.listdir(self._host(inner))), None
        except FileNotFoundError:
            return [], None
        except OSError as exc:
            return [], f"cannot list {inner}: {exc.strerror or exc}"
        except FactError as exc:
            return [], str(exc)

    def read_text_or(self, inner: str, default: "Optional[str]" = None) -> "Optional[str]":
        """The file's text, or ``default`` when it does not exist or cannot be read."""
        try:
            return self.read_text(inner)
        except FactError:
            return default

    def listdir(self, inner: str) -> list[str]:
        """Sorted entry names of a directory; empty when it is missing or unreadable."""
        try:
            return sorted(os.listdir(self._host(inner)))
        except OSError:
            return []

    def glob(self, pattern: str) -> list[str]:
        """In-root paths matching a shell pattern, one level per ``/`` (no ``**``)."""
        from fnmatch import fnmatchcase

        parts = [p for p in _norm(pattern).split("/") if p]
        found = ["/"]
        for part in parts:
            nxt: list[str] = []
            for base in found:
                if any(c in part for c in "*?["):
                    nxt.extend(
                        posixpath.join(base, name)
                        for name in self.listdir(base)
                        if fnmatchcase(name, part)
                    )
                else:
                    cand = posixpath.join(base, part)
                    if self.resolve(cand, follow_last=False).exists() or self.is_symlink(cand):
                        nxt.append(cand)
            found = nxt
        return sorted(found)

    def walk_files(self, inner: str) -> "Iterator[str]":
        """Yield in-root paths of every file and symlink below ``inner`` (links not followed)."""
        top = self.resolve(inner)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            base = self.to_inner(dirpath) if str(top) != dirpath else _norm(inner)
            for name in sorted(filenames):
                yield posixpath.join(base, name)
            for name in dirnames:
                if os.path.islink(os.path.join(dirpath, name)):
                    yield posixpath.join(base, name)


def _norm(inner: str) -> str:
    return "/" + inner.lstrip("/")


class Runner:
    """The one way kzguard runs a command: argv lists, ``LC_ALL=C``, a timeout, one error type.

    A command that changes the system is run with ``changes=True``; under ``dry_run`` it is
    logged and not run. Tests substitute fake binaries on ``path`` or subclass this.
    """

    def __init__(
        self,
        *,
        dry_run: bool = False,
        timeout: float = 60.0,
        env: "Optional[Mapping[str, str]]" = None,
        deadline: "Optional[float]" = None,
        overall: "Optional[Overall]" = None,
    ):
        self.dry_run = dry_run
        self.timeout = timeout
        self.deadline = deadline  # time.monotonic() after which no command runs
        self.overall = overall  # a hook's deadline (kzguard.base.deadline), which may be re-armed
        self.env = dict(os.environ if env is None else env)
        self.env["LC_ALL"] = "C"

    def run(
        self,
        argv: "Sequence[str]",
        *,
        input: "Optional[str]" = None,
        check: bool = True,
        timeout: "Optional[float]" = None,
        changes: bool = False,
    ) -> "subprocess.CompletedProcess":
        import subprocess

        argv = [os.fspath(a) for a in argv]
        if changes and self.dry_run:
            _log().info("dry-run: would run %s", " ".join(argv))
            return subprocess.CompletedProcess(argv, 0, "", "")
        _log().debug("running %s", " ".join(argv))
        proc = self._exec(
            argv, input=input, capture_output=True, text=True, errors="replace", timeout=timeout
        )
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def run_bytes(
        self,
        argv: "Sequence[str]",
        *,
        input: bytes = b"",
        max_output: "Optional[int]" = None,
        timeout: "Optional[float]" = None,
    ) -> "subprocess.CompletedProcess":
        """Run a read-only filter on bytes; ``stdout`` comes back as bytes, ``stderr`` as text.

        Output is spooled to a temporary file and at most ``max_output + 1`` bytes of it are
        read, so a caller tells a cut output by its length. A non-zero exit raises.
        """
        import subprocess
        import tempfile

        argv = [os.fspath(a) for a in argv]
        _log().debug("running %s", " ".join(argv))
        with tempfile.TemporaryFile() as out:
            proc = self._exec(
                argv, input=input, stdout=out, stderr=subprocess.PIPE, timeout=timeout
            )
            out.seek(0)
            stdout = out.read(-1 if max_output is None else max_output + 1)
        stderr = proc.stderr.decode("utf-8", errors="replace")
        if proc.returncode != 0:
            raise CommandError(argv, proc.returncode, "", stderr)
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)

    def _past_deadline(self, argv: list[str]) -> None:
        """A hook's overall deadline ends the run (it meets ``on_error``); a plain deadline
        fails just this command."""
        if self.overall is not None:
            from kzguard.base.deadline import DeadlineExceeded

            raise DeadlineExceeded(self.overall.seconds)
        raise CommandError(argv, None, reason="not run: the overall deadline has passed")

    def _exec(
        self,
        argv: list[str],
        *,
        timeout: "Optional[float]",
        input: "Any" = None,
        capture_output: bool = False,
        **kwargs: "Any",
    ) -> "subprocess.CompletedProcess":
        """Run ``argv`` in its own process group with this runner's environment and one error
        type. The timeout is the command's own, cut to what is left of ``deadline``; when it
        passes, or anything interrupts the wait (a hook's overall deadline), the whole group
        is killed (grandchildren too), so nothing kzguard started outlives it."""
        import subprocess
        import time

        limit = timeout or self.timeout
        deadline = self.overall.at if self.overall is not None else self.deadline
        cut = False  # the overall deadline, not the command's own timeout, bounds this run
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._past_deadline(argv)
            cut, limit = left < limit, min(limit, left)
        if capture_output:
            kwargs.setdefault("stdout", subprocess.PIPE)
            kwargs.setdefault("stderr", subprocess.PIPE)
        # A pipe, closed at once without input: a chroot (pacman's hooks) may have no /dev/null.
        stdin = subprocess.PIPE
        try:
            proc = subprocess.Popen(
                argv, env=self.env, stdin=stdin, start_new_session=True, **kwargs
            )
        except FileNotFoundError as exc:
            raise CommandError(argv, None, reason="command not found") from exc
        try:
            stdout, stderr = proc.communicate(input, timeout=limit)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            if cut and self.overall is not None:
                self._past_deadline(argv)
            raise CommandError(argv, None, reason=f"timed out after {limit:.3g}s") from exc
        except BaseException:
            _kill_group(proc)
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _kill_group(proc: "subprocess.Popen") -> None:
    """SIGKILL the process group ``proc`` leads, then reap ``proc`` (bounded)."""
    import contextlib
    import signal
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
        proc.communicate(timeout=5)


def _log() -> "logging.Logger":
    import logging

    return logging.getLogger(__name__)
