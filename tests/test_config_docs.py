"""docs/config.md is generated from the schema: the committed file must be what the generator writes now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gateway.config.schema import MODEL_TYPES, SENSOR_DRIVERS, GatewayConfig

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_is_what_the_schema_generates():
    assert (ROOT / "docs" / "config.md").read_text(encoding="utf-8") == _generator().render(), (
        "docs/config.md is stale: run python scripts/gen_config_docs.py and commit it"
    )


def test_every_key_of_every_section_driver_and_model_type_is_documented():
    text = _generator().render()
    for driver in SENSOR_DRIVERS:
        assert f"### `driver: {driver}`" in text
    for model_type in MODEL_TYPES:
        assert f"### `type: {model_type}`" in text
    for cls in [GatewayConfig, *SENSOR_DRIVERS.values(), *MODEL_TYPES.values()]:
        for key in cls.model_fields:
            assert f"| `{key}` |" in text, f"{cls.__name__}.{key} is missing from docs/config.md"


def test_allowed_values_come_from_the_schemas_own_checks():
    text = _generator().render()
    assert "| `device_id` | whole number | `1` | must be a whole number between 1 and 247 |" in text
    assert "| `password` | refused |" in text
    assert "must be one of int16, uint16, int32, uint32, float32" in text
