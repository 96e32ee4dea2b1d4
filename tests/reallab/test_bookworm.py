"""Debian 12 with its own zfs-dkms (2.1.11, Linux <= 6.2) and the 6.12 kernel of bookworm-backports.

(a) The packaged apt hook refuses the backports kernel before dpkg unpacks anything; with
    ``on_unsupported_kernel: hold`` it refuses once and pins the series, and the next
    ``apt-get dist-upgrade`` upgrades the rest and keeps the kernel back.
(b) The same kernel together with backports' zfs-dkms (2.3.x): the hook lets it through, the
    real DKMS builds the new ZFS for both kernels, the post-install check's verdict on the new
    kernel is taken on the transaction's end state (safe: nothing pinned, the boot default not
    kept away), and ``kzguard check`` agrees with ``dkms status`` and ``modinfo``.

Versions are looked up in the root with apt (they move); the preconditions say what each
scenario needs of the archive, so that a moved archive fails with a message that says so.
One root serves the checks that leave it unchanged (each asserts that it did) and then (b), in
the order of this file; the hold scenario changes the root and has its own.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import debianlab
from devtools.debianlab import Built, DebianRoot
from tests.reallab.conftest import out, prepare

pytestmark = [pytest.mark.real, pytest.mark.reallab]

BACKPORTS = "bookworm-backports"
FOLLOW_BACKPORTS = """\
Explanation: the admin follows backports for the kernel (and one unrelated package)
Package: linux-image-amd64 linux-headers-amd64 python3-packaging
Pin: release n=bookworm-backports
Pin-Priority: 500
"""


def upstream(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()  # type: ignore[union-attr]
    return int(major), int(minor)


def backports_kernel(root: DebianRoot) -> tuple[str, str]:
    """(release, package version) of the kernel linux-image-amd64 brings from backports."""
    version = root.candidate("linux-image-amd64", target=BACKPORTS)
    assert version and "bpo" in version, f"no backports kernel in the archive: {version}"
    (image,) = [d for d in root.depends("linux-image-amd64", version) if d.startswith("linux-")]
    return image.removeprefix("linux-image-"), version


def meta(root: DebianRoot, version: str) -> dict[str, str]:
    text = (root.path / f"usr/src/zfs-{version}/META").read_text()
    return dict(re.findall(r"^(\S+):\s*(\S+)", text, re.M))


def zfs_source_version(root: DebianRoot) -> str:
    (path,) = (root.path / "usr/src").glob("zfs-*/META")
    return path.parent.name.removeprefix("zfs-")


def dkms_status(root: DebianRoot) -> dict[str, tuple[str, str]]:
    """``{kernel: (zfs version, state)}`` from the real ``dkms status``."""
    proc = root.run("dkms", "status", check=True)
    found = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"zfs/(\S+), (\S+), \S+: (\w+)", line)
        if match:
            found[match.group(2)] = (match.group(1), match.group(3))
    return found


def unpacked(proc_output: str) -> list[str]:
    return re.findall(r"^Unpacking (\S+)", proc_output, re.M)


def refused_nothing_changed(root: DebianRoot, proc, before: dict[str, str]) -> str:
    text = out(proc)
    assert proc.returncode == 100, text
    assert "E: Sub-process /usr/bin/kzguard hook apt returned an error code (1)" in text
    assert unpacked(text) == [], text
    assert root.installed() == before
    return text


@pytest.fixture(scope="module")
def host(bookworm: Built, lab_deb: Path, tmp_path_factory) -> Iterator[DebianRoot]:
    """One root for the checks that leave it as it was (asserted), then for scenario (b)."""
    root = prepare(bookworm, tmp_path_factory.mktemp("bookworm") / "root", lab_deb)
    yield root
    root.remove()


def test_bookworm_root_is_a_zfs_host_as_debian_builds_it(host):
    root = host
    version = zfs_source_version(root)
    assert upstream(version) == (2, 1), version
    assert upstream(meta(root, version)["Linux-Maximum"]) < (6, 12)
    kernels = dkms_status(root)
    assert kernels and all(v == (version, "installed") for v in kernels.values()), kernels
    proc = root.run("kzguard", "check", "--json")
    assert proc.returncode == 0, out(proc)
    report = json.loads(proc.stdout)
    assert sorted(k["release"] for k in report["kernels"]) == sorted(kernels)
    assert {k["verdict"] for k in report["kernels"]} == {"safe"}


# --- (a) refused; held -------------------------------------------------------------------------


def test_backports_kernel_is_refused_and_nothing_is_installed(host):
    root = host
    release, _ = backports_kernel(root)
    zfs = zfs_source_version(root)
    before = root.installed()
    proc = root.apt_get("install", "-t", BACKPORTS, "linux-image-amd64", "linux-headers-amd64")
    text = refused_nothing_changed(root, proc, before)
    series = ".".join(map(str, upstream(release)))
    assert f"kzguard: refusing kernel {release} (unsafe)" in text
    assert f"Linux {series} is newer than ZFS {zfs} supports" in text
    assert not (root.path / "lib/modules" / release).exists()
    assert not (root.path / "etc/apt/preferences.d/kzguard").exists()  # block pins nothing


def test_hold_keeps_the_kernel_back_and_the_rest_of_the_upgrade_proceeds(bookworm, fresh):
    root = fresh(bookworm)
    release, _ = backports_kernel(root)
    config = root.path / "etc/kzguard/kzguard.yaml"
    text = config.read_text()
    assert "on_unsupported_kernel: block" in text
    config.write_text(text.replace("on_unsupported_kernel: block", "on_unsupported_kernel: hold"))
    root.write("/etc/apt/preferences.d/follow-backports", FOLLOW_BACKPORTS)
    other = root.candidate("python3-packaging")
    before = root.installed()
    assert other and other != before["python3-packaging"], "no backports python3-packaging"

    first = root.apt_get("dist-upgrade")
    text = refused_nothing_changed(root, first, before)
    assert f"kzguard: holding back kernel {release} (unsafe)" in text
    pins = (root.path / "etc/apt/preferences.d/kzguard").read_text()
    series = ".".join(map(str, upstream(release)))
    assert f"linux-image-{series}.*" in pins and "Pin-Priority: -1" in pins, pins
    assert root.candidate(f"linux-image-{release}") is None  # apt itself now keeps it back

    second = root.apt_get("dist-upgrade")
    text = out(second)
    assert second.returncode == 0, text
    assert "kzguard: refusing" not in text and "holding back" not in text
    assert re.search(r"kept back:\n\s+linux-headers-amd64 linux-image-amd64\n", text), text
    after = root.installed()
    assert after["python3-packaging"] == other
    assert after["linux-image-amd64"] == before["linux-image-amd64"]
    assert f"linux-image-{release}" not in after
    assert unpacked(text) == ["python3-packaging"]
    proc = root.run("kzguard", "check")  # the packaged kzguard still runs on the new packaging
    assert proc.returncode == 0, out(proc)


# --- (b) kernel and ZFS from backports together ------------------------------------------------


class Upgraded:
    """The root after one real joint upgrade (kernel, headers, zfs-dkms from backports)."""

    def __init__(self, root: DebianRoot, proc, release: str, zfs: str, old: list[str]):
        self.root = root
        self.proc = proc
        self.text = out(proc)
        self.release = release  # the new kernel
        self.zfs = zfs  # backports' zfs-dkms version
        self.old = old  # the kernels DKMS had built the old ZFS for


UPGRADE = ("install", "-t", BACKPORTS, "linux-image-amd64", "linux-headers-amd64", "zfs-dkms")


@pytest.fixture(scope="module")
def upgraded(
    host: DebianRoot, bookworm: Built, lab_deb: Path, tmp_path_factory
) -> Iterator[Upgraded]:
    """One DKMS build of the new ZFS serves every assertion of scenario (b).

    Its end (the root and apt's output) is cached for this root, this exact .deb and this
    command (devtools.debianlab.keep_scenario): a re-run with the same kzguard checks the same
    transaction again without compiling ZFS twice; any change to kzguard runs it for real."""
    key = debianlab.scenario_key(bookworm, lab_deb, UPGRADE)
    dest = tmp_path_factory.mktemp("bpo-replay") / "root"
    replayed = debianlab.replay_scenario("bookworm-b", key, bookworm.recipe, dest)
    if replayed:
        root, record = replayed
        proc = subprocess.CompletedProcess(
            UPGRADE, record["rc"], record["stdout"], record["stderr"]
        )
        try:
            yield Upgraded(root, proc, record["release"], record["zfs"], record["old"])
        finally:
            root.remove()
        return
    root = host
    assert upstream(zfs_source_version(root)) == (2, 1), "the root is not as bookworm made it"
    release, _ = backports_kernel(root)
    zfs = root.candidate("zfs-dkms", target=BACKPORTS)
    assert zfs and upstream(zfs) >= (2, 3), f"backports zfs-dkms is {zfs}"
    old = sorted(dkms_status(root))
    proc = root.apt_get(*UPGRADE)
    record = {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    record.update(release=release, zfs=zfs, old=old)
    debianlab.keep_scenario(root, "bookworm-b", key, record)
    yield Upgraded(root, proc, release, zfs, old)


def _state(root: DebianRoot) -> dict:
    path = root.path / "var/lib/kzguard/state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_joint_upgrade_is_allowed_and_dkms_builds_the_new_zfs(upgraded):
    u = upgraded
    assert u.proc.returncode == 0, u.text
    assert "kzguard: refusing" not in u.text
    after = u.root.installed()
    assert after["zfs-dkms"] == u.zfs
    assert f"linux-image-{u.release}" in after
    version = zfs_source_version(u.root)
    assert u.zfs.startswith(version)
    assert upstream(meta(u.root, version)["Linux-Maximum"]) >= upstream(u.release)
    status = dkms_status(u.root)
    assert status == {k: (version, "installed") for k in [*u.old, u.release]}, status


def test_post_install_verdict_is_taken_on_the_end_state(upgraded):
    """apt configures the kernel (its postinst.d runs kzguard) before zfs-dkms, whose postinst
    then builds the module: the verdict must come from the end of the transaction (an apt
    ``DPkg::Post-Invoke`` hook), so the new kernel, safe at the end, is not pinned and the
    boot default is not kept away from it."""
    u = upgraded
    assert u.proc.returncode == 0, u.text
    state = _state(u.root)
    pins = u.root.path / "etc/apt/preferences.d/kzguard"
    assert u.release not in (pins.read_text() if pins.exists() else ""), pins.read_text()
    assert u.release not in state.get("pins", {}), state.get("pins")
    assert not state.get("boot"), state.get("boot")
    assert state.get("last_good") == u.release, state.get("last_good")
    events = [e for e in state.get("events", []) if e.get("kernel") == u.release]
    post = [e for e in events if str(e.get("kind", "")).startswith("post-install")]
    assert post and post[-1]["kind"] == "post-install-safe", events
    said = [line for line in u.text.splitlines() if line.startswith(f"kzguard: kernel {u.release}")]
    assert said and "passed the post-install check" in said[-1], said
    assert u.root.candidate(f"linux-image-{u.release}") is not None  # apt may reinstall it


def test_check_agrees_with_dkms_status_and_modinfo(upgraded):
    u = upgraded
    assert u.proc.returncode == 0, u.text
    status = dkms_status(u.root)
    proc = u.root.run("kzguard", "check", "--json")
    report = json.loads(proc.stdout)
    verdicts = {k["release"]: k for k in report["kernels"]}
    assert sorted(verdicts) == sorted(status), (verdicts.keys(), status)
    for release, (version, state) in status.items():
        kernel = verdicts[release]
        assert state == "installed"
        assert kernel["verdict"] == "safe", kernel
        info = u.root.run("modinfo", "-k", release, "-F", "filename", "zfs", check=True)
        filename = info.stdout.strip()
        fields = {}
        for field in ("version", "vermagic"):
            probe = u.root.run("modinfo", "-F", field, filename, check=True)
            fields[field] = probe.stdout.strip()
        assert fields["vermagic"].split()[0] == release
        assert fields["version"].startswith(version)
        module = kernel["modules"]["zfs"]
        assert module, kernel
        text = json.dumps(module)
        assert fields["version"] in text, (fields, module)
        assert filename.removeprefix("/usr") in text or filename in text, (filename, module)
    assert proc.returncode == 0, proc.stdout + proc.stderr
