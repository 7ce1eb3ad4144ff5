"""Train a learned leak detector for one zone: simulated scenarios -> features -> MLP -> tuned alarm -> export.

``train_leak(spec, out_dir)`` simulates the training, validation and held-out sets
(``training.water.scenarios``), computes the zone features with the baseline fed
only leak-free days (the device feeds it the days without an alarm), fits a small
MLP (StandardScaler + MLPClassifier), picks the alarm threshold and persistence on
the validation scenarios by replaying the device logic, exports every format with
``training.export`` and evaluates (``training.leak.card``) into ``out_dir``.

The shipped models are ``SHIPPED`` and ``python -m training.leak.train --shipped``
(``make train``) rebuilds them all, deterministically (fixed seeds, one BLAS thread).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from edge.detectors.leak_settings import LeakDetectorSettings
from edge.features.leak_features import DAY_MS, LeakFeatureLayout, LeakFeatureState, zone_channels
from edge.runtime.manifest import MANIFEST_FILE
from training.leak.card import write_card
from training.leak.evaluate import (
    alarm_states,
    evaluate_set,
    false_alarms,
    groups,
    pooled_scores,
    replay_learned,
    sensor_values,
)
from training.water.scenario_set import ScenarioSet
from training.water.scenarios import PRESENCE_COLUMN, ScenarioConfig, ZonePlan, generate, jsonable, plan_zone

log = logging.getLogger(__name__)

# Persistence candidates: raise threshold x hours at or above it to raise. Clearing
# needs CLEAR_H hours below half the raise threshold.
THRESHOLDS = (0.5, 0.7, 0.85, 0.95)
RAISE_H = (1.0, 2.0, 4.0, 6.0)
CLEAR_H = 2.0
# Validation false alarms allowed when picking the persistence (the target is 1 per 30 days).
MAX_VAL_FALSE_ALARMS_PER_30_DAYS = 0.25


@dataclass(frozen=True)
class LeakTrainingSpec:
    """Everything that defines a trained leak model; the same spec gives the same files."""

    name: str
    network: str = "Net3"
    flows: tuple[tuple[str, int], ...] | None = None  # None: the boundary links (sensor_placement)
    pressures: tuple[str, ...] | None = None  # None: placed by farthest-first traversal
    presence: bool = False  # the zone's mobile-network presence count is a model input
    population_change_share: float = 0.0  # of training scenarios with a population change
    n_train: int = 400
    n_val: int = 100
    n_test: int = 200  # held-out leak scenarios (other seeds)
    n_test_free: int = 100  # held-out leak-free scenarios
    holdout_network: str | None = None  # a network never seen in training (sensors placed automatically)
    n_holdout: int = 100
    n_population: int = 0  # held-out leak-free scenarios with a population change (presence recorded)
    days: int = 30
    step_s: int = 900
    seed: int = 1
    hidden: tuple[int, ...] = (32, 16)
    max_rows: int = 300_000
    version: str = "1"
    description: str = ""

    def config(self, **changes) -> ScenarioConfig:
        return replace(ScenarioConfig(days=self.days, step_s=self.step_s, presence=self.presence), **changes)


SHIPPED = (
    LeakTrainingSpec(
        name="leak-mlp-net3",
        network="Net3",
        # the demo zone's meters and pressure sensors (training.water.zone, firmware_configs/net3-demo.yaml)
        flows=(("10", 1), ("60", 1), ("40", 1), ("50", 1), ("20", 1)),
        pressures=("101", "123", "141", "173", "247"),
        holdout_network="Net1",
        n_population=100,
        description="Net3 zone: 5 district meters, 5 pressure sensors, 15 min steps",
    ),
    LeakTrainingSpec(
        name="leak-mlp-net3-presence",
        network="Net3",
        flows=(("10", 1), ("60", 1), ("40", 1), ("50", 1), ("20", 1)),
        pressures=("101", "123", "141", "173", "247"),
        presence=True,
        population_change_share=0.5,
        n_test=100,
        n_test_free=50,
        n_population=100,
        seed=2,
        description="Net3 zone with its mobile-network presence count as a demand covariate",
    ),
)


@dataclass
class ZoneData:
    """The scenario sets of one training run."""

    plan: ZonePlan
    sets: dict[str, ScenarioSet] = field(default_factory=dict)


def simulate_sets(
    spec: LeakTrainingSpec, workers: int = 2, progress: bool = True, cache: Path | None = None
) -> ZoneData:
    """Training, validation and held-out scenario sets (read from ``cache`` when already there)."""
    cfg = spec.config(population_change_share=spec.population_change_share)
    plan = plan_zone(
        spec.network, cfg, list(spec.flows) if spec.flows else None, list(spec.pressures) if spec.pressures else None
    )
    wanted = {
        "train": (plan, spec.n_train, 1),
        "val": (plan, spec.n_val, 2),
        "test": (replace(plan, config=replace(cfg, leak_share=1.0, population_change_share=0.0)), spec.n_test, 3),
        "test_free": (
            replace(plan, config=replace(cfg, leak_share=0.0, population_change_share=0.0)),
            spec.n_test_free,
            4,
        ),
    }
    if spec.holdout_network:
        other = plan_zone(spec.holdout_network, replace(cfg, population_change_share=0.0, presence=False))
        wanted["holdout"] = (other, spec.n_holdout, 5)
    if spec.n_population:
        wanted["population"] = (
            replace(plan, config=replace(cfg, leak_share=0.0, population_change_share=1.0, presence=True)),
            spec.n_population,
            6,
        )
    data = ZoneData(plan)
    for key, (p, n, offset) in wanted.items():
        if n <= 0:
            continue
        path = None if cache is None else cache / f"{spec.name}-{key}.npz"
        if path is not None and path.is_file():
            data.sets[key] = ScenarioSet.load(path)
            continue
        data.sets[key] = generate(p, n, spec.seed * 1000 + offset, workers=workers, progress=progress)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            data.sets[key].save(path)
    return data


def model_sensors(plan: ZonePlan) -> list[tuple[str, str]]:
    """The model's sensors, as (element, quantity): flows, then pressures, then presence if the zone has it."""
    sensors = [(f, "flow") for f, _ in plan.flows] + [(p, "pressure") for p in plan.pressures]
    if plan.config.presence:
        sensors.append((PRESENCE_COLUMN, "cell_count"))
    return sensors


def teacher_features(layout: LeakFeatureLayout, scenario_set: ScenarioSet, values: np.ndarray):
    """Feature rows of every step, the baseline fed only days without a leak: (X, y, valid), flattened."""
    spd = layout.steps_per_day
    n, t = values.shape[:2]
    X = np.zeros((n, t, len(layout.feature_names)))
    valid = np.zeros((n, t), bool)
    for i in range(n):
        state = LeakFeatureState(layout)
        channels = zone_channels(layout, values[i])
        for d in range(t // spd):
            rows = slice(d * spd, (d + 1) * spd)
            state.start_day(int(scenario_set.time_ms[0]) + d * DAY_MS)
            X[i, rows], valid[i, rows] = state.features(channels[rows])
            state.end_day(channels[rows], accepted=not scenario_set.leak_flag[i, rows].any())
    return X.reshape(n * t, -1), scenario_set.leak_flag.reshape(-1), valid.reshape(-1)


def fit_classifier(X: np.ndarray, y: np.ndarray, hidden: tuple[int, ...], seed: int) -> Pipeline:
    """The leak MLP (behind a standard scaler) fitted on ``X``, ``y``."""
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "mlp",
                MLPClassifier(
                    hidden,
                    alpha=1e-4,
                    batch_size=512,
                    learning_rate_init=2e-3,
                    max_iter=80,
                    early_stopping=True,
                    n_iter_no_change=8,
                    random_state=seed,
                ),
            ),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y.astype(int))


def tune_persistence(layout: LeakFeatureLayout, sensors, score_fn, val: ScenarioSet, values: np.ndarray):
    """The threshold and raise delay with the best pooled F1 on validation leaks, within the false-alarm budget.

    Scores come from the leak-free-baseline features (one pass); the held-out
    evaluation then replays the chosen settings with the device's own feedback.
    """
    X, _, valid = teacher_features(layout, val, values)
    score = np.zeros(valid.shape)
    score[valid] = score_fn(X[valid])
    score, valid = score.reshape(val.leak_flag.shape), valid.reshape(val.leak_flag.shape)
    rows = groups(val)["all_leaks"]
    trials = []
    for threshold in THRESHOLDS:
        for raise_h in RAISE_H:
            settings = LeakDetectorSettings(
                sensors,
                layout,
                threshold,
                threshold / 2,
                max(1, round(raise_h * 3600 / layout.step_s)),
                max(1, round(CLEAR_H * 3600 / layout.step_s)),
            )
            alarm = np.stack([alarm_states(settings.persistence(), score[i], valid[i]) for i in range(len(score))])
            f1 = pooled_scores(alarm[rows], val.leak_flag[rows])["f1"]
            fa = false_alarms(alarm, val.leak_flag, val.step_s)["false_alarms_per_30_days"]
            trials.append(
                {
                    "raise_threshold": threshold,
                    "raise_h": raise_h,
                    "f1": round(f1, 4),
                    "false_alarms_per_30_days": round(fa, 3),
                    "settings": settings,
                }
            )
            log.info(
                "threshold %.2f, raise after %.1f h: F1 %.3f, %.2f false alarms / 30 days", threshold, raise_h, f1, fa
            )
    ok = [t for t in trials if t["false_alarms_per_30_days"] <= MAX_VAL_FALSE_ALARMS_PER_30_DAYS] or trials
    best = max(ok, key=lambda t: (t["f1"], -t["false_alarms_per_30_days"]))
    return best["settings"], [{k: v for k, v in t.items() if k != "settings"} for t in trials]


def fit_and_tune(spec: LeakTrainingSpec, data: ZoneData, sensors, layout: LeakFeatureLayout):
    """Fit the MLP on the training set and pick its alarm settings on the validation set."""
    train, val = data.sets["train"], data.sets["val"]
    X, y, valid = teacher_features(layout, train, sensor_values(train, sensors))
    rows = np.flatnonzero(valid)
    if rows.size > spec.max_rows:
        rows = np.sort(np.random.default_rng(spec.seed).choice(rows, spec.max_rows, replace=False))
    log.info("fitting an MLP %s on %d rows (%.1f %% leak)", spec.hidden, rows.size, 100 * y[rows].mean())
    model = fit_classifier(X[rows], y[rows], spec.hidden, spec.seed)
    leak_column = list(model.classes_).index(1)
    score_fn = lambda Z: model.predict_proba(Z)[:, leak_column]  # noqa: E731
    settings, trials = tune_persistence(layout, sensors, score_fn, val, sensor_values(val, sensors))
    calib = X[rows[np.linspace(0, rows.size - 1, min(rows.size, 5000)).astype(int)]]
    info = {
        "rows": int(rows.size),
        "leak_share": round(float(y[rows].mean()), 4),
        "mlp_iterations": int(model[-1].n_iter_),
        "persistence_trials": trials,
    }
    return model, score_fn, settings, calib, info


def presence_ablation(spec: LeakTrainingSpec, data: ZoneData, sensors, layout: LeakFeatureLayout) -> dict:
    """The same scenarios and recipe without the presence input, on the population-change set.

    The fair 'without the covariate' figure: only the input differs, not the data.
    """
    sensors = [s for s in sensors if s[1] != "cell_count"]
    layout = replace(layout, presence=False)
    _, score_fn, settings, _, _ = fit_and_tune(spec, data, sensors, layout)
    population = data.sets["population"]
    trace = replay_learned(settings, score_fn, population, sensor_values(population, sensors))
    return evaluate_set({"sklearn_float_without_presence": trace}, population)


def train_leak(
    spec: LeakTrainingSpec, out_dir: str | Path, workers: int = 2, progress: bool = True, cache: Path | None = None
) -> dict:
    """Simulate, train, tune, export and evaluate one model into ``out_dir``; return its card."""
    from training.export import export_model

    started = time.perf_counter()
    out = Path(out_dir)
    data = simulate_sets(spec, workers, progress, cache)
    sensors = model_sensors(data.plan)
    layout = LeakFeatureLayout(
        step_s=spec.step_s, n_flow=len(data.plan.flows), n_pressure=len(data.plan.pressures), presence=spec.presence
    )
    model, _, settings, calib, info = fit_and_tune(spec, data, sensors, layout)
    out.mkdir(parents=True, exist_ok=True)
    export_model(
        model,
        calib,
        out,
        spec.name,
        spec.version,
        feature_names=layout.feature_names,
        description=spec.description or f"leak detector for {data.plan.network}",
    )
    manifest_path = out / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["detector"] = {"kind": "learned_leak", **settings.to_dict()}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    training = {
        "spec": jsonable(asdict(spec)),
        "network": data.plan.network,
        "sensors": sensors,
        **info,
        "scenario_sets": {
            k: {
                "scenarios": s.n_scenarios,
                "network": s.meta["network"],
                "seed": s.meta["seed"],
                "failed": len(s.meta["failed"]),
            }
            for k, s in data.sets.items()
        },
    }
    extra = {}
    if spec.presence and "population" in data.sets:
        extra["population_without_presence"] = presence_ablation(spec, data, sensors, layout)
    return write_card(out, spec, data, settings, training, started, extra)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.leak.train``: rebuild the shipped leak models."""
    parser = argparse.ArgumentParser(description="Rebuild the shipped leak models (make train).")
    parser.add_argument("--shipped", action="store_true", help="train every model in SHIPPED into --models")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--cache", type=Path, default=None, help="keep simulated scenario sets here")
    parser.add_argument("--only", help="train only this shipped model")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.shipped and not args.only:
        parser.error("say --shipped (every shipped model) or --only NAME")
    for spec in SHIPPED:
        if args.only and spec.name != args.only:
            continue
        card = train_leak(spec, args.models / spec.name, workers=args.workers, cache=args.cache)
        print(json.dumps({"model": spec.name, "targets": card.get("targets")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
