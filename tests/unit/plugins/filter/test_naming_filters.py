"""The key_name and parse_key_name filters: the naming rule ENV-PURPOSE-TYPE-YYYYMMDD, by table and by property."""

from __future__ import annotations

import datetime as dt

import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.keyops.runbooks.plugins.filter.key_name import FilterModule as BuildFilters
from ansible_collections.keyops.runbooks.plugins.filter.parse_key_name import FilterModule as ParseFilters
from ansible_collections.keyops.runbooks.plugins.module_utils.naming import KEY_TYPES, MAX_NAME_LENGTH

key_name = BuildFilters().filters()["key_name"]
parse_key_name = ParseFilters().filters()["parse_key_name"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("prod", "payments", "kek", "2026-12-03"), "prod-payments-kek-20261203"),
        (("PROD", "Customer-Data", "DEK", "20261203"), "prod-customer-data-dek-20261203"),
        (("stage", "webhooks", "hmac", dt.date(2027, 1, 2)), "stage-webhooks-hmac-20270102"),
        (("dev", "api", "tls", dt.datetime(2026, 2, 28, 23, 59)), "dev-api-tls-20260228"),
    ],
)
def test_key_name_builds_compliant_names(args: tuple, expected: str) -> None:
    assert key_name(*args) == expected


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("prod-eu", "payments", "kek", "2026-12-03"), "environment 'prod-eu' must be letters and digits only"),
        (("prod", "pay--ments", "kek", "2026-12-03"), "purpose 'pay--ments' must be letters, digits and single"),
        (("prod", "payments", "key", "2026-12-03"), "type 'key' is not one of kek, dek, sign"),
        (("prod", "payments", "kek", "2026-02-30"), "date '2026-02-30' is not YYYYMMDD or YYYY-MM-DD"),
        (("prod", "p" * 130, "kek", "2026-12-03"), "Shorten the purpose"),
    ],
)
def test_key_name_refuses_parts_that_cannot_be_compliant(args: tuple, words: str) -> None:
    with pytest.raises(AnsibleFilterError, match=words.replace("(", r"\(")):
        key_name(*args)


def test_key_name_defaults_to_today_in_utc() -> None:
    assert key_name("prod", "payments", "kek").endswith(dt.datetime.now(dt.UTC).strftime("%Y%m%d"))


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("prod-payments-kek-20261203",
         {"env": "prod", "purpose": "payments", "type": "kek", "date": "2026-12-03", "key_class": "kek"}),
        ("prod-customer-data-sign-20270101",
         {"env": "prod", "purpose": "customer-data", "type": "sign", "date": "2027-01-01", "key_class": "signing"}),
        ("dev-api-tls-20260228", {"type": "tls", "key_class": "tls-cert"}),
        ("stage-orders-transport-20261203", {"type": "transport", "key_class": "transport"}),
    ],
)  # fmt: skip
def test_parse_key_name_splits_a_compliant_name(name: str, parts: dict) -> None:
    parsed = parse_key_name(name)
    assert parsed["valid"] is True and parsed["name"] == name
    assert {key: parsed[key] for key in parts} == parts


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("legacy-billing-kek", "does not match"),
        ("Prod-payments-kek-20261203", "does not match"),
        ("prod-payments-kek-2026123", "does not match"),
        ("prod-payments-key-20261203", "does not match"),
        ("prod--payments-kek-20261203", "does not match"),
        ("prod-payments-kek-20261203-old", "does not match"),
        ("prod-payments-kek-20261332", "is not a calendar date"),
        ("", "does not match"),
    ],
)
def test_parse_key_name_reports_why_a_name_breaks_the_rule(name: str, reason: str) -> None:
    parsed = parse_key_name(name)
    assert parsed["valid"] is False and reason in parsed["reason"]


environments = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)
purposes = st.from_regex(r"[a-z0-9]{1,10}(-[a-z0-9]{1,10}){0,3}", fullmatch=True)
days = st.dates(min_value=dt.date(1970, 1, 1), max_value=dt.date(9999, 12, 31))


@settings(max_examples=60, deadline=None)
@given(environments, purposes, st.sampled_from(KEY_TYPES), days)
def test_every_built_name_parses_back_to_its_parts(env: str, purpose: str, key_type: str, day: dt.date) -> None:
    name = key_name(env, purpose, key_type, day)
    parsed = parse_key_name(name)
    assert parsed["valid"] is True
    assert (parsed["env"], parsed["purpose"], parsed["type"], parsed["date"]) == (
        env,
        purpose,
        key_type,
        day.isoformat(),
    )
    assert name == name.lower() and len(name) <= MAX_NAME_LENGTH


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_parsing_any_text_never_fails_and_a_valid_result_rebuilds_the_same_name(text: str) -> None:
    parsed = parse_key_name(text)
    assert isinstance(parsed["valid"], bool) and parsed["name"] == text
    if parsed["valid"]:
        assert key_name(parsed["env"], parsed["purpose"], parsed["type"], parsed["date"]) == text
    else:
        assert parsed["reason"]


@settings(max_examples=60, deadline=None)
@given(environments, purposes, st.sampled_from(KEY_TYPES), days, st.sampled_from(["-", "_", " ", "x", "-old"]))
def test_anything_after_the_date_breaks_the_rule(
    env: str, purpose: str, key_type: str, day: dt.date, tail: str
) -> None:
    assert parse_key_name(key_name(env, purpose, key_type, day) + tail)["valid"] is False
