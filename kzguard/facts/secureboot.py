"""Secure Boot state from EFI variables, and the certificates enrolled for module signing.

The firmware's ``SecureBoot`` and ``SetupMode`` variables and shim's ``MokSBStateRT`` are read
from efivarfs (``/sys/firmware/efi/efivars/<Name>-<GUID>``: 4 attribute bytes, then the value)
or, for shim's variables, from the config table the kernel exposes under
``/sys/firmware/efi/mok-variables/`` (the value alone). A BIOS host has none of them.

Enrolled keys are the X.509 entries of shim's ``MokListRT`` (an array of EFI_SIGNATURE_LIST
structures; shim splits a list too big for one variable into ``MokListRT1``, ``MokListRT2``...,
each a whole list), plus certificate files the configuration names (distro keys built into the
kernel). Reading the variables is :mod:`struct` only; :mod:`cryptography` is imported when a
certificate is parsed.
"""

from __future__ import annotations

import struct

from kzguard.base.errors import FactError
from kzguard.base.record import Record

TYPE_CHECKING = False  # typing costs the hooks 2 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any, Callable, Optional

    from kzguard.root import Root

EFIVARS = "/sys/firmware/efi/efivars"
MOKVARS = "/sys/firmware/efi/mok-variables"
EFI_GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SHIM_LOCK_GUID = "605dab50-e046-4300-abb6-3dd810dd8b23"
EFI_CERT_X509_GUID = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
EFI_CERT_SHA256_GUID = "c1c41626-504c-4092-aca9-41f936934328"
MOK_LIST = "MokListRT"
MAX_MOK_PARTS = 64
"""How many split ``MokListRT<n>`` variables are looked for after ``MokListRT`` itself."""

_ATTRIBUTES = 4  # efivarfs files start with the variable's UINT32 attributes
_LIST_HEADER = struct.Struct("<16sIII")  # SignatureType, ListSize, HeaderSize, SignatureSize
_GUID = struct.Struct("<IHH8s")
_GUID_SIZE = 16


# --- EFI variables ---------------------------------------------------------------------------


def read_efivar(root: Root, name: str, guid: str) -> Optional[bytes]:
    """The value of an efivarfs variable without its attribute bytes; ``None`` when absent."""
    inner = f"{EFIVARS}/{name}-{guid}"
    if not root.exists(inner):
        return None
    data = root.read_bytes(inner)
    if len(data) < _ATTRIBUTES:
        raise FactError(f"{name}: truncated EFI variable ({len(data)} bytes, no attributes)")
    return data[_ATTRIBUTES:]


def read_mokvar(root: Root, name: str) -> Optional[bytes]:
    """A shim variable from the MOK config table (no attribute bytes); ``None`` when absent."""
    inner = f"{MOKVARS}/{name}"
    return root.read_bytes(inner) if root.exists(inner) else None


class SecureBootState(Record):
    """What the firmware and shim say about Secure Boot; ``None`` where a variable is absent."""

    efi: bool
    secure_boot: Optional[bool] = None
    setup_mode: Optional[bool] = None
    mok_validation: Optional[bool] = None  # False: shim validation disabled (MokSBStateRT=1)
    problems: tuple[str, ...] = ()

    @property
    def enforcing(self) -> bool:
        """Whether the kernel will demand signed modules: EFI, Secure Boot on, shim validating."""
        return self.efi and self.secure_boot is True and self.mok_validation is not False

    def to_dict(self) -> dict[str, object]:
        return {
            "efi": self.efi,
            "secure_boot": self.secure_boot,
            "setup_mode": self.setup_mode,
            "mok_validation": self.mok_validation,
            "enforcing": self.enforcing,
            "problems": list(self.problems),
        }


def secure_boot_state(root: Root) -> SecureBootState:
    """Read Secure Boot, Setup Mode and shim's validation state from ``root``'s efivars."""
    try:
        if not root.exists("/sys/firmware/efi"):
            return SecureBootState(efi=False)
    except FactError as exc:  # a link loop: EFI, for all kzguard can tell, state unknown
        return SecureBootState(efi=True, problems=(str(exc),))
    problems: list[str] = []
    secure_boot = _flag(
        problems, "SecureBoot", lambda: read_efivar(root, "SecureBoot", EFI_GLOBAL_GUID)
    )
    setup_mode = _flag(
        problems, "SetupMode", lambda: read_efivar(root, "SetupMode", EFI_GLOBAL_GUID)
    )
    mok_disabled = _flag(problems, "MokSBStateRT", lambda: _shim_var(root, "MokSBStateRT"))
    return SecureBootState(
        efi=True,
        secure_boot=secure_boot,
        setup_mode=setup_mode,
        mok_validation=None if mok_disabled is None else not mok_disabled,
        problems=tuple(problems),
    )


def _shim_var(root: Root, name: str) -> Optional[bytes]:
    """A shim variable: the MOK config table first (what the kernel reads), then efivarfs."""
    value = read_mokvar(root, name)
    return value if value is not None else read_efivar(root, name, SHIM_LOCK_GUID)


def _flag(problems: list[str], name: str, read: Callable[[], Optional[bytes]]) -> Optional[bool]:
    """A one-byte boolean variable; a missing one is ``None``, a broken one a problem."""
    try:
        value = read()
    except FactError as exc:
        problems.append(str(exc))
        return None
    if value is None:
        return None
    if not value:
        problems.append(f"{name}: truncated EFI variable (no value byte)")
        return None
    if value[0] > 1:
        problems.append(f"{name}: unexpected value {value[0]} (expected 0 or 1)")
        return None
    return value[0] == 1


# --- EFI_SIGNATURE_LIST ----------------------------------------------------------------------


class SignatureEntry(Record):
    """One EFI_SIGNATURE_DATA: the list's SignatureType GUID, the owner GUID and the data."""

    type: str
    owner: str
    data: bytes

    @property
    def is_x509(self) -> bool:
        return self.type == EFI_CERT_X509_GUID

    def __repr__(self) -> str:
        data = f"<{len(self.data)} bytes>"
        return f"SignatureEntry(type={self.type!r}, owner={self.owner!r}, data={data})"


def format_guid(raw: bytes) -> str:
    """An EFI_GUID's 16 bytes (first three fields little-endian) as the usual lower-case string."""
    d1, d2, d3, rest = _GUID.unpack(raw)
    return f"{d1:08x}-{d2:04x}-{d3:04x}-{rest[:2].hex()}-{rest[2:].hex()}"


def parse_signature_lists(data: bytes) -> list[SignatureEntry]:
    """Every entry of a concatenation of EFI_SIGNATURE_LISTs (what ``db`` and ``MokListRT`` hold).

    A size field that does not fit the data is a :class:`FactError` naming the list and offset.
    """
    entries: list[SignatureEntry] = []
    offset = 0
    index = 0
    while offset < len(data):
        where = f"signature list {index} at offset {offset}"
        if len(data) - offset < _LIST_HEADER.size:
            raise FactError(f"{where}: truncated header ({len(data) - offset} bytes left)")
        raw_type, list_size, header_size, sig_size = _LIST_HEADER.unpack_from(data, offset)
        body = list_size - _LIST_HEADER.size - header_size
        if list_size > len(data) - offset:
            raise FactError(
                f"{where}: SignatureListSize {list_size} runs past the end of the data"
                f" ({len(data) - offset} bytes left)"
            )
        if body < 0:
            raise FactError(
                f"{where}: SignatureListSize {list_size} is smaller than its header"
                f" ({_LIST_HEADER.size} + SignatureHeaderSize {header_size})"
            )
        if sig_size < _GUID_SIZE:
            raise FactError(f"{where}: SignatureSize {sig_size} cannot hold the owner GUID")
        if body % sig_size:
            raise FactError(
                f"{where}: {body} bytes of signatures is not a multiple of SignatureSize {sig_size}"
            )
        sig_type = format_guid(raw_type)
        start = offset + _LIST_HEADER.size + header_size
        for pos in range(start, start + body, sig_size):
            owner = format_guid(data[pos : pos + _GUID_SIZE])
            entries.append(SignatureEntry(sig_type, owner, data[pos + _GUID_SIZE : pos + sig_size]))
        offset += list_size
        index += 1
    return entries


# --- certificates ----------------------------------------------------------------------------


class Certificate(Record):
    """An X.509 certificate trusted for module signatures, and where it was found."""

    subject: str
    issuer: str
    serial: int
    sha256: str
    source: str  # "MokListRT", "MokListRT1", ... or the certificate file's path
    not_after: str  # ISO 8601, UTC
    der: bytes = b""
    _uncompared = frozenset({"der"})

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields if n != "der")
        return f"Certificate({inner})"

    @classmethod
    def from_der(cls, der: bytes, source: str) -> Certificate:
        """Parse a DER certificate (imports :mod:`cryptography`); garbage is a FactError."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        try:
            cert = x509.load_der_x509_certificate(bytes(der))
            return cls(
                subject=format_name(_crypto_rdns(cert.subject)),
                issuer=format_name(_crypto_rdns(cert.issuer)),
                serial=cert.serial_number,
                sha256=cert.fingerprint(hashes.SHA256()).hex(),
                source=source,
                not_after=_not_after(cert),
                der=bytes(der),
            )
        except ValueError as exc:
            raise FactError(f"not a valid X.509 certificate: {exc}") from exc

    def to_dict(self) -> dict[str, object]:
        return {n: getattr(self, n) for n in self._fields if n != "der"}


def load_certificates(data: bytes, source: str) -> list[Certificate]:
    """The certificates of a PEM file (every CERTIFICATE block) or of one DER certificate."""
    if b"-----BEGIN" not in data:
        return [Certificate.from_der(data, source)]
    import re

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", data, flags=re.S
    )
    if not blocks:
        raise FactError("PEM file holds no CERTIFICATE block")
    certs = []
    for n, block in enumerate(blocks):
        try:
            der = x509.load_pem_x509_certificate(block).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise FactError(f"PEM certificate {n}: not a valid X.509 certificate: {exc}") from exc
        certs.append(Certificate.from_der(der, source))
    return certs


def enrolled_certificates(
    root: Root, extra_paths: Sequence[str] = ()
) -> tuple[list[Certificate], list[str]]:
    """The X.509 certificates in shim's MOK list plus those in ``extra_paths`` (in-root files).

    The MOK list comes from the MOK config table when the kernel exposes it, else from
    efivarfs (``MokListRT`` and its split continuations). Unreadable or garbage variables and
    files become problem strings; a certificate found twice is listed once.
    """
    certs: list[Certificate] = []
    problems: list[str] = []
    for source, data in _mok_lists(root, problems):
        try:
            entries = parse_signature_lists(data)
        except FactError as exc:
            problems.append(f"{source}: {exc}")
            continue
        for n, entry in enumerate(e for e in entries if e.is_x509):
            try:
                certs.append(Certificate.from_der(entry.data, source))
            except FactError as exc:
                problems.append(f"{source}: X.509 entry {n}: {exc}")
    for path in extra_paths:
        try:
            data = root.read_bytes(path)
        except FactError as exc:
            problems.append(str(exc))
            continue
        try:
            certs.extend(load_certificates(data, path))
        except FactError as exc:
            problems.append(f"{path}: {exc}")
    return _unique(certs), problems


def _mok_lists(root: Root, problems: list[str]) -> Iterable[tuple[str, bytes]]:
    """``(variable name, EFI_SIGNATURE_LIST data)`` for each part of the MOK list."""
    try:
        table = read_mokvar(root, MOK_LIST)
    except FactError as exc:
        problems.append(str(exc))
        table = None
    if table is not None:
        yield MOK_LIST, table
        return
    for n in range(MAX_MOK_PARTS + 1):
        name = MOK_LIST if n == 0 else f"{MOK_LIST}{n}"
        try:
            data = read_efivar(root, name, SHIM_LOCK_GUID)
        except FactError as exc:
            problems.append(str(exc))
            continue
        if data is None:  # shim writes MokListRT first, then MokListRT1, MokListRT2...
            return
        yield name, data


def _unique(certs: Iterable[Certificate]) -> list[Certificate]:
    seen: set[str] = set()
    out = []
    for cert in certs:
        if cert.sha256 not in seen:
            seen.add(cert.sha256)
            out.append(cert)
    return out


# --- distinguished names ---------------------------------------------------------------------

_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.4": "SN",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.9": "STREET",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.12": "title",
    "2.5.4.42": "GN",
    "0.9.2342.19200300.100.1.1": "UID",
    "0.9.2342.19200300.100.1.25": "DC",
    "1.2.840.113549.1.9.1": "emailAddress",
}


def format_name(rdns: Iterable[Iterable[tuple[str, object]]]) -> str:
    """An RFC 4514 string (last RDN first) from RDNs given as ``(dotted OID, value)`` pairs.

    Both :mod:`cryptography` (certificates) and :mod:`asn1crypto` (a SignerInfo's issuer) feed
    this, so a certificate's issuer and a signature's issuer compare as strings.
    """
    parts = []
    for rdn in reversed([list(r) for r in rdns]):
        parts.append(
            "+".join(f"{_SHORT_NAMES.get(oid, oid)}={_escape(value)}" for oid, value in rdn)
        )
    return ",".join(parts)


_ESCAPES = {c: "\\" + c for c in ',+"\\<>;'}
_ESCAPES["\0"] = "\\00"


def _escape(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "#" + bytes(value).hex()
    text = str(value)
    chars = [_ESCAPES.get(c, c) for c in text]
    if text[:1] in ("#", " "):
        chars[0] = "\\" + chars[0]
    if len(text) > 1 and text[-1] == " ":
        chars[-1] = "\\ "
    return "".join(chars)


def _crypto_rdns(name: Any) -> list[list[tuple[str, object]]]:
    return [[(a.oid.dotted_string, a.value) for a in rdn] for rdn in name.rdns]


def _not_after(cert: Any) -> str:
    when = getattr(cert, "not_valid_after_utc", None)
    if when is None:  # cryptography < 42: a naive datetime in UTC
        from datetime import timezone

        when = cert.not_valid_after.replace(tzinfo=timezone.utc)
    return when.isoformat()
