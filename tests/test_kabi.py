"""kABI checks with a real ``Module.symvers`` (linux-headers-amd64) and modules built by gcc."""

from __future__ import annotations

import contextlib
import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools import kobuild, trust
from devtools.hostbuilder import HostTree
from devtools.kobuild import ToolchainError
from kzguard.base.errors import FactError
from kzguard.facts import kabi
from kzguard.facts.kabi import (
    COMPATIBLE,
    INCOMPATIBLE,
    UNKNOWN,
    Symvers,
    check,
    module_crcs,
    module_exports,
    parse_symvers,
    read_symvers,
)
from kzguard.root import Root

EL_RELEASE = "5.14.0-503.11.1.el9_5.x86_64"
WANTED = ("module_layout", "_printk", "__kmalloc", "kfree", "kmalloc_caches", "jiffies")


def _real_symvers_path() -> Path:
    try:
        return trust.real_module_symvers()
    except ToolchainError as exc:
        pytest.skip(f"{exc} (scripts/setup-dev installs it)")


@pytest.fixture(scope="module")
def real_path() -> Path:
    return _real_symvers_path()


@pytest.fixture(scope="module")
def real(real_path: Path) -> Symvers:
    return parse_symvers(real_path.read_text(), str(real_path))


@pytest.fixture(scope="module")
def imports(real: Symvers) -> dict[str, int]:
    """Real CRCs of a few symbols every module imports, as this kernel exports them."""
    found = {name: real.crcs[name] for name in WANTED if name in real.crcs}
    assert {"_printk", "kfree"} <= set(found)
    return found


def _build(tmp: Path, versions, *, name: str = "zfs", **kwargs) -> bytes:
    vermagic = kobuild.vermagic_for(EL_RELEASE)
    path = kobuild.build_module(
        tmp, name=name, version="2.2.7-1", vermagic=vermagic, versions=list(versions), **kwargs
    )
    return path.read_bytes()


def _compile(tmp: Path, versions, *, cflags=(), target=None, **kwargs) -> bytes:
    fields = kobuild.modinfo_fields(name="zfs", version="2.2.7-1", vermagic="6.1.0-1 SMP ")
    source = kobuild.module_source("zfs", fields, list(versions), **kwargs)
    obj = kobuild.compile_c(source, tmp / "zfs.o", cflags=cflags)
    if target:
        obj = kobuild.convert_object(obj, tmp / "zfs.ko", target)
    return obj.read_bytes()


# --- the real Module.symvers -----------------------------------------------------------------


@pytest.mark.real
def test_real_module_symvers_parses_completely(real_path: Path, real: Symvers) -> None:
    lines = [line for line in real_path.read_text().splitlines() if line]
    assert real.problems == 0
    assert len(real.crcs) == len({line.split("\t")[1] for line in lines})
    assert real.has_crcs
    for line in lines[:50]:
        crc, symbol, _module, export, *_ = line.split("\t")
        assert real.crcs[symbol] == int(crc, 16)
        assert (symbol in real.gpl_only) == (export == "EXPORT_SYMBOL_GPL")
    assert "symbols=" in repr(real) and "0x" not in repr(real)  # the CRCs stay out of repr


@pytest.mark.real
def test_read_symvers_finds_the_debian_headers_on_this_host(real_path: Path) -> None:
    release = real_path.parent.name.removeprefix("linux-headers-")
    found = read_symvers(Root("/"), release)

    assert found is not None
    assert found.path in (
        f"/lib/modules/{release}/build/Module.symvers",
        f"/usr/src/linux-headers-{release}/Module.symvers",
    )
    assert len(found.crcs) > 1000


@pytest.mark.real
def test_module_built_against_the_kernel_is_compatible(tmp_path, real, imports) -> None:
    crcs = module_crcs(_build(tmp_path, imports.items()))

    assert crcs == imports
    result = check(crcs, real)
    assert result.status == COMPATIBLE
    assert result.checked == len(imports)
    assert (result.missing, result.changed, result.gpl_only) == ((), (), ())
    assert result.source == real.path


@pytest.mark.real
def test_one_changed_crc_is_incompatible(tmp_path, real, imports) -> None:
    versions = dict(imports, kfree=imports["kfree"] ^ 0x1)
    result = check(module_crcs(_build(tmp_path, versions.items())), real)

    assert result.status == INCOMPATIBLE
    assert result.changed == ("kfree",)
    assert result.missing == ()
    assert "kfree" in result.message
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "incompatible" and data["changed"] == ["kfree"]


@pytest.mark.real
def test_a_symbol_the_new_kernel_stopped_exporting_is_missing(tmp_path, real_path, imports):
    """A copy of the real Module.symvers without ``kfree``, as an EL kernel-devel tree."""
    lines = real_path.read_text().splitlines(keepends=True)
    kept = "".join(line for line in lines if line.split("\t")[1] != "kfree")
    tree = HostTree(tmp_path / "root")
    tree.write(f"/usr/src/kernels/{EL_RELEASE}/Module.symvers", kept)
    symvers = read_symvers(Root(tree.path), EL_RELEASE)
    assert symvers is not None
    assert symvers.path == f"/usr/src/kernels/{EL_RELEASE}/Module.symvers"

    result = check(module_crcs(_build(tmp_path / "ko", imports.items())), symvers)

    assert result.status == INCOMPATIBLE
    assert result.missing == ("kfree",)
    assert result.changed == ()


@pytest.mark.real
def test_gzipped_el_symvers_in_boot_is_found_first(tmp_path, real_path, real) -> None:
    tree = HostTree(tmp_path)
    tree.write(f"/boot/symvers-{EL_RELEASE}.gz", gzip.compress(real_path.read_bytes()))
    tree.write(f"/usr/src/kernels/{EL_RELEASE}/Module.symvers", "0x00000001\tother\tvmlinux\n")

    found = read_symvers(Root(tmp_path), EL_RELEASE)

    assert found is not None
    assert found.path == f"/boot/symvers-{EL_RELEASE}.gz"
    assert found.crcs == real.crcs
    assert found.gpl_only == real.gpl_only


@pytest.mark.real
def test_gpl_only_exports_are_refused_to_a_cddl_module(tmp_path, real, imports) -> None:
    gpl_symbol = min(real.gpl_only)
    versions = dict(imports, **{gpl_symbol: real.crcs[gpl_symbol]})
    crcs = module_crcs(_build(tmp_path, versions.items()))

    assert check(crcs, real).status == COMPATIBLE  # licence unknown: not judged
    assert check(crcs, real, license="GPL").status == COMPATIBLE
    cddl = check(crcs, real, license="CDDL")
    assert cddl.status == INCOMPATIBLE
    assert cddl.gpl_only == (gpl_symbol,)


@pytest.mark.real
def test_symbols_from_a_companion_module_are_not_missing(tmp_path, real, imports) -> None:
    versions = dict(imports, spl_kmem_alloc=0x1234ABCD, spl_panic=0x0BADF00D)
    crcs = module_crcs(_build(tmp_path, versions.items()))
    spl_source = kobuild.module_source(
        "spl", kobuild.modinfo_fields(name="spl", version="2.2.7-1", vermagic="6.1.0-1 SMP ")
    ) + (
        'static const char __kstrtab[] __attribute__((used, section("__ksymtab_strings")))'
        ' = "spl_kmem_alloc\\0\\0spl_panic\\0";\n'
    )
    spl = kobuild.compile_c(spl_source, tmp_path / "spl.ko").read_bytes()

    assert module_exports(spl) == {"spl_kmem_alloc", "spl_panic"}
    alone = check(crcs, real)
    assert alone.missing == ("spl_kmem_alloc", "spl_panic")
    together = check(crcs, real, provided=module_exports(spl))
    assert together.status == COMPATIBLE
    assert together.checked == len(imports)


# --- module_layout and kernels without modversions --------------------------------------------


@pytest.mark.real
def test_module_layout_is_compared_but_never_missing(tmp_path) -> None:
    crcs = module_crcs(_build(tmp_path, [("module_layout", 0x1111), ("kfree", 0x2222)]))
    without = parse_symvers("0x00002222\tkfree\tvmlinux\tEXPORT_SYMBOL\t\n")
    other = parse_symvers(
        "0x00002222\tkfree\tvmlinux\tEXPORT_SYMBOL\t\n"
        "0x00009999\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n"
    )

    assert check(crcs, without).status == COMPATIBLE  # check_modstruct_version lets it pass
    assert check(crcs, other).changed == ("module_layout",)


def test_a_kernel_without_modversions_compares_no_crcs() -> None:
    symvers = parse_symvers("0x00000000\tkfree\tvmlinux\tEXPORT_SYMBOL\t\n")
    assert not symvers.has_crcs

    assert check({"kfree": 0x1234}, symvers).status == COMPATIBLE
    assert check({"kfree": 0x1234, "gone": 1}, symvers).missing == ("gone",)


def test_unknown_without_symvers_or_without_versions() -> None:
    symvers = parse_symvers("0x00000001\tkfree\tvmlinux\tEXPORT_SYMBOL\t\n", "/x")

    absent = check({"kfree": 1}, None)
    assert absent.status == UNKNOWN
    assert absent.to_dict()["source"] is None
    unversioned = check({}, symvers)
    assert unversioned.status == UNKNOWN
    assert unversioned.source == "/x"
    assert "no symbol versions" in unversioned.message


def test_no_symvers_anywhere_is_none(tmp_path) -> None:
    HostTree(tmp_path).kernel(EL_RELEASE)
    assert read_symvers(Root(tmp_path), EL_RELEASE) is None
    assert check({"kfree": 1}, read_symvers(Root(tmp_path), EL_RELEASE)).status == UNKNOWN


# --- other classes, byte orders, the extended format ------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize(
    ("cflags", "target"),
    [
        (("-m32",), None),
        ((), "elf64-powerpc"),
        (("-m32",), "elf32-powerpc"),
    ],
)
def test_other_word_sizes_and_byte_orders(tmp_path, imports, cflags, target) -> None:
    swap = target is not None  # objcopy flips the headers' byte order, not the data's
    try:
        data = _compile(tmp_path, imports.items(), cflags=cflags, target=target, swap_crcs=swap)
    except Exception as exc:  # noqa: BLE001 - whatever the toolchain lacks
        pytest.skip(f"toolchain cannot make this object: {exc}")
    assert data[4] == (1 if cflags else 2)
    assert data[5] == (2 if target else 1)

    assert module_crcs(data) == imports


@pytest.mark.real
@pytest.mark.parametrize(("cflags", "target"), [((), None), (("-m32",), "elf32-powerpc")])
def test_extended_modversions(tmp_path, cflags, target) -> None:
    """Linux 6.14+: names of any length in __version_ext_names, u32 CRCs beside them."""
    long_name = "a_rust_symbol_with_a_name_far_longer_than_fifty_five_bytes_" + "x" * 20
    versions = {"module_layout": 0x70ECA2CA, "_printk": 0xE8213E80, long_name: 0xDEADBEEF}
    try:
        data = _compile(
            tmp_path,
            versions.items(),
            cflags=cflags,
            target=target,
            extended_versions=True,
            swap_crcs=target is not None,
        )
    except Exception as exc:  # noqa: BLE001 - whatever the toolchain lacks
        pytest.skip(f"toolchain cannot make this object: {exc}")

    assert module_crcs(data) == versions  # the long name is only in the extended tables
    with pytest.raises(ValueError, match="too long"):
        kobuild.versions_source([(long_name, 1)])


@pytest.mark.real
def test_module_without_versions(tmp_path) -> None:
    assert module_crcs(_build(tmp_path, [])) == {}


@pytest.mark.real
def test_first_entry_wins_like_the_kernel(tmp_path) -> None:
    data = _compile(tmp_path, [("kfree", 1), ("kfree", 2)])
    assert module_crcs(data) == {"kfree": 1}


# --- malformed modules ------------------------------------------------------------------------


def _with_sections(tmp: Path, extra: str) -> bytes:
    fields = kobuild.modinfo_fields(name="zfs", version="1", vermagic="6.1.0-1 SMP ")
    source = kobuild.module_source("zfs", fields) + extra
    return kobuild.compile_c(source, tmp / "bad.o").read_bytes()


@pytest.mark.real
@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (  # not a whole number of 64-byte entries
            'static const char v[70] __attribute__((used, section("__versions"))) = "x";\n',
            "malformed __versions",
        ),
        (  # a name filling all 56 bytes, no NUL
            'static const char v[64] __attribute__((used, section("__versions"))) = '
            '"\\1\\0\\0\\0\\0\\0\\0\\0' + "n" * 56 + '";\n',
            "unterminated",
        ),
        (
            'static const unsigned int c[] __attribute__((used, section("__version_ext_crcs")))'
            " = {1, 2};\n",
            "without the other",
        ),
        (
            'static const unsigned int c[] __attribute__((used, section("__version_ext_crcs")))'
            " = {1, 2};\n"
            'static const char n[] __attribute__((used, section("__version_ext_names")))'
            ' = "only_one";\n',
            "more extended version CRCs than names",
        ),
        (
            'static const char c[6] __attribute__((used, section("__version_ext_crcs"))) = "";\n'
            'static const char n[] __attribute__((used, section("__version_ext_names")))'
            ' = "a";\n',
            "malformed __version_ext_crcs",
        ),
    ],
)
def test_malformed_tables_are_fact_errors(tmp_path, extra, match) -> None:
    with pytest.raises(FactError, match=match):
        module_crcs(_with_sections(tmp_path, extra))


@pytest.fixture(scope="module")
def versioned_ko(tmp_path_factory) -> bytes:
    return _compile(tmp_path_factory.mktemp("ko"), [("kfree", 1), ("_printk", 2)])


@pytest.mark.real
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_modules_fail_only_with_fact_error(versioned_ko: bytes, data) -> None:
    plain = versioned_ko
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(plain) - 1), st.integers(0, 255)), max_size=8)
    )
    mutated = bytearray(plain)
    for pos, value in edits:
        mutated[pos] = value
    cut = data.draw(st.integers(0, len(plain)))
    with contextlib.suppress(FactError):
        module_crcs(bytes(mutated[:cut]))


# --- symvers files ----------------------------------------------------------------------------


def test_symvers_formats_and_garbage() -> None:
    text = (
        "0x00000001\tnew_style\tvmlinux\tEXPORT_SYMBOL_GPL\tCXL\n"  # 5.10+
        "0x00000002\tns_third\tMY_NS\tvmlinux\tEXPORT_SYMBOL_GPL\n"  # 5.4-5.9
        "0x00000003\tfour_col\tvmlinux\tEXPORT_SYMBOL\n"  # 2.6.x-5.3
        "0x00000004\tthree_col\tdrivers/foo\n"  # older still
        "0x00000005\tfoo_GPL_ns\tvmlinux\tEXPORT_SYMBOL\tNS_GPL\n"  # a namespace, not a licence
        "\n"
        "this is not a symvers line\n"
        "0xZZZ\tbad_crc\tvmlinux\tEXPORT_SYMBOL\n"
        "0x00000006\t\tvmlinux\tEXPORT_SYMBOL\n"
        "0x00000007\tnew_style\tdup\tEXPORT_SYMBOL\n"  # the first entry counts
    )
    symvers = parse_symvers(text, "/Module.symvers")

    assert symvers.crcs == {
        "new_style": 1,
        "ns_third": 2,
        "four_col": 3,
        "three_col": 4,
        "foo_GPL_ns": 5,
    }
    assert symvers.gpl_only == {"new_style", "ns_third"}
    assert symvers.problems == 3


def test_symvers_without_entries_is_passed_over(tmp_path) -> None:
    tree = HostTree(tmp_path)
    tree.write(f"/boot/symvers-{EL_RELEASE}.gz", b"\x1f\x8b not gzip at all")
    tree.write(f"/boot/symvers-{EL_RELEASE}", "garbage\n")
    good = "0x00000001\tkfree\tvmlinux\tEXPORT_SYMBOL\t\n"
    tree.write(f"/lib/modules/{EL_RELEASE}/symvers.gz", gzip.compress(good.encode())[:-6])
    tree.write(f"/usr/src/linux-headers-{EL_RELEASE}/Module.symvers", good)

    found = read_symvers(Root(tmp_path), EL_RELEASE)
    assert found is not None
    assert found.path == f"/usr/src/linux-headers-{EL_RELEASE}/Module.symvers"

    tree.remove(f"/usr/src/linux-headers-{EL_RELEASE}/Module.symvers")
    with pytest.raises(FactError) as caught:
        read_symvers(Root(tmp_path), EL_RELEASE)
    message = str(caught.value)
    assert "cannot decompress" in message and "no symbol entries" in message
    assert "truncated" in message


def test_debian_build_link_is_followed_inside_the_root(tmp_path) -> None:
    release = "6.12.6-amd64"
    tree = HostTree(tmp_path)
    tree.write(f"/usr/src/linux-headers-{release}/Module.symvers", "0x1\tkfree\tvmlinux\n")
    tree.symlink(f"/lib/modules/{release}/build", f"/usr/src/linux-headers-{release}")

    found = read_symvers(Root(tmp_path), release)
    assert found is not None
    assert found.path == f"/lib/modules/{release}/build/Module.symvers"


def test_symvers_bomb_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(kabi, "MAX_SYMVERS_SIZE", 1024)
    HostTree(tmp_path).write(f"/boot/symvers-{EL_RELEASE}.gz", gzip.compress(bytes(4096)))
    with pytest.raises(FactError, match="exceeds"):
        read_symvers(Root(tmp_path), EL_RELEASE)


def test_bad_release_is_refused(tmp_path) -> None:
    with pytest.raises(FactError):
        read_symvers(Root(tmp_path), "../../etc")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_parses_or_is_a_fact_error(text: str) -> None:
    with contextlib.suppress(FactError):
        symvers = parse_symvers(text)
        assert symvers.crcs
