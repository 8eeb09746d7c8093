# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: certificate renewal and revocation over ACME, one certificate at a time, many per module call.

Renewal always makes a new private key. Once the CA has issued a certificate, nothing that fails afterwards
(an alternate chain, a backup, an install step) discards it: the new key and chain stay in ``*.keyops-pending``
files next to their targets until they are installed, and the error names those files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import ipaddress
import json
import os
import urllib.error
from typing import Any

from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url

from ansible_collections.keyops.runbooks.plugins.module_utils import x509 as x509_scan
from ansible_collections.keyops.runbooks.plugins.module_utils.acme_client import (
    REVOCATION_REASONS,
    AcmeSession,
    AcmeSettings,
    load_account_key,
    write_atomic,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.approvals import require_approvals
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    BackendUnavailable,
    IntegrityError,
    InvalidInput,
    KeyopsError,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy, requires_approval
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
except ImportError:  # pragma: no cover - x509_scan.require_cryptography() reports it
    pass

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
PENDING_SUFFIX = ".keyops-pending"


@dataclasses.dataclass
class CertTarget:
    name: str
    cert_path: str
    key_path: str
    names: list[str]
    chain_path: str | None = None
    fullchain_path: str | None = None
    key_type: str = "ec-p256"
    force: bool = False

    def paths(self) -> dict[str, str]:
        found = {
            "cert": self.cert_path,
            "key": self.key_path,
            "chain": self.chain_path,
            "fullchain": self.fullchain_path,
        }
        return {role: path for role, path in found.items() if path}


@dataclasses.dataclass
class RenewalRules:
    as_of: dt.datetime
    window_days: int = 30
    lifetime_fraction: float = 2 / 3


def certificate_state(cert: Any | None) -> dict[str, Any] | None:
    """Public facts of a certificate for results, diffs and audit events."""
    if cert is None:
        return None
    return {
        "serial": x509_scan.hex_serial(cert),
        "not_after": iso_utc(cert.not_valid_after_utc),
        "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def read_certificate(path: str) -> tuple[Any | None, str | None]:
    """(first certificate in the file, None) or (None, why not). A missing file is (None, None)."""
    if not os.path.exists(path):
        return None, None
    found, errors, _recognised = x509_scan.read_file(path, ())
    if found:
        return found[0].cert, None
    return None, errors[0].message if errors else "the file holds no certificate"


def renewal_reason(target: CertTarget, cert: Any | None, unreadable: str | None, rules: RenewalRules) -> str | None:
    """Why this certificate should be renewed now, or None when it should not."""
    if target.force:
        return "forced"
    if unreadable:
        return "unreadable"
    if cert is None:
        return "missing"
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if rules.as_of > not_after:
        return "expired"
    if not_after - rules.as_of < dt.timedelta(days=rules.window_days):
        return "expiring"
    if rules.as_of >= not_before + (not_after - not_before) * rules.lifetime_fraction:
        return "lifetime"
    sans = _sans(cert)
    if not all(x509_scan.covers_name(sans, [], name) for name in target.names):
        return "names_changed"
    return None


def _sans(cert: Any) -> list[str]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return []
    return [x509_scan.general_name(name) for name in extension.value]


def new_private_key(key_type: str) -> Any:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type.removeprefix("rsa-")))


def make_csr(key: Any, names: list[str]) -> bytes:
    alt_names: list[Any] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def split_chain(fullchain_pem: str) -> list[Any]:
    return x509.load_pem_x509_certificates(fullchain_pem.encode())


def pick_chain(default: str, alternates: list[str], preferred_issuer: str | None) -> str:
    """The chain whose top certificate's issuer CN is ``preferred_issuer``, else the server's default."""
    if not preferred_issuer:
        return default
    for candidate in [default, *alternates]:
        top = split_chain(candidate)[-1]
        common_names = x509_scan.common_names_of(top.issuer)
        if preferred_issuer in common_names:
            return candidate
    return default


def _backup(path: str, stamp: str) -> str | None:
    if not os.path.exists(path):
        return None
    backup_path = f"{path}.{stamp}.bak"
    with open(path, "rb") as handle:
        data = handle.read()
    # Backups hold the old private key too, so every backup is owner-only.
    write_atomic(backup_path, data, 0o600)
    return backup_path


def _install(path: str, data: bytes, secret: bool) -> None:
    mode, owner = 0o600, None
    with contextlib.suppress(FileNotFoundError):
        current = os.stat(path)
        owner = (current.st_uid, current.st_gid)
        mode = 0o600 if secret else current.st_mode & 0o777
    if not secret and owner is None:
        mode = 0o644
    write_atomic(path, data, mode)
    if owner:
        # Keep the service's ownership of its files; only root may give files away, so this is best effort.
        with contextlib.suppress(PermissionError):
            os.chown(path, *owner)


def verify_installed(target: CertTarget, expected_serial: str) -> dict[str, Any]:
    """Read the installed files back: certificate readable, the new one, matching the key, covering the names."""
    cert, problem = read_certificate(target.cert_path)
    if cert is None:
        raise IntegrityError(
            "Verify renewed certificate",
            target.name,
            f"'{target.cert_path}' cannot be read back ({problem or 'missing'})",
            "Check the disk and the file, then run again",
        )
    if x509_scan.hex_serial(cert) != expected_serial:
        raise IntegrityError(
            "Verify renewed certificate",
            target.name,
            f"'{target.cert_path}' holds serial {x509_scan.hex_serial(cert)}, not the new {expected_serial}",
            "Another process writes this file; stop it and run again",
        )
    with open(target.key_path, "rb") as handle:
        key = serialization.load_pem_private_key(handle.read(), password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != cert.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        raise IntegrityError(
            "Verify renewed certificate",
            target.name,
            f"'{target.key_path}' does not match '{target.cert_path}'",
            "Restore the pair from the backups listed in the result",
        )
    sans = _sans(cert)
    missing = [name for name in target.names if not x509_scan.covers_name(sans, [], name)]
    if missing:
        raise IntegrityError(
            "Verify renewed certificate",
            target.name,
            f"the new certificate does not cover {', '.join(missing)}",
            "Check the ACME server's name policy",
        )
    return {"readable": True, "key_matches": True, "names_covered": True}


def preflight(target: CertTarget) -> None:
    """Refuse before ordering when a target folder cannot be written: better no certificate than one stranded."""
    for role, path in target.paths().items():
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise InvalidInput(
                "Renew certificate",
                target.name,
                f"the folder of {role}_path '{path}' does not exist or is not writable",
                f"Create '{folder}' writable for the user running the task, or fix {role}_path",
            )


def renew_one(
    target: CertTarget, session: AcmeSession, timeout: int, preferred_chain: str | None, backup: bool
) -> dict[str, Any]:
    """Issue, install and verify one certificate. Raises a KeyopsError; issued material survives any failure."""
    preflight(target)
    key = new_private_key(target.key_type)
    pending_key = target.key_path + PENDING_SUFFIX
    pending_chain = target.cert_path + PENDING_SUFFIX
    try:
        write_atomic(pending_key, _key_pem(key), 0o600)
    except OSError as error:
        raise InvalidInput(
            "Renew certificate",
            target.name,
            f"cannot write next to '{target.key_path}' ({error.strerror})",
            "Make the key's folder writable for the user running the task",
        ) from None
    try:
        fullchain, certificate_url = session.issue(target.name, make_csr(key, target.names), timeout)
    except BaseException:
        # Nothing was issued: the pending key has no certificate and no use.
        with contextlib.suppress(OSError):
            os.unlink(pending_key)
        raise

    warnings: list[str] = []
    try:
        write_atomic(pending_chain, fullchain.encode(), 0o600)
    except OSError as error:
        warnings.append(f"could not keep a pending copy of the issued chain ({error.strerror})")

    if preferred_chain and certificate_url:
        try:
            fullchain = pick_chain(fullchain, session.alternate_chains(certificate_url), preferred_chain)
        except Exception as error:  # any failure here only loses the alternate chains, never the certificate
            warnings.append(
                f"alternate chains could not be fetched ({type(error).__name__}); installed the server's default chain"
            )

    certs = split_chain(fullchain)
    leaf, chain = certs[0], certs[1:]
    pem = serialization.Encoding.PEM
    contents = {
        "cert": leaf.public_bytes(pem),
        "chain": b"".join(item.public_bytes(pem) for item in chain),
        "fullchain": b"".join(item.public_bytes(pem) for item in certs),
    }
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    backups: dict[str, str] = {}
    try:
        if backup:
            for role, path in target.paths().items():
                saved = _backup(path, stamp)
                if saved:
                    backups[role] = saved
        for role, path in target.paths().items():
            if role == "key":
                os.replace(pending_key, path)
            else:
                _install(path, contents[role], secret=False)
    except OSError as error:
        raise BackendUnavailable(
            "Install renewed certificate",
            target.name,
            f"writing '{error.filename}' failed ({error.strerror}); "
            f"the issued certificate and its new key are kept in '{pending_chain}' and '{pending_key}' (0600)",
            "Fix the target folder, then move the pending files into place or run again",
            issued=certificate_state(leaf),
            backups=backups,
        ) from None
    with contextlib.suppress(OSError):
        os.unlink(pending_chain)
    return {
        "new": certificate_state(leaf),
        "backups": backups,
        "warnings": warnings,
        "verified": verify_installed(target, x509_scan.hex_serial(leaf)),
    }


# ---------------------------------------------------------------------------------------------------------------
# Revocation status


def management_status(management_url: str, ca_bundle: str | None, cert: Any, key_ref: str) -> dict[str, Any]:
    """Pebble's management interface: ``{"Status": "Valid"|"Revoked", "Reason": code}`` for a serial."""
    url = f"{management_url.rstrip('/')}/cert-status-by-serial/{cert.serial_number:x}"
    try:
        with open_url(url, ca_path=ca_bundle, timeout=10, validate_certs=True) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return {"status": "unknown", "reason": None}
        raise BackendUnavailable(
            "Read revocation status",
            key_ref,
            f"the status source answered HTTP {error.code}",
            "Check acme_management_url",
        ) from None
    except (urllib.error.URLError, UrlConnectionError, OSError, ValueError) as error:
        raise BackendUnavailable(
            "Read revocation status",
            key_ref,
            f"the status source cannot be read ({type(error).__name__})",
            "Check acme_management_url and acme_ca_bundle",
        ) from None
    return {"status": str(answer.get("Status", "unknown")).lower(), "reason": answer.get("Reason")}


def load_for_revocation(name: str, path: str) -> Any:
    cert, problem = read_certificate(path)
    if cert is None:
        raise InvalidInput(
            "Revoke certificate",
            name,
            f"'{path}' {problem or 'does not exist'}",
            "Point cert_path at the PEM or DER certificate to revoke",
        )
    return cert


def error_summary(error: KeyopsError) -> dict[str, Any]:
    return {
        "msg": error.message,
        **{key: value for key, value in error.details.items() if key in ("issued", "backups")},
    }


# ---------------------------------------------------------------------------------------------------------------
# What the modules call


def _targets(params: dict[str, Any]) -> list[CertTarget]:
    targets = []
    for item in params["certificates"]:
        if not item["names"]:
            raise InvalidInput(
                "Renew certificate",
                item.get("name") or item["cert_path"],
                "names is empty",
                "List the DNS names or IP addresses the certificate must cover in names",
            )
        targets.append(
            CertTarget(
                name=item.get("name") or item["cert_path"],
                cert_path=item["cert_path"],
                key_path=item["key_path"],
                names=list(item["names"]),
                chain_path=item.get("chain_path"),
                fullchain_path=item.get("fullchain_path"),
                key_type=item.get("key_type") or "ec-p256",
                force=bool(item.get("force")),
            )
        )
    return targets


def renew_certificates(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Plan every certificate, then (unless check mode) renew the due ones; one failure does not stop the rest."""
    x509_scan.require_cryptography()
    policy = merged_policy(params.get("policy"))
    window = params.get("renew_within_days")
    fraction = params.get("renew_after_lifetime_fraction") or 2 / 3
    if not 0 < fraction <= 1:
        raise InvalidInput(
            "Renew certificates",
            None,
            f"renew_after_lifetime_fraction={fraction} is not in (0, 1]",
            "Give a fraction such as 0.667",
        )
    rules = RenewalRules(
        as_of=x509_scan.as_of_time(params.get("as_of")),
        window_days=policy["certificate_renewal_window_days"] if window is None else window,
        lifetime_fraction=fraction,
    )
    targets = _targets(params)
    plans = []
    for target in targets:
        cert, unreadable = read_certificate(target.cert_path)
        plans.append((target, certificate_state(cert), renewal_reason(target, cert, unreadable, rules)))

    results: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    warning_lines: list[str] = []
    session = None
    failed = []
    for target, before, reason in plans:
        action = "issue" if reason == "missing" else "renew"
        entry: dict[str, Any] = {
            "name": target.name,
            "changed": bool(reason),
            "reason": reason,
            "old": before,
            "new": None,
            "backups": {},
            "verified": None,
            "warnings": [],
            "error": None,
        }
        detail = {"key_class": "tls-cert", "outcome_reason": reason or "not_due", "path": target.cert_path}
        if not reason:
            events.append(
                audit_event(
                    action,
                    "x509",
                    target.name,
                    "unchanged",
                    check_mode,
                    before,
                    before,
                    params.get("change_ref"),
                    params.get("approvals"),
                    detail,
                )
            )
        elif check_mode:
            require_approvals(action, target.name, "tls-cert", params.get("approvals"), True, params.get("policy"))
            events.append(
                audit_event(
                    action,
                    "x509",
                    target.name,
                    "planned",
                    True,
                    before,
                    None,
                    params.get("change_ref"),
                    params.get("approvals"),
                    detail,
                )
            )
        else:
            try:
                require_approvals(action, target.name, "tls-cert", params.get("approvals"), False, params.get("policy"))
                if session is None:
                    session = open_session(params, create_account_key=True)
                entry.update(
                    renew_one(
                        target,
                        session,
                        params.get("acme_timeout") or 90,
                        params.get("preferred_chain"),
                        params.get("backup", True),
                    )
                )
                events.append(
                    audit_event(
                        action,
                        "x509",
                        target.name,
                        "changed",
                        False,
                        before,
                        entry["new"],
                        params.get("change_ref"),
                        params.get("approvals"),
                        detail,
                    )
                )
                warning_lines += [f"{target.name}: {text}" for text in entry["warnings"]]
            except KeyopsError as error:
                entry.update(
                    changed=False,
                    error=error.message,
                    new=error.details.get("issued"),
                    backups=error.details.get("backups") or {},
                )
                entry["changed"] = entry["new"] is not None
                failed.append(target.name)
                events.append(
                    audit_event(
                        action,
                        "x509",
                        target.name,
                        "failure",
                        False,
                        before,
                        entry["new"],
                        params.get("change_ref"),
                        params.get("approvals"),
                        dict(detail, outcome_reason=error.__class__.__name__),
                    )
                )
        results.append(entry)

    report = {
        "changed": any(entry["changed"] for entry in results),
        "certificates": results,
        "audit_events": events,
        "diff": {
            "before": {entry["name"]: entry["old"] for entry in results if entry["reason"]},
            "after": {entry["name"]: entry["new"] for entry in results if entry["reason"]},
        },
        "warning_lines": warning_lines,
    }
    if failed:
        first = next(entry["error"] for entry in results if entry["error"])
        raise KeyopsError(
            "Renew certificates",
            ", ".join(failed),
            f"{len(failed)} of {len(results)} failed; first: {first}",
            "See certificates[].error; renewed certificates stay installed",
            **{key: value for key, value in report.items() if key != "warning_lines"},
        )
    return report


def open_session(params: dict[str, Any], create_account_key: bool) -> AcmeSession:
    settings = AcmeSettings.from_params(params)
    account_key, _created = load_account_key(settings.account_key_path, create=create_account_key)
    if account_key is None:
        raise InvalidInput(
            "Read ACME account key",
            None,
            f"'{settings.account_key_path}' does not exist",
            "Point account_key_path at the key of the account that issued the certificates",
        )
    return AcmeSession(settings, account_key)


def revoke_certificates(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Revoke each certificate with the reason given, and confirm it (ACME answer plus the status source)."""
    x509_scan.require_cryptography()
    reason = params["reason"]
    # keyCompromise is compromise response: dual-controlled by default policy. Other reasons follow the policy's
    # rules for "revoke" (not dual-controlled by default).
    gate = "compromise_response" if reason == "keyCompromise" else "revoke"
    management_url = params.get("acme_management_url")
    results: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    session = None
    for item in params["certificates"]:
        name = item.get("name") or item["cert_path"]
        cert = load_for_revocation(name, item["cert_path"])
        state = certificate_state(cert)
        before_status = (
            management_status(management_url, params.get("acme_ca_bundle"), cert, name) if management_url else None
        )
        already = bool(before_status and before_status["status"] == "revoked")
        before = dict(state, revoked=already if before_status else None)
        detail = {"key_class": "tls-cert", "revocation_reason": reason, "path": item["cert_path"]}
        if requires_approval(gate, "tls-cert", params.get("policy")):
            # The event's action is "revoke"; this marks it dual-controlled in the plan approvers sign.
            detail["requires_approval"] = True
        entry: dict[str, Any] = {
            "name": name,
            "serial": state["serial"],
            "fingerprint_sha256": state["fingerprint_sha256"],
            "changed": not already,
            "revoked": already or None,
            "reason": reason,
            "confirmed": None,
        }
        if already:
            entry["confirmed"] = {
                "acme": None,
                "status_source": "acme_management_url",
                "status": "revoked",
                "reason_code": before_status["reason"],
            }
            events.append(
                audit_event(
                    "revoke",
                    "x509",
                    name,
                    "unchanged",
                    check_mode,
                    before,
                    before,
                    params.get("change_ref"),
                    params.get("approvals"),
                    detail,
                )
            )
        elif check_mode:
            require_approvals(gate, name, "tls-cert", params.get("approvals"), True, params.get("policy"))
            events.append(
                audit_event(
                    "revoke",
                    "x509",
                    name,
                    "planned",
                    True,
                    before,
                    dict(state, revoked=True, revocation_reason=reason),
                    params.get("change_ref"),
                    params.get("approvals"),
                    detail,
                )
            )
        else:
            require_approvals(gate, name, "tls-cert", params.get("approvals"), False, params.get("policy"))
            if session is None:
                session = open_session(params, create_account_key=False)
            revoked_now = session.revoke(name, cert, reason)
            entry["confirmed"] = confirm_revocation(
                name, cert, reason, revoked_now, management_url, params.get("acme_ca_bundle")
            )
            entry.update(changed=revoked_now, revoked=True)
            after = dict(state, revoked=True, revocation_reason=reason)
            events.append(
                audit_event(
                    "revoke",
                    "x509",
                    name,
                    "changed" if revoked_now else "unchanged",
                    False,
                    before,
                    after,
                    params.get("change_ref"),
                    params.get("approvals"),
                    dict(detail, outcome_reason=entry["confirmed"]["acme"]),
                )
            )
        results.append(entry)
    return {
        "changed": any(entry["changed"] for entry in results),
        "certificates": results,
        "audit_events": events,
    }


def confirm_revocation(
    name: str, cert: Any, reason: str, revoked_now: bool, management_url: str | None, ca_bundle: str | None
) -> dict[str, Any]:
    """Confirmed means: the ACME server accepted revokeCert (or answered alreadyRevoked), and, when a status
    source is given, it reports the serial revoked with the requested reason code."""
    confirmation: dict[str, Any] = {
        "acme": "revoked" if revoked_now else "already_revoked",
        "status_source": None,
        "status": None,
        "reason_code": None,
    }
    if not management_url:
        return confirmation
    status = management_status(management_url, ca_bundle, cert, name)
    confirmation.update(status_source="acme_management_url", status=status["status"], reason_code=status["reason"])
    if status["status"] != "revoked":
        raise IntegrityError(
            "Confirm revocation",
            name,
            f"the ACME server accepted the revocation but the status source reports '{status['status']}'",
            "Check the CA; run again to re-check",
        )
    wanted = REVOCATION_REASONS[reason]
    if revoked_now and status["reason"] not in (None, wanted):
        raise IntegrityError(
            "Confirm revocation",
            name,
            f"revoked with reason code {status['reason']}, not {wanted} ({reason})",
            "Check the CA's revocation record",
        )
    return confirmation
