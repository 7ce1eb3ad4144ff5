"""Fit every calibration candidate twice (for validation, then on the whole training period) and export the choice.

Validation scores come from fits on the first 75 % of the training days; test scores
from refits on all of them, the fit that is exported. Reference rows, never exported:
a constant (the training mean) and, for PM with humidity, the US EPA correction
(``edge.air.correction.epa_nationwide``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.air.calibration_features import compute_terms
from edge.contracts import ms_to_datetime
from training.air.calibration_candidates import Roles, candidates, guess_roles
from training.air.calibration_csv import CalibrationCsvError, CalibrationTable
from training.air.calibration_data import quirks
from training.air.calibration_select import (
    DAY_MS,
    MIN_FIT_ROWS,
    MIN_VALIDATION_ROWS,
    VALIDATION_SHARE,
    annotate_se,
    choose,
    evaluate,
    score,
    validation_split,
    why,
)

REFIT = "the chosen candidate is refitted on the whole training period before export"


@dataclass
class Fitted:
    """Scores of every candidate and the refitted models, ready to export and report."""

    table: CalibrationTable
    target: str
    features: list[str]
    roles: Roles
    train: np.ndarray
    test: np.ndarray
    fit_rows: np.ndarray
    validation: np.ndarray
    seed: int
    rows: list[dict] = field(default_factory=list)
    models: dict = field(default_factory=dict)  # name -> (model refitted on all training rows, terms)
    test_predictions: dict = field(default_factory=dict)

    @property
    def chosen(self) -> dict:
        return choose(self.rows)

    def _span(self, rows):
        t = self.table.time_ms[rows]
        return [ms_to_datetime(int(t[0])).isoformat(), ms_to_datetime(int(t[-1])).isoformat()]

    def metrics(self, train_days: float, name: str, unit: str, resampled: dict) -> dict:
        """metrics.json: the exported model's test scores at the top, then every candidate."""
        chosen, by_name = self.chosen, {r["name"]: r for r in self.rows}
        n_train, n_test = int(self.train.sum()), int(self.test.sum())

        def top(row):
            return {k: row["test"][k] for k in ("r2", "mae", "rmse")} | {"n_train": n_train, "n_test": n_test}

        usable = self.train | self.test
        return {
            "target": self.target,
            "unit": unit,
            "features": self.features,
            "train_days": train_days,
            "source": self.table.source,
            **top(chosen),
            "chosen": chosen["name"],
            "why": why(chosen, self.rows),
            "model": chosen["description"],
            "exported_as": name,
            "linear_baseline": top(by_name["linear"]),
            "raw_sensor": top(by_name["raw_sensor"]),
            "roles": {
                "signal": self.features[self.roles.signal],
                "temperature": None if self.roles.temperature is None else self.features[self.roles.temperature],
                "humidity": None if self.roles.humidity is None else self.features[self.roles.humidity],
                "signal_is_resistance": self.roles.resistance,
                "pm_humidity_growth": self.roles.pm,
            },
            "selection": {
                "rule": "eligible: exportable and on validation at least as good as the raw sensor, scale-and-offset "
                "and the linear baseline; chosen: the simplest eligible within one day-block bootstrap standard "
                "error of the best eligible validation R2; the test period is not used",
                "validation_share_of_training_days": VALIDATION_SHARE,
                "fit_period": self._span(self.fit_rows),
                "validation_period": self._span(self.validation),
                "refit": REFIT,
                "seed": self.seed,
            },
            "train_period": self._span(self.train),
            "test_period": self._span(self.test),
            "rows_without_target_or_feature": int(len(self.train) - usable.sum()),
            "rows_without_time": self.table.rows_without_time,
            "data_quality": quirks(self.table, self.target, self.features, self.train, self.test)
            | ({"resampled_periods_dropped": resampled} if resampled else {}),
            "candidates": self.rows,
            "notes": self.table.notes,
        }

    def export(self, out: Path, name: str, unit: str) -> None:
        """Export the chosen model (refitted) through the registry, with the manifest's ``calibration`` section."""
        from training.export import export_model

        chosen = self.chosen
        model, terms = self.models[chosen["name"]]
        spec = {"inputs": self.features, "terms": terms}
        X = np.stack([self.table.columns[f] for f in self.features], axis=1)
        F = compute_terms(X[self.train], spec)
        export_model(
            model,
            F,
            out,
            name,
            "1",
            feature_names=[t["name"] for t in terms],
            output_names=[name.removeprefix("calibration-")],
            description=f"Calibration of {self.target} ({chosen['name']}: {chosen['description']}) "
            f"from {', '.join(self.features)} ({self.table.source})",
        )
        path = out / "manifest.json"
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["calibration"] = {
            "inputs": self.features,
            "terms": terms,
            "target": self.target,
            "unit": unit,
            "candidate": chosen["name"],
            "validation_r2": chosen["validation"]["r2"],
        }
        path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _reference_rows(f: Fitted, X, y) -> list[dict]:
    t = f.table.time_ms
    rows = [
        {
            "name": "constant",
            "description": "the training mean (a calibration must beat it)",
            "kind": "reference",
            "exportable": False,
            "validation": evaluate(t[f.validation], y[f.validation], np.full(f.validation.sum(), y[f.fit_rows].mean())),
            "test": evaluate(t[f.test], y[f.test], np.full(f.test.sum(), y[f.train].mean())),
        }
    ]
    if f.roles.pm:
        from edge.air.correction import epa_nationwide

        pm, rh = X[:, f.roles.signal], X[:, f.roles.humidity]
        epa = epa_nationwide(np.clip(pm, 0, None), np.clip(rh, 0, 100))
        rows.append(
            {
                "name": "epa_correction",
                "description": "US EPA nationwide correction (Barkjohn 2021), no fitting",
                "kind": "reference",
                "exportable": False,
                "validation": evaluate(t[f.validation], y[f.validation], epa[f.validation]),
                "test": evaluate(t[f.test], y[f.test], epa[f.test]),
            }
        )
        f.test_predictions["epa_correction"] = epa[f.test]
    return rows


def fit_candidates(table, target, features, train, test, seed=0, signal=None, temperature=None, humidity=None):
    """Fit and score every candidate; a :class:`Fitted`."""
    X = np.stack([table.columns[c] for c in features], axis=1)
    y = table.columns[target]
    fit_rows, validation = validation_split(table.time_ms, train)
    if fit_rows.sum() < MIN_FIT_ROWS or validation.sum() < MIN_VALIDATION_ROWS:
        raise CalibrationCsvError(
            f"the training days split into {int(fit_rows.sum())} rows to fit and {int(validation.sum())} to "
            f"validate (need {MIN_FIT_ROWS} and {MIN_VALIDATION_ROWS}): give more --train-days"
        )
    roles = guess_roles(features, target, signal, temperature, humidity, y=y[fit_rows], X=X[fit_rows])
    corr = np.nan_to_num(np.corrcoef(X[fit_rows, roles.signal], y[fit_rows])[0, 1])
    f = Fitted(table, target, features, roles, train, test, fit_rows, validation, seed)
    t = table.time_ms
    val_preds = {}
    for rank, c in enumerate(candidates(features, roles, 1 if corr >= 0 else -1)):
        F = compute_terms(X, {"inputs": features, "terms": c.terms})
        early = c.fit(F[fit_rows], y[fit_rows], seed)
        full = c.fit(F[train], y[train], seed)
        pred = full.predict(F[test])
        f.models[c.name] = (full, c.terms)
        f.test_predictions[c.name] = pred
        if c.exportable:
            val_preds[c.name] = early.predict(F[validation])
        f.rows.append(
            {
                "name": c.name,
                "description": c.description,
                "kind": "candidate",
                "rank": rank,
                "exportable": c.exportable,
                "terms": [term["name"] for term in c.terms],
                "validation": evaluate(t[validation], y[validation], early.predict(F[validation])),
                "test": evaluate(t[test], y[test], pred),
            }
        )
    annotate_se(f.rows, y[validation], val_preds, t[validation] // DAY_MS, seed)
    f.rows += _reference_rows(f, X, y)
    return f


__all__ = ["REFIT", "Fitted", "fit_candidates", "score"]
