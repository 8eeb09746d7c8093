"""Policy evaluation of existing keys: each rule finds what it should and nothing on a compliant key."""

from __future__ import annotations

from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.policy import (
    DEFAULT_POLICY,
    check_algorithm,
    describe_algorithm,
    evaluate_record,
    merge_findings,
    merged_policy,
    requires_approval,
    same_algorithm,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.records import KeyRecord

NOW = "2026-12-03T12:00:00Z"


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "k",
        "name": "prod-payments-kek-20261101",
        "backend": "vault_transit",
        "location": "transit",
        "key_class": "kek",
        "algorithm": "aes256-gcm96",
        "length_bits": 256,
        "created": "2026-11-01T00:00:00Z",
        "rotation_period_days": 90,
        "exportable": False,
    }
    base.update(fields)
    return KeyRecord(**{k: v for k, v in base.items() if k in KeyRecord.__dataclass_fields__}).to_dict() | {
        k: v for k, v in base.items() if k not in KeyRecord.__dataclass_fields__
    }


def codes(item: dict[str, Any], policy: dict[str, Any] | None = None) -> list[str]:
    return sorted(finding["code"] for finding in evaluate_record(item, policy, NOW))


COMPLIANT = [
    record(),
    record(backend="aws_kms", algorithm="SYMMETRIC_DEFAULT", rotation_enabled=True, rotation_period_days=None),
    record(
        backend="pkcs11",
        name="prod-root-kek-20261101",
        key_class="master-kek",
        algorithm="AES-256",
        rotation_period_days=365,
    ),
    record(
        backend="pkcs11",
        name="prod-fw-sign-20261101",
        key_class="signing",
        algorithm="RSA",
        length_bits=3072,
        rotation_period_days=None,
    ),
    record(name="prod-api-sign-20261101", key_class="signing", algorithm="ecdsa-p384", length_bits="P-384"),
    record(name="prod-webhooks-hmac-20261101", key_class="signing", algorithm="hmac", length_bits=256),
    record(
        backend="aws_kms",
        name="prod-mac-hmac-20261101",
        key_class="signing",
        algorithm="HMAC_256",
        rotation_enabled=None,
    ),
    record(name="prod-tokens-sign-20261101", key_class="signing", algorithm="ed25519", length_bits=None),
    record(name="prod-cards-dek-20261101", key_class="dek", exportable=True),
    record(
        backend="x509",
        name="www.example.test",
        key_class="tls-cert",
        algorithm="EC",
        length_bits="secp256r1",
        created="2026-11-01T00:00:00Z",
        expires="2027-02-01T00:00:00Z",
        signature_algorithm="ecdsa-with-SHA256",
    ),
    record(
        backend="x509",
        name="old-but-ok.example.test",
        key_class="tls-cert",
        algorithm="RSA",
        length_bits=2048,
        created="2026-06-01T00:00:00Z",
        expires="2027-06-01T00:00:00Z",
    ),
    record(state="destroyed", algorithm="des"),
]


@pytest.mark.parametrize("item", COMPLIANT, ids=lambda item: f"{item['backend']}-{item['name']}")
def test_a_compliant_key_has_no_finding(item: dict[str, Any]) -> None:
    assert evaluate_record(item, None, NOW) == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"algorithm": "rsa-2048", "length_bits": 2048, "key_class": "signing", "name": "prod-a-sign-20261101"},
            ["algorithm_not_approved", "key_too_short"],
        ),
        ({"algorithm": "aes128-gcm96", "length_bits": 128}, ["algorithm_not_approved", "key_too_short"]),
        ({"algorithm": "chacha20-poly1305"}, ["algorithm_not_approved"]),
        (
            {"algorithm": "ecdsa-p521", "length_bits": "P-521", "key_class": "signing", "name": "prod-a-sign-20261101"},
            ["algorithm_not_approved"],
        ),
        (
            {
                "backend": "aws_kms",
                "algorithm": "ECC_SECG_P256K1",
                "key_class": "signing",
                "rotation_enabled": None,
                "name": "prod-a-sign-20261101",
            },
            ["algorithm_not_approved"],
        ),
        ({"backend": "aws_kms", "algorithm": "HMAC_224", "rotation_enabled": None}, ["key_too_short"]),
        ({"backend": "pkcs11", "algorithm": "DES3", "length_bits": 168}, ["algorithm_not_approved"]),
        ({"backend": "file", "algorithm": "symmetric", "length_bits": 128}, ["key_too_short"]),
        ({"created": "2025-10-01T00:00:00Z"}, ["rotation_overdue"]),
        ({"created": "2026-07-01T00:00:00Z"}, ["rotation_overdue"]),
        ({"rotation_period_days": 800}, ["rotation_period_too_long"]),
        ({"rotation_period_days": None}, ["rotation_disabled"]),
        ({"backend": "aws_kms", "algorithm": "SYMMETRIC_DEFAULT", "rotation_enabled": False}, ["rotation_disabled"]),
        ({"key_class": "master-kek", "exportable": True, "rotation_period_days": 365}, ["exportable_master_key"]),
        (
            {
                "key_class": "transport",
                "name": "prod-a-transport-20261101",
                "exportable": True,
                "allow_plaintext_backup": True,
            },
            ["exportable_key", "plaintext_backup_allowed"],
        ),
        ({"deletion_allowed": True}, ["deletion_allowed"]),
        ({"name": "legacy-billing-kek"}, ["name_nonconforming"]),
        ({"name": "prod-payments-dek-20261101"}, ["name_class_mismatch"]),
        (
            {"backend": "aws_kms", "algorithm": "SYMMETRIC_DEFAULT", "rotation_enabled": True, "tags": {}},
            ["missing_tags"],
        ),
        (
            {
                "backend": "x509",
                "key_class": "tls-cert",
                "name": "a.test",
                "algorithm": "EC",
                "length_bits": "secp256r1",
                "expires": "2026-12-01T00:00:00Z",
                "state": "expired",
            },
            ["cert_expired"],
        ),
        (
            {
                "backend": "x509",
                "key_class": "tls-cert",
                "name": "a.test",
                "algorithm": "EC",
                "length_bits": "secp256r1",
                "expires": "2026-12-20T00:00:00Z",
            },
            ["cert_expiring"],
        ),
        (
            {
                "backend": "x509",
                "key_class": "tls-cert",
                "name": "a.test",
                "algorithm": "RSA",
                "length_bits": 1024,
                "expires": "2027-06-01T00:00:00Z",
            },
            ["key_too_short"],
        ),
        (
            {
                "backend": "x509",
                "key_class": "tls-cert",
                "name": "a.test",
                "algorithm": "EC",
                "length_bits": "secp256r1",
                "created": "2026-01-01T00:00:00Z",
                "expires": "2028-01-01T00:00:00Z",
            },
            ["cert_validity_too_long"],
        ),
        (
            {
                "backend": "x509",
                "key_class": "tls-cert",
                "name": "a.test",
                "algorithm": "EC",
                "length_bits": "secp256r1",
                "expires": "2027-06-01T00:00:00Z",
                "signature_algorithm": "sha1WithRSAEncryption",
            },
            ["weak_signature"],
        ),
    ],
)
def test_each_rule_finds_its_problem(fields: dict[str, Any], expected: list[str]) -> None:
    assert codes(record(**fields)) == expected


@pytest.mark.parametrize(
    ("expires", "expected"),
    [("2026-12-03T11:59:59Z", ["cert_expired"]), (NOW, ["cert_expiring"]), ("2026-12-03T12:00:01Z", ["cert_expiring"])],
)
def test_a_certificate_is_valid_through_its_not_after(expires: str, expected: list[str]) -> None:
    cert = record(backend="x509", key_class="tls-cert", name="a.test", algorithm="EC", length_bits="secp256r1")
    assert codes(dict(cert, expires=expires)) == expected


def test_policy_overrides_change_the_verdict() -> None:
    dek = record(
        name="prod-orders-dek-20261101", key_class="dek", created="2025-10-01T00:00:00Z", rotation_period_days=None
    )
    assert codes(dek) == []
    assert codes(dek, {"cryptoperiod_days": {"dek": 365}}) == ["rotation_overdue"]
    short_tls = record(
        backend="x509",
        key_class="tls-cert",
        name="a.test",
        algorithm="RSA",
        length_bits=2048,
        expires="2027-06-01T00:00:00Z",
    )
    assert codes(short_tls, {"min_rsa_bits_tls": 3072}) == ["key_too_short"]


def test_severity_of_overdue_depends_on_whose_period_passed() -> None:
    by_schedule = evaluate_record(record(created="2026-07-01T00:00:00Z"), None, NOW)
    by_cryptoperiod = evaluate_record(record(created="2024-07-01T00:00:00Z"), None, NOW)
    assert [item["severity"] for item in by_schedule] == ["medium"]
    assert [item["severity"] for item in by_cryptoperiod] == ["high"]


def test_a_key_without_dates_is_aged_by_the_date_in_its_name() -> None:
    undated = record(
        backend="pkcs11", algorithm="AES-256", name="prod-old-kek-20231101", created=None, rotation_period_days=None
    )
    assert "by the date in its name" in evaluate_record(undated, None, NOW)[0]["message"]


def test_a_self_signed_sha1_root_is_noted_low() -> None:
    root = record(
        backend="x509",
        key_class="signing",
        name="Root",
        algorithm="RSA",
        length_bits=4096,
        expires="2036-01-01T00:00:00Z",
        signature_algorithm="sha1WithRSAEncryption",
        self_signed=True,
    )
    assert [(item["code"], item["severity"]) for item in evaluate_record(root, None, NOW)] == [
        ("weak_signature", "low")
    ]


@pytest.mark.parametrize(
    ("algorithm", "bits", "expected"),
    [
        ("aes256-gcm96", None, ("AES", 256, None, "GCM")),
        ("SYMMETRIC_DEFAULT", None, ("AES", 256, None, "GCM")),
        ("AES-128", None, ("AES", 128, None, None)),
        ("RSA_3072", None, ("RSA", 3072, None, None)),
        ("RSA", 4096, ("RSA", 4096, None, None)),
        ("ECC_NIST_P384", None, ("EC", 384, "P-384", None)),
        ("EC", "secp256r1", ("EC", 256, "P-256", None)),
        ("EC-P256", None, ("EC", 256, "P-256", None)),
        ("ecdsa-p256", "P-256", ("EC", 256, "P-256", None)),
        ("ECC_SECG_P256K1", None, ("EC", 256, "secp256k1", None)),
        ("ed25519", None, ("Ed25519", 256, "Ed25519", None)),
        ("HMAC_512", None, ("HMAC", 512, None, None)),
        ("hmac", 256, ("HMAC", 256, None, None)),
        ("chacha20-poly1305", None, ("ChaCha20", 256, None, None)),
    ],
)
def test_backend_spellings_read_alike(algorithm: str, bits: Any, expected: tuple[Any, ...]) -> None:
    described = describe_algorithm(algorithm, bits)
    assert (described["family"], described["bits"], described["curve"], described["mode"]) == expected


@pytest.mark.parametrize(
    ("left", "right", "right_bits", "same"),
    [
        ("aes256-gcm96", "AES-256", None, True),
        ("AES-256-GCM", "SYMMETRIC_DEFAULT", None, True),
        ("aes256-gcm96", "aes128-gcm96", None, False),
        ("RSA-3072", "RSA_3072", None, True),
        ("RSA-2048", "RSA", 3072, False),
        ("EC-P256", "EC", "secp256r1", True),
        ("EC-P256", "EC", "secp384r1", False),
        ("ecdsa-p256", "rsa-3072", None, False),
    ],
)
def test_same_algorithm_compares_meaning_not_spelling(left: str, right: str, right_bits: Any, same: bool) -> None:
    assert same_algorithm(left, right, None, right_bits) is same


def test_merge_keeps_one_finding_per_code_the_most_severe() -> None:
    merged = merge_findings(
        [{"code": "cert_expiring", "severity": "high", "message": "source"}],
        [
            {"code": "cert_expiring", "severity": "medium", "message": "policy"},
            {"code": "not_in_register", "severity": "medium", "message": "register"},
        ],
    )
    assert [(item["code"], item["message"]) for item in merged] == [
        ("cert_expiring", "source"),
        ("not_in_register", "register"),
    ]


def test_the_existing_policy_contract_still_holds() -> None:
    # Other modules call these: the inventory's additions must not change them.
    assert merged_policy({"cryptoperiod_days": {"dek": 365}})["cryptoperiod_days"]["kek"] == 730
    assert check_algorithm("vault_transit", "aes256-gcm96", "k", False) == []
    assert requires_approval("destroy", "dek") and requires_approval("rotate", "master-kek")
    assert DEFAULT_POLICY["min_rsa_bits"] == 3072
