"""Planning of keyops.runbooks.aws_kms_key from what KMS reported: AWS's rules, checked by the module itself."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils import kms_key
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.aws_kms import KeySnapshot
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    AccessDenied,
    Conflict,
    InvalidInput,
    PolicyViolation,
)

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.timezone.utc)
ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def params(**overrides: Any) -> dict[str, Any]:
    base = {name: spec.get("default") for name, spec in kms_key.KEY_ARGSPEC.items()}
    base.update({"approvals": [], "change_ref": None})
    base.update(overrides)
    return base


def snapshot(**overrides: Any) -> KeySnapshot:
    snap = KeySnapshot(
        arn=ARN,
        key_id=ARN.rsplit("/", 1)[1],
        region="us-east-1",
        account="111122223333",
        key_spec="SYMMETRIC_DEFAULT",
        key_usage="ENCRYPT_DECRYPT",
        origin="AWS_KMS",
        manager="CUSTOMER",
        key_state="Enabled",
        enabled=True,
        tags={},
        rotation_status="disabled",
    )
    return dataclasses.replace(snap, **overrides)


@pytest.mark.parametrize(
    ("option", "value", "ok"),
    [
        ("rotation_period_days", 89, False),
        ("rotation_period_days", 90, True),
        ("rotation_period_days", 2560, True),
        ("rotation_period_days", 2561, False),
        ("deletion_window_days", 6, False),
        ("deletion_window_days", 7, True),
        ("deletion_window_days", 30, True),
        ("deletion_window_days", 31, False),
        ("rotate_if_older_than_days", -1, False),
    ],
)
def test_aws_limits_are_checked_before_any_call(option: str, value: int, ok: bool) -> None:
    if ok:
        kms_key.validate(params(key=ARN, **{option: value}))
        return
    with pytest.raises(InvalidInput) as raised:
        kms_key.validate(params(key=ARN, **{option: value}))
    assert option in raised.value.message and str(value) in raised.value.message
    assert option in kms_key.KEY_ARGSPEC


@pytest.mark.parametrize(
    ("last_rotated", "older_than", "due"),
    [
        (None, 30, True),
        ("2026-11-30T12:00:00Z", 30, False),
        ("2026-11-03T12:00:00Z", 30, True),
        ("2026-12-03T11:00:00Z", None, True),
        ("2026-12-03T11:00:00Z", 0, True),
    ],
)
def test_rotation_due(last_rotated: str | None, older_than: int | None, due: bool) -> None:
    assert kms_key.rotation_due(last_rotated, older_than, NOW) is due


@pytest.mark.parametrize(
    ("snap", "options", "error", "words"),
    [
        (
            snapshot(key_state="PendingDeletion", enabled=False, deletion_date="2026-12-10T00:00:00Z"),
            {"description": "x"},
            Conflict,
            ["pending deletion", "cancel_deletion=true"],
        ),
        (snapshot(manager="AWS"), {"description": "x"}, PolicyViolation, ["AWS managed"]),
        (
            snapshot(key_spec="ECC_NIST_P256", key_usage="SIGN_VERIFY", rotation_status="not_applicable"),
            {"rotation_enabled": True},
            InvalidInput,
            ["symmetric", "rotation_enabled"],
        ),
        (snapshot(key_state="Disabled", enabled=False), {"rotate_now": True}, Conflict, ["disabled", "enabled=true"]),
        (snapshot(), {"key_spec": "RSA_4096"}, InvalidInput, ["cannot change"]),
        (snapshot(rotation_status="unknown"), {"rotation_enabled": True}, AccessDenied, ["kms:GetKeyRotationStatus"]),
        (snapshot(tags=None), {"owner": "x"}, AccessDenied, ["kms:ListResourceTags"]),
    ],
    ids=[
        "pending-deletion",
        "aws-managed",
        "asymmetric-rotation",
        "disabled-rotate",
        "key-spec",
        "rotation-denied",
        "tags-denied",
    ],
)
def test_refusals_name_the_fix(snap: KeySnapshot, options: dict[str, Any], error: type, words: list[str]) -> None:
    with pytest.raises(error) as raised:
        kms_key.plan(snap, None, params(key=ARN, **options), NOW)
    for word in words:
        assert word in raised.value.message


@pytest.mark.parametrize(
    ("snap", "options", "steps"),
    [
        (snapshot(), {"rotation_period_days": 180}, ["rotation"]),
        (snapshot(rotation_status="enabled", rotation_period_days=365), {"rotation_period_days": 180}, ["rotation"]),
        (snapshot(rotation_status="enabled", rotation_period_days=180), {"rotation_period_days": 180}, []),
        # moto does not report the period: nothing to compare, so no endless change.
        (snapshot(rotation_status="enabled"), {"rotation_period_days": 180}, []),
        (snapshot(rotation_status="enabled", rotation_period_days=365), {"rotation_enabled": False}, ["rotation"]),
        (snapshot(key_state="Disabled", enabled=False), {"enabled": True, "rotate_now": True}, ["enable", "rotate"]),
        (
            snapshot(key_state="PendingDeletion", enabled=False),
            {"cancel_deletion": True, "enabled": True},
            ["cancel_deletion", "enable"],
        ),
        (snapshot(key_state="PendingDeletion", enabled=False), {"state": "absent"}, []),
        (snapshot(), {"state": "absent"}, ["schedule_deletion"]),
        (snapshot(tags={"owner": "a", "old": "b"}), {"owner": "a"}, []),
        (snapshot(tags={"owner": "a", "old": "b"}), {"owner": "a", "purge_tags": True}, ["tags"]),
        (snapshot(), {"enabled": False}, ["disable"]),
    ],
)
def test_plan_steps(snap: KeySnapshot, options: dict[str, Any], steps: list[str]) -> None:
    planned = kms_key.plan(snap, None, params(key=ARN, **options), NOW)

    assert [step.name for step in planned] == steps


def test_key_policy_compared_as_json_not_text() -> None:
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*"}]}
    same = '{"Statement": [{"Action": "kms:*", "Effect": "Allow"}], "Version": "2012-10-17"}'

    assert kms_key.plan(snapshot(policy=document), None, params(key=ARN, key_policy=same), NOW) == []
    with pytest.raises(InvalidInput, match="not valid JSON"):
        kms_key.plan(snapshot(policy=document), None, params(key=ARN, key_policy="{nope"), NOW)


@pytest.mark.parametrize(
    ("alias", "policy", "ok"),
    [
        ("alias/prod-payments-kek-20261203", None, True),
        ("alias/Payments", None, False),
        ("alias/Payments", {"naming_rule": False}, True),
    ],
)
def test_alias_naming_rule(alias: str, policy: dict[str, Any] | None, ok: bool) -> None:
    if ok:
        kms_key.check_alias_name(alias, policy)
    else:
        with pytest.raises(PolicyViolation, match="naming_rule=false"):
            kms_key.check_alias_name(alias, policy)


def test_create_plan_with_rotation_for_symmetric_only() -> None:
    steps = kms_key.plan(None, None, params(alias="alias/prod-a-kek-20261203", rotation_period_days=365), NOW)
    assert [step.name for step in steps] == ["create", "alias", "rotation"]

    with pytest.raises(InvalidInput, match="symmetric"):
        kms_key.plan(
            None, None, params(alias="alias/prod-a-sign-20261203", key_spec="ECC_NIST_P256", rotation_enabled=True), NOW
        )
