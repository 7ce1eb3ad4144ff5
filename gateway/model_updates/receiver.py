"""Signed model updates over MQTT: verify, install beside the model in service, swap, roll back, report.

One MQTT message carries one update: a JSON envelope holding the model's
``manifest.json`` exactly as it was signed, an Ed25519 signature over it, and every
file the manifest lists (base64). The gateway trusts nothing in it before the
signature checks out against the public key in its config, and nothing in a file
before its sha256 matches the signed manifest. Then, under
``storage.data_dir/models/<name>/``, it writes the files to ``<version>/`` (each
fsynced), moves the pointer ``current.json`` (written aside and renamed, so it is
always the old or the new one, whole), and swaps the model in service
(:class:`edge.runtime.registry.ModelSlot`: hashes, load, smoke test on recorded
windows). If the swap fails, the pointer goes back. The previous version stays on
disk, so a restart after a crash at any step finds a complete model to run.

Topics (docs/contracts.md, docs/model-updates.md):

    <prefix>/<site>/<gateway>/model-update/<model>   QoS 1, retained: the model this gateway should run
    <prefix>/<site>/<gateway>/models                 QoS 1, retained: what it runs, and the last outcome

>>> parse_version("1.10.0") > parse_version("1.9"), parse_version("3") == parse_version("3.0")
(True, True)
>>> parse_version("v3")
Traceback (most recent call last):
...
gateway.model_updates.receiver.UpdateRefused: bad_manifest: version 'v3' cannot be ordered: use numbers such as 3 or 1.2.0
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edge.contracts import ContractError, check_id
from edge.runtime.manifest import MANIFEST_FILE, ManifestError, ModelManifest
from edge.runtime.registry import ModelSlot

log = logging.getLogger(__name__)

UPDATE_FORMAT = "frugalsense-model-update"
UPDATE_SCHEMA = 1
SIGNATURE_FILE = "manifest.sig"  # next to manifest.json, written by `frugalsense model sign`
SIGNATURE_ALG = "ed25519"
# Signed bytes = this prefix + manifest.json: a signature made with the fleet key for anything
# else can never pass as a model signature.
SIGNING_CONTEXT = b"frugalsense-model-manifest-v1\x00"
MAX_UPDATE_BYTES = 256 * 1024  # one MQTT message; the bridge's payload limit too
MAX_FILE_BYTES = 64 * 1024  # every shipped model file stays under this (docs/models.md)
UPDATE_CHANNEL = "model-update"
STATUS_CHANNEL = "models"
POINTER_FILE = "current.json"
SMOKE_FILE = "smoke_windows.npy"  # raw feature rows recorded on this gateway
STAGING_PREFIX = ".incoming-"

# Outcomes on the status topic, and the reasons of a refusal or a roll-back.
APPLIED, REFUSED, ROLLED_BACK, UNCHANGED = "applied", "refused", "rolled_back", "unchanged"
REASONS = {
    "too_large": "the message is larger than one update may be",
    "bad_envelope": "not a frugalsense model update (or a field of it is malformed)",
    "unsigned": "the update carries no signature",
    "bad_signature": "the signature does not verify with this gateway's public key",
    "bad_manifest": "the signed manifest is not a usable model manifest",
    "mismatch": "the files or the model name do not match the signed manifest or the topic",
    "hash_mismatch": "a file's sha256 or size differs from the signed manifest",
    "unknown_model": "this gateway does not run a model of that name",
    "downgrade": "the version is not newer than the one in service",
    "features_changed": "the model reads other features than the one in service",
    "outputs_changed": "the model gives other outputs (task, classes) than the one in service",
    "smoke_test_failed": "the model failed verification, loading or the smoke test on this gateway",
    "storage_error": "the gateway could not write the model to its disk",
}


class UpdateRefused(Exception):
    """An update the gateway will not run; ``reason`` is a key of REASONS."""

    def __init__(self, reason: str, detail: str, model: str | None = None, version: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.model, self.version = reason, detail, model, version


class ModelUpdateConfigError(ValueError):
    """The gateway's model-update settings cannot be used (public key file missing or not a key)."""


# ---- keys and versions ------------------------------------------------------------------


def load_public_key(path: str | os.PathLike):
    """The fleet's Ed25519 model-signing public key from a PEM file (``frugalsense model keygen``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise ModelUpdateConfigError(f"model_updates.public_key_file {os.fspath(path)} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ModelUpdateConfigError(
            f"model_updates.public_key_file {os.fspath(path)} is not a PEM public key ({exc})"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ModelUpdateConfigError(
            f"model_updates.public_key_file {os.fspath(path)} is not an Ed25519 key "
            "(make one with: frugalsense model keygen)"
        )
    return key


def key_id(public_key) -> str:
    """Short name of a public key (sha256 of its 32 raw bytes, 16 hex digits), shown in reports and logs."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def parse_version(version: str) -> tuple[int, ...]:
    """A version as numbers, trailing zeros dropped (``"1.2.0"`` == ``"1.2"``), or UpdateRefused."""
    parts = str(version).split(".")
    if not all(p.isdigit() and len(p) <= 9 for p in parts):
        # Only an ordered version lets a gateway refuse an older (replayed) model.
        raise UpdateRefused("bad_manifest", f"version {version!r} cannot be ordered: use numbers such as 3 or 1.2.0")
    numbers = [int(p) for p in parts]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


# ---- the envelope -------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedUpdate:
    """An update whose signature and file hashes checked out; nothing is written yet."""

    name: str
    version: str
    manifest_bytes: bytes
    signature: dict
    files: dict[str, bytes]  # manifest path -> content
    manifest: ModelManifest  # parsed with root "." (paths are relative)


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise UpdateRefused("bad_envelope", f"{what} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UpdateRefused("bad_envelope", f"{what} is not valid base64") from None


def check_signature(manifest_bytes: bytes, signature: object, public_key) -> None:
    """Raise UpdateRefused (unsigned / bad_signature) unless ``signature`` signs ``manifest_bytes`` with the key."""
    from cryptography.exceptions import InvalidSignature

    if signature is None:
        raise UpdateRefused("unsigned", "the update carries no signature: sign it with 'frugalsense model sign'")
    if not isinstance(signature, dict) or signature.get("alg") != SIGNATURE_ALG:
        raise UpdateRefused("bad_signature", f"the signature must be an {SIGNATURE_ALG} signature object")
    value = _b64(signature.get("value"), "signature.value")
    try:
        public_key.verify(value, SIGNING_CONTEXT + manifest_bytes)
    except InvalidSignature:
        ours, theirs = key_id(public_key), signature.get("key_id")
        if isinstance(theirs, str) and theirs != ours:
            raise UpdateRefused(
                "bad_signature", f"signed by key {theirs[:16]}, this gateway trusts key {ours} only"
            ) from None
        raise UpdateRefused(
            "bad_signature",
            f"the signature does not verify with key {ours}: the manifest or the signature was changed after signing",
        ) from None


def verify_update(payload: bytes, public_key, topic_model: str | None = None) -> VerifiedUpdate:
    """Check an update message: size, shape, signature over the manifest, then every file against the manifest.

    Raises UpdateRefused; nothing of the payload is trusted before the signature verifies.
    """
    if len(payload) > MAX_UPDATE_BYTES:
        raise UpdateRefused(
            "too_large", f"{len(payload)} bytes, an update may have at most {MAX_UPDATE_BYTES}", topic_model
        )
    try:
        envelope = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise UpdateRefused("bad_envelope", "the message is not UTF-8 JSON", topic_model) from None
    if not isinstance(envelope, dict) or envelope.get("format") != UPDATE_FORMAT:
        raise UpdateRefused("bad_envelope", f"the message is not a '{UPDATE_FORMAT}'", topic_model)
    if envelope.get("v") != UPDATE_SCHEMA:
        raise UpdateRefused(
            "bad_envelope",
            f"update schema {envelope.get('v')!r} is not supported (this gateway reads {UPDATE_SCHEMA})",
            topic_model,
        )
    manifest_bytes = _b64(envelope.get("manifest"), "manifest")
    check_signature(manifest_bytes, envelope.get("signature"), public_key)
    # From here on the manifest is the signer's own words.
    try:
        data = json.loads(manifest_bytes.decode("utf-8"))
        manifest = ModelManifest.from_dict(data, root=".", source="signed manifest")
        check_id("model", manifest.name)
    except (UnicodeDecodeError, ValueError, ManifestError, ContractError) as exc:
        raise UpdateRefused("bad_manifest", str(exc), topic_model) from None
    name, version = manifest.name, manifest.version
    parse_version(version)
    if topic_model is not None and name != topic_model:
        raise UpdateRefused(
            "mismatch", f"the manifest is for model {name}, the topic for {topic_model}", topic_model, version
        )
    listed = {entry["path"]: entry for entry in data["files"].values()}
    if set(listed) & {MANIFEST_FILE, SIGNATURE_FILE}:
        raise UpdateRefused(
            "bad_manifest", f"a model file may not be named {MANIFEST_FILE} or {SIGNATURE_FILE}", name, version
        )
    sent = envelope.get("files")
    if not isinstance(sent, dict):
        raise UpdateRefused("bad_envelope", "files must be an object of path -> base64", name, version)
    if set(sent) != set(listed):
        missing, extra = sorted(set(listed) - set(sent)), sorted(set(sent) - set(listed))
        raise UpdateRefused(
            "mismatch",
            f"files missing: {', '.join(missing) or 'none'}; files not in the signed "
            f"manifest: {', '.join(extra) or 'none'}",
            name,
            version,
        )
    files = {}
    for path, entry in sorted(listed.items()):
        content = _b64(sent[path], f"files[{path!r}]")
        actual = hashlib.sha256(content).hexdigest()
        if actual != entry["sha256"].lower() or len(content) != entry["bytes"]:
            raise UpdateRefused(
                "hash_mismatch",
                f"{path}: expected sha256 {entry['sha256']} ({entry['bytes']} "
                f"bytes), got sha256 {actual} ({len(content)} bytes)",
                name,
                version,
            )
        files[path] = content
    return VerifiedUpdate(name, version, manifest_bytes, envelope["signature"], files, manifest)


# ---- the model store on the gateway's disk -------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class Pointer:
    current: str
    previous: str | None = None


class ModelStore:
    """``<root>/<name>/<version>/`` folders and the ``current.json`` pointer of each model name."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob(f"*/{POINTER_FILE}")) if self.root.is_dir() else []

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / version

    def pointer(self, name: str) -> Pointer | None:
        path = self.root / name / POINTER_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Pointer(str(data["current"]), None if data.get("previous") is None else str(data["previous"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Cannot happen through set_pointer (rename is atomic); a hand edit can.
            log.error("model %s: %s is unreadable (%s); treating the model as not installed", name, path, exc)
            return None

    def set_pointer(self, name: str, pointer: Pointer | None) -> None:
        """Replace the pointer in one step: a crash leaves the old one or the new one, never half of one."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / POINTER_FILE
        if pointer is None:
            target.unlink(missing_ok=True)
        else:
            tmp = folder / f"{POINTER_FILE}.tmp"
            _write_synced(tmp, json.dumps(asdict(pointer)).encode())
            os.replace(tmp, target)
        _fsync_dir(folder)

    def install(self, update: VerifiedUpdate) -> Path:
        """Write the update to ``<name>/<version>/``, complete and fsynced before it gets that name."""
        folder = self.root / update.name
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / update.version
        if (final / MANIFEST_FILE).is_file() and (final / MANIFEST_FILE).read_bytes() == update.manifest_bytes:
            return final  # the same signed build is already here (the previous version, re-sent)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
        try:
            for rel, content in update.files.items():
                _write_synced(staging / rel, content)
            _write_synced(staging / SIGNATURE_FILE, json.dumps(update.signature).encode())
            _write_synced(staging / MANIFEST_FILE, update.manifest_bytes)
            _fsync_dir(staging)
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
            _fsync_dir(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def prune(self, name: str) -> None:
        """Remove every version folder but the current and previous ones, and any half-written one."""
        folder = self.root / name
        pointer = self.pointer(name)
        keep = {pointer.current, pointer.previous} if pointer else set()
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)

    def smoke_windows(self, name: str) -> np.ndarray | None:
        path = self.root / name / SMOKE_FILE
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("model %s: cannot read recorded smoke-test windows %s (%s)", name, path, exc)
            return None

    def record_smoke_windows(self, name: str, windows) -> None:
        """Keep raw feature rows seen on this gateway; every candidate for ``name`` must score them."""
        X = np.asarray(windows, dtype=np.float64)
        if X.ndim != 2 or not len(X) or not np.all(np.isfinite(X)):
            raise ValueError("smoke-test windows must be a non-empty 2-D array of finite feature rows")
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{SMOKE_FILE}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, X)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / SMOKE_FILE)


# ---- applying updates --------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class UpdateReport:
    """What became of one update (or of a model at start), as published on the models status topic."""

    outcome: str  # applied | refused | rolled_back | unchanged
    model: str | None
    version: str | None
    reason: str | None = None  # a key of REASONS when refused or rolled back
    detail: str = ""
    time_ms: int = 0

    def __post_init__(self):
        self.time_ms = self.time_ms or _now_ms()

    def to_dict(self) -> dict:
        body = {"model": self.model, "version": self.version, "outcome": self.outcome, "time": self.time_ms}
        if self.reason:
            body["reason"], body["detail"] = self.reason, self.detail[:500]
        return body


def _parity_rows(manifest: ModelManifest) -> np.ndarray | None:
    entry = manifest.files.get("parity")
    if entry is None or not entry.path.is_file():
        return None
    try:
        with np.load(entry.path, allow_pickle=False) as z:
            return np.asarray(z["X"], dtype=np.float64)
    except (OSError, ValueError, KeyError):
        return None


class ModelUpdateReceiver:
    """The models of one gateway: applies verified updates, keeps the previous version, rolls back (no MQTT here).

    ``slots[name].active`` is the model in service; ``on_swap`` callbacks hear of every new one.
    """

    def __init__(
        self,
        store: ModelStore,
        public_key,
        *,
        models=(),
        allow_downgrade: bool = False,
        backend: str = "auto",
        formats=None,
        smoke_windows: dict | None = None,
    ):
        self.store = store
        self.public_key = public_key
        self.models = set(models)
        self.allow_downgrade = allow_downgrade
        self.backend, self.formats = backend, formats
        self.smoke_windows = dict(smoke_windows or {})  # name -> raw feature rows; else the store's recording
        self.slots: dict[str, ModelSlot] = {}
        self.counters: Counter = Counter()
        self.last_report: UpdateReport | None = None
        self._listeners: list[Callable] = []
        self._lock = threading.RLock()

    def on_swap(self, callback: Callable) -> None:
        """``callback(name, backend)`` after every model put in service."""
        self._listeners.append(callback)

    def in_service(self, name: str) -> ModelManifest | None:
        slot = self.slots.get(name)
        return slot.active.manifest if slot is not None and slot.active is not None else None

    def accepts(self, name: str) -> bool:
        return name in self.models or self.in_service(name) is not None or self.store.pointer(name) is not None

    def adopt(self, backend) -> None:
        """Count a model loaded from the gateway's bundle as the one in service (for ordering and features)."""
        name = backend.manifest.name
        if self.in_service(name) is None:
            self._slot(name).active = backend

    def state(self) -> dict:
        out = {}
        for name, slot in sorted(self.slots.items()):
            if slot.active is not None:
                pointer = self.store.pointer(name)
                m = slot.active.manifest
                out[name] = {
                    "version": m.version,
                    "runtime": f"{slot.active.format}/{slot.active.name}",
                    "previous": pointer.previous if pointer and pointer.current == m.version else None,
                }
        return out

    # -- at start ------------------------------------------------------------------------
    def load_installed(self) -> list[UpdateReport]:
        """Put each installed model in service (its current version, else its previous one); tidy the store."""
        reports = []
        with self._lock:
            for name in self.store.names():
                pointer = self.store.pointer(name)
                if pointer is None:
                    continue
                report = self._load_installed(name, pointer)
                if report is not None:
                    reports.append(report)
                    self._record(report)
                self.store.prune(name)
        return reports

    def _load_installed(self, name: str, pointer: Pointer) -> UpdateReport | None:
        active = self.in_service(name)
        if active is not None:
            current = self.store.version_dir(name, pointer.current)
            try:
                self._check_order(ModelManifest.read(current), active, at_start=True)
            except (UpdateRefused, ManifestError) as exc:
                log.warning(
                    "model %s: keeping v%s from the gateway's bundle over the installed v%s: %s",
                    name,
                    active.version,
                    pointer.current,
                    exc,
                )
                return None
        try:
            self._swap(name, self.store.version_dir(name, pointer.current))
            return None
        except Exception as exc:
            failure = f"v{pointer.current} cannot be put in service ({exc})"
        if pointer.previous is not None:
            try:
                self._swap(name, self.store.version_dir(name, pointer.previous))
                self.store.set_pointer(name, Pointer(pointer.previous))
                log.error("model %s: %s; rolled back to v%s", name, failure, pointer.previous)
                return UpdateReport(
                    ROLLED_BACK,
                    name,
                    pointer.current,
                    "smoke_test_failed",
                    f"{failure}; v{pointer.previous} is in service",
                )
            except Exception as exc:
                failure += f"; v{pointer.previous} cannot either ({exc})"
        log.error("model %s: %s", name, failure)
        return UpdateReport(ROLLED_BACK, name, pointer.current, "smoke_test_failed", failure)

    # -- an update -----------------------------------------------------------------------
    def apply(self, payload: bytes, topic_model: str | None = None) -> UpdateReport:
        """Verify and apply one update message; never raises for a bad update, reports it."""
        with self._lock:
            try:
                report = self._apply(verify_update(payload, self.public_key, topic_model))
            except UpdateRefused as exc:
                report = UpdateReport(REFUSED, exc.model or topic_model, exc.version, exc.reason, exc.detail)
            self._record(report)
            return report

    def _apply(self, update: VerifiedUpdate) -> UpdateReport:
        name, version = update.name, update.version
        if not self.accepts(name):
            known = ", ".join(sorted(self.models | set(self.slots))) or "none"
            raise UpdateRefused(
                "unknown_model",
                f"this gateway runs no model {name} (it accepts: {known}; add the "
                "name to model_updates.models to accept a new one)",
                name,
                version,
            )
        active = self.in_service(name)
        if active is not None:
            if (
                active.version == version
                and (active.root / MANIFEST_FILE).is_file()
                and (active.root / MANIFEST_FILE).read_bytes() == update.manifest_bytes
            ):
                return UpdateReport(UNCHANGED, name, version)
            self._check_order(update.manifest, active)
        before = self.store.pointer(name)
        try:
            folder = self.store.install(update)
            kept = (
                before.current
                if before is not None and active is not None and before.current == active.version
                else None
            )
            self.store.set_pointer(name, Pointer(version, kept))
        except OSError as exc:
            raise UpdateRefused(
                "storage_error", f"cannot write to {self.store.root / name}: {exc}", name, version
            ) from None
        try:
            self._swap(name, folder)
        except Exception as exc:
            self.store.set_pointer(name, before)
            if before is None or folder.name not in (before.current, before.previous):
                shutil.rmtree(folder, ignore_errors=True)
            kept = f"v{active.version} stays in service" if active is not None else "no model in service"
            return UpdateReport(ROLLED_BACK, name, version, "smoke_test_failed", f"{exc}; {kept}")
        self.store.prune(name)
        return UpdateReport(APPLIED, name, version)

    def _check_order(self, candidate: ModelManifest, active: ModelManifest, at_start: bool = False) -> None:
        name, version = candidate.name, candidate.version
        if list(candidate.features) != list(active.features):
            raise UpdateRefused(
                "features_changed",
                f"v{version} reads {', '.join(candidate.features)}, the model in "
                f"service (v{active.version}) reads {', '.join(active.features)}: "
                "this gateway computes the latter",
                name,
                version,
            )
        if (candidate.task, candidate.output_names) != (active.task, active.output_names):
            # Detectors read the labels: a new class list needs new detector code, not just a new model.
            raise UpdateRefused(
                "outputs_changed",
                f"v{version} is a {candidate.task} with outputs "
                f"{', '.join(candidate.output_names)}, the model in service "
                f"(v{active.version}) a {active.task} with outputs "
                f"{', '.join(active.output_names)}",
                name,
                version,
            )
        if candidate.version == active.version:
            if at_start:
                raise UpdateRefused("downgrade", f"v{version} is already in service", name, version)
            raise UpdateRefused(
                "downgrade",
                f"v{version} is already in service with other content: give the new build a new version",
                name,
                version,
            )
        try:
            older = parse_version(candidate.version) < parse_version(active.version)
        except UpdateRefused:
            older = True  # an in-service version that cannot be ordered: only an explicit allowance goes past it
        if older and at_start:
            raise UpdateRefused(
                "downgrade", f"v{version} is older than v{active.version} from the bundle", name, version
            )
        if older and not self.allow_downgrade:
            raise UpdateRefused(
                "downgrade",
                f"v{version} is not newer than v{active.version} in service (model_updates.allow_downgrade is false)",
                name,
                version,
            )

    def _swap(self, name: str, folder: Path):
        """Signature on disk, then ModelSlot.swap (hashes, load, smoke test); listeners hear of the new model."""
        manifest_bytes = (folder / MANIFEST_FILE).read_bytes()
        try:
            signature = json.loads((folder / SIGNATURE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            signature = None
        check_signature(manifest_bytes, signature, self.public_key)
        slot = self._slot(name)
        slot.smoke_windows = self._windows(name, ModelManifest.read(folder))
        backend = slot.swap(folder)
        for callback in self._listeners:
            try:
                callback(name, backend)
            except Exception:  # a detector's hook must not undo a verified swap
                log.exception("model %s: a listener failed on the swap to v%s", name, backend.manifest.version)
        return backend

    def _windows(self, name: str, candidate: ModelManifest) -> np.ndarray:
        """Rows the candidate must score: recorded here, else the parity rows of the model in service or its own."""
        for source in (
            lambda: self.smoke_windows.get(name),
            lambda: self.store.smoke_windows(name),
            lambda: _parity_rows(self.in_service(name)) if self.in_service(name) else None,
            lambda: _parity_rows(candidate),
        ):
            rows = source()
            if rows is not None and len(rows):
                return np.asarray(rows, dtype=np.float64)
        return candidate.mean.reshape(1, -1)  # at least its own mean input

    def _slot(self, name: str) -> ModelSlot:
        if name not in self.slots:
            self.slots[name] = ModelSlot(np.zeros((0, 0)), backend=self.backend, formats=self.formats)
        return self.slots[name]

    def _record(self, report: UpdateReport) -> None:
        self.counters[f"model_updates_{report.outcome}"] += 1
        if report.outcome == UNCHANGED:
            log.info("model %s v%s: already in service, nothing to do", report.model, report.version)
            return
        self.last_report = report
        what = f"model {report.model or '?'}" + (f" v{report.version}" if report.version else "")
        if report.outcome == APPLIED:
            log.info("%s: update applied", what)
        else:
            log.error("%s: update %s (%s): %s", what, report.outcome.replace("_", " "), report.reason, report.detail)


# ---- MQTT ------------------------------------------------------------------------------------


def update_topic(topics, model: str) -> str:
    """Where the update for one model of one gateway is published (retained: the model it should run)."""
    return f"{topics.base}/{UPDATE_CHANNEL}/{check_id('model', model)}"


def status_topic(topics) -> str:
    return f"{topics.base}/{STATUS_CHANNEL}"


DEFAULT_PUSH_USER = "frugalsense-models"


def acl_lines(prefix: str = "frugalsense", push_user: str = DEFAULT_PUSH_USER) -> str:
    """Lines to add to the broker ACL (gateway/security/broker.py): who may send and read model updates.

    A gateway (user ``<site>/<gateway>``) reads only its own update topic; it already
    writes its models status under its prefix. The model publisher writes every update
    topic and reads the status (``model push --wait``).

    >>> print(acl_lines())  # doctest: +NORMALIZE_WHITESPACE
    # Signed model updates: a gateway reads only its own updates; the model publisher sends them.
    pattern read frugalsense/%u/model-update/#
    user frugalsense-models
    topic write frugalsense/+/+/model-update/#
    topic read frugalsense/+/+/models
    """
    return (
        f"# Signed model updates: a gateway reads only its own updates; the model publisher sends them.\n"
        f"pattern read {prefix}/%u/{UPDATE_CHANNEL}/#\n"
        f"user {push_user}\n"
        f"topic write {prefix}/+/+/{UPDATE_CHANNEL}/#\n"
        f"topic read {prefix}/+/+/{STATUS_CHANNEL}\n"
    )


def encode_status(state: dict, last: UpdateReport | None, time_ms: int | None = None) -> bytes:
    body = {"v": UPDATE_SCHEMA, "time": time_ms or _now_ms(), "models": state}
    if last is not None:
        body["last_update"] = last.to_dict()
    return json.dumps(body, separators=(",", ":")).encode()


def decode_status(payload: bytes) -> dict:
    """A models status message as a dict; ValueError if it is not one."""
    body = json.loads(payload.decode("utf-8"))
    if not isinstance(body, dict) or body.get("v") != UPDATE_SCHEMA or not isinstance(body.get("models"), dict):
        raise ValueError("not a models status message")
    return body


class ModelUpdateListener:
    """The receiver's MQTT link: its own connection, updates applied one at a time off the network thread."""

    def __init__(self, receiver: ModelUpdateReceiver, topics, settings):
        self.receiver = receiver
        self.topics = topics
        # Its own client id: the publisher's session and outbox stay as they are.
        self.settings = replace(settings, client_id=f"{settings.client_id or 'frugalsense'}-models")
        self.client = None
        self._pending: queue.Queue = queue.Queue()
        self._seen: dict[str, str] = {}  # model -> sha256 of the last message handled (retained re-sends)
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="model-updates", daemon=True)
        self.handled: deque = deque(maxlen=100)  # recent reports, newest last

    def start(self) -> ModelUpdateListener:
        """Connect in the background (never waits for the broker) and start applying updates."""
        from gateway.protocol.mqtt_client import make_client

        self.client = make_client(self.settings)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self._worker.start()
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        return self

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self._subscribed.wait(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._pending.put(None)
        if self._worker.is_alive():
            self._worker.join(timeout_s)
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def publish_status(self) -> None:
        if self.client is not None:
            self.client.publish(
                status_topic(self.topics),
                encode_status(self.receiver.state(), self.receiver.last_report),
                qos=1,
                retain=True,
            )

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code.is_failure:
            log.error(
                "model updates: broker %s:%s refused the connection: %s",
                self.settings.host,
                self.settings.port,
                reason_code,
            )
            return
        client.subscribe(f"{self.topics.base}/{UPDATE_CHANNEL}/+", qos=1)
        self.publish_status()

    def _on_message(self, client, userdata, message):
        if not message.payload:
            return  # a cleared retained update
        model = message.topic.rsplit("/", 1)[-1]
        digest = hashlib.sha256(message.payload).hexdigest()
        if self._seen.get(model) == digest:
            return  # the retained update again, after a reconnect: already handled
        self._seen[model] = digest
        self._pending.put((model, message.payload))

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._pending.get()
            if item is None:
                return
            model, payload = item
            try:
                report = self.receiver.apply(payload, model)
            except Exception as exc:  # a bug must not end the gateway's only way to get a fixed model
                log.exception("model updates: update for %s could not be handled", model)
                report = UpdateReport(REFUSED, model, None, "bad_envelope", f"internal error: {exc}")
                self.receiver.last_report = report
            if report.reason == "storage_error":
                self._seen.pop(model, None)  # a full disk may clear: try the retained copy again at reconnect
            self.handled.append(report)
            if report.outcome != UNCHANGED:
                self.publish_status()


def hand_to_detectors(detectors, name: str, backend) -> None:
    """Give a new model to every detector that runs model ``name`` (``use_model(backend)``, else ``runtime_``)."""
    for detector in detectors:
        manifest = getattr(getattr(detector, "runtime_", None), "manifest", None)
        if manifest is None or manifest.name != name:
            continue
        if hasattr(detector, "use_model"):
            detector.use_model(backend)
        else:
            detector.runtime_ = backend
            if hasattr(detector, "model_version"):
                detector.model_version = backend.manifest.version


def start_for_config(config, settings, detectors=(), *, backend: str = "auto") -> ModelUpdateListener | None:
    """Start receiving signed model updates if the config's ``model_updates`` section enables it.

    ``settings`` are the gateway's MQTT settings (the listener adds ``-models`` to the client
    id); ``detectors`` that run an exported model (``runtime_``) get each new version, loaded
    on ``backend``. Returns the running listener (call ``stop()`` at the end), or None when
    disabled or when the public key file is unusable (logged as an error).
    """
    from gateway.protocol import topics as T

    section = getattr(config, "model_updates", None)
    if section is None or not section.enabled:
        return None
    try:
        key = load_public_key(config.resolve_path(section.public_key_file))
    except ModelUpdateConfigError as exc:
        # Sensing goes on without updates: a gateway that stopped detecting over its key file would be worse.
        log.error("model updates are off: %s", exc)
        return None
    store = ModelStore(config.resolve_path(config.storage.data_dir) / "models")
    receiver = ModelUpdateReceiver(
        store, key, models=section.models, allow_downgrade=section.allow_downgrade, backend=backend
    )
    receiver.on_swap(lambda name, backend: hand_to_detectors(detectors, name, backend))
    for detector in detectors:
        runtime = getattr(detector, "runtime_", None)
        if getattr(runtime, "manifest", None) is not None:
            receiver.adopt(runtime)
    receiver.load_installed()
    topics = T.Topics(config.mqtt.topic_prefix, config.site, config.gateway)
    log.info("model updates: listening on %s/%s/+ (signing key %s)", topics.base, UPDATE_CHANNEL, key_id(key))
    return ModelUpdateListener(receiver, topics, settings).start()
