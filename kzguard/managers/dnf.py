"""dnf (4): the plugin's library half (``hooks/dnf/kzguard.py`` is the thin half dnf loads).

dnf calls the plugin's ``sack()`` once the repositories are loaded, ``resolved()`` once the
goal is resolved, before anything is downloaded, ``pre_transaction()`` before rpm runs and
``transaction()`` once rpm is done. :func:`begin` (pre_transaction) records the transaction
and :func:`finish` (transaction) takes the post-install verdict on its end state: the
kernel-install plugin only queues the kernels it sees during it (:mod:`kzguard.guard.inflight`).
:func:`resolved` turns ``base.transaction`` into a :class:`~kzguard.base.transaction.Transaction`
and runs the gate on dnf's ``installroot``; the plugin raises ``dnf.exceptions.Error`` (the
only exception dnf lets abort a run) when the answer is to refuse. :func:`sack_excludes` is
hold mode: with ``on_unsupported_kernel: hold`` it judges the kernels the repositories offer
and returns the query of their packages to exclude, so ``dnf upgrade`` goes on with everything else;
kernels pinned in the state file (``pins``) are excluded in every mode.

Package names: a kernel is ``kernel``, ``kernel-core``, ``kernel-modules*`` or
``kernel-devel*`` (and the same for the ``debug``, ``rt``, ``64k`` and ``16k`` flavours); its
release is ``<version>-<release>.<arch>`` as ``uname -r`` prints it (``+<flavour>`` for a
flavour), e.g. ``6.13.2-200.fc41.x86_64``. The ZFS version after the transaction is the
version of the incoming ``zfs-dkms``, ``kmod-zfs``, ``zfs-kmod`` or ``zfs`` package.

Everything here runs inside dnf's Python (3.9 on EL9): the path of a transaction without a
kernel or ZFS package imports nothing beyond :mod:`kzguard.base.transaction`, and ``sack()``
outside hold mode reads the configuration file (for the word ``hold``) and the state file
(for pins) without loading YAML. In hold mode it judges the offered kernels on every dnf
command that loads the repositories, which costs what ``kzguard check`` costs.
"""

from __future__ import annotations

from kzguard.base.record import Record
from kzguard.base.rpmnames import hold_names, kernel_release, split_release
from kzguard.base.transaction import ZFS_PACKAGES, Transaction
from kzguard.managers.base import Manager

TYPE_CHECKING = False  # typing costs 2 ms to import: the registry loads every adapter
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any, Optional

    from kzguard.config import Config
    from kzguard.context import Context
    from kzguard.judge.holds import Held
    from kzguard.root import Root, Runner

MANAGER = "dnf"
_ZFS_SOURCE_PACKAGE = "zfs-dkms"  # ships /usr/src/zfs-<version>/META
# which incoming package tells the ZFS version after the transaction, most telling first
_ZFS_VERSION_FROM = ("zfs-dkms", "kmod-zfs", "zfs-kmod", "zfs")
# kzguard.config.load.DEFAULT_PATH, not imported here: sack() runs on every dnf command
CONFIG_FILE = "/etc/kzguard/kzguard.yaml"
# "hold" as a word in a configuration file: the cheap test before loading YAML on every dnf run


class Package(Record):
    """The four fields of a package kzguard uses (dnf's and dnf5's alike)."""

    name: str
    version: str
    release: str
    arch: str


class Outcome(Record):
    """What the plugin does after ``resolved``: refuse (raise) or go on, and what to say."""

    refuse: bool
    lines: tuple[str, ...] = ()
    warn: bool = False  # say the lines as warnings (else as information)
    # for pre_transaction: the zfs-dkms package was not downloaded yet, so the ZFS was judged
    # by the built-in table; and the kernels an admin's override let through
    recheck: bool = False
    allowed: tuple[str, ...] = ()
    lifted: tuple[str, ...] = ()  # pins lifted for the new ZFS: checked again at the end


def build_transaction(
    incoming: Iterable[Package], outgoing: Iterable[Package], manager: str = MANAGER
) -> Transaction:
    """The Transaction of packages coming in (install, upgrade, downgrade, reinstall) and going
    out (erased, upgraded, obsoleted). A kernel release is removed only when it goes out and
    does not come back in the same transaction (a reinstall)."""
    packages: dict[str, list[str]] = {}
    removed: dict[str, None] = {}
    zfs_in: dict[str, str] = {}
    zfs_touched: dict[str, None] = {}
    for pkg in incoming:
        release = kernel_release(pkg.name, pkg.version, pkg.release, pkg.arch)
        if release is not None:
            names = packages.setdefault(release, [])
            if pkg.name not in names:
                names.append(pkg.name)
        elif pkg.name in ZFS_PACKAGES:
            zfs_touched[pkg.name] = None
            zfs_in[pkg.name] = pkg.version
    for pkg in outgoing:
        release = kernel_release(pkg.name, pkg.version, pkg.release, pkg.arch)
        if release is not None and release not in packages:
            removed[release] = None
        elif release is None and pkg.name in ZFS_PACKAGES:
            zfs_touched[pkg.name] = None
    version = next((zfs_in[n] for n in _ZFS_VERSION_FROM if n in zfs_in), None)
    if version is None and zfs_in:
        version = next(iter(zfs_in.values()))
    return Transaction(
        manager,
        install=tuple(packages),
        remove=tuple(removed),
        zfs_version=version,
        zfs_packages=tuple(zfs_touched),
        packages=tuple((release, tuple(names)) for release, names in packages.items()),
    )


def from_dnf(transaction: Any, manager: str = MANAGER) -> Transaction:
    """The Transaction of dnf's resolved ``base.transaction`` (its ``install_set`` and
    ``remove_set``, the API dnf-plugins-core uses)."""
    if transaction is None:
        return Transaction(manager)
    return build_transaction(
        (_package(p) for p in transaction.install_set),
        (_package(p) for p in transaction.remove_set),
        manager,
    )


def _package(pkg: Any) -> Package:
    return Package(pkg.name, pkg.version, pkg.release, pkg.arch)


def command_line(argv: Sequence[str]) -> str:
    """The command to suggest running again: ``dnf`` and the arguments it was given."""
    import shlex

    return " ".join(["dnf", *(shlex.quote(a) for a in argv[1:])]) if argv else ""


class Session:
    """One dnf run as the plugin sees it: its hooks share one context (the configuration read
    once, the host gathered once), built on first use; rpm's changes refresh it."""

    def __init__(
        self,
        installroot: str,
        config_path: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
    ):
        self.root_path = installroot or "/"
        self.config_path = config_path
        self.env = env
        self._ctx: Optional[Context] = None

    @property
    def ctx(self) -> Context:
        if self._ctx is None:
            from kzguard.context import Context

            self._ctx = Context.open(self.root_path, config_path=self.config_path, env=self.env)
        return self._ctx


def resolved(
    transaction: Any,
    installroot: str,
    *,
    config_path: Optional[str] = None,
    argv: Sequence[str] = (),
    env: Optional[Mapping[str, str]] = None,
    session: Optional[Session] = None,
) -> Outcome:
    """Judge dnf's resolved transaction on ``installroot``; any failure meets ``on_error``."""
    root_path = installroot or "/"
    session = session or Session(installroot, config_path, env)
    try:
        tx = from_dnf(transaction)
        if not tx.relevant:
            return Outcome(False)
        ctx = session.ctx
        tx, waiting = with_archives(tx, transaction, downloaded=False, runner=ctx.runner)
        from kzguard.guard.gate import run_gate
        from kzguard.judge.decision import BLOCK, HOLD, WARN

        lifted: list[str] = []
        decision = run_gate(ctx, tx, command=command_line(argv), lifted_into=lifted)
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        from kzguard.guard.hook_process import error_outcome

        refuse, message = error_outcome(MANAGER, exc, root_path, config_path)
        return Outcome(refuse, (f"kzguard: {message}",), warn=True)
    refuse = decision.action in (BLOCK, HOLD)
    return Outcome(
        refuse,
        decision.lines,
        warn=decision.action == WARN,
        recheck=waiting and not refuse,
        allowed=tuple(decision.allowed),
        lifted=tuple(lifted),
    )


def with_archives(
    tx: Transaction, transaction: Any, *, downloaded: bool, runner: Optional[Runner] = None
) -> tuple[Transaction, bool]:
    """``tx`` with the META of each incoming ``zfs-dkms`` rpm that is on disk (a local file,
    a cached download; all of them once ``downloaded``), and whether one was not there yet
    (then its ZFS is judged by the built-in table, and :func:`recheck` looks again)."""
    if not tx.zfs_packages or transaction is None:
        return tx, False
    paths: list[str] = []
    waiting: list[str] = []
    import os

    for pkg in transaction.install_set:
        if pkg.name != _ZFS_SOURCE_PACKAGE:
            continue
        try:
            path = pkg.localPkg()
        except Exception:  # noqa: BLE001 - no location: judged by the table
            path = ""
        if path and os.path.isfile(path):
            paths.append(path)
        else:
            waiting.append(f"{pkg.name}-{pkg.version}-{pkg.release}.{pkg.arch}.rpm")
    if not paths and not waiting:
        return tx, False
    from kzguard.facts.package_meta import sources_for

    sources, notes = sources_for(paths, tx.zfs_version, runner)
    if waiting and not downloaded:
        notes += tuple(
            f"{name} is not downloaded yet: ZFS {tx.zfs_version} is judged by the built-in "
            "table now, and by its own META before rpm runs"
            for name in waiting
        )
    return tx._replace(zfs_sources=sources, notes=notes), bool(waiting) and not downloaded


def recheck(
    transaction: Any,
    installroot: str,
    *,
    config_path: Optional[str] = None,
    allowed: Sequence[str] = (),
    argv: Sequence[str] = (),
    env: Optional[Mapping[str, str]] = None,
    session: Optional[Session] = None,
) -> Outcome:
    """At ``pre_transaction``, when ``resolved()`` judged a new ZFS by the table because its
    rpm was not downloaded yet: judge again by the META inside it (nothing is acted on twice:
    no snapshot, no override used). ``refuse`` means raise ``dnf.exceptions.Error`` (rpm has
    not run yet, so that still aborts the transaction)."""
    root_path = installroot or "/"
    session = session or Session(installroot, config_path, env)
    try:
        ctx = session.ctx
        tx, _ = with_archives(
            from_dnf(transaction), transaction, downloaded=True, runner=ctx.runner
        )
        if not tx.zfs_sources:
            return Outcome(False, tx.notes and tuple(f"kzguard: {n}" for n in tx.notes))
        from kzguard.guard.gate import recheck as gate_recheck
        from kzguard.judge.decision import BLOCK, HOLD

        decision = gate_recheck(ctx, tx, allowed=frozenset(allowed), command=command_line(argv))
    except Exception as exc:  # noqa: BLE001 - any failure of kzguard itself meets on_error
        from kzguard.guard.hook_process import error_outcome

        refuse, message = error_outcome(MANAGER, exc, root_path, config_path)
        return Outcome(refuse, (f"kzguard: {message}",), warn=True)
    if decision.action in (BLOCK, HOLD):
        return Outcome(True, decision.lines)
    return Outcome(False, tuple(line for line in decision.lines if "ZFS" in line))


# ---- the end state: pre_transaction() records, transaction() judges --------------------


def begin(
    transaction: Any,
    installroot: str,
    *,
    config_path: Optional[str] = None,
    env: Optional[Any] = None,
    lifted: Sequence[str] = (),
    session: Optional[Session] = None,
) -> list[str]:
    """At ``pre_transaction`` (after the download, before rpm runs): record a kernel or ZFS
    transaction in the state file, and put its token in dnf's environment, which rpm's
    scriptlets and kernel-install inherit (inside the installroot's chroot too). Then the
    kernel-install plugin only queues its kernel, and :func:`finish` judges it at the end.
    Returns the lines to log; a failure here only means kernel-install acts at once."""
    import os

    root_path = installroot or "/"
    try:
        tx = from_dnf(transaction)
        if not tx.relevant:
            return []
        from kzguard.actions import state
        from kzguard.guard import inflight

        process = inflight.this_process()
        if process is None:
            return []  # no /proc: nothing to tell a stale record by, kernel-install acts
        token = inflight.new_token()
        ctx = (session or Session(root_path, config_path)).ctx
        with state.locked(ctx.root) as state_file:
            inflight.begin(
                state_file.data,
                MANAGER,
                process,
                kernels=tx.install,
                zfs=tx.touches_zfs,
                token=token,
                lifted=lifted,
            )
            state_file.save()
        (os.environ if env is None else env)[inflight.TOKEN_ENV] = token
    except Exception as exc:  # noqa: BLE001 - kernel-install's check then acts at once
        return [
            f"kzguard: cannot record the transaction ({type(exc).__name__}: {exc}); the "
            "kernel-install plugin checks each new kernel at once"
        ]
    return []


def finish(
    installroot: str, *, config_path: Optional[str] = None, env: Optional[Any] = None
) -> Outcome:
    """At ``transaction()`` (rpm is done): the final post-install check of the kernels
    kernel-install queued and of the kernels kzguard pinned; ``refuse`` when
    ``on_module_failure: fail`` (or ``on_error: block``) asks dnf to exit 1."""
    import io
    import os

    from kzguard.guard import inflight
    from kzguard.guard.end_check import finish_main

    env = os.environ if env is None else env
    buffer = io.StringIO()
    code = finish_main(
        MANAGER,
        root_option=installroot or "/",
        config_path=config_path,
        out=buffer,
        env=env,
    )
    env.pop(inflight.TOKEN_ENV, None)
    lines = tuple(buffer.getvalue().splitlines())
    warn = any("fail" in line or "WARNING" in line for line in lines)
    return Outcome(code != 0, lines, warn=warn)


# ---- hold mode: the sack ----------------------------------------------------------------


def hold_configured(ctx: Context) -> Optional[Config]:
    """The configuration when it says ``on_unsupported_kernel: hold``, else ``None``.

    The file is searched for the word ``hold`` before YAML is loaded, so the usual dnf run
    (block mode, or no configuration) costs one read.
    """
    try:
        if ctx.config_path is not None:
            with open(ctx.config_path, "rb") as handle:
                data = handle.read()
        else:
            data = ctx.root.read_bytes(CONFIG_FILE)
    except Exception:  # noqa: BLE001 - no file (or an unreadable one): not hold mode here
        return None
    if b"hold" not in data:  # no need for re (5 ms) on most runs
        return None
    import re

    if not re.search(rb"\bhold\b", data):
        return None
    return ctx.config if ctx.config.on_unsupported_kernel == "hold" else None


def pinned(root: Root) -> list[Held]:
    """Kernels pinned back in the state file (kzguard.actions.pin reads it; other managers'
    entries there, like APT stanzas, are not kernels)."""
    from kzguard.actions import pin
    from kzguard.judge.holds import Held

    return [Held(release, "pinned by kzguard") for release in pin.current(root)]


def unsupported(ctx: Context, releases: Iterable[str]) -> list[Held]:
    """The kernel ``releases`` (not installed yet) that the ZFS on the root does not support,
    less those an admin let through (``KZGUARD_ALLOW``, ``kzguard allow``): the judge's."""
    from kzguard.judge import holds

    allowed = holds.allowed_kernels(ctx.env, ctx.state)
    return holds.unsupported(ctx.host, ctx.config, releases, allowed)


def sack_excludes(
    sack: Any,
    installroot: str,
    *,
    config_path: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    session: Optional[Session] = None,
) -> tuple[Any, list[str]]:
    """The query of packages dnf must not see (held and pinned kernels), or ``None``, and the
    lines to tell the admin."""
    session = session or Session(installroot, config_path, env)
    ctx = session.ctx
    held = pinned(ctx.root)
    config = hold_configured(ctx)
    if config is not None:
        kernels = sack.query().available().filter(name__glob=["kernel*"])
        releases = {kernel_release(p.name, p.version, p.release, p.arch) for p in kernels}
        pins = {h.release for h in held}
        found = unsupported(ctx, (r for r in releases if r))
        held += [h for h in found if h.release not in pins]
    if not held:
        return None, []
    query = hold_query(sack, [h.release for h in held])
    lines = [f"kzguard: holding back kernel {h.release}: {h.why}" for h in held]
    if config is not None and any(h.why != "pinned by kzguard" for h in held):
        lines.append("kzguard: the rest of the transaction goes on (on_unsupported_kernel: hold)")
    _journal_held(held)
    return query, lines


def hold_query(sack: Any, releases: Iterable[str]) -> Any:
    """The available packages of the kernel ``releases`` (``kernel``, ``kernel-core``,
    ``kernel-modules*``, ``kernel-devel*`` of that version, release and arch)."""
    query = None
    for release in releases:
        parts = split_release(release)
        if parts is None:
            continue
        version, rel, arch, flavour = parts
        found = (
            sack.query()
            .available()
            .filter(name__glob=list(hold_names(flavour)), version=version, release=rel, arch=arch)
        )
        query = found if query is None else query.union(found)
    return query


def _journal_held(held: Sequence[Held]) -> None:
    from kzguard.base import journal

    releases = [h.release for h in held]
    journal.event(
        "transaction-held",
        f"{MANAGER}: hold {', '.join(releases)}",
        priority=journal.NOTICE,
        manager=MANAGER,
        kernel=releases,
    )


class Dnf(Manager):
    """dnf 4: the plugin (``hooks/dnf/kzguard.py``) runs in dnf's own Python, so there is no
    stdin protocol; its pin form is the plugin's sack exclude of the state file's pins."""

    name = MANAGER
    # what the plugin refuses when kzguard itself cannot be imported (hooks/dnf/kzguard.py)
    guarded = ("kernel*", "zfs*", "kmod-zfs*", "libzfs*")
    markers = ("/var/lib/rpm", "/usr/lib/sysimage/rpm", "/var/lib/dnf", "/etc/dnf")
    caches = ("/var/cache/libdnf5", "/var/cache/dnf")
    pending_facts = "kzguard.facts.pending_dnf"

    def pin(self, ctx: Context, release: str, codes: tuple[str, ...]) -> list[str]:
        return [
            f"kzguard: dnf: the kzguard plugin keeps the packages of {release} out of every "
            "transaction while it is pinned"
        ]


ADAPTER = Dnf()
