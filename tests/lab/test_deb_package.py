"""The Debian package from packaging/debian/, built by the real dpkg-buildpackage, used by real apt.

The source tree is the checkout's tracked files (``git ls-files``) copied to a temporary
directory with ``packaging/debian`` copied to ``debian/``; ``dpkg-buildpackage -us -uc -b`` builds
it once per module (about 3 s here) with Debian's own tools first on PATH (pybuild runs
``python3 -m build``, which the pyenv interpreter lacks).

End to end, the .deb is installed with ``dpkg --root R`` into the alternate root of
tests/lab/test_apt.py and the key apt transactions are repeated with the hook as the package put
it: apt reads ``R/etc/apt/apt.conf.d/80kzguard`` (``Dir::Etc::Parts``), byte for byte as shipped.
apt runs the hook's command on the host, not chrooted, and that command is ``/usr/bin/kzguard``:
to make the host's ``/usr/bin/kzguard`` the packaged one without touching the host, apt-get runs
in a private mount namespace (``unshare -m``) where ``/usr/bin`` is a read-only overlay of
``R/usr/bin`` above the host's ``/usr/bin``. The packaged script's ``#!/usr/bin/python3`` is the
host's Debian Python; it imports kzguard from ``R/usr/lib/python3/dist-packages`` (PYTHONPATH).

What is not real here, and why:
- The package's dependencies (python3-yaml, python3-cryptography, ...) are not in the fake root:
  empty stand-ins in R's dpkg status (``STUBS``) satisfy apt's and dpkg's dependency checks, and
  the host's Debian Python with the venv's site-packages after R's on PYTHONPATH supplies their
  code. Its editable kzguard is not imported: a ``.pth`` finder only runs from a site directory,
  and the test checks that kzguard is imported from R.
- dpkg runs the maintainer scripts on the host (``--force-script-chrootless``) with DPKG_ROOT
  set. The postrm/preinst and deb-systemd-helper honour DPKG_ROOT; dh_python3's ``py3compile`` /
  ``py3clean`` calls do not (they would compile the host's /usr/lib/python3), and python3 is not
  in the fake root anyway, so no-op ``py3compile``/``py3clean`` come first on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kzguard.config.load import loads
from tests.lab.test_apt import DEBIAN_STATUS, GOOD, NEW, Lab, _out, _refused, repos  # noqa: F401
from tests.scenarios import debian_dkms
from tests.tools import run as _run

pytestmark = pytest.mark.real

TOP = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
STUBS = [
    ("python3", "amd64", "3.11.2-1+b1"),
    *(
        (name, "all", "99-1")
        for name in (
            "python3-yaml",
            "python3-packaging",
            "python3-cryptography",
            "python3-asn1crypto",
            "python3-dbus",
            "python3-gi",
            "python3-systemd",
            "python3-prometheus-client",
        )
    ),
]
VENV_SITE = next(p for p in sys.path if p.endswith("site-packages"))


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    if not shutil.which("dpkg-buildpackage"):
        pytest.skip("not installed: dpkg-buildpackage")
    out = tmp_path_factory.mktemp("deb")
    src = out / "kzguard"
    src.mkdir()
    files = _run("git", "ls-files", "-z", cwd=TOP).stdout.split("\0")
    for name in filter(None, files):
        path = TOP / name
        if path.is_symlink() or path.is_file():  # a file deleted in the checkout is skipped
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name, follow_symlinks=False)
    shutil.copytree(TOP / "packaging" / "debian", src / "debian", symlinks=True)
    env = {"PATH": SYSTEM_PATH, "PYTHONDONTWRITEBYTECODE": "1"}
    _run("dpkg-buildpackage", "-us", "-uc", "-b", cwd=src, env=env)
    (package,) = out.glob("kzguard_*_all.deb")
    return package


def _contents(deb: Path) -> dict[str, str]:
    rows = _run("dpkg-deb", "-c", deb).stdout.splitlines()
    return {row.split()[-1].lstrip("."): row.split()[0] for row in rows}


def test_package_puts_every_hook_in_its_place(deb):
    files = _contents(deb)
    for path, mode in {
        "/etc/apt/apt.conf.d/80kzguard": "-rw-r--r--",
        "/etc/kernel/postinst.d/kzguard": "-rwxr-xr-x",
        "/etc/kzguard/kzguard.yaml": "-rw-r--r--",
        "/lib/systemd/system/kzguard.service": "-rw-r--r--",
        "/usr/share/dbus-1/system.d/org.kzguard.Guard1.conf": "-rw-r--r--",
        "/usr/share/polkit-1/actions/org.kzguard.policy": "-rw-r--r--",
        "/usr/bin/kzguard": "-rwxr-xr-x",
        "/usr/lib/python3/dist-packages/kzguard/cli/__init__.py": "-rw-r--r--",
        "/usr/lib/python3/dist-packages/kzguard/data/openzfs-linux-ranges.tsv": "-rw-r--r--",
        "/usr/share/doc/kzguard/copyright": "-rw-r--r--",
        "/usr/share/doc/kzguard/README.Debian": "-rw-r--r--",
    }.items():
        assert files.get(path) == mode, (path, files.get(path))
    assert not [p for p in files if "__pycache__" in p or "/tests/" in p]


def test_conffiles_and_control(deb, tmp_path):
    _run("dpkg-deb", "-e", deb, tmp_path / "ctl")
    conffiles = (tmp_path / "ctl" / "conffiles").read_text().split()
    assert sorted(conffiles) == [
        "/etc/apt/apt.conf.d/80kzguard",
        "/etc/kernel/postinst.d/kzguard",
        "/etc/kzguard/kzguard.yaml",
    ]
    for script in ("preinst", "postinst", "prerm", "postrm"):
        assert (tmp_path / "ctl" / script).exists(), script
    depends = _run("dpkg-deb", "-f", deb, "Depends").stdout
    for name in ("python3-yaml", "python3-cryptography", "python3-systemd", "python3:any"):
        assert name in depends


def test_default_config_is_the_documented_example_and_loads(deb, tmp_path):
    _run("dpkg-deb", "-x", deb, tmp_path / "x")
    text = (tmp_path / "x/etc/kzguard/kzguard.yaml").read_text()
    assert "on_unsupported_kernel: block" in text
    assert text in (TOP / "docs" / "config.md").read_text()
    config = loads(text, "/etc/kzguard/kzguard.yaml")
    assert config == loads("", "<empty>")  # every key at its default


class PackagedLab(Lab):
    """test_apt's root R, with the .deb installed into it and the packaged hook left as it is."""

    def __init__(self, top: Path, repo_dir: Path, deb: Path):
        super().__init__(top, debian_dkms(top / "root"), repo_dir, DEBIAN_STATUS)
        # The base class put a test copy of the snippet in place; the package owns it from now on.
        (self.root / "etc/apt/apt.conf.d/80kzguard").unlink()
        self.shims = top / "shims"
        self.shims.mkdir()
        for tool in ("py3compile", "py3clean"):
            (self.shims / tool).write_text("#!/bin/sh\nexit 0\n")
            (self.shims / tool).chmod(0o755)
        # Stand-ins for the dependencies in dpkg's status, so that apt and dpkg see a consistent
        # system; their code comes from the host's Debian Python and the venv (PYTHONPATH).
        stubs = "".join(
            f"\nPackage: {name}\nStatus: install ok installed\nArchitecture: {arch}\n"
            f"Version: {version}\nMaintainer: t <t@kzguard.invalid>\nDescription: stand-in\n"
            + ("Multi-Arch: allowed\n" if name == "python3" else "")
            for name, arch, version in STUBS
        )
        with open(self.root / "var/lib/dpkg/status", "a") as status:
            status.write(stubs)
        for name, _, _ in STUBS:
            (self.root / f"var/lib/dpkg/info/{name}.list").write_text("")
        proc = self.dpkg("-i", deb)
        assert proc.returncode == 0, _out(proc)

    def dpkg(self, *args: object) -> subprocess.CompletedProcess:
        r = self.root
        return _run(
            "dpkg",
            f"--root={r}",
            f"--admindir={r}/var/lib/dpkg",
            "--force-script-chrootless",
            f"--log={r}/var/log/dpkg.log",
            *args,
            check=False,
            env={"PATH": f"{self.shims}:{SYSTEM_PATH}"},
        )

    def apt(self, *args: str, env=None) -> subprocess.CompletedProcess:
        r = self.root
        script = 'exec apt-get -y -q "$@"'
        if (r / "usr/bin").is_dir():  # not yet when the base class runs apt-get update
            overlay = f'mount -t overlay overlay -o "lowerdir={r}/usr/bin:/usr/bin" /usr/bin'
            script = f"{overlay} && {script}"

        return _run(
            "unshare",
            "-m",
            "sh",
            "-c",
            script,
            "apt-get",
            *args,
            check=False,
            cwd="/",
            env={
                "APT_CONFIG": str(self.conf),
                # dpkg under apt runs the maintainer scripts: the same no-op py3compile/py3clean.
                "PATH": f"{r.parent / 'shims'}:{SYSTEM_PATH}",
                "PYTHONPATH": f"{r}/usr/lib/python3/dist-packages:{VENV_SITE}",
                "PYTHONDONTWRITEBYTECODE": "1",
                **(env or {}),
            },
        )

    def apt_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.root))
            for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d")
            # In this root no apt package owns these directories, so dpkg removes them with
            # the last package in them; on a real system apt's own entries keep them.
            if (self.root / d).is_dir()
            for p in (self.root / d).iterdir()
        )


@pytest.fixture
def lab(repos, deb, tmp_path) -> PackagedLab:  # noqa: F811
    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("needs root and unshare for the /usr/bin overlay")
    return PackagedLab(tmp_path, repos, deb)


def test_packaged_hook_is_the_one_apt_runs(lab):
    snippet = lab.root / "etc/apt/apt.conf.d/80kzguard"
    assert snippet.read_bytes() == (TOP / "hooks/apt/80kzguard").read_bytes()
    proc = _run(
        "unshare",
        "-m",
        "sh",
        "-c",
        f'mount -t overlay overlay -o "lowerdir={lab.root}/usr/bin:/usr/bin" /usr/bin && '
        "head -1 /usr/bin/kzguard && "
        '/usr/bin/python3 -c "import kzguard; print(kzguard.__file__)"',
        env={"PYTHONPATH": f"{lab.root}/usr/lib/python3/dist-packages:{VENV_SITE}"},
        cwd="/",  # python -c puts its working directory first on sys.path
    )
    assert proc.stdout.splitlines() == [
        "#!/usr/bin/python3",
        f"{lab.root}/usr/lib/python3/dist-packages/kzguard/__init__.py",
    ]
    assert not Path("/usr/bin/kzguard").exists()  # the overlay stayed in its namespace


def test_packaged_hook_refuses_an_unsupported_kernel(lab):
    before = lab.status
    out = _refused(lab, lab.apt("install", f"linux-image-{NEW}"), before)
    assert f"refusing kernel {NEW} (unsafe)" in out
    assert f"linux-image-{NEW}" not in lab.installed()


def test_packaged_hook_lets_a_supported_kernel_through(lab):
    proc = lab.apt("install", f"linux-image-{GOOD}")
    assert proc.returncode == 0, _out(proc)
    assert "refusing" not in _out(proc)
    assert "kzguard: the root file system is not on ZFS" in _out(proc)
    assert lab.installed()[f"linux-image-{GOOD}"] == "6.12.9-1"


def _hold_a_kernel(lab: PackagedLab) -> None:
    """on_unsupported_kernel: hold writes the APT pin that removal must take away."""
    config = lab.root / "etc/kzguard/kzguard.yaml"
    config.write_text(
        config.read_text().replace("on_unsupported_kernel: block", "on_unsupported_kernel: hold")
    )
    proc = lab.apt("install", f"linux-image-{NEW}")
    assert lab.preferences.exists(), _out(proc)


@pytest.mark.parametrize("how", ["--remove", "--purge", "apt-get purge"])
def test_uninstall_leaves_apt_as_it_was(lab, how):
    _hold_a_kernel(lab)
    if how.startswith("apt-get"):  # through apt: the packaged hook runs for its own removal
        proc = lab.apt("purge", "kzguard")
        how = "--purge"
    else:
        proc = lab.dpkg(how, "kzguard")
    assert proc.returncode == 0, _out(proc)
    live = [f for f in lab.apt_files() if not f.endswith(".dpkg-remove")]
    assert live == [], live
    if how == "--remove":  # the conffile is kept, where apt does not read it
        assert lab.apt_files() == ["etc/apt/apt.conf.d/80kzguard.dpkg-remove"]
    assert not (lab.root / "usr/bin/kzguard").exists()
    if how == "--purge":
        assert lab.apt_files() == []
        assert not (lab.root / "etc/kzguard").exists()
        assert not (lab.root / "var/lib/kzguard").exists()
    # apt works afterwards, and with the pin gone the kernel kzguard held is installable again.
    proc = lab.apt("install", f"linux-image-{NEW}")
    assert proc.returncode == 0, _out(proc)
    assert "kzguard" not in _out(proc)
    assert f"linux-image-{NEW}" in lab.installed()


def test_reinstall_after_remove_brings_the_hook_back(lab, deb):
    snippet = lab.root / "etc/apt/apt.conf.d/80kzguard"
    snippet.write_text(snippet.read_text() + "// an admin's edit\n")
    assert lab.dpkg("--remove", "kzguard").returncode == 0
    assert not snippet.exists()
    proc = lab.dpkg("-i", deb)
    assert proc.returncode == 0, _out(proc)
    assert snippet.read_text().endswith("// an admin's edit\n")
    before = lab.status
    _refused(lab, lab.apt("install", f"linux-image-{NEW}"), before)


def test_lintian_has_no_error_or_warning_left(deb):
    """Findings are fixed or overridden with a reason in packaging/debian/*lintian-overrides."""
    if not shutil.which("lintian"):
        pytest.skip("not installed: lintian")
    proc = _run("lintian", "--fail-on", "error,warning", "-I", deb, check=False)
    assert proc.returncode == 0, _out(proc)
    assert not [line for line in proc.stdout.splitlines() if line[:2] in ("E:", "W:")]
