"""Same decisions on every machine: the precision and the installed runtimes choose the model file, never speed.

What is guaranteed, and tested here: ``backend: auto`` takes the first file of the
configured precision whose runtime is installed, in a fixed order; an explicit backend
loads its own file of that precision; an impossible pair is refused at its line; and the
demo raises the same alerts whichever runtime of one precision runs the model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest

import edge.runtime as runtime
from edge.contracts import Alert
from edge.runtime import AUTO_ORDER, RuntimeUnavailable, load_model
from edge.runtime.manifest import ManifestError, ModelManifest
from gateway.cli import main
from gateway.config import load_config
from gateway.device.runner import build_detectors, build_sources
from tests.test_end_to_end import demo_config_text

REPO = Path(__file__).resolve().parents[1]
LEAK_MODEL = REPO / "models" / "leak-mlp-net3"
OPTIONAL = ("onnxruntime", "litert")  # numpy is always there
INSTALLED = runtime.available_backends()


@pytest.fixture
def never_timed(monkeypatch):
    """Fail the test if loading times a runtime: the choice must not depend on speed."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("load_model timed a runtime to choose")

    monkeypatch.setattr(runtime, "probe_seconds", refuse)


def _without(monkeypatch, missing: tuple[str, ...]) -> None:
    """Make runtimes look not installed, through the availability table ``load_model`` reads."""
    for name in missing:
        monkeypatch.setitem(runtime._AVAILABLE, name, lambda: False)


def _expected(precision: str, installed: set[str]) -> tuple[str, str]:
    return next((fmt, rt) for fmt, rt in AUTO_ORDER[precision] if rt in installed)


@pytest.mark.parametrize("missing", [m for k in range(3) for m in combinations(OPTIONAL, k)], ids=str)
@pytest.mark.parametrize("precision", ["float", "int8"])
def test_auto_takes_the_first_file_of_the_precision_whose_runtime_is_installed(
    monkeypatch, never_timed, precision, missing
):
    if any(rt not in INSTALLED for rt in OPTIONAL if rt not in missing):
        pytest.skip(f"needs {', '.join(OPTIONAL)} installed to pretend some are not")
    _without(monkeypatch, missing)
    installed = set(runtime.available_backends())
    manifest = ModelManifest.read(LEAK_MODEL)
    if precision == "int8" and "onnxruntime" in missing and "litert" in missing:
        with pytest.raises(RuntimeUnavailable, match="no int8 file can run here"):
            load_model(manifest, precision=precision)
        return
    model = load_model(manifest, precision=precision)
    assert (model.format, model.name) == _expected(precision, installed)
    assert f"backend auto with precision {precision}" in model.choice
    # The same inputs, the same pick: loading again never lands elsewhere.
    assert load_model(manifest, precision=precision).format == model.format


def test_a_float_model_on_auto_never_imports_another_runtime():
    """Asking whether onnxruntime or LiteRT is installed imports it (~30 MB): numpy-first must not ask."""
    code = (
        "import sys; from edge.runtime import load_model; from edge.runtime.manifest import ModelManifest; "
        f"m = load_model(ModelManifest.read({str(LEAK_MODEL)!r})); "
        "print(m.format, sorted(x for x in ('onnxruntime', 'ai_edge_litert', 'tflite_runtime') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["numpy", "[]"]


def test_auto_without_the_preferred_file_takes_the_next_and_says_why(tmp_path, never_timed, caplog):
    copy = _model_without(tmp_path, "numpy")
    with caplog.at_level("INFO", logger="edge.runtime"):
        model = load_model(ModelManifest.read(copy))
    assert (model.format, model.name) == ("onnx_float", "onnxruntime")
    assert "onnx_float on onnxruntime" in caplog.text and "numpy: not in the model directory" in caplog.text


@pytest.mark.parametrize(
    "backend,precision,fmt",
    [
        ("numpy", "float", "numpy"),
        ("onnxruntime", "float", "onnx_float"),
        ("onnxruntime", "int8", "onnx_int8"),  # it used to load the float file
        ("litert", "int8", "tflite_int8"),
    ],
)
def test_an_explicit_backend_loads_its_file_of_the_precision(never_timed, backend, precision, fmt):
    if backend not in INSTALLED:
        pytest.skip(f"{backend} is not installed here")
    model = load_model(ModelManifest.read(LEAK_MODEL), backend, precision=precision)
    assert (model.name, model.format) == (backend, fmt)


@pytest.mark.parametrize(
    "backend,precision,words",
    [
        ("numpy", "int8", "numpy runs only the float weights; use precision: float, or backend: onnxruntime or litert"),
        ("litert", "float", "litert runs only the int8 weights; use precision: int8, or backend: onnxruntime or numpy"),
    ],
)
def test_load_model_refuses_a_runtime_that_cannot_run_the_precision(backend, precision, words):
    with pytest.raises(ManifestError, match=words):
        load_model(ModelManifest.read(LEAK_MODEL), backend, precision=precision)


def test_a_model_directory_without_the_file_is_a_clear_error(tmp_path):
    copy = _model_without(tmp_path, "onnx_int8")
    with pytest.raises(ManifestError, match=r"has no onnx_int8 file, the int8 weights onnxruntime runs \(it has "):
        load_model(ModelManifest.read(copy), "onnxruntime", precision="int8")


def test_pinned_formats_still_choose_the_file(never_timed):
    model = load_model(ModelManifest.read(LEAK_MODEL), formats=["numpy"])
    assert (model.name, model.format) == ("numpy", "numpy")


def _model_without(tmp_path: Path, fmt: str) -> Path:
    copy = tmp_path / "leak-mlp-net3"
    shutil.copytree(LEAK_MODEL, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    (copy / raw["files"].pop(fmt)["path"]).unlink()
    (copy / "manifest.json").write_text(json.dumps(raw))
    return copy


# ---- the config: the precision key, impossible pairs refused at their line ----------------------------------


def _demo_with(tmp_path: Path, lines: list[str], dataset: Path | None = None) -> tuple[Path, int]:
    """The demo config with ``lines`` under leak-ml's model_dir; returns it and the line of the first one."""
    text = demo_config_text(tmp_path, dataset or tmp_path / "net3-leak.npz")
    anchor = f"    model_dir: {REPO}/models/leak-mlp-net3\n"
    assert anchor in text
    text = text.replace(anchor, anchor + "".join(f"    {line}\n" for line in lines))
    path = tmp_path / f"demo-{len(list(tmp_path.glob('demo-*.yaml')))}.yaml"
    path.write_text(text)
    return path, text[: text.index(anchor)].count("\n") + 2


@pytest.mark.parametrize(
    "lines,words",
    [
        (
            ["precision: int8", "backend: numpy"],
            "numpy runs only the float weights; use precision: float, or backend: ",
        ),
        (["backend: litert"], "litert runs only the int8 weights; use precision: int8, or backend: onnxruntime or "),
    ],
)
def test_config_refuses_an_impossible_pair_at_the_backend_line(tmp_path, capsys, lines, words):
    path, first = _demo_with(tmp_path, lines)
    assert main(["config", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    backend_line = first + len(lines) - 1
    assert f"{path}:{backend_line}: models[1].backend: {words}" in err


def test_config_refuses_an_unknown_precision_at_its_line(tmp_path, capsys):
    path, first = _demo_with(tmp_path, ["precision: int4"])
    assert main(["config", "validate", str(path)]) == 1
    assert f"{path}:{first}: models[1].precision: must be one of float, int8; got 'int4'" in capsys.readouterr().err


def test_config_with_a_model_lacking_the_file_says_so_at_the_model(tmp_path, capsys):
    copy = _model_without(tmp_path, "tflite_int8")
    path, _ = _demo_with(tmp_path, ["precision: int8", "backend: litert"])
    path.write_text(path.read_text().replace(str(LEAK_MODEL), str(copy)))
    assert main(["config", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    entry_line = path.read_text().split("\n").index("  - name: leak-ml") + 1
    assert f"{path}:{entry_line}: models[1] (leak-ml): cannot build its detector:" in err
    assert "has no tflite_int8 file, the int8 weights litert runs" in err


@pytest.mark.parametrize("model_type", ["air_pattern", "sensor_fault", "no2_virtual"])
def test_every_air_model_takes_the_precision(model_type):
    from tests.test_model_registry import minimal_config_text

    text = minimal_config_text(model_type).replace("backend: numpy", "precision: int8, backend: onnxruntime")
    path = REPO / "firmware_configs" / "reg.yaml"
    from gateway.config import load_config_text

    config = load_config_text(text, f"{model_type}.yaml", path=path)
    [detector] = build_detectors(config)
    assert (detector.runtime_.name, detector.runtime_.format) == ("onnxruntime", "onnx_int8")


# ---- the demo: the same alert lines on every runtime of one precision -------------------------------------


def _alerts(config_path: Path) -> list[tuple]:
    config = load_config(config_path)
    detectors = build_detectors(config)
    out = []
    for source in build_sources(config):
        for reading in source:
            for detector in detectors:
                out += detector.update(reading)
    for detector in detectors:
        out += detector.flush()
    return [(a.alert_id, a.model, a.state.value, a.time_ms, a.message) for a in out if isinstance(a, Alert)]


@pytest.mark.parametrize(
    "precision,backends", [("float", ["numpy", "onnxruntime"]), ("int8", ["litert", "onnxruntime"])]
)
def test_demo_alerts_are_the_same_on_auto_and_every_backend_of_the_precision(tmp_path, leak_run, precision, backends):
    backends = [b for b in backends if b in INSTALLED]
    if not backends:
        pytest.skip(f"no runtime for precision {precision} is installed here")
    dataset = leak_run.save(tmp_path / "net3-leak.npz")
    path, _ = _demo_with(tmp_path, [f"precision: {precision}"], dataset)
    auto = _alerts(path)
    raised = {a[0] for a in auto if a[2] == "raised"}
    assert "leak-2026-03-11" in raised  # the night-flow detector's (rule-based: no model)
    assert any(a[0].startswith("leak-20260310T") for a in auto)  # the learned one's
    if precision == "float":  # the README's demo output
        assert "leak-20260310T1330" in raised
    for backend in backends:
        path, _ = _demo_with(tmp_path, [f"precision: {precision}", f"backend: {backend}"], dataset)
        assert _alerts(path) == auto, f"backend {backend} with precision {precision} decides otherwise than auto"
