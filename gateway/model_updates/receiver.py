"""Applying model updates on the gateway: verify, install beside the model in service, swap, roll back, report.

:class:`ModelUpdateReceiver` holds the models of one gateway (no MQTT here: that is the
listener). An update that verifies (``envelope``) is written to the store, the store's
pointer moves to it, and the model is swapped in service
(:class:`edge.runtime.registry.ModelSlot`: hashes, load on the same format and runtime
as the version it replaces, so an update never changes precision, smoke test on
recorded windows), then handed to the detectors that run it (``handover.py``: each
takes it through ``use_model`` and must score the smoke windows with it). Only then is
it ``applied``. If any step fails, the pointer goes back and the model in service stays.
Every outcome is an :class:`UpdateReport`, as published on the models status topic.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.detectors.base import ModelSwapError
from edge.runtime.manifest import MANIFEST_FILE, ManifestError, ModelManifest
from edge.runtime.registry import ModelSlot
from gateway.model_updates.envelope import (
    SIGNATURE_FILE,
    UpdateRefused,
    VerifiedUpdate,
    check_signature,
    parse_version,
    verify_update,
)
from gateway.model_updates.handover import DetectorHandOver, HandOverFailed
from gateway.model_updates.store import ModelStore, Pointer

log = logging.getLogger(__name__)

# Outcomes on the status topic (a refusal or a roll-back also gives a reason, a key of envelope.REASONS).
APPLIED, REFUSED, ROLLED_BACK, UNCHANGED = "applied", "refused", "rolled_back", "unchanged"


def now_ms() -> int:
    """The wall clock in milliseconds since the epoch, as every report and status message carries it."""
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
        self.time_ms = self.time_ms or now_ms()

    def to_dict(self) -> dict:
        body = {"model": self.model, "version": self.version, "outcome": self.outcome, "time": self.time_ms}
        if self.reason:
            body["reason"] = self.reason
        if self.reason or self.detail:  # applied: where it runs and which detectors scored with it
            body["detail"] = self.detail[:500]
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

    ``slots[name].active`` is the model in service; ``detectors`` (a DetectorHandOver) get
    every new one before it is reported applied; ``on_swap`` callbacks hear of it after.
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
        detectors: DetectorHandOver | None = None,
    ):
        self.store = store
        self.public_key = public_key
        self.models = set(models)
        self.allow_downgrade = allow_downgrade
        self.backend, self.formats = backend, formats
        self.smoke_windows = dict(smoke_windows or {})  # name -> raw feature rows; else the store's recording
        self.detectors = detectors
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
            backend, handed = self._swap(name, folder)
        except Exception as exc:
            self.store.set_pointer(name, before)
            if before is None or folder.name not in (before.current, before.previous):
                shutil.rmtree(folder, ignore_errors=True)
            kept = f"v{active.version} stays in service" if active is not None else "no model in service"
            if isinstance(exc, ModelSwapError):  # a detector cannot run it: nothing changed
                return UpdateReport(REFUSED, name, version, exc.reason, f"{exc}; {kept}")
            reason = "handover_failed" if isinstance(exc, HandOverFailed) else "smoke_test_failed"
            return UpdateReport(ROLLED_BACK, name, version, reason, f"{exc}; {kept}")
        self.store.prune(name)
        return UpdateReport(APPLIED, name, version, detail=f"on {backend.format}/{backend.name}; {handed}")

    def _check_order(self, candidate: ModelManifest, active: ModelManifest, at_start: bool = False) -> None:
        name, version = candidate.name, candidate.version
        if self.detectors is not None and self.detectors.users(name):
            # The detectors that run it judge the features and outputs (one may compute new ones).
            try:
                self.detectors.check(name, candidate)
            except ModelSwapError as exc:
                raise UpdateRefused(exc.reason, str(exc), name, version) from None
        elif list(candidate.features) != list(active.features):
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
        """Signature on disk, ModelSlot.swap (hashes, load, smoke test), the detectors; then the listeners.

        The candidate loads on the format and runtime of the version in service (an update
        never changes precision); returns it and what the detectors did with it.
        """
        manifest_bytes = (folder / MANIFEST_FILE).read_bytes()
        try:
            signature = json.loads((folder / SIGNATURE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            signature = None
        check_signature(manifest_bytes, signature, self.public_key)
        slot = self._slot(name)
        previous = slot.active
        if previous is not None:
            slot.backend, slot.formats = previous.name, [previous.format]
        slot.smoke_windows = self._windows(name, ModelManifest.read(folder))
        backend = slot.swap(folder)
        handed = "no detector runs it"
        if self.detectors is not None:
            try:
                handed = self.detectors.hand_over(name, backend, slot.smoke_windows)
            except Exception:
                slot.active = previous  # every detector runs the previous model again
                raise
        for callback in self._listeners:
            try:
                callback(name, backend)
            except Exception:  # a detector's hook must not undo a verified swap
                log.exception("model %s: a listener failed on the swap to v%s", name, backend.manifest.version)
        return backend, handed

    def _windows(self, name: str, candidate: ModelManifest) -> np.ndarray:
        """Rows the candidate must score: recorded here, else the parity rows of the model in service or its own.

        A candidate that reads other features than the model in service scores its own parity rows.
        """
        active = self.in_service(name)
        if active is not None and list(active.features) != list(candidate.features):
            rows = _parity_rows(candidate)
            return rows if rows is not None and len(rows) else candidate.mean.reshape(1, -1)
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
            log.info("%s: update applied (%s)", what, report.detail)
        else:
            log.error("%s: update %s (%s): %s", what, report.outcome.replace("_", " "), report.reason, report.detail)
