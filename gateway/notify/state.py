"""The notifier's durable state in SQLite (WAL, fsynced commits): alerts seen, the outbox of notifications, counters.

Every notification is one outbox row with a unique key ``site/gateway/alert_id|event|route#channel``
(event: ``raised:<severity>``, ``repeat:<severity>:<n>``, ``escalated``, ``resolved``). It is
inserted with ``INSERT OR IGNORE``: the same alert message delivered twice by the broker, or
the same repeat scheduled again after a restart, is the same row. A row is ``due`` until its
send succeeds (``sent``), it runs out of attempts or age (``dead``), or an acknowledgement
makes it pointless (``cancelled``). Rows that go out together (a burst from one site, what
quiet hours held) share a ``group_key`` and are sent as one message.

>>> s = State.open(":memory:")
>>> with s.transaction():
...     s.add_notice("net3/gw/a1", "raised:warning", "ops", 0, "net3", "{}", {}, now_ms=1000, window_ms=30_000)
...     s.add_notice("net3/gw/a1", "raised:warning", "ops", 0, "net3", "{}", {}, now_ms=2000, window_ms=30_000)
True
False
>>> s.due_groups(20_000), s.due_groups(31_000)
([], ['ops#0|net3|31000'])
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY,            -- site/gateway/alert_id
    site TEXT NOT NULL, gateway TEXT NOT NULL, alert_id TEXT NOT NULL,
    kind TEXT NOT NULL, label TEXT NOT NULL,
    severity TEXT NOT NULL,          -- of the latest page
    state TEXT NOT NULL,             -- raised | cleared | resolved
    raised_json TEXT,                -- the latest raise as the gateway sent it
    page_ms INTEGER,                 -- notifier clock when the latest page was recorded: repeats count from it
    acked_by TEXT, acked_ms INTEGER, assignee TEXT, comment TEXT,
    closed_by TEXT, closed_ms INTEGER,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,        -- alert key|event|route#channel
    alert_key TEXT NOT NULL, event TEXT NOT NULL, route TEXT NOT NULL, channel INTEGER NOT NULL,
    site TEXT NOT NULL,
    alert_json TEXT NOT NULL,        -- the alert the message is about, as it was then
    extra TEXT NOT NULL,             -- who acknowledged or resolved, the repeat number...
    group_key TEXT NOT NULL,
    due_ms INTEGER NOT NULL, next_try_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'due',  -- due | sent | dead | cancelled
    created_ms INTEGER NOT NULL, sent_ms INTEGER, last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_try_ms);
CREATE INDEX IF NOT EXISTS outbox_alert ON outbox (alert_key);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Notice:
    """One outbox row as the delivery worker reads it."""

    id: int
    alert_key: str
    event: str
    route: str
    channel: int
    site: str
    alert_json: str
    extra: dict
    attempts: int
    created_ms: int


class State:
    """One SQLite file, used by the MQTT thread and the delivery thread under one lock."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.lock = threading.RLock()

    @classmethod
    def open(cls, path: str | Path) -> State:
        """Open (or create) ``path``; ``:memory:`` for tests."""
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the broker hears our ack
        db.executescript(SCHEMA)
        return cls(db)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic change: committed (and fsynced) on leaving, rolled back on an exception."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # ---- alerts --------------------------------------------------------------------

    def alert(self, key: str) -> sqlite3.Row | None:
        with self.lock:
            return self.db.execute("SELECT * FROM alerts WHERE key = ?", (key,)).fetchone()

    def put_alert(self, key: str, **fields) -> None:
        """Insert or update the alert ``key`` with ``fields`` (columns of ``alerts``)."""
        with self.lock:
            if self.alert(key) is None:
                cols = ["key", *fields]
                marks = ", ".join("?" for _ in cols)
                self.db.execute(f"INSERT INTO alerts ({', '.join(cols)}) VALUES ({marks})", (key, *fields.values()))
            else:
                sets = ", ".join(f"{c} = ?" for c in fields)
                self.db.execute(f"UPDATE alerts SET {sets} WHERE key = ?", (*fields.values(), key))

    def open_alerts(self) -> list[sqlite3.Row]:
        """Raised, not acknowledged, not closed: what repeats and escalation look at."""
        with self.lock:
            return self.db.execute("SELECT * FROM alerts WHERE state = 'raised' AND acked_ms IS NULL").fetchall()

    def paged(self, alert_key: str) -> list[tuple[str, int]]:
        """The (route, channel) pairs that got (or are due to get) a page about this alert."""
        with self.lock:
            rows = self.db.execute(
                "SELECT DISTINCT route, channel FROM outbox WHERE alert_key = ? AND status != 'cancelled' "
                "AND (event LIKE 'raised:%' OR event = 'escalated') ORDER BY route, channel",
                (alert_key,),
            ).fetchall()
        return [(r["route"], r["channel"]) for r in rows]

    def unsent_page(self, alert_key: str, route: str, channel: int) -> bool:
        """Whether a raise of this alert to this channel still waits (then a repeat would only stack)."""
        with self.lock:
            return (
                self.db.execute(
                    "SELECT 1 FROM outbox WHERE alert_key = ? AND route = ? AND channel = ? AND status = 'due' "
                    "AND event LIKE 'raised:%'",
                    (alert_key, route, channel),
                ).fetchone()
                is not None
            )

    # ---- the outbox ------------------------------------------------------------------

    def add_notice(
        self,
        alert_key: str,
        event: str,
        route: str,
        channel: int,
        site: str,
        alert_json: str,
        extra: dict,
        *,
        now_ms: int,
        window_ms: int,
        held_until_ms: int | None = None,
        summary: bool = False,
    ) -> bool:
        """Record that a notification is due; False if this very one was recorded before.

        It joins the open group of its channel and site (the one whose message has not gone out
        and is due within ``window_ms``), or opens one. Held by quiet hours, it is due at their
        end, with everything else held until then (``summary``: every site in one message).
        """
        key = f"{alert_key}|{event}|{route}#{channel}"
        group_site = "*" if summary and held_until_ms is not None else site
        prefix = f"{route}#{channel}|{group_site}|"
        with self.lock:
            alone = held_until_ms is None and window_ms == 0  # no window: never grouped, even in the same ms
            if held_until_ms is not None:
                due = held_until_ms
            else:
                row = self.db.execute(
                    "SELECT MIN(due_ms) AS due FROM outbox WHERE status = 'due' AND attempts = 0 "
                    "AND substr(group_key, 1, ?) = ? AND due_ms > ? AND due_ms <= ?",
                    (len(prefix), prefix, now_ms, now_ms + window_ms),
                ).fetchone()
                due = row["due"] if row["due"] is not None else now_ms + window_ms
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO outbox (key, alert_key, event, route, channel, site, alert_json, extra, "
                "group_key, due_ms, next_try_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    alert_key,
                    event,
                    route,
                    channel,
                    site,
                    alert_json,
                    json.dumps(extra),
                    prefix + str(due) + (f"|{key}" if alone else ""),
                    due,
                    due,
                    now_ms,
                ),
            )
            return cursor.rowcount == 1

    def cancel(self, alert_key: str) -> int:
        """Cancel the repeats and escalations of an alert that are still due; how many."""
        with self.lock:
            cursor = self.db.execute(
                "UPDATE outbox SET status = 'cancelled' WHERE alert_key = ? AND status = 'due' "
                "AND (event LIKE 'repeat:%' OR event = 'escalated')",
                (alert_key,),
            )
            return cursor.rowcount

    def due_groups(self, now_ms: int) -> list[str]:
        """The groups whose message is due to be (re)tried now, oldest first."""
        with self.lock:
            rows = self.db.execute(
                "SELECT group_key, MIN(next_try_ms) AS t FROM outbox WHERE status = 'due' AND next_try_ms <= ? "
                "GROUP BY group_key ORDER BY t",
                (now_ms,),
            ).fetchall()
        return [r["group_key"] for r in rows]

    def group(self, group_key: str) -> list[Notice]:
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM outbox WHERE group_key = ? AND status = 'due' ORDER BY id", (group_key,)
            ).fetchall()
        return [
            Notice(
                r["id"], r["alert_key"], r["event"], r["route"], r["channel"], r["site"],
                r["alert_json"], json.loads(r["extra"]), r["attempts"], r["created_ms"],
            )
            for r in rows
        ]  # fmt: skip

    def mark(
        self,
        ids: list[int],
        status: str,
        now_ms: int,
        *,
        next_try_ms: int | None = None,
        error: str | None = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        """Sent, dead, or (with ``next_try_ms``) one more failed attempt, and ``counts`` bumped; committed at once."""
        marks = ", ".join("?" for _ in ids)
        with self.transaction():
            for name, by in (counts or {}).items():
                self.bump(name, by)
            if status == "sent":
                self.db.execute(f"UPDATE outbox SET status = 'sent', sent_ms = ? WHERE id IN ({marks})", (now_ms, *ids))
            else:
                self.db.execute(
                    f"UPDATE outbox SET status = ?, attempts = attempts + 1, next_try_ms = COALESCE(?, next_try_ms), "
                    f"last_error = ? WHERE id IN ({marks})",
                    (status, next_try_ms, error, *ids),
                )

    # ---- counters --------------------------------------------------------------------

    def bump(self, name: str, by: int = 1) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                (name, by, by),
            )

    def counters(self) -> dict[str, int]:
        with self.lock:
            return {r["name"]: r["value"] for r in self.db.execute("SELECT name, value FROM counters ORDER BY name")}

    def outbox_counts(self) -> dict[str, int]:
        """Notifications by status (due, sent, dead, cancelled)."""
        with self.lock:
            rows = self.db.execute("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status").fetchall()
        return {r["status"]: r["n"] for r in rows}

    def oldest_due_ms(self) -> int | None:
        with self.lock:
            return self.db.execute("SELECT MIN(created_ms) AS t FROM outbox WHERE status = 'due'").fetchone()["t"]
