"""Bundle manifest, verification, KMS status and off-site folder copies, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pyrage
import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils import backup_bundle, escrow
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput, KeyNotFound


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "b1"
    people = [{"name": f"c{i}", "recipient": str(pyrage.x25519.Identity.generate().to_public())} for i in range(3)]
    escrow.create_escrow(str(folder), people, 2, False)
    (folder / "vault").mkdir()
    (folder / "vault" / "transit-k-v1.backup.age").write_bytes(b"sealed")
    return folder


SOURCES = [
    {
        "server": "http://vault",
        "result": {"backups": [{"key_ref": "transit/k", "type": "aes256-gcm96", "latest_version": 1, "path": "PATH"}]},
    },
    {"server": "http://vault", "result": {"canaries": [{"key_ref": "transit/k", "version": 1}]}},
    {"result": {"skipped": True}},
]


def sources(bundle: Path) -> list[dict]:
    text = json.dumps(SOURCES).replace("PATH", str(bundle / "vault" / "transit-k-v1.backup.age"))
    return json.loads(text)


def test_manifest_lists_files_keys_and_escrow_and_is_kept_when_unchanged(bundle: Path) -> None:
    first = backup_bundle.build_manifest(str(bundle), "b1", sources(bundle), [], False)
    manifest = first["manifest"]
    assert first["changed"]
    assert [key["key_ref"] for key in manifest["keys"]] == ["transit/k"]
    assert manifest["keys"][0]["file"] == "vault/transit-k-v1.backup.age" and manifest["keys"][0]["canaries"] == 1
    assert manifest["escrow"]["threshold"] == 2 and manifest["escrow"]["custodians"] == ["c0", "c1", "c2"]
    shares = {f"share-c{index}.age" for index in range(3)}
    expected = {"escrow.json", "vault/transit-k-v1.backup.age", "kms-status.json", *shares}
    assert {entry["path"] for entry in manifest["files"]} == expected
    again = backup_bundle.build_manifest(str(bundle), "b1", sources(bundle), [], False)
    assert not again["changed"] and again["manifest"]["created"] == manifest["created"]


@pytest.mark.parametrize(
    ("change", "field", "path"),
    [
        ("edit", "changed", "vault/transit-k-v1.backup.age"),
        ("delete", "missing", "share-c1.age"),
        ("add", "added", "vault/extra.bin"),
    ],
)
def test_verification_names_the_file(bundle: Path, change: str, field: str, path: str) -> None:
    backup_bundle.build_manifest(str(bundle), "b1", sources(bundle), None, False)
    if change == "edit":
        (bundle / path).write_bytes(b"tampered")
    elif change == "delete":
        (bundle / path).unlink()
    else:
        (bundle / path).write_bytes(b"x")
    result = backup_bundle.verify_bundle(str(bundle))
    assert not result["ok"] and result[field] == [path]
    assert all(result[other] == [] for other in ("changed", "missing", "added") if other != field)


def test_no_manifest_without_escrow(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(InvalidInput, match="could not be recovered by anyone"):
        backup_bundle.build_manifest(str(tmp_path / "x"), "x", [], None, False)


@pytest.mark.parametrize(
    ("key", "recovery"),
    [
        ({"origin": "AWS_KMS", "multi_region": True}, "multi-Region key"),
        ({"origin": "EXTERNAL"}, "imported material"),
        ({"origin": "AWS_CLOUDHSM"}, "custom key store"),
        ({"origin": "AWS_KMS"}, "AWS durability only"),
        ({}, "AWS durability only"),
    ],
)
def test_kms_status_says_how_each_key_could_be_recovered(key: dict, recovery: str) -> None:
    status = backup_bundle.kms_status([dict(key, id="arn:1", name="k")])
    assert recovery in status["keys"][0]["recovery"] and status["keys"][0]["exportable"] is False
    assert "never exports" in status["note"]


def test_offsite_folder_copy_and_latest_fetch(bundle: Path, tmp_path: Path) -> None:
    backup_bundle.build_manifest(str(bundle), "b1", sources(bundle), None, False)
    offsite = tmp_path / "offsite"
    assert backup_bundle.copy_to_dir(str(bundle), str(offsite), "b1", False)["changed"]
    assert not backup_bundle.copy_to_dir(str(bundle), str(offsite), "b1", False)["changed"]
    fetched = backup_bundle.fetch_from_dir(str(offsite), None, str(tmp_path / "work"))
    assert fetched["bundle_id"] == "b1" and backup_bundle.verify_bundle(fetched["bundle_dir"])["ok"]
    with pytest.raises(KeyNotFound):
        backup_bundle.fetch_from_dir(str(tmp_path / "empty"), None, str(tmp_path / "work"))
