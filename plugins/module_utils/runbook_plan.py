# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what a rotation or a compromise response will do, decided from the inventory, the register and the
data-key stores, before anything changes.

Both planners work on KeyRecords that the *_info modules already read, so they talk to no backend themselves; they
open the data-key stores the register names to count what depends on each key. Their output drives the roles (one
list per backend, with every decision made here rather than in Jinja) and their ``audit_events`` (outcome
``planned``) are what keyops.runbooks.change_plan turns into the plan two approvers sign.

Resumability comes from ``since``: the time the run (or the incident response) started, from its journal. A key
whose latest version is newer than that was rotated by this run already and is not rotated again.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.audit import audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import WHOLE, open_store
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput, KeyNotFound
from ansible_collections.keyops.runbooks.plugins.module_utils.naming import build_key_name, parse_key_name
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy, requires_approval
from ansible_collections.keyops.runbooks.plugins.module_utils.reconcile import records_from_sources
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, parse_time, utc_now
from ansible_collections.keyops.runbooks.plugins.module_utils.register import RegisterEntry, load_register
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_rewrap import histogram

KEY_BACKENDS = ("vault_transit", "aws_kms", "pkcs11")
PEM_SUFFIXES = (".pem", ".crt", ".cer")
KMS_ROTATABLE_SPECS = ("SYMMETRIC_DEFAULT",)
KMS_MIN_ROTATION_DAYS = 90
_STORE_COLUMNS = ("table", "id_column", "key_ref_column", "ciphertext_column", "context_column")


# ---------------------------------------------------------------------------------------------------------------
# Records, register, stores
# ---------------------------------------------------------------------------------------------------------------


def names_of(record: dict[str, Any]) -> set[str]:
    """Every name an operator might use for a key: name, key_ref, id, ARN, key id, aliases with and without alias/."""
    names = {record.get(field) for field in ("name", "key_ref", "id", "arn", "key_id", "label")}
    for alias in record.get("aliases") or []:
        names |= {alias, alias.removeprefix("alias/")}
    return {str(name) for name in names if name}


def find_record(records: list[dict[str, Any]], wanted: str, backends: tuple[str, ...]) -> dict[str, Any]:
    matches = [record for record in records if record["backend"] in backends and wanted in names_of(record)]
    live = [record for record in matches if record.get("state") not in ("destroyed",)]
    if len(live) > 1:
        refs = ", ".join(sorted(str(record.get("key_ref") or record.get("id")) for record in live))
        raise InvalidInput(
            "Select key", wanted, f"the name matches {len(live)} keys ({refs})", "Name the key by its key_ref or ARN"
        )
    if not live:
        raise KeyNotFound(
            "Select key",
            wanted,
            f"no {' / '.join(backends)} key of that name was read by the inventory",
            "Check the name (key name, <mount>/<name>, ARN, alias or PKCS#11 label) and that its backend was read",
        )
    return live[0]


def register_entry(entries: list[RegisterEntry], record: dict[str, Any]) -> RegisterEntry | None:
    names = names_of(record)
    for entry in entries:
        if entry.backend == record["backend"] and (entry.name in names or (entry.key_id and entry.key_id in names)):
            return entry
    return None


def store_options(spec: dict[str, Any]) -> dict[str, Any]:
    """A register ``data_key_stores`` item as the ``store`` option of the rewrap and re-encrypt modules."""
    kind = spec.get("type") or ("url" if spec.get("url") else "sqlite")
    options: dict[str, Any] = {"type": kind}
    for field in ("path", "url", *_STORE_COLUMNS):
        if spec.get(field):
            options[field] = spec[field]
    if kind in ("sqlite", "jsonl") and not options.get("path"):
        raise InvalidInput(
            "Read data-key store", None, "a data_key_stores entry has no path", "Give each store its path (or url)"
        )
    return options


def store_label(options: dict[str, Any]) -> str:
    where = options.get("path") or options.get("url") or "?"
    return f"{os.path.basename(where)}#{options.get('table') or 'data_keys'}"


def _store_ref(store: Any, spec: dict[str, Any], candidates: list[str]) -> str:
    """What the store's key_ref column holds for this key: the register's key_ref when given, else the first
    candidate that has rows (stores differ: a transit key name alone, <mount>/<name>, an ARN)."""
    if spec.get("key_ref"):
        return str(spec["key_ref"])
    for candidate in candidates:
        if store.count(key_ref=candidate):
            return candidate
    return candidates[0]


def transit_stores(specs: list[dict[str, Any]], mount: str, name: str, target: int) -> list[dict[str, Any]]:
    stores = []
    for spec in specs:
        options = store_options(spec)
        with open_store(options) as store:
            ref = _store_ref(store, spec, [f"{mount}/{name}", name])
            counts = histogram(store, ref, WHOLE)
        stores.append(
            {
                "store": options,
                "label": store_label(options),
                "store_key_ref": ref,
                "total": sum(counts.values()),
                "pending": sum(count for version, count in counts.items() if version < target),
                "histogram": {f"v{version}": counts[version] for version in sorted(counts)},
            }
        )
    return stores


def kms_stores(specs: list[dict[str, Any]], record: dict[str, Any]) -> list[dict[str, Any]]:
    stores = []
    refs = [ref for ref in (record.get("arn") or record.get("id"), record.get("key_id")) if ref]
    refs += list(record.get("aliases") or [])
    for spec in specs:
        options = store_options(spec)
        with open_store(options) as store:
            ref = _store_ref(store, spec, refs)
            total = store.count(key_ref=ref)
        stores.append({"store": options, "label": store_label(options), "store_key_ref": ref, "total": total})
    return stores


def latest_version(record: dict[str, Any]) -> int:
    times = record.get("version_times") or {}
    versions = [int(version) for version in times] if times else []
    return max(versions) if versions else int(record.get("versions") or 1)


def latest_version_time(record: dict[str, Any]) -> dt.datetime | None:
    times = record.get("version_times") or {}
    return parse_time(times.get(str(latest_version(record)))) or parse_time(record.get("last_rotated"))


def rotated_since(record: dict[str, Any], since: dt.datetime | None) -> bool:
    """Whether the key got new material after ``since`` (the start of this run): then it is not rotated again."""
    if since is None:
        return False
    moment = (
        latest_version_time(record) if record["backend"] == "vault_transit" else parse_time(record.get("last_rotated"))
    )
    return bool(moment and moment >= since)


def due_date(record: dict[str, Any], entry: RegisterEntry | None, rules: dict[str, Any]) -> dt.datetime | None:
    """When the key is due: its last rotation plus the shorter of the register's period and the policy's
    cryptoperiod for its class."""
    if record.get("state") != "enabled":
        return None
    period = entry.rotation_period_days if entry else record.get("rotation_period_days")
    cryptoperiod = rules["cryptoperiod_days"].get(key_class_of(record, entry))
    limits = [int(value) for value in (period, cryptoperiod) if value]
    basis = parse_time(record.get("last_rotated")) or parse_time(record.get("created"))
    if basis is None:
        parts = parse_key_name(record.get("name") or "")
        basis = parse_time(parts["date"]) if parts["valid"] else None
    return basis + dt.timedelta(days=min(limits)) if basis and limits else None


def key_class_of(record: dict[str, Any], entry: RegisterEntry | None) -> str | None:
    return entry.key_class if entry else record.get("key_class")


def _event(
    action: str, backend: str, key_ref: str, key_class: str | None, change_ref: str | None, **states: Any
) -> dict[str, Any]:
    detail = dict(states.pop("detail", None) or {}, key_class=key_class)
    return audit_event(
        action,
        backend,
        key_ref,
        "planned",
        True,
        before=states.get("before"),
        after=states.get("after"),
        change_ref=change_ref,
        detail=detail,
    )


# ---------------------------------------------------------------------------------------------------------------
# Rotation
# ---------------------------------------------------------------------------------------------------------------


def _auto_rotate_seconds(days: int | None) -> int:
    return int(days or 0) * 86400


class RotationPlanner:
    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.rules = merged_policy(params.get("policy"))
        self.now = parse_time(params.get("as_of")) or utc_now()
        self.since = parse_time(params.get("since"))
        self.change_ref = params.get("change_ref")
        self.records, _scanned = records_from_sources(params.get("sources") or [])
        self.entries = load_register(params["register_path"]) if params.get("register_path") else []
        self.backends = tuple(params.get("backends") or (*KEY_BACKENDS, "x509"))
        self.events: list[dict[str, Any]] = []
        self.needs_human: list[str] = []
        self.skipped: list[dict[str, Any]] = []

    def selected(self) -> list[tuple[dict[str, Any], RegisterEntry | None, str, str | None]]:
        """(record, register entry, reason, due) for every key this run rotates."""
        key_backends = tuple(backend for backend in KEY_BACKENDS if backend in self.backends)
        named = [name.strip() for name in self.params.get("keys") or [] if name and name.strip()]
        chosen = []
        if named:
            for name in named:
                if self._certificate_entry(name):
                    continue
                record = find_record(self.records, name, key_backends)
                entry = register_entry(self.entries, record)
                due = due_date(record, entry, self.rules)
                chosen.append((record, entry, "named by the operator", iso_utc(due) if due else None))
            return chosen
        for record in self.records:
            if record["backend"] not in key_backends:
                continue
            entry = register_entry(self.entries, record)
            due = due_date(record, entry, self.rules)
            if due and due <= self.now:
                chosen.append((record, entry, "due", iso_utc(due)))
            elif due is None and record.get("state") == "enabled" and entry is None:
                self.skipped.append({"key": record.get("key_ref") or record["name"], "reason": "not in the register"})
        return chosen

    def _certificate_entry(self, name: str) -> RegisterEntry | None:
        return next((e for e in self.entries if e.backend == "x509" and name in (e.name, e.location)), None)

    # -- per backend -----------------------------------------------------------------------------------------

    def vault_item(
        self, record: dict[str, Any], entry: RegisterEntry | None, reason: str, due: str | None
    ) -> dict[str, Any]:
        mount = record.get("mount") or "transit"
        name = record["name"]
        ref = record.get("key_ref") or f"{mount}/{name}"
        key_class = key_class_of(record, entry)
        latest = latest_version(record)
        rotate = not rotated_since(record, self.since)
        target = latest + 1 if rotate else latest
        specs = list(entry.data_key_stores) if entry else []
        stores = transit_stores(specs, mount, name, target)
        min_dec = int(record.get("min_decryption_version") or 1)
        raise_min = bool(stores) and self.params.get("raise_min_decryption", True) and min_dec < target
        if rotate:
            self.events.append(
                _event(
                    "rotate",
                    "vault_transit",
                    ref,
                    key_class,
                    self.change_ref,
                    before={"latest_version": latest},
                    after={"latest_version": target},
                )
            )
        for store in stores:
            if store["pending"] or rotate:
                self.events.append(
                    _event(
                        "rewrap",
                        "vault_transit",
                        ref,
                        key_class,
                        self.change_ref,
                        after={"latest_version": target, "location": store["label"]},
                        detail={"count": store["pending"]},
                    )
                )
        if raise_min:
            self.events.append(
                _event(
                    "configure",
                    "vault_transit",
                    ref,
                    key_class,
                    self.change_ref,
                    before={"min_decryption_version": min_dec},
                    after={"min_decryption_version": target},
                    detail={
                        "requires_approval": requires_approval(
                            "raise_min_decryption_version", key_class, self.params.get("policy")
                        )
                    },
                )
            )
        elif not stores and min_dec < target:
            self.needs_human.append(
                f"{ref}: no data-key store is registered for it, so min_decryption_version stays at {min_dec}; "
                "raise it once every ciphertext under older versions is re-wrapped"
            )
        return {
            "name": name,
            "mount": mount,
            "key_ref": ref,
            "step": f"rotate {ref}",
            "key_class": key_class,
            "reason": reason,
            "due": due,
            "rotate": rotate,
            "latest_version": latest,
            "target_version": target,
            "min_decryption_version": min_dec,
            "raise_min_decryption": raise_min,
            "stores": stores,
            "requires_approval": requires_approval("rotate", key_class, self.params.get("policy")) or raise_min,
        }

    def kms_item(
        self, record: dict[str, Any], entry: RegisterEntry | None, reason: str, due: str | None
    ) -> dict[str, Any] | None:
        arn = record.get("arn") or record["id"]
        key_class = key_class_of(record, entry)
        if record.get("key_spec", record.get("algorithm")) not in KMS_ROTATABLE_SPECS or record.get("origin") not in (
            None,
            "AWS_KMS",
        ):
            self.needs_human.append(
                f"{record['name']} ({arn}): KMS cannot rotate {record.get('key_spec')} / {record.get('origin')} key "
                "material; create a successor key, move the alias and re-encrypt or re-sign by hand"
            )
            return None
        rotate = not rotated_since(record, self.since)
        stores = kms_stores(list(entry.data_key_stores) if entry else [], record)
        if rotate:
            self.events.append(_event("rotate", "aws_kms", arn, key_class, self.change_ref, after={"arn": arn}))
        for store in stores:
            self.events.append(
                _event(
                    "reencrypt",
                    "aws_kms",
                    arn,
                    key_class,
                    self.change_ref,
                    after={"arn": arn, "location": store["label"]},
                    detail={"count": store["total"]},
                )
            )
        return {
            "name": record["name"],
            "arn": arn,
            "step": f"rotate {record['name']}",
            "key_class": key_class,
            "reason": reason,
            "due": due,
            "rotate": rotate,
            "last_rotated": record.get("last_rotated"),
            "stores": stores,
            "requires_approval": requires_approval("rotate", key_class, self.params.get("policy")),
        }

    def pkcs11_item(
        self, record: dict[str, Any], entry: RegisterEntry | None, reason: str, due: str | None
    ) -> dict[str, Any]:
        key_class = key_class_of(record, entry)
        self.events.append(
            _event(
                "rotate",
                "pkcs11",
                record["id"],
                key_class,
                self.change_ref,
                before={"label": record["name"]},
                after={"successor": "dated successor"},
            )
        )
        self.needs_human.append(
            f"{record['name']} (PKCS#11 token {record.get('token_label')}): point the applications at the successor "
            "key; the old key keeps decrypting and verifying until its end date, then destroy it under dual control"
        )
        return {
            "label": record["name"],
            "cka_id": record.get("cka_id"),
            "token_label": record.get("token_label"),
            "algorithm": record.get("algorithm"),
            "key_class": key_class,
            # The item as keyops.runbooks.pkcs11_key takes it.
            "request": {
                "label": record["name"],
                "id": record.get("cka_id"),
                "state": "rotated",
                "key_class": key_class,
                "successor_label": self.successor_label(record),
            },
            "reason": reason,
            "due": due,
            "requires_approval": requires_approval("rotate", key_class, self.params.get("policy")),
        }

    def successor_label(self, record: dict[str, Any]) -> str:
        """The successor's dated label, the same on every run of the day (so a rerun finds the successor it made);
        a key dated today gets a round suffix, since the successor cannot share its label."""
        return successor_alias(record["name"], set(), self.now)

    def schedule_fixes(self, chosen_refs: set[str]) -> list[dict[str, Any]]:
        """Keys whose automatic rotation differs from the register: set it to the register's period."""
        fixes = []
        named = bool(self.params.get("keys"))
        for record in self.records:
            entry = register_entry(self.entries, record)
            if entry is None or record["backend"] not in self.backends or record.get("state") != "enabled":
                continue
            ref = record.get("key_ref") or record.get("arn") or record["id"]
            if named and ref not in chosen_refs:
                continue
            period = int(entry.rotation_period_days or 0)
            key_class = entry.key_class
            if record["backend"] == "vault_transit" and period:
                current = int(record.get("auto_rotate_period") or 0)
                if current != _auto_rotate_seconds(period):
                    fixes.append(
                        {
                            "backend": "vault_transit",
                            "key_ref": ref,
                            "name": record["name"],
                            "mount": record.get("mount") or "transit",
                            "auto_rotate_period": f"{period}d",
                            "key_class": key_class,
                        }
                    )
                    self.events.append(
                        _event(
                            "configure",
                            "vault_transit",
                            ref,
                            key_class,
                            self.change_ref,
                            before={"auto_rotate_period": current},
                            after={"auto_rotate_period": _auto_rotate_seconds(period)},
                        )
                    )
            elif (
                record["backend"] == "aws_kms"
                and period
                and record.get("key_spec") in KMS_ROTATABLE_SPECS
                and record.get("rotation_enabled") is False
            ):
                days = max(period, KMS_MIN_ROTATION_DAYS)
                fixes.append(
                    {
                        "backend": "aws_kms",
                        "key_ref": ref,
                        "name": record["name"],
                        "arn": ref,
                        "rotation_period_days": days,
                        "key_class": key_class,
                    }
                )
                self.events.append(
                    _event(
                        "configure",
                        "aws_kms",
                        ref,
                        key_class,
                        self.change_ref,
                        before={"rotation_enabled": False},
                        after={"rotation_enabled": True, "rotation_period_days": days},
                    )
                )
        return fixes

    def certificates(self) -> list[dict[str, Any]]:
        """Register certificates in PEM files, for x509_acme_renew (which decides which are due itself)."""
        if "x509" not in self.backends:
            return []
        named = {name.strip() for name in self.params.get("keys") or [] if name and name.strip()}
        overrides = {item.get("name"): item for item in self.params.get("certificates") or []}
        chosen = []
        for entry in self.entries:
            if entry.backend != "x509" or (named and entry.name not in named and entry.location not in named):
                continue
            override = overrides.get(entry.name) or {}
            if override.get("issuer", "acme") != "acme":
                continue
            if not entry.location.lower().endswith(PEM_SUFFIXES) and not override.get("cert_path"):
                self.needs_human.append(
                    f"{entry.name} ({entry.location}): not a PEM file; renew it by hand or give its PEM paths in "
                    "the role's certificates"
                )
                continue
            cert_path = override.get("cert_path") or entry.location
            chosen.append(
                {
                    "name": entry.name,
                    "cert_path": cert_path,
                    "key_path": override.get("key_path") or os.path.splitext(cert_path)[0] + ".key",
                    "names": override.get("names") or [entry.name],
                    "force": bool(named),
                }
            )
        return chosen

    def plan(self) -> dict[str, Any]:
        vault, kms, pkcs11 = [], [], []
        for record, entry, reason, due in self.selected():
            if record["backend"] == "vault_transit":
                vault.append(self.vault_item(record, entry, reason, due))
            elif record["backend"] == "aws_kms":
                item = self.kms_item(record, entry, reason, due)
                if item:
                    kms.append(item)
            else:
                pkcs11.append(self.pkcs11_item(record, entry, reason, due))
        refs = {item["key_ref"] for item in vault} | {item["arn"] for item in kms}
        fixes = self.schedule_fixes(refs)
        certificates = self.certificates()
        lock_keys = sorted(refs | {item["label"] for item in pkcs11} | {fix["key_ref"] for fix in fixes})
        approval_refs = sorted(
            {item["key_ref"] for item in vault if item["requires_approval"]}
            | {item["arn"] for item in kms if item["requires_approval"]}
            | {item["label"] for item in pkcs11 if item["requires_approval"]}
        )
        return {
            "changed": False,
            "vault_transit": vault,
            "aws_kms": kms,
            "pkcs11": pkcs11,
            "schedule_fixes": fixes,
            "certificates": certificates,
            "lock_keys": lock_keys,
            "requires_approval": bool(approval_refs),
            "approval_keys": approval_refs,
            "needs_human": self.needs_human,
            "skipped": self.skipped,
            "counts": {
                "keys": len(vault) + len(kms) + len(pkcs11),
                "data_keys": sum(store["total"] for item in vault + kms for store in item["stores"]),
                "schedule_fixes": len(fixes),
                "certificates_checked": len(certificates),
            },
            "audit_events": self.events,
            "steps": step_lines(self.events),
            "as_of": iso_utc(self.now),
        }


# ---------------------------------------------------------------------------------------------------------------
# Compromise response
# ---------------------------------------------------------------------------------------------------------------


def successor_alias(name: str, taken: set[str], today: Any) -> str:
    """A dated name for a compromised KMS key's successor that no key holds yet (same env, purpose, type)."""
    parts = parse_key_name(name)
    if not parts["valid"]:
        raise InvalidInput(
            "Name successor key",
            name,
            f"the name {parts['reason']}",
            "Give the successor's alias in the key's successor_alias",
        )
    candidate = build_key_name(parts["env"], parts["purpose"], parts["type"], today)
    round_ = 2
    while candidate in taken or candidate == name:
        candidate = build_key_name(parts["env"], f"{parts['purpose']}-r{round_}", parts["type"], today)
        round_ += 1
    return candidate


def vault_serial(cert_path: str) -> dict[str, Any]:
    """Serial (as Vault prints it), subject CN, expiry and fingerprint of a PEM or DER certificate file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        with open(cert_path, "rb") as stream:
            data = stream.read()
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except (OSError, ValueError) as error:
        raise InvalidInput(
            "Read certificate",
            cert_path,
            f"cannot read a certificate ({type(error).__name__})",
            "Check cert_path points at the certificate (PEM or DER)",
        ) from error
    raw = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 7) // 8 or 1, "big")
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return {
        "serial": ":".join(f"{byte:02x}" for byte in raw),
        "common_name": str(names[0].value) if names else None,
        "not_after": iso_utc(cert.not_valid_after_utc),
        "fingerprint_sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def normalise_key(item: Any) -> dict[str, Any]:
    """A compromised key given as a name, or as a dict with ``key`` and per-key options."""
    if isinstance(item, str):
        return {"key": item.strip()}
    if isinstance(item, dict):
        return dict(item, key=str(item.get("key") or "").strip())
    raise InvalidInput(
        "Plan compromise response", None, f"a key entry is a {type(item).__name__}", "Give names or dicts"
    )


def step_lines(events: list[dict[str, Any]]) -> list[str]:
    """The planned steps as one line each, for the operator reading a --check run."""
    lines = []
    for number, event in enumerate(events, 1):
        change = ""
        if event.get("before") or event.get("after"):
            change = f": {event.get('before') or {}} -> {event.get('after') or {}}"
        count = (event.get("detail") or {}).get("count")
        lines.append(
            f"{number}. {event['action']} {event['backend']} {event['key_ref']}{change}"
            + (f" ({count} data keys)" if count is not None else "")
        )
    return lines


def verification(
    transit: list[dict[str, Any]], kms: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """What keyops.runbooks.dek_verify checks before anything is retired: every store under the new material, every
    compromised transit version refusing to encrypt; and, once the old KMS keys are disabled, that they refuse."""
    checks = [
        {
            "backend": "vault_transit",
            "mount": item["mount"],
            "name": item["name"],
            "key_version": item["target_version"],
            "store": store["store"],
            "store_key_ref": store["store_key_ref"],
            "label": f"{item['key_ref']} {store['label']}",
        }
        for item in transit
        for store in item["stores"]
    ]
    checks += [
        {
            "backend": "aws_kms",
            "key": f"alias/{item['successor_alias']}",
            "old_key_refs": [item["arn"]],
            "store": store["store"],
            "label": f"{item['name']} {store['label']}",
        }
        for item in kms
        for store in item["stores"]
    ]
    probes = [
        {"backend": "vault_transit", "mount": item["mount"], "name": item["name"], "key_version": version}
        for item in transit
        for version in item["compromised_versions"]
    ]
    # A key pending deletion was disabled and probed by the attempt that scheduled it.
    kms_probes = [
        {"backend": "aws_kms", "key": item["arn"]}
        for item in kms
        if item["key_usage"] == "ENCRYPT_DECRYPT" and item["state"] != "pending_deletion"
    ]
    return checks, probes, kms_probes


class CompromisePlanner:
    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.since = parse_time(params.get("since"))
        self.change_ref = params.get("change_ref")
        self.records, _scanned = records_from_sources(params.get("sources") or [])
        self.entries = load_register(params["register_path"]) if params.get("register_path") else []
        self.events: list[dict[str, Any]] = []
        self.needs_human: list[str] = []
        self.today = parse_time(params.get("as_of")) or utc_now()

    def event(self, action: str, backend: str, ref: str, key_class: str | None, **states: Any) -> None:
        states["detail"] = dict(states.get("detail") or {}, requires_approval=True)
        self.events.append(_event(action, backend, ref, key_class, self.change_ref, **states))

    def transit(self, record: dict[str, Any], entry: RegisterEntry | None, options: dict[str, Any]) -> dict[str, Any]:
        mount = record.get("mount") or "transit"
        name = record["name"]
        ref = record.get("key_ref") or f"{mount}/{name}"
        key_class = key_class_of(record, entry)
        latest = latest_version(record)
        contained = rotated_since(record, self.since)
        target = latest if contained else latest + 1
        compromised = list(range(1, target))
        stores = transit_stores(list(entry.data_key_stores) if entry else [], mount, name, target)
        min_dec = int(record.get("min_decryption_version") or 1)
        min_enc = int(record.get("min_encryption_version") or 0)
        self.event("snapshot", "vault_transit", ref, key_class, before={"latest_version": latest})
        if not contained:
            self.event(
                "rotate",
                "vault_transit",
                ref,
                key_class,
                before={"latest_version": latest},
                after={"latest_version": target},
            )
        if min_enc < target:
            self.event(
                "contain",
                "vault_transit",
                ref,
                key_class,
                before={"min_encryption_version": min_enc},
                after={"min_encryption_version": target},
            )
        for store in stores:
            self.event(
                "rewrap",
                "vault_transit",
                ref,
                key_class,
                after={"latest_version": target, "location": store["label"]},
                detail={"count": store["pending"]},
            )
            self.event(
                "verify", "vault_transit", ref, key_class, after={"latest_version": target, "location": store["label"]}
            )
        if stores and min_dec < target:
            self.event(
                "configure",
                "vault_transit",
                ref,
                key_class,
                before={"min_decryption_version": min_dec},
                after={"min_decryption_version": target},
            )
        if not stores:
            self.needs_human.append(
                f"{ref}: no data-key store is registered for it; new material is in place and old versions can no "
                f"longer encrypt, but min_decryption_version stays at {min_dec} until someone confirms where its "
                "ciphertexts are and re-wraps them"
            )
        if options.get("trim"):
            if stores:
                self.event("trim", "vault_transit", ref, key_class, after={"min_available_version": target})
        else:
            self.needs_human.append(
                f"{ref}: versions {compromised[0] if compromised else '-'}..{target - 1} are disabled for decryption "
                "but still exist; trim them (trim_to_version) once backups holding old ciphertexts are past "
                "retention"
            )
        return {
            "name": name,
            "mount": mount,
            "key_ref": ref,
            "key_class": key_class,
            "contained": contained,
            "rotate": not contained,
            "latest_version": latest,
            "target_version": target,
            "compromised_versions": compromised,
            "min_decryption_version": min_dec,
            "min_encryption_version": min_enc,
            "raise_min_decryption": bool(stores),
            "trim": bool(options.get("trim")) and bool(stores),
            "stores": stores,
            "deletion_allowed": record.get("deletion_allowed"),
        }

    def kms(self, record: dict[str, Any], entry: RegisterEntry | None, options: dict[str, Any]) -> dict[str, Any]:
        arn = record.get("arn") or record["id"]
        key_class = key_class_of(record, entry)
        # A resumed run passes the aliases and successor recorded by the first run: by then the aliases have moved.
        aliases = list(options.get("aliases") or [a.removeprefix("alias/") for a in record.get("aliases") or []])
        taken = {name for other in self.records if other["backend"] == "aws_kms" for name in names_of(other)}
        new_alias = options.get("successor_alias") or successor_alias(record["name"], taken, self.today)
        successor_record = next(
            (
                other
                for other in self.records
                if other["backend"] == "aws_kms" and other is not record and new_alias in names_of(other)
            ),
            None,
        )
        stores = kms_stores(list(entry.data_key_stores) if entry else [], record)
        self.event("snapshot", "aws_kms", arn, key_class, before={"state": record.get("state")})
        if not successor_record:
            self.event(
                "create",
                "aws_kms",
                f"alias/{new_alias}",
                key_class,
                after={"key_spec": record.get("key_spec"), "alias": f"alias/{new_alias}"},
            )
        for alias in aliases:
            self.event(
                "contain",
                "aws_kms",
                f"alias/{alias}",
                key_class,
                before={"arn": arn},
                after={"alias": f"alias/{new_alias}"},
            )
        for store in stores:
            self.event(
                "reencrypt",
                "aws_kms",
                arn,
                key_class,
                after={"alias": f"alias/{new_alias}", "location": store["label"]},
                detail={"count": store["total"]},
            )
            self.event("verify", "aws_kms", f"alias/{new_alias}", key_class, after={"location": store["label"]})
        self.event(
            "disable", "aws_kms", arn, key_class, before={"state": record.get("state")}, after={"state": "disabled"}
        )
        self.event("schedule_deletion", "aws_kms", arn, key_class, after={"state": "pending_deletion"})
        if record.get("key_spec") not in KMS_ROTATABLE_SPECS:
            self.needs_human.append(
                f"{record['name']} ({arn}): a {record.get('key_spec')} key - re-sign or re-encrypt what it protected "
                f"under the successor alias/{new_alias}, and distribute the new public key"
            )
        return {
            "name": aliases[0] if aliases else record["name"],
            "arn": arn,
            "key_class": key_class,
            "key_spec": record.get("key_spec"),
            "key_usage": record.get("key_usage"),
            "aliases": aliases,
            "successor_alias": new_alias,
            "successor_arn": (successor_record or {}).get("arn"),
            "owner": record.get("owner") or (entry.owner if entry else None),
            "purpose": record.get("purpose") or (entry.purpose if entry else None),
            "state": record.get("state"),
            "stores": stores,
            "deletion_window_days": int(options.get("deletion_window_days") or 30),
        }

    def pkcs11(self, record: dict[str, Any], entry: RegisterEntry | None) -> dict[str, Any]:
        key_class = key_class_of(record, entry)
        self.event("snapshot", "pkcs11", record["id"], key_class, before={"label": record["name"]})
        self.event(
            "rotate",
            "pkcs11",
            record["id"],
            key_class,
            before={"label": record["name"]},
            after={"successor": "dated successor"},
        )
        self.needs_human.append(
            f"{record['name']} (PKCS#11 token {record.get('token_label')}): the HSM keeps no record of what the key "
            "protected; switch the applications to the successor, re-encrypt or re-sign their data, then destroy "
            f"the old key by label and id ({record.get('cka_id')}) under dual control"
        )
        return {
            "label": record["name"],
            "cka_id": record.get("cka_id"),
            "token_label": record.get("token_label"),
            "algorithm": record.get("algorithm"),
            "key_class": key_class,
            "request": {
                "label": record["name"],
                "id": record.get("cka_id"),
                "state": "rotated",
                "key_class": key_class,
                "successor_label": successor_alias(record["name"], set(), self.today),
            },
            "end_date": record.get("end_date"),
        }

    def certificates(self) -> dict[str, list[dict[str, Any]]]:
        vault_pki, acme = [], []
        for item in self.params.get("certificates") or []:
            issuer = item.get("issuer") or "vault_pki"
            name = item.get("name") or item.get("cert_path") or item.get("serial")
            if issuer == "acme":
                if not item.get("cert_path"):
                    raise InvalidInput("Plan revocation", name, "an ACME certificate needs cert_path", "Set cert_path")
                facts = vault_serial(item["cert_path"])
                acme.append({"name": name, "cert_path": item["cert_path"], **facts})
                self.event("revoke", "x509", name, "tls-cert", after={"serial": facts["serial"], "revoked": True})
                continue
            facts = vault_serial(item["cert_path"]) if item.get("cert_path") else {"serial": item.get("serial")}
            if not facts.get("serial"):
                raise InvalidInput(
                    "Plan revocation", name, "a Vault PKI certificate needs serial or cert_path", "Set one of them"
                )
            vault_pki.append({"name": name, "mount": item.get("mount") or "pki", **facts})
            self.event(
                "revoke",
                "x509",
                f"{item.get('mount') or 'pki'}/{facts['serial']}",
                "tls-cert",
                after={"serial": facts["serial"], "revoked": True},
            )
        return {"vault_pki": vault_pki, "acme": acme}

    def plan(self) -> dict[str, Any]:
        defaults = {
            "trim": self.params.get("trim", False),
            "deletion_window_days": self.params.get("deletion_window_days"),
        }
        keys = [dict(defaults, **normalise_key(item)) for item in self.params.get("keys") or []]
        keys = [item for item in keys if item.get("key")]
        if not keys:
            raise InvalidInput("Plan compromise response", None, "no compromised key was named", "Set keys")
        transit, kms, pkcs11, resolved = [], [], [], []
        for item in keys:
            record = find_record(self.records, item["key"], KEY_BACKENDS)
            entry = register_entry(self.entries, record)
            if entry is None and item.get("aliases"):
                # A resumed response: the aliases moved to the successor, the register still names the key by them.
                entry = register_entry(self.entries, {"backend": record["backend"], "aliases": item["aliases"]})
            if record["backend"] == "vault_transit":
                transit.append(self.transit(record, entry, item))
                resolved.append(dict(item, key=transit[-1]["key_ref"]))
            elif record["backend"] == "aws_kms":
                kms.append(self.kms(record, entry, item))
                resolved.append(
                    dict(
                        item, key=kms[-1]["arn"], aliases=kms[-1]["aliases"], successor_alias=kms[-1]["successor_alias"]
                    )
                )
            else:
                pkcs11.append(self.pkcs11(record, entry))
                resolved.append(dict(item, key=record["id"]))
        certificates = self.certificates()
        lock_keys = sorted(
            {item["key_ref"] for item in transit} | {item["arn"] for item in kms} | {item["label"] for item in pkcs11}
        )
        checks, probes, kms_probes = verification(transit, kms)
        return {
            "changed": False,
            "vault_transit": transit,
            "aws_kms": kms,
            "pkcs11": pkcs11,
            "certificates": certificates,
            "lock_keys": lock_keys,
            # The keys as this plan resolved them; a resumed response passes these back as keys.
            "resolved_keys": resolved,
            "verify_checks": checks,
            "verify_probes": probes,
            "kms_probes": kms_probes,
            "requires_approval": True,
            "needs_human": self.needs_human,
            "counts": {
                "keys": len(lock_keys),
                "data_keys": sum(store["total"] for item in transit + kms for store in item["stores"]),
                "certificates": len(certificates["vault_pki"]) + len(certificates["acme"]),
            },
            "audit_events": self.events,
            "steps": step_lines(self.events),
        }
