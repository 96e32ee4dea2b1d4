"""The last check before a shutdown or reboot, under a logind delay inhibitor lock.

:class:`ShutdownGuard` takes ``Inhibit("shutdown", "kzguard", "check the next boot entry",
"delay")`` from ``org.freedesktop.login1.Manager`` and keeps the file descriptor it returns
open: logind then waits (up to its ``InhibitDelayMaxSec``, 5 s by default) for that descriptor
to close before it shuts down. On ``PrepareForShutdown(true)`` the guard runs
:meth:`Core.shutdown_check <kzguard.service.core.Core.shutdown_check>` (which moves the boot
default back to the last good kernel when the next boot is unsafe), logs the result to the
journal (``shutdown-check``) and closes the descriptor; on ``PrepareForShutdown(false)`` (the
shutdown was cancelled) it takes a new lock. Without logind on the bus it logs a warning and
does nothing more.
"""

from __future__ import annotations

import logging
import os

import dbus

from kzguard.base import journal
from kzguard.service import names

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

    from kzguard.service.core import Core

log = logging.getLogger("kzguard.service.shutdown")

INHIBIT_TIMEOUT = 5.0  # seconds to wait for logind's answer


class ShutdownGuard:
    """Hold a delay lock on shutdown and check the next boot before letting it go."""

    def __init__(self, core: Core, system_bus: dbus.bus.BusConnection):
        self._core = core
        self._bus = system_bus
        self._fd: Optional[int] = None
        self.last_message: Optional[str] = None  # what the last shutdown check found and did
        # Listen before taking the lock, so that no PrepareForShutdown goes unseen.
        self._match = system_bus.add_signal_receiver(
            self._prepare_for_shutdown,
            signal_name="PrepareForShutdown",
            dbus_interface=names.LOGIN1_INTERFACE,
            bus_name=names.LOGIN1_NAME,
            path=names.LOGIN1_PATH,
        )
        self.inhibit()

    @property
    def inhibiting(self) -> bool:
        """Whether the guard holds a lock now."""
        return self._fd is not None

    def inhibit(self) -> bool:
        """Take the delay lock unless it is held; False (and a warning) when logind refuses."""
        if self._fd is not None:
            return True
        try:
            fd = self._bus.call_blocking(
                names.LOGIN1_NAME,
                names.LOGIN1_PATH,
                names.LOGIN1_INTERFACE,
                "Inhibit",
                "ssss",
                (names.INHIBIT_WHAT, names.INHIBIT_WHO, names.INHIBIT_WHY, names.INHIBIT_MODE),
                timeout=INHIBIT_TIMEOUT,
            )
        except dbus.DBusException as exc:
            log.warning(
                "no shutdown inhibitor lock from logind (%s): the next boot is not checked "
                "again before a shutdown",
                exc.get_dbus_message() or exc.get_dbus_name(),
            )
            return False
        self._fd = fd.take()
        return True

    def release(self) -> None:
        """Close the lock's descriptor: logind goes on with the shutdown."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Stop guarding (the daemon is stopping): stop listening, release the lock."""
        self._match.remove()
        self.release()

    def _prepare_for_shutdown(self, start: bool) -> None:
        if not start:  # the shutdown was cancelled: guard the next one
            self.inhibit()
            return
        try:
            self.last_message = self.check()
        finally:
            self.release()

    def check(self) -> str:
        """The shutdown check, logged to the journal; what it found and did."""
        try:
            message = self._core.shutdown_check()
        except Exception as exc:  # logged with its traceback; the lock is released anyway
            log.exception("the shutdown check failed")
            message = f"the shutdown check failed: {exc}"
            journal.event("shutdown-check", message, priority=journal.ERROR)
            return message
        last = self._core.last
        nb = last.report.next_boot if last else None
        safe = nb is None or nb.safe
        journal.event(
            "shutdown-check",
            f"before shutdown: {message}",
            priority=journal.INFO if safe else journal.WARNING,
            kernel=nb.release if nb else None,
            verdict=nb.verdict if nb else None,
        )
        return message
