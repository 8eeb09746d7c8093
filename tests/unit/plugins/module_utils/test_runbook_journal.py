"""The runbook journal: step boundaries, resumption, approvals kept, records, and a report that detects edits."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, InvalidInput
from ansible_collections.keyops.runbooks.plugins.module_utils.runbook_journal import (
    apply_state,
    build_report,
    completed,
    new_journal,
    run_journal,
    verify_report,
)

T0, T1, T2 = "2026-12-03T10:00:00Z", "2026-12-03T10:00:05Z", "2026-12-03T10:01:00Z"


def journal() -> dict[str, Any]:
    return new_journal({"kind": "compromise_response", "run_id": "INC-1"}, T0)


@pytest.mark.parametrize(
    ("states", "status", "attempts", "done"),
    [
        ([("step_started", T0)], "running", 1, []),
        ([("step_started", T0), ("step_done", T1)], "done", 1, ["snapshot"]),
        # a cut run starts the step again: one more attempt, the first start kept
        ([("step_started", T0), ("step_started", T1), ("step_done", T2)], "done", 2, ["snapshot"]),
        # a step completes once: a rerun reaching it again changes nothing
        ([("step_started", T0), ("step_done", T1), ("step_started", T2), ("step_done", T2)], "done", 1, ["snapshot"]),
        ([("step_started", T0), ("step_failed", T1)], "failed", 1, []),
        ([("step_skipped", T0)], "skipped", 0, ["snapshot"]),
    ],
)
def test_step_boundaries(states: list[tuple[str, str]], status: str, attempts: int, done: list[str]) -> None:
    current = journal()
    for state, moment in states:
        current, _changed = apply_state(current, {"state": state, "step": "snapshot", "data": {"files": 2}}, moment)
    step = current["steps"]["snapshot"]
    assert (step["status"], step["attempts"], completed(current)) == (status, attempts, done)
    assert step["started"] == T0


def test_a_done_step_keeps_its_first_times_and_counts() -> None:
    current = journal()
    current, _changed = apply_state(current, {"state": "step_done", "step": "rekey", "data": {"rekeyed": 5000}}, T1)
    current, changed = apply_state(current, {"state": "step_done", "step": "rekey", "data": {"rekeyed": 0}}, T2)
    assert not changed
    assert current["steps"]["rekey"]["data"] == {"rekeyed": 5000}
    assert current["steps"]["rekey"]["ended"] == T1


def test_approvals_keep_only_what_a_resumed_run_needs() -> None:
    approval = {
        "approver": "alice",
        "team": "security",
        "digest": "ab",
        "verified": True,
        "source": "ssh",
        "key_fingerprint": "SHA256:x",
        "principal": "alice@x",
        "signed_at": T0,
        "extra": "dropped",
    }
    current, _changed = apply_state(journal(), {"state": "approved", "digest": "ab", "approvals": [approval]}, T1)
    kept = current["plan"]["approvals"][0]
    assert "extra" not in kept and kept["verified"] is True and kept["digest"] == "ab"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"state": "step_done", "step": ""}, "no step was named"),
        ({"state": "recorded", "key": ""}, "no key was named"),
    ],
)
def test_refusals(params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        apply_state(journal(), params, T0)


def test_report_timeline_and_digest_detects_an_edit(tmp_path: Any) -> None:
    path = str(tmp_path / "INC-1" / "journal.json")
    base = {"path": path, "kind": "compromise_response", "run_id": "INC-1", "operator": "alice"}
    for state, step in (("opened", None), ("step_started", "snapshot"), ("step_done", "snapshot")):
        run_journal(dict(base, state=state, step=step, data={"files": 1}), check_mode=False)
    written = run_journal(dict(base, state="reported", data={"needs_human": ["trim v1"]}), check_mode=False)
    assert written["changed"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert verify_report(written["report_path"])["digest"] == written["report"]["digest"]
    assert [item["step"] for item in written["report"]["timeline"]] == ["snapshot"]
    with open(written["markdown_path"], encoding="utf-8") as stream:
        assert "trim v1" in stream.read()

    again = run_journal(dict(base, state="reported", data={"needs_human": ["trim v1"]}), check_mode=False)
    assert not again["changed"], "an unchanged report is not rewritten"

    with open(written["report_path"], encoding="utf-8") as stream:
        report = json.load(stream)
    report["summary"]["needs_human"] = []
    with open(written["report_path"], "w", encoding="utf-8") as stream:
        json.dump(report, stream)
    with pytest.raises(IntegrityError, match="was edited"):
        verify_report(written["report_path"])


def test_check_mode_writes_nothing(tmp_path: Any) -> None:
    path = str(tmp_path / "journal.json")
    result = run_journal({"path": path, "state": "opened", "run_id": "R"}, check_mode=True)
    assert result["changed"] and not os.path.exists(path)


def test_unfinished_report_has_no_finish_time() -> None:
    current, _changed = apply_state(journal(), {"state": "step_started", "step": "contain"}, T1)
    report = build_report(current, {})
    assert report["finished"] is None and report["duration_s"] is None
