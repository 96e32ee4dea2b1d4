"""os-release (``/etc/os-release``, else ``/usr/lib/os-release``) and the running kernel."""

from __future__ import annotations

import shlex
from typing import Optional

from kzguard.base.record import Factory, Record
from kzguard.root import Root

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
        try:
            words = shlex.split(raw, comments=False, posix=True)
        except ValueError:
            continue
        fields[key.strip()] = " ".join(words)
    return fields


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
