"""The export registry: what it writes, that it is deterministic, and how it refuses bad requests."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from edge.runtime import load, load_model
from edge.runtime.manifest import InputError, ManifestError, ModelManifest, sha256_file
from training.export import EXPORTERS, ExportError, ExportWarning, UnsupportedModelError, export_model

FEATURES = ["night_flow", "dp_head", "ratio"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 3)) * [2.0, 0.5, 0.1] + [40.0, 1.0, 5.0]
    y = ((X[:, 0] - 40) / 2 + (X[:, 1] - 1) / 0.5 > 0.5).astype(int)
    return X, y


@pytest.fixture(scope="module")
def logreg(data):
    X, y = data
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)


def test_registry_names_the_four_formats():
    assert list(EXPORTERS) == ["onnx_float", "onnx_int8", "tflite_int8", "numpy"]


def test_manifest_describes_every_file(tmp_path, data, logreg):
    X, _ = data
    m = export_model(logreg, X, tmp_path, "leak_lr", 3, feature_names=FEATURES, description="demo")
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert (raw["name"], raw["version"], raw["task"]) == ("leak_lr", "3", "classification")
    assert raw["input"]["features"] == FEATURES and raw["input"]["shape"] == [None, 3]
    scaler = logreg[0]
    np.testing.assert_allclose(raw["input"]["scaling"]["mean"], scaler.mean_)
    np.testing.assert_allclose(raw["input"]["scaling"]["scale"], scaler.scale_)
    assert raw["output"] == {
        "kind": "probabilities",
        "names": ["0", "1"],
        "shape": [None, 2],
        "decision": {"kind": "argmax"},
    }
    assert set(raw["files"]) == {*EXPORTERS, "parity"}
    for entry in m.files.values():
        assert entry.sha256 == sha256_file(entry.path) and entry.bytes == entry.path.stat().st_size
    q = raw["files"]["tflite_int8"]
    assert set(q["input_quant"]) == {"scale", "zero_point"} and -128 <= q["output_quant"]["zero_point"] <= 127
    assert raw["network"] == {"layers": [[3, 1, "logistic"]], "parameters": 4}
    assert raw["export_check"]["tflite_int8"]["decision_agreement"] >= 0.99


def test_export_is_deterministic(tmp_path, data, logreg):
    X, _ = data
    a = export_model(logreg, X, tmp_path / "a", "leak_lr", 1)
    b = export_model(logreg, X, tmp_path / "b", "leak_lr", 1)
    assert {k: f.sha256 for k, f in a.files.items()} == {k: f.sha256 for k, f in b.files.items()}


def test_tflite_file_is_full_int8(tmp_path, data, logreg):
    from ai_edge_litert.interpreter import Interpreter

    X, _ = data
    m = export_model(logreg, X, tmp_path, "leak_lr", 1, formats=["tflite_int8"])
    it = Interpreter(model_path=str(m.files["tflite_int8"].path))
    types = {
        d["dtype"] for d in it.get_tensor_details() if d["name"].endswith(("out", "logistic", "features", "weight"))
    }
    assert types == {np.int8}
    assert it.get_input_details()[0]["dtype"] == np.int8 and it.get_output_details()[0]["dtype"] == np.int8


def test_regression_with_threshold_decides(tmp_path, data):
    X, _ = data
    reg = Ridge().fit(X, X[:, 0] * 0.1)
    m = export_model(reg, X, tmp_path, "leak_flow", 1, output_names=["leak_flow_lps"], decision_threshold=4.0)
    out = load(m.files["numpy"]).predict(X[:4])
    np.testing.assert_allclose(out[:, 0], reg.predict(X[:4]), rtol=1e-5)
    assert m.decide(out).tolist() == (reg.predict(X[:4]) >= 4.0).astype(int).tolist()


def test_non_dense_model_exports_onnx_float_only(tmp_path, data):
    X, y = data
    gb = GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0).fit(X, y)
    with pytest.raises(UnsupportedModelError, match="tflite_int8 needs a dense model"):
        export_model(gb, X, tmp_path / "all", "gb", 1, formats=["tflite_int8"])
    m = export_model(gb, X, tmp_path / "f", "gb", 1, formats=["onnx_float"])
    np.testing.assert_allclose(load_model(m).predict(X[:50]), gb.predict_proba(X[:50]), atol=1e-5)


def test_int8_that_strays_is_flagged(tmp_path, data):
    """An MLP fitted on unscaled features carries large offsets that int8 cannot resolve: export warns."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1500, 4)) * [1.0, 1.0, 10.0, 3.0] + [0.0, 0.0, 300.0, 10.0]
    y = (X[:, 0] + X[:, 1] - 0.5 * X[:, 0] * X[:, 3] / 10 > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=300, random_state=0).fit(X, y)
    with pytest.warns(ExportWarning, match="StandardScaler"):
        export_model(mlp, X, tmp_path, "unscaled", 1, formats=["tflite_int8", "numpy"])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"name": "bad name"}, "model name"),
        ({"formats": ["onnx_float", "keras"]}, "unknown format"),
        ({"feature_names": ["a", "b"]}, "feature_names must be 3"),
        ({"decision_threshold": 0.5}, "decision_threshold is for regressions"),
    ],
)
def test_bad_requests_are_refused(tmp_path, data, logreg, kwargs, message):
    X, _ = data
    args = {"name": "leak_lr", **kwargs}
    with pytest.raises(ExportError, match=message):
        export_model(logreg, X, tmp_path, args.pop("name"), 1, **args)


def test_unfitted_model_is_refused(tmp_path, data):
    with pytest.raises(UnsupportedModelError, match="not fitted"):
        export_model(LogisticRegression(), data[0], tmp_path, "x", 1)


def test_runtime_refuses_bad_rows_with_a_clear_error(tmp_path, data, logreg):
    m = export_model(logreg, data[0], tmp_path, "leak_lr", 1, feature_names=FEATURES)
    for fmt in m.formats:
        model = load(m.files[fmt])
        with pytest.raises(InputError, match=r"expects 3 features \(night_flow, dp_head, ratio\), got 2"):
            model.predict([[1.0, 2.0]])
        with pytest.raises(InputError, match="feature 'ratio' is not a finite number in row 1"):
            model.predict([[40.0, 1.0, 5.0], [40.0, 1.0, np.nan]])
        with warnings.catch_warnings():  # numpy warns of the overflows this provokes
            warnings.simplefilter("ignore", RuntimeWarning)
            for huge in (1e308, 1e200):  # finite, but not once standardised (float64, then float32)
                with pytest.raises(InputError, match="feature 'dp_head' in row 0 .* is far outside the training"):
                    model.predict([[40.0, huge, 5.0]])
            assert np.isfinite(model.predict([[1e25, 1e25, 1e25]])).all()  # squares overflow, values do not
        assert model.predict(np.zeros((0, 3))).shape == (0, 2)


def test_manifest_errors_name_the_problem(tmp_path, data, logreg):
    m = export_model(logreg, data[0], tmp_path, "leak_lr", 1)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    raw["files"]["numpy"]["path"] = "../../etc/passwd"
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="must stay inside the model directory"):
        ModelManifest.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(ManifestError, match="not a readable JSON manifest"):
        ModelManifest.read(tmp_path)
    with pytest.raises(ManifestError, match="no model manifest here"):
        ModelManifest.read(tmp_path / "nowhere")
    assert m.name == "leak_lr"
