"""Backup and escrow, restore test and evidence package against the lab, through the real playbooks.

Oracles are independent of the code under test: hashlib for the manifest, shamir-mnemonic and pyrage directly for
the split escrow key, hvac for the scratch mount, python-pkcs11 for the scratch token, boto3 for Object Lock,
cryptography for the evidence signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import hvac
import pkcs11
import pyrage
import pytest
import shamir_mnemonic
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.keyops.runbooks.plugins.module_utils.escrow import age_secret_key
from tests.support.playbook import ROOT, assert_no_canary, lab_estate, run_module, run_playbook

pytestmark = pytest.mark.lab
TIMINGS: dict[str, float] = {}


def playbook(name: str, estate: dict[str, Any], verbosity: int = 0) -> Any:
    started = time.monotonic()
    run = run_playbook(os.path.join(ROOT, "playbooks", f"{name}.yml"), extra_vars=estate, verbosity=verbosity)
    TIMINGS[name] = round(time.monotonic() - started, 1)
    return run


def custodian_identities(estate: dict[str, Any]) -> dict[str, Any]:
    return {
        item["name"]: pyrage.x25519.Identity.from_str(Path(item["identity_file"]).read_text().splitlines()[-1])
        for item in estate["keyops_escrow_custodian_identities"]
    }


@pytest.fixture(scope="module")
def backup(lab: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One backup of the lab estate at -vvv, so the canary checks see every line Ansible prints."""
    output = tmp_path_factory.mktemp("recovery")
    bundle_id = f"it-{uuid.uuid4().hex[:8]}"
    estate = lab_estate(lab["KEYOPS_LAB_DIR"], keyops_output_dir=str(output), keyops_backup_id=bundle_id)
    run = playbook("backup_escrow", estate, verbosity=3)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    bundle = output / "backups" / bundle_id
    return {"estate": estate, "output": output, "bundle": bundle, "id": bundle_id, "run": run}


def recover_with_oracle(bundle: Path, identities: dict[str, Any], names: list[str]) -> tuple[list[str], Any]:
    """Decrypt the named custodians' shares and combine them with shamir-mnemonic directly."""
    mnemonics = [
        pyrage.decrypt((bundle / f"share-{name}.age").read_bytes(), [identities[name]]).decode() for name in names
    ]
    secret = shamir_mnemonic.combine_mnemonics(mnemonics)
    return mnemonics, pyrage.x25519.Identity.from_str(age_secret_key(secret))


def test_bundle_is_encrypted_complete_and_locked_offsite(backup: dict[str, Any], lab: dict[str, Any]) -> None:
    bundle, estate = backup["bundle"], backup["estate"]
    manifest = json.loads((bundle / "manifest.json").read_text())

    # Every file listed with its true SHA-256, none missing, none unlisted; all 0600, folder 0700.
    listed = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    on_disk = {str(path.relative_to(bundle)) for path in bundle.rglob("*") if path.is_file()} - {"manifest.json"}
    assert set(listed) == on_disk
    for relative, digest in listed.items():
        assert hashlib.sha256((bundle / relative).read_bytes()).hexdigest() == digest
        assert stat.S_IMODE((bundle / relative).stat().st_mode) == 0o600
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o700

    # What it covers: the exportable transit key, the raft snapshot, the extractable HSM key; KMS as status only.
    backends = {key["backend"] for key in manifest["keys"]}
    assert backends == {"vault_transit", "vault_raft", "pkcs11"}
    seed = lab["seed"]
    exportable = [
        key["name"]
        for key in seed["vault_transit"]["keys"]
        if key.get("exportable") and key.get("allow_plaintext_backup")
    ]
    # Other test files may share this lab and add keys of their own: every seeded one must be in the bundle.
    assert {key["key_ref"] for key in manifest["keys"] if key["backend"] == "vault_transit"} >= {
        f"transit/{name}" for name in exportable
    }
    assert all(key["canaries"] >= 1 for key in manifest["keys"] if key["backend"].startswith("vault"))
    assert {item["name"] for item in manifest["kms"]["keys"]} >= {
        key["alias"].removeprefix("alias/") for key in seed["aws_kms"]["keys"]
    }
    assert all(item["exportable"] is False for item in manifest["kms"]["keys"])
    assert manifest["escrow"]["threshold"] == estate["keyops_escrow_threshold"] == 2
    assert manifest["escrow"]["custodians"] == [item["name"] for item in estate["keyops_escrow_custodians"]]

    # No single custodian opens a backup; two custodians' shares rebuild the escrow key, which does.
    identities = custodian_identities(estate)
    transit_file = next(bundle / key["file"] for key in manifest["keys"] if key["backend"] == "vault_transit")
    for identity in identities.values():
        with pytest.raises(pyrage.DecryptError):
            pyrage.decrypt(transit_file.read_bytes(), [identity])
    with pytest.raises(shamir_mnemonic.MnemonicError):
        shamir_mnemonic.combine_mnemonics(recover_with_oracle(bundle, identities, ["a.haddad"])[0])
    _mnemonics, escrow_identity = recover_with_oracle(bundle, identities, ["m.okafor", "s.lindqvist"])
    assert str(escrow_identity.to_public()) == manifest["escrow"]["recipient"]
    assert json.loads(base64.b64decode(pyrage.decrypt(transit_file.read_bytes(), [escrow_identity])))["policy"]

    # Off-site: every file in the Object Lock bucket, in compliance mode.
    s3 = boto3.client("s3", endpoint_url=lab["AWS_ENDPOINT_URL"], region_name=lab["AWS_DEFAULT_REGION"])
    head = s3.head_object(Bucket=estate["keyops_backup_bucket"], Key=f"bundles/{backup['id']}/manifest.json")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    objects = s3.list_objects_v2(Bucket=estate["keyops_backup_bucket"], Prefix=f"bundles/{backup['id']}/")["Contents"]
    assert len(objects) == len(listed) + 1


def test_backup_again_changes_nothing(backup: dict[str, Any]) -> None:
    run = playbook("backup_escrow", backup["estate"])
    assert run.rc == 0, run.stdout[-3000:]
    assert [result["_task"] for result in run.results if result.get("changed")] == []


def test_restore_test_passes_cleans_up_and_leaks_nothing(backup: dict[str, Any], lab: dict[str, Any]) -> None:
    estate = dict(backup["estate"], keyops_restore_backup=backup["id"])
    run = playbook("restore_test", estate, verbosity=3)
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    report = json.loads((backup["output"] / "restore-tests" / f"restore-test-{backup['id']}.json").read_text())
    assert report["passed"] and report["k_minus_1"]["refused"]
    assert len(report["recovery"]["custodians_used"]) == 2
    assert {key["backend"] for key in report["keys"] if key["passed"]} == {"vault_transit", "pkcs11", "vault_raft"}
    assert all(check["passed"] for key in report["keys"] for check in key.get("known_answer", []))
    assert any("canary" in check["check"] for key in report["keys"] for check in key.get("known_answer", []))

    # Scratch targets are empty again (hvac, python-pkcs11).
    client = hvac.Client(url=lab["VAULT_ADDR"], token=lab["VAULT_TOKEN"])
    assert not [
        mount for mount in client.sys.list_mounted_secrets_engines()["data"] if mount.startswith("transit-restore-")
    ]
    token = pkcs11.lib(lab["KEYOPS_PKCS11_MODULE"]).get_token(token_label=lab["KEYOPS_PKCS11_SCRATCH_TOKEN_LABEL"])
    with token.open(user_pin=lab["KEYOPS_PKCS11_PIN"]) as session:
        labels = {obj.label for obj in session.get_objects({pkcs11.Attribute.TOKEN: True})}
    assert all("-backup-transport-" in label for label in labels)

    # The escrow key and the shares never show: not in any output, not in any file written.
    mnemonics, identity = recover_with_oracle(
        backup["bundle"], custodian_identities(backup["estate"]), ["a.haddad", "m.okafor"]
    )
    secrets = [str(identity), *mnemonics, *(" ".join(words.split()[:6]) for words in mnemonics)]
    texts = [backup["run"].stdout, backup["run"].stderr, run.stdout, run.stderr]
    texts += [path.read_text(errors="replace") for path in backup["output"].rglob("*") if path.is_file()]
    assert_no_canary(secrets, *texts)
    TIMINGS["time_to_recover"] = report["time_to_recover_seconds"]


def copy_bundle(backup: dict[str, Any], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    source = tmp_path / "offsite"
    shutil.copytree(backup["bundle"], source / backup["id"])
    estate = dict(
        backup["estate"],
        keyops_output_dir=str(tmp_path / "out"),
        keyops_restore_backup=backup["id"],
        keyops_backup_bucket="",
    )
    estate["restore_test_source_dir"] = str(source)
    return source / backup["id"], estate


def report_of(estate: dict[str, Any], bundle_id: str) -> dict[str, Any]:
    return json.loads(
        (Path(estate["keyops_output_dir"]) / "restore-tests" / f"restore-test-{bundle_id}.json").read_text()
    )


def test_restore_test_finds_a_corrupted_backup(backup: dict[str, Any], tmp_path: Path) -> None:
    bundle, estate = copy_bundle(backup, tmp_path)
    target = next(bundle.glob("vault/*.backup.age"))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))

    run = playbook("restore_test", estate)
    assert run.rc != 0
    report = report_of(estate, backup["id"])
    relative = str(target.relative_to(bundle))
    assert not report["passed"] and report["manifest_check"]["changed"] == [relative]
    failed = [key for key in report["keys"] if key["passed"] is False]
    assert [key["file"] for key in failed] == [relative]
    assert "Restore test failed" in run.stdout and backup["id"] in run.stdout
    # The intact keys were still restored, checked and cleaned up.
    assert [key["backend"] for key in report["keys"] if key["passed"]] == ["pkcs11", "vault_raft"]
    assert all(item["removed"] for item in report["cleanup"])


@pytest.mark.parametrize(
    ("offered", "removed", "usable"),
    [
        pytest.param(["a.haddad", "m.okafor"], "m.okafor", 1, id="share-file-missing"),
        pytest.param(["s.lindqvist"], None, 1, id="only-k-minus-1-custodians"),
    ],
)
def test_restore_test_refuses_fewer_than_k_shares(
    backup: dict[str, Any], tmp_path: Path, offered: list[str], removed: str | None, usable: int
) -> None:
    bundle, estate = copy_bundle(backup, tmp_path)
    if removed:
        (bundle / f"share-{removed}.age").unlink()
    estate["keyops_escrow_custodian_identities"] = [
        item for item in estate["keyops_escrow_custodian_identities"] if item["name"] in offered
    ]

    run = playbook("restore_test", estate)
    assert run.rc != 0
    report = report_of(estate, backup["id"])
    assert report["recovery"]["passed"] is False
    assert f"{usable} usable share(s) of the 2 needed" in report["recovery"]["error"]
    assert all(key["passed"] is False for key in report["keys"] if key["backend"] == "vault_transit")
    assert report["manifest_check"]["missing"] == ([f"share-{removed}.age"] if removed else [])


def test_evidence_package_verifies_and_catches_every_change(backup: dict[str, Any], tmp_path: Path) -> None:
    estate = dict(backup["estate"], keyops_evidence_id="it", keyops_audit_path=str(tmp_path / "none.jsonl"))
    run = playbook("evidence", estate)
    assert run.rc == 0, run.stdout[-3000:]
    folder = backup["output"] / "evidence" / "evidence-it"
    manifest_body = (folder / "manifest.json").read_bytes()
    public = serialization.load_pem_public_key(Path(estate["keyops_evidence_public_key"]).read_bytes())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(base64.b64decode((folder / "manifest.json.sig").read_bytes()), manifest_body)
    files = {entry["path"] for entry in json.loads(manifest_body)["files"]}
    assert {"policy/policy-in-force.json", "procedure/procedure.html", "register/key-register.yml"} <= files
    assert f"records/restore-tests/restore-test-{backup['id']}.json" in files
    assert not [name for name in files if name.endswith((".age", ".snap", ".wrapped", ".agekey"))]

    verify = {"public_key": estate["keyops_evidence_public_key"], "fail_on_mismatch": False}
    intact = run_module("keyops.runbooks.evidence_verify", dict(verify, path=str(folder) + ".tar.gz"))
    assert intact["ok"] and intact["files"] == len(files)

    for change in ("changed", "missing", "added", "resigned"):
        copy = tmp_path / change
        shutil.copytree(folder, copy)
        if change == "changed":
            (copy / "register" / "key-register.yml").write_text("keys: []\n")
        elif change == "missing":
            (copy / "policy" / "policy-in-force.json").unlink()
        elif change == "added":
            (copy / "notes.txt").write_text("added later\n")
        else:
            other = ed25519.Ed25519PrivateKey.generate()
            (copy / "manifest.json.sig").write_bytes(base64.b64encode(other.sign(manifest_body)))
        result = run_module("keyops.runbooks.evidence_verify", dict(verify, path=str(copy)))
        assert not result["ok"], change
        expected = {
            "changed": ("changed_files", ["register/key-register.yml"]),
            "missing": ("missing", ["policy/policy-in-force.json"]),
            "added": ("added", ["notes.txt"]),
        }
        if change in expected:
            field, paths = expected[change]
            assert result[field] == paths and result["signature_valid"]
        else:
            assert result["signature_valid"] is False
    failing = run_module(
        "keyops.runbooks.evidence_verify", dict(verify, path=str(tmp_path / "changed"), fail_on_mismatch=True)
    )
    assert failing["failed"] and "register/key-register.yml" in failing["msg"]


def test_report_timings(backup: dict[str, Any]) -> None:
    """Not an assertion of speed: prints the measured times for the closing note (pytest -s)."""
    print(f"\nrecovery timings (s): {json.dumps(TIMINGS)}")
    assert "backup_escrow" in TIMINGS
