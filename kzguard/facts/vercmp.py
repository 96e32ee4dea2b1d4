"""Version ordering of rpm, dpkg and pacman, ported from their C sources.

Each comparator returns -1, 0 or 1 (``dpkg_vercmp`` returns any negative, zero or positive
number, like dpkg). They are pure and only treat ASCII letters and digits as such, as the C
code does (``risalnum``, ``c_isdigit``, ``isalnum`` in the C locale).

- :func:`rpmvercmp`: ``rpmio/rpmvercmp.c`` (rpm 4.18), with ``~`` and ``^``.
- :func:`rpm_evrcmp`: ``rpmverCmp`` (``rpmio/rpmver.c``) on ``[epoch:]version[-release]``
  strings, which is what ``rpm.vercmp()`` in rpm's Lua compares.
- :func:`dpkg_vercmp`: ``lib/dpkg/version.c`` (``dpkg --compare-versions``).
- :func:`alpm_vercmp`: ``lib/libalpm/version.c`` (pacman's ``vercmp``): rpm's algorithm
  before ``~``/``^`` existed, where a longer run of separators wins, plus epoch and pkgrel.
"""

from __future__ import annotations

import string

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Optional

_DIGITS = frozenset(string.digits)
_ALPHA = frozenset(string.ascii_letters)
_ALNUM = _DIGITS | _ALPHA


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _span(text: str, pos: int, chars: frozenset) -> int:
    """Index of the first character at or after ``pos`` that is not in ``chars``."""
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _segment_cmp(a: str, b: str) -> int:
    """Compare two segments of the same kind the way strcmp does after leading zeros go."""
    if a[:1] in _DIGITS:
        a, b = a.lstrip("0"), b.lstrip("0")
        if len(a) != len(b):
            return 1 if len(a) > len(b) else -1
    return _sign((a > b) - (a < b))


def _next_segments(a: str, i: int, b: str, j: int) -> tuple[str, str]:
    """The alpha or numeric segments starting at ``a[i]`` and ``b[j]`` (kind set by ``a``)."""
    kind = _DIGITS if a[i] in _DIGITS else _ALPHA
    return a[i : _span(a, i, kind)], b[j : _span(b, j, kind)]


def rpmvercmp(a: str, b: str) -> int:
    """rpm's ordering of two version (or release) strings."""
    if a == b:
        return 0
    i = j = 0
    while i < len(a) or j < len(b):
        while i < len(a) and a[i] not in _ALNUM and a[i] not in "~^":
            i += 1
        while j < len(b) and b[j] not in _ALNUM and b[j] not in "~^":
            j += 1
        ca, cb = a[i : i + 1], b[j : j + 1]
        if "~" in (ca, cb):  # a tilde sorts before everything, even the end
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if "^" in (ca, cb):  # a caret sorts after the end, before anything else
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (ca and cb):
            break
        seg_a, seg_b = _next_segments(a, i, b, j)
        if not seg_b:  # numeric beats alpha
            return 1 if ca in _DIGITS else -1
        rc = _segment_cmp(seg_a, seg_b)
        if rc:
            return rc
        i, j = i + len(seg_a), j + len(seg_b)
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


def _alpm_rpmvercmp(a: str, b: str) -> int:
    """libalpm's copy of rpmvercmp: no ``~``/``^``, separator runs compared by length."""
    if a == b:
        return 0
    i = j = 0  # start of the current separator run in a and b
    one = two = 0
    while one < len(a) and two < len(b):
        one = _span_not(a, one)
        two = _span_not(b, two)
        if not (one < len(a) and two < len(b)):
            break
        if one - i != two - j:
            return -1 if one - i < two - j else 1
        seg_a, seg_b = _next_segments(a, one, b, two)
        if not seg_b:
            return 1 if a[one] in _DIGITS else -1
        rc = _segment_cmp(seg_a, seg_b)
        if rc:
            return rc
        one, two = one + len(seg_a), two + len(seg_b)
        i, j = one, two
    rest_a, rest_b = a[one : one + 1], b[two : two + 1]
    if not rest_a and not rest_b:
        return 0
    # a remaining alpha string never beats an empty one
    if (not rest_a and rest_b not in _ALPHA) or (rest_a and rest_a in _ALPHA):
        return -1
    return 1


def _span_not(text: str, pos: int) -> int:
    """Index of the first ASCII letter or digit at or after ``pos``."""
    while pos < len(text) and text[pos] not in _ALNUM:
        pos += 1
    return pos


def split_evr(evr: str) -> tuple[Optional[str], str, Optional[str]]:
    """Split ``[epoch:]version[-release]`` like rpm's and libalpm's ``parseEVR``.

    The epoch is the run of leading digits before a ``:`` (``"0"`` when that run is empty);
    the release follows the last ``-`` after those digits. Missing parts are ``None``.
    """
    s = _span(evr, 0, _DIGITS)
    dash = evr.rfind("-", s)
    epoch: Optional[str] = None
    version_start = 0
    if evr[s : s + 1] == ":":
        epoch = evr[:s] or "0"
        version_start = s + 1
    if dash >= 0:
        return epoch, evr[version_start:dash], evr[dash + 1 :]
    return epoch, evr[version_start:], None


def rpm_evrcmp(a: str, b: str) -> int:
    """rpm's ordering of two ``[epoch:]version[-release]`` strings (``rpmverCmp``).

    A missing epoch is 0; a missing release sorts before any release.
    """
    ea, va, ra = split_evr(a)
    eb, vb, rb = split_evr(b)
    rc = rpmvercmp(ea or "0", eb or "0") or rpmvercmp(va, vb)
    if rc or ra == rb:
        return rc
    if ra is None or rb is None:
        return -1 if ra is None else 1
    return rpmvercmp(ra, rb)


def alpm_vercmp(a: str, b: str) -> int:
    """pacman's ordering of two ``[epoch:]pkgver[-pkgrel]`` strings (``alpm_pkg_vercmp``)."""
    if a == b:
        return 0
    ea, va, ra = split_evr(a)
    eb, vb, rb = split_evr(b)
    rc = _alpm_rpmvercmp(ea or "0", eb or "0") or _alpm_rpmvercmp(va, vb)
    if not rc and ra is not None and rb is not None:
        rc = _alpm_rpmvercmp(ra, rb)
    return rc


def _dpkg_order(char: str) -> int:
    """dpkg's weight of one non-digit character; ``""`` is the end of the string."""
    if not char or char in _DIGITS:
        return 0
    if char in _ALPHA:
        return ord(char)
    if char == "~":
        return -1
    return ord(char) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's ``verrevcmp`` on an upstream version or a revision."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and a[i] not in _DIGITS) or (j < len(b) and b[j] not in _DIGITS):
            diff = _dpkg_order(a[i : i + 1]) - _dpkg_order(b[j : j + 1])
            if diff:
                return diff
            i, j = i + 1, j + 1
        i, j = _span(a, i, frozenset("0")), _span(b, j, frozenset("0"))
        end_a, end_b = _span(a, i, _DIGITS), _span(b, j, _DIGITS)
        if end_a - i != end_b - j:
            return 1 if end_a - i > end_b - j else -1
        first_diff = next((ord(x) - ord(y) for x, y in zip(a[i:end_a], b[j:end_b]) if x != y), 0)
        if first_diff:
            return first_diff
        i, j = end_a, end_b
    return 0


def split_dpkg_version(version: str) -> tuple[int, str, str]:
    """``(epoch, upstream, revision)`` of a Debian version, like dpkg's ``parseversion``.

    Raises :class:`ValueError` when the epoch is not a number. An empty string is the
    lowest version (``dpkg --compare-versions`` treats it so).
    """
    version = version.strip()
    epoch = 0
    colon = version.find(":")
    if colon >= 0:
        if not (version[:colon].isascii() and version[:colon].isdigit()):
            raise ValueError(f"epoch in version {version!r} is not a number")
        epoch, version = int(version[:colon]), version[colon + 1 :]
    hyphen = version.rfind("-")
    if hyphen < 0:
        return epoch, version, ""
    return epoch, version[:hyphen], version[hyphen + 1 :]


def dpkg_vercmp(a: str, b: str) -> int:
    """dpkg's ordering of two Debian versions: negative, zero or positive.

    Raises :class:`ValueError` on a non-numeric epoch.
    """
    ea, ua, ra = split_dpkg_version(a)
    eb, ub, rb = split_dpkg_version(b)
    if ea != eb:
        return 1 if ea > eb else -1
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)
