"""Concurrency: two runs on the same key at once (two operators, two AWX jobs on different nodes) are serialised by
keyops.runbooks.key_lock, a check-and-set lock in Vault KV v2 that works across controllers (the runs share
nothing but the Vault server).

Each run is a real ansible-playbook: take the lock, hold it for a critical section whose start and end it records,
release it. Two runs start together; the one that loses is told who holds the key (or waits, then goes), the
critical sections never overlap. A run killed while holding the lock leaves it stale; after the lock's ttl the next
run takes it over and says from whom.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.keyops.runbooks.plugins.module_utils.key_lock import lock_path
from tests.reliability import tally
from tests.reliability.harness import Run, write_playbook
from tests.support.vault_deks import vault_client

pytestmark = [pytest.mark.lab, pytest.mark.area("concurrency")]


def locked_run(
    folder: Path, owner: str, key: str, hold_s: float, wait_timeout: int = 0, ttl: int = 600, release: bool = True
) -> Path:
    """A playbook that takes the lock, records its critical section in ``<owner>.json`` and releases it."""
    tasks: list[dict[str, Any]] = [
        {
            "name": "lock",
            "keyops.runbooks.key_lock": {
                "keys": [key],
                "owner": owner,
                "operator": owner.split("/")[0],
                "ttl": ttl,
                "wait_timeout": wait_timeout,
                "poll_interval": 0.2,
            },
        },
        {"name": "start", "ansible.builtin.set_fact": {"critical_start": "{{ now(utc=true).timestamp() }}"}},
        {"name": "work", "ansible.builtin.wait_for": {"timeout": hold_s}},
        {
            "name": "record",
            "ansible.builtin.copy": {
                "dest": str(folder / f"{owner.replace('/', '_')}.json"),
                "content": '{"start": {{ critical_start }}, "end": {{ now(utc=true).timestamp() }}}',
                "mode": "0600",
            },
        },
    ]
    if release:
        tasks.append(
            {"name": "unlock", "keyops.runbooks.key_lock": {"keys": [key], "owner": owner, "state": "released"}}
        )
    return write_playbook(folder, owner.replace("/", "_"), tasks)


STALE_TTL = 15


def lock_holder(client: Any, path: str) -> str | None:
    try:
        data = client.secrets.kv.v2.read_secret_version(path, mount_point="secret", raise_on_deleted_version=False)
    except Exception:
        return None
    lock = data["data"]["data"]
    return lock.get("owner") if lock.get("state") == "held" else None


def intervals(folder: Path) -> list[tuple[float, float]]:
    return sorted(
        (data["start"], data["end"])
        for data in (json.loads(path.read_text()) for path in folder.glob("*.json"))
    )  # fmt: skip


def overlapping(spans: list[tuple[float, float]]) -> int:
    return sum(1 for (_unused1, end), (start, _unused2) in itertools.pairwise(spans) if start < end)


def test_two_runs_started_together_on_one_key_one_wins_the_other_is_told(
    lab: dict[str, Any], outputs: Path, tmp_path: Path, trial: int
) -> None:
    tally.add("concurrency", "trials")
    tally.add("concurrency", "races")
    key = f"transit/race-{trial}-{int(time.time())}-kek-20261203"
    runs = [
        Run(locked_run(tmp_path, f"{who}/run-{trial}", key, hold_s=2), outputs, verbosity=0) for who in ("alice", "bob")
    ]
    for run in runs:
        run.wait(timeout=120)

    results = [run.results().get("lock", {}) for run in runs]
    won = [result for result in results if not result.get("failed")]
    lost = [result for result in results if result.get("failed")]
    both = overlapping(intervals(tmp_path))
    tally.add("concurrency", "both held at once", both + max(len(won) - 1, 0))
    assert len(won) == 1 and len(lost) == 1, [result.get("msg") for result in results]
    holder = won[0]["locks"][0]["owner"]
    message = lost[0]["msg"]
    assert holder in message and key in message, message
    tally.add("concurrency", "waiters told")
    tally.add("concurrency", "trials passed")


def test_a_run_that_waits_goes_after_the_holder_releases(lab: dict[str, Any], outputs: Path, tmp_path: Path) -> None:
    tally.add("concurrency", "trials")
    key = f"transit/wait-{int(time.time())}-kek-20261203"
    first = Run(locked_run(tmp_path, "alice/first", key, hold_s=3), outputs, verbosity=0)
    time.sleep(0.5)
    second = Run(locked_run(tmp_path, "bob/second", key, hold_s=1, wait_timeout=60), outputs, verbosity=0)
    first.wait(timeout=120)
    second.wait(timeout=120)

    assert first.rc == 0 and second.rc == 0, (first.stdout[-1500:], second.stdout[-1500:])
    waited = second.results()["lock"]["locks"][0]["waited_s"]
    spans = intervals(tmp_path)
    tally.add("concurrency", "both held at once", overlapping(spans))
    assert len(spans) == 2 and overlapping(spans) == 0, spans
    assert waited > 0.5, f"the second run did not wait for the first ({waited} s)"
    tally.add("concurrency", "waiters told")
    tally.add("concurrency", "trials passed")


def test_a_killed_holders_lock_expires_and_the_next_run_takes_it_over(
    lab: dict[str, Any], outputs: Path, tmp_path: Path
) -> None:
    tally.add("concurrency", "trials")
    key = f"transit/stale-{int(time.time())}-kek-20261203"
    client = vault_client(lab["VAULT_ADDR"], lab["VAULT_TOKEN"])
    path = lock_path("keyops/locks", key)
    holder = Run(locked_run(tmp_path, "alice/dies", key, hold_s=60, ttl=STALE_TTL, release=False), outputs, verbosity=0)
    deadline = time.monotonic() + 60
    while lock_holder(client, path) != "alice/dies":
        assert holder.process.poll() is None and time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.1)
    taken = time.monotonic()
    holder.kill()

    refused = Run(locked_run(tmp_path, "bob/too-early", key, hold_s=0), outputs, verbosity=0).wait(timeout=120)
    assert time.monotonic() - taken < STALE_TTL, "the machine is too slow for this ttl: the early run came late"
    time.sleep(max(STALE_TTL - (time.monotonic() - taken), 0) + 0.5)
    taker = Run(locked_run(tmp_path, "carol/after-ttl", key, hold_s=0), outputs, verbosity=0).wait(timeout=120)

    early = refused.results().get("lock", {})
    assert early.get("failed") and "alice/dies" in early.get("msg", ""), early.get("msg")
    lock = taker.results()["lock"]["locks"][0]
    assert taker.rc == 0 and lock["status"] == "taken_over", lock
    assert "alice/dies" in json.dumps(taker.results()["lock"]), "the take-over does not say from whom"
    tally.add("concurrency", "stale locks taken over")
    tally.add("concurrency", "trials passed")


def test_check_and_set_lets_exactly_one_of_two_simultaneous_takers_win(
    lab: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    """The lock itself, raced hard: two controllers' worth of clients released by a barrier at the same instant,
    round after round, against the real KV v2 engine. Exactly one wins every round."""
    import threading

    from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import connect
    from ansible_collections.keyops.runbooks.plugins.module_utils.errors import Conflict
    from ansible_collections.keyops.runbooks.plugins.module_utils.key_lock import KvLocks

    rounds = 200 if request.config.getoption("--full", default=False) else 30
    params = {"url": lab["VAULT_ADDR"], "token": lab["VAULT_TOKEN"], "auth_method": "token", "timeout": 30}
    racers = [KvLocks(connect(params), "secret", "keyops/locks") for _unused in range(2)]
    doubles = 0
    for number in range(rounds):
        key = f"transit/cas-{number}-{int(time.time())}-kek-20261203"
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        # The defaults bind this round's objects on purpose (each thread appends to this round's list).
        def take(  # pylint: disable=dangerous-default-value
            locks: KvLocks,
            who: str,
            key: str = key,
            barrier: threading.Barrier = barrier,
            outcomes: list[str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                outcome, _unused = locks.try_acquire(key, {"owner": who, "run_id": who, "operator": who}, 60)
            except Conflict:
                outcome = "conflict"
            outcomes.append(outcome)

        threads = [threading.Thread(target=take, args=(locks, f"racer-{n}")) for n, locks in enumerate(racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        won = sum(1 for outcome in outcomes if outcome in ("acquired", "taken_over"))
        doubles += int(won != 1)
    tally.add("concurrency", "trials")
    tally.add("concurrency", "races", rounds)
    tally.add("concurrency", "both held at once", doubles)
    assert doubles == 0, f"{doubles} of {rounds} rounds did not have exactly one winner"
    tally.add("concurrency", "trials passed")
