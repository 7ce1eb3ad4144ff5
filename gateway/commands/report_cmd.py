"""`frugalsense report`: a site's readings, alerts, night-flow trend and EAQI bands from InfluxDB, as PNG and HTML."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from gateway.commands.influx_options import add_influx_options


def register(subparsers) -> None:
    """Add `frugalsense report` and its options."""
    p = subparsers.add_parser(
        "report",
        help="render a site report (PNG + HTML) from InfluxDB: readings with alerts, night flow, EAQI",
        description="Read one site's readings, alerts and night-flow decisions between T1 and T2 from InfluxDB "
        "(1.x with InfluxQL; --influx-api v2: 2.x, 3.x, Cloud or 1.8+ with Flux) "
        "and write <site>-report.png and <site>-report.html to DIR. Times are ISO 8601 "
        "(2026-03-01 or 2026-03-01T06:00), UTC unless they carry an offset. "
        "Exit code 0 when the report is written, 2 if there is nothing to report or InfluxDB cannot "
        "be read.",
    )
    p.add_argument("--site", required=True, help="site id as in the gateway configs (e.g. dma-hillside)")
    p.add_argument("--from", dest="start", required=True, metavar="T1", help="start of the period")
    p.add_argument("--to", dest="end", required=True, metavar="T2", help="end of the period")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the PNG and HTML")
    add_influx_options(p)
    p.set_defaults(func=run)


def parse_time(text: str, option: str) -> int:
    """UTC milliseconds of an ISO 8601 date or date-time (UTC when it has no offset)."""
    from gateway.cli import UserError

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"{option} {text!r} is not a date: write it as 2026-03-01 or 2026-03-01T06:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def run(args: argparse.Namespace) -> int:
    """Read the site from InfluxDB and write its report; exit code 2 if there is nothing to report."""
    from gateway.bridge.writer_base import WriteError
    from gateway.cli import UserError
    from gateway.commands.influx_options import login_problem, make_writer
    from gateway.tools.site_report import ReportError, fetch_site, write_report

    start_ms, end_ms = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    reader = make_writer(args)
    try:
        if args.influx_api == "v2":
            from gateway.tools.site_report_flux import fetch_site_flux

            data = fetch_site_flux(reader.flux, args.bucket or args.database, args.site, start_ms, end_ms)
        else:
            data = fetch_site(reader.query, args.site, start_ms, end_ms)
        png, page = write_report(data, args.out)
    except ReportError as exc:
        raise UserError(f"report: {exc}") from None
    except WriteError as exc:
        hint = "check --influx-url and " + ("--bucket and --org" if args.influx_api == "v2" else "--database")
        if args.influx_api == "v2" and exc.status in (400, 404):
            hint = "this server does not answer Flux on /api/v2/query: InfluxDB before 1.8 reads with --influx-api v1"
        raise UserError(f"report: {login_problem(args, exc) or exc} ({hint})") from None
    except OSError as exc:
        raise UserError(f"report: cannot write to {args.out}: {exc.strerror or exc}") from None
    finally:
        reader.close()
    raised = sum(a["state"] == "raised" for a in data.alerts)
    print(f"{png}\n{page}\n  {len(data.series)} series, {raised} alert(s) raised, {len(data.nights)} night decisions")
    return 0
