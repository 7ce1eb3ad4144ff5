"""The delivery worker: send each due group of notifications as one message, retry with backoff, dead-letter.

A group is marked ``sent`` in its own fsynced commit the moment Apprise says the
service took it. Between that answer and that commit (a few milliseconds) a ``kill -9``
makes the message go out twice after the restart: the one window at-least-once cannot
close, since no e-mail or SMS service takes part in our transaction (docs/notify.md).

While a channel is down, Apprise's ``notify()`` answers False: the group is tried again
after ``first_retry_s``, then twice as long each time up to ``max_retry_s``; after
``max_attempts`` tries, or once older than ``max_age_min``, it is a dead letter
(``status = 'dead'``, counted in ``dead_letters``). A channel that failed is not asked again
for the other groups until that retry is due: one probe per channel while it is down, not
one try per waiting message (a 60 s SMTP outage with 30 messages waiting cost 1695 failed
tries before, measured in docs/chaos-notify.md; now one per retry interval).

>>> from gateway.notify.config import Delivery
>>> [retry_after_s(Delivery(first_retry_s=5, max_retry_s=60), n) for n in range(1, 7)]
[5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.notify.config import Delivery
from gateway.notify.lifecycle import alert_from_json
from gateway.notify.messages import Item, render
from gateway.notify.routes import Routing
from gateway.notify.state import Notice, State

log = logging.getLogger(__name__)

MINUTE_MS = 60_000


def retry_after_s(delivery: Delivery, attempts: int) -> float:
    """The wait after the ``attempts``-th failed try."""
    return min(delivery.first_retry_s * 2 ** (attempts - 1), delivery.max_retry_s)


class DeliveryWorker:
    """Sends what the outbox holds when it is due."""

    def __init__(self, state: State, routing: Routing, clock: Callable[[], int] | None = None):
        self.state = state
        self.routing = routing
        # Read again right after a send, so ``sent_ms`` is when the service took it (the duplicate window's start).
        self.clock = clock
        self._down_until: dict[tuple[str, int], int] = {}  # (route, URL index) -> when to probe it again
        self._failures: dict[tuple[str, int], int] = {}  # (route, URL index) -> failed tries in a row

    def send_due(self, now_ms: int) -> int:
        """Try every group due by ``now_ms`` once; how many messages went out."""
        sent = 0
        for group_key in self.state.due_groups(now_ms):
            notices = self.state.group(group_key)
            if notices and now_ms >= self._down_until.get((notices[0].route, notices[0].channel), 0):
                sent += self._send(notices, now_ms)
        return sent

    def _send(self, notices: list[Notice], now_ms: int) -> int:
        first = notices[0]
        ids = [n.id for n in notices]
        routes = {r.name: r for r in self.routing.rules.routes}
        channels = self.routing.channels.get(first.route, [])
        if first.route not in routes or first.channel >= len(channels):
            self._dead(ids, now_ms, f"route {first.route} (URL {first.channel + 1}) is no longer in the rules")
            return 0
        route, channel = routes[first.route], channels[first.channel]
        items = [Item(n.event.split(":")[0], alert_from_json(n.alert_json), n.extra) for n in notices]
        try:
            title, body = render(items, route.language, route.timezone, route.link or self.routing.rules.link)
        except (ValueError, TypeError, KeyError) as exc:  # an explanation of an unexpected shape: say it plainly
            log.warning("message for %s rendered plainly: %s", first.alert_key, exc)
            title = f"{items[0].event}: {items[0].alert.kind} – {items[0].alert.site}"
            body = "\n\n".join(f"{i.event} {i.alert.alert_id}: {i.alert.message}" for i in items)
        try:
            ok, error = channel.send(title, body), "the service did not take the message"
        except Exception as exc:  # an Apprise plugin failing in its own way must not stop the worker
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if ok:
            self._down_until.pop((first.route, first.channel), None)
            self._failures.pop((first.route, first.channel), None)
            sent_ms = self.clock() if self.clock else now_ms
            self.state.mark(ids, "sent", sent_ms, counts={"messages_sent": 1, "notifications_sent": len(ids)})
            return 1
        attempts = first.attempts + 1
        delivery = self.routing.rules.delivery
        too_old = now_ms - min(n.created_ms for n in notices) >= delivery.max_age_min * MINUTE_MS
        if attempts >= delivery.max_attempts or too_old:
            why = f"{attempts} attempts" if not too_old else f"older than {delivery.max_age_min:g} min"
            self._dead(ids, now_ms, f"{error} ({why}) via {channel.shown}")
            return 0
        # The channel's own backoff: whichever waiting group probes it next, the waits keep doubling.
        key = (first.route, first.channel)
        self._failures[key] = self._failures.get(key, 0) + 1
        wait_s = retry_after_s(delivery, max(attempts, self._failures[key]))
        retry_ms = now_ms + int(wait_s * 1000)
        self._down_until[key] = retry_ms
        self.state.mark(ids, "due", now_ms, next_try_ms=retry_ms, error=error, counts={"send_failures": 1})
        log.warning(
            "route %s could not send via %s (attempt %d): %s; next try in %.1f s",
            route.name,
            channel.shown,
            attempts,
            error,
            wait_s,
        )
        return 0

    def _dead(self, ids: list[int], now_ms: int, why: str) -> None:
        self.state.mark(ids, "dead", now_ms, error=why, counts={"dead_letters": len(ids), "send_failures": 1})
        log.error("dead letter: %d notification(s) given up: %s", len(ids), why)
