"""Turn a fitted scikit-learn model into the dense network every int8/numpy format is written from.

The exported files all take *standardised* features; the manifest carries the mean and
scale the runtime applies first. A ``StandardScaler`` at the head of a ``Pipeline``
provides them; otherwise they are measured on the calibration rows and their inverse
folded into the first layer, so the network computes exactly what the model did on raw
features while the int8 input sees features of comparable range.

>>> import numpy as np
>>> from sklearn.linear_model import LogisticRegression
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(10.0, 3.0, size=(200, 3)); y = (X[:, 0] > 10).astype(int)
>>> ex = extract(LogisticRegression().fit(X, y), X)
>>> ex.task, ex.output_names, ex.network.activations, ex.network.parameters
('classification', ['0', '1'], ['logistic'], 4)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

CLASSIFIER_ACTIVATIONS = ("identity", "relu", "logistic", "tanh")


class UnsupportedModelError(ValueError):
    """A model (or a model/format pair) the exporters cannot write; the message says what is supported."""


@dataclass
class DenseNetwork:
    """Layers ``h = act(h @ W + b)`` on standardised input; the last layer's activation is the output's."""

    weights: list[np.ndarray]  # (inputs, units) per layer
    biases: list[np.ndarray]
    activations: list[str]

    @property
    def parameters(self) -> int:
        return int(sum(W.size + b.size for W, b in zip(self.weights, self.biases, strict=True)))

    def forward(self, X: np.ndarray, upto: int | None = None, pre_activation: bool = False):
        """Float64 forward pass (calibration uses the intermediate layers)."""
        from edge.runtime.numpy_backend import ACTIVATIONS

        h = np.asarray(X, dtype=np.float64)
        n = len(self.weights) if upto is None else upto + 1
        for i in range(n):
            z = h @ self.weights[i] + self.biases[i]
            if pre_activation and i == n - 1:
                return z
            h = ACTIVATIONS[self.activations[i]](z)
        return h


@dataclass
class Extracted:
    """What the exporters need from a model: task, names, scaling, network, ONNX-convertible estimator."""

    task: str
    output_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    network: DenseNetwork | None  # None: not a dense model (only onnx_float can be written)
    onnx_estimator: object  # takes standardised features
    model_type: str
    not_dense_reason: str = ""
    reference: object = None  # the original model: raw features -> outputs

    def reference_outputs(self, X_raw: np.ndarray) -> np.ndarray:
        """The sklearn model's own outputs as (n, k) float64: probabilities or predictions."""
        m = self.reference
        out = m.predict_proba(X_raw) if self.task == "classification" else m.predict(X_raw)
        out = np.asarray(out, dtype=np.float64)
        return out.reshape(len(X_raw), -1)


def _split_pipeline(model):
    """(mean, scale) of a leading StandardScaler or None, and the final estimator."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(model, Pipeline):
        return None, model
    steps = [s for _, s in model.steps if s not in (None, "passthrough")]
    *pre, est = steps
    if not pre:
        return None, est
    if len(pre) == 1 and isinstance(pre[0], StandardScaler):
        sc = pre[0]
        n = sc.n_features_in_
        mean = sc.mean_ if sc.with_mean else np.zeros(n)
        scale = sc.scale_ if sc.with_std else np.ones(n)
        return (np.asarray(mean, float), np.asarray(scale, float)), est
    raise UnsupportedModelError(
        f"a Pipeline may only hold one StandardScaler before the model, found "
        f"{[type(s).__name__ for s in pre]}: fold other preprocessing into the features"
    )


def _dense_layers(est):
    """(weights, biases, activations, task, classes) of a supported estimator, else a reason string."""
    from sklearn.base import is_classifier, is_regressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    name = type(est).__name__
    if isinstance(est, (MLPClassifier, MLPRegressor)):
        if est.activation not in CLASSIFIER_ACTIVATIONS:
            return f"{name} activation '{est.activation}' is not supported"
        if isinstance(est, MLPClassifier) and est._label_binarizer.y_type_ == "multilabel-indicator":
            return "multilabel MLPClassifier is not supported"
        acts = [est.activation] * (len(est.coefs_) - 1) + [est.out_activation_]
        W = [np.asarray(w, float) for w in est.coefs_]
        b = [np.asarray(v, float) for v in est.intercepts_]
        return W, b, acts
    if isinstance(est, LogisticRegression):
        coef = np.asarray(est.coef_, float)
        if len(est.classes_) > 2 and coef.shape[0] != len(est.classes_):
            return "LogisticRegression must be multinomial for more than 2 classes"
        return [coef.T], [np.asarray(est.intercept_, float).ravel()], ["logistic" if coef.shape[0] == 1 else "softmax"]
    if is_regressor(est) and type(est).__module__.startswith("sklearn.linear_model") and hasattr(est, "coef_"):
        coef = np.atleast_2d(np.asarray(est.coef_, float))
        icpt = np.broadcast_to(np.asarray(est.intercept_, float), (coef.shape[0],)).copy()
        return [coef.T], [icpt], ["identity"]
    if is_classifier(est):
        return f"{name} is not a dense model (supported: MLPClassifier, LogisticRegression)"
    return f"{name} is not a dense model (supported: MLPRegressor and linear regressors)"


def _with_first_layer(est, W0, b0):
    """A copy of ``est`` whose first layer is (W0, b0), for converting the folded model to ONNX."""
    est = copy.deepcopy(est)
    if hasattr(est, "coefs_"):
        est.coefs_[0], est.intercepts_[0] = W0.copy(), b0.copy()
    else:
        shape_c, shape_i = np.shape(est.coef_), np.shape(est.intercept_)
        est.coef_ = W0.T.reshape(shape_c).copy()
        est.intercept_ = b0.reshape(shape_i).copy() if shape_i else float(b0[0])
    return est


def extract(model, X_calib, output_names=None) -> Extracted:
    """Read ``model`` (fitted) into an :class:`Extracted`; ``X_calib`` are raw feature rows."""
    from sklearn.base import is_classifier
    from sklearn.utils.validation import check_is_fitted

    X = np.asarray(X_calib, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2 or not np.all(np.isfinite(X)):
        raise ValueError("X_calib must be a finite 2-D array of at least 2 raw feature rows")
    try:
        check_is_fitted(model)
    except Exception as e:
        raise UnsupportedModelError(f"{type(model).__name__} is not fitted ({e})") from None
    scaler, est = _split_pipeline(model)
    task = "classification" if is_classifier(est) else "regression"
    if task == "classification":
        names = [str(c) for c in est.classes_]
    else:
        n_out = int(np.asarray(model.predict(X[:1])).reshape(1, -1).shape[1])
        names = (
            list(output_names) if output_names else (["value"] if n_out == 1 else [f"value_{i}" for i in range(n_out)])
        )
        if len(names) != n_out:
            raise ValueError(f"output_names has {len(names)} names, the model gives {n_out} outputs")
    layers = _dense_layers(est)
    if isinstance(layers, str):  # not dense: only its own ONNX conversion, on raw features
        n = X.shape[1]
        return Extracted(task, names, np.zeros(n), np.ones(n), None, model, type(est).__name__, layers, model)
    W, b, acts = layers
    if scaler is not None:
        mean, scale = scaler
        onnx_est = est
    else:
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-12] = 1.0  # a constant feature: nothing to standardise
        b[0] = b[0] + mean @ W[0]
        W[0] = W[0] * scale[:, None]
        onnx_est = _with_first_layer(est, W[0], b[0])
    net = DenseNetwork(W, b, acts)
    return Extracted(task, names, mean, scale, net, onnx_est, type(est).__name__, "", model)
