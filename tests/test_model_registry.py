"""The model registry: hashes checked before loading, tampered files refused, the model in service kept."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from edge.runtime.manifest import ManifestError
from edge.runtime.registry import ModelIntegrityError, ModelRegistry, ModelSlot, ModelSmokeTestError
from training.export import export_model


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(800, 3)) * [2.0, 0.5, 0.1] + [40.0, 1.0, 5.0]
    y = ((X[:, 0] - 40) / 2 - (X[:, 2] - 5) / 0.1 > 0).astype(int)
    return X, y


@pytest.fixture(scope="module")
def exported(tmp_path_factory, data):
    """Two versions of one model exported once; tests copy them into their own models/ tree."""
    X, y = data
    root = tmp_path_factory.mktemp("exports")
    for version, C in (("1", 1.0), ("2", 0.1)):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C)).fit(X, y)
        export_model(model, X, root / f"v{version}", "leak_lr", version)
    return root


@pytest.fixture
def models(tmp_path, exported):
    root = tmp_path / "models"
    shutil.copytree(exported / "v1", root / "leak_lr")
    return root


def _flip_a_byte(path, offset=-20):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_registry_lists_and_loads_verified_models(models, data):
    reg = ModelRegistry(models)
    assert reg.names() == ["leak_lr"]
    for backend in ("numpy", "onnxruntime", "litert"):
        model = reg.load("leak_lr", backend=backend)
        assert model.name == backend and model.predict(data[0][:5]).shape == (5, 2)
    with pytest.raises(ManifestError, match=r"no model 'leak_mlp' in .*models there: leak_lr"):
        reg.manifest("leak_mlp")


def test_tampered_byte_is_refused_with_file_and_both_hashes(models):
    reg = ModelRegistry(models)
    target = reg.manifest("leak_lr").files["tflite_int8"]
    _flip_a_byte(target.path)
    with pytest.raises(ModelIntegrityError) as err:
        reg.load("leak_lr", backend="numpy")  # even a backend that would not read the file
    e = err.value
    assert e.path == target.path and e.expected == target.sha256 and e.actual != e.expected
    assert str(target.path) in str(e) and e.expected in str(e) and e.actual in str(e)


def test_missing_file_is_refused(models):
    (models / "leak_lr" / "leak_lr.npz").unlink()
    with pytest.raises(ModelIntegrityError, match="the file is missing"):
        ModelRegistry(models).verify("leak_lr")


def test_slot_keeps_the_previous_model_when_the_new_one_is_tampered(tmp_path, exported, data, caplog):
    X, _ = data
    slot = ModelSlot(X[:8])
    v1 = slot.swap(exported / "v1")
    before = slot.predict(X[:20])
    candidate = tmp_path / "v2"
    shutil.copytree(exported / "v2", candidate)
    _flip_a_byte(candidate / "leak_lr.int8.onnx", offset=len((candidate / "leak_lr.int8.onnx").read_bytes()) // 2)
    with caplog.at_level(logging.ERROR, logger="edge.runtime.registry"):
        with pytest.raises(ModelIntegrityError, match="leak_lr.int8.onnx does not match its manifest"):
            slot.swap(candidate)
    assert slot.active is v1 and slot.active.manifest.version == "1"
    np.testing.assert_array_equal(slot.predict(X[:20]), before)
    assert "leak_lr v1 stays in service" in caplog.text
    assert isinstance(slot.last_error, ModelIntegrityError)


def test_slot_swaps_in_a_verified_model(exported, data, caplog):
    X, _ = data
    slot = ModelSlot(X[:8])
    with pytest.raises(ManifestError, match="no model in service yet"):
        slot.decide(X[:1])
    slot.swap(exported / "v1")
    with caplog.at_level(logging.INFO):
        slot.swap(exported / "v2")
    assert slot.active.manifest.version == "2" and slot.decide(X[:3]).shape == (3,)
    assert "was leak_lr v1" in caplog.text and "backend auto picked" in caplog.text


def test_slot_refuses_a_model_that_cannot_score_the_windows(tmp_path, exported, data):
    X, y = data
    slot = ModelSlot(X[:8])
    slot.swap(exported / "v1")
    other = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[:, :2], y)
    export_model(other, X[:, :2], tmp_path / "two", "leak_lr", "3")
    with pytest.raises(ModelSmokeTestError, match="cannot score the smoke-test windows"):
        slot.swap(tmp_path / "two")
    assert slot.active.manifest.version == "1"


def test_slot_refuses_a_consistent_but_wrong_model(tmp_path, exported, data):
    """Weights changed *and* the manifest re-hashed: the hashes pass, the parity rows catch it."""
    from edge.runtime.manifest import sha256_file
    from edge.runtime.numpy_backend import load_network, network_bytes

    X, _ = data
    bad = tmp_path / "bad"
    shutil.copytree(exported / "v1", bad)
    W, b, acts = load_network(bad / "leak_lr.npz")
    (bad / "leak_lr.npz").write_bytes(network_bytes([-w for w in W], b, acts))
    raw = json.loads((bad / "manifest.json").read_text())
    raw["files"]["numpy"]["sha256"] = sha256_file(bad / "leak_lr.npz")
    (bad / "manifest.json").write_text(json.dumps(raw))
    slot = ModelSlot(X[:8], backend="numpy")
    slot.swap(exported / "v1")
    with pytest.raises(ModelSmokeTestError, match="takes the reference decision on only"):
        slot.swap(bad)
    assert slot.active.manifest.version == "1"
