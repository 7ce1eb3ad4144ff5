"""Several sources read at once: a live source that never ends does not starve the others."""

from __future__ import annotations

import itertools
import threading
import time

from gateway.device.source_merge import merge_sources


def endless(tag: str, stop: threading.Event):
    """Like a serial sensor: a reading every 10 ms, forever."""
    for i in itertools.count():
        if stop.is_set():
            return
        time.sleep(0.01)
        yield f"{tag}{i}"


def test_a_finite_source_is_read_while_a_live_one_runs():
    stop = threading.Event()
    seen = []
    for item in merge_sources([endless("live-", stop), [f"replay-{i}" for i in range(500)]], stop, idle_s=0.05):
        if item is not None:
            seen.append(item)
        if sum(s.startswith("replay-") for s in seen) == 500 and any(s.startswith("live-") for s in seen):
            stop.set()
    replayed = [s for s in seen if s.startswith("replay-")]
    assert replayed == [f"replay-{i}" for i in range(500)]  # all of it, in its own order


def test_idle_sources_give_ticks_and_stop_ends_the_stream():
    stop = threading.Event()
    ticks = 0
    for item in merge_sources([iter(()), _silent(stop)], stop, idle_s=0.02):
        assert item is None
        ticks += 1
        if ticks == 5:
            stop.set()
    assert ticks == 5


def _silent(stop: threading.Event):
    while not stop.is_set():
        time.sleep(0.01)
    return
    yield  # a generator that never yields


def test_a_failing_source_is_counted_and_the_others_go_on():
    def broken():
        yield "b0"
        raise OSError("port vanished")

    failures: dict[str, int] = {}
    out = [
        x for x in merge_sources([broken(), ["ok-1", "ok-2"]], threading.Event(), failures=failures) if x is not None
    ]
    assert sorted(out) == ["b0", "ok-1", "ok-2"]
    assert failures == {"generator": 1}
