"""`frugalsense train air-calibration`: retrain a low-cost sensor calibration from a co-location CSV with a reference.

Trains on the first N days (time order), evaluates on the rest. Fits several
candidates (raw sensor, scale-and-offset, linear baseline, linear/ridge/Huber on
physical terms, monotone gradient boosting, MLP), chooses on the last 25 % of the
training days (never the test period) and exports the best on that validation: never
worse there than the raw sensor or the linear baseline. Writes into --out the model
(float and int8 ONNX, int8 TFLite, numpy, manifest with a 'calibration' section),
metrics.json (every candidate on validation and test, by month) and report.md with
its plots. Reads the UCI "Air Quality" shape (';', decimal
commas, Date and Time columns, -200 = missing) and plain CSV (',' and one date-time
column).
"""

from __future__ import annotations

import argparse

from gateway.commands import command_group


def train_subparsers(subparsers):
    """The sub-commands of ``frugalsense train``, shared by every module adding one."""
    return command_group(subparsers, "train", help="train or retrain models", metavar="MODEL")


def register(subparsers) -> None:
    """Add `frugalsense train air-calibration` and its options."""
    p = train_subparsers(subparsers).add_parser(
        "air-calibration",
        help="retrain a sensor calibration from a CSV with a reference column",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--csv", required=True, metavar="FILE", help="the co-location CSV")
    p.add_argument(
        "--target", required=True, metavar="COLUMN", help="the reference column to reproduce, e.g. 'NO2(GT)'"
    )
    p.add_argument(
        "--features",
        metavar="COL,...",
        help="input columns (default: every numeric column but the target and other '(GT)' columns)",
    )
    p.add_argument("--missing", type=float, default=-200.0, help="the value meaning 'missing' (default -200)")
    p.add_argument(
        "--train-days",
        type=float,
        default=30.0,
        metavar="N",
        help="days, from the first usable row, that train; the rest test (default 30)",
    )
    p.add_argument(
        "--resample", type=float, metavar="MINUTES", help="average into periods of MINUTES first (e.g. 60 for hourly)"
    )
    p.add_argument("--signal", metavar="COLUMN", help="the sensor's own reading (default: best correlated input)")
    p.add_argument("--temperature", metavar="COLUMN", help="temperature input (default: a column named T or *temp*)")
    p.add_argument("--humidity", metavar="COLUMN", help="relative humidity input (default: RH or *humid*)")
    p.add_argument("--unit", default="", help="the target's unit, written into the manifest (e.g. ug/m3)")
    p.add_argument("--seed", type=int, default=0, help="seed of every fit (default 0)")
    p.add_argument("--timezone", default="UTC", help="time zone of times written without an offset (default UTC)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the model, metrics.json and report.md go")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate and export the calibration from the CSV into --out."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from gateway.cli import UserError
    from training.air.calibration import train_calibration
    from training.air.calibration_csv import CalibrationCsvError, read_calibration_csv
    from training.air.calibration_data import resample

    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"unknown time zone {args.timezone!r}: use an IANA name like 'Europe/Rome' or 'UTC'") from None
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    try:
        table = read_calibration_csv(args.csv, missing=args.missing, tz=args.timezone)
        dropped = None
        if args.resample:
            table, dropped = resample(table, args.resample)
        result = train_calibration(
            table,
            args.target,
            args.out,
            features=features,
            train_days=args.train_days,
            seed=args.seed,
            signal=args.signal,
            temperature=args.temperature,
            humidity=args.humidity,
            unit=args.unit,
            resampled=dropped,
        )
    except CalibrationCsvError as exc:
        raise UserError(str(exc)) from None
    m, b = result.metrics, result.metrics["linear_baseline"]
    print(f"{m['target']} from {', '.join(m['features'])}")
    print(f"  trained on {m['n_train']} rows (first {m['train_days']:g} days), tested on {m['n_test']}")
    print("  candidate          validation r2   test r2   test mae")
    for r in m["candidates"]:
        flag = "  <- exported" if r["name"] == m["chosen"] else ""
        print(
            f"  {r['name']:<18} {r['validation']['r2']:>13.3f} {r['test']['r2']:>9.3f} {r['test']['mae']:>10.3f}{flag}"
        )
    print(f"  calibration      r2 {m['r2']:.3f}  mae {m['mae']:.3f}  rmse {m['rmse']:.3f}  ({m['chosen']})")
    print(f"  linear baseline  r2 {b['r2']:.3f}  mae {b['mae']:.3f}  rmse {b['rmse']:.3f}")
    print(
        f"  written to {result.out_dir}: model files, metrics.json, report.md, "
        + ", ".join(p.name for p in result.files if p.suffix == ".png")
    )
    return 0
