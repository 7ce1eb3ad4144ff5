"""The gateway's durable outbox: a message is on disk before it is published and leaves only after the broker's PUBACK.

One SQLite file in WAL mode (stdlib ``sqlite3``). Each message belongs to a stream
(its MQTT topic) and gets the stream's next sequence number; it carries a class
(``alert``, ``detection``, ``status``, ``reading``) that decides what happens when the
outbox is full. The sender ``take``s messages, publishes them at QoS 1 and ``ack``s
them when the PUBACK arrives; only then are they deleted. Messages taken but not
acknowledged when the process dies are taken again by the next process, in order.

Bounds, and what they cost (docs/outbox.md has the reasoning and the measurements):

- size: ``max_bytes`` of queued messages (payload + topic + a fixed row overhead);
- age: status and readings older than ``max_age_s`` are dropped (a database with a
  one-month retention would drop them anyway);
- when full, the oldest status messages go first, then the oldest readings; alerts
  and detections are never dropped, even if that takes the outbox over its size.
  Every drop is counted (``outbox_dropped_readings`` counts readings, not messages).

Durability: ``sync="full"`` (the default) makes SQLite fsync the WAL at every commit,
so a message ``put`` (or ``put_many``) has returned for survives a power cut;
``"normal"`` survives a crash or ``kill -9`` but may lose the last commits on a power
cut. ``put_many`` stores several messages in one transaction, so one fsync (the
costly part of a put) covers them all; they are stored all together or not at all.

>>> box = Outbox(None, max_bytes=1_000)           # None: in memory, for tests and tools
>>> box.put("fs/s/g/alerts", b'{"state":"raised"}', ALERT)
1
>>> [box.put("fs/s/g/readings/F-1", b"x" * 300, READING, items=50) for _ in range(3)]
[1, 2, 3]
>>> box.stats()["outbox_backlog"], box.stats()["outbox_dropped_readings"]  # reading 1 made room for 3
(3, 50)
>>> sent = box.take(10); [(m.kind, m.seq) for m in sent]
[('alert', 1), ('reading', 2), ('reading', 3)]
>>> box.ack(m.id for m in sent); len(box)
0
>>> box.put_many([Outgoing("fs/s/g/readings/F-1", b"y", READING, items=50),
...               Outgoing("fs/s/g/readings/F-2", b"z", READING, items=50)])  # one transaction
[4, 1]
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, NamedTuple

from gateway.device import outbox_store as store
from gateway.device.outbox_bounds import DROP_ORDER, NEVER_DROPPED, OutboxBounds
from gateway.device.outbox_held import HeldMessages
from gateway.device.outbox_store import (
    ALERT,
    DETECTION,
    DROPPED_UNPUBLISHABLE,
    KINDS,
    PERSISTED,
    PRIORITY,
    READING,
    REFUSED,
    STATUS,
    SYNC_FULL,
    SYNC_POLICIES,
    Mark,
    Message,
    OutboxError,
)
from gateway.device.outbox_store import outbox_path as outbox_path  # re-exported: the outbox's public home

log = logging.getLogger(__name__)
# The outbox's public names (message classes and bounds are defined next door, used from here).
__all__ = ["ALERT", "DETECTION", "DROP_ORDER", "NEVER_DROPPED", "READING", "STATUS", "Mark", "Message", "Outbox"]
__all__ += ["OutboxError", "Outgoing", "outbox_path", "SYNC_FULL", "SYNC_POLICIES"]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_AGE_S = 30 * 86_400
# Counted per message on top of payload and topic (row header, index entries), so a
# flood of tiny messages still reaches the bound.
ROW_OVERHEAD_BYTES = 64
# Below this many untaken messages they leave in the order they were made; above it
# (a backlog after an outage) alerts and detections jump the queue of readings.
BACKLOG_MESSAGES = 100
RETRY_FIRST_S = 1.0  # a message the broker refused is sent again after this, doubling each refusal,
RETRY_MAX_S = 300.0  # up to this


class Outgoing(NamedTuple):
    """A message to store with ``Outbox.put_many``: the arguments of ``Outbox.put``."""

    stream: str
    payload: bytes
    kind: str
    items: int = 1
    data_time_ms: int | None = None
    retain: bool = False


class Outbox(OutboxBounds):
    """A durable queue of MQTT messages; thread-safe (one connection behind a lock)."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        sync: str = SYNC_FULL,
        clock: Callable[[], float] = time.time,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
    ):
        if sync not in SYNC_POLICIES:
            raise ValueError(f"outbox sync policy must be one of {', '.join(SYNC_POLICIES)}, got {sync!r}")
        if max_bytes < 1 or max_age_s <= 0:
            raise ValueError("outbox max_bytes and max_age_s must be positive")
        self.path = Path(path) if path is not None else None
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self.sync = sync
        self._clock = clock
        # Reentrant: put_many holds it across its puts, so no take or ack lands inside its transaction.
        self._lock = threading.RLock()
        self._group: dict[str, int] | None = None  # the counters of put_many's open transaction
        self._lock_file: IO[str] | None = None
        self._taken: dict[int, int] = {}  # id -> size, taken and not yet acknowledged
        self._cursor = {p: 0 for p in PRIORITY.values()}  # every row of that priority with id <= cursor is taken
        self._next_age_check = 0.0
        self.held = HeldMessages(retry_first_s, retry_max_s)  # refused by the broker: taken, not deleted
        self._conn: sqlite3.Connection | None = self._open()
        self._load_state()

    # --- opening ------------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        """The open connection (OutboxError once closed)."""
        if self._conn is None:
            raise OutboxError("the outbox is closed")
        return self._conn

    def _open(self) -> sqlite3.Connection:
        db, self._lock_file = store.open_database(self.path, self.sync)
        return db

    def _load_state(self) -> None:
        count, total = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages").fetchone()
        self._count, self._bytes = count, total
        self._load_streams()
        self._counters = dict.fromkeys(PERSISTED, 0)
        self._counters.update(self._db.execute("SELECT name, value FROM counters").fetchall())
        self.replayed = count  # messages found from a previous process, sent again now

    def _load_streams(self) -> None:
        self._streams = {
            s: [n, m, c] for s, n, m, c in self._db.execute("SELECT stream, next_seq, mark_ms, at_mark FROM streams")
        }

    def _recount(self) -> None:
        """After a failed transaction: counts, sequences and marks as the file has them, not as the cache guessed."""
        try:
            self._count, self._bytes = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM messages"
            ).fetchone()
            self._load_streams()
        except sqlite3.Error:
            pass

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    def close(self) -> None:
        """Close the file and release its lock; a closed outbox raises OutboxError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._release_lock()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- writing ------------------------------------------------------------

    def put(
        self,
        stream: str,
        payload: bytes,
        kind: str,
        *,
        items: int = 1,
        data_time_ms: int | None = None,
        retain: bool = False,
    ) -> int | None:
        """Store a message; return its sequence number in ``stream``, or None if it was dropped (full).

        ``items`` is how many readings the message holds (for the drop counter);
        ``data_time_ms`` the latest data time in it, remembered per stream (``marks``).
        """
        if kind not in PRIORITY:
            raise ValueError(f"message class must be one of {', '.join(KINDS)}, got {kind!r}")
        with self._lock:
            if self._group is not None:  # inside put_many: its transaction commits this message
                return self._insert(stream, payload, kind, items, data_time_ms, retain, self._group)
            with self._transaction() as counters:
                return self._insert(stream, payload, kind, items, data_time_ms, retain, counters)

    def put_many(self, messages: Iterable[Outgoing]) -> list[int | None]:
        """Store ``messages`` in one transaction (one fsync); return each one's sequence number (None: dropped).

        Exactly as many ``put`` calls in that order would (sequence numbers, drops,
        counters, marks), except that they are committed together: when this returns
        all are stored; if it raises OutboxError none is.
        """
        messages = [Outgoing(*m) for m in messages]
        for m in messages:
            if m.kind not in PRIORITY:
                raise ValueError(f"message class must be one of {', '.join(KINDS)}, got {m.kind!r}")
        if not messages:
            return []
        with self._lock:
            if self._group is not None:  # nested: the outer put_many commits
                return [
                    self.put(m.stream, m.payload, m.kind, items=m.items, data_time_ms=m.data_time_ms, retain=m.retain)
                    for m in messages
                ]
            with self._transaction() as counters:
                self._group = counters
                try:
                    # self.put, not _insert: whoever wraps put (a tool recording payloads) sees these too.
                    return [
                        self.put(
                            m.stream, m.payload, m.kind, items=m.items, data_time_ms=m.data_time_ms, retain=m.retain
                        )
                        for m in messages
                    ]
                finally:
                    self._group = None

    def _insert(
        self,
        stream: str,
        payload: bytes,
        kind: str,
        items: int,
        data_time_ms: int | None,
        retain: bool,
        counters: dict[str, int],
    ) -> int | None:
        """Within an open transaction; the cached state moves with it (a rollback reloads it, see _recount)."""
        size = len(payload) + len(stream.encode()) + ROW_OVERHEAD_BYTES
        now_ms = int(self._clock() * 1000)
        self._expire_if_due(now_ms, counters)
        if not self._make_room(size, kind, items, counters):
            return None
        next_seq, mark, at_mark = self._streams.get(stream, (1, None, 0))
        if data_time_ms is not None:
            if mark is None or data_time_ms > mark:
                mark, at_mark = data_time_ms, 1
            elif data_time_ms == mark:
                at_mark += 1
        store.insert_message(
            self._db, stream, next_seq, PRIORITY[kind], now_ms, items, retain, size, payload, mark, at_mark
        )
        self._streams[stream] = [next_seq + 1, mark, at_mark]
        self._count += 1
        self._bytes += size
        return next_seq

    def _transaction(self) -> store.Transaction:
        self._check_open()
        return store.Transaction(self._db, f"{self.path or ':memory:'}", self._counted, self._recount)

    def _counted(self, deltas: dict[str, int]) -> None:
        for name, delta in deltas.items():
            self._counters[name] += delta

    # --- sending ------------------------------------------------------------

    def take(self, limit: int) -> list[Message]:
        """The next ``limit`` messages not yet taken by this process, in sending order.

        Per stream, always in sequence order. Across streams, in the order they were
        put, unless more than BACKLOG_MESSAGES wait: then by class (alerts first).
        """
        if limit <= 0:
            return []
        with self._lock:
            self._check_open()
            out = self._due_held(limit)
            waiting = self._count - len(self._taken)
            if waiting <= 0 or len(out) >= limit:
                return out
            limit -= len(out)
            rows = store.next_rows(self._db, self._cursor, limit, len(self._taken), by_class=waiting > BACKLOG_MESSAGES)
            for row_id, stream, seq, priority, payload, created_ms, retain, items, size in rows:
                self._cursor[priority] = max(self._cursor[priority], row_id)
                self._taken[row_id] = size
                out.append(
                    Message(row_id, stream, seq, KINDS[priority], bytes(payload), created_ms, bool(retain), items, size)
                )
            return out

    def _due_held(self, limit: int) -> list[Message]:
        due = self.held.due(self._clock(), limit)
        out = []
        for row_id, stream, seq, priority, payload, created_ms, retain, items, size in store.rows_by_id(self._db, due):
            self.held.taken_again(row_id)
            out.append(
                Message(row_id, stream, seq, KINDS[priority], bytes(payload), created_ms, bool(retain), items, size)
            )
        return out

    def hold(self, ids: Iterable[int]) -> None:
        """Keep messages the broker refused (a PUBACK with an error reason code), counted, to send again later.

        See gateway/device/outbox_held.py for the waits; ``retry_held_now`` ends them.
        """
        with self._lock:
            self._check_open()
            rows = store.rows_by_id(self._db, [i for i in ids if i in self._taken and i not in self.held.waiting])
            if not rows:
                return
            with self._transaction() as counters:
                counters[REFUSED] += len(rows)
            now = self._clock()
            for row in rows:
                self.held.hold(row[0], priority=row[3], created_ms=row[5], now=now)

    def retry_held_now(self) -> None:
        """Send every held message again at the next ``take`` (the broker is back; its ACL may be fixed)."""
        with self._lock:
            self.held.release()

    def ack(self, ids: Iterable[int], *, refused: Iterable[int] = ()) -> None:
        """Delete messages the broker acknowledged, and ``refused`` ones MQTT can never carry (counted as dropped)."""
        ids, refused = list(ids), list(refused)
        with self._lock:
            self._check_open()
            gone = [i for i in ids + refused if i in self._taken]
            if not gone:
                return
            with self._transaction() as counters:
                store.delete_messages(self._db, gone)
                counters[DROPPED_UNPUBLISHABLE] += sum(1 for i in refused if i in self._taken)
            for i in gone:
                self._bytes -= self._taken.pop(i)
                self.held.forget(i)
            self._count -= len(gone)

    # --- looking ------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def in_flight(self) -> int:
        return len(self._taken)

    def marks(self) -> dict[str, Mark]:
        """Per stream, the latest data time ever stored (and how many messages carry it): where a replay resumes."""
        return {s: Mark(m, c) for s, (_, m, c) in self._streams.items() if m is not None}

    def stats(self) -> dict[str, int | float]:
        """Counters for the status message (all numbers, names prefixed ``outbox_``)."""
        with self._lock:
            self._check_open()
            oldest = self._db.execute("SELECT created_ms FROM messages ORDER BY id LIMIT 1").fetchone()
            counters = dict(self._counters)
            held = self.held.stats(self._clock())  # refused by the broker, not delivered yet
        age_s = max(0.0, self._clock() - oldest[0] / 1000) if oldest else 0.0
        return {
            **held,
            "outbox_backlog": self._count,
            "outbox_bytes": self._bytes,
            "outbox_max_bytes": self.max_bytes,
            "outbox_oldest_s": round(age_s, 1),
            "outbox_replayed": self.replayed,
            **{f"outbox_{name}": value for name, value in counters.items()},
        }

    def _check_open(self) -> None:
        if self._conn is None:
            raise OutboxError("the outbox is closed")
