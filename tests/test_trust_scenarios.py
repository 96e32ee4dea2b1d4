"""Module trust, judged end to end: root trees with real keys, MOK lists, signed modules, kABI
symvers and initramfs images (all from :mod:`devtools.trust` and the system tools), gathered
with the root's own configuration, judged by the policy, and a few read back from
``kzguard check --json``.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from devtools import trust
from devtools.hostbuilder import HostTree
from devtools.kobuild import ToolchainError
from devtools.trust import MAGIC, KeyPair, make_cert
from kzguard.config import load_config
from kzguard.facts.host import gather_for
from kzguard.judge.policy import KernelVerdict, Report, judge
from kzguard.root import Root
from tests import scenarios as sc
from tests.tools import need, run

pytestmark = pytest.mark.real  # gcc, openssl, sbsiglist, sign-file, cpio, xz, zstd

RELEASE = sc.DEBIAN_RUNNING
MODULE = f"/lib/modules/{RELEASE}/updates/dkms/{{name}}.ko"
A_SUBJECT = "/CN=kzguard MOK A/O=kzguard lab"
B_SUBJECT = "/CN=DKMS module signing key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    """A: enrolled in the MOK list; B: the fresh key DKMS makes when its key files are gone."""
    need("openssl")
    dest = tmp_path_factory.mktemp("pki")
    return {
        "A": make_cert(dest, "a", subject=A_SUBJECT),
        "B": make_cert(dest, "b", subject=B_SUBJECT),
    }


def judged(path: Path) -> tuple[Report, dict[str, KernelVerdict]]:
    """Gather with the root's own /etc/kzguard/kzguard.yaml, judge every kernel."""
    root = Root(path)
    config = load_config(root)
    report = judge(gather_for(root, config), config.zfs_ranges, ranges_origin=config.source)
    return report, {k.release: k for k in report.kernels}


def codes(kernel: KernelVerdict) -> list[tuple[str, str | None]]:
    return sorted((r.code, r.module) for r in kernel.reasons)


def check_json(path: Path) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "kzguard", "--root", str(path), "check", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


# --- Secure Boot -----------------------------------------------------------------------------


def sb_host(
    path: Path,
    pki: dict[str, KeyPair],
    *,
    enabled: bool = True,
    shim_validation: bool = True,
    enrolled: tuple[str, ...] = ("A",),
) -> HostTree:
    """Debian 12 with zfs-dkms, EFI with Secure Boot on or off, ``enrolled`` in the MOK list."""
    need("sbsiglist", "sign-file")
    tree = sc.debian_dkms(path).secure_boot(enabled, shim_validation=shim_validation)
    if enrolled:
        tree.mok_list(*(pki[name].der.read_bytes() for name in enrolled))
    return tree


def sign(tree: HostTree, pki: dict[str, KeyPair], **signers: str) -> None:
    """Sign modules with the real sign-file: ``sign(tree, pki, zfs="A", spl="B")``."""
    for name, key in signers.items():
        tree.sign_module(MODULE.format(name=name), pki[key])


def zfs_sig_key(path: Path) -> str:
    """The signer's serial as the real ``modinfo -F sig_key`` prints it (the oracle)."""
    need("modinfo")
    module = path / MODULE.format(name="zfs").lstrip("/")
    return run("modinfo", "-F", "sig_key", module).stdout.strip()


def edit(tree: HostTree, inner: str, change) -> None:
    target = tree.host(inner)
    target.write_bytes(change(target.read_bytes()))


def test_signed_by_the_enrolled_key_is_safe(tmp_path: Path, pki: dict[str, KeyPair]) -> None:
    tree = sb_host(tmp_path, pki)
    sign(tree, pki, zfs="A", spl="A")

    report, kernels = judged(tmp_path)

    kernel = kernels[RELEASE]
    assert (kernel.verdict, codes(kernel)) == ("safe", [])
    assert report.host.secure_boot.enforcing and report.host.signatures_required
    assert [c.source for c in report.host.certificates or ()] == ["MokListRT"]
    for name in ("zfs", "spl"):
        module = dict(kernel.modules)[name]
        assert module and module.signed
        assert module.signature is not None and module.signature.status == "valid"
        assert module.signature.certificate == "O=kzguard lab,CN=kzguard MOK A"


@pytest.mark.parametrize(
    ("signers", "expected"),
    [
        ({"zfs": "B", "spl": "A"}, [("signer-not-enrolled", "zfs")]),
        ({"spl": "A"}, [("signature-missing", "zfs")]),
        ({}, [("signature-missing", "spl"), ("signature-missing", "zfs")]),
    ],
    ids=["other-key", "zfs-unsigned", "both-unsigned"],
)
def test_unenrolled_or_missing_signatures_are_unsafe(
    tmp_path: Path, pki: dict[str, KeyPair], signers: dict[str, str], expected: list
) -> None:
    tree = sb_host(tmp_path, pki)
    sign(tree, pki, **signers)

    report, kernels = judged(tmp_path)

    kernel = kernels[RELEASE]
    assert (kernel.verdict, codes(kernel)) == ("unsafe", expected)
    assert report.exit_code == 1
    zfs = next(r for r in kernel.reasons if r.module == "zfs")
    if "zfs" in signers:
        assert zfs.details["signature"] == "not-enrolled"
        assert zfs.details["signer"] == "CN=DKMS module signing key"
        assert "'CN=DKMS module signing key'" in zfs.message
        assert zfs.message.endswith("not among the 1 enrolled certificate(s)")
    else:
        assert zfs.details == {"signature": "missing", "signer": None, "sig_key": None}
        assert dict(kernel.modules)["zfs"].signed is False


def _changed_srcversion(data: bytes) -> bytes:
    at = data.index(b"srcversion=") + len(b"srcversion=")
    digit = b"1" if data[at : at + 1] != b"1" else b"2"
    return data[:at] + digit + data[at + 1 :]


def _sig_len(data: bytes, value: int) -> bytes:
    """The trailer's big-endian sig_len (the 4 bytes before the magic string) set to ``value``."""
    assert data.endswith(MAGIC)
    return data[: -len(MAGIC) - 4] + value.to_bytes(4, "big") + MAGIC


def _sig_len_minus(data: bytes, less: int) -> bytes:
    now = int.from_bytes(data[-len(MAGIC) - 4 : -len(MAGIC)], "big")
    return _sig_len(data, now - less)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_changed_srcversion, "changed after signing"),
        (lambda d: _sig_len(d, 0xFFFFFFFF), "claims 4294967295 bytes of signature, but only"),
        (lambda d: _sig_len_minus(d, 16), "malformed PKCS#7 signature"),
    ],
    ids=["bytes-changed", "trailer-too-long", "trailer-too-short"],
)
def test_damaged_signatures_are_invalid_with_a_message(
    tmp_path: Path, pki: dict[str, KeyPair], damage, message: str
) -> None:
    tree = sb_host(tmp_path, pki)
    sign(tree, pki, zfs="A", spl="A")
    edit(tree, MODULE.format(name="zfs"), damage)

    _, kernels = judged(tmp_path)

    kernel = kernels[RELEASE]
    assert (kernel.verdict, codes(kernel)) == ("unsafe", [("signature-invalid", "zfs")])
    reason = kernel.reasons[0]
    assert message in reason.message
    assert reason.details["signature"] in ("invalid", "malformed")
    assert dict(kernel.modules)["zfs"].signed is True


@pytest.mark.parametrize(("compression", "magic"), [("xz", b"\xfd7zXZ\x00"), ("zst", b"\x28\xb5")])
def test_compressed_modules_are_verified_after_decompression(
    tmp_path: Path, pki: dict[str, KeyPair], compression: str, magic: bytes
) -> None:
    need({"xz": "xz", "zst": "zstd"}[compression])
    tree = sb_host(tmp_path, pki)
    for name in ("zfs", "spl"):
        tree.remove(MODULE.format(name=name))
        tree.module(RELEASE, name, "2.2.7-1", compression=compression)
    packed = {name: MODULE.format(name=name) + f".{compression}" for name in ("zfs", "spl")}
    tree.sign_module(packed["zfs"], pki["A"])
    tree.sign_module(packed["spl"], pki["B"])
    assert tree.host(packed["zfs"]).read_bytes().startswith(magic)

    _, kernels = judged(tmp_path)

    kernel = kernels[RELEASE]
    modules = dict(kernel.modules)
    assert modules["zfs"].path == packed["zfs"]
    assert modules["zfs"].signature.status == "valid"
    assert modules["spl"].signature.status == "not-enrolled"
    assert codes(kernel) == [("signer-not-enrolled", "spl")]


def test_secure_boot_off_reports_but_does_not_require(
    tmp_path: Path, pki: dict[str, KeyPair]
) -> None:
    sb_host(tmp_path, pki, enabled=False)

    report, kernels = judged(tmp_path)

    kernel = kernels[RELEASE]
    assert (kernel.verdict, codes(kernel)) == ("safe", [])
    assert report.host.secure_boot.efi and report.host.secure_boot.secure_boot is False
    assert not report.host.signatures_required
    zfs = dict(kernel.modules)["zfs"]
    assert (zfs.signed, zfs.signature) == (False, None)


def test_require_signature_always_without_secure_boot(
    tmp_path: Path, pki: dict[str, KeyPair]
) -> None:
    tree = sb_host(tmp_path, pki, enabled=False)
    sign(tree, pki, spl="A")
    tree.config("require_signature: always\n")

    report, kernels = judged(tmp_path)

    assert report.host.signatures_required and not report.host.secure_boot.enforcing
    assert codes(kernels[RELEASE]) == [("signature-missing", "zfs")]
    assert dict(kernels[RELEASE].modules)["spl"].signature.status == "valid"


def test_shim_validation_disabled_is_not_enforced(tmp_path: Path, pki: dict[str, KeyPair]) -> None:
    """``mokutil --disable-validation``: Secure Boot on in the firmware, shim loads anything."""
    sb_host(tmp_path, pki, shim_validation=False)

    report, kernels = judged(tmp_path)

    boot = report.host.secure_boot
    assert (boot.secure_boot, boot.mok_validation, boot.enforcing) == (True, False, False)
    assert (kernels[RELEASE].verdict, codes(kernels[RELEASE])) == ("safe", [])
    assert dict(kernels[RELEASE].modules)["zfs"].signed is False


def test_a_certificate_trusted_only_through_the_config(
    tmp_path: Path, pki: dict[str, KeyPair]
) -> None:
    """A key the kernel carries built in: not in the MOK list, named in trusted_certificates."""
    tree = sb_host(tmp_path, pki, enrolled=("B",))
    sign(tree, pki, zfs="A", spl="A")
    _, kernels = judged(tmp_path)
    assert codes(kernels[RELEASE]) == [
        ("signer-not-enrolled", "spl"),
        ("signer-not-enrolled", "zfs"),
    ]

    tree.write("/etc/pki/kzguard/distro.pem", pki["A"].pem.read_bytes())
    tree.config("trusted_certificates:\n  - /etc/pki/kzguard/distro.pem\n")
    report, kernels = judged(tmp_path)

    assert (kernels[RELEASE].verdict, codes(kernels[RELEASE])) == ("safe", [])
    sources = [c.source for c in report.host.certificates or ()]
    assert sources == ["MokListRT", "/etc/pki/kzguard/distro.pem"]
    zfs = dict(kernels[RELEASE].modules)["zfs"]
    assert zfs.signature.status == "valid"
    assert zfs.signature.certificate == "O=kzguard lab,CN=kzguard MOK A"


# --- through the command ---------------------------------------------------------------------


def test_cli_json_under_secure_boot(tmp_path: Path, pki: dict[str, KeyPair]) -> None:
    tree = sb_host(tmp_path, pki)
    sign(tree, pki, zfs="B", spl="A")

    code, data = check_json(tmp_path)

    assert code == 1
    (kernel,) = data["kernels"]
    assert (kernel["release"], kernel["verdict"]) == (RELEASE, "unsafe")
    assert kernel["reasons"] == ["signer-not-enrolled"]
    (detail,) = kernel["details"]
    assert (detail["code"], detail["severity"], detail["module"]) == (
        "signer-not-enrolled",
        "unsafe",
        "zfs",
    )
    assert detail["signature"] == "not-enrolled"
    assert detail["signer"] == "CN=DKMS module signing key"
    assert detail["sig_key"] == zfs_sig_key(tmp_path)
    zfs = kernel["modules"]["zfs"]
    assert zfs["signed"] is True
    assert zfs["signature"]["status"] == "not-enrolled"
    assert zfs["signature"]["signer"]["digest_algorithm"] == "sha256"
    assert kernel["modules"]["spl"]["signature"]["status"] == "valid"
    host = data["host"]["secure_boot"]
    assert host["efi"] and host["secure_boot"] and host["enforcing"]
    assert host["signatures_required"] and host["mok_validation"] is None
    enrolled = data["host"]["enrolled_certificates"]
    assert [(c["subject"], c["source"]) for c in enrolled] == [
        ("O=kzguard lab,CN=kzguard MOK A", "MokListRT")
    ]


def test_cli_json_without_secure_boot_still_reports_signatures(
    tmp_path: Path, pki: dict[str, KeyPair]
) -> None:
    sb_host(tmp_path, pki, enabled=False)

    code, data = check_json(tmp_path)

    assert code == 0
    (kernel,) = data["kernels"]
    assert (kernel["verdict"], kernel["reasons"], kernel["details"]) == ("safe", [], [])
    for name in ("zfs", "spl"):
        assert kernel["modules"][name]["signed"] is False
        assert kernel["modules"][name]["signature"] is None
    host = data["host"]["secure_boot"]
    assert (host["efi"], host["secure_boot"], host["enforcing"]) == (True, False, False)
    assert host["signatures_required"] is False
    assert data["host"]["enrolled_certificates"] is None


# --- kABI (EL9 weak-updates) -----------------------------------------------------------------


def _kabi_reasons(kernel: KernelVerdict) -> dict[str, dict]:
    return {r.module: r.details for r in kernel.reasons if r.code == "kabi-incompatible"}


def test_el9_changed_crc_in_the_new_kernel(tmp_path: Path) -> None:
    tree = sc.el9_kmod(tmp_path)
    tree.symvers(sc.EL_NEWER, {**sc.EL_KABI, "kfree": sc.EL_KABI["kfree"] ^ 0x10})

    _, kernels = judged(tmp_path)

    newer = kernels[sc.EL_NEWER]
    assert (newer.verdict, codes(newer)) == (
        "unsafe",
        [("kabi-incompatible", "spl"), ("kabi-incompatible", "zfs")],
    )
    details = _kabi_reasons(newer)["zfs"]
    assert (details["changed"], details["missing"]) == (["kfree"], [])
    assert details["source"] == f"/boot/symvers-{sc.EL_NEWER}.gz"
    assert "kfree" in newer.reasons[0].message
    assert kernels[sc.EL_BUILT].verdict == "safe"  # the kernel the kmod was built for


def test_el9_symbol_dropped_by_the_new_kernel(tmp_path: Path) -> None:
    tree = sc.el9_kmod(tmp_path)
    tree.symvers(sc.EL_NEWER, {k: v for k, v in sc.EL_KABI.items() if k != "_printk"})

    _, kernels = judged(tmp_path)

    details = _kabi_reasons(kernels[sc.EL_NEWER])
    assert set(details) == {"zfs", "spl"}
    assert (details["zfs"]["missing"], details["zfs"]["changed"]) == (["_printk"], [])


def test_el9_without_symvers_is_unknown(tmp_path: Path) -> None:
    tree = sc.el9_kmod(tmp_path)
    tree.remove(f"/boot/symvers-{sc.EL_NEWER}.gz")

    report, kernels = judged(tmp_path)

    newer = kernels[sc.EL_NEWER]
    assert (newer.verdict, codes(newer)) == (
        "unknown",
        [("kabi-unknown", "spl"), ("kabi-unknown", "zfs")],
    )
    assert newer.reasons[0].details == {"source": None}
    assert "no symvers" in newer.reasons[0].message
    assert kernels[sc.EL_BUILT].verdict == "safe"
    assert report.exit_code == 1


IMPORTS = ("module_layout", "_printk", "__kmalloc", "kfree", "kmalloc_caches", "jiffies")


@pytest.fixture(scope="module")
def real_symvers() -> str:
    try:
        return trust.real_module_symvers().read_text()
    except ToolchainError as exc:
        pytest.skip(f"{exc} (scripts/setup-dev installs it)")


def test_el9_kabi_from_a_real_module_symvers(tmp_path: Path, real_symvers: str) -> None:
    """The kmod records the real CRCs of a real kernel; the new kernel changes one of them."""
    lines = real_symvers.splitlines(keepends=True)
    exported = {f[1]: int(f[0], 16) for f in (line.split("\t") for line in lines) if len(f) > 2}
    imports = {name: exported[name] for name in IMPORTS if name in exported}
    assert {"_printk", "kfree", "__kmalloc"} <= set(imports)
    tree = sc.el9_kmod(tmp_path, kabi=imports)
    for release in (sc.EL_BUILT, sc.EL_NEWER):
        tree.write(f"/boot/symvers-{release}.gz", gzip.compress(real_symvers.encode(), mtime=0))

    _, kernels = judged(tmp_path)
    assert (kernels[sc.EL_NEWER].verdict, codes(kernels[sc.EL_NEWER])) == ("safe", [])
    kabi = dict(kernels[sc.EL_NEWER].modules)["zfs"].kabi
    assert (kabi.status, kabi.checked) == ("compatible", len(imports))

    old = f"0x{imports['kfree']:08x}\tkfree\t"
    assert sum(line.startswith(old) for line in lines) == 1
    changed = real_symvers.replace(old, f"0x{imports['kfree'] ^ 0x80000000:08x}\tkfree\t")
    tree.write(f"/boot/symvers-{sc.EL_NEWER}.gz", gzip.compress(changed.encode(), mtime=0))
    _, kernels = judged(tmp_path)

    newer = kernels[sc.EL_NEWER]
    assert newer.verdict == "unsafe"
    details = _kabi_reasons(newer)
    assert set(details) == {"zfs", "spl"}
    assert (details["zfs"]["changed"], details["zfs"]["missing"]) == (["kfree"], [])
    assert kernels[sc.EL_BUILT].verdict == "safe"


def test_cli_json_kabi_details(tmp_path: Path) -> None:
    tree = sc.el9_kmod(tmp_path)
    tree.symvers(sc.EL_NEWER, {**sc.EL_KABI, "kfree": 0x1})

    code, data = check_json(tmp_path)

    assert code == 1
    newer = next(k for k in data["kernels"] if k["release"] == sc.EL_NEWER)
    assert newer["reasons"] == ["kabi-incompatible", "kabi-incompatible"]
    assert {d["module"]: d["changed"] for d in newer["details"]} == {
        "zfs": ["kfree"],
        "spl": ["kfree"],
    }
    assert newer["modules"]["zfs"]["kabi"]["status"] == "incompatible"


# --- root on ZFS: the initramfs --------------------------------------------------------------

DATASET = "rpool/ROOT/debian"
ZFS_IN_IMAGE = f"usr/lib/modules/{RELEASE}/extra/zfs.ko.xz"


def zfs_root_host(path: Path) -> HostTree:
    need("cpio", "zstd", "xz")
    return sc.debian_dkms(path).zfs_root(DATASET)


def _zfs_ko_xz(tree: HostTree) -> bytes:
    """The installed zfs.ko, xz-compressed as the initramfs generator copies it."""
    return trust.compress(tree.host(MODULE.format(name="zfs")).read_bytes(), "xz")


@pytest.mark.parametrize(
    ("layout", "image"),
    [
        ("dracut", f"/boot/initramfs-{RELEASE}.img"),
        ("initramfs-tools", f"/boot/initrd.img-{RELEASE}"),
    ],
)
def test_initramfs_with_zfs_is_safe(tmp_path: Path, layout: str, image: str) -> None:
    tree = zfs_root_host(tmp_path)
    tree.initramfs(RELEASE, {ZFS_IN_IMAGE: _zfs_ko_xz(tree)}, "zstd", layout)
    data = tree.host(image).read_bytes()
    if layout == "initramfs-tools":  # an uncompressed early-microcode archive comes first
        assert data.startswith(b"070701") and b"GenuineIntel.bin" in data[:4096]
    else:
        assert data.startswith(b"\x28\xb5\x2f\xfd")

    report, kernels = judged(tmp_path)

    assert report.host.root_dataset == DATASET
    kernel = kernels[RELEASE]
    assert (kernel.verdict, codes(kernel)) == ("safe", [])
    facts = report.host.installed_kernel(RELEASE).initramfs
    assert (facts.path, facts.has_zfs, facts.error) == (image, True, None)


def test_initramfs_without_zfs(tmp_path: Path) -> None:
    tree = zfs_root_host(tmp_path)
    tree.initramfs(RELEASE, {f"usr/lib/modules/{RELEASE}/kernel/fs/ext4/ext4.ko.xz": b"x"})

    _, kernels = judged(tmp_path)

    kernel = kernels[RELEASE]
    assert (kernel.verdict, codes(kernel)) == ("unsafe", [("initramfs-missing-module", "zfs")])
    assert kernel.reasons[0].details == {"image": f"/boot/initramfs-{RELEASE}.img"}
    assert DATASET in kernel.reasons[0].message


def test_no_initramfs_at_all(tmp_path: Path) -> None:
    zfs_root_host(tmp_path)

    _, kernels = judged(tmp_path)

    kernel = kernels[RELEASE]
    assert (kernel.verdict, [r.code for r in kernel.reasons]) == (
        "unsafe",
        ["initramfs-missing-module"],
    )
    assert "has no initramfs" in kernel.reasons[0].message


def test_garbage_initramfs_is_unknown(tmp_path: Path) -> None:
    tree = zfs_root_host(tmp_path)
    tree.write(f"/boot/initrd.img-{RELEASE}", b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 8)

    _, kernels = judged(tmp_path)

    kernel = kernels[RELEASE]
    assert (kernel.verdict, [r.code for r in kernel.reasons]) == (
        "unknown",
        ["initramfs-unreadable"],
    )
    assert kernel.reasons[0].message.startswith(f"/boot/initrd.img-{RELEASE}: ")


def test_root_not_on_zfs_needs_no_initramfs(tmp_path: Path) -> None:
    tree = sc.debian_dkms(tmp_path)
    tree.write("/proc/self/mounts", "/dev/nvme0n1p2 / ext4 rw,relatime 0 0\n")

    report, kernels = judged(tmp_path)

    assert report.host.root_dataset is None
    assert report.host.installed_kernel(RELEASE).initramfs is None  # never looked for
    assert (kernels[RELEASE].verdict, codes(kernels[RELEASE])) == ("safe", [])
    tree.write(f"/boot/initrd.img-{RELEASE}", b"garbage that is never opened")
    _, kernels = judged(tmp_path)
    assert codes(kernels[RELEASE]) == []


# --- modules that ship with the kernel, signed by its build key ---------------------------


def test_prebuilt_module_signed_by_the_kernels_own_key_is_trusted(
    tmp_path: Path, pki: dict[str, KeyPair]
) -> None:
    """Ubuntu's zfs.ko is signed like the kernel's in-tree modules, by a key built into the
    kernel and not in the MOK list: the same signer as an in-tree module makes it trusted."""
    need("sbsiglist", "sign-file")
    tree = sc.ubuntu_prebuilt(tmp_path).secure_boot(True)
    tree.mok_list(pki["A"].der.read_bytes())
    release = sc.UBUNTU_RUNNING
    ext4 = tree.module(release, "ext4", "1", location="kernel/fs/ext4")
    tree.sign_module(f"/lib/modules/{release}/kernel/fs/ext4/{ext4.name}", pki["B"])
    for name in ("zfs", "spl"):
        tree.sign_module(f"/lib/modules/{release}/kernel/zfs/{name}.ko.zst", pki["B"])

    _, kernels = judged(tmp_path)

    kernel = kernels[release]
    assert (kernel.verdict, codes(kernel)) == ("safe", [])
    signature = dict(kernel.modules)["zfs"].signature
    assert signature is not None and signature.status == "kernel-key"
    assert "built into the kernel" in signature.message

    other = make_cert(tmp_path / "pki", "c", subject="/CN=someone else")
    tree.sign_module(f"/lib/modules/{release}/kernel/zfs/zfs.ko.zst", other)
    _, kernels = judged(tmp_path)
    assert codes(kernels[release]) == [("signer-not-enrolled", "zfs")]
