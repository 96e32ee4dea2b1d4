"""os-release to distro family, and the running kernel."""

from __future__ import annotations

import pytest

from devtools.hostbuilder import HostTree
from kzguard import distros
from kzguard.facts.host import detect_family
from kzguard.facts.osrelease import parse_os_release, read_os_release, read_running_release
from kzguard.root import Root


@pytest.mark.parametrize(
    ("os_id", "id_like", "family"),
    [
        ("fedora", "", "fedora"),
        ("rhel", "fedora", "el"),
        ("rocky", "rhel centos fedora", "el"),
        ("almalinux", "rhel centos fedora", "el"),
        ("centos", "rhel fedora", "el"),
        ("debian", "", "debian"),
        ("ubuntu", "debian", "ubuntu"),
        ("linuxmint", "ubuntu debian", "ubuntu"),
        ("arch", "", "arch"),
        ("endeavouros", "arch", "arch"),
        ("nobara", "fedora", "fedora"),
        ("gentoo", "", "unknown"),
    ],
)
def test_family_table(os_id, id_like, family):
    assert distros.family_for(os_id, id_like.split()) == family
    assert distros.distro_for(family).family == family


def test_os_release_quoting():
    text = (
        'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
        "# c\nVERSION_ID=9.5\nX='a b'\n"
    )
    fields = parse_os_release(text)
    assert fields == {
        "NAME": "Rocky Linux",
        "ID": "rocky",
        "ID_LIKE": "rhel centos fedora",
        "VERSION_ID": "9.5",
        "X": "a b",
    }


def test_os_release_falls_back_to_usr_lib(tmp_path):
    tree = HostTree(tmp_path)
    tree.write("/usr/lib/os-release", "ID=arch\n")
    info = read_os_release(Root(tmp_path))
    assert (info.id, info.path) == ("arch", "/usr/lib/os-release")


def test_running_kernel_from_proc(tmp_path):
    root = Root(tmp_path)
    assert read_running_release(root) is None
    HostTree(tmp_path).running("6.8.12-3-pve")
    assert read_running_release(root) == "6.8.12-3-pve"


def test_proxmox_is_debian_with_pve_marks(tmp_path):
    tree = HostTree(tmp_path).os_release("debian12")
    root = Root(tmp_path)
    info = read_os_release(root)
    assert detect_family(root, info, ["6.1.0-28-amd64"]) == "debian"
    assert detect_family(root, info, ["6.8.12-3-pve"]) == "proxmox"
    tree.write("/etc/pve/.version", "{}")
    assert detect_family(root, info, []) == "proxmox"


def test_reason_docs_are_generated_from_the_code():
    from pathlib import Path

    from kzguard.reasons import render_docs

    docs = Path(__file__).resolve().parent.parent / "docs" / "reasons.md"
    assert docs.read_text() == render_docs(), "regenerate: python -c 'from kzguard.reasons ...'"
