"""Chaos scenario ``gateway_restart_mid_leak``: kill -9 the gateway while a leak alert is open, restart it.

The lane, processes and counting are tests/chaos.py's; what this scenario adds is the
moment of the kill and what it checks after. The gateway streams the two-zone dataset
(zone a leaks on days 4-6, so its night-flow alert is raised on day 4 and cleared on
day 8, two normal nights after the repair). The kill comes as soon as a periodic
checkpoint holds that alert open (``<data_dir>/checkpoints/mnf-a.json``), before its
clear; the gateway is restarted after the outage and resumes: its detectors take their
checkpoints back and skip the readings these already hold. It passes when nothing is
lost or duplicated (as every scenario), both detectors were restored, the open alert was
raised once by the two runs together, and its clear landed.

Importing this module registers the scenario in ``chaos.SCENARIOS`` (tests/test_chaos.py
imports it), so it runs in the suite and its row goes into docs/chaos.json and chaos.md.
"""

from __future__ import annotations

import json
import re
import time

from tests import chaos
from tests.chaos import STREAM_DAYS, Lab, Lane, Row, _wait_for

NAME = "gateway_restart_mid_leak"
ZONE = "mnf-a"  # the zone whose alert is open at the kill
MAX_SPEED = 86_400.0  # one day of data a second


def open_alert(lane: Lane) -> tuple[str, int] | None:
    """The zone's alert held open by its latest checkpoint, and the checkpoint's data time; None if none."""
    path = lane.data_dir / "checkpoints" / f"{ZONE}.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet (the rename makes a half file impossible)
        return None
    alert = doc["state"]["alert"]
    return None if alert is None else (alert[0], doc["header"]["last_time_ms"])


def gateway_logs(lane: Lane) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(lane.dir.glob("gateway-*.log")))


def gateway_restart_mid_leak(lab: Lab) -> Row:
    started = time.monotonic()
    lane = Lane(lab, NAME)
    # At most a data day a second: checkpoints (at most one a second) fall in the alert's four days.
    lane.write_config(lab.dataset(STREAM_DAYS), speed=min(lab.stream_speed(), MAX_SPEED))
    expected = lab.expected(lane, STREAM_DAYS)
    row = Row(NAME, f"gateway kill -9 while a leak alert is open, restarted {lab.outage_s:g} s later", lab.outage_s)
    try:
        lane.start_spy()
        lane.start_bridge()
        lane.start_gateway()
        lane.wait_streaming(60)
        if not _wait_for(lambda: open_alert(lane) is not None or lane.gateway.popen.poll() is not None, 120):
            raise AssertionError(f"{NAME}: no checkpoint held the {ZONE} alert open:\n{lane.gateway.tail()}")
        lane.gateway.kill9()
        held = open_alert(lane)
        if held is None:
            raise AssertionError(f"{NAME}: the gateway ended before a checkpoint held the alert open")
        alert_id, checkpoint_ms = held
        with lane.spy.lock:
            cleared_before = lane.spy.items[("alert", alert_id, "cleared")]
        time.sleep(lab.outage_s)
        lane.start_gateway()
        lane.wait_gateway(lab.outage_s * 2 + 180)
        lane.wait_landed(expected.total, lab.outage_s + 120)
        lane.measure(expected, row)
        logs = gateway_logs(lane)
        cleared = lane._series(f"SELECT count(score) FROM alert WHERE alert_id = '{alert_id}' AND state = 'cleared'")
        row.notes.update(
            open_alert=alert_id,
            checkpoint_data_time_ms=checkpoint_ms,
            cleared_before_kill=cleared_before,
            checkpoints_restored=len(re.findall(r"checkpoint \S+ restored", logs)),
            checkpoints_ignored=len(re.findall(r"checkpoint \S+ ignored", logs)),
            raised_by_gateway=len(re.findall(rf"alert {re.escape(alert_id)} raised", logs)),
            cleared_by_gateway=len(re.findall(rf"alert {re.escape(alert_id)} cleared", logs)),
            alert_cleared_landed=bool(cleared) and (alert_id, "cleared") in expected.alerts,
        )
        n = row.notes
        row.what = (
            f"gateway kill -9 while leak alert {alert_id} is open, restarted {lab.outage_s:g} s later: "
            f"{n['checkpoints_restored']} detectors went on from their checkpoints, the alert was raised "
            f"{n['raised_by_gateway']}x and cleared {n['cleared_by_gateway']}x"
            + (" and its clear landed" if n["alert_cleared_landed"] else ", its clear did NOT land")
        )
    finally:
        lane.finish()
    row.seconds = round(time.monotonic() - started, 1)
    return row


def problems(row: Row) -> list[str]:
    """What this scenario promises beyond every scenario's ``Row.problems``."""
    n = row.notes
    out = []
    if n.get("cleared_before_kill"):
        out.append("the alert had already cleared when the gateway was killed")
    if n.get("checkpoints_restored") != 2 or n.get("checkpoints_ignored"):
        restored, ignored = n.get("checkpoints_restored"), n.get("checkpoints_ignored")
        out.append(f"{restored} checkpoints restored (2 wanted), {ignored} ignored")
    if n.get("raised_by_gateway") != 1:
        out.append(f"alert {n.get('open_alert')} raised {n.get('raised_by_gateway')} times by the two runs")
    if n.get("cleared_by_gateway") != 1 or not n.get("alert_cleared_landed"):
        out.append(f"alert {n.get('open_alert')} not cleared once after the restart")
    return out


chaos.SCENARIOS[NAME] = gateway_restart_mid_leak
