"""A site report from InfluxDB: readings with alerts marked, the night-flow trend and EAQI bands, as PNG and HTML.

``fetch_site(query, site, start_ms, end_ms)`` reads what the bridge wrote (schema in
docs/contracts.md); ``build_figure(data)`` draws it (each alert marker carries the gid
``alert:<alert_id>`` so it can be found in the figure); ``write_report(data, out_dir)``
writes ``<site>-report.png`` and ``<site>-report.html``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge.air.eaqi import BANDS, POLLUTANT_OF_QUANTITY, UPPER_BOUNDS

MAX_POINTS = 1500  # per series in the figure: readings are averaged to at most this many intervals
# EEA's EAQI colours, good -> extremely poor.
BAND_COLORS = ("#50F0E6", "#50CCAA", "#F0E641", "#FF5050", "#960032", "#7D2181")
WATER = ("flow", "pressure")
Query = Callable[[str], list[dict]]  # InfluxQL -> series (InfluxV1Writer.query)


class ReportError(Exception):
    """Nothing to report, or InfluxDB could not answer; the message says what to check."""


@dataclass
class Series:
    """One sensor's readings over the report period, averaged per interval."""

    sensor: str
    quantity: str
    unit: str
    time_ms: np.ndarray
    value: np.ndarray


@dataclass
class SiteData:
    """Everything a site report draws: the period, every sensor's series, the alerts and the night-flow decisions."""

    site: str
    start_ms: int
    end_ms: int
    interval: str
    series: list[Series] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)  # time, alert_id, state, severity, message, x_excess_lps
    nights: list[dict] = field(default_factory=list)  # time, label, x_mnf_lps, x_baseline_lps, x_excess_lps

    def of(self, quantities) -> list[Series]:
        return [s for s in self.series if s.quantity in quantities]


def _iso(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def interval_for(start_ms: int, end_ms: int) -> str:
    """The GROUP BY interval that keeps a series under MAX_POINTS, in whole minutes.

    >>> interval_for(0, 14 * 86_400_000)
    '14m'
    """
    minutes = max(1, math.ceil((end_ms - start_ms) / 60_000 / MAX_POINTS))
    return f"{minutes}m"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _rows(series: dict) -> list[dict]:
    return [dict(zip(series["columns"], values, strict=True)) for values in series.get("values", [])]


def check_period(start_ms: int, end_ms: int) -> None:
    """ReportError unless the period starts before it ends."""
    if end_ms <= start_ms:
        raise ReportError(f"the period ends ({_iso(end_ms)}) before it starts ({_iso(start_ms)})")


def no_data_error(site: str, start_ms: int, end_ms: int, known: list[str]) -> ReportError:
    """The error for a site with nothing in the period, naming the sites the database does have."""
    return ReportError(
        f"no data for site {site!r} between {_iso(start_ms)} and {_iso(end_ms)} "
        f"(sites in this database: {', '.join(known) or 'none'})"
    )


def fetch_site(query: Query, site: str, start_ms: int, end_ms: int) -> SiteData:
    """Readings (averaged per interval), alerts and night-flow decisions of ``site`` in ``[start_ms, end_ms]``.

    InfluxQL (InfluxDB 1.x); ``site_report_flux.fetch_site_flux`` asks the same in Flux.
    """
    check_period(start_ms, end_ms)
    where = f"\"site\" = '{_quote(site)}' AND time >= {start_ms}ms AND time <= {end_ms}ms"
    data = SiteData(site, start_ms, end_ms, interval_for(start_ms, end_ms))
    for s in query(
        f'SELECT mean("value") FROM "reading" WHERE {where} '
        f'GROUP BY time({data.interval}), "sensor", "quantity", "unit" fill(none)'
    ):
        rows = _rows(s)
        data.series.append(
            Series(
                s["tags"]["sensor"],
                s["tags"]["quantity"],
                s["tags"]["unit"],
                np.array([r["time"] for r in rows], dtype=np.int64),
                np.array([r["mean"] for r in rows], dtype=float),
            )
        )
    data.series.sort(key=lambda s: (s.quantity, s.sensor))
    for s in query(f'SELECT "alert_id", "state", "severity", "message", "x_excess_lps" FROM "alert" WHERE {where}'):
        data.alerts += _rows(s)
    for s in query(
        f'SELECT "label", "x_mnf_lps", "x_baseline_lps", "x_excess_lps" FROM "detection" '
        f"WHERE \"kind\" = 'leak' AND {where}"
    ):
        data.nights += _rows(s)
    if not data.series and not data.alerts and not data.nights:
        known = sorted(
            {row["value"] for s in query('SHOW TAG VALUES FROM "reading" WITH KEY = "site"') for row in _rows(s)}
        )
        raise no_data_error(site, start_ms, end_ms, known)
    return data


# ---- drawing ---------------------------------------------------------------------------


def _dates(time_ms) -> np.ndarray:
    return np.asarray(time_ms, dtype="datetime64[ms]")


def _mark_alerts(ax, data: SiteData, label: bool) -> None:
    for alert in data.alerts:
        raised = alert["state"] == "raised"
        ax.axvline(
            _dates([alert["time"]])[0],
            color="#C00000" if raised else "#2E7D32",
            linestyle="-" if raised else "--",
            linewidth=1.5,
            gid=f"alert:{alert['alert_id']}:{alert['state']}",
            label=(f"alert {alert['alert_id']} {alert['state']}" if label else None),
        )


def _water_axis(ax, data: SiteData, quantity: str) -> None:
    for s in data.of((quantity,)):
        ax.plot(_dates(s.time_ms), s.value, linewidth=0.8, label=s.sensor)
    unit = data.of((quantity,))[0].unit
    ax.set_ylabel(f"{quantity} ({unit})")
    _mark_alerts(ax, data, label=quantity == "flow")
    ax.legend(loc="upper left", fontsize=7, ncol=4)


def _night_axis(ax, data: SiteData) -> None:
    nights = [n for n in data.nights if n.get("x_mnf_lps") is not None]
    t = _dates([n["time"] for n in nights])
    ax.plot(t, [n["x_mnf_lps"] for n in nights], "o-", color="#1F77B4", label="minimum night flow")
    base = [(tt, n["x_baseline_lps"]) for tt, n in zip(t, nights, strict=True) if n.get("x_baseline_lps") is not None]
    if base:
        ax.plot([b[0] for b in base], [b[1] for b in base], "s--", color="#7F7F7F", label="baseline")
    flagged = [(tt, n["x_mnf_lps"]) for tt, n in zip(t, nights, strict=True) if n["label"] == "leak"]
    if flagged:
        ax.scatter(
            [f[0] for f in flagged],
            [f[1] for f in flagged],
            s=90,
            facecolors="none",
            edgecolors="#C00000",
            linewidths=2,
            zorder=3,
            label="night flagged as leak",
            gid="nights:leak",
        )
    _mark_alerts(ax, data, label=False)
    ax.set_ylabel("night flow (L/s)")
    ax.legend(loc="upper left", fontsize=7)


def _air_axis(ax, data: SiteData, quantity: str) -> None:
    series = data.of((quantity,))
    bounds = UPPER_BOUNDS[POLLUTANT_OF_QUANTITY[quantity]]
    top = max(float(np.nanmax(s.value)) for s in series) * 1.1 if series else bounds[-1]
    edges = (0.0, *bounds, max(top, bounds[-1] * 1.2))
    for i, name in enumerate(BANDS):
        if edges[i] < top:
            ax.axhspan(
                edges[i],
                edges[i + 1],
                color=BAND_COLORS[i],
                alpha=0.25,
                linewidth=0,
                label=name.replace("_", " "),
                gid=f"eaqi:{quantity}:{name}",
            )
    for s in series:
        ax.plot(_dates(s.time_ms), s.value, linewidth=0.8, color="black", label=s.sensor)
    ax.set_ylim(0, top)
    ax.set_ylabel(f"{quantity} (ug/m3)")
    ax.legend(loc="upper left", fontsize=7, ncol=4)


def build_figure(data: SiteData):
    """The report figure: one panel per water quantity and air pollutant present, plus the night-flow trend."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server or in CI
    import matplotlib.pyplot as plt

    panels = [("water", q) for q in WATER if data.of((q,))]
    if any(n.get("x_mnf_lps") is not None for n in data.nights):
        panels.append(("night", None))
    panels += [("air", q) for q in POLLUTANT_OF_QUANTITY if data.of((q,))]
    if not panels:
        raise ReportError(f"site {data.site}: only alerts, no readings to draw in this period")
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 2.8 * len(panels)), sharex=True, squeeze=False)
    for ax, (kind, quantity) in zip(axes[:, 0], panels, strict=True):  # one axis per panel
        {"water": _water_axis, "air": _air_axis}.get(kind, lambda a, d, _q: _night_axis(a, d))(ax, data, quantity)
        ax.grid(alpha=0.3)
        ax.set_xlim(_dates([data.start_ms])[0], _dates([data.end_ms])[0])
    raised = sum(a["state"] == "raised" for a in data.alerts)
    fig.suptitle(f"{data.site}: {_iso(data.start_ms)} to {_iso(data.end_ms)} ({raised} alert(s) raised)")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


# ---- files ------------------------------------------------------------------------------


def band_hours(series: Series) -> dict[str, int]:
    """How many averaged intervals of a pollutant series fall in each EAQI band (not the regulatory averages)."""
    bounds = UPPER_BOUNDS[POLLUTANT_OF_QUANTITY[series.quantity]]
    index = np.searchsorted(np.asarray(bounds, dtype=float), series.value[~np.isnan(series.value)], side="left")
    return {name: int((index == i).sum()) for i, name in enumerate(BANDS)}


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(data: SiteData, png_name: str) -> str:
    """The report's HTML page: the figure, then tables of the alerts, the sensors and the intervals per EAQI band."""
    sensors = [
        [
            s.sensor,
            s.quantity,
            s.unit,
            len(s.value),
            f"{np.nanmin(s.value):.2f}",
            f"{np.nanmean(s.value):.2f}",
            f"{np.nanmax(s.value):.2f}",
        ]
        for s in data.series
        if len(s.value)
    ]
    alerts = [
        [
            _iso(a["time"]),
            a["alert_id"],
            a["state"],
            a.get("severity") or "",
            "" if a.get("x_excess_lps") is None else f"{a['x_excess_lps']:.1f}",
            a.get("message") or "",
        ]
        for a in data.alerts
    ]
    air = [[s.sensor, s.quantity, *band_hours(s).values()] for s in data.series if s.quantity in POLLUTANT_OF_QUANTITY]
    parts = [
        f"<h1>Site report: {html.escape(data.site)}</h1>",
        f"<p>{_iso(data.start_ms)} to {_iso(data.end_ms)}; readings averaged over {data.interval}.</p>",
        f'<img src="{html.escape(png_name)}" alt="time series of {html.escape(data.site)}" style="max-width:100%">',
        "<h2>Alerts</h2>",
        _table(["time", "alert", "state", "severity", "estimated flow (L/s)", "message"], alerts)
        if alerts
        else "<p>No alert in this period.</p>",
        "<h2>Sensors</h2>",
        _table(["sensor", "quantity", "unit", "intervals", "min", "mean", "max"], sensors),
    ]
    if air:
        parts += [
            "<h2>Air quality: intervals per EAQI band</h2>",
            _table(["sensor", "pollutant", *(b.replace("_", " ") for b in BANDS)], air),
        ]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:2px 8px;font-size:90%}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(data.site)} report</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def write_report(data: SiteData, out_dir: Path, fig=None) -> tuple[Path, Path]:
    """Write ``<site>-report.png`` and ``<site>-report.html`` to ``out_dir``; return their paths."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = fig or build_figure(data)
    png = out_dir / f"{data.site}-report.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    page = out_dir / f"{data.site}-report.html"
    page.write_text(report_html(data, png.name), encoding="utf-8")
    return png, page
