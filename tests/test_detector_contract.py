"""The detector contract: every detector type, built from a config as the gateway builds it, passes the same checks.

In the manner of scikit-learn's ``check_estimator`` and river's estimator checks: one
list of detectors (one per registered model type, each fed a small seeded stream of
its own sensors) and one set of generic checks run over all of them.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edge.contracts import Alert, Detection, Reading
from edge.detectors import Detector, ModelDetector, ModelSwapError
from edge.runtime import load_model
from edge.runtime.manifest import ModelManifest
from edge.runtime.registry import verify
from gateway.config import GatewayConfig, load_config_text
from gateway.config.schema import MODEL_TYPES

REPO = Path(__file__).resolve().parents[1]
SITE, GATEWAY = "contract", "gw-contract"
T0 = 1_772_409_600_000  # 2026-03-02T00:00Z
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
NET3 = ("10", "60", "40", "50", "20")  # the flows of the shipped leak-mlp-net3 model
NET3_P = ("101", "123", "141", "173", "247")
AIR = {
    "pm25": ("PM25", 12.0),
    "pm10": ("PM10", 20.0),
    "no2": ("NO2", 35.0),
    "temperature": ("T", 11.0),
    "humidity": ("RH", 70.0),
    "wind_speed": ("WS", 3.0),
    "cell_count": ("CC", 400.0),
}

SENSORS = "".join(
    [f"  - {{id: F-{e}, quantity: flow, driver: replay, column: '{e}'}}\n" for e in NET3]
    + [f"  - {{id: P-{e}, quantity: pressure, driver: replay, column: '{e}'}}\n" for e in NET3_P]
    + [f"  - {{id: {sensor}, quantity: {q}, driver: replay}}\n" for q, (sensor, _) in AIR.items()]
)
CONFIG = f"""\
site: {SITE}
gateway: {GATEWAY}
mqtt: {{host: 127.0.0.1}}
homeassistant: {{enabled: true}}
sources: {{replay: {{file: none.npz}}}}
sensors:
{SENSORS}models:
  - {{name: mnf, type: mnf, zone_inflow: [{{sensor: F-10}}, {{sensor: F-60}}], raise_after: 1}}
  - {{name: leak-ml, type: learned_leak, model_dir: ../models/leak-mlp-net3, backend: numpy}}
  - {{name: eaqi, type: eaqi, sensors: [PM25, PM10, NO2], raise_after: 1, clear_after: 1}}
  - name: pattern
    type: air_pattern
    model_dir: ../models/air-pattern
    backend: numpy
    sensors: {{pm25: PM25, pm10: PM10, no2: NO2, temperature: T, humidity: RH, cell_count: CC}}
  - name: fault
    type: sensor_fault
    model_dir: ../models/air-fault
    backend: numpy
    sensors: {{pm25: PM25, no2: NO2}}
  - name: no2v
    type: no2_virtual
    model_dir: ../models/air-no2-virtual
    backend: numpy
    sensors: {{cell_count: CC, wind_speed: WS, temperature: T, humidity: RH}}
  - {{name: drift, type: calibration_drift, sensor: NO2, calibration_days: 3, smoothing_days: 1}}
  - name: pm25-cal
    type: calibration
    model_dir: ../models/air-pm25-calibration
    backend: numpy
    inputs: {{pm25: PM25, humidity: RH, temperature: T}}
"""


def contract_config() -> GatewayConfig:
    """One config with a model of every registered type (paths from firmware_configs/, as a shipped config)."""
    return load_config_text(CONFIG, "contract.yaml", path=REPO / "firmware_configs" / "contract.yaml")


def _reading(t: int, sensor: str, quantity: str, value: float, unit: str) -> Reading:
    return Reading(t, SITE, GATEWAY, sensor, quantity, round(float(value), 3), unit)


def water_stream(days: int = 4) -> Iterator[Reading]:
    """15-minute flows and pressures with a daily pattern, a small leak on the last night."""
    rng = np.random.default_rng(7)
    for k in range(days * 96):
        t = T0 + k * 15 * MINUTE
        hour = (k % 96) / 4
        demand = 1.0 + 0.6 * math.sin((hour - 6) / 24 * 2 * math.pi) + (0.3 if k >= (days - 1) * 96 else 0.0)
        for e in NET3:
            yield _reading(t, f"F-{e}", "flow", 20 * demand + rng.normal(0, 0.3), "L/s")
        for e in NET3_P:
            yield _reading(t, f"P-{e}", "pressure", 45 - 3 * demand + rng.normal(0, 0.1), "m")


def air_stream(days: float = 1.5, step_min: int = 10) -> Iterator[Reading]:
    """10-minute air readings with a daily traffic cycle and one NO2 episode."""
    rng = np.random.default_rng(11)
    units = {"temperature": "degC", "humidity": "%", "wind_speed": "m/s", "cell_count": "count"}
    for k in range(int(days * DAY / (step_min * MINUTE))):
        t = T0 + k * step_min * MINUTE
        traffic = 1.0 + 0.5 * math.sin(((t - T0) % DAY) / DAY * 2 * math.pi)
        episode = 4.0 if 16 * HOUR <= t - T0 < 20 * HOUR else 1.0
        for quantity, (sensor, level) in AIR.items():
            scale = traffic * (episode if quantity in ("no2", "pm25") else 1.0)
            yield _reading(t, sensor, quantity, level * scale * rng.uniform(0.95, 1.05), units.get(quantity, "ug/m3"))


def drift_stream(days: int = 6) -> Iterator[Reading]:
    """Daily-cycling NO2 that drifts up after the calibration days."""
    rng = np.random.default_rng(5)
    for k in range(days * 144):
        t = T0 + k * 10 * MINUTE
        drift = 25.0 * max(0, (t - T0) // DAY - 3)
        yield _reading(t, "NO2", "no2", 30 + 10 * math.sin(k / 144 * 2 * math.pi) + drift + rng.normal(0, 1), "ug/m3")


STREAMS: dict[str, Callable[[], Iterator[Reading]]] = {
    "mnf": water_stream,
    "learned_leak": water_stream,
    "eaqi": air_stream,
    "air_pattern": air_stream,
    "sensor_fault": air_stream,
    "no2_virtual": air_stream,
    "calibration_drift": drift_stream,
    "calibration": air_stream,
}


def build(model_type: str) -> Detector:
    config = contract_config()
    [model] = [m for m in config.models if m.type == model_type]
    return model.build_detector(config)


def run(detector: Detector, readings) -> list[Detection | Alert]:
    out = [o for r in readings for o in detector.update(r)]
    return out + detector.flush()


def other_backend(detector: ModelDetector):
    """A loaded backend of another model than the detector's."""
    name = "air-fault" if detector.model_name != "air-fault" else "air-pattern"
    return load_model(verify(ModelManifest.read(REPO / "models" / name)), "numpy")


@pytest.fixture(scope="module", params=sorted(MODEL_TYPES))
def case(request):
    """(detector, its stream, its outputs on that stream), built once per model type."""
    detector = build(request.param)
    return request.param, detector, run(detector, STREAMS[request.param]())


def test_every_registered_model_type_has_a_contract_stream():
    assert set(STREAMS) == set(MODEL_TYPES)


def test_is_a_detector_of_its_kind_and_emits_only_that_kind(case):
    model_type, detector, outputs = case
    assert isinstance(detector, Detector) and detector.kind
    assert detector.kind == MODEL_TYPES[model_type].detection_kind
    assert outputs, f"{model_type}: the contract stream gave no output"
    derived = [o for o in outputs if isinstance(o, Reading)]  # a calibration's readings, of its virtual sensor
    assert {o.sensor for o in derived} <= {getattr(detector, "sensor", None)}
    assert {o.kind for o in outputs if not isinstance(o, Reading)} == (
        {detector.kind} if len(derived) < len(outputs) else set()
    )


def test_outputs_validate_and_carry_who_and_which_model(case):
    _, detector, outputs = case
    for out in outputs:
        out.validate()
        if isinstance(out, Reading):
            assert (out.site, out.gateway) == (SITE, GATEWAY)
            continue
        assert isinstance(out, Detection | Alert)
        assert (out.site, out.gateway, out.model_version) == (SITE, GATEWAY, detector.model_version)
        assert out.model == detector.model or out.model.startswith(f"{detector.model}.")  # per-sensor series


def test_ignores_a_reading_of_an_unknown_sensor(case):
    model_type, _, outputs = case
    detector = build(model_type)
    readings = list(STREAMS[model_type]())
    stray = _reading(readings[len(readings) // 2].time_ms + 30 * DAY, "X-unknown", "flow", 1.0, "L/s")
    assert detector.update(stray) == []
    half = len(readings) // 2
    mixed = [o for r in readings[:half] for o in detector.update(r)]
    assert detector.update(stray) == []
    mixed += [o for r in readings[half:] for o in detector.update(r)] + detector.flush()
    assert mixed == outputs


def test_flush_returns_a_list(case):
    _, detector, _ = case
    assert isinstance(detector.flush(), list)


def test_reset_then_the_same_stream_gives_the_same_outputs(case):
    model_type, detector, outputs = case
    detector.reset()
    assert run(detector, STREAMS[model_type]()) == outputs


def test_state_is_json_and_restores(case):
    _, detector, _ = case
    state = detector.state()
    assert json.loads(json.dumps(state)) == state
    detector.restore(state)
    assert detector.state() == state


def test_model_name_is_none_iff_use_model_refuses(case):
    model_type, detector, outputs = case
    if detector.model_name is None:
        assert not isinstance(detector, ModelDetector)
        backend = load_model(verify(ModelManifest.read(REPO / "models" / "air-pattern")), "numpy")
        with pytest.raises(ModelSwapError):
            detector.use_model(backend)
        return
    assert isinstance(detector, ModelDetector)
    assert detector.model_name == detector.runtime_.manifest.name
    same = detector.runtime_
    detector.use_model(same)  # the same model again: accepted, outputs unchanged
    detector.reset()
    assert run(detector, STREAMS[model_type]()) == outputs
    with pytest.raises(ModelSwapError):
        detector.use_model(other_backend(detector))
    assert detector.runtime_ is same  # a refused model never replaces the running one


def test_a_new_version_of_the_same_model_is_taken_and_named_in_the_outputs(case, tmp_path):
    model_type, detector, _ = case
    if detector.model_name is None:
        pytest.skip("rule-based: runs no exported model")
    copy = tmp_path / "model"
    shutil.copytree(detector.runtime_.manifest.root, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**raw, "version": "99"}))
    detector.use_model(load_model(verify(ModelManifest.read(copy)), "numpy"))
    detector.reset()
    outputs = run(detector, STREAMS[model_type]())
    assert outputs and detector.model_version == "99"
    assert {o.model_version for o in outputs if not isinstance(o, Reading)} <= {"99"}
