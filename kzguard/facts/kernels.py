"""Installed kernels (``/lib/modules/*``, ``/usr/lib/modules/*``) and their guarded modules."""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Iterable, Sequence
from functools import partial

from kzguard.errors import FactError
from kzguard.facts.modinfo import COMPRESSION_SUFFIXES, ModInfo, load_module, read_modinfo
from kzguard.facts.signature import read_trailer
from kzguard.record import Record
from kzguard.root import Root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

    from kzguard.facts.kabi import KabiResult
    from kzguard.facts.secureboot import Certificate
    from kzguard.facts.signature import SignatureCheck, SignerFacts

# Where DKMS and packages put out-of-tree modules, in the order depmod prefers them.
MODULE_DIRS = (
    "updates/dkms",
    "updates",
    "extra/zfs",
    "extra",
    "zfs",
    "kernel/zfs",
    "weak-updates/zfs",
    "weak-updates",
)
WEAK_UPDATES = "weak-updates"
# A directory under a modules root is a kernel when one of these is in it.
KERNEL_MARKERS = ("kernel", "vmlinuz", "modules.order", "modules.builtin", "modules.dep")


class ModuleFile(Record):
    """One guarded module found for one kernel, with what kzguard could learn from its bytes."""

    name: str
    path: str  # in-root path
    location: str  # the MODULE_DIRS entry it was found in
    kabi_tracked: bool  # a weak-updates link to a module built for another kernel
    link_target: Optional[str] = None
    modinfo: Optional[ModInfo] = None
    error: Optional[str] = None
    signed: Optional[bool] = None  # an appended signature is present (None: unreadable)
    signature: Optional[SignatureCheck] = None  # when signatures were verified
    kabi: Optional[KabiResult] = None  # for kABI-tracked modules

    @property
    def version(self) -> Optional[str]:
        return self.modinfo.version if self.modinfo else None

    @property
    def vermagic_release(self) -> Optional[str]:
        return self.modinfo.vermagic_release if self.modinfo else None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": self.path,
            "location": self.location,
            "kabi_tracked": self.kabi_tracked,
            "link_target": self.link_target,
            "version": self.version,
            "vermagic": self.modinfo.vermagic if self.modinfo else None,
            "error": self.error,
            "signed": self.signed,
            "signature": self.signature.to_dict() if self.signature else None,
            "kabi": self.kabi.to_dict() if self.kabi else None,
        }


class InitramfsFacts(Record):
    """A kernel's initramfs image and whether the zfs module is in it."""

    path: Optional[str]  # None: no image found
    has_zfs: Optional[bool] = None
    error: Optional[str] = None

    def to_dict(self) -> dict[str, object]:
        return self._asdict()


class InstalledKernel(Record):
    """A kernel with a modules directory, and the guarded modules found for it."""

    release: str
    modules_dir: str
    modules: tuple[tuple[str, Optional[ModuleFile]], ...]
    initramfs: Optional[InitramfsFacts] = None  # looked at only where the root is on ZFS

    def module(self, name: str) -> Optional[ModuleFile]:
        return dict(self.modules).get(name)


class Probe(Record):
    """How deep to look: signatures verified against ``certificates`` (None: only noted),
    initramfs images opened (root on ZFS)."""

    certificates: Optional[tuple[Certificate, ...]] = None
    initramfs: bool = False


def installed_releases(root: Root, module_roots: Sequence[str]) -> dict[str, str]:
    """Map each installed kernel release to its modules directory (usrmerge links collapsed)."""
    found: dict[str, str] = {}
    seen = set()
    for base in module_roots:
        real_base = root.resolve(base)
        if real_base in seen:
            continue
        seen.add(real_base)
        for name in root.listdir(base):
            inner = posixpath.join(base, name)
            if name not in found and _is_kernel_dir(root, inner):
                found[name] = inner
    return found


def _is_kernel_dir(root: Root, inner: str) -> bool:
    return root.is_dir(inner) and any(root.exists(f"{inner}/{m}") for m in KERNEL_MARKERS)


def locate_module(root: Root, modules_dir: str, name: str) -> Optional[tuple[str, str]]:
    """``(in-root path, location)`` of the first copy of module ``name`` in MODULE_DIRS order."""
    wanted = [
        stem + suffix
        for stem in dict.fromkeys((name, name.replace("_", "-")))
        for suffix in COMPRESSION_SUFFIXES
    ]
    for location in MODULE_DIRS:
        present = set(root.listdir(f"{modules_dir}/{location}"))
        for filename in wanted:
            inner = f"{modules_dir}/{location}/{filename}"
            if filename in present and root.is_file(inner):
                return inner, location
    return None


def _module_file(
    root: Root,
    inner: str,
    name: str,
    location: str,
    probe: Probe,
    kernel_signer: Callable[[], Optional[SignerFacts]],
) -> tuple[ModuleFile, Optional[bytes]]:
    """The module's facts, and its bytes when a kABI check will need them."""
    link_target = root.to_inner(root.resolve(inner)) if root.is_symlink(inner) else None
    kabi = location.startswith(WEAK_UPDATES)
    base = ModuleFile(name, inner, location, kabi, link_target)
    try:
        data = load_module(root, inner)
        info = read_modinfo(data)
    except FactError as exc:
        return base._replace(error=str(exc)), None
    signature = None
    if probe.certificates is not None:
        from kzguard.facts.signature import NOT_ENROLLED, verify

        signature = verify(data, probe.certificates)
        if signature.status == NOT_ENROLLED:
            signature = signature.trusted_as_kernel_key(kernel_signer())
    signed = read_trailer(data).present
    facts = base._replace(modinfo=info, signed=signed, signature=signature)
    return facts, (data if kabi else None)


def kernel_build_signer(root: Root, modules_dir: str) -> Optional[SignerFacts]:
    """The signer of one of the kernel's own in-tree modules (under ``kernel/``): the key the
    kernel was built with, which its built-in keyring trusts."""
    from kzguard.facts.signature import signer_of

    for inner in root.walk_files(f"{modules_dir}/kernel"):
        if inner.endswith(COMPRESSION_SUFFIXES) and "/kernel/zfs/" not in inner:
            try:
                return signer_of(load_module(root, inner))
            except FactError:
                return None
    return None


def _with_kabi(
    root: Root, release: str, modules: dict[str, Optional[ModuleFile]], data: dict[str, bytes]
) -> None:
    """Judge each kABI-tracked module's recorded CRCs against this kernel's exports."""
    from kzguard.facts import kabi

    try:
        symvers = kabi.read_symvers(root, release)
        problem = None
    except FactError as exc:
        symvers, problem = None, str(exc)
    for name, module_bytes in data.items():
        module = modules[name]
        if module is None:
            continue
        try:
            crcs = kabi.module_crcs(module_bytes)
            provided = set().union(
                *(kabi.module_exports(b) for other, b in data.items() if other != name)
            )
            license = module.modinfo.get("license") if module.modinfo else None
            result = kabi.check(crcs, symvers, provided=provided, license=license)
        except FactError as exc:
            result = kabi.KabiResult("unknown", message=str(exc))
        if problem and symvers is None:
            result = result._replace(message=problem)
        modules[name] = module._replace(kabi=result)


def read_initramfs(root: Root, release: str) -> InitramfsFacts:
    """Whether this kernel's initramfs carries the zfs module."""
    from kzguard.facts import initramfs

    path = initramfs.image_for(root, release)
    if path is None:
        return InitramfsFacts(None)
    try:
        members = initramfs.list_members(root.read_bytes(path))
    except FactError as exc:
        return InitramfsFacts(path, error=str(exc))
    return InitramfsFacts(path, initramfs.contains_module(members, release, "zfs"))


def read_installed(
    root: Root,
    module_roots: Sequence[str],
    module_names: Iterable[str],
    probe: Optional[Probe] = None,
) -> list[InstalledKernel]:
    """Every installed kernel with the named modules looked up (``None`` when missing)."""
    probe = probe or Probe()
    names = list(module_names)
    kernels = []
    for release, modules_dir in installed_releases(root, module_roots).items():
        modules: dict[str, Optional[ModuleFile]] = {}
        kabi_bytes: dict[str, bytes] = {}
        signer = functools.lru_cache(maxsize=1)(partial(kernel_build_signer, root, modules_dir))
        for name in names:
            found = locate_module(root, modules_dir, name)
            if found is None:
                modules[name] = None
                continue
            modules[name], data = _module_file(root, found[0], name, found[1], probe, signer)
            if data is not None:
                kabi_bytes[name] = data
        if kabi_bytes:
            _with_kabi(root, release, modules, kabi_bytes)
        image = read_initramfs(root, release) if probe.initramfs else None
        kernels.append(InstalledKernel(release, modules_dir, tuple(modules.items()), image))
    return kernels
