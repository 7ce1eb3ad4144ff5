"""The candidate calibrations ``train air-calibration`` fits, each on its own feature terms.

Every candidate reads the same raw inputs (the ``--features`` columns) through
:func:`edge.air.calibration_features.compute_terms`, so the gateway can compute the
terms of whichever one is exported. The roles of the inputs (the sensor's own signal,
temperature, humidity, whether the signal is a resistance) are guessed from the column
names and the training rows, or named on the command line.

Candidates, in their fixed order of simplicity (ties go to the simpler):

==================  ================================================================
``raw_sensor``      the signal as it is (identity): meaningful when it is in the target's unit
``scale_offset``    a straight line through the signal
``linear``          least squares on every raw input: the baseline
``humidity_growth`` (PM) least squares on PM and PM * kappa-Koehler growth aw/(1-aw)
``linear_physical`` least squares on the physical terms (log resistance, T, RH, interactions)
``ridge_physical``  ridge (alpha by leave-one-out) on the physical terms, standardised
``huber_physical``  Huber's robust regression on the physical terms, standardised
``gbm_monotone``    shallow gradient boosting (depth 2), monotone in the signal; evaluated only
``mlp``             the small MLP of earlier versions, on the raw inputs
==================  ================================================================

>>> roles = guess_roles(["PT08.S4(NO2)", "T", "RH"], "NO2(GT)", signal="PT08.S4(NO2)")
>>> roles.signal, roles.temperature, roles.humidity, roles.resistance, roles.pm
(0, 1, 2, True, False)
>>> [t["name"] for t in physical_terms(["PT08.S4(NO2)", "T", "RH"], roles)]
['log(PT08.S4(NO2))', 'T', 'RH', 'log(PT08.S4(NO2))*T', 'log(PT08.S4(NO2))*RH']
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TEMPERATURE = re.compile(r"(^t$|temp)", re.IGNORECASE)
HUMIDITY = re.compile(r"((^|[_\W])rh($|[_\W])|humid)", re.IGNORECASE)
RESISTANCE = re.compile(r"(pt08|resist|ohm|(^|_)rs($|_)|volt|(^|_)mv($|_))", re.IGNORECASE)


@dataclass(frozen=True)
class Roles:
    """Which input (index) is the sensor's signal, the temperature and the humidity."""

    signal: int
    temperature: int | None
    humidity: int | None
    resistance: bool  # the signal is a resistance or voltage: its log is the physical term
    pm: bool  # an optical PM sensor: humidity growth applies


@dataclass(frozen=True)
class Candidate:
    """One way to calibrate: its terms (manifest recipe), how it is fitted, whether it can ship."""

    name: str
    description: str
    terms: list[dict]
    fit: Callable  # (F, y, seed) -> fitted model with .predict(F)
    exportable: bool = True


def guess_roles(features: list[str], target: str, signal=None, temperature=None, humidity=None, y=None, X=None):
    """Roles from names (``T``/``temp``, ``RH``/``humid``, ``PT08``/``resist``/``volt``) or the options given.

    Without ``signal``, the input best correlated with the target on ``X``/``y`` that is
    neither temperature nor humidity.
    """

    def find(name, pattern):
        if name is not None:
            return features.index(name)
        return next((i for i, f in enumerate(features) if pattern.search(f)), None)

    t, h = find(temperature, TEMPERATURE), find(humidity, HUMIDITY)
    if signal is not None:
        s = features.index(signal)
    else:
        others = [i for i in range(len(features)) if i not in (t, h)] or list(range(len(features)))
        if X is None or y is None or len(others) == 1:
            s = others[0]
        else:
            corr = [abs(np.nan_to_num(np.corrcoef(X[:, i], y)[0, 1])) for i in others]
            s = others[int(np.argmax(corr))]
    name = features[s]
    pm = bool(re.search("pm", name, re.IGNORECASE) or re.search("pm", target, re.IGNORECASE))
    return Roles(s, t, h, bool(RESISTANCE.search(name)), pm and h is not None)


def _term(name: str, kind: str, of: list[int]) -> dict:
    return {"name": name, "kind": kind, "of": of}


def raw_terms(features: list[str]) -> list[dict]:
    """Every input as it is."""
    return [_term(f, "value", [i]) for i, f in enumerate(features)]


def signal_terms(features: list[str], roles: Roles) -> list[dict]:
    """The signal alone."""
    return [_term(features[roles.signal], "value", [roles.signal])]


def humidity_growth_terms(features: list[str], roles: Roles) -> list[dict]:
    """PM and PM * aw/(1-aw): the first-order kappa-Koehler correction, linear in its two coefficients."""
    pm, h = features[roles.signal], features[roles.humidity]  # type: ignore[index]
    return [
        _term(pm, "value", [roles.signal]),
        _term(f"growth({h})", "humidity_growth", [roles.humidity]),  # type: ignore[list-item]
        _term(f"{pm}*growth({h})", "product", [0, 1]),
    ]


def physical_terms(features: list[str], roles: Roles) -> list[dict]:
    """Signal (log of a resistance), other inputs, T, RH, signal x T and signal x RH (PM: x growth)."""
    s = roles.signal
    terms = [_term(f"log({features[s]})", "log", [s]) if roles.resistance else _term(features[s], "value", [s])]
    for i, f in enumerate(features):
        if i in (s, roles.temperature, roles.humidity):
            continue
        terms.append(_term(f"log({f})", "log", [i]) if RESISTANCE.search(f) else _term(f, "value", [i]))
    sig = terms[0]["name"]
    if roles.temperature is not None:
        terms.append(_term(features[roles.temperature], "value", [roles.temperature]))
        terms.append(_term(f"{sig}*{features[roles.temperature]}", "product", [0, len(terms) - 1]))
    if roles.humidity is not None:
        h = features[roles.humidity]
        terms.append(_term(h, "value", [roles.humidity]))
        if roles.pm:
            terms.append(_term(f"growth({h})", "humidity_growth", [roles.humidity]))
            terms.append(_term(f"{sig}*growth({h})", "product", [0, len(terms) - 1]))
        else:
            terms.append(_term(f"{sig}*{h}", "product", [0, len(terms) - 1]))
    # interactions after the main terms reads better: T, RH first, then the products
    return [t for t in terms if t["kind"] != "product"] + _renumber(terms)


def _renumber(terms: list[dict]) -> list[dict]:
    """The product terms, their ``of`` re-pointed at the main terms' new positions."""
    mains = [i for i, t in enumerate(terms) if t["kind"] != "product"]
    where = {old: new for new, old in enumerate(mains)}
    return [{**t, "of": [where[i] for i in t["of"]]} for t in terms if t["kind"] == "product"]


# ---- fitting -------------------------------------------------------------------------


def _identity(F, y, seed):
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(F[:2], F[:2, 0])
    model.coef_, model.intercept_ = np.array([1.0]), 0.0
    return model


def _least_squares(F, y, seed):
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit(F, y)


def _ridge(F, y, seed):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))).fit(F, y)


def _huber(F, y, seed):
    from sklearn.linear_model import HuberRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), HuberRegressor(epsilon=1.35, alpha=1e-4, max_iter=2000)).fit(F, y)


def _gbm(sign: int):
    def fit(F, y, seed):
        from sklearn.ensemble import HistGradientBoostingRegressor

        cst = [sign] + [0] * (F.shape[1] - 1)
        return HistGradientBoostingRegressor(
            max_depth=2, max_iter=150, learning_rate=0.05, min_samples_leaf=40, monotonic_cst=cst, random_state=seed
        ).fit(F, y)

    return fit


def _mlp(F, y, seed):
    import warnings

    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # L-BFGS: a co-location period is hundreds to thousands of rows, where it beats Adam.
    model = make_pipeline(
        StandardScaler(),
        MLPRegressor(hidden_layer_sizes=(16,), solver="lbfgs", alpha=1e-3, max_iter=2000, random_state=seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter: the fit is still usable
        return model.fit(F, y)


def candidates(features: list[str], roles: Roles, sign: int) -> list[Candidate]:
    """The candidates in their order of simplicity; ``sign``: +1/-1, the signal's direction (GBM monotonicity)."""
    sig, raw, phys = signal_terms(features, roles), raw_terms(features), physical_terms(features, roles)
    # the signal first in the GBM's inputs, so monotonic_cst[0] constrains it
    gbm_terms = sig + [t for t in raw if t["of"] != [roles.signal]]
    out = [
        Candidate("raw_sensor", "the sensor's reading as it is (identity)", sig, _identity),
        Candidate("scale_offset", "a * signal + b (least squares)", sig, _least_squares),
        Candidate("linear", "least squares on every raw input (the baseline)", raw, _least_squares),
    ]
    if roles.pm:
        out.append(
            Candidate(
                "humidity_growth",
                "least squares on PM and PM * aw/(1-aw) (kappa-Koehler)",
                humidity_growth_terms(features, roles),
                _least_squares,
            )
        )
    out += [
        Candidate("linear_physical", "least squares on the physical terms", phys, _least_squares),
        Candidate("ridge_physical", "ridge, alpha by leave-one-out, on the physical terms", phys, _ridge),
        Candidate("huber_physical", "Huber robust regression on the physical terms", phys, _huber),
        Candidate(
            "gbm_monotone",
            f"gradient boosting, depth 2, 150 trees, {'increasing' if sign > 0 else 'decreasing'} in the signal",
            gbm_terms,
            _gbm(sign),
            exportable=False,
        ),
        Candidate("mlp", "MLP (16 ReLU units, L-BFGS) on the raw inputs", raw, _mlp),
    ]
    return out


__all__ = ["Candidate", "Roles", "candidates", "guess_roles", "physical_terms", "raw_terms"]
