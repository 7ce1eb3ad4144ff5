"""Which routes an alert goes to, whether a route is in its quiet hours, and each route's Apprise channels.

``build_routing`` is what both ``frugalsense notify --check`` and the service call: it
fills ``${VAR}`` secrets, reads URL files, and has Apprise parse every URL, so a file
that checks is a file that starts.

>>> from gateway.notify.config import load_rules_text
>>> rules = load_rules_text('''
... routes:
...   - name: water
...     match: {site: "net3-*", kind: leak, min_severity: warning}
...     urls: ["json://127.0.0.1:9/hook"]
...     timezone: Europe/Paris
...     quiet_hours: {start: "22:00", end: "07:00"}
... ''')
>>> route = rules.routes[0]
>>> matches(route, site="net3-north", gateway="gw-1", kind="leak", label="leak", severity="critical")
True
>>> matches(route, site="net3-north", gateway="gw-1", kind="leak", label="leak", severity="info")
False
>>> at = lambda text: int(datetime.fromisoformat(text).timestamp() * 1000)
>>> held = quiet_until(route, at("2026-03-10T23:30:00+01:00"), "warning")
>>> datetime.fromtimestamp(held / 1000, ZoneInfo("Europe/Paris")).isoformat()
'2026-03-11T07:00:00+01:00'
>>> quiet_until(route, at("2026-03-10T23:30:00+01:00"), "critical") is None  # critical is never held
True
>>> quiet_until(route, at("2026-03-10T12:00:00+01:00"), "warning") is None
True
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from zoneinfo import ZoneInfo

import apprise
from apprise.manager_plugins import NotificationManager

from gateway.config.problems import ConfigError, Problem
from gateway.config.schema.types import format_path, suggest
from gateway.config.yaml_lines import LoadedYaml
from gateway.notify.config import SEVERITIES, NotifyRules, Route, UrlFile
from gateway.security.secrets import SecretFileError, read_secret_file

_SECRET = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def severity_rank(severity: str) -> int:
    """0 info, 1 warning, 2 critical."""
    return SEVERITIES.index(severity)


def _any(patterns: list[str] | None, value: str) -> bool:
    return patterns is None or any(fnmatchcase(value, p) for p in patterns)


def matches(route: Route, *, site: str, gateway: str, kind: str, label: str, severity: str) -> bool:
    """Whether ``route`` takes an alert with these fields (a route without ``match`` takes only escalations)."""
    m = route.match
    if m is None:
        return False
    if m.severity is not None and severity != m.severity:
        return False
    if m.min_severity is not None and severity_rank(severity) < severity_rank(m.min_severity):
        return False
    return _any(m.site, site) and _any(m.gateway, gateway) and _any(m.kind, kind) and _any(m.label, label)


def quiet_until(route: Route, now_ms: int, severity: str) -> int | None:
    """The end of the quiet hours ``now_ms`` falls in (ms), for a non-critical alert; None if it may go now."""
    q = route.quiet_hours
    if q is None or severity == "critical":
        return None
    tz = ZoneInfo(q.timezone or route.timezone)
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    start, end = (time(int(t[:2]), int(t[3:])) for t in (q.start, q.end))
    now_t = local.time()
    inside = start <= now_t < end if start < end else (now_t >= start or now_t < end)
    if not inside:
        return None
    day = local.date() if now_t < end else local.date() + timedelta(days=1)
    return int(datetime.combine(day, end, tzinfo=tz).timestamp() * 1000)


@dataclass
class Channel:
    """One Apprise URL of a route: what is sent to, and how it is shown (secrets hidden)."""

    route: str
    index: int
    target: apprise.Apprise
    shown: str

    def send(self, title: str, body: str) -> bool:
        """True once Apprise says the service took the message."""
        return bool(self.target.notify(title=title, body=body))


@dataclass
class Routing:
    """The rules with every route's channels built."""

    rules: NotifyRules
    channels: dict[str, list[Channel]]

    def routes_for(self, *, site: str, gateway: str, kind: str, label: str, severity: str) -> list[Route]:
        return [
            r
            for r in self.rules.routes
            if matches(r, site=site, gateway=gateway, kind=kind, label=label, severity=severity)
        ]


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def build_routing(rules: NotifyRules, doc: LoadedYaml, name: str, folder: Path) -> Routing:
    """Every route's channels; ``ConfigError`` at the line of each URL that cannot be used."""
    schemes = set(NotificationManager().schemas())
    problems: list[Problem] = []
    channels: dict[str, list[Channel]] = {}
    for i, route in enumerate(rules.routes):
        channels[route.name] = []
        for j, entry in enumerate(route.urls):
            loc = ("routes", i, "urls", j)
            where = (name, doc.line_of(loc), format_path(loc))
            try:
                url = _url_text(entry, folder)
            except ValueError as exc:
                problems.append(Problem(*where, str(exc)))
                continue
            scheme = url.partition("://")[0].lower() if "://" in url else ""
            if scheme not in schemes:
                hint = suggest(scheme, schemes) if scheme else None
                what = f"unknown Apprise scheme {scheme!r}" if scheme else "is not a URL (SCHEME://...)"
                problems.append(Problem(*where, f"{what} (mailto://, ntfy://, json://, ... see docs/notify.md)", hint))
                continue
            target, why = _instantiate(url)
            if target is None:
                problems.append(Problem(*where, f"Apprise cannot use this {scheme}:// URL: {why}"))
                continue
            for service in target:
                service.request_rate_per_sec = rules.delivery.min_send_interval_s
            shown = target[0].url(privacy=True)
            channels[route.name].append(Channel(route.name, j, target, shown))
    if problems:
        raise ConfigError(problems)
    return Routing(rules, channels)


def _url_text(entry: str | UrlFile, folder: Path) -> str:
    """The URL of an entry, its ``${VAR}`` filled from the environment or read from its file."""
    if isinstance(entry, UrlFile):
        path = Path(entry.file) if os.path.isabs(entry.file) else folder / entry.file
        try:
            return read_secret_file(path)
        except SecretFileError as exc:
            raise ValueError(str(exc)) from None

    def fill(m: re.Match) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            raise ValueError(f"environment variable {m.group(1)} is not set (the URL uses ${{{m.group(1)}}})")
        return value

    return _SECRET.sub(fill, entry)


def _instantiate(url: str) -> tuple[apprise.Apprise | None, str]:
    """An Apprise holding this one URL, or None and what Apprise said (its warnings, secrets masked by it)."""
    captured = _Captured()
    logger = logging.getLogger("apprise")
    logger.addHandler(captured)
    try:
        target = apprise.Apprise()
        ok = target.add(url)
    finally:
        logger.removeHandler(captured)
    if not ok or len(target) != 1:
        return None, "; ".join(captured.lines) or "the URL is incomplete"
    return target, ""
