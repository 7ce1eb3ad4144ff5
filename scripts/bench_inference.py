"""Benchmark model inference per backend and format; writes docs/inference-bench.json.

For two reference MLPs fitted here (the field notes' 8->32->16->1, and a 32->128->64->1
one past the ~10k-parameter point where int8 starts to pay) and every model shipped in
``models/*/``: median (min, max) latency at batch 1 and batch 1024 on one thread, for
each format on its runtime (onnx_int8 both as QDQ and QOperator), next to scikit-learn's
``predict_proba``/``predict`` and a plain numpy forward pass; file size and parameters.
A benchmark, not a test: nothing here asserts a time.

    .venv/bin/python scripts/bench_inference.py [--out docs/inference-bench.json] [--quick]
"""

from __future__ import annotations

import os

# One thread everywhere, as on a gateway running several services: set before numpy
# loads OpenBLAS, whose worker threads otherwise spin against each other on 2 busy cores
# (measured: a 1024-row matmul 100x slower under load).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402  (imports follow the BLAS settings above, which numpy reads once)
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402  (after the BLAS settings: numpy starts OpenBLAS' threads on import)

from edge.runtime import available_backends, load  # noqa: E402
from edge.runtime.manifest import FORMAT_RUNTIMES, ModelManifest  # noqa: E402
from edge.runtime.numpy_backend import forward, load_network  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def timed(fn, runs: int) -> dict:
    """Median and spread, in microseconds, of ``runs`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up: first calls allocate
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    t = np.array(t) * 1e6
    return {
        "median_us": round(float(np.median(t)), 2),
        "min_us": round(float(t.min()), 2),
        "max_us": round(float(t.max()), 2),
        "runs": runs,
    }


def reference_models(tmp: Path):
    """(name, sklearn model, raw rows, manifest) for the two reference MLPs, exported in all formats."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from training.export import export_model

    out = []
    for name, n_in, hidden in (("mlp_8_32_16_1", 8, (32, 16)), ("mlp_32_128_64_1", 32, (128, 64))):
        rng = np.random.default_rng(0)
        X = rng.normal(size=(4000, n_in)) * rng.uniform(0.1, 10, n_in) + rng.uniform(-50, 50, n_in)
        z = (X - X.mean(0)) / X.std(0)
        y = (z[:, 0] + z[:, 1] * z[:, 2] - 0.5 * z[:, 3] > 0.3).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = make_pipeline(
                StandardScaler(), MLPClassifier(hidden_layer_sizes=hidden, max_iter=200, random_state=0)
            ).fit(X[:3000], y[:3000])
        manifests = {}
        for qf in ("qdq", "qoperator"):
            manifests[qf] = export_model(
                model,
                X[:3000],
                tmp / f"{name}_{qf}",
                name,
                "bench",
                X_check=X[3000:],
                options={"onnx_int8": {"quant_format": qf}},
            )
        out.append((name, model, X[3000:], manifests))
    return out


def bench_model(name, manifests: dict, X: np.ndarray, model, runs1: int, runs_big: int) -> dict:
    """Batch-1 and batch-1024 timings of one model in every format and runtime it ships for."""
    main = manifests["qdq"]
    big = np.resize(X, (1024, X.shape[1])).astype(np.float32)
    one = big[:1]
    rows = {}
    candidates = [(fmt, main) for fmt in main.formats if fmt != "onnx_int8"]
    candidates += [
        (f"onnx_int8_{m.files['onnx_int8'].info.get('quant_format', 'unknown')}", m)
        for m in manifests.values()
        if "onnx_int8" in m.files
    ]
    for label, manifest in candidates:
        fmt = "onnx_int8" if label.startswith("onnx_int8") else label
        runtime = next((r for r in FORMAT_RUNTIMES[fmt] if r in available_backends()), None)
        entry = manifest.files[fmt]
        row = {
            "format": fmt,
            "runtime": runtime,
            "bytes": entry.bytes,
            "parameters": entry.info.get("parameters"),
            "export_check": manifest.raw.get("export_check", {}).get(fmt),
        }
        if runtime:
            backend = load(entry, runtime)
            row["batch1"] = timed(lambda b=backend: b.predict(one), runs1)
            row["batch1024"] = timed(lambda b=backend: b.predict(big), runs_big)
        rows[label] = row
    if "numpy" in main.files:
        W, b, acts = load_network(main.files["numpy"].path)
        s1, sb = main.prepare(one), main.prepare(big)
        rows["numpy_forward_plain"] = {
            "format": "numpy",
            "runtime": "numpy (forward only, no checks)",
            "batch1": timed(lambda: forward(W, b, acts, s1), runs1),
            "batch1024": timed(lambda: forward(W, b, acts, sb), runs_big),
        }
    if model is not None:
        fn = model.predict_proba if hasattr(model, "predict_proba") else model.predict
        rows["sklearn"] = {
            "format": "scikit-learn " + type(model).__name__,
            "runtime": "scikit-learn",
            "batch1": timed(lambda: fn(one), runs1),
            "batch1024": timed(lambda: fn(big), runs_big),
        }
    ratios = {}
    base = rows.get("sklearn", {}).get("batch1")
    for label, row in rows.items():
        if "batch1" in row and base:
            ratios[label] = {
                "sklearn_over_this_batch1": round(base["median_us"] / row["batch1"]["median_us"], 2),
                "sklearn_over_this_batch1024": round(
                    rows["sklearn"]["batch1024"]["median_us"] / row["batch1024"]["median_us"], 2
                ),
            }
    return {
        "name": name,
        "parameters": (main.raw.get("network") or {}).get("parameters"),
        "layers": (main.raw.get("network") or {}).get("layers"),
        "results": rows,
        "speedup_vs_sklearn": ratios,
    }


def main(argv=None) -> int:
    """Time the reference and shipped models; write docs/inference-bench.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "inference-bench.json"))
    ap.add_argument("--quick", action="store_true", help="fewer runs (a smoke check of the script)")
    args = ap.parse_args(argv)
    runs1, runs_big = (30, 5) if args.quick else (500, 50)
    import onnxruntime
    import sklearn

    report = {
        "what": "inference latency per window (batch 1) and per 1024 windows, one thread; "
        "median (min, max) in microseconds",
        "machine": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__,
            "scikit-learn": sklearn.__version__,
            "backends": available_backends(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
        "runs": {"batch1": runs1, "batch1024": runs_big},
        "models": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, X, manifests in reference_models(Path(tmp)):
            report["models"].append(bench_model(name, manifests, X, model, runs1, runs_big))
            print(f"benchmarked {name}", file=sys.stderr)
    for mdir in sorted((REPO / "models").glob("*/manifest.json")):
        m = ModelManifest.read(mdir.parent)
        with np.load(m.files["parity"].path, allow_pickle=False) as z:
            X = z["X"]
        report["models"].append(bench_model(m.name, {"qdq": m}, X, None, runs1, runs_big))
        print(f"benchmarked shipped model {m.name}", file=sys.stderr)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
