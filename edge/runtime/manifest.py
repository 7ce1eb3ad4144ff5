"""The model manifest: what a model directory holds, what its inputs and outputs mean.

One ``manifest.json`` per model directory (``models/<name>/``), written by
``training.export`` and read here on the device. It names the model and its version,
the task, the input features in order with the standardisation every backend applies,
the outputs and how they become a decision, and for every file its format, sha256 and
size, so the registry can refuse a file that is not the one that was exported.

>>> m = ModelManifest.from_dict(EXAMPLE, root=".")
>>> m.name, m.task, m.classes, sorted(m.files)
('leak_demo', 'classification', ['normal', 'leak'], ['numpy'])
>>> m.prepare([[41.0, 0.5]]).round(3).tolist()
[[0.5, -1.0]]
>>> m.decide(np.array([[0.9, 0.1], [0.3, 0.7]])).tolist()
[0, 1]
>>> m.prepare([[41.0]])
Traceback (most recent call last):
...
edge.runtime.manifest.InputError: model leak_demo expects 2 features (night_flow, dp), got 1 per row
>>> m.prepare([[41.0, float("nan")]])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
edge.runtime.manifest.InputError: model leak_demo: feature 'dp' is not a finite number in row 0 (nan); the ...
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "frugalsense-model-manifest"
SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
TASKS = ("classification", "regression")
# Each model format and the runtimes that can run it, preferred first.
FORMAT_RUNTIMES: dict[str, tuple[str, ...]] = {
    "onnx_float": ("onnxruntime",),
    "onnx_int8": ("onnxruntime",),
    "tflite_int8": ("litert",),
    "numpy": ("numpy",),
}
# Files listed in a manifest that are not a model format (checked like the others).
AUX_FILES = ("parity",)

EXAMPLE = {
    "format": FORMAT,
    "schema_version": SCHEMA_VERSION,
    "name": "leak_demo",
    "version": "1",
    "task": "classification",
    "input": {
        "features": ["night_flow", "dp"],
        "dtype": "float32",
        "scaling": {"mean": [40.0, 1.0], "scale": [2.0, 0.5]},
    },
    "output": {"kind": "probabilities", "names": ["normal", "leak"], "decision": {"kind": "argmax"}},
    "files": {"numpy": {"path": "leak_demo.npz", "sha256": "0" * 64, "bytes": 0}},
}


class ManifestError(ValueError):
    """A manifest is missing, unreadable or inconsistent; the message names the file and the key."""


class InputError(ValueError):
    """Feature rows given to a model do not fit its input contract."""


@dataclass(frozen=True)
class ModelFile:
    """One file of a model directory, as the manifest describes it."""

    key: str  # the format ("onnx_int8", ...) or an auxiliary name ("parity")
    path: Path
    sha256: str
    bytes: int
    info: dict = field(default_factory=dict)  # format-specific: quantisation, output name...
    manifest: ModelManifest | None = field(default=None, repr=False, compare=False)

    @property
    def format(self) -> str:
        return self.key

    def actual_sha256(self) -> str:
        return sha256_file(self.path)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (models may outgrow memory on a small gateway)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ModelManifest:
    """A parsed, checked ``manifest.json``; ``prepare``/``finish``/``decide`` apply its contract."""

    name: str
    version: str
    task: str
    features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    output_kind: str
    output_names: list[str]
    decision: dict | None
    files: dict[str, ModelFile]
    raw: dict = field(repr=False)
    root: Path = field(repr=False, default=Path("."))

    # -- reading -----------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path) -> ModelManifest:
        """Read ``path`` (a manifest file or a model directory holding ``manifest.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"{path}: no model manifest here") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError(f"{path}: not a readable JSON manifest ({e})") from None
        return cls.from_dict(data, root=path.parent, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, root: str | Path, source: str = "manifest") -> ModelManifest:
        def need(obj, key, kind, where=""):
            if not isinstance(obj, dict) or key not in obj:
                raise ManifestError(f"{source}: missing key '{where}{key}'")
            if not isinstance(obj[key], kind):
                raise ManifestError(f"{source}: '{where}{key}' must be a {kind.__name__}")
            return obj[key]

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"{source}: not a frugalsense model manifest (format must be '{FORMAT}')")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ManifestError(
                f"{source}: schema_version {data.get('schema_version')!r} is not "
                f"supported (this gateway reads {SCHEMA_VERSION})"
            )
        name, version = need(data, "name", str), str(need(data, "version", (str, int)))
        task = need(data, "task", str)
        if task not in TASKS:
            raise ManifestError(f"{source}: task '{task}' is not one of {', '.join(TASKS)}")
        inp, out = need(data, "input", dict), need(data, "output", dict)
        features = need(inp, "features", list, "input.")
        scaling = need(inp, "scaling", dict, "input.")
        mean = np.asarray(need(scaling, "mean", list, "input.scaling."), dtype=np.float64)
        scale = np.asarray(need(scaling, "scale", list, "input.scaling."), dtype=np.float64)
        if not features or len(mean) != len(features) or len(scale) != len(features):
            raise ManifestError(
                f"{source}: input.features, scaling.mean and scaling.scale must have the same non-zero length"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ManifestError(f"{source}: input.scaling must be finite with scale > 0")
        names = [str(n) for n in need(out, "names", list, "output.")]
        kind = need(out, "kind", str, "output.")
        if (task, kind) not in (("classification", "probabilities"), ("regression", "values")):
            raise ManifestError(f"{source}: output.kind '{kind}' does not fit task '{task}'")
        if task == "classification" and len(names) < 2:
            raise ManifestError(f"{source}: a classifier needs at least 2 class names")
        decision = out.get("decision")
        if decision is not None:
            _check_decision(decision, len(names), source)
        m = cls(
            name=name,
            version=version,
            task=task,
            features=[str(f) for f in features],
            mean=mean,
            scale=scale,
            output_kind=kind,
            output_names=names,
            decision=decision,
            files={},
            raw=data,
            root=Path(root),
        )
        for key, entry in need(data, "files", dict).items():
            sha = need(entry, "sha256", str, f"files.{key}.")
            size = need(entry, "bytes", int, f"files.{key}.")
            rel = need(entry, "path", str, f"files.{key}.")
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise ManifestError(f"{source}: files.{key}.path must stay inside the model directory")
            if key not in FORMAT_RUNTIMES and key not in AUX_FILES:
                raise ManifestError(
                    f"{source}: unknown file kind '{key}' (known: {', '.join([*FORMAT_RUNTIMES, *AUX_FILES])})"
                )
            info = {k: v for k, v in entry.items() if k not in ("path", "sha256", "bytes")}
            m.files[key] = ModelFile(key, Path(root) / rel, sha.lower(), size, info, m)
        if not any(k in FORMAT_RUNTIMES for k in m.files):
            raise ManifestError(f"{source}: lists no model file")
        return m

    # -- contract ----------------------------------------------------------
    @property
    def classes(self) -> list[str] | None:
        return self.output_names if self.task == "classification" else None

    @property
    def formats(self) -> list[str]:
        return [k for k in self.files if k in FORMAT_RUNTIMES]

    def prepare(self, X) -> np.ndarray:
        """Raw feature rows -> standardised float32 rows, or InputError saying what is wrong."""
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise InputError(f"model {self.name}: feature rows are not numbers ({e})") from None
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            got = X.shape[1] if X.ndim == 2 else f"shape {X.shape}"
            raise InputError(
                f"model {self.name} expects {len(self.features)} features "
                f"({', '.join(self.features)}), got {got} per row"
            )
        # An overflow (numpy warns) is caught below with a message; np.errstate would cost more
        # than the rest of this method on every call.
        scaled = ((X - self.mean) / self.scale).astype(np.float32)
        # Checked in float32, what the model gets. A NaN or inf anywhere makes the sum of squares
        # non-finite: one cheap reduction on the common path, then the slow path finds which input
        # it was (the sum can also overflow: then the element check finds nothing and all is well).
        if not math.isfinite(np.vdot(scaled, scaled)) and not np.isfinite(scaled).all():
            bad = ~np.isfinite(X)
            if bad.any():
                row, col = map(int, np.argwhere(bad)[0])
                raise InputError(
                    f"model {self.name}: feature '{self.features[col]}' is not a finite "
                    f"number in row {row} ({X[row, col]}); the caller must report "
                    f"insufficient data instead"
                )
            row, col = map(int, np.argwhere(~np.isfinite(scaled))[0])
            raise InputError(
                f"model {self.name}: feature '{self.features[col]}' in row {row} ({X[row, col]}) "
                f"is far outside the training range"
            )
        return scaled

    def finish(self, raw: np.ndarray) -> np.ndarray:
        """A model file's output -> (n, k) float32: a binary classifier's p(positive) gains its complement."""
        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim == 1:
            raw = raw.reshape(-1, 1)
        k = len(self.output_names)
        if self.task == "classification" and k == 2 and raw.shape[1] == 1:
            raw = np.concatenate((1.0 - raw, raw), axis=1)
        if raw.shape[1] != k:
            raise InputError(f"model {self.name}: a model file gave {raw.shape[1]} outputs, the manifest names {k}")
        return raw

    def decide(self, outputs: np.ndarray) -> np.ndarray:
        """Outputs -> one integer decision per row (class index, or 0/1 against a threshold)."""
        outputs = np.asarray(outputs)
        d = self.decision or {"kind": "argmax"}
        if d["kind"] == "argmax":
            if self.task != "classification":
                raise ManifestError(f"model {self.name}: a regression has no decision threshold in its manifest")
            return np.argmax(outputs, axis=1).astype(np.int64)
        return (outputs[:, d.get("column", 0)] >= d["threshold"]).astype(np.int64)

    # -- writing (used by training.export) ---------------------------------
    def to_dict(self) -> dict:
        return copy.deepcopy(self.raw)


def _check_decision(decision, n_outputs: int, source: str) -> None:
    if not isinstance(decision, dict) or decision.get("kind") not in ("argmax", "threshold"):
        raise ManifestError(f"{source}: output.decision.kind must be 'argmax' or 'threshold'")
    if decision["kind"] == "threshold":
        t, col = decision.get("threshold"), decision.get("column", 0)
        if not isinstance(t, (int, float)) or not math.isfinite(t):
            raise ManifestError(f"{source}: output.decision.threshold must be a finite number")
        if not isinstance(col, int) or not 0 <= col < n_outputs:
            raise ManifestError(f"{source}: output.decision.column must be an output index below {n_outputs}")
