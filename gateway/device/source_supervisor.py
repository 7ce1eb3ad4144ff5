"""Keeps a gateway's sources running: a source that raises is logged, counted and restarted after a backoff.

A serial or Modbus source handles a lost port itself (it reopens it with its own
backoff and says ``unknown`` meanwhile); what reaches this module is a source whose
loop raised: a bug, a file that vanished, a driver that choked. Such a source is
started again after a wait that doubles from ``first_s`` up to ``max_s`` (with an
optional, seeded jitter), and it goes back to ``first_s`` once the source delivers
again. After ``give_up_after`` failures in a row with nothing delivered in between it
is given up (logged as an error and counted; the other sources go on).

A replay restarted goes on just after the last reading it delivered (``ReplaySource.batches(after=...)``):
nothing is given twice and nothing is skipped. A live source is simply started again.

Each supervised source has a name (``replay``, ``serial``, ``modbus <port>``,
``cell_counts <file>``) and ``counters()``: its own failures, restarts and readings,
and what the source itself counts (frames, checksums, timeouts, per serial port).
They go into the gateway's status message (``sources``) and ``doctor``, with its ``state``
(``source_states``): ``online``, ``restarting`` (waiting to, after a failure), ``failed`` (given
up) or ``ended`` (a replay or file read to its end).

>>> class Flaky:
...     def __init__(self): self.runs = 0
...     def __iter__(self):
...         self.runs += 1
...         yield "a"
...         if self.runs == 1:
...             raise OSError("the file went away")
...         yield "b"
>>> s = SupervisedSource(Flaky(), "flaky", Backoff(first_s=0.0))
>>> [x for batch in s.batches() for x in batch]
['a', 'a', 'b']
>>> s.counters(), s.state
({'flaky': {'readings': 3, 'failures': 1, 'restarts': 1, 'gave_up': 0}}, 'ended')
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from edge.sources.cell_counts import CellCountSource
from edge.sources.modbus_source import ModbusSource
from edge.sources.replay import ReplaySource
from edge.sources.serial_source import SerialSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before restarting a failed source: doubling from ``first_s``, capped at ``max_s``.

    ``jitter`` (0 to 1) draws each wait from ``[wait * (1 - jitter), wait]`` with a
    generator seeded by ``seed``, so two gateways do not retry in step and a test
    still sees the same waits every time.

    >>> [Backoff(first_s=1, max_s=8).delay(n) for n in range(1, 7)]
    [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    >>> b = Backoff(first_s=10, jitter=0.5, seed=3)
    >>> b.delay(1, random.Random(3)) == b.delay(1, random.Random(3)) and 5 <= b.delay(1, random.Random(3)) <= 10
    True
    """

    first_s: float = 1.0
    max_s: float = 60.0
    jitter: float = 0.0
    seed: int = 0
    give_up_after: int = 10  # failures in a row, nothing delivered in between

    def delay(self, failures_in_a_row: int, rng: random.Random | None = None) -> float:
        wait = min(self.max_s, self.first_s * 2 ** (failures_in_a_row - 1))
        if self.jitter and rng is not None:
            wait *= 1 - self.jitter * rng.random()
        return float(wait)


def source_name(source: object) -> str:
    """The name a source is known by in the status message and in ``doctor``.

    >>> source_name([1, 2])
    'list'
    """
    if isinstance(source, ReplaySource):
        return "replay"
    if isinstance(source, SerialSource):
        return "serial"
    if isinstance(source, ModbusSource):
        return f"modbus {source.port}"
    if isinstance(source, CellCountSource):
        return f"cell_counts {source.path}"
    return type(source).__name__


class SupervisedSource:
    """One source under supervision; ``batches()`` gives lists of what it reads until it ends (or is given up)."""

    def __init__(
        self,
        source: Iterable,
        name: str | None = None,
        backoff: Backoff | None = None,
        *,
        stop: threading.Event | None = None,
        sleep: Callable[[float], object] | None = None,
    ):
        self.source = source
        self.name = name or source_name(source)
        self.backoff = backoff or Backoff()
        self.stop = stop or threading.Event()
        self._sleep = sleep or self.stop.wait  # a stop interrupts the wait
        self._rng = random.Random(self.backoff.seed)
        self.readings = 0
        self.failures = 0
        self.restarts = 0
        self.gave_up = False
        self.state = "online"  # status_payload.SOURCE_STATES: online, restarting (waiting to), failed (given up), ended
        self._after: tuple[int, int] | None = None  # the last delivered time, and how many readings carried it

    def __iter__(self) -> Iterator:
        return (item for batch in self.batches() for item in batch)

    def batches(self) -> Iterator[list]:
        in_a_row = 0
        while True:
            delivered_before = self.readings
            self.state = "online"
            try:
                for batch in self._start():
                    if batch:
                        yield batch  # returns once the consumer took it: delivered
                        self._delivered(batch)
                self.state = "ended"
                return
            except Exception as exc:  # a broken source must not take the gateway down
                self.failures += 1
                in_a_row = 1 if self.readings > delivered_before else in_a_row + 1
                if in_a_row > self.backoff.give_up_after:
                    self.gave_up, self.state = True, "failed"
                    log.error(
                        "source %s failed %d times in a row without a reading (%s: %s); given up, the other "
                        "sources go on. Fix the cause and restart the gateway",
                        self.name,
                        in_a_row,
                        type(exc).__name__,
                        exc,
                    )
                    return
                wait = self.backoff.delay(in_a_row, self._rng)
                self.state = "restarting"
                log.warning(
                    "source %s failed (%s: %s); restarting it in %.1f s (failure %d in a row)",
                    self.name,
                    type(exc).__name__,
                    exc,
                    wait,
                    in_a_row,
                    exc_info=in_a_row == 1,
                )
                if self._sleep(wait) is True or self.stop.is_set():
                    return
                self.restarts += 1
                where = f" after {self._after[0]} ms" if self._after and self._resumable() else ""
                log.info("source %s restarted%s", self.name, where)

    def _resumable(self) -> bool:
        return isinstance(self.source, ReplaySource)

    def _start(self) -> Iterator[list]:
        source = self.source
        if self._resumable():
            return source.batches(after=self._after)  # type: ignore[attr-defined]  # _resumable: a ReplaySource
        if hasattr(source, "batches"):
            return source.batches()
        return ([item] for item in source)

    def _delivered(self, batch: list) -> None:
        self.readings += len(batch)
        last = getattr(batch[-1], "time_ms", None)
        if last is None:
            return
        at_last = sum(1 for r in batch if getattr(r, "time_ms", None) == last)
        if self._after is not None and self._after[0] == last and at_last == len(batch):
            at_last += self._after[1]  # the same time as the batch before: count on
        self._after = (last, at_last)

    def counters(self) -> dict[str, dict[str, int | float]]:
        """``{name: counters}``: this source's, and for a serial source one entry per port (``serial <port>``)."""
        own: dict[str, int | float] = {
            "readings": self.readings,
            "failures": self.failures,
            "restarts": self.restarts,
            "gave_up": int(self.gave_up),
        }
        out = {self.name: own}
        inner = _snapshot(getattr(self.source, "counters", None))
        for key, value in inner.items():
            if isinstance(value, dict):  # per port
                out[f"{self.name} {key}"] = _numbers(value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                own.setdefault(key, value)
        return out


def _snapshot(counters) -> dict:
    """A copy of a source's counters, taken while its thread may still be counting."""
    if counters is None or callable(counters):
        return {}
    for _ in range(3):
        try:
            return {k: dict(v) if isinstance(v, dict) else v for k, v in dict(counters).items()}
        except RuntimeError:  # changed size while copied: try again
            time.sleep(0)
    return {}


def _numbers(counters: dict) -> dict[str, int | float]:
    return {str(k): v for k, v in counters.items() if isinstance(v, int | float) and not isinstance(v, bool)}
