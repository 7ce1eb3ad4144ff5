"""`frugalsense train air-calibration` on small seeded CSVs in the UCI "Air Quality" shape and in plain CSV."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from gateway.cli import main
from training.air.calibration_csv import CalibrationCsvError, read_calibration_csv

UCI_HEADER = "Date;Time;CO(GT);PT08.S1(CO);NO2(GT);PT08.S4(NO2);T;RH;AH;;"


def colocation(days: int = 40, seed: int = 3):
    """Hourly reference NO2 and a metal-oxide response to it, bent by temperature and humidity."""
    rng = np.random.default_rng(seed)
    n = days * 24
    hour = np.arange(n) % 24
    t = 12 + 6 * np.sin(2 * np.pi * (hour - 9) / 24) + np.cumsum(rng.normal(0, 0.3, n)) * 0.2
    rh = np.clip(60 - 1.5 * (t - 12) + rng.normal(0, 5, n), 10, 98)
    no2 = np.clip(
        40
        + 35 * np.exp(-0.5 * ((hour - 8) / 1.5) ** 2)
        + 30 * np.exp(-0.5 * ((hour - 18) / 2) ** 2)
        + rng.normal(0, 8, n),
        5,
        None,
    )
    sensor = 2200 - 900 * np.log1p(no2 / 40) + 12 * (t - 12) - 3 * (rh - 60) + rng.normal(0, 15, n)
    co = 0.02 * no2 + rng.normal(0, 0.2, n)
    co_sensor = 900 + 300 * co + rng.normal(0, 20, n)
    return n, t, rh, no2, sensor, co, co_sensor, rng


def write_uci(path, days=40, seed=3, missing_share=0.05):
    n, t, rh, no2, sensor, co, co_sensor, rng = colocation(days, seed)
    start = datetime(2004, 3, 10, 18)
    lines = [UCI_HEADER]

    def cell(v, fmt):
        return "-200" if rng.random() < missing_share else (fmt % v).replace(".", ",")

    for i in range(n):
        when = start + timedelta(hours=i)
        ah = 0.0075 * rh[i] * np.exp(0.06 * t[i])
        lines.append(
            ";".join(
                [
                    when.strftime("%d/%m/%Y"),
                    when.strftime("%H.%M.%S"),
                    cell(co[i], "%.1f"),
                    str(int(co_sensor[i])),
                    str(int(no2[i])) if rng.random() > missing_share else "-200",
                    str(int(sensor[i])),
                    cell(t[i], "%.1f"),
                    cell(rh[i], "%.1f"),
                    cell(ah, "%.4f"),
                    "",
                    "",
                ]
            )
        )
    lines += [";;;;;;;;;;;"] * 3  # the UCI file ends with empty rows
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return path


def test_reads_the_uci_shape(tmp_path):
    table = read_calibration_csv(write_uci(tmp_path / "AirQualityUCI.csv"))
    assert table.names == ["CO(GT)", "PT08.S1(CO)", "NO2(GT)", "PT08.S4(NO2)", "T", "RH", "AH"]
    assert len(table.time_ms) == 40 * 24 and np.all(np.diff(table.time_ms) == 3_600_000)
    assert 0.02 < np.mean(np.isnan(table.columns["T"])) < 0.1  # -200 became missing
    assert np.nanmin(table.columns["T"]) > -50  # decimal commas read as decimals, not thousands
    assert "decimal comma" in table.notes[0]


def test_trains_on_the_first_days_and_writes_model_metrics_and_report(tmp_path, capsys):
    csv = write_uci(tmp_path / "AirQualityUCI.csv")
    out = tmp_path / "no2-cal"
    code = main(
        [
            "train",
            "air-calibration",
            "--csv",
            str(csv),
            "--target",
            "NO2(GT)",
            "--missing",
            "-200",
            "--train-days",
            "25",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["features"] == ["PT08.S1(CO)", "PT08.S4(NO2)", "T", "RH", "AH"]  # no other (GT) column
    for key in ("r2", "mae", "rmse", "n_train", "n_test"):
        assert key in metrics and key in metrics["linear_baseline"]
    assert metrics["r2"] > 0.75 and metrics["r2"] > metrics["linear_baseline"]["r2"]  # the log response is bent
    assert metrics["test_period"][0] > metrics["train_period"][1]  # time order: train before test
    assert 25 * 24 * 0.7 < metrics["n_train"] <= 25 * 24
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"onnx_float", "onnx_int8", "tflite_int8", "numpy", "parity"}
    assert manifest["calibration"]["inputs"] == metrics["features"]  # the raw inputs; the model takes their terms
    assert manifest["input"]["features"] == [t["name"] for t in manifest["calibration"]["terms"]]
    for plot in ("predicted_vs_reference.png", "residuals_by_month.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG" and plot in (out / "report.md").read_text()
    printed = capsys.readouterr().out
    assert "linear baseline  r2" in printed and "calibration      r2" in printed


def test_plain_csv_with_one_datetime_column_and_chosen_features(tmp_path):
    n, t, rh, no2, sensor, *_ = colocation(30, seed=5)
    start = datetime(2024, 1, 1)
    rows = ["timestamp,no2_ref,no2_raw,temp,humidity"]
    rows += [
        f"{(start + timedelta(hours=i)).isoformat()}Z,{no2[i]:.1f},{sensor[i]:.0f},{t[i]:.2f},{rh[i]:.1f}"
        for i in range(n)
    ]
    path = tmp_path / "colocation.csv"
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "cal"
    assert (
        main(
            [
                "train",
                "air-calibration",
                "--csv",
                str(path),
                "--target",
                "no2_ref",
                "--features",
                "no2_raw,temp",
                "--train-days",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["features"] == ["no2_raw", "temp"] and metrics["n_test"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "NO2(G)"], "no numeric target column 'NO2\\(G\\)'.*did you mean 'NO2\\(GT\\)'"),
        (
            ["--target", "NO2(GT)", "--features", "PT08.S4(NO2),Tmp"],
            "no numeric feature column 'Tmp'.*did you mean 'T'",
        ),
        (
            ["--target", "NO2(GT)", "--train-days", "1"],
            "only \\d+ usable rows in the first 1 days .*give more --train-days",
        ),
        (
            ["--target", "NO2(GT)", "--train-days", "60"],
            "only 0 usable rows after the first 60 days.*fewer --train-days",
        ),
        (["--target", "NO2(GT)", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_mistakes_are_one_line_for_people(tmp_path, capsys, args, message):
    csv = write_uci(tmp_path / "AirQualityUCI.csv", days=10)
    code = main(["train", "air-calibration", "--csv", str(csv), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "needs a header line"),
        ("a b c\n1 2 3\n", "has no ';', ',' or tab"),
        ("Date;Time;NO2\nyesterday;noon;4\n", "cannot read 'yesterday noon' as a date and time"),
        ("when,x\n2024-01-01T00:00,abc\n", "no numeric column besides the time"),
    ],
)
def test_unusable_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CalibrationCsvError, match=message):
        read_calibration_csv(path)
    with pytest.raises(CalibrationCsvError, match="no such file"):
        read_calibration_csv(tmp_path / "missing.csv")


def test_train_without_a_model_prints_its_help(capsys):
    assert main(["train"]) == 2
    assert "air-calibration" in capsys.readouterr().out
