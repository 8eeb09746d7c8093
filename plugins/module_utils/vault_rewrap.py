# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: re-wrap every data key of a store to one transit key version, streamed and resumable.

The store is read in batches; each batch goes to the server as one or more ``batch_input`` requests sized to
the listener's JSON string limit, every answer is checked for the target version prefix, and the batch is
committed atomically together with the progress cursor. A killed run resumes after the last committed batch;
items already at the target version are never sent again. Ciphertexts and plaintexts never leave this module:
results carry ids, counts and versions only.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.backends.vault import (
    Vault,
    call_batch,
    ciphertext_version,
    clean_message,
    key_ref,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import (
    DataKey,
    DekStore,
    Partition,
    Progress,
    Update,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import IntegrityError, InvalidInput, KeyNotFound
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, utc_now

# The default OpenBao/Vault listener refuses a request with more than 1000 JSON strings (keys and values).
DEFAULT_MAX_JSON_STRINGS = 1000
# hvac sends "ciphertext": null and "batch_input" at the top level.
_TOP_LEVEL_STRINGS = 2
# Per item: "ciphertext" and its value, "key_version" (its value is a number); "context" and its value.
_ITEM_STRINGS = 3
_CONTEXT_STRINGS = 2
MAX_LISTED_FAILURES = 1000
PROGRESS_FILE_INTERVAL_S = 1.0
SCAN_BATCH = 5000


@dataclasses.dataclass
class RewrapRequest:
    mount: str
    name: str
    key_version: int | None = None
    batch_size: int | None = None
    max_request_json_strings: int = DEFAULT_MAX_JSON_STRINGS
    job: str | None = None
    progress_file: str | None = None
    partition: Partition = dataclasses.field(default_factory=Partition)
    # What the store's key_ref column holds for this key, when it is not <mount>/<name>.
    store_key_ref: str | None = None

    @property
    def ref(self) -> str:
        return key_ref(self.mount, self.name)

    @property
    def store_ref(self) -> str:
        return self.store_key_ref or self.ref


def histogram(store: DekStore, ref: str, partition: Partition) -> collections.Counter[int]:
    """How many data keys sit at each version (0: not a transit ciphertext)."""
    counts: collections.Counter[int] = collections.Counter()
    for items, _cursor in store.batches(SCAN_BATCH, partition, key_ref=ref):
        counts.update(ciphertext_version(item.ciphertext) for item in items)
    return counts


def check_sizes(request: RewrapRequest) -> None:
    """Refuse request sizes that would send no item: the histogram after would then claim work that was not done."""
    smallest = _TOP_LEVEL_STRINGS + _ITEM_STRINGS + _CONTEXT_STRINGS
    if request.batch_size is not None and request.batch_size < 1:
        raise InvalidInput(
            "Rewrap data keys",
            request.ref,
            f"batch_size {request.batch_size} is below 1",
            "Leave batch_size out to size requests from max_request_json_strings, or set it to 1 or more",
        )
    if request.max_request_json_strings < smallest:
        raise InvalidInput(
            "Rewrap data keys",
            request.ref,
            f"max_request_json_strings {request.max_request_json_strings} cannot hold one item ({smallest} strings)",
            "Set max_request_json_strings to the listener's limit (default 1000)",
        )


def target_version(vault: Vault, request: RewrapRequest) -> int:
    """The version to wrap under: the latest, or the one asked for, if it may still encrypt."""
    ref = request.ref
    try:
        with vault.call("Read transit key", ref):
            data = vault.transit.read_key(request.name, mount_point=request.mount)["data"]
    except KeyNotFound as error:
        raise KeyNotFound(
            "Rewrap data keys", ref, "the transit key does not exist", "Check the name and mount options"
        ) from error
    if not data.get("supports_encryption"):
        raise InvalidInput(
            "Rewrap data keys",
            ref,
            f"a key of type '{data.get('type')}' does not encrypt",
            "Name an encryption key (for example aes256-gcm96)",
        )
    latest = int(data["latest_version"])
    floor = max(int(data.get("min_encryption_version") or 0), int(data.get("min_decryption_version") or 1))
    target = request.key_version or latest
    if not floor <= target <= latest:
        raise InvalidInput(
            "Rewrap data keys",
            ref,
            f"key_version {target} is outside {floor}..{latest}, the versions that may encrypt",
            "Leave key_version out for the latest, or pick one in range",
        )
    return target


def _chunks(items: list[DataKey], fixed: int | None, budget: int) -> list[list[DataKey]]:
    """Split a store batch into requests that fit the server's JSON string budget (or a fixed size)."""
    if fixed:
        return [items[start : start + fixed] for start in range(0, len(items), fixed)]
    chunks: list[list[DataKey]] = []
    current: list[DataKey] = []
    used = _TOP_LEVEL_STRINGS
    for item in items:
        cost = _ITEM_STRINGS + (_CONTEXT_STRINGS if item.context else 0)
        if current and used + cost > budget:
            chunks.append(current)
            current, used = [], _TOP_LEVEL_STRINGS
        current.append(item)
        used += cost
    if current:
        chunks.append(current)
    return chunks


class ProgressFile:
    """A small JSON file an async task can poll: counts, rate and ETA, never a ciphertext."""

    def __init__(self, path: str | None, job: str, ref: str, clock: Callable[[], float]) -> None:
        self.path = path
        self.job = job
        self.ref = ref
        self.clock = clock
        self.started = clock()
        self.last_write = 0.0

    def write(
        self, processed: int, total: int, rewrapped: int, failed: int, rewrapped_now: int, finished: bool = False
    ) -> None:
        if not self.path:
            return
        now = self.clock()
        if not finished and now - self.last_write < PROGRESS_FILE_INTERVAL_S:
            return
        self.last_write = now
        elapsed = max(now - self.started, 1e-9)
        rate = processed / elapsed
        body = {
            "job": self.job,
            "key_ref": self.ref,
            "done": processed,
            "total": total,
            "rewrapped": rewrapped,
            "failed": failed,
            "rate_per_s": round(rewrapped_now / elapsed, 1),
            "eta_s": None if finished or not rate else round(max(total - processed, 0) / rate, 1),
            "finished": finished,
            # Which process to watch (or stop) when a run started with async must be interrupted.
            "pid": os.getpid(),
            "updated": iso_utc(utc_now()),
        }
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, temp = tempfile.mkstemp(prefix=".keyops-progress-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(body, handle)
            os.chmod(temp, 0o600)
            os.replace(temp, self.path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise


def rewrap_store(
    vault: Vault,
    store: DekStore,
    request: RewrapRequest,
    check_mode: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Re-wrap every data key of ``request.ref`` below the target version; return counts, never values."""
    ref = request.ref
    check_sizes(request)
    target = target_version(vault, request)
    job = request.job or f"rewrap:{ref}:v{target}"
    label = request.partition.label
    saved = store.load_progress(job, label)
    resuming = saved is not None and not saved.finished
    result: dict[str, Any] = {
        "key_ref": ref,
        "target_version": target,
        "job": job,
        "partition": label,
        "rewrapped": 0,
        "refused": 0,
        "failures": [],
        "conflicts": 0,
        "resumed": resuming,
    }

    if check_mode:
        before = histogram(store, request.store_ref, request.partition)
        planned: collections.Counter[int] = collections.Counter()
        for version, count in before.items():
            planned[target if 0 < version < target else version] += count
        _counts(result, before, target)
        result.update(changed=result["pending"] > 0, histogram_after=_named(planned))
        return result

    # A fresh run learns the histogram before from its own pass over the store; a resumed one cannot (the
    # items before its cursor are not read again), so it scans first.
    scanned_before = histogram(store, request.store_ref, request.partition) if resuming else None
    progress = saved if resuming and saved else Progress(job, label, started=iso_utc(utc_now()))
    done_before, failed_before = progress.done, progress.failed
    # The total only feeds the progress file: without one, no counting pass over the store.
    total = store.count(request.store_ref, request.partition) if request.progress_file else 0
    tracker = ProgressFile(request.progress_file, job, ref, clock)
    started = clock()

    prefix = f"vault:v{target}:"
    budget = request.max_request_json_strings
    fixed = request.batch_size
    read_size = fixed or max(1, (budget - _TOP_LEVEL_STRINGS) // _ITEM_STRINGS)
    failures: list[dict[str, Any]] = []
    seen: collections.Counter[int] = collections.Counter()
    moved: collections.Counter[int] = collections.Counter()
    failed_now = conflicts = processed = 0
    committed = resuming
    rewrap = vault.transit.rewrap_data

    def send(todo: list[DataKey]) -> list[tuple[DataKey, dict[str, Any]]]:
        """Rewrap one store batch (one request per chunk) and pair each item with its answer."""
        answered: list[tuple[DataKey, dict[str, Any]]] = []
        for chunk in _chunks(todo, fixed, budget):
            batch_input = [
                {"ciphertext": item.ciphertext, "key_version": target, "context": item.context}
                if item.context
                else {"ciphertext": item.ciphertext, "key_version": target}
                for item in chunk
            ]
            with vault.call("Rewrap data keys", ref):
                answer = call_batch(
                    rewrap, request.name, ciphertext=None, batch_input=batch_input, mount_point=request.mount
                )
            results = (answer.get("data") or {}).get("batch_results") or []
            if len(results) != len(chunk):
                raise IntegrityError(
                    "Rewrap data keys",
                    ref,
                    f"the server answered {len(results)} results for "
                    f"{len(chunk)} items; nothing of this batch was committed",
                    "Run again: the run resumes after the last committed batch",
                )
            answered.extend(zip(chunk, results, strict=True))
        return answered

    def settle(sent: concurrent.futures.Future, invalid: list[str], cursor: str, read_so_far: int) -> None:
        """Check one batch's answers and commit it with its cursor (batches settle in order, one at a time)."""
        nonlocal failed_now, conflicts, committed
        for item_id in invalid:
            failed_now += 1
            _note(failures, item_id, "not a transit ciphertext (no vault:vN: prefix)")
        updates: list[Update] = []
        for item, answered in sent.result():
            new = answered.get("ciphertext")
            if new and new.startswith(prefix):
                updates.append(Update(item.id, item.ciphertext, new, item.key_ref))
            else:
                failed_now += 1
                moved[ciphertext_version(item.ciphertext)] -= 1
                reason = (
                    clean_message(answered["error"])
                    if answered.get("error")
                    else f"the answer is not at version {target}"
                )
                _note(failures, item.id, reason)
        progress.cursor = cursor
        progress.failed = failed_before + failed_now
        # Batches with nothing to write are not committed: a run that changes nothing leaves the store untouched
        # (a killed run then re-reads them, which is harmless).
        if updates:
            committed = True
            conflicts += len(updates) - store.commit(updates, progress)
        tracker.write(read_so_far, total, progress.done, failed_now, progress.done - done_before)

    # The next batch is on the wire while this one is checked and committed, so the server's work and ours overlap;
    # batches still commit one after the other, in store order, and a failed request stops the run after the batches
    # before it were committed.
    in_flight: tuple[concurrent.futures.Future, list[str], str, int] | None = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as sender:
        for items, cursor in store.batches(
            read_size, request.partition, key_ref=request.store_ref, after=progress.cursor
        ):
            todo, invalid = [], []
            for item in items:
                version = ciphertext_version(item.ciphertext)
                seen[version] += 1
                if version == 0:
                    invalid.append(item.id)
                elif version < target:
                    todo.append(item)
                    moved[version] += 1
            processed += len(items)
            sent = sender.submit(send, todo)
            if in_flight is not None:
                settle(*in_flight)
            in_flight = (sent, invalid, cursor, processed)
        if in_flight is not None:
            settle(*in_flight)

    if committed:
        progress.finished = iso_utc(utc_now())
        store.save_progress(progress)
        store.finish()
    seconds = clock() - started
    rewrapped = progress.done - done_before
    tracker.write(total, total, progress.done, failed_now, rewrapped, finished=True)

    before = scanned_before if scanned_before is not None else seen
    if conflicts:
        after = histogram(store, request.store_ref, request.partition)
    else:
        # Every update was applied: the histogram after follows from the one before, without a second scan.
        after = before - moved
        after[target] += sum(moved.values())
    _counts(result, before, target)
    result.update(
        {
            "changed": rewrapped > 0,
            "rewrapped": rewrapped,
            "rewrapped_before_resume": done_before,
            "refused": failed_now,
            "failures": failures,
            "conflicts": conflicts,
            "histogram_after": _named(after),
            "remaining_below_target": sum(count for version, count in after.items() if version < target),
            "seconds": round(seconds, 3),
            "rate_per_s": round(rewrapped / seconds, 1) if seconds > 0 else None,
        }
    )
    return result


def _counts(result: dict[str, Any], before: collections.Counter[int], target: int) -> None:
    total = sum(before.values())
    pending = sum(count for version, count in before.items() if 0 < version < target)
    result.update(
        total=total,
        pending=pending,
        already_at_target=total - pending - before.get(0, 0),
        histogram_before=_named(before),
    )


def _note(failures: list[dict[str, Any]], item_id: str, reason: str) -> None:
    if len(failures) < MAX_LISTED_FAILURES:
        failures.append({"id": item_id, "reason": reason})


def _named(counts: collections.Counter[int]) -> dict[str, int]:
    return {("invalid" if version == 0 else f"v{version}"): count for version, count in sorted(counts.items())}
