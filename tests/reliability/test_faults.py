"""Fault injection: ansible-playbook killed with SIGKILL at seeded random moments of a re-wrap or re-encrypt, then run
again; the end state must be the one an uninterrupted run reaches.

Each operation is first run once uninterrupted (the reference, and the calibration of when its batches commit).
Each trial then starts the same playbook on a fresh copy of the store, kills the whole process tree at a moment
drawn from a seeded generator between just before the first commit and just after the last, reruns to completion
and checks with an independent oracle: every data key decrypts (hvac / boto3) to the plaintext recorded at setup
(plaintexts live only in this process), every ciphertext is at the target, the progress record counts each data key
exactly once (none wrapped twice), and the histogram equals the reference run's.
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.integration.aws_kms.kms_helpers import seed_store as seed_kms_store
from tests.integration.aws_kms.kms_helpers import unique_alias
from tests.reliability import canaries, tally
from tests.reliability.harness import kill_at, run_to_end, timed_run, write_playbook
from tests.support.vault_deks import seed_store as seed_vault_store
from tests.support.vault_deks import vault_client

pytestmark = [pytest.mark.lab, pytest.mark.area("faults")]

VAULT_DEKS = 3000  # 1000 at each of v1, v2, v3: 2000 to re-wrap to v3
KMS_DEKS = 600


@dataclass
class Operation:
    """One fault-injected operation: how to make a fresh store, its playbook and how to read the outcome."""

    name: str
    template: Path
    plaintexts: dict[str, Any]
    pending: int
    task: Callable[[Path], dict[str, Any]]
    store_file: Callable[[Path], Path]
    committed: Callable[[Path], int]
    first_commit: Callable[[Path], bool]
    verify: Callable[[Path], dict[str, Any]]
    job_done: Callable[[Path], int]
    reference: dict[str, Any] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)

    def fresh(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        store = self.store_file(folder)
        shutil.copyfile(self.template, store)
        return store


def sqlite_rows(path: Path, table: str = "data_keys") -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(path, timeout=30) as connection:
        return connection.execute(f"SELECT id, key_ref, ciphertext, context FROM {table} ORDER BY id").fetchall()


def progress_done(path: Path, job_prefix: str) -> int:
    with sqlite3.connect(path, timeout=30) as connection:
        try:
            rows = connection.execute("SELECT job, done FROM keyops_progress").fetchall()
        except sqlite3.OperationalError:
            return 0
    return sum(done for job, done in rows if job.startswith(job_prefix))


def has_progress(path: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT count(*) FROM keyops_progress").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    """The store as a reader sees it: the file, with the committed journal entries of a killed run applied."""
    rows = {json.loads(line)["id"]: json.loads(line) for line in path.read_text().splitlines() if line.strip()}
    journal = Path(str(path) + ".keyops-journal")
    if journal.exists():
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            if "id" in entry:
                rows[entry["id"]].update(ciphertext=entry["ciphertext"], key_ref=entry["key_ref"])
    return [rows[key] for key in sorted(rows)]


def jsonl_progress_done(path: Path) -> int:
    journal = Path(str(path) + ".keyops-journal")
    done: dict[tuple[str, str], int] = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            if "progress" in entry:
                done[(entry["progress"]["job"], entry["progress"]["partition"])] = entry["progress"]["done"]
    return sum(done.values())


def vault_decrypt(client: Any, name: str, rows: list[tuple[str, str, str | None]]) -> dict[str, str]:
    """id -> plaintext (or an error text), straight from hvac's batch decrypt."""
    import hvac.exceptions

    plaintexts: dict[str, str] = {}
    for start in range(0, len(rows), 400):
        chunk = rows[start : start + 400]
        items = [{"ciphertext": ct, **({"context": ctx} if ctx else {})} for _unused, ct, ctx in chunk]
        try:
            answer = client.secrets.transit.decrypt_data(name, ciphertext=None, batch_input=items)
        except hvac.exceptions.InvalidRequest as error:
            answer = json.loads(error.text)
        for (item_id, _unused1, _unused2), result in zip(chunk, answer["data"]["batch_results"], strict=True):
            plaintexts[item_id] = result.get("plaintext") or f"error: {result.get('error')}"
    return plaintexts


def version_of(ciphertext: str) -> str:
    return ciphertext.split(":")[1] if ciphertext.startswith("vault:v") else "invalid"


@pytest.fixture(scope="module")
def vault_deks(lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A transit key with 3 versions and a SQLite store of 3000 data keys over them (plaintexts in memory only)."""
    client = vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])
    folder = tmp_path_factory.mktemp("vault-deks")
    name = f"faults-r{random.SystemRandom().randrange(10**8)}-kek-20261203"
    template = folder / "template.sqlite"
    plaintexts = seed_vault_store(client, str(template), name, VAULT_DEKS, versions=3)
    canaries.add_plaintexts(plaintexts.values())
    lines = [
        json.dumps({"id": item_id, "key_ref": ref, "ciphertext": ct, "context": ctx}, sort_keys=True)
        for item_id, ref, ct, ctx in sqlite_rows(template)
    ]
    template_jsonl = folder / "template.jsonl"
    template_jsonl.write_text("\n".join(lines) + "\n")
    return {"client": client, "name": name, "sqlite": template, "jsonl": template_jsonl, "plaintexts": plaintexts}


def vault_operation(kind: str, deks: dict[str, Any]) -> Operation:
    name, client, plaintexts = deks["name"], deks["client"], deks["plaintexts"]
    target = "v3"

    def rows(store: Path) -> list[tuple[str, str, str | None]]:
        if kind == "sqlite":
            return [(item_id, ct, ctx) for item_id, _unused, ct, ctx in sqlite_rows(store)]
        return [(row["id"], row["ciphertext"], row.get("context")) for row in jsonl_rows(store)]

    def committed(store: Path) -> int:
        return sum(1 for _unused1, ct, _unused2 in rows(store) if ct.startswith(f"vault:{target}:")) - (
            VAULT_DEKS - 2000
        )

    def verify(store: Path) -> dict[str, Any]:
        current = rows(store)
        decrypted = vault_decrypt(client, name, current)
        return {
            "count": len(current),
            "histogram": dict(Counter(version_of(ct) for _unused1, ct, _unused2 in current)),
            "lost": sum(1 for item_id, plaintext in plaintexts.items() if decrypted.get(item_id) != plaintext),
            "not_at_target": sum(1 for _unused1, ct, _unused2 in current if version_of(ct) != target),
            "journal_left": Path(str(store) + ".keyops-journal").exists()
            and kind == "jsonl"
            and committed_journal(store),
        }

    def committed_journal(store: Path) -> bool:
        journal = Path(str(store) + ".keyops-journal")
        return any('"ciphertext"' in line for line in journal.read_text().splitlines())

    def task(store: Path) -> dict[str, Any]:
        return {
            "name": "rewrap",
            "keyops.runbooks.vault_transit_rewrap": {
                "name": name,
                "store": {"type": kind, "path": str(store)},
                # Small requests stretch the run over a couple of seconds, so kills land between many commits.
                "batch_size": 8,
                "change_ref": "CHG-FAULTS",
            },
        }

    return Operation(
        name=f"vault_transit_rewrap/{kind}",
        template=deks[kind],
        plaintexts=plaintexts,
        pending=2000,
        task=task,
        store_file=lambda folder: folder / f"deks.{kind}",
        committed=committed,
        first_commit=has_progress
        if kind == "sqlite"
        else (lambda store: Path(str(store) + ".keyops-journal").exists()),
        verify=verify,
        job_done=(lambda store: progress_done(store, "rewrap:")) if kind == "sqlite" else jsonl_progress_done,
    )


@pytest.fixture(scope="module")
def kms_deks(lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    kms = boto3.client(
        "kms",
        endpoint_url=lab["AWS_ENDPOINT_URL"],
        region_name=lab["AWS_DEFAULT_REGION"],
        aws_access_key_id=lab["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=lab["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=32),
    )
    keys = []
    for _unused in range(2):
        meta = kms.create_key()["KeyMetadata"]
        alias = unique_alias("kek")
        kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
        keys.append(meta)
    folder = tmp_path_factory.mktemp("kms-deks")
    template = folder / "template.sqlite"
    plaintexts = seed_kms_store(kms, str(template), keys[0]["Arn"], KMS_DEKS, unique=100, table="data_keys")
    canaries.add_plaintexts(base64.b64encode(plaintext).decode() for plaintext in plaintexts.values())
    return {
        "kms": kms,
        "source": keys[0]["Arn"],
        "dest": keys[1]["Arn"],
        "template": template,
        "plaintexts": plaintexts,
    }


def kms_operation(deks: dict[str, Any]) -> Operation:
    kms, dest, plaintexts = deks["kms"], deks["dest"], deks["plaintexts"]
    original = {item_id: ct for item_id, _unused1, ct, _unused2 in sqlite_rows(deks["template"])}

    def committed(store: Path) -> int:
        return sum(1 for _unused1, ref, _unused2, _unused3 in sqlite_rows(store) if ref == dest)

    def verify(store: Path) -> dict[str, Any]:
        rows = sqlite_rows(store)

        def decrypt(row: tuple[str, str, str, str | None]) -> tuple[str, tuple[str, bytes]]:
            reply = kms.decrypt(CiphertextBlob=base64.b64decode(row[2]))
            return row[0], (reply["KeyId"], reply["Plaintext"])

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=16) as pool:
            decrypted = dict(pool.map(decrypt, rows))
        return {
            "count": len(rows),
            "histogram": dict(
                Counter("dest" if ref == dest else "other" for _unused1, ref, _unused2, _unused3 in rows)
            ),
            "lost": sum(1 for item_id, plaintext in plaintexts.items() if decrypted.get(item_id) != (dest, plaintext)),
            "not_at_target": sum(1 for item_id, ref, ct, _unused in rows if ref != dest or ct == original[item_id]),
            "journal_left": False,
        }

    def task(store: Path) -> dict[str, Any]:
        return {
            "name": "reencrypt",
            "keyops.runbooks.aws_kms_reencrypt": {
                "destination_key": dest,
                "store": {"type": "sqlite", "path": str(store)},
                "batch_size": 20,
                "max_workers": 8,
                "change_ref": "CHG-FAULTS",
            },
        }

    return Operation(
        name="aws_kms_reencrypt/sqlite",
        template=deks["template"],
        plaintexts=plaintexts,
        pending=KMS_DEKS,
        task=task,
        store_file=lambda folder: folder / "deks.sqlite",
        committed=committed,
        first_commit=has_progress,
        verify=verify,
        job_done=lambda store: progress_done(store, "aws_kms_reencrypt "),
    )


@pytest.fixture(scope="module")
def operations(
    vault_deks: dict[str, Any], kms_deks: dict[str, Any], outputs: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Operation]:
    """Each operation once, uninterrupted: the reference end state and the calibration of the kill window."""
    made = {
        "rewrap-sqlite": vault_operation("sqlite", vault_deks),
        "rewrap-jsonl": vault_operation("jsonl", vault_deks),
        "reencrypt-sqlite": kms_operation(kms_deks),
    }
    for label, operation in made.items():
        folder = tmp_path_factory.mktemp(f"reference-{label}")
        store = operation.fresh(folder)
        playbook = write_playbook(folder, label, [operation.task(store)])
        run, first, last = timed_run(
            playbook,
            outputs,
            lambda store=store, op=operation: op.first_commit(store),
            lambda store=store, op=operation: op.committed(store) >= op.pending,
        )
        assert run.rc == 0, f"{label} reference run failed:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
        checked = operation.verify(store)
        assert checked["lost"] == 0 and checked["not_at_target"] == 0, checked
        assert operation.job_done(store) == operation.pending
        operation.reference = {"count": checked["count"], "histogram": checked["histogram"]}
        # From a little before the first commit (the module reading the key and the store) to a little after the
        # last one (the module finishing, the playbook ending).
        operation.window = (max(first - 0.5, 0.0), last + 0.3)
        print(f"\n{label}: reference run, first commit at {first:.2f} s, last at {last:.2f} s")
    return made


@pytest.mark.parametrize("label", ["rewrap-sqlite", "rewrap-jsonl", "reencrypt-sqlite"])
def test_killed_at_a_random_moment_then_rerun_ends_like_an_uninterrupted_run(
    operations: dict[str, Operation],
    label: str,
    trial: int,
    request: pytest.FixtureRequest,
    outputs: Path,
    tmp_path: Path,
) -> None:
    operation = operations[label]
    seed = request.config.getoption("--fault-seed")
    rng = random.Random(f"{seed}/{label}/{trial}")
    delay = rng.uniform(*operation.window)
    store = operation.fresh(tmp_path)
    playbook = write_playbook(tmp_path, label, [operation.task(store)])
    tally.add("faults", "trials")

    _killed, alive = kill_at(playbook, outputs, delay)
    at_kill = operation.committed(store)
    if alive and 0 < at_kill < operation.pending:
        tally.add("faults", "killed mid-run")

    rerun = run_to_end(playbook, outputs)
    result = rerun.results().get(operation.task(store)["name"], {})
    checked = operation.verify(store)
    done_in_job = operation.job_done(store)
    # Counted once each across the killed run and the rerun: more means a data key was wrapped twice.
    wrapped_twice = max(done_in_job - operation.pending, 0)
    differs = int({"count": checked["count"], "histogram": checked["histogram"]} != operation.reference)
    tally.add("faults", "data keys verified", checked["count"])
    tally.add("faults", "lost", checked["lost"])
    tally.add("faults", "wrapped twice", wrapped_twice)
    tally.add("faults", "end state differs", differs)

    context = f"{label} trial {trial}: killed {delay:.2f} s into the module (alive={alive}), {at_kill} committed then"
    print(f"\n{context}")
    assert rerun.rc == 0 and not result.get("failed"), f"{context}; rerun failed: {result.get('msg')}"
    assert checked["lost"] == 0, f"{context}: {checked['lost']} data keys no longer decrypt to their plaintext"
    assert checked["not_at_target"] == 0, f"{context}: {checked['not_at_target']} data keys not at the target"
    assert done_in_job == operation.pending, f"{context}: progress counts {done_in_job} of {operation.pending}"
    assert not differs, f"{context}: end state {checked} differs from the reference {operation.reference}"
    assert not checked["journal_left"], f"{context}: the JSON lines journal was not folded into the file"
    tally.add("faults", "trials passed")


def test_a_torn_journal_line_does_not_swallow_the_next_runs_commits(tmp_path: Path) -> None:
    """A kill in the middle of a JSON lines journal write leaves a torn last line. The next run must not append
    after it: its own commits would then sit on the torn line and vanish on the replay after a second kill."""
    from ansible_collections.keyops.runbooks.plugins.module_utils import dek_store

    tally.add("faults", "trials")
    path = tmp_path / "deks.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"k{n}", "key_ref": "transit/k", "ciphertext": f"vault:v1:c{n}"}) + "\n" for n in range(3)
        )
    )
    first = dek_store.JsonLinesStore(str(path))
    first.commit([dek_store.Update("k0", "vault:v1:c0", "vault:v2:n0", "transit/k")], dek_store.Progress("job", "0/1"))
    with open(first.journal_path, "a", encoding="utf-8") as journal:  # the first run dies mid-write
        journal.write('{"ciphertext": "vault:v2:n1", "id": "k1", "key_r')

    second = dek_store.JsonLinesStore(str(path))  # the second run commits one batch, then dies before finish()
    second.commit(
        [dek_store.Update("k2", "vault:v1:c2", "vault:v2:n2", "transit/k")], second.load_progress("job", "0/1")
    )
    third = dek_store.JsonLinesStore(str(path))

    assert third.overlay == {"k0": ("vault:v2:n0", "transit/k"), "k2": ("vault:v2:n2", "transit/k")}
    assert third.load_progress("job", "0/1").done == 2
    tally.add("faults", "trials passed")
