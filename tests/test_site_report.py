"""The site report from the real InfluxDB filled by gateway -> MQTT -> bridge: PNG and HTML with the alert marked."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from datetime import UTC

from gateway.cli import main  # noqa: E402
from gateway.tools.site_report import build_figure, fetch_site  # noqa: E402

DAY_MS = 86_400_000


def _iso(ms: int) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M")


def test_the_water_report_marks_the_leak_alert(demo_influx, tmp_path, capsys):
    d = demo_influx
    data = fetch_site(d.writer.query, d.water_site, d.start_ms, d.end_ms)
    fig = build_figure(data)
    raised = [a for a in d.alerts if a.state == "raised"]
    assert raised
    for alert in raised:
        # One marker per axis that shares the time axis (flow, pressure, night flow), at the alert's time.
        markers = fig.findobj(lambda artist, gid=f"alert:{alert.alert_id}:raised": artist.get_gid() == gid)
        assert len(markers) == 3
        drawn_at = matplotlib.dates.date2num(markers[0].get_xdata()[0])
        assert drawn_at == pytest.approx(matplotlib.dates.date2num(np.datetime64(alert.time_ms, "ms")))
    flagged = fig.findobj(lambda artist: artist.get_gid() == "nights:leak")
    assert len(flagged) == 1 and len(flagged[0].get_offsets()) >= 1
    assert not fig.findobj(lambda artist: str(artist.get_gid()).startswith("eaqi:"))  # no air at this site
    matplotlib.pyplot.close(fig)

    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                "--site",
                d.water_site,
                "--from",
                _iso(d.start_ms),
                "--to",
                _iso(d.end_ms + 60_000),
                "--out",
                str(out),
                "--influx-url",
                d.url,
                "--database",
                d.database,
            ]
        )
        == 0
    )
    png = out / f"{d.water_site}-report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    page = (out / f"{d.water_site}-report.html").read_text()
    assert f'<img src="{png.name}"' in page and raised[0].alert_id in page and "possible leak" in page


def test_the_air_report_draws_eaqi_bands(demo_influx, tmp_path):
    d = demo_influx
    data = fetch_site(d.writer.query, d.air_site, d.start_ms, d.end_ms)
    assert {s.quantity for s in data.series} == {"pm25", "pm10", "no2"} and not data.alerts
    fig = build_figure(data)
    pm25_bands = {a.get_gid() for a in fig.findobj(lambda a: str(a.get_gid()).startswith("eaqi:pm25:"))}
    assert {"eaqi:pm25:good", "eaqi:pm25:poor"} <= pm25_bands  # the episode reaches 'poor'
    matplotlib.pyplot.close(fig)


def test_an_unknown_site_says_which_sites_exist(demo_influx, tmp_path, capsys):
    d = demo_influx
    code = main(
        [
            "report",
            "--site",
            "net3-nort",
            "--from",
            _iso(d.start_ms),
            "--to",
            _iso(d.end_ms),
            "--out",
            str(tmp_path),
            "--influx-url",
            d.url,
            "--database",
            d.database,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no data for site 'net3-nort'" in err and d.water_site in err and d.air_site in err
    assert main(["report", "--site", "x", "--from", "yesterday", "--to", "2026-03-01", "--out", str(tmp_path)]) == 2
    assert "--from 'yesterday' is not a date" in capsys.readouterr().err
