"""Distro families, chosen from os-release ``ID`` then ``ID_LIKE`` by one table."""

from __future__ import annotations

from collections.abc import Iterable

from kzguard.distros.arch import Arch
from kzguard.distros.base import Distro
from kzguard.distros.debian import Debian
from kzguard.distros.el import EL
from kzguard.distros.fedora import Fedora
from kzguard.distros.proxmox import Proxmox
from kzguard.distros.ubuntu import Ubuntu

FAMILIES: dict[str, type[Distro]] = {
    cls.family: cls for cls in (Fedora, EL, Debian, Ubuntu, Proxmox, Arch)
}

# os-release ID (or an ID_LIKE word) -> family.
ID_TABLE: dict[str, str] = {
    "fedora": "fedora",
    "rhel": "el",
    "centos": "el",
    "rocky": "el",
    "almalinux": "el",
    "ol": "el",
    "debian": "debian",
    "raspbian": "debian",
    "ubuntu": "ubuntu",
    "pop": "ubuntu",
    "proxmox": "proxmox",
    "arch": "arch",
    "manjaro": "arch",
    "endeavouros": "arch",
    "cachyos": "arch",
}


def family_for(os_id: str, id_like: Iterable[str] = ()) -> str:
    """The family name for an os-release ID and ID_LIKE, or ``unknown``."""
    for word in (os_id, *id_like):
        family = ID_TABLE.get(word.lower())
        if family:
            return family
    return "unknown"


def distro_for(family: str) -> Distro:
    """An instance of the family's class (the generic one for ``unknown``)."""
    return FAMILIES.get(family, Distro)()


# DKMS's own ``override_dest_module_location``: where it installs modules, by its own reading
# of /etc/os-release (``ID`` ubuntu, else the start of ``ID_LIKE``, else ``ID``), which is
# not kzguard's family table above.
DKMS_LOCATIONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("fedora", "rhel", "ovm"), "/extra"),
    (("sles", "suse", "opensuse"), "/updates"),
    (("debian", "ubuntu", "arch"), "/updates/dkms"),
)


def dkms_install_location(os_id: str, id_like: str | None) -> str | None:
    """Where DKMS installs modules for this os-release, ``None`` where dkms.conf decides."""
    family = "ubuntu" if os_id == "ubuntu" else (id_like.lower() if id_like is not None else os_id)
    for prefixes, location in DKMS_LOCATIONS:
        if family.startswith(prefixes):
            return location
    return None
