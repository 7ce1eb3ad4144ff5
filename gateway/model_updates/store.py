"""The model store on the gateway's disk: version folders and the pointer to the one in service.

Under ``storage.data_dir/models/<name>/`` an update's files go to ``<version>/`` (each
fsynced, written aside and renamed into place), and ``current.json`` names the version
in service and the previous one (written aside and renamed, so it is always the old or
the new one, whole). The previous version stays on disk, so a restart after a crash at
any step finds a complete model to run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.runtime.manifest import MANIFEST_FILE
from gateway.model_updates.envelope import SIGNATURE_FILE, VerifiedUpdate

log = logging.getLogger(__name__)

POINTER_FILE = "current.json"
SMOKE_FILE = "smoke_windows.npy"  # raw feature rows recorded on this gateway
STAGING_PREFIX = ".incoming-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class Pointer:
    """A model's ``current.json``: the version in service and the one kept to fall back to."""

    current: str
    previous: str | None = None


class ModelStore:
    """``<root>/<name>/<version>/`` folders and the ``current.json`` pointer of each model name."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def names(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob(f"*/{POINTER_FILE}")) if self.root.is_dir() else []

    def version_dir(self, name: str, version: str) -> Path:
        return self.root / name / version

    def pointer(self, name: str) -> Pointer | None:
        path = self.root / name / POINTER_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Pointer(str(data["current"]), None if data.get("previous") is None else str(data["previous"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Cannot happen through set_pointer (rename is atomic); a hand edit can.
            log.error("model %s: %s is unreadable (%s); treating the model as not installed", name, path, exc)
            return None

    def set_pointer(self, name: str, pointer: Pointer | None) -> None:
        """Replace the pointer in one step: a crash leaves the old one or the new one, never half of one."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / POINTER_FILE
        if pointer is None:
            target.unlink(missing_ok=True)
        else:
            tmp = folder / f"{POINTER_FILE}.tmp"
            _write_synced(tmp, json.dumps(asdict(pointer)).encode())
            os.replace(tmp, target)
        _fsync_dir(folder)

    def install(self, update: VerifiedUpdate) -> Path:
        """Write the update to ``<name>/<version>/``, complete and fsynced before it gets that name."""
        folder = self.root / update.name
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / update.version
        if (final / MANIFEST_FILE).is_file() and (final / MANIFEST_FILE).read_bytes() == update.manifest_bytes:
            return final  # the same signed build is already here (the previous version, re-sent)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
        try:
            for rel, content in update.files.items():
                _write_synced(staging / rel, content)
            _write_synced(staging / SIGNATURE_FILE, json.dumps(update.signature).encode())
            _write_synced(staging / MANIFEST_FILE, update.manifest_bytes)
            _fsync_dir(staging)
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
            _fsync_dir(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final

    def prune(self, name: str) -> None:
        """Remove every version folder but the current and previous ones, and any half-written one."""
        folder = self.root / name
        pointer = self.pointer(name)
        keep = {pointer.current, pointer.previous} if pointer else set()
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)

    def smoke_windows(self, name: str) -> np.ndarray | None:
        path = self.root / name / SMOKE_FILE
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            log.warning("model %s: cannot read recorded smoke-test windows %s (%s)", name, path, exc)
            return None

    def record_smoke_windows(self, name: str, windows) -> None:
        """Keep raw feature rows seen on this gateway; every candidate for ``name`` must score them."""
        X = np.asarray(windows, dtype=np.float64)
        if X.ndim != 2 or not len(X) or not np.all(np.isfinite(X)):
            raise ValueError("smoke-test windows must be a non-empty 2-D array of finite feature rows")
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{SMOKE_FILE}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, X)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / SMOKE_FILE)
