"""A calibration model applied on the gateway: raw sensor readings in, a calibrated Reading out, next to the raw one.

``train air-calibration`` exports a regression model whose manifest carries a
``calibration`` section: the raw ``inputs`` it reads (in order) and the ``terms``
computed from them (``edge.air.calibration_features.compute_terms``, the one feature
code path the trainer also runs). ``CalibrationApplier`` is given which sensor feeds
each input. A time step is decided when every input has a fresh reading (one newer
than the last step) and they all lie within ``window_ms`` of each other: the sensor
cadence decides, a sensor that stopped reporting stops the calibrated one (never the
last value as if fresh). The output is a ``Reading`` of ``quantity`` for the virtual
sensor ``sensor`` at the newest input's time:

- quality ``ok``; ``suspect`` if an input is suspect, or while the calibration-drift
  detector named in ``drift`` (its own copy, fed the same readings, as calibration
  drift runs its own copy of a virtual sensor) has its ``recalibration_needed`` alert
  open; a step with a ``bad`` or ``unknown`` input is skipped.
- a drift detector watching this applier's own virtual sensor (``drift.sensor ==
  sensor``) is also fed every calibrated Reading, after it is decided, as the gateway
  feeds it to the published drift model: ``suspect`` then follows the staleness of the
  calibrated output itself, and a new calibration version that brings it back lets the
  alert clear. A drift detector watching a raw input sees the raw readings only.
- a new version of the model (``use_model``) must read the same raw inputs; its terms
  may change (they travel with it), the state is kept.

>>> import json, tempfile, numpy as np
>>> from sklearn.linear_model import LinearRegression
>>> from training.export import export_model
>>> folder = tempfile.mkdtemp()
>>> spec = {"inputs": ["raw", "rh"], "terms": [{"name": "raw", "kind": "value", "of": [0]}]}
>>> X = np.arange(40, dtype=float)[:, None]
>>> _ = export_model(LinearRegression().fit(X, 0.5 * X[:, 0] + 1), X, folder, "calibration-pm", "1",
...                  feature_names=["raw"], output_names=["pm"])
>>> path = Path(folder) / "manifest.json"
>>> _ = path.write_text(json.dumps({**json.loads(path.read_text()), "calibration": spec}))
>>> det = CalibrationApplier("s", "g", {"raw": "PM-raw", "rh": "RH"}, folder, "PM-cal", "pm25_calibrated",
...                          backend="numpy")
>>> det.update(Reading(1_700_000_000_000, "s", "g", "PM-raw", "pm25", 10.0, "ug/m3"))
[]
>>> [(r.sensor, round(r.value, 3), r.quality.value) for r in det.update(
...     Reading(1_700_000_001_000, "s", "g", "RH", "humidity", 50.0, "%"))]
[('PM-cal', 6.0, 'ok')]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.air.calibration_features import check_spec, compute_terms
from edge.contracts import QUANTITY_UNITS, Quality, Reading, check_id
from edge.detectors import state_json as sj
from edge.detectors.base import ModelDetector, ModelSwapError, Output
from edge.detectors.drift import CalibrationDriftDetector

DEFAULT_WINDOW_MS = 120_000
_SKIP = (Quality.BAD, Quality.UNKNOWN)


def calibration_section(manifest: Any) -> dict:
    """The manifest's ``calibration`` section, checked; ValueError if the model is no calibration."""
    spec = manifest.raw.get("calibration")
    if not isinstance(spec, dict):
        raise ValueError(
            f"model {manifest.name} v{manifest.version} in {manifest.root} has no 'calibration' section: "
            "export it with 'frugalsense train air-calibration'"
        )
    check_spec(spec)
    if [t["name"] for t in spec["terms"]] != list(manifest.features):
        raise ValueError(f"model {manifest.name}: its calibration terms are not its features {manifest.features}")
    return spec


def load_calibration_model(model_dir: str | Path, backend: str = "auto", precision: str = "float") -> Any:
    """Verify and load an exported calibration model's ``precision`` file (its manifest must carry the recipe)."""
    from edge.runtime import load_model
    from edge.runtime.manifest import MANIFEST_FILE, ModelManifest
    from edge.runtime.registry import verify

    path = Path(model_dir)
    if not (path / MANIFEST_FILE).is_file():
        raise ValueError(f"{path}: no exported model here (no {MANIFEST_FILE}); train it with 'make train-air'")
    manifest = verify(ModelManifest.read(path))
    calibration_section(manifest)
    return load_model(manifest, backend=backend, precision=precision)


class CalibrationApplier(ModelDetector):
    """Apply an exported calibration to named input sensors; emits Readings (see the module doc)."""

    kind = "calibrated"

    def __init__(
        self,
        site: str,
        gateway: str,
        inputs: dict[str, str],
        model_dir: str | Path,
        sensor: str,
        quantity: str,
        *,
        model: str = "calibration",
        backend: str = "auto",
        precision: str = "float",
        window_ms: int = DEFAULT_WINDOW_MS,
        drift: CalibrationDriftDetector | None = None,
    ) -> None:
        super().__init__(site, gateway, model=model)
        self.sensor = check_id("sensor", sensor)
        if quantity not in QUANTITY_UNITS:
            raise ValueError(f"calibrated quantity {quantity!r} is not one of {', '.join(QUANTITY_UNITS)}")
        self.quantity, self.unit = quantity, QUANTITY_UNITS[quantity]
        self.window_ms = window_ms
        self.drift = drift
        self.watches_output = drift is not None and drift.sensor == self.sensor  # fed its own calibrated readings
        self.runtime_ = load_calibration_model(model_dir, backend, precision)
        self.model_version = self.runtime_.manifest.version
        self.spec = calibration_section(self.runtime_.manifest)
        missing = [name for name in self.spec["inputs"] if name not in inputs]
        if missing:
            raise ValueError(
                f"model {self.runtime_.manifest.name} reads {', '.join(self.spec['inputs'])}; "
                f"no sensor is given for {', '.join(missing)}"
            )
        self.inputs = {name: check_id(f"{name} sensor", inputs[name]) for name in self.spec["inputs"]}
        self.role_of = {s: name for name, s in self.inputs.items()}
        self.reset()

    @property
    def drift_open(self) -> bool:
        """Whether the drift detector's ``recalibration_needed`` alert is open now."""
        return self.drift is not None and self.drift.alert_ is not None

    def reset(self) -> None:
        """Forget the latest inputs and the last step (and the drift copy's history)."""
        self.latest_: dict[str, tuple[int, float, str]] = {}
        self.last_step_ms_: int | None = None
        if self.drift is not None:
            self.drift.reset()

    def _model_change(self, new: Any, old: Any) -> str | None:
        """A new version must read the same raw inputs and give one output; its terms come with it."""
        spec = calibration_section(new)
        if list(spec["inputs"]) != list(self.spec["inputs"]):
            raise ModelSwapError(
                f"{self.model!r}: model {new.name} v{new.version} reads {', '.join(spec['inputs'])}, "
                f"not {', '.join(self.spec['inputs'])}: map its inputs in the config",
                "features_changed",
            )
        if (new.task, len(new.output_names)) != (old.task, len(old.output_names)):
            raise ModelSwapError(
                f"{self.model!r}: model {new.name} v{new.version} is not a one-output regression", "outputs_changed"
            )
        return None

    def _take_model(self, backend: Any) -> None:
        self.spec = calibration_section(backend.manifest)

    def update(self, reading: Reading) -> list[Output]:
        """Take one reading; return the calibrated Reading of the step it completes, if any."""
        out: list[Output] = []
        if self.drift is not None:
            self.drift.update(reading)  # its alerts are published by its own model entry, not here
        role = self.role_of.get(reading.sensor)
        if role is None:
            return out
        value = np.nan if reading.value is None else float(reading.value)
        self.latest_[role] = (reading.time_ms, value, reading.quality.value)
        if len(self.latest_) < len(self.inputs):
            return out
        times = [t for t, _, _ in self.latest_.values()]
        newest, oldest = max(times), min(times)
        if newest - oldest > self.window_ms or (self.last_step_ms_ is not None and oldest <= self.last_step_ms_):
            return out
        self.last_step_ms_ = newest
        qualities = {Quality(q) for _, _, q in self.latest_.values()}
        raw = np.array([[self.latest_[name][1] for name in self.spec["inputs"]]])
        if qualities & set(_SKIP) or not np.all(np.isfinite(raw)):
            return out
        calibrated = float(self.calibrate(raw)[0])
        suspect = Quality.SUSPECT in qualities or self.drift_open
        quality = Quality.SUSPECT if suspect else Quality.OK
        made = Reading(newest, self.site, self.gateway, self.sensor, self.quantity, calibrated, self.unit, quality)
        if self.drift is not None and self.watches_output:
            self.drift.update(made)  # its outputs, as the raw readings', are published by its own model entry
        out.append(made)
        return out

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated values of (n, inputs) raw rows: the manifest's terms, then the model."""
        terms = compute_terms(raw, self.spec).astype(np.float32)
        return np.asarray(self.runtime_.predict(terms), dtype=np.float64)[:, 0]

    def state(self) -> dict:
        """The latest reading of each input, the last step decided, the drift copy's state."""
        return {
            "latest": {role: [t, v if np.isfinite(v) else None, q] for role, (t, v, q) in self.latest_.items()},
            "last_step_ms": self.last_step_ms_,
            "drift": self.drift.state() if self.drift is not None else None,
        }

    def restore(self, state: dict) -> None:
        """Take back ``state()``; ValueError if it is malformed or of other inputs."""
        owner = f"calibration {self.model!r}"
        latest = {}
        for role, item in sj.mapping(sj.field(state, "latest", owner), "latest", set(self.inputs)).items():
            t, v, q = sj.listing(item, f"latest {role}", 3)
            value = np.nan if v is None else sj.real(v, f"latest {role} value")
            latest[role] = (sj.integer(t, "time"), value, Quality(q).value)
        last = sj.optional(sj.field(state, "last_step_ms", owner), sj.integer, "last_step_ms")
        drift = sj.field(state, "drift", owner)
        if (drift is None) != (self.drift is None):
            raise ValueError(
                f"{owner}: drift state {'missing' if drift is None else 'given'}, but this applier "
                f"{'watches' if self.drift is not None else 'watches no'} drift model"
            )
        if self.drift is not None:
            self.drift.restore(drift)
        self.latest_, self.last_step_ms_ = latest, last


__all__ = ["DEFAULT_WINDOW_MS", "CalibrationApplier", "calibration_section", "load_calibration_model"]
