"""`frugalsense detect leak`: run the device's learned leak detector over a historical SCADA CSV.

Reads the CSV (first column the timestamp, then one column per sensor named as in
the network; see edge/sources/scada_csv.py), reports every data problem it found,
replays the readings through the same detector a gateway runs, and writes one row per
alert to --out: alert id, start, raised, end (empty if still open when the data end),
peak score, estimated leak flow (L/s), most affected pressure sensors, severity.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from pathlib import Path

from gateway.cli import UserError
from gateway.commands import command_group

DETECT_GROUP = "detect"
SITE, GATEWAY = "scada", "history"
ALERT_COLUMNS = (
    "alert_id",
    "start_utc",
    "raised_utc",
    "end_utc",
    "peak_score",
    "estimated_leak_lps",
    "sensors",
    "severity",
)


def register(subparsers) -> None:
    """Add `frugalsense detect leak` and its options."""
    group = command_group(subparsers, DETECT_GROUP, help="run a detector over historical data", metavar="KIND")
    p = group.add_parser("leak", help="learned leak detector over a SCADA CSV", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", required=True, type=Path, metavar="DIR", help="learned leak model folder")
    p.add_argument("--scada", required=True, type=Path, metavar="FILE.csv", help="the SCADA export")
    p.add_argument("--out", required=True, type=Path, metavar="alerts.csv", help="alerts file to write")
    p.add_argument("--flow-unit", default="L/s", choices=("L/s", "m3/h"), help="unit of the flow columns")
    p.add_argument("--pressure-unit", default="m", choices=("m", "bar", "kPa"), help="unit of the pressure columns")
    p.add_argument("--timezone", default="UTC", help="zone of timestamps written without an offset (default UTC)")
    p.add_argument(
        "--stuck-hours",
        type=float,
        default=6.0,
        help="a sensor repeating one non-zero value this long is stuck (default 6)",
    )
    p.add_argument(
        "--precision", default="float", choices=("float", "int8"), help="the weights that decide (default float)"
    )
    p.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "litert", "numpy"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the learned leak detector over the SCADA CSV and write the alerts CSV."""
    from edge.contracts import QUANTITY_UNITS, Alert, AlertState, Quality, Reading
    from edge.detectors.leak_model import LEAK, LearnedLeakDetector
    from edge.runtime.manifest import ManifestError
    from edge.sources.scada_csv import ScadaError, read_scada_csv

    if not args.out.parent.is_dir():
        raise UserError(f"{args.out}: folder {args.out.parent} does not exist")
    ids: dict[str, tuple[str, str]] = {}
    try:
        settings = _settings(args.model)  # the model's sensor list names the CSV columns to read
        for i, (element, quantity) in enumerate(settings.sensors):
            ids[_sensor_id(i, element, quantity)] = (element, quantity)
        detector = LearnedLeakDetector.from_model_dir(
            args.model, SITE, GATEWAY, ids, backend=args.backend, precision=args.precision
        )
    except (ManifestError, ValueError, OSError) as exc:
        raise UserError(f"model {args.model}: {exc}") from None
    try:
        series = read_scada_csv(
            args.scada,
            settings.sensors,
            flow_unit=args.flow_unit,
            pressure_unit=args.pressure_unit,
            tz=args.timezone,
            stuck_hours=args.stuck_hours,
        )
    except ScadaError as exc:
        raise UserError(f"{args.scada}: {exc}") from None
    print(
        f"{args.scada}: {len(series.time_ms)} rows, step {series.step_ms / 60000:g} min, sensors "
        + ", ".join(f"{q} {e} <- '{c}'" for (e, q), c in zip(series.sensors, series.columns, strict=True))
    )
    for issue in series.issues:
        print(f"  data: {issue}")
    if series.step_ms and series.step_ms > settings.layout.step_s * 1000:
        print(
            f"  data: samples every {series.step_ms / 60000:g} min but the model decides every "
            f"{settings.layout.step_s / 60:g} min: steps without a sample are insufficient_data"
        )
    outputs = []
    names = list(ids)
    for t, row in zip(series.time_ms.tolist(), series.values.tolist(), strict=True):
        for sensor, value in zip(names, row, strict=True):  # one id per model sensor, one value per sensor
            element, quantity = ids[sensor]
            ok = math.isfinite(value)
            reading = Reading(
                t,
                SITE,
                GATEWAY,
                sensor,
                quantity,
                value if ok else None,
                QUANTITY_UNITS[quantity],
                Quality.OK if ok else Quality.UNKNOWN,
            )
            outputs += detector.update(reading)
    outputs += detector.flush()
    alerts = _alert_rows(outputs, LEAK, Alert, AlertState)
    decided = [o for o in outputs if not isinstance(o, Alert)]
    insufficient = sum(o.label == "insufficient_data" for o in decided)
    with args.out.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=ALERT_COLUMNS)
        writer.writeheader()
        writer.writerows(alerts)
    print(f"{len(decided)} decisions ({insufficient} insufficient_data), {len(alerts)} alert(s) written to {args.out}")
    for a in alerts:
        print(
            f"  {a['alert_id']}: from {a['start_utc']} to {a['end_utc'] or 'end of data (open)'}, about "
            f"{a['estimated_leak_lps']} L/s, peak score {a['peak_score']}, sensors {a['sensors'] or '-'}"
        )
    return 0


def _settings(model_dir: Path):
    from edge.detectors.leak_settings import LeakDetectorSettings
    from edge.runtime.manifest import ModelManifest

    manifest = ModelManifest.read(model_dir)
    if "detector" not in manifest.raw:
        raise ValueError(f"model {manifest.name} is not a learned leak model (no 'detector' section)")
    return LeakDetectorSettings.from_dict(manifest.raw["detector"])


def _sensor_id(i: int, element: str, quantity: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{quantity}-{element}")[:64]
    return clean if re.match(r"^[A-Za-z0-9]", clean) else f"s{i}"


def _alert_rows(outputs, leak_label, alert_type, states) -> list[dict]:
    from edge.contracts import ms_to_datetime

    def iso(ms):
        return ms_to_datetime(ms).strftime("%Y-%m-%dT%H:%M:%SZ")

    rows, open_row = [], None
    for o in outputs:
        if isinstance(o, alert_type):
            if o.state == states.RAISED:
                e = o.explanation
                open_row = {
                    "alert_id": o.alert_id,
                    "start_utc": iso(o.since_ms),
                    "raised_utc": iso(o.time_ms),
                    "end_utc": "",
                    "peak_score": round(o.score, 3),
                    "estimated_leak_lps": e.get("excess_lps", ""),
                    "sensors": " ".join(e.get("sensors", [])),
                    "severity": str(o.severity),
                }
                rows.append(open_row)
            elif open_row is not None:
                open_row["end_utc"] = iso(o.time_ms)
                open_row = None
        elif open_row is not None and o.label == leak_label:
            open_row["peak_score"] = max(open_row["peak_score"], round(o.score, 3))
    return rows
