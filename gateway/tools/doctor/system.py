"""Doctor checks of what the gateway needs around it: the MQTT broker, a set clock, room on the disk."""

from __future__ import annotations

import dataclasses
import os
import shutil
import ssl
import subprocess
import threading
import time

from gateway.config import GatewayConfig
from gateway.tools.doctor.check import FAIL, OK, SKIP, Check

EARLIEST_YEAR = 2025  # a clock before this was never set (no RTC on a Pi)


def check_broker(config: GatewayConfig, timeout_s: float = 5.0) -> Check:
    """Whether the MQTT broker accepts a connection with the config's host, port, TLS files and credentials."""
    from gateway.protocol.mqtt_client import make_client, settings_from_config

    tls = config.mqtt.tls
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key, None) if tls else None
        if path is not None and not config.resolve_path(path).is_file():
            return Check(
                FAIL,
                "broker",
                f"mqtt.tls.{key} {config.resolve_path(path)} not found",
                f"copy the file there (see docs/operations.md, TLS) or fix mqtt.tls.{key}",
            )
    try:
        settings = settings_from_config(config)
    except (RuntimeError, OSError) as exc:
        return Check(FAIL, "broker", str(exc), "set the password as the config's mqtt section says")
    where = f"{settings.host}:{settings.port}{' (TLS)' if settings.ca_file else ''}"
    # Its own client id: the running service's connection must not be kicked off the broker.
    client = make_client(dataclasses.replace(settings, client_id=f"{settings.client_id}-doctor"))
    answered = threading.Event()
    result = {}

    def on_connect(_client, _userdata, _flags, reason_code, _properties):
        result["reason"] = reason_code
        answered.set()

    client.on_connect = on_connect
    client.connect_timeout = timeout_s
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except ssl.SSLError as exc:
        return Check(
            FAIL,
            "broker",
            f"TLS handshake with {where} failed: {exc}",
            "check mqtt.tls.ca_file is the CA that signed the broker's certificate and that mqtt.host "
            "matches the name in it",
        )
    except (OSError, ValueError) as exc:
        return Check(
            FAIL,
            "broker",
            f"cannot reach {where}: {exc}",
            "check the broker runs, mqtt.host and mqtt.port, and that the network lets the port through",
        )
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            return Check(
                FAIL,
                "broker",
                f"{where} accepted the connection but sent no CONNACK within {timeout_s:g} s",
                "check that the port is MQTT (1883 plain, 8883 TLS) and that TLS is set as the broker expects",
            )
        reason = result["reason"]
        if reason.is_failure:
            return Check(
                FAIL,
                "broker",
                f"{where} refused the connection: {reason}",
                "check mqtt.username and the password, and that the broker's ACL lists this gateway",
            )
    finally:
        client.disconnect()
        client.loop_stop()
    return Check(OK, "broker", f"{where} accepted {settings.username or 'an anonymous client'}")


def check_clock(now: float | None = None) -> Check:
    """Whether the gateway's clock has been set (readings carry its time)."""
    now = time.time() if now is None else now
    if time.gmtime(now).tm_year < EARLIEST_YEAR:
        return Check(
            FAIL,
            "clock",
            f"the clock says {time.strftime('%Y-%m-%d', time.gmtime(now))}: it was never set",
            "connect the gateway to a network with NTP (UDP 123) or fit an RTC; readings need the time",
        )
    tool = shutil.which("timedatectl")
    if tool is None:
        return Check(SKIP, "clock", "cannot tell if the clock is synchronised here (no timedatectl)")
    try:
        answer = subprocess.run(
            [tool, "show", "--property=NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check(SKIP, "clock", f"cannot tell if the clock is synchronised: timedatectl failed ({exc})")
    value = answer.stdout.strip()
    if answer.returncode != 0 or value not in ("yes", "no"):
        why = (answer.stderr.strip().splitlines() or ["no answer"])[0]
        return Check(SKIP, "clock", f"cannot tell if the clock is synchronised: timedatectl says {why!r}")
    if value == "no":
        return Check(
            FAIL,
            "clock",
            "not synchronised (timedatectl: NTPSynchronized=no)",
            "sudo timedatectl set-ntp true, and check the gateway reaches an NTP server (UDP 123)",
        )
    return Check(OK, "clock", "synchronised (timedatectl: NTPSynchronized=yes)")


def check_disk(config: GatewayConfig) -> Check:
    """Whether the data directory is writable and its disk has room for the outbox."""
    data_dir = config.resolve_path(config.storage.data_dir)
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free_mb = shutil.disk_usage(existing).free / 1e6
    needed_mb = config.storage.outbox_max_mb
    if data_dir.exists() and not os.access(data_dir, os.W_OK):
        return Check(
            FAIL,
            "disk",
            f"{data_dir} is not writable by this user",
            f"sudo chown frugalsense {data_dir} (the service runs as user frugalsense)",
        )
    where = f"{data_dir}{'' if data_dir.exists() else f' (not created yet; on {existing})'}"
    if free_mb < needed_mb:
        return Check(
            FAIL,
            "disk",
            f"{free_mb:.0f} MB free for {where}, the outbox may take {needed_mb} MB",
            "free space on that file system or lower storage.outbox_max_mb",
        )
    return Check(OK, "disk", f"{free_mb:.0f} MB free for {where} (outbox up to {needed_mb} MB)")
