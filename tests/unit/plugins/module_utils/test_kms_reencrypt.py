"""The re-encrypt walk with KMS replies moto cannot give (denied, wrong key): what is committed, what is kept."""

from __future__ import annotations

import base64
import concurrent.futures
import sqlite3
import time
from pathlib import Path

import pytest
from botocore.stub import Stubber

from ansible_collections.keyops.runbooks.plugins.module_utils import kms_reencrypt
from ansible_collections.keyops.runbooks.plugins.module_utils.backends import aws_kms
from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import DataKey, Partition, Progress, open_store
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import AccessDenied

SOURCE = "arn:aws:kms:us-east-1:111122223333:key/11111111-1111-1111-1111-111111111111"
DEST = "arn:aws:kms:us-east-1:111122223333:key/22222222-2222-2222-2222-222222222222"
CONNECTION = {
    "region": "us-east-1",
    "access_key": "AKIDEXAMPLE",
    "secret_key": "example-secret",
    "retry_mode": "standard",
    "max_attempts": 1,
}


def make_store(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "deks.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE kms_data_keys (id TEXT PRIMARY KEY, key_ref TEXT, ciphertext TEXT, context TEXT)"
        )
        connection.executemany(
            "INSERT INTO kms_data_keys VALUES (?, ?, ?, NULL)",
            [(f"dk-{index}", SOURCE, base64.b64encode(f"old-{index}".encode()).decode()) for index in range(count)],
        )
    return path


def rows(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT id, key_ref, ciphertext FROM kms_data_keys ORDER BY id").fetchall()


def run_walk(
    tmp_path: Path, count: int, replies: list[dict | str]
) -> tuple[Path, Progress, kms_reencrypt.Tally, Exception | None]:
    path = make_store(tmp_path, count)
    client = aws_kms.connect(CONNECTION)
    dest = aws_kms.KeySnapshot(
        arn=DEST,
        key_id=DEST.rsplit("/", 1)[1],
        region="us-east-1",
        account="111122223333",
        key_spec="SYMMETRIC_DEFAULT",
        key_usage="ENCRYPT_DECRYPT",
        origin="AWS_KMS",
        manager="CUSTOMER",
        key_state="Enabled",
        enabled=True,
    )
    progress = Progress("job", "0/1")
    tally = kms_reencrypt.Tally()
    stopped = None
    with Stubber(client.client) as stubber:
        for reply in replies:
            if isinstance(reply, str):
                stubber.add_client_error("re_encrypt", reply, http_status_code=400)
            else:
                stubber.add_response("re_encrypt", reply)
        store = open_store({"type": "sqlite", "path": str(path), "table": "kms_data_keys"})
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            worker = kms_reencrypt.Reencryptor(client, dest, pool)
            try:
                kms_reencrypt.walk(
                    store,
                    Partition(),
                    worker,
                    kms_reencrypt.KeyRefs(client),
                    lambda arn: True,
                    {SOURCE},
                    progress,
                    None,
                    tally,
                    count,
                    {"batch_size": 10},
                    time.monotonic(),
                )
            except AccessDenied as error:
                stopped = error
        store.close()
    return path, progress, tally, stopped


def reply(key_id: str = DEST, blob: bytes = b"new") -> dict:
    return {"CiphertextBlob": blob, "SourceKeyId": SOURCE, "KeyId": key_id}


def test_answer_naming_another_key_keeps_the_old_ciphertext(tmp_path: Path) -> None:
    path, progress, tally, _unused = run_walk(tmp_path, 3, [reply(), reply(key_id=SOURCE), reply()])

    assert tally.reencrypted == 2 and tally.failed == 1 and tally.failure_codes == {"WrongDestinationKey": 1}
    stored = rows(path)
    assert sorted(row[1] for row in stored) == sorted([DEST, DEST, SOURCE])
    kept = next(row for row in stored if row[1] == SOURCE)
    assert base64.b64decode(kept[2]).startswith(b"old-") and tally.failed_ids == [kept[0]]
    assert progress.cursor == "dk-2"


def test_denied_reencrypt_stops_and_resumes_from_before_the_batch(tmp_path: Path) -> None:
    path, progress, tally, stopped = run_walk(tmp_path, 3, [reply(), "AccessDeniedException", reply()])

    assert stopped is not None and "kms:ReEncrypt" in stopped.message
    assert tally.reencrypted == 2
    assert sorted(row[1] for row in rows(path)) == sorted([DEST, DEST, SOURCE])
    # The cursor stays before the batch, so a resumed run reads it again and finishes the denied item.
    assert progress.cursor is None and progress.done == 2


@pytest.mark.parametrize(
    ("context", "expected"),
    [(None, None), ("", None), ('{"tenant": "a", "n": 1}', {"tenant": "a", "n": "1"})],
)
def test_encryption_context_from_the_store(context: str | None, expected: dict | None) -> None:
    assert kms_reencrypt.encryption_context(DataKey("x", SOURCE, "", context)) == expected


@pytest.mark.parametrize("context", ["not json", "[1, 2]"])
def test_bad_encryption_context_is_an_item_failure(context: str) -> None:
    with pytest.raises(kms_reencrypt.ItemFailure):
        kms_reencrypt.encryption_context(DataKey("x", SOURCE, "", context))


def test_predicted_histogram_moves_counts_to_the_destination() -> None:
    before = {SOURCE: 7, DEST: 3}

    assert kms_reencrypt.predicted_histogram(before, {SOURCE: 7, DEST: 3}, DEST) == {DEST: 10}
    assert kms_reencrypt.predicted_histogram(before, {DEST: 3}, DEST) == before
