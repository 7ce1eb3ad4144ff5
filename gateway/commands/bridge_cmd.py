"""`frugalsense bridge`: run the MQTT -> InfluxDB bridge until stopped."""
from __future__ import annotations

import argparse
import os
import signal
import threading

from gateway import topics as T


def register(subparsers) -> None:
    p = subparsers.add_parser("bridge", help="write what gateways publish into InfluxDB",
                              description="Subscribe to every gateway under the topic prefix and write readings, "
                                          "detections, alerts and status into InfluxDB 1.x (/write). A message is "
                                          "acknowledged to the broker only after its points are written.")
    p.add_argument("--mqtt-host", default="127.0.0.1")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--mqtt-username", default=None)
    p.add_argument("--mqtt-password-env", default=None, metavar="VAR",
                   help="environment variable holding the MQTT password (never on the command line)")
    p.add_argument("--client-id", default="frugalsense-bridge",
                   help="fixed client id: the broker keeps this bridge's queue while it is away")
    p.add_argument("--prefix", default=T.DEFAULT_PREFIX)
    p.add_argument("--influx-url", default="http://127.0.0.1:8086")
    p.add_argument("--database", default="frugalsense")
    p.add_argument("--stats-every", type=float, default=60.0, metavar="S", help="log counters every S seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from gateway.bridge import Bridge
    from gateway.cli import UserError
    from gateway.influx_writer import InfluxV1Writer
    from gateway.publisher import BrokerUnreachable, MqttSettings

    log = logging.getLogger("frugalsense.bridge")
    password = None
    if args.mqtt_password_env:
        password = os.environ.get(args.mqtt_password_env)
        if password is None:
            raise UserError(f"environment variable {args.mqtt_password_env} (the MQTT password) is not set")
    settings = MqttSettings(args.mqtt_host, args.mqtt_port, client_id=args.client_id,
                            username=args.mqtt_username, password=password)
    writer = InfluxV1Writer(args.influx_url, args.database)
    try:
        bridge = Bridge(settings, writer, prefix=args.prefix).start()
    except BrokerUnreachable as exc:
        raise UserError(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("bridge running: mqtt %s:%s -> %s db=%s", args.mqtt_host, args.mqtt_port, args.influx_url, args.database)
    try:
        while not stop.wait(args.stats_every):
            log.info("counters: %s dead letters: %s", dict(bridge.counters), dict(bridge.deadletters))
    except KeyboardInterrupt:
        pass
    finally:
        bridge.stop()
    return 0
