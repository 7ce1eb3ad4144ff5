"""What every detector is: one interface, in the shape of river's and scikit-learn's estimator bases.

A detector is streaming: ``update(reading)`` consumes one Reading and returns the
Detections and Alerts of every window that closed before it; ``flush()`` decides the
window still open when the sources end. A detector that derives a measurement (a
calibration applied on the gateway, ``edge.detectors.calibration``) returns it as a
``Reading`` among its outputs, of its own virtual sensor: the gateway publishes it on
that sensor's readings topic, like a measured one (MQTT ``readings``, InfluxDB
``reading``), never as a detection. Its ``kind`` names what it detects ("leak",
"aqi", ...) and is the ``kind`` of everything it emits. A detector that runs an
exported model (itself, or through a detector it reads, like the drift detector's
estimator) names it in ``model_name``, scores with ``model_runtime`` and takes a verified
new version through ``use_model(backend)``; a rule-based detector has ``model_name``
None and refuses ``use_model``. ``check_model(backend)`` says beforehand whether a new
version can be taken, and whether the detector's state survives it (None) or must be
reset (the reason). ``state()`` / ``restore(state)`` carry what a restart must keep
(empty here; the restart work fills them).

The builders ``detection()`` and ``alert()`` fill in what every output of a detector
shares (site, gateway, kind, model, model version), so no detector re-implements them.

>>> from edge.contracts import AlertState, Severity
>>> class Always(Detector):
...     kind = "demo"
...     def update(self, reading):
...         return [self.detection(reading.time_ms, "normal", 0.0, Severity.INFO, reading.time_ms, reading.time_ms)]
>>> det = Always("site-a", "gw-01", model="demo")
>>> det.model_name is None, det.state()
(True, {})
>>> det.alert(10, "demo-1", AlertState.RAISED, "odd", Severity.WARNING, 1.0, "odd", since_ms=0).kind
'demo'
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from edge.contracts import Alert, AlertState, Detection, Reading, Severity, check_id

Output = Detection | Alert | Reading
log = logging.getLogger(__name__)


class ModelSwapError(ValueError):
    """A detector was offered a model it cannot run (another model, features it cannot compute, outputs it cannot read).

    ``reason`` is what the model-update status reports (``gateway.model_updates.envelope.REASONS``):
    ``mismatch``, ``features_changed`` or ``outputs_changed``.
    """

    def __init__(self, message: str, reason: str = "mismatch") -> None:
        super().__init__(message)
        self.reason = reason


class Detector(ABC):
    """Base of every streaming detector: Readings in, Detections and Alerts out."""

    #: What the detector detects; the ``kind`` of every Detection and Alert it emits.
    kind: ClassVar[str] = ""

    site: str
    gateway: str
    model: str
    model_version: str

    def __init__(self, site: str, gateway: str, *, model: str, model_version: str = "1") -> None:
        check_id("site", site)
        check_id("gateway", gateway)
        check_id("model", model)
        self.site = site
        self.gateway = gateway
        self.model = model
        self.model_version = model_version

    @abstractmethod
    def update(self, reading: Reading) -> list[Output]:
        """Consume one reading; return the outputs of every window that closed before it."""

    def flush(self) -> list[Output]:
        """Decide the window still open when the sources have ended (none by default)."""
        return []

    def reset(self) -> None:  # noqa: B027 - an optional hook: stateless detectors have nothing to forget
        """Forget every window, history and alert state."""

    # -- models -------------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str | None:
        """Name of the exported model this detector runs (its manifest's name), None if rule-based."""
        return None

    @property
    def model_runtime(self) -> Any:
        """The loaded backend this detector's next decision scores with (None if rule-based)."""
        return None

    def check_model(self, backend: Any) -> str | None:
        """Whether ``backend`` can replace this detector's model: None (state kept) or why the state must reset.

        Only ``backend.manifest`` is read, so a model not loaded yet can be checked. Raises
        ModelSwapError when the detector cannot run it at all (here: a rule-based detector).
        """
        raise ModelSwapError(f"{type(self).__name__} {self.model!r} runs no exported model: nothing to swap")

    def use_model(self, backend: Any) -> None:
        """Run a new, verified version of this detector's model from now on (a hot swap).

        ``backend`` is a loaded runtime backend whose ``manifest`` names the model. Raises
        ModelSwapError when this detector runs no exported model or cannot run this one.
        """
        self.check_model(backend)

    # -- restart ------------------------------------------------------------------------------------------
    def state(self) -> dict:
        """What a restart must keep, as plain JSON-able data (empty: nothing yet)."""
        return {}

    def restore(self, state: dict) -> None:
        """Take back what ``state()`` returned before a restart."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(state)}")

    # -- builders -----------------------------------------------------------------------------------------
    def detection(
        self,
        time_ms: int,
        label: str,
        score: float,
        severity: Severity,
        window_start_ms: int,
        window_end_ms: int,
        explanation: dict | None = None,
        *,
        model: str | None = None,
    ) -> Detection:
        """A Detection of this detector's kind, model and version (``model``: a per-sensor name instead)."""
        return Detection(
            time_ms=time_ms,
            site=self.site,
            gateway=self.gateway,
            kind=self.kind,
            label=label,
            score=float(score),
            severity=severity,
            model=model or self.model,
            model_version=self.model_version,
            window_start_ms=window_start_ms,
            window_end_ms=window_end_ms,
            explanation=dict(explanation or {}),
        )

    def alert(
        self,
        time_ms: int,
        alert_id: str,
        state: AlertState,
        label: str,
        severity: Severity,
        score: float,
        message: str,
        *,
        since_ms: int,
        explanation: dict | None = None,
        model: str | None = None,
    ) -> Alert:
        """An Alert of this detector's kind, model and version (``model``: a per-sensor name instead)."""
        return Alert(
            time_ms=time_ms,
            site=self.site,
            gateway=self.gateway,
            kind=self.kind,
            alert_id=alert_id,
            state=state,
            label=label,
            severity=severity,
            score=float(score),
            message=message,
            model=model or self.model,
            model_version=self.model_version,
            since_ms=since_ms,
            explanation=dict(explanation or {}),
        )


class ModelDetector(Detector):
    """A detector that runs an exported model held in ``runtime_`` (a runtime backend with a manifest).

    By default a new version must read the same features and give the same outputs: the
    features are what the detector computes, the outputs what it reads back, and a model
    trained on other ones would score the wrong columns without failing. A detector that
    can compute other features (the learned leak detector: they come with the model's own
    settings) or read other outputs overrides ``_model_change`` and says what to reset.
    """

    runtime_: Any

    @property
    def model_name(self) -> str | None:
        """The manifest name of the model in ``runtime_``."""
        return self.runtime_.manifest.name

    @property
    def model_runtime(self) -> Any:
        """``runtime_``: what the next decision scores with."""
        return self.runtime_

    def check_model(self, backend: Any) -> str | None:
        """Raise ModelSwapError if ``backend`` cannot replace the running model; else None or why to reset.

        Another model name is always refused; features and outputs are judged by ``_model_change``.
        """
        new, old = backend.manifest, self.runtime_.manifest
        if new.name != old.name:
            raise ModelSwapError(f"{self.model!r} runs model {old.name!r}, not {new.name!r}")
        return self._model_change(new, old)

    def _model_change(self, new: Any, old: Any) -> str | None:
        """Same features and outputs, or ModelSwapError: this detector computes and reads exactly those."""
        if list(new.features) != list(old.features):
            raise ModelSwapError(
                f"{self.model!r}: model {new.name} v{new.version} takes features {', '.join(new.features)}, "
                f"not {', '.join(old.features)}: this gateway's software computes the latter",
                "features_changed",
            )
        if (new.task, list(new.output_names)) != (old.task, list(old.output_names)):
            raise ModelSwapError(
                f"{self.model!r}: model {new.name} v{new.version} is a {new.task} with outputs "
                f"{', '.join(new.output_names)}, not a {old.task} with {', '.join(old.output_names)}",
                "outputs_changed",
            )
        return None

    def use_model(self, backend: Any) -> None:
        """Swap in ``backend`` after ``check_model``; outputs from now on carry its version.

        The state is kept when ``check_model`` says so (same features), else reset with the reason logged.
        """
        why = self.check_model(backend)
        old = self.runtime_.manifest
        self._take_model(backend)
        self.runtime_ = backend
        self.model_version = backend.manifest.version
        new = backend.manifest
        if why is None:
            log.info("%s: model %s v%s -> v%s, state kept", self.model, new.name, old.version, new.version)
        else:
            log.warning("%s: model %s v%s -> v%s: %s; state reset", self.model, new.name, old.version, new.version, why)
            self._forget(why)

    def _take_model(self, backend: Any) -> None:  # noqa: B027 - an optional hook: most detectors read nothing more
        """Take what else the new model carries (settings in its manifest) before it goes in service."""

    def _forget(self, why: str) -> None:
        """Reset what the model change made stale (everything by default)."""
        self.reset()


__all__ = ["Detector", "ModelDetector", "ModelSwapError", "Output"]
