"""Helpers for the AWS KMS integration tests: naming, reference forms, a lab-shaped store and a boto3 oracle."""

from __future__ import annotations

import base64
import datetime as dt
import os
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

TODAY = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")


def unique_alias(key_type: str = "kek") -> str:
    """An alias that follows the naming rule and no other test uses."""
    return f"alias/test-k{uuid.uuid4().hex[:10]}-{key_type}-{TODAY}"


def alias_arn(kms_client: Any, alias: str) -> str:
    account = kms_client.describe_key(KeyId=alias)["KeyMetadata"]["AWSAccountId"]
    return f"arn:aws:kms:{kms_client.meta.region_name}:{account}:{alias}"


def reference_forms(key: dict[str, Any]) -> dict[str, str]:
    return {"key_id": key["KeyId"], "key_arn": key["Arn"], "alias": key["Alias"], "alias_arn": key["AliasArn"]}


def seed_store(
    kms: Any, path: str, key_arn: str, count: int, unique: int = 500, table: str = "kms_data_keys", prefix: str = "dk"
) -> dict[str, bytes]:
    """A SQLite store shaped like the lab's (id, key_ref = key ARN, ciphertext = base64, context NULL).

    ``unique`` distinct data keys are wrapped by KMS and each is stored under count/unique ids, which keeps
    seeding fast while every row still goes through its own ReEncrypt. Returns id -> plaintext.
    """

    def wrap(index: int) -> tuple[bytes, str]:
        plaintext = os.urandom(32)
        blob = kms.encrypt(KeyId=key_arn, Plaintext=plaintext)["CiphertextBlob"]
        return plaintext, base64.b64encode(blob).decode()

    with ThreadPoolExecutor(max_workers=16) as pool:
        wrapped = list(pool.map(wrap, range(min(unique, count))))
    rows, plaintexts = [], {}
    for index in range(count):
        plaintext, ciphertext = wrapped[index % len(wrapped)]
        item_id = f"{prefix}-{index:06d}"
        rows.append((item_id, key_arn, ciphertext))
        plaintexts[item_id] = plaintext
    with sqlite3.connect(path) as connection:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, key_ref TEXT NOT NULL, "
            "ciphertext TEXT NOT NULL, context TEXT)"
        )
        connection.executemany(f"INSERT INTO {table} (id, key_ref, ciphertext, context) VALUES (?, ?, ?, NULL)", rows)
    return plaintexts


def store_rows(path: str, table: str = "kms_data_keys") -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT id, key_ref, ciphertext FROM {table} ORDER BY id").fetchall()


def decrypt_all(kms: Any, rows: list[tuple[str, str, str]]) -> dict[str, tuple[str, bytes]]:
    """id -> (KeyId KMS reports, plaintext), straight from boto3."""

    def decrypt(row: tuple[str, str, str]) -> tuple[str, tuple[str, bytes]]:
        reply = kms.decrypt(CiphertextBlob=base64.b64decode(row[2]))
        return row[0], (reply["KeyId"], reply["Plaintext"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(pool.map(decrypt, rows))
