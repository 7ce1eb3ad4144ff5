"""`frugalsense flash FILE --to DIR`: write a gateway's bundle and verify it.

The bundle holds the config, the models, the systemd unit and the pinned requirements.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add `frugalsense flash` and its options."""
    p = subparsers.add_parser(
        "flash",
        help="write a gateway bundle to a folder (e.g. a mounted SD card) and verify it",
        description="Validate FILE and build its detectors, then write to DIR everything the gateway needs: the "
        "config, the model files with their manifests, the systemd unit frugalsense.service, requirements.txt "
        "pinned to the versions installed here, INSTALL.txt, and BUNDLE.sha256. Files the config names outside "
        "its folder are copied in (models/<name>, data/<file>) and the bundle's config points at the copies. "
        "Every file is then read back and checked against BUNDLE.sha256, and the bundle's config validated "
        "from the bundle. Exit code 0 when the bundle is verified, 1 if the read-back differs or the config "
        "is invalid, 2 when the config cannot be read or a model, a file or the target is not usable.",
    )
    p.add_argument("config", type=Path, metavar="FILE", help="gateway config (YAML)")
    p.add_argument(
        "--to",
        type=Path,
        required=True,
        metavar="DIR",
        dest="target",
        help="target folder: empty, or holding an earlier bundle (which is replaced)",
    )
    p.add_argument(
        "--model",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also bundle this model folder (with manifest.json) under models/; repeatable",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the bundle, read it back against BUNDLE.sha256; exit code 0 when verified."""
    from gateway.cli import UserError
    from gateway.commands.config_cmd import load_gateway_config
    from gateway.config import ConfigError, load_config
    from gateway.config.detectors import build_detectors
    from gateway.tools import bundle as B

    config = load_gateway_config(args.config)
    try:
        build_detectors(config)  # as the service will at start; nothing is written for a config that cannot start
    except ConfigError as exc:
        raise UserError(f"flash: a detector of {args.config} cannot be built:\n{exc}") from None
    try:
        written = B.write_bundle(config, args.target, args.model)
        problems = B.verify_bundle(args.target)
    except B.BundleError as exc:
        raise UserError(f"flash: {exc}") from None
    except OSError as exc:
        raise UserError(
            f"flash: cannot write to {args.target}: {exc.strerror or exc} (is the card mounted and writable?)"
        ) from None
    if problems:
        for problem in problems:
            print(f"FAIL {problem}")
        raise UserError(
            f"flash: {len(problems)} file(s) read back differently from what was written to "
            f"{args.target}: the card may be failing; try another one",
            code=1,
        )
    flashed = args.target / B.CONFIG_NAME
    try:  # what the gateway will read: the bundle's own config, with its models from the bundle
        load_config(flashed, build_detectors=True)
    except ConfigError as exc:
        raise UserError(f"flash: the bundle's config does not validate from {args.target}:\n{exc}") from None
    models = ", ".join(written.models) or "none"
    print(f"{args.target}: {len(written.files)} files written and verified (sha256 in {B.CHECKSUMS_NAME})")
    print(f"  gateway {config.site}/{config.gateway}, models: {models}")
    for key, old, new in written.moved:
        print(f"  {key}: {old} -> {new} in {B.CONFIG_NAME}")
    print(f"  {flashed}: validates, detectors built from the bundle")
    print(f"  next: copy the folder to {B.INSTALL_DIR} on the gateway and follow {B.INSTALL_NAME}")
    return 0
