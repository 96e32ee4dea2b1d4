"""The D-Bus object ``org.kzguard.Guard1`` at ``/org/kzguard/Guard1``: the bus layer over
:class:`~kzguard.service.core.Core`.

Each method converts its arguments, authorises the caller, delegates to the core and lets the
core's listener emit the signals (firewalld's ``server/`` over ``core/``). Reading is open to
anyone; a method that changes the host needs uid 0, or a caller polkit authorises for
``org.kzguard.Guard1.manage`` (:class:`Authority`). Every failure reaches the caller as one of
three named errors (:func:`bus_error`), with a message and never a traceback.

The object runs on a GLib main loop that owns the core; authorisation is asynchronous, so a
polkit agent asking an admin for a password does not stop the service.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import dbus
import dbus.service

from kzguard.base.errors import KzguardError
from kzguard.base.kernelrelease import ReleaseError, parse_release
from kzguard.judge.report import to_json
from kzguard.service import names

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Callable, Optional

    from kzguard.judge.policy import NextBoot
    from kzguard.service.core import CheckResult, Core

log = logging.getLogger("kzguard.service.bus")

POLKIT_TIMEOUT = 120.0  # seconds an admin has to answer a polkit agent
MAX_REASON = 64  # characters of a SnapshotNow reason (it ends up in a snapshot's name)


# --- errors: kzguard's named errors, mapped once to D-Bus errors -------------------------------


class BusError(dbus.DBusException):
    """Base of the errors a caller sees; the message only, never a traceback."""

    include_traceback = False
    _dbus_error_name = names.ERROR_FAILED


class NotAuthorized(BusError):
    _dbus_error_name = names.ERROR_NOT_AUTHORIZED


class InvalidArgument(BusError):
    _dbus_error_name = names.ERROR_INVALID_ARGUMENT


class Failed(BusError):
    _dbus_error_name = names.ERROR_FAILED


def bus_error(exc: BaseException) -> BusError:
    """The D-Bus error a caller gets for ``exc``: a bad argument is ``InvalidArgument``, any
    kzguard error ``Failed`` with its message; anything else is logged here with its traceback
    and reaches the caller as ``Failed`` without it."""
    if isinstance(exc, BusError):
        return exc
    if isinstance(exc, ReleaseError):
        return InvalidArgument(str(exc))
    if isinstance(exc, KzguardError):
        return Failed(str(exc))
    log.error("internal error serving a D-Bus call", exc_info=exc)
    return Failed(f"internal error ({type(exc).__name__}): {exc}")


@contextmanager
def _mapped() -> Iterator[None]:
    """Turn whatever the block raises into the caller's D-Bus error."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every failure becomes a named D-Bus error
        raise bus_error(exc) from None


# --- authorisation -----------------------------------------------------------------------------


class Authority:
    """Who may change the host: uid 0, else whoever polkit authorises for the action. The
    caller's uid comes from the bus daemon (``GetConnectionUnixUser``); without polkit on the
    bus a caller other than root is refused. Answers through callbacks (see the module doc)."""

    def __init__(self, bus: dbus.bus.BusConnection):
        self.bus = bus

    def check(
        self,
        sender: str,
        action: str,
        allowed: Callable[[str], None],
        denied: Callable[[BusError], None],
    ) -> None:
        """Call ``allowed(who)`` (``who`` names the caller for the state file and the journal)
        or ``denied(error)``, once."""

        def on_uid(uid: int) -> None:
            uid = int(uid)
            if uid == 0:
                allowed(f"uid 0 over D-Bus ({sender})")
            else:
                self._polkit(sender, uid, action, allowed, denied)

        def on_error(exc: dbus.DBusException) -> None:
            denied(NotAuthorized(f"cannot tell who {sender} is: {exc.get_dbus_message()}"))

        self.bus.call_async(
            names.DBUS_NAME,
            names.DBUS_PATH,
            names.DBUS_INTERFACE,
            "GetConnectionUnixUser",
            "s",
            (sender,),
            on_uid,
            on_error,
        )

    def _polkit(
        self,
        sender: str,
        uid: int,
        action: str,
        allowed: Callable[[str], None],
        denied: Callable[[BusError], None],
    ) -> None:
        refused = f"uid {uid} is not authorised for {action}"

        def on_result(result: tuple) -> None:
            authorized, challenge = bool(result[0]), bool(result[1])
            if authorized:
                allowed(f"uid {uid} over D-Bus, authorised by polkit ({sender})")
            elif challenge:
                denied(NotAuthorized(f"{refused}: polkit needs an authentication agent"))
            else:
                denied(NotAuthorized(f"{refused} (polkit)"))

        def on_error(exc: dbus.DBusException) -> None:
            name = exc.get_dbus_name() or ""
            if name.endswith((".ServiceUnknown", ".NameHasNoOwner")):
                denied(NotAuthorized(f"{refused}: only root may, polkit is not on the bus"))
                return
            log.warning("polkit could not check %s for %s: %s", action, sender, exc)
            denied(NotAuthorized(f"{refused}: polkit failed: {exc.get_dbus_message()}"))

        subject = ("system-bus-name", {"name": dbus.String(sender, variant_level=1)})
        self.bus.call_async(
            names.POLKIT_NAME,
            names.POLKIT_PATH,
            names.POLKIT_INTERFACE,
            "CheckAuthorization",
            "(sa{sv})sa{ss}us",
            (subject, action, {}, names.POLKIT_ALLOW_USER_INTERACTION, ""),
            on_result,
            on_error,
            timeout=POLKIT_TIMEOUT,
        )


# --- coalescing -----------------------------------------------------------------------------

MIN_CHECK_INTERVAL = 1.0  # seconds between the end of one requested check and the next


class CheckQueue:
    """Requested checks, coalesced: one check at a time, every request that arrives before it
    starts shares its result, and a new one starts no sooner than ``min_interval`` after the
    last ended. Any caller on the bus may ask (and every hook does, after a transaction): this
    bounds the root work they can cause to one check per ``min_interval``."""

    def __init__(self, run: Callable[[], str], min_interval: float = MIN_CHECK_INTERVAL):
        self._run = run
        self.min_interval = min_interval
        self._waiting: list[tuple[Callable[[str], None], Callable[[Exception], None]]] = []
        self._scheduled = False
        self._last_end = float("-inf")
        self.runs = 0

    def request(self, reply: Callable[[str], None], error: Callable[[Exception], None]) -> None:
        import time

        from gi.repository import GLib

        self._waiting.append((reply, error))
        if self._scheduled:
            return
        self._scheduled = True
        delay = max(0.0, self._last_end + self.min_interval - time.monotonic())
        GLib.timeout_add(int(delay * 1000), self._check)

    def _check(self) -> bool:
        import time

        waiting, self._waiting = self._waiting, []
        self._scheduled = False
        self.runs += 1
        failure: Optional[Exception] = None
        try:
            with _mapped():
                text = self._run()
        except Exception as exc:  # noqa: BLE001 - already mapped to a named D-Bus error
            failure = exc
        finally:
            self._last_end = time.monotonic()
        for reply, error in waiting:
            if failure is None:
                reply(text)
            else:
                error(failure)
        return False  # a one-shot GLib source


# --- the object --------------------------------------------------------------------------------


def _changing(in_signature: str) -> Any:
    """A method that changes the system: authorised per caller, answered asynchronously."""
    return dbus.service.method(
        names.INTERFACE,
        in_signature=in_signature,
        out_signature="s",
        sender_keyword="sender",
        async_callbacks=("reply", "error"),
    )


class Guard1(dbus.service.Object):
    """``org.kzguard.Guard1`` on one bus connection; see docs/dbus.md."""

    def __init__(self, core: Core, bus: dbus.bus.BusConnection):
        super().__init__(bus, names.OBJECT_PATH)
        self._core = core
        self._authority = Authority(bus)
        self._closed = False
        self.bus_name: Optional[dbus.service.BusName] = None
        self._checks = CheckQueue(lambda: to_json(core.check().report))
        core.add_listener(self._changed)

    def close(self) -> None:
        """Stop serving: release the name, leave the bus, emit nothing more."""
        self._closed = True
        self.remove_from_connection()
        if self.bus_name is not None:
            self.bus_name.get_bus().release_name(self.bus_name.get_name())
            self.bus_name = None

    # --- reading: anyone -------------------------------------------------------------------

    @dbus.service.method(names.INTERFACE, in_signature="", out_signature="s")
    def GetVerdicts(self) -> str:
        """The last check's report as JSON (``kzguard check --json``'s object)."""
        with _mapped():
            return to_json(self._current().report)

    @dbus.service.method(names.INTERFACE, in_signature="", out_signature="sbs")
    def GetNextBoot(self) -> tuple[str, bool, str]:
        """(release, safe, verdict) of the kernel the next boot uses; ("", False, "unknown")
        when no installed kernel was found."""
        with _mapped():
            nb = self._current().report.next_boot
            return (nb.release, nb.safe, nb.verdict) if nb else ("", False, "unknown")

    @dbus.service.method(
        names.INTERFACE, in_signature="", out_signature="s", async_callbacks=("reply", "error")
    )
    def CheckNow(self, reply=None, error=None) -> None:
        """Judge the host again (signals follow any change); the new report as JSON. Calls
        that arrive while a check is due share it (:class:`CheckQueue`)."""
        self._checks.request(lambda text: reply(text), error)

    # --- changing: root or polkit ------------------------------------------------------------

    @_changing("s")
    def Pin(self, release, sender=None, reply=None, error=None):
        release = _release(release)
        self._manage(sender, reply, error, lambda who: _lines(self._core.pin(release, who)))

    @_changing("s")
    def Unpin(self, release, sender=None, reply=None, error=None):
        release = _release(release)
        self._manage(sender, reply, error, lambda who: _lines(self._core.unpin(release, who)))

    @_changing("s")
    def KeepBootDefault(self, release, sender=None, reply=None, error=None):
        release = _release(release)
        self._manage(sender, reply, error, lambda who: self._core.boot_keep(release, who))

    @_changing("")
    def ReleaseBootDefault(self, sender=None, reply=None, error=None):
        self._manage(sender, reply, error, lambda who: self._core.boot_release())

    @_changing("s")
    def SnapshotNow(self, reason, sender=None, reply=None, error=None):
        reason = _reason(reason)
        self._manage(sender, reply, error, lambda who: self._core.snapshot(reason))

    # --- signals -----------------------------------------------------------------------------

    @dbus.service.signal(names.INTERFACE, signature="sss")
    def VerdictChanged(self, release: str, old: str, new: str) -> None:
        """A kernel's verdict changed; ``old`` is "" for a kernel not seen before, ``new`` ""
        for one no longer installed or pending."""

    @dbus.service.signal(names.INTERFACE, signature="sb")
    def NextBootChanged(self, release: str, safe: bool) -> None:
        """The next boot's kernel, or its safety, changed ("" when none is found)."""

    # --- plumbing ----------------------------------------------------------------------------

    def _current(self) -> CheckResult:
        return self._core.last or self._core.check()

    def _manage(
        self,
        sender: str,
        reply: Callable[[str], None],
        error: Callable[[BaseException], None],
        act: Callable[[str], str],
    ) -> None:
        """Authorise ``sender`` for the manage action, then ``act(who)`` and reply with what
        it says; a check follows so that the signals tell of what changed."""

        def allowed(who: str) -> None:
            try:
                message = act(who)
            except Exception as exc:  # noqa: BLE001 - becomes the caller's D-Bus error
                error(bus_error(exc))
                return
            reply(message)
            try:
                self._core.check()
            except Exception:  # the action is done; the next check will tell
                log.exception("the check after a D-Bus action failed")

        def denied(exc: BusError) -> None:
            log.warning("refused a D-Bus call from %s: %s", sender, exc.get_dbus_message())
            error(exc)

        self._authority.check(sender, names.ACTION_MANAGE, allowed, denied)

    def _changed(self, old: Optional[CheckResult], new: CheckResult) -> None:
        """The core's listener: one VerdictChanged per kernel whose verdict changed, and
        NextBootChanged when the next boot's kernel or safety did."""
        if self._closed:
            return
        before = old.verdicts() if old else {}
        after = new.verdicts()
        for release in dict.fromkeys([*after, *before]):
            if before.get(release) != after.get(release):
                self.VerdictChanged(release, before.get(release, ""), after.get(release, ""))
        was = old.report.next_boot if old else None
        now = new.report.next_boot
        if old is None or _boot(was) != _boot(now):
            self.NextBootChanged(now.release if now else "", bool(now and now.safe))


def export(core: Core, bus: dbus.bus.BusConnection) -> Guard1:
    """Serve ``core`` on ``bus``: the object first, then the name, so a caller who sees the
    name finds the object. Raises ``dbus.DBusException`` when the name cannot be had (taken,
    or the bus policy refuses it)."""
    guard = Guard1(core, bus)
    try:
        guard.bus_name = dbus.service.BusName(names.BUS_NAME, bus, do_not_queue=True)
    except BaseException:
        guard.close()
        raise
    return guard


def _release(value: str) -> str:
    """A kernel release argument, checked (``InvalidArgument`` otherwise)."""
    try:
        return parse_release(str(value)).release
    except ReleaseError as exc:
        raise InvalidArgument(str(exc)) from None


def _reason(value: str) -> str:
    reason = str(value).strip() or "dbus"
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise InvalidArgument(
            f"a snapshot reason is up to {MAX_REASON} printable characters, got {value!r}"
        )
    return reason


def _lines(lines: list[str]) -> str:
    return "\n".join(lines)


def _boot(nb: Optional[NextBoot]) -> Optional[tuple[str, bool]]:
    return (nb.release, nb.safe) if nb is not None else None
