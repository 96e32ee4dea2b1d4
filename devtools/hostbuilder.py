"""Build system root trees in the real on-disk formats, for tests, examples and benchmarks.

Modules are real ELF objects made by the toolchain (:mod:`devtools.kobuild`), META files
are written the way OpenZFS ships them, DKMS trees the way DKMS lays them out
(:mod:`devtools.dkmstree`); EFI variables, MOK lists, module signatures and initramfs images
are made with the real tools (:mod:`devtools.trust`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

from devtools import kobuild, trust

OS_RELEASES = {
    "fedora41": dict(
        NAME="Fedora Linux",
        ID="fedora",
        VERSION_ID="41",
        PRETTY_NAME="Fedora Linux 41 (Server Edition)",
    ),
    "rocky9": dict(
        NAME="Rocky Linux",
        ID="rocky",
        ID_LIKE="rhel centos fedora",
        VERSION_ID="9.5",
        PRETTY_NAME="Rocky Linux 9.5 (Blue Onyx)",
    ),
    "debian12": dict(
        NAME="Debian GNU/Linux",
        ID="debian",
        VERSION_ID="12",
        VERSION_CODENAME="bookworm",
        PRETTY_NAME="Debian GNU/Linux 12 (bookworm)",
    ),
    "ubuntu2404": dict(
        NAME="Ubuntu",
        ID="ubuntu",
        ID_LIKE="debian",
        VERSION_ID="24.04",
        PRETTY_NAME="Ubuntu 24.04.1 LTS",
    ),
    "arch": dict(NAME="Arch Linux", ID="arch", BUILD_ID="rolling", PRETTY_NAME="Arch Linux"),
}

META_TEMPLATE = """Meta:          1
Name:          zfs
Branch:        1.0
Version:       {version}
Release:       {release}
Release-Tags:  relext
License:       CDDL
Author:        OpenZFS
Linux-Maximum: {linux_max}
Linux-Minimum: {linux_min}
"""


class HostTree:
    """A root directory being built. Paths given to methods are in-root (``/etc/...``)."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def host(self, inner: str) -> Path:
        return self.path / inner.lstrip("/")

    def write(self, inner: str, content: Union[str, bytes]) -> Path:
        target = self.host(inner)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
        return target

    def symlink(self, inner: str, target: str) -> Path:
        link = self.host(inner)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(target, link)
        return link

    def os_release(self, name: str) -> HostTree:
        fields = OS_RELEASES[name]
        self.write("/etc/os-release", "".join(f'{k}="{v}"\n' for k, v in fields.items()))
        return self

    def running(self, release: str) -> HostTree:
        self.write("/proc/sys/kernel/osrelease", release + "\n")
        return self

    def kernel(self, release: str, *, modules_root: str = "/lib/modules") -> HostTree:
        """An installed kernel: its modules directory with the files a kernel package ships."""
        base = f"{modules_root}/{release}"
        self.write(f"{base}/modules.order", "kernel/fs/ext4/ext4.ko\n")
        self.write(f"{base}/modules.builtin", "kernel/fs/vfat/vfat.ko\n")
        self.host(f"{base}/kernel/fs").mkdir(parents=True, exist_ok=True)
        self.write(f"{base}/vmlinuz", b"\x00" * 64)
        return self

    def module(
        self,
        release: str,
        name: str,
        version: str,
        *,
        location: str = "updates/dkms",
        compression: Optional[str] = None,
        built_for: Optional[str] = None,
        modules_root: str = "/lib/modules",
        versions: Sequence[tuple[str, int]] = (),
    ) -> Path:
        """A real .ko (ELF with .modinfo) for ``release``, built for ``built_for`` (vermagic);
        ``versions`` are the (symbol, CRC) pairs modpost records in ``__versions``."""
        dest = self.host(f"{modules_root}/{release}/{location}")
        dest.mkdir(parents=True, exist_ok=True)
        return kobuild.build_module(
            dest,
            name=name,
            version=version,
            vermagic=kobuild.vermagic_for(built_for or release),
            compression=compression,
            versions=versions,
        )

    def weak_link(
        self,
        release: str,
        name: str,
        built_release: str,
        *,
        location: str = "extra/zfs",
        suffix: str = ".ko",
        modules_root: str = "/lib/modules",
    ) -> Path:
        """An EL weak-updates link: ``release`` uses the module installed for ``built_release``."""
        target = f"{modules_root}/{built_release}/{location}/{name}{suffix}"
        return self.symlink(f"{modules_root}/{release}/weak-updates/zfs/{name}{suffix}", target)

    def symvers(self, release: str, crcs: Mapping[str, int]) -> Path:
        """``/boot/symvers-<release>.gz`` as EL kernels ship it (Module.symvers, gzipped)."""
        import gzip

        lines = "".join(
            f"0x{crc:08x}\t{name}\tvmlinux\tEXPORT_SYMBOL\t\n" for name, crc in crcs.items()
        )
        return self.write(f"/boot/symvers-{release}.gz", gzip.compress(lines.encode(), mtime=0))

    def zfs_source(
        self, version: str, linux_min: str, linux_max: str, *, release: str = "1"
    ) -> Path:
        """``/usr/src/zfs-<version>/`` with a META as OpenZFS ships it and a full dkms.conf."""
        from devtools import dkmstree

        conf = f"/usr/src/zfs-{version}/dkms.conf"
        if not self.host(conf).exists():
            self.write(conf, dkmstree.dkms_conf("zfs", version, dkmstree.default_modules("zfs")))
        return self.write(
            f"/usr/src/zfs-{version}/META",
            META_TEMPLATE.format(
                version=version, release=release, linux_min=linux_min, linux_max=linux_max
            ),
        )

    def arch_dkms_hook(self) -> HostTree:
        """The Arch dkms package's alpm hook, which builds every /usr/src/*/dkms.conf (its
        Exec here is a stand-in: only its presence is a fact kzguard reads)."""
        self.write(
            "/usr/share/libalpm/hooks/70-dkms-install.hook",
            "[Trigger]\nOperation = Install\nOperation = Upgrade\nType = Path\n"
            "Target = usr/src/*/dkms.conf\n\n[Action]\nDescription = dkms (stand-in)\n"
            "When = PostTransaction\nExec = /bin/true\n",
        )
        return self

    def dkms(self, module: str, version: str, kernel: str, state: str = "installed") -> HostTree:
        """A DKMS tree entry laid out as DKMS itself leaves it."""
        from devtools import dkmstree

        dkmstree.make_dkms_entry(self.path, module, version, kernel, state=state)
        return self

    # --- module trust --------------------------------------------------------------------------

    def efivar(self, name: str, guid: str, value: bytes, attributes: bytes = trust.ATTRS) -> Path:
        """An efivarfs file: the 4 attribute bytes, then the value."""
        return self.write(trust.efivar(name, guid), trust.efivar_bytes(value, attributes))

    def secure_boot(self, enabled: bool, *, shim_validation: bool = True) -> HostTree:
        """An EFI host with Secure Boot on or off (user mode); ``shim_validation=False`` is
        what ``mokutil --disable-validation`` leaves: shim's ``MokSBStateRT`` set to 1."""
        volatile = trust.RT_ATTRS  # the firmware's SecureBoot and SetupMode are BS|RT, volatile
        self.efivar("SecureBoot", trust.EFI_GLOBAL_GUID, bytes([enabled]), volatile)
        self.efivar("SetupMode", trust.EFI_GLOBAL_GUID, b"\x00", volatile)
        state = trust.efivar("MokSBStateRT", trust.SHIM_LOCK_GUID)
        if shim_validation:  # shim mirrors MokSBState only when validation was turned off
            self.remove(state)
        else:
            self.efivar("MokSBStateRT", trust.SHIM_LOCK_GUID, b"\x01", trust.RT_ATTRS)
        return self

    def mok_list(self, *cert_der: bytes) -> HostTree:
        """Shim's ``MokListRT`` holding these DER certificates (lists made by ``sbsiglist``)."""
        self.efivar("MokListRT", trust.SHIM_LOCK_GUID, trust.mok_list(*cert_der), trust.RT_ATTRS)
        return self

    def zfs_root(self, dataset: str) -> HostTree:
        """``/proc/self/mounts`` with ``/`` on the ZFS ``dataset`` (a boot environment)."""
        escaped = dataset.replace(" ", "\\040")
        self.write(
            "/proc/self/mounts",
            "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n"
            "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
            f"{escaped} / zfs rw,relatime,xattr,posixacl,casesensitive 0 0\n"
            "efivarfs /sys/firmware/efi/efivars efivarfs rw,nosuid,nodev,noexec,relatime 0 0\n",
        )
        return self

    def initramfs(
        self,
        release: str,
        members: Mapping[str, bytes],
        compression: Optional[str] = "zstd",
        layout: str = "dracut",
        *,
        early_microcode: Optional[bool] = None,
    ) -> Path:
        """The initramfs of ``release`` where ``layout``'s generator puts it, a real cpio archive
        of a small skeleton plus ``members`` (path -> content), compressed with ``compression``.

        ``initramfs-tools`` (``/boot/initrd.img-<r>``) puts an uncompressed early-microcode
        archive first unless ``early_microcode`` is False; ``dracut``
        (``/boot/initramfs-<r>.img``) only when it is True.
        """
        if layout == "dracut":
            inner = f"/boot/initramfs-{release}.img"
            skeleton = {
                "usr/lib/initrd-release": 'NAME="dracut"\nID=dracut\n',
                "usr/lib/dracut/build-parameter.txt": f" --kver '{release}'\n",
                f"usr/lib/modules/{release}/modules.dep": "",
            }
        elif layout == "initramfs-tools":
            inner = f"/boot/initrd.img-{release}"
            skeleton = {
                "init": "#!/bin/sh\n. /scripts/functions\n",
                "conf/initramfs.conf": "MODULES=most\nBUSYBOX=auto\n",
                "scripts/zfs": "# zfs-initramfs boot script\n",
                f"usr/lib/modules/{release}/modules.dep": "",
            }
        else:
            raise ValueError(f"unknown initramfs layout {layout!r}")
        if early_microcode is None:
            early_microcode = layout == "initramfs-tools"
        image = trust.initramfs_image(
            {**skeleton, **members},
            compression,
            early=trust.EARLY_MICROCODE if early_microcode else None,
        )
        return self.write(inner, image)

    def sign_module(self, path: str, keypair: trust.KeyPair) -> Path:
        """Sign the module at in-root ``path`` with the kernel's sign-file (a compressed one is
        decompressed, signed, compressed again); an in-root link is followed to its module."""
        target = self.host(path)
        for _ in range(40):
            if not target.is_symlink():
                break
            link = os.readlink(target)
            target = self.host(link) if link.startswith("/") else target.parent / link
        return trust.sign_module_file(target, keypair)

    # --- bootloaders (file formats in :mod:`devtools.bootfiles`) -------------------------------

    def boot_kernel(self, release: str, initramfs: str = "initramfs-{}.img") -> HostTree:
        """``/boot/vmlinuz-<release>`` and its initramfs (``initrd.img-{}`` on Debian)."""
        self.write(f"/boot/vmlinuz-{release}", b"\x00" * 64)
        self.write(f"/boot/{initramfs.format(release)}", b"\x00" * 64)
        return self

    def grubenv(self, inner: str, **values: str) -> Path:
        """A real grubenv made by ``grub-editenv FILE create`` and ``set`` (a missing tool is
        a ToolchainError: tests check with ``tests.tools.need("grub-editenv")``)."""
        from kzguard.root import Runner

        path = self.host(inner)
        path.parent.mkdir(parents=True, exist_ok=True)
        editenv = trust.tool("grub-editenv")
        Runner().run([editenv, str(path), "create"])
        if values:
            Runner().run([editenv, str(path), "set", *(f"{k}={v}" for k, v in values.items())])
        return path

    def loader_efivar(self, name: str, value: str) -> Path:
        """A systemd loader-interface EFI variable (``LoaderEntryDefault``...): UTF-16LE with
        its NUL, as systemd writes strings."""
        guid = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
        return self.efivar(name, guid, (value + "\0").encode("utf-16-le"))

    def config(self, text: str) -> Path:
        return self.write("/etc/kzguard/kzguard.yaml", text)

    def remove(self, inner: str) -> None:
        target = self.host(inner)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
