"""The gateway config schema: what a technician may write in ``firmware_configs/*.yaml``.

Defaults live here and only here. Every check raises its own plain-words message (with
a "did you mean" where a name was misspelt) so `validate.py` can show it as is.
Checks that span sections (a model naming a sensor, duplicate ids) are in
``cross_section_issues`` so all of them can be reported at once, each at its own key.

Sensor drivers and model types are registries: a new driver is a ``SensorBase``
subclass with ``driver: Literal["name"]`` decorated with ``@sensor_driver``, defined
before ``GatewayConfig`` is built (i.e. in a module that ``schema/gateway.py`` imports).
A model type is registered once, in ``MODEL_TYPES``, and carries everything known
about it: its keys, its detector (``build_detector``), its detection kind and its
Home Assistant entities (``model_base``).

The modules: ``types`` (value checks), ``base`` (Section, union helpers),
``sensors`` and ``air_sensors`` (drivers, ``SENSOR_DRIVERS``), ``model_base``
(``ModelBase``, ``MODEL_TYPES``), ``models`` (model types), ``model_inputs`` (a learned
model's inputs against the config's sensors), ``ha_entities`` (what
Home Assistant is told per kind), ``sections`` (sources, mqtt, storage...),
``gateway`` (GatewayConfig), ``cross_checks``.

>>> cfg = GatewayConfig.model_validate({
...     "site": "net3-north", "gateway": "gw-01", "mqtt": {"host": "127.0.0.1"},
...     "sensors": [{"id": "F-lake", "quantity": "flow", "driver": "replay"}],
...     "sources": {"replay": {"file": "net3.npz"}}})
>>> cfg.mqtt.client_id, cfg.sensors[0].unit, cfg.sensors[0].column
('frugalsense-gw-01', 'L/s', 'F-lake')
"""

from gateway.config.schema.air_sensors import CellCountSensor, LineSensor, Pms5003Sensor, Sds011Sensor
from gateway.config.schema.base import Section
from gateway.config.schema.cross_checks import CrossIssue, cross_section_issues
from gateway.config.schema.gateway import GatewayConfig, ModelConfig, SensorConfig
from gateway.config.schema.model_base import MODEL_TYPES, GatewayView, model_type
from gateway.config.schema.models import (
    AirInputs,
    AirPatternModel,
    CalibrationDriftModel,
    EaqiModel,
    InflowTerm,
    LeakInput,
    LearnedLeakModel,
    MnfModel,
    ModelBase,
    No2VirtualModel,
    SensorFaultModel,
)
from gateway.config.schema.sections import (
    AlertsConfig,
    HomeAssistantConfig,
    ModelUpdatesConfig,
    MqttConfig,
    ReplaySource,
    SourcesConfig,
    StorageConfig,
    TlsConfig,
)
from gateway.config.schema.sensors import SENSOR_DRIVERS, ModbusRtuSensor, ReplaySensor, SensorBase, sensor_driver
from gateway.config.schema.types import (
    CONTEXT_CROSS_CHECKS,
    CONTEXT_PATH,
    ClockTime,
    FilePath,
    Identifier,
    Quantity,
    Text,
    TimeZoneName,
    describe,
    fail,
    format_path,
    number,
    suggest,
    whole,
)

__all__ = [
    "AirInputs",
    "AirPatternModel",
    "CONTEXT_CROSS_CHECKS",
    "CONTEXT_PATH",
    "CalibrationDriftModel",
    "CellCountSensor",
    "ClockTime",
    "CrossIssue",
    "EaqiModel",
    "FilePath",
    "GatewayConfig",
    "GatewayView",
    "AlertsConfig",
    "HomeAssistantConfig",
    "Identifier",
    "InflowTerm",
    "LearnedLeakModel",
    "LeakInput",
    "LineSensor",
    "MODEL_TYPES",
    "MnfModel",
    "ModbusRtuSensor",
    "ModelBase",
    "ModelConfig",
    "ModelUpdatesConfig",
    "MqttConfig",
    "No2VirtualModel",
    "Pms5003Sensor",
    "Quantity",
    "ReplaySensor",
    "ReplaySource",
    "SENSOR_DRIVERS",
    "Sds011Sensor",
    "Section",
    "SensorBase",
    "SensorConfig",
    "SensorFaultModel",
    "SourcesConfig",
    "StorageConfig",
    "Text",
    "TimeZoneName",
    "TlsConfig",
    "cross_section_issues",
    "describe",
    "fail",
    "format_path",
    "model_type",
    "number",
    "sensor_driver",
    "suggest",
    "whole",
]
