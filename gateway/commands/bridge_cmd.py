"""`frugalsense bridge`: run the MQTT -> InfluxDB bridge until stopped."""

from __future__ import annotations

import argparse
import signal
import threading

from gateway.commands.mqtt_options import add_mqtt_options, env_value, mqtt_settings
from gateway.protocol import topics as T


def register(subparsers) -> None:
    """Add `frugalsense bridge` and its MQTT and InfluxDB options."""
    p = subparsers.add_parser(
        "bridge",
        help="write what gateways publish into InfluxDB",
        description="Subscribe to every gateway under the topic prefix and write readings, "
        "detections, alerts and status into InfluxDB (v1 /write, or v2 "
        "/api/v2/write). A message is acknowledged to the broker only after its "
        "points are written.",
    )
    mqtt = add_mqtt_options(
        p,
        client_id="frugalsense-bridge",
        client_id_help="fixed client id: the broker keeps this bridge's queue while it is away "
        "(each worker of a share group needs its own)",
    )
    mqtt.add_argument(
        "--share-group",
        default=None,
        metavar="NAME",
        help="share the subscription with the other bridge workers of this group "
        "($share/NAME/...): each message goes to one of them",
    )
    mqtt.add_argument("--prefix", default=T.DEFAULT_PREFIX)
    influx = p.add_argument_group("InfluxDB")
    influx.add_argument(
        "--influx-api",
        choices=("v1", "v2"),
        default="v1",
        help="v1: /write?db= (InfluxDB 1.x, as Debian ships it); v2: /api/v2/write with "
        "influxdb-client (InfluxDB 1.8+, 2.x, 3.x, Cloud)",
    )
    influx.add_argument("--influx-url", default="http://127.0.0.1:8086")
    influx.add_argument("--database", default="frugalsense", help="v1 database (and the v2 bucket if none given)")
    influx.add_argument("--bucket", default=None, help="v2 bucket (InfluxDB 1.8: DATABASE/RETENTION_POLICY)")
    influx.add_argument("--org", default=None, help="v2 organisation (InfluxDB 1.8 ignores it)")
    influx.add_argument(
        "--token-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the v2 API token (InfluxDB 1.8: USER:PASSWORD)",
    )
    p.add_argument("--stats-every", type=float, default=60.0, metavar="S", help="log counters every S seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the bridge until SIGTERM or Ctrl-C, logging its counters every --stats-every seconds."""
    import logging

    from gateway.bridge.influx_writer import make_influx_writer
    from gateway.bridge.service import Bridge, SubscriptionRefused
    from gateway.cli import UserError
    from gateway.protocol.mqtt_client import BrokerUnreachable

    log = logging.getLogger("frugalsense.bridge")
    if args.influx_api == "v1" and (args.bucket or args.org or args.token_env):
        raise UserError("--bucket, --org and --token-env are for --influx-api v2; v1 uses --database")
    settings = mqtt_settings(args)
    token = env_value(args.token_env, "the InfluxDB token")
    writer = make_influx_writer(
        args.influx_api, args.influx_url, database=args.database, bucket=args.bucket, org=args.org, token=token
    )
    try:
        bridge = Bridge(settings, writer, prefix=args.prefix, share_group=args.share_group).start()
    except (ValueError, BrokerUnreachable, SubscriptionRefused) as exc:
        raise UserError(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info(
        "bridge %s running: mqtt %s:%s %s -> %s (influx %s)",
        args.client_id,
        args.mqtt_host,
        args.mqtt_port,
        ", ".join(bridge.subscriptions),
        args.influx_url,
        args.influx_api,
    )
    try:
        while not stop.wait(args.stats_every):
            log.info("counters: %s dead letters: %s", dict(bridge.counters), dict(bridge.deadletters))
    except KeyboardInterrupt:
        pass
    finally:
        bridge.stop()
        writer.close()
    return 0
