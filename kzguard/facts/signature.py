"""A kernel module's appended signature: the trailer, its PKCS#7 SignerInfo, and verification.

``sign-file`` appends to the module (before any compression) a detached PKCS#7/CMS
SignedData in DER, then ``struct module_signature`` (12 bytes: algo, hash, id_type,
signer_len, key_id_len, 3 pad bytes, big-endian sig_len; only id_type = 2, PKCS#7, is used)
and the magic string ``~Module signature appended~\\n``. The signature covers every byte
before the PKCS#7 blob.

:func:`read_trailer` is :mod:`struct` only. :func:`signer_info` parses the CMS structure with
:mod:`asn1crypto`; :func:`verify` also checks the signature cryptographically with
:mod:`cryptography`, against the enrolled certificate that the SignerInfo names, the way the
kernel does at ``insmod`` time. Both libraries are imported only when used.
"""

from __future__ import annotations

import struct

from kzguard.base.errors import FactError
from kzguard.base.record import Record
from kzguard.facts.secureboot import format_name

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, Optional

    from kzguard.facts.secureboot import Certificate

MAGIC = b"~Module signature appended~\n"
PKEY_ID_PKCS7 = 2
_MODULE_SIGNATURE = struct.Struct(">BBBBB3xI")  # struct module_signature
TRAILER_OVERHEAD = _MODULE_SIGNATURE.size + len(MAGIC)
"""Bytes a signature adds besides the PKCS#7 blob itself."""

VALID = "valid"
MISSING = "missing"
NOT_ENROLLED = "not-enrolled"
INVALID = "invalid"
MALFORMED = "malformed"
KERNEL_KEY = "kernel-key"  # not enrolled, but signed by the key the kernel's own modules use
STATUSES = (VALID, MISSING, NOT_ENROLLED, INVALID, MALFORMED, KERNEL_KEY)

_HASHES = {
    "sha1": "SHA1",
    "sha224": "SHA224",
    "sha256": "SHA256",
    "sha384": "SHA384",
    "sha512": "SHA512",
    "sha3_224": "SHA3_224",
    "sha3_256": "SHA3_256",
    "sha3_384": "SHA3_384",
    "sha3_512": "SHA3_512",
}
_EC_PUBLIC_KEY = "1.2.840.10045.2.1"  # some signers name the key type, not ecdsa-with-SHAx


# --- the trailer -----------------------------------------------------------------------------


class SignatureTrailer(Record):
    """What the end of a module says about its signature; ``error`` when it does not add up."""

    present: bool  # the magic string ends the module
    id_type: Optional[int] = None
    sig_len: Optional[int] = None
    content_length: Optional[int] = None  # bytes covered by the signature
    error: Optional[str] = None

    @property
    def usable(self) -> bool:
        """A trailer whose PKCS#7 blob can be sliced out and read."""
        return self.present and self.error is None

    def signature(self, module: bytes) -> bytes:
        """The PKCS#7 DER blob, sliced from the same module bytes this trailer was read from."""
        start = self._start(module)
        return bytes(module[start : start + (self.sig_len or 0)])

    def content(self, module: bytes) -> memoryview:
        """The signed bytes of the module (everything before the PKCS#7 blob), without a copy."""
        return memoryview(module)[: self._start(module)]

    def _start(self, module: bytes) -> int:
        if not self.usable or self.content_length is None or self.sig_len is None:
            raise FactError(self.error or "module carries no signature")
        if len(module) != self.content_length + self.sig_len + TRAILER_OVERHEAD:
            raise FactError("module bytes are not the ones this trailer was read from")
        return self.content_length

    def to_dict(self) -> dict[str, object]:
        return self._asdict()


def read_trailer(module: bytes) -> SignatureTrailer:
    """Read the appended-signature trailer of an uncompressed module; never raises.

    Checks what the kernel's ``mod_check_sig`` checks: the length fits, id_type is PKCS#7 and
    the fields PKCS#7 signatures leave zero are zero.
    """
    if not module.endswith(MAGIC):
        return SignatureTrailer(present=False)
    end = len(module) - len(MAGIC)
    if end < _MODULE_SIGNATURE.size:
        return SignatureTrailer(
            present=True,
            error=f"truncated signature trailer: {end} bytes before the magic string,"
            f" struct module_signature needs {_MODULE_SIGNATURE.size}",
        )
    algo, hash_, id_type, signer_len, key_id_len, sig_len = _MODULE_SIGNATURE.unpack_from(
        module, end - _MODULE_SIGNATURE.size
    )
    room = end - _MODULE_SIGNATURE.size
    if sig_len >= room:
        return SignatureTrailer(
            present=True,
            id_type=id_type,
            sig_len=sig_len,
            error=f"signature trailer claims {sig_len} bytes of signature, but only {room} bytes"
            " precede it (truncated file, or a trailer that lies about its length)",
        )
    error = None
    if id_type != PKEY_ID_PKCS7:
        error = f"signature id_type {id_type}: the kernel only accepts PKCS#7 ({PKEY_ID_PKCS7})"
    elif algo or hash_ or signer_len or key_id_len:
        error = (
            "struct module_signature has non-zero algo/hash/signer_len/key_id_len"
            f" ({algo}/{hash_}/{signer_len}/{key_id_len}), which PKCS#7 signatures leave zero"
        )
    elif sig_len == 0:
        error = "signature trailer has an empty signature"
    return SignatureTrailer(
        present=True, id_type=id_type, sig_len=sig_len, content_length=room - sig_len, error=error
    )


# --- the SignerInfo --------------------------------------------------------------------------


class SignerFacts(Record):
    """Who signed, and how: the SignerInfo of the module's PKCS#7."""

    issuer: Optional[str]  # RFC 4514, when the signer is named by issuer and serial
    serial: Optional[int]
    key_id: Optional[str]  # hex subject key identifier, when the signer is named by it
    digest_algorithm: str  # "sha256", ...
    signature_algorithm: str  # "rsassa_pkcs1v15", "sha256_ecdsa", ...
    signed_attributes: bool = False

    @property
    def sig_key(self) -> Optional[str]:
        """The serial as ``modinfo -F sig_key`` prints it (``1A:2B:...``)."""
        if self.serial is None:
            return None
        serial = self.serial
        if serial >= 0:
            raw = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
        else:  # not valid DER for a certificate, but a PKCS#7 can say anything
            raw = serial.to_bytes(((~serial).bit_length() + 8) // 8, "big", signed=True)
        return ":".join(f"{b:02X}" for b in raw)

    def to_dict(self) -> dict[str, object]:
        return {**self._asdict(), "sig_key": self.sig_key}


class _Signer(Record):
    """One SignerInfo, reduced to plain values (asn1crypto stays inside :func:`_parse_pkcs7`)."""

    facts: SignerFacts
    signature: bytes
    signed_attrs: Optional[bytes]  # DER of the SET OF attributes, what is signed when present
    message_digest: Optional[bytes]
    pss: Optional[tuple[str, str, int]]  # hash, MGF1 hash, salt length


def signer_info(module: bytes, trailer: SignatureTrailer) -> SignerFacts:
    """The first SignerInfo of the module's signature; a garbage PKCS#7 is a FactError."""
    return _parse_pkcs7(trailer.signature(module))[0].facts


def _parse_pkcs7(der: bytes) -> list[_Signer]:
    """Every SignerInfo of a detached PKCS#7 SignedData, as the kernel would accept it."""
    from asn1crypto import cms, core

    try:
        info = cms.ContentInfo.load(der, strict=True)
        kind = info["content_type"].native
        if kind != "signed_data":
            raise FactError(f"PKCS#7 content is {kind}, not signed data")
        signed = info["content"]
        signed.native  # noqa: B018 - parse everything now, so garbage fails here
        encap = signed["encap_content_info"]
        if encap["content_type"].native != "data":
            raise FactError(f"PKCS#7 signs {encap['content_type'].native}, not data")
        if not isinstance(encap["content"], core.Void):
            raise FactError("PKCS#7 carries its own content; the kernel needs a detached signature")
        signers = [_signer(si, core) for si in signed["signer_infos"]]
    except FactError:
        raise
    except Exception as exc:  # asn1crypto's errors on hostile input vary in type
        raise FactError(f"malformed PKCS#7 signature: {exc or type(exc).__name__}") from exc
    if not signers:
        raise FactError("PKCS#7 signature has no SignerInfo")
    return signers


def _signer(si: Any, core: Any) -> _Signer:
    sid = si["sid"]
    issuer = serial = key_id = None
    if sid.name == "issuer_and_serial_number":
        name = sid.chosen["issuer"]
        issuer = format_name(
            [(a["type"].dotted, a["value"].native) for a in rdn] for rdn in name.chosen
        )
        serial = sid.chosen["serial_number"].native
    else:
        key_id = sid.chosen.native.hex()
    sig_alg = si["signature_algorithm"]
    sig_name = sig_alg["algorithm"].native
    attrs = si["signed_attrs"]
    has_attrs = not isinstance(attrs, core.Void)
    facts = SignerFacts(
        issuer=issuer,
        serial=serial,
        key_id=key_id,
        digest_algorithm=si["digest_algorithm"]["algorithm"].native,
        signature_algorithm=sig_name,
        signed_attributes=has_attrs,
    )
    pss = None
    if sig_name == "rsassa_pss":
        params = sig_alg["parameters"]
        mgf = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
        pss = (params["hash_algorithm"]["algorithm"].native, mgf, params["salt_length"].native)
    digest = None
    signed_attrs = None
    if has_attrs:
        signed_attrs = b"\x31" + attrs.dump()[1:]  # [0] IMPLICIT on the wire, SET OF when signed
        digests = [a["values"][0].native for a in attrs if a["type"].native == "message_digest"]
        if len(digests) != 1:
            raise FactError("signed attributes need exactly one messageDigest")
        digest = digests[0]
    return _Signer(facts, si["signature"].native, signed_attrs, digest, pss)


# --- verification ----------------------------------------------------------------------------


class SignatureCheck(Record):
    """The verdict on one module's signature against the enrolled certificates."""

    status: str  # one of STATUSES
    signer: Optional[SignerFacts] = None
    certificate: Optional[str] = None  # subject of the enrolled certificate that matched
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (VALID, KERNEL_KEY)

    def trusted_as_kernel_key(self, reference: Optional[SignerFacts]) -> SignatureCheck:
        """A not-enrolled signer that signed the kernel's own in-tree modules too: the module
        shipped with the kernel (Ubuntu, Proxmox) and its key is built into the kernel."""
        if self.status != NOT_ENROLLED or self.signer is None or reference is None:
            return self
        if _identity(self.signer) != _identity(reference):
            return self
        message = (
            f"signed by {_who(self.signer)}, the key this kernel's own modules are signed "
            "with (built into the kernel; not in the MOK list)"
        )
        return self._replace(status=KERNEL_KEY, message=message)

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "signer": self.signer.to_dict() if self.signer else None,
            "certificate": self.certificate,
            "message": self.message,
        }


def verify(module: bytes, certificates: Iterable[Certificate]) -> SignatureCheck:
    """Check an uncompressed module's signature against ``certificates``; never raises.

    The signer is matched to a certificate by issuer and serial (or subject key identifier),
    then the RSA or ECDSA signature is verified over the module's bytes (or over the signed
    attributes, whose messageDigest must then be the module's digest).
    """
    trailer = read_trailer(module)
    if not trailer.present:
        return SignatureCheck(MISSING, message="the module carries no appended signature")
    if trailer.error:
        return SignatureCheck(MALFORMED, message=trailer.error)
    try:
        signers = _parse_pkcs7(trailer.signature(module))
    except FactError as exc:
        return SignatureCheck(MALFORMED, message=str(exc))
    certs = list(certificates)
    keys = _KeyIds()
    for signer in signers:
        cert = next((c for c in certs if _names(signer.facts, c, keys)), None)
        if cert is None:
            continue
        problem = _check(signer, cert, trailer.content(module))
        if problem:
            return SignatureCheck(INVALID, signer.facts, cert.subject, problem)
        return SignatureCheck(
            VALID, signer.facts, cert.subject, f"signature verified with {cert.subject}"
        )
    facts = signers[0].facts
    return SignatureCheck(
        NOT_ENROLLED,
        facts,
        message=f"signed by {_who(facts)}, which is not among the {len(certs)} enrolled"
        " certificate(s)",
    )


def _identity(facts: SignerFacts) -> tuple[object, ...]:
    return (facts.issuer, facts.serial, facts.key_id)


def signer_of(module: bytes) -> Optional[SignerFacts]:
    """The signer of a module's appended signature, or None (unsigned, malformed)."""
    trailer = read_trailer(module)
    if not trailer.usable:
        return None
    try:
        return signer_info(module, trailer)
    except FactError:
        return None


def _who(facts: SignerFacts) -> str:
    if facts.serial is not None:
        return f"issuer {facts.issuer!r} serial {facts.sig_key}"
    return f"key id {facts.key_id}"


class _KeyIds:
    """Subject key identifiers of certificates, read (with cryptography) only when asked."""

    def __init__(self) -> None:
        self._seen: dict[str, Optional[str]] = {}

    def get(self, cert: Certificate) -> Optional[str]:
        if cert.sha256 not in self._seen:
            from cryptography import x509

            try:
                ext = _load(cert).extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
                self._seen[cert.sha256] = ext.value.digest.hex()
            except (ValueError, x509.ExtensionNotFound):
                self._seen[cert.sha256] = None
        return self._seen[cert.sha256]


def _names(facts: SignerFacts, cert: Certificate, keys: _KeyIds) -> bool:
    """Whether the SignerInfo designates ``cert``."""
    if facts.serial is not None:
        return cert.serial == facts.serial and cert.issuer == facts.issuer
    return facts.key_id is not None and keys.get(cert) == facts.key_id


def _load(cert: Certificate) -> Any:
    from cryptography import x509

    return x509.load_der_x509_certificate(cert.der)


def _check(signer: _Signer, cert: Certificate, content: memoryview) -> Optional[str]:
    """``None`` when ``cert`` verifies the signature over ``content``, else why not."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

    facts = signer.facts
    try:
        digest_alg = _hash(facts.digest_algorithm)
        digest = _digest(digest_alg, content)
        if signer.signed_attrs is None:
            _verify_raw(signer, _load(cert).public_key(), digest, digest_alg, prehashed=True)
        elif signer.message_digest != digest:
            return (
                f"the module's {facts.digest_algorithm} digest differs from the signed"
                " messageDigest: the module changed after signing"
            )
        else:
            key = _load(cert).public_key()
            _verify_raw(signer, key, signer.signed_attrs, digest_alg, prehashed=False)
    except InvalidSignature:
        return (
            f"the signature does not verify with {cert.subject}: the module changed after"
            " signing, or it was signed by another key with the same name"
        )
    except (FactError, UnsupportedAlgorithm, ValueError, TypeError) as exc:
        return f"cannot verify the signature with {cert.subject}: {exc or type(exc).__name__}"
    return None


def _hash(name: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    if name not in _HASHES:
        raise FactError(f"unsupported digest algorithm {name}")
    return getattr(hashes, _HASHES[name])()


def _digest(algorithm: Any, content: memoryview) -> bytes:
    from cryptography.hazmat.primitives import hashes

    hasher = hashes.Hash(algorithm)
    hasher.update(content)
    return hasher.finalize()


def _verify_raw(signer: _Signer, key: Any, data: bytes, algorithm: Any, *, prehashed: bool) -> None:
    """Verify the raw signature over ``data`` (a digest when ``prehashed``); raise if it fails."""
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    chosen = utils.Prehashed(algorithm) if prehashed else algorithm
    name = signer.facts.signature_algorithm
    if name.endswith("ecdsa") or name == _EC_PUBLIC_KEY:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise FactError(f"an ECDSA signature cannot be checked with a {_kind(key)} key")
        key.verify(signer.signature, data, ec.ECDSA(chosen))
    elif name.endswith("_rsa") or name in ("rsassa_pkcs1v15", "rsassa_pss"):
        if not isinstance(key, rsa.RSAPublicKey):
            raise FactError(f"an RSA signature cannot be checked with a {_kind(key)} key")
        key.verify(signer.signature, data, _rsa_padding(signer, padding), chosen)
    else:
        raise FactError(f"unsupported signature algorithm {name}")


def _rsa_padding(signer: _Signer, padding: Any) -> Any:
    if signer.pss is None:
        return padding.PKCS1v15()
    hash_name, mgf_hash, salt = signer.pss
    if hash_name != signer.facts.digest_algorithm:
        raise FactError(f"RSA-PSS hashes with {hash_name}, the SignerInfo digests with another")
    return padding.PSS(mgf=padding.MGF1(_hash(mgf_hash)), salt_length=salt)


def _kind(key: Any) -> str:
    return type(key).__name__.replace("PublicKey", "").lstrip("_") or "different"
