# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit event schema, structural redaction and the hash chain.

Events are built from an allow-list: a field that is not named here never
reaches an event, whatever a caller passes. That is what keeps key material,
PINs, tokens, plaintexts and ciphertexts out of every sink.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import digest

ACTIONS = frozenset({
    "create", "rotate", "rewrap", "reencrypt", "backup", "restore", "disable", "enable", "schedule_deletion",
    "cancel_deletion", "destroy", "revoke", "issue", "renew", "approve", "verify", "configure", "trim",
    "snapshot", "contain", "scan", "plan", "deny",
})
OUTCOMES = frozenset({"success", "changed", "unchanged", "failure", "skipped", "planned", "refused"})

# Facts about a key's state that may appear in before/after/detail.
STATE_FIELDS = frozenset({
    "versions", "latest_version", "min_decryption_version", "min_encryption_version", "min_available_version",
    "state", "enabled", "exportable", "deletion_allowed", "allow_plaintext_backup", "auto_rotate_period",
    "rotation_enabled", "rotation_period_days", "last_rotated", "deletion_date", "key_id", "arn", "alias",
    "aliases", "label", "cka_id", "type", "algorithm", "key_spec", "key_usage", "serial", "not_after",
    "fingerprint_sha256", "end_date", "successor", "revoked", "revocation_reason", "location", "count",
    "rewrapped", "reencrypted", "failed", "skipped", "total", "histogram", "path", "plan_digest", "mount",
    "tags_changed", "policy_changed", "exists", "backup_sha256", "recipients", "crl_confirmed", "outcome_reason",
    "key_class", "requires_approval",
})
APPROVAL_FIELDS = ("approver", "principal", "key_fingerprint", "digest", "signed_at", "source")
EVENT_FIELDS = ("action", "backend", "key_ref", "outcome", "check_mode", "before", "after", "change_ref",
                "approvals", "detail")
MAX_TEXT = 256
GENESIS_HASH = "0" * 64

# Options every key-changing module takes, so its events name the change and the approvals behind it.
AUDIT_ARGSPEC: dict[str, Any] = {
    "change_ref": {"type": "str"},
    "approvals": {"type": "list", "elements": "dict", "default": []},
}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= MAX_TEXT)


def _clean_value(value: Any) -> Any:
    if _scalar(value):
        return value
    if isinstance(value, (list, tuple)) and all(_scalar(item) for item in value):
        return list(value)
    if isinstance(value, dict) and all(_scalar(item) for item in value.values()):
        return {str(key)[:MAX_TEXT]: item for key, item in value.items()}
    return None


def state_summary(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """Keep only the allow-listed state fields with plain values."""
    if state is None:
        return None
    kept = {}
    for key, value in state.items():
        if key in STATE_FIELDS:
            cleaned = _clean_value(value)
            if cleaned is not None or value is None:
                kept[key] = cleaned
    return kept


def approval_summary(approvals: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [{field: approval.get(field) for field in APPROVAL_FIELDS if field in approval}
            for approval in approvals or []]


def audit_event(action: str, backend: str, key_ref: str, outcome: str, check_mode: bool,
                before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
                change_ref: str | None = None, approvals: list[dict[str, Any]] | None = None,
                detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build one audit event. Unknown actions or outcomes are programming errors, not operator input."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r}")
    return {
        "action": action,
        "backend": backend,
        "key_ref": str(key_ref)[:MAX_TEXT],
        "outcome": outcome,
        "check_mode": bool(check_mode),
        "before": state_summary(before),
        "after": state_summary(after),
        "change_ref": change_ref,
        "approvals": approval_summary(approvals),
        "detail": state_summary(detail) or {},
    }


def sanitize_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """Re-apply the allow-list to an event that came back from a module result."""
    try:
        return audit_event(event.get("action", ""), str(event.get("backend", "")), str(event.get("key_ref", "")),
                           event.get("outcome", ""), bool(event.get("check_mode")), event.get("before"),
                           event.get("after"), event.get("change_ref"), event.get("approvals"), event.get("detail"))
    except (ValueError, AttributeError, TypeError):
        return None


def event_hash(event: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the event without its own ``hash`` field."""
    return digest({key: value for key, value in event.items() if key != "hash"})


def chain_event(event: dict[str, Any], prev_hash: str) -> dict[str, Any]:
    chained = dict(event, prev_hash=prev_hash)
    chained["hash"] = event_hash(chained)
    return chained
