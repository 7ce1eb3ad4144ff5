"""The one model-card writer: ``card.json`` and ``card.md`` in one shape for every model family.

A card says what a model does, what it learned from, what it measured and whether
it meets its targets, in the same keys whatever the family (air, leak), so a reader
and the docs compare cards of any kind:

* ``name``, ``version``;
* ``task``: ``kind`` (classification, regression), ``description``, ``inputs``,
  ``outputs`` (and what else the family's detector needs, e.g. leak ``detector``);
* ``data``: what trained and what tested the model (family keys inside);
* ``metrics``: every measured figure (family keys inside);
* ``targets``: a list of ``{"name", "what", "target", "value", "met"}``; ``target``
  reads ``">= 0.85"``, ``value`` is the measured figure the target is judged on
  (None: nothing to measure on this test set), ``met`` a boolean;
* ``files``: ``{format: {"path", "bytes", ...}}``;
* ``limits``: what the figures do not say.

>>> t = target("f1", "F1 of leaks", ">=", 0.85, 0.9)
>>> t["target"], t["met"], target_met(t)
('>= 0.85', True, True)
>>> card = new_card("m", "1", {"kind": "classification", "description": "d", "inputs": ["x"], "outputs": ["y"]},
...                 {}, {}, [t], {"numpy": {"path": "m.npz", "bytes": 10}}, "simulated only")
>>> check_card(card)
[]
>>> markdown(card).splitlines()[0]
'# m v1'
"""

from __future__ import annotations

import json
import math
from pathlib import Path

CARD_JSON = "card.json"
CARD_MD = "card.md"
CARD_KEYS = ("name", "version", "task", "data", "metrics", "targets", "files", "limits")
TASK_KEYS = ("kind", "description", "inputs", "outputs")
TARGET_KEYS = ("name", "what", "target", "value", "met")
OPS = (">=", "<=")


def target(name: str, what: str, op: str, threshold: float, value: float | None, met: bool | None = None) -> dict:
    """One target entry; ``met`` is ``value op threshold`` unless the family decides it (``value`` None)."""
    if op not in OPS:
        raise ValueError(f"target {name}: op must be one of {OPS}, got {op!r}")
    if met is None:
        met = value is not None and _compare(value, op, threshold)
    return {"name": name, "what": what, "target": f"{op} {threshold}", "value": value, "met": bool(met)}


def parse_target(text: str) -> tuple[str, float]:
    """``">= 0.85"`` as ``(">=", 0.85)``.

    >>> parse_target("<= 65536")
    ('<=', 65536.0)
    """
    op, _, threshold = text.partition(" ")
    if op not in OPS:
        raise ValueError(f"not a target: {text!r} (want '>= 0.85' or '<= 1.0')")
    return op, float(threshold)


def target_met(entry: dict) -> bool | None:
    """Whether the measured value meets the target (None when there is no value to judge)."""
    if entry["value"] is None:
        return None
    op, threshold = parse_target(entry["target"])
    return _compare(entry["value"], op, threshold)


def _compare(value: float, op: str, threshold: float) -> bool:
    return bool(value >= threshold if op == ">=" else value <= threshold)


def new_card(
    name: str,
    version: str,
    task: dict,
    data: dict,
    metrics: dict,
    targets: list[dict],
    files: dict,
    limits: str,
) -> dict:
    """A card in the one shape (keys in ``CARD_KEYS`` order)."""
    return {
        "name": name,
        "version": version,
        "task": task,
        "data": data,
        "metrics": metrics,
        "targets": targets,
        "files": files,
        "limits": limits,
    }


def check_card(card: dict) -> list[str]:
    """What is wrong with a card's shape (empty: none)."""
    problems = []
    if tuple(card) != CARD_KEYS:
        problems.append(f"keys {list(card)}, want {list(CARD_KEYS)}")
    task = card.get("task")
    if not isinstance(task, dict) or any(k not in task for k in TASK_KEYS):
        problems.append(f"task must be a dict with {list(TASK_KEYS)}")
    for key in ("data", "metrics", "files"):
        if not isinstance(card.get(key), dict):
            problems.append(f"{key} must be a dict")
    for fmt, entry in (card.get("files") or {}).items():
        if not isinstance(entry, dict) or not {"path", "bytes"} <= set(entry):
            problems.append(f"files.{fmt} must have path and bytes")
    if not isinstance(card.get("limits"), str) or not card.get("limits"):
        problems.append("limits must be a non-empty string")
    targets = card.get("targets")
    if not isinstance(targets, list) or not targets:
        problems.append("targets must be a non-empty list")
        targets = []
    for t in targets:
        if not isinstance(t, dict) or tuple(t) != TARGET_KEYS:
            problems.append(f"target {t!r}: keys must be {list(TARGET_KEYS)}")
            continue
        if not isinstance(t["met"], bool):
            problems.append(f"target {t['name']}: met must be a boolean")
        try:
            judged = target_met(t)
        except ValueError as exc:
            problems.append(f"target {t['name']}: {exc}")
            continue
        if judged is not None and judged != t["met"]:
            problems.append(f"target {t['name']}: met is {t['met']} but {t['value']} {t['target']} is {judged}")
    return problems


def write_card(model_dir: Path, card: dict, sections: list[tuple[str, str]] = ()) -> dict:
    """Write ``card.json`` and ``card.md`` into ``model_dir``; ``sections``: the family's own (title, markdown)."""
    problems = check_card(card)
    if problems:
        raise ValueError(f"{card.get('name')}: not a model card: " + "; ".join(problems))
    model_dir = Path(model_dir)
    (model_dir / CARD_JSON).write_text(json.dumps(card, indent=2, default=_json_default) + "\n")
    (model_dir / CARD_MD).write_text(markdown(card, sections))
    return card


def read_card(model_dir: Path) -> dict:
    """A model's ``card.json``."""
    return json.loads((Path(model_dir) / CARD_JSON).read_text())


def _json_default(o):
    return o.item() if hasattr(o, "item") else str(o)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value)


def markdown(card: dict, sections: list[tuple[str, str]] = ()) -> str:
    """``card.md``: targets, the family's sections, files, inputs, limits."""
    task = card["task"]
    lines = [f"# {card['name']} v{card['version']}", "", task["description"], "", "## Targets", ""]
    lines += ["| target | required | measured | met |", "|---|---|---|---|"]
    for t in card["targets"]:
        lines.append(f"| {t['what']} (`{t['name']}`) | {t['target']} | {_cell(t['value'])} | {_yes(t['met'])} |")
    lines.append("")
    for title, body in sections:
        lines += [f"## {title}", "", body.rstrip("\n"), ""]
    extra = [k for entry in card["files"].values() for k in entry if k not in ("path", "bytes")]
    columns = list(dict.fromkeys(extra))
    lines += ["## Files", "", _row(["format", "file", "bytes", *columns]), _row(["---"] * (3 + len(columns)))]
    for fmt, entry in card["files"].items():
        lines.append(_row([fmt, entry["path"], str(entry["bytes"]), *(_cell(entry.get(c)) for c in columns)]))
    lines += ["", "## Inputs", "", ", ".join(f"`{f}`" for f in task["inputs"]), ""]
    lines += ["## Limits", "", card["limits"], ""]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _yes(met: bool) -> str:
    return "yes" if met else "NO"
