"""Handing a verified model to the detectors that run it, and proving they score with it before "applied".

The receiver (``receiver.py``) verifies, installs, loads and smoke-tests a new version;
:class:`DetectorHandOver` then gives it to every detector whose ``model_name`` it is
(``Detector.use_model``: the learned leak, air pattern, sensor fault and NO2 virtual
sensor detectors, and the drift detector through its estimator). In this order:

1. every such detector says it can take it (``check_model``); one that cannot
   (ModelSwapError: features it cannot compute, outputs it cannot read) refuses the
   update for all of them, and none has changed;
2. under the detectors' lock (the one the runner holds while it feeds them), each one
   takes it (``use_model``: state kept when the features are the same, else reset with
   the reason logged);
3. the smoke-test windows are scored through each detector's ``model_runtime``, the
   object its next decision calls: it must be the new version and give the new
   model's outputs. Only then is the update reported ``applied``.

A failure in 2 or 3 gives every detector its previous model back (HandOverFailed) and the
receiver rolls back. A detector that had reset for the new version stays reset.

>>> class Rule:
...     model_name, model = None, "night_flow"
>>> DetectorHandOver([Rule()]).users("leak-mlp-net3")
[]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.detectors.base import Detector

log = logging.getLogger(__name__)


class HandOverFailed(Exception):
    """A detector did not end up scoring with the new model; every detector runs its previous one again."""


@dataclass(frozen=True)
class Candidate:
    """A model not loaded yet, as ``check_model`` reads it (only its manifest)."""

    manifest: Any


class DetectorHandOver:
    """The detectors of one gateway, as the model-update receiver reaches them."""

    def __init__(self, detectors: Iterable[Detector], lock: Any = None):
        self.detectors = list(detectors)
        self.lock = lock if lock is not None else threading.RLock()

    def users(self, name: str) -> list[Detector]:
        """The detectors whose next decision scores with model ``name``."""
        return [d for d in self.detectors if d.model_name == name]

    def runtimes(self) -> list[Any]:
        """The loaded model of every detector that runs one (the bundle's models, for the receiver to adopt)."""
        return [d.model_runtime for d in self.detectors if d.model_name is not None]

    def check(self, name: str, manifest: Any) -> list[str]:
        """Raise ModelSwapError if a detector running ``name`` cannot take this version; else what each will do."""
        return [self._plan(d, d.check_model(Candidate(manifest))) for d in self.users(name)]

    def hand_over(self, name: str, backend: Any, windows: np.ndarray) -> str:
        """Give ``backend`` to every detector running ``name`` and score ``windows`` through each; return a summary.

        Raises ModelSwapError (a detector cannot take it) or HandOverFailed (one took it but
        does not score with it); in both cases every detector runs its previous model again.
        """
        users = self.users(name)
        if not users:
            return "no detector runs it yet"
        version = backend.manifest.version
        with self.lock:
            plans = [self._plan(d, d.check_model(backend)) for d in users]  # before any detector changes
            before = [(d, d.model_runtime) for d in users]
            expected = backend.predict(windows)
            try:
                for detector in users:
                    detector.use_model(backend)
                for detector in users:
                    self._scores_with(detector, backend, windows, expected)
            except Exception as exc:
                self._undo(before, backend)
                if isinstance(exc, HandOverFailed):
                    raise
                raise HandOverFailed(f"a detector could not take v{version}: {exc}") from exc
        return f"scored {len(windows)} smoke-test windows through {', '.join(plans)}"

    @staticmethod
    def _plan(detector: Detector, why: str | None) -> str:
        return f"{detector.model} ({'state kept' if why is None else 'state reset: ' + why})"

    @staticmethod
    def _scores_with(detector: Detector, backend: Any, windows: np.ndarray, expected: np.ndarray) -> None:
        runtime = detector.model_runtime
        m = backend.manifest
        if runtime is None or runtime.manifest.version != m.version:
            running = "no model" if runtime is None else f"v{runtime.manifest.version}"
            raise HandOverFailed(f"{detector.model} took {m.name} v{m.version} but still scores with {running}")
        got = runtime.predict(windows)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-5, atol=1e-6, equal_nan=False):
            raise HandOverFailed(
                f"{detector.model} scores the smoke-test windows otherwise than {m.name} v{m.version} "
                f"on {backend.format}/{backend.name}"
            )

    @staticmethod
    def _undo(before: list[tuple[Detector, Any]], backend: Any) -> None:
        for detector, runtime in before:
            if detector.model_runtime is runtime or runtime is None:
                continue
            try:
                detector.use_model(runtime)
                log.warning(
                    "%s: back on %s v%s (the hand-over of v%s failed)",
                    detector.model,
                    runtime.manifest.name,
                    runtime.manifest.version,
                    backend.manifest.version,
                )
            except Exception:  # the previous model cannot be refused in principle; log it, undo the others
                log.exception("%s: could not go back to v%s", detector.model, runtime.manifest.version)
