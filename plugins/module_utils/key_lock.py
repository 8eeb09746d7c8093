# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: a lock per key that works across controllers, kept in Vault KV v2 with check-and-set writes.

Each lock is one KV v2 secret, ``<prefix>/<key>``. Taking it is a write with ``cas`` set to the version read (0 when
the secret does not exist yet), so of two controllers racing for the same key exactly one write succeeds; the
other re-reads and finds the lock held. Releasing writes a ``released`` version (with ``cas`` too), so the KV
version history is also the history of who held the key and when. A lock whose ``expires`` has passed is stale:
its run died without releasing it, and the next run may take it over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import Vault, check_mount
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import Conflict, InvalidInput, KeyNotFound
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, parse_time

LOCK_FORMAT = "keyops-lock/1"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_CAS_MISMATCH = ("check-and-set", "cas", "did not match")


@dataclasses.dataclass
class LockState:
    """What a lock secret says, and the KV version it was read at (0: no secret yet)."""

    key: str
    version: int
    data: dict[str, Any] | None

    @property
    def held(self) -> bool:
        return bool(self.data) and self.data.get("state") == "held"

    def expired(self, now: float) -> bool:
        expires = parse_time((self.data or {}).get("expires"))
        return expires is None or expires.timestamp() <= now

    def holder(self) -> dict[str, Any]:
        data = self.data or {}
        return {field: data.get(field) for field in ("owner", "run_id", "operator", "acquired", "expires")}


def lock_path(prefix: str, key: str) -> str:
    """The KV path of a key's lock: readable, and unique even when two keys clean up to the same text."""
    if not key or not key.strip():
        raise InvalidInput("Take key lock", None, "a key name is empty", "List every key in keys by its name")
    readable = _UNSAFE.sub("_", key.strip()).strip("_")[:96] or "key"
    suffix = hashlib.sha256(key.strip().encode("utf-8")).hexdigest()[:8]
    return f"{prefix.strip('/')}/{readable}-{suffix}"


def _cas_mismatch(error: Exception) -> bool:
    text = str(error).lower()
    return any(marker in text for marker in _CAS_MISMATCH)


class KvLocks:
    """Locks in one KV v2 mount under one prefix."""

    def __init__(
        self,
        vault: Vault,
        mount: str,
        prefix: str,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.vault = vault
        self.mount = check_mount(mount)
        self.prefix = prefix
        self.clock = clock
        self.sleep = sleep

    @property
    def kv(self) -> Any:
        return self.vault.client.secrets.kv.v2

    def read(self, key: str) -> LockState:
        path = lock_path(self.prefix, key)
        try:
            with self.vault.call("Read key lock", key, remedy_404="Check the KV v2 mount (mount option)"):
                answer = self.kv.read_secret_version(path=path, mount_point=self.mount, raise_on_deleted_version=False)
        except KeyNotFound:
            return LockState(key, 0, None)
        version = int(((answer.get("data") or {}).get("metadata") or {}).get("version") or 0)
        data = (answer.get("data") or {}).get("data")
        return LockState(key, version, data if isinstance(data, dict) else None)

    def _write(self, key: str, version: int, data: dict[str, Any]) -> bool:
        """Write ``data`` if the lock is still at ``version``; False when another writer got there first."""
        path = lock_path(self.prefix, key)
        try:
            with self.vault.call("Write key lock", key):
                self.kv.create_or_update_secret(path=path, secret=data, cas=version, mount_point=self.mount)
        except InvalidInput as error:
            if _cas_mismatch(error.__cause__ or error):
                return False
            raise
        return True

    def try_acquire(self, key: str, owner: dict[str, str], ttl: int) -> tuple[str, LockState]:
        """One attempt: ``acquired``, ``refreshed``, ``taken_over`` (stale lock) or ``held`` (by someone else)."""
        for _race in range(5):
            state = self.read(key)
            now = self.clock()
            mine = state.held and (state.data or {}).get("owner") == owner["owner"]
            if state.held and not mine and not state.expired(now):
                return "held", state
            outcome = "refreshed" if mine else "taken_over" if state.held else "acquired"
            data = {
                "format": LOCK_FORMAT,
                "state": "held",
                "key": key,
                **owner,
                "acquired": (state.data or {}).get("acquired") if mine else iso_utc(now),
                "expires": iso_utc(now + ttl),
                "ttl": ttl,
            }
            if outcome == "taken_over":
                data["took_over_from"] = (state.data or {}).get("owner")
            if self._write(key, state.version, data):
                return outcome, LockState(key, state.version + 1, data)
        raise Conflict(
            "Take key lock", key, "the lock changed under every attempt (five writers raced for it)", "Run again"
        )

    def acquire(self, key: str, owner: dict[str, str], ttl: int, wait_timeout: float, poll: float) -> dict[str, Any]:
        deadline = self.clock() + wait_timeout
        waited = 0.0
        while True:
            outcome, state = self.try_acquire(key, owner, ttl)
            if outcome != "held":
                result = {"key": key, "status": outcome, "waited_s": round(waited, 1), **state.holder()}
                if outcome == "taken_over":
                    result["took_over_from"] = (state.data or {}).get("took_over_from")
                return result
            if self.clock() >= deadline:
                holder = state.holder()
                raise Conflict(
                    "Take key lock",
                    key,
                    f"another run holds it: '{holder['owner']}' since {holder['acquired']} "
                    f"(until {holder['expires']}); waited {round(waited)} s",
                    "Wait for that run to finish and run again (or raise wait_timeout); if that run died, its lock "
                    f"expires at {holder['expires']}, or its owner can release it with state=released",
                    holder=holder,
                )
            pause = min(poll, max(deadline - self.clock(), 0.0))
            self.sleep(pause)
            waited += pause

    def release(self, key: str, owner: str, force: bool) -> dict[str, Any]:
        for _race in range(5):
            state = self.read(key)
            if not state.held:
                return {"key": key, "status": "not_held", **state.holder()}
            if (state.data or {}).get("owner") != owner and not force:
                holder = state.holder()
                return {"key": key, "status": "held_by_other", **holder}
            data = dict(state.data or {}, state="released", released=iso_utc(self.clock()), released_by=owner)
            if self._write(key, state.version, data):
                return {"key": key, "status": "released", **state.holder()}
        raise Conflict("Release key lock", key, "the lock changed under every attempt", "Run again")

    def status(self, key: str) -> dict[str, Any]:
        state = self.read(key)
        now = self.clock()
        status = "free" if not state.held else "stale" if state.expired(now) else "held"
        return {"key": key, "status": status, **state.holder()}


def owner_of(params: dict[str, Any]) -> dict[str, str]:
    owner = params["owner"]
    return {"owner": owner, "run_id": params.get("run_id") or "", "operator": params.get("operator") or ""}


def run_key_lock(locks: KvLocks, params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Take or release the locks of ``keys``, in a fixed order so two runs on overlapping keys cannot deadlock."""
    keys = sorted(dict.fromkeys(key.strip() for key in params["keys"]))
    if params["ttl"] < 1:
        raise InvalidInput(
            "Take key lock", None, f"ttl {params['ttl']} is not positive", "Set ttl in seconds, e.g. 3600"
        )
    if check_mode:
        states = [locks.status(key) for key in keys]
        wanted = "released" if params["state"] == "released" else "acquired"
        mine = [item["status"] == "held" and item["owner"] == params["owner"] for item in states]
        changed = any(mine) if wanted == "released" else not all(mine)
        return {"changed": changed, "locks": states}
    if params["state"] == "released":
        results = [locks.release(key, params["owner"], params["force"]) for key in keys]
        return {"changed": any(item["status"] == "released" for item in results), "locks": results}

    taken: list[dict[str, Any]] = []
    try:
        for key in keys:
            taken.append(
                locks.acquire(key, owner_of(params), params["ttl"], params["wait_timeout"], params["poll_interval"])
            )
    except Conflict:
        # All or nothing: a run that cannot lock every key gives back the ones it took in this call.
        for item in taken:
            if item["status"] in ("acquired", "taken_over"):
                locks.release(item["key"], params["owner"], False)
        raise
    changed = any(item["status"] in ("acquired", "taken_over", "refreshed") for item in taken)
    return {"changed": changed, "locks": taken}
