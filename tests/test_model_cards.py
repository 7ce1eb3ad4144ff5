"""Every shipped model card has the one card shape, and every target's ``met`` agrees with its value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.cards import CARD_KEYS, TARGET_KEYS, check_card, markdown, new_card, parse_target, target

MODELS = Path(__file__).resolve().parents[1] / "models"
CARDS = sorted(p.parent.name for p in MODELS.glob("*/card.json"))


def test_every_shipped_model_has_a_card():
    assert CARDS == sorted(p.parent.name for p in MODELS.glob("*/manifest.json"))
    assert {"air-pattern", "air-fault", "air-no2-virtual", "leak-mlp-net3", "leak-mlp-net3-presence"} <= set(CARDS)


@pytest.mark.parametrize("name", CARDS)
def test_shipped_card_has_the_one_shape(name):
    card = json.loads((MODELS / name / "card.json").read_text())
    assert tuple(card) == CARD_KEYS
    assert check_card(card) == []
    assert card["name"] == name
    manifest = json.loads((MODELS / name / "manifest.json").read_text())
    assert card["version"] == manifest["version"] and card["task"]["kind"] == manifest["task"]
    assert card["task"]["inputs"] == manifest["input"]["features"]
    for fmt, entry in card["files"].items():
        assert entry["path"] == manifest["files"][fmt]["path"] and entry["bytes"] == manifest["files"][fmt]["bytes"]
    assert (MODELS / name / "card.md").read_text().startswith(f"# {name} v{card['version']}\n")


@pytest.mark.parametrize("name", CARDS)
def test_every_target_has_a_boolean_met_consistent_with_its_value(name):
    targets = json.loads((MODELS / name / "card.json").read_text())["targets"]
    assert targets
    for t in targets:
        assert tuple(t) == TARGET_KEYS and isinstance(t["met"], bool), t
        assert isinstance(t["value"], int | float) and not isinstance(t["value"], bool), t
        op, threshold = parse_target(t["target"])
        assert t["met"] == (t["value"] >= threshold if op == ">=" else t["value"] <= threshold), t


def test_check_card_names_what_is_wrong():
    good = target("f1", "F1", ">=", 0.85, 0.9)
    card = new_card("m", "1", {"kind": "classification", "description": "d", "inputs": [], "outputs": []}, {}, {},
                    [good], {"numpy": {"path": "m.npz", "bytes": 1}}, "simulated")  # fmt: skip
    assert check_card(card) == []
    lying = dict(good, met=False)
    assert "met is False" in check_card(dict(card, targets=[lying]))[0]
    assert check_card({**card, "extra": 1})[0].startswith("keys")
    assert target("x", "x", "<=", 1.0, None)["met"] is False
    with pytest.raises(ValueError, match="op must be"):
        target("x", "x", "==", 1.0, 1.0)
    assert "| F1 (`f1`) | >= 0.85 | 0.9 | yes |" in markdown(card)
