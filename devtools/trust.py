"""Module-trust artefacts made with the tools distros use, for tests, examples and benchmarks.

Keys and self-signed certificates come from ``openssl req -x509``; EFI signature lists (what
shim's ``MokListRT`` holds) from sbsigntool's ``sbsiglist``; module signatures from the
kernel's own ``scripts/sign-file`` or, by hand, from ``openssl cms`` plus the 12-byte
``struct module_signature`` and the magic string; initramfs images from ``cpio -o -H newc``
and the compressors dracut and mkinitramfs run. EFI variables are laid out as efivarfs shows
them: 4 attribute bytes, then the value.

Nothing here skips or fails a test: a missing tool is a :class:`~devtools.kobuild.ToolchainError`
(tests check with ``tests.tools.need`` first, so that CI fails where a real tool is missing),
a tool that fails is a :class:`~kzguard.base.errors.CommandError` with its output.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Union

from devtools.kobuild import ToolchainError
from kzguard.base.record import Record
from kzguard.root import Runner

# --- EFI variables (the UEFI spec's and shim's GUIDs, spelled out here, not imported) ---------

EFIVARS = "/sys/firmware/efi/efivars"
MOKVARS = "/sys/firmware/efi/mok-variables"
EFI_GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SHIM_LOCK_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"
ATTRS = b"\x07\x00\x00\x00"  # NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS
RT_ATTRS = b"\x06\x00\x00\x00"  # what shim gives its *RT mirrors
OWNER = SHIM_LOCK_GUID  # the owner GUID mokutil writes into the entries it enrolls

# --- module signatures -----------------------------------------------------------------------

MAGIC = b"~Module signature appended~\n"
PKEY_ID_PKCS7 = 2
SIGN_FILE_GLOBS = (
    "/usr/lib/linux-kbuild-*/scripts/sign-file",  # Debian: linux-kbuild-<series>
    "/usr/src/linux-headers-*/scripts/sign-file",  # Ubuntu
    "/usr/src/kernels/*/scripts/sign-file",  # EL / Fedora kernel-devel
)

# --- initramfs images: compression -> the command line dracut / mkinitramfs use, on stdin ---

IMAGE_COMPRESSORS = {
    "gzip": ("gzip", "-n", "-9", "-c"),
    "zstd": ("zstd", "-q", "-15", "-c"),
    "xz": ("xz", "--check=crc32", "--lzma2=dict=1MiB", "-c"),
    "lz4": ("lz4", "-q", "-l", "-9", "-c"),
    "bzip2": ("bzip2", "-9", "-c"),
    "lzma": ("lzma", "-9", "-c"),
}
MODULE_DECOMPRESSORS = {
    ".xz": ("xz", "-d", "-q", "-f"),
    ".zst": ("zstd", "-d", "-q", "--rm", "-f"),
    ".gz": ("gzip", "-d", "-f"),
}
_MODULE_COMPRESSION = {".xz": "xz", ".zst": "zst", ".gz": "gz"}  # kobuild.compress names


def tool(name: str) -> str:
    """The path of a real tool (``sign-file`` is looked for where kernel headers put it)."""
    if name == "sign-file":
        found = sorted(p for pattern in SIGN_FILE_GLOBS for p in glob.glob(pattern))
        if not found:
            raise ToolchainError(
                "the kernel's sign-file is not installed (linux-headers-amd64 ships it)"
            )
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise ToolchainError(f"{name} is not installed")
    return path


def _run(name: str, *args: object, input: Optional[bytes] = None) -> bytes:
    """Run a real tool; its stdout as bytes. A failure is a CommandError with its output."""
    argv = [tool(name), *(os.fspath(a) if isinstance(a, Path) else str(a) for a in args)]
    if input is None:
        return Runner().run(argv).stdout.encode()
    return Runner().run_bytes(argv, input=input).stdout


# --- keys and certificates -------------------------------------------------------------------


class KeyPair(Record):
    """A private key and its self-signed certificate (PEM and DER), made by openssl."""

    key: Path
    pem: Path
    der: Path


def make_cert(
    dest: Path, name: str, *, subject: str = "", kind: str = "rsa", serial: int = 0
) -> KeyPair:
    """``openssl req -x509`` a key and certificate into ``dest`` (RSA 2048 or EC P-256)."""
    dest.mkdir(parents=True, exist_ok=True)
    key, pem, der = dest / f"{name}.key", dest / f"{name}.pem", dest / f"{name}.der"
    newkey = ["rsa:2048"] if kind == "rsa" else ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    _run(
        "openssl", "req", "-x509", "-newkey", *newkey, "-nodes", "-keyout", key, "-out", pem,
        "-days", "3650", "-subj", subject or f"/CN=kzguard {name} signing key/O=kzguard lab",
        *(["-set_serial", str(serial)] if serial else []),
    )  # fmt: skip
    _run("openssl", "x509", "-in", pem, "-outform", "DER", "-out", der)
    return KeyPair(key, pem, der)


# --- EFI signature lists and variables -------------------------------------------------------


def siglist(dest: Path, kind: str, data_file: Path, owner: str = OWNER) -> bytes:
    """One EFI_SIGNATURE_LIST (``kind`` ``x509`` or ``sha256``) made by the real ``sbsiglist``."""
    out = dest / f"{data_file.name}.{kind}.esl"
    _run("sbsiglist", "--owner", owner, "--type", kind, "--output", out, data_file)
    return out.read_bytes()


def mok_list(*cert_der: bytes, owner: str = OWNER) -> bytes:
    """A MOK list: one X.509 EFI_SIGNATURE_LIST per certificate, as shim mirrors ``MokList``."""
    with tempfile.TemporaryDirectory(prefix="kzguard-esl-") as tmp:
        lists = []
        for n, der in enumerate(cert_der):
            path = Path(tmp, f"cert{n}.der")
            path.write_bytes(der)
            lists.append(siglist(Path(tmp), "x509", path, owner))
    return b"".join(lists)


def efivar(name: str, guid: str) -> str:
    """The in-root efivarfs path of variable ``name``."""
    return f"{EFIVARS}/{name}-{guid}"


def efivar_bytes(value: bytes, attributes: bytes = ATTRS) -> bytes:
    """An efivarfs file's content: the UINT32 attributes, then the value."""
    return attributes + value


# --- module signatures -----------------------------------------------------------------------


def sign_file(
    module: bytes, pair: KeyPair, work: Path, *flags: str, hash_algo: str = "sha256"
) -> bytes:
    """Sign with the kernel's ``scripts/sign-file`` exactly as DKMS and kbuild do."""
    path = work / "sign-file.ko"
    path.write_bytes(module)
    _run("sign-file", *flags, hash_algo, pair.key, pair.der, path)
    return path.read_bytes()


def sign_by_hand(
    module: bytes,
    pair: KeyPair,
    work: Path,
    *,
    md: str = "sha256",
    cms: tuple[str, ...] = ("-noattr",),
) -> bytes:
    """What sign-file does: a detached CMS signature, then ``struct module_signature``, magic."""
    src, sig = work / "by-hand.ko", work / "by-hand.p7s"
    src.write_bytes(module)
    _run(
        "openssl", "cms", "-sign", "-binary", "-nocerts", "-outform", "DER", "-md", md,
        "-signer", pair.pem, "-inkey", pair.key, *cms, "-in", src, "-out", sig,
    )  # fmt: skip
    blob = sig.read_bytes()
    return module + blob + trailer(len(blob))


def trailer(sig_len: int) -> bytes:
    """``struct module_signature`` for a PKCS#7 blob of ``sig_len`` bytes, then the magic."""
    # algo, hash, id_type = PKEY_ID_PKCS7, signer_len, key_id_len, 3 pad, be32 sig_len
    fields = bytes([0, 0, PKEY_ID_PKCS7, 0, 0, 0, 0, 0])
    return fields + sig_len.to_bytes(4, "big") + MAGIC


def sign_module_file(path: Path, pair: KeyPair, *, hash_algo: str = "sha256") -> Path:
    """Sign a module file in place with sign-file; a compressed one (``.ko.xz``, ``.ko.zst``,
    ``.ko.gz``) is decompressed, signed and compressed again, as DKMS and kbuild do it."""
    from devtools import kobuild

    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a link: sign the module it points to")
    suffix = path.suffix if path.suffix in MODULE_DECOMPRESSORS else ""
    plain = path
    if suffix:
        _run(*MODULE_DECOMPRESSORS[suffix], path)
        plain = path.with_suffix("")
    _run("sign-file", hash_algo, pair.key, pair.der, plain)
    return kobuild.compress(plain, _MODULE_COMPRESSION[suffix]) if suffix else plain


# --- a real kernel's exports ----------------------------------------------------------------

MODULE_SYMVERS_GLOB = "/usr/src/linux-headers-*-amd64/Module.symvers"


def real_module_symvers() -> Path:
    """The ``Module.symvers`` of the newest Debian amd64 kernel headers on this machine."""
    found = sorted(glob.glob(MODULE_SYMVERS_GLOB))
    if not found:
        raise ToolchainError("no Module.symvers: linux-headers-amd64 is not installed")
    return Path(found[-1])


# --- initramfs images ------------------------------------------------------------------------


def cpio_archive(stage: Path, fmt: str = "newc") -> bytes:
    """``find . | sort | cpio -o -H newc`` in ``stage``, as dracut and mkinitramfs run it."""
    names = ["."]
    for top, dirs, files in os.walk(stage):  # links to directories are listed, not followed
        names += ["./" + os.path.relpath(os.path.join(top, n), stage) for n in dirs + files]
    listing = "".join(f"{name}\n" for name in sorted(names)).encode()
    return _run("cpio", "-o", "-H", fmt, "--quiet", "-R", "0:0", "-D", stage, input=listing)


def compress(data: bytes, kind: str) -> bytes:
    """``data`` compressed by the real tool with the options initramfs generators use."""
    name, *args = IMAGE_COMPRESSORS[kind]
    return _run(name, *args, input=data)


def newc(members: Mapping[str, Union[str, bytes]], fmt: str = "newc") -> bytes:
    """A cpio archive of ``members`` (path -> content), written by cpio from a staging tree."""
    with tempfile.TemporaryDirectory(prefix="kzguard-cpio-") as tmp:
        for name, content in members.items():
            target = Path(tmp, name.lstrip("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        return cpio_archive(Path(tmp), fmt)


EARLY_MICROCODE = {"kernel/x86/microcode/GenuineIntel.bin": bytes(range(256)) * 40}


def initramfs_image(
    members: Mapping[str, Union[str, bytes]],
    compression: Optional[str] = "zstd",
    *,
    early: Optional[Mapping[str, Union[str, bytes]]] = None,
) -> bytes:
    """An initramfs: an optional uncompressed early archive (microcode), then the main archive
    of ``members``, compressed with ``compression`` (``None``: plain)."""
    main = newc(members)
    if compression is not None:
        main = compress(main, compression)
    return (newc(early) if early else b"") + main
