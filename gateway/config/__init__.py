"""Gateway config files: the schema technicians write to, and a validator that speaks to them.

Use ``load_config(path)``; it returns a ``GatewayConfig`` or raises ``ConfigError``
whose ``problems`` say ``FILE:LINE: key: what is wrong`` for everything found.
``load_config(path, build_detectors=True)`` also builds every detector as the service
does (``detectors.build_detectors``, the service's own path): a config that passes starts.
The modules: ``yaml_lines`` (YAML with the line of every key, and its limits),
``validate``, ``problems``, ``detectors``, ``yaml_edit`` (a value changed in the text,
for ``flash``) and ``schema/``.
"""

from gateway.config.problems import ConfigError, ConfigUnreadable, Problem
from gateway.config.schema import (
    MODEL_TYPES,
    SENSOR_DRIVERS,
    GatewayConfig,
    InflowTerm,
    MnfModel,
    ModelBase,
    MqttConfig,
    ReplaySensor,
    ReplaySource,
    SensorBase,
    SourcesConfig,
    StorageConfig,
    TlsConfig,
)
from gateway.config.validate import load_config, load_config_text

__all__ = [
    "ConfigError",
    "ConfigUnreadable",
    "GatewayConfig",
    "InflowTerm",
    "MODEL_TYPES",
    "MnfModel",
    "ModelBase",
    "MqttConfig",
    "Problem",
    "ReplaySensor",
    "ReplaySource",
    "SENSOR_DRIVERS",
    "SensorBase",
    "SourcesConfig",
    "StorageConfig",
    "TlsConfig",
    "load_config",
    "load_config_text",
]
