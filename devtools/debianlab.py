"""Real Debian root trees for the real-distribution lab (``tests/reallab/``).

A root is made by ``mmdebstrap --variant=apt --components=main,contrib`` from Debian's archive
with Debian's own ``linux-image-amd64``, ``linux-headers-amd64``, ``dkms`` and ``zfs-dkms``
(contrib), so that while it is made the real DKMS compiles the real ZFS against the real
headers. The suite's ``-backports`` is in the root's sources too (at apt's default priority
for backports, 100), for the scenarios that reach newer kernels and a newer zfs-dkms.

Cache: one zstd tarball per suite, ``<cache>/<suite>-<key>.tar.zst`` (default cache
``/var/cache/kzguard-lab``, or ``$KZGUARD_LAB_CACHE``), where ``key`` hashes the recipe's own
text (sources, packages, mmdebstrap options) and the version of every package the recipe
resolves to in the archive now (``apt-get -s install`` against the archive's indices in a
private apt directory: a few seconds). A changed recipe or a moved archive makes a new key, so
the root is built again; the older tarballs of that suite are then deleted. Files are written
as a temporary name and renamed; a lock per suite keeps two builders apart. Beside each
tarball, ``<suite>-<key>.json`` records the versions, what was installed and the build time.

Inside a root: :class:`DebianRoot` runs a command chrooted into the extracted tree in a
private mount and PID namespace (``unshare --mount --pid --fork --kill-child``): the root is
bind-mounted onto itself (so that it is a mount point, as grub-probe wants), ``/proc`` and
``/sys`` are mounted and the host's ``/dev`` is bound (apt wants ``/dev/pts``, grub-probe the
disk). The mounts die with the namespace, whatever happens to the command. The suite's
downloaded ``.deb`` files are kept in the cache (:meth:`DebianRoot.apt_get` links them in and
back), and a ccache directory is bind-mounted; with ``/usr/lib/ccache`` first on ``PATH`` a
repeated DKMS build of the same ZFS for the same kernel compiles from the cache (DKMS, make
and the linker still run for real).

A scenario whose transaction is expensive (a DKMS build) can keep its end state the same way
(:func:`keep_scenario`, :func:`replay_scenario`): keyed by the root it started from, the
.deb's bytes and its commands, so any change to kzguard runs it again.

Command line: ``python -m devtools.debianlab build [SUITE...]`` builds what is missing and
prints the tarballs; ``key SUITE`` prints the key and the resolved versions.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

MIRROR = "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("KZGUARD_LAB_CACHE", "/var/cache/kzguard-lab"))
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
CCACHE_DIR = "/var/cache/kzguard-lab-ccache"  # inside the root
BUILD_TIMEOUT = 45 * 60  # a cold trixie root takes about 12 min on 2 loaded cores
RESOLVE_TIMEOUT = 180
KERNEL_AND_ZFS = ("linux-image-amd64", "linux-headers-amd64", "dkms", "zfs-dkms", "kmod")
# The .deb's dependencies (packaging/debian/control), so that installing it downloads nothing.
KZGUARD_DEPENDS = (
    "python3",
    "python3-yaml",
    "python3-packaging",
    "python3-cryptography",
    "python3-asn1crypto",
    "python3-dbus",
    "python3-gi",
    "python3-systemd",
    "python3-prometheus-client",
)
TOOLS = ("grub-common", "ccache")  # grub-mkconfig, grub-editenv; a compiler cache for DKMS


class LabError(RuntimeError):
    """A root could not be resolved, built or entered."""


class Unreachable(LabError):
    """Debian's archive could not be reached (no network here)."""


@dataclass(frozen=True)
class Recipe:
    """What one suite's root is made of; :meth:`text` is what the cache key hashes."""

    name: str
    suites: tuple[str, ...]
    include: tuple[str, ...] = (*KERNEL_AND_ZFS, *KZGUARD_DEPENDS, *TOOLS)
    components: tuple[str, ...] = ("main", "contrib")
    variant: str = "apt"
    mirror: str = MIRROR

    def sources(self) -> list[str]:
        return [f"deb {self.mirror} {s} {' '.join(self.components)}" for s in self.suites]

    def mmdebstrap_args(self, output: Path, manifest: Path) -> list[str]:
        installed = f'chroot "$1" dpkg-query -W -f "\\${{Package}}=\\${{Version}}\\n" > {manifest}'
        return [
            "mmdebstrap",
            f"--variant={self.variant}",
            f"--components={','.join(self.components)}",
            f"--include={','.join(self.include)}",
            f"--customize-hook={installed}",
            self.suites[0],
            str(output),
            *self.sources(),
        ]

    def text(self) -> str:
        fields = asdict(self)
        fields["argv"] = self.mmdebstrap_args(Path("OUT"), Path("MANIFEST"))
        return json.dumps(fields, sort_keys=True)


RECIPES = {
    "bookworm": Recipe("bookworm", ("bookworm", "bookworm-backports")),
    "trixie": Recipe("trixie", ("trixie", "trixie-backports")),
}


@dataclass(frozen=True)
class Built:
    """A cached root: the tarball, its key and what its manifest recorded."""

    recipe: Recipe
    key: str
    tarball: Path
    manifest: dict

    @property
    def built_now(self) -> bool:
        return bool(self.manifest.get("built_now"))


def _run(
    argv: Sequence[object],
    *,
    timeout: float,
    env: Optional[Mapping[str, str]] = None,
    check: bool = True,
    input: Optional[str] = None,
    cwd: Optional[str] = None,
) -> subprocess.CompletedProcess:
    environ = {"PATH": SYSTEM_PATH, "LC_ALL": "C", **(env or {})}
    proc = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        input=input,
        cwd=cwd,
        check=False,
    )
    if check and proc.returncode != 0:
        raise LabError(f"{list(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --- resolving: the versions the archive holds now -------------------------------------------


class Archive:
    """apt against the archive's indices in a private directory (no root tree, no dpkg)."""

    def __init__(self, recipe: Recipe, cache: Path = CACHE):
        self.recipe = recipe
        self.top = cache / "apt" / recipe.name

    def _options(self) -> list[str]:
        t = self.top
        return [
            "-o",
            f"Dir={t}/",
            "-o",
            f"Dir::State::status={t}/var/lib/dpkg/status",
            "-o",
            "Dir::Etc::TrustedParts=/etc/apt/trusted.gpg.d",
            "-o",
            "Dir::Etc::Trusted=/etc/apt/trusted.gpg",
            "-o",
            "APT::Architecture=amd64",
            "-o",
            "APT::Install-Recommends=false",
            "-o",
            "Acquire::Languages=none",
        ]

    def update(self) -> None:
        for sub in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d"):
            (self.top / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
            (self.top / sub).mkdir(parents=True, exist_ok=True)
        (self.top / "var/lib/dpkg").mkdir(parents=True, exist_ok=True)
        (self.top / "var/lib/dpkg/status").touch()
        (self.top / "etc/apt/sources.list").write_text("\n".join(self.recipe.sources()) + "\n")
        proc = _run(
            ["apt-get", *self._options(), "-q", "update"], timeout=RESOLVE_TIMEOUT, check=False
        )
        failed = re.findall(r"^(?:E|W): .*", proc.stdout + proc.stderr, re.M)
        if proc.returncode != 0 or any("Failed to fetch" in line for line in failed):
            raise Unreachable(f"apt-get update for {self.recipe.name} failed: {' '.join(failed)}")

    def resolve(self, packages: Sequence[str]) -> dict[str, str]:
        """``{package: version}`` of everything installing ``packages`` (and apt) would bring."""
        argv = ["apt-get", *self._options(), "-s", "install", "apt", *packages]
        proc = _run(argv, timeout=RESOLVE_TIMEOUT)
        found = dict(re.findall(r"^Inst (\S+) \((\S+) ", proc.stdout, re.M))
        if not found:
            raise LabError(f"nothing resolved for {self.recipe.name}:\n{proc.stdout}")
        return dict(sorted(found.items()))


def key_for(recipe: Recipe, versions: Mapping[str, str]) -> str:
    digest = hashlib.sha256(recipe.text().encode())
    for name, version in sorted(versions.items()):
        digest.update(f"\n{name}={version}".encode())
    return digest.hexdigest()[:16]


def resolve(recipe: Recipe, cache: Path = CACHE) -> tuple[str, dict[str, str]]:
    """The key and the resolved versions; :class:`Unreachable` without the archive."""
    archive = Archive(recipe, cache)
    with _locked(cache / f"{recipe.name}.apt.lock"):
        archive.update()
        versions = archive.resolve(recipe.include)
    return key_for(recipe, versions), versions


# --- building and caching -------------------------------------------------------------------


def cached(recipe: Recipe, key: str, cache: Path = CACHE) -> Optional[Built]:
    tarball = cache / f"{recipe.name}-{key}.tar.zst"
    manifest = cache / f"{recipe.name}-{key}.json"
    if tarball.is_file() and manifest.is_file():
        return Built(recipe, key, tarball, json.loads(manifest.read_text()))
    return None


def ensure(recipe: Recipe, cache: Path = CACHE, *, log: Optional[Path] = None) -> Built:
    """The cached root for the archive as it is now, built first when it is missing."""
    key, versions = resolve(recipe, cache)
    found = cached(recipe, key, cache)
    if found:
        return found
    with _locked(cache / f"{recipe.name}.build.lock"):
        found = cached(recipe, key, cache)  # another builder finished while this one waited
        if found:
            return found
        return _build(recipe, key, versions, cache, log)


def _build(
    recipe: Recipe, key: str, versions: dict[str, str], cache: Path, log: Optional[Path]
) -> Built:
    tarball = cache / f"{recipe.name}-{key}.tar.zst"
    manifest = cache / f"{recipe.name}-{key}.json"
    with tempfile.TemporaryDirectory(prefix=f".{recipe.name}-build.", dir=cache) as scratch:
        out = Path(scratch) / "root.tar.zst"
        installed_list = Path(scratch) / "installed.txt"
        start = time.monotonic()
        env = {"ZSTD_NBTHREADS": "0", "TMPDIR": scratch}  # zstd on every core
        proc = _run(
            recipe.mmdebstrap_args(out, installed_list),
            timeout=BUILD_TIMEOUT,
            env=env,
            check=False,
        )
        seconds = round(time.monotonic() - start, 1)
        if log is not None:
            log.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
            raise LabError(f"mmdebstrap {recipe.name} failed ({proc.returncode}):\n{tail}")
        installed = dict(
            line.split("=", 1) for line in installed_list.read_text().splitlines() if "=" in line
        )
        record = {
            "suite": recipe.name,
            "key": key,
            "recipe": json.loads(recipe.text()),
            "resolved": versions,
            "installed": installed,
            "build_seconds": seconds,
            "tarball_bytes": out.stat().st_size,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write_atomic(manifest, json.dumps(record, indent=1, sort_keys=True) + "\n")
        os.replace(out, tarball)  # same file system: the tarball appears whole or not at all
    stale = [old for old in cache.glob(f"{recipe.name}-*.tar.zst") if old != tarball]
    for old in stale:
        old.unlink()
        old.with_suffix("").with_suffix(".json").unlink(missing_ok=True)
    if stale:  # the archive moved: the packages downloaded for the old root go too
        for deb in (cache / "archives" / recipe.name).glob("*.deb"):
            deb.unlink()
    return Built(recipe, key, tarball, {**record, "built_now": True})


def _link_or_copy(source: Path, dest: Path) -> None:
    """``dest`` appears whole or not at all (a temporary name, then a rename)."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


# --- using a root ----------------------------------------------------------------------------

_ENTER = r"""
set -e
R=$1; shift
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t sysfs sysfs "$R/sys"
while [ "$1" != -- ]; do mkdir -p "$1" "$R$2"; mount --bind "$1" "$R$2"; shift 2; done
shift
exec chroot "$R" "$@"
"""


class DebianRoot:
    """An extracted root, and commands run chrooted into it (see the module documentation)."""

    def __init__(self, path: Path, recipe: Recipe, cache: Path = CACHE):
        self.path = path
        self.recipe = recipe
        self.pool = cache / "archives" / recipe.name
        self.binds = {cache / "ccache" / recipe.name: CCACHE_DIR}

    @classmethod
    def extract(cls, built: Built, dest: Path, cache: Path = CACHE) -> DebianRoot:
        dest.mkdir(parents=True, exist_ok=True)
        _run(
            ["tar", "--zstd", "-xpf", built.tarball, "-C", dest, "--numeric-owner"],
            timeout=600,
        )
        shutil.copyfile("/etc/resolv.conf", dest / "etc/resolv.conf")
        return cls(dest, built.recipe, cache)

    def run(
        self,
        *argv: str,
        timeout: float = 600,
        env: Optional[Mapping[str, str]] = None,
        input: Optional[str] = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess:
        """``argv`` chrooted into the root; its own mounts only, gone when it ends."""
        binds: list[str] = []
        for outside, inside in self.binds.items():
            binds += [str(outside), inside]
        for outside in self.binds:
            outside.mkdir(parents=True, exist_ok=True)
        environ = {
            "PATH": f"/usr/lib/ccache:{SYSTEM_PATH}",
            "HOME": "/root",
            "DEBIAN_FRONTEND": "noninteractive",
            "CCACHE_DIR": CCACHE_DIR,
            # apt runs dpkg with its own PATH (DPkg::Path), so /usr/lib/ccache would not reach
            # DKMS: Debian's kernel headers put ccache in front of the compiler themselves.
            "DEBIAN_KERNEL_USE_CCACHE": "1",
            **(env or {}),
        }
        command = ["unshare", "--mount", "--pid", "--fork", "--kill-child"]
        command += ["sh", "-c", _ENTER, "enter", str(self.path), *binds, "--", *argv]
        return _run(command, timeout=timeout, env=environ, input=input, check=check)

    def apt_get(self, *args: str, timeout: float = 3600, **kwargs) -> subprocess.CompletedProcess:
        """``apt-get -y`` without recommends, and dpkg's output as plain lines.

        The root's ``/var/cache/apt/archives`` starts with the suite's downloaded packages
        from the cache (hard links) and what apt downloads goes back there: a package is
        fetched from the archive once per cache, and roots in use at the same time do not
        share apt's lock."""
        archives = self.path / "var/cache/apt/archives"
        self.pool.mkdir(parents=True, exist_ok=True)
        for deb in self.pool.glob("*.deb"):
            if not (archives / deb.name).exists():
                _link_or_copy(deb, archives / deb.name)
        options = ["-y", "-q", "--no-install-recommends", "-o", "Dpkg::Use-Pty=0"]
        try:
            return self.run("apt-get", *options, *args, timeout=timeout, **kwargs)
        finally:
            for deb in archives.glob("*.deb"):
                if not (self.pool / deb.name).exists():
                    _link_or_copy(deb, self.pool / deb.name)

    def installed(self) -> dict[str, str]:
        """``{package: version}`` of what dpkg has installed (``install ok installed``)."""
        proc = self.run(
            "dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n", check=True
        )
        rows = (line.split() for line in proc.stdout.splitlines())
        return {r[0]: r[1] for r in rows if len(r) == 3 and r[2] == "ii"}

    def candidate(self, package: str, *, target: Optional[str] = None) -> Optional[str]:
        """apt's candidate version of ``package`` (with ``-t target``), None if there is none."""
        extra = ["-t", target] if target else []
        proc = self.run("apt-cache", *extra, "policy", package, check=True)
        match = re.search(r"^\s*Candidate: (\S+)", proc.stdout, re.M)
        if not match or match.group(1) == "(none)":
            return None
        return match.group(1)

    def depends(self, package: str, version: str) -> list[str]:
        """The ``Depends`` of one version of ``package``, as package names."""
        proc = self.run("apt-cache", "show", f"{package}={version}", check=True)
        match = re.search(r"^Depends: (.*)$", proc.stdout, re.M)
        names = re.split(r"\s*[,|]\s*", match.group(1)) if match else []
        return [n.split()[0] for n in names if n]

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        path = self.path / inside.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    def mounts_inside(self) -> list[str]:
        """Mount points under the root as this process sees them (none, when all went well)."""
        top = str(self.path.resolve())
        points = []
        with open("/proc/self/mountinfo") as handle:
            for line in handle:
                point = line.split()[4]
                if point == top or point.startswith(top + "/"):
                    points.append(point)
        return points

    def remove(self) -> None:
        """Delete the extracted tree, never while anything is mounted in it."""
        left = self.mounts_inside()
        if left:
            raise LabError(f"not deleting {self.path}: still mounted: {left}")
        shutil.rmtree(self.path)


# --- after a scenario: the root and what the scenario printed --------------------------------


def scenario_key(base: Built, deb: Path, *steps: Sequence[str]) -> str:
    """A key for a scenario's end state: the root it started from, the exact .deb (its build
    is reproducible: debhelper clamps every time stamp) and the commands of the scenario."""
    digest = hashlib.sha256(f"{base.recipe.name}-{base.key}".encode())
    digest.update(hashlib.sha256(deb.read_bytes()).digest())
    digest.update(json.dumps([list(step) for step in steps]).encode())
    return digest.hexdigest()[:16]


def keep_scenario(root: DebianRoot, name: str, key: str, record: dict, cache: Path = CACHE) -> Path:
    """Cache ``root`` as it is after scenario ``name`` (``<cache>/<name>-<key>.tar.zst``) with
    ``record`` (what the scenario printed) beside it; older ends of the same scenario go."""
    if root.mounts_inside():
        raise LabError(f"not archiving {root.path}: still mounted: {root.mounts_inside()}")
    tarball = cache / f"{name}-{key}.tar.zst"
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=cache) as scratch:
        out = Path(scratch) / "root.tar.zst"
        _run(
            ["tar", "--zstd", "-cpf", out, "--numeric-owner", "-C", root.path, "."],
            timeout=1200,
            env={"ZSTD_NBTHREADS": "0"},
        )
        _write_atomic(cache / f"{name}-{key}.json", json.dumps(record, indent=1) + "\n")
        os.replace(out, tarball)
    for old in cache.glob(f"{name}-*.tar.zst"):
        if old != tarball:
            old.unlink()
            old.with_suffix("").with_suffix(".json").unlink(missing_ok=True)
    return tarball


def replay_scenario(
    name: str, key: str, recipe: Recipe, dest: Path, cache: Path = CACHE
) -> Optional[tuple[DebianRoot, dict]]:
    """The cached end of scenario ``name``, extracted to ``dest``, and its record; None when
    it is not cached (or ``KZGUARD_LAB_REPLAY=0`` asks for the scenario to run again)."""
    tarball = cache / f"{name}-{key}.tar.zst"
    manifest = cache / f"{name}-{key}.json"
    if os.environ.get("KZGUARD_LAB_REPLAY") == "0" or not (
        tarball.is_file() and manifest.is_file()
    ):
        return None
    built = Built(recipe, key, tarball, {})
    return DebianRoot.extract(built, dest, cache), json.loads(manifest.read_text())


def build_deb(checkout: Path, out: Path) -> Path:
    """The project's .deb, built as README says: a copy of the checkout with
    ``packaging/debian`` as ``debian/``, ``dpkg-buildpackage -us -uc -b`` on the system PATH.

    Like tests/lab/test_deb_package.py's ``deb`` fixture, but the copy is the working tree as
    git sees it: tracked files and new files git does not ignore (``--others
    --exclude-standard``), so that a module added and not yet committed is packaged too.
    """
    src = out / "kzguard"
    src.mkdir(parents=True)
    listed = _run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=str(checkout),
        timeout=60,
    ).stdout.split("\0")
    for name in dict.fromkeys(filter(None, listed)):
        path = checkout / name
        if path.is_symlink() or path.is_file():  # a file deleted in the checkout is skipped
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name, follow_symlinks=False)
    shutil.copytree(checkout / "packaging" / "debian", src / "debian", symlinks=True)
    _run(
        ["dpkg-buildpackage", "-us", "-uc", "-b"],
        cwd=str(src),
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        timeout=600,
    )
    (package,) = out.glob("kzguard_*_all.deb")
    return package


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 1 and argv[0] == "key":
        for name in argv[1:] or list(RECIPES):
            key, versions = resolve(RECIPES[name])
            print(f"{name} {key}")
            for package in RECIPES[name].include:
                print(f"  {package} {versions.get(package, '?')}")
        return 0
    if len(argv) >= 1 and argv[0] == "build":
        for name in argv[1:] or list(RECIPES):
            start = time.monotonic()
            built = ensure(RECIPES[name])
            what = "built" if built.built_now else "cached"
            took = round(time.monotonic() - start, 1)
            print(f"{name} {what} {built.tarball} ({built.tarball.stat().st_size} bytes, {took} s)")
        return 0
    print("usage: python -m devtools.debianlab build|key [SUITE...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
