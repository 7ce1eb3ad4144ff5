"""The gateway service loop: sources -> detectors -> outbox -> MQTT, built from a gateway config.

Every reading is checked against its contract before anything else sees it; one
that fails is counted and logged and the loop goes on (a bad value never stops the
gateway and never reaches a detector). A source that raises is restarted with backoff,
a replay just after its last delivered reading (gateway/device/source_supervisor.py);
each source's counters go into the status message and ``status.json`` for ``doctor``.

The loop never waits for the broker: everything goes into the outbox
(``storage.data_dir``) and a sender thread publishes it when the broker is there.
With ``resume=True`` (what ``frugalsense run`` does), a replay restarted after a crash
goes on where the outbox left off: readings, detections and alerts at or before the
latest data time already stored on their stream are fed to the detectors (to rebuild
their state) but not published again. A detector restored from its checkpoint
(``gateway/device/checkpoints.py``) skips the readings that checkpoint already holds.

A Reading a detector derives (a calibration's virtual sensor) is published as a reading
of its sensor and, through the checkpoint store in the same step, fed to every other
detector: a calibration_drift or an eaqi may watch the calibrated sensor. One level only
(see checkpoints.py); a detector's ``flush()`` at the end of the sources feeds nothing.

Sensors that stop sending raise ``sensor_silent`` alerts (gateway/device/silent_sensors.py), judged
at every reading and every tick on the gateway's clock (gateway/device/gateway_clock.py: the wall
clock for live sources, the data's for a replay; a test injects its own). The status message, with
each source's state and the gateway's health, is gateway/device/status_report.py's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from itertools import chain

from edge.contracts import Alert, ContractError, Detection, Reading
from edge.detectors import Detector
from edge.sources.cell_counts import CellCountSource
from edge.sources.modbus_source import sources_from_config as modbus_sources
from edge.sources.replay import ReplaySource
from edge.sources.serial_source import SerialSource
from gateway.config import GatewayConfig
from gateway.config.detectors import build_detectors as config_detectors
from gateway.config.schema import (
    CellCountSensor,
    LineSensor,
    ModbusRtuSensor,
    Pms5003Sensor,
    ReplaySensor,
    Sds011Sensor,
)
from gateway.device import ha_discovery
from gateway.device.checkpoints import CheckpointStore
from gateway.device.gateway_clock import GatewayClock, ReplayPacer, StreamClock, WallClock
from gateway.device.outbox import SYNC_FULL, Mark, Outbox, OutboxError, outbox_path
from gateway.device.publisher import GatewayPublisher
from gateway.device.run_summary import RunSummary
from gateway.device.silent_sensors import FILE_NAME as SILENT_FILE
from gateway.device.silent_sensors import SilentSensors, watched_from_config
from gateway.device.source_merge import merge_sources
from gateway.device.source_supervisor import Backoff, SupervisedSource
from gateway.device.status_report import StatusReport
from gateway.model_updates import listener as model_updates
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import settings_from_config

log = logging.getLogger(__name__)

STATUS_EVERY_S = 60.0
TICK_S = 0.2  # how often the loop flushes old batches, sends status and looks at the stop flag
DRAIN_TIMEOUT_S = 30.0  # at the end, how long to wait for the outbox to empty
STOP_DRAIN_S = 5.0  # when asked to stop: the outbox keeps the rest, no need to linger
DEFAULT_MAX_AGE_DAYS = 30
LOGGED_ERRORS = 10


def build_sources(config: GatewayConfig) -> list[Iterable[Reading]]:
    """The configured sources, unpaced (the runner paces replays to ``sources.replay.speed``)."""
    replayed = [s for s in config.sensors if isinstance(s, ReplaySensor)]
    sources: list[Iterable[Reading]] = []
    if replayed:
        replay = config.sources.replay
        if replay is None:  # the config's cross-checks refuse this; say so if a caller built one by hand
            raise ValueError("replay sensors need a sources.replay section naming the file")
        sources.append(
            ReplaySource(
                config.resolve_path(replay.file),
                config.site,
                config.gateway,
                [(s.id, s.column or s.id, s.quantity) for s in replayed],
                speed=0,
            )
        )
    # Cell-count files before the serial sensors: a live serial source never ends.
    cells = [s.model_dump() for s in config.sensors if isinstance(s, CellCountSensor)]
    sources += CellCountSource.from_config_entries(
        config.site, config.gateway, cells, resolve=config.resolve_path, timezone=config.timezone
    )
    # Modbus RTU transmitters: one polling source per serial port (edge/sources/modbus_source.py).
    sources += modbus_sources(
        config.site, config.gateway, [s for s in config.sensors if isinstance(s, ModbusRtuSensor)]
    )
    serial = [s.model_dump() for s in config.sensors if isinstance(s, Sds011Sensor | Pms5003Sensor | LineSensor)]
    if serial:
        sources.append(SerialSource.from_config_entries(config.site, config.gateway, serial))
    return sources


def build_detectors(config: GatewayConfig) -> list[Detector]:
    """One detector per model of the config, built as ``config validate`` builds them (``ConfigError`` if one fails)."""
    return config_detectors(config)


def open_outbox(config: GatewayConfig, *, sync: str = SYNC_FULL) -> Outbox:
    """The gateway's outbox in ``storage.data_dir``, bounded as the config says."""
    storage = config.storage
    max_age_days = getattr(storage, "outbox_max_age_days", DEFAULT_MAX_AGE_DAYS)
    return Outbox(
        outbox_path(config.resolve_path(storage.data_dir)),
        max_bytes=storage.outbox_max_mb * 1024 * 1024,
        max_age_s=max_age_days * 86_400,
        sync=sync,
    )


class _Resume:
    """Says which items a previous run already stored, from the outbox's per-stream marks.

    An item is already stored if it is older than its stream's mark, or one of the first
    ``count`` items at exactly the mark's time (a replay is deterministic, so they come
    in the same order). Each item must be asked about once, in stream order.
    """

    def __init__(self, marks: dict[str, Mark]):
        self.marks = marks
        self._seen_at_mark: Counter = Counter()

    def stored(self, stream: str, time_ms: int) -> bool:
        mark = self.marks.get(stream)
        if mark is None or time_ms > mark.time_ms:
            return False
        if time_ms < mark.time_ms:
            return True
        self._seen_at_mark[stream] += 1
        return self._seen_at_mark[stream] <= mark.count

    def already_asked(self, stream: str, count: int) -> None:
        """``count`` items at ``stream``'s mark time will not be asked about: a restored detector made them."""
        self._seen_at_mark[stream] += count


class GatewayRunner:
    """The gateway service's loop: sources -> detectors -> publisher (through the outbox), with status."""

    def __init__(
        self,
        config: GatewayConfig,
        publisher: GatewayPublisher,
        sources: list[Iterable[Reading]],
        detectors: list[Detector],
        *,
        resume: bool = False,
        speed: float = 0.0,
        source_backoff: Backoff | None = None,
        clock: GatewayClock | None = None,
    ):
        self.config = config
        self.publisher = publisher
        self.sources = sources
        self.detectors = detectors
        # Detector state on disk (gateway/device/checkpoints.py); every reading reaches the detectors through it.
        self.checkpoints = CheckpointStore.from_config(config, detectors, publisher.topics)
        self.resume = resume
        self.speed = speed
        self.source_backoff = source_backoff or Backoff()
        # Silent sensors (gateway/device/silent_sensors.py), judged on the gateway's clock: the wall clock for
        # live sources, the data's for a replay (chosen in run(), when the sources are final), or the one given.
        self.clock: GatewayClock = clock or WallClock()
        self._clock_given = clock is not None
        data_dir = config.resolve_path(config.storage.data_dir)
        self.silence = SilentSensors(config.site, config.gateway, watched_from_config(config), data_dir / SILENT_FILE)
        self._watching = bool(self.silence.watched)
        extra = [self.checkpoints.counters] + ([self.silence.counters] if self._watching else [])
        self.status = StatusReport(data_dir, publisher, extra)
        self.supervised: list[SupervisedSource] = []  # the sources as run() restarts them, with their counters
        self._stop: threading.Event = threading.Event()
        # Held while feeding detectors (a model update waits for it); re-entrant: held across the start below.
        self.detectors_lock = threading.RLock()
        self._next_tick = 0.0
        self._next_status = 0.0
        self._on_output: Callable[[Detection | Alert], None] | None = None
        self._resume = _Resume({})

    @classmethod
    def from_config(
        cls,
        config: GatewayConfig,
        *,
        mqtt_host: str | None = None,
        mqtt_port: int | None = None,
        resume: bool = False,
        outbox_sync: str = SYNC_FULL,
        clock: GatewayClock | None = None,
    ) -> GatewayRunner:
        """Build the runner; this opens (and locks) the outbox, which ``run()`` closes at its end."""
        topics = T.Topics(config.mqtt.topic_prefix, config.site, config.gateway)
        settings = settings_from_config(config, host=mqtt_host, port=mqtt_port)
        sources, detectors = build_sources(config), build_detectors(config)
        publisher = GatewayPublisher(
            topics, settings, readings_batch=config.mqtt.readings_batch, outbox=open_outbox(config, sync=outbox_sync)
        )
        speed = config.sources.replay.speed if config.sources.replay else 0.0
        return cls(config, publisher, sources, detectors, resume=resume, speed=speed, clock=clock)

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        on_reading: Callable[[Reading], None] | None = None,
        on_output: Callable[[Detection | Alert], None] | None = None,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
    ) -> RunSummary:
        """Stream every source to its end (or until ``stop``), then wait up to ``drain_timeout_s`` for delivery.

        ``on_reading`` sees every reading of the sources, ``on_output`` every detection and alert this run
        publishes (the summary only counts them); a Reading a detector derives (a calibration's) is published
        on its sensor's readings topic, counted with the readings and fed to the other detectors.

        Never waits for the broker to start: with the broker down the outbox fills.
        """
        summary = RunSummary()
        self._on_output = on_output
        self._stop = stop if stop is not None else threading.Event()
        resume = self._resume = _Resume(self.publisher.outbox.marks() if self.resume else {})
        if not self._clock_given and any(isinstance(s, ReplaySource) for s in self.sources):
            self.clock = StreamClock(self.speed)
        if self.publisher.outbox.replayed:
            log.info("outbox: %d messages from a previous run are sent first", self.publisher.outbox.replayed)
        ha_discovery.announce_on_connect(self.publisher, self.config)  # Home Assistant discovery, if enabled
        pacer = ReplayPacer(self.speed, idle=lambda: self._tick(summary), tick_s=TICK_S)
        self._next_status = time.monotonic() + STATUS_EVERY_S
        updates = None
        try:
            self.publisher.start()  # in the try: if it fails, close() still releases the outbox
            # Signed model updates over MQTT, if the config enables them (docs/model-updates.md). Holding the
            # lock, so that an update arriving now is handed over only after the checkpoints are restored, and
            # those are read once the installed updates are in service (a checkpoint saved with v2 is v2's).
            with self.detectors_lock:
                updates = model_updates.start_for_config(
                    self.config, self.publisher.settings, self.detectors, lock=self.detectors_lock
                )
                self.checkpoints.begin(resume if self.resume else None)  # a resumed run restores matching ones
                self.silence.begin(self.resume, follows_data=self.clock.follows_data)
            for reading in self._readings(summary):
                if reading is None:  # every source is quiet: periodic work still gets done
                    self._tick(summary)
                    continue
                fresh = not resume.marks or not resume.stored(
                    self.publisher.topics.readings(reading.sensor), reading.time_ms
                )
                if fresh:
                    pacer.wait_for(reading.time_ms)
                if self._stop.is_set():
                    break
                self._handle(reading, summary, fresh, resume)
                if on_reading is not None:
                    on_reading(reading)
                if time.monotonic() >= self._next_tick:
                    self._tick(summary)
            self.checkpoints.save()  # a clean stop, before flush decides a window the sources may still fill
            self.silence.save(self.clock.now_ms())
            if not self._stop.is_set():
                self._flush_detectors(summary, resume)  # the sources ended: decide their last window
            self.publisher.flush()
            self._store(summary, lambda: self._publish_status(summary))
        finally:
            if updates is not None:
                updates.stop()
            timeout = min(drain_timeout_s, STOP_DRAIN_S) if self._stop.is_set() else drain_timeout_s
            summary.all_acknowledged = self.publisher.close(timeout)
            summary.outbox_left = len(self.publisher.outbox)
        for source in self.supervised:
            if source.failures:
                summary.source_failures[source.name] = summary.source_failures.get(source.name, 0) + source.failures
        if summary.resumed:
            log.info("resumed: %d readings were already stored by a previous run", summary.resumed)
        return summary

    def _readings(self, summary: RunSummary):
        """A replay alone is read in this thread; live sources (and several sources) a thread each.

        Through merge_sources the loop also gets an idle tick while a live sensor is quiet,
        so a batch is never held longer than its delay (a 1/min node would otherwise wait a minute).
        """
        self.supervised = [SupervisedSource(s, backoff=self.source_backoff, stop=self._stop) for s in self.sources]
        if len(self.sources) == 1 and isinstance(self.sources[0], ReplaySource):
            return chain.from_iterable(self.supervised[0].batches())
        return merge_sources(self.supervised, self._stop, idle_s=TICK_S, failures=summary.source_failures)

    def _flush_detectors(self, summary: RunSummary, resume: _Resume) -> None:
        with self.detectors_lock:
            outputs = [o for detector in self.detectors for o in detector.flush()]
        self._publish_outputs(outputs, summary, resume)

    def _tick(self, summary: RunSummary) -> bool:
        """Periodic work; True if the loop should stop."""
        now = time.monotonic()
        self._next_tick = now + TICK_S
        self._store(summary, self.publisher.flush_due)
        if self._watching:  # the clock moves without readings: a sensor may have gone silent
            self._publish_silences(self.silence.tick(self.clock.now_ms(), self.clock.steady_ms()), summary)
        if now >= self._next_status:
            self._next_status = now + STATUS_EVERY_S
            self._store(summary, lambda: self._publish_status(summary))
        return self._stop.is_set()

    def _handle(self, reading: Reading, summary: RunSummary, fresh: bool, resume: _Resume) -> None:
        try:
            reading.validate()
        except ContractError as exc:
            summary.rejected[reading.sensor] += 1
            if summary.rejected[reading.sensor] <= LOGGED_ERRORS:
                log.warning("rejected a reading: %s", exc)
            return
        if fresh:
            summary.readings += 1
            try:  # _store, inlined: this runs for every reading
                self.publisher.add_reading(reading)
            except OutboxError as exc:
                self._outbox_error(summary, exc)
        else:
            summary.resumed += 1
        silences: list[Alert] = []
        if self._watching:
            self.clock.saw(reading.time_ms)
            silences = self.silence.update(reading, self.clock.now_ms(), self.clock.steady_ms())
        with self.detectors_lock:  # a model update's hand-over waits for the reading in progress
            # each detector's outputs, skipping what its restored checkpoint already holds; then those of the
            # other detectors fed a derived Reading (their outputs come after the Reading's: stream order)
            batches = list(self.checkpoints.update(reading))
        for outputs in batches:
            if outputs:
                self._publish_outputs(outputs, summary, resume)
        if silences:
            self._publish_silences(silences, summary)

    def _publish_silences(self, alerts: list[Alert], summary: RunSummary) -> None:
        """Silent-sensor alerts, then their state on disk (after the outbox: a crash between repeats, never loses)."""
        if alerts:
            self._publish_outputs(alerts, summary, self._resume)
            self.silence.save(self.clock.now_ms())

    def _publish_outputs(self, outputs, summary: RunSummary, resume: _Resume) -> None:
        topics = self.publisher.topics
        for out in outputs:
            if isinstance(out, Reading):  # a model's derived reading (a calibration): published as a reading
                if not resume.stored(topics.readings(out.sensor), out.time_ms):
                    summary.readings += 1
                    self._store(summary, partial(self.publisher.add_reading, out))
                continue
            if isinstance(out, Alert):
                if resume.stored(topics.alerts, out.time_ms):
                    continue
                summary.count(out)
                self._store(summary, partial(self.publisher.publish_alert, out))
                log.info("alert %s %s: %s", out.alert_id, out.state, out.message)
            else:
                if resume.stored(topics.detections(out.kind), out.time_ms):
                    continue
                summary.count(out)
                self._store(summary, partial(self.publisher.publish_detection, out))
            if self._on_output is not None:
                self._on_output(out)

    def _store(self, summary: RunSummary, action: Callable[[], None]) -> None:
        # A full disk must not stop the detectors: count, log the first few, go on.
        try:
            action()
        except OutboxError as exc:
            self._outbox_error(summary, exc)

    @staticmethod
    def _outbox_error(summary: RunSummary, exc: OutboxError) -> None:
        summary.outbox_errors += 1
        if summary.outbox_errors <= LOGGED_ERRORS:
            log.error("%s", exc)

    def _publish_status(self, summary: RunSummary) -> None:
        """The status message (gateway/device/status_report.py); the silent sensors' state is saved with it."""
        self.status.publish(summary, self.supervised)
        if self._watching:
            self.silence.save(self.clock.now_ms())
