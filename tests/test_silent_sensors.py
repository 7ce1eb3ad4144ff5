"""Silent-sensor alerts and the gateway's health, through the real gateway, Mosquitto, bridge and InfluxDB.

A replayed flow meter that stops for 100 minutes of data (its values missing: 'unknown'
readings) raises exactly one sensor_silent alert once silent for more than
``silent_after_min`` on the replay's clock, and clears it once when it is back; both land
in InfluxDB through the bridge, with the status and its health. A line node on a real
pty that stops talking raises the alert on the gateway's (injected) clock, keeps it
open across a restart, and clears it with the same id when it talks again.
"""

from __future__ import annotations

import json
import os
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from edge.contracts import Alert, AlertState
from edge.datasets import ZoneDataset
from gateway.bridge.influx_writer import InfluxV1Writer
from gateway.bridge.service import Bridge
from gateway.config import load_config
from gateway.device.gateway_clock import ManualClock
from gateway.device.runner import GatewayRunner
from gateway.device.silent_sensors import FILE_NAME
from gateway.device.status_file import read_status
from gateway.protocol.mqtt_client import MqttSettings
from gateway.protocol.status_payload import HEALTH_FIELDS
from gateway.tools.doctor import FAIL, OK, check_last_status
from tests.mqtt_clients import Collector

T0 = 1_772_409_600_000  # 2026-03-02 00:00 UTC
STEP_MS = 300_000  # 5-minute readings
GAP = range(40, 60)  # F-in sends nothing (missing values) for these steps: 100 minutes
TIMEOUT_S = 30.0

REPLAY = """
site: net3
gateway: gw-quiet
sensors:
  - {{id: F-in, quantity: flow, driver: replay, column: "10"}}
  - {{id: P-1, quantity: pressure, driver: replay, column: "11", silent_after_min: 60}}
sources:
  replay: {{file: zone.npz}}
alerts: {{silent_after_min: 15}}
mqtt: {{host: 127.0.0.1, port: {port}, topic_prefix: {prefix}}}
storage: {{data_dir: gw}}
"""


def zone(steps: int = 120) -> ZoneDataset:
    t = T0 + np.arange(steps, dtype=np.int64) * STEP_MS
    values = np.stack([40 + np.arange(steps) % 7, 52 - np.arange(steps) % 3], axis=1).astype(float)
    values[list(GAP), 0] = np.nan
    return ZoneDataset(t, values, ["10", "11"], ["flow", "pressure"], ["L/s", "m"], np.zeros(steps))


def _wait(condition, timeout_s: float = TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_replayed_sensor_that_stops_raises_one_sensor_silent_cleared_once_and_it_lands_in_influxdb(
    services, tmp_path, capsys
):
    zone().save(tmp_path / "zone.npz")
    (tmp_path / "gw.yaml").write_text(REPLAY.format(port=services.mqtt_port, prefix="quiet1"))
    config = load_config(tmp_path / "gw.yaml")
    writer = InfluxV1Writer(services.influx_url, "quiet_1")
    writer.ensure_database()
    bridge = Bridge(
        MqttSettings(services.mqtt_host, services.mqtt_port, client_id="quiet-bridge"), writer, prefix="quiet1"
    )
    bridge.start()
    outputs: list = []
    try:
        with Collector(services.mqtt_port, "quiet1/net3/gw-quiet/status", client_id="quiet-spy") as spy:
            summary = GatewayRunner.from_config(config).run(on_output=outputs.append, drain_timeout_s=20)
            assert summary.all_acknowledged
            assert spy.wait_for(lambda ms: any(b'"health"' in m.payload for m in ms))
        assert bridge.wait_idle(quiet_s=1.0, timeout_s=60)
    finally:
        bridge.stop()

    # Exactly one raise, when F-in had been silent for more than 15 min on the replay's clock (its last reading
    # at step 39; at step 42 it is silent for 15 min, not more), and one clear at its first reading back.
    silent = [o for o in outputs if isinstance(o, Alert) and o.kind == "sensor_silent"]
    assert [(a.state, a.time_ms) for a in silent] == [
        (AlertState.RAISED, T0 + 43 * STEP_MS),
        (AlertState.CLEARED, T0 + 60 * STEP_MS),
    ]
    raised, cleared = silent
    last = T0 + 39 * STEP_MS
    assert raised.alert_id == cleared.alert_id == "silent-F-in-20260302T031500"
    assert raised.since_ms == cleared.since_ms == last
    assert raised.message == (
        "Sensor F-in (flow, replay of zone.npz, column 10) has sent no reading since 2026-03-02 03:15 UTC "
        "(20 min): check its power, cable and connector"
    )
    assert "sends readings again since 2026-03-02 05:00 UTC, after 105 min of silence" in cleared.message
    assert summary.alert_counts == {("sensor_silent", "raised"): 1, ("sensor_silent", "cleared"): 1}

    # In InfluxDB through the bridge: the alert's two points, and the status with its health.
    (series,) = writer.query('SELECT alert_id, "state", message, since_ms, x_source FROM alert')
    rows = series["values"]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (T0 + 43 * STEP_MS, raised.alert_id, "raised"),
        (T0 + 60 * STEP_MS, raised.alert_id, "cleared"),
    ]
    assert rows[0][3] == raised.message and rows[0][4] == last and rows[0][5] == "replay of zone.npz, column 10"
    fields = ", ".join(f'"health:{name}"' for name in HEALTH_FIELDS if name != "soc_temp_c")
    (status,) = writer.query(f'SELECT {fields}, "replay:state", sensors_silent FROM gateway_status')
    latest = status["values"][-1]
    assert all(isinstance(v, int | float) for v in latest[1:6]), latest  # JSON writes 2.0 as 2
    assert latest[2] > 10 and latest[3] > 0  # rss_mb, disk_free_mb
    assert latest[6] == "ended" and latest[7] == 0
    assert sum(bridge.deadletters.values()) == 0

    # The retained status carries the same, and doctor shows it from status.json.
    body = json.loads(next(m.payload for m in reversed(spy.messages) if b'"health"' in m.payload))
    assert set(body["health"]) >= set(HEALTH_FIELDS) - {"soc_temp_c"} and body["source_states"] == {"replay": "ended"}
    assert read_status(tmp_path / "gw")["health"].keys() == body["health"].keys()
    checks = {c.name: c for c in check_last_status(config)}
    assert checks["health"].status == OK and "RSS" in checks["health"].detail and "free disk" in checks["health"].detail
    assert checks["source replay"].detail.startswith("ended, readings 240")
    assert checks["silent sensors"].status == OK and checks["silent sensors"].detail == "none of 2 watched"
    from gateway.commands.status_cmd import _print_statuses

    capsys.readouterr()
    _print_statuses(config, {"net3/gw-quiet": body})  # what `frugalsense status` prints of it
    printed = capsys.readouterr().out
    assert "    health rss_mb" in printed and "    source replay                ended" in printed

    # Run again over the same file, resuming (what `frugalsense run` does after a crash): nothing is raised twice.
    again = GatewayRunner.from_config(config, resume=True).run(drain_timeout_s=20)
    assert again.alert_counts == {} and again.all_acknowledged


@pytest.fixture
def node_line():
    """A pty: the test writes as the node on the master side, the gateway opens the slave."""
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(slave)
    os.close(master)


class Node:
    """A line node on the pty's master side: ``no2=20`` every 0.1 s while talking, ``no2=99`` as its last line."""

    def __init__(self, master: int):
        self.master, self.talking, self.done = master, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.is_set():
            if self.talking.wait(0.1):
                os.write(self.master, b"no2=20\r\n")
                time.sleep(0.1)

    def stop_talking(self) -> None:
        self.talking.clear()
        time.sleep(0.15)  # lets a line being written finish; the marker below is the last one either way
        os.write(self.master, b"no2=99\r\n")

    def close(self) -> None:
        self.done.set()
        self.thread.join(2)


class Running:
    """A gateway run in a thread, with what it published and read."""

    def __init__(self, config, services, clock: ManualClock, resume: bool):
        self.stop, self.outputs, self.readings = threading.Event(), [], []
        self.runner = GatewayRunner.from_config(
            config, mqtt_host=services.mqtt_host, mqtt_port=services.mqtt_port, resume=resume, clock=clock
        )
        self.summary = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.summary = self.runner.run(
            stop=self.stop, on_output=self.outputs.append, on_reading=self.readings.append, drain_timeout_s=10
        )

    def alerts(self, state: AlertState) -> list[Alert]:
        return [o for o in self.outputs if isinstance(o, Alert) and o.state == state]

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.summary


def _looked_after_move(clock: ManualClock) -> bool:
    """True once the gateway's loop read the clock twice more: a tick after the move has run to its end."""
    seen = clock.reads
    return _wait(lambda: clock.reads >= seen + 2)


def test_a_live_node_that_stops_raises_on_the_gateway_clock_keeps_its_alert_across_a_restart_and_clears_it(
    node_line, services, tmp_path
):
    master, port = node_line
    (tmp_path / "gw.yaml").write_text(f"""\
site: city-centre
gateway: gw-quiet-node
sensors:
  - {{id: NO2-node, quantity: no2, driver: line, port: {port}, key: no2, interval_s: 60}}
alerts: {{silent_after_min: 15}}
mqtt: {{host: {services.mqtt_host}, port: {services.mqtt_port}, topic_prefix: quiet2}}
storage: {{data_dir: {tmp_path / "gw"}}}
""")
    config = load_config(tmp_path / "gw.yaml")
    node = Node(master)
    clock = ManualClock(int(time.time() * 1000))
    with Collector(services.mqtt_port, "quiet2/city-centre/gw-quiet-node/alerts", client_id="quiet2-spy") as spy:
        node.talking.set()
        first = Running(config, services, clock, resume=False)
        try:
            assert _wait(lambda: len(first.readings) >= 3)
            node.stop_talking()
            assert _wait(lambda: any(r.value == 99.0 for r in first.readings))  # the node's last line is in
            clock.advance_min(14)
            assert _looked_after_move(clock) and first.alerts(AlertState.RAISED) == []  # 14 min: not yet
            clock.advance_min(2)
            assert _wait(lambda: first.alerts(AlertState.RAISED))
            clock.advance_min(30)
            assert _looked_after_move(clock)
        finally:
            first.finish()
        (raised,) = first.alerts(AlertState.RAISED)  # once, however long it stays silent
        assert raised.kind == "sensor_silent" and f"line node on {port}" in raised.message
        assert "has sent no reading since" in raised.message and raised.time_ms - raised.since_ms >= 15 * 60_000

        # Stopped while the node is silent: doctor names it, and the state says which alert is open.
        silent = {c.name: c for c in check_last_status(config)}["silent sensors"]
        assert silent.status == FAIL and "NO2-node since" in silent.detail
        assert (
            json.loads((tmp_path / "gw" / FILE_NAME).read_text())["sensors"]["NO2-node"]["alert_id"] == raised.alert_id
        )

        # A restart an hour later, the node still silent: no new alert, however long the gateway waits.
        clock.advance_min(60)
        second = Running(config, services, clock, resume=True)
        try:
            assert _looked_after_move(clock)
            clock.advance_min(20)  # long enough for a sensor the gateway knew nothing about
            assert _looked_after_move(clock)
            assert second.alerts(AlertState.RAISED) == []
            node.talking.set()  # back: one clear, with the first run's id
            assert _wait(lambda: second.alerts(AlertState.CLEARED))
        finally:
            second.finish()
            node.close()
        (cleared,) = second.alerts(AlertState.CLEARED)
        assert cleared.alert_id == raised.alert_id and cleared.since_ms == raised.since_ms
        assert second.summary.alert_counts == {("sensor_silent", "cleared"): 1}
        assert spy.wait_for(lambda ms: sum(b"sensor_silent" in m.payload for m in ms) >= 2)
    states = [json.loads(m.payload)["state"] for m in spy.messages if b"sensor_silent" in m.payload]
    assert states == ["raised", "cleared"]


def test_the_health_of_a_status_costs_little_to_collect(tmp_path):
    """Measured, not asserted: the cost of one health sample (printed for the report; -s shows it)."""
    from gateway.device.health import HealthProbe

    probe = HealthProbe(Path(tmp_path))
    started = time.perf_counter()
    for _ in range(200):
        health = probe.sample({"outbox_backlog": 0, "outbox_oldest_s": 0.0})
    cost_us = (time.perf_counter() - started) / 200 * 1e6
    print(f"health sample: {cost_us:.0f} us per status message ({sorted(health)})")
    assert set(health) >= set(HEALTH_FIELDS) - {"soc_temp_c"}


def test_the_documented_status_with_health_decodes_and_a_health_that_is_not_numbers_is_refused():
    import re

    from gateway.protocol import payloads
    from gateway.protocol import topics as T

    doc = (Path(__file__).resolve().parents[1] / "docs" / "contracts.md").read_text()
    (example,) = [b for b in re.findall(r"```jsonc\n(.*?)```", doc, flags=re.S) if '"health"' in b]
    topic = T.Topics("frugalsense", "net3", "gw-01").status
    status = payloads.decode("frugalsense", topic, json.dumps(json.loads(example)).encode())
    assert set(status.health) == set(HEALTH_FIELDS) and status.source_states == {"serial": "online"}
    for bad in ({"health": {"rss_mb": "84"}}, {"health": {"rss_mb": True}}, {"source_states": {"serial": "asleep"}}):
        body = json.dumps({"v": 1, "state": "online", "time": T0, **bad}).encode()
        with pytest.raises(payloads.PayloadError) as refused:
            payloads.decode("frugalsense", topic, body)
        assert refused.value.reason == "invalid"


def test_silent_after_min_is_checked_at_its_line_with_did_you_mean_and_against_the_sensor_s_own_pace(tmp_path):
    from gateway.config import ConfigError

    path = tmp_path / "air.yaml"
    path.write_text("""\
site: city-centre
gateway: gw-01
sensors:
  - {id: PM25-sds, quantity: pm25, driver: sds011, port: /dev/serial/by-id/usb-1a86-if00-port0,
     interval_s: 10, work_s: 60, sleep_s: 240}
  - {id: NO2-node, quantity: no2, driver: line, port: /dev/serial/by-id/usb-Espressif-if00, interval_s: 600,
     silent_after_min: 15}
  - {id: CC-centre, quantity: cell_count, driver: cell_counts, file: cells.csv, cells: [C-1], silent_after_min: 0.5}
mqtt: {host: 127.0.0.1}
alerts: {silent_after_min: 5}
""")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    text = str(refused.value)
    assert "air.yaml:7: sensors[1].silent_after_min: 15 min is too short for sensor 'NO2-node'" in text
    assert "use at least 21" in text
    assert "air.yaml:8: sensors[2].silent_after_min: must be 0 (never) or a number of minutes from 1 to 10080" in text
    assert "air.yaml:10: alerts.silent_after_min: 5 min is too short for sensor 'PM25-sds'" in text
    assert "give that sensor its own silent_after_min (line 4)" in text
    path.write_text(path.read_text().replace("alerts: {silent_after_min: 5}", "alerts: {silent_aftr_min: 15}"))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "air.yaml:10: alerts.silent_aftr_min: unknown key, did you mean 'silent_after_min'?" in str(refused.value)


def test_the_soc_temperature_is_the_soc_s_thermal_zone_where_there_is_one_and_absent_otherwise(tmp_path):
    from gateway.device.health import HealthProbe

    def zone(name: str, kind: str, millidegrees: str) -> None:
        (tmp_path / "thermal" / name).mkdir(parents=True)
        (tmp_path / "thermal" / name / "type").write_text(kind + "\n")
        (tmp_path / "thermal" / name / "temp").write_text(millidegrees + "\n")

    zone("thermal_zone0", "gpu-thermal", "39000")
    zone("thermal_zone1", "cpu-thermal", "48312")  # a Raspberry Pi's SoC
    zone("thermal_zone2", "broken", "not a number")
    probe = HealthProbe(tmp_path, thermal_root=tmp_path / "thermal")
    started = time.perf_counter()
    health = probe.sample({})
    print(f"health sample with a thermal zone: {(time.perf_counter() - started) * 1e6:.0f} us")
    assert health["soc_temp_c"] == 48.3 and list(health) == [n for n in HEALTH_FIELDS if n in health]
    (tmp_path / "thermal" / "thermal_zone1" / "temp").unlink()  # unreadable now: absent, not an error
    assert "soc_temp_c" not in probe.sample({})


def test_a_wall_clock_set_at_boot_makes_no_sensor_silent_and_loses_no_open_alert(tmp_path):
    from edge.contracts import Reading
    from gateway.device.silent_sensors import SilentSensors, Watched

    watched = [Watched("F-in", "flow", 15 * 60_000, "Modbus RTU on /dev/ttyUSB0, address 1")]
    watch = SilentSensors("net3", "gw-01", watched, tmp_path / FILE_NAME)
    watch.begin(resume=False)
    hour = 3_600_000
    assert watch.update(Reading(T0, "net3", "gw-01", "F-in", "flow", 40.0, "L/s"), T0, steady_ms=1_000) == []
    assert watch.tick(T0 + 3 * hour, steady_ms=61_000) == []  # NTP moved the wall clock 3 h; 1 min passed
    (raised,) = watch.tick(T0 + 3 * hour + 16 * 60_000, steady_ms=17 * 60_000)
    watch.save(T0 + 3 * hour + 16 * 60_000)

    # Restarted before NTP sets the clock (it is a day behind the saved state): the open alert is kept.
    again = SilentSensors("net3", "gw-01", watched, tmp_path / FILE_NAME)
    again.begin(resume=True, follows_data=False)
    assert again.tick(T0 - 24 * hour, steady_ms=5) == [] and again.counters()["sensors_silent"] == 1
    assert again.tick(T0 - 23 * hour, steady_ms=hour) == []  # still silent: still the one alert
    (cleared,) = again.update(Reading(T0 - 23 * hour, "net3", "gw-01", "F-in", "flow", 41.0, "L/s"), T0 - 23 * hour)
    assert cleared.alert_id == raised.alert_id and cleared.state == AlertState.CLEARED

    # A replay's clock behind the saved state is a replay started again: the state is not its past.
    replay = SilentSensors("net3", "gw-01", watched, tmp_path / FILE_NAME)
    replay.begin(resume=True, follows_data=True)
    assert replay.tick(T0 - 24 * hour) == [] and replay.counters()["sensors_silent"] == 0
