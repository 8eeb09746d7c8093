"""keyops.runbooks.aws_kms_key_info against the lab's seeded KMS estate, checked with boto3."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc
from tests.integration.aws_kms.kms_helpers import reference_forms
from tests.support.playbook import run_tasks

MODULE = "keyops.runbooks.aws_kms_key_info"

pytestmark = pytest.mark.lab


def oracle_rotation(kms: Any, meta: dict[str, Any]) -> str:
    if meta["KeySpec"] != "SYMMETRIC_DEFAULT" or meta["Origin"] != "AWS_KMS" or meta["KeyState"] == "PendingDeletion":
        return "not_applicable"
    return "enabled" if kms.get_key_rotation_status(KeyId=meta["KeyId"])["KeyRotationEnabled"] else "disabled"


def test_inventory_matches_kms(lab: dict[str, Any], kms: Any) -> None:
    seeded = {key["arn"]: key for key in lab["seed"]["aws_kms"]["keys"]}
    orders = next(key for key in seeded.values() if "-orders-" in key["alias"])
    forms = reference_forms(
        {
            "KeyId": orders["key_id"],
            "Arn": orders["arn"],
            "Alias": f"alias/{orders['alias']}",
            "AliasArn": orders["arn"].split(":key/")[0] + f":alias/{orders['alias']}",
        }
    )

    run = run_tasks(
        [
            {"name": "everything", MODULE: {"customer_managed_only": True, "max_workers": 4}},
            {"name": "by tag", MODULE: {"tags": {"owner": "orders-platform"}}},
            {"name": "by every reference form", MODULE: {"keys": list(forms.values())}},
        ]
    )

    assert run.rc == 0, run.stdout[-2000:]
    everything = {record["arn"]: record for record in run.by_name("everything")["keys"]}
    assert set(seeded) <= set(everything)
    for arn, plan in seeded.items():
        record, meta = everything[arn], kms.describe_key(KeyId=arn)["KeyMetadata"]
        assert record["id"] == arn and record["key_spec"] == meta["KeySpec"] and record["origin"] == meta["Origin"]
        assert record["manager"] == "CUSTOMER" and record["aliases"] == [f"alias/{plan['alias']}"]
        assert record["key_state"] == meta["KeyState"]
        assert record["rotation_status"] == oracle_rotation(kms, meta), plan["alias"]
        assert (record["deletion_date"] is not None) == (meta["KeyState"] == "PendingDeletion")
        if plan["owner"]:
            assert record["owner"] == plan["owner"] and record["key_class"] == plan["key_class"]
    by_tag = {record["arn"] for record in run.by_name("by tag")["keys"]}
    assert by_tag == {arn for arn, plan in seeded.items() if plan["owner"] == "orders-platform"}
    by_form = run.by_name("by every reference form")["keys"]
    assert [record["arn"] for record in by_form] == [orders["arn"]]


def test_rotation_history_gives_last_rotated(kms: Any, new_key: Any) -> None:
    key = new_key()
    kms.rotate_key_on_demand(KeyId=key["KeyId"])
    rotated = kms.list_key_rotations(KeyId=key["KeyId"])["Rotations"][0]["RotationDate"]

    run = run_tasks([{"name": "one key", MODULE: {"keys": [key["AliasArn"]]}}])

    record = run.last["keys"][0]
    assert record["last_rotated"] == iso_utc(rotated)
    assert record["versions"] == 2 and record["rotation_status"] == "disabled"
