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
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.features.air_features import (
    FAULT_FEATURES,
    FAULT_SENSOR_KINDS,
    HOUR_SLOTS,
    NO2_FEATURES,
    PATTERN_FEATURES,
    fault_features,
    hour_ends,
    no2_features,
    pattern_features,
)
from training.air.simulation import FAULT_CODE, NO_FAULTS, PATTERNS, AirSite, FaultRates, simulate_air_sites

MODEL_NAMES = {"pattern": "air-pattern", "fault": "air-fault", "no2": "air-no2-virtual"}
MODEL_VERSION = "1"
FAULT_CLASSES = ("ok", "stuck", "spike", "dropout", "fan_failure")
# A window whose fault covers fewer slots than this is neither clean nor faulty: not scored.
FAULT_MIN_SLOTS = 3
AMBIGUOUS, DRIFTING = -1, -2
SLOTS_PER_WEEK = 7 * 144


@dataclass(frozen=True)
class SiteSet:
    """A seeded set of simulated sites."""

    seed: int
    n_sites: int
    days: int
    faults: FaultRates | None = NO_FAULTS

    def simulate(self, progress: bool = True) -> list[AirSite]:
        return simulate_air_sites(self.n_sites, self.days, seed=self.seed, faults=self.faults, progress=progress)


@dataclass(frozen=True)
class AirPlan:
    """Which simulated sites train and which test each model; seeds never overlap."""

    pattern_train: SiteSet = SiteSet(1000, 24, 35)
    pattern_test: SiteSet = SiteSet(2000, 12, 35)  # held-out days: other sites, other seeds
    fault_train: SiteSet = SiteSet(3000, 24, 35, FaultRates().scaled(3.0))  # faults over-sampled
    fault_test: SiteSet = SiteSet(4000, 16, 35, None)  # field-like fault rates
    no2_sites: SiteSet = SiteSet(5000, 20, 56)
    no2_train_sites: int = 14  # the rest are zones without an NO2 sensor
    no2_train_weeks: int = 5  # later weeks are held out
    hidden: tuple[int, ...] = (32, 16)
    max_iter: int = 400


QUICK = AirPlan(
    SiteSet(1000, 4, 14),
    SiteSet(2000, 2, 14),
    SiteSet(3000, 4, 14, FaultRates().scaled(3.0)),
    SiteSet(4000, 2, 14, None),
    SiteSet(5000, 4, 21),
    3,
    2,
    (16,),
    150,
)


# ---- windows and labels --------------------------------------------------------------


def site_ends(site: AirSite) -> np.ndarray:
    return hour_ends(site.time_ms.shape[0], int(site.time_ms[0]))


def pattern_windows(sites: list[AirSite]) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and pattern names of every complete hour of ``sites``."""
    X, y = [], []
    for site in sites:
        ends = site_ends(site)
        rows = pattern_features(site.sensors, site.time_ms, ends)
        labels = site.pattern[(ends - HOUR_SLOTS) // HOUR_SLOTS]
        ok = np.all(np.isfinite(rows), axis=1)
        X.append(rows[ok])
        y.append(np.asarray(PATTERNS)[labels[ok]])
    return np.vstack(X), np.concatenate(y)


def fault_window_labels(codes: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Class index in FAULT_CLASSES of each fault window, AMBIGUOUS or DRIFTING where not scored."""
    slots = np.stack([codes[e - HOUR_SLOTS - 1 : e - 1] for e in ends])
    count = {k: np.sum(slots == FAULT_CODE[k], axis=1) for k in FAULT_CODE}
    label = np.where(np.all(slots == 0, axis=1), 0, AMBIGUOUS)
    label[count["spike"] >= 1] = FAULT_CLASSES.index("spike")
    for kind in ("stuck", "dropout", "fan_failure"):
        label[(count[kind] >= FAULT_MIN_SLOTS)] = FAULT_CLASSES.index(kind)
        label[(count[kind] > 0) & (count[kind] < FAULT_MIN_SLOTS)] = AMBIGUOUS
    label[(count["drift"] > 0) & (label <= 0)] = DRIFTING  # the drift detector's job, over days
    return label


def fault_windows(sites: list[AirSite]) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and labels (class index, AMBIGUOUS, DRIFTING) for every sensor-hour."""
    X, y = [], []
    for site in sites:
        ends = site_ends(site)
        for kind in FAULT_SENSOR_KINDS:
            X.append(fault_features(site.sensors[kind], kind, ends))
            y.append(fault_window_labels(site.faults[kind], ends))
    return np.vstack(X), np.concatenate(y)


def no2_windows(sites: list[AirSite]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Feature rows, true hourly NO2, week index and site index of every complete hour."""
    X, y, week, index = [], [], [], []
    for i, site in enumerate(sites):
        ends = site_ends(site)
        rows = no2_features(site.sensors, site.time_ms, ends)
        hourly = site.truth["no2"][: (site.time_ms.shape[0] // HOUR_SLOTS) * HOUR_SLOTS]
        target = hourly.reshape(-1, HOUR_SLOTS).mean(axis=1)[(ends - HOUR_SLOTS) // HOUR_SLOTS]
        ok = np.all(np.isfinite(rows), axis=1)
        X.append(rows[ok])
        y.append(target[ok])
        week.append((ends[ok] - 1) // SLOTS_PER_WEEK)
        index.append(np.full(int(ok.sum()), i))
    return np.vstack(X), np.concatenate(y), np.concatenate(week), np.concatenate(index)


def no2_split(week: np.ndarray, site: np.ndarray, plan: AirPlan) -> dict[str, np.ndarray]:
    """Row masks: train (first weeks of sensor zones), held-out weeks of those zones, held-out zones."""
    seen = site < plan.no2_train_sites
    early = week < plan.no2_train_weeks
    return {"train": seen & early, "heldout_weeks": seen & ~early, "heldout_zones": ~seen & ~early}


# ---- models --------------------------------------------------------------------------


def mlp_classifier(plan: AirPlan, seed: int = 0):
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=plan.hidden, max_iter=plan.max_iter, early_stopping=True, random_state=seed),
    )


def mlp_regressor(plan: AirPlan, seed: int = 0):
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPRegressor(hidden_layer_sizes=plan.hidden, max_iter=plan.max_iter, early_stopping=True, random_state=seed),
    )


def _fit(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: early stopping decides
        return model.fit(X, y)


def train_pattern(sites: list[AirSite], plan: AirPlan):
    X, y = pattern_windows(sites)
    return _fit(mlp_classifier(plan), X, y), X


def train_fault(sites: list[AirSite], plan: AirPlan):
    X, y = fault_windows(sites)
    keep = y >= 0
    return _fit(mlp_classifier(plan), X[keep], np.asarray(FAULT_CLASSES)[y[keep]]), X[keep]


def train_no2(sites: list[AirSite], plan: AirPlan, columns: list[int] | None = None):
    """The NO2 virtual sensor (all features) or, with ``columns``, a baseline on a subset."""
    X, y, week, site = no2_windows(sites)
    rows = no2_split(week, site, plan)["train"]
    X = X[rows] if columns is None else X[rows][:, columns]
    return _fit(mlp_regressor(plan), X, y[rows]), X


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


def train_all(out_root: Path, plan: AirPlan = AirPlan(), progress: bool = True) -> dict[str, Path]:
    """Simulate, fit and export the three models; return their directories."""
    started = time.perf_counter()
    out_root = Path(out_root)
    steps = [
        ("pattern", plan.pattern_train, train_pattern),
        ("fault", plan.fault_train, train_fault),
        ("no2", plan.no2_sites, train_no2),
    ]
    dirs = {}
    for kind, sites, fit in steps:
        print(f"[{kind}] simulating {sites.n_sites} sites x {sites.days} days (seed {sites.seed})", flush=True)
        model, X = fit(sites.simulate(progress), plan)
        export(kind, model, X, out_root)
        dirs[kind] = out_root / MODEL_NAMES[kind]
        print(
            f"[{kind}] exported {dirs[kind]} ({len(X)} training windows, {time.perf_counter() - started:.0f} s so far)",
            flush=True,
        )
    return dirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.air.train", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", default="models", help="models root (default models/)")
    parser.add_argument("--quick", action="store_true", help="a few small sites: a smoke run, not for shipping")
    parser.add_argument("--no-evaluate", action="store_true", help="export only; skip measuring and the cards")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else AirPlan()
    train_all(Path(args.out), plan)
    if not args.no_evaluate:
        from training.air.evaluate import evaluate_all

        return 0 if evaluate_all(Path(args.out), plan, drift_sites=0 if args.quick else 10) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
