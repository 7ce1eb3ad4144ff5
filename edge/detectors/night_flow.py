"""Leak detection by Minimum Night Flow, streaming, in the LeakDB style.

Each night the zone's MNF is compared with the lowest MNF of the previous
``history_days`` unflagged nights; a night ``threshold`` (20 %) above that baseline is
flagged. An alert is raised after ``raise_after`` consecutive flagged nights and
cleared after ``clear_after`` consecutive normal nights, so it never flaps. A night
without every meter at every step says ``insufficient_data``: it neither raises nor
clears, and never enters the baseline.

>>> from edge.contracts import Reading
>>> det = MinimumNightFlowDetector("net3", "gw-01", [("F-in", 1)], raise_after=1)
>>> day_ms, step_ms = 86_400_000, 900_000
>>> def night(day, flow):  # 02:00 .. 03:45, then the 04:00 reading that closes the night
...     t0 = 1_772_409_600_000 + day * day_ms + 8 * step_ms
...     return [Reading(t0 + k * step_ms, "net3", "gw-01", "F-in", "flow", flow, "L/s") for k in range(9)]
>>> out = [o for day, flow in enumerate([40.0, 42.0, 41.0, 55.0]) for r in night(day, flow) for o in det.update(r)]
>>> [(o.label, round(o.score, 3)) for o in out]
[('insufficient_data', 0.0), ('insufficient_data', 0.0), ('normal', 0.025), ('leak', 0.375), ('leak', 0.375)]
>>> out[-1].message
'Night flow 55.0 L/s is 38% above the 3-night baseline 40.0 L/s: possible leak of about 15.0 L/s'
"""

from __future__ import annotations

import math
from collections import deque
from datetime import date

import numpy as np

from edge.contracts import Alert, AlertState, Detection, Quality, Reading, Severity, check_id
from edge.detectors import state_json as sj
from edge.detectors.base import Detector, Output
from edge.features.night_flow import night_after, night_mnf, parse_clock, parse_duration_ms, zone_info

KIND = "leak"
LEAK, NORMAL, INSUFFICIENT = "leak", "normal", "insufficient_data"
MIN_HISTORY_NIGHTS = 2
ROLLING_MS = parse_duration_ms("1h")
# A night this many times the threshold above baseline is a burst, not a seep.
CRITICAL_FACTOR = 2.0
# Readings a detector may use: BAD never feeds a decision, UNKNOWN has no value.
_USABLE = (Quality.OK, Quality.SUSPECT)


class MinimumNightFlowDetector(Detector):
    """Streaming MNF leak detector for one metered zone."""

    kind = KIND

    def __init__(
        self,
        site: str,
        gateway: str,
        zone_inflow: list[tuple[str, int]],
        night_start: str = "02:00",
        night_end: str = "04:00",
        threshold: float = 0.2,
        history_days: int = 10,
        raise_after: int = 1,
        clear_after: int = 2,
        timezone: str = "UTC",
        model: str = "mnf",
        model_version: str = "1",
    ) -> None:
        super().__init__(site, gateway, model=model, model_version=model_version)
        self.zone_inflow = zone_inflow
        self.night_start = night_start
        self.night_end = night_end
        self.threshold = threshold
        self.history_days = history_days
        self.raise_after = raise_after
        self.clear_after = clear_after
        self.timezone = timezone
        self._check_parameters()
        self.reset()

    def _check_parameters(self) -> None:
        if not self.zone_inflow:
            raise ValueError("zone_inflow needs at least one (sensor, sign) pair")
        for pair in self.zone_inflow:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and pair[1] in (1, -1)):
                raise ValueError(f"zone_inflow entry {pair!r} must be (sensor, +1 or -1)")
            check_id("zone_inflow sensor", pair[0])
        if len({s for s, _ in self.zone_inflow}) != len(self.zone_inflow):
            raise ValueError("zone_inflow lists a sensor twice")
        parse_clock(self.night_start), parse_clock(self.night_end), zone_info(self.timezone)
        if not 0 < self.threshold < 10:
            raise ValueError(f"threshold is a fraction above baseline (0.2 = 20 %), got {self.threshold}")
        for name in ("history_days", "raise_after", "clear_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.history_days < MIN_HISTORY_NIGHTS:
            raise ValueError(f"history_days must be at least {MIN_HISTORY_NIGHTS}")

    def reset(self) -> None:
        """Forget all nights, history and alert state."""
        self.signs_ = {sensor: sign for sensor, sign in self.zone_inflow}
        self.night_: tuple[date, int, int] | None = None  # (date, start_ms, end_ms) being collected
        self.samples_: dict[int, dict[str, float | None]] = {}  # time_ms -> {sensor: value or None}
        self.step_ms_: int | None = None  # smallest gap seen between inflow timestamps
        self.last_time_ms_: int | None = None
        self.history_: deque[float] = deque(maxlen=self.history_days)  # MNF of unflagged nights
        self.flagged_run_ = 0
        self.normal_run_ = 0
        self.run_start_: tuple[date, int] | None = None  # (date, start_ms) of the first night of the flagged run
        self.alert_: tuple[str, int] | None = None  # (alert_id, since_ms) while raised

    def state(self) -> dict:
        """The night being collected, the baseline nights, the flagged/normal runs and the open alert."""
        night = self.night_
        return {
            "night": None if night is None else [night[0].isoformat(), night[1], night[2]],
            "samples": [[t, [[s, v] for s, v in values.items()]] for t, values in self.samples_.items()],
            "step_ms": self.step_ms_,
            "last_time_ms": self.last_time_ms_,
            "history": [sj.number(v) for v in self.history_],
            "flagged_run": self.flagged_run_,
            "normal_run": self.normal_run_,
            "run_start": None if self.run_start_ is None else [self.run_start_[0].isoformat(), self.run_start_[1]],
            "alert": sj.alert_pair(self.alert_),
        }

    def restore(self, state: dict) -> None:
        """Take back ``state()``; ValueError (and nothing changed) if it is malformed or not this zone's."""
        owner = f"night-flow detector {self.model!r}"

        def get(key):
            return sj.field(state, key, owner)

        def day(value, what):
            try:
                return date.fromisoformat(sj.text(value, what))
            except ValueError:
                raise ValueError(f"{what} must be a date (YYYY-MM-DD), got {value!r}") from None

        night = get("night")
        if night is not None:
            d, start, end = sj.listing(night, "night", 3)
            night = (day(d, "night date"), sj.integer(start, "night start"), sj.integer(end, "night end"))
        samples: dict[int, dict[str, float | None]] = {}
        for item in sj.listing(get("samples"), "samples"):
            t, values = sj.listing(item, "a night sample", 2)
            row: dict[str, float | None] = {}
            for pair in sj.listing(values, "a night sample's values"):
                sensor, value = sj.listing(pair, "a sensor value", 2)
                if sensor not in self.signs_:
                    raise ValueError(f"{owner}: the saved night holds sensor {sensor!r}, not one of this zone")
                row[sensor] = sj.optional(value, sj.real, f"{sensor} value")
            samples[sj.integer(t, "sample time")] = row
        history = [sj.real(v, "a baseline night") for v in sj.listing(get("history"), "history")]
        if len(history) > self.history_days:
            raise ValueError(f"{owner}: {len(history)} baseline nights saved, history_days is {self.history_days}")
        run_start = get("run_start")
        if run_start is not None:
            d, since = sj.listing(run_start, "run_start", 2)
            run_start = (day(d, "run_start date"), sj.integer(since, "run_start time"))
        restored = {
            "night_": night,
            "samples_": samples,
            "step_ms_": sj.optional(get("step_ms"), sj.integer, "step_ms"),
            "last_time_ms_": sj.optional(get("last_time_ms"), sj.integer, "last_time_ms"),
            "history_": deque(history, maxlen=self.history_days),
            "flagged_run_": sj.integer(get("flagged_run"), "flagged_run"),
            "normal_run_": sj.integer(get("normal_run"), "normal_run"),
            "run_start_": run_start,
            "alert_": sj.alert(get("alert"), "alert"),
        }
        self.__dict__.update(restored)

    def update(self, reading: Reading) -> list[Output]:
        """Consume one reading; return the decisions of every night that ended before it."""
        sign = self.signs_.get(reading.sensor)
        if sign is None:
            return []
        t = reading.time_ms
        if self.last_time_ms_ is not None and t != self.last_time_ms_:
            gap = t - self.last_time_ms_
            if gap > 0 and (self.step_ms_ is None or gap < self.step_ms_):
                self.step_ms_ = gap
        if self.last_time_ms_ is None or t > self.last_time_ms_:
            self.last_time_ms_ = t
        night = self.night_ or night_after(t, self.night_start, self.night_end, self.timezone)
        out: list[Output] = []
        while t >= night[2]:
            out += self._close_night(night)
            night = self.night_ = night_after(night[2], self.night_start, self.night_end, self.timezone)
        self.night_ = night
        if night[1] <= t:
            raw = reading.value if reading.quality in _USABLE else None
            value = float(raw) if raw is not None and math.isfinite(raw) else None
            self.samples_.setdefault(t, {})[reading.sensor] = value
        return out

    def _close_night(self, night: tuple[date, int, int]) -> list[Output]:
        night_date, start_ms, end_ms = night
        mnf = self._night_mnf(start_ms, end_ms)
        self.samples_ = {}
        if math.isnan(mnf):
            return [
                self._detection(
                    night_date,
                    start_ms,
                    end_ms,
                    INSUFFICIENT,
                    0.0,
                    {"reason": "a zone inflow meter was missing or unknown during the night"},
                )
            ]
        if len(self.history_) < MIN_HISTORY_NIGHTS:
            self.history_.append(mnf)
            return [
                self._detection(
                    night_date,
                    start_ms,
                    end_ms,
                    INSUFFICIENT,
                    0.0,
                    {
                        "mnf_lps": round(mnf, 3),
                        "reason": f"baseline has {len(self.history_) - 1} of {MIN_HISTORY_NIGHTS} nights needed",
                    },
                )
            ]
        baseline = min(self.history_)
        score = mnf / baseline - 1.0 if baseline > 0 else 0.0
        explanation = {
            "mnf_lps": round(mnf, 3),
            "baseline_lps": round(baseline, 3),
            "excess_lps": round(mnf - baseline, 3),
            "baseline_nights": len(self.history_),
        }
        flagged = baseline > 0 and score > self.threshold
        detection = self._detection(night_date, start_ms, end_ms, LEAK if flagged else NORMAL, score, explanation)
        if not flagged:
            self.history_.append(mnf)
        return [detection, *self._persist(flagged, night_date, start_ms, end_ms, detection)]

    def _night_mnf(self, start_ms: int, end_ms: int) -> float:
        if self.step_ms_ is None or not self.samples_:
            return float("nan")
        times = np.array(sorted(self.samples_), dtype=np.int64)
        inflow = np.full(times.shape[0], np.nan)
        for i, t in enumerate(times.tolist()):
            values = {s: v for s, v in self.samples_[t].items() if v is not None}
            if len(values) == len(self.signs_) == len(self.samples_[t]):
                inflow[i] = sum(self.signs_[s] * v for s, v in values.items())
        try:
            return night_mnf(times, inflow, start_ms, end_ms, self.step_ms_, ROLLING_MS)
        except ValueError:  # the step seen does not divide the night: samples are irregular
            return float("nan")

    def _persist(
        self, flagged: bool, night_date: date, start_ms: int, end_ms: int, detection: Detection
    ) -> list[Alert]:
        if flagged:
            self.normal_run_ = 0
            self.flagged_run_ += 1
            if self.flagged_run_ == 1:
                self.run_start_ = (night_date, start_ms)
            if self.alert_ is None and self.flagged_run_ >= self.raise_after:
                assert self.run_start_ is not None  # set by the first night of this run
                first_date, since_ms = self.run_start_
                self.alert_ = (f"leak-{first_date.isoformat()}", since_ms)
                return [self._alert(AlertState.RAISED, end_ms, detection, self._raise_message(detection))]
            return []
        self.flagged_run_ = 0
        self.normal_run_ += 1
        if self.alert_ is not None and self.normal_run_ >= self.clear_after:
            alert = self._alert(AlertState.CLEARED, end_ms, detection, self._clear_message(detection))
            self.alert_ = None
            return [alert]
        return []

    def _severity(self, score: float) -> Severity:
        return Severity.CRITICAL if score >= CRITICAL_FACTOR * self.threshold else Severity.WARNING

    def _detection(
        self, night_date: date, start_ms: int, end_ms: int, label: str, score: float, explanation: dict
    ) -> Detection:
        severity = self._severity(score) if label == LEAK else Severity.INFO
        explanation = {"night": night_date.isoformat(), "sensors": list(self.signs_), **explanation}
        return self.detection(end_ms, label, score, severity, start_ms, end_ms, explanation)

    def _alert(self, state: AlertState, time_ms: int, detection: Detection, message: str) -> Alert:
        assert self.alert_ is not None  # an alert is only built while one is raised
        alert_id, since_ms = self.alert_
        severity = self._severity(detection.score) if state is AlertState.RAISED else Severity.INFO
        return self.alert(
            time_ms,
            alert_id,
            state,
            LEAK,
            severity,
            detection.score,
            message,
            since_ms=since_ms,
            explanation=detection.explanation,
        )

    def _raise_message(self, detection: Detection) -> str:
        e = detection.explanation
        return (
            f"Night flow {e['mnf_lps']:.1f} L/s is {detection.score:.0%} above the "
            f"{e['baseline_nights']}-night baseline {e['baseline_lps']:.1f} L/s: "
            f"possible leak of about {e['excess_lps']:.1f} L/s"
        )

    def _clear_message(self, detection: Detection) -> str:
        e = detection.explanation
        return (
            f"Night flow {e['mnf_lps']:.1f} L/s has been within {self.threshold:.0%} of the "
            f"{e['baseline_nights']}-night baseline {e['baseline_lps']:.1f} L/s for {self.normal_run_} "
            f"nights: leak alert cleared"
        )
