"""The gateway service loop: sources -> detectors -> publisher, built from a gateway config.

Every reading is checked against its contract before anything else sees it; one
that fails is counted and logged and the loop goes on (a bad value never stops the
gateway and never reaches a detector).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from edge.contracts import Alert, ContractError, Detection, Reading
from edge.detectors.night_flow import MinimumNightFlowDetector
from edge.sources.replay import ReplaySource
from gateway import topics as T
from gateway.config import GatewayConfig
from gateway.publisher import GatewayPublisher, MqttSettings

log = logging.getLogger(__name__)

STATUS_EVERY_S = 60.0
TICK_EVERY_READINGS = 256  # how often the loop checks batch age and the stop flag


@dataclass
class RunSummary:
    readings: int = 0
    detections: list[Detection] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    all_acknowledged: bool = False


def build_sources(config: GatewayConfig) -> list[Iterable[Reading]]:
    replayed = [s for s in config.sensors if s.driver == "replay"]
    sources: list[Iterable[Reading]] = []
    if replayed:
        replay = config.sources.replay
        sources.append(ReplaySource(config.resolve_path(replay.file), config.site, config.gateway,
                                    [(s.id, s.column, s.quantity) for s in replayed], speed=replay.speed))
    return sources


# model type in the config -> detector factory. Each new detector type registers here.
DETECTOR_FACTORIES: dict[str, Callable] = {
    "mnf": lambda config, m: MinimumNightFlowDetector(config.site, config.gateway, model=m.name,
                                                      **m.detector_params(config.timezone)),
}


def build_detectors(config: GatewayConfig) -> list:
    return [DETECTOR_FACTORIES[m.type](config, m) for m in config.models]


def mqtt_settings(config: GatewayConfig, *, host: str | None = None, port: int | None = None) -> MqttSettings:
    m = config.mqtt
    password = None
    if m.password_env:
        password = os.environ.get(m.password_env)
        if password is None:
            raise RuntimeError(f"mqtt.password_env: environment variable {m.password_env} is not set")
    elif m.password_file:
        password = config.resolve_path(m.password_file).read_text().strip()
    tls = m.tls
    return MqttSettings(
        host=host or m.host,
        port=port or m.port,
        client_id=m.client_id,
        keepalive_s=m.keepalive_s,
        username=m.username,
        password=password,
        ca_file=str(config.resolve_path(tls.ca_file)) if tls and tls.ca_file else None,
        cert_file=str(config.resolve_path(tls.cert_file)) if tls and tls.cert_file else None,
        key_file=str(config.resolve_path(tls.key_file)) if tls and tls.key_file else None,
    )


class GatewayRunner:
    def __init__(self, config: GatewayConfig, publisher: GatewayPublisher,
                 sources: list[Iterable[Reading]], detectors: list):
        self.config = config
        self.publisher = publisher
        self.sources = sources
        self.detectors = detectors

    @classmethod
    def from_config(cls, config: GatewayConfig, *, mqtt_host: str | None = None,
                    mqtt_port: int | None = None) -> "GatewayRunner":
        topics = T.Topics(config.mqtt.topic_prefix, config.site, config.gateway)
        publisher = GatewayPublisher(topics, mqtt_settings(config, host=mqtt_host, port=mqtt_port),
                                     readings_batch=config.mqtt.readings_batch)
        return cls(config, publisher, build_sources(config), build_detectors(config))

    def run(self, *, stop: threading.Event | None = None,
            on_reading: Callable[[Reading], None] | None = None) -> RunSummary:
        """Connect, stream every source to its end (or until ``stop``), then flush and disconnect."""
        summary = RunSummary()
        self.publisher.connect()
        last_status = time.monotonic()
        try:
            for source in self.sources:
                for n, reading in enumerate(source, 1):
                    self._handle(reading, summary)
                    if on_reading is not None:
                        on_reading(reading)
                    if n % TICK_EVERY_READINGS == 0:
                        self.publisher.flush_due()
                        if stop is not None and stop.is_set():
                            break
                        if time.monotonic() - last_status >= STATUS_EVERY_S:
                            self.publisher.publish_status(self._counters(summary))
                            last_status = time.monotonic()
            self.publisher.publish_status(self._counters(summary))
        finally:
            summary.all_acknowledged = self.publisher.close()
        return summary

    def _handle(self, reading: Reading, summary: RunSummary) -> None:
        try:
            reading.validate()
        except ContractError as exc:
            summary.rejected[reading.sensor] += 1
            if summary.rejected[reading.sensor] <= 10:
                log.warning("rejected a reading: %s", exc)
            return
        summary.readings += 1
        self.publisher.add_reading(reading)
        for detector in self.detectors:
            for out in detector.update(reading):
                if isinstance(out, Alert):
                    summary.alerts.append(out)
                    self.publisher.publish_alert(out)
                    log.info("alert %s %s: %s", out.alert_id, out.state, out.message)
                else:
                    summary.detections.append(out)
                    self.publisher.publish_detection(out)

    def _counters(self, summary: RunSummary) -> dict[str, int]:
        return {**self.publisher.counters_snapshot(), "readings_rejected": sum(summary.rejected.values()),
                "detections": len(summary.detections), "alerts": len(summary.alerts)}
