"""Model runtimes on the gateway: load a manifest's file on onnxruntime, LiteRT or numpy.

``load(entry)`` runs one file on its format's runtime; ``load_model(manifest,
backend="auto", precision="float")`` loads the file of that precision on the first
runtime of a fixed order that is installed (``edge.runtime.choice``), so the choice
never depends on speed, and logs which file and why. ``probe_seconds`` times a model
for the benchmarks. See ``docs/models.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Iterator

import numpy as np

from edge.runtime import litert_backend, onnx_backend
from edge.runtime.base import Backend, RuntimeUnavailable
from edge.runtime.choice import AUTO_ORDER, PRECISIONS, choose
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
    "AUTO_ORDER",
    "BACKENDS",
    "PRECISIONS",
    "Backend",
    "InputError",
    "ManifestError",
    "ModelFile",
    "ModelManifest",
    "RuntimeUnavailable",
    "available_backends",
    "load",
    "load_model",
    "probe_seconds",
]


class _Installed(Collection[str]):
    """The runtimes installed here, each checked only when asked about.

    Asking whether onnxruntime or LiteRT is installed imports it (about 30 MB of a
    gateway's memory), so a model that runs on numpy must not ask.
    """

    def __contains__(self, name: object) -> bool:
        check = _AVAILABLE.get(name) if isinstance(name, str) else None
        return bool(check and check())

    def __iter__(self) -> Iterator[str]:
        return iter(available_backends())

    def __len__(self) -> int:
        return len(available_backends())


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
    """Median wall time of one single-window prediction (after one warm-up run); ``row`` defaults to the mean.

    For benchmarks and model cards only: ``load_model`` never times anything to choose.
    """
    row = model.manifest.mean.reshape(1, -1) if row is None else row
    model.predict(row)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.predict(row)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def load_model(
    manifest: ModelManifest,
    backend: str = "auto",
    *,
    precision: str = "float",
    formats: Iterable[str] | None = None,
    num_threads: int = 1,
) -> Backend:
    """Load ``manifest``'s file of ``precision`` on ``backend``; ``"auto"`` takes a fixed order, never a timing.

    ``precision`` (``float`` or ``int8``) names the weights that decide; ``backend`` a
    runtime, or ``auto`` for the first of :data:`edge.runtime.choice.AUTO_ORDER` whose
    runtime is installed. ``formats`` pins the files to try instead (benchmarks, tests).
    The returned backend's ``choice`` says why it was picked; the log says it too.
    """
    picked = choose(
        manifest.formats,
        backend,
        precision,
        _Installed(),
        formats,
        model=f"model {manifest.name} v{manifest.version} in {manifest.root}",
    )
    model = load(manifest.files[picked.format], picked.runtime, num_threads)
    model.choice = picked.reason
    log.info(
        "model %s v%s: %s on %s (%s)", manifest.name, manifest.version, picked.format, picked.runtime, picked.reason
    )
    return model
