"""The gateway's clock: what "now" is when the gateway judges time that passed without data.

A detector's time is the data's: it moves only when a reading comes. Whoever must notice
that readings stopped (gateway/device/silent_sensors.py) needs a clock that moves on its
own. Live sources stamp readings with the wall clock, so that is the gateway's clock
there (``WallClock``). A replay is read faster than real time (``sources.replay.speed``, 0:
as fast as it can), so its clock follows the data instead (``StreamClock``): the latest
data time seen, plus the wall time since then times ``speed`` (a paced replay whose every
sensor pauses still sees time pass; an unpaced one is at its latest reading). Same file,
same outputs, whatever the machine's speed. Tests pass a ``ManualClock`` they advance.
``ReplayPacer`` is the other side: it holds a replay's readings back to ``speed`` times real time.

>>> clock = StreamClock(speed=0)
>>> clock.saw(1_772_409_600_000); clock.saw(1_772_409_000_000); clock.now_ms()  # never backwards
1772409600000
>>> ticks = iter([100.0, 130.0])
>>> paced = StreamClock(speed=60, monotonic=lambda: next(ticks))
>>> paced.saw(1_772_409_600_000); paced.now_ms() - 1_772_409_600_000  # 30 s of wall time at 60x: 30 min
1800000
>>> manual = ManualClock(1_772_409_600_000); manual.advance_min(16); manual.now_ms() - 1_772_409_600_000
960000
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class GatewayClock(Protocol):
    """A clock in the data's milliseconds; ``saw`` tells it each reading's time as it arrives.

    ``steady_ms`` is what durations are measured on: it never jumps (the wall clock of a Pi does,
    when NTP sets it after boot). ``follows_data``: the clock is the data's (a replay's).
    """

    follows_data: bool

    def now_ms(self) -> int: ...

    def steady_ms(self) -> int: ...

    def saw(self, time_ms: int) -> None: ...


class WallClock:
    """Live sources: the wall clock, as the drivers stamp readings; durations on the monotonic clock."""

    follows_data = False

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def steady_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def saw(self, time_ms: int) -> None:
        """Readings do not move the wall clock."""


class StreamClock:
    """A replay: the latest data time seen, moved on by wall time since then times ``speed`` (0: not moved)."""

    follows_data = True

    def __init__(self, speed: float = 0.0, monotonic: Callable[[], float] = time.monotonic):
        self.speed = speed
        self._monotonic = monotonic
        self._latest: int | None = None
        self._at = 0.0  # monotonic time of the latest reading

    def now_ms(self) -> int:
        if self._latest is None:
            return 0  # before the first reading the replay has no time: nothing can be judged yet
        if self.speed <= 0:
            return self._latest
        return self._latest + int((self._monotonic() - self._at) * 1000 * self.speed)

    def steady_ms(self) -> int:
        return self.now_ms()  # the data's time never goes back (saw keeps the latest)

    def saw(self, time_ms: int) -> None:
        if self._latest is None or time_ms > self._latest:
            self._latest, self._at = time_ms, self._monotonic()


class ManualClock:
    """A clock a test sets and advances (thread-safe: a test thread moves it while the gateway reads it)."""

    follows_data = False

    def __init__(self, time_ms: int):
        self._time_ms = time_ms
        self._lock = threading.Lock()
        self.reads = 0  # how often it was read: a test waits for the gateway to have looked after a move

    def now_ms(self) -> int:
        with self._lock:
            self.reads += 1
            return self._time_ms

    def steady_ms(self) -> int:
        with self._lock:  # not counted in reads: the gateway reads now_ms first, once per look
            return self._time_ms

    def saw(self, time_ms: int) -> None:
        """A manual clock moves only when told."""

    def advance_min(self, minutes: float) -> None:
        with self._lock:
            self._time_ms += int(minutes * 60_000)

    def set_ms(self, time_ms: int) -> None:
        with self._lock:
            self._time_ms = time_ms


class ReplayPacer:
    """Holds readings back to ``speed`` times real time, counted from the first one it is shown."""

    def __init__(self, speed: float, idle: Callable[[], bool], tick_s: float = 0.2):
        self.speed, self.tick_s = speed, tick_s
        self.idle = idle  # called while waiting; returns True to stop waiting
        self._origin: tuple[float, int] | None = None

    def wait_for(self, time_ms: int) -> None:
        if self.speed <= 0:
            return
        if self._origin is None:
            self._origin = (time.monotonic(), time_ms)
            return
        due = self._origin[0] + (time_ms - self._origin[1]) / 1000.0 / self.speed
        while (left := due - time.monotonic()) > 0:
            time.sleep(min(left, self.tick_s))
            if self.idle():
                return
