"""dnf5: what ``hooks/dnf5/*.actions`` feed ``kzguard hook dnf5``, and holds in versionlock.toml.

dnf5 has no Python plugins; its actions plugin (``libdnf5-plugin-actions``) runs commands at
libdnf5 hooks, once per matching package, with ``${pkg.*}`` and ``${conf.*}`` substituted
(see ``man libdnf5-actions``). The actions file collects one line per kernel or ZFS package
into a private directory and then pipes them, after a small header, into
``kzguard hook dnf5``. The stream (protocol 1)::

    kzguard-dnf5 1                      <- always first
    plugin 1.4.0                        <- ${plugin.version}: the actions plugin's version
    hook goal_resolved                  <- the libdnf5 hook it runs at
    installroot /                       <- ${conf.installroot}: the root kzguard judges
    I kernel-core 6.13.2 200.fc41 x86_64   <- ${pkg.action} ${pkg.name} ${pkg.version}
    U zfs-dkms 2.3.1 1.fc41 noarch         <- ${pkg.release} ${pkg.arch}, one per package
    E zfs-dkms 2.2.7 1.fc41 noarch

Actions ``I`` (install), ``U`` (upgrade), ``D`` (downgrade) and ``R`` (reinstall) bring a
package in; ``E`` (erased: removed, upgraded, downgraded, reinstalled) and ``O`` (obsoleted)
take one out; ``?`` (a reason change) changes nothing. Unknown header keys are ignored.

How much kzguard can do depends on the actions plugin (``docs/dnf5.md``): from version 1.4.0
(dnf5 5.2.11) ``raise_error=1`` makes a non-zero exit stop dnf5 at ``goal_resolved``, before
anything is downloaded. Older versions only log the exit code, so there kzguard keeps
unsupported kernels out with ``/etc/dnf/versionlock.toml`` conditions written before the
goal is resolved (:func:`maintain` at ``repos_configured``, from the cached repodata).

Holds: a plain action cannot drop a package from a resolved goal, so ``on_unsupported_kernel:
hold`` refuses the run and :func:`hold` writes exclude conditions (``evr != <version>-<release>``
on ``kernel``, ``kernel-core``, ``kernel-modules*``, ``kernel-devel*``) into the root's
``/etc/dnf/versionlock.toml``; the same command run again goes on without the kernel.
kzguard's entries carry a ``comment`` starting ``kzguard:`` (``dnf5 versionlock`` keeps it
when it rewrites the file) and are the only ones kzguard ever changes; :func:`maintain` lifts
them once they are no longer needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Optional, TextIO

from kzguard.errors import KzguardError
from kzguard.gate import HookInput
from kzguard.managers.dnf import Package, build_transaction

if TYPE_CHECKING:
    from kzguard.config import Config
    from kzguard.decision import Decision
    from kzguard.root import Root, Runner
    from kzguard.transaction import Transaction

MANAGER = "dnf5"
PROTOCOL = "kzguard-dnf5 1"
RAISE_ERROR_SINCE = (1, 4, 0)  # actions plugin version with raise_error=1 (dnf5 5.2.11)
VERSIONLOCK = "/etc/dnf/versionlock.toml"
MARK = "kzguard:"
INCOMING, OUTGOING, UNCHANGED = "IUDR", "EO", "?"
GATE_HOOKS = ("goal_resolved", "pre_transaction")
UPKEEP_HOOKS = ("repos_configured", "post_transaction")
_HOLDS = re.compile(r"kzguard: holds (?P<releases>[^()]*?)(?: \(|\Z)")
_TABLE = re.compile(r"\s*\[\[\s*packages\s*\]\]\s*(?:#.*)?\Z")


class Dnf5Error(KzguardError):
    """The stream from the actions file or the versionlock file is not what kzguard expects."""

    name = "dnf5"


class Dnf5Input(HookInput):
    """A HookInput with what the actions file says about where it runs."""

    hook: str = "goal_resolved"
    plugin: str = ""  # the actions plugin's version

    @property
    def can_refuse(self) -> bool:
        """Whether a non-zero exit stops dnf5 (``raise_error=1``, actions plugin >= 1.4.0)."""
        return plugin_version(self.plugin) >= RAISE_ERROR_SINCE


def plugin_version(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text)[:3]
    return tuple(int(p) for p in parts) if parts else (0,)


def read(stdin: TextIO) -> Dnf5Input:
    """Parse the stream of protocol 1 (see the module docstring)."""
    header: dict[str, str] = {}
    incoming: list[Package] = []
    outgoing: list[Package] = []
    first = True
    for number, raw in enumerate(stdin, 1):
        line = raw.strip()
        if not line:
            continue
        if first:
            if line != PROTOCOL:
                raise Dnf5Error(f"line {number}: expected {PROTOCOL!r}, got {line!r}")
            first = False
            continue
        key, _, value = line.partition(" ")
        if len(key) > 1:
            header[key] = value.strip()
            continue
        fields = line.split()
        if len(fields) != 5 or key not in INCOMING + OUTGOING + UNCHANGED:
            raise Dnf5Error(
                f"line {number}: expected 'ACTION NAME VERSION RELEASE ARCH', got {line!r}"
            )
        package = Package(*fields[1:])
        if key in INCOMING:
            incoming.append(package)
        elif key in OUTGOING:
            outgoing.append(package)
    if first:
        raise Dnf5Error(f"no input: expected {PROTOCOL!r} on the first line")
    return Dnf5Input(
        build_transaction(incoming, outgoing, MANAGER),
        header.get("installroot") or "/",
        "",
        header.get("hook", "goal_resolved"),
        header.get("plugin", ""),
    )


def hold(root: Root, runner: Runner, decision: Decision, transaction: Transaction) -> list[str]:
    """Write versionlock conditions keeping ``decision.held`` out of the next runs."""
    lock = Versionlock.load(root)
    lines = lock.write(root, runner, sorted({*lock.held(), *decision.held}))
    missing = [r for r in decision.held if r not in lock.holding]
    if missing:
        lines.append(
            f"kzguard: {', '.join(missing)} could not be held back in {VERSIONLOCK}; keep the "
            "current kernel (e.g. `dnf5 upgrade --exclude='kernel*'`) or upgrade ZFS first"
        )
        return lines
    lines.append(
        "kzguard: dnf5 had already resolved the transaction when kzguard ran; from the next run "
        f"on it leaves {', '.join(decision.held)} out: run the same command again to go on "
        "with the rest"
    )
    lines.append(
        f"kzguard: kzguard lifts the hold once the installed ZFS supports it; by hand, delete "
        f"the entries whose comment starts with {MARK!r} from {VERSIONLOCK}"
    )
    return lines


def maintain(
    root_path: str, runner: Runner, hook_input: HookInput, config_path: Optional[str]
) -> list[str]:
    """Keep kzguard's versionlock holds right, at ``repos_configured`` and ``post_transaction``.

    Holds still needed stay; those whose kernel is now supported, installed, let through by
    an admin, or no longer wanted by the policy are lifted. Where dnf5 cannot refuse a
    transaction (actions plugin < 1.4.0), at ``repos_configured`` (before the goal is
    resolved) the kernels pending in the root's dnf caches are judged and the unsupported ones
    held, for ``on_unsupported_kernel`` ``hold`` and ``block`` alike. Returns at once at the
    gate's hooks.
    """
    if not isinstance(hook_input, Dnf5Input) or hook_input.hook not in UPKEEP_HOOKS:
        return []
    from kzguard.root import Root

    root = Root.open(root_path)
    add_pending = hook_input.hook == "repos_configured" and not hook_input.can_refuse
    lock = Versionlock.load(root)
    current = lock.held()
    if not current and not add_pending:
        return []
    from kzguard.config import load_config
    from kzguard.facts.host import gather
    from kzguard.managers.dnf import unsupported

    config = load_config(root, config_path)
    holding = _holds_wanted(config, can_refuse=hook_input.can_refuse)
    wanted: list[str] = []
    if holding:
        host = gather(root, config.modules)
        candidates = set(current)
        if add_pending:
            candidates.update(p.release for p in host.pending)
        wanted = [h.release for h in unsupported(root, candidates, config, host=host)]
    if sorted(wanted) == sorted(current):
        return []
    return lock.write(root, runner, sorted(wanted))


def _holds_wanted(config: Config, *, can_refuse: bool) -> bool:
    policy = config.on_unsupported_kernel
    return policy == "hold" or (policy == "block" and not can_refuse)


# ---- /etc/dnf/versionlock.toml ----------------------------------------------------------


class Versionlock:
    """The root's versionlock file: its text, its parsed entries, kzguard's among them.

    Only kzguard's own entries are ever removed or added; the rest of the text is kept as it
    is (comments included). An entry is kzguard's when its ``comment`` starts with ``kzguard:``.
    """

    def __init__(self, text: str, packages: Sequence[dict[str, Any]]):
        self.text = text
        self.packages = list(packages)
        self.holding: set[str] = set()  # what kzguard holds after write()

    @classmethod
    def load(cls, root: Root) -> Versionlock:
        text = root.read_text_or(VERSIONLOCK)
        if text is None or not text.strip():
            return cls("", [])
        if MARK not in text and "[[" not in text:
            return cls(text, [])
        try:
            data = _toml_loads(text)
        except ValueError as exc:
            raise Dnf5Error(f"{VERSIONLOCK} does not parse: {exc}") from exc
        packages = data.get("packages", [])
        if not isinstance(packages, list):
            raise Dnf5Error(f"{VERSIONLOCK}: 'packages' is not a list of tables")
        return cls(text, packages)

    def held(self) -> list[str]:
        """Kernel releases kzguard holds here."""
        found: dict[str, None] = {}
        for entry in self.packages:
            if _ours(entry):
                match = _HOLDS.match(str(entry.get("comment", "")))
                for release in match["releases"].split(", ") if match else ():
                    if release:
                        found[release] = None
        return list(found)

    def write(self, root: Root, runner: Runner, releases: Sequence[str]) -> list[str]:
        """Replace kzguard's entries with holds on ``releases``; the lines say what changed."""
        from kzguard.managers.dnf import hold_names, split_release

        before = set(self.held())
        text = self._without_ours()
        lines: list[str] = []
        by_flavour: dict[str, list[tuple[str, str]]] = {}
        for release in releases:
            parts = split_release(release)
            if parts is None:
                lines.append(f"kzguard: cannot hold {release}: not an rpm kernel release")
                continue
            version, rel, _arch, flavour = parts
            by_flavour.setdefault(flavour, []).append((release, f"{version}-{rel}"))
        blocks: list[str] = []
        after: set[str] = set()
        for flavour, held in by_flavour.items():
            for name in hold_names(flavour):
                other = self._foreign_overlap(name)
                if other:
                    lines.append(
                        f"kzguard: {VERSIONLOCK} already locks {other!r}: kzguard adds no hold "
                        f"for {name!r} (two entries for one name would undo each other)"
                    )
                    continue
                blocks.append(_entry(name, held))
                after.update(release for release, _evr in held)
        if blocks:
            if not text.strip():
                text = 'version = "1.0"\n'
            text = text if text.endswith("\n") else text + "\n"
            text += "".join(blocks)
        elif text.strip() == 'version = "1.0"':
            text = ""
        self.holding = after
        dry = runner.dry_run
        for release in sorted(after - before):
            verb = "would hold" if dry else "holding"
            lines.append(f"kzguard: {verb} {release} back in {VERSIONLOCK}")
        for release in sorted(before - after):
            verb = "would lift" if dry else "lifted"
            lines.append(f"kzguard: {verb} the hold on {release} in {VERSIONLOCK}")
        if text != self.text and not dry:
            _write(root, text)
        self.text = text
        return lines

    def _without_ours(self) -> str:
        if not any(_ours(p) for p in self.packages):
            return self.text
        lines = self.text.splitlines(keepends=True)
        starts = [i for i, line in enumerate(lines) if _TABLE.match(line)]
        if len(starts) != len(self.packages):
            raise Dnf5Error(
                f"{VERSIONLOCK}: cannot tell its [[packages]] tables apart; left unchanged"
            )
        drop: set[int] = set()
        for index, start in enumerate(starts):
            if _ours(self.packages[index]):
                end = starts[index + 1] if index + 1 < len(starts) else len(lines)
                drop.update(range(start, end))
        return "".join(line for i, line in enumerate(lines) if i not in drop)

    def _foreign_overlap(self, name: str) -> Optional[str]:
        import fnmatch

        for entry in self.packages:
            other = str(entry.get("name", ""))
            if (
                other
                and not _ours(entry)
                and (fnmatch.fnmatchcase(name, other) or fnmatch.fnmatchcase(other, name))
            ):
                return other
        return None


def _ours(entry: Any) -> bool:
    return isinstance(entry, dict) and str(entry.get("comment", "")).startswith(MARK)


def _entry(name: str, held: Iterable[tuple[str, str]]) -> str:
    import json

    held = list(held)
    releases = ", ".join(release for release, _evr in held)
    text = [
        "[[packages]]\n",
        "# kzguard: a kernel the installed ZFS cannot load; kzguard lifts this when not needed\n",
        f"name = {json.dumps(name)}\n",
        f"comment = {json.dumps(f'{MARK} holds {releases} (the installed ZFS cannot load it)')}\n",
    ]
    for _release, evr in held:
        text += [
            "[[packages.conditions]]\n",
            'key = "evr"\n',
            'comparator = "!="\n',
            f"value = {json.dumps(evr)}\n",
        ]
    return "".join(text) + "\n"


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib  # novermin - Python >= 3.11, what every dnf5 distribution ships
    except ImportError:
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError as exc:
            raise Dnf5Error(f"reading {VERSIONLOCK} needs Python 3.11 or tomli") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(str(exc)) from exc


def _write(root: Root, text: str) -> None:
    import contextlib
    import os

    path = root.resolve(VERSIONLOCK).as_posix()
    if not text:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.kzguard-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise Dnf5Error(f"cannot write {path}: {exc.strerror or exc}") from exc
