"""What the dnf 4 plugin adds to a dnf run that installs a kernel, as a ratio to dnf without it.

The lab of ``tests/lab/test_dnf.py`` is reused: rpms built by the real rpmbuild
(:func:`build_rpm`), a repository made by createrepo_c, and an installroot that is a Fedora 41
ZFS host (:func:`fedora_zfs_host`: kernel 6.12.9 with zfs and spl, zfs-dkms 2.2.7 whose META
stops at Linux 6.12) with an empty rpmdb. Each run is ``dnf --assumeno install
kernel-core-6.12.10`` on that root, from dnf's metadata cache (``-C``, filled once before):
dnf resolves the same transaction, prints it and answers no (exit 1, "Operation aborted").

- A, "dnf, no plugin": the plugin path is an empty directory;
- B, "dnf + kzguard": the plugin path holds ``hooks/dnf/kzguard.py``, enabled by
  ``hooks/dnf/kzguard.conf`` as the RPM installs them; ``sack()`` reads the configuration and
  state, ``resolved()`` judges 6.12.10 on the root (safe: ZFS 2.2.7 supports up to 6.12).

kzguard is installed as the RPM installs it: ``pip install --no-deps --target DIR`` of a wheel
of this tree (the spec's ``--target %{python3_sitelib}``), run by dnf's own ``/usr/bin/python3``
with ``PYTHONPATH=DIR`` in both cases (so both pay for the same ``sys.path``); its
dependencies (PyYAML, packaging) are the system's, as the RPM's Requires give them. Before
timing, one run of each case is checked: both print the same transaction, and B prints the
plugin's verdict line (so the plugin really ran).

Goal (issue 13): B <= 1.05x A.

Usage: python bench/dnf_plugin.py [--runs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))
sys.path.insert(0, str(TOP / "bench"))

from harness import Case, Goal, how, interleave, report, which  # noqa: E402

from tests.lab.test_dnf import PACKAGES, build_rpm, fedora_zfs_host  # noqa: E402

DNF_PYTHON = "/usr/bin/python3"  # the interpreter /usr/bin/dnf runs on (python3-dnf)
KERNEL = "kernel-core-6.12.10"
RELEASE = "6.12.10-200.fc41.x86_64"
REPO = "lab"
REPO_PACKAGES = ("kernel-core-6.12.10", "kernel-core-6.13.2", "zfs-dkms-2.3.1", "tool-1.0")
NO_PLUGIN, PLUGIN = "dnf, no plugin", "dnf + kzguard"
GOALS = (Goal("dnf4 plugin", PLUGIN, NO_PLUGIN, at_most=1.05),)
# dnf --assumeno exits 1 ("Operation aborted.") once it has resolved and printed the transaction
ASSUMENO = (1,)
# what resolved() logs for a kernel it judged safe on a root not on ZFS
VERDICT = "no snapshot taken"


def site_install(work: Path) -> Path:
    """kzguard from a wheel of this tree, as the RPM's ``pip install --target`` lays it out."""
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(TOP)], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    wheel = next(wheels.glob("kzguard-*.whl"))
    site = work / "sitelib"
    target = ["install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)]
    subprocess.run([*pip, *target], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(site / "bin", ignore_errors=True)  # the spec removes pip's script too
    # byte-compiled for dnf's interpreter, as rpm's brp-python-bytecompile does
    subprocess.run([DNF_PYTHON, "-m", "compileall", "-q", str(site)], check=True)
    probe = subprocess.run(
        [DNF_PYTHON, "-c", "import kzguard; print(kzguard.__file__)"],
        capture_output=True, text=True, check=True, cwd=work,
        env={**os.environ, "PYTHONPATH": str(site)},
    ).stdout.strip()  # fmt: skip
    if not probe.startswith(str(site)):
        raise SystemExit(f"kzguard imports from {probe}, not from {site}")
    return site


def build_repo(work: Path) -> Path:
    built = [build_rpm(work / "rpm", *PACKAGES[key]) for key in REPO_PACKAGES]
    repo = work / "repo"
    repo.mkdir()
    for rpm in built:
        shutil.copy(rpm, repo)
    subprocess.run(["createrepo_c", "--quiet", str(repo)], check=True)
    return repo


def plugin_dirs(work: Path) -> tuple[Path, Path, Path]:
    """An empty plugin path, one holding the plugin, and the plugin configuration directory."""
    empty, plugins, conf = work / "plugins-none", work / "plugins", work / "plugins.d"
    for directory in (empty, plugins, conf):
        directory.mkdir()
    shutil.copy(TOP / "hooks" / "dnf" / "kzguard.py", plugins / "kzguard.py")
    shutil.copy(TOP / "hooks" / "dnf" / "kzguard.conf", conf / "kzguard.conf")
    subprocess.run([DNF_PYTHON, "-m", "compileall", "-q", str(plugins)], check=True)
    return empty, plugins, conf


def dnf_argv(root: Path, repo: Path, pluginpath: Path, confpath: Path, *args: str) -> list[str]:
    return [
        which("dnf"), f"--installroot={root}", "--releasever=41", "--disablerepo=*",
        f"--repofrompath={REPO},{repo}", f"--setopt={REPO}.gpgcheck=0",
        f"--setopt={REPO}.metadata_expire=never", f"--setopt=pluginpath={pluginpath}",
        f"--setopt=pluginconfpath={confpath}", *args,
    ]  # fmt: skip


def transaction_of(output: str) -> list[str]:
    """The package lines of dnf's transaction table."""
    return [line.split()[0] for line in output.splitlines() if re.match(r"^ \S+\s+x86_64\s", line)]


def check_cases(cases: dict[str, Case]) -> None:
    """One run of each: dnf got as far as the question and showed the same transaction, and
    the plugin judged the kernel in B (and did not run in A)."""
    seen = {}
    for name, case in cases.items():
        proc = subprocess.run(list(case.argv), capture_output=True, text=True, env=case.env)
        output = proc.stdout + proc.stderr
        if proc.returncode not in ASSUMENO or "Operation aborted" not in output:
            raise SystemExit(f"{name}: dnf exited {proc.returncode}:\n{output[-2000:]}")
        seen[name] = transaction_of(output)
        if (VERDICT in output) != (name == PLUGIN):
            did = "did not run" if name == PLUGIN else "ran"
            raise SystemExit(f"{name}: the kzguard plugin {did}:\n{output[-2000:]}")
    if seen[NO_PLUGIN] != seen[PLUGIN] or seen[PLUGIN] != [KERNEL.rsplit("-", 1)[0]]:
        raise SystemExit(f"the cases resolved different transactions: {seen}")


def described(root: Path, site: Path) -> str:
    version = subprocess.run([which("dnf"), "--version"], capture_output=True, text=True)
    return (
        f"dnf: {version.stdout.splitlines()[0]} on {DNF_PYTHON}; `dnf -C --assumeno install "
        f"{KERNEL}` (exit 1, aborted at the question; the same transaction in both) in the "
        f"installroot {root} (Fedora 41, zfs-dkms 2.2.7, not on ZFS; {RELEASE} judged safe by "
        "the plugin in B)\n"
        f"kzguard: installed non-editable from a wheel of this tree with `pip install --no-deps "
        f"--target {site}` (as the RPM's %install does into python3_sitelib), byte-compiled for "
        f"{DNF_PYTHON}; PYTHONPATH={site} in both cases; the plugin and kzguard.conf copied from "
        "hooks/dnf (A: an empty pluginpath)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keep", type=Path, help="build in this directory and keep it")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("dnf --installroot needs root")
    for tool in ("dnf", "rpm", "rpmbuild", "createrepo_c"):
        which(tool)
    with tempfile.TemporaryDirectory(prefix="kzguard-dnfbench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        site = site_install(work)
        repo = build_repo(work)
        empty, plugins, confpath = plugin_dirs(work)
        root = work / "root"
        fedora_zfs_host(root)
        env = {**os.environ, "PYTHONPATH": str(site), "LC_ALL": "C.UTF-8"}
        env.pop("KZGUARD_LIBDIR", None)
        # fill the metadata cache once; every timed run reads it (-C)
        subprocess.run(dnf_argv(root, repo, empty, confpath, "-q", "makecache"), check=True,
                       env=env, stdout=subprocess.DEVNULL)  # fmt: skip
        install = ("-C", "--assumeno", "install", KERNEL)
        cases = {
            NO_PLUGIN: Case(dnf_argv(root, repo, empty, confpath, *install), ok=ASSUMENO, env=env),
            PLUGIN: Case(dnf_argv(root, repo, plugins, confpath, *install), ok=ASSUMENO, env=env),
        }
        check_cases(cases)
        samples = interleave(cases, args.runs)
        print(how(args.runs, extra=described(root, site)))
        ok = report(samples, GOALS, clocks=("wall", "cpu"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
