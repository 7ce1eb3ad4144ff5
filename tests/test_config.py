"""Gateway config files: shipped configs validate, broken ones say what and where, the CLI exits right."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.cli import main
from gateway.config import ConfigError, GatewayConfig, MnfModel, Problem, ReplaySensor, load_config, load_config_text
from gateway.config.yaml_lines import load_yaml_text

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "firmware_configs").glob("*.yaml"))
BROKEN = sorted((Path(__file__).parent / "configs" / "broken").glob("*.yaml"))
DEMO = ROOT / "firmware_configs" / "net3-demo.yaml"

MINIMAL = """\
site: s1
gateway: gw-1
sensors:
  - {id: F-1, quantity: flow, driver: replay}
sources:
  replay: {file: data.npz}
mqtt:
  host: 127.0.0.1
"""


def problems_of(text: str, name: str = "gw.yaml") -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, name)
    return caught.value.problems


# ---- shipped and broken configs -------------------------------------------------------


def test_there_are_shipped_and_broken_configs():
    assert DEMO in SHIPPED
    assert len(BROKEN) >= 20


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_validates(path):
    config = load_config(path)
    assert config.path == path.absolute()
    assert config.sensors


def _expectations(path: Path) -> list[str]:
    return [
        line.split("# expect: ", 1)[1].rstrip("\n")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("# expect: ")
    ]


def _matches(expected: str, actual: str) -> bool:
    # `...` in an expectation stands for any text (e.g. the full list of known quantities).
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_broken_config_reports_expected_lines(path):
    expected = _expectations(path)
    assert expected, f"{path.name} has no '# expect:' header"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    assert all(p.file == str(path) for p in problems)
    actual = [str(p)[len(f"{path}:") :].lstrip() for p in problems]
    assert len(actual) == len(expected), "\n".join(actual)
    for want, got in zip(expected, actual, strict=True):
        assert _matches(want, got), f"\nwant: {want}\ngot:  {got}"


# ---- the cases technicians hit most ---------------------------------------------------


def test_misspelt_top_level_key_names_file_line_and_suggestion(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(MINIMAL.replace("mqtt:", "mqqt:"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    typo = next(p for p in caught.value.problems if p.key == "mqqt")
    assert (typo.line, typo.suggestion) == (7, "mqtt")
    assert f"{path}:7: mqqt: unknown key, did you mean 'mqtt'?" in str(caught.value).splitlines()


def test_misspelt_quantity_suggests_pressure():
    [problem] = problems_of(MINIMAL.replace("quantity: flow", "quantity: presure"))
    assert (problem.line, problem.key, problem.suggestion) == (4, "sensors[0].quantity", "pressure")


def test_inline_password_is_refused_without_echoing_it():
    [problem] = problems_of(MINIMAL + "  password: hunter2\n")
    assert (problem.line, problem.key) == (9, "mqtt.password")
    assert "password_env" in problem.message and "password_file" in problem.message
    assert "hunter2" not in str(problem)


def test_all_problems_are_reported_not_just_the_first():
    text = MINIMAL.replace("gw-1", "gw 1").replace("127.0.0.1", "127.0.0.1\n  port: 0\n  keepalive: 5")
    keys = [p.key for p in problems_of(text)]
    assert keys == ["gateway", "mqtt.port", "mqtt.keepalive"]


def test_cross_section_checks_run_even_when_fields_are_wrong():
    text = MINIMAL + "  port: abc\nmodels:\n  - {name: m, type: mnf, zone_inflow: [{sensor: F-2}]}\n"
    problems = {p.key: p for p in problems_of(text)}
    assert problems["models[0].zone_inflow[0].sensor"].suggestion == "F-1"
    assert problems["models[0].zone_inflow[0].sensor"].line == 11
    assert "mqtt.port" in problems


def test_yaml_syntax_error_has_file_and_line():
    [problem] = problems_of(MINIMAL.replace("host: 127.0.0.1", "host: [127.0.0.1"))
    assert problem.line is not None and problem.line >= 8
    assert str(problem).startswith(f"gw.yaml:{problem.line}: invalid YAML")


def test_not_utf8_is_reported_with_its_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(MINIMAL.replace("site: s1", "site: s\xe9").encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.line == 1 and "UTF-8" in problem.message


# ---- what a loaded config gives its users ---------------------------------------------


def test_defaults_come_from_the_schema():
    config = load_config_text(MINIMAL)
    assert config.timezone == "UTC" and config.models == []
    assert (config.mqtt.port, config.mqtt.keepalive_s, config.mqtt.readings_batch) == (1883, 30, 50)
    assert config.mqtt.client_id == "frugalsense-gw-1"
    assert config.mqtt.topic_prefix == "frugalsense"
    assert config.storage.outbox_max_mb == 64
    sensor = config.sensors[0]
    assert isinstance(sensor, ReplaySensor) and (sensor.unit, sensor.column) == ("L/s", "F-1")
    assert config.sources.replay.speed == 0


def test_demo_config_resolves_paths_and_detector_parameters():
    config = load_config(DEMO)
    assert config.resolve_path(config.sources.replay.file) == ROOT / ".run" / "demo" / "net3-leak.npz"
    model = next(m for m in config.models if isinstance(m, MnfModel))
    params = model.detector_params(config.timezone)
    assert params["zone_inflow"] == [("F-lake", 1), ("F-river", 1), ("F-tank1", 1), ("F-tank2", 1), ("F-tank3", 1)]
    assert (params["night_start"], params["night_end"], params["timezone"]) == ("02:00", "04:00", "UTC")
    assert {s.column for s in config.sensors} >= {"10", "60", "101"}


def test_model_validate_in_code_still_runs_cross_section_checks():
    data = {
        "site": "s",
        "gateway": "g",
        "mqtt": {"host": "h"},
        "sensors": [{"id": "F", "quantity": "flow", "driver": "replay"}],
    }
    with pytest.raises(ValidationError, match="sources.replay"):
        GatewayConfig.model_validate(data)


def test_yaml_keeps_times_and_words_as_typed():
    doc = load_yaml_text("a: 22:00\nb: no\nc: 010\nd: 1_000\non: true\n")
    assert doc.data == {"a": "22:00", "b": "no", "c": "010", "d": 1000, "on": True}


# ---- the command ----------------------------------------------------------------------


def test_cli_valid_config_exits_0(capsys):
    assert main(["config", "validate", str(DEMO)]) == 0
    assert capsys.readouterr().out == f"{DEMO}: ok (10 sensors, 2 models)\n"


def test_cli_invalid_config_exits_1_without_traceback(capsys):
    path = next(p for p in BROKEN if p.stem == "mqqt-misspelt")
    assert main(["config", "validate", str(DEMO), str(path)]) == 1
    out, err = capsys.readouterr()
    assert f"{DEMO}: ok" in out
    assert f"{path}:22: mqqt: unknown key, did you mean 'mqtt'?" in err.splitlines()
    assert "Traceback" not in out + err


def test_cli_unreadable_file_exits_2(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    bad = next(p for p in BROKEN if p.stem == "port-out-of-range")
    assert main(["config", "validate", str(bad), str(missing), str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert f"{missing}: cannot read the file: No such file or directory" in err.splitlines()
    assert f"{tmp_path}: cannot read the file" in err
    assert "Traceback" not in out + err


def test_cli_verbose_shows_traceback(capsys):
    path = next(p for p in BROKEN if p.stem == "port-out-of-range")
    assert main(["--verbose", "config", "validate", str(path)]) == 1
    assert "Traceback" in capsys.readouterr().err


# ---- bad input never crashes ----------------------------------------------------------


@settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mangled_demo_config_gives_config_error_or_config(data):
    text = DEMO.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    action = data.draw(st.sampled_from(["drop_line", "replace_char", "insert_text"]))
    i = data.draw(st.integers(0, len(lines) - 1))
    if action == "drop_line":
        del lines[i]
    elif action == "replace_char":
        j = data.draw(st.integers(0, max(len(lines[i]) - 1, 0)))
        char = data.draw(st.sampled_from(list(":-{}[]\"'#&*!|>%@`\t ,?0aZ\x00")))
        lines[i] = lines[i][:j] + char + lines[i][j + 1 :]
    else:
        lines.insert(i, data.draw(st.text(max_size=30)) + "\n")
    try:
        load_config_text("".join(lines), "mangled.yaml")
    except ConfigError as exc:
        assert exc.problems and all(str(p).startswith("mangled.yaml:") for p in exc.problems)
