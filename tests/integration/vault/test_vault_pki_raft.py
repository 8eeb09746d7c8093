"""vault_pki_cert and vault_raft_snapshot on the lab's OpenBao servers, verified with hvac and cryptography."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from cryptography import x509

from tests.integration.vault.vault_helpers import assert_four_way, four_way_tasks, play, task

PKI = "keyops.runbooks.vault_pki_cert"
SNAPSHOT = "keyops.runbooks.vault_raft_snapshot"


def crl_serials(oracle: Any) -> set[int]:
    return {entry.serial_number for entry in x509.load_pem_x509_crl(oracle.secrets.pki.read_crl().encode())}


def test_issue_revoke_list(oracle: Any, tmp_path: Any) -> None:
    host = f"svc-{uuid.uuid4().hex[:8]}.lab.internal"
    issue = {
        "role": "lab-tls",
        "common_name": host,
        "alt_names": [host],
        "cert_path": str(tmp_path / "cert.pem"),
        "key_path": str(tmp_path / "key.pem"),
    }
    short = dict(
        issue,
        common_name=f"short-{host}",
        alt_names=[],
        ttl="4s",
        cert_path=str(tmp_path / "short.pem"),
        key_path=str(tmp_path / "short.key"),
    )
    first = play([*four_way_tasks("issue", PKI, issue), task("short-lived", PKI, short)])

    check, real, again, _unused = assert_four_way(first, "issue")
    cert = real["certificate"]
    assert "private_key" not in str(first) and "PRIVATE KEY" not in str(first)
    assert oct(os.stat(issue["key_path"]).st_mode & 0o777) == "0o600"
    with open(issue["cert_path"], "rb") as handle:
        on_disk = x509.load_pem_x509_certificate(handle.read())
    assert f"{on_disk.serial_number:x}" == cert["serial"].replace(":", "").lstrip("0")
    assert again["certificate"]["serial"] == cert["serial"]
    listed = oracle.secrets.pki.list_certificates()["data"]["keys"]
    assert cert["serial"] in listed
    expired_serial = first["short-lived"]["certificate"]["serial"]
    time.sleep(max(0.0, 5 - (time.time() - os.stat(short["cert_path"]).st_mtime)))

    revoke = {"action": "revoke", "serials": [cert["serial"]], "reason": "key_compromise", "change_ref": "INC-77"}
    second = play(
        [
            *four_way_tasks("revoke", PKI, revoke),
            task("expired", PKI, {"action": "revoke", "serials": [expired_serial]}),
            task("unknown serial", PKI, {"action": "revoke", "serials": ["00:11:22:33"]}, may_fail=True),
            task("list", PKI, {"action": "list"}),
        ]
    )
    check, real, again, _unused = assert_four_way(second, "revoke")
    assert check["revocations"][0]["status"] == "would_revoke"
    assert real["revocations"][0]["revoked"] and real["revocations"][0]["crl_confirmed"]
    assert real["audit_events"][0]["detail"]["revocation_reason"] == "key_compromise"
    assert again["revocations"][0]["status"] == "already_revoked"
    assert on_disk.serial_number in crl_serials(oracle)

    expired = second["expired"]
    assert not expired["changed"] and expired["revocations"][0]["status"] == "expired"
    assert expired["revocations"][0]["revoked"] is False and expired["audit_events"][0]["outcome"] == "refused"
    assert any("expired" in warning for warning in expired["warnings"])
    assert second["unknown serial"]["failed"] and "00:11:22:33" in second["unknown serial"]["msg"]

    records = {record["id"]: record for record in second["list"]["certificates"]}
    assert records[cert["serial"]]["revoked"] is True and records[cert["serial"]]["expires"] == cert["not_after"]
    assert records[expired_serial]["state"] == "expired"
    assert {finding["code"] for finding in records[expired_serial]["findings"]} == {"expired"}


def test_raft_snapshot_save_and_restore(lab: dict[str, Any], raft_oracle: Any, tmp_path: Any) -> None:
    path = str(tmp_path / "raft.snap")
    connection = {"url": lab["KEYOPS_LAB_RAFT_ADDR"], "token": lab["KEYOPS_LAB_RAFT_TOKEN"]}
    bogus = tmp_path / "bogus.snap"
    bogus.write_bytes(b"not a snapshot")
    first = play(
        [
            *four_way_tasks("save", SNAPSHOT, {**connection, "path": path}),
            task("restore bogus", SNAPSHOT, {**connection, "path": str(bogus), "state": "restored"}, may_fail=True),
        ]
    )
    _unused, saved, again, _unused2 = assert_four_way(first, "save")
    assert saved["snapshot_sha256"] == again["snapshot_sha256"] and saved["bytes"] == os.path.getsize(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert first["restore bogus"]["failed"] and "not a snapshot" in first["restore bogus"]["msg"]

    # A key made after the snapshot exists until the snapshot is restored, and not after.
    later = f"after-snapshot-{uuid.uuid4().hex[:8]}"
    raft_oracle.secrets.transit.create_key(later)
    second = play(
        [
            task("restore: check", SNAPSHOT, {**connection, "path": path, "state": "restored"}, check=True),
        ]
    )
    assert second["restore: check"]["changed"] and later in raft_oracle.secrets.transit.list_keys()["data"]["keys"]
    third = play([task("restore: real", SNAPSHOT, {**connection, "path": path, "state": "restored"})])
    assert third["restore: real"]["changed"] and third["restore: real"]["snapshot_sha256"] == saved["snapshot_sha256"]
    assert later not in raft_oracle.secrets.transit.list_keys()["data"]["keys"]
