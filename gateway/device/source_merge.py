"""Reads several sensor sources at once: one thread per source, one stream of readings out.

A live source (serial, Modbus) never ends, so reading sources one after the other
would starve every source after the first. Each source gets a thread that puts its
readings on a bounded queue; the gateway loop takes them in arrival order. A source
with a ``batches()`` method (serial, Modbus, cell counts) hands over what one read gave
as one list: one queue hand-over per read instead of per reading, which cost a sixth of
the gateway's time at 60,000 readings/s (docs/benchmarks.md). While
nothing arrives, the stream yields ``None`` every ``idle_s`` so the loop can still
flush batches, send status and notice a stop. A source that fails is logged and
counted; the others go on (the runner hands in supervised sources, which restart
themselves: gateway/device/source_supervisor.py).

>>> import threading
>>> a, b = [1, 2, 3], ["x", "y"]
>>> sorted(map(str, (r for r in merge_sources([a, b], threading.Event()) if r is not None)))
['1', '2', '3', 'x', 'y']
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence

log = logging.getLogger(__name__)

QUEUE_BATCHES = 1_000  # back-pressure: a fast source waits instead of filling memory
_DONE = object()


def merge_sources(
    sources: Sequence[Iterable], stop: threading.Event, *, idle_s: float = 0.2, failures: dict[str, int] | None = None
) -> Iterator:
    """Yield every reading of every source (``None`` when idle) until all end or ``stop`` is set."""
    out: queue.Queue = queue.Queue(QUEUE_BATCHES)

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=idle_s)
                return True
            except queue.Full:
                continue
        return False

    def pump(source: Iterable) -> None:
        try:
            batches = source.batches() if hasattr(source, "batches") else ([item] for item in source)
            for batch in batches:
                if batch and not put(batch):
                    return
        except Exception:  # a broken source must not take the gateway down
            name = type(source).__name__
            log.exception("source %s failed; the other sources go on", name)
            if failures is not None:
                failures[name] = failures.get(name, 0) + 1
        finally:
            put(_DONE)

    threads = [
        threading.Thread(target=pump, args=(source,), name=f"source-{i}-{type(source).__name__}", daemon=True)
        for i, source in enumerate(sources)
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    while running and not stop.is_set():
        try:
            item = out.get(timeout=idle_s)
        except queue.Empty:
            yield None
            continue
        if item is _DONE:
            running -= 1
        else:
            yield from item
