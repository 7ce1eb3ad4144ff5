"""Checkpoint files: the hash of a model's config section a checkpoint is valid for, and writing one atomically."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

_COPIES = ("estimate_from", "drift_model")  # keys naming a model whose detector a detector copies


def config_hash(config: Any, model: str) -> str:
    """A short hash of what the config says about ``model`` (its section, the site's identity and time zone).

    A detector that runs its own copy of another model's detector (calibration drift's
    ``estimate_from``, a calibration's ``drift_model``, and so on down) hashes those
    sections too: its saved state holds the copy's. An unknown name (a detector built by
    hand) hashes to "".
    """
    sections = {m.name: m for m in getattr(config, "models", [])}
    if model not in sections:
        return ""
    related: list[Any] = []
    names: list[str | None] = [model]
    while names:
        section = sections.get(names.pop(0))
        if section is not None and section not in related:
            related.append(section)
            names += [getattr(section, key, None) for key in _COPIES]
    blob = json.dumps(
        {
            "site": config.site,
            "gateway": config.gateway,
            "timezone": str(config.timezone),
            "models": [m.model_dump(mode="json") for m in related],
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_atomic(path: Path, data: str) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


__all__ = ["config_hash", "write_atomic"]
