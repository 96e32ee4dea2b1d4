"""The policy: facts (+ a transaction) -> a verdict per kernel, with reasons. No I/O here."""

from __future__ import annotations

from kzguard.base.errors import EXIT_SAFE, EXIT_UNSAFE
from kzguard.base.kernelrelease import KernelRelease, sort_key, try_parse_release
from kzguard.base.record import Record
from kzguard.distros.base import DKMS, NONE, PREBUILT
from kzguard.facts import dkms as dkms_facts
from kzguard.facts.host import ZFS_MODULES, Host
from kzguard.facts.kernels import InstalledKernel, ModuleFile
from kzguard.facts.zfs import LinuxRange, newest_first, normalize_version, range_for
from kzguard.judge.reasons import SAFE, Reason, verdict_of

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence
    from typing import Optional

    from kzguard.base.transaction import Transaction

RUNNING, INSTALLED, PENDING, TRANSACTION, REQUESTED = (
    "running",
    "installed",
    "pending",
    "transaction",
    "requested",
)


class KernelVerdict(Record):
    """The verdict on one kernel release."""

    release: str
    upstream: Optional[str]
    verdict: str
    reasons: tuple[Reason, ...]
    states: tuple[str, ...]
    modules: tuple[tuple[str, Optional[ModuleFile]], ...] = ()
    zfs_version: Optional[str] = None
    zfs_range: Optional[LinuxRange] = None
    notes: tuple[str, ...] = ()

    @property
    def safe(self) -> bool:
        return self.verdict == SAFE

    def to_dict(self) -> dict[str, object]:
        modules = {name: (m.to_dict() if m else None) for name, m in self.modules}
        return {
            "release": self.release,
            "upstream": self.upstream,
            "verdict": self.verdict,
            "reasons": [r.code for r in self.reasons],
            "details": [r.to_dict() for r in self.reasons],
            "state": list(self.states),
            "module": modules.get("zfs"),
            "modules": modules,
            "zfs_version": self.zfs_version,
            "zfs_range": self.zfs_range.to_dict() if self.zfs_range else None,
            "notes": list(self.notes),
        }


class NextBoot(Record):
    release: str
    safe: bool
    verdict: str
    source: str

    def to_dict(self) -> dict[str, object]:
        return {
            "release": self.release,
            "safe": self.safe,
            "verdict": self.verdict,
            "source": self.source,
        }


class Report(Record):
    """Every verdict of one run, the host they were judged on, and the next boot."""

    kernels: tuple[KernelVerdict, ...]
    host: Host
    next_boot: Optional[NextBoot]
    transaction: Optional[Transaction] = None
    zfs_override: Optional[str] = None
    host_reasons: tuple[Reason, ...] = ()  # what kept kzguard from seeing the host's kernels

    @property
    def exit_code(self) -> int:
        """0 when every judged kernel is safe, 1 when any is unsafe or unknown, or when
        kzguard could not see the kernels it should judge (nothing seen is never safe)."""
        if self.host_reasons:
            return EXIT_UNSAFE
        return EXIT_SAFE if all(k.safe for k in self.kernels) else EXIT_UNSAFE

    def to_dict(self) -> dict[str, object]:
        return {
            "kernels": [k.to_dict() for k in self.kernels],
            "host": self.host.to_dict(),
            "next_boot": self.next_boot.to_dict() if self.next_boot else None,
            "transaction": self.transaction.to_dict() if self.transaction else None,
            "zfs_override": self.zfs_override,
            "host_reasons": [r.to_dict() for r in self.host_reasons],
        }


def judge(
    host: Host,
    zfs_ranges: Mapping[str, tuple[str, str]],
    *,
    kernels: Sequence[str] = (),
    zfs_version: Optional[str] = None,
    transaction: Optional[Transaction] = None,
    ranges_origin: str = "config",
) -> Report:
    """Judge the named kernels (default: every installed, pending and transaction kernel)."""
    override = zfs_version or (transaction.zfs_version if transaction else None)
    judge_one = _Judge(host, zfs_ranges, ranges_origin, override, transaction)
    targets = _targets(host, kernels, transaction)
    verdicts = tuple(judge_one(release, states) for release, states in targets.items())
    return Report(
        verdicts,
        host,
        _next_boot(host, verdicts, judge_one, transaction),
        transaction,
        override,
        _blind(host, requested=bool(kernels)),
    )


def _blind(host: Host, *, requested: bool) -> tuple[Reason, ...]:
    """Host-level reasons: a module root that cannot be read, or no kernel found at all."""
    reasons = [
        Reason(
            "kernel-unreadable", f"{error}: its kernels cannot be judged", details={"path": path}
        )
        for path, error in host.unreadable
    ]
    if not host.installed and not requested and not reasons:
        roots = ", ".join(host.distro.module_roots)
        reasons.append(
            Reason(
                "kernel-unreadable",
                f"no kernel found under {roots}: nothing was judged, and a kernel not seen is "
                "never safe",
            )
        )
    return tuple(reasons)


def _targets(
    host: Host, requested: Sequence[str], transaction: Optional[Transaction]
) -> dict[str, tuple[str, ...]]:
    states: dict[str, list[str]] = {}

    def add(releases: Iterable[str], state: str) -> None:
        for release in releases:
            states.setdefault(release, [])
            if state not in states[release]:
                states[release].append(state)

    removed = set(transaction.remove) if transaction else set()
    installed = [k.release for k in host.installed if k.release not in removed]
    if requested:
        add(requested, REQUESTED)
    else:
        add(installed, INSTALLED)
        if host.running and host.running not in installed and (host.unreadable or not installed):
            add([host.running], RUNNING)  # its modules cannot be seen: judged unknown below
        add((p.release for p in host.pending), PENDING)
        add(transaction.install if transaction else (), TRANSACTION)
    for release in states:
        if release == host.running and RUNNING not in states[release]:
            states[release].insert(0, RUNNING)
        if release in installed and INSTALLED not in states[release]:
            states[release].append(INSTALLED)
        if any(p.release == release for p in host.pending) and PENDING not in states[release]:
            states[release].append(PENDING)
    ordered = sorted(states, key=sort_key)
    return {release: tuple(states[release]) for release in ordered}


def _next_boot(
    host: Host,
    verdicts: Sequence[KernelVerdict],
    judge_one: _Judge,
    transaction: Optional[Transaction],
) -> Optional[NextBoot]:
    """The kernel the next boot will use.

    The bootloader's own next entry (``host.boot.next``) when it names a kernel and no
    transaction installs a kernel or removes that one; ``source`` then names the loader and
    the fact (``grub: grubenv saved_entry``). Otherwise the newest installed kernel after the
    transaction (``newest-installed``): what GRUB, grubby and systemd-boot pick once a new
    kernel is installed, and the fallback wherever the bootloader could not be read.
    """
    removed = set(transaction.remove) if transaction else set()
    boot = host.boot
    chosen = boot.next.kernel if boot is not None and boot.next is not None else None
    if boot and chosen and not (transaction and transaction.install) and chosen not in removed:
        release, source = chosen, f"{boot.loader}: {boot.source}"
    else:
        candidates = [k.release for k in host.installed if k.release not in removed]
        candidates += list(transaction.install) if transaction else []
        if not candidates:
            return None
        release, source = max(candidates, key=sort_key), "newest-installed"
    verdict = next((v for v in verdicts if v.release == release), None)
    if verdict is None:
        verdict = judge_one(release, (INSTALLED,))
    return NextBoot(release, verdict.safe, verdict.verdict, source)


class _Judge:
    """Judges one release at a time against fixed facts."""

    def __init__(
        self,
        host: Host,
        zfs_ranges: Mapping[str, tuple[str, str]],
        ranges_origin: str,
        override: Optional[str],
        transaction: Optional[Transaction],
    ):
        self.host = host
        # indexes built once, so that judging n kernels takes time linear in n
        self.kernels: dict[str, InstalledKernel] = {}
        for kernel in host.installed:
            self.kernels.setdefault(kernel.release, kernel)  # the first, as installed_kernel
        self.dkms_entries: dict[tuple[str, Optional[str]], list[dkms_facts.DkmsEntry]] = {}
        for entry in host.dkms:
            self.dkms_entries.setdefault((entry.module, entry.kernel), []).append(entry)
        self.registered = frozenset(e.module for e in host.dkms)
        self.dkms_broken = host.dkms_broken
        self.table = dict(host.release_table)
        self.zfs_ranges = zfs_ranges
        self.ranges_origin = ranges_origin
        self.override = normalize_version(override) if override else None
        self.removed = set(transaction.remove) if transaction else set()
        self.no_module = set(transaction.no_module) if transaction else set()
        # METAs read from the transaction's package files: ahead of the host's and the table
        self.tx_sources = list(getattr(transaction, "zfs_sources", ())) if transaction else []

    def __call__(self, release: str, states: tuple[str, ...]) -> KernelVerdict:
        parsed = try_parse_release(release)
        if parsed is None:
            reason = Reason("release-unparsable", f"{release!r} is not a kernel release")
            return KernelVerdict(release, None, verdict_of((reason,)), (reason,), states)
        kernel = None if release in self.removed else self.kernels.get(release)
        reasons: list[Reason] = []
        notes: list[str] = []
        unseen = self._unseen(release, kernel)
        if unseen is not None:
            return KernelVerdict(
                release, parsed.upstream_str, verdict_of((unseen,)), (unseen,), states
            )
        version, linux_range = self._zfs(parsed, kernel, reasons, notes)
        modules = kernel.modules if kernel else ()
        if kernel is not None and self.override and self.host.delivery != PREBUILT:
            notes.append(
                f"modules are rebuilt for ZFS {self.override}; they are checked after install"
            )
        elif kernel is not None:
            reasons += self._module_reasons(kernel, notes)
        elif release in self.no_module and self.host.delivery == PREBUILT:
            message = f"no package in the transaction ships a zfs module for {release}"
            reasons.append(Reason("module-missing", message, "zfs"))
        else:
            notes.append("not installed yet: judged by range; modules are checked after install")
        final = tuple(reasons)
        return KernelVerdict(
            release,
            parsed.upstream_str,
            verdict_of(final),
            final,
            states,
            modules,
            version,
            linux_range,
            tuple(notes),
        )

    def _unseen(self, release: str, kernel: Optional[InstalledKernel]) -> Optional[Reason]:
        """``kernel-unreadable`` for a kernel whose modules kzguard cannot see."""
        if kernel is not None and kernel.error:
            return Reason("kernel-unreadable", kernel.error, details={"path": kernel.modules_dir})
        host = self.host
        if kernel is None and release == host.running and (host.unreadable or not host.installed):
            if any(p.release == release for p in host.pending):
                return None
            where = "; ".join(e for _, e in host.unreadable) or (
                f"no modules directory under {', '.join(host.distro.module_roots)}"
            )
            return Reason(
                "kernel-unreadable",
                f"the running kernel {release} is not visible: {where}",
                details={"running": release},
            )
        return None

    def _zfs(
        self,
        parsed: KernelRelease,
        kernel: Optional[InstalledKernel],
        reasons: list[Reason],
        notes: list[str],
    ) -> tuple[Optional[str], Optional[LinuxRange]]:
        """The ZFS version this kernel gets and its range check."""
        delivery = self.host.delivery
        if delivery == PREBUILT:
            notes.append("the zfs module ships with the kernel package: judged by the module")
            return None, None
        if delivery == NONE and not self.override:
            reasons.append(Reason("zfs-not-found", "no ZFS source, package or module found"))
            return None, None
        if self.dkms_broken and not self.override and kernel is None:
            reasons.append(_dkms_broken(self.host, "a new kernel"))
            return None, None
        version = self.override or self._zfs_version(kernel)
        if version is None:
            reasons.append(
                Reason("zfs-version-unknown", "cannot tell which ZFS version this kernel gets")
            )
            return None, None
        sources = [*self.tx_sources, *self.host.zfs_sources]
        found = range_for(version, sources, self.zfs_ranges, self.ranges_origin, self.table)
        if found is None:
            reasons.append(
                Reason(
                    "zfs-version-unknown",
                    f"ZFS {version} is in no META, built-in table or config zfs_ranges",
                    details={"zfs_version": version},
                )
            )
            return version, None
        code = found.judge(parsed)
        if code:
            reasons.append(Reason(code, _range_message(code, parsed, found), "zfs"))
        return version, found

    def _zfs_version(self, kernel: Optional[InstalledKernel]) -> Optional[str]:
        """The ZFS version on disk for an installed kernel, else what a new one would get."""
        for name in ZFS_MODULES:
            module = kernel.module(name) if kernel else None
            if module is not None and module.version:
                return normalize_version(module.version)
        host = self.host
        candidates: list[str] = []
        if host.delivery == DKMS:
            candidates = host.dkms_versions("zfs") or [
                s.version for s in host.zfs_sources if s.version
            ]
        else:
            candidates = host.module_versions()
        newest = newest_first(normalize_version(v) for v in candidates)
        return newest[0] if newest else None

    def _module_reasons(self, kernel: InstalledKernel, notes: list[str]) -> list[Reason]:
        reasons: list[Reason] = []
        dkms_checked = set()
        for name in self.host.guarded:
            if name in ZFS_MODULES and self.host.delivery == NONE:
                continue
            module = kernel.module(name)
            reasons += _file_reasons(kernel, name, module, notes)
            if module is not None and not module.error:
                reasons += _trust_reasons(self.host, name, module)
            package = _dkms_package(self.host, name, self.registered)
            if package and self.dkms_broken and name in ZFS_MODULES:
                if module is None and "dkms-broken" not in {r.code for r in reasons}:
                    reasons.append(_dkms_broken(self.host, kernel.release))
            elif package and package not in dkms_checked:
                dkms_checked.add(package)
                entries = self.dkms_entries.get((package, kernel.release), [])
                entry = dkms_facts.find(entries, package, kernel.release)
                if entry is None or entry.state != "installed":
                    state = entry.state if entry else "not built"
                    reasons.append(
                        Reason(
                            "dkms-not-installed",
                            f"DKMS {package} for {kernel.release}: {state}",
                            name,
                            {"dkms_state": state},
                        )
                    )
        if self.host.root_dataset is not None and kernel.initramfs is not None:
            reasons += _initramfs_reasons(self.host.root_dataset, kernel)
        return reasons


def _dkms_broken(host: Host, target: str) -> Reason:
    broken = [f"zfs/{e.version}" for e in host.dkms if e.module == "zfs"]
    return Reason(
        "dkms-broken",
        f"DKMS {', '.join(broken)} is broken (its source or dkms.conf is gone): DKMS cannot "
        f"build zfs for {target}",
        "zfs",
        {"dkms": broken},
    )


def _file_reasons(
    kernel: InstalledKernel, name: str, module: Optional[ModuleFile], notes: list[str]
) -> list[Reason]:
    if module is None:
        how = (
            "modules.dep lists none and none is on disk"
            if kernel.modules_dep is None
            else f"modules.dep {kernel.modules_dep}, and depmod's search order finds none"
        )
        return [
            Reason(
                "module-missing",
                f"no {name}.ko for {kernel.release} under {kernel.modules_dir} ({how})",
                name,
                {"searched": kernel.modules_dir, "modules_dep": kernel.modules_dep or "read"},
            )
        ]
    if module.error:
        return [Reason("module-unreadable", f"{module.path}: {module.error}", name)]
    reasons = []
    if module.indexed is False:
        reasons.append(
            Reason(
                "module-not-indexed",
                f"{module.path} is on disk but {kernel.modules_dir}/modules.dep does not list "
                f"it: modprobe {name} will fail until `depmod -a {kernel.release}` runs",
                name,
                {"path": module.path},
            )
        )
    for dep in module.missing_deps:
        reasons.append(
            Reason(
                "module-missing",
                f"{name} needs {dep} (modules.dep) and it is not on disk",
                name,
                {"dependency": dep},
            )
        )
    return reasons + _vermagic_reasons(kernel, name, module, notes)


def _vermagic_reasons(
    kernel: InstalledKernel, name: str, module: ModuleFile, notes: list[str]
) -> list[Reason]:
    built_for = module.vermagic_release
    if built_for == kernel.release:
        return []
    if module.kabi_tracked:
        notes.append(f"{name}: kABI-tracked module built for {built_for}, linked by weak-modules")
        return []
    return [
        Reason(
            "vermagic-mismatch",
            f"{module.path} was built for {built_for or 'no vermagic'}",
            name,
            {"vermagic_release": built_for},
        )
    ]


_SIGNATURE_CODES = {
    "missing": "signature-missing",
    "not-enrolled": "signer-not-enrolled",
    "invalid": "signature-invalid",
    "malformed": "signature-invalid",
}


def _trust_reasons(host: Host, name: str, module: ModuleFile) -> list[Reason]:
    """Will the kernel accept this module: its signature under Secure Boot, its kABI."""
    reasons = []
    check = module.signature
    if host.signatures_required and check is not None and check.status in _SIGNATURE_CODES:
        details = {"signature": check.status, "signer": None, "sig_key": None}
        if check.signer is not None:  # plain strings: details go out as JSON and into doctor
            who = check.signer
            details["signer"] = who.issuer or (f"key id {who.key_id}" if who.key_id else None)
            details["sig_key"] = who.sig_key
        reasons.append(Reason(_SIGNATURE_CODES[check.status], check.message, name, details))
    kabi = module.kabi
    if module.kabi_tracked and kabi is not None and kabi.status != "compatible":
        if kabi.status == "incompatible":
            details = {k: v for k, v in kabi.to_dict().items() if k in _KABI_DETAILS}
            reasons.append(Reason("kabi-incompatible", kabi.message, name, details))
        else:
            reasons.append(Reason("kabi-unknown", kabi.message, name, {"source": kabi.source}))
    return reasons


_KABI_DETAILS = ("missing", "changed", "gpl_only", "source")


def _initramfs_reasons(dataset: str, kernel: InstalledKernel) -> list[Reason]:
    """The root is on ZFS: the kernel's initramfs must be able to load zfs to mount it."""
    image = kernel.initramfs
    assert image is not None
    why = f"the root file system is on ZFS ({dataset})"
    if image.path is None:
        return [Reason("initramfs-missing-module", f"{why} and {kernel.release} has no initramfs")]
    if image.error:
        return [Reason("initramfs-unreadable", f"{image.path}: {image.error}")]
    if not image.has_zfs:
        message = f"{why} and {image.path} holds no zfs module"
        return [Reason("initramfs-missing-module", message, "zfs", {"image": image.path})]
    return []


def _dkms_package(
    host: Host, name: str, registered: Optional[Collection[str]] = None
) -> Optional[str]:
    """The DKMS package that builds kernel module ``name``, when DKMS manages it here
    (``registered``: the modules DKMS has, when the caller knows them)."""
    if registered is None:
        registered = {e.module for e in host.dkms}
    if name in ZFS_MODULES:
        if host.delivery != DKMS:
            return None
        return "zfs" if "zfs" in registered or not registered else name
    return name if name in registered else None


def _range_message(code: str, parsed: KernelRelease, found: LinuxRange) -> str:
    series = f"{parsed.major}.{parsed.minor}"
    if code == "kernel-too-new":
        return (
            f"Linux {series} is newer than ZFS {found.zfs_version} supports "
            f"(up to {found.linux_max}, from {found.origin})"
        )
    return (
        f"Linux {parsed.upstream_str} is older than ZFS {found.zfs_version} supports "
        f"(from {found.linux_min}, from {found.origin})"
    )
