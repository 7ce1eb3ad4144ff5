"""What operators do with an alert: acknowledge, assign, comment, resolve; one message per change, over MQTT.

    <prefix>/<site>/<gateway>/alert-commands     QoS 1, not retained: one change to one alert

A change is sent by ``frugalsense alert ack|assign|comment|resolve`` (or any operator
tool the broker's ACL lets publish there). The topic sits under the gateway's prefix,
which the gateway may otherwise write: the ACL's ``pattern deny <prefix>/%u/alert-commands``
takes it back from the gateway (Mosquitto applies deny lines before grants; checked
against the real broker in tests/test_security.py), only operators write it, and the
bridge and the notifier read it (gateway/security/broker.py). The notifier stops
repeating and escalating an acknowledged or resolved alert; the bridge stores every
change as an ``alert_state`` point. The payload is JSON:

    {"v": 1, "alert_id": "leak-20260310T1330", "action": "ack", "by": "m.dupont",
     "time_ms": 1773149400000, "text": "crew on site", "assignee": null}

>>> c = AlertCommand("net3", "gw-01", "leak-20260310T1330", "ack", "m.dupont", 1_773_149_400_000, text="crew on site")
>>> command_topic("frugalsense", "net3", "gw-01")
'frugalsense/net3/gw-01/alert-commands'
>>> decode_command("frugalsense", command_topic("frugalsense", "net3", "gw-01"), encode_command(c)) == c
True
>>> decode_command("frugalsense", "frugalsense/net3/gw-01/alert-commands", b'{"v": 1, "action": "close"}')
... # doctest: +ELLIPSIS
Traceback (most recent call last):
...
gateway.protocol.alert_commands.AlertCommandError: alert command: action must be one of ack, ...
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edge.contracts import ContractError, check_id
from gateway.protocol import topics as T

CHANNEL = T.ALERT_COMMANDS
QOS = T.QOS[CHANNEL][0]
VERSION = 1
ACTIONS = ("ack", "assign", "comment", "resolve")
MAX_TEXT = 500  # a comment, as an alert's message: a person's sentence, not a log


class AlertCommandError(ValueError):
    """A command message that is not one (the receiver counts and logs it, never acts on it)."""


@dataclass(frozen=True, slots=True)
class AlertCommand:
    """One operator's change to one alert of one gateway."""

    site: str
    gateway: str
    alert_id: str
    action: str
    by: str
    time_ms: int
    text: str | None = None
    assignee: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise AlertCommandError(f"alert command: action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        try:
            check_id("site", self.site)
            check_id("gateway", self.gateway)
            check_id("alert id", self.alert_id)
        except ContractError as exc:
            raise AlertCommandError(f"alert command: {exc}") from None
        if not isinstance(self.by, str) or not self.by.strip() or len(self.by) > 100:
            raise AlertCommandError("alert command: 'by' must name who made the change (1-100 characters)")
        if isinstance(self.time_ms, bool) or not isinstance(self.time_ms, int) or self.time_ms < 0:
            raise AlertCommandError(f"alert command: time_ms must be a whole number of ms, got {self.time_ms!r}")
        for name, value in (("text", self.text), ("assignee", self.assignee)):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
                raise AlertCommandError(f"alert command: {name} must be text of at most {MAX_TEXT} characters")
        if self.action == "assign" and not self.assignee:
            raise AlertCommandError("alert command: assign needs an assignee")
        if self.action == "comment" and not self.text:
            raise AlertCommandError("alert command: comment needs a text")


def command_topic(prefix: str, site: str, gateway: str) -> str:
    """Where the changes to a gateway's alerts go."""
    return f"{prefix}/{site}/{gateway}/{CHANNEL}"


def command_subscription(prefix: str) -> str:
    """Every gateway's alert commands (what the notifier and the bridge subscribe to)."""
    return f"{prefix}/+/+/{CHANNEL}"


def encode_command(c: AlertCommand) -> bytes:
    """The JSON payload of a command."""
    body = {"v": VERSION, "alert_id": c.alert_id, "action": c.action, "by": c.by, "time_ms": c.time_ms}
    body |= {"text": c.text, "assignee": c.assignee}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_command(prefix: str, topic: str, payload: bytes) -> AlertCommand:
    """The command of a message on ``<prefix>/<site>/<gateway>/alert-commands``; AlertCommandError otherwise."""
    levels = topic.split("/")
    if len(levels) != 4 or levels[0] != prefix or levels[3] != CHANNEL:
        raise AlertCommandError(f"alert command: topic {topic!r} is not <prefix>/<site>/<gateway>/{CHANNEL}")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AlertCommandError(f"alert command: not JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise AlertCommandError(f"alert command: expected a JSON object with v={VERSION}")
    return command_from_body(levels[1], levels[2], body)


def command_from_body(site: str, gateway: str, body: dict) -> AlertCommand:
    """The command a decoded JSON object of version 1 holds, for the gateway of its topic.

    The bridge's decoder (gateway/protocol/payloads.py) parses the JSON and checks ``v``
    as it does for every payload, then calls this.

    >>> command_from_body("net3", "gw-01", {"v": 1, "alert_id": "a-1", "action": "resolve", "time_ms": 0})
    Traceback (most recent call last):
    ...
    gateway.protocol.alert_commands.AlertCommandError: alert command: missing field 'by'
    """
    if body.get("action") not in ACTIONS:
        raise AlertCommandError(
            f"alert command: action must be one of {', '.join(ACTIONS)}, got {body.get('action')!r}"
        )
    try:
        return AlertCommand(
            site,
            gateway,
            body["alert_id"],
            body["action"],
            body["by"],
            body["time_ms"],
            body.get("text"),
            body.get("assignee"),
        )
    except KeyError as exc:
        raise AlertCommandError(f"alert command: missing field {exc.args[0]!r}") from None
    except TypeError as exc:
        raise AlertCommandError(f"alert command: {exc}") from None


__all__ = [
    "ACTIONS",
    "CHANNEL",
    "AlertCommand",
    "AlertCommandError",
    "command_from_body",
    "command_subscription",
    "command_topic",
    "decode_command",
    "encode_command",
]
