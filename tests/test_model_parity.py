"""Parity of every exported format on every installed runtime against the float reference.

One generic test runs over every model directory in ``models/*/`` (so models shipped
later are covered without new code) and over small models fitted here on seeded
synthetic data, so the machinery is tested before any real model exists.

Tolerances (stated in docs/models.md):
- float formats (onnx_float, numpy): |output - reference| <= 1e-4 * max(1, output range);
- int8 formats (onnx_int8, tflite_int8): mean |output - reference| <= 2 % of the output
  range (1 for probabilities);
- every format: the decision (argmax, or the regression threshold) agrees with the
  reference's on >= 99 % of the parity rows, and every pair of runtimes agrees on >= 99 %.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pytest

from edge.runtime import available_backends, load
from edge.runtime.manifest import FORMAT_RUNTIMES, ModelManifest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent.name for p in (REPO / "models").glob("*/manifest.json"))
SYNTHETIC = ["mlp_relu_binary", "mlp_logistic_3class", "logreg_binary", "mlp_regressor"]
MODELS = [f"shipped:{n}" for n in SHIPPED] + [f"synthetic:{n}" for n in SYNTHETIC]
INSTALLED = available_backends()
RUNS = [(fmt, rt) for fmt, rts in FORMAT_RUNTIMES.items() for rt in rts]
FLOAT_ATOL, INT8_MEAN_ERR, DECISION_AGREEMENT = 1e-4, 0.02, 0.99
MAX_SHIPPED_FILE_BYTES = 64 * 1024


def synthetic_data(seed: int = 7, n: int = 3000):
    """Leak-like features on very different scales (flows, pressures, a ratio) and three targets."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    X = z * [2.0, 0.5, 10.0, 1.0, 3.0, 0.2] + [40.0, 1.0, 300.0, 0.0, 10.0, 5.0]
    score = 1.5 * z[:, 0] + 1.0 * z[:, 1] - 0.8 * z[:, 3] * z[:, 4] + 0.5 * rng.normal(size=n)
    y_binary = (score > 1.0).astype(int)
    y_3class = np.digitize(score, [-1.0, 1.5])
    leak_flow = np.maximum(0.0, 2.0 * z[:, 0] + z[:, 1] ** 2 + 0.3 * rng.normal(size=n))
    return X, y_binary, y_3class, leak_flow


@functools.cache
def fit_synthetic(name: str):
    """(fitted model, export keyword arguments) for one synthetic model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, yb, y3, flow = synthetic_data()
    Xtr = X[:2000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: these tiny fits need not converge
        if name == "mlp_relu_binary":
            m = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=300, random_state=0))
            return m.fit(Xtr, yb[:2000]), {}
        if name == "mlp_logistic_3class":  # scaler in a pipeline, softmax output
            m = make_pipeline(
                StandardScaler(),
                MLPClassifier(hidden_layer_sizes=(12,), activation="logistic", max_iter=400, random_state=0),
            )
            return m.fit(Xtr, y3[:2000]), {}
        if name == "logreg_binary":  # bare model: scaling measured and folded in by the exporter
            return LogisticRegression(max_iter=1000).fit(Xtr, yb[:2000]), {}
        if name == "mlp_regressor":
            m = make_pipeline(
                StandardScaler(), MLPRegressor(hidden_layer_sizes=(16,), max_iter=400, random_state=0)
            ).fit(Xtr, flow[:2000])
            return m, {"output_names": ["leak_flow_lps"], "decision_threshold": 2.0}
    raise KeyError(name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Model id -> model directory; synthetic models are fitted and exported once per module."""
    from training.export import export_model

    cache: dict[str, Path] = {}

    def get(model_id: str) -> Path:
        kind, name = model_id.split(":", 1)
        if kind == "shipped":
            return REPO / "models" / name
        if model_id not in cache:
            model, kwargs = fit_synthetic(name)
            X = synthetic_data()[0]
            out = tmp_path_factory.mktemp(name)
            export_model(
                model,
                X[:2000],
                out,
                name,
                "1",
                X_check=X[2000:],
                feature_names=["night_flow", "dp_head", "inflow_day", "residual", "ratio_a", "ratio_b"],
                **kwargs,
            )
            cache[model_id] = out
        return cache[model_id]

    return get


def _outputs_range(ref: np.ndarray, task: str) -> float:
    return 1.0 if task == "classification" else float(max(1.0, np.ptp(ref)))


@pytest.mark.parametrize("fmt,runtime", RUNS, ids=[f"{f}-{r}" for f, r in RUNS])
@pytest.mark.parametrize("model_id", MODELS)
def test_format_matches_float_reference(exported, model_id, fmt, runtime):
    if runtime not in INSTALLED:
        pytest.skip(f"runtime {runtime} is not installed here")
    manifest = ModelManifest.read(exported(model_id))
    assert fmt in manifest.files, f"{model_id} ships no {fmt} file"
    with np.load(manifest.files["parity"].path, allow_pickle=False) as z:
        X, ref = z["X"], z["outputs"].astype(np.float64)
    out = load(manifest.files[fmt], runtime).predict(X)
    assert out.shape == ref.shape and out.dtype == np.float32
    span = _outputs_range(ref, manifest.task)
    err = np.abs(out - ref)
    if fmt.endswith("int8"):
        assert err.mean() <= INT8_MEAN_ERR * span, f"mean error {err.mean():.4g} over {span:.3g}"
    else:
        assert err.max() <= FLOAT_ATOL * span, f"max error {err.max():.3g}"
    if manifest.task == "classification" or manifest.decision:
        agree = np.mean(manifest.decide(out) == manifest.decide(ref))
        assert agree >= DECISION_AGREEMENT, f"decisions agree on {agree:.2%} of {len(X)} rows"


@pytest.mark.parametrize("model_id", MODELS)
def test_runtimes_take_the_same_decisions(exported, model_id):
    manifest = ModelManifest.read(exported(model_id))
    if manifest.task != "classification" and not manifest.decision:
        pytest.skip("a regression without a decision threshold takes no decision")
    with np.load(manifest.files["parity"].path, allow_pickle=False) as z:
        X = z["X"]
    decisions = {
        f"{fmt}/{rt}": load(manifest.files[fmt], rt).decide(X)
        for fmt, rt in RUNS
        if rt in INSTALLED and fmt in manifest.files
    }
    assert len(decisions) >= 3
    names = sorted(decisions)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            agree = np.mean(decisions[a] == decisions[b])
            assert agree >= DECISION_AGREEMENT, f"{a} and {b} agree on {agree:.2%}"


def test_numpy_reference_is_the_sklearn_model_exactly(exported):
    """The dense network read from sklearn (scaling folded in) is the model itself, to float32 rounding."""
    for name in SYNTHETIC:
        model, _ = fit_synthetic(name)
        X = synthetic_data()[0][2000:]
        manifest = ModelManifest.read(exported(f"synthetic:{name}"))
        ref = model.predict_proba(X) if manifest.task == "classification" else model.predict(X).reshape(-1, 1)
        np.testing.assert_allclose(load(manifest.files["numpy"]).predict(X), ref, atol=2e-5 * max(1, np.ptp(ref)))


@pytest.mark.parametrize("name", SHIPPED or ["(none shipped yet)"])
def test_shipped_model_is_complete_and_small(name):
    if not SHIPPED:
        pytest.skip("no model in models/ yet")
    manifest = ModelManifest.read(REPO / "models" / name)
    assert set(FORMAT_RUNTIMES) <= set(manifest.files), f"{name} lacks {set(FORMAT_RUNTIMES) - set(manifest.files)}"
    for entry in manifest.files.values():
        assert entry.path.stat().st_size <= MAX_SHIPPED_FILE_BYTES, f"{entry.path} is over 64 KB"
