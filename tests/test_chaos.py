"""Chaos suite: break the broker, the database, the gateway, the bridge, the outbox bound; nothing may be lost.

Real processes and services throughout (see tests/chaos.py for the scenarios and the
definitions of sent, landed, lost, duplicated). The outage length is
FRUGALSENSE_CHAOS_OUTAGE_S (5 s by default; `make chaos` runs 60 s and writes
docs/chaos.json and docs/chaos.md). The table is printed and saved under
FRUGALSENSE_CHAOS_REPORT (default .run/chaos/).
"""

from __future__ import annotations

import json

import pytest

from tests import chaos, chaos_restart  # chaos_restart registers gateway_restart_mid_leak in chaos.SCENARIOS


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Every scenario, run once for the module (two labs side by side), name -> Row or exception."""
    return chaos.run_suite(tmp_path_factory.mktemp("chaos"))


@pytest.mark.parametrize("scenario", list(chaos.SCENARIOS))
def test_nothing_is_lost_or_duplicated(suite, scenario):
    row = suite[scenario]
    if isinstance(row, Exception):
        raise row
    assert row.sent > 0 and row.detections_sent > 0 and row.alerts_sent > 0
    assert row.problems() == [], f"{scenario}: {row.problems()}\n{row}"


def test_the_outbox_bound_scenario_really_filled_the_outbox(suite):
    row = suite["outbox_bound"]
    if isinstance(row, Exception):
        raise row
    assert row.dropped_by_bound > 0  # the bound was reached, or the scenario proves nothing
    assert row.notes["status_says_dropped"] == row.dropped_by_bound  # the status message told the truth
    assert row.notes["outbox_bytes_when_full"] <= row.notes["outbox_max_mb"] * 1024 * 1024


def test_a_killed_gateway_resumed_and_replayed_its_outbox(suite):
    """Without a durable outbox these would pass by re-sending everything: check what the restart did."""
    for name in ("gateway_kill9", "gateway_kill9_offline"):
        if isinstance(suite[name], Exception):
            raise suite[name]
    assert suite["gateway_kill9"].notes["resumed_readings"] > 0
    offline = suite["gateway_kill9_offline"].notes
    assert offline["outbox_replayed"] > 0 and offline["resumed_readings"] > 0


def test_a_gateway_killed_mid_leak_went_on_from_its_checkpoints_and_cleared_the_alert_once(suite):
    """No warm-up after the restart: both detectors restored, the open alert neither lost nor raised twice."""
    row = suite[chaos_restart.NAME]
    if isinstance(row, Exception):
        raise row
    assert sorted(row.notes["open_alerts"]) == ["leak-ml", "mnf-leak"]
    assert chaos_restart.problems(row) == [], f"{chaos_restart.problems(row)}\n{row.notes}"


def test_the_table_is_printed_and_saved(suite, capsys):
    rows = [r for r in suite.values() if isinstance(r, chaos.Row)]
    json_path, md_path = chaos.write_report(rows, chaos.report_dir())
    with capsys.disabled():
        print(
            f"\n\nchaos suite, outages of {chaos.outage_s():g} s:\n{chaos.table(rows)}\n"
            f"saved to {json_path} and {md_path}\n"
        )
    saved = json.loads(json_path.read_text())
    assert [r["scenario"] for r in saved] == [r.scenario for r in rows]
    assert all({"scenario", "sent", "landed", "lost", "duplicated"} <= set(r) for r in saved)
    assert f"outages of {chaos.outage_s():g} s" in md_path.read_text()


def test_the_malformed_flood_covers_every_kind_of_bad_input():
    """The generator itself: every payload is refused by the codec the bridge uses, with the reasons we claim."""
    from gateway.protocol import payloads

    reasons = {}
    for topic, body in chaos.malformed_payloads("chaos-x", 2000):
        with pytest.raises(payloads.PayloadError) as refused:
            payloads.decode("chaos-x", topic, body)
        reasons[refused.value.reason] = reasons.get(refused.value.reason, 0) + 1
    assert set(reasons) == {"not_utf8", "not_json", "schema_version", "bad_shape", "invalid", "bad_topic", "too_large"}


def test_outage_length_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(chaos.OUTAGE_ENV, "60")
    assert chaos.outage_s() == 60
    monkeypatch.setenv(chaos.OUTAGE_ENV, "a minute")
    with pytest.raises(ValueError, match="number of seconds"):
        chaos.outage_s()
