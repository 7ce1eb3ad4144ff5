"""Messages the broker refused (a PUBACK with an error reason code, e.g. an ACL that does not allow the topic).

A refused message is not deleted: it stays in the outbox, held, and is sent again
after a wait that doubles with each refusal of it (``first_s`` up to ``max_s``), or at
once when the link comes back (``release``: a broker restarted with a fixed ACL).
Alerts and detections stay until the broker takes them; held readings and status
messages may still make room when the outbox is full, as any others.

This is the bookkeeping (which ids wait, until when, since when); ``gateway.device.outbox``
owns the rows and calls it under its lock.

>>> held = HeldMessages(first_s=1, max_s=4)
>>> held.hold(7, priority=0, created_ms=1_000, now=10.0); held.due(10.5, 10), held.due(11.0, 10)
([], [7])
>>> held.taken_again(7); held.hold(7, priority=0, created_ms=1_000, now=11.0); held.waiting[7].due
13.0
>>> held.stats(now=21.0)
{'outbox_held': 1, 'outbox_held_oldest_s': 20.0}
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Held:
    """One refused message: its class, when it was stored, how often refused, when it may go again."""

    priority: int
    created_ms: int
    refusals: int
    due: float  # clock seconds


class HeldMessages:
    """Which outbox ids the broker refused: waiting (``waiting``) or sent again and not answered yet (``resent``)."""

    def __init__(self, first_s: float = 1.0, max_s: float = 300.0):
        if first_s < 0 or max_s < first_s:
            raise ValueError("the retry waits must be 0 <= first_s <= max_s")
        self.first_s, self.max_s = float(first_s), float(max_s)
        self.waiting: dict[int, Held] = {}
        self.resent: dict[int, Held] = {}

    def __contains__(self, row_id: int) -> bool:
        return row_id in self.waiting or row_id in self.resent

    def hold(self, row_id: int, *, priority: int, created_ms: int, now: float) -> None:
        """A refusal of ``row_id``: wait ``first_s`` after the first, twice as long after each next one."""
        before = self.resent.pop(row_id, None) or self.waiting.pop(row_id, None)
        refusals = (before.refusals if before else 0) + 1
        wait = min(self.max_s, self.first_s * 2 ** (refusals - 1))
        self.waiting[row_id] = Held(priority, created_ms, refusals, now + wait)

    def due(self, now: float, limit: int) -> list[int]:
        """Up to ``limit`` waiting ids whose wait is over, oldest first."""
        return sorted(i for i, h in self.waiting.items() if h.due <= now)[:limit]

    def taken_again(self, row_id: int) -> None:
        """``row_id`` is being sent again."""
        self.resent[row_id] = self.waiting.pop(row_id)

    def release(self) -> None:
        """End every wait: all go at the next take."""
        for held in self.waiting.values():
            held.due = 0.0

    def forget(self, row_id: int) -> None:
        """``row_id`` left the outbox (delivered at last, or dropped)."""
        self.waiting.pop(row_id, None)
        self.resent.pop(row_id, None)

    def waiting_of(self, priority: int) -> list[int]:
        """Waiting ids of one class, oldest first (candidates to make room)."""
        return sorted(i for i, h in self.waiting.items() if h.priority == priority)

    def stats(self, now: float) -> dict[str, int | float]:
        """How many are held and the age of the oldest (since it was stored), for the status message."""
        created = [h.created_ms for h in (*self.waiting.values(), *self.resent.values())]
        oldest_s = round(max(0.0, now - min(created) / 1000), 1) if created else 0.0
        return {"outbox_held": len(created), "outbox_held_oldest_s": oldest_s}
