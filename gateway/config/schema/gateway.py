"""GatewayConfig, the whole config file: its top-level keys and the checks run once every section is read."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from pydantic import Field, PrivateAttr, ValidationInfo, model_validator

# The driver and model modules fill the registries when imported: before the unions below are built.
import gateway.config.schema.air_sensors  # noqa: F401 - registers its sensor drivers before the union is built
import gateway.config.schema.calibration_model  # noqa: F401 - registers model type calibration
import gateway.config.schema.models  # noqa: F401 - registers the model types before the union is built
from gateway.config.schema.base import Section, tagged_union
from gateway.config.schema.cross_checks import cross_section_issues
from gateway.config.schema.model_base import MODEL_TYPES, ModelBase
from gateway.config.schema.sections import (
    AlertsConfig,
    HomeAssistantConfig,
    ModelUpdatesConfig,
    MqttConfig,
    SourcesConfig,
    StorageConfig,
)
from gateway.config.schema.sensors import SENSOR_DRIVERS, SensorBase
from gateway.config.schema.types import CONTEXT_CROSS_CHECKS, CONTEXT_PATH, Identifier, TimeZoneName, fail, format_path

if TYPE_CHECKING:  # a type checker cannot follow a union built at run time: it sees the base classes
    SensorConfig = SensorBase
    ModelConfig = ModelBase
else:
    SensorConfig = tagged_union(SENSOR_DRIVERS, "driver")
    ModelConfig = tagged_union(MODEL_TYPES, "type")


class GatewayConfig(Section):
    """One gateway: where it is, what it reads, what it runs, where it sends."""

    site: Identifier
    gateway: Identifier
    timezone: TimeZoneName = "UTC"  # night windows are in this local time
    sensors: list[SensorConfig] = Field(min_length=1)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    models: list[ModelConfig] = Field(default_factory=list)
    mqtt: MqttConfig
    storage: StorageConfig = Field(default_factory=StorageConfig)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    model_updates: ModelUpdatesConfig = Field(default_factory=ModelUpdatesConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    _path: Path | None = PrivateAttr(default=None)
    # The file's name as given and the line of each key path, for messages after validation.
    _source: tuple[str, Callable[[tuple], int]] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _finish(self, info: ValidationInfo) -> GatewayConfig:
        context = info.context or {}
        if self.mqtt.client_id is None:
            self.mqtt.client_id = f"frugalsense-{self.gateway}"
        if context.get(CONTEXT_PATH) is not None:
            self._path = Path(context[CONTEXT_PATH]).absolute()
        if context.get(CONTEXT_CROSS_CHECKS, True):
            issues = cross_section_issues(self.model_dump())
            if issues:
                raise fail(f"{format_path(issues[0].loc)}: {issues[0].message}", issues[0].suggestion)
        return self

    @property
    def path(self) -> Path | None:
        """The config file this was loaded from (absolute), or None if built in code."""
        return self._path

    def remember_source(self, name: str, line_of: Callable[[tuple], int]) -> None:
        """Keep the file name (as typed) and where each key is: a detector that fails later is shown at its line."""
        self._source = (name, line_of)

    def where(self, loc: tuple) -> tuple[str, int | None]:
        """The file and line of the key path ``loc``; ``("config", None)`` for a config built in code.

        >>> cfg = GatewayConfig.model_validate(
        ...     {"site": "s", "gateway": "g", "mqtt": {"host": "h"},
        ...      "sensors": [{"id": "F", "quantity": "flow", "driver": "replay"}],
        ...      "sources": {"replay": {"file": "a.npz"}}})
        >>> cfg.where(("models", 0))
        ('config', None)
        >>> cfg.remember_source("gw.yaml", lambda loc: 7)
        >>> cfg.where(("models", 0))
        ('gw.yaml', 7)
        """
        if self._source is None:
            return "config", None
        name, line_of = self._source
        return name, line_of(loc)

    def resolve_path(self, path: str | os.PathLike) -> Path:
        """A path from the config, relative ones taken from the config file's folder.

        >>> cfg = GatewayConfig.model_validate(
        ...     {"site": "s", "gateway": "g", "mqtt": {"host": "h"},
        ...      "sensors": [{"id": "F", "quantity": "flow", "driver": "replay"}],
        ...      "sources": {"replay": {"file": "a.npz"}}},
        ...     context={"path": "/etc/frugalsense/gw.yaml"})
        >>> cfg.resolve_path("../data/a.npz"), cfg.resolve_path("/abs/b.npz")
        (PosixPath('/etc/data/a.npz'), PosixPath('/abs/b.npz'))
        """
        path = Path(path).expanduser()
        if path.is_absolute():
            return path
        base = self._path.parent if self._path is not None else Path.cwd()
        return Path(os.path.normpath(base / path))

    @property
    def tz(self) -> ZoneInfo:
        """The config's time zone."""
        return ZoneInfo(self.timezone)
