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
                                          "detections, alerts and status into InfluxDB (v1 /write, or v2 "
                                          "/api/v2/write). A message is acknowledged to the broker only after its "
                                          "points are written.")
    mqtt = p.add_argument_group("MQTT")
    mqtt.add_argument("--mqtt-host", default="127.0.0.1")
    mqtt.add_argument("--mqtt-port", type=int, default=1883)
    mqtt.add_argument("--mqtt-username", default=None)
    secret = mqtt.add_mutually_exclusive_group()
    secret.add_argument("--mqtt-password-env", default=None, metavar="VAR",
                        help="environment variable holding the MQTT password (never on the command line)")
    secret.add_argument("--mqtt-password-file", default=None, metavar="FILE",
                        help="file holding the MQTT password; must not be readable by group or others")
    mqtt.add_argument("--mqtt-ca-file", default=None, metavar="PEM",
                      help="CA certificate of the broker: connect with TLS")
    mqtt.add_argument("--mqtt-cert-file", default=None, metavar="PEM", help="client certificate (with --mqtt-key-file)")
    mqtt.add_argument("--mqtt-key-file", default=None, metavar="PEM",
                      help="client private key; must not be readable by group or others")
    mqtt.add_argument("--client-id", default="frugalsense-bridge",
                      help="fixed client id: the broker keeps this bridge's queue while it is away "
                           "(each worker of a share group needs its own)")
    mqtt.add_argument("--share-group", default=None, metavar="NAME",
                      help="share the subscription with the other bridge workers of this group "
                           "($share/NAME/...): each message goes to one of them")
    mqtt.add_argument("--prefix", default=T.DEFAULT_PREFIX)
    influx = p.add_argument_group("InfluxDB")
    influx.add_argument("--influx-api", choices=("v1", "v2"), default="v1",
                        help="v1: /write?db= (InfluxDB 1.x, as Debian ships it); v2: /api/v2/write with "
                             "influxdb-client (InfluxDB 1.8+, 2.x, 3.x, Cloud)")
    influx.add_argument("--influx-url", default="http://127.0.0.1:8086")
    influx.add_argument("--database", default="frugalsense", help="v1 database (and the v2 bucket if none given)")
    influx.add_argument("--bucket", default=None, help="v2 bucket (InfluxDB 1.8: DATABASE/RETENTION_POLICY)")
    influx.add_argument("--org", default=None, help="v2 organisation (InfluxDB 1.8 ignores it)")
    influx.add_argument("--token-env", default=None, metavar="VAR",
                        help="environment variable holding the v2 API token (InfluxDB 1.8: USER:PASSWORD)")
    p.add_argument("--stats-every", type=float, default=60.0, metavar="S", help="log counters every S seconds")
    p.set_defaults(func=run)


def _env(name: str | None, what: str) -> str | None:
    from gateway.cli import UserError

    if not name:
        return None
    value = os.environ.get(name)
    if value is None:
        raise UserError(f"environment variable {name} ({what}) is not set")
    return value


def run(args: argparse.Namespace) -> int:
    import logging

    from gateway.bridge import Bridge, SubscriptionRefused
    from gateway.cli import UserError
    from gateway.influx_writer import make_influx_writer
    from gateway.publisher import BrokerUnreachable, MqttSettings
    from gateway.security.secrets import SecretFileError, check_private_file, read_secret_file

    log = logging.getLogger("frugalsense.bridge")
    if args.influx_api == "v1" and (args.bucket or args.org or args.token_env):
        raise UserError("--bucket, --org and --token-env are for --influx-api v2; v1 uses --database")
    if bool(args.mqtt_cert_file) != bool(args.mqtt_key_file):
        raise UserError("--mqtt-cert-file and --mqtt-key-file go together: give both or neither")
    if args.mqtt_cert_file and not args.mqtt_ca_file:
        raise UserError("a client certificate needs TLS: give --mqtt-ca-file too")
    try:
        password = _env(args.mqtt_password_env, "the MQTT password")
        if args.mqtt_password_file:
            password = read_secret_file(args.mqtt_password_file)
        if args.mqtt_key_file:
            check_private_file(args.mqtt_key_file)
    except SecretFileError as exc:
        raise UserError(str(exc)) from None
    token = _env(args.token_env, "the InfluxDB token")
    settings = MqttSettings(args.mqtt_host, args.mqtt_port, client_id=args.client_id,
                            username=args.mqtt_username, password=password, ca_file=args.mqtt_ca_file,
                            cert_file=args.mqtt_cert_file, key_file=args.mqtt_key_file)
    writer = make_influx_writer(args.influx_api, args.influx_url, database=args.database, bucket=args.bucket,
                                org=args.org, token=token)
    try:
        bridge = Bridge(settings, writer, prefix=args.prefix, share_group=args.share_group).start()
    except (ValueError, BrokerUnreachable, SubscriptionRefused) as exc:
        raise UserError(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("bridge %s running: mqtt %s:%s %s -> %s (influx %s)", args.client_id, args.mqtt_host, args.mqtt_port,
             ", ".join(bridge.subscriptions), args.influx_url, args.influx_api)
    try:
        while not stop.wait(args.stats_every):
            log.info("counters: %s dead letters: %s", dict(bridge.counters), dict(bridge.deadletters))
    except KeyboardInterrupt:
        pass
    finally:
        bridge.stop()
        writer.close()
    return 0
