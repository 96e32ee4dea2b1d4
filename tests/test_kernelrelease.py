"""Kernel release parsing for every family's formats."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kzguard.base.errors import UsageError
from kzguard.base.kernelrelease import (
    ReleaseError,
    parse_linux_version,
    parse_release,
    sort_key,
    try_parse_release,
)

CASES = [
    ("6.13.2-200.fc41.x86_64", (6, 13, 2)),
    ("5.14.0-503.11.1.el9_5.x86_64", (5, 14, 0)),
    ("5.14.0-503.11.1.el9_5.x86_64+debug", (5, 14, 0)),
    ("6.12.6-amd64", (6, 12, 6)),
    ("6.1.0-28-amd64", (6, 1, 0)),
    ("6.12.6+bpo-amd64", (6, 12, 6)),
    ("6.1.0-28-cloud-amd64", (6, 1, 0)),
    ("6.8.0-45-generic", (6, 8, 0)),
    ("6.8.12-3-pve", (6, 8, 12)),
    ("6.12.4-arch1-1", (6, 12, 4)),
    ("6.6.63-1-lts", (6, 6, 63)),
    ("6.12.10-zen1-1-zen", (6, 12, 10)),
    ("6.12.4-hardened1-1-hardened", (6, 12, 4)),
    ("6.13.0-rc3-1-mainline", (6, 13, 0)),
    ("7.0-rc1", (7, 0, 0)),
    ("6.10.0", (6, 10, 0)),
    ("4.19.0-0.bpo.6-amd64", (4, 19, 0)),
]


@pytest.mark.parametrize(("release", "upstream"), CASES)
def test_parses_every_family(release, upstream):
    parsed = parse_release(release)
    assert parsed.upstream == upstream
    assert parsed.series == upstream[:2]
    assert str(parsed) == release


@pytest.mark.parametrize(
    "bad",
    ["", "linux", "6", "6.", "amd64-6.1", "6.1/../../etc", "6.1 0", "6.1\n", "x" * 300, "61.a"],
)
def test_rejects_what_is_not_a_release(bad):
    with pytest.raises(ReleaseError) as info:
        parse_release(bad)
    assert isinstance(info.value, UsageError)
    assert try_parse_release(bad) is None


def test_versions_compare_numerically_not_as_text():
    order = ["6.9.1-amd64", "6.10.0-amd64", "6.12.6-amd64", "7.0.0-amd64"]
    assert sorted(reversed(order), key=sort_key) == order
    assert parse_release("6.9.0-1").series < parse_release("6.10.0-1").series


def test_sort_key_orders_abi_numbers_within_a_series():
    releases = ["6.1.0-28-amd64", "6.1.0-9-amd64", "6.1.0-10-amd64"]
    assert sorted(releases, key=sort_key) == ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-28-amd64"]


@pytest.mark.parametrize(("text", "value"), [("6.12", (6, 12, 0)), ("2.6.32", (2, 6, 32))])
def test_linux_bounds(text, value):
    assert parse_linux_version(text) == value


@pytest.mark.parametrize("bad", ["6", "6.x", "", "six.twelve"])
def test_linux_bounds_reject_garbage(bad):
    with pytest.raises(ValueError):
        parse_linux_version(bad)


@given(
    st.integers(0, 99),
    st.integers(0, 99),
    st.integers(0, 999),
    st.from_regex(r"[-+][a-z0-9._-]{0,20}", fullmatch=True).filter(lambda s: ".." not in s),
)
def test_upstream_is_the_leading_numbers(major, minor, patch, suffix):
    parsed = parse_release(f"{major}.{minor}.{patch}{suffix}")
    assert parsed.upstream == (major, minor, patch)


@given(st.text(max_size=40))
def test_never_raises_anything_but_release_error(text):
    with contextlib.suppress(ReleaseError):
        parse_release(text)
