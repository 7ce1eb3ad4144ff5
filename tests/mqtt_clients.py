"""MQTT test clients on the real broker: connect with a timeout, collect what a subscription delivers, publish.

The tests talk to the Mosquitto of ``LocalServices`` (no mocks); these are the pieces several of them need:

- :func:`connect` / :func:`close`: a paho client, connected (CONNACK seen) within a timeout, its loop running;
- :class:`Collector`: subscribes (again after every reconnect), keeps each message or hands it to a callback,
  and waits for N messages, for a condition, or for the retained messages of its topics;
- :class:`Publisher`: publishes and, by default, waits until the broker has the message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
TIMEOUT_S = 10.0


def connect(
    port: int,
    *,
    host: str = HOST,
    client_id: str = "",
    protocol: int = mqtt.MQTTv5,
    session_expiry_s: int | None = None,
    timeout_s: float = TIMEOUT_S,
    setup: Callable[[mqtt.Client], None] | None = None,
) -> mqtt.Client:
    """A client connected to the broker at ``host:port`` with its network loop running.

    ``session_expiry_s`` keeps an MQTT v5 session (``clean_start=False``) that long after a disconnect, so a
    persistent broker queues QoS 1 messages for it. ``setup`` is called with the client before it connects (to set
    callbacks that must be in place before the first packet). Raises ``TimeoutError`` without a CONNACK.
    """
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    connected = threading.Event()
    if setup is not None:
        setup(client)
    chained = client.on_connect  # the caller's, if setup set one: called before the CONNACK is counted

    def on_connect(c, userdata, flags, reason_code, properties):
        if chained is not None:
            chained(c, userdata, flags, reason_code, properties)
        if not reason_code.is_failure:
            connected.set()

    client.on_connect = on_connect
    options: dict = {}
    if session_expiry_s is not None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        options = {"clean_start": False, "properties": props}
    client.connect(host, port, **options)
    client.loop_start()
    if not connected.wait(timeout_s):
        close(client)
        raise TimeoutError(f"no CONNACK from the broker at {host}:{port} within {timeout_s:g} s")
    return client


def close(client: mqtt.Client) -> None:
    """Disconnect cleanly and stop the network loop."""
    client.disconnect()
    client.loop_stop()


class Collector:
    """A subscriber that keeps every message of ``topics`` (or hands each to ``on_message`` instead).

    It subscribes on every CONNACK, so it is subscribed again after a broker restart; :meth:`start` returns once
    the first SUBACK arrived. Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        port: int,
        *topics: str,
        qos: int = 1,
        host: str = HOST,
        client_id: str = "",
        protocol: int = mqtt.MQTTv5,
        session_expiry_s: int | None = None,
        reconnect_delay_s: tuple[int, int] | None = None,
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
        setup: Callable[[mqtt.Client], None] | None = None,
    ):
        self.port, self.topics, self.qos, self.host = port, topics, qos, host
        self._setup = setup  # TLS, a login: called with the client before it connects
        self.client_id, self.protocol, self.session_expiry_s = client_id, protocol, session_expiry_s
        self.reconnect_delay_s = reconnect_delay_s
        self.messages: list[mqtt.MQTTMessage] = []
        self.granted: list[int] = []  # the broker's SUBACK codes: the QoS granted per topic, >= 128 refused
        self._handle = on_message
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self.client: mqtt.Client | None = None

    def start(self, timeout_s: float = TIMEOUT_S) -> Collector:
        """Connect, subscribe, and wait for the broker's SUBACK."""

        def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
            self.granted = [code.value for code in reason_codes]
            self._subscribed.set()

        def setup(client: mqtt.Client) -> None:
            if self._setup is not None:
                self._setup(client)
            if self.reconnect_delay_s:
                client.reconnect_delay_set(*self.reconnect_delay_s)
            client.on_connect = lambda c, *_: c.subscribe([(t, self.qos) for t in self.topics])
            client.on_subscribe = on_subscribe
            client.on_message = self._on_message

        self.client = connect(
            self.port,
            host=self.host,
            client_id=self.client_id,
            protocol=self.protocol,
            session_expiry_s=self.session_expiry_s,
            timeout_s=timeout_s,
            setup=setup,
        )
        if not self._subscribed.wait(timeout_s):
            self.close()
            raise TimeoutError(f"no SUBACK for {self.topics} within {timeout_s:g} s")
        return self

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        if self._handle is not None:
            self._handle(message)
        with self._changed:
            if self._handle is None:
                self.messages.append(message)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[mqtt.MQTTMessage]], bool], timeout_s: float = TIMEOUT_S) -> bool:
        """Wait until ``predicate(messages)`` holds (checked at each message and every 50 ms); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
            return True

    def wait(self, count: int, timeout_s: float = TIMEOUT_S) -> bool:
        """Wait until at least ``count`` messages arrived; False on timeout."""
        return self.wait_for(lambda messages: len(messages) >= count, timeout_s)

    def retained(self, count: int = 1, timeout_s: float = TIMEOUT_S) -> dict[str, bytes]:
        """The retained messages the broker sent on subscribing, by topic, once ``count`` of them arrived.

        Raises ``TimeoutError`` with what did arrive when fewer came.
        """
        if not self.wait_for(lambda messages: sum(m.retain for m in messages) >= count, timeout_s):
            raise TimeoutError(f"{count} retained message(s) expected on {self.topics}, got {self.payloads()}")
        return {m.topic: m.payload for m in list(self.messages) if m.retain}

    def payloads(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of every message kept so far."""
        with self._changed:
            return [(m.topic, m.payload) for m in self.messages]

    def close(self) -> None:
        """Disconnect; the messages stay readable."""
        if self.client is not None:
            close(self.client)
            self.client = None

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class Publisher:
    """A plain publisher (not the gateway's): sends what a test writes, bytes as given."""

    def __init__(self, port: int, *, host: str = HOST, client_id: str = "", protocol: int = mqtt.MQTTv5):
        self.client = connect(port, host=host, client_id=client_id, protocol=protocol)

    def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False, wait_s: float | None = TIMEOUT_S
    ) -> mqtt.MQTTMessageInfo:
        """Publish one message; with ``wait_s`` (the default), return once the broker acknowledged it."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if wait_s is not None:
            info.wait_for_publish(wait_s)
        return info

    def close(self) -> None:
        """Disconnect cleanly (what was published at QoS 1 and acknowledged stays with the broker)."""
        close(self.client)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
