"""Detector checkpoints: each detector's state on disk, so a restarted gateway goes on where it was.

Without them a restart blinds the gateway: the learned leak model needs days of
history again, night flow two nights, the drift detector weeks, and an open alert is
orphaned. The ``CheckpointStore`` sits between the runner and its detectors:

- every reading goes through ``update(reading)``, which feeds each detector and, when
  ``storage.checkpoint_every_min`` of data time have passed since the last save (and
  at least ``MIN_SAVE_INTERVAL_S`` of wall time: a fast replay does not write a file
  per step), first saves every detector; so does the first reading after a model update (a
  crash then never leaves only the replaced version's checkpoint). ``save()`` at a clean stop.
- one file per detector, ``<data_dir>/checkpoints/<model>.json``, written atomically (a temp file in
  the same folder, fsync, rename, fsync of the folder). Its header says the format, the detector class,
  the config model, the exported model's name and version (None for a rule-based detector;
  ``estimator``: the model a detector reads, as calibration drift its virtual sensor), a hash of the
  model's config section and the data time of the last reading seen; then the detector's ``state()``,
  where each sensor's stream stood (``positions``) and the latest output times (``emitted``).
- ``begin(resume)`` at start (only when the run resumes, as ``frugalsense run`` does), once the installed
  model updates are in service, puts each matching checkpoint's state back. One corrupt, of another
  detector, model, version (the one in service now) or config, or older than ``checkpoint_max_age_days``
  before the first reading (the detector is reset then) is logged with the reason, counted
  (``checkpoints_ignored``) and left: that detector starts afresh. Nothing here ever stops the gateway.

A Reading a detector derives (a calibration's virtual sensor) is fed, in the same ``update``, to every
other detector (never back to its producer), one level deep: what a detector derives from a derived
reading is published, not fed on (no loop, however the models are wired). Derived readings are
positions like any sensor's (saved with the step that made them: a save comes between two readings),
so a restored detector skips the derived readings its checkpoint holds, even if their producer starts
afresh and makes them again. A producer restored while a consumer starts afresh does not make its
readings before the checkpoint again: that consumer, like any fresh one, learns from what comes.

A replay resumed after a crash starts again at the file's first reading; a restored detector skips
every reading its checkpoint already covers (``positions``: per sensor, the latest data time and how
many readings carried it), so nothing is counted twice. Its outputs after the checkpoint were stored
by the run that crashed; the outbox's resume marks drop them, told how many of the detector's outputs
at a mark's time came before the checkpoint (``emitted``), since those are not made again.

>>> from edge.contracts import Reading
>>> from edge.detectors import AqiDetector
>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> det = AqiDetector("s", "g", [("NO2", "no2")])
>>> store = CheckpointStore(folder, [det], ["cfg1"], every_ms=3_600_000, max_age_ms=86_400_000)
>>> for k in range(18):  # 1.5 h of 5-minute NO2
...     _ = list(store.update(Reading(k * 300_000, "s", "g", "NO2", "no2", 40.0, "ug/m3")))
>>> store.counters()["checkpoints_saved"]  # at 01:00 of data time
1
>>> store.save(); sorted(p.name for p in folder.iterdir()), store.counters()["checkpoints_saved"]
(['eaqi.json'], 2)
>>> again = CheckpointStore(folder, [AqiDetector("s", "g", [("NO2", "no2")])], ["cfg2"], every_ms=1, max_age_ms=1)
>>> again.begin(resume=None); again.counters()["checkpoints_ignored"]  # not resuming: nothing read
0
>>> again.begin(resume=_NoMarks()); _ = list(again.update(Reading(0, "s", "g", "NO2", "no2", 1.0, "ug/m3")))
>>> again.counters()["checkpoints_restored"], again.counters()["checkpoints_ignored"]  # another config hash
(0, 1)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge.contracts import Alert, Reading
from edge.detectors import Detector, Output
from gateway.device.checkpoint_files import config_hash, write_atomic

log = logging.getLogger(__name__)

FORMAT = 1
FOLDER = "checkpoints"
MIN_SAVE_INTERVAL_S = 1.0  # a replay far faster than real time saves at most this often
LOGGED_ERRORS = 10


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with the reason (logged, counted, ignored)."""


class _NoMarks:
    """A resume with nothing stored (for doctests and callers without an outbox)."""

    marks: dict = {}

    def already_asked(self, stream: str, count: int) -> None:
        """Nothing to tell: no stream has a mark."""


class CheckpointStore:
    """The gateway's detectors, fed through here, and their checkpoints in ``folder``."""

    def __init__(
        self,
        folder: Path,
        detectors: list[Detector],
        hashes: list[str],
        *,
        every_ms: int,
        max_age_ms: int,
        topics: Any = None,
    ):
        self.folder = Path(folder)
        self.detectors = detectors
        self.hashes = hashes
        self.every_ms = every_ms
        self.max_age_ms = max_age_ms
        self.topics = topics  # gateway.protocol.topics.Topics: which outbox stream an output goes to
        self._positions: dict[str, list[int]] = {}  # sensor -> [latest data time, readings at that time]
        self._emitted: list[dict[str, list[int]]] = [{} for _ in detectors]  # "alerts"/"detections" -> [time, n]
        self._skips: list[dict[str, list[int]]] = [{} for _ in detectors]  # sensor -> [time, count, seen]
        self._pending: dict[int, tuple[dict, dict, dict]] | None = None  # restored in begin(), until a reading
        self._models = [_model_of(d) for d in detectors]  # the models in service at the last save
        self._resume: Any = None
        self._last_ms: int | None = None
        self._due_ms: int | None = None
        self._next_save_s = 0.0
        self.saved = self.restored = self.ignored = self.save_errors = self.skipped = 0

    @classmethod
    def from_config(cls, config: Any, detectors: list[Detector], topics: Any = None) -> CheckpointStore:
        """The store of a gateway config: ``<storage.data_dir>/checkpoints``, its intervals."""
        storage = config.storage
        return cls(
            config.resolve_path(storage.data_dir) / FOLDER,
            detectors,
            [config_hash(config, d.model) for d in detectors],
            every_ms=getattr(storage, "checkpoint_every_min", 5) * 60_000,
            max_age_ms=getattr(storage, "checkpoint_max_age_days", 7) * 86_400_000,
            topics=topics,
        )

    def path(self, detector: Detector) -> Path:
        return self.folder / f"{detector.model}.json"

    # ---- start -----------------------------------------------------------------------------------------
    def begin(self, resume: Any) -> None:
        """Restore the checkpoints that match if this run resumes (``resume``: the outbox marks), else none.

        Called holding the lock model updates take: one arriving later is handed over as to a
        detector that never stopped. The first reading counts it restored, or too old.
        """
        self._resume, self._models = resume, [_model_of(d) for d in self.detectors]  # the models now in service
        if resume is None:
            return
        self._pending = {}
        for stale in self.folder.glob(".*.tmp"):  # a save cut short by a crash: the renamed file is intact
            stale.unlink(missing_ok=True)
        for i, detector in enumerate(self.detectors):
            path = self.path(detector)
            if not path.exists():
                continue
            try:
                doc = self._read(path, i)
            except CheckpointError as exc:
                self._ignore(path, str(exc))
                continue
            try:
                skips = {s: [_whole(p[0]), _whole(p[1]), 0] for s, p in doc["positions"].items()}
                emitted = {k: [_whole(v[0]), _whole(v[1])] for k, v in doc["emitted"].items() if k in _STREAMS}
                detector.restore(doc["state"])
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                detector.reset()
                self._ignore(path, f"its state does not fit the detector: {exc}")
                continue
            self._pending[i] = (doc, skips, emitted)

    def _read(self, path: Path, i: int) -> dict:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(f"unreadable or not JSON (truncated?): {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("header"), dict):
            raise CheckpointError("no header: not a checkpoint")
        head = doc["header"]
        for key, value in self._identity(i).items():
            if head.get(key) != value:
                raise CheckpointError(f"saved for {key} {head.get(key)!r}, this gateway runs {value!r}")
        last = head.get("last_time_ms")
        if isinstance(last, bool) or not isinstance(last, int):
            raise CheckpointError(f"last_time_ms must be a whole number, got {last!r}")
        for key in ("state", "positions", "emitted"):
            if not isinstance(doc.get(key), dict):
                raise CheckpointError(f"{key} must be a JSON object")
        return doc

    def _ignore(self, path: Path, reason: str) -> None:
        self.ignored += 1
        log.warning("checkpoint %s ignored: %s; that detector starts afresh", path, reason)

    def _restore_pending(self, first_ms: int) -> None:
        pending, self._pending = self._pending or {}, None
        for i, (doc, skips, emitted) in pending.items():
            detector, path = self.detectors[i], self.path(self.detectors[i])
            last = doc["header"]["last_time_ms"]
            if first_ms - last > self.max_age_ms:
                detector.reset()
                age_h = (first_ms - last) / 3_600_000
                self._ignore(path, f"too old: its last reading is {age_h:.1f} h before the first one of this run")
                continue
            self._skips[i], self._emitted[i] = skips, emitted
            self._tell_resume(detector, emitted)
            self.restored += 1
            log.info("checkpoint %s restored: %s goes on from %s", path, detector.model, _when(last))

    def _tell_resume(self, detector: Detector, emitted: dict[str, list[int]]) -> None:
        """The detector's outputs at a stream's mark time made before the checkpoint will not come again."""
        if self.topics is None or self._resume is None:
            return
        for key, (t, n) in emitted.items():
            stream = self.topics.alerts if key == "alerts" else self.topics.detections(detector.kind)
            mark = self._resume.marks.get(stream)
            if mark is not None and mark.time_ms == t:
                self._resume.already_asked(stream, n)

    # ---- the stream ------------------------------------------------------------------------------------
    def update(self, reading: Reading) -> Iterator[list[Output]]:
        """Feed ``reading`` to every detector (but one whose checkpoint covers it); yield each one's outputs."""
        t = reading.time_ms
        if self._pending is not None:
            self._restore_pending(t)
        if self._due_ms is None:
            self._due_ms = t + self.every_ms
        elif t >= self._due_ms and time.monotonic() >= self._next_save_s:
            self.save()  # before this reading: every output of the earlier ones is already stored
        elif self._models_changed():
            self.save()  # a model update was applied: a checkpoint of the old version could not be restored
        if self._last_ms is None or t > self._last_ms:
            self._last_ms = t
        position = self._positions.get(reading.sensor)  # _advance, inlined: this runs for every reading
        if position is None or t > position[0]:
            self._positions[reading.sensor] = [t, 1]
        elif t == position[0]:
            position[1] += 1
        derived: list[tuple[int, Reading]] | None = None
        for i, detector in enumerate(self.detectors):
            if self._skips[i] and _covered(self._skips[i], reading):
                self.skipped += 1
                continue
            outputs = detector.update(reading)
            if outputs:  # most readings make no output: nothing more to do for them
                self._count(i, outputs)
                made = [(i, o) for o in outputs if isinstance(o, Reading)]
                if made:
                    derived = made if derived is None else derived + made
            yield outputs
        if derived:
            yield from self._feed_derived(derived)

    def _advance(self, reading: Reading) -> None:
        """Where ``reading``'s sensor stream now stands: its latest data time and how many readings carry it."""
        t, position = reading.time_ms, self._positions.get(reading.sensor)
        if position is None or t > position[0]:
            self._positions[reading.sensor] = [t, 1]
        elif t == position[0]:
            position[1] += 1

    def _feed_derived(self, derived: list[tuple[int, Reading]]) -> Iterator[list[Output]]:
        """Each derived reading to every detector but its producer; what they derive is not fed on."""
        for producer, reading in derived:
            self._advance(reading)
            for i, detector in enumerate(self.detectors):
                if i == producer:
                    continue
                if self._skips[i] and _covered(self._skips[i], reading):
                    self.skipped += 1
                    continue
                outputs = detector.update(reading)
                if outputs:
                    self._count(i, outputs)
                yield outputs

    def _models_changed(self) -> bool:
        return any(_model_of(d) != saved for d, saved in zip(self.detectors, self._models, strict=True))

    def _count(self, i: int, outputs: list[Output]) -> None:
        emitted = self._emitted[i]
        for out in (o for o in outputs if not isinstance(o, Reading)):  # a derived Reading: not alerts/detections
            key = "alerts" if isinstance(out, Alert) else "detections"
            last = emitted.get(key)
            if last is None or out.time_ms > last[0]:
                emitted[key] = [out.time_ms, 1]
            elif out.time_ms == last[0]:
                last[1] += 1

    # ---- saving ----------------------------------------------------------------------------------------
    def save(self) -> None:
        """Write every detector's checkpoint now (a failure is logged and counted, never raised)."""
        if self._last_ms is None:
            return  # no reading yet: nothing a checkpoint could add to the one on disk
        self._due_ms = self._last_ms + self.every_ms
        self._next_save_s = time.monotonic() + MIN_SAVE_INTERVAL_S
        self._models = [_model_of(d) for d in self.detectors]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._save_failed(self.folder, exc)
            return
        for i, detector in enumerate(self.detectors):
            path = self.path(detector)
            try:
                write_atomic(path, json.dumps(self._document(i), allow_nan=False, separators=(",", ":")))
            except (OSError, ValueError, TypeError) as exc:
                self._save_failed(path, exc)
            else:
                self.saved += 1

    def _identity(self, i: int) -> dict:
        """What a checkpoint's header must say to be this detector's, as it runs now."""
        detector = self.detectors[i]
        return {
            "format": FORMAT,
            "detector": type(detector).__name__,
            "model": detector.model,
            "model_name": detector.model_name,
            "model_version": detector.model_version,
            "estimator": _estimator(detector),
            "config_hash": self.hashes[i],
        }

    def _document(self, i: int) -> dict:
        return {
            "header": {
                **self._identity(i),
                "last_time_ms": self._last_ms,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "state": self.detectors[i].state(),
            "positions": self._positions,
            "emitted": self._emitted[i],
        }

    def _save_failed(self, path: Path, exc: Exception) -> None:
        self.save_errors += 1
        if self.save_errors <= LOGGED_ERRORS:
            log.error("checkpoint %s not saved: %s", path, exc)

    def counters(self) -> dict[str, int]:
        """For the status message."""
        return {
            "checkpoints_saved": self.saved,
            "checkpoints_restored": self.restored,
            "checkpoints_ignored": self.ignored,
            "checkpoint_errors": self.save_errors,
            "checkpoint_readings_skipped": self.skipped,  # readings a restored detector already held: not fed again
        }


_STREAMS = ("alerts", "detections")


def _covered(skips: dict[str, list[int]], reading: Reading) -> bool:
    """Whether a restored detector's checkpoint already holds ``reading`` (then it must not see it again)."""
    mark = skips.get(reading.sensor)
    if mark is None:
        return False
    if reading.time_ms < mark[0]:
        return True
    if reading.time_ms == mark[0]:
        mark[2] += 1
        if mark[2] <= mark[1]:
            return True
    del skips[reading.sensor]  # past the checkpoint on this sensor: every later reading is new
    return False


def _model_of(detector: Detector) -> tuple:
    """What a checkpoint header says of the models a detector runs (a model update changes it)."""
    return detector.model_name, detector.model_version, _estimator(detector)


def _estimator(detector: Detector) -> list | None:
    """The model name and version of the detector a detector reads (calibration drift's virtual sensor)."""
    inner = getattr(detector, "estimator", None)
    return [inner.model_name, inner.model_version] if isinstance(inner, Detector) else None


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r}")
    return value


def _when(time_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time_ms / 1000))


__all__ = ["FOLDER", "FORMAT", "CheckpointError", "CheckpointStore", "config_hash", "write_atomic"]
