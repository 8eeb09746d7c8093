"""x509 scanning: formats, malformed inputs (each one a per-source error), time rules, names, chains, endpoints."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtensionOID, NameOID

from ansible_collections.keyops.runbooks.plugins.module_utils import x509 as scan_x509

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)
P12_PASSWORD = "p12-unit-secret"


# ---------------------------------------------------------------------------------------------------------------
# A small CA made once per module


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_cert(
    common_name: str,
    key,
    issuer_key=None,
    issuer_name: str | None = None,
    not_before=NOW - 10 * DAY,
    not_after=NOW + 80 * DAY,
    sans: list[str] | None = None,
    ca: bool = False,
    extra=None,
):
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(issuer_name or common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in sans]), False)
    if extra is not None:
        builder = builder.add_extension(extra, critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def legacy_signed(cert: x509.Certificate, key: rsa.RSAPrivateKey, digest: str) -> x509.Certificate:
    """Re-sign a SHA-256/RSA certificate with SHA-1 or MD5 (cryptography refuses to issue those itself)."""
    sha256_oid = bytes.fromhex("2a864886f70d01010b")
    legacy_oid = bytes.fromhex({"sha1": "2a864886f70d010105", "md5": "2a864886f70d010104"}[digest])
    tbs = cert.tbs_certificate_bytes.replace(sha256_oid, legacy_oid)
    signature = key.sign(tbs, padding.PKCS1v15(), {"sha1": hashes.SHA1(), "md5": hashes.MD5()}[digest])
    algorithm = _tlv(0x30, _tlv(0x06, legacy_oid) + b"\x05\x00")
    return x509.load_der_x509_certificate(_tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature)))


@pytest.fixture(scope="module")
def pki():
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = make_cert("Unit Root", root_key, ca=True, not_after=NOW + 3650 * DAY)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = make_cert("Unit Issuing", inter_key, root_key, "Unit Root", ca=True, not_after=NOW + 1000 * DAY)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = make_cert("www.unit.test", leaf_key, inter_key, "Unit Issuing", sans=["www.unit.test", "*.apps.unit.test"])
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_root = make_cert("Other Root", other_key, ca=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "root": root,
        "root_key": root_key,
        "inter": inter,
        "inter_key": inter_key,
        "leaf": leaf,
        "leaf_key": leaf_key,
        "other_root": other_root,
        "rsa_key": rsa_key,
    }


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def options(pki=None, **overrides) -> scan_x509.ScanOptions:
    values = {"as_of": NOW, "anchors": [pki["root"]] if pki else [], "pkcs12_passwords": [P12_PASSWORD]}
    values.update(overrides)
    return scan_x509.ScanOptions(**values)


def run_files(paths: list[Path], opts: scan_x509.ScanOptions) -> scan_x509.ScanResult:
    return scan_x509.scan([str(path) for path in paths], [], opts, workers=4)


# ---------------------------------------------------------------------------------------------------------------
# Formats


def test_pem_blocks_anywhere_among_text_are_all_found(tmp_path, pki):
    path = tmp_path / "bundle.pem"
    path.write_bytes(
        b"subject=CN=www\nissuer=...\n"
        + pem(pki["leaf"])
        + b"\n# the CA\n junk -----\n"
        + pki["leaf_key"].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + b"text"
        + pem(pki["inter"], pki["root"])
        + b"trailer"
    )
    result = run_files([path], options(pki))
    assert result.errors == []
    assert [record.extra["source"]["block"] for record in result.records] == [0, 1, 2]
    assert [record.extra["subject"] for record in result.records] == [
        "CN=www.unit.test",
        "CN=Unit Issuing",
        "CN=Unit Root",
    ]
    assert result.records[2].extra["self_signed"] is True
    assert result.records[0].extra["self_signed"] is False


def test_der_and_pkcs12_and_trusted_certificate(tmp_path, pki):
    der = tmp_path / "leaf.der"
    der.write_bytes(pki["leaf"].public_bytes(serialization.Encoding.DER))
    p12 = tmp_path / "client.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"client",
            pki["leaf_key"],
            pki["leaf"],
            [pki["inter"]],
            serialization.BestAvailableEncryption(P12_PASSWORD.encode()),
        )
    )
    trusted = tmp_path / "trusted.pem"
    body = pki["root"].public_bytes(serialization.Encoding.DER) + _tlv(0x30, _tlv(0x30, _tlv(0x06, b"\x2b\x06")))
    import base64

    trusted.write_bytes(
        b"-----BEGIN TRUSTED CERTIFICATE-----\n" + base64.encodebytes(body) + b"-----END TRUSTED CERTIFICATE-----\n"
    )
    result = run_files([der, p12, trusted], options(pki))
    assert result.errors == []
    formats = [(record.extra["source"]["format"], record.extra["subject"]) for record in result.records]
    assert formats == [
        ("der", "CN=www.unit.test"),
        ("pkcs12", "CN=www.unit.test"),
        ("pkcs12", "CN=Unit Issuing"),
        ("pem", "CN=Unit Root"),
    ]
    fingerprint = pki["leaf"].fingerprint(hashes.SHA256()).hex()
    assert result.records[0].id == f"sha256:{fingerprint}"
    assert result.records[0].extra["fingerprint_sha256"] == fingerprint


def test_records_never_carry_key_material(tmp_path, pki):
    path = tmp_path / "pair.pem"
    key_pem = pki["leaf_key"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(key_pem + pem(pki["leaf"]))
    result = run_files([path], options(pki))
    text = repr([record.to_dict() for record in result.records])
    assert "PRIVATE KEY" not in text and len(result.records) == 1


# ---------------------------------------------------------------------------------------------------------------
# Malformed inputs: each is an error for its own source, and the good certificate beside it is still reported


def _bad_pem_base64(pki) -> bytes:
    return pem(pki["leaf"]) + b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n"


def _bad_pem_der(pki) -> bytes:
    return pem(pki["leaf"]) + b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n"


def _truncated_pem(pki) -> bytes:
    body = pem(pki["inter"]).decode().splitlines()
    return pem(pki["leaf"]) + ("\n".join(body[:3] + body[-1:]) + "\n").encode()


def _p12(pki, password: bytes) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"x", pki["leaf_key"], pki["leaf"], None, serialization.BestAvailableEncryption(password)
    )


MALFORMED = [
    # id, file name, content builder, good certificates still expected in that same file, error block
    ("pem-bad-base64", "mixed.pem", _bad_pem_base64, 1, 1),
    ("pem-garbage-der", "mixed.pem", _bad_pem_der, 1, 1),
    ("pem-truncated-block", "mixed.pem", _truncated_pem, 1, 1),
    ("der-truncated", "cut.der", lambda pki: pki["leaf"].public_bytes(serialization.Encoding.DER)[:100], 0, None),
    ("random-bytes", "noise.crt", lambda pki: os.urandom(64) + b"\x00", 0, None),
    ("empty-file", "empty.cer", lambda pki: b"", 0, None),
    ("text-not-certificate", "notes.pem", lambda pki: b"-----BEGIN CERTIFICATE-----\nno end marker", 0, None),
    ("pkcs12-wrong-password", "other.p12", lambda pki: _p12(pki, b"another password"), 0, None),
    ("pkcs12-truncated", "cut.pfx", lambda pki: _p12(pki, P12_PASSWORD.encode())[:200], 0, None),
]


@pytest.mark.parametrize(
    ("case", "file_name", "build", "good_in_file", "block"), MALFORMED, ids=[row[0] for row in MALFORMED]
)
def test_malformed_input_is_an_error_of_its_source_only(tmp_path, pki, case, file_name, build, good_in_file, block):
    good = tmp_path / "good.pem"
    good.write_bytes(pem(pki["root"]))
    bad = tmp_path / file_name
    bad.write_bytes(build(pki))
    result = run_files([bad, good], options(pki))

    # An unterminated block is a certificate file cut short: its own error, and the neighbour is intact.
    assert [(error.source, error.block) for error in result.errors] == [(str(bad), block)], result.errors
    assert result.errors[0].message and "Traceback" not in result.errors[0].message
    if case == "text-not-certificate":
        assert "no END line" in result.errors[0].message
    from_bad = [record for record in result.records if record.extra["source"]["path"] == str(bad)]
    from_good = [record for record in result.records if record.extra["source"]["path"] == str(good)]
    assert len(from_bad) == good_in_file
    assert [record.extra["subject"] for record in from_good] == ["CN=Unit Root"]


def test_unparseable_extension_keeps_the_record_and_reports_the_error(tmp_path, pki):
    broken_san = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x05\x82\x09ab")
    cert = make_cert("odd.unit.test", pki["leaf_key"], pki["inter_key"], "Unit Issuing", extra=broken_san)
    path = tmp_path / "odd.pem"
    path.write_bytes(pem(cert, pki["inter"]))
    result = run_files([path], options(pki))
    assert [record.extra["subject"] for record in result.records] == ["CN=odd.unit.test", "CN=Unit Issuing"]
    odd = result.records[0]
    assert odd.extra["sans"] is None
    assert odd.extra["not_after"] == scan_x509.iso_utc(NOW + 80 * DAY)
    assert "unreadable_field" in [item["code"] for item in odd.findings]
    assert [(error.source, error.block) for error in result.errors] == [(str(path), 0)]


def test_oversized_and_missing_files_are_errors(tmp_path, pki):
    big = tmp_path / "big.pem"
    big.write_bytes(pem(pki["root"]) * 10)
    good = tmp_path / "good.pem"
    good.write_bytes(pem(pki["root"]))
    result = scan_x509.scan(
        [str(big), str(tmp_path / "gone.pem"), str(good)], [], options(pki), max_file_bytes=len(pem(pki["root"])) + 1
    )
    assert [error.source for error in result.errors] == [str(big), str(tmp_path / "gone.pem")]
    assert "max_file_bytes" in result.errors[0].message
    assert len(result.records) == 1


# ---------------------------------------------------------------------------------------------------------------
# Discovery


def test_discovery_recurses_with_include_and_exclude(tmp_path, pki):
    for relative in ("a/one.pem", "a/b/two.crt", "a/b/skip.txt", "a/archive/old.pem", "three.der"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pem(pki["root"]))
    files, errors = scan_x509.discover_files([str(tmp_path)], scan_x509.DEFAULT_INCLUDE, ["*/archive"], True)
    assert errors == []
    assert sorted(os.path.relpath(path, tmp_path) for path in files) == ["a/b/two.crt", "a/one.pem", "three.der"]
    flat, _unused = scan_x509.discover_files([str(tmp_path)], ["*.pem", "*.der"], [], False)
    assert [os.path.relpath(path, tmp_path) for path in flat] == ["three.der"]
    named, _unused = scan_x509.discover_files([str(tmp_path / "a/b/skip.txt")], ["*.pem"], [], True)
    assert named == [str(tmp_path / "a/b/skip.txt")]
    _unused, missing = scan_x509.discover_files([str(tmp_path / "nope")], ["*"], [], True)
    assert missing[0].message == "no such file or directory"


# ---------------------------------------------------------------------------------------------------------------
# Time: UTC only, not-after inclusive


@pytest.mark.parametrize(
    ("as_of", "expired", "days_left", "codes"),
    [
        (NOW + 80 * DAY, False, 0, ["cert_expiring"]),
        (NOW + 80 * DAY + dt.timedelta(seconds=1), True, -1, ["cert_expired"]),
        (NOW + 50 * DAY + dt.timedelta(seconds=1), False, 29, ["cert_expiring"]),
        (NOW + 50 * DAY, False, 30, []),
        (NOW - 11 * DAY, False, 91, ["not_yet_valid"]),
    ],
    ids=["at-not-after", "one-second-after", "just-inside-window", "window-edge", "before-not-before"],
)
def test_validity_edges(tmp_path, pki, as_of, expired, days_left, codes):
    path = tmp_path / "leaf.pem"
    path.write_bytes(pem(pki["leaf"]))
    record = run_files([path], options(pki, as_of=as_of, window_days=30)).records[0]
    assert record.state == ("expired" if expired else "enabled")
    assert record.extra["days_left"] == days_left
    assert [item["code"] for item in record.findings] == codes


def _scan_under_tz(zone: str, path: Path, pki) -> list[dict]:
    previous = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        moment = scan_x509.as_of_time("2026-12-03T12:00:00")  # no zone given: read as UTC, never local
        result = run_files([path], options(pki, as_of=moment))
        return [record.to_dict() for record in result.records]
    finally:
        if previous is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = previous
        time.tzset()


def test_result_is_identical_under_two_time_zones(tmp_path, pki):
    path = tmp_path / "chain.pem"
    path.write_bytes(pem(pki["leaf"], pki["inter"], pki["root"]))
    east = _scan_under_tz("Pacific/Kiritimati", path, pki)
    west = _scan_under_tz("America/Los_Angeles", path, pki)
    assert east == west
    assert east[0]["not_after"].endswith("Z") and east[0]["days_left"] == 80


# ---------------------------------------------------------------------------------------------------------------
# Keys, signatures, names


def test_weak_keys_follow_policy(tmp_path, pki):
    rsa2048_leaf = make_cert("rsa.unit.test", pki["rsa_key"], pki["inter_key"], "Unit Issuing", sans=["rsa.unit.test"])
    rsa2048_ca = make_cert("RSA CA", pki["rsa_key"], pki["root_key"], "Unit Root", ca=True)
    path = tmp_path / "rsa.pem"
    path.write_bytes(pem(rsa2048_leaf, rsa2048_ca))
    default = run_files([path], options(pki)).records
    assert [record.length_bits for record in default] == [2048, 2048]
    assert ["key_too_short" in [item["code"] for item in record.findings] for record in default] == [False, True]
    strict = run_files([path], options(pki, policy={"min_rsa_bits_tls": 3072})).records
    assert "key_too_short" in [item["code"] for item in strict[0].findings]


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_legacy_signatures_are_found(tmp_path, pki, digest):
    modern = make_cert("old.unit.test", pki["leaf_key"], pki["rsa_key"], "Legacy RSA CA", sans=["old.unit.test"])
    legacy = legacy_signed(modern, pki["rsa_key"], digest)
    path = tmp_path / "legacy.pem"
    path.write_bytes(pem(legacy))
    record = run_files([path], options(pki)).records[0]
    assert record.extra["signature_hash"] == digest
    weak = [item for item in record.findings if item["code"] == "weak_signature"]
    assert weak and weak[0]["severity"] == "high"


@pytest.mark.parametrize(
    ("sans", "common_names", "name", "covered"),
    [
        (["DNS:www.unit.test"], [], "www.unit.test", True),
        (["DNS:www.unit.test"], [], "WWW.Unit.Test.", True),
        (["DNS:*.apps.unit.test"], [], "a.apps.unit.test", True),
        (["DNS:*.apps.unit.test"], [], "a.b.apps.unit.test", False),
        (["DNS:*.apps.unit.test"], [], "apps.unit.test", False),
        (["DNS:www.unit.test"], ["other.unit.test"], "other.unit.test", False),
        ([], ["legacy.unit.test"], "legacy.unit.test", True),
        (["IP:127.0.0.1"], [], "127.0.0.1", True),
        (["DNS:127.0.0.1"], [], "127.0.0.1", False),
    ],
)
def test_name_coverage(sans, common_names, name, covered):
    assert scan_x509.covers_name(sans, common_names, name) is covered


# ---------------------------------------------------------------------------------------------------------------
# Chains


@pytest.mark.parametrize(
    ("served", "anchors", "in_order", "complete", "verified"),
    [
        (["leaf", "inter"], ["root"], True, True, True),
        (["leaf", "inter", "root"], ["root"], True, True, True),
        (["leaf"], ["root"], True, False, False),
        (["leaf", "root", "inter"], ["root"], False, True, True),
        (["leaf", "inter"], ["other_root"], True, False, False),
        (["leaf", "inter", "root"], ["other_root"], True, True, False),
        (["leaf", "inter"], [], True, False, None),
        (["root"], ["root"], True, True, True),
    ],
    ids=[
        "served-inter",
        "served-root-too",
        "missing-inter",
        "out-of-order",
        "other-ca",
        "self-signed-untrusted",
        "no-bundle",
        "anchor-itself",
    ],
)
def test_chain_checks(pki, served, anchors, in_order, complete, verified):
    check = scan_x509.check_chain([pki[name] for name in served], [pki[name] for name in anchors])
    assert (check.in_order, check.complete, check.verified) == (in_order, complete, verified)


# ---------------------------------------------------------------------------------------------------------------
# Endpoints: dead, not TLS, silent — each an error of its own; a fake fetch stands in for a served chain


def _listener(behaviour: str) -> tuple[socket.socket, threading.Thread]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        try:
            while True:
                conn, _unused = server.accept()
                if behaviour == "garbage":
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n" * 4)
                    conn.close()
                else:
                    time.sleep(3)  # never answers the ClientHello
                    conn.close()
        except OSError:
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize(
    ("behaviour", "expected"), [("refused", "refused"), ("garbage", "TLS handshake failed"), ("silent", "timed out")]
)
def test_dead_or_wrong_endpoints_are_errors_of_their_own(pki, behaviour, expected):
    if behaviour == "refused":
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        server = None
    else:
        server, _thread = _listener(behaviour)
        port = server.getsockname()[1]
    try:
        endpoints = [scan_x509.Endpoint("127.0.0.1", port, "x.unit.test", timeout=0.5)]
        result = scan_x509.scan([], endpoints, options(pki))
    finally:
        if server:
            server.close()
    assert result.records == []
    assert len(result.errors) == 1 and expected in result.errors[0].message
    assert result.errors[0].kind == "endpoint"


def test_endpoint_records_carry_served_order_and_name_check(pki):
    def fetch(endpoint: scan_x509.Endpoint) -> list:
        if endpoint.server_name == "boom.unit.test":
            raise ConnectionResetError("reset")
        return [pki["leaf"], pki["inter"]]

    endpoints = [
        scan_x509.Endpoint("127.0.0.1", 443, "www.unit.test"),
        scan_x509.Endpoint("127.0.0.1", 443, "boom.unit.test"),
        scan_x509.Endpoint("127.0.0.1", 443, "mail.unit.test"),
    ]
    result = scan_x509.scan([], endpoints, options(pki), fetch=fetch)
    assert len(result.errors) == 1 and result.errors[0].source == "127.0.0.1:443 (SNI boom.unit.test)"
    leaves = [record for record in result.records if record.extra["source"]["position"] == 0]
    assert [record.extra["name_matches"] for record in leaves] == [True, False]
    assert "name_mismatch" in [item["code"] for item in leaves[1].findings]
    assert leaves[0].extra["chain_verified"] is True and leaves[0].extra["source"]["served_chain"] == [
        pki["leaf"].fingerprint(hashes.SHA256()).hex(),
        pki["inter"].fingerprint(hashes.SHA256()).hex(),
    ]
