# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what the pkcs11_* modules do, on top of backends/pkcs11.py.

Each handler reads the token first and builds the real plan; check mode stops there. Mutations sit behind
the check-mode guard, dual-controlled ones behind approvals.require_approvals.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keyops.runbooks.plugins.module_utils.approvals import require_approvals
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.backends import pkcs11 as p11
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    KeyNotFound,
    PolicyViolation,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.naming import parse_key_name, successor_name
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, utc_now

KEY_ITEM_SPEC: dict[str, Any] = {
    "label": {"type": "str", "required": True},
    "id": {"type": "str"},
    "algorithm": {"type": "str", "choices": list(p11.ALGORITHMS)},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent", "rotated"]},
    "key_class": {"type": "str", "choices": ["master-kek", "kek", "dek", "signing", "transport", "tls-cert"]},
    "extractable": {"type": "bool", "default": False},
    "sensitive": {"type": "bool", "default": True},
    "start_date": {"type": "str"},
    "end_date": {"type": "str"},
    "cryptoperiod_days": {"type": "int"},
    "successor_label": {"type": "str"},
    "successor_id": {"type": "str"},
}


def _day(value: Any, label: str, option: str) -> dt.date | None:
    if value in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as error:
        raise InvalidInput("Read date", label, f"{option} '{value}' is not YYYY-MM-DD", f"Fix {option}") from error


def _outcome(check_mode: bool, changed: bool) -> str:
    if not changed:
        return "unchanged"
    return "planned" if check_mode else "changed"


def _state(keys: list[p11.KeyObject]) -> dict[str, Any]:
    """Before/after facts of a key (never material): what a diff and an audit event may carry."""
    if not keys:
        return {"exists": False}
    main = next((key for key in keys if key.object_class != p11.PUBLIC), keys[0])
    end_dates = [key.end_date for key in keys if key.end_date]
    return {
        "exists": True,
        "label": main.label,
        "cka_id": main.id_hex,
        "algorithm": main.algorithm,
        "type": "+".join(sorted(key.object_class for key in keys)),
        "exportable": bool(main.extractable),
        "end_date": end_dates[0] if end_dates else None,
    }


def _spec_state(spec: p11.KeySpec) -> dict[str, Any]:
    return {
        "exists": True,
        "label": spec.label,
        "cka_id": spec.key_id.hex(),
        "algorithm": spec.algorithm,
        "type": "+".join(sorted(spec.classes)),
        "exportable": spec.extractable,
        "end_date": spec.end_date.isoformat() if spec.end_date else None,
    }


# ---------------------------------------------------------------------------------------------------------------
# pkcs11_key


@dataclasses.dataclass
class KeyPlan:
    item: dict[str, Any]
    label: str
    key_id: bytes
    key_class: str | None
    action: str  # create, rotate, destroy, none
    before: dict[str, Any]
    after: dict[str, Any]
    spec: p11.KeySpec | None = None
    existing: list[p11.KeyObject] = dataclasses.field(default_factory=list)
    end_old: dt.date | None = None

    @property
    def changed(self) -> bool:
        return self.action != "none"


def _match(session: Any, label: str, key_id: bytes) -> list[p11.KeyObject]:
    """The key (or key pair) under exactly this label and id; a duplicate of a class is an error."""
    keys = p11.list_keys(session, label=label, key_id=key_id)
    classes = [key.object_class for key in keys]
    if any(classes.count(name) > 1 for name in set(classes)):
        raise p11._duplicates_error(
            "Find key",
            f"{label} (id {key_id.hex()})",
            keys,
            "Remove the duplicates by hand (they are indistinguishable by label and id), then run again",
        )
    return keys


def _refuse_clashes(session: Any, label: str, key_id: bytes) -> None:
    """A new key must not share its label or its id with another key: that is how duplicates start."""
    clashes = [key for key in p11.list_keys(session, label=label) if key.key_id != key_id]
    clashes += [key for key in p11.list_keys(session, key_id=key_id) if key.label != label]
    if clashes:
        raise p11._duplicates_error(
            "Create key",
            f"{label} (id {key_id.hex()})",
            clashes,
            "Pass the id of the existing key to manage it, or pick a new label and id",
        )


def _new_spec(
    item: dict[str, Any],
    label: str,
    key_id: bytes,
    algorithm: str,
    key_class: str | None,
    policy: dict[str, Any],
    start: dt.date,
) -> p11.KeySpec:
    if policy.get("naming_rule") and not parse_key_name(label)["valid"]:
        raise PolicyViolation(
            "Create key",
            label,
            f"the label {parse_key_name(label)['reason']}",
            "Name it ENV-PURPOSE-TYPE-YYYYMMDD (keyops.runbooks.key_name builds one), or pass "
            "policy.naming_rule=false with a recorded exception",
        )
    if algorithm not in policy["approved_algorithms"].get(p11.BACKEND, []):
        raise PolicyViolation(
            "Create key", label, f"algorithm '{algorithm}' is not approved by the policy", "Pick an approved algorithm"
        )
    if key_class == "master-kek" and item["extractable"] and not policy.get("master_keys_exportable"):
        raise PolicyViolation(
            "Create key",
            label,
            "master KEKs may not be extractable under the policy",
            "Leave extractable false for master KEKs",
        )
    end = _day(item.get("end_date"), label, "end_date")
    period = item.get("cryptoperiod_days") or policy["cryptoperiod_days"].get(key_class or "")
    if end is None and period:
        end = start + dt.timedelta(days=int(period))
    if end is not None and end <= start:
        raise InvalidInput(
            "Create key",
            label,
            f"end_date {end} is not after start_date {start}",
            "Give an end date after the start date",
        )
    return p11.KeySpec(
        label=label,
        key_id=key_id,
        algorithm=algorithm,
        extractable=item["extractable"],
        sensitive=item["sensitive"],
        start_date=start,
        end_date=end,
    )


def plan_key(session: Any, item: dict[str, Any], policy: dict[str, Any], today: dt.date) -> list[KeyPlan]:
    label = item["label"]
    explicit_id = p11.id_from_hex(item.get("id"), label)
    key_class = p11.key_class_for(label, item.get("key_class"))

    if item["state"] == "absent":
        if explicit_id is None:
            raise InvalidInput(
                "Destroy key",
                label,
                "destroying needs the exact CKA_ID as well as the label",
                "Pass id (see pkcs11_key_info) so that only that key can match",
            )
        existing = _match(session, label, explicit_id)
        action = "destroy" if existing else "none"
        return [
            KeyPlan(item, label, explicit_id, key_class, action, _state(existing), {"exists": False}, existing=existing)
        ]

    key_id = explicit_id or p11.default_id(label)
    existing = _match(session, label, key_id)

    if item["state"] == "present":
        algorithm = item.get("algorithm") or "AES-256"
        if existing:
            found = _state(existing)
            if found["algorithm"] != algorithm:
                raise Conflict(
                    "Create key",
                    label,
                    f"a {found['algorithm']} key already has this label and id, not {algorithm}",
                    "Pick another label, or rotate the key to change its algorithm",
                )
            return [KeyPlan(item, label, key_id, key_class, "none", found, found, existing=existing)]
        _refuse_clashes(session, label, key_id)
        start = _day(item.get("start_date"), label, "start_date") or today
        spec = _new_spec(item, label, key_id, algorithm, key_class, policy, start)
        return [KeyPlan(item, label, key_id, key_class, "create", {"exists": False}, _spec_state(spec), spec=spec)]

    # rotated: a successor under a new dated label and id; the old key's cryptoperiod ends today.
    new_label = item.get("successor_label") or successor_name(label, today)
    if new_label == label:
        raise InvalidInput(
            "Rotate key",
            label,
            "the successor would get the same label (the key is dated today)",
            "Pass successor_label, or rotate on another day",
        )
    new_id = p11.id_from_hex(item.get("successor_id"), new_label) or p11.default_id(new_label)
    successor = _match(session, new_label, new_id)
    if not existing and not successor:
        raise KeyNotFound(
            "Rotate key",
            label,
            f"no key with id {key_id.hex()} is on the token",
            "Check label and id (pkcs11_key_info lists them)",
        )
    old_state = _state(existing)
    if successor:
        return [
            KeyPlan(
                item,
                label,
                key_id,
                key_class,
                "none",
                old_state,
                dict(old_state, successor=new_label),
                existing=existing,
            )
        ]
    algorithm = item.get("algorithm") or old_state["algorithm"]
    _refuse_clashes(session, new_label, new_id)
    spec = _new_spec(
        item, new_label, new_id, algorithm, p11.key_class_for(new_label, item.get("key_class")), policy, today
    )
    after = dict(old_state, end_date=today.isoformat(), successor=new_label)
    return [
        KeyPlan(item, label, key_id, key_class, "rotate", old_state, after, spec=spec, existing=existing, end_old=today)
    ]


def _created(token: p11.Token, spec: p11.KeySpec) -> list[p11.KeyObject]:
    with token.session() as fresh:
        keys = p11.list_keys(fresh, label=spec.label, key_id=spec.key_id)
        p11.confirm(keys, spec)
        return keys


def key_handler(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    check_mode = module.check_mode
    policy = merged_policy(params.get("policy"))
    today = utc_now().date()
    token = p11.Token(params)
    results, events, before, after = [], [], {}, {}
    changed = False

    with token.session() as session:
        plans = [plan for item in params["keys"] for plan in plan_key(session, item, policy, today)]
        seen = {}
        for plan in plans:
            if (plan.label, plan.key_id) in seen:
                raise InvalidInput(
                    "Plan keys", plan.label, "the label and id appear twice in keys", "List each key once"
                )
            seen[(plan.label, plan.key_id)] = plan

        for plan in plans:
            uri = token.uri(plan.label, plan.key_id)
            audit_action = {"create": "create", "rotate": "rotate", "destroy": "destroy"}.get(plan.action) or {
                "present": "create",
                "absent": "destroy",
                "rotated": "rotate",
            }[plan.item["state"]]
            if plan.changed:
                require_approvals(audit_action, uri, plan.key_class, params["approvals"], check_mode, policy)
            result: dict[str, Any] = {
                "label": plan.label,
                "id": plan.key_id.hex(),
                "uri": uri,
                "state": plan.item["state"],
                "action": plan.action,
                "changed": plan.changed,
                "key_class": plan.key_class,
            }
            if plan.changed and not check_mode:
                if plan.action == "create":
                    p11.generate(session, plan.spec)
                    result["objects"] = [key.summary() for key in _created(token, plan.spec)]
                elif plan.action == "rotate":
                    # End date first: a rerun after a failure here still finds no successor and finishes the job.
                    p11.set_end_date(plan.existing, plan.end_old)
                    p11.generate(session, plan.spec)
                    result["successor"] = {
                        "label": plan.spec.label,
                        "id": plan.spec.key_id.hex(),
                        "uri": token.uri(plan.spec.label, plan.spec.key_id),
                        "objects": [key.summary() for key in _created(token, plan.spec)],
                    }
                elif plan.action == "destroy":
                    p11.destroy(plan.existing)
                    with token.session() as fresh:
                        if p11.list_keys(fresh, label=plan.label, key_id=plan.key_id):
                            raise IntegrityError(
                                "Destroy key",
                                uri,
                                "objects with this label and id are still on the token after C_DestroyObject",
                                "Inspect the token with pkcs11_key_info",
                            )
            if plan.action == "rotate":
                result["previous"] = {
                    "label": plan.label,
                    "id": plan.key_id.hex(),
                    "uri": uri,
                    "end_date": plan.end_old.isoformat(),
                }
                result.setdefault(
                    "successor",
                    {
                        "label": plan.spec.label,
                        "id": plan.spec.key_id.hex(),
                        "uri": token.uri(plan.spec.label, plan.spec.key_id),
                    },
                )
            elif plan.action == "none" and plan.existing:
                result["objects"] = [key.summary() for key in plan.existing]
            results.append(result)
            changed = changed or plan.changed
            before[uri], after[uri] = plan.before, plan.after
            events.append(
                audit_event(
                    audit_action,
                    p11.BACKEND,
                    uri,
                    _outcome(check_mode, plan.changed),
                    check_mode,
                    plan.before,
                    plan.after,
                    params.get("change_ref"),
                    params["approvals"],
                    {"key_class": plan.key_class, "location": token.label},
                )
            )

    return {
        "changed": changed,
        "keys": results,
        "audit_events": events,
        "diff": {"before": before, "after": after},
        "token": {"label": token.label, "serial": token.serial},
    }


# ---------------------------------------------------------------------------------------------------------------
# pkcs11_key_info


# The options of pkcs11_key_info; key_inventory validates each of its PKCS#11 sources against them too.
INFO_ARGSPEC: dict[str, Any] = dict(
    label={"type": "str"},
    object_classes={"type": "list", "elements": "str", "choices": list(p11.OBJECT_CLASSES)},
    policy={"type": "dict"},
    **p11.PKCS11_ARGSPEC,
)


def info_handler(module: AnsibleModule) -> dict[str, Any]:
    return key_info(module.params)


def key_info(params: dict[str, Any]) -> dict[str, Any]:
    """What pkcs11_key_info returns: the token's key objects (or those with one label) as KeyRecords."""
    policy = merged_policy(params.get("policy"))
    token = p11.Token(params)
    approved = policy["approved_algorithms"].get(p11.BACKEND, [])
    classes = params.get("object_classes") or list(p11.OBJECT_CLASSES)
    today = utc_now().date()
    with token.session() as session:
        keys = [key for key in p11.list_keys(session, label=params.get("label")) if key.object_class in classes]
        records = [p11.key_record(token, key, today, approved) for key in keys]
    return {
        "changed": False,
        "keys": records,
        "count": len(records),
        "token": {"label": token.label, "serial": token.serial},
    }


# ---------------------------------------------------------------------------------------------------------------
# pkcs11_key_backup


def _wrapping_key(
    session: Any,
    params: dict[str, Any],
    name: str,
    label: str | None = None,
    key_id: str | None = None,
    direction: str = "wrap",
) -> p11.KeyObject:
    mechanism = p11.WRAP_MECHANISMS[name]
    object_class = mechanism["wrapping_class"] if direction == "wrap" else mechanism["unwrapping_class"]
    purpose = "wrapping key" if direction == "wrap" else "unwrapping key"
    key = p11.find_one(session, label, p11.id_from_hex(key_id, label), object_class, purpose)
    if direction not in key.capabilities:
        raise InvalidInput(
            f"{direction.capitalize()} keys",
            key.label,
            f"the {purpose} does not have CKA_{direction.upper()} set",
            f"Use a {purpose} made for {direction}ping",
        )
    return key


def _entry(token: p11.Token, key: p11.KeyObject, public: p11.KeyObject | None) -> dict[str, Any]:
    entry = {
        "label": key.label,
        "id": key.id_hex,
        "object_class": key.object_class,
        "key_type": key.key_type,
        "algorithm": key.algorithm,
        "length_bits": key.bits,
        "curve": key.curve,
        "extractable": key.extractable,
        "start_date": key.start_date,
        "end_date": key.end_date,
        "key_class": p11.key_class_for(key.label),
        "uri": token.uri(key.label, key.key_id, key.object_class),
        "file": p11.safe_file_stem(key.label, key.key_id, key.object_class) + ".wrapped",
    }
    if key.object_class == p11.SECRET:
        entry["kcv"] = p11.kcv(key)
    else:
        if public is None:
            return entry
        der = p11.public_der(public)
        entry["public_key_der"] = base64.b64encode(der).decode("ascii")
        entry["public_key_sha256"] = hashlib.sha256(der).hexdigest()
        # Public keys do carry readable dates on SoftHSM2: prefer them when the private key's are hidden.
        entry["start_date"] = entry["start_date"] or public.start_date
        entry["end_date"] = entry["end_date"] or public.end_date
    return entry


def _identity(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (entry["label"], entry["id"], entry["object_class"], entry.get("kcv"), entry.get("public_key_sha256"))


def backup_handler(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    check_mode = module.check_mode
    policy = merged_policy(params.get("policy"))
    name, oaep_hash, backup_dir = params["mechanism"], params["oaep_hash"], params["backup_dir"]
    token = p11.Token(params)
    p11.require_mechanism(token, name, "wrap")

    with token.session() as session:
        wrapping = _wrapping_key(session, params, name, params["wrapping_key_label"], params.get("wrapping_key_id"))
        keys = p11.list_keys(session)
        if params.get("labels"):
            missing = sorted(set(params["labels"]) - {key.label for key in keys})
            if missing:
                raise KeyNotFound(
                    "Back up keys",
                    ", ".join(missing),
                    "no key with this label is on the token",
                    "Fix labels (pkcs11_key_info lists what is there)",
                )
            keys = [key for key in keys if key.label in params["labels"]]
        publics = {(key.label, key.key_id): key for key in keys if key.object_class == p11.PUBLIC}
        privates = {(key.label, key.key_id) for key in keys if key.object_class == p11.PRIVATE}

        entries, skipped, wanted = [], [], []
        for key in keys:
            if key.object_class == p11.PUBLIC:
                if (key.label, key.key_id) not in privates:
                    skipped.append(
                        {
                            "label": key.label,
                            "id": key.id_hex,
                            "object_class": key.object_class,
                            "reason": "a public key without its private key holds no secret; it is not part "
                            "of a wrapped key backup",
                        }
                    )
                continue
            reason = p11.wrap_refusal(key, name, wrapping)
            if reason:
                skipped.append(
                    {"label": key.label, "id": key.id_hex, "object_class": key.object_class, "reason": reason}
                )
                continue
            entries.append(_entry(token, key, publics.get((key.label, key.key_id))))
            wanted.append(key)

        manifest = {
            "format": p11.MANIFEST_FORMAT,
            "token": {"label": token.label, "serial": token.serial},
            "wrapping_key": {
                "label": wrapping.label,
                "id": wrapping.id_hex,
                "object_class": wrapping.object_class,
                "algorithm": wrapping.algorithm,
                "kcv": p11.kcv(wrapping),
            },
            "mechanism": {
                "name": name,
                "pkcs11": p11.WRAP_MECHANISMS[name]["name"],
                "oaep_hash": oaep_hash if name == "rsa_oaep" else None,
            },
            "entries": entries,
            "skipped": skipped,
        }
        previous = p11.read_manifest(backup_dir)
        current = (
            bool(previous)
            and not params["force"]
            and (
                sorted(map(_identity, previous["entries"])) == sorted(map(_identity, entries))
                and previous["wrapping_key"]["label"] == wrapping.label
                and previous["wrapping_key"]["id"] == wrapping.id_hex
                and previous["mechanism"] == manifest["mechanism"]
                and all(p11.blob_intact(backup_dir, entry) for entry in previous["entries"])
            )
        )
        changed = not current

        for entry in entries:
            if changed:
                require_approvals("backup", entry["uri"], entry["key_class"], params["approvals"], check_mode, policy)

        if changed and not check_mode:
            # Wrap everything before writing anything: a refused mechanism leaves no partial backup behind.
            blobs = {}
            for entry, key in zip(entries, wanted, strict=True):
                blob = p11.wrap(wrapping, key, name, oaep_hash)
                entry["sha256"] = hashlib.sha256(blob).hexdigest()
                blobs[entry["file"]] = blob
            manifest["created"] = iso_utc(utc_now())
            p11.write_backup(backup_dir, manifest, blobs)
            for stale in {old["file"] for old in (previous or {}).get("entries", [])} - set(blobs):
                stale_path = os.path.join(backup_dir, stale)
                if os.path.isfile(stale_path):
                    os.unlink(stale_path)
        elif current:
            entries = previous["entries"]

    events = []
    for entry in entries:
        detail = {
            "key_class": entry["key_class"],
            "path": backup_dir,
            "backup_sha256": entry.get("sha256"),
            "location": token.label,
        }
        events.append(
            audit_event(
                "backup",
                p11.BACKEND,
                entry["uri"],
                _outcome(check_mode, changed),
                check_mode,
                None,
                {"exists": True},
                params.get("change_ref"),
                params["approvals"],
                detail,
            )
        )
    for item in skipped:
        events.append(
            audit_event(
                "backup",
                p11.BACKEND,
                token.uri(item["label"], bytes.fromhex(item["id"]), item["object_class"]),
                "skipped",
                check_mode,
                None,
                None,
                params.get("change_ref"),
                params["approvals"],
                {"outcome_reason": item["reason"][:250]},
            )
        )
    backed_up = [
        {
            field: entry.get(field)
            for field in ("label", "id", "object_class", "algorithm", "file", "sha256", "kcv", "public_key_sha256")
        }
        for entry in entries
    ]
    return {
        "changed": changed,
        "backup_dir": backup_dir,
        "manifest": os.path.join(backup_dir, p11.MANIFEST_NAME),
        "mechanism": p11.mechanism_label(name, oaep_hash if name == "rsa_oaep" else None),
        "backed_up": backed_up,
        "not_wrapped": skipped,
        "audit_events": events,
        "diff": {
            "before": {
                "entries": sorted(
                    f"{e['label']}#{e['id']}/{e['object_class']}" for e in (previous or {}).get("entries", [])
                )
            },
            "after": {"entries": sorted(f"{e['label']}#{e['id']}/{e['object_class']}" for e in entries)},
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# pkcs11_key_restore


def restore_handler(module: AnsibleModule) -> dict[str, Any]:
    params = module.params
    check_mode = module.check_mode
    policy = merged_policy(params.get("policy"))
    backup_dir = params["backup_dir"]
    manifest = p11.read_manifest(backup_dir)
    if manifest is None:
        raise KeyNotFound(
            "Restore keys",
            None,
            f"{backup_dir} has no {p11.MANIFEST_NAME}",
            "Point backup_dir at a folder written by keyops.runbooks.pkcs11_key_backup",
        )
    name = manifest["mechanism"]["name"]
    oaep_hash = manifest["mechanism"].get("oaep_hash")
    entries = manifest["entries"]
    if params.get("labels"):
        missing = sorted(set(params["labels"]) - {entry["label"] for entry in entries})
        if missing:
            raise KeyNotFound(
                "Restore keys",
                ", ".join(missing),
                "the backup holds no key with this label",
                "Fix labels (the manifest lists what the backup holds)",
            )
        entries = [entry for entry in entries if entry["label"] in params["labels"]]

    token = p11.Token(params)
    p11.require_mechanism(token, name, "unwrap")
    results, events, before, after = [], [], {}, {}
    changed = False
    with token.session() as session:
        unwrapping = _wrapping_key(
            session,
            params,
            name,
            params.get("unwrapping_key_label") or manifest["wrapping_key"]["label"],
            params.get("unwrapping_key_id"),
            direction="unwrap",
        )
        expected_kcv, found_kcv = manifest["wrapping_key"].get("kcv"), p11.kcv(unwrapping)
        if expected_kcv and found_kcv and expected_kcv != found_kcv:
            raise IntegrityError(
                "Restore keys",
                unwrapping.label,
                f"the unwrapping key's check value {found_kcv} differs from the wrapping key's {expected_kcv}",
                "Use the same KEK the backup was made under (set it up through the vendor's cloning procedure)",
            )
        for entry in entries:
            key_id = bytes.fromhex(entry["id"])
            uri = token.uri(entry["label"], key_id)
            blob = p11.read_blob(backup_dir, entry)
            existing = _match(session, entry["label"], key_id)
            result = {
                "label": entry["label"],
                "id": entry["id"],
                "object_class": entry["object_class"],
                "algorithm": entry["algorithm"],
                "uri": uri,
            }
            if existing:
                known = p11.known_answer(session, existing, entry)
                if not known["passed"]:
                    raise Conflict(
                        "Restore key",
                        uri,
                        "a different key with this label and id is already on the "
                        "target token (the known-answer check against the backup failed)",
                        "Restore into an empty scratch token, or remove that key first",
                        known_answer=known,
                    )
                result.update(action="none", changed=False, known_answer=known)
            else:
                require_approvals("restore", uri, entry.get("key_class"), params["approvals"], check_mode, policy)
                result.update(action="restore", changed=True)
                if not check_mode:
                    p11.unwrap(unwrapping, entry, blob, name, oaep_hash)
                    if entry["object_class"] == p11.PRIVATE and entry.get("public_key_der"):
                        p11.import_public(
                            session, base64.b64decode(entry["public_key_der"]), entry["label"], key_id, entry
                        )
                    with token.session() as fresh:
                        restored = _match(fresh, entry["label"], key_id)
                        known = p11.known_answer(fresh, restored, entry)
                        if not known["passed"]:
                            p11.destroy(restored)
                            raise IntegrityError(
                                "Restore key",
                                uri,
                                "the restored key failed its known-answer check and was removed again",
                                "Check the backup and the unwrapping key",
                                known_answer=known,
                            )
                    result["known_answer"] = known
                    result["objects"] = [key.summary() for key in restored]
            changed = changed or result["changed"]
            state_before = _state(existing)
            state_after = {
                "exists": True,
                "label": entry["label"],
                "cka_id": entry["id"],
                "algorithm": entry["algorithm"],
                "exportable": bool(entry.get("extractable")),
            }
            before[uri], after[uri] = state_before, state_after
            detail = {
                "key_class": entry.get("key_class"),
                "path": backup_dir,
                "location": token.label,
                "backup_sha256": entry.get("sha256"),
            }
            if "known_answer" in result:
                detail["outcome_reason"] = "known-answer check " + (
                    "passed" if result["known_answer"]["passed"] else "failed"
                )
            events.append(
                audit_event(
                    "restore",
                    p11.BACKEND,
                    uri,
                    _outcome(check_mode, result["changed"]),
                    check_mode,
                    state_before,
                    state_after,
                    params.get("change_ref"),
                    params["approvals"],
                    detail,
                )
            )
            results.append(result)
    return {
        "changed": changed,
        "restored": results,
        "audit_events": events,
        "diff": {"before": before, "after": after},
        "token": {"label": token.label, "serial": token.serial},
    }
