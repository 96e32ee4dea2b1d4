"""The RPM package: ``packaging/rpm/kzguard.spec`` built with the real rpmbuild, its contents
checked, then installed into the dnf lab's installroot and driven by real dnf transactions with
the plugin, its configuration and the library exactly where the package put them.

The package is built once per module from a tarball of the checkout (tracked and untracked
files, without what .gitignore ignores), the way a release tarball is made. ``rpmbuild
--nodeps``: Debian's rpmdb is empty, so the spec's BuildRequires (python3-devel, pip,
setuptools, wheel, systemd-rpm-macros) are Debian packages here, not rpms. ``rpm -i --nodeps
--noscripts``: the lab's repository has no python3, python3-dnf or the other Requires, and
``%post`` would call systemctl (PID 1 is not systemd here).

dnf runs Debian's /usr/bin/python3; the packaged plugin finds the packaged library through
``KZGUARD_LIBDIR`` (the root's site-packages first, then the venv's for PyYAML and the other
third-party modules the package only Requires).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.lab.test_dnf import NEW, SITE, TOP, DnfLab, HostTree, installed

SPEC = TOP / "packaging" / "rpm" / "kzguard.spec"
VERSION = "0.1.0"
SITELIB = "/usr/lib/python3.11/site-packages"  # python3_sitelib: Fedora's, and the fallback's

needs_rpmbuild = pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="needs rpmbuild")
_DNF_TOOLS = [t for t in ("dnf", "rpm", "createrepo_c") if shutil.which(t) is None]
needs_dnf = pytest.mark.skipif(
    bool(_DNF_TOOLS) or os.geteuid() != 0,
    reason=f"needs root and {', '.join(_DNF_TOOLS) or 'nothing'} (.ci/run installs them)",
)

# everything but the library's own modules, which are checked separately
FILES = {
    "/etc/dnf/libdnf5-plugins/actions.d/kzguard.actions",
    "/etc/dnf/plugins/kzguard.conf",
    "/etc/kzguard",
    "/etc/kzguard/kzguard.yaml",
    "/usr/bin/kzguard",
    "/usr/lib/kernel/install.d/60-kzguard.install",
    f"{SITELIB}/dnf-plugins/kzguard.py",
    "/usr/lib/systemd/system/kzguard.service",
    "/usr/share/dbus-1/system.d/org.kzguard.Guard1.conf",
    "/usr/share/polkit-1/actions/org.kzguard.policy",
    "/var/lib/kzguard",
}
CONFIG = {
    "/etc/dnf/libdnf5-plugins/actions.d/kzguard.actions",
    "/etc/dnf/plugins/kzguard.conf",
    "/etc/kzguard/kzguard.yaml",
}


def source_tarball(dest: Path) -> Path:
    """``kzguard-VERSION.tar.gz`` of the checkout as it is (what git would archive, plus
    untracked files that are not ignored)."""
    names = subprocess.run(
        ["git", "-C", str(TOP), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    tarball = dest / f"kzguard-{VERSION}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name in sorted({n.decode() for n in names if n}):
            path = TOP / name
            if path.is_file() or path.is_symlink():  # deleted but still tracked: skip
                tar.add(path, arcname=f"kzguard-{VERSION}/{name}", recursive=False)
    return tarball


@pytest.fixture(scope="module")
def rpm_package(tmp_path_factory) -> Path:
    if shutil.which("rpmbuild") is None:
        pytest.skip("needs rpmbuild")
    top = tmp_path_factory.mktemp("rpmbuild")
    (top / "SOURCES").mkdir()
    source_tarball(top / "SOURCES")
    defines = {"_topdir": top, "_build_id_links": "none"}
    args = [a for k, v in defines.items() for a in ("--define", f"{k} {v}")]
    proc = subprocess.run(
        ["rpmbuild", "-bb", "--nodeps", *args, str(SPEC)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return top / "RPMS" / "noarch" / f"kzguard-{VERSION}-1.noarch.rpm"


def rpm_query(*args: str) -> list[str]:
    out = subprocess.run(["rpm", *args], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.mark.real
@needs_rpmbuild
def test_the_package_installs_every_hook_in_its_place(rpm_package):
    files = set(rpm_query("-qlp", str(rpm_package)))
    library = {f for f in files if f.startswith(f"{SITELIB}/kzguard")}
    docs = {f for f in files if f.startswith("/usr/share/doc/kzguard")}
    assert files - library - docs == FILES
    assert {
        "/usr/share/doc/kzguard/README.md",
        "/usr/share/doc/kzguard/docs/hooks.md",
        "/usr/share/doc/kzguard/dnf5-legacy/kzguard.actions",
    } <= docs
    for module in (
        "__init__.py",
        "cli/__init__.py",
        "managers/dnf.py",
        "managers/dnf5.py",
        "data/openzfs-linux-ranges.tsv",
    ):
        assert f"{SITELIB}/kzguard/{module}" in library
    assert f"{SITELIB}/kzguard-{VERSION}.dist-info/entry_points.txt" in library
    assert not any("__pycache__" in f or f.endswith("direct_url.json") for f in library)
    assert set(rpm_query("-qcp", str(rpm_package))) == CONFIG
    assert "/usr/share/doc/kzguard/docs/config.md" in rpm_query("-qdp", str(rpm_package))

    modes = dict(
        line.split(" ", 1)[::-1]
        for line in rpm_query(
            "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]", str(rpm_package)
        )
    )
    assert modes["/usr/lib/kernel/install.d/60-kzguard.install"] == "-rwxr-xr-x"
    assert modes["/usr/bin/kzguard"] == "-rwxr-xr-x"
    assert modes[f"{SITELIB}/dnf-plugins/kzguard.py"] == "-rw-r--r--"
    assert modes["/var/lib/kzguard"].startswith("d")

    requires = set(rpm_query("-qp", "--requires", str(rpm_package)))
    for name in (
        "python3",
        "python3-pyyaml",
        "python3-packaging",
        "python3-cryptography",
        "python3-asn1crypto",
        "python3-dbus",
        "python3-gobject",
        "python3-systemd",
        "python3-prometheus_client",
    ):
        assert name in requires
    assert rpm_query("-qp", "--qf", "%{ARCH}\n", str(rpm_package)) == ["noarch"]


# ---- end to end: the package in the dnf lab's installroot ------------------------------


@pytest.fixture(scope="module")
def dnf_lab(tmp_path_factory) -> DnfLab:
    if _DNF_TOOLS or os.geteuid() != 0 or shutil.which("rpmbuild") is None:
        pytest.skip("needs root, dnf, rpm, rpmbuild and createrepo_c")
    return DnfLab(tmp_path_factory.mktemp("dnf-lab"))


def packaged_dnf(lab: DnfLab, root: HostTree, repo: str, *args: str):
    """dnf with the plugin and its configuration where the package put them in ``root``."""
    path = root.path
    argv = [
        "dnf",
        "-y",
        f"--installroot={path}",
        "--releasever=41",
        "--disablerepo=*",
        f"--repofrompath={repo},{lab.repos[repo]}",
        f"--setopt={repo}.gpgcheck=0",
        f"--setopt={repo}.metadata_expire=0",
        f"--setopt=pluginpath={path}{SITELIB}/dnf-plugins",
        f"--setopt=pluginconfpath={path}/etc/dnf/plugins",
        *args,
    ]
    env = {**os.environ, "KZGUARD_LIBDIR": os.pathsep.join([f"{path}{SITELIB}", SITE])}
    env.pop("KZGUARD_ALLOW", None)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    proc.output = proc.stdout + proc.stderr
    return proc


def rpm_root(root: HostTree, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rpm", "--root", str(root.path), *args], capture_output=True, text=True)


def kzguard_files(root: HostTree) -> set[str]:
    return {
        "/" + str(p.relative_to(root.path))
        for p in root.path.rglob("*")
        if "kzguard" in p.name and "/var/lib/rpm" not in str(p) and "/var/lib/dnf" not in str(p)
    }


@pytest.fixture
def packaged_root(dnf_lab, rpm_package, tmp_path) -> HostTree:
    root = dnf_lab.root(tmp_path)
    proc = rpm_root(root, "-i", "--nodeps", "--noscripts", str(rpm_package))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kzguard-0.1.0" in installed(root)
    return root


@pytest.mark.real
@needs_dnf
def test_packaged_plugin_refuses_an_unsupported_kernel_and_accepts_a_supported_one(
    dnf_lab, packaged_root
):
    root = packaged_root
    # the library dnf's Python gets is the packaged one
    where = subprocess.run(
        ["/usr/bin/python3", "-c", "import kzguard; print(kzguard.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root.path,
        env={**os.environ, "PYTHONPATH": f"{root.path}{SITELIB}{os.pathsep}{SITE}"},
    ).stdout.strip()
    assert where == f"{root.path}{SITELIB}/kzguard/__init__.py"

    refused = packaged_dnf(dnf_lab, root, "lab", "install", "kernel-core-6.13.2")
    assert refused.returncode == 1, refused.output
    assert f"Error: kzguard: refusing kernel {NEW} (unsafe)" in refused.stderr
    assert "ZFS 2.2.7 supports Linux 4.18 to 6.12.x" in refused.stderr
    assert "kernel-core-6.13.2" not in installed(root)

    accepted = packaged_dnf(dnf_lab, root, "lab", "install", "kernel-core-6.12.10")
    assert accepted.returncode == 0, accepted.output
    assert "the root file system is not on ZFS: no snapshot taken" in accepted.output
    assert "kernel-core-6.12.10" in installed(root)


@pytest.mark.real
@needs_dnf
def test_erasing_the_package_leaves_dnf_as_it_was(dnf_lab, packaged_root):
    root = packaged_root
    before = kzguard_files(root)
    assert {"/etc/dnf/plugins/kzguard.conf", f"{SITELIB}/dnf-plugins/kzguard.py"} <= before
    # the admin changed the plugin's configuration; the rest is as packaged
    conf = root.host("/etc/dnf/plugins/kzguard.conf")
    admin = conf.read_text().replace("enabled = 1", "enabled = 0")
    conf.write_text(admin)

    proc = rpm_root(root, "-e", "--noscripts", "kzguard")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # rpm keeps a modified %config file as .rpmsave (noreplace or not); nothing else is left
    assert "/etc/dnf/plugins/kzguard.conf saved as /etc/dnf/plugins/kzguard.conf.rpmsave" in (
        proc.stdout + proc.stderr
    )
    assert kzguard_files(root) == {"/etc/dnf/plugins/kzguard.conf.rpmsave"}
    assert root.host("/etc/dnf/plugins/kzguard.conf.rpmsave").read_text() == admin
    for gone in (
        "/etc/dnf/plugins/kzguard.conf",
        f"{SITELIB}/dnf-plugins/kzguard.py",
        "/etc/dnf/libdnf5-plugins/actions.d/kzguard.actions",
        "/etc/kzguard",
        "/var/lib/kzguard",
        f"{SITELIB}/kzguard",
        "/usr/bin/kzguard",
    ):
        assert not root.host(gone).exists(), gone
    assert "kzguard-0.1.0" not in installed(root)

    # dnf is back to itself: no kzguard line, and the kernel kzguard refused installs
    proc = packaged_dnf(dnf_lab, root, "lab", "install", "kernel-core-6.13.2")
    assert proc.returncode == 0, proc.output
    assert "kzguard" not in proc.output
    assert "kernel-core-6.13.2" in installed(root)


@pytest.mark.real
@needs_rpmbuild
def test_last_removal_takes_back_kzguards_package_manager_entries(rpm_package):
    """The %preun scriptlet runs `kzguard cleanup` on the last removal (tests/test_cleanup.py
    shows what that removes); the lab erases with --noscripts, as PID 1 is not systemd here."""
    scripts = "\n".join(rpm_query("-qp", "--scripts", str(rpm_package)))
    preun = scripts.split("preuninstall scriptlet", 1)[1].split("scriptlet", 1)[0]
    assert "kzguard cleanup" in preun and "$1 -eq 0" in preun
