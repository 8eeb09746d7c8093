"""key_inventory: the one-call inventory equals the per-source one, and a source that fails is reported while the
others are still inventoried. Oracles: the per-source path's own reports, the seed (seed.json) and the register."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.playbook import ROOT, assert_no_canary, lab_estate, run_playbook, run_tasks

pytestmark = pytest.mark.lab

DEAD_VAULT = "http://127.0.0.1:9"  # the discard port: nothing listens there


def record_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["backend"], record["location"] or "", record["id"] or ""


@pytest.fixture(scope="module")
def both_paths(lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[bool, dict[str, Any]]:
    """playbooks/inventory.yml run with inventory_one_call true and false, on the same lab."""
    documents = {}
    for one_call in (True, False):
        output = tmp_path_factory.mktemp(f"one-call-{one_call}")
        run = run_playbook(
            os.path.join(ROOT, "playbooks", "inventory.yml"),
            extra_vars=lab_estate(lab["KEYOPS_LAB_DIR"], inventory_output_dir=str(output), inventory_one_call=one_call),
        )
        assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
        ran = [result for result in run.results if not result.get("skipped")]
        documents[one_call] = {"doc": json.loads((output / "key-inventory.json").read_text()), "tasks": len(ran)}
    return documents


def test_one_call_and_per_source_give_the_same_records_and_reports(both_paths: dict[bool, dict[str, Any]]) -> None:
    one, per = both_paths[True]["doc"], both_paths[False]["doc"]
    assert sorted(one["records"], key=record_key) == sorted(per["records"], key=record_key)
    assert one["summary"] == per["summary"]
    assert one["findings"] == per["findings"]
    assert one["missing_from_backend"] == per["missing_from_backend"]
    assert one["content_digest"] == per["content_digest"]
    assert set(one["summary"]["backends_scanned"]) == {"vault_transit", "aws_kms", "pkcs11", "x509"}
    assert "source_errors" not in one, "a complete inventory lists no source error"
    # One module task plus the fact, against one per server, region, token, certificates and the report.
    assert both_paths[True]["tasks"] < both_paths[False]["tasks"]


@pytest.fixture(scope="module")
def failing(lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """key_inventory with the lab's Vault, a Vault that is not there, the lab Vault named with a token variable that
    is not set, and the lab token with its PIN under a variable name of the test's own; at -vvv for the canaries."""
    output = tmp_path_factory.mktemp("failing-source")
    args = {
        "vault_servers": [
            {"url": lab["VAULT_ADDR"]},
            {"url": DEAD_VAULT},
            {"url": lab["VAULT_ADDR"], "token_env": "KEYOPS_TEST_TOKEN_NOT_SET"},
        ],
        "pkcs11_tokens": [{"token_label": lab["KEYOPS_PKCS11_TOKEN_LABEL"], "user_pin_env": "KEYOPS_TEST_HSM_PIN"}],
        "register_path": lab["KEYOPS_LAB_REGISTER"],
        "output_dir": str(output),
        "return_records": True,
    }
    env = {"KEYOPS_TEST_HSM_PIN": lab["KEYOPS_PKCS11_PIN"], "KEYOPS_TEST_TOKEN_NOT_SET": ""}
    run = run_tasks([{"name": "inventory", "keyops.runbooks.key_inventory": args, "register": "out"}], env=env,
                    verbosity=3)  # fmt: skip
    return {"run": run, "result": run.last, "dir": output, "args": args, "env": env}


def test_a_failing_source_is_reported_and_the_others_are_inventoried(
    lab: dict[str, Any], failing: dict[str, Any]
) -> None:
    result = failing["result"]
    assert not result.get("failed"), result.get("msg")
    errors = {(item["backend"], item["source"]): item["msg"] for item in result["source_errors"]}
    assert set(errors) == {("vault_transit", DEAD_VAULT), ("vault_transit", lab["VAULT_ADDR"])}
    assert "KEYOPS_TEST_TOKEN_NOT_SET" in errors[("vault_transit", lab["VAULT_ADDR"])]
    names = {(record["backend"], record["name"]) for record in result["records"]}
    seeded = [("vault_transit", key["name"]) for key in lab["seed"]["vault_transit"]["keys"]]
    seeded += [("pkcs11", key["label"]) for key in lab["seed"]["pkcs11"]["keys"]]
    assert set(seeded) <= names, "the sources that could be read are inventoried, the PKCS#11 PIN read by name"
    sources = {(item["backend"], item["source"]): item for item in result["sources"]}
    assert sources[("pkcs11", lab["KEYOPS_PKCS11_TOKEN_LABEL"])]["keys"] > 0


def test_the_failed_backends_unmatched_entries_are_unverified_not_missing(
    lab: dict[str, Any], failing: dict[str, Any]
) -> None:
    result = failing["result"]
    planted = lab["seed"]["register"]["drift"]["in_register_not_in_backend"]
    assert not [item for item in result["missing_from_backend"] if item["backend"] == "vault_transit"]
    unverified = {item["name"]: item["reason"] for item in result["unverified_register_entries"]}
    for name in planted:
        assert DEAD_VAULT in unverified[name], "the key may sit on the server that could not be read"


def test_the_reports_say_the_inventory_is_incomplete_and_hold_no_secret(
    lab: dict[str, Any], failing: dict[str, Any]
) -> None:
    document = json.loads((failing["dir"] / "key-inventory.json").read_text())
    assert {item["source"] for item in document["source_errors"]} == {DEAD_VAULT, lab["VAULT_ADDR"]}
    assert "could not be read, so this inventory is incomplete" in (failing["dir"] / "key-inventory.html").read_text()
    run = failing["run"]
    assert "could not be read, the inventory goes on without it" in run.stdout
    canaries = [lab["VAULT_TOKEN"], lab["KEYOPS_PKCS11_PIN"], lab["KEYOPS_PKCS11_SO_PIN"]]
    files = [path.read_text() for path in failing["dir"].iterdir()]
    assert_no_canary(canaries, run.stdout, run.stderr, *files)


def test_fail_on_source_errors_fails_after_writing_the_reports(failing: dict[str, Any], tmp_path: Path) -> None:
    args = dict(failing["args"], output_dir=str(tmp_path / "gate"), fail_on_source_errors=True, fail_on="high")
    run = run_tasks([{"name": "inventory", "keyops.runbooks.key_inventory": args}], env=failing["env"])
    result = run.last
    assert result["failed"] and "2 source(s) could not be read" in result["msg"]
    assert "fail_on_source_errors=false" in result["msg"]
    assert len(result["source_errors"]) == 2 and result["counts"]["keys"] > 0
    assert (tmp_path / "gate" / "key-inventory.json").exists(), "the reports are written before the run fails"
