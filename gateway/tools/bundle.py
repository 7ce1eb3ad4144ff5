"""The gateway bundle: everything one gateway needs, written to a folder (an SD card) and checked by sha256.

Layout of a bundle (it is copied as is to ``/etc/frugalsense`` on the gateway)::

    gateway.yaml            the validated config, byte for byte as written, except the paths moved below
    models/<name>/...       each model the config uses, with its manifest.json
    <other files>           files the config names by a relative path inside its folder (TLS CA), same path
    data/<file>             files it names outside its folder (a demo's dataset); gateway.yaml points at the copy

A model folder outside the config's folder (``../models/x``) goes to ``models/x`` and a
relative ``storage.data_dir`` that leaves it to ``/var/lib/frugalsense`` (the unit's
StateDirectory): gateway.yaml is rewritten there, comments and layout kept.
Absolute paths are the gateway's own (provisioned keys, operator folders): not copied.
    frugalsense.service     systemd unit: frugalsense run /etc/frugalsense/gateway.yaml
    requirements.txt        the gateway's Python packages, pinned to the versions this build was tested with
    INSTALL.txt             the commands a technician runs on the gateway
    BUNDLE.sha256           sha256 of every file above (``sha256sum -c BUNDLE.sha256`` works too)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from edge.runtime.manifest import MANIFEST_FILE, ManifestError, ModelManifest
from edge.runtime.registry import ModelIntegrityError, verify
from gateway.config import GatewayConfig
from gateway.config.yaml_edit import replace_values
from gateway.tools.pins import PinError, own_version, pinned_requirements

INSTALL_DIR = Path("/etc/frugalsense")
VENV_DIR = Path("/opt/frugalsense/venv")
CONFIG_NAME = "gateway.yaml"
UNIT_NAME = "frugalsense.service"
REQUIREMENTS_NAME = "requirements.txt"
INSTALL_NAME = "INSTALL.txt"
CHECKSUMS_NAME = "BUNDLE.sha256"
MODELS_DIR = "models"
DATA_DIR = "data"  # files the config names outside its own folder, copied in
STATE_DIR = Path("/var/lib/frugalsense")  # the unit's StateDirectory: where the service may write
# Config keys that name a place the gateway writes to, not a file to bring along.
_RUNTIME_PATHS = {("storage", "data_dir")}


class BundleError(Exception):
    """The bundle cannot be built or is not what was written; the message says which file and what to do."""


@dataclass
class BundleProblem:
    """One file of a bundle that is missing, changed or unexpected, and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Bundle:
    """A written bundle: its folder, every file's sha256, and the model directories it carries."""

    root: Path
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    models: list[str] = field(default_factory=list)  # relative model directories
    moved: list[tuple[str, str, str]] = field(default_factory=list)  # (key, path as written, path in the bundle)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 64 KiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- what goes in ----------------------------------------------------------------------


class ConfigPath(NamedTuple):
    """A path the config names: where (``loc``, a key path) and the path as written."""

    loc: tuple
    path: Path

    @property
    def key(self) -> str:
        """The key as a technician reads it, e.g. ``models[1].model_dir``."""
        return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(self.loc))


def config_paths(config: GatewayConfig) -> list[ConfigPath]:
    """Every file path the config names, except places the gateway writes to."""
    found: list[ConfigPath] = []

    def walk(value, loc: tuple) -> None:
        if isinstance(value, Path):
            if loc[-2:] not in _RUNTIME_PATHS and loc not in _RUNTIME_PATHS:
                found.append(ConfigPath(loc, value))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, loc + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, loc + (i,))

    walk(config.model_dump(), ())
    return found


def _inside(relative: Path) -> bool:
    return not relative.is_absolute() and ".." not in relative.parts


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST_FILE).is_file()


def checked_model(directory: Path) -> ModelManifest:
    """The manifest of a model directory after checking every file's sha256 (BundleError if one differs)."""
    try:
        return verify(ModelManifest.read(directory))
    except ModelIntegrityError as exc:
        raise BundleError(
            f"model {exc.model}: {exc.path} is not the file its manifest describes "
            f"(sha256 {exc.actual or 'missing'}, expected {exc.expected}): export the model again "
            "or copy it again from where it was exported"
        ) from None
    except ManifestError as exc:
        raise BundleError(f"model directory {directory}: {exc}") from None


# ---- writing ---------------------------------------------------------------------------


def systemd_unit(config: GatewayConfig) -> str:
    """The systemd unit that runs this gateway's service on the Pi, once the clock is synchronised."""
    return f"""\
# frugalsense gateway {config.site}/{config.gateway}, written by `frugalsense flash`.
[Unit]
Description=frugalsense gateway {config.site}/{config.gateway}
# Readings carry the gateway clock's time: start once the clock is synchronised.
Wants=network-online.target time-sync.target
After=network-online.target time-sync.target

[Service]
Type=simple
User=frugalsense
Group=dialout
ExecStart={VENV_DIR}/bin/frugalsense run {INSTALL_DIR / CONFIG_NAME}
Restart=always
RestartSec=10
# The outbox keeps every message on disk: a restart loses nothing.
StateDirectory=frugalsense
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"""


def install_text(config: GatewayConfig) -> str:
    """The bundle's INSTALL.txt: the commands a technician runs as root to install it on the gateway."""
    return f"""\
frugalsense gateway {config.site}/{config.gateway}: install on the gateway (Raspberry Pi OS), as root

  sudo mkdir -p {INSTALL_DIR} && sudo cp -r <this folder>/. {INSTALL_DIR}/
  cd {INSTALL_DIR} && sha256sum -c {CHECKSUMS_NAME}
  sudo useradd --system --groups dialout frugalsense || true
  sudo python3 -m venv {VENV_DIR}
  sudo {VENV_DIR}/bin/pip install -r {INSTALL_DIR / REQUIREMENTS_NAME}
  sudo {VENV_DIR}/bin/pip install --no-deps <frugalsense {own_version()} wheel or checkout>
  sudo cp {INSTALL_DIR / UNIT_NAME} /etc/systemd/system/ && sudo systemctl daemon-reload
  sudo {VENV_DIR}/bin/frugalsense doctor --config {INSTALL_DIR / CONFIG_NAME}
  sudo systemctl enable --now frugalsense

Every doctor line must say OK (or SKIP with a reason) before the service is enabled.
"""


@dataclass
class Plan:
    """What a bundle will hold: relative path -> source file or bytes, its model folders, the paths it moved."""

    files: dict[str, Path | bytes] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    moved: list[tuple[str, str, str]] = field(default_factory=list)  # (key, path as written, path in the bundle)
    placed: dict[str, Path] = field(default_factory=dict)  # path in the bundle -> the file or folder copied there


def plan_files(config: GatewayConfig, extra_models: list[Path] = ()) -> Plan:
    """What the bundle will hold for ``config``; files it names outside its folder are copied in and the
    bundle's config points at the copies (``models/<name>``, ``data/<file>``)."""
    if config.path is None:
        raise BundleError("the config was not loaded from a file; flash needs its file")
    plan = Plan()
    rewrite: dict[tuple, str] = {}
    for named in config_paths(config):
        source = config.resolve_path(named.path)
        if named.path.is_absolute():
            continue  # a path on the gateway itself (e.g. provisioned TLS keys): doctor checks it there
        if not source.exists():
            hint = (
                " (a replay dataset: `frugalsense demo` writes the demo's, `frugalsense simulate water --out FILE` one)"
                if named.loc[0] == "sources"
                else ""
            )
            raise BundleError(
                f"{named.key}: {source} does not exist{hint}; put the file there or fix the path in the config"
            )
        relative = named.path.as_posix()
        if not _inside(named.path):
            relative = _bundle_place(named, source)
            rewrite[named.loc] = relative
            plan.moved.append((named.key, named.path.as_posix(), relative))
        placed = plan.placed.setdefault(relative, source)
        if placed != source:
            raise BundleError(
                f"{named.key}: {source} and {placed} would both be {relative} in the bundle; rename one of them"
            )
        if _is_model_dir(source):
            if relative not in plan.models:
                plan.models.append(relative)
                plan.files.update(_model_files(checked_model(source), relative))
        elif not source.is_dir():  # a folder inside is one the gateway fills or watches: not ours to copy
            plan.files[relative] = source
    data_dir = config.storage.data_dir
    if not data_dir.is_absolute() and not _inside(data_dir):  # /etc/frugalsense/../x: not the service's to write
        rewrite[("storage", "data_dir")] = STATE_DIR.as_posix()
        plan.moved.append(("storage.data_dir", data_dir.as_posix(), STATE_DIR.as_posix()))
    for directory in extra_models:
        if not _is_model_dir(directory):
            raise BundleError(f"--model {directory}: not a model folder (no {MANIFEST_FILE} in it)")
        manifest = checked_model(directory)
        relative = f"{MODELS_DIR}/{manifest.name}"
        if relative not in plan.models:
            plan.models.append(relative)
            plan.files.update(_model_files(manifest, relative))
    plan.files[CONFIG_NAME] = _rewritten(config, rewrite) if rewrite else config.path
    plan.files[UNIT_NAME] = systemd_unit(config).encode()
    try:
        pins = pinned_requirements()
    except PinError as exc:
        raise BundleError(str(exc)) from None
    header = "# pinned by `frugalsense flash` from the environment it ran in\n"
    plan.files[REQUIREMENTS_NAME] = (header + "\n".join(pins) + "\n").encode()
    plan.files[INSTALL_NAME] = install_text(config).encode()
    return plan


def _bundle_place(named: ConfigPath, source: Path) -> str:
    """Where a file or model folder from outside the config's folder goes in the bundle."""
    if source.is_dir() and not _is_model_dir(source):
        raise BundleError(
            f"{named.key}: {named.path} is a folder outside the config's folder; the gateway fills or watches it "
            "there, so give its absolute path on the gateway (e.g. /var/lib/frugalsense/...)"
        )
    return f"{MODELS_DIR if source.is_dir() else DATA_DIR}/{source.name}"


def _rewritten(config: GatewayConfig, values: dict[tuple, str]) -> bytes:
    """The config's text with the moved paths replaced: its comments and layout kept."""
    assert config.path is not None
    text = config.path.read_text(encoding="utf-8-sig")
    try:
        return replace_values(text, values).encode()
    except (KeyError, ValueError) as exc:
        loc = exc.args[0] if isinstance(exc, KeyError) else exc.args[1]
        raise BundleError(
            f"{ConfigPath(loc, Path()).key}: cannot point it at its copy in the bundle: it is not written as a "
            f"value of its own in {config.path.name} (an alias or `<<:` shared with other keys); write it out"
        ) from None


def _model_files(manifest: ModelManifest, relative: str) -> dict[str, Path]:
    root = manifest.root
    files = {f"{relative}/{MANIFEST_FILE}": root / MANIFEST_FILE}
    for entry in manifest.files.values():
        files[f"{relative}/{entry.path.relative_to(root).as_posix()}"] = entry.path
    return files


def write_bundle(config: GatewayConfig, target: Path, extra_models: list[Path] = ()) -> Bundle:
    """Write the bundle to ``target`` (created if needed, refused if it holds anything but an older bundle)."""
    plan = plan_files(config, list(extra_models))
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise BundleError(f"{target} is a file; give a folder (e.g. the mounted SD card's boot partition folder)")
    if target.is_dir() and any(target.iterdir()) and not (target / CHECKSUMS_NAME).is_file():
        raise BundleError(f"{target} is not empty and holds no earlier bundle; give an empty folder")
    if (target / CHECKSUMS_NAME).is_file():
        for old in read_checksums(target):  # an earlier bundle: replace it whole
            (target / old).unlink(missing_ok=True)
    bundle = Bundle(target, models=plan.models, moved=plan.moved)
    for relative, source in sorted(plan.files.items()):
        dest = target / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            dest.write_bytes(source)
        else:
            shutil.copyfile(source, dest)
        bundle.files[relative] = sha256_file(dest) if isinstance(source, bytes) else sha256_file(source)
        _fsync(dest)
    listing = "".join(f"{digest}  {relative}\n" for relative, digest in sorted(bundle.files.items()))
    (target / CHECKSUMS_NAME).write_text(listing)
    _fsync(target / CHECKSUMS_NAME)
    return bundle


def _fsync(path: Path) -> None:
    # An SD card pulled right after flash must hold what we verified, not the page cache's view.
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# ---- reading back ----------------------------------------------------------------------


def read_checksums(root: Path) -> dict[str, str]:
    """``BUNDLE.sha256`` of a bundle: relative path -> sha256 (BundleError if missing or malformed)."""
    path = Path(root) / CHECKSUMS_NAME
    try:
        text = path.read_text()
    except OSError as exc:
        raise BundleError(
            f"{path}: cannot read it ({exc.strerror or exc}); is this a bundle written by `frugalsense flash`?"
        ) from None
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        match = re.fullmatch(r"([0-9a-f]{64})  (\S.*)", line)
        if not match or not _inside(Path(match[2])):
            raise BundleError(f"{path}:{n}: not a '<sha256>  <file>' line; flash the bundle again")
        out[match[2]] = match[1]
    return out


def verify_bundle(root: Path) -> list[BundleProblem]:
    """Every file whose bytes differ from BUNDLE.sha256, or that is missing; empty when the bundle is intact."""
    problems = []
    for relative, expected in read_checksums(root).items():
        path = Path(root) / relative
        if not path.is_file():
            problems.append(BundleProblem(relative, "is missing"))
        elif sha256_file(path) != expected:
            problems.append(BundleProblem(relative, "has changed since it was flashed (sha256 differs)"))
    return problems
