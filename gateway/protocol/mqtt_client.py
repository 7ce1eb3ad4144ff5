"""The one MQTT client factory (paho 2.x, MQTT v5) and its settings, for the gateway, the bridge and the tools."""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

if TYPE_CHECKING:
    from gateway.config import GatewayConfig


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to reach the broker: host, port, client id, keepalive, credentials and TLS files."""

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
    """A paho MQTT v5 client with these settings' id, credentials and TLS; not yet connected."""
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
    """Wait until ``connected`` is set; stop the client's loop and raise BrokerUnreachable after ``timeout_s``."""
    if not connected.wait(timeout_s):
        client.loop_stop()
        raise BrokerUnreachable(
            f"MQTT broker {settings.host}:{settings.port} did not accept a connection within {timeout_s:.0f} s "
            "(is it running? is the port right? check host, port, TLS and credentials in the config's mqtt section)"
        )


def settings_from_config(config: GatewayConfig, *, host: str | None = None, port: int | None = None) -> MqttSettings:
    """The MQTT settings a gateway config gives (password from its env variable or file), host and port overridable."""
    m = config.mqtt
    password = None
    if m.password_env:
        password = os.environ.get(m.password_env)
        if password is None:
            raise RuntimeError(f"mqtt.password_env: environment variable {m.password_env} is not set")
    elif m.password_file:
        password = config.resolve_path(m.password_file).read_text().strip()
    tls = m.tls
    return MqttSettings(
        host=host or m.host,
        port=port or m.port,
        client_id=m.client_id or "",  # never None: the schema fills it (frugalsense-<gateway>)
        keepalive_s=m.keepalive_s,
        username=m.username,
        password=password,
        ca_file=str(config.resolve_path(tls.ca_file)) if tls and tls.ca_file else None,
        cert_file=str(config.resolve_path(tls.cert_file)) if tls and tls.cert_file else None,
        key_file=str(config.resolve_path(tls.key_file)) if tls and tls.key_file else None,
    )
