# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit event schema, structural redaction and the hash chain.

Events are built from an allow-list: a field that is not named here never
reaches an event, whatever a caller passes. That is what keeps key material,
PINs, tokens, plaintexts and ciphertexts out of every sink.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import digest

ACTIONS = frozenset(
    {
        "create",
        "rotate",
        "rewrap",
        "reencrypt",
        "backup",
        "restore",
        "disable",
        "enable",
        "schedule_deletion",
        "cancel_deletion",
        "destroy",
        "revoke",
        "issue",
        "renew",
        "approve",
        "verify",
        "configure",
        "trim",
        "snapshot",
        "contain",
        "scan",
        "plan",
        "deny",
    }
)
OUTCOMES = frozenset({"success", "changed", "unchanged", "failure", "skipped", "planned", "refused"})

# Facts about a key's state that may appear in before/after/detail.
STATE_FIELDS = frozenset(
    {
        "versions",
        "latest_version",
        "min_decryption_version",
        "min_encryption_version",
        "min_available_version",
        "state",
        "enabled",
        "exportable",
        "deletion_allowed",
        "allow_plaintext_backup",
        "auto_rotate_period",
        "rotation_enabled",
        "rotation_period_days",
        "last_rotated",
        "deletion_date",
        "key_id",
        "arn",
        "alias",
        "aliases",
        "label",
        "cka_id",
        "type",
        "algorithm",
        "key_spec",
        "key_usage",
        "serial",
        "not_after",
        "fingerprint_sha256",
        "end_date",
        "successor",
        "revoked",
        "revocation_reason",
        "location",
        "count",
        "rewrapped",
        "reencrypted",
        "failed",
        "skipped",
        "total",
        "histogram",
        "path",
        "plan_digest",
        "mount",
        "tags_changed",
        "policy_changed",
        "exists",
        "backup_sha256",
        "recipients",
        "crl_confirmed",
        "outcome_reason",
        "key_class",
        "requires_approval",
    }
)
APPROVAL_FIELDS = ("approver", "principal", "key_fingerprint", "digest", "signed_at", "source")
EVENT_FIELDS = (
    "action",
    "backend",
    "key_ref",
    "outcome",
    "check_mode",
    "before",
    "after",
    "change_ref",
    "approvals",
    "detail",
)
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
    return [
        {field: approval.get(field) for field in APPROVAL_FIELDS if field in approval} for approval in approvals or []
    ]


def audit_event(
    action: str,
    backend: str,
    key_ref: str,
    outcome: str,
    check_mode: bool,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    change_ref: str | None = None,
    approvals: list[dict[str, Any]] | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
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
        return audit_event(
            event.get("action", ""),
            str(event.get("backend", "")),
            str(event.get("key_ref", "")),
            event.get("outcome", ""),
            bool(event.get("check_mode")),
            event.get("before"),
            event.get("after"),
            event.get("change_ref"),
            event.get("approvals"),
            event.get("detail"),
        )
    except (ValueError, AttributeError, TypeError):
        return None


def event_hash(event: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of the event without its own ``hash`` field."""
    return digest({key: value for key, value in event.items() if key != "hash"})


def chain_event(event: dict[str, Any], prev_hash: str) -> dict[str, Any]:
    chained = dict(event, prev_hash=prev_hash)
    chained["hash"] = event_hash(chained)
    return chained


# Fields the callback adds around a module's event; with EVENT_FIELDS they are everything a chained event holds.
CONTEXT_FIELDS = (
    "ts",
    "run_id",
    "seq",
    "operator",
    "host",
    "playbook",
    "play",
    "task",
    "module",
    "awx_job_id",
    "awx_user",
    "prev_hash",
    "hash",
)
ANCHOR_TYPE = "keyops.audit.anchor"


def anchor_record(
    run_id: str, last_seq: int, last_hash: str, count: int, first_prev_hash: str, ts: str
) -> dict[str, Any]:
    """The run summary written to a second sink, so a log cut after its last anchored event is detectable."""
    return {
        "type": ANCHOR_TYPE,
        "run_id": run_id,
        "last_seq": last_seq,
        "last_hash": last_hash,
        "count": count,
        "first_prev_hash": first_prev_hash,
        "ts": ts,
    }


def parse_record(line: str) -> dict[str, Any] | None:
    """One event or anchor from a JSON-lines file or a syslog line (the JSON is the message part)."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        record = json.loads(line[start:])
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_records(lines: Iterable[str]) -> tuple[list[tuple[int, dict[str, Any] | None]], list[dict[str, Any]]]:
    """Split a log into ``(line number, event or None when unreadable)`` and the anchor records found in it."""
    events: list[tuple[int, dict[str, Any] | None]] = []
    anchors: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = parse_record(line)
        if record is not None and record.get("type") == ANCHOR_TYPE:
            anchors.append(record)
        else:
            events.append((number, record))
    return events, anchors


def _broken(line: int, event: dict[str, Any] | None, code: str, reason: str) -> dict[str, Any]:
    event = event or {}
    return {"line": line, "seq": event.get("seq"), "run_id": event.get("run_id"), "code": code, "reason": reason}


def _link_break(
    index: int, events: list[tuple[int, dict[str, Any] | None]], expected_prev: str, seen: set[str]
) -> tuple[str, str]:
    """Name what most likely happened where an event does not link to the one before it."""
    prev_hash = events[index][1]["prev_hash"]  # type: ignore[index]
    later = {event.get("hash") for _unused, event in events[index + 1 :] if event}
    following = events[index + 1][1] if index + 1 < len(events) else None
    if prev_hash in later:
        return "reordered", "links to an event that comes later in the log: events were moved"
    if following and following.get("prev_hash") == expected_prev:
        return "inserted", "the chain continues without this event: it was inserted"
    if prev_hash in seen:
        return "inserted", "links to an older event, not the one before it: events were inserted before it"
    return "deleted", "links to an event that is not in the log: the event before it was deleted or rewritten"


def verify_chain(
    lines: Iterable[str], anchors: list[dict[str, Any]] | None = None, start_hash: str = GENESIS_HASH
) -> dict[str, Any]:
    """Check every event's hash and link, then the anchors; report the first break.

    ``anchors`` are run summaries from a second sink (anchor records found in ``lines`` are used too). A run
    whose anchored last event is missing or differs means the log was cut or rewritten after that point.
    """
    events, inline_anchors = read_records(lines)
    report: dict[str, Any] = {
        "ok": True,
        "count": 0,
        "runs": 0,
        "last_hash": start_hash,
        "first_broken": None,
        "anchors_checked": 0,
        "anchors_ignored": 0,
    }
    expected_prev = start_hash
    seen: set[str] = {start_hash}
    by_run: dict[str, dict[int, str]] = {}

    for index, (line, event) in enumerate(events):
        if event is None or not isinstance(event.get("hash"), str) or not isinstance(event.get("prev_hash"), str):
            report["first_broken"] = _broken(
                line, event, "malformed", "not an audit event (unreadable JSON or no hash/prev_hash)"
            )
            break
        if event_hash(event) != event["hash"]:
            report["first_broken"] = _broken(
                line, event, "edited", "the event's content does not match its hash: it was edited"
            )
            break
        if event["prev_hash"] != expected_prev:
            code, reason = _link_break(index, events, expected_prev, seen)
            report["first_broken"] = _broken(line, event, code, reason)
            break
        expected_prev = event["hash"]
        seen.add(expected_prev)
        by_run.setdefault(str(event.get("run_id")), {})[event.get("seq")] = event["hash"]  # type: ignore[index]
        report["count"] += 1

    report["runs"] = len(by_run)
    report["last_hash"] = expected_prev
    if report["first_broken"] is None:
        candidates = [*inline_anchors, *(anchors or [])]
        relevant = _relevant_anchors(candidates, seen, by_run)
        report["anchors_ignored"] = len(candidates) - len(relevant)
        report["first_broken"] = _check_anchors(by_run, relevant, report)
    report["ok"] = report["first_broken"] is None
    return report


def _relevant_anchors(
    anchors: list[dict[str, Any]], hashes: set[str], by_run: dict[str, dict[int, str]]
) -> list[dict[str, Any]]:
    """The anchors of this log's chain: runs in the log, and runs that continued it (found link by link).

    A syslog server may hold the anchors of other controllers' chains too; those are not this log's business.
    """
    # Every chain starts at the genesis hash, so it links no anchor to this log; run ids and later hashes do.
    known = set(hashes) - {GENESIS_HASH}
    relevant: list[dict[str, Any]] = []
    pending = list(anchors)
    grew = True
    while grew:
        grew = False
        for anchor in list(pending):
            if str(anchor.get("run_id")) in by_run or anchor.get("first_prev_hash") in known:
                relevant.append(anchor)
                pending.remove(anchor)
                known.add(str(anchor.get("last_hash")))
                grew = True
    return relevant


def _check_anchors(
    by_run: dict[str, dict[int, str]], anchors: list[dict[str, Any]], report: dict[str, Any]
) -> dict[str, Any] | None:
    for anchor in anchors:
        run_id, last_seq = str(anchor.get("run_id")), anchor.get("last_seq")
        report["anchors_checked"] += 1
        run = by_run.get(run_id)
        where = {"line": None, "seq": last_seq, "run_id": run_id}
        if not run:
            return dict(
                where,
                code="truncated",
                reason="the anchor names a run that is not in the log: the run was cut off the log",
            )
        if last_seq not in run:
            return dict(
                where,
                code="truncated",
                reason=f"the log ends this run at seq {max(run)}, the anchor at seq {last_seq}: the tail was cut",
            )
        if run[last_seq] != anchor.get("last_hash"):
            return dict(
                where,
                code="anchor_mismatch",
                reason="the anchored last event has another hash in the log: the chain was rewritten",
            )
    return None


def verify_log(path: str, anchor_path: str | None = None, start_hash: str = GENESIS_HASH) -> dict[str, Any]:
    """Verify a JSON-lines (or syslog) audit log file against the anchors in ``anchor_path``, if given."""
    anchors: list[dict[str, Any]] = []
    if anchor_path:
        with open(anchor_path, encoding="utf-8", errors="replace") as stream:
            anchors = read_records(stream)[1]
    with open(path, encoding="utf-8", errors="replace") as stream:
        return verify_chain(stream, anchors, start_hash)
