# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: certificates from a Vault / OpenBao PKI engine - issue, revoke with CRL confirmation, inventory."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import Vault
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    IntegrityError,
    InvalidInput,
    KeyNotFound,
    MissingLibrary,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.records import KeyRecord, finding, iso_utc, utc_now
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_backup import write_private

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID
except ImportError:
    CRYPTOGRAPHY_IMPORT_ERROR: str | None = traceback.format_exc()
else:
    CRYPTOGRAPHY_IMPORT_ERROR = None

REASONS = (
    "unspecified",
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "certificate_hold",
    "privilege_withdrawn",
)


def require_cryptography() -> None:
    if CRYPTOGRAPHY_IMPORT_ERROR:
        raise MissingLibrary("cryptography", CRYPTOGRAPHY_IMPORT_ERROR)


def serial_int(serial: str) -> int:
    try:
        return int(serial.replace(":", "").replace("-", ""), 16)
    except ValueError as error:
        raise InvalidInput(
            "Read serial",
            serial,
            "not a hexadecimal serial number",
            "Pass serials as Vault prints them, for example 1f:2d:76:...",
        ) from error


def serial_text(number: int) -> str:
    text = f"{number:x}"
    text = text.zfill(len(text) + len(text) % 2)
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2))


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _facts(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "serial": serial_text(cert.serial_number),
        "common_name": _cn(cert),
        "not_before": iso_utc(cert.not_valid_before_utc),
        "not_after": iso_utc(cert.not_valid_after_utc),
        "fingerprint_sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    }


def read_cert(vault: Vault, mount: str, serial: str) -> tuple[x509.Certificate, int]:
    """The certificate and its revocation time (0 when not revoked)."""
    with vault.call("Read certificate", serial, "Check the serial and the mount option"):
        data = vault.client.adapter.get(f"/v1/{mount}/cert/{serial}")["data"]
    if not data.get("certificate"):
        raise KeyNotFound(
            "Read certificate",
            serial,
            "the PKI engine has no certificate with that serial",
            "Check the serial and the mount option",
        )
    return x509.load_pem_x509_certificate(data["certificate"].encode()), int(data.get("revocation_time") or 0)


def issue(vault: Vault, params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Issue from a role unless the certificate at cert_path is still good; the new key goes to key_path only."""
    mount, role, cn = params["mount"], params["role"], params["common_name"]
    cert_path, key_path = params["cert_path"], params["key_path"]
    if not role or not cn or not cert_path or not key_path:
        raise InvalidInput(
            "Issue certificate",
            cn,
            "role, common_name, cert_path and key_path are all needed",
            "Set role, common_name, cert_path and key_path",
        )
    current = _existing(cert_path, key_path)
    # A short-lived certificate renews in its last third, so a 30-day certificate is not reissued on every run.
    window = dt.timedelta(days=params["renew_before_days"])
    if current:
        window = min(window, (current.not_valid_after_utc - current.not_valid_before_utc) / 3)
    if current and not params["force"] and _cn(current) == cn and current.not_valid_after_utc - window > utc_now():
        return {"changed": False, "certificate": dict(_facts(current), cert_path=cert_path, key_path=key_path)}
    before = _facts(current) if current else None
    if check_mode:
        return {
            "changed": True,
            "before": before,
            "certificate": {"common_name": cn, "cert_path": cert_path, "key_path": key_path},
        }

    extra = {"format": "pem", "private_key_format": "pkcs8"}
    for option, field in (("alt_names", "alt_names"), ("ip_sans", "ip_sans")):
        if params.get(option):
            extra[field] = ",".join(params[option])
    if params.get("ttl"):
        extra["ttl"] = params["ttl"]
    with vault.call("Issue certificate", cn, "Check the role and mount options"):
        data = vault.pki.generate_certificate(role, cn, extra_params=extra, mount_point=mount)["data"]
    write_private(key_path, data["private_key"].encode())
    chain = [data["certificate"], *(data.get("ca_chain") or [data.get("issuing_ca", "")])]
    _write_public(cert_path, "\n".join(part.strip() for part in chain if part) + "\n")
    cert = x509.load_pem_x509_certificate(data["certificate"].encode())
    return {
        "changed": True,
        "before": before,
        "certificate": dict(_facts(cert), cert_path=cert_path, key_path=key_path),
    }


def _existing(cert_path: str, key_path: str) -> x509.Certificate | None:
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        return None
    try:
        with open(cert_path, "rb") as handle:
            return x509.load_pem_x509_certificate(handle.read())
    except ValueError:
        return None


def _write_public(path: str, text: str) -> None:
    write_private(path, text.encode())
    os.chmod(path, 0o644)


def crl_serials(vault: Vault, mount: str) -> set[int]:
    with vault.call("Read CRL", mount):
        pem = vault.client.adapter.get(f"/v1/{mount}/crl/pem")
    text = pem if isinstance(pem, str) else getattr(pem, "text", "")
    crl = x509.load_pem_x509_crl(text.encode())
    return {entry.serial_number for entry in crl}


def revoke(vault: Vault, mount: str, serial: str, reason: str, check_mode: bool) -> dict[str, Any]:
    """Revoke one serial and confirm it is in the CRL; an expired certificate is reported as such."""
    number = serial_int(serial)
    serial = serial.strip().lower().replace("-", ":")
    cert, revoked_at = read_cert(vault, mount, serial)
    entry: dict[str, Any] = {
        "serial": serial,
        "common_name": _cn(cert),
        "not_after": iso_utc(cert.not_valid_after_utc),
        "reason": reason,
        "crl_confirmed": False,
    }
    if revoked_at:
        entry["crl_confirmed"] = _confirm(vault, mount, number, check_mode)
        entry.update(status="already_revoked", changed=False, revoked=True)
        return entry
    if cert.not_valid_after_utc <= utc_now():
        entry.update(status="expired", changed=False, revoked=False)
        return entry
    entry.update(status="revoked", changed=True, revoked=not check_mode)
    if check_mode:
        entry["status"] = "would_revoke"
        return entry
    with vault.call("Revoke certificate", serial):
        vault.client.adapter.post(f"/v1/{mount}/revoke", json={"serial_number": serial})
    entry["crl_confirmed"] = _confirm(vault, mount, number, False)
    if not entry["crl_confirmed"]:
        raise IntegrityError(
            "Revoke certificate",
            serial,
            "the serial is not in the CRL, even after rotating it",
            "Check the PKI engine's CRL configuration (crl/config disable must be false)",
        )
    return entry


def _confirm(vault: Vault, mount: str, number: int, check_mode: bool) -> bool:
    if number in crl_serials(vault, mount):
        return True
    if check_mode:
        return False
    with vault.call("Rotate CRL", mount):
        vault.client.adapter.get(f"/v1/{mount}/crl/rotate")
    return number in crl_serials(vault, mount)


def inventory(vault: Vault, mount: str, renewal_days: int, workers: int) -> list[dict[str, Any]]:
    """Every certificate the engine issued, as KeyRecord dicts with expiry and revocation findings."""
    with vault.call("List certificates", mount):
        try:
            serials = vault.pki.list_certificates(mount_point=mount)["data"]["keys"]
        except KeyError:
            serials = []
    now = utc_now()

    def record(serial: str) -> dict[str, Any]:
        cert, revoked_at = read_cert(vault, mount, serial)
        expires = cert.not_valid_after_utc
        found = []
        state = "enabled"
        if revoked_at:
            state = "disabled"
            found.append(finding("revoked", "info", f"revoked at {iso_utc(revoked_at)}"))
        elif expires <= now:
            state = "expired"
            found.append(finding("expired", "high", f"expired on {iso_utc(expires)}"))
        elif expires - dt.timedelta(days=renewal_days) <= now:
            found.append(finding("expiring", "medium", f"expires on {iso_utc(expires)}"))
        public = cert.public_key()
        size = getattr(public, "key_size", None)
        curve = getattr(getattr(public, "curve", None), "name", None)
        rec = KeyRecord(
            id=serial_text(cert.serial_number),
            name=_cn(cert),
            backend="x509",
            location=vault.location(mount),
            key_class="tls-cert",
            algorithm=type(public).__name__.replace("_", "").replace("PublicKey", ""),
            length_bits=curve or size,
            created=iso_utc(cert.not_valid_before_utc),
            expires=iso_utc(expires),
            state=state,
            findings=found,
        )
        rec.extra = {
            "serial": serial_text(cert.serial_number),
            "revoked": bool(revoked_at),
            "not_after": iso_utc(expires),
        }
        return rec.to_dict()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(record, serials))
