"""`frugalsense simulate water`: write a simulated two-week zone dataset (EPANET Net3, one leak)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.contracts import ms_to_datetime
from gateway.cli import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `frugalsense simulate water` and its options."""
    parser = subparsers.add_parser("simulate", help="simulate sensor data for trying detectors")
    kinds = parser.add_subparsers(dest="simulate_kind", metavar="KIND", required=True)
    water = kinds.add_parser("water", help="two weeks of a Net3 water zone with one leak in the second week")
    water.add_argument("--out", type=Path, required=True, help="dataset file to write (.npz)")
    water.add_argument("--seed", type=int, default=7, help="seed for demands and sensor noise (default 7)")
    water.add_argument("--no-leak", action="store_true", help="simulate the same two weeks without the leak")
    water.add_argument("--csv", type=Path, help="also write a SCADA-like CSV for reading by eye")
    water.set_defaults(func=run_water)


def run_water(args: argparse.Namespace) -> int:
    """Simulate the zone, write the dataset (and the CSV when asked) and describe it."""
    try:
        from training.water.zone import DEFAULT_LEAK, simulate_zone
    except ImportError as exc:
        raise UserError(f"simulation needs the training extras (pip install 'frugalsense[training]'): {exc}") from None
    for path in (args.out, args.csv):
        if path is not None and not path.parent.is_dir():
            raise UserError(f"{path}: folder {path.parent} does not exist")
    dataset = simulate_zone(seed=args.seed, leak=None if args.no_leak else DEFAULT_LEAK)
    written = dataset.save(args.out)
    meta = dataset.meta
    start, end = ms_to_datetime(meta["start_ms"]), ms_to_datetime(meta["end_ms"])
    print(
        f"wrote {written}: {meta['network']}, {len(dataset.time_ms)} steps of {meta['step_s']} s, "
        f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, seed {meta['seed']}, "
        f"simulated in {meta['simulation_s']:.1f} s"
    )
    if meta["leak_node"] is None:
        print("leak: none")
    else:
        print(
            f"leak: junction {meta['leak_node']}, hole {meta['leak_diameter_m'] * 100:.1f} cm, "
            f"from {ms_to_datetime(meta['leak_start_ms']):%Y-%m-%d %H:%M} UTC, "
            f"mean flow {meta['leak_mean_flow_lps']:.1f} L/s"
        )
    print("sensors (column, quantity, unit; zone inflow = sum of the flows):")
    for column, quantity, unit in zip(dataset.columns, dataset.quantities, dataset.units, strict=True):
        print(f"  {column:>5}  {quantity:<8} {unit}")
    if args.csv is not None:
        print(f"wrote {dataset.to_csv(args.csv)}")
    return 0
