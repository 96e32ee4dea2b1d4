"""A package-manager transaction in flight: recorded when it starts, finished when it ends.

A kernel package's post-install hook (``/etc/kernel/postinst.d``, kernel-install) runs in the
middle of a transaction: on Debian, apt configures the kernel before it configures a
``zfs-dkms`` unpacked in the same run, so the module the next boot needs may not exist yet.
The verdict that acts is therefore taken at the end (apt's ``DPkg::Post-Invoke``, the dnf
plugin's ``transaction()``, dnf5's ``post_transaction``):

- the pre-transaction gate that lets a kernel or ZFS transaction through records it in the
  state file (key ``transaction``): the manager, its process (PID and start time, from
  ``/proc``), a random token (the dnf plugin also puts it in its own environment, which rpm's
  scriptlets and kernel-install inherit, chroot or not), and the kernels it installs;
- a post-install hook that runs inside that transaction (:func:`inside`: the token is in its
  environment, or the recorded process is alive and one of its ancestors) only queues its
  kernel (``queued``) and says its verdict is provisional;
- the end hook judges the queued kernels and clears the record.

A record whose process is gone (the manager crashed, or an end hook never ran) is *stale*:
whoever finds it judges its queued kernels and clears it. A live record that is not an
ancestor (an admin running the hook by hand during an apt run) is left alone. Everything
here reads the host's own ``/proc``, never the judged root's.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, Optional

KEY = "transaction"
TOKEN_ENV = "KZGUARD_TRANSACTION"
PROC = "/proc"
# a hook command runs through ``sh -c``: the manager is the first ancestor that is no shell
SHELLS = frozenset({"sh", "dash", "bash", "ash", "busybox", "zsh", "ksh", "mksh"})
_MAX_DEPTH = 64
OURS, RUNNING, STALE = "ours", "running", "stale"


class Process(tuple):  # a (pid, start) pair, cheap and hashable
    """A process: its PID and its start time in clock ticks since boot (``/proc/PID/stat``)."""

    __slots__ = ()

    def __new__(cls, pid: int, start: int) -> Process:
        return tuple.__new__(cls, (pid, start))

    @property
    def pid(self) -> int:
        return self[0]

    @property
    def start(self) -> int:
        return self[1]


def stat(pid: int, proc: str = PROC) -> Optional[tuple[str, int, int]]:
    """``(comm, ppid, start time)`` of a process, or ``None`` when it cannot be read."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as handle:
            text = handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return None
    head, sep, tail = text.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 20 or "(" not in head:
        return None
    try:
        return head.partition("(")[2], int(fields[1]), int(fields[19])
    except ValueError:
        return None


def ancestors(pid: Optional[int] = None, proc: str = PROC) -> list[Process]:
    """The processes above ``pid`` (default: this one), nearest first, PID 1 included (in a
    container or ``unshare --pid``, apt itself may be PID 1)."""
    found: list[Process] = []
    current = stat(os.getpid() if pid is None else pid, proc)
    while current is not None and current[1] > 0 and len(found) < _MAX_DEPTH:
        parent = current[1]
        current = stat(parent, proc)
        if current is None:
            break
        found.append(Process(parent, current[2]))
    return found


def manager_process(proc: str = PROC) -> Optional[Process]:
    """The package manager that started this hook: the nearest ancestor that is not a shell
    (apt and dnf5 run hook commands through ``sh -c``). ``None`` without a readable /proc."""
    for process in ancestors(proc=proc):
        info = stat(process.pid, proc)
        if info is None:
            return None
        if info[0] not in SHELLS:
            return process
    return None


def this_process(proc: str = PROC) -> Optional[Process]:
    """This process (the dnf plugin runs inside dnf)."""
    info = stat(os.getpid(), proc)
    return Process(os.getpid(), info[2]) if info else None


def alive(process: Process, proc: str = PROC) -> bool:
    """Whether ``process`` still runs: its PID exists with the same start time."""
    info = stat(process.pid, proc)
    return info is not None and info[2] == process.start


def new_token() -> str:
    return os.urandom(8).hex()


def begin(
    data: dict[str, Any],
    manager: str,
    process: Process,
    *,
    kernels: Sequence[str] = (),
    zfs: bool = False,
    token: Optional[str] = None,
    lifted: Sequence[str] = (),
) -> dict[str, Any]:
    """Record (in the state ``data``) that ``manager`` runs a transaction; kernels queued in a
    record already there (the same run, or a stale one never finished) are kept. ``lifted``
    are kernels whose pins the gate lifted for the ZFS this transaction brings: the end hook
    checks them again, as if queued (DKMS may fail to build the new ZFS for them)."""
    import time

    old = data.get(KEY)
    queued = list(old.get("queued", [])) if isinstance(old, dict) else []
    queued += [r for r in lifted if r not in queued]
    record = {
        "manager": manager,
        "pid": process.pid,
        "start": process.start,
        "token": token or new_token(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernels": list(kernels),
        "zfs": bool(zfs),
        "queued": queued,
    }
    data[KEY] = record
    return record


def record_of(data: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The recorded transaction, or ``None`` (a malformed entry counts as none)."""
    record = data.get(KEY)
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("pid"), int) or not isinstance(record.get("start"), int):
        return None
    return record


def process_of(record: Mapping[str, Any]) -> Process:
    return Process(int(record["pid"]), int(record["start"]))


def inside(
    record: Mapping[str, Any], env: Optional[Mapping[str, str]] = None, proc: str = PROC
) -> str:
    """How this process relates to the recorded transaction: ``ours`` (its token is in our
    environment, or its process is alive and one of our ancestors), ``running`` (alive, not
    ours) or ``stale`` (its process is gone)."""
    env = os.environ if env is None else env
    token = record.get("token")
    if token and env.get(TOKEN_ENV) == token:
        return OURS
    process = process_of(record)
    if not alive(process, proc):
        # without a /proc to look in (a chroot) nothing can be proven: not ours, not stale
        return STALE if os.path.isdir(f"{proc}/{os.getpid()}") else RUNNING
    mine = [this_process(proc), *ancestors(proc=proc)]
    return OURS if process in mine else RUNNING


def is_end_of(
    record: Mapping[str, Any], manager: str, env: Optional[Mapping[str, str]] = None
) -> bool:
    """Whether the end hook of ``manager`` closes ``record``: it runs inside that transaction
    (apt 2.6 runs ``DPkg::Post-Invoke`` from a forked apt-get, a child of the one that ran
    ``Pre-Install-Pkgs``: an ancestor, not the nearest one)."""
    return record.get("manager") == manager and inside(record, env) == OURS


def queued(record: Mapping[str, Any]) -> list[str]:
    return [r for r in record.get("queued", []) if isinstance(r, str)]
