"""Backends that go away mid-run: OpenBao killed and restarted, KMS frozen and thawed, KMS killed, rsyslog stopped.

The run must fail clearly (what, which key, what to do; no traceback) or finish, never leave a destructive step
half-done (every stored data key is either untouched or completely re-wrapped, and the progress record says exactly
how many), and after the server is back a rerun ends like an uninterrupted run; audit events reach syslog after it
returns.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.integration.aws_kms.kms_helpers import seed_store as seed_kms_store
from tests.integration.conftest import REPO_ROOT
from tests.reliability import canaries, tally
from tests.reliability.harness import Run, run_to_end, write_playbook
from tests.reliability.services import kill_service, restart_raft, signal_service, wait_port
from tests.reliability.test_faults import progress_done, sqlite_rows, vault_decrypt
from tests.support.vault_deks import seed_store as seed_vault_store
from tests.support.vault_deks import vault_client

pytestmark = [pytest.mark.lab, pytest.mark.area("faults")]

RSYSLOG_CTL = [sys.executable, str(REPO_ROOT / "tests" / "integration" / "audit" / "rsyslog_ctl.py")]


def wait_for(condition: Any, run: Run, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert run.process.poll() is None, f"the run ended before the outage:\n{run.stdout[-2000:]}"
        assert time.monotonic() < deadline, "the run did not reach the point of the outage"
        time.sleep(0.01)


def assert_clear_failure(run: Run, task: str, key_ref: str, *words: str) -> str:
    result = run.results().get(task, {})
    message = result.get("msg", "")
    assert run.rc != 0 and result.get("failed"), f"the run did not fail: {result}"
    assert "Traceback" not in run.stdout + run.stderr, "a traceback reached the operator"
    assert key_ref in message, f"the message does not name the key: {message}"
    assert any(word in message for word in words), f"the message does not say what happened: {message}"
    return message


def test_openbao_killed_mid_rewrap_fails_clearly_and_resumes_after_restart(
    lab: dict[str, Any], outputs: Path, tmp_path: Path
) -> None:
    tally.add("faults", "trials")
    tally.add("faults", "outages")
    client = vault_client(lab["KEYOPS_LAB_RAFT_ADDR"], lab["KEYOPS_LAB_RAFT_TOKEN"])
    name = f"outage-r{os.getpid()}-kek-20261203"
    store = tmp_path / "deks.sqlite"
    plaintexts = seed_vault_store(client, str(store), name, 1500, versions=3)
    canaries.add_plaintexts(plaintexts.values())
    original = {item_id: ct for item_id, _unused1, ct, _unused2 in sqlite_rows(store)}
    playbook = write_playbook(
        tmp_path,
        "rewrap-raft",
        [
            {
                "name": "rewrap",
                "keyops.runbooks.vault_transit_rewrap": {
                    "name": name,
                    "store": {"path": str(store)},
                    "batch_size": 2,
                    "timeout": 5,
                    "retries": 1,
                },
            }
        ],
    )
    raft = {"VAULT_ADDR": lab["KEYOPS_LAB_RAFT_ADDR"], "VAULT_TOKEN": lab["KEYOPS_LAB_RAFT_TOKEN"]}
    raft_port = int(lab["KEYOPS_LAB_RAFT_ADDR"].rsplit(":", 1)[1])

    run = Run(playbook, outputs, raft)
    wait_for(lambda: progress_done(store, "rewrap:") >= 100, run)
    kill_service(lab, "openbao-raft", raft_port)
    run.wait()

    try:
        message = assert_clear_failure(run, "rewrap", f"transit/{name}", "cannot connect", "did not answer")
        # Nothing half-done: each data key is its original ciphertext or a complete v3 one, as the progress says.
        rows = sqlite_rows(store)
        moved = [item_id for item_id, _unused1, ct, _unused2 in rows if ct != original[item_id]]
        assert all(ct.startswith("vault:v3:") for item_id, _unused1, ct, _unused2 in rows if item_id in moved)
        assert len(moved) == progress_done(store, "rewrap:") > 0
    finally:
        restart_raft(lab)

    rerun = run_to_end(playbook, outputs, raft)
    assert rerun.rc == 0, rerun.results().get("rewrap", {}).get("msg")
    rows = sqlite_rows(store)
    decrypted = vault_decrypt(client, name, [(item_id, ct, ctx) for item_id, _unused, ct, ctx in rows])
    lost = sum(1 for item_id, plaintext in plaintexts.items() if decrypted[item_id] != plaintext)
    tally.add("faults", "data keys verified", len(rows))
    tally.add("faults", "lost", lost)
    tally.add("faults", "wrapped twice", max(progress_done(store, "rewrap:") - 1000, 0))
    assert lost == 0
    assert all(ct.startswith("vault:v3:") for _unused1, _unused2, ct, _unused3 in rows)
    assert progress_done(store, "rewrap:") == 1000
    print(f"\nOpenBao down mid-rewrap: {message}")
    tally.add("faults", "trials passed")


def kms_client(endpoint: str, region: str) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=32, retries={"mode": "standard", "max_attempts": 2}),
    )


def kms_task(dest: str, store: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "reencrypt",
        "keyops.runbooks.aws_kms_reencrypt": {
            "destination_key": dest,
            "store": {"path": str(store)},
            "batch_size": 10,
            "max_workers": 2,
            **extra,
        },
    }


def test_kms_frozen_mid_reencrypt_then_thawed_finishes_with_every_data_key(
    lab: dict[str, Any], outputs: Path, tmp_path: Path
) -> None:
    tally.add("faults", "trials")
    tally.add("faults", "outages")
    kms = kms_client(lab["AWS_ENDPOINT_URL"], lab["AWS_DEFAULT_REGION"])
    source, dest = (kms.create_key()["KeyMetadata"]["Arn"] for _unused in range(2))
    store = tmp_path / "deks.sqlite"
    plaintexts = seed_kms_store(kms, str(store), source, 300, unique=50, table="data_keys")
    playbook = write_playbook(tmp_path, "reencrypt-freeze", [kms_task(dest, store)])

    run = Run(playbook, outputs)
    wait_for(lambda: progress_done(store, "aws_kms_reencrypt ") >= 50, run)
    signal_service(lab, "moto", signal.SIGSTOP)
    try:
        time.sleep(3)
    finally:
        signal_service(lab, "moto", signal.SIGCONT)
    run.wait()

    assert run.rc == 0, run.results().get("reencrypt", {}).get("msg")
    rows = sqlite_rows(store)
    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda row: kms.decrypt(CiphertextBlob=base64.b64decode(row[2])), rows))
    lost = sum(
        1
        for row, reply in zip(rows, replies, strict=True)
        if (reply["KeyId"], reply["Plaintext"]) != (dest, plaintexts[row[0]])
    )
    tally.add("faults", "data keys verified", len(rows))
    tally.add("faults", "lost", lost)
    tally.add("faults", "wrapped twice", max(progress_done(store, "aws_kms_reencrypt ") - 300, 0))
    assert lost == 0 and {row[1] for row in rows} == {dest}
    assert progress_done(store, "aws_kms_reencrypt ") == 300
    tally.add("faults", "trials passed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [str(REPO_ROOT / ".venv" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_port(port, up=True)
    return server


def test_kms_killed_mid_reencrypt_fails_clearly_and_leaves_no_half_done_data_key(
    lab: dict[str, Any], outputs: Path, tmp_path: Path
) -> None:
    """moto keeps keys in memory: a killed moto comes back empty, unlike KMS. So this private moto shows the
    failure and the store's state; the restart shows a run against the emptied server refuses without a write."""
    tally.add("faults", "trials")
    tally.add("faults", "outages")
    port = int(lab["port_base"]) + 70
    endpoint = f"http://127.0.0.1:{port}"
    server = start_moto(port)
    try:
        kms = kms_client(endpoint, "eu-west-1")
        source, dest = (kms.create_key()["KeyMetadata"]["Arn"] for _unused in range(2))
        store = tmp_path / "deks.sqlite"
        seed_kms_store(kms, str(store), source, 400, unique=40, table="data_keys")
        original = {item_id: ct for item_id, _unused1, ct, _unused2 in sqlite_rows(store)}
        playbook = write_playbook(tmp_path, "reencrypt-kill", [kms_task(dest, store, max_attempts=2)])
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "eu-west-1"}

        run = Run(playbook, outputs, env)
        wait_for(lambda: progress_done(store, "aws_kms_reencrypt ") >= 50, run)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        run.wait()

        message = assert_clear_failure(run, "reencrypt", dest, "could not be reached", "run again")
        rows = sqlite_rows(store)
        moved = [row for row in rows if row[1] == dest]
        assert all(row[2] != original[row[0]] for row in moved), "a row names the new key with its old ciphertext"
        assert all(row[2] == original[row[0]] for row in rows if row[1] == source), "an unmoved row changed"
        assert len(moved) == progress_done(store, "aws_kms_reencrypt ") > 0
        snapshot = store.read_bytes()

        server = start_moto(port)
        again = run_to_end(playbook, outputs, env)
        assert_clear_failure(again, "reencrypt", dest, "no such key", "not found")
        assert sqlite_rows(store) == rows and len(store.read_bytes()) == len(snapshot)
        print(f"\nKMS down mid-re-encrypt: {message}")
        tally.add("faults", "trials passed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_rsyslog_stopped_mid_run_gets_every_event_after_it_returns(
    lab: dict[str, Any], outputs: Path, tmp_path: Path
) -> None:
    tally.add("faults", "trials")
    tally.add("faults", "outages")
    client = vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])
    name = f"syslog-r{os.getpid()}-kek-20261203"
    store = tmp_path / "deks.sqlite"
    seed_vault_store(client, str(store), name, 1200, versions=2)
    audit_dir = outputs / "audit-rsyslog"
    env = {
        "KEYOPS_AUDIT_SINKS": "file,syslog",
        "KEYOPS_AUDIT_PATH": str(audit_dir / "audit.jsonl"),
        "KEYOPS_AUDIT_SPOOL_DIR": str(audit_dir / "spool"),
        "KEYOPS_AUDIT_SYSLOG_HOST": lab["KEYOPS_LAB_SYSLOG_HOST"],
        "KEYOPS_AUDIT_SYSLOG_PORT": lab["KEYOPS_LAB_SYSLOG_PORT"],
        "KEYOPS_AUDIT_TIMEOUT": "1",
    }
    rewrap = {"name": name, "store": {"path": str(store)}, "batch_size": 2}
    tasks = [
        {"name": "plan", "keyops.runbooks.vault_transit_rewrap": rewrap, "check_mode": True},
        {"name": "rewrap", "keyops.runbooks.vault_transit_rewrap": rewrap},
        {"name": "rewrap again", "keyops.runbooks.vault_transit_rewrap": rewrap},
    ]
    playbook = write_playbook(tmp_path, "rewrap-syslog", tasks)
    ctl_env = {**os.environ, "KEYOPS_LAB_DIR": lab["state_dir"]}
    syslog_port = int(lab["KEYOPS_LAB_SYSLOG_PORT"])

    run = Run(playbook, outputs, env)
    wait_for(lambda: progress_done(store, "rewrap:") >= 50, run)
    subprocess.run([*RSYSLOG_CTL, "stop"], check=True, env=ctl_env)
    try:
        run.wait()
        assert run.rc == 0, run.results()
    finally:
        subprocess.run([*RSYSLOG_CTL, "start"], check=True, env=ctl_env)
    wait_port(syslog_port, up=True)

    follow_up = write_playbook(tmp_path, "after-syslog", [tasks[2]])
    assert run_to_end(follow_up, outputs, env).rc == 0

    events = [json.loads(line) for line in (audit_dir / "audit.jsonl").read_text().splitlines()]
    syslog_file = Path(lab["KEYOPS_LAB_SYSLOG_FILE"])
    deadline = time.monotonic() + 20
    while True:
        received = {
            record["hash"]: record
            for line in syslog_file.read_text().splitlines()
            if "{" in line
            for record in [json.loads(line[line.index("{") :])]
            if "hash" in record
        }
        missing = [event for event in events if event["hash"] not in received]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    spooled = list((audit_dir / "spool").glob("*.spool.jsonl"))
    assert len(events) >= 4 and {event["run_id"] for event in events}.__len__() == 2
    assert not missing, f"{len(missing)} of {len(events)} events never reached syslog"
    assert all(path.stat().st_size == 0 for path in spooled), "events are still waiting in the spool"
    tally.add("faults", "trials passed")
