"""The numpy backend: a dense network's forward pass, runnable on any gateway (even armv7l).

The ``numpy`` format is an ``.npz`` (loaded with ``allow_pickle=False``) holding
``weight_<i>`` of shape (inputs, units), ``bias_<i>`` and ``activations``, one name per
layer. It is also the float reference the other formats are checked against.

>>> W = [np.array([[1.0, -1.0]], dtype=np.float32), np.array([[2.0], [3.0]], dtype=np.float32)]
>>> b = [np.zeros(2, dtype=np.float32), np.array([-1.0], dtype=np.float32)]
>>> forward(W, b, ["relu", "identity"], np.array([[1.0], [-2.0]], dtype=np.float32)).tolist()
[[1.0], [5.0]]
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import numpy as np

from edge.runtime.base import Backend
from edge.runtime.manifest import ManifestError, ModelFile

NPZ_FORMAT = "frugalsense-dense-network"


def _logistic(z):
    # exp of a large positive number overflows; split by sign so neither branch does.
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0, out=z),
    "logistic": _logistic,
    "tanh": np.tanh,
    "softmax": _softmax,
    "exp": np.exp,
}


def forward(weights, biases, activations, X: np.ndarray) -> np.ndarray:
    """Run the dense layers on already standardised rows."""
    h = X
    for W, b, act in zip(weights, biases, activations, strict=True):  # one of each per layer
        h = ACTIVATIONS[act](h @ W + b)
    return h


def network_bytes(weights, biases, activations) -> bytes:
    """The ``numpy`` format as bytes (the exporter writes them; kept here so reader and writer agree).

    Written with a fixed zip timestamp (``np.savez`` stamps the current time) so that
    re-exporting the same model gives the same bytes and the same sha256.
    """
    arrays = {"format": np.array(NPZ_FORMAT), "activations": np.array(list(activations))}
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        arrays[f"weight_{i}"] = np.asarray(W, dtype=np.float32)
        arrays[f"bias_{i}"] = np.asarray(b, dtype=np.float32)
    return npz_bytes(arrays)


def npz_bytes(arrays: dict) -> bytes:
    """A deterministic compressed ``.npz`` of plain (non-object) arrays."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    return out.getvalue()


def load_network(path):
    """Read the ``numpy`` format -> (weights, biases, activations), or ManifestError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != NPZ_FORMAT:
                raise ManifestError(f"{path}: not a frugalsense dense network file")
            acts = [str(a) for a in z["activations"]]
            weights = [z[f"weight_{i}"] for i in range(len(acts))]
            biases = [z[f"bias_{i}"] for i in range(len(acts))]
    except (OSError, ValueError, KeyError) as e:
        raise ManifestError(f"{path}: unreadable dense network file ({e})") from None
    unknown = [a for a in acts if a not in ACTIVATIONS]
    if unknown:
        raise ManifestError(f"{path}: unknown activation(s) {unknown}")
    for i, (W, b) in enumerate(zip(weights, biases, strict=True)):
        if W.ndim != 2 or b.shape != (W.shape[1],) or (i and W.shape[0] != weights[i - 1].shape[1]):
            raise ManifestError(f"{path}: layer {i} shapes do not chain ({W.shape}, {b.shape})")
    return weights, biases, acts


class NumpyBackend(Backend):
    """Runs the ``numpy`` format (a dense network's ``.npz``) with numpy alone."""

    name = "numpy"

    def __init__(self, entry: ModelFile, num_threads: int = 1):
        super().__init__(entry, num_threads)
        self.weights, self.biases, self.activations = load_network(entry.path)
        if self.weights[0].shape[0] != len(self.manifest.features):
            raise ManifestError(
                f"{entry.path}: takes {self.weights[0].shape[0]} inputs, the "
                f"manifest names {len(self.manifest.features)} features"
            )

    def _run(self, scaled):
        return forward(self.weights, self.biases, self.activations, scaled)
