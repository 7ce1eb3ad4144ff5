"""Model entries (detectors a gateway runs): night flow, learned leak, EAQI, the air models and calibration drift."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from edge.air.eaqi import BANDS as EAQI_BANDS
from edge.detectors import (
    AirPatternDetector,
    AqiDetector,
    CalibrationDriftDetector,
    Detector,
    LearnedLeakDetector,
    MinimumNightFlowDetector,
    No2VirtualSensor,
    SensorFaultDetector,
)
from edge.runtime.choice import BACKEND_CHOICES, PRECISIONS, pair_problem
from gateway.config.schema.base import Section
from gateway.config.schema.ha_entities import (
    HaEntity,
    air_pattern_entities,
    calibration_entities,
    leak_entities,
    no2_virtual_entities,
    sensor_fault_entities,
)
from gateway.config.schema.model_base import GatewayView, ModelBase, model_type
from gateway.config.schema.model_inputs import require_leak_inputs
from gateway.config.schema.types import ClockTime, FilePath, Identifier, Text, _one_of, describe, fail, number, whole


def _sign(value: object) -> int:
    if isinstance(value, bool) or value not in (1, -1):
        raise fail(f"must be 1 (flow into the zone) or -1 (flow out of the zone), got {describe(value)}")
    return int(value)  # type: ignore[call-overload]


class InflowTerm(Section):
    """One metered pipe of a zone's inflow: +1 into the zone, -1 out of it."""

    sensor: Identifier
    sign: Annotated[int, BeforeValidator(_sign)] = 1


@model_type
class MnfModel(ModelBase):
    """Minimum Night Flow leak detector over one zone's metered inflow."""

    type: Literal["mnf"]
    detector: ClassVar[type[Detector]] = MinimumNightFlowDetector
    detection_kind: ClassVar[str] = MinimumNightFlowDetector.kind
    zone_inflow: list[InflowTerm] = Field(min_length=1)
    night_start: ClockTime = "02:00"  # local time (the config's timezone)
    # validate_default: the default end must still come after a start given in the file
    night_end: ClockTime = Field(default="04:00", validate_default=True)
    threshold: number(0, 5, low_open=True) = 0.2  # relative rise over the baseline
    history_days: whole(2, 60) = 10
    raise_after: whole(1, 7) = 1
    clear_after: whole(1, 14) = 2

    @field_validator("night_end")
    @classmethod
    def _after_start(cls, end: str, info: ValidationInfo) -> str:
        start = info.data.get("night_start")
        if start is not None and end <= start:
            raise fail(f"must be after night_start ({start}), got {end!r} (a night window may not cross midnight)")
        return end

    def detector_params(self, timezone: str) -> dict[str, Any]:
        """Keyword arguments for the night-flow detector, in its own parameter names."""
        return {
            "zone_inflow": [(term.sensor, term.sign) for term in self.zone_inflow],
            "night_start": self.night_start,
            "night_end": self.night_end,
            "threshold": self.threshold,
            "history_days": self.history_days,
            "raise_after": self.raise_after,
            "clear_after": self.clear_after,
            "timezone": timezone,
        }

    def build_detector(self, config: GatewayView) -> MinimumNightFlowDetector:
        """A night-flow detector over this zone, nights in the config's time zone."""
        return MinimumNightFlowDetector(
            config.site, config.gateway, model=self.name, **self.detector_params(config.timezone)
        )

    @classmethod
    def ha_entities(cls, state_topic: str) -> list[HaEntity]:
        """A leak binary sensor and the estimated leak flow."""
        return leak_entities(state_topic)


@model_type
class EaqiModel(ModelBase):
    """European Air Quality Index: hourly band per pollutant sensor and for the station, alerts with persistence."""

    type: Literal["eaqi"]
    detector: ClassVar[type[Detector]] = AqiDetector
    detection_kind: ClassVar[str] = AqiDetector.kind
    # pm25, pm25_corrected, pm10, no2 or o3 sensors, or a calibration's virtual sensor (pm25/no2_calibrated)
    sensors: list[Identifier] = Field(min_length=1)
    alert_from: Annotated[str, BeforeValidator(_one_of(EAQI_BANDS))] = "poor"  # the band that raises an alert
    raise_after: whole(1, 48) = 2  # hours in a row at a higher band before it counts
    clear_after: whole(1, 48) = 3  # hours in a row at a lower band before it counts

    def detector_params(self, quantities: dict[str, str]) -> dict[str, Any]:
        """Keyword arguments for the AQI detector; ``quantities`` maps sensor id -> quantity."""
        return {
            "sensors": [(s, quantities[s]) for s in self.sensors],
            "alert_from": self.alert_from,
            "raise_after": self.raise_after,
            "clear_after": self.clear_after,
        }

    def build_detector(self, config: GatewayView) -> AqiDetector:
        """An AQI detector over the named pollutant sensors (each with its quantity), virtual ones included."""
        quantities = {s.id: s.quantity for s in config.sensors}
        quantities.update(p for m in config.models for p in m.published_sensors())
        return AqiDetector(config.site, config.gateway, model=self.name, **self.detector_params(quantities))


# Air-site models (edge/detectors/air_models.py, edge/detectors/drift.py, docs/air-models.md).
_AIR_INPUTS = ("pm25", "pm10", "no2", "temperature", "humidity", "wind_speed", "cell_count")


def _runs_precision(backend: str, info: ValidationInfo) -> str:
    """A named runtime must run the configured precision's file (edge/runtime/choice.py)."""
    problem = pair_problem(backend, info.data.get("precision", "float"))
    if problem:
        raise fail(problem)
    return backend


# Declared before backend, so the check on backend sees it (written or default) and the error is at backend's line.
Precision = Annotated[str, BeforeValidator(_one_of(PRECISIONS))]
Runtime = Annotated[str, BeforeValidator(_one_of(BACKEND_CHOICES))]


class AirInputs(Section):
    """Which sensor feeds each input of an air model; a sensor must measure that input's quantity."""

    pm25: Identifier | None = None
    pm10: Identifier | None = None
    no2: Identifier | None = None
    temperature: Identifier | None = None
    humidity: Identifier | None = None
    wind_speed: Identifier | None = None
    cell_count: Identifier | None = None

    def given(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class _AirModel(ModelBase):
    model_dir: FilePath  # the exported model's folder (manifest.json inside), relative to this file
    precision: Precision = "float"  # which weights decide: float (onnx_float, numpy) or int8 (tflite_int8, onnx_int8)
    # numpy runs only float, litert only int8, onnxruntime both; auto takes the precision's files in a
    # fixed order, the first whose runtime is installed (docs/models.md), never the fastest
    backend: Runtime = "auto"
    sensors: AirInputs
    needs: ClassVar[tuple[str, ...]] = ()

    _backend_runs_precision = field_validator("backend")(_runs_precision)

    @model_validator(mode="after")
    def _inputs(self) -> _AirModel:
        missing = [k for k in self.needs if getattr(self.sensors, k) is None]
        if missing:
            raise fail(f"sensors must name a sensor for {', '.join(self.needs)} (missing: {', '.join(missing)})")
        return self

    def detector_params(self, config: GatewayView) -> dict[str, Any]:
        """The air detector's arguments: sensors by input, the model's folder, precision, backend, time zone."""
        return {
            "sensors": self.sensors.given(),
            "model_dir": config.resolve_path(self.model_dir),
            "precision": self.precision,
            "backend": self.backend,
            "timezone": config.timezone,
        }

    def build_detector(self, config: GatewayView) -> Detector:
        """The air detector of this type, running the exported model in ``model_dir``."""
        return self.detector(config.site, config.gateway, model=self.name, **self.detector_params(config))


@model_type
class AirPatternModel(_AirModel):
    """Hourly air pattern: normal, traffic_peak, regional_episode or local_source."""

    type: Literal["air_pattern"]
    detector: ClassVar[type[Detector]] = AirPatternDetector
    detection_kind: ClassVar[str] = AirPatternDetector.kind
    needs: ClassVar[tuple[str, ...]] = ("pm25", "pm10", "no2", "temperature", "humidity", "cell_count")

    @classmethod
    def ha_entities(cls, state_topic: str) -> list[HaEntity]:
        """A sensor showing the hour's pattern."""
        return air_pattern_entities(state_topic)


@model_type
class SensorFaultModel(_AirModel):
    """Hourly fault flag per sensor (stuck, spike, dropout, fan_failure) with alerts for lasting faults."""

    type: Literal["sensor_fault"]
    detector: ClassVar[type[Detector]] = SensorFaultDetector
    detection_kind: ClassVar[str] = SensorFaultDetector.kind
    raise_after: whole(1, 48) = 2  # faulty hours in a row before an alert
    clear_after: whole(1, 48) = 2  # healthy hours in a row before it clears

    @model_validator(mode="after")
    def _judged(self) -> SensorFaultModel:
        given = self.sensors.given()
        if not given or set(given) - {"pm25", "pm10", "no2", "temperature", "humidity"}:
            raise fail(
                "sensors may name pm25, pm10, no2, temperature and humidity sensors (at least one); "
                "the fault model does not judge wind_speed or cell_count"
            )
        return self

    def detector_params(self, config: GatewayView) -> dict[str, Any]:
        """The air detector's arguments and the alert persistence."""
        return {**super().detector_params(config), "raise_after": self.raise_after, "clear_after": self.clear_after}

    @classmethod
    def ha_entities(cls, state_topic: str) -> list[HaEntity]:
        """A diagnostic sensor showing the latest fault verdict."""
        return sensor_fault_entities(state_topic)


@model_type
class No2VirtualModel(_AirModel):
    """NO2 estimated from phones per antenna and weather, for a zone without an NO2 sensor."""

    type: Literal["no2_virtual"]
    detector: ClassVar[type[Detector]] = No2VirtualSensor
    detection_kind: ClassVar[str] = No2VirtualSensor.kind
    needs: ClassVar[tuple[str, ...]] = ("cell_count", "wind_speed", "temperature", "humidity")

    @classmethod
    def ha_entities(cls, state_topic: str) -> list[HaEntity]:
        """A NO2 sensor (µg/m³) with the hourly estimate."""
        return no2_virtual_entities(state_topic)


@model_type
class CalibrationDriftModel(ModelBase):
    """Daily Page-Hinkley test of a sensor's calibration: alert 'recalibration_needed' when it goes stale."""

    type: Literal["calibration_drift"]
    detector: ClassVar[type[Detector]] = CalibrationDriftDetector
    detection_kind: ClassVar[str] = CalibrationDriftDetector.kind
    sensor: Identifier  # a sensor, or a calibration's virtual sensor (its calibrated output is then watched)
    reference: Identifier | None = None  # a co-located reference sensor of the same quantity (calibrated: the raw)
    estimate_from: Identifier | None = None  # or the name of a no2_virtual model of this config (an NO2 sensor)
    calibration_days: whole(3, 90) = 21
    smoothing_days: whole(1, 30) = 7
    delta: number(0) = 1.5  # daily shift (in calibration spreads) tolerated without counting
    threshold: number(0, low_open=True) = 15.0
    min_sigma: number(0, low_open=True) = 3.0  # smallest calibration spread believed, in the sensor's unit

    @model_validator(mode="after")
    def _one_reference(self) -> CalibrationDriftModel:
        if self.reference is not None and self.estimate_from is not None:
            raise fail("give reference or estimate_from, not both")
        return self

    def detector_params(self) -> dict[str, Any]:
        """Keyword arguments for the drift detector, without its estimator."""
        return {
            "sensor": self.sensor,
            "reference": self.reference,
            "calibration_days": self.calibration_days,
            "smoothing_days": self.smoothing_days,
            "delta": self.delta,
            "threshold": self.threshold,
            "min_sigma": self.min_sigma,
        }

    def build_detector(self, config: GatewayView) -> CalibrationDriftDetector:
        """The drift detector; with estimate_from, it runs its own copy of that NO2 virtual sensor as reference."""
        estimator = None
        if self.estimate_from is not None:
            source = next(m for m in config.models if m.name == self.estimate_from)
            estimator = source.build_detector(config)
        return CalibrationDriftDetector(
            config.site, config.gateway, model=self.name, **self.detector_params(), estimator=estimator
        )

    @classmethod
    def ha_entities(cls, state_topic: str) -> list[HaEntity]:
        """A problem binary sensor, on while a calibration drifts."""
        return calibration_entities(state_topic)


class LeakInput(Section):
    """One input of a learned leak model: this gateway's sensor and the network element it measures."""

    sensor: Identifier
    element: Text  # the link or node name in the network the model was trained on, e.g. "10"


@model_type
class LearnedLeakModel(ModelBase):
    """Learned leak detector on a zone's meters and pressures (edge/detectors/leak_model.py, docs/leak-detection.md)."""

    type: Literal["learned_leak"]
    detector: ClassVar[type[Detector]] = LearnedLeakDetector
    detection_kind: ClassVar[str] = LearnedLeakDetector.kind
    model_dir: FilePath  # the exported model's folder (manifest.json inside), relative to this file
    precision: Precision = "float"  # which weights decide: float (onnx_float, numpy) or int8 (tflite_int8, onnx_int8)
    # numpy runs only float, litert only int8, onnxruntime both; auto takes the precision's files in a
    # fixed order, the first whose runtime is installed (docs/models.md), never the fastest
    backend: Runtime = "auto"
    # Empty: every sensor feeds the model input named by its replay column (or its id).
    inputs: list[LeakInput] = Field(default_factory=list)

    _backend_runs_precision = field_validator("backend")(_runs_precision)

    def detector_params(self, config: GatewayView) -> dict[str, Any]:
        """The model's folder, precision, backend, and which sensor feeds which model input (element, quantity)."""
        sensors = {s.id: s for s in config.sensors}
        if self.inputs:
            unknown = [i.sensor for i in self.inputs if i.sensor not in sensors]
            if unknown:
                raise ValueError(f"model {self.name}: input sensor(s) {', '.join(unknown)} not in sensors")
            inputs = {i.sensor: (i.element, sensors[i.sensor].quantity) for i in self.inputs}
        else:
            inputs = {s.id: (getattr(s, "column", None) or s.id, s.quantity) for s in config.sensors}
        return {
            "model_dir": config.resolve_path(self.model_dir),
            "precision": self.precision,
            "backend": self.backend,
            "inputs": inputs,
        }

    def build_detector(self, config: GatewayView) -> LearnedLeakDetector:
        """The learned leak detector, its model verified (sha256) and loaded from ``model_dir``.

        ``MissingInputs`` first if the model reads an element no sensor measures.
        """
        params = self.detector_params(config)
        require_leak_inputs(params["model_dir"], params["inputs"])
        return LearnedLeakDetector.from_model_dir(site=config.site, gateway=config.gateway, model=self.name, **params)

    @classmethod
    def ha_entities(cls, state_topic: str) -> list[HaEntity]:
        """The same leak entities as the night-flow detector: Home Assistant sees one leak, whatever decides it."""
        return leak_entities(state_topic)
