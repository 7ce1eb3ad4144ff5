"""The config section base class and the registries sensor drivers and model types declare themselves in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from gateway.config.schema.models import ModelBase
    from gateway.config.schema.sensors import SensorBase


class Section(BaseModel):
    """A block of keys; unknown keys are errors (a typo must never be silently ignored)."""

    model_config = ConfigDict(extra="forbid")
    # Keys refused with a specific explanation instead of "unknown key".
    refused_keys: ClassVar[dict[str, str]] = {}


SENSOR_DRIVERS: dict[str, type[SensorBase]] = {}
MODEL_TYPES: dict[str, type[ModelBase]] = {}


def _tag_of(cls: type[BaseModel], key: str) -> str:
    return cls.model_fields[key].annotation.__args__[0]  # type: ignore[union-attr]


def sensor_driver(cls: type[SensorBase]) -> type[SensorBase]:
    SENSOR_DRIVERS[_tag_of(cls, "driver")] = cls
    return cls


def model_type(cls: type[ModelBase]) -> type[ModelBase]:
    MODEL_TYPES[_tag_of(cls, "type")] = cls
    return cls


def _tagged_union(registry: dict[str, type[BaseModel]], key: str) -> Any:
    return Annotated[Union[tuple(registry.values())], Field(discriminator=key)]  # noqa: UP007
