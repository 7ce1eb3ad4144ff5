"""Independent clients see the documented contract: mosquitto_sub on the wire, the influx CLI in the database."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from edge.contracts import AlertState
from gateway.bridge import influx_points
from gateway.bridge.influx_writer import InfluxV1Writer
from gateway.bridge.service import Bridge
from gateway.device.publisher import GatewayPublisher
from gateway.protocol import payloads
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from tests.test_bridge import readings
from tests.test_contracts import alert, detection

DOC = Path(__file__).resolve().parents[1] / "docs" / "contracts.md"
PREFIX = "clientcheck"


def documented_topic_patterns() -> list[re.Pattern]:
    """The topic column of the MQTT table in docs/contracts.md, as regular expressions."""
    table = DOC.read_text().split("## MQTT topic tree")[1].split("## Payloads")[0]
    topics = re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)
    patterns = []
    for topic in topics:
        rx = re.escape(topic).replace("<prefix>", PREFIX)  # re.escape leaves < and > alone
        rx = re.sub(r"<[a-z]+>", r"[A-Za-z0-9][A-Za-z0-9_.-]*", rx)
        patterns.append(re.compile(f"^{rx}$"))
    return patterns


def test_mosquitto_sub_and_influx_cli_see_the_contract(services):
    patterns = documented_topic_patterns()
    assert len(patterns) >= 5  # more channels may be documented than this test publishes
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            services.mqtt_host,
            "-p",
            str(services.mqtt_port),
            "-v",
            "-q",
            "1",
            "-t",
            f"{PREFIX}/#",
            "-C",
            "6",
            "-W",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # let mosquitto_sub subscribe before anything is published
    writer = InfluxV1Writer(services.influx_url, "client_check")
    bridge = Bridge(
        MqttSettings(services.mqtt_host, services.mqtt_port, client_id="client-check-bridge"), writer, prefix=PREFIX
    ).start()
    try:
        pub = GatewayPublisher(
            T.Topics(PREFIX, "net3", "gw-01"),
            MqttSettings(services.mqtt_host, services.mqtt_port, client_id="client-check-gw"),
            readings_batch=5,
        ).connect()  # 1: status online
        for r in readings(5):
            pub.add_reading(r)  # 2: one batch of five
        pub.publish_detection(detection())  # 3
        pub.publish_alert(alert())  # 4
        pub.publish_alert(alert(state=AlertState.CLEARED))  # 5
        assert pub.close()  # 6: status offline
        out, err = sub.communicate(timeout=30)
        assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    finally:
        bridge.stop()
        if sub.poll() is None:
            sub.kill()
    lines = out.strip().splitlines()
    assert len(lines) == 6, err
    seen_channels = []
    for line in lines:
        topic, payload = line.split(" ", 1)
        assert any(p.match(topic) for p in patterns), f"{topic} is not in docs/contracts.md"
        payloads.decode(PREFIX, topic, payload.encode())  # the documented encoding, strictly
        seen_channels.append(T.parse_topic(PREFIX, topic).channel)
    assert seen_channels == ["status", "readings", "detections", "alerts", "alerts", "status"]

    host, port = services.influx_url.rsplit("/", 1)[1].split(":")
    shown = subprocess.run(
        [
            "influx",
            "-host",
            host,
            "-port",
            port,
            "-database",
            "client_check",
            "-format",
            "csv",
            "-execute",
            "SHOW MEASUREMENTS",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    names = [row.split(",")[1] for row in shown.stdout.strip().splitlines()[1:]]
    # alert_state comes from operators' alert commands, not from a gateway (tests/test_alert_lifecycle.py)
    assert sorted(names) == sorted(set(influx_points.MEASUREMENTS) - {influx_points.ALERT_STATE})
