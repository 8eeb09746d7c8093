"""AWS KMS figures: re-encrypt throughput against raw boto3, and inventory time, on moto.

    source .lab/env.sh && .venv/bin/python bench/aws_kms.py --data-keys 5000 --inventory-keys 500

Re-encrypt: two stores seeded alike under key A; the raw baseline is a boto3 ThreadPoolExecutor.map of
ReEncrypt over every row with one UPDATE transaction per batch; keyops runs the module's own code
(kms_reencrypt.reencrypt: streaming, CAS commit, progress, verification) with the same pool size. Prints data
keys per second and the ratio keyops / raw.

Inventory: a private moto server (its own port, stopped at the end) gets N keys, created once here because
moto makes about 12 keys a second; then aws_kms_key_info's code reads them all, with the bounded pool and with
one worker.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from ansible_collections.keyops.runbooks.plugins.module_utils.backends.aws_kms import connect  # noqa: E402
from ansible_collections.keyops.runbooks.plugins.module_utils.kms_reencrypt import reencrypt  # noqa: E402


def connection(endpoint: str) -> dict:
    return {
        "endpoint_url": endpoint,
        "region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "retry_mode": "adaptive",
        "max_attempts": 10,
    }


def seed(kms, path: str, key_arn: str, count: int, unique: int = 500) -> None:
    def wrap(_unused: int) -> str:
        return base64.b64encode(kms.encrypt(KeyId=key_arn, Plaintext=os.urandom(32))["CiphertextBlob"]).decode()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        blobs = list(pool.map(wrap, range(unique)))
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE kms_data_keys (id TEXT PRIMARY KEY, key_ref TEXT, ciphertext TEXT, context TEXT)")
        db.executemany(
            "INSERT INTO kms_data_keys VALUES (?, ?, ?, NULL)",
            [(f"dk-{i:06d}", key_arn, blobs[i % unique]) for i in range(count)],
        )


def raw(kms, path: str, dest: str, workers: int, batch: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    started = time.perf_counter()
    after = ""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        while True:
            rows = db.execute(
                "SELECT id, ciphertext FROM kms_data_keys WHERE id > ? ORDER BY id LIMIT ?", (after, batch)
            ).fetchall()
            if not rows:
                break
            replies = pool.map(
                lambda row: kms.re_encrypt(CiphertextBlob=base64.b64decode(row[1]), DestinationKeyId=dest)[
                    "CiphertextBlob"
                ],
                rows,
            )
            db.execute("BEGIN")
            db.executemany(
                "UPDATE kms_data_keys SET ciphertext = ?, key_ref = ? WHERE id = ?",
                [(base64.b64encode(blob).decode(), dest, row[0]) for row, blob in zip(rows, replies, strict=True)],
            )
            db.execute("COMMIT")
            after = rows[-1][0]
    return time.perf_counter() - started


def bench_reencrypt(endpoint: str, count: int, workers: int, batch: int) -> None:
    params = connection(endpoint)
    kms = boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name=params["region"],
        aws_access_key_id=params["access_key"],
        aws_secret_access_key=params["secret_key"],
        config=Config(max_pool_connections=workers, retries={"mode": "adaptive", "max_attempts": 10}),
    )
    key_a = kms.create_key()["KeyMetadata"]["Arn"]
    key_b = kms.create_key()["KeyMetadata"]["Arn"]
    with tempfile.TemporaryDirectory() as folder:
        raw_db, keyops_db = os.path.join(folder, "raw.sqlite"), os.path.join(folder, "keyops.sqlite")
        seed(kms, raw_db, key_a, count)
        seed(kms, keyops_db, key_a, count)
        raw_seconds = raw(kms, raw_db, key_b, workers, batch)
        client = connect(params, max_pool_connections=workers)
        started = time.perf_counter()
        result = reencrypt(
            client,
            {
                **params,
                "destination_key": key_b,
                "source_keys": [],
                "batch_size": batch,
                "max_workers": workers,
                "job": None,
                "progress_file": None,
                "policy": None,
                "store": {"type": "sqlite", "path": keyops_db, "table": "kms_data_keys"},
                "partition_index": 0,
                "partition_count": 1,
                "approvals": [],
                "change_ref": None,
            },
            False,
            print,
        )
        keyops_seconds = time.perf_counter() - started
    assert result["counts"]["reencrypted"] == count
    print(f"re-encrypt {count} data keys, pool {workers}, batch {batch}:")
    print(f"  raw boto3 : {raw_seconds:7.2f} s  {count / raw_seconds:7.1f}/s")
    print(f"  keyops    : {keyops_seconds:7.2f} s  {count / keyops_seconds:7.1f}/s  (incl. before/after counts)")
    print(f"  ratio keyops/raw: {raw_seconds / keyops_seconds:.2f}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_inventory(count: int, workers: int) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _unused in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        params = connection(endpoint)
        kms = boto3.client(
            "kms",
            endpoint_url=endpoint,
            region_name=params["region"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(max_pool_connections=16),
        )
        started = time.perf_counter()

        def make(index: int) -> None:
            key_id = kms.create_key(Tags=[{"TagKey": "owner", "TagValue": "bench"}])["KeyMetadata"]["KeyId"]
            kms.create_alias(AliasName=f"alias/bench-k{index}-kek-20261203", TargetKeyId=key_id)
            if index % 2:
                kms.enable_key_rotation(KeyId=key_id)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(make, range(count)))
        print(f"created {count} keys in moto in {time.perf_counter() - started:.1f} s (setup, not measured)")
        for pool_size in (workers, 1):
            client = connect(params, max_pool_connections=pool_size)
            started = time.perf_counter()
            snapshots, _unused = client.inventory(max_workers=pool_size)
            seconds = time.perf_counter() - started
            print(
                f"inventory of {len(snapshots)} keys, pool {pool_size}: {seconds:.2f} s "
                f"({len(snapshots) / seconds:.0f} keys/s)"
            )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-keys", type=int, default=5000)
    parser.add_argument("--inventory-keys", type=int, default=500)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        sys.exit("source the lab's env.sh first (AWS_ENDPOINT_URL is not set)")
    if args.data_keys:
        bench_reencrypt(endpoint, args.data_keys, args.workers, args.batch)
    if args.inventory_keys:
        bench_inventory(args.inventory_keys, 8)


if __name__ == "__main__":
    main()
