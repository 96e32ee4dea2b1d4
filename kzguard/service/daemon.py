"""``kzguard daemon``: the service's GLib main loop around the :class:`~kzguard.service.core.Core`.

Start: load the configuration, judge the host once, then tell systemd ``READY=1`` with a
``STATUS=`` line that says what the check saw. From then on a check runs when the watcher
(:mod:`kzguard.service.watch`) reports a change, a debounce after the last event, and on a slow
periodic timer; after each one the metrics textfile is written (``metrics.textfile``) and the
status line updated. A check that fails is logged and counted, and the loop goes on.

Signals arrive through ``GLib.unix_signal_add``: SIGTERM or SIGINT say ``STOPPING=1`` and end
the loop (exit 0); SIGHUP says ``RELOADING=1``, re-reads the configuration (a bad one is kept
out, and the status line and the journal say why), checks, and says ``READY=1`` again. When
systemd asks for a watchdog (``WATCHDOG_USEC``), ``WATCHDOG=1`` goes out from the main loop at
half that interval, so a loop that hangs is restarted.

The metrics server (:mod:`kzguard.service.metrics`), the D-Bus object
(:mod:`kzguard.service.bus`) and the logind lock for the shutdown check
(:mod:`kzguard.service.shutdown`) are loaded when the daemon starts; when a module, its library
or the bus is missing, the daemon says so once and runs without it. A check made elsewhere (the
bus's ``CheckNow``, the shutdown check) is published too when it changed a verdict.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
import time


def _import_gi() -> None:
    """Load gi without what a service never uses. PyGObject 3.47 and later import asyncio,
    and asyncio imports ssl when it can (libssl and libcrypto: 4 MiB); gi loads pycairo's
    bridge when pycairo is installed (libcairo, X11, freetype, fontconfig: 2 MiB). Both are
    kept out while gi loads (asyncio then has no TLS, gi no cairo; nothing here draws or
    speaks TLS), and either can be imported as usual afterwards."""
    kept_out = [name for name in _KEPT_OUT if name not in sys.modules]
    if "asyncio" in sys.modules:  # asyncio has its ssl already: nothing to save
        kept_out = [name for name in kept_out if name != "ssl"]
    for name in kept_out:
        sys.modules[name] = None  # type: ignore[assignment]  # import: ImportError
    try:
        import gi

        gi.require_version("GLib", "2.0")
        gi.require_version("Gio", "2.0")
    finally:
        for name in kept_out:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


_KEPT_OUT = ("ssl", "gi._gi_cairo")


_import_gi()
from gi.repository import GLib  # noqa: E402

from kzguard.base.errors import EXIT_SAFE, UsageError  # noqa: E402
from kzguard.judge.policy import INSTALLED, PENDING, RUNNING  # noqa: E402
from kzguard.service.core import CheckResult, Core  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Optional

    from kzguard.service.watch import Watcher

DEFAULT_INTERVAL = 6 * 3600.0  # the periodic full check, seconds
DEFAULT_DEBOUNCE = 0.5  # seconds after the last event before a check
MAX_DELAY = 5.0  # a burst of events delays a check at most this long
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
_DURATION = re.compile(r"(?P<n>\d+(\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?\Z")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, option: str) -> float:
    """Seconds from ``90``, ``500ms``, ``30s``, ``15m``, ``6h`` or ``1d`` (> 0)."""
    match = _DURATION.match(text.strip())
    seconds = float(match["n"]) * _UNITS[match["unit"]] if match else 0.0
    if seconds <= 0:
        raise UsageError(f"{option} {text!r} is not a duration like 30s, 15m or 6h")
    return seconds


class Notifier:
    """``sd_notify(3)``: one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@`` for an abstract
    name) per call; nothing when the variable is not set.

    Sent with a timeout: a unix datagram blocks while the receiver's queue is full (libsystemd's
    ``sd_notify``, which systemd-python calls, then waits until there is room, however long),
    and a guard whose receiver stopped reading must go on guarding. A message that cannot go
    is logged and dropped.
    """

    def __init__(self, environ: Mapping[str, str], *, timeout: float = 2.0):
        self.socket = environ.get("NOTIFY_SOCKET") or None
        self.timeout = timeout
        self.watchdog: Optional[float] = None  # seconds between keep-alives
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and pid in ("", str(os.getpid())):
            self.watchdog = int(usec) / 2e6

    def send(self, *lines: str) -> bool:
        if not self.socket:
            return False
        address = "\0" + self.socket[1:] if self.socket.startswith("@") else self.socket
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(self.timeout)
                sock.sendto("\n".join(lines).encode(), address)
        except OSError as exc:
            _log().warning("sd_notify %s not sent: %s", lines[0].split("=")[0], exc)
            return False
        return True


def summary(result: CheckResult) -> str:
    """What a check saw, in one short line: ``3 kernels, next boot 6.12.9-200.fc41.x86_64 safe;
    1 pending unsupported``."""
    kernels = result.report.kernels
    installed = [k for k in kernels if INSTALLED in k.states or RUNNING in k.states]
    pending = [k for k in kernels if PENDING in k.states and INSTALLED not in k.states]
    nb = result.report.next_boot
    line = f"{len(installed)} kernel{'' if len(installed) == 1 else 's'}, " + (
        f"next boot {nb.release} {nb.verdict}" if nb else "next boot unknown"
    )
    notes = []
    bad = [k.release for k in installed if not k.safe and (nb is None or k.release != nb.release)]
    if bad:
        notes.append(f"{len(bad)} more {'is' if len(bad) == 1 else 'are'} not safe: {_few(bad)}")
    unsupported = [k.release for k in pending if not k.safe]
    if unsupported:
        notes.append(f"{len(unsupported)} pending unsupported: {_few(unsupported)}")
    return "; ".join([line, *notes])


def _few(releases: list[str], most: int = 2) -> str:
    return ", ".join(releases[:most]) + (", ..." if len(releases) > most else "")


class Daemon:
    """The main loop and what hangs on it. ``run()`` returns the exit code."""

    def __init__(
        self,
        core: Core,
        notifier: Notifier,
        *,
        interval: float = DEFAULT_INTERVAL,
        debounce: float = DEFAULT_DEBOUNCE,
        bus: str = "system",
    ):
        self.core = core
        self.notifier = notifier
        self.interval = interval
        self.debounce = debounce
        self.bus_spec = bus
        self.loop = GLib.MainLoop()
        self.kept_config: Optional[str] = None  # why the last reload kept the old config
        self.exit_code = EXIT_SAFE
        self.watcher: Optional[Watcher] = None
        self._status = ""
        self._metrics: Any = None  # the module, once loaded
        self._server: Any = None  # the metrics server handle
        self._listen = ""
        self._bus: list[Any] = []  # what was exported on the bus (each has close())
        self._missing: set[str] = set()  # what was said to be missing (said once)
        self._checking = False
        core.add_listener(self._verdicts_changed)

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, self._stop, signum)
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGHUP, self._reload)
        self.check("start")
        self._serve_metrics()
        self._export_bus()
        self._watch()
        GLib.timeout_add_seconds(max(1, round(self.interval)), self._periodic)
        self.notifier.send("READY=1", f"STATUS={self._status}")
        _log().info("ready: %s", self._status)
        if self.notifier.watchdog:
            GLib.timeout_add(max(1, int(self.notifier.watchdog * 1000)), self._keepalive)
        try:
            self.loop.run()
        finally:
            self._close()
        return self.exit_code

    def check(self, why: str) -> Optional[CheckResult]:
        """Judge the host now; then the textfile and the status line. Never raises."""
        self._checking = True
        try:
            result = self.core.check()
        except Exception as exc:  # noqa: BLE001 - a failed check must not end the service
            self.core.error = f"{type(exc).__name__}: {exc}"  # counted in core.errors
            _log().error("check (%s) failed: %s", why, self.core.error, exc_info=True)
            result = None
        else:
            _log().debug("check (%s): %s in %.3fs", why, summary(result), result.duration)
        finally:
            self._checking = False
        self._published()
        return result

    def _verdicts_changed(self, old: Optional[CheckResult], new: CheckResult) -> None:
        """The core's listener: say what changed; publish it when the check was not ours
        (the D-Bus ``CheckNow``, the shutdown check)."""
        if old is not None:
            before, after = old.verdicts(), new.verdicts()
            for release in dict.fromkeys([*before, *after]):
                if before.get(release) != after.get(release):
                    was, now = before.get(release, "absent"), after.get(release, "gone")
                    _log().info("%s: %s -> %s", release, was, now)
        if not self._checking:
            self._published()

    def _published(self) -> None:
        self._write_textfile()
        if self._server is not None:  # rendered now, once: scrapes only send the bytes
            metrics = self._metrics_module()
            if metrics is not None:
                metrics.exposition(self.core)
        self._update_status()

    def status_line(self) -> str:
        last = self.core.last
        parts = [summary(last) if last else "no check has succeeded yet"]
        if self.core.error:
            parts.insert(0, f"last check failed: {_short(self.core.error)}")
        errors = self.core.errors
        if errors:
            parts.append(f"{errors} failed check{'' if errors == 1 else 's'} so far")
        if self.kept_config:
            parts.append(_short(self.kept_config, 200))
        return "; ".join(parts)

    def _update_status(self) -> None:
        status = self.status_line()
        if status != self._status:
            self._status = status
            self.notifier.send(f"STATUS={status}")

    def _keepalive(self) -> bool:
        self.notifier.send("WATCHDOG=1")
        return True  # GLib.SOURCE_CONTINUE

    def _periodic(self) -> bool:
        if self.watcher is not None:
            self.watcher.arm()
        self.check("periodic")
        return True

    def _changed(self, paths: list[str]) -> None:
        assert self.watcher is not None
        self.watcher.arm()  # before the check: what it reads from now on is watched
        more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
        self.check(f"{paths[0] if paths else 'a change'}{more}")

    def _stop(self, signum: int) -> bool:
        _log().info("stopping on %s", signal.Signals(signum).name)
        self.notifier.send("STOPPING=1", "STATUS=stopping")
        self.loop.quit()
        return True

    def _reload(self) -> bool:
        monotonic = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic}", "STATUS=reloading")
        self._status = "reloading"
        self._refused_textfile: Optional[str] = None  # a fixed directory is tried again
        problem = self.core.reload()
        if problem:
            _log().warning("%s", problem)
        else:
            _log().info("configuration reloaded from %s", self.core.config.source)
            self._serve_metrics()
            if self.watcher is not None:
                self.watcher.ignore = self._own_files()
        self.kept_config = problem
        self.check("reload")
        self.notifier.send("READY=1", f"STATUS={self._status}")
        return True

    def _close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        if self._server is not None:
            _quietly(self._server.shutdown, "stopping the metrics server")
            self._server = None
        for exported in reversed(self._bus):
            close = getattr(exported, "close", None)
            if close is not None:
                _quietly(close, f"closing {type(exported).__name__}")
        self._bus.clear()

    # --- what hangs on the loop ---------------------------------------------------------------

    def _watch(self) -> None:
        from kzguard.service.watch import Watcher

        self.watcher = Watcher(
            self.core.root,
            self._changed,
            debounce=self.debounce,
            max_delay=max(MAX_DELAY, self.debounce),
            ignore=self._own_files(),
        )
        count = self.watcher.arm()
        _log().info("watching %d paths under %s", count, self.core.root.top)

    def _own_files(self) -> tuple[str, ...]:
        path = self._textfile_path()
        return (path,) if path else ()

    def _textfile_path(self) -> Optional[str]:
        """The configured textfile as a host path: in the root, like every path kzguard uses."""
        inner = self.core.config.metrics.textfile
        return self.core.root.resolve(inner).as_posix() if inner else None

    def _module(self, name: str) -> Any:
        """``kzguard.service.<name>``, or None (said once) when it or its library is missing."""
        import importlib

        try:
            return importlib.import_module(f"kzguard.service.{name}")
        except ImportError as exc:
            self._say_missing(name, f"kzguard.service.{name} is not available ({exc})")
            return None

    def _say_missing(self, what: str, message: str) -> None:
        if what not in self._missing:
            self._missing.add(what)
            _log().warning("%s: going on without it", message)

    def _metrics_module(self) -> Any:
        """kzguard.service.metrics, imported once (None, said once, when it cannot be)."""
        if self._metrics is None:
            self._metrics = self._module("metrics")
        return self._metrics

    def _write_textfile(self) -> None:
        path = self._textfile_path()
        if path is None:
            return
        metrics = self._metrics_module()
        if metrics is None or path == getattr(self, "_refused_textfile", None):
            return
        from kzguard.base.fileio import UnsafeDirectory

        try:
            metrics.write_textfile(self.core, path)
        except UnsafeDirectory as exc:  # said once; off until the configuration names another
            self._refused_textfile = path
            _log().error(
                "metrics textfile writing is off: %s: %s (a root daemon does not write where "
                "another user can plant a link; fix the directory or metrics.textfile, then "
                "reload)",
                exc.filename,
                exc.strerror,
            )
        except Exception as exc:  # noqa: BLE001 - metrics trouble must not stop the checks
            _log().error("cannot write the metrics textfile %s: %s", path, exc)

    def _serve_metrics(self) -> None:
        listen = self.core.config.metrics.listen
        if listen == self._listen and (self._server is not None or not listen):
            return
        if self._server is not None:
            _quietly(self._server.shutdown, "stopping the metrics server")
            self._server = None
        self._listen = listen
        if not listen:
            return
        metrics = self._metrics_module()
        if metrics is None:
            return
        try:
            self._server = metrics.serve(self.core, listen)
        except Exception as exc:  # noqa: BLE001 - a busy port must not stop the guard
            _log().error("cannot serve metrics on %s: %s", listen, exc)
        else:
            metrics.exposition(self.core)  # the first scrape only sends it too
            _log().info("serving metrics on %s", listen)

    def _export_bus(self) -> None:
        """``org.kzguard.Guard1`` on the bus, and the logind delay lock for the shutdown check
        (logind is on the same bus: the system bus, or a test's)."""
        if self.bus_spec == "none":
            return
        bus_module = self._module("bus")
        shutdown = self._module("shutdown")
        if bus_module is None and shutdown is None:
            return
        try:
            import dbus
            from dbus.mainloop.glib import DBusGMainLoop

            mainloop = DBusGMainLoop(set_as_default=True)
            if self.bus_spec == "system":
                connection = dbus.SystemBus(mainloop=mainloop)
            else:
                connection = dbus.bus.BusConnection(self.bus_spec, mainloop=mainloop)
        except Exception as exc:  # noqa: BLE001 - no bus (yet): the guard works without it
            self._say_missing("dbus", f"no D-Bus connection ({self.bus_spec}: {exc})")
            return
        if bus_module is not None:
            try:
                self._bus.append(bus_module.export(self.core, connection))
            except Exception as exc:  # noqa: BLE001 - e.g. the name is taken
                _log().warning("not serving org.kzguard.Guard1: %s", exc)
        if shutdown is not None:
            try:
                self._bus.append(shutdown.ShutdownGuard(self.core, connection))
            except Exception as exc:  # noqa: BLE001
                _log().warning("no check before shutdown (logind delay lock): %s", exc)


def _quietly(call: Any, what: str) -> None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - only on the way out
        _log().warning("%s: %s", what, exc)


def _short(text: str, most: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 1] + "…"


_PRIORITIES = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}


class _JournalFormatter(logging.Formatter):
    """``<N>`` syslog priority prefixes, which journald reads on a service's stderr."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", "\n ")
        return f"<{_PRIORITIES.get(record.levelname, 6)}>{text}"


def _setup_logging(verbosity: int) -> None:
    """INFO and up to stderr (the journal under systemd, with priorities); -v for debug."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("kzguard: %(levelname)s: %(message)s"))
    logger = logging.getLogger("kzguard")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)


def main(
    root: str,
    config: Optional[str],
    *,
    interval: str = "6h",
    debounce: str = "500ms",
    bus: str = "system",
    dry_run: bool = False,
    verbosity: int = 0,
) -> int:
    """``kzguard daemon``: run until SIGTERM. Configuration errors at start raise (exit 2)."""
    _setup_logging(verbosity)
    seconds = parse_duration(interval, "--interval")
    wait = parse_duration(debounce, "--debounce")
    notifier = Notifier(os.environ)
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_VARIABLES}  # not for commands
    from kzguard.context import Context

    ctx = Context.open(root, dry_run=dry_run, command_env=env)
    core = Core(ctx.root, config, runner=ctx.runner)
    daemon = Daemon(core, notifier, interval=seconds, debounce=wait, bus=bus)
    return daemon.run()


def _log() -> logging.Logger:
    return logging.getLogger("kzguard.daemon")
