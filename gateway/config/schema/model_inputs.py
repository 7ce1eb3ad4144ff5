"""What a learned model was trained on against what the config's sensors feed it, in a technician's words.

A learned leak model reads one value per network element and quantity (flow at link
10, pressure at junction 101, ...), listed in its manifest. A config that lacks a
sensor for one of them cannot run the model: say so at the model, naming what is
missing, before anything is loaded.

>>> print(missing_inputs_message("leak-mlp-net3", [("10", "flow"), ("101", "pressure"), ("123", "pressure")]))
model leak-mlp-net3 needs flow at 10 and pressure at 101, 123 (the network elements it was trained on); no sensor \
in `sensors` measures them: add them (a replay sensor's `column`, or this model's `inputs`) or use a model trained \
without them
"""

from __future__ import annotations

from pathlib import Path

from gateway.config.schema.model_base import MissingInputs


def missing_inputs_message(model: str, missing: list[tuple[str, str]]) -> str:
    """The message for ``missing`` (element, quantity) pairs of ``model``, grouped by quantity in model order."""
    by_quantity: dict[str, list[str]] = {}
    for element, quantity in missing:
        by_quantity.setdefault(quantity, []).append(element)
    needs = " and ".join(f"{quantity} at {', '.join(elements)}" for quantity, elements in by_quantity.items())
    return (
        f"model {model} needs {needs} (the network elements it was trained on); no sensor in `sensors` measures "
        "them: add them (a replay sensor's `column`, or this model's `inputs`) or use a model trained without them"
    )


def require_leak_inputs(model_dir: Path, inputs: dict[str, tuple[str, str]]) -> None:
    """Raise ``MissingInputs`` if the model in ``model_dir`` reads an (element, quantity) no entry of ``inputs`` gives.

    ``inputs`` maps sensor ids to (element, quantity). A model folder that cannot be read is
    left to the detector, which says what is wrong with it.
    """
    from edge.runtime.manifest import ManifestError, ModelManifest

    try:
        manifest = ModelManifest.read(model_dir)
        trained = [(str(e), str(q)) for e, q in manifest.raw["detector"]["sensors"]]
    except (ManifestError, KeyError, TypeError, ValueError):
        return
    fed = {(str(e), str(q)) for e, q in inputs.values()}
    missing = [pair for pair in trained if pair not in fed]
    if missing:
        raise MissingInputs(missing_inputs_message(manifest.name, missing))
