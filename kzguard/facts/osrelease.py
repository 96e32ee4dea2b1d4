"""os-release (``/etc/os-release``, else ``/usr/lib/os-release``) and the running kernel."""

from __future__ import annotations

from kzguard.base.record import Factory, Record
from kzguard.root import Root

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Optional

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
RUNNING_RELEASE_PATH = "/proc/sys/kernel/osrelease"
MAX_LINE = 4096  # shlex takes time in the square of a word's length: longer lines are skipped


class OsRelease(Record):
    """The fields of os-release that kzguard uses (all of them in ``fields``)."""

    id: str = ""
    id_like: tuple[str, ...] = ()
    version_id: str = ""
    pretty_name: str = ""
    path: Optional[str] = None
    fields: dict[str, str] = Factory(dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "id_like": list(self.id_like),
            "version_id": self.version_id,
            "pretty_name": self.pretty_name,
        }


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release's shell-like ``KEY=value`` lines (quoting per os-release(5)); a line
    longer than :data:`MAX_LINE` is no field."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line or len(line) > MAX_LINE:
            continue
        key, _, raw = line.partition("=")
        value = _plain_value(raw)
        if value is None:
            import shlex  # only for a value with escapes, spaces or mixed quotes

            try:
                value = " ".join(shlex.split(raw, comments=False, posix=True))
            except ValueError:
                continue
        fields[key.strip()] = value
    return fields


_SHLEX_SPECIAL = frozenset(" \t\r\n'\"\\")  # shlex's whitespace, quotes and escape


def _plain_value(raw: str) -> Optional[str]:
    """What ``shlex.split`` makes of ``raw`` joined by spaces, for the forms os-release files
    use (``"text"``, ``'text'``, a bare word); ``None`` for anything else (ask shlex)."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        body = raw[1:-1]
        if raw[0] not in body and (raw[0] == "'" or "\\" not in body):
            return body
        return None
    if _SHLEX_SPECIAL.isdisjoint(raw):
        return raw
    return None


def read_os_release(root: Root) -> OsRelease:
    """The root's os-release; empty fields when neither file exists."""
    for path in OS_RELEASE_PATHS:
        text = root.read_text_or(path)
        if text is not None:
            fields = parse_os_release(text)
            return OsRelease(
                id=fields.get("ID", "").lower(),
                id_like=tuple(fields.get("ID_LIKE", "").lower().split()),
                version_id=fields.get("VERSION_ID", ""),
                pretty_name=fields.get("PRETTY_NAME", ""),
                path=path,
                fields=fields,
            )
    return OsRelease()


def read_running_release(root: Root) -> Optional[str]:
    """The running kernel's release from ``/proc/sys/kernel/osrelease`` in the root."""
    text = root.read_text_or(RUNNING_RELEASE_PATH)
    if text is None:
        return None
    text = text.strip()
    return text or None
