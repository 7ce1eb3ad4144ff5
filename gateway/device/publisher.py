"""Publishes a gateway's readings, detections, alerts and status over MQTT (paho 2.x), through the outbox.

Readings are batched per sensor (at most ``readings_batch`` per message, and never
held longer than ``max_delay_s``) to save bandwidth; detections and alerts are
stored at once. Batches that fill up in the same time step (a node's line carries
every sensor's reading of one instant) are stored together, in one outbox
transaction: one fsync instead of one per sensor. A full batch waits only until a
reading of another time arrives, or the next ``flush_due`` tick, detection, alert,
status or ``flush`` (whichever comes first), and then goes in the same transaction
as what triggered it, before it, so the order they were made in is kept.
Every message goes into the outbox (gateway/device/outbox.py) first; a
sender thread takes it from there, publishes it at QoS 1 with its stream sequence
number (MQTT v5 user property ``seq``), and deletes it only when the broker's PUBACK
comes back. So the gateway works offline: with the broker down, messages wait in the
outbox (on disk, if the outbox has a file) and leave when it is back. A PUBACK with an
error code (an ACL refusing the topic) deletes nothing: the message is held, counted and
sent again with a doubling wait, at once after a reconnect (gateway/device/outbox_held.py).

Status is retained: ``online`` on connect, ``offline`` as the will and on a clean
stop, so a dashboard knows which gateways are alive. Those two are published
directly (they describe the link now; replaying an old one would lie); the periodic
status with counters goes through the outbox like everything else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.contracts import Alert, Detection, Reading
from gateway.device.outbox import ALERT, DETECTION, NEVER_DROPPED, READING, STATUS, Outbox, OutboxError, Outgoing
from gateway.protocol import payloads
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import BrokerUnreachable, MqttSettings, make_client, wait_connected

log = logging.getLogger(__name__)


SENDER_IDLE_S = 0.5  # the sender wakes at least this often even when nobody calls
DEFAULT_RECONNECT_MAX_S = 30.0  # longest wait between reconnect attempts (paho doubles from 1 s)
SEQ_PROPERTY = "seq"  # MQTT v5 user property carrying the stream sequence number
_CHANNEL = {ALERT: T.ALERTS, DETECTION: T.DETECTIONS, STATUS: T.STATUS, READING: T.READINGS}


class GatewayPublisher:
    """One gateway's MQTT link, fed from its outbox.

    The publisher owns ``outbox`` (an in-memory one if none is given) and closes it
    in ``close()``. Threads: the caller's (add_reading, publish_*, flush, close),
    paho's network thread (callbacks, which only record and wake), and the sender
    thread (the only one that takes from the outbox, publishes and acknowledges).
    """

    def __init__(
        self,
        topics: T.Topics,
        settings: MqttSettings,
        *,
        readings_batch: int = 50,
        max_delay_s: float = 10.0,
        max_inflight: int = 100,
        outbox: Outbox | None = None,
        reconnect_max_s: float = DEFAULT_RECONNECT_MAX_S,
    ):
        self.topics = topics
        self.settings = settings
        self.readings_batch = readings_batch
        self.max_delay_s = max_delay_s
        self.max_inflight = max_inflight
        self.outbox = outbox if outbox is not None else Outbox(None)
        self._batches: dict[str, list[Reading]] = {}
        self._batch_started: dict[str, float] = {}
        # Full batches of the current time step, not stored yet: they go in one transaction.
        self._full: list[Outgoing] = []
        self._full_step_ms: int | None = None
        self._connected = threading.Event()
        self._was_down_logged = False
        # Written by paho's network thread, read by the sender: deque appends are atomic,
        # so a callback never takes a lock of ours (see _on_publish).
        self._acks: deque[tuple[int, bool]] = deque()
        self._in_flight: dict[int, tuple[int, str]] = {}  # paho mid -> (outbox id, topic); the sender thread's alone
        self._release_held = threading.Event()  # set on connect: held messages go again (the ACL may be fixed)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._shrunk = threading.Condition()  # notified when acknowledged messages left the outbox
        self._sender = threading.Thread(target=self._send_loop, name="outbox-sender", daemon=True)
        self._started = False
        self._counters_lock = threading.Lock()
        self.counters = {
            "readings_published": 0,
            "messages_published": 0,
            "messages_sent": 0,
            "messages_acked": 0,
            "messages_refused": 0,
            "readings_dropped_full": 0,
        }

        self.client = make_client(settings)
        self.client.reconnect_delay_set(1, max(1, int(reconnect_max_s)))
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)  # bounded by us: never more than max_inflight handed over
        self.client.will_set(topics.status, payloads.encode_status("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    # --- connection ---------------------------------------------------------

    def start(self) -> GatewayPublisher:
        """Start connecting in the background and return at once; the outbox holds messages meanwhile."""
        try:
            self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        except (OSError, ValueError) as exc:
            raise BrokerUnreachable(
                f"cannot reach MQTT broker {self.settings.host}:{self.settings.port}: {exc}"
            ) from exc
        self.client.loop_start()  # retries the first connection too, with the backoff above
        if not self._started:
            self._started = True
            self._sender.start()
        return self

    def connect(self, timeout_s: float = 10.0) -> GatewayPublisher:
        """Start, and wait until the broker accepted us (BrokerUnreachable otherwise)."""
        self.start()
        try:
            wait_connected(self.client, self.settings, self._connected, timeout_s)
        except BrokerUnreachable:
            self._stop_sender()
            raise
        return self

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker %s:%s refused the gateway: %s", self.settings.host, self.settings.port, reason_code)
            return
        log.info(
            "connected to %s:%s; %d messages wait in the outbox",
            self.settings.host,
            self.settings.port,
            len(self.outbox),
        )
        self._was_down_logged = False
        self._release_held.set()
        self._connected.set()
        self._wake.set()
        # Directly, not through the outbox: "online" is about now.
        client.publish(
            self.topics.status, payloads.encode_status("online", _now_ms(), self._own_counters()), qos=1, retain=True
        )

    def _on_connect_fail(self, client, userdata):
        if not self._was_down_logged:  # once per outage, not at every retry
            self._was_down_logged = True
            log.warning(
                "MQTT broker %s:%s unreachable; messages wait in the outbox and go when it is back",
                self.settings.host,
                self.settings.port,
            )

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()
        if reason_code != 0 and not self._stopping.is_set():
            log.warning(
                "disconnected from broker (%s); reconnecting with backoff, the outbox keeps messages", reason_code
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        # paho calls this holding its own mutexes: record and wake, nothing else. Taking a
        # lock here that a thread holds while calling paho would deadlock (lock order).
        self._acks.append((mid, bool(getattr(reason_code, "is_failure", False))))
        self._wake.set()

    # --- the sender thread ----------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            self._wake.wait(SENDER_IDLE_S)
            self._wake.clear()
            try:
                self._settle_acks()
                if self._stopping.is_set():
                    return
                if self._connected.is_set():
                    self._send_more()
            except OutboxError as exc:  # disk full or I/O error: keep trying, never die silently
                log.error("outbox: %s", exc)
                self._stopping.wait(1.0)
            except Exception:  # a bug here must not stop the sending for good, unnoticed
                log.exception("outbox sender: unexpected error; retrying in 1 s")
                self._stopping.wait(1.0)

    def _settle_acks(self) -> None:
        if self._release_held.is_set():
            self._release_held.clear()
            self.outbox.retry_held_now()
        acked: list[int] = []  # outbox ids
        refused: list[int] = []
        refused_topics: set[str] = set()
        while self._acks:
            mid, failed = self._acks.popleft()
            entry = self._in_flight.pop(mid, None)
            if entry is None:  # the online/offline status, published directly
                continue
            (refused if failed else acked).append(entry[0])
            if failed:
                refused_topics.add(entry[1])
        if not acked and not refused:
            return
        self.outbox.ack(acked)
        self.outbox.hold(refused)
        with self._counters_lock:
            self.counters["messages_acked"] += len(acked)
            self.counters["messages_refused"] += len(refused)
        if refused:
            where = ", ".join(sorted(refused_topics)[:3]) + (" ..." if len(refused_topics) > 3 else "")
            log.error(
                "the broker refused %d messages on %s (is this gateway allowed to publish there? check the "
                "broker's ACL); they stay in the outbox and are sent again later", len(refused), where,
            )  # fmt: skip
        with self._shrunk:
            self._shrunk.notify_all()

    def _send_more(self) -> None:
        room = self.max_inflight - len(self._in_flight)
        for message in self.outbox.take(room):
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = (SEQ_PROPERTY, str(message.seq))
            try:
                info = self.client.publish(
                    message.stream, message.payload, qos=1, retain=message.retain, properties=props
                )
            except ValueError as exc:  # a topic or payload MQTT can never carry: retrying cannot help, but
                kept = message.kind in NEVER_DROPPED  # an alert or detection is never deleted unpublished
                log.error("cannot publish on %r (%s): %s", message.stream, exc, "kept" if kept else "dropped")
                self.outbox.hold([message.id]) if kept else self.outbox.ack([], refused=[message.id])
                continue
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: paho resends it
                log.error(
                    "paho did not queue a message on %s (%s); it is sent again after a restart",
                    message.stream,
                    mqtt.error_string(info.rc),
                )
                continue
            # paho numbers mids 1..65535 in turn, so an old PUBACK cannot hit a reused mid
            # before this one is recorded: acks are settled by this thread only.
            self._in_flight[info.mid] = (message.id, message.stream)
            with self._counters_lock:
                self.counters["messages_sent"] += 1

    def _stop_sender(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._started and self._sender.is_alive():
            self._sender.join(10.0)

    # --- publishing -----------------------------------------------------------

    def _message(
        self, topic: str, payload: bytes, kind: str, *, items: int = 1, data_time_ms: int | None = None
    ) -> Outgoing:
        return Outgoing(topic, payload, kind, items, data_time_ms, T.QOS[_CHANNEL[kind]][1])

    def _store(self, *messages: Outgoing) -> None:
        """Store the waiting full batches, then ``messages``, in one outbox transaction.

        Counted only once committed; if the outbox cannot be written (OutboxError,
        raised to the caller) none of them is stored, as a single put would have lost its one.
        """
        group, self._full, self._full_step_ms = self._full + list(messages), [], None
        if not group:
            return
        seqs = self.outbox.put_many(group)
        with self._counters_lock:
            for message, seq in zip(group, seqs, strict=True):  # put_many: one seq (or None) per message
                if seq is None:
                    self.counters["readings_dropped_full"] += message.items if message.kind == READING else 0
                else:
                    self.counters["messages_published"] += 1
                    if message.kind == READING:
                        self.counters["readings_published"] += message.items
        self._wake.set()

    def add_reading(self, reading: Reading) -> None:
        if self._full and reading.time_ms != self._full_step_ms:
            self._store()  # the step whose batches filled up is over
        batch = self._batches.get(reading.sensor)
        if batch is None:
            batch = self._batches[reading.sensor] = []
            self._batch_started[reading.sensor] = time.monotonic()
        batch.append(reading)
        if len(batch) >= self.readings_batch:
            self._full.append(self._batch_message(reading.sensor))
            self._full_step_ms = reading.time_ms

    def flush_due(self) -> None:
        """Store batches older than ``max_delay_s`` and the full ones; call this from the main loop's tick."""
        now = time.monotonic()
        self._store(
            *[
                self._batch_message(sensor)
                for sensor, started in list(self._batch_started.items())
                if now - started >= self.max_delay_s
            ]
        )

    def flush(self) -> None:
        """Store every batch now, however small."""
        self._store(*[self._batch_message(sensor) for sensor in list(self._batches)])

    def _batch_message(self, sensor: str) -> Outgoing:
        batch = self._batches.pop(sensor)
        self._batch_started.pop(sensor, None)
        return self._message(
            self.topics.readings(sensor),
            payloads.encode_readings(batch),
            READING,
            items=len(batch),
            data_time_ms=max(r.time_ms for r in batch),
        )

    def publish_detection(self, detection: Detection) -> None:
        self._store(
            self._message(
                self.topics.detections(detection.kind),
                payloads.encode_detection(detection),
                DETECTION,
                data_time_ms=detection.time_ms,
            )
        )

    def publish_alert(self, alert: Alert) -> None:
        self._store(self._message(self.topics.alerts, payloads.encode_alert(alert), ALERT, data_time_ms=alert.time_ms))

    def publish_status(self, counters: dict | None = None, sources: dict | None = None, **more: dict) -> None:
        """Store a status: ``counters`` (the publisher's if None), per-source counters, ``more`` (status_payload.py)."""
        body = payloads.encode_status("online", _now_ms(), counters or self.counters_snapshot(), sources, **more)
        self._store(self._message(self.topics.status, body, STATUS))

    def _own_counters(self) -> dict[str, int]:
        with self._counters_lock:
            return dict(self.counters)

    def counters_snapshot(self) -> dict[str, int | float]:
        """The publisher's counters and the outbox's (backlog, drops...), for the status message."""
        return {**self._own_counters(), **self.outbox.stats()}

    # --- shutdown -----------------------------------------------------------

    def wait_acked(self, timeout_s: float) -> bool:
        """True once the outbox is empty: the broker acknowledged everything stored so far (full batches included)."""
        self._store()  # full batches waiting for their step's end: they are complete messages, store them now
        deadline = time.monotonic() + timeout_s
        with self._shrunk:
            while len(self.outbox):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._shrunk.wait(min(left, SENDER_IDLE_S))
        return True

    def close(self, timeout_s: float = 30.0) -> bool:
        """Flush, wait up to ``timeout_s`` for the outbox to empty, say ``offline``, disconnect.

        True if nothing was left; otherwise what is left stays in the outbox for the next start.
        """
        self.flush()
        done = self.wait_acked(timeout_s) if self._started else len(self.outbox) == 0
        if self._connected.is_set():
            info = self.client.publish(
                self.topics.status, payloads.encode_status("offline", _now_ms()), qos=1, retain=True
            )
            try:
                info.wait_for_publish(5.0)
            except (RuntimeError, ValueError):
                pass
        self._stopping.set()
        self.client.disconnect()
        self.client.loop_stop()
        self._stop_sender()
        left = len(self.outbox)
        self.outbox.close()
        if not done:
            log.warning("%d messages are not acknowledged yet; they stay in the outbox for the next start", left)
        return done


def _now_ms() -> int:
    return int(time.time() * 1000)
