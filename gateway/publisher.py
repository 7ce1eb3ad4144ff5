"""Publishes a gateway's readings, detections, alerts and status over MQTT (paho 2.x).

Readings are batched per sensor (at most ``readings_batch`` per message, and never
held longer than ``max_delay_s``) to save bandwidth; detections and alerts go out at
once. Status is retained: ``online`` on connect, ``offline`` as the will and on a
clean stop, so a dashboard knows which gateways are alive.

Everything is published at QoS 1. Messages that the broker has not yet acknowledged
are kept by paho in memory only; the durable outbox (gateway/outbox) is what keeps
them across a reboot.
"""
from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from edge.contracts import Alert, Detection, Reading
from gateway import payloads
from gateway import topics as T

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int = 1883
    client_id: str = ""
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class BrokerUnreachable(ConnectionError):
    """The broker did not accept our connection; the message says where and why."""


def make_client(settings: MqttSettings, *, manual_ack: bool = False) -> mqtt.Client:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.ca_file:
        client.tls_set(
            ca_certs=settings.ca_file,
            certfile=settings.cert_file,
            keyfile=settings.key_file,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    client.reconnect_delay_set(1, 120)
    return client


def wait_connected(client: mqtt.Client, settings: MqttSettings, connected: threading.Event, timeout_s: float) -> None:
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise BrokerUnreachable(
            f"MQTT broker {settings.host}:{settings.port} did not accept a connection within {timeout_s:.0f} s "
            "(is it running? is the port right? check host, port, TLS and credentials in the config's mqtt section)"
        )


class GatewayPublisher:
    """One gateway's MQTT link."""

    def __init__(
        self,
        topics: T.Topics,
        settings: MqttSettings,
        *,
        readings_batch: int = 50,
        max_delay_s: float = 10.0,
        max_inflight: int = 100,
    ):
        self.topics = topics
        self.settings = settings
        self.readings_batch = readings_batch
        self.max_delay_s = max_delay_s
        self._batches: dict[str, list[Reading]] = {}
        self._batch_started: dict[str, float] = {}
        self._pending: set[int] = set()
        self._acked_early: set[int] = set()
        self._lock = threading.Lock()
        self._all_acked = threading.Condition(self._lock)
        self._connected = threading.Event()
        self.counters = {"readings_published": 0, "messages_published": 0, "messages_acked": 0}

        self.client = make_client(settings)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)  # paho queues without bound while offline
        self.client.will_set(topics.status, payloads.encode_status("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    # --- connection ---------------------------------------------------------

    def connect(self, timeout_s: float = 10.0) -> "GatewayPublisher":
        try:
            self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        except (OSError, ValueError) as exc:
            raise BrokerUnreachable(f"cannot reach MQTT broker {self.settings.host}:{self.settings.port}: {exc}") from exc
        self.client.loop_start()
        wait_connected(self.client, self.settings, self._connected, timeout_s)
        return self

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused connection: %s", reason_code)
            return
        log.info("connected to %s:%s", self.settings.host, self.settings.port)
        self._connected.set()
        self._publish(self.topics.status, payloads.encode_status("online", _now_ms(), self.counters_snapshot()), T.STATUS)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()
        if reason_code != 0:
            log.warning("disconnected from broker (%s); paho reconnects with backoff", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
                self.counters["messages_acked"] += 1
            else:
                self._acked_early.add(mid)
            if not self._pending:
                self._all_acked.notify_all()

    # --- publishing ---------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, channel: str) -> None:
        qos, retain = T.QOS[channel]
        # Not under self._lock: paho's network thread holds its own mutex while it
        # calls _on_publish, and publish() needs that mutex (lock-order deadlock).
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise RuntimeError(f"paho refused to queue a message on {topic}: {mqtt.error_string(info.rc)}")
        with self._lock:
            self.counters["messages_published"] += 1
            if info.mid in self._acked_early:  # the PUBACK beat us here
                self._acked_early.discard(info.mid)
                self.counters["messages_acked"] += 1
            else:
                self._pending.add(info.mid)

    def add_reading(self, reading: Reading) -> None:
        batch = self._batches.get(reading.sensor)
        if batch is None:
            batch = self._batches[reading.sensor] = []
            self._batch_started[reading.sensor] = time.monotonic()
        batch.append(reading)
        if len(batch) >= self.readings_batch:
            self._send_batch(reading.sensor)

    def flush_due(self) -> None:
        """Send batches older than ``max_delay_s``; call this from the main loop's tick."""
        now = time.monotonic()
        for sensor, started in list(self._batch_started.items()):
            if now - started >= self.max_delay_s:
                self._send_batch(sensor)

    def flush(self) -> None:
        for sensor in list(self._batches):
            self._send_batch(sensor)

    def _send_batch(self, sensor: str) -> None:
        batch = self._batches.pop(sensor)
        self._batch_started.pop(sensor, None)
        self._publish(self.topics.readings(sensor), payloads.encode_readings(batch), T.READINGS)
        self.counters["readings_published"] += len(batch)

    def publish_detection(self, detection: Detection) -> None:
        self._publish(self.topics.detections(detection.kind), payloads.encode_detection(detection), T.DETECTIONS)

    def publish_alert(self, alert: Alert) -> None:
        self._publish(self.topics.alerts, payloads.encode_alert(alert), T.ALERTS)

    def publish_status(self, counters: dict | None = None) -> None:
        body = payloads.encode_status("online", _now_ms(), counters or self.counters_snapshot())
        self._publish(self.topics.status, body, T.STATUS)

    def counters_snapshot(self) -> dict[str, int]:
        return dict(self.counters)

    # --- shutdown -----------------------------------------------------------

    def wait_acked(self, timeout_s: float) -> bool:
        """True once the broker acknowledged everything published so far."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._all_acked.wait(left)
        return True

    def close(self, timeout_s: float = 30.0) -> bool:
        """Flush, wait for acknowledgements, say ``offline`` and disconnect. True if nothing was left unacked."""
        self.flush()
        done = self.wait_acked(timeout_s)
        if self._connected.is_set():
            self._publish(self.topics.status, payloads.encode_status("offline", _now_ms()), T.STATUS)
            done = self.wait_acked(5.0) and done
        self.client.disconnect()
        self.client.loop_stop()
        if not done:
            log.warning("%d messages were not acknowledged by the broker before shutdown", len(self._pending))
        return done


def _now_ms() -> int:
    return int(time.time() * 1000)
