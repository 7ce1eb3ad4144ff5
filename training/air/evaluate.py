"""Measure the exported air models against their targets on held-out simulated sites, and write their cards.

``python -m training.air.evaluate [--models models] [--quick]`` re-simulates the
held-out sites of the plan (seeded, so the same as at training), runs every exported
format on its own runtime, prints targets against measured values, and writes
``models/<name>/card.json`` and ``card.md`` in the one card shape
(``training.air.card``, ``training.cards``). A target counts as met only when every
shipped format meets it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge.features.air_features import NO2_FEATURES, NO2_WEATHER_FEATURES
from edge.runtime import available_backends, load, probe_seconds
from edge.runtime.manifest import FORMAT_RUNTIMES, ModelManifest
from training.air.card import air_card, air_data, write_air_card
from training.air.data import (
    FAULT_CLASSES,
    MODEL_NAMES,
    QUICK,
    SHIPPED,
    AirPlan,
    fault_windows,
    fit,
    mlp_regressor,
    no2_split,
    no2_windows,
    pattern_windows,
)
from training.cards import target

SENSOR_WEEK_WINDOWS = 7 * 24  # hourly windows per sensor per week


@dataclass(frozen=True)
class Target:
    """One target of a model: ``metric op value``, and what it means."""

    metric: str
    op: str  # ">=" or "<="
    value: float
    what: str

    def met(self, measured: float) -> bool:
        return bool(measured >= self.value if self.op == ">=" else measured <= self.value)


TARGETS: dict[str, list[Target]] = {
    "pattern": [Target("macro_f1", ">=", 0.90, "macro-F1 over the four patterns, held-out simulated days")],
    "fault": [
        Target("recall_stuck", ">=", 0.95, "stuck windows flagged as stuck"),
        Target("recall_spike", ">=", 0.95, "spike windows flagged as spike"),
        Target("recall_fan_failure", ">=", 0.95, "fan-failure windows flagged as fan_failure"),
        Target("false_faults_per_sensor_week", "<=", 1.0, "healthy sensor-hours flagged as any fault, per sensor-week"),
    ],
    "no2": [
        Target("r2_heldout_weeks", ">=", 0.75, "R2 on held-out weeks of zones seen in training"),
        Target("r2_heldout_zones", ">=", 0.75, "R2 on held-out weeks of zones never seen (no NO2 sensor)"),
        Target(
            "r2_gain_over_weather",
            ">=",
            0.20,
            "R2 gain over the weather-only baseline, held-out weeks (the smaller of seen/unseen zones)",
        ),
    ],
}


# ---- metrics -------------------------------------------------------------------------


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, classes) -> tuple[float, dict[str, float]]:
    """Macro-averaged F1 = 2TP / (2TP + FP + FN) per class, and the per-class values.

    >>> macro_f1(np.array(["a", "a", "b"]), np.array(["a", "b", "b"]), ["a", "b"])[0]
    0.6667
    """
    per = {}
    for c in classes:
        tp = np.sum((y_pred == c) & (y_true == c))
        denominator = 2 * tp + np.sum((y_pred == c) & (y_true != c)) + np.sum((y_pred != c) & (y_true == c))
        per[str(c)] = round(float(2 * tp / denominator), 4) if denominator else 1.0
    return round(float(np.mean(list(per.values()))), 4), per


def r2(y: np.ndarray, p: np.ndarray) -> float:
    """Coefficient of determination.

    >>> r2(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    0.5
    """
    return round(float(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2)), 4)


def pattern_metrics(predict, X, y) -> dict:
    """Macro-F1, per-class F1 and support of the pattern model on rows ``X`` labelled ``y``."""
    classes = sorted(set(y))
    pred = predict(X)
    score, per = macro_f1(y, pred, classes)
    return {
        "macro_f1": score,
        "f1_per_class": per,
        "windows": int(len(y)),
        "support": {c: int(np.sum(y == c)) for c in classes},
    }


def fault_metrics(predict, X, y) -> dict:
    """Recall per fault class and false faults per sensor-week of the fault model."""
    scored = y != -1  # partly faulty windows are not scored
    pred = np.full(len(y), "", dtype=object)
    pred[scored] = predict(X[scored])
    out = {}
    for i, name in enumerate(FAULT_CLASSES[1:], 1):
        rows = y == i
        out[f"recall_{name}"] = round(float(np.mean(pred[rows] == name)), 4) if rows.any() else None
        out[f"windows_{name}"] = int(rows.sum())
    healthy = (y == 0) | (y == -2)  # drifting windows are healthy hour by hour: a flag there is false
    weeks = healthy.sum() / SENSOR_WEEK_WINDOWS
    false = int(np.sum(pred[healthy] != "ok"))
    out.update(
        false_faults=false, sensor_weeks=round(float(weeks), 1), false_faults_per_sensor_week=round(false / weeks, 3)
    )
    return out


def no2_metrics(predict, X, y, split, baselines: dict[str, dict]) -> dict:
    """R2 and MAE of the NO2 virtual sensor on the held-out weeks and zones, and its gain over weather."""
    out = {}
    for part in ("heldout_weeks", "heldout_zones"):
        rows = split[part]
        pred = predict(X[rows])[:, 0]
        out[f"r2_{part}"] = r2(y[rows], pred)
        out[f"mae_{part}"] = round(float(np.mean(np.abs(y[rows] - pred))), 3)
        out[f"windows_{part}"] = int(rows.sum())
    gains = [out[f"r2_{p}"] - baselines["weather_only"][f"r2_{p}"] for p in ("heldout_weeks", "heldout_zones")]
    out["r2_gain_over_weather"] = round(float(min(gains)), 4)
    out["baselines"] = baselines
    return out


def no2_baselines(plan: AirPlan, X, y, split) -> dict[str, dict]:
    """Weather-only and weather+clock MLPs fitted on the same rows, scored on the same held-out rows."""
    sets = {
        "weather_only": list(NO2_WEATHER_FEATURES),
        "weather_and_clock": list(NO2_WEATHER_FEATURES) + ["hour_sin", "hour_cos", "weekend"],
    }
    out = {}
    for name, features in sets.items():
        columns = [NO2_FEATURES.index(f) for f in features]
        model = fit(mlp_regressor(plan), X[split["train"]][:, columns], y[split["train"]])
        out[name] = {
            "features": features,
            **{
                f"r2_{p}": r2(y[split[p]], model.predict(X[split[p]][:, columns]))
                for p in ("heldout_weeks", "heldout_zones")
            },
        }
    return out


# ---- running the exported files ------------------------------------------------------


def _runners(manifest: ModelManifest):
    """(format, runtime, backend) for every format whose runtime is installed here."""
    installed = available_backends()
    for fmt in manifest.formats:
        runtime = next((r for r in FORMAT_RUNTIMES[fmt] if r in installed), None)
        if runtime is not None:
            yield fmt, runtime, load(manifest.files[fmt], runtime)


def _latency_us(backend, row: np.ndarray, runs: int = 200) -> float:
    return round(probe_seconds(backend, runs, row) * 1e6, 1)


def evaluate_model(kind: str, model_dir: Path, data: dict, plan: AirPlan) -> dict:
    """Measured metrics of every format of one model, targets and whether each is met."""
    manifest = ModelManifest.read(model_dir)
    by_format, files = {}, {}
    for fmt, runtime, backend in _runners(manifest):
        if kind == "pattern":
            classes = np.asarray(manifest.classes)
            metrics = pattern_metrics(lambda X, b=backend, c=classes: c[b.decide(X)], *data["pattern"])
        elif kind == "fault":
            classes = np.asarray(manifest.classes)
            metrics = fault_metrics(lambda X, b=backend, c=classes: c[b.decide(X)], *data["fault"])
        else:
            metrics = no2_metrics(backend.predict, *data["no2"])
        by_format[fmt] = metrics
        files[fmt] = {
            "path": manifest.files[fmt].path.name,
            "bytes": manifest.files[fmt].bytes,
            "runtime": runtime,
            "latency_us_per_window": _latency_us(backend, manifest.mean.reshape(1, -1)),
        }
    return {"metrics": by_format, "targets": judge(kind, by_format), "files": files, "manifest": manifest}


def judge(kind: str, by_format: dict[str, dict]) -> list[dict]:
    """The card's targets: each judged on its worst format, met only when every format meets it."""
    out = []
    for t in TARGETS[kind]:
        measured = [m[t.metric] for m in by_format.values() if m.get(t.metric) is not None]
        worst = (min if t.op == ">=" else max)(measured) if measured else None
        out.append(target(t.metric, t.what, t.op, t.value, worst, met=all(t.met(v) for v in measured)))
    return out


def simulate_test_data(plan: AirPlan, progress: bool = True) -> dict:
    """The held-out rows of every model (and the NO2 baselines fitted on the NO2 training rows)."""
    print("simulating the held-out sites", flush=True)
    pattern = pattern_windows(plan.pattern_test.simulate(progress))
    fault = fault_windows(plan.fault_test.simulate(progress))
    X, y, week, site = no2_windows(plan.no2_sites.simulate(progress))
    split = no2_split(week, site, plan)
    return {"pattern": pattern, "fault": fault, "no2": (X, y, split, no2_baselines(plan, X, y, split))}


# ---- the virtual sensor as the reference of the calibration-drift detector -------------

DRIFT_UGM3_PER_DAY = 0.3  # about 9 ug/m3 a month: a metal-oxide sensor's zero moving (field notes)


def drift_runs(model_dir: Path, seeds, days: int = 63, drift: float | None = None) -> list[int | None]:
    """Day of the first recalibration alert (None: no alert) for each seeded site, replayed reading by reading.

    The site's NO2 sensor drifts by ``drift`` ug/m3 per day (None: no drift); the
    detector watches it against the NO2 virtual sensor, with its default settings.
    """
    import dataclasses

    from edge.detectors.air_models import No2VirtualSensor
    from edge.detectors.drift import CalibrationDriftDetector
    from edge.sources.replay import ReplaySource
    from training.air.sensors import NO_FAULTS
    from training.air.simulation import SiteParams, simulate_air_site

    first_alarm = []
    for seed in seeds:
        params = SiteParams.draw(np.random.default_rng([seed, 0]))
        if drift is not None:
            params = dataclasses.replace(params, mox_offset_per_day=drift, mox_gain_per_day=0.0)
        site = simulate_air_site(days, seed, "2025-11-03", NO_FAULTS, params, mox_drift=drift is not None)
        ds = site.to_dataset()
        estimator = No2VirtualSensor(
            "drift-check",
            "gw",
            {k: k for k in ("cell_count", "wind_speed", "temperature", "humidity")},
            model_dir,
            backend="numpy",
        )
        detector = CalibrationDriftDetector("drift-check", "gw", "no2", estimator=estimator)
        alarm = None
        for reading in ReplaySource(
            ds, "drift-check", "gw", list(zip(ds.columns, ds.columns, ds.quantities, strict=True))
        ):
            for out in detector.update(reading):
                if alarm is None and getattr(out, "state", None) == "raised":
                    alarm = int((out.time_ms - int(site.time_ms[0])) // 86_400_000)
        first_alarm.append(alarm)
    return first_alarm


def drift_check(model_dir: Path, n_sites: int = 10, seed: int = 6100, days: int = 91) -> dict:
    """False alarms without drift and detections with +-DRIFT_UGM3_PER_DAY, over ``n_sites`` simulated sites."""
    seeds = range(seed, seed + n_sites)
    quiet = drift_runs(model_dir, seeds, days)
    up = drift_runs(model_dir, seeds, days, DRIFT_UGM3_PER_DAY)
    down = drift_runs(model_dir, seeds, days, -DRIFT_UGM3_PER_DAY)
    hits = [d for d in up + down if d is not None]
    return {
        "sites": n_sites,
        "days": days,
        "seed": seed,
        "drift_ugm3_per_day": DRIFT_UGM3_PER_DAY,
        "false_alarms_without_drift": sum(d is not None for d in quiet),
        "detected_rising": sum(d is not None for d in up),
        "detected_falling": sum(d is not None for d in down),
        "median_day_of_alarm": float(np.median(hits)) if hits else None,
        "detector": "edge.detectors.drift.CalibrationDriftDetector defaults, estimator = this model",
    }


# ---- results -------------------------------------------------------------------------


def write_card(kind: str, result: dict, plan: AirPlan, model_dir: Path) -> dict:
    """Write the model's card (``training.air.card``) from what was measured."""
    exported = json.loads((model_dir / "manifest.json").read_text())
    evaluated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    card = air_card(
        result, air_data(kind, plan), exported.get("description", ""), exported.get("export_check", {}), evaluated
    )
    return write_air_card(model_dir, card)


def print_table(kind: str, result: dict) -> None:
    """Targets against measured values, on stdout."""
    met = {t["name"]: t["met"] for t in result["targets"]}
    print(f"\n{MODEL_NAMES[kind]}")
    for t in TARGETS[kind]:
        measured = "  ".join(f"{fmt}={m[t.metric]}" for fmt, m in result["metrics"].items())
        ok = "met" if met[t.metric] else "NOT MET"
        print(f"  {t.metric:<30} target {t.op} {t.value:<5}  measured {measured}  -> {ok}")
    if "drift_check" in result:
        d = result["drift_check"]
        print(
            f"  drift check: {d['false_alarms_without_drift']}/{d['sites']} false alarms without drift, "
            f"{d['detected_rising']}+{d['detected_falling']}/{2 * d['sites']} drifts of "
            f"{d['drift_ugm3_per_day']} ug/m3/day detected, median day {d['median_day_of_alarm']}"
        )
    if kind == "no2":
        first = next(iter(result["metrics"].values()))
        for name, b in first["baselines"].items():
            print(f"  baseline {name:<21} r2 held-out weeks {b['r2_heldout_weeks']}, zones {b['r2_heldout_zones']}")


def evaluate_all(models_root: Path, plan: AirPlan = SHIPPED, progress: bool = True, drift_sites: int = 10) -> bool:
    """Evaluate every air model under ``models_root``, print and write cards; True if every target is met.

    ``drift_sites``: simulated sites replayed through the calibration-drift detector
    with the NO2 virtual sensor as its reference (0 skips that check).
    """
    data = simulate_test_data(plan, progress)
    all_met = True
    for kind, name in MODEL_NAMES.items():
        model_dir = Path(models_root) / name
        if not (model_dir / "manifest.json").exists():
            print(f"{model_dir}: no exported model (run python -m training.air.train)", file=sys.stderr)
            all_met = False
            continue
        result = evaluate_model(kind, model_dir, data, plan)
        if kind == "no2" and drift_sites:
            print("replaying simulated sites through the calibration-drift detector", flush=True)
            result["drift_check"] = drift_check(model_dir, drift_sites)
        write_card(kind, result, plan, model_dir)
        print_table(kind, result)
        all_met &= all(t["met"] for t in result["targets"])
    print("\nall targets met" if all_met else "\nsome targets NOT met (see above)")
    return all_met


def main(argv: list[str] | None = None) -> int:
    """``python -m training.air.evaluate``: measure the exported models and rewrite their cards."""
    parser = argparse.ArgumentParser(prog="python -m training.air.evaluate", description=__doc__.split("\n\n")[1])
    parser.add_argument("--models", default="models", help="models root (default models/)")
    parser.add_argument("--quick", action="store_true", help="the small plan of train_air --quick")
    args = parser.parse_args(argv)
    plan, drift_sites = (QUICK, 0) if args.quick else (SHIPPED, 10)
    return 0 if evaluate_all(Path(args.models), plan, drift_sites=drift_sites) else 1


if __name__ == "__main__":
    raise SystemExit(main())
