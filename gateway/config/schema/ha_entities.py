"""What Home Assistant is told about each detection kind: the entities a model type announces.

Each function returns ``(component, object_id, body)`` for the entities reading one
detections topic (``state_topic``). ``gateway.device.ha_discovery`` adds what every
entity shares (unique id, device, origin, availability) and publishes them; a model
type picks its entities in its ``ha_entities`` (``model_base.ModelBase``).

>>> [(component, object_id) for component, object_id, _ in leak_entities("t/leak")]
[('binary_sensor', 'leak'), ('sensor', 'leak_excess_flow')]
>>> label_sensor("aqi", "t/aqi")[0][2]["name"]
'aqi detection'
"""

from __future__ import annotations

import re

#: (Home Assistant component, object id, config body without the shared keys)
HaEntity = tuple[str, str, dict]

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")
_ATTRIBUTES = "{{ value_json.explanation | tojson }}"


def object_id(name: str) -> str:
    """``name`` as a Home Assistant object id (letters, digits, ``_`` and ``-`` only)."""
    return _NOT_ALLOWED.sub("_", name)


def label_sensor(kind: str, state_topic: str) -> list[HaEntity]:
    """One sensor showing the latest label of ``kind`` (e.g. the EAQI band), the explanation as attributes."""
    body = {
        "name": f"{kind} detection",
        "state_topic": state_topic,
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": state_topic,
        "json_attributes_template": _ATTRIBUTES,
    }
    return [("sensor", object_id(f"{kind}_label"), body)]


def leak_entities(state_topic: str) -> list[HaEntity]:
    """A leak binary sensor (moisture) and the estimated leak flow, whichever leak detector runs."""
    leak = {
        "name": "Leak",
        "device_class": "moisture",
        "state_topic": state_topic,
        "value_template": "{{ 'ON' if value_json.label == 'leak' else 'OFF' }}",
        "json_attributes_topic": state_topic,
        "json_attributes_template": _ATTRIBUTES,
    }
    flow = {
        "name": "Leak estimated flow",
        "state_topic": state_topic,
        "unit_of_measurement": "L/s",
        "state_class": "measurement",
        "value_template": "{{ value_json.explanation.get('excess_lps', 'None') }}",
    }
    return [("binary_sensor", "leak", leak), ("sensor", "leak_excess_flow", flow)]


def air_pattern_entities(state_topic: str) -> list[HaEntity]:
    """The hour's air pattern (normal, traffic_peak, regional_episode, local_source), probabilities as attributes."""
    body = {
        "name": "Air pattern",
        "icon": "mdi:weather-hazy",
        "state_topic": state_topic,
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": state_topic,
        "json_attributes_template": _ATTRIBUTES,
    }
    return [("sensor", "air_pattern", body)]


def sensor_fault_entities(state_topic: str) -> list[HaEntity]:
    """The latest sensor-fault verdict (ok, stuck, spike, dropout, fan_failure); the sensor is an attribute."""
    body = {
        "name": "Sensor fault",
        "icon": "mdi:alert-circle-check-outline",
        "entity_category": "diagnostic",
        "state_topic": state_topic,
        "value_template": "{{ value_json.label }}",
        "json_attributes_topic": state_topic,
        "json_attributes_template": _ATTRIBUTES,
    }
    return [("sensor", "sensor_fault", body)]


def no2_virtual_entities(state_topic: str) -> list[HaEntity]:
    """The virtual NO2 sensor: its hourly estimate in µg/m³ (unknown while it lacks data)."""
    body = {
        "name": "NO2 (virtual)",
        "device_class": "nitrogen_dioxide",
        "unit_of_measurement": "µg/m³",
        "state_class": "measurement",
        "state_topic": state_topic,
        "value_template": "{{ value_json.score if value_json.label != 'insufficient_data' else 'None' }}",
        "json_attributes_topic": state_topic,
        "json_attributes_template": _ATTRIBUTES,
    }
    return [("sensor", "no2_virtual", body)]


def calibration_entities(state_topic: str) -> list[HaEntity]:
    """A problem binary sensor that is on while a sensor's calibration drifts (recalibration needed)."""
    body = {
        "name": "Recalibration needed",
        "device_class": "problem",
        "entity_category": "diagnostic",
        "state_topic": state_topic,
        "value_template": "{{ 'ON' if value_json.label == 'drifting' else 'OFF' }}",
        "json_attributes_topic": state_topic,
        "json_attributes_template": _ATTRIBUTES,
    }
    return [("binary_sensor", "calibration", body)]


__all__ = [
    "HaEntity",
    "air_pattern_entities",
    "calibration_entities",
    "label_sensor",
    "leak_entities",
    "no2_virtual_entities",
    "object_id",
    "sensor_fault_entities",
]
