"""The notifier's routing rules (``notify.yaml``): the schema, and loading it with ``FILE:LINE`` for every problem.

A file is read as gateway configs are (``gateway.config.yaml_lines``: line of every key,
duplicate keys, a size bound, alias bombs refused) and checked by pydantic; every
mistake is one ``Problem`` at its line, unknown keys with "did you mean".

>>> load_rules_text("routes:\\n  - name: ops\\n    urls: ['json://127.0.0.1:9/h']\\n    languag: fr\\n", "n.yaml")
Traceback (most recent call last):
...
gateway.config.problems.ConfigError: n.yaml:4: routes[0].languag: unknown key, did you mean 'language'?
>>> rules = load_rules_text("routes:\\n  - name: ops\\n    match: {kind: leak}\\n    urls: ['json://h/x']\\n", "n.yaml")
>>> rules.routes[0].match.kind, rules.routes[0].language, rules.routes[0].group_window_s
(['leak'], 'en', 30.0)
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, ValidationError, model_validator

from edge.contracts import Severity
from gateway.config.problems import ConfigError, Problem
from gateway.config.schema.base import Section
from gateway.config.schema.types import (
    ClockTime,
    Identifier,
    Text,
    TimeZoneName,
    describe,
    fail,
    number,
    suggest,
    whole,
)
from gateway.config.validate import read_config_file, translate_error
from gateway.config.yaml_lines import LoadedYaml, YamlSyntaxError, load_yaml_text

SEVERITIES = tuple(str(s) for s in Severity)  # info, warning, critical: the order is the rank
LANGUAGES = ("en", "fr")
#: What a link template may name; each is filled from the alert.
LINK_FIELDS = ("site", "gateway", "alert_id", "kind", "label", "since")


def _names(value: object) -> list[str]:
    """One name or a list of names (shell-style patterns such as ``net3-*`` allowed)."""
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise fail(f"must be a name or a list of names, got {describe(v)}")
    return values  # type: ignore[return-value]


def _severity(value: object) -> str:
    if value not in SEVERITIES:
        raise fail(f"must be one of {', '.join(SEVERITIES)}; got {describe(value)}", suggest(value, SEVERITIES))
    return str(value)


def _link(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(f"must be a link template (text), got {describe(value)}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise fail(f"is not a valid template ({exc}); write a literal brace as {{{{ or }}}}") from None
    for f in fields:
        if f not in LINK_FIELDS:
            raise fail(
                f"names {{{f}}}, which an alert does not have (known: {', '.join(LINK_FIELDS)})",
                suggest(f, LINK_FIELDS),
            )
    return value


Names = Annotated[list[str], BeforeValidator(_names)]
SeverityName = Annotated[str, BeforeValidator(_severity)]
LinkTemplate = Annotated[str, BeforeValidator(_link)]


class Match(Section):
    """Which alerts a route takes: every key given must match (names may be patterns like ``net3-*``)."""

    site: Names | None = None
    gateway: Names | None = None
    kind: Names | None = None
    label: Names | None = None
    severity: SeverityName | None = None  # exactly this one
    min_severity: SeverityName | None = None  # this one or worse

    @model_validator(mode="after")
    def _one_severity_rule(self) -> Match:
        if self.severity is not None and self.min_severity is not None:
            raise fail("give severity (exactly) or min_severity (at least), not both")
        return self


class QuietHours(Section):
    """A nightly window in which only critical alerts are sent; the rest wait for its end (``then``)."""

    start: ClockTime
    end: ClockTime
    timezone: TimeZoneName | None = None  # the route's timezone when not given
    # deliver: each held message goes out when the window ends (grouped per site);
    # summary: one message per route lists everything held.
    then: Literal["deliver", "summary"] = "deliver"


class UrlFile(Section):
    """An Apprise URL kept in a file readable by its owner only (it holds a password or token)."""

    file: Text


def _url_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(f"must be an Apprise URL (text) or {{file: PATH}}, got {describe(value)}")
    return value


# Text, or a section with file: — told apart by the entry's shape, so each gets its own errors only.
Url = Annotated[
    Annotated[Annotated[str, BeforeValidator(_url_text)], Tag("url")] | Annotated[UrlFile, Tag("file")],
    Discriminator(lambda v: "file" if isinstance(v, dict) else "url"),
]


class Route(Section):
    """Where matching alerts go, in which language, and how often."""

    name: Identifier
    match: Match | None = None  # none: the route only receives escalations
    urls: list[Url] = Field(min_length=1)
    language: Literal["en", "fr"] = "en"
    timezone: TimeZoneName = "UTC"
    quiet_hours: QuietHours | None = None
    group_window_s: number(0, 3600) = 30.0  # type: ignore[valid-type]
    repeat_every_min: number(0, 7 * 24 * 60, low_open=True) | None = None  # type: ignore[valid-type]
    escalate_after_min: number(0, 7 * 24 * 60, low_open=True) | None = None  # type: ignore[valid-type]
    escalate_to: Identifier | None = None
    link: LinkTemplate | None = None

    @model_validator(mode="after")
    def _escalation_pair(self) -> Route:
        if (self.escalate_after_min is None) != (self.escalate_to is None):
            raise fail("escalate_after_min and escalate_to go together: give both or neither")
        return self


class Delivery(Section):
    """Retries while a channel is down, then a dead letter."""

    max_attempts: whole(1, 1000) = 10  # type: ignore[valid-type]
    max_age_min: number(0, 30 * 24 * 60, low_open=True) = 24 * 60.0  # type: ignore[valid-type]
    first_retry_s: number(0, 3600, low_open=True) = 5.0  # type: ignore[valid-type]
    max_retry_s: number(0, 24 * 3600, low_open=True) = 600.0  # type: ignore[valid-type]
    # Apprise waits 5.5 s between two sends to one service (its default for most services); the
    # notifier groups bursts itself, and one slow channel would hold up every other route's pages.
    min_send_interval_s: number(0, 60) = 1.0  # type: ignore[valid-type]


class NotifyRules(Section):
    """A whole ``notify.yaml``."""

    link: LinkTemplate | None = None  # the default for routes without their own
    delivery: Delivery = Field(default_factory=Delivery)
    routes: list[Route] = Field(min_length=1)

    def route(self, name: str) -> Route:
        return next(r for r in self.routes if r.name == name)


def _cross_problems(rules: NotifyRules, doc: LoadedYaml, name: str) -> list[Problem]:
    """Names unique, escalation targets that exist (and are not the route itself)."""
    problems = []
    seen: dict[str, int] = {}
    names = [r.name for r in rules.routes]
    for i, route in enumerate(rules.routes):
        if route.name in seen:
            line = doc.line_of(("routes", i, "name"))
            problems.append(
                Problem(
                    name, line, f"routes[{i}].name", f"{route.name!r} is already the name of routes[{seen[route.name]}]"
                )
            )
        seen.setdefault(route.name, i)
        if route.escalate_to is not None and (route.escalate_to not in names or route.escalate_to == route.name):
            others = [n for n in names if n != route.name]
            why = "a route cannot escalate to itself" if route.escalate_to == route.name else "no route has this name"
            problems.append(
                Problem(
                    name,
                    doc.line_of(("routes", i, "escalate_to")),
                    f"routes[{i}].escalate_to",
                    f"{why} (routes: {', '.join(others) or 'none'})",
                    suggest(route.escalate_to, others),
                )
            )
    return problems


def load_rules(path: str | os.PathLike) -> NotifyRules:
    """Read and validate a ``notify.yaml``; ``ConfigError`` lists every problem by line."""
    rules, _ = load_rules_with_lines(path)
    return rules


def load_rules_with_lines(path: str | os.PathLike) -> tuple[NotifyRules, LoadedYaml]:
    """``load_rules``, with the lines of every key (the channels' problems are reported at them)."""
    return _validate(*read_config_file(path))


def load_rules_text(text: str, name: str = "<notify.yaml>") -> NotifyRules:
    """Validate rules given as text (``name`` is shown in messages)."""
    return _validate(text, name)[0]


def _validate(text: str, name: str) -> tuple[NotifyRules, LoadedYaml]:
    try:
        doc = load_yaml_text(text)
    except YamlSyntaxError as exc:
        raise ConfigError([Problem(name, exc.line, "", exc.message)]) from None
    problems = [Problem(name, i.line, ".".join(map(str, i.path)), i.message) for i in doc.issues]
    if not isinstance(doc.data, dict):
        got = "an empty file" if doc.data is None else describe(doc.data)
        raise ConfigError(
            problems
            + [Problem(name, doc.first_line, "", f"notify rules must be `key: value` lines (routes:, ...), got {got}")]
        )
    rules = None
    try:
        rules = NotifyRules.model_validate(doc.data)
    except ValidationError as exc:
        problems += _url_file_hints(
            [translate_error(_without_url_union(dict(e)), doc, name, NotifyRules) for e in exc.errors()]
        )
    if rules is not None:
        problems += _cross_problems(rules, doc, name)
    if problems or rules is None:
        raise ConfigError(problems)
    return rules, doc


def _without_url_union(error: dict[str, Any]) -> dict[str, Any]:
    """Drop the tag (``url`` or ``file``) pydantic puts after the index of a URL entry in error paths."""
    loc = tuple(error["loc"])
    for i in range(len(loc) - 2):
        if loc[i] == "urls" and isinstance(loc[i + 1], int) and loc[i + 2] in ("url", "file"):
            return {**error, "loc": loc[: i + 2] + loc[i + 3 :]}
    return error


def _url_file_hints(problems: list[Problem]) -> list[Problem]:
    """``{fil: x}`` in urls: say "did you mean 'file'" and not also "file: is required" (one mistake, one line)."""
    out, hinted = [], set()
    for p in problems:
        if ".urls[" in p.key and p.message.startswith("unknown key") and p.suggestion is None:
            parent, _, key = p.key.rpartition(".")
            if hint := suggest(key, ["file"]):
                p = Problem(p.file, p.line, p.key, "unknown key", hint)
                hinted.add(parent)
        out.append(p)
    return [p for p in out if not (p.message == "is required" and p.key.rpartition(".")[0] in hinted)]


def rules_folder(path: str | os.PathLike) -> Path:
    """Where relative ``file:`` paths of a rules file are looked up: next to it."""
    return Path(path).resolve().parent
