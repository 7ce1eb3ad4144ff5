"""`frugalsense config validate FILE...`: check gateway config files before they go on a gateway."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from gateway.cli import UserError
from gateway.config import ConfigError, ConfigUnreadable, GatewayConfig, load_config

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``config validate`` to the command line."""
    parser = subparsers.add_parser("config", help="check gateway config files")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    validate = actions.add_parser(
        "validate",
        help="check config files; print 'FILE: ok' or every problem as FILE:LINE: key: message",
        description="Exit code 0 if all files are valid, 1 if any is invalid, 2 if any cannot be read.",
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE", help="gateway config (YAML)")
    validate.set_defaults(func=run_validate)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def run_validate(args: argparse.Namespace) -> int:
    """Check each file, its detectors built as the service builds them; the worst exit code of all."""
    worst = EXIT_OK
    for path in args.files:
        try:
            config = load_config(path, build_detectors=True)  # the detectors the service would build
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            if getattr(args, "verbose", False):
                traceback.print_exc()
            worst = max(worst, EXIT_UNREADABLE if isinstance(exc, ConfigUnreadable) else EXIT_INVALID)
            continue
        print(f"{path}: ok ({_plural(len(config.sensors), 'sensor')}, {_plural(len(config.models), 'model')})")
    return worst


def load_gateway_config(path: str | Path, *, build_detectors: bool = False) -> GatewayConfig:
    """For other commands: the validated config (its detectors built too if asked), or a UserError listing
    every problem."""
    try:
        return load_config(path, build_detectors=build_detectors)
    except ConfigError as exc:
        raise UserError(
            f"invalid config {path}:\n{exc}",
            code=EXIT_UNREADABLE if isinstance(exc, ConfigUnreadable) else EXIT_INVALID,
        ) from None
