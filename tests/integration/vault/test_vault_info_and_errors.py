"""vault_transit_key_info inventory and the failures an operator meets: each names the key and says what to do."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.vault.vault_helpers import play, task
from tests.support.playbook import ROOT, assert_no_canary, run_tasks

INFO = "keyops.runbooks.vault_transit_key_info"
KEY = "keyops.runbooks.vault_transit_key"
REWRAP = "keyops.runbooks.vault_transit_rewrap"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def sealed_server(tmp_path: Any) -> Iterator[str]:
    """A raft-storage OpenBao that was never initialised, so it is sealed."""
    port = free_port()
    (tmp_path / "raft").mkdir()
    config = tmp_path / "sealed.hcl"
    config.write_text(
        f'storage "raft" {{\n  path = "{tmp_path / "raft"}"\n  node_id = "sealed"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n'
        f'api_addr = "http://127.0.0.1:{port}"\ncluster_addr = "https://127.0.0.1:{free_port()}"\n'
        "disable_mlock = true\n"
    )
    server = subprocess.Popen(
        [os.path.join(ROOT, ".venv", "bin", "bao"), "server", f"-config={config}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline and server.poll() is None, "sealed test server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_inventory_of_every_transit_mount(lab: dict[str, Any], oracle: Any, scratch: Any) -> None:
    name, mount = scratch("inv"), f"transit-scale-{uuid.uuid4().hex[:6]}"
    oracle.adapter.post(f"/v1/transit/keys/{name}", json={"exportable": True})
    oracle.secrets.transit.rotate_key(name)
    oracle.sys.enable_secrets_engine("transit", path=mount)
    for number in range(2000):
        oracle.adapter.post(f"/v1/{mount}/keys/bulk-{number:04d}", json={"type": "aes256-gcm96"})

    results = play(
        [
            task("discover", INFO, {}),
            task("one key", INFO, {"mounts": ["transit"], "names": [name], "key_classes": {name: "master-kek"}}),
        ]
    )
    records = results["discover"]["keys"]
    assert {"transit", mount} <= set(results["discover"]["mounts"])
    assert sum(1 for record in records if record["mount"] == mount) == 2000
    seeded = {key["name"] for key in lab["seed"]["vault_transit"]["keys"]}
    assert seeded <= {record["name"] for record in records if record["mount"] == "transit"}

    (record,) = results["one key"]["keys"]
    truth = oracle.secrets.transit.read_key(name)["data"]
    assert (record["versions"], record["algorithm"], record["length_bits"]) == (2, "aes256-gcm96", 256)
    assert record["key_ref"] == f"transit/{name}" and record["key_class"] == "master-kek"
    assert set(record["version_times"]) == set(truth["keys"]) and record["last_rotated"]
    codes = {item["code"]: item["severity"] for item in record["findings"]}
    assert codes["exportable"] == "critical" and "auto_rotation_off" in codes


def test_bad_input_gives_a_clear_error_naming_the_key(
    oracle: Any, scratch: Any, tmp_path: Any, sealed_server: str
) -> None:
    name, missing = scratch("errs"), scratch("missing")
    oracle.secrets.transit.create_key(name, key_type="ed25519")
    denied = oracle.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
    store = tmp_path / "empty.sqlite"
    import sqlite3

    sqlite3.connect(store).execute("CREATE TABLE data_keys (id TEXT, key_ref TEXT, ciphertext TEXT, context TEXT)")
    closed = f"http://127.0.0.1:{free_port()}"
    cases = {
        "unknown key": (REWRAP, {"name": missing, "store": {"path": str(store)}}, [missing, "does not exist"]),
        "wrong type": (REWRAP, {"name": name, "store": {"path": str(store)}}, [name, "ed25519", "does not encrypt"]),
        "slash in name": (KEY, {"name": "team/key"}, ["team/key", "single path segment", "name"]),
        "bad url": (KEY, {"name": name, "url": "vault.example:8200"}, [name, "not an http(s) URL", "VAULT_ADDR"]),
        "stopped server": (KEY, {"name": name, "url": closed}, [name, "cannot connect", closed]),
        "sealed server": (KEY, {"name": name, "url": sealed_server}, [name, "sealed", "Unseal"]),
        "denied token": (KEY, {"name": name, "token": denied}, [name, "permission denied", "token"]),
    }
    run = run_tasks(
        [task(label, module, args, may_fail=True) for label, (module, args, _unused) in cases.items()], verbosity=3
    )
    results = {result["_task"]: result for result in run.results}
    for label, (_unused, _unused2, words) in cases.items():
        result = results[label]
        assert result.get("failed"), label
        for word in words:
            assert word in result["msg"], (label, result["msg"])
        assert "Traceback" not in result["msg"]
    assert_no_canary([denied, os.environ["VAULT_TOKEN"]], run.stdout, run.stderr)


def test_approle_login_and_action_group_defaults(oracle: Any, scratch: Any) -> None:
    name, mount = scratch("approle"), f"approle-{uuid.uuid4().hex[:6]}"
    oracle.sys.enable_auth_method("approle", path=mount)
    oracle.sys.create_or_update_policy(f"read-{mount}", 'path "transit/keys/*" { capabilities = ["read", "list"] }')
    oracle.auth.approle.create_or_update_approle("reader", token_policies=[f"read-{mount}"], mount_point=mount)
    role_id = oracle.auth.approle.read_role_id("reader", mount_point=mount)["data"]["role_id"]
    secret_id = oracle.auth.approle.generate_secret_id("reader", mount_point=mount)["data"]["secret_id"]
    oracle.secrets.transit.create_key(name)

    defaults = {
        "group/keyops.runbooks.vault": {
            "auth_method": "approle",
            "role_id": role_id,
            "secret_id": secret_id,
            "approle_mount": mount,
            "token": None,
        }
    }
    run = run_tasks(
        [
            task("read as approle", INFO, {"mounts": ["transit"], "names": [name]}),
            task("write refused", KEY, {"name": name, "rotate": True}, may_fail=True),
        ],
        module_defaults=defaults,
        verbosity=3,
        env={"VAULT_TOKEN": ""},
    )
    results = {result["_task"]: result for result in run.results}
    assert results["read as approle"]["keys"][0]["name"] == name
    assert results["write refused"]["failed"] and "permission denied" in results["write refused"]["msg"]
    assert oracle.secrets.transit.read_key(name)["data"]["latest_version"] == 1
    assert_no_canary([secret_id], run.stdout, run.stderr)
