"""What a model type is: its config keys, the detector it builds, its detection kind, what Home Assistant is told.

A model type is a ``ModelBase`` subclass with ``type: Literal["name"]``, decorated
with ``@model_type``, defined in a module that ``schema/gateway.py`` imports. It is
registered once, in ``MODEL_TYPES``, and everything else reads that registry: the
gateway service builds its detectors with ``build_detector``, the validator builds
them the same way, Home Assistant discovery announces ``ha_entities`` for its
``detection_kind``, and ``scripts/gen_config_docs.py`` documents both.

``build_detector`` takes the whole gateway config as a ``GatewayView`` (what a
detector needs of it), so this module imports nothing that imports it back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

from edge.detectors.base import Detector
from gateway.config.schema.base import Section, tag_of
from gateway.config.schema.ha_entities import HaEntity, label_sensor
from gateway.config.schema.types import Identifier


class GatewayView(Protocol):
    """What building a detector reads of a gateway config (``GatewayConfig`` is one)."""

    @property
    def site(self) -> str: ...

    @property
    def gateway(self) -> str: ...

    @property
    def timezone(self) -> str: ...

    @property
    def sensors(self) -> Sequence[Any]: ...

    @property
    def models(self) -> Sequence[Any]: ...

    def resolve_path(self, path: str | os.PathLike) -> Path: ...


class MissingInputs(ValueError):
    """A model needs an input that no sensor of the config gives; the message names them for the technician."""


class ModelBase(Section):
    """One model entry of a gateway config; a subclass per model type."""

    name: Identifier
    #: The detector class this model type runs.
    detector: ClassVar[type[Detector]]
    #: The ``kind`` of its Detections and Alerts: the last level of its detections topic.
    detection_kind: ClassVar[str]

    def build_detector(self, config: GatewayView) -> Detector:
        """The detector this entry runs on the gateway ``config`` describes."""
        raise NotImplementedError(f"model type {type(self).__name__} builds no detector")

    def published_sensors(self) -> list[tuple[str, str]]:
        """The virtual sensors this model publishes readings for, (id, quantity): none but a calibration's."""
        return []

    @classmethod
    def ha_entities(cls, state_topic: str) -> list[HaEntity]:
        """The Home Assistant entities reading this kind's detections (default: one sensor showing the label)."""
        return label_sensor(cls.detection_kind, state_topic)


#: model type name -> its schema class; filled by ``@model_type``.
MODEL_TYPES: dict[str, type[ModelBase]] = {}


def model_type(cls: type[ModelBase]) -> type[ModelBase]:
    """Register a model type under its ``type`` tag; it must name its detector and detection kind."""
    name = tag_of(cls, "type")
    kind = getattr(cls, "detection_kind", "")
    if not kind or kind != cls.detector.kind:
        raise TypeError(f"model type {name}: detection_kind {kind!r} must be its detector's kind {cls.detector.kind!r}")
    if cls.build_detector is ModelBase.build_detector:
        raise TypeError(f"model type {name} must define build_detector")
    MODEL_TYPES[name] = cls
    return cls


__all__ = ["MODEL_TYPES", "GatewayView", "MissingInputs", "ModelBase", "model_type"]
