"""Streaming leak detector on a learned model: readings -> zone features -> score -> persistent alarm.

Every sample step (the model's, e.g. 15 min) the detector averages each sensor's
readings in that step, builds the zone feature row (``edge.features.leak_features``,
the code the model was trained with), scores it on the edge runtime and updates an
alarm with persistence and hysteresis (``AlarmPersistence``): raised after
``raise_after`` consecutive steps at or above ``raise_threshold``, cleared after
``clear_after`` consecutive steps below ``clear_threshold``. A step where a sensor
is missing, or without enough baseline, gives ``insufficient_data``: it neither
raises nor clears. A raised alert carries the estimated leak flow (mean excess of
the zone inflow over its expected pattern since the alarm began) and the pressure
sensors that dropped most, as a localisation hint.

The detector settings live in the model's manifest under ``"detector"``; see
``docs/leak-detection.md``.

>>> p = AlarmPersistence(raise_threshold=0.8, clear_threshold=0.3, raise_after=2, clear_after=2)
>>> [p.update(s) for s in (0.9, None, 0.95, 0.5, 0.1, 0.2)]
[None, None, 'raised', None, None, 'cleared']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edge.contracts import Alert, AlertState, Detection, Quality, Reading, Severity
from edge.detectors import leak_state
from edge.detectors import state_json as sj
from edge.detectors.base import ModelDetector, Output
from edge.features.leak_features import DAY_MS, LeakFeatureLayout, LeakFeatureState, zone_channels

KIND = "leak"
LEAK, NORMAL, INSUFFICIENT = "leak", "normal", "insufficient_data"
LEAK_CLASS_NAMES = ("1", "True", "leak")
_USABLE = (Quality.OK, Quality.SUSPECT)
# Sensors named in an alert, most affected first.
HINT_SENSORS = 3
# An estimated leak this share of the zone's mean inflow or more is critical.
CRITICAL_SHARE = 0.1


class AlarmPersistence:
    """Raise after ``raise_after`` high steps in a row, clear after ``clear_after`` low ones; None = no data."""

    def __init__(self, raise_threshold: float, clear_threshold: float, raise_after: int, clear_after: int):
        if not 0 <= clear_threshold <= raise_threshold <= 1:
            raise ValueError("need 0 <= clear_threshold <= raise_threshold <= 1")
        if raise_after < 1 or clear_after < 1:
            raise ValueError("raise_after and clear_after must be at least 1")
        self.raise_threshold, self.clear_threshold = raise_threshold, clear_threshold
        self.raise_after, self.clear_after = raise_after, clear_after
        self.active = False
        self.high_run = self.low_run = 0
        self.run_start: int | None = None  # index of the first high step of the current run

    def state(self) -> dict:
        return {"active": self.active, "high_run": self.high_run, "low_run": self.low_run, "run_start": self.run_start}

    def restore(self, state: dict) -> None:
        """Take back ``state()`` (ValueError, nothing changed, if malformed)."""
        owner = "alarm persistence"
        restored = {
            "active": sj.flag(sj.field(state, "active", owner), "alarm active"),
            "high_run": sj.integer(sj.field(state, "high_run", owner), "alarm high_run"),
            "low_run": sj.integer(sj.field(state, "low_run", owner), "alarm low_run"),
            "run_start": sj.optional(sj.field(state, "run_start", owner), sj.integer, "alarm run_start"),
        }
        self.__dict__.update(restored)

    def update(self, score: float | None, index: int = 0) -> str | None:
        """One step's score; returns 'raised', 'cleared' or None."""
        if score is None:
            return None
        if score >= self.raise_threshold:
            self.low_run = 0
            if self.high_run == 0 and not self.active:
                self.run_start = index
            self.high_run += 1
            if not self.active and self.high_run >= self.raise_after:
                self.active = True
                return "raised"
            return None
        self.high_run = 0
        self.low_run = self.low_run + 1 if score < self.clear_threshold else 0
        if self.active and self.low_run >= self.clear_after:
            self.active = False
            return "cleared"
        return None


@dataclass(frozen=True)
class LeakDetectorSettings:
    """What a learned leak model needs on the device, stored in its manifest under ``"detector"``."""

    sensors: list[tuple[str, str]]  # (network element, quantity): flows, pressures, presence, in layout order
    layout: LeakFeatureLayout
    raise_threshold: float
    clear_threshold: float
    raise_after: int
    clear_after: int

    def to_dict(self) -> dict:
        return {
            "sensors": [list(s) for s in self.sensors],
            "layout": self.layout.to_dict(),
            "raise_threshold": self.raise_threshold,
            "clear_threshold": self.clear_threshold,
            "raise_after": self.raise_after,
            "clear_after": self.clear_after,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LeakDetectorSettings:
        try:
            return cls(
                sensors=[(str(e), str(q)) for e, q in data["sensors"]],
                layout=LeakFeatureLayout.from_dict(data["layout"]),
                raise_threshold=float(data["raise_threshold"]),
                clear_threshold=float(data["clear_threshold"]),
                raise_after=int(data["raise_after"]),
                clear_after=int(data["clear_after"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the model's detector settings are incomplete or malformed ({exc})") from None

    def persistence(self) -> AlarmPersistence:
        return AlarmPersistence(self.raise_threshold, self.clear_threshold, self.raise_after, self.clear_after)


def leak_scores(backend, X: np.ndarray) -> np.ndarray:
    """P(leak) per feature row from a classifier backend."""
    names = backend.manifest.output_names
    column = next((i for i, n in enumerate(names) if n in LEAK_CLASS_NAMES), None)
    if column is None:
        raise ValueError(f"model {backend.manifest.name} has no leak class (outputs {names})")
    return backend.predict(X)[:, column].astype(np.float64)


class LearnedLeakDetector(ModelDetector):
    """One zone; ``inputs`` maps this gateway's sensor ids to the model's (element, quantity) pairs.

    The loaded model is ``runtime_`` (a runtime backend); ``model`` defaults to its manifest name.
    """

    kind = KIND

    def __init__(
        self,
        site: str,
        gateway: str,
        backend: Any,
        settings: LeakDetectorSettings,
        inputs: dict[str, tuple[str, str]],
        model: str | None = None,
    ) -> None:
        super().__init__(site, gateway, model=model or backend.manifest.name, model_version=backend.manifest.version)
        self.runtime_, self.settings = backend, settings
        wanted = {tuple(s): i for i, s in enumerate(settings.sensors)}
        missing = [f"{e} ({q})" for e, q in settings.sensors if (e, q) not in inputs.values()]
        if missing:
            raise ValueError(f"model {self.model} needs sensor(s) {', '.join(missing)}: map each to a gateway sensor")
        self.column_of = {sensor: wanted[tuple(pair)] for sensor, pair in inputs.items() if tuple(pair) in wanted}
        self.step_ms = settings.layout.step_s * 1000
        self.reset()

    @classmethod
    def from_model_dir(
        cls,
        model_dir,
        site: str,
        gateway: str,
        inputs: dict[str, tuple[str, str]],
        backend: str = "auto",
        model: str | None = None,
    ) -> LearnedLeakDetector:
        """Verify every file of an exported model (sha256), load it on ``backend`` and build the detector."""
        from edge.runtime import load_model
        from edge.runtime.manifest import ModelManifest
        from edge.runtime.registry import verify

        manifest = verify(ModelManifest.read(model_dir))
        if "detector" not in manifest.raw:
            raise ValueError(f"{model_dir}: model {manifest.name} has no 'detector' section: not a learned leak model")
        settings = LeakDetectorSettings.from_dict(manifest.raw["detector"])
        return cls(site, gateway, load_model(manifest, backend), settings, inputs, model=model)

    def reset(self) -> None:
        lay = self.settings.layout
        self.state_ = LeakFeatureState(lay)
        self.alarm_ = self.settings.persistence()
        self.bin_: int | None = None  # index of the step being collected (time_ms // step_ms)
        self.sums_ = np.zeros(lay.n_sensors)
        self.counts_ = np.zeros(lay.n_sensors)
        self.day_: int | None = None  # index of the UTC day of ``today_``
        self.today_ = np.full((lay.steps_per_day, lay.n_channels), np.nan)
        self.alarm_in_day_ = False
        self.alert_: tuple[str, int] | None = None  # (alert_id, since_ms) while raised
        self.late_readings_ = 0

    # ---- restart ------------------------------------------------------------------------
    def state(self) -> dict:
        """The baseline days, the last 24 h of residuals, today so far, the step being collected, the alarm."""
        return {
            "features": leak_state.features_state(self.state_),
            "alarm": self.alarm_.state(),
            "bin": self.bin_,
            "sums": sj.numbers(self.sums_),
            "counts": sj.numbers(self.counts_),
            "day": self.day_,
            "today": sj.numbers(self.today_),
            "alarm_in_day": self.alarm_in_day_,
            "alert": sj.alert_pair(self.alert_),
            "late_readings": self.late_readings_,
        }

    def restore(self, state: dict) -> None:
        """Take back ``state()``; ValueError (and nothing changed) if it is malformed or of another layout."""
        owner = f"learned leak detector {self.model!r}"
        lay = self.settings.layout

        def get(key, within=state):
            return sj.field(within, key, owner)

        features = leak_state.restore_features(lay, get("features"), owner)
        alarm = self.settings.persistence()
        alarm.restore(get("alarm"))
        n = lay.n_sensors
        restored = {
            "state_": features,
            "alarm_": alarm,
            "bin_": sj.optional(get("bin"), sj.integer, "bin"),
            "sums_": sj.array(get("sums"), (n,), "sums"),
            "counts_": sj.array(get("counts"), (n,), "counts"),
            "day_": sj.optional(get("day"), sj.integer, "day"),
            "today_": sj.array(get("today"), (lay.steps_per_day, lay.n_channels), "today"),
            "alarm_in_day_": sj.flag(get("alarm_in_day"), "alarm_in_day"),
            "alert_": sj.alert(get("alert"), "alert"),
            "late_readings_": sj.integer(get("late_readings"), "late_readings"),
        }
        self.__dict__.update(restored)

    def update(self, reading: Reading) -> list[Output]:
        """Consume one reading; return the decisions of every step that ended before it."""
        column = self.column_of.get(reading.sensor)
        if column is None:
            return []
        k = reading.time_ms // self.step_ms
        out: list[Output] = []
        if self.bin_ is None:
            self.bin_ = k
        elif k > self.bin_:
            out += self._close_bin()
            if k > self.bin_ + 1:
                out += self._skip_to(k)
            self.bin_ = k
        elif k < self.bin_:
            self.late_readings_ += 1  # for a step already decided: counted, not used
            return []
        if reading.quality in _USABLE and reading.value is not None and math.isfinite(reading.value):
            self.sums_[column] += reading.value
            self.counts_[column] += 1
        return out

    def flush(self) -> list[Output]:
        """Decide the step being collected (end of a replay)."""
        return self._close_bin() if self.bin_ is not None else []

    # ---- steps and days -------------------------------------------------------------
    def _close_bin(self) -> list[Output]:
        with np.errstate(invalid="ignore"):
            row = np.where(self.counts_ > 0, self.sums_ / np.maximum(self.counts_, 1), np.nan)
        self.sums_[:] = 0
        self.counts_[:] = 0
        assert self.bin_ is not None  # a bin is closed only once one was opened
        return self._step(self.bin_, row)

    def _skip_to(self, k: int) -> list[Output]:
        """Steps without any reading: one insufficient_data detection for the whole gap."""
        assert self.bin_ is not None  # a gap follows an opened bin
        start_ms, end_ms = (self.bin_ + 1) * self.step_ms, k * self.step_ms
        return [self._detection(end_ms, start_ms, INSUFFICIENT, 0.0, {"reason": "no reading from any model sensor"})]

    def _day_of(self, k: int) -> int:
        return k // self.settings.layout.steps_per_day

    def _advance_day(self, day: int) -> int:
        """Close days up to ``day`` one by one (an empty day still counts, never into the baseline); return it."""
        while self.day_ is None or self.day_ < day:
            if self.day_ is None:
                self.day_ = day
            else:
                self.state_.end_day(self.today_, not self.alarm_in_day_ or not self.state_.ready_)
                self.day_ += 1
            self.today_[:] = np.nan
            self.alarm_in_day_ = self.alarm_.active
            self.state_.start_day(self.day_ * DAY_MS)
        return self.day_

    def _step(self, k: int, row: np.ndarray) -> list[Output]:
        lay = self.settings.layout
        slot = k - self._advance_day(self._day_of(k)) * lay.steps_per_day
        self.today_[slot] = zone_channels(lay, row[None, :])[0]
        X, valid = self.state_.features(self.today_[: slot + 1], last_only=True)
        start_ms, end_ms = k * self.step_ms, (k + 1) * self.step_ms
        if not valid[0]:
            why = (
                f"baseline has {self.state_.baseline_days} of {lay.min_baseline_days} days needed"
                if not self.state_.ready_
                else self._missing(row)
            )
            self.alarm_in_day_ |= self.alarm_.active
            return [self._detection(end_ms, start_ms, INSUFFICIENT, 0.0, {"reason": why})]
        score = float(leak_scores(self.runtime_, X)[0])
        event = self.alarm_.update(score, k)
        self.alarm_in_day_ |= self.alarm_.active
        label = LEAK if score >= self.settings.raise_threshold else NORMAL
        detection = self._detection(end_ms, start_ms, label, score, {})
        if event == "raised":
            run_start = self.alarm_.run_start
            assert run_start is not None  # a raise follows the first high step of its run
            since_ms = run_start * self.step_ms
            self.alert_ = (f"leak-{datetime.fromtimestamp(since_ms / 1000, tz=UTC):%Y%m%dT%H%M}", since_ms)
            explanation = self._explain(slot, k - run_start + 1)
            return [detection, self._alert(AlertState.RAISED, end_ms, score, explanation)]
        if event == "cleared":
            alert = self._alert(AlertState.CLEARED, end_ms, score, {})
            self.alert_ = None
            return [detection, alert]
        return [detection]

    def _missing(self, row: np.ndarray) -> str:
        names = [f"{e}/{q}" for (e, q), v in zip(self.settings.sensors, row, strict=True) if not math.isfinite(v)]
        if names:
            return f"no usable reading from {', '.join(names)}"
        return "too few readings in the last hours"

    # ---- outputs ----------------------------------------------------------------------
    def _explain(self, slot: int, steps: int) -> dict:
        lay = self.settings.layout
        excess, z = self.state_.recent_residuals(self.today_[: slot + 1], min(steps, lay.steps_per_day))
        pressures = [e for e, q in self.settings.sensors if q == "pressure"]
        order = [i for i in np.argsort(z) if math.isfinite(z[i]) and z[i] < 0][:HINT_SENSORS]
        return {
            "excess_lps": round(max(0.0, excess), 2) if math.isfinite(excess) else 0.0,
            "sensors": [pressures[i] for i in order],
            "inflow_level_lps": round(self.state_.inflow_level_, 2),
        }

    def _detection(self, end_ms: int, start_ms: int, label: str, score: float, explanation: dict) -> Detection:
        severity = Severity.WARNING if label == LEAK else Severity.INFO
        return self.detection(end_ms, label, score, severity, start_ms, end_ms, explanation)

    def _alert(self, state: AlertState, time_ms: int, score: float, explanation: dict) -> Alert:
        assert self.alert_ is not None  # an alert is only built while one is raised
        alert_id, since_ms = self.alert_
        if state is AlertState.RAISED:
            share = explanation["excess_lps"] / max(explanation["inflow_level_lps"], 1e-9)
            severity = Severity.CRITICAL if share >= CRITICAL_SHARE else Severity.WARNING
            sensors = ", ".join(explanation["sensors"]) or "no pressure sensor moved"
            message = (
                f"Possible leak of about {explanation['excess_lps']:.1f} L/s since "
                f"{datetime.fromtimestamp(since_ms / 1000, tz=UTC):%Y-%m-%d %H:%M} UTC "
                f"(score {score:.2f}); pressure dropped most at: {sensors}"
            )
        else:
            severity = Severity.INFO
            message = (
                f"Leak alarm cleared: {self.settings.clear_after} steps in a row scored below "
                f"{self.settings.clear_threshold:.2f}"
            )
        return self.alert(
            time_ms, alert_id, state, LEAK, severity, score, message, since_ms=since_ms, explanation=explanation
        )
