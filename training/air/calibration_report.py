"""metrics.json, report.md and the plots of a calibration run: every candidate on validation and test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.contracts import ms_to_datetime


def candidate_table(metrics: dict) -> list[str]:
    """Markdown rows: candidate, validation R2/MAE, test R2/MAE, exported or not."""
    lines = ["| candidate | validation R2 | validation MAE | test R2 | test MAE | |", "|---|---|---|---|---|---|"]
    for r in metrics["candidates"]:
        mark = "**exported**" if r["name"] == metrics["chosen"] else ("reference" if r["kind"] == "reference" else "")
        if r["kind"] == "candidate" and not r["exportable"]:
            mark = "evaluated only"
        v, t = r["validation"], r["test"]
        lines.append(f"| {r['name']} | {v['r2']} | {v['mae']} | {t['r2']} | {t['mae']} | {mark} |")
    return lines


def month_table(metrics: dict, split: str = "test") -> list[str]:
    """Markdown: R2 (MAE) per calendar month of ``split`` (``test`` or ``validation``) for every row."""
    months = sorted({m for r in metrics["candidates"] for m in r[split]["by_month"]})
    lines = ["| candidate | " + " | ".join(months) + " |", "|---|" + "---|" * len(months)]
    for r in metrics["candidates"]:
        cells = [r[split]["by_month"].get(m) for m in months]
        lines.append(f"| {r['name']} | " + " | ".join(f"{c['r2']} ({c['mae']})" if c else "" for c in cells) + " |")
    return lines


def _plots(out: Path, metrics: dict, fitted) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target, chosen = metrics["target"], metrics["chosen"]
    time_ms = fitted.table.time_ms[fitted.test]
    reference = fitted.table.columns[target][fitted.test]
    predicted = fitted.test_predictions[chosen]
    when = np.array([ms_to_datetime(int(t)).replace(tzinfo=None) for t in time_ms])
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(when, reference, lw=0.8, color="black", label="reference")
    ax.plot(when, predicted, lw=0.8, color="tab:blue", label=f"exported ({chosen})")
    if chosen != "linear":
        ax.plot(when, fitted.test_predictions["linear"], lw=0.6, color="tab:orange", alpha=0.7, label="linear baseline")
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
    ax.set(title=f"{target}: residuals by month\n(exported - reference, test period)", ylabel="residual")
    fig.tight_layout()
    monthly = out / "residuals_by_month.png"
    fig.savefig(monthly, dpi=110)
    plt.close(fig)

    rows = metrics["candidates"]
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [max(r["validation"]["r2"], -1) for r in rows], 0.4, label="validation")
    ax.bar(x + 0.2, [max(r["test"]["r2"], -1) for r in rows], 0.4, label="test")
    ax.set_xticks(x, [r["name"] for r in rows], rotation=35, ha="right")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(title=f"{target}: R2 of every candidate (floored at -1)", ylabel="R2")
    ax.legend()
    fig.tight_layout()
    bars = out / "candidates.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)
    return [series, monthly, bars]


def _report(m: dict, plots: list[Path]) -> str:
    b, raw, q = m["linear_baseline"], m["raw_sensor"], m["data_quality"]
    s = m["selection"]
    verdict = "at least as good as" if m["r2"] >= b["r2"] else "worse than"
    return "\n".join(
        [
            f"# Calibration of {m['target']}",
            "",
            f"Source: `{m['source']}`. Inputs: {', '.join(f'`{f}`' for f in m['features'])} "
            f"(signal `{m['roles']['signal']}`).",
            "",
            f"Trained on the first {m['train_days']:g} days ({m['train_period'][0]} .. {m['train_period'][1]}, "
            f"{m['n_train']} rows), tested on the rest ({m['test_period'][0]} .. {m['test_period'][1]}, "
            f"{m['n_test']} rows). Candidates fitted on {s['fit_period'][0]} .. {s['fit_period'][1]} and chosen "
            f"on the last {s['validation_share_of_training_days']:.0%} of the training days "
            f"({s['validation_period'][0]} .. {s['validation_period'][1]}); {s['refit']}.",
            "",
            f"**Exported: `{m['chosen']}`** ({m['model']}) as `{m['exported_as']}`. Why: {m['why']}",
            "",
            *candidate_table(m),
            "",
            f"On the test period the export scores R2 {m['r2']}, {verdict} the linear baseline ({b['r2']}); "
            f"the raw sensor scores {raw['r2']}. A calibration loses accuracy as the seasons and the sensor "
            "change: watch the months below, and let the gateway's calibration-drift detector say when to "
            "recalibrate.",
            "",
            "Test R2 (MAE) by calendar month:",
            "",
            *month_table(m),
            "",
            "Validation R2 (MAE) by calendar month:",
            "",
            *month_table(m, "validation"),
            "",
            *[f"![{p.stem}]({p.name})" for p in plots],
            "",
            f"Data: {q['rows']} rows at a {q['step_minutes']:g}-minute step, {q['missing_periods']} periods missing "
            f"({q['gaps_over_one_hour']} gaps over an hour), {q['negative_reference']} negative reference values "
            f"({q['negative_reference_policy']}), {m['rows_without_target_or_feature']} rows without the target or "
            f"an input, {m['rows_without_time']} without a readable time. Read as: {'; '.join(m['notes'])}.",
            "",
        ]
    )


def write_outputs(out: Path, metrics: dict, fitted, name: str) -> list[Path]:
    """Write metrics.json, the plots and report.md into ``out``; the files written."""
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plots = _plots(out, metrics, fitted)
    (out / "report.md").write_text(_report(metrics, plots))
    return [out / "metrics.json", out / "report.md", *plots]


__all__ = ["candidate_table", "month_table", "write_outputs"]
