"""Prometheus metrics: one custom collector over :attr:`Core.last`, served and written to a file.

:class:`KzguardCollector` builds every family from the core's last check result on each
``collect()`` (client_python's custom-collector pattern): nothing is cached between scrapes,
and every series that can be 0 is written as an explicit 0. :func:`serve` exposes it over HTTP
(a daemon thread that sleeps in ``select`` until a request or ``shutdown()``: no idle wakeups);
:func:`write_textfile` writes the same exposition for node_exporter's textfile collector with
``prometheus_client.write_to_textfile`` (a temp file renamed over the target). Names, labels and
the alerts built on them are documented in docs/metrics.md; they are a contract.

Before the first check completes, only what needs no judgement is exported (build info, the
check timestamp 0, errors, configuration): an unknown is not a 0, and a 0 for
``kzguard_next_boot_safe`` would page someone every time the daemon starts.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import generate_latest, make_wsgi_app
from prometheus_client.registry import CollectorRegistry

from kzguard import __version__
from kzguard.judge.policy import INSTALLED, PENDING, RUNNING
from kzguard.judge.reasons import SAFE, UNKNOWN, UNSAFE
from kzguard.managers import NAMES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Optional

    from prometheus_client.metrics_core import Metric

    from kzguard.judge.policy import KernelVerdict, Report
    from kzguard.service.core import CheckResult, Core

VERDICTS = (SAFE, UNSAFE, UNKNOWN)
DEFAULT_LISTEN = "127.0.0.1:9737"
_LISTEN = re.compile(r"\[(?P<v6>[^\]]+)\]:(?P<v6port>\d+)|(?P<host>[^:\[\]]+):(?P<port>\d+)")


class KzguardCollector:
    """Every kzguard metric, read from ``core`` when collected (a ``Collector``: ``collect()``
    yields metric families; ``describe()`` is empty so registering it collects nothing)."""

    def __init__(self, core: Core):
        self.core = core

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        core = self.core
        result, error, errors = core.last, core.error, core.errors  # one read of each
        build = InfoMetricFamily("kzguard_build", "kzguard's version (always 1)")
        build.add_metric([], {"version": __version__})
        yield build
        yield _gauge(
            "kzguard_last_check_timestamp_seconds",
            "When the last successful check of the host finished (Unix time; 0 before the first)",
            result.taken_at if result else 0.0,
        )
        yield _gauge(
            "kzguard_check_duration_seconds",
            "How long the last successful check took (0 before the first)",
            result.duration if result else 0.0,
        )
        yield _gauge(
            "kzguard_last_check_failed",
            "1 when the most recent check failed (see the journal or kzguard doctor), else 0",
            1.0 if error is not None else 0.0,
        )
        failures = CounterMetricFamily(
            "kzguard_check_errors", "Checks of the host that failed since the service started"
        )
        failures.add_metric([], float(errors))
        yield failures
        yield _gauge(
            "kzguard_snapshots_enabled",
            "1 when the configuration snapshots the boot environment before kernel changes",
            1.0 if core.config.snapshots.enabled else 0.0,
        )
        if result is not None:
            yield from _judgement(result)


def _judgement(result: CheckResult) -> Iterator[Metric]:
    """The families that need a completed check."""
    report = result.report
    host = report.host
    next_boot = report.next_boot
    safe = next_boot is not None and next_boot.safe and not report.host_reasons
    next_safe = GaugeMetricFamily(
        "kzguard_next_boot_safe",
        "1 when the kernel the next boot uses can load every guarded module, else 0 (reason: "
        "the first reason code, kernel-unreadable when kzguard cannot see the kernels)",
        labels=["reason"],
    )
    next_safe.add_metric(["" if safe else _next_boot_reason(report)], 1.0 if safe else 0.0)
    yield next_safe
    info = GaugeMetricFamily(
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
    verdict = GaugeMetricFamily(
        "kzguard_kernel_verdict",
        "Each kernel's verdict as a state set: 1 for its verdict, 0 for the others",
        labels=["release", "state", "verdict"],
    )
    reason = GaugeMetricFamily(
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
    blocked = CounterMetricFamily(
        "kzguard_transactions_blocked",
        "Package manager transactions kzguard refused, by manager (from the state file)",
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


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _family(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=["release"])


def registry(core: Core) -> CollectorRegistry:
    """A registry holding only kzguard's collector (no process or platform metrics: a hook's
    textfile must not describe the hook's own short-lived process)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(KzguardCollector(core))
    return reg


def exposition(core: Core) -> bytes:
    """The metrics in the Prometheus text format, as a scrape returns them."""
    return generate_latest(registry(core))


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
    fileio.replace_bytes(path, generate_latest(registry(core)), mode=0o644)
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


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No line on stderr per scrape."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck client never holds the daemon's exit

    def __init__(self, family: int, address: tuple[str, int]):
        self.address_family = family
        super().__init__(address, _QuietHandler)


class MetricsServer:
    """The HTTP endpoint: a thread that waits in ``select`` (no timeout) for a scrape or for
    :meth:`shutdown`, and answers each scrape in a short-lived thread."""

    def __init__(self, core: Core, listen: str):
        host, port = parse_listen(listen)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        self._server = _Server(family, (sockaddr[0], port))
        self._server.set_app(make_wsgi_app(registry(core)))
        self._server.timeout = 0  # handle_request() after select: never waits for a client
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, name="kzguard-metrics", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when ``:0`` was asked for)."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def _loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._server, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                self._server.handle_request()

    def shutdown(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join()
        self._server.server_close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()


def serve(core: Core, listen: Optional[str] = None) -> MetricsServer:
    """Serve the metrics over HTTP on ``listen`` (default ``metrics.listen``, whose own default
    is loopback); returns the running server (``.shutdown()`` stops it)."""
    address = core.config.metrics.listen if listen is None else listen
    if not address:
        raise ValueError("metrics.listen is empty: the HTTP endpoint is disabled")
    return MetricsServer(core, address)
