# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the plan and apply steps of keyops.runbooks.aws_kms_key.

The plan is computed by reading the key (check mode stops there); apply runs the planned steps in a fixed
order. Every step is one small function behind the check-mode guard, and every step yields one audit event.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.approvals import require_approvals
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.aws_kms import (
    BACKEND,
    DELETION_WINDOW_RANGE,
    ROTATION_PERIOD_RANGE,
    STATE_MAP,
    KeySnapshot,
    KmsClient,
    alias_name,
    key_usage_for,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    AccessDenied,
    Conflict,
    InvalidInput,
    KeyNotFound,
    PolicyViolation,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.naming import parse_key_name
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import check_algorithm, merged_policy
from ansible_collections.keyops.runbooks.plugins.module_utils.records import parse_time, utc_now

KEY_ARGSPEC: dict[str, Any] = {
    "key": {"type": "str", "no_log": False},
    "alias": {"type": "str"},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "enabled": {"type": "bool"},
    "key_spec": {"type": "str", "no_log": False},
    "key_usage": {"type": "str", "choices": ["ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT"]},
    "description": {"type": "str"},
    "tags": {"type": "dict"},
    "purge_tags": {"type": "bool", "default": False},
    "owner": {"type": "str"},
    "purpose": {"type": "str"},
    "key_class": {"type": "str", "choices": ["master-kek", "kek", "dek", "signing", "transport", "tls-cert"]},
    "key_policy": {"type": "json", "no_log": False},
    "rotation_enabled": {"type": "bool"},
    "rotation_period_days": {"type": "int"},
    "rotate_now": {"type": "bool", "default": False},
    "rotate_if_older_than_days": {"type": "int"},
    "deletion_window_days": {"type": "int", "default": 30},
    "cancel_deletion": {"type": "bool", "default": False},
    "allow_unapproved_algorithm": {"type": "bool", "default": False},
    "policy": {"type": "dict"},
}

# Apply order: a key must exist and be enabled before it is configured or rotated, and disabling or
# scheduling deletion comes last so every earlier step still works on an enabled key.
STEP_ORDER = (
    "create",
    "cancel_deletion",
    "enable",
    "description",
    "tags",
    "key_policy",
    "alias",
    "rotation",
    "rotate",
    "disable",
    "schedule_deletion",
)
AUDIT_ACTION = {
    "create": "create",
    "cancel_deletion": "cancel_deletion",
    "enable": "enable",
    "disable": "disable",
    "description": "configure",
    "tags": "configure",
    "key_policy": "configure",
    "alias": "configure",
    "rotation": "configure",
    "rotate": "rotate",
    "schedule_deletion": "schedule_deletion",
}


@dataclasses.dataclass
class Step:
    name: str
    before: Any
    after: Any
    args: dict[str, Any] = dataclasses.field(default_factory=dict)


def validate(params: dict[str, Any]) -> None:
    """Rules AWS enforces (and moto does not), checked before anything is read or changed."""
    ref = params.get("key") or params.get("alias")
    period = params.get("rotation_period_days")
    low, high = ROTATION_PERIOD_RANGE
    if period is not None and not low <= period <= high:
        raise InvalidInput(
            "Configure rotation",
            ref,
            f"rotation_period_days {period} is outside {low}-{high}",
            f"Set rotation_period_days between {low} and {high} (AWS's limits)",
        )
    if period is not None and params.get("rotation_enabled") is False:
        raise InvalidInput(
            "Configure rotation",
            ref,
            "rotation_period_days is set while rotation_enabled is false",
            "Drop rotation_period_days, or set rotation_enabled=true",
        )
    window = params.get("deletion_window_days")
    low, high = DELETION_WINDOW_RANGE
    if window is not None and not low <= window <= high:
        raise InvalidInput(
            "Schedule key deletion",
            ref,
            f"deletion_window_days {window} is outside {low}-{high}",
            f"Set deletion_window_days between {low} and {high} (AWS's limits)",
        )
    older = params.get("rotate_if_older_than_days")
    if older is not None and older < 0:
        raise InvalidInput(
            "Rotate key",
            ref,
            f"rotate_if_older_than_days {older} is negative",
            "Set rotate_if_older_than_days to 0 or more",
        )
    if params.get("alias") and alias_name(params["alias"]).startswith("alias/aws/"):
        raise InvalidInput(
            "Name key",
            params["alias"],
            "aliases under alias/aws/ are reserved for AWS managed keys",
            "Pick an alias outside alias/aws/",
        )


def check_alias_name(alias: str, policy: dict[str, Any] | None) -> None:
    if not merged_policy(policy)["naming_rule"]:
        return
    name = alias_name(alias).split("/", 1)[1]
    parsed = parse_key_name(name)
    if not parsed["valid"]:
        raise PolicyViolation(
            "Name key",
            alias_name(alias),
            f"the alias {parsed['reason']}",
            "Name it ENV-PURPOSE-TYPE-YYYYMMDD (for example alias/prod-payments-kek-20261203), or "
            "set policy.naming_rule=false for a recorded exception",
        )


def desired_tags(params: dict[str, Any]) -> dict[str, str]:
    tags = {str(name): str(value) for name, value in (params.get("tags") or {}).items()}
    for option, tag in (("owner", "owner"), ("purpose", "purpose"), ("key_class", "key-class")):
        if params.get(option):
            tags[tag] = params[option]
    return tags


def desired_policy(params: dict[str, Any], ref: str | None) -> dict[str, Any] | None:
    text = params.get("key_policy")
    if text is None:
        return None
    try:
        document = json.loads(text) if isinstance(text, str) else text
    except ValueError as error:
        raise InvalidInput(
            "Set key policy", ref, "key_policy is not valid JSON", "Pass the key policy as a dict or a JSON string"
        ) from error
    if not isinstance(document, dict) or "Statement" not in document:
        raise InvalidInput(
            "Set key policy",
            ref,
            "key_policy is not a policy document (no Statement)",
            "Pass a full key policy document with Version and Statement",
        )
    return document


def find_key(client: KmsClient, params: dict[str, Any]) -> tuple[KeySnapshot | None, dict[str, Any] | None]:
    """The key the options name, and the alias entry when the alias option names an existing alias."""
    alias_entry = client.find_alias(params["alias"]) if params.get("alias") else None
    if params.get("key"):
        return client.snapshot(params["key"], policy=True, action="Read key"), alias_entry
    if alias_entry and alias_entry.get("TargetKeyId"):
        return client.snapshot(alias_entry["TargetKeyId"], policy=True, action="Read key"), alias_entry
    return None, alias_entry


def plan(
    snap: KeySnapshot | None, alias_entry: dict[str, Any] | None, params: dict[str, Any], now: dt.datetime
) -> list[Step]:
    """The steps that bring the key to the requested state, from what was read. Empty when nothing changes."""
    if snap is None:
        return [] if params["state"] == "absent" else plan_create(params)
    ref = snap.arn
    if params["state"] == "absent":
        if snap.pending_deletion:
            return []
        return guard(
            snap,
            [
                Step(
                    "schedule_deletion",
                    snap.state,
                    "pending_deletion",
                    {"PendingWindowInDays": params["deletion_window_days"]},
                )
            ],
        )
    if params.get("key_spec") and params["key_spec"] != snap.key_spec:
        raise InvalidInput(
            "Update key",
            ref,
            f"key_spec is {snap.key_spec} and cannot change to {params['key_spec']}",
            "Create a new key under a new alias, then re-encrypt to it with aws_kms_reencrypt",
        )
    steps: list[Step] = []
    state_after = snap.key_state
    if snap.pending_deletion:
        if not params["cancel_deletion"]:
            raise Conflict(
                "Update key",
                ref,
                f"the key is pending deletion (deletion date {snap.deletion_date})",
                "Set cancel_deletion=true to cancel the deletion first, or leave the key to be deleted",
            )
        steps.append(Step("cancel_deletion", "pending_deletion", "disabled"))
        state_after = "Disabled"
    if params.get("enabled") is True and state_after != "Enabled":
        steps.append(Step("enable", state_name(state_after), "enabled"))
        state_after = "Enabled"
    if params.get("description") is not None and params["description"] != snap.description:
        steps.append(Step("description", snap.description, params["description"]))
    steps.extend(plan_tags(snap, params))
    wanted_policy = desired_policy(params, ref)
    if wanted_policy is not None and wanted_policy != snap.policy:
        if "key policy" in snap.denied:
            raise AccessDenied(
                "Set key policy",
                ref,
                "reading the current key policy was denied",
                "Grant kms:GetKeyPolicy to the caller so the change can be planned",
            )
        steps.append(Step("key_policy", snap.policy, wanted_policy))
    if params.get("alias"):
        wanted = alias_name(params["alias"])
        if alias_entry is None:
            steps.append(Step("alias", list(snap.aliases), sorted([*snap.aliases, wanted]), {"create": wanted}))
        elif alias_entry.get("TargetKeyId") != snap.key_id:
            steps.append(Step("alias", list(snap.aliases), sorted([*snap.aliases, wanted]), {"update": wanted}))
    steps.extend(plan_rotation(snap, params, state_after, now))
    if params.get("enabled") is False and state_after != "Disabled":
        steps.append(Step("disable", state_name(state_after), "disabled"))
    return guard(snap, steps)


def state_name(key_state: str) -> str:
    return STATE_MAP.get(key_state, key_state.lower())


def guard(snap: KeySnapshot, steps: list[Step]) -> list[Step]:
    if steps and snap.aws_managed:
        raise PolicyViolation(
            "Update key",
            snap.arn,
            "the key is AWS managed: AWS owns its policy, rotation and lifecycle",
            "Manage a customer managed key instead (aws_kms_key_info lists them with manager CUSTOMER)",
        )
    return steps


def plan_tags(snap: KeySnapshot, params: dict[str, Any]) -> list[Step]:
    wanted = desired_tags(params)
    if not wanted and not params["purge_tags"]:
        return []
    if snap.tags is None:
        raise AccessDenied(
            "Tag key",
            snap.arn,
            "reading the key's tags was denied",
            "Grant kms:ListResourceTags to the caller so the change can be planned",
        )
    after = dict(snap.tags) if not params["purge_tags"] else {}
    after.update(wanted)
    if after == snap.tags:
        return []
    return [Step("tags", dict(snap.tags), after)]


def plan_rotation(snap: KeySnapshot, params: dict[str, Any], state_after: str, now: dt.datetime) -> list[Step]:
    steps: list[Step] = []
    enabled, period = params.get("rotation_enabled"), params.get("rotation_period_days")
    if period is not None and enabled is None:
        enabled = True
    wants_rotation_change = enabled is not None
    if (wants_rotation_change or params["rotate_now"]) and not snap.rotation_supported:
        raise InvalidInput(
            "Configure rotation",
            snap.arn,
            f"KMS rotates only symmetric keys with KMS-generated "
            f"material; this key is {snap.key_spec} with origin {snap.origin}",
            "Drop rotation_enabled, rotation_period_days and rotate_now for this key, or rotate it by "
            "creating a successor key",
        )
    if wants_rotation_change:
        if snap.rotation_status == "unknown":
            raise AccessDenied(
                "Configure rotation",
                snap.arn,
                "reading the rotation status was denied",
                "Grant kms:GetKeyRotationStatus to the caller so the change can be planned",
            )
        before = {"rotation_enabled": snap.rotation_enabled, "rotation_period_days": snap.rotation_period_days}
        if enabled and (
            not snap.rotation_enabled
            or (period is not None and snap.rotation_period_days is not None and period != snap.rotation_period_days)
        ):
            steps.append(
                Step(
                    "rotation",
                    before,
                    {"rotation_enabled": True, "rotation_period_days": period},
                    {"enable": True, "period": period},
                )
            )
        elif enabled is False and snap.rotation_enabled:
            steps.append(
                Step("rotation", before, {"rotation_enabled": False, "rotation_period_days": None}, {"enable": False})
            )
    if params["rotate_now"] and rotation_due(snap.last_rotated, params.get("rotate_if_older_than_days"), now):
        if state_after != "Enabled":
            raise Conflict(
                "Rotate key",
                snap.arn,
                "the key is disabled and KMS rotates only enabled keys",
                "Set enabled=true to enable it first",
            )
        steps.append(Step("rotate", snap.last_rotated, "now"))
    return steps


def rotation_due(last_rotated: str | None, older_than_days: int | None, now: dt.datetime) -> bool:
    """Without a threshold every run rotates; with one, a key never rotated is due."""
    if older_than_days is None:
        return True
    last = parse_time(last_rotated)
    return last is None or now - last >= dt.timedelta(days=older_than_days)


def plan_create(params: dict[str, Any]) -> list[Step]:
    if not params.get("alias"):
        raise KeyNotFound(
            "Find key",
            params.get("key"),
            "no key matches and no alias was given to create one under",
            "Give alias (alias/ENV-PURPOSE-TYPE-YYYYMMDD) to create a key, or name an existing key",
        )
    if params["cancel_deletion"] or (params.get("enabled") is False and params["rotate_now"]):
        raise InvalidInput(
            "Create key",
            alias_name(params["alias"]),
            "the options ask to cancel a deletion or to rotate a disabled key, for a key that does not exist yet",
            "Drop cancel_deletion, or enabled=false with rotate_now",
        )
    alias = alias_name(params["alias"])
    key_spec = params.get("key_spec") or "SYMMETRIC_DEFAULT"
    rotatable = key_spec == "SYMMETRIC_DEFAULT"
    rotation = params.get("rotation_enabled")
    if params.get("rotation_period_days") is not None and rotation is None:
        rotation = True
    if (rotation or params["rotate_now"]) and not rotatable:
        raise InvalidInput(
            "Create key",
            alias,
            f"KMS rotates only symmetric keys; key_spec is {key_spec}",
            "Drop rotation_enabled, rotation_period_days and rotate_now for this key spec",
        )
    tags = desired_tags(params)
    after = {
        "alias": alias,
        "key_spec": key_spec,
        "key_usage": params.get("key_usage") or key_usage_for(key_spec),
        "description": params.get("description") or "",
        "tags": tags,
        "key_policy": desired_policy(params, alias),
        "state": "enabled",
    }
    steps = [Step("create", None, after), Step("alias", [], [alias], {"create": alias})]
    if rotation:
        steps.append(
            Step(
                "rotation",
                {"rotation_enabled": False, "rotation_period_days": None},
                {"rotation_enabled": True, "rotation_period_days": params.get("rotation_period_days")},
                {"enable": True, "period": params.get("rotation_period_days")},
            )
        )
    if params["rotate_now"]:
        steps.append(Step("rotate", None, "now"))
    if params.get("enabled") is False:
        steps.append(Step("disable", "enabled", "disabled"))
    return steps


# Apply: one function a step. Each returns nothing; a failure raises a mapped KeyopsError.


def apply_step(client: KmsClient, step: Step, key_id: str, ref: str) -> str | None:
    """Run one step; ``create`` returns the new key id."""
    if step.name == "create":
        after = step.after
        kwargs: dict[str, Any] = {
            "KeySpec": after["key_spec"],
            "KeyUsage": after["key_usage"],
            "Description": after["description"],
            "Tags": [{"TagKey": name, "TagValue": value} for name, value in after["tags"].items()],
        }
        if after["key_policy"] is not None:
            kwargs["Policy"] = json.dumps(after["key_policy"])
        return client.call("create_key", "Create key", ref, **kwargs)["KeyMetadata"]["KeyId"]
    calls: dict[str, Callable[[], Any]] = {
        "cancel_deletion": lambda: client.call("cancel_key_deletion", "Cancel key deletion", ref, KeyId=key_id),
        "enable": lambda: client.call("enable_key", "Enable key", ref, KeyId=key_id),
        "disable": lambda: client.call("disable_key", "Disable key", ref, KeyId=key_id),
        "description": lambda: client.call(
            "update_key_description", "Update key description", ref, KeyId=key_id, Description=step.after
        ),
        "tags": lambda: apply_tags(client, step, key_id, ref),
        "key_policy": lambda: client.call(
            "put_key_policy", "Set key policy", ref, KeyId=key_id, PolicyName="default", Policy=json.dumps(step.after)
        ),
        "alias": lambda: apply_alias(client, step, key_id, ref),
        "rotation": lambda: apply_rotation(client, step, key_id, ref),
        "rotate": lambda: client.call("rotate_key_on_demand", "Rotate key", ref, KeyId=key_id),
        "schedule_deletion": lambda: client.call(
            "schedule_key_deletion",
            "Schedule key deletion",
            ref,
            KeyId=key_id,
            PendingWindowInDays=step.args["PendingWindowInDays"],
        ),
    }
    calls[step.name]()
    return None


def apply_tags(client: KmsClient, step: Step, key_id: str, ref: str) -> None:
    removed = sorted(set(step.before) - set(step.after))
    added = {name: value for name, value in step.after.items() if step.before.get(name) != value}
    if removed:
        client.call("untag_resource", "Untag key", ref, KeyId=key_id, TagKeys=removed)
    if added:
        client.call(
            "tag_resource",
            "Tag key",
            ref,
            KeyId=key_id,
            Tags=[{"TagKey": name, "TagValue": value} for name, value in added.items()],
        )


def apply_alias(client: KmsClient, step: Step, key_id: str, ref: str) -> None:
    if "create" in step.args:
        client.call(
            "create_alias", "Create alias", step.args["create"], AliasName=step.args["create"], TargetKeyId=key_id
        )
    else:
        client.call(
            "update_alias", "Move alias", step.args["update"], AliasName=step.args["update"], TargetKeyId=key_id
        )


def apply_rotation(client: KmsClient, step: Step, key_id: str, ref: str) -> None:
    if not step.args["enable"]:
        client.call("disable_key_rotation", "Disable key rotation", ref, KeyId=key_id)
        return
    kwargs: dict[str, Any] = {"KeyId": key_id}
    if step.args.get("period") is not None:
        kwargs["RotationPeriodInDays"] = step.args["period"]
    client.call("enable_key_rotation", "Enable key rotation", ref, **kwargs)


def view(snap: KeySnapshot | None) -> dict[str, Any] | None:
    """The before/after shown in diff mode: configuration and states, never key material."""
    if snap is None:
        return None
    return {
        "arn": snap.arn,
        "key_id": snap.key_id,
        "state": snap.state,
        "enabled": snap.enabled,
        "description": snap.description,
        "aliases": list(snap.aliases),
        "tags": snap.tags,
        "policy": snap.policy,
        "key_spec": snap.key_spec,
        "rotation_enabled": snap.rotation_enabled,
        "rotation_period_days": snap.rotation_period_days,
        "last_rotated": snap.last_rotated,
        "deletion_date": snap.deletion_date,
    }


def predicted(before: dict[str, Any] | None, steps: list[Step]) -> dict[str, Any] | None:
    """What check mode expects the key to look like after the steps."""
    if not steps:
        return before
    after = dict(before or {})
    for step in steps:
        if step.name == "create":
            after.update(
                {
                    "arn": None,
                    "key_id": None,
                    "state": "enabled",
                    "enabled": True,
                    "description": step.after["description"],
                    "aliases": [],
                    "tags": step.after["tags"],
                    "policy": step.after["key_policy"],
                    "key_spec": step.after["key_spec"],
                    "rotation_enabled": False,
                    "rotation_period_days": None,
                    "last_rotated": None,
                    "deletion_date": None,
                }
            )
        elif step.name in ("cancel_deletion", "enable", "disable", "schedule_deletion"):
            after["state"] = step.after
            after["enabled"] = step.after == "enabled"
            if step.name == "cancel_deletion":
                after["deletion_date"] = None
        elif step.name == "description":
            after["description"] = step.after
        elif step.name == "tags":
            after["tags"] = step.after
        elif step.name == "key_policy":
            after["policy"] = step.after
        elif step.name == "alias":
            after["aliases"] = step.after
        elif step.name == "rotation":
            after.update(step.after)
        elif step.name == "rotate":
            after["last_rotated"] = "(on apply)"
    return after


def audit_state(state: Any) -> dict[str, Any] | None:
    if state is None:
        return None
    if isinstance(state, dict):
        fields = {
            name: state.get(name)
            for name in (
                "state",
                "enabled",
                "rotation_enabled",
                "rotation_period_days",
                "last_rotated",
                "deletion_date",
                "aliases",
                "key_spec",
                "arn",
            )
            if name in state
        }
        return fields or {"state": None}
    return {"state": state}


def manage_key(
    client: KmsClient, params: dict[str, Any], check_mode: bool, warn: Callable[[str], None]
) -> dict[str, Any]:
    validate(params)
    snap, alias_entry = find_key(client, params)
    if snap is None and params.get("key") is None and params.get("alias") and params["state"] == "present":
        check_alias_name(params["alias"], params.get("policy"))
    if snap is not None and alias_entry is None and params.get("alias"):
        check_alias_name(params["alias"], params.get("policy"))
    for message in snap.warnings if snap else []:
        warn(message)
    if snap and snap.rotation_enabled and params.get("rotation_period_days") and snap.rotation_period_days is None:
        warn(
            f"KMS did not report the rotation period of key '{snap.arn}', so a period of "
            f"{params['rotation_period_days']} days cannot be confirmed or corrected."
        )
    steps = plan(snap, alias_entry, params, utc_now())
    steps.sort(key=lambda step: STEP_ORDER.index(step.name))

    ref = snap.arn if snap else alias_name(params["alias"]) if params.get("alias") else params.get("key") or ""
    key_class = params.get("key_class") or (snap.key_class if snap else None)
    if key_class is None and params.get("alias"):
        parsed = parse_key_name(alias_name(params["alias"]).split("/", 1)[1])
        key_class = parsed.get("key_class") if parsed["valid"] else None
    if steps and steps[0].name == "create":
        for message in check_algorithm(
            BACKEND, steps[0].after["key_spec"], ref, params["allow_unapproved_algorithm"], params.get("policy")
        ):
            warn(message)
    # A plan may name the key by an alias it holds or is being given (a runbook plans a successor by its alias).
    names = [*(snap.aliases if snap else []), *([alias_name(params["alias"])] if params.get("alias") else [])]
    for action in dict.fromkeys(AUDIT_ACTION[step.name] for step in steps):
        require_approvals(action, ref, key_class, params.get("approvals"), check_mode, params.get("policy"), names)

    before = view(snap)
    key_id = snap.key_id if snap else ""
    if not check_mode:
        for step in steps:
            created = apply_step(client, step, key_id, ref)
            if created:
                key_id = created
                ref = client.resolve_arn(created, "Read new key")
    if steps and not check_mode:
        client.forget(key_id)
        client.forget(ref)
        final = client.snapshot(key_id, policy=True, action="Read key after change")
        after = view(final)
    else:
        final = snap
        after = predicted(before, steps)

    outcome = "planned" if check_mode else "changed"
    detail = {"key_class": key_class} if key_class else None
    events = [
        audit_event(
            AUDIT_ACTION[step.name],
            BACKEND,
            ref,
            outcome,
            check_mode,
            audit_state(step.before),
            audit_state(step.after),
            params.get("change_ref"),
            params.get("approvals"),
            dict(detail or {}, outcome_reason=step.name),
        )
        for step in steps
    ]
    if not steps and snap is not None:
        events.append(
            audit_event(
                "verify",
                BACKEND,
                ref,
                "unchanged",
                check_mode,
                audit_state(before),
                audit_state(before),
                params.get("change_ref"),
                params.get("approvals"),
                detail,
            )
        )
    record = final.record().to_dict() if final is not None else None
    return {
        "changed": bool(steps),
        "arn": final.arn if final is not None else None,
        "key_id": final.key_id if final is not None else None,
        "key": record,
        "actions": [step.name for step in steps],
        "audit_events": events,
        "diff": {"before": before or {}, "after": after or {}},
    }
