"""`frugalsense train leak`: simulate leak scenarios on a utility's own network, train, export and evaluate a detector.

Writes into --out the model files (float and int8 ONNX, full-int8 TFLite, numpy,
manifest.json with the detector settings), card.json (with its metrics), card.md and
report/ (tables and plots). With --simulate-only it writes the scenario sets to
--out/scenarios/ and stops.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from gateway.cli import UserError
from gateway.commands.train_air_cmd import train_subparsers


def register(subparsers) -> None:
    """Add `frugalsense train leak` and its options."""
    p = train_subparsers(subparsers).add_parser(
        "leak",
        help="train a leak detector on simulated scenarios of your EPANET network",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--network",
        required=True,
        metavar="NET.inp",
        help="EPANET network file (or a name shipped with wntr: Net1, Net3, ...)",
    )
    p.add_argument(
        "--flow",
        metavar="LINK[,LINK...]",
        help="flow meters (links), positive into the zone; '-22' flips link 22 (default: every link "
        "from a reservoir or tank)",
    )
    p.add_argument(
        "--pressure",
        metavar="NODE[,NODE...]",
        help="pressure sensors (junctions) (default: 5 placed far apart, see docs/leak-detection.md)",
    )
    p.add_argument("--presence", action="store_true", help="the zone's mobile-network presence count is an input")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="model folder to write")
    p.add_argument("--name", help="model name (default leak-mlp-<network>)")
    p.add_argument(
        "--scenarios",
        type=int,
        default=400,
        metavar="N",
        help="training scenarios (default 400); validation N/4, held-out N/2 with leaks and N/4 without",
    )
    p.add_argument("--days", type=int, default=30, help="days per scenario (default 30)")
    p.add_argument("--step-min", type=int, default=15, choices=(5, 10, 15, 20, 30), help="sample step (default 15)")
    p.add_argument("--seed", type=int, default=1, help="seed of every random draw (default 1)")
    p.add_argument("--workers", type=int, default=2, help="simulation processes (default 2)")
    p.add_argument("--simulate-only", action="store_true", help="write the scenario sets to DIR/scenarios and stop")
    p.set_defaults(func=run)


def _spec(args: argparse.Namespace):
    from training.leak.train import LeakTrainingSpec
    from training.water.sensor_placement import parse_flow_spec, parse_node_spec

    stem = Path(args.network).stem if str(args.network).lower().endswith(".inp") else str(args.network)
    name = args.name or "leak-mlp-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-").lower()
    if args.scenarios < 8:
        raise UserError("--scenarios must be at least 8 (a few with a leak, a few without)")
    if args.days < 14:
        raise UserError("--days must be at least 14: the detector learns a week of normal before a leak")
    try:
        flows = tuple(parse_flow_spec(args.flow)) if args.flow else None
        pressures = tuple(parse_node_spec(args.pressure)) if args.pressure else None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    n = args.scenarios
    return LeakTrainingSpec(
        name=name,
        network=str(args.network),
        flows=flows,
        pressures=pressures,
        presence=args.presence,
        population_change_share=0.5 if args.presence else 0.0,
        n_train=n,
        n_val=max(2, n // 4),
        n_test=max(2, n // 2),
        n_test_free=max(2, n // 4),
        n_population=max(2, n // 4) if args.presence else 0,
        days=args.days,
        step_s=args.step_min * 60,
        seed=args.seed,
        description=f"leak detector for {stem}, trained by 'frugalsense train leak'",
    )


def run(args: argparse.Namespace) -> int:
    """Simulate the scenarios, then (unless asked to simulate only) train, export and evaluate the detector."""
    try:
        from training.leak.train import simulate_sets, train_leak
        from training.water.epanet_leaks import SimulationError
    except ImportError as exc:
        raise UserError(f"training needs the training extras (pip install 'frugalsense[training]'): {exc}") from None
    spec = _spec(args)
    try:
        if args.simulate_only:
            data = simulate_sets(spec, workers=args.workers, cache=args.out / "scenarios")
            for key, s in data.sets.items():
                print(
                    f"{args.out / 'scenarios' / f'{spec.name}-{key}.npz'}: {s.n_scenarios} scenarios of "
                    f"{s.meta['days']} days, sensors {', '.join(f'{c}/{q}' for c, q in s.sensors)}"
                )
            return 0
        card = train_leak(spec, args.out, workers=args.workers)
    except (SimulationError, ValueError) as exc:
        raise UserError(str(exc)) from None
    print(f"model {card['name']} v{card['version']} for {card['data']['network']} written to {args.out}")
    print(f"  sensors: {', '.join(f'{e} ({q})' for e, q in card['data']['sensors'])}")
    for t in card["targets"]:
        print(f"  {t['name']:<40} {t['value']!s:>10}  {t['target']:<10} {'met' if t['met'] else 'NOT MET'}")
    print(f"  card: {args.out / 'card.md'}; report: {args.out / 'report' / 'report.md'}")
    return 0
