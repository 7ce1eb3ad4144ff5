"""`frugalsense alert`: acknowledge, assign, comment on and resolve an alert over MQTT; list alerts and their lifecycle.

A change is one AlertCommand (gateway/protocol/alert_commands.py) published at QoS 1 on
``<prefix>/<site>/<gateway>/alert-commands``; the command waits for the broker's PUBACK, so
"sent" means the broker took it, and an ACL refusal (only operators may send) is an error
here, not a silent loss. The bridge stores each change as an ``alert_state`` point, which
``alert list`` reads back next to the ``alert`` points of the gateways.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.commands import command_group
from gateway.commands.influx_options import add_influx_options, check_ca, influx_login, login_problem
from gateway.commands.mqtt_options import add_mqtt_options, mqtt_settings
from gateway.protocol import topics as T

SEVERITY_ORDER = ("info", "warning", "critical")
COMMENT_WIDTH = 60  # the last column of the table; a longer comment is cut with "..."
NO_MATCHING_SUBSCRIBERS = 16  # MQTT v5 PUBACK reason 0x10: accepted, but no subscription matched


def register(subparsers) -> None:
    """Add `frugalsense alert ack|assign|comment|resolve|list`."""
    alerts = command_group(
        subparsers, "alert", help="act on alerts (ack, assign, comment, resolve) or list them", metavar="ACTION"
    )
    changes = {
        "ack": "acknowledge an alert: someone is on it (stops the notifier's repeats and escalation)",
        "assign": "assign an alert to a person or crew (--to)",
        "comment": "add a comment to an alert (--text)",
        "resolve": "resolve an alert: the problem is dealt with",
    }
    for action, help_text in changes.items():
        p = alerts.add_parser(
            action,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}. Publishes one alert command (QoS 1) on "
            "<prefix>/<site>/<gateway>/alert-commands and waits for the broker to take it; the broker's ACL "
            "lets only operator logins send there. Exit code 0 when the broker took it, 1 if nobody is "
            "subscribed to receive it, 2 on an error.",
        )
        p.add_argument("alert_id", metavar="ALERT_ID", help="the alert's id, as `frugalsense alert list` shows it")
        p.add_argument("--site", required=True, help="site of the gateway that raised the alert")
        p.add_argument("--gateway", required=True, help="gateway that raised the alert")
        p.add_argument("--by", default=None, metavar="NAME", help="who makes the change (default: $USER)")
        p.add_argument("--text", required=action == "comment", default=None, help="a comment, at most 500 characters")
        if action == "assign":
            p.add_argument("--to", required=True, dest="assignee", metavar="ASSIGNEE", help="person or crew")
        p.add_argument("--prefix", default=T.DEFAULT_PREFIX, help="MQTT topic prefix (default %(default)s)")
        p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds to wait for the broker")
        add_mqtt_options(p, client_id=f"frugalsense-alert-{os.getpid()}")
        p.set_defaults(func=run_change, action=action, assignee=None)  # --to sets it on assign

    p = alerts.add_parser(
        "list",
        help="list alerts and their lifecycle (acknowledged, assigned, comments, resolved) from InfluxDB",
        description="Read the alert and alert_state measurements from InfluxDB 1.x and print one line per alert: "
        "id, site, gateway, kind, severity, when it was raised and cleared, who acknowledged it, its assignee, "
        "when and by whom it was resolved, and the last comment. Times are UTC.",
    )
    p.add_argument("--site", default=None, help="only this site")
    p.add_argument("--open", action="store_true", help="only alerts neither cleared by the gateway nor resolved")
    add_influx_options(p, v2=False)  # the bridge's and the report's InfluxDB login and TLS options
    p.set_defaults(func=run_list)


# ---- sending a change -----------------------------------------------------------------------


def run_change(args: argparse.Namespace) -> int:
    """Publish one alert command and wait for the broker's PUBACK."""
    from gateway.cli import UserError
    from gateway.protocol.alert_commands import AlertCommand, AlertCommandError, command_topic, encode_command

    by = args.by or os.environ.get("USER") or _login_name()
    if not by:
        raise UserError("say who makes the change: --by NAME (no $USER here)")
    try:
        command = AlertCommand(
            args.site,
            args.gateway,
            args.alert_id,
            args.action,
            by,
            int(time.time() * 1000),
            text=args.text or None,
            assignee=args.assignee,
        )
    except AlertCommandError as exc:
        raise UserError(str(exc)) from None
    topic = command_topic(args.prefix, command.site, command.gateway)
    settings = mqtt_settings(args)
    reason = publish_once(settings, topic, encode_command(command), args.timeout)
    what = f"{command.action} of alert {command.alert_id} on {command.site}/{command.gateway} by {command.by}"
    if reason == NO_MATCHING_SUBSCRIBERS:
        print(
            f"frugalsense: the broker took the {what}, but nobody is subscribed to {topic}: it is not stored "
            "(is the bridge running, with its persistent session?)",
            file=sys.stderr,
        )
        return 1
    print(f"sent {what} ({topic})")
    return 0


def _login_name() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (a container)
        return None


def publish_once(settings, topic: str, payload: bytes, timeout_s: float) -> int:
    """Publish ``payload`` once at QoS 1; the PUBACK's reason code, or UserError saying what went wrong."""
    from gateway.cli import UserError
    from gateway.protocol.mqtt_client import make_client

    where = f"MQTT broker {settings.host}:{settings.port}"
    client = make_client(settings)
    answered = threading.Condition()
    got: dict[str, Any] = {}  # paho's ReasonCode of the CONNACK, the PUBACK, a disconnect

    def on_connect(c, userdata, flags, reason_code, properties=None):
        with answered:
            got["connack"] = reason_code
            answered.notify_all()

    def on_publish(c, userdata, mid, reason_code, properties=None):
        with answered:
            got["puback"] = reason_code
            answered.notify_all()

    def on_disconnect(c, userdata, flags, reason_code, properties=None):
        with answered:
            got.setdefault("gone", reason_code)
            answered.notify_all()

    client.on_connect, client.on_publish, client.on_disconnect = on_connect, on_publish, on_disconnect
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except OSError as exc:  # refused, unreachable, TLS handshake failed
        raise UserError(
            f"cannot reach the {where}: {exc.strerror or exc} (is it running? check --mqtt-host, --mqtt-port "
            "and, for TLS, --mqtt-ca-file)"
        ) from None
    client.loop_start()
    try:
        with answered:
            answered.wait_for(lambda: "connack" in got or "gone" in got, timeout_s)
        connack = got.get("connack")
        if connack is None and "gone" in got:
            raise UserError(
                f"the {where} hung up before answering the connection: a TLS port spoken to without "
                "--mqtt-ca-file, or a plain one with it?"
            )
        if connack is None:
            raise UserError(f"the {where} did not answer the connection within {timeout_s:.0f} s")
        if connack.is_failure:
            raise UserError(
                f"the {where} refused the login {settings.username or '(none)'}: {connack} "
                "(check --mqtt-username and --mqtt-password-file / --mqtt-password-env)"
            )
        client.publish(topic, payload, qos=1)
        with answered:
            answered.wait_for(lambda: "puback" in got or "gone" in got, timeout_s)
        puback = got.get("puback")
        if puback is None:
            raise UserError(f"the {where} did not acknowledge the command within {timeout_s:.0f} s: it may be lost")
        if puback.is_failure:
            raise UserError(
                f"the {where} refused the command on {topic}: {puback}. Only operator logins may send alert "
                f"commands: {settings.username or 'this client'} is not one (the broker ACL lists operators, "
                "docs/security.md)"
            )
        return int(puback.value)
    finally:
        client.disconnect()
        client.loop_stop()


# ---- listing alerts and their lifecycle ---------------------------------------------------------


@dataclass
class AlertLifecycle:
    """What is known about one alert: the gateway's raises and clears, the operators' changes."""

    site: str
    gateway: str
    alert_id: str
    kind: str = "?"
    severity: str = "?"
    raised_ms: int | None = None  # first raise
    last_raised_ms: int | None = None
    cleared_ms: int | None = None  # last clear after the last raise
    acked: tuple[str, int] | None = None  # (by, time)
    assignee: str | None = None
    resolved: tuple[str, int] | None = None
    comment: tuple[str, str] | None = None  # (text, by) of the last change that carried a text

    @property
    def open(self) -> bool:
        """Raised and neither cleared by its gateway nor resolved by an operator since."""
        if self.last_raised_ms is None:
            return self.resolved is None
        closed = max(self.cleared_ms or -1, self.resolved[1] if self.resolved else -1)
        return closed < self.last_raised_ms


def lifecycles(alert_rows: list[dict], state_rows: list[dict]) -> list[AlertLifecycle]:
    """One AlertLifecycle per (site, gateway, alert id), oldest raise first, from rows of the two measurements.

    >>> rows = [{"time": 1000, "site": "net3", "gateway": "gw-01", "alert_id": "leak-1", "kind": "leak",
    ...          "state": "raised", "severity": "warning"}]
    >>> changes = [{"time": 2000, "site": "net3", "gateway": "gw-01", "alert_id": "leak-1", "action": "ack",
    ...             "by": "m.dupont", "text": "crew on site"}]
    >>> (a,) = lifecycles(rows, changes)
    >>> a.kind, a.acked, a.comment, a.open
    ('leak', ('m.dupont', 2000), ('crew on site', 'm.dupont'), True)
    """
    found: dict[tuple[str, str, str], AlertLifecycle] = {}

    def of(row: dict) -> AlertLifecycle:
        key = (row["site"], row["gateway"], row["alert_id"])
        if key not in found:
            found[key] = AlertLifecycle(*key)
        return found[key]

    for row in sorted(alert_rows, key=lambda r: r["time"]):
        a = of(row)
        if row.get("state") == "raised":
            a.kind = row.get("kind") or a.kind
            if a.raised_ms is None:
                a.raised_ms = row["time"]
            a.last_raised_ms, a.cleared_ms = row["time"], None
            a.severity = max(a.severity, row.get("severity") or "?", key=_severity_rank)
        elif row.get("state") == "cleared":
            if a.kind == "?":
                a.kind = row.get("kind") or "?"
            a.cleared_ms = row["time"]
    for row in sorted(state_rows, key=lambda r: r["time"]):
        a = of(row)
        action, by = row.get("action"), row.get("by") or "?"
        if action == "ack":
            a.acked = (by, row["time"])
        elif action == "assign":
            a.assignee = row.get("assignee") or a.assignee
        elif action == "resolve":
            a.resolved = (by, row["time"])
        if row.get("text"):
            a.comment = (row["text"], by)
    return sorted(found.values(), key=lambda a: (a.raised_ms is None, a.raised_ms or 0, a.alert_id))


def _severity_rank(severity: str) -> int:
    return SEVERITY_ORDER.index(severity) if severity in SEVERITY_ORDER else -1


def _when(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def table(alerts: list[AlertLifecycle]) -> list[str]:
    """The lines `alert list` prints: a header, then one line per alert, the last comment last (cut if long).

    >>> a = AlertLifecycle("net3", "gw-01", "leak-1", "leak", "warning", 1772863200000, 1772863200000,
    ...                    acked=("m.dupont", 1772866800000), assignee="crew 2")
    >>> for line in table([a]):
    ...     print(line.rstrip())
    ALERT  SITE GATEWAY KIND SEVERITY RAISED           CLEARED ACKNOWLEDGED BY           ASSIGNEE RESOLVED COMMENT
    leak-1 net3 gw-01   leak warning  2026-03-07 06:00 -       m.dupont 2026-03-07 07:00 crew 2   -        -
    """
    header = (
        "ALERT",
        "SITE",
        "GATEWAY",
        "KIND",
        "SEVERITY",
        "RAISED",
        "CLEARED",
        "ACKNOWLEDGED BY",
        "ASSIGNEE",
        "RESOLVED",
        "COMMENT",
    )
    rows = [header]
    for a in alerts:
        comment = "-"
        if a.comment:
            text, by = " ".join(a.comment[0].split()), a.comment[1]  # one line per alert, whatever was typed
            text = text if len(text) <= COMMENT_WIDTH else text[: COMMENT_WIDTH - 3] + "..."
            comment = f'"{text}" ({by})'
        rows.append(
            (
                a.alert_id,
                a.site,
                a.gateway,
                a.kind,
                a.severity,
                _when(a.raised_ms),
                _when(a.cleared_ms),
                f"{a.acked[0]} {_when(a.acked[1])}" if a.acked else "-",
                a.assignee or "-",
                f"{a.resolved[0]} {_when(a.resolved[1])}" if a.resolved else "-",
                comment,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return [" ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + " " + row[-1] for row in rows]


def _rows(series: list[dict]) -> list[dict]:
    return [dict(zip(s["columns"], values, strict=True)) for s in series for values in s["values"]]


def run_list(args: argparse.Namespace) -> int:
    """Print every alert of the database (or of ``--site``) with its lifecycle."""
    from edge.contracts import ContractError, check_id
    from gateway.bridge.influx_points import ALERT, ALERT_STATE
    from gateway.bridge.influx_writer import InfluxV1Writer, WriteError
    from gateway.cli import UserError

    where = ""
    if args.site:
        try:
            where = f" WHERE site = '{check_id('site', args.site)}'"  # an id: no quote can reach the query
        except ContractError as exc:
            raise UserError(f"--site: {exc}") from None
    check_ca(args)
    user, password = influx_login(args)
    reader = InfluxV1Writer(args.influx_url, args.database, username=user, password=password, ca_file=args.influx_ca)
    try:
        raised = _rows(reader.query(f"SELECT * FROM {ALERT}{where}"))
        changes = _rows(reader.query(f"SELECT * FROM {ALERT_STATE}{where}"))
    except WriteError as exc:
        said = login_problem(args, exc) if exc.status in (401, 403) else None
        raise UserError(f"alert list: {said or exc} (check --influx-url and --database)") from None
    found = lifecycles(raised, changes)
    shown = [a for a in found if a.open] if args.open else found
    scope = f"site {args.site}" if args.site else f"database {args.database}"
    if not shown:
        print(f"no {'open ' if args.open else ''}alerts in {scope}")
        return 0
    for line in table(shown):
        print(line.rstrip())
    opened = sum(a.open for a in found)
    print(f"{len(shown)} alert(s) shown; {opened} of {len(found)} in {scope} open; times UTC")
    return 0
