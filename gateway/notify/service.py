"""The notifier service: alerts and operators' commands from MQTT in, durable decisions, messages out.

A message is acknowledged to the broker (paho ``manual_ack``) only after what it means is
committed to the state file: that an alert was seen, which notifications are now due. A
kill -9 before that leaves the message with the broker (persistent session: fixed client
id, session expiry), which delivers it again; the outbox's unique keys make the second
copy a no-op. One bad payload is counted (``rejected_<reason>``), logged and acknowledged.

Alerts may be shared among notifiers (``$share/<group>/<prefix>/+/+/alerts``, as the bridge
does), each with its own state folder; commands are not shared: every notifier takes every
command and acts on the alerts it knows.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.contracts import Alert
from gateway.notify.delivery import DeliveryWorker
from gateway.notify.lifecycle import Lifecycle
from gateway.notify.routes import Routing
from gateway.notify.state import State
from gateway.protocol import alert_commands, payloads
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings, make_client, wait_connected

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our queue a week while the notifier is away
STATE_FILE, STATUS_FILE, LOCK_FILE = "notify.sqlite", "status.json", "notify.lock"
LOGGED_PER_REASON = 20


def wall_ms() -> int:
    """The wall clock in ms (the notifier's default clock)."""
    return int(time.time() * 1000)


def subscriptions(prefix: str, share_group: str | None = None) -> tuple[str, str]:
    """The alerts filter (shared if a group is given) and the commands filter (never shared).

    >>> subscriptions("frugalsense", "notifiers")
    ('$share/notifiers/frugalsense/+/+/alerts', 'frugalsense/+/+/alert-commands')
    """
    alerts = f"{prefix}/+/+/{T.ALERTS}"
    if share_group is not None:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", share_group):
            raise ValueError(f"share group {share_group!r} must be letters, digits, '.', '_' or '-'")
        alerts = f"$share/{share_group}/{alerts}"
    return alerts, alert_commands.command_subscription(prefix)


class StateDirBusy(RuntimeError):
    """Another notifier holds this state folder."""


def lock_state_dir(state_dir: Path):
    """Hold ``notify.lock`` in the folder (released when the process ends, even by kill -9)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StateDirBusy(f"another notifier is using {state_dir} (its {LOCK_FILE} is locked)") from None
    return handle


def status_snapshot(state: State) -> dict:
    """What ``notify --status`` prints and status.json holds: durable counters and the outbox by status."""
    return {"outbox": state.outbox_counts(), "oldest_due_ms": state.oldest_due_ms(), "counters": state.counters()}


class Notifier:
    """Subscribe, decide, deliver; ``clock`` gives the notifier's time in ms (tests may pass their own)."""

    def __init__(
        self,
        settings: MqttSettings,
        routing: Routing,
        state_dir: Path,
        *,
        prefix: str = T.DEFAULT_PREFIX,
        share_group: str | None = None,
        clock: Callable[[], int] = wall_ms,
        tick_s: float = 0.2,
        status_every_s: float = 5.0,
    ):
        if not settings.client_id:
            raise ValueError("the notifier needs a fixed MQTT client id for its persistent session")
        self.settings, self.prefix, self.clock = settings, prefix, clock
        self.subscriptions = subscriptions(prefix, share_group)
        self.state_dir = Path(state_dir)
        self._lock = lock_state_dir(self.state_dir)
        self.state = State.open(self.state_dir / STATE_FILE)
        self.lifecycle = Lifecycle(self.state, routing)
        self.delivery = DeliveryWorker(self.state, routing, clock)
        self.tick_s, self.status_every_s = tick_s, status_every_s
        self._rejected: dict[str, int] = {}
        self._status_lock = threading.Lock()
        self._stop, self._wake = threading.Event(), threading.Event()
        self._connected, self._subscribed = threading.Event(), threading.Event()
        self._worker = threading.Thread(target=self._work, name="notify-delivery", daemon=True)
        self.client = make_client(settings, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self._connected.clear()

    def start(self, timeout_s: float = 10.0) -> Notifier:
        self._worker.start()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect_async(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s, clean_start=False,
            properties=props,
        )  # fmt: skip
        self.client.loop_start()
        wait_connected(self.client, self.settings, self._connected, timeout_s)
        self._subscribed.wait(timeout_s)
        self._write_status()  # status.json says "connected" once the subscriptions are in place
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._worker.join(30)
        self.client.disconnect()
        self.client.loop_stop()
        self._write_status()
        self.state.close()
        self._lock.close()

    # ---- MQTT (paho's thread) -------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the notifier: %s", reason_code)
            return
        self._connected.set()
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        log.info("notifier connected (session present: %s)", flags.session_present)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage):
        now = self.clock()
        try:
            if message.topic.endswith("/" + alert_commands.CHANNEL):
                command = alert_commands.decode_command(self.prefix, message.topic, bytes(message.payload))
                self.lifecycle.on_command(command, now)
            else:
                decoded = payloads.decode(self.prefix, message.topic, bytes(message.payload), now_ms=now)
                if not isinstance(decoded, Alert):  # parse_topic only lets alerts through here; be sure
                    raise payloads.PayloadError("not_an_alert", f"{message.topic} is not an alerts topic")
                self.lifecycle.on_alert(decoded, now)
        except payloads.PayloadError as exc:
            self._reject(exc.reason, message.topic, str(exc))
        except alert_commands.AlertCommandError as exc:
            self._reject("bad_command", message.topic, str(exc))
        except sqlite3.Error as exc:
            # Not acknowledged: the broker gives it to us again after a reconnect.
            log.error("state file error, message on %s left unacknowledged: %s", message.topic, exc)
            return
        except Exception:  # a bug must cost one message (counted, logged), never the service
            log.exception("could not handle the message on %s", message.topic)
            self._reject("internal_error", message.topic, "see the traceback above")
        client.ack(message.mid, message.qos)
        self._wake.set()

    def _reject(self, reason: str, topic: str, detail: str) -> None:
        n = self._rejected[reason] = self._rejected.get(reason, 0) + 1
        if n <= LOGGED_PER_REASON or n % 1000 == 0:
            log.warning("rejected message %d with reason %s on %r: %s", n, reason, topic, detail[:300])
        with self.state.transaction():
            self.state.bump(f"rejected_{reason}")

    # ---- time and delivery (worker thread) ------------------------------------

    def _work(self) -> None:
        next_status = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                now = self.clock()
                self.lifecycle.tick(now)
                self.delivery.send_due(now)
            except sqlite3.Error as exc:
                log.error("state file error in the delivery worker (retrying): %s", exc)
            except Exception:  # the worker must outlive a bug in one round
                log.exception("delivery worker round failed (retrying)")
            if time.monotonic() >= next_status:
                self._write_status()
                next_status = time.monotonic() + self.status_every_s
            self._wake.wait(self.tick_s)

    def status(self) -> dict:
        return {
            "time_ms": wall_ms(),
            "connected": self._connected.is_set(),
            "subscribed": self._subscribed.is_set(),  # messages published from then on are queued for us
            "subscriptions": list(self.subscriptions),
            **status_snapshot(self.state),
        }

    def _write_status(self) -> None:
        try:
            text = json.dumps(self.status(), indent=1, sort_keys=True)
        except sqlite3.Error:
            return
        with self._status_lock:
            tmp = self.state_dir / (STATUS_FILE + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.state_dir / STATUS_FILE)
