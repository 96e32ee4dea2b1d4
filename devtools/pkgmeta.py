"""Package-manager metadata made with the real tools, laid out where a host caches it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

KERNEL_SPEC = """Name: %{kname}
Version: %{kver}
Release: %{krel}
Summary: kzguard test kernel
License: GPL-2.0-only
BuildArch: x86_64
%description
A kernel package with one file, for kzguard's tests and examples.
%install
mkdir -p %{buildroot}/lib/modules/%{kver}-%{krel}.x86_64
echo kernel > %{buildroot}/lib/modules/%{kver}-%{krel}.x86_64/vmlinuz
%files
/lib/modules/%{kver}-%{krel}.x86_64/vmlinuz
"""


def rpm_repo(
    repo: Path, packages: Sequence[tuple[str, str, str]], *, createrepo_args: Sequence[str] = ()
) -> Path:
    """Build ``(name, version, release)`` kernel rpms with rpmbuild into ``repo`` and index them
    with createrepo_c."""
    repo.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kzguard-rpm-") as tmp:
        top = Path(tmp)
        spec = top / "kernel.spec"
        spec.write_text(KERNEL_SPEC)
        for name, version, release in packages:
            defines = {"_topdir": top / "build", "kname": name, "kver": version, "krel": release}
            defines["_build_id_links"] = "none"
            args = [a for k, v in defines.items() for a in ("--define", f"{k} {v}")]
            _run("rpmbuild", "-bb", "--quiet", *args, spec)
            built = top / "build" / "RPMS" / "x86_64" / f"{name}-{version}-{release}.x86_64.rpm"
            shutil.copy(built, repo)
    _run("createrepo_c", "--quiet", *createrepo_args, repo)
    return repo


def dnf_cache(
    root_dir: Path,
    repoid: str,
    packages: Sequence[tuple[str, str, str]],
    *,
    cache: str = "var/cache/dnf",
) -> Path:
    """A repo of ``packages`` (:func:`rpm_repo`) with its repodata where dnf caches it
    (``<cache>/<repoid>-<hash>/repodata``)."""
    with tempfile.TemporaryDirectory(prefix="kzguard-repo-") as tmp:
        repo = rpm_repo(
            Path(tmp) / "repo", packages, createrepo_args=("--no-database", "--simple-md-filenames")
        )
        target = root_dir / cache / f"{repoid}-35e3b677de9475f9" / "repodata"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(repo / "repodata", target)
    return target


def _run(*argv: object) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)
