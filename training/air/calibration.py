"""Retrain a low-cost sensor calibration from a user's CSV of co-located sensors and a reference instrument.

The CSV is read by ``training.air.calibration_csv`` (UCI "Air Quality" shape or a
plain one). The first ``train_days`` days train, the rest test, as a calibration
would be used: fitted on a co-location period, then trusted afterwards.

Several candidates (``training.air.calibration_candidates``) are fitted on the
first 75 % of the training days and chosen on the last 25 %
(``training.air.calibration_select``); the test period is never used to choose. The
chosen one is refitted on the whole training period (the validation days are the most
recent, and with drift the most valuable) and exported through the export registry
with a ``calibration`` section in its manifest: the raw inputs and the feature terms
(``edge.air.calibration_features``) a gateway computes from them.

>>> import io
>>> from training.air.calibration_csv import read_calibration_csv
>>> table = read_calibration_csv(io.StringIO("time,ref,raw\\n" + "".join(
...     f"2024-01-{1 + h // 24:02d}T{h % 24:02d}:00,{h % 7},{2 * (h % 7)}\\n" for h in range(24 * 5))))
>>> train, test = split_rows(table, "ref", ["raw"], train_days=3)
>>> int(train.sum()), int(test.sum())
(72, 48)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.air.calibration_csv import CalibrationCsvError, CalibrationTable

DAY_MS = 86_400_000
MIN_TRAIN_ROWS = 48
MIN_TEST_ROWS = 24


# ---- training ------------------------------------------------------------------------


@dataclass
class CalibrationResult:
    """What ``train_calibration`` measured and the files it wrote."""

    metrics: dict
    out_dir: Path
    files: list[Path]
    fitted: Any = None  # training.air.calibration_fit.Fitted: every candidate's models and predictions


def _pick(table: CalibrationTable, name: str, what: str) -> str:
    if name in table.columns:
        return name
    close = difflib.get_close_matches(name, table.names, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise CalibrationCsvError(
        f"no numeric {what} column {name!r} in {table.source}{hint}; numeric columns: {', '.join(table.names)}"
    )


def default_features(table: CalibrationTable, target: str) -> list[str]:
    """Every numeric column but the target and other reference-instrument columns (named ``...(GT)``)."""
    return [c for c in table.names if c != target and not c.upper().endswith("(GT)")]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "target"


def split_rows(table: CalibrationTable, target: str, features: list[str], train_days: float):
    """Row masks (train, test) over rows holding the target and every feature; time order, first days train."""
    usable = np.isfinite(table.columns[target]) & np.all([np.isfinite(table.columns[f]) for f in features], axis=0)
    if not usable.any():
        raise CalibrationCsvError(f"no row holds {target} and every feature at once")
    start = int(table.time_ms[usable][0])
    train = usable & (table.time_ms < start + train_days * DAY_MS)
    test = usable & ~train
    span = (int(table.time_ms[usable][-1]) - start) / DAY_MS
    if train.sum() < MIN_TRAIN_ROWS:
        raise CalibrationCsvError(
            f"only {int(train.sum())} usable rows in the first {train_days:g} days "
            f"(need {MIN_TRAIN_ROWS}): give more --train-days"
        )
    if test.sum() < MIN_TEST_ROWS:
        raise CalibrationCsvError(
            f"only {int(test.sum())} usable rows after the first {train_days:g} days "
            f"(need {MIN_TEST_ROWS} to evaluate; the data span {span:.1f} days): "
            "give fewer --train-days"
        )
    return train, test


def _check_inputs(table, target, features, train_days):
    target = _pick(table, target, "target")
    features = [_pick(table, f, "feature") for f in (features or default_features(table, target))]
    if target in features:
        raise CalibrationCsvError(f"the target {target!r} cannot also be a feature")
    if not features:
        raise CalibrationCsvError(f"no feature column besides {target!r}: name them with --features")
    if not train_days > 0:
        raise CalibrationCsvError(f"--train-days must be a positive number of days, got {train_days}")
    return target, features


def _role(table, name, what):
    return None if name is None else _pick(table, name, what)


def train_calibration(
    table: CalibrationTable,
    target: str,
    out_dir: str | Path,
    features: list[str] | None = None,
    train_days: float = 30.0,
    seed: int = 0,
    signal: str | None = None,
    temperature: str | None = None,
    humidity: str | None = None,
    unit: str = "",
    resampled: dict | None = None,
) -> CalibrationResult:
    """Fit the candidates, choose on validation, export the choice, report; see the module doc."""
    from training.air.calibration_fit import fit_candidates
    from training.air.calibration_report import write_outputs

    target, features = _check_inputs(table, target, features, train_days)
    roles_given = [
        _role(table, signal, "signal"),
        _role(table, temperature, "temperature"),
        _role(table, humidity, "humidity"),
    ]
    for name in roles_given:
        if name is not None and name not in features:
            raise CalibrationCsvError(f"{name!r} is not one of the --features ({', '.join(features)})")
    train, test = split_rows(table, target, features, train_days)
    fitted = fit_candidates(table, target, features, train, test, seed, *roles_given)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"calibration-{_slug(target)}"[:64].strip("-")
    metrics = fitted.metrics(train_days, name, unit, resampled or {})
    fitted.export(out, name, unit)
    files = write_outputs(out, metrics, fitted, name)
    return CalibrationResult(metrics, out, files, fitted)


__all__ = [
    "CalibrationResult",
    "train_calibration",
    "default_features",
    "split_rows",
]
