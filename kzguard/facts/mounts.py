"""The root's mount table: which ZFS dataset, if any, is mounted at ``/``."""

from __future__ import annotations

from kzguard.root import Root

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Optional

MOUNTS = ("/proc/self/mounts", "/proc/mounts")


def root_dataset(root: Root) -> Optional[str]:
    """The ZFS dataset mounted at ``/`` according to the root's mount table, or ``None``."""
    for path in MOUNTS:
        text = root.read_text_or(path)
        if text is None:
            continue
        found = None
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] == "/":
                found = fields[0].replace("\\040", " ") if fields[2] == "zfs" else None
        return found  # the last mount on / is the one in effect
    return None
