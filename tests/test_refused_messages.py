"""A PUBACK with an error reason code (Mosquitto's ACL refusing a topic) deletes nothing: held, retried, delivered.

A real Mosquitto with an ``acl_file`` that lets the gateway write its readings and status
but not its alerts and detections; then the ACL is fixed and the broker restarted (or
the gateway restarted on the same outbox file), and the held messages arrive, once.
"""

from __future__ import annotations

import json
import time

import pytest

from gateway.device.outbox import Outbox
from gateway.device.publisher import GatewayPublisher
from gateway.local_services.services import LocalServices
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from tests.mqtt_clients import Collector
from tests.test_contracts import alert, detection
from tests.test_outbox import readings

PREFIX = "obx5"
REFUSING = (
    f"topic read {PREFIX}/#\ntopic write {PREFIX}/net3/gw-01/readings/#\ntopic write {PREFIX}/net3/gw-01/status\n"
)
ALLOWING = f"topic readwrite {PREFIX}/#\n"


@pytest.fixture
def acl_broker(tmp_path_factory, tmp_path):
    """Mosquitto with persistence (the spy's session survives a restart) and the refusing ACL in ``.acl``."""
    acl = tmp_path / "acl"
    acl.write_text(REFUSING)
    with LocalServices(
        tmp_path_factory.mktemp("acl-broker"),
        influxdb=False,
        mosquitto_persistence=True,
        mosquitto_extra_config=[f"acl_file {acl}"],
    ) as broker:
        broker.acl = acl
        yield broker


def wait_until(condition, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def publisher(broker, outbox: Outbox) -> GatewayPublisher:
    topics = T.Topics(PREFIX, "net3", "gw-01")
    settings = MqttSettings("127.0.0.1", broker.mqtt_port, client_id="obx5-gw")
    return GatewayPublisher(topics, settings, readings_batch=10, outbox=outbox, reconnect_max_s=1)


def by_topic(spy: Collector, suffix: str) -> list[dict]:
    return [json.loads(m.payload) for m in spy.messages if m.topic.endswith(suffix)]


def test_a_refused_alert_is_held_retried_shown_in_status_and_delivered_once_the_acl_allows_it(acl_broker, tmp_path):
    spy = Collector(acl_broker.mqtt_port, f"{PREFIX}/#", client_id="obx5-spy", session_expiry_s=3600).start()
    outbox = Outbox(tmp_path / "outbox.sqlite3", retry_first_s=0.2, retry_max_s=1.0)
    pub = publisher(acl_broker, outbox).connect()
    try:
        pub.publish_alert(alert())
        pub.publish_detection(detection())
        for r in readings(30, "F-lake"):
            pub.add_reading(r)
        pub.flush()
        # The readings go; the alert and the detection are refused, held, and refused again on each retry.
        assert wait_until(
            lambda: pub.counters_snapshot()["messages_acked"] == 3 and pub.counters_snapshot()["outbox_refused"] >= 6
        ), pub.counters_snapshot()
        counters = pub.counters_snapshot()
        assert counters["outbox_backlog"] == 2 and counters["outbox_held"] == 2
        assert counters["outbox_held_oldest_s"] > 0

        pub.publish_status()  # the status says so
        periodic = lambda: [b["counters"] for b in by_topic(spy, "/status") if "outbox_held" in b.get("counters", {})]  # noqa: E731
        assert wait_until(periodic)
        status = periodic()[-1]
        assert status["outbox_held"] == 2 and status["outbox_held_oldest_s"] > 0 and status["outbox_refused"] >= 6

        acl_broker.acl.write_text(ALLOWING)  # the ACL fixed, the broker restarted with it
        acl_broker.restart_service("mosquitto")
        assert pub.wait_acked(30)
        assert wait_until(lambda: by_topic(spy, "/alerts") and by_topic(spy, "/detections/leak"))
        time.sleep(0.5)  # anything sent twice would be here by now
        assert pub.counters_snapshot()["outbox_held"] == 0
    finally:
        pub.close(5)
        spy.close()
    assert [a["alert_id"] for a in by_topic(spy, "/alerts")] == [alert().alert_id]
    assert len(by_topic(spy, "/detections/leak")) == 1
    landed = [row[0] for body in by_topic(spy, "/readings/F-lake") for row in body["readings"]]
    assert landed == [r.time_ms for r in readings(30, "F-lake")]  # none lost, none twice


def test_held_messages_survive_a_gateway_restart_and_go_once_the_broker_allows_them(acl_broker, tmp_path):
    path = tmp_path / "outbox.sqlite3"
    pub = publisher(acl_broker, Outbox(path, retry_first_s=0.2)).connect()
    pub.publish_alert(alert())
    assert wait_until(lambda: pub.counters_snapshot()["outbox_held"] == 1)
    assert not pub.close(1)  # the gateway stops with the alert still held: it stays on disk

    acl_broker.acl.write_text(ALLOWING)
    acl_broker.restart_service("mosquitto")
    with Collector(acl_broker.mqtt_port, f"{PREFIX}/net3/gw-01/alerts", client_id="obx5-spy2") as spy:
        again = publisher(acl_broker, Outbox(path)).connect()
        assert again.outbox.replayed == 1
        assert again.close(15)
        assert spy.wait(1)
        time.sleep(0.3)
        assert [json.loads(m.payload)["alert_id"] for m in spy.messages] == [alert().alert_id]


def test_held_readings_make_room_first_and_held_alerts_are_never_dropped():
    box = Outbox(None, max_bytes=1_000, retry_first_s=60)
    box.put(f"{PREFIX}/net3/gw-01/alerts", b"a" * 100, "alert")
    for _ in range(2):
        box.put(f"{PREFIX}/net3/gw-01/readings/F-1", b"r" * 300, "reading", items=50)
    box.hold([m.id for m in box.take(10)])  # the broker refused all three
    assert box.take(10) == []  # held: not sent again before their wait is over
    box.put(f"{PREFIX}/net3/gw-01/readings/F-1", b"n" * 300, "reading", items=50)  # the bound is reached
    stats = box.stats()
    assert stats["outbox_held"] == 2 and stats["outbox_dropped_readings"] == 50  # the oldest held reading went
    box.retry_held_now()
    assert [(m.kind, m.payload[:1]) for m in box.take(10)] == [("alert", b"a"), ("reading", b"r"), ("reading", b"n")]
