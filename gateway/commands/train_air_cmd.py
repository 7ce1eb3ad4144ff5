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

With --update MODEL_DIR it recalibrates a calibration already exported from a short,
recent co-location (7 days is typical): it keeps the model's shape and re-estimates
its zero and span (or refits its own terms) when that does better than the current
version on the last days of the co-location, and writes the next version into
MODEL_DIR (or --out) with update.md, update.json and update.png (before and after).
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
        "--update",
        metavar="MODEL_DIR",
        help="recalibrate this exported calibration from the CSV (a recent co-location) and write its next version",
    )
    p.add_argument(
        "--target",
        metavar="COLUMN",
        help="the reference column to reproduce, e.g. 'NO2(GT)' (with --update: the model's own by default)",
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
        default=None,
        metavar="N",
        help="days, from the first usable row, that train; the rest test (default 30; with --update every row)",
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
    p.add_argument("--version", metavar="V", help="with --update: the new version (default: the current one + 1)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where the model, metrics.json and report.md go (with --update: MODEL_DIR by default)",
    )
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
    if args.update is None:
        missing = [flag for flag, value in (("--target", args.target), ("--out", args.out)) if value is None]
        if missing:
            raise UserError(f"train air-calibration needs {' and '.join(missing)} (or --update MODEL_DIR)")
    elif args.version is not None and not args.version.strip():
        raise UserError("--version must not be empty")
    try:
        table = read_calibration_csv(args.csv, missing=args.missing, tz=args.timezone)
        dropped = None
        if args.resample:
            table, dropped = resample(table, args.resample)
        if args.update is not None:
            return _update(args, table, features)
        result = train_calibration(
            table,
            args.target,
            args.out,
            features=features,
            train_days=30.0 if args.train_days is None else args.train_days,
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


def _update(args: argparse.Namespace, table, features) -> int:
    """Recalibrate --update MODEL_DIR from the table and say what was written."""
    from gateway.cli import UserError
    from training.air.calibration_previous import PreviousModelError
    from training.air.calibration_update import update_calibration

    try:
        result = update_calibration(
            table,
            args.update,
            args.out,
            target=args.target,
            features=features,
            train_days=args.train_days,
            seed=args.seed,
            version=args.version,
        )
    except PreviousModelError as exc:
        raise UserError(str(exc)) from None
    m = result.metrics
    first, last = (p[:16] for p in m["co_location_period"])
    print(
        f"{m['model']} v{m['from_version']}: recalibrating {m['target']} "
        f"from {m['n_co_location']} rows ({first} .. {last})"
    )
    print("  update           validation r2  validation mae  co-location r2" + ("   test r2" if m["n_test"] else ""))
    for r in m["updates"]:
        flag = "  <- chosen" if r["name"] == m["chosen"] else ("  (reference)" if r["kind"] == "reference" else "")
        test = f" {r['test']['r2']:>9.3f}" if m["n_test"] else ""
        v = r["validation"]
        print(f"  {r['name']:<16} {v['r2']:>13.3f} {v['mae']:>15.3f} {r['co_location']['r2']:>15.3f}{test}{flag}")
    b, a = m["before"]["validation"], m["after"]["validation"]
    print(
        f"  validation days: before (v{m['from_version']}) r2 {b['r2']:.3f} mae {b['mae']:.3f}; "
        f"after ({m['chosen']}) r2 {a['r2']:.3f} mae {a['mae']:.3f}"
    )
    if result.written:
        print(f"  written v{m['version']} to {result.out_dir}: model files, update.md, update.json, update.png")
        print(
            f"  next: frugalsense model sign {result.out_dir} --key KEY; "
            f"frugalsense model push {result.out_dir} --to SITE/GATEWAY"
        )
    else:
        print(
            f"  kept v{m['from_version']}: no update beats it on the validation days; nothing written but "
            f"the report ({result.out_dir}/update.md)"
        )
    return 0
