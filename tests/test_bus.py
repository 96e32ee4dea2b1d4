"""The D-Bus API against a real ``dbus-daemon`` the tests start, with the shipped bus policy.

Each test starts a private bus whose configuration mirrors the system bus's default policy and
``<include>``s ``units/org.kzguard.Guard1.conf``, so the policy under test is the one we ship;
the service runs in a subprocess (a Core on a scenario root tree, ``export``, a GLib main loop)
and the clients are the real ``busctl`` and ``dbus-send``, as root or as ``nobody``
(``setpriv``). The test process waits on its own GLib main loop, never with sleeps, and every
wait has a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dbus
import dbus.mainloop.glib
import dbus.service
import pytest
from gi.repository import GLib

from kzguard.base.errors import CommandError
from kzguard.base.kernelrelease import ReleaseError
from kzguard.context import Context
from kzguard.service import names
from tests import scenarios as sc
from tests.tools import need

pytestmark = pytest.mark.real  # dbus-daemon, busctl, dbus-send, setpriv; gcc-built modules

TOP = Path(__file__).resolve().parent.parent
POLICY = TOP / "units" / "org.kzguard.Guard1.conf"
POLKIT_ACTIONS = TOP / "units" / "org.kzguard.policy"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NEW = sc.DEBIAN_BPO
PRINT = ["--print-address=1", "--print-pid=1"]  # one line each on stdout
TIMEOUT = 20.0  # seconds: any one wait; generous for a loaded CI machine

# The system bus's default policy (/usr/share/dbus-1/system.conf): anyone connects, nobody owns
# a name or calls a method unless a service's file punches the hole.
BASE_POLICY = """
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
"""
# What logind's and polkit's own bus files allow, for the fakes these tests run.
FAKES_POLICY = """
  <policy user="root">
    <allow own="org.freedesktop.login1"/>
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.login1"/>
    <allow send_destination="org.freedesktop.PolicyKit1"/>
  </policy>
"""
# A local policy that lets nobody reach every method, so that the service's own check decides.
OPEN_TO_NOBODY = """
  <policy user="nobody">
    <allow send_destination="org.kzguard.Guard1"/>
  </policy>
"""

SERVICE = """
import sys
import dbus.mainloop.glib
from gi.repository import GLib
from kzguard.root import Root, Runner
from kzguard.service.bus import export
from kzguard.service.core import Core
from kzguard.context import Context

address, top = sys.argv[1:3]
bus = dbus.bus.BusConnection(address, mainloop=dbus.mainloop.glib.DBusGMainLoop())
core = Core(Root(top), runner=Runner())
core.check()
export(core, bus)
GLib.MainLoop().run()
"""


# --- the harness (tests/test_shutdown.py uses it too) -----------------------------------------


def wait_for(predicate, what: str, *, procs=(), timeout: float = TIMEOUT) -> None:
    """Run the GLib main loop until ``predicate()`` holds; fail after ``timeout`` seconds or
    as soon as one of ``procs`` (a :class:`Process`) exits."""
    context = GLib.MainContext.default()
    deadline = time.monotonic() + timeout
    tick = GLib.timeout_add(50, lambda: True)  # wakes the loop to look at the deadline
    try:
        while not predicate():
            for proc in procs:
                if proc.poll() is not None:
                    raise AssertionError(f"{proc.name} exited while waiting for {what}:\n{proc}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            context.iteration(True)
    finally:
        GLib.source_remove(tick)


class Process:
    """A subprocess of a test, its stderr in a file, stopped by its own pid."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log = log
        with open(log, "wb") as err:
            self.popen = subprocess.Popen(
                argv,
                cwd=TOP,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "PYTHONPATH": str(TOP), "LC_ALL": "C", **(env or {})},
            )

    def poll(self):
        return self.popen.poll()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)

    def __str__(self) -> str:
        return f"exit {self.popen.returncode}\n{self.stderr()}"


class PrivateBus:
    """A dbus-daemon of our own on a unix socket in a world-traversable temporary directory
    (``nobody`` must reach it); its policy includes the shipped one."""

    def __init__(self, tmp: Path, extra: str = ""):
        self.tmp = tmp
        need("dbus-daemon", "busctl", "dbus-send", "setpriv")
        self.dir = Path(tempfile.mkdtemp(prefix="kzguard-bus-"))
        self.dir.chmod(0o755)
        config = self.dir / "bus.conf"
        config.write_text(
            '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
            "<busconfig>\n"
            f"  <listen>unix:path={self.dir / 'socket'}</listen>\n"
            "  <auth>EXTERNAL</auth>\n"
            f"{BASE_POLICY}\n"
            f"  <include>{POLICY}</include>\n"
            f"{FAKES_POLICY}{extra}"
            "</busconfig>\n"
        )
        proc = subprocess.run(
            ["dbus-daemon", f"--config-file={config}", "--fork", *PRINT],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert proc.returncode == 0, proc.stderr
        address, pid = proc.stdout.split()
        self.address, self.pid = address, int(pid)
        self.processes: list[Process] = []
        self._connections: list = []

    def connect(self):
        """A connection of the test process, dispatched by its GLib main loop."""
        mainloop = dbus.mainloop.glib.DBusGMainLoop()
        conn = dbus.bus.BusConnection(self.address, mainloop=mainloop)
        self._connections.append(conn)
        return conn

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        proc = Process(name, argv, self.tmp / f"{name}.log", env)
        self.processes.append(proc)
        return proc

    def serve(self, top: Path) -> Process:
        """Start the service on ``top`` and wait until its name is on the bus."""
        proc = self.start("service", [sys.executable, "-c", SERVICE, self.address, str(top)])
        self.wait_for_name(names.BUS_NAME, proc)
        return proc

    def wait_for_name(self, name: str, proc: Process) -> None:
        conn = self.connect()
        owned: list[str] = []
        conn.add_signal_receiver(
            lambda _name, _old, new: owned.append(new),
            "NameOwnerChanged",
            names.DBUS_INTERFACE,
            names.DBUS_NAME,
            names.DBUS_PATH,
            arg0=name,
        )
        if conn.name_has_owner(name):
            return
        wait_for(lambda: any(owned), f"{name} on the bus", procs=[proc])

    def client(self, *argv: str, nobody: bool = False) -> subprocess.CompletedProcess:
        """Run a bus client (``busctl``/``dbus-send`` argv, the address added) while the test's
        main loop keeps serving (the fakes live in the test process)."""
        tool, rest = argv[0], list(argv[1:])
        address = [f"--address={self.address}"] if tool == "busctl" else [f"--bus={self.address}"]
        full = [*(NOBODY if nobody else []), tool, *address, *rest]
        out, err = self.tmp / "client.out", self.tmp / "client.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            popen = subprocess.Popen(
                full, stdout=stdout, stderr=stderr, env={**os.environ, "LC_ALL": "C"}
            )
            try:
                wait_for(lambda: popen.poll() is not None, f"{full}")
            finally:
                if popen.poll() is None:
                    popen.kill()
                    popen.wait()
        return subprocess.CompletedProcess(full, popen.returncode, out.read_text(), err.read_text())

    def close(self) -> None:
        for proc in self.processes:
            proc.stop()
        for conn in self._connections:
            conn.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def make_bus(tmp_path):
    buses: list[PrivateBus] = []

    def make(extra: str = "") -> PrivateBus:
        buses.append(PrivateBus(tmp_path, extra))
        return buses[-1]

    yield make
    for bus in buses:
        bus.close()


def call(bus: PrivateBus, method: str, *args: str, nobody: bool = False):
    """``busctl call`` on kzguard's object; (the JSON reply, or None; the process)."""
    signature = ["s"] if args else []
    proc = bus.client(
        "busctl",
        "--json=short",
        "call",
        names.BUS_NAME,
        names.OBJECT_PATH,
        names.INTERFACE,
        method,
        *signature,
        *args,
        nobody=nobody,
    )
    reply = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None
    return reply, proc


def send(bus: PrivateBus, method: str, *args: str, nobody: bool = False):
    """``dbus-send`` (it prints the D-Bus error name, which busctl does not)."""
    return bus.client(
        "dbus-send",
        "--print-reply",
        f"--dest={names.BUS_NAME}",
        names.OBJECT_PATH,
        f"{names.INTERFACE}.{method}",
        *(f"string:{a}" for a in args),
        nobody=nobody,
    )


def sync(conn) -> None:
    """A round trip to the bus daemon: the match rules sent before it are in place."""
    conn.call_blocking(names.DBUS_NAME, names.DBUS_PATH, names.DBUS_INTERFACE, "GetId", "", ())


def debian(tmp_path: Path, *, module: bool):
    """Debian 12 with zfs-dkms 2.2.7 and a new backports kernel whose DKMS build left its zfs
    module (``module``) or failed."""
    root = tmp_path / "root"
    return root, sc.debian_new_kernel(root, NEW, module=module, failed="build-failed")


def state(root: Path) -> dict:
    path = root / "var/lib/kzguard/state.json"
    return json.loads(path.read_text()) if path.exists() else {}


# --- reading -----------------------------------------------------------------------------------


def test_anyone_reads_the_verdicts_and_the_next_boot(tmp_path, make_bus):
    root, _ = debian(tmp_path, module=False)
    bus = make_bus()
    bus.serve(root)

    for nobody in (False, True):
        reply, proc = call(bus, "GetVerdicts", nobody=nobody)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(reply["data"][0])
        verdicts = {k["release"]: k["verdict"] for k in report["kernels"]}
        assert verdicts == {sc.DEBIAN_RUNNING: "safe", NEW: "unsafe"}
        reply, proc = call(bus, "GetNextBoot", nobody=nobody)
        assert proc.returncode == 0, proc.stderr
        assert reply == {"type": "sbs", "data": [NEW, False, "unsafe"]}
        reply, proc = call(bus, "CheckNow", nobody=nobody)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(reply["data"][0])["next_boot"]["release"] == NEW
    proc = bus.client("busctl", "introspect", names.BUS_NAME, names.OBJECT_PATH, nobody=True)
    assert proc.returncode == 0, proc.stderr
    for member in (*names.READ_METHODS, *names.MANAGE_METHODS, *names.SIGNALS):
        assert f".{member} " in proc.stdout


def test_a_module_appearing_is_signalled_after_check_now(tmp_path, make_bus):
    root, tree = debian(tmp_path, module=False)
    bus = make_bus()
    service = bus.serve(root)
    conn = bus.connect()
    verdicts, boots = [], []
    conn.add_signal_receiver(
        lambda *args: verdicts.append(tuple(map(str, args))),
        "VerdictChanged",
        names.INTERFACE,
        names.BUS_NAME,
        names.OBJECT_PATH,
    )
    conn.add_signal_receiver(
        lambda release, safe: boots.append((str(release), bool(safe))),
        "NextBootChanged",
        names.INTERFACE,
        names.BUS_NAME,
        names.OBJECT_PATH,
    )
    sync(conn)

    reply, proc = call(bus, "CheckNow", nobody=True)  # nothing changed: no signal
    assert proc.returncode == 0, proc.stderr
    for name in ("zfs", "spl"):
        tree.module(NEW, name, "2.2.7-1")
    tree.dkms("zfs", "2.2.7", NEW)
    reply, proc = call(bus, "CheckNow", nobody=True)
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: verdicts and boots, "VerdictChanged and NextBootChanged", procs=[service])
    assert verdicts == [(NEW, "unsafe", "safe")]
    assert boots == [(NEW, True)]
    reply, proc = call(bus, "GetNextBoot")
    assert reply["data"] == [NEW, True, "safe"]


# --- changing: the policy and the service's own check ------------------------------------------


def test_the_policy_refuses_a_caller_other_than_root(tmp_path, make_bus):
    root, _ = debian(tmp_path, module=False)
    bus = make_bus()
    bus.serve(root)
    for method, args in (
        ("Pin", [NEW]),
        ("Unpin", [NEW]),
        ("KeepBootDefault", [sc.DEBIAN_RUNNING]),
        ("ReleaseBootDefault", []),
        ("SnapshotNow", ["test"]),
    ):
        proc = send(bus, method, *args, nobody=True)
        assert proc.returncode != 0
        assert "Error org.freedesktop.DBus.Error.AccessDenied" in proc.stderr, proc.stderr
        assert f'member="{method}"' in proc.stderr  # the bus daemon's refusal, not ours
    assert "pins" not in state(root) or not state(root)["pins"]

    reply, proc = call(bus, "Pin", NEW)
    assert proc.returncode == 0, proc.stderr
    assert f"pinned kernel {NEW}" in reply["data"][0]
    assert "Pin-Priority -1" in reply["data"][0]  # the apt form on a Debian root
    pin = state(root)["pins"][NEW]
    assert pin["reason"].startswith("pinned by uid 0 over D-Bus")
    reply, proc = call(bus, "Unpin", NEW)
    assert proc.returncode == 0, proc.stderr
    assert NEW not in state(root)["pins"]


def test_the_service_refuses_non_root_without_polkit(tmp_path, make_bus):
    """Defence in depth: a local policy that opens the methods to nobody meets the service's
    own check, which refuses without polkit on the bus."""
    root, _ = debian(tmp_path, module=False)
    bus = make_bus(OPEN_TO_NOBODY)
    bus.serve(root)
    proc = send(bus, "Pin", NEW, nobody=True)
    assert proc.returncode != 0
    assert f"Error {names.ERROR_NOT_AUTHORIZED}: uid 65534 is not authorised" in proc.stderr
    assert "polkit is not on the bus" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not state(root).get("pins")


class FakePolkit(dbus.service.Object):
    """org.freedesktop.PolicyKit1.Authority answering CheckAuthorization as told."""

    def __init__(self, conn, allow: bool):
        super().__init__(conn, names.POLKIT_PATH)
        self.allow = allow
        self.asked: list[tuple] = []
        self.name = dbus.service.BusName(names.POLKIT_NAME, conn, do_not_queue=True)

    @dbus.service.method(
        names.POLKIT_INTERFACE, in_signature="(sa{sv})sa{ss}us", out_signature="(bba{ss})"
    )
    def CheckAuthorization(self, subject, action, details, flags, cancellation):
        kind, fields = subject
        self.asked.append((str(kind), {str(k): str(v) for k, v in fields.items()}, str(action)))
        return (self.allow, False, {})


def test_polkit_decides_for_a_caller_other_than_root(tmp_path, make_bus):
    root, _ = debian(tmp_path, module=False)
    bus = make_bus(OPEN_TO_NOBODY)
    bus.serve(root)
    polkit = FakePolkit(bus.connect(), allow=False)

    proc = send(bus, "Pin", NEW, nobody=True)
    assert f"Error {names.ERROR_NOT_AUTHORIZED}: uid 65534 is not authorised" in proc.stderr
    assert not state(root).get("pins")
    [(kind, fields, action)] = polkit.asked
    assert (kind, action) == ("system-bus-name", names.ACTION_MANAGE)
    assert fields["name"].startswith(":")

    polkit.allow = True
    proc = send(bus, "Pin", NEW, nobody=True)
    assert proc.returncode == 0, proc.stderr
    assert f"pinned kernel {NEW}" in proc.stdout
    assert "uid 65534 over D-Bus, authorised by polkit" in state(root)["pins"][NEW]["reason"]


def test_bad_input_and_failures_are_named_errors_without_tracebacks(tmp_path, make_bus):
    root, _ = debian(tmp_path, module=False)
    bus = make_bus()
    bus.serve(root)
    for method, arg in (("Pin", "../../etc/passwd"), ("KeepBootDefault", "linux"), ("Unpin", "")):
        proc = send(bus, method, arg)
        assert proc.returncode != 0
        assert f"Error {names.ERROR_INVALID_ARGUMENT}: " in proc.stderr, proc.stderr
        assert "is not a kernel release" in proc.stderr
    proc = send(bus, "SnapshotNow", "x" * 200)
    assert f"Error {names.ERROR_INVALID_ARGUMENT}: a snapshot reason" in proc.stderr

    shutil.rmtree(root / "var/lib/kzguard", ignore_errors=True)
    (root / "var/lib/kzguard").write_text("not a directory\n")  # the state cannot be written
    proc = send(bus, "Pin", NEW)
    assert f"Error {names.ERROR_FAILED}: cannot open the state lock" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_name_is_had_once_and_given_back(tmp_path, make_bus):
    from kzguard.root import Root, Runner
    from kzguard.service.bus import export
    from kzguard.service.core import Core

    bus = make_bus()
    core = Core(Root(tmp_path), runner=Runner())
    conn, other = bus.connect(), bus.connect()
    guard = export(core, conn)
    assert other.name_has_owner(names.BUS_NAME)
    with pytest.raises(dbus.exceptions.NameExistsException):
        export(core, other)
    guard.close()
    sync(conn)
    assert not other.name_has_owner(names.BUS_NAME)


def test_errors_are_mapped_once():
    from kzguard.service import bus

    assert isinstance(
        bus.bus_error(ReleaseError("'x' is not a kernel release")), bus.InvalidArgument
    )
    failed = bus.bus_error(CommandError(["zfs", "snapshot"], 1, stderr="pool is full"))
    assert failed.get_dbus_name() == names.ERROR_FAILED
    assert failed.get_dbus_message() == "zfs snapshot: exit 1: pool is full"
    internal = bus.bus_error(ValueError("surprise"))
    assert internal.get_dbus_name() == names.ERROR_FAILED
    assert internal.get_dbus_message() == "internal error (ValueError): surprise"
    assert not internal.include_traceback


# --- the hooks' notification -------------------------------------------------------------------

NOTIFY = (
    "import sys, time; from kzguard.service.notify import notify_change;"
    "started = time.monotonic(); sent = notify_change('post-install', root=sys.argv[1]);"
    "print(sent, round(time.monotonic() - started, 3), 'dbus' in sys.modules)"
)


def notify(root: str, address: str) -> tuple[str, float, str]:
    env = {**os.environ, "PYTHONPATH": str(TOP), "DBUS_SYSTEM_BUS_ADDRESS": address}
    out = subprocess.run(
        [sys.executable, "-c", NOTIFY, root], capture_output=True, text=True, env=env, timeout=10
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    sent, seconds, loaded = out.stdout.split()
    return sent, float(seconds), loaded


def test_a_hook_tells_the_service_to_check_now(tmp_path, make_bus):
    root, tree = debian(tmp_path, module=False)
    bus = make_bus()
    service = bus.serve(root)
    conn = bus.connect()
    verdicts = []
    conn.add_signal_receiver(
        lambda *args: verdicts.append(tuple(map(str, args))),
        "VerdictChanged",
        names.INTERFACE,
        names.BUS_NAME,
        names.OBJECT_PATH,
    )
    sync(conn)
    for name in ("zfs", "spl"):
        tree.module(NEW, name, "2.2.7-1")
    tree.dkms("zfs", "2.2.7", NEW)
    assert notify("/", bus.address)[0] == "True"
    wait_for(lambda: verdicts, "VerdictChanged after the notification", procs=[service])
    assert verdicts == [(NEW, "unsafe", "safe")]


def test_without_a_bus_a_hook_notifies_nobody_quickly(tmp_path):
    absent = f"unix:path={tmp_path / 'no-socket'}"
    sent, seconds, loaded = notify("/", absent)
    assert (sent, loaded) == ("False", "False") and seconds < 0.05
    # a root other than the live host: the service does not watch it
    sent, seconds, loaded = notify(str(tmp_path), names.SYSTEM_BUS_DEFAULT)
    assert (sent, loaded) == ("False", "False") and seconds < 0.05

    hung = tmp_path / "hung"  # a socket that accepts and never answers
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(hung))
        listener.listen(1)
        sent, seconds, _ = notify("/", f"unix:path={hung}")
    assert sent == "False" and seconds < 0.5


def test_the_gate_and_the_post_install_check_notify(tmp_path, monkeypatch):
    from kzguard.base.transaction import Transaction
    from kzguard.config import load_config
    from kzguard.guard import postinstall
    from kzguard.guard.gate import run_gate
    from kzguard.root import Root, Runner
    from kzguard.service import notify as notify_module

    calls = []
    monkeypatch.setattr(
        notify_module, "notify_change", lambda kind, **fields: calls.append((kind, fields))
    )
    root_path, _ = debian(tmp_path, module=True)
    root = Root(root_path)
    run_gate(Context(root, Runner(), env={}), Transaction("apt", install=(NEW,)))
    postinstall.check(Context(root, Runner(), config=load_config(root)), NEW)
    postinstall.check(Context(root, Runner(dry_run=True), config=load_config(root)), NEW)
    assert calls == [
        ("transaction", {"root": str(root_path), "manager": "apt"}),
        ("post-install", {"root": str(root_path), "kernel": NEW}),
    ]


# --- the shipped files agree with the names ----------------------------------------------------


def test_the_policy_files_name_what_the_code_names():
    import xml.etree.ElementTree as ET

    policy = ET.parse(POLICY).getroot()
    root_rules = policy.find("policy[@user='root']")
    assert root_rules.find("allow[@own]").get("own") == names.BUS_NAME
    default = policy.find("policy[@context='default']")
    readable = {
        rule.get("send_member")
        for rule in default.findall("allow")
        if rule.get("send_interface") == names.INTERFACE
    }
    assert readable == set(names.READ_METHODS)
    actions = ET.parse(POLKIT_ACTIONS).getroot()
    [action] = actions.findall("action")
    assert action.get("id") == names.ACTION_MANAGE
    assert action.find("defaults/allow_active").text == "auth_admin_keep"
    assert action.find("defaults/allow_any").text == "no"


COUNTING_SERVICE = SERVICE.replace(
    "core.check()\n",
    "core.check()\n"
    "real = core.check\n"
    "def counted():\n"
    "    with open(sys.argv[3], 'a') as log:\n"
    "        log.write('check\\n')\n"
    "    return real()\n"
    "core.check = counted\n",
)


def test_concurrent_check_now_calls_share_checks(tmp_path, make_bus):
    """Any caller may ask for a check: twenty at once cost a check or two, not twenty."""
    root, _ = debian(tmp_path, module=False)
    bus = make_bus()
    log = tmp_path / "checks.log"
    log.write_text("")
    argv = [sys.executable, "-c", COUNTING_SERVICE, bus.address, str(root), str(log)]
    service = bus.start("service", argv)
    bus.wait_for_name(names.BUS_NAME, service)
    full = [
        *NOBODY,
        "busctl",
        f"--address={bus.address}",
        "--json=short",
        "call",
        names.BUS_NAME,
        names.OBJECT_PATH,
        names.INTERFACE,
        "CheckNow",
    ]
    clients = [
        subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(20)
    ]
    try:
        wait_for(lambda: all(c.poll() is not None for c in clients), "20 CheckNow replies")
        for client in clients:
            out, err = client.communicate(timeout=TIMEOUT)
            assert client.returncode == 0, err
            assert json.loads(json.loads(out)["data"][0])["next_boot"]["release"] == NEW
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    runs = len(log.read_text().splitlines())
    assert 1 <= runs <= 3, f"{runs} checks for 20 requests"
