"""The model registries: exported models (hashes checked, tampered files refused, the model in service kept), and
the model types of the config schema (each one builds its detector, announces its kind and is documented)."""

from __future__ import annotations

import ast
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from edge.detectors import Detector
from edge.runtime.manifest import ManifestError
from edge.runtime.registry import ModelIntegrityError, ModelRegistry, ModelSlot, ModelSmokeTestError
from gateway.cli import main
from gateway.config import load_config_text
from gateway.config.schema import MODEL_TYPES
from gateway.device.ha_discovery import discovery_messages
from gateway.device.runner import build_detectors
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
    for backend, precision, fmt in (
        ("numpy", "float", "numpy"),
        ("onnxruntime", "float", "onnx_float"),
        ("onnxruntime", "int8", "onnx_int8"),
        ("litert", "int8", "tflite_int8"),
    ):
        model = reg.load("leak_lr", backend=backend, precision=precision)
        assert (model.name, model.format) == (backend, fmt) and model.predict(data[0][:5]).shape == (5, 2)
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
    assert "was leak_lr v1" in caplog.text and "backend auto with precision float" in caplog.text


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


# ---- the model-type registry: one registration per model type, read by runner, discovery, validator, docs --------

REPO = Path(__file__).resolve().parents[1]
AIR_SENSORS = [
    ("PM25", "pm25"),
    ("PM10", "pm10"),
    ("NO2", "no2"),
    ("T", "temperature"),
    ("RH", "humidity"),
    ("WS", "wind_speed"),
    ("CC", "cell_count"),
]
NET3 = [(e, "flow") for e in ("10", "60", "40", "50", "20")] + [
    (e, "pressure") for e in ("101", "123", "141", "173", "247")
]
# model type -> (its sensors, the smallest model entry it takes)
MINIMAL = {
    "mnf": ([("F-in", "flow")], "{name: m, type: mnf, zone_inflow: [{sensor: F-in}]}"),
    "learned_leak": (NET3, "{name: m, type: learned_leak, model_dir: ../models/leak-mlp-net3, backend: numpy}"),
    "eaqi": ([("PM25", "pm25")], "{name: m, type: eaqi, sensors: [PM25]}"),
    "air_pattern": (
        AIR_SENSORS,
        "{name: m, type: air_pattern, model_dir: ../models/air-pattern, backend: numpy, sensors: "
        "{pm25: PM25, pm10: PM10, no2: NO2, temperature: T, humidity: RH, cell_count: CC}}",
    ),
    "sensor_fault": (
        [("PM25", "pm25")],
        "{name: m, type: sensor_fault, model_dir: ../models/air-fault, backend: numpy, sensors: {pm25: PM25}}",
    ),
    "no2_virtual": (
        AIR_SENSORS,
        "{name: m, type: no2_virtual, model_dir: ../models/air-no2-virtual, backend: numpy, sensors: "
        "{cell_count: CC, wind_speed: WS, temperature: T, humidity: RH}}",
    ),
    "calibration_drift": ([("NO2", "no2")], "{name: m, type: calibration_drift, sensor: NO2}"),
    "calibration": (
        [("PM25", "pm25"), ("RH", "humidity"), ("T", "temperature")],
        "{name: m, type: calibration, model_dir: ../models/air-pm25-calibration, backend: numpy, inputs: "
        "{pm25: PM25, humidity: RH, temperature: T}}",
    ),
}


def minimal_config_text(model_type: str) -> str:
    sensors, model = MINIMAL[model_type]
    lines = "".join(f'  - {{id: "{s}", quantity: {q}, driver: replay}}\n' for s, q in sensors)
    return (
        f"site: reg\ngateway: gw-reg\nmqtt: {{host: 127.0.0.1}}\nhomeassistant: {{enabled: true}}\n"
        f"sources: {{replay: {{file: none.npz}}}}\nsensors:\n{lines}models:\n  - {model}\n"
    )


def minimal_config(model_type: str):
    return load_config_text(
        minimal_config_text(model_type), f"{model_type}.yaml", path=REPO / "firmware_configs" / "reg.yaml"
    )


def test_every_registered_model_type_has_a_minimal_config_here():

    assert set(MINIMAL) == set(MODEL_TYPES)


@pytest.mark.parametrize("model_type", sorted(MINIMAL))
def test_every_model_type_builds_its_detector_of_its_detection_kind(model_type):

    cls = MODEL_TYPES[model_type]
    config = minimal_config(model_type)
    [detector] = build_detectors(config)
    assert isinstance(detector, Detector) and isinstance(detector, cls.detector)
    assert detector.kind == cls.detection_kind == cls.detector.kind and detector.model == "m"


@pytest.mark.parametrize("model_type", sorted(MINIMAL))
def test_every_model_type_announces_its_kind_to_home_assistant(model_type):

    cls = MODEL_TYPES[model_type]
    state_topic = f"frugalsense/reg/gw-reg/detections/{cls.detection_kind}"
    messages = dict(discovery_messages(minimal_config(model_type)))
    entities = cls.ha_entities(state_topic)
    if not entities:  # a type that publishes readings (calibration): its virtual sensor is announced as a sensor
        model = minimal_config(model_type).models[0]
        published = model.published_sensors()
        assert published
        for sensor, quantity in published:
            body = json.loads(messages[f"homeassistant/sensor/gw-reg/{sensor}/config"])
            assert body["state_topic"] == f"frugalsense/reg/gw-reg/readings/{sensor}" and quantity in body["name"]
        return
    for component, object_id, _ in entities:
        body = json.loads(messages[f"homeassistant/{component}/gw-reg/{object_id}/config"])
        assert body["state_topic"] == state_topic and body["unique_id"].endswith(f"_{object_id}")


def test_model_types_of_one_kind_tell_home_assistant_the_same():

    by_kind: dict[str, list] = {}
    for cls in MODEL_TYPES.values():
        by_kind.setdefault(cls.detection_kind, []).append(cls.ha_entities("t"))
    for kind, told in by_kind.items():
        assert all(t == told[0] for t in told), kind
    assert len(MODEL_TYPES["mnf"].ha_entities("t")) == 2 and by_kind["leak"][0] == MODEL_TYPES[
        "learned_leak"
    ].ha_entities("t")


@pytest.mark.parametrize("model_type", sorted(MINIMAL))
def test_every_model_type_and_its_kind_are_in_the_config_reference(model_type):

    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    part = text.split(f"### `type: {model_type}`\n", 1)[1].split("\n### ", 1)[0]
    assert f"Detection kind: `{MODEL_TYPES[model_type].detection_kind}`" in part


def test_config_validate_builds_the_detectors_and_says_which_one_fails(tmp_path, capsys):

    good = tmp_path / "good.yaml"
    good.write_text(minimal_config_text("sensor_fault").replace("../models/", f"{REPO}/models/"))
    assert main(["config", "validate", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    (tmp_path / "empty-model").mkdir()
    bad.write_text(minimal_config_text("sensor_fault").replace("../models/air-fault", str(tmp_path / "empty-model")))
    assert main(["config", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:9: models[0] (m): cannot build its detector:" in err and "no exported model here" in err


def test_the_schema_modules_import_no_module_that_imports_them_back():
    schema = REPO / "gateway" / "config" / "schema"
    graph = {}
    for path in schema.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):  # every import, TYPE_CHECKING ones too
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            deps |= {n.rsplit(".", 1)[-1] for n in names if n.startswith("gateway.config.schema.")}
        graph[path.stem] = deps & {p.stem for p in schema.glob("*.py")} - {path.stem}

    def reaches(start, goal, seen=()):
        return any(d == goal or (d not in seen and reaches(d, goal, (*seen, d))) for d in graph[start])

    assert [m for m in graph if m != "__init__" and reaches(m, m)] == []
