# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The key-management policy in force: approved algorithms and sizes, cryptoperiods, dual-control rules.

Defaults follow NIST SP 800-57 part 1 and the usual PCI DSS / NCA ECC readings. Every value can be
overridden per run by passing a ``policy`` dict (same shape as ``DEFAULT_POLICY``) to the module or role.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import PolicyViolation
from ansible_collections.keyops.runbooks.plugins.module_utils.naming import parse_key_name
from ansible_collections.keyops.runbooks.plugins.module_utils.records import finding, iso_utc, parse_time, utc_now

DEFAULT_POLICY: dict[str, Any] = {
    # Backend-native algorithm names approved for new keys.
    "approved_algorithms": {
        "vault_transit": ["aes256-gcm96", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384", "ed25519", "hmac"],
        "aws_kms": ["SYMMETRIC_DEFAULT", "RSA_3072", "RSA_4096", "ECC_NIST_P256", "ECC_NIST_P384", "HMAC_256"],
        "pkcs11": ["AES-256", "RSA-3072", "RSA-4096", "EC-P256", "EC-P384"],
    },
    "min_rsa_bits": 3072,
    # Many estates still accept RSA-2048 on TLS certificates; set to 3072 to refuse it there too.
    "min_rsa_bits_tls": 2048,
    "min_aes_bits": 256,
    "min_hmac_bits": 256,
    "approved_curves": ["P-256", "P-384", "secp256r1", "secp384r1", "Ed25519"],
    "weak_signature_hashes": ["md5", "sha1"],
    # Cryptoperiods in days, per key class (originator-usage periods after NIST SP 800-57 part 1, 5.3.6).
    "cryptoperiod_days": {
        "master-kek": 365,
        "kek": 730,
        "dek": 730,
        "signing": 1095,
        "transport": 365,
        "tls-cert": 398,
    },
    "rotation_due_window_days": 90,
    "certificate_renewal_window_days": 30,
    "naming_rule": True,
    "master_keys_exportable": False,
    "auto_rotation_required_for": ["master-kek", "kek"],
    # Dual control: which actions need two approvers, whatever the key class.
    "approval_required_actions": [
        "export",
        "destroy",
        "schedule_deletion",
        "compromise_response",
        "trim",
        "raise_min_decryption_version",
    ],
    "approval_required_classes": ["master-kek"],
    "approval_quorum": 2,
    # Families approved whatever the backend calls them; sizes and curves are checked separately.
    "approved_families": ["AES", "RSA", "EC", "Ed25519", "HMAC"],
    # Symmetric modes approved when the backend names one (a PKCS#11 AES key carries no mode).
    "approved_aes_modes": ["GCM"],
    # Certificate names are host names, not key names: the naming rule covers keys only unless set.
    "naming_rule_for_certificates": False,
    # Classes whose keys may be exportable; a master key never is (see master_keys_exportable).
    "exportable_allowed_classes": ["dek", "tls-cert"],
    "deletion_protected_classes": ["master-kek", "kek", "signing"],
    # Labels a backend must carry on each key, where it has labels (KMS tags): the register is not the only record.
    "required_tags": {"aws_kms": ["owner"]},
    # CA certificates met in chains and bundles are inventoried, but the register need not list them.
    "register_ca_certificates": False,
    # Source findings that state a fact rather than break the policy: kept, at severity info.
    "informational_codes": ["pending_deletion", "dates_unreadable"],
    "finding_severities": {
        "algorithm_not_approved": "high",
        "key_too_short": "high",
        "rotation_overdue": "high",
        "rotation_overdue_schedule": "medium",
        "rotation_period_too_long": "medium",
        "rotation_disabled": "medium",
        "name_nonconforming": "low",
        "name_class_mismatch": "low",
        "exportable_master_key": "critical",
        "exportable_key": "medium",
        "plaintext_backup_allowed": "high",
        "deletion_allowed": "medium",
        "cert_expired": "high",
        "cert_expiring": "medium",
        "cert_validity_too_long": "medium",
        "weak_signature": "high",
        "not_in_register": "medium",
        "missing_from_backend": "high",
        "drift_owner": "medium",
        "drift_algorithm": "high",
        "drift_rotation": "medium",
        "drift_key_class": "medium",
        "drift_location": "low",
        "missing_tags": "low",
    },
}


def merged_policy(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The default policy with per-run overrides applied (dicts merge one level deep)."""
    policy = copy.deepcopy(DEFAULT_POLICY)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(policy.get(key), dict):
            policy[key].update(value)
        else:
            policy[key] = value
    return policy


def check_algorithm(
    backend: str, algorithm: str, key_ref: str, allow_unapproved: bool, policy: dict[str, Any] | None = None
) -> list[str]:
    """Refuse an unapproved algorithm for a new key, or return a warning when the caller overrides policy."""
    approved = merged_policy(policy)["approved_algorithms"].get(backend, [])
    if algorithm in approved:
        return []
    if not allow_unapproved:
        raise PolicyViolation(
            "Create key",
            key_ref,
            f"algorithm '{algorithm}' is not approved for {backend} (approved: {', '.join(approved)})",
            "Pick an approved algorithm, or set allow_unapproved_algorithm=true with a recorded exception",
        )
    return [f"Key '{key_ref}' uses '{algorithm}', which the policy does not approve; created on explicit override."]


def requires_approval(action: str, key_class: str | None, policy: dict[str, Any] | None = None) -> bool:
    rules = merged_policy(policy)
    return action in rules["approval_required_actions"] or (key_class in rules["approval_required_classes"])


# Evaluating what exists against the policy: the inventory's side (the functions above guard new keys).


SEVERITY_ORDER = ("info", "low", "medium", "high", "critical")
# Backends whose keys can rotate on a schedule the backend itself keeps (KMS: symmetric keys only).
_AUTO_ROTATION = {"vault_transit": None, "aws_kms": ("SYMMETRIC_DEFAULT",)}
_CURVES = {
    "p256": "P-256",
    "p-256": "P-256",
    "secp256r1": "P-256",
    "prime256v1": "P-256",
    "nistp256": "P-256",
    "p384": "P-384",
    "p-384": "P-384",
    "secp384r1": "P-384",
    "nistp384": "P-384",
    "p521": "P-521",
    "p-521": "P-521",
    "secp521r1": "P-521",
    "nistp521": "P-521",
    "p256k1": "secp256k1",
    "secp256k1": "secp256k1",
}
# Which key classes a TYPE in a key name may stand for (a master KEK is a kek by name).
_TYPE_CLASSES = {
    "kek": {"kek", "master-kek"},
    "dek": {"dek"},
    "sign": {"signing"},
    "transport": {"transport"},
    "tls": {"tls-cert"},
    "hmac": {"dek", "kek", "signing", "transport"},
}


def severity_rank(severity: str | None) -> int:
    """Position of a severity in SEVERITY_ORDER; -1 for none or unknown."""
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else -1


def describe_algorithm(algorithm: Any, length_bits: Any = None) -> dict[str, Any]:
    """Read a backend-native algorithm name as ``{family, bits, curve, mode}`` so backends compare alike.

    Understands Vault transit types (``aes256-gcm96``), KMS key specs (``RSA_3072``, ``ECC_NIST_P256``,
    ``HMAC_256``, ``SYMMETRIC_DEFAULT``), PKCS#11 style (``AES-256``, ``EC-P256``) and certificate key types.
    """
    text = str(algorithm or "").strip().lower().replace("_", "-")
    size = length_bits if isinstance(length_bits, int) and not isinstance(length_bits, bool) else None
    curve_hint = length_bits if isinstance(length_bits, str) else None
    if isinstance(length_bits, str) and length_bits.isdigit():
        size, curve_hint = int(length_bits), None
    digits = re.search(r"(\d{3,4})", text)
    number = int(digits.group(1)) if digits else None
    described: dict[str, Any] = {"family": None, "bits": None, "curve": None, "mode": None}

    if text in ("symmetric-default", "aes-256-gcm", "aes256-gcm96", "aes-gcm-256"):
        described.update(family="AES", bits=256, mode="GCM")
    elif text.startswith("aes"):
        mode = next((name.upper() for name in ("gcm", "cbc", "ecb", "ctr", "cmac", "xts", "siv") if name in text), None)
        described.update(family="AES", bits=number or size, mode=mode)
    elif text in ("symmetric", "oct", "generic-secret", "secret"):
        described.update(family="SYMMETRIC", bits=size)
    elif "chacha" in text:
        described.update(family="ChaCha20", bits=256)
    elif text.startswith(("3des", "des3", "tdes", "des-ede", "triple")):
        described.update(family="3DES", bits=size or 168)
    elif text.startswith("des"):
        described.update(family="DES", bits=56)
    elif text.startswith("rsa"):
        described.update(family="RSA", bits=number or size)
    elif text.startswith("ed25519"):
        described.update(family="Ed25519", bits=256, curve="Ed25519")
    elif text.startswith("ed448"):
        described.update(family="Ed448", bits=456, curve="Ed448")
    elif text.startswith(("ec", "ecdsa", "ecc", "id-ecpublickey", "ecdh")) or text in _CURVES:
        curve = None
        for candidate in (text, str(curve_hint or "").lower()):
            match = re.search(r"(secp\d+[rk]1|prime256v1|nistp\d+|p-?\d{3}k1|p-?\d{3})", candidate)
            if match:
                curve = _CURVES.get(match.group(1), match.group(1).upper())
                break
        if curve is None and size:
            curve = {256: "P-256", 384: "P-384", 521: "P-521"}.get(size)
        bits = int(re.sub(r"\D", "", curve)[:3]) if curve and re.search(r"\d", curve) else size
        described.update(family="EC", bits=bits, curve=curve)
    elif text.startswith("hmac"):
        described.update(family="HMAC", bits=number or size)
    elif text:
        described.update(family=str(algorithm).strip())
    return described


def same_algorithm(left: Any, right: Any, left_bits: Any = None, right_bits: Any = None) -> bool:
    """Whether two algorithm names (any backend's spelling) mean the same family, size, curve and mode."""
    one, two = describe_algorithm(left, left_bits), describe_algorithm(right, right_bits)
    if one["family"] != two["family"]:
        return str(left).lower() == str(right).lower()
    for part in ("bits", "curve", "mode"):
        if one[part] is not None and two[part] is not None and one[part] != two[part]:
            return False
    return True


def _finding(policy: dict[str, Any], code: str, message: str, severity: str | None = None) -> dict[str, str]:
    return finding(code, severity or policy["finding_severities"].get(code, "medium"), message)


def name_parts(record: dict[str, Any]) -> dict[str, Any]:
    """The naming rule's reading of a record's name (a KMS alias is named without its ``alias/`` prefix)."""
    name = str(record.get("name") or "")
    return parse_key_name(name[len("alias/") :] if name.startswith("alias/") else name)


def _age_basis(record: dict[str, Any]) -> tuple[dt.datetime | None, str]:
    for field_name in ("last_rotated", "created"):
        moment = parse_time(record.get(field_name))
        if moment:
            return moment, field_name
    # A compliant name carries its creation date: the last resort for backends that keep no dates.
    parts = name_parts(record)
    if parts["valid"]:
        return parse_time(parts["date"]), "the date in its name"
    return None, ""


def backend_rotates(record: dict[str, Any]) -> bool | None:
    """Whether the backend rotates the key on a schedule; None when it cannot, or when nobody could read it."""
    backend = record.get("backend")
    if backend not in _AUTO_ROTATION:
        return None
    specs = _AUTO_ROTATION[backend]
    if specs and str(record.get("algorithm") or "").upper() not in specs:
        return None
    if "rotation_enabled" in record:
        # KMS says null when the status was denied or does not apply (pending deletion): unknown, never "off".
        return record["rotation_enabled"] if isinstance(record["rotation_enabled"], bool) else None
    return bool(record.get("rotation_period_days"))


def _on_approved_list(record: dict[str, Any], approved: list[str]) -> bool:
    algorithm, bits = record.get("algorithm"), record.get("length_bits")
    if algorithm in approved:
        return True
    described = describe_algorithm(algorithm, bits)
    # Compare by meaning, so PKCS#11 "RSA" with 3072 bits matches "RSA-3072"; every known part must agree.
    for name in approved:
        other = describe_algorithm(name)
        if other["family"] == described["family"] and all(
            other[part] == described[part] for part in ("bits", "curve") if other[part] is not None
        ):
            return True
    return False


def _check_algorithm(record: dict[str, Any], rules: dict[str, Any]) -> list[dict[str, str]]:
    algorithm = record.get("algorithm")
    if not algorithm:
        return []
    described = describe_algorithm(algorithm, record.get("length_bits"))
    family, bits = described["family"], described["bits"]
    found = []
    if family not in rules["approved_families"] and family != "SYMMETRIC":
        reason = f"{algorithm} is not an approved algorithm family (approved: {', '.join(rules['approved_families'])})"
        return [_finding(rules, "algorithm_not_approved", reason)]
    if family == "AES" and described["mode"] and described["mode"] not in rules["approved_aes_modes"]:
        reason = f"{algorithm} uses AES-{described['mode']}; approved modes: {', '.join(rules['approved_aes_modes'])}"
        found.append(_finding(rules, "algorithm_not_approved", reason))
    if family == "EC" and described["curve"] not in rules["approved_curves"]:
        reason = (
            f"{algorithm} uses curve {described['curve'] or 'unknown'}; approved: {', '.join(rules['approved_curves'])}"
        )
        found.append(_finding(rules, "algorithm_not_approved", reason))
    minimum = {"AES": rules["min_aes_bits"], "SYMMETRIC": rules["min_aes_bits"], "HMAC": rules["min_hmac_bits"]}.get(
        family
    )
    if family == "RSA":
        minimum = rules["min_rsa_bits_tls"] if record.get("key_class") == "tls-cert" else rules["min_rsa_bits"]
    if minimum and bits and int(bits) < minimum:
        found.append(
            _finding(rules, "key_too_short", f"{family} key of {bits} bits is below the {minimum}-bit minimum")
        )
    approved = rules["approved_algorithms"].get(record.get("backend"))
    listed = not approved or family == "HMAC" or _on_approved_list(record, approved)
    if not listed and not any(item["code"] == "algorithm_not_approved" for item in found):
        # A short key is also off the list new keys may use: both facts, as auditors read them.
        reason = f"{algorithm} is not on the approved list for {record.get('backend')} ({', '.join(approved)})"
        found.append(_finding(rules, "algorithm_not_approved", reason))
    return found


def _check_rotation(record: dict[str, Any], rules: dict[str, Any], now: dt.datetime) -> list[dict[str, str]]:
    key_class = record.get("key_class")
    cryptoperiod = rules["cryptoperiod_days"].get(key_class)
    # Certificates are renewed, not rotated: their lifetime is checked by _check_certificate.
    if record.get("backend") == "x509" or key_class == "tls-cert" or record.get("state", "enabled") != "enabled":
        return []
    if not cryptoperiod:
        return []
    found = []
    period = record.get("rotation_period_days")
    if period and int(period) > cryptoperiod:
        found.append(
            _finding(
                rules,
                "rotation_period_too_long",
                f"rotation every {period} days exceeds the {cryptoperiod}-day cryptoperiod for {key_class}",
            )
        )
    on = backend_rotates(record)
    if on is False and key_class in rules["auto_rotation_required_for"]:
        found.append(
            _finding(
                rules,
                "rotation_disabled",
                f"automatic rotation is off for a {key_class} on {record.get('backend')}, which supports it",
            )
        )
    basis, basis_name = _age_basis(record)
    if basis is None:
        return found
    age = (now - basis).days
    schedule = min(int(period), cryptoperiod) if period else cryptoperiod
    if age > cryptoperiod:
        found.append(
            _finding(
                rules,
                "rotation_overdue",
                f"last rotated {age} days ago (by {basis_name}); the "
                f"cryptoperiod for {key_class} is {cryptoperiod} days",
            )
        )
    elif age > schedule:
        found.append(
            _finding(
                rules,
                "rotation_overdue",
                f"last rotated {age} days ago (by {basis_name}); its schedule is every {schedule} days",
                rules["finding_severities"].get("rotation_overdue_schedule"),
            )
        )
    return found


def _check_certificate(record: dict[str, Any], rules: dict[str, Any], now: dt.datetime) -> list[dict[str, str]]:
    if record.get("backend") != "x509" and record.get("key_class") != "tls-cert":
        return []
    found = []
    expires, created = parse_time(record.get("expires")), parse_time(record.get("not_before") or record.get("created"))
    # notAfter is the last valid moment (RFC 5280, 4.1.2.5), as in x509_inventory and x509_acme_renew.
    if expires and expires < now:
        found.append(_finding(rules, "cert_expired", f"expired {(now - expires).days} days ago ({iso_utc(expires)})"))
    elif expires and (expires - now).days < rules["certificate_renewal_window_days"]:
        found.append(
            _finding(
                rules,
                "cert_expiring",
                f"expires in {(expires - now).days} days ({iso_utc(expires)}), "
                f"inside the {rules['certificate_renewal_window_days']}-day renewal window",
            )
        )
    limit = rules["cryptoperiod_days"].get("tls-cert")
    if (
        expires
        and created
        and limit
        and record.get("key_class") == "tls-cert"
        and not record.get("is_ca")
        and (expires - created).days > limit
    ):
        found.append(
            _finding(
                rules,
                "cert_validity_too_long",
                f"valid for {(expires - created).days} days; the limit for TLS certificates is {limit} days",
            )
        )
    signature = str(record.get("signature_algorithm") or record.get("signature_hash_algorithm") or "")
    weak = [name for name in rules["weak_signature_hashes"] if name in signature.lower().replace("-", "")]
    if weak:
        # A trust anchor's self-signature is not relied on; it still says the weak hash, so it is noted, low.
        severity = "low" if record.get("self_signed") else None
        message = f"signed with {signature} ({weak[0].upper()} is broken for signatures)"
        found.append(_finding(rules, "weak_signature", message, severity))
    return found


def _check_handling(record: dict[str, Any], rules: dict[str, Any]) -> list[dict[str, str]]:
    key_class = record.get("key_class")
    found = []
    # A public key is meant to be shared; only the secret or private half of a pair can be "exported".
    if record.get("exportable") is True and record.get("object_class") != "public_key":
        if key_class == "master-kek" and not rules["master_keys_exportable"]:
            found.append(
                _finding(
                    rules,
                    "exportable_master_key",
                    "the master key is exportable; master keys must never leave the backend",
                )
            )
        elif key_class and key_class != "master-kek" and key_class not in rules["exportable_allowed_classes"]:
            found.append(
                _finding(
                    rules,
                    "exportable_key",
                    f"a {key_class} is exportable; the policy allows "
                    f"export only for {', '.join(rules['exportable_allowed_classes'])}",
                )
            )
    if record.get("allow_plaintext_backup") is True and key_class not in rules["exportable_allowed_classes"]:
        found.append(_finding(rules, "plaintext_backup_allowed", f"a {key_class} allows plaintext backup"))
    if record.get("deletion_allowed") is True and key_class in rules["deletion_protected_classes"]:
        found.append(
            _finding(
                rules, "deletion_allowed", f"a {key_class} can be deleted without first changing its configuration"
            )
        )
    return found


def _check_tags(record: dict[str, Any], rules: dict[str, Any]) -> list[dict[str, str]]:
    required = rules["required_tags"].get(record.get("backend")) or []
    tags = record.get("tags")
    if not required or not isinstance(tags, dict):
        return []
    absent = [name for name in required if not tags.get(name)]
    if not absent:
        return []
    return [_finding(rules, "missing_tags", f"the key carries no {', '.join(absent)} tag")]


def _check_name(record: dict[str, Any], rules: dict[str, Any]) -> list[dict[str, str]]:
    if not rules["naming_rule"]:
        return []
    if record.get("backend") == "x509" and not rules["naming_rule_for_certificates"]:
        return []
    parts = name_parts(record)
    if not parts["valid"]:
        return [_finding(rules, "name_nonconforming", f"the name {parts['reason']}")]
    key_class = record.get("key_class")
    if key_class and key_class not in _TYPE_CLASSES.get(parts["type"], {key_class}):
        return [_finding(rules, "name_class_mismatch", f"the name says '{parts['type']}' but the key is a {key_class}")]
    return []


def evaluate_record(record: Any, policy: dict[str, Any] | None = None, now: Any = None) -> list[dict[str, str]]:
    """The policy findings for one KeyRecord (object or dict): algorithm and size, cryptoperiod and rotation,
    certificate lifetime and signature, export and deletion protection, naming. ``policy`` holds overrides."""
    rules = merged_policy(policy)
    record = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    moment = parse_time(now) or utc_now()
    if record.get("state") == "destroyed":
        return []
    return (
        _check_algorithm(record, rules)
        + _check_rotation(record, rules, moment)
        + _check_certificate(record, rules, moment)
        + _check_handling(record, rules)
        + _check_tags(record, rules)
        + _check_name(record, rules)
    )


def merge_findings(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One finding per code (the most severe wins), most severe first; sources and policy may both report one."""
    merged: dict[str, dict[str, Any]] = {}
    for group in groups:
        for item in group or []:
            code = item.get("code")
            if not code:
                continue
            if code not in merged or severity_rank(item.get("severity")) > severity_rank(merged[code]["severity"]):
                merged[code] = dict(item)
    return sorted(merged.values(), key=lambda item: (-severity_rank(item.get("severity")), item["code"]))
