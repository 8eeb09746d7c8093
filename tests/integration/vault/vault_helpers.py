"""Run several module calls as the tasks of one real ansible-playbook run (startup costs seconds on a busy host)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.playbook import run_tasks

FOUR_WAY = (
    ("check", True, True),
    ("real", False, True),
    ("idempotent check", True, False),
    ("idempotent real", False, False),
)


def task(name: str, module: str, args: dict[str, Any], check: bool = False, may_fail: bool = False) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, module: args, "check_mode": check, "diff": True}
    if may_fail:
        step["ignore_errors"] = True  # the test asserts on the failure itself
    return step


def four_way_tasks(label: str, module: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    return [task(f"{label}: {way}", module, args, check) for way, check, _unused in FOUR_WAY]


def play(tasks: list[dict[str, Any]], **options: Any) -> dict[str, dict[str, Any]]:
    run = run_tasks(tasks, **options)
    results = {result["_task"]: result for result in run.results}
    missing = [step["name"] for step in tasks if step["name"] not in results]
    assert not missing, f"tasks without a result {missing}: rc={run.rc}\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    return results


def assert_four_way(results: dict[str, dict[str, Any]], label: str) -> list[dict[str, Any]]:
    """Check and real runs change; the idempotent check and real runs do not; none fails."""
    found = []
    for way, _unused, expect_changed in FOUR_WAY:
        result = results[f"{label}: {way}"]
        assert not result.get("failed"), f"{label} {way}: {result.get('msg')}"
        assert result.get("changed") is expect_changed, f"{label} {way}: {json.dumps(result)[:1500]}"
        found.append(result)
    return found
