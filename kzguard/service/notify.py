"""How a hook tells the service that something changed: one ``CheckNow`` call, no answer.

:func:`notify_change` is what the gate and the post-install check call once they have decided.
It sends ``org.kzguard.Guard1.CheckNow`` on the system bus with "no reply expected" and
"do not auto-start" set, and returns within ``timeout`` whatever the bus does: it is a no-op
(no exception, no dbus import) when the hook works on a root other than ``/`` (the service
watches the live host), when there is no system bus socket, or when dbus-python is missing;
a bus that does not answer is left behind after ``timeout``. The hook behaves the same with
or without the service.
"""

from __future__ import annotations

import os

from kzguard.service import names

TYPE_CHECKING = False  # the hooks import this: typing costs them 2 ms
if TYPE_CHECKING:
    from typing import Any, Optional

TIMEOUT = 0.2  # seconds a hook may spend telling the service


def notify_change(kind: str, *, root: str = "/", timeout: float = TIMEOUT, **fields: Any) -> bool:
    """Ask the service to check the host again after a change of ``kind`` (``transaction``,
    ``post-install``; ``fields`` say more, for the caller's reading: CheckNow takes no
    argument). True when the call was handed to the bus, False when there was nobody to tell
    or it did not go out within ``timeout`` seconds."""
    if os.path.realpath(root) != "/":
        return False
    address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or names.SYSTEM_BUS_DEFAULT
    path = _socket_path(address)
    if path is not None and not os.path.exists(path):
        return False
    import threading

    sent: list[bool] = []
    worker = threading.Thread(target=_send, args=(address, sent), name="kzguard-notify")
    worker.daemon = True  # a bus that hangs is left behind: the process may exit
    worker.start()
    worker.join(timeout)
    return bool(sent)


def _send(address: str, sent: list[bool]) -> None:
    try:
        import dbus
        import dbus.lowlevel

        bus = dbus.bus.BusConnection(address)
        try:
            message = dbus.lowlevel.MethodCallMessage(
                names.BUS_NAME, names.OBJECT_PATH, names.INTERFACE, "CheckNow"
            )
            message.set_no_reply(True)
            message.set_auto_start(False)  # a service that is not running stays stopped
            bus.send_message(message)
            bus.flush()
        finally:
            bus.close()
    except Exception:  # noqa: BLE001 - no bus, no dbus-python, no permission: nobody to tell
        return
    sent.append(True)


def _socket_path(address: str) -> Optional[str]:
    """The socket of a ``unix:path=`` address (the first one of a list), else None."""
    first = address.split(";", 1)[0]
    if not first.startswith("unix:"):
        return None
    for pair in first[len("unix:") :].split(","):
        key, _, value = pair.partition("=")
        if key == "path":
            return _unescape(value)
    return None


def _unescape(value: str) -> str:
    """D-Bus address values escape bytes as ``%XX``."""
    if "%" not in value:
        return value
    from urllib.parse import unquote

    return unquote(value)
