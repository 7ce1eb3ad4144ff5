"""update.json, update.md and update.png of a recalibration: the current and the new version on the new co-location."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.contracts import ms_to_datetime


def update_table(m: dict) -> list[str]:
    """Markdown rows: every update on validation (out of sample), the co-location (in sample) and any test."""
    test = m["n_test"] > 0
    head = "| update | validation R2 | validation MAE | co-location R2 (in sample) |" + (
        " test R2 | test MAE |" if test else ""
    )
    lines = [head + " |", "|---|---|---|---|" + ("---|---|" if test else "") + "---|"]
    for r in m["updates"]:
        if r["name"] == m["chosen"]:
            mark = "**kept**" if r["name"] == "keep" else "**exported**"
        else:
            mark = "reference" if r["kind"] == "reference" else r.get("note", "")
        v, c = r["validation"], r["co_location"]
        cells = f"| {r['name']} | {v['r2']} | {v['mae']} | {c['r2']} |"
        if test:
            cells += f" {r['test']['r2']} | {r['test']['mae']} |"
        lines.append(f"{cells} {mark} |")
    return lines


def _plot(out: Path, m: dict, time_ms, reference, before, after) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    when = np.array([ms_to_datetime(int(t)).replace(tzinfo=None) for t in time_ms])
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(when, reference, lw=0.9, color="black", label="reference")
    ax.plot(when, before, lw=0.8, color="tab:red", alpha=0.8, label=f"v{m['from_version']} (before)")
    if m["written"]:
        ax.plot(when, after, lw=0.8, color="tab:blue", label=f"v{m['version']} ({m['chosen']}, after)")
    ax.set(title=f"{m['target']}: the new co-location, before and after recalibration", ylabel=m["target"])
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    fig.tight_layout()
    path = out / "update.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _report(m: dict, plot: Path) -> str:
    b, a = m["before"], m["after"]
    if m["written"]:
        verdict = (
            f"**Written: v{m['version']}** of `{m['model']}` (`{m['chosen']}`), replacing v{m['from_version']}. "
            "Sign it and send it to the gateways: `frugalsense model sign DIR --key KEY`, then "
            "`frugalsense model push DIR --to SITE/GATEWAY` (docs/model-updates.md)."
        )
    else:
        verdict = (
            f"**Nothing written**: v{m['from_version']} of `{m['model']}` is at least as good as every update on "
            "the validation days of this co-location. If the gateway still says recalibration is needed, check "
            "the reference it compares with (a drifting estimate or reference sensor), or co-locate longer."
        )
    q = m["data_quality"]
    return "\n".join(
        [
            f"# Recalibration of {m['model']} ({m['target']})",
            "",
            f"Co-location: `{m['source']}`, {m['co_location_period'][0]} .. {m['co_location_period'][1]} "
            f"({m['n_co_location']} rows; inputs {', '.join(f'`{c}`' for c in m['inputs'])} for the model's "
            f"{', '.join(f'`{c}`' for c in m['model_inputs'])}). Updates fitted on {m['fit_period'][0]} .. "
            f"{m['fit_period'][1]}, judged on {m['validation_period'][0]} .. {m['validation_period'][1]}; the "
            "chosen one refitted on the whole co-location.",
            "",
            verdict,
            "",
            f"Before (v{m['from_version']}) on the validation days: R2 {b['validation']['r2']}, MAE "
            f"{b['validation']['mae']}; after ({m['chosen']}): R2 {a['validation']['r2']}, MAE "
            f"{a['validation']['mae']}. On the whole co-location (in sample for the fitted updates): "
            f"R2 {b['co_location']['r2']} before, {a['co_location']['r2']} after.",
            "",
            f"Why: {m['why']}",
            "",
            *update_table(m),
            "",
            f"![update]({plot.name})",
            "",
            f"Data: {q['rows']} rows at a {q['step_minutes']:g}-minute step, {q['missing_periods']} periods missing, "
            f"{q['negative_reference']} negative reference values ({q['negative_reference_policy']}).",
            "",
        ]
    )


def write_update_report(out: Path, m: dict, time_ms, reference, before, after) -> list[Path]:
    """Write update.json, update.png and update.md into ``out``; the files written."""
    (out / "update.json").write_text(json.dumps(m, indent=2) + "\n", encoding="utf-8")
    plot = _plot(out, m, time_ms, reference, before, after)
    (out / "update.md").write_text(_report(m, plot), encoding="utf-8")
    return [out / "update.json", out / "update.md", plot]


__all__ = ["update_table", "write_update_report"]
