"""pkcs11_key against SoftHSM2: create, rotate, destroy, dual control, and the failures an operator meets."""

from __future__ import annotations

import datetime as dt
import secrets

from pkcs11 import Attribute, KeyType, ObjectClass

from tests.integration.pkcs11.softhsm_tokens import DUPLICATE, SOURCE, TODAY, Hsm, make_keys
from tests.support.dual_control import approve, trusted_env
from tests.support.playbook import assert_no_canary, four_way, run_module, run_tasks

MODULE = "keyops.runbooks.pkcs11_key"
DAY = f"{TODAY:%Y%m%d}"
APPROVERS = ["alice@keyops.lab", "bob@keyops.lab"]


def listed(hsm: Hsm, label: str) -> list[dict[str, str]]:
    return [item for item in hsm.objects() if item.get("label") == label]


def test_create_every_algorithm_four_ways(hsm: Hsm) -> None:
    keys = [
        {"label": f"kt-create-kek-{DAY}", "algorithm": "AES-256"},
        {"label": f"kt-create-sign-{DAY}", "algorithm": "EC-P256"},
        {"label": f"kt-createp384-sign-{DAY}", "algorithm": "EC-P384"},
        {"label": f"kt-create-transport-{DAY}", "algorithm": "RSA-3072"},
        {"label": f"kt-create4096-transport-{DAY}", "algorithm": "RSA-4096"},
    ]
    check, real, _unused, again = four_way(MODULE, dict(hsm.connection(), keys=keys, change_ref="CHG-1"))

    assert [event["outcome"] for event in check["audit_events"]] == ["planned"] * 5
    assert [event["outcome"] for event in real["audit_events"]] == ["changed"] * 5
    assert [event["outcome"] for event in again["audit_events"]] == ["unchanged"] * 5
    assert real["audit_events"][0]["change_ref"] == "CHG-1"
    assert real["audit_events"][0]["detail"]["key_class"] == "kek"
    assert all(item["action"] == "none" for item in again["keys"])

    # Oracle: OpenSC's pkcs11-tool, in a process of its own.
    expected_types = ["AES length 32", "EC_POINT 256 bits", "EC_POINT 384 bits", "RSA 3072 bits", "RSA 4096 bits"]
    for key, key_type in zip(keys, expected_types, strict=True):
        objects = listed(hsm, key["label"])
        kinds = sorted(item["kind"] for item in objects)
        if key["algorithm"] == "AES-256":
            assert kinds == ["Secret Key Object"]
        else:
            assert kinds == ["Private Key Object", "Public Key Object"]
        secret = next(item for item in objects if item["kind"] != "Public Key Object")
        assert secret["Access"] == "sensitive, always sensitive, never extractable, local"
        described = next(item for item in objects if item["kind"] != "Private Key Object")
        assert key_type in described["type"]
        assert {item["ID"] for item in objects} == {real["keys"][keys.index(key)]["id"]}


def test_check_mode_creates_nothing_and_end_date_follows_policy(hsm: Hsm) -> None:
    label = f"kt-planned-dek-{DAY}"
    planned = run_module(MODULE, dict(hsm.connection(), keys=[{"label": label}]), check=True, diff=True)
    assert planned["changed"] is True
    assert listed(hsm, label) == []
    after = planned["diff"]["after"][planned["keys"][0]["uri"]]
    assert after["end_date"] == (TODAY + dt.timedelta(days=730)).isoformat()  # policy cryptoperiod for dek


def test_extractable_key_and_explicit_dates_on_a_pair(hsm: Hsm) -> None:
    label = f"kt-dated-sign-{DAY}"
    result = run_module(
        MODULE,
        dict(
            hsm.connection(),
            keys=[
                {
                    "label": label,
                    "id": "0badc0de",
                    "algorithm": "EC-P256",
                    "extractable": True,
                    "start_date": "2026-01-01",
                    "end_date": "2027-01-01",
                }
            ],
        ),
    )
    assert result["changed"] is True, result.get("msg")
    private = next(item for item in listed(hsm, label) if item["kind"] == "Private Key Object")
    assert "extractable" in private["Access"] and "never extractable" not in private["Access"]
    with hsm.session() as session:
        public = session.get_key(ObjectClass.PUBLIC_KEY, label=label, id=bytes.fromhex("0badc0de"))
        assert public[Attribute.START_DATE] == dt.date(2026, 1, 1)
        assert public[Attribute.END_DATE] == dt.date(2027, 1, 1)


def test_duplicates_are_an_error_listing_candidates(hsm: Hsm) -> None:
    label = f"kt-twin-dek-{DAY}"
    with hsm.session() as session:
        for _unused in range(2):
            session.generate_key(KeyType.AES, 256, label=label, id=b"\x77\x77", store=True)
    for state in ("present", "absent"):
        result = run_module(MODULE, dict(hsm.connection(), keys=[{"label": label, "id": "7777", "state": state}]))
        assert result.get("failed") is True
        assert "2 objects match and none is picked for you" in result["msg"]
        assert len(result["candidates"]) == 2
    assert len(listed(hsm, label)) == 2


def test_label_or_id_already_taken_by_another_key(hsm: Hsm) -> None:
    label = f"kt-taken-dek-{DAY}"
    make_keys(hsm, SOURCE, [(label, "AES-256", False)])
    result = run_module(MODULE, dict(hsm.connection(), keys=[{"label": label, "id": "abcdef01"}]))
    assert result.get("failed") is True
    assert "1 objects match" in result["msg"] and "Pass the id of the existing key" in result["msg"]
    assert len(listed(hsm, label)) == 1


def test_rotation_makes_a_successor_and_ends_the_old_key(hsm: Hsm) -> None:
    old = "kt-rotate-sign-20250101"
    make_keys(hsm, SOURCE, [(old, "EC-P256", False)])
    old_id = next(item["ID"] for item in listed(hsm, old))
    check, real, _unused, again = four_way(
        MODULE, dict(hsm.connection(), keys=[{"label": old, "id": old_id, "state": "rotated"}])
    )

    successor = f"kt-rotate-sign-{DAY}"
    assert real["keys"][0]["previous"] == {
        "label": old,
        "id": old_id,
        "uri": real["keys"][0]["uri"],
        "end_date": TODAY.isoformat(),
    }
    assert real["keys"][0]["successor"]["label"] == successor
    assert real["keys"][0]["successor"]["id"] != old_id
    assert check["audit_events"][0]["action"] == "rotate" and check["audit_events"][0]["outcome"] == "planned"
    assert again["audit_events"][0]["outcome"] == "unchanged"
    new_objects = listed(hsm, successor)
    assert sorted(item["kind"] for item in new_objects) == ["Private Key Object", "Public Key Object"]
    assert {item["ID"] for item in new_objects} == {real["keys"][0]["successor"]["id"]}
    with hsm.session() as session:
        public = session.get_key(ObjectClass.PUBLIC_KEY, label=old, id=bytes.fromhex(old_id))
        assert public[Attribute.END_DATE] == TODAY


def test_destroy_needs_exact_id_and_two_approvers(hsm: Hsm) -> None:
    label = f"kt-retired-dek-{DAY}"
    make_keys(hsm, SOURCE, [(label, "AES-256", False)])
    key_id = listed(hsm, label)[0]["ID"]

    no_id = run_module(MODULE, dict(hsm.connection(), keys=[{"label": label, "state": "absent"}]))
    assert no_id.get("failed") and "needs the exact CKA_ID" in no_id["msg"]
    wrong_id = run_module(MODULE, dict(hsm.connection(), keys=[{"label": label, "id": "00", "state": "absent"}]))
    assert wrong_id["changed"] is False
    args = dict(hsm.connection(), keys=[{"label": label, "id": key_id, "state": "absent"}])
    unapproved = run_module(MODULE, args)
    assert unapproved.get("failed") and "dual control" in unapproved["msg"]
    assert len(listed(hsm, label)) == 1

    # Approvals of the plan made from the module's own check-mode run, signed and verified for real.
    approvals = approve([run_module(MODULE, args, check=True)])
    _unused, real, _unused2, _unused3 = four_way(MODULE, dict(args, approvals=approvals), env=trusted_env())
    assert real["audit_events"][0]["action"] == "destroy"
    assert [approval["approver"] for approval in real["audit_events"][0]["approvals"]] == APPROVERS
    assert listed(hsm, label) == []


def test_master_kek_changes_need_approvals(hsm: Hsm) -> None:
    label = f"kt-master-kek-{DAY}"
    refused = run_module(MODULE, dict(hsm.connection(), keys=[{"label": label}]))
    assert refused.get("failed") and "dual control" in refused["msg"]
    assert listed(hsm, label) == []
    exported = run_module(MODULE, dict(hsm.connection(), keys=[{"label": label, "extractable": True}]))
    assert exported.get("failed") and "may not be extractable" in exported["msg"]
    args = dict(hsm.connection(), keys=[{"label": label}])
    approvals = approve([run_module(MODULE, args, check=True)])
    made = run_module(MODULE, dict(args, approvals=approvals), env=trusted_env())
    assert made["changed"] is True and made["audit_events"][0]["detail"]["key_class"] == "master-kek"


def test_policy_refuses_a_label_outside_the_naming_rule(hsm: Hsm) -> None:
    result = run_module(MODULE, dict(hsm.connection(), keys=[{"label": "My Key"}]))
    assert (
        result.get("failed") and "ENV-PURPOSE-TYPE-YYYYMMDD" in result["msg"] and "policy.naming_rule" in result["msg"]
    )


# (case, connection overrides, what the message must say). One playbook runs them all: a run costs seconds.
CONNECTION_FAILURES = [
    ("wrong PIN", {"user_pin": "wrong-pin-" + secrets.token_hex(4)}, "refused the user PIN. Check user_pin"),
    ("missing token", {"token_label": "kt-nowhere"}, "no token with label 'kt-nowhere' is present (tokens seen: "),
    ("two tokens match", {"token_label": DUPLICATE}, f"2 tokens match label '{DUPLICATE}': serial"),
    (
        "missing library",
        {"pkcs11_module": "/nonexistent/libvendor.so"},
        "/nonexistent/libvendor.so does not exist. Set pkcs11_module",
    ),
]


def test_connection_failures_say_what_to_fix(hsm: Hsm) -> None:
    tasks = [
        {
            "name": f"{case} (ignore_errors: the failure is the result under test)",
            "ignore_errors": True,
            MODULE: dict(hsm.connection(**overrides), keys=[{"label": f"kt-never-dek-{DAY}"}]),
        }
        for case, overrides, _unused in CONNECTION_FAILURES
    ]
    run = run_tasks(tasks)
    loud = run_tasks(tasks, verbosity=3, callback="ansible.builtin.default")
    for (case, overrides, message), result in zip(CONNECTION_FAILURES, run.results, strict=True):
        assert result.get("failed") is True, case
        assert message in result["msg"], (case, result["msg"])
        assert "Traceback" not in result["msg"]
        assert message in loud.stdout, case
        assert_no_canary(
            [hsm.pin, overrides.get("user_pin", hsm.pin)], run.stdout, run.stderr, loud.stdout, loud.stderr
        )
    assert listed(hsm, f"kt-never-dek-{DAY}") == []


def test_pin_from_environment_never_appears_in_output(hsm: Hsm) -> None:
    env = {"KEYOPS_PKCS11_MODULE": hsm.module, "KEYOPS_PKCS11_TOKEN_LABEL": SOURCE, "KEYOPS_PKCS11_PIN": hsm.pin}
    tasks = [
        {"name": "create", MODULE: {"keys": [{"label": f"kt-envpin-dek-{DAY}"}]}},
        {"name": "inventory", "keyops.runbooks.pkcs11_key_info": {"label": f"kt-envpin-dek-{DAY}"}},
    ]
    run = run_tasks(tasks, env=env, diff=True)
    assert run.rc == 0, run.stdout[-2000:]
    assert run.by_name("create")["changed"] is True
    assert run.by_name("inventory")["count"] == 1
    loud = run_tasks(tasks, env=env, diff=True, verbosity=3, callback="ansible.builtin.default")
    assert loud.rc == 0 and "kt-envpin-dek" in loud.stdout
    assert_no_canary([hsm.pin], run.stdout, run.stderr, loud.stdout, loud.stderr)
