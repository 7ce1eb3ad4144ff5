"""Change a few values of a YAML config in its text, keeping its comments and layout (``flash`` uses it).

>>> text = "sources:\\n  replay:\\n    file: ../.run/demo/net3.npz   # written by the demo\\n"
>>> print(replace_values(text, {("sources", "replay", "file"): "data/net3.npz"}), end="")
sources:
  replay:
    file: data/net3.npz   # written by the demo
>>> replace_values("a: {b: 'x y'}\\n", {("a", "b"): "it's: here"})
'a: {b: "it\\'s: here"}\\n'
"""

from __future__ import annotations

import json
import re

from gateway.config.yaml_lines import KeyPath, load_yaml_text

_PLAIN = re.compile(r"[A-Za-z0-9_/][A-Za-z0-9_./-]*")


def yaml_scalar(value: str) -> str:
    """``value`` as YAML text: plain when it is a simple path or name, else double-quoted."""
    return value if _PLAIN.fullmatch(value) and value not in ("true", "false", "null") else json.dumps(value)


def replace_values(text: str, values: dict[KeyPath, str]) -> str:
    """``text`` with the scalar at each key path replaced by the given text value; the rest is left as it is.

    ``KeyError`` names a key path that is not a scalar written in the text (a default, or a merged key);
    ``ValueError`` when two paths are one aliased value that would need two different texts.
    """
    spans = load_yaml_text(text).spans
    edits: dict[tuple[int, int], str] = {}
    for path, value in values.items():
        if path not in spans:
            raise KeyError(path)
        new = yaml_scalar(value)
        if edits.setdefault(spans[path], new) != new:
            raise ValueError(f"{path} is an alias of a value that is also given another text", path)
    for (start, end), new in sorted(edits.items(), reverse=True):
        text = text[:start] + new + text[end:]
    return text
