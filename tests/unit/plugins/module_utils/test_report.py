"""The reports: CSV columns, a self-contained HTML page, files rewritten only when the content changed."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput, PolicyViolation
from ansible_collections.keyops.runbooks.plugins.module_utils.inventory_report import inventory_report
from ansible_collections.keyops.runbooks.plugins.module_utils.records import CSV_COLUMNS

DESIGN_COLUMNS = [
    "id", "name", "backend", "location", "key_class", "owner", "purpose", "algorithm", "length_bits", "created",
    "last_rotated", "rotation_period_days", "next_rotation_due", "expires", "state", "versions", "backup_location",
    "exportable", "findings",
]  # fmt: skip

RECORDS: list[dict[str, Any]] = [
    {"id": "k1", "name": "prod-payments-kek-20261120", "backend": "vault_transit", "location": "transit",
     "algorithm": "aes256-gcm96", "length_bits": 256, "created": "2026-11-20T00:00:00Z", "rotation_period_days": 90,
     "exportable": False, "findings": []},
    {"id": "k2", "name": "Legacy, \"quoted\" <key>", "backend": "vault_transit", "location": "transit",
     "algorithm": "rsa-2048", "length_bits": 2048, "created": "2024-01-01T00:00:00Z", "exportable": True,
     "findings": []},
    {"id": "c1", "name": "www.lab.internal", "backend": "x509", "location": "/certs/www.pem", "key_class": "tls-cert",
     "algorithm": "EC", "length_bits": "secp256r1", "created": "2026-11-01T00:00:00Z",
     "expires": "2026-12-20T00:00:00Z"},
]  # fmt: skip


def run(tmp_path, **params: Any) -> dict[str, Any]:
    values = {"sources": [], "records": RECORDS, "output_dir": str(tmp_path / "out"),
              "formats": ["csv", "json", "html"], "as_of": "2026-12-03T12:00:00Z", "fail_on": "none"}  # fmt: skip
    values.update(params)
    return inventory_report(values, params.pop("check_mode", False))


def test_the_csv_has_exactly_the_design_columns_in_order(tmp_path) -> None:
    assert list(CSV_COLUMNS) == DESIGN_COLUMNS
    run(tmp_path)
    rows = list(csv.reader(io.StringIO((tmp_path / "out" / "key-inventory.csv").read_text())))
    assert rows[0] == DESIGN_COLUMNS
    assert len(rows) == 4 and all(len(row) == len(DESIGN_COLUMNS) for row in rows)
    legacy = dict(zip(rows[0], next(row for row in rows if row[0] == "k2"), strict=True))
    assert legacy["name"] == 'Legacy, "quoted" <key>'
    assert legacy["exportable"] == "true"
    assert "key_too_short (high)" in legacy["findings"]


def test_the_html_is_self_contained_and_escapes_what_it_shows(tmp_path) -> None:
    run(tmp_path)
    page = (tmp_path / "out" / "key-inventory.html").read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # Nothing is fetched: no external script, style, image or font reference anywhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page
    assert page.count("<svg") == 3 and 'id="chart-cert-timeline"' in page
    assert "Legacy, &#34;quoted&#34; &lt;key&gt;" in page and "<key>" not in page


def test_the_json_report_holds_summary_findings_and_the_due_list(tmp_path) -> None:
    result = run(tmp_path)
    document = json.loads((tmp_path / "out" / "key-inventory.json").read_text())
    assert document["summary"] == result["counts"]
    assert document["content_digest"] == result["content_digest"]
    assert [item["name"] for item in document["due_for_rotation"]] == ["www.lab.internal", "prod-payments-kek-20261120"]
    assert {item["code"] for item in document["findings"]} >= {"key_too_short", "cert_expiring"}


def test_files_are_rewritten_only_when_the_content_changes(tmp_path) -> None:
    assert run(tmp_path)["changed"] is True
    mode = os.stat(tmp_path / "out" / "key-inventory.csv").st_mode & 0o777
    assert mode == 0o600
    # A later run with the same content changes nothing, though it runs at another time.
    assert run(tmp_path, as_of="2026-12-03T13:00:00Z")["changed"] is False
    assert run(tmp_path, records=RECORDS[:2])["changed"] is True


def test_check_mode_reports_the_change_and_writes_nothing(tmp_path) -> None:
    result = run(tmp_path, check_mode=True)
    assert result["changed"] is True and result["paths"]["html"].endswith("key-inventory.html")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("fail_on", "fails"), [("none", False), ("critical", False), ("high", True), ("low", True)])
def test_fail_on_fails_after_writing_the_reports(tmp_path, fail_on: str, fails: bool) -> None:
    if not fails:
        run(tmp_path, fail_on=fail_on)
        return
    with pytest.raises(PolicyViolation) as caught:
        run(tmp_path, fail_on=fail_on)
    assert f"at severity {fail_on} or above" in caught.value.message and "raise fail_on" in caught.value.message
    assert caught.value.details["counts"]["keys"] == 3
    assert (tmp_path / "out" / "key-inventory.html").exists()


def test_a_record_without_id_or_backend_is_refused_clearly(tmp_path) -> None:
    with pytest.raises(InvalidInput, match="1 record\\(s\\) have no id or backend"):
        run(tmp_path, records=[{"name": "stray"}])
