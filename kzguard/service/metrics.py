"""Prometheus metrics: every family built from :attr:`Core.last`, rendered once, served and written.

:func:`families` builds every family from the core's last check result (every series that can
be 0 is written as an explicit 0). :func:`render` writes them in the Prometheus text format
(0.0.4, and 1.0.0 with its name escapings) and in OpenMetrics 1.0.0, byte for byte what
client_python's two ``generate_latest`` write for them (tests/test_metrics.py compares them);
:func:`exposition` and :func:`body` keep the bytes (and their gzip) until what they are made
of changes (a check, a failed check, a reload): a scrape costs a lookup, not a rendering.
:func:`serve` answers scrapes over HTTP (a thread that sleeps in ``select`` until a connection
or ``shutdown()``: no idle wakeups; each request in a short-lived thread, at most
:data:`MAX_WORKERS` at once, a connection beyond them answered ``503`` at once), negotiating
the format from ``Accept`` as client_python's WSGI app does (:func:`negotiate`), gzip when
asked. prometheus_client is not imported to serve a scrape, a Prometheus server's included;
only a ``name[]`` selection, or an ``Accept`` version client_python cannot compare, is
answered by client_python's own WSGI app over :class:`KzguardCollector` (imported the first
time one asks, its answer kept per state). :func:`write_textfile` writes the text exposition
for node_exporter's textfile collector (a temp file renamed over the target). Names, labels
and the alerts built on them are documented in docs/metrics.md; they are a contract.

Before the first check completes, only what needs no judgement is exported (build info, the
check timestamp 0, errors, configuration): an unknown is not a 0, and a 0 for
``kzguard_next_boot_safe`` would page someone every time the daemon starts.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import selectors
import socket
import threading
import weakref

from kzguard import __version__
from kzguard.judge.policy import INSTALLED, PENDING, RUNNING
from kzguard.judge.reasons import SAFE, UNKNOWN, UNSAFE
from kzguard.managers import NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any, Optional

    from prometheus_client.metrics_core import Metric

    from kzguard.judge.policy import KernelVerdict, Report
    from kzguard.service.core import CheckResult, Core

VERDICTS = (SAFE, UNSAFE, UNKNOWN)
DEFAULT_LISTEN = "127.0.0.1:9737"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # client_python's for this format
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LISTEN = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<v6port>\d+)|(?P<host>[^:\[\]]+):(?P<port>\d+)")


class Family:
    """One metric family: ``kind`` gauge, counter or info (client_python's names), its
    label names, unit and samples (label values, value; an info sample's labels are a
    mapping). Named as client_python names it (a counter without ``_total``, then the unit
    appended); names and label names must be legacy Prometheus names."""

    __slots__ = ("documentation", "kind", "labels", "name", "samples", "unit")

    def __init__(
        self, name: str, documentation: str, kind: str = "gauge", labels=(), unit: str = ""
    ):
        if unit and kind == "info":
            raise ValueError(f"{name}: an info family has no unit")
        if kind == "counter" and name.endswith("_total"):
            name = name[:-6]
        if unit and not name.endswith("_" + unit):
            name = f"{name}_{unit}"
        self.labels = tuple(labels)
        if not _METRIC_NAME.fullmatch(name) or not all(map(_LABEL_NAME.fullmatch, self.labels)):
            raise ValueError(f"{name}{self.labels}: not a legacy Prometheus name")
        self.name = name
        self.documentation = documentation
        self.kind = kind
        self.unit = unit
        self.samples: list[tuple[Any, float]] = []

    def add_metric(self, values: Any, value: float) -> None:
        if self.kind == "info" and not all(map(_LABEL_NAME.fullmatch, values)):
            raise ValueError(f"{self.name}: {sorted(values)} are not legacy label names")
        self.samples.append((values, float(value)))


def families(core: Core) -> list[Family]:
    """Every kzguard family, read from ``core`` now."""
    result, error, errors = core.last, core.error, core.errors  # one read of each
    build = Family("kzguard_build", "kzguard's version (always 1)", "info")
    build.add_metric({"version": __version__}, 1.0)
    out = [
        build,
        _gauge(
            "kzguard_last_check_timestamp_seconds",
            "When the last successful check of the host finished (Unix time; 0 before the first)",
            result.taken_at if result else 0.0,
        ),
        _gauge(
            "kzguard_check_duration_seconds",
            "How long the last successful check took (0 before the first)",
            result.duration if result else 0.0,
        ),
        _gauge(
            "kzguard_last_check_failed",
            "1 when the most recent check failed (see the journal or kzguard doctor), else 0",
            1.0 if error is not None else 0.0,
        ),
    ]
    failures = Family(
        "kzguard_check_errors",
        "Checks of the host that failed since the service started",
        "counter",
    )
    failures.add_metric((), float(errors))
    out.append(failures)
    out.append(
        _gauge(
            "kzguard_snapshots_enabled",
            "1 when the configuration snapshots the boot environment before kernel changes",
            1.0 if core.config.snapshots.enabled else 0.0,
        )
    )
    if result is not None:
        out.extend(_judgement(result))
    return out


class KzguardCollector:
    """Every kzguard metric as client_python's metric families, read from ``core`` when
    collected (a ``Collector``: ``collect()`` yields metric families; ``describe()`` is empty
    so registering it collects nothing). Used for what :func:`exposition` does not render."""

    def __init__(self, core: Core):
        self.core = core

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        kinds = {
            "gauge": GaugeMetricFamily,
            "counter": CounterMetricFamily,
            "info": InfoMetricFamily,
        }
        for family in families(self.core):
            options: dict[str, Any] = {"labels": family.labels}
            if family.kind == "info":
                options = {"labels": ()}
            elif family.unit:
                options["unit"] = family.unit
            metric = kinds[family.kind](family.name, family.documentation, **options)
            for values, value in family.samples:
                if family.kind == "info":
                    metric.add_metric([], values)
                else:
                    metric.add_metric(list(values), value)
            yield metric


def _judgement(result: CheckResult) -> Iterator[Family]:
    """The families that need a completed check."""
    report = result.report
    host = report.host
    next_boot = report.next_boot
    safe = next_boot is not None and next_boot.safe and not report.host_reasons
    next_safe = Family(
        "kzguard_next_boot_safe",
        "1 when the kernel the next boot uses can load every guarded module, else 0 (reason: "
        "the first reason code, kernel-unreadable when kzguard cannot see the kernels)",
        labels=["reason"],
    )
    next_safe.add_metric(["" if safe else _next_boot_reason(report)], 1.0 if safe else 0.0)
    yield next_safe
    info = Family(
        "kzguard_next_boot_info",
        "The kernel the next boot uses, its verdict and where that choice was read (always 1)",
        labels=["release", "verdict", "source"],
    )
    if next_boot is not None:
        info.add_metric([next_boot.release, next_boot.verdict, next_boot.source], 1.0)
    yield info
    installed = [k for k in report.kernels if _installed(k)]
    pending = [k for k in report.kernels if not _installed(k) and PENDING in k.states]
    safe = _family("kzguard_kernel_safe", "1 when an installed kernel is judged safe, else 0")
    missing = _family(
        "kzguard_kernel_module_missing",
        "1 when an installed kernel lacks a guarded module file (reason module-missing), else 0",
    )
    for kernel in installed:
        safe.add_metric([kernel.release], 1.0 if kernel.safe else 0.0)
        codes = {r.code for r in kernel.reasons}
        missing.add_metric([kernel.release], 1.0 if "module-missing" in codes else 0.0)
    supported = _family(
        "kzguard_pending_kernel_supported",
        "1 when a kernel the package manager offers (not installed yet) is judged safe, else 0",
    )
    for kernel in pending:
        supported.add_metric([kernel.release], 1.0 if kernel.safe else 0.0)
    yield from (safe, missing, supported)
    verdict = Family(
        "kzguard_kernel_verdict",
        "Each kernel's verdict as a state set: 1 for its verdict, 0 for the others",
        labels=["release", "state", "verdict"],
    )
    reason = Family(
        "kzguard_kernel_reason",
        "1 for each reason code on a kernel's verdict (only reasons that apply are exported)",
        labels=["release", "state", "reason"],
    )
    for state, kernels in ((INSTALLED, installed), (PENDING, pending)):
        for kernel in kernels:
            for name in VERDICTS:
                value = 1.0 if kernel.verdict == name else 0.0
                verdict.add_metric([kernel.release, state, name], value)
            for code in dict.fromkeys(r.code for r in kernel.reasons):
                reason.add_metric([kernel.release, state, code], 1.0)
    yield from (verdict, reason)
    yield _gauge(
        "kzguard_secure_boot_enabled",
        "1 when the firmware reports Secure Boot on (EFI SecureBoot variable), else 0",
        1.0 if host.secure_boot.secure_boot is True else 0.0,
    )
    yield _gauge(
        "kzguard_module_signatures_required",
        "1 when modules must be signed by an enrolled key to load (Secure Boot enforcing or "
        "require_signature: always), else 0",
        1.0 if host.signatures_required else 0.0,
    )
    yield _gauge(
        "kzguard_root_on_zfs",
        "1 when the root file system is a ZFS dataset (snapshots are possible), else 0",
        1.0 if host.root_dataset is not None else 0.0,
    )
    yield _gauge(
        "kzguard_snapshot_last_success_timestamp_seconds",
        "When kzguard last took a snapshot of the boot environment (Unix time; 0 when never)",
        result.snapshot_success or 0.0,
    )
    blocked = Family(
        "kzguard_transactions_blocked",
        "Package manager transactions kzguard refused, by manager (from the state file)",
        "counter",
        labels=["manager"],
    )
    counts = {name: 0 for name in NAMES}  # every registered manager, 0 until one refuses
    counts.update(result.blocked)
    for manager in sorted(counts):
        blocked.add_metric([manager], float(counts[manager]))
    yield blocked


def _installed(kernel: KernelVerdict) -> bool:
    return INSTALLED in kernel.states or RUNNING in kernel.states


def _next_boot_reason(report: Report) -> str:
    """Why the next boot is not safe, as one reason code."""
    if report.host_reasons:
        return report.host_reasons[0].code
    next_boot = report.next_boot
    if next_boot is None:
        return "no-kernel"
    verdict = next((k for k in report.kernels if k.release == next_boot.release), None)
    if verdict is not None and verdict.reasons:
        return verdict.reasons[0].code
    return next_boot.verdict


def _gauge(name: str, documentation: str, value: float) -> Family:
    family = Family(name, documentation)
    family.add_metric((), value)
    return family


def _family(name: str, documentation: str) -> Family:
    return Family(name, documentation, labels=["release"])


def registry(core: Core) -> Any:
    """A client_python ``CollectorRegistry`` holding only kzguard's collector (no process or
    platform metrics: a hook's textfile must not describe the hook's own short-lived process).
    Imports prometheus_client."""
    from prometheus_client.registry import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(KzguardCollector(core))
    return reg


# --- the exposition formats, rendered once per state ---------------------------------------

TEXT, OPENMETRICS = "text", "openmetrics"
# client_python's name escaping schemes (the ``escaping`` parameter of an Accept entry)
UNDERSCORES, ALLOW_UTF8, DOTS, VALUES = "underscores", "allow-utf-8", "dots", "values"
ESCAPINGS = (UNDERSCORES, ALLOW_UTF8, DOTS, VALUES)
TEXT_1_CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# core -> _Entry (what the exposition was made of, the families, every body rendered from them)
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()  # the main loop and the scrape threads all render
_FALLBACKS = 16  # client_python answers kept per state (keyed by what the client sent)


class _Entry:
    __slots__ = ("bodies", "fallbacks", "families", "state")

    def __init__(self, state: tuple, fams: list[Family]):
        self.state = state
        self.families = fams
        # (format, escaping, gzipped) -> bytes: at most 2 x 4 x 2, whatever clients send
        self.bodies: dict[tuple[str, str, bool], bytes] = {}
        self.fallbacks: dict[tuple, tuple] = {}


def _state(core: Core) -> tuple:
    """What the exposition is made of: a new check result (a new object), an error, the
    count of them, the configuration (a reload makes a new one)."""
    return (core.last, core.error, core.errors, core.config)


def _entry(core: Core) -> _Entry:
    """The cache entry of ``core``'s current state, made (the text 0.0.4 and OpenMetrics 1.0.0
    rendered: what plain tools and a Prometheus server ask for) when the state changed."""
    state = _state(core)
    entry = _CACHE.get(core)
    if entry is not None and _same(entry.state, state):
        return entry
    fams = families(core)
    entry = _Entry(state, fams)
    entry.bodies[(TEXT, UNDERSCORES, False)] = render(fams)
    entry.bodies[(OPENMETRICS, UNDERSCORES, False)] = render(fams, OPENMETRICS)
    with _LOCK:
        _CACHE[core] = entry
    return entry


def exposition(core: Core) -> bytes:
    """The metrics in the Prometheus text format 0.0.4, as a plain scrape returns them;
    rendered once per state of ``core`` (:func:`_state`) and kept."""
    return _entry(core).bodies[(TEXT, UNDERSCORES, False)]


def body(core: Core, fmt: str = TEXT, escaping: str = UNDERSCORES, gzipped: bool = False) -> bytes:
    """The exposition in ``fmt`` (:data:`TEXT` or :data:`OPENMETRICS`) with ``escaping``,
    gzip-compressed when ``gzipped``; made once per state of ``core`` and kept."""
    entry = _entry(core)
    key = (fmt, escaping, gzipped)
    data = entry.bodies.get(key)
    if data is None:
        if gzipped:
            import gzip

            data = gzip.compress(body(core, fmt, escaping), mtime=0)
        else:
            data = render(entry.families, fmt, escaping)
        with _LOCK:
            entry.bodies[key] = data
    return data


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b))


def render(metrics: Sequence[Family], fmt: str = TEXT, escaping: str = UNDERSCORES) -> bytes:
    """``metrics`` as client_python writes them: ``fmt`` :data:`TEXT` is
    ``prometheus_client.exposition.generate_latest`` (the text format; 0.0.4, or 1.0.0 with
    ``escaping``), :data:`OPENMETRICS` is ``prometheus_client.openmetrics.exposition.
    generate_latest`` (OpenMetrics 1.0.0: ``# HELP``, ``# TYPE``, ``# UNIT``, the family named
    without its ``_total``/``_info`` suffix, samples with it, ``# EOF``). Same bytes for the
    same families, every escaping (tests/test_metrics.py compares them); a string that cannot
    be UTF-8 (a surrogate from an undecodable file name) becomes U+FFFD where client_python
    would raise."""
    om = fmt == OPENMETRICS
    out: list[str] = []
    for family in metrics:
        kind, base = family.kind, family.name
        sample = (
            f"{base}_total" if kind == "counter" else f"{base}_info" if kind == "info" else base
        )
        if om:
            head = _name(base, escaping, metric=True)
            doc = _value(family.documentation)
            out.append(f"# HELP {head} {doc}\n# TYPE {head} {kind}\n")
            if family.unit:
                out.append(f"# UNIT {head} {family.unit}\n")
            sample = _escape(sample, escaping, metric=False)
        else:
            head = _name(sample, escaping, metric=True)  # the text format names it by its samples
            doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
            typ = "counter" if kind == "counter" else "gauge"
            out.append(f"# HELP {head} {doc}\n# TYPE {head} {typ}\n")
            sample = head
        for values, value in family.samples:
            pairs = values.items() if kind == "info" else zip(family.labels, values)
            labels = ",".join(
                f'{_name(k, escaping, metric=False)}="{_value(v)}"' for k, v in sorted(pairs)
            )
            out.append(f"{sample}{{{labels}}} " if labels else f"{sample} ")
            out.append(f"{_go_float(value)}\n")
    if om:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8", "replace")


def _value(value: str) -> str:
    """A label value (and an OpenMetrics HELP text) escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _name(name: str, escaping: str, metric: bool) -> str:
    """client_python's ``escape_metric_name``/``escape_label_name`` of a legacy-valid name
    (:class:`Family` admits no other): only ``dots`` changes one."""
    return _escape(name, DOTS, metric) if escaping == DOTS else name


def _rune(char: str, index: int, metric: bool) -> bool:
    return (
        "a" <= char <= "z"
        or "A" <= char <= "Z"
        or char == "_"
        or ("0" <= char <= "9" and index > 0)
        or (metric and char == ":")
    )


def _escape(name: str, escaping: str, metric: bool) -> str:
    """client_python's ``openmetrics.exposition._escape`` of a name (``metric``: colons are
    valid runes); an OpenMetrics sample name goes through it with ``metric`` False."""
    if escaping == ALLOW_UTF8:
        return _value(name)
    out = []
    if escaping == VALUES:
        out.append("U__")
    for index, char in enumerate(name):
        if escaping == UNDERSCORES:
            out.append(char if _rune(char, index, metric) else "_")
        elif char == "_":
            out.append("__")
        elif escaping == DOTS and char == ".":
            out.append("_dot_")
        elif _rune(char, index, metric):
            out.append(char)
        elif escaping == DOTS:
            out.append("__")
        elif 0xD800 <= ord(char) <= 0xDFFF:
            out.append("_FFFD_")
        else:
            out.append(f"_{ord(char):x}_")
    return "".join(out)


def _go_float(d: float) -> str:
    """client_python's ``floatToGoString``: Go's formatting of a float."""
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def write_textfile(core: Core, path: Optional[str] = None) -> str:
    """Write the metrics for node_exporter's textfile collector, atomically and never through
    a link (:func:`kzguard.base.fileio.replace_bytes`; not client_python's ``write_to_textfile``,
    whose predictable temp name a user of the collector directory could plant a link at).
    ``path`` is a host path; without it, ``metrics.textfile`` is taken inside the core's
    root. The directory must exist, and is refused (``UnsafeDirectory``) when another user
    can write it and it is not sticky and root's. Returns the host path written."""
    from kzguard.base import fileio

    if path is None:
        inner = core.config.metrics.textfile
        if not inner:
            raise ValueError("no textfile: metrics.textfile is not set")
        path = core.root.fresh().resolve(inner).as_posix()
    directory = os.path.dirname(path) or "."
    fileio.check_directory(directory)
    if os.path.islink(path):
        raise fileio.UnsafeDirectory(errno.EPERM, "the textfile is a symbolic link", path)
    fileio.replace_bytes(path, exposition(core), mode=0o644)
    return path


# --- HTTP ------------------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    match = _LISTEN.fullmatch(listen.strip())
    if not match:
        raise ValueError(f"{listen!r} is not host:port (e.g. 127.0.0.1:9737, [::1]:9737)")
    if match["v6"]:
        return match["v6"], int(match["v6port"])
    return match["host"], int(match["port"])


MAX_REQUEST = 16384  # bytes of request line and headers a scrape may send
CLIENT_TIMEOUT = 10.0  # seconds a client has, in all, to send its request, and to read the answer
MAX_WORKERS = 8  # connections answered at once; one more is refused with BUSY
MAX_LINGER = 64  # refused connections drained at once before closing; more are closed at once
LINGER = 1.0  # seconds a refused connection is drained (so that the 503 is not lost to a RST)
_FAVICON = "/favicon.ico"
_BUSY_BODY = b"# HTTP 503 Service Unavailable: too many scrapes at once\n"
BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(_BUSY_BODY) + _BUSY_BODY
)


class MetricsServer:
    """The HTTP endpoint: a thread that waits in ``select`` (no timeout while nothing is
    pending) for a connection or for :meth:`shutdown`, and answers each connection in a
    short-lived thread, at most ``max_workers`` (:data:`MAX_WORKERS`) at once: a client that
    stalls holds only its own thread, for at most ``client_timeout`` to send its request.

    A connection accepted while every worker is busy is refused by the select thread without
    waiting for it: what it has already sent is discarded (non-blocking reads), it is sent
    :data:`BUSY` (``503 Service Unavailable``, ``Retry-After: 1``; Prometheus records a failed
    scrape, ``up`` 0, as for a timeout), its sending side is shut, and it is drained for at
    most :data:`LINGER` seconds before it is closed, so that a request arriving late does not
    turn into a reset that destroys the 503 (at most :data:`MAX_LINGER` of them; beyond that
    closed at once). HTTP/1.0, one request per connection, as wsgiref served it."""

    def __init__(
        self,
        core: Core,
        listen: str,
        max_workers: int = MAX_WORKERS,
        client_timeout: float = CLIENT_TIMEOUT,
    ):
        host, port = parse_listen(listen)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        self.core = core
        self.max_workers = max_workers
        self.client_timeout = client_timeout
        self._slots = threading.BoundedSemaphore(max_workers)
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((sockaddr[0], port))
            self._sock.listen(16)
            self._address = self._sock.getsockname()[:2]
        except BaseException:
            self._sock.close()
            raise
        self._wake_r, self._wake_w = socket.socketpair()
        self._lingering: dict[socket.socket, float] = {}  # refused connection -> close by then
        self._thread = threading.Thread(target=self._loop, name="kzguard-metrics", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when ``:0`` was asked for)."""
        host, port = self._address
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def _loop(self) -> None:
        import time

        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            try:
                while True:
                    timeout = None
                    if self._lingering:
                        timeout = max(0.0, min(self._lingering.values()) - time.monotonic())
                    for key, _ in selector.select(timeout):
                        sock = key.fileobj
                        if sock is self._wake_r:
                            return
                        if sock is self._sock:
                            self._accept(selector)
                        else:
                            self._drain(selector, sock)  # type: ignore[arg-type]
                    now = time.monotonic()
                    for sock, deadline in list(self._lingering.items()):
                        if deadline <= now:
                            self._close(selector, sock)
            finally:
                for sock in list(self._lingering):
                    self._close(selector, sock)

    def _accept(self, selector: selectors.BaseSelector) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        if self._slots.acquire(blocking=False):
            worker = threading.Thread(
                target=self._answer, args=(conn,), name="kzguard-scrape", daemon=True
            )
            try:
                worker.start()
                return
            except RuntimeError:  # no thread to be had: refused like a busy server
                self._slots.release()
        self._refuse(selector, conn)

    def _refuse(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        """Answer BUSY without waiting for the client (see the class)."""
        import time

        conn.setblocking(False)
        try:
            for _ in range(4):  # what is there now, not what a fast client keeps sending
                if not conn.recv(MAX_REQUEST):
                    break
        except OSError:  # BlockingIOError: nothing more has arrived
            pass
        try:
            conn.send(BUSY)  # a new connection's empty send buffer takes it whole
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        if len(self._lingering) >= MAX_LINGER:
            conn.close()
            return
        self._lingering[conn] = time.monotonic() + LINGER
        selector.register(conn, selectors.EVENT_READ)

    def _drain(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        try:
            if conn.recv(MAX_REQUEST):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._close(selector, conn)  # the client closed (or broke) its end

    def _close(self, selector: selectors.BaseSelector, conn: socket.socket) -> None:
        self._lingering.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn)
        conn.close()

    def _answer(self, conn: socket.socket) -> None:
        import time

        try:
            deadline = time.monotonic() + self.client_timeout
            request = _read_request(conn, deadline)
            if request is not None:
                status, headers, body = respond(self.core, *request)
                head = [f"HTTP/1.0 {status}"]
                head += [f"{k}: {v}" for k, v in headers]
                head.append(f"Content-Length: {len(body)}")
                conn.settimeout(self.client_timeout)  # for the whole sendall
                conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:
            pass
        except Exception:  # a scrape must never end the thread unlogged
            import logging

            logging.getLogger("kzguard.metrics").exception("answering a scrape failed")
        finally:
            conn.close()
            self._slots.release()

    def shutdown(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join()
        self._sock.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()


def _read_request(
    conn: socket.socket, deadline: float
) -> Optional[tuple[str, str, str, dict[str, str]]]:
    """(method, path, query, headers with lower-case names; a repeated header's values joined
    by commas, as wsgiref does) of one request, or None. The request must be complete by
    ``deadline`` (monotonic): a client sending a byte at a time gets no more time for it."""
    import time

    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        conn.settimeout(remaining)
        chunk = conn.recv(4096)
        if not chunk:
            if not data:
                return None
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            conn.sendall(b"HTTP/1.0 431 Request Header Fields Too Large\r\n\r\n")
            return None
    lines = data.decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split()
    if len(parts) < 2:
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        return None
    method, target = parts[0], parts[1]
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return method, path, query, headers


def negotiate(accept: str) -> Optional[tuple[str, str, str]]:
    """(format, escaping, Content-Type) that client_python's ``choose_encoder`` (0.2x) picks
    for an ``Accept`` header: the first entry, in the order written (``q`` is not read), that is
    ``application/openmetrics-text`` (without a version: 1.0.0; of version >= 1.0.0: that
    version, with the ``escaping`` asked for) or ``text/plain`` of version >= 1.0.0 (then the
    text format 1.0.0 with that escaping); else the text format 0.0.4. None when client_python
    could not compare the version asked for (``version=1.x``: it raises)."""
    for accepted in accept.split(","):
        toks = accepted.split(";")
        kind = toks[0].strip()
        if kind not in ("application/openmetrics-text", "text/plain"):
            continue
        version, escaping = _param(toks, "version"), _param(toks, "escaping")
        if escaping not in ESCAPINGS:
            escaping = UNDERSCORES
        if kind == "application/openmetrics-text" and not version:
            return OPENMETRICS, UNDERSCORES, OPENMETRICS_CONTENT_TYPE
        if not version:
            continue
        try:
            recent = _version(version) >= (1, 0, 0)
        except TypeError:
            return None
        if not recent:
            continue
        if kind == "text/plain":
            return TEXT, escaping, f"{TEXT_1_CONTENT_TYPE}; escaping={escaping}"
        content_type = f"application/openmetrics-text; version={version}; charset=utf-8"
        return OPENMETRICS, escaping, f"{content_type}; escaping={escaping}"
    return TEXT, UNDERSCORES, CONTENT_TYPE


def _param(toks: list[str], name: str) -> str:
    """The first ``name=value`` of an Accept entry's parameters, as client_python reads it."""
    for tok in toks:
        if "=" in tok:
            key, value = tok.strip().split("=", 1)
            if key == name:
                return value
    return ""


def _version(version: str) -> tuple:
    """client_python's ``parse_version``: dotted parts, each an int when ``int()`` takes it."""
    parts: list[Any] = []
    for part in version.split("."):
        try:
            parts.append(int(part))
        except ValueError:
            parts.append(part)
    return tuple(parts)


def respond(
    core: Core, method: str, path: str, query: str, headers: dict[str, str]
) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status, headers, body) for one request, as client_python's ``make_wsgi_app`` answers
    it: OPTIONS and GET, any path (``/favicon.ico`` empty), the format :func:`negotiate`
    picks from ``Accept``, gzip when ``Accept-Encoding`` names it. Rendered here and kept per
    state; client_python (imported then) answers only a ``name[]`` selection and a version
    :func:`negotiate` cannot compare."""
    allow = [("Allow", "OPTIONS,GET")]
    if method == "OPTIONS":
        return "200 OK", allow, b""
    if method != "GET":
        status = "405 Method Not Allowed"
        return status, allow, f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()
    if path == _FAVICON:
        return "200 OK", [], b""
    accept = headers.get("accept", "")
    gzipped = _gzip_accepted(headers.get("accept-encoding", ""))
    chosen = negotiate(accept)
    if chosen is None or (query and "name[]" in _query(query)):
        return _fallback(core, accept, query, gzipped)
    fmt, escaping, content_type = chosen
    answer = [("Content-Type", content_type)]
    if gzipped:
        answer.append(("Content-Encoding", "gzip"))
    return "200 OK", answer, body(core, fmt, escaping, gzipped)


def _query(query: str) -> dict:
    from urllib.parse import parse_qs

    return parse_qs(query)


def _gzip_accepted(header: str) -> bool:
    return any(e.split(";")[0].strip().lower() == "gzip" for e in header.split(","))


def _fallback(core: Core, accept: str, query: str, gzipped: bool) -> tuple:
    """client_python's answer, kept per state (at most :data:`_FALLBACKS` of them)."""
    entry = _entry(core)
    key = (accept, gzipped, query)
    with _LOCK:
        answer = entry.fallbacks.get(key)
    if answer is None:
        answer = _client_python(core, accept, query, gzipped)
        with _LOCK:
            if len(entry.fallbacks) < _FALLBACKS:  # a client inventing headers cannot grow this
                entry.fallbacks[key] = answer
    return answer


def _client_python(core: Core, accept: str, query: str, gzipped: bool) -> tuple:
    """What client_python's WSGI app answers; without client_python, the format negotiated
    (the text format 0.0.4 when that failed) and every family."""
    try:
        from prometheus_client.exposition import make_wsgi_app
    except ImportError:
        fmt, escaping, content_type = negotiate(accept) or (TEXT, UNDERSCORES, CONTENT_TYPE)
        answer = [("Content-Type", content_type)]
        if gzipped:
            answer.append(("Content-Encoding", "gzip"))
        return "200 OK", answer, body(core, fmt, escaping, gzipped)
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list) -> None:
        answer.update(status=status, headers=list(headers))

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/metrics",
        "QUERY_STRING": query,
        "HTTP_ACCEPT": accept,
        "HTTP_ACCEPT_ENCODING": "gzip" if gzipped else "",
    }
    data = b"".join(make_wsgi_app(registry(core))(environ, start_response))
    return answer["status"], answer["headers"], data


def serve(core: Core, listen: Optional[str] = None, **options: Any) -> MetricsServer:
    """Serve the metrics over HTTP on ``listen`` (default ``metrics.listen``, whose own default
    is loopback); returns the running server (``.shutdown()`` stops it). ``options`` go to
    :class:`MetricsServer` (``max_workers``, ``client_timeout``)."""
    address = core.config.metrics.listen if listen is None else listen
    if not address:
        raise ValueError("metrics.listen is empty: the HTTP endpoint is disabled")
    return MetricsServer(core, address, **options)
