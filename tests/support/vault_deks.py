"""Seed a data-key store with real transit ciphertexts spread over several key versions (tests and bench)."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from typing import Any

SCHEMA = "CREATE TABLE data_keys (id TEXT PRIMARY KEY, key_ref TEXT NOT NULL, ciphertext TEXT NOT NULL, context TEXT)"


def vault_client(url: str | None = None, token: str | None = None) -> Any:
    import hvac
    import requests

    session = requests.Session()
    session.trust_env = False
    return hvac.Client(
        url=url or os.environ["VAULT_ADDR"], token=token or os.environ["VAULT_TOKEN"], session=session, timeout=30
    )


def seed_store(
    client: Any,
    path: str,
    name: str,
    count: int,
    versions: int = 3,
    mount: str = "transit",
    derived: bool = False,
    key_type: str = "aes256-gcm96",
) -> dict[str, Any]:
    """Create key ``name`` (fresh), encrypt ``count`` random data keys spread evenly over ``versions`` versions
    and write them to a new SQLite store. Returns the plaintexts by id, for decrypt checks in tests."""
    transit = client.secrets.transit
    client.adapter.post(f"/v1/{mount}/keys/{name}", json={"type": key_type, "derived": derived})
    connection = sqlite3.connect(path)
    connection.execute(SCHEMA)
    plaintexts: dict[str, str] = {}
    per_version = -(-count // versions)
    number = 0
    for version in range(1, versions + 1):
        if version > 1:
            transit.rotate_key(name, mount_point=mount)
        todo = min(per_version, count - number)
        for start in range(0, todo, 400):
            ids, items = [], []
            for _unused in range(min(400, todo - start)):
                item_id = f"dk-{number:07d}"
                number += 1
                plaintext = base64.b64encode(os.urandom(32)).decode()
                context = base64.b64encode(item_id.encode()).decode() if derived else None
                ids.append((item_id, context))
                plaintexts[item_id] = plaintext
                items.append({"plaintext": plaintext, **({"context": context} if context else {})})
            answer = transit.encrypt_data(name, plaintext=None, batch_input=items, mount_point=mount)
            rows = [
                (item_id, f"{mount}/{name}", result["ciphertext"], context)
                for (item_id, context), result in zip(ids, answer["data"]["batch_results"], strict=True)
            ]
            connection.executemany("INSERT INTO data_keys VALUES (?, ?, ?, ?)", rows)
    connection.commit()
    connection.close()
    return plaintexts


def versions_in(path: str) -> dict[str, int]:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(
            "SELECT substr(ciphertext, 1, instr(substr(ciphertext, 7), ':') + 5), count(*) FROM data_keys GROUP BY 1"
        ).fetchall()
    finally:
        connection.close()
    return {prefix.removeprefix("vault:"): count for prefix, count in rows}


def decrypt_all(client: Any, path: str, name: str, mount: str = "transit") -> dict[str, str]:
    """Decrypt every stored data key (the independent oracle); returns plaintext by id."""
    import hvac.exceptions

    connection = sqlite3.connect(path)
    rows = connection.execute("SELECT id, ciphertext, context FROM data_keys ORDER BY id").fetchall()
    connection.close()
    plaintexts: dict[str, str] = {}
    for start in range(0, len(rows), 400):
        chunk = rows[start : start + 400]
        items = [{"ciphertext": ct, **({"context": ctx} if ctx else {})} for _unused, ct, ctx in chunk]
        try:
            answer = client.secrets.transit.decrypt_data(name, ciphertext=None, batch_input=items, mount_point=mount)
        except hvac.exceptions.InvalidRequest as error:  # some items failed: the answer still lists every item
            answer = json.loads(error.text)
        for (item_id, _unused, _unused2), result in zip(chunk, answer["data"]["batch_results"], strict=True):
            plaintexts[item_id] = result.get("plaintext") or f"error: {result.get('error')}"
    return plaintexts
