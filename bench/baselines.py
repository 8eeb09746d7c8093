"""The baselines bench/run.py measures the collection against: what a careful engineer would script by hand.

    python bench/baselines.py rewrap --store S --key K --batch B
    python bench/baselines.py reencrypt --store S --table T --dest ARN --workers W --batch B

Each runs in a process of its own (bench/run.py times it and reads its peak RSS, like the module's) and prints one
JSON line with what it did. No checks, no resume, no compare-and-swap, no progress: the practical limit.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import sqlite3
import sys


def rewrap(args: argparse.Namespace) -> dict:
    """A raw hvac batch loop: read a batch, rewrap it, write it back in one transaction."""
    import hvac
    import requests

    session = requests.Session()
    session.trust_env = False
    client = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"], session=session, timeout=60)
    transit = client.secrets.transit
    latest = transit.read_key(args.key)["data"]["latest_version"]
    db = sqlite3.connect(args.store, isolation_level=None)
    done, after = 0, ""
    while True:
        rows = db.execute(
            "SELECT id, ciphertext FROM data_keys WHERE id > ? ORDER BY id LIMIT ?", (after, args.batch)
        ).fetchall()
        if not rows:
            break
        after = rows[-1][0]
        answer = transit.rewrap_data(
            args.key,
            ciphertext=None,
            batch_input=[{"ciphertext": ciphertext, "key_version": latest} for _unused, ciphertext in rows],
        )
        db.execute("BEGIN")
        db.executemany(
            "UPDATE data_keys SET ciphertext = ? WHERE id = ?",
            [
                (result["ciphertext"], item_id)
                for (item_id, _unused), result in zip(rows, answer["data"]["batch_results"], strict=True)
            ],
        )
        db.execute("COMMIT")
        done += len(rows)
    db.close()
    return {"done": done}


def reencrypt(args: argparse.Namespace) -> dict:
    """Raw boto3 ReEncrypt: a thread pool of ``--workers`` over each batch, or a plain loop with one worker."""
    import boto3
    from botocore.config import Config

    kms = boto3.client(
        "kms",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL"),
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(max_pool_connections=args.workers, retries={"mode": "adaptive", "max_attempts": 10}),
    )

    def one(row: tuple[str, str]) -> bytes:
        return kms.re_encrypt(CiphertextBlob=base64.b64decode(row[1]), DestinationKeyId=args.dest)["CiphertextBlob"]

    db = sqlite3.connect(args.store, isolation_level=None)
    table = args.table
    done, after = 0, ""
    pool = concurrent.futures.ThreadPoolExecutor(args.workers) if args.workers > 1 else None
    try:
        while True:
            rows = db.execute(
                f"SELECT id, ciphertext FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (after, args.batch)
            ).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            blobs = list(pool.map(one, rows)) if pool else [one(row) for row in rows]
            db.execute("BEGIN")
            db.executemany(
                f"UPDATE {table} SET ciphertext = ?, key_ref = ? WHERE id = ?",
                [(base64.b64encode(blob).decode(), args.dest, row[0]) for row, blob in zip(rows, blobs, strict=True)],
            )
            db.execute("COMMIT")
            done += len(rows)
    finally:
        if pool:
            pool.shutdown()
    db.close()
    return {"done": done}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("rewrap")
    one.add_argument("--store", required=True)
    one.add_argument("--key", required=True)
    one.add_argument("--batch", type=int, required=True)
    two = commands.add_parser("reencrypt")
    two.add_argument("--store", required=True)
    two.add_argument("--table", default="kms_data_keys")
    two.add_argument("--dest", required=True)
    two.add_argument("--workers", type=int, required=True)
    two.add_argument("--batch", type=int, required=True)
    args = parser.parse_args()
    result = {"rewrap": rewrap, "reencrypt": reencrypt}[args.command](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
