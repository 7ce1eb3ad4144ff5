"""The benchmark's figures measured on one core without services: GEMM roofline, inference per backend, models.

Sections ``inference`` and ``models`` of ``python -m scripts.bench``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scripts import bench_inference
from scripts.bench_record import figure, interleaved, round_sig, side

ROOT = Path(__file__).resolve().parent.parent


# ---- 1. inference -----------------------------------------------------------------------


def gemm_roofline(quick: bool) -> tuple[dict, float]:
    """The core's float32 matrix-multiply rate (GFLOP/s): the roofline batched inference is held to."""
    n = 1024 if quick else 2048
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    a @ b
    rates = []
    for _ in range(3 if quick else 5):
        t0 = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    f = figure(
        f"roofline: numpy float32 GEMM {n}x{n}, one thread",
        rates,
        "GFLOP/s",
        note="the core's measured matrix-multiply rate; batched inference is expressed as a fraction of it",
    )
    return f, statistics.median(rates)


def macs_of(layers) -> int:
    """Multiply-accumulates per window of a network's ``(n_in, n_out, ...)`` layers."""
    return int(sum(n_in * n_out for n_in, n_out, *_ in layers or []))


def inference_figures(quick: bool, roofline: float) -> list[dict]:
    """Per model and backend, batch 1 and batch 1024 against the plain numpy forward (and sklearn)."""
    from edge.runtime import available_backends, load
    from edge.runtime.manifest import FORMAT_RUNTIMES, ModelManifest
    from edge.runtime.numpy_backend import forward, load_network

    figs = []
    reps, inner1, inner_big = (5, 20, 2) if quick else (15, 200, 10)
    with tempfile.TemporaryDirectory() as tmp:
        refs = bench_inference.reference_models(Path(tmp))
        shipped = [
            (m.name, None, None, {"qdq": m})
            for m in (ModelManifest.read(p.parent) for p in sorted((ROOT / "models").glob("*/manifest.json")))
        ]
        for name, model, X, manifests in refs + shipped:
            m = manifests["qdq"]
            if X is None:
                with np.load(m.files["parity"].path, allow_pickle=False) as z:
                    X = z["X"]
            big = np.resize(X, (1024, X.shape[1])).astype(np.float32)
            one = big[:1]
            macs = macs_of((m.raw.get("network") or {}).get("layers"))
            cands: dict[str, dict] = {}
            for fmt in m.formats:
                runtime = next((r for r in FORMAT_RUNTIMES.get(fmt, ()) if r in available_backends()), None)
                if runtime is None:
                    continue
                backend = load(m.files[fmt], runtime)
                cands[f"{fmt} on {runtime}"] = {
                    1: (lambda b=backend, x=one: b.predict(x)),
                    1024: (lambda b=backend, x=big: b.predict(x)),
                }
            W, b, acts = load_network(m.files["numpy"].path)
            s1, sb = m.prepare(one), m.prepare(big)
            # Each candidate binds this model's arrays: the calls are timed before the loop moves on.
            net = (W, b, acts)
            cands["numpy forward"] = {1: lambda n=net, x=s1: forward(*n, x), 1024: lambda n=net, x=sb: forward(*n, x)}
            if model is not None:
                cands["sklearn predict"] = {
                    1: lambda m=model, x=one: m.predict(x),
                    1024: lambda m=model, x=big: m.predict(x),
                }
            for batch, inner in ((1, inner1), (1024, inner_big)):
                t = interleaved({k: v[batch] for k, v in cands.items()}, reps, inner)
                ref = statistics.median(t["numpy forward"])
                skl = statistics.median(t["sklearn predict"]) if "sklearn predict" in t else None
                if batch > 1:  # figures per window
                    t = {k: [x / batch for x in v] for k, v in t.items()}
                    ref, skl = ref / batch, None if skl is None else skl / batch
                for label, times in t.items():
                    if label in ("numpy forward", "sklearn predict"):
                        continue
                    med = statistics.median(times)
                    comp = {"numpy_forward": side("numpy forward (plain, no checks)", t["numpy forward"], "us")}
                    if skl is not None:
                        comp["sklearn_predict"] = side("scikit-learn predict", t["sklearn predict"], "us")
                    if batch == 1:
                        ratio = med / ref
                        ok = ratio <= 1.5 and (skl is None or skl / med >= 10)
                        target = "<= 1.5x numpy forward" + (" and >= 10x faster than sklearn predict" if skl else "")
                        if skl is not None:
                            comp["sklearn_over_this"] = round_sig(skl / med)
                        figs.append(
                            figure(
                                f"inference batch 1: {name}, {label}",
                                times,
                                "us/window",
                                target=target,
                                met=ok,
                                comparison=comp,
                                ratio=ratio,
                            )
                        )
                    else:
                        gflops = 2 * macs / (med * 1e-6) / 1e9 if macs else None
                        frac = gflops / roofline if gflops else None
                        comp["roofline_gflops"] = round_sig(roofline)
                        comp["achieved_gflops"] = None if gflops is None else round_sig(gflops)
                        comp["numpy_forward_fraction_of_roofline"] = (
                            round_sig(2 * macs / (ref * 1e-6) / 1e9 / roofline) if macs else None
                        )
                        if skl is not None:
                            comp["sklearn_over_this"] = round_sig(skl / med)
                        figs.append(
                            figure(
                                f"inference batch 1024: {name}, {label}",
                                times,
                                "us/window",
                                target=">= 20% of the GEMM roofline",
                                met=None if frac is None else frac >= 0.2,
                                comparison=comp,
                                ratio=frac,
                                note=f"{macs} MACs/window; ratio = fraction of roofline",
                            )
                        )
            print(f"inference: {name}", file=sys.stderr, flush=True)
    return figs


# ---- 5. models --------------------------------------------------------------------------


def model_figures(quick: bool) -> list[dict]:
    """Per shipped model its file sizes, parameters and training time; the leak scenario rate."""
    from edge.runtime.manifest import ModelManifest

    figs = []
    for p in sorted((ROOT / "models").glob("*/manifest.json")):
        m = ModelManifest.read(p.parent)
        net = m.raw.get("network") or {}
        card = json.loads((p.parent / "card.json").read_text()) if (p.parent / "card.json").exists() else {}
        sizes = {fmt: m.files[fmt].bytes for fmt in m.formats}
        build = _find_key(card, "build_seconds")
        figs.append(
            figure(
                f"model: {m.name}",
                [min(sizes.values())],
                "bytes (smallest file)",
                comparison={
                    "file_bytes": sizes,
                    "parameters": net.get("parameters"),
                    "macs_per_window": macs_of(net.get("layers")),
                    "training_seconds": build,
                    "training_seconds_source": "card.json build_seconds (simulate+train+export)"
                    if build is not None
                    else "not recorded in the card",
                },
            )
        )
    from scripts.bench_scenarios import generation_rate

    n = 4 if quick else 20
    rates = []
    for _ in range(1 if quick else 2):
        r = generation_rate("Net1", n, workers=1, days=14 if quick else 30)
        rates.append(r["scenarios_per_s"])
    figs.append(
        figure(
            "leak scenario generation rate (Net1, EPANET emitters, one worker)",
            rates,
            "scenarios/s",
            comparison={"days_per_scenario": r["days"], "step_min": r["step_min"], "scenarios": n},
        )
    )
    return figs


def _find_key(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            if (found := _find_key(v, key)) is not None:
                return found
    return None
