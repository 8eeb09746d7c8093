"""vault_transit_rewrap on the lab's OpenBao: 5,000 data keys, a killed and resumed run, refused items, canaries."""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import time
from typing import Any

import yaml

from tests.integration.vault.vault_helpers import assert_four_way, four_way_tasks, play, task
from tests.support.playbook import ANSIBLE_PLAYBOOK, ROOT, assert_no_canary, run_tasks
from tests.support.vault_deks import decrypt_all, versions_in

MODULE = "keyops.runbooks.vault_transit_rewrap"


def test_5000_data_keys_four_way(oracle: Any, dek_store: Any, tmp_path: Any) -> None:
    name, path, plaintexts = dek_store(count=5000)
    progress = str(tmp_path / "progress.json")
    results = play(
        four_way_tasks(
            "rewrap", MODULE, {"name": name, "store": {"path": path}, "progress_file": progress, "change_ref": "CHG-9"}
        )
    )

    check, real, again_check, again = assert_four_way(results, "rewrap")
    assert check["pending"] == 3334 and check["histogram_before"] == {"v1": 1667, "v2": 1667, "v3": 1666}
    assert check["histogram_after"] == {"v3": 5000} and check["audit_events"][0]["outcome"] == "planned"
    assert real["rewrapped"] == 3334 and real["refused"] == 0 and real["remaining_below_target"] == 0
    assert real["histogram_after"] == {"v3": 5000} and real["audit_events"][0]["outcome"] == "changed"
    assert again_check["pending"] == 0 and again["rewrapped"] == 0
    assert again["audit_events"][0]["outcome"] == "unchanged"

    assert versions_in(path) == {"v3": 5000}
    assert decrypt_all(oracle, path, name) == plaintexts
    with open(progress, encoding="utf-8") as handle:
        text = handle.read()
    report = json.loads(text)
    # The file shows the last (idempotent) run: every data key read, none left to rewrap.
    assert (report["done"], report["total"], report["rewrapped"], report["failed"]) == (5000, 5000, 0, 0)
    assert report["finished"] and report["eta_s"] is None
    assert oct(os.stat(progress).st_mode & 0o777) == "0o600" and "vault:v" not in text


def test_killed_run_resumes_to_the_same_end_state(oracle: Any, dek_store: Any, tmp_path: Any) -> None:
    name, path, plaintexts = dek_store(count=5000)
    progress = tmp_path / "progress.json"
    args = {"name": name, "store": {"path": path}, "batch_size": 2, "progress_file": str(progress)}
    playbook = tmp_path / "rewrap.yml"
    playbook.write_text(
        yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [{"name": "rewrap", MODULE: args}]}])
    )
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    run = subprocess.Popen(
        [ANSIBLE_PLAYBOOK, str(playbook)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    report: dict[str, Any] = {}
    while not report.get("done"):  # the first report comes after the first committed batch
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
        report = json.loads(progress.read_text()) if progress.exists() else {}
    # The module process, then the playbook around it: nothing of the run is left to finish its work.
    os.kill(report["pid"], signal.SIGKILL)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    time.sleep(0.5)

    mid = versions_in(path)
    assert 0 < mid.get("v3", 0) - 1666 < 3334, f"not killed mid-way: {mid}"
    resumed = play([task("resume", MODULE, {**args, "batch_size": None})])["resume"]
    assert resumed["resumed"], {k: v for k, v in resumed.items() if k != "invocation"}
    assert resumed["rewrapped_before_resume"] + resumed["rewrapped"] == 3334
    assert resumed["refused"] == 0 and resumed["histogram_after"] == {"v3": 5000}
    assert versions_in(path) == {"v3": 5000}
    assert decrypt_all(oracle, path, name) == plaintexts


def test_refused_items_partitions_and_canaries(oracle: Any, dek_store: Any, tmp_path: Any) -> None:
    name, path, plaintexts = dek_store(count=90)
    # One data key made with associated data: rewrap cannot carry it, so the server refuses that item.
    with_ad = oracle.adapter.post(
        f"/v1/transit/encrypt/{name}",
        json={
            "plaintext": base64.b64encode(b"canary-plaintext-7Q2").decode(),
            "associated_data": base64.b64encode(b"row-7").decode(),
            "key_version": 1,
        },
    )["data"]["ciphertext"]
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO data_keys VALUES ('dk-ad', ?, ?, NULL)", (f"transit/{name}", with_ad))
        before = [row[0] for row in connection.execute("SELECT ciphertext FROM data_keys")]
    token = f"canary-{os.urandom(6).hex()}"
    oracle.auth.token.create(id=token, policies=["root"], ttl="10m")

    store = {"path": path}
    run = run_tasks(
        [
            task("slice 0", MODULE, {"name": name, "store": store, "partition_index": 0, "partition_count": 2}),
            task("slice 1", MODULE, {"name": name, "store": store, "partition_index": 1, "partition_count": 2}),
        ],
        verbosity=3,
        env={"VAULT_TOKEN": token},
    )
    results = {result["_task"]: result for result in run.results}

    slices = results["slice 0"], results["slice 1"]
    assert sum(result["total"] for result in slices) == 91
    assert sum(result["rewrapped"] for result in slices) == 60
    refused = [failure for result in slices for failure in result["failures"]]
    assert [failure["id"] for failure in refused] == ["dk-ad"] and "authentication" in refused[0]["reason"]
    assert sum(result["refused"] for result in slices) == 1
    assert sum(result["remaining_below_target"] for result in slices) == 1

    assert versions_in(path) == {"v3": 90, "v1": 1}
    assert {k: v for k, v in decrypt_all(oracle, path, name).items() if k != "dk-ad"} == plaintexts
    leaked = [token, base64.b64encode(b"canary-plaintext-7Q2").decode(), *plaintexts.values(), *before]
    assert_no_canary(leaked, run.stdout, run.stderr)


def test_a_rewrap_the_policy_puts_under_dual_control_is_refused_without_approvals(oracle: Any, dek_store: Any) -> None:
    """The gate's code is loaded only when the policy asks for it: when it does, the gate must still hold."""
    name, path, plaintexts = dek_store(count=30)
    args = {"name": name, "store": {"path": path}, "policy": {"approval_required_actions": ["rewrap"]}}
    results = play(
        [
            task("plan", MODULE, args, check=True),
            task("apply without approvals", MODULE, args, may_fail=True),
        ]
    )

    assert results["plan"]["pending"] == 20 and not results["plan"].get("failed")
    refused = results["apply without approvals"]
    assert refused["failed"] and "approv" in refused["msg"] and name in refused["msg"], refused["msg"]
    assert versions_in(path) == {"v1": 10, "v2": 10, "v3": 10}
    assert decrypt_all(oracle, path, name) == plaintexts
