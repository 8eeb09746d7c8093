"""x509_inventory through the real ansible-playbook against the lab's certificate files and TLS endpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.certificates.oracle import openssl, openssl_fingerprint
from tests.support.playbook import assert_no_canary, run_module, run_tasks

pytestmark = pytest.mark.lab

MODULE = "keyops.runbooks.x509_inventory"


def endpoint_args(endpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"host": item["host"], "port": item["port"], "server_name": item["server_name"]} for item in endpoints]


def codes(record: dict[str, Any]) -> set[str]:
    return {item["code"] for item in record["findings"]}


@pytest.fixture(scope="module")
def estate(lab, tmp_path_factory) -> dict[str, Any]:
    """The lab's seeded files plus more formats: a chain bundle, a DER copy, a PKCS#12, and two broken files."""
    root = tmp_path_factory.mktemp("estate")
    seeded = root / "seeded"
    shutil.copytree(lab["KEYOPS_LAB_CERT_DIR"], seeded)
    extra = root / "extra" / "deep"
    extra.mkdir(parents=True)
    shutil.copy(Path(lab["state_dir"]) / "ca" / "chain.pem", extra / "ca-chain.pem")
    (extra / "broken.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n")
    (extra / "notes.txt").write_text("not scanned: excluded by the include globs\n")
    (root / "extra" / "archive").mkdir()
    shutil.copy(Path(lab["state_dir"]) / "ca" / "root-ca.pem", root / "extra" / "archive" / "old-root.pem")
    return {"root": root, "seeded": seeded, "extra": extra}


@pytest.fixture(scope="module")
def scanned(lab, estate, tls_endpoints) -> dict[str, Any]:
    dead = {"host": "127.0.0.1", "port": 9, "server_name": "dead.lab.internal", "timeout": 1}
    mismatch = dict(endpoint_args(tls_endpoints)[0], names=["shop.lab.internal"])
    run = run_tasks(
        [
            {
                "name": "scan",
                MODULE: {
                    "paths": [str(estate["root"])],
                    "exclude": ["*/archive"],
                    "pkcs12_passwords": [lab["KEYOPS_LAB_P12_PASSWORD"]],
                    "endpoints": [*endpoint_args(tls_endpoints), dead, mismatch],
                    "ca_bundle": lab["KEYOPS_LAB_CA_BUNDLE"],
                },
            }
        ],
        verbosity=3,
    )
    assert run.rc == 0, run.stdout[-3000:]
    return {"result": run.by_name("scan"), "run": run}


def test_every_seeded_file_is_found_with_the_fingerprint_openssl_computes(lab, estate, scanned):
    result = scanned["result"]
    by_path: dict[str, list[dict[str, Any]]] = {}
    for record in result["records"]:
        if record["source"]["type"] == "file":
            by_path.setdefault(Path(record["source"]["path"]).name, []).append(record)

    for seeded in lab["seed"]["certificates"]["files"]:
        name = Path(seeded["file"]).name
        leaf = by_path[name][0]
        assert leaf["fingerprint_sha256"] == seeded["sha256"], name
        copy = str(estate["seeded"] / name)
        if seeded["format"] in ("pem", "pem-bundle"):
            assert leaf["fingerprint_sha256"] == openssl_fingerprint(copy)
        elif seeded["format"] == "der":
            assert leaf["fingerprint_sha256"] == openssl_fingerprint(copy, "DER")
        assert leaf["source"]["format"] == {"pem-bundle": "pem"}.get(seeded["format"], seeded["format"])

    # The bundle holds leaf, issuing CA and root with text between them: every block, in file order.
    assert [record["source"]["block"] for record in by_path["partners-bundle.pem"]] == [0, 1, 2]
    assert by_path["partners-bundle.pem"][2]["self_signed"] is True
    assert len(by_path["svc-orders-client.p12"]) == 2
    assert [record["is_ca"] for record in by_path["ca-chain.pem"]] == [True, True]
    assert "old-root.pem" not in by_path and "notes.txt" not in by_path


def test_findings_match_the_seeded_estate(lab, scanned):
    records = {
        Path(record["source"]["path"]).name: record
        for record in scanned["result"]["records"]
        if record["source"]["type"] == "file" and record["source"]["block"] == 0
    }
    assert "cert_expiring" in codes(records["billing-expiring.pem"])
    assert 19 <= records["billing-expiring.pem"]["days_left"] <= 20
    assert "cert_expiring" in codes(records["payments-gateway.der"])
    assert "cert_expired" in codes(records["old-portal-expired.pem"])
    assert records["old-portal-expired.pem"]["state"] == "expired"
    assert "key_too_short" in codes(records["legacy-vpn-weak.pem"])
    assert records["legacy-vpn-weak.pem"]["length_bits"] == 1024
    assert codes(records["www-valid.pem"]) == set()
    assert records["www-valid.pem"]["backend"] == "x509"
    assert records["www-valid.pem"]["id"] == "sha256:" + records["www-valid.pem"]["fingerprint_sha256"]


def test_bad_sources_are_errors_and_the_scan_goes_on(estate, scanned):
    errors = scanned["result"]["errors"]
    assert {(Path(error["source"]).name if error["kind"] == "file" else error["source"]) for error in errors} == {
        "broken.crt",
        "127.0.0.1:9 (SNI dead.lab.internal)",
    }
    assert scanned["result"]["summary"]["errors"] == 2


def test_endpoints_serve_what_the_lab_says_sni_included(lab, tls_endpoints, scanned):
    leaves = {}
    for record in scanned["result"]["records"]:
        source = record["source"]
        if source["type"] == "endpoint" and source["position"] == 0 and record["names_asked"] != ["shop.lab.internal"]:
            leaves[(source["port"], source["server_name"])] = record
    details = {(item["port"], item["server_name"]): item for item in lab["tls_endpoints"]}
    assert set(leaves) == set(details)
    for key, record in leaves.items():
        assert record["fingerprint_sha256"] == details[key]["sha256"], key
        assert record["name_matches"] is True
        assert record["chain_complete"] is details[key]["chain_complete"]
        assert record["chain_verified"] is details[key]["chain_complete"]

    kinds = {item["kind"]: leaves[(item["port"], item["server_name"])] for item in tls_endpoints}
    # Same port, two names: two different certificates chosen by SNI.
    assert kinds["sni_valid"]["source"]["port"] == kinds["sni_expired"]["source"]["port"]
    assert kinds["sni_valid"]["fingerprint_sha256"] != kinds["sni_expired"]["fingerprint_sha256"]
    assert "cert_expired" in codes(kinds["sni_expired"]) and "cert_expired" not in codes(kinds["sni_valid"])
    assert "cert_expiring" in codes(kinds["expiring"])
    assert "cert_expired" in codes(kinds["expired"])
    assert "key_too_short" in codes(kinds["weak"])
    assert "incomplete_chain" in codes(kinds["incomplete_chain"])
    assert codes(kinds["valid"]) == set()

    # The served chain as openssl sees it: same fingerprints in the same order.
    valid = kinds["valid"]
    served = openssl(
        "s_client",
        "-connect",
        f"127.0.0.1:{valid['source']['port']}",
        "-servername",
        valid["source"]["server_name"],
        "-showcerts",
        stdin=b"",
    )
    blocks = served.split("-----BEGIN CERTIFICATE-----")[1:]
    prints = []
    for block in blocks:
        body = (
            "-----BEGIN CERTIFICATE-----" + block.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
        )
        text = openssl("x509", "-noout", "-fingerprint", "-sha256", stdin=body.encode())
        prints.append(text.strip().split("=", 1)[1].replace(":", "").lower())
    assert valid["source"]["served_chain"] == prints


def test_name_asked_that_the_certificate_does_not_cover(scanned):
    mismatched = [record for record in scanned["result"]["records"] if record["names_asked"] == ["shop.lab.internal"]]
    assert len(mismatched) == 1
    assert mismatched[0]["name_matches"] is False and "name_mismatch" in codes(mismatched[0])


def test_pkcs12_password_never_leaks_at_vvv(lab, scanned):
    assert_no_canary(
        [lab["KEYOPS_LAB_P12_PASSWORD"]], scanned["run"].stdout, scanned["run"].stderr, json.dumps(scanned["result"])
    )


def test_same_answer_under_two_time_zones(lab, estate, tls_endpoints):
    args = {
        "paths": [str(estate["root"])],
        "pkcs12_passwords": [lab["KEYOPS_LAB_P12_PASSWORD"]],
        "endpoints": endpoint_args(tls_endpoints),
        "ca_bundle": lab["KEYOPS_LAB_CA_BUNDLE"],
        "as_of": "2027-01-15T00:00:00",
    }
    results = [run_module(MODULE, args, env={"TZ": zone}) for zone in ("Pacific/Kiritimati", "America/Anchorage")]
    for result in results:
        result.pop("summary")
    assert results[0]["records"] and results[0] == results[1]


def test_check_mode_is_the_same_scan_and_bad_options_fail_clearly(lab, estate):
    checked = run_module(MODULE, {"paths": [str(estate["seeded"])]}, check=True)
    assert not checked["changed"] and checked["records"]
    missing_bundle = run_module(MODULE, {"paths": [str(estate["seeded"])], "ca_bundle": "/nonexistent.pem"})
    assert missing_bundle["failed"] and "ca_bundle" in missing_bundle["msg"]
    strict = run_module(MODULE, {"paths": [str(estate["root"])], "fail_on_errors": True})
    assert strict["failed"] and "broken.crt" in strict["msg"] and strict["records"]


def test_openssl_agrees_on_not_after(estate, scanned):
    record = next(
        record for record in scanned["result"]["records"] if record["source"].get("path", "").endswith("www-valid.pem")
    )
    end = openssl("x509", "-in", record["source"]["path"], "-noout", "-enddate", "-dateopt", "iso_8601")
    assert end.strip().split("=", 1)[1].replace(" ", "T") == record["not_after"]
