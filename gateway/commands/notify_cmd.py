"""`frugalsense notify`: turn gateway alerts into messages to people (Apprise), check its rules, show its status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gateway.commands.mqtt_options import add_mqtt_options, mqtt_settings
from gateway.protocol import topics as T

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def register(subparsers) -> None:
    """Add `frugalsense notify` and its options."""
    p = subparsers.add_parser(
        "notify",
        help="send alerts to people (e-mail, ntfy, SMS, webhooks) through Apprise",
        description="Subscribe to every gateway's alerts and the operators' alert commands, and send "
        "messages to the routes of a rules file (docs/notify.md). --check FILE validates a rules file "
        "(exit 0 valid, 1 invalid, 2 unreadable); --status prints the state folder's counters.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", type=Path, metavar="FILE", help="routing rules (YAML): run the notifier")
    what.add_argument("--check", type=Path, metavar="FILE", help="validate a rules file, its URLs parsed by Apprise")
    what.add_argument("--status", action="store_true", help="print the status of the notifier of --state-dir")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/frugalsense/notify"),
        help="where the notifier keeps its SQLite state and status.json (default %(default)s)",
    )
    mqtt = add_mqtt_options(
        p,
        client_id="frugalsense-notify",
        client_id_help="fixed client id: the broker keeps this notifier's queue while it is away",
    )
    mqtt.add_argument(
        "--share-group", default=None, metavar="NAME", help="share the alerts with the notifiers of this group"
    )
    mqtt.add_argument("--prefix", default=T.DEFAULT_PREFIX)
    p.add_argument("--stats-every", type=float, default=60.0, metavar="S", help="log counters every S seconds")
    p.set_defaults(func=run)


def load_routing(path: Path):
    """The rules and every channel built, as the service needs them; ConfigError otherwise."""
    from gateway.notify.config import load_rules_with_lines, rules_folder
    from gateway.notify.routes import build_routing

    rules, doc = load_rules_with_lines(path)
    return build_routing(rules, doc, str(path), rules_folder(path))


def run(args: argparse.Namespace) -> int:
    """Check, show the status, or run until SIGTERM / Ctrl-C."""
    from gateway.config.problems import ConfigError, ConfigUnreadable

    if args.status:
        return _status(args.state_dir)
    path = args.check or args.config
    try:
        routing = load_routing(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_UNREADABLE if isinstance(exc, ConfigUnreadable) else EXIT_INVALID
    if args.check:
        channels = sum(len(c) for c in routing.channels.values())
        print(f"{path}: ok ({len(routing.rules.routes)} routes, {channels} Apprise URLs)")
        return EXIT_OK
    return _serve(args, routing)


def _status(state_dir: Path) -> int:
    from gateway.cli import UserError
    from gateway.notify.service import STATE_FILE, STATUS_FILE
    from gateway.notify.state import State

    if not (state_dir / STATE_FILE).exists():
        raise UserError(f"no notifier state in {state_dir} (give --state-dir of the running notifier)")
    from gateway.notify.service import status_snapshot

    state = State.open(state_dir / STATE_FILE)
    try:
        snapshot = status_snapshot(state)
    finally:
        state.close()
    status_file = state_dir / STATUS_FILE
    if status_file.exists():
        snapshot["last_status_file"] = json.loads(status_file.read_text())
    print(json.dumps(snapshot, indent=1, sort_keys=True))
    return EXIT_OK


def _serve(args: argparse.Namespace, routing) -> int:
    import logging
    import signal
    import threading

    from gateway.cli import UserError
    from gateway.notify.service import Notifier, StateDirBusy
    from gateway.protocol.mqtt_client import BrokerUnreachable

    log = logging.getLogger("frugalsense.notify")
    settings = mqtt_settings(args)
    try:
        notifier = Notifier(settings, routing, args.state_dir, prefix=args.prefix, share_group=args.share_group).start()
    except (ValueError, BrokerUnreachable, StateDirBusy) as exc:
        raise UserError(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info(
        "notifier %s running: mqtt %s:%s %s; %d routes; state in %s",
        args.client_id,
        args.mqtt_host,
        args.mqtt_port,
        ", ".join(notifier.subscriptions),
        len(routing.rules.routes),
        args.state_dir,
    )
    try:
        while not stop.wait(args.stats_every):
            status = notifier.status()
            log.info("outbox: %s counters: %s", status["outbox"], status["counters"])
    except KeyboardInterrupt:
        pass
    finally:
        notifier.stop()
    return EXIT_OK
