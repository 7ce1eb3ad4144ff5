"""Model type ``calibration``: an exported co-location calibration applied to named input sensors on the gateway.

The model (``frugalsense train air-calibration``) reads the raw inputs its manifest's
``calibration`` section lists; ``inputs`` says which sensor of this config feeds each
one. The calibrated value is published as a reading of ``quantity`` for the virtual
sensor named like the model (``readings/<name>``, next to the raw sensor's), quality
``suspect`` while the ``drift_model`` (a calibration_drift model of this config) has
its ``recalibration_needed`` alert open. The virtual sensor counts as a sensor of its
quantity for the other models of the config: a calibration_drift may watch it (against
a reference of the raw quantity, e.g. pm25), an eaqi may take it as its PM2.5 or NO2
input. See edge/detectors/calibration.py and docs/air-models.md ("Calibration on the gateway").
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import field_validator

from edge.contracts import QUANTITY_UNITS
from edge.detectors.base import Detector
from edge.detectors.calibration import CalibrationApplier
from gateway.config.schema.ha_entities import HaEntity
from gateway.config.schema.model_base import GatewayView, MissingInputs, ModelBase, model_type
from gateway.config.schema.models import Precision, Runtime, _runs_precision
from gateway.config.schema.types import FilePath, Identifier, fail, whole

# Quantities a calibration may publish (their units in edge/contracts.py) -> the raw quantity each one estimates:
# a drift test compares a calibrated sensor with a reference of that quantity.
CALIBRATED = {"pm25_calibrated": "pm25", "no2_calibrated": "no2"}


def _calibrated(value: object) -> str:
    if value not in CALIBRATED:
        raise fail(f"must be one of {', '.join(CALIBRATED)}, got {value!r}")
    assert value in QUANTITY_UNITS
    return str(value)


@model_type
class CalibrationModel(ModelBase):
    """A calibration (train air-calibration) applied to raw sensor readings; publishes the calibrated quantity."""

    type: Literal["calibration"]
    detector: ClassVar[type[Detector]] = CalibrationApplier
    detection_kind: ClassVar[str] = CalibrationApplier.kind
    model_dir: FilePath  # the exported model's folder (manifest.json inside), relative to this file
    precision: Precision = "float"  # which weights decide: float (onnx_float, numpy) or int8 (tflite_int8, onnx_int8)
    backend: Runtime = "auto"  # numpy runs only float, litert only int8, onnxruntime both (docs/models.md)
    # each raw input of the model's manifest (calibration.inputs) -> the sensor of this config feeding it
    inputs: dict[Identifier, Identifier]
    quantity: str = "pm25_calibrated"  # what the virtual sensor (named like this model) publishes
    drift_model: Identifier | None = None  # a calibration_drift model: its open alert marks readings suspect
    window_s: whole(1, 3600) = 120  # the inputs of one step must lie within this many seconds

    _backend_runs_precision = field_validator("backend")(_runs_precision)
    _quantity = field_validator("quantity", mode="before")(_calibrated)

    def published_sensors(self) -> list[tuple[str, str]]:
        """The virtual sensor this model publishes readings for: (id, quantity)."""
        return [(self.name, self.quantity)]

    def build_detector(self, config: GatewayView) -> CalibrationApplier:
        """The applier, its model verified and loaded; ``MissingInputs`` if a manifest input has no sensor."""
        drift = None
        if self.drift_model is not None:
            source = next(m for m in config.models if m.name == self.drift_model)
            drift = source.build_detector(config)
        params: dict[str, Any] = {"backend": self.backend, "precision": self.precision}
        try:
            return CalibrationApplier(
                config.site,
                config.gateway,
                dict(self.inputs),
                config.resolve_path(self.model_dir),
                self.name,
                self.quantity,
                model=self.name,
                window_ms=self.window_s * 1000,
                drift=drift,
                **params,
            )
        except ValueError as exc:
            if "no sensor is given for" in str(exc):
                raise MissingInputs(f"{exc}: add them to this model's inputs") from None
            raise

    @classmethod
    def ha_entities(cls, state_topic: str) -> list[HaEntity]:
        """None of its own: the calibrated sensor is announced as a sensor, from ``published_sensors``."""
        return []
