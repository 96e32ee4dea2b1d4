"""The example hosts the fuzz suite (``tests/test_fuzz_*.py``) starts from, built once per
session in real formats (modules by gcc, signatures by sign-file, MOK lists by sbsiglist,
grubenv by grub-editenv, the zfs-dkms .deb by dpkg-deb) and copied for each example:

- ``debian``: Debian 12 with zfs-dkms 2.2.7, Secure Boot on, its key in the MOK list and the
  modules signed with it, a distro key in ``trusted_certificates``, GRUB (grub.cfg, grubenv,
  /etc/default/grub), modules.dep and depmod.d, dpkg file lists, a zfs-dkms 2.3.1 .deb in
  apt's archives;
- ``fedora``: Fedora 41 with zfs-dkms 2.2.7, GRUB with BLS entries, dnf5's versionlock.toml
  (one admin entry, one kzguard hold);
- ``el9``: Rocky 9.5 with a kABI-tracked kmod-zfs linked into a newer kernel, symvers for both;
- ``arch``: Arch with zfs-linux owned in pacman's local database, modules in .ko.zst,
  systemd-boot on /efi with the loader EFI variables.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from devtools import bootfiles as bf
from devtools import trust
from devtools.hostbuilder import META_TEMPLATE, HostTree
from tests import scenarios as sc
from tests.tools import need

ARCH_RUNNING = "6.12.4-arch1-1"
EL_KERNELS = (sc.EL_BUILT, sc.EL_NEWER)
ZFS_DEB = "/var/cache/apt/archives/zfs-dkms_2.3.1-1_all.deb"
TRUSTED_PEM = "/etc/kzguard/distro-key.pem"  # trusted_certificates on the Debian host
NEW_META = META_TEMPLATE.format(version="2.3.1", release="1", linux_min="4.18", linux_max="6.13")


@functools.lru_cache(maxsize=1)
def _workdir() -> Path:
    """Where hosts are built and copied: a tmpfs when there is one (a copy and a removal per
    example cost ten times less there than on a disk mounted with ``discard``)."""
    shm = "/dev/shm"
    parent = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="kzguard-fuzz-", dir=parent))
    import atexit

    atexit.register(shutil.rmtree, path, True)
    return path


@functools.cache
def base(name: str) -> Path:
    """A valid host (built once per session); copy it with :func:`copy_of` before changing it."""
    need("gcc", "xz", "zstd", "grub-editenv", "openssl", "sbsiglist", "sign-file", "dpkg-deb")
    path = _workdir() / "bases" / name
    BUILDERS[name](path)
    return path


@contextmanager
def copy_of(name: str) -> Iterator[Path]:
    """A fresh copy of base ``name`` in its own directory (removed afterwards)."""
    src = base(name)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_workdir()))
    tree = work / "root"
    try:
        shutil.copytree(src, tree, symlinks=True)
        yield tree
    finally:
        _rmtree(work)


def _rmtree(path: Path) -> None:
    def fix(function: Callable, name: str, _exc: object) -> None:
        try:
            os.chmod(os.path.dirname(name), 0o755)
            function(name)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


@functools.lru_cache(maxsize=1)
def _pki() -> trust.KeyPair:
    return trust.make_cert(_workdir() / "pki", "mok", subject="/CN=kzguard fuzz MOK/O=kzguard")


def cert_der() -> bytes:
    """The DER certificate of the key in the Debian host's MOK list (its modules' signer)."""
    return _pki().der.read_bytes()


def _debian(path: Path) -> None:
    """Debian 12 + zfs-dkms 2.2.7, Secure Boot on with its key in the MOK list and the modules
    signed, GRUB with grubenv, modules.dep and depmod.d, dpkg file lists, a zfs-dkms .deb."""
    release = sc.DEBIAN_RUNNING
    tree = sc.debian_dkms(path).secure_boot(True)
    pki = _pki()
    tree.mok_list(pki.der.read_bytes())
    for name in ("zfs", "spl"):
        tree.sign_module(f"/lib/modules/{release}/updates/dkms/{name}.ko", pki)
    tree.boot_kernel(release, "initrd.img-{}")
    tree.write("/boot/grub/grub.cfg", bf.debian_grub_cfg([release]))
    tree.write("/etc/default/grub", bf.default_grub("saved"))
    tree.grubenv("/boot/grub/grubenv", saved_entry=bf.debian_entry_id(release))
    tree.write(
        f"/lib/modules/{release}/modules.dep",
        "kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko\n"
        "updates/dkms/zfs.ko: updates/dkms/spl.ko\nupdates/dkms/spl.ko:\n",
    )
    tree.write("/etc/depmod.d/zfs.conf", "# zfs first\nsearch updates extra built-in\n")
    tree.write("/usr/lib/depmod.d/ubuntu.conf", "search updates ubuntu built-in\n")
    tree.write(
        f"/var/lib/dpkg/info/linux-image-{release}.list",
        f"/.\n/boot\n/boot/vmlinuz-{release}\n/lib/modules/{release}/kernel/fs/ext4/ext4.ko\n",
    )
    tree.write(
        "/var/lib/dpkg/info/zfs-dkms.list",
        "/.\n/usr/src/zfs-2.2.7\n/usr/src/zfs-2.2.7/META\n/usr/src/zfs-2.2.7/dkms.conf\n",
    )
    tree.write("/var/lib/dpkg/status", "")
    _zfs_deb(tree.host(ZFS_DEB))
    distro = trust.make_cert(_workdir() / "pki", "distro", subject="/CN=distro key", kind="ec")
    tree.write(TRUSTED_PEM, distro.pem.read_bytes())
    tree.config(f"trusted_certificates: [{TRUSTED_PEM}]\n")


def _zfs_deb(out: Path) -> None:
    """zfs-dkms 2.3.1 as dpkg-deb builds it, its META saying Linux up to 6.13."""
    work = Path(tempfile.mkdtemp(dir=_workdir()))
    pkg = HostTree(work)
    pkg.write("/usr/src/zfs-2.3.1/META", NEW_META)
    pkg.write("/usr/src/zfs-2.3.1/dkms.conf", 'PACKAGE_NAME="zfs"\n')
    pkg.write(
        "/DEBIAN/control",
        "Package: zfs-dkms\nVersion: 2.3.1-1\nArchitecture: all\n"
        "Maintainer: t <t@kzguard.invalid>\nDescription: t\n",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(work), str(out)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(work)


def _fedora(path: Path) -> None:
    """Fedora 41 + zfs-dkms 2.2.7, GRUB with BLS entries and grubenv, a dnf5 versionlock."""
    tree = sc.fedora_dkms(path)
    for release in (sc.FEDORA_OLD, sc.FEDORA_RUNNING):
        tree.boot_kernel(release)
        tree.write(*bf.bls_entry(release))
    tree.write(*bf.bls_rescue_entry())
    tree.write("/boot/grub2/grub.cfg", 'set default="${saved_entry}"\nblscfg\n')
    tree.write("/etc/default/grub", "GRUB_DEFAULT=saved\nGRUB_ENABLE_BLSCFG=true\n")
    tree.grubenv("/boot/grub2/grubenv", saved_entry=f"{bf.MACHINE_ID}-{sc.FEDORA_RUNNING}")
    tree.write("/etc/dnf/versionlock.toml", VERSIONLOCK)
    tree.write("/usr/bin/dnf5", b"")


VERSIONLOCK = """\
version = "1.0"

[[packages]]
name = "kernel-modules-extra"
comment = "the admin's own"
[[packages.conditions]]
key = "evr"
comparator = "="
value = "6.12.9-200.fc41"

[[packages]]
# kzguard: a kernel the installed ZFS cannot load; kzguard lifts this when not needed
name = "kernel-core"
comment = "kzguard: holds 6.13.2-200.fc41.x86_64 (the installed ZFS cannot load it)"
[[packages.conditions]]
key = "evr"
comparator = "!="
value = "6.13.2-200.fc41"
"""


def _el9(path: Path) -> None:
    sc.el9_kmod(path)


def _arch(path: Path) -> None:
    """Arch with zfs-linux (a package owning its modules in pacman's local database) and
    systemd-boot on /efi (loader.conf, entries, loader EFI variables)."""
    release = ARCH_RUNNING
    tree = HostTree(path).os_release("arch").running(release)
    tree.kernel(release, modules_root="/usr/lib/modules")
    tree.write(f"/usr/lib/modules/{release}/pkgbase", "linux\n")
    files = []
    for name in ("zfs", "spl"):
        tree.module(
            release, name, "2.2.7-1", location="extra", compression="zst",
            modules_root="/usr/lib/modules",
        )  # fmt: skip
        files.append(f"usr/lib/modules/{release}/extra/{name}.ko.zst")
    _pacman_pkg(tree, "linux", "6.12.4.arch1-1", [f"usr/lib/modules/{release}/vmlinuz"])
    _pacman_pkg(tree, "zfs-linux", "2.2.7_6.12.4.arch1.1-1", files)
    tree.write("/etc/pacman.conf", "[options]\nHoldPkg = pacman\n\n[core]\n[archzfs]\n")
    tree.write("/boot/vmlinuz-linux", b"\0" * 64)
    tree.write("/boot/initramfs-linux.img", b"\0" * 64)
    tree.write("/efi/loader/loader.conf", "default arch.conf\ntimeout 3\nconsole-mode max\n")
    for entry, initrd in (("arch", "initramfs-linux.img"), ("arch-fallback", "initramfs.img")):
        tree.write(
            f"/efi/loader/entries/{entry}.conf",
            bf.sd_entry(f"Arch Linux ({entry})", "/vmlinuz-linux", f"/{initrd}"),
        )
    tree.loader_efivar("LoaderInfo", "systemd-boot 256.7-1-arch")
    tree.loader_efivar("LoaderEntryDefault", "arch.conf")


def _pacman_pkg(tree: HostTree, name: str, version: str, files: Sequence[str]) -> None:
    base_dir = f"/var/lib/pacman/local/{name}-{version}"
    tree.write(f"{base_dir}/desc", f"%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%ARCH%\nx86_64\n\n")
    tree.write(f"{base_dir}/files", "%FILES%\nusr/\nusr/lib/\n" + "".join(f + "\n" for f in files))


BUILDERS: dict[str, Callable[[Path], None]] = {
    "debian": _debian,
    "fedora": _fedora,
    "el9": _el9,
    "arch": _arch,
}
BASES = tuple(BUILDERS)
