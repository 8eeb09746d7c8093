# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where wrapped data keys live, and how a re-wrap walks them without losing one.

A store is read in batches (streamed, never loaded whole) and written back one
batch at a time. Each batch commit is atomic and is a compare-and-swap on the
old ciphertext, so a ciphertext changed by someone else is never overwritten
and an item is never wrapped twice. The same commit records a progress cursor,
so a run that is killed resumes after the last committed batch.

Kinds: ``sqlite`` (the embedded default), ``jsonl`` (one JSON object a line)
and ``url`` (``sqlite:///path``).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import re
import sqlite3
import tempfile
import zlib
from collections.abc import Iterator
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.errors import BackendUnavailable, InvalidInput
from ansible_collections.keyops.runbooks.plugins.module_utils.records import iso_utc, utc_now

STORE_ARGSPEC: dict[str, Any] = {
    "store": {
        "type": "dict",
        "required": True,
        "options": {
            "type": {"type": "str", "default": "sqlite", "choices": ["sqlite", "jsonl", "url"]},
            "path": {"type": "path"},
            "url": {"type": "str"},
            "table": {"type": "str", "default": "data_keys"},
            "id_column": {"type": "str", "default": "id"},
            "key_ref_column": {"type": "str", "default": "key_ref", "no_log": False},
            "ciphertext_column": {"type": "str", "default": "ciphertext"},
            "context_column": {"type": "str", "default": "context"},
        },
        "required_if": [("type", "sqlite", ["path"]), ("type", "jsonl", ["path"]), ("type", "url", ["url"])],
    },
    "partition_index": {"type": "int", "default": 0},
    "partition_count": {"type": "int", "default": 1},
}

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
PROGRESS_TABLE = "keyops_progress"


@dataclasses.dataclass(frozen=True)
class DataKey:
    id: str
    key_ref: str
    ciphertext: str
    context: str | None = None


@dataclasses.dataclass(frozen=True)
class Update:
    id: str
    old_ciphertext: str
    new_ciphertext: str
    new_key_ref: str


@dataclasses.dataclass(frozen=True)
class Partition:
    """A stable slice of the store's ids: ``crc32(id) % count == index``. Slices are disjoint and cover all ids."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InvalidInput(
                "Partition",
                None,
                f"partition_index {self.index} is outside 0..{self.count - 1}",
                "Set partition_index below partition_count (AWX job slicing passes both)",
            )

    @property
    def whole(self) -> bool:
        return self.count == 1

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, item_id: str) -> bool:
        return self.whole or slice_of(item_id, self.count) == self.index


WHOLE = Partition()


def slice_of(item_id: str, count: int) -> int:
    return zlib.crc32(item_id.encode("utf-8")) % count


@dataclasses.dataclass
class Progress:
    job: str
    partition: str
    cursor: str | None = None
    done: int = 0
    failed: int = 0
    started: str | None = None
    finished: str | None = None


class DekStore(abc.ABC):
    """A table of wrapped data keys."""

    description: str

    @abc.abstractmethod
    def count(self, key_ref: str | None = None, partition: Partition = WHOLE) -> int:
        """How many data keys (optionally only those recorded under ``key_ref``)."""

    @abc.abstractmethod
    def batches(
        self, batch_size: int, partition: Partition = WHOLE, key_ref: str | None = None, after: str | None = None
    ) -> Iterator[tuple[list[DataKey], str]]:
        """Yield ``(items, cursor)`` in a stable order; ``cursor`` resumes after the batch."""

    @abc.abstractmethod
    def commit(self, updates: list[Update], progress: Progress) -> int:
        """Apply updates (compare-and-swap on the old ciphertext), add them to ``progress.done`` and save
        progress, atomically. Return how many were applied."""

    @abc.abstractmethod
    def load_progress(self, job: str, partition: str) -> Progress | None: ...

    @abc.abstractmethod
    def save_progress(self, progress: Progress) -> None: ...

    def finish(self) -> None:  # noqa: B027 - optional hook
        """Make every committed batch durable in the store's final form."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release handles."""

    def __enter__(self) -> DekStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _identifier(value: str, option: str) -> str:
    if not _IDENTIFIER.match(value or ""):
        raise InvalidInput(
            "Open data-key store",
            None,
            f"{option} '{value}' is not a plain SQL identifier",
            f"Set store.{option} to letters, digits and underscores only",
        )
    return value


class SqliteStore(DekStore):
    def __init__(
        self,
        path: str,
        table: str = "data_keys",
        id_column: str = "id",
        key_ref_column: str = "key_ref",
        ciphertext_column: str = "ciphertext",
        context_column: str = "context",
    ) -> None:
        if not path or not os.path.isfile(path):
            raise InvalidInput(
                "Open data-key store",
                None,
                f"SQLite file '{path}' does not exist",
                "Set store.path to the database that holds the wrapped data keys",
            )
        self.description = f"sqlite:{path}#{table}"
        self.table = _identifier(table, "table")
        self.columns = tuple(
            _identifier(name, option)
            for name, option in (
                (id_column, "id_column"),
                (key_ref_column, "key_ref_column"),
                (ciphertext_column, "ciphertext_column"),
                (context_column, "context_column"),
            )
        )
        try:
            self.connection = sqlite3.connect(path, timeout=60, isolation_level=None)
            self.connection.execute("PRAGMA journal_mode=WAL")
            self.connection.execute("PRAGMA synchronous=NORMAL")
            self.connection.create_function("keyops_slice", 2, slice_of, deterministic=True)
            self._check_table()
            self.connection.execute(
                f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (job TEXT NOT NULL, partition TEXT NOT NULL, "
                "cursor TEXT, done INTEGER NOT NULL, failed INTEGER NOT NULL, started TEXT, finished TEXT, "
                "updated TEXT, PRIMARY KEY (job, partition))"
            )
        except sqlite3.Error as error:
            raise BackendUnavailable(
                "Open data-key store",
                None,
                f"SQLite error on '{path}': {error}",
                "Check the path, its permissions and that the file is a SQLite database",
            ) from error

    def _check_table(self) -> None:
        found = {row[1] for row in self.connection.execute(f"PRAGMA table_info({self.table})")}
        if not found:
            raise InvalidInput(
                "Open data-key store",
                None,
                f"table '{self.table}' does not exist in the store",
                "Set store.table to the table that holds the wrapped data keys",
            )
        missing = [name for name in self.columns if name not in found]
        if missing:
            raise InvalidInput(
                "Open data-key store",
                None,
                f"table '{self.table}' has no column(s) {', '.join(missing)}",
                "Set store.id_column, key_ref_column, ciphertext_column and context_column",
            )

    def _where(self, partition: Partition, key_ref: str | None, after: str | None) -> tuple[str, list[Any]]:
        id_col, ref_col = self.columns[0], self.columns[1]
        clauses, params = [], []
        if after is not None:
            clauses.append(f"{id_col} > ?")
            params.append(after)
        if key_ref is not None:
            clauses.append(f"{ref_col} = ?")
            params.append(key_ref)
        if not partition.whole:
            clauses.append(f"keyops_slice({id_col}, ?) = ?")
            params.extend([partition.count, partition.index])
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def count(self, key_ref: str | None = None, partition: Partition = WHOLE) -> int:
        where, params = self._where(partition, key_ref, None)
        return self.connection.execute(f"SELECT COUNT(*) FROM {self.table}{where}", params).fetchone()[0]

    def batches(
        self, batch_size: int, partition: Partition = WHOLE, key_ref: str | None = None, after: str | None = None
    ) -> Iterator[tuple[list[DataKey], str]]:
        id_col, ref_col, ct_col, ctx_col = self.columns
        while True:
            where, params = self._where(partition, key_ref, after)
            rows = self.connection.execute(
                f"SELECT {id_col}, {ref_col}, {ct_col}, {ctx_col} FROM {self.table}{where} ORDER BY {id_col} LIMIT ?",
                [*params, batch_size],
            ).fetchall()
            if not rows:
                return
            items = [DataKey(str(row[0]), row[1], row[2], row[3]) for row in rows]
            after = items[-1].id
            yield items, after

    def commit(self, updates: list[Update], progress: Progress) -> int:
        id_col, ref_col, ct_col = self.columns[:3]
        cursor = self.connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            # One executemany: sqlite3 sums the rows each compare-and-swap changed into rowcount.
            cursor.executemany(
                f"UPDATE {self.table} SET {ct_col} = ?, {ref_col} = ? WHERE {id_col} = ? AND {ct_col} = ?",
                [(update.new_ciphertext, update.new_key_ref, update.id, update.old_ciphertext) for update in updates],
            )
            applied = max(cursor.rowcount, 0) if updates else 0
            progress.done += applied
            self._write_progress(cursor, progress)
            cursor.execute("COMMIT")
        except BaseException:
            if self.connection.in_transaction:
                cursor.execute("ROLLBACK")
            raise
        return applied

    def _write_progress(self, cursor: sqlite3.Cursor, progress: Progress) -> None:
        cursor.execute(
            f"INSERT OR REPLACE INTO {PROGRESS_TABLE} "
            "(job, partition, cursor, done, failed, started, finished, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                progress.job,
                progress.partition,
                progress.cursor,
                progress.done,
                progress.failed,
                progress.started,
                progress.finished,
                iso_utc(utc_now()),
            ),
        )

    def load_progress(self, job: str, partition: str) -> Progress | None:
        row = self.connection.execute(
            f"SELECT cursor, done, failed, started, finished FROM {PROGRESS_TABLE} WHERE job = ? AND partition = ?",
            (job, partition),
        ).fetchone()
        if row is None:
            return None
        return Progress(job, partition, row[0], row[1], row[2], row[3], row[4])

    def save_progress(self, progress: Progress) -> None:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        self._write_progress(cursor, progress)
        cursor.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()


class JsonLinesStore(DekStore):
    """One JSON object a line. Committed batches go to a fsynced journal beside the file first; ``finish``
    rewrites the file atomically (temp file + rename) and drops the journal, so a killed run loses nothing."""

    def __init__(
        self,
        path: str,
        id_column: str = "id",
        key_ref_column: str = "key_ref",
        ciphertext_column: str = "ciphertext",
        context_column: str = "context",
        **_: Any,
    ) -> None:
        if not path or not os.path.isfile(path):
            raise InvalidInput(
                "Open data-key store",
                None,
                f"JSON lines file '{path}' does not exist",
                "Set store.path to the file that holds the wrapped data keys",
            )
        self.path = path
        self.description = f"jsonl:{path}"
        self.journal_path = path + ".keyops-journal"
        self.fields = (id_column, key_ref_column, ciphertext_column, context_column)
        self.overlay: dict[str, tuple[str, str]] = {}
        self.progress: dict[tuple[str, str], Progress] = {}
        self._replay_journal()

    def _replay_journal(self) -> None:
        if not os.path.exists(self.journal_path):
            return
        intact = 0
        with open(self.journal_path, "rb") as journal:
            for line in journal:
                try:
                    entry = json.loads(line) if line.endswith(b"\n") else None
                except ValueError:
                    entry = None
                if entry is None:
                    break  # a torn last line from a killed run: everything before it was fsynced
                intact += len(line)
                if "progress" in entry:
                    saved = Progress(**entry["progress"])
                    self.progress[(saved.job, saved.partition)] = saved
                else:
                    self.overlay[entry["id"]] = (entry["ciphertext"], entry["key_ref"])
        if intact < os.path.getsize(self.journal_path):
            # Cut the torn tail off, or the next commit would be appended to it and be lost with it on a replay.
            os.truncate(self.journal_path, intact)

    def _rows(self) -> Iterator[tuple[int, DataKey]]:
        id_field, ref_field, ct_field, ctx_field = self.fields
        with open(self.path, encoding="utf-8") as stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    item_id = str(row[id_field])
                    ciphertext, key_ref = self.overlay.get(item_id, (row[ct_field], row[ref_field]))
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise InvalidInput(
                        "Read data-key store",
                        None,
                        f"line {number} of '{self.path}' is not a data-key record ({type(error).__name__})",
                        "Fix or remove that line",
                    ) from error
                yield number, DataKey(item_id, key_ref, ciphertext, row.get(ctx_field))

    def count(self, key_ref: str | None = None, partition: Partition = WHOLE) -> int:
        return sum(
            1
            for _line, item in self._rows()
            if (key_ref is None or item.key_ref == key_ref) and partition.owns(item.id)
        )

    def batches(
        self, batch_size: int, partition: Partition = WHOLE, key_ref: str | None = None, after: str | None = None
    ) -> Iterator[tuple[list[DataKey], str]]:
        start = int(after or 0)
        batch: list[DataKey] = []
        number = start
        for number, item in self._rows():
            if number <= start or (key_ref is not None and item.key_ref != key_ref) or not partition.owns(item.id):
                continue
            batch.append(item)
            if len(batch) == batch_size:
                yield batch, str(number)
                batch = []
        if batch:
            yield batch, str(number)

    def _append_journal(self, entries: list[dict[str, Any]]) -> None:
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as journal:
            journal.write("".join(json.dumps(entry, sort_keys=True) + "\n" for entry in entries))
            journal.flush()
            os.fsync(journal.fileno())

    def commit(self, updates: list[Update], progress: Progress) -> int:
        applied = [
            update
            for update in updates
            if self.overlay.get(update.id, (update.old_ciphertext,))[0] == update.old_ciphertext
        ]
        entries: list[dict[str, Any]] = [
            {"id": update.id, "ciphertext": update.new_ciphertext, "key_ref": update.new_key_ref} for update in applied
        ]
        progress.done += len(applied)
        entries.append({"progress": dataclasses.asdict(progress)})
        self._append_journal(entries)
        for update in applied:
            self.overlay[update.id] = (update.new_ciphertext, update.new_key_ref)
        self.progress[(progress.job, progress.partition)] = progress
        return len(applied)

    def load_progress(self, job: str, partition: str) -> Progress | None:
        return self.progress.get((job, partition))

    def save_progress(self, progress: Progress) -> None:
        self._append_journal([{"progress": dataclasses.asdict(progress)}])
        self.progress[(progress.job, progress.partition)] = progress

    def finish(self) -> None:
        if not self.overlay:
            return
        id_field, ref_field, ct_field = self.fields[:3]
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, temp_path = tempfile.mkstemp(prefix=".keyops-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out, open(self.path, encoding="utf-8") as source:
                for line in source:
                    if line.strip():
                        row = json.loads(line)
                        if str(row[id_field]) in self.overlay:
                            row[ct_field], row[ref_field] = self.overlay[str(row[id_field])]
                        line = json.dumps(row, sort_keys=True) + "\n"
                    out.write(line)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp_path, os.stat(self.path).st_mode & 0o777)
            os.replace(temp_path, self.path)
        except BaseException:
            if os.path.exists(temp_path):
                os.unlink(temp_path)
            raise
        # Progress survives in a fresh journal; the applied ciphertexts are now in the file itself.
        progress = [dataclasses.asdict(saved) for saved in self.progress.values()]
        os.unlink(self.journal_path)
        self.overlay.clear()
        if progress:
            self._append_journal([{"progress": entry} for entry in progress])


def open_store(options: dict[str, Any]) -> DekStore:
    """Open the store described by the module's ``store`` option."""
    kind = options.get("type") or "sqlite"
    columns = {
        name: options.get(name) or default
        for name, default in (
            ("table", "data_keys"),
            ("id_column", "id"),
            ("key_ref_column", "key_ref"),
            ("ciphertext_column", "ciphertext"),
            ("context_column", "context"),
        )
    }
    if kind == "sqlite":
        return SqliteStore(options["path"], **columns)
    if kind == "jsonl":
        columns.pop("table")
        return JsonLinesStore(options["path"], **columns)
    url = options.get("url") or ""
    if url.startswith("sqlite:///"):
        # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them.
        return SqliteStore(url[len("sqlite:///") :], **columns)
    raise InvalidInput(
        "Open data-key store",
        None,
        f"the URL scheme of '{url.split(':', 1)[0]}' is not supported",
        "Use a sqlite:/// URL, or store.type sqlite or jsonl",
    )


def partition_from(params: dict[str, Any]) -> Partition:
    return Partition(params.get("partition_index") or 0, params.get("partition_count") or 1)
