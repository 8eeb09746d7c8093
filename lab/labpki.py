# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Certificates for the lab, made with `cryptography`: a lab root and intermediate CA, and leaves signed by them.

Used by `keyops_lab.py up` (the CA, Pebble's listener, the TLS endpoints) and by `seed` (certificate files).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# cryptography refuses SHA-1 signatures, so the lab's "weak" certificates are RSA-1024 signed with SHA-256.
KEY_ALGORITHMS = ("ec-p256", "ec-p384", "rsa-1024", "rsa-2048", "rsa-3072")


@dataclass
class Issuer:
    cert: x509.Certificate
    key: PrivateKey


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def new_key(algorithm: str) -> PrivateKey:
    if algorithm == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm.removeprefix("rsa-")))
    raise ValueError(f"unknown key algorithm {algorithm!r}; use one of {', '.join(KEY_ALGORITHMS)}")


def _name(common_name: str, organization: str = "KeyOps Lab") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(
    common_name: str, key: PrivateKey, issuer: Issuer | None = None, days: int = 3650, path_length: int | None = None
) -> x509.Certificate:
    """A CA certificate: self-signed when `issuer` is None, else signed by it."""
    now = utc_now()
    signer_key: CertificateIssuerPrivateKeyTypes = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    return builder.sign(signer_key, hashes.SHA256())


def make_leaf(
    common_name: str,
    key: PrivateKey,
    issuer: Issuer,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    dns_names: list[str] | None = None,
    ip_addresses: list[str] | None = None,
    client_auth: bool = False,
) -> x509.Certificate:
    """A TLS leaf certificate with SANs, signed by `issuer` with SHA-256."""
    alt_names: list[x509.GeneralName] = [x509.DNSName(name) for name in (dns_names or [common_name])]
    alt_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in (ip_addresses or [])]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [ExtendedKeyUsageOID.SERVER_AUTH]
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (created 0600, never world-readable even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certs_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def write_key(path: Path, key: PrivateKey) -> None:
    write_private(path, key_pem(key))


def write_certs(path: Path, *certs: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(certs_pem(*certs))


def load_issuer(cert_path: Path, key_path: Path) -> Issuer:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} holds neither an RSA nor an EC key")
    return Issuer(cert, key)


def describe_key(cert: x509.Certificate) -> str:
    """`rsa-2048`, `ec-secp256r1`, ... for reports and seed.json."""
    public_key = cert.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ec-{public_key.curve.name}"
    return type(public_key).__name__


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()
