"""The frugality benchmark: every figure of docs/benchmarks.md, each next to what it is compared with, in one run.

Comparisons are measured side by side in the same run: repetitions of the two sides
are interleaved (A, B, A, B, ...) and the medians compared, so a change in the
machine's load hits both. Writes ``benchmarks.json`` (machine, versions, date; per
figure: name, median, min, max, unit, target, met, comparison, ratio) and
``benchmarks.md`` into ``--out`` (default ``docs/``). Needs Mosquitto, InfluxDB and
``mosquitto_pub`` (``make setup`` installs them); starts its own on free ports.

    .venv/bin/python -m scripts.bench [--quick] [--out docs]     (from the repository root)
"""

from __future__ import annotations

import os

# One BLAS thread: a gateway shares its core with other services (see bench_inference.py).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402  (after the BLAS settings, which numpy reads when first imported)
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from scripts import bench_bridge_scale  # noqa: E402
from scripts.bench_compute import gemm_roofline, inference_figures, model_figures  # noqa: E402
from scripts.bench_record import machine  # noqa: E402
from scripts.bench_report import history_entry, markdown  # noqa: E402
from scripts.bench_services import bridge_figures, fleet_figures, footprint_figures, pipeline_figures  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

SECTIONS = ("inference", "pipeline", "bridge", "footprint", "models", "fleet")


def main(argv=None) -> int:
    """Run the chosen sections against private services and write benchmarks.json and benchmarks.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small workloads: a smoke run of the whole suite")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    ap.add_argument(
        "--label",
        default=None,
        help="what changed since the last recorded run: adds this run to --out/benchmarks-history.json",
    )
    ap.add_argument(
        "--label-previous",
        default=None,
        help="record the run already in --out/benchmarks.json in the history first, under this label",
    )
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: rewrite --out/benchmarks.md from --out/benchmarks.json (after a change "
        "to the report's wording)",
    )
    args = ap.parse_args(argv)
    if args.render_only:
        (args.out / "benchmarks.md").write_text(markdown(json.loads((args.out / "benchmarks.json").read_text())))
        return 0
    from gateway.local_services.services import LocalServices

    previous = args.out / "benchmarks.json"
    previous = json.loads(previous.read_text()) if args.label_previous and previous.exists() else None

    started = time.perf_counter()
    sections = args.only or SECTIONS
    report = {"what": "frugalsense benchmarks (issue 6)", "quick": args.quick, "machine": machine(), "figures": []}
    report["commit"] = history_entry({"machine": {"date": None}, "figures": []}, "")["commit"]
    figs = report["figures"]
    if "inference" in sections:
        roof_fig, roof = gemm_roofline(args.quick)
        figs.append(roof_fig)
        figs += inference_figures(args.quick, roof)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        with LocalServices(Path(tmp) / "services", mosquitto_extra_config=bench_bridge_scale.BROKER_CONFIG) as services:
            if "pipeline" in sections:
                figs += pipeline_figures(services, args.quick)
            if "bridge" in sections:
                figs += bridge_figures(services, args.quick)
            if "footprint" in sections:
                figs += footprint_figures(services, args.quick)
        if "models" in sections:
            figs += model_figures(args.quick)
        if "fleet" in sections:
            figs += fleet_figures(Path(tmp), args.quick)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    history_path = args.out / "benchmarks-history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    if previous is not None:
        history.append(history_entry(previous, args.label_previous))
    if args.label:
        history.append(history_entry(report, args.label))
        history_path.write_text(json.dumps(history, indent=2) + "\n")
    report["history"] = history
    (args.out / "benchmarks.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "benchmarks.md").write_text(markdown(report))
    print(f"wrote {args.out / 'benchmarks.json'} and benchmarks.md in {report['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
