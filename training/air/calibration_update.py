"""Recalibrate a deployed calibration from a short, recent co-location: ``train air-calibration --update MODEL_DIR``.

Sensors drift: a metal-oxide or electrochemical cell's zero and sensitivity move over
weeks, an optical PM sensor's gain moves with the aerosol. A week next to a reference
is what a field team can afford, and a week is too little to fit a calibration's
temperature and humidity terms again (its weather spans a few degrees). So the
update keeps what the long co-location learned (the model's shape) and re-estimates
what drifts (zero and span), in the field's usual way, unless the new data say a
refit of the model's own terms does better. Updates, in order of simplicity:

==============  ====================================================================
``keep``        the current version as it is (the baseline: never exported)
``offset``      current + a: a new zero
``gain_offset`` a + b * current: a new zero and span (b > 0)
``scale_offset`` a new line through the sensor's signal alone
``linear``      a new least-squares fit on every raw input
``refit_terms`` ridge on the model's own terms, fitted on the new co-location only
==============  ====================================================================

``scale_offset`` and ``linear`` start over from the new co-location alone (new terms,
the same raw inputs: a gateway takes them as a new version all the same).

The choice follows the rules of a first calibration (``training.air.calibration_select``)
on a time-ordered validation: each day of the second half of the co-location is
predicted by a fit on every day before it (rolling origin, :func:`forward_folds`: on 7
days, days 5, 6 and 7 from fits on 4, 5 and 6 days). Chosen (:func:`choose_update`):
the best on those days, unless it beats ``keep`` by no more than one day-block
bootstrap standard error (the deployed version stays without evidence against it).
On the simulated drifting site, a single split of the week (two days to judge) with
the simplest-within-one-SE rule of a first calibration picked a new zero over a new
span and lost 0.29 R2 on the next two weeks: a week is too short for that rule.

The chosen update is refitted on the whole co-location and exported as the next
version of the same model (same name, same raw inputs: a gateway takes it as a
model update). ``offset`` and ``gain_offset`` are composed into the network
itself (``training.air.calibration_previous``), so every format carries them. When
``keep`` wins, nothing is written: the current version is at least as good on the
new data.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.air.calibration_features import compute_terms
from training.air.calibration import _pick, split_rows
from training.air.calibration_candidates import Roles, guess_roles, raw_terms, signal_terms
from training.air.calibration_csv import CalibrationCsvError, CalibrationTable
from training.air.calibration_data import quirks
from training.air.calibration_previous import Previous, load_previous, recalibrated_model
from training.air.calibration_select import (
    DAY_MS,
    MIN_FIT_ROWS,
    MIN_VALIDATION_ROWS,
    annotate_se,
    choose,
    evaluate,
    score,
)

UPDATES = (  # in order of simplicity: the number of coefficients the new co-location must estimate
    ("keep", "the current version unchanged"),
    ("offset", "the current version plus a new zero (offset)"),
    ("gain_offset", "a new zero and span: offset + gain x the current version"),
    ("scale_offset", "a new straight line through the sensor's signal alone, from the new co-location"),
    ("linear", "a new least-squares fit on every raw input, from the new co-location"),
    ("refit_terms", "ridge on the model's own terms, fitted on the new co-location only"),
)
BASELINE = ("keep",)
FIRST_FIT_SHARE = 0.5  # the first half of the co-location days only fits; each later day validates
REPORT_FILES = ("update.json", "update.md", "update.png")


@dataclass
class UpdateResult:
    """What ``update_calibration`` measured; ``written`` is False when the current version is kept."""

    metrics: dict
    out_dir: Path
    written: bool
    files: list[Path]


class _Affine:
    """``offset + gain * current``: the previous version's own terms and network, rescaled."""

    terms = None

    def __init__(self, gain: float, offset: float) -> None:
        self.gain, self.offset = gain, offset

    def predict(self, current: np.ndarray, raw: np.ndarray) -> np.ndarray:
        return self.offset + self.gain * current


class _Terms:
    """A linear model on terms of the raw inputs (the previous version's, or new ones), fitted on the co-location."""

    def __init__(self, spec: dict, model) -> None:
        self.spec, self.model = spec, model

    @property
    def terms(self) -> list[dict]:
        return self.spec["terms"]

    def predict(self, current: np.ndarray, raw: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(compute_terms(raw, self.spec)), dtype=np.float64)


def _fit(name: str, current: np.ndarray, raw: np.ndarray, y: np.ndarray, previous: Previous, signal: int):
    if name == "keep":
        return _Affine(1.0, 0.0)
    if name == "offset":
        return _Affine(1.0, float(np.mean(y - current)))
    if name == "gain_offset":
        gain, offset = np.polyfit(current, y, 1)
        return _Affine(float(gain), float(offset))
    from sklearn.linear_model import LinearRegression, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    inputs = list(previous.spec["inputs"])
    if name == "refit_terms":
        spec = {"inputs": inputs, "terms": previous.spec["terms"]}
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    else:
        terms = signal_terms(inputs, _signal_only(signal)) if name == "scale_offset" else raw_terms(inputs)
        spec, model = {"inputs": inputs, "terms": terms}, LinearRegression()
    return _Terms(spec, model.fit(compute_terms(raw, spec), y))


def _signal_only(signal: int) -> Roles:
    return Roles(signal, None, None, False, False)


def _input_columns(table: CalibrationTable, previous: Previous, features: list[str] | None) -> list[str]:
    """The CSV columns feeding the model's raw inputs, in its order: named like them, or ``features``."""
    inputs = list(previous.spec["inputs"])
    if features is None:
        return [_pick(table, name, f"input (model {previous.name} reads {', '.join(inputs)})") for name in inputs]
    if len(features) != len(inputs):
        raise CalibrationCsvError(
            f"model {previous.name} reads {len(inputs)} inputs ({', '.join(inputs)}); --features names "
            f"{len(features)}: give one column per input, in that order"
        )
    return [_pick(table, f, "feature") for f in features]


def choose_update(rows: list[dict]) -> tuple[dict, str]:
    """The best update on validation, unless it beats ``keep`` by no more than one standard error.

    The deployed version is the incumbent: replacing it needs evidence beyond the noise
    of the validation days (the one-standard-error rule, applied to the change itself).
    Between updates, the best validation R2 decides (ties to the simpler): a few
    validation days are too few blocks for a bootstrap to rank them.

    >>> rows = [{"name": "keep", "rank": 0, "exportable": True, "validation": {"r2": 0.80, "se_vs_best": 0.03}},
    ...         {"name": "offset", "rank": 1, "exportable": True, "validation": {"r2": 0.82}}]
    >>> choose_update(rows)[0]["name"]
    'keep'
    >>> rows[1]["validation"]["r2"] = 0.9
    >>> choose_update(rows)[0]["name"]
    'offset'
    """
    best = choose([{**r, "validation": {"r2": r["validation"]["r2"]}} for r in rows], baselines=BASELINE)
    best = next(r for r in rows if r["name"] == best["name"])
    keep = next(r for r in rows if r["name"] == "keep")
    gain, se = round(best["validation"]["r2"] - keep["validation"]["r2"], 4), keep["validation"].get("se_vs_best", 0.0)
    if best is keep or gain <= se:
        return keep, (
            f"keep: the best update, {best['name']} (validation R2 {best['validation']['r2']}), beats the current "
            f"version ({keep['validation']['r2']}) by {gain}, within one standard error ({se}): "
            "no evidence to replace it"
            if best is not keep
            else f"keep: no update scores above the current version on validation ({keep['validation']['r2']})"
        )
    return best, (
        f"{best['name']} has the best validation R2 ({best['validation']['r2']}) and beats the current version "
        f"({keep['validation']['r2']}) by {gain}, more than one standard error ({se})"
    )


def forward_folds(time_ms: np.ndarray, co: np.ndarray, first_share: float = FIRST_FIT_SHARE) -> list:
    """Time-ordered folds (fit, validate) of a co-location: each day after the first ``first_share`` of them
    is validated by a fit on every day before it (rolling origin). CalibrationCsvError if too short.

    >>> t = np.arange(7 * 24) * 3_600_000  # 7 days, hourly
    >>> [(int(f.sum()) // 24, int(v.sum()) // 24) for f, v in forward_folds(t, np.ones(len(t), bool))]
    [(4, 1), (5, 1), (6, 1)]
    """
    t = time_ms[co]
    first = int(t[0]) - int(t[0]) % DAY_MS
    days = np.where(co, (time_ms - first) // DAY_MS, -1)
    n_days = int(days.max()) + 1
    folds = []
    for day in range(max(1, int(np.ceil(n_days * first_share))), n_days):
        fit, held = co & (days < day), days == day
        if fit.sum() >= MIN_FIT_ROWS and held.sum() > 0:
            folds.append((fit, held))
    validated = sum(int(v.sum()) for _, v in folds)
    if not folds or validated < MIN_VALIDATION_ROWS:
        raise CalibrationCsvError(
            f"the co-location spans {n_days} day(s) with {int(co.sum())} usable rows: too short to recalibrate "
            f"and check it (need {MIN_FIT_ROWS} rows to fit and {MIN_VALIDATION_ROWS} later ones to validate): "
            "a co-location of a few days at least, 7 is typical"
        )
    return folds


def _next_version(previous: Previous, version: str | None) -> str:
    if version is not None:
        return str(version)
    if not previous.version.isdigit():
        raise CalibrationCsvError(
            f"model {previous.name} is version {previous.version!r}: give the new one with --version"
        )
    return str(int(previous.version) + 1)


def _span(time_ms: np.ndarray) -> list[str]:
    from edge.contracts import ms_to_datetime

    return [ms_to_datetime(int(time_ms[0])).isoformat(), ms_to_datetime(int(time_ms[-1])).isoformat()]


def update_calibration(
    table: CalibrationTable,
    model_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    target: str | None = None,
    features: list[str] | None = None,
    train_days: float | None = None,
    seed: int = 0,
    version: str | None = None,
) -> UpdateResult:
    """Recalibrate the model in ``model_dir`` on ``table``; see the module doc.

    Every usable row recalibrates, or the first ``train_days`` days when given (the
    rest then test: the current and the new version are both scored there).
    """
    previous = load_previous(model_dir)
    target = _pick(table, target or previous.spec.get("target") or "", "target (the reference column)")
    columns = _input_columns(table, previous, features)
    new_version = _next_version(previous, version)
    t, y = table.time_ms, table.columns[target]
    X = np.stack([table.columns[c] for c in columns], axis=1)
    usable = np.isfinite(y) & np.all(np.isfinite(X), axis=1)
    if train_days is None:
        co, test = usable, np.zeros_like(usable)
        if usable.sum() < MIN_FIT_ROWS + MIN_VALIDATION_ROWS:
            raise CalibrationCsvError(
                f"only {int(usable.sum())} rows hold {target} and every input "
                f"(need {MIN_FIT_ROWS + MIN_VALIDATION_ROWS}): a longer co-location is needed"
            )
    else:
        co, test = split_rows(table, target, columns, train_days)
    folds = forward_folds(t, co)
    fit_rows, validation = folds[0][0], np.any([v for _, v in folds], axis=0)
    current = np.full(len(y), np.nan)
    current[usable] = previous.predict(X[usable])
    signal = guess_roles(list(previous.spec["inputs"]), target, y=y[fit_rows], X=X[fit_rows]).signal

    rows, val_preds, fits = [], {}, {}
    for rank, (name, description) in enumerate(UPDATES):
        full = _fit(name, current[co], X[co], y[co], previous, signal)
        fits[name] = full
        v, positive = np.full(len(y), np.nan), getattr(full, "gain", 1.0) > 0
        for fit, held in folds:  # each later day predicted by a fit on the days before it
            early = _fit(name, current[fit], X[fit], y[fit], previous, signal)
            v[held] = early.predict(current[held], X[held])
            positive = positive and getattr(early, "gain", 1.0) > 0
        v = v[validation]
        if positive:
            val_preds[name] = v
        row = {
            "name": name,
            "description": description,
            "kind": "candidate",
            "rank": rank,
            "exportable": positive,
            "validation": evaluate(t[validation], y[validation], v),
            "co_location": score(y[co], full.predict(current[co], X[co])),
        }
        if isinstance(full, _Affine):
            row["gain"], row["offset"] = round(full.gain, 6), round(full.offset, 6)
        if not positive:
            row["note"] = "a gain <= 0 is no calibration: not eligible"
        if test.any():
            row["test"] = evaluate(t[test], y[test], full.predict(current[test], X[test]))
        rows.append(row)
    annotate_se(rows, y[validation], val_preds, t[validation] // DAY_MS, seed, baselines=BASELINE)
    chosen, reason = choose_update(rows)
    by_name = {r["name"]: r for r in rows}
    metrics = {
        "model": previous.name,
        "model_dir": str(Path(model_dir)),
        "from_version": previous.version,
        "version": new_version if chosen["name"] != "keep" else previous.version,
        "written": chosen["name"] != "keep",
        "target": target,
        "inputs": columns,
        "model_inputs": list(previous.spec["inputs"]),
        "source": table.source,
        "co_location_period": _span(t[co]),
        "n_co_location": int(co.sum()),
        "fit_period": _span(t[fit_rows]),  # the first fold's; every later day validates
        "validation_period": _span(t[validation]),
        "test_period": _span(t[test]) if test.any() else None,
        "n_test": int(test.sum()),
        "chosen": chosen["name"],
        "why": reason,
        "before": {"validation": by_name["keep"]["validation"], "co_location": by_name["keep"]["co_location"]},
        "after": {"validation": chosen["validation"], "co_location": chosen["co_location"]},
        "seed": seed,
        "data_quality": quirks(table, target, columns, co, test),
        "updates": rows,
        "notes": table.notes,
    }
    out = Path(out_dir) if out_dir is not None else Path(model_dir)
    files: list[Path] = []
    if metrics["written"]:
        _write_version(previous, out, new_version, chosen, fits[chosen["name"]], X[co], metrics)
    out.mkdir(parents=True, exist_ok=True)
    from training.air.calibration_update_report import write_update_report

    files = write_update_report(
        out, metrics, t[co], y[co], current[co], fits[chosen["name"]].predict(current[co], X[co])
    )
    return UpdateResult(metrics, out, metrics["written"], files)


def _write_version(previous: Previous, out: Path, version: str, chosen: dict, fit, raw: np.ndarray, metrics) -> None:
    """Export the new version into ``out`` (a temporary folder first, then swapped in); old model files go."""
    from edge.runtime.manifest import MANIFEST_FILE
    from training.export import export_model

    spec = {**previous.spec, "terms": fit.terms or previous.spec["terms"]}
    if isinstance(fit, _Affine):
        model, spec["candidate"] = recalibrated_model(previous, fit.gain, fit.offset), previous.spec.get("candidate")
    else:
        model, spec["candidate"] = fit.model, chosen["name"]
    terms = compute_terms(raw, spec)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staging = Path(tmp)
        export_model(
            model,
            terms,
            staging,
            previous.name,
            version,
            feature_names=[term["name"] for term in spec["terms"]],
            output_names=list(previous.manifest.output_names),
            description=f"{previous.manifest.raw.get('description', '')}; recalibrated to v{version} "
            f"({chosen['name']}) on {metrics['co_location_period'][0][:10]}..{metrics['co_location_period'][1][:10]} "
            f"({metrics['source']})",
        )
        path = staging / MANIFEST_FILE
        manifest = json.loads(path.read_text(encoding="utf-8"))
        entry = {
            "version": version,
            "from_version": previous.version,
            "update": chosen["name"],
            **({"gain": chosen["gain"], "offset": chosen["offset"]} if "gain" in chosen else {}),
            "co_location_period": metrics["co_location_period"],
            "source": metrics["source"],
            "validation_r2_before": metrics["before"]["validation"]["r2"],
            "validation_r2_after": chosen["validation"]["r2"],
        }
        spec["updates"] = [*previous.spec.get("updates", []), entry]
        manifest["calibration"] = spec
        path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.resolve() == previous.root.resolve():
            for entry_file in previous.manifest.files.values():
                Path(entry_file.path).unlink(missing_ok=True)
        else:
            _copy_reports(previous.root, out, previous)
        (out / "manifest.sig").unlink(missing_ok=True)  # signed the old manifest: sign the new one
        for item in staging.iterdir():
            shutil.move(str(item), out / item.name)


def _copy_reports(src: Path, out: Path, previous: Previous) -> None:
    """The first training's metrics, report and plots go with the new version (they say how it was chosen)."""
    model_files = {Path(e.path).name for e in previous.manifest.files.values()} | {"manifest.json", "manifest.sig"}
    for item in src.iterdir():
        if item.is_file() and item.name not in model_files and item.name not in REPORT_FILES:
            shutil.copy2(item, out / item.name)


__all__ = ["UPDATES", "UpdateResult", "update_calibration"]
