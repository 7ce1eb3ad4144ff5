"""`frugalsense doctor`: check a gateway on site (or a bundle before it goes on one), one line per check."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/frugalsense/gateway.yaml")


def register(subparsers) -> None:
    """Add `frugalsense doctor` and its options."""
    p = subparsers.add_parser(
        "doctor",
        help="check serial ports, sensors, broker, clock, disk and models; one line each with a fix",
        description="On the gateway (--config, default /etc/frugalsense/gateway.yaml): the config, model files "
        "(sha256), serial ports, one valid answer from each sensor, the broker with the configured "
        "TLS and credentials, clock synchronisation and free disk. With --bundle DIR: the bundle's "
        "files against BUNDLE.sha256, its config and models (the rest is checked on the gateway). "
        "Each line is OK, FAIL (with a fix) or SKIP (cannot be checked here). "
        "Exit code 1 if any check failed, else 0.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--bundle", type=Path, metavar="DIR", help="check a bundle written by `frugalsense flash`")
    where.add_argument(
        "--config", type=Path, metavar="FILE", default=None, help=f"gateway config (default {DEFAULT_CONFIG})"
    )
    p.add_argument(
        "--sensor-timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds to wait for each sensor's answer (default: the sensor's timeout_s, 5 s for sensors that stream)",
    )
    p.add_argument("--broker-timeout", type=float, default=5.0, metavar="S", help="seconds to wait for the broker")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the checks, print one line each; exit code 1 if any failed."""
    from gateway.cli import UserError
    from gateway.tools.doctor import FAIL, run_checks

    for name in ("sensor_timeout", "broker_timeout"):
        value = getattr(args, name)
        if value is not None and not 0 < value <= 120:
            raise UserError(f"--{name.replace('_', '-')} must be between 0 and 120 seconds, got {value}")
    if args.bundle is not None and not args.bundle.is_dir():
        raise UserError(f"--bundle {args.bundle}: no such folder (is the card mounted?)")
    checks = run_checks(
        config_path=args.config or DEFAULT_CONFIG,
        bundle=args.bundle,
        sensor_timeout_s=args.sensor_timeout,
        broker_timeout_s=args.broker_timeout,
    )
    for check in checks:
        print(check.line(), flush=True)
    failed = [c for c in checks if c.status == FAIL]
    print(f"{len(failed)} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0
