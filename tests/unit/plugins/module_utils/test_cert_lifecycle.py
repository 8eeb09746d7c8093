"""Renewal decisions, CSRs, chain choice and file handling (the ACME exchange itself is tested against Pebble)."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.keyops.runbooks.plugins.module_utils import cert_lifecycle as lifecycle
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
KEY = ec.generate_private_key(ec.SECP256R1())


def cert(
    not_before: dt.datetime,
    not_after: dt.datetime,
    names=("www.unit.test",),
    issuer_cn="Unit CA",
    subject_cn="www.unit.test",
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), False)
        .sign(KEY, hashes.SHA256())
    )


def target(**overrides) -> lifecycle.CertTarget:
    values = {
        "name": "www",
        "cert_path": "/nonexistent/www.crt",
        "key_path": "/nonexistent/www.key",
        "names": ["www.unit.test"],
    }
    values.update(overrides)
    return lifecycle.CertTarget(**values)


RULES = lifecycle.RenewalRules(as_of=NOW, window_days=30, lifetime_fraction=2 / 3)


@pytest.mark.parametrize(
    ("case", "certificate", "unreadable", "overrides", "reason"),
    [
        ("fresh", cert(NOW - 10 * DAY, NOW + 80 * DAY), None, {}, None),
        ("missing", None, None, {}, "missing"),
        ("unreadable", None, "not a PEM, DER or PKCS#12 certificate file", {}, "unreadable"),
        ("expired", cert(NOW - 100 * DAY, NOW - DAY), None, {}, "expired"),
        ("expiring", cert(NOW - 10 * DAY, NOW + 29 * DAY), None, {}, "expiring"),
        ("window-edge", cert(NOW - 10 * DAY, NOW + 30 * DAY), None, {}, None),
        ("two-thirds", cert(NOW - 400 * DAY, NOW + 199 * DAY), None, {}, "lifetime"),
        ("under-two-thirds", cert(NOW - 390 * DAY, NOW + 210 * DAY), None, {}, None),
        (
            "names-changed",
            cert(NOW - 10 * DAY, NOW + 80 * DAY),
            None,
            {"names": ["www.unit.test", "new.unit.test"]},
            "names_changed",
        ),
        ("forced", cert(NOW - 10 * DAY, NOW + 80 * DAY), None, {"force": True}, "forced"),
    ],
)
def test_renewal_reason(case, certificate, unreadable, overrides, reason):
    assert lifecycle.renewal_reason(target(**overrides), certificate, unreadable, RULES) == reason


def test_csr_carries_every_name_and_ip():
    csr = x509.load_pem_x509_csr(lifecycle.make_csr(KEY, ["a.unit.test", "127.0.0.1", "b.unit.test"]))
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(item.value) for item in names] == ["a.unit.test", "127.0.0.1", "b.unit.test"]
    assert csr.is_signature_valid


@pytest.mark.parametrize("key_type", lifecycle.KEY_TYPES[:2])
def test_new_key_every_time(key_type):
    first, second = lifecycle.new_private_key(key_type), lifecycle.new_private_key(key_type)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    assert first.public_key().public_bytes(serialization.Encoding.DER, public) != second.public_key().public_bytes(
        serialization.Encoding.DER, public
    )


def _chain_pem(*certs: x509.Certificate) -> str:
    return b"".join(item.public_bytes(serialization.Encoding.PEM) for item in certs).decode()


@pytest.mark.parametrize(("preferred", "expected"), [(None, 0), ("Root B", 1), ("Root Z", 0)])
def test_pick_chain(preferred, expected):
    leaf = cert(NOW, NOW + DAY)
    chains = [
        _chain_pem(leaf, cert(NOW, NOW + DAY, issuer_cn=f"Root {name}", subject_cn="Issuing")) for name in ("A", "B")
    ]
    assert lifecycle.pick_chain(chains[0], chains[1:], preferred) == chains[expected]


def test_install_keeps_mode_of_certificates_and_locks_keys(tmp_path):
    cert_path, key_path = tmp_path / "www.crt", tmp_path / "www.key"
    cert_path.write_bytes(b"old")
    os.chmod(cert_path, 0o640)
    key_path.write_bytes(b"old")
    os.chmod(key_path, 0o644)
    lifecycle._install(str(cert_path), b"new", secret=False)
    lifecycle._install(str(key_path), b"new", secret=True)
    lifecycle._install(str(tmp_path / "fresh.crt"), b"new", secret=False)
    assert stat.S_IMODE(os.stat(cert_path).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "fresh.crt").st_mode) == 0o644
    assert cert_path.read_bytes() == b"new"


def test_backup_is_owner_only(tmp_path):
    path = tmp_path / "www.key"
    path.write_bytes(b"old key")
    saved = lifecycle._backup(str(path), "20261203T120000Z")
    assert saved == f"{path}.20261203T120000Z.bak"
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600 and Path(saved).read_bytes() == b"old key"
    assert lifecycle._backup(str(tmp_path / "none"), "x") is None


def test_preflight_refuses_before_ordering(tmp_path):
    with pytest.raises(InvalidInput) as refused:
        lifecycle.preflight(target(cert_path=str(tmp_path / "missing" / "www.crt"), key_path=str(tmp_path / "k")))
    assert "cert_path" in refused.value.message and "Create" in refused.value.message
