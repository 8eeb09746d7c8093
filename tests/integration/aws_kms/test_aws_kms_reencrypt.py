"""keyops.runbooks.aws_kms_reencrypt against the lab's moto server; every data key is decrypted with boto3 after.

moto keeps the same key material after rotate_key_on_demand (LAB.md), so the test cannot tell old material from
new: it checks what can be checked there (a new job after rotation, every data key re-encrypted once more, the
answer naming the destination key, every data key decrypting to its original plaintext).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.aws_kms.kms_helpers import decrypt_all, seed_store, store_rows
from tests.support.playbook import ANSIBLE_PLAYBOOK, ROOT, assert_no_canary, four_way, run_module, run_tasks

MODULE = "keyops.runbooks.aws_kms_reencrypt"

pytestmark = pytest.mark.lab


def descendants(root: int) -> list[int]:
    """Every process below ``root``, deepest first, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return list(reversed(found))


def store_option(path: Path) -> dict[str, Any]:
    return {"type": "sqlite", "path": str(path), "table": "kms_data_keys"}


def test_5000_data_keys_to_new_key_then_after_rotation(kms: Any, new_key: Any, tmp_path: Path) -> None:
    key_a, key_b = new_key(), new_key()
    db = tmp_path / "deks.sqlite"
    plaintexts = seed_store(kms, str(db), key_a["Arn"], 5000)
    original = {row[0]: row[2] for row in store_rows(str(db))}
    progress = tmp_path / "progress.json"
    args = {
        "destination_key": key_b["Alias"],
        "source_keys": [key_a["AliasArn"]],
        "store": store_option(db),
        "batch_size": 500,
        "max_workers": 16,
        "progress_file": str(progress),
        "change_ref": "CHG-77",
    }

    check, real, _unused, again = four_way(MODULE, args)

    assert check["counts"]["pending"] == 5000 and check["after"] == {key_b["Arn"]: 5000}
    assert check["audit_events"][0]["outcome"] == "planned"
    assert real["counts"]["reencrypted"] == 5000 and real["counts"]["failed"] == 0
    assert real["before"] == {key_a["Arn"]: 5000} and real["after"] == {key_b["Arn"]: 5000}
    assert again["counts"]["pending"] == 0 and again["audit_events"][0]["outcome"] == "unchanged"
    rows = store_rows(str(db))
    assert {row[1] for row in rows} == {key_b["Arn"]}
    assert all(row[2] != original[row[0]] for row in rows)
    first_job = real["job"]
    print(f"\nre-encrypt 5000 data keys A->B: {real['seconds']} s, {real['rate_per_second']}/s")

    # The progress file is for polling: counts only, private, no ciphertext.
    status = json.loads(progress.read_text())
    assert status["done"] == 5000 and status["total"] == 5000 and status["failed"] == 0
    assert stat.S_IMODE(progress.stat().st_mode) == 0o600
    text = progress.read_text()
    assert not any(ciphertext[:24] in text for ciphertext in [*list(original.values())[:50], rows[0][2]])

    kms.rotate_key_on_demand(KeyId=key_b["KeyId"])
    before_rotation = {row[0]: row[2] for row in rows}
    rotated_args = {"destination_key": key_b["KeyId"], "store": store_option(db), "max_workers": 16}

    check, real, _unused, again = four_way(MODULE, rotated_args)

    assert check["job"] == real["job"] != first_job
    assert real["counts"]["reencrypted"] == 5000 and again["counts"]["pending"] == 0
    print(f"re-encrypt 5000 data keys after rotation of B: {real['seconds']} s, {real['rate_per_second']}/s")
    rows = store_rows(str(db))
    assert all(row[2] != before_rotation[row[0]] for row in rows)
    decrypted = decrypt_all(kms, rows)
    assert len(decrypted) == 5000
    assert {key_id for key_id, _unused in decrypted.values()} == {key_b["Arn"]}
    assert all(decrypted[item_id][1] == plaintext for item_id, plaintext in plaintexts.items())


def test_killed_run_resumes_without_losing_or_redoing(kms: Any, new_key: Any, tmp_path: Path) -> None:
    key_a, key_c = new_key(), new_key()
    db = tmp_path / "deks.sqlite"
    plaintexts = seed_store(kms, str(db), key_a["Arn"], 3000, unique=300)
    progress = tmp_path / "progress.json"
    args = {
        "destination_key": key_c["Arn"],
        "store": store_option(db),
        "batch_size": 100,
        "max_workers": 2,
        "progress_file": str(progress),
    }
    playbook = tmp_path / "reencrypt.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "re-encrypt",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [{"name": "re-encrypt", MODULE: args}],
                }
            ]
        )
    )

    run = subprocess.Popen(
        [ANSIBLE_PLAYBOOK, str(playbook)],
        cwd=ROOT,
        start_new_session=True,
        env={**os.environ, "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if progress.exists() and json.loads(progress.read_text() or "{}").get("done", 0) >= 300:
                break
            time.sleep(0.05)
    finally:
        # Ansible's workers call setsid, so the module is not in the playbook's process group: kill the tree.
        for pid in [*descendants(run.pid), run.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.wait()
    moved = sum(1 for row in store_rows(str(db)) if row[1] == key_c["Arn"])
    assert 300 <= moved < 3000, "the run was not killed half way; the test proves nothing"

    resumed = run_module(MODULE, args)

    assert not resumed.get("failed"), resumed.get("msg")
    assert resumed["counts"]["reencrypted"] == 3000 - moved
    rows = store_rows(str(db))
    assert {row[1] for row in rows} == {key_c["Arn"]}
    decrypted = decrypt_all(kms, rows)
    assert all(decrypted[item_id] == (key_c["Arn"], plaintext) for item_id, plaintext in plaintexts.items())


def test_partitions_reference_forms_and_no_ciphertext_in_output(kms: Any, new_key: Any, tmp_path: Path) -> None:
    key_a, key_d = new_key(), new_key()
    db = tmp_path / "deks.sqlite"
    seed_store(kms, str(db), key_a["Arn"], 200, unique=200)
    ciphertexts = [row[2] for row in store_rows(str(db))]
    in_slice_0 = sum(1 for row in store_rows(str(db)) if zlib.crc32(row[0].encode()) % 2 == 0)
    base = {"store": store_option(db), "partition_count": 2}

    run = run_tasks(
        [
            {
                "name": "slice 0",
                MODULE: {
                    **base,
                    "partition_index": 0,
                    "destination_key": key_d["AliasArn"],
                    "source_keys": [key_a["KeyId"]],
                },
            },
            {
                "name": "slice 1",
                MODULE: {
                    **base,
                    "partition_index": 1,
                    "destination_key": key_d["Arn"],
                    "source_keys": [key_a["Alias"]],
                },
            },
            {
                "name": "nothing left",
                MODULE: {"store": store_option(db), "destination_key": key_d["KeyId"], "source_keys": [key_a["Arn"]]},
            },
        ],
        verbosity=3,
    )

    assert run.rc == 0, run.stdout[-2000:]
    first, second = run.by_name("slice 0"), run.by_name("slice 1")
    assert first["counts"]["reencrypted"] == in_slice_0 and second["counts"]["reencrypted"] == 200 - in_slice_0
    assert first["destination_arn"] == second["destination_arn"] == key_d["Arn"]
    assert run.by_name("nothing left")["changed"] is False
    assert {row[1] for row in store_rows(str(db))} == {key_d["Arn"]}
    assert_no_canary(ciphertexts + [row[2] for row in store_rows(str(db))], run.stdout, run.stderr)


def test_lab_store_format_is_read_as_seeded(lab: dict[str, Any], tmp_path: Path) -> None:
    seeded = lab["seed"]["kms_data_keys"]
    copy = tmp_path / "lab-deks.sqlite"
    shutil.copy(lab["KEYOPS_LAB_DEK_DB"], copy)
    orders = next(key for key in lab["seed"]["aws_kms"]["keys"] if "-orders-" in key["alias"])

    result = run_module(
        MODULE,
        {"destination_key": f"alias/{orders['alias']}", "store": {"path": str(copy), "table": seeded["table"]}},
        check=True,
    )

    assert result["before"] == {seeded["key_ref"]: seeded["count"]}
    assert result["counts"]["pending"] == seeded["count"]


@pytest.mark.parametrize(
    ("destination", "words"),
    [
        ("{crm}", ["destination key is disabled", "enabled=true"]),
        ("{retired}", ["pending deletion", "cancel_deletion=true"]),
        ("{partner}", ["not a symmetric encryption key", "destination_key"]),
        ("alias/test-missing-kek-20000101", ["no such key", "alias/NAME"]),
        ("{source-disabled}", ["data keys are wrapped under this key", "disabled", "enabled=true"]),
    ],
    ids=["disabled", "pending-deletion", "asymmetric", "unknown-alias", "disabled-source"],
)
def test_bad_input_fails_clearly(
    lab: dict[str, Any], kms: Any, new_key: Any, destination: str, words: list[str]
) -> None:
    seeded = {key["alias"].split("-")[1]: key["arn"] for key in lab["seed"]["aws_kms"]["keys"]}
    source, target = new_key(), new_key()
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "deks.sqlite"
        seed_store(kms, str(db), source["Arn"], 5, unique=5)
        before = store_rows(str(db))
        if destination == "{source-disabled}":
            kms.disable_key(KeyId=source["KeyId"])
            destination = target["Arn"]
        destination = seeded.get(destination.strip("{}"), destination)

        result = run_module(MODULE, {"destination_key": destination, "store": store_option(db)})

        assert result.get("failed"), result
        for word in words:
            assert word.lower() in result["msg"].lower(), result["msg"]
        assert store_rows(str(db)) == before
