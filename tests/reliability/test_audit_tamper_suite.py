"""Audit, collected: every kind of tampering with a real audit trail is detected, and named, at the first broken event.

The trail is written by the keyops.runbooks.audit callback during a real ansible-playbook run (eight key tasks,
file sink, file anchor); each tamper kind of tests/unit/plugins/module_utils/test_audit_chain.py is applied to a
copy, and both the verifier the audit_verify module uses and the operator's CLI (scripts/keyops-audit-verify)
must report it. The untouched copy must verify.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.audit import verify_log
from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import canonical_json
from tests.reliability import tally
from tests.reliability.harness import run_to_end, write_playbook
from tests.support.playbook import ROOT
from tests.unit.plugins.module_utils.test_audit_chain import TAMPER

pytestmark = [pytest.mark.area("audit")]

CLI = [sys.executable, str(Path(ROOT) / "scripts" / "keyops-audit-verify")]


@pytest.fixture(scope="module")
def real_trail(lab: dict[str, Any], outputs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("trail")
    log, anchors = outputs / "audit-trail" / "audit.jsonl", outputs / "audit-trail" / "audit.anchors"
    tasks = [
        {
            "name": f"probe {number}",
            "keyops.runbooks.vault_audit_device": {"path": f"probe-{number}", "file_path": "/dev/null"},
            "check_mode": True,
        }
        for number in range(8)
    ]
    env = {
        "KEYOPS_AUDIT_SINKS": "file",
        "KEYOPS_AUDIT_PATH": str(log),
        "KEYOPS_AUDIT_SPOOL_DIR": str(log.parent / "spool"),
        "KEYOPS_AUDIT_ANCHOR": "file",
        "KEYOPS_AUDIT_ANCHOR_PATH": str(anchors),
    }
    run = run_to_end(write_playbook(folder, "trail", tasks), outputs, env, verbosity=0)
    assert run.rc == 0, run.stdout[-2000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(events) == 8 and verify_log(str(log), str(anchors))["ok"]
    return {"events": events, "anchors": anchors}


def write_tampered(folder: Path, events: list[Any]) -> Path:
    path = folder / "tampered.jsonl"
    path.write_text(
        "".join((item if isinstance(item, str) else canonical_json(item).decode()) + "\n" for item in events)
    )
    return path


def test_the_untouched_trail_verifies(real_trail: dict[str, Any], tmp_path: Path) -> None:
    path = write_tampered(tmp_path, copy.deepcopy(real_trail["events"]))

    done = subprocess.run(
        [*CLI, str(path), "--anchors", str(real_trail["anchors"])], capture_output=True, text=True, check=False
    )

    assert done.returncode == 0 and done.stdout.startswith("OK"), done.stdout + done.stderr


@pytest.mark.parametrize(("name", "tamper", "anchored", "line", "code"), TAMPER, ids=[row[0] for row in TAMPER])
def test_every_tamper_kind_is_detected_on_a_real_trail(
    real_trail: dict[str, Any], name: str, tamper: Any, anchored: bool, line: int | None, code: str, tmp_path: Path
) -> None:
    tally.add("audit", "tamper kinds")
    path = write_tampered(tmp_path, tamper(copy.deepcopy(real_trail["events"])))
    anchors = str(real_trail["anchors"]) if anchored else None

    report = verify_log(str(path), anchors)
    done = subprocess.run(
        [*CLI, str(path), *(["--anchors", anchors] if anchors else [])], capture_output=True, text=True, check=False
    )

    assert report["ok"] is False and report["first_broken"]["code"] == code, report.get("first_broken")
    assert report["first_broken"]["line"] == line
    assert done.returncode == 1 and done.stdout.startswith("BROKEN") and code in done.stdout, done.stdout
    tally.add("audit", "detected")
