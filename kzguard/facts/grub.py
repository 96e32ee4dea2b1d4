"""GRUB's own files, read-only: grubenv, ``/etc/default/grub``, grub.cfg menus, BLS entries.

- grubenv is GRUB's 1024-byte environment block: comment lines (``# GRUB Environment Block``),
  ``name=value`` lines (``\\`` escapes a backslash or a newline), ``#`` padding. Only
  ``grub-editenv`` writes it (kzguard runs it through the Runner; it rewrites the block).
- ``GRUB_DEFAULT`` comes from ``/etc/default/grub`` and then ``/etc/default/grub.d/*.cfg`` (the
  order ``grub-mkconfig`` sources them; the last assignment wins). ``saved`` makes grubenv's
  ``saved_entry`` the default; a number, an id, a title or a ``>`` path names an entry itself.
  When the files do not set it, GRUB's default is ``0`` (Fedora/EL ship ``saved``; a BLS host
  without the file is read as ``saved``).
- A grub.cfg menu is read from ``menuentry``/``submenu`` lines (``$menuentry_id_option`` ids,
  ``linux`` lines); an entry in a submenu is ``<submenu id>><entry id>``, as grubenv names it.
- BLS entries (``/boot/loader/entries/*.conf``, Fedora/EL) form a flat menu, newest version
  first, as GRUB's ``blscfg`` orders them; the id is the file name without ``.conf``.
"""

from __future__ import annotations

from kzguard.base.errors import FactError
from kzguard.facts import Pattern

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Optional

    from kzguard.root import Root

GRUB_DIRS = ("/boot/grub2", "/boot/grub")
BLS_DIR = "/boot/loader/entries"
DEFAULT_FILE = "/etc/default/grub"
DEFAULT_DROPINS = "/etc/default/grub.d/*.cfg"
LINUX_COMMANDS = ("linux", "linuxefi", "linux16")
MAX_SUBMENU_DEPTH = 64  # grub-mkconfig writes one level; deeper is not a menu anyone made
MAX_SHLEX = 4096  # shlex takes time in the square of a word's length: longer lines are split

_ASSIGN = Pattern(r"\s*(?:export\s+)?(GRUB_[A-Z0-9_]+)=(.*)\Z")


class MenuItem:
    """One ``menuentry`` or ``submenu`` (``children`` is a list for a submenu, else None)."""

    __slots__ = ("children", "id", "image", "title")

    def __init__(self, title: str, ident: str, submenu: bool = False):
        self.title = title
        self.id = ident or title  # GRUB matches the title where no id was given
        self.image: Optional[str] = None  # the ``linux`` line's kernel path
        self.children: Optional[list[MenuItem]] = [] if submenu else None

    @property
    def submenu(self) -> bool:
        return self.children is not None


def grub_dir(root: Root) -> Optional[str]:
    """The GRUB directory in use: the first of GRUB_DIRS with a grub.cfg or a grubenv."""
    for directory in GRUB_DIRS:
        if root.exists(f"{directory}/grub.cfg") or root.exists(f"{directory}/grubenv"):
            return directory
    return None


def uses_bls(root: Root, directory: str) -> bool:
    """Whether GRUB builds its menu from BLS entries (Fedora/EL's ``blscfg``)."""
    cfg = root.read_text_or(f"{directory}/grub.cfg") or ""
    if any(line.split()[:1] == ["blscfg"] for line in cfg.splitlines()):
        return True
    if default_settings(root).get("GRUB_ENABLE_BLSCFG") == "true":
        return True
    return not cfg and directory == "/boot/grub2" and bool(root.glob(f"{BLS_DIR}/*.conf"))


# --- grubenv -------------------------------------------------------------------------------


def parse_grubenv(data: bytes) -> dict[str, str]:
    """The variables of an environment block (a backslash escapes the next character, a
    newline included: that is how grub-editenv stores them)."""
    text = data.decode("utf-8", errors="replace")
    lines: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "\n":
            lines.append("".join(current))
            current = []
        else:
            current.append(char)
    values: dict[str, str] = {}
    for line in [*lines, "".join(current)]:
        name, sep, value = line.partition("=")
        if sep and not name.startswith("#"):
            values[name] = value
    return values


def read_grubenv(root: Root, inner: str) -> dict[str, str]:
    """The variables of the grubenv at ``inner`` (links followed inside the root); {} if absent."""
    return parse_grubenv(root.read_bytes(inner)) if root.is_file(inner) else {}


# --- /etc/default/grub ---------------------------------------------------------------------


def default_settings(root: Root) -> dict[str, str]:
    """``GRUB_*`` assignments of /etc/default/grub and its grub.d drop-ins, shell-unquoted."""
    values: dict[str, str] = {}
    for inner in [DEFAULT_FILE, *root.glob(DEFAULT_DROPINS)]:
        for line in (root.read_text_or(inner) or "").splitlines():
            match = _ASSIGN.match(line)
            if match:
                values[match.group(1)] = _unquote(match.group(2))
    return values


def grub_default(root: Root, *, bls: bool) -> tuple[str, str]:
    """``(GRUB_DEFAULT, where it was set)``; unset means ``0`` (``saved`` on a BLS host)."""
    settings = default_settings(root)
    if "GRUB_DEFAULT" in settings:
        return settings["GRUB_DEFAULT"], DEFAULT_FILE
    return ("saved" if bls else "0"), "GRUB's default"


def _unquote(raw: str) -> str:
    import shlex

    try:
        if len(raw) > MAX_SHLEX:
            raise ValueError("too long for shlex")
        return " ".join(shlex.split(raw, comments=True))
    except ValueError:
        return raw.strip().strip("\"'")


# --- menus ---------------------------------------------------------------------------------


def parse_grub_cfg(text: str) -> list[MenuItem]:
    """The top-level menu of a grub.cfg: entries and submenus with their ids and kernels.

    Submenus nested more than :data:`MAX_SUBMENU_DEPTH` deep are a :class:`FactError`."""
    top: list[MenuItem] = []
    levels = [top]  # the item list a new entry goes into
    blocks: list[Optional[MenuItem]] = []  # one per open ``{``: the item, or None (a function...)
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word = line.split(None, 1)[0]
        if word in ("menuentry", "submenu") and line.endswith("{"):
            words = _words(line[:-1])
            ident = ""
            for flag in ("$menuentry_id_option", "--id"):
                if flag in words[:-1]:
                    ident = words[words.index(flag) + 1]
            item = MenuItem(words[1] if len(words) > 1 else "", ident, word == "submenu")
            levels[-1].append(item)
            blocks.append(item)
            if item.children is not None:
                if len(levels) > MAX_SUBMENU_DEPTH:
                    raise FactError(f"submenus nested more than {MAX_SUBMENU_DEPTH} deep")
                levels.append(item.children)
        elif line.endswith("{"):
            blocks.append(None)
        elif line == "}":
            closed = blocks.pop() if blocks else None
            if closed is not None and closed.submenu and len(levels) > 1:
                levels.pop()
        elif word in LINUX_COMMANDS and blocks and blocks[-1] is not None:
            words = _words(line)
            if len(words) > 1 and blocks[-1].image is None:
                blocks[-1].image = words[1]
    return top


def read_bls_menu(root: Root) -> list[MenuItem]:
    """BLS entries as GRUB's blscfg lists them: by ``version``, newest first, then file name."""
    from functools import cmp_to_key

    from kzguard.facts.vercmp import rpmvercmp

    found: list[tuple[str, MenuItem]] = []
    for name in root.listdir(BLS_DIR):
        if not name.endswith(".conf") or name.startswith("."):
            continue
        fields = parse_bls(root.read_text(f"{BLS_DIR}/{name}"))
        item = MenuItem(fields.get("title", ""), name[: -len(".conf")])
        item.image = fields.get("linux")
        found.append((fields.get("version", ""), item))

    def newest_first(a: tuple[str, MenuItem], b: tuple[str, MenuItem]) -> int:
        if bool(a[0]) != bool(b[0]):
            return -1 if a[0] else 1
        return -(rpmvercmp(a[0], b[0]) or rpmvercmp(a[1].id, b[1].id))

    found.sort(key=cmp_to_key(newest_first))
    return [item for _, item in found]


def parse_bls(text: str) -> dict[str, str]:
    """A Boot Loader Specification entry: ``key value`` lines (the first of a repeated key)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        fields.setdefault(parts[0], parts[1].strip() if len(parts) > 1 else "")
    return fields


def flatten(menu: list[MenuItem], prefix: str = "") -> list[tuple[str, MenuItem]]:
    """Every bootable item with the id that selects it (``submenu>entry`` inside a submenu)."""
    found: list[tuple[str, MenuItem]] = []
    for item in menu:
        ident = f"{prefix}{item.id}"
        if item.children is not None:
            found += flatten(item.children, f"{ident}>")
        else:
            found.append((ident, item))
    return found


def resolve(menu: list[MenuItem], spec: str) -> Optional[MenuItem]:
    """The item GRUB boots for a ``default``/``saved_entry`` value: ``>``-separated parts, each
    an index, an id or a title; a submenu stands for its first entry. None: no such entry."""
    items = menu
    found: Optional[MenuItem] = None
    for part in spec.split(">"):
        if found is not None:
            if found.children is None:
                return None
            items = found.children
        found = _find(items, part)
        if found is None:
            return None
    while found is not None and found.children is not None:
        found = found.children[0] if found.children else None
    return found


def first_item(menu: list[MenuItem]) -> Optional[MenuItem]:
    return resolve(menu, "0") if menu else None


def _find(items: list[MenuItem], part: str) -> Optional[MenuItem]:
    if part.isdigit():
        index = int(part)
        return items[index] if index < len(items) else None
    for item in items:
        if part in (item.id, item.title):
            return item
    return None


def _words(line: str) -> list[str]:
    import shlex

    try:
        if len(line) > MAX_SHLEX:
            raise ValueError("too long for shlex")
        return shlex.split(line, comments=False)
    except ValueError:
        return line.split()
