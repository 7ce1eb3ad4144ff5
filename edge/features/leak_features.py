"""Leak features of a metered zone, one code path for training, evaluation and the device.

The zone's own recent days are its model of normal. Channels: the zone inflow (sum
of the flow meters, positive into the zone: the flow balance), each pressure, each
pairwise pressure difference (a leak moves nearby sensors more than far ones, while
tank levels and source heads move them together), and optionally the presence count.

- Expected daily pattern: per time-of-day slot, the median over the last
  ``baseline_days`` *accepted* days; expected weekly pattern: the median over accepted
  days of the same weekday (the daily one until there is one). A day is accepted only
  if it is well covered and no alarm was raised in it (training: no leak in it), so a
  leak never becomes the new normal.
- Residual = value - expected; features are residual means over the last 1, 6 and
  24 h (rolling windows across midnight), flows relative to the zone's mean inflow,
  pressures as z-scores of their usual spread (compressed: sign * log(1 + |z|)),
  aggregated over sensors (min, mean, max) so the vector does not depend on how many
  sensors a zone has; plus the excess
  of the last night's Minimum Night Flow over its baseline (``night_flow.night_mnf``).

A row is valid only with a baseline of ``min_baseline_days`` accepted days, every
sensor present at that step and at least half of each window present: otherwise the
detector says "insufficient data" (a gap never looks like a leak).

Days are UTC days of ``steps_per_day`` slots. Training calls ``features`` on whole
days; the device calls ``features(today_so_far, last_only=True)``; both see the same
numbers because the same arrays go through the same code.

>>> layout = LeakFeatureLayout(step_s=3600, n_flow=1, n_pressure=2, min_baseline_days=1)
>>> state = LeakFeatureState(layout)
>>> day = zone_channels(layout, np.column_stack([np.full(24, 100.0), np.full(24, 40.0), np.full(24, 30.0)]))
>>> t0 = 1_772_409_600_000  # 2026-03-02, a Monday
>>> state.start_day(t0); X, valid = state.features(day); bool(valid.any())
False
>>> state.end_day(day, accepted=True)
>>> state.start_day(t0 + DAY_MS)
>>> values = np.column_stack([np.full(24, 110.0), np.full(24, 39.0), np.full(24, 30.0)])
>>> leaky = zone_channels(layout, values)  # 10 % more inflow, one pressure 1 m down
>>> X, valid = state.features(leaky[:6], last_only=True)  # 6 h of a 24 h window: too little yet
>>> valid.tolist()
[False]
>>> X, valid = state.features(leaky[:14], last_only=True)
>>> f = dict(zip(layout.feature_names, X[0].round(2).tolist()))  # z = -20 -> -log(21)
>>> valid.tolist(), f["inflow_rel_6h"], f["pressure_min_z_6h"], f["pdiff_max_z_6h"]
([True], 0.1, -3.04, 3.04)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.ma  # noqa: F401  # np.nanmedian of small arrays imports it lazily: pay it (1.8 MB) at load, not on day 4

from edge.features.night_flow import night_mnf, parse_clock

DAY_MS = 86_400_000
WINDOWS_H = (1, 6, 24)
MIN_WINDOW_COVERAGE = 0.5
MIN_DAY_COVERAGE = 0.8  # of steps with every sensor, for a day to enter the baseline
PRESSURE_FLOOR_M = 0.05  # z-scores never divide by less (sensor resolution)
LEVEL_FLOOR = 0.1  # L/s, people: relative residuals never divide by less
# Relative features are clipped and z-scores compressed (sign * log(1 + |z|)): a burst
# far off the scale must not stretch the int8 ranges of the exported model.
MAX_RELATIVE = 5.0


@dataclass(frozen=True)
class LeakFeatureLayout:
    """What a zone's feature vector is made of; stored with a model so the device rebuilds it exactly."""

    step_s: int
    n_flow: int
    n_pressure: int
    presence: bool = False
    baseline_days: int = 7
    history_days: int = 28
    min_baseline_days: int = 3
    night_start: str = "02:00"
    night_end: str = "04:00"

    def __post_init__(self) -> None:
        if self.step_s <= 0 or 3600 % self.step_s:
            raise ValueError(f"the sample step must divide one hour (5, 10, 15, 20, 30 min...), got {self.step_s} s")
        if self.n_flow < 1 or self.n_pressure < 0:
            raise ValueError("a zone needs at least one flow meter")
        if not 1 <= self.min_baseline_days <= self.baseline_days <= self.history_days:
            raise ValueError("need 1 <= min_baseline_days <= baseline_days <= history_days")
        start, end = parse_clock(self.night_start), parse_clock(self.night_end)
        if not start < end:
            raise ValueError("the night window must not cross midnight")

    @property
    def steps_per_day(self) -> int:
        return 86_400 // self.step_s

    @property
    def n_sensors(self) -> int:
        return self.n_flow + self.n_pressure + int(self.presence)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.n_pressure) for j in range(i + 1, self.n_pressure)]

    @property
    def n_channels(self) -> int:
        return 1 + self.n_pressure + len(self.pairs) + int(self.presence)

    @property
    def feature_names(self) -> list[str]:
        names = [f"inflow_rel_{w}h" for w in WINDOWS_H] + ["inflow_week_rel_24h", "inflow_cv", "mnf_excess"]
        names += [f"pressure_min_z_{w}h" for w in WINDOWS_H] + [f"pressure_mean_z_{w}h" for w in WINDOWS_H]
        names += ["pressure_week_min_z_24h", "pdiff_max_z_6h", "pdiff_max_z_24h"]
        if self.presence:
            names += ["presence_rel_6h", "presence_rel_24h"]
        return names

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LeakFeatureLayout:
        return cls(**data)


def zone_channels(layout: LeakFeatureLayout, values: np.ndarray) -> np.ndarray:
    """Sensor values [T, flows + pressures (+ presence)] -> channels [T, C]; NaN in a flow makes the inflow NaN."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != layout.n_sensors:
        raise ValueError(f"need values of shape (steps, {layout.n_sensors}), got {values.shape}")
    nf, np_ = layout.n_flow, layout.n_pressure
    pressures = values[:, nf : nf + np_]
    parts = [values[:, :nf].sum(axis=1, keepdims=True), pressures]
    if layout.pairs:
        i, j = np.array(layout.pairs).T
        parts.append(pressures[:, i] - pressures[:, j])
    if layout.presence:
        parts.append(values[:, -1:])
    return np.hstack(parts)


@dataclass
class _Day:
    channels: np.ndarray  # [steps_per_day, C]
    weekday: int
    accepted: bool
    mnf: float


class LeakFeatureState:
    """The baseline (accepted days) and the residuals of the last 24 h; feed it day by day."""

    def __init__(self, layout: LeakFeatureLayout):
        self.layout = layout
        self.reset()

    def reset(self) -> None:
        lay = self.layout
        self.days_: deque[_Day] = deque(maxlen=lay.history_days)
        self.tail_ = np.full((lay.steps_per_day - 1, 2 * lay.n_channels), np.nan)  # daily | weekly residuals
        self.day_start_ms_: int | None = None

    @property
    def _day_start(self) -> int:
        """UTC ms of the day being fed; ``start_day`` must have been called."""
        if self.day_start_ms_ is None:
            raise RuntimeError("LeakFeatureState: start_day() was not called")
        return self.day_start_ms_

    # ---- per day ---------------------------------------------------------------------
    @property
    def baseline_days(self) -> int:
        return sum(d.accepted for d in self.days_)

    def start_day(self, day_start_ms: int) -> None:
        """Fix today's expected patterns from the accepted days so far."""
        lay = self.layout
        self.day_start_ms_ = int(day_start_ms)
        weekday = datetime.fromtimestamp(day_start_ms / 1000, tz=UTC).weekday()
        accepted = [d for d in self.days_ if d.accepted]
        self.ready_ = len(accepted) >= lay.min_baseline_days
        if not self.ready_:
            return
        recent = np.stack([d.channels for d in accepted[-lay.baseline_days :]])
        with np.errstate(all="ignore"), _quiet():
            self.expected_ = np.nanmedian(recent, axis=0)
            same = [d.channels for d in accepted if d.weekday == weekday][-3:]
            weekly = np.nanmedian(np.stack(same), axis=0) if same else self.expected_
            self.weekly_ = np.where(np.isnan(weekly), self.expected_, weekly)
            spread = 1.4826 * np.nanmedian(np.abs(recent - self.expected_), axis=(0, 1))
            mnfs = np.array([d.mnf for d in accepted[-lay.baseline_days :]])
            self.mnf_baseline_ = float(np.nanmedian(mnfs)) if np.isfinite(mnfs).any() else math.nan
            level = float(np.nanmean(self.expected_[:, 0]))
        self.inflow_level_ = max(abs(level), LEVEL_FLOOR) if math.isfinite(level) else LEVEL_FLOOR
        self.inflow_cv_ = float(spread[0]) / self.inflow_level_
        self.scale_ = np.maximum(np.nan_to_num(spread, nan=PRESSURE_FLOOR_M), PRESSURE_FLOOR_M)
        if lay.presence:
            with _quiet():
                presence = float(np.nanmean(self.expected_[:, -1]))
            self.presence_level_ = max(abs(presence), LEVEL_FLOOR) if math.isfinite(presence) else LEVEL_FLOOR

    def end_day(self, channels: np.ndarray, accepted: bool) -> None:
        """Store the finished day (accepted into the baseline or not) and keep its last 24 h of residuals."""
        lay = self.layout
        channels = np.array(channels, dtype=np.float64)  # a copy: the caller may reuse its array for the next day
        if channels.shape != (lay.steps_per_day, lay.n_channels):
            raise ValueError(f"a day has shape ({lay.steps_per_day}, {lay.n_channels}), got {channels.shape}")
        start = self._day_start
        weekday = datetime.fromtimestamp(start / 1000, tz=UTC).weekday()
        covered = np.isfinite(channels[:, self._base_channels()]).all(axis=1).mean()
        self.tail_ = np.vstack([self.tail_, self._residuals(channels)])[-(lay.steps_per_day - 1) :]
        self.days_.append(
            _Day(channels, weekday, bool(accepted and covered >= MIN_DAY_COVERAGE), self._night_mnf(channels))
        )

    # ---- per step --------------------------------------------------------------------
    def features(self, today: np.ndarray, last_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows [s, F] (or [1, F]) for today's first s steps, and which rows are valid."""
        lay = self.layout
        today = np.asarray(today, dtype=np.float64)
        s = today.shape[0]
        n_rows = 1 if last_only else s
        n_feat = len(lay.feature_names)
        if not getattr(self, "ready_", False) or s == 0:
            return np.zeros((n_rows, n_feat)), np.zeros(n_rows, dtype=bool)
        r = np.vstack([self.tail_, self._residuals(today)])
        rows = np.arange(r.shape[0] - n_rows, r.shape[0])
        csum = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(np.nan_to_num(r), axis=0)])
        ccount = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(np.isfinite(r), axis=0)])
        means, coverage = {}, {}
        for w in WINDOWS_H:
            n = w * 3600 // lay.step_s
            total, count = csum[rows + 1] - csum[rows + 1 - n], ccount[rows + 1] - ccount[rows + 1 - n]
            with np.errstate(all="ignore"):
                means[w] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            coverage[w] = count / n
        X = self._assemble(means, today, rows - self.tail_.shape[0])
        base = self._base_channels()
        now_ok = np.isfinite(r[rows][:, base]).all(axis=1)
        enough = np.all([(coverage[w][:, base] >= MIN_WINDOW_COVERAGE).all(axis=1) for w in WINDOWS_H], axis=0)
        valid = now_ok & enough & np.isfinite(X).all(axis=1)
        return np.where(valid[:, None], X, 0.0), valid

    def _assemble(self, means: dict, today: np.ndarray, slots: np.ndarray) -> np.ndarray:
        lay = self.layout
        C = lay.n_channels
        P = slice(1, 1 + lay.n_pressure)
        D = slice(1 + lay.n_pressure, 1 + lay.n_pressure + len(lay.pairs))
        cols = [means[w][:, 0] / self.inflow_level_ for w in WINDOWS_H]
        cols += [
            means[24][:, C] / self.inflow_level_,
            np.full(len(slots), self.inflow_cv_),
            self._mnf_excess(today, slots),
        ]
        with np.errstate(all="ignore"), _quiet():
            if lay.n_pressure:
                z = {w: means[w][:, P] / self.scale_[P] for w in WINDOWS_H}
                cols += [np.nanmin(z[w], axis=1) for w in WINDOWS_H] + [np.nanmean(z[w], axis=1) for w in WINDOWS_H]
                cols.append(np.nanmin(means[24][:, C + 1 : C + 1 + lay.n_pressure] / self.scale_[P], axis=1))
            else:
                cols += [np.zeros(len(slots))] * 7
            if lay.pairs:
                cols += [np.nanmax(np.abs(means[w][:, D] / self.scale_[D]), axis=1) for w in (6, 24)]
            else:
                cols += [np.zeros(len(slots))] * 2
        if lay.presence:
            cols += [means[w][:, C - 1] / self.presence_level_ for w in (6, 24)]
        X = np.column_stack(cols)
        zc = self._z_columns
        X[:, zc] = np.sign(X[:, zc]) * np.log1p(np.abs(X[:, zc]))
        X[:, ~zc] = np.clip(X[:, ~zc], -MAX_RELATIVE, MAX_RELATIVE)
        return X

    @property
    def _z_columns(self) -> np.ndarray:
        return np.array([n.startswith(("pressure_", "pdiff_")) for n in self.layout.feature_names])

    def _mnf_excess(self, today: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Relative excess of the last complete night's MNF over the baseline nights' median (0 if unknown)."""
        night_end_slot = _clock_s(self.layout.night_end) // self.layout.step_s
        tonight = self._night_mnf(today) if today.shape[0] >= night_end_slot else math.nan
        last = self.days_[-1].mnf if self.days_ else math.nan
        mnf = np.where(slots >= night_end_slot, tonight, last)
        base = self.mnf_baseline_
        if not math.isfinite(base) or base <= LEVEL_FLOOR:
            return np.zeros(len(slots))
        return np.nan_to_num((mnf - base) / base, nan=0.0)

    def _night_mnf(self, channels: np.ndarray) -> float:
        lay = self.layout
        step_ms = lay.step_s * 1000
        day_start = self._day_start
        start = day_start + _clock_s(lay.night_start) * 1000
        end = day_start + _clock_s(lay.night_end) * 1000
        t = day_start + np.arange(channels.shape[0], dtype=np.int64) * step_ms
        return night_mnf(t, channels[:, 0], start, end, step_ms)

    def _residuals(self, channels: np.ndarray) -> np.ndarray:
        """[s, 2C]: residuals against the daily and the weekly expected pattern (NaN without a baseline)."""
        s = channels.shape[0]
        if not getattr(self, "ready_", False):
            return np.full((s, 2 * self.layout.n_channels), np.nan)
        return np.hstack([channels - self.expected_[:s], channels - self.weekly_[:s]])

    def _base_channels(self) -> np.ndarray:
        lay = self.layout
        base = list(range(1 + lay.n_pressure))
        if lay.presence:
            base.append(lay.n_channels - 1)
        return np.array(base)

    # ---- explanations ----------------------------------------------------------------
    def recent_residuals(self, today: np.ndarray, steps: int) -> tuple[float, np.ndarray]:
        """Mean inflow residual (L/s) and per-pressure z-scores over the last ``steps`` steps."""
        if not getattr(self, "ready_", False):
            return math.nan, np.full(self.layout.n_pressure, np.nan)
        r = np.vstack([self.tail_, self._residuals(np.asarray(today, dtype=np.float64))])[-max(1, steps) :]
        with np.errstate(all="ignore"), _quiet():
            means = np.nanmean(r, axis=0)
        P = slice(1, 1 + self.layout.n_pressure)
        return float(means[0]), means[P] / self.scale_[P]


def _clock_s(text: str) -> int:
    clock = parse_clock(text)
    return clock.hour * 3600 + clock.minute * 60


class _quiet:
    """Silence numpy's 'all-NaN slice' warnings: an all-missing window is handled as NaN on purpose."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
