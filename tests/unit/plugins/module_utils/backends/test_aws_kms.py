"""The AWS KMS connection layer: error mapping, reference forms and the reads that moto cannot show.

Denied calls and AWS-only replies come from botocore's Stubber with the replies AWS documents.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber

from ansible_collections.keyops.runbooks.plugins.module_utils.backends import aws_kms
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    AccessDenied,
    BackendUnavailable,
    Conflict,
    IntegrityError,
    InvalidInput,
    KeyNotFound,
)

ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
CONNECTION = {
    "region": "us-east-1",
    "access_key": "AKIDEXAMPLE",
    "secret_key": "example-secret",
    "retry_mode": "standard",
    "max_attempts": 1,
}


def metadata(**overrides: Any) -> dict[str, Any]:
    meta = {
        "AWSAccountId": "111122223333",
        "KeyId": KEY_ID,
        "Arn": ARN,
        "CreationDate": dt.datetime(2026, 1, 1),
        "Enabled": True,
        "Description": "",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": "Enabled",
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "KeySpec": "SYMMETRIC_DEFAULT",
    }
    meta.update(overrides)
    return meta


@pytest.fixture
def client() -> aws_kms.KmsClient:
    return aws_kms.connect(CONNECTION)


def client_error(code: str, status: int = 400, operation: str = "DescribeKey") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "raw server words <secret>"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (client_error("NotFoundException"), KeyNotFound, ["no such key", "alias/NAME"]),
        (client_error("AccessDeniedException"), AccessDenied, ["denied DescribeKey", "kms:DescribeKey"]),
        (client_error("DisabledException"), Conflict, ["disabled", "enabled=true"]),
        (client_error("KMSInvalidStateException"), Conflict, ["state does not allow"]),
        (client_error("ThrottlingException"), BackendUnavailable, ["throttling", "max_workers"]),
        (client_error("InvalidCiphertextException"), IntegrityError, ["ciphertext"]),
        (client_error("ValidationException"), InvalidInput, ["invalid"]),
        (client_error("KMSInternalException", 500), BackendUnavailable, ["server error"]),
        (NoCredentialsError(), AccessDenied, ["credentials", "access_key"]),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), BackendUnavailable, ["endpoint_url"]),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else None,
)
def test_errors_map_to_actionable_messages(error: Exception, kind: type, words: list[str]) -> None:
    mapped = aws_kms.map_error(error, "Read key", "alias/prod-x-kek-20260101", "DescribeKey")

    assert isinstance(mapped, kind)
    assert "raw server words" not in mapped.message and "<secret>" not in mapped.message
    for word in words:
        assert word.lower() in mapped.message.lower()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("prod-a-kek-20260101", "alias/prod-a-kek-20260101"),
        ("alias/prod-a-kek-20260101", "alias/prod-a-kek-20260101"),
        ("arn:aws:kms:us-east-1:111122223333:alias/prod-a-kek-20260101", "alias/prod-a-kek-20260101"),
    ],
)
def test_alias_name_forms(value: str, expected: str) -> None:
    assert aws_kms.alias_name(value) == expected


@pytest.mark.parametrize(
    ("spec", "bits"),
    [
        ("SYMMETRIC_DEFAULT", 256),
        ("RSA_3072", 3072),
        ("HMAC_256", 256),
        ("ECC_NIST_P384", "P-384"),
        ("ECC_SECG_P256K1", "secp256k1"),
    ],
)
def test_length_of_key_specs(spec: str, bits: int | str) -> None:
    assert aws_kms.length_of(spec) == bits


def stub_snapshot(
    stubber: Stubber,
    meta: dict[str, Any],
    rotation: dict[str, Any] | str | None,
    rotations: list[dict[str, Any]] | str | None = None,
) -> None:
    """Queue the replies of one KmsClient.snapshot() in call order; a str is an error code."""
    stubber.add_response("describe_key", {"KeyMetadata": meta}, {"KeyId": meta["Arn"]})
    stubber.add_response("list_aliases", {"Aliases": [], "Truncated": False}, {"KeyId": meta["KeyId"]})
    stubber.add_response("list_resource_tags", {"Tags": [], "Truncated": False}, {"KeyId": meta["KeyId"]})
    if isinstance(rotation, str):
        stubber.add_client_error("get_key_rotation_status", rotation, http_status_code=400)
    elif rotation is not None:
        stubber.add_response("get_key_rotation_status", rotation, {"KeyId": meta["KeyId"]})
    if isinstance(rotations, str):
        stubber.add_client_error("list_key_rotations", rotations, http_status_code=400)
    elif rotations is not None:
        stubber.add_response(
            "list_key_rotations", {"Rotations": rotations, "Truncated": False}, {"KeyId": meta["KeyId"]}
        )


def test_denied_rotation_read_is_unknown_never_disabled(client: aws_kms.KmsClient) -> None:
    with Stubber(client.client) as stubber:
        stub_snapshot(stubber, metadata(), "AccessDeniedException", "AccessDeniedException")
        snap = client.snapshot(ARN)

    assert snap.rotation_status == "unknown" and snap.rotation_enabled is None
    assert snap.last_rotated is None
    assert any("rotation status" in warning and "not as disabled" in warning for warning in snap.warnings)
    assert [item["code"] for item in snap.record().findings] == ["rotation_status_unknown"]


def test_rotation_period_and_history_as_aws_reports_them(client: aws_kms.KmsClient) -> None:
    rotations = [
        {"KeyId": KEY_ID, "RotationDate": dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc), "RotationType": "AUTOMATIC"},
        {"KeyId": KEY_ID, "RotationDate": dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc), "RotationType": "ON_DEMAND"},
    ]
    with Stubber(client.client) as stubber:
        stub_snapshot(stubber, metadata(), {"KeyRotationEnabled": True, "RotationPeriodInDays": 365}, rotations)
        snap = client.snapshot(ARN)

    record = snap.record()
    assert snap.rotation_status == "enabled" and record.rotation_period_days == 365
    assert record.last_rotated == "2026-06-01T00:00:00Z" and record.versions == 3
    assert record.next_rotation_due == "2027-06-01T00:00:00Z"


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"KeySpec": "RSA_3072"}, "not_applicable"),
        ({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}, "not_applicable"),
        ({"Origin": "EXTERNAL"}, "not_applicable"),
        ({"KeyState": "PendingDeletion", "Enabled": False, "DeletionDate": dt.datetime(2026, 2, 1)}, "not_applicable"),
    ],
    ids=["asymmetric", "hmac", "imported", "pending-deletion"],
)
def test_rotation_not_applicable_without_asking(
    client: aws_kms.KmsClient, overrides: dict[str, Any], status: str
) -> None:
    meta = metadata(**overrides)
    symmetric = meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    with Stubber(client.client) as stubber:
        stub_snapshot(stubber, meta, None, [] if symmetric else None)
        snap = client.snapshot(ARN)
        stubber.assert_no_pending_responses()

    assert snap.rotation_status == status


def test_inventory_leaves_out_a_key_whose_describe_is_denied(client: aws_kms.KmsClient) -> None:
    with Stubber(client.client) as stubber:
        stubber.add_response("list_aliases", {"Aliases": [], "Truncated": False}, {})
        stubber.add_response("list_keys", {"Keys": [{"KeyId": KEY_ID, "KeyArn": ARN}], "Truncated": False}, {})
        stubber.add_client_error("describe_key", "AccessDeniedException", http_status_code=400)
        snapshots, warnings = client.inventory(max_workers=1)

    assert snapshots == [] and any("denied" in warning and KEY_ID in warning for warning in warnings)


def test_aws_managed_key_is_read_but_not_changed(client: aws_kms.KmsClient) -> None:
    from ansible_collections.keyops.runbooks.plugins.module_utils import kms_key
    from ansible_collections.keyops.runbooks.plugins.module_utils.errors import PolicyViolation

    meta = metadata(KeyManager="AWS")
    with Stubber(client.client) as stubber:
        stub_snapshot(stubber, meta, {"KeyRotationEnabled": True, "RotationPeriodInDays": 365}, [])
        snap = client.snapshot(ARN)
    params = {
        "state": "present",
        "description": "mine now",
        "purge_tags": False,
        "rotate_now": False,
        "cancel_deletion": False,
    }

    with pytest.raises(PolicyViolation, match="AWS managed"):
        kms_key.plan(snap, None, params, dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc))
