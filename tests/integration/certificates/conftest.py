"""Certificates area: the lab's CA as an issuer of test certificates, Pebble's addresses, openssl as the oracle."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class LabIssuer:
    """Signs leaf certificates with the lab's issuing CA, for files the tests need (expiring ones to renew)."""

    def __init__(self, state_dir: Path) -> None:
        ca = state_dir / "ca"
        self.cert = x509.load_pem_x509_certificate((ca / "intermediate-ca.pem").read_bytes())
        self.key = serialization.load_pem_private_key((ca / "intermediate-ca.key").read_bytes(), password=None)

    def leaf(self, name: str, days_before: int, days_after: int) -> tuple[bytes, bytes]:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=days_before))
            .not_valid_after(now + dt.timedelta(days=days_after))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.fixture(scope="session")
def lab_issuer(lab: dict[str, Any]) -> LabIssuer:
    return LabIssuer(Path(lab["state_dir"]))


@pytest.fixture(scope="session")
def acme(lab: dict[str, Any]) -> dict[str, str]:
    return {
        "directory": lab["KEYOPS_LAB_ACME_DIRECTORY"],
        "ca": lab["KEYOPS_LAB_ACME_CA"],
        "root": lab["KEYOPS_LAB_ACME_ROOT"],
        "management": f"https://127.0.0.1:{lab['ports']['acme_management']}",
    }


@pytest.fixture(scope="session")
def tls_endpoints(lab: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(lab["KEYOPS_LAB_TLS_ENDPOINTS"])
