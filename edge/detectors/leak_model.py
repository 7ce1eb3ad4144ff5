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

The detector settings live in the model's manifest under ``"detector"``
(``edge.detectors.leak_settings``); see ``docs/leak-detection.md``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edge.contracts import Alert, AlertState, Detection, Quality, Reading, Severity
from edge.detectors import leak_state
from edge.detectors import state_json as sj
from edge.detectors.base import ModelDetector, ModelSwapError, Output
from edge.detectors.leak_settings import LEAK_CLASS_NAMES, LeakDetectorSettings, leak_scores
from edge.features.leak_features import DAY_MS, LeakFeatureState, zone_channels

KIND = "leak"
LEAK, NORMAL, INSUFFICIENT = "leak", "normal", "insufficient_data"
_USABLE = (Quality.OK, Quality.SUSPECT)
# Sensors named in an alert, most affected first.
HINT_SENSORS = 3
# An estimated leak this share of the zone's mean inflow or more is critical.
CRITICAL_SHARE = 0.1


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
        self.inputs_ = {sensor: (str(pair[0]), str(pair[1])) for sensor, pair in inputs.items()}  # for a new version
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
        precision: str = "float",
    ) -> LearnedLeakDetector:
        """Verify every file of an exported model (sha256), load its ``precision`` file on ``backend``, build it."""
        from edge.runtime import load_model
        from edge.runtime.manifest import ModelManifest
        from edge.runtime.registry import verify

        manifest = verify(ModelManifest.read(model_dir))
        if "detector" not in manifest.raw:
            raise ValueError(f"{model_dir}: model {manifest.name} has no 'detector' section: not a learned leak model")
        settings = LeakDetectorSettings.from_dict(manifest.raw["detector"])
        runtime = load_model(manifest, backend, precision=precision)
        return cls(site, gateway, runtime, settings, inputs, model=model)

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

    # ---- a new version of the model ----------------------------------------------------
    def _model_change(self, new: Any, old: Any) -> str | None:
        """A new version may read other sensors or another layout (its manifest says how to compute them).

        It must still be a classifier with a leak class, and read only sensors this gateway
        maps in ``inputs``. Same layout and sensors: the baseline and alarm are kept (new
        thresholds apply from the next step); else the baseline is rebuilt.
        """
        try:
            settings = LeakDetectorSettings.from_dict(new.raw["detector"])
        except (KeyError, ValueError) as exc:
            raise ModelSwapError(
                f"{self.model!r}: model {new.name} v{new.version} has no usable detector settings ({exc})",
                "features_changed",
            ) from None
        if new.task != "classification" or not any(n in LEAK_CLASS_NAMES for n in new.output_names):
            raise ModelSwapError(
                f"{self.model!r}: model {new.name} v{new.version} gives {', '.join(new.output_names)}: "
                f"no leak class ({', '.join(LEAK_CLASS_NAMES)})",
                "outputs_changed",
            )
        mapped = set(self.inputs_.values())
        missing = [f"{e} ({q})" for e, q in settings.sensors if (e, q) not in mapped]
        if missing:
            raise ModelSwapError(
                f"{self.model!r}: model {new.name} v{new.version} reads sensor(s) {', '.join(missing)}, "
                "which this gateway's config does not map to a sensor",
                "features_changed",
            )
        if (settings.layout, settings.sensors, list(new.features)) == (
            self.settings.layout,
            self.settings.sensors,
            list(old.features),
        ):
            return None
        return (
            f"it reads other features ({len(new.features)} from {len(settings.sensors)} sensors, "
            f"was {len(old.features)} from {len(self.settings.sensors)}): the baseline is rebuilt "
            f"({settings.layout.min_baseline_days} days before the first score)"
        )

    def _take_model(self, backend: Any) -> None:
        """The new version's settings: sensors, layout, thresholds (the alarm's runs go on)."""
        settings = LeakDetectorSettings.from_dict(backend.manifest.raw["detector"])
        alarm = settings.persistence()
        alarm.active, alarm.high_run, alarm.low_run = self.alarm_.active, self.alarm_.high_run, self.alarm_.low_run
        alarm.run_start = self.alarm_.run_start
        wanted = {tuple(s): i for i, s in enumerate(settings.sensors)}
        self.settings, self.alarm_ = settings, alarm
        self.column_of = {sensor: wanted[pair] for sensor, pair in self.inputs_.items() if pair in wanted}
        self.step_ms = settings.layout.step_s * 1000

    def _forget(self, why: str) -> None:
        """Rebuild the baseline; a leak alert still open stays open, so it is cleared, not raised again."""
        alert, active = self.alert_, self.alarm_.active
        self.reset()
        self.alert_, self.alarm_.active = alert, active

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
            "today": sj.packed(self.today_),
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
