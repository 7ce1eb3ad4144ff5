"""Doctor checks of the files a gateway runs from: its config, its bundle, its model directories."""

from __future__ import annotations

from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.config.detectors import build_detectors
from gateway.tools import bundle as B
from gateway.tools.doctor.check import FAIL, OK, Check


def check_config(path: Path) -> tuple[Check, GatewayConfig | None]:
    """Whether the config validates and its detectors build as the service builds them; the config if it validates.

    A detector that cannot be built fails this check, but the config is still returned:
    the model checks that follow say which file is wrong.
    """
    fix = f"correct the config, then `frugalsense config validate {path}`"
    try:
        config = load_config(path)
    except ConfigError as exc:
        return Check(FAIL, "config", "; ".join(str(p) for p in exc.problems), fix), None
    try:
        build_detectors(config)
    except ConfigError as exc:
        return Check(FAIL, "config", "; ".join(str(p) for p in exc.problems), fix), config
    models = f", {len(config.models)} model{'s' * (len(config.models) != 1)} (detectors built)"
    return Check(OK, "config", f"{path}: {len(config.sensors)} sensors{models}"), config


def check_bundle(root: Path) -> Check:
    """Whether every file of the bundle is there with the sha256 it was flashed with."""
    try:
        problems = B.verify_bundle(root)
        count = len(B.read_checksums(root))
    except B.BundleError as exc:
        return Check(FAIL, "bundle", str(exc), "flash the bundle again with `frugalsense flash CONFIG --to DIR`")
    if problems:
        return Check(
            FAIL,
            "bundle",
            "; ".join(str(p) for p in problems),
            "the card or the copy is damaged: flash the bundle again (and try another SD card if it recurs)",
        )
    return Check(OK, "bundle", f"{count} files match {B.CHECKSUMS_NAME}")


def model_dirs(config: GatewayConfig) -> list[Path]:
    """Model folders the config names, and those under ``models/`` next to it (a bundle's or /etc/frugalsense's)."""
    found: list[Path] = []
    for named in B.config_paths(config):
        path = config.resolve_path(named.path)
        if path.is_dir() and (path / B.MANIFEST_FILE).is_file():
            found.append(path)
    if config.path is not None:
        shelf = config.path.parent / B.MODELS_DIR
        if shelf.is_dir():
            found += sorted(p for p in shelf.iterdir() if (p / B.MANIFEST_FILE).is_file())
    unique: list[Path] = []
    for path in found:
        if path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique


def check_models(config: GatewayConfig) -> list[Check]:
    """One check per model directory the config names: manifest readable, files matching their sha256."""
    dirs = model_dirs(config)
    if not dirs:
        kinds = ", ".join(m.type for m in config.models) or "none"
        return [Check(OK, "models", f"no model files to verify (models: {kinds}; rule-based detectors have none)")]
    checks = []
    for directory in dirs:
        try:
            manifest = B.checked_model(directory)
        except B.BundleError as exc:
            checks.append(
                Check(
                    FAIL,
                    f"model {directory.name}",
                    str(exc),
                    f"copy {directory.name} again from the bundle, or flash the bundle again",
                )
            )
            continue
        checks.append(
            Check(
                OK,
                f"model {manifest.name}",
                f"version {manifest.version}: {len(manifest.files)} files match their sha256",
            )
        )
    return checks
