"""Chaos rows for the notifier: `frugalsense notify` killed with kill -9, and its SMTP server down, mid-stream.

All real: the session's Mosquitto, an aiosmtpd mailbox, the notifier as a process with its
SQLite state. A stream of alert updates (raises on three sites, then clears of a part of
them) goes to the broker as gateways send it; something breaks for the chaos suite's
outage length (FRUGALSENSE_CHAOS_OUTAGE_S: 5 s in `make test`, 60 s in `make chaos`); then
every mail in the mailbox is counted by alert id and event:

- ``expected``: one "raised" mail per raise, one "resolved" mail per clear;
- ``lost``: expected notifications never received;
- ``duplicated``: mails beyond one per expected notification;
- ``send_failures`` and ``dead_letters``: the notifier's own counters (tries that failed
  while the channel was down; notifications it gave up on).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.contracts import Alert, AlertState, Severity
from tests import chaos
from tests.test_notify_parts import Mailbox
from tests.test_notify_service import NotifierProcess, Publisher, wait

RAISES = 60
CLEARS = 30
SITES = ("net3-north", "net3-south", "net3-east")
PACE_S = 0.05  # between two published updates
BASE_MS = 1_773_149_400_000  # 2026-03-10 13:30 UTC, the demo's learned leak


@dataclass
class NotifyRow:
    scenario: str
    what: str
    outage_s: float
    expected: int
    delivered: int
    lost: int
    duplicated: int
    send_failures: int
    dead_letters: int
    seconds: float


def rules(box: Mailbox) -> str:
    """One e-mail route for every leak; retries often enough to find the channel back within a second or two."""
    return (
        "delivery: {first_retry_s: 0.5, max_retry_s: 2, max_attempts: 1000, max_age_min: 60, min_send_interval_s: 0}\n"
        "routes:\n"
        "  - name: water\n"
        "    match: {kind: leak}\n"
        f'    urls: ["{box.url()}"]\n'
        "    group_window_s: 0\n"
    )


def stream() -> list[Alert]:
    """RAISES raises, then CLEARS clears of the first ones, as learned leak detectors send them."""
    raises = [
        Alert(
            BASE_MS + i * 60_000,
            SITES[i % len(SITES)],
            "gw-01",
            "leak",
            f"leak-c{i:03d}",
            AlertState.RAISED,
            "leak",
            Severity.CRITICAL,
            0.93,
            f"Possible leak of about 12.{i % 10} L/s since 2026-03-10 13:30 UTC (alert leak-c{i:03d})",
            "leak-mlp-net3",
            "1",
            BASE_MS + i * 60_000,
            {"leak_flow_lps": 12.0 + (i % 10) / 10, "hint": ["173", "101", "141"]},
        )
        for i in range(RAISES)
    ]
    clears = [
        dataclasses.replace(
            a,
            time_ms=a.time_ms + 6 * 3_600_000,
            state=AlertState.CLEARED,
            severity=Severity.INFO,
            message=f"Leak alarm cleared (alert {a.alert_id})",
            explanation={},
        )
        for a in raises[:CLEARS]
    ]
    return raises + clears


def expected_keys(updates: list[Alert]) -> set[tuple[str, str]]:
    return {(a.alert_id, "resolved" if a.state is AlertState.CLEARED else "raised") for a in updates}


def count_mails(box: Mailbox) -> Counter:
    """Mails by (alert id, raised|resolved); the alert id is in every message's text."""
    seen: Counter = Counter()
    for subject, body in box.texts():
        alert_id = next(w.strip("().,") for w in body.split() if w.strip("().,").startswith("leak-c"))
        seen[(alert_id, "resolved" if subject.startswith("Resolved") else "raised")] += 1
    return seen


def _row(name, what, outage, started, updates, box, notifier) -> NotifyRow:
    expected = expected_keys(updates)
    box.wait_for(len(expected), timeout_s=120 + 2 * outage)
    wait(lambda: notifier.due() == 0, 60 + outage, "notifications still due")
    seen = count_mails(box)
    delivered = len(expected & set(seen))
    return NotifyRow(
        name,
        what,
        outage,
        len(expected),
        delivered,
        len(expected) - delivered,
        sum(seen.values()) - delivered,
        notifier.counter("send_failures"),
        notifier.counter("dead_letters"),
        round(time.monotonic() - started, 1),
    )


def notifier_kill9(services, folder: Path, outage: float) -> NotifyRow:
    """kill -9 three times mid-stream, each right after a mail arrived; down for the outage while alerts come."""
    box = Mailbox().start()
    notifier = NotifierProcess(services, folder, rules(box)).start()
    publisher = Publisher(services, notifier.prefix)
    updates, started = stream(), time.monotonic()
    try:
        up, down = 20, 10  # per round: updates published while it runs, then while it is down
        rounds = [updates[k : k + up + down] for k in range(0, len(updates), up + down)]
        for part in rounds:
            for a in part[: up - 1]:
                publisher.alert(a)
                time.sleep(PACE_S)
            before = len(box.mails)
            publisher.alert(part[up - 1])
            wait(lambda n=before: len(box.mails) > n, 60, "no mail before the kill")
            notifier.kill()
            down_until = time.monotonic() + outage
            for a in part[up:]:  # spread over the outage; the broker keeps them for the notifier's session
                publisher.alert(a)
                time.sleep(outage / (2 * down))
            time.sleep(max(0.0, down_until - time.monotonic()))
            notifier.start()
        return _row(
            "notifier_kill9", f"notifier killed (kill -9) {len(rounds)} times", outage, started, updates, box, notifier
        )
    finally:
        publisher.close()
        notifier.stop()
        box.stop()


def smtp_down(services, folder: Path, outage: float) -> NotifyRow:
    """The SMTP server stops mid-stream for the outage, alerts still coming, then comes back on the same port."""
    box = Mailbox().start()
    notifier = NotifierProcess(services, folder, rules(box)).start()
    publisher = Publisher(services, notifier.prefix)
    updates, started = stream(), time.monotonic()
    try:
        for i, a in enumerate(updates):
            publisher.alert(a)
            time.sleep(PACE_S)
            if i == 30:
                wait(lambda: len(box.mails) >= 10, 60, "no mail before the SMTP outage")
                box.stop()
                down_until = time.monotonic() + outage
        wait(lambda: time.monotonic() >= down_until, outage + 60, "outage")
        wait(lambda: notifier.counter("send_failures") > 0, 60, "no failed try while SMTP was down")
        box.start()
        return _row("smtp_down", "SMTP server down", outage, started, updates, box, notifier)
    finally:
        publisher.close()
        notifier.stop()
        box.stop()


SCENARIOS = (notifier_kill9, smtp_down)


def table(rows: list[NotifyRow]) -> str:
    head = (
        "| scenario | what broke | outage s | expected | delivered | lost | duplicated | send failures | dead letters |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.what} | {r.outage_s:g} | {r.expected} | {r.delivered} | {r.lost} | "
            f"{r.duplicated} | {r.send_failures} | {r.dead_letters} |"
        )
    return "\n".join(lines)


def write_report(rows: list[NotifyRow], folder: Path) -> tuple[Path, Path]:
    """chaos-notify.json and chaos-notify.md next to the chain's chaos.json and chaos.md."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "chaos-notify.json", folder / "chaos-notify.md"
    json_path.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    outage = rows[0].outage_s if rows else chaos.outage_s()
    md_path.write_text(
        f"""# Chaos rows for the notifier: what reaches the mailbox when things break

Generated by `tests/test_notify_chaos.py` (helpers in `tests/chaos_notify.py`) on {when}, on
{platform.platform()} ({os.cpu_count()} CPUs), with **outages of {outage:g} s**
(`{chaos.OUTAGE_ENV}={outage:g}`). Do not edit by hand: `make chaos` rewrites it with 60 s outages.

Real parts: Mosquitto 2, `frugalsense notify` as a process (SQLite state, MQTT acknowledged
only after the durable record), an aiosmtpd SMTP server as the channel. The stream is
{RAISES} leak raises on {len(SITES)} sites and {CLEARS} clears, one every {PACE_S:g} s; alerts published
while the notifier is down wait in its persistent MQTT session.

{table(rows)}

- **expected**: one "raised" mail per raise and one "resolved" mail per clear;
- **lost**: expected mails never received; **duplicated**: mails beyond one per expected;
- **send failures**: tries the notifier counted as failed (the channel was down), retried
  with backoff; **dead letters**: notifications it gave up on.

A kill -9 in the instant between the SMTP server's acceptance of a mail and the notifier's
commit that it was sent repeats that one mail after the restart (no SMTP service takes part
in the notifier's transaction; docs/notify.md). The kills here come right after a mail
arrived, the worst moment; the column says how often it happened in this run.
"""
    )
    return json_path, md_path
