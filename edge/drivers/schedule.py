"""When to talk to a sensor and when its silence means 'unknown': pure schedules on the caller's clock, no I/O.

``QuerySchedule`` drives a fan PM sensor in query mode: wake it, discard the
fan's warm-up, query every ``interval_s``, and with ``sleep_s`` > 0 put the fan to
sleep after ``work_s`` seconds (the fan is the main power draw). A query left
unanswered by the time the next one is due is a missed sample; after
``RECOVER_AFTER_MISSED`` misses in a row the wake and query-mode commands are sent
again (the sensor may have rebooted asleep or in active mode); after
``REOPEN_AFTER_MISSED`` the caller should reopen the port.

``SilenceWatch`` does the same for a device that reports on its own: a sensor with
no value for ``SILENCE_FACTOR`` intervals is silent, and is reported again every
interval while it stays so.

>>> from edge.drivers import sds011
>>> s = QuerySchedule(sds011.DRIVER.commands, interval_s=10, work_s=50, sleep_s=250, warmup_s=30)
>>> [c == sds011.WAKE for c in s.start(0.0)], s.next_event()
([True, False], 30.0)
>>> s.due(30.0) == ([sds011.QUERY], 0), s.on_sample()
(True, 'sample')
>>> s.due(40.0) == ([sds011.QUERY], 0)
True
>>> s.due(50.0) == ([sds011.SLEEP], 1), s.next_event()  # that query got no answer; the fan sleeps
(True, 300.0)
"""

from __future__ import annotations

from edge.drivers.base import PmCommands

RECOVER_AFTER_MISSED = 2
REOPEN_AFTER_MISSED = 5  # then the caller should reopen the port: commands alone did not help
SILENCE_FACTOR = 2.5
FOREVER = float("inf")


class QuerySchedule:
    """The command timetable of one fan PM sensor; states: stopped, warmup, sampling, sleeping."""

    def __init__(
        self, commands: PmCommands, interval_s: float, work_s: float = 0.0, sleep_s: float = 0.0, warmup_s: float = 0.0
    ):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        if sleep_s > 0 and work_s <= warmup_s:
            raise ValueError(
                f"work_s ({work_s:g} s) must be longer than the {warmup_s:g} s warm-up when the fan "
                "sleeps, or no reading is ever taken"
            )
        self.commands = commands
        self.interval_s, self.work_s, self.sleep_s, self.warmup_s = interval_s, work_s, sleep_s, warmup_s
        self.stop()
        self.missed_run = 0  # unanswered queries in a row (since the port opened)
        self.recoveries = 0
        self.unsolicited = 0  # measurement frames nobody asked for (active mode)
        self._unsolicited_seen = 0

    def stop(self) -> None:
        """The port is closed: nothing is due until ``start``."""
        self.state, self.awaiting = "stopped", False
        self.phase_end = self.work_end = self.next_query = FOREVER

    def start(self, now: float) -> list[bytes]:
        """The port is open: wake the sensor (a sleeping one answers nothing else) and ask for query mode."""
        self.state, self.awaiting, self.missed_run = "warmup", False, 0
        self.phase_end = now + self.warmup_s
        self.work_end = now + self.work_s if self.sleep_s > 0 else FOREVER
        return [self.commands.wake, self.commands.passive_mode]

    def next_event(self) -> float:
        if self.state in ("warmup", "sleeping"):
            return self.phase_end
        if self.state == "sampling":
            return self.next_query if self.awaiting else min(self.next_query, self.work_end)
        return FOREVER

    def due(self, now: float) -> tuple[list[bytes], int]:
        """Commands to send now, and the number of samples found missed (0 or 1)."""
        out: list[bytes] = []
        if self.state == "sleeping" and now >= self.phase_end:
            out += self.start(now)
        if self.state == "warmup" and now >= self.phase_end:
            self.state, self.next_query = "sampling", now
        if self.state != "sampling":
            return out, 0
        missed = 0
        if self.awaiting and now >= self.next_query:
            self.awaiting, missed = False, 1
            self.missed_run += 1
            if RECOVER_AFTER_MISSED <= self.missed_run < REOPEN_AFTER_MISSED:
                self.recoveries += 1
                out += [self.commands.wake, self.commands.passive_mode]
        if now >= self.work_end and not self.awaiting:
            out.append(self.commands.sleep)
            self.state, self.phase_end = "sleeping", now + self.sleep_s
        elif now >= self.next_query and now < self.work_end:
            if self.unsolicited > self._unsolicited_seen:  # still in active mode: ask again for query mode
                self._unsolicited_seen = self.unsolicited
                out.append(self.commands.passive_mode)
            out.append(self.commands.query)
            self.awaiting = True
            self.next_query = max(self.next_query + self.interval_s, now)
        return out, missed

    def on_sample(self) -> str:
        """A measurement arrived: ``sample`` if it answers a query, else why it is not used (a counter name)."""
        if self.state == "warmup":
            return "warmup_frames"
        if self.state != "sampling" or not self.awaiting:
            self.unsolicited += 1
            return "unsolicited_frames"
        self.awaiting, self.missed_run = False, 0
        return "sample"

    @property
    def repeat_s(self) -> float:
        """How often a device that is down should be reported 'unknown': once per sample, or per fan cycle."""
        return self.interval_s if self.sleep_s <= 0 else self.work_s + self.sleep_s


class SilenceWatch:
    """Which sensors of a self-reporting device have gone quiet.

    >>> w = SilenceWatch(["NO2", "RH"], interval_s=60)
    >>> w.start(0.0)
    []
    >>> w.seen("NO2", 100.0)
    >>> w.due(149.0), w.due(150.0), w.due(180.0), w.due(210.0)
    ([], ['RH'], [], ['RH'])
    """

    def __init__(self, sensors: list[str], interval_s: float, factor: float = SILENCE_FACTOR):
        self.sensors, self.interval_s, self.limit_s = list(sensors), interval_s, factor * interval_s
        self.last_seen: dict[str, float] = {}
        self.next_report = FOREVER
        self.missed_run = 0  # silent intervals in a row with every sensor quiet
        self.recoveries = 0

    def start(self, now: float) -> list[bytes]:
        """The port is open: every sensor counts as just seen. Nothing to send to a self-reporting device."""
        self.last_seen = dict.fromkeys(self.sensors, now)
        self.next_report, self.missed_run = now, 0
        return []

    def stop(self) -> None:
        self.last_seen, self.next_report = {}, FOREVER

    def seen(self, sensor: str, now: float) -> None:
        self.last_seen[sensor] = now
        self.missed_run = 0

    def next_event(self) -> float:
        if not self.last_seen:
            return FOREVER
        return max(self.next_report, min(self.last_seen.values()) + self.limit_s)

    def due(self, now: float) -> list[str]:
        """Sensors to report 'unknown' now (each silent sensor at most once per interval)."""
        if not self.last_seen or now < self.next_report:
            return []
        silent = [s for s in self.sensors if now - self.last_seen[s] >= self.limit_s]
        if silent:
            self.next_report = now + self.interval_s
            if len(silent) == len(self.sensors):
                self.missed_run += 1
        return silent
