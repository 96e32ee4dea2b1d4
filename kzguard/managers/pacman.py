"""pacman: what ``hooks/pacman/05-kzguard-pre.hook`` passes, turned into a Transaction.

pacman runs the PreTransaction hook after downloading and before unpacking anything, chrooted
into its RootDir: inside the hook ``/`` is the root being changed. With ``AbortOnFail`` a
non-zero exit refuses the whole transaction (``failed to commit transaction (failed to run
transaction hooks)``). With ``NeedsTargets`` pacman writes the matches of every trigger on
stdin, one a line, sorted and without duplicates, without saying which trigger or operation
matched them:

- ``usr/lib/modules/<release>/vmlinuz`` (Path trigger, Install and Upgrade): a kernel release
  the transaction writes. This is the release as the package's files have it, whatever the
  package is called and however it was installed (``-S``, ``-U``, a custom kernel).
- ``usr/src/zfs-<version>/META`` (Path trigger, Install and Upgrade): the ZFS source DKMS will
  build after the transaction, ``-U`` of an AUR build included.
- a package name (Package trigger, Install, Upgrade and Remove): a kernel package
  (:data:`KERNEL_PACKAGES`) or a ZFS package (``zfs-linux*``, ``zfs-dkms``, ``zfs-utils``).

Removals need no second hook: a kernel package among the targets whose installed release (from
its files in the local database) the transaction does not write again is going away, either
removed or upgraded to another release; a reinstall writes its release again. A kernel package
that is not installed and brings no ``vmlinuz`` path (``NoExtract``) gets the release of its
sync-database version (:func:`~kzguard.facts.pending_pacman.pacman_kernel_release`).

ZFS after the transaction: the version of a ``META`` path; else the sync-database version of a
module package (``zfs-linux*``, ``zfs-dkms*``: archzfs' ``2.3.1_6.13.1.arch1.1-1`` is ZFS
2.3.1); else that of ``zfs-utils``; else unknown (a ``-U`` of a file the sync databases do not
have). A removed ZFS package reads as its sync version, which is the installed one unless an
update is pending.

The range of an incoming ZFS source comes from the META inside its package file, found in
pacman's CacheDir (``<name>-<version>-<arch>.pkg.tar.*``: the hook runs after the download,
and gets only target paths), ahead of the built-in table (:mod:`kzguard.facts.package_meta`).

Hold: pacman cannot drop one target from inside a hook, so on Arch ``hold`` refuses the whole
transaction like ``block``; :func:`hold` tells the admin to leave the kernel out with
``--ignore <pkg>`` or ``IgnorePkg``.
"""

from __future__ import annotations

from kzguard.base.transaction import ZFS_PACKAGES, Transaction
from kzguard.managers.base import HookInput, Manager

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Optional, TextIO

    from kzguard.context import Context
    from kzguard.facts.zfs import ZfsSource
    from kzguard.judge.decision import Decision
    from kzguard.root import Root

MANAGER = "pacman"
# the Package trigger's kernel targets (hooks/pacman/05-kzguard-pre.hook)
KERNEL_PACKAGES = ("linux", "linux-lts", "linux-zen", "linux-hardened")
_ZFS_MODULE_PREFIXES = ("zfs-linux", "zfs-dkms")
_ZFS_SOURCE_PREFIX = "zfs-dkms"  # ships usr/src/zfs-<version>/META
DEFAULT_CACHE_DIR = "/var/cache/pacman/pkg/"
_VMLINUZ = ("usr/lib/modules/", "/vmlinuz")  # usr/lib/modules/<release>/vmlinuz
_META = ("usr/src/zfs-", "/META")  # usr/src/zfs-<version>/META


def read(stdin: TextIO, root: Root) -> HookInput:
    """The hook's targets on stdin -> the transaction, read against ``root``'s pacman
    databases (``/`` inside pacman's chroot, or kzguard's ``--root``)."""
    from kzguard.base.transaction import stdin_lines

    return HookInput(transaction(root, stdin_lines(stdin)))


def is_zfs_package(name: str) -> bool:
    return name in ZFS_PACKAGES or name.startswith((*_ZFS_MODULE_PREFIXES, "zfs-utils"))


def _between(target: str, head: str, tail: str) -> str:
    """The one path component between ``head`` and ``tail`` that make up ``target``, or ""."""
    if not (target.startswith(head) and target.endswith(tail)):
        return ""
    middle = target[len(head) : len(target) - len(tail)]
    return "" if not middle or "/" in middle or any(c.isspace() for c in middle) else middle


def transaction(root: Root, targets: Iterable[str]) -> Transaction:
    """The Transaction the hook's target lines describe, read against ``root``'s pacman dbs."""
    written: list[str] = []  # kernel releases whose vmlinuz the transaction writes
    sources: list[str] = []  # ZFS versions whose META the transaction writes
    names: list[str] = []
    for line in targets:
        target = line.strip()
        kernel, meta = _between(target, *_VMLINUZ), _between(target, *_META)
        if kernel:
            written.append(kernel)
        elif meta:
            sources.append(meta)
        elif target and "/" not in target:
            names.append(target)
    zfs = sorted({n for n in names if is_zfs_package(n)})
    others = [n for n in names if not is_zfs_package(n)]
    if not (written or sources or names):
        return Transaction(MANAGER)
    install, remove, packages = _kernels(root, written, others)
    version = _zfs_version(root, sources, zfs)
    metas, notes = _zfs_sources(root, zfs, version) if sources else ((), ())
    return Transaction(
        MANAGER,
        install=install,
        remove=remove,
        zfs_version=version,
        zfs_packages=tuple(zfs),
        packages=packages,
        zfs_sources=metas,
        notes=notes,
    )


def _zfs_sources(
    root: Root, names: Sequence[str], version: Optional[str]
) -> tuple[tuple[ZfsSource, ...], tuple[str, ...]]:
    """The META inside the package file of the incoming ZFS source package, found in pacman's
    CacheDir as ``<name>-<version>-<arch>.pkg.tar.*`` (the hook gets only target paths)."""
    wanted = [n for n in names if n.startswith(_ZFS_SOURCE_PREFIX)]
    if not wanted:
        return (), ()
    versions = _sync_versions(root, wanted)
    files: list[str] = []
    missing: list[str] = []
    for name in wanted:
        found = _cached(root, name, versions.get(name)) if versions.get(name) else None
        if found:
            files.append(found)
        else:
            missing.append(f"{name} {versions.get(name) or '(not in a sync database)'}")
    from kzguard.facts.package_meta import sources_for

    metas, notes = sources_for(files, version)
    notes += tuple(
        f"no package file of {what} in pacman's CacheDir: ZFS {version} is judged by the "
        "built-in table"
        for what in missing
    )
    return metas, notes


def _cached(root: Root, name: str, version: str) -> Optional[str]:
    """The host path of ``<CacheDir>/<name>-<version>-<arch>.pkg.tar.*``, if it is there."""
    for cache in _cache_dirs(root):
        for inner in root.glob(f"{cache.rstrip('/')}/{name}-{version}-*.pkg.tar*"):
            rest = inner.rsplit("/", 1)[-1][len(f"{name}-{version}-") :]
            if "-" not in rest and not inner.endswith(".sig"):
                return root.host_path(inner)
    return None


def _cache_dirs(root: Root) -> list[str]:
    """pacman.conf's ``CacheDir`` entries (a path inside the root), then the default."""
    dirs: list[str] = []
    section = None
    for raw in (root.read_text_or("/etc/pacman.conf", "") or "").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.strip("[]").strip()
        elif section == "options" and line.partition("=")[0].strip() == "CacheDir":
            dirs += line.partition("=")[2].split()
    return [*dirs, DEFAULT_CACHE_DIR]


def _kernels(
    root: Root, written: Sequence[str], names: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """Releases installed and removed, and the package of each installed release."""
    from kzguard.facts import pending_pacman

    problems: list[str] = []
    local = pending_pacman._pacman_local_kernels(root, problems) if names else {}
    kernels = [n for n in names if n in local or n in KERNEL_PACKAGES]
    install = list(dict.fromkeys(written))
    owners = {release: _owner(release, kernels) for release in install}
    # a kernel package not installed yet that brings no vmlinuz path: its vmlinuz is NoExtract
    fresh = [n for n in kernels if n not in local and n not in owners.values()]
    for name, version in (_sync_versions(root, fresh) if fresh else {}).items():
        release = pending_pacman.pacman_kernel_release(name, version)
        if release and release not in owners:
            install.append(release)
            owners[release] = name
    remove = []
    for name in kernels:
        version, files_release = local.get(name, ("", None))
        old = files_release or pending_pacman.pacman_kernel_release(name, version)
        if old and old not in owners and old not in remove:
            remove.append(old)
    packages = tuple((r, (owner,)) for r, owner in owners.items() if owner)
    return tuple(install), tuple(remove), packages


def _owner(release: str, names: Sequence[str]) -> Optional[str]:
    """The kernel package among ``names`` that installs ``release``, by Arch's naming rule:
    the release ends with the package name after ``linux`` (``6.6.63-1-lts``: ``linux-lts``);
    the longest such ending wins."""
    matching = [n for n in names if n.startswith("linux") and release.endswith(n[len("linux") :])]
    return max(matching, key=len, default=None)


def _zfs_version(root: Root, sources: Sequence[str], names: Sequence[str]) -> Optional[str]:
    """The ZFS version after the transaction, when the transaction changes ZFS."""
    from kzguard.facts.zfs import newest_first, normalize_version

    if sources:
        return newest_first(normalize_version(v) for v in sources)[0]
    modules = [n for n in names if n.startswith(_ZFS_MODULE_PREFIXES)]
    for group in (modules, [n for n in names if n not in modules]):
        versions = _sync_versions(root, group).values() if group else ()
        found = newest_first(normalize_version(v.rpartition(":")[2]) for v in versions)
        if found:
            return found[0]
    return None


def _sync_versions(root: Root, names: Sequence[str]) -> dict[str, str]:
    """name -> version in the first sync database (pacman.conf order) that has it."""
    from kzguard.facts import pending_pacman as pp

    problems: list[str] = []
    repos, _ = pp._pacman_conf(root)
    found = pp._sync_versions(root, pp._sync_dbs(root, repos), set(names), problems)
    return {name: version for name, (version, _db) in found.items()}


def hold(ctx: Context, decision: Decision, transaction: Transaction) -> list[str]:
    """pacman cannot leave one package out of a running transaction: say how to do it by hand.

    The hook still exits non-zero (``hold`` refuses the transaction like ``block`` on Arch).
    """
    kernels = [n for r in decision.held for n in transaction.packages_of(r)]
    companions = [f"zfs-{n}" for n in kernels if f"zfs-{n}" in transaction.zfs_packages]
    ignore = list(dict.fromkeys([*kernels, *companions]))
    lines = [
        "kzguard: pacman cannot leave one package out of a running transaction, so on Arch "
        "`hold` refuses the whole transaction like `block`"
    ]
    if ignore:
        lines.append(
            f"kzguard: to upgrade everything else: pacman -Syu --ignore {','.join(ignore)} "
            f"(or add `IgnorePkg = {' '.join(ignore)}` to /etc/pacman.conf until ZFS supports "
            "the kernel)"
        )
    else:
        held = ", ".join(decision.held)
        lines.append(
            f"kzguard: to upgrade everything else: pacman -Syu --ignore <the package of {held}> "
            "(or add it to IgnorePkg in /etc/pacman.conf until ZFS supports the kernel)"
        )
    return lines


class Pacman(Manager):
    """pacman: alpm PreTransaction and PostTransaction hooks; no hold of its own (the gate
    refuses a pinned kernel in every transaction)."""

    name = MANAGER
    # the Package trigger's targets (the generated hook files): kernels and ZFS packages
    guarded = (*KERNEL_PACKAGES, "zfs-linux*", "zfs-dkms", "zfs-utils")
    markers = ("/var/lib/pacman/local",)
    caches = ("/var/lib/pacman/local",)
    pending_facts = "kzguard.facts.pending_pacman"

    def read(self, stdin: TextIO, ctx: Context) -> HookInput:
        return read(stdin, ctx.root)

    def hold(self, ctx: Context, decision: Decision, transaction: Transaction) -> list[str]:
        return hold(ctx, decision, transaction)

    def pin(self, ctx: Context, release: str, codes: tuple[str, ...]) -> list[str]:
        return [
            f"kzguard: pacman: the kzguard pre-transaction hook refuses {release} while it is "
            "pinned"
        ]


ADAPTER = Pacman()
