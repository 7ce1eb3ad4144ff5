"""What a routine recalibration buys: 7 days of co-location every 30 days, replayed on a co-location record.

A field team that can bring a reference back for a week a month recalibrates on a
fixed schedule, not when the results look bad. Replayed on a co-location record:

* the first calibration (``train air-calibration``) is trained on the first
  ``first_days`` days, as ever;
* every ``every_days`` days after that, the first ``co_days`` days of the period are a
  co-location: ``train air-calibration --update`` (``update_calibration``, the
  command's own code) recalibrates the calibration in use, which then runs for the
  rest of the period;
* the rest of each period is scored for the calibration in use and, side by side on
  the same rows, for the first calibration left alone and for the raw sensor (the
  model's first input).

The schedule is fixed before looking (days 30-37, 60-67, ...); nothing is tuned to
the scores.

>>> periods(start_ms=0, end_ms=75 * DAY_MS, first_days=30, every_days=30, co_days=7)
[(30, 37, 60), (60, 67, 75)]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.air.calibration_csv import CalibrationTable
from training.air.calibration_previous import load_previous
from training.air.calibration_select import score

DAY_MS = 86_400_000


def periods(start_ms: int, end_ms: int, first_days: float, every_days: float, co_days: float) -> list[tuple]:
    """(co-location start, scored from, scored until), days since ``start_ms``, while data follow a co-location."""
    out, day, last = [], first_days, (end_ms - start_ms) / DAY_MS
    while day + co_days < last:
        out.append((day, day + co_days, min(day + every_days, last)))
        day += every_days
    return [(a, b, round(c, 3) if c != int(c) else int(c)) for a, b, c in out]


def _rows(table: CalibrationTable, start_ms: int, first: float, last: float) -> np.ndarray:
    return (table.time_ms >= start_ms + first * DAY_MS) & (table.time_ms < start_ms + last * DAY_MS)


def _subset(table: CalibrationTable, rows: np.ndarray, what: str) -> CalibrationTable:
    return CalibrationTable(
        table.time_ms[rows], {k: v[rows] for k, v in table.columns.items()}, f"{table.source} ({what})"
    )


def replay_schedule(
    table: CalibrationTable,
    first_model: str | Path,
    work: str | Path,
    *,
    first_days: float = 30,
    every_days: float = 30,
    co_days: float = 7,
    seed: int = 0,
) -> dict:
    """Replay the schedule from ``first_model`` (trained on the first ``first_days``): scores per period, pooled."""
    from training.air.calibration_update import update_calibration

    first = load_previous(first_model)
    target = first.spec["target"]
    inputs = list(first.spec["inputs"])
    X = np.stack([table.columns[c] for c in inputs], axis=1)
    y = table.columns[target]
    usable = np.isfinite(y) & np.all(np.isfinite(X), axis=1)
    start = int(table.time_ms[usable][0])
    current, rows_out, pooled = Path(first_model), [], {"scheduled": [], "first_only": [], "raw": [], "y": []}
    for n, (co_from, scored_from, until) in enumerate(
        periods(start, int(table.time_ms[usable][-1]) + 1, first_days, every_days, co_days)
    ):
        period = usable & _rows(table, start, co_from, until)  # the update sees its first co_days days only
        result = update_calibration(
            _subset(table, period, f"days {co_from:g}-{until:g}"),
            current,
            Path(work) / f"update{n + 1}",
            train_days=co_days,
            seed=seed,
        )
        if result.written:
            current = result.out_dir
        scored = usable & _rows(table, start, scored_from, until)
        in_use = load_previous(current).predict(X[scored])
        alone = first.predict(X[scored])
        raw = X[scored, 0]  # the model's first input: the sensor's own reading
        rows_out.append(
            {
                "co_location_days": [co_from, scored_from],
                "scored_days": [scored_from, until],
                "update": result.metrics["chosen"],
                "why": result.metrics["why"],
                # what every update would have scored on the scored days: evaluated, never used to choose
                "each_update_after": {r["name"]: r["test"]["r2"] for r in result.metrics["updates"]},
                "version": load_previous(current).version,
                "n": int(scored.sum()),
                "scheduled": score(y[scored], in_use),
                "first_only": score(y[scored], alone),
                "raw_sensor": score(y[scored], raw),
            }
        )
        for key, values in (("scheduled", in_use), ("first_only", alone), ("raw", raw), ("y", y[scored])):
            pooled[key].append(values)
    joined = {k: np.concatenate(v) if v else np.array([]) for k, v in pooled.items()}
    return {
        "target": target,
        "inputs": inputs,
        "schedule": {"first_days": first_days, "every_days": every_days, "co_days": co_days},
        "periods": rows_out,
        "pooled": {
            name: score(joined["y"], joined[key])
            for name, key in (("scheduled", "scheduled"), ("first_only", "first_only"), ("raw_sensor", "raw"))
        }
        if len(joined["y"])
        else {},
    }


__all__ = ["periods", "replay_schedule"]
