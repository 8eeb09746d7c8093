"""Independent checks of a runbook's end state, read with hvac and sqlite3 directly (never with the collection)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from typing import Any

import hvac
import hvac.exceptions

from tests.support.playbook import ROOT


def vault(lab: dict[str, Any]) -> hvac.Client:
    return hvac.Client(url=lab["env"]["VAULT_ADDR"], token=lab["env"]["VAULT_TOKEN"])


def transit_key(lab: dict[str, Any], name: str) -> dict[str, Any]:
    return vault(lab).secrets.transit.read_key(name)["data"]


def stored_ciphertexts(lab: dict[str, Any], key_ref: str, table: str = "data_keys") -> list[str]:
    with sqlite3.connect(lab["env"]["KEYOPS_LAB_DEK_DB"]) as connection:
        rows = connection.execute(f"SELECT ciphertext FROM {table} WHERE key_ref = ?", (key_ref,)).fetchall()
    return [row[0] for row in rows]


def versions_of(ciphertexts: list[str]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for text in ciphertexts:
        version = int(text.split(":")[1][1:])
        counts[version] = counts.get(version, 0) + 1
    return counts


def decrypt_all(lab: dict[str, Any], name: str, ciphertexts: list[str]) -> int:
    """How many of ``ciphertexts`` the server decrypts; the plaintexts are dropped here."""
    client = vault(lab)
    decrypted = 0
    for start in range(0, len(ciphertexts), 400):
        batch = [{"ciphertext": text} for text in ciphertexts[start : start + 400]]
        try:
            answer = client.secrets.transit.decrypt_data(name, None, batch_input=batch)
        except hvac.exceptions.InvalidRequest as error:
            answer = json.loads(error.text or "{}")
        decrypted += sum(1 for item in answer["data"]["batch_results"] if "plaintext" in item and not item.get("error"))
    return decrypted


def encrypts_under(lab: dict[str, Any], name: str, version: int) -> bool:
    try:
        vault(lab).secrets.transit.encrypt_data(name, base64.b64encode(b"probe").decode(), key_version=version)
    except hvac.exceptions.InvalidRequest:
        return False
    return True


def issue_certificate(lab: dict[str, Any], common_name: str, path: str) -> str:
    """A Vault PKI certificate for the service that uses the key; returns its serial."""
    data = vault(lab).secrets.pki.generate_certificate("lab-tls", common_name, mount_point="pki")["data"]
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(data["certificate"] + "\n")
    return data["serial_number"]


def revoked(lab: dict[str, Any], serial: str) -> bool:
    data = vault(lab).secrets.pki.read_certificate(serial, mount_point="pki")["data"]
    return int(data.get("revocation_time") or 0) > 0


def report_digest_ok(path: str) -> bool:
    """The report's recorded digest is the SHA-256 of its canonical JSON (sorted keys, no white space) without it."""
    with open(path, encoding="utf-8") as stream:
        report = json.load(stream)
    claimed = report.pop("digest")
    canonical = json.dumps(report, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return claimed == hashlib.sha256(canonical).hexdigest()


def audit_chain_ok(path: str) -> bool:
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "keyops-audit-verify"), path],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0
