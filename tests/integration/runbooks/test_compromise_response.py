"""Key-compromise response end to end against a lab of its own: plan in check mode, approve (the demo approvers),
apply; then a run killed at a random step and run again reaches the same end state.

End state, read with hvac and sqlite3 directly: every data key decrypts, none is wrapped under a compromised
version, the compromised versions refuse to encrypt and can no longer decrypt, the dependent certificate is revoked,
the report's digest and the audit chain verify, and every step is done in the journal.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.runbooks import oracle
from tests.integration.runbooks.conftest import playbook_command, run_runbook
from tests.support.playbook import ROOT

STEPS = ("snapshot", "contain", "rekey", "retire", "revoke")
SEED = int(os.environ.get("KEYOPS_TEST_SEED", "20261203"))


def incident(lab: dict[str, Any], ref: str) -> dict[str, Any]:
    """Extra vars of one simulated incident on the payments KEK, with a certificate of the service that uses it."""
    cert_path = str(lab["work"] / f"{ref}-payments-api.pem")
    serial = oracle.issue_certificate(lab, "payments-api.lab.internal", cert_path)
    return {
        "vars": {
            "keyops_output_dir": str(lab["work"] / "outputs"),
            "keyops_incident_ref": ref,
            "keyops_compromised_key": lab["seed"]["transit_data_keys"]["key_ref"],
            "keyops_compromise_reason": "integration test",
            "keyops_compromise_certificates": [
                {"name": "payments-api.lab.internal", "issuer": "vault_pki", "cert_path": cert_path}
            ],
            "keyops_demo_approvals": True,
            "keyops_audit_path": lab["env"]["KEYOPS_AUDIT_PATH"],
        },
        "serial": serial,
        "dir": lab["work"] / "outputs" / "compromise" / ref,
    }


def assert_end_state(lab: dict[str, Any], case: dict[str, Any], old_latest: int) -> None:
    name = lab["seed"]["transit_data_keys"]["key_ref"]
    new = old_latest + 1
    key = oracle.transit_key(lab, name)
    assert key["latest_version"] == new
    assert key["min_decryption_version"] == new
    assert key["min_encryption_version"] == new

    ciphertexts = oracle.stored_ciphertexts(lab, name)
    assert len(ciphertexts) == lab["seed"]["transit_data_keys"]["count"]
    assert oracle.versions_of(ciphertexts) == {new: len(ciphertexts)}, "a data key is still under an old version"
    assert oracle.decrypt_all(lab, name, ciphertexts) == len(ciphertexts), "a data key does not decrypt"
    for version in range(1, new):
        assert not oracle.encrypts_under(lab, name, version), f"compromised version {version} still encrypts"

    assert oracle.revoked(lab, case["serial"]), "the dependent certificate is not revoked"

    journal = json.loads((case["dir"] / "journal.json").read_text())
    assert [journal["steps"][step]["status"] for step in STEPS] == ["done"] * len(STEPS)
    report_path = case["dir"] / "report.json"
    assert oracle.report_digest_ok(str(report_path))
    report = json.loads(report_path.read_text())
    assert report["summary"]["audit_chain"]["ok"] is True
    assert any("5000 of 5000 data keys decrypt" in line for line in report["summary"]["verified"])
    assert oracle.audit_chain_ok(lab["env"]["KEYOPS_AUDIT_PATH"])
    snapshot = json.loads((case["dir"] / "snapshot" / "manifest.json").read_text())
    assert snapshot["files"] and all(len(item["sha256"]) == 64 for item in snapshot["files"])


def test_check_mode_plans_everything_and_changes_nothing(runbook_lab: dict[str, Any]) -> None:
    name = runbook_lab["seed"]["transit_data_keys"]["key_ref"]
    before = oracle.transit_key(runbook_lab, name)
    stored = oracle.stored_ciphertexts(runbook_lab, name)
    case = incident(runbook_lab, "INC-CHECK")

    done = run_runbook("compromise_response.yml", runbook_lab, case["vars"], check=True)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    for step in ("rotate", "contain", "rewrap", "verify", "configure", "revoke"):
        assert f". {step} " in done.stdout, f"the plan shown does not list a {step} step"
    plan = json.loads((case["dir"] / "plan.json").read_text())
    assert plan["requires_approval"] and plan["change_ref"] == "INC-CHECK"
    assert oracle.transit_key(runbook_lab, name)["latest_version"] == before["latest_version"]
    assert oracle.stored_ciphertexts(runbook_lab, name) == stored
    assert not oracle.revoked(runbook_lab, case["serial"])
    assert not (case["dir"] / "journal.json").exists()


def test_full_response(runbook_lab: dict[str, Any]) -> None:
    name = runbook_lab["seed"]["transit_data_keys"]["key_ref"]
    old_latest = oracle.transit_key(runbook_lab, name)["latest_version"]
    case = incident(runbook_lab, "INC-FULL")

    started = time.monotonic()
    done = run_runbook("compromise_response.yml", runbook_lab, case["vars"])
    seconds = time.monotonic() - started

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "DEMO ONLY" in done.stdout
    assert_end_state(runbook_lab, case, old_latest)
    print(f"compromise response (plan, demo approval, apply): {seconds:.1f} s")


def kill_when(process: subprocess.Popen[str], journal: Path, step: str, phase: str, deadline: float) -> bool:
    """SIGKILL the whole run once the journal shows ``step`` at ``phase``; False if the run ended first."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            state = json.loads(journal.read_text())["steps"].get(step) or {}
        except (OSError, ValueError, KeyError):
            state = {}
        if (phase == "started" and state.get("status") in ("running", "done")) or (
            phase == "done" and state.get("status") == "done"
        ):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail(f"the run never reached {step} {phase}")


@pytest.mark.parametrize("attempt", [0])
def test_killed_at_a_random_step_then_rerun_reaches_the_same_end_state(
    runbook_lab: dict[str, Any], attempt: int
) -> None:
    chooser = random.Random(SEED + attempt)
    step, phase = chooser.choice(STEPS), chooser.choice(("started", "done"))
    name = runbook_lab["seed"]["transit_data_keys"]["key_ref"]
    old_latest = oracle.transit_key(runbook_lab, name)["latest_version"]
    case = incident(runbook_lab, f"INC-KILL-{attempt}")
    command, env = playbook_command("compromise_response.yml", runbook_lab, case["vars"])

    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    killed = kill_when(process, case["dir"] / "journal.json", step, phase, time.monotonic() + 600)
    assert killed, f"the run finished before {step} {phase}"

    again = run_runbook("compromise_response.yml", runbook_lab, case["vars"])

    assert again.returncode == 0, f"rerun after a kill at {step} {phase} failed:\n" + again.stdout[-4000:]
    assert_end_state(runbook_lab, case, old_latest)
    report = json.loads((case["dir"] / "report.json").read_text())
    assert report["interrupted_runs"] >= 1
