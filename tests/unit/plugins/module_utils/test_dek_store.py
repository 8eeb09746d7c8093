import json
import os
import sqlite3

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import (
    WHOLE,
    JsonLinesStore,
    Partition,
    Progress,
    Update,
    open_store,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput


@pytest.fixture
def sqlite_path(tmp_path):
    path = tmp_path / "deks.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE data_keys (id TEXT PRIMARY KEY, key_ref TEXT NOT NULL, ciphertext TEXT NOT NULL,"
            " context TEXT)"
        )
        db.executemany(
            "INSERT INTO data_keys VALUES (?, ?, ?, NULL)",
            [(f"dk-{n:05d}", "transit/k", f"vault:v1:{n}") for n in range(250)],
        )
    return str(path)


@pytest.fixture
def jsonl_path(tmp_path):
    path = tmp_path / "deks.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"dk-{n:05d}", "key_ref": "k", "ciphertext": f"vault:v1:{n}"}) + "\n" for n in range(250)
        )
    )
    return str(path)


def rewrap_all(store, job, partition=WHOLE, stop_after=None):
    progress = store.load_progress(job, partition.label) or Progress(job, partition.label)
    for batch_number, (items, cursor) in enumerate(store.batches(40, partition, after=progress.cursor), start=1):
        updates = [
            Update(item.id, item.ciphertext, item.ciphertext.replace("v1", "v2"), "k2")
            for item in items
            if item.ciphertext.startswith("vault:v1:")
        ]
        progress.cursor = cursor
        store.commit(updates, progress)
        if stop_after and batch_number == stop_after:
            return progress
    store.finish()
    return progress


@pytest.mark.parametrize("kind", ["sqlite", "jsonl"])
def test_interrupted_rewrap_resumes_without_loss_or_double_wrap(kind, sqlite_path, jsonl_path):
    path = sqlite_path if kind == "sqlite" else jsonl_path
    store = open_store({"type": kind, "path": path})
    first = rewrap_all(store, "job", stop_after=2)
    assert first.done == 80
    store.close()

    store = open_store({"type": kind, "path": path})  # a new run after the kill
    final = rewrap_all(store, "job")
    assert final.done == 250
    ciphertexts = [item.ciphertext for items, _cursor in store.batches(1000) for item in items]
    assert len(ciphertexts) == 250
    assert all(text.startswith("vault:v2:") for text in ciphertexts)


def test_compare_and_swap_never_overwrites_a_changed_ciphertext(sqlite_path):
    store = open_store({"type": "sqlite", "path": sqlite_path})
    applied = store.commit([Update("dk-00001", "vault:v9:stale", "vault:v2:x", "k")], Progress("j", "0/1"))
    assert applied == 0
    assert next(store.batches(2))[0][1].ciphertext == "vault:v1:1"


def test_a_batch_applies_only_its_unchanged_items_and_counts_them(sqlite_path):
    store = open_store({"type": "sqlite", "path": sqlite_path})
    progress = Progress("j", "0/1", done=5)
    updates = [
        Update("dk-00001", "vault:v1:1", "vault:v2:a", "k2"),
        Update("dk-00002", "vault:v9:someone-else", "vault:v2:b", "k2"),
        Update("dk-00003", "vault:v1:3", "vault:v2:c", "k2"),
    ]
    assert store.commit(updates, progress) == 2
    assert progress.done == 7
    assert store.commit([], progress) == 0
    store.finish()
    found = {item.id: item.ciphertext for items, _cursor in store.batches(1000) for item in items}
    assert (found["dk-00001"], found["dk-00002"], found["dk-00003"]) == ("vault:v2:a", "vault:v1:2", "vault:v2:c")
    assert store.load_progress("j", "0/1").done == 7


def test_partitions_are_disjoint_and_complete(sqlite_path):
    store = open_store({"type": "sqlite", "path": sqlite_path})
    seen = []
    for index in range(3):
        seen += [item.id for items, _cursor in store.batches(50, Partition(index, 3)) for item in items]
    assert len(seen) == len(set(seen)) == 250


def test_jsonl_finish_leaves_no_journal_behind_and_keeps_mode(jsonl_path):
    os.chmod(jsonl_path, 0o600)
    store = JsonLinesStore(jsonl_path)
    rewrap_all(store, "job")
    assert oct(os.stat(jsonl_path).st_mode & 0o777) == "0o600"
    with open(jsonl_path) as stream:
        assert all("v2" in json.loads(line)["ciphertext"] for line in stream)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"type": "sqlite", "path": "/nonexistent.sqlite"}, "does not exist"),
        ({"type": "url", "url": "postgresql://db/x"}, "not supported"),
        ({"type": "sqlite", "path": None, "table": "x; DROP"}, "does not exist"),
    ],
)
def test_bad_store_options_fail_clearly(options, fragment):
    with pytest.raises(InvalidInput, match=fragment):
        open_store(options)


def test_unsafe_table_name_is_refused(sqlite_path):
    with pytest.raises(InvalidInput, match="plain SQL identifier"):
        open_store({"type": "sqlite", "path": sqlite_path, "table": "data_keys; DROP TABLE x"})


def test_bad_partition_is_refused():
    with pytest.raises(InvalidInput, match="partition_index"):
        Partition(3, 3)
