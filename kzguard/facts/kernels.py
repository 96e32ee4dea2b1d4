"""Installed kernels (``/lib/modules/*``, ``/usr/lib/modules/*``) and their guarded modules."""

from __future__ import annotations

import functools
import os
import posixpath
from functools import partial

from kzguard import facts as _fs
from kzguard.base.errors import FactError
from kzguard.base.record import Record
from kzguard.facts.modinfo import COMPRESSION_SUFFIXES, ModInfo, load_module, read_modinfo
from kzguard.facts.signature import read_trailer
from kzguard.root import Root, Runner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Callable, Optional

    from kzguard.facts.depmod import DepmodConfig
    from kzguard.facts.kabi import KabiResult
    from kzguard.facts.ownership import Owner
    from kzguard.facts.secureboot import Certificate
    from kzguard.facts.signature import SignatureCheck, SignerFacts

# The directories the service watches for module files (the usual places DKMS, kmod packages,
# kernel packages and weak-modules put them). Which file is judged is modprobe's choice
# (:mod:`kzguard.facts.depmod`), not this list.
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
BY_MODULES_DEP = "modules.dep"
BY_SEARCH = "search"
# Not module files of this kernel: links to its build trees.
_NOT_SEARCHED = ("build", "source")


class ModuleFile(Record):
    """One guarded module found for one kernel, with what kzguard could learn from its bytes."""

    name: str
    path: str  # in-root path
    location: str  # its directory relative to the kernel's modules directory
    kabi_tracked: bool  # a weak-updates link to a module built for another kernel
    link_target: Optional[str] = None
    modinfo: Optional[ModInfo] = None
    error: Optional[str] = None
    signed: Optional[bool] = None  # an appended signature is present (None: unreadable)
    signature: Optional[SignatureCheck] = None  # when signatures were verified
    kabi: Optional[KabiResult] = None  # for kABI-tracked modules
    found_by: str = BY_SEARCH  # "modules.dep": the file modprobe loads; "search": depmod's order
    indexed: Optional[bool] = None  # listed in the kernel's modules.dep (None: there is none)
    deps: tuple[str, ...] = ()  # in-root paths modules.dep says it needs
    missing_deps: tuple[str, ...] = ()  # of those, the ones not on disk
    others: tuple[str, ...] = ()  # other copies of the module under this kernel
    ambiguous: bool = False  # another copy has the same depmod priority (no modules.dep)
    owner: Optional[Owner] = None  # the package whose file this is (None: DKMS or by hand)

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
            "found_by": self.found_by,
            "indexed": self.indexed,
            "deps": list(self.deps),
            "missing_deps": list(self.missing_deps),
            "other_copies": list(self.others),
            "ambiguous": self.ambiguous,
            "owner": self.owner.to_dict() if self.owner else None,
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
    error: Optional[str] = None  # the kernel's modules could not be read (it is unknown)
    modules_dep: Optional[str] = None  # None: read; "missing"; or why it could not be read
    notes: tuple[str, ...] = ()

    def module(self, name: str) -> Optional[ModuleFile]:
        return dict(self.modules).get(name)


class Probe(Record):
    """How deep to look: signatures verified against ``certificates`` (None: only noted),
    initramfs images opened (root on ZFS)."""

    certificates: Optional[tuple[Certificate, ...]] = None
    initramfs: bool = False
    runner: Optional[Runner] = None  # runs zstd or lz4 where no module decompresses; None: nothing


def installed_releases(root: Root, module_roots: Sequence[str]) -> dict[str, str]:
    """Map each installed kernel release to its modules directory (usrmerge links collapsed)."""
    return {r: d for r, (d, error) in scan_kernels(root, module_roots).items() if error is None}


def scan_kernels(root: Root, module_roots: Sequence[str]) -> dict[str, tuple[str, Optional[str]]]:
    """Each kernel directory under the module roots: release -> (modules dir, why it cannot be
    read or ``None``). A directory that cannot be listed counts when its name reads as a
    kernel release; a module root that cannot be listed is reported under its own path. A
    kernel directory whose name is not UTF-8 is unreadable, under its name with the bytes
    escaped (``\\xff``): no release can be said, or printed, for it."""
    return {r: (d.inner, d.error) for r, d in _scan_kernels(root, module_roots).items()}


class _KernelDir(Record):
    """A kernel directory as :func:`_scan_kernels` listed it."""

    inner: str
    error: Optional[str] = None
    host: str = ""  # its host path
    kinds: Optional[dict[str, str]] = None  # entry name -> kind (kzguard.facts._fs)


def _scan_kernels(root: Root, module_roots: Sequence[str]) -> dict[str, _KernelDir]:
    """:func:`scan_kernels`, with each kernel directory's listing (read for the markers, and
    the first level of the walk that looks for modules without a modules.dep)."""
    found: dict[str, _KernelDir] = {}
    seen = set()
    for base in module_roots:
        try:
            real_base = _fs.host_path(root, base)
        except FactError as exc:
            found[base] = _KernelDir(base, str(exc))
            continue
        if real_base in seen:
            continue
        seen.add(real_base)
        names, problem = root.scan_dir(base)
        if problem is not None:
            found[base] = _KernelDir(base, problem)
            continue
        for name in names:
            inner = posixpath.join(base, name)
            if name in found:
                continue
            host, kinds, problem = _fs.scan_dir(root, inner)
            if problem is not None:
                if name[:1].isdigit():
                    found[_shown(name)] = _KernelDir(_shown(inner), problem)
                continue
            # listed, so a directory (a missing one lists empty and has no marker)
            if any(m in kinds for m in KERNEL_MARKERS):
                if _shown(name) != name:
                    why = f"{_shown(inner)}: {NOT_UTF8}, so it names no kernel release"
                    found[_shown(name)] = _KernelDir(_shown(inner), why)
                else:
                    found[name] = _KernelDir(inner, None, host, kinds)
    return found


NOT_UTF8 = "the directory name is not UTF-8"


def _shown(name: str) -> str:
    """A file name as text that can be printed: bytes that are not UTF-8 (which ``os.listdir``
    gives as lone surrogates) escaped as ``\\xNN``."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


class _Located(Record):
    """Where modprobe (or, without modules.dep, depmod's order) finds one module."""

    path: str  # in-root
    location: str  # its directory relative to the kernel's modules directory
    found_by: str
    indexed: Optional[bool]
    deps: tuple[str, ...] = ()
    others: tuple[str, ...] = ()
    ambiguous: bool = False
    host: Optional[str] = None  # a regular file, no link (the walk saw it): its host path


class _KernelIndex:
    """One kernel's modules.dep, depmod.d order and (when needed) a walk of its tree."""

    def __init__(
        self,
        root: Root,
        release: str,
        modules_dir: str,
        names: Sequence[str],
        config: DepmodConfig,
        listed: Optional[_KernelDir] = None,
    ):
        from kzguard.facts import depmod

        self.root = root
        self.release = release
        self.modules_dir = modules_dir
        self.config = config
        self.listed = listed  # the kernel directory's listing, when it was read already
        entries = listed.kinds if listed is not None else None
        if entries is not None and depmod.MODULES_DEP not in entries:
            self.dep, self.dep_problem = None, None  # not even a dangling link: there is none
        else:
            self.dep, self.dep_problem = depmod.read_modules_dep(root, modules_dir, names)
        self.wanted = {n.replace("-", "_") for n in names}
        self._files: Optional[dict[str, list[str]]] = None
        self.plain: dict[str, str] = {}  # regular files the walk saw (no link): relative -> host
        self.walk_error: Optional[str] = None

    def files(self) -> dict[str, list[str]]:
        """Module name -> relative paths of every copy under the kernel (one walk, lazily)."""
        if self._files is None:
            self._files = self._walk()
        return self._files

    def _walk(self) -> dict[str, list[str]]:
        """``os.walk`` of the kernel's tree (top-down, directories sorted, links to
        directories not entered, ``build`` and ``source`` left out), keeping each entry's type
        from the listing: a regular file needs no ``stat``, only a link is resolved."""
        found: dict[str, list[str]] = {}
        if self.listed is not None and self.listed.kinds is not None:
            top = self.listed.host
            self._walk_dir(top, "", found, self._top_entries(top, self.listed.kinds))
            return found
        try:
            top = _fs.host_path(self.root, self.modules_dir)
        except FactError as exc:
            self.walk_error = str(exc)
            return found
        self._walk_dir(top, "", found)
        return found

    @staticmethod
    def _top_entries(top: str, kinds: dict[str, str]) -> list[tuple[str, bool, bool, bool]]:
        """``(name, is_dir, is_link, regular)`` of each entry, from the listing: a link is a
        directory when what it points at is one (as ``os.walk`` asks)."""
        entries = []
        for name, kind in kinds.items():
            if kind == _fs.LINK:
                entries.append((name, os.path.isdir(f"{top}/{name}"), True, False))
            else:
                entries.append((name, kind == _fs.DIR, False, kind == _fs.FILE))
        return entries

    def _entries(self, host_dir: str) -> Optional[list[tuple[str, bool, bool, bool]]]:
        """``(name, is_dir, is_link, regular)`` of each entry, as ``os.walk`` reads them
        (``None``, and the error noted, when the directory cannot be read)."""
        entries = []
        try:
            listing = os.scandir(host_dir)
        except OSError as exc:
            self._failed(exc)
            return None
        with listing:
            while True:  # os.walk: an error part-way drops the directory
                try:
                    entry = next(listing)
                except StopIteration:
                    break
                except OSError as exc:
                    self._failed(exc)
                    return None
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                try:
                    link = entry.is_symlink()
                    regular = not link and entry.is_file(follow_symlinks=False)
                except OSError:
                    link, regular = True, False  # unknown: asked of the root
                entries.append((entry.name, is_dir, link, regular))
        return entries

    def _failed(self, exc: OSError) -> None:
        self.walk_error = f"cannot read {self.root.to_inner(exc.filename)}: {exc.strerror}"

    def _walk_dir(
        self,
        host_dir: str,
        rel: str,
        found: dict[str, list[str]],
        entries: Optional[list[tuple[str, bool, bool, bool]]] = None,
    ) -> None:
        from kzguard.facts.depmod import module_name

        dirs: list[tuple[str, bool]] = []  # (name, a link)
        files: list[tuple[str, bool]] = []  # (name, a regular file and no link)
        if entries is None:
            entries = self._entries(host_dir)
            if entries is None:
                return
        for name, is_dir, link, regular in entries:
            if is_dir:
                dirs.append((name, link))
            else:
                files.append((name, regular))
        for filename, regular in files:
            name = module_name(filename)
            if name in self.wanted:
                path = f"{rel}/{filename}" if rel else filename
                if regular:
                    self.plain[path] = f"{host_dir}/{filename}"
                    found.setdefault(name, []).append(path)
                elif self._is_file(path):  # a link (a dangling one loads nothing)
                    found.setdefault(name, []).append(path)
        if not rel:
            dirs = [d for d in dirs if d[0] not in _NOT_SEARCHED]
        for dirname, link in sorted(dirs):
            if not link:
                sub = f"{rel}/{dirname}" if rel else dirname
                self._walk_dir(os.path.join(host_dir, dirname), sub, found)

    def locate(self, name: str) -> Optional[_Located]:
        from kzguard.facts import depmod

        key = name.replace("-", "_")
        entry = self.dep.get(key) if self.dep else None
        if entry is not None:
            inner = self._inner(entry.path)
            if self._is_file(entry.path):
                deps = tuple(self._inner(p) for p in entry.deps)
                location = posixpath.dirname(entry.path)
                return _Located(inner, location, BY_MODULES_DEP, True, deps)
        copies = self.files().get(key, [])
        best, ties = depmod.choose(copies, key, self.release, self.config)
        if best is None:
            return None
        others = tuple(self._inner(p) for p in copies if p != best)
        indexed = None if self.dep is None else False
        location = posixpath.dirname(best)
        host = self.plain.get(best)
        return _Located(
            self._inner(best), location, BY_SEARCH, indexed, (), others, bool(ties), host
        )

    def _inner(self, path: str) -> str:
        return path if path.startswith("/") else f"{self.modules_dir}/{path}"

    def _is_file(self, path: str) -> bool:
        """A regular file at ``path`` (relative or in-root); a link loop is a read error."""
        try:
            return self.root.is_file(self._inner(path))
        except FactError as exc:
            self.walk_error = str(exc)
            return False


def _safe_is_file(root: Root, inner: str) -> bool:
    try:
        return root.is_file(inner)
    except FactError:
        return False


def _module_file(
    root: Root,
    found: _Located,
    name: str,
    probe: Probe,
    kernel_signer: Callable[[], Optional[SignerFacts]],
) -> tuple[ModuleFile, Optional[bytes]]:
    """The module's facts, and its bytes when a kABI check will need them."""
    inner, location = found.path, found.location
    try:
        link = found.host is None and root.is_symlink(inner)
        link_target = root.to_inner(_fs.host_path(root, inner)) if link else None
    except FactError:
        link_target = None
    kabi = location.startswith(WEAK_UPDATES)
    missing = tuple(d for d in found.deps if not _safe_is_file(root, d))
    facts = dict(
        found_by=found.found_by,
        indexed=found.indexed,
        deps=found.deps,
        missing_deps=missing,
        others=found.others,
        ambiguous=found.ambiguous,
    )
    try:
        data = load_module(root, inner, runner=probe.runner, host=found.host)
        info = read_modinfo(data)
    except FactError as exc:
        return ModuleFile(name, inner, location, kabi, link_target, error=str(exc), **facts), None
    signature = None
    if probe.certificates is not None:
        from kzguard.facts.signature import NOT_ENROLLED, verify

        signature = verify(data, probe.certificates)
        if signature.status == NOT_ENROLLED:
            signature = signature.trusted_as_kernel_key(kernel_signer())
    signed = read_trailer(data).present
    module = ModuleFile(
        name,
        inner,
        location,
        kabi,
        link_target,
        modinfo=info,
        signed=signed,
        signature=signature,
        **facts,
    )
    return module, (data if kabi else None)


def kernel_build_signer(
    root: Root, modules_dir: str, runner: Optional[Runner] = None
) -> Optional[SignerFacts]:
    """The signer of one of the kernel's own in-tree modules (under ``kernel/``): the key the
    kernel was built with, which its built-in keyring trusts."""
    from kzguard.facts.signature import signer_of

    try:
        for inner in root.walk_files(f"{modules_dir}/kernel"):
            if inner.endswith(COMPRESSION_SUFFIXES) and "/kernel/zfs/" not in inner:
                return signer_of(load_module(root, inner, runner=runner))
    except FactError:  # unreadable (a link loop on the way): no key is trusted from it
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


def read_initramfs(root: Root, release: str, runner: Optional[Runner] = None) -> InitramfsFacts:
    """Whether this kernel's initramfs carries the zfs module."""
    from kzguard.facts import initramfs

    try:
        path = initramfs.image_for(root, release)
    except FactError as exc:  # a link loop where the image would be: not seen, not "absent"
        return InitramfsFacts(None, error=str(exc))
    if path is None:
        return InitramfsFacts(None)
    try:
        members = initramfs.list_members(root.read_bytes(path), runner=runner)
    except FactError as exc:
        return InitramfsFacts(path, error=str(exc))
    return InitramfsFacts(path, initramfs.contains_module(members, release, "zfs"))


def read_installed(
    root: Root,
    module_roots: Sequence[str],
    module_names: Iterable[str],
    probe: Optional[Probe] = None,
) -> list[InstalledKernel]:
    """Every installed kernel with the named modules looked up (``None`` when missing), the
    way modprobe finds them. A kernel whose directory cannot be read carries ``error``."""
    from kzguard.facts import depmod

    probe = probe or Probe()
    names = list(module_names)
    config = depmod.read_config(root)
    kernels = []
    for release, listed in _scan_kernels(root, module_roots).items():
        if listed.error is not None:
            kernels.append(InstalledKernel(release, listed.inner, (), error=listed.error))
            continue
        kernels.append(_read_kernel(root, release, listed.inner, names, probe, config, listed))
    return kernels


def _read_kernel(
    root: Root,
    release: str,
    modules_dir: str,
    names: Sequence[str],
    probe: Probe,
    config: DepmodConfig,
    listed: Optional[_KernelDir] = None,
) -> InstalledKernel:
    index = _KernelIndex(root, release, modules_dir, names, config, listed)
    modules: dict[str, Optional[ModuleFile]] = {}
    kabi_bytes: dict[str, bytes] = {}
    signer = functools.lru_cache(maxsize=1)(
        partial(kernel_build_signer, root, modules_dir, probe.runner)
    )
    for name in names:
        found = index.locate(name)
        if found is None:
            modules[name] = None
            continue
        modules[name], data = _module_file(root, found, name, probe, signer)
        if data is not None:
            kabi_bytes[name] = data
    if kabi_bytes:
        _with_kabi(root, release, modules, kabi_bytes)
    image = read_initramfs(root, release, probe.runner) if probe.initramfs else None
    notes = list(config.problems)
    if index.dep_problem:
        notes.append(index.dep_problem)
    dep_state = None if index.dep is not None else (index.dep_problem or "missing")
    return InstalledKernel(
        release,
        modules_dir,
        tuple(modules.items()),
        image,
        error=index.walk_error,
        modules_dep=dep_state,
        notes=tuple(notes),
    )
