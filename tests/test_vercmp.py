"""Version comparators against tables checked with the real tools, and (``real``) against
``rpm``'s Lua ``rpm.vercmp``, ``dpkg --compare-versions`` and pacman's ``vercmp`` on many
generated pairs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kzguard.facts.vercmp import (
    alpm_vercmp,
    dpkg_vercmp,
    rpm_evrcmp,
    rpmvercmp,
    split_dpkg_version,
    split_evr,
)

# (a, b, expected) — every expected value is what rpm 4.18 printed for rpm.vercmp(a, b)
RPMVERCMP = [
    ("1.0", "1.0", 0),
    ("1.0", "2.0", -1),
    ("2.0.1", "2.0.1a", -1),
    ("5.5p1", "5.5p10", -1),
    ("10xyz", "10.1xyz", -1),
    ("xyz10", "xyz10.1", -1),
    ("1.0~rc1", "1.0", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0~rc1~git123", "1.0~rc1", -1),
    ("1.0~", "1.0", -1),
    ("1.0^", "1.0", 1),
    ("1.0^git1", "1.01", -1),
    ("1.0^git1", "1.0^git2", -1),
    ("1.0^git1~pre", "1.0^git1", -1),
    ("1.0^", "1.0~", 1),
    ("200.fc41", "1000.fc41", -1),
    ("1b.fc17", "1.fc17", -1),
    ("1.0010", "1.9", 1),
    ("a", "1", -1),
    ("1..0", "1.0", 0),
    ("1_0", "1.0", 0),
    ("fc4", "fc.4", 0),
    ("2a", "2.0", -1),
    ("1.0.0", "1.0", 1),
    ("1.0a", "1.0", 1),
    ("503.11.1.el9_5", "427.13.1.el9_4", 1),
    ("0001", "1", 0),
    ("1.é", "1.0", -1),
    ("+1", "1", 0),
    ("abc", "ABC", 1),
]
RPM_EVR = [
    ("0:5", "1", 1),
    ("1:1.0", "2.0", 1),
    (":1-1", "0:1-1", 0),
    ("1:6.1-1", "6.2-1", 1),
    ("6.13.2-200.fc41", "6.13.2-100.fc41", 1),
    ("6.13.2", "6.13.2-100.fc41", -1),
    ("6.12.10-200.fc41", "6.13.2-100.fc41", -1),
    ("5.14.0-503.11.1.el9_5", "5.14.0-503.9.1.el9_5", 1),
]
# sign of `dpkg --compare-versions` (dpkg 1.21)
DPKG = [
    ("1.0", "1.0-0", 0),
    ("1.0~rc1", "1.0", -1),
    ("1.0", "1.0+b1", -1),
    ("1:0.1", "2.0", 1),
    ("0:1.0", "1.0", 0),
    ("00:1", "0:1", 0),
    ("6.1.119-1", "6.1.119-1+deb12u1", -1),
    ("6.12.9-1~bpo12+1", "6.12.9-1", -1),
    ("1.0~", "1.0", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0~~a", "1.0~", -1),
    ("1.0", "1.0~~~", 1),
    ("1.2.3", "1.2.3.0", -1),
    ("1.2a", "1.2+", -1),
    ("1.2+", "1.2.", -1),
    ("6.8.0.47.48", "6.8.0.45.45", 1),
    ("1-1-1", "1-1", 1),
    ("1.0-1", "1.0-1.1", -1),
    ("a", "1", 1),
    ("1.0a", "1.0A", 1),
    ("1.0.0", "1.0", 1),
    ("1.010", "1.9", 1),
    ("2.30-1", "2.3-1", 1),
    ("8.4.8.1-1.1~pve", "8.4.8.1-1", 1),
]
# pacman 6.0.2 `vercmp`
ALPM = [
    ("1.0", "1.0-1", 0),
    ("1.0-1", "1.0-2", -1),
    ("1:1.0", "2.0", 1),
    ("2:1-1", "1:9-9", 1),
    ("6.12.4.arch1-1", "6.12.10.arch1-1", -1),
    ("6.12.arch1-1", "6.12.1.arch1-1", -1),
    ("6.12.10.zen1-1", "6.12.9.zen1-1", 1),
    ("6.6.63-1", "6.6.63-2", -1),
    ("1.0a", "1.0", -1),
    ("1.0alpha", "1.0", -1),
    ("1.0rc1", "1.0", -1),
    ("1.0~rc1", "1.0", 1),
    ("1.0", "1.0.a", -1),
    ("1.0", "1.0.1", -1),
    ("1..0", "1.0", 1),
    (".1", "1", 1),
    ("1.0..", "1.0.", 0),
    ("1.5.b-1", "1.5.b", 0),
    ("1.5-1", "1.5.b", -1),
    ("1.5.1", "1.5.b", 1),
    ("1.0-1", "1.0.1-1", -1),
    ("1_0", "1.0", 0),
    ("1.0", "1-0", 1),
    ("a", "1", -1),
]


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


@pytest.mark.parametrize(("a", "b", "expected"), RPMVERCMP)
def test_rpmvercmp_table(a, b, expected):
    assert rpmvercmp(a, b) == expected
    assert rpmvercmp(b, a) == -expected


@pytest.mark.parametrize(("a", "b", "expected"), RPM_EVR + [(a, b, e) for a, b, e in RPMVERCMP])
def test_rpm_evrcmp_table(a, b, expected):
    if ":" not in a + b and "-" not in a + b:
        assert rpm_evrcmp(a, b) == rpmvercmp(a, b)
    assert rpm_evrcmp(a, b) == expected


@pytest.mark.parametrize(("a", "b", "expected"), DPKG)
def test_dpkg_vercmp_table(a, b, expected):
    assert _sign(dpkg_vercmp(a, b)) == expected
    assert _sign(dpkg_vercmp(b, a)) == -expected


@pytest.mark.parametrize(("a", "b", "expected"), ALPM)
def test_alpm_vercmp_table(a, b, expected):
    assert alpm_vercmp(a, b) == expected
    assert alpm_vercmp(b, a) == -expected


def test_split_helpers():
    assert split_evr("1:6.13.2-200.fc41") == ("1", "6.13.2", "200.fc41")
    assert split_evr(":1-1") == ("0", "1", "1")
    assert split_evr("6.13.2") == (None, "6.13.2", None)
    assert split_dpkg_version("2:1.0-3-4") == (2, "1.0-3", "4")
    assert split_dpkg_version("1.0") == (0, "1.0", "")
    with pytest.raises(ValueError, match="epoch"):
        dpkg_vercmp("x:1", "1")


# --- properties ------------------------------------------------------------------------

RPM_TEXT = st.text(alphabet="0123456789abzZ.~^_-+:", min_size=1, max_size=10)
DEB_UPSTREAM = st.from_regex(r"[0-9][0-9a-zA-Z.+~]{0,7}", fullmatch=True)
DEB_VERSION = st.builds(
    lambda e, u, r: f"{e}{u}{r}",
    st.sampled_from(["", "1:", "0:", "10:"]),
    DEB_UPSTREAM,
    st.sampled_from(["", "-1", "-0", "-1~bpo1", "-2+b1", "-1.1"]),
)
COMPARATORS = [
    (rpmvercmp, RPM_TEXT),
    (rpm_evrcmp, RPM_TEXT),
    (alpm_vercmp, RPM_TEXT),
    (dpkg_vercmp, DEB_VERSION),
]


@pytest.mark.parametrize(("cmp", "strategy"), COMPARATORS)
def test_reflexive_and_antisymmetric(cmp: Callable[[str, str], int], strategy):
    @given(strategy, strategy)
    @settings(max_examples=150, deadline=None)
    def check(a: str, b: str) -> None:
        assert cmp(a, a) == 0
        assert _sign(cmp(a, b)) == -_sign(cmp(b, a))

    check()


@given(DEB_VERSION, DEB_VERSION, DEB_VERSION)
@settings(max_examples=150, deadline=None)
def test_dpkg_order_is_transitive(a, b, c):
    if dpkg_vercmp(a, b) <= 0 and dpkg_vercmp(b, c) <= 0:
        assert dpkg_vercmp(a, c) <= 0


@given(RPM_TEXT, RPM_TEXT, RPM_TEXT)
@settings(max_examples=150, deadline=None)
def test_rpm_order_is_transitive(a, b, c):
    if rpmvercmp(a, b) <= 0 and rpmvercmp(b, c) <= 0:
        assert rpmvercmp(a, c) <= 0


# --- the real tools ---------------------------------------------------------------------


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


def _rpm_real(pairs: list[tuple[str, str]], tmp: Path) -> list[int]:
    """rpm.vercmp of many pairs in one ``rpm --eval`` (pairs read from a file by Lua)."""
    data = tmp / "pairs.tsv"
    data.write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    lua = (
        f'%{{lua: for l in io.lines("{data}") do local a, b = l:match("^(.-)\\t(.*)$"); '
        'print(rpm.vercmp(a, b) .. " ") end}'
    )
    out = subprocess.run(["rpm", "--eval", lua], capture_output=True, text=True, check=True)
    return [int(x) for x in out.stdout.split()]


def _dpkg_real(a: str, b: str) -> int:
    for op, result in (("lt", -1), ("eq", 0)):
        argv = ["dpkg", "--compare-versions", a, op, b]
        if subprocess.run(argv, stderr=subprocess.DEVNULL).returncode == 0:
            return result
    return 1


def _alpm_real(a: str, b: str) -> int:
    return int(subprocess.run(["vercmp", a, b], capture_output=True, text=True).stdout)


@pytest.mark.real
def test_rpm_tables_match_real_rpm(tmp_path):
    _need("rpm")
    pairs = [(a, b) for a, b, _ in RPMVERCMP + RPM_EVR]
    assert _rpm_real(pairs, tmp_path) == [e for _, _, e in RPMVERCMP + RPM_EVR]


@pytest.mark.real
def test_rpm_evrcmp_matches_real_rpm_on_generated_pairs(tmp_path):
    _need("rpm")

    @given(st.lists(st.tuples(RPM_TEXT, RPM_TEXT), min_size=300, max_size=300))
    @settings(max_examples=5, deadline=None)
    def check(pairs):
        assert _rpm_real(pairs, tmp_path) == [rpm_evrcmp(a, b) for a, b in pairs]

    check()


@pytest.mark.real
def test_dpkg_matches_real_dpkg():
    _need("dpkg")
    assert [_dpkg_real(a, b) for a, b, _ in DPKG] == [e for _, _, e in DPKG]

    @given(st.lists(st.tuples(DEB_VERSION, DEB_VERSION), min_size=40, max_size=40))
    @settings(max_examples=3, deadline=None)
    def check(pairs):
        assert [_dpkg_real(a, b) for a, b in pairs] == [_sign(dpkg_vercmp(a, b)) for a, b in pairs]

    check()


@pytest.mark.real
def test_alpm_matches_real_vercmp():
    _need("vercmp")
    assert [_alpm_real(a, b) for a, b, _ in ALPM] == [e for _, _, e in ALPM]

    @given(st.lists(st.tuples(RPM_TEXT, RPM_TEXT), min_size=40, max_size=40))
    @settings(max_examples=3, deadline=None)
    def check(pairs):
        assert [_alpm_real(a, b) for a, b in pairs] == [alpm_vercmp(a, b) for a, b in pairs]

    check()
