"""The last check before shutdown, against a real ``dbus-daemon`` with a fake logind on it.

The fake (in the test process) implements ``Inhibit`` by handing out the write end of a pipe and
keeping the read end: it sees EOF once the guard has closed its lock. The guard runs in a
subprocess on a Debian root with a real grubenv (``grub-editenv``) whose ``saved_entry`` names
the new kernel, as in tests/test_postinstall_e2e.py.
"""

from __future__ import annotations

import logging
import os
import sys

import dbus
import dbus.service
import pytest

from kzguard.root import Root, Runner
from kzguard.service import names
from kzguard.service.core import Core
from kzguard.service.shutdown import ShutdownGuard
from tests.test_bus import PrivateBus, state, wait_for
from tests.test_postinstall_e2e import NEW, OLD, debian_root, entry_id, grubenv

pytestmark = pytest.mark.real  # dbus-daemon, grub-editenv, gcc-built modules

GUARD = """
import sys
import dbus.mainloop.glib
from gi.repository import GLib
from kzguard.root import Root, Runner
from kzguard.service.core import Core
from kzguard.service.shutdown import ShutdownGuard

address, top = sys.argv[1:3]
bus = dbus.bus.BusConnection(address, mainloop=dbus.mainloop.glib.DBusGMainLoop())
core = Core(Root(top), runner=Runner())
core.check()
guard = ShutdownGuard(core, bus)
GLib.MainLoop().run()
"""


class FakeLogind(dbus.service.Object):
    """``org.freedesktop.login1.Manager``: Inhibit hands out a pipe's write end."""

    def __init__(self, conn):
        super().__init__(conn, names.LOGIN1_PATH)
        self.locks: list[tuple[tuple[str, ...], int]] = []  # (arguments, the read end)
        self.name = dbus.service.BusName(names.LOGIN1_NAME, conn, do_not_queue=True)

    @dbus.service.method(names.LOGIN1_INTERFACE, in_signature="ssss", out_signature="h")
    def Inhibit(self, what, who, why, mode):
        read, write = os.pipe()
        os.set_blocking(read, False)
        self.locks.append((tuple(map(str, (what, who, why, mode))), read))
        lock = dbus.types.UnixFd(write)  # a duplicate, sent with the reply
        os.close(write)
        return lock

    @dbus.service.signal(names.LOGIN1_INTERFACE, signature="b")
    def PrepareForShutdown(self, start):
        pass

    def close(self) -> None:
        for _, read in self.locks:
            os.close(read)


def released(read: int) -> bool:
    """Whether every write end of the lock's pipe is closed (EOF on the read end)."""
    try:
        return os.read(read, 1) == b""
    except BlockingIOError:
        return False


@pytest.fixture
def bus(tmp_path):
    private = PrivateBus(tmp_path)
    yield private
    private.close()


@pytest.fixture
def logind(bus):
    fake = FakeLogind(bus.connect())
    yield bus, fake
    fake.close()


def test_an_unsafe_next_boot_is_moved_back_before_shutdown(tmp_path, logind):
    bus, fake = logind
    root = tmp_path / "root"
    debian_root(root, module=False)
    assert grubenv(root)["saved_entry"] == entry_id(NEW)
    guard = bus.start("guard", [sys.executable, "-c", GUARD, bus.address, str(root)])
    wait_for(lambda: fake.locks, "the guard's Inhibit call", procs=[guard])
    [(arguments, lock)] = fake.locks
    assert arguments == ("shutdown", "kzguard", "check the next boot entry", "delay")
    assert not released(lock)

    fake.PrepareForShutdown(True)
    wait_for(lambda: released(lock), "the guard to release its lock", procs=[guard])
    assert grubenv(root)["saved_entry"] == entry_id(OLD)
    assert state(root)["boot"]["kept"] == OLD
    assert f"before shutdown: next boot {NEW} is unsafe" in guard.stderr()

    fake.PrepareForShutdown(False)  # the shutdown was cancelled: the guard locks again
    wait_for(lambda: len(fake.locks) == 2, "a new Inhibit call", procs=[guard])
    assert not released(fake.locks[1][1])


def test_a_safe_next_boot_is_left_alone(tmp_path, logind):
    bus, fake = logind
    root = tmp_path / "root"
    debian_root(root, module=True)
    guard = bus.start("guard", [sys.executable, "-c", GUARD, bus.address, str(root)])
    wait_for(lambda: fake.locks, "the guard's Inhibit call", procs=[guard])
    [(_, lock)] = fake.locks
    fake.PrepareForShutdown(True)
    wait_for(lambda: released(lock), "the guard to release its lock", procs=[guard])
    assert grubenv(root)["saved_entry"] == entry_id(NEW)
    assert "boot" not in state(root) or not state(root)["boot"]


def test_without_logind_the_guard_warns_and_waits(tmp_path, bus, caplog):
    caplog.set_level(logging.WARNING, "kzguard.service.shutdown")
    guard = ShutdownGuard(Core(Root(tmp_path), runner=Runner()), bus.connect())
    assert not guard.inhibiting
    assert "no shutdown inhibitor lock from logind" in caplog.text
    guard.close()
