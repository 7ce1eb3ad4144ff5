"""What a ``recalibration_needed`` alert tells the technician to do: which calibration to refit, and how.

A calibration drift detector built from a gateway config is told the calibration
models of that config it concerns (``Refit``: the model entry, its folder as the
config writes it, the raw sensor to co-locate, and the detector running it, whose
model name and version are read when the alert is raised, so after a model update
it names the version in service). ``advice`` is the sentence appended to the alert's
message; ``refit_list`` the same as data, for the alert's explanation: one JSON object
per calibration as text (an explanation holds numbers, text and lists of text only,
edge/contracts.py), ``json.loads`` gives it back.

>>> class Running:  # what advice reads of the detector running the calibration
...     model_name, model_version = "air-pm25-calibration", "2"
>>> r = Refit("pm25-cal", "../models/air-pm25-calibration", ["PM25-sds"], Running())
>>> print(advice("pm25-cal", [r]))  # doctest: +NORMALIZE_WHITESPACE
Refit calibration pm25-cal (model air-pm25-calibration v2): co-locate PM25-sds with a reference for 7 days,
run 'frugalsense train air-calibration --update ../models/air-pm25-calibration --csv co-location.csv', then
'frugalsense model sign' and 'frugalsense model push' the new version.
>>> import json; json.loads(refit_list([r])[0])
{'model': 'pm25-cal', 'manifest': 'air-pm25-calibration', 'version': '2', 'model_dir': '../models/air-pm25-calibration'}
>>> print(advice("NO2-node", []))  # doctest: +NORMALIZE_WHITESPACE
Recalibrate sensor NO2-node: co-locate it with a reference for 7 days and recalibrate it (or train a calibration
of it with 'frugalsense train air-calibration --csv co-location.csv --out DIR' and run it as a model of type
calibration).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# A refit needs a week of co-location: enough days and weather for the trainer's own test period.
CO_LOCATION_DAYS = 7
MAX_MESSAGE = 500  # edge/contracts.py: an alert's message is at most 500 characters
CSV = "co-location.csv"  # the file the technician exports from the co-location, as the commands name it


@dataclass(frozen=True)
class Refit:
    """One calibration model a drift alert asks to refit."""

    model: str  # the config's model name (its virtual sensor)
    model_dir: str  # the exported model's folder, as the config writes it (relative to the config file)
    co_locate: list[str]  # the raw sensors to put next to a reference
    running: Any  # the detector running it: its model_name and model_version are the ones in service

    def entry(self) -> dict:
        """The machine-readable form: config name, manifest name, the version running, the folder."""
        return {
            "model": self.model,
            "manifest": self.running.model_name,
            "version": self.running.model_version,
            "model_dir": self.model_dir,
        }


def advice(sensor: str, refits: list[Refit], room: int = MAX_MESSAGE) -> str:
    """What to do about the drift of ``sensor``, in at most ``room`` characters (an alert's message is bounded).

    Each calibration to refit with its folder and commands; if that is too long, without the
    folder (it is in the alert's ``refit`` list); with no calibration, recalibrate the sensor.
    """
    if not refits:
        text = (
            f"Recalibrate sensor {sensor}: co-locate it with a reference for {CO_LOCATION_DAYS} days and "
            f"recalibrate it (or train a calibration of it with 'frugalsense train air-calibration --csv {CSV} "
            "--out DIR' and run it as a model of type calibration)."
        )
        return _fit(text, room)
    full = " ".join(
        f"Refit calibration {r.model} (model {r.running.model_name} v{r.running.model_version}): "
        f"co-locate {', '.join(r.co_locate)} with a reference for {CO_LOCATION_DAYS} days, run "
        f"'frugalsense train air-calibration --update {r.model_dir} --csv {CSV}', then 'frugalsense model sign' "
        "and 'frugalsense model push' the new version."
        for r in refits
    )
    if len(full) <= room:
        return full
    short = " ".join(
        f"Refit calibration {r.model} (model {r.running.model_name} v{r.running.model_version}): co-locate "
        f"{', '.join(r.co_locate)} with a reference for {CO_LOCATION_DAYS} days, 'frugalsense train "
        "air-calibration --update' its folder (in this alert's refit list), then 'frugalsense model sign' "
        "and 'push' it."
        for r in refits
    )
    return _fit(short, room)


def _fit(text: str, room: int) -> str:
    return text if len(text) <= room else text[: max(room - 3, 0)] + "..."


def refit_list(refits: list[Refit]) -> list[str]:
    """The alert explanation's ``refit`` list: each calibration's ``entry()`` as a JSON object."""
    return [json.dumps(r.entry(), separators=(",", ":")) for r in refits]


__all__ = ["CO_LOCATION_DAYS", "Refit", "advice", "refit_list"]
