"""vault_transit_key against the lab's OpenBao: four-way runs, verified with hvac."""

from __future__ import annotations

from typing import Any

from tests.integration.vault.vault_helpers import assert_four_way, four_way_tasks, play, task
from tests.support.dual_control import approve, planned_event, trusted_env
from tests.support.vault_deks import versions_in

MODULE = "keyops.runbooks.vault_transit_key"


def read(oracle: Any, name: str) -> dict[str, Any]:
    return oracle.secrets.transit.read_key(name)["data"]


def test_create_configure_rotate(oracle: Any, scratch: Any) -> None:
    name = scratch("create")
    results = play(
        [
            *four_way_tasks("create", MODULE, {"name": name, "type": "ecdsa-p384", "auto_rotate_period": "720h"}),
            *four_way_tasks("configure", MODULE, {"name": name, "auto_rotate_period": "0", "deletion_allowed": True}),
            task("rotate: check", MODULE, {"name": name, "rotate": True}, check=True),
            task("rotate: real", MODULE, {"name": name, "rotate": True}),
            task("young: check", MODULE, {"name": name, "rotate_older_than_days": 30}, check=True),
            task("young: real", MODULE, {"name": name, "rotate_older_than_days": 30}),
            task("aged: real", MODULE, {"name": name, "rotate_older_than_days": 0}),
            task("wrong type", MODULE, {"name": name, "type": "aes256-gcm96"}, may_fail=True),
        ]
    )

    check, real, _unused, _unused2 = assert_four_way(results, "create")
    assert check["actions"] == ["create", "configure"] and check["audit_events"][0]["outcome"] == "planned"
    assert real["diff"]["before"] == {"exists": False} and real["audit_events"][0]["outcome"] == "changed"
    _unused, configured, _unused2, _unused3 = assert_four_way(results, "configure")
    assert configured["diff"]["before"]["auto_rotate_period"] == 30 * 86400
    assert configured["diff"]["after"]["auto_rotate_period"] == 0

    assert results["rotate: check"]["changed"] and results["rotate: check"]["key"]["latest_version"] == 2
    rotated = results["rotate: real"]
    assert rotated["diff"]["before"]["versions"] == [1] and rotated["diff"]["after"]["versions"] == [1, 2]
    assert not results["young: check"]["changed"] and not results["young: real"]["changed"]
    assert results["aged: real"]["actions"] == ["rotate"]
    wrong = results["wrong type"]
    assert wrong["failed"] and f"transit/{name}" in wrong["msg"] and "ecdsa-p384" in wrong["msg"]

    key = read(oracle, name)
    assert (key["type"], key["latest_version"], key["auto_rotate_period"], key["deletion_allowed"]) == (
        "ecdsa-p384",
        3,
        0,
        True,
    )


def test_raise_min_versions_and_trim_are_guarded(oracle: Any, dek_store: Any) -> None:
    name, path, _unused = dek_store(count=60)
    store = {"type": "sqlite", "path": path}
    raise_min = {"name": name, "min_decryption_version": 3, "min_encryption_version": 3, "dek_stores": [store]}
    # Approvals, signed and verified for real, of a plan that raises the minimum decryption version and trims.
    approved = approve(
        [
            planned_event("configure", "vault_transit", f"transit/{name}", requires_approval=True),
            planned_event("trim", "vault_transit", f"transit/{name}"),
        ]
    )
    results = play(
        [
            task("still held", MODULE, {**raise_min, "approvals": approved}, may_fail=True),
            task("no store", MODULE, {"name": name, "min_decryption_version": 3, "approvals": approved}, may_fail=True),
            task("rewrap", "keyops.runbooks.vault_transit_rewrap", {"name": name, "store": store}),
            task("unapproved", MODULE, raise_min, may_fail=True),
            *four_way_tasks("raise", MODULE, {**raise_min, "approvals": approved, "change_ref": "CHG-1"}),
            *four_way_tasks(
                "trim", MODULE, {"name": name, "trim_to_version": 3, "dek_stores": [store], "approvals": approved}
            ),
            task(
                "below trim", MODULE, {"name": name, "min_decryption_version": 1, "approvals": approved}, may_fail=True
            ),
        ],
        env=trusted_env(),
    )

    held = results["still held"]
    assert held["failed"] and name in held["msg"] and "40 data key(s)" in held["msg"]
    assert "vault_transit_rewrap" in held["msg"]
    assert results["no store"]["failed"] and "dek_stores" in results["no store"]["msg"]
    assert results["rewrap"]["rewrapped"] == 40
    unapproved = results["unapproved"]
    assert unapproved["failed"] and "approver" in unapproved["msg"] and name in unapproved["msg"]
    raised = assert_four_way(results, "raise")[1]
    assert raised["audit_events"][0]["detail"]["requires_approval"] == "raise_min_decryption_version"
    assert raised["audit_events"][0]["change_ref"] == "CHG-1"
    assert_four_way(results, "trim")
    assert results["below trim"]["failed"] and "min_decryption_version 1" in results["below trim"]["msg"]

    key = read(oracle, name)
    assert (key["min_decryption_version"], key["min_encryption_version"], key["min_available_version"]) == (3, 3, 3)
    assert sorted(key["keys"]) == ["3"] and versions_in(path) == {"v3": 60}


def test_irreversible_types_deletion_and_master_keys(oracle: Any, scratch: Any) -> None:
    export, weak, mac, master = scratch("export"), scratch("weak"), scratch("mac", "hmac"), scratch("master")
    oracle.secrets.transit.create_key(export)
    irreversible = {"name": export, "exportable": True, "allow_plaintext_backup": True}
    delete = {"name": mac, "state": "absent", "deletion_allowed": True, "skip_dek_store_check": True}
    approved = approve(
        [
            planned_event("configure", "vault_transit", f"transit/{export}", requires_approval=True),
            planned_event("configure", "vault_transit", f"transit/{mac}", requires_approval=True),
            planned_event("destroy", "vault_transit", f"transit/{mac}"),
            planned_event("create", "vault_transit", f"transit/{master}", "master-kek"),
        ]
    )
    results = play(
        [
            task("export refused", MODULE, irreversible, may_fail=True),
            *four_way_tasks("export", MODULE, {**irreversible, "allow_irreversible": True, "approvals": approved}),
            task("weak refused", MODULE, {"name": weak, "type": "rsa-2048"}, may_fail=True),
            *four_way_tasks("weak", MODULE, {"name": weak, "type": "rsa-2048", "allow_unapproved_algorithm": True}),
            *four_way_tasks("hmac", MODULE, {"name": mac, "type": "hmac", "key_size": 64}),
            task("delete refused", MODULE, delete, may_fail=True),
            *four_way_tasks("delete", MODULE, {**delete, "approvals": approved}),
            task("master refused", MODULE, {"name": master, "key_class": "master-kek"}, may_fail=True),
            *four_way_tasks("master", MODULE, {"name": master, "key_class": "master-kek", "approvals": approved}),
        ],
        env=trusted_env(),
    )

    refused = results["export refused"]
    assert refused["failed"] and "allow_irreversible" in refused["msg"] and export in refused["msg"]
    assert assert_four_way(results, "export")[1]["audit_events"][0]["detail"]["requires_approval"] == "export"
    weak_refused = results["weak refused"]
    assert weak_refused["failed"] and "rsa-2048" in weak_refused["msg"]
    assert "allow_unapproved_algorithm" in weak_refused["msg"]
    assert any("rsa-2048" in warning for warning in assert_four_way(results, "weak")[1]["warnings"])
    assert_four_way(results, "hmac")
    assert results["delete refused"]["failed"] and "approver" in results["delete refused"]["msg"]
    assert assert_four_way(results, "delete")[1]["actions"] == ["configure", "destroy"]
    assert results["master refused"]["failed"] and "dual control" in results["master refused"]["msg"]
    assert assert_four_way(results, "master")[0]["audit_events"][0]["detail"]["key_class"] == "master-kek"

    key = read(oracle, export)
    assert key["exportable"] and key["allow_plaintext_backup"]
    assert read(oracle, weak)["type"] == "rsa-2048" and read(oracle, master)["latest_version"] == 1
    assert mac not in oracle.secrets.transit.list_keys()["data"]["keys"]
