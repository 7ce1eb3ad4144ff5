"""Choose a calibration on a time-ordered validation split that cannot pick a loser.

The last :data:`VALIDATION_SHARE` of the training days validate; the days before fit.
The test period is never looked at. The rule, in two steps:

1. *Eligible* candidates are exportable and score a validation R2 at least that of
   every baseline (raw sensor, scale-and-offset, linear on the raw inputs; all three
   are exportable candidates themselves), so the export is never worse than any of
   them on validation.
2. Among the eligible, the *simplest* (fixed order, ``rank``) whose validation R2 is
   within one standard error of the best eligible one: the "one-standard-error rule"
   (Hastie, Tibshirani & Friedman, Elements of Statistical Learning, 7.10). A week of
   validation is a noisy judge; a more complex model must win by more than that noise,
   as the field's finding that simpler calibrations transfer better asks. The SE is a
   day-block bootstrap of the R2 difference (:func:`annotate_se`, seeded).

>>> time_ms = np.arange(40) * 86_400_000 // 4  # 10 days, 6-hourly
>>> train = np.arange(40) < 32                  # the first 8 days train
>>> fit, val = validation_split(time_ms, train)
>>> int(fit.sum()), int(val.sum())              # days 0-5 fit, 6-7 validate
(24, 8)
>>> rows = [{"name": "mlp", "rank": 3, "exportable": True, "validation": {"r2": 0.61}},
...         {"name": "linear", "rank": 1, "exportable": True, "validation": {"r2": 0.61}},
...         {"name": "gbm", "rank": 2, "exportable": False, "validation": {"r2": 0.9}}]
>>> choose(rows)["name"]
'linear'
>>> rows[0]["validation"] = {"r2": 0.65, "se_vs_best": 0.0}
>>> rows[1]["validation"] = {"r2": 0.61, "se_vs_best": 0.05}  # within one SE of the MLP: the simpler wins
>>> choose(rows)["name"]
'linear'
>>> rows[1]["validation"]["se_vs_best"] = 0.01
>>> choose(rows)["name"]
'mlp'
>>> score(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))["r2"]
0.5
"""

from __future__ import annotations

import numpy as np

from edge.contracts import ms_to_datetime

DAY_MS = 86_400_000
VALIDATION_SHARE = 0.25
MIN_FIT_ROWS = 24
MIN_VALIDATION_ROWS = 12
BASELINES = ("raw_sensor", "scale_offset", "linear")  # the export is never worse than these
BOOTSTRAP = 200


def validation_split(time_ms: np.ndarray, train: np.ndarray, share: float = VALIDATION_SHARE):
    """(fit, validation) masks: the last ``share`` of the training days validate, in time order."""
    t = time_ms[train]
    start, end = int(t[0]), int(t[-1])
    first_day = start - start % DAY_MS
    days = max(1, int(np.ceil((end - first_day + 1) / DAY_MS)))
    cut = first_day + int(round(days * (1 - share))) * DAY_MS
    fit = train & (time_ms < cut)
    return fit, train & ~fit


def score(y: np.ndarray, p: np.ndarray) -> dict:
    """R2, MAE, RMSE and rows of predictions ``p`` against the reference ``y``."""
    y, p = np.asarray(y, float), np.asarray(p, float)
    res = y - p
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - float(np.sum(res**2)) / ss if ss > 0 else float("nan")
    return {
        "r2": round(r2, 4),
        "mae": round(float(np.mean(np.abs(res))), 4),
        "rmse": round(float(np.sqrt(np.mean(res**2))), 4),
        "n": int(len(y)),
    }


def by_month(time_ms: np.ndarray, y: np.ndarray, p: np.ndarray) -> dict:
    """``{"YYYY-MM": {r2, mae, rmse, n}}`` per calendar month (UTC)."""
    months = np.array([ms_to_datetime(int(t)).strftime("%Y-%m") for t in time_ms])
    return {m: score(y[months == m], p[months == m]) for m in sorted(set(months))}


def evaluate(time_ms, y, p) -> dict:
    """Overall scores plus ``by_month``."""
    return {**score(y, p), "by_month": by_month(time_ms, y, p)}


def _best(rows: list[dict], baselines: tuple[str, ...] = BASELINES) -> tuple[dict, list[dict]]:
    """(best eligible row, eligible rows): eligible = exportable and not worse on validation than any baseline."""
    usable = [r for r in rows if r["exportable"] and np.isfinite(r["validation"]["r2"])]
    if not usable:
        raise ValueError("no exportable candidate has a validation score")
    floor = max((r["validation"]["r2"] for r in usable if r["name"] in baselines), default=-np.inf)
    eligible = [r for r in usable if r["validation"]["r2"] >= floor]
    return min(eligible, key=lambda r: (-r["validation"]["r2"], r["rank"])), eligible


def choose(rows: list[dict], baselines: tuple[str, ...] = BASELINES) -> dict:
    """The simplest eligible row within one standard error of the best; see the module doc.

    Eligible: exportable, and on validation at least as good as every baseline
    (raw sensor, scale-and-offset, linear; a recalibration passes its own). Without
    ``se_vs_best`` (no bootstrap run), the best eligible row; equal R2 goes to the
    lowest ``rank``.
    """
    best, eligible = _best(rows, baselines)
    top = best["validation"]["r2"]
    close = [r for r in eligible if round(top - r["validation"]["r2"], 4) <= r["validation"].get("se_vs_best", 0.0)]
    return min(close, key=lambda r: r["rank"])


def annotate_se(
    rows: list[dict],
    y: np.ndarray,
    preds: dict,
    days: np.ndarray,
    seed: int = 0,
    baselines: tuple[str, ...] = BASELINES,
) -> None:
    """Write into each exportable row's validation the day-block bootstrap SE of R2(best) - R2(row).

    Days are resampled with replacement (:data:`BOOTSTRAP` times, seeded), keeping each
    day's hours together, since neighbouring hours' errors are not independent.
    """
    best, _ = _best(rows, baselines)
    groups = [np.flatnonzero(days == d) for d in np.unique(days)]
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {n: [] for n in preds}
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        yy = y[idx]
        ss = float(np.sum((yy - yy.mean()) ** 2))
        if ss <= 0:
            continue
        r2 = {n: 1 - float(np.sum((yy - p[idx]) ** 2)) / ss for n, p in preds.items()}
        for n in preds:
            diffs[n].append(r2[best["name"]] - r2[n])
    for r in rows:
        if r["name"] in preds and diffs[r["name"]]:
            r["validation"]["se_vs_best"] = round(float(np.std(diffs[r["name"]])), 4)


def why(chosen: dict, rows: list[dict], baselines: tuple[str, ...] = BASELINES) -> str:
    """One sentence: what won validation, against which baselines, and what the SE rule did."""
    by_name = {r["name"]: r for r in rows}
    best, _ = _best(rows, baselines)
    against = ", ".join(f"{n} {by_name[n]['validation']['r2']}" for n in baselines if n in by_name)
    v = chosen["validation"]
    if chosen is best:
        text = f"{chosen['name']} has the best validation R2 ({v['r2']}) of the eligible candidates"
    else:
        text = (
            f"{chosen['name']} (validation R2 {v['r2']}) is the simplest candidate within one standard error "
            f"({v.get('se_vs_best')}) of the best, {best['name']} ({best['validation']['r2']})"
        )
    text += f"; baselines on validation: {against}"
    top = max(
        (r for r in rows if r.get("kind") == "candidate" and np.isfinite(r["validation"]["r2"])),
        key=lambda r: r["validation"]["r2"],
    )
    if top is not best and not top["exportable"]:
        text += f"; {top['name']} scored {top['validation']['r2']} but is evaluated only (not exported)"
    return text + "."


__all__ = [
    "BASELINES",
    "VALIDATION_SHARE",
    "annotate_se",
    "by_month",
    "choose",
    "evaluate",
    "score",
    "validation_split",
    "why",
]
