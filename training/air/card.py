"""The air models' cards: what ``training.air.evaluate`` measured, in the one card shape of ``training.cards``.

``metrics`` holds ``by_format`` (every exported format on its own runtime),
``export_check`` (the export's parity check, from the manifest), ``drift_check``
(NO2 virtual sensor only: as the reference of the calibration-drift detector), and
the ``command`` and time of the measurement. A target's ``value`` is the worst
format's, so it is met only when every shipped format meets it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from training.air.data import AirPlan
from training.cards import new_card, write_card

COMMAND = "python -m training.air.evaluate"
SIMULATOR = "training/air/simulation.py (seeded; see docs/air-models.md)"
LIMITS = (
    "Measured on simulated sites only: the simulator's relations are simplified (docs/air-models.md). "
    "Expect lower figures on real sites until retrained on local data."
)


def air_data(kind: str, plan: AirPlan) -> dict:
    """The card's ``data``: the simulator, the seeded train and test site sets, the NO2 split."""
    train = {"pattern": plan.pattern_train, "fault": plan.fault_train, "no2": plan.no2_sites}[kind]
    test = {"pattern": plan.pattern_test, "fault": plan.fault_test, "no2": plan.no2_sites}[kind]
    data = {"simulator": SIMULATOR, "train": asdict(train), "test": asdict(test)}
    if kind == "no2":
        data["split"] = (
            f"train: zones 0-{plan.no2_train_sites - 1}, weeks 0-{plan.no2_train_weeks - 1}; "
            "held-out weeks: later weeks of those zones; held-out zones: the other zones, later weeks"
        )
    return data


def air_card(result: dict, data: dict, description: str, export_check: dict, evaluated: str) -> dict:
    """The card of one evaluated air model (``result`` of ``training.air.evaluate.evaluate_model``)."""
    manifest = result["manifest"]
    metrics = {"by_format": result["metrics"], "export_check": export_check}
    if "drift_check" in result:
        metrics["drift_check"] = result["drift_check"]
    metrics.update(command=COMMAND, evaluated=evaluated)
    task = {
        "kind": manifest.task,
        "description": description,
        "inputs": manifest.features,
        "outputs": manifest.output_names,
    }
    return new_card(manifest.name, manifest.version, task, data, metrics, result["targets"], result["files"], LIMITS)


def write_air_card(model_dir: Path, card: dict) -> dict:
    """Write the card's ``card.json`` and ``card.md`` (with the air sections)."""
    return write_card(model_dir, card, air_sections(card))


def air_sections(card: dict) -> list[tuple[str, str]]:
    """The air sections of ``card.md``: each target per format, the data, the drift check."""
    by_format = card["metrics"]["by_format"]
    lines = ["| target | " + " | ".join(by_format) + " |", "|---|" + "---|" * len(by_format)]
    for t in card["targets"]:
        lines.append(f"| `{t['name']}` | " + " | ".join(str(m.get(t["name"])) for m in by_format.values()) + " |")
    sections = [("Measured per format (held-out simulated data)", "\n".join(lines))]
    data = card["data"]
    about = [f"Simulator: {data['simulator']}.", "", f"Train: `{data['train']}`", "", f"Test: `{data['test']}`"]
    if "split" in data:
        about += ["", data["split"]]
    measured = card["metrics"]
    about += ["", f"Measured by `{measured['command']}` on {measured['evaluated']}."]
    sections.append(("Data", "\n".join(about)))
    if "drift_check" in measured:
        d = measured["drift_check"]
        sections.append(
            (
                "As the reference of the calibration-drift detector",
                f"{d['sites']} simulated sites, {d['days']} days each, replayed reading by reading: "
                f"{d['false_alarms_without_drift']} false alarms without drift; with a drift of "
                f"{d['drift_ugm3_per_day']} ug/m3 per day, {d['detected_rising']} rising and "
                f"{d['detected_falling']} falling drifts detected (median alarm on day {d['median_day_of_alarm']}, "
                "the first 21 days being the calibration period).",
            )
        )
    return sections
