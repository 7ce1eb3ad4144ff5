"""The outbox's SQLite file: its rows and schema, how it is opened (lock, WAL, sync policy, format) and written.

What the queue does with the rows (bounds, sending order, acknowledgements) is
``gateway.device.outbox``; this module is everything about the file itself. One
process at a time holds the file (an ``flock`` on ``<file>.lock``); SQLite runs in WAL
mode with the sync policy chosen (``full``: every commit is fsynced; ``normal``: a
crash loses nothing, a power cut may lose the last commits). A :class:`Transaction`
writes the drop and refusal counters in the same commit as the messages they count.

>>> db, lock = open_database(None, SYNC_FULL)  # None: in memory
>>> sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
['counters', 'messages', 'sqlite_sequence', 'streams']
>>> lock is None
True
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

if sys.platform != "win32":
    import fcntl  # gateways run Linux; elsewhere there is no second-process guard

ALERT, DETECTION, STATUS, READING = "alert", "detection", "status", "reading"
# Lower is more important: with a backlog, alerts leave first and readings last.
PRIORITY = {ALERT: 0, DETECTION: 1, STATUS: 2, READING: 3}
KINDS = tuple(PRIORITY)

SYNC_FULL, SYNC_NORMAL = "full", "normal"
SYNC_POLICIES = (SYNC_FULL, SYNC_NORMAL)
FILE_NAME = "outbox.sqlite3"
WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024  # the WAL is truncated back to this after a checkpoint
FILE_FORMAT = 1  # PRAGMA user_version

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: an id is never reused, even after a delete
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    items INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_priority ON messages (priority, id);
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL,
    mark_ms INTEGER,         -- latest data time stored on this stream (resume point)
    at_mark INTEGER NOT NULL DEFAULT 0  -- how many messages of the stream carry exactly mark_ms
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# Counters kept in the file, so drops are still counted after a restart.
DROPPED_READINGS = "dropped_readings"
DROPPED_READING_MESSAGES = "dropped_reading_messages"
DROPPED_STATUS = "dropped_status"
REFUSED = "refused"  # PUBACKs with an error reason code (each refusal; the message is held and retried)
DROPPED_UNPUBLISHABLE = "dropped_unpublishable"  # readings or status MQTT can never carry (bad topic, too large)
OVER_BOUND = "over_bound"
PERSISTED = (DROPPED_READINGS, DROPPED_READING_MESSAGES, DROPPED_STATUS, REFUSED, DROPPED_UNPUBLISHABLE, OVER_BOUND)


class OutboxError(RuntimeError):
    """The outbox cannot be opened or written; the message says what to do."""


class Mark(NamedTuple):
    """Where a stream stands: its latest data time, and how many messages carry exactly that time.

    The count matters where several items share a time on one stream (two detectors
    deciding on the same night): a replay resumed after a crash skips exactly those.
    """

    time_ms: int
    count: int  # type: ignore[assignment]  # the public field name; it shadows tuple.count, which no one calls


@dataclass(frozen=True, slots=True)
class Message:
    """One stored message as ``Outbox.take`` hands it to the sender (a row of ``messages``)."""

    id: int
    stream: str
    seq: int
    kind: str
    payload: bytes
    created_ms: int
    retain: bool
    items: int
    size: int


def count_drop(kind: str, messages: int, items: int, counters: dict[str, int]) -> None:
    """Count dropped messages of one class: status messages one by one, readings by reading and by message."""
    if kind == STATUS:
        counters[DROPPED_STATUS] += messages
    else:
        counters[DROPPED_READINGS] += items
        counters[DROPPED_READING_MESSAGES] += messages


def outbox_path(data_dir: str | os.PathLike) -> Path:
    """The outbox file in a gateway's ``storage.data_dir``."""
    return Path(data_dir) / FILE_NAME


def open_database(path: Path | None, sync: str) -> tuple[sqlite3.Connection, IO[str] | None]:
    """Open (or create) the outbox file: the connection, and the lock file held while it is open.

    ``path`` None is an outbox in memory (no lock). Raises OutboxError, with what to do,
    when the folder cannot be written, another process holds the file, WAL mode is not
    available, or the file is damaged or of another format.
    """
    if path is None:
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.executescript(SCHEMA)
        return db, None
    where = path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        lock_file = open(path.with_name(path.name + ".lock"), "a+")
    except OSError as exc:
        raise OutboxError(
            f"cannot create the outbox in {where}: {exc.strerror or exc}; "
            "set storage.data_dir to a folder this user can write"
        ) from None
    if sys.platform != "win32":
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise OutboxError(
                f"another gateway process is using the outbox {path}; "
                "stop it first (two processes would send the same messages)"
            ) from None
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise OutboxError(
                f"the outbox {path} cannot use SQLite WAL mode (got {mode!r}); "
                "put storage.data_dir on a local disk, not a network share"
            )
        db.execute(f"PRAGMA synchronous={sync.upper()}")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, FILE_FORMAT):
            raise OutboxError(
                f"the outbox {path} has format {version}, this version reads "
                f"{FILE_FORMAT}; deliver it with the version that wrote it"
            )
        db.executescript(SCHEMA)
        if "at_mark" not in {row[1] for row in db.execute("PRAGMA table_info(streams)")}:
            # Written by the first version of this module, before marks counted their messages.
            db.execute("ALTER TABLE streams ADD COLUMN at_mark INTEGER NOT NULL DEFAULT 0")
        db.execute(f"PRAGMA user_version={FILE_FORMAT}")
    except sqlite3.DatabaseError as exc:
        lock_file.close()  # closing releases the flock
        raise OutboxError(
            f"the outbox {path} is damaged or not an outbox ({exc}); move it aside to "
            "start a new one (the messages in it would not be sent)"
        ) from None
    except OutboxError:
        lock_file.close()
        raise
    return db, lock_file


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT with counter increments written in the same transaction.

    Entering yields the counter increments to fill (names of PERSISTED). After the
    commit ``counted(increments)`` adds them to the cached counters; after a failure
    ``reload()`` re-reads the cached state, and an SQLite error becomes OutboxError.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        where: str,
        counted: Callable[[dict[str, int]], None],
        reload: Callable[[], None],
    ):
        self.db, self.where = db, where
        self.counted, self.reload = counted, reload
        self.deltas = dict.fromkeys(PERSISTED, 0)

    def __enter__(self) -> dict[str, int]:
        self.db.execute("BEGIN IMMEDIATE")
        return self.deltas

    def __exit__(self, exc_type, exc, tb) -> None:
        db = self.db
        if exc_type is None:
            try:
                for name, delta in self.deltas.items():
                    if delta:
                        db.execute(
                            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) "
                            "DO UPDATE SET value = value + excluded.value",
                            (name, delta),
                        )
                db.execute("COMMIT")
            except sqlite3.Error as commit_error:
                exc_type, exc = type(commit_error), commit_error
        if exc_type is not None:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self.reload()
            if isinstance(exc, sqlite3.Error):
                # Disk full, read-only file system, I/O error: say where, not a traceback.
                raise OutboxError(f"cannot write the outbox {self.where}: {exc}") from None
            return
        self.counted(self.deltas)


# ---- the statements the queue runs, inside its transactions --------------------------------------

_COLUMNS = "id, stream, seq, priority, payload, created_ms, retain, items, size"


def insert_message(
    db: sqlite3.Connection, stream: str, seq: int, priority: int, created_ms: int, items: int, retain: bool,
    size: int, payload: bytes, mark: int | None, at_mark: int,
) -> None:  # fmt: skip
    """Store one message as number ``seq`` of its stream, and the stream's next number and mark."""
    db.execute(
        "INSERT INTO messages (stream, seq, priority, created_ms, items, retain, size, payload) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (stream, seq, priority, created_ms, items, int(retain), size, payload),
    )
    db.execute(
        "INSERT INTO streams (stream, next_seq, mark_ms, at_mark) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (stream) DO UPDATE SET next_seq = excluded.next_seq, "
        "mark_ms = excluded.mark_ms, at_mark = excluded.at_mark",
        (stream, seq + 1, mark, at_mark),
    )


def delete_messages(db: sqlite3.Connection, ids: list[int]) -> None:
    """Delete the messages of these ids (in chunks: SQLite bounds the parameters of one statement)."""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        db.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk)


def oldest_after(db: sqlite3.Connection, priority: int, after_id: int, wanted: int) -> tuple[list[int], int, int]:
    """Messages of one class past ``after_id``, oldest first, until ``wanted`` bytes: (ids, bytes, readings)."""
    freed, items = 0, 0
    ids: list[int] = []
    while freed < wanted:
        rows = db.execute(
            "SELECT id, size, items FROM messages WHERE priority = ? AND id > ? ORDER BY id LIMIT 256",
            (priority, max([after_id, *ids])),
        ).fetchall()
        if not rows:
            break
        for row_id, row_size, row_items in rows:
            ids.append(row_id)
            freed += row_size
            items += row_items
            if freed >= wanted:
                break
    return ids, freed, items


def created_before(db: sqlite3.Connection, priority: int, after_id: int, before_ms: int) -> list[tuple[int, int, int]]:
    """(id, size, readings) of the messages of one class past ``after_id`` stored before ``before_ms``."""
    return db.execute(
        "SELECT id, size, items FROM messages WHERE priority = ? AND id > ? AND created_ms < ?",
        (priority, after_id, before_ms),
    ).fetchall()


def rows_by_id(db: sqlite3.Connection, ids: list[int]) -> list[tuple]:
    """The rows of these ids (the columns ``next_rows`` gives), in id order."""
    rows: list[tuple] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows += db.execute(f"SELECT {_COLUMNS} FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk)
    return sorted(rows)


def next_rows(db: sqlite3.Connection, cursor: dict[int, int], limit: int, taken: int, by_class: bool) -> list[tuple]:
    """Up to ``limit`` rows past each class's ``cursor``: in the order stored, or class by class (``by_class``).

    ``taken`` is how many rows past the lowest cursor are already taken (read past, then skipped).
    """
    if by_class:
        rows: list[tuple] = []
        for priority in sorted(cursor):
            if len(rows) >= limit:
                break
            rows += db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE priority = ? AND id > ? ORDER BY id LIMIT ?",
                (priority, cursor[priority], limit - len(rows)),
            ).fetchall()
        return rows
    candidates = db.execute(
        f"SELECT {_COLUMNS} FROM messages WHERE id > ? ORDER BY id LIMIT ?",
        (min(cursor.values()), limit + taken),
    ).fetchall()
    return [r for r in candidates if r[0] > cursor[r[3]]][:limit]
