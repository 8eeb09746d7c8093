"""The audit trail through the real ansible-playbook against the lab: every sink, outages, fail closed, tampering.

Oracles: the lab's rsyslog file, an HTTP event collector on loopback, boto3 on moto's S3, hvac on OpenBao, and the
verifier's own exit code from a separate process.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid

import boto3
import hvac
import pytest
from botocore.exceptions import ClientError

from tests.support.audit_peers import HecCollector, free_port
from tests.support.playbook import ROOT, run_tasks

pytestmark = pytest.mark.lab

VERIFY_CLI = [sys.executable, os.path.join(ROOT, "scripts", "keyops-audit-verify")]
HEC_TOKEN = "hec-canary-" + uuid.uuid4().hex


def verify_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VERIFY_CLI, *args], capture_output=True, text=True, check=False)


def s3_client():
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")


def test_every_sink_gets_the_same_chained_events(audit, probe_task, tmp_path):
    bucket = f"audit-{uuid.uuid4().hex[:12]}"
    s3 = s3_client()
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)

    with HecCollector(HEC_TOKEN) as collector:
        env = dict(
            audit.env,
            KEYOPS_AUDIT_SINKS="file,syslog,hec,s3",
            KEYOPS_AUDIT_HEC_URL=collector.url,
            KEYOPS_AUDIT_HEC_TOKEN=HEC_TOKEN,
            KEYOPS_AUDIT_S3_BUCKET=bucket,
            KEYOPS_AUDIT_S3_RETENTION_DAYS="2",
        )
        run = run_tasks(
            [probe_task(1), probe_task(2)],
            env=env,
            play_vars={"change_ref": "CHG-7001", "awx_job_id": 4242, "awx_user_name": "alice"},
        )
        hec_events = [envelope["event"] for envelope in collector.events]

    assert run.rc == 0, run.stderr
    events = audit.events()
    assert [(e["seq"], e["action"], e["outcome"], e["key_ref"]) for e in events] == [
        (1, "configure", "planned", "sys/audit/probe-1"),
        (2, "configure", "planned", "sys/audit/probe-2"),
    ]
    first = events[0]
    assert (first["change_ref"], first["awx_job_id"], first["awx_user"], first["operator"]) == (
        "CHG-7001",
        "4242",
        "alice",
        "alice",
    )
    assert (first["host"], first["task"], first["module"]) == ("localhost", "probe 1", "vault_audit_device")
    assert stat.S_IMODE(os.stat(audit.log).st_mode) == 0o600

    # Each sink holds the same chain; syslog and HEC also hold the run's anchor.
    hashes = [event["hash"] for event in events]
    syslog = audit.syslog_records()
    assert [record["hash"] for record in syslog if "hash" in record] == hashes
    assert [record["hash"] for record in hec_events if "hash" in record] == hashes
    anchor = next(record for record in syslog if record.get("type") == "keyops.audit.anchor")
    assert (anchor["last_seq"], anchor["last_hash"], anchor["count"]) == (2, hashes[-1], 2)

    # The S3 archive holds the run and its anchor, retained in compliance mode; deleting it is refused.
    [item] = s3.list_object_versions(Bucket=bucket)["Versions"]
    archived = s3.get_object(Bucket=bucket, Key=item["Key"])
    lines = [json.loads(line) for line in archived["Body"].read().decode().splitlines()]
    assert [line.get("hash") for line in lines[:-1]] == hashes and lines[-1]["last_hash"] == hashes[-1]
    assert archived["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"

    # The verifier agrees, against the syslog copy's anchors, from a separate process.
    checked = verify_cli(str(audit.log), "--anchors", audit.lab["KEYOPS_LAB_SYSLOG_FILE"])
    assert checked.returncode == 0 and "2 events" in checked.stdout, checked.stdout + checked.stderr
    (tmp_path / "sample-events.json").write_text(
        json.dumps({"file": events[0], "syslog": syslog[0], "hec": collector.events[0], "s3": lines[0]}, indent=2)
    )


def test_rsyslog_stopped_mid_run_gets_every_event_in_order_after_it_restarts(audit, probe_task, rsyslog_restored):
    control = {"KEYOPS_LAB_DIR": audit.lab["state_dir"]}
    tasks = [
        probe_task(1),
        {
            "name": "stop rsyslog",
            "ansible.builtin.command": {"argv": [*rsyslog_restored, "stop"]},
            "environment": control,
            "changed_when": False,
        },
        probe_task(2),
        probe_task(3),
        {
            "name": "start rsyslog",
            "ansible.builtin.command": {"argv": [*rsyslog_restored, "start"]},
            "environment": control,
            "changed_when": False,
        },
        probe_task(4),
    ]
    env = dict(audit.env, KEYOPS_AUDIT_SINKS="file,syslog", KEYOPS_AUDIT_RETRY_INTERVAL="0")

    run = run_tasks(tasks, env=env)

    assert run.rc == 0, run.stderr
    assert "sink 'syslog' is unavailable" in run.stderr
    hashes = [event["hash"] for event in audit.events()]
    assert len(hashes) == 4
    assert [record["hash"] for record in audit.syslog_records() if "hash" in record] == hashes
    assert not (audit.spool / "syslog.spool.jsonl").exists()


def test_events_of_a_run_while_rsyslog_is_down_arrive_with_the_next_run(audit, probe_task, rsyslog_restored):
    env = dict(audit.env, KEYOPS_AUDIT_SINKS="file,syslog")
    control = dict(os.environ, KEYOPS_LAB_DIR=audit.lab["state_dir"])
    subprocess.run([*rsyslog_restored, "stop"], check=True, env=control)

    down = run_tasks([probe_task(1), probe_task(2)], env=env)
    spooled = [json.loads(line) for line in (audit.spool / "syslog.spool.jsonl").read_text().splitlines()]
    subprocess.run([*rsyslog_restored, "start"], check=True, env=control)
    back = run_tasks([probe_task(3)], env=env)

    assert down.rc == 0 and back.rc == 0
    assert len(spooled) == 3  # two events and the run's anchor
    events = audit.events()
    assert events[2]["prev_hash"] == events[1]["hash"]  # the second run continues the chain
    received = audit.syslog_records()
    assert [record["hash"] for record in received if "hash" in record] == [event["hash"] for event in events]
    assert len([record for record in received if record.get("type") == "keyops.audit.anchor"]) == 2


def test_fail_closed_sink_check_stops_the_play_before_any_change(audit, lab):
    key = f"failclosed-{uuid.uuid4().hex[:8]}"
    env = dict(audit.env, KEYOPS_AUDIT_SINKS="file,syslog", KEYOPS_AUDIT_SYSLOG_PORT=str(free_port()))
    tasks = [
        {"name": "Gate on the audit trail", "ansible.builtin.include_role": {"name": "keyops.runbooks.audit"}},
        {"name": "create a key", "keyops.runbooks.vault_transit_key": {"name": key}},
    ]

    run = run_tasks(tasks, env=env)

    assert run.rc != 0
    [check] = [
        result for result in run.results if result["_task"].endswith("Check that every audit sink can take events")
    ]
    assert check["failed"] and "sink 'syslog' is down" in check["msg"] and "fail_closed" in check["msg"]
    client = hvac.Client(url=lab["VAULT_ADDR"], token=lab["VAULT_TOKEN"])
    assert key not in client.secrets.transit.list_keys().get("data", {}).get("keys", [])


def test_fail_closed_callback_stops_a_running_playbook_when_a_sink_dies(audit, probe_task, lab):
    key = f"failclosed-{uuid.uuid4().hex[:8]}"
    env = dict(
        audit.env,
        KEYOPS_AUDIT_SINKS="file,syslog",
        KEYOPS_AUDIT_SYSLOG_PORT=str(free_port()),
        KEYOPS_AUDIT_FAIL_CLOSED="true",
    )

    run = run_tasks(
        [probe_task(1), {"name": "create a key", "keyops.runbooks.vault_transit_key": {"name": key}}],
        env=env,
        callback="default",
    )

    assert run.rc == 99
    assert "required audit sink 'syslog' cannot take events" in run.stderr
    client = hvac.Client(url=lab["VAULT_ADDR"], token=lab["VAULT_TOKEN"])
    assert key not in client.secrets.transit.list_keys().get("data", {}).get("keys", [])
    assert len(audit.events()) == 1  # written locally; spooled for syslog
    assert (audit.spool / "syslog.spool.jsonl").exists()


def test_failed_and_skipped_key_tasks_are_recorded_without_their_message(audit):
    tasks = [
        {
            "name": "rotate a key that is not there",
            "keyops.runbooks.vault_transit_key": {
                "name": "no-such-key-here",
                "rotate": True,
                "token": "s.not-a-valid-token-xyz",
            },
            "ignore_errors": True,
        },
        {
            "name": "skipped rotation",
            "keyops.runbooks.vault_transit_key": {"name": "skipped-key", "rotate": True},
            "when": False,
        },
    ]

    run = run_tasks(tasks, env=audit.env)

    assert run.rc == 0
    failed, skipped = audit.events()
    assert (failed["action"], failed["outcome"], failed["key_ref"], failed["detail"]) == (
        "rotate",
        "failure",
        "no-such-key-here",
        {"outcome_reason": "task_failed"},
    )
    assert (skipped["outcome"], skipped["detail"]) == ("skipped", {"outcome_reason": "task_skipped"})
    assert "msg" not in failed and "not-a-valid-token" not in audit.log.read_text()


def test_audit_verify_module_and_cli_name_the_first_tampered_event(audit, probe_task, tmp_path):
    assert run_tasks([probe_task(n) for n in (1, 2, 3)], env=audit.env).rc == 0
    lines = audit.log.read_text().splitlines()
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([lines[0], lines[1].replace("planned", "unchanged"), lines[2]]) + "\n")
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:2]) + "\n")

    run = run_tasks(
        [
            {
                "name": "verify the real log",
                "keyops.runbooks.audit_verify": {"path": str(audit.log), "anchor_path": str(audit.log) + ".anchors"},
            },
            {
                "name": "verify the edited log",
                "keyops.runbooks.audit_verify": {"path": str(tampered)},
                "ignore_errors": True,
            },
            {
                "name": "verify the cut log",
                "keyops.runbooks.audit_verify": {
                    "path": str(cut),
                    "anchor_path": str(audit.log) + ".anchors",
                    "fail_on_broken": False,
                },
            },
        ],
        env=audit.env,
    )

    good, edited, truncated = (
        run.by_name(name) for name in ("verify the real log", "verify the edited log", "verify the cut log")
    )
    assert (good["ok"], good["count"], good["anchors_checked"]) == (True, 3, 1)
    assert edited["failed"] and edited["first_broken"]["code"] == "edited" and edited["first_broken"]["line"] == 2
    assert "line 2" in edited["msg"]
    assert (truncated["ok"], truncated["first_broken"]["code"]) == (False, "truncated")
    assert verify_cli(str(tampered)).returncode == 1
    assert "BROKEN at line 2" in verify_cli(str(tampered)).stdout


def test_vault_audit_device_four_ways_and_the_servers_log_hides_the_token(lab, audit, tmp_path):
    from tests.support.playbook import four_way

    log = tmp_path / "bao-audit.log"
    path = f"keyops-{uuid.uuid4().hex[:6]}"
    results = four_way("keyops.runbooks.vault_audit_device", {"path": path, "file_path": str(log)}, env=audit.env)

    assert [r["audit_events"][0]["outcome"] for r in results] == ["planned", "changed", "unchanged", "unchanged"]
    client = hvac.Client(url=lab["VAULT_ADDR"], token=lab["VAULT_TOKEN"])
    device = client.sys.list_enabled_audit_devices()["data"][f"{path}/"]
    assert (device["type"], device["options"]["file_path"]) == ("file", str(log))
    client.secrets.transit.list_keys()
    assert log.exists() and lab["VAULT_TOKEN"] not in log.read_text()
    client.sys.disable_audit_device(path)
