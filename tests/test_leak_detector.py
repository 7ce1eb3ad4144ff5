"""Learned leak detector end to end on a tiny Net1 model.

Train CLI, streaming = evaluation replay, gaps, config, detect CLI.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge.contracts import Alert, AlertState, Quality, Reading
from edge.detectors.leak_model import LearnedLeakDetector, leak_scores
from edge.runtime.registry import ModelIntegrityError
from edge.sources.replay import ReplaySource
from gateway.cli import main
from training.leak.card import load_settings
from training.leak.evaluate import replay_learned
from training.water.scenarios import LeakEvent, Scenario, ScenarioConfig, generate, plan_zone

DAY = 86_400


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "leak-net1-test"
    code = main(
        [
            "train",
            "leak",
            "--network",
            "Net1",
            "--scenarios",
            "8",
            "--days",
            "14",
            "--workers",
            "1",
            "--out",
            str(out),
            "--name",
            "leak-net1-test",
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def net1_runs(tiny_model):
    settings = load_settings(tiny_model)
    flows = [(e, 1) for e, q in settings.sensors if q == "flow"]
    pressures = [e for e, q in settings.sensors if q == "pressure"]
    plan = plan_zone("Net1", ScenarioConfig(days=14, step_s=settings.layout.step_s), flows, pressures)
    leak = LeakEvent(node="12", diameter_m=0.15, start_s=10 * DAY + 5 * 3600, end_s=12 * DAY)
    return generate(plan, 2, 0, workers=1, progress=False, scenarios=[Scenario(21, leak), Scenario(22, None)])


def _stream(model_dir, zone, drop=None):
    settings = load_settings(model_dir)
    ids = {f"{q[0]}-{e}": (e, q) for e, q in settings.sensors}
    detector = LearnedLeakDetector.from_model_dir(model_dir, "net1", "gw-1", ids, backend="numpy")
    source = ReplaySource(zone, "net1", "gw-1", [(sid, e, q) for sid, (e, q) in ids.items()])
    out = []
    for reading in source:
        if drop is not None and drop(reading):
            reading = Reading(
                reading.time_ms,
                reading.site,
                reading.gateway,
                reading.sensor,
                reading.quantity,
                None,
                reading.unit,
                Quality.UNKNOWN,
            )
        out += detector.update(reading)
    return out + detector.flush()


def test_train_cli_writes_a_complete_model(tiny_model):
    manifest = json.loads((tiny_model / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"onnx_float", "onnx_int8", "tflite_int8", "numpy"}
    assert manifest["detector"]["kind"] == "learned_leak" and manifest["detector"]["layout"]["step_s"] == 900
    card = json.loads((tiny_model / "card.json").read_text())
    assert {"heldout"} <= set(card["metrics"]["by_set"]) and {t["name"] for t in card["targets"]} >= {"f1_leaks_ge_5cm"}
    assert card["metrics"]["by_set"]["heldout"]["mnf_20"]["all_leaks"]["scenarios"] == 4
    for name in ("card.md", "report/report.md", "report/timeline.png", "report/scores.png", "report/delay.png"):
        assert (tiny_model / name).stat().st_size > 0, name
    assert max(e["bytes"] for e in manifest["files"].values()) <= 64 * 1024


def test_streaming_detector_takes_the_decisions_of_the_evaluation_replay(tiny_model, net1_runs):
    settings = load_settings(tiny_model)
    from edge.runtime import load
    from edge.runtime.manifest import ModelManifest

    backend = load(ModelManifest.read(tiny_model).files["numpy"], "numpy")
    trace = replay_learned(settings, lambda X: leak_scores(backend, X), net1_runs)
    step_ms = settings.layout.step_s * 1000
    t0 = int(net1_runs.time_ms[0])
    for i in range(2):
        out = _stream(tiny_model, net1_runs.zone(i))
        decisions = {(d.window_start_ms - t0) // step_ms: d for d in out if not isinstance(d, Alert)}
        assert len(decisions) == net1_runs.n_steps
        for k, d in decisions.items():
            assert (d.label != "insufficient_data") == trace.valid[i, k]
            if trace.valid[i, k]:
                assert d.score == pytest.approx(trace.score[i, k], abs=1e-6)
        raised = [(a.time_ms - t0) // step_ms - 1 for a in out if isinstance(a, Alert) and a.state == AlertState.RAISED]
        rises = np.flatnonzero(trace.alarm[i] & ~np.r_[False, trace.alarm[i][:-1]])
        assert raised == rises.tolist()
    assert trace.alarm[0].any() and trace.valid.sum() > net1_runs.n_steps  # alarms and scores were compared


def test_a_window_with_a_missing_sensor_is_insufficient_data_never_an_alarm(tiny_model, net1_runs):
    settings = load_settings(tiny_model)
    pressure = next(e for e, q in settings.sensors if q == "pressure")
    gap = (int(net1_runs.time_ms[0]) + 8 * DAY * 1000, int(net1_runs.time_ms[0]) + 9 * DAY * 1000)
    out = _stream(
        tiny_model, net1_runs.zone(1), drop=lambda r: r.sensor == f"p-{pressure}" and gap[0] <= r.time_ms < gap[1]
    )
    inside = [d for d in out if not isinstance(d, Alert) and gap[0] <= d.window_start_ms < gap[1]]
    assert len(inside) == 96 and all(d.label == "insufficient_data" for d in inside)
    assert all(
        f"pressure {pressure}" in d.explanation["reason"]
        or "baseline" in d.explanation["reason"]
        or f"{pressure}/pressure" in d.explanation["reason"]
        for d in inside
    )
    assert not [a for a in out if isinstance(a, Alert) and gap[0] <= a.time_ms <= gap[1]]


def test_gateway_config_builds_the_detector_and_refuses_a_tampered_model(tiny_model, tmp_path):
    from gateway.config.schema import GatewayConfig
    from gateway.device.runner import build_detectors

    settings = load_settings(tiny_model)
    sensors = [{"id": f"{q[0]}-{e}", "quantity": q, "driver": "replay", "column": e} for e, q in settings.sensors]
    config = GatewayConfig.model_validate(
        {
            "site": "net1",
            "gateway": "gw-1",
            "mqtt": {"host": "127.0.0.1"},
            "sensors": sensors,
            "sources": {"replay": {"file": "net1.npz"}},
            "models": [{"name": "leak-ml", "type": "learned_leak", "model_dir": str(tiny_model), "backend": "numpy"}],
        }
    )
    [detector] = build_detectors(config)
    assert isinstance(detector, LearnedLeakDetector) and detector.model == "leak-ml"
    copy = tmp_path / "model"
    import shutil

    shutil.copytree(tiny_model, copy)
    npz = copy / "leak-net1-test.npz"
    npz.write_bytes(npz.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelIntegrityError, match="does not match its manifest"):
        LearnedLeakDetector.from_model_dir(copy, "net1", "gw-1", {}, backend="numpy")


def _messy_csv(path, s, i):
    """Semicolons, decimal commas, m3/h, rows out of order, a duplicate, gaps, text, a stuck pressure sensor."""
    values = s.values[i].astype(float).copy()
    flows = [j for j, q in enumerate(s.quantities) if q == "flow"]
    values[:, flows] *= 3.6  # L/s -> m3/h
    values[500:540, len(flows)] = values[500, len(flows)]  # stuck for 10 h
    values[700:705, 0] = np.nan
    order = list(range(s.n_steps))
    order[100], order[101] = order[101], order[100]
    order.insert(300, 300)
    with path.open("w") as out:
        out.write("Zeit;" + ";".join(f"{q}_{c}" for c, q in s.sensors) + "\n")
        for k in order:
            if 900 <= k < 920:
                continue  # a 5 h gap
            t = np.datetime_as_string(np.datetime64(int(s.time_ms[k]), "ms"), unit="s").replace("T", " ")
            cells = ["" if np.isnan(v) else f"{v:.3f}".replace(".", ",") for v in values[k]]
            if k == 200:
                cells[1] = "ERR"
            out.write(t + ";" + ";".join(cells) + "\n")


def test_detect_cli_reads_a_messy_scada_file_and_reports_what_it_fixed(tiny_model, net1_runs, tmp_path, capsys):
    scada, alerts = tmp_path / "scada.csv", tmp_path / "alerts.csv"
    _messy_csv(scada, net1_runs, 0)
    assert (
        main(
            [
                "detect",
                "leak",
                "--model",
                str(tiny_model),
                "--scada",
                str(scada),
                "--out",
                str(alerts),
                "--flow-unit",
                "m3/h",
                "--backend",
                "numpy",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for needle in (
        "out of time order",
        "1 duplicated timestamp",
        "stuck at",
        "non-numeric",
        "gap(s)",
        "without a usable value",
    ):
        assert needle in printed, needle
    header = alerts.read_text().splitlines()[0]
    assert header == "alert_id,start_utc,raised_utc,end_utc,peak_score,estimated_leak_lps,sensors,severity"
    rows = list(csv.DictReader(alerts.open()))
    leak_start = np.datetime64(int(net1_runs.time_ms[0]) + (10 * DAY + 5 * 3600) * 1000, "ms")
    hits = [
        r
        for r in rows
        if leak_start - np.timedelta64(2, "h")
        <= np.datetime64(r["start_utc"].rstrip("Z"))
        <= leak_start + np.timedelta64(1, "D")
    ]
    assert len(hits) == 1 and float(hits[0]["estimated_leak_lps"]) > 10 and float(hits[0]["peak_score"]) > 0.5


def test_detect_cli_names_the_missing_columns(tiny_model, net1_runs, tmp_path, capsys):
    scada = tmp_path / "few.csv"
    s = net1_runs
    keep = [j for j, q in enumerate(s.quantities) if q == "flow"]
    with scada.open("w") as out:
        out.write("time," + ",".join(s.columns[j] for j in keep) + "\n")
        out.write("2026-03-02T00:00:00Z," + ",".join("1.0" for _ in keep) + "\n")
    code = main(["detect", "leak", "--model", str(tiny_model), "--scada", str(scada), "--out", str(tmp_path / "a.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "no column for pressure" in err and not (tmp_path / "a.csv").exists()
