"""key_lock against the lab's OpenBao KV v2: one holder at a time across processes, a clear message for the one
that waits or stops, stale locks taken over, all-or-nothing on several keys. hvac reads the KV as the oracle."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from typing import Any

import hvac
import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import connect
from ansible_collections.keyops.runbooks.plugins.module_utils.key_lock import KvLocks, lock_path
from tests.support.playbook import run_module, run_tasks

PREFIX = f"keyops/test-locks/{os.getpid()}"


def lock(keys: list[str], owner: str, **extra: Any) -> dict[str, Any]:
    return run_module("keyops.runbooks.key_lock", {"keys": keys, "owner": owner, "path_prefix": PREFIX, **extra})


def kv(lab: dict[str, Any], key: str) -> dict[str, Any]:
    client = hvac.Client(url=lab["VAULT_ADDR"], token=lab["VAULT_TOKEN"])
    return client.secrets.kv.v2.read_secret_version(
        lock_path(PREFIX, key), mount_point="secret", raise_on_deleted_version=False
    )["data"]


def test_second_owner_stops_with_the_holder_and_since_then_gets_it_after_release(lab: dict[str, Any]) -> None:
    key = f"transit/lock-a-{time.time_ns()}"
    first = lock([key], "INC-1/alice")
    assert first["locks"][0]["status"] == "acquired"
    assert kv(lab, key)["data"]["owner"] == "INC-1/alice"

    second = lock([key], "INC-1/bob")
    assert second.get("failed")
    assert "INC-1/alice" in second["msg"] and first["locks"][0]["acquired"] in second["msg"]
    assert "state=released" in second["msg"]

    released = lock([key], "INC-1/alice", state="released")
    assert released["locks"][0]["status"] == "released"
    assert kv(lab, key)["data"]["state"] == "released"
    assert lock([key], "INC-1/bob")["locks"][0]["status"] == "acquired"


def test_waiting_owner_gets_the_lock_when_the_holder_releases(lab: dict[str, Any]) -> None:
    key = f"transit/lock-b-{time.time_ns()}"
    assert lock([key], "holder")["locks"][0]["status"] == "acquired"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lock, [key], "waiter", wait_timeout=120, poll_interval=0.5)
        time.sleep(6)
        lock([key], "holder", state="released")
        result = waiting.result(timeout=180)
    assert result["locks"][0]["status"] == "acquired"
    assert result["locks"][0]["waited_s"] > 0


def test_stale_lock_is_taken_over_and_says_from_whom(lab: dict[str, Any]) -> None:
    key = f"transit/lock-c-{time.time_ns()}"
    lock([key], "dead-run", ttl=1)
    time.sleep(1.5)
    taken = lock([key], "next-run")
    assert taken["locks"][0]["status"] == "taken_over"
    assert taken["locks"][0]["took_over_from"] == "dead-run"
    assert kv(lab, key)["metadata"]["version"] == 2


def test_all_or_nothing_on_several_keys(lab: dict[str, Any]) -> None:
    free, held = f"transit/lock-d-{time.time_ns()}", f"transit/lock-e-{time.time_ns()}"
    lock([held], "other")
    refused = lock([free, held], "me")
    assert refused.get("failed")
    # the key it could take was given back, so nobody is left blocked by a run that did not start
    assert kv(lab, free)["data"]["state"] == "released"


def test_check_and_set_lets_exactly_one_of_two_racing_writers_win(lab: dict[str, Any]) -> None:
    key = f"transit/lock-f-{time.time_ns()}"
    params = {"url": lab["VAULT_ADDR"], "token": lab["VAULT_TOKEN"], "timeout": 10, "retries": 0}
    barrier = threading.Barrier(2)

    def race(owner: str) -> bool:
        locks = KvLocks(connect(params), "secret", PREFIX)
        state = locks.read(key)
        barrier.wait()
        return locks._write(key, state.version, {"state": "held", "owner": owner, "expires": "2999-01-01T00:00:00Z"})

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(race, ["a", "b"]))
    assert sorted(outcomes) == [False, True]
    assert kv(lab, key)["metadata"]["version"] == 1


@pytest.mark.parametrize("state", ["acquired", "released"])
def test_check_mode_changes_nothing(lab: dict[str, Any], state: str) -> None:
    key = f"transit/lock-g-{time.time_ns()}"
    lock([key], "holder")
    run = run_tasks(
        [
            {
                "name": "plan a lock",
                "keyops.runbooks.key_lock": {"keys": [key], "owner": "other", "state": state, "path_prefix": PREFIX},
                "check_mode": True,
            }
        ]
    )
    assert run.last["locks"][0]["status"] == "held" and run.last["locks"][0]["owner"] == "holder"
    assert kv(lab, key)["metadata"]["version"] == 1
