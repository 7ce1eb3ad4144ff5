"""A model whose inputs have no sensor is refused at its line, naming them, by `config validate` and `run` alike.

One test per model type: a config that validates, then the same config with one of the
model's sensors gone. The message must give FILE:LINE of the model's entry (or of the
key naming the missing sensor) and name what is missing; the service must refuse the
same config with the same words, before it opens anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.datasets import ZoneDataset
from gateway.cli import main
from gateway.config import ConfigError, load_config
from gateway.config.schema import MODEL_TYPES

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
NET3_DEMO = ROOT / "firmware_configs" / "net3-demo.yaml"

NET3 = [("F-10", "flow", "10"), ("F-60", "flow", "60"), ("F-40", "flow", "40"), ("F-50", "flow", "50")]
NET3 += [("F-20", "flow", "20")] + [(f"P-{e}", "pressure", e) for e in ("101", "123", "141", "173", "247")]
AIR = [
    ("PM25", "pm25"),
    ("PM10", "pm10"),
    ("NO2", "no2"),
    ("NO2-ref", "no2"),
    ("T", "temperature"),
    ("RH", "humidity"),
    ("WS", "wind_speed"),
    ("CC", "cell_count"),
]

# model type -> (its sensors, its model entry in block style, the sensors taken away, where the message points
# (a text on the line it must name), the words it must hold)
CASES = {
    "mnf": (
        [("F-in", "flow"), ("F-out", "flow")],
        """\
  - name: mnf-zone
    type: mnf
    zone_inflow:
      - sensor: F-in
      - sensor: F-out
        sign: -1
""",
        ["F-out"],
        "      - sensor: F-out",
        ["models[0].zone_inflow[1].sensor", "no sensor with id 'F-out' in sensors"],
    ),
    "learned_leak": (
        NET3,
        f"""\
  - name: leak-ml
    type: learned_leak
    model_dir: {MODELS / "leak-mlp-net3"}
""",
        ["P-141", "P-247"],
        "  - name: leak-ml",
        ["models[0] (leak-ml): model leak-mlp-net3 needs pressure at 141, 247", "no sensor in `sensors` measures"],
    ),
    "eaqi": (
        AIR,
        """\
  - name: eaqi-centre
    type: eaqi
    sensors:
      - PM25
      - NO2
""",
        ["NO2", "NO2-ref"],
        "      - NO2",
        ["models[0].sensors[1]", "no sensor with id 'NO2' in sensors"],
    ),
    "air_pattern": (
        AIR,
        f"""\
  - name: pattern
    type: air_pattern
    model_dir: {MODELS / "air-pattern"}
    sensors:
      pm25: PM25
      pm10: PM10
      no2: NO2
      temperature: T
      humidity: RH
      cell_count: CC
""",
        ["CC"],
        "      cell_count: CC",
        ["models[0].sensors.cell_count", "no sensor with id 'CC' in sensors"],
    ),
    "sensor_fault": (
        AIR,
        f"""\
  - name: faults
    type: sensor_fault
    model_dir: {MODELS / "air-fault"}
    sensors:
      pm25: PM25
      humidity: RH
""",
        ["RH"],
        "      humidity: RH",
        ["models[0].sensors.humidity", "no sensor with id 'RH' in sensors"],
    ),
    "no2_virtual": (
        AIR,
        f"""\
  - name: no2-virtual
    type: no2_virtual
    model_dir: {MODELS / "air-no2-virtual"}
    sensors:
      cell_count: CC
      wind_speed: WS
      temperature: T
      humidity: RH
""",
        ["WS"],
        "      wind_speed: WS",
        ["models[0].sensors.wind_speed", "no sensor with id 'WS' in sensors"],
    ),
    "calibration": (
        AIR,
        f"""\
  - name: pm25-cal
    type: calibration
    model_dir: {MODELS / "air-pm25-calibration"}
    inputs:
      pm25: PM25
      humidity: RH
      temperature: T
""",
        ["RH"],
        "      humidity: RH",
        ["models[0].inputs.humidity", "no sensor with id 'RH' in sensors"],
    ),
    "calibration_drift": (
        AIR,
        """\
  - name: no2-drift
    type: calibration_drift
    sensor: NO2
    reference: NO2-ref
""",
        ["NO2-ref"],
        "    reference: NO2-ref",
        ["models[0].reference", "no sensor with id 'NO2-ref' in sensors"],
    ),
}


def config_text(sensors, model: str, without=()) -> str:
    lines = []
    for sensor in sensors:
        sid, quantity, column = (*sensor, sensor[0])[:3]
        if sid not in without:
            lines.append(f'  - {{id: {sid}, quantity: {quantity}, driver: replay, column: "{column}"}}\n')
    return (
        "site: inputs\ngateway: gw-inputs\nmqtt: {host: 127.0.0.1}\n"
        f"sources: {{replay: {{file: zone.npz}}}}\nsensors:\n{''.join(lines)}models:\n{model}"
    )


def line_of(text: str, marker: str) -> int:
    [line] = [n for n, line in enumerate(text.splitlines(), 1) if line.rstrip() == marker]
    return line


def test_every_model_type_has_a_missing_input_case():
    assert set(CASES) == set(MODEL_TYPES)


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_a_model_whose_input_sensor_is_gone_is_refused_at_its_line_naming_it(model_type, tmp_path, capsys):
    sensors, model, without, marker, words = CASES[model_type]
    good = tmp_path / "good.yaml"
    good.write_text(config_text(sensors, model))
    assert main(["config", "validate", str(good)]) == 0, capsys.readouterr().err
    capsys.readouterr()

    bad = tmp_path / "bad.yaml"
    text = config_text(sensors, model, without)
    bad.write_text(text)
    assert main(["config", "validate", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    [message] = [line for line in err if line.startswith(f"{bad}:{line_of(text, marker)}: ")]
    for word in words:
        assert word in message, message


def test_net3_demo_without_its_pressure_sensors_is_refused_naming_all_five(tmp_path, capsys):
    text = "".join(line for line in NET3_DEMO.read_text().splitlines(True) if "quantity: pressure" not in line)
    config = tmp_path / "net3-no-pressure.yaml"
    config.write_text(text.replace("../models/", f"{MODELS}/"))
    assert main(["config", "validate", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{config}:{line_of(text, '  - name: leak-ml')}: models[1] (leak-ml): ")
    assert "model leak-mlp-net3 needs pressure at 101, 123, 141, 173, 247" in err
    assert "add them" in err and "use a model trained without them" in err


def test_learned_leak_inputs_naming_an_absent_sensor_or_leaving_an_element_out(tmp_path):
    mapped = """\
  - name: leak-ml
    type: learned_leak
    model_dir: {dir}
    inputs:
{inputs}"""
    pairs = [(sid, column) for sid, _, column in NET3]
    inputs = "".join(f'      - {{sensor: {sid}, element: "{column}"}}\n' for sid, column in pairs)
    path = tmp_path / "gw.yaml"
    typo = inputs.replace("sensor: P-173,", "sensor: P-17,")
    path.write_text(config_text(NET3, mapped.format(dir=MODELS / "leak-mlp-net3", inputs=typo)))
    with pytest.raises(ConfigError) as caught:
        load_config(path, build_detectors=True)
    typo_line = line_of(path.read_text(), '      - {sensor: P-17, element: "173"}')
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:{typo_line}: models[0].inputs[8].sensor: no sensor with id 'P-17' in sensors, did you mean 'P-173'?"
    ]

    left_out = "".join(line for line in inputs.splitlines(True) if '"60"' not in line)
    path.write_text(config_text(NET3, mapped.format(dir=MODELS / "leak-mlp-net3", inputs=left_out)))
    with pytest.raises(ConfigError) as caught:
        load_config(path, build_detectors=True)
    [problem] = caught.value.problems
    assert problem.line == line_of(path.read_text(), "  - name: leak-ml")
    assert "needs flow at 60 (the network elements it was trained on)" in problem.message


def tiny_zone(path: Path, sensors) -> Path:
    """A three-step dataset with the sensors' columns: enough for the service to open its replay."""
    ZoneDataset(
        time_ms=np.arange(3, dtype=np.int64) * 900_000,
        values=np.ones((3, len(sensors)), dtype=np.float32),
        columns=[column for _, _, column in sensors],
        quantities=[quantity for _, quantity, _ in sensors],
        units=["L/s" if quantity == "flow" else "m" for _, quantity, _ in sensors],
        leak_flow_lps=np.zeros(3, dtype=np.float32),
    ).save(path)
    return path


def test_the_service_refuses_what_validation_refuses_with_the_same_words(tmp_path, capsys):
    sensors, model, without, marker, _ = CASES["learned_leak"]
    kept = [s for s in sensors if s[0] not in without]
    tiny_zone(tmp_path / "zone.npz", kept)
    config = tmp_path / "gw.yaml"
    config.write_text(config_text(sensors, model, without) + f"storage: {{data_dir: {tmp_path / 'data'}}}\n")
    assert main(["config", "validate", str(config)]) == 1
    validated = capsys.readouterr().err.strip()

    assert main(["run", str(config), "--drain-timeout", "0"]) == 1
    ran = capsys.readouterr().err
    assert validated and validated in ran and "Traceback" not in ran
    assert not (tmp_path / "data").exists()  # refused before the outbox was opened


def test_a_calibration_input_of_the_manifest_left_unmapped_is_refused_at_the_model(tmp_path, capsys):
    sensors, model, _, _, _ = CASES["calibration"]
    text = config_text(sensors, model.replace("      humidity: RH\n", ""))
    config = tmp_path / "cal.yaml"
    config.write_text(text)
    assert main(["config", "validate", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{config}:{line_of(text, '  - name: pm25-cal')}: models[0] (pm25-cal): "), err
    assert "reads pm25, humidity, temperature; no sensor is given for humidity" in err
