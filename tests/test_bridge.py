"""Publisher -> real Mosquitto -> bridge -> real InfluxDB 1.x."""

from __future__ import annotations

import itertools
import json

import pytest

from edge.contracts import AlertState, Quality, Reading
from gateway.bridge.influx_writer import InfluxV1Writer
from gateway.bridge.service import Bridge
from gateway.device.publisher import GatewayPublisher
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from tests.mqtt_clients import Collector, Publisher
from tests.test_contracts import T0, alert, detection

_n = itertools.count()


@pytest.fixture
def lane(services):
    """A private prefix, database and bridge per test, so tests never see each other's data."""
    i = next(_n)
    prefix, db = f"fstest{i}", f"bridge_test_{i}"
    writer = InfluxV1Writer(services.influx_url, db)
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"bridge-test-{i}")
    bridge = Bridge(settings, writer, prefix=prefix).start()
    yield prefix, db, writer, bridge, settings
    bridge.stop()


def publisher(services, prefix, gateway="gw-01", batch=50) -> GatewayPublisher:
    settings = MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"{prefix}-{gateway}")
    return GatewayPublisher(T.Topics(prefix, "net3", gateway), settings, readings_batch=batch).connect()


def readings(n: int, sensor="F-lake") -> list[Reading]:
    return [Reading(T0 + i * 60_000, "net3", "gw-01", sensor, "flow", 100.0 + i / 8, "L/s") for i in range(n)]


def series_values(writer: InfluxV1Writer, sensor: str) -> list[list]:
    series = writer.query(f"SELECT value, quality FROM reading WHERE sensor = '{sensor}'")
    return series[0]["values"] if series else []


def test_every_reading_lands_once_with_its_value(services, lane):
    prefix, db, writer, bridge, _ = lane
    sent = readings(1234) + readings(77, sensor="P-15")
    pub = publisher(services, prefix, batch=50)
    for r in sent:
        pub.add_reading(r)
    assert pub.close(timeout_s=30)
    assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    rows = series_values(writer, "F-lake")
    assert [(t, v) for t, v, _ in rows] == [(r.time_ms, r.value) for r in sent[:1234]]
    assert len(series_values(writer, "P-15")) == 77
    assert bridge.counters["points_written"] >= 1311


def test_same_message_twice_gives_no_duplicates(services, lane):
    prefix, db, writer, bridge, _ = lane
    pub = publisher(services, prefix, batch=10)
    for _ in range(2):
        for r in readings(30):
            pub.add_reading(r)
        pub.flush()
    assert pub.close()
    assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    assert len(series_values(writer, "F-lake")) == 30
    assert bridge.counters["messages_written"] >= 6


def test_unknown_quality_lands_without_value(services, lane):
    prefix, db, writer, bridge, _ = lane
    pub = publisher(services, prefix)
    pub.add_reading(Reading(T0, "net3", "gw-01", "F-lake", "flow", None, "L/s", Quality.UNKNOWN))
    assert pub.close()
    assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    assert series_values(writer, "F-lake") == [[T0, None, "unknown"]]


def test_detections_alerts_and_status_land(services, lane):
    prefix, db, writer, bridge, _ = lane
    pub = publisher(services, prefix)
    pub.publish_detection(detection())
    pub.publish_alert(alert())
    pub.publish_alert(alert(state=AlertState.CLEARED, time_ms=T0 + 90_000_000))
    assert pub.close()
    assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    (det,) = writer.query("SELECT label, score, x_excess_lps, x_sensors FROM detection")
    assert det["values"] == [[T0 + 3_600_000, "leak", 0.31, 14.5, "F-lake,F-river"]]
    states = writer.query("SELECT count(message) FROM alert GROUP BY state")
    assert {s["tags"]["state"]: s["values"][0][1] for s in states} == {"raised": 1, "cleared": 1}
    (status,) = writer.query("SELECT state FROM gateway_status")
    assert [v[1] for v in status["values"]] == ["online", "offline"]


def test_malformed_payloads_are_dead_lettered_and_good_data_flows(services, lane):
    prefix, db, writer, bridge, settings = lane
    bad = [b"\xff\xfe\x00", b"{nope", b'{"v":7}', b'{"v":1,"quantity":"flow","unit":"L/s","readings":[[1,1]]}']
    with Collector(
        services.mqtt_port, T.deadletter_topic(prefix), host=services.mqtt_host, client_id=f"{prefix}-spy"
    ) as spy:
        with Publisher(services.mqtt_port, host=services.mqtt_host, client_id=f"{prefix}-raw") as raw:
            pub = publisher(services, prefix)
            topic = T.Topics(prefix, "net3", "gw-01").readings("F-lake")
            good = readings(40)
            for i, r in enumerate(good):
                pub.add_reading(r)
                if i % 10 == 0:
                    pub.flush()
                    raw.publish(topic, bad[i // 10], wait_s=5)
            assert pub.close()
        assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
        assert spy.wait(len(bad))
    dead = [json.loads(payload) for _, payload in spy.payloads()]
    assert [d["reason"] for d in dead] == ["not_utf8", "not_json", "schema_version", "invalid"]
    assert dead[0]["encoding"] == "base64" and dead[1]["payload"] == "{nope"
    assert sum(bridge.deadletters.values()) == 4
    assert len(series_values(writer, "F-lake")) == 40


def test_messages_wait_for_a_stopped_bridge(services, lane):
    """Persistent session: what is published while the bridge is away arrives when it returns."""
    prefix, db, writer, bridge, settings = lane
    pub = publisher(services, prefix)
    for r in readings(10):
        pub.add_reading(r)
    pub.flush()
    assert pub.wait_acked(10) and bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    bridge.stop()
    for r in readings(50)[10:]:
        pub.add_reading(r)
    assert pub.close()
    back = Bridge(settings, writer, prefix=prefix).start()
    try:
        assert back.wait_idle(quiet_s=1.0, timeout_s=30)
        assert len(series_values(writer, "F-lake")) == 50
    finally:
        back.stop()


def test_bridge_keeps_messages_while_influxdb_is_down(services, lane):
    prefix, db, writer, bridge, _ = lane
    services.stop_service("influxdb")
    try:
        pub = publisher(services, prefix)
        for r in readings(25):
            pub.add_reading(r)
        assert pub.close()
        assert not bridge.wait_idle(quiet_s=0.2, timeout_s=2)  # holding them, not dropping them
        assert bridge.counters["write_failures"] >= 1
    finally:
        services.start_service("influxdb")
    assert bridge.wait_idle(quiet_s=0.5, timeout_s=60)
    assert len(series_values(writer, "F-lake")) == 25


def test_a_pause_in_arrivals_writes_and_acknowledges_without_waiting_for_the_flush_interval(services):
    """linger_s: a lone message is written once nothing follows it, not after flush_interval_s."""
    import time

    i = next(_n)
    prefix, db = f"fstest{i}", f"bridge_test_{i}"
    writer = InfluxV1Writer(services.influx_url, db)
    writer.ensure_database()
    bridge = Bridge(
        MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"bridge-test-{i}"),
        writer,
        prefix=prefix,
        flush_interval_s=30.0,
        linger_s=0.05,
    ).start()
    try:
        pub = publisher(services, prefix)
        pub.add_reading(readings(1)[0])
        assert pub.close()
        started = time.monotonic()
        while not series_values(writer, "F-lake") and time.monotonic() - started < 10:
            time.sleep(0.02)
        assert series_values(writer, "F-lake"), "the lone message waited for the 30 s flush interval"
        assert bridge.wait_idle(quiet_s=0.2, timeout_s=5)  # written and acknowledged
    finally:
        bridge.stop()


def test_the_writer_reconnects_when_influxdb_closed_its_kept_alive_connection(services):
    i = next(_n)
    writer = InfluxV1Writer(services.influx_url, f"bridge_test_{i}")
    writer.ensure_database()
    writer.write(["reading,sensor=a value=1 1772409600000"])
    writer._conn.sock.close()  # as if the server had dropped the idle connection
    writer.write(["reading,sensor=a value=2 1772409660000"])
    assert [v for _, v in writer.query("SELECT value FROM reading")[0]["values"]] == [1.0, 2.0]
    writer.close()
