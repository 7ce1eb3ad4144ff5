"""The YAML limits: an alias bomb and a file over 1 MB are refused with a clear error; ordinary aliases still load."""

from __future__ import annotations

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load_config, load_config_text
from gateway.config.yaml_lines import MAX_ALIAS_NODES, MAX_BYTES, YamlSyntaxError, load_yaml_text

HEAD = "site: s\ngateway: g\nmqtt: {host: 127.0.0.1}\n"


def alias_bomb(levels: int = 9, fan: int = 9) -> str:
    """The billion laughs: nine levels of nine aliases each (9**9 = 387 million strings once expanded)."""
    lines = [f"lol0: &lol0 [{', '.join(['lol'] * fan)}]"]
    lines += [f"lol{k}: &lol{k} [{', '.join([f'*lol{k - 1}'] * fan)}]" for k in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_the_line_where_it_passes_the_limit():
    with pytest.raises(YamlSyntaxError) as caught:
        load_yaml_text(alias_bomb())
    assert caught.value.line == 3  # lol2: nine aliases of lol1, each 1 + 9 * 10 nodes
    assert f"aliases (*name) would add more than {MAX_ALIAS_NODES} nodes to this file" in caught.value.message
    assert "alias bomb" in caught.value.message


def test_config_validate_refuses_an_alias_bomb_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(HEAD + alias_bomb())
    assert main(["config", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:6: aliases (*name) would add more than {MAX_ALIAS_NODES} nodes")


def test_the_alias_limit_counts_expanded_nodes_not_aliases():
    hundred = f"a: &a [{', '.join(['x'] * 99)}]\n"  # one sequence and its 99 items: 100 nodes
    fits = hundred + f"b: [{', '.join(['*a'] * (MAX_ALIAS_NODES // 100))}]\n"
    assert len(load_yaml_text(fits).data["b"]) == MAX_ALIAS_NODES // 100
    with pytest.raises(YamlSyntaxError, match="would add more than"):
        load_yaml_text(hundred + f"b: [{', '.join(['*a'] * (MAX_ALIAS_NODES // 100 + 1))}]\n")


def test_a_config_with_a_few_aliases_and_merges_still_loads():
    text = (
        HEAD
        + """\
sensors:
  - &meter {id: F-inlet, quantity: flow, driver: modbus_rtu, port: &port /dev/ttyUSB0, baudrate: 9600,
            parity: E, device_id: 1, function: 4, address: 3, data_type: float32, register_unit: m3/h}
  - <<: *meter
    id: F-export
    device_id: 2
  - {id: P-inlet, quantity: pressure, driver: modbus_rtu, port: *port, baudrate: 9600, parity: E,
     device_id: 10, address: 0, data_type: int16, register_unit: mbar}
models:
  - name: mnf-leak
    type: mnf
    zone_inflow: [{sensor: F-inlet}, {sensor: F-export, sign: -1}]
    night_start: &start "02:00"
  - name: mnf-inlet
    type: mnf
    zone_inflow: [{sensor: F-inlet}]
    night_start: *start
"""
    )
    config = load_config_text(text, "aliases.yaml", build_detectors=True)
    inlet, export, pressure = config.sensors
    assert (export.id, export.device_id, export.address, export.port) == ("F-export", 2, 3, inlet.port)
    assert str(pressure.port) == "/dev/ttyUSB0" and config.models[1].night_start == "02:00"


def test_a_file_over_one_megabyte_is_refused_unparsed(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text(HEAD + "# padding\n" * (MAX_BYTES // 10 + 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert str(problem) == (
        f"{path}:1: the file is 1.0 MB; a gateway config is at most 1 MB (a few kB is usual): is this the right file?"
    )
    assert main(["config", "validate", str(path)]) == 1
    assert "is at most 1 MB" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="is at most 1 MB"):
        load_config_text(path.read_text(), "huge.yaml")  # text given directly is held to the same limit
