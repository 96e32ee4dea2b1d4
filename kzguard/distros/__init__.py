"""Distro families, chosen from os-release ``ID`` then ``ID_LIKE`` by one table."""

from __future__ import annotations

from kzguard.distros.base import Distro

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable

# family -> (module under kzguard.distros, class): a run imports only its host's family.
FAMILIES: dict[str, tuple[str, str]] = {
    "fedora": ("fedora", "Fedora"),
    "el": ("el", "EL"),
    "debian": ("debian", "Debian"),
    "ubuntu": ("ubuntu", "Ubuntu"),
    "proxmox": ("proxmox", "Proxmox"),
    "arch": ("arch", "Arch"),
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


def distro_class(family: str) -> type[Distro]:
    """The family's class (the generic one for ``unknown``), its module imported on first use."""
    where = FAMILIES.get(family)
    if where is None:
        return Distro
    module = __import__(f"{__name__}.{where[0]}", fromlist=(where[1],))  # importlib costs 1 ms
    return getattr(module, where[1])  # type: ignore[no-any-return]


def distro_for(family: str) -> Distro:
    """An instance of the family's class (the generic one for ``unknown``)."""
    return distro_class(family)()


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
