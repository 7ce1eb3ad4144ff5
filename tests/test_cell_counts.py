"""Cell-tower counts: the privacy guard drops every count below k before anything uses it, and nothing small leaks."""

from __future__ import annotations

import io
import logging
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.contracts import Quality
from edge.sources.cell_counts import MIN_K, CellCountSource, CellFileError, PrivacyGuard, ZoneCount, read_cell_map

SLOTS = ["2026-03-02T08:00:00Z", "2026-03-02T08:10:00Z", "2026-03-02T08:20:00+00:00", "2026-03-02 09:30:00"]
ZONE_A, ZONE_B = {"A1", "A2", "A3"}, {"B1"}
OUTSIDE = ["X1", "X2"]


def operator_file(rows: list[tuple], delimiter: str = ",", modes: bool = True) -> str:
    header = ["cell_id", "slot_start", "count"] + (["count_walk", "count_vehicle"] if modes else [])
    lines = [delimiter.join(header)]
    for row in rows:
        lines.append(delimiter.join(str(v) for v in (row if modes else row[:3])))
    return "\n".join(lines) + "\n"


def ms(slot: str) -> int:
    when = datetime.fromisoformat(slot.replace("Z", "+00:00"))
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


def zones() -> list[ZoneCount]:
    return [
        ZoneCount("CC-a", ZONE_A),
        ZoneCount("CC-b", ZONE_B),
        ZoneCount("CC-a-walk", ZONE_A, "walk"),
        ZoneCount("CC-a-vehicle", ZONE_A, "vehicle"),
    ]


@settings(derandomize=True, max_examples=150, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(MIN_K, 25),
    n_rows=st.integers(0, 60),
    delimiter=st.sampled_from([",", ";"]),
)
def test_no_count_below_k_ever_leaves_the_source(seed, k, n_rows, delimiter):
    rnd = random.Random(seed)
    cells = sorted(ZONE_A | ZONE_B) + OUTSIDE
    rows, seen = [], set()
    for _ in range(n_rows):
        cell, slot = rnd.choice(cells), rnd.choice(SLOTS)
        if (cell, slot) in seen:
            continue
        seen.add((cell, slot))
        walk, vehicle = rnd.choice([0, 1, 3, k - 1, k, k + 1, rnd.randint(0, 80)]), rnd.randint(0, 80)
        rows.append((cell, slot, walk + vehicle, walk, vehicle))  # modes add up to the total
    source = CellCountSource(io.StringIO(operator_file(rows, delimiter)), "centre", "gw-1", zones(), k=k)
    readings = list(source)

    small = sum(v < k for row in rows for v in row[2:])
    assert source.counters["suppressed"] == small
    by_slot: dict[int, dict[str, float | None]] = {}
    for r in readings:
        r.validate()
        assert r.value is None or r.value >= k, f"{r.sensor} published {r.value} below k={k}"
        by_slot.setdefault(r.time_ms, {})[r.sensor] = r.value
    for published in by_slot.values():
        # Differencing the total and the modes of one zone must not give a small count back either.
        total = published["CC-a"] or 0
        difference = total - (published["CC-a-walk"] or 0) - (published["CC-a-vehicle"] or 0)
        assert difference == 0 or difference >= k

    # And the guard drops nothing more than it must: zone sums of the admitted counts.
    for slot in SLOTS:
        slot_ms = ms(slot)
        in_a = [row for row in rows if row[1] == slot and row[0] in ZONE_A]
        if not any(row[0] in ZONE_A | ZONE_B for row in rows if row[1] == slot):
            assert slot_ms not in by_slot or all(v is None for v in by_slot[slot_ms].values())
            continue
        expected = sum(row[2] for row in in_a if row[2] >= k)
        assert (by_slot[slot_ms]["CC-a"] or 0) == expected
        modes_ok = [row for row in in_a if row[3] >= k and row[4] >= k]
        assert (by_slot[slot_ms]["CC-a-walk"] or 0) == sum(row[3] for row in modes_ok)


def test_quality_says_whether_the_zone_sum_is_complete():
    rows = [
        ("A1", SLOTS[0], 30, 10, 20),
        ("A2", SLOTS[0], 25, 12, 13),
        ("A1", SLOTS[1], 30, 10, 20),
        ("A2", SLOTS[1], 6, 2, 4),
        ("A1", SLOTS[2], 9, 4, 5),
    ]
    readings = list(CellCountSource(io.StringIO(operator_file(rows)), "centre", "gw-1", zones(), k=11))
    got = {(r.time_ms, r.sensor): (r.value, r.quality) for r in readings}
    t0, t1, t2 = (ms(s) for s in SLOTS[:3])
    assert got[(t0, "CC-a")] == (55.0, Quality.OK)
    assert got[(t0, "CC-a-walk")] == (12.0, Quality.SUSPECT)  # A1's walk (10) dropped, so A1's vehicle too
    assert got[(t0, "CC-a-vehicle")] == (13.0, Quality.SUSPECT)
    assert got[(t1, "CC-a")] == (30.0, Quality.SUSPECT)
    assert got[(t2, "CC-a")] == (None, Quality.UNKNOWN)
    assert got[(t0, "CC-b")] == (None, Quality.UNKNOWN)  # no cell of zone B reported


def test_k_below_five_is_refused():
    with pytest.raises(ValueError, match="at least 5"):
        PrivacyGuard(4)
    with pytest.raises(ValueError, match="at least 5"):
        CellCountSource(io.StringIO(""), "centre", "gw-1", zones(), k=3)


def test_semicolons_local_times_and_bad_rows_never_quote_a_count(caplog):
    text = (
        "Cell_ID;Slot_Start;Count\n"
        "A1;2026-03-02 09:00;120\n"  # Paris local time, winter: UTC+1
        "A2;yesterday;7\n"
        "A3;2026-03-02 09:00\n"
        ";2026-03-02 09:00;200\n"
    )
    source = CellCountSource(io.StringIO(text), "centre", "gw-1", [ZoneCount("CC-a", ZONE_A)], timezone="Europe/Paris")
    with caplog.at_level(logging.WARNING):
        readings = list(source)
    assert [(r.value, r.quality) for r in readings] == [(120.0, Quality.OK)]
    assert readings[0].time == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert source.counters["bad_rows"] == 3 and source.counters["suppressed"] == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("slot_start 'yesterday'" in m for m in messages)
    assert len(messages) == 3 and all("7" not in m for m in messages)  # the dropped 7 is never quoted


def test_a_file_without_the_needed_columns_is_reported_not_fatal(tmp_path, caplog):
    (tmp_path / "a.csv").write_text("antenna,when,n\nA1,2026-03-02T08:00:00Z,40\n")
    (tmp_path / "b.csv").write_text(operator_file([("A1", SLOTS[0], 40, 20, 20)]))
    source = CellCountSource(tmp_path, "centre", "gw-1", [ZoneCount("CC-a", ZONE_A)])
    with caplog.at_level(logging.ERROR):
        readings = list(source)
    assert [r.value for r in readings] == [40.0]
    assert source.counters["unreadable_files"] == 1 and source.counters["files"] == 1
    assert "a.csv: the header must name cell_id, slot_start and count" in caplog.text


def test_follow_a_folder_picks_up_new_files(tmp_path):
    (tmp_path / "0800.csv").write_text(operator_file([("A1", SLOTS[0], 40, 20, 20)]))
    source = CellCountSource(tmp_path, "centre", "gw-1", [ZoneCount("CC-a", ZONE_A)], follow=True, poll_s=0.01)
    values = []
    for reading in source:
        values.append(reading.value)
        if len(values) == 1:
            (tmp_path / "0810.csv").write_text(operator_file([("A2", SLOTS[1], 50, 25, 25)]))
        else:
            source.stop.set()
    assert values == [40.0, 50.0]


def test_cell_map_file(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("cell_id;zone\nA1;centre\nA2;centre\nB1;north\n")
    assert read_cell_map(path) == {"centre": {"A1", "A2"}, "north": {"B1"}}
    (tmp_path / "bad.csv").write_text("cell_id,area\nA1,centre\n")
    with pytest.raises(CellFileError, match="'cell_id' and 'zone'"):
        read_cell_map(tmp_path / "bad.csv")
