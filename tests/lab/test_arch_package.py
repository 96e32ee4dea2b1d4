"""packaging/arch/PKGBUILD built by the real makepkg, inspected, installed and removed by pacman.

makepkg refuses root, so the package is built as the unprivileged user ``kzbuild`` (created with
``useradd -m`` when missing) in a scratch directory it owns, from this checkout
(``KZGUARD_SRC``), with the host's system Python as ``python`` (what Arch's would be). The
result is then installed into an empty pacman root with ``pacman -U --root R --dbpath
R/var/lib/pacman --nodeps --nodeps --noscriptlet`` (no
Arch dependencies exist in the lab root) and removed with ``pacman -R``: the hooks must be the
packaged ones while installed, and nothing of kzguard may be left in pacman's hook directory
(nor its configuration) afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

TOP = Path(__file__).resolve().parents[2]
PKGBUILD = TOP / "packaging" / "arch" / "PKGBUILD"
USER = "kzbuild"
SYSTEM_PYTHON = "/usr/bin/python3"
HOOKS = ("05-kzguard-pre.hook", "95-kzguard-post.hook")
EXPECTED = (
    "usr/bin/kzguard",
    "usr/share/libalpm/hooks/05-kzguard-pre.hook",
    "usr/share/libalpm/hooks/95-kzguard-post.hook",
    "usr/lib/systemd/system/kzguard.service",
    "usr/share/dbus-1/system.d/org.kzguard.Guard1.conf",
    "usr/share/polkit-1/actions/org.kzguard.policy",
    "etc/kzguard/kzguard.yaml",
    "var/lib/kzguard/",
    "usr/share/man/man8/kzguard.8.gz",
    "usr/share/man/man5/kzguard.yaml.5.gz",
    "usr/share/bash-completion/completions/kzguard",
    "usr/share/zsh/site-functions/_kzguard",
)


def _run(*args: object, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, **kwargs
    )
    assert done.returncode == 0, f"{args}: rc={done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (useradd, runuser, pacman --root)")
    tools = ("makepkg", "pacman", "bsdtar", "fakeroot", "runuser", "useradd", "zstd")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        pytest.skip(f"not installed: {' '.join(missing)}")
    probe = subprocess.run([SYSTEM_PYTHON, "-m", "pip", "--version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} has no pip (the PKGBUILD installs with python -m pip)")


@pytest.fixture(scope="module")
def built() -> Iterator[Path]:
    """The package file makepkg built, in a scratch directory owned by kzbuild."""
    _need()
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
        _run("useradd", "-m", USER)
    work = Path(tempfile.mkdtemp(prefix="kzguard-makepkg-", dir="/tmp"))
    try:
        shim = work / "shim"
        shim.mkdir()
        (shim / "python").symlink_to(SYSTEM_PYTHON)
        build = work / "build"
        build.mkdir()
        shutil.copy(PKGBUILD, build / "PKGBUILD")
        out = work / "out"
        out.mkdir()
        _run("chown", "-R", USER, work)
        env = {
            "PATH": f"{shim}:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(work),
            "LC_ALL": "C",
            "KZGUARD_SRC": str(TOP),
            "BUILDDIR": str(work / "makepkg"),
            "PKGDEST": str(out),
            "SRCDEST": str(work / "src"),
            "PKGEXT": ".pkg.tar.zst",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        _run(
            "runuser", "-u", USER, "--", "makepkg", "--nodeps", "--noconfirm", "--cleanbuild",
            cwd=build, env=env,
        )  # fmt: skip
        packages = sorted(out.glob("kzguard-*.pkg.tar.zst"))
        assert len(packages) == 1, packages
        yield packages[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _member(pkg: Path, name: str) -> bytes:
    return subprocess.run(["bsdtar", "-xOf", pkg, name], capture_output=True, check=True).stdout


def test_pkginfo(built: Path) -> None:
    info = _member(built, ".PKGINFO").decode()
    fields = [line.split(" = ", 1) for line in info.splitlines() if " = " in line]
    assert ["pkgname", "kzguard"] in fields
    assert ["arch", "any"] in fields
    assert ["backup", "etc/kzguard/kzguard.yaml"] in fields
    assert ["depend", "python-yaml"] in fields


def test_file_list_and_hooks(built: Path) -> None:
    names = set(_run("bsdtar", "-tf", built).stdout.splitlines())
    for path in EXPECTED:
        assert path in names, path
    assert any(
        n.endswith("/kzguard/cli/__init__.py") and n.startswith("usr/lib/python3") for n in names
    )
    assert not [n for n in names if n.startswith("usr/local/") or "__pycache__" in n]
    assert not [n for n in names if n.endswith("direct_url.json")]
    for hook in HOOKS:
        packaged = _member(built, f"usr/share/libalpm/hooks/{hook}")
        assert packaged == (TOP / "hooks" / "pacman" / hook).read_bytes()
    config = _member(built, "etc/kzguard/kzguard.yaml").decode()
    assert "\non_unsupported_kernel: block\n" in config


_PATH = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")


def _pacman(root: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["pacman", "--root", root, "--dbpath", root / "var/lib/pacman", "--config",
         root / "etc/pacman.conf", "--noconfirm", *args],
        capture_output=True, text=True, check=False, env={"PATH": _PATH, "LC_ALL": "C"},
    )  # fmt: skip


def test_install_and_remove_with_pacman(built: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/pacman").mkdir(parents=True)
    (root / "etc").mkdir()
    conf = "[options]\nSigLevel = Never\nLocalFileSigLevel = Never\nArchitecture = auto\n"
    (root / "etc/pacman.conf").write_text(conf)

    done = _pacman(root, "-U", "--nodeps", "--nodeps", "--noscriptlet", built)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _pacman(root, "-Q", "kzguard").stdout.split() == ["kzguard", "0.1.0-1"]
    hookdir = root / "usr/share/libalpm/hooks"
    for hook in HOOKS:
        installed = hookdir / hook
        assert installed.is_file() and not installed.is_symlink()
        assert installed.read_bytes() == _member(built, f"usr/share/libalpm/hooks/{hook}")
    owner = _pacman(root, "-Qo", hookdir / HOOKS[0])
    assert "is owned by kzguard 0.1.0-1" in owner.stdout, owner.stdout + owner.stderr
    assert (root / "usr/bin/kzguard").is_file()

    done = _pacman(root, "-R", "kzguard")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _pacman(root, "-Q", "kzguard").returncode == 1
    left = [p.name for p in hookdir.iterdir()] if hookdir.exists() else []
    assert not [name for name in left if "kzguard" in name], left
    # the unchanged default configuration goes too; pacman's own configuration is untouched
    assert not (root / "etc/kzguard/kzguard.yaml").exists()
    assert (root / "etc/pacman.conf").read_text() == conf
    leftovers = [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if "kzguard" in p.name and not str(p.relative_to(root)).startswith("var/lib/pacman")
    ]
    assert leftovers == [], leftovers
