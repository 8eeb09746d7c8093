"""The whole inventory of the seeded lab, checked against the seed (seed.json) and the register file as oracles."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.inventory import browser
from tests.support.playbook import ROOT, assert_no_canary, four_way, lab_estate, run_module, run_playbook

pytestmark = pytest.mark.lab

DESIGN_COLUMNS = [
    "id", "name", "backend", "location", "key_class", "owner", "purpose", "algorithm", "length_bits", "created",
    "last_rotated", "rotation_period_days", "next_rotation_due", "expires", "state", "versions", "backup_location",
    "exportable", "findings",
]  # fmt: skip
# What each seeded TLS endpoint is planted to show (lab/tls_endpoints.py), as the inventory's finding codes.
ENDPOINT_CODES = {"expiring": ["cert_expiring"], "expired": ["cert_expired"], "sni_expired": ["cert_expired"],
                  "weak": ["key_too_short"], "incomplete_chain": ["incomplete_chain"]}  # fmt: skip
SERIOUS = ("low", "medium", "high", "critical")


@pytest.fixture(scope="module")
def inventory(lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of playbooks/inventory.yml against the lab, at -vvv so the canary check sees everything."""
    output = tmp_path_factory.mktemp("inventory")
    started = time.monotonic()
    run = run_playbook(
        os.path.join(ROOT, "playbooks", "inventory.yml"),
        extra_vars=lab_estate(lab["KEYOPS_LAB_DIR"], inventory_output_dir=str(output)),
        verbosity=3,
    )
    seconds = time.monotonic() - started
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    document = json.loads((output / "key-inventory.json").read_text())
    return {"run": run, "dir": output, "doc": document, "seconds": seconds, "lab": lab}


def seeded_items(lab: dict[str, Any]) -> list[dict[str, Any]]:
    """Every key and certificate the seed planted: how to find its records, and the codes it must show."""
    seed = lab["seed"]
    items = []
    for key in seed["vault_transit"]["keys"]:
        items.append({"backend": "vault_transit", "name": key["name"], "where": lab["VAULT_ADDR"],
                      "codes": [item["code"] for item in key["findings"]]})  # fmt: skip
    for key in seed["vault_raft"]["keys"]:
        items.append({"backend": "vault_transit", "name": key["name"], "where": lab["KEYOPS_LAB_RAFT_ADDR"],
                      "codes": [item["code"] for item in key["findings"]]})  # fmt: skip
    for key in seed["aws_kms"]["keys"]:
        items.append({"backend": "aws_kms", "name": key["alias"], "where": "",
                      "codes": [item["code"] for item in key["findings"]]})  # fmt: skip
    for key in seed["pkcs11"]["keys"]:
        items.append({"backend": "pkcs11", "name": key["label"], "where": seed["pkcs11"]["token_label"],
                      "codes": [item["code"] for item in key["findings"]]})  # fmt: skip
    for cert in seed["certificates"]["files"]:
        items.append({"backend": "x509", "name": cert["common_name"], "where": cert["file"],
                      "codes": [item["code"] for item in cert["findings"]]})  # fmt: skip
    for endpoint in seed["tls_endpoints"]:
        items.append({"backend": "x509", "name": endpoint["server_name"],
                      "where": f"{endpoint['host']}:{endpoint['port']} sni={endpoint['server_name']}",
                      "codes": ENDPOINT_CODES.get(endpoint["kind"], [])})  # fmt: skip
    return items


def records_of(document: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    found = [
        record
        for record in document["records"]
        if record["backend"] == item["backend"]
        and record["name"].removeprefix("alias/") == item["name"]
        and item["where"] in (record["location"] or "") + (record["id"] or "")
        and not record.get("is_ca")
    ]
    assert found, f"{item['backend']} {item['name']} at {item['where']} is not in the inventory"
    return found


def in_register(lab: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether the register file (read straight from disk) lists the record: same backend and name, and the
    entry's location written inside the record's (``transit`` in ``http://host/v1/transit``, a file path in
    ``path#0``)."""
    entries = yaml.safe_load(Path(lab["KEYOPS_LAB_REGISTER"]).read_text())["keys"]
    return any(
        entry["backend"] == record["backend"]
        and entry["name"] == record["name"].removeprefix("alias/")
        and entry["location"] in (record["location"] or "")
        for entry in entries
    )


def codes(record: dict[str, Any], severities: tuple[str, ...] = SERIOUS) -> set[str]:
    return {item["code"] for item in record["findings"] if item["severity"] in severities}


def test_every_planted_non_compliant_key_is_found_with_its_findings(inventory: dict[str, Any]) -> None:
    planted = [item for item in seeded_items(inventory["lab"]) if item["codes"]]
    assert len(planted) >= 12
    for item in planted:
        for record in records_of(inventory["doc"], item):
            missing = set(item["codes"]) - codes(record)
            assert not missing, f"{item['name']} ({record['location']}): {missing} not found in {record['findings']}"


def test_no_compliant_key_gets_a_finding(inventory: dict[str, Any]) -> None:
    lab = inventory["lab"]
    compliant = [item for item in seeded_items(lab) if not item["codes"]]
    planted_drift = {(item["name"], item["code"]) for item in lab["seed"]["register"]["drift"]["mismatches"]}
    assert len(compliant) >= 15
    for item in compliant:
        for record in records_of(inventory["doc"], item):
            # A key the register file does not list, or lists with planted drift, is rightly reported so.
            allowed = set() if in_register(lab, record) else {"not_in_register"}
            allowed |= {code for name, code in planted_drift if name == item["name"].removeprefix("alias/")}
            assert codes(record) <= allowed, f"{item['name']} ({record['location']}): {record['findings']}"


def test_register_drift_is_found(inventory: dict[str, Any]) -> None:
    document, lab = inventory["doc"], inventory["lab"]
    drift = lab["seed"]["register"]["drift"]
    assert [item["name"] for item in document["missing_from_backend"]] == drift["in_register_not_in_backend"]
    for name in drift["in_backend_not_in_register"]:
        assert any(record["name"] == name and "not_in_register" in codes(record) for record in document["records"])
    for mismatch in drift["mismatches"]:
        (record,) = [
            record for record in document["records"] if record["name"].removeprefix("alias/") == mismatch["name"]
        ]
        assert mismatch["code"] in codes(record), (mismatch, record["findings"])
    # Exactly the keys the register file lacks are reported as not in it (CA certificates excepted).
    unregistered = {record["id"] for record in document["records"] if "not_in_register" in codes(record)}
    expected = {
        record["id"] for record in document["records"] if not in_register(lab, record) and not record.get("is_ca")
    }
    assert unregistered == expected


def test_the_csv_has_exactly_the_design_columns(inventory: dict[str, Any]) -> None:
    with open(inventory["dir"] / "key-inventory.csv", newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == DESIGN_COLUMNS
    assert len(rows) - 1 == len(inventory["doc"]["records"])
    backends = {row[2] for row in rows[1:]}
    assert backends == {"vault_transit", "aws_kms", "pkcs11", "x509"}
    assert all(row[0] for row in rows[1:]), "every row has a backend id"


def test_no_secret_reaches_the_output_or_the_reports(inventory: dict[str, Any]) -> None:
    lab = inventory["lab"]
    secrets = ("VAULT_TOKEN", "KEYOPS_LAB_RAFT_TOKEN", "KEYOPS_PKCS11_PIN", "KEYOPS_PKCS11_SO_PIN",
               "KEYOPS_LAB_P12_PASSWORD", "AWS_SECRET_ACCESS_KEY")  # fmt: skip
    canaries = [lab[name] for name in secrets]
    files = [path.read_text() for path in inventory["dir"].iterdir()]
    assert_no_canary(canaries, inventory["run"].stdout, inventory["run"].stderr, *files)


@pytest.mark.skipif(browser.chromium() is None, reason="Chromium is not installed (scripts/bootstrap.sh --test)")
def test_the_html_report_renders_offline_with_charts_and_no_console_error(inventory: dict[str, Any]) -> None:
    rendered = browser.render(str(inventory["dir"] / "key-inventory.html"))
    assert rendered.console == []
    # The page's own script ran to the end and found its three charts.
    assert 'data-report-ready="3"' in rendered.dom and "rendered: 3 charts" in rendered.dom
    pixels = browser.count_colours(
        rendered.png,
        {"high bar": "#dc2626", "medium bar": "#f59e0b", "kek bar": "#2563eb", "signing bar": "#059669",
         "certificate dot": "#16a34a"},
    )  # fmt: skip
    assert all(count > 200 for count in pixels.values()), pixels


@pytest.mark.skipif(browser.chromium() is None, reason="Chromium is not installed (scripts/bootstrap.sh --test)")
def test_the_console_check_catches_a_script_error(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>undefinedFunction();</script></body></html>")
    assert any("undefinedFunction" in line for line in browser.render(str(page)).console)


def test_a_broken_register_fails_with_line_and_field(lab: dict[str, Any], tmp_path: Path) -> None:
    text = Path(lab["KEYOPS_LAB_REGISTER"]).read_text()
    broken = text.replace("  key_class: kek\n", "  key_clas: kek\n", 1).replace("backend: pkcs11", "backend: hsm", 1)
    path = tmp_path / "register.yml"
    path.write_text(broken)
    lines = broken.splitlines()
    clas_line = next(number for number, line in enumerate(lines, 1) if "key_clas:" in line)
    hsm_line = next(number for number, line in enumerate(lines, 1) if "backend: hsm" in line)
    result = run_module("keyops.runbooks.key_register_validate", {"path": str(path)})
    assert result["failed"]
    assert f"line {clas_line}, field 'key_clas'" in result["msg"] and "did you mean 'key_class'" in result["msg"]
    assert f"line {hsm_line}, field 'backend'" in result["msg"] and "'hsm' is not one of" in result["msg"]
    assert [error["line"] for error in result["errors"]] == [clas_line, hsm_line]


def test_the_report_module_four_ways_and_fail_on(inventory: dict[str, Any], tmp_path: Path) -> None:
    document = inventory["doc"]
    args = {
        "records": document["records"],
        "register_path": inventory["lab"]["KEYOPS_LAB_REGISTER"],
        "output_dir": str(tmp_path / "reports"),
        "as_of": document["as_of"],
    }
    check, real, _unused, _unused2 = four_way("keyops.runbooks.key_inventory_report", args)
    assert not (tmp_path / "reports").exists() or check["changed"]
    assert real["counts"] == document["summary"]
    assert sorted(os.listdir(tmp_path / "reports")) == ["key-inventory.csv", "key-inventory.html", "key-inventory.json"]

    failed = run_module("keyops.runbooks.key_inventory_report", dict(args, output_dir=str(tmp_path / "gate"),
                                                                     fail_on="high"))  # fmt: skip
    assert failed["failed"] and "finding(s) at severity high or above" in failed["msg"]
    assert failed["counts"]["by_severity"]["high"] > 0
    assert (tmp_path / "gate" / "key-inventory.html").exists(), "the reports are written before the run fails"


def test_the_whole_lab_inventory_runs_in_a_change_window(inventory: dict[str, Any], record_property: Any) -> None:
    record_property("inventory_seconds", round(inventory["seconds"], 1))
    assert inventory["seconds"] < 120, f"the lab inventory took {inventory['seconds']:.0f} s"
