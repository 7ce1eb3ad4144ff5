"""Load YAML into plain Python values while remembering the line of every key and value.

Technicians need ``FILE:LINE`` in every message, and ``yaml.safe_load`` throws the
lines away, so we compose nodes (which carry marks) and build the values ourselves.
The same walk finds duplicate keys, which ``safe_load`` silently resolves to the
last one.

A config is small: a file over ``MAX_BYTES`` is refused before it is parsed, and
aliases (``*name``) may add at most ``MAX_ALIAS_NODES`` nodes to the document. The
composer counts what each alias would expand to as it meets it, so an alias bomb
(a few lines whose aliases nest to a billion nodes) is refused at once instead of
being expanded.

>>> doc = load_yaml_text("mqtt:\\n  host: 127.0.0.1\\n  port: 1883\\nsensors:\\n  - id: F-1\\n")
>>> doc.data
{'mqtt': {'host': '127.0.0.1', 'port': 1883}, 'sensors': [{'id': 'F-1'}]}
>>> doc.line_of(("mqtt", "port")), doc.line_of(("sensors", 0, "id"))
(3, 5)
>>> load_yaml_text("a: 1\\nb: 2\\na: 3\\n").issues
[YamlIssue(line=3, path=('a',), message="duplicate key 'a' (first on line 1)")]
>>> bomb = "a: &a [x, x, x, x, x, x, x, x, x]\\n" + "".join(
...     f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\\n" for p, n in zip("abcdefgh", "bcdefghi"))
>>> try:
...     load_yaml_text(bomb)
... except YamlSyntaxError as exc:
...     print(exc.line, exc.message.split(":")[0])
3 aliases (*name) would add more than 500 nodes to this file by here
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

KeyPath = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"

#: The largest config file read, in bytes: a gateway config is a few kB.
MAX_BYTES = 1_000_000
#: The most nodes aliases may add to one document (a few shared sections, never a bomb).
MAX_ALIAS_NODES = 500


class YamlIssue(NamedTuple):
    """A problem found while reading the YAML itself (before any schema applies)."""

    line: int
    path: KeyPath
    message: str


class YamlSyntaxError(Exception):
    """The text is not valid YAML; ``line`` is 1-based."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


class _TooManyAliasNodes(Exception):
    def __init__(self, mark: yaml.Mark):
        self.line = mark.line + 1


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-like scalars, so values mean what a technician typed, and a bound on aliases.

    YAML 1.1 (PyYAML's default) reads ``22:00`` as the integer 79200 (base 60) and
    ``no``/``on`` as booleans; a night window or a country code must stay text.

    Composing keeps each node's expanded size (itself and everything below it, aliases
    counted as what they stand for); an alias adds the size of its anchor's node, and
    past ``MAX_ALIAS_NODES`` added nodes the document is refused. Nothing is expanded.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._sizes: dict[int, int] = {}
        self.alias_nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        node = super().compose_node(parent, index)
        if isinstance(event, yaml.AliasEvent):
            # An alias of a section still being composed (`a: &x [*x]`) counts 1; _build reports it.
            self.alias_nodes += self._sizes.get(id(node), 1)
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise _TooManyAliasNodes(event.start_mark)
        elif isinstance(node, ScalarNode):
            self._sizes[id(node)] = 1
        elif isinstance(node, SequenceNode):
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(item), 1) for item in node.value)
        else:
            self._sizes[id(node)] = 1 + sum(
                self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value
            )
        return node


_loader_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.yaml_implicit_resolvers = _loader_resolvers
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    # No base-60 and no leading-zero octal: `010` stays the text '010'.
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


@dataclass
class LoadedYaml:
    """Plain data plus the line of each path; ``issues`` are duplicate keys and the like."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    spans: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)  # where each scalar value is in the text
    issues: list[YamlIssue] = field(default_factory=list)
    first_line: int = 1

    def line_of(self, path: KeyPath) -> int:
        """Line of ``path``, or of its nearest ancestor that exists (e.g. for a missing key)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.first_line


def too_large(size: int) -> YamlSyntaxError | None:
    """The error for a file of ``size`` bytes when it is over ``MAX_BYTES``, else None.

    >>> print(too_large(3_500_000))
    line 1: the file is 3.5 MB; a gateway config is at most 1 MB (a few kB is usual): is this the right file?
    """
    if size <= MAX_BYTES:
        return None
    return YamlSyntaxError(
        1,
        f"the file is {size / 1e6:.1f} MB; a gateway config is at most 1 MB (a few kB is usual): "
        "is this the right file?",
    )


def load_yaml_text(text: str) -> LoadedYaml:
    """Parse one YAML document; raise ``YamlSyntaxError`` if it is not valid YAML or is over the limits."""
    if len(text) > MAX_BYTES // 4 and (error := too_large(len(text.encode("utf-8")))):
        raise error
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:  # checked up front, before any parsing
        line = text.count("\n", 0, exc.position) + 1
        raise YamlSyntaxError(
            line, f"character U+{exc.character:04X} is not allowed in YAML (a stray control character?)"
        ) from exc
    try:
        root = loader.get_single_node()
        doc = LoadedYaml(data=None)
        if root is not None:
            doc.first_line = root.start_mark.line + 1
            doc.data = _build(loader, root, (), doc)
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(line, _explain_syntax(exc)) from exc
    except _TooManyAliasNodes as exc:
        raise YamlSyntaxError(
            exc.line,
            f"aliases (*name) would add more than {MAX_ALIAS_NODES} nodes to this file by here: "
            "a config never needs that many; write the sections out instead (is this an alias bomb?)",
        ) from None
    except RecursionError:
        raise YamlSyntaxError(1, "sections are nested too deeply") from None
    except yaml.YAMLError as exc:  # no mark to point at
        raise YamlSyntaxError(1, f"invalid YAML: {exc}") from exc
    finally:
        loader.dispose()


def _explain_syntax(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or "invalid YAML"
    if "'\\t'" in problem:
        return "tab character: YAML indentation must use spaces"
    if (exc.context or "").startswith("expected a single document"):
        return "only one YAML document per file (remove the extra '---')"
    if problem == "mapping values are not allowed here":
        return "unexpected ':' (check the indentation, or quote a value that contains ': ')"
    context = f" ({exc.context})" if exc.context else ""
    if (
        exc.context
        and exc.context_mark is not None
        and exc.problem_mark is not None
        and exc.context_mark.line != exc.problem_mark.line
    ):
        context = f" ({exc.context} started on line {exc.context_mark.line + 1})"
    return f"invalid YAML: {problem}{context}"


def _build(loader: _Loader, node: Node, path: KeyPath, doc: LoadedYaml, inside: frozenset[int] = frozenset()) -> Any:
    if isinstance(node, ScalarNode):
        return loader.construct_object(node, deep=True)
    if id(node) in inside:  # `a: &x [*x]` would otherwise recurse forever
        doc.issues.append(
            YamlIssue(node.start_mark.line + 1, path, "an alias (*name) refers to a section containing it")
        )
        return None
    inside = inside | {id(node)}
    if isinstance(node, MappingNode):
        return _build_mapping(loader, node, path, doc, inside)
    items = []
    for index, item in enumerate(node.value):
        doc.lines[path + (index,)] = item.start_mark.line + 1
        if isinstance(item, ScalarNode):
            doc.spans[path + (index,)] = (item.start_mark.index, item.end_mark.index)
        items.append(_build(loader, item, path + (index,), doc, inside))
    return items


def _build_mapping(loader: _Loader, node: MappingNode, path: KeyPath, doc: LoadedYaml, inside: frozenset[int]) -> dict:
    result: dict = {}
    first_line: dict = {}
    merged: list[Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged.extend(value_node.value if isinstance(value_node, SequenceNode) else [value_node])
            continue
        # Keys are kept as the text typed: `on:` or `10:` stay 'on' and '10'.
        key = key_node.value if isinstance(key_node, ScalarNode) else str(loader.construct_object(key_node, deep=True))
        key_line = key_node.start_mark.line + 1
        child = path + (key,)
        if key in first_line:
            doc.issues.append(YamlIssue(key_line, child, f"duplicate key {key!r} (first on line {first_line[key]})"))
            continue
        first_line[key] = key_line
        # A scalar may sit on the line after its key; a section is pointed at by its key.
        doc.lines[child] = value_node.start_mark.line + 1 if isinstance(value_node, ScalarNode) else key_line
        if isinstance(value_node, ScalarNode):
            doc.spans[child] = (value_node.start_mark.index, value_node.end_mark.index)
        result[key] = _build(loader, value_node, child, doc, inside)
    for source in merged:  # `<<: *defaults`: keys written here win over merged ones
        if isinstance(source, MappingNode):
            if id(source) in inside:
                continue
            for key, value in _build_mapping(loader, source, path, LoadedYaml(None), inside | {id(source)}).items():
                result.setdefault(key, value)
                doc.lines.setdefault(path + (key,), node.start_mark.line + 1)
    return result
