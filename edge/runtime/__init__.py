"""Model runtimes on the gateway: load a manifest's file on onnxruntime, LiteRT or numpy.

``load(entry)`` runs one file on its format's runtime; ``load_model(manifest,
backend="auto")`` tries every format whose runtime is installed, times a tiny probe
(one window, a few runs) and keeps the fastest, logging what it measured. See
``docs/models.md``.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from edge.runtime import litert_backend, onnx_backend
from edge.runtime.base import Backend, RuntimeUnavailable
from edge.runtime.litert_backend import LiteRTBackend
from edge.runtime.manifest import FORMAT_RUNTIMES, InputError, ManifestError, ModelFile, ModelManifest
from edge.runtime.numpy_backend import NumpyBackend
from edge.runtime.onnx_backend import OnnxBackend

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[Backend]] = {
    "onnxruntime": OnnxBackend,
    "litert": LiteRTBackend,
    "numpy": NumpyBackend,
}
_AVAILABLE = {
    "onnxruntime": onnx_backend.runtime_available,
    "litert": litert_backend.runtime_available,
    "numpy": lambda: True,
}
PROBE_RUNS = 15

__all__ = [
    "BACKENDS",
    "Backend",
    "InputError",
    "ManifestError",
    "ModelFile",
    "ModelManifest",
    "RuntimeUnavailable",
    "available_backends",
    "load",
    "load_model",
]


def available_backends() -> list[str]:
    """Backends whose runtime is installed here, e.g. ``['onnxruntime', 'litert', 'numpy']``."""
    return [name for name, ok in _AVAILABLE.items() if ok()]


def load(entry: ModelFile, backend: str | None = None, num_threads: int = 1) -> Backend:
    """Load one model file on ``backend`` (default: the first runtime its format runs on)."""
    runtimes = FORMAT_RUNTIMES.get(entry.key)
    if runtimes is None:
        raise ManifestError(f"{entry.path}: '{entry.key}' is not a model format")
    backend = backend or runtimes[0]
    if backend not in runtimes:
        raise ManifestError(f"format {entry.key} runs on {', '.join(runtimes)}, not on '{backend}'")
    return BACKENDS[backend](entry, num_threads=num_threads)


def probe_seconds(model: Backend, runs: int = PROBE_RUNS, row: np.ndarray | None = None) -> float:
    """Median wall time of one single-window prediction (after one warm-up run); ``row`` defaults to the mean."""
    row = model.manifest.mean.reshape(1, -1) if row is None else row
    model.predict(row)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.predict(row)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def load_model(manifest: ModelManifest, backend: str = "auto", formats=None, num_threads: int = 1) -> Backend:
    """Load ``manifest``'s model on ``backend``, or with ``"auto"`` on the fastest available one.

    ``formats`` restricts which files may be used (default: all the manifest lists).
    The returned backend carries ``probe_us`` (format/backend -> µs per window) when
    ``auto`` measured more than one candidate.
    """
    allowed = [f for f in manifest.formats if formats is None or f in formats]
    if not allowed:
        raise ManifestError(
            f"model {manifest.name}: none of the formats {list(formats)} is in its "
            f"manifest (it has {', '.join(manifest.formats)})"
        )
    if backend != "auto":
        if backend not in BACKENDS:
            raise ManifestError(f"unknown backend '{backend}' (known: auto, {', '.join(BACKENDS)})")
        usable = [f for f in allowed if backend in FORMAT_RUNTIMES[f]]
        if not usable:
            raise ManifestError(
                f"model {manifest.name} has no file backend '{backend}' can run (it has {', '.join(allowed)})"
            )
        return load(manifest.files[usable[0]], backend, num_threads)
    installed = available_backends()
    candidates, skipped = [], []
    for fmt in allowed:
        name = next((r for r in FORMAT_RUNTIMES[fmt] if r in installed), None)
        if name is None:
            skipped.append(f"{fmt} (no runtime)")
            continue
        try:
            candidates.append(load(manifest.files[fmt], name, num_threads))
        except (ManifestError, RuntimeUnavailable) as e:
            skipped.append(f"{fmt} ({e})")
    if not candidates:
        raise RuntimeUnavailable(f"model {manifest.name}: no file can run here: {'; '.join(skipped)}")
    timings = {f"{c.format}/{c.name}": probe_seconds(c) * 1e6 for c in candidates} if len(candidates) > 1 else {}
    best = min(candidates, key=lambda c: timings.get(f"{c.format}/{c.name}", 0.0))
    best.probe_us = timings
    log.info(
        "model %s v%s: backend auto picked %s on %s (probe, µs per window: %s%s)",
        manifest.name,
        manifest.version,
        best.format,
        best.name,
        ", ".join(f"{k} {v:.1f}" for k, v in timings.items()) or "single candidate",
        f"; skipped {', '.join(skipped)}" if skipped else "",
    )
    return best
