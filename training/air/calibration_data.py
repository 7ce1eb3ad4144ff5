"""Prepare a co-location table for a calibration: resample to a coarser period, count what real data does.

Real co-locations have gaps and a reference that reads below zero at low
concentrations (a beta-attenuation monitor's noise is about +-3 ug/m3). Negative
reference values are *kept*: they are measurement noise around a small true value,
and clipping them to 0 would bias the reference, and every calibration fitted to it,
upwards at exactly the clean hours a calibration must get right. They are counted.

>>> from training.air.calibration_csv import CalibrationTable
>>> t = np.array([15, 30, 45, 60, 75, 90, 105, 120]) * 60_000  # 15-min period ends
>>> table = CalibrationTable(t, {"ref": np.array([1, 2, 3, -2, 5, np.nan, np.nan, np.nan])})
>>> hourly, dropped = resample(table, 60)
>>> (hourly.time_ms // 60_000).tolist(), hourly.columns["ref"].tolist(), dropped
([60, 120], [1.0, nan], {'ref': 1})
>>> quirks(table, "ref", [])["negative_reference"], quirks(table, "ref", [])["missing_periods"]
(1, 0)
"""

from __future__ import annotations

import numpy as np

from training.air.calibration_csv import CalibrationCsvError, CalibrationTable

MIN_SHARE = 0.75  # a resampled period needs 3 of its 4 quarter-hours, as for hourly AQ means


def step_ms(time_ms: np.ndarray) -> int:
    """The table's usual time step (median spacing)."""
    if len(time_ms) < 2:
        raise CalibrationCsvError("a calibration needs at least two time-stamped rows")
    return int(np.median(np.diff(time_ms)))


def resample(table: CalibrationTable, minutes: float, min_share: float = MIN_SHARE):
    """Means over periods of ``minutes`` labelled by their end; (table, periods dropped per column).

    A column's mean is kept when it has at least ``min_share`` of the readings the
    period holds at the table's own step; else it is missing (and counted).
    """
    period = int(minutes * 60_000)
    base = step_ms(table.time_ms)
    if period < base:
        raise CalibrationCsvError(
            f"--resample {minutes:g} min is finer than the data's own step ({base / 60_000:g} min)"
        )
    ends = -(-table.time_ms // period) * period  # ceil: period-end labels
    labels, index = np.unique(ends, return_inverse=True)
    need = min_share * period / base
    columns, dropped = {}, {}
    for name, values in table.columns.items():
        ok = np.isfinite(values)
        count = np.bincount(index, weights=ok, minlength=len(labels))
        total = np.bincount(index, weights=np.where(ok, values, 0.0), minlength=len(labels))
        mean = np.where(count >= need, total / np.maximum(count, 1), np.nan)
        columns[name] = mean
        dropped[name] = int(np.sum((count > 0) & (count < need)))
    out = CalibrationTable(labels.astype(np.int64), columns, table.source, table.rows_without_time, list(table.notes))
    out.notes.append(f"resampled to {minutes:g}-minute means (kept with >= {min_share:.0%} of the readings)")
    return out, dropped


def quirks(table: CalibrationTable, target: str, features: list[str], train=None, test=None) -> dict:
    """Counts of what real data does: negative reference values, missing periods, rows lacking a value."""
    y = table.columns[target]
    step = step_ms(table.time_ms)
    expected = int(round((int(table.time_ms[-1]) - int(table.time_ms[0])) / step)) + 1
    out = {
        "step_minutes": round(step / 60_000, 3),
        "rows": int(len(y)),
        "missing_periods": max(0, expected - len(y)),
        "gaps_over_one_hour": int(np.sum(np.diff(table.time_ms) > max(step, 3_600_000))),
        "negative_reference": int(np.sum(y < 0)),
        "negative_reference_policy": "kept: reference noise around a small true value; clipping would bias it up",
        "missing_target": int(np.sum(~np.isfinite(y))),
        "missing_feature": {f: int(np.sum(~np.isfinite(table.columns[f]))) for f in features},
    }
    if train is not None and test is not None:
        out["negative_reference_train"] = int(np.sum(train & (y < 0)))
        out["negative_reference_test"] = int(np.sum(test & (y < 0)))
    return out


__all__ = ["MIN_SHARE", "quirks", "resample", "step_ms"]
