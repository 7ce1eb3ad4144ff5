"""Which calibration models each calibration_drift model of a config concerns: told to its detector, named in its alert.

A drift model concerns a calibration model whose ``drift_model`` it is, whose virtual
sensor it watches, or that reads the sensor it watches. Its detector is given one
``Refit`` per such calibration (edge/detectors/recalibration.py), holding the detector
that runs the calibration, so a raised ``recalibration_needed`` names the version in
service (v2 after a model update) and the folder to refit, as the config writes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.detectors import CalibrationDriftDetector, Detector
from edge.detectors.recalibration import Refit
from gateway.config.schema import GatewayConfig
from gateway.config.schema.calibration_model import CALIBRATED, CalibrationModel
from gateway.config.schema.models import CalibrationDriftModel


def concerns(drift: CalibrationDriftModel, calibration: CalibrationModel) -> bool:
    """Whether a raised alert of ``drift`` asks to refit ``calibration``."""
    return (
        calibration.drift_model == drift.name
        or calibration.name == drift.sensor
        or drift.sensor in calibration.inputs.values()
    )


def co_located(drift: CalibrationDriftModel, calibration: CalibrationModel) -> list[str]:
    """The raw sensors to put next to a reference: the one watched if an input, else the calibrated quantity's."""
    if drift.sensor in calibration.inputs.values():
        return [drift.sensor]
    raw = CALIBRATED[calibration.quantity]
    if raw in calibration.inputs:
        return [calibration.inputs[raw]]
    return list(dict.fromkeys(calibration.inputs.values()))


def tell_refits(config: GatewayConfig, detectors: Sequence[Detector]) -> None:
    """Give each drift detector (built from ``config.models``, in order) the calibrations it concerns."""
    entries = list(zip(config.models, detectors, strict=True))
    calibrations = [(m, d) for m, d in entries if isinstance(m, CalibrationModel)]
    for model, detector in entries:
        if isinstance(model, CalibrationDriftModel) and isinstance(detector, CalibrationDriftDetector):
            detector.refits = [
                Refit(c.name, str(c.model_dir), co_located(model, c), running)
                for c, running in calibrations
                if concerns(model, c)
            ]


__all__ = ["co_located", "concerns", "tell_refits"]
