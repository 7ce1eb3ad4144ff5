"""Export a fitted scikit-learn model to every format the gateways run, with a manifest.

One registry, :data:`EXPORTERS`, maps a format name to the function writing it;
:func:`export_model` writes the chosen formats, a parity sample and ``manifest.json``
(name, version, task, features, scaling, outputs, sha256 and size per file) into a
model directory, usually ``models/<name>/``. See ``docs/models.md``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.contracts import ContractError, check_id
from edge.runtime.manifest import FORMAT, MANIFEST_FILE, SCHEMA_VERSION, ModelManifest, sha256_file
from edge.runtime.numpy_backend import network_bytes, npz_bytes
from training.export.network import Extracted, UnsupportedModelError, extract
from training.export.onnx_export import onnx_float_bytes, onnx_int8_bytes
from training.export.tflite_int8 import build_tflite

__all__ = [
    "DEFAULT_FORMATS",
    "EXPORTERS",
    "ExportError",
    "ExportWarning",
    "Exporter",
    "UnsupportedModelError",
    "export_model",
]

# Parity sample kept next to the model: enough rows for a 99 % agreement check to mean
# something, few enough that the file stays well under the 64 KB a shipped file may take.
PARITY_ROWS = 1000
PARITY_MAX_VALUES = 10_000


# The parity targets (docs/models.md); export warns when a file misses them.
INT8_MEAN_ERROR = 0.02  # mean |output - reference| as a fraction of the output range
DECISION_AGREEMENT = 0.99


class ExportWarning(UserWarning):
    """An exported file runs but strays from the float model more than the parity targets allow."""


class ExportError(ValueError):
    """An export request that cannot be honoured (bad name, features, formats)."""


@dataclass(frozen=True)
class Exporter:
    """How one format is written: ``write(extracted, X_scaled, **options) -> (bytes, info)``."""

    suffix: str
    write: Callable[..., tuple[bytes, dict]]
    needs_dense: bool = True


def _need_net(ex: Extracted, fmt: str):
    if ex.network is None:
        raise UnsupportedModelError(f"format {fmt} needs a dense model: {ex.not_dense_reason}")
    return ex.network


def _numpy(ex, X_scaled, **_):
    net = _need_net(ex, "numpy")
    return network_bytes(net.weights, net.biases, net.activations), {}


def _onnx_int8(ex, X_scaled, quant_format="qdq", per_channel=True, **_):
    return onnx_int8_bytes(_need_net(ex, "onnx_int8"), X_scaled, quant_format, per_channel)


def _tflite_int8(ex, X_scaled, per_channel=True, **_):
    return build_tflite(_need_net(ex, "tflite_int8"), X_scaled, per_channel=per_channel)


EXPORTERS: dict[str, Exporter] = {
    "onnx_float": Exporter(".onnx", lambda ex, X, **_: onnx_float_bytes(ex), needs_dense=False),
    "onnx_int8": Exporter(".int8.onnx", _onnx_int8),
    "tflite_int8": Exporter(".int8.tflite", _tflite_int8),
    "numpy": Exporter(".npz", _numpy),
}
DEFAULT_FORMATS = tuple(EXPORTERS)


def export_model(
    model,
    X_calib,
    out_dir,
    name: str,
    version: str | int,
    *,
    formats=DEFAULT_FORMATS,
    feature_names=None,
    output_names=None,
    decision_threshold: float | None = None,
    X_check=None,
    description: str = "",
    options: dict | None = None,
) -> ModelManifest:
    """Write ``model`` in ``formats`` to ``out_dir`` with its manifest; return the manifest read back.

    ``X_calib``: raw feature rows representative of the field (standardisation when the
    model has no scaler, int8 calibration). ``X_check``: rows for the parity sample
    (default: a seeded subsample of ``X_calib``). ``options``: per-format keyword
    options, e.g. ``{"onnx_int8": {"quant_format": "qoperator"}}``.
    """
    try:
        check_id("model name", name)
    except ContractError as e:
        raise ExportError(str(e)) from None
    unknown = [f for f in formats if f not in EXPORTERS]
    if unknown or not formats:
        raise ExportError(f"unknown format(s) {unknown} (known: {', '.join(EXPORTERS)})")
    X = np.asarray(X_calib, dtype=np.float64)
    ex = extract(model, X, output_names)
    n = X.shape[1]
    features = [f"f{i}" for i in range(n)] if feature_names is None else [str(f) for f in feature_names]
    if len(features) != n or len(set(features)) != n:
        raise ExportError(f"feature_names must be {n} distinct names, got {len(features)}")
    decision = _decision(ex, decision_threshold)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    X_scaled = ((X - ex.mean) / ex.scale).astype(np.float32)
    files = {}
    for fmt in formats:
        data, info = EXPORTERS[fmt].write(ex, X_scaled, **(options or {}).get(fmt, {}))
        files[fmt] = _write(out, f"{name}{EXPORTERS[fmt].suffix}", data, info)
        if ex.network is not None:
            files[fmt]["parameters"] = ex.network.parameters
    files["parity"] = _write(out, f"{name}.parity.npz", *_parity_sample(ex, X, X_check))
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": str(version),
        "task": ex.task,
        "description": description,
        "model_type": ex.model_type,
        "input": {
            "features": features,
            "dtype": "float32",
            "shape": [None, n],
            "scaling": {"mean": ex.mean.tolist(), "scale": ex.scale.tolist()},
        },
        "output": {
            "kind": "probabilities" if ex.task == "classification" else "values",
            "names": ex.output_names,
            "shape": [None, len(ex.output_names)],
            "decision": decision,
        },
        "network": None
        if ex.network is None
        else {
            "layers": [
                [int(W.shape[0]), int(W.shape[1]), a]
                for W, a in zip(ex.network.weights, ex.network.activations, strict=True)
            ],
            "parameters": ex.network.parameters,
        },
        "files": files,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    manifest["export_check"] = _check_files(ModelManifest.read(out))
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return ModelManifest.read(out)


def _check_files(manifest: ModelManifest) -> dict:
    """Run each written file on its runtime against the parity sample; warn when int8 loses too much.

    Recorded in the manifest (``export_check``) so a model card can quote it.
    """
    from edge.runtime import RuntimeUnavailable, available_backends, load
    from edge.runtime.manifest import FORMAT_RUNTIMES

    with np.load(manifest.files["parity"].path, allow_pickle=False) as z:
        X, ref = z["X"], z["outputs"].astype(np.float64)
    span = 1.0 if manifest.task == "classification" else float(max(1.0, np.ptp(ref)))
    decides = manifest.task == "classification" or manifest.decision is not None
    checks = {}
    for fmt in manifest.formats:
        runtime = next((r for r in FORMAT_RUNTIMES[fmt] if r in available_backends()), None)
        if runtime is None:
            checks[fmt] = {"runtime": None}
            continue
        try:
            out = load(manifest.files[fmt], runtime).predict(X)
        except RuntimeUnavailable:
            checks[fmt] = {"runtime": None}
            continue
        err = np.abs(out - ref)
        check = {
            "runtime": runtime,
            "rows": int(len(X)),
            "max_abs_error": round(float(err.max()), 6),
            "mean_abs_error": round(float(err.mean()), 6),
        }
        if decides:
            check["decision_agreement"] = round(float(np.mean(manifest.decide(out) == manifest.decide(ref))), 4)
        checks[fmt] = check
        if err.mean() > INT8_MEAN_ERROR * span or check.get("decision_agreement", 1.0) < DECISION_AGREEMENT:
            warnings.warn(
                ExportWarning(
                    f"{manifest.name}: {fmt} on {runtime} is far from the float model on the parity "
                    f"rows (mean error {err.mean():.3g}, decisions agree on "
                    f"{check.get('decision_agreement', float('nan')):.1%}): put a StandardScaler in the "
                    f"Pipeline, or ship a float format"
                ),
                stacklevel=3,
            )
    return checks


def _decision(ex: Extracted, threshold):
    if ex.task == "classification":
        if threshold is not None:
            raise ExportError("decision_threshold is for regressions; a classifier decides by argmax")
        return {"kind": "argmax"}
    if threshold is None:
        return None
    if not np.isfinite(threshold):
        raise ExportError("decision_threshold must be a finite number")
    return {"kind": "threshold", "column": 0, "threshold": float(threshold)}


def _parity_sample(ex: Extracted, X: np.ndarray, X_check) -> tuple[bytes, dict]:
    rows = np.asarray(X if X_check is None else X_check, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != X.shape[1] or not np.all(np.isfinite(rows)):
        raise ExportError(f"X_check must be finite rows of {X.shape[1]} features")
    keep = min(len(rows), PARITY_ROWS, max(1, PARITY_MAX_VALUES // rows.shape[1]))
    if keep < len(rows):
        rows = rows[np.sort(np.random.default_rng(0).choice(len(rows), keep, replace=False))]
    rows = rows.astype(np.float32)  # the reference must see exactly the rows the file stores
    outputs = ex.reference_outputs(rows.astype(np.float64))
    data = npz_bytes({"X": rows, "outputs": outputs.astype(np.float32)})
    return data, {"rows": int(keep), "reference": "scikit-learn " + ex.model_type}


def _write(out: Path, filename: str, data: bytes, info: dict) -> dict:
    path = out / filename
    path.write_bytes(data)
    return {"path": filename, "sha256": sha256_file(path), "bytes": len(data), **info}
