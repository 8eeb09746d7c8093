"""Evidence package: collection rules, signature, verification, reproducible archive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ansible_collections.keyops.runbooks.plugins.module_utils import evidence
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import GENESIS_HASH, chain_event


@pytest.fixture
def params(tmp_path: Path) -> dict[str, Any]:
    records = tmp_path / "outputs"
    (records / "inventory").mkdir(parents=True)
    (records / "inventory" / "key-inventory.csv").write_text("id,name\n")
    (records / "backups" / "b1").mkdir(parents=True)
    (records / "backups" / "b1" / "manifest.json").write_text("{}")
    for secret in ("share-a.age", "raft.snap", "k.wrapped", "c.agekey", "env.sh"):
        (records / "backups" / "b1" / secret).write_text("secret")
    docs = tmp_path / "docs"
    (docs / "runbooks").mkdir(parents=True)
    (docs / "procedure.md").write_text("# Procedure\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n")
    (docs / "runbooks" / "restore_test.md").write_text("# Restore test\n")
    key = ed25519.Ed25519PrivateKey.generate()
    key_path = tmp_path / "signing.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    log = tmp_path / "audit.jsonl"
    previous = GENESIS_HASH
    lines = []
    for seq, when in enumerate(["2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z", "2099-01-02T00:00:00Z"]):
        event = chain_event({"action": "verify", "ts": when, "seq": seq, "run_id": "r"}, previous)
        previous = event["hash"]
        lines.append(json.dumps(event))
    log.write_text("\n".join(lines) + "\n")
    return {
        "output_dir": str(tmp_path / "evidence"),
        "package_id": "p1",
        "sources": [{"path": str(records), "dest": "records"}, {"path": str(tmp_path / "nope"), "dest": "nope"}],
        "exclude": [],
        "docs": [str(docs / "procedure.md"), str(docs / "runbooks" / "restore_test.md")],
        "policy": {"approval_quorum": 3},
        "audit_log": str(log),
        "audit_anchor_path": None,
        "days": 90,
        "signing_key": str(key_path),
        "_public": key.public_key(),
    }


def test_package_collects_renders_signs_and_verifies(params: dict[str, Any]) -> None:
    built = evidence.build(params, False)
    folder = Path(built["path"])
    files = {entry["path"] for entry in built["manifest"]["files"]}
    assert "records/inventory/key-inventory.csv" in files and "records/backups/b1/manifest.json" in files
    assert not [name for name in files if name.endswith((".age", ".snap", ".wrapped", ".agekey", "env.sh"))]
    assert {"procedure/procedure.html", "procedure/runbook-restore_test.html"} <= files
    assert "<table>" in (folder / "procedure" / "procedure.html").read_text()
    assert json.loads((folder / "policy" / "policy-in-force.json").read_text())["approval_quorum"] == 3
    assert built["manifest"]["notes"]["absent_sources"] == [{"path": params["sources"][1]["path"], "dest": "nope"}]
    audit = json.loads((folder / "audit" / "chain-verification.json").read_text())
    assert audit["whole_log"]["ok"] and audit["whole_log"]["count"] == 3
    assert audit["excerpt"]["ok"] and audit["excerpt"]["lines"] == 2 and audit["excerpt"]["start_hash"] != GENESIS_HASH
    assert evidence.verify(str(folder), params["_public"])["ok"]
    unpacked = evidence.unpack(built["archive"], str(folder.parent / "x"))
    assert evidence.verify(unpacked, params["_public"])["ok"]


def test_same_content_keeps_the_package_byte_for_byte(params: dict[str, Any]) -> None:
    first = evidence.build(params, False)
    archive = Path(first["archive"]).read_bytes()
    again = evidence.build(params, False)
    assert not again["changed"] and Path(again["archive"]).read_bytes() == archive
    Path(params["sources"][0]["path"], "inventory", "key-inventory.csv").write_text("id,name\n1,k\n")
    assert evidence.build(params, True)["changed"]
    assert Path(first["archive"]).read_bytes() == archive


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ("edit", "changed", ["records/inventory/key-inventory.csv"]),
        ("delete", "missing", ["policy/policy-in-force.json"]),
        ("add", "added", ["extra.txt"]),
        ("edit-manifest", "signature_valid", False),
        ("other-key", "signature_valid", False),
        ("no-signature", "missing", ["manifest.json.sig"]),
    ],
)
def test_verification_catches_each_change(params: dict[str, Any], change: str, field: str, expected: Any) -> None:
    folder = Path(evidence.build(params, False)["path"])
    public = params["_public"]
    if change == "edit":
        (folder / "records" / "inventory" / "key-inventory.csv").write_text("forged\n")
    elif change == "delete":
        (folder / "policy" / "policy-in-force.json").unlink()
    elif change == "add":
        (folder / "extra.txt").write_text("x")
    elif change == "edit-manifest":
        (folder / "manifest.json").write_text((folder / "manifest.json").read_text().replace('"p1"', '"p2"'))
    elif change == "other-key":
        public = ed25519.Ed25519PrivateKey.generate().public_key()
    else:
        (folder / "manifest.json.sig").unlink()
    result = evidence.verify(str(folder), public)
    assert not result["ok"] and result[field] == expected


def test_missing_audit_log_is_said_not_hidden(params: dict[str, Any]) -> None:
    params["audit_log"] = params["audit_log"] + ".absent"
    built = evidence.build(params, False)
    assert built["audit"]["present"] is False and built["manifest"]["notes"]["audit_log_present"] is False
