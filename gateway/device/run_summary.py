"""What one ``frugalsense run`` did, in counts: the summary ``GatewayRunner.run`` returns.

Counts, not objects: a gateway that runs for months holds the same few bytes on its
last day as on its first (docs/soak.md measured it). Whoever needs the detections and
alerts themselves passes ``on_output`` to ``GatewayRunner.run``.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from edge.contracts import Alert, Detection

RECENT_ALERTS = 20  # the summary remembers this many alert changes for the CLI to print


class AlertNote(NamedTuple):
    """One alert change as the summary remembers it (not the Alert: a run of months would keep them all)."""

    alert_id: str
    state: str
    time_ms: int


@dataclass
class RunSummary:
    """What one run did, in counts: readings published, detections and alerts made, what was rejected or left.

    Counts, not objects, so a gateway that runs for months holds the same few bytes on its
    last day as on its first (docs/soak.md). Whoever needs the objects passes ``on_output``
    to ``GatewayRunner.run``.

    >>> from edge.contracts import AlertState, Severity
    >>> s = RunSummary()
    >>> s.count(Alert(1_772_409_600_000, "net3", "gw-01", "leak", "leak-1", AlertState.RAISED, "leak",
    ...               Severity.WARNING, 0.4, "night flow up", "mnf", "1", 1_772_409_600_000))
    >>> s.alerts, s.alert_counts, list(s.recent_alerts)
    (1, Counter({('leak', 'raised'): 1}), [AlertNote(alert_id='leak-1', state='raised', time_ms=1772409600000)])
    """

    readings: int = 0  # readings published by this run
    detection_counts: Counter = field(default_factory=Counter)  # (kind, label) -> detections published
    alert_counts: Counter = field(default_factory=Counter)  # (kind, state) -> alerts published
    recent_alerts: deque = field(default_factory=lambda: deque(maxlen=RECENT_ALERTS))  # the last AlertNotes
    rejected: Counter = field(default_factory=Counter)
    all_acknowledged: bool = False  # the outbox was empty at the end
    resumed: int = 0  # readings a previous run had already stored (resume): detectors saw them, MQTT did not
    outbox_left: int = 0  # messages still in the outbox at the end; they go at the next start
    outbox_errors: int = 0  # messages the outbox could not store (disk full, I/O error)
    source_failures: dict[str, int] = field(default_factory=dict)  # sources that raised (the others went on)

    @property
    def detections(self) -> int:
        """Detections published by this run."""
        return self.detection_counts.total()

    @property
    def alerts(self) -> int:
        """Alert changes (raised and cleared) published by this run."""
        return self.alert_counts.total()

    def count(self, out: Detection | Alert) -> None:
        """Count one published detection or alert."""
        if isinstance(out, Alert):
            self.alert_counts[(out.kind, str(out.state))] += 1
            self.recent_alerts.append(AlertNote(out.alert_id, str(out.state), out.time_ms))
        else:
            self.detection_counts[(out.kind, out.label)] += 1
