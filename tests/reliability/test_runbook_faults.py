"""Fault injection on whole runbooks: the rotation and the compromise response playbooks killed with SIGKILL at a
seeded random moment, then run again with the same command (as their guides tell an operator after a cut run).

The kill moment is drawn between a little before the reference run's rotation and a little after it raised the
minimum decryption version (measured by watching Vault during the reference run). Each trial gets a key of its own
(three versions, 600 data keys in a SQLite store, a register naming the store); the oracle is hvac: after the rerun
the key was rotated exactly once (never twice), its minimum decryption version is the new version, every data key
is at that version and decrypts to the plaintext recorded at setup, and all of that equals what an uninterrupted
run of the same runbook reached.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.reliability import canaries, tally
from tests.reliability.harness import Run, demo_approvers_env
from tests.reliability.test_faults import sqlite_rows, vault_decrypt, version_of
from tests.support.playbook import ROOT
from tests.support.vault_deks import seed_store, vault_client

pytestmark = [pytest.mark.lab, pytest.mark.area("faults")]

PLAYBOOKS = Path(ROOT) / "playbooks"
DEKS = 600


@dataclass
class Estate:
    """One trial's key, store and register, and the command that runs the runbook on it."""

    name: str
    store: Path
    register: Path
    args: list[str]
    env: dict[str, str]
    plaintexts: dict[str, str] = field(default_factory=dict)


def make_estate(lab: dict[str, Any], folder: Path, runbook: str, label: str) -> Estate:
    client = vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])
    name = f"prod-{runbook[:4]}{label}x{secrets.token_hex(3)}-kek-20261203"
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "deks.sqlite"
    plaintexts = seed_store(client, str(store), name, DEKS, versions=3)
    canaries.add_plaintexts(plaintexts.values())
    register = folder / "register.yml"
    register.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {
                        "name": name,
                        "backend": "vault_transit",
                        "location": "transit",
                        "key_class": "kek",
                        "owner": "reliability",
                        "custodians": ["a.haddad", "m.okafor"],
                        "purpose": "fault injection trial",
                        "algorithm": "aes256-gcm96",
                        "rotation_period_days": 90,
                        "backup_location": "none (test key)",
                        "data_key_stores": [{"path": str(store), "table": "data_keys"}],
                    }
                ]
            },
            sort_keys=False,
        )
    )
    ref = f"{runbook.upper()[:3]}-{label}-{secrets.token_hex(2)}"
    extra: dict[str, Any] = {
        "keyops_register_path": str(register),
        "keyops_output_dir": str(folder / "out"),
        "keyops_change_ref": ref,
        "keyops_demo_approvals": True,
    }
    if runbook == "rotate":
        extra.update(keyops_rotate_keys=[name], keyops_rotate_backends=["vault_transit"])
    else:
        extra.update(keyops_compromised_key=name, keyops_compromise_reason="fault injection trial")
    extra_file = folder / "vars.json"
    extra_file.write_text(json.dumps(extra))
    args = ["-e", f"@{Path(lab['state_dir']) / 'estate.yml'}", "-e", f"@{extra_file}"]
    return Estate(name, store, register, args, demo_approvers_env(lab["state_dir"]), plaintexts)


def end_state(lab: dict[str, Any], estate: Estate) -> dict[str, Any]:
    client = vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])
    key = client.secrets.transit.read_key(estate.name)["data"]
    rows = [(item_id, ct, ctx) for item_id, _unused, ct, ctx in sqlite_rows(estate.store)]
    decrypted = vault_decrypt(client, estate.name, rows)
    return {
        "rotations": int(key["latest_version"]) - 3,
        "min_decryption_version": int(key["min_decryption_version"]) - 3,
        "histogram": dict(Counter(version_of(ct) for _unused1, ct, _unused2 in rows)),
        "lost": sum(1 for item_id, plaintext in estate.plaintexts.items() if decrypted.get(item_id) != plaintext),
        "count": len(rows),
    }


@pytest.fixture(scope="module")
def references(lab: dict[str, Any], outputs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each runbook once, uninterrupted: its end state and how long it takes."""
    found = {}
    for runbook in ("rotate", "compromise_response"):
        estate = make_estate(lab, tmp_path_factory.mktemp(f"reference-{runbook}"), runbook, "ref")
        client = vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])
        run = Run(PLAYBOOKS / f"{runbook}.yml", outputs, estate.env, verbosity=0, args=estate.args)
        first = last = None
        while run.process.poll() is None:
            key = client.secrets.transit.read_key(estate.name)["data"]
            now = time.monotonic() - run.started
            if first is None and int(key["latest_version"]) > 3:
                first = now
            if last is None and int(key["min_decryption_version"]) > 3:
                last = now
            time.sleep(0.1)
        run.wait()
        seconds = time.monotonic() - run.started
        assert run.rc == 0, f"{runbook} reference run failed:\n{run.stdout[-3000:]}"
        state = end_state(lab, estate)
        assert state["lost"] == 0 and state["rotations"] == 1, state
        assert first is not None and last is not None
        # The changing part of the run - from a little before the rotation to a little after the minimum
        # decryption version is raised - is where a kill can cut something in half.
        window = (max(first - 2.0, 0.0), min(last + 1.0, seconds))
        found[runbook] = {
            "state": {k: v for k, v in state.items() if k != "lost"},
            "window": window,
            "changes": (first, last),
        }
        print(f"\n{runbook}: reference run {seconds:.1f} s, changes from {first:.1f} s to {last:.1f} s, {state}")
    return found


@pytest.mark.parametrize("runbook", ["rotate", "compromise_response"])
def test_runbook_killed_at_a_random_moment_then_rerun_ends_like_an_uninterrupted_run(
    lab: dict[str, Any],
    references: dict[str, Any],
    runbook: str,
    runbook_trial: int,
    request: pytest.FixtureRequest,
    outputs: Path,
    tmp_path: Path,
) -> None:
    reference = references[runbook]
    trial = runbook_trial
    rng = random.Random(f"{request.config.getoption('--fault-seed')}/{runbook}/{trial}")
    # The first trial aims at the middle of the reference run's changing part (the quick form has only that one);
    # the others are drawn from the whole window around it.
    delay = sum(reference["changes"]) / 2 if trial == 0 else rng.uniform(*reference["window"])
    estate = make_estate(lab, tmp_path, runbook, f"t{trial}")
    tally.add("faults", "trials")

    killed = Run(PLAYBOOKS / f"{runbook}.yml", outputs, estate.env, verbosity=0, args=estate.args)
    while time.monotonic() - killed.started < delay and killed.process.poll() is None:
        time.sleep(0.02)
    alive = killed.process.poll() is None
    killed.kill()
    at_kill = end_state(lab, estate)
    untouched = at_kill["rotations"] == 0 and at_kill["histogram"] == {"v1": 200, "v2": 200, "v3": 200}
    finished = {k: v for k, v in at_kill.items() if k != "lost"} == reference["state"]
    if alive and not untouched and not finished:
        tally.add("faults", "killed mid-run")

    rerun = Run(PLAYBOOKS / f"{runbook}.yml", outputs, estate.env, verbosity=0, args=estate.args).wait(timeout=900)
    state = end_state(lab, estate)
    differs = int({k: v for k, v in state.items() if k != "lost"} != reference["state"])
    tally.add("faults", "data keys verified", state["count"])
    tally.add("faults", "lost", state["lost"])
    tally.add("faults", "wrapped twice", max(state["rotations"] - 1, 0))
    tally.add("faults", "end state differs", differs)

    context = f"{runbook} trial {trial}: killed at {delay:.1f} s (alive={alive}), state then {at_kill}"
    print(f"\n{context}")
    assert rerun.rc == 0, f"{context}; the rerun failed:\n{rerun.stdout[-3000:]}"
    assert state["lost"] == 0, f"{context}: {state['lost']} data keys no longer decrypt"
    assert state["rotations"] == 1, f"{context}: rotated {state['rotations']} times"
    assert not differs, f"{context}: end state {state} differs from {reference['state']}"
    tally.add("faults", "trials passed")
