"""`frugalsense status`: a gateway's retained status from the broker, or its local outbox when the broker is away."""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import time
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/frugalsense/gateway.yaml")
SETTLE_S = 0.5  # after the SUBACK, how long to collect retained messages


def register(subparsers) -> None:
    """Add `frugalsense status` and its options."""
    p = subparsers.add_parser(
        "status",
        help="show a gateway's status (online/offline, counters) from the broker, or its local outbox",
        description="Validate the config, subscribe to the gateway's retained status topic and print it. With "
        "--all, every gateway under the config's topic prefix. With --local, or when the broker cannot "
        "be reached, read the outbox in storage.data_dir instead (what is waiting to be sent). "
        "Exit code 0 if the gateway is online, 1 if offline or unknown, 2 on a usage error.",
    )
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE", help=f"gateway config (default {DEFAULT_CONFIG})"
    )
    p.add_argument("--all", action="store_true", help="every gateway under the topic prefix, not just this one")
    p.add_argument("--local", action="store_true", help="read the local outbox only; do not ask the broker")
    p.add_argument("--mqtt-host", default=None, help="broker host instead of the config's mqtt.host")
    p.add_argument("--mqtt-port", type=int, default=None, metavar="N", help="broker port instead of mqtt.port")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for the broker")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the gateway's status; exit code 0 if it is online, 1 if offline or unknown."""
    from gateway.commands.config_cmd import load_gateway_config

    config = load_gateway_config(args.config)
    if not args.local:
        try:
            statuses = retained_statuses(
                config, everyone=args.all, host=args.mqtt_host, port=args.mqtt_port, timeout_s=args.timeout
            )
        except ConnectionError as exc:
            print(f"broker: {exc}; showing the local outbox instead")
        else:
            return _print_statuses(config, statuses)
    return _print_local(config)


def retained_statuses(
    config, *, everyone: bool = False, host: str | None = None, port: int | None = None, timeout_s: float = 5.0
) -> dict[str, dict]:
    """``site/gateway`` -> decoded retained status payload, from the broker."""
    import dataclasses

    from gateway.protocol import topics as T
    from gateway.protocol.mqtt_client import make_client, settings_from_config

    settings = settings_from_config(config, host=host, port=port)
    settings = dataclasses.replace(settings, client_id=f"{settings.client_id}-status-{int(time.time())}")
    topic = (
        f"{config.mqtt.topic_prefix}/+/+/{T.STATUS}"
        if everyone
        else T.Topics(config.mqtt.topic_prefix, config.site, config.gateway).status
    )
    client = make_client(settings)
    subscribed, found = threading.Event(), {}

    def on_connect(c, _u, _f, reason_code, _p):
        if not reason_code.is_failure:
            c.subscribe(topic, qos=1)

    def on_message(_c, _u, message):
        levels = message.topic.split("/")
        try:
            found[f"{levels[-3]}/{levels[-2]}"] = json.loads(message.payload)
        except ValueError:
            found[f"{levels[-3]}/{levels[-2]}"] = {"state": "unreadable status payload"}

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"cannot reach {settings.host}:{settings.port} ({exc})") from None
    client.loop_start()
    try:
        if not subscribed.wait(timeout_s):
            raise ConnectionError(
                f"{settings.host}:{settings.port} did not accept the subscription within "
                f"{timeout_s:g} s (credentials, TLS or ACL?)"
            )
        time.sleep(SETTLE_S)  # retained messages follow the SUBACK
    finally:
        client.disconnect()
        client.loop_stop()
    return found


def _ago(time_ms: int | None) -> str:
    if not time_ms:
        return "time unknown (the will carries none)"
    seconds = max(0, time.time() - time_ms / 1000)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time_ms / 1000))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{stamp} ({seconds / size:.0f} {unit} ago)"
    return f"{stamp} ({seconds:.0f} s ago)"


def _print_statuses(config, statuses: dict[str, dict]) -> int:
    me = f"{config.site}/{config.gateway}"
    if not statuses:
        print(f"{me}: no status on the broker: the gateway has never connected to it (or under another topic_prefix)")
        return 1
    for name, status in sorted(statuses.items()):
        counters = status.get("counters") or {}
        line = f"{name}: {status.get('state', '?')} at {_ago(status.get('time'))}"
        print(line)
        for key in sorted(counters):
            print(f"    {key:<28} {counters[key]}")
        for key, value in (status.get("health") or {}).items():  # in the gateway's order (status_payload.py)
            print(f"    {'health ' + key:<28} {value}")
        for source, state in sorted((status.get("source_states") or {}).items()):
            print(f"    {'source ' + source:<28} {state}")
    return 0 if statuses.get(me, {}).get("state") == "online" or (len(statuses) > 1 and me not in statuses) else 1


def _print_local(config) -> int:
    from gateway.device.outbox import outbox_path

    path = outbox_path(config.resolve_path(config.storage.data_dir))
    if not path.is_file():
        print(f"{config.site}/{config.gateway}: no outbox at {path}: the gateway has not run here yet")
        return 1
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            count, size, oldest = db.execute(
                "SELECT count(*), coalesce(sum(size), 0), min(created_ms) FROM messages"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        print(f"{config.site}/{config.gateway}: cannot read the outbox {path}: {exc}")
        return 1
    print(f"{config.site}/{config.gateway}: local outbox {path}")
    print(f"    {'waiting messages':<28} {count}")
    print(f"    {'waiting bytes':<28} {size}")
    print(f"    {'oldest waiting since':<28} {_ago(oldest) if oldest else '-'}")
    return 1
