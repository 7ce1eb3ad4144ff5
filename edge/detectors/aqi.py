"""European Air Quality Index as a streaming detector: hourly bands per pollutant sensor and station, and alerts.

Every full hour (UTC, data time) each configured sensor gets a Detection of kind
``aqi`` whose label is its EAQI band over its averaging window (24 h for PM, 1 h for
NO2 and O3; ``insufficient_data`` below 75 % coverage). Its ``model`` is
``<model>.<sensor>``, so InfluxDB keeps one series per sensor. The station index (the
worst band of the sensors with data, as the EEA shows it) is one more Detection
under ``<model>``.

Alerts follow the station index with persistence, so a value hovering on a bound
never flaps: the index moves up to a band only when it has been at least that band in each
of the last ``raise_after`` hours, and down only when it has been at most that band
in each of the last ``clear_after`` hours with every sensor reporting (a silent
sensor cannot show that the air got better). An alert is raised when the index reaches ``alert_from`` (``poor``), raised
again (same id) when it moves between alert bands, and cleared below.

>>> from edge.contracts import Reading
>>> det = AqiDetector("centre", "gw-1", [("NO2-kerb", "no2")], raise_after=2, clear_after=2)
>>> t0 = 1_772_409_600_000  # 2026-03-02T00:00Z
>>> no2 = [60] * 12 + [250] * 24 + [60] * 36  # 5-minute values: 1 h fair, 2 h very poor, 3 h fair
>>> out = [o for k, v in enumerate(no2) for o in det.update(
...     Reading(t0 + k * 300_000, "centre", "gw-1", "NO2-kerb", "no2", float(v), "ug/m3"))]
>>> [(o.model, o.label) for o in out if hasattr(o, "window_start_ms") and o.model == "eaqi"]
[('eaqi', 'fair'), ('eaqi', 'very_poor'), ('eaqi', 'very_poor'), ('eaqi', 'fair'), ('eaqi', 'fair')]
>>> [(a.state.value, a.label, (a.time_ms - t0) // 3_600_000) for a in out if hasattr(a, "alert_id")]
[('raised', 'very_poor', 3), ('cleared', 'fair', 5)]
>>> [a.message for a in out if hasattr(a, "alert_id")][0]
'Air quality very poor (EAQI 5) since 01:00 UTC: NO2-kerb NO2 1-h mean 250.0 ug/m3'
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from edge.air.eaqi import AVERAGING_HOURS, BANDS, HOUR_MS, MIN_COVERAGE, band_index, pollutant_of, window_mean
from edge.contracts import Alert, AlertState, Detection, Quality, Reading, Severity, check_id, ms_to_datetime
from edge.detectors import state_json as sj
from edge.detectors.base import Detector, Output

KIND = "aqi"
INSUFFICIENT = "insufficient_data"
_USABLE = (Quality.OK, Quality.SUSPECT)
MAX_WINDOW_MS = max(AVERAGING_HOURS.values()) * HOUR_MS
_NAMES = {"pm25": "PM2.5", "pm10": "PM10", "no2": "NO2", "o3": "O3"}


def severity_of(band: int) -> Severity:
    """The severity of an EAQI band index: critical from very poor, warning from poor, else info."""
    return (
        Severity.CRITICAL
        if band >= BANDS.index("very_poor")
        else (Severity.WARNING if band >= BANDS.index("poor") else Severity.INFO)
    )


class AqiDetector(Detector):
    """Streaming EAQI over a few pollutant sensors of one station."""

    kind = KIND

    def __init__(
        self,
        site: str,
        gateway: str,
        sensors: list[tuple[str, str]],
        alert_from: str = "poor",
        raise_after: int = 2,
        clear_after: int = 3,
        min_coverage: float = MIN_COVERAGE,
        model: str = "eaqi",
        model_version: str = "1",
    ) -> None:
        super().__init__(site, gateway, model=model, model_version=model_version)
        self.sensors = sensors
        self.alert_from = alert_from
        self.raise_after = raise_after
        self.clear_after = clear_after
        self.min_coverage = min_coverage
        self._check_parameters()
        self.reset()

    def _check_parameters(self) -> None:
        check_id("model and hour (alert id)", f"{self.model}-20260101T0000")
        if not self.sensors:
            raise ValueError("the AQI detector needs at least one (sensor, quantity) pair")
        for sensor, quantity in self.sensors:
            check_id("model and sensor", f"{self.model}.{sensor}")  # the per-sensor model name must be an id
            pollutant_of(quantity)
        if len({s for s, _ in self.sensors}) != len(self.sensors):
            raise ValueError("the AQI detector lists a sensor twice")
        if self.alert_from not in BANDS:
            raise ValueError(f"alert_from must be one of {', '.join(BANDS)}, got {self.alert_from!r}")
        for name in ("raise_after", "clear_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of hours >= 1, got {value!r}")
        if not 0 < self.min_coverage <= 1:
            raise ValueError(f"min_coverage is a fraction in (0, 1], got {self.min_coverage}")

    def reset(self) -> None:
        """Forget all samples, bands and alert state."""
        self.pollutants_ = {sensor: pollutant_of(quantity) for sensor, quantity in self.sensors}
        self.samples_: dict[str, deque[tuple[int, float]]] = {sensor: deque() for sensor, _ in self.sensors}
        # the shortest reporting interval seen per sensor
        self.step_ms_: dict[str, int | None] = {sensor: None for sensor, _ in self.sensors}
        self.next_end_ms_: int | None = None  # end of the next hour to evaluate
        self.newest_ms_: int | None = None  # newest usable sample
        self.skipped_hours_ = 0
        self.confirmed_: int | None = None  # station band index confirmed with persistence
        # (band, complete, end_ms) of the last hours
        self.history_: deque[tuple[int | None, bool, int]] = deque(maxlen=max(self.raise_after, self.clear_after))
        self.alert_: tuple[str, int] | None = None  # (alert_id, since_ms) while raised

    def state(self) -> dict:
        """Each sensor's samples of its averaging window, the hours held for persistence, the open alert."""
        return {
            "samples": {s: [[t, v] for t, v in samples] for s, samples in self.samples_.items()},
            "step_ms": dict(self.step_ms_),
            "next_end_ms": self.next_end_ms_,
            "newest_ms": self.newest_ms_,
            "skipped_hours": self.skipped_hours_,
            "confirmed": self.confirmed_,
            "history": [[b, c, t] for b, c, t in self.history_],
            "alert": sj.alert_pair(self.alert_),
        }

    def restore(self, state: dict) -> None:
        """Take back ``state()``; ValueError (and nothing changed) if it is malformed or of other sensors."""
        owner = f"EAQI detector {self.model!r}"
        sensors = set(self.pollutants_)

        def get(key):
            return sj.field(state, key, owner)

        samples = {
            sensor: deque(
                (sj.integer(t, "sample time"), sj.real(v, f"{sensor} sample"))
                for t, v in (sj.listing(p, f"{sensor} sample", 2) for p in sj.listing(items, f"{sensor} samples"))
            )
            for sensor, items in sj.mapping(get("samples"), "samples", sensors).items()
        }
        history: deque[tuple[int | None, bool, int]] = deque(maxlen=self.history_.maxlen)
        for item in sj.listing(get("history"), "history"):
            b, complete, end = sj.listing(item, "an hour of history", 3)
            history.append((sj.optional(b, sj.integer, "band"), sj.flag(complete, "complete"), sj.integer(end, "end")))
        confirmed = sj.optional(get("confirmed"), sj.integer, "confirmed")
        if confirmed is not None and not 0 <= confirmed < len(BANDS):
            raise ValueError(f"{owner}: confirmed band {confirmed} is no EAQI band")
        restored = {
            "samples_": samples,
            "step_ms_": {
                s: sj.optional(v, sj.integer, f"{s} step")
                for s, v in sj.mapping(get("step_ms"), "step_ms", sensors).items()
            },
            "next_end_ms_": sj.optional(get("next_end_ms"), sj.integer, "next_end_ms"),
            "newest_ms_": sj.optional(get("newest_ms"), sj.integer, "newest_ms"),
            "skipped_hours_": sj.integer(get("skipped_hours"), "skipped_hours"),
            "confirmed_": confirmed,
            "history_": history,
            "alert_": sj.alert(get("alert"), "alert"),
        }
        self.__dict__.update(restored)

    def update(self, reading: Reading) -> list[Output]:
        """Consume one reading; return the decisions of every full hour that ended at or before it."""
        if reading.sensor not in self.pollutants_:
            return []
        t = reading.time_ms
        if self.next_end_ms_ is None:
            self.next_end_ms_ = t - t % HOUR_MS + HOUR_MS
        out: list[Output] = []
        while t >= self.next_end_ms_:
            empty_from = -1 if self.newest_ms_ is None else self.newest_ms_ + MAX_WINDOW_MS
            if t - self.next_end_ms_ >= MAX_WINDOW_MS and self.next_end_ms_ > empty_from:
                # A gap longer than any window: every hour left in it is empty. Skip, don't flood.
                skip_to = t - t % HOUR_MS + HOUR_MS
                self.skipped_hours_ += (skip_to - self.next_end_ms_) // HOUR_MS
                self.next_end_ms_ = skip_to
                break
            out += self._evaluate(self.next_end_ms_)
            self.next_end_ms_ += HOUR_MS
        value = reading.value
        if reading.quality in _USABLE and value is not None and math.isfinite(value):
            samples = self.samples_[reading.sensor]
            if samples and t > samples[-1][0]:
                gap, step = t - samples[-1][0], self.step_ms_[reading.sensor]
                self.step_ms_[reading.sensor] = gap if step is None else min(step, gap)
            samples.append((t, float(value)))
            self.newest_ms_ = t if self.newest_ms_ is None else max(self.newest_ms_, t)
        return out

    def _evaluate(self, end_ms: int) -> list[Output]:
        out: list[Output] = []
        bands: dict[str, tuple[int, float]] = {}
        for sensor, pollutant in self.pollutants_.items():
            hours = AVERAGING_HOURS[pollutant]
            samples = self.samples_[sensor]
            while samples and samples[0][0] < end_ms - hours * HOUR_MS:  # too old for this and later windows
                samples.popleft()
            times = np.fromiter((s[0] for s in samples), dtype=np.int64, count=len(samples))
            values = np.fromiter((s[1] for s in samples), dtype=float, count=len(samples))
            mean, coverage = window_mean(times, values, end_ms, hours, self.step_ms_[sensor])
            explanation = {
                "sensor": sensor,
                "pollutant": pollutant,
                "averaging_h": hours,
                "coverage": round(coverage, 3),
            }
            if coverage >= self.min_coverage:
                band = band_index(pollutant, mean)
                bands[sensor] = (band, mean)
                explanation.update(mean_ugm3=round(mean, 2), eaqi_level=band + 1)
                out.append(self._detection(f"{self.model}.{sensor}", end_ms, hours, BANDS[band], band, explanation))
            else:
                out.append(self._detection(f"{self.model}.{sensor}", end_ms, hours, INSUFFICIENT, None, explanation))
        complete = len(bands) == len(self.pollutants_)
        if bands:
            worst = max(b for b, _ in bands.values())
            dominant = [s for s, (b, _) in bands.items() if b == worst]
            overall = self._detection(
                self.model,
                end_ms,
                24,
                BANDS[worst],
                worst,
                {"dominant": dominant, "sensors_with_data": len(bands), "sensors": list(self.pollutants_)},
            )
            out.append(overall)
            out += self._persist(worst, complete, end_ms, overall, bands)
        else:
            out.append(
                self._detection(
                    self.model,
                    end_ms,
                    24,
                    INSUFFICIENT,
                    None,
                    {"sensors_with_data": 0, "sensors": list(self.pollutants_)},
                )
            )
            self._persist(None, False, end_ms, None, bands)
        return out

    def _persist(
        self,
        band: int | None,
        complete: bool,
        end_ms: int,
        detection: Detection | None,
        bands: dict[str, tuple[int, float]],
    ) -> list[Alert]:
        self.history_.append((band, complete, end_ms))
        recent = list(self.history_)
        up, down = recent[-self.raise_after :], recent[-self.clear_after :]
        new: int | None = None
        since = 0
        if len(up) == self.raise_after and all(b is not None for b, _, _ in up):
            held = min(b for b, _, _ in up if b is not None)  # the band reached in each of the last raise_after hours
            if self.confirmed_ is None or held > self.confirmed_:
                new, since = held, up[0][2] - HOUR_MS
        if (
            new is None
            and self.confirmed_ is not None
            and len(down) == self.clear_after
            and all(b is not None and c for b, c, _ in down)
        ):
            held = max(
                b for b, _, _ in down if b is not None
            )  # no sensor above this in each of the last clear_after hours
            if held < self.confirmed_:
                new, since = held, down[0][2] - HOUR_MS
        if new is None or detection is None:
            return []
        old, self.confirmed_ = self.confirmed_, new
        threshold = BANDS.index(self.alert_from)
        was, now = old is not None and old >= threshold, new >= threshold
        if now and not was:
            self.alert_ = (f"{self.model}-{ms_to_datetime(since).strftime('%Y%m%dT%H%M')}", since)
            return [self._alert(AlertState.RAISED, end_ms, new, detection, self._message(new, old, since, bands))]
        if now and was and new != old:
            return [self._alert(AlertState.RAISED, end_ms, new, detection, self._message(new, old, since, bands))]
        if was and not now:
            alert = self._alert(
                AlertState.CLEARED,
                end_ms,
                new,
                detection,
                f"Air quality back to {BANDS[new].replace('_', ' ')} (EAQI {new + 1}) for "
                f"{self.clear_after} h: alert cleared",
            )
            self.alert_ = None
            return [alert]
        return []

    def _message(self, new: int, old: int | None, since: int, bands: dict[str, tuple[int, float]]) -> str:
        verb = "" if old is None or old < BANDS.index(self.alert_from) else ("rose to " if new > old else "eased to ")
        worst = [(s, m) for s, (b, m) in bands.items() if b == max(b for b, _ in bands.values())]
        causes = ", ".join(
            f"{s} {_NAMES[self.pollutants_[s]]} {AVERAGING_HOURS[self.pollutants_[s]]}-h mean {m:.1f} ug/m3"
            for s, m in worst
        )
        return (
            f"Air quality {verb}{BANDS[new].replace('_', ' ')} (EAQI {new + 1}) since "
            f"{ms_to_datetime(since).strftime('%H:%M')} UTC: {causes}"
        )[:500]

    def _detection(
        self, model: str, end_ms: int, hours: int, label: str, band: int | None, explanation: dict
    ) -> Detection:
        return self.detection(
            end_ms,
            label,
            float(band + 1) if band is not None else 0.0,
            severity_of(band) if band is not None else Severity.INFO,
            end_ms - hours * HOUR_MS,
            end_ms,
            explanation,
            model=model,
        )

    def _alert(self, state: AlertState, time_ms: int, band: int, detection: Detection, message: str) -> Alert:
        assert self.alert_ is not None  # an alert is only built while one is raised
        alert_id, since_ms = self.alert_
        severity = severity_of(band) if state is AlertState.RAISED else Severity.INFO
        return self.alert(
            time_ms,
            alert_id,
            state,
            BANDS[band],
            severity,
            float(band + 1),
            message,
            since_ms=since_ms,
            explanation=detection.explanation,
        )
