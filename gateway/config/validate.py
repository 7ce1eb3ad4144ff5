"""Load a gateway config file and report every problem as ``FILE:LINE: key: what is wrong``.

>>> load_config_text("site: s\\ngateway: g\\nsensors: []\\nmqqt: {host: h}\\n", "gw.yaml")
Traceback (most recent call last):
...
gateway.config.problems.ConfigError: gw.yaml:3: sensors: must have at least 1 entry
gw.yaml:4: mqqt: unknown key, did you mean 'mqtt'?
"""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from gateway.config.detectors import build_detectors as _build_detectors
from gateway.config.problems import ConfigError, ConfigUnreadable, Problem
from gateway.config.schema import (
    CONTEXT_CROSS_CHECKS,
    CONTEXT_PATH,
    GatewayConfig,
    Section,
    cross_section_issues,
    describe,
    format_path,
    suggest,
)
from gateway.config.yaml_lines import MAX_BYTES, LoadedYaml, YamlSyntaxError, load_yaml_text, too_large


def load_config(path: str | os.PathLike, *, build_detectors: bool = False) -> GatewayConfig:
    """Read and validate one gateway config file; raise ``ConfigError`` listing all problems.

    With ``build_detectors``, also build every model's detector as the gateway service does
    (``gateway.config.detectors``: its model files verified and loaded, nothing run):
    ``config validate``, ``flash`` and ``doctor`` do. A file over 1 MB is refused unread.
    """
    text, name = read_config_file(path)
    return load_config_text(text, name, path=Path(path), build_detectors=build_detectors)


def read_config_file(path: str | os.PathLike) -> tuple[str, str]:
    """(text, name) of a YAML file a person wrote: unreadable, over 1 MB or not UTF-8 is a ``ConfigError``.

    Gateway configs and the notifier's rules are read through here.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
            size = max(len(raw), os.fstat(f.fileno()).st_size)
    except OSError as exc:
        raise ConfigUnreadable([Problem(name, None, "", f"cannot read the file: {exc.strerror or exc}")]) from None
    if error := too_large(size):
        raise ConfigError([Problem(name, error.line, "", error.message)])
    try:
        return raw.decode("utf-8-sig"), name
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [Problem(name, line, "", f"is not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8")]
        ) from None


def load_config_text(
    text: str, name: str = "<config>", path: Path | None = None, *, build_detectors: bool = False
) -> GatewayConfig:
    """Validate config text; ``name`` is shown in messages, ``path`` anchors relative paths (see ``load_config``)."""
    try:
        doc = load_yaml_text(text)
    except YamlSyntaxError as exc:
        raise ConfigError([Problem(name, exc.line, "", exc.message)]) from None
    problems = [Problem(name, issue.line, format_path(issue.path), issue.message) for issue in doc.issues]
    if not isinstance(doc.data, dict):
        got = "an empty file" if doc.data is None else describe(doc.data)
        problems.append(
            Problem(
                name,
                doc.first_line,
                "",
                f"a gateway config must be `key: value` lines (site:, gateway:, ...), got {got}",
            )
        )
        raise ConfigError(problems)

    config = None
    try:
        config = GatewayConfig.model_validate(doc.data, context={CONTEXT_CROSS_CHECKS: False, CONTEXT_PATH: path})
    except ValidationError as exc:
        problems += [_translate(error, doc, name) for error in exc.errors()]
    for issue in cross_section_issues(doc.data, where=lambda loc: f"line {doc.line_of(loc)}"):
        problems.append(Problem(name, doc.line_of(issue.loc), format_path(issue.loc), issue.message, issue.suggestion))
    if problems or config is None:
        raise ConfigError(_without_explained_missing(problems))
    config.remember_source(name, doc.line_of)
    if build_detectors:
        _build_detectors(config)  # raises ConfigError at each model that cannot be built; the service builds the same
    return config


def _without_explained_missing(problems: list[Problem]) -> list[Problem]:
    """Drop ``x: is required`` where a misspelt key next to it already says ``did you mean 'x'``.

    One mistake, one line: the technician fixes the typo and both go away.
    """

    def parent(key: str) -> str:
        return key.rpartition(".")[0]

    explained = {
        (parent(p.key), p.suggestion) for p in problems if p.suggestion and p.message.startswith("unknown key")
    }
    return [
        p
        for p in problems
        if not (p.message == "is required" and (parent(p.key), p.key.rpartition(".")[2]) in explained)
    ]


# ---- pydantic errors in plain words ----------------------------------------------------

_MAPPING_TYPES = {"model_type", "model_attributes_type", "dict_type"}


def _translate(error: dict[str, Any], doc: LoadedYaml, name: str, root: type[BaseModel] = GatewayConfig) -> Problem:
    """One pydantic error as a ``Problem`` at its line; ``root``: the schema of the file (the notifier has its own)."""
    loc, section = _locate(error["loc"], root)
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    suggestion = None
    if kind == "config":
        message, suggestion = ctx["message"], ctx.get("suggestion")
    elif kind == "missing":
        message = "is required"
    elif kind == "extra_forbidden":
        known = list(section.model_fields) if section else []
        refused = section.refused_keys if section and issubclass(section, Section) else {}
        if loc[-1] in refused:
            message = refused[loc[-1]]
        else:
            suggestion = suggest(loc[-1], known)
            message = "unknown key" if suggestion or not known else f"unknown key (known here: {', '.join(known)})"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        key = ctx["discriminator"].strip("'")
        tags = re.findall(r"'([^']*)'", ctx.get("expected_tags", ""))
        loc = loc + (key,)
        if kind == "union_tag_not_found":
            message = "is required" + (f" (one of {', '.join(tags)})" if tags else "")
        else:
            message = f"must be one of {', '.join(tags)}; got {describe(ctx.get('tag'))}"
            suggestion = suggest(ctx.get("tag"), tags)
    elif kind in _MAPPING_TYPES:
        message = f"must be a section of `key: value` lines, got {describe(value)}"
    elif kind == "list_type":
        message = f"must be a list (one '- ' line per entry), got {describe(value)}"
    elif kind == "too_short":
        count = ctx.get("min_length", 1)
        message = f"must have at least {count} entr{'y' if count == 1 else 'ies'}"
    elif kind == "literal_error":
        tags = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        message = f"must be one of {ctx.get('expected')}; got {describe(value)}"
        suggestion = suggest(value, tags)
    elif kind == "string_type":
        message = f"must be text, got {describe(value)}"
    elif kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    else:  # not expected from this schema; keep pydantic's words rather than hide it
        message = f"is not valid ({error['msg']}), got {describe(value)}"
    return Problem(name, doc.line_of(loc), format_path(loc), message, suggestion)


def _locate(loc: tuple, root: type[BaseModel] = GatewayConfig) -> tuple[tuple, type[BaseModel] | None]:
    """Drop the union tags pydantic puts in error paths; find the section holding the last key."""
    clean: list = []
    annotation: Any = root
    section: type[BaseModel] | None = None
    discriminated = False
    for part in loc:
        annotation, discriminated_here = _unwrap(annotation)
        discriminated = discriminated or discriminated_here
        members = _models_of(annotation)
        if discriminated and isinstance(part, str) and len(members) >= 1 and part not in members[0].model_fields:
            chosen = [m for m in members if part in _tags(m)]
            if chosen:  # `part` is the tag pydantic inserted, not a key the technician wrote
                annotation, discriminated = chosen[0], False
                continue
        discriminated = False
        clean.append(part)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            annotation = args[0] if typing.get_origin(annotation) is list and args else None
        elif len(members) == 1 and part in members[0].model_fields:
            section, annotation = members[0], members[0].model_fields[part].annotation
        else:
            section = members[0] if len(members) == 1 else None
            annotation = None
    return tuple(clean), section


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip Annotated[...] and Optional[...]; say whether a discriminator was attached."""
    discriminated = False
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            args = typing.get_args(annotation)
            discriminated = discriminated or any(isinstance(m, FieldInfo) and m.discriminator for m in args[1:])
            annotation = args[0]
        elif typing.get_origin(annotation) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation, discriminated
            annotation = members[0]
        else:
            return annotation, discriminated


def _models_of(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return []


def _tags(model: type[BaseModel]) -> set[str]:
    tags: set[str] = set()
    for field in model.model_fields.values():
        if typing.get_origin(field.annotation) is typing.Literal:
            tags.update(a for a in typing.get_args(field.annotation) if isinstance(a, str))
    return tags


#: ``_translate`` for other config files validated the same way (the notifier's routing rules).
translate_error = _translate
