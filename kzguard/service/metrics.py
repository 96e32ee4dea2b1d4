"""Prometheus metrics: every family built from :attr:`Core.last`, rendered once, served and written.

:func:`families` builds every family from the core's last check result (every series that can
be 0 is written as an explicit 0). :func:`exposition` renders them in the Prometheus text format
(0.0.4, byte for byte what client_python's ``generate_latest`` writes for them) and keeps the
bytes until what they are made of changes (a check, a failed check, a reload): a scrape costs a
lookup, not a rendering. :func:`serve` answers scrapes over HTTP (a thread that sleeps in
``select`` until a connection or ``shutdown()``: no idle wakeups; each request in a short-lived
thread), gzip-compressed when asked; a scraper that asks for OpenMetrics, text format 1.0.0 or
a ``name[]`` selection is answered by client_python's own WSGI app over
:class:`KzguardCollector`, imported the first time one asks (its output kept as the text is).
:func:`write_textfile` writes the same exposition for node_exporter's textfile collector (a
temp file renamed over the target). Names, labels and the alerts built on them are documented
in docs/metrics.md; they are a contract.

Before the first check completes, only what needs no judgement is exported (build info, the
check timestamp 0, errors, configuration): an unknown is not a 0, and a 0 for
``kzguard_next_boot_safe`` would page someone every time the daemon starts.
"""

from __future__ import annotations

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
_LISTEN = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<v6port>\d+)|(?P<host>[^:\[\]]+):(?P<port>\d+)")


class Family:
    """One metric family: ``kind`` gauge, counter or info (client_python's names), its
    label names and samples (label values, value; an info sample's labels are a mapping)."""

    __slots__ = ("documentation", "kind", "labels", "name", "samples")

    def __init__(self, name: str, documentation: str, kind: str = "gauge", labels=()):
        self.name = name
        self.documentation = documentation
        self.kind = kind
        self.labels = tuple(labels)
        self.samples: list[tuple[Any, float]] = []

    def add_metric(self, values: Any, value: float) -> None:
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
            labels = () if family.kind == "info" else family.labels
            metric = kinds[family.kind](family.name, family.documentation, labels=labels)
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


# --- the text format, rendered once per state ----------------------------------------------

# core -> (what the text was made of, the text, {variant: (status, headers, body)})
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()  # the main loop and the metrics thread both render


def _state(core: Core) -> tuple:
    """What the exposition is made of: a new check result (a new object), an error, the
    count of them, the configuration (a reload makes a new one)."""
    return (core.last, core.error, core.errors, core.config)


def exposition(core: Core) -> bytes:
    """The metrics in the Prometheus text format, as a scrape returns them; rendered once per
    state of ``core`` (:func:`_state`) and kept."""
    state = _state(core)
    cached = _CACHE.get(core)
    if cached is not None and _same(cached[0], state):
        return cached[1]
    text = render(families(core))
    with _LOCK:
        _CACHE[core] = (state, text, {})
    return text


def _same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b))


def _variant(core: Core, key: tuple, make: Any) -> tuple:
    """A response other than the plain text, made once per state (``make()``)."""
    exposition(core)  # the state's entry
    with _LOCK:
        entry = _CACHE.get(core)
        answers = entry[2] if entry is not None else {}
        answer = answers.get(key)
    if answer is None:
        answer = make()
        with _LOCK:
            if len(answers) < 16:  # a client inventing headers cannot grow this
                answers[key] = answer
    return answer


def render(metrics: Sequence[Family]) -> bytes:
    """The text format 0.0.4, as client_python's ``generate_latest`` writes these families
    (tests/test_metrics.py compares the two byte for byte)."""
    out: list[str] = []
    for family in metrics:
        name, kind = family.name, family.kind
        if kind == "counter":
            name = f"{name}_total"
        elif kind == "info":
            name, kind = f"{name}_info", "gauge"
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
        for values, value in family.samples:
            pairs = values.items() if kind == "gauge" and family.kind == "info" else None
            if pairs is None:
                pairs = zip(family.labels, values)
            labels = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(pairs))
            out.append(f"{name}{{{labels}}} " if labels else f"{name} ")
            out.append(f"{_go_float(value)}\n")
    return "".join(out).encode("utf-8")


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


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
CLIENT_TIMEOUT = 10.0  # seconds a client has to send its request and read the answer
_FAVICON = "/favicon.ico"


class MetricsServer:
    """The HTTP endpoint: a thread that waits in ``select`` (no timeout) for a connection or
    for :meth:`shutdown`, and answers each connection in a short-lived thread (a client that
    stalls holds only its own). HTTP/1.0, one request per connection, as wsgiref served it."""

    def __init__(self, core: Core, listen: str):
        host, port = parse_listen(listen)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        self.core = core
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
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                try:
                    conn, _ = self._sock.accept()
                except OSError:
                    continue
                worker = threading.Thread(
                    target=self._answer, args=(conn,), name="kzguard-scrape", daemon=True
                )
                worker.start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(CLIENT_TIMEOUT)
            request = _read_request(conn)
            if request is not None:
                status, headers, body = respond(self.core, *request)
                head = [f"HTTP/1.0 {status}"]
                head += [f"{k}: {v}" for k, v in headers]
                head.append(f"Content-Length: {len(body)}")
                conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except OSError:
            pass
        except Exception:  # a scrape must never end the thread unlogged
            import logging

            logging.getLogger("kzguard.metrics").exception("answering a scrape failed")
        finally:
            conn.close()

    def shutdown(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join()
        self._sock.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()


def _read_request(conn: socket.socket) -> Optional[tuple[str, str, str, dict[str, str]]]:
    """(method, path, query, headers with lower-case names) of one request, or None."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
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
        headers[name.strip().lower()] = value.strip()
    return method, path, query, headers


def respond(
    core: Core, method: str, path: str, query: str, headers: dict[str, str]
) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status, headers, body) for one request, as client_python's ``make_wsgi_app`` answers
    it: OPTIONS and GET, any path (``/favicon.ico`` empty), the text format 0.0.4 unless the
    ``Accept`` header asks for another (then client_python renders it), gzip when accepted."""
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
    if _plain(accept) and "name" not in query:
        if not gzipped:
            return "200 OK", [("Content-Type", CONTENT_TYPE)], exposition(core)

        def compressed() -> tuple:
            import gzip

            body = gzip.compress(exposition(core))
            return "200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Encoding", "gzip")], body

        return _variant(core, ("gzip",), compressed)
    return _variant(
        core, (accept, gzipped, query), lambda: _client_python(core, accept, query, gzipped)
    )


def _plain(accept: str) -> bool:
    """Whether client_python would answer ``accept`` with the text format 0.0.4: no entry
    names OpenMetrics or text/plain of another version."""
    for entry in accept.split(","):
        params = entry.split(";")
        kind = params[0].strip()
        if kind == "application/openmetrics-text":
            return False
        if kind == "text/plain":
            for param in params[1:]:
                key, _, value = param.strip().partition("=")
                if key == "version" and value != "0.0.4":
                    return False
    return True


def _gzip_accepted(header: str) -> bool:
    return any(e.split(";")[0].strip().lower() == "gzip" for e in header.split(","))


def _client_python(core: Core, accept: str, query: str, gzipped: bool) -> tuple:
    """What client_python's WSGI app answers (OpenMetrics, text format 1.0.0, ``name[]``);
    without client_python, the text format 0.0.4."""
    try:
        from prometheus_client.exposition import make_wsgi_app
    except ImportError:
        return "200 OK", [("Content-Type", CONTENT_TYPE)], exposition(core)
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
    body = b"".join(make_wsgi_app(registry(core))(environ, start_response))
    return answer["status"], answer["headers"], body


def serve(core: Core, listen: Optional[str] = None) -> MetricsServer:
    """Serve the metrics over HTTP on ``listen`` (default ``metrics.listen``, whose own default
    is loopback); returns the running server (``.shutdown()`` stops it)."""
    address = core.config.metrics.listen if listen is None else listen
    if not address:
        raise ValueError("metrics.listen is empty: the HTTP endpoint is disabled")
    return MetricsServer(core, address)
