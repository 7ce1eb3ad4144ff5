"""Which model file and runtime a model's ``precision`` and ``backend`` mean: a fixed table, never a timing.

The precision names the weights that decide: ``float`` (the ``onnx_float`` and ``numpy``
files hold the same float network) or ``int8`` (``tflite_int8`` and ``onnx_int8``, the
quantised one). Two files of one precision take the same decisions; float and int8 may
not, near a threshold. So the precision is part of the config, and ``backend: auto``
only picks, in a fixed order, the first file of that precision whose runtime is
installed. What a gateway decides then depends on its config and its installed
runtimes, never on which runtime happens to be fastest on the machine.

>>> [f"{fmt} on {rt}" for fmt, rt in AUTO_ORDER["float"]]
['numpy on numpy', 'onnx_float on onnxruntime']
>>> [f"{fmt} on {rt}" for fmt, rt in AUTO_ORDER["int8"]]
['tflite_int8 on litert', 'onnx_int8 on onnxruntime']
>>> FILES = ["onnx_float", "onnx_int8", "tflite_int8", "numpy"]
>>> choose(FILES, "auto", "int8", installed={"onnxruntime", "numpy"}).format
'onnx_int8'
>>> choose(FILES, "onnxruntime", "int8", installed={"onnxruntime", "numpy"}).format
'onnx_int8'
>>> pair_problem("numpy", "int8")
'numpy runs only the float weights; use precision: float, or backend: onnxruntime or litert for int8'
>>> pair_problem("litert", "float")
'litert runs only the int8 weights; use precision: int8, or backend: onnxruntime or numpy for float'
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from edge.runtime.base import RuntimeUnavailable
from edge.runtime.manifest import FORMAT_RUNTIMES, ManifestError

RUNTIMES = ("onnxruntime", "litert", "numpy")
BACKEND_CHOICES = ("auto", *RUNTIMES)
PRECISIONS = ("float", "int8")
FORMAT_PRECISION = {"onnx_float": "float", "numpy": "float", "tflite_int8": "int8", "onnx_int8": "int8"}
# backend auto: the files of each precision in the order tried, with the runtime each needs.
AUTO_ORDER: dict[str, tuple[tuple[str, str], ...]] = {
    # float: numpy first. The same float network, no runtime library in memory: a gateway's peak RSS is
    # 70.8 MB on numpy against 101.3 MB on onnxruntime for the same CPU per site-hour (docs/benchmarks.md,
    # footprint). onnx_float stays for a config that names backend: onnxruntime.
    "float": (("numpy", "numpy"), ("onnx_float", "onnxruntime")),
    "int8": (("tflite_int8", "litert"), ("onnx_int8", "onnxruntime")),
}


@dataclass(frozen=True)
class Choice:
    """The file and runtime picked for a model, and in a sentence why (it goes to the log)."""

    format: str
    runtime: str
    reason: str


def file_for(backend: str, precision: str) -> str | None:
    """The format of ``precision`` that runtime ``backend`` runs, or None when it runs none.

    >>> file_for("numpy", "float"), file_for("litert", "int8"), file_for("numpy", "int8")
    ('numpy', 'tflite_int8', None)
    """
    return next((f for f, p in FORMAT_PRECISION.items() if p == precision and backend in FORMAT_RUNTIMES[f]), None)


def pair_problem(backend: str, precision: str) -> str | None:
    """What is wrong with ``backend`` + ``precision``, in a technician's words; None when the pair can run."""
    if backend == "auto" or file_for(backend, precision) is not None:
        return None
    own = next(p for p in PRECISIONS if file_for(backend, p) is not None)
    others = " or ".join(r for r in RUNTIMES if r != backend and file_for(r, precision) is not None)
    return f"{backend} runs only the {own} weights; use precision: {own}, or backend: {others} for {precision}"


def choose(
    files: Collection[str],
    backend: str,
    precision: str,
    installed: Collection[str],
    formats: Iterable[str] | None = None,
    model: str = "the model",
) -> Choice:
    """The file and runtime to load among ``files`` (the model's formats) with ``installed`` runtimes.

    ``formats``, when given, names the files outright, in the order to try (benchmarks,
    tests, a model update keeping the file in service); the precision is then not consulted.
    Raises ManifestError for an impossible request, RuntimeUnavailable when nothing can run here.
    """
    if backend not in BACKEND_CHOICES:
        raise ManifestError(f"unknown backend '{backend}' (known: {', '.join(BACKEND_CHOICES)})")
    if formats is not None:
        return _pinned(files, backend, list(formats), installed, model)
    if precision not in PRECISIONS:
        raise ManifestError(f"unknown precision '{precision}' (known: {', '.join(PRECISIONS)})")
    has = ", ".join(f for f in files if f in FORMAT_PRECISION)
    if backend != "auto":
        fmt = file_for(backend, precision)
        if fmt is None:
            raise ManifestError(f"{model}: {pair_problem(backend, precision)}")
        if fmt not in files:
            raise ManifestError(
                f"{model} has no {fmt} file, the {precision} weights {backend} runs (it has {has}): "
                f"export that format, or choose another backend"
            )
        return Choice(fmt, backend, f"backend {backend} with precision {precision} runs the {fmt} file")
    skipped = []
    for fmt, runtime in AUTO_ORDER[precision]:
        if fmt not in files:
            skipped.append(f"{fmt}: not in the model directory")
        elif runtime not in installed:
            skipped.append(f"{fmt}: {runtime} is not installed")
        else:
            order = ", then ".join(f"{f} on {r}" for f, r in AUTO_ORDER[precision])
            passed = f"; passed over {'; '.join(skipped)}" if skipped else ""
            return Choice(fmt, runtime, f"backend auto with precision {precision} takes {order}{passed}")
    raise RuntimeUnavailable(f"{model}: no {precision} file can run here ({'; '.join(skipped)}; it has {has})")


def _pinned(files: Collection[str], backend: str, formats: list[str], installed: Collection[str], model: str) -> Choice:
    allowed = [f for f in formats if f in files]
    if not allowed:
        raise ManifestError(
            f"{model}: none of the formats {formats} is in its manifest (it has {', '.join(sorted(files))})"
        )
    if backend != "auto":
        usable = [f for f in allowed if backend in FORMAT_RUNTIMES[f]]
        if not usable:
            raise ManifestError(f"{model} has no file backend '{backend}' can run among {', '.join(allowed)}")
        return Choice(usable[0], backend, f"formats {', '.join(formats)} pinned, on backend {backend}")
    for fmt in allowed:
        runtime = next((r for r in FORMAT_RUNTIMES[fmt] if r in installed), None)
        if runtime is not None:
            return Choice(fmt, runtime, f"formats {', '.join(formats)} pinned: the first whose runtime is installed")
    raise RuntimeUnavailable(f"{model}: no runtime installed here runs {', '.join(allowed)}")
