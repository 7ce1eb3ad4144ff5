"""Air-site window features for the pattern, fault and NO2 virtual-sensor models: one code path, device and training.

Series are 10-minute slots (the slot of mobile-network aggregates), NaN where a slot
has no usable value. A window is the hour of 6 slots ending (exclusive) at slot
index ``end``; its context is the 24 h before ``end``. The fault features judge the
hour ending one slot earlier, so every slot of it has a right-hand neighbour (a
spike differs from both neighbours, a step from one).

Every function takes whole series and an array of window ends and is vectorised, so
training computes thousands of windows at once and the gateway computes one
(``ends=[len(series)]``) with the same code.

>>> import numpy as np
>>> t = 1_762_128_000_000 + np.arange(150) * SLOT_MS       # 2025-11-03, a Monday, 00:00 UTC
>>> x = np.linspace(10, 20, 150)
>>> s = {"pm25": x, "pm10": 2 * x, "no2": x, "temperature": np.full(150, 5.0),
...      "humidity": np.full(150, 50.0), "wind_speed": np.full(150, 3.0), "cell_count": np.full(150, 400.0)}
>>> row = pattern_features(s, t, np.array([150]))[0]
>>> float(row[PATTERN_FEATURES.index("pm_fine_ratio_1h")].round(2))
0.5
>>> spiky = np.r_[x[:-3], 99.0, x[-2:]]                    # one NO2 slot jumps to 99 and back
>>> round(float(fault_features(spiky, "no2", np.array([150]))[0][FAULT_FEATURES.index("spike_score")]), 1)
4.4
"""

from __future__ import annotations

import warnings
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SLOT_MS = 600_000  # 10 min
HOUR_SLOTS = 6
CONTEXT_SLOTS = 144  # 24 h
# Slots a gateway keeps to compute one window of every feature set: the fault window
# looks one slot back further (its lookahead is the last slot) and needs 24 h before that.
HISTORY_SLOTS = CONTEXT_SLOTS + 2
MIN_VALID = 0.5  # share of a window or context that must hold values

# Effective hygroscopicity assumed when drying optical PM for features (the sensor chamber runs
# warmer than the air, so less than the aerosol's own 0.2-0.6).
KAPPA = 0.2
MAX_WATER_ACTIVITY = 0.95  # above this it is fog, not aerosol growth

PATTERN_FEATURES = (
    "pm25_dry_1h",
    "pm25_dry_floor_24h",
    "pm25_dry_floor_6h",
    "pm25_dry_excess_1h",
    "pm25_dry_rise_1h",
    "pm_fine_ratio_1h",
    "no2_1h",
    "no2_excess_1h",
    "no2_floor_24h",
    "cell_rel_1h",
    "temperature_1h",
    "temperature_mean_24h",
    "humidity_1h",
    "hour_sin",
    "hour_cos",
    "weekend",
)
PATTERN_INPUTS = ("pm25", "pm10", "no2", "temperature", "humidity", "cell_count")

# Sensors the fault model judges, and the smallest change each can resolve (scale floor).
FAULT_SENSOR_KINDS = ("pm25", "pm10", "no2", "temperature", "humidity")
SCALE_FLOOR = {"pm25": 0.5, "pm10": 0.5, "no2": 1.0, "temperature": 0.05, "humidity": 0.3}
SATURATION = 999.0  # an optical PM sensor with a dead fan reads 999.9 / 1999.9
# Physical bounds a healthy sensor legitimately sits on for hours (fog at 100 % RH, a
# clean-air or mis-zeroed gas sensor at 0): a flat line there is not a stuck sensor.
BOUND = {"pm25": 0.0, "pm10": 0.0, "no2": 0.0, "humidity": 100.0}
FAULT_FEATURES = (
    "missing_frac",
    "saturated_frac",
    "equal_pairs_frac",
    "equal_pairs_frac_24h",
    "log_std_rel",
    "spike_score",
    "jump_score",
    "level_z",
    "at_bound_frac",
) + tuple(f"kind_{k}" for k in FAULT_SENSOR_KINDS)

NO2_FEATURES = (
    "cell_1h",
    "cell_floor_24h",
    "cell_excess_1h",
    "wind_1h",
    "ventilation_1h",
    "cell_excess_ventilated",
    "temperature_1h",
    "humidity_1h",
    "hour_sin",
    "hour_cos",
    "weekend",
)
NO2_INPUTS = ("cell_count", "wind_speed", "temperature", "humidity")
# The weather-only baseline the virtual sensor must beat: no phones, no clock.
NO2_WEATHER_FEATURES = ("wind_1h", "ventilation_1h", "temperature_1h", "humidity_1h")


def hygroscopic_growth(rh, kappa: float = KAPPA):
    """Factor by which water uptake inflates optical PM mass: 1 + (kappa/1.65) / (1/aw - 1), aw = RH/100.

    Crilley et al. 2018 (AMT 11, 709); aw is capped at 0.95 (fog is not aerosol growth).

    >>> [round(float(hygroscopic_growth(rh)), 2) for rh in (0, 50, 70, 90)]
    [1.0, 1.12, 1.28, 2.09]
    """
    aw = np.clip(np.asarray(rh, dtype=float) / 100.0, 0.0, MAX_WATER_ACTIVITY)
    with np.errstate(divide="ignore"):
        inverse = np.where(aw > 0, 1.0 / np.where(aw > 0, aw, 1.0) - 1.0, np.inf)
    return 1.0 + (kappa / 1.65) / inverse


def _utc_offset_s(time_s: int, zone: ZoneInfo) -> float:
    """Seconds ``zone`` is ahead of UTC at ``time_s``."""
    offset = datetime.fromtimestamp(time_s, tz=zone).utcoffset()
    return 0.0 if offset is None else offset.total_seconds()  # never None: the datetime is aware


def local_clock(time_ms, tz: str = "UTC") -> tuple[np.ndarray, np.ndarray]:
    """Local hour of day (float) and weekend flag for UTC ms times.

    >>> h, w = local_clock(np.array([1_762_128_000_000]), "Europe/Paris")  # 00:00 UTC Monday
    >>> float(h[0]), bool(w[0])
    (1.0, False)
    """
    t = np.asarray(time_ms, dtype=np.int64)
    if tz == "UTC":
        local_s = t // 1000
    else:
        zone = ZoneInfo(tz)
        hours = t // 3_600_000
        unique, inverse = np.unique(hours, return_inverse=True)
        offsets = np.array([_utc_offset_s(int(h) * 3600, zone) for h in unique], dtype=np.int64)
        local_s = t // 1000 + offsets[inverse]
    hour = (local_s % 86400) / 3600.0
    weekday = (local_s // 86400 + 3) % 7  # 1970-01-01 was a Thursday
    return hour, weekday >= 5


def _windows(x: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Rows x[end-length:end] for every end (ends must be >= length)."""
    view = sliding_window_view(np.asarray(x, dtype=float), length)
    return view[np.asarray(ends) - length]


def _check_ends(n: int, ends: np.ndarray, need: int) -> np.ndarray:
    ends = np.asarray(ends, dtype=np.int64).reshape(-1)
    if ends.size and (ends.min() < need or ends.max() > n):
        raise ValueError(
            f"window ends must lie in {need}..{n} (24 h of context before each), got {ends.min()}..{ends.max()}"
        )
    return ends


def _stat(func, rows: np.ndarray, min_valid: float = MIN_VALID, **kw) -> np.ndarray:
    """A NaN-aware row statistic, NaN where fewer than ``min_valid`` of the row holds values."""
    valid = np.mean(~np.isnan(rows), axis=1) if rows.shape[1] else np.zeros(rows.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: masked just below
        value = func(rows, axis=1, **kw)
    return np.where(valid >= min_valid, value, np.nan)


def _series(series, names, n: int | None = None) -> tuple[dict[str, np.ndarray], int]:
    missing = [k for k in names if k not in series]
    if missing:
        raise ValueError(f"air features need series {', '.join(missing)}")
    out = {k: np.asarray(series[k], dtype=float) for k in names}
    lengths = {v.shape[0] for v in out.values()}
    if len(lengths) != 1 or (n is not None and lengths != {n}):
        raise ValueError(f"air series must all have the same length (got {sorted(lengths)})")
    return out, lengths.pop()


def _clock_columns(time_ms, ends, tz: str) -> list[np.ndarray]:
    # The clock of the window's middle (half an hour before its end).
    t = np.asarray(time_ms, dtype=np.int64)[ends - 1] + SLOT_MS - 1_800_000
    hour, weekend = local_clock(t, tz)
    return [np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24), weekend.astype(float)]


def dry_pm25(pm25, humidity, kappa: float = KAPPA):
    """Optical PM2.5 with the water uptake divided out (NaN stays NaN)."""
    return np.asarray(pm25, dtype=float) / hygroscopic_growth(humidity, kappa)


def pattern_features(series, time_ms, ends, tz: str = "UTC") -> np.ndarray:
    """Rows of PATTERN_FEATURES for the hours ending at ``ends``; NaN where data are insufficient."""
    s, n = _series(series, PATTERN_INPUTS)
    ends = _check_ends(n, ends, CONTEXT_SLOTS)
    for k in ("pm25", "pm10"):  # a dead fan's code is not air: leave the hour to the fault detector
        s[k] = np.where(s[k] >= SATURATION, np.nan, s[k])
    pm = dry_pm25(s["pm25"], s["humidity"])
    pm_w, pm_c = _windows(pm, ends, HOUR_SLOTS), _windows(pm, ends, CONTEXT_SLOTS)
    pm_1h = _stat(np.nanmean, pm_w)
    pm_prev = _stat(np.nanmean, pm_c[:, -2 * HOUR_SLOTS : -HOUR_SLOTS])
    floor_24h = _stat(np.nanpercentile, pm_c, q=10)
    floor_6h = _stat(np.nanpercentile, pm_c[:, -6 * HOUR_SLOTS :], q=10)
    pm10_1h = _stat(np.nanmean, _windows(dry_pm25(s["pm10"], s["humidity"]), ends, HOUR_SLOTS))
    no2_c = _windows(s["no2"], ends, CONTEXT_SLOTS)
    no2_1h, no2_floor = _stat(np.nanmean, no2_c[:, -HOUR_SLOTS:]), _stat(np.nanpercentile, no2_c, q=10)
    cells_c = _windows(s["cell_count"], ends, CONTEXT_SLOTS)
    cell_rel = _stat(np.nanmean, cells_c[:, -HOUR_SLOTS:]) / np.maximum(_stat(np.nanmedian, cells_c), 1.0)
    temp_c = _windows(s["temperature"], ends, CONTEXT_SLOTS)
    columns = [
        pm_1h,
        floor_24h,
        floor_6h,
        pm_1h - floor_24h,
        pm_1h - pm_prev,
        np.clip(pm_1h / np.maximum(pm10_1h, 1.0), 0.0, 1.5),
        no2_1h,
        no2_1h - no2_floor,
        no2_floor,
        cell_rel,
        _stat(np.nanmean, temp_c[:, -HOUR_SLOTS:]),
        _stat(np.nanmean, temp_c),
        _stat(np.nanmean, _windows(s["humidity"], ends, HOUR_SLOTS)),
        *_clock_columns(time_ms, ends, tz),
    ]
    return np.stack(columns, axis=1)


def fault_features(values, kind: str, ends) -> np.ndarray:
    """Rows of FAULT_FEATURES for one sensor: the hour ending one slot before each of ``ends``.

    ``values`` are the sensor's raw slot values (NaN = no value), saturation codes included.
    """
    if kind not in FAULT_SENSOR_KINDS:
        raise ValueError(f"no fault features for {kind!r} (known: {', '.join(FAULT_SENSOR_KINDS)})")
    x = np.asarray(values, dtype=float)
    ends = _check_ends(x.shape[0], ends, HISTORY_SLOTS)
    raw = _windows(x, ends, HOUR_SLOTS + 2)  # one slot before the hour, the hour, one after
    saturated = raw >= SATURATION if kind in ("pm25", "pm10") else np.zeros(raw.shape, dtype=bool)
    clean = np.where(saturated, np.nan, raw)
    hour = clean[:, 1:-1]
    context = _windows(np.where((x >= SATURATION) & (kind in ("pm25", "pm10")), np.nan, x), ends - 1, CONTEXT_SLOTS)
    ctx_diff = np.diff(context, axis=1)
    scale = np.fmax(1.4826 * _stat(np.nanmedian, np.abs(ctx_diff), min_valid=0.25), SCALE_FLOOR[kind])
    scale = np.where(np.isnan(scale), SCALE_FLOOR[kind], scale)
    equal = clean[:, 2:] == clean[:, 1:-1]  # pairs inside the hour and into the next slot
    left, right = np.abs(hour - clean[:, :-2]), np.abs(hour - clean[:, 2:])
    spike = _stat(np.nanmax, np.fmin(left, right), min_valid=1 / HOUR_SLOTS)
    jump = _stat(np.nanmax, np.abs(np.diff(hour, axis=1)), min_valid=1 / HOUR_SLOTS)
    centre = _stat(np.nanmedian, context, min_valid=0.25)
    spread = _stat(np.nanpercentile, context, q=75, min_valid=0.25) - _stat(
        np.nanpercentile, context, q=25, min_valid=0.25
    )
    level = (_stat(np.nanmedian, hour, min_valid=1 / HOUR_SLOTS) - centre) / (np.nan_to_num(spread) + SCALE_FLOOR[kind])
    std = _stat(np.nanstd, hour, min_valid=1 / HOUR_SLOTS)
    columns = [
        np.mean(np.isnan(raw[:, 1:-1]), axis=1),
        np.mean(saturated[:, 1:-1], axis=1),
        np.mean(equal, axis=1),
        np.mean(ctx_diff == 0, axis=1),
        np.log10(np.nan_to_num(std, nan=0.0) / scale + 1e-3),
        np.log1p(np.nan_to_num(spike, nan=0.0) / scale),
        np.log1p(np.nan_to_num(jump, nan=0.0) / scale),
        np.clip(np.nan_to_num(level, nan=0.0), -20, 20),
        np.mean(hour == BOUND[kind], axis=1) if kind in BOUND else np.zeros(ends.shape[0]),
    ]
    one_hot = [np.full(ends.shape[0], float(kind == k)) for k in FAULT_SENSOR_KINDS]
    return np.stack(columns + one_hot, axis=1)


def no2_features(series, time_ms, ends, tz: str = "UTC") -> np.ndarray:
    """Rows of NO2_FEATURES (phones per slot, weather, clock) for the hours ending at ``ends``."""
    s, n = _series(series, NO2_INPUTS)
    ends = _check_ends(n, ends, CONTEXT_SLOTS)
    cells_c = _windows(s["cell_count"], ends, CONTEXT_SLOTS)
    cell_1h = _stat(np.nanmean, cells_c[:, -HOUR_SLOTS:])
    cell_floor = _stat(np.nanpercentile, cells_c, q=5)
    wind = _stat(np.nanmean, _windows(s["wind_speed"], ends, HOUR_SLOTS))
    ventilation = 1.0 / (wind + 1.0)  # box-model dilution ~ 1/u, floored by street turbulence
    excess = cell_1h - cell_floor
    columns = [
        cell_1h,
        cell_floor,
        excess,
        wind,
        ventilation,
        excess * ventilation,
        _stat(np.nanmean, _windows(s["temperature"], ends, HOUR_SLOTS)),
        _stat(np.nanmean, _windows(s["humidity"], ends, HOUR_SLOTS)),
        *_clock_columns(time_ms, ends, tz),
    ]
    return np.stack(columns, axis=1)


def hour_ends(n_slots: int, first_time_ms: int) -> np.ndarray:
    """Every window end (slot index) on a whole UTC hour with 24 h of context and one slot after it.

    >>> hour_ends(300, 1_762_128_000_000)[:3].tolist()
    [150, 156, 162]
    """
    offset = (-(first_time_ms // SLOT_MS)) % HOUR_SLOTS
    start = HISTORY_SLOTS + (offset - HISTORY_SLOTS) % HOUR_SLOTS
    return np.arange(start, n_slots + 1, HOUR_SLOTS, dtype=np.int64)


__all__ = [
    "SLOT_MS",
    "HOUR_SLOTS",
    "CONTEXT_SLOTS",
    "HISTORY_SLOTS",
    "PATTERN_FEATURES",
    "FAULT_FEATURES",
    "NO2_FEATURES",
    "NO2_WEATHER_FEATURES",
    "FAULT_SENSOR_KINDS",
    "hygroscopic_growth",
    "dry_pm25",
    "local_clock",
    "pattern_features",
    "fault_features",
    "no2_features",
    "hour_ends",
]
