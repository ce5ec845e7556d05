"""YAML to plain Python values, remembering where each value was written.

PyYAML's composer gives us nodes with marks; we build ordinary dicts and lists from them and
keep a side table from the path of each value (a tuple of keys and indexes) to its location,
so that every later error — a schema error, a CEL type error — can name file:line:column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .model import Location

Path = tuple[str | int, ...]
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlSyntaxError(Exception):
    def __init__(self, message: str, location: Location) -> None:
        super().__init__(message)
        self.message = message
        self.location = location


@dataclass
class Document:
    """A parsed file: its data and where each piece of it was written."""

    file: str
    data: Any
    text: str = ""
    positions: dict[Path, Location] = field(default_factory=dict)
    key_positions: dict[Path, Location] = field(default_factory=dict)

    def where(self, path: Path) -> Location:
        """The closest known location of `path` (walking up to the parent when needed)."""
        for end in range(len(path), -1, -1):
            loc = self.positions.get(path[:end])
            if loc is not None:
                return loc
        return Location(self.file, 1, 1)

    def char_at(self, loc: Location) -> str:
        lines = self.text.splitlines()
        if 0 < loc.line <= len(lines) and 0 < loc.column <= len(lines[loc.line - 1]):
            return lines[loc.line - 1][loc.column - 1]
        return ""

    def where_key(self, path: Path) -> Location:
        return self.key_positions.get(path) or self.where(path)


def parse(text: str, file: str) -> Document:
    """Parse one YAML document. Duplicate keys are an error, as they are almost always a typo."""
    try:
        # libyaml's parser when present (several times faster on large policies); on an error
        # the pure-Python parser runs again, for its clearer messages.
        try:
            node = yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}: {problem}"
        raise YamlSyntaxError(f"invalid YAML: {problem}", loc) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"invalid YAML: {exc}", Location(file, 1, 1)) from None
    doc = Document(file=file, data=None, text=text)
    if node is None:
        doc.data = {}
        return doc
    constructor = yaml.SafeLoader("")
    try:
        doc.data = _Builder(doc, constructor).build(node, ())
    finally:
        constructor.dispose()
    return doc


def _loc(doc: Document, node: yaml.Node) -> Location:
    return Location(doc.file, node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, doc: Document, constructor: yaml.SafeLoader) -> None:
        self.doc = doc
        self.constructor = constructor

    def build(self, node: yaml.Node, path: Path) -> Any:
        doc = self.doc
        doc.positions[path] = _loc(doc, node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YamlSyntaxError(
                        "invalid YAML: a mapping key must be a plain value", _loc(doc, key_node)
                    )
                key = self.scalar(key_node)
                if key in out:
                    raise YamlSyntaxError(f"duplicate key {key!r}", _loc(doc, key_node))
                child: Path = (*path, str(key))
                doc.key_positions[child] = _loc(doc, key_node)
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def scalar(self, node: yaml.Node) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise YamlSyntaxError(
                f"invalid YAML value: {exc.problem}", _loc(self.doc, node)
            ) from None
        except ValueError as exc:  # a timestamp that is no date, like 2026-02-30
            raise YamlSyntaxError(
                f"invalid YAML value {getattr(node, 'value', '')!r}: {exc}", _loc(self.doc, node)
            ) from None
