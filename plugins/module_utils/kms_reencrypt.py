# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: re-encrypt a data-key store to a destination KMS key (keyops.runbooks.aws_kms_reencrypt).

The store is streamed in batches. Each batch is re-encrypted concurrently in a bounded pool sharing one botocore
client, checked (KMS must answer with the destination key), then committed atomically with the progress
cursor. Data keys under another key are always moved; data keys already under the destination key are
re-encrypted once per destination key material (a job named after the destination's last rotation), so a
re-run after a finished job changes nothing and a killed run resumes after its last committed batch.
Ciphertexts are only ever passed from the store to KMS and back: never logged, returned or written elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import collections
import concurrent.futures
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.approvals import require_approvals
from ansible_collections.keyops.runbooks.plugins.module_utils.audit import audit_event
from ansible_collections.keyops.runbooks.plugins.module_utils.backends.aws_kms import (
    BACKEND,
    BOTO_ERRORS,
    KeySnapshot,
    KmsClient,
    map_error,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.dek_store import (
    DataKey,
    DekStore,
    Partition,
    Progress,
    Update,
    open_store,
    partition_from,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import (
    BackendUnavailable,
    Conflict,
    IntegrityError,
    InvalidInput,
    KeyopsError,
)
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, utc_now

REENCRYPT_ARGSPEC: dict[str, Any] = {
    "destination_key": {"type": "str", "required": True, "no_log": False},
    "source_keys": {"type": "list", "elements": "str", "default": [], "no_log": False},
    "batch_size": {"type": "int", "default": 500},
    "max_workers": {"type": "int", "default": 16},
    "job": {"type": "str"},
    "progress_file": {"type": "path"},
    "policy": {"type": "dict"},
}
ACTION = "Re-encrypt data keys"
# Errors that belong to one stored item (its ciphertext or context); anything else stops the run.
ITEM_ERRORS = ("InvalidCiphertextException", "IncorrectKeyException")
MAX_REPORTED_IDS = 50


@dataclasses.dataclass
class Tally:
    reencrypted: int = 0
    failed: int = 0
    failed_ids: list[str] = dataclasses.field(default_factory=list)
    failure_codes: collections.Counter = dataclasses.field(default_factory=collections.Counter)


class ItemFailure(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class KeyRefs:
    """Canonical key ARNs for the key_ref values found in the store (resolved once each)."""

    def __init__(self, client: KmsClient) -> None:
        self.client = client
        self.cache: dict[str, str] = {}

    def arn(self, ref: str) -> str:
        if ref not in self.cache:
            if ref.startswith("arn:") and ":key/" in ref:
                self.cache[ref] = ref
            else:
                try:
                    self.cache[ref] = self.client.resolve_arn(ref, ACTION)
                except KeyopsError as error:
                    raise type(error)(
                        ACTION,
                        ref,
                        f"a data key in the store is recorded under this key_ref and {error.reason}",
                        "Fix the key_ref column of those rows, or restore the key",
                        **error.details,
                    ) from error
        return self.cache[ref]


def check_destination(dest: KeySnapshot) -> None:
    if dest.pending_deletion:
        raise Conflict(
            ACTION,
            dest.arn,
            f"the destination key is pending deletion ({dest.deletion_date})",
            "Cancel the deletion (aws_kms_key cancel_deletion=true) or pick another destination_key",
        )
    if dest.key_state != "Enabled":
        raise Conflict(
            ACTION,
            dest.arn,
            f"the destination key is {dest.state}",
            "Enable it (aws_kms_key enabled=true) or pick another destination_key",
        )
    if dest.key_spec != "SYMMETRIC_DEFAULT" or dest.key_usage != "ENCRYPT_DECRYPT":
        raise InvalidInput(
            ACTION,
            dest.arn,
            f"the destination key is {dest.key_spec}/{dest.key_usage}, not a symmetric encryption key",
            "Set destination_key to a SYMMETRIC_DEFAULT key",
        )


def check_source(client: KmsClient, arn: str, checked: set[str]) -> None:
    """A disabled or deleted source key cannot decrypt: refuse before any KMS call fails item by item."""
    if arn in checked:
        return
    source = KeySnapshot.from_metadata(client.describe(arn, ACTION))
    if source.pending_deletion:
        raise Conflict(
            ACTION,
            arn,
            f"data keys are wrapped under this key and it is pending deletion ({source.deletion_date})",
            "Cancel the deletion (aws_kms_key cancel_deletion=true) for the re-encrypt; it cannot decrypt otherwise",
        )
    if source.key_state != "Enabled":
        raise Conflict(
            ACTION,
            arn,
            f"data keys are wrapped under this key and it is {source.state}",
            "Enable it (aws_kms_key enabled=true) for the re-encrypt, then disable it again",
        )
    checked.add(arn)


def histogram(store: DekStore, partition: Partition, refs: KeyRefs, batch_size: int) -> dict[str, int]:
    counts: collections.Counter = collections.Counter()
    for items, _unused in store.batches(batch_size, partition):
        counts.update(item.key_ref for item in items)
    merged: collections.Counter = collections.Counter()
    for ref, count in counts.items():
        merged[refs.arn(ref)] += count
    return dict(sorted(merged.items()))


def write_progress_file(path: str | None, status: dict[str, Any]) -> None:
    """Done/total/rate/ETA for an operator polling an async run: counts only, written atomically, 0600."""
    if not path:
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp_path = tempfile.mkstemp(prefix=".keyops-progress-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(status, handle, sort_keys=True)
        os.chmod(temp_path, 0o600)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise


def encryption_context(item: DataKey) -> dict[str, str] | None:
    if not item.context:
        return None
    try:
        context = json.loads(item.context)
    except ValueError as error:
        raise ItemFailure("InvalidEncryptionContext") from error
    if not isinstance(context, dict):
        raise ItemFailure("InvalidEncryptionContext")
    return {str(name): str(value) for name, value in context.items()}


class Reencryptor:
    def __init__(self, client: KmsClient, dest: KeySnapshot, pool: concurrent.futures.Executor) -> None:
        self.client = client
        self.dest = dest
        self.pool = pool

    def one(self, item: DataKey) -> Update:
        try:
            blob = base64.b64decode(item.ciphertext, validate=True)
        except (binascii.Error, ValueError, TypeError) as error:
            raise ItemFailure("InvalidBase64") from error
        kwargs: dict[str, Any] = {"CiphertextBlob": blob, "DestinationKeyId": self.dest.arn}
        context = encryption_context(item)
        if context:
            kwargs["SourceEncryptionContext"] = context
            kwargs["DestinationEncryptionContext"] = context
        try:
            reply = self.client.client.re_encrypt(**kwargs)
        except BOTO_ERRORS as error:
            code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
            if code in ITEM_ERRORS:
                raise ItemFailure(code) from error
            raise map_error(error, ACTION, self.dest.arn, "ReEncrypt") from error
        if reply.get("KeyId") != self.dest.arn:
            raise ItemFailure("WrongDestinationKey")
        return Update(
            item.id, item.ciphertext, base64.b64encode(reply["CiphertextBlob"]).decode("ascii"), self.dest.arn
        )

    def submit(self, items: list[DataKey]) -> dict[concurrent.futures.Future, DataKey]:
        return {self.pool.submit(self.one, item): item for item in items}

    def collect(
        self, futures: dict[concurrent.futures.Future, DataKey], tally: Tally
    ) -> tuple[list[Update], KeyopsError | None]:
        """Wait for a submitted batch. Returns the updates that succeeded and the run-stopping error."""
        updates: list[Update] = []
        stop: KeyopsError | None = None
        for future in concurrent.futures.as_completed(futures):
            item = futures[future]
            try:
                update = future.result()
            except ItemFailure as failure:
                tally.failed += 1
                tally.failure_codes[failure.code] += 1
                if len(tally.failed_ids) < MAX_REPORTED_IDS:
                    tally.failed_ids.append(item.id)
                continue
            except KeyopsError as error:
                stop = stop or error
                continue
            updates.append(update)
        return updates, stop


def reencrypt(
    client: KmsClient, params: dict[str, Any], check_mode: bool, warn: Callable[[str], None]
) -> dict[str, Any]:
    if params["batch_size"] < 1 or params["max_workers"] < 1:
        raise InvalidInput(
            ACTION,
            params["destination_key"],
            "batch_size and max_workers must be 1 or more",
            "Set batch_size (default 500) and max_workers (default 16) to positive numbers",
        )
    dest = client.snapshot(params["destination_key"], action=ACTION)
    for message in dest.warnings:
        warn(message)
    check_destination(dest)
    refs = KeyRefs(client)
    sources = {client.resolve_arn(ref, ACTION) for ref in params["source_keys"]}
    partition = partition_from(params)
    marker = dest.last_rotated or dest.created or "original"
    job = params.get("job") or f"aws_kms_reencrypt {dest.arn} material {marker}"

    with open_store(params["store"]) as store:
        before = histogram(store, partition, refs, params["batch_size"])
        progress = store.load_progress(job, partition.label)
        # Data keys under the destination are current once this material's job finished.
        dest_pass = progress is None or progress.finished is None

        def in_scope(arn: str) -> bool:
            if sources and arn not in sources:
                return False
            return dest_pass or arn != dest.arn

        pending_by_key = {arn: count for arn, count in before.items() if in_scope(arn)}
        if dest_pass and progress is not None and progress.cursor is not None:
            pending_by_key = count_pending(store, partition, refs, in_scope, progress.cursor, params["batch_size"])
        pending = sum(pending_by_key.values())
        checked: set[str] = set()
        for arn in pending_by_key:
            check_source(client, arn, checked)
        if pending:
            require_approvals(
                "reencrypt",
                dest.arn,
                dest.key_class,
                params.get("approvals"),
                check_mode,
                params.get("policy"),
                list(dest.aliases),
            )

        tally = Tally()
        seconds = 0.0
        if pending and not check_mode:
            started = time.monotonic()
            if progress is None:
                progress = Progress(job, partition.label, started=iso_utc(utc_now()))
            cursor = progress.cursor if dest_pass else None
            workers = params["max_workers"]
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                worker = Reencryptor(client, dest, pool)
                try:
                    walk(
                        store,
                        partition,
                        worker,
                        refs,
                        in_scope,
                        checked,
                        progress,
                        cursor,
                        tally,
                        pending,
                        params,
                        started,
                    )
                finally:
                    # Committed batches become durable in the store's final form even when the run stops.
                    store.finish()
            if dest_pass:
                progress.finished = iso_utc(utc_now())
            progress.failed = tally.failed
            store.save_progress(progress)
            seconds = time.monotonic() - started
        after = (
            histogram(store, partition, refs, params["batch_size"])
            if pending and not check_mode
            else (predicted_histogram(before, pending_by_key, dest.arn))
        )

    rate = round(tally.reencrypted / seconds, 1) if seconds else None
    counts = {
        "total": sum(before.values()),
        "pending": pending,
        "reencrypted": tally.reencrypted,
        "failed": tally.failed,
        "skipped": sum(before.values()) - pending,
    }
    outcome = ("planned" if check_mode else "changed") if pending else "unchanged"
    detail = {
        "reencrypted": tally.reencrypted,
        "failed": tally.failed,
        "total": pending,
        "key_class": dest.key_class,
        "location": partition.label,
    }
    event = audit_event(
        "reencrypt",
        BACKEND,
        dest.arn,
        outcome,
        check_mode,
        {"histogram": before},
        {"histogram": after},
        params.get("change_ref"),
        params.get("approvals"),
        detail,
    )
    result = {
        "changed": bool(pending) and (check_mode or tally.reencrypted > 0),
        "destination_arn": dest.arn,
        "job": job,
        "partition": partition.label,
        "counts": counts,
        "before": before,
        "after": after,
        "seconds": round(seconds, 3),
        "rate_per_second": rate,
        "audit_events": [event],
        "diff": {"before": {"histogram": before}, "after": {"histogram": after}},
    }
    if tally.failed:
        raise IntegrityError(
            ACTION,
            dest.arn,
            f"{tally.failed} data key(s) could not be re-encrypted "
            f"({', '.join(f'{code}: {n}' for code, n in sorted(tally.failure_codes.items()))}); "
            "they keep their old ciphertext, which their old key still decrypts",
            "Inspect the listed ids in the store (corrupt ciphertext, wrong key_ref or encryption "
            "context), fix them and run again with a new job name",
            failed_ids=tally.failed_ids,
            **{name: value for name, value in result.items() if name != "changed"},
        )
    return result


def count_pending(
    store: DekStore, partition: Partition, refs: KeyRefs, in_scope: Callable[[str], bool], cursor: str, batch_size: int
) -> dict[str, int]:
    """In-scope data keys after a resume cursor (a killed run already committed everything before it)."""
    counts: collections.Counter = collections.Counter()
    for items, _unused in store.batches(batch_size, partition, after=cursor):
        counts.update(arn for arn in (refs.arn(item.key_ref) for item in items) if in_scope(arn))
    return dict(counts)


def predicted_histogram(before: dict[str, int], pending_by_key: dict[str, int], dest_arn: str) -> dict[str, int]:
    after = dict(before)
    for arn, count in pending_by_key.items():
        if arn == dest_arn:
            continue
        after[arn] -= count
        after[dest_arn] = after.get(dest_arn, 0) + count
    return dict(sorted((arn, count) for arn, count in after.items() if count))


def walk(
    store: DekStore,
    partition: Partition,
    worker: Reencryptor,
    refs: KeyRefs,
    in_scope: Callable[[str], bool],
    checked: set[str],
    progress: Progress,
    cursor: str | None,
    tally: Tally,
    pending: int,
    params: dict[str, Any],
    started: float,
) -> None:
    """Stream the store from ``cursor``; commit each batch with its cursor, or stop at the first systemic error
    with the batch's successes committed and the cursor left before the batch, so a resume redoes it.

    The next batch is read and submitted before the previous one is committed, so the pool never idles while
    SQLite commits; a batch in flight when the run stops is simply not committed (its old ciphertexts stay).
    """
    in_flight: tuple[dict[concurrent.futures.Future, DataKey], str] | None = None
    for items, batch_cursor in store.batches(params["batch_size"], partition, after=cursor):
        todo = []
        for item in items:
            arn = refs.arn(item.key_ref)
            if in_scope(arn):
                check_source(worker.client, arn, checked)
                todo.append(item)
        submitted = (worker.submit(todo), batch_cursor)
        if in_flight is not None:
            finish_batch(store, worker, in_flight, submitted, progress, tally, pending, params, started)
        in_flight = submitted
    if in_flight is not None:
        finish_batch(store, worker, in_flight, None, progress, tally, pending, params, started)


def finish_batch(
    store: DekStore,
    worker: Reencryptor,
    batch: tuple[dict[concurrent.futures.Future, DataKey], str],
    next_batch: tuple[dict[concurrent.futures.Future, DataKey], str] | None,
    progress: Progress,
    tally: Tally,
    pending: int,
    params: dict[str, Any],
    started: float,
) -> None:
    futures, batch_cursor = batch
    updates, stop = worker.collect(futures, tally)
    if stop is None:
        progress.cursor = batch_cursor
    progress.failed = tally.failed
    tally.reencrypted += store.commit(updates, progress)
    elapsed = max(time.monotonic() - started, 1e-6)
    rate = tally.reencrypted / elapsed
    write_progress_file(
        params.get("progress_file"),
        {
            "job": progress.job,
            "partition": progress.partition,
            "done": tally.reencrypted,
            "total": pending,
            "failed": tally.failed,
            "rate_per_second": round(rate, 1),
            "eta_seconds": round((pending - tally.reencrypted - tally.failed) / rate, 1) if rate else None,
            "done_in_job": progress.done,
            "updated": iso_utc(utc_now()),
        },
    )
    if stop is None:
        return
    if next_batch is not None:
        for future in next_batch[0]:
            future.cancel()
        concurrent.futures.wait(next_batch[0])
    if isinstance(stop, BackendUnavailable):
        raise BackendUnavailable(
            stop.action,
            stop.key_ref,
            f"{stop.reason}; {tally.reencrypted} data keys were committed before it",
            f"{stop.remedy}, then run again: the run resumes after the last committed batch",
        )
    raise stop
