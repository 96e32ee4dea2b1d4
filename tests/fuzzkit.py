"""The machinery of the fuzz suite (``tests/test_fuzz_*.py``): valid example hosts built once
in real formats, mutations of one input file, the CLI run on the mutated tree, and the oracle.

Each example copies a valid host (:mod:`tests.fuzzhosts`), replaces or mutates ONE input (a file's
bytes, or its shape: a directory, a FIFO, a link loop, a dangling link, a device node in
its place) and runs the real CLI on the tree. A run is the CLI's own ``main`` in a forked
child (:func:`run_cli`: the parent has imported everything, so a run costs a few tens of ms),
or a real ``python -m kzguard`` process (:func:`run_process`); both are killed at
:data:`TIMEOUT`, so a hang is a failure, not a stuck CI. :func:`check` is the oracle: exit
0, 1 or 2 (never 3, an internal error), no traceback, no hook failing on an error that is
not one of kzguard's own input errors, and JSON on stdout where ``--json`` was asked for.
Every run is counted per input kind (:data:`STATS`) and summed up at the end of the session.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fuzzhosts import base, copy_of

TIMEOUT = 20.0  # seconds a run may take before it is killed and counted as a hang
FAKEBIN = Path(__file__).resolve().parent.parent / "devtools" / "fakebin"
EXAMPLES = int(os.environ.get("KZGUARD_FUZZ_EXAMPLES", "25"))
PROFILE = "kzguard-fuzz"
settings.register_profile(
    PROFILE,
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
FUZZ = settings.get_profile(PROFILE)

# --- results and the oracle ------------------------------------------------------------------


class Run(NamedTuple):
    """One CLI run: what was asked, how it ended (``rc`` None: killed), how long it took."""

    kind: str
    argv: Sequence[str]
    rc: Optional[int]
    out: bytes
    err: bytes
    took: float

    @property
    def stderr(self) -> str:
        return self.err.decode("utf-8", "replace")

    def __repr__(self) -> str:
        status = "killed (hang)" if self.rc is None else f"exit {self.rc}"
        return (
            f"kzguard {' '.join(self.argv)}: {status} after {self.took:.2f}s\n"
            f"stderr: {self.stderr[-2000:]}\nstdout: {self.out[:600]!r}"
        )


class Stats:
    def __init__(self) -> None:
        self.runs = 0
        self.failures = 0
        self.known = 0  # runs that met a known bug (KNOWN), each pinned by a strict xfail test
        self.longest = 0.0
        self.processes = 0


STATS: dict[str, Stats] = {}

# Bugs the fuzzer found in files this suite may not change (each one has a strict xfail test
# with its reproduction): kind -> (pattern on stderr, the xfail test). A run of that kind that
# fails the oracle with that pattern is counted as known, not failed; a hang never is.
KNOWN: dict[str, list[tuple[re.Pattern[str], str]]] = {}


def known(kind: str, pattern: str, test: str) -> None:
    """Register a known bug of input ``kind`` (see :data:`KNOWN`)."""
    KNOWN.setdefault(kind, []).append((re.compile(pattern, re.MULTILINE), test))


# kzguard's errors that say an input is not what it should be: a hook may meet ``on_error`` with
# these (a stream that is not apt's protocol, a config error). Any other exception in a hook
# (FactError, TypeError, ...) is kzguard failing on a fact it should have turned into a
# problem or an ``unknown``: the same bug ``check`` reports as exit 3.
INPUT_ERRORS = frozenset(
    {"UsageError", "ConfigError", "ReleaseError", "AptProtocolError", "Dnf5Error", "StateError"}
)
_HOOK_FAILED = re.compile(r"kzguard failed inside the \S+ hook \((\w+): ")


def check(run: Run, *, expect_json: Optional[type] = None, allow_known: bool = True) -> None:
    """The oracle; counts the run and raises AssertionError (with the whole run) on a failure,
    unless it is a known bug of its kind (``allow_known``)."""
    stats = STATS.setdefault(run.kind, Stats())
    stats.runs += 1
    stats.longest = max(stats.longest, run.took)
    try:
        assert run.rc is not None, f"hang: killed after {run.took:.1f}s"
        assert run.rc in (0, 1, 2), f"exit {run.rc}"
        assert "Traceback" not in run.stderr, "a traceback"
        assert "internal error" not in run.stderr, "an internal error"
        for name in _HOOK_FAILED.findall(run.stderr):
            assert name in INPUT_ERRORS, f"the hook failed on {name}, not on an input error"
        if expect_json is not None and run.rc in (0, 1):
            data = json.loads(run.out)
            assert isinstance(data, expect_json), f"JSON {type(data).__name__} on stdout"
    except (AssertionError, ValueError) as exc:
        if allow_known and run.rc is not None and _known(run):
            stats.known += 1
            return
        stats.failures += 1
        raise AssertionError(f"{exc}\n{run!r}") from None


def _known(run: Run) -> bool:
    return any(pattern.search(run.stderr) for pattern, _ in KNOWN.get(run.kind, ()))


def summary(kinds: Sequence[str] = ()) -> list[str]:
    """One line per input kind (``kinds``, default all): runs, failures, the longest run."""
    head = ("input kind", "runs", "fail", "known", "procs", "longest")
    lines = ["{:<18} {:>5} {:>5} {:>5} {:>5} {:>8}".format(*head)]
    chosen = {k: s for k, s in STATS.items() if not kinds or k in kinds}
    for kind, s in sorted(chosen.items()):
        row = (kind, s.runs, s.failures, s.known, s.processes, f"{s.longest:.2f}s")
        lines.append("{:<18} {:>5} {:>5} {:>5} {:>5} {:>8}".format(*row))
    total = sum(s.runs for s in chosen.values())
    lines.append(f"{'total':<18} {total:>5} {sum(s.failures for s in chosen.values()):>5}")
    return lines


# --- running the CLI -------------------------------------------------------------------------


def _env(work: Path) -> dict[str, str]:
    """Strict UTF-8 stdin and stdout, as Python sets them under a UTF-8 locale such as
    en_US.UTF-8 (C.UTF-8 alone would give surrogateescape), and the fake ``zfs`` first on
    PATH: nothing a run starts reaches a real pool."""
    return {
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8:strict",
        "PATH": f"{FAKEBIN}:{os.environ['PATH']}",
        "KZGUARD_FAKE_ZFS_LOG": str(work / "zfs-calls.jsonl"),
        "KZGUARD_FAKE_ZFS_STATE": str(work / "zfs-state.json"),
    }


def _preload() -> None:
    """Import what the CLI would import, once, so that forked runs only do the work."""
    import asn1crypto.cms  # noqa: F401
    import cryptography.x509  # noqa: F401
    import packaging.version  # noqa: F401
    import yaml  # noqa: F401

    import kzguard.cli
    from kzguard import config  # noqa: F401
    from kzguard.actions import dnf5_hold, pin  # noqa: F401
    from kzguard.facts import host, package_meta  # noqa: F401
    from kzguard.managers import apt, dnf5, pacman  # noqa: F401

    kzguard.cli.build_parser()


def run_cli(
    kind: str, argv: Sequence[str], work: Path, stdin: bytes = b"", *, timeout: float = TIMEOUT
) -> Run:
    """``kzguard.cli.main(argv)`` in a forked child with ``stdin``, its stdout and stderr
    captured; killed after ``timeout`` (its exit code is then ``None``)."""
    _preload()
    files = [tempfile.TemporaryFile(dir=work) for _ in range(3)]  # noqa: SIM115 - closed in _wait
    files[0].write(stdin)
    files[0].seek(0)
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 98
        try:
            for fd, handle in enumerate(files):
                os.dup2(handle.fileno(), fd)
            os.environ.update(_env(work))
            sys.stdin = io.TextIOWrapper(
                io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8"
            )
            sys.stdout = io.TextIOWrapper(
                io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="strict"
            )
            sys.stderr = io.TextIOWrapper(
                io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace"
            )
            from kzguard.cli import main

            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 - shown to the parent as a traceback
            import traceback

            traceback.print_exc()
            code = 99
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    return Run(kind, argv, *_wait(pid, timeout, files), time.monotonic() - start)


def _wait(pid: int, timeout: float, files: list) -> tuple[Optional[int], bytes, bytes]:
    """Wait for the child at most ``timeout`` seconds (on its pidfd: no polling, no sleep),
    then kill it; it is reaped whatever happens, an interrupted wait included."""
    pidfd = os.pidfd_open(pid)
    ready = []
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        if not ready:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(pidfd)
    code = os.waitstatus_to_exitcode(status) if ready else None
    out, err = (_read(f) for f in files[1:])
    for handle in files:
        handle.close()
    return code, out, err


def _read(handle) -> bytes:
    handle.seek(0)
    return handle.read()


def run_process(
    kind: str, argv: Sequence[str], work: Path, stdin: bytes = b"", *, timeout: float = TIMEOUT
) -> Run:
    """The real CLI, ``python -m kzguard``, in its own process group, killed at ``timeout``."""
    env = {**os.environ, **_env(work)}
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kzguard", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        code: Optional[int] = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    except BaseException:  # an interrupted wait: nothing is left running
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    STATS.setdefault(kind, Stats()).processes += 1
    return Run(kind, argv, code, out, err, time.monotonic() - start)


# --- what a run is given ---------------------------------------------------------------------


class Command:
    """An argv with ``{root}`` (the tree) and a stdin (bytes, ``{root}`` replaced) for it."""

    def __init__(self, *argv: str, stdin: bytes = b"", json: Optional[type] = None):
        self.argv, self.stdin, self.json = argv, stdin, json

    def __repr__(self) -> str:
        return f"Command({' '.join(self.argv)!r}{', stdin' if self.stdin else ''})"

    def bind(self, tree: Path, stdin: Optional[bytes] = None) -> tuple[list[str], bytes]:
        root = str(tree)
        data = self.stdin if stdin is None else stdin
        return [a.replace("{root}", root) for a in self.argv], data.replace(
            b"{root}", os.fsencode(root)
        )


CHECK = Command("--root", "{root}", "check", "--json", json=dict)
STATUS = Command("--root", "{root}", "status")
DOCTOR = Command("--root", "{root}", "doctor", "--json", json=list)
REPORTS = (CHECK, STATUS, DOCTOR)


# --- mutations of one input ------------------------------------------------------------------


class Content:
    """Replace the file with ``data`` (whatever stood there before)."""

    def __init__(self, data: bytes, how: str = "bytes"):
        self.data, self.how = data, how

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 300 else self.data[:300] + b"..."
        return f"Content({self.how}, {len(self.data)} bytes: {shown!r})"

    def apply(self, path: Path) -> None:
        clear(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.data)


SHAPES = ("dir", "fifo", "loop", "dangling", "null-device", "missing", "parent-loop")


class Shape:
    """Put something that is not a regular file where the file was."""

    def __init__(self, shape: str):
        self.shape = shape

    def __repr__(self) -> str:
        return f"Shape({self.shape})"

    def apply(self, path: Path) -> None:
        clear(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.shape == "dir":
            path.mkdir()
            (path / "inside").write_bytes(b"x")
        elif self.shape == "fifo":
            os.mkfifo(path)
        elif self.shape == "loop":
            os.symlink(path.name, path)
        elif self.shape == "dangling":
            os.symlink("/nonexistent/kzguard-fuzz", path)
        elif self.shape == "null-device":  # a char device (/dev/null's numbers): root only
            if os.geteuid() == 0:
                os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 3))
            else:
                os.mkfifo(path)
        elif self.shape == "parent-loop":  # the directory holding it is a link to itself
            parent = path.parent
            shutil.rmtree(parent)
            os.symlink(parent.name, parent)
        # "missing": nothing there


def clear(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _edit(original: bytes, edits: Sequence[tuple[float, int, bytes]]) -> bytes:
    """Apply (where in 0..1, op, bytes): 0 overwrite, 1 insert, 2 delete len(bytes)."""
    data = bytearray(original)
    for where, op, chunk in edits:
        at = int(where * len(data))
        if op == 0:
            data[at : at + len(chunk)] = chunk
        elif op == 1:
            data[at:at] = chunk
        else:
            del data[at : at + len(chunk)]
    return bytes(data)


NASTY = (b"\0", b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"\r", b"\n", b"\\", b"%")
_chunk = st.one_of(st.sampled_from(NASTY), st.binary(min_size=1, max_size=12))


def edits(original: bytes) -> st.SearchStrategy[bytes]:
    """A few byte-level edits of ``original`` (NULs, invalid UTF-8, random bytes)."""
    edit = st.tuples(st.floats(0, 1), st.integers(0, 2), _chunk)
    return st.lists(edit, min_size=1, max_size=6).map(lambda e: _edit(original, e))


def truncations(original: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, max(len(original) - 1, 0)).map(lambda n: original[:n])


def _lines_op(original: bytes, ops: Sequence[tuple[int, int, bytes]]) -> bytes:
    lines = original.split(b"\n")
    for op, index, extra in ops:
        i = index % max(len(lines), 1)
        if op == 0 and lines:
            del lines[i]
        elif op == 1 and lines:
            lines.insert(i, lines[i])
        elif op == 2:
            lines.insert(i, extra)
        elif op == 3 and lines:
            lines[i] = lines[i] * 50
        elif op == 4 and lines:
            lines[i] = lines[i][: len(lines[i]) // 2]
    return b"\n".join(lines)


def line_edits(original: bytes, *lines: bytes) -> st.SearchStrategy[bytes]:
    """Lines dropped, doubled, halved, repeated, or new ones (``lines``, random) inserted."""
    extra = st.one_of(st.sampled_from(lines), st.binary(max_size=40)) if lines else _chunk
    op = st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), extra)
    return st.lists(op, min_size=1, max_size=6).map(lambda ops: _lines_op(original, ops))


def huge_line(original: bytes) -> st.SearchStrategy[bytes]:
    """A line of 64 KiB to 4 MiB in the middle of the file."""
    return st.tuples(st.sampled_from([1 << 16, 1 << 20, 4 << 20]), st.floats(0, 1)).map(
        lambda a: _edit(original, [(a[1], 1, b"\n" + b"A" * a[0] + b"\n")])
    )


def _longer(original: bytes, index: int, size: int, filler: bytes) -> bytes:
    lines = original.split(b"\n")
    i = index % len(lines)
    lines[i] += (filler * (size // max(len(filler), 1) + 1))[:size]
    return b"\n".join(lines)


def long_line(original: bytes) -> st.SearchStrategy[bytes]:
    """One existing line made 64 KiB or 1 MiB longer (a value, a title, a path that long)."""
    return st.builds(
        _longer,
        st.just(original),
        st.integers(0, 1 << 16),
        st.sampled_from([1 << 16, 1 << 20]),
        st.sampled_from([b"A", b"*a", b"\\x", b"'", b"9."]),
    )


def contents(
    original: bytes, *extra: st.SearchStrategy[bytes], lines: Sequence[bytes] = ()
) -> st.SearchStrategy[Content]:
    """The content mutations of a file whose valid content is ``original``."""
    kinds = [
        ("random", st.binary(max_size=2048)),
        ("edited", edits(original)),
        ("truncated", truncations(original)),
        ("lines", line_edits(original, *lines)),
        ("huge-line", huge_line(original)),
        ("long-line", long_line(original)),
        ("text", st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))),
        ("empty", st.just(b"")),
        *(("special", s) for s in extra),
    ]
    return st.one_of(*(s.map(functools.partial(_content, how)) for how, s in kinds))


def _content(how: str, data: bytes) -> Content:
    return Content(data, how)


def mutations(
    original: bytes,
    *extra: st.SearchStrategy[bytes],
    lines: Sequence[bytes] = (),
    shapes: Sequence[str] = SHAPES,
) -> st.SearchStrategy[object]:
    """A content or a shape mutation for one file (``shapes`` the shapes allowed for it)."""
    found = contents(original, *extra, lines=lines)
    return st.one_of(found, found, st.sampled_from(shapes).map(Shape)) if shapes else found


def nested(depth: int, opener: bytes, closer: bytes = b"", prefix: bytes = b"") -> bytes:
    return prefix + opener * depth + closer * depth


def deep_nesting(*patterns: tuple[bytes, bytes, bytes]) -> st.SearchStrategy[bytes]:
    """``(prefix, opener, closer)`` repeated 1000 or 100 000 deep, closed or not."""
    return st.tuples(
        st.sampled_from(patterns), st.sampled_from([1000, 100_000]), st.booleans()
    ).map(lambda a: nested(a[1], a[0][1], a[0][2] if a[2] else b"", a[0][0]))


# --- cases: one mutation of one input on one host, and the command run on it ---------------


class Target:
    """An input file on a base host, and how to mutate it (``strategy(original)``)."""

    def __init__(
        self,
        base: str,
        inner: str,
        strategy: Callable[[bytes], st.SearchStrategy[object]],
        default: bytes = b"",
    ):
        self.base, self.inner, self.strategy, self.default = base, inner, strategy, default

    def original(self) -> bytes:
        path = base(self.base) / self.inner.lstrip("/")
        return path.read_bytes() if path.is_file() else self.default


class Case:
    """What one example does: ``mutation`` applied at ``inner`` on a copy of ``base``, then
    ``command`` (with ``stdin``, else the command's own)."""

    def __init__(
        self,
        base: str,
        inner: str,
        mutation: object,
        command: Command,
        stdin: Optional[bytes] = None,
    ):
        self.base, self.inner, self.mutation = base, inner, mutation
        self.command, self.stdin = command, stdin

    def __repr__(self) -> str:
        fed = "" if self.stdin is None else f", stdin={self.stdin[:400]!r}"
        return f"Case({self.base}:{self.inner}, {self.mutation!r}, {self.command!r}{fed})"

    def apply(self, tree: Path) -> None:
        self.mutation.apply(tree / self.inner.lstrip("/"))  # type: ignore[attr-defined]


def cases(targets: Sequence[Target], commands: Sequence[Command]) -> st.SearchStrategy[Case]:
    """A case for one of ``targets``, run with one of ``commands``."""

    def for_target(target: Target) -> st.SearchStrategy[Case]:
        return st.builds(
            Case,
            st.just(target.base),
            st.just(target.inner),
            target.strategy(target.original()),
            st.sampled_from(commands),
        )

    return st.sampled_from(targets).flatmap(for_target)


def play(kind: str, case: Case, *, allow_known: bool = True, timeout: float = TIMEOUT) -> Run:
    """Run one case; the first case of each kind runs as a real process, the rest forked.
    ``allow_known=False`` (the xfail tests) fails on a known bug too."""
    with copy_of(case.base) as tree:
        case.apply(tree)
        argv, data = case.command.bind(tree, case.stdin)
        stats = STATS.setdefault(kind, Stats())
        runner = run_process if stats.processes == 0 else run_cli
        run = runner(kind, argv, tree.parent, data, timeout=timeout)
        try:
            check(run, expect_json=case.command.json, allow_known=allow_known)
            if case.command.json is dict and not (allow_known and _known(run)):
                judged_invariants(run)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{case!r}") from None
        return run


def judged_invariants(run: Run) -> None:
    """What ``check --json`` may never say: a kernel safe with a module kzguard could not read
    or that is missing, or exit 0 with a kernel not safe or a host reason."""
    if run.rc not in (0, 1):
        return
    data = json.loads(run.out)
    kernels = data.get("kernels", [])
    for kernel in kernels:
        if kernel.get("verdict") != "safe" or "installed" not in kernel.get("state", []):
            continue
        for name, module in (kernel.get("modules") or {}).items():
            assert module is not None, (
                f"{kernel['release']} safe without its {name} module\n{run!r}"
            )
            assert not module.get("error"), f"{kernel['release']} safe, {name} unreadable\n{run!r}"
            sig = module.get("signature")
            if data["host"]["secure_boot"].get("signatures_required"):
                assert sig and sig.get("status") in ("valid", "kernel-key"), (
                    f"{kernel['release']} safe, {name} signature {sig}\n{run!r}"
                )
    if run.rc == 0:
        assert all(k.get("verdict") == "safe" for k in kernels), f"exit 0, not all safe\n{run!r}"
        assert not data.get("host_reasons"), f"exit 0 with host reasons\n{run!r}"


def report_lines(config: object, header: str, kinds: Sequence[str]) -> None:
    """Show the summary of ``kinds`` (``pytest -q`` included) and keep every kind's in
    ``$KZGUARD_FUZZ_STATS`` when that names a file."""
    lines = summary(kinds)
    plugins = config.pluginmanager  # type: ignore[attr-defined]
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_sep("-", header)
            for line in lines:
                reporter.write_line(line)
    target = os.environ.get("KZGUARD_FUZZ_STATS")
    if target:
        data = {k: vars(s) for k, s in STATS.items()}
        Path(target).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
