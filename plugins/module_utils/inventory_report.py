# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the key_inventory_report and key_register_validate modules do, below their ``main()``."""

from __future__ import annotations

import os
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput, PolicyViolation
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import merged_policy, severity_rank
from ansible_collections.keyops.runbooks.plugins.module_utils.reconcile import build_inventory, records_from_sources
from ansible_collections.keyops.runbooks.plugins.module_utils.records import parse_time
from ansible_collections.keyops.runbooks.plugins.module_utils.register import (
    load_register,
    parse_register,
    read_register_text,
    register_error,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.report import (
    FILE_NAMES,
    needs_writing,
    render_files,
    report_document,
    write_files,
)

BACKEND_CHOICES = ["vault_transit", "aws_kms", "pkcs11", "x509", "file"]
SEVERITY_CHOICES = ["none", "info", "low", "medium", "high", "critical"]
# The options that shape the reports, shared by key_inventory_report and key_inventory.
REPORT_ARGSPEC: dict[str, Any] = {
    "records": {"type": "list", "elements": "dict", "default": []},
    "backends": {"type": "list", "elements": "str", "choices": BACKEND_CHOICES, "default": []},
    "register_path": {"type": "path"},
    "policy": {"type": "dict", "default": {}},
    "output_dir": {"type": "path"},
    "formats": {
        "type": "list",
        "elements": "str",
        "choices": ["csv", "json", "html"],
        "default": ["csv", "json", "html"],
    },
    "due_window_days": {"type": "int"},
    "fail_on": {"type": "str", "choices": SEVERITY_CHOICES, "default": "none"},
    "title": {"type": "str", "default": "Key inventory"},
    "as_of": {"type": "str"},
    "return_records": {"type": "bool", "default": False},
}


def check_as_of(params: dict[str, Any]) -> None:
    as_of = params.get("as_of")
    if as_of and parse_time_safe(as_of) is None:
        raise InvalidInput(
            "Build key inventory",
            None,
            f"as_of '{as_of}' is not an ISO 8601 time",
            "Set as_of like 2026-12-03T18:00:00Z, or leave it out for now",
        )


def inventory_report(
    params: dict[str, Any],
    check_mode: bool,
    entries: list[Any] | None = None,
    unread: dict[str, str] | None = None,
    source_errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build the inventory, write the reports (unless checking), and fail on ``fail_on`` after writing them.

    ``entries`` is the register when the caller has read it already; ``unread`` and ``source_errors`` come from
    key_inventory: backends with a source that failed, and what failed (listed in the result and the reports).
    """
    rules = merged_policy(params.get("policy"))
    as_of = params.get("as_of")
    check_as_of(params)
    records, scanned = records_from_sources(params.get("sources") or [])
    records += [record for record in params.get("records") or [] if isinstance(record, dict)]
    invalid = [record for record in records if not record.get("backend") or record.get("id") is None]
    if invalid:
        raise InvalidInput(
            "Build key inventory",
            str(invalid[0].get("name") or "?"),
            f"{len(invalid)} record(s) have no id or backend",
            "Pass the results of the keyops.runbooks *_info modules, or KeyRecords with id and backend",
        )
    if entries is None and params.get("register_path"):
        entries = load_register(params["register_path"])
    window = params.get("due_window_days")
    if window is None:
        window = rules["rotation_due_window_days"]

    backends = scanned | set(params.get("backends") or [])
    inventory = build_inventory(records, entries, rules, as_of, backends, window, unread)
    document = report_document(inventory, rules, params.get("title") or "Key inventory", window, source_errors)
    result: dict[str, Any] = {
        "changed": False,
        "counts": document["summary"],
        "findings": document["findings"],
        "missing_from_backend": inventory.missing,
        "unverified_register_entries": inventory.unverified,
        "due_for_rotation": inventory.due,
        "due_window_days": window,
        "content_digest": document["content_digest"],
        "as_of": inventory.now,
    }
    if source_errors is not None:
        result["source_errors"] = source_errors
    if params.get("return_records"):
        result["records"] = inventory.records

    output_dir = params.get("output_dir")
    if output_dir:
        formats = list(dict.fromkeys(params.get("formats") or []))
        result["paths"] = {name: os.path.join(output_dir, FILE_NAMES[name]) for name in formats}
        if needs_writing(output_dir, document, formats):
            result["changed"] = True
            if not check_mode:
                write_files(output_dir, render_files(document, formats))

    threshold = params.get("fail_on") or "none"
    if threshold != "none":
        over = [item for item in document["findings"] if severity_rank(item["severity"]) >= severity_rank(threshold)]
        if over:
            where = f"; reports in {output_dir}" if output_dir else ""
            raise PolicyViolation(
                "Key inventory",
                None,
                f"{len(over)} finding(s) at severity {threshold} or above "
                f"(first: {over[0]['code']} on '{over[0]['key']}'){where}",
                "Fix the keys the findings name, or raise fail_on to let the run pass",
                **{key: value for key, value in result.items() if key != "records"},
            )
    return result


def parse_time_safe(value: Any) -> Any:
    try:
        return parse_time(value)
    except (TypeError, ValueError):
        return None


def run_inventory_report(module: Any) -> dict[str, Any]:
    return inventory_report(module.params, module.check_mode)


def register_validation(params: dict[str, Any]) -> dict[str, Any]:
    """Validate a register; with ``fail_on_error`` a schema error fails with every line and field listed."""
    path = params["path"]
    entries, found = parse_register(read_register_text(path), path)
    if found and params.get("fail_on_error", True):
        raise register_error(path, found)
    return {
        "changed": False,
        "valid": not found,
        "errors": [item.to_dict() for item in found],
        "count": len(entries),
        "keys": [entry.to_dict() for entry in entries],
    }
