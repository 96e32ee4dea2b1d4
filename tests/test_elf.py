"""The ELF section reader agrees with pyelftools (the oracle) and fails only with FactError."""

from __future__ import annotations

import random
from io import BytesIO
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from devtools import kobuild
from kzguard.base.errors import FactError
from kzguard.facts.elf import find_section

pytestmark = pytest.mark.real  # objects are made by gcc / objcopy

SECTIONS = (".modinfo", ".gnu.linkonce.this_module", ".text", ".symtab", ".strtab", ".nope")


def _oracle(data: bytes, name: str):
    """pyelftools' bytes of the first section called ``name`` (the kernel also takes the first)."""
    for section in ELFFile(BytesIO(data)).iter_sections():
        if section.name == name:
            return section.data()
    return None


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> dict:
    """A module in every class and byte order the toolchain here can make."""
    tmp = tmp_path_factory.mktemp("elf")
    fields = kobuild.modinfo_fields(name="zfs", version="2.2.7-1", vermagic="6.1.0-1 SMP ")
    source = kobuild.module_source("zfs", fields)
    made = {"elf64-le": kobuild.compile_c(source, tmp / "zfs64.ko")}
    made["elf32-le"] = kobuild.compile_c(source, tmp / "zfs32.ko", cflags=("-m32",))
    for target in ("elf64-powerpc", "elf32-powerpc"):
        try:
            made[target] = kobuild.convert_object(made["elf64-le"], tmp / f"{target}.ko", target)
        except Exception:  # noqa: BLE001 - a toolchain without llvm-objcopy makes fewer
            continue
    return {key: path.read_bytes() for key, path in made.items()}


@pytest.mark.parametrize("name", SECTIONS)
def test_same_bytes_as_pyelftools(objects, name):
    for kind, data in objects.items():
        assert find_section(data, name) == _oracle(data, name), kind


def test_mutated_objects_fail_only_with_fact_error(objects):
    rng = random.Random(7)
    data = objects["elf64-le"]
    for _ in range(300):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cut = (
            bytes(mutated[: rng.randint(0, len(mutated))]) if rng.random() < 0.3 else bytes(mutated)
        )
        try:
            ours = find_section(cut, ".modinfo")
        except FactError:
            continue
        try:
            theirs = _oracle(cut, ".modinfo")
        except Exception:  # noqa: BLE001 - pyelftools may reject what we reject
            continue
        assert ours == theirs


def test_not_elf_and_truncated(objects):
    data = objects["elf64-le"]
    for bad in (b"", b"MZ", b"\x7fELF", data[:20], data[:64]):
        with pytest.raises(FactError):
            find_section(bad, ".modinfo")


def test_extended_section_numbering_is_followed(objects, tmp_path: Path):
    """e_shnum == 0 and e_shstrndx == SHN_XINDEX: the real values live in section 0."""
    import struct

    data = bytearray(objects["elf64-le"])
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    struct.pack_into("<HH", data, 0x3C, 0, 0xFFFF)
    struct.pack_into("<Q", data, shoff + 0x20, shnum)  # section 0 sh_size
    struct.pack_into("<I", data, shoff + 0x28, shstrndx)  # section 0 sh_link
    assert find_section(bytes(data), ".modinfo") == _oracle(objects["elf64-le"], ".modinfo")
