"""The outbox's bounds: who makes room when it is full (``max_bytes``), and who is too old to keep (``max_age_s``).

When full, the oldest status messages go first, then the oldest readings (held ones,
refused by the broker, before those not sent yet); alerts and detections are never
dropped, even if that takes the outbox over its size. Status and readings older than
``max_age_s`` are dropped. Every drop is counted. ``gateway.device.outbox.Outbox`` mixes
this in and calls it inside its write transactions.
"""

from __future__ import annotations

import logging
import sqlite3

from gateway.device import outbox_store as store
from gateway.device.outbox_held import HeldMessages
from gateway.device.outbox_store import ALERT, DETECTION, OVER_BOUND, PRIORITY, READING, STATUS

log = logging.getLogger("gateway.device.outbox")

NEVER_DROPPED = (ALERT, DETECTION)
DROP_ORDER = (STATUS, READING)  # who makes room when the outbox is full, oldest first
AGE_CHECK_EVERY_S = 60.0


class OutboxBounds:
    """The dropping half of the Outbox (its state is the Outbox's)."""

    max_bytes: int
    max_age_s: float
    held: HeldMessages
    _bytes: int
    _count: int
    _cursor: dict[int, int]
    _taken: dict[int, int]
    _next_age_check: float

    @property
    def _db(self) -> sqlite3.Connection:  # pragma: no cover - the Outbox's
        raise NotImplementedError

    def _make_room(self, size: int, kind: str, items: int, counters: dict[str, int]) -> bool:
        over = self._bytes + size - self.max_bytes
        for victim in DROP_ORDER:
            if over > 0:
                over -= self._drop_held(victim, over, counters)
            if over <= 0:
                return True
            over -= self._drop_oldest(victim, over, counters)
        if over <= 0:
            return True
        if kind in NEVER_DROPPED:
            counters[OVER_BOUND] += 1
            return True
        store.count_drop(kind, 1, items, counters)
        return False

    def _drop_oldest(self, kind: str, wanted: int, counters: dict[str, int]) -> int:
        """Drop untaken messages of ``kind``, oldest first, until ``wanted`` bytes are free; return bytes freed."""
        priority = PRIORITY[kind]
        ids, freed, items = store.oldest_after(self._db, priority, self._cursor[priority], wanted)
        if ids:
            store.delete_messages(self._db, ids)
            store.count_drop(kind, len(ids), items, counters)
            self._count -= len(ids)
            self._bytes -= freed
        return freed

    def _drop_held(self, kind: str, wanted: int, counters: dict[str, int]) -> int:
        """Drop held (refused, waiting) messages of ``kind``, oldest first, until ``wanted`` bytes are free."""
        ids, freed = [], 0
        for i in self.held.waiting_of(PRIORITY[kind]):
            if freed >= wanted:
                break
            ids.append(i)
            freed += self._taken[i]
        if ids:
            store.count_drop(kind, len(ids), sum(r[7] for r in store.rows_by_id(self._db, ids)), counters)
            store.delete_messages(self._db, ids)
            for i in ids:
                self.held.forget(i)
                del self._taken[i]
            self._count -= len(ids)
            self._bytes -= freed
        return freed

    def _expire_if_due(self, now_ms: int, counters: dict[str, int]) -> None:
        if now_ms / 1000 < self._next_age_check:
            return
        self._next_age_check = now_ms / 1000 + AGE_CHECK_EVERY_S
        oldest_kept_ms = now_ms - int(self.max_age_s * 1000)
        for kind in DROP_ORDER:
            priority = PRIORITY[kind]
            rows = store.created_before(self._db, priority, self._cursor[priority], oldest_kept_ms)
            if rows:
                store.delete_messages(self._db, [r[0] for r in rows])
                store.count_drop(kind, len(rows), sum(r[2] for r in rows), counters)
                self._count -= len(rows)
                self._bytes -= sum(r[1] for r in rows)
                log.warning(
                    "outbox: dropped %d %s messages older than %.0f days", len(rows), kind, self.max_age_s / 86_400
                )
