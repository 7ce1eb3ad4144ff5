"""The interface every model runtime offers: raw feature rows in, float outputs out.

A backend owns one model file. ``predict`` checks and standardises the rows with the
manifest, runs the file (quantising and dequantising inside when the file is int8)
and returns ``(n, k)`` float32: class probabilities or regression values.
"""

from __future__ import annotations

import numpy as np

from edge.runtime.manifest import ModelFile, ModelManifest


class RuntimeUnavailable(RuntimeError):
    """The runtime a format needs is not installed on this gateway."""


class Backend:
    """Base class: subclasses set ``name`` and implement ``_run(scaled_rows) -> raw outputs``."""

    name = "base"
    # Why ``load_model`` picked this file and runtime (precision, backend, what was passed over).
    choice = ""

    def __init__(self, entry: ModelFile, num_threads: int = 1):
        if entry.manifest is None:
            raise ValueError(f"{entry.path}: a model file must come from a manifest")
        self.entry = entry
        self.manifest: ModelManifest = entry.manifest
        self.num_threads = num_threads

    @property
    def format(self) -> str:
        return self.entry.key

    def predict(self, X) -> np.ndarray:
        scaled = self.manifest.prepare(X)
        if len(scaled) == 0:
            return np.zeros((0, len(self.manifest.output_names)), dtype=np.float32)
        return self.manifest.finish(self._run(scaled))

    def decide(self, X) -> np.ndarray:
        return self.manifest.decide(self.predict(X))

    def _run(self, scaled: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.manifest.name} v{self.manifest.version} {self.format} on {self.name}>"


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """float -> int8 with the file's input scale and zero point (round half to even, as TFLite).

    >>> quantize(np.array([0.0, 0.5, 100.0]), 0.01, -3).tolist()
    [-3, 47, 127]

    Written as in-place ufuncs: ``np.clip`` and ``np.round`` cost more than the model's
    ``invoke`` on one window (tests/test_bench.py checks it equals the plain formula).
    """
    q = np.rint(x / scale)
    q += zero_point
    np.maximum(q, -128, out=q)
    np.minimum(q, 127, out=q)
    return q.astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 -> float32.

    >>> dequantize(np.array([-128, 0, 127], dtype=np.int8), 1 / 256, -128).tolist()
    [0.0, 0.5, 0.99609375]

    In float32 throughout: ``q - zero_point`` is exact there, and the product is rounded
    once either way, so this equals the int32/float64 formula bit for bit (tests/test_bench.py).
    """
    return (q.astype(np.float32) - zero_point) * np.float32(scale)
