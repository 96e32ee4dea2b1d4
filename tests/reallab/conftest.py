"""The real-distribution lab: Debian's own packages in mmdebstrap roots (devtools/debianlab.py).

Each test module extracts a cached root (one zstd tarball per suite, built on the first run:
the real DKMS compiles the real ZFS while mmdebstrap installs it), installs the project's .deb
built from this checkout, and drives the real ``apt-get`` chrooted into the root. Nothing is
faked: the kernels, headers, DKMS, zfs-dkms, GRUB's tools and Python are Debian's. The one
scenario that compiles ZFS again (bookworm's (b)) keeps its end state in the cache for that
exact .deb; ``KZGUARD_LAB_REPLAY=0`` runs it again regardless.

When it runs: under CI (``CI=true``), ``KZGUARD_REQUIRE_REAL=1`` or ``KZGUARD_REALLAB=1``; the
roots are built when the cache lacks them (about 5 min for bookworm, 12 for trixie, on 2
cores). Elsewhere every test skips saying so: a developer's ``pytest -q`` does not start a
DKMS build. Without root, the tools or Debian's archive a test skips with the reason; the
``real`` marker makes each of those skips a failure under ``KZGUARD_REQUIRE_REAL=1``.
``pytest -m reallab`` selects the tier, ``-m "not reallab"`` leaves it out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from devtools import debianlab
from devtools.debianlab import Built, DebianRoot, Recipe

TOP = Path(__file__).resolve().parents[2]
TOOLS = ("mmdebstrap", "unshare", "chroot", "zstd", "tar", "dpkg-buildpackage")
ROUGH_MINUTES = {"bookworm": 6, "trixie": 12}


def out(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def _wanted() -> bool:
    return any(
        os.environ.get(name) in ("1", "true")
        for name in ("CI", "KZGUARD_REQUIRE_REAL", "KZGUARD_REALLAB")
    )


def _root_for(recipe: Recipe) -> Built:
    if not _wanted():
        pytest.skip(
            "the real-distribution lab runs under CI (CI=true or KZGUARD_REQUIRE_REAL=1) or with "
            f"KZGUARD_REALLAB=1; a cold {recipe.name} root takes about "
            f"{ROUGH_MINUTES.get(recipe.name, 10)} min to build, then it is cached in "
            f"{debianlab.CACHE}"
        )
    if os.geteuid() != 0:
        pytest.skip("the real-distribution lab needs root (mmdebstrap, chroot, mounts)")
    for tool in TOOLS:
        if not shutil.which(tool):
            pytest.skip(f"not installed: {tool} (scripts/setup-dev installs it)")
    try:
        key, _ = debianlab.resolve(recipe)
    except debianlab.Unreachable as exc:
        pytest.skip(f"Debian's archive is unreachable from here: {exc}")
    found = debianlab.cached(recipe, key)
    if found:
        return found
    start = time.monotonic()
    built = debianlab.ensure(recipe)
    print(f"\n{recipe.name} root built in {time.monotonic() - start:.0f} s: {built.tarball}")
    return built


@pytest.fixture(scope="session")
def bookworm() -> Built:
    return _root_for(debianlab.RECIPES["bookworm"])


@pytest.fixture(scope="session")
def trixie() -> Built:
    return _root_for(debianlab.RECIPES["trixie"])


@pytest.fixture(scope="session")
def lab_deb(tmp_path_factory) -> Path:
    """The project's .deb, built from this checkout as README says."""
    if not shutil.which("dpkg-buildpackage"):
        pytest.skip("not installed: dpkg-buildpackage (scripts/setup-dev installs it)")
    return debianlab.build_deb(TOP, tmp_path_factory.mktemp("lab-deb"))


def prepare(built: Built, dest: Path, deb: Path) -> DebianRoot:
    """A fresh copy of the cached root with current indices and the project's .deb installed
    by apt (its dependencies are Debian's, already in the root)."""
    root = DebianRoot.extract(built, dest)
    try:
        proc = root.run("apt-get", "-q", "update", timeout=300)
        assert proc.returncode == 0, out(proc)
        shutil.copy(deb, root.path / "tmp" / deb.name)
        proc = root.apt_get("install", f"/tmp/{deb.name}", timeout=600)
        assert proc.returncode == 0, out(proc)
        assert root.installed().get("kzguard"), out(proc)
    except BaseException:
        root.remove()
        raise
    return root


@pytest.fixture
def fresh(tmp_path, lab_deb) -> Iterator[Callable[[Built], DebianRoot]]:
    """``fresh(built)``: a new root for this test, deleted afterwards."""
    made: list[DebianRoot] = []

    def make(built: Built) -> DebianRoot:
        root = prepare(built, tmp_path / f"{built.recipe.name}-{len(made)}", lab_deb)
        made.append(root)
        return root

    yield make
    for root in made:
        root.remove()
