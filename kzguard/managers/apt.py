"""apt: the ``DPkg::Pre-Install-Pkgs`` hook (protocol version 3) and holds as APT pins.

apt runs each ``DPkg::Pre-Install-Pkgs`` command through ``/bin/sh -c`` after it has resolved
and downloaded a transaction and before dpkg unpacks anything; a non-zero exit aborts the run.
With ``DPkg::Tools::Options::<first word of the command>::Version "3"`` it writes on stdin
(``SendPkgsInfo`` in apt's ``apt-pkg/deb/dpkgpm.cc``)::

    VERSION 3
    Dir=/                                  <- the whole configuration, one ``key=value`` a line,
    DPkg::Options::=--root=/srv/r          <- ``%xx``-quoted; list items end in ``::``
    CommandLine::AsString=apt%20upgrade
                                           <- a blank line
    bar 1.0 amd64 none > - - none **REMOVE**
    foo 1.0 amd64 none < 2.0 amd64 none /var/cache/apt/archives/foo_2.0_amd64.deb
    foo 1.0 amd64 none < 2.0 amd64 none **CONFIGURE**

An action line is ``name old-version old-arch old-multiarch OP new-version new-arch
new-multiarch what``: ``-`` (and ``none``) for a missing version, OP ``<`` for an install or
upgrade, ``>`` for a downgrade or a removal, ``=`` for a reinstall, and ``what`` the ``.deb``
being unpacked, ``**CONFIGURE**`` or ``**REMOVE**`` (``**ERROR**`` when apt has no file).
Version 2 is the same without the architecture and multi-arch columns.

:func:`read` turns that into a :class:`~kzguard.base.transaction.Transaction`; it imports nothing
heavy until a kernel image or a ZFS package shows up. The root is dpkg's ``--root`` (or
``--instdir``) in ``DPkg::Options``, else apt's ``Dir``. On Ubuntu and Proxmox, where the zfs
module ships prebuilt, a kernel image must come with the package that ships its module
(``linux-modules-<release>`` on Ubuntu; Proxmox's ``proxmox-kernel-*`` carries it itself):
kernels without one are named in ``Transaction.no_module`` and the policy finds them
``module-missing``. The ``usr/src/zfs-*/META`` inside an incoming ``zfs-dkms`` .deb (the
stream names the file) gives the range the new ZFS is judged by
(:mod:`kzguard.facts.package_meta`), ahead of the built-in table.

When a ``DPkg::Post-Invoke`` entry runs ``kzguard hook post-transaction apt`` on the same
root (:func:`final_check_of`), a transaction that goes ahead is recorded, so that the
post-install hook only queues the kernels configured inside it (:mod:`kzguard.guard.inflight`).

Since apt has resolved the transaction before the hook runs, ``hold`` cannot drop the kernel
from it: it refuses the run and pins the kernel's packages (:mod:`kzguard.actions.apt_hold`),
so the next ``apt upgrade`` keeps the kernel back by itself. :func:`maintain` lifts those pins
on a later apt run once the kernel is supported.
"""

from kzguard.base.errors import KzguardError
from kzguard.base.record import Record
from kzguard.base.transaction import ZFS_PACKAGES, Transaction
from kzguard.managers.base import HookInput, Manager, PinForm

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Optional, TextIO

    from kzguard.actions.apt_hold import Pin
    from kzguard.config import Config
    from kzguard.context import Context
    from kzguard.facts.host import Host
    from kzguard.facts.zfs import ZfsSource
    from kzguard.judge.decision import Decision
    from kzguard.root import Root, Runner

MANAGER = "apt"
DEFAULT_COMMAND = "apt upgrade"
PINS = "/etc/apt/preferences.d/kzguard"  # apt_hold.PREFERENCES, without importing it on every run
CONFIGURE, REMOVE, ERROR = "**CONFIGURE**", "**REMOVE**", "**ERROR**"
UNPACK = "unpack"
POST_INVOKE = "dpkg::post-invoke::"  # list items of DPkg::Post-Invoke, as the stream names them
# Patterns, compiled (by re's cache) only when a stream needs them: re costs every run 5 ms.
_EXISTS = r"(?:\[|\btest)\s+-e\s+([^\s;\]]+)"
_FINAL_CHECK = r"\bkzguard\b.*\bhook\s+post-transaction\s+apt\b"
_COLUMNS = {2: 5, 3: 9}  # protocol version -> fields on an action line
_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_NAME_REST = _NAME_FIRST | frozenset("+.-")
_ARCH = _NAME_FIRST | frozenset("-")
_HEX = frozenset("0123456789abcdefABCDEF")
_IMAGE_PREFIXES = ("linux-image-", "proxmox-kernel-", "pve-kernel-")
# packages named after a kernel release, besides the image: "<prefix><release>"
_RELEASE_PREFIXES = (
    "linux-modules-extra-",
    "linux-modules-",
    "linux-headers-",
    "proxmox-headers-",
    "pve-headers-",
)
_MODULE_PACKAGE = "linux-modules-"  # Ubuntu: ships kernel/zfs/zfs.ko for its release
_MODULE_IN_IMAGE = ("proxmox-kernel-", "pve-kernel-")  # Proxmox: zfs is in the image
_ZFS_VERSION_FROM = ("zfs-dkms", "zfsutils-linux")
_ZFS_SOURCE_PACKAGE = "zfs-dkms"  # ships usr/src/zfs-<version>/META
_APT_ZFS_PACKAGES = frozenset({"zfs-initramfs", "zfs-dracut", "spl-dkms", "spl"})
_ZFS_LIB_PREFIXES = ("libzfs", "libzpool", "libnvpair", "libuutil")


class AptProtocolError(KzguardError):
    """The hook's stdin is not apt's Pre-Install-Pkgs protocol version 2 or 3."""

    name = "apt-protocol"


class AptAction(Record):
    """One action line of the stream."""

    name: str
    old_version: "Optional[str]"
    op: str  # "<", ">" or "="
    new_version: "Optional[str]"
    what: str  # UNPACK, CONFIGURE, REMOVE or ERROR
    file: "Optional[str]" = None  # the .deb for UNPACK


class AptStream(Record):
    """A parsed stream: protocol version, configuration (lower-case keys), actions."""

    version: int
    config: dict[str, tuple[str, ...]]
    actions: "tuple[AptAction, ...]"

    def first(self, key: str, default: str = "") -> str:
        values = self.config.get(key.lower())
        return values[0] if values else default


def read(stdin: "TextIO", runner: "Optional[Runner]" = None) -> "HookInput":
    """Read apt's stream from ``stdin`` into the transaction, its root and the command
    (``runner`` reads the file lists of incoming .debs; without it none is read)."""
    stream = parse(_read_text(stdin))
    tx = transaction(stream, runner)
    root = root_of(stream)
    final = tx.relevant and final_check_of(stream, root)
    return HookInput(tx, root, command_of(stream), final)


def final_check_of(stream: "AptStream", root: str) -> bool:
    """Whether apt will run ``kzguard hook post-transaction apt`` on ``root`` when dpkg is
    done: a ``DPkg::Post-Invoke`` entry says so (an admin's older ``80kzguard`` may lack it,
    and then the post-install hook keeps acting at once), and the files its ``[ -e PATH ]``
    tests name exist (the packaged line runs while ``/var/lib/dpkg/info/kzguard.list`` does)."""
    import os
    import re

    for command in stream.config.get(POST_INVOKE, ()):
        match = re.search(_FINAL_CHECK, command)
        if match is None:
            continue
        words = command[match.start() :].split()
        target = "/"
        for index, word in enumerate(words):
            if word.startswith("--root="):
                target = word[len("--root=") :]
            elif word == "--root" and index + 1 < len(words):
                target = words[index + 1]
        guards = re.findall(_EXISTS, command)  # `[ -e PATH ]`: the hook runs only if PATH exists
        if os.path.realpath(target) == os.path.realpath(root) and all(
            os.path.exists(path) for path in guards
        ):
            return True
    return False


def _read_text(stdin: "TextIO") -> str:
    """The whole stream; file names may hold any bytes, so undecodable ones survive."""
    try:
        raw = getattr(stdin, "buffer", None)
        if raw is not None:
            return raw.read().decode("utf-8", "surrogateescape")
        return stdin.read()
    except (OSError, ValueError) as exc:
        raise AptProtocolError(f"cannot read apt's stream on stdin: {exc}") from exc


def parse(text: str) -> "AptStream":
    """Parse a whole Pre-Install-Pkgs stream; raise :class:`AptProtocolError` on anything else."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header = lines[0].strip() if lines else ""
    version = {"VERSION 2": 2, "VERSION 3": 3}.get(header)
    if version is None:
        raise AptProtocolError(
            f"apt sent {_show(header)} instead of a `VERSION 3` header: set "
            '`DPkg::Tools::Options::<first word of the hook command>::Version "3";`'
        )
    config: dict[str, list[str]] = {}
    number = 1
    for number, line in enumerate(lines[1:], 2):
        if line == "":
            break
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise AptProtocolError(f"line {number}: not a configuration line: {_show(line)}")
        config.setdefault(_unquote(key).lower(), []).append(_unquote(value))
    else:
        raise AptProtocolError("the stream ends inside the configuration (no blank line)")
    actions = tuple(_action(line, n, version) for n, line in enumerate(lines[number:], number + 1))
    return AptStream(version, {k: tuple(v) for k, v in config.items()}, actions)


def _action(line: str, number: int, version: int) -> "AptAction":
    fields = line.split(" ", _COLUMNS[version] - 1)
    if len(fields) != _COLUMNS[version] or "" in fields:
        raise AptProtocolError(f"line {number}: not a package action: {_show(line)}")
    if version == 3:
        name, old, _, _, op, new, _, _, what = fields
    else:
        name, old, op, new, what = fields
    if not _package_name(name) or op not in ("<", ">", "="):
        raise AptProtocolError(f"line {number}: not a package action: {_show(line)}")
    file = None
    if what.startswith("/"):
        what, file = UNPACK, what
    elif what not in (CONFIGURE, REMOVE, ERROR):
        raise AptProtocolError(f"line {number}: unknown action {_show(what)}")
    new_version = None if new == "-" else new
    if new_version is None and what != REMOVE:
        raise AptProtocolError(f"line {number}: {what} without a version: {_show(line)}")
    return AptAction(name.split(":")[0], None if old == "-" else old, op, new_version, what, file)


def _package_name(name: str) -> bool:
    """``[a-z0-9][a-z0-9+.-]*`` with an optional ``:arch`` of ``[a-z0-9-]+``, without re."""
    package, colon, arch = name.partition(":")
    return (
        package[:1] in _NAME_FIRST
        and _NAME_REST.issuperset(package)
        and (not colon or (arch != "" and _ARCH.issuperset(arch)))
    )


def _unquote(text: str) -> str:
    """Undo apt's ``QuoteString`` (``%xx`` for spaces, ``=``, quotes, non-ASCII bytes); each
    run of ``%xx`` is one UTF-8 sequence. Without re, which costs every hook run 5 ms."""
    if "%" not in text:
        return text
    out: list[str] = []
    run = bytearray()
    i, end = 0, len(text)
    while i < end:
        code = text[i + 1 : i + 3] if text[i] == "%" else ""
        if len(code) == 2 and _HEX.issuperset(code):
            run.append(int(code, 16))
            i += 3
            continue
        if run:
            out.append(run.decode("utf-8", "replace"))
            run.clear()
        out.append(text[i])
        i += 1
    if run:
        out.append(run.decode("utf-8", "replace"))
    return "".join(out)


def _show(text: str) -> str:
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


def root_of(stream: "AptStream") -> str:
    """The root the transaction changes: dpkg's ``--root``/``--instdir``, else apt's ``Dir``."""
    chroot = stream.first("DPkg::Chroot-Directory", "/")
    if chroot.rstrip("/"):
        return "/"  # apt runs the hook chrooted there
    found = None
    options = stream.config.get("dpkg::options::", ())
    for index, option in enumerate(options):
        for flag in ("--root", "--instdir"):
            if option.startswith(f"{flag}="):
                found = option[len(flag) + 1 :]
            elif option == flag and index + 1 < len(options):
                found = options[index + 1]
    if found is None:
        base = stream.first("RootDir").rstrip("/")
        found = base + "/" + stream.first("Dir", "/").lstrip("/")
    return found.rstrip("/") or "/"


def command_of(stream: "AptStream") -> str:
    """The command line apt was run with (to suggest running again), else ``apt upgrade``."""
    return stream.first("CommandLine::AsString").strip() or DEFAULT_COMMAND


# --- the transaction -------------------------------------------------------------------------


def is_zfs_package(name: str) -> bool:
    return name in ZFS_PACKAGES or name in _APT_ZFS_PACKAGES or name.startswith(_ZFS_LIB_PREFIXES)


def image_release(name: str) -> "Optional[str]":
    """The kernel release a kernel image package installs, None for anything else.

    ``linux-image-<release>[-unsigned]``, Ubuntu's ``linux-image-unsigned-<release>``,
    ``proxmox-kernel-<release>[-signed]`` and ``pve-kernel-<release>``; not meta packages
    (``linux-image-amd64``, ``proxmox-kernel-6.8``) nor ``-dbg`` packages.
    """
    if not _may_be_image(name):
        return None
    from kzguard.facts.pending_apt import _deb_image_release

    if name.startswith("linux-image-unsigned-"):
        name = "linux-image-" + name[len("linux-image-unsigned-") :]
    elif name.endswith("-unsigned"):
        name = name[: -len("-unsigned")]
    return _deb_image_release(name)


def _may_be_image(name: str) -> bool:
    """The cheap test before the release parser: a kernel family's prefix, then a version."""
    for prefix in _IMAGE_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            return rest[:1].isdigit() or rest.startswith("unsigned-")
    return False


def companion_release(name: str) -> "Optional[str]":
    """The release of a package named after one (``linux-modules-<release>``, headers...)."""
    for prefix in _RELEASE_PREFIXES:
        if name.startswith(prefix):
            from kzguard.facts.pending_apt import _deb_image_release

            return _deb_image_release("linux-image-" + name[len(prefix) :])
    return None


def upstream_version(version: str) -> str:
    """The upstream part of a Debian version: ``2.2.7-1~bpo12+1`` -> ``2.2.7``."""
    from kzguard.facts.vercmp import split_dpkg_version

    try:
        return split_dpkg_version(version)[1]
    except ValueError as exc:
        raise AptProtocolError(str(exc)) from exc


def transaction(stream: "AptStream", runner: "Optional[Runner]" = None) -> "Transaction":
    """What the stream's actions do to kernels and ZFS (see :class:`Transaction`)."""
    installs: dict[str, AptAction] = {}
    removes: dict[str, AptAction] = {}
    for action in stream.actions:
        if action.what == REMOVE:
            removes[action.name] = action
        elif action.name not in installs or action.file:
            installs[action.name] = action  # the unpack line (with its .deb) wins
    zfs = tuple(n for n in dict.fromkeys([*installs, *removes]) if is_zfs_package(n))
    if not zfs and not any(_may_be_image(n) for n in [*installs, *removes]):
        return Transaction(MANAGER)  # the fast path: nothing kzguard judges
    images = {n: r for n in installs if (r := image_release(n))}
    removed = [r for n in removes if (r := image_release(n)) and r not in images.values()]
    zfs_from = next((installs[n] for n in _ZFS_VERSION_FROM if n in installs), None)
    zfs_version = upstream_version(zfs_from.new_version or "") if zfs_from else None
    packages: dict[str, list[str]] = {}
    for name in installs:
        release = images.get(name) or companion_release(name)
        if release in images.values():
            packages.setdefault(release, []).append(name)
    sources, notes = _zfs_sources(installs, zfs_version, runner)
    return Transaction(
        MANAGER,
        install=tuple(dict.fromkeys(images.values())),
        remove=tuple(dict.fromkeys(removed)),
        zfs_version=zfs_version,
        zfs_packages=zfs,
        packages=tuple((r, tuple(names)) for r, names in packages.items()),
        no_module=_without_module(images, installs, runner),
        zfs_sources=sources,
        notes=notes,
    )


def _zfs_sources(
    installs: "dict[str, AptAction]", version: "Optional[str]", runner: "Optional[Runner]"
) -> "tuple[tuple[ZfsSource, ...], tuple[str, ...]]":
    """The META inside the ``zfs-dkms`` .deb being unpacked (the source DKMS will build)."""
    action = installs.get(_ZFS_SOURCE_PACKAGE)
    if action is None or action.file is None:
        return (), ()
    from kzguard.facts.package_meta import sources_for

    return sources_for([action.file], version, runner)


def _without_module(
    images: dict[str, str], installs: "dict[str, AptAction]", runner: "Optional[Runner]"
) -> tuple[str, ...]:
    """Releases installed with no package that ships their zfs module.

    A Proxmox image carries its module. Otherwise ``linux-modules-<release>`` must be in the
    transaction, and when its ``.deb`` lists its files (the ``md5sums`` control member) they
    must include ``kernel/zfs/zfs.ko*`` (mainline builds ship a modules package without zfs).
    Whether a module already on disk belongs to the kernel is the policy's check.
    """
    missing = []
    for name, release in images.items():
        if name.startswith(_MODULE_IN_IMAGE):
            continue
        modules = installs.get(_MODULE_PACKAGE + release)
        if modules is None or _deb_lacks_zfs(modules.file, release, runner):
            missing.append(release)
    return tuple(dict.fromkeys(missing))


def _deb_lacks_zfs(deb: "Optional[str]", release: str, runner: "Optional[Runner]") -> bool:
    """True when the .deb's file list is readable and has no zfs module for ``release``."""
    if deb is None:
        return False
    import re

    from kzguard.base.errors import CommandError

    if runner is None:  # no command may run here: trust the package name
        return False
    try:
        listing = runner.run(["dpkg-deb", "--info", deb, "md5sums"]).stdout
    except (CommandError, OSError, ValueError):
        return False  # no md5sums member, no dpkg-deb, a NUL in the name: trust the name
    wanted = re.compile(rf"lib/modules/{re.escape(release)}/kernel/zfs/zfs\.ko(\.\w+)?$", re.M)
    return wanted.search(listing) is None


# --- holds ---------------------------------------------------------------------------------


def hold(ctx: "Context", decision: "Decision", tx: "Transaction") -> list[str]:
    """Pin the held kernels (or the ZFS upgrade that breaks an installed kernel) for apt."""
    from kzguard.actions import apt_hold

    runner = ctx.runner
    pins = apt_hold.pins_for(decision, tx)
    apt_hold.add(ctx.root, runner, pins)
    lines = [f"kzguard: {apt_hold.describe(pin, dry_run=runner.dry_run)}" for pin in pins]
    lines.append(
        "kzguard: apt had already chosen its packages when kzguard ran, so this run is refused; "
        f"run `{DEFAULT_COMMAND}` again: apt now keeps the pinned packages back by itself and "
        "installs the rest"
    )
    lines.append(
        "kzguard: a later apt run lifts the pin once the kernel is supported; to install it "
        f"anyway, delete its stanza from {apt_hold.PREFERENCES} first, then `kzguard allow`"
    )
    return lines


def maintain(ctx: "Context", hook_input: "HookInput") -> list[str]:
    """Lift kzguard's pins that this host no longer needs (one ``stat`` when there are none)."""
    if not ctx.root.exists(PINS):
        return []
    from kzguard.actions import apt_hold

    lifted = lift_unneeded(ctx, hook_input.transaction)
    return [
        f"kzguard: {apt_hold.describe(pin, lifted=True, dry_run=ctx.dry_run)}" for pin in lifted
    ]


def lift_unneeded(ctx: "Context", tx: "Transaction") -> "list[Pin]":
    """Remove the holds no longer needed with the ZFS this transaction leaves (all of them
    when the policy is not ``hold`` any more). ``pin`` stanzas are kzguard's pins, lifted by
    :mod:`kzguard.actions.pin`, never here."""
    from kzguard.actions import apt_hold

    pins = [p for p in apt_hold.read(ctx.root)[0] if p.kind != apt_hold.PIN]
    if not pins:
        return []
    if ctx.config.on_unsupported_kernel == "hold":
        host = ctx.host
        pins = [p for p in pins if not hold_needed(host, ctx.config, p, tx)]
    return apt_hold.remove(ctx.root, ctx.runner, [p.key for p in pins])


def hold_needed(host: "Host", config: "Config", pin: "Pin", tx: "Transaction") -> bool:
    """Whether ``pin`` still keeps back something that would not load ZFS (the judge says)."""
    from kzguard.actions import apt_hold
    from kzguard.judge.holds import kernel_hold_needed, zfs_hold_needed

    if pin.kind == apt_hold.ZFS:  # the kernels that stay, against the pinned ZFS
        return zfs_hold_needed(host, config, pin.subject, tx)
    return kernel_hold_needed(host, config, pin.release, pin.codes, tx)


class Apt(Manager):
    """apt and dpkg: the Pre-Install-Pkgs hook, holds and pins as APT preferences stanzas."""

    name = MANAGER
    markers = ("/var/lib/dpkg/status",)
    caches = ("/var/lib/apt/lists",)
    pending_facts = "kzguard.facts.pending_apt"
    adopts = True

    def read(self, stdin: "TextIO", ctx: "Context") -> "HookInput":
        return read(stdin, ctx.runner)

    def hold(self, ctx: "Context", decision: "Decision", transaction: "Transaction") -> list[str]:
        return hold(ctx, decision, transaction)

    def maintain(self, ctx: "Context", hook_input: "HookInput") -> list[str]:
        return maintain(ctx, hook_input)

    def pin(self, ctx: "Context", release: str, codes: tuple[str, ...]) -> list[str]:
        from kzguard.actions import apt_hold

        stanza = apt_hold.release_pin(release, codes)
        if not apt_hold.add(ctx.root, ctx.runner, [stanza], record=False):
            return []
        names = ", ".join(stanza.packages[:2])
        verb = "would pin" if ctx.dry_run else "pinned"
        return [
            f"kzguard: apt: {verb} the packages of {release} ({names}, ...) with "
            f"Pin-Priority -1 in {apt_hold.PREFERENCES}"
        ]

    def unpin(self, ctx: "Context", release: str) -> list[str]:
        from kzguard.actions import apt_hold

        stanza = apt_hold.release_pin(release)
        if not apt_hold.remove(ctx.root, ctx.runner, [stanza.key], record=False):
            return []
        return [f"kzguard: apt: {apt_hold.describe(stanza, lifted=True, dry_run=ctx.dry_run)}"]

    def pinned(self, root: "Root") -> "dict[str, PinForm]":
        from kzguard.actions import apt_hold

        stanzas, _ = apt_hold.read(root)
        return {
            p.subject: PinForm(p.subject, p.since, p.codes)
            for p in stanzas
            if p.kind == apt_hold.PIN
        }

    def cleanup(self, ctx: "Context") -> list[str]:
        from kzguard.actions import apt_hold

        pins, _ = apt_hold.read(ctx.root)
        if not pins:
            return []
        gone = apt_hold.remove(ctx.root, ctx.runner, [p.key for p in pins], record=False)
        verb = "would remove" if ctx.dry_run else "removed"
        return [f"{verb} APT pin {p.key} ({apt_hold.PREFERENCES})" for p in gone]


ADAPTER = Apt()
