"""Debian 13 with its own zfs-dkms (2.3.x) built by the real DKMS for trixie's 6.12 kernel.

(c) Another trixie kernel (the ``cloud`` flavour of the same 6.12) installed without its
    headers: DKMS cannot build ZFS for it, the post-install check fails it, pins it, and with
    GRUB's files in the root (``grub-common``: grub-mkconfig and grub-editenv, a grubenv,
    ``GRUB_DEFAULT=saved``) keeps the boot default on the kernel whose module DKMS built.
(d) The kernel of trixie-backports is newer than every ZFS Debian packages (trixie's and
    trixie-backports' zfs-dkms): refused, alone and together with backports' zfs-dkms.

One root serves every scenario in the order of this file: the refusals leave it as it was
(each asserts that it did), (c) changes it and comes last.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.debianlab import Built, DebianRoot
from tests.reallab.conftest import out, prepare
from tests.reallab.test_bookworm import dkms_status, meta, refused_nothing_changed, upstream

pytestmark = [pytest.mark.real, pytest.mark.reallab]

BACKPORTS = "trixie-backports"
DEFAULT_GRUB = """\
GRUB_DEFAULT=saved
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`( . /etc/os-release; echo ${NAME:-Debian} ) 2>/dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""
"""


def kernel_of(root: DebianRoot, meta_package: str, target: str | None = None) -> tuple[str, str]:
    """(release, package version) of the kernel a metapackage brings."""
    version = root.candidate(meta_package, target=target)
    assert version, f"{meta_package} has no candidate ({target or 'default'})"
    images = [d for d in root.depends(meta_package, version) if d.startswith("linux-image-")]
    assert len(images) == 1, images
    return images[0].removeprefix("linux-image-"), version


def update_grub(root: DebianRoot) -> subprocess.CompletedProcess:
    """What update-grub (grub-pc's zz-update-grub) does: grub-mkconfig, the real one."""
    proc = root.run("grub-mkconfig", "-o", "/boot/grub/grub.cfg", timeout=300)
    assert proc.returncode == 0, out(proc)
    return proc


def grubenv(root: DebianRoot) -> dict[str, str]:
    proc = root.run("grub-editenv", "/boot/grub/grubenv", "list", check=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def advanced_entry(root: DebianRoot, release: str) -> str:
    """The ``saved_entry`` value naming ``release``'s entry in the Advanced options submenu."""
    cfg = (root.path / "boot/grub/grub.cfg").read_text()
    submenu = re.search(r"^submenu .*\$menuentry_id_option '([^']+)'", cfg, re.M)
    assert submenu, cfg
    entry = re.search(
        rf"^\s+menuentry '[^']*Linux {re.escape(release)}' .*\$menuentry_id_option '([^']+)'",
        cfg,
        re.M,
    )
    assert entry, cfg
    return f"{submenu.group(1)}>{entry.group(1)}"


def boot_next(root: DebianRoot) -> str:
    proc = root.run("kzguard", "boot", "show", "--json")
    assert proc.returncode == 0, out(proc)
    return json.loads(proc.stdout)["next"]["kernel"]


@pytest.fixture(scope="module")
def host(trixie: Built, lab_deb: Path, tmp_path_factory) -> Iterator[DebianRoot]:
    """One root: the checks that leave it as it was (asserted) first, (c) last."""
    root = prepare(trixie, tmp_path_factory.mktemp("trixie") / "root", lab_deb)
    yield root
    root.remove()


def test_trixie_root_is_a_zfs_host_as_debian_builds_it(host):
    root = host
    kernels = dkms_status(root)
    (release,) = kernels
    version, state = kernels[release]
    assert state == "installed" and upstream(version) >= (2, 3), kernels
    proc = root.run("kzguard", "check", "--json")
    assert proc.returncode == 0, out(proc)
    (kernel,) = json.loads(proc.stdout)["kernels"]
    assert (kernel["release"], kernel["verdict"]) == (release, "safe"), kernel


# --- (d) newer than every packaged ZFS ---------------------------------------------------------


def packaged_zfs_maximum(root: DebianRoot, version: str) -> tuple[int, int]:
    """Linux-Maximum from the META inside Debian's zfs-dkms .deb of that version."""
    proc = root.run(
        "sh",
        "-c",
        'set -e; d=$(mktemp -d); cd "$d"; apt-get -q download "zfs-dkms=$1" >&2; '
        "dpkg-deb --fsys-tarfile zfs-dkms_*_all.deb | tar -xO --wildcards './usr/src/zfs-*/META'; "
        'rm -r "$d"',
        "sh",
        version,
        timeout=600,
    )
    assert proc.returncode == 0, out(proc)
    return upstream(dict(re.findall(r"^(\S+):\s*(\S+)", proc.stdout, re.M))["Linux-Maximum"])


@pytest.mark.parametrize("with_zfs", [False, True], ids=["kernel", "kernel+zfs-dkms"])
def test_backports_kernel_newer_than_every_packaged_zfs_is_refused(host, with_zfs):
    root = host
    release, _ = kernel_of(root, "linux-image-amd64", BACKPORTS)
    zfs_versions = {root.candidate("zfs-dkms"), root.candidate("zfs-dkms", target=BACKPORTS)}
    installed_source = next((root.path / "usr/src").glob("zfs-*/META")).parent.name[4:]
    assert upstream(meta(root, installed_source)["Linux-Maximum"]) < upstream(release)
    for version in filter(None, zfs_versions):
        assert packaged_zfs_maximum(root, version) < upstream(release), (version, release)
    before = root.installed()
    packages = ["linux-image-amd64", "linux-headers-amd64"] + (["zfs-dkms"] if with_zfs else [])
    proc = root.apt_get("install", "-t", BACKPORTS, *packages)
    text = refused_nothing_changed(root, proc, before)
    assert f"kzguard: refusing kernel {release} (unsafe)" in text
    series = ".".join(map(str, upstream(release)))
    assert re.search(rf"Linux {re.escape(series)} is newer than ZFS \S+ supports", text), text
    assert not (root.path / "lib/modules" / release).exists()


# --- (c) a kernel without headers --------------------------------------------------------------


def test_kernel_without_headers_fails_the_post_install_check_is_pinned_and_not_booted(host):
    root = host
    (good,) = dkms_status(root)
    new, _ = kernel_of(root, "linux-image-cloud-amd64")
    assert new != good and upstream(new) == upstream(good), (new, good)
    root.write("/etc/default/grub", DEFAULT_GRUB)
    (root.path / "boot/grub").mkdir()  # grub-install's, with its modules: not needed here
    update_grub(root)
    proc = root.run("grub-editenv", "/boot/grub/grubenv", "create", check=True)
    assert boot_next(root) == good
    before = root.installed()

    proc = root.apt_get("install", "linux-image-cloud-amd64")
    text = out(proc)
    assert proc.returncode == 0, text
    after = root.installed()
    assert f"linux-image-{new}" in after and f"linux-headers-{new}" not in after
    # DKMS could not build: no module for the new kernel, and DKMS says why.
    assert new not in dkms_status(root), dkms_status(root)
    assert not list((root.path / "lib/modules" / new).rglob("zfs.ko*"))
    assert re.search(rf"headers .*{re.escape(new)}|{re.escape(new)}.* headers", text, re.I), text
    # The post-install check failed it ...
    assert f"kzguard: kernel {new} failed the post-install check" in text, text
    check = root.run("kzguard", "check", "--kernel", new, "--json")
    assert check.returncode == 1, out(check)
    (verdict,) = json.loads(check.stdout)["kernels"]
    assert verdict["verdict"] == "unsafe" and "module-missing" in verdict["reasons"], verdict
    # ... pinned it, in the state and as an APT pin apt honours ...
    state = json.loads((root.path / "var/lib/kzguard/state.json").read_text())
    assert state["pins"][new]["auto"] is True, state["pins"]
    pins = (root.path / "etc/apt/preferences.d/kzguard").read_text()
    assert f"linux-image-{new}" in pins and "Pin-Priority: -1" in pins, pins
    policy = root.run("apt-cache", "policy", f"linux-image-{new}", check=True).stdout
    assert re.search(r"\*\*\* \S+ -1\b", policy), policy
    # ... and kept the boot default on the good kernel, also once update-grub lists the new one.
    kept = advanced_entry(root, good)
    assert grubenv(root).get("saved_entry") == kept
    assert state["boot"]["kept"] == good, state["boot"]
    update_grub(root)
    cfg = (root.path / "boot/grub/grub.cfg").read_text()
    assert f"vmlinuz-{new}" in cfg  # the menu's first entry now boots the new kernel
    assert advanced_entry(root, good) == kept  # the kept id still names the good kernel
    assert boot_next(root) == good
    assert {p for p in after if p not in before} >= {f"linux-image-{new}"}
