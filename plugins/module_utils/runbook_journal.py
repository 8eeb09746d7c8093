# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the journal of one runbook run (a rotation change, an incident), its per-key records and its report.

The journal is a JSON file, rewritten atomically (temp file + rename, 0600) at every step boundary, so a run cut at
any point leaves the last completed step on disk. A rerun opens the same journal (same ``run_id``), skips the
steps marked ``done`` and keeps their times, so the report's timeline shows the whole incident, interruptions
included. Nothing secret goes in: the runbooks write versions, counts, ids and digests only.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import canonical_json, digest
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, InvalidInput
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, parse_time, utc_now

JOURNAL_FORMAT = "keyops-journal/1"
REPORT_FORMAT = "keyops-runbook-report/1"
STEP_STATES = ("running", "done", "failed", "skipped")
# What a resumed run needs to pass the approvals on: who, with which key, for which plan digest, verified when, and
# what a module needs to check them again (the plan, the signature or the AWX node; all public).
APPROVAL_FIELDS = (
    "approver",
    "principal",
    "team",
    "key_fingerprint",
    "digest",
    "source",
    "verified",
    "signed_at",
    "plan_path",
    "plan_text",
    "signature",
    "awx_workflow_job_id",
    "node",
)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.@-]+")


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".keyops-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def safe_file_name(name: str) -> str:
    cleaned = _SAFE_NAME.sub("_", name).strip("._") or "key"
    return cleaned[:120]


def load_journal(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            journal = json.load(stream)
    except (OSError, ValueError) as error:
        raise InvalidInput(
            "Read runbook journal",
            None,
            f"{path} is not a readable journal ({type(error).__name__})",
            "Move the file aside and run again (the steps themselves are idempotent), or fix its JSON",
        ) from error
    if not isinstance(journal, dict) or journal.get("format") != JOURNAL_FORMAT:
        raise InvalidInput(
            "Read runbook journal", None, f"{path} is not a {JOURNAL_FORMAT} file", "Point path at a runbook journal"
        )
    return journal


def new_journal(params: dict[str, Any], now: str) -> dict[str, Any]:
    return {
        "format": JOURNAL_FORMAT,
        "kind": params.get("kind") or "runbook",
        "run_id": params.get("run_id") or "",
        "change_ref": params.get("change_ref"),
        "started": now,
        "runs": [],
        "order": [],
        "steps": {},
        "plan": None,
        "records": {},
    }


def completed(journal: dict[str, Any]) -> list[str]:
    return [name for name in journal["order"] if journal["steps"][name]["status"] in ("done", "skipped")]


def _step(journal: dict[str, Any], name: str) -> dict[str, Any]:
    if not name:
        raise InvalidInput("Update runbook journal", None, "no step was named", "Set step")
    if name not in journal["steps"]:
        journal["order"].append(name)
        journal["steps"][name] = {"status": "pending", "started": None, "ended": None, "attempts": 0, "data": {}}
    return journal["steps"][name]


def _duration(started: str | None, ended: str | None) -> float | None:
    begin, end = parse_time(started), parse_time(ended)
    return round((end - begin).total_seconds(), 1) if begin and end else None


def apply_state(journal: dict[str, Any], params: dict[str, Any], now: str) -> tuple[dict[str, Any], bool]:
    """Apply one change to the journal; return it and whether anything changed."""
    state = params["state"]
    if state == "opened":
        journal["runs"].append({"started": now, "operator": params.get("operator") or ""})
        return journal, True
    if state == "read":
        return journal, False
    if state in ("step_started", "step_done", "step_failed", "step_skipped"):
        step = _step(journal, params.get("step") or "")
        if step["status"] == "done":
            # A step completes once; a rerun that reaches it again keeps the first completion's time and counts.
            return journal, False
        if state == "step_started":
            step["status"] = "running"
            step["started"] = step["started"] or now
            step["attempts"] += 1
            step["ended"] = None
        else:
            step["status"] = {"step_done": "done", "step_failed": "failed", "step_skipped": "skipped"}[state]
            step["started"] = step["started"] or now
            step["ended"] = now
            step["data"] = dict(step["data"], **(params.get("data") or {}))
        step["duration_s"] = _duration(step["started"], step["ended"])
        return journal, True
    if state == "approved":
        journal["plan"] = {
            "digest": params.get("digest"),
            "plan_path": params.get("plan_path"),
            "approved_at": (journal.get("plan") or {}).get("approved_at") or now,
            "approvals": [
                {field: item.get(field) for field in APPROVAL_FIELDS} for item in params.get("approvals") or []
            ],
        }
        return journal, True
    if state == "recorded":
        key = params.get("key") or ""
        if not key:
            raise InvalidInput("Record key", None, "no key was named", "Set key")
        journal["records"][key] = dict(params.get("data") or {}, key=key, recorded=now)
        return journal, True
    raise InvalidInput("Update runbook journal", None, f"unknown state {state}", "Use one of the documented states")


def timeline(journal: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "step": name,
            "status": journal["steps"][name]["status"],
            "started": journal["steps"][name]["started"],
            "ended": journal["steps"][name]["ended"],
            "duration_s": journal["steps"][name].get("duration_s"),
            "attempts": journal["steps"][name]["attempts"],
            "data": journal["steps"][name]["data"],
        }
        for name in journal["order"]
    ]


def build_report(journal: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The run's report: its timeline, plan and approvals, per-key records and the caller's summary, digested."""
    steps = timeline(journal)
    ended = [item["ended"] for item in steps if item["ended"]]
    report = {
        "format": REPORT_FORMAT,
        "title": params.get("title") or journal["kind"],
        "kind": journal["kind"],
        "run_id": journal["run_id"],
        "change_ref": journal.get("change_ref"),
        "started": journal["started"],
        "finished": max(ended) if ended and all(item["ended"] for item in steps) else None,
        "interrupted_runs": max(len(journal["runs"]) - 1, 0),
        "timeline": steps,
        "plan": journal.get("plan"),
        "records": [journal["records"][key] for key in sorted(journal["records"])],
        "summary": params.get("data") or {},
    }
    report["duration_s"] = _duration(report["started"], report["finished"])
    report["digest"] = digest(report)
    return report


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def report_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# {report['title']}",
        "",
        f"- run: `{report['run_id']}`, change/incident: `{report.get('change_ref') or '-'}`",
        f"- started {report['started']}, finished {report.get('finished') or '(not finished)'}"
        + (f", {report['duration_s']} s" if report.get("duration_s") is not None else ""),
        f"- runs cut and resumed: {report['interrupted_runs']}",
        f"- report digest (SHA-256 of report.json without this field): `{report['digest']}`",
        "",
        "## Timeline",
        "",
        "| step | status | started | ended | seconds | attempts | details |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for item in report["timeline"]:
        lines.append(
            f"| {item['step']} | {item['status']} | {item['started'] or ''} | {item['ended'] or ''} | "
            f"{_cell(item.get('duration_s'))} | {item['attempts']} | {_cell(item['data'])} |"
        )
    plan = report.get("plan") or {}
    if plan:
        lines += ["", "## Plan and approvals", "", f"Plan digest `{plan.get('digest')}` ({plan.get('plan_path')})", ""]
        lines += [
            f"- approved by {item['approver']} ({item.get('team')}, {item.get('source')})"
            for item in plan.get("approvals") or []
        ]
    summary = report.get("summary") or {}
    for section, value in summary.items():
        lines += ["", f"## {section.replace('_', ' ').capitalize()}", ""]
        if isinstance(value, list):
            lines += [f"- {_cell(item)}" for item in value] or ["- none"]
        elif isinstance(value, dict):
            lines += [f"- {key}: {_cell(item)}" for key, item in value.items()] or ["- none"]
        else:
            lines.append(_cell(value))
    if report["records"]:
        lines += ["", "## Records per key", ""]
        lines += [
            f"- `{record['key']}`: {_cell({k: v for k, v in record.items() if k != 'key'})}"
            for record in report["records"]
        ]
    return "\n".join(lines) + "\n"


def verify_report(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as stream:
        report = json.load(stream)
    claimed = report.pop("digest", None)
    actual = digest(report)
    if claimed != actual:
        raise IntegrityError(
            "Verify runbook report",
            None,
            f"{path} does not match its digest (recorded {claimed}, computed {actual}): it was edited",
            "Take the report from the evidence archive, or rebuild it from the journal",
        )
    return {"digest": actual, "path": path}


def write_if_changed(path: str, data: bytes) -> bool:
    if os.path.exists(path):
        with open(path, "rb") as stream:
            if stream.read() == data:
                return False
    write_atomic(path, data)
    return True


def run_journal(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    path = params["path"]
    now = iso_utc(utc_now())
    state = params["state"]
    if state == "verified":
        report_path = params.get("report_path") or os.path.join(os.path.dirname(path), "report.json")
        return dict(verify_report(report_path), changed=False)

    journal = load_journal(path)
    created = journal is None
    if journal is None:
        if state not in ("opened", "read"):
            raise InvalidInput(
                "Update runbook journal",
                params.get("run_id"),
                f"{path} does not exist yet",
                "Open it first with state=opened",
            )
        journal = new_journal(params, now)
    if created and state == "read":
        return {"changed": False, "exists": False, "journal": journal, "completed": [], "path": path}

    result: dict[str, Any] = {"path": path, "exists": not created}
    if state == "reported":
        report = build_report(journal, params)
        json_path = params.get("report_path") or os.path.join(os.path.dirname(path), "report.json")
        md_path = os.path.splitext(json_path)[0] + ".md"
        json_bytes = json.dumps(report, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        changed = False
        if not check_mode:
            changed = write_if_changed(json_path, json_bytes)
            changed = write_if_changed(md_path, report_markdown(report).encode("utf-8")) or changed
        result.update(changed=changed, report=report, report_path=json_path, markdown_path=md_path)
        result.update(journal=journal, completed=completed(journal))
        return result

    journal, changed = apply_state(journal, params, now)
    if changed and not check_mode:
        write_atomic(path, json.dumps(journal, indent=2, sort_keys=True).encode("utf-8") + b"\n")
        if state == "recorded" and params.get("records_dir"):
            record_path = os.path.join(params["records_dir"], safe_file_name(params["key"]) + ".json")
            write_atomic(record_path, canonical_json(journal["records"][params["key"]]) + b"\n")
            result["record_path"] = record_path
    result.update(changed=changed, journal=journal, completed=completed(journal))
    if params.get("step"):
        result["step"] = journal["steps"].get(params["step"])
    return result
