"""Safe YAML loading that remembers where every key came from.

The loader is PyYAML's SafeLoader with two YAML 1.2 fixes that matter for configs: `1e-3` is a
float (YAML 1.1 reads it as a string) and only `true`/`false` are booleans (`no`, `on`, `off`
stay strings, so `mixed_precision: no` means "no"). Duplicate keys are an error instead of
silently keeping the last one. `YamlDoc.line_of(loc)` maps a key path to its 1-based line.

Parsing is bounded: a file over `MAX_BYTES`, nesting deeper than `MAX_DEPTH`, or more than
`MAX_NODES` values once aliases are expanded (a 600-byte "billion laughs" expands to 10^9) is a
SpecError, checked on the composed node graph before anything walks or builds the values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeps.errors import SpecError, dotted

__all__ = ["YamlDoc", "dump_yaml", "load_yaml", "parse_yaml", "require_mapping"]

Loc = tuple[str | int, ...]
MAX_BYTES = 1_000_000  # a spec, search space or trial config is a few kB
MAX_DEPTH = 50
MAX_NODES = 100_000


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats and booleans."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


@dataclass
class YamlDoc:
    """A parsed YAML document plus the line of each key.

    Attributes:
        data: the plain Python value (dicts, lists, scalars).
        source: the file name used in error messages.
        lines: 1-based line of each mapping key / sequence item, by location tuple.
        text: the document's text as read.
    """

    data: Any
    source: str
    lines: dict[Loc, int] = field(default_factory=dict)
    text: str = ""

    def line_of(self, loc: Loc) -> int | None:
        """Line of `loc`, or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return None


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            if key == "<<":  # merge keys: positions of merged entries are not tracked
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SpecError(source, dotted(loc + (key,)), "duplicate key", line=line)
            seen.add(key)
            lines[loc + (key,)] = line
            _walk(value_node, loc + (key,), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[loc + (i,)] = item.start_mark.line + 1
            _walk(item, loc + (i,), lines, source)


def _check_bounds(node: yaml.Node, source: str) -> None:
    """SpecError when the document nests deeper than MAX_DEPTH or expands (aliases followed) to
    more than MAX_NODES values. Iterative: a hostile document cannot exhaust the stack."""
    count, stack = 0, [(node, 1)]
    while stack:
        current, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise SpecError(source, "yaml", f"more than {MAX_NODES} values once aliases are expanded "
                            "(anchors and aliases that multiply, such as a 'billion laughs'?)")
        if depth > MAX_DEPTH:
            line = current.start_mark.line + 1
            raise SpecError(source, "yaml", f"nested more than {MAX_DEPTH} levels deep", line=line)
        if isinstance(current, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in current.value for child in pair)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in current.value)


def parse_yaml(text: str, source: str) -> YamlDoc:
    """Parse one YAML document from `text`; SpecError (field `yaml`) on a syntax error or a
    document over the bounds (MAX_BYTES, MAX_DEPTH, MAX_NODES)."""
    if len(text) > MAX_BYTES:
        raise SpecError(source, "yaml", f"{len(text)} characters: larger than the {MAX_BYTES} a "
                        "config file may have")
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is not None:
            _check_bounds(node, source)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (_Loader is a SafeLoader)
    except RecursionError:
        raise SpecError(source, "yaml", f"nested too deeply (more than {MAX_DEPTH} levels)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError(source, "yaml", f"invalid YAML: {problem} at {where}") from None
    except yaml.YAMLError as exc:
        raise SpecError(source, "yaml", f"invalid YAML: {exc}") from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _walk(node, (), lines, source)
    return YamlDoc(data=data, source=source, lines=lines, text=text)


def load_yaml(path: str | Path, *, what: str = "file") -> YamlDoc:
    """Read and parse a YAML file; SpecError if it is missing, unreadable or malformed.

    Args:
        path: the file.
        what: what the file is, for the "not found" message (e.g. "search space").
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, "<file>", f"{what} not found") from None
    except IsADirectoryError:
        raise SpecError(source, "<file>", f"{what} is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(source, "<file>", f"cannot read {what}: {exc}") from None
    return parse_yaml(text, source)


def require_mapping(doc: YamlDoc, what: str) -> dict[str, Any]:
    """The document's top level as a dict; SpecError if it is empty or not a mapping."""
    if doc.data is None:
        raise SpecError(doc.source, "<root>", f"empty {what}: expected a mapping of keys")
    if not isinstance(doc.data, dict):
        kind = type(doc.data).__name__
        raise SpecError(doc.source, "<root>", f"{what} must be a mapping of keys, got a {kind}")
    return doc.data


def dump_yaml(data: Any) -> str:
    """Serialise plain data as block-style YAML, keys in insertion order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
