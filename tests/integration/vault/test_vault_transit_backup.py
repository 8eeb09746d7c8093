"""vault_transit_backup / vault_transit_restore on the lab's OpenBao: age-escrowed backups, restore and compare."""

from __future__ import annotations

import base64
import os
from typing import Any

import pyrage
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.integration.vault.vault_helpers import assert_four_way, four_way_tasks, play, task
from tests.support.playbook import assert_no_canary, run_tasks

BACKUP = "keyops.runbooks.vault_transit_backup"
RESTORE = "keyops.runbooks.vault_transit_restore"


def ssh_keypair() -> tuple[str, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def test_backup_restore_compare(oracle: Any, scratch: Any, tmp_path: Any) -> None:
    name, locked, restored, restored_ssh = scratch("escrow"), scratch("locked"), scratch("rt"), scratch("rtssh")
    oracle.adapter.post(f"/v1/transit/keys/{name}", json={"exportable": True, "allow_plaintext_backup": True})
    oracle.secrets.transit.rotate_key(name)
    oracle.secrets.transit.rotate_key(name)
    oracle.secrets.transit.update_key_configuration(name, min_decryption_version=2)
    oracle.secrets.transit.create_key(locked)
    identity = pyrage.x25519.Identity.generate()
    ssh_private, ssh_public = ssh_keypair()
    dest = tmp_path / "escrow"
    dest.mkdir()
    backup_args = {
        "names": [name],
        "dest": str(dest),
        "recipients": [str(identity.to_public()), ssh_public],
        "change_ref": "CHG-7",
    }

    first = play(
        [
            *four_way_tasks("backup", BACKUP, backup_args),
            task("locked key", BACKUP, {**backup_args, "names": [locked]}, may_fail=True),
        ]
    )
    _unused, real, _unused2, _unused3 = assert_four_way(first, "backup")
    entry = real["backups"][0]
    path = entry["path"]
    # Transit lists (and backs up as live) the versions from min_decryption_version on.
    assert (entry["latest_version"], entry["versions"], entry["recipients"]) == (3, [2, 3], 2)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with open(path, "rb") as handle:
        sealed = handle.read()
    assert sealed.startswith(b"age-encryption.org/v1")
    plain_backup = oracle.secrets.transit.backup_key(name)["data"]["backup"]
    assert plain_backup.encode()[:40] not in sealed and plain_backup[:40] not in str(first)
    locked_failure = first["locked key"]
    assert (
        locked_failure["failed"]
        and locked in locked_failure["msg"]
        and "allow_plaintext_backup" in locked_failure["msg"]
    )

    truncated, empty = tmp_path / "truncated.age", tmp_path / "empty.age"
    truncated.write_bytes(sealed[: len(sealed) // 2])
    empty.write_bytes(b"")
    identity_file = tmp_path / "ssh-identity"
    identity_file.write_text(ssh_private)
    secret = str(identity)
    restore_args = {"path": path, "name": restored, "identity": secret, "change_ref": "CHG-8"}
    run = run_tasks(
        [
            *four_way_tasks("restore", RESTORE, restore_args),
            task(
                "restore with ssh identity",
                RESTORE,
                {"path": path, "name": restored_ssh, "identity_file": str(identity_file)},
            ),
            task("truncated", RESTORE, {**restore_args, "path": str(truncated), "name": scratch("t")}, may_fail=True),
            task("empty", RESTORE, {**restore_args, "path": str(empty), "name": scratch("e")}, may_fail=True),
            task(
                "wrong identity",
                RESTORE,
                {**restore_args, "identity": str(pyrage.x25519.Identity.generate()), "name": scratch("w")},
                may_fail=True,
            ),
            task("slash in name", RESTORE, {**restore_args, "name": "a/b"}, may_fail=True),
            task("overwrite refused", RESTORE, {**restore_args, "name": locked}, may_fail=True),
        ],
        verbosity=3,
    )
    second = {result["_task"]: result for result in run.results}

    check, real, _unused, _unused2 = assert_four_way(second, "restore")
    expected = {
        "type": "aes256-gcm96",
        "latest_version": 3,
        "min_decryption_version": 2,
        "min_encryption_version": 0,
        "min_available_version": 0,
    }
    assert check["expected"] == expected and real["after"] == expected and real["matches"] is True
    assert real["source_name"] == name and second["restore with ssh identity"]["matches"] is True
    for failure, words in (
        ("truncated", "truncated"),
        ("empty", "empty"),
        ("wrong identity", "identity"),
        ("slash in name", "single path segment"),
        ("overwrite refused", "force=true"),
    ):
        assert second[failure]["failed"] and words in second[failure]["msg"], (failure, second[failure]["msg"])
    assert_no_canary([secret, ssh_private.splitlines()[1], plain_backup[:40]], run.stdout, run.stderr)

    # The independent check: data encrypted under the original decrypts under both restored copies.
    plaintext = base64.b64encode(b"escrow check").decode()
    ciphertext = oracle.secrets.transit.encrypt_data(name, plaintext)["data"]["ciphertext"]
    for copy in (restored, restored_ssh):
        key = oracle.secrets.transit.read_key(copy)["data"]
        assert (key["type"], key["latest_version"], key["min_decryption_version"]) == ("aes256-gcm96", 3, 2)
        assert oracle.secrets.transit.decrypt_data(copy, ciphertext)["data"]["plaintext"] == plaintext
