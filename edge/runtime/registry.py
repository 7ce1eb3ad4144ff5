"""The model registry on the gateway: verified loading from ``models/`` and a slot that swaps models safely.

Every file a manifest lists is hashed before anything loads it; a file whose sha256
differs from the manifest's is refused with :class:`ModelIntegrityError` (file,
expected and actual hash). :class:`ModelSlot` keeps the model in service and only
replaces it when the candidate passed verification, loading and a smoke test on the
windows it was given; on any failure the previous model stays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge.runtime import load_model
from edge.runtime.base import Backend
from edge.runtime.manifest import MANIFEST_FILE, InputError, ManifestError, ModelManifest

log = logging.getLogger(__name__)
# Fraction of the stored parity rows on which a candidate must take the reference decision.
SMOKE_AGREEMENT = 0.99


class ModelIntegrityError(ManifestError):
    """A model file is missing or is not the file its manifest describes."""

    def __init__(self, model: str, path: Path, expected: str, actual: str | None):
        self.model, self.path, self.expected, self.actual = model, Path(path), expected, actual
        found = "the file is missing" if actual is None else f"actual sha256 {actual}"
        super().__init__(
            f"model {model}: {path} does not match its manifest (expected sha256 "
            f"{expected}, {found}); refusing to load it"
        )


class ModelSmokeTestError(ManifestError):
    """A verified, loadable model gave unusable outputs on the smoke-test windows."""


def verify(manifest: ModelManifest) -> ModelManifest:
    """Check the sha256 of every file ``manifest`` lists; raise ModelIntegrityError on the first mismatch."""
    for entry in manifest.files.values():
        actual = entry.actual_sha256() if entry.path.is_file() else None
        if actual != entry.sha256:
            raise ModelIntegrityError(manifest.name, entry.path, entry.sha256, actual)
    return manifest


class ModelRegistry:
    """The model directories under ``root`` (``models/<name>/manifest.json``)."""

    def __init__(self, root: str | Path = "models"):
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{MANIFEST_FILE}"))

    def manifest(self, name: str) -> ModelManifest:
        path = self.root / name
        if not (path / MANIFEST_FILE).is_file():
            known = ", ".join(self.names()) or "none"
            raise ManifestError(f"no model '{name}' in {self.root} (models there: {known})")
        return ModelManifest.read(path)

    def verify(self, name: str) -> ModelManifest:
        return verify(self.manifest(name))

    def load(
        self, name: str, backend: str = "auto", formats=None, num_threads: int = 1, *, precision: str = "float"
    ) -> Backend:
        """Verify every file of model ``name``, then load it (see :func:`edge.runtime.load_model`)."""
        return load_model(self.verify(name), backend, precision=precision, formats=formats, num_threads=num_threads)


def smoke_test(model: Backend, windows) -> None:
    """Raise ModelSmokeTestError unless ``model`` gives sane outputs on ``windows`` and its parity rows."""
    m = model.manifest
    try:
        out = model.predict(windows)
    except InputError as e:
        raise ModelSmokeTestError(f"model {m.name} v{m.version} cannot score the smoke-test windows: {e}") from None
    if not np.all(np.isfinite(out)):
        raise ModelSmokeTestError(f"model {m.name} v{m.version} gave non-finite outputs")
    if m.task == "classification" and (
        np.any(out < -1e-3) or np.any(out > 1 + 1e-3) or np.any(np.abs(out.sum(axis=1) - 1) > 0.05)
    ):
        raise ModelSmokeTestError(f"model {m.name} v{m.version} gave outputs that are not probabilities")
    parity = m.files.get("parity")
    if parity is not None and (m.task == "classification" or m.decision):
        with np.load(parity.path, allow_pickle=False) as z:
            X, ref = z["X"], z["outputs"]
        agree = float(np.mean(m.decide(model.predict(X)) == m.decide(ref)))
        if agree < SMOKE_AGREEMENT:
            raise ModelSmokeTestError(
                f"model {m.name} v{m.version} on {model.name}/{model.format} takes the reference "
                f"decision on only {agree:.1%} of its parity rows (needs {SMOKE_AGREEMENT:.0%})"
            )


class ModelSlot:
    """The model in service; ``swap`` replaces it only with a verified model that passed the smoke test."""

    def __init__(
        self, smoke_windows, backend: str = "auto", formats=None, num_threads: int = 1, *, precision: str = "float"
    ):
        self.smoke_windows = np.asarray(smoke_windows, dtype=np.float64)
        self.backend, self.formats, self.num_threads = backend, formats, num_threads
        self.precision = precision
        self.active: Backend | None = None
        self.last_error: Exception | None = None

    def swap(self, candidate: str | Path | ModelManifest) -> Backend:
        """Verify, load and smoke-test ``candidate`` (a model directory or manifest); then put it in service.

        Raises ModelIntegrityError, ManifestError, ModelSmokeTestError or RuntimeUnavailable;
        in every such case ``active`` is left as it was.
        """
        try:
            manifest = candidate if isinstance(candidate, ModelManifest) else ModelManifest.read(candidate)
            model = load_model(
                verify(manifest),
                self.backend,
                precision=self.precision,
                formats=self.formats,
                num_threads=self.num_threads,
            )
            smoke_test(model, self.smoke_windows)
        except Exception as e:
            self.last_error = e
            kept = (
                f"{self.active.manifest.name} v{self.active.manifest.version} stays in service"
                if self.active
                else "no model in service"
            )
            log.error("model swap refused: %s (%s)", e, kept)
            raise
        previous, self.active, self.last_error = self.active, model, None
        log.info(
            "model swap: %s v%s on %s/%s now in service%s",
            manifest.name,
            manifest.version,
            model.name,
            model.format,
            f" (was {previous.manifest.name} v{previous.manifest.version})" if previous else "",
        )
        return model

    def predict(self, X) -> np.ndarray:
        return self._model().predict(X)

    def decide(self, X) -> np.ndarray:
        return self._model().decide(X)

    def _model(self) -> Backend:
        if self.active is None:
            raise ManifestError("no model in service yet: swap one in first")
        return self.active
