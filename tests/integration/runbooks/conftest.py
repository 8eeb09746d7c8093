"""Fixtures of the runbook tests: a lab of their own (the runbooks rotate, re-key and retire the seeded keys, which
would break other areas' tests on the session lab), and a runner for the runbook playbooks against it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import lab_python, run_lab, start_lab, worker_offset, worker_step
from tests.support.playbook import ANSIBLE_PLAYBOOK, ROOT

RUNBOOK_PORT_BASE = 29600


@pytest.fixture(scope="module")
def runbook_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh, seeded lab for one test module: its env, estate, seed and folders; stopped at the end."""
    lab_dir = tmp_path_factory.mktemp("runbook-lab")
    preferred = int(os.environ.get("KEYOPS_RUNBOOK_LAB_PORT_BASE", RUNBOOK_PORT_BASE))
    # Each pytest-xdist worker from its own base, stepping past the other workers' bases.
    port_base = start_lab(lab_dir, preferred + worker_offset(request.config), worker_step(request.config))
    result = run_lab("seed", lab_dir, port_base)
    if result.returncode != 0:
        run_lab("down", lab_dir, port_base)
        pytest.fail(f"runbook lab seed failed:\n{result.stdout}\n{result.stderr}")
    state = json.loads((lab_dir / "lab.json").read_text())
    work = tmp_path_factory.mktemp("runbook-work")
    env = dict(state["env"])
    # The audit trail of these runs in a log of their own, so its chain starts and ends here.
    env["KEYOPS_AUDIT_PATH"] = str(work / "audit" / "audit.jsonl")
    env["KEYOPS_AUDIT_SPOOL_DIR"] = str(work / "audit" / "spool")
    try:
        yield {
            "dir": lab_dir,
            "env": env,
            "estate": yaml.safe_load((lab_dir / "estate.yml").read_text()),
            "seed": json.loads((lab_dir / "seed.json").read_text()),
            "work": work,
        }
    finally:
        run_lab("down", lab_dir, port_base)


def playbook_command(
    playbook: str, lab: dict[str, Any], extra_vars: dict[str, Any], check: bool = False
) -> tuple[list[str], dict[str, str]]:
    """The ansible-playbook command line and environment for a runbook playbook against ``lab``."""
    vars_file = lab["work"] / f"vars-{len(list(lab['work'].glob('vars-*')))}.json"
    vars_file.write_text(json.dumps({**lab["estate"], **extra_vars}))
    command = [ANSIBLE_PLAYBOOK, os.path.join(ROOT, "playbooks", playbook), "-e", f"@{vars_file}"]
    if check:
        command.append("--check")
    env = {
        **os.environ,
        **lab["env"],
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{Path(lab_python()).parent}:{os.environ.get('PATH', '')}",
    }
    return command, env


def run_runbook(
    playbook: str, lab: dict[str, Any], extra_vars: dict[str, Any], check: bool = False, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    command, env = playbook_command(playbook, lab, extra_vars, check)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
