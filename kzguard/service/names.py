"""Every name kzguard puts on or looks for on D-Bus, and its polkit action ids, in one place.

The bus policy (``units/org.kzguard.Guard1.conf``), the polkit actions
(``units/org.kzguard.policy``) and docs/dbus.md spell the same strings; tests check they agree.
No dbus import here: the hooks' notifier reads these names before deciding whether to load dbus.
"""

from __future__ import annotations

# --- kzguard's own service ----------------------------------------------------------------------
BUS_NAME = "org.kzguard.Guard1"
OBJECT_PATH = "/org/kzguard/Guard1"
INTERFACE = "org.kzguard.Guard1"

# Methods anyone may call (they read, or re-read, and change nothing on the host).
READ_METHODS = ("GetVerdicts", "GetNextBoot", "CheckNow")
# Methods that change the host: root, or a caller polkit authorises for ACTION_MANAGE.
MANAGE_METHODS = ("Pin", "Unpin", "KeepBootDefault", "ReleaseBootDefault", "SnapshotNow")
SIGNALS = ("VerdictChanged", "NextBootChanged")

# Errors (mapped once, in kzguard.service.bus.bus_error).
ERROR_PREFIX = INTERFACE + ".Error."
ERROR_NOT_AUTHORIZED = ERROR_PREFIX + "NotAuthorized"
ERROR_INVALID_ARGUMENT = ERROR_PREFIX + "InvalidArgument"
ERROR_FAILED = ERROR_PREFIX + "Failed"

# polkit action for every method in MANAGE_METHODS.
ACTION_MANAGE = "org.kzguard.Guard1.manage"

# --- the bus daemon ---------------------------------------------------------------------------
DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
DBUS_INTERFACE = "org.freedesktop.DBus"
# The system bus when DBUS_SYSTEM_BUS_ADDRESS is unset.
SYSTEM_BUS_DEFAULT = "unix:path=/run/dbus/system_bus_socket"

# --- polkit -----------------------------------------------------------------------------------
POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_INTERFACE = "org.freedesktop.PolicyKit1.Authority"
POLKIT_ALLOW_USER_INTERACTION = 0x1  # CheckAuthorization flag: an agent may ask for a password

# --- logind -----------------------------------------------------------------------------------
LOGIN1_NAME = "org.freedesktop.login1"
LOGIN1_PATH = "/org/freedesktop/login1"
LOGIN1_INTERFACE = "org.freedesktop.login1.Manager"
INHIBIT_WHAT = "shutdown"
INHIBIT_WHO = "kzguard"
INHIBIT_WHY = "check the next boot entry"
INHIBIT_MODE = "delay"
