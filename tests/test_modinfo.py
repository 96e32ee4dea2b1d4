"""Reading ``.modinfo`` from real module objects built by ``devtools.kobuild``."""

from __future__ import annotations

import contextlib
import gzip
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools import kobuild
from devtools.kobuild import build_module, vermagic_for
from kzguard.base.errors import FactError
from kzguard.facts import modinfo
from kzguard.facts.modinfo import (
    ModInfo,
    compression_of,
    decompress,
    load_module,
    module_modinfo,
    module_name_of,
    parse_modinfo_section,
    read_modinfo,
)
from kzguard.root import Root, Runner

RELEASE = "6.1.0-56-amd64"
OTHER = "6.1.0-40-amd64"
VERMAGIC = vermagic_for(RELEASE)
EXTRA = (("depends", "spl,zcommon"), ("alias", "devname:zfs"), ("alias", "char-major-10-249"))
SUFFIX = {None: ".ko", "xz": ".ko.xz", "zst": ".ko.zst", "gz": ".ko.gz"}


def _zfs(dest: Path, compression: str | None = None, **kw) -> Path:
    args = {"name": "zfs", "version": "2.2.7-1", "vermagic": VERMAGIC, "extra": EXTRA}
    args.update(kw)
    return build_module(dest, compression=compression, **args)


@pytest.fixture(scope="module")
def plain_ko(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _zfs(tmp_path_factory.mktemp("ko")).read_bytes()


def _install(root_dir: Path, inner: str, module: Path) -> str:
    dest = root_dir / inner.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    module.replace(dest)
    return inner


# --- file names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "compression", "name"),
    [
        ("zfs.ko", None, "zfs"),
        ("zfs.ko.xz", "xz", "zfs"),
        ("/lib/modules/6.8.0-45-generic/kernel/zfs/zfs.ko.zst", "zst", "zfs"),
        ("nvidia-drm.ko.gz", "gz", "nvidia-drm"),
        ("README", None, "README"),
    ],
)
def test_file_names(filename: str, compression: str | None, name: str) -> None:
    assert compression_of(filename) == compression
    assert module_name_of(filename) == name


# --- real modules ----------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("compression", [None, "xz", "zst", "gz"])
def test_module_round_trips(tmp_path: Path, compression: str | None) -> None:
    module = _zfs(tmp_path / "build", compression, srcversion="0123456789ABCDEF01234567")
    assert module.name == "zfs" + SUFFIX[compression]
    inner = _install(
        tmp_path / "root", f"/lib/modules/{RELEASE}/updates/dkms/{module.name}", module
    )

    info = module_modinfo(Root(tmp_path / "root"), inner)

    assert (info.name, info.version, info.srcversion) == (
        "zfs",
        "2.2.7-1",
        "0123456789ABCDEF01234567",
    )
    assert info.vermagic == "6.1.0-56-amd64 SMP preempt mod_unload modversions "
    assert info.vermagic_release == RELEASE
    assert info.depends == ["spl", "zcommon"]
    assert info.get_all("alias") == ["devname:zfs", "char-major-10-249"]
    assert info.get("license") == "CDDL"
    assert [k for k, _ in info.fields] == [
        "name", "version", "srcversion", "vermagic", "license", "depends", "alias", "alias",
    ]  # fmt: skip


@pytest.mark.real
def test_defaults_and_json(tmp_path: Path) -> None:
    info = read_modinfo(
        build_module(tmp_path, name="spl", version="2.2.7", vermagic=VERMAGIC).read_bytes()
    )

    assert info.depends == []
    assert info.get("depends") == ""
    assert len(info.srcversion or "") == 24
    assert info.get("parm") is None
    assert info.get_all("parm") == []
    assert json.loads(json.dumps(info.to_dict()))["vermagic_release"] == RELEASE


@pytest.mark.real
def test_awkward_values_survive_c_escaping(tmp_path: Path) -> None:
    odd = 'quote " back\\slash ??= tab\t newline\n é 中 \x01'
    module = _zfs(tmp_path, extra=[("description", odd), ("parm", "a=b=c")])

    info = read_modinfo(module.read_bytes())

    assert info.get("description") == odd
    assert info.get("parm") == "a=b=c"


@pytest.mark.real
@pytest.mark.parametrize("relative", [False, True])
def test_weak_updates_symlink_resolves_inside_root(tmp_path: Path, relative: bool) -> None:
    root_dir = tmp_path / "root"
    target = f"/lib/modules/{OTHER}/extra/zfs.ko"
    _install(root_dir, target, _zfs(tmp_path / "build", vermagic=vermagic_for(OTHER)))
    link = root_dir / f"lib/modules/{RELEASE}/weak-updates/zfs.ko"
    link.parent.mkdir(parents=True)
    link.symlink_to(f"../../{OTHER}/extra/zfs.ko" if relative else target)
    assert not os.path.exists(target)  # the absolute target means nothing on the host

    info = module_modinfo(Root(root_dir), f"/lib/modules/{RELEASE}/weak-updates/zfs.ko")

    assert info.vermagic_release == OTHER


@pytest.mark.real
@pytest.mark.parametrize(
    ("target", "cflags"),
    [("elf32-i386", ()), ("elf64-powerpc", ()), ("elf32-powerpc", ()), (None, ("-m32",))],
)
def test_other_classes_and_byte_orders(tmp_path: Path, target: str | None, cflags: tuple) -> None:
    fields = kobuild.modinfo_fields(name="zfs", version="2.2.7-1", vermagic=VERMAGIC)
    obj = tmp_path / "zfs.o"
    try:
        kobuild.compile_c(kobuild.module_source("zfs", fields), obj, cflags=cflags)
        if target:
            obj = kobuild.convert_object(obj, tmp_path / "zfs.ko", target)
    except Exception as exc:  # noqa: BLE001 - whatever the toolchain lacks
        pytest.skip(f"toolchain cannot make this object: {exc}")

    info = read_modinfo(obj.read_bytes())

    assert info.fields == tuple(fields)


# --- broken files ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x7fEL", b"MZ\x90\x00" + bytes(100), b"name=zfs\0"])
def test_not_an_elf(data: bytes) -> None:
    with pytest.raises(FactError, match="not an ELF file"):
        read_modinfo(data)


@pytest.mark.real
def test_every_truncation_is_a_fact_error(plain_ko: bytes) -> None:
    for cut in range(len(plain_ko)):
        with pytest.raises(FactError):
            read_modinfo(plain_ko[:cut])


@pytest.mark.real
def test_elf_without_modinfo(tmp_path: Path) -> None:
    obj = kobuild.compile_c("int answer = 42;\n", tmp_path / "plain.o")

    with pytest.raises(FactError, match=r"no \.modinfo section"):
        read_modinfo(obj.read_bytes())


@pytest.mark.real
def test_bogus_section_table(plain_ko: bytes) -> None:
    data = bytearray(plain_ko)
    data[0x3A:0x3C] = (0).to_bytes(2, "little")  # e_shentsize of an ELF64 header
    with pytest.raises(FactError, match="section header size"):
        read_modinfo(bytes(data))


@pytest.mark.real
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_elf_never_raises_another_type(plain_ko: bytes, data: st.DataObject) -> None:
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(plain_ko) - 1), st.integers(0, 255)), max_size=8)
    )
    mutated = bytearray(plain_ko)
    for pos, value in edits:
        mutated[pos] = value
    with contextlib.suppress(FactError):
        read_modinfo(bytes(mutated))


@pytest.mark.real
@pytest.mark.parametrize("compression", ["xz", "zst", "gz"])
def test_corrupt_payloads(tmp_path: Path, compression: str) -> None:
    good = _zfs(tmp_path, compression).read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    cases = [b"garbage" * 10, good[: len(good) // 2], good[:-1], bytes(flipped), good + b"junk"]
    if compression == "xz":
        cases.remove(good + b"junk")  # xz streams may carry trailing padding; lzma ignores it
    for payload in cases:
        with pytest.raises(FactError, match=f"cannot decompress {compression}"):
            decompress(payload, compression)


def test_corrupt_file_names_its_path(tmp_path: Path) -> None:
    (tmp_path / "zfs.ko.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(FactError, match=r"^/zfs\.ko\.gz: cannot decompress gz"):
        load_module(Root(tmp_path), "/zfs.ko.gz")
    with pytest.raises(FactError, match="cannot read"):
        module_modinfo(Root(tmp_path), "/missing.ko")


def test_multi_frame_zstd() -> None:
    zstandard = pytest.importorskip("zstandard")
    one = zstandard.ZstdCompressor().compress(b"a" * 1000)
    two = zstandard.ZstdCompressor().compress(b"b" * 10)

    assert decompress(one + two, "zst") == b"a" * 1000 + b"b" * 10


@pytest.mark.parametrize("compression", ["xz", "gz", "zst"])
def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch, compression: str) -> None:
    zstandard = pytest.importorskip("zstandard")
    payload = bytes(4 * 1024 * 1024)
    packed = {
        "xz": lzma.compress(payload),
        "gz": gzip.compress(payload),
        "zst": zstandard.ZstdCompressor().compress(payload),
    }[compression]
    monkeypatch.setattr(modinfo, "MAX_MODULE_SIZE", 1024 * 1024)

    with pytest.raises(FactError, match="exceeds"):
        decompress(packed, compression)


def test_unknown_compression_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        decompress(b"", "bz2")


# --- zstd without the zstandard package ------------------------------------------------------


@pytest.mark.real
def test_zstd_command_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _zfs(tmp_path, "zst").read_bytes()
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail

    assert read_modinfo(decompress(good, "zst", runner=Runner())).name == "zfs"
    with pytest.raises(FactError, match="cannot decompress zst"):
        decompress(good[:-5], "zst", runner=Runner())
    monkeypatch.setattr(modinfo, "MAX_MODULE_SIZE", 100)
    with pytest.raises(FactError, match="exceeds"):
        decompress(good, "zst", runner=Runner())


# --- the section parser ----------------------------------------------------------------------

_text = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")
_keys = st.text(_text.filter(lambda c: c != "="), min_size=1, max_size=20)
_values = st.text(_text, max_size=40)


@given(
    fields=st.lists(st.tuples(_keys, _values), max_size=12),
    pads=st.lists(st.integers(1, 8), min_size=13, max_size=13),
)
def test_parse_round_trips(fields: list[tuple[str, str]], pads: list[int]) -> None:
    section = b"\0" * pads[-1] + b"".join(
        f"{k}={v}".encode() + b"\0" * pad for (k, v), pad in zip(fields, pads)
    )
    assert parse_modinfo_section(section) == ModInfo(tuple(fields))


@given(st.binary(max_size=512))
def test_parse_never_raises(section: bytes) -> None:
    info = parse_modinfo_section(section)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in info.fields)
    info.to_dict()


def test_parse_skips_entries_without_equals() -> None:
    info = parse_modinfo_section(b"\0\0name=zfs\0junk\0\0\xff=\xfe\0depends=\0")
    assert info.fields == (("name", "zfs"), ("\ufffd", "\ufffd"), ("depends", ""))
    assert info.depends == []
    assert ModInfo().vermagic_release is None


def test_import_does_not_load_pyelftools() -> None:
    code = "import sys, kzguard.facts.modinfo; print('elftools' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
