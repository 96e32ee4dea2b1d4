"""kzguard: the next boot never lands in a kernel that cannot load the ZFS module."""

__version__ = "0.1.0"
