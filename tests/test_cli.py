"""The kzguard command: exit codes, JSON shape, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kzguard import cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "hosts"


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kzguard", *argv], capture_output=True, text=True, check=False
    )


def test_fedora_example_flags_the_pending_kernel():
    proc = run("--root", str(EXAMPLES / "fedora-dkms-pending"), "status", "--json")
    assert proc.returncode == 0, proc.stderr  # status reports; check is the test
    data = json.loads(proc.stdout)
    kernels = {k["release"]: k for k in data["kernels"]}
    pending = kernels["6.13.2-200.fc41.x86_64"]
    assert pending["verdict"] == "unsafe"
    assert pending["reasons"] == ["kernel-too-new"]
    assert pending["state"] == ["pending"]
    assert pending["zfs_range"]["max"] == "6.12"
    assert data["next_boot"] == {
        "release": "6.12.9-200.fc41.x86_64",
        "safe": True,
        "verdict": "safe",
        "source": "newest-installed",
    }
    assert data["host"]["family"] == "fedora"
    assert data["host"]["pending_kernels"][0]["manager"] == "dnf"


@pytest.mark.parametrize(
    ("host", "code", "next_safe"),
    [
        ("debian-dkms-failed", 1, False),
        ("el9-kmod", 0, True),
        ("ubuntu-prebuilt", 0, True),
    ],
)
def test_example_hosts(host, code, next_safe):
    proc = run("--root", str(EXAMPLES / host), "check", "--json")
    assert proc.returncode == code, proc.stderr
    data = json.loads(proc.stdout)
    assert data["next_boot"]["safe"] is next_safe
    for kernel in data["kernels"]:
        assert set(kernel) >= {"release", "upstream", "verdict", "reasons", "module", "zfs_range"}


def test_check_named_kernel_with_zfs_upgrade():
    root = str(EXAMPLES / "fedora-dkms-pending")
    argv = ("--root", root, "check", "--kernel", "6.13.2-200.fc41.x86_64")
    assert run(*argv).returncode == 1
    proc = run(*argv, "--zfs-version", "2.3.1")
    assert proc.returncode == 0, proc.stdout
    assert "safe" in proc.stdout


def test_human_output_says_what_to_do():
    proc = run("--root", str(EXAMPLES / "debian-dkms-failed"), "status")
    assert "Next boot  6.12.9+bpo-amd64  UNSAFE" in proc.stdout
    assert "dkms autoinstall -k 6.12.9+bpo-amd64" in proc.stdout
    assert "/var/lib/dkms/zfs/2.2.7/build/make.log" in proc.stdout


def test_global_options_after_the_subcommand():
    root = str(EXAMPLES / "el9-kmod")
    before = run("--json", "--root", root, "check")
    after = run("check", "--root", root, "--json")
    assert before.returncode == after.returncode == 0
    assert json.loads(before.stdout)["kernels"] == json.loads(after.stdout)["kernels"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check", "--kernel", "not-a-kernel"], "'not-a-kernel' is not a kernel release"),
        (["check", "--zfs-version", "banana"], "--zfs-version 'banana' is not a ZFS version"),
        (["--root", "/nonexistent/root", "status"], "is not a directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle):
    argv = argv if "--root" in argv else ["--root", str(EXAMPLES / "el9-kmod"), *argv]
    proc = run(*argv)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_bad_config_names_key_and_line(tmp_path):
    config = tmp_path / "kzguard.yaml"
    config.write_text("modules: [zfs]\non_unsupported_kernel: blok\n")
    proc = run("--root", str(EXAMPLES / "el9-kmod"), "--config", str(config), "check")
    assert proc.returncode == 2
    assert f"{config}:2: on_unsupported_kernel: 'blok' is not one of" in proc.stderr


def test_internal_error_is_exit_3_without_traceback(monkeypatch, capsys):
    import kzguard.facts.host

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(kzguard.facts.host, "gather", boom)
    code = cli.main(["--root", str(EXAMPLES / "el9-kmod"), "check"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.strip() == "kzguard: internal error: RuntimeError: disk on fire"


def test_usage_error_from_argparse_is_exit_2():
    assert run("frobnicate").returncode == 2


def test_allow_records_lists_and_withdraws(tmp_path):
    root = str(tmp_path)
    assert run("--root", root, "allow", "6.13.2-200.fc41.x86_64").returncode == 0
    listed = run("--root", root, "allow", "--list")
    assert listed.stdout.startswith("6.13.2-200.fc41.x86_64  (added ")
    proc = run("--root", root, "allow", "--remove", "6.13.2-200.fc41.x86_64")
    assert "withdrawn" in proc.stdout
    assert run("--root", root, "allow", "--list").stdout == ""
    assert run("--root", root, "allow", "bad release!").returncode == 2


def test_allow_dry_run_writes_nothing(tmp_path):
    proc = run("--root", str(tmp_path), "--dry-run", "allow", "6.13.2-amd64")
    assert proc.returncode == 0 and "would let" in proc.stdout
    assert not (tmp_path / "var").exists()


def test_snapshot_command_on_a_zfs_root(tmp_path, fake_zfs):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mounts").write_text("tank/ROOT/arch / zfs rw 0 0\n")
    proc = run("--root", str(tmp_path), "snapshot", "--reason", "before BIOS update")
    assert proc.returncode == 0, proc.stderr
    (snap,) = fake_zfs.snapshots()
    assert snap["name"].startswith("tank/ROOT/arch@kzguard-")
    assert snap["name"].endswith("-before-bios-update")
    assert snap["props"]["org.kzguard:manager"] == "kzguard"
    assert run("--root", str(tmp_path / "nowhere"), "snapshot").returncode == 2


def _unprivileged(*argv: str) -> subprocess.CompletedProcess:
    """As root without capabilities: file modes bind it, as they bind an admin without sudo."""
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    return subprocess.run(
        [
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all",
            sys.executable,
            "-m",
            "kzguard",
            *argv,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [("allow", "6.12.1-amd64"), ("pin", "add", "6.12.1-amd64"), ("allow", "--remove", "6.12.1")],
)
def test_a_change_the_host_refuses_is_a_one_line_exit_2_and_claims_nothing(tmp_path, command):
    import os

    state_dir = tmp_path / "var/lib/kzguard"
    state_dir.mkdir(parents=True)
    os.chmod(state_dir, 0o555)
    try:
        proc = _unprivileged("--root", str(tmp_path), *command)
    finally:
        os.chmod(state_dir, 0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # nothing said to be done
    assert "Permission denied" in proc.stderr and "internal error" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


_WORDS = [
    "check",
    "status",
    "--json",
    "--root",
    "--root=/r",
    "/r",
    "--config",
    "c.yaml",
    "--kernel",
    "6.1.0-1-amd64",
    "--kernel=6.2.0",
    "-v",
    "--dry-run",
    "--zfs-version",
    "2.3.1",
]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=7))
def test_plain_check_reads_what_the_parser_reads(argv):
    """The parser-free ``check`` fast path takes a command line only when it reads it as the
    parser would; everything else goes to the parser."""
    from kzguard.cli import commands

    fast = commands.plain_check(argv)
    if fast is None:
        return
    parsed = vars(commands.build_parser().parse_args(argv))
    assert {k: v for k, v in vars(fast).items()} == {k: parsed[k] for k in vars(fast)}
