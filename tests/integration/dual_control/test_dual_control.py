"""Plan, approve, apply through the real ansible-playbook and through ansible-runner, against the lab's KMS.

The oracle is boto3 on the lab's moto server: the master key stays enabled until two valid approvals exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import ansible_runner
import boto3
import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils import approvals
from tests.support.playbook import ROOT, assert_no_canary, run_module, run_playbook, run_tasks

HERE = os.path.dirname(os.path.abspath(__file__))
FLOW = os.path.join(HERE, "disable_master_key.yml")
REQUESTER = "operator@keyops.lab"


@pytest.fixture(scope="module")
def approvers_dir(tmp_path_factory) -> dict[str, Any]:
    folder = str(tmp_path_factory.mktemp("approvers"))
    made = approvals.create_demo_approvers(folder)
    private = []
    for path in made["keys"].values():
        with open(path) as stream:
            private += [line for line in stream.read().splitlines() if line and not line.startswith("-----")]
    return dict(made, folder=folder, canaries=private)


@pytest.fixture(scope="module")
def kms(lab: dict[str, Any]) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=lab["AWS_ENDPOINT_URL"],
        region_name=lab["AWS_DEFAULT_REGION"],
        aws_access_key_id=lab["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=lab["AWS_SECRET_ACCESS_KEY"],
    )


def master_key(kms: Any) -> str:
    """A master key made with boto3, not with the code under test."""
    key_id = kms.create_key(
        Description="dual control test master key", Tags=[{"TagKey": "key-class", "TagValue": "master-kek"}]
    )["KeyMetadata"]["KeyId"]
    alias = f"alias/test-d{uuid.uuid4().hex[:10]}-kek-20261203"
    kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    return alias


def enabled(kms: Any, alias: str) -> bool:
    return kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyState"] == "Enabled"


def flow(phase: str, plan_path: str, alias: str, approvers_dir: dict[str, Any], **extra: Any):
    extra_vars = {
        "target_key": alias,
        "change_ref": "CHG-7001",
        "dual_control_phase": phase,
        "dual_control_plan_path": plan_path,
        "dual_control_requester": REQUESTER,
        "dual_control_allowed_signers": approvers_dir["allowed_signers"],
        "dual_control_approvers_file": approvers_dir["approvers_file"],
        **extra,
    }
    return run_playbook(FLOW, check=(phase == "plan"), extra_vars=extra_vars)


def sign(approvers_dir: dict[str, Any], plan_path: str, who: str) -> str:
    """Sign as an approver does, with the keyops-approve CLI (ssh-keygen -Y sign -n keyops-plan underneath)."""
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "keyops-approve"),
            "sign",
            plan_path,
            "--key",
            os.path.join(approvers_dir["folder"], who),
            "--principal",
            f"{who}@keyops.lab",
            "--yes",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("signed: ", 1)[1].strip()


def task(run, name: str) -> dict[str, Any]:
    """A task's result by name; role tasks are named 'role : task' by the JSON callback."""
    (found,) = [result for result in run.results if result["_task"].split(" : ")[-1] == name]
    return found


def failure(run) -> dict[str, Any]:
    assert run.rc != 0
    (failed,) = [result for result in run.results if result.get("failed")]
    return failed


def test_plan_approve_apply_against_kms(lab, kms, approvers_dir, tmp_path):
    alias = master_key(kms)
    plan_path = str(tmp_path / "CHG-7001.json")

    # Plan: a --check run writes the plan; the key is untouched.
    planned = flow("plan", plan_path, alias, approvers_dir)
    assert planned.rc == 0, planned.stdout[-3000:]
    plan, _unused = approvals.load_plan(plan_path)
    assert [(a["action"], a["key_class"], a["requires_approval"]) for a in plan["actions"]] == [
        ("disable", "master-kek", True)
    ]
    assert plan["requester"] == REQUESTER and plan["change_ref"] == "CHG-7001"
    assert oct(os.stat(plan_path).st_mode & 0o777) == "0o600"
    assert enabled(kms, alias)

    # Planning again leaves the file, and so any signature over it, as it was.
    with open(plan_path, "rb") as stream:
        first_bytes = stream.read()
    assert flow("plan", plan_path, alias, approvers_dir).rc == 0
    with open(plan_path, "rb") as stream:
        assert stream.read() == first_bytes

    # No approvals: refused, with the reason and an approve/refused audit event; the key stays enabled.
    refused = failure(flow("apply", plan_path, alias, approvers_dir))
    assert "has 0 valid approval(s) of the 2 needed" in refused["msg"]
    assert refused["audit_events"][0]["outcome"] == "refused"
    assert enabled(kms, alias)

    # One valid approval and one from an approver not allowed for master keys: still refused.
    sign(approvers_dir, plan_path, "alice")
    sign(approvers_dir, plan_path, "carol")
    refused = failure(flow("apply", plan_path, alias, approvers_dir))
    assert "not allowed to approve changes to key class master-kek" in refused["msg"]
    assert {e["outcome"] for e in refused["audit_events"]} == {"refused"}
    assert enabled(kms, alias)

    # A second valid approver: the apply run recomputes the plan, verifies, and disables the key.
    sign(approvers_dir, plan_path, "bob")
    applied = flow("apply", plan_path, alias, approvers_dir)
    assert applied.rc == 0, applied.stdout[-3000:]
    verified = task(applied, "Verify the approvals against the rules")
    assert sorted(a["approver"] for a in verified["approvals"]) == ["alice@keyops.lab", "bob@keyops.lab"]
    assert [e["outcome"] for e in verified["audit_events"]].count("success") == 2
    change = task(applied, "Disable the master key under the verified approvals")
    assert change["changed"] is True
    assert {a["approver"] for a in change["audit_events"][0]["approvals"]} == {"alice@keyops.lab", "bob@keyops.lab"}
    assert not enabled(kms, alias)

    # Applying again: the estate moved (the key is disabled), so the recomputed plan is no longer the approved one.
    again = failure(flow("apply", plan_path, alias, approvers_dir))
    assert "differs from the approved plan" in again["msg"] and "no longer planned: disable" in again["msg"]

    # No approver's private key appears anywhere the runs wrote.
    outputs = [planned.stdout, planned.stderr, applied.stdout, applied.stderr, json.dumps(applied.results)]
    for name in os.listdir(tmp_path):
        with open(tmp_path / name, errors="replace") as stream:
            outputs.append(stream.read())
    assert_no_canary(approvers_dir["canaries"], *outputs)


def test_plan_changed_after_approval_is_refused(lab, kms, approvers_dir, tmp_path):
    first, second = master_key(kms), master_key(kms)
    plan_path = str(tmp_path / "CHG-7002.json")
    assert flow("plan", plan_path, first, approvers_dir).rc == 0
    sign(approvers_dir, plan_path, "alice")
    sign(approvers_dir, plan_path, "bob")

    # The apply run targets another key than the one approved: its recomputed plan differs.
    refused = failure(flow("apply", plan_path, second, approvers_dir))
    assert "differs from the approved plan" in refused["msg"]
    assert f"new: disable on {second}" in refused["msg"] or "new: disable" in refused["msg"]
    assert enabled(kms, first) and enabled(kms, second)


def test_module_gate_refuses_without_the_role(lab, kms):
    alias = master_key(kms)
    run = run_tasks(
        [
            {
                "name": "disable without approvals",
                "keyops.runbooks.aws_kms_key": {
                    "key": alias,
                    "key_class": "master-kek",
                    "enabled": False,
                    "change_ref": "CHG-7003",
                },
            }
        ]
    )
    assert "dual control" in run.last["msg"] and run.last.get("failed")
    assert enabled(kms, alias)


def _trusted(approvers_dir: dict[str, Any]) -> dict[str, str]:
    """The policy values a module re-verifies approvals against (what dual_control_module_policy carries)."""
    return {"allowed_signers": approvers_dir["allowed_signers"], "approvers_file": approvers_dir["approvers_file"]}


def test_forged_approvals_do_not_schedule_a_master_key_for_deletion(lab, kms, approvers_dir):
    """The reviewer's reproduction: two dicts saying verified: true used to schedule a KEK for deletion."""
    alias = master_key(kms)
    forged = [
        {"approver": "mallory", "verified": True, "digest": "x"},
        {"approver": "mallory2", "verified": True, "digest": "x"},
    ]
    args = {"key": alias, "state": "absent", "approvals": forged, "change_ref": "CHG-7005"}

    for policy in ({}, _trusted(approvers_dir)):
        result = run_module("keyops.runbooks.aws_kms_key", dict(args, policy=policy))
        assert result.get("failed"), result
        assert "forged or hand-written approval" in result["msg"]
        assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyState"] == "Enabled"


def test_approvals_of_one_plan_do_not_cover_another_action(lab, kms, approvers_dir, tmp_path):
    """Real, signed approvals of a plan to disable the key are refused for scheduling its deletion."""
    alias = master_key(kms)
    checked = run_module(
        "keyops.runbooks.aws_kms_key", {"key": alias, "key_class": "master-kek", "enabled": False}, check=True
    )
    plan = approvals.build_plan(approvals.planned_actions([checked]), REQUESTER, "CHG-7006")
    plan_path = str(tmp_path / "CHG-7006.json")
    approvals.write_private_file(plan_path, approvals.plan_bytes(plan))
    for who in ("alice", "bob"):
        sign(approvers_dir, plan_path, who)
    verified = run_module(
        "keyops.runbooks.approval_verify",
        {
            "plan_path": plan_path,
            "signatures": [f"{plan_path}.{who}@keyops.lab.sig" for who in ("alice", "bob")],
            **_trusted(approvers_dir),
        },
    )
    assert not verified.get("failed"), verified.get("msg")

    refused = run_module(
        "keyops.runbooks.aws_kms_key",
        {"key": alias, "key_class": "master-kek", "state": "absent", "approvals": verified["approvals"]}
        | {"policy": _trusted(approvers_dir)},
    )
    assert refused.get("failed") and "action not in the approved plan" in refused["msg"], refused.get("msg")
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyState"] == "Enabled"

    # The same approvals do cover the action they were given for, checked by the module on its own.
    applied = run_module(
        "keyops.runbooks.aws_kms_key",
        {"key": alias, "key_class": "master-kek", "enabled": False, "approvals": verified["approvals"]}
        | {"policy": _trusted(approvers_dir)},
    )
    assert applied.get("changed") and not applied.get("failed"), applied.get("msg")
    assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyState"] == "Disabled"


def _runner(playbook: str, extravars: dict[str, Any], tmp_path) -> Any:
    """Run a playbook as AWX does: ansible-runner, extra vars only, no terminal, no prompts."""
    private = tmp_path / "runner"
    (private / "env").mkdir(parents=True)
    (private / "env" / "envvars").write_text(
        json.dumps(
            {
                "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
                "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            }
        )
    )
    return ansible_runner.run(
        private_data_dir=str(private),
        playbook=os.path.join(ROOT, "playbooks", playbook),
        project_dir=ROOT,
        extravars=extravars,
        quiet=True,
        json_mode=False,
    )


def _results(runner: Any, task: str) -> list[dict[str, Any]]:
    return [
        event["event_data"]["res"]
        for event in runner.events
        if event.get("event") in ("runner_on_ok", "runner_on_failed") and event["event_data"].get("task") == task
    ]


def test_approval_check_and_denial_run_non_interactively_through_ansible_runner(approvers_dir, tmp_path):
    events = [
        {
            "action": "destroy",
            "backend": "vault_transit",
            "key_ref": "transit/prod-old-kek-20241203",
            "outcome": "planned",
            "check_mode": True,
            "before": {"state": "disabled"},
            "after": {"state": "destroyed"},
            "detail": {"key_class": "kek"},
        }
    ]
    plan = approvals.build_plan(approvals.planned_actions([{"audit_events": events}]), REQUESTER, "CHG-7004")
    plan_path = str(tmp_path / "CHG-7004.json")
    approvals.write_private_file(plan_path, approvals.plan_bytes(plan))
    extravars = {
        "keyops_plan_path": plan_path,
        "keyops_allowed_signers": approvers_dir["allowed_signers"],
        "keyops_approvers_file": approvers_dir["approvers_file"],
        "awx_job_id": 42,
    }

    # One approval: the check fails and says why.
    sign(approvers_dir, plan_path, "carol")
    waiting = _runner("approval_check.yml", extravars, tmp_path / "one")
    assert waiting.status == "failed" and waiting.rc != 0
    (result,) = _results(waiting, "Verify the approvers' signatures over the plan")
    assert "has 1 valid approval(s) of the 2 needed" in result["msg"]

    # Two: it passes and hands the approvals to the workflow's next node as an artifact.
    sign(approvers_dir, plan_path, "alice")
    ready = _runner("approval_check.yml", extravars, tmp_path / "two")
    assert ready.status == "successful", ready.stdout.read()[-3000:]
    assert ready.rc == 0
    (stats,) = [event for event in ready.events if event.get("event") == "playbook_on_stats"]
    artifact = stats["event_data"]["artifact_data"]
    assert sorted(a["approver"] for a in artifact["keyops_approvals"]) == ["alice@keyops.lab", "carol@keyops.lab"]
    assert artifact["keyops_plan_digest"] == plan["digest"]

    # The deny path records a deny event for the plan and fails the workflow.
    denied = _runner(
        "record_denial.yml",
        {"keyops_plan": plan, "awx_workflow_job_id": "77", "keyops_denial_reason": "security approval timed out"},
        tmp_path / "deny",
    )
    assert denied.status == "failed"
    (record,) = _results(denied, "Record the denial in the audit trail")
    (event,) = record["audit_events"]
    assert (event["action"], event["outcome"], event["detail"]["plan_digest"]) == ("deny", "refused", plan["digest"])
    assert event["detail"]["outcome_reason"] == "security approval timed out"
