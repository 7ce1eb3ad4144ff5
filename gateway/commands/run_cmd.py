"""`frugalsense run CONFIG`: run the gateway service until its sources end or it is stopped (SIGTERM, Ctrl-C)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from gateway.device.runner import DRAIN_TIMEOUT_S

log = logging.getLogger("frugalsense.run")


def register(subparsers) -> None:
    """Add `frugalsense run` and its options."""
    p = subparsers.add_parser(
        "run",
        help="run the gateway: read sensors, detect, publish through the durable outbox",
        description="Validate CONFIG, then read its sensors, run its detectors and publish readings, detections, "
        "alerts and status over MQTT. Every message is stored in the outbox (storage.data_dir) before "
        "it is published and deleted only when the broker acknowledged it, so the gateway keeps "
        "working with the broker down. A replay restarted after a crash resumes where the outbox left "
        "off. Stops when the sources end or on SIGTERM / Ctrl-C; exit code 0 even if messages are "
        "still waiting (they go at the next start).",
    )
    p.add_argument("config", type=Path, metavar="CONFIG", help="gateway config (YAML)")
    p.add_argument("--mqtt-host", default=None, help="broker host instead of the config's mqtt.host")
    p.add_argument(
        "--mqtt-port", type=int, default=None, metavar="N", help="broker port instead of the config's mqtt.port"
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=DRAIN_TIMEOUT_S,
        metavar="S",
        help=f"when the sources end, wait up to S seconds for the outbox to empty (default {DRAIN_TIMEOUT_S:.0f})",
    )
    p.add_argument(
        "--from-start",
        action="store_true",
        help="replay the whole dataset again instead of resuming after what the outbox already stored",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the gateway service from its config until its sources end or it is stopped."""
    from edge.datasets import DatasetError
    from gateway.cli import UserError
    from gateway.commands.config_cmd import load_gateway_config
    from gateway.config import ConfigError
    from gateway.device.outbox import OutboxError
    from gateway.device.runner import GatewayRunner

    if args.mqtt_port is not None and not 1 <= args.mqtt_port <= 65535:
        raise UserError(f"--mqtt-port must be between 1 and 65535, got {args.mqtt_port}")
    if args.drain_timeout < 0:
        raise UserError(f"--drain-timeout must be 0 or more seconds, got {args.drain_timeout}")
    config = load_gateway_config(args.config)
    try:
        runner = GatewayRunner.from_config(
            config, mqtt_host=args.mqtt_host, mqtt_port=args.mqtt_port, resume=not args.from_start
        )
    except ConfigError as exc:  # a detector that cannot be built, said as `config validate` says it
        raise UserError(f"invalid config {args.config}:\n{exc}", code=1) from None
    except (OutboxError, DatasetError, OSError, RuntimeError) as exc:
        raise UserError(f"{args.config}: {exc}") from None

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    settings = runner.publisher.settings
    log.info(
        "gateway %s/%s running: mqtt %s:%s, outbox %s",
        config.site,
        config.gateway,
        settings.host,
        settings.port,
        runner.publisher.outbox.path,
    )
    summary = runner.run(stop=stop, drain_timeout_s=args.drain_timeout)

    rejected = sum(summary.rejected.values())
    line = (
        f"gateway {config.gateway}: {summary.readings} readings, {summary.detections} detections, "
        f"{summary.alerts} alerts published"
    )
    if summary.resumed:
        line += f" ({summary.resumed} readings already stored by a previous run)"
    if rejected:
        line += f"; {rejected} readings rejected"
    if summary.outbox_errors:
        line += f"; {summary.outbox_errors} messages could not be stored (see the log)"
    line += (
        "; outbox empty, all delivered"
        if summary.all_acknowledged
        else f"; {summary.outbox_left} messages wait in the outbox for the next start"
    )
    print(line, flush=True)
    return 0
