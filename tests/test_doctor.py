"""kzguard doctor: one plain paragraph and the exact commands per problem, per distro."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devtools.hostbuilder import HostTree
from kzguard.facts.host import gather
from kzguard.facts.zfs import LinuxRange
from kzguard.judge.doctor import advise, render
from kzguard.judge.policy import KernelVerdict, Report
from kzguard.judge.reasons import Reason, verdict_of
from kzguard.root import Root

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "hosts"


def report_with(tmp_path, os_name: str, release: str, *reasons: Reason) -> Report:
    HostTree(tmp_path).os_release(os_name)
    host = gather(Root(tmp_path))
    rng = LinuxRange("2.2.7", "4.18", "6.12", "meta", "/usr/src/zfs-2.2.7/META")
    kernel = KernelVerdict(
        release, "6.13.2", verdict_of(reasons), reasons, ("installed",), (), "2.2.7", rng
    )
    return Report((kernel,), host, None)


def commands(report: Report) -> list[str]:
    return [c for a in advise(report) for c in a.commands]


@pytest.mark.parametrize(
    ("os_name", "release", "expected"),
    [
        ("debian12", "6.12.9-amd64", "update-initramfs -u -k 6.12.9-amd64"),
        ("fedora41", "6.12.9-200.fc41.x86_64", "dracut --force --kver 6.12.9-200.fc41.x86_64"),
        ("arch", "6.12.4-arch1-1", "mkinitcpio -P"),
    ],
)
def test_initramfs_advice_is_per_distro(tmp_path, os_name, release, expected):
    reason = Reason("initramfs-missing-module", "no zfs in the initramfs", "zfs")
    found = commands(report_with(tmp_path, os_name, release, reason))
    assert expected in found
    assert f"kzguard check --kernel {release}" in found


def test_unenrolled_signer_says_how_to_enroll(tmp_path):
    reason = Reason(
        "signer-not-enrolled", "signed by CN=DKMS", "zfs", {"signer": "CN=DKMS module signing key"}
    )
    (advice,) = advise(report_with(tmp_path, "ubuntu2404", "6.8.0-47-generic", reason))
    assert "CN=DKMS module signing key" in advice.explanation
    assert "mokutil --import /var/lib/shim-signed/mok/MOK.der" in advice.commands


def test_kabi_advice_names_the_symbols(tmp_path):
    reason = Reason("kabi-incompatible", "kfree changed", "zfs", {"changed": ["kfree"]})
    (advice,) = advise(report_with(tmp_path, "rocky9", "5.14.0-503.14.1.el9_5.x86_64", reason))
    assert "kfree" in advice.explanation
    assert "dnf upgrade kmod-zfs" in advice.commands


def test_too_new_advice_holds_then_upgrades(tmp_path):
    reason = Reason("kernel-too-new", "Linux 6.13 is newer", "zfs")
    release = "6.13.2-200.fc41.x86_64"
    found = commands(report_with(tmp_path, "fedora41", release, reason))
    assert found[:2] == [
        "dnf versionlock exclude 'kernel*-6.13.2-200.fc41'",
        "dnf upgrade zfs zfs-dkms",
    ]
    assert f"kzguard check --kernel {release} --zfs-version NEW" in found


def test_one_root_cause_one_paragraph(tmp_path):
    missing = Reason("module-missing", "no zfs.ko", "zfs")
    not_installed = Reason("dkms-not-installed", "DKMS zfs: build-failed", "zfs")
    assert (
        len(advise(report_with(tmp_path, "debian12", "6.12.9-amd64", missing, not_installed))) == 1
    )


def test_every_reason_code_gets_advice(tmp_path):
    from kzguard.judge.reasons import CODES

    for code in CODES:
        report = report_with(tmp_path, "debian12", "6.12.9-amd64", Reason(code.code, "why", "zfs"))
        (advice,) = advise(report)
        assert advice.code == code.code and advice.commands, code.code


def test_doctor_command_on_examples():
    def doctor(host: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "kzguard", "--root", str(EXAMPLES / host), "doctor"]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    failed = doctor("debian-dkms-failed")
    assert failed.returncode == 1
    assert "1. 6.12.9+bpo-amd64: DKMS left no zfs module" in failed.stdout
    assert "     apt install linux-headers-6.12.9+bpo-amd64" in failed.stdout
    good = doctor("el9-kmod")
    assert (good.returncode, good.stdout) == (0, render([]))
