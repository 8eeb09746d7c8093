"""pkcs11_key_backup and pkcs11_key_restore: back up on one token, restore on another, prove the keys match."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from tests.integration.pkcs11.softhsm_tokens import SOURCE, TARGET, TODAY, Hsm, make_keys
from tests.support.playbook import assert_no_canary, four_way, run_module, run_tasks

BACKUP = "keyops.runbooks.pkcs11_key_backup"
RESTORE = "keyops.runbooks.pkcs11_key_restore"
DAY = f"{TODAY:%Y%m%d}"
AES_A, AES_B, LOCKED = f"bk-ledger-dek-{DAY}", f"bk-orders-dek-{DAY}", f"bk-root-kek-{DAY}"
EC, RSA = f"bk-invoices-sign-{DAY}", f"bk-archive-sign-{DAY}"


@pytest.fixture(scope="module")
def source_keys(hsm: Hsm, transport: dict[str, str]) -> list[str]:
    make_keys(
        hsm,
        SOURCE,
        [
            (AES_A, "AES-256", True),
            (AES_B, "AES-256", True),
            (LOCKED, "AES-256", False),
            (EC, "EC-P256", True),
            (RSA, "RSA-3072", True),
        ],
    )
    return [AES_A, AES_B, LOCKED, EC, RSA]


def modes(path: str) -> dict[str, int]:
    found = {".": stat.S_IMODE(os.stat(path).st_mode)}
    for name in os.listdir(path):
        found[name] = stat.S_IMODE(os.stat(os.path.join(path, name)).st_mode)
    return found


def test_backup_then_restore_on_another_token(hsm: Hsm, transport: dict[str, str], source_keys: list[str]) -> None:
    folder = os.path.join(hsm.root, "backup-aes")
    backup_args = dict(
        hsm.connection(), wrapping_key_label=transport["kek"], backup_dir=folder, labels=source_keys, change_ref="CHG-7"
    )
    check, real, _unused, again = four_way(BACKUP, backup_args)

    assert sorted(item["label"] for item in real["backed_up"]) == sorted([AES_A, AES_B, EC, RSA])
    assert [item["label"] for item in real["not_wrapped"]] == [LOCKED]
    assert "vendor's own backup" in real["not_wrapped"][0]["reason"]
    assert real["mechanism"] == "CKM_AES_KEY_WRAP_PAD"
    assert {event["outcome"] for event in check["audit_events"]} == {"planned", "skipped"}
    assert {event["outcome"] for event in again["audit_events"]} == {"unchanged", "skipped"}
    assert modes(folder)["."] == 0o700
    assert {mode for name, mode in modes(folder).items() if name != "."} == {0o600}
    manifest = json.loads(Path(folder, "manifest.json").read_text())
    for entry in manifest["entries"]:
        blob = Path(folder, entry["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == entry["sha256"]

    restore_args = dict(hsm.connection(TARGET), backup_dir=folder, change_ref="CHG-8")
    check, real, _unused, again = four_way(RESTORE, restore_args)
    assert sorted(item["label"] for item in real["restored"]) == sorted([AES_A, AES_B, EC, RSA])
    assert all(item["known_answer"]["passed"] for item in real["restored"])
    assert all(item["known_answer"]["passed"] for item in again["restored"])
    assert [event["outcome"] for event in check["audit_events"]] == ["planned"] * 4

    # Oracle: python-pkcs11 across the two tokens. What the restored key encrypts, the original decrypts;
    # what the restored private key signs, the original public key verifies.
    with hsm.session(SOURCE) as source, hsm.session(TARGET) as target:
        for label in (AES_A, AES_B):
            original = source.get_key(ObjectClass.SECRET_KEY, label=label)
            restored = target.get_key(ObjectClass.SECRET_KEY, label=label)
            assert restored.id == original.id and restored[Attribute.EXTRACTABLE] is True
            iv = os.urandom(16)
            assert (
                original.decrypt(restored.encrypt(b"restore canary", mechanism_param=iv), mechanism_param=iv)
                == b"restore canary"
            )
        digest = hashlib.sha256(b"restore canary").digest()
        signature = target.get_key(ObjectClass.PRIVATE_KEY, label=EC).sign(digest, mechanism=Mechanism.ECDSA)
        assert source.get_key(ObjectClass.PUBLIC_KEY, label=EC).verify(digest, signature, mechanism=Mechanism.ECDSA)
        signature = target.get_key(ObjectClass.PRIVATE_KEY, label=RSA).sign(
            b"restore canary", mechanism=Mechanism.SHA256_RSA_PKCS
        )
        assert source.get_key(ObjectClass.PUBLIC_KEY, label=RSA).verify(
            b"restore canary", signature, mechanism=Mechanism.SHA256_RSA_PKCS
        )
    # The key that is not extractable stayed where it was.
    assert [item for item in hsm.objects(TARGET) if item.get("label") == LOCKED] == []
    assert_no_canary([hsm.pin], *(Path(folder, name).read_bytes().decode("latin-1") for name in os.listdir(folder)))


def test_tampered_blob_and_wrong_kek_are_refused(hsm: Hsm, transport: dict[str, str], source_keys: list[str]) -> None:
    folder = os.path.join(hsm.root, "backup-tamper")
    made = run_module(
        BACKUP, dict(hsm.connection(), wrapping_key_label=transport["kek"], backup_dir=folder, labels=[AES_A])
    )
    assert made["changed"] is True, made.get("msg")
    blob_path = os.path.join(folder, made["backed_up"][0]["file"])

    with hsm.session(TARGET) as target:
        target.generate_key(KeyType.AES, 256, label=f"lab-other-kek-{DAY}", store=True)
    wrong_kek = run_module(
        RESTORE, dict(hsm.connection(TARGET), backup_dir=folder, unwrapping_key_label=f"lab-other-kek-{DAY}")
    )
    assert wrong_kek.get("failed") and "differs from the wrapping key's" in wrong_kek["msg"]

    copy = os.path.join(hsm.root, "backup-tampered")
    shutil.copytree(folder, copy)
    damaged = bytearray(Path(blob_path).read_bytes())
    damaged[5] ^= 0x01
    Path(copy, os.path.basename(blob_path)).write_bytes(bytes(damaged))
    tampered = run_module(RESTORE, dict(hsm.connection(TARGET), backup_dir=copy))
    assert tampered.get("failed") and "does not match the SHA-256 in the manifest" in tampered["msg"]


def test_rsa_oaep_transport_and_what_it_cannot_wrap(hsm: Hsm, transport: dict[str, str]) -> None:
    label = f"bk-transfer-dek-{DAY}"
    make_keys(hsm, SOURCE, [(label, "AES-256", True)])
    folder = os.path.join(hsm.root, "backup-oaep")
    args = dict(
        hsm.connection(),
        wrapping_key_label=transport["transport"],
        mechanism="rsa_oaep",
        backup_dir=folder,
        labels=[label, EC],
    )

    # SoftHSM2 wraps with OAEP over SHA-1 only: SHA-256 is refused by name, and nothing is written.
    refused = run_module(BACKUP, args)
    assert refused.get("failed") is True
    assert "CKM_RSA_PKCS_OAEP (hash SHA256, MGF1-SHA256)" in refused["msg"]
    assert not os.path.exists(folder)

    made = run_module(BACKUP, dict(args, oaep_hash="sha1"))
    assert [item["label"] for item in made["backed_up"]] == [label]
    assert [item["label"] for item in made["not_wrapped"]] == [EC]
    assert "RSA-OAEP wraps only secret keys" in made["not_wrapped"][0]["reason"]

    restored = run_module(RESTORE, dict(hsm.connection(TARGET), backup_dir=folder))
    assert restored["changed"] is True, restored.get("msg")
    assert restored["restored"][0]["known_answer"]["passed"] is True


def test_unsupported_mechanism_is_named_without_fallback(
    hsm: Hsm, transport: dict[str, str], source_keys: list[str]
) -> None:
    folder = os.path.join(hsm.root, "backup-unsupported")
    conf = hsm.restricted_conf("CKM_AES_KEY_WRAP_PAD")
    run = run_tasks(
        [
            {
                "name": "backup on a token without AES key wrap with padding (ignore_errors: expected)",
                "ignore_errors": True,
                BACKUP: dict(hsm.connection(), wrapping_key_label=transport["kek"], backup_dir=folder),
            }
        ],
        env={"SOFTHSM2_CONF": conf},
    )
    assert run.last.get("failed") is True
    assert "does not offer CKM_AES_KEY_WRAP_PAD for wrapping" in run.last["msg"]
    assert not os.path.exists(folder)
