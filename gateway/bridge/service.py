"""The MQTT -> InfluxDB bridge: decode, validate, write, and only then acknowledge.

A message is acknowledged to the broker (paho ``manual_ack``) only after its points
are in InfluxDB, and the session is persistent (fixed client id, MQTT v5 session
expiry), so a bridge or database outage leaves the messages with the broker instead
of losing them. A payload that cannot be used is counted, logged and republished on
``<prefix>/deadletter`` with the reason, then acknowledged: one bad message never
blocks the good ones behind it.

Several bridges can share the load: give each its own fixed client id and the same
``share_group``; they then subscribe to ``$share/<group>/<prefix>/+/+/readings/+`` (and the
other channels) and the
broker hands each message to one of them (docs/scaling.md).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.bridge import influx_points
from gateway.bridge.writer_base import InfluxWriter, WriteError
from gateway.protocol import payloads
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings, make_client, wait_connected

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our queue a week while the bridge is away
RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may have in flight to us
LOGGED_PER_REASON = 20  # then one line every 1000, so 10,000 bad payloads do not flood the log


def subscriptions(prefix: str, share_group: str | None = None) -> tuple[str, ...]:
    """The bridge's topic filters, shared among the workers of ``share_group`` if given.

    >>> subscriptions("frugalsense")[1], subscriptions("frugalsense", "bridges")[1]
    ('frugalsense/+/+/readings/+', '$share/bridges/frugalsense/+/+/readings/+')
    >>> subscriptions("frugalsense", "a/b")
    Traceback (most recent call last):
    ...
    ValueError: share group 'a/b' must be letters, digits, '.', '_' or '-' (it becomes one topic level)
    """
    topics = T.bridge_subscriptions(prefix)
    if share_group is None:
        return topics
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", share_group):
        raise ValueError(
            f"share group {share_group!r} must be letters, digits, '.', '_' or '-' (it becomes one topic level)"
        )
    return tuple(f"$share/{share_group}/{topic}" for topic in topics)


class SubscriptionRefused(ConnectionError):
    """The broker did not accept the bridge's subscription (an ACL, or no answer)."""


@dataclass
class _Pending:
    mid: int
    qos: int
    lines: list[str]
    topic: str
    payload: bytes
    arrived: float  # time.monotonic() when it came in


class Bridge:
    """Subscribe to every gateway under ``prefix`` and write what arrives to InfluxDB."""

    def __init__(
        self,
        settings: MqttSettings,
        writer: InfluxWriter,
        *,
        prefix: str = T.DEFAULT_PREFIX,
        share_group: str | None = None,
        batch_points: int = 5000,
        flush_interval_s: float = 0.2,
        linger_s: float = 0.02,
        max_backoff_s: float = 30.0,
    ):
        if not settings.client_id:
            raise ValueError("the bridge needs a fixed MQTT client id for its persistent session")
        self.settings = settings
        self.writer = writer
        self.prefix = prefix
        self.share_group = share_group
        self.subscriptions = subscriptions(prefix, share_group)
        self.batch_points = batch_points
        self.flush_interval_s = flush_interval_s
        self.linger_s = min(linger_s, flush_interval_s)
        self.max_backoff_s = max_backoff_s
        self.counters: Counter[str] = Counter()
        self.deadletters: Counter[str] = Counter()
        # Decoded messages waiting for the writer. The writer is woken only when a batch is
        # full or the first message arrives, not once per message (that wake-up cost more
        # than decoding the message).
        self._pending: deque[_Pending] = deque()
        self._pending_points = 0
        self._arrived = threading.Condition()
        # Written messages whose PUBACK is still to send, in arrival order. The network thread
        # sends them as it handles the next message; the writer sends them itself only when
        # no message is coming (a PUBACK from the writer thread costs a GIL hand-over each).
        self._acks: deque[tuple[int, int]] = deque()
        self._ack_lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._subscribe_refused: str | None = None
        self._last_activity = time.monotonic()
        self._in_writer = 0
        self._writer_thread = threading.Thread(target=self._write_loop, name="bridge-writer", daemon=True)
        self.client = make_client(settings, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = lambda *a: self._connected.clear()

    # --- lifecycle ----------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> Bridge:
        self._writer_thread.start()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        wait_connected(self.client, self.settings, self._connected, timeout_s)
        # Messages published before the broker has our subscription are not queued for us.
        if not self._subscribed.wait(timeout_s) or self._subscribe_refused:
            self.client.disconnect()
            self.client.loop_stop()
            self._stop.set()
            why = self._subscribe_refused or f"no answer within {timeout_s:.0f} s"
            raise SubscriptionRefused(
                f"MQTT broker {self.settings.host}:{self.settings.port} did not accept the "
                f"bridge's subscriptions {list(self.subscriptions)}: {why} "
                "(check the broker ACL for this user)"
            )
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, finish the writes in hand, disconnect."""
        self.wait_idle(quiet_s=0.0, timeout_s=timeout_s)
        self._stop.set()
        self._writer_thread.join(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()

    # --- what the metrics endpoint reads (gateway.bridge.metrics) ---------

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._connected.is_set()

    @property
    def backlog(self) -> int:
        """Messages received and not yet acknowledged to the broker (waiting, being written, or acked soon)."""
        return self.counters["messages"] - self.counters["acked_written"] - self.counters["acked_undecodable"]

    def wait_idle(self, quiet_s: float = 1.0, timeout_s: float = 60.0) -> bool:
        """True once nothing arrived for ``quiet_s`` and every message taken is written and acknowledged."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            busy = bool(self._pending) or self._in_writer or bool(self._acks)
            if not busy and time.monotonic() - self._last_activity >= quiet_s:
                return True
            time.sleep(0.05)
        return False

    # --- MQTT side (paho's network thread) ---------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the bridge: %s", reason_code)
            return
        self._connected.set()
        # Re-subscribing on every connect is harmless and covers a broker that lost the session.
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        log.info(
            "bridge connected to %s:%s (session present: %s)",
            self.settings.host,
            self.settings.port,
            flags.session_present,
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        refused = [rc for rc in reason_codes if rc.is_failure]
        if refused:
            # Usually the broker's ACL: the bridge's user may not read the gateways' topics.
            self.counters["subscribe_refused"] += 1
            self._subscribe_refused = str(refused[0])
            log.error(
                "broker refused the bridge's subscriptions %s: %s (check the broker ACL for this user)",
                list(self.subscriptions),
                refused[0],
            )
        self._subscribed.set()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage):
        if self._acks:
            self._send_acks()
        self._last_activity = arrived = time.monotonic()
        self.counters["messages"] += 1
        received_ms = int(time.time() * 1000)
        try:
            decoded = payloads.decode_batch(self.prefix, message.topic, message.payload, now_ms=received_ms)
            lines = influx_points.to_line_protocol(decoded, received_ms)
        except payloads.PayloadError as exc:
            self._deadletter(message.topic, message.payload, exc.reason, str(exc))
            client.ack(message.mid, message.qos)
            self.counters["acked_undecodable"] += 1  # its own key: only this thread counts it
            return
        with self._arrived:
            wake = not self._pending
            self._pending.append(_Pending(message.mid, message.qos, lines, message.topic, message.payload, arrived))
            self._pending_points += len(lines)
            if wake or self._pending_points >= self.batch_points:
                self._arrived.notify()

    def _deadletter(self, topic: str, payload: bytes, reason: str, detail: str) -> None:
        self.deadletters[reason] += 1
        n = self.deadletters[reason]
        if n <= LOGGED_PER_REASON or n % 1000 == 0:
            log.warning("dead-lettered message %d with reason %s on %r: %s", n, reason, topic, detail)
        try:
            text, encoding = payload[:4096].decode(), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(payload[:4096]).decode(), "base64"
        body = json.dumps(
            {
                "v": 1,
                "reason": reason,
                "detail": detail[:500],
                "topic": topic,
                "payload": text,
                "encoding": encoding,
                "bytes": len(payload),
            },
            separators=(",", ":"),
        )
        self.client.publish(T.deadletter_topic(self.prefix), body, qos=1)

    # --- InfluxDB side (writer thread) -------------------------------------

    def _write_loop(self) -> None:
        backoff = 0.5
        batch: list[_Pending] = []
        while not (self._stop.is_set() and not batch and not self._pending):
            if not batch:
                batch = self._take_batch()
                if not batch:
                    continue
            try:
                self._write_batch(batch)
            except WriteError as exc:
                self.counters["write_failures"] += 1
                log.warning(
                    "InfluxDB write failed, retrying in %.1f s (messages stay unacknowledged): %s", backoff, exc
                )
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.5
            self._acks.extend((item.mid, item.qos) for item in batch)
            self._in_writer = 0
            batch = []
        self._send_acks()

    def _send_acks(self) -> None:
        """Acknowledge the written messages, in the order they arrived (either thread may call this)."""
        with self._ack_lock:
            while self._acks:
                mid, qos = self._acks.popleft()
                self.client.ack(mid, qos)
                self.counters["acked_written"] += 1

    def _take_batch(self) -> list[_Pending]:
        """The next write: up to ``batch_points`` points, ended early by a pause in arrivals.

        A batch is written when it holds ``batch_points`` points, when nothing more arrived
        for ``linger_s`` (a drained backlog, a quiet fleet: no reason to wait), or at the
        latest ``flush_interval_s`` after its first message (a steady stream). While one
        write is in flight the next batch fills, so a busy bridge writes big batches and a
        quiet one writes soon.
        """
        with self._arrived:
            if not self._pending:
                self._arrived.wait(self.linger_s if self._acks else 0.1)
            batch = self._collect() if self._pending else []
        if not batch and self._acks:
            self._send_acks()  # a pause in arrivals: acknowledge what is written
        return batch

    def _collect(self) -> list[_Pending]:
        """Called with ``_arrived`` held and something pending: wait for the batch to fill, then take it."""
        self._in_writer = 1
        started = self._pending[0].arrived
        while self._pending_points < self.batch_points:
            now = time.monotonic()
            wait = min(self.flush_interval_s - (now - started), self.linger_s - (now - self._last_activity))
            if wait <= 0:
                break
            self._arrived.wait(wait)
        batch, points = [], 0
        while self._pending and (not batch or points + len(self._pending[0].lines) <= self.batch_points):
            item = self._pending.popleft()
            batch.append(item)
            points += len(item.lines)
        self._pending_points -= points
        return batch

    def _write_batch(self, batch: list[_Pending]) -> None:
        try:
            self.writer.write([line for item in batch for line in item.lines])
        except WriteError as exc:
            if exc.status == 404:  # database missing (first start, or dropped): create it, then retry
                try:
                    self.writer.ensure_database()
                except WriteError:
                    pass
            if exc.retryable:
                raise
            # The database refused the data itself: find the culprits one message at a time.
            self._write_one_by_one(batch)
            return
        self.counters["points_written"] += sum(len(item.lines) for item in batch)
        self.counters["messages_written"] += len(batch)

    def _write_one_by_one(self, batch: list[_Pending]) -> None:
        for item in batch:
            try:
                self.writer.write(item.lines)
            except WriteError as exc:
                if exc.retryable:
                    raise
                self._deadletter(item.topic, item.payload, "rejected_by_database", str(exc))
                continue
            self.counters["points_written"] += len(item.lines)
            self.counters["messages_written"] += 1
