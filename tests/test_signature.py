"""Module signatures made the way the kernel makes them, read and verified by kzguard.

Modules are real ELF objects from ``devtools.kobuild``; they are signed (through
:mod:`devtools.trust`) with the kernel's own ``scripts/sign-file`` (from linux-kbuild, installed
with the kernel headers) and by hand with ``openssl cms`` plus the 12-byte
``struct module_signature`` and the magic string, then compressed with the real xz/zstd/gzip and
decompressed by kzguard before reading.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools import kobuild
from devtools.kobuild import build_module, vermagic_for
from devtools.trust import MAGIC, KeyPair, make_cert, sign_by_hand, sign_file
from kzguard.base.errors import FactError
from kzguard.facts.modinfo import decompress
from kzguard.facts.secureboot import Certificate, enrolled_certificates
from kzguard.facts.signature import (
    INVALID,
    MALFORMED,
    MISSING,
    NOT_ENROLLED,
    STATUSES,
    VALID,
    SignatureTrailer,
    SignerFacts,
    read_trailer,
    signer_info,
    verify,
)
from kzguard.root import Root
from tests.tools import need, run

SERIAL = 0x4B5A_6775_6172_6421
SUBJECT = "/CN=kzguard lab module signing key/O=kzguard lab"


def cert_of(pair: KeyPair) -> Certificate:
    return Certificate.from_der(pair.der.read_bytes(), str(pair.der))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    need("openssl")
    dest = tmp_path_factory.mktemp("pki")
    return {
        "enrolled": make_cert(dest, "enrolled", subject=SUBJECT, serial=SERIAL),
        "rogue": make_cert(dest, "rogue", subject="/CN=DKMS module signing key"),
        # same issuer and serial as "enrolled", another key: the name matches, the maths not
        "twin": make_cert(dest, "twin", subject=SUBJECT, serial=SERIAL),
        "ec": make_cert(dest, "ec", kind="ec"),
    }


@pytest.fixture(scope="module")
def ko(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    need("gcc")
    dest = tmp_path_factory.mktemp("ko")
    return build_module(
        dest, name="zfs", version="2.2.7-1", vermagic=vermagic_for("6.1.0-56-amd64")
    ).read_bytes()


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, ko: bytes, pki: dict[str, KeyPair]) -> bytes:
    """The module signed by the real sign-file with the enrolled key."""
    need("sign-file")
    return sign_file(ko, pki["enrolled"], tmp_path_factory.mktemp("sign"))


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


# --- the two ways of signing agree -----------------------------------------------------------


@pytest.mark.real
def test_sign_file_and_openssl_cms_give_the_same_layout(
    tmp_path: Path, ko: bytes, pki: dict[str, KeyPair], signed: bytes
) -> None:
    by_hand = sign_by_hand(ko, pki["enrolled"], tmp_path)

    trailer = read_trailer(signed)
    assert trailer == read_trailer(by_hand)
    assert trailer == SignatureTrailer(
        present=True, id_type=2, sig_len=len(signed) - len(ko) - 40, content_length=len(ko)
    )
    assert signed[-40:-28] == bytes([0, 0, 2, 0, 0, 0, 0, 0]) + trailer.sig_len.to_bytes(4, "big")
    assert signed[: len(ko)] == ko
    assert signed == by_hand  # RSA PKCS#1 v1.5 is deterministic: byte for byte the same
    assert signer_info(signed, trailer) == signer_info(by_hand, read_trailer(by_hand))


@pytest.mark.real
def test_signer_info_matches_the_certificate_and_modinfo(
    tmp_path: Path, signed: bytes, pki: dict[str, KeyPair]
) -> None:
    facts = signer_info(signed, read_trailer(signed))
    cert = cert_of(pki["enrolled"])

    assert (facts.issuer, facts.serial, facts.key_id) == (cert.issuer, SERIAL, None)
    assert facts.issuer == "O=kzguard lab,CN=kzguard lab module signing key"
    assert (facts.digest_algorithm, facts.signature_algorithm) == ("sha256", "rsassa_pkcs1v15")
    assert not facts.signed_attributes
    assert json.loads(json.dumps(facts.to_dict()))["sig_key"] == facts.sig_key
    need("modinfo")
    path = tmp_path / "zfs.ko"
    path.write_bytes(signed)
    fields = {
        key: run("modinfo", "-F", key, path).stdout.strip()
        for key in ("sig_key", "signer", "sig_hashalgo", "sig_id")
    }
    assert fields == {
        "sig_key": facts.sig_key,
        "signer": "kzguard lab module signing key",
        "sig_hashalgo": "sha256",
        "sig_id": "PKCS#7",
    }


# --- verdicts --------------------------------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("how", ["sign-file", "by-hand"])
@pytest.mark.parametrize("compression", [None, "xz", "zst", "gz"])
def test_valid_signature_survives_compression(
    tmp_path: Path, ko: bytes, pki: dict[str, KeyPair], how: str, compression: str | None
) -> None:
    if how == "sign-file":
        need("sign-file")
    sign = sign_file if how == "sign-file" else sign_by_hand
    module = sign(ko, pki["enrolled"], tmp_path)
    if compression:
        need(kobuild.COMPRESSORS[compression][0])
        path = tmp_path / "zfs.ko"
        path.write_bytes(module)
        packed = kobuild.compress(path, compression).read_bytes()
        assert packed != module
        module = decompress(packed, compression)

    check = verify(module, [cert_of(pki["rogue"]), cert_of(pki["enrolled"])])

    assert check.status == VALID, check.message
    assert check.ok
    assert check.certificate == cert_of(pki["enrolled"]).subject
    assert check.signer == signer_info(module, read_trailer(module))
    assert json.loads(json.dumps(check.to_dict()))["status"] == "valid"


@pytest.mark.real
def test_signed_by_a_key_that_is_not_enrolled(
    tmp_path: Path, ko: bytes, pki: dict[str, KeyPair]
) -> None:
    """DKMS made itself a fresh key: the module is signed, the kernel will refuse it."""
    need("sign-file")
    module = sign_file(ko, pki["rogue"], tmp_path)

    check = verify(module, [cert_of(pki["enrolled"]), cert_of(pki["ec"])])

    assert check.status == NOT_ENROLLED
    assert check.certificate is None
    assert check.signer is not None and check.signer.issuer == "CN=DKMS module signing key"
    assert check.message.startswith("signed by issuer 'CN=DKMS module signing key' serial ")
    assert check.message.endswith("not among the 2 enrolled certificate(s)")
    assert verify(module, []).status == NOT_ENROLLED


@pytest.mark.real
@pytest.mark.parametrize("where", ["elf-header", "modinfo", "last-content-byte"])
def test_bytes_changed_after_signing_are_invalid(
    signed: bytes, ko: bytes, pki: dict[str, KeyPair], where: str
) -> None:
    offset = {"elf-header": 20, "modinfo": ko.index(b"vermagic="), "last-content-byte": len(ko) - 1}
    module = flip(signed, offset[where])

    check = verify(module, [cert_of(pki["enrolled"])])

    assert check.status == INVALID
    assert check.certificate == cert_of(pki["enrolled"]).subject
    assert "changed after signing" in check.message


@pytest.mark.real
def test_same_name_other_key_is_invalid(signed: bytes, pki: dict[str, KeyPair]) -> None:
    twin = cert_of(pki["twin"])
    assert (twin.issuer, twin.serial) == (cert_of(pki["enrolled"]).issuer, SERIAL)

    check = verify(signed, [twin])

    assert check.status == INVALID
    assert "does not verify" in check.message


@pytest.mark.real
def test_flipped_signature_bytes_are_invalid(signed: bytes, pki: dict[str, KeyPair]) -> None:
    module = flip(signed, len(signed) - 40 - 10)  # inside the RSA signature value

    assert verify(module, [cert_of(pki["enrolled"])]).status == INVALID


@pytest.mark.real
def test_unsigned_module_is_missing(ko: bytes, pki: dict[str, KeyPair]) -> None:
    check = verify(ko, [cert_of(pki["enrolled"])])

    assert check.status == MISSING
    assert (check.signer, check.certificate) == (None, None)
    assert read_trailer(ko) == SignatureTrailer(present=False)
    with pytest.raises(FactError, match="no signature"):
        signer_info(ko, read_trailer(ko))


@pytest.mark.real
def test_a_file_cut_short_has_lost_its_signature(signed: bytes) -> None:
    """A module cut at the end has no magic string left: as unsigned as the kernel sees it."""
    for cut in (1, 40, 300):
        assert verify(signed[:-cut], []).status == MISSING


def test_sig_key_prints_serials_like_modinfo() -> None:
    keys = [SignerFacts(None, n, None, "sha256", "rsassa_pkcs1v15").sig_key for n in (0, 256, -128)]

    assert keys == ["00", "01:00", "80"]
    assert SignerFacts(None, None, "ab", "sha256", "ecdsa").sig_key is None


def _with_length(module: bytes, sig_len: int) -> bytes:
    return module[:-32] + sig_len.to_bytes(4, "big") + MAGIC


@pytest.mark.real
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("length-too-big", "claims 4294967295 bytes of signature, but only"),
        ("length-too-small", "malformed PKCS#7 signature"),
        ("front-cut", "bytes of signature, but only"),
        ("only-trailer", "truncated signature trailer: 8 bytes before the magic string"),
        ("garbage-pkcs7", "malformed PKCS#7 signature"),
        ("certificate-as-pkcs7", "malformed PKCS#7 signature"),
        ("id-type-pgp", "signature id_type 0: the kernel only accepts PKCS#7 (2)"),
        ("nonzero-fields", "non-zero algo/hash/signer_len/key_id_len (1/4/0/0)"),
    ],
)
def test_malformed_trailers_are_reported_not_raised(
    signed: bytes, ko: bytes, pki: dict[str, KeyPair], damage: str, message: str
) -> None:
    sig_len = len(signed) - len(ko) - 40
    cert_der = pki["enrolled"].der.read_bytes()
    module = {
        "length-too-big": lambda: _with_length(signed, 0xFFFFFFFF),
        "length-too-small": lambda: _with_length(signed, sig_len - 16),
        "front-cut": lambda: signed[len(ko) + 5 :],
        "only-trailer": lambda: signed[-36:],
        "garbage-pkcs7": lambda: (
            ko + bytes(range(200)) + signed[-40:-32] + (200).to_bytes(4, "big") + MAGIC
        ),
        "certificate-as-pkcs7": lambda: (
            ko + cert_der + signed[-40:-32] + len(cert_der).to_bytes(4, "big") + MAGIC
        ),
        "id-type-pgp": lambda: signed[:-38] + b"\x00" + signed[-37:],
        "nonzero-fields": lambda: signed[:-40] + b"\x01\x04" + signed[-38:],
    }[damage]()

    check = verify(module, [cert_of(pki["enrolled"])])

    assert check.status == MALFORMED
    assert message in check.message
    trailer = read_trailer(module)
    if trailer.error is None:
        with pytest.raises(FactError, match="PKCS#7"):
            signer_info(module, trailer)
    else:
        assert trailer.present and message in trailer.error


@pytest.mark.real
def test_a_signature_carrying_its_own_content_is_malformed(
    tmp_path: Path, ko: bytes, pki: dict[str, KeyPair]
) -> None:
    module = sign_by_hand(ko, pki["enrolled"], tmp_path, cms=("-noattr", "-nodetach"))

    check = verify(module, [cert_of(pki["enrolled"])])

    assert check.status == MALFORMED
    assert "detached" in check.message


@pytest.mark.real
def test_trailer_method_refuses_other_bytes(signed: bytes) -> None:
    trailer = read_trailer(signed)

    assert trailer.signature(signed)[:1] == b"\x30"
    assert bytes(trailer.content(signed)) == signed[: trailer.content_length]
    with pytest.raises(FactError, match="not the ones this trailer was read from"):
        trailer.signature(signed + b"\0")


# --- keys, digests and CMS variants ----------------------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize(
    ("how", "args", "digest", "algorithm", "attributes"),
    [
        ("sign-file", ("sha512",), "sha512", "rsassa_pkcs1v15", False),
        ("sign-file", ("sha384", "-k"), "sha384", "rsassa_pkcs1v15", False),
        ("by-hand", ("sha256", "-noattr"), "sha256", "sha256_ecdsa", False),
        ("by-hand", ("sha256",), "sha256", "rsassa_pkcs1v15", True),
        ("by-hand", ("sha512", "-keyid"), "sha512", "sha512_ecdsa", True),
        (
            "by-hand",
            ("sha256", "-noattr", "-keyopt", "rsa_padding_mode:pss"),
            "sha256",
            "rsassa_pss",
            False,
        ),
    ],
)
def test_other_digests_keys_and_cms_shapes_verify(
    tmp_path: Path,
    ko: bytes,
    pki: dict[str, KeyPair],
    how: str,
    args: tuple[str, ...],
    digest: str,
    algorithm: str,
    attributes: bool,
) -> None:
    pair = pki["ec"] if "ecdsa" in algorithm else pki["enrolled"]
    if how == "sign-file":
        need("sign-file")
        module = sign_file(ko, pair, tmp_path, *args[1:], hash_algo=args[0])
    else:
        module = sign_by_hand(ko, pair, tmp_path, md=args[0], cms=args[1:])
    certs = [cert_of(pki["rogue"]), cert_of(pair)]

    check = verify(module, certs)

    assert check.status == VALID, check.message
    facts = check.signer
    assert facts is not None
    assert (facts.digest_algorithm, facts.signature_algorithm) == (digest, algorithm)
    assert facts.signed_attributes is attributes
    keyid = "-k" in args or "-keyid" in args
    assert (facts.key_id is not None, facts.serial is None) == (keyid, keyid)
    changed = verify(flip(module, 100), certs)
    assert changed.status == INVALID
    if attributes:
        assert "differs from the signed messageDigest" in changed.message


@pytest.mark.real
def test_ec_signature_checked_with_an_rsa_certificate_of_the_same_name(
    tmp_path: Path, ko: bytes, pki: dict[str, KeyPair]
) -> None:
    module = sign_by_hand(ko, pki["ec"], tmp_path)
    ec = cert_of(pki["ec"])
    impostor = cert_of(pki["enrolled"])._replace(issuer=ec.issuer, serial=ec.serial)

    check = verify(module, [impostor])

    assert check.status == INVALID
    assert "cannot be checked with a" in check.message


# --- through a root: certificates from config paths ------------------------------------------


@pytest.mark.real
@pytest.mark.parametrize("form", ["pem", "der"])
def test_certificate_from_extra_paths_validates(
    tmp_path: Path, signed: bytes, pki: dict[str, KeyPair], form: str
) -> None:
    source = pki["enrolled"].pem if form == "pem" else pki["enrolled"].der
    inner = f"/etc/kzguard/keys/distro.{form}"
    target = tmp_path / inner.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copyfile(source, target)

    certs, problems = enrolled_certificates(Root(tmp_path), [inner])
    check = verify(signed, certs)

    assert problems == []
    assert [c.source for c in certs] == [inner]
    assert check.status == VALID


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_read_trailer_never_raises(data: bytes, with_magic: bool) -> None:
    trailer = read_trailer(data + MAGIC if with_magic else data)

    assert trailer.present is (with_magic or data.endswith(MAGIC))
    if trailer.usable:
        assert trailer.content_length + trailer.sig_len + 40 == len(data) + 28 * with_magic


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.binary(min_size=1, max_size=300))
def test_read_trailer_round_trips(content: bytes, blob: bytes) -> None:
    module = content + blob + bytes([0, 0, 2, 0, 0, 0, 0, 0]) + len(blob).to_bytes(4, "big") + MAGIC

    trailer = read_trailer(module)

    assert trailer == SignatureTrailer(True, 2, len(blob), len(content), None)
    assert trailer.signature(module) == blob
    assert bytes(trailer.content(module)) == content


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=400))
def test_verify_never_raises_on_garbage_pkcs7(blob: bytes) -> None:
    module = (
        b"\x7fELF" + blob + bytes([0, 0, 2, 0, 0, 0, 0, 0]) + len(blob).to_bytes(4, "big") + MAGIC
    )

    assert verify(module, []).status in (MALFORMED, NOT_ENROLLED)


@pytest.mark.real
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_verify_never_raises_on_a_damaged_real_signature(
    signed: bytes, ko: bytes, pki: dict[str, KeyPair], data: st.DataObject
) -> None:
    start = len(ko)
    offset = data.draw(st.integers(min_value=start, max_value=len(signed) - 41))
    value = data.draw(st.integers(min_value=0, max_value=255))
    module = signed[:offset] + bytes([value]) + signed[offset + 1 :]

    check = verify(module, [cert_of(pki["enrolled"])])

    assert check.status in STATUSES
    assert check.status != MISSING
