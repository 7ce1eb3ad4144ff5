"""Cell-tower aggregates from operator files: a privacy guard first, then device counts per zone and slot as Readings.

Operators release how many devices each antenna (cell) saw per time slot, never
traces. A file is CSV (``,`` or ``;``) with a header naming ``cell_id``, ``slot_start``
and ``count``, and optionally ``count_<mode>`` columns (``count_walk``,
``count_vehicle``, ...). Slot times are ISO 8601; one without an offset is taken in
the gateway's time zone.

**The privacy guard runs first.** Every count is compared with k (default 11, never
below 5) as soon as its text is read, before the row is even checked; a count below
k is dropped there, counted, and never stored, logged or published. If one mode count
of a row is dropped, every mode count of that row is dropped too: the total minus
the other modes would give the small one back. Messages about bad rows never quote
a count.

A zone's reading for a slot is the sum of the counts that passed, over the zone's
cells: quality OK when every cell of the zone that reported passed, SUSPECT when some
were dropped (the sum is then a lower bound), UNKNOWN (no value) when none passed.

>>> import io
>>> text = "cell_id;slot_start;count\\nC1;2026-03-02T08:00:00Z;40\\nC2;2026-03-02T08:00:00Z;4\\n"
>>> src = CellCountSource(io.StringIO(text), "centre", "gw-air-01", [ZoneCount("CC-centre", {"C1", "C2"})])
>>> [(r.sensor, r.value, r.quality.value) for r in src]
[('CC-centre', 40.0, 'suspect')]
>>> src.counters["suppressed"]
1
"""

from __future__ import annotations

import csv
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from edge.contracts import Quality, Reading, check_id, datetime_to_ms
from edge.sources.batched import BatchedSource

log = logging.getLogger(__name__)

MIN_K = 5  # below this, aggregates identify people: refused whatever the config says
DEFAULT_K = 11  # what statistical offices use per cell (field notes)
CELL_COLUMNS, SLOT_COLUMNS, COUNT_COLUMN = ("cell_id", "cell"), ("slot_start", "slot", "time"), "count"
MODE_PREFIX = "count_"
LOGGED_ROWS = 5
_WHOLE = re.compile(r"^\d{1,9}$")


class CellFileError(ValueError):
    """An operator file that cannot be read as cell counts at all (missing columns, not text)."""


class PrivacyGuard:
    """Admits a count only if it is at least k; counts what it drops."""

    def __init__(self, k: int = DEFAULT_K):
        if isinstance(k, bool) or not isinstance(k, int) or k < MIN_K:
            raise ValueError(f"privacy k must be a whole number of at least {MIN_K}, got {k!r}")
        self.k = k
        self.suppressed = 0
        self.not_counts = 0  # text that is no whole number: unusable, and never quoted in a message

    def admit(self, text: str) -> int | None:
        """The count in ``text`` if it may be used; None if it is below k or not a count."""
        text = text.strip()
        if not _WHOLE.match(text):
            self.not_counts += 1
            return None
        count = int(text)
        if count < self.k:
            self.suppressed += 1
            return None
        return count


@dataclass(frozen=True, slots=True)
class ZoneCount:
    """One published series: the devices seen in ``cells`` (all modes, or one mode)."""

    sensor: str
    cells: frozenset[str] | set[str]
    mode: str | None = None  # None: the ``count`` column


def read_cell_map(path: str | Path) -> dict[str, set[str]]:
    """Zone -> cells from a CSV with ``cell_id`` and ``zone`` columns."""
    zones: dict[str, set[str]] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, dialect=_dialect(f))
        names = {(n or "").strip().lower(): n for n in reader.fieldnames or []}
        if "zone" not in names or not (set(CELL_COLUMNS) & set(names)):
            raise CellFileError(f"{path}: a cell map needs 'cell_id' and 'zone' columns, has {', '.join(names)}")
        cell_key = names[next(c for c in CELL_COLUMNS if c in names)]
        for row in reader:
            zones.setdefault((row[names["zone"]] or "").strip(), set()).add((row[cell_key] or "").strip())
    return zones


def _dialect(f: TextIO) -> type[csv.Dialect]:
    header = f.readline()
    f.seek(0)
    return csv.excel if header.count(",") >= header.count(";") else _Semicolon


class _Semicolon(csv.excel):
    delimiter = ";"


class CellCountSource(BatchedSource):
    """Readings of quantity ``cell_count`` from one operator file, or every ``*.csv`` in a folder (in name order).

    With ``follow``, a folder is watched every ``poll_s`` seconds for new files until ``stop`` is set.
    """

    def __init__(
        self,
        path: str | Path | TextIO,
        site: str,
        gateway: str,
        zones: Iterable[ZoneCount],
        *,
        k: int = DEFAULT_K,
        timezone: str = "UTC",
        follow: bool = False,
        poll_s: float = 60.0,
        stop: threading.Event | None = None,
    ):
        self.path = path
        self.site = check_id("site", site)
        self.gateway = check_id("gateway", gateway)
        self.zones = [ZoneCount(check_id("sensor", z.sensor), frozenset(z.cells), z.mode) for z in zones]
        if not self.zones:
            raise ValueError("a cell count source needs at least one zone sensor")
        self.guard = PrivacyGuard(k)
        self.tz = ZoneInfo(timezone)
        self.follow, self.poll_s = follow, poll_s
        self.stop = stop if stop is not None else threading.Event()
        self._done: set[str] = set()
        self._counters: Counter[str] = Counter()

    @classmethod
    def from_config_entries(
        cls,
        site: str,
        gateway: str,
        entries: Iterable[dict],
        *,
        resolve: Callable[[str], Path] = Path,
        timezone: str = "UTC",
        stop: threading.Event | None = None,
    ) -> list[CellCountSource]:
        """Sources for the gateway config's ``cell_counts`` sensor entries (plain mappings): one per file and k,
        so a file is read once whatever the number of zones and modes it feeds."""
        groups: dict[tuple, list[ZoneCount]] = {}
        for e in entries:
            if e.get("cells") is not None:
                cells = set(e["cells"])
            else:
                path = resolve(e["cell_map"])
                try:
                    zones = read_cell_map(path)
                except (OSError, UnicodeDecodeError, csv.Error) as exc:
                    raise CellFileError(
                        f"sensor {e['id']}: cannot read cell_map {path}: {getattr(exc, 'strerror', None) or exc}"
                    ) from None
                if e["zone"] not in zones:
                    raise CellFileError(
                        f"sensor {e['id']}: cell_map {path} has no zone {e['zone']!r} "
                        f"(it has {', '.join(sorted(zones)) or 'none'})"
                    )
                cells = zones[e["zone"]]
            key = (str(resolve(e["file"])), e.get("k", DEFAULT_K), e.get("follow", False), e.get("poll_s", 60.0))
            groups.setdefault(key, []).append(ZoneCount(e["id"], cells, e.get("mode")))
        return [
            cls(path, site, gateway, zones, k=k, timezone=timezone, follow=follow, poll_s=poll_s, stop=stop)
            for (path, k, follow, poll_s), zones in groups.items()
        ]

    @property
    def counters(self) -> Counter:
        return self._counters + Counter(suppressed=self.guard.suppressed, not_counts=self.guard.not_counts)

    def batches(self) -> Iterator[list[Reading]]:
        """One list per file read."""
        while True:
            for name in self._new_files():
                yield self._file(name)
            if not self.follow or self.stop.wait(self.poll_s):
                return

    def _new_files(self) -> list[str]:
        if not isinstance(self.path, (str, Path)):
            files = ["<stream>"]
        else:
            path = Path(self.path)
            files = [str(f) for f in sorted(path.glob("*.csv"))] if path.is_dir() else [str(path)]
        new = [f for f in files if f not in self._done]
        self._done.update(new)
        return new

    def _file(self, name: str) -> list[Reading]:
        try:
            if not isinstance(self.path, (str, Path)):  # a text stream, listed as "<stream>"
                slots = self._read(name, self.path)
            else:
                with open(name, newline="", encoding="utf-8-sig") as f:
                    slots = self._read(name, f)
        except (OSError, UnicodeDecodeError, CellFileError, csv.Error) as exc:
            self._counters["unreadable_files"] += 1
            log.error("cell counts: %s", exc if isinstance(exc, CellFileError) else f"{name}: cannot read: {exc}")
            return []
        self._counters["files"] += 1
        return [reading for slot in sorted(slots) for reading in self._zone_readings(slot, slots[slot])]

    def _read(self, name: str, f: TextIO) -> dict[int, dict[str, tuple[int | None, dict[str, int | None]]]]:
        reader = csv.reader(f, dialect=_dialect(f))
        header = [h.strip().lower() for h in next(reader, [])]
        cell_i = next((header.index(c) for c in CELL_COLUMNS if c in header), None)
        slot_i = next((header.index(c) for c in SLOT_COLUMNS if c in header), None)
        if cell_i is None or slot_i is None or COUNT_COLUMN not in header:
            raise CellFileError(
                f"{name}: the header must name cell_id, slot_start and count; it has {', '.join(header) or 'nothing'}"
            )
        count_i = header.index(COUNT_COLUMN)
        modes = {h[len(MODE_PREFIX) :]: i for i, h in enumerate(header) if h.startswith(MODE_PREFIX) and len(h) > 6}
        slots: dict[int, dict[str, tuple[int | None, dict[str, int | None]]]] = {}
        for line, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            # The guard sees every count first; nothing below k survives this block.
            total = self.guard.admit(row[count_i]) if count_i < len(row) else None
            by_mode = {m: self.guard.admit(row[i]) for m, i in modes.items() if i < len(row) and row[i].strip()}
            if None in by_mode.values():
                self._counters["suppressed_secondary"] += sum(v is not None for v in by_mode.values())
                by_mode = dict.fromkeys(by_mode)
            if len(row) != len(header):
                self._bad(name, line, f"{len(row)} fields where the header has {len(header)}")
                continue
            cell = row[cell_i].strip()
            slot = self._slot_ms(row[slot_i])
            if not cell or slot is None:
                self._bad(
                    name,
                    line,
                    "no cell id"
                    if not cell
                    else f"slot_start {row[slot_i].strip()[:40]!r} is not an ISO 8601 date-time",
                )
                continue
            if cell in slots.setdefault(slot, {}):
                self._bad(name, line, f"cell {cell[:40]} appears twice in one slot")
                continue
            slots[slot][cell] = (total, by_mode)
            self._counters["rows"] += 1
        return slots

    def _slot_ms(self, text: str) -> int | None:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.tz)
        return datetime_to_ms(when)

    def _zone_readings(self, slot_ms: int, cells: dict) -> list[Reading]:
        out = []
        for zone in self.zones:
            counts = [
                total if zone.mode is None else modes.get(zone.mode, None)
                for cell, (total, modes) in cells.items()
                if cell in zone.cells
            ]
            admitted = [c for c in counts if c is not None]
            if not admitted:
                reading = Reading(
                    slot_ms, self.site, self.gateway, zone.sensor, "cell_count", None, "count", Quality.UNKNOWN
                )
            else:
                quality = Quality.OK if len(admitted) == len(counts) else Quality.SUSPECT
                reading = Reading(
                    slot_ms, self.site, self.gateway, zone.sensor, "cell_count", float(sum(admitted)), "count", quality
                )
            out.append(reading)
        self._counters["outside_zones"] += sum(not any(c in z.cells for z in self.zones) for c in cells)
        return out

    def _bad(self, name: str, line: int, why: str) -> None:
        self._counters["bad_rows"] += 1
        if self._counters["bad_rows"] <= LOGGED_ROWS:
            log.warning("cell counts: %s:%d: %s; row skipped", name, line, why)
