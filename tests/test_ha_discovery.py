"""Home Assistant discovery through the gateway runner, against the real broker: retained, valid, on real topics."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from edge.datasets import ZoneDataset
from gateway.config import load_config_text
from gateway.device.ha_discovery import discovery_messages
from gateway.device.runner import GatewayRunner

_n = itertools.count()
# What Home Assistant needs in every entity config (and we always send).
REQUIRED = {"name", "unique_id", "state_topic", "device", "origin"}

CONFIG = """\
site: dma-7
gateway: gw-ha-{i}
sensors:
  - {{id: F-inlet, quantity: flow, driver: replay, column: "10"}}
  - {{id: P-inlet, quantity: pressure, driver: replay, column: "10"}}
sources: {{replay: {{file: {dataset}}}}}
models: [{{name: mnf-leak, type: mnf, zone_inflow: [{{sensor: F-inlet}}]}}]
mqtt: {{host: {host}, port: {port}, topic_prefix: fs-ha-{i}}}
storage: {{data_dir: {data}}}
homeassistant: {{enabled: {enabled}, prefix: ha-{i}}}
"""


def run_gateway(services, tmp_path, enabled: bool):
    i = next(_n)
    dataset = ZoneDataset(
        time_ms=[1_772_409_600_000, 1_772_410_500_000],
        values=[[41.0, 52.0], [40.5, np.nan]],
        columns=["10", "10"],
        quantities=["flow", "pressure"],
        units=["L/s", "m"],
        leak_flow_lps=[0, 0],
    ).save(tmp_path / "zone.npz")
    config = load_config_text(
        CONFIG.format(
            i=i,
            dataset=dataset,
            host=services.mqtt_host,
            port=services.mqtt_port,
            data=tmp_path / "data",
            enabled=str(enabled).lower(),
        )
    )
    published: set[str] = set()
    watcher = _collect(services, f"fs-ha-{i}/#", published.add)
    try:
        summary = GatewayRunner.from_config(config).run(drain_timeout_s=20)
        assert summary.all_acknowledged
        # The broker acknowledged the gateway's messages; its copies to our watcher may still be on the way.
        expected = {f"fs-ha-{i}/dma-7/gw-ha-{i}/{t}" for t in ("status", "readings/F-inlet", "readings/P-inlet")}
        deadline = time.monotonic() + 10
        while not expected <= published and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        _stop(watcher)
    return i, config, published


def _collect(services, topic: str, on_topic, retained: dict | None = None):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()

    def on_message(_c, _u, message):
        on_topic(message.topic)
        if retained is not None:
            retained[message.topic] = (message.retain, message.payload)

    client.on_message = on_message
    client.connect(services.mqtt_host, services.mqtt_port)
    client.loop_start()
    assert subscribed.wait(10)
    return client


def _stop(client) -> None:
    client.disconnect()
    client.loop_stop()


def _retained(services, topic: str, expected: int, node: str | None = None) -> dict:
    """Subscribe after the fact: only retained messages arrive (``node``: only that gateway's)."""
    found: dict = {}
    client = _collect(services, topic, lambda _t: None, found)
    deadline = time.monotonic() + 10
    while len(found) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        if node is not None and found and time.monotonic() > deadline - 8:
            break  # the broker sends a subscription's retained messages together: 2 s is plenty
    _stop(client)
    return {t: v for t, v in found.items() if node is None or t.split("/")[2] == node}


def test_discovery_is_retained_valid_and_points_at_the_gateways_topics(services, tmp_path):
    i, config, published = run_gateway(services, tmp_path, enabled=True)
    found = _retained(services, f"ha-{i}/#", expected=6)
    node = f"gw-ha-{i}"
    assert set(found) == {
        f"ha-{i}/binary_sensor/{node}/gateway/config",
        f"ha-{i}/sensor/{node}/outbox_backlog/config",
        f"ha-{i}/sensor/{node}/F-inlet/config",
        f"ha-{i}/sensor/{node}/P-inlet/config",
        f"ha-{i}/binary_sensor/{node}/leak/config",
        f"ha-{i}/sensor/{node}/leak_excess_flow/config",
    }
    bodies = {}
    for topic, (retain, payload) in found.items():
        assert retain, f"{topic} is not retained"
        body = json.loads(payload)
        assert REQUIRED <= set(body), f"{topic} lacks {REQUIRED - set(body)}"
        bodies[topic.split("/")[-2]] = body
    assert len({b["unique_id"] for b in bodies.values()}) == 6
    status = f"fs-ha-{i}/dma-7/{node}/status"
    # Readings and status topics are the ones the gateway really published on.
    for name in ("F-inlet", "P-inlet"):
        assert bodies[name]["state_topic"] in published
        assert bodies[name]["availability"] == [
            {
                "topic": status,
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]
    assert bodies["F-inlet"]["unit_of_measurement"] == "L/s" and bodies["P-inlet"]["unit_of_measurement"] == "m"
    assert bodies["gateway"]["state_topic"] == status and status in published
    assert "availability" not in bodies["gateway"]  # it must show 'off' when the gateway is offline
    assert bodies["gateway"]["device_class"] == "connectivity"
    assert bodies["leak"]["state_topic"] == f"fs-ha-{i}/dma-7/{node}/detections/leak"
    assert bodies["leak"]["device_class"] == "moisture"
    assert {b["device"]["identifiers"][0] for b in bodies.values()} == {f"frugalsense_dma-7_{node}"}


def test_nothing_is_announced_when_disabled(services, tmp_path):
    i, _config, published = run_gateway(services, tmp_path, enabled=False)
    assert any(t.endswith("/status") for t in published)  # the gateway did connect and publish
    # A retained marker of our own: the broker sends a subscription's retained messages together,
    # so once the marker is here, any discovery message would be too.
    marker = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    marker.connect(services.mqtt_host, services.mqtt_port)
    marker.loop_start()
    marker.publish(f"ha-{i}/marker", b"x", qos=1, retain=True).wait_for_publish(10)
    _stop(marker)
    assert set(_retained(services, f"ha-{i}/#", expected=1)) == {f"ha-{i}/marker"}


# ---- every detection kind announces itself (one registration per model type) -----------------------------

REPO = Path(__file__).resolve().parents[1]
T0 = 1_772_409_600_000
LEAK_ONLY = """\
site: dma-8
gateway: {gateway}
sensors:
{sensors}
sources: {{replay: {{file: {dataset}}}}}
models: [{{name: leak-ml, type: learned_leak, model_dir: {models}/leak-mlp-net3, backend: numpy}}]
mqtt: {{host: {host}, port: {port}, topic_prefix: fs-{gateway}}}
storage: {{data_dir: {data}}}
homeassistant: {{enabled: true}}
"""
AIR_KINDS = """\
site: city-9
gateway: {gateway}
sensors:
{sensors}
sources: {{replay: {{file: {dataset}}}}}
models:
  - {{name: eaqi, type: eaqi, sensors: [PM25, NO2]}}
  - name: pattern
    type: air_pattern
    model_dir: {models}/air-pattern
    backend: numpy
    sensors: {{pm25: PM25, pm10: PM10, no2: NO2, temperature: T, humidity: RH, cell_count: CC}}
  - {{name: fault, type: sensor_fault, model_dir: {models}/air-fault, backend: numpy, sensors: {{pm25: PM25}}}}
  - name: no2v
    type: no2_virtual
    model_dir: {models}/air-no2-virtual
    backend: numpy
    sensors: {{cell_count: CC, wind_speed: WS, temperature: T, humidity: RH}}
  - {{name: drift, type: calibration_drift, sensor: NO2, estimate_from: no2v}}
mqtt: {{host: {host}, port: {port}, topic_prefix: fs-{gateway}}}
storage: {{data_dir: {data}}}
homeassistant: {{enabled: true}}
"""
UNITS = {"flow": "L/s", "pressure": "m", "temperature": "degC", "humidity": "%", "wind_speed": "m/s"}


def _announce(services, tmp_path, template: str, columns: list[tuple[str, str]]) -> tuple[str, dict]:
    """Run a gateway (replay sensors ``(id, quantity)``) through the real runner; the retained discovery under it."""
    gateway = f"gw-kinds-{next(_n)}"
    dataset = ZoneDataset(
        time_ms=[T0, T0 + 600_000],
        values=[[10.0] * len(columns), [11.0] * len(columns)],
        columns=[sensor for sensor, _ in columns],
        quantities=[q for _, q in columns],
        units=[UNITS.get(q, "count" if q == "cell_count" else "ug/m3") for _, q in columns],
        leak_flow_lps=[0, 0],
    ).save(tmp_path / "site.npz")
    sensors = "\n".join(f'  - {{id: "{sensor}", quantity: {q}, driver: replay}}' for sensor, q in columns)
    config = load_config_text(
        template.format(
            gateway=gateway,
            sensors=sensors,
            dataset=dataset,
            models=REPO / "models",
            host=services.mqtt_host,
            port=services.mqtt_port,
            data=tmp_path / "data",
        )
    )
    assert GatewayRunner.from_config(config).run(drain_timeout_s=20).all_acknowledged
    expected = len(discovery_messages(config))
    found = {}
    for topic, (retain, payload) in _retained(services, "homeassistant/#", expected=10_000, node=gateway).items():
        assert retain, f"{topic} is not retained"
        found[topic] = json.loads(payload)
    assert len(found) == expected
    return gateway, found


def test_a_learned_leak_only_gateway_announces_a_leak_entity(services, tmp_path):
    columns = [(e, "flow") for e in ("10", "60", "40", "50", "20")] + [
        (e, "pressure") for e in ("101", "123", "141", "173", "247")
    ]
    gateway, found = _announce(services, tmp_path, LEAK_ONLY, columns)
    leak = found[f"homeassistant/binary_sensor/{gateway}/leak/config"]
    assert leak["device_class"] == "moisture"
    assert leak["state_topic"] == f"fs-{gateway}/dma-8/{gateway}/detections/leak"
    assert f"homeassistant/sensor/{gateway}/leak_excess_flow/config" in found


def test_every_other_detection_kind_is_announced(services, tmp_path):
    columns = [
        ("PM25", "pm25"),
        ("PM10", "pm10"),
        ("NO2", "no2"),
        ("T", "temperature"),
        ("RH", "humidity"),
        ("WS", "wind_speed"),
        ("CC", "cell_count"),
    ]
    gateway, found = _announce(services, tmp_path, AIR_KINDS, columns)
    by_state = {
        body["state_topic"].rsplit("/", 1)[-1]: body for body in found.values() if "/detections/" in body["state_topic"]
    }
    assert set(by_state) == {kind for kind in ("aqi", "air_pattern", "sensor_fault", "no2_virtual", "calibration")}
    for kind, body in by_state.items():
        assert REQUIRED <= set(body) and body["state_topic"] == f"fs-{gateway}/city-9/{gateway}/detections/{kind}"
    no2 = found[f"homeassistant/sensor/{gateway}/no2_virtual/config"]
    assert no2["device_class"] == "nitrogen_dioxide" and no2["unit_of_measurement"] == "µg/m³"
    assert found[f"homeassistant/binary_sensor/{gateway}/calibration/config"]["device_class"] == "problem"
    assert found[f"homeassistant/sensor/{gateway}/aqi_label/config"]["name"] == "aqi detection"
