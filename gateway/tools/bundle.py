"""The gateway bundle: everything one gateway needs, written to a folder (an SD card) and checked by sha256.

Layout of a bundle (it is copied as is to ``/etc/frugalsense`` on the gateway)::

    gateway.yaml            the validated config, byte for byte as written
    models/<name>/...       each model the config uses, with its manifest.json
    <other files>           files the config names by a relative path (TLS CA, datasets), same relative path
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
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from edge.runtime.manifest import MANIFEST_FILE, ManifestError, ModelManifest
from edge.runtime.registry import ModelIntegrityError, verify
from gateway.config import GatewayConfig

INSTALL_DIR = Path("/etc/frugalsense")
VENV_DIR = Path("/opt/frugalsense/venv")
CONFIG_NAME = "gateway.yaml"
UNIT_NAME = "frugalsense.service"
REQUIREMENTS_NAME = "requirements.txt"
INSTALL_NAME = "INSTALL.txt"
CHECKSUMS_NAME = "BUNDLE.sha256"
MODELS_DIR = "models"
GATEWAY_EXTRAS = ("edge", "gateway")  # what runs on the gateway; never training or dev
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


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 64 KiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- what goes in ----------------------------------------------------------------------


def config_paths(config: GatewayConfig) -> list[tuple[str, Path]]:
    """Every file path the config names, as ``(key, path as written)``, except places the gateway writes to."""
    found: list[tuple[str, Path]] = []

    def walk(value, loc: tuple) -> None:
        if isinstance(value, Path):
            if loc[-2:] not in _RUNTIME_PATHS and loc not in _RUNTIME_PATHS:
                found.append((_key(loc), value))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, loc + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, loc + (i,))

    walk(config.model_dump(), ())
    return found


def _key(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc))


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


def pinned_requirements(extras: tuple[str, ...] = GATEWAY_EXTRAS) -> list[str]:
    """``name==version`` lines for the gateway's packages and everything they pull in, as installed here.

    Platform markers are kept (onnxruntime has no 32-bit ARM wheel: pip skips it there).
    """
    top = _declared_requirements(extras)
    from packaging.requirements import Requirement

    pins: dict[str, tuple[str, str | None]] = {}
    todo: list[tuple[str, str | None]] = [(name, marker) for name, marker in top]
    while todo:
        name, marker = todo.pop()
        key = _canonical(name)
        if key in pins and (pins[key][1] is None or pins[key][1] == marker):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BundleError(
                f"package {name} is needed on the gateway but not installed here: "
                f"pip install -e '.[{','.join(extras)}]' first, so its version can be pinned"
            ) from None
        pins[key] = (f"{dist.metadata['Name']}=={dist.version}", marker if key not in pins else None)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # an optional extra of that package, or another platform's dependency
            todo.append((req.name, marker))
    return sorted(f"{pin}; {marker}" if marker else pin for pin, marker in pins.values())


def _own_version() -> str:
    try:
        return metadata.version("frugalsense")
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_requirements(extras: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(name, platform marker or None) of frugalsense's base and ``extras`` dependencies."""
    from packaging.requirements import Requirement

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():  # a checkout: its pyproject is newer than any installed metadata
        project = tomllib.loads(pyproject.read_text())["project"]
        texts = list(project.get("dependencies", []))
        for extra in extras:
            texts += project.get("optional-dependencies", {}).get(extra, [])
    else:
        texts = []
        for text in metadata.requires("frugalsense") or []:
            req = Requirement(text)
            if (
                req.marker is None
                or any(req.marker.evaluate({"extra": e}) for e in extras)
                or "extra ==" not in str(req.marker)
            ):
                texts.append(re.sub(r"\s*and extra == \"[^\"]+\"|extra == \"[^\"]+\"", "", text).rstrip("; "))
    out = []
    for text in texts:
        req = Requirement(text)
        out.append((req.name, str(req.marker) if req.marker else None))
    return out


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
  sudo {VENV_DIR}/bin/pip install --no-deps <frugalsense {_own_version()} wheel or checkout>
  sudo cp {INSTALL_DIR / UNIT_NAME} /etc/systemd/system/ && sudo systemctl daemon-reload
  sudo {VENV_DIR}/bin/frugalsense doctor --config {INSTALL_DIR / CONFIG_NAME}
  sudo systemctl enable --now frugalsense

Every doctor line must say OK (or SKIP with a reason) before the service is enabled.
"""


def plan_files(config: GatewayConfig, extra_models: list[Path] = ()) -> tuple[dict[str, Path | bytes], list[str]]:
    """What the bundle will hold: relative path -> source file or bytes; and the model directories in it."""
    if config.path is None:
        raise BundleError("the config was not loaded from a file; flash needs its file")
    base = config.path.parent
    plan: dict[str, Path | bytes] = {CONFIG_NAME: config.path}
    models: list[str] = []
    for key, written in config_paths(config):
        source = config.resolve_path(written)
        if written.is_absolute():
            continue  # a path on the gateway itself (e.g. provisioned TLS keys): doctor checks it there
        if not _inside(written):
            raise BundleError(
                f"{key}: {written} is outside the config's folder {base}; move the file next to the "
                f"config (or below it) or give its absolute path on the gateway"
            )
        if not source.exists():
            raise BundleError(f"{key}: {source} does not exist; put the file there or fix the path in the config")
        if _is_model_dir(source):
            manifest = checked_model(source)
            models.append(written.as_posix())
            plan.update(_model_files(manifest, written.as_posix()))
        elif source.is_dir():
            continue  # a data folder the gateway fills or watches (e.g. operator files), not ours to copy
        else:
            plan[written.as_posix()] = source
    for directory in extra_models:
        if not _is_model_dir(directory):
            raise BundleError(f"--model {directory}: not a model folder (no {MANIFEST_FILE} in it)")
        manifest = checked_model(directory)
        relative = f"{MODELS_DIR}/{manifest.name}"
        if relative in models:
            continue
        models.append(relative)
        plan.update(_model_files(manifest, relative))
    plan[UNIT_NAME] = systemd_unit(config).encode()
    plan[REQUIREMENTS_NAME] = (
        "# pinned by `frugalsense flash` from the environment it ran in\n" + "\n".join(pinned_requirements()) + "\n"
    ).encode()
    plan[INSTALL_NAME] = install_text(config).encode()
    return plan, models


def _model_files(manifest: ModelManifest, relative: str) -> dict[str, Path]:
    root = manifest.root
    files = {f"{relative}/{MANIFEST_FILE}": root / MANIFEST_FILE}
    for entry in manifest.files.values():
        files[f"{relative}/{entry.path.relative_to(root).as_posix()}"] = entry.path
    return files


def write_bundle(config: GatewayConfig, target: Path, extra_models: list[Path] = ()) -> Bundle:
    """Write the bundle to ``target`` (created if needed, refused if it holds anything but an older bundle)."""
    plan, models = plan_files(config, list(extra_models))
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise BundleError(f"{target} is a file; give a folder (e.g. the mounted SD card's boot partition folder)")
    if target.is_dir() and any(target.iterdir()) and not (target / CHECKSUMS_NAME).is_file():
        raise BundleError(f"{target} is not empty and holds no earlier bundle; give an empty folder")
    if (target / CHECKSUMS_NAME).is_file():
        for old in read_checksums(target):  # an earlier bundle: replace it whole
            (target / old).unlink(missing_ok=True)
    bundle = Bundle(target, models=models)
    for relative, source in sorted(plan.items()):
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
