"""Train and export the three air-site models (pattern, sensor fault, NO2 virtual sensor) on simulated sites.

``python -m training.air.train [--out models] [--quick]`` simulates the training and
held-out sites (seeded), computes the windows with the device's feature code
(``edge.features.air_features``), fits one small MLP per model, exports each through
the export registry (float and int8 ONNX, full-int8 TFLite, numpy) to
``models/air-*/``, then runs ``training.air.evaluate`` which measures every exported
format against the targets and writes the model cards.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edge.features.air_features import FAULT_FEATURES, NO2_FEATURES, PATTERN_FEATURES
from training.air.data import (
    FAULT_CLASSES,
    MODEL_NAMES,
    QUICK,
    SHIPPED,
    AirPlan,
    fault_windows,
    fit,
    mlp_classifier,
    mlp_regressor,
    no2_split,
    no2_windows,
    pattern_windows,
)
from training.air.evaluate import evaluate_all
from training.air.simulation import AirSite

MODEL_VERSION = "1"


def train_pattern(sites: list[AirSite], plan: AirPlan):
    """The pattern model fitted on every complete hour of ``sites``, and its training rows."""
    X, y = pattern_windows(sites)
    return fit(mlp_classifier(plan), X, y), X


def train_fault(sites: list[AirSite], plan: AirPlan):
    """The sensor-fault model fitted on the scored sensor-hours of ``sites``, and its training rows."""
    X, y = fault_windows(sites)
    keep = y >= 0
    return fit(mlp_classifier(plan), X[keep], np.asarray(FAULT_CLASSES)[y[keep]]), X[keep]


def train_no2(sites: list[AirSite], plan: AirPlan, columns: list[int] | None = None):
    """The NO2 virtual sensor (all features) or, with ``columns``, a baseline on a subset."""
    X, y, week, site = no2_windows(sites)
    rows = no2_split(week, site, plan)["train"]
    X = X[rows] if columns is None else X[rows][:, columns]
    return fit(mlp_regressor(plan), X, y[rows]), X


DESCRIPTIONS = {
    "pattern": "Air pattern of the last hour at a street-side site: normal, traffic_peak, regional_episode "
    "or local_source, from PM2.5/PM10 (optical, humidity-dried), NO2, temperature, humidity and "
    "phones per antenna, with 24 h of context.",
    "fault": "Sensor fault of one sensor over the hour ending one slot ago: ok, stuck, spike, dropout or "
    "fan_failure (slow drift is the calibration-drift detector's job).",
    "no2": "NO2 virtual sensor: hourly NO2 (ug/m3) of a zone without an NO2 sensor, from phones per "
    "antenna (privacy-guarded aggregates), wind, temperature, humidity and the clock.",
}


def export(kind: str, model, X_calib: np.ndarray, out_root: Path):
    """Export one fitted model to ``out_root/<name>/`` through the export registry."""
    from training.export import export_model

    features = {"pattern": PATTERN_FEATURES, "fault": FAULT_FEATURES, "no2": NO2_FEATURES}[kind]
    name = MODEL_NAMES[kind]
    return export_model(
        model,
        X_calib,
        out_root / name,
        name,
        MODEL_VERSION,
        feature_names=list(features),
        output_names=["no2"] if kind == "no2" else None,
        description=DESCRIPTIONS[kind],
    )


def train_all(out_root: Path, plan: AirPlan = SHIPPED, progress: bool = True) -> dict[str, Path]:
    """Simulate, fit and export the three models; return their directories."""
    started = time.perf_counter()
    out_root = Path(out_root)
    steps = [
        ("pattern", plan.pattern_train, train_pattern),
        ("fault", plan.fault_train, train_fault),
        ("no2", plan.no2_sites, train_no2),
    ]
    dirs = {}
    for kind, sites, train in steps:
        print(f"[{kind}] simulating {sites.n_sites} sites x {sites.days} days (seed {sites.seed})", flush=True)
        model, X = train(sites.simulate(progress), plan)
        export(kind, model, X, out_root)
        dirs[kind] = out_root / MODEL_NAMES[kind]
        print(
            f"[{kind}] exported {dirs[kind]} ({len(X)} training windows, {time.perf_counter() - started:.0f} s so far)",
            flush=True,
        )
    return dirs


def main(argv: list[str] | None = None) -> int:
    """``python -m training.air.train``: train, export, then measure and write the cards."""
    parser = argparse.ArgumentParser(prog="python -m training.air.train", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", default="models", help="models root (default models/)")
    parser.add_argument("--quick", action="store_true", help="a few small sites: a smoke run, not for shipping")
    parser.add_argument("--no-evaluate", action="store_true", help="export only; skip measuring and the cards")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else SHIPPED
    train_all(Path(args.out), plan)
    if not args.no_evaluate:
        return 0 if evaluate_all(Path(args.out), plan, drift_sites=0 if args.quick else 10) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
