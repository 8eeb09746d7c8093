"""What the rotation and compromise planners decide from records, the register and a real SQLite store."""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput, KeyNotFound
from ansible_collections.keyops.runbooks.plugins.module_utils.key_lock import LockState, lock_path
from ansible_collections.keyops.runbooks.plugins.module_utils.runbook_plan import (
    CompromisePlanner,
    RotationPlanner,
    step_lines,
    successor_alias,
    vault_serial,
)

NOW = "2026-12-03T12:00:00Z"
NAME = "prod-payments-kek-20251203"


def transit_record(name: str = NAME, created: str = "2026-01-01T00:00:00Z", versions: int = 3, **extra: Any) -> dict:
    return {
        "id": f"http://vault/v1/transit/keys/{name}",
        "name": name,
        "backend": "vault_transit",
        "mount": "transit",
        "key_ref": f"transit/{name}",
        "location": "http://vault/v1/transit",
        "state": "enabled",
        "created": created,
        "last_rotated": created,
        "version_times": {str(version): created for version in range(1, versions + 1)},
        "versions": versions,
        "min_decryption_version": 1,
        "min_encryption_version": 0,
        "auto_rotate_period": 7776000,
        **extra,
    }


def kms_record(alias: str = "prod-orders-kek-20261203") -> dict:
    arn = "arn:aws:kms:us-east-1:123456789012:key/1111"
    return {
        "id": arn,
        "arn": arn,
        "key_id": "1111",
        "name": alias,
        "backend": "aws_kms",
        "aliases": [f"alias/{alias}"],
        "key_spec": "SYMMETRIC_DEFAULT",
        "key_usage": "ENCRYPT_DECRYPT",
        "origin": "AWS_KMS",
        "state": "enabled",
        "created": "2026-12-01T00:00:00Z",
        "last_rotated": None,
        "rotation_enabled": True,
        "key_class": "kek",
    }


@pytest.fixture
def store(tmp_path: Any) -> str:
    path = str(tmp_path / "keys.sqlite")
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE data_keys (id TEXT PRIMARY KEY, key_ref TEXT, ciphertext TEXT, context TEXT)")
        rows = [(f"k{n}", NAME, f"vault:v{1 + n % 3}:abc", None) for n in range(30)]
        rows += [(f"o{n}", "arn:aws:kms:us-east-1:123456789012:key/1111", "QUJD", None) for n in range(5)]
        connection.executemany("INSERT INTO data_keys VALUES (?, ?, ?, ?)", rows)
    return path


def register(tmp_path: Any, store_path: str | None, period: int = 90) -> str:
    entry = {
        "name": NAME,
        "backend": "vault_transit",
        "location": "transit",
        "key_class": "kek",
        "owner": "p",
        "custodians": ["a", "b"],
        "purpose": "wraps",
        "rotation_period_days": period,
        "backup_location": "x",
    }
    if store_path:
        entry["data_key_stores"] = [{"path": store_path, "table": "data_keys"}]
    path = str(tmp_path / "register.yml")
    with open(path, "w", encoding="utf-8") as stream:
        yaml.safe_dump({"keys": [entry]}, stream)
    return path


@pytest.mark.parametrize(
    ("created", "keys", "selected", "reason"),
    [
        ("2026-01-01T00:00:00Z", [], True, "due"),  # 90-day period long past
        ("2026-11-30T00:00:00Z", [], False, None),  # rotated three days ago
        ("2026-11-30T00:00:00Z", [NAME], True, "named by the operator"),
        ("2026-11-30T00:00:00Z", [f"transit/{NAME}"], True, "named by the operator"),
    ],
)
def test_rotation_selects_due_or_named(
    tmp_path: Any, store: str, created: str, keys: list, selected: bool, reason: str | None
) -> None:
    plan = RotationPlanner(
        {
            "sources": [{"keys": [transit_record(created=created)]}],
            "register_path": register(tmp_path, store),
            "keys": keys,
            "as_of": NOW,
            "backends": ["vault_transit"],
        }
    ).plan()
    assert bool(plan["vault_transit"]) is selected
    if selected:
        item = plan["vault_transit"][0]
        assert item["reason"] == reason
        assert (item["rotate"], item["target_version"], item["raise_min_decryption"]) == (True, 4, True)
        # the store holds the bare key name: the planner finds that form
        assert item["stores"][0]["store_key_ref"] == NAME
        assert item["stores"][0]["pending"] == 30 and item["stores"][0]["histogram"] == {"v1": 10, "v2": 10, "v3": 10}
        assert [event["action"] for event in plan["audit_events"]] == ["rotate", "rewrap", "configure"]
        assert plan["requires_approval"]  # raising min_decryption_version is dual-controlled by default


def test_rotation_resumed_does_not_rotate_again(tmp_path: Any, store: str) -> None:
    record = transit_record(versions=4)
    record["version_times"]["4"] = "2026-12-03T11:00:00Z"
    plan = RotationPlanner(
        {
            "sources": [[record]],
            "register_path": register(tmp_path, store),
            "keys": [NAME],
            "as_of": NOW,
            "since": "2026-12-03T10:59:00Z",
        }
    ).plan()
    item = plan["vault_transit"][0]
    assert (item["rotate"], item["target_version"]) == (False, 4)


def test_rotation_without_store_leaves_min_decryption_to_a_human(tmp_path: Any) -> None:
    plan = RotationPlanner(
        {"sources": [[transit_record()]], "register_path": register(tmp_path, None), "as_of": NOW}
    ).plan()
    assert plan["vault_transit"][0]["raise_min_decryption"] is False
    assert any("no data-key store is registered" in line for line in plan["needs_human"])


def test_rotation_unknown_name_fails_with_what_to_check(tmp_path: Any) -> None:
    with pytest.raises(KeyNotFound, match="Check the name"):
        RotationPlanner({"sources": [[transit_record()]], "keys": ["nope"], "as_of": NOW}).plan()


def test_schedule_fix_when_backend_differs_from_register(tmp_path: Any, store: str) -> None:
    record = transit_record(created="2026-11-30T00:00:00Z", auto_rotate_period=0)
    plan = RotationPlanner({"sources": [[record]], "register_path": register(tmp_path, store), "as_of": NOW}).plan()
    assert plan["schedule_fixes"] == [
        {
            "backend": "vault_transit",
            "key_ref": f"transit/{NAME}",
            "name": NAME,
            "mount": "transit",
            "auto_rotate_period": "90d",
            "key_class": "kek",
        }
    ]


def test_compromise_plan_transit_then_resumed(tmp_path: Any, store: str) -> None:
    params = {
        "sources": [[transit_record()]],
        "register_path": register(tmp_path, store),
        "keys": [NAME],
        "change_ref": "INC-1",
        "as_of": NOW,
    }
    plan = CompromisePlanner(params).plan()
    item = plan["vault_transit"][0]
    assert (item["rotate"], item["target_version"], item["compromised_versions"]) == (True, 4, [1, 2, 3])
    assert [event["action"] for event in plan["audit_events"]] == [
        "snapshot",
        "rotate",
        "contain",
        "rewrap",
        "verify",
        "configure",
    ]
    assert all(event["detail"]["requires_approval"] for event in plan["audit_events"])
    assert [probe["key_version"] for probe in plan["verify_probes"]] == [1, 2, 3]
    assert plan["verify_checks"][0]["key_version"] == 4 and plan["resolved_keys"][0]["key"] == f"transit/{NAME}"

    record = transit_record(versions=4, min_encryption_version=4)
    record["version_times"]["4"] = "2026-12-03T11:30:00Z"
    resumed = CompromisePlanner(dict(params, sources=[[record]], since="2026-12-03T11:00:00Z")).plan()
    item = resumed["vault_transit"][0]
    assert (item["rotate"], item["target_version"]) == (False, 4)
    assert "rotate" not in [event["action"] for event in resumed["audit_events"]]


def test_compromise_plan_kms_successor_and_resume_by_recorded_alias(tmp_path: Any) -> None:
    plan = CompromisePlanner({"sources": [[kms_record()]], "keys": ["prod-orders-kek-20261203"], "as_of": NOW}).plan()
    item = plan["aws_kms"][0]
    assert item["successor_alias"] == "prod-orders-r2-kek-20261203"
    assert plan["kms_probes"] == [{"backend": "aws_kms", "key": item["arn"]}]
    assert plan["resolved_keys"][0]["aliases"] == ["prod-orders-kek-20261203"]

    moved = dict(kms_record(), aliases=[])
    successor = dict(
        kms_record("prod-orders-r2-kek-20261203"),
        id="arn:new",
        arn="arn:new",
        key_id="2222",
        aliases=["alias/prod-orders-r2-kek-20261203", "alias/prod-orders-kek-20261203"],
    )
    resumed = CompromisePlanner(
        {"sources": [[moved, successor]], "keys": [plan["resolved_keys"][0]], "as_of": NOW}
    ).plan()
    assert resumed["aws_kms"][0]["successor_arn"] == "arn:new"
    assert resumed["aws_kms"][0]["name"] == "prod-orders-kek-20261203"
    assert "create" not in [event["action"] for event in resumed["audit_events"]]


@pytest.mark.parametrize(
    ("name", "taken", "day", "expected"),
    [
        ("prod-orders-kek-20261203", set(), "2026-12-04", "prod-orders-kek-20261204"),
        ("prod-orders-kek-20261203", set(), "2026-12-03", "prod-orders-r2-kek-20261203"),
        ("prod-orders-kek-20261203", {"prod-orders-r2-kek-20261203"}, "2026-12-03", "prod-orders-r3-kek-20261203"),
        ("prod-master-kek-20261203", set(), "2026-12-03", "prod-master-r2-kek-20261203"),
    ],
)
def test_successor_names(name: str, taken: set, day: str, expected: str) -> None:
    assert successor_alias(name, taken, dt.datetime.fromisoformat(day)) == expected


def test_successor_of_a_nonconforming_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="successor_alias"):
        successor_alias("legacy-billing-kek", set(), dt.datetime(2026, 12, 3))


@pytest.mark.parametrize(("serial", "printed"), [(0x01FF, "01:ff"), (0xAB, "ab"), (0x1000000, "01:00:00:00")])
def test_vault_serial_format(tmp_path: Any, serial: int, printed: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payments-api.lab.internal")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    facts = vault_serial(str(path))
    assert (facts["serial"], facts["common_name"]) == (printed, "payments-api.lab.internal")


def test_step_lines_read_in_order() -> None:
    events = [
        {
            "action": "rotate",
            "backend": "vault_transit",
            "key_ref": "transit/k",
            "before": {"latest_version": 1},
            "after": {"latest_version": 2},
            "detail": {},
        },
        {
            "action": "rewrap",
            "backend": "vault_transit",
            "key_ref": "transit/k",
            "before": None,
            "after": None,
            "detail": {"count": 7},
        },
    ]
    assert step_lines(events) == [
        "1. rotate vault_transit transit/k: {'latest_version': 1} -> {'latest_version': 2}",
        "2. rewrap vault_transit transit/k (7 data keys)",
    ]


@pytest.mark.parametrize(
    ("key", "start"),
    [("transit/prod-a", "keyops/locks/transit_prod-a-"), ("arn:aws:kms:us-east-1:1:key/x", "keyops/locks/arn_aws_kms")],
)
def test_lock_paths_are_readable_and_distinct(key: str, start: str) -> None:
    path = lock_path("keyops/locks", key)
    assert path.startswith(start)
    assert lock_path("keyops/locks", key.replace("/", ":")) != path


@pytest.mark.parametrize(
    ("data", "now", "expired"),
    [
        ({"state": "held", "expires": "2026-12-03T12:00:00Z"}, 1796299199.0, False),
        ({"state": "held", "expires": "2026-12-03T12:00:00Z"}, 1796299200.0, True),
        ({"state": "held"}, 0.0, True),  # a lock without an expiry cannot hold anyone forever
    ],
)
def test_lock_expiry(data: dict, now: float, expired: bool) -> None:
    assert LockState("k", 1, data).expired(now) is expired
