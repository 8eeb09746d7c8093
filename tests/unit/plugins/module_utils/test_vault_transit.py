"""Transit key planning, store guard, rewrap request sizing and backup checks: pure logic, no server."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3
from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import DataKey
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    PolicyViolation,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_backup import check_backup
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_rewrap import RewrapRequest, _chunks, rewrap_store
from ansible_collections.keyops.runbooks.plugins.module_utils.vault_transit import (
    check_guard,
    ciphertext_version,
    key_state,
    parse_period,
    plan_key,
)

NOW = dt.datetime(2026, 12, 3, 12, tzinfo=dt.timezone.utc)
POLICY = merged_policy()
REF = "transit/prod-payments-kek-20261203"


def existing(**changes: Any) -> dict[str, Any]:
    data = {
        "type": "aes256-gcm96",
        "latest_version": 3,
        "min_decryption_version": 1,
        "min_encryption_version": 0,
        "min_available_version": 0,
        "deletion_allowed": False,
        "exportable": False,
        "allow_plaintext_backup": False,
        "auto_rotate_period": 0,
        "keys": {"1": 1790000000, "2": 1795000000, "3": int((NOW - dt.timedelta(days=40)).timestamp())},
    }
    data.update(changes)
    return key_state(data)


def want(**options: Any) -> dict[str, Any]:
    return {"state": "present", "type": "aes256-gcm96", **options}


@pytest.mark.parametrize(
    ("current", "options", "actions", "approval", "guard"),
    [
        (key_state(None), {}, ["create"], "create", None),
        (key_state(None), {"rotate": True}, ["create"], "create", None),
        (existing(), {}, [], None, None),
        (existing(), {"rotate": True}, ["rotate"], "rotate", None),
        (existing(), {"rotate_older_than_days": 30}, ["rotate"], "rotate", None),
        (existing(), {"rotate_older_than_days": 90}, [], None, None),
        (existing(), {"auto_rotate_period": 2592000}, ["configure"], "configure", None),
        (existing(), {"min_decryption_version": 2}, ["configure"], "raise_min_decryption_version", 2),
        (existing(min_decryption_version=3), {"min_decryption_version": 2}, ["configure"], "configure", None),
        (existing(), {"min_decryption_version": 3, "trim_to_version": 3}, ["configure", "trim"], "trim", 3),
        (existing(), {"exportable": True, "allow_irreversible": True}, ["configure"], "export", None),
        (existing(deletion_allowed=True), {"state": "absent"}, ["destroy"], "destroy", 1 << 62),
        (existing(), {"state": "absent", "deletion_allowed": True}, ["configure", "destroy"], "destroy", 1 << 62),
        (key_state(None), {"state": "absent"}, [], None, None),
    ],
)
def test_plan(current: dict, options: dict, actions: list, approval: str | None, guard: int | None) -> None:
    plan = plan_key(current, want(**options), REF, POLICY, NOW)
    assert [step.action for step in plan.steps] == actions
    assert (plan.steps[-1].approval if plan.steps else None) == approval
    assert plan.guard_below == guard


@pytest.mark.parametrize(
    ("current", "options", "error", "words"),
    [
        (existing(), {"exportable": True}, PolicyViolation, "allow_irreversible"),
        (existing(exportable=True), {"exportable": False}, InvalidInput, "can never be turned off"),
        (
            existing(),
            {"exportable": True, "allow_irreversible": True, "key_class": "master-kek"},
            PolicyViolation,
            "master key",
        ),
        (existing(), {"min_decryption_version": 4}, InvalidInput, "outside 1..3"),
        (
            existing(),
            {"min_encryption_version": 1, "min_decryption_version": 2},
            InvalidInput,
            "min_encryption_version",
        ),
        (existing(), {"trim_to_version": 2}, InvalidInput, "Raise min_decryption_version first"),
        (existing(), {"state": "absent"}, PolicyViolation, "deletion_allowed"),
        (existing(), {"type": "rsa-4096", "type_given": True}, Conflict, "aes256-gcm96"),
    ],
)
def test_plan_refusals(current: dict, options: dict, error: type, words: str) -> None:
    with pytest.raises(error) as raised:
        plan_key(current, want(**options), REF, POLICY, NOW)
    assert words in raised.value.message and REF in raised.value.message


def test_guard_counts_ciphertexts_below_the_new_minimum(tmp_path: Any) -> None:
    path = str(tmp_path / "store.sqlite")
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE data_keys (id TEXT PRIMARY KEY, key_ref TEXT, ciphertext TEXT, context TEXT)")
        connection.executemany(
            "INSERT INTO data_keys VALUES (?, ?, ?, NULL)",
            [("a", REF, "vault:v1:x"), ("b", REF, "vault:v3:x"), ("c", "transit/other", "vault:v1:x")],
        )
    plan = plan_key(existing(), want(min_decryption_version=3), REF, POLICY, NOW)
    with pytest.raises(Conflict) as raised:
        check_guard(plan, [{"type": "sqlite", "path": path}], False, REF)
    assert "1 data key(s)" in raised.value.message and "vault_transit_rewrap" in raised.value.message
    with pytest.raises(PolicyViolation, match="dek_stores"):
        check_guard(plan, None, False, REF)
    assert check_guard(plan, None, True, REF) is None
    low = plan_key(existing(), want(min_decryption_version=1), REF, POLICY, NOW)
    assert check_guard(low, [{"type": "sqlite", "path": path}], False, REF) is None


def test_guard_is_not_blinded_by_a_store_that_records_bare_key_names(tmp_path: Any) -> None:
    # The lab's store (and many applications) record the transit key's name only: matching on <mount>/<name>
    # found nothing, and raising min_decryption_version was planned over 3800 data keys still at v1 and v2.
    path = str(tmp_path / "store.sqlite")
    bare = REF.split("/", 1)[1]
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE data_keys (id TEXT PRIMARY KEY, key_ref TEXT, ciphertext TEXT, context TEXT)")
        connection.executemany(
            "INSERT INTO data_keys VALUES (?, ?, ?, NULL)", [("a", bare, "vault:v1:x"), ("b", bare, "vault:v3:x")]
        )
    stores = [{"type": "sqlite", "path": path}]
    plan = plan_key(existing(), want(min_decryption_version=3), REF, POLICY, NOW)
    with pytest.raises(Conflict) as raised:
        check_guard(plan, stores, False, REF)
    assert f"1 below the new minimum are recorded under '{bare}'" in raised.value.message
    assert "store_key_ref" in raised.value.message
    with pytest.raises(Conflict, match="1 data key"):
        check_guard(plan, stores, False, REF, bare)
    assert check_guard(plan, stores, False, REF, REF) == {f"sqlite:{path}#data_keys": 0}


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("vault:v1:abc", 1),
        ("vault:v12:abc", 12),
        ("vault:v:abc", 0),
        ("vault:vx1:abc", 0),
        ("v1:abc", 0),
        ("", 0),
        ("vault:v3", 0),
    ],
)
def test_ciphertext_version(text: str, version: int) -> None:
    assert ciphertext_version(text) == version


@pytest.mark.parametrize(
    ("value", "seconds"), [("720h", 2592000), ("90d", 7776000), ("0", 0), (3600, 3600), ("15m", 900), (None, None)]
)
def test_parse_period(value: Any, seconds: int | None) -> None:
    assert parse_period(value, REF) == seconds


def test_parse_period_refuses_nonsense() -> None:
    with pytest.raises(InvalidInput, match="auto_rotate_period"):
        parse_period("monthly", REF)


@pytest.mark.parametrize(
    ("contexts", "sizes"),
    [
        (0, [332, 332, 6]),  # 3 strings an item: 332 fit under the default 1000-string limit
        (670, [199, 199, 199, 73]),  # 5 strings an item with a context
    ],
)
def test_requests_fit_the_default_listener(contexts: int, sizes: list[int]) -> None:
    items = [DataKey(str(n), REF, "vault:v1:x", "Y3R4" if n < contexts else None) for n in range(670)]
    chunks = _chunks(items, None, 1000)
    assert [len(chunk) for chunk in chunks] == sizes
    for chunk in chunks:
        assert 2 + sum(5 if item.context else 3 for item in chunk) <= 1000


def test_fixed_batch_size_wins() -> None:
    items = [DataKey(str(n), REF, "vault:v1:x") for n in range(1000)]
    assert [len(chunk) for chunk in _chunks(items, 499, 1000)] == [499, 499, 2]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"batch_size": -5}, "batch_size -5 is below 1"),
        ({"batch_size": 0}, "batch_size 0 is below 1"),
        ({"max_request_json_strings": 4}, "max_request_json_strings 4 cannot hold one item"),
    ],
)
def test_request_sizes_that_send_nothing_are_refused(options: dict[str, Any], words: str) -> None:
    # A negative batch_size once made no chunk at all: nothing was sent, yet histogram_after said all at target.
    request = RewrapRequest("transit", "prod-payments-kek-20261203", **options)
    with pytest.raises(InvalidInput, match=words):
        rewrap_store(None, None, request)  # refused before the server or the store is touched


def _backup(policy: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps({"policy": policy, "archived_keys": {}}).encode()).decode()


@pytest.mark.parametrize(
    "backup",
    [
        "",
        "not base64!",
        base64.b64encode(b'{"policy": {"keys": {"1"').decode(),
        _backup({"name": "k", "keys": {}, "latest_version": 1}),
        _backup({"name": "k", "keys": {"1": {}}, "latest_version": 2}),
    ],
)
def test_empty_or_truncated_backup_fails(backup: str) -> None:
    with pytest.raises(IntegrityError, match="backup"):
        check_backup(backup, REF)


def test_backup_facts() -> None:
    facts = check_backup(
        _backup({"name": "k", "type": 6, "keys": {"2": {}, "3": {}}, "latest_version": 3, "min_decryption_version": 2}),
        REF,
    )
    assert (facts["type"], facts["versions"], facts["min_decryption_version"]) == ("ecdsa-p384", [2, 3], 2)
