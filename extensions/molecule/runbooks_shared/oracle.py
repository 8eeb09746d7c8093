#!/usr/bin/env python
# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set-up and independent reads for the rotation and compromise_response scenarios, with hvac and sqlite3 directly.

oracle.py seed NAME STORE REGISTER COUNT   a transit key of the scenario's own, COUNT data keys wrapped under it in
                                           a SQLite store, and a register listing it (once; prints JSON)
oracle.py state NAME STORE                 the key's versions and the store's histogram, decrypt count (JSON)
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sqlite3
import sys

import hvac
import hvac.exceptions
import yaml


def client() -> hvac.Client:
    return hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"])


def seed(name: str, store: str, register: str, count: int) -> dict:
    vault = client()
    if os.path.exists(store):
        return {"changed": False}
    vault.secrets.transit.create_key(name, key_type="aes256-gcm96")
    batch = [{"plaintext": base64.b64encode(secrets.token_bytes(32)).decode()} for _unused in range(count)]
    answer = vault.secrets.transit.encrypt_data(name, None, batch_input=batch)
    del batch
    with sqlite3.connect(store) as connection:
        connection.execute(
            "CREATE TABLE data_keys "
            "(id TEXT PRIMARY KEY, key_ref TEXT NOT NULL, ciphertext TEXT NOT NULL, context TEXT)"
        )
        connection.executemany(
            "INSERT INTO data_keys VALUES (?, ?, ?, NULL)",
            [
                (f"dk-{n:05d}", f"transit/{name}", item["ciphertext"])
                for n, item in enumerate(answer["data"]["batch_results"])
            ],
        )
    entry = {
        "name": name,
        "backend": "vault_transit",
        "location": "transit",
        "key_class": "kek",
        "owner": "molecule",
        "custodians": ["a.tester", "b.tester"],
        "purpose": "scenario key",
        "algorithm": "aes256-gcm96",
        "rotation_period_days": 90,
        "backup_location": "none",
        "data_key_stores": [{"path": store, "table": "data_keys"}],
    }
    with open(register, "w", encoding="utf-8") as stream:
        yaml.safe_dump({"keys": [entry]}, stream)
    return {"changed": True}


def state(name: str, store: str) -> dict:
    vault = client()
    key = vault.secrets.transit.read_key(name)["data"]
    with sqlite3.connect(store) as connection:
        texts = [row[0] for row in connection.execute("SELECT ciphertext FROM data_keys")]
    histogram: dict[str, int] = {}
    for text in texts:
        histogram[text.split(":")[1]] = histogram.get(text.split(":")[1], 0) + 1
    try:
        answer = vault.secrets.transit.decrypt_data(name, None, batch_input=[{"ciphertext": t} for t in texts])
    except hvac.exceptions.InvalidRequest as error:
        answer = json.loads(error.text or "{}")
    decrypted = sum(1 for item in answer["data"]["batch_results"] if "plaintext" in item and not item.get("error"))
    del answer
    old_encrypts = []
    for version in range(1, int(key["latest_version"])):
        try:
            vault.secrets.transit.encrypt_data(name, base64.b64encode(b"probe").decode(), key_version=version)
            old_encrypts.append(version)
        except hvac.exceptions.InvalidRequest:
            pass
    return {
        "latest_version": key["latest_version"],
        "min_decryption_version": key["min_decryption_version"],
        "min_encryption_version": key["min_encryption_version"],
        "histogram": histogram,
        "total": len(texts),
        "decrypted": decrypted,
        "old_versions_that_encrypt": old_encrypts,
    }


if __name__ == "__main__":
    command, arguments = sys.argv[1], sys.argv[2:]
    result = (
        seed(arguments[0], arguments[1], arguments[2], int(arguments[3])) if command == "seed" else state(*arguments)
    )
    print(json.dumps(result))
