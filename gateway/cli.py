"""The `frugalsense` command: one entry point, one module per subcommand.

Each module in ``gateway.commands`` exposes ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable taking the parsed arguments and returning an
exit code. Errors meant for people are raised as ``UserError`` and printed without
a traceback unless ``--verbose`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order is the order shown in --help.
COMMAND_MODULES = (
    "gateway.commands.config_cmd",
    "gateway.commands.demo_cmd",
    "gateway.commands.run_cmd",
    "gateway.commands.bridge_cmd",
    "gateway.commands.notify_cmd",
    "gateway.commands.influx_cmd",
    "gateway.commands.services_cmd",
    "gateway.commands.simulate_cmd",
    "gateway.commands.flash_cmd",
    "gateway.commands.doctor_cmd",
    "gateway.commands.status_cmd",
    "gateway.commands.report_cmd",
    "gateway.commands.alert_cmd",
    "gateway.commands.model_cmd",
    "gateway.commands.train_air_cmd",
    "gateway.commands.train_cmd",
    "gateway.commands.detect_cmd",
)


class UserError(Exception):
    """An error a person can act on; printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    """The `frugalsense` command line: one sub-command per module of COMMAND_MODULES."""
    parser = argparse.ArgumentParser(
        prog="frugalsense",
        description="Frugal edge sensing: water leaks and air quality on small gateways.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="show debug logs and tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `frugalsense ARGS`; the process exit code (0 when all went well)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.verbose:
            raise
        print(f"frugalsense: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("frugalsense: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Re-import so `python -m gateway.cli` shares UserError with the command modules.
    from gateway.cli import main as _main

    sys.exit(_main())
