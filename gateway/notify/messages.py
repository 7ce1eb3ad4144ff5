"""The words of every notification, in English and French: short lines a person reads on a phone.

One message says where (site, gateway), what (the kind and label in words), since when
(local time of the route), how much (estimated leak flow, night flow against its
baseline, EAQI level, a sensor's drift), which sensors moved most, the gateway's own
sentence, and the dashboard link when the route has one.

>>> from edge.contracts import Alert, AlertState, Severity
>>> leak = Alert(1773156600000, "net3-north", "gw-net3-01", "leak", "leak-20260310T1330", AlertState.RAISED,
...     "leak", Severity.CRITICAL, 1.0, "Possible leak of about 141.9 L/s since 2026-03-10 13:30 UTC (score 1.00); "
...     "pressure dropped most at: 173, 101, 141", "leak-mlp-net3", "1", 1773149400000,
...     {"excess_lps": 141.94, "sensors": ["173", "101", "141"], "inflow_level_lps": 680.2})
>>> title, body = render([Item("raised", leak, {})], "fr", "Europe/Paris", "https://grafana/d/x?var-site={site}")
>>> print(title)
[CRITIQUE] Fuite probable – net3-north
>>> print(body)  # doctest: +ELLIPSIS
Fuite probable à net3-north (passerelle gw-net3-01)
Depuis : mar. 10 mars 2026 14:30 (Europe/Paris)
Débit de fuite estimé : 141,9 L/s (21 % de l'entrée de la zone, 680,2 L/s)
Capteurs les plus touchés : 173, 101, 141
Gravité : critique – alerte leak-20260310T1330
La passerelle dit : Possible leak of about 141.9 L/s since 2026-03-10 13:30 UTC (score 1.00); pressure dropped ...
Tableau de bord : https://grafana/d/x?var-site=net3-north
>>> print(render([Item("repeat", leak, {"n": 2})], "en", "UTC", None)[0])
[CRITICAL] Reminder 2, not acknowledged: Possible leak – net3-north
>>> print(render([Item("resolved", leak, {"by": "m.dupont"})], "en", "UTC", None)[1].splitlines()[0])
Resolved (by m.dupont): Possible leak at net3-north (gateway gw-net3-01)
>>> print(render([Item("raised", leak, {}), Item("resolved", leak, {})], "en", "UTC", None)[0])
2 alert updates – net3-north
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge.contracts import Alert

EVENTS = ("raised", "repeat", "escalated", "resolved")

_WHAT = {
    "en": {
        "leak": "Possible leak",
        "aqi": "Air quality {label}",
        "calibration": "Sensor needs recalibration",
        "sensor_fault": "Sensor fault ({label})",
        "sensor_silent": "Sensor silent",
        None: "{kind} alert ({label})",
    },
    "fr": {
        "leak": "Fuite probable",
        "aqi": "Qualité de l'air {label}",
        "calibration": "Capteur à réétalonner",
        "sensor_fault": "Capteur défaillant ({label})",
        "sensor_silent": "Capteur muet",
        None: "Alerte {kind} ({label})",
    },
}
# Labels in words (EAQI bands, sensor faults); others are shown with '_' as spaces.
_LABELS = {
    "en": {"stuck": "stuck value", "fan_failure": "fan failure", "dropout": "dropouts"},
    "fr": {
        "good": "bonne",
        "fair": "correcte",
        "moderate": "moyenne",
        "poor": "mauvaise",
        "very_poor": "très mauvaise",
        "extremely_poor": "extrêmement mauvaise",
        "stuck": "valeur bloquée",
        "fan_failure": "ventilateur en panne",
        "dropout": "coupures",
    },
}
_SEVERITY = {
    "en": {"info": "info", "warning": "warning", "critical": "critical"},
    "fr": {"info": "info", "warning": "avertissement", "critical": "critique"},
}
_TEXT: dict[str, dict[str, Any]] = {
    "en": {
        "at": "{what} at {site} (gateway {gateway})",
        "since": "Since: {when}",
        "flow": "Estimated leak flow: {flow} L/s",
        "share": " ({share} % of the zone inflow, {inflow} L/s)",
        "night": "Night flow {mnf} L/s against a {nights}-night baseline of {base} L/s",
        "eaqi": "European air quality index: level {level} of 6 ({label})",
        "level": "Level: {value} µg/m³",
        "drift": "Daily {sensor} statistic moved from {base} to {value}",
        "sensors": "Most affected sensors: {sensors}",
        "severity": "Severity: {severity} – alert {alert_id}",
        "alert": "Alert {alert_id}",
        "says": "The gateway says: {message}",
        "link": "Dashboard: {link}",
        "repeat": "Reminder {n}, not acknowledged: ",
        "escalated": "Escalated, not acknowledged for {minutes} min: ",
        "resolved": "Resolved: ",
        "resolved_by": "Resolved (by {by}): ",
        "many": "{n} alert updates – {site}",
        "summary": "Held during quiet hours: {n} alert updates",
        "days": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
        "months": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        "date": "{day} {d} {month} {y} {hm}",
    },
    "fr": {
        "at": "{what} à {site} (passerelle {gateway})",
        "since": "Depuis : {when}",
        "flow": "Débit de fuite estimé : {flow} L/s",
        "share": " ({share} % de l'entrée de la zone, {inflow} L/s)",
        "night": "Débit de nuit {mnf} L/s pour une référence de {base} L/s sur {nights} nuits",
        "eaqi": "Indice européen de qualité de l'air : niveau {level} sur 6 ({label})",
        "level": "Niveau : {value} µg/m³",
        "drift": "La statistique journalière de {sensor} est passée de {base} à {value}",
        "sensors": "Capteurs les plus touchés : {sensors}",
        "severity": "Gravité : {severity} – alerte {alert_id}",
        "alert": "Alerte {alert_id}",
        "says": "La passerelle dit : {message}",
        "link": "Tableau de bord : {link}",
        "repeat": "Rappel {n}, non acquittée : ",
        "escalated": "Escalade, non acquittée depuis {minutes} min : ",
        "resolved": "Terminée : ",
        "resolved_by": "Terminée (par {by}) : ",
        "many": "{n} mises à jour d'alertes – {site}",
        "summary": "Retenu pendant les heures calmes : {n} mises à jour d'alertes",
        "days": ("lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."),
        "months": ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc."),
        "date": "{day} {d} {month} {y} {hm}",
    },
}


@dataclass(frozen=True)
class Item:
    """One thing to tell: an event (raised, repeat, escalated, resolved) about an alert, with its details."""

    event: str
    alert: Alert
    extra: dict


def number(value: float, language: str) -> str:
    """One decimal, with the language's decimal mark.

    >>> number(141.94, "fr"), number(141.94, "en")
    ('141,9', '141.9')
    """
    text = f"{value:.1f}"
    return text.replace(".", ",") if language == "fr" else text


def local_time(time_ms: int, language: str, timezone: str) -> str:
    """A time as people there read it.

    >>> local_time(1773149400000, "en", "Europe/Paris")
    'Tue 10 Mar 2026 14:30 (Europe/Paris)'
    """
    t = _TEXT[language]
    d = datetime.fromtimestamp(time_ms / 1000, ZoneInfo(timezone))
    when = t["date"].format(
        day=t["days"][d.weekday()], d=d.day, month=t["months"][d.month - 1], y=d.year, hm=f"{d:%H:%M}"
    )
    return f"{when} ({timezone})"


def what(alert: Alert, language: str) -> str:
    """The alert's kind and label in words."""
    label = _LABELS[language].get(alert.label, alert.label.replace("_", " "))
    template = _WHAT[language].get(alert.kind, _WHAT[language][None])
    return template.format(kind=alert.kind.replace("_", " "), label=label)


def link_for(template: str | None, alert: Alert) -> str | None:
    """The route's link with the alert's fields filled in (config.LINK_FIELDS)."""
    if not template:
        return None
    fields = {"site": alert.site, "gateway": alert.gateway, "alert_id": alert.alert_id, "kind": alert.kind}
    fields |= {"label": alert.label, "since": str(alert.since_ms)}
    return string.Formatter().vformat(template, (), fields)


def _figures(alert: Alert, language: str) -> list[str]:
    """What the explanation measures, when it carries it (keys the detectors in edge/detectors write)."""
    e: dict[str, Any] = alert.explanation
    t, n = _TEXT[language], lambda v: number(float(v), language)
    lines = []
    if alert.kind == "leak" and "mnf_lps" in e and "baseline_lps" in e:  # night_flow.py
        lines.append(
            t["night"].format(mnf=n(e["mnf_lps"]), base=n(e["baseline_lps"]), nights=e.get("baseline_nights", "?"))
        )
    if alert.kind == "leak" and isinstance(e.get("excess_lps"), (int, float)):
        line = t["flow"].format(flow=n(e["excess_lps"]))
        inflow = e.get("inflow_level_lps")  # leak_model.py
        if isinstance(inflow, (int, float)) and inflow > 0:
            line += t["share"].format(share=round(100 * float(e["excess_lps"]) / float(inflow)), inflow=n(inflow))
        lines.append(line)
    if alert.kind == "aqi" and alert.score >= 1:  # aqi.py: the score is the EAQI level
        lines.append(t["eaqi"].format(level=int(alert.score), label=_LABELS[language].get(alert.label, alert.label)))
    if isinstance(e.get("mean_ugm3"), (int, float)):
        lines.append(t["level"].format(value=n(e["mean_ugm3"])))
    if alert.kind == "calibration" and "statistic" in e and "baseline" in e:  # drift.py
        lines.append(t["drift"].format(sensor=e.get("sensor", "?"), base=n(e["baseline"]), value=n(e["statistic"])))
    return lines


def _sensors(alert: Alert) -> list[str]:
    """The sensors that moved most: the learned leak model's pressure hint, the dominant air sensors, the one sensor."""
    e: dict[str, Any] = alert.explanation
    if alert.kind == "leak":
        return list(e["sensors"]) if "inflow_level_lps" in e and isinstance(e.get("sensors"), list) else []
    for key in ("dominant", "sensors"):
        if isinstance(e.get(key), list) and e[key]:
            return [str(s) for s in e[key]]
    return [e["sensor"]] if isinstance(e.get("sensor"), str) else []


def _lead(item: Item, language: str) -> str:
    t = _TEXT[language]
    if item.event == "repeat":
        return t["repeat"].format(n=item.extra.get("n", 1))
    if item.event == "escalated":
        return t["escalated"].format(minutes=item.extra.get("minutes", "?"))
    if item.event == "resolved":
        return t["resolved_by"].format(by=item.extra["by"]) if item.extra.get("by") else t["resolved"]
    return ""


def _block(item: Item, language: str, timezone: str, link: str | None) -> list[str]:
    t, a = _TEXT[language], item.alert
    lines = [_lead(item, language) + t["at"].format(what=what(a, language), site=a.site, gateway=a.gateway)]
    lines.append(t["since"].format(when=local_time(a.since_ms, language, timezone)))
    if item.event != "resolved":
        lines += _figures(a, language)
        if sensors := _sensors(a):
            lines.append(t["sensors"].format(sensors=", ".join(sensors)))
        lines.append(t["severity"].format(severity=_SEVERITY[language][str(a.severity)], alert_id=a.alert_id))
    else:
        lines.append(t["alert"].format(alert_id=a.alert_id))
    if a.message:
        lines.append(t["says"].format(message=a.message))
    if url := link_for(link, a):
        lines.append(t["link"].format(link=url))
    return lines


def render(items: list[Item], language: str, timezone: str, link: str | None) -> tuple[str, str]:
    """The title and body of one message about ``items`` (one alert event, or a group of them)."""
    t = _TEXT[language]
    if len(items) == 1:
        item = items[0]
        a = item.alert
        tag = "" if item.event == "resolved" else f"[{_SEVERITY[language][str(a.severity)].upper()}] "
        return f"{tag}{_lead(item, language)}{what(a, language)} – {a.site}", "\n".join(
            _block(item, language, timezone, link)
        )
    sites = sorted({i.alert.site for i in items})
    title = t["many"].format(n=len(items), site=sites[0]) if len(sites) == 1 else t["summary"].format(n=len(items))
    blocks = ["\n".join(_block(i, language, timezone, link)) for i in items]
    return title, "\n\n".join(blocks)
