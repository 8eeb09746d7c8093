"""Reconciliation with the register: missing, unregistered, drift, and findings merged once per code."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.reconcile import build_inventory, records_from_sources
from ansible_collections.keyops.runbooks.plugins.module_utils.register import RegisterEntry

NOW = "2026-12-03T12:00:00Z"


def entry(name: str, /, **fields: Any) -> RegisterEntry:
    values: dict[str, Any] = {
        "name": name,
        "backend": "vault_transit",
        "location": "transit",
        "key_class": "kek",
        "owner": "payments",
        "custodians": ["a", "b"],
        "purpose": "wraps data keys",
        "algorithm": "aes256-gcm96",
        "rotation_period_days": 90,
        "backup_location": "raft snapshot",
        "line": 3,
    }
    values.update(fields)
    return RegisterEntry(**values)


def vault_key(key: str, /, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": f"http://127.0.0.1:8200/v1/transit/keys/{key}",
        "name": key,
        "backend": "vault_transit",
        "location": "http://127.0.0.1:8200/v1/transit",
        "algorithm": "aes256-gcm96",
        "length_bits": 256,
        "created": "2026-11-20T00:00:00Z",
        "rotation_period_days": 90,
        "exportable": False,
        "findings": [],
    }
    values.update(fields)
    return values


def by_name(inventory: Any) -> dict[str, list[str]]:
    return {record["name"]: [item["code"] for item in record["findings"]] for record in inventory.records}


KEK = "prod-payments-kek-20261120"


def test_a_registered_compliant_key_gets_the_register_facts_and_no_finding() -> None:
    inventory = build_inventory([vault_key(KEK)], [entry(KEK)], now=NOW)
    (record,) = inventory.records
    assert record["findings"] == []
    assert (record["owner"], record["custodians"], record["backup_location"]) == (
        "payments",
        ["a", "b"],
        "raft snapshot",
    )
    assert record["next_rotation_due"] == "2027-02-18T00:00:00Z"
    assert inventory.missing == [] and inventory.unverified == []


@pytest.mark.parametrize(
    ("record_fields", "entry_fields", "code"),
    [
        ({"owner": "someone-else"}, {}, "drift_owner"),
        ({"algorithm": "aes128-gcm96", "length_bits": 128}, {}, "drift_algorithm"),
        ({"rotation_period_days": 30}, {}, "drift_rotation"),
        ({"rotation_period_days": None}, {}, "drift_rotation"),
        (
            {"key_class": "signing"},
            {},
            "drift_key_class",
        ),
    ],
)
def test_drift_between_backend_and_register(record_fields: dict, entry_fields: dict, code: str) -> None:
    name = record_fields.get("name", KEK)
    inventory = build_inventory([vault_key(name, **record_fields)], [entry(name, **entry_fields)], now=NOW)
    assert code in by_name(inventory)[name]


def test_spelling_differences_are_not_drift() -> None:
    pkcs11_key = {
        "id": "pkcs11:x",
        "name": "prod-fw-sign-20261120",
        "backend": "pkcs11",
        "location": "keyops-lab (serial 1)",
        "algorithm": "RSA",
        "length_bits": 3072,
        "key_class": "signing",
    }
    kms_key = vault_key(
        "prod-orders-kek-20261120",
        backend="aws_kms",
        id="arn:aws:kms:us-east-1:1:key/x",
        name="alias/prod-orders-kek-20261120",
        location="us-east-1/123456789012",
        algorithm="SYMMETRIC_DEFAULT",
        rotation_enabled=True,
        rotation_period_days=None,
    )
    entries = [
        entry(
            "prod-fw-sign-20261120",
            backend="pkcs11",
            location="keyops-lab",
            key_class="signing",
            algorithm="RSA-3072",
            rotation_period_days=1095,
        ),
        entry(
            "prod-orders-kek-20261120",
            backend="aws_kms",
            location="us-east-1/123456789012",
            algorithm="SYMMETRIC_DEFAULT",
            rotation_period_days=365,
        ),
    ]
    inventory = build_inventory([pkcs11_key, kms_key], entries, now=NOW)
    assert by_name(inventory) == {"prod-fw-sign-20261120": [], "alias/prod-orders-kek-20261120": []}
    # The register's period is the schedule of a backend that keeps none.
    assert inventory.records[1]["rotation_period_days"] == 1095


def test_missing_unregistered_and_unverified() -> None:
    entries = [
        entry(KEK),
        entry("prod-ghost-kek-20261120", line=20),
        entry("prod-hsm-kek-20261120", backend="pkcs11", location="hsm-a", line=40),
    ]
    inventory = build_inventory([vault_key(KEK), vault_key("prod-stray-kek-20261120")], entries, now=NOW)
    assert by_name(inventory)["prod-stray-kek-20261120"] == ["not_in_register"]
    assert [(item["name"], item["findings"][0]["code"]) for item in inventory.missing] == [
        ("prod-ghost-kek-20261120", "missing_from_backend")
    ]
    assert "register line 20" in inventory.missing[0]["findings"][0]["message"]
    # No PKCS#11 inventory ran, so its entry is unverified, not missing.
    assert [item["name"] for item in inventory.unverified] == ["prod-hsm-kek-20261120"]
    summary = inventory.summary()
    assert (summary["not_in_register"], summary["missing_from_backend"], summary["unverified_register_entries"]) == (
        1,
        1,
        1,
    )


def test_without_a_register_nothing_is_unregistered() -> None:
    inventory = build_inventory([vault_key("prod-stray-kek-20261120")], None, now=NOW)
    assert by_name(inventory) == {"prod-stray-kek-20261120": []}


def test_a_key_pair_is_one_registered_key_and_a_public_key_is_not_exportable() -> None:
    pair = [
        {
            "id": f"pkcs11:{kind}",
            "name": "prod-docs-sign-20261120",
            "backend": "pkcs11",
            "location": "hsm-a (serial 9)",
            "algorithm": "RSA-3072",
            "length_bits": 3072,
            "exportable": kind == "public",
            "object_class": f"{kind}_key",
        }
        for kind in ("private", "public")
    ]
    register = [
        entry(
            "prod-docs-sign-20261120",
            backend="pkcs11",
            location="hsm-a",
            key_class="signing",
            algorithm="RSA-3072",
            rotation_period_days=1095,
        )
    ]
    inventory = build_inventory(pair, register, now=NOW)
    assert [record["findings"] for record in inventory.records] == [[], []]


def test_ca_certificates_need_no_register_entry_unless_the_policy_says_so() -> None:
    ca = {
        "id": "sha256:ab",
        "name": "Lab Root CA",
        "backend": "x509",
        "location": "/etc/tls/bundle.pem#2",
        "key_class": "signing",
        "algorithm": "EC",
        "length_bits": "secp384r1",
        "is_ca": True,
        "expires": "2036-01-01T00:00:00Z",
    }
    assert by_name(build_inventory([ca], [], now=NOW)) == {"Lab Root CA": []}
    strict = build_inventory([ca], [], {"register_ca_certificates": True}, now=NOW)
    assert by_name(strict) == {"Lab Root CA": ["not_in_register"]}


def test_a_certificate_file_matches_its_entry_whatever_block_it_sits_in() -> None:
    cert = {
        "id": "sha256:cd",
        "name": "www.lab.internal",
        "backend": "x509",
        "location": "/certs/www.pem#0",
        "key_class": "tls-cert",
        "algorithm": "EC",
        "length_bits": "secp256r1",
        "created": "2026-11-01T00:00:00Z",
        "expires": "2027-01-30T00:00:00Z",
    }
    register = [
        entry("www.lab.internal", backend="x509", location="/certs/www.pem", key_class="tls-cert", algorithm="EC-P256")
    ]
    assert by_name(build_inventory([cert], register, now=NOW)) == {"www.lab.internal": []}


def test_source_findings_are_kept_once_under_the_policy_codes() -> None:
    cert = {
        "id": "sha256:ef",
        "name": "old.lab.internal",
        "backend": "x509",
        "location": "/certs/old.pem",
        "key_class": "tls-cert",
        "algorithm": "RSA",
        "length_bits": 1024,
        "state": "expired",
        "created": "2025-10-01T00:00:00Z",
        "expires": "2026-10-01T00:00:00Z",
        "findings": [
            {"code": "expired", "severity": "critical", "message": "expired on 2026-10-01"},
            {"code": "weak_key", "severity": "high", "message": "RSA-1024 is below the policy minimum"},
            {"code": "incomplete_chain", "severity": "high", "message": "no issuer served"},
        ],
    }
    (record,) = build_inventory([cert], None, now=NOW).records
    assert [(item["code"], item["severity"]) for item in record["findings"]] == [
        ("cert_expired", "critical"),
        ("incomplete_chain", "high"),
        ("key_too_short", "high"),
    ]
    assert record["findings"][0]["source_code"] == "expired"


def test_a_finding_stating_a_fact_is_kept_as_info() -> None:
    kms_key = vault_key(
        "staging-old-dek-20261120",
        backend="aws_kms",
        algorithm="SYMMETRIC_DEFAULT",
        state="pending_deletion",
        rotation_enabled=None,
        rotation_period_days=None,
        findings=[{"code": "pending_deletion", "severity": "high", "message": "deleted on ..."}],
    )
    (record,) = build_inventory([kms_key], None, now=NOW).records
    assert [(item["code"], item["severity"]) for item in record["findings"]] == [("pending_deletion", "info")]


def test_due_for_rotation_lists_keys_and_certificates_in_the_window() -> None:
    soon = vault_key("prod-soon-kek-20260920", created="2026-09-20T00:00:00Z")
    later = vault_key("prod-later-kek-20261120", rotation_period_days=365)
    cert = {
        "id": "sha256:01",
        "name": "www.lab.internal",
        "backend": "x509",
        "location": "/certs/www.pem",
        "key_class": "tls-cert",
        "algorithm": "EC",
        "length_bits": "secp256r1",
        "created": "2026-11-01T00:00:00Z",
        "expires": "2027-02-01T00:00:00Z",
    }
    inventory = build_inventory([soon, later, cert], None, now=NOW)
    assert [(item["name"], item["action"], item["days_left"]) for item in inventory.due] == [
        ("prod-soon-kek-20260920", "rotate", 15),
        ("www.lab.internal", "renew", 29),
    ]


def test_module_results_skipped_tasks_and_loops_all_feed_records() -> None:
    looped = {"results": [{"keys": [vault_key(KEK)], "item": {"url": "x"}}, {"skipped": True}]}
    certificates = {"records": [{"id": "sha256:aa", "name": "a", "backend": "x509"}]}
    records, backends = records_from_sources(
        [looped, certificates, {"skipped": True}, {"backend": "pkcs11", "keys": []}]
    )
    assert [record["name"] for record in records] == [KEK, "a"]
    assert backends == {"vault_transit", "x509", "pkcs11"}
