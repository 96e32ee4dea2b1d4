"""Secure Boot state from efivars files, and enrolled certificates from real MOK lists.

Certificates are made with ``openssl req -x509``; signature lists with sbsigntool's real
``sbsiglist`` (both through :mod:`devtools.trust`); both are written into root trees the way
efivarfs and the MOK config table present them.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.hostbuilder import HostTree
from devtools.trust import ATTRS, MOKVARS, OWNER, RT_ATTRS, KeyPair, efivar, make_cert, siglist
from kzguard.base.errors import FactError
from kzguard.facts.secureboot import (
    EFI_CERT_SHA256_GUID,
    EFI_CERT_X509_GUID,
    EFI_GLOBAL_GUID,
    SHIM_LOCK_GUID,
    Certificate,
    SecureBootState,
    enrolled_certificates,
    load_certificates,
    parse_signature_lists,
    secure_boot_state,
)
from kzguard.root import Root
from tests.tools import need, run

DISTRO_OWNER = "77fa9abd-0359-4d32-bd60-28f4e78f784b"


def openssl_facts(cert: Path) -> dict[str, str]:
    """Subject, serial and SHA-256 fingerprint as ``openssl x509`` prints them (the oracle)."""
    out = run(
        "openssl", "x509", "-in", cert, "-noout", "-subject", "-serial", "-fingerprint",
        "-sha256", "-nameopt", "RFC2253",
    ).stdout  # fmt: skip
    facts = dict(line.split("=", 1) for line in out.splitlines())
    return {
        "subject": facts["subject"],
        "serial": facts["serial"],
        "sha256": facts["sha256 Fingerprint"].replace(":", "").lower(),
    }


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    need("openssl")
    dest = tmp_path_factory.mktemp("pki")
    return {
        "dkms": make_cert(dest, "dkms", subject="/CN=DKMS module signing key"),
        "mok": make_cert(dest, "mok", subject="/CN=kzguard MOK/O=kzguard, lab/OU=ops\\+infra"),
        "distro": make_cert(dest, "distro", kind="ec"),
    }


@pytest.fixture(scope="module")
def mok_data(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, KeyPair]) -> bytes:
    """Two X.509 lists and a SHA-256 list, concatenated the way shim mirrors MokList."""
    need("sbsiglist")
    dest = tmp_path_factory.mktemp("esl")
    digest = dest / "image.sha256"
    digest.write_bytes(bytes(range(32)))
    return (
        siglist(dest, "x509", certs["dkms"].der)
        + siglist(dest, "sha256", digest)
        + siglist(dest, "x509", certs["mok"].der, owner=DISTRO_OWNER)
    )


# --- Secure Boot state -----------------------------------------------------------------------


def _state(tmp_path: Path, variables: dict[str, bytes], *, efi: bool = True) -> SecureBootState:
    tree = HostTree(tmp_path / "root")
    if efi:
        tree.host("/sys/firmware/efi").mkdir(parents=True)
    for inner, data in variables.items():
        tree.write(inner, data)
    return secure_boot_state(Root(tree.path))


def test_bios_host_has_no_efi_and_no_problems(tmp_path: Path) -> None:
    state = _state(tmp_path, {}, efi=False)

    assert state == SecureBootState(efi=False)
    assert not state.enforcing
    assert state.to_dict() == {
        "efi": False, "secure_boot": None, "setup_mode": None, "mok_validation": None,
        "enforcing": False, "problems": [],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("variables", "expected", "enforcing"),
    [
        ({"SecureBoot": b"\x01", "SetupMode": b"\x00"}, (True, False, None), True),
        ({"SecureBoot": b"\x00", "SetupMode": b"\x01"}, (False, True, None), False),
        ({"SecureBoot": b"\x01", "MokSBStateRT": b"\x01"}, (True, None, False), False),
        ({"SecureBoot": b"\x01", "MokSBStateRT": b"\x00"}, (True, None, True), True),
        ({}, (None, None, None), False),  # EFI without the variables (efivarfs not mounted)
    ],
)
def test_secure_boot_variables_from_efivars(
    tmp_path: Path, variables: dict[str, bytes], expected: tuple, enforcing: bool
) -> None:
    files = {
        efivar(name, SHIM_LOCK_GUID if name.startswith("Mok") else EFI_GLOBAL_GUID): ATTRS + value
        for name, value in variables.items()
    }
    state = _state(tmp_path, files)

    assert state.efi
    assert (state.secure_boot, state.setup_mode, state.mok_validation) == expected
    assert state.enforcing is enforcing
    assert state.problems == ()


def test_shim_state_from_the_mok_config_table(tmp_path: Path) -> None:
    """``mok-variables`` holds the bare value and wins over efivarfs, as in the kernel."""
    state = _state(
        tmp_path,
        {
            efivar("SecureBoot", EFI_GLOBAL_GUID): ATTRS + b"\x01",
            f"{MOKVARS}/MokSBStateRT": b"\x01",
            efivar("MokSBStateRT", SHIM_LOCK_GUID): RT_ATTRS + b"\x00",
        },
    )

    assert state.mok_validation is False
    assert not state.enforcing
    assert json.loads(json.dumps(state.to_dict()))["mok_validation"] is False


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x07\x00", "SecureBoot: truncated EFI variable (2 bytes, no attributes)"),
        (ATTRS, "SecureBoot: truncated EFI variable (no value byte)"),
        (ATTRS + b"\x05", "SecureBoot: unexpected value 5 (expected 0 or 1)"),
    ],
)
def test_a_broken_variable_is_a_problem_not_a_crash(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    state = _state(
        tmp_path,
        {
            efivar("SecureBoot", EFI_GLOBAL_GUID): content,
            efivar("SetupMode", EFI_GLOBAL_GUID): ATTRS + b"\x00",
        },
    )

    assert state.secure_boot is None
    assert state.setup_mode is False
    assert state.problems == (problem,)
    assert not state.enforcing


# --- certificates ----------------------------------------------------------------------------


@pytest.mark.real
def test_certificate_fields_match_openssl(certs: dict[str, KeyPair]) -> None:
    for pair in certs.values():
        cert = Certificate.from_der(pair.der.read_bytes(), str(pair.der))
        oracle = openssl_facts(pair.pem)

        assert cert.subject == oracle["subject"] == cert.issuer
        assert cert.serial == int(oracle["serial"], 16)
        assert cert.sha256 == oracle["sha256"]
        assert cert.not_after.endswith("+00:00")
    mok = Certificate.from_der(certs["mok"].der.read_bytes(), "x")
    assert mok.subject == r"OU=ops\+infra,O=kzguard\, lab,CN=kzguard MOK"


@pytest.mark.real
def test_certificate_keeps_der_out_of_repr_equality_and_json(certs: dict[str, KeyPair]) -> None:
    der = certs["dkms"].der.read_bytes()
    cert = Certificate.from_der(der, "MokListRT")

    assert cert.der == der
    assert "der" not in repr(cert) and "MokListRT" in repr(cert)
    assert cert == cert._replace(der=b"")
    assert hash(cert) == hash(cert._replace(der=b""))
    as_json = json.loads(json.dumps(cert.to_dict()))
    assert set(as_json) == {"subject", "issuer", "serial", "sha256", "source", "not_after"}


@pytest.mark.real
def test_pem_bundle_and_der_files(tmp_path: Path, certs: dict[str, KeyPair]) -> None:
    bundle = b"# distro keys\n" + certs["dkms"].pem.read_bytes() + certs["distro"].pem.read_bytes()
    found = load_certificates(bundle, "/etc/kzguard/keys.pem")

    assert [c.subject for c in found] == ["CN=DKMS module signing key", *_subjects(certs, "distro")]
    assert load_certificates(certs["mok"].der.read_bytes(), "mok.der")[0].source == "mok.der"
    with pytest.raises(FactError, match="no CERTIFICATE block"):
        load_certificates(certs["dkms"].key.read_bytes(), "key.pem")
    with pytest.raises(FactError, match=r"not a valid X\.509 certificate"):
        load_certificates(b"\x30\x03\x02\x01\x00", "junk.der")


def _subjects(certs: dict[str, KeyPair], *names: str) -> list[str]:
    return [Certificate.from_der(certs[n].der.read_bytes(), "").subject for n in names]


# --- real MOK lists --------------------------------------------------------------------------


@pytest.mark.real
def test_sbsiglist_output_parses_into_its_entries(
    mok_data: bytes, certs: dict[str, KeyPair]
) -> None:
    entries = parse_signature_lists(mok_data)

    assert [(e.type, e.owner) for e in entries] == [
        (EFI_CERT_X509_GUID, OWNER),
        (EFI_CERT_SHA256_GUID, OWNER),
        (EFI_CERT_X509_GUID, DISTRO_OWNER),
    ]
    assert entries[0].data == certs["dkms"].der.read_bytes()
    assert entries[1].data == bytes(range(32))
    assert [e.is_x509 for e in entries] == [True, False, True]
    assert "bytes>" in repr(entries[0])


@pytest.mark.real
@pytest.mark.parametrize("where", ["efivars", "mok-variables"])
def test_enrolled_certificates_are_exactly_the_x509_entries(
    tmp_path: Path, mok_data: bytes, certs: dict[str, KeyPair], where: str
) -> None:
    tree = HostTree(tmp_path)
    if where == "efivars":
        tree.write(efivar("MokListRT", SHIM_LOCK_GUID), RT_ATTRS + mok_data)
    else:
        tree.write(f"{MOKVARS}/MokListRT", mok_data)

    found, problems = enrolled_certificates(Root(tmp_path))

    assert problems == []
    assert [c.subject for c in found] == _subjects(certs, "dkms", "mok")
    assert {c.source for c in found} == {"MokListRT"}
    assert [c.der for c in found] == [certs[n].der.read_bytes() for n in ("dkms", "mok")]


@pytest.mark.real
def test_split_mok_list_and_extra_certificate_files(
    tmp_path: Path, certs: dict[str, KeyPair]
) -> None:
    """Newer shims split a big list into MokListRT, MokListRT1, ...: each a whole list."""
    need("sbsiglist")
    tree = HostTree(tmp_path)
    tree.write(
        efivar("MokListRT", SHIM_LOCK_GUID), RT_ATTRS + siglist(tmp_path, "x509", certs["dkms"].der)
    )
    tree.write(
        efivar("MokListRT1", SHIM_LOCK_GUID), RT_ATTRS + siglist(tmp_path, "x509", certs["mok"].der)
    )
    tree.write(efivar("MokListRT3", SHIM_LOCK_GUID), b"ignored: MokListRT2 is missing")
    tree.write("/etc/kzguard/distro.pem", certs["distro"].pem.read_bytes())
    tree.write("/var/lib/dkms/mok.pub", certs["dkms"].der.read_bytes())  # a duplicate

    found, problems = enrolled_certificates(
        Root(tmp_path), ["/etc/kzguard/distro.pem", "/var/lib/dkms/mok.pub"]
    )

    assert problems == []
    assert [(c.subject, c.source) for c in found] == [
        (_subjects(certs, "dkms")[0], "MokListRT"),
        (_subjects(certs, "mok")[0], "MokListRT1"),
        (_subjects(certs, "distro")[0], "/etc/kzguard/distro.pem"),
    ]


@pytest.mark.real
def test_garbage_lists_entries_and_files_are_problems(
    tmp_path: Path, mok_data: bytes, certs: dict[str, KeyPair]
) -> None:
    tree = HostTree(tmp_path)
    junk_cert = tmp_path / "junk.der"
    junk_cert.write_bytes(b"\x30\x82\x01\x00" + bytes(40))
    tree.write(
        efivar("MokListRT", SHIM_LOCK_GUID),
        RT_ATTRS
        + siglist(tmp_path, "x509", junk_cert)
        + siglist(tmp_path, "x509", certs["mok"].der),
    )
    tree.write(efivar("MokListRT1", SHIM_LOCK_GUID), RT_ATTRS + mok_data[:-7])
    tree.write("/etc/kzguard/notes.txt", "not a certificate\n")

    found, problems = enrolled_certificates(
        Root(tmp_path), ["/etc/kzguard/missing.pem", "/etc/kzguard/notes.txt"]
    )

    assert [c.subject for c in found] == _subjects(certs, "mok")
    assert problems[0].startswith("MokListRT: X.509 entry 0: not a valid X.509 certificate")
    assert problems[1].startswith("MokListRT1: signature list 2 at offset ")
    assert "runs past the end of the data" in problems[1]
    assert problems[2] == "cannot read /etc/kzguard/missing.pem: No such file or directory"
    assert problems[3].startswith("/etc/kzguard/notes.txt: not a valid X.509 certificate")
    assert len(problems) == 4


def test_no_mok_list_means_no_certificates(tmp_path: Path) -> None:
    tree = HostTree(tmp_path)
    tree.write(efivar("MokListRT", SHIM_LOCK_GUID), b"\x06\x00")

    assert enrolled_certificates(Root(tmp_path / "nothing")) == ([], [])
    assert enrolled_certificates(Root(tmp_path)) == (
        [],
        ["MokListRT: truncated EFI variable (2 bytes, no attributes)"],
    )


# --- EFI_SIGNATURE_LIST parsing --------------------------------------------------------------


def _guid_bytes(guid: str) -> bytes:
    import uuid

    return uuid.UUID(guid).bytes_le


def build_list(sig_type: str, entries: list[tuple[str, bytes]], header: bytes = b"") -> bytes:
    """An EFI_SIGNATURE_LIST from ``(owner, data)`` pairs of equal size (the test's own writer)."""
    size = 16 + (len(entries[0][1]) if entries else 0)
    body = b"".join(_guid_bytes(owner) + data for owner, data in entries)
    return (
        _guid_bytes(sig_type)
        + struct.pack("<III", 28 + len(header) + len(body), len(header), size)
        + header
        + body
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes(27), "signature list 0 at offset 0: truncated header (27 bytes left)"),
        (
            bytes(16) + struct.pack("<III", 100, 0, 48) + bytes(20),
            "SignatureListSize 100 runs past the end of the data (48 bytes left)",
        ),
        (
            bytes(16) + struct.pack("<III", 28, 4, 16),
            "SignatureListSize 28 is smaller than its header (28 + SignatureHeaderSize 4)",
        ),
        (bytes(16) + struct.pack("<III", 44, 0, 0) + bytes(16), "SignatureSize 0 cannot hold"),
        (
            bytes(16) + struct.pack("<III", 60, 0, 20) + bytes(32),
            "32 bytes of signatures is not a multiple of SignatureSize 20",
        ),
        (
            build_list(EFI_CERT_SHA256_GUID, [(OWNER, bytes(32))]) + b"\x01\x02",
            "signature list 1 at offset 76: truncated header (2 bytes left)",
        ),
    ],
)
def test_length_fields_that_lie_are_fact_errors(data: bytes, message: str) -> None:
    with pytest.raises(FactError, match=re.escape(message)):
        parse_signature_lists(data)


def test_header_bytes_are_skipped_and_empty_lists_allowed() -> None:
    data = build_list(EFI_CERT_X509_GUID, [], b"hdr") + build_list(
        "c1c41626-504c-4092-aca9-41f936934328",
        [(OWNER, b"a" * 32), (DISTRO_OWNER, b"b" * 32)],
        b"xyz",
    )

    entries = parse_signature_lists(data)

    assert [(e.owner, e.data) for e in entries] == [(OWNER, b"a" * 32), (DISTRO_OWNER, b"b" * 32)]
    assert parse_signature_lists(b"") == []


_guids = st.uuids().map(str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parse_signature_lists_on_arbitrary_bytes_raises_only_fact_error(data: bytes) -> None:
    try:
        entries = parse_signature_lists(data)
    except FactError:
        return
    assert sum(16 + len(e.data) for e in entries) <= len(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            _guids,
            st.integers(min_value=0, max_value=40),
            st.binary(max_size=12),
            st.lists(_guids, max_size=4),
        ),
        max_size=4,
    ),
    st.data(),
)
def test_parse_signature_lists_round_trips(lists: list, data: st.DataObject) -> None:
    expected = []
    raw = b""
    for sig_type, size, header, owners in lists:
        entries = [(o, data.draw(st.binary(min_size=size, max_size=size))) for o in owners]
        raw += build_list(sig_type, entries, header) if entries else _empty(sig_type, size, header)
        expected += [(sig_type, owner, payload) for owner, payload in entries]

    assert [(e.type, e.owner, e.data) for e in parse_signature_lists(raw)] == expected


def _empty(sig_type: str, size: int, header: bytes) -> bytes:
    return (
        _guid_bytes(sig_type)
        + struct.pack("<III", 28 + len(header), len(header), 16 + size)
        + header
    )


# --- the import budget -----------------------------------------------------------------------


def test_importing_the_probes_loads_no_crypto_library() -> None:
    code = (
        "import sys; before = set(sys.modules);"  # the interpreter's own start-up imports
        "import kzguard.facts.secureboot, kzguard.facts.signature;"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in"
        " ('cryptography', 'asn1crypto', 'typing', 'dataclasses')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_efi_directory_behind_a_link_loop_is_unknown_not_a_crash(tmp_path: Path) -> None:
    # found by reading after tests/test_fuzz_files.py: Root.exists raised FactError (exit 3)
    HostTree(tmp_path).symlink("/sys/firmware/efi", "efi")
    state = secure_boot_state(Root(tmp_path))
    assert state.efi and state.secure_boot is None and not state.enforcing
    assert "too many levels of symbolic links" in state.problems[0]
