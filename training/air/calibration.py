"""Retrain a low-cost sensor calibration from a user's CSV of co-located sensors and a reference instrument.

The CSV is read by ``training.air.calibration_csv`` (UCI "Air Quality" shape or a
plain one). The first ``train_days`` days train, the rest test, as a calibration
would be used: fitted on a co-location period, then trusted afterwards.

The calibration is a small MLP (exported in every gateway format through the export
registry), compared with a linear regression on the same features, so the report
says whether the extra capacity bought anything.

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
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.contracts import ms_to_datetime
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


def _metrics(y, p, n_train, n_test) -> dict:
    residual = y - p
    return {
        "r2": round(float(1 - np.sum(residual**2) / np.sum((y - y.mean()) ** 2)), 4),
        "mae": round(float(np.mean(np.abs(residual))), 4),
        "rmse": round(float(np.sqrt(np.mean(residual**2))), 4),
        "n_train": int(n_train),
        "n_test": int(n_test),
    }


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


def train_calibration(
    table: CalibrationTable,
    target: str,
    out_dir: str | Path,
    features: list[str] | None = None,
    train_days: float = 30.0,
    seed: int = 0,
) -> CalibrationResult:
    """Fit, evaluate, export and report a calibration of ``target`` from ``features``; see the module doc."""
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from training.export import export_model

    target = _pick(table, target, "target")
    features = [_pick(table, f, "feature") for f in (features or default_features(table, target))]
    if target in features:
        raise CalibrationCsvError(f"the target {target!r} cannot also be a feature")
    if not features:
        raise CalibrationCsvError(f"no feature column besides {target!r}: name them with --features")
    if not train_days > 0:
        raise CalibrationCsvError(f"--train-days must be a positive number of days, got {train_days}")
    train, test = split_rows(table, target, features, train_days)
    X = np.stack([table.columns[f] for f in features], axis=1)
    y = table.columns[target]
    # L-BFGS: a co-location period is hundreds to thousands of rows, where it beats Adam.
    mlp = make_pipeline(
        StandardScaler(),
        MLPRegressor(hidden_layer_sizes=(16,), solver="lbfgs", alpha=1e-3, max_iter=2000, random_state=seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter: the fit is still usable
        mlp.fit(X[train], y[train])
    linear = LinearRegression().fit(X[train], y[train])
    predicted, baseline = mlp.predict(X[test]), linear.predict(X[test])
    n_train, n_test = int(train.sum()), int(test.sum())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"calibration-{_slug(target)}"[:64].strip("-")
    export_model(
        mlp,
        X[train],
        out,
        name,
        "1",
        feature_names=features,
        output_names=[_slug(target)],
        description=f"Calibration of {target} from {', '.join(features)} ({table.source})",
    )

    def span(rows):
        return [
            ms_to_datetime(int(table.time_ms[rows][0])).isoformat(),
            ms_to_datetime(int(table.time_ms[rows][-1])).isoformat(),
        ]

    metrics = {
        "target": target,
        "features": features,
        "train_days": train_days,
        "source": table.source,
        **_metrics(y[test], predicted, n_train, n_test),
        "linear_baseline": _metrics(y[test], baseline, n_train, n_test),
        "train_period": span(train),
        "test_period": span(test),
        "rows_without_target_or_feature": int(len(y) - n_train - n_test),
        "rows_without_time": table.rows_without_time,
        "model": f"MLPRegressor(16, L-BFGS) in a StandardScaler pipeline, seed {seed}",
        "notes": table.notes,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plots = _plots(out, table.time_ms[test], y[test], predicted, baseline, target)
    (out / "report.md").write_text(_report(metrics, plots, name))
    return CalibrationResult(metrics, out, [out / "metrics.json", out / "report.md", *plots])


def _plots(out: Path, time_ms, reference, predicted, baseline, target: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    when = np.array([ms_to_datetime(int(t)).replace(tzinfo=None) for t in time_ms])
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(when, reference, lw=0.8, color="black", label="reference")
    ax.plot(when, predicted, lw=0.8, color="tab:blue", label="calibration (MLP)")
    ax.plot(when, baseline, lw=0.6, color="tab:orange", alpha=0.7, label="linear baseline")
    ax.set(title=f"{target}: test period, predicted against reference", ylabel=target)
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    fig.tight_layout()
    series = out / "predicted_vs_reference.png"
    fig.savefig(series, dpi=110)
    plt.close(fig)

    months = np.array([w.strftime("%Y-%m") for w in when])
    labels = sorted(set(months))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels)), 4))
    ax.boxplot([predicted[months == m] - reference[months == m] for m in labels], showfliers=False)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(title=f"{target}: residuals by month\n(calibration - reference, test period)", ylabel="residual")
    fig.tight_layout()
    monthly = out / "residuals_by_month.png"
    fig.savefig(monthly, dpi=110)
    plt.close(fig)
    return [series, monthly]


def _report(m: dict, plots: list[Path], name: str) -> str:
    b = m["linear_baseline"]
    better = "better than" if m["r2"] > b["r2"] else "no better than"
    return "\n".join(
        [
            f"# Calibration of {m['target']}",
            "",
            f"Source: `{m['source']}`. Features: {', '.join(f'`{f}`' for f in m['features'])}.",
            "",
            f"Trained on the first {m['train_days']:g} days ({m['train_period'][0]} .. {m['train_period'][1]}, "
            f"{m['n_train']} rows), tested on the rest ({m['test_period'][0]} .. {m['test_period'][1]}, "
            f"{m['n_test']} rows).",
            "",
            "| model | R2 | MAE | RMSE |",
            "|---|---|---|---|",
            f"| calibration (MLP, exported as `{name}`) | {m['r2']} | {m['mae']} | {m['rmse']} |",
            f"| linear baseline | {b['r2']} | {b['mae']} | {b['rmse']} |",
            "",
            f"On the test period the calibration is {better} the linear baseline. A calibration loses accuracy "
            "as the seasons and the sensor change: watch the residuals by month, and let the gateway's "
            "calibration-drift detector say when to retrain.",
            "",
            *[f"![{p.stem}]({p.name})" for p in plots],
            "",
            f"Rows without the target or a feature: {m['rows_without_target_or_feature']}; rows without a readable "
            f"time: {m['rows_without_time']}. Read as: {'; '.join(m['notes'])}.",
            "",
        ]
    )


__all__ = [
    "CalibrationResult",
    "train_calibration",
    "default_features",
    "split_rows",
]
