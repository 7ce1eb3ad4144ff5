"""The MQTT topic tree: how topics are built, parsed, and which QoS/retain each uses.

    <prefix>/<site>/<gateway>/status              QoS 1, retained: online / offline (will)
    <prefix>/<site>/<gateway>/readings/<sensor>   QoS 1: a batch of readings of one sensor
    <prefix>/<site>/<gateway>/detections/<kind>   QoS 1: one detector decision
    <prefix>/<site>/<gateway>/alerts              QoS 1: an alert raised or cleared
    <prefix>/<site>/<gateway>/alert-commands      QoS 1: an operator's change to one of its alerts (not the gateway's)
    <prefix>/deadletter                           QoS 1: what the bridge could not use, with the reason

>>> t = Topics("frugalsense", "net3", "gw-01")
>>> t.readings("P-15")
'frugalsense/net3/gw-01/readings/P-15'
>>> parse_topic("frugalsense", "frugalsense/net3/gw-01/detections/leak")
TopicParts(site='net3', gateway='gw-01', channel='detections', name='leak')
>>> parse_topic("frugalsense", "frugalsense/net3/gw-01/readings")
Traceback (most recent call last):
...
gateway.protocol.topics.TopicError: topic 'frugalsense/net3/gw-01/readings' is not in the frugalsense topic tree
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.contracts import ContractError, check_id

DEFAULT_PREFIX = "frugalsense"

STATUS = "status"
READINGS = "readings"
DETECTIONS = "detections"
ALERTS = "alerts"
# Under the gateway's prefix, yet written by operators only: the broker ACL denies it to the
# gateway itself (gateway/security/broker.py); gateway/protocol/alert_commands.py is its codec.
ALERT_COMMANDS = "alert-commands"
DEADLETTER = "deadletter"

# channel -> (qos, retained)
QOS = {
    STATUS: (1, True),
    READINGS: (1, False),
    DETECTIONS: (1, False),
    ALERTS: (1, False),
    ALERT_COMMANDS: (1, False),
    DEADLETTER: (1, False),
}

# Channels that carry a last level naming the sensor or detection kind.
_NAMED = {READINGS, DETECTIONS}


class TopicError(ValueError):
    """A topic that is not part of the documented tree."""


@dataclass(frozen=True, slots=True)
class TopicParts:
    """The levels of a parsed topic; ``name`` is the sensor or detection kind, None on the other channels."""

    site: str
    gateway: str
    channel: str
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names for one gateway."""

    prefix: str
    site: str
    gateway: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def status(self) -> str:
        return f"{self.base}/{STATUS}"

    def readings(self, sensor: str) -> str:
        return f"{self.base}/{READINGS}/{sensor}"

    def detections(self, kind: str) -> str:
        return f"{self.base}/{DETECTIONS}/{kind}"

    @property
    def alerts(self) -> str:
        return f"{self.base}/{ALERTS}"

    @property
    def alert_commands(self) -> str:
        return f"{self.base}/{ALERT_COMMANDS}"


def deadletter_topic(prefix: str) -> str:
    """Where the bridge puts messages it cannot use."""
    return f"{prefix}/{DEADLETTER}"


def bridge_subscriptions(prefix: str) -> tuple[str, ...]:
    """What the bridge subscribes to: the five channels it writes to InfluxDB, nothing else.

    Not ``<prefix>/+/+/#``: other channels under a gateway (signed model updates and
    their status) are not data for the database, and the bridge must not dead-letter
    them; nor does it see its own ``<prefix>/deadletter``.

    >>> bridge_subscriptions("frugalsense")
    ... # doctest: +NORMALIZE_WHITESPACE
    ('frugalsense/+/+/status', 'frugalsense/+/+/readings/+', 'frugalsense/+/+/detections/+',
     'frugalsense/+/+/alerts', 'frugalsense/+/+/alert-commands')
    """
    return (
        f"{prefix}/+/+/{STATUS}",
        f"{prefix}/+/+/{READINGS}/+",
        f"{prefix}/+/+/{DETECTIONS}/+",
        f"{prefix}/+/+/{ALERTS}",
        f"{prefix}/+/+/{ALERT_COMMANDS}",
    )


def parse_topic(prefix: str, topic: str) -> TopicParts:
    """The site, gateway, channel and name of a topic in the tree; TopicError for anything else."""
    levels = topic.split("/")
    if levels[0] != prefix or len(levels) < 4:
        raise TopicError(f"topic {topic!r} is not in the {prefix} topic tree")
    _, site, gateway, channel, *rest = levels
    if channel in _NAMED:
        if len(rest) != 1:
            raise TopicError(f"topic {topic!r} is not in the {prefix} topic tree")
        name = rest[0]
    elif channel in (STATUS, ALERTS, ALERT_COMMANDS) and not rest:
        name = None
    else:
        raise TopicError(f"topic {topic!r} is not in the {prefix} topic tree")
    try:
        check_id("site", site)
        check_id("gateway", gateway)
        if name is not None:
            check_id("sensor" if channel == READINGS else "detection kind", name)
    except ContractError as exc:
        raise TopicError(f"topic {topic!r}: {exc}") from None
    return TopicParts(site, gateway, channel, name)
