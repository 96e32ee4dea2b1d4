"""Gather every fact about a root into one read-only :class:`Host` (no decisions here)."""

from __future__ import annotations

import posixpath

from kzguard import distros
from kzguard.base.errors import FactError
from kzguard.base.record import Record
from kzguard.distros.base import DKMS, KMOD, NONE, PACKAGE, PREBUILT, Distro
from kzguard.facts import dkms as dkms_facts
from kzguard.facts.bootloader import BootState, read_boot
from kzguard.facts.dkms import BROKEN
from kzguard.facts.kernels import InstalledKernel, Probe, read_installed
from kzguard.facts.mounts import root_dataset
from kzguard.facts.osrelease import OsRelease, read_os_release, read_running_release
from kzguard.facts.packages import PendingKernel, pending_kernels
from kzguard.facts.secureboot import (
    Certificate,
    SecureBootState,
    enrolled_certificates,
    secure_boot_state,
)
from kzguard.facts.zfs import ZfsSource, newest_first, read_sources, release_table
from kzguard.root import Root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Optional

    from kzguard.config import Config
    from kzguard.root import Runner

ZFS_MODULES = ("zfs", "spl")
PROXMOX_MARKERS = ("/etc/pve", "/usr/share/doc/pve-manager", "/usr/share/doc/proxmox-ve")


class Host(Record):
    """What kzguard knows about one root."""

    root: str
    os: OsRelease
    family: str
    distro: Distro
    running: Optional[str]
    installed: tuple[InstalledKernel, ...]
    pending: tuple[PendingKernel, ...]
    zfs_sources: tuple[ZfsSource, ...]
    dkms: tuple[dkms_facts.DkmsEntry, ...]
    delivery: str
    guarded: tuple[str, ...]
    problems: tuple[str, ...] = ()
    secure_boot: SecureBootState = SecureBootState(efi=False)
    signatures_required: bool = False
    certificates: Optional[tuple[Certificate, ...]] = None  # None: signatures not verified
    root_dataset: Optional[str] = None  # the ZFS dataset mounted at /, if any
    boot: Optional[BootState] = None  # the bootloader's entries, default and next boot
    notes: tuple[str, ...] = ()  # facts worth saying that change no verdict
    unreadable: tuple[tuple[str, str], ...] = ()  # (path, why) of module roots not readable
    # the built-in OpenZFS release table (version -> Linux min, max), read with the facts
    release_table: tuple[tuple[str, tuple[str, str]], ...] = ()

    def installed_kernel(self, release: str) -> Optional[InstalledKernel]:
        for kernel in self.installed:
            if kernel.release == release:
                return kernel
        return None

    def dkms_versions(self, module: str = "zfs") -> list[str]:
        return dkms_facts.versions(list(self.dkms), module)

    @property
    def dkms_broken(self) -> bool:
        """ZFS comes from DKMS and every registration of it is broken: nothing can be built."""
        zfs = [e for e in self.dkms if e.module == "zfs"]
        return self.delivery == DKMS and bool(zfs) and all(e.state == BROKEN for e in zfs)

    def module_versions(self, modules: Sequence[str] = ZFS_MODULES) -> list[str]:
        """Versions of the named modules found in installed kernels, newest first."""
        return newest_first(
            m.version
            for k in self.installed
            for name in modules
            for m in [k.module(name)]
            if m is not None and m.version
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "root": self.root,
            "os": self.os.to_dict(),
            "family": self.family,
            "running_kernel": self.running,
            "installed_kernels": [k.release for k in self.installed],
            "pending_kernels": [p.to_dict() for p in self.pending],
            "zfs": {
                "delivery": self.delivery,
                "sources": [s.to_dict() for s in self.zfs_sources],
                "dkms_versions": self.dkms_versions(),
                "module_versions": self.module_versions(),
            },
            "dkms": [e.to_dict() for e in self.dkms],
            "guarded_modules": list(self.guarded),
            "secure_boot": {
                **self.secure_boot.to_dict(),
                "enforcing": self.secure_boot.enforcing,
                "signatures_required": self.signatures_required,
            },
            "enrolled_certificates": (
                [c.to_dict() for c in self.certificates] if self.certificates is not None else None
            ),
            "root_dataset": self.root_dataset,
            "boot": self.boot.to_dict() if self.boot else None,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "unreadable": [{"path": p, "error": e} for p, e in self.unreadable],
        }


def detect_family(root: Root, os_release: OsRelease, kernels: Sequence[str]) -> str:
    """The distro family; Proxmox VE says ID=debian, so look for its own marks too."""
    family = distros.family_for(os_release.id, os_release.id_like)
    if family == "debian" and (
        any(_exists(root, p) for p in PROXMOX_MARKERS) or any(k.endswith("-pve") for k in kernels)
    ):
        return "proxmox"
    return family


def _exists(root: Root, inner: str) -> bool:
    """Whether a marker file is there; one behind a link loop is not."""
    try:
        return root.exists(inner)
    except FactError:
        return False


_KERNEL_PACKAGES = ("linux", "proxmox-kernel", "pve-kernel", "kernel")


def detect_delivery(
    distro: Distro,
    sources: Sequence[ZfsSource],
    dkms: Sequence[dkms_facts.DkmsEntry],
    installed: Sequence[InstalledKernel],
    autoregistered: bool = False,
) -> str:
    """How zfs reaches a kernel on this host, from evidence: who owns the module files
    modprobe would load, and DKMS's registrations. A ``/usr/src/zfs-*`` that no DKMS
    registration points at changes nothing, unless the distro's DKMS hook builds every
    source it finds (``autoregistered``)."""
    modules = [m for k in installed for n in ZFS_MODULES for m in [k.module(n)] if m is not None]
    registered = [e for e in dkms if e.module in ZFS_MODULES]
    built_by_dkms = any(e.state in (dkms_facts.BUILT, dkms_facts.INSTALLED) for e in registered)
    owned = [m for m in modules if m.owner is not None]
    if owned and not built_by_dkms:
        if any(m.kabi_tracked for m in modules) or any(
            m.owner.package.startswith("kmod-") for m in owned if m.owner
        ):
            return KMOD
        if any(_kernel_package(m.owner.package) for m in owned if m.owner):
            return PREBUILT
        return PACKAGE
    if registered or (autoregistered and any(s.version for s in sources)):
        return DKMS
    if not modules:
        return NONE if distro.zfs_delivery != PREBUILT else PREBUILT
    if any(m.kabi_tracked for m in modules) or distro.zfs_delivery == KMOD:
        return KMOD
    if distro.zfs_delivery == PREBUILT or all(m.location.startswith("kernel") for m in modules):
        return PREBUILT
    return PACKAGE


def _kernel_package(package: str) -> bool:
    """A kernel's own package (the module ships with the kernel), not a ZFS package."""
    return package.startswith(_KERNEL_PACKAGES) and "zfs" not in package


def delivery_notes(
    sources: Sequence[ZfsSource],
    dkms: Sequence[dkms_facts.DkmsEntry],
    installed: Sequence[InstalledKernel],
    delivery: str,
    autoregistered: bool = False,
) -> list[str]:
    """What an admin should know about the evidence that did not decide the delivery."""
    notes = []
    registered = {(e.module, e.version) for e in dkms}
    for source in () if autoregistered else sources:
        if source.version and ("zfs", source.version) not in registered:
            notes.append(
                f"{posixpath.dirname(source.path)} is not registered with DKMS (no "
                f"/var/lib/dkms/zfs/{source.version}): it builds nothing and changes no verdict"
            )
    owners = {
        m.owner.package
        for k in installed
        for n in ZFS_MODULES
        for m in [k.module(n)]
        if m is not None and m.owner is not None
    }
    if delivery != DKMS and any(e.module == "zfs" for e in dkms):
        who = ", ".join(sorted(owners)) or "the installed modules"
        notes.append(f"DKMS has zfs registered but built nothing here; zfs comes from {who}")
    for kernel in installed:
        for name in ZFS_MODULES:
            module = kernel.module(name)
            if module is not None and module.ambiguous:
                notes.append(
                    f"{kernel.release}: more than one {name} module of the same depmod priority "
                    f"and no modules.dep; judged {module.path} (run depmod -a {kernel.release})"
                )
    return notes


def _with_owners(
    root: Root, installed: list[InstalledKernel]
) -> tuple[list[InstalledKernel], list[str]]:
    """The kernels with each guarded module's owning package filled in."""
    from kzguard.facts.ownership import owners

    paths = [m.link_target or m.path for k in installed for _, m in k.modules if m is not None]
    found, problems = owners(root, paths, [k.release for k in installed])
    if not found:
        return installed, problems
    out = []
    for kernel in installed:
        modules = tuple(
            (name, m._replace(owner=found.get(m.link_target or m.path)) if m else None)
            for name, m in kernel.modules
        )
        out.append(kernel._replace(modules=modules))
    return out, problems


def gather(
    root: Root,
    modules: Sequence[str] = ZFS_MODULES,
    *,
    require_signature: str = "auto",
    trusted_certificates: Sequence[str] = (),
    verify_signatures: bool = False,
    runner: Optional[Runner] = None,
) -> Host:
    """Read every fact kzguard judges by from ``root``; never changes anything.

    Module signatures are verified (cryptographically, against the MOK list and
    ``trusted_certificates``) when they are required (``require_signature`` ``always``, or
    ``auto`` under an enforcing Secure Boot) or asked for; otherwise only their presence is
    noted. Initramfs images are opened only where the root file system is on ZFS. The
    bootloader is read from files; ``runner`` runs ``zfs get`` where ZFSBootMenu boots.
    """
    os_release = read_os_release(root)
    guarded = tuple(dict.fromkeys(modules))
    base_distro = distros.distro_for(distros.family_for(os_release.id, os_release.id_like))
    problems: list[str] = []
    boot = secure_boot_state(root)
    problems += list(boot.problems)
    required = require_signature == "always" or (require_signature == "auto" and boot.enforcing)
    certificates: Optional[tuple[Certificate, ...]] = None
    if required or verify_signatures:
        found, cert_problems = enrolled_certificates(root, trusted_certificates)
        certificates = tuple(found)
        problems += cert_problems
    dataset = root_dataset(root)
    probe = Probe(certificates=certificates, initramfs=dataset is not None, runner=runner)
    everything = read_installed(root, base_distro.module_roots, guarded, probe)
    installed = []
    unreadable_dirs = []
    for kernel in everything:  # one pass (``k not in installed`` compared records: n squared)
        if kernel.error is None or kernel.release[:1].isdigit():
            installed.append(kernel)
        elif kernel.error:  # an equal record would have been kept above: never both
            unreadable_dirs.append((kernel.modules_dir, kernel.error))
    unreadable = tuple(unreadable_dirs)
    installed, owner_problems = _with_owners(root, installed)
    problems += owner_problems
    releases = [k.release for k in installed]
    family = detect_family(root, os_release, releases)
    distro = distros.distro_for(family)
    sources = read_sources(root)
    problems += [f"{s.path}: {s.error}" for s in sources if s.error]
    dkms = dkms_facts.read_tree(root, os_release=os_release)
    pending, pending_problems = pending_kernels(root, releases)
    problems += pending_problems
    bootloader = read_boot(root, runner)  # its problems stay in boot.problems
    auto = any(_exists(root, p) for p in distro.dkms_autoregister)
    delivery = detect_delivery(distro, sources, dkms, installed, auto)
    return Host(
        root=root.top,  # str(root.path) without importing pathlib
        os=os_release,
        family=family,
        distro=distro,
        running=read_running_release(root),
        installed=tuple(installed),
        pending=tuple(p for p in pending if p.release not in releases),
        zfs_sources=tuple(sources),
        dkms=tuple(dkms),
        delivery=delivery,
        guarded=guarded,
        problems=tuple(problems),
        secure_boot=boot,
        signatures_required=required,
        certificates=certificates,
        root_dataset=dataset,
        boot=bootloader,
        notes=tuple(delivery_notes(sources, dkms, installed, delivery, auto)),
        unreadable=unreadable,
        release_table=tuple(release_table().items()),
    )


def gather_for(
    root: Root,
    config: Config,
    *,
    verify_signatures: bool = False,
    runner: Optional[Runner] = None,
) -> Host:
    """:func:`gather` with what the configuration says about modules and signatures."""
    return gather(
        root,
        config.modules,
        require_signature=config.require_signature,
        trusted_certificates=config.trusted_certificates,
        verify_signatures=verify_signatures,
        runner=runner,
    )
