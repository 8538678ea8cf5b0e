"""Read a flow file's YAML into plain data plus a map of where every value sits.

PyYAML's ``safe_load`` forgets positions, silently keeps the last of two equal
keys, and expands aliases without bound, so a ten-line file can stand for a
billion values. Here the document is composed with the ``SafeLoader`` (which
keeps a line and column on every node), measured before anything is expanded,
and only then turned into dicts, lists and scalars. Everything a hostile or
careless file can do is reported as a ``Problem`` within milliseconds; nothing
here raises for any input text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bot.definitions.models import Path
from bot.definitions.problems import Problem

MAX_BYTES = 1_048_576
"""Files larger than this are refused before they are parsed."""
MAX_NODES = 10_000
"""Values a document may expand to, counting an alias target each time it is used."""
MAX_DEPTH = 64
"""Nesting levels of lists and mappings, after aliases are expanded."""

_YAML = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML + "merge"
_STANDARD_TAGS = frozenset(
    _YAML + name for name in ("null", "bool", "int", "float", "str", "timestamp", "seq", "map")
)
_SCALAR_KINDS = {
    _YAML + "null": "null",
    _YAML + "int": "a number",
    _YAML + "float": "a number",
    _YAML + "timestamp": "a date",
}


@dataclass(frozen=True)
class Mark:
    """A 1-based line and column, as editors count them."""

    line: int
    column: int


def _mark(yaml_mark: yaml.Mark | None) -> Mark:
    if yaml_mark is None:
        return Mark(1, 1)
    return Mark(yaml_mark.line + 1, yaml_mark.column + 1)


@dataclass(frozen=True, kw_only=True)
class SourceMap:
    """Where each value of a document was written, keyed by its path.

    Paths have the shape of pydantic's error ``loc``: mapping keys and list
    indexes, e.g. ``("steps", 0, "url")``. For a mapping entry ``keys`` holds
    the position of the key and ``values`` that of the value; for a list item
    both hold the item's position.
    """

    keys: dict[Path, Mark] = field(default_factory=dict)
    values: dict[Path, Mark] = field(default_factory=dict)
    block_scalars: frozenset[Path] = frozenset()
    """Values written as ``|`` or ``>`` blocks: their text starts on the next line."""
    lines: tuple[str, ...] = ()

    def has(self, path: Path) -> bool:
        return path in self.keys

    def locate(self, path: Path, *, value: bool = False) -> Mark:
        """The position of ``path``, or of its nearest ancestor written in the file."""
        if value and path in self.values:
            return self.values[path]
        for cut in range(len(path), -1, -1):
            mark = self.keys.get(path[:cut])
            if mark is not None:
                return mark
        return Mark(1, 1)

    def template_mark(self, path: Path, line: int | None) -> Mark:
        """Where line ``line`` (1-based) of the string value at ``path`` was written."""
        start = self.locate(path, value=True)
        if not line or line < 1:
            return start
        block = path in self.block_scalars
        if not block and line == 1:
            return start
        target = start.line + line - (0 if block else 1)
        if target > len(self.lines):
            return start
        text = self.lines[target - 1]
        return Mark(target, len(text) - len(text.lstrip()) + 1)


@dataclass(frozen=True, kw_only=True)
class YamlDocument:
    """The outcome of reading: data (``None`` when unreadable), positions, problems."""

    data: Any
    source: SourceMap
    problems: list[Problem]
    complete: bool
    """False when some value could not be represented faithfully, so the data
    must not be validated further (it would produce misleading follow-on errors)."""


class _Refused(Exception):
    """A limit was hit; carries the problem to report."""

    def __init__(self, mark: Mark, code: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.mark, self.code, self.message, self.fix = mark, code, message, fix


class _DepthLimitedLoader(yaml.SafeLoader):
    """The safe loader, refusing documents nested deeper than ``MAX_DEPTH`` as it composes.

    PyYAML composes recursively, so without this a file of ten thousand ``[``
    would end in a RecursionError instead of a clear problem.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _too_deep(_mark(event.start_mark))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _too_deep(mark: Mark) -> _Refused:
    return _Refused(
        mark,
        "too-deep",
        f"the document is nested more than {MAX_DEPTH} levels deep",
        "flatten the structure: flows never need this much nesting",
    )


def read_yaml(text: str, *, file: str) -> YamlDocument:
    """Compose, measure and construct ``text``; every failure becomes a Problem."""
    lines = tuple(text.splitlines())
    empty = SourceMap(lines=lines)

    def refused(mark: Mark, code: str, message: str, fix: str) -> YamlDocument:
        problem = Problem(
            file=file,
            line=mark.line,
            column=mark.column,
            severity="error",
            code=code,
            message=message,
            fix=fix,
        )
        return YamlDocument(data=None, source=empty, problems=[problem], complete=False)

    try:
        root = _compose(text)
    except _Refused as exc:
        return refused(exc.mark, exc.code, exc.message, exc.fix)
    except yaml.YAMLError as exc:
        return refused(*_syntax_problem(exc, text))
    if root is None:
        return refused(
            Mark(1, 1), "empty-file", "the file holds no flow", "start it with `name:` and `steps:`"
        )
    try:
        _measure(root, depth=1, on_path=set(), memo={})
    except _Refused as exc:
        return refused(exc.mark, exc.code, exc.message, exc.fix)
    builder = _Builder(file)
    data = builder.build(root, (), _mark(root.start_mark))
    source = SourceMap(
        keys=builder.keys,
        values=builder.values,
        block_scalars=frozenset(builder.blocks),
        lines=lines,
    )
    return YamlDocument(
        data=data, source=source, problems=builder.problems, complete=builder.complete
    )


def _compose(text: str) -> Node | None:
    loader = _DepthLimitedLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.YAMLError, text: str) -> tuple[Mark, str, str, str]:
    if isinstance(exc, yaml.reader.ReaderError):
        position = min(max(exc.position, 0), len(text))
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        character = exc.character if isinstance(exc.character, str) else chr(exc.character)
        return (
            Mark(line, column),
            "yaml-syntax",
            f"the character U+{ord(character):04X} cannot appear in a YAML file",
            "remove it, or write it as an escape inside a double-quoted string",
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        if exc.context and "single document" in exc.context:
            return (
                _mark(exc.problem_mark),
                "multiple-documents",
                "the file holds more than one YAML document (a second `---`)",
                "put each flow in its own file",
            )
        problem = exc.problem or "the YAML is malformed"
        context = f" {exc.context}" if exc.context else ""
        fix = (
            "indent with spaces, not tabs"
            if "'\\t'" in problem
            else "check the indentation, colons and quotes on this line and the one above"
        )
        mark = exc.problem_mark or exc.context_mark
        return _mark(mark), "yaml-syntax", f"YAML syntax error{context}: {problem}", fix
    return Mark(1, 1), "yaml-syntax", f"YAML syntax error: {exc}", "check the file's YAML syntax"


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _measure(
    node: Node, *, depth: int, on_path: set[int], memo: dict[int, tuple[int, int]]
) -> tuple[int, int]:
    """(values, height) of ``node`` once aliases are expanded; raises _Refused on limits.

    Shared nodes are measured once (memo) but counted every time they are used,
    so a billion-laughs file is refused after a few thousand additions.
    """
    if depth > MAX_DEPTH:
        raise _too_deep(_mark(node.start_mark))
    key = id(node)
    if key in on_path:
        raise _Refused(
            _mark(node.start_mark),
            "recursive-alias",
            "an alias refers to a value that contains it, so it never ends",
            "remove the `*alias` that points back to its own `&anchor`",
        )
    known = memo.get(key)
    if known is None:
        on_path.add(key)
        size, height = 1, 0
        for child in _children(node):
            child_size, child_height = _measure(child, depth=depth + 1, on_path=on_path, memo=memo)
            size += child_size
            height = max(height, child_height + 1)
            if size > MAX_NODES:
                raise _Refused(
                    _mark(child.start_mark),
                    "too-many-values",
                    f"the document expands to more than {MAX_NODES:,} values "
                    "(an alias counts again each time it is used)",
                    "remove the nested `*alias` chains; write the values out",
                )
        on_path.discard(key)
        known = memo[key] = (size, height)
    if depth + known[1] > MAX_DEPTH:
        raise _too_deep(_mark(node.start_mark))
    return known


class _Builder:
    """Turns composed nodes into plain data, recording positions and problems."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.keys: dict[Path, Mark] = {}
        self.values: dict[Path, Mark] = {}
        self.blocks: set[Path] = set()
        self.problems: list[Problem] = []
        self.complete = True
        self._scalars = SafeConstructor()

    def _problem(self, mark: Mark, code: str, message: str, fix: str) -> None:
        self.problems.append(
            Problem(
                file=self.file,
                line=mark.line,
                column=mark.column,
                severity="error",
                code=code,
                message=message,
                fix=fix,
            )
        )

    def build(self, node: Node, path: Path, key_mark: Mark) -> Any:
        self.keys[path] = key_mark
        self.values[path] = _mark(node.start_mark)
        if node.tag not in _STANDARD_TAGS and node.tag != _MERGE_TAG:
            self.complete = False
            tag = node.tag.replace(_YAML, "!!", 1) if node.tag.startswith(_YAML) else node.tag
            self._problem(
                _mark(node.start_mark),
                "yaml-tag",
                f"the YAML tag `{tag}` is not allowed in flow files",
                "remove the tag; write plain values, lists and mappings",
            )
            return None
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [
                self.build(item, (*path, index), _mark(item.start_mark))
                for index, item in enumerate(node.value)
            ]
        assert isinstance(node, ScalarNode)
        if node.style in ("|", ">"):
            self.blocks.add(path)
        return self._scalar(node)

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag == _MERGE_TAG:
            return node.value
        try:
            return self._scalars.construct_object(node)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            self.complete = False
            self._problem(
                _mark(node.start_mark),
                "bad-value",
                f"YAML cannot read the value {node.value[:40]!r}: {exc}",
                "quote it to keep it as text",
            )
            return None

    def _key(self, node: Node) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == _YAML + "str":
            return str(node.value)
        if isinstance(node, ScalarNode) and node.tag == _YAML + "bool" and node.style is None:
            # YAML 1.1 reads a bare `on:` or `yes:` key as a boolean; the format has an
            # `on:` key (retry), so a key spelt as a word stays that word.
            return str(node.value)
        self.complete = False
        if isinstance(node, ScalarNode):
            kind = _SCALAR_KINDS.get(node.tag, "not text")
            self._problem(
                _mark(node.start_mark),
                "non-string-key",
                f"the key `{node.value}` is {kind}, but keys must be text",
                f'quote the key: "{node.value}":',
            )
        else:
            self._problem(
                _mark(node.start_mark),
                "non-string-key",
                "a key must be plain text, not a list or a mapping",
                "write a name before the colon",
            )
        return None

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for source in reversed(self._merge_sources(node)):
            result.update(self._mapping(source, path))
        seen: dict[str, Mark] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node)
            if key is None:
                continue
            key_mark = _mark(key_node.start_mark)
            first = seen.get(key)
            if first is not None:
                self._problem(
                    key_mark,
                    "duplicate-key",
                    f"the key `{key}` appears twice in this mapping (first on line {first.line}); "
                    "YAML would silently keep only the last",
                    "remove one of them, or merge their contents",
                )
            seen[key] = key_mark
            result[key] = self.build(value_node, (*path, key), key_mark)
        return result

    def _merge_sources(self, node: MappingNode) -> list[MappingNode]:
        sources: list[MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            items = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for item in items:
                if isinstance(item, MappingNode):
                    sources.append(item)
                else:
                    self.complete = False
                    self._problem(
                        _mark(item.start_mark),
                        "bad-merge",
                        "`<<` merges mappings, but this value is not a mapping",
                        "write `<<: *anchor` where the anchor names a mapping",
                    )
        return sources
