"""The gateway's periodic status: what the runner says about itself every minute, to MQTT and to ``status.json``.

One message with the run's counters (publisher, outbox, detectors' checkpoints, silent
sensors), each source's counters and state, and the health of the process and its board
(gateway/device/health.py). The same body goes to ``<data_dir>/status.json`` for ``doctor``
(gateway/device/status_file.py), and through the outbox to the retained status topic.
``last_cost_s`` is what collecting the health took, for the benchmarks and the report.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.device.health import HealthProbe
from gateway.device.run_summary import RunSummary
from gateway.device.status_file import write_status

log = logging.getLogger(__name__)


class StatusReport:
    """Builds and sends one gateway's status; ``extra_counters`` are callables returning counters to add."""

    def __init__(self, data_dir, publisher: Any, extra_counters: list[Any]):
        self.data_dir = data_dir
        self.publisher = publisher
        self.extra_counters = extra_counters
        self.health = HealthProbe(data_dir)
        self.last_cost_s = 0.0

    def publish(self, summary: RunSummary, supervised: list[Any]) -> None:
        """Store the status message in the outbox and keep the same in ``status.json``."""
        counters = self.counters(summary)
        sources: dict[str, dict[str, int | float]] = {}
        states: dict[str, str] = {}
        for source in supervised:
            sources.update(source.counters())
            states[source.name] = source.state
        started = time.perf_counter()
        health = self.health.sample(counters)
        self.last_cost_s = time.perf_counter() - started
        body = {"time": int(time.time() * 1000), "counters": counters, "sources": sources}
        body |= {"source_states": states, "health": health}
        try:
            write_status(self.data_dir, body)
        except OSError as exc:  # the outbox says more if the disk is the problem; the status still goes out
            log.warning("cannot keep the last status for doctor: %s", exc)
        self.publisher.publish_status(counters, sources, source_states=states, health=health)

    def counters(self, summary: RunSummary) -> dict[str, int | float]:
        counters = {
            **self.publisher.counters_snapshot(),
            "readings_rejected": sum(summary.rejected.values()),
            "readings_resumed": summary.resumed,
            "detections": summary.detections,
            "alerts": summary.alerts,
            "outbox_errors": summary.outbox_errors,
        }
        for extra in self.extra_counters:
            counters.update(extra())
        return counters
