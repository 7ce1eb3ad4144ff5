"""`frugalsense bridge`: run the MQTT -> InfluxDB bridge until stopped, with its metrics endpoint if asked."""

from __future__ import annotations

import argparse
import signal
import threading

from gateway.commands.influx_options import add_influx_options
from gateway.commands.mqtt_options import add_mqtt_options
from gateway.protocol import topics as T

# Exit code when the broker does not answer at start: systemd restarts the bridge (its unit keeps
# exit 2, a wrong option or login, from restarting).
BROKER_AWAY = 3


def register(subparsers) -> None:
    """Add `frugalsense bridge` and its MQTT, InfluxDB and metrics options."""
    p = subparsers.add_parser(
        "bridge",
        help="write what gateways publish into InfluxDB",
        description="Subscribe to every gateway under the topic prefix and write readings, "
        "detections, alerts and status into InfluxDB (v1 /write, or v2 "
        "/api/v2/write). A message is acknowledged to the broker only after its "
        "points are written. Exit code 2 when an option or the InfluxDB login is wrong, 3 when the "
        "broker does not answer.",
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
    add_influx_options(p)
    metrics = p.add_argument_group("metrics")
    metrics.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="N",
        help="serve Prometheus metrics on http://HOST:N/metrics and a health check on /healthz "
        "(0: a free port, printed at start)",
    )
    metrics.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="HOST", help="address the metrics server listens on (127.0.0.1)"
    )
    p.add_argument("--stats-every", type=float, default=60.0, metavar="S", help="log counters every S seconds")
    p.set_defaults(func=run)


def check_influxdb(args: argparse.Namespace, writer, log) -> None:
    """A wrong login or an untrusted certificate stops the bridge at once; a server that is down does not."""
    from gateway.bridge.influx_writer import InfluxV1Writer
    from gateway.bridge.writer_base import WriteError
    from gateway.cli import UserError
    from gateway.commands.influx_options import login_problem

    if not isinstance(writer, InfluxV1Writer):
        if not writer.ping():
            log.warning("InfluxDB %s does not answer yet: messages wait with the broker until it does", writer.url)
        return
    try:
        writer.check_login()
    except WriteError as exc:
        problem = login_problem(args, exc)
        if problem or not exc.retryable:
            raise UserError(problem or str(exc)) from None
        log.warning("%s: messages wait with the broker until it answers", exc)


def run(args: argparse.Namespace) -> int:
    """Run the bridge until SIGTERM or Ctrl-C, logging its counters every --stats-every seconds."""
    import logging

    from gateway.bridge.metrics import BridgeMetrics
    from gateway.bridge.service import Bridge, SubscriptionRefused
    from gateway.cli import UserError
    from gateway.commands.influx_options import make_writer
    from gateway.commands.mqtt_options import mqtt_settings
    from gateway.protocol.mqtt_client import BrokerUnreachable

    log = logging.getLogger("frugalsense.bridge")
    settings = mqtt_settings(args)
    writer = make_writer(args)
    check_influxdb(args, writer, log)
    metrics = BridgeMetrics() if args.metrics_port is not None else None
    try:
        bridge = Bridge(
            settings, metrics.watch(writer) if metrics else writer, prefix=args.prefix, share_group=args.share_group
        ).start()
    except BrokerUnreachable as exc:
        writer.close()
        raise UserError(str(exc), code=BROKER_AWAY) from None
    except (ValueError, SubscriptionRefused) as exc:
        writer.close()
        raise UserError(str(exc)) from None
    server = None
    if metrics:
        metrics.attach(bridge)
        try:
            server = metrics.serve(args.metrics_host, args.metrics_port)
        except OSError as exc:
            bridge.stop()
            writer.close()
            raise UserError(
                f"--metrics-port {args.metrics_port}: cannot listen on {args.metrics_host}: {exc}"
            ) from None
        log.info("metrics on %s/metrics, health on %s/healthz", server.url, server.url)
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
        if server:
            server.close()
        bridge.stop()
        writer.close()
    return 0
