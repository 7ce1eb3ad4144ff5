"""`frugalsense services up`: run private Mosquitto and InfluxDB (and VictoriaMetrics) until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from gateway.cli import UserError
from gateway.local_services.services import LocalServices, ServiceError

DEFAULT_DIR = Path(".run/services")
DEFAULT_DATABASE = "frugalsense"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `frugalsense services up` and its options."""
    parser = subparsers.add_parser("services", help="run local Mosquitto/InfluxDB for trying things out")
    actions = parser.add_subparsers(dest="services_action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start them on free loopback ports and wait for Ctrl-C")
    up.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"folder for configs, data and logs (default {DEFAULT_DIR})"
    )
    up.add_argument("--victoria-metrics", action="store_true", help="also start VictoriaMetrics")
    up.add_argument(
        "--database", default=DEFAULT_DATABASE, help=f"InfluxDB database to create (default {DEFAULT_DATABASE})"
    )
    up.set_defaults(func=run_up)


def describe(services: LocalServices, database: str) -> str:
    """What a person needs to talk to the running services: ports, URLs, commands to paste."""
    host, port = services.mqtt_host, services.mqtt_port
    influx_port = services.info("influxdb").port
    lines = [
        f"Mosquitto        mqtt://{host}:{port}   log {services.info('mosquitto').log_path}",
        f"InfluxDB         {services.influx_url}   database {database}   log {services.info('influxdb').log_path}",
    ]
    if "victoriametrics" in services.names:
        lines.append(f"VictoriaMetrics  {services.vm_url}   log {services.info('victoriametrics').log_path}")
    lines += [
        "",
        "Watch messages:",
        f"  mosquitto_sub -h {host} -p {port} -v -t 'frugalsense/#'",
        "Look at stored measurements:",
        f"  influx -host {host} -port {influx_port} -database {database} -execute 'SHOW MEASUREMENTS'",
    ]
    if "victoriametrics" in services.names:
        lines += ["List VictoriaMetrics series:", f"  curl -s '{services.vm_url}/api/v1/label/__name__/values'"]
    lines += ["", "Press Ctrl-C to stop them."]
    return "\n".join(lines)


def run_up(args: argparse.Namespace) -> int:
    """Start the local services, print where they listen, and stop them on Ctrl-C or SIGTERM."""
    services = LocalServices(args.dir, victoriametrics=args.victoria_metrics)
    # `kill PID` should stop the children too, as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with services:
            services.create_influx_database(args.database)
            print(describe(services, args.database), flush=True)
            threading.Event().wait()
    except ServiceError as exc:
        raise UserError(str(exc)) from exc
    except KeyboardInterrupt:
        print("\nstopping services", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
