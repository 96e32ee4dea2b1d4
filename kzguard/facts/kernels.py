"""Installed kernels (``/lib/modules/*``, ``/usr/lib/modules/*``) and their guarded modules."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from typing import Optional

from kzguard.errors import FactError
from kzguard.facts.modinfo import COMPRESSION_SUFFIXES, ModInfo, module_modinfo
from kzguard.record import Record
from kzguard.root import Root

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
    """One guarded module found for one kernel."""

    name: str
    path: str  # in-root path
    location: str  # the MODULE_DIRS entry it was found in
    kabi_tracked: bool  # a weak-updates link to a module built for another kernel
    link_target: Optional[str] = None
    modinfo: Optional[ModInfo] = None
    error: Optional[str] = None

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
        }


class InstalledKernel(Record):
    """A kernel with a modules directory, and the guarded modules found for it."""

    release: str
    modules_dir: str
    modules: tuple[tuple[str, Optional[ModuleFile]], ...]

    def module(self, name: str) -> Optional[ModuleFile]:
        return dict(self.modules).get(name)


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


def find_module(root: Root, modules_dir: str, name: str) -> Optional[ModuleFile]:
    """The first copy of module ``name`` in MODULE_DIRS order, with its .modinfo read."""
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
                return _module_file(root, inner, name, location)
    return None


def _module_file(root: Root, inner: str, name: str, location: str) -> ModuleFile:
    link_target = None
    if root.is_symlink(inner):
        link_target = root.to_inner(root.resolve(inner))
    kabi = location.startswith(WEAK_UPDATES)
    try:
        info = module_modinfo(root, inner)
    except FactError as exc:
        return ModuleFile(name, inner, location, kabi, link_target, error=str(exc))
    return ModuleFile(name, inner, location, kabi, link_target, modinfo=info)


def read_installed(
    root: Root, module_roots: Sequence[str], module_names: Iterable[str]
) -> list[InstalledKernel]:
    """Every installed kernel with the named modules looked up (``None`` when missing)."""
    names = list(module_names)
    kernels = []
    for release, modules_dir in installed_releases(root, module_roots).items():
        modules = tuple((n, find_module(root, modules_dir, n)) for n in names)
        kernels.append(InstalledKernel(release, modules_dir, modules))
    return kernels
