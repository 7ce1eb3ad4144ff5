"""Retention and downsampling on InfluxDB 1.x: the policies and the continuous query of ``frugalsense influx setup``.

Raw points go to the policy ``raw`` (the database's default, so the bridge writes there
without naming it) and expire after ``--retention``. Every hour (``--downsample
INTERVAL:KEEP``) a continuous query writes the mean, min, max and count of each sensor's
``reading`` values into ``reading_<interval>`` of the policy ``rollup_<interval>``, kept
for KEEP. It runs with ``RESAMPLE FOR`` two days (or two intervals, if longer): a gateway
whose outbox flushes late still gets its hours summarised if it is back within that
window; ``--backfill`` runs the same query once over all raw data for older gaps.

:func:`plan_setup` compares what the server has with what is asked and returns only the
statements that change something, so a second run changes nothing and says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

RAW_POLICY = "raw"
SOURCE_MEASUREMENT = "reading"
GROUP_TAGS = ("site", "gateway", "sensor", "quantity", "unit")  # one summary per sensor per interval
AGGREGATES = ("mean", "min", "max", "count")
LATE_DATA_S = 2 * 86_400
# InfluxQL has no year unit; a year here is 365 days.
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, "y": 365 * 86_400}
GO_UNIT_S = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str, option: str) -> int:
    """Seconds of a duration such as ``400d``, ``5y`` (365 days each), ``1h``, ``90m``.

    >>> parse_duration("400d", "--retention"), parse_duration("5y", "--downsample")
    (34560000, 157680000)
    >>> parse_duration("forever", "--retention")
    Traceback (most recent call last):
    ...
    ValueError: --retention 'forever': write a number and a unit (s, m, h, d, w, y), e.g. 400d
    """
    match = re.fullmatch(r"(\d+)([smhdwy])", text.strip())
    if not match or int(match[1]) == 0:
        raise ValueError(f"{option} {text!r}: write a number and a unit (s, m, h, d, w, y), e.g. 400d")
    return int(match[1]) * UNIT_S[match[2]]


def influxql_duration(seconds: int) -> str:
    """A duration as InfluxDB 1.x writes it back in SHOW CONTINUOUS QUERIES (largest whole unit).

    >>> [influxql_duration(s) for s in (3600, 172800, 1209600, 5400, 34560000)]
    ['1h', '2d', '2w', '90m', '400d']
    """
    for unit in ("w", "d", "h", "m"):
        if seconds % UNIT_S[unit] == 0:
            return f"{seconds // UNIT_S[unit]}{unit}"
    return f"{seconds}s"


def go_duration_s(text: str) -> int:
    """Seconds of a duration in SHOW RETENTION POLICIES' Go form (``0s`` is infinite).

    >>> go_duration_s("9600h0m0s"), go_duration_s("0s")
    (34560000, 0)
    """
    return sum(int(n) * GO_UNIT_S[u] for n, u in re.findall(r"(\d+)([hms])", text))


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class RetentionSetup:
    """What is asked: the database, how long raw points live, the downsampling interval and how long it is kept."""

    database: str
    raw_keep_s: int
    interval_s: int
    rollup_keep_s: int

    @classmethod
    def from_options(cls, database: str, retention: str, downsample: str) -> RetentionSetup:
        """From ``--retention 400d`` and ``--downsample 1h:5y``; ValueError naming the option otherwise."""
        interval, sep, keep = downsample.partition(":")
        if not sep:
            raise ValueError(f"--downsample {downsample!r}: write INTERVAL:KEEP, e.g. 1h:5y")
        setup = cls(
            database,
            parse_duration(retention, "--retention"),
            parse_duration(interval, "--downsample interval"),
            parse_duration(keep, "--downsample keep"),
        )
        if setup.interval_s < 60:
            raise ValueError(f"--downsample {downsample!r}: the interval must be at least 1m")
        if setup.rollup_keep_s <= setup.interval_s:
            raise ValueError(f"--downsample {downsample!r}: keep the summaries longer than one interval")
        return setup

    @property
    def label(self) -> str:
        return influxql_duration(self.interval_s)

    @property
    def rollup_policy(self) -> str:
        return f"rollup_{self.label}"

    @property
    def rollup_measurement(self) -> str:
        return f"{SOURCE_MEASUREMENT}_{self.label}"

    @property
    def query_name(self) -> str:
        return f"{SOURCE_MEASUREMENT}_{self.label}"

    def select_into(self, where: str = "") -> str:
        """The SELECT ... INTO of the continuous query (``where``: a time range, to run it once by hand)."""
        db = _quote(self.database)
        fields = ", ".join(f'{agg}("value") AS "{agg}"' for agg in AGGREGATES)
        tags = ", ".join(_quote(t) for t in GROUP_TAGS)
        return (
            f"SELECT {fields} INTO {db}.{_quote(self.rollup_policy)}.{_quote(self.rollup_measurement)} "
            f"FROM {db}.{_quote(RAW_POLICY)}.{_quote(SOURCE_MEASUREMENT)}"
            + (f" WHERE {where}" if where else "")
            + f" GROUP BY time({self.label}), {tags}"
        )

    def continuous_query(self) -> str:
        late = influxql_duration(max(LATE_DATA_S, 2 * self.interval_s))
        return (
            f"CREATE CONTINUOUS QUERY {_quote(self.query_name)} ON {_quote(self.database)} "
            f"RESAMPLE FOR {late} BEGIN {self.select_into()} END"
        )

    def backfill(self) -> str:
        """The continuous query's SELECT over everything the raw policy still holds."""
        return self.select_into(f"time >= now() - {influxql_duration(self.raw_keep_s)}")


def same_query(a: str, b: str) -> bool:
    """Equal once quotes and spacing are set aside (InfluxDB gives a query back without its quotes).

    >>> same_query('SELECT  "x" INTO "db"."r"."m"', "SELECT x INTO db.r.m")
    True
    """

    def norm(text: str) -> str:
        return " ".join(text.replace('"', "").split())

    return norm(a) == norm(b)


@dataclass
class Step:
    """One thing the setup found or did: ``statement`` is None when it is already as asked."""

    what: str
    statement: str | None = None


Query = Callable[[str], list[dict]]  # InfluxQL -> the series of its first statement


def _rows(series: list[dict]) -> list[dict]:
    return [
        dict(zip(s["columns"], v, strict=True)) | {"_series": s.get("name")}
        for s in series
        for v in s.get("values", [])
    ]


def plan_setup(query: Query, setup: RetentionSetup) -> list[Step]:
    """The steps that make the server as asked, each with its statement, or None if it already is."""
    db, steps = setup.database, []
    databases = {row["name"] for row in _rows(query("SHOW DATABASES"))}
    if db in databases:
        steps.append(Step(f"database {db} exists"))
        policies = {row["name"]: row for row in _rows(query(f"SHOW RETENTION POLICIES ON {_quote(db)}"))}
    else:
        steps.append(Step(f"create database {db}", f"CREATE DATABASE {_quote(db)}"))
        policies = {}
    for name, keep_s, default in (
        (RAW_POLICY, setup.raw_keep_s, True),
        (setup.rollup_policy, setup.rollup_keep_s, False),
    ):
        keep = influxql_duration(keep_s)
        spec = f"DURATION {keep} REPLICATION 1" + (" DEFAULT" if default else "")
        where = f"{_quote(name)} ON {_quote(db)}"
        now = policies.get(name)
        shown = f"retention policy {name} ({keep}{', default' if default else ''})"
        if now is None:
            steps.append(Step(f"create {shown}", f"CREATE RETENTION POLICY {where} {spec}"))
        elif go_duration_s(now["duration"]) != keep_s or (default and not now["default"]):
            was = go_duration_s(now["duration"])
            was_text = f"{influxql_duration(was) if was else 'infinite'}{', default' if now['default'] else ''}"
            steps.append(Step(f"change {shown}, was {was_text}", f"ALTER RETENTION POLICY {where} {spec}"))
        else:
            steps.append(Step(f"{shown} is as asked"))
    queries = {row["name"]: row["query"] for row in _rows(query("SHOW CONTINUOUS QUERIES")) if row["_series"] == db}
    wanted, name = setup.continuous_query(), setup.query_name
    if name not in queries:
        steps.append(Step(f"create continuous query {name}", wanted))
    elif not same_query(queries[name], wanted):
        steps.append(
            Step(
                f"replace continuous query {name} (it differs)",
                f"DROP CONTINUOUS QUERY {_quote(name)} ON {_quote(db)}; {wanted}",
            )
        )
    else:
        steps.append(Step(f"continuous query {name} is as asked"))
    return steps


def other_rollups(query: Query, setup: RetentionSetup) -> list[str]:
    """Continuous queries on ``reading`` from an earlier setup with another interval (left alone, but said)."""
    return sorted(
        row["name"]
        for row in _rows(query("SHOW CONTINUOUS QUERIES"))
        if row["_series"] == setup.database
        and row["name"].startswith(f"{SOURCE_MEASUREMENT}_")
        and row["name"] != setup.query_name
    )
