"""Initramfs images made with the system tools (cpio, gzip, zstd, xz, lz4...), and their places.

The images are built by :mod:`devtools.trust` (``cpio -o -H newc`` and the compressors with the
options dracut, mkinitramfs and mkinitcpio use).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools import kobuild, trust
from devtools.hostbuilder import HostTree
from devtools.trust import IMAGE_COMPRESSORS as COMPRESSORS
from kzguard.base.errors import FactError
from kzguard.facts import initramfs
from kzguard.facts.initramfs import contains_module, image_for, list_members
from kzguard.facts.mounts import root_dataset
from kzguard.root import Root, Runner
from tests.tools import need

RUNNER = Runner()  # lz4 (and zstd without its module) are commands

RELEASE = "6.12.6-amd64"
MACHINE_ID = "4f6b0ba1d3c04e0c9d6a1e1b2c3d4e5f"
ZFS_PATH = f"usr/lib/modules/{RELEASE}/extra/zfs.ko.xz"


def _cpio(stage: Path, fmt: str = "newc") -> bytes:
    need("cpio")
    return trust.cpio_archive(stage, fmt)


def _compress(data: bytes, kind: str) -> bytes:
    need(COMPRESSORS[kind][0])
    return trust.compress(data, kind)


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Path]:
    """Staging trees: a main image with a real zfs.ko.xz, one without, early microcode."""
    need("gcc", "xz")
    top = tmp_path_factory.mktemp("stages")
    with_zfs = HostTree(top / "with")
    for tree in (with_zfs, HostTree(top / "without")):
        tree.write("/init", "#!/bin/sh\nexec /sbin/init\n")
        tree.write("/usr/bin/busybox", b"\x7fELF" + bytes(3000))
        tree.symlink("/bin", "usr/bin")
        tree.symlink("/lib", "usr/lib")
        tree.write(f"/usr/lib/modules/{RELEASE}/modules.dep", "extra/zfs.ko.xz: \n")
        tree.write(f"/usr/lib/modules/{RELEASE}/kernel/fs/ext4/ext4.ko.xz", b"x" * 999)
        tree.write("/etc/hostid", b"\x01\x02\x03\x04")
    kobuild.build_module(
        with_zfs.host(f"/usr/lib/modules/{RELEASE}/extra"),
        name="zfs",
        version="2.2.7-1",
        vermagic=kobuild.vermagic_for(RELEASE),
        compression="xz",
    )
    early = HostTree(top / "early")
    early.write("/kernel/x86/microcode/GenuineIntel.bin", bytes(range(256)) * 40)
    return {"with": with_zfs.path, "without": top / "without", "early": early.path}


@pytest.fixture(scope="module")
def plain(stages) -> bytes:
    return _cpio(stages["with"])


@pytest.fixture(scope="module")
def early(stages) -> bytes:
    return _cpio(stages["early"])


# --- images made with the real tools -----------------------------------------------------------


@pytest.mark.real
def test_plain_newc_archive(plain) -> None:
    members = list_members(plain, runner=RUNNER)

    assert ZFS_PATH in members
    assert {"init", "bin", "lib", "usr/bin/busybox", "etc/hostid"} <= set(members)
    assert "." not in members and "TRAILER!!!" not in members
    assert contains_module(members, RELEASE)


@pytest.mark.real
@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_images(plain, kind) -> None:
    members = list_members(_compress(plain, kind), runner=RUNNER)

    assert members == list_members(plain, runner=RUNNER)
    assert contains_module(members, RELEASE)


@pytest.mark.real
@pytest.mark.parametrize("kind", ["gzip", "zstd", "xz", "lz4"])
def test_early_microcode_archive_first(plain, early, kind) -> None:
    """dracut / mkinitramfs: an uncompressed early cpio, then the compressed main archive."""
    image = early + _compress(plain, kind)
    members = list_members(image, runner=RUNNER)

    assert members[:4] == [
        "kernel",
        "kernel/x86",
        "kernel/x86/microcode",
        "kernel/x86/microcode/GenuineIntel.bin",
    ]
    assert contains_module(members, RELEASE)


@pytest.mark.real
def test_padding_and_several_compressed_parts(plain, early, stages) -> None:
    """Zero padding between parts, and two compressed archives one after the other."""
    without = _cpio(stages["without"])
    image = (
        early
        + bytes(512)
        + _compress(without, "xz")
        + bytes(4)  # xz stream padding
        + _compress(plain, "gzip")
        + bytes(100)
        + _compress(without, "zstd")
        + bytes(3)
    )
    members = list_members(image, runner=RUNNER)

    assert members.count("init") == 3
    assert members.count(ZFS_PATH) == 1


@pytest.mark.real
def test_two_archives_inside_one_compressed_stream(plain, early) -> None:
    members = list_members(_compress(early + plain, "zstd"), runner=RUNNER)

    assert "kernel/x86/microcode/GenuineIntel.bin" in members
    assert ZFS_PATH in members


@pytest.mark.real
@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_image_without_zfs(stages, early, kind) -> None:
    members = list_members(early + _compress(_cpio(stages["without"]), kind))

    assert "init" in members
    assert not contains_module(members, RELEASE)


@pytest.mark.real
def test_zstd_command_when_the_package_is_missing(plain, early, monkeypatch) -> None:
    need("zstd")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard -> ImportError
    members = list_members(early + _compress(plain, "zstd"), runner=RUNNER)

    assert contains_module(members, RELEASE)


@pytest.mark.real
def test_lz4_needs_the_command(plain, monkeypatch) -> None:
    image = _compress(plain, "lz4")
    with pytest.raises(FactError, match="command not found"):
        list_members(image, runner=Runner(env={"PATH": "/nonexistent"}))


# --- broken images ----------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("kind", [None, "gzip", "zstd", "xz", "lz4", "bzip2"])
def test_truncated_images(plain, early, kind) -> None:
    body = plain if kind is None else _compress(plain, kind)
    image = early + body
    for cut in sorted({len(early) + 1, len(early) + 200, len(image) // 2, len(image) - 700}):
        with pytest.raises(FactError):
            list_members(image[:cut], runner=RUNNER)


@pytest.mark.real
def test_every_truncation_of_a_plain_archive(plain) -> None:
    end = plain.index(b"TRAILER!!!") + len(b"TRAILER!!!") + 1  # what follows is padding
    for cut in range(1, end, 7):
        with pytest.raises(FactError):
            list_members(plain[:cut], runner=RUNNER)


@pytest.mark.real
def test_garbage(plain) -> None:
    cases = {
        b"": "no cpio archive",
        bytes(4096): "no cpio archive",
        b"hello world": "not a cpio archive or a known compression",
        b"070701" + b"zz" * 52: "malformed cpio header",
        b"0" * 200: "malformed cpio header",
        plain + b"junk": "not a cpio archive",
        b"\x1f\x8b" + bytes(100): "cannot decompress gzip",
        b"\xfd7zXZ\x00" + bytes(100): "cannot decompress xz",
        b"\x28\xb5\x2f\xfd" + bytes(100): "zstd data",
        b"\x89LZO\x00": "lzo",
    }
    for data, match in cases.items():
        with pytest.raises(FactError, match=match):
            list_members(data, runner=RUNNER)


@pytest.mark.real
def test_junk_inside_a_compressed_stream(plain) -> None:
    with pytest.raises(FactError, match="junk after a cpio archive"):
        list_members(_compress(plain + b"junk", "gzip"), runner=RUNNER)


@pytest.mark.real
def test_odc_archive_is_refused_like_the_kernel(stages) -> None:
    with pytest.raises(FactError, match="odc"):
        list_members(_cpio(stages["early"], fmt="odc"), runner=RUNNER)


@pytest.mark.real
def test_lying_sizes_never_read_past_the_end(plain) -> None:
    head = bytearray(plain)
    head[54:62] = b"FFFFFFFF"  # the first member's filesize
    with pytest.raises(FactError, match="truncated"):
        list_members(bytes(head), runner=RUNNER)
    head = bytearray(plain)
    head[94:102] = b"7FFFFFFF"  # its name size
    with pytest.raises(FactError, match="name size"):
        list_members(bytes(head), runner=RUNNER)


@pytest.mark.real
@pytest.mark.parametrize("kind", ["gzip", "zstd", "xz", "lz4", "bzip2", "lzma"])
def test_decompression_bomb_is_refused(monkeypatch, kind) -> None:
    """The cap (1 GiB) lowered to 1 MiB, and 8 MiB of zeros in a cpio member."""
    image = _compress(_newc([("zeros", bytes(8 << 20))]), kind)
    monkeypatch.setattr(initramfs, "MAX_IMAGE_SIZE", 1 << 20)
    with pytest.raises(FactError, match="exceeds 1 MiB"):
        list_members(image, runner=RUNNER)


def _newc(files: list[tuple[str, bytes]]) -> bytes:
    """A newc archive written by cpio from a temporary staging directory."""
    need("cpio")
    return trust.newc(dict(files))


@pytest.mark.real
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_images_fail_only_with_fact_error(plain, early, data) -> None:
    kind = data.draw(st.sampled_from([None, "gzip", "xz"]))
    image = early + (plain if kind is None else _compressed_cache(plain, kind))
    edits = data.draw(
        st.lists(st.tuples(st.integers(0, len(image) - 1), st.integers(0, 255)), max_size=6)
    )
    mutated = bytearray(image)
    for pos, value in edits:
        mutated[pos] = value
    cut = data.draw(st.integers(0, len(image)))
    with contextlib.suppress(FactError):
        assert isinstance(list_members(bytes(mutated[:cut]), runner=RUNNER), list)


_CACHE: dict[tuple[int, str], bytes] = {}


def _compressed_cache(data: bytes, kind: str) -> bytes:
    key = (hash(data), kind)
    if key not in _CACHE:
        _CACHE[key] = _compress(data, kind)
    return _CACHE[key]


MAGICS = [b"", b"070701", b"070702", b"\x1f\x8b", b"BZh", b"\x5d\x00", b"\xfd7zXZ\x00"]
MAGICS += [b"\x28\xb5\x2f\xfd", b"\x02\x21\x4c\x18", b"\0\0\0\0"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(MAGICS), st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_fact_error(magic: bytes, tail: bytes) -> None:
    with contextlib.suppress(FactError):
        assert isinstance(list_members(magic + tail, runner=RUNNER), list)


# --- contains_module --------------------------------------------------------------------------


def test_contains_module_paths() -> None:
    assert contains_module([f"lib/modules/{RELEASE}/updates/dkms/zfs.ko"], RELEASE)
    assert contains_module([f"./usr/lib/modules/{RELEASE}/extra/zfs/zfs.ko.zst"], RELEASE)
    assert contains_module([f"/lib/modules/{RELEASE}/extra/zfs.ko.gz"], RELEASE)
    assert not contains_module(["lib/modules/6.1.0-1-amd64/extra/zfs.ko"], RELEASE)
    assert not contains_module([f"lib/modules/{RELEASE}/extra/zfs.ko.bak"], RELEASE)
    assert not contains_module([f"lib/modules/{RELEASE}/extra/zfsx.ko"], RELEASE)
    assert not contains_module([f"lib/modules/{RELEASE}/extra/zfs.ko"], RELEASE, name="spl")
    assert not contains_module([f"usr/share/lib/modules/{RELEASE}/zfs.ko"], RELEASE)
    assert contains_module([f"lib/modules/{RELEASE}/kernel/nvidia-drm.ko"], RELEASE, "nvidia_drm")


# --- where the image is -----------------------------------------------------------------------


LAYOUTS = {
    "dracut": f"/boot/initramfs-{RELEASE}.img",
    "initramfs-tools": f"/boot/initrd.img-{RELEASE}",
    "initrd": f"/boot/initrd-{RELEASE}",
    "type1-boot": f"/boot/{MACHINE_ID}/{RELEASE}/initrd",
    "type1-efi": f"/efi/{MACHINE_ID}/{RELEASE}/initrd",
    "type1-boot-efi": f"/boot/efi/{MACHINE_ID}/{RELEASE}/initrd",
    "kernel-install": f"/usr/lib/modules/{RELEASE}/initrd",
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_image_for_each_layout(tmp_path, layout) -> None:
    tree = HostTree(tmp_path)
    tree.kernel(RELEASE, modules_root="/usr/lib/modules")
    tree.write("/etc/machine-id", MACHINE_ID + "\n")
    tree.write(LAYOUTS[layout], b"070701")

    assert image_for(Root(tmp_path), RELEASE) == LAYOUTS[layout]


def test_image_for_arch_pkgbase(tmp_path) -> None:
    tree = HostTree(tmp_path)
    tree.kernel("6.6.63-1-lts", modules_root="/usr/lib/modules")
    tree.symlink("/lib", "usr/lib")
    tree.write("/usr/lib/modules/6.6.63-1-lts/pkgbase", "linux-lts\n")
    tree.write("/boot/initramfs-linux-lts.img", b"x")
    tree.write("/boot/initramfs-linux.img", b"x")  # another kernel's

    assert image_for(Root(tmp_path), "6.6.63-1-lts") == "/boot/initramfs-linux-lts.img"


def test_image_for_entry_token_before_machine_id(tmp_path) -> None:
    tree = HostTree(tmp_path)
    tree.write("/etc/machine-id", MACHINE_ID + "\n")
    tree.write("/etc/kernel/entry-token", "fedora\n")
    tree.write(f"/efi/{MACHINE_ID}/{RELEASE}/initrd", b"x")
    tree.write(f"/efi/fedora/{RELEASE}/initrd", b"x")

    assert image_for(Root(tmp_path), RELEASE) == f"/efi/fedora/{RELEASE}/initrd"


def test_image_for_prefers_boot_and_ignores_directories(tmp_path) -> None:
    tree = HostTree(tmp_path)
    tree.write(f"/usr/lib/modules/{RELEASE}/initrd", b"x")
    tree.host(f"/boot/initramfs-{RELEASE}.img").mkdir(parents=True)  # not a file
    tree.write(f"/boot/initrd.img-{RELEASE}", b"x")

    assert image_for(Root(tmp_path), RELEASE) == f"/boot/initrd.img-{RELEASE}"


def test_image_for_none_and_bad_input(tmp_path) -> None:
    tree = HostTree(tmp_path)
    tree.write("/etc/machine-id", "../../etc\n")  # never followed
    tree.write(f"/usr/lib/modules/{RELEASE}/pkgbase", "../x\n")
    tree.write("/etc/x/initrd", b"x")

    assert image_for(Root(tmp_path), RELEASE) is None
    with pytest.raises(FactError):
        image_for(Root(tmp_path), "../etc")


def test_an_image_behind_a_link_loop_is_an_error_not_a_crash(tmp_path) -> None:
    # found by reading after tests/test_fuzz_files.py: Root.is_file raised FactError (exit 3)
    from kzguard.facts.kernels import kernel_build_signer, read_initramfs

    tree = HostTree(tmp_path)
    tree.symlink("/boot", "boot")
    tree.symlink(f"/lib/modules/{RELEASE}/kernel", "kernel")
    facts = read_initramfs(Root(tmp_path), RELEASE)
    assert facts.path is None and facts.has_zfs is None
    assert "too many levels of symbolic links" in (facts.error or "")
    assert kernel_build_signer(Root(tmp_path), f"/lib/modules/{RELEASE}") is None


@pytest.mark.real
def test_image_read_through_a_root(tmp_path, plain, early) -> None:
    tree = HostTree(tmp_path)
    tree.write(f"/boot/initrd.img-{RELEASE}", early + _compress(plain, "zstd"))
    root = Root(tmp_path)

    members = list_members(root.read_bytes(image_for(root, RELEASE) or ""))
    assert contains_module(members, RELEASE)


# --- the root dataset (moved from actions.snapshot) -------------------------------------------


def test_root_dataset(tmp_path) -> None:
    tree = HostTree(tmp_path)
    assert root_dataset(Root(tmp_path)) is None
    tree.write("/proc/mounts", "rpool/ROOT/arch / zfs rw 0 0\n")
    assert root_dataset(Root(tmp_path)) == "rpool/ROOT/arch"
    tree.write("/proc/self/mounts", "/dev/sda2 / ext4 rw 0 0\n")  # self/mounts wins
    assert root_dataset(Root(tmp_path)) is None
