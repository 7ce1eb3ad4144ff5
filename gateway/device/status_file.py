"""The gateway's last status, kept in its data dir (``status.json``) for ``doctor`` to read on site.

The runner writes it every time it sends a status message, with the same counters and
per-source counters, atomically (a temporary file, fsync, rename): ``doctor`` shows what
the gateway last said about itself even when the broker is unreachable, which is when
a technician needs it most.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> write_status(folder, {"time": 1_772_409_600_000, "counters": {"alerts": 1}, "sources": {}})
>>> read_status(folder)["counters"]
{'alerts': 1}
>>> read_status(folder + "/nowhere") is None
True
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FILE_NAME = "status.json"


def status_path(data_dir: str | os.PathLike) -> Path:
    """Where a gateway's last status is, in its ``storage.data_dir``."""
    return Path(data_dir) / FILE_NAME


def write_status(data_dir: str | os.PathLike, body: dict) -> None:
    """Replace the stored status with ``body`` (a JSON object); raises OSError when the folder cannot be written."""
    path = status_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(body, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def read_status(data_dir: str | os.PathLike) -> dict | None:
    """The stored status, or None when there is none (the gateway never ran here); ValueError if unreadable."""
    path = status_path(data_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path} is not a status the gateway wrote ({exc})") from None
    if not isinstance(body, dict):
        raise ValueError(f"{path} is not a status the gateway wrote (not a JSON object)")
    return body
