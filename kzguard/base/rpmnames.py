"""RPM kernel package names and the kernel releases they make (dnf's and dnf5's alike).

A kernel is ``kernel``, ``kernel-core``, ``kernel-modules*`` or ``kernel-devel*`` (and the same
for the ``debug``, ``rt``, ``64k`` and ``16k`` flavours); its release is
``<version>-<release>.<arch>`` as ``uname -r`` prints it (``+<flavour>`` for a flavour). Below
both the dnf adapters and the dnf5 hold, which share it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

FLAVOURS = ("debug", "rt", "rt-debug", "64k", "64k-debug", "16k", "16k-debug")
# compiled on first use (by re's cache), for a package named kernel*: a transaction without
# kernels loads no re (5 ms of every dnf5 hook run)
_KERNEL_NAME = (
    r"kernel(?:-(?P<flavour>"
    + "|".join(f.replace("-", r"\-") for f in sorted(FLAVOURS, key=len)[::-1])
    + r"))?(?:-(?P<part>core|modules(?:-[a-z0-9-]+)?|devel(?:-matched)?))?\Z"
)
# the packages a held kernel release is kept out by (per flavour prefix)
_HOLD_PARTS = ("", "-core", "-modules*", "-devel*")
_RELEASE = r"(?P<version>[^-]+)-(?P<release>.+)\.(?P<arch>[^.+]+)(?:\+(?P<flavour>.+))?\Z"


def kernel_release(name: str, version: str, release: str, arch: str) -> Optional[str]:
    """The ``uname -r`` of the kernel a package belongs to, or ``None`` if it is no kernel."""
    if not name.startswith("kernel"):
        return None
    import re

    match = re.match(_KERNEL_NAME, name)
    if match is None:
        return None
    flavour = match.group("flavour")
    return f"{version}-{release}.{arch}" + (f"+{flavour}" if flavour else "")


def split_release(release: str) -> Optional[tuple[str, str, str, str]]:
    """``(version, release, arch, flavour)`` of a kernel release made by :func:`kernel_release`."""
    import re

    match = re.match(_RELEASE, release)
    if match is None:
        return None
    return (match["version"], match["release"], match["arch"], match["flavour"] or "")


def hold_names(flavour: str = "") -> tuple[str, ...]:
    """Name globs of a kernel's packages: ``kernel``, ``kernel-core``, ``kernel-modules*``..."""
    base = f"kernel-{flavour}" if flavour else "kernel"
    return tuple(base + part for part in _HOLD_PARTS)
