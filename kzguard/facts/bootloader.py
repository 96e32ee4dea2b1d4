"""The bootloader: its entries, the persistent default and what the NEXT boot uses (read-only).

One backend per bootloader, detected from the root in this order (docs/boot.md has the detail):

- ``zfsbootmenu``: ``/`` is a ZFS dataset and ZFSBootMenu is installed (``/etc/zfsbootmenu``, or
  ``EFI/zbm`` on an ESP). Entries are the kernels in the boot environment's ``/boot`` that have an
  initramfs; the default is the newest whose path matches ``org.zfsbootmenu:kernel`` (read with
  ``zfs get``, the only command a probe here runs), else the newest.
- ``systemd-boot``: the ``LoaderInfo`` EFI variable says so, or ``loader/loader.conf`` is on an
  ESP (``/efi``, ``/boot``, ``/boot/efi``) and there is no GRUB directory. ``LoaderEntryOneShot``
  picks the next boot; the default is ``LoaderEntryDefault`` (EFI variable), else loader.conf's
  ``default`` glob, else the first entry in systemd-boot's order (the highest version).
- ``grub-bls`` (Fedora/EL) and ``grub`` (Debian, Ubuntu, Proxmox, Arch): see
  :mod:`kzguard.facts.grub`. grubenv's ``next_entry`` picks the next boot; the default is
  ``saved_entry`` when ``GRUB_DEFAULT=saved``, else ``GRUB_DEFAULT`` itself, else the first
  entry (the newest kernel). Where the first entry of a Debian-style grub.cfg stands for "the
  newest kernel" and ``/boot`` holds a newer one than it lists, the next ``update-grub`` boots
  that one, and ``next`` says so.
- ``unknown``: none of these (UKIs alone, proxmox-boot-tool's unmounted ESPs, other loaders).

Nothing here raises: what cannot be read becomes a ``problems`` line.
"""

from __future__ import annotations

from kzguard.base.errors import CommandError, FactError
from kzguard.base.kernelrelease import sort_key, try_parse_release
from kzguard.base.record import Record
from kzguard.facts import grub

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Callable, Optional

    from kzguard.root import Root, Runner

GRUB_BLS, GRUB, SYSTEMD_BOOT, ZFSBOOTMENU, UNKNOWN = (
    "grub-bls",
    "grub",
    "systemd-boot",
    "zfsbootmenu",
    "unknown",
)
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"  # systemd's loader interface variables
ESPS = ("/efi", "/boot", "/boot/efi")
ZBM_PROPERTY = "org.zfsbootmenu:kernel"
KERNEL_PREFIXES = ("vmlinuz-", "vmlinux-", "kernel-", "linux-")
MODULE_ROOTS = ("/usr/lib/modules", "/lib/modules")
MAX_GLOB = 4096  # systemd-boot entry ids are file names: a longer default glob matches none


class BootEntry(Record):
    """One bootable entry, by the id the bootloader's default names it with."""

    id: str
    title: str
    kernel: Optional[str]  # the kernel release the entry boots, if known

    @property
    def recovery(self) -> bool:
        return "(recovery mode)" in self.title or "-recovery-" in self.id

    @property
    def floating(self) -> bool:
        """grub-mkconfig's first entry, which boots whichever kernel is newest."""
        return self.id.startswith("gnulinux-simple-")

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "title": self.title, "kernel": self.kernel}


class BootState(Record):
    """The bootloader's entries, its persistent default and what the next boot uses."""

    loader: str  # grub-bls | grub | systemd-boot | zfsbootmenu | unknown
    entries: tuple[BootEntry, ...]
    default: Optional[BootEntry]  # the persistent default
    next: Optional[BootEntry]  # what the NEXT boot uses (a one-shot entry wins)
    source: str  # how ``next`` was found, e.g. "grubenv saved_entry", "loader.conf default"
    problems: tuple[str, ...] = ()

    def entry_for(self, release: str) -> Optional[BootEntry]:
        """The entry that boots ``release`` to make the default: not a recovery entry, and where
        there is a choice, not GRUB's first entry (it follows the newest kernel; the one in the
        Advanced options submenu stays on this one), and one whose id names the release."""
        found = [e for e in self.entries if e.kernel == release]
        if not found:
            return None
        return min(found, key=lambda e: (e.recovery, e.floating, release not in e.id))

    def to_dict(self) -> dict[str, object]:
        return {
            "loader": self.loader,
            "source": self.source,
            "default": self.default.to_dict() if self.default else None,
            "next": self.next.to_dict() if self.next else None,
            "entries": [e.to_dict() for e in self.entries],
            "problems": list(self.problems),
        }


def read_boot(root: Root, runner: Optional[Runner] = None) -> BootState:
    """Read the bootloader of ``root``; ``runner`` (made when needed) runs ZFSBootMenu's
    ``zfs get``, and nothing else runs a command."""
    loader = UNKNOWN
    try:
        loader = detect(root)
        return _READERS[loader](root, runner)
    except (FactError, CommandError, OSError, UnicodeError, ValueError) as exc:
        return BootState(loader, (), None, None, "unreadable", (f"bootloader ({loader}): {exc}",))


def detect(root: Root) -> str:
    """Which bootloader boots this root (see the module documentation for the order)."""
    from kzguard.facts.mounts import root_dataset

    if root_dataset(root) is not None and zbm_installed(root):
        return ZFSBOOTMENU
    directory = grub.grub_dir(root)
    if (efi_string(root, "LoaderInfo") or "").startswith("systemd-boot") or (
        directory is None and loader_conf(root) is not None
    ):
        return SYSTEMD_BOOT
    if directory is None:
        return UNKNOWN
    return GRUB_BLS if grub.uses_bls(root, directory) else GRUB


def zbm_installed(root: Root) -> bool:
    if root.exists("/etc/zfsbootmenu"):
        return True
    return any(
        name.lower() in ("zbm", "zfsbootmenu")
        for esp in ESPS
        for name in root.listdir(f"{esp}/EFI")
    )


def efi_string(root: Root, name: str) -> Optional[str]:
    """A systemd loader-interface EFI variable as text (UTF-16LE after the attribute bytes)."""
    from kzguard.facts.secureboot import read_efivar

    raw = read_efivar(root, name, LOADER_GUID)
    if raw is None:
        return None
    return raw.decode("utf-16-le", errors="replace").split("\0", 1)[0]


def loader_conf(root: Root) -> Optional[str]:
    """The in-root path of systemd-boot's loader.conf on the first ESP that has one."""
    for esp in ESPS:
        if root.is_file(f"{esp}/loader/loader.conf"):
            return f"{esp}/loader/loader.conf"
    return None


def loader_conf_default(text: str) -> Optional[tuple[int, str]]:
    """``(line index, value)`` of loader.conf's effective (last) ``default`` line, or None."""
    found = None
    for index, line in enumerate(text.splitlines()):
        words = line.split(None, 1)
        if words and words[0] == "default":
            found = (index, words[1].strip() if len(words) > 1 else "")
    return found


class KernelImages:
    """Which kernel release a kernel image boots: ``vmlinuz-<release>``, kernel-install's
    ``/<token>/<release>/linux``, or Arch's ``vmlinuz-<pkgbase>`` (``/usr/lib/modules/<release>/
    pkgbase`` names the package)."""

    def __init__(self, root: Root):
        self.pkgbase: dict[str, str] = {}
        for base in MODULE_ROOTS:
            for name in root.listdir(base):
                text = (root.read_text_or(f"{base}/{name}/pkgbase") or "").strip()
                if text:
                    self.pkgbase.setdefault(text, name)

    def release(self, image: Optional[str]) -> Optional[str]:
        parts = [p for p in (image or "").replace("\\", "/").split("/") if p]
        if not parts:
            return None
        for prefix in KERNEL_PREFIXES:
            if parts[-1].startswith(prefix):
                rest = parts[-1][len(prefix) :]
                if rest in self.pkgbase:
                    return self.pkgbase[rest]
                if try_parse_release(rest):
                    return rest
        for part in reversed(parts[:-1]):
            if try_parse_release(part):
                return part
        return None


# --- GRUB ----------------------------------------------------------------------------------


def _read_grub(root: Root, runner: Optional[Runner]) -> BootState:
    directory = grub.grub_dir(root) or grub.GRUB_DIRS[-1]
    bls = grub.uses_bls(root, directory)
    problems: list[str] = []
    cfg = f"{directory}/grub.cfg"
    if bls:
        menu = grub.read_bls_menu(root)
    else:
        text = root.read_text_or(cfg)
        if text is None:
            problems.append(f"{cfg} not found: GRUB has no menu")
        menu = grub.parse_grub_cfg(text or "")
    images = KernelImages(root)
    pairs = grub.flatten(menu)
    by_item = {id(item): BootEntry(i, item.title, images.release(item.image)) for i, item in pairs}
    entries = tuple(by_item[id(item)] for _, item in pairs)
    env = grub.read_grubenv(root, f"{directory}/grubenv")
    setting, where = grub.grub_default(root, bls=bls)
    if setting == "saved":
        spec, source = env.get("saved_entry", ""), "grubenv saved_entry"
    else:
        spec, source = setting, f"GRUB_DEFAULT={setting} ({where})"
    item = grub.resolve(menu, spec) if spec else None
    if spec and item is None:
        problems.append(f"{source} {_shown(spec)} names no menu entry: GRUB boots the first one")
    if item is None:
        item = grub.first_item(menu)
        source = "first menu entry" + ("" if spec else f" ({source} not set)")
    default = by_item.get(id(item)) if item else None
    if default is not None and not bls and _follows_newest(menu, item, spec):
        default, note = _after_update_grub(root, images, default)
        if note:
            problems.append(f"{cfg} {note}")
            source += "; the newest kernel in /boot once update-grub runs"
    nxt = default
    if env.get("next_entry"):
        once = grub.resolve(menu, env["next_entry"])
        if once is None:
            problems.append(f"grubenv next_entry {_shown(env['next_entry'])} names no menu entry")
        else:
            nxt, source = by_item[id(once)], "grubenv next_entry (one-shot)"
    return BootState(GRUB_BLS if bls else GRUB, entries, default, nxt, source, tuple(problems))


def _follows_newest(menu: list[grub.MenuItem], item: grub.MenuItem, spec: str) -> bool:
    """Whether the chosen entry is grub-mkconfig's first one, which boots the newest kernel."""
    return item is grub.first_item(menu) and (
        spec in ("", "0") or item.id.startswith("gnulinux-simple-")
    )


def _after_update_grub(
    root: Root, images: KernelImages, entry: BootEntry
) -> tuple[BootEntry, Optional[str]]:
    newest = max(
        (r for name in root.listdir("/boot") for r in [images.release(name)] if r),
        key=sort_key,
        default=None,
    )
    if newest is None or entry.kernel is None or sort_key(newest) <= sort_key(entry.kernel):
        return entry, None
    note = f"does not list {newest} yet: update-grub will make it the first entry"
    return entry._replace(kernel=newest), note


# --- systemd-boot --------------------------------------------------------------------------


def _read_systemd_boot(root: Root, runner: Optional[Runner]) -> BootState:
    images = KernelImages(root)
    entries = tuple(sd_entries(root, images))
    problems: list[str] = []
    conf = loader_conf(root)
    conf_default = loader_conf_default(root.read_text(conf)) if conf else None
    candidates = [
        (efi_string(root, "LoaderEntryDefault"), "LoaderEntryDefault EFI variable"),
        (conf_default[1] if conf_default else None, f"{conf} default"),
    ]
    default, source = None, ""
    for pattern, where in candidates:
        if not pattern:
            continue
        if pattern == "@saved":
            pattern, where = efi_string(root, "LoaderEntryLastBooted"), f"{where} @saved"
        default = _sd_match(entries, pattern)
        if default is not None:
            source = where
            break
        problems.append(f"{where} {_shown(pattern)} matches no boot entry")
    if default is None and entries:
        default, source = entries[0], "first entry in systemd-boot's order (no default set)"
    nxt = default
    oneshot = efi_string(root, "LoaderEntryOneShot")
    if oneshot:
        once = _sd_match(entries, oneshot)
        if once is None:
            problems.append(f"LoaderEntryOneShot {_shown(oneshot)} matches no boot entry")
        else:
            nxt, source = once, "LoaderEntryOneShot EFI variable (one-shot)"
    return BootState(SYSTEMD_BOOT, entries, default, nxt, source or "no entries", tuple(problems))


def sd_entries(root: Root, images: KernelImages) -> list[BootEntry]:
    """Type #1 entries of every ESP/XBOOTLDR in systemd-boot's menu order: entries with a
    ``sort-key`` first (by sort-key, machine-id, then version, newest first), then by id,
    highest first. The id is the file name with ``.conf``, less a boot counter (``+3-0``)."""
    import re
    from functools import cmp_to_key

    found: list[tuple[BootEntry, dict[str, str]]] = []
    seen = set()
    for esp in ESPS:
        directory = f"{esp}/loader/entries"
        real = root.resolve(directory)
        if real in seen or not root.is_dir(directory):
            continue
        seen.add(real)
        for name in root.listdir(directory):
            if not name.lower().endswith(".conf") or name.startswith((".", "auto-")):
                continue
            fields = grub.parse_bls(root.read_text(f"{directory}/{name}"))
            ident = re.sub(r"\+\d+(-\d+)?(?=\.conf\Z)", "", name, flags=re.IGNORECASE)
            release = images.release(fields.get("linux"))
            if release is None and try_parse_release(fields.get("version", "")):
                release = fields["version"]
            found.append((BootEntry(ident, fields.get("title") or ident, release), fields))

    def order(a: tuple[BootEntry, dict[str, str]], b: tuple[BootEntry, dict[str, str]]) -> int:
        ka, kb = a[1].get("sort-key"), b[1].get("sort-key")
        if (ka is None) != (kb is None):
            return -1 if ka is not None else 1
        if ka is not None and kb is not None:
            for x, y in ((ka, kb), (a[1].get("machine-id", ""), b[1].get("machine-id", ""))):
                if x != y:
                    return -1 if x < y else 1
            by_version = strverscmp(a[1].get("version", ""), b[1].get("version", ""))
            if by_version:
                return -by_version
        return -strverscmp(a[0].id.lower(), b[0].id.lower())

    found.sort(key=cmp_to_key(order))
    return [entry for entry, _ in found]


def strverscmp(a: str, b: str) -> int:
    """systemd's ``strverscmp_improved()`` (-1, 0, 1), which orders boot entries: like rpm's
    vercmp, but a ``-`` segment is older than a ``.`` one (``arch-lts.conf`` < ``arch.conf``),
    ``~`` marks a pre-release, ``^`` a patched release, and other characters are skipped."""
    if not a or not b:
        return (a > b) - (a < b)
    i = j = 0
    while True:
        i, j = _skip_invalid(a, i), _skip_invalid(b, j)
        start = (i, j)
        ca, cb = _at(a, i), _at(b, j)
        if "~" in (ca, cb):
            if (ca == "~") != (cb == "~"):
                return -1 if ca == "~" else 1
            i, j = i + 1, j + 1
            ca, cb = _at(a, i), _at(b, j)
        if not ca or not cb:
            return (ca > cb) - (ca < cb)
        for mark in "-^.":
            if mark in (ca, cb):
                if (ca == mark) != (cb == mark):
                    return -1 if ca == mark else 1
                i, j = i + 1, j + 1
                ca, cb = _at(a, i), _at(b, j)
        if ca.isdigit() or cb.isdigit():
            ea, eb = _run(a, i, str.isdigit), _run(b, j, str.isdigit)
            if (ea > i) != (eb > j):
                return 1 if ea > i else -1
            na, nb = a[i:ea].lstrip("0"), b[j:eb].lstrip("0")
            if na != nb:
                return 1 if (len(na), na) > (len(nb), nb) else -1
        else:
            ea, eb = _run(a, i, _is_alpha), _run(b, j, _is_alpha)
            sa, sb = a[i:ea], b[j:eb]
            n = min(len(sa), len(sb))
            if sa[:n] != sb[:n]:
                return 1 if sa[:n] > sb[:n] else -1
            if len(sa) != len(sb):
                return 1 if len(sa) > len(sb) else -1
        i, j = ea, eb
        if (i, j) == start:  # nothing consumed (separators in a row): move on
            i, j = i + 1, j + 1


def _shown(value: Optional[str], limit: int = 120) -> str:
    """A value for a problem line: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value or '')} characters)"


def _at(text: str, index: int) -> str:
    return text[index] if index < len(text) else ""


def _is_alpha(char: str) -> bool:
    return char.isascii() and char.isalpha()


def _run(text: str, index: int, test: Callable[[str], bool]) -> int:
    while index < len(text) and test(text[index]):
        index += 1
    return index


def _skip_invalid(text: str, index: int) -> int:
    while index < len(text) and not (
        (text[index].isascii() and text[index].isalnum()) or text[index] in "~-^."
    ):
        index += 1
    return index


def _sd_match(entries: tuple[BootEntry, ...], pattern: Optional[str]) -> Optional[BootEntry]:
    """The first entry whose id matches the glob, compared case-folded as systemd-boot does; a
    glob longer than :data:`MAX_GLOB` matches nothing (an entry id is a file name, and
    ``fnmatch`` takes time in proportion to the glob's length for every entry)."""
    from fnmatch import fnmatchcase

    if not pattern or len(pattern) > MAX_GLOB:
        return None
    return next((e for e in entries if fnmatchcase(e.id.lower(), pattern.lower())), None)


# --- ZFSBootMenu ---------------------------------------------------------------------------


def _read_zfsbootmenu(root: Root, runner: Optional[Runner]) -> BootState:
    from kzguard.facts.mounts import root_dataset

    dataset = root_dataset(root)
    entries = tuple(zbm_kernels(root, KernelImages(root)))
    problems: list[str] = []
    default, source = (entries[0] if entries else None), "newest kernel in /boot"
    try:
        value, _ = zbm_property(runner, dataset or "")
    except (CommandError, FactError) as exc:  # FactError: no runner, so no `zfs get`
        problems.append(f"cannot read {ZBM_PROPERTY} of {dataset}: {exc}")
        value = None
    if value is not None:
        found = zbm_match(entries, value)
        if found is None:
            problems.append(f"{ZBM_PROPERTY}={value} matches no kernel: the newest one boots")
        else:
            default, source = found, f"{ZBM_PROPERTY} on {dataset}"
    elif not problems:
        source += f" ({ZBM_PROPERTY} not set)"
    return BootState(ZFSBOOTMENU, entries, default, default, source, tuple(problems))


def zbm_property(runner: Optional[Runner], dataset: str) -> tuple[Optional[str], str]:
    """``(value or None when unset, source)`` of org.zfsbootmenu:kernel on ``dataset``."""
    if runner is None:
        raise FactError("org.zfsbootmenu:kernel needs `zfs get`, and no command may run here")
    proc = runner.run(["zfs", "get", "-H", "-o", "value,source", ZBM_PROPERTY, dataset])
    value, _, source = proc.stdout.rstrip("\n").partition("\t")
    source = source.strip()
    return (None if value == "-" and source in ("", "-") else value), source


def zbm_kernels(root: Root, images: KernelImages) -> list[BootEntry]:
    """Kernels in ``/boot`` with an initramfs ZFSBootMenu pairs them with, newest first
    (``sort -V`` order, as ZFSBootMenu sorts them); the id is the file name."""
    names = root.listdir("/boot")
    present = set(names)
    found = []
    for name in names:
        base, _, version = name.partition("-")
        if base not in ("vmlinuz", "vmlinux", "linux", "linuz", "kernel"):
            continue
        labels = [name, version] if version else [name]
        wanted = {
            f"{pfx}-{label}{ext}" if dash_first else f"{pfx}{ext}-{label}"
            for pfx in ("initramfs", "initrd")
            for label in labels
            for ext in (".img", "", ".img.gz", ".img.zst", ".gz", ".xz", ".zstd", ".lz4")
            for dash_first in (True, False)
        }
        if present & wanted:
            found.append(BootEntry(name, f"/boot/{name}", images.release(name)))
    found.sort(key=lambda e: _version_sort(e.id), reverse=True)
    return found


def zbm_match(entries: tuple[BootEntry, ...], value: str) -> Optional[BootEntry]:
    """ZFSBootMenu's choice: the newest kernel whose ``/boot/<file>`` matches the property as an
    extended regular expression (a plain substring where it is not a valid one)."""
    import re

    try:
        pattern = re.compile(value)
    except re.error:
        pattern = None
    for entry in entries:
        path = f"/boot/{entry.id}"
        if (pattern.search(path) is not None) if pattern else (value in path):
            return entry
    return None


def _version_sort(name: str) -> tuple[tuple[int, int, str], ...]:
    import re

    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.findall(r"\d+|\D+", name)
    )


def _read_unknown(root: Root, runner: Optional[Runner]) -> BootState:
    return BootState(UNKNOWN, (), None, None, "no supported bootloader found")


_READERS: dict[str, Callable[[Root, Optional[Runner]], BootState]] = {
    GRUB_BLS: _read_grub,
    GRUB: _read_grub,
    SYSTEMD_BOOT: _read_systemd_boot,
    ZFSBOOTMENU: _read_zfsbootmenu,
    UNKNOWN: _read_unknown,
}
