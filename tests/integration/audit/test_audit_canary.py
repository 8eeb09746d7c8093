"""Secrets put through real module runs never reach a sink, the -vvvv output, or any file the run leaves.

Canaries: the lab's Vault token and PKCS#11 PIN given as task arguments, an EC private key PEM and a plaintext
data key in files a scan reads, and the HTTP event collector's token in the callback's own options.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.audit_peers import HecCollector
from tests.support.playbook import assert_no_canary, run_tasks

pytestmark = pytest.mark.lab


def files_text(*folders: Path) -> str:
    texts = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def test_canaries_never_reach_a_sink_the_output_or_a_file(audit, lab, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    (inputs / "service.key").write_text(pem)
    data_key = base64.b64encode(secrets.token_bytes(32)).decode()
    (inputs / "app.conf").write_text(f"[crypto]\ndata_key = {data_key}\n")
    hec_token = "hec-" + uuid.uuid4().hex
    canaries = [lab["VAULT_TOKEN"], lab["KEYOPS_PKCS11_PIN"], pem.splitlines()[1], data_key, hec_token]
    key = f"canary-{uuid.uuid4().hex[:8]}"

    tasks = [
        {
            "name": "create a key with an explicit token",
            "keyops.runbooks.vault_transit_key": {"name": key, "token": lab["VAULT_TOKEN"], "change_ref": "CHG-CANARY"},
        },
        {
            "name": "rotate it",
            "keyops.runbooks.vault_transit_key": {
                "name": key,
                "token": lab["VAULT_TOKEN"],
                "rotate": True,
                "change_ref": "CHG-CANARY",
            },
        },
        {
            "name": "read the HSM with an explicit PIN",
            "keyops.runbooks.pkcs11_key_info": {"user_pin": lab["KEYOPS_PKCS11_PIN"]},
        },
        {"name": "scan files holding key material", "keyops.runbooks.key_material_scan": {"paths": [str(inputs)]}},
        {
            "name": "a failing task with the token",
            "keyops.runbooks.vault_transit_key": {"name": "bad/name", "token": lab["VAULT_TOKEN"]},
            "ignore_errors": True,
        },
    ]
    with HecCollector(hec_token) as collector:
        env = dict(
            audit.env,
            KEYOPS_AUDIT_SINKS="file,syslog,hec",
            KEYOPS_AUDIT_HEC_URL=collector.url,
            KEYOPS_AUDIT_HEC_TOKEN=hec_token,
        )
        run = run_tasks(tasks, env=env, verbosity=4, callback="default")
        received = repr(collector.events)

    assert run.rc == 0, run.stdout[-3000:]
    events = audit.events()
    assert {event["action"] for event in events} >= {"create", "rotate"}
    assert any(event["outcome"] == "failure" for event in events)
    assert len(collector.events) == len(events)  # the anchor goes to syslog
    syslog = Path(lab["KEYOPS_LAB_SYSLOG_FILE"]).read_text()
    left_behind = files_text(*(path for path in tmp_path.iterdir() if path != inputs))
    assert_no_canary(canaries, run.stdout, run.stderr, received, syslog, left_behind)


def test_a_module_that_leaks_into_its_events_is_redacted_before_any_sink(audit, lab):
    seed = uuid.uuid4().hex
    canary = "LEAK-" + seed[::-1]
    env = dict(audit.env, KEYOPS_AUDIT_SINKS="file,syslog")

    run = run_tasks([{"name": "leaky module", "leaky_events": {"seed": seed}}], env=env)

    assert run.rc == 0
    [event] = audit.events()
    assert (event["action"], event["before"], event["after"]) == (
        "rotate",
        {"latest_version": 1},
        {"latest_version": 2},
    )
    assert_no_canary(
        [canary], audit.log.read_text(), Path(lab["KEYOPS_LAB_SYSLOG_FILE"]).read_text(), files_text(audit.spool)
    )
