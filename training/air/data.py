"""The air models' datasets: seeded sets of simulated sites, which set trains and tests each model, windows, labels.

Every row is computed with the device's feature code (``edge.features.air_features``),
so the models learn from what a gateway computes. The plan also holds the one MLP
recipe (scaler + small MLP, early stopping) the models and the NO2 baselines are
fitted with.

>>> no2_split(np.array([0, 9, 9]), np.array([0, 0, 99]), AirPlan())["heldout_zones"].tolist()
[False, False, True]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from edge.features.air_features import (
    FAULT_SENSOR_KINDS,
    HOUR_SLOTS,
    fault_features,
    hour_ends,
    no2_features,
    pattern_features,
)
from training.air.sensors import FAULT_CODE, NO_FAULTS, FaultRates
from training.air.simulation import PATTERNS, AirSite, simulate_air_site

MODEL_NAMES = {"pattern": "air-pattern", "fault": "air-fault", "no2": "air-no2-virtual"}
FAULT_CLASSES = ("ok", "stuck", "spike", "dropout", "fan_failure")
# A window whose fault covers fewer slots than this is neither clean nor faulty: not scored.
FAULT_MIN_SLOTS = 3
AMBIGUOUS, DRIFTING = -1, -2
SLOTS_PER_WEEK = 7 * 144


def simulate_air_sites(
    n_sites: int,
    days: int,
    seed: int = 0,
    faults: FaultRates | None = None,
    starts: list[str] | None = None,
    progress: bool = True,
) -> list[AirSite]:
    """``n_sites`` independent sites (seeds ``seed``, ``seed+1``...), starts spread over Oct-Mar by default."""
    from tqdm import tqdm

    rng = np.random.default_rng([seed, 99])
    if starts is None:
        base = datetime(2025, 10, 6, tzinfo=UTC).timestamp()
        offsets = rng.integers(0, 22, n_sites) * 7  # whole weeks, so sites start on Mondays
        starts = [datetime.fromtimestamp(base + 86400 * int(o), tz=UTC).date().isoformat() for o in offsets]
    return [
        simulate_air_site(days, seed + i, starts[i], faults)
        for i in tqdm(range(n_sites), desc="simulating air sites", unit="site", disable=not progress)
    ]


@dataclass(frozen=True)
class SiteSet:
    """A seeded set of simulated sites."""

    seed: int
    n_sites: int
    days: int
    faults: FaultRates | None = NO_FAULTS

    def simulate(self, progress: bool = True) -> list[AirSite]:
        """The sites of this set, simulated."""
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


SHIPPED = AirPlan()  # the plan of the shipped models
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
    """End slots of every complete hour of ``site``."""
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


# ---- the MLP recipe ------------------------------------------------------------------


def mlp_classifier(plan: AirPlan, seed: int = 0):
    """The plan's MLP classifier behind a standard scaler."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=plan.hidden, max_iter=plan.max_iter, early_stopping=True, random_state=seed),
    )


def mlp_regressor(plan: AirPlan, seed: int = 0):
    """The plan's MLP regressor behind a standard scaler."""
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPRegressor(hidden_layer_sizes=plan.hidden, max_iter=plan.max_iter, early_stopping=True, random_state=seed),
    )


def fit(model, X, y):
    """``model.fit(X, y)`` without the convergence warnings (early stopping decides)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: early stopping decides
        return model.fit(X, y)
