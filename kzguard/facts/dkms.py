"""DKMS state: read from the DKMS tree, or parsed from ``dkms status`` output.

The layout (DKMS 3.0.10 on Debian 12, observed on real add/build/install/uninstall runs):

- ``add`` creates ``<tree>/<m>/<v>/source``, an absolute link to ``<srctree>/<m>-<v>`` (the
  dir holding ``dkms.conf``), and an empty ``<tree>/<m>/<v>/build/``.
- ``build`` copies the source into ``build/``, runs make there and, on success, leaves
  ``<tree>/<m>/<v>/<kernel>/<arch>/module/<dest name>.ko[.xz|.zst|.gz]`` (stripped, signed with
  the MOK key when it can) plus ``log/make.log`` and ``log/.config``, then deletes ``build/``.
- A failed make leaves ``build/`` (the source copy) with ``build/make.log``, whose first line is
  ``DKMS make.log for <m>-<v> for kernel <kernel> (<arch>)``, and no ``<kernel>/<arch>`` dir.
  A failure before make (no headers) leaves no trace.
- ``install`` copies each module to ``<installtree>/<kernel><location>/`` (``/updates/dkms`` on
  Debian, Ubuntu and Arch, ``/extra`` on Fedora/EL, ``/updates`` on SUSE, otherwise the
  ``DEST_MODULE_LOCATION`` of dkms.conf) and links ``<tree>/<m>/kernel-<kernel>-<arch>`` ->
  ``<v>/<kernel>/<arch>`` (relative). ``uninstall`` removes both; the built dir stays.
- ``dkms status``: a version dir with a ``source`` is *added*; each ``<kernel>/<arch>`` (kernel
  dir starting with digits and a dot) whose ``module/`` holds every module dkms.conf names is
  *built*, and *installed* when the ``kernel-`` link resolves to it. DKMS 3.2 calls a dangling
  ``source`` link (or a missing link while ``<srctree>/<m>-<v>`` exists) *broken*; 3.0.10 shows
  it as *added*, or stops with "Could not locate dkms.conf" once a built kernel dir exists.
  Notes: ``original_module exists`` when ``<tree>/<m>/original_module/<kernel>/<arch>`` is a
  dir; ``Diff between built and installed module`` per module whose installed copy is missing
  or differs (``diff -q``) from the built one. 3.2 words them differently (see the samples).

:func:`read_tree` answers what ``dkms status`` (3.0.10) answers, from the files alone, except
that a dangling ``source`` is *broken* (as 3.2 says) and a failed last build is
*build-failed*, and a source without ``dkms.conf`` is *broken* too (3.0.10 stops with "Could
not locate dkms.conf"). It compares built and installed modules by content, like DKMS (the
built module read once per installed kernel, then each candidate copy). Like DKMS it takes
the install location from the root's os-release; unlike DKMS it accepts every compression suffix
(DKMS only looks for the one the host's own ``modules.dep`` uses) and calls a module installed
when any candidate location holds an identical copy (DKMS picks the location by ``modinfo``).
"""

from __future__ import annotations

import os
import posixpath
import re

from kzguard import facts as _fs
from kzguard.base.errors import FactError
from kzguard.base.record import Record
from kzguard.facts import Pattern
from kzguard.facts.osrelease import OsRelease, read_os_release
from kzguard.root import Root

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Optional, Union

ADDED = "added"
BUILT = "built"
INSTALLED = "installed"
BROKEN = "broken"
BUILD_FAILED = "build-failed"
STATES = (ADDED, BUILT, INSTALLED, BROKEN, BUILD_FAILED)

NOTE_ORIGINAL = "original_module exists"
NOTE_DIFF = "Diff between built and installed module"
NOTE_MISSING = "Missing some built modules"

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
UNREADABLE = "?"  # the version of an entry whose module directory cannot be listed
_LOCATION_PREFIXES = ("/kernel", "/updates", "/extra")
_KERNEL_DIR = Pattern(r"[0-9]+\.")
_FAILED_LOG = Pattern(
    r"DKMS make\.log for (?P<mv>.+) for kernel (?P<kernel>\S+) \((?P<arch>[^)]+)\)"
)


class DkmsEntry(Record):
    """One line of ``dkms status``: a module version, optionally for one kernel and arch."""

    module: str
    version: str
    kernel: Optional[str]
    arch: Optional[str]
    state: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {**self._asdict(), "notes": list(self.notes)}


# --- reading the tree ------------------------------------------------------------------------


class _Spec(Record):
    """One module a dkms.conf builds: its installed name and candidate locations."""

    name: str
    locations: tuple[str, ...]


class _Tree:
    """What one :func:`read_tree` call needs: the root, the tree paths, and what was read
    once for every kernel: dkms.conf files, the ``/etc/dkms`` names, the install trees'
    listings, resolved ``kernel-*`` links."""

    def __init__(
        self,
        root: Root,
        dkms_tree: str,
        source_tree: str,
        install_trees: Sequence[str],
        os_release: Optional[OsRelease],
    ):
        self.root = root
        self.dkms_tree = dkms_tree
        self.source_tree = source_tree
        self.install_trees = tuple(install_trees)
        self.override = install_location(root, os_release)
        self._confs: dict[str, Optional[list[tuple[str, int, str]]]] = {}
        self._etc: Optional[dict[str, Optional[frozenset[str]]]] = None
        self._installs: Optional[list[Optional[_fs.Listing]]] = None
        self._kernel_dirs: dict[str, list[_fs.Listing]] = {}
        self._real: dict[str, Union[str, FactError]] = {}

    def path(self, *parts: str) -> str:
        return posixpath.join(self.dkms_tree, *parts)

    def assignments(self, inner: str) -> Optional[list[tuple[str, int, str]]]:
        if inner not in self._confs:
            self._confs[inner] = _read_assignments(self.root, inner)
        return self._confs[inner]

    def may_exist(self, inner: str) -> bool:
        """False when ``inner`` is surely not there: its directory (``/etc/dkms``) was listed
        once and does not name it."""
        directory, _, name = inner.rpartition("/")
        if self._etc is None:
            self._etc = {}
        if directory not in self._etc:
            names, problem = self.root.scan_dir(directory)
            self._etc[directory] = None if problem is not None else frozenset(names)
        names = self._etc[directory]
        return names is None or name in names

    def real(self, inner: str) -> str:
        """The host path of ``inner`` (links followed inside the root), resolved once."""
        found = self._real.get(inner)
        if found is None:
            try:
                found = _fs.host_path(self.root, inner)
            except FactError as exc:
                found = exc
            self._real[inner] = found
        if isinstance(found, FactError):
            raise found
        return found

    def kernel_dirs(self, kernel: str) -> list[_fs.Listing]:
        """``<install tree>/<kernel>`` for each install tree that has the kernel."""
        if kernel not in self._kernel_dirs:
            if self._installs is None:
                self._installs = [self._listing(t) for t in self.install_trees]
            found = []
            for inner, listing in zip(self.install_trees, self._installs):
                if listing is None:  # the root says why (a link loop), as for each kernel
                    if self.root.is_dir(f"{inner}/{kernel}"):
                        found.append(_fs.Listing(self.root, f"{inner}/{kernel}"))
                elif listing.is_dir(kernel):
                    found.append(listing.child(kernel))
            self._kernel_dirs[kernel] = found
        return self._kernel_dirs[kernel]

    def _listing(self, inner: str) -> Optional[_fs.Listing]:
        try:
            return _fs.Listing(self.root, inner)
        except FactError:
            return None


def read_tree(
    root: Root,
    dkms_tree: str = "/var/lib/dkms",
    source_tree: str = "/usr/src",
    install_trees: Sequence[str] = ("/lib/modules", "/usr/lib/modules"),
    os_release: Optional[OsRelease] = None,
) -> list[DkmsEntry]:
    """Every DKMS entry under ``dkms_tree``, as ``dkms status`` would list it, from files only
    (``os_release``: the root's, when the caller has read it already)."""
    try:
        modules = _visible(root.listdir(dkms_tree))
    except FactError as exc:  # a link loop: what DKMS registered cannot be seen, zfs included
        return [_unreadable("zfs", UNREADABLE, exc)]
    if not modules:
        return []
    tree = _Tree(root, dkms_tree, source_tree, install_trees, os_release)
    entries: list[DkmsEntry] = []
    for module in modules:
        try:
            listing = _fs.Listing(root, tree.path(module))
        except FactError as exc:
            entries.append(_unreadable(module, UNREADABLE, exc))
            continue
        for version in _visible(listing.names()):
            try:
                entries.extend(_version_entries(tree, listing, module, version))
            except (FactError, OSError) as exc:
                entries.append(_unreadable(module, version, exc))
    return sorted(entries, key=_status_order)


def _unreadable(module: str, version: str, exc: Exception) -> DkmsEntry:
    """A registration that cannot be read: *broken*, so that nothing is built on it unseen."""
    return DkmsEntry(module, version, None, None, BROKEN, (f"unreadable: {exc}",))


def _version_entries(
    tree: _Tree, listing: _fs.Listing, module: str, version: str
) -> list[DkmsEntry]:
    """The entries of ``<tree>/<module>/<version>`` (``listing``: ``<tree>/<module>``)."""
    vdir = tree.path(module, version)
    if listing.kind(version) == _fs.LINK:  # kernel-<k>-<a>, or a version dir behind a link
        if not os.path.isdir(tree.real(vdir)) or version.startswith("kernel-"):
            return []
    elif not listing.is_dir(version):
        return []
    source = _source_state(tree, module, version)
    if source is None:
        return []
    if source == BROKEN:
        return [DkmsEntry(module, version, None, None, BROKEN)]
    versions = listing.child(version)
    entries = []
    for kernel in versions.names():
        if not _KERNEL_DIR.match(kernel):
            continue
        kernels = versions.child(kernel)
        for arch in _visible(kernels.names()):
            entries += _built_entry(tree, listing, kernels, module, version, kernel, arch)
    failed = _failed_build(tree, module, version)
    if failed and not any((e.kernel, e.arch) == failed for e in entries):
        entries.append(DkmsEntry(module, version, failed[0], failed[1], BUILD_FAILED))
    return entries or [DkmsEntry(module, version, None, None, ADDED)]


def _source_state(tree: _Tree, module: str, version: str) -> Optional[str]:
    """``"ok"`` for a registered version, ``broken`` for a lost source, ``None`` if unregistered."""
    root, source = tree.root, tree.path(module, version, "source")
    if root.is_symlink(source) or root.is_dir(source):
        if not root.is_dir(source):
            return BROKEN  # the source was deleted: nothing to build from
        return "ok" if root.is_file(f"{source}/dkms.conf") else BROKEN
    if root.is_dir(posixpath.join(tree.source_tree, f"{module}-{version}")):
        return BROKEN
    return None


def _built_entry(
    tree: _Tree,
    listing: _fs.Listing,
    kernels: _fs.Listing,
    module: str,
    version: str,
    kernel: str,
    arch: str,
) -> list[DkmsEntry]:
    """The entry of ``<kernel>/<arch>`` (``kernels``: ``<version>/<kernel>``), if built."""
    if not kernels.is_dir(arch):
        return []
    kdir = kernels.child(arch)
    if not kdir.is_dir("module"):
        return []
    moddir = kdir.child("module")
    specs = _module_specs(tree, module, version, kernel, arch)
    built: dict[str, Optional[str]] = {}  # each module's file: found once, for the notes too
    if specs is None and not any(name.endswith(MODULE_SUFFIXES) for name in moddir.names()):
        return []  # dkms.conf unreadable: any module file will do
    for spec in specs or ():
        built[spec.name] = _find_module(moddir, spec.name)
        if built[spec.name] is None:
            return []
    files = {name: (moddir, path) for name, path in built.items() if path is not None}
    link = f"kernel-{kernel}-{arch}"
    here = kdir.host if kernels.kind(arch) == _fs.DIR else tree.real(kdir.inner)
    installed = listing.is_symlink(link) and tree.real(tree.path(module, link)) == here
    notes = _notes(tree, listing, module, kernel, arch, specs, files, installed)
    return [DkmsEntry(module, version, kernel, arch, INSTALLED if installed else BUILT, notes)]


def _notes(
    tree: _Tree,
    listing: _fs.Listing,
    module: str,
    kernel: str,
    arch: str,
    specs: Optional[list[_Spec]],
    built: Mapping[str, tuple[_fs.Listing, str]],
    installed: bool,
) -> tuple[str, ...]:
    notes = []
    original = "original_module"
    if listing.exists(original) and tree.root.is_dir(tree.path(module, original, kernel, arch)):
        notes.append(NOTE_ORIGINAL)
    for spec in specs or ():
        found = built.get(spec.name)
        if found is None:
            notes.append(NOTE_MISSING)
        elif installed and not _installed_copy_matches(tree, kernel, spec, found):
            notes.append(NOTE_DIFF)
    return tuple(dict.fromkeys(notes))


def _installed_copy_matches(
    tree: _Tree, kernel: str, spec: _Spec, built: tuple[_fs.Listing, str]
) -> bool:
    kernel_dirs = tree.kernel_dirs(kernel)
    if not kernel_dirs:
        return False
    content: list[bytes] = []  # the built module's bytes, read once
    for location in spec.locations:
        copy = _installed_copy(tree.root, kernel_dirs[0], location, spec.name)
        if copy is not None and _same_content(tree.root, built, copy, content):
            return True
    return False


def _installed_copy(
    root: Root, kernel_dir: _fs.Listing, location: str, name: str
) -> Optional[tuple[Optional[_fs.Listing], str]]:
    """The installed module ``name`` under ``<kernel dir><location>`` (the first suffix that
    exists), with the listing of its directory when it was reached through no link."""
    directory: Optional[_fs.Listing] = kernel_dir
    for part in location.split("/"):
        if not part or directory is None:
            continue
        kind = directory.kind(part)
        if kind is None:
            return None  # a missing directory holds nothing
        directory = directory.child(part) if kind == _fs.DIR else None
    if directory is not None:
        found = _find_module(directory, name)
        return (directory, found) if found is not None else None
    for suffix in MODULE_SUFFIXES:  # a link on the way: the root resolves each path
        path = f"{kernel_dir.inner}{location}/{name}{suffix}"
        if root.exists(path):
            return None, path
    return None


def _same_content(
    root: Root,
    built: tuple[_fs.Listing, str],
    copy: tuple[Optional[_fs.Listing], str],
    content: list[bytes],
) -> bool:
    """``diff -q`` of the built module and the installed copy (each with its directory's
    listing, if any, and its in-root path): the same bytes. One that cannot be read differs."""
    try:
        if not content:
            content.append(built[0].read_bytes(posixpath.basename(built[1])))
        directory, path = copy
        if directory is None:
            return content[0] == root.read_bytes(path)
        return content[0] == directory.read_bytes(posixpath.basename(path))
    except FactError:
        return False


def _find_module(directory: _fs.Listing, name: str) -> Optional[str]:
    """The in-root path of ``name`` with the first module suffix that exists."""
    for suffix in MODULE_SUFFIXES:
        if directory.exists(name + suffix):
            return directory.path(name + suffix)
    return None


def _failed_build(tree: _Tree, module: str, version: str) -> Optional[tuple[str, str]]:
    """``(kernel, arch)`` named by a make.log a failed build left in ``build/``."""
    try:
        with tree.root.open_regular(tree.path(module, version, "build", "make.log")) as fh:
            first = fh.readline(4096).decode("utf-8", "replace").strip()
    except (OSError, FactError):
        return None
    match = _FAILED_LOG.fullmatch(first)
    if not match or match["mv"] not in (f"{module}-{version}", f"{module}/{version}"):
        return None
    return match["kernel"], match["arch"]


def _visible(names: Iterable[str]) -> list[str]:
    return [n for n in names if not n.startswith(".")]


def _status_order(entry: DkmsEntry) -> tuple[str, str]:
    """The order of ``dkms status`` under ``LC_ALL=C``: by ``m/v``, then by ``kernel/arch``."""
    ka = f"{entry.kernel}/{entry.arch}" if entry.kernel else ""
    return f"{entry.module}/{entry.version}", ka


# --- dkms.conf -------------------------------------------------------------------------------

_ASSIGN = Pattern(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([0-9]+)\])?=(.*)", re.S)
_VAR = Pattern(r"\$\{(\w+)(?:\[([0-9]+)\])?\}|\$(\w+)")
_UNKNOWN = "\0"  # a value that needs command substitution


MAX_CONF_BYTES = 1 << 20
# One shell word: plain characters, backslash escapes and quoted strings. Each alternative
# starts with its own character and quoted strings are unrolled loops, so a match (or an
# unterminated quote) costs time linear in the file's length.
_TOKEN = Pattern(
    r"""(?P<space>\s+)
    |(?P<comment>\#[^\n]*)
    |(?P<word>(?:[^\s'"\\]|\\.|'[^']*'|"[^"\\]*(?:\\.[^"\\]*)*")+)
    |(?P<bad>.)""",
    re.X | re.S,
)
_PIECE = Pattern(r"[^\s'\"\\]+|\\.|'[^']*'|\"[^\"\\]*(?:\\.[^\"\\]*)*\"", re.S)
_DQ_ESCAPE = Pattern(r'\\([\\"$`\n])')


def shell_words(text: str) -> Optional[list[str]]:
    """The words of a shell file as bash splits and unquotes them (no expansion; ``#`` starts a
    comment at the start of a word); ``None`` for an unterminated quote. Linear in the text."""
    words = []
    for match in _TOKEN.finditer(text):
        if match.lastgroup == "bad":
            return None
        if match.lastgroup == "word":
            words.append("".join(_unquote(p) for p in _PIECE.findall(match.group())))
    return words


def _unquote(piece: str) -> str:
    if piece.startswith("'"):
        return piece[1:-1]
    if piece.startswith('"'):
        return _DQ_ESCAPE.sub(lambda m: "" if m[1] == "\n" else m[1], piece[1:-1])
    if piece.startswith("\\"):
        return "" if piece[1:] == "\n" else piece[1:]
    return piece


def _read_assignments(root: Root, inner: str) -> Optional[list[tuple[str, int, str]]]:
    """``NAME[i]=value`` words of a shell file, unexpanded; ``None`` when unreadable."""
    try:
        text = root.read_text(inner, limit=MAX_CONF_BYTES)
    except FactError:
        return None
    words = shell_words(text)
    if words is None:
        return None
    found = []
    for word in words:
        match = _ASSIGN.fullmatch(word)
        if match:
            found.append((match[1], int(match[2] or 0), match[3]))
    return found


def _expand(value: str, env: Mapping[str, dict[int, str]]) -> str:
    if "$(" in value or "`" in value:
        return _UNKNOWN

    def sub(match: re.Match) -> str:
        name = match[1] or match[3]
        return env.get(name, {}).get(int(match[2] or 0), "")

    return _VAR.sub(sub, value)


def _module_specs(
    tree: _Tree, module: str, version: str, kernel: str, arch: str
) -> Optional[list[_Spec]]:
    """The modules dkms.conf (with /etc/dkms overrides) builds, or ``None`` if it is unusable."""
    env: dict[str, dict[int, str]] = {"kernelver": {0: kernel}, "arch": {0: arch}}
    files = [tree.path(module, version, "source", "dkms.conf")]
    stem = f"/etc/dkms/{module}"
    files += [f"{stem}.conf", f"{stem}-{version}.conf", f"{stem}-{version}-{kernel}.conf"]
    files.append(f"{stem}-{version}-{kernel}-{arch}.conf")
    for n, inner in enumerate(files):
        if n and not tree.may_exist(inner):  # an /etc/dkms override that is not there
            continue
        found = tree.assignments(inner)
        if found is None and n == 0:
            return None
        for name, index, raw in found or ():
            env.setdefault(name, {})[index] = _expand(raw, env)
    return _specs_from_env(env, tree.override)


def _specs_from_env(
    env: Mapping[str, dict[int, str]], override: Optional[str]
) -> Optional[list[_Spec]]:
    """The checks of DKMS's ``read_conf``; ``None`` where it would refuse the file."""
    built, dest = env.get("BUILT_MODULE_NAME", {}), env.get("DEST_MODULE_NAME", {})
    locations = env.get("DEST_MODULE_LOCATION", {})
    arrays = [built, env.get("BUILT_MODULE_LOCATION", {}), dest, locations]
    package = env.get("PACKAGE_NAME", {}).get(0, "")
    if not package or not env.get("PACKAGE_VERSION", {}).get(0) or not locations:
        return None
    specs = []
    for i in range(max(len(a) for a in arrays)):
        name = built.get(i) or (package if len(locations) == 1 else "")
        name = dest.get(i) or name
        location = locations.get(i, "")
        values = (name, location, built.get(i, ""))
        if not name or any(_UNKNOWN in v or v.endswith((".o", ".ko")) for v in values):
            return None
        if not location.startswith(_LOCATION_PREFIXES):
            return None
        specs.append(_Spec(name, tuple(dict.fromkeys([override or location, location]))))
    return specs or None


def install_location(root: Root, osr: Optional[OsRelease] = None) -> Optional[str]:
    """Where DKMS installs modules on the root's distro, ``None`` where dkms.conf decides.

    DKMS's ``override_dest_module_location``, from ``/etc/os-release`` as DKMS reads it
    (``osr``: the root's os-release when the caller has read it already).
    """
    from kzguard.distros import dkms_install_location

    osr = osr or read_os_release(root)
    if osr.path != "/etc/os-release":  # DKMS reads only /etc/os-release
        return None
    return dkms_install_location(osr.id, osr.fields.get("ID_LIKE"))


# --- parsing `dkms status` -------------------------------------------------------------------

_STATUS = Pattern(
    r"(?P<head>[^:]+?):\s*(?P<state>installed-weak|installed|built|added|broken)(?P<rest>(?:\s.*)?)"
)
_NOTE = Pattern(r"\(([^()]*)\)")
_SKIP = ("Error!", "Warning:", "Deprecated feature:", "Manual intervention")


def parse_status(text: str) -> list[DkmsEntry]:
    """Entries from ``dkms status`` output of DKMS 2.x and 3.x; other lines are skipped.

    ``installed-weak from K`` becomes ``installed`` with that text as a note.
    """
    entries = []
    for line in text.splitlines():
        entry = _parse_line(line.strip())
        if entry is not None:
            entries.append(entry)
    return entries


def _parse_line(line: str) -> Optional[DkmsEntry]:
    if not line or line.startswith(_SKIP):
        return None
    match = _STATUS.fullmatch(line)
    if not match:
        return None
    head = _parse_head(match["head"])
    if head is None:
        return None
    module, version, kernel, arch = head
    state, rest = match["state"], match["rest"].strip()
    if (kernel is None) != (state in (ADDED, BROKEN)):
        return None
    notes = [_normalise_note(n) for n in _NOTE.findall(rest)]
    if state == "installed-weak":
        state, notes = INSTALLED, [f"installed-weak {rest}".strip()]
    return DkmsEntry(
        module, version, kernel, arch, state, tuple(dict.fromkeys(n for n in notes if n))
    )


def _parse_head(head: str) -> Optional[tuple[str, str, Optional[str], Optional[str]]]:
    """``m/v[, k, a]`` (3.x) or ``m, v[, k, a]`` (2.x)."""
    parts = [p.strip() for p in head.split(",")]
    if "/" in parts[0]:
        module, _, version = parts[0].partition("/")
        rest = parts[1:]
    else:
        module, version, rest = parts[0], (parts[1:2] or [""])[0], parts[2:]
    if len(rest) not in (0, 2) or not all(_word(p) for p in (module, version, *rest)):
        return None
    return (module, version, rest[0], rest[1]) if rest else (module, version, None, None)


def _word(text: str) -> bool:
    return bool(text) and not any(c.isspace() for c in text)


def _normalise_note(note: str) -> str:
    note = re.sub(r"^WARNING!\s*", "", note.strip())
    return note.rstrip("! ").strip()


# --- queries ---------------------------------------------------------------------------------


def _version_key(version: str) -> tuple[int, object]:
    from packaging.version import InvalidVersion, Version

    try:
        return 1, Version(version)
    except InvalidVersion:
        return 0, version


def find(entries: Iterable[DkmsEntry], module: str, kernel: str) -> Optional[DkmsEntry]:
    """The entry for ``module`` on ``kernel``: an installed one first, then the newest version."""
    candidates = [e for e in entries if e.module == module and e.kernel == kernel]
    if len(candidates) < 2:
        return candidates[0] if candidates else None
    return max(candidates, key=lambda e: (e.state == INSTALLED, _version_key(e.version)))


def versions(entries: Iterable[DkmsEntry], module: str) -> list[str]:
    """The versions of ``module`` DKMS can work with, newest first (a *broken* one, whose
    source is gone, is left out: DKMS refuses to build it)."""
    found = {e.version for e in entries if e.module == module and e.state != BROKEN}
    return sorted(found, key=_version_key, reverse=True) if len(found) > 1 else list(found)


__all__ = [
    "ADDED",
    "BROKEN",
    "BUILD_FAILED",
    "BUILT",
    "INSTALLED",
    "NOTE_DIFF",
    "NOTE_MISSING",
    "NOTE_ORIGINAL",
    "STATES",
    "DkmsEntry",
    "find",
    "install_location",
    "parse_status",
    "read_tree",
    "versions",
]
