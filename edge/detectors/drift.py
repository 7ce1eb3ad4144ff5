"""Calibration drift on the gateway: a Page-Hinkley test that says "recalibration needed" when a calibration goes stale.

Low-cost gas sensors (metal-oxide, electrochemical) drift over weeks: their zero and
their sensitivity move, so a calibration fitted on a co-location period slowly stops
being true (field notes). The detector compares the sensor, day by day, with
something that does not drift with it, in order of preference:

* ``reference``: a co-located reference sensor; the daily statistic is the median
  residual (sensor minus reference) over the day's 10-minute slots;
* ``estimator``: a model that estimates the same quantity from other inputs, e.g. the
  NO2 virtual sensor (phones per antenna and weather): any object whose
  ``update(reading)`` returns Detections with the hourly estimate as ``score``; the
  daily statistic is the median hourly residual;
* neither: the sensor's **daily floor** (10th percentile of the day's 10-minute
  means). Weather and season move the floor too, so this only catches large drifts
  and may alarm on a change of season; use it only when nothing better exists.

The first ``calibration_days`` complete days after the detector starts (or after a
recalibration) define the calibration period: the mean and spread of the daily
statistic. Every later day is standardised against them, smoothed by the median of
the last ``smoothing_days`` days (a multi-day pollution episode is weather, not
drift), and fed to a two-sided Page-Hinkley test (Page 1954, Hinkley 1971) with the
calibration mean as reference. The defaults were chosen on simulated sites
(``training.air.evaluate``) for no false alarm over weeks of weather, at the price
of catching slow drifts late. When its cumulative excess passes ``threshold`` an
Alert of kind ``calibration`` (label ``recalibration_needed``) is raised; it clears
when the smoothed statistic has been back within one spread for ``clear_after``
days (e.g. after the sensor was recalibrated upstream, or a new version of the
calibration it watches went into service).

``refits`` says what the alert asks for (edge/detectors/recalibration.py): a detector
built from a gateway config is given the calibration models it concerns (those whose
``drift_model`` it is, whose virtual sensor it watches, or that read its sensor), and
its raised message then ends with which one to refit, with the model version running
and the commands, or, with none, to recalibrate the sensor; the explanation carries
the same as a ``refit`` list. ``None`` (a detector built by hand): the message stops at
"recalibration needed".

>>> ph = PageHinkley(delta=0.5, threshold=4.0)
>>> [ph.update(z) for z in [0.2, -0.3, 0.1, 1.5, 1.8, 2.0, 1.9]]
[False, False, False, False, False, False, True]
>>> round(ph.statistic, 2), ph.direction
(5.2, 'up')
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import numpy as np

from edge.contracts import Alert, AlertState, Detection, Quality, Reading, Severity, check_id, ms_to_datetime
from edge.detectors.base import Detector, Output
from edge.detectors.drift_state import Calibration, drift_state, restored_drift
from edge.detectors.page_hinkley import PageHinkley
from edge.detectors.recalibration import MAX_MESSAGE, Refit, advice, refit_list

log = logging.getLogger(__name__)

KIND = "calibration"
DAY_MS = 86_400_000
SLOT_MS = 600_000
SLOTS_PER_DAY = DAY_MS // SLOT_MS
HOUR_SLOTS = 6
CALIBRATING, STABLE, DRIFTING, INSUFFICIENT = "calibrating", "stable", "drifting", "insufficient_data"
RECALIBRATION_NEEDED = "recalibration_needed"
MIN_DAY_COVERAGE = 0.75  # share of the day's 10-minute slots that must hold a value
_USABLE = (Quality.OK, Quality.SUSPECT)


class CalibrationDriftDetector(Detector):
    """Daily drift check of one sensor against its own calibration period (or a reference sensor).

    The test itself is rule-based. With an ``estimator`` (a detector of its own, e.g. a
    No2VirtualSensor copy) ``model_name`` is the estimator's model and ``use_model`` gives
    it a new version: the calibration is kept when the estimator keeps its state, and
    starts over when the estimator reset (its estimates are no longer the ones calibrated).
    Without one, ``model_name`` is None and ``use_model`` refuses.
    """

    kind = KIND

    def __init__(
        self,
        site: str,
        gateway: str,
        sensor: str,
        reference: str | None = None,
        estimator: Detector | None = None,
        calibration_days: int = 21,
        smoothing_days: int = 7,
        delta: float = 1.5,
        threshold: float = 15.0,
        floor_percentile: float = 10.0,
        min_sigma: float = 3.0,
        z_clip: float = 3.0,
        clear_after: int = 3,
        model: str = "calibration-drift",
        model_version: str = "1",
    ) -> None:
        super().__init__(site, gateway, model=model, model_version=model_version)
        self.sensor = check_id("sensor", sensor)
        self.reference = None if reference is None else check_id("reference sensor", reference)
        if self.reference == self.sensor:
            raise ValueError("the reference must be another sensor than the one watched")
        if reference is not None and estimator is not None:
            raise ValueError("give a reference sensor or an estimator, not both")
        if estimator is not None and not callable(getattr(estimator, "update", None)):
            raise ValueError("the estimator must have update(reading) returning Detections")
        self.estimator = estimator
        for name, value, low in (
            ("calibration_days", calibration_days, 3),
            ("smoothing_days", smoothing_days, 1),
            ("clear_after", clear_after, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number of days >= {low}, got {value!r}")
        if not 0 < floor_percentile < 100:
            raise ValueError(f"floor_percentile must be between 0 and 100, got {floor_percentile}")
        if not z_clip > 0:
            raise ValueError(f"z_clip must be > 0, got {z_clip}")
        self.z_clip = z_clip
        if not min_sigma > 0:
            raise ValueError(f"min_sigma must be > 0 (the smallest spread taken as real), got {min_sigma}")
        self.calibration_days = calibration_days
        self.smoothing_days = smoothing_days
        self.floor_percentile = floor_percentile
        self.min_sigma = min_sigma
        self.clear_after = clear_after
        self.test_ = PageHinkley(delta, threshold)
        self.refits: list[Refit] | None = None  # what to refit, if the config said (module doc)
        self.reset()

    # -- the estimator's model -------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        """The estimator's model (None without an estimator)."""
        return getattr(self.estimator, "model_name", None)

    @property
    def model_runtime(self) -> Any:
        """What the estimator scores with (None without an estimator)."""
        return getattr(self.estimator, "model_runtime", None)

    def check_model(self, backend: Any) -> str | None:
        """The estimator's verdict on a new version of its model."""
        if self.model_name is None:
            return super().check_model(backend)
        assert self.estimator is not None  # it names the model
        why = self.estimator.check_model(backend)
        return None if why is None else f"the estimator resets ({why}): a new calibration period starts"

    def use_model(self, backend: Any) -> None:
        """Give the estimator the new version; recalibrate only if the estimator reset."""
        why = self.check_model(backend)
        assert self.estimator is not None  # check_model refused otherwise
        self.estimator.use_model(backend)
        log.info("%s: its estimator now runs %s v%s", self.model, backend.manifest.name, backend.manifest.version)
        if why is not None:
            log.warning("%s: %s", self.model, why)
            self.reset()

    @property
    def statistic_name(self) -> str:
        if self.reference:
            return "median residual to the reference"
        return "median residual to the estimate" if self.estimator is not None else "floor"

    def reset(self) -> None:
        """Forget everything: the next days are a new calibration period (call after recalibrating)."""
        self.day_: int | None = None  # UTC day index being collected
        self.slots_: dict[int, dict[str, list[float]]] = {}  # slot -> {sensor: [sum, n]}
        self.estimates_: dict[int, float] = {}  # hour start ms -> estimate, for the day being collected
        self.unit_ = ""
        self.calibration_values_: list[tuple[str, float]] = []  # (day text, statistic)
        self.calibration_: Calibration | None = None
        self.recent_: deque[float] = deque(maxlen=self.smoothing_days)  # standardised daily statistics
        self.calm_days_ = 0
        self.alert_: tuple[str, int] | None = None  # (alert_id, since_ms)
        self.test_.reset()

    def state(self) -> dict:
        """The day being collected, the calibration period, the Page-Hinkley sums, the open alert, the estimator's."""
        return drift_state(self)

    def restore(self, state: dict) -> None:
        """Take back ``state()``; ValueError (and nothing changed) if it is malformed."""
        self.__dict__.update(restored_drift(self, state))

    def update(self, reading: Reading) -> list[Output]:
        """Consume one reading; return the decision of every UTC day that ended before it."""
        if self.estimator is not None:  # first, so the day's last hour is estimated before the day closes
            for d in self.estimator.update(reading):
                if isinstance(d, Detection) and d.label != "insufficient_data":
                    self.estimates_[d.window_start_ms] = float(d.score)
        if reading.sensor not in (self.sensor, self.reference):
            return []
        day = reading.time_ms // DAY_MS
        out: list[Output] = []
        if self.day_ is None:
            self.day_ = day
        if day > self.day_:
            out += self._close_day(self.day_)
            self.day_ = day
            self.slots_ = {}
            self.estimates_ = {h: v for h, v in self.estimates_.items() if h >= day * DAY_MS}
        if (
            day == self.day_
            and reading.quality in _USABLE
            and reading.value is not None
            and math.isfinite(reading.value)
        ):
            if reading.sensor == self.sensor:
                self.unit_ = reading.unit
            acc = self.slots_.setdefault(reading.time_ms // SLOT_MS, {}).setdefault(reading.sensor, [0.0, 0])
            acc[0] += float(reading.value)
            acc[1] += 1
        return out

    def _daily_statistic(self) -> float:
        def mean(slot, sensor):
            acc = slot.get(sensor)
            return acc[0] / acc[1] if acc else math.nan

        if self.estimator is not None:
            return self._hourly_residual(mean)
        values = np.array([mean(s, self.sensor) for s in self.slots_.values()])
        if self.reference:
            values = values - np.array([mean(s, self.reference) for s in self.slots_.values()])
        values = values[~np.isnan(values)]
        if len(values) < MIN_DAY_COVERAGE * SLOTS_PER_DAY:
            return math.nan
        if self.reference:
            return float(np.median(values))
        return float(np.percentile(values, self.floor_percentile))

    def _hourly_residual(self, mean) -> float:
        residuals = []
        for hour_ms, estimate in self.estimates_.items():
            first = hour_ms // SLOT_MS
            values = [mean(self.slots_[k], self.sensor) for k in range(first, first + HOUR_SLOTS) if k in self.slots_]
            values = [v for v in values if not math.isnan(v)]
            if len(values) >= HOUR_SLOTS // 2:
                residuals.append(float(np.mean(values)) - estimate)
        if len(residuals) < MIN_DAY_COVERAGE * 24:
            return math.nan
        return float(np.median(residuals))

    def _close_day(self, day: int) -> list[Output]:
        start, end = day * DAY_MS, (day + 1) * DAY_MS
        label_day = ms_to_datetime(start).date().isoformat()
        value = self._daily_statistic()
        if math.isnan(value):
            return [
                self._detection(
                    start,
                    end,
                    INSUFFICIENT,
                    0.0,
                    {
                        "day": label_day,
                        "reason": f"fewer than {MIN_DAY_COVERAGE:.0%} of the day's slots (or hours with "
                        "an estimate) had a value",
                    },
                )
            ]
        if self.calibration_ is None:
            self.calibration_values_.append((label_day, value))
            if len(self.calibration_values_) == self.calibration_days:
                days, values = zip(*self.calibration_values_, strict=True)
                sigma = max(float(np.std(values, ddof=1)), self.min_sigma)
                self.calibration_ = Calibration(float(np.mean(values)), sigma, days[0], days[-1])
            return [
                self._detection(
                    start,
                    end,
                    CALIBRATING,
                    0.0,
                    {"day": label_day, "statistic": round(value, 3), "calibration_days": len(self.calibration_values_)},
                )
            ]
        cal = self.calibration_
        # Clipped: one odd day (a fire, a road closure) moves the median, never the whole test.
        self.recent_.append(float(np.clip((value - cal.mean) / cal.sigma, -self.z_clip, self.z_clip)))
        smoothed = float(np.median(self.recent_))
        alarm = self.test_.update(smoothed)
        explanation = {
            "day": label_day,
            "statistic": round(value, 3),
            "baseline": round(cal.mean, 3),
            "sigma": round(cal.sigma, 3),
            "smoothed_z": round(smoothed, 3),
            "direction": self.test_.direction,
        }
        detection = self._detection(start, end, DRIFTING if alarm else STABLE, self.test_.statistic, explanation)
        outputs: list[Output] = [detection]
        return outputs + list(self._persist(alarm, smoothed, detection))

    def _persist(self, alarm: bool, smoothed: float, detection: Detection) -> list[Alert]:
        cal = self.calibration_
        assert cal is not None  # days are tested only once the calibration period is over
        if self.alert_ is None:
            if not alarm:
                return []
            self.alert_ = (f"recal-{self.sensor}-{detection.explanation['day']}", detection.window_start_ms)
            self.calm_days_ = 0
            today = detection.explanation["statistic"]  # the day's own statistic, not the clipped z
            unit = f" {self.unit_}" if self.unit_ else ""
            message = (
                f"Sensor {self.sensor}: its daily {self.statistic_name} has moved from "
                f"{cal.mean:.1f} to {today:.1f}{unit} ({smoothed:+.1f} sigma) since its calibration "
                f"period {cal.first_day}..{cal.last_day}: recalibration needed"
            )
            extra = {}
            if self.refits is not None:
                message += ". " + advice(self.sensor, self.refits, room=MAX_MESSAGE - len(message) - 2)
                extra = {"refit": refit_list(self.refits)}
            return [self._alert(AlertState.RAISED, detection, Severity.WARNING, message, extra)]
        self.calm_days_ = self.calm_days_ + 1 if abs(smoothed) < 1.0 else 0
        if self.calm_days_ >= self.clear_after:
            alert = self._alert(
                AlertState.CLEARED,
                detection,
                Severity.INFO,
                f"Sensor {self.sensor}: its daily {self.statistic_name} has been back within one "
                f"spread of its calibration period for {self.calm_days_} days: cleared",
            )
            self.alert_ = None
            self.test_.reset()
            return [alert]
        return []

    def _detection(self, start: int, end: int, label: str, score: float, explanation: dict) -> Detection:
        runtime = self.model_runtime
        explanation = {
            "sensor": self.sensor,
            **({"reference": self.reference} if self.reference else {}),
            **({"estimator_version": runtime.manifest.version} if runtime is not None else {}),
            **explanation,
        }
        severity = Severity.WARNING if label == DRIFTING else Severity.INFO
        return self.detection(end, label, score, severity, start, end, explanation)

    def _alert(
        self, state: AlertState, detection: Detection, severity: Severity, message: str, extra: dict | None = None
    ) -> Alert:
        assert self.alert_ is not None  # an alert is only built while one is raised
        alert_id, since = self.alert_
        return self.alert(
            detection.time_ms,
            alert_id,
            state,
            RECALIBRATION_NEEDED,
            severity,
            detection.score,
            message,
            since_ms=since,
            explanation={**detection.explanation, **extra} if extra else detection.explanation,
        )


__all__ = ["PageHinkley", "CalibrationDriftDetector", "RECALIBRATION_NEEDED", "KIND"]
