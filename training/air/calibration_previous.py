"""The calibration a recalibration starts from: an exported model folder, read back as the gateway reads it.

``load_previous`` verifies the folder (every file against its manifest, as a gateway
does), loads the float weights on the numpy runtime and keeps the dense network, so
the previous version's predictions on new co-location data are exactly the
gateway's, and a recalibration can be composed *into* that network:
``recalibrated_model(previous, gain, offset)`` is a scikit-learn model computing
``offset + gain * previous(x)`` (the last layer scaled and shifted, nothing
approximated), which the export registry writes in every format like any other
calibration.

>>> import json, tempfile
>>> from sklearn.linear_model import LinearRegression
>>> from training.export import export_model
>>> folder = Path(tempfile.mkdtemp())
>>> X = np.arange(48, dtype=float)[:, None]
>>> _ = export_model(LinearRegression().fit(X, 0.5 * X[:, 0] + 1), X, folder, "calibration-pm", "1",
...                  feature_names=["raw"], output_names=["pm"])
>>> m = json.loads((folder / "manifest.json").read_text())
>>> m["calibration"] = {"inputs": ["raw"], "terms": [{"name": "raw", "kind": "value", "of": [0]}]}
>>> _ = (folder / "manifest.json").write_text(json.dumps(m))
>>> previous = load_previous(folder)
>>> previous.version, previous.predict(np.array([[10.0]])).round(3).tolist()
('1', [6.0])
>>> model = recalibrated_model(previous, gain=2.0, offset=-1.0)
>>> model.predict(np.array([[10.0]])).round(3).tolist()
[11.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.air.calibration_features import compute_terms


class PreviousModelError(ValueError):
    """The folder given to ``--update`` is not a calibration this command can recalibrate."""


@dataclass
class Previous:
    """An exported calibration: its manifest, its ``calibration`` section, its float runtime and network."""

    root: Path
    manifest: Any  # edge.runtime.manifest.ModelManifest
    spec: dict
    runtime: Any  # the numpy backend of its float weights
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activations: list[str]

    @property
    def name(self) -> str:
        return str(self.manifest.name)

    @property
    def version(self) -> str:
        return str(self.manifest.version)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.manifest.raw["input"]["scaling"]["mean"], dtype=np.float64)

    @property
    def scale(self) -> np.ndarray:
        return np.asarray(self.manifest.raw["input"]["scaling"]["scale"], dtype=np.float64)

    def terms(self, raw: np.ndarray) -> np.ndarray:
        """The model's feature terms of (n, inputs) raw rows (the gateway's code path)."""
        return compute_terms(raw, self.spec)

    def predict(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated values of (n, inputs) raw rows, as the gateway computes them (float32 terms, numpy)."""
        terms = self.terms(raw).astype(np.float32)
        return np.asarray(self.runtime.predict(terms), dtype=np.float64)[:, 0]


def load_previous(model_dir: str | Path) -> Previous:
    """Verify and load the calibration in ``model_dir``; PreviousModelError in a user's words if it is none."""
    from edge.detectors.calibration import calibration_section
    from edge.runtime import load_model
    from edge.runtime.manifest import MANIFEST_FILE, ManifestError, ModelManifest
    from edge.runtime.numpy_backend import load_network
    from edge.runtime.registry import verify

    root = Path(model_dir)
    if not (root / MANIFEST_FILE).is_file():
        raise PreviousModelError(
            f"{root}: no exported model here (no {MANIFEST_FILE}); --update takes the folder a "
            "'frugalsense train air-calibration --out' wrote"
        )
    try:
        manifest = verify(ModelManifest.read(root))
        spec = calibration_section(manifest)
        if "numpy" not in manifest.files:
            raise PreviousModelError(f"{root}: the model has no numpy (float) file to recalibrate from")
        runtime = load_model(manifest, backend="numpy", precision="float")
        weights, biases, activations = load_network(manifest.files["numpy"].path)
    except ManifestError as exc:
        raise PreviousModelError(f"{root}: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, PreviousModelError):
            raise
        raise PreviousModelError(str(exc)) from None
    if manifest.task != "regression" or weights[-1].shape[1] != 1 or activations[-1] != "identity":
        raise PreviousModelError(f"{root}: model {manifest.name} is not a one-output regression (a calibration)")
    return Previous(root, manifest, spec, runtime, weights, biases, activations)


def _fitted_scaler(mean: np.ndarray, scale: np.ndarray):
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = mean.copy(), scale.copy(), scale**2
    scaler.n_features_in_, scaler.n_samples_seen_ = len(mean), 1
    return scaler


def _fitted_network(weights: list[np.ndarray], biases: list[np.ndarray], activations: list[str]):
    """A fitted scikit-learn estimator computing the dense network on standardised input."""
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPRegressor

    if len(weights) == 1:
        est: Any = LinearRegression()
        est.coef_, est.intercept_ = weights[0][:, 0].copy(), float(biases[0][0])
        est.n_features_in_ = weights[0].shape[0]
        return est
    hidden = set(activations[:-1])
    if len(hidden) != 1:
        raise PreviousModelError(f"the network mixes hidden activations {sorted(hidden)}: cannot recalibrate it")
    est = MLPRegressor(hidden_layer_sizes=tuple(W.shape[1] for W in weights[:-1]), activation=hidden.pop())
    est.coefs_ = [W.copy() for W in weights]
    est.intercepts_ = [b.copy() for b in biases]
    est.n_layers_, est.n_outputs_, est.out_activation_ = len(weights) + 1, 1, "identity"
    est.n_features_in_ = weights[0].shape[0]
    return est


def recalibrated_model(previous: Previous, gain: float = 1.0, offset: float = 0.0):
    """A scikit-learn Pipeline computing ``offset + gain * previous(terms)`` exactly (the last layer rescaled)."""
    from sklearn.pipeline import Pipeline

    weights = [W.astype(np.float64) for W in previous.weights]
    biases = [b.astype(np.float64) for b in previous.biases]
    weights[-1] = weights[-1] * gain
    biases[-1] = biases[-1] * gain + offset
    network = _fitted_network(weights, biases, previous.activations)
    return Pipeline([("scale", _fitted_scaler(previous.mean, previous.scale)), ("model", network)])


__all__ = ["Previous", "PreviousModelError", "load_previous", "recalibrated_model"]
