# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: transit key lifecycle for the vault_transit_key and vault_transit_key_info modules.

The plan is computed from the key as read from the server, so check mode shows the real plan and a second run
with the same options plans nothing. ``apply_plan`` then performs exactly the planned steps, in order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# The transit naming and ciphertext helpers live with the connection layer so the rewrap path can use them without
# importing this module (the module start compiles every module_utils file it imports); re-exported here.
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    VAULT_ARGSPEC,
    Vault,
    check_mount,
    check_segment,
    ciphertext_version,
    connect,
    key_class_of,
    key_ref,
    validate_name,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import Partition, open_store
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    Conflict,
    InvalidInput,
    KeyNotFound,
    PolicyViolation,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.naming import parse_key_name
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy
from ansible_collections.keyops.runbooks.plugins.module_utils.records import (
    KeyRecord,
    add_days,
    finding,
    iso_utc,
    parse_time,
    utc_now,
)

BACKEND = "vault_transit"
# Key length (or curve) per transit type, for the KeyRecord.
TYPE_LENGTHS: dict[str, int | str] = {
    "aes128-gcm96": 128,
    "aes256-gcm96": 256,
    "chacha20-poly1305": 256,
    "rsa-2048": 2048,
    "rsa-3072": 3072,
    "rsa-4096": 4096,
    "ecdsa-p256": "P-256",
    "ecdsa-p384": "P-384",
    "ecdsa-p521": "P-521",
    "ed25519": "Ed25519",
}
# What a diff, an audit event and a comparison look at: ids, versions and flags, never key material.
CONFIG_FIELDS = (
    "min_decryption_version",
    "min_encryption_version",
    "deletion_allowed",
    "exportable",
    "allow_plaintext_backup",
    "auto_rotate_period",
)
IRREVERSIBLE = ("exportable", "allow_plaintext_backup")


def version_times(data: dict[str, Any]) -> dict[int, str | None]:
    """Creation time of every live version (symmetric keys answer epoch seconds, asymmetric ones a dict)."""
    times: dict[int, str | None] = {}
    for version, value in (data.get("keys") or {}).items():
        stamp = value.get("creation_time") if isinstance(value, dict) else value
        times[int(version)] = iso_utc(stamp)
    return times


def key_state(data: dict[str, Any] | None) -> dict[str, Any]:
    """The comparable facts of a key as read (``exists`` false when there is none)."""
    if data is None:
        return {"exists": False}
    times = version_times(data)
    return {
        "exists": True,
        "type": data.get("type"),
        "latest_version": int(data.get("latest_version") or 0),
        "versions": sorted(times) if times else None,
        "min_available_version": int(data.get("min_available_version") or 0),
        "min_decryption_version": int(data.get("min_decryption_version") or 0),
        "min_encryption_version": int(data.get("min_encryption_version") or 0),
        "deletion_allowed": bool(data.get("deletion_allowed")),
        "exportable": bool(data.get("exportable")),
        "allow_plaintext_backup": bool(data.get("allow_plaintext_backup")),
        "auto_rotate_period": int(data.get("auto_rotate_period") or 0),
        "derived": bool(data.get("derived")),
        "version_times": {str(version): stamp for version, stamp in sorted(times.items())},
    }


def read_key(vault: Vault, mount: str, name: str) -> dict[str, Any] | None:
    """The key's raw metadata, or None when it does not exist."""
    ref = key_ref(mount, name)
    try:
        with vault.call("Read transit key", ref):
            return vault.transit.read_key(name, mount_point=mount)["data"]
    except KeyNotFound:
        return None


def parse_period(value: Any, key: str) -> int | None:
    """``auto_rotate_period`` as seconds: an int, or a duration such as ``720h``, ``30d``, ``90m``, ``0``."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except (ValueError, IndexError) as error:
        raise InvalidInput(
            "Check auto_rotate_period",
            key,
            f"'{value}' is not a duration",
            "Set auto_rotate_period to seconds or a duration such as 720h or 90d (0 turns it off)",
        ) from error


@dataclasses.dataclass
class Step:
    """One change to make: ``action`` is the audit action, ``approval`` the dual-control action it falls under."""

    action: str
    approval: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Plan:
    steps: list[Step]
    before: dict[str, Any]
    after: dict[str, Any]
    # Versions below which the data-key stores must hold no ciphertext before the plan may run (None: no check).
    guard_below: int | None = None
    guard_reason: str = ""
    warnings: list[str] = dataclasses.field(default_factory=list)


def plan_key(
    current: dict[str, Any], want: dict[str, Any], ref: str, policy: dict[str, Any], now: dt.datetime | None = None
) -> Plan:
    """Compute the steps that bring the key from ``current`` (key_state) to what ``want`` asks for."""
    now = now or utc_now()
    after = dict(current)
    steps: list[Step] = []
    plan = Plan(steps, dict(current), after)

    if want["state"] == "absent":
        if current["exists"]:
            if not current["deletion_allowed"]:
                if want.get("deletion_allowed") is not True:
                    raise PolicyViolation(
                        "Delete transit key",
                        ref,
                        "deletion_allowed is false on the key",
                        "Set deletion_allowed=true in the same task to allow the deletion",
                    )
                steps.append(Step("configure", "configure", {"deletion_allowed": True}))
            steps.append(Step("destroy", "destroy"))
            plan.after = {"exists": False}
            plan.guard_below = 1 << 62
            plan.guard_reason = "the key is to be deleted"
        return plan

    created = False
    if not current["exists"]:
        created = True
        create = {"type": want["type"]}
        if want["type"] == "hmac":
            create["key_size"] = want.get("key_size") or 32
        if want.get("derived"):
            create["derived"] = True
        steps.append(Step("create", "create", create))
        after.update(
            {
                "exists": True,
                "type": want["type"],
                "latest_version": 1,
                "versions": [1],
                "min_available_version": 0,
                "min_decryption_version": 1,
                "min_encryption_version": 0,
                "deletion_allowed": False,
                "exportable": False,
                "allow_plaintext_backup": False,
                "auto_rotate_period": 0,
                "derived": bool(want.get("derived")),
                "version_times": {"1": iso_utc(now)},
            }
        )
    elif want.get("type") and want.get("type_given") and current["type"] != want["type"]:
        raise Conflict(
            "Check transit key",
            ref,
            f"the key exists with type '{current['type']}', not '{want['type']}'",
            "Pick a new name for a key of another type, or drop the type option",
        )

    if not created and _rotation_due(current, want, now):
        steps.append(Step("rotate", "rotate"))
        latest = after["latest_version"] + 1
        after["latest_version"] = latest
        after["versions"] = [*(after.get("versions") or []), latest]
        after["version_times"] = {**after.get("version_times", {}), str(latest): iso_utc(now)}

    config = _config_changes(after, want, ref, policy)
    if config:
        raised = config.get("min_decryption_version", 0) > after["min_decryption_version"]
        approval = "raise_min_decryption_version" if raised else "configure"
        if any(config.get(flag) for flag in IRREVERSIBLE):
            approval = "export"
        steps.append(Step("configure", approval, config))
        if raised:
            plan.guard_below = config["min_decryption_version"]
            plan.guard_reason = f"min_decryption_version is to be raised to {config['min_decryption_version']}"
        after.update(config)

    trim = want.get("trim_to_version")
    if trim and trim > after["min_available_version"]:
        _check_trim(after, trim, ref)
        steps.append(Step("trim", "trim", {"min_available_version": trim}))
        after["min_available_version"] = trim
        after["versions"] = [version for version in after.get("versions") or [] if version >= trim] or None
        after["version_times"] = {v: t for v, t in after.get("version_times", {}).items() if int(v) >= trim}
        if (plan.guard_below or 0) < trim:
            plan.guard_below = trim
            plan.guard_reason = f"versions below {trim} are to be trimmed"
    return plan


def _rotation_due(current: dict[str, Any], want: dict[str, Any], now: dt.datetime) -> bool:
    if want.get("rotate"):
        return True
    days = want.get("rotate_older_than_days")
    if days is None:
        return False
    latest = parse_time(current.get("version_times", {}).get(str(current["latest_version"])))
    # A key type that reports no version times (hmac) cannot be aged: rotate it only when asked outright.
    return latest is not None and now - latest >= dt.timedelta(days=days)


def _config_changes(state: dict[str, Any], want: dict[str, Any], ref: str, policy: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for field in CONFIG_FIELDS:
        value = want.get(field)
        if value is not None and value != state.get(field):
            changes[field] = value

    for flag in IRREVERSIBLE:
        if flag not in changes:
            continue
        if not changes[flag]:
            raise InvalidInput(
                "Configure transit key",
                ref,
                f"{flag} is already on and can never be turned off",
                f"Drop the {flag} option (a new key is the only way back)",
            )
        if not want.get("allow_irreversible"):
            raise PolicyViolation(
                "Configure transit key",
                ref,
                f"{flag}=true can never be undone and lets key material leave Vault",
                "Set allow_irreversible=true with an approved change to accept it",
            )
        if want.get("key_class") == "master-kek" and not policy.get("master_keys_exportable"):
            raise PolicyViolation(
                "Configure transit key",
                ref,
                f"{flag} is not allowed on a master key by policy",
                "Keep master keys non-exportable, or change policy.master_keys_exportable",
            )

    latest = state["latest_version"]
    min_dec = changes.get("min_decryption_version", state["min_decryption_version"])
    min_enc = changes.get("min_encryption_version", state["min_encryption_version"])
    if "min_decryption_version" in changes and not state["min_available_version"] <= min_dec <= latest:
        raise InvalidInput(
            "Configure transit key",
            ref,
            f"min_decryption_version {min_dec} is outside {max(1, state['min_available_version'])}..{latest}",
            "Set min_decryption_version to an existing, untrimmed version",
        )
    if "min_encryption_version" in changes and not (min_enc == 0 or min_dec <= min_enc <= latest):
        raise InvalidInput(
            "Configure transit key",
            ref,
            f"min_encryption_version {min_enc} must be 0 (latest) or "
            f"between min_decryption_version {min_dec} and {latest}",
            "Set min_encryption_version accordingly",
        )
    return changes


def _check_trim(state: dict[str, Any], trim: int, ref: str) -> None:
    ceiling = min(state["min_decryption_version"], state["min_encryption_version"] or state["latest_version"])
    if trim > ceiling:
        raise InvalidInput(
            "Trim transit key",
            ref,
            f"trim_to_version {trim} is above min_decryption_version "
            f"{state['min_decryption_version']} (or min_encryption_version)",
            "Raise min_decryption_version first (same task or earlier), then trim",
        )


def scan_stores(stores: Iterable[dict[str, Any]], ref: str, below: int) -> dict[str, int]:
    """Count, per store, ciphertexts recorded under ``ref`` whose version is below ``below``."""
    counts: dict[str, int] = {}
    for options in stores:
        with open_store(options) as store:
            found = 0
            for items, _cursor in store.batches(5000, Partition(), key_ref=ref):
                for item in items:
                    if ciphertext_version(item.ciphertext) < below:
                        found += 1
            counts[store.description] = found
    return counts


def check_guard(
    plan: Plan, stores: list[dict[str, Any]] | None, skip: bool, ref: str, store_ref: str | None = None
) -> dict[str, int] | None:
    """Refuse a plan that would strand data keys the stores still hold under versions it removes."""
    if plan.guard_below is None:
        return None
    if not stores:
        if skip:
            return None
        raise PolicyViolation(
            "Guard data keys",
            ref,
            f"{plan.guard_reason}, and no data-key store was given to "
            "check for ciphertexts that would become undecryptable",
            "Pass dek_stores, or set skip_dek_store_check=true when no data key depends on it",
        )
    counts = scan_stores(stores, store_ref or ref, plan.guard_below)
    stranded = sum(counts.values())
    bare = ref.rsplit("/", 1)[-1]
    if not stranded and not store_ref:
        # A store that records data keys under the bare key name matches nothing under <mount>/<name>: without
        # this look the guard would pass while every one of those data keys is stranded.
        by_name = scan_stores(stores, bare, plan.guard_below)
        if sum(by_name.values()):
            raise Conflict(
                "Guard data keys",
                ref,
                f"{plan.guard_reason}; no data key is recorded under '{ref}', but {sum(by_name.values())} below "
                f"the new minimum are recorded under '{bare}'",
                f"Set store_key_ref to the key_ref the stores use ('{bare}'), rewrap them first, or set "
                f"store_key_ref='{ref}' when those belong to another key",
                stranded=sum(by_name.values()),
            )
    if stranded:
        where = ", ".join(f"{name}: {count}" for name, count in counts.items() if count)
        what = "any version" if plan.guard_below >= 1 << 62 else f"versions below {plan.guard_below}"
        raise Conflict(
            "Guard data keys",
            ref,
            f"{plan.guard_reason}, but {stranded} data key(s) are still wrapped under {what} ({where})",
            "Run keyops.runbooks.vault_transit_rewrap first",
            stranded=stranded,
        )
    return counts


def apply_step(vault: Vault, mount: str, name: str, step: Step) -> None:
    ref = key_ref(mount, name)
    adapter = vault.client.adapter
    if step.action == "create":
        with vault.call("Create transit key", ref):
            # The raw write: hvac's create_key refuses key types it does not know (hmac, aes128-gcm96).
            adapter.post(f"/v1/{mount}/keys/{name}", json=step.params)
    elif step.action == "rotate":
        with vault.call("Rotate transit key", ref):
            vault.transit.rotate_key(name, mount_point=mount)
    elif step.action == "configure":
        params = dict(step.params)
        if "auto_rotate_period" in params:
            params["auto_rotate_period"] = f"{params['auto_rotate_period']}s"
        with vault.call("Configure transit key", ref):
            adapter.post(f"/v1/{mount}/keys/{name}/config", json=params)
    elif step.action == "trim":
        with vault.call("Trim transit key", ref):
            vault.transit.trim_key(name, step.params["min_available_version"], mount_point=mount)
    elif step.action == "destroy":
        with vault.call("Delete transit key", ref):
            vault.transit.delete_key(name, mount_point=mount)


# --------------------------------------------------------------------------------------------------------------
# Inventory


def transit_mounts(vault: Vault, given: list[str] | None) -> list[str]:
    if given:
        return [check_mount(mount, None, "mounts") for mount in given]
    with vault.call("List secrets engines", None):
        mounts = vault.client.sys.list_mounted_secrets_engines()
    table = mounts.get("data") or mounts
    return sorted(
        path.strip("/") for path, info in table.items() if isinstance(info, dict) and info.get("type") == "transit"
    )


def list_key_names(vault: Vault, mount: str) -> list[str]:
    try:
        with vault.call("List transit keys", mount):
            return sorted(vault.transit.list_keys(mount_point=mount)["data"]["keys"])
    except KeyNotFound:
        return []


def key_record(
    vault: Vault,
    mount: str,
    name: str,
    data: dict[str, Any],
    policy: dict[str, Any],
    key_class: str | None = None,
    now: dt.datetime | None = None,
) -> KeyRecord:
    state = key_state(data)
    times = state["version_times"]
    key_class = key_class_of(name, key_class)
    period = state["auto_rotate_period"] // 86400 or None
    latest_time = times.get(str(state["latest_version"]))
    record = KeyRecord(
        id=f"{vault.location(mount)}/keys/{name}",
        name=name,
        backend=BACKEND,
        location=vault.location(mount),
        key_class=key_class,
        algorithm=state["type"],
        # Vault reports an HMAC key's key_size in bytes.
        length_bits=TYPE_LENGTHS.get(state["type"] or "", (data.get("key_size") or 0) * 8 or None),
        created=times.get("1") or (min(times.values()) if times else None),
        last_rotated=latest_time if state["latest_version"] > 1 else None,
        rotation_period_days=period,
        versions=state["latest_version"],
        exportable=state["exportable"],
    )
    record.extra = {
        "key_ref": key_ref(mount, name),
        "mount": mount,
        "version_times": times,
        **{
            field: state[field]
            for field in (
                "min_decryption_version",
                "min_encryption_version",
                "min_available_version",
                "deletion_allowed",
                "allow_plaintext_backup",
                "auto_rotate_period",
                "derived",
            )
        },
    }
    record.findings = key_findings(record, state, policy, now or utc_now())
    return record


def key_findings(
    record: KeyRecord, state: dict[str, Any], policy: dict[str, Any], now: dt.datetime
) -> list[dict[str, str]]:
    found = []
    if state["type"] not in policy["approved_algorithms"].get(BACKEND, []):
        found.append(finding("algorithm_not_approved", "high", f"type {state['type']} is not an approved algorithm"))
    if policy.get("naming_rule") and not parse_key_name(record.name)["valid"]:
        found.append(finding("name_not_compliant", "low", "name does not follow ENV-PURPOSE-TYPE-YYYYMMDD"))
    if state["exportable"]:
        severity = "critical" if record.key_class == "master-kek" else "medium"
        found.append(finding("exportable", severity, "key material can be exported (irreversible)"))
    if state["allow_plaintext_backup"]:
        found.append(finding("plaintext_backup_allowed", "medium", "plaintext backup of the key is allowed"))
    if state["deletion_allowed"]:
        found.append(finding("deletion_allowed", "medium", "the key can be deleted"))
    if record.key_class in policy.get("auto_rotation_required_for", []) and not state["auto_rotate_period"]:
        found.append(finding("auto_rotation_off", "medium", f"{record.key_class} has no auto_rotate_period"))
    period = policy["cryptoperiod_days"].get(record.key_class or "")
    latest = parse_time(record.last_rotated or record.created)
    if period and latest:
        due = parse_time(add_days(latest, period))
        if due and due <= now:
            found.append(
                finding("rotation_overdue", "high", f"latest version is older than the {period}-day cryptoperiod")
            )
        elif due and due - dt.timedelta(days=policy.get("rotation_due_window_days", 90)) <= now:
            found.append(finding("rotation_due", "low", f"rotation due by {iso_utc(due)}"))
    return found


# The options of vault_transit_key_info; key_inventory validates each of its Vault sources against them too.
KEY_INFO_ARGSPEC: dict[str, Any] = dict(
    VAULT_ARGSPEC,
    mounts={"type": "list", "elements": "str"},
    names={"type": "list", "elements": "str"},
    key_classes={"type": "dict", "default": {}, "no_log": False},
    policy={"type": "dict"},
    workers={"type": "int", "default": 8},
)


def key_info(params: dict[str, Any]) -> dict[str, Any]:
    """What vault_transit_key_info returns: every transit key of the server's mounts (or the named ones)."""
    names = [check_segment(name, "transit key name", name, "names") for name in params["names"] or []]
    vault = connect(params)
    mounts = transit_mounts(vault, params["mounts"])
    records, missing = inventory(
        vault, mounts, params["policy"], params["workers"], names or None, params["key_classes"]
    )
    return {"changed": False, "keys": records, "mounts": mounts, "missing": missing}


def inventory(
    vault: Vault,
    mounts: list[str],
    policy_overrides: dict[str, Any] | None,
    workers: int,
    names: list[str] | None = None,
    key_classes: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every key of every mount as a KeyRecord dict; keys deleted meanwhile are listed apart."""
    policy = merged_policy(policy_overrides)
    targets = [(mount, name) for mount in mounts for name in (names or list_key_names(vault, mount))]
    now = utc_now()

    def read(target: tuple[str, str]) -> dict[str, Any] | None:
        mount, name = target
        data = read_key(vault, mount, name)
        if data is None:
            return None
        return key_record(vault, mount, name, data, policy, (key_classes or {}).get(name), now).to_dict()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(read, targets))
    records = [record for record in results if record is not None]
    missing = [
        {"key_ref": key_ref(*target), "reason": "not found"}
        for target, record in zip(targets, results, strict=True)
        if record is None
    ]
    return records, missing


# --------------------------------------------------------------------------------------------------------------
# The vault_transit_key module's work


def manage_key(vault: Vault, params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Plan from the key as read, guard the data keys, gate dual-controlled steps, then apply unless checking."""
    from ansible_collections.keyops.runbooks.plugins.module_utils.approvals import require_approvals
    from ansible_collections.keyops.runbooks.plugins.module_utils.audit import audit_event
    from ansible_collections.keyops.runbooks.plugins.module_utils.policy import check_algorithm

    mount, name = validate_name(params["name"], params["mount"])
    ref = key_ref(mount, name)
    policy = merged_policy(params.get("policy"))
    key_class = key_class_of(name, params.get("key_class"))
    want = dict(
        params,
        key_class=key_class,
        type_given=params.get("type") is not None,
        type=params.get("type") or "aes256-gcm96",
        auto_rotate_period=parse_period(params.get("auto_rotate_period"), ref),
    )
    warnings: list[str] = []

    current = key_state(read_key(vault, mount, name))
    if not current["exists"] and params["state"] == "present":
        warnings += check_algorithm(
            BACKEND, want["type"], ref, params.get("allow_unapproved_algorithm", False), params.get("policy")
        )
        if policy.get("naming_rule") and not parse_key_name(name)["valid"]:
            warnings.append(f"Key '{ref}' does not follow the naming rule ENV-PURPOSE-TYPE-YYYYMMDD.")
    plan = plan_key(current, want, ref, policy)

    for step in plan.steps:
        require_approvals(step.approval, ref, key_class, params.get("approvals"), check_mode, params.get("policy"))
    guard = (
        check_guard(
            plan, params.get("dek_stores"), params.get("skip_dek_store_check", False), ref, params.get("store_key_ref")
        )
        if plan.steps
        else None
    )

    events = []
    before = plan.before
    for step in plan.steps:
        if not check_mode:
            apply_step(vault, mount, name, step)
        events.append(
            audit_event(
                step.action,
                BACKEND,
                ref,
                "planned" if check_mode else "changed",
                check_mode,
                _summary(before),
                _summary(plan.after),
                params.get("change_ref"),
                params.get("approvals"),
                {"key_class": key_class, "requires_approval": step.approval},
            )
        )
    if not plan.steps:
        events.append(
            audit_event(
                "verify",
                BACKEND,
                ref,
                "unchanged",
                check_mode,
                _summary(before),
                None,
                params.get("change_ref"),
                params.get("approvals"),
                {"key_class": key_class},
            )
        )

    after = plan.after
    if plan.steps and not check_mode:
        after = key_state(read_key(vault, mount, name))
    return {
        "changed": bool(plan.steps),
        "key_ref": ref,
        "actions": [step.action for step in plan.steps],
        "key": after,
        "dek_store_check": guard,
        "diff": {"before": plan.before, "after": plan.after},
        "audit_events": events,
        "warnings": warnings,
    }


def _summary(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if key != "version_times"}
