"""The notifier's decisions on its own clock: routing, grouping, quiet hours, repeats, acks, escalation, resolution.

Lifecycle and delivery run in-process with an injected clock (no waiting for minutes);
what they send goes through Apprise to a real http.server webhook receiver.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import pytest

from edge.contracts import Alert, AlertState, Severity
from gateway.notify.config import load_rules_with_lines, rules_folder
from gateway.notify.delivery import DeliveryWorker
from gateway.notify.lifecycle import Lifecycle
from gateway.notify.routes import build_routing
from gateway.notify.state import State
from gateway.protocol.alert_commands import AlertCommand
from tests.test_notify_parts import Webhook

MIN = 60_000
T0 = int(datetime.fromisoformat("2026-12-03T10:00:00+00:00").timestamp() * 1000)  # 11:00 in Paris

# The learned leak model's raise on the demo zone (make demo), as the gateway publishes it.
LEAK = Alert(
    1773156600000, "net3-north", "gw-net3-01", "leak", "leak-20260310T1330", AlertState.RAISED, "leak",
    Severity.CRITICAL, 0.99997, "Possible leak of about 141.9 L/s since 2026-03-10 13:30 UTC (score 1.00); "
    "pressure dropped most at: 173, 101, 141", "leak-ml", "1", 1773149400000,
    {"excess_lps": 141.87, "sensors": ["173", "101", "141"], "inflow_level_lps": 695.8},
)  # fmt: skip


def alert(alert_id="leak-20260310T1330", site="net3-north", severity="warning", state="raised", **fields) -> Alert:
    return dataclasses.replace(
        LEAK, alert_id=alert_id, site=site, severity=Severity(severity), state=AlertState(state), **fields
    )


def command(action: str, a: Alert = LEAK, **fields) -> AlertCommand:
    return AlertCommand(a.site, a.gateway, a.alert_id, action, "m.dupont", T0, **fields)


class Notifier:
    """Lifecycle + delivery on a state file, driven at the times a test gives."""

    def __init__(self, tmp_path: Path, rules: str, hooks: dict[str, Webhook]):
        for name, hook in hooks.items():
            rules = rules.replace(f"HOOK_{name}", hook.url(name))
        path = tmp_path / "notify.yaml"
        path.write_text(rules)
        self.routing = build_routing(*load_rules_with_lines(path), str(path), rules_folder(path))
        self.state = State.open(tmp_path / "notify.sqlite")
        self.lifecycle = Lifecycle(self.state, self.routing)
        self.delivery = DeliveryWorker(self.state, self.routing)

    def at(self, now_ms: int) -> int:
        """Let time pass to ``now_ms``: schedule what is due, send it; the number of messages sent."""
        self.lifecycle.tick(now_ms)
        return self.delivery.send_due(now_ms)


@pytest.fixture
def hooks():
    made = {name: Webhook() for name in ("A", "B", "C")}
    yield made
    for hook in made.values():
        hook.close()


def titles(hook: Webhook) -> list[str]:
    return [b["title"] for b in hook.bodies]


ROUTED = """
routes:
  - name: critical-only
    match: {severity: critical}
    urls: [HOOK_A]
    group_window_s: 0
  - name: north
    match: {site: "net3-n*", min_severity: warning}
    urls: [HOOK_B]
    group_window_s: 0
  - name: south
    match: {site: net3-south}
    urls: [HOOK_C]
    group_window_s: 0
"""


def test_routes_by_severity_and_site(tmp_path, hooks):
    n = Notifier(tmp_path, ROUTED, hooks)
    assert n.lifecycle.on_alert(alert("a-1", severity="warning"), T0) == "raises_paged"
    assert n.lifecycle.on_alert(alert("a-2", severity="info"), T0) == "raises_unrouted"
    n.lifecycle.on_alert(alert("a-3", severity="critical"), T0)
    n.lifecycle.on_alert(alert("a-4", site="net3-south", severity="info"), T0)
    assert n.at(T0) == 4
    assert titles(hooks["A"]) == ["[CRITICAL] Possible leak – net3-north"]
    assert titles(hooks["B"]) == ["[WARNING] Possible leak – net3-north", "[CRITICAL] Possible leak – net3-north"]
    assert titles(hooks["C"]) == ["[INFO] Possible leak – net3-south"]


def test_the_same_raise_twice_pages_once(tmp_path, hooks):
    n = Notifier(tmp_path, ROUTED, hooks)
    n.lifecycle.on_alert(alert(severity="warning"), T0)
    assert n.lifecycle.on_alert(alert(severity="warning"), T0 + 1000) == "raises_again"
    assert n.at(T0 + 2000) == 1 and n.at(T0 + 3000) == 0
    assert len(hooks["B"].bodies) == 1


def test_a_burst_from_one_site_is_one_message(tmp_path, hooks):
    rules = "routes:\n  - name: ops\n    match: {}\n    urls: [HOOK_A]\n    group_window_s: 60\n"
    n = Notifier(tmp_path, rules, hooks)
    for i, dt in enumerate((0, 10_000, 20_000)):
        n.lifecycle.on_alert(alert(f"a-{i}"), T0 + dt)
    n.lifecycle.on_alert(alert("b-1", site="net3-south"), T0 + 5000)
    assert n.at(T0 + 59_000) == 0
    assert n.at(T0 + 65_000) == 2
    assert sorted(titles(hooks["A"])) == ["3 alert updates – net3-north", "[WARNING] Possible leak – net3-south"]
    grouped = next(b["message"] for b in hooks["A"].bodies if b["title"].startswith("3 "))
    assert [line for line in grouped.splitlines() if "Severity" in line] == [
        f"Severity: warning – alert a-{i}" for i in range(3)
    ]
    # A fourth alert after the group went out starts a new group.
    n.lifecycle.on_alert(alert("a-9"), T0 + 70_000)
    assert n.at(T0 + 131_000) == 1


QUIET = """
routes:
  - name: night
    match: {}
    urls: [HOOK_A]
    timezone: Europe/Paris
    group_window_s: 0
    quiet_hours: {start: "22:00", end: "07:00", then: THEN}
"""
NIGHT = int(datetime.fromisoformat("2026-12-03T23:30:00+01:00").timestamp() * 1000)
MORNING = int(datetime.fromisoformat("2026-12-04T07:00:00+01:00").timestamp() * 1000)


def test_quiet_hours_hold_non_critical_until_they_end(tmp_path, hooks):
    n = Notifier(tmp_path, QUIET.replace("THEN", "deliver"), hooks)
    n.lifecycle.on_alert(alert("w-1", severity="warning"), NIGHT)
    n.lifecycle.on_alert(alert("c-1", severity="critical"), NIGHT)
    assert n.at(NIGHT) == 1
    assert titles(hooks["A"]) == ["[CRITICAL] Possible leak – net3-north"]  # critical wakes people up
    assert n.at(MORNING - 1000) == 0
    assert n.at(MORNING) == 1
    assert titles(hooks["A"])[1] == "[WARNING] Possible leak – net3-north"


def test_quiet_hours_summary_is_one_message_for_every_site(tmp_path, hooks):
    n = Notifier(tmp_path, QUIET.replace("THEN", "summary"), hooks)
    n.lifecycle.on_alert(alert("w-1"), NIGHT)
    n.lifecycle.on_alert(alert("w-2", site="net3-south"), NIGHT + 3_600_000)
    n.lifecycle.on_alert(alert("w-2", site="net3-south", state="cleared", severity="info"), NIGHT + 7_200_000)
    assert n.at(MORNING - 1000) == 0 and n.at(MORNING) == 1
    [body] = hooks["A"].bodies
    assert body["title"] == "Held during quiet hours: 3 alert updates"
    assert "Resolved: Possible leak at net3-south" in body["message"]


REPEAT = """
routes:
  - name: duty
    match: {kind: leak}
    urls: [HOOK_A]
    group_window_s: 0
    repeat_every_min: 10
    escalate_after_min: 30
    escalate_to: manager
  - name: manager
    urls: [HOOK_B]
    group_window_s: 0
    language: fr
    timezone: Europe/Paris
"""


def test_repeats_until_acknowledged_then_stop(tmp_path, hooks):
    n = Notifier(tmp_path, REPEAT, hooks)
    n.lifecycle.on_alert(LEAK, T0)
    assert [n.at(T0 + m * MIN) for m in (0, 5, 10, 15, 20)] == [1, 0, 1, 0, 1]
    assert titles(hooks["A"])[1:] == [
        "[CRITICAL] Reminder 1, not acknowledged: Possible leak – net3-north",
        "[CRITICAL] Reminder 2, not acknowledged: Possible leak – net3-north",
    ]
    assert n.lifecycle.on_command(command("ack"), T0 + 25 * MIN) == "acks"
    assert sum(n.at(T0 + m * MIN) for m in (30, 40, 50, 120)) == 0
    assert len(hooks["A"].bodies) == 3 and hooks["B"].bodies == []  # no escalation after the ack either


def test_a_long_outage_gives_one_reminder_not_a_pile(tmp_path, hooks):
    n = Notifier(tmp_path, REPEAT.replace("escalate_after_min: 30", "escalate_after_min: 1000"), hooks)
    n.lifecycle.on_alert(LEAK, T0)
    n.at(T0)
    assert n.at(T0 + 95 * MIN) == 1  # nine intervals passed: reminder 9 only
    assert titles(hooks["A"])[1].startswith("[CRITICAL] Reminder 9,")


def test_escalates_to_the_second_route_without_an_ack(tmp_path, hooks):
    n = Notifier(tmp_path, REPEAT.replace("repeat_every_min: 10", "repeat_every_min: 1000"), hooks)
    n.lifecycle.on_alert(LEAK, T0)
    n.at(T0)
    assert n.at(T0 + 29 * MIN) == 0
    assert n.at(T0 + 30 * MIN) == 1 and n.at(T0 + 60 * MIN) == 0
    [body] = hooks["B"].bodies
    assert body["title"] == "[CRITIQUE] Escalade, non acquittée depuis 30 min : Fuite probable – net3-north"
    # The clear reaches both: the route paged and the one escalated to.
    n.lifecycle.on_alert(alert(state="cleared", severity="info", message="Leak alarm cleared"), T0 + 70 * MIN)
    n.at(T0 + 70 * MIN)
    assert titles(hooks["A"])[-1] == "Resolved: Possible leak – net3-north"
    assert titles(hooks["B"])[-1] == "Terminée : Fuite probable – net3-north"


def test_a_re_raise_of_an_acknowledged_alert_pages_only_when_its_severity_rises(tmp_path, hooks):
    n = Notifier(tmp_path, REPEAT, hooks)
    n.lifecycle.on_alert(alert(severity="warning"), T0)
    n.at(T0)
    n.lifecycle.on_command(command("ack"), T0 + MIN)
    assert n.lifecycle.on_alert(alert(severity="warning"), T0 + 2 * MIN) == "raises_again"
    assert n.at(T0 + 2 * MIN) == 0
    assert n.lifecycle.on_alert(alert(severity="critical"), T0 + 3 * MIN) == "raises_paged"
    assert n.at(T0 + 3 * MIN) == 1
    assert titles(hooks["A"]) == ["[WARNING] Possible leak – net3-north", "[CRITICAL] Possible leak – net3-north"]
    # The rise needs its own ack: reminders start again from it.
    assert n.at(T0 + 13 * MIN) == 1


def test_a_clear_is_one_resolved_message_to_the_routes_that_got_the_raise(tmp_path, hooks):
    n = Notifier(tmp_path, ROUTED, hooks)
    n.lifecycle.on_alert(alert(severity="warning"), T0)
    n.at(T0)
    cleared = alert(state="cleared", severity="info", message="Leak alarm cleared: 4 steps in a row scored below 0.50")
    assert n.lifecycle.on_alert(cleared, T0 + MIN) == "clears"
    assert n.lifecycle.on_alert(cleared, T0 + 2 * MIN) == "alerts_after_close"
    assert n.lifecycle.on_alert(alert(severity="warning"), T0 + 3 * MIN) == "alerts_after_close"
    assert n.at(T0 + 4 * MIN) == 1
    assert titles(hooks["B"]) == ["[WARNING] Possible leak – net3-north", "Resolved: Possible leak – net3-north"]
    assert "The gateway says: Leak alarm cleared: 4 steps" in hooks["B"].bodies[1]["message"]
    assert hooks["A"].bodies == [] and hooks["C"].bodies == []


def test_a_resolve_command_closes_the_alert_with_one_message(tmp_path, hooks):
    n = Notifier(tmp_path, REPEAT, hooks)
    n.lifecycle.on_alert(LEAK, T0)
    n.at(T0)
    assert n.lifecycle.on_command(command("resolve", text="valve closed"), T0 + MIN) == "resolves"
    n.lifecycle.on_alert(alert(state="cleared", severity="info"), T0 + 2 * MIN)  # the gateway's clear, later
    assert n.at(T0 + 2 * MIN) == 1 and sum(n.at(T0 + m * MIN) for m in (10, 20, 40)) == 0
    assert titles(hooks["A"])[-1] == "Resolved (by m.dupont): Possible leak – net3-north"
    assert n.lifecycle.on_command(command("comment", text="x"), T0 + 3 * MIN) == "comments"
    assert n.state.alert("net3-north/gw-net3-01/leak-20260310T1330")["closed_by"] == "m.dupont"


def test_french_and_english_routes_get_their_own_words(tmp_path, hooks):
    rules = """
routes:
  - {name: fr, match: {}, urls: [HOOK_A], language: fr, timezone: Europe/Paris, group_window_s: 0,
     link: "https://grafana.example.org/d/leaks?var-site={site}&alert={alert_id}"}
  - {name: en, match: {}, urls: [HOOK_B], language: en, timezone: UTC, group_window_s: 0}
"""
    n = Notifier(tmp_path, rules, hooks)
    n.lifecycle.on_alert(LEAK, T0)
    n.at(T0)
    assert hooks["A"].bodies[0]["message"].splitlines() == [
        "Fuite probable à net3-north (passerelle gw-net3-01)",
        "Depuis : mar. 10 mars 2026 14:30 (Europe/Paris)",
        "Débit de fuite estimé : 141,9 L/s (20 % de l'entrée de la zone, 695,8 L/s)",
        "Capteurs les plus touchés : 173, 101, 141",
        "Gravité : critique – alerte leak-20260310T1330",
        f"La passerelle dit : {LEAK.message}",
        "Tableau de bord : https://grafana.example.org/d/leaks?var-site=net3-north&alert=leak-20260310T1330",
    ]
    assert hooks["B"].bodies[0]["message"].splitlines()[:3] == [
        "Possible leak at net3-north (gateway gw-net3-01)",
        "Since: Tue 10 Mar 2026 13:30 (UTC)",
        "Estimated leak flow: 141.9 L/s (20 % of the zone inflow, 695.8 L/s)",
    ]


def test_a_channel_that_stays_down_ends_in_a_dead_letter(tmp_path, hooks):
    rules = """
delivery: {max_attempts: 3, first_retry_s: 1, max_retry_s: 10}
routes:
  - {name: ops, match: {}, urls: ["json://127.0.0.1:PORT/hook"], group_window_s: 0}
"""
    hooks["A"].close()  # its port: nothing listens there any more
    n = Notifier(tmp_path, rules.replace("PORT", str(hooks["A"].port)), {})
    hooks["A"] = Webhook()  # the fixture closes it
    n.lifecycle.on_alert(LEAK, T0)
    assert [n.at(T0 + ms) for ms in (0, 500, 1000, 2500, 3000)] == [0] * 5
    assert n.state.outbox_counts() == {"dead": 1}
    counters = n.state.counters()
    assert (counters["dead_letters"], counters["send_failures"]) == (1, 3)


def test_a_due_notification_survives_a_restart(tmp_path, hooks):
    rules = "routes:\n  - {name: ops, match: {}, urls: [HOOK_A], group_window_s: 60}\n"
    n = Notifier(tmp_path, rules, hooks)
    n.lifecycle.on_alert(LEAK, T0)
    n.state.close()  # stopped before the group window ended
    again = Notifier(tmp_path, rules, hooks)
    assert again.lifecycle.on_alert(LEAK, T0 + 1000) == "raises_again"  # the broker's redelivery: no new page
    assert again.at(T0 + 60_000) == 1 and again.at(T0 + 120_000) == 0
    assert len(hooks["A"].bodies) == 1


def test_a_channel_that_is_down_is_probed_once_per_retry_not_once_per_waiting_message(tmp_path, hooks):
    rules = """
delivery: {first_retry_s: 1, max_retry_s: 1, max_attempts: 100}
routes:
  - {name: ops, match: {}, urls: ["json://127.0.0.1:PORT/hook"], group_window_s: 0}
"""
    hooks["A"].close()  # down: nothing listens on its port
    port = hooks["A"].port
    n = Notifier(tmp_path, rules.replace("PORT", str(port)), {})
    for i in range(5):
        n.lifecycle.on_alert(alert(alert_id=f"leak-w{i}", site=f"net3-s{i}"), T0)
    assert [n.at(T0 + s * 1000) for s in range(4)] == [0] * 4  # four passes, one failed try each
    assert n.state.counters()["send_failures"] == 4
    hooks["A"] = Webhook(port)  # back on the same port: the next probe succeeds, the others follow
    assert n.at(T0 + 4000) == 5
    assert len(set(titles(hooks["A"]))) == 5  # each waiting alert once
    assert n.state.outbox_counts() == {"sent": 5}
