"""`frugalsense influx setup` against real InfluxDB 1.6: policies, the continuous query, idempotence, logins."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from edge.contracts import Reading
from gateway.bridge.influx_writer import InfluxV1Writer
from gateway.bridge.service import Bridge
from gateway.cli import main
from gateway.device.publisher import GatewayPublisher
from gateway.protocol import topics as T
from gateway.protocol.mqtt_client import MqttSettings
from gateway.security.secrets import write_private_file
from tests.influx_auth import ADMIN, ADMIN_PASSWORD, start_secure_influx

_n = itertools.count()
HOUR_MS = 3_600_000


def setup(services, db: str, *extra: str) -> list[str]:
    return ["influx", "setup", "--url", services.influx_url, "--database", db, *extra]


def rows(services, q: str, db: str | None = None) -> list[list]:
    answer = services.influx_query(q, db)
    return [v for s in answer["results"][0].get("series", []) for v in s.get("values", [])]


def test_setup_creates_the_policies_and_the_query_then_changes_nothing(services, capsys):
    db = f"setup_test_{next(_n)}"
    assert main(setup(services, db)) == 0
    first = capsys.readouterr().out
    assert f"CHANGE create database {db}" in first
    assert "CHANGE create retention policy raw (400d, default)" in first
    assert "CHANGE create retention policy rollup_1h (1825d)" in first
    assert "CHANGE create continuous query reading_1h" in first and "4 change(s) made" in first

    policies = {r[0]: (r[1], r[4]) for r in rows(services, f"SHOW RETENTION POLICIES ON {db}")}
    assert policies["raw"] == ("9600h0m0s", True) and policies["rollup_1h"] == ("43800h0m0s", False)
    queries = dict(rows(services, "SHOW CONTINUOUS QUERIES"))  # every database's, name -> query
    assert queries["reading_1h"] == (
        f"CREATE CONTINUOUS QUERY reading_1h ON {db} RESAMPLE FOR 2d BEGIN SELECT mean(value) AS mean, "
        f"min(value) AS min, max(value) AS max, count(value) AS count INTO {db}.rollup_1h.reading_1h "
        f"FROM {db}.raw.reading GROUP BY time(1h), site, gateway, sensor, quantity, unit END"
    )

    assert main(setup(services, db)) == 0
    second = capsys.readouterr().out
    assert "CHANGE" not in second and f"nothing to change: {db} already has this" in second
    assert {r[0]: (r[1], r[4]) for r in rows(services, f"SHOW RETENTION POLICIES ON {db}")} == policies


def test_a_new_retention_is_altered_and_a_new_interval_is_added_beside_the_old(services, capsys):
    db = f"setup_test_{next(_n)}"
    assert main(setup(services, db)) == 0
    capsys.readouterr()
    assert main(setup(services, db, "--retention", "30d", "--downsample", "1d:10y")) == 0
    out = capsys.readouterr().out
    assert "CHANGE change retention policy raw (30d, default), was 400d, default" in out
    assert "CHANGE create retention policy rollup_1d (3650d)" in out
    assert "note: continuous query reading_1h from an earlier setup is left as it is" in out
    policies = {r[0]: r[1] for r in rows(services, f"SHOW RETENTION POLICIES ON {db}")}
    assert policies["raw"] == "720h0m0s" and policies["rollup_1d"] == "87600h0m0s"


def test_dry_run_changes_nothing(services, capsys):
    db = f"setup_test_{next(_n)}"
    assert main(setup(services, db, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert f'CREATE DATABASE "{db}"' in out and "dry run: 4 change(s) not made" in out
    assert [db] not in rows(services, "SHOW DATABASES")


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--retention", "forever", "--retention 'forever': write a number and a unit"),
        ("--downsample", "1h", "--downsample '1h': write INTERVAL:KEEP, e.g. 1h:5y"),
        ("--downsample", "1h:30m", "keep the summaries longer than one interval"),
    ],
)
def test_bad_durations_are_refused_naming_the_option(services, capsys, option, value, message):
    assert main(setup(services, "never_created", option, value)) == 2
    assert message in capsys.readouterr().err


def test_the_continuous_querys_select_summarises_what_the_bridge_wrote(services, capsys):
    """The bridge writes into the default policy `raw`; the continuous query's own SELECT INTO (run once by
    --backfill: influxd itself runs it only at the next hour boundary) gives each sensor's hourly mean/min/max."""
    i = next(_n)
    db, prefix, site = f"setup_cq_{i}", f"fssetup{i}", f"site-setup-{i}"
    assert main(setup(services, db)) == 0
    # Recent times: points older than the raw policy's 400 days would be refused.
    start = (int(time.time() * 1000) // HOUR_MS - 30) * HOUR_MS
    sent = [
        Reading(start + k * 600_000, site, "gw-01", sensor, "flow", round(100 + 10 * np.sin(k / 5) + j, 3), "L/s")
        for k in range(6 * 24)  # 24 hours, every 10 minutes
        for j, sensor in enumerate(("F-1", "F-2"))
    ]
    writer = InfluxV1Writer(services.influx_url, db)
    bridge = Bridge(
        MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"bridge-setup-{i}"), writer, prefix=prefix
    ).start()
    try:
        pub = GatewayPublisher(
            T.Topics(prefix, site, "gw-01"), MqttSettings(services.mqtt_host, services.mqtt_port, client_id=f"{prefix}")
        ).connect()
        for r in sent:
            pub.add_reading(r)
        assert pub.close(timeout_s=30)
        assert bridge.wait_idle(quiet_s=0.5, timeout_s=30)
    finally:
        bridge.stop()
    assert rows(services, f'SELECT count(value) FROM "{db}"."raw"."reading"')[0][1] == len(sent)

    assert main(setup(services, db, "--backfill")) == 0
    assert "backfilled rollup_1h.reading_1h" in capsys.readouterr().out
    for sensor in ("F-1", "F-2"):
        got = rows(
            services,
            f'SELECT mean, min, max, count FROM "{db}"."rollup_1h"."reading_1h" WHERE sensor = \'{sensor}\'',
        )
        values = np.array([r.value for r in sent if r.sensor == sensor]).reshape(24, 6)  # hour x 10-minute step
        assert [row[0] for row in got] == [start + h * HOUR_MS for h in range(24)]
        assert [row[4] for row in got] == [6] * 24
        np.testing.assert_allclose([row[1] for row in got], values.mean(axis=1), rtol=1e-12)
        assert [row[2] for row in got] == list(values.min(axis=1)) and [row[3] for row in got] == list(
            values.max(axis=1)
        )
    tags = rows(services, f'SHOW TAG KEYS ON "{db}" FROM "rollup_1h"."reading_1h"')
    assert sorted(t[0] for t in tags) == ["gateway", "quantity", "sensor", "site", "unit"]


def test_influxd_runs_the_continuous_query_on_its_own_schedule(services, capsys):
    """With a one-minute interval influxd runs the query at the next minute boundary: no --backfill, no hand."""
    db = f"setup_cq_live_{next(_n)}"
    assert main(setup(services, db, "--downsample", "1m:1d")) == 0
    assert "CHANGE create continuous query reading_1m" in capsys.readouterr().out
    minute = int(time.time() * 1000) // 60_000 * 60_000
    points = [(minute - 120_000 + k * 10_000, 10.0 + k) for k in range(12)]  # the two minutes before this one
    services.influx_write(
        db, [f"reading,site=s,gateway=g,sensor=F-1,quantity=flow,unit=L/s value={v} {t}" for t, v in points]
    )

    def summaries():
        return rows(services, f'SELECT mean, min, max, count FROM "{db}"."rollup_1m"."reading_1m"')

    want = [[minute - 120_000, 12.5, 10.0, 15.0, 6], [minute - 60_000, 18.5, 16.0, 21.0, 6]]
    # Polled, not slept: influxd checks its queries every second and runs this one once a minute
    # (a run that saw half the write is redone a minute later: RESAMPLE FOR 2d).
    deadline = time.monotonic() + 150
    while summaries() != want and time.monotonic() < deadline:
        time.sleep(0.5)
    assert summaries() == want


@pytest.mark.services  # starts its own InfluxDB with authentication and HTTPS
def test_setup_over_https_with_a_login_and_the_rights_it_needs(tmp_path, capsys):
    secure = start_secure_influx(tmp_path / "influx", database="frugalsense")
    try:
        admin_file = tmp_path / "admin.pass"
        write_private_file(admin_file, ADMIN_PASSWORD)
        common = ["influx", "setup", "--url", secure.url, "--influx-ca", str(secure.ca)]
        admin = [*common, "--influx-user", ADMIN, "--influx-password-file", str(admin_file)]
        assert main(admin) == 0
        assert "ok     database frugalsense exists" in capsys.readouterr().out
        assert main(admin) == 0
        assert "nothing to change" in capsys.readouterr().out
        # The bridge's user may write, not change policies: the message says what to grant.
        bridge = [*common, "--influx-user", "bridge", "--influx-password-file", str(secure.bridge_password_file)]
        assert main([*bridge, "--retention", "10d"]) == 2
        err = capsys.readouterr().err
        assert (
            "user 'bridge' may not do this" in err and "GRANT it WRITE (bridge) or admin rights (influx setup)" in err
        )
    finally:
        secure.server.stop()
