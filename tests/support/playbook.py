"""Run tasks through the real ansible-playbook, the way operators and AWX run them, and read the results."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


@dataclasses.dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    results: list[dict[str, Any]]

    @property
    def last(self) -> dict[str, Any]:
        return self.results[-1]

    def by_name(self, task_name: str) -> dict[str, Any]:
        for result in self.results:
            if result["_task"] == task_name:
                return result
        raise KeyError(task_name)


def run_playbook(
    playbook: str,
    *,
    check: bool = False,
    diff: bool = False,
    extra_vars: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    verbosity: int = 0,
    timeout: int = 900,
    callback: str = "ansible.posix.json",
) -> PlaybookRun:
    """Run a playbook file with the JSON callback; ``results`` lists every task's localhost result in order."""
    command = [ANSIBLE_PLAYBOOK, playbook]
    if check:
        command.append("--check")
    if diff:
        command.append("--diff")
    if verbosity:
        command.append("-" + "v" * verbosity)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(extra_vars or {}, handle)
        vars_file = handle.name
    command += ["-e", f"@{vars_file}"]
    run_env = dict(os.environ)
    run_env.update(
        {
            "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
            "ANSIBLE_STDOUT_CALLBACK": callback,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        }
    )
    run_env.update(env or {})
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        os.unlink(vars_file)
    results: list[dict[str, Any]] = []
    if callback == "ansible.posix.json":
        start = done.stdout.find("{")
        # raw_decode: callbacks (the audit one at -vv) may print lines after the JSON document.
        report = json.JSONDecoder().raw_decode(done.stdout[start:])[0] if start >= 0 else {"plays": []}
        for play in report.get("plays", []):
            for task in play.get("tasks", []):
                for result in task.get("hosts", {}).values():
                    results.append(dict(result, _task=task["task"]["name"]))
    return PlaybookRun(done.returncode, done.stdout, done.stderr, results)


def run_tasks(
    tasks: list[dict[str, Any]],
    *,
    module_defaults: dict[str, Any] | None = None,
    play_vars: dict[str, Any] | None = None,
    **options: Any,
) -> PlaybookRun:
    """Run a list of tasks as one play on localhost."""
    play: dict[str, Any] = {"name": "test play", "hosts": "localhost", "gather_facts": False, "tasks": tasks}
    if module_defaults:
        play["module_defaults"] = module_defaults
    if play_vars:
        play["vars"] = play_vars
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=os.path.join(ROOT, ".build"), delete=False) as handle:
        yaml.safe_dump([play], handle, sort_keys=False)
        playbook = handle.name
    try:
        return run_playbook(playbook, **options)
    finally:
        os.unlink(playbook)


def run_module(module: str, args: dict[str, Any], **options: Any) -> dict[str, Any]:
    """Run one module once on localhost and return its result (``failed`` and ``msg`` on failure)."""
    run = run_tasks([{"name": "module under test", module: args}], **options)
    if not run.results:
        raise AssertionError(f"no result from {module}: rc={run.rc}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run.last


def four_way(module: str, args: dict[str, Any], **options: Any) -> list[dict[str, Any]]:
    """Check, real, idempotent check, idempotent real: the first two change, the last two do not."""
    results = []
    for check, expect_changed in ((True, True), (False, True), (True, False), (False, False)):
        result = run_module(module, args, check=check, diff=True, **options)
        assert not result.get("failed"), result.get("msg")
        assert result.get("changed") is expect_changed, (
            f"{'check' if check else 'real'} run: changed={result.get('changed')}, expected {expect_changed}: "
            f"{json.dumps(result)[:2000]}"
        )
        results.append(result)
    return results


def assert_no_canary(canaries: list[str], *texts: str) -> None:
    for canary in canaries:
        for text in texts:
            assert canary not in text, "a secret canary leaked into the output"


def lab_estate(lab_dir: str, **overrides: Any) -> dict[str, Any]:
    """The estate variables the lab wrote (``estate.yml``), with overrides: what ``-e @estate.yml`` passes."""
    with open(os.path.join(lab_dir, "estate.yml")) as handle:
        estate = yaml.safe_load(handle)
    estate.update(overrides)
    return estate
