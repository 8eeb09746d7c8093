"""Build a folder of files with key material (and look-alikes that are not keys) at test time.

Nothing here is committed key material: every key is generated fresh for the run.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

PASSPHRASE = b"canary-passphrase-7c1f"


def _private(key, encoding=serialization.Encoding.PEM, fmt=serialization.PrivateFormat.PKCS8, password=None):
    algorithm = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(encoding, fmt, algorithm)


def fresh_private_key_pem() -> bytes:
    """A PKCS#8 PEM private key made now (Ed25519: quick), for canaries that must look like the real thing."""
    return _private(ed25519.Ed25519PrivateKey.generate())


def write(path: str, data: bytes | str, mode: int = 0o600) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    return path


def build_key_tree(root: str, rsa_key: rsa.RSAPrivateKey | None = None) -> dict:
    """Write one file per kind of key material, plus ordinary config. Returns the expectations and the canaries."""
    rsa_key = rsa_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    aes_key = secrets.token_bytes(32)
    hex_key = secrets.token_bytes(32)
    jwk_secret = secrets.token_bytes(32)
    expected: dict[str, dict] = {}

    def expect(relative: str, data: bytes | str, mode: int = 0o600, **facts) -> None:
        write(os.path.join(root, relative), data, mode)
        expected[relative] = facts

    expect(
        "keys/rsa-unencrypted.pem",
        b"notes above the key\n" + _private(rsa_key),
        0o644,
        kind="pkcs8",
        algorithm="RSA",
        protected=False,
        codes={"world_readable_private_key", "unencrypted_private_key", "weak_algorithm"},
    )
    expect("keys/ec-encrypted.pem", _private(ec_key, password=PASSPHRASE), kind="pkcs8", protected=True, codes=set())
    expect(
        "keys/legacy-rsa.key",
        _private(rsa_key, fmt=serialization.PrivateFormat.TraditionalOpenSSL),
        kind="pem_private_key",
        algorithm="RSA",
        protected=False,
        codes={"unencrypted_private_key", "weak_algorithm"},
    )
    expect(
        "ssh/id_ed25519",
        _private(ed_key, fmt=serialization.PrivateFormat.OpenSSH),
        kind="openssh_private_key",
        algorithm="Ed25519",
        protected=False,
        codes={"unencrypted_private_key"},
    )
    expect(
        "ssh/id_ed25519_protected",
        _private(ed_key, fmt=serialization.PrivateFormat.OpenSSH, password=PASSPHRASE),
        kind="openssh_private_key",
        algorithm="Ed25519",
        protected=True,
        codes=set(),
    )
    expect(
        "keys/service.pk8",
        _private(ec_key, encoding=serialization.Encoding.DER),
        kind="pkcs8_der",
        algorithm="EC",
        protected=False,
        codes={"unencrypted_private_key"},
    )
    certificate = _self_signed(ec_key)
    expect(
        "keys/bundle.p12",
        pkcs12.serialize_key_and_certificates(
            b"svc", ec_key, certificate, None, serialization.BestAvailableEncryption(PASSPHRASE)
        ),
        kind="pkcs12",
        protected=True,
        codes=set(),
    )
    expect(
        "keys/open.p12",
        pkcs12.serialize_key_and_certificates(b"svc", ec_key, certificate, None, serialization.NoEncryption()),
        kind="pkcs12",
        algorithm="EC",
        protected=False,
        codes={"unencrypted_private_key"},
    )
    jwks = {
        "keys": [
            {"kty": "oct", "kid": "session-hmac", "k": base64.urlsafe_b64encode(jwk_secret).decode().rstrip("=")},
            {
                "kty": "EC",
                "crv": "P-256",
                "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
            },
        ]
    }
    expect(
        "web/jwks.json",
        json.dumps(jwks),
        kind="jwk",
        algorithm="oct",
        protected=False,
        codes={"hardcoded_symmetric_key"},
    )
    expect(
        "app/payments.env",
        f"# payments service\nLOG_LEVEL=info\nDATA_ENCRYPTION_KEY={base64.b64encode(aes_key).decode()}\n",
        0o640,
        kind="symmetric_key_in_config",
        algorithm="symmetric",
        codes={"hardcoded_symmetric_key"},
    )
    expect(
        "app/settings.yaml",
        f'database:\n  host: db.internal\n  master_kek: "{hex_key.hex()}"\n',
        kind="symmetric_key_in_config",
        algorithm="symmetric",
        codes={"hardcoded_symmetric_key"},
    )
    _write_jks(os.path.join(root, "java/keystore.jks"), rsa_key)
    expected["java/keystore.jks"] = {"kind": "jks", "algorithm": "RSA", "protected": True, "codes": {"weak_algorithm"}}

    # Look-alikes that are not keys: none of these may be reported.
    write(
        os.path.join(root, "ordinary/app.ini"),
        "\n".join(
            [
                f"request_id = {uuid.uuid4()}",
                f"cache_key_sha256 = {secrets.token_hex(32)}",
                f"artifact_checksum: {secrets.token_hex(32)}",
                f"build = {secrets.token_hex(20)}",
                "keyboard_layout = en-US-international-layout",
                "primary_key = customer_number_and_region_code",
                "logo_key = " + base64.b64encode(b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(600)).decode(),
                "icon: data:image/png;base64," + base64.b64encode(secrets.token_bytes(300)).decode(),
                "padding_key = " + "00" * 32,
            ]
        ),
    )
    write(os.path.join(root, "ordinary/cert.pem"), certificate.public_bytes(serialization.Encoding.PEM))
    write(
        os.path.join(root, "ordinary/public.pem"),
        ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    write(os.path.join(root, "ordinary/image.png"), b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(2048))
    canaries = [
        base64.b64encode(aes_key).decode(),
        hex_key.hex(),
        base64.urlsafe_b64encode(jwk_secret).decode().rstrip("="),
        PASSPHRASE.decode(),
        "".join(_private(rsa_key).decode().splitlines()[1:3]),
    ]
    return {"expected": expected, "canaries": canaries}


def _self_signed(key):
    import datetime as dt

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc.lab.internal")])
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def _write_jks(path: str, rsa_key) -> None:
    import jks

    certificate = _self_signed(rsa_key).public_bytes(serialization.Encoding.DER)
    key_der = _private(rsa_key, encoding=serialization.Encoding.DER)
    entry = jks.PrivateKeyEntry.new("payments-signing", [certificate], key_der, "pkcs8")
    store = jks.KeyStore.new("jks", [entry])
    write(path, store.saves(PASSPHRASE.decode()))
