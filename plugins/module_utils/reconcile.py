# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reconcile what the backends hold with what the key register declares, then apply the policy.

The result is one inventory: every KeyRecord (register facts filled in where the backend keeps none), the
register entries nobody found, the entries of backends this run did not look at, and findings merged so a
code appears once per key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections import Counter
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.naming import TYPE_TO_CLASS
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import (
    SEVERITY_ORDER,
    backend_rotates,
    evaluate_record,
    merge_findings,
    merged_policy,
    name_parts,
    same_algorithm,
    severity_rank,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.records import (
    CSV_COLUMNS,
    finding,
    iso_utc,
    parse_time,
    utc_now,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.register import RegisterEntry

# Fields the register may fill in when the backend keeps no such fact (KMS has no owner, SoftHSM no dates).
_FILLED_FROM_REGISTER = ("owner", "purpose", "backup_location")
# Source modules name some findings their own way; the inventory reports them under the policy's codes.
CODE_ALIASES = {
    "expired": "cert_expired",
    "expiring": "cert_expiring",
    "name_not_compliant": "name_nonconforming",
    "naming": "name_nonconforming",
    "auto_rotation_off": "rotation_disabled",
}
# Codes the report judges again with the register's key class and this run's policy, so a source's verdict made
# without them (a class guessed from the name, the default policy) never stands beside a different one.
POLICY_OWNED_CODES = frozenset(
    {
        "exportable",
        "extractable",
        "exportable_key",
        "exportable_master_key",
        "plaintext_backup_allowed",
        "deletion_allowed",
        "algorithm",
        "algorithm_not_approved",
        "weak_key",
        "weak_algorithm",
        "key_too_short",
        "rotation_disabled",
        "rotation_overdue",
        "rotation_due",
        "name_nonconforming",
    }
)


@dataclasses.dataclass
class Inventory:
    records: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    unverified: list[dict[str, Any]]
    due: list[dict[str, Any]]
    backends: list[str]
    now: str

    def findings(self) -> list[dict[str, Any]]:
        """Every finding with the key it is about, most severe first."""
        flat = []
        for record in self.records + self.missing:
            for item in record.get("findings", []):
                flat.append(
                    dict(
                        item,
                        key=record.get("name"),
                        backend=record.get("backend"),
                        location=record.get("location"),
                        id=record.get("id"),
                    )
                )
        # A total order: sources hand records over in an order of their own (a thread pool's), and the reports and
        # their content digest must not change with it.
        return sorted(
            flat,
            key=lambda item: (
                -severity_rank(item["severity"]),
                item["code"],
                str(item["key"]),
                str(item["backend"]),
                str(item["location"]),
                str(item["id"]),
                str(item.get("message")),
            ),
        )

    def summary(self) -> dict[str, Any]:
        findings = self.findings()
        severities = Counter(item["severity"] for item in findings)
        codes = Counter(item["code"] for item in findings)
        return {
            "keys": len(self.records),
            "by_backend": dict(sorted(Counter(record["backend"] for record in self.records).items())),
            "by_class": dict(sorted(Counter(record.get("key_class") or "unknown" for record in self.records).items())),
            "by_state": dict(sorted(Counter(record.get("state") or "unknown" for record in self.records).items())),
            "findings": len(findings),
            "by_severity": {name: severities.get(name, 0) for name in reversed(SEVERITY_ORDER)},
            "by_code": dict(sorted(codes.items())),
            "compliant_keys": sum(1 for record in self.records if not record["findings"]),
            "not_in_register": codes.get("not_in_register", 0),
            "missing_from_backend": len(self.missing),
            "unverified_register_entries": len(self.unverified),
            "drift": sum(count for code, count in codes.items() if code.startswith("drift_")),
            "due_for_rotation": len(self.due),
            "backends_scanned": self.backends,
        }


def _norm_name(value: Any) -> str:
    text = str(value or "").strip().lower()
    return text[len("alias/") :] if text.startswith("alias/") else text


def _place(location: Any) -> str:
    # A block index (``file.pem#1``) says where in the file, not which file.
    return re.sub(r"#\d+$", "", str(location or "").strip().lower()).rstrip("/")


def _tokens(location: Any) -> list[str]:
    return [part for part in re.split(r"[/:@\s]+", _place(location)) if part]


def _same_location(left: Any, right: Any) -> bool:
    """Locations are spelled differently by people and backends (``transit`` vs ``http://host/transit``)."""
    one, two = _tokens(left), _tokens(right)
    if not one or not two:
        return True
    shorter, longer = (one, two) if len(one) <= len(two) else (two, one)
    return longer[-len(shorter) :] == shorter or set(shorter) <= set(longer)


def source_findings(findings: Any, informational: list[str]) -> list[dict[str, Any]]:
    """A source module's findings under the policy's codes, without the ones the report judges itself."""
    kept = []
    for item in findings or []:
        if not isinstance(item, dict) or not item.get("code"):
            continue
        code = CODE_ALIASES.get(item["code"], item["code"])
        if code in POLICY_OWNED_CODES:
            continue
        entry = dict(item, code=code)
        if code != item["code"]:
            entry["source_code"] = item["code"]
        if code in informational:
            entry["severity"] = "info"
        if entry.get("severity") not in SEVERITY_ORDER:
            entry["severity"] = "medium"
        kept.append(entry)
    return kept


def normalise_record(record: Any) -> dict[str, Any]:
    """A KeyRecord object or dict as a dict with every DESIGN.md field present (extras kept)."""
    data = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    for column in CSV_COLUMNS:
        data.setdefault(column, [] if column == "findings" else None)
    data["findings"] = [dict(item) for item in data.get("findings") or [] if isinstance(item, dict)]
    data["state"] = data.get("state") or "enabled"
    data["location"] = data.get("location") or ""
    if not data.get("key_class"):
        parts = name_parts(data)
        if parts["valid"]:
            data["key_class"] = TYPE_TO_CLASS[parts["type"]]
            data["key_class_source"] = "name"
    return data


def records_from_sources(sources: list[Any]) -> tuple[list[dict[str, Any]], set[str]]:
    """KeyRecords out of *_info module results (or plain record lists), and the backends they covered.

    A skipped task contributes nothing; a result that names its ``backend`` counts as scanned even when empty.
    """
    records: list[dict[str, Any]] = []
    backends: set[str] = set()
    pending = list(sources or [])
    while pending:
        item = pending.pop(0)
        if isinstance(item, list):
            pending[:0] = item
            continue
        if not isinstance(item, dict) or item.get("skipped"):
            continue
        if "id" in item and "backend" in item:
            records.append(normalise_record(item))
            backends.add(item["backend"])
            continue
        if isinstance(item.get("backend"), str):
            backends.add(item["backend"])
        for field in ("records", "keys", "certificates", "inventory"):
            if isinstance(item.get(field), list):
                pending[:0] = [entry for entry in item[field] if isinstance(entry, dict)]
        if isinstance(item.get("results"), list):  # a looped task's registered result
            pending[:0] = item["results"]
    return records, backends


def _dedupe(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record in records:
        identity = (record["backend"], str(record.get("location")), str(record.get("id")))
        if identity in seen:
            seen[identity]["findings"] = merge_findings(seen[identity]["findings"], record["findings"])
        else:
            seen[identity] = record
    return list(seen.values())


def _match(
    entry: RegisterEntry,
    by_name: dict[tuple[str, str], list[dict[str, Any]]],
    by_id: dict[tuple[str, str], list[dict[str, Any]]],
    taken: set[int],
) -> list[dict[str, Any]]:
    """The records an entry stands for: one key, or a key pair (a PKCS#11 private and public object share a label)."""
    candidates = list(by_name.get((entry.backend, _norm_name(entry.name)), []))
    if entry.key_id:
        candidates += by_id.get((entry.backend, _norm_name(entry.key_id)), [])
    candidates = [record for record in candidates if id(record) not in taken]
    placed = [record for record in candidates if _same_location(entry.location, record.get("location"))]
    if not placed:
        return []
    place = _place(placed[0].get("location"))
    return [record for record in placed if _place(record.get("location")) == place]


def _drift(entry: RegisterEntry, record: dict[str, Any], rules: dict[str, Any]) -> list[dict[str, str]]:
    severities = rules["finding_severities"]
    found = []
    if entry.owner and record.get("owner") and record["owner"].strip().lower() != entry.owner.strip().lower():
        found.append(
            finding(
                "drift_owner",
                severities["drift_owner"],
                f"the backend says owner '{record['owner']}', the register '{entry.owner}'",
            )
        )
    if (
        entry.algorithm
        and record.get("algorithm")
        and not same_algorithm(entry.algorithm, record["algorithm"], None, record.get("length_bits"))
    ):
        found.append(
            finding(
                "drift_algorithm",
                severities["drift_algorithm"],
                f"the backend holds {record['algorithm']} ({record.get('length_bits') or '?'}), "
                f"the register says {entry.algorithm}",
            )
        )
    backend_class = record.get("key_class")
    # A class the backend only read off the key's name is a guess, not a label that can drift.
    guessed = record.get("key_class_source") == "name" or backend_class == _class_by_name(record)
    if entry.key_class and backend_class and backend_class != entry.key_class and not guessed:
        found.append(
            finding(
                "drift_key_class",
                severities["drift_key_class"],
                f"the backend labels it {backend_class}, the register {entry.key_class}",
            )
        )
    # Only a backend that keeps a rotation schedule can disagree with the register's period (0: none).
    rotates = backend_rotates(record)
    registered = entry.rotation_period_days
    if rotates is not None and registered is not None:
        # KMS may say rotation is on without saying the period: then only "never" in the register disagrees.
        actual = (int(record.get("rotation_period_days") or 0) or None) if rotates else 0
        if (actual is None and registered == 0) or (actual is not None and actual != registered):
            found.append(
                finding(
                    "drift_rotation",
                    severities["drift_rotation"],
                    f"the backend rotates {_every(actual)}, the register says {_every(registered)}",
                )
            )
    return found


def _every(days: int | None) -> str:
    if days is None:
        return "on a schedule it does not report"
    return f"every {days} days" if days else "never"


def _class_by_name(record: dict[str, Any]) -> str | None:
    parts = name_parts(record)
    return TYPE_TO_CLASS[parts["type"]] if parts["valid"] else None


def _fill(entry: RegisterEntry, record: dict[str, Any]) -> None:
    # Classification is the register's job: its key class decides which cryptoperiod and rules apply.
    if record.get("key_class") and record["key_class"] != entry.key_class and record.get("key_class_source") != "name":
        record["backend_key_class"] = record["key_class"]
    record["key_class"] = entry.key_class
    for field in _FILLED_FROM_REGISTER:
        if not record.get(field):
            record[field] = getattr(entry, field)
    record.pop("key_class_source", None)
    # Where the backend keeps no schedule of its own, the register's period is the schedule.
    if not record.get("rotation_period_days") and backend_rotates(record) is None and entry.rotation_period_days:
        record["rotation_period_days"] = entry.rotation_period_days
    record["custodians"] = list(entry.custodians)
    record["register_line"] = entry.line
    if entry.data_key_stores:
        record["data_key_stores"] = list(entry.data_key_stores)


def _due_date(record: dict[str, Any], rules: dict[str, Any]) -> dt.datetime | None:
    """When the key must next be rotated (or the certificate renewed), by the stricter of schedule and policy."""
    if record.get("state") != "enabled":
        return None
    if record.get("backend") == "x509" or record.get("key_class") == "tls-cert":
        expires = parse_time(record.get("expires"))
        return expires - dt.timedelta(days=rules["certificate_renewal_window_days"]) if expires else None
    cryptoperiod = rules["cryptoperiod_days"].get(record.get("key_class"))
    period = record.get("rotation_period_days")
    limits = [int(value) for value in (cryptoperiod, period) if value]
    basis = parse_time(record.get("last_rotated")) or parse_time(record.get("created"))
    if basis is None:
        parts = name_parts(record)
        basis = parse_time(parts["date"]) if parts["valid"] else None
    return basis + dt.timedelta(days=min(limits)) if basis and limits else None


def build_inventory(
    records: list[Any],
    entries: list[RegisterEntry] | None,
    policy: dict[str, Any] | None = None,
    now: Any = None,
    backends: set[str] | list[str] | None = None,
    due_window_days: int | None = None,
    unread: dict[str, str] | None = None,
) -> Inventory:
    """Reconcile ``records`` with the register ``entries`` (None: no register), evaluate the policy, list what is due.

    ``backends`` are the backends this run inventoried; register entries of any other backend are reported as
    unverified rather than missing. ``unread`` maps a backend to why one of its sources could not be read: its
    entries that no record matches are unverified too, since the key may sit on the source that was not read.
    """
    rules = merged_policy(policy)
    moment = parse_time(now) or utc_now()
    items = _dedupe([normalise_record(record) for record in records])
    scanned = set(backends or ()) | {record["backend"] for record in items}
    severities = rules["finding_severities"]

    by_name: dict[tuple[str, str], list[dict[str, Any]]] = {}
    by_id: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in items:
        names = {_norm_name(record.get("name"))} | {_norm_name(alias) for alias in record.get("aliases") or []}
        for name in names:
            by_name.setdefault((record["backend"], name), []).append(record)
        by_id.setdefault((record["backend"], _norm_name(record.get("id"))), []).append(record)

    missing: list[dict[str, Any]] = []
    unverified: list[dict[str, Any]] = []
    taken: set[int] = set()
    drift: dict[int, list[dict[str, str]]] = {}
    for entry in entries or []:
        if entry.backend not in scanned:
            unverified.append(dict(entry.to_dict(), reason=f"no {entry.backend} inventory ran"))
            continue
        matched = _match(entry, by_name, by_id, taken)
        if not matched and unread and entry.backend in unread:
            unverified.append(dict(entry.to_dict(), reason=unread[entry.backend]))
            continue
        if not matched:
            placeholder = {column: None for column in CSV_COLUMNS}
            placeholder.update(
                id="",
                name=entry.name,
                backend=entry.backend,
                location=entry.location,
                key_class=entry.key_class,
                owner=entry.owner,
                purpose=entry.purpose,
                algorithm=entry.algorithm,
                rotation_period_days=entry.rotation_period_days,
                backup_location=entry.backup_location,
                state="missing",
                register_line=entry.line,
            )
            placeholder["findings"] = [
                finding(
                    "missing_from_backend",
                    severities["missing_from_backend"],
                    f"registered (register line {entry.line}) but not found in {entry.backend} at {entry.location}",
                )
            ]
            missing.append(placeholder)
            continue
        for record in matched:
            taken.add(id(record))
            drift[id(record)] = _drift(entry, record, rules)
            _fill(entry, record)

    for record in items:
        record.pop("key_class_source", None)
        own = source_findings(record["findings"], rules["informational_codes"])
        exempt = record.get("is_ca") is True and not rules["register_ca_certificates"]
        if entries is not None and id(record) not in taken and record.get("state") != "destroyed" and not exempt:
            own.append(
                finding(
                    "not_in_register",
                    severities["not_in_register"],
                    f"found in {record['backend']} at {record.get('location') or '?'} but the "
                    "register does not list it",
                )
            )
        due = _due_date(record, rules)
        if due and not record.get("next_rotation_due") and record.get("key_class") != "tls-cert":
            record["next_rotation_due"] = iso_utc(due)
        record["findings"] = merge_findings(own, drift.get(id(record), []), evaluate_record(record, rules, moment))

    window = rules["rotation_due_window_days"] if due_window_days is None else due_window_days
    horizon = moment + dt.timedelta(days=window)
    due_list = []
    for record in items:
        due = _due_date(record, rules)
        if due and due <= horizon:
            due_list.append(
                {
                    "name": record["name"],
                    "backend": record["backend"],
                    "location": record["location"],
                    "key_class": record.get("key_class"),
                    "owner": record.get("owner"),
                    "due": iso_utc(due),
                    "days_left": (due - moment).days,
                    "action": "renew" if record.get("key_class") == "tls-cert" else "rotate",
                }
            )
    # Total orders (see Inventory.findings): equal inventories give equal reports and digests.
    due_list.sort(key=lambda item: (item["due"], item["backend"], str(item.get("location")), str(item.get("name"))))
    items.sort(
        key=lambda record: (
            record["backend"],
            str(record.get("location")),
            str(record.get("name")),
            str(record.get("id")),
        )
    )
    return Inventory(items, missing, unverified, due_list, sorted(scanned), iso_utc(moment))
