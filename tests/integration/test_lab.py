"""The lab itself: it starts from nothing, reports status, stops leaving no process, and seeds what seed.json says.

Oracles are independent of the lab code: /proc for processes, sockets for ports, sqlite3, hvac, boto3 and the
YAML file for the estate.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import hvac
import pytest
import yaml

pytestmark = pytest.mark.lab

# Away from the session lab (28200 + 100 per xdist worker) and the demo lab (18200).
LIFECYCLE_PORT_BASE = 29900

CONTRACT_VARIABLES = (
    "VAULT_ADDR", "VAULT_TOKEN", "KEYOPS_LAB_RAFT_ADDR", "KEYOPS_LAB_RAFT_TOKEN",
    "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "SOFTHSM2_CONF", "KEYOPS_PKCS11_MODULE", "KEYOPS_PKCS11_TOKEN_LABEL", "KEYOPS_PKCS11_PIN",
    "KEYOPS_PKCS11_SO_PIN", "KEYOPS_PKCS11_SCRATCH_TOKEN_LABEL",
    "KEYOPS_LAB_ACME_DIRECTORY", "KEYOPS_LAB_ACME_CA", "KEYOPS_LAB_ACME_ROOT",
    "KEYOPS_LAB_SYSLOG_HOST", "KEYOPS_LAB_SYSLOG_PORT", "KEYOPS_LAB_SYSLOG_FILE",
    "KEYOPS_LAB_CA_BUNDLE", "KEYOPS_LAB_CERT_DIR", "KEYOPS_LAB_TLS_ENDPOINTS", "KEYOPS_LAB_P12_PASSWORD",
    "KEYOPS_LAB_DEK_DB", "KEYOPS_LAB_REGISTER",
)  # fmt: skip
SECRETS = ("VAULT_TOKEN", "KEYOPS_LAB_RAFT_TOKEN", "KEYOPS_PKCS11_PIN", "KEYOPS_PKCS11_SO_PIN",
           "KEYOPS_LAB_P12_PASSWORD")  # fmt: skip


def _running(pid: int) -> bool:
    """Alive and not a zombie, read straight from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line.split()[1] for line in status.splitlines() if line.startswith("State:"))
    return state not in ("Z", "X")


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_lab_up_status_down_from_nothing(
    tmp_path: Path, lab_cli: Callable[..., Any], lab_port_base: Callable[[int], int]
) -> None:
    run_lab = lab_cli
    lab_dir = tmp_path / "lab"
    port_base = lab_port_base(LIFECYCLE_PORT_BASE)
    started = time.monotonic()
    up = run_lab("up", lab_dir, port_base)
    up_seconds = time.monotonic() - started
    try:
        assert up.returncode == 0, up.stderr
        assert up_seconds < 30, f"up took {up_seconds:.1f}s"

        state = json.loads((lab_dir / "lab.json").read_text())
        environment = state["env"]
        for private in ("lab.json", "env.sh"):
            assert stat.S_IMODE((lab_dir / private).stat().st_mode) == 0o600, private
        missing = [name for name in CONTRACT_VARIABLES if name not in environment]
        assert not missing, f"lab.json lacks {missing}"
        env_sh = (lab_dir / "env.sh").read_text()
        assert all(f"export {name}=" in env_sh for name in CONTRACT_VARIABLES)
        assert environment["VAULT_ADDR"] == f"http://127.0.0.1:{port_base}"

        pids = {name: info["pid"] for name, info in state["processes"].items()}
        assert set(pids) == {"openbao-dev", "openbao-raft", "moto", "pebble", "rsyslog", "tls-endpoints"}
        assert all(_running(pid) for pid in pids.values()), pids

        again = run_lab("up", lab_dir, port_base)
        assert again.returncode == 0 and "already up" in again.stdout

        status = run_lab("status --json", lab_dir, port_base)
        assert status.returncode == 0, status.stdout
        services = json.loads(status.stdout)["services"]
        assert all(item["up"] for item in services.values()), services

        # Every endpoint the env names answers on loopback.
        ports = [int(environment["KEYOPS_LAB_SYSLOG_PORT"])]
        ports += [item["port"] for item in json.loads(environment["KEYOPS_LAB_TLS_ENDPOINTS"])]
        assert all(_listening(port) for port in ports)
        assert Path(environment["KEYOPS_LAB_ACME_ROOT"]).read_text().startswith("-----BEGIN CERTIFICATE-----")

        printed = up.stdout + up.stderr + again.stdout + status.stdout + status.stderr
        leaked = [name for name in SECRETS if environment[name] in printed]
        assert not leaked, f"the CLI printed {leaked}"
    finally:
        down = run_lab("down", lab_dir, port_base)

    assert down.returncode == 0, down.stderr
    assert not [name for name, pid in pids.items() if _running(pid)], "a lab process survived `down`"
    assert not [name for name, pid in pids.items() if _group_members(pid)], "a child process survived `down`"
    assert not [port for port in ports if _listening(port)]
    assert run_lab("status", lab_dir, port_base).returncode != 0


def test_seed_matches_seed_json(lab: dict[str, Any]) -> None:
    seed = lab["seed"]
    assert os.environ["VAULT_ADDR"] == lab["VAULT_ADDR"]

    with sqlite3.connect(lab["KEYOPS_LAB_DEK_DB"]) as db:
        transit_rows = db.execute("SELECT key_ref, ciphertext, context FROM data_keys").fetchall()
        kms_rows = db.execute("SELECT key_ref, ciphertext FROM kms_data_keys").fetchall()
    transit = seed["transit_data_keys"]
    assert len(transit_rows) == transit["count"] >= 5000
    assert {row[0] for row in transit_rows} == {transit["key_ref"]}
    assert all(row[2] is None for row in transit_rows)
    versions = Counter(row[1].split(":")[1].removeprefix("v") for row in transit_rows)
    assert dict(versions) == transit["by_version"] and set(versions) == {"1", "2", "3"}
    assert len(kms_rows) == seed["kms_data_keys"]["count"] >= 1000
    assert {row[0] for row in kms_rows} == {seed["kms_data_keys"]["key_ref"]}

    vault = hvac.Client(url=lab["VAULT_ADDR"], token=lab["VAULT_TOKEN"])
    transit_keys = set(vault.secrets.transit.list_keys()["data"]["keys"])
    seeded = {key["name"] for key in seed["vault_transit"]["keys"]}
    # Every seeded key is there; test files that share this worker's lab may have run first and added their own.
    assert seeded <= transit_keys
    payments = vault.secrets.transit.read_key(transit["key_ref"])["data"]
    assert payments["latest_version"] == 3 and payments["type"] == "aes256-gcm96"

    kms = boto3.client("kms")  # endpoint, region and credentials from the environment the fixture set
    aliases = {alias["AliasName"] for alias in kms.list_aliases()["Aliases"]}
    assert {f"alias/{key['alias']}" for key in seed["aws_kms"]["keys"]} <= aliases
    states = {key["alias"]: kms.describe_key(KeyId=key["key_id"])["KeyMetadata"]["KeyState"]
              for key in seed["aws_kms"]["keys"]}  # fmt: skip
    assert sorted(states.values()) == sorted(key["state"] for key in seed["aws_kms"]["keys"])

    register = yaml.safe_load(Path(lab["KEYOPS_LAB_REGISTER"]).read_text())["keys"]
    registered = {entry["name"] for entry in register}
    drift = seed["register"]["drift"]
    assert set(drift["in_register_not_in_backend"]) <= registered - transit_keys
    assert set(drift["in_backend_not_in_register"]) <= transit_keys - registered
    assert len(drift["mismatches"]) == 3

    cert_files = {Path(item["file"]).name for item in seed["certificates"]["files"]}
    assert cert_files == {path.name for path in Path(lab["KEYOPS_LAB_CERT_DIR"]).iterdir()}
    assert {item["kind"] for item in seed["certificates"]["files"]} >= {"valid", "expiring", "expired", "weak"}
    assert seed["non_compliant"], "the estate must hold keys that break the policy"


def test_seed_twice_is_a_no_op(lab: dict[str, Any], lab_cli: Callable[..., Any]) -> None:
    again = lab_cli("seed", Path(lab["state_dir"]), lab["port_base"])
    assert again.returncode == 0 and "already seeded" in again.stdout
