"""Find one section of an ELF object by name (what kzguard needs from a ``.ko``).

A kernel module is a relocatable ELF object; kzguard reads ``.modinfo`` (and later
``__versions``) from it. This reads only the ELF header, the section header table and the
section-name string table with :mod:`struct`: pyelftools, which the tests use as the oracle,
costs more to import (about 14 ms) than reading twenty modules this way, and the package-manager
hooks run on that budget. Anything malformed is a :class:`FactError`, never another exception.
"""

from __future__ import annotations

import struct

from kzguard.base.errors import FactError

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from typing import Optional

ELF_MAGIC = b"\x7fELF"
SHF_COMPRESSED = 0x800
SHT_NOBITS = 8
SHN_XINDEX = 0xFFFF

# e_ident[EI_CLASS] -> (header layout after e_ident, section header layout, its size)
_LAYOUT = {
    1: ("HHIIIIIHHHHHH", "IIIIIIIIII", 40),  # ELFCLASS32
    2: ("HHIQQQIHHHHHH", "IIQQQQIIQQ", 64),  # ELFCLASS64
}
_ORDER = {1: "<", 2: ">"}  # e_ident[EI_DATA]


def find_section(data: bytes, name: str) -> Optional[bytes]:
    """The bytes of section ``name``, or ``None`` when the object has no such section."""
    if data[:4] != ELF_MAGIC:
        raise FactError("not an ELF file")
    if len(data) < 16 or data[4] not in _LAYOUT or data[5] not in _ORDER:
        raise FactError("malformed ELF file: unknown class or byte order")
    order = _ORDER[data[5]]
    head_fmt, shdr_fmt, shdr_size = _LAYOUT[data[4]]
    header = _unpack(order + head_fmt, data, 16, "ELF header")
    shoff, shentsize, shnum, shstrndx = header[5], header[10], header[11], header[12]
    if shoff == 0:
        return None
    if shentsize != shdr_size:
        raise FactError(f"malformed ELF file: section header size {shentsize}")
    fmt = order + shdr_fmt
    if shnum == 0 or shstrndx == SHN_XINDEX:  # extended numbering lives in section 0
        first = _unpack(fmt, data, shoff, "section header")
        shnum = shnum or first[5]
        shstrndx = first[6] if shstrndx == SHN_XINDEX else shstrndx
    if shoff + shnum * shdr_size > len(data):
        raise FactError("truncated ELF file: section table past end of file")
    if shstrndx >= shnum:
        raise FactError("malformed ELF file: no section name table")
    headers = [struct.unpack_from(fmt, data, shoff + i * shdr_size) for i in range(shnum)]
    names = _contents(data, headers[shstrndx], "section name table")
    wanted = name.encode()
    for section in headers:
        start = section[0]
        if start >= len(names):
            raise FactError("malformed ELF file: section name out of range")
        end = names.find(b"\0", start)
        if names[start : end if end >= 0 else len(names)] == wanted:
            return _contents(data, section, name)
    return None


def _unpack(fmt: str, data: bytes, offset: int, what: str) -> tuple:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error as exc:
        raise FactError(f"truncated ELF file: {what}") from exc


def _contents(data: bytes, section: tuple, what: str) -> bytes:
    sh_type, sh_flags, offset, size = section[1], section[2], section[4], section[5]
    if sh_type == SHT_NOBITS:
        return b""
    if sh_flags & SHF_COMPRESSED:
        raise FactError(f"compressed {what} section is not supported")
    if offset + size > len(data):
        raise FactError(f"truncated ELF file: {what} past end of file")
    return data[offset : offset + size]
