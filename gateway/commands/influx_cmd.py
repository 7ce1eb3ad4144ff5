"""`frugalsense influx setup`: the database, its retention policies and the hourly downsampling, on InfluxDB 1.x."""

from __future__ import annotations

import argparse

from gateway.commands.influx_options import add_influx_options


def register(subparsers) -> None:
    """Add `frugalsense influx` and its `setup` sub-command."""
    p = subparsers.add_parser(
        "influx",
        help="prepare InfluxDB 1.x: database, retention policies, downsampling",
        description="Commands for the InfluxDB the bridge writes to.",
    )
    sub = p.add_subparsers(dest="influx_command", metavar="SUBCOMMAND", required=True)
    setup = sub.add_parser(
        "setup",
        help="create the database, a retention policy for raw data and a longer one for hourly summaries",
        description="Create the database, the retention policy 'raw' (the default: the bridge writes there) "
        "kept --retention long, the policy 'rollup_<interval>' kept as long as --downsample says, and a "
        "continuous query writing the mean, min, max and count of each sensor's readings per interval "
        "into reading_<interval>. Idempotent: a second run changes nothing and says so. InfluxDB 1.x "
        "only (InfluxQL); for 2.x/3.x see docs/operations.md. The user needs admin rights.",
    )
    add_influx_options(setup, v2=False, url_flags=("--url", "--influx-url"))
    setup.add_argument("--retention", default="400d", metavar="DURATION", help="how long raw points live (400d)")
    setup.add_argument(
        "--downsample",
        default="1h:5y",
        metavar="INTERVAL:KEEP",
        help="summary interval and how long summaries live (1h:5y; a year is 365 days)",
    )
    setup.add_argument(
        "--backfill",
        action="store_true",
        help="also run the summary once over all raw data now (points the continuous query never saw)",
    )
    setup.add_argument("--dry-run", action="store_true", help="print the statements, change nothing")
    setup.set_defaults(func=run_setup)


def run_setup(args: argparse.Namespace) -> int:
    """Bring the server to what the options ask; print one line per policy and query, then what changed."""
    from gateway.bridge.writer_base import WriteError
    from gateway.cli import UserError
    from gateway.commands.influx_options import login_problem, make_writer
    from gateway.tools.influx_retention import RetentionSetup, other_rollups, plan_setup

    try:
        wanted = RetentionSetup.from_options(args.database, args.retention, args.downsample)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    writer = make_writer(args)
    try:
        steps = plan_setup(writer.query, wanted)
        changes = [step for step in steps if step.statement]
        for step in steps:
            print(f"  {'CHANGE' if step.statement else 'ok    '} {step.what}")
            if step.statement and args.dry_run:
                print(f"         {step.statement}")
        if not args.dry_run:
            for step in changes:
                writer.execute(step.statement)
        if args.backfill and not args.dry_run:
            writer.execute(wanted.backfill())
            print(f"  backfilled {wanted.rollup_policy}.{wanted.rollup_measurement} from the raw policy")
        for name in other_rollups(writer.query, wanted):
            print(f"  note: continuous query {name} from an earlier setup is left as it is (DROP it by hand if unused)")
    except WriteError as exc:
        raise UserError(login_problem(args, exc) or f"influx setup: {exc}") from None
    finally:
        writer.close()
    if not changes:
        print(f"nothing to change: {wanted.database} already has this retention and downsampling")
    elif args.dry_run:
        print(f"dry run: {len(changes)} change(s) not made")
    else:
        print(f"{len(changes)} change(s) made on {args.influx_url}")
    return 0
