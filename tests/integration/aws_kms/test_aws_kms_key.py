"""keyops.runbooks.aws_kms_key against the lab's moto server, each change four ways, checked with boto3."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests.integration.aws_kms.kms_helpers import reference_forms, unique_alias
from tests.support.dual_control import approve, trusted_env
from tests.support.playbook import assert_no_canary, four_way, run_module, run_tasks

MODULE = "keyops.runbooks.aws_kms_key"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Root",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}

pytestmark = pytest.mark.lab


def tags_of(kms: Any, key_id: str) -> dict[str, str]:
    return {tag["TagKey"]: tag["TagValue"] for tag in kms.list_resource_tags(KeyId=key_id)["Tags"]}


def test_create_key_four_ways(kms: Any) -> None:
    alias = unique_alias()
    args = {
        "alias": alias,
        "description": "orders KEK",
        "owner": "orders",
        "purpose": "orders",
        "key_class": "kek",
        "rotation_period_days": 180,
        "key_policy": POLICY,
        "change_ref": "CHG-1",
    }

    check, real, again_check, again = four_way(MODULE, args)

    assert check["actions"] == ["create", "alias", "rotation"]
    assert check["audit_events"][0]["outcome"] == "planned" and check["arn"] is None
    assert real["audit_events"][0]["outcome"] == "changed"
    assert real["audit_events"][0]["detail"]["key_class"] == "kek"
    assert again["arn"] == real["arn"] == again_check["arn"]
    meta = kms.describe_key(KeyId=alias)["KeyMetadata"]
    assert meta["Arn"] == real["arn"] and meta["KeySpec"] == "SYMMETRIC_DEFAULT" and meta["Description"] == "orders KEK"
    assert tags_of(kms, meta["KeyId"]) == {"owner": "orders", "purpose": "orders", "key-class": "kek"}
    assert kms.get_key_rotation_status(KeyId=meta["KeyId"])["KeyRotationEnabled"] is True
    assert json.loads(kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"]) == POLICY
    assert real["key"]["rotation_status"] == "enabled" and real["key"]["name"] == alias.split("/", 1)[1]
    assert real["diff"]["before"] == {} and real["diff"]["after"]["policy"] == POLICY
    # moto ignores the period and does not report it: the module says so instead of claiming it is set.
    assert any("rotation period" in warning for warning in again.get("warnings", []))


@pytest.mark.parametrize("form", ["key_id", "key_arn", "alias", "alias_arn"])
def test_every_reference_form_changes_the_same_key(kms: Any, new_key: Any, form: str) -> None:
    key = new_key()
    ref = reference_forms(key)[form]

    results = four_way(MODULE, {"key": ref, "description": f"set through {form}", "tags": {"form": form}})

    assert {result["arn"] for result in results} == {key["Arn"]}
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["Description"] == f"set through {form}"
    assert tags_of(kms, key["KeyId"]) == {"form": form}
    assert results[1]["diff"]["before"]["tags"] == {} and results[1]["diff"]["after"]["tags"] == {"form": form}


def test_rotation_enable_disable_and_on_demand(kms: Any, new_key: Any) -> None:
    key = new_key()

    four_way(MODULE, {"key": key["Alias"], "rotation_enabled": True})
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True

    results = four_way(MODULE, {"key": key["AliasArn"], "rotate_now": True, "rotate_if_older_than_days": 30})
    rotations = kms.list_key_rotations(KeyId=key["KeyId"])["Rotations"]
    assert len(rotations) == 1 and rotations[0]["RotationType"] == "ON_DEMAND"
    assert results[1]["key"]["last_rotated"] is not None and results[1]["key"]["versions"] == 2
    assert results[0]["audit_events"][0]["action"] == "rotate"

    four_way(MODULE, {"key": key["Arn"], "rotation_enabled": False})
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is False


def test_disable_and_enable(kms: Any, new_key: Any) -> None:
    key = new_key()

    results = four_way(MODULE, {"key": key["KeyId"], "enabled": False})
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    assert results[1]["diff"]["before"]["state"] == "enabled" and results[1]["diff"]["after"]["state"] == "disabled"

    four_way(MODULE, {"key": key["KeyId"], "enabled": True})
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_schedule_deletion_needs_approvals_then_cancel(kms: Any, new_key: Any) -> None:
    key = new_key()
    args = {"key": key["Alias"], "state": "absent", "deletion_window_days": 7, "change_ref": "CHG-9"}

    planned = run_module(MODULE, args, check=True)
    refused = run_module(MODULE, args)
    assert planned["changed"] is True and planned["audit_events"][0]["outcome"] == "planned"
    assert refused["failed"] and "dual control" in refused["msg"] and "approvals" in refused["msg"]
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"

    # Approvals of the plan made from that check-mode run, signed and verified for real.
    results = four_way(MODULE, {**args, "approvals": approve([planned])}, env=trusted_env())
    meta = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    window = meta["DeletionDate"] - dt.datetime.now(meta["DeletionDate"].tzinfo)
    assert dt.timedelta(days=6, hours=23) < window <= dt.timedelta(days=7)
    assert results[1]["audit_events"][0]["approvals"][0]["approver"] == "alice@keyops.lab"

    blocked = run_module(MODULE, {"key": key["Alias"], "description": "still here"})
    assert blocked["failed"] and "pending deletion" in blocked["msg"] and "cancel_deletion=true" in blocked["msg"]

    four_way(MODULE, {"key": key["Alias"], "cancel_deletion": True, "enabled": True})
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_master_kek_change_needs_approvals(kms: Any, new_key: Any) -> None:
    key = new_key(Tags=[{"TagKey": "key-class", "TagValue": "master-kek"}])

    refused = run_module(MODULE, {"key": key["KeyId"], "description": "new words"})
    assert refused["failed"] and "dual control" in refused["msg"]
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["Description"] == ""

    args = {"key": key["KeyId"], "description": "new words"}
    approvals = approve([run_module(MODULE, args, check=True)])
    results = four_way(MODULE, {**args, "approvals": approvals}, env=trusted_env())
    assert results[1]["audit_events"][0]["detail"]["key_class"] == "master-kek"


def test_unapproved_key_spec_refused_unless_overridden(kms: Any) -> None:
    alias = unique_alias("transport")

    refused = run_module(MODULE, {"alias": alias, "key_spec": "RSA_2048"})
    assert refused["failed"] and "RSA_2048" in refused["msg"] and "allow_unapproved_algorithm" in refused["msg"]

    created = run_module(MODULE, {"alias": alias, "key_spec": "RSA_2048", "allow_unapproved_algorithm": True})
    assert created["changed"] and any("does not approve" in warning for warning in created["warnings"])
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeySpec"] == "RSA_2048"
    assert created["key"]["rotation_status"] == "not_applicable"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"key": "alias/test-nothing-kek-20000101"}, ["no such key", "alias/NAME"]),
        ({"alias": "alias/NotTheRule"}, ["ENV-PURPOSE-TYPE-YYYYMMDD", "naming_rule"]),
        ({"key": "{key}", "rotation_period_days": 89}, ["rotation_period_days 89", "90 and 2560"]),
        ({"key": "{key}", "rotation_period_days": 2561}, ["rotation_period_days 2561", "90 and 2560"]),
        ({"key": "{key}", "state": "absent", "deletion_window_days": 3}, ["deletion_window_days 3", "7 and 30"]),
        ({"key": "{disabled}", "rotate_now": True}, ["disabled", "enabled=true"]),
        ({"key": "{pending}", "enabled": True}, ["pending deletion", "cancel_deletion=true"]),
        ({"key": "{rsa}", "rotation_enabled": True}, ["symmetric", "rotation_enabled"]),
        ({"key": "{key}", "key_spec": "RSA_4096"}, ["cannot change", "aws_kms_reencrypt"]),
    ],
    ids=[
        "unknown-alias",
        "alias-naming",
        "period-low",
        "period-high",
        "window",
        "disabled",
        "pending-deletion",
        "rotation-asymmetric",
        "key-spec-change",
    ],
)
def test_bad_input_fails_clearly(lab: dict[str, Any], new_key: Any, args: dict[str, Any], words: list[str]) -> None:
    seeded = {key["alias"].split("-")[1]: key for key in lab["seed"]["aws_kms"]["keys"]}
    refs = {
        "{key}": new_key()["Arn"],
        "{disabled}": seeded["crm"]["arn"],
        "{pending}": seeded["retired"]["arn"],
        "{rsa}": seeded["partner"]["arn"],
    }
    args = {name: refs.get(value, value) if isinstance(value, str) else value for name, value in args.items()}

    result = run_module(MODULE, args)

    assert result.get("failed"), result
    assert "Traceback" not in result["msg"] and "<html" not in result["msg"].lower()
    for word in words:
        assert word.lower() in result["msg"].lower(), result["msg"]


def test_explicit_connection_options_and_secret_canary(lab: dict[str, Any], new_key: Any) -> None:
    key = new_key()
    canary = "CANARY-kms-secret-7f3a9c"
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_ENDPOINT_URL": "", "AWS_DEFAULT_REGION": ""}
    args = {
        "key": key["Alias"],
        "description": "explicit options",
        "endpoint_url": lab["AWS_ENDPOINT_URL"],
        "region": lab["AWS_DEFAULT_REGION"],
        "access_key": "AKIACANARYKEY",
        "secret_key": canary,
        "session_token": canary + "-token",
        "retry_mode": "standard",
        "max_attempts": 3,
    }

    run = run_tasks([{"name": "change through explicit options", MODULE: args}], verbosity=3, env=env, diff=True)

    assert run.rc == 0, run.stdout[-2000:]
    assert run.last["changed"] is True and run.last["arn"] == key["Arn"]
    assert_no_canary([canary], run.stdout, run.stderr, json.dumps(run.results))
