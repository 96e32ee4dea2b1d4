"""Kernel release strings (``uname -r``) and the upstream version they stand for.

Every family writes the upstream version first and its own suffix after it::

    6.13.2-200.fc41.x86_64        Fedora          5.14.0-503.11.1.el9_5.x86_64   EL
    6.12.6-amd64, 6.1.0-28-amd64  Debian          6.12.6+bpo-amd64               Debian backports
    6.8.0-45-generic              Ubuntu          6.8.12-3-pve                   Proxmox
    6.12.4-arch1-1, 6.6.63-1-lts  Arch            6.12.10-zen1-1-zen             Arch zen

so the upstream version is the leading ``MAJOR.MINOR[.PATCH]``, compared numerically
(6.9 < 6.10 < 7.0). OpenZFS support is decided on ``MAJOR.MINOR`` only.
"""

from __future__ import annotations

import re

from kzguard.base.errors import UsageError
from kzguard.base.record import Record

TYPE_CHECKING = False  # typing costs 2 ms to import
if TYPE_CHECKING:
    from typing import Optional

_ALLOWED = re.compile(r"[A-Za-z0-9._+~-]{1,200}\Z")
_UPSTREAM = re.compile(r"(\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?(?![\d])")
_VERSION = re.compile(r"(\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?\Z")

Upstream = tuple[int, int, int]


class ReleaseError(UsageError):
    """A string that is not a kernel release."""


class KernelRelease(Record):
    """A parsed kernel release: the string as given and its upstream version."""

    release: str
    major: int
    minor: int
    patch: int

    @property
    def upstream(self) -> Upstream:
        return (self.major, self.minor, self.patch)

    @property
    def series(self) -> tuple[int, int]:
        """``(MAJOR, MINOR)``: what OpenZFS's Linux-Maximum is compared with."""
        return (self.major, self.minor)

    @property
    def upstream_str(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def __str__(self) -> str:
        return self.release


def parse_release(release: str) -> KernelRelease:
    """Parse a kernel release string; raise :class:`ReleaseError` when it is not one."""
    if not isinstance(release, str) or not _ALLOWED.match(release) or ".." in release:
        raise ReleaseError(f"{release!r} is not a kernel release (like 6.12.6-amd64)")
    match = _UPSTREAM.match(release)
    if not match:
        raise ReleaseError(f"{release!r} is not a kernel release: it must start with MAJOR.MINOR")
    rest = release[match.end() :]
    if rest and rest[0] not in "-+._~" and not rest[0].isalpha():
        raise ReleaseError(f"{release!r} is not a kernel release")
    major, minor, patch = match.group(1), match.group(2), match.group(3)
    return KernelRelease(release, int(major), int(minor), int(patch or 0))


def try_parse_release(release: str) -> Optional[KernelRelease]:
    """Like :func:`parse_release`, but ``None`` instead of an error."""
    try:
        return parse_release(release)
    except ReleaseError:
        return None


def parse_linux_version(text: str) -> Upstream:
    """Parse a bound such as ``6.12`` or ``2.6.32`` (META's Linux-Minimum/Maximum)."""
    match = _VERSION.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a Linux version (MAJOR.MINOR[.PATCH])")
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def sort_key(release: str) -> tuple[object, ...]:
    """Order releases as an admin would: upstream first, then the numbers of the suffix."""
    parsed = try_parse_release(release)
    head: tuple[int, ...] = parsed.upstream if parsed else (-1, -1, -1)
    tail = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.findall(r"\d+|[A-Za-z]+", release)
    )
    return (head, tail)
