"""The shipped PM2.5 calibration of the demo's air site (``make train-air-calibration``): seeded, deterministic.

A simulated co-location (``training.air.simulation``, no injected faults): the site's
optical PM2.5 with its humidity artefact, its humidity and temperature sensors, next
to the true PM2.5 as the reference. ``train air-calibration``'s selection
(``training.air.calibration``) fits and chooses on the first 30 days and exports to
``models/air-pm25-calibration``; the gateway applies it with model type
``calibration`` (docs/air-models.md, "Calibration on the gateway").

``co_location_table(days, seed)`` is the table it trains on; the demo scores the shipped
model on another seed of the same site.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.air.calibration_csv import CalibrationTable
from training.air.sensors import NO_FAULTS
from training.air.simulation import simulate_air_site

NAME = "air-pm25-calibration"
INPUTS = ["pm25", "humidity", "temperature"]  # the site's sensor columns, the model's raw inputs
REFERENCE = "ref_pm25"


def co_location_table(days: int = 45, seed: int = 11) -> CalibrationTable:
    """The simulated site's raw PM2.5, humidity and temperature next to the true PM2.5 (10-minute slots)."""
    site = simulate_air_site(days=days, seed=seed, faults=NO_FAULTS)
    columns = {name: np.asarray(site.sensors[name], dtype=np.float64) for name in INPUTS}
    columns[REFERENCE] = np.asarray(site.truth["pm25"], dtype=np.float64)
    return CalibrationTable(site.time_ms.astype(np.int64), columns, source=f"simulated air site (seed {seed})")


def train_shipped(out: Path, days: int = 45, seed: int = 11) -> dict:
    """Train and export the shipped calibration to ``out``; returns its metrics."""
    from training.air.calibration import train_calibration

    result = train_calibration(
        co_location_table(days, seed),
        REFERENCE,
        out,
        INPUTS,
        train_days=30,
        seed=0,
        signal="pm25",
        temperature="temperature",
        humidity="humidity",
        unit="ug/m3",
    )
    path = Path(out) / "manifest.json"  # named like its folder, as every shipped model (model updates name it)
    manifest = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**manifest, "name": NAME}, indent=2) + "\n", encoding="utf-8")
    write_shipped_card(Path(out), manifest, result.metrics, days, seed)
    return result.metrics


def write_shipped_card(out: Path, manifest: dict, m: dict, days: int, seed: int) -> dict:
    """The model card: test R2 against the linear baseline and the raw sensor (the selection's own rules)."""
    from training.cards import new_card, target, write_card

    task = {
        "kind": manifest["task"],
        "description": f"PM2.5 calibration of an optical sensor ({m['chosen']}), applied by model type calibration",
        "inputs": manifest["input"]["features"],
        "outputs": manifest["output"]["names"],
    }
    data = {"source": m["source"], "days": days, "seed": seed, "train_days": m["train_days"], "n_test": m["n_test"]}
    metrics = {
        "test": {k: m[k] for k in ("r2", "mae", "rmse")},
        "linear_baseline": m["linear_baseline"],
        "raw_sensor": m["raw_sensor"],
        "chosen": m["chosen"],
        "command": "make train-air-calibration",
    }
    targets = [
        target("beats_linear", "test R2 >= the linear baseline's", ">=", round(m["linear_baseline"]["r2"], 4), m["r2"]),
        target("beats_raw", "test R2 >= the raw sensor's", ">=", round(m["raw_sensor"]["r2"], 4), m["r2"]),
    ]
    files = {fmt: {"path": e["path"], "bytes": e["bytes"]} for fmt, e in manifest["files"].items()}
    limits = (
        "Trained on a simulated co-location (one site generator, no injected faults): it shows the gateway "
        "path, not a calibration for a real sensor; train yours with train air-calibration on your CSV."
    )
    card = new_card(NAME, manifest["version"], task, data, metrics, targets, files, limits)
    return write_card(out, card)


def main(argv: list[str] | None = None) -> None:
    """Train the shipped calibration (``--out`` its folder) and print its test R2 against the raw sensor's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models") / NAME, help="model folder to write")
    args = parser.parse_args(argv)
    m = train_shipped(args.out)
    print(f"{args.out}: {m['chosen']} test R2 {m['r2']:.3f} (raw sensor {m['raw_sensor']['r2']:.3f})")


if __name__ == "__main__":
    main()
