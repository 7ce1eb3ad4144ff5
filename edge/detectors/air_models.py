"""Air-site model detectors: the hourly pattern label, sensor-fault flags and the NO2 virtual sensor.

Each detector keeps the last 24 h of its sensors as 10-minute slot means, and at every
full UTC hour (data time) computes one window of features with
``edge.features.air_features`` (the code the models were trained with), runs its
exported model through ``edge.runtime`` (verified files, the backend chosen by
measurement unless the config names one) and returns Detections:

* ``air_pattern``: ``normal`` / ``traffic_peak`` / ``regional_episode`` /
  ``local_source`` for the hour, score = the label's probability;
* ``sensor_fault``: per sensor (model ``<model>.<sensor>``) ``ok`` / ``stuck`` /
  ``spike`` / ``dropout`` / ``fan_failure`` for the hour ending 10 minutes earlier,
  score = 1 - P(ok); a lasting fault (not a lone spike) raises an Alert;
* ``no2_virtual``: NO2 estimated from phones per antenna and weather, score = the
  estimate in ug/m3, label = its EAQI band.

An hour without enough data says ``insufficient_data`` and never feeds a model
made-up values. The pattern and NO2 detectors use OK and SUSPECT readings only;
the fault detector also looks at BAD ones (a dead fan's 999.9 is the evidence).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from pathlib import Path

import numpy as np

from edge.air.eaqi import band, band_index
from edge.contracts import Alert, AlertState, Detection, Quality, Reading, Severity, check_id, ms_to_datetime
from edge.detectors.aqi import severity_of
from edge.features.air_features import (
    CONTEXT_SLOTS,
    FAULT_FEATURES,
    FAULT_SENSOR_KINDS,
    HISTORY_SLOTS,
    HOUR_SLOTS,
    NO2_FEATURES,
    NO2_INPUTS,
    PATTERN_FEATURES,
    PATTERN_INPUTS,
    SLOT_MS,
    fault_features,
    local_clock,
    no2_features,
    pattern_features,
)

log = logging.getLogger(__name__)

INSUFFICIENT = "insufficient_data"
HOUR_MS = HOUR_SLOTS * SLOT_MS
_USABLE = (Quality.OK, Quality.SUSPECT)
_DIAGNOSTIC = (Quality.OK, Quality.SUSPECT, Quality.BAD)
# Patterns that mean polluted air with a cause worth a look.
WARNING_PATTERNS = ("regional_episode", "local_source")
# Faults that last; a lone spike is flagged in its detection but raises no alert.
ALERT_FAULTS = ("stuck", "dropout", "fan_failure")


def load_air_model(model_dir: str | Path, expected_features: tuple[str, ...], backend: str = "auto"):
    """Verify and load an exported model; refuse one computed from other features than this gateway's."""
    from edge.runtime import load_model
    from edge.runtime.manifest import MANIFEST_FILE, ModelManifest
    from edge.runtime.registry import verify

    path = Path(model_dir)
    if not (path / MANIFEST_FILE).is_file():
        raise ValueError(f"{path}: no exported model here (no {MANIFEST_FILE}); train it with 'make train-air'")
    manifest = verify(ModelManifest.read(path))
    if tuple(manifest.features) != tuple(expected_features):
        raise ValueError(
            f"model {manifest.name} v{manifest.version} in {path} expects features "
            f"{', '.join(manifest.features)}, but this gateway computes {', '.join(expected_features)}: "
            "retrain it with this version ('make train-air')"
        )
    return load_model(manifest, backend=backend)


class SlotBuffer:
    """Readings of a few sensors as 10-minute slot means; ``values(end_slot)`` gives the last HISTORY_SLOTS."""

    def __init__(self, roles: dict[str, str], qualities=_USABLE):
        self.sensor_role = {sensor: role for role, sensor in roles.items()}
        self.qualities = qualities
        self.slots_: dict[str, dict[int, list[float]]] = {role: {} for role in roles}

    def add(self, reading: Reading) -> None:
        role = self.sensor_role.get(reading.sensor)
        if role is None or reading.quality not in self.qualities or reading.value is None:
            return
        value = float(reading.value)
        if math.isfinite(value):
            acc = self.slots_[role].setdefault(reading.time_ms // SLOT_MS, [0.0, 0])
            acc[0] += value
            acc[1] += 1

    def values(self, end_slot: int) -> dict[str, np.ndarray]:
        """role -> slot means of slots ``end_slot - HISTORY_SLOTS .. end_slot - 1`` (NaN = nothing)."""
        first = end_slot - HISTORY_SLOTS
        out = {}
        for role, slots in self.slots_.items():
            for old in [s for s in slots if s < first]:
                del slots[old]
            row = np.full(HISTORY_SLOTS, np.nan)
            for s, (total, n) in slots.items():
                if s < end_slot:
                    row[s - first] = total / n
            out[role] = row
        return out


class _HourlyAirDetector:
    """Shared loop: buffer readings, close each full hour once, let the subclass decide on it."""

    kind = "air"
    features: tuple[str, ...] = ()
    qualities = _USABLE

    def __init__(
        self,
        site: str,
        gateway: str,
        sensors: dict[str, str],
        model_dir: str | Path,
        backend: str = "auto",
        model: str = "air",
        timezone: str = "UTC",
    ):
        self.site = check_id("site", site)
        self.gateway = check_id("gateway", gateway)
        self.model = check_id("model", model)
        self.sensors = dict(sensors)
        self.model_dir = Path(model_dir)
        self.backend = backend
        self.timezone = timezone
        self._check_sensors()
        local_clock(np.array([0]), timezone)  # an unknown time zone fails here, not at the first hour
        self.runtime_ = load_air_model(self.model_dir, self.features, backend)
        self.model_version = self.runtime_.manifest.version
        self.reset()

    def _check_sensors(self) -> None:
        for role, sensor in self.sensors.items():
            check_id(f"{role} sensor", sensor)
        if len(set(self.sensors.values())) != len(self.sensors):
            raise ValueError(f"{self.kind}: the same sensor is given for two inputs")

    def reset(self) -> None:
        self.buffer_ = SlotBuffer(self.sensors, self.qualities)
        self.next_end_slot_ = None

    def update(self, reading: Reading) -> list[Detection | Alert]:
        """Consume one reading; return the decisions of every full hour that ended at or before it."""
        if reading.sensor not in self.buffer_.sensor_role:
            return []
        slot = reading.time_ms // SLOT_MS
        if self.next_end_slot_ is None:
            self.next_end_slot_ = slot - slot % HOUR_SLOTS + HOUR_SLOTS
        out: list[Detection | Alert] = []
        if slot - self.next_end_slot_ >= HISTORY_SLOTS:  # a gap longer than the context: nothing to judge
            self.next_end_slot_ = slot - slot % HOUR_SLOTS + HOUR_SLOTS
        while slot >= self.next_end_slot_:
            out += self._hour(self.next_end_slot_)
            self.next_end_slot_ += HOUR_SLOTS
        self.buffer_.add(reading)
        return out

    def _hour(self, end_slot: int) -> list[Detection | Alert]:
        values = self.buffer_.values(end_slot)
        times = (end_slot - HISTORY_SLOTS + np.arange(HISTORY_SLOTS, dtype=np.int64)) * SLOT_MS
        return self._decide(values, times, end_slot * SLOT_MS)

    def _decide(self, values, times, end_ms) -> list[Detection | Alert]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _detection(
        self,
        end_ms: int,
        label: str,
        score: float,
        explanation: dict,
        *,
        model: str | None = None,
        severity: Severity = Severity.INFO,
        window_ms: tuple[int, int] | None = None,
    ) -> Detection:
        start, end = window_ms or (end_ms - HOUR_MS, end_ms)
        return Detection(
            time_ms=end_ms,
            site=self.site,
            gateway=self.gateway,
            kind=self.kind,
            label=label,
            score=float(score),
            severity=severity,
            model=model or self.model,
            model_version=self.model_version,
            window_start_ms=start,
            window_end_ms=end,
            explanation=explanation,
        )

    @staticmethod
    def _missing(inputs: tuple[str, ...], values) -> list[str]:
        return [
            role
            for role in inputs
            if np.mean(~np.isnan(values[role][-CONTEXT_SLOTS:])) < 0.5 or np.all(np.isnan(values[role][-HOUR_SLOTS:]))
        ]


class AirPatternDetector(_HourlyAirDetector):
    """The hour's pattern: normal, traffic_peak, regional_episode or local_source.

    ``sensors`` maps each input (pm25, pm10, no2, temperature, humidity, cell_count)
    to a sensor id.
    """

    kind = "air_pattern"
    features = PATTERN_FEATURES

    def _check_sensors(self) -> None:
        missing = [r for r in PATTERN_INPUTS if r not in self.sensors]
        if missing:
            raise ValueError(f"air_pattern needs a sensor for {', '.join(missing)}")
        super()._check_sensors()

    def _decide(self, values, times, end_ms):
        row = pattern_features(values, times, np.array([HISTORY_SLOTS]), self.timezone)
        if not np.all(np.isfinite(row)):
            lacking = self._missing(PATTERN_INPUTS, values) or ["context"]
            return [
                self._detection(
                    end_ms,
                    INSUFFICIENT,
                    0.0,
                    {"reason": "not enough data in the last hour or the last 24 h", "lacking": lacking},
                )
            ]
        p = self.runtime_.predict(row)[0]
        classes = self.runtime_.manifest.classes
        best = int(np.argmax(p))
        label = classes[best]
        f = dict(zip(PATTERN_FEATURES, row[0].tolist()))
        explanation = {f"p_{c}": round(float(v), 4) for c, v in zip(classes, p)}
        explanation.update(
            {k: round(f[k], 2) for k in ("pm25_dry_1h", "pm25_dry_floor_24h", "no2_1h", "no2_excess_1h", "cell_rel_1h")}
        )
        severity = Severity.WARNING if label in WARNING_PATTERNS else Severity.INFO
        return [self._detection(end_ms, label, float(p[best]), explanation, severity=severity)]


class SensorFaultDetector(_HourlyAirDetector):
    """Per sensor, the fault of the hour ending one slot ago; alerts for faults that last.

    ``sensors`` maps a sensor kind (pm25, pm10, no2, temperature, humidity) to a
    sensor id; give any subset. An alert is raised after ``raise_after`` faulty hours
    in a row and cleared after ``clear_after`` healthy ones.
    """

    kind = "sensor_fault"
    features = FAULT_FEATURES
    qualities = _DIAGNOSTIC

    def __init__(
        self,
        site,
        gateway,
        sensors,
        model_dir,
        backend="auto",
        model="air-fault",
        timezone="UTC",
        raise_after: int = 2,
        clear_after: int = 2,
    ):
        for name, value in (("raise_after", raise_after), ("clear_after", clear_after)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of hours >= 1, got {value!r}")
        self.raise_after = raise_after
        self.clear_after = clear_after
        super().__init__(site, gateway, sensors, model_dir, backend, model, timezone)

    def _check_sensors(self) -> None:
        unknown = [r for r in self.sensors if r not in FAULT_SENSOR_KINDS]
        if unknown or not self.sensors:
            raise ValueError(
                f"sensor_fault judges {', '.join(FAULT_SENSOR_KINDS)} sensors; got {', '.join(unknown) or 'none'}"
            )
        super()._check_sensors()
        for sensor in self.sensors.values():
            check_id("model and sensor", f"{self.model}.{sensor}")

    def reset(self) -> None:
        super().reset()
        self.runs_ = {s: deque(maxlen=max(self.raise_after, self.clear_after)) for s in self.sensors.values()}
        self.alerts_ = {}  # sensor -> (alert_id, since_ms, label) while raised

    def _decide(self, values, times, end_ms):
        window = (end_ms - HOUR_MS - SLOT_MS, end_ms - SLOT_MS)
        out: list[Detection | Alert] = []
        classes = self.runtime_.manifest.classes
        for kind, sensor in self.sensors.items():
            x = values[kind]
            model = f"{self.model}.{sensor}"
            if np.all(np.isnan(x[-CONTEXT_SLOTS:])):
                out.append(
                    self._detection(
                        end_ms,
                        INSUFFICIENT,
                        0.0,
                        {"sensor": sensor, "reason": "no value from this sensor in the last 24 h"},
                        model=model,
                        window_ms=window,
                    )
                )
                continue
            row = fault_features(x, kind, np.array([HISTORY_SLOTS]))
            p = self.runtime_.predict(row)[0]
            label = classes[int(np.argmax(p))]
            score = 1.0 - float(p[classes.index("ok")]) if "ok" in classes else float(np.max(p))
            explanation = {"sensor": sensor, **{f"p_{c}": round(float(v), 4) for c, v in zip(classes, p)}}
            severity = Severity.INFO if label == "ok" else Severity.WARNING
            detection = self._detection(
                end_ms, label, score, explanation, model=model, severity=severity, window_ms=window
            )
            out.append(detection)
            out += self._persist(sensor, label, detection)
        return out

    def _persist(self, sensor: str, label: str, detection: Detection) -> list[Alert]:
        runs = self.runs_[sensor]
        runs.append(label)
        recent = list(runs)
        raised = self.alerts_.get(sensor)
        if (
            raised is None
            and label in ALERT_FAULTS
            and len(recent) >= self.raise_after
            and all(x == label for x in recent[-self.raise_after :])
        ):
            since = detection.window_start_ms - (self.raise_after - 1) * HOUR_MS
            stamp = ms_to_datetime(since).strftime("%Y%m%dT%H%M")
            self.alerts_[sensor] = (f"fault-{sensor}-{stamp}", since, label)
            return [
                self._alert(
                    sensor,
                    AlertState.RAISED,
                    detection,
                    label,
                    f"Sensor {sensor} looks {label.replace('_', ' ')} since {_hhmm(since)} UTC: check it on site",
                )
            ]
        if (
            raised is not None
            and len(recent) >= self.clear_after
            and all(x == "ok" for x in recent[-self.clear_after :])
        ):
            self.alerts_.pop(sensor)
            return [
                self._alert(
                    sensor,
                    AlertState.CLEARED,
                    detection,
                    raised[2],
                    f"Sensor {sensor} has read "
                    f"normally for {self.clear_after} h: {raised[2].replace('_', ' ')} cleared",
                    raised,
                )
            ]
        return []

    def _alert(self, sensor, state, detection, label, message, raised=None) -> Alert:
        alert_id, since, _ = raised or self.alerts_[sensor]
        return Alert(
            time_ms=detection.time_ms,
            site=self.site,
            gateway=self.gateway,
            kind=self.kind,
            alert_id=alert_id,
            state=state,
            label=label,
            severity=Severity.WARNING if state is AlertState.RAISED else Severity.INFO,
            score=detection.score,
            message=message,
            model=detection.model,
            model_version=self.model_version,
            since_ms=since,
            explanation=dict(detection.explanation),
        )


def _hhmm(time_ms: int) -> str:
    return ms_to_datetime(time_ms).strftime("%Y-%m-%d %H:%M")


class No2VirtualSensor(_HourlyAirDetector):
    """Hourly NO2 (ug/m3) for a zone without an NO2 sensor, from phones per antenna and weather.

    ``sensors`` maps cell_count, wind_speed, temperature and humidity to sensor ids.
    """

    kind = "no2_virtual"
    features = NO2_FEATURES

    def _check_sensors(self) -> None:
        missing = [r for r in NO2_INPUTS if r not in self.sensors]
        if missing:
            raise ValueError(f"no2_virtual needs a sensor for {', '.join(missing)}")
        super()._check_sensors()

    def _decide(self, values, times, end_ms):
        row = no2_features(values, times, np.array([HISTORY_SLOTS]), self.timezone)
        if not np.all(np.isfinite(row)):
            lacking = self._missing(NO2_INPUTS, values) or ["context"]
            return [
                self._detection(
                    end_ms,
                    INSUFFICIENT,
                    0.0,
                    {"reason": "not enough data in the last hour or the last 24 h", "lacking": lacking},
                )
            ]
        estimate = max(0.0, float(self.runtime_.predict(row)[0, 0]))
        f = dict(zip(NO2_FEATURES, row[0].tolist()))
        explanation = {
            "no2_ugm3": round(estimate, 1),
            "cell_1h": round(f["cell_1h"], 1),
            "cell_excess_1h": round(f["cell_excess_1h"], 1),
            "wind_1h": round(f["wind_1h"], 2),
        }
        return [
            self._detection(
                end_ms, band("no2", estimate), estimate, explanation, severity=severity_of(band_index("no2", estimate))
            )
        ]


__all__ = ["AirPatternDetector", "SensorFaultDetector", "No2VirtualSensor", "SlotBuffer", "load_air_model"]
