"""Air-site model detectors: the hourly pattern label, sensor-fault flags and the NO2 virtual sensor.

Each detector keeps the last 24 h of its sensors as 10-minute slot means, and at every
full UTC hour (data time) computes one window of features with
``edge.features.air_features`` (the code the models were trained with), runs its
exported model through ``edge.runtime`` (verified files; the config's ``precision``
names the file, ``backend`` its runtime, ``auto`` in a fixed order) and returns Detections:

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

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from edge.air.eaqi import band, band_index
from edge.contracts import Alert, AlertState, Detection, Severity, check_id, ms_to_datetime
from edge.detectors import state_json as sj
from edge.detectors.air_hourly import (
    DIAGNOSTIC,
    HOUR_MS,
    INSUFFICIENT,
    HourlyAirDetector,
    SlotBuffer,
    load_air_model,
)
from edge.detectors.aqi import severity_of
from edge.detectors.base import Output
from edge.features.air_features import (
    CONTEXT_SLOTS,
    FAULT_FEATURES,
    FAULT_SENSOR_KINDS,
    HISTORY_SLOTS,
    NO2_FEATURES,
    NO2_INPUTS,
    PATTERN_FEATURES,
    PATTERN_INPUTS,
    SLOT_MS,
    fault_features,
    no2_features,
    pattern_features,
)

# Patterns that mean polluted air with a cause worth a look.
WARNING_PATTERNS = ("regional_episode", "local_source")
# Faults that last; a lone spike is flagged in its detection but raises no alert.
ALERT_FAULTS = ("stuck", "dropout", "fan_failure")


class AirPatternDetector(HourlyAirDetector):
    """The hour's pattern: normal, traffic_peak, regional_episode or local_source.

    ``sensors`` maps each input (pm25, pm10, no2, temperature, humidity, cell_count)
    to a sensor id. A new model version must read PATTERN_FEATURES (this code computes
    no other: ``use_model`` raises ModelSwapError); it may have other classes.
    """

    kind = "air_pattern"
    features = PATTERN_FEATURES

    def _check_sensors(self) -> None:
        missing = [r for r in PATTERN_INPUTS if r not in self.sensors]
        if missing:
            raise ValueError(f"air_pattern needs a sensor for {', '.join(missing)}")
        super()._check_sensors()

    def _model_change(self, new: Any, old: Any) -> str | None:
        """The features must stay (this code computes them); a new class list is read as it comes, state kept."""
        if list(new.features) != list(old.features) or new.task != "classification":
            return super()._model_change(new, old)
        return None  # the buffer holds readings, not labels: nothing goes stale

    def _decide(self, values: dict[str, np.ndarray], times: np.ndarray, end_ms: int) -> list[Output]:
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
        f = dict(zip(PATTERN_FEATURES, row[0].tolist(), strict=True))
        explanation = {f"p_{c}": round(float(v), 4) for c, v in zip(classes, p, strict=True)}
        explanation.update(
            {k: round(f[k], 2) for k in ("pm25_dry_1h", "pm25_dry_floor_24h", "no2_1h", "no2_excess_1h", "cell_rel_1h")}
        )
        severity = Severity.WARNING if label in WARNING_PATTERNS else Severity.INFO
        return [self._detection(end_ms, label, float(p[best]), explanation, severity=severity)]


class SensorFaultDetector(HourlyAirDetector):
    """Per sensor, the fault of the hour ending one slot ago; alerts for faults that last.

    ``sensors`` maps a sensor kind (pm25, pm10, no2, temperature, humidity) to a
    sensor id; give any subset. An alert is raised after ``raise_after`` faulty hours
    in a row and cleared after ``clear_after`` healthy ones. A new model version must
    read FAULT_FEATURES (``use_model`` raises ModelSwapError otherwise) and have an
    ``ok`` class; other classes restart the label runs.
    """

    kind = "sensor_fault"
    features = FAULT_FEATURES
    qualities = DIAGNOSTIC

    def __init__(
        self,
        site: str,
        gateway: str,
        sensors: dict[str, str],
        model_dir: str | Path,
        backend: str = "auto",
        model: str = "air-fault",
        timezone: str = "UTC",
        raise_after: int = 2,
        clear_after: int = 2,
        precision: str = "float",
    ) -> None:
        for name, value in (("raise_after", raise_after), ("clear_after", clear_after)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of hours >= 1, got {value!r}")
        self.raise_after = raise_after
        self.clear_after = clear_after
        super().__init__(site, gateway, sensors, model_dir, backend, model, timezone, precision)

    def _check_sensors(self) -> None:
        unknown = [r for r in self.sensors if r not in FAULT_SENSOR_KINDS]
        if unknown or not self.sensors:
            raise ValueError(
                f"sensor_fault judges {', '.join(FAULT_SENSOR_KINDS)} sensors; got {', '.join(unknown) or 'none'}"
            )
        super()._check_sensors()
        for sensor in self.sensors.values():
            check_id("model and sensor", f"{self.model}.{sensor}")

    def _model_change(self, new: Any, old: Any) -> str | None:
        """Same features; a new class list must still have ``ok`` (what clears an alert): the label runs restart."""
        if list(new.features) != list(old.features) or new.task != "classification" or "ok" not in new.output_names:
            return super()._model_change(new, old)
        if list(new.output_names) == list(old.output_names):
            return None
        return f"its classes are {', '.join(new.output_names)} (were {', '.join(old.output_names)}): label runs restart"

    def _forget(self, why: str) -> None:
        """The runs of labels start over; open alerts stay, and clear after ``clear_after`` ok hours."""
        for runs in self.runs_.values():
            runs.clear()

    def reset(self) -> None:
        super().reset()
        depth = max(self.raise_after, self.clear_after)
        self.runs_: dict[str, deque[str]] = {s: deque(maxlen=depth) for s in self.sensors.values()}
        self.alerts_: dict[str, tuple[str, int, str]] = {}  # sensor -> (alert_id, since_ms, label) while raised

    def state(self) -> dict:
        """The slots and next hour, plus each sensor's recent labels and its open fault alert."""
        return {
            **super().state(),
            "runs": {sensor: list(labels) for sensor, labels in self.runs_.items()},
            "alerts": {sensor: list(raised) for sensor, raised in self.alerts_.items()},
        }

    def _restored(self, state: dict) -> dict:
        restored = super()._restored(state)
        owner = f"sensor_fault detector {self.model!r}"
        sensors = set(self.sensors.values())
        depth = max(self.raise_after, self.clear_after)
        runs = {}
        for sensor, labels in sj.mapping(sj.field(state, "runs", owner), "runs", sensors).items():
            runs[sensor] = deque((sj.text(x, "a label") for x in sj.listing(labels, f"{sensor} labels")), maxlen=depth)
        alerts = {}
        for sensor, raised in sj.mapping(sj.field(state, "alerts", owner), "alerts").items():
            if sensor not in sensors:
                raise ValueError(f"{owner}: a saved alert is for sensor {sensor!r}, not one of this detector")
            alert_id, since, label = sj.listing(raised, f"{sensor} alert", 3)
            alerts[sensor] = (sj.text(alert_id, "alert id"), sj.integer(since, "since"), sj.text(label, "label"))
        return {**restored, "runs_": runs, "alerts_": alerts}

    def _decide(self, values: dict[str, np.ndarray], times: np.ndarray, end_ms: int) -> list[Output]:
        window = (end_ms - HOUR_MS - SLOT_MS, end_ms - SLOT_MS)
        out: list[Output] = []
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
            explanation = {"sensor": sensor, **{f"p_{c}": round(float(v), 4) for c, v in zip(classes, p, strict=True)}}
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

    def _alert(
        self,
        sensor: str,
        state: AlertState,
        detection: Detection,
        label: str,
        message: str,
        raised: tuple[str, int, str] | None = None,
    ) -> Alert:
        alert_id, since, _ = raised or self.alerts_[sensor]
        severity = Severity.WARNING if state is AlertState.RAISED else Severity.INFO
        return self.alert(
            detection.time_ms,
            alert_id,
            state,
            label,
            severity,
            detection.score,
            message,
            since_ms=since,
            explanation=detection.explanation,
            model=detection.model,
        )


def _hhmm(time_ms: int) -> str:
    return ms_to_datetime(time_ms).strftime("%Y-%m-%d %H:%M")


class No2VirtualSensor(HourlyAirDetector):
    """Hourly NO2 (ug/m3) for a zone without an NO2 sensor, from phones per antenna and weather.

    ``sensors`` maps cell_count, wind_speed, temperature and humidity to sensor ids.
    A new model version must read NO2_FEATURES and give the one estimate
    (``use_model`` raises ModelSwapError otherwise: this code computes no other feature).
    """

    kind = "no2_virtual"
    features = NO2_FEATURES

    def _check_sensors(self) -> None:
        missing = [r for r in NO2_INPUTS if r not in self.sensors]
        if missing:
            raise ValueError(f"no2_virtual needs a sensor for {', '.join(missing)}")
        super()._check_sensors()

    def _decide(self, values: dict[str, np.ndarray], times: np.ndarray, end_ms: int) -> list[Output]:
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
        f = dict(zip(NO2_FEATURES, row[0].tolist(), strict=True))
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
