"""`train air-calibration --update MODEL_DIR`: a recalibration from a short co-location writes the next version.

On the simulated drifting NO2 site (training/air/drifting_site.py): the first calibration
is trained on days 0-30; by day 75 it is stale. A 7-day co-location from day 75
recalibrates it; the new version must score within 0.05 R2 of a calibration trained from
scratch on those 7 days, on the 14 days after, be a model the gateway runs (same name,
same raw inputs, next version, every format), and say before/after in its report. A
co-location on which the current version is still right writes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.runtime import load_model
from edge.runtime.manifest import ModelManifest
from training.air.calibration import train_calibration
from training.air.calibration_csv import CalibrationCsvError, CalibrationTable
from training.air.calibration_previous import PreviousModelError, load_previous
from training.air.calibration_update import update_calibration
from training.air.drifting_site import INPUTS, REFERENCE, co_location, drifting_site, recalibration_scores

ALARM_DAY = 75


def _train(table, out, train_days):
    return train_calibration(
        table, REFERENCE, out, list(INPUTS), train_days=train_days, signal="no2",
        temperature="temperature", humidity="humidity", unit="ug/m3",
    )  # fmt: skip


@pytest.fixture(scope="module")
def site():
    return drifting_site(110)


@pytest.fixture(scope="module")
def v1(site, tmp_path_factory):
    folder = tmp_path_factory.mktemp("v1")
    _train(co_location(site, 0, 37), folder, 30)
    return folder


def _csv(table: CalibrationTable, path: Path) -> Path:
    from edge.contracts import ms_to_datetime

    names = list(table.columns)
    lines = ["timestamp," + ",".join(names)]
    for i, t in enumerate(table.time_ms):
        lines.append(
            ms_to_datetime(int(t)).isoformat() + "," + ",".join(repr(float(table.columns[n][i])) for n in names)
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_week_of_co_location_restores_a_stale_calibration(site, v1, tmp_path):
    result = update_calibration(co_location(site, ALARM_DAY, 7), v1, tmp_path / "v2")
    m = result.metrics
    assert result.written and m["version"] == "2" and m["from_version"] == "1"
    assert m["chosen"] != "keep" and m["after"]["validation"]["r2"] > m["before"]["validation"]["r2"] + 0.5
    _train(co_location(site, ALARM_DAY, 21), tmp_path / "fresh", 7)  # from scratch on the same 7 days
    scores = recalibration_scores(site, v1, tmp_path / "v2", tmp_path / "fresh", ALARM_DAY)
    assert scores["v1_stale"] < scores["v1_fresh"] - 0.5, scores  # the drift made it stale
    assert scores["v2_updated"] >= scores["fresh_from_7_days"] - 0.05, scores  # the target
    assert scores["v2_updated"] > scores["v1_stale"] + 0.5, scores


def test_the_new_version_is_the_same_model_for_the_gateway_in_every_format(site, v1, tmp_path):
    update_calibration(co_location(site, ALARM_DAY, 7), v1, tmp_path / "v2")
    old, new = ModelManifest.read(v1), ModelManifest.read(tmp_path / "v2")
    assert (new.name, new.version, new.features) == (old.name, "2", old.features)
    spec = new.raw["calibration"]
    assert spec["inputs"] == old.raw["calibration"]["inputs"] and spec["terms"] == old.raw["calibration"]["terms"]
    (entry,) = spec["updates"]
    assert entry["from_version"] == "1" and entry["version"] == "2" and entry["co_location_period"][0] < "2025-12"
    previous = load_previous(tmp_path / "v2")  # verified as a gateway verifies it
    table = co_location(site, ALARM_DAY + 7, 2)
    X = np.stack([table.columns[n] for n in INPUTS], axis=1)
    terms = previous.terms(X).astype(np.float32)
    floats = [load_model(new, backend=b, precision="float").predict(terms)[:, 0] for b in ("numpy", "onnxruntime")]
    np.testing.assert_allclose(floats[0], floats[1], rtol=1e-4, atol=1e-3)
    int8 = load_model(new, backend="onnxruntime", precision="int8").predict(terms)[:, 0]
    assert np.median(np.abs(int8 - floats[0])) < 0.05 * np.std(floats[0]) + 0.5  # int8 close to float
    report = (tmp_path / "v2" / "update.md").read_text()
    assert "Before (v1)" in report and "**Written: v2**" in report and (tmp_path / "v2" / "update.png").stat().st_size
    assert (tmp_path / "v2" / "metrics.json").is_file()  # the first training's report travels with it


def test_a_co_location_the_current_version_still_fits_writes_nothing(site, v1, tmp_path):
    subprocess.run(["cp", "-r", str(v1), str(tmp_path / "model")], check=True)
    v1 = tmp_path / "model"
    before = {p.name: p.read_bytes() for p in v1.iterdir()}
    week = co_location(site, 30, 7)  # a reference the current version reproduces to within its noise
    X = np.stack([week.columns[n] for n in INPUTS], axis=1)
    noise = np.random.default_rng(3).normal(0, 2.0, len(X))
    week.columns[REFERENCE] = load_previous(v1).predict(X) + noise
    result = update_calibration(week, v1)  # in place
    assert not result.written and result.metrics["chosen"] == "keep", result.metrics["why"]
    after = {p.name: p.read_bytes() for p in v1.iterdir() if not p.name.startswith("update")}
    assert after == {k: v for k, v in before.items() if not k.startswith("update")}
    assert "**Nothing written**" in (v1 / "update.md").read_text()


def test_the_command_updates_in_place_and_says_what_to_do_next(site, v1, tmp_path):
    folder = tmp_path / "model"
    subprocess.run(["cp", "-r", str(v1), str(folder)], check=True)
    (folder / "manifest.sig").write_text("stale")
    csv = _csv(co_location(site, ALARM_DAY, 7), tmp_path / "recent-colocation.csv")
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "train", "air-calibration", "--update", str(folder), "--csv", str(csv)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "<- chosen" in done.stdout and f"written v2 to {folder}" in done.stdout, done.stdout
    assert f"frugalsense model sign {folder} --key KEY" in done.stdout
    assert ModelManifest.read(folder).version == "2" and not (folder / "manifest.sig").exists()
    listed = {Path(e.path).name for e in ModelManifest.read(folder).files.values()}
    stray = {p.name for p in folder.iterdir() if p.suffix in (".onnx", ".tflite", ".npz")} - listed
    assert not stray, f"files of v1 left behind: {stray}"
    again = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "train", "air-calibration", "--update", str(folder), "--csv", str(csv)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert again.returncode == 0 and ("kept v2" in again.stdout or "written v3" in again.stdout), again.stdout


def test_bad_inputs_are_refused_in_a_users_words(site, v1, tmp_path):
    week = co_location(site, ALARM_DAY, 7)
    with pytest.raises(PreviousModelError, match="no exported model here"):
        update_calibration(week, tmp_path)
    renamed = CalibrationTable(week.time_ms, {("T" if k == "temperature" else k): v for k, v in week.columns.items()})
    wanted = r"no numeric input.*reads no2, temperature, humidity.*column 'temperature'"
    with pytest.raises(CalibrationCsvError, match=wanted):
        update_calibration(renamed, v1, tmp_path / "x")
    result = update_calibration(renamed, v1, tmp_path / "y", features=["no2", "T", "humidity"])
    assert result.metrics["inputs"] == ["no2", "T", "humidity"]
    with pytest.raises(CalibrationCsvError, match="a co-location of a few days at least|a longer co-location"):
        update_calibration(co_location(site, ALARM_DAY, 0.5), v1, tmp_path / "z")
    tampered = tmp_path / "tampered"
    subprocess.run(["cp", "-r", str(v1), str(tampered)], check=True)
    npz = next(tampered.glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(PreviousModelError, match="sha256|does not match|changed"):
        update_calibration(week, tampered, tmp_path / "w")
    manifest = json.loads((v1 / "manifest.json").read_text())
    assert manifest["version"] == "1"
