"""Build every detector of a gateway config, as the gateway service runs them: one code path for all.

``frugalsense run`` (``gateway.device.runner.build_detectors``), ``config validate``,
``flash`` and ``doctor`` all call ``build_detectors``: a config that validates is one
whose detectors start. Building verifies and loads each model's files; no detector is
run. Every model that cannot be built is reported at its line, all at once. Each
calibration drift detector is then told the calibration models it concerns
(``gateway/config/refits.py``): its ``recalibration_needed`` alert names them.
"""

from __future__ import annotations

from edge.detectors import Detector
from gateway.config.problems import ConfigError, Problem
from gateway.config.refits import tell_refits
from gateway.config.schema import GatewayConfig, format_path
from gateway.config.schema.model_base import MissingInputs


def build_detectors(config: GatewayConfig) -> list[Detector]:
    """One detector per model, built by its model type; ``ConfigError`` naming each model that cannot be built."""
    detectors: list[Detector] = []
    problems = []
    for index, model in enumerate(config.models):
        try:
            detectors.append(model.build_detector(config))
        except (ValueError, OSError, RuntimeError) as exc:  # inputs missing, a model file missing or tampered...
            problems.append(model_problem(config, index, exc))
    if problems:
        raise ConfigError(problems)
    tell_refits(config, detectors)
    return detectors


def model_problem(config: GatewayConfig, index: int, exc: Exception) -> Problem:
    """``FILE:LINE: models[i] (name): why its detector cannot be built``, at the model's entry."""
    loc = ("models", index)
    file, line = config.where(loc)
    message = str(exc) if isinstance(exc, MissingInputs) else f"cannot build its detector: {exc}"
    return Problem(file, line, f"{format_path(loc)} ({config.models[index].name})", message)
