# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The key-management policy in force: approved algorithms and sizes, cryptoperiods, dual-control rules.

Defaults follow NIST SP 800-57 part 1 and the usual PCI DSS / NCA ECC readings. Every value can be
overridden per run by passing a ``policy`` dict (same shape as ``DEFAULT_POLICY``) to the module or role.
"""

from __future__ import annotations

import copy
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import PolicyViolation

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
    "approval_required_actions": ["export", "destroy", "schedule_deletion", "compromise_response", "trim",
                                  "raise_min_decryption_version"],
    "approval_required_classes": ["master-kek"],
    "approval_quorum": 2,
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


def check_algorithm(backend: str, algorithm: str, key_ref: str, allow_unapproved: bool,
                    policy: dict[str, Any] | None = None) -> list[str]:
    """Refuse an unapproved algorithm for a new key, or return a warning when the caller overrides policy."""
    approved = merged_policy(policy)["approved_algorithms"].get(backend, [])
    if algorithm in approved:
        return []
    if not allow_unapproved:
        raise PolicyViolation("Create key", key_ref, f"algorithm '{algorithm}' is not approved for {backend} "
                              f"(approved: {', '.join(approved)})",
                              "Pick an approved algorithm, or set allow_unapproved_algorithm=true with a recorded "
                              "exception")
    return [f"Key '{key_ref}' uses '{algorithm}', which the policy does not approve; created on explicit override."]


def requires_approval(action: str, key_class: str | None, policy: dict[str, Any] | None = None) -> bool:
    rules = merged_policy(policy)
    return action in rules["approval_required_actions"] or (key_class in rules["approval_required_classes"])
