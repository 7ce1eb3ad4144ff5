"""The config section base class and the helpers the driver and model-type registries are built with.

The registries themselves live next to the base class of what they register
(``sensors.SENSOR_DRIVERS``, ``model_base.MODEL_TYPES``), so this module imports
none of the modules that import it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A block of keys; unknown keys are errors (a typo must never be silently ignored)."""

    model_config = ConfigDict(extra="forbid")
    # Keys refused with a specific explanation instead of "unknown key".
    refused_keys: ClassVar[dict[str, str]] = {}


def tag_of(cls: type[BaseModel], key: str) -> str:
    """The one value of the ``Literal`` field ``key`` of ``cls``: its tag in a tagged union."""
    return cls.model_fields[key].annotation.__args__[0]  # type: ignore[union-attr]  # a Literal has __args__


def tagged_union(registry: dict[str, Any], key: str) -> Any:
    """The pydantic union of every class in ``registry``, told apart by their ``key`` field."""
    return Annotated[Union[tuple(registry.values())], Field(discriminator=key)]  # noqa: UP007 - a runtime tuple of types
