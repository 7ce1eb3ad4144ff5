"""Write the calibration candidate tables of ``docs/air-models.md`` from runs of ``frugalsense train air-calibration``.

Every figure comes from the command a user runs, on:

* the real London Mile End co-location (``../shared/data``, never copied here): PM2.5
  from the SPS30 with the SHT45's RH and temperature against the reference BAM,
  first 30 days train, hourly (``--resample 60``) and at 15 minutes; then the same
  without the enclosure temperature;
* a simulated co-location in the UCI "Air Quality" shape (metal-oxide resistances
  drifting over five months, seasonal temperature): NO2(GT) and CO(GT).

``python -m scripts.gen_calibration_doc`` rewrites the part between the
``calibration-tables`` markers; ``--keep DIR`` keeps the model directories.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "air-models.md"
BEGIN, END = "<!-- calibration-tables:begin -->", "<!-- calibration-tables:end -->"
LONDON = "london-mile-end-colocation-2025.csv"
UCI_HEADER = "Date;Time;CO(GT);PT08.S1(CO);NO2(GT);PT08.S4(NO2);T;RH;AH;;"


def shared_data(name: str) -> Path | None:
    """``../shared/data/<name>`` next to the repository (or next to the checkout holding a worktree).

    ``FRUGALSENSE_SHARED_DATA`` names the folder instead, for a clone kept elsewhere.
    """
    folders = [Path(os.environ["FRUGALSENSE_SHARED_DATA"])] if os.environ.get("FRUGALSENSE_SHARED_DATA") else []
    folders += [base / "shared" / "data" for base in (ROOT.parent, ROOT.parent.parent)]
    for folder in folders:
        path = folder / name
        if path.is_file():
            return path
    return None


def write_uci_style(path: Path, days: int = 150, seed: int = 0) -> Path:
    """A seeded co-location in the UCI shape: metal-oxide resistances, drifting, against reference CO and NO2.

    Resistances follow the power laws of metal-oxide sensors (reducing CO lowers,
    oxidising NO2 raises the resistance), with a temperature and humidity dependence
    and a baseline drift of 0.2 %/day; temperature runs from late winter into summer.
    """
    rng = np.random.default_rng(seed)
    n = days * 24
    hour, day = np.arange(n) % 24, np.arange(n) / 24
    rush = np.exp(-0.5 * ((hour - 8) / 1.5) ** 2) + np.exp(-0.5 * ((hour - 18) / 2) ** 2)
    t = 8 + 14 * day / days + 5 * np.sin(2 * np.pi * (hour - 9) / 24) + np.cumsum(rng.normal(0, 0.2, n)) * 0.3
    rh = np.clip(70 - 1.5 * (t - 12) + rng.normal(0, 6, n), 10, 95)
    ah = 0.0075 * rh * np.exp(0.06 * t)
    co = np.clip(0.6 + 1.8 * rush * rng.lognormal(0, 0.3, n) + rng.normal(0, 0.15, n), 0.1, None)
    no2 = np.clip(30 + 60 * rush * rng.lognormal(0, 0.3, n) + rng.normal(0, 8, n), 3, None)
    drift = 1 + 0.002 * day
    env = np.exp(-0.01 * (t - 15)) * (1 + 0.004 * (rh - 50))
    s_co = 1400 * drift * env * (1 + co / 0.5) ** -0.55 * rng.lognormal(0, 0.02, n)
    s_no2 = 900 * drift * env * (1 + no2 / 40) ** 0.45 * rng.lognormal(0, 0.02, n)
    start = datetime(2004, 3, 10, 18)
    lines = [UCI_HEADER]
    for i in range(n):
        when = start + timedelta(hours=i)
        cells = [f"{co[i]:.1f}", f"{s_co[i]:.0f}", f"{no2[i]:.0f}", f"{s_no2[i]:.0f}"]
        cells += [f"{t[i]:.1f}", f"{rh[i]:.1f}", f"{ah[i]:.4f}"]
        cells = ["-200" if rng.random() < 0.03 else c.replace(".", ",") for c in cells]  # decimal commas
        lines.append(";".join([when.strftime("%d/%m/%Y"), when.strftime("%H.%M.%S"), *cells, "", ""]))
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return path


def runs(work: Path) -> list[tuple[str, list[str]]]:
    """(title, arguments of ``frugalsense train air-calibration``) per dataset evaluated."""
    out = []
    london = shared_data(LONDON)
    if london is not None:
        pm = ["--csv", str(london), "--target", "ref_pm25", "--features", "sps30_pm25,sht45_rh,sht45_temp"]
        pm += ["--train-days", "30", "--unit", "ug/m3"]
        out.append(("London Mile End PM2.5 (real SPS30 vs BAM), hourly", [*pm, "--resample", "60"]))
        out.append(("London Mile End PM2.5 (real SPS30 vs BAM), 15 minutes", pm))
        # the same without the enclosure temperature (docs/air.md: a confounder over one month)
        no_t = [a.replace(",sht45_temp", "") for a in pm]
        out.append(("London PM2.5 without the enclosure temperature, hourly", [*no_t, "--resample", "60"]))
        out.append(("London PM2.5 without the enclosure temperature, 15 minutes", no_t))
    uci = write_uci_style(work / "uci-style.csv")
    for target in ("NO2(GT)", "CO(GT)"):
        out.append(
            (
                f"UCI-shaped simulated metal-oxide co-location, {target}",
                ["--csv", str(uci), "--target", target, "--train-days", "30"],
            )
        )
    return out


def run_all(keep: Path | None = None) -> tuple[list[tuple[str, list[str], dict]], list[tuple[str, dict]]]:
    """Run every dataset through the CLI; (title, args, metrics) per dataset, (title, schedule) per London set."""
    from gateway.cli import main

    results, schedules = [], []
    with tempfile.TemporaryDirectory(prefix="calibration-doc-") as tmp:
        base = keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        for n, (title, args) in enumerate(runs(base)):
            out = base / f"run{n}"
            if main(["train", "air-calibration", *args, "--out", str(out)]) != 0:
                raise SystemExit(f"train air-calibration failed on {title}")
            results.append((title, args, json.loads((out / "metrics.json").read_text())))
            if title.startswith("London") and "--resample" in args:
                schedules.append((title, london_schedule(args, out, base / f"schedule{n}")))
    return results, schedules


def london_schedule(args: list[str], first_model: Path, work: Path) -> dict:
    """7 days of co-location every 30 days after the first 30, replayed on the run's own CSV and resampling."""
    from training.air.calibration_csv import read_calibration_csv
    from training.air.calibration_data import resample
    from training.air.recalibration_schedule import replay_schedule

    table = read_calibration_csv(args[args.index("--csv") + 1])
    table, _ = resample(table, float(args[args.index("--resample") + 1]))
    return replay_schedule(table, first_model, work)


def schedule_section(schedules) -> list[str]:
    """Markdown: per London set, each period's update and the scores side by side."""
    if not schedules:
        return []
    lines = [
        "### Recalibrating London on a schedule: 7 days of co-location every 30 days",
        "",
        "`training.air.recalibration_schedule`: after the first calibration (days 0-30), days 30-37 and 60-67 "
        "are co-locations for `train air-calibration --update` (its own code); the days after each are scored "
        "for the calibration in use, the first calibration left alone and the raw SPS30. The schedule is fixed; "
        "the last column shows what every update would have scored there (not used to choose).",
        "",
        "| dataset | co-location days | update chosen | version | scored days | R2 in use | R2 first only "
        "| R2 raw | each update on the scored days |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for title, r in schedules:
        for p in r["periods"]:
            each = ", ".join(f"{k} {v}" for k, v in p["each_update_after"].items())
            lines.append(
                f"| {title} | {p['co_location_days'][0]:g}-{p['co_location_days'][1]:g} | {p['update']} | "
                f"v{p['version']} | {p['scored_days'][0]:g}-{p['scored_days'][1]:g} | {p['scheduled']['r2']} | "
                f"{p['first_only']['r2']} | {p['raw_sensor']['r2']} | {each} |"
            )
        q = r["pooled"]
        lines.append(
            f"| {title}, all scored days | | | | | {q['scheduled']['r2']} | {q['first_only']['r2']} | "
            f"{q['raw_sensor']['r2']} | |"
        )
    lines += ["", "Why each update was chosen:", ""]
    lines += [
        f"- {title}, days {p['co_location_days'][0]:g}-{p['co_location_days'][1]:g}: {p['why']}."
        for title, r in schedules
        for p in r["periods"]
    ]
    return [*lines, ""]


def section(results, schedules=()) -> str:
    """The markdown written between the markers."""
    from training.air.calibration_report import candidate_table, month_table

    lines = [BEGIN, "", "_Written by `python -m scripts.gen_calibration_doc`; do not edit by hand._", ""]
    lines += summary(results)
    lines += schedule_section(schedules)
    for title, args, m in results:
        q = m["data_quality"]
        shown = " ".join(f"'{Path(a).name}'" if Path(a).is_file() else a for a in args)
        lines += [
            f"### {title}",
            "",
            f"`frugalsense train air-calibration {shown}`: {m['n_train']} training rows "
            f"({m['train_period'][0][:10]} .. {m['train_period'][1][:10]}), {m['n_test']} test rows; "
            f"validation {m['selection']['validation_period'][0][:10]} .. "
            f"{m['selection']['validation_period'][1][:10]}.",
            "",
            *candidate_table(m),
            "",
            f"Exported **{m['chosen']}**: test R2 {m['r2']} against linear baseline {m['linear_baseline']['r2']} "
            f"and raw sensor {m['raw_sensor']['r2']}. {m['why']}",
            "",
            f"Data: {q['rows']} rows, {q['missing_periods']} periods missing, {q['gaps_over_one_hour']} gaps over "
            f"an hour, {q['negative_reference']} negative reference values ({q['negative_reference_train']} in "
            f"training, {q['negative_reference_test']} in test; kept), "
            f"{m['rows_without_target_or_feature']} rows without the target or an input"
            + (
                f", {sum(m['data_quality']['resampled_periods_dropped'].values())} column-periods dropped by "
                "resampling (under 75 % of their readings)"
                if "resampled_periods_dropped" in q
                else ""
            )
            + ".",
            "",
            "<details><summary>Test R2 (MAE) by month</summary>",
            "",
            *month_table(m),
            "",
            "</details>",
            "",
        ]
    return "\n".join([*lines, END])


def summary(results) -> list[str]:
    """One row per dataset: the export's test R2 against the baselines, and whether the targets hold."""

    def test_r2(m, name):
        return next(r["test"]["r2"] for r in m["candidates"] if r["name"] == name)

    lines = [
        "| dataset | exported | test R2 | linear | raw sensor | constant | export >= linear | export >= raw |"
        " best on test (not used to choose) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for title, _, m in results:
        best = max((r for r in m["candidates"] if r["kind"] == "candidate"), key=lambda r: r["test"]["r2"])
        raw = m["raw_sensor"]["r2"]
        lines.append(
            f"| {title} | {m['chosen']} | {m['r2']} | {m['linear_baseline']['r2']} | {raw} | "
            f"{test_r2(m, 'constant')} | {'yes' if m['r2'] >= m['linear_baseline']['r2'] else 'no'} | "
            f"{'yes' if m['r2'] >= raw else 'no'} | {best['name']} {best['test']['r2']} |"
        )
    return [*lines, ""]


def write_doc(text: str, doc: Path = DOC) -> None:
    """Replace the marked section of ``doc`` (append it when the markers are absent)."""
    current = doc.read_text(encoding="utf-8")
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        current = head + text + rest.split(END, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    doc.write_text(current, encoding="utf-8")


def main(argv=None) -> int:
    """Run every dataset, rewrite the doc's tables, print one line per dataset."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the model directories in DIR")
    args = parser.parse_args(argv)
    results, schedules = run_all(args.keep)
    write_doc(section(results, schedules))
    for title, _, m in results:
        print(f"{title}: exported {m['chosen']} test r2 {m['r2']} (linear {m['linear_baseline']['r2']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
