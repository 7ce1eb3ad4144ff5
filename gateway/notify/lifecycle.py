"""What an alert message, an operator's command or the passing of time means for the outbox.

- A raise pages the routes that match it (``raised:<severity>``), once: the same raise again
  (the broker's redelivery, the gateway repeating itself) pages no one, and a gateway
  re-raising an acknowledged alert pages again only when its severity rises (the rise
  then needs its own acknowledgement).
- A clear, or a ``resolve`` command, closes the alert: one ``resolved`` message to every
  route that was paged (or escalated to), and no more repeats or escalations.
- An ``ack`` stops repeats and escalation; ``assign`` and ``comment`` are recorded.
- ``tick`` schedules the repeats (``repeat_every_min`` while unacknowledged) and the
  escalation (``escalate_after_min`` without acknowledgement, to ``escalate_to``).

Every method takes ``now_ms``: the service passes its clock, tests pass their own. Each
call's changes are one transaction, so the broker is acknowledged only after they are on disk.
"""

from __future__ import annotations

import json

from edge.contracts import Alert, AlertState
from gateway.notify.routes import Routing, quiet_until, severity_rank
from gateway.notify.state import State
from gateway.protocol import payloads
from gateway.protocol.alert_commands import AlertCommand

MINUTE_MS = 60_000


def alert_key(site: str, gateway: str, alert_id: str) -> str:
    """How the state names one alert: an alert id is unique per gateway."""
    return f"{site}/{gateway}/{alert_id}"


def alert_json(alert: Alert) -> str:
    """The alert as stored with each notification (the gateway's payload, plus what the topic said)."""
    body = json.loads(payloads.encode_alert(alert))
    return json.dumps({**body, "site": alert.site, "gateway": alert.gateway}, separators=(",", ":"))


def alert_from_json(text: str) -> Alert:
    """The alert ``alert_json`` stored, checked again as the gateway's payload is."""
    body = json.loads(text)
    topic = f"x/{body.pop('site')}/{body.pop('gateway')}/alerts"
    decoded = payloads.decode("x", topic, json.dumps(body).encode())
    assert isinstance(decoded, Alert)  # an alerts topic decodes to an Alert
    return decoded


class Lifecycle:
    """The notifier's decisions, on its state and routing."""

    def __init__(self, state: State, routing: Routing):
        self.state = state
        self.routing = routing

    # ---- alerts from gateways ---------------------------------------------------

    def on_alert(self, alert: Alert, now_ms: int) -> str:
        """Record one alert message; returns what it did (a counter name)."""
        with self.state.transaction():
            outcome = self._on_alert(alert, now_ms)
            self.state.bump(outcome)
        return outcome

    def _on_alert(self, alert: Alert, now_ms: int) -> str:
        key = alert_key(alert.site, alert.gateway, alert.alert_id)
        record = self.state.alert(key)
        if record is not None and record["state"] != "raised":
            return "alerts_after_close"  # a late copy of an alert already closed
        if alert.state is AlertState.CLEARED:
            if record is None:  # raised before this notifier ran: nobody was paged, remember it closed
                self._remember(key, alert, now_ms, state="cleared", closed_ms=now_ms)
                return "clears_unknown"
            self.state.put_alert(key, state="cleared", closed_ms=now_ms, updated_ms=now_ms)
            self._resolve(key, alert, now_ms, {})
            return "clears"
        severity = str(alert.severity)
        if record is None:
            self._remember(key, alert, now_ms, state="raised", page_ms=now_ms)
            return "raises_paged" if self._page(key, alert, now_ms) else "raises_unrouted"
        if severity_rank(severity) > severity_rank(record["severity"]):
            self.state.put_alert(
                key, severity=severity, raised_json=alert_json(alert), page_ms=now_ms,
                acked_by=None, acked_ms=None, updated_ms=now_ms,
            )  # fmt: skip
            return "raises_paged" if self._page(key, alert, now_ms) else "raises_unrouted"
        self.state.put_alert(key, raised_json=alert_json(alert), updated_ms=now_ms)
        return "raises_again"

    def _remember(self, key: str, alert: Alert, now_ms: int, **fields) -> None:
        self.state.put_alert(
            key, site=alert.site, gateway=alert.gateway, alert_id=alert.alert_id, kind=alert.kind,
            label=alert.label, severity=str(alert.severity), raised_json=alert_json(alert),
            updated_ms=now_ms, **fields,
        )  # fmt: skip

    def _page(self, key: str, alert: Alert, now_ms: int) -> int:
        severity = str(alert.severity)
        routes = self.routing.routes_for(
            site=alert.site, gateway=alert.gateway, kind=alert.kind, label=alert.label, severity=severity
        )
        added = 0
        for route in routes:
            for channel in self.routing.channels[route.name]:
                added += self._notice(key, f"raised:{severity}", route.name, channel.index, alert, {}, now_ms)
        return len(routes)

    def _notice(
        self, key: str, event: str, route_name: str, channel: int, alert: Alert, extra: dict, now_ms: int
    ) -> bool:
        route = self.routing.rules.route(route_name)
        held = quiet_until(route, now_ms, str(alert.severity))
        summary = route.quiet_hours is not None and route.quiet_hours.then == "summary"
        return self.state.add_notice(
            key, event, route_name, channel, alert.site, alert_json(alert), extra,
            now_ms=now_ms, window_ms=int(route.group_window_s * 1000), held_until_ms=held, summary=summary,
        )  # fmt: skip

    def _resolve(self, key: str, alert: Alert, now_ms: int, extra: dict) -> None:
        self.state.cancel(key)
        for route_name, channel in self.state.paged(key):
            if any(r.name == route_name for r in self.routing.rules.routes):
                self._notice(key, "resolved", route_name, channel, alert, extra, now_ms)

    # ---- operators' commands ----------------------------------------------------

    def on_command(self, command: AlertCommand, now_ms: int) -> str:
        with self.state.transaction():
            outcome = self._on_command(command, now_ms)
            self.state.bump(outcome)
        return outcome

    def _on_command(self, c: AlertCommand, now_ms: int) -> str:
        key = alert_key(c.site, c.gateway, c.alert_id)
        record = self.state.alert(key)
        if record is None:
            return "commands_unknown_alert"
        if c.action == "ack":
            if record["acked_ms"] is None:
                self.state.put_alert(key, acked_by=c.by, acked_ms=now_ms, updated_ms=now_ms)
            self.state.cancel(key)
            return "acks"
        if c.action == "assign":
            self.state.put_alert(key, assignee=c.assignee, updated_ms=now_ms)
            return "assigns"
        if c.action == "comment":
            self.state.put_alert(key, comment=c.text, updated_ms=now_ms)
            return "comments"
        if record["state"] != "raised":
            return "resolves_of_closed"
        self.state.put_alert(key, state="resolved", closed_by=c.by, closed_ms=now_ms, updated_ms=now_ms)
        self._resolve(key, alert_from_json(record["raised_json"]), now_ms, {"by": c.by})
        return "resolves"

    # ---- the passing of time ----------------------------------------------------

    def tick(self, now_ms: int) -> int:
        """Schedule the repeats and escalations due by ``now_ms``; how many were added."""
        added = 0
        with self.state.transaction():
            for record in self.state.open_alerts():
                added += self._repeat_and_escalate(record, now_ms)
            if added:
                self.state.bump("reminders_scheduled", added)
        return added

    def _repeat_and_escalate(self, record, now_ms: int) -> int:
        key, alert = record["key"], alert_from_json(record["raised_json"])
        elapsed = now_ms - record["page_ms"]
        added = 0
        for route_name, channel in self.state.paged(key):
            route = next((r for r in self.routing.rules.routes if r.name == route_name), None)
            if route is None:
                continue
            if route.repeat_every_min and not self.state.unsent_page(key, route_name, channel):
                n = int(elapsed // (route.repeat_every_min * MINUTE_MS))
                quiet = quiet_until(route, now_ms, record["severity"]) is not None
                if n >= 1 and not quiet:  # only the latest repeat: after an outage, one reminder, not a pile
                    event = f"repeat:{record['severity']}:{n}"
                    added += self._notice(key, event, route_name, channel, alert, {"n": n}, now_ms)
            if route.escalate_to and route.escalate_after_min and elapsed >= route.escalate_after_min * MINUTE_MS:
                minutes = round(route.escalate_after_min)
                for target in self.routing.channels[route.escalate_to]:
                    extra = {"minutes": minutes}
                    added += self._notice(key, "escalated", route.escalate_to, target.index, alert, extra, now_ms)
        return added
