"""Home Assistant discovery through the gateway runner, against the real broker: retained, valid, pointing at real topics."""

from __future__ import annotations

import itertools
import json
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt

from edge.datasets import ZoneDataset
from gateway.config import load_config_text
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


def _retained(services, topic: str, expected: int) -> dict:
    """Subscribe after the fact: only retained messages arrive."""
    found: dict = {}
    client = _collect(services, topic, lambda _t: None, found)
    deadline = time.monotonic() + 10
    while len(found) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    _stop(client)
    return found


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
